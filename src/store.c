/*
 * store.c — batches refresh results into set-based writes (see store.h).
 * It owns every item from store_add() until its done() callback: queued
 * items wait per kind; a batch goes out when it is full or STORE_FLUSH_DELAY_S
 * after the first result, and while one is being written the next one fills
 * up; a sent batch stays owned until the database confirms it; a batch whose
 * connection died goes back to the front of its queue and is sent again after
 * reconnection (results are held, and rotated ones spooled, meanwhile). It
 * never decides what a result means. The statements themselves are built in
 * store_write.c; a failed compare-and-swap is answered in store_resave.c;
 * revoked accounts' changes are looked at in store_revoked.c.
 *
 * One bad value never holds the others back: values are checked against the
 * columns' real limits before they enter a batch (store_values.h), and a
 * batch the database still refuses for its data (SQLSTATE class 22/23) is
 * written in halves until the result at fault stands alone; that one is then
 * demoted (a partial result keeps a rotated refresh token) or, as a last
 * resort, failed with the database's code and its rotated token kept aside in
 * the spool directory (*.bad) for the operator.
 */
#include "store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "spool.h"
#include "timeutil.h"

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

static void flush_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    store_flush(w->data);
}

/* The items that waited after many re-saves go back, ahead of newer ones. */
static void resaved_requeue(struct store *st)
{
    struct store_queue back[STORE_KINDS] = {{0}};
    struct store_queue all = store_queue_take(&st->resaved, SIZE_MAX);
    while (all.head) {
        struct store_queue one = store_queue_take(&all, 1);
        store_queue_push_back(&back[one.head->kind], one.head);
    }
    for (int k = 0; k < STORE_KINDS; k++)
        store_queue_push_front_list(&st->queued[k], &back[k]);
}

static void resaved_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    resaved_requeue(w->data);
    store_flush(w->data);
}

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
    store_revoked_init(st);
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
        store_queue_push_back(k == STORE_REFRESHED ? &keep : &st->queued[k], it);
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
    return store_idset_find(&st->pending_ids, account_id, &at);
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
    store_idset_add(&st->pending_ids, item->account_id);
    store_queue_push_back(q, item);
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
    store_queue_push_front_list(&st->queued[b->kind], &b->items);
    free(b);
    if (delay > 0)
        arm_flush(st, delay);
}

void store_inflight_link(struct store *st, struct store_batch *b)
{
    b->prev = NULL;
    b->next = st->inflight;
    if (st->inflight)
        st->inflight->prev = b;
    st->inflight = b;
    st->inflight_items += b->items.n;
    st->inflight_batches[b->kind]++;
}

/*
 * Sends one statement of step `step` for items (taken over). When it cannot be
 * sent, the items go back to the front of their queue: a write or a re-read is
 * simply written again later (it ends here again if the row still differs).
 */
void store_step_send(struct store *st, enum store_kind kind, enum batch_step step,
                     struct store_queue *items, const char *sql, int nparams,
                     const char *const *params, bool oom)
{
    struct store_batch *b = oom ? NULL : calloc(1, sizeof *b);
    if (!b) {
        store_queue_push_front_list(&st->queued[kind], items);
        arm_flush(st, STORE_RETRY_DELAY_S);
        return;
    }
    b->st = st;
    b->kind = kind;
    b->step = step;
    b->items = *items;
    memset(items, 0, sizeof *items);
    if (db_query(st->db, sql, nparams, params, store_batch_done_cb, b) < 0) {
        batch_hold(st, b, 0);
        return;
    }
    store_inflight_link(st, b);
}

void store_item_settle(struct store *st, struct store_item *it, enum store_fate fate)
{
    store_idset_remove(&st->pending_ids, it->account_id);
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
        store_item_settle(st, it, STORE_DISCARDED);
    } else {
        /* Written again on its own first, before anything else of its kind. */
        struct store_queue one = {.head = it, .tail = it, .n = 1};
        store_split_requeue_alone(&st->split[it->kind]);
        store_queue_push_front_list(&st->queued[it->kind], &one);
    }
    arm_flush(st, 0);
}

void store_batch_done_cb(void *ud, PGresult *res)
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
            store_item_settle(st, store_queue_take(&b->items, 1).head,
                              store_resave_settled_fate(kind));
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
            store_resave_write_done(st, b, res);
        else
            store_resave_reread_done(st, b, res);
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
    b->items = store_queue_take(&st->queued[kind], take);
    b->suspects = store_split_taken(&st->split[kind], b->items.n);

    struct strbuf *arr = st->arr;
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        strbuf_reset(&arr[i]);
    char interval[48];
    size_t narr = 0;
    const char *sql = store_write_statement(st, b, arr, &narr, interval, sizeof interval);
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

    int rc = oom ? -1 : db_query(st->db, sql, nparams, params, store_batch_done_cb, b);
    if (oom)
        for (size_t i = 0; i < STORE_ARRAYS; i++)
            strbuf_free(&arr[i]); /* start afresh after an allocation failure */
    if (rc < 0) {
        batch_hold(st, b, oom ? STORE_RETRY_DELAY_S : 0);
        return;
    }
    store_inflight_link(st, b);
}

struct store_item *store_take_all(struct store *st)
{
    struct store_queue all = {0};
    if (ev_is_active(&st->resaved_timer))
        ev_timer_stop(st->loop, &st->resaved_timer);
    resaved_requeue(st);
    for (int k = 0; k < STORE_KINDS; k++) {
        struct store_queue q = store_queue_take(&st->queued[k], SIZE_MAX);
        for (struct store_item *it = q.head; it; it = it->next)
            store_idset_remove(&st->pending_ids, it->account_id);
        store_split_init(&st->split[k], STORE_MAX_BATCH);
        store_queue_push_front_list(&all, &q);
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
    store_queue_push_front_list(&st->queued[STORE_REFRESHED], &st->resaved); /* freed below */
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
    store_idset_free(&st->pending_ids);
    free(st->owner);
    free(st);
}
