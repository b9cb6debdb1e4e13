/*
 * engine.c — finding, claiming and running refreshes. It decides when to
 * look for due accounts (kicks, the next-due timer, the safety rescan,
 * notifications), claims them per provider within the in-flight and rate
 * limits, runs each one (refresh.c prepares and concludes, http.c carries the
 * request), keeps each provider's circuit breaker, and hands every outcome to
 * the store. It never writes SQL results itself and never sees a plaintext
 * token outside a refresh_attempt.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "daemon_ctx.h"
#include "discovery.h"
#include "inbound.h"
#include "log.h"
#include "refresh.h"
#include "strbuf.h"
#include "timeutil.h"

/* Stop claiming while this many results wait for the database: memory then
 * follows max_in_flight, not the backlog (the benchmark's 100k --once held up
 * to 20,000 results, ~5 kB each, while PostgreSQL was the slower side). */
#define HOLD_MIN 1000
/* Consecutive transient failures that pause a provider. */
#define BREAKER_THRESHOLD 8
/* Claim at most this many seconds' worth of a rate-limited provider's budget. */
#define RATE_CLAIM_HORIZON_S 2.0

struct job {
    struct daemon *d;
    struct job *next; /* in a provider's wait list */
    struct refresh_attempt ra;
    double sent_at;
    bool probe;
};

static const char *const claim_columns =
    "SELECT account_id, provider, refresh_token, scope, extract(epoch FROM expires_at), attempts";

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

static bool provider_paused(struct daemon *d, enum provider_id p)
{
    struct provider_state *ps = &d->prov[p];
    if (ps->config_error) /* until its probe time; then one probe */
        return ev_now(d->loop) < ps->config_probe_at || ps->probing;
    if (ps->paused_until == 0)
        return false;
    if (ev_now(d->loop) < ps->paused_until)
        return true;
    /* The pause is over: let one probe through before opening fully. */
    return ps->probing;
}

static unsigned provider_free_slots(struct daemon *d, enum provider_id p, unsigned global_free)
{
    const struct provider_config *pc = d->cfg->providers[p];
    struct provider_state *ps = &d->prov[p];
    if (!provider_ready(pc) || provider_paused(d, p))
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
    if ((ps->paused_until != 0 || ps->config_error) && free_slots > 1)
        free_slots = 1; /* half-open: a single probe */
    return free_slots;
}

static unsigned global_free_slots(struct daemon *d)
{
    unsigned used = d->in_flight;
    for (int p = 0; p < PROVIDER_MAX; p++)
        used += d->prov[p].waiting + d->prov[p].reserved;
    return used >= d->cfg->max_in_flight ? 0 : d->cfg->max_in_flight - used;
}

static void provider_pause(struct daemon *d, enum provider_id p, double seconds, const char *why)
{
    struct provider_state *ps = &d->prov[p];
    double max_s = (double)d->cfg->retry_max_ms / 1000.0;
    if (seconds > max_s)
        seconds = max_s;
    if (seconds < 1)
        seconds = 1;
    bool was_paused = ps->paused_until != 0;
    ps->paused_until = ev_now(d->loop) + seconds;
    ps->probing = false;
    struct log_ctx ctx = {.provider = provider_id_name(p), .error = why};
    log_event(was_paused ? LOG_INFO : LOG_WARNING, MSGID_PROVIDER_PAUSED, &ctx,
              "provider %s paused for %.0fs after %s", provider_id_name(p), seconds, why);
}

/*
 * Before a provider paused for a configuration error is probed, the
 * configuration and its secret files are read again (once per probe), so a
 * secret fixed on disk is used without a SIGHUP; a fix made only at the
 * provider is seen by the probe itself.
 */
static bool provider_config_reread(struct daemon *d)
{
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct provider_state *ps = &d->prov[p];
        if (ps->config_error && !ps->probing && !ps->config_reread &&
            ev_now(d->loop) >= ps->config_probe_at) {
            ps->config_reread = true;
            daemon_reread_config(d);
            return true; /* one re-read serves every provider */
        }
    }
    return false;
}

/* A paused provider's next request is its probe. */
static bool provider_probe_due(struct daemon *d, const struct provider_state *ps)
{
    if (ps->config_error)
        return ev_now(d->loop) >= ps->config_probe_at;
    return ps->paused_until != 0 && ev_now(d->loop) >= ps->paused_until;
}

/*
 * The provider refused our client registration: say so loudly once
 * (log_outcome), then let one account probe it every config_error_probe, so
 * that a fix made at the provider (or a secret that was only late) is seen
 * without a reload.
 */
static void provider_config_pause(struct daemon *d, enum provider_id p, bool probe)
{
    struct provider_state *ps = &d->prov[p];
    double every = (double)d->cfg->config_error_probe_ms / 1000.0;
    bool was = ps->config_error;
    if (was && !probe)
        return; /* sent before the pause: nothing new */
    ps->config_error = true;
    ps->config_probe_at = ev_now(d->loop) + every;
    ps->config_reread = false;
    if (probe)
        ps->probing = false;
    if (probe && was) {
        struct log_ctx ctx = {.provider = provider_id_name(p), .error = ps->last_error};
        log_event(LOG_INFO, NULL, &ctx,
                  "provider %s still refuses our client registration (%s); next probe in %.0fs",
                  provider_id_name(p), ps->last_error, every);
    }
}

