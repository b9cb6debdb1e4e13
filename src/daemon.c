/*
 * daemon.c — the daemon context and its life: startup order (state
 * directory, http adapter, database, signals), readiness, SIGHUP reload
 * (a whole new config or none), SIGTERM drain, and what the daemon tells
 * systemd and the journal about itself. Claiming and refreshing belong to
 * the engine (engine.h), which tells this file when its work is over; this
 * file only starts, steers and stops it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "daemon_ctx.h"
#include "discovery.h"
#include "listen_check.h"
#include "log.h"
#include "metrics_server.h"
#include "parse.h"
#include "schema_check.h"
#include "spool.h"
#include "timeutil.h"
#include "version.h"

#define STATUS_INTERVAL_S  2.0
#define SUMMARY_INTERVAL_S 60.0
#define STATUS_MAX         sizeof(((struct sdnotify *)0)->last_status)
/* After aborting the requests still in flight, how long their results may take to be written. */
#define SHUTDOWN_STORE_GRACE_S 5.0

static const char *const listen_channels[] = {
    "oauth_refresh_request", "oauth_refreshd_account_changed", LISTEN_CHECK_CHANNEL, NULL};

static void daemon_request_exit(struct daemon *d, int code)
{
    if (d->exit_requested)
        return;
    d->exit_requested = true;
    d->exit_code = code;
    ev_break(d->loop, EVBREAK_ALL);
}

/* ---- state directory -------------------------------------------------------- */

static int ensure_state_directory(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create state directory %s: %s", dir, strerror(errno));
        return -1;
    }
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.write-test.%ld", dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "state directory %s is not writable: %s", dir, strerror(errno));
        return -1;
    }
    bool ok = write(fd, "x", 1) == 1 && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    unlink(probe);
    if (!ok) {
        snprintf(err, errlen, "state directory %s cannot be written: %s", dir, strerror(saved));
        return -1;
    }
    return 0;
}

/* ---- status ----------------------------------------------------------------- */

static const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

/* "; paused: google, github" for providers that are paused now (or "" ). */
static void format_paused(struct daemon *d, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int p = 0; p < PROVIDER_MAX && o < len; p++) {
        bool refusing;
        if (!engine_provider_paused(d->engine, (enum provider_id)p, &refusing))
            continue;
        o += (size_t)snprintf(buf + o, len - o, "%s%s%s",
                              o ? ", " : "; paused: ", provider_id_name((enum provider_id)p),
                              refusing ? " (client credentials refused)" : "");
    }
}

/* The human STATUS= line: what an operator asks first, in that order. */
static void format_status(struct daemon *d, char *buf, size_t len)
{
    size_t held = store_pending(d->store);
    unsigned in_flight = engine_in_flight(d->engine) + engine_waiting(d->engine);
    const char *stop = d->stopping ? "stopping: " : "";
    if (!d->connected) {
        if (!d->db_reason[0]) {
            snprintf(buf, len, "%sconnecting to the database; %u in flight; %zu result%s held",
                     stop, in_flight, held, plural(held));
            return;
        }
        double retry = d->db_retry_at - ev_now(d->loop);
        snprintf(buf, len,
                 "%sdatabase unreachable, retrying in %.0fs; %zu result%s held; %u in flight; "
                 "%.120s",
                 stop, retry > 0 ? retry : 0, held, plural(held), in_flight, d->db_reason);
        return;
    }
    if (!d->schema_ok) {
        snprintf(buf, len, "%sdatabase connected, checking the schema; %zu result%s held", stop,
                 held, plural(held));
        return;
    }
    char due[64] = "nothing due";
    double next_due = engine_next_due(d->engine);
    if (next_due > 0) {
        double in = next_due - time_now_wall();
        if (in <= 0)
            snprintf(due, sizeof due, "accounts due now");
        else
            snprintf(due, sizeof due, "next due in %.0fs", in);
    }
    char paused[96], waiting[160];
    format_paused(d, paused, sizeof paused);
    discovery_waiting(d->discovery, waiting, sizeof waiting);
    struct metrics_totals t;
    metrics_totals(&d->metrics, &t);
    snprintf(buf, len,
             "%s%u in flight, %" PRIu64 " refreshed, %" PRIu64 " failed, %" PRIu64
             " revoked; %s; database connected%s; %zu result%s held%s%s%.100s%s%s",
             stop, in_flight, t.refreshed, t.failed, t.revoked, due,
             listen_check_deaf(d->listen_check) ? " (notifications deaf: rescanning)" : "", held,
             plural(held), paused, waiting[0] ? "; waiting for discovery: " : "",
             waiting[0] ? waiting + 2 : "", d->reload_error[0] ? "; " : "", d->reload_error);
}

