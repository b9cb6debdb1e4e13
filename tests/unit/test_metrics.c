/*
 * test_metrics.c — the Prometheus exposition of metrics.c: which outcome each
 * observation counts, histogram bucket boundaries (le is inclusive, +Inf
 * catches the rest, negatives and non-finite values), ignored out-of-range
 * providers, gauges, reload bookkeeping, label escaping of hostile text, and
 * the structure of the whole output (every sample belongs to a family
 * declared with HELP and TYPE, in the 0.0.4 text format). No clock is read.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(const struct metrics *m, const char *version)
{
    struct strbuf sb;
    strbuf_init(&sb);
    metrics_render(m, version, &sb);
    assert_false(sb.oom);
    assert_non_null(sb.data);
    return sb.data; /* caller frees */
}

/* A provider's answer as read_answer leaves it: an outcome, retried after a backoff. */
static void answer(struct metrics *m, int provider, enum refresh_outcome o, double latency_s,
                   double seconds_left)
{
    struct token_result res = {.outcome = o, .retry_rule = RETRY_BACKOFF};
    metrics_observe_answer(m, provider, &res, latency_s, seconds_left);
}

/* The store's verdict on a result of this kind; partial: a rotated token kept. */
static void stored(struct metrics *m, int provider, enum store_kind kind, enum store_fate fate,
                   bool partial)
{
    struct store_item item = {.kind = kind, .provider = (enum provider_id)provider};
    if (partial)
        snprintf(item.error, sizeof item.error, "missing_access_token");
    metrics_observe_store(m, &item, fate);
}

/* The whole line, exactly, somewhere in text. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        bool starts = p == text || p[-1] == '\n';
        if (starts && p[n] == '\n')
            return true;
    }
    return false;
}

#define EXPECT_LINE(text, line)                                                                    \
    do {                                                                                           \
        if (!has_line((text), (line)))                                                             \
            fail_msg("expected the line\n  %s\nin the exposition:\n%s", (line), (text));           \
    } while (0)

#define EXPECT_NO_SUBSTR(text, s)                                                                  \
    do {                                                                                           \
        if (strstr((text), (s)) != NULL)                                                           \
            fail_msg("expected no \"%s\" in the exposition, seen it:\n%s", (s), (text));           \
    } while (0)

static void test_fresh_metrics_render_zero_counters_for_every_provider_and_outcome(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 1700000000.5);
    char *t = render(&m, "0.1.0");
    EXPECT_LINE(t, "oauth_refreshd_build_info{version=\"0.1.0\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_start_time_seconds 1700000000.5");
    const char *provs[] = {"google", "github", "microsoft"};
    const char *outs[] = {"refreshed",    "revoked",   "transient",  "bad_response",
                          "config_error", "discarded", "local_error"};
    for (size_t p = 0; p < 3; p++) {
        for (size_t o = 0; o < 7; o++) {
            char line[160];
            snprintf(line, sizeof line,
                     "oauth_refreshd_refreshes_total{provider=\"%s\",outcome=\"%s\"} 0", provs[p],
                     outs[o]);
            EXPECT_LINE(t, line);
        }
    }
    EXPECT_LINE(t, "# TYPE oauth_refreshd_refreshes_total counter");
    EXPECT_LINE(t, "# TYPE oauth_refreshd_provider_request_duration_seconds histogram");
    EXPECT_LINE(t, "# TYPE oauth_refreshd_expiry_margin_seconds histogram");
    EXPECT_LINE(t, "oauth_refreshd_config_last_reload_successful 1");
    EXPECT_LINE(t, "oauth_refreshd_config_generation 0");
    EXPECT_LINE(t, "oauth_refreshd_database_connected 0");
    /* No counts were read yet: absent rather than a made-up zero. */
    EXPECT_NO_SUBSTR(t, "oauth_refreshd_accounts_due");
    EXPECT_NO_SUBSTR(t, "oauth_refreshd_accounts_revoked");
    free(t);
}

