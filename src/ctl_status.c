/*
 * ctl_status.c — `oauth-refreshctl status` (SPEC §2): how many accounts the
 * daemon looks after, how many are due, in flight, failing or revoked, when
 * the next is due, which providers have accounts but no configuration, and
 * the latest errors per provider; with --keys, the key census of
 * ctl_census.c. A query step reads everything into one JSON object; a render
 * step prints it for people, and --json prints the object itself.
 *
 * It must never run a query that scans oauth_accounts: its counts read the
 * partial indexes of oauth_refreshd.account_state (and a loose index scan for
 * the providers), so it stays fast on a million accounts. It never prints a
 * token or a conninfo.
 */
#include "ctl_status.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctl.h"
#include "ctl_census.h"
#include "ctl_common.h"

#define PROG                       "oauth-refreshctl"
#define STATUS_ERRORS_PER_PROVIDER 5
#define DEFAULT_LEAD_MS            (5 * 60 * 1000)

/*
 * A live lease is a refresh in flight, except the 10-second hold rotate-keys
 * puts on each row it has just re-encrypted (sql/oauth-refreshd.sql,
 * rotate_batch): status counts those apart so that they are not taken for
 * daemons at work.
 */
#define ROTATE_KEYS_OWNER "'oauth-refreshctl rotate-keys'"

/*
 * refreshable and the leases come from one pass over account_state (an exact
 * count of ~all rows cannot use less); every other figure reads a partial
 * index: due and next due account_state_due_idx, failing
 * account_state_failing_idx, revoked account_state_revoked_idx.
 */
static const char status_counts_sql[] =
    "SELECT c.refreshable, c.leased,"
    " (SELECT count(*) FROM oauth_refreshd.account_state"
    "   WHERE due_at IS NOT NULL AND due_at <= now() + $1::interval) AS due,"
    " (SELECT count(*) FROM oauth_refreshd.account_state"
    "   WHERE last_error IS NOT NULL AND NOT revoked) AS failing,"
    " (SELECT count(*) FROM oauth_refreshd.account_state WHERE revoked) AS revoked,"
    " n.next_due, oauth_refreshd.utc_text(n.next_due),"
    " extract(epoch FROM n.next_due - now())::float8,"
    " oauth_refreshd.utc_text(now()), c.rotating"
    " FROM (SELECT count(*) FILTER (WHERE due_at IS NOT NULL OR revoked) AS refreshable,"
    "              count(*) FILTER (WHERE lease_until > now()"
    "                                 AND lease_owner IS DISTINCT FROM " ROTATE_KEYS_OWNER ")"
    "                AS leased,"
    "              count(*) FILTER (WHERE lease_until > now()"
    "                                 AND lease_owner = " ROTATE_KEYS_OWNER ") AS rotating"
    "         FROM oauth_refreshd.account_state) c,"
    "      (SELECT min(due_at) - $1::interval AS next_due FROM oauth_refreshd.account_state"
    "        WHERE due_at IS NOT NULL) n";

/* Distinct providers through idx_oauth_accounts_provider (a loose index scan). */
static const char status_providers_sql[] =
    "WITH RECURSIVE p AS ("
    " (SELECT provider::text AS provider FROM public.oauth_accounts ORDER BY provider LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT a.provider::text FROM public.oauth_accounts a"
    "          WHERE a.provider > p.provider ORDER BY a.provider LIMIT 1)"
    "   FROM p WHERE p.provider IS NOT NULL)"
    " SELECT provider FROM p WHERE provider IS NOT NULL ORDER BY provider";

/* The latest errors per provider, newest first, from account_state_failing_idx. */
static const char status_errors_sql[] =
    "SELECT p.provider, e.account_id, e.last_error, oauth_refreshd.utc_text(e.last_error_at),"
    "       e.revoked, e.attempts"
    "  FROM unnest($1::text[]) WITH ORDINALITY AS p(provider, ord)"
    "  CROSS JOIN LATERAL ("
    "    SELECT s.account_id, s.last_error, s.last_error_at, s.revoked, s.attempts"
    "      FROM oauth_refreshd.account_state s"
    "      JOIN public.oauth_accounts a ON a.id = s.account_id"
    "     WHERE s.last_error IS NOT NULL AND a.provider = p.provider"
    "     ORDER BY s.last_error_at DESC LIMIT $2::int) e"
    " ORDER BY p.ord, e.last_error_at DESC";

