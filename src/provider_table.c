/*
 * provider_table.c — the classification table of the three dialects
 * (provider_table.h): which error answer means what, whose failure it is,
 * and when to ask again, as rows of data checked against the providers'
 * documentation and trackers (docs/providers.md holds the same rows with
 * their sources; tests/unit/test_provider_table.c keeps the two equal).
 *
 * Pure: no I/O, no allocation, no logging. It reads the answer only to
 * compare it with rows; it never copies anything out of it.
 */
#include "provider_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANY   RULE_ANY_DIALECT
#define G     PROVIDER_GOOGLE
#define H     PROVIDER_GITHUB
#define M     PROVIDER_MICROSOFT
#define NO_RA false
#define RA    true

/* A row that looks at status, headers or body bytes only; "..." is its meaning below. */
#define STATUS_ROW(dialect, lo, hi, ra, body, ...)                                                 \
    {                                                                                              \
        dialect, lo, hi, ra, body, NULL, 0, NULL, __VA_ARGS__                                      \
    }
/* A row that looks at the JSON error (whatever the status: GitHub errs with 200). */
#define ERROR_ROW(dialect, error, aadsts, subtype, ...)                                            \
    {                                                                                              \
        dialect, 0, 0, NO_RA, BODY_JSON_ERROR, error, aadsts, subtype, __VA_ARGS__                 \
    }

/* The five meanings: outcome, scope, retry. */
#define REVOKED   OUTCOME_REVOKED, SCOPE_ACCOUNT, RETRY_RECONNECT
#define CONFIG    OUTCOME_CONFIG, SCOPE_PROVIDER, RETRY_PROBE
#define OVERLOAD  OUTCOME_TRANSIENT, SCOPE_PROVIDER, RETRY_PAUSE
#define TRANSIENT OUTCOME_TRANSIENT, SCOPE_ACCOUNT, RETRY_BACKOFF
#define BAD       OUTCOME_BAD_RESPONSE, SCOPE_ACCOUNT, RETRY_BACKOFF

/*
 * Order matters: the first matching row decides, so within a dialect the
 * rows that an AADSTS number or a subtype narrows come before the broader
 * ones, every dialect's rows come before the RFC 6749 rows that hold for all,
 * and the rows that need no JSON come first of all (provider_table.h).
 */
