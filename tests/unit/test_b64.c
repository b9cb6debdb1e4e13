/*
 * test_b64.c — the urlsafe base64 codec accepts exactly what Python's
 * base64.urlsafe_b64encode writes and nothing else. Hostile input is checked
 * against an independent acceptance rule (written out below from RFC 4648, not
 * from the implementation), exhaustively over every 4-character string of an
 * alphabet that contains all the interesting characters, and by mutating every
 * position of longer encodings with every byte value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "b64.h"

static const char URLSAFE[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Index of c in the urlsafe alphabet, or -1. */
static int alpha_index(unsigned char c)
{
    const char *p = c != 0 ? strchr(URLSAFE, c) : NULL;
    return p != NULL ? (int)(p - URLSAFE) : -1;
}

/* Independent oracle: is this 4-character quantum the last quantum of a
 * canonical padded urlsafe encoding? */
static int quantum_ok(const unsigned char q[4], int last)
{
    int a = alpha_index(q[0]), b = alpha_index(q[1]), c = alpha_index(q[2]), d = alpha_index(q[3]);
    if (a < 0 || b < 0)
        return 0;
    if (c >= 0 && d >= 0)
        return 1;
    if (!last)
        return 0;
    if (c >= 0 && q[3] == '=')
        return (c & 0x3) == 0; /* 2 bytes: low 2 bits unused */
    if (q[2] == '=' && q[3] == '=')
        return (b & 0xf) == 0; /* 1 byte: low 4 bits unused */
    return 0;
}

static int oracle_ok(const unsigned char *s, size_t len)
{
    if (len % 4 != 0)
        return 0;
    for (size_t i = 0; i < len; i += 4)
        if (!quantum_ok(s + i, i + 4 == len))
            return 0;
    return 1;
}

static void assert_encodes(const void *bin, size_t n, const char *want)
{
    char out[64];
    assert_int_equal(b64url_encoded_len(n), strlen(want));
    b64url_encode(bin, n, out, sizeof(out));
    if (strcmp(out, want) != 0)
        fail_msg("encode of %zu bytes: expected \"%s\", saw \"%s\"", n, want, out);
    uint8_t back[64];
    size_t got = 99;
    assert_int_equal(b64url_decode(want, strlen(want), back, sizeof(back), &got), 0);
    assert_int_equal(got, n);
    assert_memory_equal(back, bin, n);
}

static void test_rfc4648_vectors_in_urlsafe_alphabet(void **state)
{
    (void)state;
    assert_encodes("", 0, "");
    assert_encodes("f", 1, "Zg==");
    assert_encodes("fo", 2, "Zm8=");
    assert_encodes("foo", 3, "Zm9v");
    assert_encodes("foob", 4, "Zm9vYg==");
    assert_encodes("fooba", 5, "Zm9vYmE=");
    assert_encodes("foobar", 6, "Zm9vYmFy");
    /* Bytes whose standard encoding uses '+' and '/': urlsafe writes '-' '_'. */
    assert_encodes("\xfb\xff", 2, "-_8=");
    assert_encodes("\xfb\xef\xbe", 3, "----");
    assert_encodes("\xff\xff\xff", 3, "____");
    assert_encodes("\x00", 1, "AA==");
}

static void test_every_short_input_round_trips(void **state)
{
    (void)state;
    uint8_t bin[300], back[300];
    char enc[512];
    srand(12345);
    for (size_t n = 0; n <= sizeof(bin); n++) {
        for (int rep = 0; rep < 8; rep++) {
            for (size_t i = 0; i < n; i++)
                bin[i] = (uint8_t)rand();
            b64url_encode(bin, n, enc, sizeof(enc));
            assert_int_equal(strlen(enc), b64url_encoded_len(n));
            assert_true(oracle_ok((const unsigned char *)enc, strlen(enc)));
            size_t got = 0;
            assert_int_equal(b64url_decode(enc, strlen(enc), back, n, &got), 0);
            assert_int_equal(got, n);
            assert_memory_equal(back, bin, n);
        }
    }
}

