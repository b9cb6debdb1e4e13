/*
 * test_keys.c — the key file loader: one key per line, '#' comments, blank
 * lines, surrounding whitespace and CRLF accepted; bad keys named by line
 * without quoting them; empty lists, unreadable paths and non-files rejected;
 * a group/world-readable or -writable file, or one owned by another user,
 * warned about (once per load). Loaded keyrings encrypt with the
 * first key and decrypt with any, in file order. Keyed tags (the spool's
 * integrity) match Python's BLAKE2b and verify under any loaded key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "fernet.h"
#include "keys.h"

/* Python-generated keys (Fernet.generate_key()); the first is the spec's. */
#define K1 "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
#define K2 "l1_MER8O6ZALPKUrMoC8lIvYLiPGJ1tTkT3tSr1DFlI="
#define K3 "HsPbbwwMOAx-DOQ8bW3Xg7KntASHXHpk_-tiSvAKrHs="

struct fixture {
    char dir[64];
    char path[128];
};

struct warnings {
    int count;
    char last[ERRBUF_LEN];
};

static void warn_cb(void *ud, const char *msg)
{
    struct warnings *w = ud;
    w->count++;
    snprintf(w->last, sizeof(w->last), "%s", msg);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_keys.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/keys", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const struct fixture *f, const void *data, size_t len, mode_t mode)
{
    unlink(f->path);
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(f->path, mode), 0);
}

static void write_text(const struct fixture *f, const char *text)
{
    write_file(f, text, strlen(text), 0600);
}

static struct fernet_key key_of(const char *b64)
{
    struct fernet_key k;
    assert_int_equal(fernet_key_decode(b64, strlen(b64), &k), 0);
    return k;
}

/* The keyring decrypts a token of `key` and reports index `want`. */
static void assert_key_at(const struct keyring *kr, const char *key, size_t want)
{
    struct fernet_key k = key_of(key);
    char *tok = NULL;
    assert_int_equal(fernet_encrypt(&k, (const uint8_t *)"payload", 7, 1, NULL, &tok), 0);
    struct secret p = {0};
    size_t idx = 99;
    char err[ERRBUF_LEN] = "";
    if (keyring_decrypt(kr, tok, strlen(tok), &p, &idx, err, sizeof(err)) != 0)
        fail_msg("expected the keyring to hold key #%zu, decrypt said \"%s\"", want, err);
    if (idx != want)
        fail_msg("expected key index %zu, saw %zu", want, idx);
    assert_int_equal(p.len, 7);
    assert_memory_equal(p.data, "payload", 7);
    secret_clear(&p);
    free(tok);
}

static struct keyring *load_ok(const struct fixture *f, struct warnings *w)
{
    char err[ERRBUF_LEN] = "";
    struct keyring *kr = keyring_load_file(f->path, warn_cb, w, err, sizeof(err));
    if (kr == NULL)
        fail_msg("expected the key file to load, saw \"%s\"", err);
    return kr;
}

/* Loading fails; the error starts with want_prefix and quotes no key. */
static void load_fails(const struct fixture *f, const char *want_prefix)
{
    char err[ERRBUF_LEN] = "";
    struct warnings w = {0};
    struct keyring *kr = keyring_load_file(f->path, warn_cb, &w, err, sizeof(err));
    if (kr != NULL) {
        keyring_unref(kr);
        fail_msg("expected load to fail with \"%s...\", but it succeeded", want_prefix);
    }
    if (strncmp(err, want_prefix, strlen(want_prefix)) != 0)
        fail_msg("expected error starting \"%s\", saw \"%s\"", want_prefix, err);
    static const char *keys[] = {K1, K2, K3};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j + 8 <= 44; j++)
            if (memmem(err, strlen(err), keys[i] + j, 8) != NULL)
                fail_msg("error \"%s\" quotes key text", err);
}