static json_int_t status_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : (json_int_t)strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* The first column of every row, as a JSON array of strings. */
static json_t *status_str_array(const PGresult *r)
{
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(arr, json_string(PQgetvalue(r, i, 0)));
    return arr;
}

/* A text[] literal ("{\"a\",\"b\"}") of the names; malloc()ed, NULL on OOM. */
static char *status_pg_array(const json_t *names)
{
    size_t len = 3;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        len += strlen(json_string_value(v)) * 2 + 3;
    }
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    out[o++] = '{';
    json_array_foreach(names, i, v)
    {
        if (i > 0)
            out[o++] = ',';
        out[o++] = '"';
        for (const char *s = json_string_value(v); *s; s++) {
            if (*s == '"' || *s == '\\')
                out[o++] = '\\';
            out[o++] = *s;
        }
        out[o++] = '"';
    }
    out[o++] = '}';
    out[o] = '\0';
    return out;
}

static bool status_provider_configured(const struct config *cfg, const char *name)
{
    int id = provider_id_from_name(name);
    return id >= 0 && cfg->providers[id] != NULL;
}

/* ---- query ------------------------------------------------------------------------------ */

/* The counts and the next due time, into st. Returns 0 or an exit code. */
static int status_query_counts(PGconn *conn, const char *cmd, int64_t lead_ms, json_t *st)
{
    char lead[32];
    snprintf(lead, sizeof(lead), "%" PRId64 " milliseconds", lead_ms);
    const char *p1[] = {lead};
    PGresult *r = PQexecParams(conn, status_counts_sql, 1, NULL, p1, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        ctl_db_print_error(cmd, "cannot read the counts", PQresultErrorMessage(r));
        PQclear(r);
        return ctl_db_fail_code(conn, EXIT_WORK_FAILED);
    }
    json_object_set_new(st, "refreshable", json_integer(status_int(r, 0, 0)));
    json_object_set_new(st, "leased", json_integer(status_int(r, 0, 1)));
    json_object_set_new(st, "rotate_keys_leased", json_integer(status_int(r, 0, 9)));
    json_object_set_new(st, "due", json_integer(status_int(r, 0, 2)));
    json_object_set_new(st, "failing", json_integer(status_int(r, 0, 3)));
    json_object_set_new(st, "revoked", json_integer(status_int(r, 0, 4)));
    json_object_set_new(st, "lead_time_s", json_real((double)lead_ms / 1000.0));
    if (PQgetisnull(r, 0, 5)) {
        json_object_set_new(st, "next_due_at", json_null());
        json_object_set_new(st, "next_due_in_s", json_null());
    } else {
        json_object_set_new(st, "next_due_at", json_string(PQgetvalue(r, 0, 6)));
        json_object_set_new(st, "next_due_in_s", json_real(strtod(PQgetvalue(r, 0, 7), NULL)));
    }
    json_object_set_new(st, "now", json_string(PQgetvalue(r, 0, 8)));
    PQclear(r);
    return 0;
}

/* The providers with accounts, and those of them cfg (if any) does not configure. */
static int status_query_providers(PGconn *conn, const char *cmd, const struct config *cfg,
                                  json_t *st)
{
    PGresult *r = PQexec(conn, status_providers_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_print_error(cmd, "cannot list the providers", PQresultErrorMessage(r));
        PQclear(r);
        return ctl_db_fail_code(conn, EXIT_WORK_FAILED);
    }
    json_t *present = status_str_array(r);
    PQclear(r);
    json_object_set_new(st, "providers", present);
    if (cfg == NULL) {
        json_object_set_new(st, "unconfigured", json_null()); /* no configuration to compare */
        return 0;
    }
    json_t *unconf = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(present, i, v)
    {
        if (!status_provider_configured(cfg, json_string_value(v)))
            json_array_append(unconf, v);
    }
    json_object_set_new(st, "unconfigured", unconf);
    return 0;
}

