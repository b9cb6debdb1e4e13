/*
 * store.c — batches refresh results into set-based writes (see store.h).
 * It owns every item from store_add() until its done() callback: queued
 * items wait per kind; a sent batch stays owned until the database confirms
 * it; a batch whose connection died goes back to the front of its queue and
 * is sent again after reconnection. It never decides what a result means,
 * but it does decide whether the row still holds the refresh token that was
 * used: when the compare-and-swap on the ciphertext fails it reads the row's
 * ciphertext again and compares plaintexts (store_resaved and what follows).
 *
 * One bad value never holds the others back: values are checked against the
 * columns' real limits before they enter a batch (store_values.h), and a
 * batch the database still refuses for its data (SQLSTATE class 22/23) is
 * written in halves until the result at fault stands alone; that one is then
 * demoted (a partial result keeps a rotated refresh token) or, as a last
 * resort, failed with the database's code and its rotated token kept aside in
 * the spool directory (*.bad) for the operator.
 */
#include "store.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inttypes.h>

#include "keys.h"
#include "log.h"
#include "secret.h"
#include "spool.h"
#include "store_split.h"
#include "store_values.h"
#include "stored_token.h"
#include "strbuf.h"
#include "timeutil.h"

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
/* The keyed fingerprint of a revoked refresh token (see revoked_token_tag in
 * sql/oauth-refreshd.sql): hex of keyring_tag() under this personalisation. */
static const char REVOKED_TAG_PERSONAL[KEYRING_TAG_PERSONAL_BYTES] = {
    'o', 'a', 'u', 't', 'h', 'r', 'd', '-', 'r', 'e', 'v', 't', 'o', 'k', '-', '1'};
#define REVOKED_TAG_HEX_LEN (KEYRING_TAG_BYTES * 2 + 1)
#define REVOKED_CHECK_LIMIT "500"
/* Looks at revoked accounts' changes at most this often: every application
 * write notifies, and a burst of them needs one look, not one per write. */
#define REVOKED_CHECK_DELAY_S 0.1

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

/*
 * A multiset of account ids (open addressing, linear probing, deletion by
 * backward shift): store_has_account() is asked once per claimed account, and
 * walking every held item made a claim of 500 cost 500 x (items held).
 */
struct idset {
    int64_t *key;
    uint32_t *count; /* 0 = empty slot */
    size_t cap, used;
};

static size_t idset_slot(const struct idset *s, int64_t id)
{
    uint64_t x = (uint64_t)id;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (s->cap - 1);
}

static bool idset_grow(struct idset *s)
{
    size_t ncap = s->cap ? s->cap * 2 : 1024;
    struct idset n = {
        .key = calloc(ncap, sizeof *n.key), .count = calloc(ncap, sizeof *n.count), .cap = ncap};
    if (!n.key || !n.count) {
        free(n.key);
        free(n.count);
        return false;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->count[i])
            continue;
        size_t j = idset_slot(&n, s->key[i]);
        while (n.count[j])
            j = (j + 1) & (ncap - 1);
        n.key[j] = s->key[i];
        n.count[j] = s->count[i];
        n.used++;
    }
    free(s->key);
    free(s->count);
    *s = n;
    return true;
}

/* On OOM the id is not recorded: store_has_account() then says no, which is what
 * it said before the store held the item (the lease still protects the account). */
static void idset_add(struct idset *s, int64_t id)
{
    if ((s->used + 1) * 2 > s->cap && !idset_grow(s))
        return;
    size_t i = idset_slot(s, id);
    while (s->count[i] && s->key[i] != id)
        i = (i + 1) & (s->cap - 1);
    if (!s->count[i]) {
        s->key[i] = id;
        s->used++;
    }
    s->count[i]++;
}

static bool idset_find(const struct idset *s, int64_t id, size_t *at)
{
    if (!s->cap)
        return false;
    size_t i = idset_slot(s, id);
    while (s->count[i]) {
        if (s->key[i] == id) {
            *at = i;
            return true;
        }
        i = (i + 1) & (s->cap - 1);
    }
    return false;
}

static void idset_remove(struct idset *s, int64_t id)
{
    size_t i;
    if (!idset_find(s, id, &i))
        return;
    if (--s->count[i])
        return;
    s->used--;
    /* Backward shift: move later members of the probe run into the hole. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & (s->cap - 1);
        if (!s->count[j])
            break;
        size_t home = idset_slot(s, s->key[j]);
        bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            s->key[i] = s->key[j];
            s->count[i] = s->count[j];
            s->count[j] = 0;
            i = j;
        }
    }
}

static void idset_free(struct idset *s)
{
    free(s->key);
    free(s->count);
    memset(s, 0, sizeof *s);
}

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
    struct idset pending_ids; /* account ids of every item the store holds */
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

void store_item_free(struct store_item *item)
{
    if (!item)
        return;
    free(item->old_refresh_ct);
    free(item->access_ct);
    free(item->refresh_ct);
    free(item->id_token_ct);
    free(item->scope);
    free(item->token_type);
    free(item);
}

static void queue_push_back(struct store_queue *q, struct store_item *it)
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
static void queue_push_front_list(struct store_queue *q, struct store_queue *list)
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

static struct store_queue queue_take(struct store_queue *q, size_t max)
{
    struct store_queue out = {0};
    while (q->head && out.n < max) {
        struct store_item *it = q->head;
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
        queue_push_back(&out, it);
    }
    return out;
}

static void flush_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    store_flush(w->data);
}

