/*
 * http.c — libcurl's multi socket interface on the daemon's libev loop.
 *
 * It owns the curl multi handle, one ev_io per socket curl asks about (state
 * attached with curl_multi_assign and freed on CURL_POLL_REMOVE), one ev_timer
 * for curl's timeouts, the easy handles (recycled through a small free list so
 * the hot path allocates nothing) and the request and response buffers (wiped
 * after every transfer: they carry tokens and client secrets). Transfers are
 * finished only after curl_multi_socket_action returns, by draining
 * curl_multi_info_read, so every done() runs from the loop and never inside a
 * curl callback, exactly once per accepted request.
 *
 * Policy on every transfer: only https (http too when allow_insecure_http),
 * TLS peer and host always verified, no redirects followed, HTTP/2 over TLS
 * multiplexed when offered (PIPEWAIT), TLS record buffers wiped after use
 * (SSL_OP_CLEANSE_PLAINTEXT), a connect and a total timeout, the
 * response body capped (the transfer is aborted and flagged oversized), no
 * signals. ca_file: curl's CAINFO replaces the default bundle, so the system's
 * CA directory is kept as CAPATH where curl knows one (OpenSSL consults both);
 * where it does not, ca_file alone is trusted.
 *
 * It knows nothing about OAuth and must never log or keep request or response
 * bytes beyond the done() callback.
 */
#include "http.h"

#include <curl/curl.h>
#include <ev.h>
#include <openssl/ssl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "secret.h"
#include "timeutil.h"

#define HTTP_DEFAULT_MAX_CONNECTIONS 64
#define HTTP_DEFAULT_TIMEOUT_MS      30000
#define HTTP_FREE_LIST_MAX           1024
/*
 * Memory per transfer matters: with 1,000 in flight every kilobyte here is a
 * megabyte of the daemon's peak. Answers are 0.3-4 kB (Microsoft's, with its
 * JWTs, the largest) and request bodies a few hundred bytes, so buffers start
 * small and grow; a recycled transfer keeps at most one typical answer's room.
 */
#define HTTP_RESP_INITIAL    1024
#define HTTP_BODY_INITIAL    512
#define HTTP_RESP_KEEP_MAX   4096 /* larger buffers are freed on recycle */
#define HTTP_RETRY_AFTER_MAX 128
#define HTTP_UPLOAD_BUFFER   16384L /* curl's minimum */
/* curl's per-transfer receive buffer (default 16 kB). Over HTTP/2 the socket is
 * read into the connection's own buffer, so this only bounds how much of one
 * stream's data is handed over at a time; over HTTP/1.1 a 4 kB answer still
 * takes one or two reads. heaptrack (bench/run heap): 16 MB at 1,000 in flight
 * with the default. */
#define HTTP_RECV_BUFFER 4096L

struct http_sock {
    ev_io io;
    struct http *h;
    struct http_sock *prev, *next;
};

struct http_xfer {
    struct http *h;
    CURL *easy;
    unsigned gen; /* options generation the easy handle was set up with */
    struct http_xfer *prev, *next;

    http_done_cb done;
    void *ud;
    ev_tstamp started;

    char *body; /* request body: our own copy, wiped after the transfer */
    size_t body_len, body_cap;

    char *resp; /* response body (NUL-terminated), wiped after the transfer */
    size_t resp_len, resp_cap;
    size_t max_body;
    bool oversized;

    char retry_after[HTTP_RETRY_AFTER_MAX];

    struct curl_slist *headers; /* built from hdr_src; reused while it matches */
    char **hdr_src;
    size_t hdr_count;

    char errbuf[CURL_ERROR_SIZE];
};

struct http {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;

    /* current options (owned copies) */
    char *ca_file;
    const char *capath; /* curl's compiled-in CA directory, or NULL */
    char *user_agent;
    bool allow_insecure_http;
    int http_version; /* 11 or 20, see http_options */
    long max_connections;
    size_t max_body;
    unsigned gen;

