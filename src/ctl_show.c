/*
 * ctl_show.c — `oauth-refreshctl show`: one account's story, for the operator
 * who asks "why was user 4711 not refreshed?". It owns the command line
 * (account ids, or a selection by --provider / --user / --state with
 * --limit), the one query that reads what the daemon knows of each account,
 * and the two renderings of the same data: one block per account for a human
 * at a terminal (aligned labels, UTC ISO 8601 times and how long ago or from
 * now), and --json.
 *
 * Reading is split from rendering: show_query() turns the rows into a JSON
 * document (a list of accounts, the ids not found, whether the limit cut the
 * list), which --json prints as it is and show_print() renders as text.
 *
 * It must never print a token: the refresh token is decrypted only to make
 * its fingerprint (token_fingerprint, keys.h: the same one the journal's
 * OAUTH_TOKEN_FP carries), and the plaintext is wiped at once. It reads only
 * what the least-privilege role of `oauth-refreshctl grants` may read
 * (oauth_accounts' granted columns and the daemon's own account_state).
 * Exit codes: 0, 1 when an account id was not found, 64 bad arguments, 69
 * database unavailable or schema missing, 78 bad configuration.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "config.h"
#include "ctl.h"
#include "ctl_common.h"
#include "keys.h"
#include "secret.h"
#include "stored_token.h"

#define PROG               "oauth-refreshctl"
#define CMD                "show"
#define SHOW_DEFAULT_LIMIT 50
#define SHOW_MAX_LIMIT     10000
#define DEFAULT_LEAD_MS    (5 * 60 * 1000)
#define ROTATE_KEYS_OWNER  "'oauth-refreshctl rotate-keys'"

static const char *const show_states[] = {"fresh", "due", "refreshing", "failing", "revoked"};

struct show_args {
    struct ctl_db_args db;
    const char *provider; /* NULL: any */
    const char *user;     /* NULL: any; a validated positive integer */
    const char *state;    /* NULL: any; one of show_states */
    long limit;
};

/*
 * One row per account. The state is decided here, in this order: revoked;
 * refreshing (a live lease that is not rotate-keys' short hold); failing (a
 * recorded error); not_refreshable (no refresh token or no expires_at: never
 * due); due (within the lead time); fresh. next due is when the daemon may
 * claim it (due_at - lead, not before the retry time; the per-account jitter
 * may make it a little later).
 *
 * $1 ids (bigint[], NULL = any), $2 provider, $3 user id, $4 state, $5 limit,
 * $6 lead time. With ids the rows come in the order given; else by id.
 */
