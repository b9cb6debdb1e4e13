/*
 * test_log.c — the formatting core of the log sink: journald fields and
 * stderr lines, with and without structured context, never letting a message
 * or field inject a line break, and truncating without overrunning buffers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* 2026-11-27T17:42:10Z */
#define T0 ((time_t)1795801330)

static void expect_str(const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) != 0)
        fail_msg("%s:\nexpected: \"%s\"\n     got: \"%s\"", what, want, got);
}

static void line_without_fields_is_timestamp_ident_pid_level_message(void **state)
{
    (void)state;
    char buf[256];
    size_t n = log_format_line_at(buf, sizeof(buf), T0, "oauth-refreshd", 4242, LOG_INFO, NULL,
                                  "daemon started");
    expect_str("plain line", buf,
               "2026-11-27T17:42:10Z oauth-refreshd[4242]: info: daemon started\n");
    assert_int_equal(n, strlen(buf));
}

static void line_with_every_field_lists_them_in_parentheses(void **state)
{
    (void)state;
    char buf[512];
    struct log_ctx ctx = {.account_id = 42,
                          .provider = "google",
                          .error = "invalid_grant",
                          .http_status = 400,
                          .expires_at = "2026-11-27T18:42:10Z",
                          .token_fp = "7c596048eb7e",
                          .new_token_fp = "394c8312ba33"};
    log_format_line_at(buf, sizeof(buf), T0, "oauth-refreshd", 7, LOG_WARNING, &ctx,
                       "refresh token revoked");
    expect_str("line with fields", buf,
               "2026-11-27T17:42:10Z oauth-refreshd[7]: warning: refresh token revoked "
               "(account=42 provider=google error=invalid_grant http_status=400 "
               "expires_at=2026-11-27T18:42:10Z fp=7c596048eb7e new_fp=394c8312ba33)\n");
}

static void line_with_some_fields_omits_the_zero_ones(void **state)
{
    (void)state;
    char buf[512];
    struct log_ctx ctx = {.account_id = 42, .provider = "google", .error = "invalid_grant"};
    log_format_line_at(buf, sizeof(buf), T0, "oauth-refreshd", 99, LOG_WARNING, &ctx, "message");
    expect_str("partial fields", buf,
               "2026-11-27T17:42:10Z oauth-refreshd[99]: warning: message "
               "(account=42 provider=google error=invalid_grant)\n");

    struct log_ctx only_status = {.http_status = 503};
    log_format_line_at(buf, sizeof(buf), T0, "x", 1, LOG_ERR, &only_status, "m");
    expect_str("status only", buf, "2026-11-27T17:42:10Z x[1]: error: m (http_status=503)\n");

    struct log_ctx empty = {0};
    log_format_line_at(buf, sizeof(buf), T0, "x", 1, LOG_DEBUG, &empty, "m");
    expect_str("empty ctx", buf, "2026-11-27T17:42:10Z x[1]: debug: m\n");
}

static void line_names_every_level(void **state)
{
    (void)state;
    static const char *const want[] = {"emergency", "alert",  "critical", "error",
                                       "warning",   "notice", "info",     "debug"};
    char buf[256], expect[256];
    for (int p = LOG_EMERG; p <= LOG_DEBUG; p++) {
        log_format_line_at(buf, sizeof(buf), T0, "d", 1, p, NULL, "m");
        snprintf(expect, sizeof(expect), "2026-11-27T17:42:10Z d[1]: %s: m\n", want[p]);
        expect_str("level name", buf, expect);
    }
}

static void line_cannot_be_split_by_newlines_in_message_or_fields(void **state)
{
    (void)state;
    char buf[512];
    struct log_ctx ctx = {.provider = "goo\ngle",
                          .error = "bad\r\n2026-01-01T00:00:00Z fake[1]: err",
                          .expires_at = "\n"};
    log_format_line_at(buf, sizeof(buf), T0, "oauth-refreshd", 1, LOG_ERR, &ctx,
                       "line one\nline two\r\x1b[31m\ttab");
    assert_non_null(strchr(buf, '\n'));
    assert_ptr_equal(strchr(buf, '\n'), buf + strlen(buf) - 1); /* only the final newline */
    assert_null(strchr(buf, '\r'));
    assert_null(strchr(buf, '\x1b'));
    expect_str("sanitised", buf,
               "2026-11-27T17:42:10Z oauth-refreshd[1]: error: line one line two  [31m tab "
               "(provider=goo gle error=bad  2026-01-01T00:00:00Z fake[1]: err expires_at= )\n");
}

static void line_truncation_keeps_nul_and_final_newline(void **state)
{
    (void)state;
    char buf[40];
    memset(buf, 'Z', sizeof(buf));
    size_t n = log_format_line_at(buf, sizeof(buf), T0, "oauth-refreshd", 1, LOG_INFO, NULL,
                                  "a very long message that cannot fit in forty bytes");
    assert_int_equal(n, sizeof(buf) - 1);
    assert_int_equal(buf[sizeof(buf) - 1], '\0');
    assert_int_equal(buf[n - 1], '\n');
    assert_int_equal(strlen(buf), n);
    char one[1] = {'Z'};
    assert_int_equal(log_format_line_at(one, sizeof(one), T0, "x", 1, LOG_INFO, NULL, "m"), 0);
    assert_int_equal(one[0], '\0');
}

