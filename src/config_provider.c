/*
 * config_provider.c — the [provider.NAME] sections: the three named dialects
 * with their default token URLs ({tenant} substituted for microsoft), and
 * generic providers (dialect = oauth2) with a token_url or an issuer for
 * discovery; client credentials, per-provider caps and rate. A generic
 * provider gets its process-wide id (provider_id.c) only when the whole config
 * is accepted. Private to the loader (config_load.h).
 *
 * It must never put a client secret into a message, and refuses plain
 * http:// token URLs unless [http] allow_insecure_http says otherwise.
 */
#include "config_load.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "parse.h"
#include "secret.h"

static const char *const provider_default_token_urls[PROVIDER_NAMED_COUNT] = {
    "https://oauth2.googleapis.com/token",
    "https://github.com/login/oauth/access_token",
    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
};

const char *client_auth_name(enum client_auth a)
{
    switch (a) {
    case CLIENT_AUTH_DEFAULT:
        return "default";
    case CLIENT_AUTH_BASIC:
        return "client_secret_basic";
    case CLIENT_AUTH_POST:
        return "client_secret_post";
    }
    return "unknown";
}

static bool tenant_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 128)
        return false;
    return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n;
}

/* Replaces every "{tenant}" in url. Returns a malloc()ed string or NULL (OOM). */
static char *substitute_tenant(const char *url, const char *tenant)
{
    static const char marker[] = "{tenant}";
    size_t ml = sizeof(marker) - 1, tl = strlen(tenant), count = 0;
    for (const char *p = strstr(url, marker); p != NULL; p = strstr(p + ml, marker))
        count++;
    char *out = malloc(strlen(url) + count * tl + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    const char *p = url, *m;
    while ((m = strstr(p, marker)) != NULL) {
        memcpy(o, p, (size_t)(m - p));
        o += m - p;
        memcpy(o, tenant, tl);
        o += tl;
        p = m + ml;
    }
    strcpy(o, p);
    return out;
}

/* Checks scheme and shape of a token URL (or issuer: key names it); warns for permitted http://. */
static bool url_check(struct config_loader *ld, const char *url, const char *secname,
                      const char *key, int line)
{
    bool https = strncasecmp(url, "https://", 8) == 0;
    bool http = strncasecmp(url, "http://", 7) == 0;

    if (!https && !http) {
        config_add_error(ld, line, secname, key, "\"%s\" is not an https:// URL", url);
        return false;
    }
    if (http && !ld->cfg->allow_insecure_http) {
        config_add_error(ld, line, secname, key,
                         "\"%s\" is plain http://; token URLs must be https:// (http:// is allowed "
                         "only with [http] allow_insecure_http = yes, for tests)",
                         url);
        return false;
    }
    bool ok = false;
    CURLU *u = curl_url();
    if (u != NULL && !config_has_control_chars(url) && strchr(url, ' ') == NULL &&
        curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
        char *host = NULL;
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host != NULL &&
            host[0] != '\0')
            ok = true;
        curl_free(host);
    }
    if (u != NULL)
        curl_url_cleanup(u);
    if (!ok) {
        config_add_error(ld, line, secname, key, "\"%s\" is not a valid URL", url);
        return false;
    }
    if (http)
        config_add_warning(ld, line, secname, key,
                           "\"%s\" is plain http:// (allowed by [http] allow_insecure_http = yes); "
                           "client secrets and tokens travel unencrypted",
                           url);
    return true;
}

static bool token_url_check(struct config_loader *ld, const char *url, const char *secname,
                            int line)
{
    return url_check(ld, url, secname, "token_url", line);
}

void config_provider_free(struct provider_config *pc)
{
    if (pc == NULL)
        return;
    free(pc->client_id);
    secret_guarded_free(pc->client_secret);
    free(pc->tenant);
    free(pc->token_url);
    free(pc->issuer);
    free(pc);
}