static const char show_sql[] =
    "SELECT x.* FROM ("
    " SELECT a.id, a.user_id::text AS user_id, a.provider::text AS provider, a.refresh_token,"
    "  CASE WHEN s.revoked THEN 'revoked'"
    "       WHEN s.lease_until > now() AND s.lease_owner IS DISTINCT FROM " ROTATE_KEYS_OWNER
    "         THEN 'refreshing'"
    "       WHEN s.last_error IS NOT NULL THEN 'failing'"
    "       WHEN s.due_at IS NULL OR a.refresh_token IS NULL THEN 'not_refreshable'"
    "       WHEN s.due_at - $6::interval <= now() THEN 'due'"
    "       ELSE 'fresh' END AS state,"
    "  s.lease_owner, oauth_refreshd.utc_text(s.lease_until) AS lease_until,"
    "  extract(epoch FROM s.lease_until - now())::float8 AS lease_in,"
    "  oauth_refreshd.utc_text(a.expires_at) AS expires_at,"
    "  extract(epoch FROM a.expires_at - now())::float8 AS expires_in,"
    "  oauth_refreshd.utc_text(n.next_due) AS next_due,"
    "  extract(epoch FROM n.next_due - now())::float8 AS next_due_in,"
    "  oauth_refreshd.utc_text(s.retry_at) AS retry_at,"
    "  COALESCE(s.attempts, 0) AS attempts, s.last_error,"
    "  oauth_refreshd.utc_text(s.last_error_at) AS last_error_at,"
    "  extract(epoch FROM s.last_error_at - now())::float8 AS last_error_in,"
    "  s.last_error_detail,"
    "  oauth_refreshd.utc_text(s.revoked_at) AS revoked_at,"
    "  extract(epoch FROM s.revoked_at - now())::float8 AS revoked_in,"
    "  oauth_refreshd.utc_text(s.last_refreshed_at) AS last_refreshed_at,"
    "  extract(epoch FROM s.last_refreshed_at - now())::float8 AS last_refreshed_in,"
    "  COALESCE(s.refresh_count, 0) AS refresh_count,"
    "  COALESCE(array_position($1::bigint[], a.id), 0) AS ord"
    "  FROM public.oauth_accounts a"
    "  LEFT JOIN oauth_refreshd.account_state s ON s.account_id = a.id"
    "  CROSS JOIN LATERAL (SELECT CASE WHEN s.due_at IS NULL OR s.revoked THEN NULL"
    "                                  ELSE GREATEST(s.due_at - $6::interval, s.retry_at)"
    "                             END AS next_due) n"
    "  WHERE ($1::bigint[] IS NULL OR a.id = ANY ($1::bigint[]))"
    "    AND ($2::text IS NULL OR a.provider = $2::text)"
    "    AND ($3::bigint IS NULL OR a.user_id = $3::bigint)"
    "    AND ($4::text IS NULL OR $4::text <> 'failing'"
    "         OR (s.last_error IS NOT NULL AND NOT s.revoked))"
    "    AND ($4::text IS NULL OR $4::text <> 'revoked' OR s.revoked)"
    "    AND ($4::text IS NULL OR $4::text <> 'due' OR s.due_at <= now() + $6::interval)"
    " ) x"
    " WHERE ($4::text IS NULL OR x.state = $4::text)"
    " ORDER BY x.ord, x.id LIMIT $5::int";

enum show_col {
    COL_ID,
    COL_USER,
    COL_PROVIDER,
    COL_REFRESH,
    COL_STATE,
    COL_LEASE_OWNER,
    COL_LEASE_UNTIL,
    COL_LEASE_IN,
    COL_EXPIRES,
    COL_EXPIRES_IN,
    COL_NEXT_DUE,
    COL_NEXT_DUE_IN,
    COL_RETRY,
    COL_ATTEMPTS,
    COL_ERROR,
    COL_ERROR_AT,
    COL_ERROR_IN,
    COL_DETAIL,
    COL_REVOKED_AT,
    COL_REVOKED_IN,
    COL_REFRESHED_AT,
    COL_REFRESHED_IN,
    COL_COUNT,
};

static void show_usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " [-c FILE] show [--json] [--conninfo CONNINFO] ID...\n"
            "       " PROG " [-c FILE] show [--json] [--conninfo CONNINFO]\n"
            "              [--provider P] [--user U] [--state STATE] [--limit N]\n"
            "  What the daemon knows of each account: state, expiry, next due time,\n"
            "  attempts, last error and the provider's words, last refresh, and the\n"
            "  fingerprint of the refresh token (never a token).\n"
            "  --provider P             accounts of this provider\n"
            "  --user U                 accounts of this user id\n"
            "  --state STATE            fresh, due, refreshing, failing or revoked\n"
            "  --limit N                at most N accounts (default %d)\n"
            "  --json                   one JSON document\n"
            "  -d, --conninfo CONNINFO  libpq conninfo or URI; default: [database] of the\n"
            "                           configuration (which also holds the keys the\n"
            "                           fingerprint needs)\n",
            SHOW_DEFAULT_LIMIT);
}

static bool show_state_known(const char *s)
{
    for (size_t i = 0; i < ARRAY_LEN(show_states); i++)
        if (strcmp(s, show_states[i]) == 0)
            return true;
    return false;
}

static bool show_parse_limit(const char *s, long *out)
{
    char *end;
    if (s[0] < '0' || s[0] > '9')
        return false;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 1 || v > SHOW_MAX_LIMIT)
        return false;
    *out = v;
    return true;
}

