/*
 * engine.c — the refresh engine's policy (engine.h): when to look for due
 * accounts (kicks, the next-due timer, the safety rescan, notifications),
 * how many to claim per provider within the in-flight and rate limits, each
 * provider's circuit breaker, and one decision per loop turn (before_sleep_cb)
 * on claiming more and on the end of the work. The SQL is the queue's
 * (queue.c), the transport http.c's, the writes the store's; it never sees a
 * plaintext token outside a refresh_attempt.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backoff.h"
#include "breaker.h"
#include "discovery.h"
#include "engine.h"
#include "http.h"
#include "inbound.h"
#include "log.h"
#include "outcome_log.h"
#include "metrics.h"
#include "queue.h"
#include "refresh.h"
#include "timeutil.h"

/* Stop claiming while this many results wait for the database: memory then
 * follows max_in_flight, not the backlog (the benchmark's 100k --once held up
 * to 20,000 results, ~5 kB each, while PostgreSQL was the slower side). */
#define HOLD_MIN 1000
/* Claim at most this many seconds' worth of a rate-limited provider's budget. */
#define RATE_CLAIM_HORIZON_S 2.0

struct job;

/* Scheduling state of one provider: capacity, rate, circuit breaker. */
struct provider_state {
    struct engine *engine; /* its owner: a claim's user data is its provider's state */
    unsigned in_flight;    /* requests sent and not answered */
    unsigned reserved;     /* slots promised to a claim in progress */
    struct job *wait_head; /* claimed, waiting for a rate token */
    struct job *wait_tail;
    unsigned waiting;
    struct token_bucket bucket;
    bool claiming;      /* a claim statement is outstanding */
    bool more;          /* the last claim was full: more may be due */
    double dry_until;   /* ev_now() time: the last claim found nothing (provider_dry) */
    struct breaker brk; /* ev_now() times */
};

struct engine {
    struct ev_loop *loop;
    struct queue *queue;
    struct http *http;
    struct store *store;
    struct discovery *discovery;
    struct metrics *metrics;
    struct engine_callbacks cb;
    struct config *cfg; /* borrowed: the daemon's current one */
    bool once;          /* --once */
    double once_since;  /* --once: wall time the run started */

    struct provider_state prov[PROVIDER_MAX];
    unsigned in_flight; /* all providers, requests sent */
    /* manual requests from oauth_refresh_request, waiting to be claimed */
    int64_t *requested;
    size_t nrequested, caprequested;
    bool claiming_ids;

    ev_prepare before_sleep;  /* the one decision per loop turn */
    ev_timer kick_timer;      /* coalesces "look for work now" */
    ev_timer due_timer;       /* next known due time */
    ev_timer scan_timer;      /* periodic safety rescan */
    ev_timer rate_timer;      /* waiting jobs need a token */
    bool kicked;              /* a look for work was asked for since the last turn */
    bool claim_now;           /* the kick's coalescing time is over: claim this turn */
    double next_due;          /* wall time of the next known due account, 0 = none */
    double requests_deadline; /* ev_now() time by which every request sent has timed out */
    bool wakeup_query_outstanding;
    unsigned releases_outstanding; /* release statements not yet answered */

    bool connected, schema_ok, stopping, finished, listen_deaf;
    bool rereading; /* inside cb.reread_config: engine_on_config keeps config pauses */
    bool once_failed;
};

struct job {
    struct engine *e;
    struct job *next; /* in a provider's wait list */
    struct refresh_attempt ra;
    double sent_at;
    bool probe;
};

static double random_unit(void)
{
    return (double)randombytes_uniform(1u << 30) / (double)(1u << 30);
}

/* ---- provider gates ---------------------------------------------------- */

/* Configured and usable: an issuer's provider once discovery found its token endpoint. */
static bool provider_ready(const struct provider_config *pc)
{
    return pc && pc->token_url;
}

static unsigned provider_free_slots(struct engine *e, enum provider_id p, unsigned global_free)
{
    const struct provider_config *pc = e->cfg->providers[p];
    struct provider_state *ps = &e->prov[p];
    if (!provider_ready(pc) || breaker_paused(&ps->brk, ev_now(e->loop)))
        return 0;
    unsigned used = ps->in_flight + ps->waiting + ps->reserved;
    unsigned cap = pc->max_in_flight;
    unsigned free_slots = used >= cap ? 0 : cap - used;
    if (free_slots > global_free)
        free_slots = global_free;
    if (pc->max_rate > 0) {
        double horizon = pc->max_rate * RATE_CLAIM_HORIZON_S;
        unsigned by_rate = horizon < 1 ? 1 : (unsigned)horizon;
        by_rate = by_rate > ps->waiting ? by_rate - ps->waiting : 0;
        if (free_slots > by_rate)
            free_slots = by_rate;
    }
    if (breaker_half_open(&ps->brk) && free_slots > 1)
        free_slots = 1; /* half-open: a single probe */
    return free_slots;
}

