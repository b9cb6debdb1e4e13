/*
 * metrics.c — the numbers behind GET /metrics and their rendering in the
 * Prometheus text exposition format 0.0.4. It owns the metric names, help
 * texts, bucket bounds and what each outcome counts; the engine and daemon
 * only call the small observe/set functions. Rendering is pure (no clock, no
 * I/O) so it is unit-tested byte for byte and checked with promtool.
 * It must never put an account id, token or secret into a label, and never
 * block: everything here is arithmetic on a struct.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define NS "oauth_refreshd_"

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};
/* A refresh at or after expiry lands in le="0": the lead time was not enough. */
const double metrics_margin_bounds[METRICS_MARGIN_BUCKETS] = {
    0, 30, 60, 120, 180, 300, 600, 1800, 3600,
};

/*
 * Claim to written: log-spaced, ten buckets a decade (the R10 series: each
 * bound at most 28 % above the one before) from 1 ms to 100 s, then 300 s.
 * Fine enough for the exit line's p50/p90/p99, few enough for one scrape.
 */
const double metrics_claim_bounds[METRICS_CLAIM_BUCKETS] = {
    0.001, 0.00125, 0.0016, 0.002, 0.0025, 0.0032, 0.004, 0.005, 0.0063, 0.008, 0.01, 0.0125, 0.016,
    0.02,  0.025,   0.032,  0.04,  0.05,   0.063,  0.08,  0.1,   0.125,  0.16,  0.2,  0.25,   0.32,
    0.4,   0.5,     0.63,   0.8,   1,      1.25,   1.6,   2,     2.5,    3.2,   4,    5,      6.3,
    8,     10,      12.5,   16,    20,     25,     32,    40,    50,     63,    80,   100,    300,
};

static const char *const outcome_names[METRICS_OUTCOME_COUNT] = {
    [METRICS_REFRESHED] = "refreshed",       [METRICS_REVOKED] = "revoked",
    [METRICS_TRANSIENT] = "transient",       [METRICS_BAD_RESPONSE] = "bad_response",
    [METRICS_CONFIG_ERROR] = "config_error", [METRICS_DISCARDED] = "discarded",
    [METRICS_LOCAL_ERROR] = "local_error",   [METRICS_LOST_RACE] = "lost_race",
};

const char *metrics_outcome_name(enum metrics_outcome o)
{
    return (unsigned)o < METRICS_OUTCOME_COUNT ? outcome_names[o] : "unknown";
}

void metrics_init(struct metrics *m, double now)
{
    memset(m, 0, sizeof *m);
    m->start_time = now;
    m->last_reload_ok = true;
    m->last_reload_at = now;
    m->last_reload_ok_at = now;
}

static bool provider_ok(int provider)
{
    return provider >= 0 && provider < PROVIDER_MAX;
}

/* Series for the named providers always, for a generic id once a config named it. */
static bool provider_shown(int p)
{
    return p < PROVIDER_NAMED_COUNT ||
           strcmp(provider_id_name((enum provider_id)p), "unknown") != 0;
}

static void histogram_observe(struct metrics_histogram *h, const double *bounds, size_t n, double v)
{
    if (!isfinite(v))
        return;
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    h->counts[i]++; /* i == n: the +Inf bucket */
    h->sum += v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    h->count++;
}

void metrics_count(struct metrics *m, int provider, enum metrics_outcome outcome)
{
    if (provider_ok(provider) && (unsigned)outcome < METRICS_OUTCOME_COUNT)
        m->outcomes[provider][outcome]++;
}