/*
 * The provider's own overload (429, 408, Retry-After, rate-limit pages): pause
 * it for its Retry-After, else for a pause that grows from retry_min. Answers
 * to requests sent before the pause began add nothing and do not lengthen it.
 */
static void provider_overload_pause(struct daemon *d, enum provider_id p,
                                    const struct token_result *res, bool probe)
{
    struct provider_state *ps = &d->prov[p];
    double now = ev_now(d->loop);
    bool paused = ps->paused_until > now;
    double len;
    if (res->retry_after_ms > 0) {
        len = (double)res->retry_after_ms / 1000.0;
    } else if (paused && !probe) {
        return;
    } else {
        double base = (double)d->cfg->retry_min_ms / 1000.0;
        len = base * pow(2.0, ps->pauses < 16 ? ps->pauses : 16);
        ps->pauses++;
    }
    if (paused && now + len <= ps->paused_until)
        return;
    provider_pause(d, p, len, res->error);
}

static void provider_resume(struct daemon *d, enum provider_id p)
{
    struct provider_state *ps = &d->prov[p];
    if (ps->config_error) {
        struct log_ctx ctx = {.provider = provider_id_name(p)};
        log_event(LOG_NOTICE, MSGID_PROVIDER_RESUMED, &ctx,
                  "provider %s resumed: it accepts our client registration again",
                  provider_id_name(p));
        ps->config_error = false;
        ps->config_probe_at = 0;
        ps->config_reread = false;
    } else if (ps->paused_until != 0) {
        struct log_ctx ctx = {.provider = provider_id_name(p)};
        log_event(LOG_NOTICE, MSGID_PROVIDER_RESUMED, &ctx, "provider %s resumed",
                  provider_id_name(p));
    }
    ps->paused_until = 0;
    ps->probing = false;
    ps->pauses = 0;
    ps->consecutive_failures = 0;
}

/* ---- kicking and timers -------------------------------------------------- */

/* Kicks within this long are served by one look for work: every finished
 * request kicks, and at 2,800 refreshes/s a claim per kick meant thousands of
 * claims of a few rows each (benchmark: 6,455 claims of 26 rows in 60 s). */
#define KICK_COALESCE_S 0.02

void engine_kick(struct daemon *d)
{
    if (!ev_is_active(&d->kick_timer))
        timer_arm(d->loop, &d->kick_timer, KICK_COALESCE_S, 0.);
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

static bool provider_dry(struct daemon *d, enum provider_id p)
{
    return d->prov[p].dry_until > ev_now(d->loop);
}

static void wake_providers(struct daemon *d)
{
    for (int p = 0; p < PROVIDER_MAX; p++)
        d->prov[p].dry_until = 0;
}

static void arm_due_timer(struct daemon *d, double delay)
{
    double scan = (double)d->cfg->scan_interval_ms / 1000.0;
    /* Written so that a NaN fails both tests into the safe side. */
    if (!(delay <= scan))
        delay = scan;
    if (!(delay >= 0.05))
        delay = 0.05;
    timer_arm(d->loop, &d->due_timer, delay, 0.);
}

static void due_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    wake_providers(w->data);
    engine_kick(w->data);
}

static void scan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon *d = w->data;
    log_debug("safety rescan");
    wake_providers(d);
    engine_kick(d);
    if (d->store && db_is_connected(d->db))
        store_check_revoked(d->store); /* a notification lost to a reconnection */
}

static void claim_more(struct daemon *d);

static void kick_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    claim_more(w->data);
}

/* ---- running jobs ---------------------------------------------------------- */

static void release_one(struct daemon *d, int64_t account_id);

static void job_free(struct job *job)
{
    refresh_attempt_clear(&job->ra);
    free(job);
}

static void log_outcome(struct daemon *d, const struct job *job, const struct token_result *res,
                        long status)
{
    const char *pname = provider_id_name((enum provider_id)job->ra.acct.provider);
    /* Fingerprints under the current primary key, as `oauth-refreshctl show` prints them. */
    char fp[TOKEN_FP_HEX_LEN + 1] = "", new_fp[TOKEN_FP_HEX_LEN + 1] = "";
    if (job->ra.refresh_plain.len > 0)
        (void)token_fingerprint(d->cfg->keys, job->ra.refresh_plain.data, job->ra.refresh_plain.len,
                                fp);
    if (res->refresh_token.len > 0)
        (void)token_fingerprint(d->cfg->keys, res->refresh_token.data, res->refresh_token.len,
                                new_fp);
    struct log_ctx ctx = {.account_id = job->ra.acct.account_id,
                          .provider = pname,
                          .error = res->error,
                          .http_status = (int)status,
                          .token_fp = fp,
                          .new_token_fp = new_fp};
    switch (res->outcome) {
    case OUTCOME_SUCCESS:
        if (res->expires_in_defaulted)
            log_event(LOG_WARNING, NULL, &ctx,
                      "account %" PRId64 ": provider gave no usable expires_in; assuming %" PRId64
                      "s",
                      job->ra.acct.account_id, res->expires_in_s);
        break;
    case OUTCOME_REVOKED:
        log_event(LOG_NOTICE, MSGID_REVOKED, &ctx,
                  "account %" PRId64 " (%s): refresh token refused (%s), the user must "
                  "reconnect: %s",
                  job->ra.acct.account_id, pname, res->error, res->detail);
        break;
    case OUTCOME_CONFIG:
        if (!d->prov[job->ra.acct.provider].config_error)
            log_event(LOG_ERR, MSGID_CONFIG_ERROR, &ctx,
                      "provider %s rejects our client credentials (%s): %s; check client_id, "
                      "client_secret and tenant in [provider.%s] and the client's registration; "
                      "pausing %s, probing it every %.0fs (a reload resumes it at once)",
                      pname, res->error, res->detail, pname, pname,
                      (double)d->cfg->config_error_probe_ms / 1000.0);
        break;
    case OUTCOME_TRANSIENT:
        if (res->retry_rule == RETRY_PAUSE) {
            log_event(LOG_INFO, NULL, &ctx,
                      "account %" PRId64 " (%s): provider overloaded (%s): %s; not charged to "
                      "the account, tried again after the pause",
                      job->ra.acct.account_id, pname, res->error, res->detail);
            break;
        }
        /* fall through */
    case OUTCOME_BAD_RESPONSE:
        log_event(LOG_WARNING, MSGID_REFRESH_FAILED, &ctx,
                  "account %" PRId64 " (%s): refresh failed (%s): %s", job->ra.acct.account_id,
                  pname, res->error, res->detail);
        break;
    }
}