static unsigned global_free_slots(struct engine *e)
{
    unsigned used = e->in_flight;
    for (int p = 0; p < PROVIDER_MAX; p++)
        used += e->prov[p].waiting + e->prov[p].reserved;
    return used >= e->cfg->max_in_flight ? 0 : e->cfg->max_in_flight - used;
}

/* The configuration is read again (once per probe) before a configuration probe. */
static bool provider_config_reread(struct engine *e)
{
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct breaker *b = &e->prov[p].brk;
        if (breaker_wants_reread(b, ev_now(e->loop))) {
            b->config_reread = true;
            e->rereading = true;
            e->cb.reread_config(e->cb.ud);
            e->rereading = false;
            return true; /* one re-read serves every provider */
        }
    }
    return false;
}

/* What every statement of this engine is scoped by: ready providers, the timing. */
static void queue_scope_of(struct engine *e, struct queue_scope *s, const char **names)
{
    *s = (struct queue_scope){.providers = names,
                              .lead_ms = e->cfg->lead_time_ms,
                              .jitter_ms = e->cfg->jitter_ms,
                              .lease_ms = config_lease_ms(e->cfg),
                              .once_since = e->once ? e->once_since : 0};
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (provider_ready(e->cfg->providers[p]))
            names[s->nproviders++] = provider_id_name((enum provider_id)p);
}

/* ---- kicking and timers -------------------------------------------------- */

/* Kicks within this long are served by one look for work: every finished
 * request kicks, and at 2,800 refreshes/s a claim per kick meant thousands of
 * claims of a few rows each (benchmark: 6,455 claims of 26 rows in 60 s). */
#define KICK_COALESCE_S 0.02

/* before_sleep_cb makes a turn's kicks one coalesced claim. */
void engine_kick(struct engine *e)
{
    e->kicked = true;
}

/*
 * A provider whose last claim found nothing is "dry": the kicks of finishing
 * requests do not claim for it again for DRY_RECHECK_S, since each such claim
 * walks the whole due range of the other providers (account_state does not
 * know providers): at the end of a 1,000,000-account backlog, 550 ms per futile
 * claim, dozens a second. What can make one of its accounts claimable wakes it
 * at once: the due and rescan timers (which next_wakeup arms for due times,
 * retries and leases running out), a notification, a reconnection, a reload,
 * or one of its own claims given back by a write. The recheck bounds the wait
 * for what nothing announces while other providers keep the engine busy (an
 * account simply coming due: next_wakeup is not asked while claims come back
 * full), whatever scan_interval is.
 */
#define DRY_RECHECK_S 2.0

static bool provider_dry(struct engine *e, enum provider_id p)
{
    return e->prov[p].dry_until > ev_now(e->loop);
}

static void wake_providers(struct engine *e)
{
    for (int p = 0; p < PROVIDER_MAX; p++)
        e->prov[p].dry_until = 0;
}

static void arm_due_timer(struct engine *e, double delay)
{
    double scan = (double)e->cfg->scan_interval_ms / 1000.0;
    /* Written so that a NaN fails both tests into the safe side. */
    if (!(delay <= scan))
        delay = scan;
    if (!(delay >= 0.05))
        delay = 0.05;
    timer_arm(e->loop, &e->due_timer, delay, 0.);
}

static void due_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    wake_providers(w->data);
    engine_kick(w->data);
}

static void scan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct engine *e = w->data;
    log_debug("safety rescan");
    wake_providers(e);
    engine_kick(e);
    if (e->connected)
        store_check_revoked(e->store); /* a notification lost to a reconnection */
}

static void kick_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct engine *e = w->data;
    e->claim_now = true; /* claimed by before_sleep_cb on this turn */
}

/* ---- running jobs ---------------------------------------------------------- */

static void release_done_cb(void *ud)
{
    struct engine *e = ud;
    e->releases_outstanding--;
}

