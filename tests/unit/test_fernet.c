/*
 * test_fernet.c — Fernet tokens are byte-compatible with the specification's
 * vectors (fernet/spec generate, verify and invalid; loaded at run time from
 * TEST_FIXTURES_DIR), round-trip for payloads from 0 bytes to 1 MiB, reject
 * every single-byte tampering, apply TTL only when asked, and behave as
 * MultiFernet through the keyring. Error messages are checked to carry no
 * token or key text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "b64.h"
#include "fernet.h"
#include "keys.h"
#include "secret.h"

#define VECTOR_DIR TEST_FIXTURES_DIR "/fernet"

/* "1985-10-26T01:20:01-07:00" -> Unix seconds. */
static uint64_t parse_iso(const char *s)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0, n = 0;
    char sign = 0;
    if (sscanf(s, "%d-%d-%dT%d:%d:%d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
        fail_msg("cannot parse vector time \"%s\"", s);
    const char *tz = s + n;
    if (*tz == 'Z') {
        sign = '+';
    } else if (sscanf(tz, "%c%d:%d", &sign, &oh, &om) != 3 || (sign != '+' && sign != '-')) {
        fail_msg("cannot parse vector time zone in \"%s\"", s);
    }
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm);
    int64_t off = (int64_t)(oh * 3600 + om * 60);
    t = sign == '-' ? t + off : t - off; /* local = UTC + offset */
    return (uint64_t)t;
}

static json_t *load_vectors(const char *name)
{
    char path[512];
    json_error_t jerr;
    snprintf(path, sizeof(path), "%s/%s", VECTOR_DIR, name);
    json_t *v = json_load_file(path, 0, &jerr);
    if (v == NULL)
        fail_msg("cannot load %s: %s (line %d)", path, jerr.text, jerr.line);
    if (!json_is_array(v) || json_array_size(v) == 0)
        fail_msg("%s: expected a non-empty array", path);
    return v;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (s == NULL)
        fail_msg("vector lacks string \"%s\"", k);
    return s;
}

static struct fernet_key key_of(const char *b64)
{
    struct fernet_key k;
    if (fernet_key_decode(b64, strlen(b64), &k) != 0)
        fail_msg("vector key did not decode");
    return k;
}

/* An error message must not quote the token or key: no 8-char window of
 * either may appear in it. */
static void assert_err_clean(const char *err, const char *token, const char *key)
{
    const char *texts[] = {token, key};
    assert_true(err[0] != '\0');
    for (size_t t = 0; t < 2; t++) {
        if (texts[t] == NULL)
            continue;
        size_t n = strlen(texts[t]);
        for (size_t i = 0; i + 8 <= n; i++) {
            char w[9];
            memcpy(w, texts[t] + i, 8);
            w[8] = '\0';
            if (strstr(err, w) != NULL)
                fail_msg("error \"%s\" quotes secret text \"%s\"", err, w);
        }
    }
}

static void test_generate_vectors_produce_exact_tokens(void **state)
{
    (void)state;
    json_t *vs = load_vectors("generate.json");
    size_t i;
    json_t *v;
    json_array_foreach(vs, i, v)
    {
        struct fernet_key k = key_of(jstr(v, "secret"));
        json_t *ivj = json_object_get(v, "iv");
        uint8_t iv[FERNET_IV_BYTES];
        assert_int_equal(json_array_size(ivj), FERNET_IV_BYTES);
        for (size_t j = 0; j < FERNET_IV_BYTES; j++)
            iv[j] = (uint8_t)json_integer_value(json_array_get(ivj, j));
        const char *src = jstr(v, "src");
        char *tok = NULL;
        assert_int_equal(fernet_encrypt(&k, (const uint8_t *)src, strlen(src),
                                        parse_iso(jstr(v, "now")), iv, &tok),
                         0);
        if (strcmp(tok, jstr(v, "token")) != 0)
            fail_msg("generate[%zu]: expected %s, saw %s", i, jstr(v, "token"), tok);
        free(tok);
    }
    json_decref(vs);
}

