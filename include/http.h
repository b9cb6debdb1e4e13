/*
 * http.h — libcurl's multi socket interface driven by the daemon's libev loop.
 * It owns the curl multi handle, one ev_io per socket curl cares about and one
 * ev_timer for curl's timeouts. It runs HTTPS requests (TLS verified, no
 * redirects, bounded body, connect and total timeouts, HTTP/2 multiplexed when
 * offered) and reports each completion once, from the loop, never from inside
 * a curl callback. It knows nothing about OAuth.
 */
#ifndef OAUTH_HTTP_H
#define OAUTH_HTTP_H

#include "common.h"

/* Only a pointer here: provider.h includes this header and needs no libev. */
struct ev_loop;

/* The response cap when the caller gives none (http_options.max_body = 0). */
#define HTTP_DEFAULT_MAX_BODY (64 * 1024)

struct http;

struct http_options {
    const char *ca_file; /* extra CA bundle or NULL; added to the system CA directory
                            (curl's CAPATH) when curl has one, else the only anchor */
    const char *user_agent;
    bool allow_insecure_http; /* permit http:// (tests only) */
    int http_version;         /* 11: HTTP/1.1 only, a pool of kept-alive connections;
                                 else HTTP/2 when the server offers it (ALPN), multiplexed */
    long max_connections;     /* total (and per-host) connection cap; <= 0: 64 */
    size_t max_body;          /* response cap in bytes; 0: HTTP_DEFAULT_MAX_BODY */
};

struct http_request {
    const char *url;
    const char *body; /* POST body; copied into a buffer the adapter owns and wipes after
                         the transfer, so the caller may wipe its own copy at once */
    size_t body_len;
    const char *const *headers; /* NULL-terminated, may be NULL */
    bool get;                   /* a GET (discovery documents); body is then ignored */
    int64_t timeout_ms;         /* total; <= 0: 30 s */
    int64_t connect_timeout_ms; /* <= 0: curl's default (bounded by timeout_ms) */
};

/*
 * What the transport saw, handed to done(): a complete HTTP answer or the
 * reason there is none. The provider dialects classify it (provider.h).
 */
struct http_answer {
    int transport_error;          /* 0 = a complete HTTP answer; else a CURLcode */
    const char *transport_detail; /* curl's message, may be NULL */
    long status;
    const char *body;
    size_t body_len;
    bool oversized;          /* body exceeded the cap (http_options.max_body) */
    const char *retry_after; /* header value or NULL */
    /* Added by the http adapter; zero when unknown (e.g. hand-built answers): */
    long http_version;   /* 10, 11, 20, 30 (HTTP/1.0 .. HTTP/3) */
    int64_t received_at; /* wall clock (Unix seconds) when the answer arrived:
                            Retry-After dates are relative to it; 0 = read the clock */
    /* 0, or the CURLcode of an HTTP/2 transfer that failed only after a complete
     * answer (RST_STREAM after the answer, RFC 9113 §8.1): transport_error is then 0
     * and the answer is used; see http.c, answer_complete_despite(). */
    int recovered_from;
};

/* The answer handed to done(); valid only during the callback. */
typedef void (*http_done_cb)(void *ud, const struct http_answer *ans, double elapsed_s);

struct http *http_new(struct ev_loop *loop, const struct http_options *opt, char *err,
                      size_t errlen) WUR;
/*
 * Starts a request. On 0, done is called exactly once, later, from the loop
 * (never from inside http_submit or a curl callback); done may submit new
 * requests or call http_abort_all, but must not call http_free. On -1 (out of
 * memory, curl refused the handle) done is never called.
 */
int http_submit(struct http *h, const struct http_request *req, http_done_cb done, void *ud) WUR;
/* Number of requests started and not yet completed. */
unsigned http_in_flight(const struct http *h);
/* TLS contexts (one per new connection) set up with SSL_OP_CLEANSE_PLAINTEXT,
 * so far: for the tests' and the curious operator's eyes. */
unsigned long http_tls_cleansing_contexts(const struct http *h);
/* Applies new options to future requests (reload). */
int http_set_options(struct http *h, const struct http_options *opt, char *err, size_t errlen) WUR;
/* Aborts everything in flight: each done() gets transport_error CURLE_ABORTED_BY_CALLBACK. */
void http_abort_all(struct http *h);
/* Aborts what is still in flight (as http_abort_all) and frees everything. */
void http_free(struct http *h);

#endif