/*
 * Circuit breaker and Retry-After at the provider level. A probe ends here
 * whatever its outcome: a success resumes the provider, a transient failure
 * pauses it again, and anything else (one account's malformed answer, a
 * credentials error) says nothing about the provider's health, so the next
 * job is let through as the next probe. Left set, `probing` would keep
 * provider_paused() true for good.
 */
static void update_breaker(struct daemon *d, enum provider_id p, const struct token_result *res,
                           bool probe)
{
    struct provider_state *ps = &d->prov[p];
    if (probe)
        ps->probing = false;
    snprintf(ps->last_error, sizeof ps->last_error, "%s",
             res->outcome == OUTCOME_SUCCESS ? "" : res->error);
    switch (res->outcome) {
    case OUTCOME_SUCCESS:
    case OUTCOME_REVOKED:
        /* The provider answered sensibly (revoked answers are about one
         * account): it is healthy, and accepts our client registration. */
        if (ps->paused_until != 0 || ps->consecutive_failures || ps->config_error)
            provider_resume(d, p);
        break;
    case OUTCOME_CONFIG:
        provider_config_pause(d, p, probe);
        break;
    case OUTCOME_TRANSIENT:
        if (res->retry_rule == RETRY_PAUSE) {
            provider_overload_pause(d, p, res, probe);
            break;
        }
        ps->consecutive_failures++;
        if (probe || ps->consecutive_failures >= BREAKER_THRESHOLD) {
            double base = (double)d->cfg->retry_min_ms / 1000.0;
            double len = base * pow(2.0, ps->pauses < 16 ? ps->pauses : 16);
            ps->pauses++;
            provider_pause(d, p, len, res->error);
        }
        break;
    case OUTCOME_BAD_RESPONSE:
        break;
    }
    /* A configuration probe that got no verdict: the next one after the interval. */
    if (probe && ps->config_error && res->outcome != OUTCOME_CONFIG) {
        ps->probing = false;
        ps->config_reread = false;
        ps->config_probe_at = ev_now(d->loop) + (double)d->cfg->config_error_probe_ms / 1000.0;
    }
}

static void job_http_done_cb(void *ud, const struct http_answer *ans, double elapsed_s)
{
    struct job *job = ud;
    struct daemon *d = job->d;
    enum provider_id p = (enum provider_id)job->ra.acct.provider;
    struct provider_state *ps = &d->prov[p];
    ps->in_flight--;
    d->in_flight--;

    struct token_result res;
    memset(&res, 0, sizeof res);
    res.retry_after_ms = -1;
    job->ra.ops->read_answer(ans, &res);
    metrics_observe_answer(&d->metrics, p, res.outcome, elapsed_s,
                           job->ra.acct.expires_at - (time_now_wall() - elapsed_s));
    /* The request body held the refresh token and client secret. */
    provider_request_clear(&job->ra.req);

    log_outcome(d, job, &res, ans->status);
    update_breaker(d, p, &res, job->probe);
    if (res.outcome != OUTCOME_SUCCESS && res.outcome != OUTCOME_REVOKED)
        d->once_failed = true;
    if (res.retry_rule == RETRY_PAUSE) {
        /* The provider's overload is not the account's failure: no attempt is
         * charged; the claim is given back and taken again after the pause. */
        token_result_clear(&res);
        release_one(d, job->ra.acct.account_id);
        job_free(job);
        engine_kick(d);
        engine_check_once_done(d);
        return;
    }

    /* Encrypt under the current primary key: a reload may have retired the
     * one this job started with. */
    struct store_item *item =
        refresh_conclude(&job->ra, &res, d->cfg->keys, time_now_wall(), random_unit());
    if (item)
        store_add(d->store, item);
    else
        refresh_result_lost(&res, job->ra.acct.account_id); /* aborts if res rotated */
    /* Out of memory reading a 2xx answer: whether it rotated is unknowable, and the
     * next attempt would send a token the provider may have retired. Stop loudly. */
    if (item && ans->transport_error == 0 && ans->status >= 200 && ans->status < 300 &&
        strcmp(res.error, "out_of_memory") == 0)
        refresh_answer_unreadable(job->ra.acct.account_id);
    token_result_clear(&res);
    job_free(job);
    engine_kick(d);
    engine_check_once_done(d);
}