static void release_ids(struct engine *e, const int64_t *ids, size_t n)
{
    if (queue_release(e->queue, ids, n, release_done_cb, e) == 0)
        e->releases_outstanding++;
    else if (n == 1)
        log_debug("could not release account %" PRId64 "; its lease runs out", ids[0]);
}

static void release_one(struct engine *e, int64_t account_id)
{
    release_ids(e, &account_id, 1);
}

static void job_free(struct job *job)
{
    refresh_attempt_clear(&job->ra);
    free(job);
}

static void job_http_done_cb(void *ud, const struct http_answer *ans, double elapsed_s)
{
    struct job *job = ud;
    struct engine *e = job->e;
    enum provider_id p = (enum provider_id)job->ra.acct.provider;
    struct provider_state *ps = &e->prov[p];
    ps->in_flight--;
    e->in_flight--;

    struct token_result res;
    memset(&res, 0, sizeof res);
    res.retry_after_ms = -1;
    job->ra.ops->read_answer(ans, &res);
    metrics_observe_answer(e->metrics, p, &res, elapsed_s,
                           job->ra.acct.expires_at - (time_now_wall() - elapsed_s));
    /* The request body held the refresh token and client secret. */
    provider_request_clear(&job->ra.req);

    outcome_log_answer(&job->ra, &res, ans->status, e->cfg, ps->brk.config_error);
    struct breaker_timing bt = {.retry_min_ms = e->cfg->retry_min_ms,
                                .retry_max_ms = e->cfg->retry_max_ms,
                                .config_error_probe_ms = e->cfg->config_error_probe_ms};
    breaker_update(&ps->brk, &res, job->probe, ev_now(e->loop), &bt);
    if (res.outcome != OUTCOME_SUCCESS && res.outcome != OUTCOME_REVOKED)
        e->once_failed = true;
    if (res.retry_rule == RETRY_PAUSE) {
        /* The provider's overload is not the account's failure: no attempt is
         * charged; the claim is given back and taken again after the pause. */
        token_result_clear(&res);
        release_one(e, job->ra.acct.account_id);
        job_free(job);
        engine_kick(e);
        return;
    }

    /* Encrypt under the current primary key: a reload may have retired the
     * one this job started with. */
    struct store_item *item =
        refresh_conclude(&job->ra, &res, e->cfg->keys, time_now_wall(), random_unit());
    if (item)
        store_add(e->store, item);
    else
        refresh_result_lost(&res, job->ra.acct.account_id); /* aborts if res rotated */
    /* Out of memory reading a 2xx answer: whether it rotated is unknowable, and the
     * next attempt would send a token the provider may have retired. Stop loudly. */
    if (item && ans->transport_error == 0 && ans->status >= 200 && ans->status < 300 &&
        strcmp(res.error, "out_of_memory") == 0)
        refresh_answer_unreadable(job->ra.acct.account_id);
    token_result_clear(&res);
    job_free(job);
    engine_kick(e);
}

static void job_fail_early(struct engine *e, struct job *job, const char *code, const char *detail,
                           int64_t retry_after_ms)
{
    struct log_ctx ctx = {.account_id = job->ra.acct.account_id,
                          .provider =
                              job->ra.acct.provider >= 0
                                  ? provider_id_name((enum provider_id)job->ra.acct.provider)
                                  : NULL,
                          .error = code};
    log_event(LOG_WARNING, MSGID_REFRESH_FAILED, &ctx, "account %" PRId64 ": %s (%s)",
              job->ra.acct.account_id, detail, code);
    e->once_failed = true;
    metrics_count(e->metrics, job->ra.acct.provider, METRICS_LOCAL_ERROR);
    struct store_item *item = refresh_failure_item(e->cfg, &job->ra.acct, code, retry_after_ms,
                                                   time_now_wall(), random_unit());
    if (item)
        store_add(e->store, item);
    job_free(job);
}

