/*
 * ctl_rotate.c — `oauth-refreshctl rotate-keys` (the key census of `status
 * --keys`, which tells when it is needed, is ctl_census.c's). After an
 * operator puts a new primary key in front of the key list, rotate-keys
 * re-encrypts every token column (access_token, refresh_token, id_token) of
 * every account under it: batches in id order (keyset pagination), each
 * written by oauth_refreshd.rotate_batch() with a compare-and-swap on the
 * three old ciphertexts, so a concurrent refresh or application write always
 * wins; rows that lose are looked at again at the
 * end. Progress is stored per primary key (rotation_progress), so an
 * interrupted run resumes. It owns the command line, the progress display
 * (a bar on a terminal, plain periodic lines otherwise), the final report and
 * the exit code (0 done, 1 undecryptable rows, unfinished or interrupted).
 *
 * It must never print or log a token, a plaintext or a key (undecryptable
 * rows are reported by id only), never keep a plaintext longer than one
 * re-encryption (secret_clear right after), and never write a row without
 * the compare-and-swap.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "ctl_census.h"
#include "ctl_common.h"
#include "schema_check.h"
#include "secret.h"
#include "stored_token.h"
#include "strbuf.h"

#define PROG "oauth-refreshctl"
#define CMD  "rotate-keys"
/* The plaintext of key_check tokens: identifies a primary key without storing anything of it. */
#define KEY_CHECK_TEXT   "oauth-refreshd rotate-keys: primary key check, version 1"
#define DEFAULT_BATCH    500
#define MAX_BATCH        100000
#define LISTED_IDS       50
#define SECOND_LOOKS     6 /* rounds for rows that lost the compare-and-swap */
#define PLAIN_INTERVAL_S 2.0
#define BAR_INTERVAL_S   0.1

static const char rows_by_id_sql[] =
    "SELECT id, access_token, refresh_token, id_token FROM public.oauth_accounts"
    " WHERE id = ANY ($1::bigint[]) ORDER BY id";
static const char batch_sql[] =
    "SELECT oauth_refreshd.rotate_batch($1, $2::bigint, $3::bigint[], $4::text[], $5::text[],"
    " $6::text[], $7::text[], $8::text[], $9::text[])";
static const char batch_signature[] =
    "oauth_refreshd.rotate_batch(text,bigint,bigint[],text[],text[],text[],text[],text[],text[])";

/* The one piece of process-wide state: set by SIGINT/SIGTERM, read between batches. */
static volatile sig_atomic_t rot_interrupted;

static void rot_signal_cb(int sig)
{
    rot_interrupted = 1;
}

struct id_list {
    int64_t *v;
    size_t n, cap;
};

static int id_list_add(struct id_list *l, int64_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        int64_t *p = realloc(l->v, cap * sizeof *p);
        if (p == NULL)
            return -1;
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = id;
    return 0;
}

static void id_list_free(struct id_list *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* "{1,2,3}" into l (appending). Returns -1 on a malformed literal or OOM. */
static int id_list_parse(struct id_list *l, const char *lit)
{
    const char *p = lit;
    if (*p++ != '{')
        return -1;
    while (*p && *p != '}') {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p || id_list_add(l, v) < 0)
            return -1;
        p = *end == ',' ? end + 1 : end;
    }
    return *p == '}' ? 0 : -1;
}

static void id_list_pgarray(const struct id_list *l, struct strbuf *sb)
{
    pgarray_begin(sb);
    for (size_t i = 0; i < l->n; i++)
        pgarray_int64(sb, l->v[i]);
    pgarray_end(sb);
}

struct rot_opts {
    const char *conninfo;  /* NULL: the configuration's */
    const char *keys_file; /* NULL: the configuration's */
    unsigned batch;
    double rate; /* rows per second; 0 = unlimited */
    bool restart, dry_run;
};

struct rot_counts {
    uint64_t scanned, rotated, current, skipped, undecryptable;
};

struct rotation {
    PGconn *conn;
    const struct keyring *kr;
    struct rot_opts o;
    char *key_check; /* our rotation_progress row; NULL in a dry run */
    int64_t last_id;
    struct rot_counts first; /* every row as first seen in this run */
    struct rot_counts again; /* the rows that lost the compare-and-swap, looked at again */
    struct id_list bad;      /* undecryptable ids */
    struct id_list pending;  /* still not written after the second looks */
    uint64_t total;          /* rows after the resume point, counted at the start */
    double t0, last_print;
    bool tty, printed_bar;
};

