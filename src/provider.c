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
#include "provider_scan.h"
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
    case PROVIDER_NAMED_COUNT:
    default:
        break;
    }
    /* Every other provider speaks the generic dialect (dialect = oauth2). */
    if (id >= PROVIDER_NAMED_COUNT && id < PROVIDER_MAX)
        return &provider_oauth2_ops;
    return NULL;
}

void provider_request_clear(struct provider_request *req)
{
    if (!req)
        return;
    free(req->url);
    secret_clear(&req->body);
    secret_clear(&req->auth_header);
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

/*
 * jansson ignores some allocation failures: its lexer drops the byte it could
 * not append (strbuffer_append_byte's result is unused) and hands back a
 * string one character short, e.g. a corrupted rotated refresh token, as if
 * nothing had happened (seen in tests/unit/test_provider_oom.c). So every
 * failed allocation is noted here, and a parse during which one failed is
 * treated as out of memory whatever jansson returned.
 */
static _Thread_local bool json_alloc_failed;

static void *json_wiping_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        json_alloc_failed = true;
    return p;
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

/* ---- reading the members of an answer ---- */

/*
 * How a body was read. Strict first (jansson, duplicates refused); when that
 * refuses the body, jansson again with duplicates (the last wins, see
 * provider_scan.c) and \u0000 allowed; when jansson cannot parse it at all (a
 * number beyond double or int64 range, a lone surrogate anywhere), the
 * tolerant scanner of provider_scan.c; for a dialect that may answer
 * form-encoded (GitHub), the form reader. SPEC §6: a strict parser refusing
 * the whole body must not cost a rotated refresh token.
 */
enum body_kind { BODY_READ, BODY_EMPTY, BODY_NOT_JSON, BODY_NOT_OBJECT, BODY_OOM };

struct answer_body {
    json_t *root; /* jansson's object when jansson could parse the body, else NULL */
    struct provider_members pm;
    bool lenient;    /* the strict parse refused the body */
    int strict_pos;  /* where it did (jansson's byte position) */
    const char *how; /* short wording of the lenient reading, for the detail */
};

static void answer_body_clear(struct answer_body *ab)
{
    json_decref(ab->root);
    provider_members_clear(&ab->pm);
    memset(ab, 0, sizeof(*ab));
}

static bool json_oom(const json_error_t *jerr)
{
    return json_error_code(jerr) == json_error_out_of_memory;
}

/* Copies our members out of jansson's object; -1 out of memory. */
static int members_from_json(const json_t *root, struct provider_members *pm)
{
    for (int i = 0; i < PM_COUNT; i++) {
        enum provider_member_id id = (enum provider_member_id)i;
        const json_t *v = json_object_get(root, provider_member_name(id));
        if (!v)
            continue;
        if (json_is_string(v)) {
            const char *s = json_string_value(v);
            size_t n = json_string_length(v);
            if (memchr(s, '\0', n)) /* \u0000, accepted by the lenient pass */
                provider_members_set_other(pm, id, PMK_UNUSABLE, 0.0);
            else if (provider_members_set_string(pm, id, s, n) < 0)
                return -1;
        } else if (json_is_integer(v)) {
            provider_members_set_other(pm, id, PMK_NUMBER, (double)json_integer_value(v));
        } else if (json_is_real(v)) {
            provider_members_set_other(pm, id, PMK_NUMBER, json_real_value(v));
        } else {
            provider_members_set_other(pm, id, json_is_null(v) ? PMK_NULL : PMK_OTHER, 0.0);
        }
    }
    return 0;
}

static enum body_kind answer_body_read(const struct http_answer *ans,
                                       const struct provider_dialect *d, struct answer_body *ab)
{
    memset(ab, 0, sizeof(*ab));
    ab->strict_pos = -1;
    if (!ans->body || ans->body_len == 0)
        return BODY_EMPTY;
    json_error_t jerr;
    json_alloc_failed = false;
    ab->root = json_loadb(ans->body, ans->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!ab->root) {
        if (json_oom(&jerr) || json_alloc_failed)
            return BODY_OOM;
        ab->lenient = true;
        ab->strict_pos = jerr.position;
        ab->how = "duplicate members or \\u0000";
        ab->root = json_loadb(ans->body, ans->body_len, JSON_ALLOW_NUL, &jerr);
        if (!ab->root && json_oom(&jerr))
            return BODY_OOM;
    }
    if (json_alloc_failed)
        return BODY_OOM; /* what jansson returned may be silently cut: see json_wiping_malloc */
    if (ab->root) {
        if (!json_is_object(ab->root))
            return BODY_NOT_OBJECT;
        return members_from_json(ab->root, &ab->pm) < 0 ? BODY_OOM : BODY_READ;
    }
    int rc = provider_scan_json(ans->body, ans->body_len, &ab->pm);
    ab->how = "top-level members only";
    if (rc == 1 && d && d->form_answers) {
        rc = provider_scan_form(ans->body, ans->body_len, &ab->pm);
        ab->how = "form-encoded";
    }
    return rc < 0 ? BODY_OOM : rc > 0 ? BODY_NOT_JSON : BODY_READ;
}

/* ---- JSON error answers ---- */

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

/* An answer with a non-empty string "error": never a token, whatever else it carries. */
static void classify_error(const struct answer_body *ab, const struct provider_dialect *d,
                           struct token_result *res)
{
    const char *raw = ab->pm.m[PM_ERROR].text;
    char code[sizeof(res->error)];
    provider_sanitize_code(raw, code, sizeof(code));
    if (!code[0])
        snprintf(code, sizeof(code), "unknown_error");
    /* The table reads JSON; an answer only the tolerant scanner could read
     * gets an object of the members it found (no error_codes then). */
    json_t *scanned = NULL;
    const json_t *root = ab->root;
    if (!root) {
        const struct provider_member *dm = &ab->pm.m[PM_ERROR_DESCRIPTION];
        scanned = json_object();
        if (scanned) {
            json_object_set_new(scanned, "error", json_string(raw));
            if (dm->kind == PMK_STRING)
                json_object_set_new(scanned, "error_description", json_stringn(dm->text, dm->len));
        }
        root = scanned;
    }
    map_error_code(d, root, raw, res);
    json_decref(scanned);
    memcpy(res->error, code, sizeof(res->error));

    char *det = res->detail;
    size_t dl = sizeof(res->detail);
    det[0] = '\0';
    detail_add(det, dl, code);
    if (d && d->error_note && ab->root) {
        char note[128] = "";
        d->error_note(ab->root, note, sizeof(note));
        if (note[0]) {
            detail_add(det, dl, " (");
            detail_add(det, dl, note);
            detail_add(det, dl, ")");
        }
    }
    const struct provider_member *desc = &ab->pm.m[PM_ERROR_DESCRIPTION];
    if (desc->kind == PMK_STRING && desc->len > 0) {
        detail_add(det, dl, ": ");
        detail_append(det, dl, desc->text, desc->len);
    }
}

/* ---- success answers ---- */

/* expires_in: a number (integral or not) or a string of digits, in 1 s .. 1 year. */
static bool read_expires_in(const struct provider_member *m, int64_t *out, const char **why)
{
    int64_t n = 0;
    switch (m->kind) {
    case PMK_ABSENT:
    case PMK_NULL:
        *why = "expires_in missing";
        return false;
    case PMK_NUMBER:
        if (!isfinite(m->num) || m->num < 1.0 || m->num > (double)EXPIRES_IN_MAX_S) {
            *why = "expires_in out of range";
            return false;
        }
        n = (int64_t)m->num;
        break;
    case PMK_STRING:
        if (m->len == 0 || m->len > 9) {
            *why = "expires_in is not a number";
            return false;
        }
        for (size_t i = 0; i < m->len; i++) {
            if (m->text[i] < '0' || m->text[i] > '9') {
                *why = "expires_in is not a number";
                return false;
            }
            n = n * 10 + (m->text[i] - '0');
        }
        break;
    case PMK_UNUSABLE:
        *why = "expires_in is not a number";
        return false;
    case PMK_OTHER:
    default:
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

/*
 * The answer could not be read as a whole (or said nothing usable) for a
 * reason that is not an error answer, or memory ran out: the token_result
 * contract (provider.h) is that res->error says so and nothing more than the
 * tokens already copied is kept.
 */
static void oom(struct token_result *res)
{
    set_result(res, OUTCOME_TRANSIENT, "out_of_memory", "out of memory reading the answer");
}

static bool member_usable(const struct provider_member *m)
{
    return m->kind == PMK_STRING && m->len > 0;
}

/*
 * Copies a rotated refresh token, and the id token that came with it, into
 * res: whatever else is wrong with a 2xx answer, these are kept (SPEC §6).
 * Returns -1 out of memory (what was copied stays).
 */
static int keep_rotated(const struct provider_members *pm, struct token_result *res)
{
    const struct provider_member *rt = &pm->m[PM_REFRESH_TOKEN];
    if (!member_usable(rt))
        return 0;
    if (secret_set(&res->refresh_token, rt->text, rt->len) < 0)
        return -1;
    const struct provider_member *idt = &pm->m[PM_ID_TOKEN];
    if (member_usable(idt) && secret_set(&res->id_token, idt->text, idt->len) < 0)
        return -1;
    return 0;
}

static int copy_text(const struct provider_member *m, char **out)
{
    if (m->kind != PMK_STRING)
        return 0;
    *out = strdup(m->text); /* no NUL inside: provider_members guarantees it */
    return *out ? 0 : -1;
}

static void success_detail(const struct answer_body *ab, const char *why, int64_t lifetime,
                           struct token_result *res)
{
    res->detail[0] = '\0';
    if (why)
        snprintf(res->detail, sizeof(res->detail), "%s; used the default lifetime of %llds", why,
                 (long long)lifetime);
    if (ab->lenient) {
        size_t o = strlen(res->detail);
        snprintf(res->detail + o, sizeof(res->detail) - o,
                 "%sread leniently (%s; strict parse failed near byte %d)", o ? "; " : "", ab->how,
                 ab->strict_pos);
    }
}

static void read_success(const struct answer_body *ab, int64_t default_lifetime_s,
                         struct token_result *res)
{
    const struct provider_members *pm = &ab->pm;
    enum provider_member_kind rk = pm->m[PM_REFRESH_TOKEN].kind;
    if (rk == PMK_NUMBER || rk == PMK_OTHER || rk == PMK_UNUSABLE) {
        set_result(res, OUTCOME_BAD_RESPONSE, "bad_shape",
                   rk == PMK_UNUSABLE ? "refresh_token is not usable text"
                                      : "refresh_token is not a string");
        return;
    }
    if (keep_rotated(pm, res) < 0) {
        oom(res);
        return;
    }
    bool rotated = res->refresh_token.len > 0;

    /*
     * A body that is not even one whole object (cut short, or broken between
     * members) is never a success: what follows the break is unknown. A rotated
     * refresh token read before the break is whole (it is taken only once the
     * ',' or '}' after it is seen) and is still handed back.
     */
    const struct provider_member *at = &pm->m[PM_ACCESS_TOKEN];
    bool whole = ab->root || pm->complete;
    if (!whole || !member_usable(at)) {
        set_result(res, OUTCOME_BAD_RESPONSE, whole ? "missing_access_token" : "bad_json",
                   whole ? "answer has no usable access_token"
                         : "answer is not one complete JSON object");
        if (rotated)
            detail_add(res->detail, sizeof(res->detail), " (it did carry a refresh_token)");
        return;
    }

    /* SPEC §6: a missing or absurd expires_in is the documented default plus a warning. */
    const char *why = NULL;
    int64_t expires_in = 0;
    bool defaulted = !read_expires_in(&pm->m[PM_EXPIRES_IN], &expires_in, &why);
    if (defaulted)
        expires_in = default_lifetime_s;

    const struct provider_member *idt = &pm->m[PM_ID_TOKEN];
    if (secret_set(&res->access_token, at->text, at->len) < 0 ||
        (!rotated && member_usable(idt) && secret_set(&res->id_token, idt->text, idt->len) < 0) ||
        copy_text(&pm->m[PM_SCOPE], &res->scope) < 0 ||
        copy_text(&pm->m[PM_TOKEN_TYPE], &res->token_type) < 0) {
        oom(res);
        return;
    }

    res->expires_in_s = expires_in;
    res->expires_in_defaulted = defaulted;
    res->outcome = OUTCOME_SUCCESS;
    res->error[0] = '\0';
    success_detail(ab, defaulted ? why : NULL, default_lifetime_s, res);
}

static void http_status_error(long status, const char *what, struct token_result *res)
{
    char code[32], detail[96];
    snprintf(code, sizeof(code), "http_%ld", status);
    snprintf(detail, sizeof(detail), "HTTP %ld %s", status, what);
    set_result(res, OUTCOME_BAD_RESPONSE, code, detail);
}

/* The members of a body that was read: an error answer, a 4xx/5xx without one, or success. */
static void read_members(const struct answer_body *ab, const struct provider_dialect *d,
                         long status, struct token_result *res)
{
    bool http_error = status >= 400;
    const struct provider_member *err = &ab->pm.m[PM_ERROR];
    if (member_usable(err)) {
        classify_error(ab, d, res); /* whatever the status (GitHub: 200) */
        return;
    }
    if (err->kind != PMK_ABSENT && err->kind != PMK_NULL) {
        set_result(res, OUTCOME_BAD_RESPONSE, "bad_error_field",
                   "answer has an \"error\" member that is not a non-empty string");
        /* Not an error answer we understand: a 2xx that rotated still hands the token back. */
        if (!http_error && keep_rotated(&ab->pm, res) < 0)
            oom(res);
        return;
    }
    if (http_error)
        http_status_error(status, "without a JSON error", res);
    else
        read_success(ab, d ? d->default_lifetime_s : 3600, res);
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
    struct answer_body ab;
    enum body_kind kind = answer_body_read(ans, d, &ab);
    char detail[96];
    switch (kind) {
    case BODY_READ:
        read_members(&ab, d, ans->status, res);
        break;
    case BODY_OOM:
        oom(res);
        break;
    case BODY_NOT_OBJECT:
        if (http_error)
            http_status_error(ans->status, "without a JSON error", res);
        else
            set_result(res, OUTCOME_BAD_RESPONSE, "bad_shape", "response JSON is not an object");
        break;
    case BODY_EMPTY:
    case BODY_NOT_JSON:
        if (http_error) {
            http_status_error(ans->status, "without a JSON error", res);
            break;
        }
        /* jansson's text may quote the input: report the position only. */
        if (kind == BODY_EMPTY)
            snprintf(detail, sizeof(detail), "empty response body");
        else
            snprintf(detail, sizeof(detail), "response is not valid JSON (near byte %d)",
                     ab.strict_pos);
        set_result(res, OUTCOME_BAD_RESPONSE, "bad_json", detail);
        break;
    }
    answer_body_clear(&ab);
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

char *provider_form_encode(const char *s)
{
    char *buf = malloc(encoded_len(s) + 1);
    if (buf)
        *encode_into(buf, s) = '\0';
    return buf;
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