static void job_send(struct engine *e, struct job *job)
{
    enum provider_id p = (enum provider_id)job->ra.acct.provider;
    struct provider_state *ps = &e->prov[p];
    const struct config *cfg = job->ra.cfg;
    int64_t connect_ms = cfg->request_timeout_ms < 10000 ? cfg->request_timeout_ms : 10000;
    struct http_request req = {
        .url = job->ra.req.url,
        .body = job->ra.req.body.data,
        .body_len = job->ra.req.body.len,
        .headers = job->ra.req.headers,
        .timeout_ms = cfg->request_timeout_ms,
        .connect_timeout_ms = connect_ms,
    };
    if (http_submit(e->http, &req, job_http_done_cb, job) < 0) {
        /* Out of memory, or curl refused the handle: a local failure that
         * tells nothing about the provider (so no probe), retried as usual. */
        job_fail_early(e, job, "request_not_started", "could not start the request", -1);
        return;
    }
    /* The callback comes later, from the loop (http.h): account for it now. */
    job->sent_at = ev_now(e->loop);
    /* Shutdown waits for this: the answer may carry a rotated refresh token. */
    double deadline = job->sent_at + (double)cfg->request_timeout_ms / 1000.0;
    if (deadline > e->requests_deadline)
        e->requests_deadline = deadline;
    if (breaker_probe_due(&ps->brk, ev_now(e->loop))) {
        ps->brk.probing = true;
        job->probe = true;
    }
    ps->in_flight++;
    e->in_flight++;
}

static void wait_push(struct provider_state *ps, struct job *job)
{
    job->next = NULL;
    if (ps->wait_tail)
        ps->wait_tail->next = job;
    else
        ps->wait_head = job;
    ps->wait_tail = job;
    ps->waiting++;
}

static struct job *wait_pop(struct provider_state *ps)
{
    struct job *job = ps->wait_head;
    if (!job)
        return NULL;
    ps->wait_head = job->next;
    if (!ps->wait_head)
        ps->wait_tail = NULL;
    ps->waiting--;
    job->next = NULL;
    return job;
}

/* Sends waiting jobs while the provider's token bucket allows. */
static void drain_waiting(struct engine *e)
{
    double now = ev_now(e->loop);
    double next_wait = -1;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct provider_state *ps = &e->prov[p];
        while (ps->wait_head) {
            if (!token_bucket_take(&ps->bucket, now)) {
                double w = token_bucket_wait(&ps->bucket, now);
                if (next_wait < 0 || w < next_wait)
                    next_wait = w;
                break;
            }
            job_send(e, wait_pop(ps));
        }
    }
    if (next_wait >= 0 && !ev_is_active(&e->rate_timer))
        timer_arm(e->loop, &e->rate_timer, next_wait > 0.001 ? next_wait : 0.001, 0.);
}

static void rate_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    drain_waiting(w->data);
}

static void job_start(struct engine *e, struct claimed_account *acct)
{
    if (store_pending(e->store) > 0 && store_has_account(e->store, acct->account_id)) {
        /* Its last result is not written yet: refreshing again with the stored
         * token could burn a rotated one. Give the claim back. */
        log_debug("account %" PRId64 ": result still unwritten, not refreshing again",
                  acct->account_id);
        release_one(e, acct->account_id);
        claimed_account_clear(acct);
        return;
    }
    struct job *job = calloc(1, sizeof *job);
    if (!job) {
        claimed_account_clear(acct);
        return; /* the lease runs out and the account is claimed again */
    }
    job->e = e;
    char code[64], detail[ERRBUF_LEN];
    if (refresh_prepare(&job->ra, e->cfg, acct, code, sizeof code, detail, sizeof detail) < 0) {
        /* Nothing will fix these by itself: wait the longest retry interval. */
        job_fail_early(e, job, code, detail, e->cfg->retry_max_ms);
        return;
    }
    wait_push(&e->prov[job->ra.acct.provider], job);
}

/* ---- next wake-up ---------------------------------------------------------- */

static void wakeup_done_cb(void *ud, enum queue_wakeup w, double due, const char *text)
{
    struct engine *e = ud;
    e->wakeup_query_outstanding = false;
    double scan = (double)e->cfg->scan_interval_ms / 1000.0;
    switch (w) {
    case QUEUE_WAKEUP_FAILED:
        return;
    case QUEUE_WAKEUP_BAD:
        log_warning("the next due time is not a number (%.40s); looking again in %.0fs", text,
                    scan);
        /* fall through */
    case QUEUE_WAKEUP_NONE:
        e->next_due = 0;
        arm_due_timer(e, scan);
        return;
    case QUEUE_WAKEUP_AT:
        break;
    }
    e->next_due = due;
    double delay = e->next_due - time_now_wall();
    /* Due now but not claimable (capacity, paused provider): the end of a
     * request or the pause kicks us; do not spin on the timer. */
    arm_due_timer(e, delay < 0.25 ? 0.25 : delay);
}

