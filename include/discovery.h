/*
 * discovery.h — OpenID Connect discovery (OIDC Discovery 1.0 §4) for the
 * generic providers configured with an issuer: it reads
 * {issuer}/.well-known/openid-configuration through the daemon's own HTTP
 * adapter (on the loop; TLS verified, no redirects, size cap, https only
 * unless allow_insecure_http), checks that the document names the same
 * issuer, and sets the provider's token_url and client_auth in the config it
 * was started for. Until then that provider is not claimed; a failed
 * discovery is tried again with backoff (retry_min .. retry_max).
 */
#ifndef OAUTH_DISCOVERY_H
#define OAUTH_DISCOVERY_H

#include <ev.h>

#include "config.h"
#include "http.h"

struct discovery;

/* Called on the loop when a provider's token endpoint became known (ok), or
 * when the first attempt for a provider that has none failed (!ok). */
typedef void (*discovery_ready_fn)(void *ud, enum provider_id p, bool ok);

struct discovery *discovery_new(struct ev_loop *loop, struct http *http, discovery_ready_fn ready,
                                void *ud) WUR;
/*
 * A config came into force (start, reload): every issuer of cfg is fetched
 * again. Until a fetch succeeds, what old (the config before, or NULL) found
 * for the same provider and the same issuer stays in use, so a reload does
 * not stop a provider that works. Fetches and retries for old are dropped.
 */
void discovery_on_config(struct discovery *ds, struct config *cfg, const struct config *old);
/* Providers of the current config still waiting for discovery, as ", a, b" (or ""). */
void discovery_waiting(const struct discovery *ds, char *buf, size_t len);
/* A provider without a token endpoint whose first discovery has not ended yet (--once waits). */
bool discovery_first_pending(const struct discovery *ds);
/* Shutdown: no retry is started any more. */
void discovery_stop(struct discovery *ds);
/* After http_free (which ends the fetches in flight). NULL is fine. */
void discovery_free(struct discovery *ds);

/*
 * The pure part (exposed for tests): reads a discovery document for pc and
 * fills *token_url (malloc()ed) and *auth; returns -1 with the reason in err.
 */
int discovery_read_document(const struct provider_config *pc, bool allow_insecure_http,
                            const char *body, size_t len, char **token_url, enum client_auth *auth,
                            char *err, size_t errlen) WUR;

#endif