static void test_verify_vectors_decrypt_within_ttl_and_without(void **state)
{
    (void)state;
    json_t *vs = load_vectors("verify.json");
    size_t i;
    json_t *v;
    json_array_foreach(vs, i, v)
    {
        struct fernet_key k = key_of(jstr(v, "secret"));
        const char *tok = jstr(v, "token"), *src = jstr(v, "src");
        uint64_t now = parse_iso(jstr(v, "now"));
        uint64_t ttl = (uint64_t)json_integer_value(json_object_get(v, "ttl_sec"));
        assert_true(ttl > 0);
        uint64_t ttls[2] = {ttl, 0};
        for (int t = 0; t < 2; t++) {
            struct secret p = {0};
            char err[256] = "";
            if (fernet_decrypt(&k, tok, strlen(tok), now, ttls[t], &p, err, sizeof(err)) != 0)
                fail_msg("verify[%zu] ttl=%llu: expected success, saw \"%s\"", i,
                         (unsigned long long)ttls[t], err);
            assert_int_equal(p.len, strlen(src));
            assert_memory_equal(p.data, src, p.len);
            assert_int_equal(p.data[p.len], '\0');
            secret_clear(&p);
        }
    }
    json_decref(vs);
}

static void test_invalid_vectors_are_rejected_with_clean_errors(void **state)
{
    (void)state;
    json_t *vs = load_vectors("invalid.json");
    size_t i;
    json_t *v;
    size_t n_age = 0;
    json_array_foreach(vs, i, v)
    {
        const char *desc = jstr(v, "desc");
        const char *tok = jstr(v, "token"), *sec = jstr(v, "secret");
        struct fernet_key k = key_of(sec);
        uint64_t now = parse_iso(jstr(v, "now"));
        uint64_t ttl = (uint64_t)json_integer_value(json_object_get(v, "ttl_sec"));
        struct secret p = {0};
        char err[256] = "";
        if (fernet_decrypt(&k, tok, strlen(tok), now, ttl, &p, err, sizeof(err)) == 0)
            fail_msg("invalid[%zu] \"%s\": expected rejection, saw success", i, desc);
        assert_null(p.data);
        assert_err_clean(err, tok, sec);

        /* The two age-only failures carry a valid MAC: with ttl 0 (no age
         * check, as for stored tokens) they must decrypt; all others must
         * still fail. */
        bool age_only = strstr(desc, "TTL") != NULL || strstr(desc, "clock skew") != NULL;
        int rc = fernet_decrypt(&k, tok, strlen(tok), now, 0, &p, err, sizeof(err));
        if (age_only) {
            n_age++;
            if (rc != 0)
                fail_msg("invalid[%zu] \"%s\" with ttl 0: expected success, saw \"%s\"", i, desc,
                         err);
            secret_clear(&p);
        } else if (rc == 0) {
            fail_msg("invalid[%zu] \"%s\" with ttl 0: expected rejection, saw success", i, desc);
        }
    }
    assert_int_equal(n_age, 2);
    json_decref(vs);
}

static void random_key(struct fernet_key *k)
{
    randombytes_buf(k, sizeof(*k));
}

static void round_trip(const struct fernet_key *k, size_t n, uint8_t *buf)
{
    randombytes_buf(buf, n);
    char *tok = NULL;
    assert_int_equal(fernet_encrypt(k, buf, n, 1700000000, NULL, &tok), 0);
    size_t want_raw = 1 + 8 + 16 + (n / 16 + 1) * 16 + 32;
    assert_int_equal(strlen(tok), b64url_encoded_len(want_raw));
    struct secret p = {0};
    char err[256] = "";
    if (fernet_decrypt(k, tok, strlen(tok), 1700000000, 0, &p, err, sizeof(err)) != 0)
        fail_msg("size %zu: expected round trip, saw \"%s\"", n, err);
    if (p.len != n || (n > 0 && memcmp(p.data, buf, n) != 0))
        fail_msg("size %zu: plaintext differs after round trip (got %zu bytes)", n, p.len);
    secret_clear(&p);
    free(tok);
}

