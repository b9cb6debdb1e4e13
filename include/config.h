/*
 * config.h — the daemon's configuration (SPEC §3) as one immutable,
 * reference-counted struct. config_load() parses the INI file with libinih,
 * reads every secret file it references and validates everything; it returns a
 * whole config or nothing, so a bad file never replaces a good one on SIGHUP.
 * Jobs in flight hold a reference to the config they started with.
 * Secrets (client secrets, conninfo with password, keys) are never printed.
 */
#ifndef OAUTH_CONFIG_H
#define OAUTH_CONFIG_H

#include "common.h"
#include "keys.h"
#include "provider_id.h"

/* How a generic provider sends its client credentials (RFC 6749 §2.3.1). */
enum client_auth {
    CLIENT_AUTH_DEFAULT, /* not configured: basic, or what discovery says is supported */
    CLIENT_AUTH_BASIC,   /* client_secret_basic: HTTP Basic, each part form-urlencoded */
    CLIENT_AUTH_POST,    /* client_secret_post: client_id and client_secret in the body */
};
const char *client_auth_name(enum client_auth a);

enum key_derivation {
    KEY_DERIVATION_NONE,
    KEY_DERIVATION_DJANGO_FERNET_FIELDS,
    KEY_DERIVATION_DJANGO_FERNET_ENCRYPTED_FIELDS,
};

struct provider_config {
    enum provider_id id;
    char *client_id;
    char *client_secret; /* secret: guarded (secret_guarded_dup), read-only */
    char *tenant;        /* microsoft only; "common" by default */
    /*
     * With {tenant} already substituted. A generic provider with an issuer
     * has none (NULL) until OpenID Connect discovery found it: the daemon
     * then sets it, and client_auth, once, on the loop (discovery.c); such a
     * provider is not claimed before.
     */
    char *token_url;
    /* dialect = oauth2 only: */
    bool generic;
    char *issuer; /* NULL, or the https:// issuer whose discovery document is read */
    enum client_auth client_auth_configured; /* as written (DEFAULT when not) */
    enum client_auth client_auth;            /* the one used: set by discovery for an issuer */
    bool send_scope;                         /* send the stored scope with the refresh request */
    unsigned max_in_flight;                  /* default 128 */
    double max_rate;                         /* requests per second; default 50; 0 = unlimited */
};

struct config {
    int refcount;
    char *path;          /* absolute path of the file it came from */
    char *dir;           /* its directory */
    unsigned generation; /* set by the daemon on swap; 0 from config_load */

    /* [daemon] */
    int log_level;         /* syslog priority: LOG_ERR .. LOG_DEBUG; default LOG_INFO */
    char *state_directory; /* resolved: key, else $STATE_DIRECTORY, else /var/lib/oauth-refreshd */
    int64_t shutdown_timeout_ms; /* default 20s */

    /* [database] */
    char *conninfo;                /* secret (may hold a password), guarded and read-only;
                                    "" means libpq's PG* environment */
    int64_t heartbeat_interval_ms; /* 30s: a NOTIFY to ourselves proves LISTEN hears; 0 = off */

    /* [crypto] */
    struct keyring *keys; /* owned reference */
    enum key_derivation key_derivation;

    /* [refresh] */
    int64_t lead_time_ms;       /* 5min */
    int64_t jitter_ms;          /* 1min */
    int64_t scan_interval_ms;   /* 1min */
    unsigned batch_size;        /* 500 */
    unsigned max_in_flight;     /* 512 */
    int64_t request_timeout_ms; /* 30s */
    int64_t retry_min_ms;       /* 5s */
    int64_t retry_max_ms;       /* 1h */
    /* 10min: a provider paused for a configuration error is probed this often */
    int64_t config_error_probe_ms;

    /* [http] */
    char *ca_file;    /* resolved against the config dir; NULL when unset */
    char *user_agent; /* default "oauth-refreshd/<version>" */
    bool allow_insecure_http;
    int http_version; /* [http] http_version: 20 (HTTP/2 when offered, the default) or 11 */

    /* [metrics] */
    char *metrics_listen; /* NULL when off */

    /* [provider.*]: NULL when the section is absent */
    struct provider_config *providers[PROVIDER_MAX];
};

/* Every problem found, each "file:line: [section] key: message". */
#define CONFIG_MAX_ERRORS 32
struct config_errors {
    size_t count;
    char msg[CONFIG_MAX_ERRORS][ERRBUF_LEN];
};

/* Warnings that do not reject the config (loose key-file mode, insecure http). */
typedef void (*config_warn_fn)(void *ud, const char *msg);

/*
 * Loads, resolves and validates path. Returns a config with refcount 1, or NULL
 * with every error found in *errs. Reads $CREDENTIALS_DIRECTORY and
 * $STATE_DIRECTORY from the environment. Connects to nothing.
 */
struct config *config_load(const char *path, config_warn_fn warn, void *warn_ud,
                           struct config_errors *errs) WUR;
struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* Lease length for claims: request_timeout * 2 + 10 s (SPEC §6). */
int64_t config_lease_ms(const struct config *cfg);

#endif
