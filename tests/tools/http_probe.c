/*
 * http_probe.c — a test tool that drives the http adapter (src/http.c) on a
 * libev loop exactly as the daemon does: it fires N POSTs at one URL with at
 * most C in flight and prints one JSON line per completion and a summary, so
 * integration tests can check TLS policy, redirects, size caps, timeouts,
 * Retry-After and that every request completes exactly once.
 *
 * usage: http_probe [options] URL
 *   -n, --requests N          requests to send (1)
 *   -c, --concurrency C       most requests in flight at once (16)
 *   --timeout-ms MS           total timeout per request (10000)
 *   --connect-timeout-ms MS   connect timeout (0: curl's default)
 *   --max-body BYTES          response cap (the daemon's 64 KiB by default)
 *   --max-connections N       connection cap (64)
 *   --ca-file FILE            extra trust anchor
 *   --insecure                permit http:// URLs (allow_insecure_http)
 *   --body TEXT               appended to "i=<index>" in each request body
 *   --abort-after-ms MS       call http_abort_all after MS milliseconds
 *   --quiet                   summary only
 * Exit status: 0 when every request completed exactly once, 1 otherwise,
 * 64 on a bad command line.
 */
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "provider.h" /* PROVIDER_MAX_RESPONSE_BYTES: the daemon's cap */

struct probe;

struct probe_req {
    struct probe *p;
    unsigned idx;
    char body[512];
};

struct probe {
    struct ev_loop *loop;
    struct http *http;
    const char *url;
    const char *extra_body;
    unsigned requests, concurrency, next, completed, duplicates, ok, transport_errors;
    unsigned *done_count;
    struct probe_req *reqs;
    int64_t timeout_ms, connect_timeout_ms;
    bool quiet;
    double started;
    ev_timer abort_timer;
};

static const char *const probe_headers[] = {
    "Accept: application/json",
    "Content-Type: application/x-www-form-urlencoded",
    NULL,
};

static void probe_submit_next(struct probe *p);

static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static void probe_done_cb(void *ud, const struct http_answer *ans, double elapsed_s)
{
    struct probe_req *r = ud;
    struct probe *p = r->p;
    p->done_count[r->idx]++;
    if (p->done_count[r->idx] > 1)
        p->duplicates++;
    p->completed++;
    if (ans->transport_error)
        p->transport_errors++;
    else if (ans->status >= 200 && ans->status <= 299)
        p->ok++;

    if (!p->quiet) {
        json_t *o = json_object();
        json_object_set_new(o, "i", json_integer(r->idx));
        json_object_set_new(o, "status", json_integer(ans->status));
        json_object_set_new(o, "transport_error", json_integer(ans->transport_error));
        json_object_set_new(
            o, "detail", ans->transport_detail ? json_string(ans->transport_detail) : json_null());
        json_object_set_new(o, "body_len", json_integer((json_int_t)ans->body_len));
        if (ans->body && ans->body_len <= 1024 && printable(ans->body, ans->body_len))
            json_object_set_new(o, "body", json_stringn(ans->body, ans->body_len));
        json_object_set_new(o, "oversized", json_boolean(ans->oversized));
        json_object_set_new(o, "retry_after",
                            ans->retry_after ? json_string(ans->retry_after) : json_null());
        json_object_set_new(o, "http_version", json_integer(ans->http_version));
        json_object_set_new(o, "recovered_from", json_integer(ans->recovered_from));
        json_object_set_new(o, "elapsed_ms", json_real(elapsed_s * 1000.0));
        json_object_set_new(o, "in_flight", json_integer(http_in_flight(p->http)));
        char *line = json_dumps(o, JSON_COMPACT);
        if (line)
            printf("%s\n", line);
        free(line);
        json_decref(o);
    }
    probe_submit_next(p);
    if (p->completed >= p->requests)
        ev_break(p->loop, EVBREAK_ALL);
}

static void probe_submit_next(struct probe *p)
{
    while (p->next < p->requests && p->next - p->completed < p->concurrency) {
        struct probe_req *r = &p->reqs[p->next];
        r->p = p;
        r->idx = p->next++;
        snprintf(r->body, sizeof(r->body), "i=%u%s%s", r->idx, p->extra_body ? "&" : "",
                 p->extra_body ? p->extra_body : "");
        struct http_request req = {
            .url = p->url,
            .body = r->body,
            .body_len = strlen(r->body),
            .headers = probe_headers,
            .timeout_ms = p->timeout_ms,
            .connect_timeout_ms = p->connect_timeout_ms,
        };
        if (http_submit(p->http, &req, probe_done_cb, r) < 0) {
            fprintf(stderr, "http_probe: http_submit failed for request %u\n", r->idx);
            p->completed++;
            p->transport_errors++;
        }
    }
    if (p->completed >= p->requests)
        ev_break(p->loop, EVBREAK_ALL);
}

