/*
 * schema_check.c — reads SCHEMA_CHECK_SQL's result and words the verdict on the
 * database's oauth_refreshd schema (missing, older, current, newer) for the
 * daemon's startup and for oauth-refreshctl. It owns only that judgement and
 * its messages; it never runs SQL, and never echoes a conninfo (libpq result
 * messages carry no connection parameters).
 */
#include "schema_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "schema_sql.h"

int schema_installed_version(const PGresult *res, char *err, size_t errlen)
{
    if (errlen > 0)
        err[0] = '\0';
    if (res == NULL) {
        snprintf(err, errlen,
                 "cannot read the oauth_refreshd schema version: the database "
                 "connection was lost");
        return -1;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK) {
        if (PQntuples(res) < 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0))
            return 0;
        char *end = NULL;
        long v = strtol(PQgetvalue(res, 0, 0), &end, 10);
        if (end == NULL || *end != '\0' || v <= 0 || v > 1000000) {
            snprintf(err, errlen,
                     "cannot read the oauth_refreshd schema version: "
                     "oauth_refreshd.meta holds an invalid version");
            return -1;
        }
        return (int)v;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state != NULL && (strcmp(state, "3F000") == 0 || strcmp(state, "42P01") == 0))
        return 0; /* invalid_schema_name, undefined_table */
    char msg[ERRBUF_LEN];
    db_redact(msg, sizeof(msg), PQresultErrorMessage(res));
    snprintf(err, errlen, "cannot read the oauth_refreshd schema version: %s",
             msg[0] != '\0' ? msg : PQresStatus(st));
    return -1;
}

int schema_check_result(const PGresult *res, char *err, size_t errlen)
{
    int v = schema_installed_version(res, err, errlen);
    if (v < 0)
        return -1;
    if (v == 0) {
        snprintf(err, errlen,
                 "the database has no oauth_refreshd schema (version %d is needed): run "
                 "`oauth-refreshctl migrate` against this database, then start oauth-refreshd "
                 "again",
                 OAUTH_SCHEMA_VERSION);
        return -1;
    }
    if (v < OAUTH_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "the oauth_refreshd schema is at version %d but this oauth-refreshd needs "
                 "version %d: run `oauth-refreshctl migrate` to upgrade it, then start "
                 "oauth-refreshd again",
                 v, OAUTH_SCHEMA_VERSION);
        return -1;
    }
    if (v > OAUTH_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "the oauth_refreshd schema is at version %d, newer than this oauth-refreshd "
                 "(version %d); running anyway, but upgrade oauth-refreshd to match",
                 v, OAUTH_SCHEMA_VERSION);
        return 1;
    }
    if (errlen > 0)
        err[0] = '\0';
    return 0;
}
