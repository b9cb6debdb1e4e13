/*
 * fernet.h — Fernet tokens byte-compatible with Python's cryptography.fernet:
 * version 0x80, 64-bit big-endian timestamp, 128-bit IV, AES-128-CBC/PKCS7
 * (OpenSSL libcrypto), HMAC-SHA256 over everything before the MAC, urlsafe
 * base64 with padding. The MAC is checked in constant time before anything is
 * decrypted. This module holds no keys of its own: callers pass a key that
 * lives in guarded memory (see keys.h).
 */
#ifndef OAUTH_FERNET_H
#define OAUTH_FERNET_H

#include "common.h"
#include "secret.h"

#define FERNET_KEY_BYTES 32 /* signing key (16) || encryption key (16) */
#define FERNET_IV_BYTES  16

struct fernet_key {
    uint8_t signing[16];
    uint8_t encryption[16];
};

/* Decodes a urlsafe-base64 Fernet key (44 chars) into *key. */
int fernet_key_decode(const char *b64, size_t len, struct fernet_key *key) WUR;

/*
 * Encrypts plaintext into a new malloc()ed NUL-terminated token (caller frees;
 * tokens are ciphertext, not secrets). now is the Unix time stamped into the
 * token; iv NULL means a fresh random IV (only test vectors pass one).
 */
int fernet_encrypt(const struct fernet_key *key, const uint8_t *plain, size_t plain_len,
                   uint64_t now, const uint8_t *iv, char **token_out) WUR;

/*
 * Verifies and decrypts a token. ttl_s == 0 disables the age check (stored
 * tokens, SPEC §4); otherwise the token must not be older than ttl_s nor more
 * than 60 s in the future relative to now (the spec's clock-skew rule).
 * On success *plain receives the plaintext (caller clears it). On failure
 * returns -1 and writes a reason that never contains token or key bytes.
 */
int fernet_decrypt(const struct fernet_key *key, const char *token, size_t token_len, uint64_t now,
                   uint64_t ttl_s, struct secret *plain, char *err, size_t errlen) WUR;

/*
 * MultiFernet decrypt: decodes the token once and tries keys[0..nkeys-1] in
 * order (same TTL rules as fernet_decrypt). On success sets *plain and, if
 * key_index is not NULL, the index of the key whose MAC verified.
 */
int fernet_decrypt_keys(const struct fernet_key *keys, size_t nkeys, const char *token,
                        size_t token_len, uint64_t now, uint64_t ttl_s, struct secret *plain,
                        size_t *key_index, char *err, size_t errlen) WUR;

/*
 * The OpenSSL objects one thread reuses for every operation: AES-128-CBC and
 * HMAC-SHA256 fetched once, a cipher context and a keyless HMAC template
 * instead of fetching per call (about 1 us per operation saved;
 * tests/tools/fernet_speed). Between calls they hold no key, no key schedule
 * and no plaintext: each call keys, uses and cleanses them, so the only
 * long-lived copy of a key stays in the caller's guarded memory. Not for use
 * by two threads at once. Every function below that takes an engine also
 * accepts NULL, and then works as the engine-less one.
 */
struct fernet_engine;

struct fernet_engine *fernet_engine_new(void) WUR;
void fernet_engine_free(struct fernet_engine *eng);

int fernet_encrypt_with(struct fernet_engine *eng, const struct fernet_key *key,
                        const uint8_t *plain, size_t plain_len, uint64_t now, const uint8_t *iv,
                        char **token_out) WUR;
int fernet_decrypt_keys_with(struct fernet_engine *eng, const struct fernet_key *keys, size_t nkeys,
                             const char *token, size_t token_len, uint64_t now, uint64_t ttl_s,
                             struct secret *plain, size_t *key_index, char *err, size_t errlen) WUR;

/* Writes a new random key (44 chars + NUL) into out. */
void fernet_generate_key(char out[45]);

#endif