/* The items that waited after many re-saves go back, ahead of newer ones. */
static void resaved_requeue(struct store *st)
{
    struct store_queue back[STORE_KINDS] = {{0}};
    struct store_queue all = queue_take(&st->resaved, SIZE_MAX);
    while (all.head) {
        struct store_queue one = queue_take(&all, 1);
        queue_push_back(&back[one.head->kind], one.head);
    }
    for (int k = 0; k < STORE_KINDS; k++)
        queue_push_front_list(&st->queued[k], &back[k]);
}

static void resaved_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    resaved_requeue(w->data);
    store_flush(w->data);
}

static void revcheck_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

struct store *store_new(struct ev_loop *loop, struct db *db, const char *owner,
                        const struct store_callbacks *cb)
{
    struct store *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->owner = strdup(owner);
    if (!st->owner) {
        free(st);
        return NULL;
    }
    st->loop = loop;
    st->db = db;
    st->cb = *cb;
    st->lead_ms = 5 * 60 * 1000;
    for (int k = 0; k < STORE_KINDS; k++)
        store_split_init(&st->split[k], STORE_MAX_BATCH);
    ev_timer_init(&st->flush_timer, flush_timer_cb, STORE_FLUSH_DELAY_S, 0.);
    st->flush_timer.data = st;
    ev_timer_init(&st->resaved_timer, resaved_timer_cb, STORE_RESAVE_DELAY_S, 0.);
    st->resaved_timer.data = st;
    ev_timer_init(&st->revcheck_timer, revcheck_timer_cb, REVOKED_CHECK_DELAY_S, 0.);
    st->revcheck_timer.data = st;
    return st;
}

void store_set_lead(struct store *st, int64_t lead_ms)
{
    st->lead_ms = lead_ms;
}

static void item_log_ctx(const struct store_item *it, struct log_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->account_id = it->account_id;
    ctx->provider = provider_id_name(it->provider);
    ctx->error = it->error;
    ctx->token_fp = it->token_fp;
    ctx->new_token_fp = it->new_token_fp;
}

/*
 * The database will never take item as it is (code says why): demote it
 * (store_values.h). A rotated refresh token that cannot be written at all is
 * first kept aside in the spool directory. Returns the demotion.
 */
static enum store_demotion item_demote(struct store *st, struct store_item *it, const char *code)
{
    enum store_demotion d = store_item_demotion(it, code);
    if (d == STORE_DEMOTED_FAILED && it->kind == STORE_REFRESHED && it->rotated && it->refresh_ct) {
        char path[4300] = "", err[ERRBUF_LEN] = "";
        bool kept =
            st->spool && st->keys &&
            spool_set_aside(st->spool, st->keys, it, path, sizeof path, err, sizeof err) == 0;
        log_event(LOG_ERR, NULL, NULL,
                  "account %" PRId64 ": the database refuses the rotated refresh token (%s); %s%s",
                  it->account_id, code,
                  kept ? "it is kept aside for the operator in " : "it could not be kept aside: ",
                  kept ? path : (err[0] ? err : "no spool"));
    }
    const char *before = store_item_is_partial(it) ? "partial result" : "result";
    d = store_item_demote(it, code, time_now_wall());
    struct log_ctx ctx;
    item_log_ctx(it, &ctx);
    if (d == STORE_DEMOTED_PARTIAL)
        log_event(LOG_WARNING, NULL, &ctx,
                  "account %" PRId64 ": %s: only the rotated refresh token is written, the "
                  "attempt counts as failed",
                  it->account_id, code);
    else if (d == STORE_DEMOTED_FAILED)
        log_event(LOG_WARNING, NULL, &ctx,
                  "account %" PRId64 ": %s: the %s is not written, the attempt counts as failed",
                  it->account_id, code, before);
    return d;
}

/* Checks a refreshed result against the column limits before it enters a
 * batch; returns the queue it belongs in now. */
static enum store_kind item_admit(struct store *st, struct store_item *it)
{
    const char *code = store_values_check(&st->limits, it);
    if (code)
        item_demote(st, it, code);
    return it->kind;
}

/* The limits arrived: what waits is checked against them too. */
static void admit_queued(struct store *st)
{
    struct store_queue *q = &st->queued[STORE_REFRESHED];
    struct store_queue keep = {0};
    struct store_item *it = q->head;
    memset(q, 0, sizeof *q);
    while (it) {
        struct store_item *next = it->next;
        enum store_kind k = item_admit(st, it);
        queue_push_back(k == STORE_REFRESHED ? &keep : &st->queued[k], it);
        it = next;
    }
    *q = keep;
}

