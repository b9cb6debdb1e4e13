/*
 * ctl_db.c — the database subcommands of oauth-refreshctl: status and refresh
 * (SPEC §2, §5), and what they share with migrate (ctl_migrate.c). It owns
 * their command lines, where the conninfo comes from (--conninfo/-d, else the
 * configuration's [database]), one synchronous libpq connection per run, the
 * wording of what they print, and their exit codes (64 bad arguments, 69
 * database unreachable or schema missing, 78 bad configuration, 1 failed).
 *
 * It must never print a conninfo or password (every libpq message goes through
 * db_redact), and never run a query on status that scans oauth_accounts: its counts read the
 * partial indexes of oauth_refreshd.account_state, so it stays fast on a
 * million accounts.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "config.h"
#include "ctl.h"
#include "ctl_db.h"
#include "ctl_rotate.h"
#include "db.h"
#include "schema_check.h"
#include "schema_sql.h"

#define PROG                       "oauth-refreshctl"
#define STATUS_ERRORS_PER_PROVIDER 5
#define DEFAULT_LEAD_MS            (5 * 60 * 1000)

static void ctl_db_warn_cb(void *ud, const char *msg)
{
    fprintf(stderr, PROG " %s: warning: %s\n", (const char *)ud, msg);
}

static void ctl_db_usage(FILE *out, const char *cmd)
{
    if (strcmp(cmd, "migrate") == 0)
        fprintf(out, "Usage: " PROG " [-c FILE] migrate [--batch-size ROWS] [--conninfo CONNINFO]\n"
                     "  --batch-size ROWS        rows per backfill transaction (default 2000)\n");
    else if (strcmp(cmd, "status") == 0)
        fprintf(out, "Usage: " PROG " [-c FILE] status [--json] [--keys] [--conninfo CONNINFO]\n"
                     "  --keys                   also count the stored tokens each key opens\n"
                     "                           (decrypts every token: slower on big tables)\n");
    else
        fprintf(out, "Usage: " PROG " [-c FILE] refresh [--conninfo CONNINFO] ID...\n");
    fprintf(out, "  -d, --conninfo CONNINFO  libpq conninfo or URI (\"\" = PG* environment);\n"
                 "                           default: [database] of the configuration\n");
}

void ctl_warn_argv_conninfo(const char *cmd, const char *conninfo)
{
    /* libpq's own parser: key=value, URI userinfo and ?password= alike. */
    bool has_password = false;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (perr != NULL)
        PQfreemem(perr); /* may quote the conninfo: never printed */
    if (opts != NULL) {
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
            if (strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0')
                has_password = true;
        PQconninfoFree(opts);
    } else {
        /* Unparsable: libpq will refuse it, but argv already shows it. */
        char clean[ERRBUF_LEN];
        db_redact(clean, sizeof clean, conninfo);
        has_password = strstr(clean, "[redacted]") != NULL;
    }
    if (has_password)
        fprintf(stderr,
                PROG " %s: warning: the conninfo given with --conninfo holds a password, which is "
                     "visible to every user of this machine in the process list (ps) while this "
                     "command runs; put the password in a password file (PGPASSFILE, ~/.pgpass) "
                     "or the conninfo in the configuration's conninfo_file instead\n",
                cmd);
}