static void test_round_trip_sizes_0_to_1mib(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    struct fernet_key k;
    random_key(&k);
    size_t max = 1024 * 1024;
    uint8_t *buf = malloc(max);
    assert_non_null(buf);
    for (size_t n = 0; n <= 600; n++)
        round_trip(&k, n, buf);
    for (size_t p = 1024; p <= max; p *= 2) {
        round_trip(&k, p - 1, buf);
        round_trip(&k, p, buf);
        if (p < max)
            round_trip(&k, p + 1, buf);
    }
    free(buf);
}

static void test_fresh_ivs_make_distinct_tokens(void **state)
{
    (void)state;
    struct fernet_key k;
    random_key(&k);
    char *a = NULL, *b = NULL;
    assert_int_equal(fernet_encrypt(&k, (const uint8_t *)"x", 1, 5, NULL, &a), 0);
    assert_int_equal(fernet_encrypt(&k, (const uint8_t *)"x", 1, 5, NULL, &b), 0);
    assert_string_not_equal(a, b);
    free(a);
    free(b);
}

static void test_timestamp_is_stored_big_endian(void **state)
{
    (void)state;
    struct fernet_key k;
    random_key(&k);
    char *tok = NULL;
    uint64_t ts = 0x0102030405060708ULL;
    assert_int_equal(fernet_encrypt(&k, (const uint8_t *)"", 0, ts, NULL, &tok), 0);
    uint8_t raw[128];
    size_t n = 0;
    assert_int_equal(b64url_decode(tok, strlen(tok), raw, sizeof(raw), &n), 0);
    assert_int_equal(raw[0], 0x80);
    for (int i = 0; i < 8; i++)
        assert_int_equal(raw[1 + i], i + 1);
    free(tok);
}

/* Every byte of the decoded token changed (two different ways), and every
 * character of the text replaced, must be rejected. */
static void test_tampering_any_byte_is_rejected(void **state)
{
    (void)state;
    struct fernet_key k;
    random_key(&k);
    const char *msg = "refresh-token-1//0gAbCdEf";
    char *tok = NULL;
    assert_int_equal(fernet_encrypt(&k, (const uint8_t *)msg, strlen(msg), 1000, NULL, &tok), 0);
    size_t tlen = strlen(tok);
    uint8_t raw[256];
    size_t rlen = 0;
    assert_int_equal(b64url_decode(tok, tlen, raw, sizeof(raw), &rlen), 0);
    char enc[512], err[256];
    struct secret p = {0};
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (size_t pos = 0; pos < rlen; pos++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            raw[pos] ^= flips[f];
            b64url_encode(raw, rlen, enc, sizeof(enc));
            raw[pos] ^= flips[f];
            if (fernet_decrypt(&k, enc, strlen(enc), 1000, 0, &p, err, sizeof(err)) == 0)
                fail_msg("raw byte %zu ^ 0x%02x: expected rejection, saw success", pos, flips[f]);
            assert_null(p.data);
            assert_err_clean(err, enc, NULL);
        }
    }
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ \n";
    char *t2 = strdup(tok);
    for (size_t pos = 0; pos < tlen; pos++) {
        for (const char *c = alphabet; *c; c++) {
            if (*c == tok[pos])
                continue;
            t2[pos] = *c;
            if (fernet_decrypt(&k, t2, tlen, 1000, 0, &p, err, sizeof(err)) == 0)
                fail_msg("char %zu -> '%c': expected rejection, saw success", pos, *c);
        }
        t2[pos] = tok[pos];
    }
    /* Every truncation, and appended bytes. */
    for (size_t n = 0; n < tlen; n++)
        assert_int_equal(fernet_decrypt(&k, tok, n, 1000, 0, &p, err, sizeof(err)), -1);
    char longer[600];
    snprintf(longer, sizeof(longer), "%sAAAA", tok);
    assert_int_equal(fernet_decrypt(&k, longer, strlen(longer), 1000, 0, &p, err, sizeof(err)), -1);
    /* Untouched: still fine. */
    assert_int_equal(fernet_decrypt(&k, tok, tlen, 1000, 0, &p, err, sizeof(err)), 0);
    assert_int_equal(p.len, strlen(msg));
    secret_clear(&p);
    free(t2);
    free(tok);
}

