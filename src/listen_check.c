/*
 * listen_check.c — the heartbeat that proves LISTEN hears (listen_check.h).
 * It owns one repeating timer and the number of the heartbeat in flight. On
 * each tick, a heartbeat still unanswered since the last tick means deaf; then
 * the next one is sent with pg_notify() on the daemon's own connection, so it
 * travels the same way as the application's notifications. It never sends
 * anything but its own channel's payload "<owner> <n>", and never acts on a
 * deaf LISTEN itself.
 */
#include "listen_check.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "timeutil.h"

/* After a (re)connection, beat this soon: a fresh LISTEN is proven at once. */
#define FIRST_BEAT_S 1.0
/* Heartbeats that must come back in a row before a deaf LISTEN counts as
 * hearing again: behind a transaction pooler one may come back by chance (the
 * pooler happened to hand us the backend that holds the LISTEN). */
#define HEAR_STREAK 3

struct listen_check {
    struct ev_loop *loop;
    struct db *db;
    char *owner;
    struct listen_check_callbacks cb;
    ev_timer beat;
    double interval_s;
    uint64_t seq;          /* number of the last heartbeat sent */
    uint64_t outstanding;  /* 0, or the heartbeat not yet heard */
    unsigned heard_in_row; /* while deaf: heartbeats that came back since the last miss */
    bool deaf;
};

static void set_deaf(struct listen_check *lc, bool deaf)
{
    if (lc->deaf == deaf)
        return;
    lc->deaf = deaf;
    if (lc->cb.changed)
        lc->cb.changed(lc->cb.ud, deaf);
}

static void beat_sent_cb(void *ud, PGresult *res)
{
    (void)ud;
    if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
        log_debug("listen check: the heartbeat could not be sent");
}

static void send_beat(struct listen_check *lc)
{
    if (!db_is_connected(lc->db))
        return;
    char payload[160];
    snprintf(payload, sizeof payload, "%s %" PRIu64, lc->owner, lc->seq + 1);
    const char *params[] = {LISTEN_CHECK_CHANNEL, payload};
    if (db_query(lc->db, "SELECT pg_notify($1, $2)", 2, params, beat_sent_cb, lc) == 0) {
        lc->seq++;
        lc->outstanding = lc->seq;
    }
}

static void beat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct listen_check *lc = w->data;
    (void)loop;
    (void)revents;
    if (lc->outstanding != 0 && db_is_connected(lc->db)) {
        log_debug("listen check: heartbeat %" PRIu64 " did not come back", lc->outstanding);
        lc->heard_in_row = 0;
        set_deaf(lc, true);
    }
    send_beat(lc);
}

static void arm(struct listen_check *lc, double first)
{
    ev_timer_stop(lc->loop, &lc->beat);
    if (lc->interval_s <= 0)
        return;
    timer_arm(lc->loop, &lc->beat, first, lc->interval_s);
}

struct listen_check *listen_check_new(struct ev_loop *loop, struct db *db, const char *owner,
                                      const struct listen_check_callbacks *cb)
{
    struct listen_check *lc = calloc(1, sizeof *lc);
    if (!lc)
        return NULL;
    lc->owner = strdup(owner);
    if (!lc->owner) {
        free(lc);
        return NULL;
    }
    lc->loop = loop;
    lc->db = db;
    lc->cb = *cb;
    ev_timer_init(&lc->beat, beat_cb, FIRST_BEAT_S, 0.);
    lc->beat.data = lc;
    return lc;
}

void listen_check_set_interval(struct listen_check *lc, double interval_s)
{
    if (interval_s == lc->interval_s)
        return;
    lc->interval_s = interval_s > 0 ? interval_s : 0;
    lc->outstanding = 0;
    if (lc->interval_s == 0)
        set_deaf(lc, false);
    arm(lc, FIRST_BEAT_S < lc->interval_s ? FIRST_BEAT_S : lc->interval_s);
}

void listen_check_on_connected(struct listen_check *lc)
{
    /* What was in flight went out on the old connection: judge the new one. */
    lc->outstanding = 0;
    arm(lc, FIRST_BEAT_S < lc->interval_s ? FIRST_BEAT_S : lc->interval_s);
}

void listen_check_on_disconnected(struct listen_check *lc)
{
    lc->outstanding = 0;
}

bool listen_check_on_notify(struct listen_check *lc, const char *channel, const char *payload)
{
    if (strcmp(channel, LISTEN_CHECK_CHANNEL) != 0)
        return false;
    size_t n = strlen(lc->owner);
    if (lc->outstanding == 0 || strncmp(payload, lc->owner, n) != 0 || payload[n] != ' ')
        return true; /* another instance's, or a late one */
    char *end;
    unsigned long long seq = strtoull(payload + n + 1, &end, 10);
    if (*end != '\0' || seq != lc->outstanding)
        return true;
    lc->outstanding = 0;
    if (lc->deaf && ++lc->heard_in_row < HEAR_STREAK)
        return true;
    set_deaf(lc, false);
    return true;
}

bool listen_check_deaf(const struct listen_check *lc)
{
    return lc && lc->deaf;
}

void listen_check_free(struct listen_check *lc)
{
    if (!lc)
        return;
    ev_timer_stop(lc->loop, &lc->beat);
    free(lc->owner);
    free(lc);
}
