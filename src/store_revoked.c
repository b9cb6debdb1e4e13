/*
 * store_revoked.c — revoked accounts whose refresh token the application
 * wrote since the revocation. A revocation keeps a keyed fingerprint of the
 * refused token (never the token); a later write of the same token (a
 * re-save, new ciphertext) keeps the account revoked, a different token lifts
 * the revocation so the account is refreshed again. Looks are coalesced (one
 * within REVOKED_CHECK_DELAY_S, whatever the number of NOTIFYs) and read a
 * page at a time. It owns the look's timer and flags in struct store, and
 * nothing of the write batches.
 */
#include "store_internal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>

#include "log.h"
#include "secret.h"
#include "stored_token.h"
#include "timeutil.h"

/* The keyed fingerprint of a revoked refresh token (see revoked_token_tag in
 * sql/oauth-refreshd.sql): hex of keyring_tag() under this personalisation. */
static const char REVOKED_TAG_PERSONAL[KEYRING_TAG_PERSONAL_BYTES] = {
    'o', 'a', 'u', 't', 'h', 'r', 'd', '-', 'r', 'e', 'v', 't', 'o', 'k', '-', '1'};
#define REVOKED_CHECK_LIMIT "500"
/* Looks at revoked accounts' changes at most this often: every application
 * write notifies, and a burst of them needs one look, not one per write. */
#define REVOKED_CHECK_DELAY_S 0.1

/*
 * The keyed fingerprint of the refresh token inside ct (hex, NUL-terminated):
 * what store_revoked() keeps of a refused token, so that a later write of the
 * same token by the application can be told from a new one without keeping
 * the token. False when ct cannot be decrypted.
 */
bool store_revoked_tag_hex(const struct keyring *kr, const char *ct, char hex[REVOKED_TAG_HEX_LEN])
{
    struct secret plain = {0};
    uint8_t tag[KEYRING_TAG_BYTES];
    char err[ERRBUF_LEN];
    bool ok = kr && ct &&
              stored_token_decrypt(kr, ct, strlen(ct), &plain, NULL, err, sizeof err) == 0 &&
              keyring_tag(kr, REVOKED_TAG_PERSONAL, plain.data, plain.len, tag) == 0;
    secret_clear(&plain);
    if (ok)
        sodium_bin2hex(hex, REVOKED_TAG_HEX_LEN, tag, sizeof tag);
    return ok;
}

static bool revoked_token_readable(const struct keyring *kr, const char *ct)
{
    struct secret plain = {0};
    char err[ERRBUF_LEN];
    bool ok = kr && stored_token_decrypt(kr, ct, strlen(ct), &plain, NULL, err, sizeof err) == 0;
    secret_clear(&plain);
    return ok;
}

/* Whether the token inside ct is the one fingerprinted as tag_hex (any key of
 * the ring: a reload may have demoted the key the fingerprint was made with). */
static bool revoked_tag_matches(const struct keyring *kr, const char *ct, const char *tag_hex)
{
    uint8_t tag[KEYRING_TAG_BYTES];
    size_t n = 0;
    if (!kr || !ct || !tag_hex ||
        sodium_hex2bin(tag, sizeof tag, tag_hex, strlen(tag_hex), NULL, &n, NULL) != 0 ||
        n != sizeof tag)
        return false;
    struct secret plain = {0};
    char err[ERRBUF_LEN];
    bool same = stored_token_decrypt(kr, ct, strlen(ct), &plain, NULL, err, sizeof err) == 0 &&
                keyring_tag_verify(kr, REVOKED_TAG_PERSONAL, plain.data, plain.len, tag, NULL);
    secret_clear(&plain);
    return same;
}

/* A look ended: another one if asked for meanwhile; tell the owner. */
static void revcheck_finish(struct store *st, size_t lifted)
{
    if (st->revcheck_again)
        store_check_revoked(st);
    if (st->cb.revoked_checked)
        st->cb.revoked_checked(st->cb.ud, lifted);
}

static void revcheck_settled_cb(void *ud, PGresult *res)
{
    struct store *st = ud;
    st->revcheck_busy = false;
    if (!res) { /* looked at again after the reconnection; nothing reported at exit */
        st->revcheck_again = false;
        return;
    }
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) {
        char why[ERRBUF_LEN];
        log_err("store: recording the verdict on revoked accounts failed: %s",
                db_result_reason(why, sizeof why, res));
    }
    revcheck_finish(st, ok ? st->revcheck_lifted : 0);
}

