/*
 * db.c — one asynchronous PostgreSQL connection driven by libev. It owns the
 * PGconn, its io watcher and its timers: the non-blocking connect state
 * machine (PQconnectStartParams + PQconnectPoll, PQsocket re-read at every
 * step) under its own timeout, the per-connection setup (session SQL, LISTEN),
 * pipeline mode with one Sync per statement so that every statement is its own
 * implicit transaction, a FIFO of callbacks answered in order, notification
 * dispatch, and reconnection with jittered exponential backoff.
 *
 * A statement's result is handed over only when its Sync has been answered,
 * i.e. when its implicit transaction is really over: a result that arrived
 * without its Sync (connection lost in between) is reported as NULL, "outcome
 * unknown", never as a success that may not have committed.
 *
 * It never blocks the loop, never interprets the SQL it carries, never calls
 * a user callback from inside db_start/db_query/db_set_conninfo (those are
 * deferred to the loop), and never lets a password reach a reason string:
 * every libpq message goes through db_redact() first.
 */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "secret.h"
#include "timeutil.h"

enum db_state {
    DB_IDLE,       /* db_new done, db_start not yet called */
    DB_WAIT_RETRY, /* no connection; retry_timer armed */
    DB_CONNECTING, /* PQconnectPoll in progress */
    DB_SETUP,      /* session SQL + LISTEN running */
    DB_READY,      /* pipeline mode, statements accepted */
    DB_CLOSED,     /* db_free called */
};

struct db_pending {
    db_result_cb cb;
    void *ud;
};

struct db {
    struct ev_loop *loop;
    struct db_callbacks cbs;

    char *conninfo; /* may hold a password: guarded (secret_guarded_dup) */
    char **channels;
    size_t nchannels;
    char *session_sql;
    double connect_timeout_s, retry_min_s, retry_max_s;

    enum db_state state;
    PGconn *conn;
    unsigned gen; /* bumped whenever conn is dropped: loops stop when it moves */

    ev_io io;
    int io_events; /* what io is started with; 0 = stopped */
    ev_timer connect_timer;
    ev_timer retry_timer;
    ev_timer defer_timer; /* a drop decided outside a loop callback */
    char defer_reason[ERRBUF_LEN];
    bool defer_immediate;

    char setup_err[ERRBUF_LEN]; /* first error of the session setup, kept across reads */
    unsigned attempts;          /* failed connects since the last good one */
    uint64_t rng;

    /* FIFO of statements sent, answered in order; capacity a power of two. */
    struct db_pending *ring;
    unsigned ring_cap, ring_head, ring_count;
    PGresult *cur_res; /* result of the head statement, waiting for its Sync */

    int depth;   /* nesting of loop callbacks currently running */
    bool closed; /* db_free called: destroy when depth drops to 0 */
};

#define DB_RING_INITIAL 256u

/* ---- reason strings ------------------------------------------------------ */

/*
 * A run this long of base64/urlsafe characters is not a word, a number or an
 * identifier (PostgreSQL's are at most 63 bytes) but a token, a ciphertext or
 * a key: masked. Every Fernet token is at least 100 characters.
 */
#define DB_REDACT_RUN 64

static bool db_token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '=' || c == '+' || c == '/';
}

