/*
 * test_fernet_wipe.c — between two operations, a reused fernet engine (the
 * keyring's) leaves no key and no plaintext in OpenSSL's heap. OpenSSL's
 * allocator is replaced (CRYPTO_set_mem_functions, before OpenSSL allocates
 * anything) by one that records every live block; after an encryption and a
 * decryption through one engine, every live block is searched for the AES key
 * (the first round key of an AES-128 schedule is the key itself), the HMAC key
 * (the HMAC provider keeps a copy of it), HMAC's inner and outer SHA-256
 * states (as good as the key) and the last plaintext bytes (CBC keeps the
 * final block in its context for the padding).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co: to compute HMAC's inner state */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sodium.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "fernet.h"
#include "secret.h"

#define MAX_LIVE 65536

struct live_block {
    void *p;
    size_t n;
};

static struct live_block live[MAX_LIVE];
static size_t nlive;

static void live_add(void *p, size_t n)
{
    if (p == NULL)
        return;
    if (nlive == MAX_LIVE)
        abort(); /* the test could not see everything: fail loudly */
    live[nlive].p = p;
    live[nlive].n = n;
    nlive++;
}

static void live_remove(void *p)
{
    for (size_t i = nlive; i-- > 0;)
        if (live[i].p == p) {
            live[i] = live[--nlive];
            return;
        }
}

static void *track_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    void *p = malloc(n);
    live_add(p, n);
    return p;
}

static void *track_realloc(void *old, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    void *p = realloc(old, n);
    if (p == NULL && n > 0)
        return NULL;
    live_remove(old);
    live_add(p, n);
    return p;
}

static void track_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    live_remove(p);
    free(p);
}

/* The number of live OpenSSL blocks that contain needle. */
static int live_blocks_holding(const void *needle, size_t len)
{
    int found = 0;
    for (size_t i = 0; i < nlive; i++)
        if (live[i].n >= len && memmem(live[i].p, live[i].n, needle, len) != NULL)
            found++;
    return found;
}

/*
 * HMAC-SHA256 keeps, besides the key, the SHA-256 states after absorbing
 * key ^ ipad and key ^ opad: either is as good as the key for forging MACs.
 * This computes them (the h[] words, as OpenSSL's SHA256_CTX holds them).
 */
static void hmac_pad_state(const uint8_t key[16], uint8_t pad, uint8_t out[32])
{
    uint8_t block[64];
    memset(block, pad, sizeof block);
    for (int i = 0; i < 16; i++)
        block[i] ^= key[i];
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, block, sizeof block);
    memcpy(out, c.h, 32);
    OPENSSL_cleanse(&c, sizeof c);
}

static void assert_no_hmac_state(const uint8_t key[16])
{
    uint8_t st[32];
    hmac_pad_state(key, 0x36, st);
    assert_int_equal(live_blocks_holding(st, sizeof st), 0);
    hmac_pad_state(key, 0x5c, st);
    assert_int_equal(live_blocks_holding(st, sizeof st), 0);
}