static void journal_record_without_fields(void **state)
{
    (void)state;
    char buf[512];
    log_init("oauth-refreshd");
    size_t n = log_format_journal(buf, sizeof(buf), LOG_NOTICE, NULL, NULL, "hello");
    expect_str("journal plain", buf,
               "PRIORITY=5\nMESSAGE=hello\nSYSLOG_IDENTIFIER=oauth-refreshd\n");
    assert_int_equal(n, strlen(buf));
}

static void journal_record_carries_message_id_and_oauth_fields(void **state)
{
    (void)state;
    char buf[1024];
    log_init("/usr/sbin/oauth-refreshd");
    struct log_ctx ctx = {.account_id = 42,
                          .provider = "github",
                          .error = "bad_refresh_token",
                          .http_status = 200,
                          .expires_at = "2026-11-27T17:42:10Z",
                          .token_fp = "7c596048eb7e",
                          .new_token_fp = "394c8312ba33"};
    log_format_journal(buf, sizeof(buf), LOG_WARNING, MSGID_REVOKED, &ctx, "account revoked");
    expect_str("journal fields", buf,
               "PRIORITY=4\nMESSAGE=account revoked\nMESSAGE_ID=" MSGID_REVOKED "\n"
               "SYSLOG_IDENTIFIER=oauth-refreshd\nOAUTH_ACCOUNT_ID=42\nOAUTH_PROVIDER=github\n"
               "OAUTH_ERROR=bad_refresh_token\nOAUTH_HTTP_STATUS=200\n"
               "OAUTH_EXPIRES_AT=2026-11-27T17:42:10Z\nOAUTH_TOKEN_FP=7c596048eb7e\n"
               "OAUTH_NEW_TOKEN_FP=394c8312ba33\n");
}

static void journal_fields_cannot_inject_other_fields(void **state)
{
    (void)state;
    char buf[512];
    log_init("oauth-refreshd");
    struct log_ctx ctx = {.error = "x\nPRIORITY=0"};
    log_format_journal(buf, sizeof(buf), LOG_INFO, NULL, &ctx, "m\nMESSAGE_ID=evil");
    expect_str("journal injection", buf,
               "PRIORITY=6\nMESSAGE=m MESSAGE_ID=evil\nSYSLOG_IDENTIFIER=oauth-refreshd\n"
               "OAUTH_ERROR=x PRIORITY=0\n");
}

static void level_names_map_to_syslog_priorities(void **state)
{
    (void)state;
    assert_int_equal(log_level_from_name("debug"), LOG_DEBUG);
    assert_int_equal(log_level_from_name("info"), LOG_INFO);
    assert_int_equal(log_level_from_name("notice"), LOG_NOTICE);
    assert_int_equal(log_level_from_name("warning"), LOG_WARNING);
    assert_int_equal(log_level_from_name("err"), LOG_ERR);
    assert_int_equal(log_level_from_name("error"), LOG_ERR);
    assert_int_equal(log_level_from_name("INFO"), -1);
    assert_int_equal(log_level_from_name(""), -1);
    assert_int_equal(log_level_from_name("verbose"), -1);
    assert_int_equal(log_level_from_name(NULL), -1);
}

/* Runs log_event with stderr redirected into a pipe and returns what was written. */
static void capture_stderr(char *out, size_t outlen, void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    close(fds[1]);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    ssize_t n = read(fds[0], out, outlen - 1);
    close(fds[0]);
    out[n > 0 ? n : 0] = '\0';
}

static void emit_two(void)
{
    struct log_ctx ctx = {.account_id = 5};
    log_event(LOG_DEBUG, NULL, &ctx, "dropped %d", 1);
    log_event(LOG_WARNING, MSGID_REFRESH_FAILED, &ctx, "kept %d", 2);
}

static void event_below_level_is_dropped_and_stderr_gets_one_line(void **state)
{
    (void)state;
    char out[1024];
    unsetenv("JOURNAL_STREAM");
    log_init("oauth-refreshd");
    log_set_level(LOG_INFO);
    capture_stderr(out, sizeof(out), emit_two);
    assert_null(strstr(out, "dropped"));
    char *kept = strstr(out, "oauth-refreshd[");
    assert_non_null(kept);
    assert_non_null(strstr(out, ": warning: kept 2 (account=5)\n"));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void journal_stream_of_another_file_means_stderr(void **state)
{
    (void)state;
    char out[1024];
    setenv("JOURNAL_STREAM", "1:1", 1); /* not stderr's device/inode */
    log_init("oauth-refreshd");
    unsetenv("JOURNAL_STREAM");
    capture_stderr(out, sizeof(out), emit_two);
    assert_non_null(strstr(out, ": warning: kept 2 (account=5)\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(line_without_fields_is_timestamp_ident_pid_level_message),
        cmocka_unit_test(line_with_every_field_lists_them_in_parentheses),
        cmocka_unit_test(line_with_some_fields_omits_the_zero_ones),
        cmocka_unit_test(line_names_every_level),
        cmocka_unit_test(line_cannot_be_split_by_newlines_in_message_or_fields),
        cmocka_unit_test(line_truncation_keeps_nul_and_final_newline),
        cmocka_unit_test(journal_record_without_fields),
        cmocka_unit_test(journal_record_carries_message_id_and_oauth_fields),
        cmocka_unit_test(journal_fields_cannot_inject_other_fields),
        cmocka_unit_test(level_names_map_to_syslog_priorities),
        cmocka_unit_test(event_below_level_is_dropped_and_stderr_gets_one_line),
        cmocka_unit_test(journal_stream_of_another_file_means_stderr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