    unsigned in_flight;
    unsigned long tls_cleansing_contexts; /* http_ssl_ctx_cb calls */
    struct http_xfer *active;             /* in flight, doubly linked */
    struct http_xfer *idle;               /* free list (singly linked through next) */
    unsigned idle_count;
    struct http_sock *socks;
};

/* ---- buffers ---- */

static void wipe_free(void *p, size_t len)
{
    if (!p)
        return;
    sodium_memzero(p, len);
    free(p);
}

/* Grows *buf to at least need bytes; the old buffer is wiped, never left behind by realloc. */
static int buf_reserve(char **buf, size_t *cap, size_t used, size_t need, size_t initial)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : initial;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    char *n = malloc(ncap);
    if (!n)
        return -1;
    if (*buf) {
        memcpy(n, *buf, used);
        wipe_free(*buf, used);
    }
    *buf = n;
    *cap = ncap;
    return 0;
}

/* ---- curl callbacks (they only record; completion happens in http_drain) ---- */

static size_t http_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_xfer *x = ud;
    size_t n = size * nmemb;
    if (n > x->max_body - x->resp_len) {
        x->oversized = true;
        return 0; /* != n: curl aborts with CURLE_WRITE_ERROR */
    }
    if (buf_reserve(&x->resp, &x->resp_cap, x->resp_len, x->resp_len + n + 1, HTTP_RESP_INITIAL) <
        0)
        return 0;
    memcpy(x->resp + x->resp_len, ptr, n);
    x->resp_len += n;
    x->resp[x->resp_len] = '\0';
    return n;
}

static size_t http_header_cb(char *line, size_t size, size_t nitems, void *ud)
{
    struct http_xfer *x = ud;
    size_t n = size * nitems;
    static const char name[] = "Retry-After:";
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        x->retry_after[0] = '\0'; /* a new response (after 1xx): forget the last one */
    } else if (n >= sizeof(name) - 1 && strncasecmp(line, name, sizeof(name) - 1) == 0) {
        size_t i = sizeof(name) - 1, o = 0;
        while (i < n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        size_t end = n;
        while (end > i && (line[end - 1] == '\r' || line[end - 1] == '\n' || line[end - 1] == ' ' ||
                           line[end - 1] == '\t'))
            end--;
        for (; i < end && o + 1 < sizeof(x->retry_after); i++) {
            unsigned char c = (unsigned char)line[i];
            x->retry_after[o++] = (c >= 0x20 && c <= 0x7e) ? (char)c : '?';
        }
        x->retry_after[o] = '\0';
    }
    return n;
}

static void http_sock_unlink(struct http *h, struct http_sock *hs)
{
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        h->socks = hs->next;
    if (hs->next)
        hs->next->prev = hs->prev;
}

static void http_drain(struct http *h);

static void http_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct http_sock *hs = w->data;
    struct http *h = hs->h; /* hs may be freed inside socket_action */
    int action =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running = 0;
    (void)curl_multi_socket_action(h->multi, w->fd, action, &running);
    http_drain(h);
}

static void http_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct http *h = w->data;
    int running = 0;
    (void)curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_drain(h);
}

static int http_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct http *h = userp;
    struct http_sock *hs = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (hs) {
            ev_io_stop(h->loop, &hs->io);
            http_sock_unlink(h, hs);
            free(hs);
            (void)curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (!hs) {
        hs = calloc(1, sizeof(*hs));
        if (!hs)
            return -1;
        hs->h = h;
        ev_init(&hs->io, http_io_cb);
        hs->io.data = hs;
        hs->next = h->socks;
        if (h->socks)
            h->socks->prev = hs;
        h->socks = hs;
        if (curl_multi_assign(h->multi, s, hs) != CURLM_OK) {
            http_sock_unlink(h, hs);
            free(hs);
            return -1;
        }
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    /* Never ev_io_set an active watcher: stop, set, start. */
    ev_io_stop(h->loop, &hs->io);
    ev_io_set(&hs->io, s, events);
    if (events)
        ev_io_start(h->loop, &hs->io);
    return 0;
}

static int http_timer_fn_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct http *h = userp;
    ev_timer_stop(h->loop, &h->timer);
    if (timeout_ms >= 0) {
        /* 0 means "soon": run from the loop, not from inside this callback. */
        timer_set(&h->timer, (double)timeout_ms / 1000.0, 0.0);
        ev_timer_start(h->loop, &h->timer);
    }
    return 0;
}