static void limits_done_cb(void *ud, PGresult *res)
{
    struct store *st = ud;
    if (!res)
        return; /* asked again at the next connection; st->limits_pending stays */
    st->limits_pending = false;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[ERRBUF_LEN];
        db_result_reason(msg, sizeof msg, res);
        log_warning("store: cannot read the limits of oauth_accounts' columns (%s); values "
                    "that do not fit are found by the database instead",
                    msg);
    } else {
        struct store_limits lim = {0};
        for (int r = 0; r < PQntuples(res); r++)
            if (!PQgetisnull(res, r, 1))
                store_limits_set(&lim, PQgetvalue(res, r, 0),
                                 strtoll(PQgetvalue(res, r, 1), NULL, 10));
        st->limits = lim;
        log_debug("store: column limits: access_token %" PRId64 ", refresh_token %" PRId64
                  ", id_token %" PRId64 ", scope %" PRId64 ", token_type %" PRId64 " (0 = none)",
                  lim.access_token, lim.refresh_token, lim.id_token, lim.scope, lim.token_type);
    }
    admit_queued(st);
    store_flush(st);
}

void store_on_connected(struct store *st)
{
    /* Not asked (no connection after all): nothing to wait for. */
    st->limits_pending = db_query(st->db, STORE_LIMITS_SQL, 0, NULL, limits_done_cb, st) == 0;
}

void store_set_spool(struct store *st, struct spool *sp, struct keyring *kr)
{
    struct keyring *old = st->keys;
    st->spool = sp;
    st->keys = kr ? keyring_ref(kr) : NULL;
    if (old)
        keyring_unref(old);
}

bool store_has_account(const struct store *st, int64_t account_id)
{
    size_t at;
    return idset_find(&st->pending_ids, account_id, &at);
}

/*
 * Makes every queued rotated result durable before anything else happens to
 * it: one segment (one fsync) for all of them. A failure is loud but does not
 * stop the write to the database, which is the other way to keep the token.
 */
static void spool_queued(struct store *st)
{
    if (!st->spool || !st->keys)
        return;
    struct store_queue *q = &st->queued[STORE_REFRESHED];
    size_t n = 0;
    for (struct store_item *it = q->head; it; it = it->next)
        n += it->rotated && it->spool_id == 0;
    if (n == 0)
        return;
    struct store_item **items = malloc(n * sizeof *items);
    if (!items) {
        log_err("store: out of memory spooling %zu rotated results", n);
        return;
    }
    size_t i = 0;
    for (struct store_item *it = q->head; it; it = it->next)
        if (it->rotated && it->spool_id == 0)
            items[i++] = it;
    char err[ERRBUF_LEN];
    if (spool_write(st->spool, st->keys, items, n, err, sizeof err) < 0)
        log_err("store: %zu rotated refresh tokens could not be made durable: %s", n, err);
    free(items);
}

static void arm_flush(struct store *st, double delay)
{
    if (ev_is_active(&st->flush_timer))
        return;
    timer_set(&st->flush_timer, delay, 0.);
    ev_timer_start(st->loop, &st->flush_timer);
}

static void send_batch(struct store *st, enum store_kind kind);

void store_add(struct store *st, struct store_item *item)
{
    struct store_queue *q = &st->queued[item_admit(st, item)];
    idset_add(&st->pending_ids, item->account_id);
    queue_push_back(q, item);
    if (q->n >= STORE_MAX_BATCH)
        send_batch(st, item->kind);
    if (q->n > 0)
        arm_flush(st, STORE_FLUSH_DELAY_S); /* also spools while the database is away */
}

void store_flush(struct store *st)
{
    if (ev_is_active(&st->flush_timer))
        ev_timer_stop(st->loop, &st->flush_timer);
    spool_queued(st);
    for (int k = 0; k < STORE_KINDS; k++)
        while (st->queued[k].n > 0 && db_is_connected(st->db)) {
            /* While a batch of this kind is being written, let the next one fill
             * up (it is sent when that one is done): one statement for many rows
             * costs the database far less than many statements for few. */
            if (st->inflight_batches[k] > 0 &&
                (st->queued[k].n < STORE_MAX_BATCH || st->split[k].suspects > 0))
                break;
            size_t before = st->queued[k].n;
            send_batch(st, (enum store_kind)k);
            if (st->queued[k].n >= before)
                break; /* could not send: keep it held */
        }
}

size_t store_pending(const struct store *st)
{
    size_t n = st->inflight_items + st->resaved.n;
    for (int k = 0; k < STORE_KINDS; k++)
        n += st->queued[k].n;
    return n;
}

static void interval_param(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%.3f seconds", (double)ms / 1000.0);
}

static void time_array(struct strbuf *sb, double t)
{
    char iso[ISO8601_LEN];
    time_format_iso8601(t, true, iso);
    pgarray_text(sb, iso);
}

static bool revoked_tag_hex(const struct keyring *kr, const char *ct,
                            char hex[REVOKED_TAG_HEX_LEN]);