static void test_single_key_loads_and_round_trips(void **state)
{
    struct fixture *f = *state;
    write_text(f, K1 "\n");
    struct warnings w = {0};
    struct keyring *kr = load_ok(f, &w);
    assert_int_equal(keyring_count(kr), 1);
    assert_int_equal(w.count, 0);
    assert_key_at(kr, K1, 0);
    /* keyring_encrypt's token verifies under the key from the file's text. */
    char *tok = NULL;
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)"abc", 3, &tok), 0);
    struct fernet_key k = key_of(K1);
    struct secret p = {0};
    char err[ERRBUF_LEN];
    assert_int_equal(fernet_decrypt(&k, tok, strlen(tok), 0, 0, &p, err, sizeof(err)), 0);
    assert_string_equal(p.data, "abc");
    secret_clear(&p);
    free(tok);
    keyring_unref(kr);
}

static void test_spec_vector_decrypts_with_loaded_key(void **state)
{
    struct fixture *f = *state;
    write_text(f, K2 "\n" K1); /* spec key second, no final newline */
    struct keyring *kr = load_ok(f, NULL);
    const char *tok =
        "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7"
        "JcbmrR64jVmpU4IwqDA==";
    struct secret p = {0};
    size_t idx = 9;
    char err[ERRBUF_LEN];
    assert_int_equal(keyring_decrypt(kr, tok, strlen(tok), &p, &idx, err, sizeof(err)), 0);
    assert_int_equal(idx, 1);
    assert_string_equal(p.data, "hello");
    secret_clear(&p);
    keyring_unref(kr);
}

static void test_comments_blank_lines_whitespace_and_crlf_are_accepted(void **state)
{
    struct fixture *f = *state;
    write_text(f, "# primary first\r\n"
                  "\r\n"
                  "   " K1 "   \r\n"
                  "\t# an old key, still readable\n"
                  "\n"
                  "\t" K2 "\t\n"
                  "   \n"
                  "#" K3 "\n" /* commented out: not loaded */
               K3 "\r\n"
                  "# trailing comment");
    struct keyring *kr = load_ok(f, NULL);
    assert_int_equal(keyring_count(kr), 3);
    assert_key_at(kr, K1, 0);
    assert_key_at(kr, K2, 1);
    assert_key_at(kr, K3, 2);
    keyring_unref(kr);
}

