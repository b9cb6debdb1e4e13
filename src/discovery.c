/*
 * discovery.c — OpenID Connect discovery for generic providers with an
 * issuer (discovery.h). It owns one fetch state per provider id: the config
 * the fetch is for (a reference), the attempt count and the retry timer.
 * The document is read by discovery_read_document(), which is pure; the
 * result is written into that config's provider_config on the loop's thread
 * (the only writer after config_load; jobs read token_url only when they
 * build a request, on the same thread).
 */
#include "discovery.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "log.h"
#include "provider.h"

#define WELL_KNOWN "/.well-known/openid-configuration"

struct fetch_state {
    struct discovery *ds;
    enum provider_id id;
    struct config *cfg; /* the config the fetch is for; NULL when idle */
    unsigned attempts;
    unsigned generation; /* bumped to orphan a fetch in flight */
    bool in_flight;
    ev_timer retry;
};

struct fetch_ctx {
    struct fetch_state *fs;
    unsigned generation;
};

struct discovery {
    struct ev_loop *loop;
    struct http *http;
    discovery_ready_fn ready;
    void *ud;
    bool stopping;
    unsigned in_flight; /* fetch contexts not yet called back */
    struct fetch_state fs[PROVIDER_MAX];
};

/* ---- the document ---- */

static bool url_allowed(const char *u, bool allow_insecure_http)
{
    return strncmp(u, "https://", 8) == 0 || (allow_insecure_http && strncmp(u, "http://", 7) == 0);
}

static bool has_control_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Whether the server's list names m; a missing list means client_secret_basic (§3). */
static bool supports(const json_t *methods, const char *m)
{
    if (!json_is_array(methods))
        return strcmp(m, "client_secret_basic") == 0;
    size_t i;
    const json_t *v;
    json_array_foreach(methods, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), m) == 0)
            return true;
    }
    return false;
}