size_t db_redact(char *dst, size_t dstlen, const char *msg)
{
    if (dstlen == 0)
        return 0;
    if (msg == NULL)
        msg = "";
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; msg[i] != '\0' && o + 1 < dstlen; i++) {
        if (strncasecmp(msg + i, "password", 8) == 0) {
            /* "password=...", "password: ...": nothing after it is kept. */
            size_t j = i + 8;
            while (msg[j] == ' ')
                j++;
            if (msg[j] == '=' || msg[j] == ':') {
                static const char mark[] = "password=[redacted]";
                for (size_t k = 0; mark[k] != '\0' && o + 1 < dstlen; k++)
                    dst[o++] = mark[k];
                break;
            }
        }
        if (msg[i] == ':' && msg[i + 1] == '/' && msg[i + 2] == '/') {
            /* URI userinfo "scheme://user:secret@host": drop the secret. */
            const char *auth = msg + i + 3;
            size_t alen = strcspn(auth, "/?# \t\r\n\"'");
            const char *at = memrchr(auth, '@', alen);
            const char *colon = at != NULL ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
            if (colon != NULL) {
                size_t keep = (size_t)(colon - msg) + 1; /* through the ':' */
                for (; i < keep && o + 1 < dstlen; i++)
                    dst[o++] = msg[i];
                static const char mark[] = "[redacted]";
                for (size_t k = 0; mark[k] != '\0' && o + 1 < dstlen; k++)
                    dst[o++] = mark[k];
                i = (size_t)(at - msg) - 1; /* continue at '@' */
                space = false;
                continue;
            }
        }
        unsigned char c = (unsigned char)msg[i];
        if (db_token_char(c) && (i == 0 || !db_token_char((unsigned char)msg[i - 1]))) {
            size_t j = i;
            while (db_token_char((unsigned char)msg[j]))
                j++;
            if (j - i >= DB_REDACT_RUN) {
                if (space && o > 0 && o + 1 < dstlen)
                    dst[o++] = ' ';
                space = false;
                static const char mark[] = "[redacted]";
                for (size_t k = 0; mark[k] != '\0' && o + 1 < dstlen; k++)
                    dst[o++] = mark[k];
                i = j - 1;
                continue;
            }
        }
        if (c == '\n' || c == '\r' || c == '\t' || c < 0x20 || c == 0x7f) {
            space = true; /* runs of control characters become one space */
            continue;
        }
        if (space && o > 0 && o + 1 < dstlen)
            dst[o++] = ' ';
        space = false;
        if (o + 1 < dstlen)
            dst[o++] = (char)c;
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    dst[o] = '\0';
    return o;
}

const char *db_result_reason(char *dst, size_t dstlen, const PGresult *res)
{
    if (dstlen == 0)
        return dst;
    const char *msg = res != NULL ? PQresultErrorMessage(res) : NULL;
    if (msg == NULL || *msg == '\0')
        msg = res != NULL ? PQresStatus(PQresultStatus(res)) : "no result";
    /* The first line is "SEVERITY:  primary message"; DETAIL, HINT, CONTEXT
     * and the statement follow on lines of their own, and a DETAIL can echo a
     * row's values ("Failing row contains (...)", "Key (...)=(...)"): only
     * the first line is kept, its own values masked by db_redact. */
    char first[ERRBUF_LEN];
    size_t n = strcspn(msg, "\n");
    if (n >= sizeof first)
        n = sizeof first - 1;
    memcpy(first, msg, n);
    first[n] = '\0';
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char raw[ERRBUF_LEN + 32];
    snprintf(raw, sizeof raw, "%s%s%s%s", first, state != NULL ? " (SQLSTATE " : "",
             state != NULL ? state : "", state != NULL ? ")" : "");
    db_redact(dst, dstlen, raw);
    return dst;
}

/* ---- small helpers --------------------------------------------------------- */