/* Returns 0, or an exit code (after printing why). */
static int ctl_db_parse(int argc, char **argv, bool allow_json, struct ctl_db_args *a)
{
    static const struct option opts[] = {
        {"conninfo", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},
        {"keys", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = argv[0];
    memset(a, 0, sizeof(*a));
    int c;
    opterr = 0; /* our own wording: "-5" is more likely a bad id than an option */
    while ((c = getopt_long(argc, argv, "d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            a->conninfo = optarg;
            break;
        case 'k':
            if (!allow_json) {
                fprintf(stderr, PROG " %s: --keys is not an option of %s\n", cmd, cmd);
                return EXIT_USAGE;
            }
            a->keys = true;
            break;
        case 'j':
            if (!allow_json) {
                fprintf(stderr, PROG " %s: --json is not an option of %s\n", cmd, cmd);
                return EXIT_USAGE;
            }
            a->json = true;
            break;
        case 'h':
            ctl_db_usage(stdout, cmd);
            return -1;
        default:
            if (optopt == 'd' ||
                (optind > 0 && optind <= argc && strncmp(argv[optind - 1], "--conninfo", 10) == 0))
                fprintf(stderr, PROG " %s: --conninfo needs a value\n", cmd);
            else
                fprintf(stderr, PROG " %s: unknown option '%s'\n", cmd, argv[optind - 1]);
            ctl_db_usage(stderr, cmd);
            return EXIT_USAGE;
        }
    }
    a->first = optind;
    if (a->conninfo != NULL)
        ctl_warn_argv_conninfo(cmd, a->conninfo);
    return 0;
}

int ctl_db_conf_load(const struct ctl_ctx *ctx, const char *cmd, const struct ctl_db_args *a,
                     struct ctl_db_conf *out)
{
    out->cfg = NULL;
    out->conninfo = a->conninfo;
    if (a->conninfo != NULL && !ctx->config_path_given)
        return 0;
    struct config_errors *errs = calloc(1, sizeof(*errs));
    if (errs == NULL) {
        fprintf(stderr, PROG " %s: out of memory\n", cmd);
        return EXIT_WORK_FAILED;
    }
    out->cfg = config_load(ctx->config_path, ctl_db_warn_cb, (void *)cmd, errs);
    if (out->cfg == NULL) {
        for (size_t i = 0; i < errs->count && i < CONFIG_MAX_ERRORS; i++)
            fprintf(stderr, PROG " %s: %s\n", cmd, errs->msg[i]);
        if (errs->count == 0)
            fprintf(stderr, PROG " %s: cannot load configuration %s\n", cmd, ctx->config_path);
        if (a->conninfo == NULL)
            fprintf(stderr, PROG " %s: (or give the database with --conninfo)\n", cmd);
        free(errs);
        return EXIT_CONFIG;
    }
    free(errs);
    if (out->conninfo == NULL)
        out->conninfo = out->cfg->conninfo != NULL ? out->cfg->conninfo : "";
    return 0;
}

void ctl_db_conf_free(struct ctl_db_conf *c)
{
    if (c->cfg != NULL)
        config_unref(c->cfg);
    c->cfg = NULL;
}

static void ctl_db_quiet_notice(void *arg, const char *message)
{
}

void ctl_db_print_error(const char *cmd, const char *what, const char *libpq_msg)
{
    char clean[ERRBUF_LEN];
    db_redact(clean, sizeof(clean), libpq_msg);
    fprintf(stderr, PROG " %s: %s%s%s\n", cmd, what, clean[0] ? ": " : "", clean);
}

PGconn *ctl_db_connect(const char *cmd, const char *conninfo)
{
    /* connect_timeout first: a value inside the conninfo (expanded later) wins. */
    static const char *const keys[] = {"connect_timeout", "dbname", "fallback_application_name",
                                       NULL};
    const char *vals[] = {"10", conninfo, "oauth-refreshctl", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        fprintf(stderr, PROG " %s: cannot connect to the database: out of memory\n", cmd);
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        ctl_db_print_error(cmd, "cannot connect to the database", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, ctl_db_quiet_notice, NULL);
    return conn;
}

/* Runs a command that returns no rows; prints the error and returns -1 on failure. */
int ctl_db_exec(PGconn *conn, const char *cmd, const char *sql, const char *what)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        ctl_db_print_error(cmd, what, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(r);
    return rc;
}

int ctl_db_fail_code(PGconn *conn, int other)
{
    return PQstatus(conn) == CONNECTION_BAD ? EXIT_UNAVAILABLE : other;
}

/* ---- shared by the subcommands ------------------------------------------------------- */

/*
 * The common start of a subcommand that takes options only: parses them,
 * refuses positional arguments and loads what it connects with. Returns true
 * with conf loaded, or false with the exit code to return in *exit_code.
 */
bool ctl_db_begin(const struct ctl_ctx *ctx, const char *cmd, int argc, char **argv, bool json_ok,
                  struct ctl_db_args *a, struct ctl_db_conf *conf, int *exit_code)
{
    int rc = ctl_db_parse(argc, argv, json_ok, a);
    if (rc != 0) {
        *exit_code = rc < 0 ? 0 : rc; /* < 0: --help was printed */
        return false;
    }
    if (a->first < argc) {
        fprintf(stderr, PROG " %s: unexpected argument '%s'\n", cmd, argv[a->first]);
        *exit_code = EXIT_USAGE;
        return false;
    }
    if ((rc = ctl_db_conf_load(ctx, cmd, a, conf)) != 0) {
        *exit_code = rc;
        return false;
    }
    return true;
}

/* ---- status ----------------------------------------------------------------------------- */

int ctl_db_schema_ready(PGconn *conn, const char *cmd)
{
    char err[ERRBUF_LEN];
    PGresult *r = PQexec(conn, SCHEMA_CHECK_SQL);
    int version = schema_installed_version(r, err, sizeof(err));
    PQclear(r);
    if (version > 0 && version >= OAUTH_SCHEMA_VERSION)
        return version;
    if (version == 0)
        fprintf(stderr,
                PROG " %s: the database has no oauth_refreshd schema: run `oauth-refreshctl "
                     "migrate` first\n",
                cmd);
    else if (version > 0)
        fprintf(stderr,
                PROG " %s: the oauth_refreshd schema is at version %d, this build needs %d: "
                     "run `oauth-refreshctl migrate` first\n",
                cmd, version, OAUTH_SCHEMA_VERSION);
    else
        fprintf(stderr, PROG " %s: %s\n", cmd, err);
    return -(version < 0 ? ctl_db_fail_code(conn, EXIT_WORK_FAILED) : EXIT_UNAVAILABLE);
}

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

static json_int_t ctl_db_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : (json_int_t)strtoll(PQgetvalue(r, row, col), NULL, 10);
}

void ctl_db_human_duration(char *buf, size_t len, double s)
{
    double a = s < 0 ? -s : s;
    long v = (long)(a + 0.5);
    if (v < 60)
        snprintf(buf, len, "%lds", v);
    else if (v < 3600)
        snprintf(buf, len, "%ldm%02lds", v / 60, v % 60);
    else if (v < 86400)
        snprintf(buf, len, "%ldh%02ldm", v / 3600, (v % 3600) / 60);
    else
        snprintf(buf, len, "%ldd%02ldh", v / 86400, (v % 86400) / 3600);
}

/* The first column of every row, as a JSON array of strings. */
static json_t *ctl_db_str_array(const PGresult *r)
{
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(arr, json_string(PQgetvalue(r, i, 0)));
    return arr;
}

/* A text[] literal ("{\"a\",\"b\"}") of the names; malloc()ed, NULL on OOM. */
static char *ctl_db_pg_array(const json_t *names)
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

static bool ctl_db_provider_configured(const struct config *cfg, const char *name)
{
    int id = provider_id_from_name(name);
    return id >= 0 && cfg->providers[id] != NULL;
}

static void ctl_db_print_status(const json_t *st)
{
    const json_t *v;
    printf("schema version:   %d\n",
           (int)json_integer_value(json_object_get(st, "schema_version")));
    printf("refreshable:      %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(st, "refreshable")));
    char lead[32];
    ctl_db_human_duration(lead, sizeof(lead), json_real_value(json_object_get(st, "lead_time_s")));
    printf("due now:          %" JSON_INTEGER_FORMAT " (expiring within the %s lead time)\n",
           json_integer_value(json_object_get(st, "due")), lead);
    printf("in flight:        %" JSON_INTEGER_FORMAT " (claimed by a running daemon)\n",
           json_integer_value(json_object_get(st, "leased")));
    json_int_t rotating = json_integer_value(json_object_get(st, "rotate_keys_leased"));
    if (rotating > 0)
        printf("re-encrypted:     %" JSON_INTEGER_FORMAT
               " (held 10s by `oauth-refreshctl rotate-keys`, not a refresh)\n",
               rotating);
    printf("failing:          %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(st, "failing")));
    printf("revoked:          %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(st, "revoked")));
    v = json_object_get(st, "next_due_at");
    if (json_is_string(v)) {
        double in = json_real_value(json_object_get(st, "next_due_in_s"));
        char d[32];
        ctl_db_human_duration(d, sizeof(d), in);
        printf("next due:         %s (%s %s)\n", json_string_value(v),
               in <= 0 ? "overdue by" : "in", d);
    } else {
        printf("next due:         none\n");
    }
    v = json_object_get(st, "unconfigured");
    if (json_is_array(v) && json_array_size(v) > 0) {
        printf("unconfigured:    ");
        size_t i;
        json_t *p;
        json_array_foreach(v, i, p)
        {
            printf(" %s", json_string_value(p));
        }
        printf(" (accounts present, no [provider.*] section: left alone)\n");
    }
    const json_t *errs = json_object_get(st, "last_errors");
    if (json_object_size(errs) == 0) {
        printf("last errors:      none\n");
        return;
    }
    printf("last errors:\n");
    const char *prov;
    json_t *list;
    json_object_foreach((json_t *)errs, prov, list)
    {
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
            printf("  %-10s account %-10" JSON_INTEGER_FORMAT " %s  %s%s\n", prov,
                   json_integer_value(json_object_get(e, "account_id")),
                   json_string_value(json_object_get(e, "at")),
                   json_string_value(json_object_get(e, "error")),
                   json_is_true(json_object_get(e, "revoked")) ? " (revoked)" : "");
        }
    }
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
    PGresult *r = NULL;
    char *provs = NULL;
    char err[ERRBUF_LEN];

    int version = ctl_db_schema_ready(conn, cmd);
    if (version < 0) {
        rc = -version;
        goto out;
    }

    char lead[32];
    snprintf(lead, sizeof(lead), "%" PRId64 " milliseconds", lead_ms);
    const char *p1[] = {lead};
    r = PQexecParams(conn, status_counts_sql, 1, NULL, p1, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        ctl_db_print_error(cmd, "cannot read the counts", PQresultErrorMessage(r));
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    st = json_object();
    json_object_set_new(st, "schema_version", json_integer(version));
    json_object_set_new(st, "refreshable", json_integer(ctl_db_int(r, 0, 0)));
    json_object_set_new(st, "leased", json_integer(ctl_db_int(r, 0, 1)));
    json_object_set_new(st, "rotate_keys_leased", json_integer(ctl_db_int(r, 0, 9)));
    json_object_set_new(st, "due", json_integer(ctl_db_int(r, 0, 2)));
    json_object_set_new(st, "failing", json_integer(ctl_db_int(r, 0, 3)));
    json_object_set_new(st, "revoked", json_integer(ctl_db_int(r, 0, 4)));
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

    r = PQexec(conn, status_providers_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_print_error(cmd, "cannot list the providers", PQresultErrorMessage(r));
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    json_t *present = ctl_db_str_array(r);
    PQclear(r);
    r = NULL;
    json_object_set_new(st, "providers", present);
    if (conf.cfg != NULL) {
        json_t *unconf = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(present, i, v)
        {
            if (!ctl_db_provider_configured(conf.cfg, json_string_value(v)))
                json_array_append(unconf, v);
        }
        json_object_set_new(st, "unconfigured", unconf);
    } else {
        json_object_set_new(st, "unconfigured", json_null()); /* no configuration to compare */
    }

    provs = ctl_db_pg_array(present);
    if (provs == NULL) {
        fprintf(stderr, PROG " %s: out of memory\n", cmd);
        rc = EXIT_WORK_FAILED;
        goto out;
    }
    char per[16];
    snprintf(per, sizeof(per), "%d", STATUS_ERRORS_PER_PROVIDER);
    const char *p2[] = {provs, per};
    r = PQexecParams(conn, status_errors_sql, 2, NULL, p2, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_print_error(cmd, "cannot read the last errors", PQresultErrorMessage(r));
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
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
                                              ctl_db_int(r, i, 1), "error", PQgetvalue(r, i, 2),
                                              "at", PQgetvalue(r, i, 3), "revoked",
                                              strcmp(PQgetvalue(r, i, 4), "t") == 0, "attempts",
                                              ctl_db_int(r, i, 5)));
    }
    json_object_set_new(st, "last_errors", errors);
    if (a.keys) {
        if (conf.cfg == NULL) {
            fprintf(stderr, PROG " %s: --keys needs the key list of a configuration (-c FILE)\n",
                    cmd);
            rc = EXIT_USAGE;
            goto out;
        }
        if (ctl_rotate_census(conn, conf.cfg->keys, st, err, sizeof(err)) < 0) {
            fprintf(stderr, PROG " %s: cannot count the tokens per key: %s\n", cmd, err);
            rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
            goto out;
        }
    }

    if (a.json) {
        char *s = json_dumps(st, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (s == NULL) {
            fprintf(stderr, PROG " %s: out of memory\n", cmd);
            rc = EXIT_WORK_FAILED;
            goto out;
        }
        printf("%s\n", s);
        free(s);
    } else {
        ctl_db_print_status(st);
        ctl_rotate_print_census(st);
    }
    rc = 0;
out:
    PQclear(r);
    free(provs);
    json_decref(st);
    PQfinish(conn);
    ctl_db_conf_free(&conf);
    return rc;
}

/* ---- refresh ------------------------------------------------------------------------------ */

bool ctl_db_valid_id(const char *s)
{
    if (s[0] < '1' || s[0] > '9')
        return false;
    size_t n = strspn(s, "0123456789");
    if (s[n] != '\0' || n > 19)
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' && v <= (unsigned long long)INT64_MAX;
}

int ctl_refresh(const struct ctl_ctx *ctx, int argc, char **argv)
{
    const char *cmd = "refresh";
    struct ctl_db_args a;
    int rc = ctl_db_parse(argc, argv, false, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (a.first >= argc) {
        fprintf(stderr, PROG " %s: give at least one account id\n", cmd);
        ctl_db_usage(stderr, cmd);
        return EXIT_USAGE;
    }
    bool bad = false;
    for (int i = a.first; i < argc; i++) {
        if (!ctl_db_valid_id(argv[i])) {
            fprintf(stderr, PROG " %s: '%s' is not an account id (a positive integer)\n", cmd,
                    argv[i]);
            bad = true;
        }
    }
    if (bad)
        return EXIT_USAGE;
    struct ctl_db_conf conf;
    if ((rc = ctl_db_conf_load(ctx, cmd, &a, &conf)) != 0)
        return rc;
    PGconn *conn = ctl_db_connect(cmd, conf.conninfo);
    ctl_db_conf_free(&conf);
    if (conn == NULL)
        return EXIT_UNAVAILABLE;
    rc = 0;
    for (int i = a.first; i < argc; i++) {
        const char *params[] = {argv[i]};
        PGresult *r = PQexecParams(conn, "SELECT pg_notify('oauth_refresh_request', $1)", 1, NULL,
                                   params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            ctl_db_print_error(cmd, "cannot send the request", PQresultErrorMessage(r));
            PQclear(r);
            rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
            break;
        }
        PQclear(r);
        printf("requested a refresh of account %s (NOTIFY oauth_refresh_request, '%s')\n", argv[i],
               argv[i]);
    }
    PQfinish(conn);
    return rc;
}
