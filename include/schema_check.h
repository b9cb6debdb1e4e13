/*
 * schema_check.h — is the database's oauth_refreshd schema one this build can
 * use? The daemon runs SCHEMA_CHECK_SQL once per start (on its own connection,
 * sync or async) and hands the result to schema_check_result(), which decides
 * and words the operator's message; oauth-refreshctl uses the same pair. It
 * never connects or runs SQL itself.
 */
#ifndef OAUTH_SCHEMA_CHECK_H
#define OAUTH_SCHEMA_CHECK_H

#include <libpq-fe.h>

#include "common.h"

/*
 * One row, one column: the installed schema version. Fails with SQLSTATE
 * 3F000/42P01 (undefined schema/table) or returns no row when there is no
 * schema. Text parameters: none.
 */
#define SCHEMA_CHECK_SQL "SELECT schema_version FROM oauth_refreshd.meta WHERE singleton"

/*
 * The installed version from SCHEMA_CHECK_SQL's result: > 0, 0 when the schema
 * is missing, -1 when the check itself failed (res NULL: connection lost, or
 * another error such as permission denied; err then says which).
 */
int schema_installed_version(const PGresult *res, char *err, size_t errlen) WUR;

/*
 * Decides whether the daemon may run on this schema:
 *   0  the version this build needs (err = "");
 *   1  a newer version (a later release migrated it; additive, so usable):
 *      err holds a warning worth logging;
 *  -1  missing, older, or not checkable: err holds the exact message for the
 *      operator (it names `oauth-refreshctl migrate` when that is the fix);
 *      the daemon exits 69.
 */
int schema_check_result(const PGresult *res, char *err, size_t errlen) WUR;

#endif