/* The keys of the generic dialect: refused on the named providers, checked on the others. */
static bool load_provider_dialect(struct config_loader *ld, enum section_id sec, int slot,
                                  const char *secname, struct provider_config *pc)
{
    static const int generic_only[] = {K_ISSUER, K_CLIENT_AUTH, K_SEND_SCOPE};
    int line, sline = ld->section_line[sec];
    const char *v = config_raw_get(ld, sec, K_DIALECT, &line);
    bool ok = true;

    if (slot < PROVIDER_NAMED_COUNT) {
        if (v != NULL && strcmp(v, ld->slot_names[slot]) != 0) {
            config_add_error(
                ld, line, secname, "dialect",
                "%s keeps its own dialect; dialect = oauth2 is for providers other than "
                "google, github and microsoft",
                ld->slot_names[slot]);
            ok = false;
        }
        for (size_t i = 0; i < ARRAY_LEN(generic_only); i++) {
            if (config_raw_get(ld, sec, generic_only[i], &line) != NULL) {
                config_add_error(ld, line, secname, config_section_keys(sec)[generic_only[i]],
                                 "only valid with dialect = oauth2");
                ok = false;
            }
        }
        return ok;
    }

    pc->generic = true;
    if (v == NULL) {
        /* Most likely a typo of a named provider, or a section without its dialect. */
        config_add_error(ld, sline, secname, NULL,
                         "unknown provider \"%s\" (known: google, github, microsoft; any other "
                         "needs dialect = oauth2)",
                         ld->slot_names[slot]);
        return false;
    }
    if (strcmp(v, "oauth2") != 0) {
        config_add_error(ld, line, secname, "dialect", "\"%s\" is not a dialect (oauth2)", v);
        ok = false;
    }
    if ((v = config_raw_get(ld, sec, K_CLIENT_AUTH, &line)) != NULL) {
        if (strcmp(v, "client_secret_basic") == 0)
            pc->client_auth = CLIENT_AUTH_BASIC;
        else if (strcmp(v, "client_secret_post") == 0)
            pc->client_auth = CLIENT_AUTH_POST;
        else {
            config_add_error(ld, line, secname, "client_auth",
                             "\"%s\" is not client_secret_basic or client_secret_post", v);
            ok = false;
        }
    }
    if ((v = config_raw_get(ld, sec, K_SEND_SCOPE, &line)) != NULL &&
        !parse_bool(v, &pc->send_scope)) {
        config_add_error(ld, line, secname, "send_scope", "\"%s\" is not yes or no", v);
        ok = false;
    }

    int uline;
    const char *url = config_raw_get(ld, sec, K_TOKEN_URL, &uline);
    const char *issuer = config_raw_get(ld, sec, K_ISSUER, &line);
    if (issuer != NULL && url != NULL) {
        config_add_error(
            ld, line, secname, "issuer",
            "issuer and token_url are mutually exclusive (token_url is set at line %d): "
            "the issuer's discovery document names the token endpoint",
            uline);
        ok = false;
    } else if (issuer == NULL && url == NULL) {
        config_add_error(ld, sline, secname, "token_url", "required (or issuer, for discovery)");
        ok = false;
    } else if (issuer != NULL) {
        /* The same rules as a token URL: https unless allow_insecure_http. */
        if (!url_check(ld, issuer, secname, "issuer", line))
            ok = false;
        else if ((pc->issuer = strdup(issuer)) == NULL) {
            config_add_error(ld, line, secname, "issuer", "out of memory");
            ok = false;
        }
    } else if (strstr(url, "{tenant}") != NULL) {
        config_add_error(ld, uline, secname, "token_url",
                         "{tenant} is only substituted for microsoft");
        ok = false;
    } else if ((pc->token_url = strdup(url)) == NULL) {
        config_add_error(ld, uline, secname, "token_url", "out of memory");
        ok = false;
    } else if (!token_url_check(ld, pc->token_url, secname, uline)) {
        ok = false;
    }
    pc->client_auth_configured = pc->client_auth;
    if (pc->client_auth == CLIENT_AUTH_DEFAULT && pc->issuer == NULL)
        pc->client_auth = CLIENT_AUTH_BASIC; /* RFC 6749 §2.3.1: every server supports it */
    return ok;
}

/* token_url of a named provider: its default, {tenant} substituted for microsoft. */
static bool load_provider_token_url(struct config_loader *ld, enum section_id sec,
                                    enum provider_id id, const char *secname, const char *tenant,
                                    struct provider_config *pc)
{
    int line;
    const char *url = config_raw_get(ld, sec, K_TOKEN_URL, &line);
    if (url == NULL) {
        url = provider_default_token_urls[id];
        line = ld->section_line[sec];
    }
    if (id == PROVIDER_MICROSOFT) {
        pc->token_url = substitute_tenant(url, tenant);
    } else if (strstr(url, "{tenant}") != NULL) {
        config_add_error(ld, line, secname, "token_url",
                         "{tenant} is only substituted for microsoft");
        return false;
    } else {
        pc->token_url = strdup(url);
    }
    if (pc->token_url == NULL) {
        config_add_error(ld, line, secname, "token_url", "out of memory");
        return false;
    }
    return token_url_check(ld, pc->token_url, secname, line);
}

