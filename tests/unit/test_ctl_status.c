/*
 * test_ctl_status.c — the render step of `oauth-refreshctl status` and of its
 * key census: the text people read is made from the same JSON object that
 * `--json` prints, so every line here is driven by a field of that object
 * (counts, the next due time overdue or ahead, the providers without a
 * section, the latest errors, the keys that still open tokens).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_census.h"
#include "ctl_common.h"
#include "ctl_status.h"

/* The text ctl_status_render prints for st; the caller frees it. */
static char *render(const json_t *st)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ctl_status_render(f, st);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static json_t *status_object(void)
{
    json_error_t e;
    json_t *st =
        json_loads("{\"schema_version\": 2, \"refreshable\": 7, \"leased\": 2,"
                   " \"rotate_keys_leased\": 0, \"due\": 3, \"failing\": 2,"
                   " \"revoked\": 1, \"lead_time_s\": 300.0,"
                   " \"next_due_at\": \"2026-12-05 00:10:00Z\", \"next_due_in_s\": -75.0,"
                   " \"now\": \"2026-12-05 00:11:15Z\","
                   " \"providers\": [\"github\", \"google\", \"okta\"],"
                   " \"unconfigured\": [\"okta\"],"
                   " \"last_errors\": {\"google\": ["
                   "  {\"account_id\": 42, \"error\": \"invalid_grant\","
                   "   \"at\": \"2026-12-05 00:09:00Z\", \"revoked\": true, \"attempts\": 1},"
                   "  {\"account_id\": 7, \"error\": \"temporarily_unavailable\","
                   "   \"at\": \"2026-12-05 00:08:00Z\", \"revoked\": false,"
                   "   \"attempts\": 3}]}}",
                   0, &e);
    assert_non_null(st);
    return st;
}

static void test_status_text_is_rendered_from_every_field(void **state)
{
    (void)state;
    json_t *st = status_object();
    char *text = render(st);
    assert_string_equal(
        text, "schema version:   2\n"
              "refreshable:      7\n"
              "due now:          3 (expiring within the 5m00s lead time)\n"
              "in flight:        2 (claimed by a running daemon)\n"
              "failing:          2\n"
              "revoked:          1\n"
              "next due:         2026-12-05 00:10:00Z (overdue by 1m15s)\n"
              "unconfigured:     okta (accounts present, no [provider.*] section: left alone)\n"
              "last errors:\n"
              "  google     account 42         2026-12-05 00:09:00Z  invalid_grant (revoked)\n"
              "  google     account 7          2026-12-05 00:08:00Z  temporarily_unavailable\n");
    free(text);
    json_decref(st);
}

static void test_an_empty_database_and_rows_held_by_rotate_keys(void **state)
{
    (void)state;
    json_t *st = status_object();
    json_object_set_new(st, "rotate_keys_leased", json_integer(4));
    json_object_set_new(st, "next_due_at", json_null());
    json_object_set_new(st, "next_due_in_s", json_null());
    json_object_set_new(st, "unconfigured", json_null()); /* no configuration loaded */
    json_object_set_new(st, "last_errors", json_object());
    char *text = render(st);
    assert_non_null(strstr(text, "in flight:        2 (claimed by a running daemon)\n"
                                 "re-encrypted:     4 (held 10s by `oauth-refreshctl "
                                 "rotate-keys`, not a refresh)\nfailing:"));
    assert_non_null(strstr(text, "next due:         none\n"));
    assert_null(strstr(text, "unconfigured"));
    assert_non_null(strstr(text, "last errors:      none\n"));
    assert_null(strstr(text, "keys:"));
    free(text);

    /* Due ahead, not overdue; every provider configured: no unconfigured line. */
    json_object_set_new(st, "next_due_at", json_string("2026-12-05 03:00:00Z"));
    json_object_set_new(st, "next_due_in_s", json_real(2 * 3600 + 5 * 60));
    json_object_set_new(st, "unconfigured", json_array());
    text = render(st);
    assert_non_null(strstr(text, "next due:         2026-12-05 03:00:00Z (in 2h05m)\n"));
    assert_null(strstr(text, "unconfigured"));
    free(text);
    json_decref(st);
}

static void test_the_census_says_which_keys_can_go(void **state)
{
    (void)state;
    json_t *st = status_object();
    json_object_set_new(st, "keys",
                        json_pack("{s:I, s:I, s:[I,I,I], s:I, s:I, s:I, s:I, s:[]}", "keys",
                                  (json_int_t)3, "tokens", (json_int_t)10, "by_key", (json_int_t)10,
                                  (json_int_t)0, (json_int_t)0, "under_primary", (json_int_t)10,
                                  "under_older_keys", (json_int_t)0, "undecryptable", (json_int_t)0,
                                  "rows_needing_rotation", (json_int_t)0, "undecryptable_ids"));
    char *text = render(st);
    assert_non_null(strstr(text, "last errors:\n"));
    assert_non_null(
        strstr(text, "keys:             3 in the list; 10 tokens: 10 under the primary key, 0 "
                     "under older keys (0 accounts), 0 undecryptable\n"
                     "                  key 2 of the list opens 0 tokens: no token needs it\n"
                     "                  key 3 of the list opens 0 tokens: no token needs it\n"
                     "                  no token needs an older key: they can be removed\n"));
    free(text);

    /* An older key still in use, and more undecryptable rows than are listed. */
    json_object_set_new(st, "keys",
                        json_pack("{s:I, s:I, s:[I,I], s:I, s:I, s:I, s:I, s:[I,I]}", "keys",
                                  (json_int_t)2, "tokens", (json_int_t)30, "by_key", (json_int_t)5,
                                  (json_int_t)4, "under_primary", (json_int_t)5, "under_older_keys",
                                  (json_int_t)4, "undecryptable", (json_int_t)21,
                                  "rows_needing_rotation", (json_int_t)3, "undecryptable_ids",
                                  (json_int_t)11, (json_int_t)12));
    text = render(st);
    assert_non_null(
        strstr(text, "keys:             2 in the list; 30 tokens: 5 under the primary key, 4 "
                     "under older keys (3 accounts), 21 undecryptable\n"
                     "                  key 2 of the list opens 4 tokens\n"
                     "                  run `oauth-refreshctl rotate-keys` before removing an "
                     "older key\n"
                     "                  undecryptable in accounts: 11 12 ...\n"));
    free(text);
    json_decref(st);
}

static void test_human_durations(void **state)
{
    (void)state;
    char b[32];
    ctl_db_human_duration(b, sizeof b, 12.4);
    assert_string_equal(b, "12s");
    ctl_db_human_duration(b, sizeof b, -245);
    assert_string_equal(b, "4m05s");
    ctl_db_human_duration(b, sizeof b, 3 * 3600 + 12 * 60 + 59);
    assert_string_equal(b, "3h12m");
    ctl_db_human_duration(b, sizeof b, 2 * 86400 + 4 * 3600);
    assert_string_equal(b, "2d04h");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_text_is_rendered_from_every_field),
        cmocka_unit_test(test_an_empty_database_and_rows_held_by_rotate_keys),
        cmocka_unit_test(test_the_census_says_which_keys_can_go),
        cmocka_unit_test(test_human_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
