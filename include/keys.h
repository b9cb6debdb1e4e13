/*
 * keys.h — custody of the Fernet key list (MultiFernet semantics: decrypt tries
 * each key in order, encrypt uses the first). Keys live in one sodium_malloc()ed
 * region that is made read-only after loading and wiped when freed. A keyring
 * is reference-counted so jobs in flight keep the keys they started with across
 * a SIGHUP reload. Nothing here ever prints a key.
 */
#ifndef OAUTH_KEYS_H
#define OAUTH_KEYS_H

#include "common.h"
#include "fernet.h"
#include "secret.h"

struct keyring;

/* A warning the loader wants the operator to see (e.g. loose file mode). */
typedef void (*keyring_warn_fn)(void *ud, const char *msg);

/*
 * Loads a key file: one urlsafe-base64 key per line, first = primary, blank
 * lines and '#' comments allowed. On error returns NULL with "line N: reason"
 * in err (never the key text). Warns once through warn (may be NULL) when the
 * file is readable or writable by group or others, or owned by a user that is
 * neither the calling process's nor root.
 */
struct keyring *keyring_load_file(const char *path, keyring_warn_fn warn, void *warn_ud, char *err,
                                  size_t errlen) WUR;
/* Builds a keyring from raw 32-byte keys (key derivations). n >= 1. */
struct keyring *keyring_from_raw(const uint8_t (*raw)[FERNET_KEY_BYTES], size_t n, char *err,
                                 size_t errlen) WUR;
struct keyring *keyring_ref(struct keyring *kr);
void keyring_unref(struct keyring *kr);
size_t keyring_count(const struct keyring *kr);

/* Encrypts under the primary key now. Token is malloc()ed, caller frees. */
int keyring_encrypt(const struct keyring *kr, const uint8_t *plain, size_t len,
                    char **token_out) WUR;
/*
 * Tries each key in order (no TTL). On success sets *plain and, if key_index
 * is not NULL, the index of the key that verified (0 = primary).
 */
int keyring_decrypt(const struct keyring *kr, const char *token, size_t token_len,
                    struct secret *plain, size_t *key_index, char *err, size_t errlen) WUR;

/*
 * Keyed tags (BLAKE2b-256 keyed with a Fernet key, domain-separated by a
 * 16-byte personalisation string such as "oauthrd-spool-v2"): integrity and
 * origin of data the daemon writes for itself to disk, where the data is
 * already ciphertext and a second encryption layer would buy nothing.
 * keyring_tag uses the primary key; keyring_tag_verify tries every key in
 * order (a reload may have demoted the key a tag was made with) and compares
 * in constant time, setting *key_index (may be NULL) on success.
 */
#define KEYRING_TAG_BYTES          32
#define KEYRING_TAG_PERSONAL_BYTES 16

int keyring_tag(const struct keyring *kr, const char personal[KEYRING_TAG_PERSONAL_BYTES],
                const void *msg, size_t len, uint8_t tag[KEYRING_TAG_BYTES]) WUR;
bool keyring_tag_verify(const struct keyring *kr, const char personal[KEYRING_TAG_PERSONAL_BYTES],
                        const void *msg, size_t len, const uint8_t tag[KEYRING_TAG_BYTES],
                        size_t *key_index);

/*
 * A token's fingerprint: the first 6 bytes, as 12 lowercase hex digits, of
 * keyring_tag() over the token's plaintext under the personalisation
 * "oauthrd-fp-v1". It is for telling tokens apart where they must not appear:
 * the journal's records about one account (OAUTH_TOKEN_FP) and
 * `oauth-refreshctl show` carry the same fingerprint for the same token, so a
 * log line can be matched with the token an account holds now. Keyed with the
 * primary Fernet key, so that nobody without the keys can test a guessed
 * token against it; it therefore changes when the primary key changes
 * (rotate-keys after a new key is put first): compare fingerprints made under
 * the same key list. Never a token, and too short to stand for one.
 * Writes "" and returns -1 when kr has no key.
 */
#define TOKEN_FP_HEX_LEN 12
int token_fingerprint(const struct keyring *kr, const void *token, size_t len,
                      char out[TOKEN_FP_HEX_LEN + 1]);

#endif