void metrics_observe_answer(struct metrics *m, int provider, const struct token_result *res,
                            double latency_s, double seconds_left)
{
    if (!provider_ok(provider))
        return;
    if (latency_s >= 0)
        histogram_observe(&m->latency[provider], metrics_latency_bounds, METRICS_LATENCY_BUCKETS,
                          latency_s);
    histogram_observe(&m->margin[provider], metrics_margin_bounds, METRICS_MARGIN_BUCKETS,
                      seconds_left);
    /* An overload answer charges nothing to the account: its claim goes back
     * and the attempt that counts is the one after the pause. */
    if (res->retry_rule == RETRY_PAUSE)
        return;
    switch (res->outcome) {
    case OUTCOME_TRANSIENT:
        metrics_count(m, provider, METRICS_TRANSIENT);
        break;
    case OUTCOME_BAD_RESPONSE:
        metrics_count(m, provider, METRICS_BAD_RESPONSE);
        break;
    case OUTCOME_CONFIG:
        metrics_count(m, provider, METRICS_CONFIG_ERROR);
        break;
    case OUTCOME_SUCCESS:
    case OUTCOME_REVOKED:
        break; /* counted when written */
    }
}

void metrics_observe_store(struct metrics *m, const struct store_item *item, enum store_fate fate)
{
    enum metrics_outcome o;
    if (item->kind == STORE_FAILED || store_item_is_partial(item))
        return; /* a failure: counted when the answer (or the local error) decided it */
    if (fate == STORE_DISCARDED)
        o = METRICS_DISCARDED;
    else if (fate == STORE_LOST_RACE)
        o = METRICS_LOST_RACE;
    else
        o = item->kind == STORE_REVOKED ? METRICS_REVOKED : METRICS_REFRESHED;
    metrics_count(m, item->provider, o);
}

void metrics_observe_claim_to_written(struct metrics *m, double seconds)
{
    histogram_observe(&m->claim_to_written, metrics_claim_bounds, METRICS_CLAIM_BUCKETS,
                      seconds < 0 ? 0 : seconds);
}

static uint64_t outcome_total(const struct metrics *m, enum metrics_outcome o)
{
    uint64_t n = 0;
    for (int p = 0; p < PROVIDER_MAX; p++)
        n += m->outcomes[p][o];
    return n;
}

void metrics_totals(const struct metrics *m, struct metrics_totals *t)
{
    t->refreshed = outcome_total(m, METRICS_REFRESHED);
    t->revoked = outcome_total(m, METRICS_REVOKED);
    t->failed = outcome_total(m, METRICS_TRANSIENT) + outcome_total(m, METRICS_BAD_RESPONSE) +
                outcome_total(m, METRICS_CONFIG_ERROR) + outcome_total(m, METRICS_LOCAL_ERROR);
    t->discarded = outcome_total(m, METRICS_DISCARDED);
    t->lost_races = outcome_total(m, METRICS_LOST_RACE);
}

double metrics_quantile(const struct metrics_histogram *h, const double *bounds, size_t n, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    if (want > h->count)
        want = h->count;
    for (size_t i = 0; i < n; i++) {
        seen += h->counts[i];
        if (seen >= want)
            return bounds[i] < h->max ? bounds[i] : h->max;
    }
    return h->max; /* in the +Inf bucket */
}

void metrics_claim_summary(const struct metrics *m, char *buf, size_t len)
{
    const struct metrics_histogram *h = &m->claim_to_written;
    if (h->count == 0) {
        buf[0] = '\0';
        return;
    }
    const double *b = metrics_claim_bounds;
    size_t n = METRICS_CLAIM_BUCKETS;
    snprintf(buf, len,
             "claim to written: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%" PRIu64
             " results)",
             metrics_quantile(h, b, n, 0.5) * 1000.0, metrics_quantile(h, b, n, 0.9) * 1000.0,
             metrics_quantile(h, b, n, 0.99) * 1000.0, h->max * 1000.0, h->count);
}

void metrics_note_reload(struct metrics *m, bool ok, double now)
{
    m->last_reload_ok = ok;
    m->last_reload_at = now;
    if (ok)
        m->last_reload_ok_at = now;
}