/* Seconds between periodic summaries at info; $OAUTH_REFRESHD_SUMMARY_INTERVAL
 * (seconds) shortens it for tests. */
static double summary_interval(void)
{
    const char *env = getenv("OAUTH_REFRESHD_SUMMARY_INTERVAL");
    double v;
    /* parse_double: C locale, no nan/inf, within bounds. */
    if (env && parse_double(env, 0.001, 86400, &v) && v > 0)
        return v;
    return SUMMARY_INTERVAL_S;
}

static void status_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon *d = w->data;
    char status[STATUS_MAX];
    format_status(d, status, sizeof status);
    sdnotify_status(&d->sn, status);
    double now = ev_now(loop);
    if (now - d->last_summary >= summary_interval()) {
        struct metrics_totals t;
        metrics_totals(&d->metrics, &t);
        uint64_t refreshed = t.refreshed - d->summary_refreshed;
        uint64_t failed = t.failed - d->summary_failed;
        if (refreshed || failed)
            log_info("summary of the last %.0fs: %" PRIu64 " refreshed, %" PRIu64 " failed; %s",
                     now - d->last_summary, refreshed, failed, status);
        d->summary_refreshed = t.refreshed;
        d->summary_failed = t.failed;
        d->last_summary = now;
    }
}

static bool loop_healthy_cb(void *ud)
{
    struct daemon *d = ud;
    /* The loop runs (we are called from it); refuse only when wedged on exit. */
    return !d->exit_requested;
}

/* ---- database events --------------------------------------------------------- */

static void report_unconfigured_done_cb(void *ud, PGresult *res)
{
    struct daemon *d = ud;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        return;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 0);
        int p = provider_id_from_name(name);
        if (p >= 0 && d->unconfigured_reported[p])
            continue;
        if (p >= 0)
            d->unconfigured_reported[p] = true;
        struct log_ctx ctx = {.provider = name, .error = "provider_not_configured"};
        log_event(LOG_WARNING, NULL, &ctx,
                  "%s refreshable %s accounts are left alone: no [provider.%s] section in %s",
                  PQgetvalue(res, i, 1), name, name, d->cfg->path);
    }
}

static void report_unconfigured(struct daemon *d)
{
    char configured[PROVIDER_MAX * (PROVIDER_NAME_MAX + 1) + 8] = "{";
    for (int p = 0; p < PROVIDER_MAX; p++)
        if (d->cfg->providers[p]) {
            if (configured[1])
                strcat(configured, ",");
            strcat(configured, provider_id_name((enum provider_id)p));
        }
    strcat(configured, "}");
    const char *params[] = {configured};
    if (db_query(d->db,
                 "SELECT a.provider, count(*) FROM oauth_refreshd.account_state s "
                 "JOIN public.oauth_accounts a ON a.id = s.account_id "
                 "WHERE s.due_at IS NOT NULL AND a.provider <> ALL ($1::text[]) "
                 "GROUP BY a.provider",
                 1, params, report_unconfigured_done_cb, d) < 0)
        log_debug("could not ask for unconfigured providers");
}

