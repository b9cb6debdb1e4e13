/*
 * ctl_migrate.c — oauth-refreshctl migrate: creates the oauth_refreshd schema
 * or upgrades it in place, online (SPEC §5). It owns the order of the
 * upgrade and what it prints:
 *
 *   1. the DDL of sql/oauth-refreshd.sql (compiled in as schema_sql) in one
 *      short transaction under the SQL's own advisory lock, retried when it
 *      cannot take its lock on oauth_accounts within lock_timeout (it never
 *      queues the application's writes behind it for long);
 *   2. the backfill of account_state.provider in keyset batches by
 *      account_id, one short transaction each, under a lock_timeout (a batch
 *      that would wait is retried: the application's writes wait at most for
 *      one batch);
 *   3. the indexes of schema version 3 with CREATE INDEX CONCURRENTLY (an
 *      invalid one, left by an interrupted run, is dropped and built again);
 *   4. VACUUM (ANALYZE) of account_state when rows were rewritten, and the
 *      md5 of the SQL it applied in oauth_refreshd.meta: a run that finds that
 *      md5 and every index valid says so and changes nothing.
 *
 * Every step is idempotent and committed on its own, so an interrupted run is
 * resumed by the next. It must never print a conninfo or password (every
 * libpq message goes through db_redact), and never leave the DDL half applied.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "ctl.h"
#include "ctl_db.h"
#include "db.h"
#include "schema_check.h"
#include "schema_sql.h"

#define PROG                  "oauth-refreshctl"
#define MIGRATE_BATCH_DEFAULT 2000
#define MIGRATE_BATCH_MAX     1000000
#define MIGRATE_DDL_TRIES     30
#define MIGRATE_BATCH_TRIES   600

/* The indexes that step 3 builds (and the SQL builds in place on a small table). */
static const struct migrate_index {
    const char *name;
    const char *def; /* after "ON oauth_refreshd.account_state " */
} migrate_indexes[] = {
    {"account_state_claim_idx", "(provider, due_at) WHERE due_at IS NOT NULL"},
    {"account_state_unfilled_idx", "(due_at) WHERE provider IS NULL AND due_at IS NOT NULL"},
    {"account_state_revoked_changed_idx", "(account_id) WHERE revoked_token_changed"},
};
#define MIGRATE_N_INDEXES (sizeof(migrate_indexes) / sizeof(migrate_indexes[0]))

struct migrate_opts {
    long batch;
};

static double migrate_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void migrate_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static bool migrate_lock_timeout(const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return state != NULL && strcmp(state, "55P03") == 0; /* lock_not_available */
}

/*
 * Whether the DDL lost a race for a lock and is worth trying again. Besides a
 * lock_timeout, a deadlock: ADD COLUMN needs account_state exclusively, and a
 * daemon's claim that already reads the table asks for its row lock mode in
 * the same statement, behind the DDL's queued request.
 */
static bool migrate_ddl_retryable(const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return migrate_lock_timeout(r) ||
           (state != NULL && strcmp(state, "40P01") == 0); /* deadlock_detected */
}

/*
 * Takes --batch-size N (or --batch-size=N) out of argv, so the options every
 * database subcommand shares are parsed by ctl_db_begin as for the others.
 * Returns 0, or EXIT_USAGE after printing why. *out_argv is malloc'ed (the
 * caller frees it); its strings are argv's.
 */
static int migrate_take_options(int argc, char **argv, struct migrate_opts *o, char ***out_argv,
                                int *out_argc)
{
    char **nv = calloc((size_t)argc + 1, sizeof(*nv));
    if (nv == NULL) {
        fprintf(stderr, PROG " migrate: out of memory\n");
        return EXIT_WORK_FAILED;
    }
    int n = 0;
    o->batch = MIGRATE_BATCH_DEFAULT;
    for (int i = 0; i < argc; i++) {
        const char *val = NULL;
        if (i > 0 && strcmp(argv[i], "--") == 0) {
            while (i < argc)
                nv[n++] = argv[i++];
            break;
        }
        if (i > 0 && strcmp(argv[i], "--batch-size") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, PROG " migrate: --batch-size needs a value\n");
                free(nv);
                return EXIT_USAGE;
            }
            val = argv[++i];
        } else if (i > 0 && strncmp(argv[i], "--batch-size=", 13) == 0) {
            val = argv[i] + 13;
        } else {
            nv[n++] = argv[i];
            continue;
        }
        char *end = NULL;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno != 0 || end == val || *end != '\0' || v < 1 || v > MIGRATE_BATCH_MAX) {
            fprintf(stderr,
                    PROG " migrate: --batch-size takes a number of rows from 1 to %d, not "
                         "'%s'\n",
                    MIGRATE_BATCH_MAX, val);
            free(nv);
            return EXIT_USAGE;
        }
        o->batch = v;
    }
    nv[n] = NULL;
    *out_argv = nv;
    *out_argc = n;
    return 0;
}