void metrics_set_counts(struct metrics *m, int64_t due, int64_t failing, int64_t revoked,
                        double now)
{
    m->due = due;
    m->failing = failing;
    m->revoked = revoked;
    m->counts_at = now;
}

/* ---- rendering ------------------------------------------------------------------ */

/* The shortest decimal that reads back as v ("0.05", not "0.050000000000000003"). */
static void put_double(struct strbuf *out, double v)
{
    if (isnan(v)) {
        strbuf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char buf[40];
    if (v == floor(v) && fabs(v) < 1e15) {
        strbuf_printf(out, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    strbuf_puts(out, buf);
}

static void header(struct strbuf *out, const char *name, const char *type, const char *help)
{
    strbuf_printf(out, "# HELP " NS "%s %s\n# TYPE " NS "%s %s\n", name, help, name, type);
}

static void gauge_u(struct strbuf *out, const char *name, const char *help, uint64_t v)
{
    header(out, name, "gauge", help);
    strbuf_printf(out, NS "%s %" PRIu64 "\n", name, v);
}

static void gauge_d(struct strbuf *out, const char *name, const char *help, double v)
{
    header(out, name, "gauge", help);
    strbuf_printf(out, NS "%s ", name);
    put_double(out, v);
    strbuf_puts(out, "\n");
}

/* Label values here are fixed names, but escape them as the format requires anyway. */
static void put_label_value(struct strbuf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            strbuf_puts(out, "\\\\");
        else if (*v == '"')
            strbuf_puts(out, "\\\"");
        else if (*v == '\n')
            strbuf_puts(out, "\\n");
        else
            strbuf_append(out, v, 1);
    }
}

/* One histogram's series; prov NULL: the histogram has no labels. */
static void histogram_series(struct strbuf *out, const char *name, const char *prov,
                             const struct metrics_histogram *h, const double *bounds, size_t n)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += h->counts[i];
        strbuf_printf(out, NS "%s_bucket{", name);
        if (prov) {
            strbuf_puts(out, "provider=\"");
            put_label_value(out, prov);
            strbuf_puts(out, "\",");
        }
        strbuf_puts(out, "le=\"");
        if (i < n)
            put_double(out, bounds[i]);
        else
            strbuf_puts(out, "+Inf");
        strbuf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
    const char *suffix[2] = {"_sum", "_count"};
    for (int k = 0; k < 2; k++) {
        strbuf_printf(out, NS "%s%s", name, suffix[k]);
        if (prov) {
            strbuf_puts(out, "{provider=\"");
            put_label_value(out, prov);
            strbuf_puts(out, "\"}");
        }
        strbuf_puts(out, " ");
        if (k == 0)
            put_double(out, h->sum);
        else
            strbuf_printf(out, "%" PRIu64, h->count);
        strbuf_puts(out, "\n");
    }
}

static void histogram(struct strbuf *out, const char *name, const char *help,
                      const struct metrics_histogram *h, const double *bounds, size_t n)
{
    header(out, name, "histogram", help);
    for (int p = 0; p < PROVIDER_MAX; p++) {
        if (provider_shown(p))
            histogram_series(out, name, provider_id_name((enum provider_id)p), &h[p], bounds, n);
    }
}

void metrics_render(const struct metrics *m, const char *version, struct strbuf *out)
{
    header(out, "build_info", "gauge", "Always 1; the version label names the running build.");
    strbuf_puts(out, NS "build_info{version=\"");
    put_label_value(out, version);
    strbuf_puts(out, "\"} 1\n");
    gauge_d(out, "start_time_seconds", "Unix time the daemon started.", m->start_time);

    header(out, "refreshes_total", "counter",
           "Refresh attempts by provider and final outcome, each counted once (refreshed and "
           "revoked: results written; transient, bad_response, config_error: failed answers, "
           "a partial result among them, an overload answer not; discarded and lost_race: "
           "results not written because the row changed meanwhile; local_error: attempts "
           "never sent).");
    for (int p = 0; p < PROVIDER_MAX; p++) {
        if (!provider_shown(p))
            continue;
        for (int o = 0; o < METRICS_OUTCOME_COUNT; o++) {
            strbuf_puts(out, NS "refreshes_total{provider=\"");
            put_label_value(out, provider_id_name((enum provider_id)p));
            strbuf_puts(out, "\",outcome=\"");
            put_label_value(out, outcome_names[o]);
            strbuf_printf(out, "\"} %" PRIu64 "\n", m->outcomes[p][o]);
        }
    }

    histogram(out, "provider_request_duration_seconds",
              "Time from sending a refresh request to the provider's complete answer (or the "
              "transport's failure).",
              m->latency, metrics_latency_bounds, METRICS_LATENCY_BUCKETS);
    histogram(out, "expiry_margin_seconds",
              "Seconds the stored access token had left before expiry when it was refreshed "
              "(negative: already expired).",
              m->margin, metrics_margin_bounds, METRICS_MARGIN_BUCKETS);

    header(out, "claim_to_written_seconds", "histogram",
           "Time from claiming an account to committing its result (written, discarded or "
           "lost race) in the database.");
    histogram_series(out, "claim_to_written_seconds", NULL, &m->claim_to_written,
                     metrics_claim_bounds, METRICS_CLAIM_BUCKETS);

    gauge_u(out, "requests_in_flight", "Refresh requests sent and not yet answered.", m->in_flight);
    gauge_u(out, "requests_waiting", "Claimed accounts waiting for a provider's rate limit.",
            m->waiting);
    gauge_u(out, "results_held",
            "Refresh results not yet written to the database (held through an outage).", m->held);
    gauge_u(out, "database_connected", "1 while the database connection is up.",
            m->db_connected ? 1 : 0);
    gauge_u(out, "listen_deaf",
            "1 while notifications do not arrive (LISTEN is deaf, e.g. behind a pooler in "
            "transaction mode); the daemon then rescans often.",
            m->listen_deaf ? 1 : 0);
    header(out, "provider_paused", "gauge",
           "1 while requests to the provider are paused (repeated failures or refused client "
           "credentials).");
    for (int p = 0; p < PROVIDER_MAX; p++) {
        if (!provider_shown(p))
            continue;
        strbuf_puts(out, NS "provider_paused{provider=\"");
        put_label_value(out, provider_id_name((enum provider_id)p));
        strbuf_printf(out, "\"} %d\n", m->paused[p] ? 1 : 0);
    }

    if (m->counts_at > 0) {
        gauge_u(out, "accounts_due",
                "Refreshable accounts whose token expires within the lead time (periodic count).",
                (uint64_t)(m->due > 0 ? m->due : 0));
        gauge_u(out, "accounts_failing",
                "Accounts whose last attempt failed, revoked ones excluded (periodic count).",
                (uint64_t)(m->failing > 0 ? m->failing : 0));
        gauge_u(out, "accounts_revoked",
                "Accounts whose refresh token was refused; they wait for the user to reconnect "
                "(periodic count).",
                (uint64_t)(m->revoked > 0 ? m->revoked : 0));
        gauge_d(out, "account_counts_timestamp_seconds",
                "Unix time the account counts were read from the database.", m->counts_at);
    }

    gauge_u(out, "config_generation",
            "Configuration generation: 0 at start, +1 for every reload that took effect.",
            m->config_generation);
    gauge_u(out, "config_last_reload_successful",
            "1 when the last reload (or the start) loaded the configuration, 0 when the last "
            "reload was rejected.",
            m->last_reload_ok ? 1 : 0);
    gauge_d(out, "config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (the start time before any).", m->last_reload_at);
    gauge_d(out, "config_last_reload_success_timestamp_seconds",
            "Unix time the configuration in force was loaded.", m->last_reload_ok_at);
}