/* Returns 0, -1 after --help, or an exit code (after printing why). */
static int show_parse(int argc, char **argv, struct show_args *a)
{
    static const struct option opts[] = {
        {"conninfo", required_argument, NULL, 'd'}, {"json", no_argument, NULL, 'j'},
        {"provider", required_argument, NULL, 'p'}, {"user", required_argument, NULL, 'u'},
        {"state", required_argument, NULL, 's'},    {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->limit = SHOW_DEFAULT_LIMIT;
    bool limit_given = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            a->db.conninfo = optarg;
            break;
        case 'j':
            a->db.json = true;
            break;
        case 'p':
            if (provider_id_from_name(optarg) < 0) {
                fprintf(stderr, PROG " " CMD ": unknown provider '%s'\n", optarg);
                return EXIT_USAGE;
            }
            a->provider = optarg;
            break;
        case 'u':
            if (!ctl_db_valid_id(optarg)) {
                fprintf(stderr, PROG " " CMD ": '%s' is not a user id (a positive integer)\n",
                        optarg);
                return EXIT_USAGE;
            }
            a->user = optarg;
            break;
        case 's':
            if (!show_state_known(optarg)) {
                fprintf(stderr,
                        PROG " " CMD ": unknown state '%s' (fresh, due, refreshing, failing or "
                             "revoked)\n",
                        optarg);
                return EXIT_USAGE;
            }
            a->state = optarg;
            break;
        case 'l':
            if (!show_parse_limit(optarg, &a->limit)) {
                fprintf(stderr, PROG " " CMD ": --limit takes a number from 1 to %d\n",
                        SHOW_MAX_LIMIT);
                return EXIT_USAGE;
            }
            limit_given = true;
            break;
        case 'h':
            show_usage(stdout);
            return -1;
        default:
            if (optopt != 0 && optopt != 'h' && strchr("dpusl", optopt) != NULL)
                fprintf(stderr, PROG " " CMD ": %s needs a value\n", argv[optind - 1]);
            else
                fprintf(stderr, PROG " " CMD ": unknown option '%s'\n", argv[optind - 1]);
            show_usage(stderr);
            return EXIT_USAGE;
        }
    }
    a->db.first = optind;
    bool selects = a->provider != NULL || a->user != NULL || a->state != NULL;
    bool ids = a->db.first < argc;
    if (ids == selects) {
        fprintf(stderr, PROG " " CMD ": give account ids, or select with --provider, --user or "
                             "--state (not both)\n");
        show_usage(stderr);
        return EXIT_USAGE;
    }
    if (ids && limit_given) {
        fprintf(stderr, PROG " " CMD ": --limit goes with --provider, --user or --state\n");
        return EXIT_USAGE;
    }
    bool bad = false;
    for (int i = a->db.first; i < argc; i++) {
        if (!ctl_db_valid_id(argv[i])) {
            fprintf(stderr, PROG " " CMD ": '%s' is not an account id (a positive integer)\n",
                    argv[i]);
            bad = true;
        }
    }
    if (bad)
        return EXIT_USAGE;
    if (a->db.conninfo != NULL)
        ctl_warn_argv_conninfo(CMD, a->db.conninfo);
    return 0;
}

/* ---- query -------------------------------------------------------------------------------- */

static json_t *show_text_or_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

static json_t *show_real_or_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null()
                                    : json_real(strtod(PQgetvalue(r, row, col), NULL));
}

static json_int_t show_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : (json_int_t)strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A time and how far it is from now (seconds, negative = past), or JSON nulls. */
static void show_set_time(json_t *o, const char *name, const PGresult *r, int row, int col,
                          int in_col)
{
    char key[64];
    json_object_set_new(o, name, show_text_or_null(r, row, col));
    snprintf(key, sizeof key, "%s_in_s", name);
    json_object_set_new(o, key, show_real_or_null(r, row, in_col));
}

/*
 * The refresh token's fingerprint under the primary key, or NULL with why in
 * *note. The plaintext lives in guarded memory only for the hash.
 */
static json_t *show_fingerprint(const struct config *cfg, const PGresult *r, int row,
                                const char **note)
{
    if (PQgetisnull(r, row, COL_REFRESH)) {
        *note = "no refresh token stored";
        return json_null();
    }
    if (cfg == NULL || cfg->keys == NULL) {
        *note = "unknown: the fingerprint needs the key list of a configuration (-c FILE)";
        return json_null();
    }
    const char *ct = PQgetvalue(r, row, COL_REFRESH);
    struct secret plain = {0};
    char err[ERRBUF_LEN];
    if (stored_token_decrypt(cfg->keys, ct, strlen(ct), &plain, NULL, err, sizeof err) < 0) {
        *note = "unknown: the stored refresh token does not verify under any configured key";
        return json_null();
    }
    char fp[TOKEN_FP_HEX_LEN + 1];
    int rc = token_fingerprint(cfg->keys, plain.data, plain.len, fp);
    secret_clear(&plain);
    if (rc < 0) {
        *note = "unknown: no key";
        return json_null();
    }
    return json_string(fp);
}