int discovery_read_document(const struct provider_config *pc, bool allow_insecure_http,
                            const char *body, size_t len, char **token_url, enum client_auth *auth,
                            char *err, size_t errlen)
{
    *token_url = NULL;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    int rc = -1;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "the discovery document is not a JSON object");
        goto out;
    }
    const json_t *iss = json_object_get(root, "issuer");
    if (!json_is_string(iss) || strcmp(json_string_value(iss), pc->issuer) != 0) {
        /* OpenID Connect Discovery §4.3: it MUST be identical. */
        snprintf(err, errlen, "the discovery document names another issuer than %s", pc->issuer);
        goto out;
    }
    const json_t *te = json_object_get(root, "token_endpoint");
    const char *url = json_string_value(te);
    if (!url || !*url || has_control_chars(url) || strlen(url) > 2048) {
        snprintf(err, errlen, "the discovery document has no usable token_endpoint");
        goto out;
    }
    if (!url_allowed(url, allow_insecure_http)) {
        snprintf(err, errlen,
                 "the token_endpoint of the discovery document is not https:// (plain http:// "
                 "only with [http] allow_insecure_http = yes)");
        goto out;
    }
    const json_t *methods = json_object_get(root, "token_endpoint_auth_methods_supported");
    bool basic = supports(methods, "client_secret_basic"),
         post = supports(methods, "client_secret_post");
    switch (pc->client_auth_configured) {
    case CLIENT_AUTH_DEFAULT:
        if (!basic && !post) {
            snprintf(err, errlen,
                     "the provider supports neither client_secret_basic nor client_secret_post "
                     "(token_endpoint_auth_methods_supported)");
            goto out;
        }
        *auth = basic ? CLIENT_AUTH_BASIC : CLIENT_AUTH_POST;
        break;
    case CLIENT_AUTH_BASIC:
    case CLIENT_AUTH_POST:
        if (!(pc->client_auth_configured == CLIENT_AUTH_BASIC ? basic : post)) {
            snprintf(err, errlen,
                     "client_auth = %s is not among the provider's "
                     "token_endpoint_auth_methods_supported",
                     client_auth_name(pc->client_auth_configured));
            goto out;
        }
        *auth = pc->client_auth_configured;
        break;
    }
    if ((*token_url = strdup(url)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* ---- fetching ---- */

static void fetch_start(struct fetch_state *fs);

static void fetch_reset(struct fetch_state *fs)
{
    ev_timer_stop(fs->ds->loop, &fs->retry);
    fs->generation++; /* a fetch in flight for the old config is ignored */
    fs->in_flight = false;
    fs->attempts = 0;
    config_unref(fs->cfg);
    fs->cfg = NULL;
}

static void fetch_failed(struct fetch_state *fs, const char *why, bool config_error)
{
    struct config *cfg = fs->cfg;
    const struct provider_config *pc = cfg->providers[fs->id];
    int64_t delay = backoff_delay_ms(++fs->attempts, cfg->retry_min_ms, cfg->retry_max_ms, -1,
                                     (double)randombytes_uniform(1u << 30) / (double)(1u << 30));
    struct log_ctx ctx = {.provider = provider_id_name(fs->id), .error = "discovery_failed"};
    log_event(config_error ? LOG_ERR : LOG_WARNING, config_error ? MSGID_CONFIG_ERROR : NULL, &ctx,
              "provider %s: OpenID Connect discovery at %s failed: %s; %s; trying again in "
              "%.0fs",
              provider_id_name(fs->id), pc->issuer, why,
              pc->token_url ? "the token endpoint found before stays in use"
                            : "its accounts are not refreshed until it succeeds",
              (double)delay / 1000.0);
    if (fs->attempts == 1 && fs->ds->ready && !pc->token_url)
        fs->ds->ready(fs->ds->ud, fs->id, false);
    if (fs->ds->stopping)
        return;
    ev_timer_set(&fs->retry, (double)delay / 1000.0, 0.);
    ev_timer_start(fs->ds->loop, &fs->retry);
}

static void fetch_done_cb(void *ud, const struct http_answer *ans, double elapsed_s)
{
    (void)elapsed_s;
    struct fetch_ctx *fc = ud;
    struct fetch_state *fs = fc->fs;
    struct discovery *ds = fs->ds;
    bool current = fc->generation == fs->generation;
    free(fc);
    ds->in_flight--;
    if (!current || !fs->cfg || ds->stopping)
        return; /* for a config no longer in force, or aborted at shutdown */
    fs->in_flight = false;
    char why[ERRBUF_LEN];
    if (ans->transport_error) {
        snprintf(why, sizeof why, "%s",
                 ans->transport_detail ? ans->transport_detail : "transport error");
        fetch_failed(fs, why, false);
        return;
    }
    if (ans->status != 200 || ans->oversized) {
        if (ans->oversized)
            snprintf(why, sizeof why, "the document is larger than %d bytes",
                     PROVIDER_MAX_RESPONSE_BYTES);
        else
            snprintf(why, sizeof why, "HTTP %ld", ans->status);
        fetch_failed(fs, why, false);
        return;
    }
    struct provider_config *pc = fs->cfg->providers[fs->id];
    char *url = NULL;
    enum client_auth auth = CLIENT_AUTH_BASIC;
    if (discovery_read_document(pc, fs->cfg->allow_insecure_http, ans->body, ans->body_len, &url,
                                &auth, why, sizeof why) < 0) {
        fetch_failed(fs, why, true);
        return;
    }
    bool was_ready = pc->token_url != NULL;
    free(pc->token_url);
    pc->token_url = url;
    pc->client_auth = auth;
    fs->attempts = 0;
    struct log_ctx ctx = {.provider = provider_id_name(fs->id)};
    log_event(LOG_INFO, NULL, &ctx, "provider %s: discovered token endpoint %s (%s)",
              provider_id_name(fs->id), url, client_auth_name(auth));
    config_unref(fs->cfg);
    fs->cfg = NULL;
    if (!was_ready && ds->ready)
        ds->ready(ds->ud, fs->id, true);
}

static void fetch_start(struct fetch_state *fs)
{
    struct discovery *ds = fs->ds;
    const struct provider_config *pc = fs->cfg->providers[fs->id];
    size_t n = strlen(pc->issuer);
    while (n > 0 && pc->issuer[n - 1] == '/')
        n--; /* OIDC Discovery §4: a terminating "/" is removed before appending */
    char *url = malloc(n + sizeof WELL_KNOWN);
    struct fetch_ctx *fc = malloc(sizeof *fc);
    if (!url || !fc) {
        free(url);
        free(fc);
        fetch_failed(fs, "out of memory", false);
        return;
    }
    memcpy(url, pc->issuer, n);
    memcpy(url + n, WELL_KNOWN, sizeof WELL_KNOWN);
    static const char *const headers[] = {"Accept: application/json", NULL};
    struct http_request req = {
        .url = url,
        .headers = headers,
        .get = true,
        .timeout_ms = fs->cfg->request_timeout_ms,
    };
    *fc = (struct fetch_ctx){.fs = fs, .generation = fs->generation};
    if (http_submit(ds->http, &req, fetch_done_cb, fc) < 0) {
        free(url);
        free(fc);
        fetch_failed(fs, "the request could not be started", false);
        return;
    }
    free(url);
    ds->in_flight++;
    fs->in_flight = true;
    log_debug("provider %s: reading %s%s", provider_id_name(fs->id), pc->issuer, WELL_KNOWN);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fetch_state *fs = w->data;
    if (fs->cfg && !fs->ds->stopping)
        fetch_start(fs);
}

/* ---- public ---- */

struct discovery *discovery_new(struct ev_loop *loop, struct http *http, discovery_ready_fn ready,
                                void *ud)
{
    struct discovery *ds = calloc(1, sizeof *ds);
    if (!ds)
        return NULL;
    *ds = (struct discovery){.loop = loop, .http = http, .ready = ready, .ud = ud};
    for (int p = 0; p < PROVIDER_MAX; p++) {
        ds->fs[p].ds = ds;
        ds->fs[p].id = (enum provider_id)p;
        ev_init(&ds->fs[p].retry, retry_cb);
        ds->fs[p].retry.data = &ds->fs[p];
    }
    return ds;
}

void discovery_on_config(struct discovery *ds, struct config *cfg, const struct config *old)
{
    for (int p = 0; p < PROVIDER_MAX; p++) {
        struct fetch_state *fs = &ds->fs[p];
        fetch_reset(fs);
        struct provider_config *pc = cfg->providers[p];
        if (!pc || !pc->issuer)
            continue;
        /* Ids are stable for the process (provider_id.h): the same id is the same provider. */
        const struct provider_config *was = old ? old->providers[p] : NULL;
        if (!pc->token_url && was && was->issuer && was->token_url &&
            strcmp(was->issuer, pc->issuer) == 0 &&
            was->client_auth_configured == pc->client_auth_configured) {
            pc->token_url = strdup(was->token_url); /* NULL on OOM: simply not ready yet */
            pc->client_auth = was->client_auth;
        }
        if (!pc->token_url) {
            struct log_ctx ctx = {.provider = provider_id_name((enum provider_id)p),
                                  .error = "discovery_pending"};
            log_event(LOG_NOTICE, NULL, &ctx,
                      "provider %s: its accounts are not claimed until OpenID Connect discovery "
                      "at %s has found the token endpoint",
                      provider_id_name((enum provider_id)p), pc->issuer);
        }
        fs->cfg = config_ref(cfg);
        if (!ds->stopping)
            fetch_start(fs);
    }
}

void discovery_waiting(const struct discovery *ds, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int p = 0; p < PROVIDER_MAX && o < len; p++) {
        const struct fetch_state *fs = &ds->fs[p];
        if (fs->cfg && !fs->cfg->providers[p]->token_url)
            o += (size_t)snprintf(buf + o, len - o, ", %s", provider_id_name((enum provider_id)p));
    }
}

bool discovery_first_pending(const struct discovery *ds)
{
    for (int p = 0; p < PROVIDER_MAX; p++) {
        const struct fetch_state *fs = &ds->fs[p];
        if (fs->cfg && !fs->cfg->providers[p]->token_url && fs->attempts == 0)
            return true;
    }
    return false;
}

void discovery_stop(struct discovery *ds)
{
    if (!ds)
        return;
    ds->stopping = true;
    for (int p = 0; p < PROVIDER_MAX; p++)
        ev_timer_stop(ds->loop, &ds->fs[p].retry);
}

void discovery_free(struct discovery *ds)
{
    if (!ds)
        return;
    for (int p = 0; p < PROVIDER_MAX; p++)
        fetch_reset(&ds->fs[p]);
    free(ds);
}