static void test_all_one_and_two_byte_inputs_round_trip(void **state)
{
    (void)state;
    uint8_t bin[2], back[3];
    char enc[8];
    for (unsigned v = 0; v < 65536 + 256; v++) {
        size_t n = v < 256 ? 1 : 2;
        bin[0] = (uint8_t)v;
        bin[1] = (uint8_t)(v >> 8);
        b64url_encode(bin, n, enc, sizeof(enc));
        size_t got = 0;
        if (b64url_decode(enc, 4, back, sizeof(back), &got) != 0 || got != n ||
            memcmp(back, bin, n) != 0)
            fail_msg("expected \"%s\" to decode to its %zu source bytes", enc, n);
    }
}

/* Every 4-char string over: the urlsafe alphabet, '=', the standard alphabet's
 * '+' '/', whitespace, NUL, '.', a high byte. Acceptance must match the oracle
 * exactly, and an accepted string must re-encode to itself. */
static void test_every_four_char_string_matches_oracle(void **state)
{
    (void)state;
    static const char extra[] = "=+/ \n\t.\x80";
    char alpha[sizeof(URLSAFE) + sizeof(extra) + 1];
    size_t na = 0;
    memcpy(alpha, URLSAFE, strlen(URLSAFE));
    na = strlen(URLSAFE);
    memcpy(alpha + na, extra, strlen(extra));
    na += strlen(extra);
    alpha[na++] = '\0';

    unsigned char s[4];
    uint8_t out[3];
    char re[8];
    unsigned long accepted = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < na; j++)
            for (size_t k = 0; k < na; k++)
                for (size_t l = 0; l < na; l++) {
                    s[0] = (unsigned char)alpha[i];
                    s[1] = (unsigned char)alpha[j];
                    s[2] = (unsigned char)alpha[k];
                    s[3] = (unsigned char)alpha[l];
                    size_t got = 0;
                    int rc = b64url_decode((const char *)s, 4, out, sizeof(out), &got);
                    int want = oracle_ok(s, 4);
                    if ((rc == 0) != want)
                        fail_msg("\"%.4s\" (%02x %02x %02x %02x): expected %s, saw %s", s, s[0],
                                 s[1], s[2], s[3], want ? "accept" : "reject",
                                 rc == 0 ? "accept" : "reject");
                    if (rc == 0) {
                        accepted++;
                        b64url_encode(out, got, re, sizeof(re));
                        if (memcmp(re, s, 4) != 0)
                            fail_msg("accepted \"%.4s\" but it re-encodes as \"%s\"", s, re);
                    }
                }
    /* 64^4 full quanta + 64^3/4 two-byte + 64^2/16 one-byte. */
    assert_int_equal(accepted, 16777216UL + 65536UL + 256UL);
}

/* Every position of a 12-char (two-quantum-plus) encoding, every byte value. */
static void test_every_byte_at_every_position_matches_oracle(void **state)
{
    (void)state;
    const char *bases[] = {"Zm9vYmFyYmF6", "Zm9vYmFyYmE=", "Zm9vYmFyYg==", "-_-_AAAA____"};
    uint8_t out[16];
    for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
        unsigned char s[12];
        for (size_t pos = 0; pos < 12; pos++) {
            for (unsigned v = 0; v < 256; v++) {
                memcpy(s, bases[b], 12);
                s[pos] = (unsigned char)v;
                size_t got = 0;
                int rc = b64url_decode((const char *)s, 12, out, sizeof(out), &got);
                int want = oracle_ok(s, 12);
                if ((rc == 0) != want)
                    fail_msg("%s with byte %u at %zu: expected %s, saw %s", bases[b], v, pos,
                             want ? "accept" : "reject", rc == 0 ? "accept" : "reject");
            }
        }
    }
}