/* Builds the arrays of one batch; returns the statement text. */
static const char *build_params(struct store *st, struct store_batch *b, struct strbuf *arr,
                                size_t *narr, char *interval, size_t interval_len)
{
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        pgarray_begin(&arr[i]);
    for (struct store_item *it = b->items.head; it; it = it->next) {
        pgarray_int64(&arr[0], it->account_id);
        switch (b->kind) {
        case STORE_REFRESHED:
            pgarray_text(&arr[1], it->old_refresh_ct);
            pgarray_text(&arr[2], it->access_ct);
            pgarray_text(&arr[3], it->refresh_ct);
            pgarray_text(&arr[4], it->id_token_ct);
            if (store_item_is_partial(it)) {
                pgarray_text(&arr[5], NULL); /* keep the stored expiry */
                pgarray_text(&arr[8], it->error);
                time_array(&arr[9], it->retry_at);
                pgarray_text(&arr[10], it->detail);
            } else {
                time_array(&arr[5], it->expires_at);
                pgarray_text(&arr[8], NULL);
                pgarray_text(&arr[9], NULL);
                pgarray_text(&arr[10], NULL);
            }
            pgarray_text(&arr[6], it->scope);
            pgarray_text(&arr[7], it->token_type);
            break;
        case STORE_FAILED:
            pgarray_text(&arr[1], it->error);
            time_array(&arr[2], it->retry_at);
            pgarray_text(&arr[3], it->detail);
            break;
        case STORE_REVOKED: {
            char tag[REVOKED_TAG_HEX_LEN];
            pgarray_text(&arr[1], it->old_refresh_ct);
            pgarray_text(&arr[2], it->error);
            pgarray_text(&arr[3], revoked_tag_hex(st->keys, it->old_refresh_ct, tag) ? tag : NULL);
            pgarray_text(&arr[4], it->detail);
            break;
        }
        }
    }
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        pgarray_end(&arr[i]);
    interval_param(interval, interval_len, st->lead_ms);
    switch (b->kind) {
    case STORE_REFRESHED:
        *narr = 11;
        return "SELECT account_id, stored FROM oauth_refreshd.store_refreshed($1, $2::bigint[], "
               "$3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], "
               "$9::text[], $13::interval, $10::text[], $11::timestamptz[], $12::text[])";
    case STORE_FAILED:
        *narr = 4;
        return "SELECT oauth_refreshd.store_failed($1, $2::bigint[], $3::text[], "
               "$4::timestamptz[], $6::interval, $5::text[])";
    case STORE_REVOKED:
        *narr = 5;
        return "SELECT account_id, revoked FROM oauth_refreshd.store_revoked($1, $2::bigint[], "
               "$3::text[], $4::text[], $5::text[], $6::text[])";
    }
    return NULL;
}

static void inflight_unlink(struct store *st, struct store_batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        st->inflight = b->next;
    if (b->next)
        b->next->prev = b->prev;
    st->inflight_items -= b->items.n;
    st->inflight_batches[b->kind]--;
}

static void batch_hold(struct store *st, struct store_batch *b, double delay)
{
    store_split_returned(&st->split[b->kind], b->suspects); /* back at the front */
    queue_push_front_list(&st->queued[b->kind], &b->items);
    free(b);
    if (delay > 0)
        arm_flush(st, delay);
}

static void inflight_link(struct store *st, struct store_batch *b)
{
    b->prev = NULL;
    b->next = st->inflight;
    if (st->inflight)
        st->inflight->prev = b;
    st->inflight = b;
    st->inflight_items += b->items.n;
    st->inflight_batches[b->kind]++;
}

static void batch_done_cb(void *ud, PGresult *res);

static void item_settle(struct store *st, struct store_item *it, enum store_fate fate);

/* One bigint[] literal of the items' account ids. */
static void ids_array(struct strbuf *sb, const struct store_queue *items)
{
    pgarray_begin(sb);
    for (const struct store_item *it = items->head; it; it = it->next)
        pgarray_int64(sb, it->account_id);
    pgarray_end(sb);
}

/*
 * Sends one statement of step `step` for items (taken over). When it cannot be
 * sent, the items go back to the front of their queue: a write or a re-read is
 * simply written again later (it ends here again if the row still differs).
 */
static void step_send(struct store *st, enum store_kind kind, enum batch_step step,
                      struct store_queue *items, const char *sql, int nparams,
                      const char *const *params, bool oom)
{
    struct store_batch *b = oom ? NULL : calloc(1, sizeof *b);
    if (!b) {
        queue_push_front_list(&st->queued[kind], items);
        arm_flush(st, STORE_RETRY_DELAY_S);
        return;
    }
    b->st = st;
    b->kind = kind;
    b->step = step;
    b->items = *items;
    memset(items, 0, sizeof *items);
    if (db_query(st->db, sql, nparams, params, batch_done_cb, b) < 0) {
        batch_hold(st, b, 0);
        return;
    }
    inflight_link(st, b);
}

/*
 * The write found these rows changed: read the refresh token ciphertext they
 * hold now, in one statement for all of them (store_resaved decides).
 */
static void reread_send(struct store *st, enum store_kind kind, struct store_queue *items)
{
    struct strbuf ids = {0};
    ids_array(&ids, items);
    const char *params[] = {ids.data};
    step_send(st, kind, STEP_REREAD, items,
              "SELECT account_id, refresh_token "
              "FROM oauth_refreshd.current_refresh_tokens($1::bigint[])",
              1, params, ids.oom);
    strbuf_free(&ids);
}

static enum store_fate settled_fate(enum store_kind kind)
{
    return kind == STORE_REFRESHED ? STORE_DISCARDED : STORE_LOST_RACE;
}

