/*
 * provider.c — what the three token-endpoint dialects share: the table of
 * functions, building a form-encoded refresh request, and reading an answer
 * into one of five outcomes (transport errors, HTTP status, RFC 6749 JSON
 * errors, and the success fields). What an error answer means, and whose
 * failure it is, comes from the table of provider_table.c; the dialect files
 * only name themselves and add notes on top of this.
 *
 * Pure: no I/O, no logging, and no clock unless an answer lacks received_at.
 * It must never copy a token or client secret anywhere but the struct secret
 * fields it returns: human-readable details are built from sanitised error
 * text with anything that looks like a token redacted, and jansson's heap is
 * wiped on free because parsed answers hold tokens.
 */
#include "provider.h"

#include <curl/curl.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "provider_dialect.h"
#include "provider_table.h"

/* expires_in must be a positive number of seconds below one year (SPEC §6). */
#define EXPIRES_IN_MAX_S 31535999
/* A run of this many token-alphabet characters is treated as a possible token. */
#define REDACT_RUN 40

const char *refresh_outcome_name(enum refresh_outcome o)
{
    switch (o) {
    case OUTCOME_SUCCESS:
        return "success";
    case OUTCOME_REVOKED:
        return "revoked";
    case OUTCOME_TRANSIENT:
        return "transient";
    case OUTCOME_CONFIG:
        return "config";
    case OUTCOME_BAD_RESPONSE:
        return "bad_response";
    }
    return "unknown";
}

const struct provider_ops *provider_ops_get(enum provider_id id)
{
    switch (id) {
    case PROVIDER_GOOGLE:
        return &provider_google_ops;
    case PROVIDER_GITHUB:
        return &provider_github_ops;
    case PROVIDER_MICROSOFT:
        return &provider_microsoft_ops;
    case PROVIDER_COUNT:
        break;
    }
    return NULL;
}

void provider_request_clear(struct provider_request *req)
{
    if (!req)
        return;
    free(req->url);
    secret_clear(&req->body);
    memset(req, 0, sizeof(*req));
}

void token_result_clear(struct token_result *res)
{
    if (!res)
        return;
    secret_clear(&res->access_token);
    secret_clear(&res->refresh_token);
    secret_clear(&res->id_token);
    free(res->scope);
    free(res->token_type);
    sodium_memzero(res, sizeof(*res));
    res->retry_after_ms = -1;
}

/* ---- jansson's heap holds tokens while an answer is parsed: wipe it on free ---- */

static void *json_wiping_malloc(size_t n)
{
    return malloc(n);
}

static void json_wiping_free(void *p)
{
    if (!p)
        return;
    sodium_memzero(p, malloc_usable_size(p));
    free(p);
}

static void json_install_allocator(void)
{
    /* Process-wide but harmless to every other jansson user: plain malloc, wiping free. */
    json_set_alloc_funcs(json_wiping_malloc, json_wiping_free);
}

static void json_ensure_wiping(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, json_install_allocator);
}

/* ---- small text helpers ---- */

void provider_sanitize_code(const char *s, char *buf, size_t buflen)
{
    size_t o = 0;
    if (buflen == 0)
        return;
    for (; s && *s && o + 1 < buflen; s++) {
        char c = *s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '.' || c == '-')
            buf[o++] = c;
    }
    buf[o] = '\0';
}

static bool token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

/*
 * Appends human text to buf: printable ASCII only (others become '?'), and any
 * run of REDACT_RUN or more token-alphabet characters replaced by "[redacted]"
 * so that a server echoing a token into error_description cannot leak it.
 */
static void detail_append(char *buf, size_t buflen, const char *text, size_t len)
{
    size_t o = strlen(buf);
    size_t i = 0;
    while (i < len && o + 1 < buflen) {
        unsigned char c = (unsigned char)text[i];
        if (token_char(c)) {
            size_t j = i;
            while (j < len && token_char((unsigned char)text[j]))
                j++;
            if (j - i >= REDACT_RUN) {
                static const char red[] = "[redacted]";
                for (size_t k = 0; red[k] && o + 1 < buflen; k++)
                    buf[o++] = red[k];
            } else {
                for (size_t k = i; k < j && o + 1 < buflen; k++)
                    buf[o++] = text[k];
            }
            i = j;
            continue;
        }
        buf[o++] = (c >= 0x20 && c <= 0x7e) ? (char)c : '?';
        i++;
    }
    buf[o] = '\0';
}