static void job_send(struct daemon *d, struct job *job)
{
    enum provider_id p = (enum provider_id)job->ra.acct.provider;
    struct provider_state *ps = &d->prov[p];
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
    job->sent_at = ev_now(d->loop);
    /* Shutdown waits for this: the answer may carry a rotated refresh token. */
    double deadline = job->sent_at + (double)cfg->request_timeout_ms / 1000.0;
    if (deadline > d->requests_deadline)
        d->requests_deadline = deadline;
    if (provider_probe_due(d, ps)) {
        ps->probing = true;
        job->probe = true;
    }
    ps->in_flight++;
    d->in_flight++;
    if (http_submit(d->http, &req, job_http_done_cb, job) < 0) {
        /* A local failure tells nothing about the provider: not a probe's answer. */
        if (job->probe)
            ps->probing = false;
        job->probe = false;
        struct http_answer ans = {.transport_error = 2 /* CURLE_FAILED_INIT */,
                                  .transport_detail = "could not start the request"};
        job_http_done_cb(job, &ans, 0);
    }
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
static void drain_waiting(struct daemon *d)
{
    double now = ev_now(d->loop);
    double next_wait = -1;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct provider_state *ps = &d->prov[p];
        while (ps->wait_head) {
            if (!token_bucket_take(&ps->bucket, now)) {
                double w = token_bucket_wait(&ps->bucket, now);
                if (next_wait < 0 || w < next_wait)
                    next_wait = w;
                break;
            }
            job_send(d, wait_pop(ps));
        }
    }
    if (next_wait >= 0 && !ev_is_active(&d->rate_timer))
        timer_arm(d->loop, &d->rate_timer, next_wait > 0.001 ? next_wait : 0.001, 0.);
}

static void rate_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    drain_waiting(w->data);
}

static void job_fail_early(struct daemon *d, struct job *job, const char *code, const char *detail)
{
    struct log_ctx ctx = {.account_id = job->ra.acct.account_id,
                          .provider =
                              job->ra.acct.provider >= 0
                                  ? provider_id_name((enum provider_id)job->ra.acct.provider)
                                  : NULL,
                          .error = code};
    log_event(LOG_WARNING, MSGID_REFRESH_FAILED, &ctx, "account %" PRId64 ": %s (%s)",
              job->ra.acct.account_id, detail, code);
    d->once_failed = true;
    metrics_count(&d->metrics, job->ra.acct.provider, METRICS_LOCAL_ERROR);
    /* Nothing will fix these by itself: wait the longest retry interval. */
    int64_t retry_after = d->cfg->retry_max_ms;
    struct store_item *item = refresh_failure_item(d->cfg, &job->ra.acct, code, retry_after,
                                                   time_now_wall(), random_unit());
    if (item)
        store_add(d->store, item);
    job_free(job);
}

static void release_one(struct daemon *d, int64_t account_id);

static void job_start(struct daemon *d, struct claimed_account *acct)
{
    if (store_pending(d->store) > 0 && store_has_account(d->store, acct->account_id)) {
        /* Its last result is not written yet: refreshing again with the stored
         * token could burn a rotated one. Give the claim back. */
        log_debug("account %" PRId64 ": result still unwritten, not refreshing again",
                  acct->account_id);
        release_one(d, acct->account_id);
        claimed_account_clear(acct);
        return;
    }
    struct job *job = calloc(1, sizeof *job);
    if (!job) {
        claimed_account_clear(acct);
        return; /* the lease runs out and the account is claimed again */
    }
    job->d = d;
    char code[64], detail[ERRBUF_LEN];
    if (refresh_prepare(&job->ra, d->cfg, acct, code, sizeof code, detail, sizeof detail) < 0) {
        job_fail_early(d, job, code, detail);
        return;
    }
    wait_push(&d->prov[job->ra.acct.provider], job);
}

/* ---- claiming -------------------------------------------------------------- */

/* Attempts beyond this back off as long as retry_max anyway. */
#define ATTEMPTS_MAX 1000000

/*
 * Every number of a claim row is checked where it is read: expires_at is
 * whatever the application stored ('infinity' included), attempts is ours but
 * still a row. A row whose id cannot be read is skipped (its lease runs out).
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

static int start_claimed_rows(struct daemon *d, PGresult *res)
{
    int rows = PQntuples(res);
    double now = time_now_wall();
    for (int i = 0; i < rows; i++) {
        struct claimed_account acct;
        if (!parse_claim_row(res, i, &acct, now))
            continue;
        if (d->stopping) {
            /* The claim crossed SIGTERM: give it back for another instance now. */
            release_one(d, acct.account_id);
            claimed_account_clear(&acct);
            continue;
        }
        job_start(d, &acct);
    }
    drain_waiting(d);
    return rows;
}

struct claim_ctx {
    struct daemon *d;
    int provider; /* -1: a claim by ids */
    unsigned limit;
};

static void query_next_wakeup(struct daemon *d);

static bool claims_outstanding(const struct daemon *d)
{
    if (d->claiming_ids)
        return true;
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (d->prov[p].claiming)
            return true;
    return false;
}