static void assert_rejected(const char *s, size_t len)
{
    uint8_t out[64];
    size_t got = 77;
    if (b64url_decode(s, len, out, sizeof(out), &got) == 0)
        fail_msg("expected rejection of %zu-byte input \"%.*s\", but it decoded to %zu bytes", len,
                 (int)len, s, got);
    assert_int_equal(got, 0);
}

static void test_hostile_strings_are_rejected(void **state)
{
    (void)state;
    const char *bad[] = {
        "Zg",        /* missing padding */
        "Zg=",       /* short padding */
        "Zg===",     /* extra padding */
        "Zg======",  /* padding quantum */
        "Zm8",       /* missing padding */
        "Zm8==",     /* extra padding */
        "Zm9v=",     /* padding after a full quantum */
        "Zm9v====",  /* a quantum of padding */
        "====",      /* padding only */
        "=",         /* one pad */
        "Zg==Zm9v",  /* padding in the middle */
        "Zg==Zg==",  /* two padded quanta */
        "Z===",      /* 6 bits cannot be a byte */
        "Zh==",      /* non-canonical trailing bits (Python would write Zg==) */
        "Zm9=",      /* non-canonical: 'Zm8=' is the encoding */
        "Zm9v\n",    /* trailing newline */
        " Zm9v",     /* leading space */
        "Zm 9v",     /* embedded space */
        "Zm9v\r\n",  /* CRLF */
        "Zm\n9v",    /* embedded newline */
        "+/8=",      /* standard alphabet */
        "Zm+v",      /* standard alphabet */
        "Zm/v",      /* standard alphabet */
        "Zm9v.",     /* junk */
        "Zm9v Zm9v", /* space between quanta */
        "Zm9vYmFy=", /* trailing pad after full */
        "A",         /* single char */
        "AAAAA",     /* 5 chars */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_rejected(bad[i], strlen(bad[i]));
    /* Embedded NUL bytes: length-bounded input must not stop at them. */
    assert_rejected("Zm9v\0\0\0\0", 8);
    assert_rejected("Zm\0v", 4);
    assert_rejected("Zm9vYg==\0", 9);
    /* Length given shorter than the text: only the prefix counts. */
    uint8_t out[8];
    size_t got = 0;
    assert_int_equal(b64url_decode("Zm9vYg==", 4, out, sizeof(out), &got), 0);
    assert_int_equal(got, 3);
    assert_memory_equal(out, "foo", 3);
}

static void test_empty_input_decodes_to_nothing(void **state)
{
    (void)state;
    uint8_t out[1];
    size_t got = 5;
    assert_int_equal(b64url_decode("", 0, out, sizeof(out), &got), 0);
    assert_int_equal(got, 0);
}

static void test_output_that_does_not_fit_is_rejected(void **state)
{
    (void)state;
    uint8_t out[8];
    size_t got = 0;
    /* 6 bytes into 5 */
    assert_int_equal(b64url_decode("Zm9vYmFy", 8, out, 5, &got), -1);
    assert_int_equal(b64url_decode("Zm9vYmE=", 8, out, 4, &got), -1);
    assert_int_equal(b64url_decode("Zm9v", 4, out, 0, &got), -1);
    assert_int_equal(b64url_decode("Zm9vYmE=", 8, out, 5, &got), 0);
    assert_int_equal(got, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors_in_urlsafe_alphabet),
        cmocka_unit_test(test_every_short_input_round_trips),
        cmocka_unit_test(test_all_one_and_two_byte_inputs_round_trip),
        cmocka_unit_test(test_every_four_char_string_matches_oracle),
        cmocka_unit_test(test_every_byte_at_every_position_matches_oracle),
        cmocka_unit_test(test_hostile_strings_are_rejected),
        cmocka_unit_test(test_empty_input_decodes_to_nothing),
        cmocka_unit_test(test_output_that_does_not_fit_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