static void detail_add(char *buf, size_t buflen, const char *text)
{
    detail_append(buf, buflen, text, strlen(text));
}

static void set_result(struct token_result *res, enum refresh_outcome outcome, const char *error,
                       const char *detail)
{
    res->outcome = outcome;
    /* Outside the table (transport, shape): the outcome alone says who pays. */
    res->failure_scope = outcome == OUTCOME_CONFIG ? SCOPE_PROVIDER : SCOPE_ACCOUNT;
    res->retry_rule = outcome == OUTCOME_REVOKED  ? RETRY_RECONNECT
                      : outcome == OUTCOME_CONFIG ? RETRY_PROBE
                                                  : RETRY_BACKOFF;
    snprintf(res->error, sizeof(res->error), "%s", error);
    res->detail[0] = '\0';
    if (detail)
        detail_add(res->detail, sizeof(res->detail), detail);
}

static void result_reset(const struct http_answer *ans, struct token_result *res)
{
    memset(res, 0, sizeof(*res));
    res->retry_after_ms = -1;
    if (ans && ans->retry_after) {
        time_t now = ans->received_at > 0 ? (time_t)ans->received_at : time(NULL);
        res->retry_after_ms = retry_after_parse_ms(ans->retry_after, now);
    }
}

/* ---- transport and status: the same for every provider ---- */

static bool curl_is_tls_error(int code)
{
    switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return true;
    default:
        return false;
    }
}

static bool curl_is_network_error(int code)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_PROXY:
    case CURLE_AGAIN:
        return true;
    default:
        return false;
    }
}

static void transport_detail(const struct http_answer *ans, const char *prefix, char *buf,
                             size_t buflen)
{
    snprintf(buf, buflen, "%s (curl %d: ", prefix, ans->transport_error);
    detail_add(buf, buflen,
               ans->transport_detail && *ans->transport_detail
                   ? ans->transport_detail
                   : curl_easy_strerror((CURLcode)ans->transport_error));
    detail_add(buf, buflen, ")");
}

static void apply_rule(const struct provider_rule *rule, struct token_result *res)
{
    res->outcome = rule->outcome;
    res->failure_scope = rule->scope;
    res->retry_rule = rule->retry;
}

/* The table's rows that look at status, headers and body bytes only. */
static bool classify_status(const struct http_answer *ans, int dialect, struct token_result *res)
{
    struct answer_facts f = {.dialect = dialect,
                             .status = ans->status,
                             .retry_after = res->retry_after_ms >= 0,
                             .body = ans->body,
                             .body_len = ans->body ? ans->body_len : 0};
    const struct provider_rule *rule = provider_rule_find(&f);
    if (!rule)
        return false;
    char code[32], detail[128];
    const char *why = rule->retry_after               ? " with Retry-After"
                      : rule->body == BODY_HTML       ? " (an HTML page: rate limited)"
                      : rule->body == BODY_RATE_LIMIT ? " (rate limit exceeded)"
                                                      : "";
    snprintf(code, sizeof(code), "http_%ld", ans->status);
    if (ans->status == 429)
        snprintf(detail, sizeof(detail), "HTTP 429 Too Many Requests%s", why);
    else
        snprintf(detail, sizeof(detail), "HTTP %ld from the token endpoint%s", ans->status, why);
    set_result(res, rule->outcome, code, detail);
    apply_rule(rule, res);
    return true;
}

