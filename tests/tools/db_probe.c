/*
 * db_probe.c — a test driver for db.c: one db connection on the default libev
 * loop, commanded line by line on stdin, reporting every event as one JSON
 * line on stdout, so tests/integration/test_db.py can prove the module's
 * behaviour against a real server. It owns nothing the daemon uses and is
 * never installed.
 *
 * Usage: db_probe [-l CHANNEL]... [-s SESSION_SQL] [-t CONNECT_TIMEOUT]
 *                 [-m RETRY_MIN] [-M RETRY_MAX] CONNINFO
 * Commands:
 *   query ID SQL[<TAB>PARAM...]   one statement; a PARAM of \N is NULL
 *   burst ID N SQL                N statements with $1 = 0..N-1, one summary line
 *   status                        connected and pending counts
 *   conninfo NEW                  db_set_conninfo
 *   quit (or end of input)        db_free, then exit
 * Events: connected, disconnected, notify, result, rejected, burst, status, freed.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "db.h"

struct probe {
    struct ev_loop *loop;
    struct db *db;
    ev_io in;
    char buf[1 << 16];
    size_t len;
    int connects;
    bool quitting;
};

struct query_ctx {
    struct probe *p;
    char id[64];
};

struct burst {
    struct probe *p;
    char id[64];
    unsigned n, answered, ok, nulls, errors, accepted, dups, order_errors;
    long last;
    unsigned *calls;
    ev_tstamp started;
};

struct burst_item {
    struct burst *b;
    unsigned i;
};

static void emit(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s != NULL) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free(s);
    }
    json_decref(obj);
}

static void connected_cb(void *ud)
{
    struct probe *p = ud;
    p->connects++;
    emit(json_pack("{s:s, s:i}", "event", "connected", "count", p->connects));
}

static void disconnected_cb(void *ud, const char *reason, double retry_in_s)
{
    struct probe *p = ud;
    emit(json_pack("{s:s, s:s, s:f, s:i}", "event", "disconnected", "reason", reason, "retry_in",
                   retry_in_s, "pending", (int)db_pending(p->db)));
}

static void notify_cb(void *ud, const char *channel, const char *payload)
{
    struct probe *p = ud;
    emit(json_pack("{s:s, s:s, s:s, s:i}", "event", "notify", "channel", channel, "payload",
                   payload, "pending", (int)db_pending(p->db)));
}

static void query_result_cb(void *ud, PGresult *res)
{
    struct query_ctx *q = ud;
    json_t *o = json_pack("{s:s, s:s}", "event", "result", "id", q->id);
    if (res == NULL) {
        json_object_set_new(o, "status", json_null());
    } else {
        json_object_set_new(o, "status", json_string(PQresStatus(PQresultStatus(res))));
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            json_t *rows = json_array();
            for (int r = 0; r < PQntuples(res); r++) {
                json_t *row = json_array();
                for (int c = 0; c < PQnfields(res); c++)
                    json_array_append_new(row, PQgetisnull(res, r, c)
                                                   ? json_null()
                                                   : json_string(PQgetvalue(res, r, c)));
                json_array_append_new(rows, row);
            }
            json_object_set_new(o, "rows", rows);
        }
        const char *err = PQresultErrorMessage(res);
        if (err != NULL && *err)
            json_object_set_new(o, "error", json_string(err));
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL)
            json_object_set_new(o, "sqlstate", json_string(state));
    }
    emit(o);
    free(q);
}

static void burst_finish(struct burst *b)
{
    unsigned missing = 0;
    for (unsigned i = 0; i < b->n; i++)
        if (b->calls[i] == 0)
            missing++;
    emit(json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:f}", "event", "burst",
                   "id", b->id, "n", (int)b->n, "accepted", (int)b->accepted, "ok", (int)b->ok,
                   "null", (int)b->nulls, "error", (int)b->errors, "dups", (int)b->dups, "missing",
                   (int)missing, "order_errors", (int)b->order_errors, "in_order",
                   b->order_errors == 0, "seconds", ev_now(b->p->loop) - b->started));
    free(b->calls);
    free(b);
}

static void burst_result_cb(void *ud, PGresult *res)
{
    struct burst_item *it = ud;
    struct burst *b = it->b;
    if (b->calls[it->i]++ > 0)
        b->dups++;
    if ((long)it->i <= b->last)
        b->order_errors++;
    b->last = (long)it->i;
    if (res == NULL) {
        b->nulls++;
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
               strtoul(PQgetvalue(res, 0, 0), NULL, 10) == it->i) {
        b->ok++;
    } else {
        b->errors++;
    }
    free(it);
    if (++b->answered == b->accepted)
        burst_finish(b);
}

static void cmd_query(struct probe *p, char *rest)
{
    char *id = strsep(&rest, " ");
    if (rest == NULL) {
        emit(json_pack("{s:s, s:s}", "event", "error", "message", "query ID SQL"));
        return;
    }
    const char *params[64];
    int n = 0;
    char *sql = strsep(&rest, "\t");
    char *tok;
    while (rest != NULL && n < 64 && (tok = strsep(&rest, "\t")) != NULL)
        params[n++] = strcmp(tok, "\\N") == 0 ? NULL : tok;
    struct query_ctx *q = calloc(1, sizeof(*q));
    if (q == NULL)
        abort();
    q->p = p;
    snprintf(q->id, sizeof(q->id), "%s", id);
    if (db_query(p->db, sql, n, params, query_result_cb, q) != 0) {
        emit(json_pack("{s:s, s:s}", "event", "rejected", "id", q->id));
        free(q);
    }
}

static void cmd_burst(struct probe *p, char *rest)
{
    char *id = strsep(&rest, " ");
    char *count = rest != NULL ? strsep(&rest, " ") : NULL;
    if (rest == NULL || count == NULL) {
        emit(json_pack("{s:s, s:s}", "event", "error", "message", "burst ID N SQL"));
        return;
    }
    struct burst *b = calloc(1, sizeof(*b));
    if (b == NULL)
        abort();
    b->p = p;
    snprintf(b->id, sizeof(b->id), "%s", id);
    b->n = (unsigned)strtoul(count, NULL, 10);
    b->calls = calloc(b->n + 1, sizeof(*b->calls));
    b->last = -1;
    b->started = ev_now(p->loop);
    if (b->calls == NULL)
        abort();
    for (unsigned i = 0; i < b->n; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%u", i);
        const char *params[1] = {num};
        struct burst_item *it = malloc(sizeof(*it));
        if (it == NULL)
            abort();
        it->b = b;
        it->i = i;
        b->accepted++; /* before the call: a callback never runs inside db_query */
        if (db_query(p->db, rest, 1, params, burst_result_cb, it) != 0) {
            b->accepted--;
            free(it);
        }
    }
    if (b->accepted == 0)
        burst_finish(b);
}