static double db_random01(struct db *db)
{
    /* xorshift64*: jitter only, no security meaning. */
    uint64_t x = db->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    db->rng = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static double db_next_backoff(struct db *db)
{
    double base = db->retry_min_s;
    for (unsigned i = 0; i < db->attempts && base < db->retry_max_s; i++)
        base *= 2.0;
    if (base > db->retry_max_s)
        base = db->retry_max_s;
    if (db->attempts < 64)
        db->attempts++;
    /* Jitter in [base/2, base], never below retry_min. */
    double delay = base * (0.5 + 0.5 * db_random01(db));
    if (delay < db->retry_min_s)
        delay = db->retry_min_s;
    return delay;
}

static void db_io_watch(struct db *db, int fd, int events)
{
    /* Never ev_io_set an active watcher: stop, set, start. */
    if (db->io_events != 0 && db->io.fd == fd && db->io_events == events)
        return;
    ev_io_stop(db->loop, &db->io);
    db->io_events = 0;
    if (fd < 0 || events == 0)
        return;
    ev_io_set(&db->io, fd, events);
    ev_io_start(db->loop, &db->io);
    db->io_events = events;
}

static void db_io_stop(struct db *db)
{
    ev_io_stop(db->loop, &db->io);
    db->io_events = 0;
}

/* Makes room for one more record (the only allocation on the query path). */
static bool db_ring_reserve(struct db *db)
{
    if (db->ring_count == db->ring_cap) {
        unsigned ncap = db->ring_cap ? db->ring_cap * 2 : DB_RING_INITIAL;
        struct db_pending *n = malloc(sizeof(*n) * ncap);
        if (n == NULL)
            return false;
        for (unsigned i = 0; i < db->ring_count; i++)
            n[i] = db->ring[(db->ring_head + i) & (db->ring_cap - 1)];
        free(db->ring);
        db->ring = n;
        db->ring_cap = ncap;
        db->ring_head = 0;
    }
    return true;
}

static void db_ring_push(struct db *db, db_result_cb cb, void *ud)
{
    struct db_pending *p = &db->ring[(db->ring_head + db->ring_count) & (db->ring_cap - 1)];
    p->cb = cb;
    p->ud = ud;
    db->ring_count++;
}

static struct db_pending db_ring_pop(struct db *db)
{
    struct db_pending p = db->ring[db->ring_head];
    db->ring_head = (db->ring_head + 1) & (db->ring_cap - 1);
    db->ring_count--;
    return p;
}

/* Fails every pending statement with NULL, each exactly once. */
static void db_fail_pending(struct db *db)
{
    if (db->cur_res != NULL) {
        PQclear(db->cur_res);
        db->cur_res = NULL;
    }
    while (db->ring_count > 0) {
        struct db_pending p = db_ring_pop(db);
        p.cb(p.ud, NULL);
    }
}

static void db_close_conn(struct db *db)
{
    db_io_stop(db); /* before PQfinish closes the socket */
    ev_timer_stop(db->loop, &db->connect_timer);
    ev_timer_stop(db->loop, &db->defer_timer);
    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    db->gen++;
}

/*
 * Drops the connection, fails what was in flight, tells the owner and arms
 * the retry timer. Only called from loop callbacks.
 */
static void db_drop(struct db *db, const char *what, const char *detail, bool immediate)
{
    char raw[ERRBUF_LEN], reason[ERRBUF_LEN];
    snprintf(raw, sizeof(raw), "%s%s%s", what, detail != NULL && *detail ? ": " : "",
             detail != NULL ? detail : "");
    db_redact(reason, sizeof(reason), raw);

    db_close_conn(db);
    db->state = DB_WAIT_RETRY;
    double delay = 0.0;
    if (immediate)
        db->attempts = 0;
    else
        delay = db_next_backoff(db);
    timer_set(&db->retry_timer, delay, 0.0);
    ev_timer_start(db->loop, &db->retry_timer);

    unsigned gen = db->gen;
    db_fail_pending(db);
    if (db->closed || db->gen != gen)
        return;
    if (db->cbs.disconnected != NULL)
        db->cbs.disconnected(db->cbs.ud, reason, delay);
}

static const char *db_conn_error(const struct db *db)
{
    const char *m = db->conn != NULL ? PQerrorMessage(db->conn) : NULL;
    return m != NULL && *m ? m : "connection lost";
}

/* Asks the loop to drop the connection soon (from outside loop callbacks). */
static void db_defer_drop(struct db *db, const char *reason, bool immediate)
{
    if (ev_is_active(&db->defer_timer)) {
        db->defer_immediate = db->defer_immediate || immediate;
        return;
    }
    snprintf(db->defer_reason, sizeof(db->defer_reason), "%s", reason);
    db->defer_immediate = immediate;
    db_io_stop(db); /* libpq may already have closed the socket */
    timer_set(&db->defer_timer, 0.0, 0.0);
    ev_timer_start(db->loop, &db->defer_timer);
}

static void db_destroy(struct db *db)
{
    free(db->ring);
    secret_guarded_free(db->conninfo);
    for (size_t i = 0; i < db->nchannels; i++)
        free(db->channels[i]);
    free(db->channels);
    free(db->session_sql);
    free(db);
}

static void db_enter(struct db *db)
{
    db->depth++;
}

/* Returns false when db was destroyed and must not be touched. */
static bool db_leave(struct db *db)
{
    if (--db->depth == 0 && db->closed) {
        db_destroy(db);
        return false;
    }
    return true;
}

/* ---- notifications ----------------------------------------------------------- */

static void db_dispatch_notifies(struct db *db)
{
    unsigned gen = db->gen;
    PGnotify *n;
    while (db->conn != NULL && (n = PQnotifies(db->conn)) != NULL) {
        if (db->cbs.notify != NULL)
            db->cbs.notify(db->cbs.ud, n->relname, n->extra != NULL ? n->extra : "");
        PQfreemem(n);
        if (db->closed || db->gen != gen)
            return;
    }
}

/* ---- pipeline: results --------------------------------------------------------- */

/*
 * Drains every complete result without blocking. A statement is complete
 * when its PGRES_PIPELINE_SYNC has been read: then its first result (or the
 * first error, if its commit failed after a success) goes to its callback.
 * Returns false when the connection was dropped or db closed meanwhile.
 */
static bool db_drain(struct db *db)
{
    unsigned gen = db->gen;
    bool last_null = false;
    while (!PQisBusy(db->conn)) {
        PGresult *r = PQgetResult(db->conn);
        if (r == NULL) {
            /* One NULL ends a statement's results; two mean nothing is queued. */
            if (last_null || db->ring_count == 0)
                break;
            last_null = true;
            continue;
        }
        last_null = false;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (db->ring_count == 0)
                continue; /* cannot happen: every Sync follows a statement */
            PGresult *res = db->cur_res;
            db->cur_res = NULL;
            struct db_pending p = db_ring_pop(db);
            p.cb(p.ud, res);
            PQclear(res);
            if (db->closed || db->gen != gen)
                return false;
            continue;
        }
        if (db->cur_res == NULL) {
            db->cur_res = r;
        } else if (st == PGRES_FATAL_ERROR && PQresultStatus(db->cur_res) != PGRES_FATAL_ERROR) {
            PQclear(db->cur_res);
            db->cur_res = r;
        } else {
            PQclear(r);
        }
    }
    return true;
}

