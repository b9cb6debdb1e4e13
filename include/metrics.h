/*
 * metrics.h — the daemon's Prometheus metrics: plain counters, histograms and
 * gauges in one struct that the engine updates through the small functions
 * below, and a pure renderer to the text exposition format (version 0.0.4).
 * Nothing here does I/O, reads a clock or allocates outside the output
 * buffer; the HTTP side lives in metrics_server.h. No label ever carries an
 * account id, a token or a secret: labels are provider and outcome names only.
 */
#ifndef OAUTH_METRICS_H
#define OAUTH_METRICS_H

#include "common.h"
#include "provider_id.h"
#include "provider.h"
#include "store.h"
#include "strbuf.h"

/*
 * The final outcome of one refresh attempt, counted once where it is decided:
 * a failure when the provider's answer (or the local error) decides it, a
 * refresh, revocation, discard or lost race when the store commits it. These
 * counters are the daemon's only ones: STATUS=, the periodic summary and the
 * exit line are sums of them (metrics_totals).
 */
enum metrics_outcome {
    METRICS_REFRESHED,    /* new tokens written (a partial result is a failure) */
    METRICS_REVOKED,      /* revocation recorded */
    METRICS_TRANSIENT,    /* 5xx/timeout/network: retried later; not an overload answer */
    METRICS_BAD_RESPONSE, /* unusable answer, incl. a partial result (rotated token kept) */
    METRICS_CONFIG_ERROR, /* invalid_client & co */
    METRICS_DISCARDED,    /* the row holds another refresh token: new tokens not written */
    METRICS_LOCAL_ERROR,  /* never sent: e.g. an undecryptable refresh token */
    METRICS_LOST_RACE,    /* revocation not recorded: the refresh token changed meanwhile */
    METRICS_OUTCOME_COUNT,
};
const char *metrics_outcome_name(enum metrics_outcome o);

#define METRICS_LATENCY_BUCKETS 11
#define METRICS_MARGIN_BUCKETS  9
#define METRICS_CLAIM_BUCKETS   52
#define METRICS_MAX_BUCKETS     METRICS_CLAIM_BUCKETS

/* A classic histogram: per-bucket (not cumulative) counts, the last is +Inf. */
struct metrics_histogram {
    uint64_t counts[METRICS_MAX_BUCKETS + 1];
    double sum;
    uint64_t count;
    double max; /* the largest value observed (not exported; the exit line's max) */
};

struct metrics {
    uint64_t outcomes[PROVIDER_MAX][METRICS_OUTCOME_COUNT];
    struct metrics_histogram latency[PROVIDER_MAX]; /* provider request duration */
    struct metrics_histogram margin[PROVIDER_MAX];  /* seconds left before expiry */
    struct metrics_histogram claim_to_written;      /* claim to the result's commit */

    /* Gauges: the daemon fills the live ones right before each render. */
    unsigned in_flight; /* requests sent, not answered */
    unsigned waiting;   /* claimed, waiting for a rate-limit token */
    size_t held;        /* results not yet written to the database */
    bool db_connected;
    bool listen_deaf;          /* our heartbeat NOTIFY did not come back */
    bool paused[PROVIDER_MAX]; /* circuit breaker open or credentials refused */
    unsigned config_generation;
    bool last_reload_ok;
    double last_reload_at;    /* wall clock of the last reload attempt; start time before */
    double last_reload_ok_at; /* wall clock of the last config that took effect */
    double start_time;
    /* From the periodic count query; counts_at == 0 until the first answer. */
    int64_t due, failing, revoked;
    double counts_at;
};

/* Zeroes everything; the config loaded at start counts as a successful load at now. */
void metrics_init(struct metrics *m, double now);

/*
 * A provider answered (or the transport gave up): observes the request
 * latency and how many seconds the token had left when it was refreshed, and
 * counts the failure outcomes (transient, bad response, config error), a
 * partial result among them. An overload answer (retry rule RETRY_PAUSE: the
 * claim is given back and the account tried again after the pause) is no
 * outcome of the account's. Success and revocation are counted when they are
 * written (metrics_observe_store). Out-of-range providers and non-finite
 * values are ignored.
 */
void metrics_observe_answer(struct metrics *m, int provider, const struct token_result *res,
                            double latency_s, double seconds_left);
/* The store's verdict on a result: refreshed, revoked, discarded or lost race.
 * Failures, partial results included, were counted at the answer. */
void metrics_observe_store(struct metrics *m, const struct store_item *item, enum store_fate fate);
/* A result was committed (whatever its fate) seconds after its account was claimed. */
void metrics_observe_claim_to_written(struct metrics *m, double seconds);
/* One outcome, directly (e.g. METRICS_LOCAL_ERROR for an attempt never sent). */
void metrics_count(struct metrics *m, int provider, enum metrics_outcome outcome);
/* A reload attempt finished at now: ok says whether the new config took effect. */
void metrics_note_reload(struct metrics *m, bool ok, double now);
/* The periodic account counts. */
void metrics_set_counts(struct metrics *m, int64_t due, int64_t failing, int64_t revoked,
                        double now);

/* Sums over providers: what STATUS=, the periodic summary and the exit line say. */
struct metrics_totals {
    uint64_t refreshed, revoked;
    uint64_t failed; /* transient + bad response + config error + local error */
    uint64_t discarded, lost_races;
};
void metrics_totals(const struct metrics *m, struct metrics_totals *t);

/*
 * The q-quantile (0 < q <= 1) of a histogram with n bounds: the upper bound of
 * the bucket holding the ceil-ish rank q * count, never above the maximum
 * observed; 0 when empty. Pure, exposed for tests.
 */
double metrics_quantile(const struct metrics_histogram *h, const double *bounds, size_t n,
                        double q);
/* "claim to written: p50 .. ms, p90 .. ms, p99 .. ms, max .. ms (N results)" or ""
 * when none, from the claim_to_written histogram: each quantile is its bucket's
 * upper bound, so it reads at most 28 % above the true value up to 100 s. */
void metrics_claim_summary(const struct metrics *m, char *buf, size_t len);

/* The bucket bounds (seconds), exposed for tests. */
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];
extern const double metrics_margin_bounds[METRICS_MARGIN_BUCKETS];
extern const double metrics_claim_bounds[METRICS_CLAIM_BUCKETS];

/*
 * Appends the whole exposition (text format 0.0.4) to out. Pure: the output
 * depends only on *m and version. Check out->oom afterwards.
 */
void metrics_render(const struct metrics *m, const char *version, struct strbuf *out);

#endif