const struct provider_rule provider_rules[] = {
    /* The provider's overload: pause it, charge nobody. */
    STATUS_ROW(ANY, 429, 429, NO_RA, BODY_ANY, OVERLOAD),
    STATUS_ROW(ANY, 408, 408, NO_RA, BODY_ANY, OVERLOAD),
    STATUS_ROW(ANY, 503, 503, RA, BODY_ANY, OVERLOAD),
    STATUS_ROW(ANY, 403, 403, RA, BODY_ANY, OVERLOAD),
    STATUS_ROW(G, 403, 403, NO_RA, BODY_HTML, OVERLOAD),
    STATUS_ROW(G, 403, 403, NO_RA, BODY_RATE_LIMIT, OVERLOAD),
    /* Server errors: this account again after its backoff (the breaker watches). */
    STATUS_ROW(ANY, 500, 599, NO_RA, BODY_ANY, TRANSIENT),

    /* Google */
    ERROR_ROW(G, "invalid_grant", 0, "invalid_rapt", REVOKED),
    ERROR_ROW(G, "unauthorized_client", 0, NULL, REVOKED),
    ERROR_ROW(G, "admin_policy_enforced", 0, NULL, REVOKED),
    ERROR_ROW(G, "deleted_client", 0, NULL, CONFIG),
    ERROR_ROW(G, "disabled_client", 0, NULL, CONFIG),
    ERROR_ROW(G, "internal_failure", 0, NULL, TRANSIENT),

    /* GitHub (errors come with HTTP 200) */
    ERROR_ROW(H, "bad_refresh_token", 0, NULL, REVOKED),
    ERROR_ROW(H, "incorrect_client_credentials", 0, NULL, CONFIG),

    /* Microsoft */
    ERROR_ROW(M, "unauthorized_client", 700016, NULL, REVOKED),
    ERROR_ROW(M, "unauthorized_client", 7000112, NULL, REVOKED),
    ERROR_ROW(M, "invalid_client", 7000215, NULL, CONFIG),
    ERROR_ROW(M, "invalid_client", 7000222, NULL, CONFIG),
    ERROR_ROW(M, "invalid_request", 90002, NULL, CONFIG),
    ERROR_ROW(M, "invalid_request", 50194, NULL, CONFIG),
    ERROR_ROW(M, "invalid_request", 900144, NULL, CONFIG),
    ERROR_ROW(M, "invalid_scope", 0, NULL, REVOKED),
    ERROR_ROW(M, "invalid_resource", 0, NULL, REVOKED),
    ERROR_ROW(M, "consent_required", 0, NULL, REVOKED),
    ERROR_ROW(M, "interaction_required", 0, NULL, REVOKED),
    ERROR_ROW(M, NULL, 65001, NULL, REVOKED),
    ERROR_ROW(M, NULL, 50076, NULL, REVOKED),
    ERROR_ROW(M, NULL, 50079, NULL, REVOKED),
    ERROR_ROW(M, "temporarily_unavailable", 0, NULL, OVERLOAD),

    /* RFC 6749 §5.2 (and server_error, which some servers send here) */
    ERROR_ROW(ANY, "invalid_grant", 0, NULL, REVOKED),
    ERROR_ROW(ANY, "invalid_client", 0, NULL, CONFIG),
    ERROR_ROW(ANY, "unauthorized_client", 0, NULL, CONFIG),
    ERROR_ROW(ANY, "unsupported_grant_type", 0, NULL, CONFIG),
    ERROR_ROW(ANY, "redirect_uri_mismatch", 0, NULL, CONFIG),
    ERROR_ROW(ANY, "temporarily_unavailable", 0, NULL, TRANSIENT),
    ERROR_ROW(ANY, "server_error", 0, NULL, TRANSIENT),
    /* Everything else: the answer cannot be used. */
    ERROR_ROW(ANY, NULL, 0, NULL, BAD),
};

const size_t provider_rules_count = sizeof(provider_rules) / sizeof(provider_rules[0]);

/* ---- matching ---- */

static bool body_is_html(const char *b, size_t n)
{
    size_t i = 0;
    if (n >= 3 && memcmp(b, "\xEF\xBB\xBF", 3) == 0)
        i = 3; /* a UTF-8 byte order mark */
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'))
        i++;
    return i < n && b[i] == '<';
}

static bool body_names_rate_limit(const char *b, size_t n)
{
    /* userRateLimitExceeded does not contain rateLimitExceeded (capital R). */
    static const char *const reasons[] = {"rateLimitExceeded", "userRateLimitExceeded"};
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (memmem(b, n, reasons[i], strlen(reasons[i])))
            return true;
    return false;
}

static bool body_matches(enum rule_body want, const struct answer_facts *f)
{
    switch (want) {
    case BODY_ANY:
        return true;
    case BODY_HTML:
        return f->body && body_is_html(f->body, f->body_len);
    case BODY_RATE_LIMIT:
        return f->body && body_names_rate_limit(f->body, f->body_len);
    case BODY_JSON_ERROR:
        return f->root && f->error;
    }
    return false;
}

/* "AADSTS700016: ..." — the number Microsoft puts first in error_description. */
static bool description_names(const json_t *root, long n)
{
    const json_t *desc = json_object_get(root, "error_description");
    if (!json_is_string(desc))
        return false;
    const char *s = json_string_value(desc);
    if (strncmp(s, "AADSTS", 6) != 0)
        return false;
    s += 6;
    long v = 0;
    size_t digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 9) {
        v = v * 10 + (*s++ - '0');
        digits++;
    }
    return digits > 0 && *s == ':' && v == n;
}

static bool aadsts_matches(const json_t *root, long n)
{
    const json_t *codes = json_object_get(root, "error_codes");
    if (json_is_array(codes))
        for (size_t i = 0; i < json_array_size(codes); i++) {
            const json_t *c = json_array_get(codes, i);
            if (json_is_integer(c) && json_integer_value(c) == (json_int_t)n)
                return true;
        }
    return description_names(root, n);
}

