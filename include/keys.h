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
 * in err (never the key text). Warns through warn (may be NULL) when the file
 * is group- or world-readable.
 */
struct keyring *keyring_load_file(const char *path, keyring_warn_fn warn, void *warn_ud,
                                  char *err, size_t errlen) WUR;
/* Builds a keyring from raw 32-byte keys (key derivations). n >= 1. */
struct keyring *keyring_from_raw(const uint8_t (*raw)[FERNET_KEY_BYTES], size_t n,
                                 char *err, size_t errlen) WUR;
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

#endif