static bool classify_transport(const struct http_answer *ans, int dialect, struct token_result *res)
{
    result_reset(ans, res);
    char detail[sizeof(res->detail)];

    if (ans->oversized || ans->transport_error == CURLE_FILESIZE_EXCEEDED ||
        (ans->transport_error == 0 && ans->body_len > PROVIDER_MAX_RESPONSE_BYTES)) {
        snprintf(detail, sizeof(detail), "response body larger than the %zu byte cap",
                 (size_t)PROVIDER_MAX_RESPONSE_BYTES);
        set_result(res, OUTCOME_BAD_RESPONSE, "oversized", detail);
        return true;
    }

    int te = ans->transport_error;
    if (te != 0) {
        if (te == CURLE_OPERATION_TIMEDOUT) {
            transport_detail(ans, "request timed out", detail, sizeof(detail));
            set_result(res, OUTCOME_TRANSIENT, "timeout", detail);
        } else if (curl_is_tls_error(te)) {
            transport_detail(ans, "TLS verification failed", detail, sizeof(detail));
            set_result(res, OUTCOME_TRANSIENT, "tls", detail);
        } else if (curl_is_network_error(te)) {
            transport_detail(ans, "network error", detail, sizeof(detail));
            set_result(res, OUTCOME_TRANSIENT, "network", detail);
        } else if (te == CURLE_UNSUPPORTED_PROTOCOL) {
            transport_detail(ans, "token URL scheme refused (https only)", detail, sizeof(detail));
            set_result(res, OUTCOME_CONFIG, "unsupported_protocol", detail);
        } else if (te == CURLE_URL_MALFORMAT) {
            transport_detail(ans, "token URL malformed", detail, sizeof(detail));
            set_result(res, OUTCOME_CONFIG, "bad_url", detail);
        } else if (te == CURLE_ABORTED_BY_CALLBACK) {
            transport_detail(ans, "request aborted", detail, sizeof(detail));
            set_result(res, OUTCOME_TRANSIENT, "aborted", detail);
        } else {
            transport_detail(ans, "transport error", detail, sizeof(detail));
            set_result(res, OUTCOME_TRANSIENT, "transport", detail);
        }
        return true;
    }

    long st = ans->status;
    char code[32];
    if (st >= 300 && st <= 399) {
        snprintf(detail, sizeof(detail), "HTTP %ld redirect not followed", st);
        set_result(res, OUTCOME_BAD_RESPONSE, "redirect", detail);
        return true;
    }
    if (st < 200 || st > 599) {
        snprintf(code, sizeof(code), "http_%ld", st < 0 ? 0 : st);
        snprintf(detail, sizeof(detail), "unexpected HTTP status %ld", st);
        set_result(res, OUTCOME_BAD_RESPONSE, code, detail);
        return true;
    }
    return classify_status(ans, dialect, res);
}

bool provider_classify_transport(const struct http_answer *ans, struct token_result *res)
{
    return classify_transport(ans, RULE_ANY_DIALECT, res);
}

/* ---- JSON ---- */

/* The table's JSON error rows; the last of them matches any code. */
static void map_error_code(const struct provider_dialect *d, const json_t *root, const char *code,
                           struct token_result *res)
{
    struct answer_facts f = {.dialect = d ? d->id : RULE_ANY_DIALECT, .root = root, .error = code};
    const struct provider_rule *rule = provider_rule_find(&f);
    if (rule)
        apply_rule(rule, res);
    else
        set_result(res, OUTCOME_BAD_RESPONSE, "", NULL);
}

static void classify_error_field(const json_t *root, const json_t *err,
                                 const struct provider_dialect *d, struct token_result *res)
{
    if (!json_is_string(err) || json_string_length(err) == 0) {
        set_result(res, OUTCOME_BAD_RESPONSE, "bad_error_field",
                   "answer has an \"error\" member that is not a non-empty string");
        return;
    }
    const char *raw = json_string_value(err);
    char code[sizeof(res->error)];
    provider_sanitize_code(raw, code, sizeof(code));
    if (!code[0])
        snprintf(code, sizeof(code), "unknown_error");
    map_error_code(d, root, raw, res);
    memcpy(res->error, code, sizeof(res->error));

    char *det = res->detail;
    size_t dl = sizeof(res->detail);
    det[0] = '\0';
    detail_add(det, dl, code);
    if (d && d->error_note) {
        char note[128] = "";
        d->error_note(root, note, sizeof(note));
        if (note[0]) {
            detail_add(det, dl, " (");
            detail_add(det, dl, note);
            detail_add(det, dl, ")");
        }
    }
    const json_t *desc = json_object_get(root, "error_description");
    if (json_is_string(desc) && json_string_length(desc) > 0) {
        detail_add(det, dl, ": ");
        detail_append(det, dl, json_string_value(desc), json_string_length(desc));
    }
}