static void claim_done_cb(void *ud, PGresult *res)
{
    struct claim_ctx *cc = ud;
    struct daemon *d = cc->d;
    int rows = 0;
    bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
    char why[ERRBUF_LEN];
    if (res && !ok)
        log_err("claiming due accounts failed: %s", db_result_reason(why, sizeof why, res));
    if (cc->provider >= 0) {
        struct provider_state *ps = &d->prov[cc->provider];
        ps->claiming = false;
        ps->reserved = 0;
        if (ok) {
            rows = start_claimed_rows(d, res);
            ps->more = (unsigned)rows >= cc->limit;
            ps->dry_until = rows == 0 ? ev_now(d->loop) + DRY_RECHECK_S : 0;
        }
    } else {
        d->claiming_ids = false;
        if (ok)
            rows = start_claimed_rows(d, res);
    }
    log_debug("claimed %d accounts", rows);
    int provider = cc->provider;
    free(cc);
    if (!ok)
        return; /* reconnection (or the rescan) tries again */
    /* Only this provider's full batch asks for another claim at once; other
     * providers' backlogs are claimed when their capacity frees up. */
    bool more = provider >= 0 ? d->prov[provider].more : false;
    if (more || d->nrequested)
        engine_kick(d);
    else if (!claims_outstanding(d))
        query_next_wakeup(d);
    engine_check_once_done(d);
}

static void providers_array(struct daemon *d, struct strbuf *sb, int only)
{
    pgarray_begin(sb);
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (provider_ready(d->cfg->providers[p]) && (only < 0 || only == p))
            pgarray_text(sb, provider_id_name((enum provider_id)p));
    pgarray_end(sb);
}

static void interval_text(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%.3f seconds", (double)ms / 1000.0);
}

static void claim_provider(struct daemon *d, enum provider_id p, unsigned limit)
{
    struct provider_state *ps = &d->prov[p];
    struct claim_ctx *cc = malloc(sizeof *cc);
    if (!cc)
        return;
    *cc = (struct claim_ctx){.d = d, .provider = (int)p, .limit = limit};
    struct strbuf provs;
    strbuf_init(&provs);
    providers_array(d, &provs, (int)p);
    char lead[48], jitter[48], lease[48], lim[16], since[ISO8601_LEN];
    interval_text(lead, sizeof lead, d->cfg->lead_time_ms);
    interval_text(jitter, sizeof jitter, d->cfg->jitter_ms);
    interval_text(lease, sizeof lease, config_lease_ms(d->cfg));
    snprintf(lim, sizeof lim, "%u", limit);
    time_format_iso8601(d->once_since, true, since);
    const char *params[] = {
        d->owner, provs.data, lead, jitter, lease, lim, d->opt.once ? since : NULL};
    char sql[512];
    snprintf(sql, sizeof sql,
             "%s FROM oauth_refreshd.claim_due($1, $2::text[], $3::interval, $4::interval, "
             "$5::interval, $6::integer, $7::timestamptz)",
             claim_columns);
    log_debug("claiming up to %u %s accounts", limit, provider_id_name(p));
    if (!provs.oom && db_query(d->db, sql, 7, params, claim_done_cb, cc) == 0) {
        ps->claiming = true;
        ps->reserved = limit;
    } else {
        free(cc);
    }
    strbuf_free(&provs);
}

static void claim_requested(struct daemon *d)
{
    struct claim_ctx *cc = malloc(sizeof *cc);
    if (!cc)
        return;
    *cc = (struct claim_ctx){.d = d, .provider = -1, .limit = (unsigned)d->nrequested};
    struct strbuf provs, ids;
    strbuf_init(&provs);
    strbuf_init(&ids);
    providers_array(d, &provs, -1);
    pgarray_begin(&ids);
    for (size_t i = 0; i < d->nrequested; i++)
        pgarray_int64(&ids, d->requested[i]);
    pgarray_end(&ids);
    char lease[48];
    interval_text(lease, sizeof lease, config_lease_ms(d->cfg));
    const char *params[] = {d->owner, provs.data, ids.data, lease};
    char sql[512];
    snprintf(sql, sizeof sql,
             "%s FROM oauth_refreshd.claim_ids($1, $2::text[], $3::bigint[], $4::interval)",
             claim_columns);
    if (!provs.oom && !ids.oom && db_query(d->db, sql, 4, params, claim_done_cb, cc) == 0) {
        d->claiming_ids = true;
        d->nrequested = 0;
    } else {
        free(cc);
    }
    strbuf_free(&provs);
    strbuf_free(&ids);
}

static void claim_more(struct daemon *d)
{
    if (d->stopping || !d->connected || !d->schema_ok)
        return;
    size_t hold = 2 * (size_t)d->cfg->max_in_flight;
    if (hold < HOLD_MIN)
        hold = HOLD_MIN;
    if (store_pending(d->store) >= hold) {
        log_debug("not claiming: %zu results wait for the database", store_pending(d->store));
        return;
    }
    if (d->nrequested && !d->claiming_ids && !d->opt.once)
        claim_requested(d);
    if (provider_config_reread(d)) {
        engine_kick(d); /* claim under the configuration now in force */
        return;
    }
    /* Share the global in-flight budget between the providers that may claim,
     * so one provider's backlog cannot starve the others. */
    unsigned global_free = global_free_slots(d);
    unsigned sharing = 0;
    for (int p = 0; p < PROVIDER_MAX; p++)
        sharing += !d->prov[p].claiming && !provider_dry(d, (enum provider_id)p) &&
                   provider_free_slots(d, (enum provider_id)p, global_free) > 0;
    unsigned share = sharing ? (global_free + sharing - 1) / sharing : 0;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct provider_state *ps = &d->prov[p];
        if (ps->claiming || provider_dry(d, (enum provider_id)p))
            continue;
        unsigned global_now = global_free_slots(d);
        unsigned free_slots =
            provider_free_slots(d, (enum provider_id)p, share < global_now ? share : global_now);
        if (free_slots == 0)
            continue;
        unsigned limit = free_slots < d->cfg->batch_size ? free_slots : d->cfg->batch_size;
        claim_provider(d, (enum provider_id)p, limit);
    }
    if (!claims_outstanding(d)) {
        log_debug("nothing to claim now: %u in flight, %u waiting, %zu results unwritten",
                  d->in_flight, engine_waiting(d), store_pending(d->store));
        query_next_wakeup(d);
        /* --once: with every provider dry no claim answers, and this is where
         * the run learns that it is over. */
        engine_check_once_done(d);
    }
}

