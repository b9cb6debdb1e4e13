/*
 * outcome_log.h — what the journal says about each refresh's outcome: the
 * provider's answer (revoked, refused client registration, overload, failure)
 * and the store's verdict (written, discarded, lost race). Structured fields
 * carry token fingerprints, never tokens. The engine decides; this only tells.
 */
#ifndef OAUTH_OUTCOME_LOG_H
#define OAUTH_OUTCOME_LOG_H

#include "refresh.h"

/* The answer to ra's request (HTTP status), classified as res. config_error_known:
 * the provider is already paused for a configuration error (said once). */
void outcome_log_answer(const struct refresh_attempt *ra, const struct token_result *res,
                        long status, const struct config *cfg, bool config_error_known);
/* The store's verdict on one result. */
void outcome_log_stored(const struct store_item *item, enum store_fate fate);

#endif