static void test_bad_key_is_reported_by_line_without_its_text(void **state)
{
    struct fixture *f = *state;
    write_text(f, "# comment\n" K1 "\n\nnot-a-key\n" K2 "\n");
    load_fails(f, "line 4: not a valid Fernet key (expected 44 characters of urlsafe base64");

    /* One char short, one long, standard alphabet, unpadded, inline junk. */
    write_text(f, K1 "\n"
                     "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4\n");
    load_fails(f, "line 2: not a valid Fernet key");
    write_text(f, K1 "=\n");
    load_fails(f, "line 1: not a valid Fernet key");
    write_text(f, "cw/0x689RpI+jtRR7oE8h/eQsKImvJapLeSbXpwF4e4=\n");
    load_fails(f, "line 1: not a valid Fernet key");
    write_text(f, K1 " " K2 "\n");
    load_fails(f, "line 1: not a valid Fernet key");
    write_text(f, K1 " # primary\n");
    load_fails(f, "line 1: not a valid Fernet key");
    /* A 32-byte value in a different encoding (hex) is not a Fernet key. */
    write_text(f, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    load_fails(f, "line 1: not a valid Fernet key");
    /* High bytes inside a key (libsodium 1.0.18 would decode these). */
    write_text(f, "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e\x80=\n");
    load_fails(f, "line 1: not a valid Fernet key");
}

static void test_empty_and_comment_only_files_are_errors(void **state)
{
    struct fixture *f = *state;
    write_text(f, "");
    load_fails(f, "no keys found");
    write_text(f, "# nothing here\n\n   \r\n");
    load_fails(f, "no keys found");
}

static void test_nul_bytes_are_rejected(void **state)
{
    struct fixture *f = *state;
    static const char data[] = K1 "\n\0" K2 "\n";
    write_file(f, data, sizeof(data) - 1, 0600);
    load_fails(f, "file contains NUL bytes");
}

static void test_missing_file_and_directory_are_errors(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    load_fails(f, "cannot open: No such file or directory");
    char err[ERRBUF_LEN] = "";
    assert_null(keyring_load_file(f->dir, NULL, NULL, err, sizeof(err)));
    assert_string_equal(err, "not a regular file");
}

static void test_unreadable_file_is_an_error(void **state)
{
    struct fixture *f = *state;
    if (geteuid() == 0)
        skip(); /* root reads mode 000 files */
    write_file(f, K1 "\n", 45, 0000);
    load_fails(f, "cannot open: Permission denied");
}

static void test_loose_mode_warns_and_strict_mode_does_not(void **state)
{
    struct fixture *f = *state;
    static const struct {
        mode_t mode;
        int warns;
        const char *want; /* in the one warning */
        const char *also; /* a second part of the same warning, or NULL */
    } cases[] = {
        {0600, 0, NULL, NULL},
        {0400, 0, NULL, NULL},
        {0640, 1, "readable by group (mode 0640)", NULL},
        {0604, 1, "readable by others (mode 0604)", NULL},
        {0644, 1, "readable by group and others (mode 0644)", NULL},
        {0620, 1, "writable by group (mode 0620)", NULL},
        {0602, 1, "writable by others (mode 0602)", NULL},
        {0666, 1, "readable by group and others (mode 0666)",
         "writable by group and others (mode 0666)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_file(f, K1 "\n", 45, cases[i].mode);
        struct warnings w = {0};
        struct keyring *kr = load_ok(f, &w);
        if (w.count != cases[i].warns)
            fail_msg("mode %04o: expected %d warning(s), saw %d (\"%s\")", cases[i].mode,
                     cases[i].warns, w.count, w.last);
        if (cases[i].warns) {
            if (strstr(w.last, cases[i].want) == NULL || strstr(w.last, f->path) == NULL ||
                (cases[i].also != NULL && strstr(w.last, cases[i].also) == NULL))
                fail_msg("mode %04o: expected warning naming the path and \"%s\", saw \"%s\"",
                         cases[i].mode, cases[i].want, w.last);
            assert_null(strstr(w.last, K1));
        }
        keyring_unref(kr);
    }
    /* warn may be NULL. */
    write_file(f, K1 "\n", 45, 0644);
    char err[ERRBUF_LEN];
    struct keyring *kr = keyring_load_file(f->path, NULL, NULL, err, sizeof(err));
    assert_non_null(kr);
    keyring_unref(kr);
}

static void test_a_key_file_owned_by_another_user_warns_once(void **state)
{
    struct fixture *f = *state;
    if (geteuid() != 0)
        skip(); /* only root can give a file away */
    write_file(f, K1 "\n", 45, 0600);
    assert_int_equal(chown(f->path, 12345, 12345), 0);
    struct warnings w = {0};
    struct keyring *kr = load_ok(f, &w);
    assert_int_equal(w.count, 1);
    if (strstr(w.last, "owned by uid 12345, neither this process's user (uid 0) nor root") == NULL)
        fail_msg("expected the owner warning, saw \"%s\"", w.last);
    keyring_unref(kr);
    /* Several problems still make one warning. */
    assert_int_equal(chmod(f->path, 0666), 0);
    w = (struct warnings){0};
    kr = load_ok(f, &w);
    assert_int_equal(w.count, 1);
    assert_non_null(strstr(w.last, "writable by group and others"));
    assert_non_null(strstr(w.last, "owned by uid 12345"));
    keyring_unref(kr);
    /* Owned by root (we are root): no warning. */
    assert_int_equal(chown(f->path, 0, 0), 0);
    assert_int_equal(chmod(f->path, 0400), 0);
    w = (struct warnings){0};
    kr = load_ok(f, &w);
    assert_int_equal(w.count, 0);
    keyring_unref(kr);
}

static void test_many_keys_load_in_order(void **state)
{
    struct fixture *f = *state;
    enum { N = 50 };
    char keys[N][45];
    char *text = malloc(N * 46 + 1);
    text[0] = '\0';
    for (int i = 0; i < N; i++) {
        fernet_generate_key(keys[i]);
        strcat(text, keys[i]);
        strcat(text, "\n");
    }
    write_text(f, text);
    struct keyring *kr = load_ok(f, NULL);
    assert_int_equal(keyring_count(kr), N);
    for (int i = 0; i < N; i += 7)
        assert_key_at(kr, keys[i], (size_t)i);
    assert_key_at(kr, keys[N - 1], N - 1);
    keyring_unref(kr);
    free(text);
}

static void test_references_keep_keys_alive_after_the_loader_lets_go(void **state)
{
    struct fixture *f = *state;
    write_text(f, K1 "\n" K2 "\n");
    struct keyring *kr = load_ok(f, NULL);
    struct keyring *a = keyring_ref(kr), *b = keyring_ref(kr);
    assert_ptr_equal(a, kr);
    keyring_unref(kr);
    keyring_unref(a);
    /* Still usable: the region is read-only, not freed (ASan would object). */
    assert_int_equal(keyring_count(b), 2);
    assert_key_at(b, K2, 1);
    keyring_unref(b);
    keyring_unref(NULL);
    assert_null(keyring_ref(NULL));
    assert_int_equal(keyring_count(NULL), 0);
}

/* Keyed tags, checked against Python's hashlib.blake2b(msg, key=k, person=p,
 * digest_size=32) with k = bytes(range(32)): an independent implementation. */
static struct keyring *raw_ring(const uint8_t first_byte[], size_t n)
{
    uint8_t raw[4][FERNET_KEY_BYTES];
    assert_true(n <= 4);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < FERNET_KEY_BYTES; j++)
            raw[i][j] = (uint8_t)(first_byte[i] + j);
    char err[ERRBUF_LEN];
    struct keyring *kr =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, n, err, sizeof err);
    assert_non_null(kr);
    return kr;
}

