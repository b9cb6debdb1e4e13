/*
 * test_backoff.c — exact arithmetic of backoff_delay_ms (doubling, caps,
 * jitter bounds, Retry-After precedence), Retry-After parsing (delta-seconds,
 * the three HTTP-date forms of RFC 9110, and hostile strings), and the token
 * bucket. No clock is read: every input is fixed.
 */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backoff.h"

#define EXPECT_I64(seen, expected, what)                                                           \
    do {                                                                                           \
        int64_t s_ = (seen), e_ = (expected);                                                      \
        if (s_ != e_)                                                                              \
            fail_msg("%s: expected %lld, seen %lld", (what), (long long)e_, (long long)s_);        \
    } while (0)

/* ---- backoff_delay_ms ---- */

static void test_backoff_first_attempt_is_half_to_full_retry_min(void **state)
{
    (void)state;
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, -1, 0.0), 500, "u=0 gives base/2");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, -1, 0.5), 750, "u=0.5 gives 3/4 base");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, -1, 0.999999), 999, "u->1 stays below base");
}

static void test_backoff_doubles_per_attempt(void **state)
{
    (void)state;
    EXPECT_I64(backoff_delay_ms(2, 1000, 60000, -1, 0.0), 1000, "attempt 2: base 2000");
    EXPECT_I64(backoff_delay_ms(3, 1000, 60000, -1, 0.0), 2000, "attempt 3: base 4000");
    EXPECT_I64(backoff_delay_ms(4, 1000, 60000, -1, 0.0), 4000, "attempt 4: base 8000");
    EXPECT_I64(backoff_delay_ms(6, 1000, 60000, -1, 0.0), 16000, "attempt 6: base 32000");
}

static void test_backoff_caps_at_retry_max(void **state)
{
    (void)state;
    EXPECT_I64(backoff_delay_ms(7, 1000, 60000, -1, 0.0), 30000, "attempt 7: 64000 capped");
    EXPECT_I64(backoff_delay_ms(1000, 1000, 60000, -1, 0.0), 30000, "attempt 1000 capped");
    EXPECT_I64(backoff_delay_ms(UINT_MAX, 5000, 3600000, -1, 0.0), 1800000,
               "UINT_MAX attempts: no overflow");
    EXPECT_I64(backoff_delay_ms(UINT_MAX, INT64_MAX / 2 + 1, INT64_MAX, -1, 0.0), INT64_MAX / 2,
               "huge bounds: no overflow");
}

static void test_backoff_degenerate_inputs_are_sane(void **state)
{
    (void)state;
    EXPECT_I64(backoff_delay_ms(0, 1000, 60000, -1, 0.0), 500, "attempts 0 treated as 1");
    EXPECT_I64(backoff_delay_ms(5, 8000, 2000, -1, 0.0), 4000, "max < min: max raised to min");
    EXPECT_I64(backoff_delay_ms(1, 0, 0, -1, 0.0), 0, "zero bounds: 1ms base, half is 0");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, -1, NAN), 500, "NaN draw treated as 0");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, -1, -3.0), 500, "negative draw treated as 0");
    int64_t d = backoff_delay_ms(1, 1000, 60000, -1, 1.0);
    if (d < 500 || d > 1000)
        fail_msg("u=1.0: expected within [500,1000], seen %lld", (long long)d);
    d = backoff_delay_ms(1, 1000, 60000, -1, INFINITY);
    if (d < 500 || d > 1000)
        fail_msg("u=inf: expected within [500,1000], seen %lld", (long long)d);
}

static void test_backoff_jitter_stays_within_half_and_full_base(void **state)
{
    (void)state;
    for (unsigned a = 1; a <= 20; a++) {
        int64_t base = 5000;
        for (unsigned i = 1; i < a; i++)
            base = base * 2 > 3600000 ? 3600000 : base * 2;
        for (int k = 0; k < 1000; k++) {
            double u = k / 1000.0;
            int64_t d = backoff_delay_ms(a, 5000, 3600000, -1, u);
            if (d < base / 2 || d > base)
                fail_msg("attempt %u u=%f: expected within [%lld,%lld], seen %lld", a, u,
                         (long long)(base / 2), (long long)base, (long long)d);
        }
    }
}

