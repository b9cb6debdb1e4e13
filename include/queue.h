/*
 * queue.h — the claim queue in the database, seen from the engine: claim the
 * due accounts of one provider, claim accounts asked for by id, ask for the
 * next due time, give claims back. It owns the SQL text of
 * oauth_refreshd.claim_due, claim_ids, next_wakeup and release and the
 * parsing of their rows (every value checked by inbound.h); answers come back
 * by callback, from the loop. What to claim and when is the engine's policy.
 */
#ifndef OAUTH_QUEUE_H
#define OAUTH_QUEUE_H

#include "common.h"
#include "refresh.h"

struct db;
struct queue;

/* What every statement is scoped by; strings are borrowed for the call only. */
struct queue_scope {
    const char *const *providers; /* names of the providers that may be claimed */
    size_t nproviders;
    int64_t lead_ms, jitter_ms, lease_ms;
    double once_since; /* --once: wall time the run started (claims nothing newer); 0: continuous */
};

/* A claim's answer. rows (claimed_at set to the wall clock) are valid during the
 * callback only: take a row's strings by moving them out (refresh_prepare does)
 * and the queue clears what is left. */
struct queue_claim {
    bool ok;         /* false: the statement failed (logged) or the connection was lost */
    size_t returned; /* rows the database returned, unreadable ones included */
    struct claimed_account *rows;
    size_t nrows; /* rows that could be read; an unreadable one's lease runs out */
};
typedef void (*queue_claim_cb)(void *ud, struct queue_claim *c);

enum queue_wakeup { QUEUE_WAKEUP_FAILED, QUEUE_WAKEUP_NONE, QUEUE_WAKEUP_AT, QUEUE_WAKEUP_BAD };
/* due: wall time of the next due account when QUEUE_WAKEUP_AT. QUEUE_WAKEUP_BAD:
 * the answer was not a number (text: what it was, for the log). */
typedef void (*queue_wakeup_cb)(void *ud, enum queue_wakeup w, double due, const char *text);
typedef void (*queue_done_cb)(void *ud);

/* db and owner (the lease owner id, copied) are the daemon's and outlive the queue. */
struct queue *queue_new(struct db *db, const char *owner) WUR;
void queue_free(struct queue *q);

/* Each returns 0 when the statement was sent (cb is then called exactly once,
 * later) and -1 when it could not be (nothing is called). */
int queue_claim_due(struct queue *q, const struct queue_scope *s, const char *provider,
                    unsigned limit, queue_claim_cb cb, void *ud) WUR;
int queue_claim_ids(struct queue *q, const struct queue_scope *s, const int64_t *ids, size_t n,
                    queue_claim_cb cb, void *ud) WUR;
int queue_next_wakeup(struct queue *q, const struct queue_scope *s, queue_wakeup_cb cb,
                      void *ud) WUR;
/* Gives claims back so that another instance may take them at once. */
int queue_release(struct queue *q, const int64_t *ids, size_t n, queue_done_cb cb, void *ud) WUR;

#endif