/* ---- small helpers ----------------------------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !rot_interrupted)
        ;
}

/* Prints what failed with the libpq message of res, else of conn (redacted). */
static void rot_print_db_error(const char *what, PGconn *conn, const PGresult *res)
{
    ctl_db_print_error(CMD, what, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
}

enum row_verdict { ROW_CURRENT, ROW_ROTATE, ROW_BAD, ROW_OOM };

/*
 * Decrypts each non-empty column with the key list; a column under an older key
 * is encrypted again under the primary into neu[c] (malloc()ed). NULL in neu[c]
 * means "keep the stored ciphertext". The plaintext is wiped at once.
 */
static enum row_verdict row_reencrypt(const struct keyring *kr, const char *const old[3],
                                      char *neu[3])
{
    bool any = false;
    for (int c = 0; c < 3; c++)
        neu[c] = NULL;
    for (int c = 0; c < 3; c++) {
        if (old[c] == NULL || old[c][0] == '\0')
            continue;
        struct secret plain = {0};
        size_t idx = 0;
        char e[ERRBUF_LEN];
        if (stored_token_decrypt(kr, old[c], strlen(old[c]), &plain, &idx, e, sizeof e) < 0) {
            for (int k = 0; k < 3; k++) {
                free(neu[k]);
                neu[k] = NULL;
            }
            return ROW_BAD;
        }
        if (idx == 0) {
            secret_clear(&plain);
            continue;
        }
        int rc = stored_token_encrypt(kr, stored_token_form(old[c], strlen(old[c])),
                                      (const uint8_t *)plain.data, plain.len, &neu[c]);
        secret_clear(&plain);
        if (rc < 0) {
            for (int k = 0; k < 3; k++) {
                free(neu[k]);
                neu[k] = NULL;
            }
            return ROW_OOM;
        }
        any = true;
    }
    return any ? ROW_ROTATE : ROW_CURRENT;
}

/* ---- progress ------------------------------------------------------------------------ */

static void progress(struct rotation *r, bool final)
{
    double now = now_mono();
    double interval = r->tty ? BAR_INTERVAL_S : PLAIN_INTERVAL_S;
    if (!final && now - r->last_print < interval)
        return;
    if (final && !r->tty)
        return;
    r->last_print = now;
    double el = now - r->t0;
    double rate = el > 0 ? (double)r->first.scanned / el : 0;
    uint64_t total = r->total > r->first.scanned ? r->total : r->first.scanned;
    double frac = total ? (double)r->first.scanned / (double)total : 1.0;
    const struct rot_counts *c = &r->first;
    if (r->tty) {
        char bar[31];
        int filled = (int)(frac * 30 + 0.5);
        for (int i = 0; i < 30; i++)
            bar[i] = i < filled ? '#' : '-';
        bar[30] = '\0';
        char eta[32] = "";
        if (rate > 0 && total > c->scanned)
            snprintf(eta, sizeof eta, ", ETA %.0fs", (double)(total - c->scanned) / rate);
        fprintf(stderr,
                "\r[%s] %3.0f%% %" PRIu64 "/%" PRIu64 " rows: %" PRIu64 " rotated, %" PRIu64
                " current, %" PRIu64 " skipped, %" PRIu64 " undecryptable; %.0f rows/s%s\033[K",
                bar, frac * 100, c->scanned, total, c->rotated, c->current, c->skipped,
                c->undecryptable, rate, eta);
        if (final)
            fputc('\n', stderr);
        r->printed_bar = !final;
    } else {
        fprintf(stderr,
                PROG " " CMD ": %" PRIu64 "/%" PRIu64 " rows (%.0f%%): %" PRIu64
                     " rotated, %" PRIu64 " already current, %" PRIu64 " skipped, %" PRIu64
                     " undecryptable; %.0f rows/s; last id %" PRId64 "\n",
                c->scanned, total, frac * 100, c->rotated, c->current, c->skipped, c->undecryptable,
                rate, r->last_id);
    }
    fflush(stderr);
}

/* ---- one batch ------------------------------------------------------------------------ */

struct batch {
    struct strbuf ids, col_old[3], col_new[3];
    struct id_list sent;
};

static void batch_init(struct batch *b)
{
    strbuf_init(&b->ids);
    pgarray_begin(&b->ids);
    for (int c = 0; c < 3; c++) {
        strbuf_init(&b->col_old[c]);
        strbuf_init(&b->col_new[c]);
        pgarray_begin(&b->col_old[c]);
        pgarray_begin(&b->col_new[c]);
    }
    memset(&b->sent, 0, sizeof b->sent);
}

static void batch_free(struct batch *b)
{
    strbuf_free(&b->ids);
    for (int c = 0; c < 3; c++) {
        strbuf_free(&b->col_old[c]);
        strbuf_free(&b->col_new[c]);
    }
    id_list_free(&b->sent);
}

static bool batch_oom(const struct batch *b)
{
    bool oom = b->ids.oom;
    for (int c = 0; c < 3; c++)
        oom = oom || b->col_old[c].oom || b->col_new[c].oom;
    return oom;
}

/*
 * Classifies the rows of res (id, access, refresh, id token) into counts and,
 * unless a dry run, writes the ones to rotate with rotate_batch. With
 * progress_key, the same statement advances this rotation's progress to
 * last_id (and remembers the rows not written as pending). written_out, when
 * not NULL, receives the ids not written (second looks). Returns 0 or an exit code.
 */
static int rot_process(struct rotation *r, PGresult *res, struct rot_counts *cnt,
                       const char *progress_key, int64_t last_id, struct id_list *unwritten)
{
    struct batch b;
    batch_init(&b);
    int rc = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        const char *old[3];
        for (int c = 0; c < 3; c++)
            old[c] = PQgetisnull(res, i, c + 1) ? NULL : PQgetvalue(res, i, c + 1);
        char *neu[3];
        cnt->scanned++;
        switch (row_reencrypt(r->kr, old, neu)) {
        case ROW_CURRENT:
            cnt->current++;
            break;
        case ROW_BAD:
            cnt->undecryptable++;
            if (id_list_add(&r->bad, id) < 0)
                rc = EXIT_WORK_FAILED;
            break;
        case ROW_OOM:
            fprintf(stderr, PROG " " CMD ": account %" PRId64 ": cannot encrypt (out of memory)\n",
                    id);
            rc = EXIT_WORK_FAILED;
            break;
        case ROW_ROTATE:
            pgarray_int64(&b.ids, id);
            for (int c = 0; c < 3; c++) {
                pgarray_text(&b.col_old[c], old[c]);
                pgarray_text(&b.col_new[c], neu[c] ? neu[c] : old[c]);
                free(neu[c]); /* ciphertext, not a secret */
            }
            if (id_list_add(&b.sent, id) < 0)
                rc = EXIT_WORK_FAILED;
            break;
        }
        if (rc)
            break;
    }
    pgarray_end(&b.ids);
    for (int c = 0; c < 3; c++) {
        pgarray_end(&b.col_old[c]);
        pgarray_end(&b.col_new[c]);
    }
    if (rc == 0 && batch_oom(&b)) {
        fprintf(stderr, PROG " " CMD ": out of memory\n");
        rc = EXIT_WORK_FAILED;
    }
    if (rc != 0 || r->o.dry_run || (b.sent.n == 0 && progress_key == NULL)) {
        if (rc == 0 && r->o.dry_run)
            cnt->rotated += b.sent.n; /* would be rotated */
        batch_free(&b);
        return rc;
    }

    char last[32];
    snprintf(last, sizeof last, "%" PRId64, last_id);
    const char *params[9] = {progress_key,      progress_key ? last : NULL, b.ids.data,
                             b.col_old[0].data, b.col_old[1].data,          b.col_old[2].data,
                             b.col_new[0].data, b.col_new[1].data,          b.col_new[2].data};
    PGresult *w = PQexecParams(r->conn, batch_sql, 9, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(w) != PGRES_TUPLES_OK) {
        rot_print_db_error("writing a batch failed (nothing of it was written)", r->conn, w);
        PQclear(w);
        batch_free(&b);
        return ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
    }
    /* Both lists are in id order: walk them together. */
    size_t nd = (size_t)PQntuples(w);
    int64_t *done = calloc(nd ? nd : 1, sizeof *done);
    if (done == NULL) {
        PQclear(w);
        batch_free(&b);
        return EXIT_WORK_FAILED;
    }
    for (size_t i = 0; i < nd; i++)
        done[i] = strtoll(PQgetvalue(w, (int)i, 0), NULL, 10);
    PQclear(w);
    size_t written = 0;
    for (size_t i = 0; i < b.sent.n; i++) {
        bool hit = false;
        for (size_t k = 0; k < nd; k++)
            if (done[k] == b.sent.v[i]) {
                hit = true;
                break;
            }
        if (hit)
            written++;
        else if (unwritten != NULL && id_list_add(unwritten, b.sent.v[i]) < 0)
            rc = EXIT_WORK_FAILED;
    }
    free(done);
    cnt->rotated += written;
    cnt->skipped += b.sent.n - written;
    batch_free(&b);
    return rc;
}

