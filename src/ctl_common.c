/*
 * ctl_common.c — the start every oauth-refreshctl subcommand shares
 * (ctl_common.h): the configuration loaded and its errors printed one way
 * (before, three commands each wrote it out), the key list of --keys-file,
 * the database subcommands' command line and conninfo, one synchronous libpq
 * connection (connect_timeout 10 s, notices silenced), the schema check, the
 * wording of libpq errors and the exit codes of failures (64 bad arguments,
 * 69 database unreachable or schema missing, 78 bad configuration).
 *
 * It must never print a conninfo or password (every libpq message goes
 * through db_redact; libpq's parse errors, which may quote the conninfo, are
 * dropped) and never print a key.
 */
#include "ctl_common.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "schema_check.h"
#include "schema_sql.h"

#define PROG "oauth-refreshctl"

void ctl_warn_cb(void *ud, const char *msg)
{
    fprintf(stderr, PROG " %s: warning: %s\n", (const char *)ud, msg);
}

int ctl_config_load(const struct ctl_ctx *ctx, const char *cmd, struct config **cfg)
{
    *cfg = NULL;
    struct config_errors *errs = calloc(1, sizeof(*errs));
    if (errs == NULL) {
        fprintf(stderr, PROG " %s: out of memory\n", cmd);
        return EXIT_WORK_FAILED;
    }
    *cfg = config_load(ctx->config_path, ctl_warn_cb, (void *)cmd, errs);
    if (*cfg == NULL) {
        for (size_t i = 0; i < errs->count && i < CONFIG_MAX_ERRORS; i++)
            fprintf(stderr, PROG " %s: %s\n", cmd, errs->msg[i]);
        if (errs->count == 0)
            fprintf(stderr, PROG " %s: cannot load configuration %s\n", cmd, ctx->config_path);
    }
    free(errs);
    return *cfg != NULL ? 0 : EXIT_CONFIG;
}

struct keyring *ctl_keys_file_load(const char *cmd, const char *keys_file)
{
    char err[ERRBUF_LEN] = "";
    struct keyring *kr = keyring_load_file(keys_file, ctl_warn_cb, (void *)cmd, err, sizeof(err));
    if (kr == NULL)
        fprintf(stderr, PROG " %s: keys file %s: %s\n", cmd, keys_file, err);
    return kr;
}

/* ---- the database subcommands ------------------------------------------------------- */

void ctl_db_usage(FILE *out, const char *cmd)
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

int ctl_db_parse(int argc, char **argv, bool allow_json, struct ctl_db_args *a)
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
    int rc = ctl_config_load(ctx, cmd, &out->cfg);
    if (rc != 0) {
        if (rc == EXIT_CONFIG && a->conninfo == NULL)
            fprintf(stderr, PROG " %s: (or give the database with --conninfo)\n", cmd);
        return rc;
    }
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
    return ctl_db_connect_as(cmd, conninfo, "oauth-refreshctl");
}

PGconn *ctl_db_connect_as(const char *cmd, const char *conninfo, const char *application_name)
{
    /* connect_timeout first: a value inside the conninfo (expanded later) wins. */
    static const char *const keys[] = {"connect_timeout", "dbname", "fallback_application_name",
                                       NULL};
    const char *vals[] = {"10", conninfo, application_name, NULL};
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