static void db_ready_io(struct db *db, int revents)
{
    unsigned gen = db->gen;
    if (revents & EV_WRITE) {
        int f = PQflush(db->conn);
        if (f < 0) {
            db_drop(db, "connection lost", db_conn_error(db), false);
            return;
        }
        /* PQflush may have read input to avoid a deadlock: drain below. */
        db_io_watch(db, PQsocket(db->conn), f == 1 ? EV_READ | EV_WRITE : EV_READ);
    }
    int consumed = 1;
    if (revents & EV_READ)
        consumed = PQconsumeInput(db->conn);
    /* Complete results already read are still good, even if the socket died. */
    if (!db_drain(db))
        return;
    db_dispatch_notifies(db);
    if (db->closed || db->gen != gen)
        return;
    if (!consumed || PQstatus(db->conn) == CONNECTION_BAD) {
        /* The server's own FATAL (e.g. "terminating connection due to administrator
         * command") says more than libpq's "server closed the connection". */
        const char *state =
            db->cur_res != NULL ? PQresultErrorField(db->cur_res, PG_DIAG_SQLSTATE) : NULL;
        if (state != NULL && (strncmp(state, "57", 2) == 0 || strncmp(state, "08", 2) == 0)) {
            char why[ERRBUF_LEN];
            snprintf(why, sizeof(why), "%s", PQresultErrorMessage(db->cur_res));
            db_drop(db, "connection lost", why, false);
        } else {
            db_drop(db, "connection lost", db_conn_error(db), false);
        }
    }
}

/* ---- connection setup ------------------------------------------------------------ */

static void db_enter_ready(struct db *db)
{
    if (PQenterPipelineMode(db->conn) != 1) {
        db_drop(db, "cannot enter pipeline mode", db_conn_error(db), false);
        return;
    }
    ev_timer_stop(db->loop, &db->connect_timer);
    db->state = DB_READY;
    db->attempts = 0;
    db_io_watch(db, PQsocket(db->conn), EV_READ);
    unsigned gen = db->gen;
    if (db->cbs.connected != NULL)
        db->cbs.connected(db->cbs.ud);
    if (db->closed || db->gen != gen)
        return;
    /* Notifications that arrived during setup were kept by libpq until now. */
    db_dispatch_notifies(db);
}