/* ---- the progress row ----------------------------------------------------------------- */

/* Finds (or creates) this primary key's rotation_progress row. Returns 0 or an exit code. */
static int rot_progress_open(struct rotation *r)
{
    PGresult *res = PQexec(r->conn, "SELECT key_check, last_id, finished_at IS NOT NULL,"
                                    " oauth_refreshd.utc_text(finished_at),"
                                    " oauth_refreshd.utc_text(started_at)"
                                    " FROM oauth_refreshd.rotation_progress");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rot_print_db_error("cannot read the rotation progress", r->conn, res);
        PQclear(res);
        return ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
    }
    int mine = -1;
    for (int i = 0; i < PQntuples(res) && mine < 0; i++) {
        struct secret plain = {0};
        size_t idx = 1;
        char e[ERRBUF_LEN];
        const char *kc = PQgetvalue(res, i, 0);
        if (keyring_decrypt(r->kr, kc, strlen(kc), &plain, &idx, e, sizeof e) == 0 && idx == 0 &&
            plain.len == strlen(KEY_CHECK_TEXT) &&
            memcmp(plain.data, KEY_CHECK_TEXT, plain.len) == 0)
            mine = i;
        secret_clear(&plain);
    }
    int rc = 0;
    if (mine >= 0) {
        r->key_check = strdup(PQgetvalue(res, mine, 0));
        bool finished = strcmp(PQgetvalue(res, mine, 2), "t") == 0;
        if (r->key_check == NULL) {
            rc = EXIT_WORK_FAILED;
        } else if (r->o.restart || finished) {
            if (finished)
                printf("the last pass under this primary key finished at %s; starting a new pass\n",
                       PQgetvalue(res, mine, 3));
            else
                printf("--restart: ignoring the progress saved at account id %s\n",
                       PQgetvalue(res, mine, 1));
            const char *p[] = {r->key_check};
            PGresult *u = PQexecParams(
                r->conn,
                "UPDATE oauth_refreshd.rotation_progress SET last_id = 0, pending = '{}',"
                " started_at = now(), updated_at = now(), finished_at = NULL WHERE key_check = $1",
                1, NULL, p, NULL, NULL, 0);
            if (PQresultStatus(u) != PGRES_COMMAND_OK) {
                rot_print_db_error("cannot reset the rotation progress", r->conn, u);
                rc = ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
            }
            PQclear(u);
        } else {
            r->last_id = strtoll(PQgetvalue(res, mine, 1), NULL, 10);
            if (r->last_id > 0)
                printf("resuming the pass started at %s after account id %" PRId64 "\n",
                       PQgetvalue(res, mine, 4), r->last_id);
        }
    }
    PQclear(res);
    if (mine >= 0 || rc != 0)
        return rc;

    if (keyring_encrypt(r->kr, (const uint8_t *)KEY_CHECK_TEXT, strlen(KEY_CHECK_TEXT),
                        &r->key_check) < 0) {
        fprintf(stderr, PROG " " CMD ": cannot encrypt the key check\n");
        return EXIT_WORK_FAILED;
    }
    const char *p[] = {r->key_check};
    res = PQexecParams(r->conn,
                       "INSERT INTO oauth_refreshd.rotation_progress (key_check) VALUES ($1)", 1,
                       NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rot_print_db_error("cannot record the rotation progress", r->conn, res);
        rc = ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
    }
    PQclear(res);
    return rc;
}