static void revcheck_settle(struct store *st, PGresult *res);

static void revcheck_read_cb(void *ud, PGresult *res)
{
    struct store *st = ud;
    st->revcheck_busy = false;
    if (!res) { /* looked at again after the reconnection; nothing reported at exit */
        st->revcheck_again = false;
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char why[ERRBUF_LEN];
        log_err("store: reading revoked accounts' changes failed: %s",
                db_result_reason(why, sizeof why, res));
    } else
        revcheck_settle(st, res);
    if (!st->revcheck_busy)
        revcheck_finish(st, 0); /* nothing to record */
}

/*
 * For each row: the same refresh token as the refused one (a re-save: the
 * revocation stays, no request, no event) or a different one (lifted). A row
 * whose token this keyring cannot decrypt (a rotation to a key the daemon has
 * not been given yet) is left marked for a later look: it cannot be told from
 * the refused one. No token at all lifts it (nothing is refreshed anyway).
 * The verdicts go out in one statement.
 */
static void revcheck_settle(struct store *st, PGresult *res)
{
    int rows = PQntuples(res);
    struct strbuf ids = {0}, rts = {0}, lifts = {0};
    int settled = 0;
    size_t lifted = 0;
    pgarray_begin(&ids);
    pgarray_begin(&rts);
    pgarray_begin(&lifts);
    for (int i = 0; i < rows; i++) {
        int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        const char *rt = PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1);
        const char *tag = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
        struct log_ctx ctx = {.account_id = id};
        if (rt && !revoked_token_readable(st->keys, rt)) {
            log_event(LOG_WARNING, NULL, &ctx,
                      "account %" PRId64 ": revoked, and its new refresh token cannot be "
                      "decrypted with the keys loaded: the revocation stays until it can",
                      id);
            continue;
        }
        bool same = revoked_tag_matches(st->keys, rt, tag);
        if (same)
            log_event(LOG_INFO, NULL, &ctx,
                      "account %" PRId64 ": the application re-saved the refused refresh token "
                      "(a new ciphertext of the same token): it stays revoked",
                      id);
        else
            log_event(LOG_INFO, NULL, &ctx,
                      "account %" PRId64 ": the application stored a new refresh token: the "
                      "revocation is lifted",
                      id);
        settled++;
        lifted += !same;
        pgarray_int64(&ids, id);
        pgarray_text(&rts, rt);
        pgarray_text(&lifts, same ? "f" : "t");
    }
    pgarray_end(&ids);
    pgarray_end(&rts);
    pgarray_end(&lifts);
    const char *params[] = {ids.data, rts.data, lifts.data};
    if (settled > 0 && !ids.oom && !rts.oom && !lifts.oom &&
        db_query(st->db,
                 "SELECT oauth_refreshd.settle_revoked_token_changes($1::bigint[], $2::text[], "
                 "$3::boolean[])",
                 3, params, revcheck_settled_cb, st) == 0) {
        st->revcheck_busy = true;
        st->revcheck_lifted = lifted;
        /* A full page: more may wait (each page settles rows, so this ends). */
        st->revcheck_again |= rows == atoi(REVOKED_CHECK_LIMIT);
    }
    strbuf_free(&ids);
    strbuf_free(&rts);
    strbuf_free(&lifts);
}

static void revcheck_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct store *st = w->data;
    if (st->revcheck_busy) {
        st->revcheck_again = true; /* one more look when this one is done */
        return;
    }
    st->revcheck_again = false;
    const char *params[] = {REVOKED_CHECK_LIMIT};
    if (db_query(st->db,
                 "SELECT account_id, refresh_token, revoked_token_tag "
                 "FROM oauth_refreshd.revoked_token_changes($1::integer)",
                 1, params, revcheck_read_cb, st) == 0)
        st->revcheck_busy = true;
}

bool store_revoked_check_idle(const struct store *st)
{
    return !st->revcheck_busy && !ev_is_active(&st->revcheck_timer);
}

void store_check_revoked(struct store *st)
{
    if (!ev_is_active(&st->revcheck_timer)) {
        timer_set(&st->revcheck_timer, REVOKED_CHECK_DELAY_S, 0.);
        ev_timer_start(st->loop, &st->revcheck_timer);
    }
}

void store_revoked_init(struct store *st)
{
    ev_timer_init(&st->revcheck_timer, revcheck_timer_cb, REVOKED_CHECK_DELAY_S, 0.);
    st->revcheck_timer.data = st;
}