/* ---- transfers ---- */

/*
 * Frees the header list and its source strings, wiped: a header may carry
 * the client's credentials (client_secret_basic's Authorization).
 */
static void headers_free(struct http_xfer *x)
{
    for (struct curl_slist *l = x->headers; l; l = l->next)
        sodium_memzero(l->data, strlen(l->data));
    curl_slist_free_all(x->headers);
    x->headers = NULL;
    for (size_t i = 0; i < x->hdr_count; i++)
        secure_free_str(x->hdr_src[i]);
    free(x->hdr_src);
    x->hdr_src = NULL;
    x->hdr_count = 0;
}

static void xfer_destroy(struct http_xfer *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    headers_free(x);
    wipe_free(x->body, x->body_cap);
    wipe_free(x->resp, x->resp_cap);
    free(x);
}

static void xfer_link(struct http *h, struct http_xfer *x)
{
    x->prev = NULL;
    x->next = h->active;
    if (h->active)
        h->active->prev = x;
    h->active = x;
}

static void xfer_unlink(struct http *h, struct http_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else if (h->active == x)
        h->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

/* Wipes what the transfer carried and keeps the handle for the next one. */
static void xfer_recycle(struct http *h, struct http_xfer *x)
{
    sodium_memzero(x->body, x->body_len);
    x->body_len = 0;
    sodium_memzero(x->resp, x->resp_len);
    x->resp_len = 0;
    if (x->resp_cap > HTTP_RESP_KEEP_MAX) {
        free(x->resp);
        x->resp = NULL;
        x->resp_cap = 0;
    }
    x->done = NULL;
    x->ud = NULL;
    if (h->idle_count >= HTTP_FREE_LIST_MAX || x->gen != h->gen) {
        xfer_destroy(x);
        return;
    }
    x->next = h->idle;
    x->prev = NULL;
    h->idle = x;
    h->idle_count++;
}

static long map_http_version(long v)
{
    switch (v) {
    case CURL_HTTP_VERSION_1_0:
        return 10;
    case CURL_HTTP_VERSION_1_1:
        return 11;
    case CURL_HTTP_VERSION_2_0:
        return 20;
    case CURL_HTTP_VERSION_3:
        return 30;
    default:
        return 0;
    }
}

/*
 * Is the body one complete JSON object: '{', balanced to its closing '}' (strings
 * and escapes respected), then only whitespace? A body cut anywhere before its
 * last '}' is unbalanced, and one cut after it has lost only whitespace, so this
 * tells a whole JSON answer from a truncated one without knowing its length.
 * Bounded by len; no allocation, no recursion.
 */
static bool json_object_whole(const char *s, size_t len)
{
    size_t i = 0, depth = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (i >= len || s[i] != '{')
        return false;
    for (; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            if (i >= len)
                return false;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0 || --depth == 0)
                break;
        }
    }
    if (i >= len || s[i] != '}' || depth != 0)
        return false;
    for (i++; i < len; i++)
        if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
            return false;
    return true;
}