/* ---- the passes ------------------------------------------------------------------------- */

static int rot_main_pass(struct rotation *r)
{
    char after[32], limit[16];
    snprintf(limit, sizeof limit, "%u", r->o.batch);
    snprintf(after, sizeof after, "%" PRId64, r->last_id);
    const char *cp[] = {after};
    PGresult *res =
        PQexecParams(r->conn, "SELECT count(*) FROM public.oauth_accounts WHERE id > $1::bigint", 1,
                     NULL, cp, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rot_print_db_error("cannot count the accounts", r->conn, res);
        PQclear(res);
        return ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
    }
    r->total = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    while (!rot_interrupted) {
        snprintf(after, sizeof after, "%" PRId64, r->last_id);
        const char *params[] = {after, limit};
        res = PQexecParams(r->conn, ctl_census_rows_sql, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rot_print_db_error("cannot read accounts", r->conn, res);
            PQclear(res);
            return ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
        }
        int n = PQntuples(res);
        if (n == 0) {
            PQclear(res);
            break;
        }
        int64_t last = strtoll(PQgetvalue(res, n - 1, 0), NULL, 10);
        int rc = rot_process(r, res, &r->first, r->o.dry_run ? NULL : r->key_check, last, NULL);
        PQclear(res);
        if (rc != 0)
            return rc;
        r->last_id = last;
        progress(r, false);
        if (r->o.rate > 0) {
            double due = r->t0 + (double)r->first.scanned / r->o.rate;
            sleep_s(due - now_mono());
        }
    }
    return 0;
}