static void test_answers_count_failures_and_store_counts_written_results(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_TRANSIENT, 0.1, 10);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_TRANSIENT, 0.1, 10);
    answer(&m, PROVIDER_GITHUB, OUTCOME_BAD_RESPONSE, 0.1, 10);
    answer(&m, PROVIDER_MICROSOFT, OUTCOME_CONFIG, 0.1, 10);
    /* success and revocation are not counted until written */
    answer(&m, PROVIDER_GOOGLE, OUTCOME_SUCCESS, 0.1, 10);
    answer(&m, PROVIDER_GITHUB, OUTCOME_REVOKED, 0.1, 10);
    stored(&m, PROVIDER_GOOGLE, STORE_REFRESHED, STORE_WRITTEN, false);
    stored(&m, PROVIDER_GOOGLE, STORE_REFRESHED, STORE_DISCARDED, false);
    stored(&m, PROVIDER_GITHUB, STORE_REVOKED, STORE_WRITTEN, false);
    stored(&m, PROVIDER_GITHUB, STORE_REVOKED, STORE_LOST_RACE, false);
    stored(&m, PROVIDER_MICROSOFT, STORE_FAILED, STORE_WRITTEN, false);
    metrics_count(&m, PROVIDER_MICROSOFT, METRICS_LOCAL_ERROR);
    char *t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"google\",outcome=\"transient\"} 2");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"google\",outcome=\"refreshed\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"google\",outcome=\"discarded\"} 1");
    EXPECT_LINE(t,
                "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"bad_response\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"revoked\"} 1");
    /* a revocation that lost the race is its own outcome, not a discarded refresh */
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"lost_race\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"discarded\"} 0");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"refreshed\"} 0");
    EXPECT_LINE(
        t, "oauth_refreshd_refreshes_total{provider=\"microsoft\",outcome=\"config_error\"} 1");
    EXPECT_LINE(t,
                "oauth_refreshd_refreshes_total{provider=\"microsoft\",outcome=\"local_error\"} 1");
    EXPECT_LINE(t,
                "oauth_refreshd_refreshes_total{provider=\"microsoft\",outcome=\"transient\"} 0");
    /* six answers observed: four for google's/github's histograms, one per failure */
    EXPECT_LINE(t, "oauth_refreshd_provider_request_duration_seconds_count{provider=\"google\"} 3");
    EXPECT_LINE(t, "oauth_refreshd_provider_request_duration_seconds_count{provider=\"github\"} 2");
    EXPECT_LINE(t,
                "oauth_refreshd_provider_request_duration_seconds_count{provider=\"microsoft\"} 1");
    free(t);
}

static void test_histogram_buckets_are_cumulative_and_le_is_inclusive(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    /* exactly on a bound lands in that bucket; just above goes to the next */
    answer(&m, PROVIDER_GITHUB, OUTCOME_SUCCESS, 0.1, 60);
    answer(&m, PROVIDER_GITHUB, OUTCOME_SUCCESS, 0.1000001, 60.5);
    answer(&m, PROVIDER_GITHUB, OUTCOME_SUCCESS, 0.001, -30);  /* expired */
    answer(&m, PROVIDER_GITHUB, OUTCOME_SUCCESS, 500, 100000); /* > last bound */
    char *t = render(&m, "v");
    const char *L = "oauth_refreshd_provider_request_duration_seconds_bucket{provider=\"github\",";
    char line[200];
#define B(le, n)                                                                                   \
    snprintf(line, sizeof line, "%sle=\"%s\"} %d", L, le, n);                                      \
    EXPECT_LINE(t, line)
    B("0.025", 1);
    B("0.05", 1);
    B("0.1", 2);
    B("0.25", 3);
    B("60", 3);
    B("+Inf", 4);
#undef B
    EXPECT_LINE(t, "oauth_refreshd_provider_request_duration_seconds_sum{provider=\"github\"} "
                   "500.2010001");
    const char *M = "oauth_refreshd_expiry_margin_seconds_bucket{provider=\"github\",";
#define B(le, n)                                                                                   \
    snprintf(line, sizeof line, "%sle=\"%s\"} %d", M, le, n);                                      \
    EXPECT_LINE(t, line)
    B("0", 1);
    B("30", 1);
    B("60", 2);
    B("120", 3);
    B("3600", 3);
    B("+Inf", 4);
#undef B
    EXPECT_LINE(t, "oauth_refreshd_expiry_margin_seconds_count{provider=\"github\"} 4");
    EXPECT_LINE(t, "oauth_refreshd_expiry_margin_seconds_sum{provider=\"github\"} 100090.5");
    /* other providers stay empty */
    EXPECT_LINE(t, "oauth_refreshd_expiry_margin_seconds_count{provider=\"google\"} 0");
    EXPECT_LINE(t,
                "oauth_refreshd_expiry_margin_seconds_bucket{provider=\"google\",le=\"+Inf\"} 0");
    free(t);
}