/* The latest errors of each provider in st["providers"]. */
static int status_query_errors(PGconn *conn, const char *cmd, json_t *st)
{
    char *provs = status_pg_array(json_object_get(st, "providers"));
    if (provs == NULL) {
        fprintf(stderr, PROG " %s: out of memory\n", cmd);
        return EXIT_WORK_FAILED;
    }
    char per[16];
    snprintf(per, sizeof(per), "%d", STATUS_ERRORS_PER_PROVIDER);
    const char *p2[] = {provs, per};
    PGresult *r = PQexecParams(conn, status_errors_sql, 2, NULL, p2, NULL, NULL, 0);
    free(provs);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_print_error(cmd, "cannot read the last errors", PQresultErrorMessage(r));
        PQclear(r);
        return ctl_db_fail_code(conn, EXIT_WORK_FAILED);
    }
    json_t *errors = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        const char *prov = PQgetvalue(r, i, 0);
        json_t *list = json_object_get(errors, prov);
        if (list == NULL) {
            list = json_array();
            json_object_set_new(errors, prov, list);
        }
        json_array_append_new(list, json_pack("{s:I, s:s, s:s, s:b, s:I}", "account_id",
                                              status_int(r, i, 1), "error", PQgetvalue(r, i, 2),
                                              "at", PQgetvalue(r, i, 3), "revoked",
                                              strcmp(PQgetvalue(r, i, 4), "t") == 0, "attempts",
                                              status_int(r, i, 5)));
    }
    PQclear(r);
    json_object_set_new(st, "last_errors", errors);
    return 0;
}

