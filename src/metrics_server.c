/*
 * metrics_server.c — the HTTP side of the metrics: the listening socket
 * (bound here so that a bad or busy address is a clear startup error),
 * libmicrohttpd in external-select epoll mode driven by one ev_io on its epoll
 * descriptor and one ev_timer from MHD_get_timeout, the /metrics handler, and
 * the periodic account-count query that feeds the due/failing/revoked gauges.
 *
 * It must never block the loop (MHD_run is only called when MHD has work and
 * never waits), never serve anything but the exposition (other paths are 404,
 * other methods 405), and never log request contents.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"
#include "metrics_server.h"
#include "timeutil.h"
#include "version.h"

#define COUNTS_INTERVAL_S   10.0  /* how often the account counts are read */
#define COUNTS_IDLE_AFTER_S 120.0 /* ... while someone scraped this recently */
#define MAX_CONNECTIONS     32
#define CONNECTION_TIMEOUT  10 /* seconds */

struct metrics_server {
    struct ev_loop *loop;
    struct MHD_Daemon *mhd;
    ev_io io;
    ev_timer timer;
    ev_timer counts_timer;
    struct metrics *m;
    struct db *db;
    metrics_collect_fn collect;
    void *ud;
    char *listen;
    double last_scrape; /* ev_now(); 0 = never */
    bool counts_outstanding;
};

/* ---- the listening socket ---------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port" into host and port (host without brackets). */
static int split_listen(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    const char *h = listen;
    size_t hl;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = listen + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL)
            return -1;
        hl = (size_t)(colon - listen);
    }
    if (hl == 0 || hl >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

static int open_listener(const char *addr, char *err, size_t errlen)
{
    char host[256], port[16];
    if (split_listen(addr, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "[metrics] listen: \"%s\" is not host:port", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "[metrics] listen: cannot resolve \"%s\": %s", addr,
                 gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int saved = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "[metrics] listen: cannot listen on %s: %s", addr,
                 strerror(saved ? saved : EADDRNOTAVAIL));
    return fd;
}

/* ---- libmicrohttpd on libev ----------------------------------------------------------- */

static void drive(struct metrics_server *s)
{
    MHD_run(s->mhd);
    MHD_UNSIGNED_LONG_LONG ms;
    ev_timer_stop(s->loop, &s->timer);
    if (MHD_get_timeout(s->mhd, &ms) == MHD_YES) {
        timer_set(&s->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(s->loop, &s->timer);
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    drive(w->data);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    drive(w->data);
}

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("metrics http: %s", msg);
}

/* ---- the account counts --------------------------------------------------------------- */

static void counts_done_cb(void *ud, PGresult *res)
{
    struct metrics_server *s = ud;
    s->counts_outstanding = false;
    if (res == NULL)
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char why[ERRBUF_LEN];
        log_debug("metrics: reading the account counts failed: %s",
                  db_result_reason(why, sizeof why, res));
        return;
    }
    metrics_set_counts(s->m, strtoll(PQgetvalue(res, 0, 0), NULL, 10),
                       strtoll(PQgetvalue(res, 0, 1), NULL, 10),
                       strtoll(PQgetvalue(res, 0, 2), NULL, 10), time_now_wall());
}

/* Each count reads a partial index of account_state, as `oauth-refreshctl status` does. */
static void counts_query(struct metrics_server *s)
{
    if (s->db == NULL || s->counts_outstanding || !db_is_connected(s->db))
        return;
    int64_t lead_ms = s->collect(s->ud, s->m);
    char lead[48];
    snprintf(lead, sizeof lead, "%.3f seconds", (double)lead_ms / 1000.0);
    const char *params[] = {lead};
    if (db_query(s->db,
                 "SELECT (SELECT count(*) FROM oauth_refreshd.account_state"
                 "         WHERE due_at IS NOT NULL AND due_at <= now() + $1::interval),"
                 "       (SELECT count(*) FROM oauth_refreshd.account_state"
                 "         WHERE last_error IS NOT NULL AND NOT revoked),"
                 "       (SELECT count(*) FROM oauth_refreshd.account_state WHERE revoked)",
                 1, params, counts_done_cb, s) == 0)
        s->counts_outstanding = true;
}

static void counts_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct metrics_server *s = w->data;
    /* Nobody is looking: do not spend the database's time. */
    if (s->m->counts_at == 0 || ev_now(loop) - s->last_scrape < COUNTS_IDLE_AFTER_S)
        counts_query(s);
}

/* ---- the handler ---------------------------------------------------------------------- */

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct metrics_server *s = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics is served\n");
    if (strcmp(url, "/metrics") != 0)
        return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");

    s->last_scrape = ev_now(s->loop);
    (void)s->collect(s->ud, s->m);
    struct strbuf out;
    strbuf_init(&out);
    metrics_render(s->m, OAUTH_VERSION, &out);
    if (out.oom || out.data == NULL) {
        strbuf_free(&out);
        return MHD_NO;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(out.len, out.data, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        strbuf_free(&out);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    /* The first scrape finds no counts yet: read them for the next one. */
    if (s->m->counts_at == 0)
        counts_query(s);
    return ret;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

struct metrics_server *metrics_server_new(struct ev_loop *loop, const char *listen,
                                          struct metrics *m, struct db *db,
                                          metrics_collect_fn collect, void *ud, char *err,
                                          size_t errlen)
{
    struct metrics_server *s = calloc(1, sizeof *s);
    if (s == NULL || (s->listen = strdup(listen)) == NULL) {
        free(s);
        snprintf(err, errlen, "[metrics] listen: out of memory");
        return NULL;
    }
    s->loop = loop;
    s->m = m;
    s->db = db;
    s->collect = collect;
    s->ud = ud;
    int fd = open_listener(listen, err, errlen);
    if (fd < 0) {
        metrics_server_free(s);
        return NULL;
    }
    s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle_cb, s,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, s, MHD_OPTION_LISTEN_SOCKET,
                              (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)CONNECTION_TIMEOUT, MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        s->mhd ? MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (info == NULL) {
        snprintf(err, errlen, "[metrics] listen: cannot start the HTTP server on %s", listen);
        /* Not closing fd when MHD failed: whether it already did varies by
         * version, and the daemon exits now anyway. */
        metrics_server_free(s);
        return NULL;
    }
    ev_io_init(&s->io, io_cb, info->epoll_fd, EV_READ);
    s->io.data = s;
    ev_io_start(loop, &s->io);
    ev_timer_init(&s->timer, timer_cb, 0., 0.);
    s->timer.data = s;
    ev_timer_init(&s->counts_timer, counts_timer_cb, 1., COUNTS_INTERVAL_S);
    s->counts_timer.data = s;
    ev_timer_start(loop, &s->counts_timer);
    log_info("metrics: serving http://%s/metrics", listen);
    drive(s);
    return s;
}

void metrics_server_check_listen(const struct metrics_server *srv, const char *listen)
{
    const char *now = srv ? srv->listen : NULL;
    bool same = (now == NULL && listen == NULL) ||
                (now != NULL && listen != NULL && strcmp(now, listen) == 0);
    if (!same)
        log_warning("[metrics] listen changed from %s to %s: this takes effect at the next "
                    "restart",
                    now ? now : "(off)", listen ? listen : "(off)");
}

void metrics_server_free(struct metrics_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->mhd != NULL) {
        ev_io_stop(srv->loop, &srv->io);
        ev_timer_stop(srv->loop, &srv->timer);
        ev_timer_stop(srv->loop, &srv->counts_timer);
        MHD_stop_daemon(srv->mhd); /* closes the listening socket */
    }
    free(srv->listen);
    free(srv);
}