static void test_non_finite_and_negative_latency_are_not_observed(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_TRANSIENT, NAN, NAN);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_TRANSIENT, -1, INFINITY);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_TRANSIENT, INFINITY, -INFINITY);
    char *t = render(&m, "v");
    /* the outcomes still count; the histograms stay clean */
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"google\",outcome=\"transient\"} 3");
    EXPECT_LINE(t, "oauth_refreshd_provider_request_duration_seconds_count{provider=\"google\"} 0");
    EXPECT_LINE(t, "oauth_refreshd_provider_request_duration_seconds_sum{provider=\"google\"} 0");
    EXPECT_LINE(t, "oauth_refreshd_expiry_margin_seconds_count{provider=\"google\"} 0");
    EXPECT_NO_SUBSTR(t, "NaN");
    free(t);
}

static void test_out_of_range_providers_and_outcomes_are_ignored(void **state)
{
    (void)state;
    struct metrics m, zero;
    metrics_init(&m, 0);
    metrics_init(&zero, 0);
    int bad[] = {-1, PROVIDER_MAX, 1000, -2147483647 - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        answer(&m, bad[i], OUTCOME_TRANSIENT, 1, 1);
        stored(&m, bad[i], STORE_REFRESHED, STORE_WRITTEN, false);
        metrics_count(&m, bad[i], METRICS_LOCAL_ERROR);
    }
    metrics_count(&m, PROVIDER_GOOGLE, METRICS_OUTCOME_COUNT);
    metrics_count(&m, PROVIDER_GOOGLE, (enum metrics_outcome) - 1);
    assert_memory_equal(&m, &zero, sizeof m);
    assert_string_equal(metrics_outcome_name(METRICS_OUTCOME_COUNT), "unknown");
    assert_string_equal(metrics_outcome_name(METRICS_DISCARDED), "discarded");
}

static void test_gauges_render_what_the_daemon_set(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 100);
    m.in_flight = 42;
    m.waiting = 7;
    m.held = 3;
    m.db_connected = true;
    m.paused[PROVIDER_MICROSOFT] = true;
    m.config_generation = 5;
    metrics_set_counts(&m, 11, 2, 9, 1234.25);
    char *t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_requests_in_flight 42");
    EXPECT_LINE(t, "oauth_refreshd_requests_waiting 7");
    EXPECT_LINE(t, "oauth_refreshd_results_held 3");
    EXPECT_LINE(t, "oauth_refreshd_database_connected 1");
    EXPECT_LINE(t, "oauth_refreshd_provider_paused{provider=\"microsoft\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_provider_paused{provider=\"google\"} 0");
    EXPECT_LINE(t, "oauth_refreshd_config_generation 5");
    EXPECT_LINE(t, "oauth_refreshd_accounts_due 11");
    EXPECT_LINE(t, "oauth_refreshd_accounts_failing 2");
    EXPECT_LINE(t, "oauth_refreshd_accounts_revoked 9");
    EXPECT_LINE(t, "oauth_refreshd_account_counts_timestamp_seconds 1234.25");
    free(t);
}

