/*
 * ctl_refresh.c — `oauth-refreshctl refresh ID...` (SPEC §2, §5): asks a
 * running daemon to refresh those accounts now, one NOTIFY
 * oauth_refresh_request each; the daemon does the rest. It owns the command
 * line and what it prints; the start (options, conninfo, connection) is
 * ctl_common.c's.
 *
 * It never touches a token and never prints a conninfo.
 */
#include <stdio.h>

#include <libpq-fe.h>

#include "ctl.h"
#include "ctl_common.h"

#define PROG "oauth-refreshctl"

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
