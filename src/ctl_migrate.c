/*
 * ctl_migrate.c — oauth-refreshctl migrate: creates the oauth_refreshd schema
 * or upgrades it in place (SPEC §5). It owns the order of the upgrade and what
 * it prints; the SQL objects themselves are sql/oauth-refreshd.sql (compiled
 * in as schema_sql), applied in one transaction under the SQL's own advisory
 * lock.
 *
 * It must never print a conninfo or password (every libpq message goes
 * through db_redact), and never leave the DDL half applied.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "ctl.h"
#include "ctl_db.h"
#include "db.h"
#include "schema_check.h"
#include "schema_sql.h"

#define PROG "oauth-refreshctl"

int ctl_migrate(const struct ctl_ctx *ctx, int argc, char **argv)
{
    const char *cmd = "migrate";
    struct ctl_db_args a;
    struct ctl_db_conf conf;
    int rc;
    if (!ctl_db_begin(ctx, cmd, argc, argv, false, &a, &conf, &rc))
        return rc;
    PGconn *conn = ctl_db_connect(cmd, conf.conninfo);
    ctl_db_conf_free(&conf);
    if (conn == NULL)
        return EXIT_UNAVAILABLE;

    char err[ERRBUF_LEN];
    PGresult *r = PQexec(conn, SCHEMA_CHECK_SQL);
    int before = schema_installed_version(r, err, sizeof(err));
    PQclear(r);
    if (before < 0) {
        fprintf(stderr, PROG " %s: %s\n", cmd, err);
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    if (before > OAUTH_SCHEMA_VERSION) {
        fprintf(stderr,
                PROG " %s: the oauth_refreshd schema is at version %d, newer than this "
                     "oauth-refreshctl knows (version %d); refusing to touch it: use the "
                     "oauth-refreshctl of the release that installed version %d\n",
                cmd, before, OAUTH_SCHEMA_VERSION, before);
        rc = EXIT_WORK_FAILED;
        goto out;
    }

    /* One transaction: all of it or nothing (the SQL takes an advisory lock itself). */
    if (ctl_db_exec(conn, cmd, "BEGIN", "cannot begin the migration") < 0 ||
        ctl_db_exec(conn, cmd, "SET LOCAL client_min_messages = warning",
                    "cannot begin the migration") < 0) {
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    if (ctl_db_exec(conn, cmd, schema_sql, "migration failed, nothing was changed") < 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    if (ctl_db_exec(conn, cmd, "COMMIT", "migration failed at commit, nothing was changed") < 0) {
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    r = PQexec(conn, SCHEMA_CHECK_SQL);
    int after = schema_installed_version(r, err, sizeof(err));
    PQclear(r);
    if (after <= 0) {
        fprintf(stderr, PROG " %s: migrated, but cannot read the version back: %s\n", cmd,
                after < 0 ? err : "no version row");
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    if (before == 0)
        printf("created the oauth_refreshd schema\n");
    else if (before < after)
        printf("upgraded the oauth_refreshd schema from version %d\n", before);
    printf("oauth_refreshd schema is at version %d\n", after);
    rc = 0;
out:
    PQfinish(conn);
    return rc;
}
