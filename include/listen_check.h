/*
 * listen_check.h — proves that LISTEN hears. Behind a pooler in transaction
 * mode (PgBouncer's common setting), or after some proxy failures, LISTEN
 * succeeds but notifications never arrive, and nothing else would tell. Every
 * interval the daemon sends itself a NOTIFY on its own channel through its own
 * connection; one that has not come back by the next beat means notifications
 * are being swallowed. The module only observes and reports: what to do about
 * it (reconnect, rescan more often, say so) is its owner's business.
 */
#ifndef OAUTH_LISTEN_CHECK_H
#define OAUTH_LISTEN_CHECK_H

#include <ev.h>

#include "common.h"
#include "db.h"

/* The channel of the heartbeats; the daemon LISTENs on it with the others. */
#define LISTEN_CHECK_CHANNEL "oauth_refreshd_heartbeat"

struct listen_check_callbacks {
    /* A heartbeat was missed (deaf = true), or one came back after that (false). */
    void (*changed)(void *ud, bool deaf);
    void *ud;
};

/* owner identifies this process's heartbeats among other instances'. Copied. */
struct listen_check *listen_check_new(struct ev_loop *loop, struct db *db, const char *owner,
                                      const struct listen_check_callbacks *cb);
/* Seconds between heartbeats; 0 turns the check off (and forgets a deaf state). */
void listen_check_set_interval(struct listen_check *lc, double interval_s);
/* A new connection (LISTEN renewed): beat soon, on it. */
void listen_check_on_connected(struct listen_check *lc);
void listen_check_on_disconnected(struct listen_check *lc);
/* True when the notification was a heartbeat (ours or another instance's). */
bool listen_check_on_notify(struct listen_check *lc, const char *channel, const char *payload);
bool listen_check_deaf(const struct listen_check *lc);
void listen_check_free(struct listen_check *lc);

#endif