static void test_wrong_key_is_rejected(void **state)
{
    (void)state;
    struct fernet_key a, b;
    random_key(&a);
    random_key(&b);
    char *tok = NULL;
    assert_int_equal(fernet_encrypt(&a, (const uint8_t *)"hi", 2, 1, NULL, &tok), 0);
    struct secret p = {0};
    char err[256] = "";
    assert_int_equal(fernet_decrypt(&b, tok, strlen(tok), 1, 0, &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not verify"));
    free(tok);
}

static void test_ttl_boundaries(void **state)
{
    (void)state;
    struct fernet_key k;
    random_key(&k);
    char *tok = NULL;
    const uint64_t ts = 1000000;
    assert_int_equal(fernet_encrypt(&k, (const uint8_t *)"v", 1, ts, NULL, &tok), 0);
    struct {
        uint64_t now, ttl;
        int ok;
    } cases[] = {
        {ts, 60, 1},
        {ts + 60, 60, 1},
        {ts + 61, 60, 0},
        {ts - 60, 60, 1},
        {ts - 61, 60, 0},
        {0, 60, 0},
        {UINT64_MAX, 60, 0},
        /* ttl 0: no age check at all, in either direction. */
        {0, 0, 1},
        {ts + 100000000, 0, 1},
        {UINT64_MAX, 0, 1},
        {ts + 5, UINT64_MAX, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct secret p = {0};
        char err[256] = "";
        int rc =
            fernet_decrypt(&k, tok, strlen(tok), cases[i].now, cases[i].ttl, &p, err, sizeof(err));
        if ((rc == 0) != cases[i].ok)
            fail_msg("now=ts%+lld ttl=%llu: expected %s, saw %s (%s)",
                     (long long)(cases[i].now - ts), (unsigned long long)cases[i].ttl,
                     cases[i].ok ? "accept" : "reject", rc == 0 ? "accept" : "reject", err);
        secret_clear(&p);
    }
    free(tok);
}

static void test_key_decode_is_strict(void **state)
{
    (void)state;
    struct fernet_key k;
    const char *good = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    assert_int_equal(fernet_key_decode(good, strlen(good), &k), 0);
    const char *bad[] = {
        "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4",      /* no padding */
        "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4==",    /* extra padding */
        "cw/0x689RpI+jtRR7oE8h/eQsKImvJapLeSbXpwF4e4=",     /* standard alphabet */
        "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e5=",     /* non-canonical tail */
        "Zm9vYmFy",                                         /* too short */
        "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=cw_0", /* too long */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (fernet_key_decode(bad[i], strlen(bad[i]), &k) == 0)
            fail_msg("key \"%s\": expected rejection, saw acceptance", bad[i]);
}

static void test_generated_keys_are_distinct_valid_keys(void **state)
{
    (void)state;
    char a[45], b[45];
    fernet_generate_key(a);
    fernet_generate_key(b);
    assert_int_equal(strlen(a), 44);
    assert_string_not_equal(a, b);
    struct fernet_key k;
    assert_int_equal(fernet_key_decode(a, 44, &k), 0);
}

static void test_multifernet_encrypts_with_first_and_decrypts_with_any(void **state)
{
    (void)state;
    uint8_t raw[3][FERNET_KEY_BYTES];
    randombytes_buf(raw, sizeof(raw));
    char err[256] = "";
    struct keyring *kr =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 3, err, sizeof(err));
    assert_non_null(kr);
    assert_int_equal(keyring_count(kr), 3);

    struct fernet_key k[3], other;
    for (int i = 0; i < 3; i++) {
        memcpy(k[i].signing, raw[i], 16);
        memcpy(k[i].encryption, raw[i] + 16, 16);
    }
    random_key(&other);

    /* Encrypt uses the first key: it verifies under k[0] alone, not k[1]. */
    char *tok = NULL;
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)"primary", 7, &tok), 0);
    struct secret p = {0};
    assert_int_equal(fernet_decrypt(&k[0], tok, strlen(tok), 0, 0, &p, err, sizeof(err)), 0);
    secret_clear(&p);
    assert_int_equal(fernet_decrypt(&k[1], tok, strlen(tok), 0, 0, &p, err, sizeof(err)), -1);
    free(tok);

    /* Decrypt tries every key and reports which one verified. */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(fernet_encrypt(&k[i], (const uint8_t *)"abc", 3, 10, NULL, &tok), 0);
        size_t idx = 99;
        if (keyring_decrypt(kr, tok, strlen(tok), &p, &idx, err, sizeof(err)) != 0)
            fail_msg("token of key %zu: expected keyring to decrypt, saw \"%s\"", i, err);
        assert_int_equal(idx, i);
        assert_memory_equal(p.data, "abc", 3);
        secret_clear(&p);
        free(tok);
    }
    /* A token of a key outside the ring fails, and says so without leaking. */
    assert_int_equal(fernet_encrypt(&other, (const uint8_t *)"abc", 3, 10, NULL, &tok), 0);
    size_t idx = 99;
    assert_int_equal(keyring_decrypt(kr, tok, strlen(tok), &p, &idx, err, sizeof(err)), -1);
    assert_int_equal(idx, 99);
    assert_null(p.data);
    assert_err_clean(err, tok, NULL);
    free(tok);

    /* A keyring outlives its creator's reference while someone holds one. */
    struct keyring *held = keyring_ref(kr);
    keyring_unref(kr);
    assert_int_equal(keyring_count(held), 3);
    assert_int_equal(keyring_encrypt(held, (const uint8_t *)"x", 1, &tok), 0);
    assert_int_equal(keyring_decrypt(held, tok, strlen(tok), &p, NULL, err, sizeof(err)), 0);
    secret_clear(&p);
    free(tok);
    keyring_unref(held);
    sodium_memzero(raw, sizeof(raw));
}