/* A generic provider's series appear once a config named it, under its name. */
static void test_generic_providers_are_shown_by_name_once_named(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 100);
    char *t = render(&m, "v");
    EXPECT_NO_SUBSTR(t, "provider=\"unknown\"");
    free(t);
    int id = provider_id_register("keycloak");
    assert_true(id >= PROVIDER_NAMED_COUNT);
    metrics_count(&m, id, METRICS_REFRESHED);
    metrics_count(&m, id, METRICS_REFRESHED);
    m.paused[id] = true;
    t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"keycloak\",outcome=\"refreshed\"} 2");
    EXPECT_LINE(t, "oauth_refreshd_provider_paused{provider=\"keycloak\"} 1");
    EXPECT_NO_SUBSTR(t, "provider=\"unknown\"");
    free(t);
}

static void test_failed_reload_keeps_the_last_success_time(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 100);
    metrics_note_reload(&m, true, 200);
    metrics_note_reload(&m, false, 300);
    char *t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_config_last_reload_successful 0");
    EXPECT_LINE(t, "oauth_refreshd_config_last_reload_timestamp_seconds 300");
    EXPECT_LINE(t, "oauth_refreshd_config_last_reload_success_timestamp_seconds 200");
    free(t);
    metrics_note_reload(&m, true, 400);
    t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_config_last_reload_successful 1");
    EXPECT_LINE(t, "oauth_refreshd_config_last_reload_success_timestamp_seconds 400");
    free(t);
}

static void test_hostile_version_label_is_escaped(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    char *t = render(&m, "1\"2\\3\n4");
    EXPECT_LINE(t, "oauth_refreshd_build_info{version=\"1\\\"2\\\\3\\n4\"} 1");
    free(t);
}

/* Every line is a HELP/TYPE comment or a sample of the family declared just before. */
static void test_every_sample_belongs_to_a_declared_family(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 5);
    metrics_set_counts(&m, 1, 1, 1, 6);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_SUCCESS, 0.3, 100);
    char *t = render(&m, "0.1.0");
    assert_true(strlen(t) > 0 && t[strlen(t) - 1] == '\n');
    char family[128] = "";
    char type[32] = "";
    int samples = 0, families = 0;
    char *save = NULL;
    for (char *line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128], kind[32];
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(line, "# HELP %127s", name), 1);
            snprintf(family, sizeof family, "%s", name);
            type[0] = '\0';
            families++;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line, "# TYPE %127s %31s", name, kind), 2);
            if (strcmp(name, family) != 0)
                fail_msg("TYPE for %s follows HELP for %s", name, family);
            snprintf(type, sizeof type, "%s", kind);
            continue;
        }
        if (line[0] == '#')
            fail_msg("unexpected comment line: %s", line);
        if (type[0] == '\0')
            fail_msg("sample before any TYPE: %s", line);
        size_t fl = strlen(family);
        if (strncmp(line, family, fl) != 0)
            fail_msg("sample %s is not of family %s", line, family);
        const char *rest = line + fl;
        if (strcmp(type, "histogram") == 0) {
            /* _sum and _count of a histogram without labels have none */
            if (strncmp(rest, "_bucket{", 8) != 0 && strncmp(rest, "_sum{", 5) != 0 &&
                strncmp(rest, "_count{", 7) != 0 && strncmp(rest, "_sum ", 5) != 0 &&
                strncmp(rest, "_count ", 7) != 0)
                fail_msg("histogram sample with a bad suffix: %s", line);
        } else if (rest[0] != ' ' && rest[0] != '{') {
            fail_msg("sample name is longer than its family %s: %s", family, line);
        }
        const char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end;
        (void)strtod(sp + 1, &end);
        if (*end != '\0' && strcmp(sp + 1, "+Inf") != 0)
            fail_msg("sample value is not a number: %s", line);
        samples++;
    }
    assert_true(families >= 18);
    assert_true(samples > 100);
    free(t);
}

static void test_render_is_pure(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 5);
    answer(&m, PROVIDER_GOOGLE, OUTCOME_TRANSIENT, 0.3, 100);
    struct metrics copy = m;
    char *a = render(&m, "x");
    char *b = render(&m, "x");
    assert_string_equal(a, b);
    assert_memory_equal(&m, &copy, sizeof m);
    free(a);
    free(b);
}