static json_t *show_account(const PGresult *r, int i, const struct config *cfg)
{
    json_t *o = json_object();
    json_object_set_new(o, "account_id", json_integer(show_int(r, i, COL_ID)));
    json_object_set_new(o, "user_id", json_integer(show_int(r, i, COL_USER)));
    json_object_set_new(o, "provider", json_string(PQgetvalue(r, i, COL_PROVIDER)));
    json_object_set_new(o, "state", json_string(PQgetvalue(r, i, COL_STATE)));
    if (PQgetisnull(r, i, COL_LEASE_UNTIL) || strtod(PQgetvalue(r, i, COL_LEASE_IN), NULL) <= 0) {
        json_object_set_new(o, "lease", json_null());
    } else {
        json_t *l = json_object();
        json_object_set_new(l, "owner", show_text_or_null(r, i, COL_LEASE_OWNER));
        show_set_time(l, "until", r, i, COL_LEASE_UNTIL, COL_LEASE_IN);
        json_object_set_new(o, "lease", l);
    }
    show_set_time(o, "expires_at", r, i, COL_EXPIRES, COL_EXPIRES_IN);
    show_set_time(o, "next_due_at", r, i, COL_NEXT_DUE, COL_NEXT_DUE_IN);
    json_object_set_new(o, "retry_at", show_text_or_null(r, i, COL_RETRY));
    json_object_set_new(o, "attempts", json_integer(show_int(r, i, COL_ATTEMPTS)));
    if (PQgetisnull(r, i, COL_ERROR)) {
        json_object_set_new(o, "last_error", json_null());
    } else {
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string(PQgetvalue(r, i, COL_ERROR)));
        show_set_time(e, "at", r, i, COL_ERROR_AT, COL_ERROR_IN);
        json_object_set_new(e, "detail", show_text_or_null(r, i, COL_DETAIL));
        json_object_set_new(o, "last_error", e);
    }
    show_set_time(o, "revoked_at", r, i, COL_REVOKED_AT, COL_REVOKED_IN);
    show_set_time(o, "last_refreshed_at", r, i, COL_REFRESHED_AT, COL_REFRESHED_IN);
    json_object_set_new(o, "refresh_count", json_integer(show_int(r, i, COL_COUNT)));
    const char *note = NULL;
    json_object_set_new(o, "refresh_token_fp", show_fingerprint(cfg, r, i, &note));
    json_object_set_new(o, "refresh_token_fp_note", note ? json_string(note) : json_null());
    return o;
}