/* Runs a query expected to return rows; prints why and returns NULL on failure. */
static PGresult *migrate_query(PGconn *conn, const char *sql, int nparams,
                               const char *const *params, const char *what)
{
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctl_db_print_error("migrate", what,
                           r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
        PQclear(r);
        return NULL;
    }
    return r;
}

/*
 * Which of migrate_indexes exist and are valid: bit i of *valid, of *present.
 * Returns 0 or -1 (printed).
 */
static int migrate_index_state(PGconn *conn, unsigned *present, unsigned *valid)
{
    PGresult *r = migrate_query(conn,
                                "SELECT c.relname, i.indisvalid FROM pg_catalog.pg_index i"
                                "  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
                                "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                                " WHERE n.nspname = 'oauth_refreshd'",
                                0, NULL, "cannot read the indexes");
    if (r == NULL)
        return -1;
    *present = *valid = 0;
    for (int row = 0; row < PQntuples(r); row++)
        for (size_t i = 0; i < MIGRATE_N_INDEXES; i++)
            if (strcmp(PQgetvalue(r, row, 0), migrate_indexes[i].name) == 0) {
                *present |= 1u << i;
                if (strcmp(PQgetvalue(r, row, 1), "t") == 0)
                    *valid |= 1u << i;
            }
    PQclear(r);
    return 0;
}

/* Whether the last complete run applied this very SQL (and the indexes are all there). */
static int migrate_up_to_date(PGconn *conn, int version, bool *yes)
{
    *yes = false;
    if (version != OAUTH_SCHEMA_VERSION)
        return 0;
    const char *params[] = {schema_sql};
    PGresult *r = migrate_query(conn,
                                "SELECT (to_jsonb(m) ->> 'sql_md5') IS NOT DISTINCT FROM md5($1)"
                                "  FROM oauth_refreshd.meta m WHERE m.singleton",
                                1, params, "cannot read the schema state");
    if (r == NULL)
        return -1;
    bool same = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    unsigned present, valid;
    if (migrate_index_state(conn, &present, &valid) < 0)
        return -1;
    *yes = same && valid == (1u << MIGRATE_N_INDEXES) - 1;
    return 0;
}

/* Step 0: an index left invalid by an interrupted CREATE INDEX CONCURRENTLY goes. */
static int migrate_drop_invalid(PGconn *conn)
{
    unsigned present, valid;
    if (migrate_index_state(conn, &present, &valid) < 0)
        return -1;
    for (size_t i = 0; i < MIGRATE_N_INDEXES; i++) {
        if (!(present & (1u << i)) || (valid & (1u << i)))
            continue;
        char sql[256];
        snprintf(sql, sizeof sql, "DROP INDEX CONCURRENTLY IF EXISTS oauth_refreshd.%s",
                 migrate_indexes[i].name);
        printf("index %s: invalid (an interrupted build), dropping it to build it again\n",
               migrate_indexes[i].name);
        fflush(stdout);
        if (ctl_db_exec(conn, "migrate", sql, "cannot drop an invalid index") < 0)
            return -1;
    }
    return 0;
}

/*
 * Step 1: the DDL in one transaction. oauth_refreshd.migrate_online tells the
 * SQL to leave the backfill and the indexes to the steps below. A lock that
 * cannot be had within lock_timeout (500 ms: a transaction holds the table)
 * rolls the attempt back and tries again after a pause, rather than making
 * every write of the application queue behind it for longer.
 */
static int migrate_ddl(PGconn *conn)
{
    for (int attempt = 1;; attempt++) {
        if (ctl_db_exec(conn, "migrate", "BEGIN", "cannot begin the migration") < 0 ||
            ctl_db_exec(conn, "migrate",
                        "SET LOCAL client_min_messages = warning; SET LOCAL lock_timeout = '500ms';"
                        " SET LOCAL oauth_refreshd.migrate_online = 'on'",
                        "cannot begin the migration") < 0)
            return -1;
        PGresult *r = PQexec(conn, schema_sql);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            PQclear(r);
            return ctl_db_exec(conn, "migrate", "COMMIT",
                               "migration failed at commit, nothing was changed");
        }
        bool retry = migrate_ddl_retryable(r) && attempt < MIGRATE_DDL_TRIES;
        if (!retry)
            ctl_db_print_error("migrate", "migration failed, nothing was changed",
                               r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
        PQclear(r);
        PQclear(PQexec(conn, "ROLLBACK"));
        if (!retry)
            return -1;
        fprintf(stderr,
                PROG " migrate: the tables are busy (a transaction holds them); trying again "
                     "(%d of %d)\n",
                attempt, MIGRATE_DDL_TRIES);
        migrate_sleep_ms(500);
    }
}