/* expires_in: an integer (or integral-valued number, or string of digits) in 1..1 year. */
static bool read_expires_in(const json_t *v, int64_t *out, const char **why)
{
    if (!v || json_is_null(v)) {
        *why = "expires_in missing";
        return false;
    }
    int64_t n;
    if (json_is_integer(v)) {
        n = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double x = json_real_value(v);
        if (!isfinite(x) || x < 1.0 || x > (double)EXPIRES_IN_MAX_S) {
            *why = "expires_in out of range";
            return false;
        }
        n = (int64_t)x;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (len == 0 || len > 9) {
            *why = "expires_in is not a number";
            return false;
        }
        n = 0;
        for (size_t i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') {
                *why = "expires_in is not a number";
                return false;
            }
            n = n * 10 + (s[i] - '0');
        }
    } else {
        *why = "expires_in has the wrong type";
        return false;
    }
    if (n < 1 || n > EXPIRES_IN_MAX_S) {
        *why = "expires_in out of range";
        return false;
    }
    *out = n;
    return true;
}

static void oom(struct token_result *res)
{
    set_result(res, OUTCOME_TRANSIENT, "out_of_memory", "out of memory reading the answer");
}

static void read_success(const json_t *root, int64_t default_lifetime_s, struct token_result *res)
{
    const json_t *rt = json_object_get(root, "refresh_token");
    if (rt && !json_is_null(rt)) {
        if (!json_is_string(rt)) {
            set_result(res, OUTCOME_BAD_RESPONSE, "bad_shape", "refresh_token is not a string");
            return;
        }
        if (json_string_length(rt) > 0 &&
            secret_set(&res->refresh_token, json_string_value(rt), json_string_length(rt)) < 0) {
            oom(res);
            return;
        }
    }
    bool rotated = res->refresh_token.len > 0;

    const json_t *at = json_object_get(root, "access_token");
    if (!json_is_string(at) || json_string_length(at) == 0) {
        set_result(res, OUTCOME_BAD_RESPONSE, "missing_access_token",
                   rotated ? "answer has no usable access_token (it did carry a refresh_token)"
                           : "answer has no usable access_token");
        return;
    }

    const char *why = NULL;
    int64_t expires_in = 0;
    bool defaulted = false;
    if (!read_expires_in(json_object_get(root, "expires_in"), &expires_in, &why)) {
        if (!rotated) {
            set_result(res, OUTCOME_BAD_RESPONSE, "bad_expires_in", why);
            return;
        }
        /* SPEC §6: never throw away a rotated refresh token. */
        expires_in = default_lifetime_s;
        defaulted = true;
    }

    if (secret_set(&res->access_token, json_string_value(at), json_string_length(at)) < 0) {
        oom(res);
        return;
    }
    const json_t *idt = json_object_get(root, "id_token");
    if (json_is_string(idt) && json_string_length(idt) > 0 &&
        secret_set(&res->id_token, json_string_value(idt), json_string_length(idt)) < 0) {
        oom(res);
        return;
    }
    const json_t *scope = json_object_get(root, "scope");
    if (json_is_string(scope) && !(res->scope = strdup(json_string_value(scope)))) {
        oom(res);
        return;
    }
    const json_t *tt = json_object_get(root, "token_type");
    if (json_is_string(tt) && !(res->token_type = strdup(json_string_value(tt)))) {
        oom(res);
        return;
    }

    res->expires_in_s = expires_in;
    res->expires_in_defaulted = defaulted;
    res->outcome = OUTCOME_SUCCESS;
    snprintf(res->error, sizeof(res->error), "%s", "");
    if (defaulted)
        snprintf(res->detail, sizeof(res->detail), "%s; used the default lifetime of %llds", why,
                 (long long)default_lifetime_s);
    else
        res->detail[0] = '\0';
}

static void http_status_error(long status, const char *what, struct token_result *res)
{
    char code[32], detail[96];
    snprintf(code, sizeof(code), "http_%ld", status);
    snprintf(detail, sizeof(detail), "HTTP %ld %s", status, what);
    set_result(res, OUTCOME_BAD_RESPONSE, code, detail);
}

