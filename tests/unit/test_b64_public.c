/*
 * test_b64_public.c — the fast codec for public data (b64url_encode_public /
 * b64url_decode_public) accepts and produces exactly what the constant-time
 * codec does. The whole of test_b64.c (RFC 4648 vectors, the independent
 * oracle over every 4-character string and every byte at every position, the
 * hostile strings) runs again against it; then differential tests compare the
 * two codecs on random data of every length up to several of the fast codec's
 * 4096-character chunks, and on random mutations of those encodings.
 */
#include <sodium.h>

/* Run test_b64.c's suite with the public codec in place of the constant-time one. */
#define b64url_encode b64url_encode_public
#define b64url_decode b64url_decode_public
#define main          test_b64_suite_main
int test_b64_suite_main(void);
#include "test_b64.c"
#undef main
#undef b64url_encode
#undef b64url_decode

/* b64.h was read under the macros above: declare the constant-time codec too. */
void b64url_encode(const uint8_t *bin, size_t binlen, char *out, size_t outlen);
int b64url_decode(const char *s, size_t len, uint8_t *out, size_t outcap, size_t *outlen) WUR;

static void test_both_codecs_agree_on_random_data_of_every_length(void **state)
{
    (void)state;
    static uint8_t bin[9000], back1[9000], back2[9000];
    static char e1[12100], e2[12100];
    randombytes_buf(bin, sizeof(bin));
    for (size_t n = 0; n <= sizeof(bin); n += (n < 200 ? 1 : 37)) {
        size_t el = b64url_encoded_len(n);
        b64url_encode(bin, n, e1, sizeof(e1));
        b64url_encode_public(bin, n, e2, sizeof(e2));
        assert_int_equal(strlen(e2), el);
        if (memcmp(e1, e2, el + 1) != 0)
            fail_msg("encodings of %zu bytes differ: expected the constant-time codec's", n);
        size_t g1 = 0, g2 = 0;
        assert_int_equal(b64url_decode(e1, el, back1, sizeof(back1), &g1), 0);
        assert_int_equal(b64url_decode_public(e1, el, back2, sizeof(back2), &g2), 0);
        assert_int_equal(g2, n);
        assert_memory_equal(back2, bin, n);
        /* Exactly enough room is enough. */
        assert_int_equal(b64url_decode_public(e1, el, back2, n, &g2), 0);
        if (n > 0)
            assert_int_equal(b64url_decode_public(e1, el, back2, n - 1, &g2), -1);
    }
}

static void test_both_codecs_agree_on_mutated_long_encodings(void **state)
{
    (void)state;
    static uint8_t bin[6200], out1[6200], out2[6200];
    static char enc[8300];
    for (int round = 0; round < 3000; round++) {
        size_t n = 4000 + randombytes_uniform(2200); /* crosses the 4096-character chunk */
        randombytes_buf(bin, n);
        b64url_encode(bin, n, enc, sizeof(enc));
        size_t el = strlen(enc);
        size_t pos = randombytes_uniform((uint32_t)el);
        enc[pos] = (char)randombytes_uniform(256);
        size_t g1 = 0, g2 = 0;
        int r1 = b64url_decode(enc, el, out1, sizeof(out1), &g1);
        int r2 = b64url_decode_public(enc, el, out2, sizeof(out2), &g2);
        if (r1 != r2)
            fail_msg("byte 0x%02x at %zu of %zu: constant-time codec says %d, public codec %d",
                     (unsigned char)enc[pos], pos, el, r1, r2);
        if (r1 == 0) {
            assert_int_equal(g1, g2);
            assert_memory_equal(out1, out2, g1);
        }
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    int failed = test_b64_suite_main();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_codecs_agree_on_random_data_of_every_length),
        cmocka_unit_test(test_both_codecs_agree_on_mutated_long_encodings),
    };
    return failed + cmocka_run_group_tests(tests, NULL, NULL);
}