static void test_keyring_from_zero_raw_keys_fails(void **state)
{
    (void)state;
    uint8_t raw[1][FERNET_KEY_BYTES] = {{0}};
    char err[256] = "";
    assert_null(keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 0, err, sizeof(err)));
    assert_true(err[0] != '\0');
}

/*
 * A reused engine (the keyring's) must give exactly what fresh contexts give,
 * whatever came before: all the spec's vectors run through one engine in a
 * row (their invalid tokens include padding errors under a valid MAC, which
 * fail inside the cipher), then random keys, sizes and IVs, with failures
 * mixed in, compared token for token with the engine-less path.
 */
static void test_a_reused_engine_matches_fresh_contexts_after_anything(void **state)
{
    (void)state;
    struct fernet_engine *eng = fernet_engine_new();
    assert_non_null(eng);
    for (int pass = 0; pass < 2; pass++) {
        json_t *gen = load_vectors("generate.json"), *inv = load_vectors("invalid.json"),
               *ver = load_vectors("verify.json");
        size_t i;
        json_t *v;
        json_array_foreach(inv, i, v)
        {
            struct fernet_key k = key_of(jstr(v, "secret"));
            struct secret p = {0};
            char err[256];
            const char *tok = jstr(v, "token");
            assert_int_equal(fernet_decrypt_keys_with(
                                 eng, &k, 1, tok, strlen(tok), parse_iso(jstr(v, "now")),
                                 (uint64_t)json_integer_value(json_object_get(v, "ttl_sec")), &p,
                                 NULL, err, sizeof err),
                             -1);
        }
        json_array_foreach(gen, i, v)
        {
            struct fernet_key k = key_of(jstr(v, "secret"));
            uint8_t iv[FERNET_IV_BYTES];
            for (size_t j = 0; j < FERNET_IV_BYTES; j++)
                iv[j] = (uint8_t)json_integer_value(json_array_get(json_object_get(v, "iv"), j));
            const char *src = jstr(v, "src");
            char *tok = NULL;
            assert_int_equal(fernet_encrypt_with(eng, &k, (const uint8_t *)src, strlen(src),
                                                 parse_iso(jstr(v, "now")), iv, &tok),
                             0);
            assert_string_equal(tok, jstr(v, "token"));
            free(tok);
        }
        json_array_foreach(ver, i, v)
        {
            struct fernet_key k = key_of(jstr(v, "secret"));
            struct secret p = {0};
            char err[256];
            const char *tok = jstr(v, "token");
            assert_int_equal(fernet_decrypt_keys_with(eng, &k, 1, tok, strlen(tok), 0, 0, &p, NULL,
                                                      err, sizeof err),
                             0);
            assert_string_equal(p.data, jstr(v, "src"));
            secret_clear(&p);
        }
        json_decref(gen);
        json_decref(inv);
        json_decref(ver);
    }

    struct fernet_key keys[3];
    randombytes_buf(keys, sizeof keys);
    uint8_t *plain = malloc(3000);
    for (int round = 0; round < 300; round++) {
        const struct fernet_key *k = &keys[randombytes_uniform(3)];
        size_t len = randombytes_uniform(3000);
        randombytes_buf(plain, len);
        uint8_t iv[FERNET_IV_BYTES];
        randombytes_buf(iv, sizeof iv);
        char *fresh = NULL, *reused = NULL;
        assert_int_equal(fernet_encrypt(k, plain, len, 1795800000, iv, &fresh), 0);
        assert_int_equal(fernet_encrypt_with(eng, k, plain, len, 1795800000, iv, &reused), 0);
        assert_string_equal(reused, fresh);
        if (round % 7 == 3) /* a failure in between: tampered MAC */
            reused[strlen(reused) - 3] = reused[strlen(reused) - 3] == 'A' ? 'B' : 'A';
        struct secret p = {0};
        char err[256];
        size_t idx = 9;
        int rc = fernet_decrypt_keys_with(eng, keys, 3, reused, strlen(reused), 0, 0, &p, &idx, err,
                                          sizeof err);
        if (round % 7 == 3) {
            assert_int_equal(rc, -1);
        } else {
            assert_int_equal(rc, 0);
            assert_ptr_equal(&keys[idx], k);
            assert_int_equal(p.len, len);
            assert_memory_equal(p.data, plain, len);
        }
        secret_clear(&p);
        free(fresh);
        free(reused);
    }
    free(plain);
    fernet_engine_free(eng);
    fernet_engine_free(NULL);
}

