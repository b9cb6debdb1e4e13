/*
 * test_store_batching.c — the store's batching on a real ev_loop with a fake
 * database layer linked in its place (db_query, db_is_connected,
 * db_result_reason are defined here, so db.c is not linked): how results are
 * grouped per kind into one statement, when a batch goes (full at once, else
 * after the flush delay; the next one fills while one is written), what is
 * held while the database is away or when the connection dies under a batch,
 * how a batch refused for its data is written in halves until the result at
 * fault stands alone, and the compare-and-swap that failed (re-saved token:
 * written again; different token: discarded after its claim is released).
 * store_take_all() (the daemon's exit path) gets everything unconfirmed.
 * The fake records every statement and its parameters; each test answers
 * them with results built by libpq's PQmakeEmptyPGresult/PQsetvalue.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ev.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "keys.h"
#include "store.h"
#include "store_internal.h"

/* ---- the fake database layer ---- */

#define FAKE_MAX_QUERIES 64
#define FAKE_MAX_PARAMS  16

struct fake_query {
    char *sql;
    int nparams;
    char *params[FAKE_MAX_PARAMS];
    db_result_cb cb;
    void *ud;
};

static struct {
    bool connected;
    struct fake_query q[FAKE_MAX_QUERIES];
    size_t n;          /* statements sent and not yet answered (q[0] is the oldest) */
    size_t sent_total; /* every statement ever accepted */
    /* PQresultErrorField (below) answers the SQLSTATE of this result. */
    const PGresult *error_res;
    const char *error_sqlstate;
} fake;

bool db_is_connected(const struct db *db)
{
    (void)db;
    return fake.connected;
}

int db_query(struct db *db, const char *sql, int nparams, const char *const *params,
             db_result_cb cb, void *ud)
{
    (void)db;
    if (!fake.connected)
        return -1;
    assert_true(fake.n < FAKE_MAX_QUERIES);
    assert_true(nparams <= FAKE_MAX_PARAMS);
    struct fake_query *q = &fake.q[fake.n++];
    q->sql = strdup(sql);
    q->nparams = nparams;
    for (int i = 0; i < nparams; i++)
        q->params[i] = params[i] ? strdup(params[i]) : NULL;
    q->cb = cb;
    q->ud = ud;
    fake.sent_total++;
    return 0;
}

const char *db_result_reason(char *dst, size_t dstlen, const PGresult *res)
{
    (void)res;
    snprintf(dst, dstlen, "fake error");
    return dst;
}

/* Stands in for libpq's (the executable's definition is the one the store
 * calls): an empty PGresult cannot carry a SQLSTATE otherwise. */
char *PQresultErrorField(const PGresult *res, int fieldcode)
{
    if (fieldcode == PG_DIAG_SQLSTATE && res == fake.error_res)
        return (char *)fake.error_sqlstate;
    return NULL;
}

static void query_free(struct fake_query *q)
{
    free(q->sql);
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    memset(q, 0, sizeof *q);
}

/* Takes the oldest statement out of the fake (the caller answers it). */
static struct fake_query pop_query(void)
{
    assert_true(fake.n > 0);
    struct fake_query q = fake.q[0];
    memmove(&fake.q[0], &fake.q[1], (fake.n - 1) * sizeof fake.q[0]);
    fake.n--;
    return q;
}

