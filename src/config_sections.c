/*
 * config_sections.c — the second phase of config_load() for the plain
 * sections: [daemon], [database], [refresh], [http] and [metrics], each raw
 * value checked and set in the config, defaults kept where a key is unset.
 * Private to the loader (config_load.h); [crypto] is config_crypto.c's and
 * [provider.*] config_provider.c's.
 *
 * The conninfo may hold a password: it is kept guarded, and libpq's own
 * parse message (which may quote it) is never shown.
 */
#include "config_load.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "log.h"
#include "parse.h"
#include "secret.h"
#include "version.h"

#define DEFAULT_STATE_DIRECTORY "/var/lib/oauth-refreshd"

void config_load_daemon(struct config_loader *ld)
{
    struct config *cfg = ld->cfg;
    int line;
    const char *v;

    if ((v = config_raw_get(ld, SEC_DAEMON, K_LOG_LEVEL, &line)) != NULL ||
        ld->raw[SEC_DAEMON][K_LOG_LEVEL].line != 0) {
        int lvl = log_level_from_name(v != NULL ? v : "");
        if (lvl < 0)
            config_add_error(ld, line, "daemon", "log_level",
                             "\"%s\" is not one of debug, info, notice, warning, err", v ? v : "");
        else
            cfg->log_level = lvl;
    }

    v = config_raw_get(ld, SEC_DAEMON, K_STATE_DIRECTORY, &line);
    if (v != NULL) {
        cfg->state_directory = config_path_join(cfg->dir, v);
    } else {
        /* systemd passes StateDirectory= as absolute paths joined by ':'. */
        const char *env = getenv("STATE_DIRECTORY");
        if (env != NULL && env[0] != '\0' && env[0] != ':') {
            size_t n = strcspn(env, ":");
            cfg->state_directory = strndup(env, n);
        } else {
            cfg->state_directory = strdup(DEFAULT_STATE_DIRECTORY);
        }
    }
    if (cfg->state_directory == NULL)
        config_add_error(ld, 0, NULL, NULL, "out of memory");
    else if (cfg->state_directory[0] != '/')
        config_add_error(ld, 0, "daemon", "state_directory",
                         "$STATE_DIRECTORY must be an absolute path");

    (void)config_get_duration(ld, SEC_DAEMON, K_SHUTDOWN_TIMEOUT, 0, 3600 * 1000LL,
                              &cfg->shutdown_timeout_ms);
}

static bool conninfo_valid(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    /* libpq's message may quote part of the string, which may hold a password. */
    if (err != NULL)
        PQfreemem(err);
    if (opts == NULL)
        return false;
    PQconninfoFree(opts);
    return true;
}

static void load_heartbeat(struct config_loader *ld)
{
    int64_t ms = ld->cfg->heartbeat_interval_ms;
    if (!config_get_duration(ld, SEC_DATABASE, K_HEARTBEAT_INTERVAL, 0, 24 * 3600 * 1000LL, &ms))
        return;
    if (ms != 0 && ms < 1000) {
        int line;
        (void)config_raw_get(ld, SEC_DATABASE, K_HEARTBEAT_INTERVAL, &line);
        config_add_error(ld, line, "database", "heartbeat_interval",
                         "must be 0 (off) or at least 1s");
        return;
    }
    ld->cfg->heartbeat_interval_ms = ms;
}

void config_load_database(struct config_loader *ld)
{
    int line, file_line;
    load_heartbeat(ld);
    const char *inline_v = config_raw_get(ld, SEC_DATABASE, K_CONNINFO, &line);
    const char *file_v = config_raw_get(ld, SEC_DATABASE, K_CONNINFO_FILE, &file_line);

    if (inline_v != NULL && file_v != NULL) {
        config_add_error(
            ld, file_line, "database", "conninfo_file",
            "conninfo and conninfo_file are mutually exclusive (conninfo is set at line %d)", line);
        return;
    }
    if (file_v != NULL) {
        char *c = config_secret_single(ld, file_v, SEC_DATABASE, K_CONNINFO_FILE, file_line, true);
        if (c == NULL)
            return;
        if (!conninfo_valid(c)) {
            config_add_error(ld, file_line, "database", "conninfo_file",
                             "%s does not hold a valid libpq conninfo string or URI", file_v);
            secret_guarded_free(c);
            return;
        }
        ld->cfg->conninfo = c;
        return;
    }
    if (inline_v != NULL && !conninfo_valid(inline_v)) {
        config_add_error(ld, line, "database", "conninfo",
                         "not a valid libpq conninfo string or URI");
        return;
    }
    /* Guarded like the keys. libpq makes its own copies when it connects
     * (db.c, ctl_db.c): those are out of our hands. */
    const char *c = inline_v != NULL ? inline_v : "";
    if ((ld->cfg->conninfo = secret_guarded_dup(c, strlen(c))) == NULL)
        config_add_error(ld, line, "database", "conninfo", "out of memory");
}

