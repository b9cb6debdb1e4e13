/*
 * store.h — writing refresh results back to PostgreSQL. Results are batched
 * into set-based calls of oauth_refreshd.store_refreshed / store_failed /
 * store_revoked (one round trip and one commit per batch, not per row), and
 * every write is a compare-and-swap on the refresh-token ciphertext that was
 * used. When that compare fails, the store reads the row's refresh token again
 * and compares plaintexts: the application's re-save of the same token (a new
 * Fernet ciphertext) is no change, and the result is written against the new
 * ciphertext; only a different token makes the result discarded (SPEC §6). A
 * batch the database could not take is held in memory and sent again after
 * reconnection; results are never dropped. The store knows nothing of
 * HTTP or providers; it reports each item's fate through one callback.
 */
#ifndef OAUTH_STORE_H
#define OAUTH_STORE_H

#include <ev.h>

#include "common.h"
#include "provider_id.h"
#include "db.h"

enum store_kind { STORE_REFRESHED, STORE_FAILED, STORE_REVOKED };

/*
 * One result. Token members are Fernet ciphertext (not secrets).
 *
 * A STORE_REFRESHED item with error[0] != '\0' is a partial result: the
 * provider rotated the refresh token but the rest of its answer cannot be
 * used. It carries refresh_ct (and id_token_ct when the answer had one), no
 * access_ct, scope or token type; the database keeps the old access token and
 * expiry, stores the new refresh token (compare-and-swap as for any result)
 * and records the failed attempt (error, retry_at) as store_failed would.
 */
struct store_item {
    struct store_item *next;
    enum store_kind kind;
    int64_t account_id;
    enum provider_id provider;
    char *old_refresh_ct; /* the refresh token ciphertext that was used (CAS) */
    /* STORE_REFRESHED */
    char *access_ct;   /* NULL only in a partial result */
    char *refresh_ct;  /* NULL: keep the stored one */
    char *id_token_ct; /* NULL: keep the stored one */
    double expires_at; /* wall clock */
    char *scope;       /* NULL: keep */
    char *token_type;  /* NULL: keep */
    bool rotated;      /* carries a new refresh token: must never be lost */
    /* STORE_FAILED / STORE_REVOKED, and a partial STORE_REFRESHED */
    char error[64];
    /* The provider's words about that error (token_result.detail, redacted
     * like the journal's: never token text), kept in account_state's
     * last_error_detail for `oauth-refreshctl show`; "" when none. Not kept
     * in the spool (a replayed partial result records its error alone). */
    char detail[256];
    /* token_fingerprint() (keys.h) of the refresh token the attempt used and,
     * when rotated, of the new one: for the journal's records, "" if unknown. */
    char token_fp[16];
    char new_token_fp[16];
    /* STORE_FAILED and partial results: the next attempt. A full
     * STORE_REFRESHED result carries it too (the backoff of this attempt), for
     * the case the store must turn it into a failure (store_values.h); 0 when
     * unknown (a result replayed from the spool). */
    double retry_at;
    /* bookkeeping for logs and metrics */
    double claimed_at;
    int64_t spool_id; /* set by the spool when the item was made durable; 0 = not spooled */
    unsigned resaves; /* times the row was found re-saved with the same token (store.c) */
};

/* Frees an item and everything it owns. */
void store_item_free(struct store_item *item);

/* A rotated refresh token without a usable rest of the answer (see above). */
static inline bool store_item_is_partial(const struct store_item *item)
{
    return item->kind == STORE_REFRESHED && item->error[0] != '\0';
}

enum store_fate {
    STORE_WRITTEN,   /* the row holds the result (or the failure/revocation is recorded) */
    STORE_DISCARDED, /* the row holds a different refresh token now: the application's wins */
    STORE_LOST_RACE, /* revocation not recorded: the refresh token changed meanwhile */
};

struct store_callbacks {
    /* Called once per item after its batch was committed; the item is freed afterwards. */
    void (*done)(void *ud, const struct store_item *item, enum store_fate fate);
    /* Optional: a look at revoked accounts' changes ended (store_check_revoked);
     * lifted revocations make accounts claimable. */
    void (*revoked_checked)(void *ud, size_t lifted);
    void *ud;
};

struct store;

struct store *store_new(struct ev_loop *loop, struct db *db, const char *owner,
                        const struct store_callbacks *cb) WUR;
/* Parameters that come from the config (lead time for due_at arithmetic). */
void store_set_lead(struct store *st, int64_t lead_ms);
/*
 * Call once per new database connection (before anything is flushed): reads
 * the length limits of the application's columns the store writes
 * (information_schema), so a value that does not fit fails its own account
 * instead of the whole batch. Refreshed results wait for the first answer.
 */
void store_on_connected(struct store *st);

struct spool;
struct keyring;
/*
 * Makes results that carry a rotated refresh token durable in sp (tagged
 * under kr's primary key) before they are sent, and compares a re-saved row's
 * refresh token with the one used by decrypting both with kr. The store keeps
 * a reference to kr; call again after a reload swapped the keys.
 */
void store_set_spool(struct store *st, struct spool *sp, struct keyring *kr);
/* True when a result for this account waits to be written (do not refresh it again). */
bool store_has_account(const struct store *st, int64_t account_id);
/* Queues an item (takes ownership); it is sent within a few milliseconds. */
void store_add(struct store *st, struct store_item *item);
/*
 * Looks at revoked accounts whose refresh token the application wrote since
 * the revocation, and lifts the revocation only for a different token
 * (compared by keyed fingerprint: a re-save of the refused token keeps it).
 * Calls are coalesced: one look within 0.1 s, whatever the number of calls.
 */
void store_check_revoked(struct store *st);
/* No such look is waiting or in flight. */
bool store_revoked_check_idle(const struct store *st);
/* Sends what is queued now (e.g. after a reconnection). */
void store_flush(struct store *st);
/* Items queued or sent and not yet confirmed. */
size_t store_pending(const struct store *st);
/*
 * Takes every unconfirmed item out, as a list the caller owns (free each with
 * store_item_free): what is queued, and what waits after re-saves. Statements
 * in flight keep their items until answered: call it after db_free(), which
 * fails them and so puts their items back in the queue. The daemon calls it at
 * exit to spool rotated results not spooled yet and to name those it cannot
 * (SPEC §6), which is why it stays (issue 13 §5 thought nothing called it).
 */
struct store_item *store_take_all(struct store *st);
void store_free(struct store *st);

#endif