/* The rows that lost the compare-and-swap (saved as pending), looked at again. */
static int rot_second_looks(struct rotation *r)
{
    const char *p[] = {r->key_check};
    PGresult *res = PQexecParams(
        r->conn, "SELECT pending FROM oauth_refreshd.rotation_progress WHERE key_check = $1", 1,
        NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rot_print_db_error("cannot read the pending rows", r->conn, res);
        PQclear(res);
        return ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
    }
    struct id_list pending = {0};
    int rc = id_list_parse(&pending, PQgetvalue(res, 0, 0)) < 0 ? EXIT_WORK_FAILED : 0;
    PQclear(res);
    double delay = 0.25;
    for (int round = 0; rc == 0 && pending.n > 0 && round < SECOND_LOOKS && !rot_interrupted;
         round++) {
        if (round > 0) {
            sleep_s(delay); /* a refresh in flight releases its claim when it is written */
            delay *= 2;
        }
        struct strbuf ids;
        strbuf_init(&ids);
        id_list_pgarray(&pending, &ids);
        const char *q[] = {ids.data};
        res = ids.oom ? NULL : PQexecParams(r->conn, rows_by_id_sql, 1, NULL, q, NULL, NULL, 0);
        strbuf_free(&ids);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rot_print_db_error("cannot read the pending rows", r->conn, res);
            PQclear(res);
            rc = ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
            break;
        }
        struct id_list still = {0};
        uint64_t skipped_before = r->again.skipped;
        rc = rot_process(r, res, &r->again, NULL, 0, &still);
        PQclear(res);
        /* Only the last round's losers stay skipped; the others were counted again. */
        r->again.scanned -= r->again.skipped - skipped_before;
        r->again.skipped = skipped_before;
        id_list_free(&pending);
        pending = still;
    }
    r->again.skipped = pending.n;
    r->again.scanned += pending.n;

    if (rc == 0) {
        struct strbuf ids;
        strbuf_init(&ids);
        id_list_pgarray(&pending, &ids);
        const char *u[] = {r->key_check, ids.data};
        res = ids.oom
                  ? NULL
                  : PQexecParams(r->conn,
                                 "UPDATE oauth_refreshd.rotation_progress SET pending ="
                                 " $2::bigint[], updated_at = now(), finished_at = CASE"
                                 " WHEN cardinality($2::bigint[]) = 0 AND NOT $3::boolean"
                                 " THEN now() END WHERE key_check = $1",
                                 3, NULL, (const char *[]){u[0], u[1], rot_interrupted ? "t" : "f"},
                                 NULL, NULL, 0);
        strbuf_free(&ids);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            rot_print_db_error("cannot save the rotation progress", r->conn, res);
            rc = ctl_db_fail_code(r->conn, EXIT_WORK_FAILED);
        }
        PQclear(res);
    }
    r->pending = pending;
    return rc;
}

/* ---- report ------------------------------------------------------------------------------- */

static void print_ids(const char *what, const struct id_list *l)
{
    if (l->n == 0)
        return;
    printf("%s:", what);
    for (size_t i = 0; i < l->n && i < LISTED_IDS; i++)
        printf(" %" PRId64, l->v[i]);
    if (l->n > LISTED_IDS)
        printf(" ... and %zu more", l->n - LISTED_IDS);
    printf("\n");
}