/*
 * These items are discarded (or were a lost race): give their claims back, and
 * report them once that is done, so the engine may claim them again at once.
 * If the release cannot be sent, the leases run out by themselves.
 */
static void settle_send(struct store *st, enum store_kind kind, struct store_queue *items)
{
    struct strbuf ids = {0};
    ids_array(&ids, items);
    const char *params[] = {st->owner, ids.data};
    struct store_batch *b = ids.oom ? NULL : calloc(1, sizeof *b);
    if (b) {
        *b = (struct store_batch){.st = st, .kind = kind, .step = STEP_SETTLE, .items = *items};
        if (db_query(st->db, "SELECT oauth_refreshd.release($1, $2::bigint[])", 2, params,
                     batch_done_cb, b) == 0) {
            inflight_link(st, b);
            memset(items, 0, sizeof *items);
        } else {
            free(b);
        }
    }
    strbuf_free(&ids);
    while (items->head) /* not sent: settled now */
        item_settle(st, queue_take(items, 1).head, settled_fate(kind));
}

/*
 * Whether two refresh token ciphertexts hold the same token: both are
 * decrypted (any key of the ring) and the plaintexts compared in constant
 * time, then wiped. Anything that cannot be decrypted, or a missing token,
 * counts as different: the application's value then wins, as the rule says.
 */
static bool same_token(const struct keyring *kr, const char *a, const char *b)
{
    if (!kr || !a || !b)
        return false;
    struct secret pa = {0}, pb = {0};
    char err[ERRBUF_LEN];
    bool same = stored_token_decrypt(kr, a, strlen(a), &pa, NULL, err, sizeof err) == 0 &&
                stored_token_decrypt(kr, b, strlen(b), &pb, NULL, err, sizeof err) == 0 &&
                pa.len == pb.len && (pa.len == 0 || sodium_memcmp(pa.data, pb.data, pa.len) == 0);
    secret_clear(&pa);
    secret_clear(&pb);
    return same;
}

/*
 * The keyed fingerprint of the refresh token inside ct (hex, NUL-terminated):
 * what store_revoked() keeps of a refused token, so that a later write of the
 * same token by the application can be told from a new one without keeping
 * the token. False when ct cannot be decrypted.
 */
static bool revoked_tag_hex(const struct keyring *kr, const char *ct, char hex[REVOKED_TAG_HEX_LEN])
{
    struct secret plain = {0};
    uint8_t tag[KEYRING_TAG_BYTES];
    char err[ERRBUF_LEN];
    bool ok = kr && ct &&
              stored_token_decrypt(kr, ct, strlen(ct), &plain, NULL, err, sizeof err) == 0 &&
              keyring_tag(kr, REVOKED_TAG_PERSONAL, plain.data, plain.len, tag) == 0;
    secret_clear(&plain);
    if (ok)
        sodium_bin2hex(hex, REVOKED_TAG_HEX_LEN, tag, sizeof tag);
    return ok;
}

static bool revoked_token_readable(const struct keyring *kr, const char *ct)
{
    struct secret plain = {0};
    char err[ERRBUF_LEN];
    bool ok = kr && stored_token_decrypt(kr, ct, strlen(ct), &plain, NULL, err, sizeof err) == 0;
    secret_clear(&plain);
    return ok;
}

/* Whether the token inside ct is the one fingerprinted as tag_hex (any key of
 * the ring: a reload may have demoted the key the fingerprint was made with). */
static bool revoked_tag_matches(const struct keyring *kr, const char *ct, const char *tag_hex)
{
    uint8_t tag[KEYRING_TAG_BYTES];
    size_t n = 0;
    if (!kr || !ct || !tag_hex ||
        sodium_hex2bin(tag, sizeof tag, tag_hex, strlen(tag_hex), NULL, &n, NULL) != 0 ||
        n != sizeof tag)
        return false;
    struct secret plain = {0};
    char err[ERRBUF_LEN];
    bool same = stored_token_decrypt(kr, ct, strlen(ct), &plain, NULL, err, sizeof err) == 0 &&
                keyring_tag_verify(kr, REVOKED_TAG_PERSONAL, plain.data, plain.len, tag, NULL);
    secret_clear(&plain);
    return same;
}

/*
 * The row holds a new ciphertext of the same refresh token: the application
 * re-saved it (Django re-encrypts every field on save()), it did not change
 * it, so the result is written again, compared with the new ciphertext
 * (SPEC §6). The application may re-save again meanwhile: after
 * STORE_RESAVE_TRIES writes in a row the item waits STORE_RESAVE_DELAY_S and
 * tries again, for as long as it takes. It is never discarded for this: a
 * rotated token has only this copy (and the spool's), and the provider has
 * already consumed the token the row holds; a result given up here would leave
 * the account with a dead token. Returns true when it goes out again at once.
 */