/*
 * RFC 9113 §8.1: a server may send a complete response before it has read the
 * whole request, then end the stream with RST_STREAM(NO_ERROR), and clients
 * MUST NOT discard that response. nginx does exactly this; curl 7.88 still
 * fails such a transfer from its send side: CURLE_HTTP2_STREAM (92, "stream
 * closed" in the send path, with no error text), CURLE_HTTP2 or a send/receive
 * error, or, when the answer carried a Content-Length and the server never
 * lets the rest of the request body in, a timeout after the whole answer
 * (curl stops reading once Content-Length is reached). For a rotating
 * provider that answer holds the only copy of the new refresh token.
 *
 * So over HTTP/2, with a final status received and nothing oversized, the
 * answer is taken as complete:
 *  1. when it announced a Content-Length and exactly that many bytes arrived
 *     (curl and nghttp2 never deliver more than announced): then the reset or
 *     the stall came after the whole answer;
 *  2. a separate, weaker rule, only for the stream errors (not the timeout,
 *     where the stream has not ended): without a Content-Length, when the body
 *     is one complete JSON object (json_object_whole). Token endpoints answer
 *     JSON; a cut one is unbalanced, so a truncated body stays a network error.
 * Returns the CURLcode that is overridden (recorded in the answer), or 0.
 */
static int answer_complete_despite(struct http_xfer *x, int result, long status, long version)
{
    switch (result) {
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP2:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
        break;
    default:
        return 0;
    }
    if (version != CURL_HTTP_VERSION_2_0 || status < 200 || status > 599 || x->oversized)
        return 0;
    curl_off_t announced = -1;
    if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced) != CURLE_OK)
        announced = -1;
    if (announced >= 0)
        return (curl_off_t)x->resp_len == announced ? result : 0;
    if (result == CURLE_OPERATION_TIMEDOUT)
        return 0;
    return x->resp && json_object_whole(x->resp, x->resp_len) ? result : 0;
}

static void xfer_finish(struct http *h, struct http_xfer *x, int result)
{
    long status = 0, version = 0;
    int recovered_from = 0;
    if (result != CURLE_ABORTED_BY_CALLBACK) {
        (void)curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        (void)curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &version);
        recovered_from = answer_complete_despite(x, result, status, version);
        if (recovered_from)
            result = 0;
    }
    bool oversized = x->oversized || result == CURLE_FILESIZE_EXCEEDED;
    struct http_answer ans = {
        .transport_error = result,
        .recovered_from = recovered_from,
        .transport_detail = result == 0    ? NULL
                            : x->errbuf[0] ? x->errbuf
                                           : curl_easy_strerror((CURLcode)result),
        .status = status,
        .body = x->resp ? x->resp : "",
        .body_len = x->resp_len,
        .oversized = oversized,
        .retry_after = x->retry_after[0] ? x->retry_after : NULL,
        .http_version = map_http_version(version),
        .received_at = (int64_t)time(NULL),
    };
    double elapsed = ev_time() - x->started;
    if (elapsed < 0)
        elapsed = 0;

    xfer_unlink(h, x);
    h->in_flight--;
    http_done_cb done = x->done;
    void *ud = x->ud;
    done(ud, &ans, elapsed);
    xfer_recycle(h, x);
}

static void http_drain(struct http *h)
{
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        int result = (int)m->data.result; /* m is invalid after remove_handle */
        char *priv = NULL;
        (void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        struct http_xfer *x = (struct http_xfer *)(void *)priv;
        (void)curl_multi_remove_handle(h->multi, easy);
        if (x)
            xfer_finish(h, x, result);
    }
}

/*
 * Called by curl with the SSL_CTX of each new TLS connection (curl's OpenSSL
 * backend; the package depends on it). OpenSSL keeps the plaintext of the
 * records it reads and writes in its record buffers, reused and freed without
 * wiping: our request (client secret, refresh token) and the answer (new
 * tokens) would stay in the heap. SSL_OP_CLEANSE_PLAINTEXT (OpenSSL >= 3.0)
 * wipes them once consumed. Read back so a library that ignores it is seen.
 *
 * curl sets SSL_MODE_RELEASE_BUFFERS: a record buffer is freed whenever it is
 * empty and allocated again for the next record, and with the cleansing
 * option each free first wipes the whole 16.7 kB buffer, several times per
 * request (callgrind, 5,000 refreshes over HTTP/2: 51,000 instructions per
 * refresh, 7 % of the daemon's). Over HTTP/2 the few multiplexed connections
 * (at most 64) keep their two buffers instead: consumed plaintext is still
 * wiped as it is read, and the buffers when the connection is freed. HTTP/1.1
 * keeps curl's mode, since it may hold a connection per request in flight.
 */