static void test_a_reused_engine_keeps_no_key_or_plaintext_between_operations(void **state)
{
    (void)state;
    struct fernet_key key;
    randombytes_buf(&key, sizeof key);
    /* 1400 bytes: 87 whole blocks and an 8-byte tail; the last 16 bytes are
     * what CBC's context holds back for the padding. */
    uint8_t plain[1400];
    randombytes_buf(plain, sizeof plain);
    const uint8_t *tail = plain + sizeof plain - 16;

    struct fernet_engine *eng = fernet_engine_new();
    assert_non_null(eng);
    char *tok = NULL;
    assert_int_equal(fernet_encrypt_with(eng, &key, plain, sizeof plain, 1795800000, NULL, &tok),
                     0);
    assert_int_equal(live_blocks_holding(key.encryption, sizeof key.encryption), 0);
    assert_int_equal(live_blocks_holding(key.signing, sizeof key.signing), 0);
    assert_int_equal(live_blocks_holding(plain + sizeof plain - 8, 8), 0);
    assert_no_hmac_state(key.signing);

    struct secret out = {0};
    char err[128];
    assert_int_equal(
        fernet_decrypt_keys_with(eng, &key, 1, tok, strlen(tok), 0, 0, &out, NULL, err, sizeof err),
        0);
    assert_int_equal(out.len, sizeof plain);
    assert_memory_equal(out.data, plain, sizeof plain);
    secret_clear(&out);
    assert_int_equal(live_blocks_holding(key.encryption, sizeof key.encryption), 0);
    assert_int_equal(live_blocks_holding(key.signing, sizeof key.signing), 0);
    assert_int_equal(live_blocks_holding(tail, 16), 0);
    assert_int_equal(live_blocks_holding(plain + sizeof plain - 8, 8), 0);
    assert_no_hmac_state(key.signing);

    /* A failed verification under a second, wrong key leaves nothing either. */
    struct fernet_key keys[2];
    randombytes_buf(&keys[0], sizeof keys[0]);
    keys[1] = key;
    assert_int_equal(
        fernet_decrypt_keys_with(eng, keys, 2, tok, strlen(tok), 0, 0, &out, NULL, err, sizeof err),
        0);
    secret_clear(&out);
    assert_int_equal(live_blocks_holding(keys[0].signing, sizeof keys[0].signing), 0);
    assert_int_equal(live_blocks_holding(key.signing, sizeof key.signing), 0);
    assert_int_equal(live_blocks_holding(key.encryption, sizeof key.encryption), 0);
    assert_int_equal(live_blocks_holding(tail, 16), 0);
    assert_no_hmac_state(keys[0].signing);
    assert_no_hmac_state(key.signing);

    free(tok);
    fernet_engine_free(eng);
    sodium_memzero(&key, sizeof key);
    sodium_memzero(keys, sizeof keys);
}

/* The check itself: the same search finds a key that OpenSSL does hold. */
static void test_the_search_sees_openssl_allocations(void **state)
{
    (void)state;
    uint8_t probe[16];
    randombytes_buf(probe, sizeof probe);
    uint8_t *p = OPENSSL_malloc(64);
    assert_non_null(p);
    memcpy(p + 20, probe, sizeof probe);
    assert_int_equal(live_blocks_holding(probe, sizeof probe), 1);
    OPENSSL_clear_free(p, 64);
    assert_int_equal(live_blocks_holding(probe, sizeof probe), 0);

    /* A keyed HMAC context that is kept: its key and pad states are found. */
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    uint8_t key[16], out[32], st[32];
    size_t got = 0;
    randombytes_buf(key, sizeof key);
    assert_int_equal(EVP_MAC_CTX_set_params(ctx, params), 1);
    assert_int_equal(EVP_MAC_init(ctx, key, sizeof key, NULL), 1);
    assert_int_equal(EVP_MAC_update(ctx, (const uint8_t *)"x", 1), 1);
    assert_int_equal(EVP_MAC_final(ctx, out, &got, sizeof out), 1);
    assert_true(live_blocks_holding(key, sizeof key) >= 1);
    hmac_pad_state(key, 0x36, st);
    assert_true(live_blocks_holding(st, sizeof st) >= 1);
    hmac_pad_state(key, 0x5c, st);
    assert_true(live_blocks_holding(st, sizeof st) >= 1);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    assert_no_hmac_state(key);
    assert_int_equal(live_blocks_holding(key, sizeof key), 0);
}

int main(void)
{
    /* Before anything lets OpenSSL allocate. */
    if (CRYPTO_set_mem_functions(track_malloc, track_realloc, track_free) != 1) {
        fprintf(stderr, "cannot hook OpenSSL's allocator\n");
        return 1;
    }
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_search_sees_openssl_allocations),
        cmocka_unit_test(test_a_reused_engine_keeps_no_key_or_plaintext_between_operations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