static void test_overload_answers_are_no_outcome_and_partial_results_one_failure(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    /* A 429: the claim goes back and the provider pauses; nothing is the account's. */
    struct token_result overload = {.outcome = OUTCOME_TRANSIENT, .retry_rule = RETRY_PAUSE};
    metrics_observe_answer(&m, PROVIDER_GOOGLE, &overload, 0.1, 10);
    /* A partial result: counted as the failed answer it is, not again as a refresh. */
    answer(&m, PROVIDER_GITHUB, OUTCOME_BAD_RESPONSE, 0.1, 10);
    stored(&m, PROVIDER_GITHUB, STORE_REFRESHED, STORE_WRITTEN, true);
    /* The failure record of a failed answer is not counted a second time. */
    answer(&m, PROVIDER_MICROSOFT, OUTCOME_TRANSIENT, 0.1, 10);
    stored(&m, PROVIDER_MICROSOFT, STORE_FAILED, STORE_WRITTEN, false);
    answer(&m, PROVIDER_MICROSOFT, OUTCOME_TRANSIENT, 0.1, 10);
    stored(&m, PROVIDER_MICROSOFT, STORE_FAILED, STORE_LOST_RACE, false);
    char *t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"google\",outcome=\"transient\"} 0");
    EXPECT_LINE(t, "oauth_refreshd_provider_request_duration_seconds_count{provider=\"google\"} 1");
    EXPECT_LINE(t,
                "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"bad_response\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_refreshes_total{provider=\"github\",outcome=\"refreshed\"} 0");
    EXPECT_LINE(t,
                "oauth_refreshd_refreshes_total{provider=\"microsoft\",outcome=\"transient\"} 2");
    EXPECT_LINE(t,
                "oauth_refreshd_refreshes_total{provider=\"microsoft\",outcome=\"lost_race\"} 0");
    free(t);
    struct metrics_totals tot;
    metrics_totals(&m, &tot);
    assert_int_equal(tot.failed, 3);
    assert_int_equal(tot.refreshed, 0);
    assert_int_equal(tot.lost_races, 0);
}

static void test_totals_sum_every_provider_and_every_failure_outcome(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    metrics_count(&m, PROVIDER_GOOGLE, METRICS_REFRESHED);
    metrics_count(&m, PROVIDER_GITHUB, METRICS_REFRESHED);
    metrics_count(&m, PROVIDER_MAX - 1, METRICS_REFRESHED); /* a generic provider */
    metrics_count(&m, PROVIDER_GOOGLE, METRICS_TRANSIENT);
    metrics_count(&m, PROVIDER_GITHUB, METRICS_BAD_RESPONSE);
    metrics_count(&m, PROVIDER_MICROSOFT, METRICS_CONFIG_ERROR);
    metrics_count(&m, PROVIDER_MICROSOFT, METRICS_LOCAL_ERROR);
    metrics_count(&m, PROVIDER_GITHUB, METRICS_REVOKED);
    metrics_count(&m, PROVIDER_GITHUB, METRICS_DISCARDED);
    metrics_count(&m, PROVIDER_GITHUB, METRICS_LOST_RACE);
    metrics_count(&m, PROVIDER_GOOGLE, METRICS_LOST_RACE);
    struct metrics_totals t;
    metrics_totals(&m, &t);
    assert_int_equal(t.refreshed, 3);
    assert_int_equal(t.failed, 4);
    assert_int_equal(t.revoked, 1);
    assert_int_equal(t.discarded, 1);
    assert_int_equal(t.lost_races, 2);
}