static void schema_checked_cb(void *ud, PGresult *res)
{
    struct daemon *d = ud;
    if (!res)
        return; /* lost again; the next connection checks again */
    char err[ERRBUF_LEN];
    if (schema_check_result(res, err, sizeof err) < 0) {
        log_event(LOG_ERR, NULL, NULL, "%s", err);
        if (!d->ready) {
            daemon_request_exit(d, EXIT_UNAVAILABLE);
            return;
        }
        return;
    }
    d->schema_ok = true;
    if (!d->ready) {
        d->ready = true;
        char status[STATUS_MAX];
        format_status(d, status, sizeof status);
        sdnotify_ready(&d->sn, status);
        log_event(LOG_INFO, MSGID_READY, NULL, "ready: connected, listening, schema up to date");
    }
    report_unconfigured(d);
    engine_on_schema_ok(d->engine);
}

static void db_connected_cb(void *ud)
{
    struct daemon *d = ud;
    d->connected = true;
    d->db_reason[0] = '\0';
    if (d->ever_connected)
        log_event(LOG_NOTICE, MSGID_DB_RESTORED, NULL, "database connection restored");
    d->ever_connected = true;
    engine_on_db(d->engine, true);
    listen_check_on_connected(d->listen_check);
    if (db_query(d->db, SCHEMA_CHECK_SQL, 0, NULL, schema_checked_cb, d) < 0)
        log_err("could not check the schema version");
    store_on_connected(d->store); /* column limits, answered before the store flushes */
}

static void db_disconnected_cb(void *ud, const char *reason, double retry_in_s)
{
    struct daemon *d = ud;
    bool was = d->connected;
    d->connected = false;
    d->schema_ok = false;
    snprintf(d->db_reason, sizeof d->db_reason, "%s", reason ? reason : "");
    d->db_retry_at = ev_now(d->loop) + retry_in_s;
    engine_on_db(d->engine, false);
    listen_check_on_disconnected(d->listen_check);
    if (was)
        log_event(LOG_WARNING, MSGID_DB_LOST, NULL,
                  "database connection lost (%s); %zu results held; reconnecting in %.1fs", reason,
                  store_pending(d->store), retry_in_s);
    else
        log_event(LOG_WARNING, NULL, NULL, "cannot connect to the database (%s); retrying in %.1fs",
                  reason, retry_in_s);
    if (d->opt.once && !d->ever_connected)
        daemon_request_exit(d, EXIT_UNAVAILABLE);
    char status[STATUS_MAX];
    format_status(d, status, sizeof status);
    sdnotify_status(&d->sn, status);
}

static void db_notify_cb(void *ud, const char *channel, const char *payload)
{
    struct daemon *d = ud;
    if (listen_check_on_notify(d->listen_check, channel, payload))
        return;
    engine_on_notify(d->engine, channel, payload);
}

/* ---- http ------------------------------------------------------------------- */

static void http_options_from(const struct config *cfg, struct http_options *o)
{
    *o = (struct http_options){
        .ca_file = cfg->ca_file,
        .user_agent = cfg->user_agent,
        .allow_insecure_http = cfg->allow_insecure_http,
        .http_version = cfg->http_version,
        /* HTTP/2 multiplexes; HTTP/1.1 needs a connection per request in flight. */
        .max_connections = cfg->http_version == 11
                               ? (long)cfg->max_in_flight
                               : (long)(cfg->max_in_flight < 64 ? cfg->max_in_flight : 64),
        .max_body = PROVIDER_MAX_RESPONSE_BYTES,
    };
}

/* ---- reload and shutdown ------------------------------------------------------ */

static void config_warn_cb(void *ud, const char *msg)
{
    log_warning("%s", msg);
}

/* STATUS= shows the first error without the config file's directory: the
 * file name and line are what an operator needs there; the log has it all. */
static void note_reload_error(struct daemon *d, const char *err)
{
    const char *path = d->opt.config_path;
    size_t plen = strlen(path);
    const char *base = strrchr(path, '/');
    if (base && strncmp(err, path, plen) == 0)
        snprintf(d->reload_error, sizeof d->reload_error, "reload failed: %s%s", base + 1,
                 err + plen);
    else
        snprintf(d->reload_error, sizeof d->reload_error, "reload failed: %s", err);
}