void config_load_refresh(struct config_loader *ld)
{
    struct config *cfg = ld->cfg;
    const int64_t S = 1000, MIN = 60 * S, H = 60 * MIN, D = 24 * H;

    (void)config_get_duration(ld, SEC_REFRESH, K_LEAD_TIME, S, D, &cfg->lead_time_ms);
    (void)config_get_duration(ld, SEC_REFRESH, K_JITTER, 0, D, &cfg->jitter_ms);
    (void)config_get_duration(ld, SEC_REFRESH, K_SCAN_INTERVAL, S, D, &cfg->scan_interval_ms);
    (void)config_get_unsigned(ld, SEC_REFRESH, K_BATCH_SIZE, 1, 100000, &cfg->batch_size);
    (void)config_get_unsigned(ld, SEC_REFRESH, K_MAX_IN_FLIGHT, 1, 100000, &cfg->max_in_flight);
    (void)config_get_duration(ld, SEC_REFRESH, K_REQUEST_TIMEOUT, S, 10 * MIN,
                              &cfg->request_timeout_ms);
    bool a = config_get_duration(ld, SEC_REFRESH, K_RETRY_MIN, 100, D, &cfg->retry_min_ms);
    bool b = config_get_duration(ld, SEC_REFRESH, K_RETRY_MAX, S, 7 * D, &cfg->retry_max_ms);
    if (a && b && cfg->retry_min_ms > cfg->retry_max_ms) {
        int line;
        (void)config_raw_get(ld, SEC_REFRESH, K_RETRY_MIN, &line);
        config_add_error(ld, line, "refresh", "retry_min", "must not exceed retry_max");
    }
    (void)config_get_duration(ld, SEC_REFRESH, K_CONFIG_ERROR_PROBE, S, D,
                              &cfg->config_error_probe_ms);
}

void config_load_http(struct config_loader *ld)
{
    struct config *cfg = ld->cfg;
    int line;
    const char *v;

    if ((v = config_raw_get(ld, SEC_HTTP, K_CA_FILE, &line)) != NULL) {
        /* Not a secret: always next to the config file, never in the credentials. */
        char *path = config_path_join(cfg->dir, v);
        if (path == NULL) {
            config_add_error(ld, line, "http", "ca_file", "out of memory");
        } else {
            struct stat st;
            int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
            if (fd < 0) {
                config_add_error(ld, line, "http", "ca_file", "%s: cannot open: %s", path,
                                 strerror(errno));
                free(path);
            } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
                config_add_error(ld, line, "http", "ca_file", "%s: not a regular file", path);
                free(path);
            } else {
                cfg->ca_file = path;
            }
            if (fd >= 0)
                close(fd);
        }
    }

    if ((v = config_raw_get(ld, SEC_HTTP, K_USER_AGENT, &line)) != NULL) {
        if (config_has_control_chars(v))
            config_add_error(ld, line, "http", "user_agent", "contains control characters");
        else
            cfg->user_agent = config_dup_or_oom(ld, v);
    } else {
        cfg->user_agent = config_dup_or_oom(ld, "oauth-refreshd/" OAUTH_VERSION);
    }

    if (ld->raw[SEC_HTTP][K_ALLOW_INSECURE_HTTP].line != 0) {
        v = config_raw_get(ld, SEC_HTTP, K_ALLOW_INSECURE_HTTP, &line);
        if (v == NULL || !parse_bool(v, &cfg->allow_insecure_http))
            config_add_error(ld, line, "http", "allow_insecure_http",
                             "\"%s\" is not a boolean (yes/no, true/false, on/off, 1/0)",
                             v ? v : "");
    }

    /* HTTP/2 (one multiplexed connection per endpoint) or HTTP/1.1 (a pool of
     * kept-alive connections): bench/run measures both (issue 12). */
    cfg->http_version = 20;
    if ((v = config_raw_get(ld, SEC_HTTP, K_HTTP_VERSION, &line)) != NULL) {
        if (strcmp(v, "2") == 0 || strcmp(v, "2.0") == 0)
            cfg->http_version = 20;
        else if (strcmp(v, "1.1") == 0)
            cfg->http_version = 11;
        else
            config_add_error(ld, line, "http", "http_version", "\"%s\" is not 2 or 1.1", v);
    }
}

/* host:port, [v6]:port; port 1..65535. */
static bool listen_valid(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close == s + 1 || close[1] != ':')
            return false;
        for (const char *p = s + 1; p < close; p++) {
            if (strchr("0123456789abcdefABCDEF:.", *p) == NULL)
                return false;
        }
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s)
            return false;
        for (const char *p = s; p < colon; p++) {
            if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", *p) ==
                NULL)
                return false;
        }
    }
    uint64_t port;
    return parse_u64(colon + 1, 1, 65535, &port);
}

void config_load_metrics(struct config_loader *ld)
{
    int line;
    const char *v = config_raw_get(ld, SEC_METRICS, K_LISTEN, &line);
    if (v == NULL)
        return;
    if (!listen_valid(v)) {
        config_add_error(ld, line, "metrics", "listen",
                         "\"%s\" is not host:port (e.g. 127.0.0.1:9464 or [::1]:9464)", v);
        return;
    }
    ld->cfg->metrics_listen = config_dup_or_oom(ld, v);
}