/* The account ids of a statement's $2 (a bigint[] literal "{1,2,3}"). */
static size_t query_ids(const struct fake_query *q, int64_t *ids, size_t max)
{
    assert_true(q->nparams >= 2);
    const char *p = q->params[1];
    if (strstr(q->sql, "current_refresh_tokens"))
        p = q->params[0]; /* the re-read has the ids first */
    assert_int_equal(*p, '{');
    size_t n = 0;
    p++;
    while (*p && *p != '}') {
        char *end;
        long long v = strtoll(p, &end, 10);
        assert_true(end != p);
        assert_true(n < max);
        ids[n++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

static PGresult *result_rows(int ncols)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[2] = {{.name = (char *)"a", .typid = 25, .typlen = -1},
                             {.name = (char *)"b", .typid = 25, .typlen = -1}};
    assert_true(PQsetResultAttrs(res, ncols, attrs));
    return res;
}

static void result_set(PGresult *res, int row, int col, const char *v)
{
    assert_true(PQsetvalue(res, row, col, (char *)v, v ? (int)strlen(v) : -1));
}

/* Answers q as the database would when every row was written. */
static void answer_written(struct fake_query *q)
{
    int64_t ids[STORE_MAX_BATCH];
    size_t n = query_ids(q, ids, STORE_MAX_BATCH);
    PGresult *res = result_rows(2);
    for (size_t i = 0; i < n; i++) {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)ids[i]);
        result_set(res, (int)i, 0, id);
        result_set(res, (int)i, 1, "t");
    }
    q->cb(q->ud, res);
    PQclear(res);
    query_free(q);
}

static void answer_error(struct fake_query *q, const char *sqlstate)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
    fake.error_res = res;
    fake.error_sqlstate = sqlstate;
    q->cb(q->ud, res);
    fake.error_res = NULL;
    PQclear(res);
    query_free(q);
}

static void answer_lost(struct fake_query *q)
{
    q->cb(q->ud, NULL);
    query_free(q);
}

/* ---- the store under test ---- */

#define MAX_DONE 2048

struct fixture {
    struct ev_loop *loop;
    struct store *st;
    struct keyring *kr;
    size_t ndone;
    int64_t done_id[MAX_DONE];
    enum store_fate done_fate[MAX_DONE];
    enum store_kind done_kind[MAX_DONE];
};

static void done_cb(void *ud, const struct store_item *item, enum store_fate fate)
{
    struct fixture *fx = ud;
    assert_true(fx->ndone < MAX_DONE);
    fx->done_id[fx->ndone] = item->account_id;
    fx->done_kind[fx->ndone] = item->kind;
    fx->done_fate[fx->ndone++] = fate;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    memset(&fake, 0, sizeof fake);
    fake.connected = true;
    fx->loop = ev_loop_new(EVFLAG_AUTO);
    struct store_callbacks cb = {.done = done_cb, .ud = fx};
    fx->st = store_new(fx->loop, NULL, "test-owner", &cb);
    assert_non_null(fx->st);
    uint8_t raw[1][FERNET_KEY_BYTES];
    randombytes_buf(raw[0], sizeof raw[0]);
    char err[ERRBUF_LEN];
    fx->kr = keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 1, err, sizeof err);
    assert_non_null(fx->kr);
    store_set_spool(fx->st, NULL, fx->kr);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    /* As db_free does: every statement in flight fails with NULL. */
    while (fake.n > 0) {
        struct fake_query q = pop_query();
        answer_lost(&q);
    }
    store_free(fx->st);
    keyring_unref(fx->kr);
    ev_loop_destroy(fx->loop);
    free(fx);
    return 0;
}

static char *encrypt(const struct keyring *kr, const char *plain)
{
    char *ct = NULL;
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)plain, strlen(plain), &ct), 0);
    return ct;
}

static struct store_item *item(struct fixture *fx, enum store_kind kind, int64_t id)
{
    struct store_item *it = calloc(1, sizeof *it);
    it->kind = kind;
    it->account_id = id;
    it->provider = PROVIDER_GOOGLE;
    it->old_refresh_ct = encrypt(fx->kr, "rt-used");
    if (kind == STORE_REFRESHED) {
        it->access_ct = encrypt(fx->kr, "access");
        it->expires_at = 1800000000.0;
    } else {
        snprintf(it->error, sizeof it->error, "%s",
                 kind == STORE_FAILED ? "server_error" : "invalid_grant");
        it->retry_at = 1800000000.0;
    }
    return it;
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    *(bool *)w->data = true;
}

