/*
 * test_engine.c — the engine's scheduling policy, driven on a real ev_loop
 * with a fake queue, a fake http adapter and a fake store (the functions in
 * test_engine.wrap reach the __wrap_ fakes below): the share of the global
 * in-flight budget between providers, the per-provider and global caps, the
 * kicks of one loop turn coalesced into one claim, the pauses (the provider's
 * overload, the circuit breaker, a refused client registration with its
 * re-read and probe) and their resumption, --once finishing (and its exit
 * code), the SIGTERM drain finishing, and a request that could not be
 * started failing as a local error without its callback.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "discovery.h"
#include "engine.h"
#include "http.h"
#include "keys.h"
#include "metrics.h"
#include "queue.h"
#include "refresh.h"
#include "store.h"

#define TEST_KEY "6YD0bRyoj0R-oh8l4gNZKterTSoPD88dQ9-2iyBWFjY="
#define MAXQ     64

/* ---- the fakes ------------------------------------------------------------- */

struct claim_call {
    char provider[16]; /* "" for a claim by ids */
    unsigned limit;
    queue_claim_cb cb;
    void *ud;
};

struct http_call {
    http_done_cb done;
    void *ud;
};

struct later {
    ev_timer timer; /* first: the watcher is the struct */
    queue_wakeup_cb woke;
    queue_done_cb done;
    void *ud;
};

static struct fakes {
    struct ev_loop *loop;
    struct claim_call claims[MAXQ];
    size_t nclaims, claims_answered;
    struct http_call sent[MAXQ];
    size_t nsent, sent_answered;
    bool submit_fails;
    bool backlog;    /* next_wakeup: accounts are due now */
    size_t releases; /* accounts given back */
    struct store_item *held[MAXQ];
    size_t nheld;
    size_t reread;
    bool finished;
    int code;
    int64_t next_id;
} fk;

/* The fakes replace these (test_engine.wrap): their prototypes, for -Wmissing-prototypes. */
int __wrap_queue_claim_due(struct queue *q, const struct queue_scope *s, const char *provider,
                           unsigned limit, queue_claim_cb cb, void *ud);
int __wrap_queue_claim_ids(struct queue *q, const struct queue_scope *s, const int64_t *ids,
                           size_t n, queue_claim_cb cb, void *ud);
int __wrap_queue_next_wakeup(struct queue *q, const struct queue_scope *s, queue_wakeup_cb cb,
                             void *ud);
int __wrap_queue_release(struct queue *q, const int64_t *ids, size_t n, queue_done_cb cb, void *ud);
int __wrap_http_submit(struct http *h, const struct http_request *req, http_done_cb done, void *ud);
void __wrap_store_add(struct store *st, struct store_item *item);
size_t __wrap_store_pending(const struct store *st);
bool __wrap_store_has_account(const struct store *st, int64_t id);
void __wrap_store_check_revoked(struct store *st);
void __wrap_store_flush(struct store *st);
void __wrap_store_set_lead(struct store *st, int64_t lead_ms);
bool __wrap_store_revoked_check_idle(const struct store *st);
bool __wrap_discovery_first_pending(const struct discovery *ds);

int __wrap_queue_claim_due(struct queue *q, const struct queue_scope *s, const char *provider,
                           unsigned limit, queue_claim_cb cb, void *ud)
{
    assert_true(fk.nclaims < MAXQ);
    struct claim_call *c = &fk.claims[fk.nclaims++];
    snprintf(c->provider, sizeof c->provider, "%s", provider);
    c->limit = limit;
    c->cb = cb;
    c->ud = ud;
    return 0;
}

int __wrap_queue_claim_ids(struct queue *q, const struct queue_scope *s, const int64_t *ids,
                           size_t n, queue_claim_cb cb, void *ud)
{
    assert_true(fk.nclaims < MAXQ);
    fk.claims[fk.nclaims++] = (struct claim_call){.limit = (unsigned)n, .cb = cb, .ud = ud};
    return 0;
}

/* Statements the fake answers on the next loop turn (never inside the call, as
 * queue.h promises): a backlog is due now, or nothing is known to be due. */
static void answer_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct later *l = (struct later *)w;
    if (l->woke)
        l->woke(l->ud, fk.backlog ? QUEUE_WAKEUP_AT : QUEUE_WAKEUP_NONE, ev_time(), NULL);
    else
        l->done(l->ud);
    free(l);
}

