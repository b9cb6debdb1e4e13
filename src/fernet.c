/*
 * fernet.c — Fernet tokens byte-compatible with Python's cryptography.fernet.
 * It owns the token format: 0x80 | timestamp (8, big-endian) | IV (16) |
 * AES-128-CBC/PKCS7 ciphertext | HMAC-SHA256 (32) over all that precedes it,
 * written as padded urlsafe base64. AES and HMAC come from OpenSSL libcrypto,
 * randomness, wiping and the constant-time MAC comparison from libsodium.
 *
 * It must never decrypt before the MAC has verified, never leave plaintext in
 * a buffer it frees without wiping it, never put token or key bytes into an
 * error message, and never keep a key: callers lend one per call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "b64.h"
#include "fernet.h"

#define FERNET_VERSION      0x80
#define FERNET_TS_BYTES     8
#define FERNET_MAC_BYTES    32
#define FERNET_BLOCK        16
#define FERNET_HEADER_BYTES (1 + FERNET_TS_BYTES + FERNET_IV_BYTES) /* 25 */
/* Future timestamps tolerated when a TTL applies (Python's _MAX_CLOCK_SKEW). */
#define FERNET_MAX_CLOCK_SKEW 60

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

int fernet_key_decode(const char *b64, size_t len, struct fernet_key *key)
{
    uint8_t raw[FERNET_KEY_BYTES + 3]; /* + 3: room to notice a key that is too long */
    size_t got = 0;
    int rc = -1;

    if (len == b64url_encoded_len(FERNET_KEY_BYTES) &&
        b64url_decode(b64, len, raw, sizeof(raw), &got) == 0 && got == FERNET_KEY_BYTES) {
        memcpy(key->signing, raw, sizeof(key->signing));
        memcpy(key->encryption, raw + sizeof(key->signing), sizeof(key->encryption));
        rc = 0;
    }
    sodium_memzero(raw, sizeof(raw));
    return rc;
}

void fernet_generate_key(char out[45])
{
    uint8_t raw[FERNET_KEY_BYTES];

    if (sodium_init() < 0)
        abort(); /* no randomness: nothing safe can be done */
    randombytes_buf(raw, sizeof(raw));
    b64url_encode(raw, sizeof(raw), out, 45);
    sodium_memzero(raw, sizeof(raw));
}

/*
 * What is kept between operations holds no key: the fetched algorithms, an
 * emptied cipher context, and an HMAC context keyed with zeros. Each
 * operation keys a context, uses it and leaves it so: EVP_CIPHER_CTX_reset
 * cleanses the AES schedule and the block CBC held back (the last plaintext
 * block); the HMAC context is re-keyed with zeros, which replaces its copy of
 * the key (OPENSSL_secure_clear_free; without a secure heap that copy is in
 * ordinary heap) and its inner, outer and running SHA-256 states, each as
 * good as the key. The only long-lived copy of a key is the caller's (the
 * keyring's guarded memory). Cost, 1.4 kB token (tests/tools/fernet_speed):
 * about 0.2 us per operation; freeing a keyed duplicate of the HMAC context
 * instead cost twice that.
 */
struct fernet_engine {
    EVP_CIPHER *aes;
    EVP_CIPHER_CTX *cipher; /* reset after every operation */
    EVP_MAC_CTX *hmac;      /* SHA-256; keyed with zeros between operations */
};

struct fernet_engine *fernet_engine_new(void)
{
    struct fernet_engine *eng = calloc(1, sizeof *eng);
    if (eng == NULL)
        return NULL;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    eng->aes = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
    eng->cipher = EVP_CIPHER_CTX_new();
    eng->hmac = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context keeps its own reference */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (eng->aes == NULL || eng->cipher == NULL || eng->hmac == NULL ||
        EVP_MAC_CTX_set_params(eng->hmac, params) != 1) {
        fernet_engine_free(eng);
        return NULL;
    }
    return eng;
}

void fernet_engine_free(struct fernet_engine *eng)
{
    if (eng == NULL)
        return;
    EVP_CIPHER_CTX_free(eng->cipher); /* cleanses the key schedule */
    EVP_MAC_CTX_free(eng->hmac);      /* cleanses the HMAC key state */
    EVP_CIPHER_free(eng->aes);
    free(eng);
}

