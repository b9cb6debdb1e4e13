/*
 * test_parse.c — the configuration value parsers accept exactly the documented
 * forms and refuse everything else, including hostile input (signs, overflow,
 * junk, huge digit strings).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"

#define H   (3600LL * 1000)
#define MIN (60LL * 1000)
#define S   1000LL

static void expect_duration(const char *s, int64_t want)
{
    int64_t got = -12345;
    if (!parse_duration_ms(s, &got))
        fail_msg("parse_duration_ms(\"%s\"): expected %lld ms, got rejection", s, (long long)want);
    if (got != want)
        fail_msg("parse_duration_ms(\"%s\"): expected %lld ms, got %lld", s, (long long)want,
                 (long long)got);
}

static void expect_duration_rejected(const char *s)
{
    int64_t got = -12345;
    if (parse_duration_ms(s, &got))
        fail_msg("parse_duration_ms(\"%s\"): expected rejection, got %lld ms", s, (long long)got);
    assert_int_equal(got, -12345); /* output untouched on failure */
}

static void duration_plain_number_means_seconds(void **state)
{
    (void)state;
    expect_duration("300", 300 * S);
    expect_duration("0", 0);
    expect_duration("1", 1000);
    expect_duration("007", 7 * S);
    expect_duration("9223372036854775", 9223372036854775LL * S);
}

static void duration_every_unit_is_understood(void **state)
{
    (void)state;
    expect_duration("250ms", 250);
    const char *secs[] = {"s", "sec", "second", "seconds"};
    const char *mins[] = {"m", "min", "minute", "minutes"};
    const char *hours[] = {"h", "hr", "hour", "hours"};
    const char *days[] = {"d", "day", "days"};
    char buf[32];
    for (size_t i = 0; i < 4; i++) {
        snprintf(buf, sizeof(buf), "7%s", secs[i]);
        expect_duration(buf, 7 * S);
        snprintf(buf, sizeof(buf), "7%s", mins[i]);
        expect_duration(buf, 7 * MIN);
        snprintf(buf, sizeof(buf), "7%s", hours[i]);
        expect_duration(buf, 7 * H);
    }
    for (size_t i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "2%s", days[i]);
        expect_duration(buf, 2 * 24 * H);
    }
}

static void duration_groups_add_up(void **state)
{
    (void)state;
    expect_duration("5min", 5 * MIN);
    expect_duration("1h30min", 90 * MIN);
    expect_duration("2h 15min", 135 * MIN);
    expect_duration("1d2h3min4s5ms", 24 * H + 2 * H + 3 * MIN + 4 * S + 5);
    expect_duration("1h  30min", 90 * MIN);
    expect_duration("5 min", 5 * MIN);
    expect_duration("1s500ms", 1500);
    expect_duration("0ms", 0);
}

static void duration_hostile_input_is_rejected(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        " ",
        "-5",
        "-5s",
        "+5s",
        "+5",
        "5x",
        "5 x",
        "s",
        "min",
        "ms5",
        "h1",
        "5min junk",
        "5min5",
        "1h 30",
        "1.5h",
        "1,5h",
        "0x10",
        "1e3",
        "5S",
        "5MIN",
        "5 ",
        " 5",
        "5s ",
        " 5s",
        "5\ts\n",
        "5s\n",
        "5mins",
        "5msec",
        "5min5min5minx",
        "--",
        "5--",
        "nan",
        "inf",
        "5 min min",
        "5\x01s",
        /* int64 milliseconds overflow */
        "9223372036854776",
        "9223372036854775808",
        "106751991167301d",
        "2562047788016h",
        "153722867280913min",
        "9223372036854776s",
        "9223372036854775808ms",
        "9223372036854775807ms1ms",
        "106751991167d 1d",
        "106751991168d",
        /* huge digit strings */
        "000000000000000000000000000000000000000001s",
        "99999999999999999999999999999999",
        "18446744073709551616",
        "18446744073709551615ms",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        expect_duration_rejected(bad[i]);
}

static void duration_limits_are_exact(void **state)
{
    (void)state;
    expect_duration("9223372036854775807ms", INT64_MAX);
    expect_duration("9223372036854775s", 9223372036854775LL * S);
    expect_duration("9223372036854775807ms 0s", INT64_MAX);
    expect_duration("106751991167d", 106751991167LL * 24 * H);
    expect_duration_rejected(NULL);
}