static void probe_abort_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct probe *p = w->data;
    p->requests = p->next; /* submit nothing more */
    http_abort_all(p->http);
}

static void usage(void)
{
    fprintf(stderr, "usage: http_probe [-n N] [-c C] [--timeout-ms MS] [--connect-timeout-ms MS]"
                    " [--max-body B] [--max-connections N] [--ca-file F] [--insecure]"
                    " [--body TEXT] [--abort-after-ms MS] [--quiet] URL\n");
}

int main(int argc, char **argv)
{
    struct probe p = {
        .requests = 1,
        .concurrency = 16,
        .timeout_ms = 10000,
    };
    struct http_options opt = {
        .user_agent = "oauth-refreshd-http-probe",
        .max_connections = 64,
        .max_body = PROVIDER_MAX_RESPONSE_BYTES,
    };
    double abort_after_ms = -1;
    enum {
        O_TIMEOUT = 256,
        O_CTIMEOUT,
        O_MAXBODY,
        O_MAXCONN,
        O_CA,
        O_INSECURE,
        O_BODY,
        O_ABORT,
        O_QUIET
    };
    static const struct option longopts[] = {
        {"requests", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"connect-timeout-ms", required_argument, NULL, O_CTIMEOUT},
        {"max-body", required_argument, NULL, O_MAXBODY},
        {"max-connections", required_argument, NULL, O_MAXCONN},
        {"ca-file", required_argument, NULL, O_CA},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"body", required_argument, NULL, O_BODY},
        {"abort-after-ms", required_argument, NULL, O_ABORT},
        {"quiet", no_argument, NULL, O_QUIET},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "n:c:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n':
            p.requests = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            p.concurrency = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_TIMEOUT:
            p.timeout_ms = strtoll(optarg, NULL, 10);
            break;
        case O_CTIMEOUT:
            p.connect_timeout_ms = strtoll(optarg, NULL, 10);
            break;
        case O_MAXBODY:
            opt.max_body = (size_t)strtoull(optarg, NULL, 10);
            break;
        case O_MAXCONN:
            opt.max_connections = strtol(optarg, NULL, 10);
            break;
        case O_CA:
            opt.ca_file = optarg;
            break;
        case O_INSECURE:
            opt.allow_insecure_http = true;
            break;
        case O_BODY:
            p.extra_body = optarg;
            break;
        case O_ABORT:
            abort_after_ms = strtod(optarg, NULL);
            break;
        case O_QUIET:
            p.quiet = true;
            break;
        default:
            usage();
            return 64;
        }
    }
    if (optind != argc - 1 || p.requests == 0 || p.concurrency == 0) {
        usage();
        return 64;
    }
    p.url = argv[optind];
    p.loop = ev_default_loop(0);
    p.done_count = calloc(p.requests, sizeof(*p.done_count));
    p.reqs = calloc(p.requests, sizeof(*p.reqs));
    if (!p.done_count || !p.reqs) {
        fprintf(stderr, "http_probe: out of memory\n");
        return 1;
    }
    char err[ERRBUF_LEN];
    p.http = http_new(p.loop, &opt, err, sizeof(err));
    if (!p.http) {
        fprintf(stderr, "http_probe: %s\n", err);
        return 1;
    }
    unsigned total = p.requests;
    if (abort_after_ms >= 0) {
        ev_timer_init(&p.abort_timer, probe_abort_cb, abort_after_ms / 1000.0, 0.0);
        p.abort_timer.data = &p;
        ev_timer_start(p.loop, &p.abort_timer);
    }
    p.started = ev_time();
    probe_submit_next(&p);
    if (p.completed < p.requests)
        ev_run(p.loop, 0);
    double elapsed = ev_time() - p.started;
    if (abort_after_ms >= 0)
        ev_timer_stop(p.loop, &p.abort_timer);

    unsigned never = 0;
    for (unsigned i = 0; i < p.next; i++)
        if (p.done_count[i] == 0)
            never++;
    unsigned in_flight = http_in_flight(p.http);
    printf("{\"summary\":true,\"requests\":%u,\"submitted\":%u,\"completed\":%u,"
           "\"never_completed\":%u,\"duplicates\":%u,\"ok\":%u,\"transport_errors\":%u,"
           "\"in_flight_at_end\":%u,\"elapsed_s\":%.6f,\"rate\":%.1f,"
           "\"tls_cleansing_contexts\":%lu}\n",
           total, p.next, p.completed, never, p.duplicates, p.ok, p.transport_errors, in_flight,
           elapsed, elapsed > 0 ? p.completed / elapsed : 0.0, http_tls_cleansing_contexts(p.http));
    fflush(stdout);
    http_free(p.http);
    free(p.done_count);
    free(p.reqs);
    return (never == 0 && p.duplicates == 0 && in_flight == 0) ? 0 : 1;
}
