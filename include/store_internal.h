/*
 * store_internal.h — the store's own state, shared by the files that make up
 * the store and by nothing else: store.c (queues, batching by size and time,
 * sending, holding while the database is away, isolating a refused result),
 * store_write.c (the write statements and their array literals),
 * store_resave.c (a compare-and-swap that failed: re-read, re-saved or
 * discarded), store_revoked.c (revoked accounts whose token the application
 * wrote) and store_idset.c (the ids of held items). The public interface is
 * store.h; nothing outside store*.c (and the store's unit test) includes this
 * header.
 */
#ifndef OAUTH_STORE_INTERNAL_H
#define OAUTH_STORE_INTERNAL_H

#include <string.h>

#include "keys.h"
#include "store.h"
#include "store_idset.h"
#include "store_split.h"
#include "store_values.h"
#include "strbuf.h"

#define STORE_MAX_BATCH     500
#define STORE_FLUSH_DELAY_S 0.002 /* gather results that finish together */
#define STORE_RETRY_DELAY_S 1.0   /* after a statement error (not a lost connection) */
#define STORE_KINDS         3
#define STORE_ARRAYS        11 /* store_refreshed's: ids and ten per-row arrays */
/* A row found re-saved with the same refresh token is written against its new
 * ciphertext at once this many times in a row; after that the application is
 * re-saving faster than we write, and the item waits STORE_RESAVE_DELAY_S
 * between tries, for as long as it takes (it carries a rotated token: it is
 * never discarded for this, see store_resaved). */
#define STORE_RESAVE_TRIES   3
#define STORE_RESAVE_DELAY_S 1.0
#define REVOKED_TAG_HEX_LEN  (KEYRING_TAG_BYTES * 2 + 1)

struct store_queue {
    struct store_item *head, *tail;
    size_t n;
};

/*
 * What a statement in flight does for its items: the write itself; the re-read
 * of the refresh token of the rows the write found changed; the release of
 * the claims of items settled as discarded (their done() waits for it, so the
 * engine is told only once the account is claimable again).
 */
enum batch_step { STEP_WRITE, STEP_REREAD, STEP_SETTLE };

struct store_batch {
    struct store *st;
    enum store_kind kind;
    enum batch_step step;
    struct store_queue items;
    size_t suspects;                 /* how many of items are suspects (store_split.h) */
    struct store_batch *prev, *next; /* in st->inflight */
};

struct store {
    struct ev_loop *loop;
    struct db *db;
    char *owner;
    struct store_callbacks cb;
    int64_t lead_ms;
    struct store_queue queued[STORE_KINDS];
    struct store_batch *inflight;
    size_t inflight_items;
    unsigned inflight_batches[STORE_KINDS];
    struct store_idset pending_ids; /* account ids of every item the store holds */
    ev_timer flush_timer;
    struct store_queue resaved; /* waiting STORE_RESAVE_DELAY_S (both kinds) */
    ev_timer resaved_timer;
    struct spool *spool;        /* not owned */
    struct keyring *keys;       /* reference: tags the spool, decrypts re-saved rows' tokens */
    ev_timer revcheck_timer;    /* the next look, coalescing requests for one */
    bool revcheck_busy;         /* a look at revoked_token_changes() is in flight */
    bool revcheck_again;        /* asked for another look meanwhile */
    size_t revcheck_lifted;     /* revocations the verdict in flight lifts */
    struct store_limits limits; /* of the application's columns; 0 = unbounded */
    bool limits_pending;        /* asked at connect: refreshed results wait for the answer */
    /* Isolation of a result the database refuses (batch_isolate), per queue. */
    struct store_split split[STORE_KINDS];
    /* The array literals of the batch being built: kept between batches so a
     * batch of 500 results (about 1.5 MB of ciphertext) does not grow nine
     * buffers by doubling, copying each time, on every send. Ciphertext only. */
    struct strbuf arr[STORE_ARRAYS];
};

static inline void store_queue_push_back(struct store_queue *q, struct store_item *it)
{
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->n++;
}

/* Puts a whole list back in front of q, keeping its order. */
static inline void store_queue_push_front_list(struct store_queue *q, struct store_queue *list)
{
    if (!list->head)
        return;
    list->tail->next = q->head;
    if (!q->tail)
        q->tail = list->tail;
    q->head = list->head;
    q->n += list->n;
    memset(list, 0, sizeof *list);
}

/* Takes up to max items from the front of q. */
static inline struct store_queue store_queue_take(struct store_queue *q, size_t max)
{
    struct store_queue out = {0};
    while (q->head && out.n < max) {
        struct store_item *it = q->head;
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
        store_queue_push_back(&out, it);
    }
    return out;
}

/* store.c */
/* Hands a settled item to the callback, releases its spool entry, frees it. */
void store_item_settle(struct store *st, struct store_item *it, enum store_fate fate);
/* The callback of every statement of a batch (ud is the batch). */
void store_batch_done_cb(void *ud, PGresult *res);
/* A batch was sent: it is owned by its callback until the answer. */
void store_inflight_link(struct store *st, struct store_batch *b);
/* Sends one statement of `step` for items (taken over); items that cannot be
 * sent go back to the front of their queue. */
void store_step_send(struct store *st, enum store_kind kind, enum batch_step step,
                     struct store_queue *items, const char *sql, int nparams,
                     const char *const *params, bool oom);

/* store_write.c: builds the array literals of batch b into arr (STORE_ARRAYS
 * of them, *narr used) and the lead interval; returns the statement text. */
const char *store_write_statement(struct store *st, const struct store_batch *b, struct strbuf *arr,
                                  size_t *narr, char *interval, size_t interval_len);

/* store_resave.c: the answers of a write and of a re-read (b stays the caller's). */
void store_resave_write_done(struct store *st, struct store_batch *b, PGresult *res);
void store_resave_reread_done(struct store *st, struct store_batch *b, PGresult *res);
/* The fate of an item whose row holds another token: discarded, or a lost race. */
enum store_fate store_resave_settled_fate(enum store_kind kind);

/* store_revoked.c */
void store_revoked_init(struct store *st);
/* The keyed fingerprint (hex) of the refresh token inside ct; false when ct
 * cannot be decrypted. */
bool store_revoked_tag_hex(const struct keyring *kr, const char *ct, char hex[REVOKED_TAG_HEX_LEN]);

#endif
