/*
 * queue.c — the claim queue's statements and rows (queue.h). Each statement
 * carries a small context of its own (callback and user data), freed when its
 * answer has been delivered; the rows are parsed here, every number checked
 * where it is read, so the engine sees only struct claimed_account values.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "inbound.h"
#include "log.h"
#include "queue.h"
#include "strbuf.h"
#include "timeutil.h"

/* Attempts beyond this back off as long as retry_max anyway. */
#define ATTEMPTS_MAX 1000000

struct queue {
    struct db *db;
    char owner[96];
};

/* One statement in flight: whichever callback its kind uses. */
struct queue_call {
    queue_claim_cb claimed;
    queue_wakeup_cb woke;
    queue_done_cb done;
    void *ud;
};

static const char *const claim_columns =
    "SELECT account_id, provider, refresh_token, scope, extract(epoch FROM expires_at), attempts";

struct queue *queue_new(struct db *db, const char *owner)
{
    struct queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->db = db;
    snprintf(q->owner, sizeof q->owner, "%s", owner);
    return q;
}

void queue_free(struct queue *q)
{
    free(q);
}

static struct queue_call *call_new(queue_claim_cb claimed, queue_wakeup_cb woke, queue_done_cb done,
                                   void *ud)
{
    struct queue_call *c = malloc(sizeof *c);
    if (c)
        *c = (struct queue_call){.claimed = claimed, .woke = woke, .done = done, .ud = ud};
    return c;
}

