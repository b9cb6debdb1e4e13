/*
 * metrics_server.h — GET /metrics over HTTP on the daemon's own libev loop
 * ([metrics] listen = ADDRESS:PORT). libmicrohttpd runs in external-select
 * mode with its single epoll descriptor watched by one ev_io and its timeout
 * by one ev_timer, so a scrape never blocks refresh work. It also keeps the
 * account counts (due, failing, revoked) fresh with a cheap indexed query
 * while someone is scraping.
 */
#ifndef OAUTH_METRICS_SERVER_H
#define OAUTH_METRICS_SERVER_H

#include <ev.h>

#include "common.h"
#include "db.h"
#include "metrics.h"

/*
 * Fills the live gauges of m (in flight, held, connected, ...) right before a
 * render, and returns the lead time (ms) that defines "due" for the counts.
 */
typedef int64_t (*metrics_collect_fn)(void *ud, struct metrics *m);

struct metrics_server;

/*
 * Binds listen ("host:port", "[v6]:port") and starts serving. m, db and ud
 * must outlive the server; db may be NULL (no account counts). Returns NULL
 * with a message in err (address, reason) when the address does not resolve
 * or cannot be bound: the daemon treats that as a configuration error.
 */
struct metrics_server *metrics_server_new(struct ev_loop *loop, const char *listen,
                                          struct metrics *m, struct db *db,
                                          metrics_collect_fn collect, void *ud, char *err,
                                          size_t errlen) WUR;
/* After a reload: warns when the configured address differs (a restart applies it). */
void metrics_server_check_listen(const struct metrics_server *srv, const char *listen);
/* Stops serving and closes the socket. NULL is fine. Call after db_free (a count
 * query may still be outstanding until then). */
void metrics_server_free(struct metrics_server *srv);

#endif