static void probe_quit(struct probe *p)
{
    if (p->quitting)
        return;
    p->quitting = true;
    ev_io_stop(p->loop, &p->in);
    db_free(p->db);
    p->db = NULL;
    emit(json_pack("{s:s}", "event", "freed"));
    ev_break(p->loop, EVBREAK_ALL);
}

static void run_line(struct probe *p, char *line)
{
    char *rest = line;
    char *cmd = strsep(&rest, " ");
    if (strcmp(cmd, "query") == 0) {
        cmd_query(p, rest);
    } else if (strcmp(cmd, "burst") == 0) {
        cmd_burst(p, rest);
    } else if (strcmp(cmd, "status") == 0) {
        emit(json_pack("{s:s, s:b, s:i, s:i}", "event", "status", "connected",
                       db_is_connected(p->db), "pending", (int)db_pending(p->db), "connects",
                       p->connects));
    } else if (strcmp(cmd, "conninfo") == 0) {
        db_set_conninfo(p->db, rest != NULL ? rest : "");
        emit(json_pack("{s:s}", "event", "conninfo_set"));
    } else if (strcmp(cmd, "quit") == 0) {
        probe_quit(p);
    } else if (*cmd != '\0') {
        emit(json_pack("{s:s, s:s}", "event", "error", "message", "unknown command"));
    }
}

static void stdin_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct probe *p = w->data;
    ssize_t n = read(STDIN_FILENO, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        probe_quit(p);
        return;
    }
    p->len += (size_t)n;
    char *start = p->buf;
    char *nl;
    while (!p->quitting && (nl = memchr(start, '\n', p->len - (size_t)(start - p->buf))) != NULL) {
        *nl = '\0';
        run_line(p, start);
        start = nl + 1;
    }
    if (p->quitting)
        return;
    p->len -= (size_t)(start - p->buf);
    memmove(p->buf, start, p->len);
    if (p->len == sizeof(p->buf) - 1)
        p->len = 0; /* an absurd line: drop it */
}

int main(int argc, char **argv)
{
    const char *channels[17] = {NULL};
    int nch = 0;
    struct db_options opt = {0};
    int c;
    while ((c = getopt(argc, argv, "l:s:t:m:M:")) != -1) {
        switch (c) {
        case 'l':
            if (nch < 16)
                channels[nch++] = optarg;
            break;
        case 's':
            opt.session_sql = optarg;
            break;
        case 't':
            opt.connect_timeout_s = strtod(optarg, NULL);
            break;
        case 'm':
            opt.retry_min_s = strtod(optarg, NULL);
            break;
        case 'M':
            opt.retry_max_s = strtod(optarg, NULL);
            break;
        default:
            fprintf(stderr, "usage: db_probe [-l CHANNEL]... [-s SQL] [-t S] [-m S] [-M S] "
                            "CONNINFO\n");
            return 64;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "db_probe: CONNINFO required\n");
        return 64;
    }
    opt.conninfo = argv[optind];
    opt.channels = channels;

    static struct probe p;
    p.loop = EV_DEFAULT;
    struct db_callbacks cbs = {connected_cb, disconnected_cb, notify_cb, &p};
    p.db = db_new(p.loop, &opt, &cbs);
    if (p.db == NULL) {
        fprintf(stderr, "db_probe: db_new failed\n");
        return 1;
    }
    ev_io_init(&p.in, stdin_cb, STDIN_FILENO, EV_READ);
    p.in.data = &p;
    ev_io_start(p.loop, &p.in);
    db_start(p.db);
    ev_run(p.loop, 0);
    if (!p.quitting)
        probe_quit(&p);
    ev_loop_destroy(p.loop);
    return 0;
}