static bool store_resaved(struct store *st, struct store_item *it, const char *current)
{
    char *dup = strdup(current);
    if (dup) { /* on OOM the write fails again and the item comes back here */
        free(it->old_refresh_ct);
        it->old_refresh_ct = dup;
    }
    if (++it->resaves % STORE_RESAVE_TRIES != 0)
        return true;
    struct log_ctx ctx = {.account_id = it->account_id,
                          .provider = provider_id_name(it->provider),
                          .error = "resaved_meanwhile"};
    log_event(LOG_WARNING, NULL, &ctx,
              "account %" PRId64 ": the application re-saved the row %u times (the same refresh "
              "token, new ciphertexts) while the %s was being written; it is kept and written "
              "again in %.0f s",
              it->account_id, it->resaves,
              it->kind == STORE_REFRESHED ? "refreshed result" : "revocation",
              STORE_RESAVE_DELAY_S);
    queue_push_back(&st->resaved, it);
    if (!ev_is_active(&st->resaved_timer)) {
        timer_set(&st->resaved_timer, STORE_RESAVE_DELAY_S, 0.);
        ev_timer_start(st->loop, &st->resaved_timer);
    }
    return false;
}

static void write_done(struct store *st, struct store_batch *b, PGresult *res)
{
    /* Column 1 says whether each row was written; rows come back in input
     * order (ids are matched defensively anyway). */
    int rows = PQntuples(res);
    int row = 0;
    struct store_queue changed = {0};
    struct store_queue items = b->items;
    while (items.head) {
        struct store_item *it = queue_take(&items, 1).head;
        bool written = true;
        if (b->kind != STORE_FAILED) {
            written = row < rows && strtoll(PQgetvalue(res, row, 0), NULL, 10) == it->account_id &&
                      PQgetvalue(res, row, 1)[0] == 't';
            row++;
        }
        if (written)
            item_settle(st, it, STORE_WRITTEN);
        else
            queue_push_back(&changed, it);
    }
    if (changed.n > 0)
        reread_send(st, b->kind, &changed);
}

/* Each changed row's current ciphertext: the same token, or a different one. */
static void reread_done(struct store *st, struct store_batch *b, PGresult *res)
{
    int rows = PQntuples(res);
    int row = 0;
    struct store_queue again = {0}, settle = {0};
    struct store_queue items = b->items;
    while (items.head) {
        struct store_item *it = queue_take(&items, 1).head;
        const char *current = NULL;
        if (row < rows && strtoll(PQgetvalue(res, row, 0), NULL, 10) == it->account_id &&
            !PQgetisnull(res, row, 1))
            current = PQgetvalue(res, row, 1);
        row++;
        if (!same_token(st->keys, it->old_refresh_ct, current))
            queue_push_back(&settle, it);
        else if (store_resaved(st, it, current))
            queue_push_back(&again, it);
    }
    queue_push_front_list(&st->queued[b->kind], &again);
    if (settle.n > 0)
        settle_send(st, b->kind, &settle);
}

/* Hands a settled item to the callback, releases its spool entry, frees it. */
static void item_settle(struct store *st, struct store_item *it, enum store_fate fate)
{
    idset_remove(&st->pending_ids, it->account_id);
    /* A partial result that was written is, for everyone but the database, the
     * failed attempt it also is. */
    if (fate == STORE_WRITTEN && store_item_is_partial(it))
        it->kind = STORE_FAILED;
    st->cb.done(st->cb.ud, it, fate);
    if (it->spool_id && st->spool)
        spool_release(st->spool, it->spool_id);
    store_item_free(it);
}

/*
 * The batch failed on the data of some row (SQLSTATE class 22/23): write it
 * in halves; a batch of one is the result at fault, which is demoted (or, if
 * nothing less can be written, settled unwritten) so the queue moves on.
 */
static void batch_isolate(struct store *st, struct store_batch *b, const char *sqlstate,
                          PGresult *res)
{
    enum store_kind kind = b->kind;
    char msg[ERRBUF_LEN];
    db_result_reason(msg, sizeof msg, res);
    if (b->items.n > 1) {
        log_event(LOG_WARNING, NULL, NULL,
                  "store: the database refuses a batch of %zu results (SQLSTATE %s: %s); "
                  "writing it in halves to find the result at fault",
                  b->items.n, sqlstate, msg);
        store_split_refused(&st->split[kind], b->items.n);
        b->suspects = 0; /* counted by store_split_refused */
        batch_hold(st, b, 0);
        arm_flush(st, 0);
        return;
    }
    struct store_item *it = b->items.head;
    free(b);
    store_split_found(&st->split[kind]);
    char code[16];
    snprintf(code, sizeof code, "db_%.5s", sqlstate);
    log_event(LOG_ERR, NULL, NULL, "store: account %" PRId64 ": the database refuses its %s (%s)",
              it->account_id, kind == STORE_FAILED ? "failure record" : "result", msg);
    it->next = NULL;
    if (item_demote(st, it, code) == STORE_DEMOTED_NONE) {
        item_settle(st, it, STORE_DISCARDED);
    } else {
        /* Written again on its own first, before anything else of its kind. */
        struct store_queue one = {.head = it, .tail = it, .n = 1};
        store_split_requeue_alone(&st->split[it->kind]);
        queue_push_front_list(&st->queued[it->kind], &one);
    }
    arm_flush(st, 0);
}

