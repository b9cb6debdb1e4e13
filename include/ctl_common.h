/*
 * ctl_common.h — what oauth-refreshctl's subcommands share (private to
 * oauth-refreshctl; ctl_common.c owns it): the configuration loaded with its
 * errors and warnings printed one way, the key list of --keys-file, the
 * warning for a password on the command line, the command line of the
 * database subcommands, where their conninfo comes from (--conninfo, else the
 * configuration's [database]), one synchronous libpq connection, the schema
 * check before reading, the wording of libpq errors (never a conninfo or
 * password: db_redact) and the exit code of a failure.
 */
#ifndef OAUTH_CTL_COMMON_H
#define OAUTH_CTL_COMMON_H

#include <stdio.h>

#include <libpq-fe.h>

#include "ctl.h"
#include "keys.h"

struct config;

/* Prints "oauth-refreshctl CMD: warning: MSG" on stderr; ud is the command name. */
void ctl_warn_cb(void *ud, const char *msg);

/*
 * Loads ctx->config_path, its warnings printed as they come and, when it is
 * refused, every error ("oauth-refreshctl CMD: file:line: ..."). Returns 0
 * with an owned reference in *cfg (config_unref), else EXIT_CONFIG, or
 * EXIT_WORK_FAILED when out of memory, with *cfg NULL.
 */
int ctl_config_load(const struct ctl_ctx *ctx, const char *cmd, struct config **cfg) WUR;

/* The key list of a --keys-file: an owned reference, or NULL after printing why. */
struct keyring *ctl_keys_file_load(const char *cmd, const char *keys_file) WUR;

/* ---- the database subcommands (migrate, status, refresh, show) ---------- */

struct ctl_db_args {
    const char *conninfo; /* NULL: from the configuration */
    bool json;
    bool keys; /* status --keys: count tokens per key (decrypts every token) */
    int first; /* index of the first operand in argv */
};

struct ctl_db_conf {
    struct config *cfg; /* NULL when none was loaded; a reference, see ctl_db_conf_free */
    const char *conninfo;
};

/* The usage of migrate, status or refresh (cmd), on out. */
void ctl_db_usage(FILE *out, const char *cmd);

/*
 * Parses the options of migrate, status or refresh (argv[0]); json_ok allows
 * --json and --keys. Returns 0, -1 after --help was printed, or an exit code
 * (after printing why).
 */
int ctl_db_parse(int argc, char **argv, bool json_ok, struct ctl_db_args *a);

/*
 * The conninfo and (when available) the configuration. The configuration is
 * loaded unless --conninfo was given without -c. Returns 0 or an exit code
 * (after printing why).
 */
int ctl_db_conf_load(const struct ctl_ctx *ctx, const char *cmd, const struct ctl_db_args *a,
                     struct ctl_db_conf *out);
void ctl_db_conf_free(struct ctl_db_conf *c);

/*
 * The common start of a subcommand that takes options only: parses them,
 * refuses positional arguments and loads what it connects with. Returns true
 * with conf loaded, or false with the exit code to return in *exit_code.
 */
bool ctl_db_begin(const struct ctl_ctx *ctx, const char *cmd, int argc, char **argv, bool json_ok,
                  struct ctl_db_args *a, struct ctl_db_conf *conf, int *exit_code);

/* Runs a command that returns no rows; prints the error and returns -1 on failure. */
int ctl_db_exec(PGconn *conn, const char *cmd, const char *sql, const char *what);

/* A connection, or NULL after printing why (the caller exits 69). */
PGconn *ctl_db_connect(const char *cmd, const char *conninfo);
/* The same, seen by the server as application_name (when the conninfo names none). */
PGconn *ctl_db_connect_as(const char *cmd, const char *conninfo, const char *application_name);

/* Prints "PROG cmd: what: <libpq message, redacted>" on stderr. */
void ctl_db_print_error(const char *cmd, const char *what, const char *libpq_msg);

/* The failure exit code: 69 when the connection itself went away, else `other`. */
int ctl_db_fail_code(PGconn *conn, int other);

/*
 * Checks that the oauth_refreshd schema is installed at this build's version.
 * Returns the version, or -(exit code) after printing why (69 when missing or
 * older: run migrate).
 */
int ctl_db_schema_ready(PGconn *conn, const char *cmd);

/* A positive decimal bigint with nothing around it. */
bool ctl_db_valid_id(const char *s);

/* "12s", "4m05s", "3h12m", "2d04h" for |s| seconds. */
void ctl_db_human_duration(char *buf, size_t len, double s);

#endif