static bool subtype_matches(const json_t *root, const char *want)
{
    const json_t *sub = json_object_get(root, "error_subtype");
    return json_is_string(sub) && strcmp(json_string_value(sub), want) == 0;
}

static bool rule_matches(const struct provider_rule *r, const struct answer_facts *f)
{
    if (r->dialect != RULE_ANY_DIALECT && r->dialect != f->dialect)
        return false;
    /* Rows are asked before the JSON is read (no root) or after (root): never both. */
    if ((r->body == BODY_JSON_ERROR) != (f->root != NULL))
        return false;
    if (r->status_lo != 0 && (f->status < r->status_lo || f->status > r->status_hi))
        return false;
    if (r->retry_after && !f->retry_after)
        return false;
    if (!body_matches(r->body, f))
        return false;
    if (r->error && strcmp(r->error, f->error) != 0)
        return false;
    if (r->aadsts && !aadsts_matches(f->root, r->aadsts))
        return false;
    if (r->subtype && !subtype_matches(f->root, r->subtype))
        return false;
    return true;
}

const struct provider_rule *provider_rule_find(const struct answer_facts *f)
{
    for (size_t i = 0; i < provider_rules_count; i++)
        if (rule_matches(&provider_rules[i], f))
            return &provider_rules[i];
    return NULL;
}

/* ---- the rows as docs/providers.md writes them ---- */

const char *answer_scope_name(enum answer_scope s)
{
    switch (s) {
    case SCOPE_ACCOUNT:
        return "account";
    case SCOPE_PROVIDER:
        return "provider";
    }
    return "unknown";
}

const char *answer_retry_name(enum answer_retry r)
{
    switch (r) {
    case RETRY_BACKOFF:
        return "backoff";
    case RETRY_RECONNECT:
        return "reconnect";
    case RETRY_PROBE:
        return "probe";
    case RETRY_PAUSE:
        return "pause";
    }
    return "unknown";
}

static const char *dialect_cell(int dialect)
{
    return dialect == RULE_ANY_DIALECT ? "any" : provider_id_name((enum provider_id)dialect);
}

static const char *body_cell(enum rule_body b)
{
    switch (b) {
    case BODY_ANY:
        return "any";
    case BODY_HTML:
        return "HTML page";
    case BODY_RATE_LIMIT:
        return "rateLimitExceeded";
    case BODY_JSON_ERROR:
        return "JSON error";
    }
    return "unknown";
}

void provider_rule_cells(const struct provider_rule *r, char cells[RULE_COLUMNS][RULE_CELL_LEN])
{
    snprintf(cells[COL_DIALECT], RULE_CELL_LEN, "%s", dialect_cell(r->dialect));
    if (r->status_lo == 0)
        snprintf(cells[COL_STATUS], RULE_CELL_LEN, "any");
    else if (r->status_lo == r->status_hi)
        snprintf(cells[COL_STATUS], RULE_CELL_LEN, "%ld", r->status_lo);
    else
        snprintf(cells[COL_STATUS], RULE_CELL_LEN, "%ld-%ld", r->status_lo, r->status_hi);
    snprintf(cells[COL_RETRY_AFTER], RULE_CELL_LEN, "%s", r->retry_after ? "yes" : "any");
    snprintf(cells[COL_BODY], RULE_CELL_LEN, "%s", body_cell(r->body));
    snprintf(cells[COL_ERROR], RULE_CELL_LEN, "%s", r->error ? r->error : "any");
    if (r->aadsts)
        snprintf(cells[COL_QUALIFIER], RULE_CELL_LEN, "AADSTS%ld", r->aadsts);
    else if (r->subtype)
        snprintf(cells[COL_QUALIFIER], RULE_CELL_LEN, "error_subtype=%s", r->subtype);
    else
        snprintf(cells[COL_QUALIFIER], RULE_CELL_LEN, "any");
    snprintf(cells[COL_OUTCOME], RULE_CELL_LEN, "%s", refresh_outcome_name(r->outcome));
    snprintf(cells[COL_SCOPE], RULE_CELL_LEN, "%s", answer_scope_name(r->scope));
    snprintf(cells[COL_RETRY], RULE_CELL_LEN, "%s", answer_retry_name(r->retry));
}