/* Sends sql; on failure frees the call. */
static int call_send(struct queue *q, const char *sql, int nparams, const char *const *params,
                     db_result_cb cb, struct queue_call *c)
{
    if (!c)
        return -1;
    if (db_query(q->db, sql, nparams, params, cb, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void interval_text(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%.3f seconds", (double)ms / 1000.0);
}

static void providers_array(const struct queue_scope *s, struct strbuf *sb)
{
    pgarray_begin(sb);
    for (size_t i = 0; i < s->nproviders; i++)
        pgarray_text(sb, s->providers[i]);
    pgarray_end(sb);
}

static void ids_array(const int64_t *ids, size_t n, struct strbuf *sb)
{
    pgarray_begin(sb);
    for (size_t i = 0; i < n; i++)
        pgarray_int64(sb, ids[i]);
    pgarray_end(sb);
}

/* ---- claims ---------------------------------------------------------------- */

/*
 * expires_at is whatever the application stored ('infinity' included),
 * attempts is ours but still a row. A row whose id cannot be read is skipped
 * (its lease runs out).
 */
static bool parse_claim_row(PGresult *res, int row, struct claimed_account *acct, double now)
{
    memset(acct, 0, sizeof *acct);
    if (!inbound_account_id(PQgetvalue(res, row, 0), &acct->account_id)) {
        log_warning("claimed a row whose account id is not a number: skipped");
        return false;
    }
    acct->provider = provider_id_from_name(PQgetvalue(res, row, 1));
    acct->refresh_ct = strdup(PQgetvalue(res, row, 2));
    acct->scope = PQgetisnull(res, row, 3) ? NULL : strdup(PQgetvalue(res, row, 3));
    /* Unknown expiry: treat it as expiring now (it only feeds the metrics). */
    if (PQgetisnull(res, row, 4) || !inbound_pg_epoch(PQgetvalue(res, row, 4), &acct->expires_at))
        acct->expires_at = now;
    int64_t attempts = 0;
    if (!inbound_pg_int(PQgetvalue(res, row, 5), INT64_MIN, INT64_MAX, &attempts) || attempts < 0)
        attempts = 0;
    acct->attempts = attempts > ATTEMPTS_MAX ? ATTEMPTS_MAX : (int)attempts;
    acct->claimed_at = now;
    if (!acct->refresh_ct || (!PQgetisnull(res, row, 3) && !acct->scope)) {
        claimed_account_clear(acct);
        return false;
    }
    return true;
}

static void claim_done_cb(void *ud, PGresult *res)
{
    struct queue_call *call = ud;
    struct queue_claim c = {.ok = res && PQresultStatus(res) == PGRES_TUPLES_OK};
    char why[ERRBUF_LEN];
    if (res && !c.ok)
        log_err("claiming due accounts failed: %s", db_result_reason(why, sizeof why, res));
    int rows = c.ok ? PQntuples(res) : 0;
    c.returned = (size_t)rows;
    c.rows = rows > 0 ? calloc((size_t)rows, sizeof *c.rows) : NULL;
    if (rows > 0 && !c.rows)
        log_err("out of memory reading %d claimed accounts; their leases run out", rows);
    double now = time_now_wall();
    for (int i = 0; i < rows && c.rows; i++)
        if (parse_claim_row(res, i, &c.rows[c.nrows], now))
            c.nrows++;
    call->claimed(call->ud, &c);
    for (size_t i = 0; i < c.nrows; i++)
        claimed_account_clear(&c.rows[i]);
    free(c.rows);
    free(call);
}

int queue_claim_due(struct queue *q, const struct queue_scope *s, const char *provider,
                    unsigned limit, queue_claim_cb cb, void *ud)
{
    struct strbuf provs;
    strbuf_init(&provs);
    pgarray_begin(&provs);
    pgarray_text(&provs, provider);
    pgarray_end(&provs);
    char lead[48], jitter[48], lease[48], lim[16], since[ISO8601_LEN];
    interval_text(lead, sizeof lead, s->lead_ms);
    interval_text(jitter, sizeof jitter, s->jitter_ms);
    interval_text(lease, sizeof lease, s->lease_ms);
    snprintf(lim, sizeof lim, "%u", limit);
    if (s->once_since > 0)
        time_format_iso8601(s->once_since, true, since);
    const char *params[] = {
        q->owner, provs.data, lead, jitter, lease, lim, s->once_since > 0 ? since : NULL};
    char sql[512];
    snprintf(sql, sizeof sql,
             "%s FROM oauth_refreshd.claim_due($1, $2::text[], $3::interval, $4::interval, "
             "$5::interval, $6::integer, $7::timestamptz)",
             claim_columns);
    int rc =
        provs.oom ? -1 : call_send(q, sql, 7, params, claim_done_cb, call_new(cb, NULL, NULL, ud));
    strbuf_free(&provs);
    return rc;
}

int queue_claim_ids(struct queue *q, const struct queue_scope *s, const int64_t *ids, size_t n,
                    queue_claim_cb cb, void *ud)
{
    struct strbuf provs, idv;
    strbuf_init(&provs);
    strbuf_init(&idv);
    providers_array(s, &provs);
    ids_array(ids, n, &idv);
    char lease[48];
    interval_text(lease, sizeof lease, s->lease_ms);
    const char *params[] = {q->owner, provs.data, idv.data, lease};
    char sql[512];
    snprintf(sql, sizeof sql,
             "%s FROM oauth_refreshd.claim_ids($1, $2::text[], $3::bigint[], $4::interval)",
             claim_columns);
    int rc = provs.oom || idv.oom
                 ? -1
                 : call_send(q, sql, 4, params, claim_done_cb, call_new(cb, NULL, NULL, ud));
    strbuf_free(&provs);
    strbuf_free(&idv);
    return rc;
}

/* ---- next wake-up ---------------------------------------------------------- */

static void wakeup_done_cb(void *ud, PGresult *res)
{
    struct queue_call *call = ud;
    enum queue_wakeup w = QUEUE_WAKEUP_FAILED;
    double due = 0;
    const char *text = NULL;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char why[ERRBUF_LEN];
        if (res)
            log_err("asking for the next due time failed: %s",
                    db_result_reason(why, sizeof why, res));
    } else if (PQgetisnull(res, 0, 0)) {
        w = QUEUE_WAKEUP_NONE;
    } else if (inbound_pg_epoch(PQgetvalue(res, 0, 0), &due)) {
        w = QUEUE_WAKEUP_AT;
    } else {
        w = QUEUE_WAKEUP_BAD;
        text = PQgetvalue(res, 0, 0);
    }
    call->woke(call->ud, w, due, text);
    free(call);
}

int queue_next_wakeup(struct queue *q, const struct queue_scope *s, queue_wakeup_cb cb, void *ud)
{
    struct strbuf provs;
    strbuf_init(&provs);
    providers_array(s, &provs);
    char lead[48], jitter[48];
    interval_text(lead, sizeof lead, s->lead_ms);
    interval_text(jitter, sizeof jitter, s->jitter_ms);
    const char *params[] = {provs.data, lead, jitter};
    int rc = provs.oom ? -1
                       : call_send(q,
                                   "SELECT extract(epoch FROM oauth_refreshd.next_wakeup("
                                   "$1::text[], $2::interval, $3::interval))",
                                   3, params, wakeup_done_cb, call_new(NULL, cb, NULL, ud));
    strbuf_free(&provs);
    return rc;
}

/* ---- release ---------------------------------------------------------------- */

static void release_done_cb(void *ud, PGresult *res)
{
    struct queue_call *call = ud;
    (void)res; /* a failed release only means its leases run out */
    call->done(call->ud);
    free(call);
}

int queue_release(struct queue *q, const int64_t *ids, size_t n, queue_done_cb cb, void *ud)
{
    struct strbuf idv;
    strbuf_init(&idv);
    ids_array(ids, n, &idv);
    const char *params[] = {q->owner, idv.data};
    int rc = idv.oom ? -1
                     : call_send(q, "SELECT oauth_refreshd.release($1, $2::bigint[])", 2, params,
                                 release_done_cb, call_new(NULL, NULL, cb, ud));
    strbuf_free(&idv);
    return rc;
}