static void migrate_progress(bool tty, long long done, long long total, double started,
                             double *last_print, bool final)
{
    double now = migrate_now();
    if (!final && now - *last_print < (tty ? 0.2 : 2.0))
        return;
    *last_print = now;
    double secs = now - started;
    double rate = secs > 0 ? (double)done / secs : 0;
    int pct = total > 0 ? (int)(done * 100 / total) : 100;
    if (pct > 100)
        pct = 100;
    if (tty)
        printf("\rbackfill: %lld / %lld rows (%d %%), %.0f rows/s   %s", done, total, pct, rate,
               final ? "\n" : "");
    else
        printf("backfill: %lld / %lld rows (%d %%), %.0f rows/s\n", done, total, pct, rate);
    fflush(stdout);
}

/*
 * Step 2: account_state.provider for the rows from before version 3, in
 * keyset batches by account_id. Each batch is its own short transaction; its
 * row locks make an application write to one of those rows wait until it
 * commits, and the batch itself waits at most lock_timeout for a row another
 * transaction holds (then it is tried again). Rows the trigger has meanwhile
 * written carry their provider already and are left alone (provider IS NULL is
 * re-checked on the locked row). Returns the rows written, or -1.
 */
static long long migrate_backfill(PGconn *conn, long batch)
{
    PGresult *r = migrate_query(conn,
                                "SELECT count(*), COALESCE(min(account_id) - 1, 0)"
                                "  FROM oauth_refreshd.account_state WHERE provider IS NULL",
                                0, NULL, "cannot count the rows to backfill");
    if (r == NULL)
        return -1;
    long long total = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    char after[32];
    snprintf(after, sizeof after, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    if (total == 0)
        return 0;
    bool tty = isatty(fileno(stdout)) == 1;
    printf("backfill: %lld rows of account_state get their provider (batches of %ld)\n", total,
           batch);
    fflush(stdout);
    if (ctl_db_exec(conn, "migrate", "SET lock_timeout = '100ms'", "cannot set lock_timeout") < 0)
        return -1;

    char limit[32];
    snprintf(limit, sizeof limit, "%ld", batch);
    long long done = 0;
    double started = migrate_now(), last_print = started;
    int tries = 0;
    for (;;) {
        const char *params[] = {after, limit};
        r = PQexecParams(conn,
                         "WITH b AS (SELECT s.account_id FROM oauth_refreshd.account_state s"
                         "            WHERE s.account_id > $1::bigint ORDER BY s.account_id"
                         "            LIMIT $2::integer),"
                         " u AS (UPDATE oauth_refreshd.account_state s"
                         "          SET provider = a.provider::text"
                         "         FROM b JOIN public.oauth_accounts a ON a.id = b.account_id"
                         "        WHERE s.account_id = b.account_id AND s.provider IS NULL"
                         "       RETURNING 1)"
                         " SELECT (SELECT max(b.account_id) FROM b), (SELECT count(*) FROM u)",
                         2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            if (migrate_lock_timeout(r) && ++tries < MIGRATE_BATCH_TRIES) {
                PQclear(r);
                migrate_sleep_ms(50);
                continue;
            }
            if (tty)
                printf("\n");
            ctl_db_print_error("migrate", "backfill failed (run migrate again to resume)",
                               r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
            PQclear(r);
            return -1;
        }
        tries = 0;
        if (PQgetisnull(r, 0, 0)) {
            PQclear(r);
            break;
        }
        snprintf(after, sizeof after, "%s", PQgetvalue(r, 0, 0));
        done += strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        PQclear(r);
        migrate_progress(tty, done, total, started, &last_print, false);
    }
    migrate_progress(tty, done, total, started, &last_print, true);
    if (ctl_db_exec(conn, "migrate", "RESET lock_timeout", "cannot reset lock_timeout") < 0)
        return -1;
    return done;
}

/* Step 3: the indexes that are missing, built without blocking writes. Returns how many, or -1. */
static int migrate_indexes_build(PGconn *conn)
{
    unsigned present, valid;
    if (migrate_index_state(conn, &present, &valid) < 0)
        return -1;
    int built = 0;
    for (size_t i = 0; i < MIGRATE_N_INDEXES; i++) {
        if (valid & (1u << i))
            continue;
        char sql[512];
        snprintf(sql, sizeof sql,
                 "CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON oauth_refreshd.account_state %s",
                 migrate_indexes[i].name, migrate_indexes[i].def);
        double t0 = migrate_now();
        printf("index %s: building (concurrently)\n", migrate_indexes[i].name);
        fflush(stdout);
        if (ctl_db_exec(conn, "migrate", sql,
                        "cannot build an index (run migrate again to resume)") < 0)
            return -1;
        printf("index %s: built in %.1f s\n", migrate_indexes[i].name, migrate_now() - t0);
        fflush(stdout);
        built++;
    }
    return built;
}

/* Step 4: statistics for the new column and indexes, and this SQL's md5. */
static int migrate_finish(PGconn *conn, bool rewrote)
{
    if (rewrote) {
        double t0 = migrate_now();
        if (ctl_db_exec(conn, "migrate", "VACUUM (ANALYZE) oauth_refreshd.account_state",
                        "cannot vacuum oauth_refreshd.account_state") < 0)
            return -1;
        printf("vacuum (analyze) oauth_refreshd.account_state: %.1f s\n", migrate_now() - t0);
    }
    const char *params[] = {schema_sql};
    PGresult *r =
        PQexecParams(conn, "UPDATE oauth_refreshd.meta SET sql_md5 = md5($1) WHERE singleton", 1,
                     NULL, params, NULL, NULL, 0);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc < 0)
        ctl_db_print_error("migrate", "cannot record the migration",
                           r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
    PQclear(r);
    return rc;
}

/*
 * One migrate at a time: the steps after the DDL run outside its advisory
 * lock. A second run waits for the first and then finds the work done. It
 * polls with pg_try_advisory_lock instead of waiting in pg_advisory_lock:
 * CREATE INDEX CONCURRENTLY in the first run waits for every open transaction
 * to end, the waiting lock call's included, which would be a deadlock.
 */
static int migrate_lock(PGconn *conn)
{
    for (int i = 0;; i++) {
        PGresult *r = migrate_query(
            conn, "SELECT pg_try_advisory_lock(hashtext('oauth_refreshd.migrate.online'))", 0, NULL,
            "cannot take the migration lock");
        if (r == NULL)
            return -1;
        bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        if (got)
            return 0;
        if (i == 0) {
            printf("waiting for another oauth-refreshctl migrate to finish\n");
            fflush(stdout);
        }
        migrate_sleep_ms(200);
    }
}

int ctl_migrate(const struct ctl_ctx *ctx, int argc, char **argv)
{
    const char *cmd = "migrate";
    struct ctl_db_args a;
    struct ctl_db_conf conf;
    struct migrate_opts o;
    char **av = NULL;
    int ac = 0;
    int rc = migrate_take_options(argc, argv, &o, &av, &ac);
    if (rc != 0)
        return rc;
    bool begun = ctl_db_begin(ctx, cmd, ac, av, false, &a, &conf, &rc);
    free(av);
    if (!begun)
        return rc;
    PGconn *conn = ctl_db_connect(cmd, conf.conninfo);
    ctl_db_conf_free(&conf);
    if (conn == NULL)
        return EXIT_UNAVAILABLE;

    char err[ERRBUF_LEN];
    if (migrate_lock(conn) < 0) {
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
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
    bool current = false;
    if (migrate_up_to_date(conn, before, &current) < 0) {
        rc = ctl_db_fail_code(conn, EXIT_WORK_FAILED);
        goto out;
    }
    if (current) {
        printf("oauth_refreshd schema is up to date: nothing to do\n");
        printf("oauth_refreshd schema is at version %d\n", before);
        rc = 0;
        goto out;
    }

    double t0 = migrate_now();
    long long backfilled;
    int built;
    if (migrate_drop_invalid(conn) < 0 || migrate_ddl(conn) < 0 ||
        (backfilled = migrate_backfill(conn, o.batch)) < 0 ||
        (built = migrate_indexes_build(conn)) < 0 ||
        migrate_finish(conn, backfilled > 0 || (before > 0 && built > 0)) < 0) {
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
    else
        printf("oauth_refreshd schema: brought up to date\n");
    printf("migrate took %.1f s\n", migrate_now() - t0);
    printf("oauth_refreshd schema is at version %d\n", after);
    rc = 0;
out:
    PQfinish(conn);
    return rc;
}
