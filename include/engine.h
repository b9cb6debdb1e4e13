/*
 * engine.h — the refresh engine: scheduling policy only. It decides when to
 * look for due accounts, claims them per provider (queue.h) within the
 * in-flight and rate limits, runs each one (refresh.c prepares and concludes,
 * http.h carries the request), keeps each provider's circuit breaker, and hands
 * every outcome to the store. Once per loop turn (an ev_prepare watcher) it
 * decides whether to claim more and whether its work is over (--once, or the
 * drain after engine_stop), and then tells the daemon through its callbacks.
 * It never calls upward otherwise and owns nothing it was given.
 */
#ifndef OAUTH_ENGINE_H
#define OAUTH_ENGINE_H

#include <ev.h>

#include "common.h"
#include "config.h"
#include "store.h"

struct discovery;
struct http;
struct metrics;
struct queue;

/* What the engine works with: the daemon's, borrowed for the engine's life. */
struct engine_deps {
    struct ev_loop *loop;
    struct queue *queue;
    struct http *http;
    struct store *store;
    struct discovery *discovery; /* may be NULL: no generic provider to wait for */
    struct metrics *metrics;
};

struct engine_callbacks {
    /* The work is over: --once found nothing more (code: SPEC §2 exit code), or
     * the drain after engine_stop ended. Called once. */
    void (*finished)(void *ud, int code);
    /* Read the configuration again (as SIGHUP does) before a provider paused
     * for a configuration error is probed; the new config comes back through
     * engine_on_config, which then keeps the pause (the probe decides). */
    void (*reread_config)(void *ud);
    void *ud;
};

struct engine;

/* cfg: the current configuration, borrowed (the daemon holds it; each job holds
 * its own reference). once: --once, which started at wall time once_since. */
struct engine *engine_new(const struct engine_deps *deps, const struct engine_callbacks *cb,
                          struct config *cfg, bool once, double once_since) WUR;
/* Frees what is left; call engine_stop first, and this after db_free and http_free. */
void engine_free(struct engine *e);

void engine_kick(struct engine *e); /* look for work soon */
/* The database connection is up (session ready) or lost; then its schema was checked. */
void engine_on_db(struct engine *e, bool connected);
void engine_on_schema_ok(struct engine *e); /* catch-up after (re)connection */
void engine_on_notify(struct engine *e, const char *channel, const char *payload);
void engine_on_config(struct engine *e, struct config *cfg); /* swapped in by a reload */
/* LISTEN stopped (or started again) hearing: rescan often while it is deaf. */
void engine_on_listen_deaf(struct engine *e, bool deaf);
double engine_deaf_rescan_interval(const struct engine *e);
/* A generic provider's discovery ended (ok: its token endpoint is known). */
void engine_on_discovery(struct engine *e, bool ok);
/* Store callbacks (store.h): the daemon forwards them. */
void engine_on_store_done(struct engine *e, const struct store_item *item, enum store_fate fate);
void engine_on_revoked_checked(struct engine *e, size_t lifted);

/* Shutdown: claim nothing more, give back what was not sent, and call
 * finished once what is in flight and unwritten has ended. */
void engine_stop(struct engine *e);

unsigned engine_in_flight(const struct engine *e); /* requests sent, not answered */
unsigned engine_waiting(const struct engine *e);   /* claimed, waiting for a rate token */
/* The ev_now() time by which every request sent so far has ended by its own timeout. */
double engine_requests_deadline(const struct engine *e);
double engine_next_due(const struct engine *e); /* wall time, 0 = none known */
/* Paused now (breaker or Retry-After), or refusing our client registration. */
bool engine_provider_paused(const struct engine *e, enum provider_id p, bool *refusing);

#endif