static void batch_done_cb(void *ud, PGresult *res)
{
    struct store_batch *b = ud;
    struct store *st = b->st;
    enum store_kind kind = b->kind;
    inflight_unlink(st, b);

    if (b->step == STEP_SETTLE && res) {
        /* Whatever the release's fate (a lease left runs out by itself). A
         * lost connection (also db_free at exit) holds them instead: nothing
         * is reported from a teardown, the spool keeps the entries, and the
         * write after the reconnection (or the replay) decides again. */
        while (b->items.head)
            item_settle(st, queue_take(&b->items, 1).head, settled_fate(kind));
        free(b);
    } else if (!res) {
        /* Connection lost: the transaction did not commit (or we cannot know; the
         * compare-and-swap makes a second write of the same result harmless). */
        log_debug("store: batch of %zu held until the database is back", b->items.n);
        batch_hold(st, b, 0);
        return;
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (b->step == STEP_WRITE && store_sqlstate_is_data_error(sqlstate)) {
            batch_isolate(st, b, sqlstate, res);
            return;
        }
        char why[ERRBUF_LEN];
        log_event(LOG_ERR, NULL, NULL, "store: %s %zu results failed, retrying: %s",
                  b->step == STEP_WRITE ? "writing" : "re-reading the rows of", b->items.n,
                  db_result_reason(why, sizeof why, res));
        batch_hold(st, b, STORE_RETRY_DELAY_S);
        return;
    } else {
        if (b->step == STEP_WRITE)
            write_done(st, b, res);
        else
            reread_done(st, b, res);
        free(b);
    }
    if (st->queued[kind].n > 0)
        arm_flush(st, 0); /* what gathered while this batch was being written */
}

static void send_batch(struct store *st, enum store_kind kind)
{
    if (!db_is_connected(st->db))
        return;
    if (kind == STORE_REFRESHED) {
        if (st->limits_pending)
            return; /* store_on_connected()'s answer comes first (limits_done_cb) */
        spool_queued(st);
    }
    /* While isolating a refused result: one batch at a time, sent when that one is done. */
    size_t take =
        store_split_take(&st->split[kind], st->queued[kind].n, st->inflight_batches[kind]);
    if (take == 0)
        return;
    struct store_batch *b = calloc(1, sizeof *b);
    if (!b)
        return;
    b->st = st;
    b->kind = kind;
    b->items = queue_take(&st->queued[kind], take);
    b->suspects = store_split_taken(&st->split[kind], b->items.n);

    struct strbuf *arr = st->arr;
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        strbuf_reset(&arr[i]);
    char interval[48];
    size_t narr = 0;
    const char *sql = build_params(st, b, arr, &narr, interval, sizeof interval);
    bool oom = false;
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        oom |= arr[i].oom;

    const char *params[STORE_ARRAYS + 2];
    int nparams = 0;
    params[nparams++] = st->owner;
    for (size_t i = 0; i < narr; i++)
        params[nparams++] = arr[i].data;
    if (kind != STORE_REVOKED)
        params[nparams++] = interval;

    int rc = oom ? -1 : db_query(st->db, sql, nparams, params, batch_done_cb, b);
    if (oom)
        for (size_t i = 0; i < STORE_ARRAYS; i++)
            strbuf_free(&arr[i]); /* start afresh after an allocation failure */
    if (rc < 0) {
        batch_hold(st, b, oom ? STORE_RETRY_DELAY_S : 0);
        return;
    }
    inflight_link(st, b);
}

struct store_item *store_take_all(struct store *st)
{
    struct store_queue all = {0};
    if (ev_is_active(&st->resaved_timer))
        ev_timer_stop(st->loop, &st->resaved_timer);
    resaved_requeue(st);
    for (int k = 0; k < STORE_KINDS; k++) {
        struct store_queue q = queue_take(&st->queued[k], SIZE_MAX);
        for (struct store_item *it = q.head; it; it = it->next)
            idset_remove(&st->pending_ids, it->account_id);
        store_split_init(&st->split[k], STORE_MAX_BATCH);
        queue_push_front_list(&all, &q);
    }
    /* In-flight batches stay owned by their callbacks (db_free fails them with
     * NULL, which puts them back in the queue); take those afterwards. */
    return all.head;
}

void store_free(struct store *st)
{
    if (!st)
        return;
    if (ev_is_active(&st->flush_timer))
        ev_timer_stop(st->loop, &st->flush_timer);
    if (ev_is_active(&st->resaved_timer))
        ev_timer_stop(st->loop, &st->resaved_timer);
    if (ev_is_active(&st->revcheck_timer))
        ev_timer_stop(st->loop, &st->revcheck_timer);
    queue_push_front_list(&st->queued[STORE_REFRESHED], &st->resaved); /* freed below */
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        strbuf_free(&st->arr[i]);
    for (int k = 0; k < STORE_KINDS; k++) {
        struct store_item *it = st->queued[k].head;
        while (it) {
            struct store_item *next = it->next;
            store_item_free(it);
            it = next;
        }
    }
    while (st->inflight) {
        struct store_batch *b = st->inflight;
        inflight_unlink(st, b);
        struct store_item *it = b->items.head;
        while (it) {
            struct store_item *next = it->next;
            store_item_free(it);
            it = next;
        }
        free(b);
    }
    if (st->keys)
        keyring_unref(st->keys);
    idset_free(&st->pending_ids);
    free(st->owner);
    free(st);
}

