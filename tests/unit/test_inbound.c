/*
 * test_inbound.c — the parsers of what reaches the daemon at run time (NOTIFY
 * payloads, row values) accept exactly the documented forms, return only
 * finite values in range, and leave their outputs alone when they refuse
 * (issue 10 part 3: "1 nan" used to arm a NaN timer).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "inbound.h"

static void expect_request(const char *s, int64_t want)
{
    int64_t id = -7;
    if (!inbound_refresh_request(s, &id))
        fail_msg("refresh request \"%s\": refused, want %lld", s, (long long)want);
    assert_int_equal(id, want);
}

static void expect_request_refused(const char *s)
{
    int64_t id = -7;
    if (inbound_refresh_request(s, &id))
        fail_msg("refresh request \"%s\": accepted as %lld", s, (long long)id);
    assert_int_equal(id, -7);
}

static void refresh_request_is_one_positive_id(void **state)
{
    (void)state;
    expect_request("1", 1);
    expect_request("42", 42);
    expect_request("007", 7);
    expect_request("9223372036854775807", INT64_MAX);
    const char *bad[] = {"",
                         "0",
                         "-1",
                         "+1",
                         " 1",
                         "1 ",
                         "1 2",
                         "1\n",
                         "0x10",
                         "1e3",
                         "nan",
                         "inf",
                         "-0",
                         "9223372036854775808",
                         "18446744073709551616",
                         "1.0",
                         "\x01",
                         "\xc3\xbf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_request_refused(bad[i]);
    char digits[301];
    memset(digits, '9', 300);
    digits[300] = '\0';
    expect_request_refused(digits);
    memset(digits, '0', 299);
    digits[299] = '1'; /* a small value written with 300 digits */
    expect_request_refused(digits);
    expect_request_refused(NULL);
}

static void expect_changed(const char *s, int64_t want_id, double want_exp)
{
    int64_t id = -7;
    double exp = -7;
    if (!inbound_account_changed(s, &id, &exp))
        fail_msg("account changed \"%s\": refused", s);
    assert_int_equal(id, want_id);
    if (exp != want_exp)
        fail_msg("account changed \"%s\": expires %.17g, want %.17g", s, exp, want_exp);
    assert_true(isfinite(exp));
    assert_false(signbit(exp) && exp == 0);
}

static void expect_changed_refused(const char *s)
{
    int64_t id = -7;
    double exp = -7;
    if (inbound_account_changed(s, &id, &exp))
        fail_msg("account changed \"%s\": accepted (%lld, %g)", s, (long long)id, exp);
    assert_int_equal(id, -7);
    assert_true(exp == -7);
}

static void account_changed_is_an_id_and_a_finite_epoch(void **state)
{
    (void)state;
    expect_changed("5", 5, 0);
    expect_changed("5 1733333333.123456", 5, 1733333333.123456);
    expect_changed("5 1733333333", 5, 1733333333);
    expect_changed("5 -0", 5, 0);
    expect_changed("5 -86400.5", 5, -86400.5);
    expect_changed("5 Infinity", 5, INBOUND_EPOCH_MAX);  /* expires_at = 'infinity' */
    expect_changed("5 -Infinity", 5, INBOUND_EPOCH_MIN); /* expires_at = '-infinity' */
    expect_changed("5 253402300799", 5, INBOUND_EPOCH_MAX);
    const char *bad[] = {"",
                         " ",
                         "5 ",
                         " 5",
                         "5  1",
                         "5 1 2",
                         "5 nan",
                         "5 NaN",
                         "5 inf",
                         "5 -inf",
                         "5 1e999",
                         "5 -1e999",
                         "5 1e3",
                         "5 0x1p3",
                         "5 1,5",
                         "5 1.",
                         "5 .5",
                         "5 +1",
                         "5 --1",
                         "5 1 ",
                         "5 \x01",
                         "nan",
                         "inf",
                         "-0",
                         "0 1",
                         "-5 1",
                         "x 1",
                         "5\t1",
                         "5 infinity",
                         "5 253402300800",
                         "5 -62135596801",
                         "9223372036854775808 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_changed_refused(bad[i]);
    char buf[400];
    memset(buf, '9', 300);
    buf[300] = '\0';
    expect_changed_refused(buf); /* an id of 300 digits */
    snprintf(buf, sizeof buf, "5 ");
    memset(buf + 2, '1', 300);
    buf[302] = '\0';
    expect_changed_refused(buf); /* an epoch of 300 digits */
    expect_changed_refused(NULL);
}

static void pg_epoch_refuses_what_is_not_a_finite_time(void **state)
{
    (void)state;
    double v = -7;
    assert_true(inbound_pg_epoch("0", &v) && v == 0);
    assert_true(inbound_pg_epoch("1764876000.000001", &v) && v == 1764876000.000001);
    assert_true(inbound_pg_epoch("Infinity", &v) && v == INBOUND_EPOCH_MAX);
    assert_true(inbound_pg_epoch("-Infinity", &v) && v == INBOUND_EPOCH_MIN);
    v = -7;
    const char *bad[] = {"NaN",
                         "nan",
                         "",
                         "-",
                         "1e10",
                         "1.",
                         "1.2.3",
                         " 1",
                         "1 ",
                         "inf",
                         "12345678901234567890123456789012345678901"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (inbound_pg_epoch(bad[i], &v))
            fail_msg("epoch \"%s\" accepted as %g", bad[i], v);
        assert_true(v == -7);
    }
}

static void pg_int_is_bounded(void **state)
{
    (void)state;
    int64_t v = -7;
    assert_true(inbound_pg_int("0", 0, 10, &v) && v == 0);
    assert_true(inbound_pg_int("-5", -10, 10, &v) && v == -5);
    assert_true(inbound_pg_int("9223372036854775807", 0, INT64_MAX, &v) && v == INT64_MAX);
    v = -7;
    const char *bad[] = {"",
                         "-",
                         "+1",
                         "11",
                         "-11",
                         "1.0",
                         "1e1",
                         " 1",
                         "nan",
                         "9223372036854775808",
                         "-9223372036854775808"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (inbound_pg_int(bad[i], -10, 10, &v))
            fail_msg("int \"%s\" accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, -7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refresh_request_is_one_positive_id),
        cmocka_unit_test(account_changed_is_an_id_and_a_finite_epoch),
        cmocka_unit_test(pg_epoch_refuses_what_is_not_a_finite_time),
        cmocka_unit_test(pg_int_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
