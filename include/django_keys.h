/*
 * django_keys.h — the key derivations of the two Django field packages the
 * daemon can share a table with (SPEC §3, [crypto] key_derivation): each
 * turns the application's secrets into the raw Fernet keys the package
 * itself would use, in the package's order, and builds a keyring from them.
 * It reads no files and knows nothing of the configuration's keys or
 * wording; config_crypto.c (through config_secrets.c) reads the secret files
 * and reports the errors.
 */
#ifndef OAUTH_DJANGO_KEYS_H
#define OAUTH_DJANGO_KEYS_H

#include "common.h"
#include "keys.h"

/*
 * The two derivations, one secret (and salt) to the 32 raw bytes of a
 * Fernet key; 0, or -1 when OpenSSL fails. See django_keys.c for the exact
 * Python they mirror. Exposed for the known-answer tests.
 */
int django_keys_derive_fernet_fields(const uint8_t *secret, size_t len,
                                     uint8_t out[FERNET_KEY_BYTES]) WUR;
int django_keys_derive_encrypted_fields(const uint8_t *secret, size_t len, const uint8_t *salt,
                                        size_t salt_len, uint8_t out[FERNET_KEY_BYTES]) WUR;

/*
 * django-fernet-fields: one key per secret (FERNET_KEYS, or [SECRET_KEY]),
 * in order. n >= 1. Returns a new keyring the caller owns and frees with
 * keyring_unref(), or NULL with the reason in err (never a secret).
 */
struct keyring *django_keys_fernet_fields_ring(const char *const item[], const size_t len[],
                                               size_t n, char *err, size_t errlen) WUR;
/*
 * django-fernet-encrypted-fields: one key per (secret, salt) pair, secrets
 * ([SECRET_KEY] + SECRET_KEY_FALLBACKS) in the outer loop, salts (SALT_KEY)
 * in the inner. n_secrets, n_salts >= 1. Ownership and errors as above.
 */
struct keyring *django_keys_encrypted_fields_ring(const char *const secret[],
                                                  const size_t secret_len[], size_t n_secrets,
                                                  const char *const salt[], const size_t salt_len[],
                                                  size_t n_salts, char *err, size_t errlen) WUR;

#endif