static void answer_later(queue_wakeup_cb woke, queue_done_cb done, void *ud)
{
    struct later *l = calloc(1, sizeof *l);
    assert_non_null(l);
    *l = (struct later){.woke = woke, .done = done, .ud = ud};
    ev_timer_init(&l->timer, answer_later_cb, 0., 0.);
    ev_timer_start(fk.loop, &l->timer);
}

int __wrap_queue_next_wakeup(struct queue *q, const struct queue_scope *s, queue_wakeup_cb cb,
                             void *ud)
{
    answer_later(cb, NULL, ud);
    return 0;
}

int __wrap_queue_release(struct queue *q, const int64_t *ids, size_t n, queue_done_cb cb, void *ud)
{
    fk.releases += n;
    answer_later(NULL, cb, ud);
    return 0;
}

int __wrap_http_submit(struct http *h, const struct http_request *req, http_done_cb done, void *ud)
{
    if (fk.submit_fails)
        return -1;
    assert_true(fk.nsent < MAXQ);
    fk.sent[fk.nsent++] = (struct http_call){.done = done, .ud = ud};
    return 0;
}

void __wrap_store_add(struct store *st, struct store_item *item)
{
    assert_true(fk.nheld < MAXQ);
    fk.held[fk.nheld++] = item;
}

size_t __wrap_store_pending(const struct store *st)
{
    return fk.nheld;
}

bool __wrap_store_has_account(const struct store *st, int64_t id)
{
    for (size_t i = 0; i < fk.nheld; i++)
        if (fk.held[i]->account_id == id)
            return true;
    return false;
}

void __wrap_store_check_revoked(struct store *st)
{
}

void __wrap_store_flush(struct store *st)
{
}

void __wrap_store_set_lead(struct store *st, int64_t lead_ms)
{
}

bool __wrap_store_revoked_check_idle(const struct store *st)
{
    return true;
}

bool __wrap_discovery_first_pending(const struct discovery *ds)
{
    return false;
}

/* ---- fixture ----------------------------------------------------------------- */

struct fixture {
    char dir[64];
    struct ev_loop *loop;
    struct config *cfg;
    struct metrics metrics;
    struct engine *e;
};

static struct fixture fx;

static void write_file(const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", fx.dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, 0600), 0);
}

static void finished_cb(void *ud, int code)
{
    assert_false(fk.finished); /* once */
    fk.finished = true;
    fk.code = code;
}

/* As the daemon does: the configuration read again comes back at once. */
static void reread_cb(void *ud)
{
    fk.reread++;
    engine_on_config(fx.e, fx.cfg);
}

/* max_in_flight (global), then each provider's; 0 = provider not configured. */
static void start(bool once, unsigned global, unsigned google, unsigned github)
{
    memset(&fk, 0, sizeof fk);
    fk.next_id = 1;
    snprintf(fx.dir, sizeof fx.dir, "/tmp/test_engine.XXXXXX");
    assert_non_null(mkdtemp(fx.dir));
    write_file("keys", TEST_KEY "\n");
    write_file("s", "secret\n");
    char text[1024], prov[512] = "";
    if (google)
        snprintf(prov, sizeof prov,
                 "[provider.google]\nclient_id = g\nclient_secret_file = s\n"
                 "token_url = https://google.test/token\nmax_in_flight = %u\n",
                 google);
    if (github)
        snprintf(prov + strlen(prov), sizeof prov - strlen(prov),
                 "[provider.github]\nclient_id = h\nclient_secret_file = s\n"
                 "token_url = https://github.test/token\nmax_in_flight = %u\n",
                 github);
    snprintf(text, sizeof text,
             "[daemon]\nstate_directory = %s\n[database]\nconninfo =\n"
             "[crypto]\nkeys_file = keys\n"
             "[refresh]\nbatch_size = 500\nmax_in_flight = %u\nretry_min = 1s\nretry_max = 1h\n"
             "config_error_probe = 1s\n%s",
             fx.dir, global, prov);
    write_file("oauth.conf", text);
    char path[128];
    snprintf(path, sizeof path, "%s/oauth.conf", fx.dir);
    struct config_errors errs = {0};
    fx.cfg = config_load(path, NULL, NULL, &errs);
    if (!fx.cfg)
        fail_msg("config: %s", errs.count ? errs.msg[0] : "?");
    fx.loop = ev_loop_new(EVFLAG_AUTO);
    fk.loop = fx.loop;
    metrics_init(&fx.metrics, ev_now(fx.loop));
    struct engine_deps deps = {.loop = fx.loop,
                               .queue = (struct queue *)&fk, /* never looked into */
                               .http = (struct http *)&fk,
                               .store = (struct store *)&fk,
                               .metrics = &fx.metrics};
    struct engine_callbacks cb = {.finished = finished_cb, .reread_config = reread_cb};
    fx.e = engine_new(&deps, &cb, fx.cfg, once, ev_now(fx.loop));
    assert_non_null(fx.e);
    engine_on_db(fx.e, true);
    engine_on_schema_ok(fx.e);
}

