/*
 * fuzz_provider.c — libFuzzer target for the three provider dialects
 * (provider.h): each one's read_answer, i.e. transport/status classification
 * and the reading of the JSON body, and each one's build_request.
 *
 * Input layout (all derived from the fuzz bytes; tests/fuzz/make_seeds.py
 * writes seeds in it):
 *   byte 0: bits 0-1 provider (google, github, microsoft, google again);
 *           bit 2 a Retry-After header follows; bit 3 the adapter flagged the
 *           body oversized; bit 4 received_at follows; bit 5 also build a
 *           request from the body; bit 6 a transport error is set;
 *           bit 7 the answer came over HTTP/2.
 *   byte 1: the CURLcode when bit 6 is set
 *   bytes 2-3: the HTTP status, big-endian, signed
 *   [4 bytes]: received_at (Unix seconds, unsigned) when bit 4 is set
 *   [text up to '\n']: the Retry-After value when bit 2 is set
 *   the rest: the response body
 *
 * Properties: the result is always fully classified (an outcome, a machine
 * code made of [A-Za-z0-9_.-], a printable detail); success only from a 2xx
 * answer without an "error" member, with an access token and an expires_in in
 * 1 s .. 1 year (the dialect's default when flagged defaulted); no token of
 * the answer appears in the detail; a built request carries the refresh token
 * and scope exactly, percent-encoded. Issue 10: a refresh token handed back
 * is a member of the body, i.e. some quoted string of the body decodes (by
 * jansson, independently of the tolerant scanner) to exactly it, or for a
 * form-encoded GitHub answer some refresh_token= value percent-decodes to it;
 * a failure carries a refresh token only as a bad response or out_of_memory,
 * and an id token only next to it; when jansson's strict parse finds a usable
 * refresh_token in a 2xx answer without "error", it is handed back.
 */
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "provider.h"
#include "secret.h"

#define EXPIRES_IN_MAX_S 31535999