static void rot_report(const struct rotation *r, bool interrupted)
{
    const struct rot_counts *f = &r->first, *a = &r->again;
    double el = now_mono() - r->t0;
    if (r->o.dry_run)
        printf("dry run: nothing was written; %" PRIu64 " rows read in %.1fs\n", f->scanned, el);
    else if (interrupted)
        printf("interrupted after account id %" PRId64 ": run rotate-keys again to resume; %" PRIu64
               " rows done in %.1fs\n",
               r->last_id, f->scanned, el);
    else
        printf("rotation pass finished: %" PRIu64 " rows in %.1fs\n", f->scanned, el);
    printf("  %-34s %" PRIu64 "\n", r->o.dry_run ? "to rotate:" : "rotated:", f->rotated);
    printf("  %-34s %" PRIu64 "\n", "already under the primary key:", f->current);
    if (!r->o.dry_run) {
        printf("  %-34s %" PRIu64 "\n", "skipped (changed meanwhile):", f->skipped);
        if (f->skipped > 0 || a->scanned > 0)
            printf("    looked at again: %" PRIu64 " rotated, %" PRIu64
                   " already under the primary key, %" PRIu64 " undecryptable, %" PRIu64
                   " still changing\n",
                   a->rotated, a->current, a->undecryptable, a->skipped);
    }
    printf("  %-34s %zu\n", "undecryptable:", r->bad.n);
    print_ids("undecryptable account ids (no key in the list opens a token column)", &r->bad);
    print_ids("account ids still changing (run rotate-keys again)", &r->pending);
    if (!interrupted && !r->o.dry_run && r->bad.n == 0 && r->pending.n == 0)
        printf("every token column is under the primary key now; check with `oauth-refreshctl "
               "status --keys` before removing an older key\n");
}

/* ---- command line --------------------------------------------------------------------------- */

static void rot_usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " [-c FILE] " CMD " [--batch-size N] [--restart] [--dry-run]\n"
            "                        [--rate ROWS_PER_S] [--conninfo CONNINFO] [--keys-file F]\n"
            "Re-encrypts every token column under the primary (first) key of the key list,\n"
            "online and resumable. Exit 0 when done, 1 when rows are undecryptable, still\n"
            "changing, or the run was interrupted.\n"
            "  -b, --batch-size N     rows per batch (default %d)\n"
            "      --restart          ignore the progress saved for this primary key\n"
            "  -n, --dry-run          read and count only; write nothing\n"
            "      --rate N           at most N rows per second (default: unlimited)\n"
            "  -d, --conninfo C       libpq conninfo (default: [database] of the configuration)\n"
            "      --keys-file F      key list file (default: [crypto] of the configuration)\n",
            DEFAULT_BATCH);
}