static void query_next_wakeup(struct engine *e)
{
    if (e->once || e->wakeup_query_outstanding || !e->connected || e->stopping)
        return;
    const char *names[PROVIDER_MAX];
    struct queue_scope s;
    queue_scope_of(e, &s, names);
    if (queue_next_wakeup(e->queue, &s, wakeup_done_cb, e) == 0)
        e->wakeup_query_outstanding = true;
}

/* ---- claiming -------------------------------------------------------------- */

static void start_claimed_rows(struct engine *e, struct queue_claim *c)
{
    for (size_t i = 0; i < c->nrows; i++) {
        struct claimed_account *acct = &c->rows[i];
        if (e->stopping) {
            /* The claim crossed SIGTERM: give it back for another instance now. */
            release_one(e, acct->account_id);
            continue;
        }
        job_start(e, acct);
    }
    drain_waiting(e);
}

static bool claims_outstanding(const struct engine *e)
{
    if (e->claiming_ids)
        return true;
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (e->prov[p].claiming)
            return true;
    return false;
}

/* After a claim: only its provider's full batch asks for another claim at once;
 * other providers' backlogs are claimed when their capacity frees up. */
static void claim_answered(struct engine *e, struct queue_claim *c, bool more)
{
    log_debug("claimed %zu accounts", c->returned);
    if (!c->ok)
        return; /* reconnection (or the rescan) tries again */
    if (more || e->nrequested)
        engine_kick(e);
    else if (!claims_outstanding(e))
        query_next_wakeup(e);
}

/* The providers' states are in an array: a claim's user data is its element. */
static void claim_due_cb(void *ud, struct queue_claim *c)
{
    struct provider_state *ps = ud;
    struct engine *e = ps->engine;
    unsigned limit = ps->reserved;
    ps->claiming = false;
    ps->reserved = 0;
    if (c->ok) {
        start_claimed_rows(e, c);
        ps->more = c->returned >= limit;
        ps->dry_until = c->returned == 0 ? ev_now(e->loop) + DRY_RECHECK_S : 0;
    }
    claim_answered(e, c, c->ok && ps->more);
}

static void claim_ids_cb(void *ud, struct queue_claim *c)
{
    struct engine *e = ud;
    e->claiming_ids = false;
    if (c->ok)
        start_claimed_rows(e, c);
    claim_answered(e, c, false);
}

static void claim_provider(struct engine *e, enum provider_id p, unsigned limit)
{
    struct provider_state *ps = &e->prov[p];
    const char *names[PROVIDER_MAX];
    struct queue_scope s;
    queue_scope_of(e, &s, names);
    log_debug("claiming up to %u %s accounts", limit, provider_id_name(p));
    if (queue_claim_due(e->queue, &s, provider_id_name(p), limit, claim_due_cb, ps) == 0) {
        ps->claiming = true;
        ps->reserved = limit;
    }
}

static void claim_requested(struct engine *e)
{
    const char *names[PROVIDER_MAX];
    struct queue_scope s;
    queue_scope_of(e, &s, names);
    if (queue_claim_ids(e->queue, &s, e->requested, e->nrequested, claim_ids_cb, e) == 0) {
        e->claiming_ids = true;
        e->nrequested = 0;
    }
}

static void claim_more(struct engine *e)
{
    if (e->stopping || !e->connected || !e->schema_ok)
        return;
    size_t hold = 2 * (size_t)e->cfg->max_in_flight;
    if (hold < HOLD_MIN)
        hold = HOLD_MIN;
    if (store_pending(e->store) >= hold) {
        log_debug("not claiming: %zu results wait for the database", store_pending(e->store));
        return;
    }
    if (e->nrequested && !e->claiming_ids && !e->once)
        claim_requested(e);
    if (provider_config_reread(e)) {
        engine_kick(e); /* claim under the configuration now in force */
        return;
    }
    /* Share the global in-flight budget between the providers that may claim,
     * so one provider's backlog cannot starve the others. */
    unsigned global_free = global_free_slots(e);
    unsigned sharing = 0;
    for (int p = 0; p < PROVIDER_MAX; p++)
        sharing += !e->prov[p].claiming && !provider_dry(e, (enum provider_id)p) &&
                   provider_free_slots(e, (enum provider_id)p, global_free) > 0;
    unsigned share = sharing ? (global_free + sharing - 1) / sharing : 0;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct provider_state *ps = &e->prov[p];
        if (ps->claiming || provider_dry(e, (enum provider_id)p))
            continue;
        unsigned global_now = global_free_slots(e);
        unsigned free_slots =
            provider_free_slots(e, (enum provider_id)p, share < global_now ? share : global_now);
        if (free_slots == 0)
            continue;
        unsigned limit = free_slots < e->cfg->batch_size ? free_slots : e->cfg->batch_size;
        claim_provider(e, (enum provider_id)p, limit);
    }
    if (!claims_outstanding(e)) {
        log_debug("nothing to claim now: %u in flight, %u waiting, %zu results unwritten",
                  e->in_flight, engine_waiting(e), store_pending(e->store));
        query_next_wakeup(e);
    }
}