static void break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ONE);
}

/* Runs the loop for s seconds (kicks coalesce over 20 ms). */
static void run_for(double s)
{
    ev_timer t;
    ev_timer_init(&t, break_cb, s, 0.);
    ev_timer_start(fx.loop, &t);
    ev_run(fx.loop, 0);
    ev_timer_stop(fx.loop, &t);
}

static int teardown(void **state)
{
    engine_stop(fx.e);
    /* As http_free does: what is still in flight ends as aborted. */
    while (fk.sent_answered < fk.nsent) {
        struct http_answer ans = {.transport_error = 42 /* CURLE_ABORTED_BY_CALLBACK */};
        fk.sent[fk.sent_answered].done(fk.sent[fk.sent_answered].ud, &ans, 0);
        fk.sent_answered++;
    }
    run_for(0.01); /* the fake answers what is left */
    engine_free(fx.e);
    for (size_t i = 0; i < fk.nheld; i++)
        store_item_free(fk.held[i]);
    config_unref(fx.cfg);
    ev_loop_destroy(fx.loop);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Answers claim i with n rows of its provider (or google for a claim by ids). */
static void answer_claim(size_t i, unsigned n)
{
    assert_true(i < fk.nclaims);
    struct claim_call *c = &fk.claims[i];
    struct claimed_account rows[MAXQ];
    assert_true(n <= MAXQ);
    for (unsigned r = 0; r < n; r++) {
        rows[r] = (struct claimed_account){
            .account_id = fk.next_id++,
            .provider = provider_id_from_name(c->provider[0] ? c->provider : "google"),
            .expires_at = ev_now(fx.loop) + 60,
            .claimed_at = ev_now(fx.loop)};
        assert_int_equal(
            keyring_encrypt(fx.cfg->keys, (const uint8_t *)"rt", 2, &rows[r].refresh_ct), 0);
    }
    struct queue_claim qc = {.ok = true, .returned = n, .rows = rows, .nrows = n};
    c->cb(c->ud, &qc);
    for (unsigned r = 0; r < n; r++)
        claimed_account_clear(&rows[r]);
    fk.claims_answered++;
}

static void answer_http(size_t i, long status, const char *body, const char *retry_after)
{
    assert_true(i < fk.nsent);
    struct http_answer ans = {.status = status,
                              .body = body,
                              .body_len = strlen(body),
                              .retry_after = retry_after,
                              .http_version = 11};
    fk.sent[i].done(fk.sent[i].ud, &ans, 0.01);
    fk.sent_answered++;
}

#define OK_BODY "{\"access_token\":\"at\",\"expires_in\":3600,\"token_type\":\"Bearer\"}"

static void answer_all_http(long status, const char *body)
{
    while (fk.sent_answered < fk.nsent)
        answer_http(fk.sent_answered, status, body, NULL);
}

/* The store writes everything it holds. */
static void write_all(void)
{
    size_t n = fk.nheld;
    struct store_item *items[MAXQ];
    memcpy(items, fk.held, n * sizeof *items);
    fk.nheld = 0;
    for (size_t i = 0; i < n; i++) {
        engine_on_store_done(fx.e, items[i], STORE_WRITTEN);
        store_item_free(items[i]);
    }
}

static size_t claims_for(const char *provider, size_t from)
{
    size_t n = 0;
    for (size_t i = from; i < fk.nclaims; i++)
        n += strcmp(fk.claims[i].provider, provider) == 0;
    return n;
}

static bool paused(enum provider_id p, bool *refusing)
{
    bool r;
    bool v = engine_provider_paused(fx.e, p, &r);
    if (refusing)
        *refusing = r;
    return v;
}

/* ---- tests ------------------------------------------------------------------- */

/* Two providers with backlogs share the global budget: neither takes it all. */
static void test_fair_share(void **state)
{
    start(false, 10, 100, 100);
    run_for(0.05);
    assert_int_equal(fk.nclaims, 2);
    assert_int_equal(claims_for("google", 0), 1);
    assert_int_equal(claims_for("github", 0), 1);
    assert_int_equal(fk.claims[0].limit, 5);
    assert_int_equal(fk.claims[1].limit, 5);
}

/* A provider's own cap bounds its claim; what it has in flight counts. */
static void test_provider_cap(void **state)
{
    start(false, 100, 3, 0);
    run_for(0.05);
    assert_int_equal(fk.nclaims, 1);
    assert_int_equal(fk.claims[0].limit, 3);
    answer_claim(0, 3); /* full: more may be due */
    assert_int_equal(fk.nsent, 3);
    run_for(0.05);
    assert_int_equal(fk.nclaims, 1); /* all 3 in flight: nothing to claim */
    answer_http(0, 200, OK_BODY, NULL);
    run_for(0.05);
    assert_int_equal(fk.nclaims, 2);
    assert_int_equal(fk.claims[1].limit, 1);
}

/* The global cap bounds one provider's claim too, requests in flight included. */
static void test_global_cap(void **state)
{
    start(false, 4, 100, 0);
    run_for(0.05);
    assert_int_equal(fk.nclaims, 1);
    assert_int_equal(fk.claims[0].limit, 4);
    answer_claim(0, 4);
    assert_int_equal(engine_in_flight(fx.e), 4);
    run_for(0.05);
    assert_int_equal(fk.nclaims, 1);
}

/* The kicks of many results in one loop turn make one claim, not one each. */
static void test_kicks_coalesce(void **state)
{
    start(false, 100, 50, 0);
    run_for(0.05);
    answer_claim(0, 10); /* not full: no claim asked for by the answer itself */
    answer_all_http(200, OK_BODY);
    write_all(); /* ten results written, ten kicks */
    for (int i = 0; i < 50; i++)
        engine_kick(fx.e);
    ev_run(fx.loop, EVRUN_NOWAIT);
    assert_int_equal(fk.nclaims, 1); /* not at once: the kicks of the next 20 ms join */
    run_for(0.1);
    assert_int_equal(fk.nclaims, 2);
}

/* The provider's overload (429 + Retry-After) pauses it, gives the claim back
 * uncharged, and one probe after the pause resumes it. */
static void test_overload_pause_and_resume(void **state)
{
    start(false, 100, 10, 0);
    fk.backlog = true; /* the due timer looks again while the provider is paused */
    run_for(0.05);
    answer_claim(0, 2);
    answer_http(0, 429, "", "1");
    assert_true(paused(PROVIDER_GOOGLE, NULL));
    assert_int_equal(fk.releases, 1); /* not charged to the account */
    assert_int_equal(fk.nheld, 0);
    answer_http(1, 429, "", "1"); /* sent before the pause: adds nothing */
    run_for(0.3);
    assert_int_equal(fk.nclaims, 1); /* paused: no claim */
    run_for(1.0);
    assert_int_equal(fk.nclaims, 2);
    assert_int_equal(fk.claims[1].limit, 1); /* half-open: one probe */
    answer_claim(1, 1);
    answer_http(2, 200, OK_BODY, NULL);
    assert_false(paused(PROVIDER_GOOGLE, NULL));
    write_all();
    run_for(0.05);
    assert_int_equal(fk.nclaims, 3);
    assert_int_equal(fk.claims[2].limit, 10);
}

/* Consecutive transient failures open the breaker; fewer do not. */
static void test_breaker_opens(void **state)
{
    start(false, 100, 20, 0);
    run_for(0.05);
    answer_claim(0, 8);
    for (size_t i = 0; i < 7; i++)
        answer_http(i, 503, "", NULL);
    assert_false(paused(PROVIDER_GOOGLE, NULL));
    answer_http(7, 503, "", NULL);
    assert_true(paused(PROVIDER_GOOGLE, NULL));
    assert_int_equal(fk.nheld, 8); /* each a failure with its backoff, charged */
    for (size_t i = 0; i < fk.nheld; i++) {
        assert_int_equal(fk.held[i]->kind, STORE_FAILED);
        assert_true(fk.held[i]->retry_at > ev_now(fx.loop));
    }
}

/* A refused client registration pauses the provider; at the probe time the
 * configuration is read again and one account probes it. */
static void test_config_error_probe(void **state)
{
    start(false, 100, 10, 0);
    fk.backlog = true;
    run_for(0.05);
    answer_claim(0, 1);
    answer_http(0, 401, "{\"error\":\"invalid_client\",\"error_description\":\"no\"}", NULL);
    bool refusing;
    assert_true(paused(PROVIDER_GOOGLE, &refusing));
    assert_true(refusing);
    write_all();
    run_for(0.3);
    assert_int_equal(fk.nclaims, 1);
    assert_int_equal(fk.reread, 0);
    run_for(1.0);
    assert_int_equal(fk.reread, 1);
    assert_true(paused(PROVIDER_GOOGLE, &refusing));
    run_for(0.1);
    assert_int_equal(fk.nclaims, 2);
    assert_int_equal(fk.claims[1].limit, 1);
    answer_claim(1, 1);
    answer_http(1, 200, OK_BODY, NULL);
    assert_false(paused(PROVIDER_GOOGLE, &refusing));
    assert_false(refusing);
}

/* --once ends when the claims found nothing more and every result is written. */
static void test_once_finishes(void **state)
{
    start(true, 100, 10, 0);
    run_for(0.05);
    answer_claim(0, 2);
    run_for(0.05);
    assert_false(fk.finished); /* in flight */
    answer_all_http(200, OK_BODY);
    run_for(0.05);
    assert_false(fk.finished); /* unwritten */
    write_all();
    run_for(0.05);
    assert_int_equal(fk.nclaims, 2); /* it looked once more */
    assert_false(fk.finished);
    answer_claim(1, 0);
    run_for(0.05);
    assert_true(fk.finished);
    assert_int_equal(fk.code, 0);
}

/* --once with a failed attempt ends with EXIT_WORK_FAILED. */
static void test_once_failure_code(void **state)
{
    start(true, 100, 10, 0);
    run_for(0.05);
    answer_claim(0, 1);
    answer_http(0, 503, "", NULL);
    write_all();
    run_for(0.05);
    answer_claim(1, 0);
    run_for(0.05);
    assert_true(fk.finished);
    assert_int_equal(fk.code, EXIT_WORK_FAILED);
}

/* The drain after engine_stop waits for what is in flight and unwritten,
 * gives back what waited unsent, and claims nothing more. */
static void test_drain_finishes(void **state)
{
    start(false, 100, 10, 0);
    run_for(0.05);
    answer_claim(0, 2);
    engine_stop(fx.e);
    run_for(0.05);
    assert_false(fk.finished);
    answer_http(0, 200, OK_BODY, NULL);
    run_for(0.05);
    assert_false(fk.finished);
    answer_http(1, 200, OK_BODY, NULL);
    run_for(0.05);
    assert_false(fk.finished); /* two results unwritten */
    write_all();
    run_for(0.05);
    assert_true(fk.finished);
    assert_int_equal(fk.code, 0);
    assert_int_equal(fk.nclaims, 1);
}

/* A request that could not be started is a local failure: its callback never
 * runs, nothing counts as in flight, and the failure is stored. */
static void test_submit_failure(void **state)
{
    start(false, 100, 10, 0);
    run_for(0.05);
    fk.submit_fails = true;
    answer_claim(0, 1);
    assert_int_equal(engine_in_flight(fx.e), 0);
    assert_int_equal(fk.nheld, 1);
    assert_int_equal(fk.held[0]->kind, STORE_FAILED);
    assert_string_equal(fk.held[0]->error, "request_not_started");
    assert_false(paused(PROVIDER_GOOGLE, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fair_share, teardown),
        cmocka_unit_test_teardown(test_provider_cap, teardown),
        cmocka_unit_test_teardown(test_global_cap, teardown),
        cmocka_unit_test_teardown(test_kicks_coalesce, teardown),
        cmocka_unit_test_teardown(test_overload_pause_and_resume, teardown),
        cmocka_unit_test_teardown(test_breaker_opens, teardown),
        cmocka_unit_test_teardown(test_config_error_probe, teardown),
        cmocka_unit_test_teardown(test_once_finishes, teardown),
        cmocka_unit_test_teardown(test_once_failure_code, teardown),
        cmocka_unit_test_teardown(test_drain_finishes, teardown),
        cmocka_unit_test_teardown(test_submit_failure, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