static void reload(struct daemon *d)
{
    if (d->stopping) {
        log_notice("SIGHUP ignored: stopping");
        return;
    }
    if (!d->rereading)
        sdnotify_reloading(&d->sn);
    log_info("%s %s", d->rereading ? "re-reading, before a configuration probe," : "reloading",
             d->opt.config_path);
    struct config_errors errs = {0};
    struct config *cfg = config_load(d->opt.config_path, config_warn_cb, NULL, &errs);
    if (!cfg) {
        for (size_t i = 1; i < errs.count; i++)
            log_err("reload rejected: %s", errs.msg[i]);
        const char *first = errs.count ? errs.msg[0] : "invalid configuration";
        note_reload_error(d, first);
        log_event(LOG_ERR, MSGID_RELOAD_FAILED, NULL,
                  "configuration reload failed: %s; the previous configuration stays in force",
                  first);
    } else {
        struct http_options ho;
        http_options_from(cfg, &ho);
        char err[ERRBUF_LEN];
        if (http_set_options(d->http, &ho, err, sizeof err) < 0) {
            log_event(LOG_ERR, MSGID_RELOAD_FAILED, NULL,
                      "configuration reload failed: %s; the previous configuration stays in force",
                      err);
            note_reload_error(d, err);
            config_unref(cfg);
        } else {
            bool conninfo_changed = strcmp(cfg->conninfo, d->cfg->conninfo) != 0;
            /* The spool holds results that are not written yet: it is never
             * moved under a running daemon. The first directory stays in use. */
            if (strcmp(cfg->state_directory, d->cfg->state_directory) != 0)
                log_warning("[daemon] state_directory changed from %s to %s: the spool stays "
                            "in %s/spool until the next restart",
                            d->cfg->state_directory, cfg->state_directory, d->cfg->state_directory);
            cfg->generation = d->cfg->generation + 1;
            struct config *old = d->cfg;
            d->cfg = cfg;
            discovery_on_config(d->discovery, cfg, old);
            engine_on_config(d->engine, cfg); /* before old may go: the engine borrows it */
            config_unref(old);
            store_set_spool(d->store, d->spool, cfg->keys);
            d->reload_error[0] = '\0';
            metrics_server_check_listen(d->metrics_server, cfg->metrics_listen);
            log_set_level(cfg->log_level);
            listen_check_set_interval(d->listen_check, (double)cfg->heartbeat_interval_ms / 1000.0);
            if (conninfo_changed) {
                log_info("database connection settings changed: reconnecting");
                d->connected = false;
                d->schema_ok = false;
                engine_on_db(d->engine, false);
                db_set_conninfo(d->db, cfg->conninfo);
            }
            log_event(LOG_INFO, MSGID_RELOADED, NULL, "configuration reloaded (generation %u)",
                      cfg->generation);
            engine_kick(d->engine);
        }
    }
    metrics_note_reload(&d->metrics, d->reload_error[0] == '\0', time_now_wall());
    char status[STATUS_MAX];
    format_status(d, status, sizeof status);
    sdnotify_ready(&d->sn, status);
}

/* The engine's re-read before a configuration probe (engine_callbacks). */
static void reread_config_cb(void *ud)
{
    struct daemon *d = ud;
    d->rereading = true;
    reload(d);
    d->rereading = false;
}

static void shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon *d = w->data;
    if (!d->aborting) {
        log_warning("shutdown timeout: abandoning %u requests in flight",
                    engine_in_flight(d->engine));
        d->aborting = true;
        http_abort_all(d->http);
        /* Results of aborted requests are failures; give the store a moment. */
        timer_arm(loop, w, SHUTDOWN_STORE_GRACE_S, 0.);
        return;
    }
    log_err("shutdown: %zu results could not be written", store_pending(d->store));
    daemon_request_exit(d, 0); /* daemon_keep_unwritten() decides the status */
}