static void test_quantile_is_the_upper_bound_of_the_bucket_never_above_the_max(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0);
    const struct metrics_histogram *h = &m.claim_to_written;
    const double *b = metrics_claim_bounds;
    size_t n = METRICS_CLAIM_BUCKETS;
    assert_true(metrics_quantile(h, b, n, 0.5) == 0); /* empty */

    metrics_observe_claim_to_written(&m, 0.0011);
    /* one value: its bucket's bound (1.25 ms) is above what was seen */
    assert_true(metrics_quantile(h, b, n, 0.5) == 0.0011);
    assert_true(metrics_quantile(h, b, n, 0.99) == 0.0011);

    for (int i = 0; i < 49; i++)
        metrics_observe_claim_to_written(&m, 0.0011);
    for (int i = 0; i < 40; i++)
        metrics_observe_claim_to_written(&m, 0.2); /* on a bound: le is inclusive */
    for (int i = 0; i < 9; i++)
        metrics_observe_claim_to_written(&m, 4.5);
    metrics_observe_claim_to_written(&m, 1000); /* beyond the last bound */
    metrics_observe_claim_to_written(&m, -1);   /* a clock step: counted as 0 */
    assert_int_equal(h->count, 101);
    assert_true(metrics_quantile(h, b, n, 0.5) == 0.00125);
    assert_true(metrics_quantile(h, b, n, 0.9) == 0.2);
    assert_true(metrics_quantile(h, b, n, 0.99) == 5);
    assert_true(metrics_quantile(h, b, n, 1.0) == 1000);

    char line[160];
    metrics_claim_summary(&m, line, sizeof line);
    assert_string_equal(line, "claim to written: p50 1.2 ms, p90 200.0 ms, p99 5000.0 ms, "
                              "max 1000000.0 ms (101 results)");
    char *t = render(&m, "v");
    EXPECT_LINE(t, "oauth_refreshd_claim_to_written_seconds_bucket{le=\"0.001\"} 1");
    EXPECT_LINE(t, "oauth_refreshd_claim_to_written_seconds_bucket{le=\"0.00125\"} 51");
    EXPECT_LINE(t, "oauth_refreshd_claim_to_written_seconds_bucket{le=\"0.2\"} 91");
    EXPECT_LINE(t, "oauth_refreshd_claim_to_written_seconds_bucket{le=\"300\"} 100");
    EXPECT_LINE(t, "oauth_refreshd_claim_to_written_seconds_bucket{le=\"+Inf\"} 101");
    EXPECT_LINE(t, "oauth_refreshd_claim_to_written_seconds_count 101");
    free(t);
}

static void test_claim_bounds_are_log_spaced_and_fine(void **state)
{
    (void)state;
    for (size_t i = 1; i < METRICS_CLAIM_BUCKETS; i++) {
        double r = metrics_claim_bounds[i] / metrics_claim_bounds[i - 1];
        assert_true(r > 1.2);
        if (metrics_claim_bounds[i] <= 100)
            assert_true(r <= 1.28); /* the resolution the exit line's doc promises */
    }
    char line[8];
    struct metrics m;
    metrics_init(&m, 0);
    metrics_claim_summary(&m, line, sizeof line);
    assert_string_equal(line, ""); /* no results: no line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_metrics_render_zero_counters_for_every_provider_and_outcome),
        cmocka_unit_test(test_generic_providers_are_shown_by_name_once_named),
        cmocka_unit_test(test_answers_count_failures_and_store_counts_written_results),
        cmocka_unit_test(test_histogram_buckets_are_cumulative_and_le_is_inclusive),
        cmocka_unit_test(test_non_finite_and_negative_latency_are_not_observed),
        cmocka_unit_test(test_out_of_range_providers_and_outcomes_are_ignored),
        cmocka_unit_test(test_gauges_render_what_the_daemon_set),
        cmocka_unit_test(test_failed_reload_keeps_the_last_success_time),
        cmocka_unit_test(test_hostile_version_label_is_escaped),
        cmocka_unit_test(test_every_sample_belongs_to_a_declared_family),
        cmocka_unit_test(test_render_is_pure),
        cmocka_unit_test(test_overload_answers_are_no_outcome_and_partial_results_one_failure),
        cmocka_unit_test(test_totals_sum_every_provider_and_every_failure_outcome),
        cmocka_unit_test(test_quantile_is_the_upper_bound_of_the_bucket_never_above_the_max),
        cmocka_unit_test(test_claim_bounds_are_log_spaced_and_fine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