/* Reads the body of a complete, non-redirect answer (res already reset). */
static void read_json_body(const struct http_answer *ans, const struct provider_dialect *d,
                           struct token_result *res)
{
    bool http_error = ans->status >= 400;
    if (ans->body_len > PROVIDER_MAX_RESPONSE_BYTES) {
        set_result(res, OUTCOME_BAD_RESPONSE, "oversized", "response body larger than the cap");
        return;
    }
    json_ensure_wiping();
    json_error_t jerr;
    json_t *root = NULL;
    if (ans->body && ans->body_len > 0)
        root = json_loadb(ans->body, ans->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (http_error) {
            http_status_error(ans->status, "without a JSON error", res);
        } else {
            /* jerr.text may quote the input: report the position only. */
            char detail[96];
            if (ans->body_len == 0)
                snprintf(detail, sizeof(detail), "empty response body");
            else
                snprintf(detail, sizeof(detail), "response is not valid JSON (near byte %d)",
                         jerr.position);
            set_result(res, OUTCOME_BAD_RESPONSE, "bad_json", detail);
        }
        return;
    }
    if (!json_is_object(root)) {
        if (http_error)
            http_status_error(ans->status, "without a JSON error", res);
        else
            set_result(res, OUTCOME_BAD_RESPONSE, "bad_shape", "response JSON is not an object");
    } else {
        const json_t *err = json_object_get(root, "error");
        if (err && !json_is_null(err))
            classify_error_field(root, err, d, res); /* whatever the status (GitHub: 200) */
        else if (http_error)
            http_status_error(ans->status, "without a JSON error", res);
        else
            read_success(root, d ? d->default_lifetime_s : 3600, res);
    }
    json_decref(root);
}

void provider_read_standard_json(const struct http_answer *ans, int64_t default_lifetime_s,
                                 struct token_result *res)
{
    result_reset(ans, res);
    struct provider_dialect std = {.id = RULE_ANY_DIALECT,
                                   .default_lifetime_s = default_lifetime_s};
    read_json_body(ans, &std, res);
}

void provider_read_answer_dialect(const struct http_answer *ans, const struct provider_dialect *d,
                                  struct token_result *res)
{
    if (classify_transport(ans, d ? d->id : RULE_ANY_DIALECT, res))
        return;
    read_json_body(ans, d, res);
}

/* ---- requests ---- */

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static size_t encoded_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += unreserved((unsigned char)*s) ? 1 : 3;
    return n;
}

static char *encode_into(char *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (unreserved(c)) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    return o;
}

int provider_build_form(const struct provider_config *pc, const struct provider_form_field *fields,
                        size_t nfields, struct provider_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!pc || !pc->token_url || !*pc->token_url) {
        snprintf(err, errlen, "provider has no token_url");
        return -1;
    }

    size_t len = 0;
    bool first = true;
    for (size_t i = 0; i < nfields; i++) {
        if (!fields[i].value)
            continue;
        len += (first ? 0 : 1) + encoded_len(fields[i].name) + 1 + encoded_len(fields[i].value);
        first = false;
    }
    char *buf = malloc(len + 1);
    out->url = strdup(pc->token_url);
    if (!buf || !out->url) {
        free(buf);
        provider_request_clear(out);
        snprintf(err, errlen, "out of memory building the request");
        return -1;
    }
    char *o = buf;
    first = true;
    for (size_t i = 0; i < nfields; i++) {
        if (!fields[i].value)
            continue;
        if (!first)
            *o++ = '&';
        o = encode_into(o, fields[i].name);
        *o++ = '=';
        o = encode_into(o, fields[i].value);
        first = false;
    }
    *o = '\0';
    secret_adopt(&out->body, buf, len);

    /* Accept: GitHub answers form-encoded without it; the others accept it. */
    out->headers[0] = "Accept: application/json";
    out->headers[1] = "Content-Type: application/x-www-form-urlencoded";
    out->headers[2] = NULL;
    out->headers[3] = NULL;
    return 0;
}

int provider_build_refresh_form(const char *dialect, const struct provider_config *pc,
                                const char *refresh_token, struct provider_request *out, char *err,
                                size_t errlen)
{
    if (!pc || !pc->client_id || !refresh_token) {
        memset(out, 0, sizeof(*out));
        snprintf(err, errlen, "%s: client_id and refresh token are required", dialect);
        return -1;
    }
    const struct provider_form_field fields[] = {
        {"grant_type", "refresh_token"},
        {"refresh_token", refresh_token},
        {"client_id", pc->client_id},
        {"client_secret", pc->client_secret && *pc->client_secret ? pc->client_secret : NULL},
    };
    return provider_build_form(pc, fields, ARRAY_LEN(fields), out, err, errlen);
}
