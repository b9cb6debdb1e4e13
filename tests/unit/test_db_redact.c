/*
 * test_db_redact.c — db_redact() keeps passwords out of every reason string
 * db.c and oauth-refreshctl print: anything after "password=" is dropped, URI
 * userinfo secrets are masked, control characters cannot break a log line, and
 * no buffer size (down to 0 and 1) makes it overrun or leak. Also
 * schema_check_result()'s verdicts on built results.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "db.h"
#include "schema_check.h"
#include "schema_sql.h"

static void expect_redacted(const char *in, const char *want)
{
    char out[512];
    size_t n = db_redact(out, sizeof(out), in);
    if (strcmp(out, want) != 0)
        fail_msg("db_redact(\"%s\"): expected \"%s\", saw \"%s\"", in, want, out);
    assert_int_equal(n, strlen(out));
}

static void test_password_keyword_and_everything_after_it_is_dropped(void **state)
{
    expect_redacted("invalid connection option \"bogus\" host=h password=hunter2 port=5",
                    "invalid connection option \"bogus\" host=h password=[redacted]");
    expect_redacted("PASSWORD = 'a b c' dbname=x", "password=[redacted]");
    expect_redacted("x Password: hunter2", "x password=[redacted]");
    expect_redacted("password=", "password=[redacted]");
}

static void test_plain_libpq_messages_pass_unchanged(void **state)
{
    expect_redacted("FATAL:  password authentication failed for user \"app\"",
                    "FATAL:  password authentication failed for user \"app\"");
    expect_redacted("fe_sendauth: no password supplied", "fe_sendauth: no password supplied");
    expect_redacted("connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n"
                    "\tIs the server running?\n",
                    "connection to server at \"127.0.0.1\", port 1 failed: Connection refused Is "
                    "the server running?");
    expect_redacted("", "");
    expect_redacted(NULL, "");
}

static void test_long_token_like_runs_are_masked_identifiers_kept(void **state)
{
    /* A Fernet ciphertext inside a DETAIL-like text. */
    expect_redacted(
        "Failing row contains (1, gAAAAABrEyM4Zp93gWt3QNHrB6ZyyvLnei90UC3SED2LEh2Nn0u50Mm"
        "y6v2TdD8kAAAAAAAAAAAAAAAAAAAAAAAAAAA, bearer)",
        "Failing row contains (1, [redacted], bearer)");
    /* 63 characters (the longest SQL identifier) stay; 64 do not. */
    char ident[64], run[65], in[256], want[256];
    memset(ident, 'a', 63);
    ident[63] = '\0';
    memset(run, 'b', 64);
    run[64] = '\0';
    snprintf(in, sizeof in, "constraint \"%s\"", ident);
    expect_redacted(in, in);
    snprintf(in, sizeof in, "x %s\n%s y", run, ident);
    snprintf(want, sizeof want, "x [redacted] %s y", ident);
    expect_redacted(in, want);
    snprintf(in, sizeof in, "%s", run);
    expect_redacted(in, "[redacted]");
}

static void test_a_result_reason_without_a_server_message_names_the_status(void **state)
{
    char out[64];
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
    assert_non_null(r);
    assert_string_equal(db_result_reason(out, sizeof out, r), "PGRES_FATAL_ERROR");
    PQclear(r);
    assert_string_equal(db_result_reason(out, sizeof out, NULL), "no result");
    assert_string_equal(db_result_reason(out, 1, NULL), "");
}

static void test_uri_userinfo_secret_is_masked(void **state)
{
    expect_redacted("bad uri postgresql://app:hunter2@db.example:5432/app?sslmode=require",
                    "bad uri postgresql://app:[redacted]@db.example:5432/app?sslmode=require");
    expect_redacted("postgres://app:p@ss@host/db", "postgres://app:[redacted]@host/db");
    expect_redacted("postgresql://app@host/db", "postgresql://app@host/db");
    expect_redacted("postgresql://host:5432/db", "postgresql://host:5432/db");
    expect_redacted("see https://example.com/x", "see https://example.com/x");
}

static void test_control_characters_become_single_spaces(void **state)
{
    expect_redacted("a\r\n\tb\x01\x7f"
                    "c\n",
                    "a b c");
    expect_redacted("\n\nlead", "lead");
}