/* ---- next wake-up ---------------------------------------------------------- */

static void wakeup_done_cb(void *ud, PGresult *res)
{
    struct daemon *d = ud;
    d->wakeup_query_outstanding = false;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char why[ERRBUF_LEN];
        if (res)
            log_err("asking for the next due time failed: %s",
                    db_result_reason(why, sizeof why, res));
        return;
    }
    double scan = (double)d->cfg->scan_interval_ms / 1000.0;
    if (PQgetisnull(res, 0, 0)) {
        d->next_due = 0;
        arm_due_timer(d, scan);
    } else {
        double due;
        if (!inbound_pg_epoch(PQgetvalue(res, 0, 0), &due)) {
            log_warning("the next due time is not a number (%.40s); looking again in %.0fs",
                        PQgetvalue(res, 0, 0), scan);
            d->next_due = 0;
            arm_due_timer(d, scan);
            engine_check_once_done(d);
            return;
        }
        d->next_due = due;
        double delay = d->next_due - time_now_wall();
        /* Due now but not claimable (capacity, paused provider): the end of a
         * request or the pause kicks us; do not spin on the timer. */
        arm_due_timer(d, delay < 0.25 ? 0.25 : delay);
    }
    engine_check_once_done(d);
}

static void query_next_wakeup(struct daemon *d)
{
    if (d->opt.once || d->wakeup_query_outstanding || !d->connected || d->stopping)
        return;
    struct strbuf provs;
    strbuf_init(&provs);
    providers_array(d, &provs, -1);
    char lead[48], jitter[48];
    interval_text(lead, sizeof lead, d->cfg->lead_time_ms);
    interval_text(jitter, sizeof jitter, d->cfg->jitter_ms);
    const char *params[] = {provs.data, lead, jitter};
    if (!provs.oom && db_query(d->db,
                               "SELECT extract(epoch FROM oauth_refreshd.next_wakeup($1::text[], "
                               "$2::interval, $3::interval))",
                               3, params, wakeup_done_cb, d) == 0)
        d->wakeup_query_outstanding = true;
    strbuf_free(&provs);
}

/* ---- notifications ----------------------------------------------------------- */

static void add_requested(struct daemon *d, int64_t id)
{
    for (size_t i = 0; i < d->nrequested; i++)
        if (d->requested[i] == id)
            return;
    if (d->nrequested == d->caprequested) {
        size_t cap = d->caprequested ? d->caprequested * 2 : 64;
        if (cap > 100000)
            return; /* a flood of requests: the rest wait for their due time */
        int64_t *p = realloc(d->requested, cap * sizeof *p);
        if (!p)
            return;
        d->requested = p;
        d->caprequested = cap;
    }
    d->requested[d->nrequested++] = id;
}

/* Any database role may notify: payloads are parsed by inbound.h, which
 * returns only valid ids and finite epochs, and everything else is dropped. */
void engine_on_notify(struct daemon *d, const char *channel, const char *payload)
{
    int64_t id;
    log_debug("notification on %s: %.80s", channel, payload);
    if (strcmp(channel, "oauth_refresh_request") == 0) {
        if (!inbound_refresh_request(payload, &id)) {
            log_warning("ignoring oauth_refresh_request with payload that is not an account id");
            return;
        }
        log_info("refresh of account %" PRId64 " requested", id);
        add_requested(d, id);
        engine_kick(d);
        return;
    }
    if (strcmp(channel, "oauth_refreshd_account_changed") == 0) {
        double expires;
        if (!inbound_account_changed(payload, &id, &expires)) {
            log_debug("ignoring oauth_refreshd_account_changed with a malformed payload");
            return;
        }
        /* It may be a revoked account's new (or re-saved) refresh token. */
        if (d->store)
            store_check_revoked(d->store);
        wake_providers(d);
        double earliest = expires - (double)(d->cfg->lead_time_ms + d->cfg->jitter_ms) / 1000.0;
        double delay = earliest - time_now_wall();
        if (delay <= 0)
            engine_kick(d);
        else if (!ev_is_active(&d->due_timer) || delay < ev_timer_remaining(d->loop, &d->due_timer))
            arm_due_timer(d, delay);
    }
}

/* ---- claim-to-written latency --------------------------------------------------- */

static size_t latency_bucket(double s)
{
    if (s < 0)
        s = 0;
    if (s < 1.0)
        return (size_t)(s * 1000.0);
    if (s < 10.0)
        return 1000 + (size_t)((s - 1.0) * 100.0);
    if (s < 300.0)
        return 1900 + (size_t)(s - 10.0);
    return LATENCY_BUCKETS - 1;
}

