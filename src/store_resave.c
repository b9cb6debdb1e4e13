/*
 * store_resave.c — what the store does when a write's compare-and-swap on the
 * refresh token ciphertext fails (SPEC §6): it reads the ciphertext each
 * changed row holds now, in one statement, and compares plaintexts. The same
 * token under a new ciphertext is the application's re-save: the result is
 * written again against the new ciphertext (and, when the application keeps
 * re-saving, after a pause, for as long as it takes: never discarded for
 * this). The result's own rotated token means an earlier send committed and
 * its answer was lost with the connection: written. A different token, or
 * none, means the application's value wins: the
 * item is discarded (a revocation is a lost race) once its claim is released.
 * It owns the items of a batch only while it answers for them; plaintexts are
 * wiped at once.
 */
#include "store_internal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>

#include "log.h"
#include "secret.h"
#include "stored_token.h"
#include "timeutil.h"

/* One bigint[] literal of the items' account ids. */
static void ids_array(struct strbuf *sb, const struct store_queue *items)
{
    pgarray_begin(sb);
    for (const struct store_item *it = items->head; it; it = it->next)
        pgarray_int64(sb, it->account_id);
    pgarray_end(sb);
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
    store_step_send(st, kind, STEP_REREAD, items,
                    "SELECT account_id, refresh_token "
                    "FROM oauth_refreshd.current_refresh_tokens($1::bigint[])",
                    1, params, ids.oom);
    strbuf_free(&ids);
}

enum store_fate store_resave_settled_fate(enum store_kind kind)
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
                     store_batch_done_cb, b) == 0) {
            store_inflight_link(st, b);
            memset(items, 0, sizeof *items);
        } else {
            free(b);
        }
    }
    strbuf_free(&ids);
    while (items->head) /* not sent: settled now */
        store_item_settle(st, store_queue_take(items, 1).head, store_resave_settled_fate(kind));
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
    store_queue_push_back(&st->resaved, it);
    if (!ev_is_active(&st->resaved_timer)) {
        timer_set(&st->resaved_timer, STORE_RESAVE_DELAY_S, 0.);
        ev_timer_start(st->loop, &st->resaved_timer);
    }
    return false;
}

void store_resave_write_done(struct store *st, struct store_batch *b, PGresult *res)
{
    /* Column 1 says whether each row was written; rows come back in input
     * order (ids are matched defensively anyway). */
    int rows = PQntuples(res);
    int row = 0;
    struct store_queue changed = {0};
    struct store_queue items = b->items;
    while (items.head) {
        struct store_item *it = store_queue_take(&items, 1).head;
        bool written = true;
        if (b->kind != STORE_FAILED) {
            written = row < rows && strtoll(PQgetvalue(res, row, 0), NULL, 10) == it->account_id &&
                      PQgetvalue(res, row, 1)[0] == 't';
            row++;
        }
        if (written)
            store_item_settle(st, it, STORE_WRITTEN);
        else
            store_queue_push_back(&changed, it);
    }
    if (changed.n > 0)
        reread_send(st, b->kind, &changed);
}

/* Each changed row's current ciphertext: the same token, or a different one. */
void store_resave_reread_done(struct store *st, struct store_batch *b, PGresult *res)
{
    int rows = PQntuples(res);
    int row = 0;
    struct store_queue again = {0}, settle = {0};
    struct store_queue items = b->items;
    while (items.head) {
        struct store_item *it = store_queue_take(&items, 1).head;
        const char *current = NULL;
        if (row < rows && strtoll(PQgetvalue(res, row, 0), NULL, 10) == it->account_id &&
            !PQgetisnull(res, row, 1))
            current = PQgetvalue(res, row, 1);
        row++;
        if (it->refresh_ct && current && same_token(st->keys, it->refresh_ct, current))
            /* The row holds this result's own rotated token, which only this
             * daemon was given: an earlier send of this batch committed and its
             * answer was lost with the connection. Written, nothing to release. */
            store_item_settle(st, it, STORE_WRITTEN);
        else if (!same_token(st->keys, it->old_refresh_ct, current))
            store_queue_push_back(&settle, it);
        else if (store_resaved(st, it, current))
            store_queue_push_back(&again, it);
    }
    store_queue_push_front_list(&st->queued[b->kind], &again);
    if (settle.n > 0)
        settle_send(st, b->kind, &settle);
}