/* Whatever surrounds it and however small the buffer, the secret never comes out. */
static void test_secret_never_survives_any_framing_or_buffer_size(void **state)
{
    static const char *const secret = "S3cr3tZ";
    static const char *const forms[] = {
        "password=%s",
        "password = %s",
        "PassWord=%s",
        "password:%s",
        "password='%s'",
        "postgresql://u:%s@h/d",
        "postgres://u:%s@h:1/d?x=1",
        "postgresql://u:%s@[::1]/d",
    };
    static const char *const around[][2] = {
        {"", ""}, {"error: ", ""}, {"x ", " y=1"}, {"\n", "\n"}, {"host=h ", " port=5"},
    };
    char in[256], out[256];
    for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++)
        for (size_t a = 0; a < sizeof(around) / sizeof(around[0]); a++) {
            const char *hole = strstr(forms[f], "%s");
            snprintf(in, sizeof(in), "%s%.*s%s%s%s", around[a][0], (int)(hole - forms[f]), forms[f],
                     secret, hole + 2, around[a][1]);
            for (size_t len = 0; len <= sizeof(out); len++) {
                memset(out, 'Q', sizeof(out));
                size_t n = db_redact(out, len, in);
                if (len == 0) {
                    assert_int_equal(n, 0);
                    assert_int_equal(out[0], 'Q');
                    continue;
                }
                assert_true(n < len);
                assert_int_equal(out[n], '\0');
                if (len < sizeof(out))
                    assert_int_equal(out[len], 'Q'); /* no write past dstlen */
                /* No prefix of the secret longer than 2 chars may appear either. */
                if (strstr(out, "S3c") != NULL)
                    fail_msg("secret leaked: in=\"%s\" len=%zu out=\"%s\"", in, len, out);
            }
        }
}

static PGresult *version_result(const char *value, int rows)
{
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc att = {
        .name = (char *)"schema_version", .typid = 23, .typlen = 4, .atttypmod = -1};
    assert_int_equal(PQsetResultAttrs(r, 1, &att), 1);
    for (int i = 0; i < rows; i++)
        assert_int_equal(PQsetvalue(r, i, 0, (char *)value, value ? (int)strlen(value) : -1), 1);
    return r;
}

static void test_schema_check_verdicts(void **state)
{
    char err[ERRBUF_LEN];
    char cur[16], newer[16], older[16];
    snprintf(cur, sizeof(cur), "%d", OAUTH_SCHEMA_VERSION);
    snprintf(newer, sizeof(newer), "%d", OAUTH_SCHEMA_VERSION + 1);
    snprintf(older, sizeof(older), "%d", OAUTH_SCHEMA_VERSION - 1);

    PGresult *r = version_result(cur, 1);
    assert_int_equal(schema_check_result(r, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    PQclear(r);

    r = version_result(newer, 1);
    assert_int_equal(schema_check_result(r, err, sizeof(err)), 1);
    assert_non_null(strstr(err, "newer"));
    PQclear(r);

    r = version_result(NULL, 0); /* no meta row */
    assert_int_equal(schema_check_result(r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "run `oauth-refreshctl migrate`"));
    PQclear(r);

    if (OAUTH_SCHEMA_VERSION > 1) {
        r = version_result(older, 1);
        assert_int_equal(schema_check_result(r, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "run `oauth-refreshctl migrate` to upgrade"));
        PQclear(r);
    }

    static const char *const junk[] = {"0", "-1", "x", "1x", ""};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        r = version_result(junk[i], 1);
        assert_int_equal(schema_check_result(r, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "cannot read"));
        PQclear(r);
    }

    assert_int_equal(schema_check_result(NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "connection was lost"));

    r = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
    assert_int_equal(schema_check_result(r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot read the oauth_refreshd schema version"));
    PQclear(r);

    /* A tiny buffer still gets a terminated prefix. */
    char tiny[8];
    r = version_result(NULL, 0);
    assert_int_equal(schema_check_result(r, tiny, sizeof(tiny)), -1);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
    PQclear(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_keyword_and_everything_after_it_is_dropped),
        cmocka_unit_test(test_plain_libpq_messages_pass_unchanged),
        cmocka_unit_test(test_uri_userinfo_secret_is_masked),
        cmocka_unit_test(test_long_token_like_runs_are_masked_identifiers_kept),
        cmocka_unit_test(test_a_result_reason_without_a_server_message_names_the_status),
        cmocka_unit_test(test_control_characters_become_single_spaces),
        cmocka_unit_test(test_secret_never_survives_any_framing_or_buffer_size),
        cmocka_unit_test(test_schema_check_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