static void assert_tag_hex(const struct keyring *kr, const char *personal, const char *msg,
                           const char *hex)
{
    uint8_t tag[KEYRING_TAG_BYTES], want[KEYRING_TAG_BYTES];
    assert_int_equal(keyring_tag(kr, personal, msg, strlen(msg), tag), 0);
    assert_int_equal(sodium_hex2bin(want, sizeof want, hex, strlen(hex), NULL, NULL, NULL), 0);
    assert_memory_equal(tag, want, sizeof want);
}

static void test_tags_match_python_blake2b_keyed_and_personalised(void **state)
{
    (void)state;
    struct keyring *kr = raw_ring((const uint8_t[]){0}, 1);
    assert_tag_hex(kr, "oauthrd-spool-v2", "",
                   "32c01fc41710503cb18d96e1055f83d4641827fcd66140ac5c7fc716f9626200");
    assert_tag_hex(kr, "oauthrd-spool-v2", "S2 42 1 1795800000500000 ",
                   "b5de352512e7caa9447d5536c2b072e4e4ac51d567eecf4d6a5738ae39807dba");
    /* Another purpose, another tag, with the same key and message. */
    assert_tag_hex(kr, "oauthrd-other-v2", "S2 42 1 1795800000500000 ",
                   "8d8e68470e185eaf48fcd44ff764ab79c070c825ebb42f97c6e01d8100ba81f4");
    keyring_unref(kr);
}