/* "{1,2,3}" of the ids in argv; malloc()ed, NULL on OOM. */
static char *show_ids_array(int argc, char **argv, int first)
{
    size_t len = 3;
    for (int i = first; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    out[o++] = '{';
    for (int i = first; i < argc; i++) {
        size_t n = strlen(argv[i]);
        if (i > first)
            out[o++] = ',';
        memcpy(out + o, argv[i], n);
        o += n;
    }
    out[o++] = '}';
    out[o] = '\0';
    return out;
}

/* The ids of argv that no row answered (each once). */
static json_t *show_not_found(int argc, char **argv, int first, const json_t *accounts)
{
    json_t *missing = json_array();
    for (int i = first; i < argc; i++) {
        json_int_t id = (json_int_t)strtoll(argv[i], NULL, 10);
        bool seen = false;
        size_t k;
        json_t *v;
        json_array_foreach(accounts, k, v)
        {
            if (json_integer_value(json_object_get(v, "account_id")) == id)
                seen = true;
        }
        json_array_foreach(missing, k, v)
        {
            if (json_integer_value(v) == id)
                seen = true;
        }
        if (!seen)
            json_array_append_new(missing, json_integer(id));
    }
    return missing;
}

/*
 * Reads the accounts into a document {"accounts": [...], "not_found": [...],
 * "limit": N|null, "more": bool}. Returns NULL after printing why (*rc set).
 */
static json_t *show_query(PGconn *conn, const struct show_args *a, const struct config *cfg,
                          int argc, char **argv, int *rc)
{
    bool by_id = a->db.first < argc;
    char *ids = by_id ? show_ids_array(argc, argv, a->db.first) : NULL;
    if (by_id && ids == NULL) {
        fprintf(stderr, PROG " " CMD ": out of memory\n");
        *rc = EXIT_WORK_FAILED;
        return NULL;
    }
    char limit[32], lead[64];
    /* One more row than asked: tells whether more accounts match. */
    snprintf(limit, sizeof limit, "%ld", by_id ? (long)(argc - a->db.first) : a->limit + 1);
    snprintf(lead, sizeof lead, "%" PRId64 " milliseconds",
             cfg != NULL ? cfg->lead_time_ms : (int64_t)DEFAULT_LEAD_MS);
    const char *params[] = {ids, a->provider, a->user, a->state, limit, lead};
    PGresult *r = PQexecParams(conn, show_sql, 6, NULL, params, NULL, NULL, 0);
    free(ids);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_print_error(CMD, "cannot read the accounts", PQresultErrorMessage(r));
        PQclear(r);
        *rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        return NULL;
    }
    int n = PQntuples(r);
    bool more = !by_id && n > a->limit;
    if (more)
        n = (int)a->limit;
    json_t *accounts = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(accounts, show_account(r, i, cfg));
    PQclear(r);
    json_t *doc = json_object();
    json_object_set_new(doc, "accounts", accounts);
    json_object_set_new(doc, "not_found", show_not_found(argc, argv, a->db.first, accounts));
    json_object_set_new(doc, "limit", by_id ? json_null() : json_integer(a->limit));
    json_object_set_new(doc, "more", json_boolean(more));
    return doc;
}

/* ---- render -------------------------------------------------------------------------------- */

#define LABEL "  %-16s "

/* "2026-12-04T21:30:00Z (in 4m00s)" / "(3h12m ago)"; "never" for null. */
static void show_when(char *buf, size_t len, const json_t *o, const char *name)
{
    char key[64], d[32];
    const json_t *t = json_object_get(o, name);
    if (!json_is_string(t)) {
        snprintf(buf, len, "never");
        return;
    }
    snprintf(key, sizeof key, "%s_in_s", name);
    double in = json_real_value(json_object_get(o, key));
    ctl_db_human_duration(d, sizeof d, in);
    if (in >= 0.5)
        snprintf(buf, len, "%s (in %s)", json_string_value(t), d);
    else if (in > -0.5)
        snprintf(buf, len, "%s (now)", json_string_value(t));
    else
        snprintf(buf, len, "%s (%s ago)", json_string_value(t), d);
}

static void show_print_state(const json_t *acct)
{
    const char *state = json_string_value(json_object_get(acct, "state"));
    const json_t *lease = json_object_get(acct, "lease");
    char when[96];
    if (strcmp(state, "refreshing") == 0 && json_is_object(lease)) {
        show_when(when, sizeof when, lease, "until");
        printf(LABEL "refreshing (lease held by %s until %s)\n",
               "state:", json_string_value(json_object_get(lease, "owner")), when);
        return;
    }
    if (strcmp(state, "not_refreshable") == 0) {
        printf(LABEL "not refreshable (no refresh token or no expiry stored)\n", "state:");
        return;
    }
    printf(LABEL "%s\n", "state:", state);
    if (json_is_object(lease)) {
        show_when(when, sizeof when, lease, "until");
        printf(LABEL "held by %s until %s\n",
               "lease:", json_string_value(json_object_get(lease, "owner")), when);
    }
}

