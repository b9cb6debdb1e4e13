/*
 * ctl_db.h — what the database subcommands of oauth-refreshctl share (private
 * to oauth-refreshctl; ctl_db.c owns them): where the conninfo comes from
 * (--conninfo, else the configuration's [database]), one synchronous libpq
 * connection, the schema check before reading, the wording of libpq errors
 * (never a conninfo or password: db_redact) and the exit code of a failure.
 */
#ifndef OAUTH_CTL_DB_H
#define OAUTH_CTL_DB_H

#include <libpq-fe.h>

#include "ctl.h"

struct config;

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