/* Upper bound of a bucket, in seconds. */
static double latency_bucket_top(size_t i)
{
    if (i < 1000)
        return (double)(i + 1) / 1000.0;
    if (i < 1900)
        return 1.0 + (double)(i - 1000 + 1) / 100.0;
    if (i < 2190)
        return 10.0 + (double)(i - 1900 + 1);
    return 1e9;
}

static void latency_record(struct latency_hist *h, double s)
{
    h->bucket[latency_bucket(s)]++;
    h->count++;
    if (s > h->max_s)
        h->max_s = s;
}

static double latency_quantile(const struct latency_hist *h, double q)
{
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (size_t i = 0; i < LATENCY_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= want)
            return latency_bucket_top(i) < h->max_s ? latency_bucket_top(i) : h->max_s;
    }
    return h->max_s;
}

void engine_latency_summary(const struct daemon *d, char *buf, size_t len)
{
    const struct latency_hist *h = &d->stats.claim_to_written;
    if (h->count == 0) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, len,
             "claim to written: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%" PRIu64
             " results)",
             latency_quantile(h, 0.5) * 1000.0, latency_quantile(h, 0.9) * 1000.0,
             latency_quantile(h, 0.99) * 1000.0, h->max_s * 1000.0, h->count);
}

/* ---- store outcomes ------------------------------------------------------------ */

void engine_store_done_cb(void *ud, const struct store_item *item, enum store_fate fate)
{
    struct daemon *d = ud;
    if (item->claimed_at > 0)
        latency_record(&d->stats.claim_to_written, time_now_wall() - item->claimed_at);
    struct provider_state *ps = &d->prov[item->provider];
    const char *pname = provider_id_name(item->provider);
    struct log_ctx ctx = {.account_id = item->account_id,
                          .provider = pname,
                          .token_fp = item->token_fp,
                          .new_token_fp = item->new_token_fp};
    metrics_observe_store(&d->metrics, item->provider, item->kind, fate);
    switch (item->kind) {
    case STORE_REFRESHED:
        if (fate == STORE_WRITTEN) {
            char iso[ISO8601_LEN];
            time_format_iso8601(item->expires_at, false, iso);
            ctx.expires_at = iso;
            d->stats.refreshed++;
            d->stats.window_refreshed++;
            ps->refreshed++;
            log_event(LOG_DEBUG, NULL, &ctx, "account %" PRId64 " refreshed, expires %s",
                      item->account_id, iso);
        } else {
            d->stats.discarded++;
            ps->discarded++;
            ctx.error = "changed_meanwhile";
            log_event(LOG_NOTICE, NULL, &ctx,
                      "account %" PRId64 ": result discarded: the application changed the "
                      "refresh token meanwhile",
                      item->account_id);
        }
        break;
    case STORE_FAILED:
        d->stats.failed++;
        d->stats.window_failed++;
        ps->failed++;
        break;
    case STORE_REVOKED:
        if (fate == STORE_WRITTEN) {
            d->stats.revoked++;
            ps->revoked++;
        } else {
            d->stats.lost_races++;
            ctx.error = item->error;
            log_event(LOG_NOTICE, NULL, &ctx,
                      "account %" PRId64 ": %s was a lost race, not a revocation: the refresh "
                      "token changed meanwhile",
                      item->account_id, item->error);
        }
        break;
    }
    /* The write released the claim: that account (after a failure) or others
     * may be claimable now, and the next due time may have moved. A claim given
     * back without a write (the row changed meanwhile) is claimable at once. */
    if (fate != STORE_WRITTEN)
        ps->dry_until = 0;
    engine_kick(d);
    engine_check_once_done(d);
}

void engine_revoked_checked_cb(void *ud, size_t lifted)
{
    struct daemon *d = ud;
    if (lifted > 0) {
        wake_providers(d);
        engine_kick(d);
    }
    engine_check_once_done(d);
}

/* ---- lifecycle -------------------------------------------------------------- */

void engine_init(struct daemon *d)
{
    ev_init(&d->kick_timer, kick_timer_cb);
    timer_set(&d->kick_timer, 0., 0.);
    d->kick_timer.data = d;
    ev_init(&d->due_timer, due_timer_cb);
    timer_set(&d->due_timer, 1., 0.);
    d->due_timer.data = d;
    double scan = (double)d->cfg->scan_interval_ms / 1000.0;
    ev_init(&d->scan_timer, scan_timer_cb);
    timer_set(&d->scan_timer, scan, scan);
    d->scan_timer.data = d;
    ev_init(&d->rate_timer, rate_timer_cb);
    timer_set(&d->rate_timer, 0., 0.);
    d->rate_timer.data = d;
    engine_on_config(d);
    if (!d->opt.once)
        ev_timer_start(d->loop, &d->scan_timer);
}

void engine_on_config(struct daemon *d)
{
    double now = ev_now(d->loop);
    for (int p = 0; p < PROVIDER_MAX; p++) {
        const struct provider_config *pc = d->cfg->providers[p];
        struct provider_state *ps = &d->prov[p];
        token_bucket_init(&ps->bucket, pc ? pc->max_rate : 0, now);
        ps->dry_until = 0; /* a reload may have changed what is claimable */
        /* A reload is the operator's answer to a credentials error; the
         * engine's own re-read before a probe is not: the probe decides. */
        if (!d->rereading) {
            ps->config_error = false;
            ps->config_probe_at = 0;
        }
    }
    double scan =
        d->listen_deaf ? engine_deaf_rescan_interval(d) : (double)d->cfg->scan_interval_ms / 1000.0;
    if (ev_is_active(&d->scan_timer))
        timer_arm(d->loop, &d->scan_timer, scan, scan);
    store_set_lead(d->store, d->cfg->lead_time_ms);
}