/* ---- notifications ----------------------------------------------------------- */

static void add_requested(struct engine *e, int64_t id)
{
    for (size_t i = 0; i < e->nrequested; i++)
        if (e->requested[i] == id)
            return;
    if (e->nrequested == e->caprequested) {
        size_t cap = e->caprequested ? e->caprequested * 2 : 64;
        if (cap > 100000)
            return; /* a flood of requests: the rest wait for their due time */
        int64_t *p = realloc(e->requested, cap * sizeof *p);
        if (!p)
            return;
        e->requested = p;
        e->caprequested = cap;
    }
    e->requested[e->nrequested++] = id;
}

/* Any database role may notify: payloads are parsed by inbound.h, which
 * returns only valid ids and finite epochs, and everything else is dropped. */
void engine_on_notify(struct engine *e, const char *channel, const char *payload)
{
    int64_t id;
    log_debug("notification on %s: %.80s", channel, payload);
    if (strcmp(channel, "oauth_refresh_request") == 0) {
        if (!inbound_refresh_request(payload, &id)) {
            log_warning("ignoring oauth_refresh_request with payload that is not an account id");
            return;
        }
        log_info("refresh of account %" PRId64 " requested", id);
        add_requested(e, id);
        engine_kick(e);
        return;
    }
    if (strcmp(channel, "oauth_refreshd_account_changed") == 0) {
        double expires;
        if (!inbound_account_changed(payload, &id, &expires)) {
            log_debug("ignoring oauth_refreshd_account_changed with a malformed payload");
            return;
        }
        /* It may be a revoked account's new (or re-saved) refresh token. */
        store_check_revoked(e->store);
        wake_providers(e);
        double earliest = expires - (double)(e->cfg->lead_time_ms + e->cfg->jitter_ms) / 1000.0;
        double delay = earliest - time_now_wall();
        if (delay <= 0)
            engine_kick(e);
        else if (!ev_is_active(&e->due_timer) || delay < ev_timer_remaining(e->loop, &e->due_timer))
            arm_due_timer(e, delay);
    }
}

/* ---- store outcomes ------------------------------------------------------------ */

void engine_on_store_done(struct engine *e, const struct store_item *item, enum store_fate fate)
{
    /* The store decided the result's fate: counted here, once (metrics.h). */
    if (item->claimed_at > 0)
        metrics_observe_claim_to_written(e->metrics, time_now_wall() - item->claimed_at);
    metrics_observe_store(e->metrics, item, fate);
    outcome_log_stored(item, fate);
    bool written = fate == STORE_WRITTEN;
    /* The write released the claim: that account (after a failure) or others
     * may be claimable now, and the next due time may have moved. A claim given
     * back without a write (the row changed meanwhile) is claimable at once. */
    if (!written)
        e->prov[item->provider].dry_until = 0;
    engine_kick(e);
}

void engine_on_revoked_checked(struct engine *e, size_t lifted)
{
    if (lifted > 0) {
        wake_providers(e);
        engine_kick(e);
    }
}

/* ---- the decision of each loop turn --------------------------------------------- */

unsigned engine_waiting(const struct engine *e)
{
    unsigned n = 0;
    for (int p = 0; p < PROVIDER_MAX; p++)
        n += e->prov[p].waiting;
    return n;
}

/* Nothing claimed, in flight or unwritten. */
static bool engine_idle(const struct engine *e)
{
    return e->in_flight == 0 && engine_waiting(e) == 0 && !claims_outstanding(e) &&
           store_pending(e->store) == 0 && e->releases_outstanding == 0;
}

/*
 * Stopping with the database away and no request in flight: nothing can
 * happen any more that waiting would improve. The results held for the
 * database are either spooled (rotated ones: the next start replays them)
 * or can be had again by refreshing (the others); daemon.c spools any
 * rotated one still unspooled on its way out. Waiting shutdown_timeout for a
 * reconnection would only delay a `systemctl restart` during an outage.
 */