static void test_secret_helpers_wipe_and_reset(void **state)
{
    (void)state;
    struct secret s = {0};
    assert_int_equal(secret_set(&s, "abc", 3), 0);
    assert_int_equal(s.len, 3);
    assert_string_equal(s.data, "abc");
    assert_int_equal(secret_set(&s, "", 0), 0);
    assert_int_equal(s.len, 0);
    assert_string_equal(s.data, "");
    secret_clear(&s);
    assert_null(s.data);
    assert_int_equal(s.len, 0);
    secret_clear(&s); /* idempotent */
    char *owned = strdup("xyz");
    secret_adopt(&s, owned, 3);
    assert_ptr_equal(s.data, owned);
    secret_clear(&s);
    secure_free_str(strdup("zzz"));
    secure_free_str(NULL);
    secure_free(malloc(16), 16);
    secure_free(NULL, 5);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_vectors_produce_exact_tokens),
        cmocka_unit_test(test_verify_vectors_decrypt_within_ttl_and_without),
        cmocka_unit_test(test_invalid_vectors_are_rejected_with_clean_errors),
        cmocka_unit_test(test_round_trip_sizes_0_to_1mib),
        cmocka_unit_test(test_fresh_ivs_make_distinct_tokens),
        cmocka_unit_test(test_timestamp_is_stored_big_endian),
        cmocka_unit_test(test_tampering_any_byte_is_rejected),
        cmocka_unit_test(test_wrong_key_is_rejected),
        cmocka_unit_test(test_ttl_boundaries),
        cmocka_unit_test(test_key_decode_is_strict),
        cmocka_unit_test(test_generated_keys_are_distinct_valid_keys),
        cmocka_unit_test(test_multifernet_encrypts_with_first_and_decrypts_with_any),
        cmocka_unit_test(test_keyring_from_zero_raw_keys_fails),
        cmocka_unit_test(test_secret_helpers_wipe_and_reset),
        cmocka_unit_test(test_a_reused_engine_matches_fresh_contexts_after_anything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