void engine_on_connected(struct daemon *d)
{
    /* Notifications sent while we were away are gone: catch up with a scan. */
    for (int p = 0; p < PROVIDER_MAX; p++) {
        d->prov[p].claiming = false;
        d->prov[p].reserved = 0;
    }
    d->claiming_ids = false;
    d->wakeup_query_outstanding = false;
    wake_providers(d);
    store_flush(d->store);
    store_check_revoked(d->store); /* revoked accounts the application wrote meanwhile */
    engine_kick(d);
}

static void release_done_cb(void *ud, PGresult *res)
{
    struct daemon *d = ud;
    d->releases_outstanding--;
    engine_check_once_done(d);
}

static void release_done_cb(void *ud, PGresult *res);

static void release_one(struct daemon *d, int64_t account_id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "{%" PRId64 "}", account_id);
    const char *params[] = {d->owner, ids};
    if (db_query(d->db, "SELECT oauth_refreshd.release($1, $2::bigint[])", 2, params,
                 release_done_cb, d) < 0)
        log_debug("could not release account %" PRId64 "; its lease runs out", account_id);
    else
        d->releases_outstanding++;
}

void engine_stop_claiming(struct daemon *d)
{
    ev_timer_stop(d->loop, &d->kick_timer);
    ev_timer_stop(d->loop, &d->due_timer);
    ev_timer_stop(d->loop, &d->scan_timer);
    ev_timer_stop(d->loop, &d->rate_timer);
    d->nrequested = 0;
    /* Claimed but never sent: give them back so another instance can take them now. */
    struct strbuf ids;
    strbuf_init(&ids);
    pgarray_begin(&ids);
    size_t n = 0;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct job *job;
        while ((job = wait_pop(&d->prov[p]))) {
            pgarray_int64(&ids, job->ra.acct.account_id);
            job_free(job);
            n++;
        }
    }
    pgarray_end(&ids);
    if (n > 0 && d->connected && !ids.oom) {
        const char *params[] = {d->owner, ids.data};
        if (db_query(d->db, "SELECT oauth_refreshd.release($1, $2::bigint[])", 2, params,
                     release_done_cb, d) == 0)
            d->releases_outstanding++;
        log_info("released %zu claimed accounts that were not sent yet", n);
    }
    strbuf_free(&ids);
}

unsigned engine_waiting(const struct daemon *d)
{
    unsigned n = 0;
    for (int p = 0; p < PROVIDER_MAX; p++)
        n += d->prov[p].waiting;
    return n;
}

bool engine_idle(const struct daemon *d)
{
    return d->in_flight == 0 && engine_waiting(d) == 0 && !claims_outstanding(d) &&
           store_pending(d->store) == 0 && d->releases_outstanding == 0;
}

/*
 * Stopping with the database away and no request in flight: nothing can
 * happen any more that waiting would improve. The results held for the
 * database are either spooled (rotated ones: the next start replays them)
 * or can be had again by refreshing (the others); daemon.c spools any
 * rotated one still unspooled on its way out. Waiting shutdown_timeout for a
 * reconnection would only delay a `systemctl restart` during an outage.
 */
static bool engine_nothing_left_but_db(const struct daemon *d)
{
    return !d->connected && d->in_flight == 0 && engine_waiting(d) == 0;
}

void engine_check_once_done(struct daemon *d)
{
    if (d->exit_requested)
        return;
    if (d->stopping) {
        if (engine_idle(d) || engine_nothing_left_but_db(d))
            daemon_request_exit(d, 0);
        return;
    }
    if (!d->opt.once || !d->schema_ok || !engine_idle(d) || !store_revoked_check_idle(d->store))
        return;
    if (ev_is_active(&d->kick_timer) || discovery_first_pending(d->discovery))
        return;
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (d->prov[p].more && !provider_paused(d, (enum provider_id)p))
            return;
    daemon_request_exit(d, d->once_failed ? EXIT_WORK_FAILED : 0);
}

void engine_free(struct daemon *d)
{
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct job *job;
        while ((job = wait_pop(&d->prov[p])))
            job_free(job);
    }
    free(d->requested);
    d->requested = NULL;
}

/* While notifications do not arrive, nothing announces an account the
 * application changed or one that came due early: rescan this often. */
#define DEAF_RESCAN_S 5.0

double engine_deaf_rescan_interval(const struct daemon *d)
{
    double scan = (double)d->cfg->scan_interval_ms / 1000.0;
    return scan < DEAF_RESCAN_S ? scan : DEAF_RESCAN_S;
}

void engine_on_listen_deaf(struct daemon *d, bool deaf)
{
    d->listen_deaf = deaf;
    if (!ev_is_active(&d->scan_timer))
        return; /* --once, or stopping */
    double scan = deaf ? engine_deaf_rescan_interval(d) : (double)d->cfg->scan_interval_ms / 1000.0;
    timer_arm(d->loop, &d->scan_timer, scan, scan);
    if (deaf) {
        wake_providers(d);
        engine_kick(d);
    }
}