static CURLcode http_ssl_ctx_cb(CURL *easy, void *ssl_ctx, void *ud)
{
    (void)easy;
    struct http *h = ud;
    SSL_CTX_set_options(ssl_ctx, SSL_OP_CLEANSE_PLAINTEXT);
    if (h->http_version == 20)
        SSL_CTX_clear_mode(ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    if ((SSL_CTX_get_options(ssl_ctx) & SSL_OP_CLEANSE_PLAINTEXT) == 0)
        return CURLE_SSL_CONNECT_ERROR;
    h->tls_cleansing_contexts++;
    return CURLE_OK;
}

/* Options that stay the same for every transfer of one options generation. */
static int xfer_setup_easy(struct http *h, struct http_xfer *x)
{
    CURL *e = x->easy;
    const char *protos = h->allow_insecure_http ? "http,https" : "https";
    CURLcode rc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SETOPT(CURLOPT_PRIVATE, (void *)x);
    SETOPT(CURLOPT_PROTOCOLS_STR, protos);
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, protos);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    /* HTTP/2: wait for the one connection to an endpoint and multiplex on it;
     * HTTP/1.1: one request per kept-alive connection of the pool. */
    SETOPT(CURLOPT_PIPEWAIT, h->http_version == 11 ? 0L : 1L);
    SETOPT(CURLOPT_HTTP_VERSION,
           h->http_version == 11 ? (long)CURL_HTTP_VERSION_1_1 : (long)CURL_HTTP_VERSION_2TLS);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(CURLOPT_SSL_CTX_FUNCTION, http_ssl_ctx_cb);
    SETOPT(CURLOPT_SSL_CTX_DATA, (void *)h);
    if (h->ca_file) {
        SETOPT(CURLOPT_CAINFO, h->ca_file);
        if (h->capath)
            SETOPT(CURLOPT_CAPATH, h->capath);
    }
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->max_body);
    /* Request bodies are a few hundred bytes: curl's default 64 kB upload
     * buffer per transfer was a fifth of the daemon's peak memory with a
     * thousand requests in flight (benchmark: 54 -> 44 MB). The receive buffer:
     * see HTTP_RECV_BUFFER (1 kB cost a read(2) per kB over HTTP/1.1). */
    SETOPT(CURLOPT_UPLOAD_BUFFERSIZE, HTTP_UPLOAD_BUFFER);
    SETOPT(CURLOPT_BUFFERSIZE, HTTP_RECV_BUFFER);
    SETOPT(CURLOPT_WRITEFUNCTION, http_write_cb);
    SETOPT(CURLOPT_WRITEDATA, (void *)x);
    SETOPT(CURLOPT_HEADERFUNCTION, http_header_cb);
    SETOPT(CURLOPT_HEADERDATA, (void *)x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    if (h->user_agent)
        SETOPT(CURLOPT_USERAGENT, h->user_agent);
#undef SETOPT
    if (rc != CURLE_OK)
        return -1;
    x->max_body = h->max_body;
    x->gen = h->gen;
    return 0;
}

static struct http_xfer *xfer_get(struct http *h)
{
    struct http_xfer *x = h->idle;
    if (x) {
        h->idle = x->next;
        h->idle_count--;
        x->next = NULL;
        if (x->gen == h->gen)
            return x;
        curl_easy_reset(x->easy);
    } else {
        x = calloc(1, sizeof(*x));
        if (!x)
            return NULL;
        x->h = h;
        x->easy = curl_easy_init();
        if (!x->easy) {
            free(x);
            return NULL;
        }
    }
    if (xfer_setup_easy(h, x) < 0) {
        xfer_destroy(x);
        return NULL;
    }
    return x;
}

