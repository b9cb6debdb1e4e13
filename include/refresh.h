/*
 * refresh.h — the refresh of one account, as the pure steps between the
 * scheduler's claim and the store's write: decrypt the stored refresh token
 * (MultiFernet), build the provider's request, and turn the provider's
 * classified answer into a store item (new tokens encrypted under the primary
 * key, or a failure with its retry time, or a revocation). No I/O happens here:
 * the engine runs the request. Plaintext tokens live only inside a
 * refresh_attempt and are wiped by refresh_attempt_clear().
 */
#ifndef OAUTH_REFRESH_H
#define OAUTH_REFRESH_H

#include "common.h"
#include "config.h"
#include "provider.h"
#include "secret.h"
#include "store.h"

/* One row returned by a claim. Strings are malloc()ed and owned. */
struct claimed_account {
    int64_t account_id;
    int provider; /* enum provider_id, or -1 when the name is unknown */
    char *refresh_ct;
    char *scope; /* NULL when the column is NULL */
    double expires_at;
    int attempts;
    double claimed_at;
};
void claimed_account_clear(struct claimed_account *acct);

struct refresh_attempt {
    struct config *cfg; /* reference held for the attempt's life */
    struct claimed_account acct;
    const struct provider_ops *ops;
    struct secret refresh_plain;
    size_t key_index; /* which key decrypted the stored token (0 = primary) */
    struct provider_request req;
};

/*
 * Takes ownership of acct and a new reference to cfg. Decrypts and builds the
 * request. On failure returns -1 and writes a precise machine error code into
 * code (e.g. "undecryptable_refresh_token", "provider_not_configured") and a
 * human detail into detail; the attempt must still be cleared.
 */
int refresh_prepare(struct refresh_attempt *ra, struct config *cfg, struct claimed_account *acct,
                    char *code, size_t codelen, char *detail, size_t detaillen) WUR;

/*
 * Turns a classified answer into a store item (NULL only on OOM). New tokens
 * are encrypted under kr's primary key (the current one, which a reload may
 * have changed since the attempt began). now is the wall clock; u in [0,1) is
 * the backoff jitter draw. An answer that is not a success but carries a
 * rotated refresh token becomes a partial result (store.h): the new token is
 * kept, the attempt counts as failed with res->error and the usual backoff.
 * Wipes the attempt's plaintext refresh token.
 */
struct store_item *refresh_conclude(struct refresh_attempt *ra, const struct token_result *res,
                                    const struct keyring *kr, double now, double u);

/* Out of memory while reading a 2xx answer: logs at LOG_CRIT and aborts (the
 * answer may have carried a rotated refresh token; see refresh_result_lost). */
void refresh_answer_unreadable(int64_t account_id) __attribute__((noreturn));

/*
 * What to do when refresh_conclude() returned NULL (out of memory) for res:
 * without a rotated refresh token, log and go on (the claim's lease runs out
 * and the account is tried again); with one, log at LOG_CRIT and abort(), so
 * the daemon restarts and replays its spool instead of dropping the only copy
 * of a token the provider has already rotated. Call before clearing res.
 */
void refresh_result_lost(const struct token_result *res, int64_t account_id);

/* A failure item for an account that never reached the provider. */
struct store_item *refresh_failure_item(const struct config *cfg,
                                        const struct claimed_account *acct, const char *code,
                                        int64_t retry_after_ms, double now, double u);

/* Wipes plaintext, frees the request, drops the config reference. */
void refresh_attempt_clear(struct refresh_attempt *ra);

#endif