static bool code_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Member names the fixed wording of a detail may name, e.g. " (it did carry a
 * refresh_token)": a token whose value is one of them is found there without
 * having leaked (a fuzzer's find: {"refresh_token":"refresh_token", ...}). */
static bool names_a_member(const struct secret *s)
{
    static const char *const names[] = {"access_token", "refresh_token", "id_token",
                                        "expires_in",   "token_type",    "error_description"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (s->len == strlen(names[i]) && memcmp(s->data, names[i], s->len) == 0)
            return true;
    return false;
}

static void check_no_leak(const struct token_result *res, const struct secret *s, const char *what)
{
    if (s->len < 12 || names_a_member(s))
        return; /* short strings and member names occur in the fixed wording */
    FUZZ_CHECK(memmem(res->detail, strlen(res->detail), s->data, s->len) == NULL,
               "the %s of the answer appears in the detail", what);
}

static bool has_error_member(const char *body, size_t len)
{
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    bool has = false;
    if (root != NULL && json_is_object(root)) {
        json_t *e = json_object_get(root, "error");
        has = e != NULL && !json_is_null(e);
    }
    json_decref(root);
    return has;
}

/* Does the quoted string at body[p] (a '"') decode, by jansson, to exactly want? */
static bool quoted_string_is(const char *body, size_t len, size_t p, const struct secret *want)
{
    size_t e = p + 1;
    while (e < len && body[e] != '"')
        e += body[e] == '\\' ? 2 : 1;
    if (e >= len)
        return false;
    json_t *v = json_loadb(body + p, e - p + 1, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    bool same = json_is_string(v) && json_string_length(v) == want->len &&
                memcmp(json_string_value(v), want->data, want->len) == 0;
    json_decref(v);
    return same;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Does a "refresh_token=" pair of the form body decode to exactly want? */
static bool form_value_is(const char *body, size_t len, const struct secret *want)
{
    static const char key[] = "refresh_token=";
    for (size_t p = 0; p + sizeof(key) - 1 <= len; p++) {
        if ((p > 0 && body[p - 1] != '&') || memcmp(body + p, key, sizeof(key) - 1) != 0)
            continue;
        size_t i = p + sizeof(key) - 1, o = 0;
        bool same = true;
        while (i < len && body[i] != '&' && same) {
            int c = (unsigned char)body[i];
            if (c == '+') {
                c = ' ';
                i++;
            } else if (c == '%' && len - i >= 3 && hexval(body[i + 1]) >= 0 &&
                       hexval(body[i + 2]) >= 0) {
                c = hexval(body[i + 1]) * 16 + hexval(body[i + 2]);
                i += 3;
            } else {
                i++;
            }
            same = o < want->len && (unsigned char)want->data[o] == c;
            o++;
        }
        if (same && o == want->len)
            return true;
    }
    return false;
}

static bool is_member_of_body(const struct http_answer *ans, const struct secret *tok)
{
    for (size_t p = 0; p < ans->body_len; p++)
        if (ans->body[p] == '"' && quoted_string_is(ans->body, ans->body_len, p, tok))
            return true;
    return form_value_is(ans->body, ans->body_len, tok);
}

/* The refresh_token jansson's strict parse sees in a 2xx answer without "error", or NULL. */
static json_t *strict_rotated(const struct http_answer *ans, const char **rt, size_t *rtlen)
{
    json_t *root = json_loadb(ans->body, ans->body_len, JSON_REJECT_DUPLICATES, NULL);
    *rt = NULL;
    if (!json_is_object(root))
        return root;
    json_t *e = json_object_get(root, "error");
    json_t *r = json_object_get(root, "refresh_token");
    if ((e == NULL || json_is_null(e)) && json_is_string(r) && json_string_length(r) > 0 &&
        strlen(json_string_value(r)) == json_string_length(r)) {
        *rt = json_string_value(r);
        *rtlen = json_string_length(r);
    }
    return root;
}

static void check_rotation_kept(const struct http_answer *ans, const struct token_result *res)
{
    if (ans->transport_error != 0 || ans->oversized || ans->status < 200 || ans->status > 299 ||
        ans->body_len > PROVIDER_MAX_RESPONSE_BYTES || strcmp(res->error, "out_of_memory") == 0)
        return;
    const char *rt;
    size_t rtlen = 0;
    json_t *root = strict_rotated(ans, &rt, &rtlen);
    if (rt)
        FUZZ_CHECK(res->refresh_token.len == rtlen &&
                       memcmp(res->refresh_token.data, rt, rtlen) == 0,
                   "a rotated refresh token of a well-formed 2xx answer was not handed back "
                   "(outcome %d, error \"%s\")",
                   (int)res->outcome, res->error);
    json_decref(root);
}

static void check_result(const struct provider_ops *ops, const struct http_answer *ans,
                         const struct token_result *res)
{
    FUZZ_CHECK(res->outcome >= OUTCOME_SUCCESS && res->outcome <= OUTCOME_BAD_RESPONSE,
               "outcome %d", (int)res->outcome);
    FUZZ_CHECK(memchr(res->error, '\0', sizeof(res->error)) != NULL, "error not terminated");
    FUZZ_CHECK(memchr(res->detail, '\0', sizeof(res->detail)) != NULL, "detail not terminated");
    for (const char *p = res->error; *p; p++)
        FUZZ_CHECK(code_char(*p), "error code \"%s\" has a character outside [A-Za-z0-9_.-]",
                   res->error);
    for (const char *p = res->detail; *p; p++)
        FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e, "detail has a non-printable byte 0x%02x",
                   (unsigned)(unsigned char)*p);
    FUZZ_CHECK(res->retry_after_ms >= -1, "retry_after_ms %lld", (long long)res->retry_after_ms);
    check_no_leak(res, &res->access_token, "access token");
    check_no_leak(res, &res->refresh_token, "refresh token");
    check_no_leak(res, &res->id_token, "id token");

    if (res->outcome == OUTCOME_SUCCESS) {
        FUZZ_CHECK(res->error[0] == '\0', "success with error code \"%s\"", res->error);
        FUZZ_CHECK(ans->transport_error == 0 && !ans->oversized, "success from a failed transfer");
        FUZZ_CHECK(ans->status >= 200 && ans->status <= 299, "success from HTTP %ld", ans->status);
        FUZZ_CHECK(res->access_token.len > 0 && res->access_token.data != NULL &&
                       res->access_token.data[res->access_token.len] == '\0',
                   "success without a usable access token");
        FUZZ_CHECK(res->expires_in_s >= 1 && res->expires_in_s <= EXPIRES_IN_MAX_S,
                   "success with expires_in %lld", (long long)res->expires_in_s);
        if (res->expires_in_defaulted)
            FUZZ_CHECK(res->expires_in_s == ops->default_lifetime_s,
                       "defaulted expires_in %lld is not the dialect's default",
                       (long long)res->expires_in_s);
        FUZZ_CHECK(!has_error_member(ans->body, ans->body_len),
                   "an answer with an \"error\" member was taken for success");
    } else {
        FUZZ_CHECK(res->error[0] != '\0', "failure (%d) without an error code", (int)res->outcome);
        FUZZ_CHECK(res->access_token.len == 0, "a failed answer kept an access token");
        FUZZ_CHECK(res->id_token.len == 0 || res->refresh_token.len > 0,
                   "a failed answer kept an id token without a rotated refresh token");
        if (res->outcome != OUTCOME_BAD_RESPONSE && strcmp(res->error, "out_of_memory") != 0)
            FUZZ_CHECK(res->refresh_token.len == 0,
                       "only a bad response may carry a rotated refresh token");
        if (res->refresh_token.len > 0)
            FUZZ_CHECK(ans->transport_error == 0 && ans->status >= 200 && ans->status <= 299,
                       "a refresh token handed back from a failed transfer or HTTP %ld",
                       ans->status);
    }
    if (res->refresh_token.len > 0) {
        FUZZ_CHECK(memchr(res->refresh_token.data, '\0', res->refresh_token.len) == NULL,
                   "a refresh token with a NUL inside");
        FUZZ_CHECK(is_member_of_body(ans, &res->refresh_token),
                   "the refresh token handed back is not a member of the body");
    }
    check_rotation_kept(ans, res);
    if (ans->oversized)
        FUZZ_CHECK(strcmp(res->error, "oversized") == 0, "oversized answer classified \"%s\"",
                   res->error);
}

/* Decodes %XX in place; returns false on a malformed escape. */
static bool pct_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%') {
            int v = 0;
            for (int i = 1; i <= 2; i++) {
                char c = p[i];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0)
                    return false;
                v = v * 16 + d;
            }
            *o++ = (char)v;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return true;
}

static void check_request(const struct provider_ops *ops, const uint8_t *data, size_t size)
{
    /* refresh token = up to the first '\n', scope = the rest (NUL cuts both, as in C). */
    const uint8_t *nl = memchr(data, '\n', size);
    size_t rlen = nl ? (size_t)(nl - data) : size;
    char *rt = fuzz_strndup(data, rlen);
    char *scope = nl ? fuzz_strndup(nl + 1, size - rlen - 1) : NULL;

    struct provider_config pc = {
        .id = ops->id,
        .client_id = (char *)"fuzz client&id=1",
        .client_secret = (char *)"fuzz+secret/=%",
        .tenant = (char *)"common",
        .token_url = (char *)"https://127.0.0.1/token",
        .max_in_flight = 1,
        .max_rate = 1,
    };
    struct provider_request req;
    char err[ERRBUF_LEN] = "";
    if (ops->build_request(&pc, rt, scope, &req, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0', "build_request failed without a reason");
        free(rt);
        free(scope);
        return;
    }
    FUZZ_CHECK(strcmp(req.url, pc.token_url) == 0, "url changed");
    FUZZ_CHECK(req.body.data != NULL && strlen(req.body.data) == req.body.len, "body length");
    bool saw_rt = false, saw_scope = false, saw_grant = false;
    char *body = strdup(req.body.data);
    FUZZ_CHECK(body != NULL, "out of memory");
    char *save = NULL;
    for (char *f = strtok_r(body, "&", &save); f; f = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(f, '=');
        FUZZ_CHECK(eq != NULL, "form field without '='");
        *eq = '\0';
        for (const char *p = eq + 1; *p; p++)
            FUZZ_CHECK(strchr("&= +", *p) == NULL, "unencoded '%c' in a form value", *p);
        char *v = eq + 1;
        FUZZ_CHECK(pct_decode(v), "malformed percent escape");
        if (strcmp(f, "refresh_token") == 0) {
            saw_rt = true;
            FUZZ_CHECK(strcmp(v, rt) == 0, "refresh_token does not survive form encoding");
        } else if (strcmp(f, "scope") == 0) {
            saw_scope = true;
            FUZZ_CHECK(ops->id == PROVIDER_MICROSOFT, "%s sent a scope", ops->name);
            bool oa = false;
            char *s2 = NULL;
            for (char *w = strtok_r(v, " ", &s2); w; w = strtok_r(NULL, " ", &s2))
                oa |= strcmp(w, "offline_access") == 0;
            FUZZ_CHECK(oa, "microsoft scope without offline_access");
        } else if (strcmp(f, "grant_type") == 0) {
            saw_grant = strcmp(v, "refresh_token") == 0;
        }
    }
    FUZZ_CHECK(saw_rt && saw_grant, "form lacks refresh_token or grant_type");
    FUZZ_CHECK(saw_scope == (ops->id == PROVIDER_MICROSOFT), "scope presence");
    free(body);
    provider_request_clear(&req);
    free(rt);
    free(scope);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4 || size > PROVIDER_MAX_RESPONSE_BYTES + 1024)
        return 0;
    uint8_t flags = data[0];
    static const enum provider_id ids[4] = {PROVIDER_GOOGLE, PROVIDER_GITHUB, PROVIDER_MICROSOFT,
                                            PROVIDER_NAMED_COUNT /* the generic dialect */};
    const struct provider_ops *ops = provider_ops_get(ids[flags & 3]);
    FUZZ_CHECK(ops != NULL, "no dialect");

    struct http_answer ans = {0};
    ans.transport_error = (flags & 0x40) ? data[1] : 0;
    ans.transport_detail = (flags & 0x40) && (data[1] & 1) ? "fuzz detail \x01 text" : NULL;
    ans.status = (long)(int16_t)(uint16_t)((data[2] << 8) | data[3]);
    ans.oversized = (flags & 0x08) != 0;
    ans.http_version = (flags & 0x80) ? 20 : 11;
    size_t pos = 4;
    if (flags & 0x10) {
        if (size < pos + 4)
            return 0;
        ans.received_at = (int64_t)(((uint32_t)data[pos] << 24) | ((uint32_t)data[pos + 1] << 16) |
                                    ((uint32_t)data[pos + 2] << 8) | data[pos + 3]);
        pos += 4;
    } else {
        ans.received_at = 1700000000;
    }
    char *retry_after = NULL;
    if (flags & 0x04) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
        retry_after = fuzz_strndup(data + pos, n);
        pos += n + (nl ? 1 : 0);
        ans.retry_after = retry_after;
    }
    /* An exact-size, unterminated copy: a reader that runs past body_len is caught. */
    size_t blen = size - pos;
    char *body = malloc(blen ? blen : 1);
    FUZZ_CHECK(body != NULL, "out of memory");
    memcpy(body, data + pos, blen);
    ans.body = body;
    ans.body_len = blen;

    struct token_result res;
    memset(&res, 0xa5, sizeof(res)); /* read_answer overwrites it whole */
    ops->read_answer(&ans, &res);
    check_result(ops, &ans, &res);
    token_result_clear(&res);
    FUZZ_CHECK(res.access_token.data == NULL && res.scope == NULL && res.retry_after_ms == -1,
               "token_result_clear left state behind");

    if (ans.transport_error == 0 && !ans.oversized && ans.status >= 200 && ans.status <= 299) {
        /* The shared reader alone must agree with the dialect on success. */
        struct token_result std;
        provider_read_standard_json(&ans, ops->default_lifetime_s, &std);
        if (std.outcome == OUTCOME_SUCCESS)
            FUZZ_CHECK(std.access_token.len > 0 && std.expires_in_s >= 1, "standard reader");
        token_result_clear(&std);
    }

    if (flags & 0x20)
        check_request(ops, data + pos, blen);

    free(body);
    free(retry_after);
    return 0;
}