/* Builds the header list, or keeps the previous one when the strings are the same. */
static int xfer_set_headers(struct http_xfer *x, const char *const *headers)
{
    size_t n = 0;
    while (headers && headers[n])
        n++;
    bool same = n == x->hdr_count && x->headers;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(headers[i], x->hdr_src[i]) == 0;
    if (same)
        return 0;

    headers_free(x);

    char **src = calloc(n ? n : 1, sizeof(*src));
    if (!src)
        return -1;
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < n; i++) {
        struct curl_slist *nl = NULL;
        src[i] = strdup(headers[i]);
        if (src[i])
            nl = curl_slist_append(list, headers[i]);
        if (!nl) {
            for (struct curl_slist *l = list; l; l = l->next)
                sodium_memzero(l->data, strlen(l->data));
            curl_slist_free_all(list);
            for (size_t k = 0; k <= i; k++)
                secure_free_str(src[k]);
            free(src);
            return -1;
        }
        list = nl;
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    struct curl_slist *nl = curl_slist_append(list, "Expect:");
    if (!nl) {
        for (struct curl_slist *l = list; l; l = l->next)
            sodium_memzero(l->data, strlen(l->data));
        curl_slist_free_all(list);
        for (size_t k = 0; k < n; k++)
            secure_free_str(src[k]);
        free(src);
        return -1;
    }
    x->headers = nl;
    x->hdr_src = src;
    x->hdr_count = n;
    return 0;
}

int http_submit(struct http *h, const struct http_request *req, http_done_cb done, void *ud)
{
    if (!h || !req || !req->url || !done)
        return -1;
    struct http_xfer *x = xfer_get(h);
    if (!x)
        return -1;

    size_t blen = req->body ? req->body_len : 0;
    if (buf_reserve(&x->body, &x->body_cap, 0, blen + 1, HTTP_BODY_INITIAL) < 0)
        goto fail;
    if (blen)
        memcpy(x->body, req->body, blen);
    x->body[blen] = '\0';
    x->body_len = blen;

    if (xfer_set_headers(x, req->headers) < 0)
        goto fail;

    long timeout = req->timeout_ms > 0 ? (long)req->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
    long ctimeout = req->connect_timeout_ms > 0 ? (long)req->connect_timeout_ms : 0L;
    CURL *e = x->easy;
    if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
        (req->get
             ? curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK
             : (curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen) != CURLE_OK ||
                curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body) != CURLE_OK)) ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ctimeout) != CURLE_OK)
        goto fail;

    x->errbuf[0] = '\0';
    x->retry_after[0] = '\0';
    x->oversized = false;
    x->resp_len = 0;
    x->done = done;
    x->ud = ud;
    x->started = ev_time();

    xfer_link(h, x);
    h->in_flight++;
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        xfer_unlink(h, x);
        h->in_flight--;
        goto fail;
    }
    return 0;

fail:
    x->done = NULL;
    xfer_recycle(h, x);
    return -1;
}

unsigned http_in_flight(const struct http *h)
{
    return h ? h->in_flight : 0;
}

unsigned long http_tls_cleansing_contexts(const struct http *h)
{
    return h ? h->tls_cleansing_contexts : 0;
}

void http_abort_all(struct http *h)
{
    if (!h)
        return;
    /* Detach the list first: a done() that submits again starts a new list. */
    struct http_xfer *list = h->active;
    h->active = NULL;
    while (list) {
        struct http_xfer *x = list;
        list = x->next;
        if (list)
            list->prev = NULL;
        x->prev = x->next = NULL;
        (void)curl_multi_remove_handle(h->multi, x->easy);
        struct http_answer ans = {
            .transport_error = CURLE_ABORTED_BY_CALLBACK,
            .transport_detail = "aborted at shutdown",
            .body = "",
            .received_at = (int64_t)time(NULL),
        };
        double elapsed = ev_time() - x->started;
        h->in_flight--;
        http_done_cb done = x->done;
        done(x->ud, &ans, elapsed < 0 ? 0 : elapsed);
        xfer_recycle(h, x);
    }
}

