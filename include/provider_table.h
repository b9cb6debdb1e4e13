/*
 * provider_table.h — private to provider*.c (and their tests): the one table
 * that says what each dialect's error answers mean. A row matches on the
 * dialect, the HTTP status, whether a valid Retry-After came with it, the
 * shape of the body, the JSON "error" code, and an AADSTS number or
 * error_subtype where that decides; it gives the outcome, whose failure it is
 * (scope) and when to ask again (retry). docs/providers.md shows the same rows
 * with their sources, and a unit test holds the two together.
 *
 * What stays outside the table: transport errors (timeouts, network, TLS),
 * oversized bodies, redirects and impossible statuses, bodies that are not a
 * usable answer at all, and the success path.
 */
#ifndef OAUTH_PROVIDER_TABLE_H
#define OAUTH_PROVIDER_TABLE_H

#include <jansson.h>

#include "provider.h"

/* The body shape a row asks for. */
enum rule_body {
    BODY_ANY,        /* not looked at */
    BODY_HTML,       /* an HTML page (first non-blank byte is '<') */
    BODY_RATE_LIMIT, /* names rateLimitExceeded or userRateLimitExceeded (Google) */
    BODY_JSON_ERROR, /* a JSON object with a string "error" member */
};

struct provider_rule {
    int dialect;               /* enum provider_id, or RULE_ANY_DIALECT */
    long status_lo, status_hi; /* inclusive; 0, 0 = any status */
    bool retry_after;          /* only with a valid Retry-After header */
    enum rule_body body;
    const char *error;   /* BODY_JSON_ERROR: the "error" code, NULL = any code */
    long aadsts;         /* Microsoft: this number in error_codes (or the description's
                            "AADSTSn:" prefix); 0 = not looked at */
    const char *subtype; /* Google: this error_subtype; NULL = not looked at */
    enum refresh_outcome outcome;
    enum answer_scope scope;
    enum answer_retry retry;
};

#define RULE_ANY_DIALECT (-1)

/* The rows, in the order they are tried: the first that matches decides. */
extern const struct provider_rule provider_rules[];
extern const size_t provider_rules_count;

/* What is known of an answer when the table is asked. */
struct answer_facts {
    int dialect; /* enum provider_id */
    long status;
    bool retry_after; /* a Retry-After that parsed */
    const char *body; /* may be NULL */
    size_t body_len;
    const json_t *root; /* the parsed answer object once read, else NULL */
    const char *error;  /* root's "error" string, else NULL */
};

/*
 * The first row that matches, or NULL. Without root, only the rows that look
 * at the status, headers and body bytes can match (they come first in the
 * table, so this is the table's order); with root and error, only the JSON
 * error rows, and the last of these matches any code.
 */
const struct provider_rule *provider_rule_find(const struct answer_facts *f);

/* Cell texts of a row, as docs/providers.md writes them. */
enum rule_column {
    COL_DIALECT,
    COL_STATUS,
    COL_RETRY_AFTER,
    COL_BODY,
    COL_ERROR,
    COL_QUALIFIER,
    COL_OUTCOME,
    COL_SCOPE,
    COL_RETRY,
    RULE_COLUMNS
};
#define RULE_CELL_LEN 48
void provider_rule_cells(const struct provider_rule *r, char cells[RULE_COLUMNS][RULE_CELL_LEN]);

#endif