/*
 * How long the drain waits: shutdown_timeout, or longer while a request is
 * still within its own request_timeout (plus a second, so that curl's own
 * timeout ends it as a normal failure before we would abort it). A request
 * the provider may already have answered with a rotated refresh token is
 * never aborted: its answer is the only copy of the new token. Chosen over
 * refusing shutdown_timeout < request_timeout because the wait then costs
 * only when a request really is in flight, and no existing config breaks.
 */
static double drain_seconds(const struct daemon *d)
{
    double s = (double)d->cfg->shutdown_timeout_ms / 1000.0;
    if (engine_in_flight(d->engine) > 0) {
        double req = engine_requests_deadline(d->engine) + 1.0 - ev_now(d->loop);
        if (req > s)
            s = req;
    }
    return s;
}

static void begin_shutdown(struct daemon *d, const char *why)
{
    if (d->stopping) {
        if (!d->aborting) {
            log_warning("second %s: abandoning %u requests in flight", why,
                        engine_in_flight(d->engine));
            d->aborting = true;
            http_abort_all(d->http);
        }
        return;
    }
    d->stopping = true;
    discovery_stop(d->discovery);
    double drain = drain_seconds(d);
    log_event(LOG_INFO, MSGID_STOPPING, NULL,
              "%s: stopping; waiting for %u requests in flight (at most %.0fs)", why,
              engine_in_flight(d->engine), drain);
    sdnotify_stopping(&d->sn, "stopping: finishing requests in flight");
    engine_stop(d->engine);
    timer_arm(d->loop, &d->shutdown_timer, drain, 0.);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    switch (w->signum) {
    case SIGHUP:
        reload(d);
        break;
    case SIGTERM:
        begin_shutdown(d, "SIGTERM");
        break;
    case SIGINT:
        begin_shutdown(d, "SIGINT");
        break;
    }
}

/* ---- startup ------------------------------------------------------------------ */

static void make_owner_id(char *buf, size_t len)
{
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(buf, len, "%s:%ld:%08" PRIx32, host, (long)getpid(), randombytes_random());
}

static void start_signals(struct daemon *d)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&d->sig_term, signal_cb, SIGTERM);
    ev_signal_init(&d->sig_int, signal_cb, SIGINT);
    ev_signal_init(&d->sig_hup, signal_cb, SIGHUP);
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
    ev_signal_start(d->loop, &d->sig_term);
    ev_signal_start(d->loop, &d->sig_int);
    ev_signal_start(d->loop, &d->sig_hup);
}

static void spool_add_cb(void *ud, struct store_item *item)
{
    struct daemon *d = ud;
    store_add(d->store, item);
}

static void spool_warn_cb(void *ud, const char *msg)
{
    log_event(LOG_ERR, NULL, NULL, "%s", msg);
}

/* Results an earlier run could not write: queued before any new claim. */
static void replay_spool(struct daemon *d)
{
    struct spool_replay_stats st;
    spool_replay(d->spool, d->cfg->keys, spool_add_cb, spool_warn_cb, d, &st);
    if (st.items || st.bad_items)
        log_event(st.bad_items ? LOG_WARNING : LOG_NOTICE, NULL, NULL,
                  "replaying %zu spooled results from %zu segments (%zu damaged entries kept "
                  "aside, %zu already settled, %zu torn last lines ignored)",
                  st.items, st.segments, st.bad_items, st.settled, st.torn_lines);
}

/* A deaf LISTEN that keeps coming back after a reconnection is not helped by
 * another one: reconnect for it at most this often. */
#define DEAF_RECONNECT_EVERY_S 600.0

/*
 * LISTEN does not hear (a pooler in transaction mode, a broken proxy): say so
 * loudly the first time (later episodes at info: the metric and STATUS= carry
 * them); reconnect in case it was the connection; and let the engine rescan
 * often, since the trigger's notifications are lost.
 */