static void test_backoff_retry_after_wins_when_longer_capped_at_max(void **state)
{
    (void)state;
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, 10000, 0.0), 10000, "longer Retry-After wins");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, 100, 0.0), 500, "shorter Retry-After ignored");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, 0, 0.0), 500, "Retry-After 0 ignored");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, -1, 0.0), 500, "no Retry-After");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, 999999999, 0.0), 60000,
               "Retry-After capped at retry_max");
    EXPECT_I64(backoff_delay_ms(1, 1000, 60000, INT64_MAX, 0.0), 60000,
               "Retry-After INT64_MAX capped");
}

/* ---- retry_after_parse_ms ---- */

/* Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example date). */
#define RFC_EXAMPLE_EPOCH ((time_t)784111777)

static void test_retry_after_delta_seconds(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("120", 0), 120000, "\"120\"");
    EXPECT_I64(retry_after_parse_ms("0", 0), 0, "\"0\"");
    EXPECT_I64(retry_after_parse_ms(" 7\t", 0), 7000, "surrounding OWS");
    EXPECT_I64(retry_after_parse_ms("000042", 0), 42000, "leading zeros");
    EXPECT_I64(retry_after_parse_ms("2147483648", 0), INT64_C(2147483648) * 1000, "2^31");
}

static void test_retry_after_huge_delta_is_clamped_not_overflowed(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("99999999999999999999999999999999", 0),
               INT64_C(2147483648) * 1000, "overflowing delta clamps to 2^31 s");
    EXPECT_I64(retry_after_parse_ms("2147483649", 0), INT64_C(2147483648) * 1000, "2^31+1 clamps");
}

static void test_retry_after_imf_fixdate(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", RFC_EXAMPLE_EPOCH - 10), 10000,
               "IMF-fixdate 10 s ahead");
}

static void test_retry_after_rfc850_date(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("Sunday, 06-Nov-94 08:49:37 GMT", RFC_EXAMPLE_EPOCH - 60),
               60000, "RFC 850 date 60 s ahead");
}

static void test_retry_after_asctime_date(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("Sun Nov  6 08:49:37 1994", RFC_EXAMPLE_EPOCH - 3), 3000,
               "asctime date 3 s ahead");
}

static void test_retry_after_date_in_the_past_is_zero(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", RFC_EXAMPLE_EPOCH + 100), 0,
               "past date");
    EXPECT_I64(retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", RFC_EXAMPLE_EPOCH), 0,
               "date == now");
}

static void test_retry_after_far_future_date_is_clamped(void **state)
{
    (void)state;
    EXPECT_I64(retry_after_parse_ms("Fri, 31 Dec 9999 23:59:59 GMT", 0), INT64_C(2147483648) * 1000,
               "year 9999 clamps to 2^31 s");
}

static void test_retry_after_hostile_strings_are_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "   ",
        "-5",
        "+5",
        "1.5",
        "12a",
        "0x10",
        "1e3",
        "5 5",
        "\xff\xfe",
        "12\x01",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 1994 08:61:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37",
        "Sun Nov  6 08:49:37",
        "Sun Nov  6 08:49:37 1994 GMT junk",
        "tomorrow",
        "%n%n%n%s%s",
        /* longer than any legitimate value (64 characters) */
        "1234567890123456789012345678901234567890123456789012345678901234567890",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = retry_after_parse_ms(bad[i], RFC_EXAMPLE_EPOCH - 10);
        if (v != -1)
            fail_msg("\"%s\": expected -1, seen %lld", bad[i], (long long)v);
    }
    EXPECT_I64(retry_after_parse_ms(NULL, 0), -1, "NULL");
}

/* ---- token bucket ---- */

static void test_token_bucket_starts_full_and_empties(void **state)
{
    (void)state;
    struct token_bucket tb;
    token_bucket_init(&tb, 4.0, 100.0);
    for (int i = 0; i < 4; i++)
        if (!token_bucket_take(&tb, 100.0))
            fail_msg("take %d of a full bucket of 4: expected true, seen false", i + 1);
    if (token_bucket_take(&tb, 100.0))
        fail_msg("5th take at the same instant: expected false, seen true");
    double w = token_bucket_wait(&tb, 100.0);
    if (w != 0.25)
        fail_msg("wait after emptying at rate 4: expected 0.25, seen %.17g", w);
}