/* Loads the section of slot (a named id, or a generic section's slot) into ld->slot_config. */
void config_load_provider(struct config_loader *ld, int slot)
{
    enum section_id sec = (enum section_id)(SEC_PROVIDER + slot);
    char secname[32];
    int line, sline = ld->section_line[sec];
    const char *v;

    if (sline == 0)
        return; /* provider not in use */
    config_section_name(ld, sec, secname, sizeof(secname));

    struct provider_config *pc = calloc(1, sizeof(*pc));
    if (pc == NULL) {
        config_add_error(ld, sline, secname, NULL, "out of memory");
        return;
    }
    pc->id = (enum provider_id)slot; /* a generic one gets its id in config_place_providers */
    pc->max_in_flight = 128;
    pc->max_rate = 50;
    bool ok = load_provider_dialect(ld, sec, slot, secname, pc);
    if (slot >= PROVIDER_NAMED_COUNT && ld->raw[sec][K_DIALECT].line == 0) {
        config_provider_free(pc); /* said once: no dialect, nothing else to check */
        return;
    }
    if ((v = config_raw_get(ld, sec, K_CLIENT_ID, &line)) == NULL) {
        config_add_error(ld, line, secname, "client_id", "required");
        ok = false;
    } else if (config_has_control_chars(v)) {
        config_add_error(ld, line, secname, "client_id", "contains control characters");
        ok = false;
    } else if ((pc->client_id = strdup(v)) == NULL) {
        config_add_error(ld, line, secname, "client_id", "out of memory");
        ok = false;
    }

    int sline_inline, sline_file;
    const char *sec_inline = config_raw_get(ld, sec, K_CLIENT_SECRET, &sline_inline);
    const char *sec_file = config_raw_get(ld, sec, K_CLIENT_SECRET_FILE, &sline_file);
    if (sec_inline != NULL && sec_file != NULL) {
        config_add_error(ld, sline_file, secname, "client_secret_file",
                         "client_secret and client_secret_file are mutually exclusive "
                         "(client_secret is set at line %d)",
                         sline_inline);
        ok = false;
    } else if (sec_inline == NULL && sec_file == NULL) {
        config_add_error(ld, sline, secname, "client_secret_file",
                         "required (or, discouraged, client_secret)");
        ok = false;
    } else if (sec_file != NULL) {
        pc->client_secret =
            config_secret_single(ld, sec_file, sec, K_CLIENT_SECRET_FILE, sline_file, false);
        if (pc->client_secret == NULL)
            ok = false;
    } else {
        if (config_has_control_chars(sec_inline)) {
            config_add_error(ld, sline_inline, secname, "client_secret",
                             "contains control characters");
            ok = false;
        } else if ((pc->client_secret = secret_guarded_dup(sec_inline, strlen(sec_inline))) ==
                   NULL) {
            config_add_error(ld, sline_inline, secname, "client_secret", "out of memory");
            ok = false;
        } else {
            config_add_warning(ld, sline_inline, secname, "client_secret",
                               "a secret written into the config file is discouraged; put it in a "
                               "file named by client_secret_file (systemd LoadCredential=)");
        }
    }

    const char *tenant = "common";
    if ((v = config_raw_get(ld, sec, K_TENANT, &line)) != NULL) {
        if (slot != PROVIDER_MICROSOFT) {
            config_add_error(ld, line, secname, "tenant", "only valid in [provider.microsoft]");
            ok = false;
        } else if (!tenant_valid(v)) {
            config_add_error(
                ld, line, secname, "tenant",
                "\"%s\" is not a tenant (common, organizations, consumers, a tenant id "
                "or domain)",
                v);
            ok = false;
        } else {
            tenant = v;
        }
    }
    if (slot == PROVIDER_MICROSOFT && (pc->tenant = strdup(tenant)) == NULL) {
        config_add_error(ld, sline, secname, "tenant", "out of memory");
        ok = false;
    }

    if (slot < PROVIDER_NAMED_COUNT &&
        !load_provider_token_url(ld, sec, (enum provider_id)slot, secname, tenant, pc))
        ok = false;
    if (!config_get_unsigned(ld, sec, K_P_MAX_IN_FLIGHT, 1, 100000, &pc->max_in_flight))
        ok = false;
    if (ld->raw[sec][K_MAX_RATE].line != 0) {
        v = config_raw_get(ld, sec, K_MAX_RATE, &line);
        if (v == NULL || !parse_double(v, 0, 100000, &pc->max_rate)) {
            config_add_error(ld, line, secname, "max_rate",
                             "\"%s\" is not a number of requests per second between 0 (unlimited) "
                             "and 100000",
                             v ? v : "");
            ok = false;
        }
    }

    if (!ok) {
        config_provider_free(pc);
        return;
    }
    ld->slot_config[slot] = pc;
}

/*
 * Puts the loaded sections into cfg->providers by id: the named ones at
 * theirs, the generic ones at the id their name has in this process (given
 * now if new: only for a config that is otherwise accepted, so a rejected
 * reload takes no id).
 */
void config_place_providers(struct config_loader *ld)
{
    for (int slot = 0; slot < PROVIDER_MAX; slot++) {
        struct provider_config *pc = ld->slot_config[slot];
        if (pc == NULL)
            continue;
        ld->slot_config[slot] = NULL;
        int id = slot;
        if (slot >= PROVIDER_NAMED_COUNT && (id = provider_id_register(ld->slot_names[slot])) < 0) {
            config_add_error(ld, ld->section_line[SEC_PROVIDER + slot], NULL, NULL,
                             "[provider.%s]: no provider id left: this process has seen %d other "
                             "providers since it started (restart it)",
                             ld->slot_names[slot], PROVIDER_MAX - PROVIDER_NAMED_COUNT);
            config_provider_free(pc);
            continue;
        }
        pc->id = (enum provider_id)id;
        ld->cfg->providers[id] = pc;
    }
}