/* Builds "session_sql;\nLISTEN a;\nLISTEN b" (NULL when there is nothing to run). */
static char *db_setup_sql(struct db *db)
{
    size_t len = (db->session_sql != NULL ? strlen(db->session_sql) + 3 : 0) + 1;
    char **quoted = calloc(db->nchannels + 1, sizeof(*quoted));
    if (quoted == NULL)
        return NULL;
    for (size_t i = 0; i < db->nchannels; i++) {
        quoted[i] = PQescapeIdentifier(db->conn, db->channels[i], strlen(db->channels[i]));
        if (quoted[i] == NULL)
            goto fail;
        len += strlen(quoted[i]) + 10;
    }
    char *sql = malloc(len);
    if (sql == NULL)
        goto fail;
    size_t o = 0;
    if (db->session_sql != NULL)
        o += (size_t)snprintf(sql + o, len - o, "%s;\n", db->session_sql);
    for (size_t i = 0; i < db->nchannels; i++)
        o += (size_t)snprintf(sql + o, len - o, "LISTEN %s;\n", quoted[i]);
    sql[o] = '\0';
    for (size_t i = 0; i < db->nchannels; i++)
        PQfreemem(quoted[i]);
    free(quoted);
    return sql;
fail:
    for (size_t i = 0; i < db->nchannels; i++)
        if (quoted[i] != NULL)
            PQfreemem(quoted[i]);
    free(quoted);
    return NULL;
}

static void db_start_setup(struct db *db)
{
    if (PQsetnonblocking(db->conn, 1) != 0) {
        db_drop(db, "cannot set non-blocking mode", db_conn_error(db), false);
        return;
    }
    if (db->session_sql == NULL && db->nchannels == 0) {
        db_enter_ready(db);
        return;
    }
    char *sql = db_setup_sql(db);
    if (sql == NULL) {
        db_drop(db, "cannot build the session setup", db_conn_error(db), false);
        return;
    }
    int ok = PQsendQuery(db->conn, sql);
    free(sql);
    if (!ok) {
        db_drop(db, "session setup failed", db_conn_error(db), false);
        return;
    }
    db->state = DB_SETUP;
    db->setup_err[0] = '\0';
    int f = PQflush(db->conn);
    if (f < 0) {
        db_drop(db, "session setup failed", db_conn_error(db), false);
        return;
    }
    db_io_watch(db, PQsocket(db->conn), f == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void db_setup_io(struct db *db, int revents)
{
    if (revents & EV_WRITE) {
        int f = PQflush(db->conn);
        if (f < 0) {
            db_drop(db, "session setup failed", db_conn_error(db), false);
            return;
        }
        db_io_watch(db, PQsocket(db->conn), f == 1 ? EV_READ | EV_WRITE : EV_READ);
    }
    if ((revents & EV_READ) && !PQconsumeInput(db->conn)) {
        db_drop(db, "session setup failed", db_conn_error(db), false);
        return;
    }
    char *err = db->setup_err;
    while (!PQisBusy(db->conn)) {
        PGresult *r = PQgetResult(db->conn);
        if (r == NULL) {
            if (err[0] != '\0') {
                db_drop(db, "session setup failed", err, false);
                return;
            }
            if (PQstatus(db->conn) == CONNECTION_BAD) {
                db_drop(db, "session setup failed", db_conn_error(db), false);
                return;
            }
            db_enter_ready(db);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY &&
            err[0] == '\0')
            snprintf(err, sizeof(db->setup_err), "%s", PQresultErrorMessage(r));
        PQclear(r);
    }
    if (PQstatus(db->conn) == CONNECTION_BAD)
        db_drop(db, "session setup failed", db_conn_error(db), false);
}

/* Server NOTICE/WARNING messages: to the log, not libpq's default stderr print. */
static void db_notice_cb(void *arg, const char *message)
{
    char clean[ERRBUF_LEN];
    db_redact(clean, sizeof(clean), message);
    if (strncmp(clean, "WARNING", 7) == 0)
        log_warning("database: %s", clean);
    else
        log_debug("database: %s", clean);
}

/* ---- connecting -------------------------------------------------------------------- */

static void db_connect_step(struct db *db, PostgresPollingStatusType st)
{
    switch (st) {
    case PGRES_POLLING_OK:
        db_start_setup(db);
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING: {
        /* The socket may change between steps (another host, SSL retry). */
        int fd = PQsocket(db->conn);
        if (fd < 0) {
            db_drop(db, "connect failed", db_conn_error(db), false);
            return;
        }
        db_io_stop(db);
        db_io_watch(db, fd, st == PGRES_POLLING_READING ? EV_READ : EV_WRITE);
        return;
    }
    case PGRES_POLLING_FAILED:
    default:
        db_drop(db, "connect failed", db_conn_error(db), false);
        return;
    }
}

static void db_connect_begin(struct db *db)
{
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    /* vals only points at our guarded copy; libpq parses it into its own
     * (ordinary, unwiped) memory, which we cannot avoid. */
    const char *vals[] = {db->conninfo, "oauth-refreshd", NULL};
    db->conn = PQconnectStartParams(keys, vals, 1);
    db->state = DB_CONNECTING;
    timer_set(&db->connect_timer, db->connect_timeout_s, 0.0);
    ev_timer_start(db->loop, &db->connect_timer);
    if (db->conn == NULL) {
        db_drop(db, "connect failed", "out of memory", false);
        return;
    }
    if (PQstatus(db->conn) == CONNECTION_BAD) {
        db_drop(db, "connect failed", db_conn_error(db), false);
        return;
    }
    PQsetNoticeProcessor(db->conn, db_notice_cb, db);
    /* As if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    db_connect_step(db, PGRES_POLLING_WRITING);
}

/* ---- libev callbacks ----------------------------------------------------------------- */

static void db_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct db *db = w->data;
    db_enter(db);
    switch (db->state) {
    case DB_CONNECTING:
        db_connect_step(db, PQconnectPoll(db->conn));
        break;
    case DB_SETUP:
        db_setup_io(db, revents);
        break;
    case DB_READY:
        db_ready_io(db, revents);
        break;
    default:
        db_io_stop(db);
        break;
    }
    db_leave(db);
}

static void db_connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct db *db = w->data;
    db_enter(db);
    char msg[64];
    snprintf(msg, sizeof(msg), "no connection after %.1f s", db->connect_timeout_s);
    db_drop(db, "connect timed out", msg, false);
    db_leave(db);
}

static void db_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct db *db = w->data;
    db_enter(db);
    if (db->state == DB_WAIT_RETRY)
        db_connect_begin(db);
    db_leave(db);
}

