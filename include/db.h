/*
 * db.h — one asynchronous PostgreSQL connection on the libev loop. It owns the
 * PGconn and its watchers: a non-blocking connect state machine under its own
 * timeout, pipeline mode so many statements share a round trip, LISTEN on the
 * channels it is given (again after every reconnect), notifications dispatched
 * as they arrive, and reconnection with backoff. It never blocks the loop and
 * never interprets the SQL it carries: callers own their statements and decide
 * what a failed one means.
 */
#ifndef OAUTH_DB_H
#define OAUTH_DB_H

#include <ev.h>
#include <libpq-fe.h>

#include "common.h"

struct db;

/*
 * Result of one statement. res is NULL when the statement could not run
 * (connection lost before its result arrived, or closed); otherwise it is the
 * statement's result (check PQresultStatus), owned by db and valid only during
 * the callback.
 */
typedef void (*db_result_cb)(void *ud, PGresult *res);

struct db_callbacks {
    /* Connected, session set up, every channel LISTENed: run catch-up work. */
    void (*connected)(void *ud);
    /* Connection lost or connect failed; retry_in_s is when the next try is. */
    void (*disconnected)(void *ud, const char *reason, double retry_in_s);
    /* A NOTIFY on one of the channels. */
    void (*notify)(void *ud, const char *channel, const char *payload);
    void *ud;
};

struct db_options {
    const char *conninfo;        /* "" = libpq's environment */
    const char *const *channels; /* NULL-terminated list to LISTEN on */
    const char *session_sql;     /* run once per connection before LISTEN, may be NULL */
    double connect_timeout_s;    /* default 10 */
    double retry_min_s;          /* reconnect backoff, default 0.5 */
    double retry_max_s;          /* default 30 */
};

struct db *db_new(struct ev_loop *loop, const struct db_options *opt,
                  const struct db_callbacks *cb) WUR;
/* Starts connecting (and keeps reconnecting until db_free). */
void db_start(struct db *db);
bool db_is_connected(const struct db *db);
/* Statements sent and not yet answered. */
unsigned db_pending(const struct db *db);

/*
 * Queues one parameterised statement (text parameters, text results). Each
 * statement runs in its own implicit transaction. cb is called exactly once.
 * Returns -1 (and does not call cb) when not connected.
 */
int db_query(struct db *db, const char *sql, int nparams, const char *const *params,
             db_result_cb cb, void *ud) WUR;

/* Replaces the conninfo and reconnects (reload with a changed conninfo). */
void db_set_conninfo(struct db *db, const char *conninfo);
/* Closes the connection; pending callbacks get NULL. */
/*
 * Drops the connection and connects again at once (pending queries fail with
 * NULL, as on a loss); for a connection that works but no longer serves, e.g.
 * a LISTEN that does not hear. Nothing happens while not connected.
 */
void db_reconnect(struct db *db, const char *reason);
void db_free(struct db *db);

/*
 * Copies a libpq message into dst as one printable line with every password
 * removed: anything after "password=" (or "password:") is dropped and the
 * secret of a URI's "user:secret@" becomes "[redacted]"; so does any run of 64
 * or more base64 characters (a token, a ciphertext: longer than any SQL
 * identifier). Control characters become spaces. Returns the length written. Used for every reason
 * db reports and by oauth-refreshctl.
 */
size_t db_redact(char *dst, size_t dstlen, const char *msg);

/*
 * The reason a statement failed, for a log line: the first line of the
 * server's message (severity and primary text) and the SQLSTATE, through
 * db_redact. DETAIL, HINT and CONTEXT are dropped: a DETAIL can carry a row's
 * values, token ciphertexts among them. Returns dst. Use it for every
 * PGresult error that is logged.
 */
const char *db_result_reason(char *dst, size_t dstlen, const PGresult *res);

#endif