/* Returns 0, -1 (help printed) or an exit code. */
static int rot_parse(int argc, char **argv, struct rot_opts *o)
{
    enum { OPT_RESTART = 256, OPT_RATE, OPT_KEYS };
    static const struct option opts[] = {
        {"batch-size", required_argument, NULL, 'b'},
        {"restart", no_argument, NULL, OPT_RESTART},
        {"dry-run", no_argument, NULL, 'n'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"conninfo", required_argument, NULL, 'd'},
        {"keys-file", required_argument, NULL, OPT_KEYS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->batch = DEFAULT_BATCH;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "b:nd:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'b': {
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || v < 1 || v > MAX_BATCH || optarg[0] == '-') {
                fprintf(stderr, PROG " " CMD ": --batch-size must be 1..%d, not '%s'\n", MAX_BATCH,
                        optarg);
                return EXIT_USAGE;
            }
            o->batch = (unsigned)v;
            break;
        }
        case OPT_RATE:
            errno = 0;
            o->rate = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(o->rate > 0) || isinf(o->rate)) {
                fprintf(stderr, PROG " " CMD ": --rate must be a positive number, not '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_RESTART:
            o->restart = true;
            break;
        case 'n':
            o->dry_run = true;
            break;
        case 'd':
            o->conninfo = optarg;
            break;
        case OPT_KEYS:
            o->keys_file = optarg;
            break;
        case 'h':
            rot_usage(stdout);
            return -1;
        default:
            if (optopt != 0 && strchr("bd", optopt) != NULL)
                fprintf(stderr, PROG " " CMD ": option -%c needs a value\n", optopt);
            else
                fprintf(stderr, PROG " " CMD ": unknown option '%s'\n", argv[optind - 1]);
            rot_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG " " CMD ": unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    return 0;
}

/* The key list and conninfo. Returns 0 or an exit code; *cfg may stay NULL. */
static int rot_load(const struct ctl_ctx *ctx, const struct rot_opts *o, struct config **cfg,
                    struct keyring **kr, const char **conninfo)
{
    *cfg = NULL;
    *kr = NULL;
    *conninfo = o->conninfo;
    if (o->conninfo != NULL)
        ctl_warn_argv_conninfo(CMD, o->conninfo);
    bool need_config = o->conninfo == NULL || o->keys_file == NULL || ctx->config_path_given;
    if (need_config) {
        int rc = ctl_config_load(ctx, CMD, cfg);
        if (rc != 0)
            return rc;
        if (*conninfo == NULL)
            *conninfo = (*cfg)->conninfo ? (*cfg)->conninfo : "";
    }
    if (o->keys_file != NULL) {
        if ((*kr = ctl_keys_file_load(CMD, o->keys_file)) == NULL)
            return EXIT_CONFIG;
    } else {
        *kr = keyring_ref((*cfg)->keys);
    }
    return 0;
}

/* The schema must have rotate_batch (a migrate of this release). Returns 0 or an exit code. */
static int rot_check_schema(PGconn *conn)
{
    char err[ERRBUF_LEN];
    PGresult *res = PQexec(conn, SCHEMA_CHECK_SQL);
    int version = schema_installed_version(res, err, sizeof err);
    PQclear(res);
    if (version < 0) {
        fprintf(stderr, PROG " " CMD ": %s\n", err);
        return ctl_db_fail_code(conn, EXIT_WORK_FAILED);
    }
    const char *p[] = {batch_signature};
    res = version > 0 ? PQexecParams(conn, "SELECT to_regprocedure($1) IS NOT NULL", 1, NULL, p,
                                     NULL, NULL, 0)
                      : NULL;
    bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
              strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!ok) {
        fprintf(stderr, PROG " " CMD ": the database lacks the oauth_refreshd key rotation "
                             "objects: run `oauth-refreshctl migrate` first\n");
        return EXIT_UNAVAILABLE;
    }
    return 0;
}

int ctl_rotate_keys(const struct ctl_ctx *ctx, int argc, char **argv)
{
    struct rotation r;
    memset(&r, 0, sizeof r);
    int rc = rot_parse(argc, argv, &r.o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    struct config *cfg = NULL;
    struct keyring *kr = NULL;
    const char *conninfo = NULL;
    if ((rc = rot_load(ctx, &r.o, &cfg, &kr, &conninfo)) != 0) {
        keyring_unref(kr);
        if (cfg)
            config_unref(cfg);
        return rc;
    }
    r.kr = kr;
    r.conn = ctl_db_connect_as(CMD, conninfo, "oauth-refreshctl rotate-keys");
    if (r.conn == NULL) {
        rc = EXIT_UNAVAILABLE;
        goto out;
    }
    if ((rc = rot_check_schema(r.conn)) != 0)
        goto out;
    if (keyring_count(kr) < 2)
        printf("note: the key list holds one key; tokens under any other key cannot be "
               "rotated (they are reported as undecryptable)\n");
    if (!r.o.dry_run && (rc = rot_progress_open(&r)) != 0)
        goto out;
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = rot_signal_cb;
    sa.sa_flags = (int)SA_RESETHAND; /* a second ^C ends it at once (the batch rolls back) */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    r.tty = isatty(STDERR_FILENO);
    r.t0 = now_mono();
    r.last_print = r.t0;
    rc = rot_main_pass(&r);
    if (rc == 0 && !r.o.dry_run && !rot_interrupted)
        rc = rot_second_looks(&r);
    progress(&r, true);
    bool interrupted = rot_interrupted != 0;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (rc == 0) {
        rot_report(&r, interrupted);
        rc = (r.bad.n > 0 || r.pending.n > 0 || interrupted) ? EXIT_WORK_FAILED : 0;
    }
out:
    if (r.conn)
        PQfinish(r.conn);
    free(r.key_check);
    id_list_free(&r.bad);
    id_list_free(&r.pending);
    keyring_unref(kr);
    if (cfg)
        config_unref(cfg);
    return rc;
}