static void listen_deaf_cb(void *ud, bool deaf)
{
    struct daemon *d = ud;
    if (deaf) {
        bool first = d->deaf_reconnected_at == 0;
        log_event(first ? LOG_WARNING : LOG_INFO, first ? MSGID_LISTEN_DEAF : NULL, NULL,
                  "notifications do not arrive: LISTEN succeeded but our own heartbeat on %s "
                  "never came back (a connection pooler in transaction mode?); rescanning every "
                  "%.0fs meanwhile; on-demand refresh requests cannot be heard",
                  LISTEN_CHECK_CHANNEL, engine_deaf_rescan_interval(d->engine));
        if (first || ev_now(d->loop) - d->deaf_reconnected_at >= DEAF_RECONNECT_EVERY_S) {
            d->deaf_reconnected_at = ev_now(d->loop);
            db_reconnect(d->db, "LISTEN is deaf, trying a new connection");
        }
    } else {
        log_event(LOG_NOTICE, NULL, NULL, "notifications arrive again: LISTEN hears");
    }
    engine_on_listen_deaf(d->engine, deaf);
    char status[STATUS_MAX];
    format_status(d, status, sizeof status);
    sdnotify_status(&d->sn, status);
}

/* Live gauges for a metrics scrape; returns the lead time that defines "due". */
static int64_t metrics_collect_cb(void *ud, struct metrics *m)
{
    struct daemon *d = ud;
    m->in_flight = engine_in_flight(d->engine);
    m->waiting = engine_waiting(d->engine);
    m->held = store_pending(d->store);
    m->db_connected = d->connected;
    m->listen_deaf = listen_check_deaf(d->listen_check);
    m->config_generation = d->cfg->generation;
    for (int p = 0; p < PROVIDER_MAX; p++) {
        bool refusing;
        m->paused[p] = engine_provider_paused(d->engine, (enum provider_id)p, &refusing);
    }
    return d->cfg->lead_time_ms;
}

/* A generic provider's token endpoint is known (or its first discovery failed). */
static void discovery_ready_cb(void *ud, enum provider_id p, bool ok)
{
    struct daemon *d = ud;
    (void)p;
    engine_on_discovery(d->engine, ok);
    char status[STATUS_MAX];
    format_status(d, status, sizeof status);
    sdnotify_status(&d->sn, status);
}

/* The store's answers are the engine's business; the store exists before it. */
static void store_done_cb(void *ud, const struct store_item *item, enum store_fate fate)
{
    struct daemon *d = ud;
    engine_on_store_done(d->engine, item, fate);
}

static void revoked_checked_cb(void *ud, size_t lifted)
{
    struct daemon *d = ud;
    engine_on_revoked_checked(d->engine, lifted);
}

/* --once found nothing more to do, or the drain after SIGTERM ended. */
static void engine_finished_cb(void *ud, int code)
{
    daemon_request_exit(ud, code);
}