static void format_duration_is_readable_and_round_trips(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "0s"},
        {250, "250ms"},
        {1000, "1s"},
        {90 * MIN, "1h30min"},
        {5 * MIN, "5min"},
        {24 * H + 1, "1d1ms"},
        {-1500, "-1s500ms"},
        {INT64_MAX, "106751991167d7h12min55s807ms"},
        {INT64_MIN, "-106751991167d7h12min55s808ms"},
    };
    char buf[64];
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        format_duration_ms(cases[i].ms, buf, sizeof(buf));
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("format_duration_ms(%lld): expected \"%s\", got \"%s\"",
                     (long long)cases[i].ms, cases[i].want, buf);
        int64_t back;
        if (cases[i].ms >= 0) {
            assert_true(parse_duration_ms(buf, &back));
            assert_int_equal(back, cases[i].ms);
        }
    }
}

static void format_duration_truncates_safely(void **state)
{
    (void)state;
    char buf[4];
    memset(buf, 'X', sizeof(buf));
    format_duration_ms(90 * MIN, buf, sizeof(buf));
    assert_int_equal(buf[3], '\0');
    assert_string_equal(buf, "1h3");
    format_duration_ms(90 * MIN, buf, 0); /* no write at all */
    format_duration_ms(90 * MIN, NULL, 10);
}

static void bool_accepts_the_six_spellings_in_any_case(void **state)
{
    (void)state;
    const char *yes[] = {"yes", "YES", "Yes", "true", "TRUE", "on", "On", "1"};
    const char *no[] = {"no", "NO", "false", "False", "off", "OFF", "0"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        bool b = false;
        if (!parse_bool(yes[i], &b) || !b)
            fail_msg("parse_bool(\"%s\"): expected true", yes[i]);
    }
    for (size_t i = 0; i < ARRAY_LEN(no); i++) {
        bool b = true;
        if (!parse_bool(no[i], &b) || b)
            fail_msg("parse_bool(\"%s\"): expected false", no[i]);
    }
}

static void bool_rejects_everything_else(void **state)
{
    (void)state;
    const char *bad[] = {"", "y", "n", "2", "yes ", " yes", "yess", "enable", "01", "-1", "t"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        bool b;
        if (parse_bool(bad[i], &b))
            fail_msg("parse_bool(\"%s\"): expected rejection", bad[i]);
    }
    bool b;
    assert_false(parse_bool(NULL, &b));
}

static void u64_respects_bounds_and_rejects_junk(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_true(parse_u64("500", 1, 1000, &v));
    assert_int_equal(v, 500);
    assert_true(parse_u64("1", 1, 1000, &v));
    assert_true(parse_u64("1000", 1, 1000, &v));
    assert_true(parse_u64("18446744073709551615", 0, UINT64_MAX, &v));
    assert_true(v == UINT64_MAX);
    v = 7;
    const char *bad[] = {"0",
                         "1001",
                         "",
                         "-1",
                         "+1",
                         " 5",
                         "5 ",
                         "5x",
                         "0x10",
                         "1e2",
                         "18446744073709551616",
                         "000000000000000000000000000005"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (parse_u64(bad[i], 1, 1000, &v))
            fail_msg("parse_u64(\"%s\", 1, 1000): expected rejection, got %llu", bad[i],
                     (unsigned long long)v);
    }
    assert_int_equal(v, 7);
}

static void double_accepts_plain_decimals_only(void **state)
{
    (void)state;
    double d = -1;
    assert_true(parse_double("50", 0, 1e6, &d));
    assert_true(d == 50.0);
    assert_true(parse_double("0.5", 0, 1e6, &d));
    assert_true(d == 0.5);
    assert_true(parse_double("0", 0, 1e6, &d));
    assert_true(d == 0.0);
    assert_true(parse_double("1000000", 0, 1e6, &d));
    const char *bad[] = {
        "",      ".5",        "5.",    "-1",
        "+1",    "1e3",       "inf",   "nan",
        "0x1p3", "1,5",       "1.2.3", " 1",
        "1 ",    "1000000.1", "1.5x",  "00000000000000000000000000000000000000000001"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (parse_double(bad[i], 0, 1e6, &d))
            fail_msg("parse_double(\"%s\", 0, 1e6): expected rejection, got %g", bad[i], d);
    }
    assert_false(parse_double("0.5", 1, 2, &d));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duration_plain_number_means_seconds),
        cmocka_unit_test(duration_every_unit_is_understood),
        cmocka_unit_test(duration_groups_add_up),
        cmocka_unit_test(duration_hostile_input_is_rejected),
        cmocka_unit_test(duration_limits_are_exact),
        cmocka_unit_test(format_duration_is_readable_and_round_trips),
        cmocka_unit_test(format_duration_truncates_safely),
        cmocka_unit_test(bool_accepts_the_six_spellings_in_any_case),
        cmocka_unit_test(bool_rejects_everything_else),
        cmocka_unit_test(u64_respects_bounds_and_rejects_junk),
        cmocka_unit_test(double_accepts_plain_decimals_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
