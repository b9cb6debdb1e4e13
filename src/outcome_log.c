/*
 * outcome_log.c — the journal lines of refresh outcomes (outcome_log.h). The
 * MESSAGE_IDs are docs/journal-message-ids.md's; tests read these texts.
 */
#include <inttypes.h>
#include <stdio.h>

#include "log.h"
#include "outcome_log.h"
#include "keys.h"
#include "timeutil.h"

void outcome_log_answer(const struct refresh_attempt *ra, const struct token_result *res,
                        long status, const struct config *cfg, bool config_error_known)
{
    /* Which answers are logged is decided here, once: most are successes that
     * log nothing, and they cost no fingerprints (two keyed hashes per refresh,
     * 1 % of the daemon's instructions). */
    if ((res->outcome == OUTCOME_SUCCESS && !res->expires_in_defaulted) ||
        (res->outcome == OUTCOME_CONFIG && config_error_known))
        return;
    const char *pname = provider_id_name((enum provider_id)ra->acct.provider);
    /* Fingerprints under the current primary key, as `oauth-refreshctl show` prints them. */
    char fp[TOKEN_FP_HEX_LEN + 1] = "", new_fp[TOKEN_FP_HEX_LEN + 1] = "";
    if (ra->refresh_plain.len > 0)
        (void)token_fingerprint(cfg->keys, ra->refresh_plain.data, ra->refresh_plain.len, fp);
    if (res->refresh_token.len > 0)
        (void)token_fingerprint(cfg->keys, res->refresh_token.data, res->refresh_token.len, new_fp);
    struct log_ctx ctx = {.account_id = ra->acct.account_id,
                          .provider = pname,
                          .error = res->error,
                          .http_status = (int)status,
                          .token_fp = fp,
                          .new_token_fp = new_fp};
    switch (res->outcome) {
    case OUTCOME_SUCCESS: /* only with a defaulted expiry (above) */
        log_event(LOG_WARNING, NULL, &ctx,
                  "account %" PRId64 ": provider gave no usable expires_in; assuming %" PRId64 "s",
                  ra->acct.account_id, res->expires_in_s);
        break;
    case OUTCOME_REVOKED:
        log_event(LOG_NOTICE, MSGID_REVOKED, &ctx,
                  "account %" PRId64 " (%s): refresh token refused (%s), the user must "
                  "reconnect: %s",
                  ra->acct.account_id, pname, res->error, res->detail);
        break;
    case OUTCOME_CONFIG: /* only the first answer that says so (above) */
        log_event(LOG_ERR, MSGID_CONFIG_ERROR, &ctx,
                  "provider %s rejects our client credentials (%s): %s; check client_id, "
                  "client_secret and tenant in [provider.%s] and the client's registration; "
                  "pausing %s, probing it every %.0fs (a reload resumes it at once)",
                  pname, res->error, res->detail, pname, pname,
                  (double)cfg->config_error_probe_ms / 1000.0);
        break;
    case OUTCOME_TRANSIENT:
        if (res->retry_rule == RETRY_PAUSE) {
            log_event(LOG_INFO, NULL, &ctx,
                      "account %" PRId64 " (%s): provider overloaded (%s): %s; not charged to "
                      "the account, tried again after the pause",
                      ra->acct.account_id, pname, res->error, res->detail);
            break;
        }
        /* fall through */
    case OUTCOME_BAD_RESPONSE:
        log_event(LOG_WARNING, MSGID_REFRESH_FAILED, &ctx,
                  "account %" PRId64 " (%s): refresh failed (%s): %s", ra->acct.account_id, pname,
                  res->error, res->detail);
        break;
    }
}

void outcome_log_stored(const struct store_item *item, enum store_fate fate)
{
    struct log_ctx ctx = {.account_id = item->account_id,
                          .provider = provider_id_name(item->provider),
                          .token_fp = item->token_fp,
                          .new_token_fp = item->new_token_fp};
    if (item->kind == STORE_REFRESHED && fate == STORE_WRITTEN) {
        char iso[ISO8601_LEN];
        time_format_iso8601(item->expires_at, false, iso);
        ctx.expires_at = iso;
        log_event(LOG_DEBUG, NULL, &ctx, "account %" PRId64 " refreshed, expires %s",
                  item->account_id, iso);
    } else if (item->kind == STORE_REFRESHED) {
        ctx.error = "changed_meanwhile";
        log_event(LOG_NOTICE, NULL, &ctx,
                  "account %" PRId64 ": result discarded: the application changed the "
                  "refresh token meanwhile",
                  item->account_id);
    } else if (item->kind == STORE_REVOKED && fate != STORE_WRITTEN) {
        ctx.error = item->error;
        log_event(LOG_NOTICE, NULL, &ctx,
                  "account %" PRId64 ": %s was a lost race, not a revocation: the refresh "
                  "token changed meanwhile",
                  item->account_id, item->error);
    }
}
