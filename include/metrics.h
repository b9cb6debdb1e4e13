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

/* The final outcome of one refresh attempt, as counted. */
enum metrics_outcome {
    METRICS_REFRESHED,    /* new tokens written */
    METRICS_REVOKED,      /* revocation recorded */
    METRICS_TRANSIENT,    /* 429/5xx/timeout/network: retried later */
    METRICS_BAD_RESPONSE, /* unusable answer */
    METRICS_CONFIG_ERROR, /* invalid_client & co */
    METRICS_DISCARDED,    /* the row changed meanwhile: the answer was not written */
    METRICS_LOCAL_ERROR,  /* never sent: e.g. an undecryptable refresh token */
    METRICS_OUTCOME_COUNT,
};
const char *metrics_outcome_name(enum metrics_outcome o);

#define METRICS_LATENCY_BUCKETS 11
#define METRICS_MARGIN_BUCKETS  9

/* A classic histogram: per-bucket (not cumulative) counts, the last is +Inf. */
struct metrics_histogram {
    uint64_t counts[16];
    double sum;
    uint64_t count;
};

struct metrics {
    uint64_t outcomes[PROVIDER_MAX][METRICS_OUTCOME_COUNT];
    struct metrics_histogram latency[PROVIDER_MAX]; /* provider request duration */
    struct metrics_histogram margin[PROVIDER_MAX];  /* seconds left before expiry */

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
 * counts the failure outcomes (transient, bad response, config error).
 * Success and revocation are counted when they are written (metrics_observe_store).
 * Out-of-range providers and non-finite values are ignored.
 */
void metrics_observe_answer(struct metrics *m, int provider, enum refresh_outcome outcome,
                            double latency_s, double seconds_left);
/* The store's verdict: refreshed, revoked or discarded (failures are ignored here). */
void metrics_observe_store(struct metrics *m, int provider, enum store_kind kind,
                           enum store_fate fate);
/* One outcome, directly (e.g. METRICS_LOCAL_ERROR for an attempt never sent). */
void metrics_count(struct metrics *m, int provider, enum metrics_outcome outcome);
/* A reload attempt finished at now: ok says whether the new config took effect. */
void metrics_note_reload(struct metrics *m, bool ok, double now);
/* The periodic account counts. */
void metrics_set_counts(struct metrics *m, int64_t due, int64_t failing, int64_t revoked,
                        double now);

/* The bucket bounds (seconds), exposed for tests. */
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];
extern const double metrics_margin_bounds[METRICS_MARGIN_BUCKETS];

/*
 * Appends the whole exposition (text format 0.0.4) to out. Pure: the output
 * depends only on *m and version. Check out->oom afterwards.
 */
void metrics_render(const struct metrics *m, const char *version, struct strbuf *out);

#endif