static bool drain_over(const struct engine *e)
{
    if (engine_idle(e))
        return true;
    return !e->connected && e->in_flight == 0 && engine_waiting(e) == 0;
}

/* --once: everything due when the run started has been claimed and has ended. */
static bool once_over(struct engine *e)
{
    if (!e->once || !e->schema_ok || !engine_idle(e) || !store_revoked_check_idle(e->store))
        return false;
    if (e->kicked || e->claim_now || ev_is_active(&e->kick_timer) ||
        (e->discovery && discovery_first_pending(e->discovery)))
        return false;
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (e->prov[p].more && !breaker_paused(&e->prov[p].brk, ev_now(e->loop)))
            return false;
    return true;
}

static void finish(struct engine *e, int code)
{
    e->finished = true;
    ev_prepare_stop(e->loop, &e->before_sleep);
    e->cb.finished(e->cb.ud, code);
}

/*
 * Runs once per loop turn, after every callback of the turn and before the
 * loop sleeps (like redis's beforesleep): the turn's kicks become one
 * coalesced claim, a claim whose coalescing time is over is made, and then
 * the end of the work is decided: the drain after engine_stop, or --once.
 */
static void before_sleep_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct engine *e = w->data;
    if (e->kicked && !e->stopping && !ev_is_active(&e->kick_timer))
        timer_arm(loop, &e->kick_timer, KICK_COALESCE_S, 0.);
    e->kicked = false;
    if (e->claim_now) {
        e->claim_now = false;
        claim_more(e);
        if (e->kicked && !ev_is_active(&e->kick_timer)) /* claim_more asked for another look */
            timer_arm(loop, &e->kick_timer, KICK_COALESCE_S, 0.);
        e->kicked = false;
    }
    if (e->stopping ? drain_over(e) : once_over(e))
        finish(e, e->stopping || !e->once_failed ? 0 : EXIT_WORK_FAILED);
}

/* ---- lifecycle -------------------------------------------------------------- */

struct engine *engine_new(const struct engine_deps *deps, const struct engine_callbacks *cb,
                          struct config *cfg, bool once, double once_since)
{
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    *e = (struct engine){.loop = deps->loop,
                         .queue = deps->queue,
                         .http = deps->http,
                         .store = deps->store,
                         .discovery = deps->discovery,
                         .metrics = deps->metrics,
                         .cb = *cb,
                         .cfg = cfg,
                         .once = once,
                         .once_since = once_since};
    for (int p = 0; p < PROVIDER_MAX; p++) {
        e->prov[p].engine = e;
        e->prov[p].brk.provider = (enum provider_id)p;
    }
    ev_prepare_init(&e->before_sleep, before_sleep_cb);
    e->before_sleep.data = e;
    ev_prepare_start(e->loop, &e->before_sleep);
    ev_init(&e->kick_timer, kick_timer_cb);
    timer_set(&e->kick_timer, 0., 0.);
    e->kick_timer.data = e;
    ev_init(&e->due_timer, due_timer_cb);
    timer_set(&e->due_timer, 1., 0.);
    e->due_timer.data = e;
    double scan = (double)cfg->scan_interval_ms / 1000.0;
    ev_init(&e->scan_timer, scan_timer_cb);
    timer_set(&e->scan_timer, scan, scan);
    e->scan_timer.data = e;
    ev_init(&e->rate_timer, rate_timer_cb);
    timer_set(&e->rate_timer, 0., 0.);
    e->rate_timer.data = e;
    engine_on_config(e, cfg);
    if (!once)
        ev_timer_start(e->loop, &e->scan_timer);
    return e;
}

void engine_on_config(struct engine *e, struct config *cfg)
{
    e->cfg = cfg;
    double now = ev_now(e->loop);
    for (int p = 0; p < PROVIDER_MAX; p++) {
        const struct provider_config *pc = e->cfg->providers[p];
        struct provider_state *ps = &e->prov[p];
        token_bucket_init(&ps->bucket, pc ? pc->max_rate : 0, now);
        ps->dry_until = 0; /* a reload may have changed what is claimable */
        /* A reload is the operator's answer to a credentials error; the
         * engine's own re-read before a probe is not: the probe decides. */
        if (!e->rereading)
            breaker_reload(&ps->brk);
    }
    double scan =
        e->listen_deaf ? engine_deaf_rescan_interval(e) : (double)e->cfg->scan_interval_ms / 1000.0;
    if (ev_is_active(&e->scan_timer))
        timer_arm(e->loop, &e->scan_timer, scan, scan);
    store_set_lead(e->store, e->cfg->lead_time_ms);
    engine_kick(e);
}