int ctl_status_query(PGconn *conn, const char *cmd, const struct config *cfg, int64_t lead_ms,
                     int version, json_t **out)
{
    json_t *st = json_object();
    if (st == NULL) {
        fprintf(stderr, PROG " %s: out of memory\n", cmd);
        return EXIT_WORK_FAILED;
    }
    json_object_set_new(st, "schema_version", json_integer(version));
    int rc = status_query_counts(conn, cmd, lead_ms, st);
    if (rc == 0)
        rc = status_query_providers(conn, cmd, cfg, st);
    if (rc == 0)
        rc = status_query_errors(conn, cmd, st);
    if (rc != 0) {
        json_decref(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* ---- render ----------------------------------------------------------------------------- */

static void status_render_counts(FILE *out, const json_t *st)
{
    const json_t *v;
    fprintf(out, "schema version:   %d\n",
            (int)json_integer_value(json_object_get(st, "schema_version")));
    fprintf(out, "refreshable:      %" JSON_INTEGER_FORMAT "\n",
            json_integer_value(json_object_get(st, "refreshable")));
    char lead[32];
    ctl_db_human_duration(lead, sizeof(lead), json_real_value(json_object_get(st, "lead_time_s")));
    fprintf(out, "due now:          %" JSON_INTEGER_FORMAT " (expiring within the %s lead time)\n",
            json_integer_value(json_object_get(st, "due")), lead);
    fprintf(out, "in flight:        %" JSON_INTEGER_FORMAT " (claimed by a running daemon)\n",
            json_integer_value(json_object_get(st, "leased")));
    json_int_t rotating = json_integer_value(json_object_get(st, "rotate_keys_leased"));
    if (rotating > 0)
        fprintf(out,
                "re-encrypted:     %" JSON_INTEGER_FORMAT
                " (held 10s by `oauth-refreshctl rotate-keys`, not a refresh)\n",
                rotating);
    fprintf(out, "failing:          %" JSON_INTEGER_FORMAT "\n",
            json_integer_value(json_object_get(st, "failing")));
    fprintf(out, "revoked:          %" JSON_INTEGER_FORMAT "\n",
            json_integer_value(json_object_get(st, "revoked")));
    v = json_object_get(st, "next_due_at");
    if (json_is_string(v)) {
        double in = json_real_value(json_object_get(st, "next_due_in_s"));
        char d[32];
        ctl_db_human_duration(d, sizeof(d), in);
        fprintf(out, "next due:         %s (%s %s)\n", json_string_value(v),
                in <= 0 ? "overdue by" : "in", d);
    } else {
        fprintf(out, "next due:         none\n");
    }
    v = json_object_get(st, "unconfigured");
    if (json_is_array(v) && json_array_size(v) > 0) {
        fprintf(out, "unconfigured:    ");
        size_t i;
        json_t *p;
        json_array_foreach(v, i, p)
        {
            fprintf(out, " %s", json_string_value(p));
        }
        fprintf(out, " (accounts present, no [provider.*] section: left alone)\n");
    }
    const json_t *errs = json_object_get(st, "last_errors");
    if (json_object_size(errs) == 0) {
        fprintf(out, "last errors:      none\n");
        return;
    }
    fprintf(out, "last errors:\n");
    const char *prov;
    json_t *list;
    json_object_foreach((json_t *)errs, prov, list)
    {
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
            fprintf(out, "  %-10s account %-10" JSON_INTEGER_FORMAT " %s  %s%s\n", prov,
                    json_integer_value(json_object_get(e, "account_id")),
                    json_string_value(json_object_get(e, "at")),
                    json_string_value(json_object_get(e, "error")),
                    json_is_true(json_object_get(e, "revoked")) ? " (revoked)" : "");
        }
    }
}

void ctl_status_render(FILE *out, const json_t *st)
{
    status_render_counts(out, st);
    ctl_census_render(out, st);
}

/* ---- the command ------------------------------------------------------------------------ */

/* Prints st as the one line of --json. Returns 0 or an exit code. */
static int status_print_json(const char *cmd, const json_t *st)
{
    char *s = json_dumps(st, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s == NULL) {
        fprintf(stderr, PROG " %s: out of memory\n", cmd);
        return EXIT_WORK_FAILED;
    }
    printf("%s\n", s);
    free(s);
    return 0;
}

int ctl_status(const struct ctl_ctx *ctx, int argc, char **argv)
{
    const char *cmd = "status";
    struct ctl_db_args a;
    struct ctl_db_conf conf;
    int rc;
    if (!ctl_db_begin(ctx, cmd, argc, argv, true, &a, &conf, &rc))
        return rc;
    int64_t lead_ms = conf.cfg != NULL ? conf.cfg->lead_time_ms : DEFAULT_LEAD_MS;
    PGconn *conn = ctl_db_connect(cmd, conf.conninfo);
    if (conn == NULL) {
        ctl_db_conf_free(&conf);
        return EXIT_UNAVAILABLE;
    }
    json_t *st = NULL;
    char err[ERRBUF_LEN];

    int version = ctl_db_schema_ready(conn, cmd);
    if (version < 0) {
        rc = -version;
        goto out;
    }
    if ((rc = ctl_status_query(conn, cmd, conf.cfg, lead_ms, version, &st)) != 0)
        goto out;
    if (a.keys) {
        if (conf.cfg == NULL) {
            fprintf(stderr, PROG " %s: --keys needs the key list of a configuration (-c FILE)\n",
                    cmd);
            rc = EXIT_USAGE;
            goto out;
        }
        if (ctl_census_count(conn, conf.cfg->keys, st, err, sizeof(err)) < 0) {
            fprintf(stderr, PROG " %s: cannot count the tokens per key: %s\n", cmd, err);
            rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
            goto out;
        }
    }
    if (a.json) {
        rc = status_print_json(cmd, st);
    } else {
        ctl_status_render(stdout, st);
        rc = 0;
    }
out:
    json_decref(st);
    PQfinish(conn);
    ctl_db_conf_free(&conf);
    return rc;
}