static int mac_compute(struct fernet_engine *eng, const struct fernet_key *key, const uint8_t *data,
                       size_t len, uint8_t mac[FERNET_MAC_BYTES])
{
    if (eng != NULL) {
        /* Re-keyed with zeros afterwards: see struct fernet_engine. */
        static const uint8_t zero[sizeof(key->signing)];
        size_t got = 0;
        bool ok = EVP_MAC_init(eng->hmac, key->signing, sizeof(key->signing), NULL) == 1 &&
                  EVP_MAC_update(eng->hmac, data, len) == 1 &&
                  EVP_MAC_final(eng->hmac, mac, &got, FERNET_MAC_BYTES) == 1 &&
                  got == FERNET_MAC_BYTES;
        if (EVP_MAC_init(eng->hmac, zero, sizeof zero, NULL) != 1)
            ok = false;
        return ok ? 0 : -1;
    }
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), key->signing, (int)sizeof(key->signing), data, len, mac, &maclen) ==
            NULL ||
        maclen != FERNET_MAC_BYTES)
        return -1;
    return 0;
}

/* AES-128-CBC with PKCS7. out must hold len + FERNET_BLOCK bytes. */
static int aes_cbc(struct fernet_engine *eng, bool enc, const struct fernet_key *key,
                   const uint8_t *iv, const uint8_t *in, size_t len, uint8_t *out, size_t *outlen)
{
    EVP_CIPHER_CTX *ctx = eng != NULL ? eng->cipher : EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0, ok = 0;

    if (ctx == NULL || len > (size_t)INT32_MAX - FERNET_BLOCK) {
        if (eng == NULL)
            EVP_CIPHER_CTX_free(ctx);
        return -1;
    }
    /* Every parameter is set again on each call: a reused context is empty
     * between operations (reset below). */
    ok = (eng != NULL ? EVP_CipherInit_ex2(ctx, eng->aes, key->encryption, iv, enc ? 1 : 0, NULL)
                      : EVP_CipherInit_ex(ctx, EVP_aes_128_cbc(), NULL, key->encryption, iv,
                                          enc ? 1 : 0)) == 1 &&
         EVP_CIPHER_CTX_set_padding(ctx, 1) == 1 &&
         EVP_CipherUpdate(ctx, out, &n1, in, (int)len) == 1 &&
         EVP_CipherFinal_ex(ctx, out + n1, &n2) == 1;
    /* Both cleanse the expanded key schedule and the block CBC held back
     * (the last plaintext block on decryption, the tail on encryption). */
    if (eng == NULL)
        EVP_CIPHER_CTX_free(ctx);
    else
        EVP_CIPHER_CTX_reset(ctx);
    if (!ok)
        return -1;
    *outlen = (size_t)n1 + (size_t)n2;
    return 0;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

int fernet_encrypt(const struct fernet_key *key, const uint8_t *plain, size_t plain_len,
                   uint64_t now, const uint8_t *iv, char **token_out)
{
    return fernet_encrypt_with(NULL, key, plain, plain_len, now, iv, token_out);
}

int fernet_encrypt_with(struct fernet_engine *eng, const struct fernet_key *key,
                        const uint8_t *plain, size_t plain_len, uint64_t now, const uint8_t *iv,
                        char **token_out)
{
    *token_out = NULL;
    if (sodium_init() < 0)
        return -1;
    if (plain_len > (size_t)INT32_MAX - 2 * FERNET_BLOCK)
        return -1;
    size_t ct_max = plain_len + FERNET_BLOCK;
    size_t raw_cap = FERNET_HEADER_BYTES + ct_max + FERNET_MAC_BYTES;
    uint8_t *raw = malloc(raw_cap);
    if (raw == NULL)
        return -1;

    raw[0] = FERNET_VERSION;
    put_be64(raw + 1, now);
    uint8_t *ivp = raw + 1 + FERNET_TS_BYTES;
    if (iv != NULL)
        memcpy(ivp, iv, FERNET_IV_BYTES);
    else
        randombytes_buf(ivp, FERNET_IV_BYTES);

    size_t ct_len = 0;
    int rc = -1;
    char *token = NULL;
    if (aes_cbc(eng, true, key, ivp, plain, plain_len, raw + FERNET_HEADER_BYTES, &ct_len) != 0)
        goto out;
    size_t body = FERNET_HEADER_BYTES + ct_len;
    if (mac_compute(eng, key, raw, body, raw + body) != 0)
        goto out;
    size_t raw_len = body + FERNET_MAC_BYTES;
    size_t tok_len = b64url_encoded_len(raw_len);
    token = malloc(tok_len + 1);
    if (token == NULL)
        goto out;
    /* A token is ciphertext: the fast variable-time codec is fine for it. */
    b64url_encode_public(raw, raw_len, token, tok_len + 1);
    *token_out = token;
    rc = 0;
out:
    /* Only ciphertext here, but a failed AES call may have left partial
     * state: wiping is cheap and removes the question. */
    sodium_memzero(raw, raw_cap);
    free(raw);
    return rc;
}

int fernet_decrypt(const struct fernet_key *key, const char *token, size_t token_len, uint64_t now,
                   uint64_t ttl_s, struct secret *plain, char *err, size_t errlen)
{
    return fernet_decrypt_keys(key, 1, token, token_len, now, ttl_s, plain, NULL, err, errlen);
}

/* Returns 0 when the token is a well-formed Fernet token (not yet verified). */
static int token_decode(const char *token, size_t token_len, uint8_t **raw_out, size_t *raw_len,
                        char *err, size_t errlen)
{
    *raw_out = NULL;
    /* The smallest token: header + one ciphertext block + MAC, base64'd. */
    size_t min_raw = FERNET_HEADER_BYTES + FERNET_BLOCK + FERNET_MAC_BYTES;
    if (token_len < b64url_encoded_len(min_raw)) {
        set_err(err, errlen, "token too short to be a Fernet token");
        return -1;
    }
    size_t cap = token_len / 4 * 3;
    uint8_t *raw = malloc(cap);
    if (raw == NULL) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    size_t len = 0;
    if (b64url_decode_public(token, token_len, raw, cap, &len) != 0) {
        free(raw);
        set_err(err, errlen, "token is not padded urlsafe base64");
        return -1;
    }
    if (len < min_raw) {
        free(raw);
        set_err(err, errlen, "token too short to be a Fernet token");
        return -1;
    }
    if (raw[0] != FERNET_VERSION) {
        free(raw);
        set_err(err, errlen, "unsupported Fernet version byte");
        return -1;
    }
    if ((len - FERNET_HEADER_BYTES - FERNET_MAC_BYTES) % FERNET_BLOCK != 0) {
        free(raw);
        set_err(err, errlen, "ciphertext is not a whole number of AES blocks");
        return -1;
    }
    *raw_out = raw;
    *raw_len = len;
    return 0;
}

int fernet_decrypt_keys(const struct fernet_key *keys, size_t nkeys, const char *token,
                        size_t token_len, uint64_t now, uint64_t ttl_s, struct secret *plain,
                        size_t *key_index, char *err, size_t errlen)
{
    return fernet_decrypt_keys_with(NULL, keys, nkeys, token, token_len, now, ttl_s, plain,
                                    key_index, err, errlen);
}

int fernet_decrypt_keys_with(struct fernet_engine *eng, const struct fernet_key *keys, size_t nkeys,
                             const char *token, size_t token_len, uint64_t now, uint64_t ttl_s,
                             struct secret *plain, size_t *key_index, char *err, size_t errlen)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;

    if (token_decode(token, token_len, &raw, &raw_len, err, errlen) != 0)
        return -1;

    size_t body = raw_len - FERNET_MAC_BYTES;
    const struct fernet_key *key = NULL;
    size_t idx = 0;
    uint8_t mac[FERNET_MAC_BYTES];
    for (idx = 0; idx < nkeys; idx++) {
        if (mac_compute(eng, &keys[idx], raw, body, mac) != 0)
            break;
        if (sodium_memcmp(mac, raw + body, FERNET_MAC_BYTES) == 0) {
            key = &keys[idx];
            break;
        }
    }
    sodium_memzero(mac, sizeof(mac));
    if (key == NULL) {
        free(raw);
        set_err(err, errlen,
                nkeys > 1 ? "token does not verify under any key (wrong keys or tampered token)"
                          : "token does not verify (wrong key or tampered token)");
        return -1;
    }

    /* Age is judged only on an authenticated timestamp. */
    if (ttl_s != 0) {
        uint64_t ts = get_be64(raw + 1);
        if (ts > now) {
            if (ts - now > FERNET_MAX_CLOCK_SKEW) {
                free(raw);
                set_err(err, errlen, "token timestamp is too far in the future");
                return -1;
            }
        } else if (now - ts > ttl_s) {
            free(raw);
            set_err(err, errlen, "token has expired");
            return -1;
        }
    }

    const uint8_t *iv = raw + 1 + FERNET_TS_BYTES;
    const uint8_t *ct = raw + FERNET_HEADER_BYTES;
    size_t ct_len = body - FERNET_HEADER_BYTES;
    size_t out_cap = ct_len + FERNET_BLOCK + 1; /* + NUL for struct secret */
    uint8_t *out = malloc(out_cap);
    if (out == NULL) {
        free(raw);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    size_t out_len = 0;
    int rc = aes_cbc(eng, false, key, iv, ct, ct_len, out, &out_len);
    free(raw); /* ciphertext only */
    if (rc != 0) {
        /* A padding error under a valid MAC: made by a key holder, but broken. */
        sodium_memzero(out, out_cap);
        free(out);
        set_err(err, errlen, "token decrypts to invalid PKCS7 padding");
        return -1;
    }
    /* EVP may have written the padding block into the tail: wipe past the end. */
    sodium_memzero(out + out_len, out_cap - out_len);
    out[out_len] = '\0';
    secret_adopt(plain, (char *)out, out_len);
    if (key_index != NULL)
        *key_index = idx;
    return 0;
}