static void show_print_account(const json_t *acct)
{
    char when[96];
    printf("account %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(acct, "account_id")));
    printf(LABEL "%s\n", "provider:", json_string_value(json_object_get(acct, "provider")));
    printf(LABEL "%" JSON_INTEGER_FORMAT "\n",
           "user id:", json_integer_value(json_object_get(acct, "user_id")));
    show_print_state(acct);
    show_when(when, sizeof when, acct, "expires_at");
    printf(LABEL "%s\n", "expires at:",
           json_is_string(json_object_get(acct, "expires_at")) ? when : "none stored");
    show_when(when, sizeof when, acct, "next_due_at");
    printf(LABEL "%s\n",
           "next due:", json_is_string(json_object_get(acct, "next_due_at")) ? when : "none");
    printf(LABEL "%" JSON_INTEGER_FORMAT "%s\n",
           "attempts:", json_integer_value(json_object_get(acct, "attempts")),
           json_integer_value(json_object_get(acct, "attempts")) > 0 ? " (since the last success)"
                                                                     : "");
    const json_t *err = json_object_get(acct, "last_error");
    if (json_is_object(err)) {
        show_when(when, sizeof when, err, "at");
        printf(LABEL "%s at %s\n", "last error:", json_string_value(json_object_get(err, "code")),
               when);
        const json_t *detail = json_object_get(err, "detail");
        if (json_is_string(detail))
            printf(LABEL "%s\n", "provider said:", json_string_value(detail));
    } else {
        printf(LABEL "none\n", "last error:");
    }
    if (json_is_string(json_object_get(acct, "revoked_at"))) {
        show_when(when, sizeof when, acct, "revoked_at");
        printf(LABEL "%s (until the application stores a new refresh token)\n",
               "revoked at:", when);
    }
    show_when(when, sizeof when, acct, "last_refreshed_at");
    printf(LABEL "%s\n", "last refreshed:", when);
    printf(LABEL "%" JSON_INTEGER_FORMAT "\n",
           "refresh count:", json_integer_value(json_object_get(acct, "refresh_count")));
    const json_t *fp = json_object_get(acct, "refresh_token_fp");
    if (json_is_string(fp))
        printf(LABEL "fingerprint %s (OAUTH_TOKEN_FP in the journal)\n",
               "refresh token:", json_string_value(fp));
    else
        printf(LABEL "%s\n",
               "refresh token:", json_string_value(json_object_get(acct, "refresh_token_fp_note")));
}

static void show_print(const json_t *doc)
{
    const json_t *accounts = json_object_get(doc, "accounts");
    size_t i;
    json_t *acct;
    json_array_foreach(accounts, i, acct)
    {
        if (i > 0)
            putchar('\n');
        show_print_account(acct);
    }
    if (json_is_null(json_object_get(doc, "limit")))
        return;
    if (json_array_size(accounts) == 0)
        printf("no account matches\n");
    else if (json_is_true(json_object_get(doc, "more")))
        printf("\n(more accounts match: these are the first %" JSON_INTEGER_FORMAT
               " by id; raise --limit to see more)\n",
               json_integer_value(json_object_get(doc, "limit")));
}

int ctl_show(const struct ctl_ctx *ctx, int argc, char **argv)
{
    struct show_args a;
    int rc = show_parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    struct ctl_db_conf conf;
    if ((rc = ctl_db_conf_load(ctx, CMD, &a.db, &conf)) != 0)
        return rc;
    PGconn *conn = ctl_db_connect(CMD, conf.conninfo);
    if (conn == NULL) {
        ctl_db_conf_free(&conf);
        return EXIT_UNAVAILABLE;
    }
    json_t *doc = NULL;
    int version = ctl_db_schema_ready(conn, CMD);
    if (version < 0) {
        rc = -version;
        goto out;
    }
    doc = show_query(conn, &a, conf.cfg, argc, argv, &rc);
    if (doc == NULL)
        goto out;
    if (a.db.json) {
        char *s = json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (s == NULL) {
            fprintf(stderr, PROG " " CMD ": out of memory\n");
            rc = EXIT_WORK_FAILED;
            goto out;
        }
        printf("%s\n", s);
        free(s);
    } else {
        show_print(doc);
    }
    rc = 0;
    size_t i;
    json_t *id;
    json_array_foreach(json_object_get(doc, "not_found"), i, id)
    {
        fprintf(stderr, PROG " " CMD ": account %" JSON_INTEGER_FORMAT " not found\n",
                json_integer_value(id));
        rc = EXIT_WORK_FAILED;
    }
out:
    json_decref(doc);
    PQfinish(conn);
    ctl_db_conf_free(&conf);
    return rc;
}