void engine_on_db(struct engine *e, bool connected)
{
    e->connected = connected;
    e->schema_ok = e->schema_ok && connected;
}

void engine_on_schema_ok(struct engine *e)
{
    e->connected = true;
    e->schema_ok = true;
    /* Notifications sent while we were away are gone: catch up with a scan. */
    for (int p = 0; p < PROVIDER_MAX; p++) {
        e->prov[p].claiming = false;
        e->prov[p].reserved = 0;
    }
    e->claiming_ids = false;
    e->wakeup_query_outstanding = false;
    wake_providers(e);
    store_flush(e->store);
    store_check_revoked(e->store); /* revoked accounts the application wrote meanwhile */
    engine_kick(e);
}

void engine_on_discovery(struct engine *e, bool ok)
{
    if (!ok && e->once)
        e->once_failed = true; /* its accounts are not refreshed by this run */
    if (ok)
        engine_kick(e);
}

/* Claimed but never sent: given back so that another instance can take them now. */
static void release_waiting(struct engine *e)
{
    size_t n = 0, cap = 0;
    for (int p = 0; p < PROVIDER_MAX; p++)
        cap += e->prov[p].waiting;
    int64_t *ids = cap ? malloc(cap * sizeof *ids) : NULL;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct job *job;
        while ((job = wait_pop(&e->prov[p]))) {
            if (ids)
                ids[n++] = job->ra.acct.account_id;
            job_free(job);
        }
    }
    if (n > 0 && e->connected) {
        release_ids(e, ids, n);
        log_info("released %zu claimed accounts that were not sent yet", n);
    }
    free(ids);
}

void engine_stop(struct engine *e)
{
    e->stopping = true;
    ev_timer_stop(e->loop, &e->kick_timer);
    ev_timer_stop(e->loop, &e->due_timer);
    ev_timer_stop(e->loop, &e->scan_timer);
    ev_timer_stop(e->loop, &e->rate_timer);
    e->nrequested = 0;
    release_waiting(e);
}

/* After db_free and http_free: nothing can answer any more. What still waits
 * for a rate token is not given back (the connection is gone): its leases run out. */
void engine_free(struct engine *e)
{
    if (!e)
        return;
    ev_timer_stop(e->loop, &e->kick_timer);
    ev_timer_stop(e->loop, &e->due_timer);
    ev_timer_stop(e->loop, &e->scan_timer);
    ev_timer_stop(e->loop, &e->rate_timer);
    ev_prepare_stop(e->loop, &e->before_sleep);
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct job *job;
        while ((job = wait_pop(&e->prov[p])))
            job_free(job);
    }
    free(e->requested);
    free(e);
}

unsigned engine_in_flight(const struct engine *e)
{
    return e->in_flight;
}

double engine_requests_deadline(const struct engine *e)
{
    return e->requests_deadline;
}

double engine_next_due(const struct engine *e)
{
    return e->next_due;
}

bool engine_provider_paused(const struct engine *e, enum provider_id p, bool *refusing)
{
    const struct breaker *b = &e->prov[p].brk;
    *refusing = b->config_error;
    return breaker_shows_paused(b, ev_now(e->loop));
}

/* While notifications do not arrive, nothing announces an account the
 * application changed or one that came due early: rescan this often. */
#define DEAF_RESCAN_S 5.0

double engine_deaf_rescan_interval(const struct engine *e)
{
    double scan = (double)e->cfg->scan_interval_ms / 1000.0;
    return scan < DEAF_RESCAN_S ? scan : DEAF_RESCAN_S;
}

void engine_on_listen_deaf(struct engine *e, bool deaf)
{
    e->listen_deaf = deaf;
    if (!ev_is_active(&e->scan_timer))
        return; /* --once, or stopping */
    double scan = deaf ? engine_deaf_rescan_interval(e) : (double)e->cfg->scan_interval_ms / 1000.0;
    timer_arm(e->loop, &e->scan_timer, scan, scan);
    if (deaf) {
        wake_providers(e);
        engine_kick(e);
    }
}
