/*
 * refresh.c — one account's refresh between claim and write (refresh.h).
 * It owns the plaintext refresh token for exactly as long as the request
 * needs it and never lets a token reach a log line: errors carry codes.
 * What an answer means is the dialect's business (provider.h); what to do
 * about it in the database is the store's.
 */
#include "refresh.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "keys.h"
#include "log.h"
#include "stored_token.h"

void claimed_account_clear(struct claimed_account *acct)
{
    free(acct->refresh_ct);
    free(acct->scope);
    memset(acct, 0, sizeof *acct);
}

int refresh_prepare(struct refresh_attempt *ra, struct config *cfg, struct claimed_account *acct,
                    char *code, size_t codelen, char *detail, size_t detaillen)
{
    memset(ra, 0, sizeof *ra);
    ra->cfg = config_ref(cfg);
    ra->acct = *acct;
    memset(acct, 0, sizeof *acct);

    if (ra->acct.provider < 0 || ra->acct.provider >= PROVIDER_MAX) {
        snprintf(code, codelen, "unknown_provider");
        snprintf(detail, detaillen, "the account's provider has no dialect");
        return -1;
    }
    const struct provider_config *pc = cfg->providers[ra->acct.provider];
    if (!pc) {
        snprintf(code, codelen, "provider_not_configured");
        snprintf(detail, detaillen, "no [provider.%s] section in the configuration",
                 provider_id_name((enum provider_id)ra->acct.provider));
        return -1;
    }
    ra->ops = provider_ops_get((enum provider_id)ra->acct.provider);

    char err[ERRBUF_LEN];
    if (stored_token_decrypt(cfg->keys, ra->acct.refresh_ct, strlen(ra->acct.refresh_ct),
                             &ra->refresh_plain, &ra->key_index, err, sizeof err) < 0) {
        snprintf(code, codelen, "undecryptable_refresh_token");
        snprintf(detail, detaillen, "stored refresh token does not verify under any key: %s", err);
        return -1;
    }
    if (ra->refresh_plain.len == 0) {
        snprintf(code, codelen, "empty_refresh_token");
        snprintf(detail, detaillen, "stored refresh token decrypts to an empty string");
        return -1;
    }
    if (ra->ops->build_request(pc, ra->refresh_plain.data, ra->acct.scope, &ra->req, err,
                               sizeof err) < 0) {
        snprintf(code, codelen, "request_build_failed");
        snprintf(detail, detaillen, "%s", err);
        return -1;
    }
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct store_item *item_new(const struct claimed_account *acct, enum store_kind kind)
{
    struct store_item *it = calloc(1, sizeof *it);
    if (!it)
        return NULL;
    it->kind = kind;
    it->account_id = acct->account_id;
    it->provider = acct->provider >= 0 ? (enum provider_id)acct->provider : PROVIDER_GOOGLE;
    it->claimed_at = acct->claimed_at;
    it->old_refresh_ct = strdup(acct->refresh_ct ? acct->refresh_ct : "");
    if (!it->old_refresh_ct) {
        free(it);
        return NULL;
    }
    return it;
}

struct store_item *refresh_failure_item(const struct config *cfg,
                                        const struct claimed_account *acct, const char *code,
                                        int64_t retry_after_ms, double now, double u)
{
    struct store_item *it = item_new(acct, STORE_FAILED);
    if (!it)
        return NULL;
    snprintf(it->error, sizeof it->error, "%s", code);
    int64_t delay = backoff_delay_ms((unsigned)acct->attempts + 1, cfg->retry_min_ms,
                                     cfg->retry_max_ms, retry_after_ms, u);
    it->retry_at = now + (double)delay / 1000.0;
    return it;
}

static int encrypt_secret(const struct keyring *kr, const struct secret *s, char **out)
{
    return keyring_encrypt(kr, (const uint8_t *)s->data, s->len, out);
}

/* The next attempt after this one failed: backoff on attempts + 1. */
static double next_retry_at(const struct refresh_attempt *ra, int64_t retry_after_ms, double now,
                            double u)
{
    int64_t delay = backoff_delay_ms((unsigned)ra->acct.attempts + 1, ra->cfg->retry_min_ms,
                                     ra->cfg->retry_max_ms, retry_after_ms, u);
    return now + (double)delay / 1000.0;
}

static struct store_item *success_item(struct refresh_attempt *ra, const struct token_result *res,
                                       const struct keyring *kr, double now, double u)
{
    struct store_item *it = item_new(&ra->acct, STORE_REFRESHED);
    if (!it)
        return NULL;
    /* Should the store find a value that does not fit the database, this
     * result becomes a failed attempt with the backoff it would have had. */
    it->retry_at = next_retry_at(ra, -1, now, u);
    bool ok = encrypt_secret(kr, &res->access_token, &it->access_ct) == 0;
    if (ok && res->refresh_token.len > 0) {
        ok = encrypt_secret(kr, &res->refresh_token, &it->refresh_ct) == 0;
        it->rotated = true;
    } else if (ok && (ra->key_index != 0 || kr != ra->cfg->keys)) {
        /* Not rotated, but stored under an older key (or the key list changed
         * since the attempt began): move it to the current primary. */
        ok = encrypt_secret(kr, &ra->refresh_plain, &it->refresh_ct) == 0;
    }
    if (ok && res->id_token.len > 0)
        ok = encrypt_secret(kr, &res->id_token, &it->id_token_ct) == 0;
    it->expires_at = now + (double)res->expires_in_s;
    it->scope = dup_or_null(res->scope);
    it->token_type = dup_or_null(res->token_type);
    if (!ok || (res->scope && !it->scope) || (res->token_type && !it->token_type) ||
        stored_token_match_item(ra->acct.refresh_ct, it) < 0) {
        store_item_free(it);
        return NULL;
    }
    return it;
}

/*
 * The provider rotated but the rest of its answer cannot be used (no access
 * token, or a value that does not fit): the old refresh token is already
 * dead, so the new one is stored all the same (a partial result, store.h),
 * with the old access token kept and this attempt recorded as failed.
 */
static struct store_item *partial_item(struct refresh_attempt *ra, const struct token_result *res,
                                       const struct keyring *kr, double now, double u)
{
    struct store_item *it = item_new(&ra->acct, STORE_REFRESHED);
    if (!it)
        return NULL;
    it->rotated = true;
    snprintf(it->error, sizeof it->error, "%s", res->error[0] ? res->error : "bad_response");
    it->retry_at = next_retry_at(ra, res->retry_after_ms, now, u);
    bool ok = encrypt_secret(kr, &res->refresh_token, &it->refresh_ct) == 0;
    if (ok && res->id_token.len > 0)
        ok = encrypt_secret(kr, &res->id_token, &it->id_token_ct) == 0;
    if (!ok) {
        store_item_free(it);
        return NULL;
    }
    return it;
}

/*
 * The provider's words for account_state.last_error_detail: the dialects
 * already keep them printable ASCII and redacted (provider.c); kept so here
 * too, whatever a detail's origin, so that no byte can make the database
 * refuse the batch (invalid UTF-8) or break a line of `oauth-refreshctl show`.
 */
static void copy_detail(char *dst, size_t len, const char *src)
{
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < len; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c <= 0x7e) ? (char)c : '?';
    }
    dst[i] = '\0';
}