static void db_defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct db *db = w->data;
    db_enter(db);
    char reason[sizeof(db->defer_reason)];
    memcpy(reason, db->defer_reason, sizeof(reason));
    const char *detail = NULL;
    if (!db->defer_immediate && db->conn != NULL)
        detail = db_conn_error(db);
    db_drop(db, reason, detail, db->defer_immediate);
    db_leave(db);
}

/* ---- public API -------------------------------------------------------------------------- */

struct db *db_new(struct ev_loop *loop, const struct db_options *opt, const struct db_callbacks *cb)
{
    struct db *db = calloc(1, sizeof(*db));
    if (db == NULL)
        return NULL;
    db->loop = loop;
    if (cb != NULL)
        db->cbs = *cb;
    const char *conninfo = opt->conninfo != NULL ? opt->conninfo : "";
    db->conninfo = secret_guarded_dup(conninfo, strlen(conninfo));
    if (db->conninfo == NULL)
        goto fail;
    if (opt->session_sql != NULL && (db->session_sql = strdup(opt->session_sql)) == NULL)
        goto fail;
    if (opt->channels != NULL) {
        size_t n = 0;
        while (opt->channels[n] != NULL)
            n++;
        db->channels = calloc(n + 1, sizeof(*db->channels));
        if (db->channels == NULL)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            if ((db->channels[i] = strdup(opt->channels[i])) == NULL)
                goto fail;
            db->nchannels++;
        }
    }
    db->connect_timeout_s = opt->connect_timeout_s > 0 ? opt->connect_timeout_s : 10.0;
    db->retry_min_s = opt->retry_min_s > 0 ? opt->retry_min_s : 0.5;
    db->retry_max_s = opt->retry_max_s > 0 ? opt->retry_max_s : 30.0;
    if (db->retry_max_s < db->retry_min_s)
        db->retry_max_s = db->retry_min_s;
    db->rng = ((uint64_t)(uintptr_t)db ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid()) | 1u;

    db->state = DB_IDLE;
    ev_init(&db->io, db_io_cb);
    db->io.data = db;
    ev_init(&db->connect_timer, db_connect_timeout_cb);
    db->connect_timer.data = db;
    ev_init(&db->retry_timer, db_retry_cb);
    db->retry_timer.data = db;
    ev_init(&db->defer_timer, db_defer_cb);
    db->defer_timer.data = db;
    db->ring = malloc(sizeof(*db->ring) * DB_RING_INITIAL);
    if (db->ring == NULL)
        goto fail;
    db->ring_cap = DB_RING_INITIAL;
    return db;
