/*
 * stored_token.h — the forms in which a token column holds its Fernet token.
 * Normally the column holds the token as text, as cryptography.fernet writes
 * it. django-fernet-fields hands the driver bytes, and on a TEXT column
 * PostgreSQL then stores the text of a bytea literal: "\x" followed by the
 * token's bytes in hex. These functions read either form and write a new
 * token in the form the row already had, so that the application's field can
 * read what the daemon wrote. They never see a key or a plaintext beyond
 * handing it between the keyring and the caller.
 */
#ifndef OAUTH_STORED_TOKEN_H
#define OAUTH_STORED_TOKEN_H

#include "common.h"
#include "keys.h"
#include "store.h"

enum stored_form {
    STORED_FORM_TEXT,      /* the Fernet token as text */
    STORED_FORM_BYTEA_HEX, /* "\x" + the token's bytes in hex (django-fernet-fields) */
};

/* The form of a stored value: BYTEA_HEX only when the hex decodes to a Fernet token's text. */
enum stored_form stored_token_form(const char *stored, size_t len);

/* keyring_decrypt() of a stored value in either form (same results and error texts). */
int stored_token_decrypt(const struct keyring *kr, const char *stored, size_t len,
                         struct secret *plain, size_t *key_index, char *err, size_t errlen) WUR;

/* keyring_encrypt(), the token written in `form`. *out is malloc()ed, caller frees. */
int stored_token_encrypt(const struct keyring *kr, enum stored_form form, const uint8_t *plain,
                         size_t len, char **out) WUR;

/*
 * Rewrites a refresh result's new ciphertexts (access, refresh and ID token,
 * those that are set) in the form of the row's stored refresh token, which is
 * left as it is (the store compares it with the row). -1 on OOM: the item is
 * then unchanged.
 */
int stored_token_match_item(const char *stored_refresh, struct store_item *it) WUR;

#endif