static void test_token_bucket_refills_at_rate(void **state)
{
    (void)state;
    struct token_bucket tb;
    token_bucket_init(&tb, 4.0, 100.0);
    for (int i = 0; i < 4; i++)
        assert_true(token_bucket_take(&tb, 100.0));
    if (token_bucket_take(&tb, 100.125))
        fail_msg("after 0.125 s at rate 4: expected no token, seen one");
    double w = token_bucket_wait(&tb, 100.125);
    if (w != 0.125)
        fail_msg("wait at 100.125: expected 0.125, seen %.17g", w);
    if (!token_bucket_take(&tb, 100.25))
        fail_msg("after 0.25 s at rate 4: expected one token, seen none");
    if (token_bucket_take(&tb, 100.25))
        fail_msg("second take at 100.25: expected false, seen true");
}

static void test_token_bucket_refill_is_capped_at_burst(void **state)
{
    (void)state;
    struct token_bucket tb;
    token_bucket_init(&tb, 4.0, 0.0);
    for (int i = 0; i < 4; i++)
        assert_true(token_bucket_take(&tb, 0.0));
    int taken = 0;
    while (token_bucket_take(&tb, 1000.0))
        taken++;
    if (taken != 4)
        fail_msg("after 1000 s idle: expected burst of 4 tokens, seen %d", taken);
}

static void test_token_bucket_rate_zero_is_unlimited(void **state)
{
    (void)state;
    struct token_bucket tb;
    token_bucket_init(&tb, 0.0, 0.0);
    for (int i = 0; i < 100000; i++)
        if (!token_bucket_take(&tb, 0.0))
            fail_msg("unlimited bucket refused take %d", i);
    if (token_bucket_wait(&tb, 0.0) != 0.0)
        fail_msg("unlimited bucket: expected wait 0");
}

static void test_token_bucket_slow_rate_has_burst_of_one(void **state)
{
    (void)state;
    struct token_bucket tb;
    token_bucket_init(&tb, 0.5, 10.0);
    assert_true(token_bucket_take(&tb, 10.0));
    if (token_bucket_take(&tb, 10.0))
        fail_msg("rate 0.5: expected burst 1, a second token was given");
    double w = token_bucket_wait(&tb, 10.0);
    if (w != 2.0)
        fail_msg("rate 0.5: expected wait 2.0, seen %.17g", w);
    assert_false(token_bucket_take(&tb, 11.5));
    assert_true(token_bucket_take(&tb, 12.0));
}

static void test_token_bucket_clock_going_back_gives_no_tokens(void **state)
{
    (void)state;
    struct token_bucket tb;
    token_bucket_init(&tb, 4.0, 100.0);
    for (int i = 0; i < 4; i++)
        assert_true(token_bucket_take(&tb, 100.0));
    if (token_bucket_take(&tb, 50.0))
        fail_msg("clock went back 50 s: expected no token, seen one");
    if (token_bucket_wait(&tb, 50.0) != 0.25)
        fail_msg("clock went back: expected wait 0.25 from the new time");
    if (!token_bucket_take(&tb, 50.25))
        fail_msg("0.25 s after resync: expected a token");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_first_attempt_is_half_to_full_retry_min),
        cmocka_unit_test(test_backoff_doubles_per_attempt),
        cmocka_unit_test(test_backoff_caps_at_retry_max),
        cmocka_unit_test(test_backoff_degenerate_inputs_are_sane),
        cmocka_unit_test(test_backoff_jitter_stays_within_half_and_full_base),
        cmocka_unit_test(test_backoff_retry_after_wins_when_longer_capped_at_max),
        cmocka_unit_test(test_retry_after_delta_seconds),
        cmocka_unit_test(test_retry_after_huge_delta_is_clamped_not_overflowed),
        cmocka_unit_test(test_retry_after_imf_fixdate),
        cmocka_unit_test(test_retry_after_rfc850_date),
        cmocka_unit_test(test_retry_after_asctime_date),
        cmocka_unit_test(test_retry_after_date_in_the_past_is_zero),
        cmocka_unit_test(test_retry_after_far_future_date_is_clamped),
        cmocka_unit_test(test_retry_after_hostile_strings_are_rejected),
        cmocka_unit_test(test_token_bucket_starts_full_and_empties),
        cmocka_unit_test(test_token_bucket_refills_at_rate),
        cmocka_unit_test(test_token_bucket_refill_is_capped_at_burst),
        cmocka_unit_test(test_token_bucket_rate_zero_is_unlimited),
        cmocka_unit_test(test_token_bucket_slow_rate_has_burst_of_one),
        cmocka_unit_test(test_token_bucket_clock_going_back_gives_no_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