static int daemon_setup(struct daemon *d)
{
    char err[ERRBUF_LEN];
    if (ensure_state_directory(d->cfg->state_directory, err, sizeof err) < 0) {
        log_event(LOG_ERR, MSGID_CONFIG_ERROR, NULL, "%s", err);
        return EXIT_CONFIG;
    }
    d->spool = spool_open(d->cfg->state_directory, err, sizeof err);
    if (!d->spool) {
        log_event(LOG_ERR, MSGID_CONFIG_ERROR, NULL, "%s", err);
        return EXIT_CONFIG;
    }
    struct http_options ho;
    http_options_from(d->cfg, &ho);
    d->http = http_new(d->loop, &ho, err, sizeof err);
    if (!d->http) {
        log_event(LOG_ERR, MSGID_CONFIG_ERROR, NULL, "%s", err);
        return EXIT_CONFIG;
    }
    d->discovery = discovery_new(d->loop, d->http, discovery_ready_cb, d);
    if (!d->discovery) {
        log_err("out of memory");
        return EXIT_UNAVAILABLE;
    }
    struct db_options dbo = {
        .conninfo = d->cfg->conninfo,
        .channels = listen_channels,
        .session_sql = "SET application_name = 'oauth-refreshd'",
        .connect_timeout_s = 10,
        .retry_min_s = 0.5,
        .retry_max_s = 30,
    };
    struct db_callbacks dbc = {.connected = db_connected_cb,
                               .disconnected = db_disconnected_cb,
                               .notify = db_notify_cb,
                               .ud = d};
    d->db = db_new(d->loop, &dbo, &dbc);
    struct listen_check_callbacks lcc = {.changed = listen_deaf_cb, .ud = d};
    d->listen_check = d->db ? listen_check_new(d->loop, d->db, d->owner, &lcc) : NULL;
    if (d->listen_check)
        listen_check_set_interval(d->listen_check, (double)d->cfg->heartbeat_interval_ms / 1000.0);
    struct store_callbacks sc = {
        .done = store_done_cb, .revoked_checked = revoked_checked_cb, .ud = d};
    d->store = d->db ? store_new(d->loop, d->db, d->owner, &sc) : NULL;
    d->queue = d->db ? queue_new(d->db, d->owner) : NULL;
    if (!d->db || !d->store || !d->listen_check || !d->queue) {
        log_err("out of memory at startup");
        return EXIT_UNAVAILABLE;
    }
    if (d->cfg->metrics_listen) {
        d->metrics_server = metrics_server_new(d->loop, d->cfg->metrics_listen, &d->metrics, d->db,
                                               metrics_collect_cb, d, err, sizeof err);
        if (!d->metrics_server) {
            log_event(LOG_ERR, MSGID_CONFIG_ERROR, NULL, "%s", err);
            return EXIT_CONFIG;
        }
    }
    store_set_spool(d->store, d->spool, d->cfg->keys);
    struct engine_deps deps = {.loop = d->loop,
                               .queue = d->queue,
                               .http = d->http,
                               .store = d->store,
                               .discovery = d->discovery,
                               .metrics = &d->metrics};
    struct engine_callbacks ec = {
        .finished = engine_finished_cb, .reread_config = reread_config_cb, .ud = d};
    d->engine = engine_new(&deps, &ec, d->cfg, d->opt.once, d->once_since);
    if (!d->engine) {
        log_err("out of memory at startup");
        return EXIT_UNAVAILABLE;
    }
    replay_spool(d);
    return 0;
}

/*
 * At exit: every result the database did not take is looked at once more.
 * A rotated one that is not in the spool yet is spooled now (the next start
 * replays it); one that cannot be spooled either is lost, and the operator is
 * told which accounts to reconnect. Returns how many were lost. The others
 * (failures, access tokens of non-rotating providers) are had again by the
 * next refresh and are only counted.
 */
static size_t daemon_keep_unwritten(struct daemon *d)
{
    struct store_item *all = store_take_all(d->store);
    size_t unspooled = 0, others = 0, lost = 0;
    for (struct store_item *it = all; it; it = it->next) {
        if (it->rotated && it->spool_id == 0)
            unspooled++;
        else if (!it->rotated)
            others++;
    }
    struct store_item **items = unspooled ? calloc(unspooled, sizeof *items) : NULL;
    char err[ERRBUF_LEN] = "out of memory";
    size_t n = 0;
    for (struct store_item *it = all; it && items; it = it->next)
        if (it->rotated && it->spool_id == 0)
            items[n++] = it;
    if (unspooled && (!items || !d->spool ||
                      spool_write(d->spool, d->cfg->keys, items, n, err, sizeof err) < 0)) {
        for (struct store_item *it = all; it; it = it->next) {
            if (!it->rotated || it->spool_id != 0)
                continue;
            lost++;
            struct log_ctx ctx = {.account_id = it->account_id,
                                  .provider = provider_id_name(it->provider),
                                  .error = "rotated_token_lost"};
            log_event(LOG_ERR, NULL, &ctx,
                      "account %" PRId64 " (%s): its rotated refresh token could be neither "
                      "written nor spooled (%s); the account must be reconnected",
                      it->account_id, provider_id_name(it->provider), err);
        }
    } else if (unspooled) {
        log_notice("spooled %zu rotated results at exit; the next start writes them", unspooled);
    }
    if (others)
        log_notice("%zu results not written at exit (no new refresh token in them: the next "
                   "refresh redoes them)",
                   others);
    free(items);
    while (all) {
        struct store_item *next = all->next;
        store_item_free(all);
        all = next;
    }
    return lost;
}

