/*
 * daemon_ctx.h — the one daemon context, shared by daemon.c (startup, signals,
 * reload, shutdown, reporting) and engine.c (claiming and running refreshes).
 * Nothing else may include it: other modules get what they need as arguments.
 */
#ifndef OAUTH_DAEMON_CTX_H
#define OAUTH_DAEMON_CTX_H

#include <ev.h>

#include "backoff.h"
#include "config.h"
#include "daemon.h"
#include "db.h"
#include "http.h"
#include "metrics.h"
#include "sdnotify.h"
#include "store.h"

struct job;

/* Scheduling state of one provider: capacity, rate, circuit breaker. */
struct provider_state {
    unsigned in_flight;    /* requests sent and not answered */
    unsigned reserved;     /* slots promised to a claim in progress */
    struct job *wait_head; /* claimed, waiting for a rate token */
    struct job *wait_tail;
    unsigned waiting;
    struct token_bucket bucket;
    bool claiming;          /* a claim statement is outstanding */
    bool more;              /* the last claim was full: more may be due */
    double dry_until;       /* ev_now() time: the last claim found nothing, so it is not
                               claimed again before this unless woken (engine.c) */
    double paused_until;    /* ev_now() time; 0 = not paused */
    bool probing;           /* paused provider: one probe allowed */
    bool config_error;      /* invalid_client & co: paused until a probe succeeds or a reload */
    double config_probe_at; /* ev_now() time: config_error's next probe may go */
    bool config_reread;     /* the config was read again for the coming probe */
    unsigned consecutive_failures;
    unsigned pauses; /* consecutive pauses, for the pause length */
    bool unconfigured_reported;
    /* counters since start */
    uint64_t refreshed, failed, revoked, discarded;
    char last_error[64];
};

/* Claim-to-written times of results: 1 ms buckets to 1 s, 10 ms to 10 s, 1 s to 300 s. */
#define LATENCY_BUCKETS (1000 + 900 + 290 + 1)
struct latency_hist {
    uint32_t bucket[LATENCY_BUCKETS];
    uint64_t count;
    double max_s;
};

struct daemon_stats {
    uint64_t refreshed, failed, revoked, discarded, lost_races;
    uint64_t window_refreshed, window_failed; /* since the last periodic summary */
    struct latency_hist claim_to_written;
};

struct daemon {
    struct ev_loop *loop;
    struct config *cfg; /* current; jobs hold their own references */
    struct daemon_options opt;
    char owner[96]; /* lease owner: host:pid:random */

    struct db *db;
    struct listen_check *listen_check; /* heartbeats that prove LISTEN hears */
    struct http *http;
    struct discovery *discovery; /* OpenID Connect discovery of generic providers */
    struct store *store;
    struct spool *spool; /* durable rotated results under the state directory */
    struct sdnotify sn;
    struct metrics metrics;                /* counters and gauges for /metrics */
    struct metrics_server *metrics_server; /* NULL unless [metrics] listen is set */

    struct provider_state prov[PROVIDER_MAX];
    unsigned in_flight; /* all providers, requests sent */

    /* manual requests from oauth_refresh_request, waiting to be claimed */
    int64_t *requested;
    size_t nrequested, caprequested;
    bool claiming_ids;

    ev_timer kick_timer;   /* coalesces "look for work now" */
    ev_timer due_timer;    /* next known due time */
    ev_timer scan_timer;   /* periodic safety rescan */
    ev_timer rate_timer;   /* waiting jobs need a token */
    ev_timer status_timer; /* STATUS= and the periodic summary */
    ev_timer shutdown_timer;
    ev_signal sig_term, sig_int, sig_hup;
    double next_due;          /* wall time of the next known due account, 0 = none */
    double requests_deadline; /* ev_now() time by which every request sent so far has ended by
                                 its own request_timeout (the shutdown drain waits for it) */
    bool wakeup_query_outstanding;
    unsigned releases_outstanding; /* release statements not yet answered */

    bool connected, ever_connected, ready, schema_ok, stopping, aborting;
    bool listen_deaf;           /* notifications do not arrive: the rescans stand in for them */
    double deaf_reconnected_at; /* ev_now of the last reconnection for a deaf LISTEN */
    double db_retry_at;         /* ev_now() of the next reconnection attempt */
    char db_reason[160];
    double once_since; /* --once: wall time the run started */
    bool once_failed;  /* --once: some attempt failed */
    double last_summary;
    struct daemon_stats stats;
    char reload_error[200];
    bool rereading; /* a reload made by the engine before a configuration probe */
    int exit_code;
    bool exit_requested;
};

/* engine.c */
void engine_init(struct daemon *d);
void engine_kick(struct daemon *d);         /* look for work soon */
void engine_on_connected(struct daemon *d); /* catch-up after (re)connection */
void engine_on_notify(struct daemon *d, const char *channel, const char *payload);
void engine_on_config(struct daemon *d); /* a new config was swapped in */
/* LISTEN stopped (or started again) hearing: rescan often while it is deaf. */
void engine_on_listen_deaf(struct daemon *d, bool deaf);
double engine_deaf_rescan_interval(const struct daemon *d);
void engine_stop_claiming(struct daemon *d); /* shutdown: release what was not sent */
bool engine_idle(const struct daemon *d);    /* nothing claimed, in flight or unwritten */
unsigned engine_waiting(const struct daemon *d);
void engine_check_once_done(struct daemon *d);
void engine_free(struct daemon *d);
void engine_store_done_cb(void *ud, const struct store_item *item, enum store_fate fate);
/* A look at revoked accounts' changes ended; lifted ones may be claimable. */
void engine_revoked_checked_cb(void *ud, size_t lifted);
/* "claim to written: p50 .. ms, p90 .. ms, p99 .. ms, max .. ms (N results)" or "" when none. */
void engine_latency_summary(const struct daemon *d, char *buf, size_t len);

/* daemon.c */
void daemon_request_exit(struct daemon *d, int code);
/* Reads the configuration and its secret files again, as SIGHUP does, but as
 * the engine's own step before probing a provider paused for a configuration
 * error (d->rereading is set meanwhile: the pause stays, the probe decides). */
void daemon_reread_config(struct daemon *d);

#endif
