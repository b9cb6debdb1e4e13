/*
 * daemon_ctx.h — the daemon's context, private to daemon.c (startup, signals,
 * reload, shutdown, reporting). The engine (engine.h) has its own struct and
 * gets what it needs as arguments; nothing else may include this header.
 */
#ifndef OAUTH_DAEMON_CTX_H
#define OAUTH_DAEMON_CTX_H

#include <ev.h>

#include "config.h"
#include "daemon.h"
#include "engine.h"
#include "db.h"
#include "http.h"
#include "metrics.h"
#include "queue.h"
#include "sdnotify.h"
#include "store.h"

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

    struct queue *queue;   /* the claim statements */
    struct engine *engine; /* claiming and running refreshes */
    bool unconfigured_reported[PROVIDER_MAX];

    ev_timer status_timer; /* STATUS= and the periodic summary */
    ev_timer shutdown_timer;
    ev_signal sig_term, sig_int, sig_hup;

    bool connected, ever_connected, ready, schema_ok, stopping, aborting;
    double deaf_reconnected_at; /* ev_now of the last reconnection for a deaf LISTEN */
    double db_retry_at;         /* ev_now() of the next reconnection attempt */
    char db_reason[160];
    double once_since; /* --once: wall time the run started */
    double last_summary;
    uint64_t summary_refreshed, summary_failed; /* metrics_totals() at the last summary */
    char reload_error[200];
    bool rereading; /* a reload made by the engine before a configuration probe */
    int exit_code;
    bool exit_requested;
};

#endif