static void test_tags_verify_under_a_demoted_key_and_nothing_else(void **state)
{
    (void)state;
    struct keyring *old = raw_ring((const uint8_t[]){0}, 1);
    struct keyring *rotated = raw_ring((const uint8_t[]){100, 0}, 2);
    struct keyring *other = raw_ring((const uint8_t[]){7, 9}, 2);
    const char msg[] = "S2 7 0 1 a b c - - - ";
    uint8_t tag[KEYRING_TAG_BYTES];
    assert_int_equal(keyring_tag(old, "oauthrd-spool-v2", msg, sizeof msg - 1, tag), 0);
    size_t idx = 99;
    assert_true(keyring_tag_verify(old, "oauthrd-spool-v2", msg, sizeof msg - 1, tag, &idx));
    assert_int_equal(idx, 0);
    assert_true(keyring_tag_verify(rotated, "oauthrd-spool-v2", msg, sizeof msg - 1, tag, &idx));
    assert_int_equal(idx, 1);
    assert_false(keyring_tag_verify(other, "oauthrd-spool-v2", msg, sizeof msg - 1, tag, NULL));
    assert_false(keyring_tag_verify(old, "oauthrd-other-v2", msg, sizeof msg - 1, tag, NULL));
    /* Every single-bit change of the message or the tag is caught. */
    char m2[sizeof msg];
    for (size_t i = 0; i < (sizeof msg - 1) * 8; i++) {
        memcpy(m2, msg, sizeof msg);
        m2[i / 8] ^= (char)(1 << (i % 8));
        assert_false(keyring_tag_verify(old, "oauthrd-spool-v2", m2, sizeof msg - 1, tag, NULL));
    }
    for (size_t i = 0; i < sizeof tag * 8; i++) {
        uint8_t t2[KEYRING_TAG_BYTES];
        memcpy(t2, tag, sizeof tag);
        t2[i / 8] ^= (uint8_t)(1 << (i % 8));
        assert_false(keyring_tag_verify(old, "oauthrd-spool-v2", msg, sizeof msg - 1, t2, NULL));
    }
    assert_int_equal(keyring_tag(NULL, "oauthrd-spool-v2", msg, 1, tag), -1);
    assert_false(keyring_tag_verify(NULL, "oauthrd-spool-v2", msg, 1, tag, NULL));
    keyring_unref(old);
    keyring_unref(rotated);
    keyring_unref(other);
}

/* The fingerprint is what Python's hashlib.blake2b(token, digest_size=32, key=KEY,
 * person=b"oauthrd-fp-v1").hexdigest()[:12] gives: documented, so checkable. */
static void test_token_fingerprint_is_short_keyed_and_follows_the_primary_key(void **state)
{
    (void)state;
    struct keyring *kr = raw_ring((const uint8_t[]){0}, 1);
    struct keyring *rotated = raw_ring((const uint8_t[]){100, 0}, 2);
    const char tok[] = "1//refresh-token";
    char fp[TOKEN_FP_HEX_LEN + 1], fp2[TOKEN_FP_HEX_LEN + 1];
    assert_int_equal(token_fingerprint(kr, tok, sizeof tok - 1, fp), 0);
    assert_string_equal(fp, "7c596048eb7e");
    assert_int_equal(strlen(fp), TOKEN_FP_HEX_LEN);
    /* Under a new primary key the same token has another fingerprint. */
    assert_int_equal(token_fingerprint(rotated, tok, sizeof tok - 1, fp2), 0);
    assert_string_equal(fp2, "394c8312ba33");
    assert_int_equal(token_fingerprint(NULL, tok, 1, fp), -1);
    assert_string_equal(fp, "");
    keyring_unref(kr);
    keyring_unref(rotated);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_single_key_loads_and_round_trips),
        T(test_spec_vector_decrypts_with_loaded_key),
        T(test_comments_blank_lines_whitespace_and_crlf_are_accepted),
        T(test_bad_key_is_reported_by_line_without_its_text),
        T(test_empty_and_comment_only_files_are_errors),
        T(test_nul_bytes_are_rejected),
        T(test_missing_file_and_directory_are_errors),
        T(test_unreadable_file_is_an_error),
        T(test_loose_mode_warns_and_strict_mode_does_not),
        T(test_a_key_file_owned_by_another_user_warns_once),
        T(test_many_keys_load_in_order),
        T(test_references_keep_keys_alive_after_the_loader_lets_go),
        T(test_tags_match_python_blake2b_keyed_and_personalised),
        T(test_tags_verify_under_a_demoted_key_and_nothing_else),
        T(test_token_fingerprint_is_short_keyed_and_follows_the_primary_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