/* ---- revoked accounts whose refresh token the application wrote ---------- */

/* A look ended: another one if asked for meanwhile; tell the owner. */
static void revcheck_finish(struct store *st, size_t lifted)
{
    if (st->revcheck_again)
        store_check_revoked(st);
    if (st->cb.revoked_checked)
        st->cb.revoked_checked(st->cb.ud, lifted);
}

static void revcheck_settled_cb(void *ud, PGresult *res)
{
    struct store *st = ud;
    st->revcheck_busy = false;
    if (!res) { /* looked at again after the reconnection; nothing reported at exit */
        st->revcheck_again = false;
        return;
    }
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) {
        char why[ERRBUF_LEN];
        log_err("store: recording the verdict on revoked accounts failed: %s",
                db_result_reason(why, sizeof why, res));
    }
    revcheck_finish(st, ok ? st->revcheck_lifted : 0);
}

static void revcheck_settle(struct store *st, PGresult *res);

static void revcheck_read_cb(void *ud, PGresult *res)
{
    struct store *st = ud;
    st->revcheck_busy = false;
    if (!res) { /* looked at again after the reconnection; nothing reported at exit */
        st->revcheck_again = false;
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char why[ERRBUF_LEN];
        log_err("store: reading revoked accounts' changes failed: %s",
                db_result_reason(why, sizeof why, res));
    } else
        revcheck_settle(st, res);
    if (!st->revcheck_busy)
        revcheck_finish(st, 0); /* nothing to record */
}

/*
 * For each row: the same refresh token as the refused one (a re-save: the
 * revocation stays, no request, no event) or a different one (lifted). A row
 * whose token this keyring cannot decrypt (a rotation to a key the daemon has
 * not been given yet) is left marked for a later look: it cannot be told from
 * the refused one. No token at all lifts it (nothing is refreshed anyway).
 * The verdicts go out in one statement.
 */
static void revcheck_settle(struct store *st, PGresult *res)
{
    int rows = PQntuples(res);
    struct strbuf ids = {0}, rts = {0}, lifts = {0};
    int settled = 0;
    size_t lifted = 0;
    pgarray_begin(&ids);
    pgarray_begin(&rts);
    pgarray_begin(&lifts);
    for (int i = 0; i < rows; i++) {
        int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        const char *rt = PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1);
        const char *tag = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
        struct log_ctx ctx = {.account_id = id};
        if (rt && !revoked_token_readable(st->keys, rt)) {
            log_event(LOG_WARNING, NULL, &ctx,
                      "account %" PRId64 ": revoked, and its new refresh token cannot be "
                      "decrypted with the keys loaded: the revocation stays until it can",
                      id);
            continue;
        }
        bool same = revoked_tag_matches(st->keys, rt, tag);
        if (same)
            log_event(LOG_INFO, NULL, &ctx,
                      "account %" PRId64 ": the application re-saved the refused refresh token "
                      "(a new ciphertext of the same token): it stays revoked",
                      id);
        else
            log_event(LOG_INFO, NULL, &ctx,
                      "account %" PRId64 ": the application stored a new refresh token: the "
                      "revocation is lifted",
                      id);
        settled++;
        lifted += !same;
        pgarray_int64(&ids, id);
        pgarray_text(&rts, rt);
        pgarray_text(&lifts, same ? "f" : "t");
    }
    pgarray_end(&ids);
    pgarray_end(&rts);
    pgarray_end(&lifts);
    const char *params[] = {ids.data, rts.data, lifts.data};
    if (settled > 0 && !ids.oom && !rts.oom && !lifts.oom &&
        db_query(st->db,
                 "SELECT oauth_refreshd.settle_revoked_token_changes($1::bigint[], $2::text[], "
                 "$3::boolean[])",
                 3, params, revcheck_settled_cb, st) == 0) {
        st->revcheck_busy = true;
        st->revcheck_lifted = lifted;
        /* A full page: more may wait (each page settles rows, so this ends). */
        st->revcheck_again |= rows == atoi(REVOKED_CHECK_LIMIT);
    }
    strbuf_free(&ids);
    strbuf_free(&rts);
    strbuf_free(&lifts);
}

static void revcheck_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct store *st = w->data;
    if (st->revcheck_busy) {
        st->revcheck_again = true; /* one more look when this one is done */
        return;
    }
    st->revcheck_again = false;
    const char *params[] = {REVOKED_CHECK_LIMIT};
    if (db_query(st->db,
                 "SELECT account_id, refresh_token, revoked_token_tag "
                 "FROM oauth_refreshd.revoked_token_changes($1::integer)",
                 1, params, revcheck_read_cb, st) == 0)
        st->revcheck_busy = true;
}

bool store_revoked_check_idle(const struct store *st)
{
    return !st->revcheck_busy && !ev_is_active(&st->revcheck_timer);
}

void store_check_revoked(struct store *st)
{
    if (!ev_is_active(&st->revcheck_timer)) {
        timer_set(&st->revcheck_timer, REVOKED_CHECK_DELAY_S, 0.);
        ev_timer_start(st->loop, &st->revcheck_timer);
    }
}