/* Runs the loop for `seconds` (or until `until` statements are waiting). */
static void run_loop(struct fixture *fx, double seconds, size_t until)
{
    bool expired = false;
    ev_timer t;
    ev_timer_init(&t, timeout_cb, seconds, 0.);
    t.data = &expired;
    ev_now_update(fx->loop);
    ev_timer_start(fx->loop, &t);
    while (!expired && (until == 0 || fake.n < until))
        ev_run(fx->loop, EVRUN_ONCE);
    ev_timer_stop(fx->loop, &t);
}

static void assert_ids(const struct fake_query *q, int64_t first, size_t n)
{
    int64_t ids[STORE_MAX_BATCH + 1];
    size_t got = query_ids(q, ids, STORE_MAX_BATCH + 1);
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], first + (int64_t)i);
}

/* ---- grouping and timing ---- */

static void test_results_that_finish_together_go_as_one_statement_after_the_delay(void **state)
{
    struct fixture *fx = *state;
    ev_now_update(fx->loop);
    double t0 = ev_now(fx->loop); /* the flush timer counts from the loop's time */
    for (int i = 1; i <= 10; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    assert_int_equal(fake.n, 0); /* nothing is sent from inside store_add */
    assert_true(store_has_account(fx->st, 3));
    assert_false(store_has_account(fx->st, 11));
    assert_int_equal(store_pending(fx->st), 10);

    run_loop(fx, 2.0, 1);
    assert_int_equal(fake.n, 1);
    assert_true(ev_time() - t0 >= STORE_FLUSH_DELAY_S * 0.9);
    assert_true(ev_time() - t0 < 1.0); /* generous: liveness only */
    struct fake_query q = pop_query();
    assert_non_null(strstr(q.sql, "store_refreshed"));
    assert_string_equal(q.params[0], "test-owner");
    assert_ids(&q, 1, 10);
    assert_int_equal(store_pending(fx->st), 10); /* until confirmed */
    answer_written(&q);

    assert_int_equal(fx->ndone, 10);
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(fx->done_fate[i], STORE_WRITTEN);
    assert_int_equal(store_pending(fx->st), 0);
    assert_false(store_has_account(fx->st, 3));
    run_loop(fx, 0.02, 0);
    assert_int_equal(fake.n, 0);
}

static void test_a_full_batch_goes_at_once_and_the_rest_waits(void **state)
{
    struct fixture *fx = *state;
    for (int i = 1; i <= STORE_MAX_BATCH; i++)
        store_add(fx->st, item(fx, STORE_FAILED, i));
    assert_int_equal(fake.n, 1); /* the 500th sent it, without the loop */
    store_add(fx->st, item(fx, STORE_FAILED, STORE_MAX_BATCH + 1));
    assert_int_equal(fake.n, 1);
    struct fake_query q = pop_query();
    assert_non_null(strstr(q.sql, "store_failed"));
    assert_ids(&q, 1, STORE_MAX_BATCH);
    /* The 501st waits: the batch in flight has not been answered. */
    run_loop(fx, 0.05, 1);
    assert_int_equal(fake.n, 0);
    answer_written(&q);
    run_loop(fx, 1.0, 1);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    assert_ids(&q, STORE_MAX_BATCH + 1, 1);
    answer_written(&q);
    assert_int_equal(fx->ndone, STORE_MAX_BATCH + 1);
}

static void test_each_kind_has_its_own_statement(void **state)
{
    struct fixture *fx = *state;
    store_add(fx->st, item(fx, STORE_REVOKED, 7));
    store_add(fx->st, item(fx, STORE_REFRESHED, 1));
    store_add(fx->st, item(fx, STORE_FAILED, 4));
    store_add(fx->st, item(fx, STORE_REFRESHED, 2));
    store_add(fx->st, item(fx, STORE_FAILED, 5));
    store_flush(fx->st);
    assert_int_equal(fake.n, 3);
    struct fake_query q[3];
    for (int i = 0; i < 3; i++)
        q[i] = pop_query();
    assert_non_null(strstr(q[0].sql, "store_refreshed"));
    assert_ids(&q[0], 1, 2);
    assert_non_null(strstr(q[1].sql, "store_failed"));
    assert_ids(&q[1], 4, 2);
    assert_non_null(strstr(q[2].sql, "store_revoked"));
    assert_ids(&q[2], 7, 1);
    /* The failure's error and retry time travel in its arrays. */
    assert_string_equal(q[1].params[2], "{\"server_error\",\"server_error\"}");
    for (int i = 0; i < 3; i++)
        answer_written(&q[i]);
    assert_int_equal(fx->ndone, 5);
}

static void test_the_next_batch_fills_while_one_is_written(void **state)
{
    struct fixture *fx = *state;
    for (int i = 1; i <= 3; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    run_loop(fx, 1.0, 1);
    assert_int_equal(fake.n, 1);
    for (int i = 4; i <= 8; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    run_loop(fx, 0.05, 2); /* well past the flush delay: still one statement */
    assert_int_equal(fake.n, 1);
    struct fake_query q = pop_query();
    assert_ids(&q, 1, 3);
    answer_written(&q);
    run_loop(fx, 1.0, 1);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    assert_ids(&q, 4, 5); /* the five that gathered, together */
    answer_written(&q);
    assert_int_equal(fx->ndone, 8);
}

/* ---- holding ---- */

static void test_results_are_held_while_the_database_is_away(void **state)
{
    struct fixture *fx = *state;
    fake.connected = false;
    for (int i = 1; i <= 3; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    run_loop(fx, 0.05, 1);
    store_flush(fx->st);
    assert_int_equal(fake.sent_total, 0);
    assert_int_equal(store_pending(fx->st), 3);
    assert_true(store_has_account(fx->st, 2));
    assert_int_equal(fx->ndone, 0);

    fake.connected = true;
    store_flush(fx->st); /* what the daemon does after reconnecting */
    assert_int_equal(fake.n, 1);
    struct fake_query q = pop_query();
    assert_ids(&q, 1, 3);
    answer_written(&q);
    assert_int_equal(fx->ndone, 3);
}

static void test_a_batch_whose_connection_died_is_sent_again_first(void **state)
{
    struct fixture *fx = *state;
    for (int i = 1; i <= 4; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    store_flush(fx->st);
    struct fake_query q = pop_query();
    for (int i = 5; i <= 6; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    fake.connected = false;
    answer_lost(&q);
    assert_int_equal(fx->ndone, 0); /* nothing reported, nothing dropped */
    assert_int_equal(store_pending(fx->st), 6);
    run_loop(fx, 0.05, 1);
    assert_int_equal(fake.n, 0);

    fake.connected = true;
    store_flush(fx->st);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    assert_ids(&q, 1, 6); /* the lost batch first, in its order, then the newer */
    answer_written(&q);
    assert_int_equal(fx->ndone, 6);
}

static void test_a_statement_error_is_retried_after_a_pause(void **state)
{
    struct fixture *fx = *state;
    store_add(fx->st, item(fx, STORE_FAILED, 1));
    store_flush(fx->st);
    struct fake_query q = pop_query();
    answer_error(&q, "40001"); /* not the data's fault */
    assert_int_equal(fx->ndone, 0);
    run_loop(fx, STORE_RETRY_DELAY_S * 0.5, 1);
    assert_int_equal(fake.n, 0); /* not at once: no busy loop on a failing statement */
    run_loop(fx, STORE_RETRY_DELAY_S * 3, 1);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    assert_ids(&q, 1, 1);
    answer_written(&q);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(fx->done_fate[0], STORE_WRITTEN);
}

/* ---- a batch refused for its data ---- */

static bool query_has(const struct fake_query *q, int64_t id)
{
    int64_t ids[STORE_MAX_BATCH];
    size_t n = query_ids(q, ids, STORE_MAX_BATCH);
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static void test_a_refused_batch_is_written_in_halves_until_the_culprit_is_alone(void **state)
{
    struct fixture *fx = *state;
    for (int i = 1; i <= 8; i++)
        store_add(fx->st, item(fx, STORE_FAILED, i));
    store_flush(fx->st);
    size_t sizes[16], nsizes = 0;
    while (nsizes < 16) {
        run_loop(fx, 1.0, 1);
        if (fake.n == 0)
            break;
        assert_int_equal(fake.n, 1); /* suspects go one batch at a time */
        struct fake_query q = pop_query();
        int64_t ids[STORE_MAX_BATCH];
        sizes[nsizes++] = query_ids(&q, ids, STORE_MAX_BATCH);
        if (query_has(&q, 6))
            answer_error(&q, "22001");
        else
            answer_written(&q);
    }
    /* 8 refused; 4 (1-4) written; 4 (5-8) refused; 2 (5,6) refused; 1 (5)
     * written; 1 (6) refused: found; the rest (7,8) together again. */
    size_t want[] = {8, 4, 4, 2, 1, 1, 2};
    assert_int_equal(nsizes, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < nsizes; i++)
        assert_int_equal(sizes[i], want[i]);
    assert_int_equal(fx->ndone, 8);
    for (size_t i = 0; i < fx->ndone; i++)
        assert_int_equal(fx->done_fate[i], fx->done_id[i] == 6 ? STORE_DISCARDED : STORE_WRITTEN);
}

static void test_a_refused_result_is_demoted_and_written_alone(void **state)
{
    struct fixture *fx = *state;
    store_add(fx->st, item(fx, STORE_REFRESHED, 1));
    store_flush(fx->st);
    struct fake_query q = pop_query();
    answer_error(&q, "23514");
    run_loop(fx, 1.0, 1);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    /* Not rotated: nothing to keep, so it becomes a failed attempt. */
    assert_non_null(strstr(q.sql, "store_failed"));
    assert_string_equal(q.params[2], "{\"db_23514\"}");
    answer_written(&q);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(fx->done_kind[0], STORE_FAILED);
    assert_int_equal(fx->done_fate[0], STORE_WRITTEN);
}

/* ---- the compare-and-swap that failed ---- */

static void answer_not_written(struct fake_query *q, int64_t id)
{
    PGresult *res = result_rows(2);
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)id);
    result_set(res, 0, 0, s);
    result_set(res, 0, 1, "f");
    q->cb(q->ud, res);
    PQclear(res);
    query_free(q);
}

static void answer_current_token(struct fake_query *q, int64_t id, const char *ct)
{
    assert_non_null(strstr(q->sql, "current_refresh_tokens"));
    PGresult *res = result_rows(2);
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)id);
    result_set(res, 0, 0, s);
    result_set(res, 0, 1, ct);
    q->cb(q->ud, res);
    PQclear(res);
    query_free(q);
}

static void test_a_resaved_row_is_written_again_against_its_new_ciphertext(void **state)
{
    struct fixture *fx = *state;
    store_add(fx->st, item(fx, STORE_REFRESHED, 1));
    store_flush(fx->st);
    struct fake_query q = pop_query();
    answer_not_written(&q, 1);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    char *resaved = encrypt(fx->kr, "rt-used"); /* same token, new ciphertext */
    answer_current_token(&q, 1, resaved);
    assert_int_equal(fx->ndone, 0);
    run_loop(fx, 1.0, 1);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    assert_non_null(strstr(q.sql, "store_refreshed"));
    char want[512];
    snprintf(want, sizeof want, "{\"%s\"}", resaved);
    assert_string_equal(q.params[2], want); /* the compare is against the new one */
    answer_written(&q);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(fx->done_fate[0], STORE_WRITTEN);
    free(resaved);
}

static void test_a_different_token_discards_the_result_after_the_release(void **state)
{
    struct fixture *fx = *state;
    store_add(fx->st, item(fx, STORE_REFRESHED, 1));
    store_flush(fx->st);
    struct fake_query q = pop_query();
    answer_not_written(&q, 1);
    q = pop_query();
    char *other = encrypt(fx->kr, "rt-the-user-reconnected");
    answer_current_token(&q, 1, other);
    free(other);
    assert_int_equal(fake.n, 1);
    q = pop_query();
    assert_non_null(strstr(q.sql, "oauth_refreshd.release"));
    assert_string_equal(q.params[0], "test-owner");
    assert_int_equal(fx->ndone, 0); /* reported once the claim is given back */
    PGresult *res = result_rows(1);
    q.cb(q.ud, res);
    PQclear(res);
    query_free(&q);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(fx->done_fate[0], STORE_DISCARDED);
    assert_int_equal(store_pending(fx->st), 0);
}

/*
 * The write committed but its answer was lost with the connection (a failover,
 * a killed primary): the batch is sent again, its compare fails against the
 * row this daemon itself wrote, and the row holds the rotated token of this
 * very result. That is a written result, not a lost race (found in CI by
 * test_failover: the account was counted neither refreshed nor anything but
 * discarded, and its claim given back).
 */
static void test_a_row_that_already_holds_this_results_rotated_token_was_written(void **state)
{
    struct fixture *fx = *state;
    struct store_item *it = item(fx, STORE_REFRESHED, 1);
    it->refresh_ct = encrypt(fx->kr, "rt-rotated");
    it->rotated = true;
    store_add(fx->st, it);
    store_flush(fx->st);
    struct fake_query q = pop_query();
    answer_not_written(&q, 1);
    q = pop_query();
    char *ours = encrypt(fx->kr, "rt-rotated"); /* our write, as the database holds it */
    answer_current_token(&q, 1, ours);
    free(ours);
    assert_int_equal(fake.n, 0); /* nothing more to write, no claim to give back */
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(fx->done_fate[0], STORE_WRITTEN);
    assert_int_equal(store_pending(fx->st), 0);
}

/* ---- exit ---- */

static void test_take_all_hands_over_everything_unconfirmed(void **state)
{
    struct fixture *fx = *state;
    for (int i = 1; i <= 3; i++)
        store_add(fx->st, item(fx, STORE_REFRESHED, i));
    store_add(fx->st, item(fx, STORE_FAILED, 4));
    store_flush(fx->st);
    assert_int_equal(fake.n, 2);
    store_add(fx->st, item(fx, STORE_REVOKED, 5));
    /* db_free() at exit fails what is in flight: those items come back. */
    fake.connected = false;
    while (fake.n > 0) {
        struct fake_query q = pop_query();
        answer_lost(&q);
    }
    struct store_item *all = store_take_all(fx->st);
    bool seen[6] = {false};
    size_t n = 0;
    while (all) {
        struct store_item *next = all->next;
        assert_true(all->account_id >= 1 && all->account_id <= 5);
        assert_false(seen[all->account_id]);
        seen[all->account_id] = true;
        n++;
        store_item_free(all);
        all = next;
    }
    assert_int_equal(n, 5);
    assert_int_equal(store_pending(fx->st), 0);
    assert_false(store_has_account(fx->st, 1));
    assert_int_equal(fx->ndone, 0); /* nothing reported as written */
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_results_that_finish_together_go_as_one_statement_after_the_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_full_batch_goes_at_once_and_the_rest_waits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_each_kind_has_its_own_statement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_next_batch_fills_while_one_is_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_results_are_held_while_the_database_is_away, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_batch_whose_connection_died_is_sent_again_first,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_statement_error_is_retried_after_a_pause, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_batch_is_written_in_halves_until_the_culprit_is_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_refused_result_is_demoted_and_written_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_resaved_row_is_written_again_against_its_new_ciphertext, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_row_that_already_holds_this_results_rotated_token_was_written, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_different_token_discards_the_result_after_the_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_all_hands_over_everything_unconfirmed, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