static size_t daemon_teardown(struct daemon *d)
{
    size_t lost = 0;
    sdnotify_stop(&d->sn);
    ev_timer_stop(d->loop, &d->status_timer);
    ev_timer_stop(d->loop, &d->shutdown_timer);
    if (d->engine)
        engine_stop(d->engine); /* gives back what was claimed and not sent */
    discovery_stop(d->discovery);
    if (d->http)
        http_abort_all(d->http);
    if (d->http)
        http_free(d->http);
    discovery_free(d->discovery); /* after http_free: that ends its fetches */
    /* db_free fails outstanding statements; their owners still exist here. */
    listen_check_free(d->listen_check); /* before db_free: its heartbeat may be pending */
    d->listen_check = NULL;
    if (d->db)
        db_free(d->db);
    metrics_server_free(d->metrics_server); /* after db_free: a count query may be pending */
    engine_free(d->engine);                 /* after db_free: it answered the engine's statements */
    queue_free(d->queue);
    if (d->store) {
        lost = daemon_keep_unwritten(d); /* after db_free: failed batches are back in the queue */
        store_free(d->store);            /* spooled results stay in the spool */
    }
    spool_close(d->spool);
    ev_signal_stop(d->loop, &d->sig_term);
    ev_signal_stop(d->loop, &d->sig_int);
    ev_signal_stop(d->loop, &d->sig_hup);
    config_unref(d->cfg);
    return lost;
}

int daemon_run(struct config *cfg, const struct daemon_options *opt)
{
    struct daemon *d = calloc(1, sizeof *d);
    if (!d) {
        config_unref(cfg);
        return EXIT_UNAVAILABLE;
    }
    d->loop = ev_default_loop(EVFLAG_AUTO);
    d->cfg = cfg;
    d->opt = *opt;
    d->once_since = time_now_wall();
    metrics_init(&d->metrics, d->once_since);
    make_owner_id(d->owner, sizeof d->owner);
    log_event(LOG_INFO, MSGID_STARTED, NULL, "oauth-refreshd %s starting (%s, owner %s)",
              OAUTH_VERSION, opt->once ? "once" : "continuous", d->owner);

    int rc = daemon_setup(d);
    if (rc == 0) {
        start_signals(d);
        sdnotify_init(&d->sn, d->loop, loop_healthy_cb, d);
        sdnotify_status(&d->sn, "connecting to the database");
        discovery_on_config(d->discovery, d->cfg, NULL);
        ev_init(&d->status_timer, status_timer_cb);
        timer_arm(d->loop, &d->status_timer, STATUS_INTERVAL_S, STATUS_INTERVAL_S);
        d->status_timer.data = d;
        ev_init(&d->shutdown_timer, shutdown_timer_cb);
        timer_set(&d->shutdown_timer, 1., 0.);
        d->shutdown_timer.data = d;
        d->last_summary = ev_now(d->loop);
        db_start(d->db);
        ev_run(d->loop, 0);
        rc = d->exit_code;
        if (!d->stopping && !opt->once)
            sdnotify_stopping(&d->sn, "stopping");
        struct metrics_totals t;
        metrics_totals(&d->metrics, &t);
        log_info("exiting: %" PRIu64 " refreshed, %" PRIu64 " failed, %" PRIu64 " revoked, %" PRIu64
                 " discarded, %" PRIu64 " lost races",
                 t.refreshed, t.failed, t.revoked, t.discarded, t.lost_races);
        char lat[160];
        metrics_claim_summary(&d->metrics, lat, sizeof lat);
        if (lat[0])
            log_info("%s", lat);
    }
    /* SPEC §2: 1 when work failed; losing a rotated refresh token is the worst. */
    if (daemon_teardown(d) > 0 && rc == 0)
        rc = EXIT_WORK_FAILED;
    free(d);
    return rc;
}