fail:
    db_destroy(db);
    return NULL;
}

void db_start(struct db *db)
{
    if (db->state != DB_IDLE)
        return;
    /* The first attempt runs from the loop, so no callback fires in here. */
    db->state = DB_WAIT_RETRY;
    timer_set(&db->retry_timer, 0.0, 0.0);
    ev_timer_start(db->loop, &db->retry_timer);
}

bool db_is_connected(const struct db *db)
{
    return db->state == DB_READY && !ev_is_active(&db->defer_timer);
}

unsigned db_pending(const struct db *db)
{
    return db->ring_count;
}

int db_query(struct db *db, const char *sql, int nparams, const char *const *params,
             db_result_cb cb, void *ud)
{
    if (!db_is_connected(db) || cb == NULL)
        return -1;
    if (!db_ring_reserve(db))
        return -1; /* before sending, so a sent statement always has its record */
    if (!PQsendQueryParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0)) {
        if (PQstatus(db->conn) == CONNECTION_BAD)
            db_defer_drop(db, "connection lost", false);
        return -1;
    }
    db_ring_push(db, cb, ud);
    /* The Sync ends the statement's implicit transaction. */
    if (PQpipelineSync(db->conn) != 1) {
        db_defer_drop(db, "connection lost", false);
        return 0; /* sent: cb gets NULL when the drop runs */
    }
    int f = PQflush(db->conn);
    if (f < 0) {
        db_defer_drop(db, "connection lost", false);
        return 0;
    }
    if (f == 1 && !(db->io_events & EV_WRITE))
        db_io_watch(db, PQsocket(db->conn), EV_READ | EV_WRITE);
    return 0;
}

void db_set_conninfo(struct db *db, const char *conninfo)
{
    if (db->state == DB_CLOSED)
        return;
    if (conninfo == NULL)
        conninfo = "";
    char *copy = secret_guarded_dup(conninfo, strlen(conninfo));
    if (copy == NULL)
        return; /* keep the old one; the caller's reload still stands otherwise */
    secret_guarded_free(db->conninfo);
    db->conninfo = copy;
    switch (db->state) {
    case DB_IDLE:
        return;
    case DB_WAIT_RETRY:
        db->attempts = 0;
        ev_timer_stop(db->loop, &db->retry_timer);
        timer_set(&db->retry_timer, 0.0, 0.0);
        ev_timer_start(db->loop, &db->retry_timer);
        return;
    default:
        db_defer_drop(db, "reconnecting with the new conninfo", true);
        return;
    }
}

void db_reconnect(struct db *db, const char *reason)
{
    if (db->state == DB_CLOSED || db->state == DB_IDLE || db->state == DB_WAIT_RETRY)
        return;
    db_defer_drop(db, reason, true);
}

void db_free(struct db *db)
{
    if (db == NULL || db->closed)
        return;
    db->closed = true;
    db->state = DB_CLOSED;
    db_close_conn(db);
    ev_timer_stop(db->loop, &db->retry_timer);
    db->depth++; /* a callback below may call db_free again: keep db alive */
    db_fail_pending(db);
    db->depth--;
    if (db->depth == 0)
        db_destroy(db);
}