/* ---- options ---- */

/* Used by http_new and by a reload (http.h). */
int http_set_options(struct http *h, const struct http_options *opt, char *err, size_t errlen)
{
    if (!opt) {
        snprintf(err, errlen, "http: no options");
        return -1;
    }
    if (opt->ca_file && *opt->ca_file && access(opt->ca_file, R_OK) != 0) {
        snprintf(err, errlen, "http: ca_file %s is not readable", opt->ca_file);
        return -1;
    }
    char *ca = opt->ca_file && *opt->ca_file ? strdup(opt->ca_file) : NULL;
    char *ua = opt->user_agent && *opt->user_agent ? strdup(opt->user_agent) : NULL;
    if ((opt->ca_file && *opt->ca_file && !ca) || (opt->user_agent && *opt->user_agent && !ua)) {
        free(ca);
        free(ua);
        snprintf(err, errlen, "http: out of memory");
        return -1;
    }
    long maxc = opt->max_connections > 0 ? opt->max_connections : HTTP_DEFAULT_MAX_CONNECTIONS;
    if (curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxc) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxc) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, maxc) != CURLM_OK) {
        free(ca);
        free(ua);
        snprintf(err, errlen, "http: curl refused the connection limits");
        return -1;
    }
    free(h->ca_file);
    free(h->user_agent);
    h->ca_file = ca;
    h->user_agent = ua;
    h->allow_insecure_http = opt->allow_insecure_http;
    h->http_version = opt->http_version == 11 ? 11 : 20;
    h->max_connections = maxc;
    h->max_body = opt->max_body > 0 ? opt->max_body : HTTP_DEFAULT_MAX_BODY;
    h->gen++; /* idle easy handles are set up again before their next use */
    return 0;
}

struct http *http_new(struct ev_loop *loop, const struct http_options *opt, char *err,
                      size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "http: curl_global_init failed");
        return NULL;
    }
    struct http *h = calloc(1, sizeof(*h));
    if (!h) {
        curl_global_cleanup();
        snprintf(err, errlen, "http: out of memory");
        return NULL;
    }
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        curl_global_cleanup();
        snprintf(err, errlen, "http: curl_multi_init failed");
        return NULL;
    }
    const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    h->capath = vi && vi->capath && *vi->capath ? vi->capath : NULL;
    ev_init(&h->timer, http_timer_cb);
    h->timer.data = h;

    if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, (void *)h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_timer_fn_cb) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, (void *)h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) != CURLM_OK ||
        http_set_options(h, opt, err, errlen) < 0) {
        if (err && errlen && !err[0])
            snprintf(err, errlen, "http: curl refused the multi options");
        curl_multi_cleanup(h->multi);
        free(h->ca_file);
        free(h->user_agent);
        free(h);
        curl_global_cleanup();
        return NULL;
    }
    return h;
}

void http_free(struct http *h)
{
    if (!h)
        return;
    http_abort_all(h);
    while (h->idle) {
        struct http_xfer *x = h->idle;
        h->idle = x->next;
        xfer_destroy(x);
    }
    h->idle_count = 0;
    (void)curl_multi_cleanup(h->multi); /* may still report CURL_POLL_REMOVE */
    while (h->socks) {
        struct http_sock *hs = h->socks;
        ev_io_stop(h->loop, &hs->io);
        http_sock_unlink(h, hs);
        free(hs);
    }
    ev_timer_stop(h->loop, &h->timer);
    free(h->ca_file);
    free(h->user_agent);
    free(h);
    curl_global_cleanup();
}