struct store_item *refresh_conclude(struct refresh_attempt *ra, const struct token_result *res,
                                    const struct keyring *kr, double now, double u)
{
    struct store_item *it = NULL;
    switch (res->outcome) {
    case OUTCOME_SUCCESS:
        it = success_item(ra, res, kr, now, u);
        break;
    case OUTCOME_REVOKED:
        it = item_new(&ra->acct, STORE_REVOKED);
        if (it)
            snprintf(it->error, sizeof it->error, "%s", res->error);
        break;
    case OUTCOME_TRANSIENT:
    case OUTCOME_CONFIG:
    case OUTCOME_BAD_RESPONSE:
        if (res->refresh_token.len > 0)
            it = partial_item(ra, res, kr, now, u);
        else
            it = refresh_failure_item(ra->cfg, &ra->acct, res->error, res->retry_after_ms, now, u);
        break;
    }
    if (it) {
        if (it->kind != STORE_REFRESHED || store_item_is_partial(it))
            copy_detail(it->detail, sizeof it->detail, res->detail);
        if (ra->refresh_plain.len > 0)
            (void)token_fingerprint(kr, ra->refresh_plain.data, ra->refresh_plain.len,
                                    it->token_fp);
        if (res->refresh_token.len > 0)
            (void)token_fingerprint(kr, res->refresh_token.data, res->refresh_token.len,
                                    it->new_token_fp);
    }
    /* The plaintext refresh token is not needed after this point. */
    secret_clear(&ra->refresh_plain);
    return it;
}

void refresh_answer_unreadable(int64_t account_id)
{
    log_event(LOG_CRIT, NULL, NULL,
              "account %" PRId64 ": out of memory reading a successful answer, which may carry "
              "a rotated refresh token; aborting rather than retrying with a retired one (the "
              "spool is replayed at the next start)",
              account_id);
    abort();
}

void refresh_result_lost(const struct token_result *res, int64_t account_id)
{
    if (res->refresh_token.len == 0) {
        log_err("account %" PRId64 ": out of memory building the result", account_id);
        return;
    }
    /* Freeing the only copy of a rotated refresh token bricks the account
     * (the provider has already retired the old one). Stop instead: systemd
     * restarts the daemon, the spool replays every result made durable so
     * far, and this process's memory trouble ends with it. */
    log_event(LOG_CRIT, NULL, NULL,
              "account %" PRId64 ": out of memory keeping a rotated refresh token; aborting "
              "rather than dropping it (the spool is replayed at the next start)",
              account_id);
    abort();
}

void refresh_attempt_clear(struct refresh_attempt *ra)
{
    secret_clear(&ra->refresh_plain);
    provider_request_clear(&ra->req);
    claimed_account_clear(&ra->acct);
    if (ra->cfg)
        config_unref(ra->cfg);
    memset(ra, 0, sizeof *ra);
}
