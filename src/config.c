/*
 * config.c — turns the INI file of SPEC §3 into one immutable, validated,
 * reference-counted struct config: config_load() runs the two phases (the file
 * read into raw values by config_ini.c, then one loader per section:
 * config_sections.c, config_crypto.c, config_provider.c, reading secret files
 * through config_secrets.c), and owns the config's life (defaults, paths,
 * references, freeing). The state of one load and the loader's private API are
 * in config_load.h; the wording of errors is config_errors.c's.
 *
 * It must never put a secret (client secret, conninfo, key, Django secret or
 * salt) into an error or warning, never leave a secret in freed memory, never
 * create directories or connect to anything, and never return a half-checked
 * config: config_load() yields a whole config or NULL.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <sodium.h>

#include "config_load.h"
#include "secret.h"

static void config_free(struct config *cfg)
{
    free(cfg->path);
    free(cfg->dir);
    free(cfg->state_directory);
    secret_guarded_free(cfg->conninfo);
    if (cfg->keys != NULL)
        keyring_unref(cfg->keys);
    free(cfg->ca_file);
    free(cfg->user_agent);
    free(cfg->metrics_listen);
    for (int i = 0; i < PROVIDER_MAX; i++)
        config_provider_free(cfg->providers[i]);
    sodium_memzero(cfg, sizeof(*cfg));
    free(cfg);
}

static struct config *config_new_defaults(void)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    cfg->refcount = 1;
    cfg->log_level = LOG_INFO;
    cfg->shutdown_timeout_ms = 20 * 1000;
    cfg->key_derivation = KEY_DERIVATION_NONE;
    cfg->lead_time_ms = 5 * 60 * 1000;
    cfg->jitter_ms = 60 * 1000;
    cfg->scan_interval_ms = 60 * 1000;
    cfg->heartbeat_interval_ms = 30 * 1000;
    cfg->batch_size = 500;
    cfg->max_in_flight = 512;
    cfg->request_timeout_ms = 30 * 1000;
    cfg->retry_min_ms = 5 * 1000;
    cfg->retry_max_ms = 3600 * 1000;
    cfg->config_error_probe_ms = 10 * 60 * 1000;
    cfg->allow_insecure_http = false;
    cfg->http_version = 20;
    return cfg;
}

/* Absolute path of the file and its directory, without resolving symlinks of the file. */
static bool set_paths(struct config *cfg, const char *path)
{
    char *abs = NULL;
    if (path[0] == '/') {
        abs = strdup(path);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (cwd == NULL)
            return false;
        if (asprintf(&abs, "%s/%s", cwd, path) < 0)
            abs = NULL;
        free(cwd);
    }
    if (abs == NULL)
        return false;
    cfg->path = abs;
    char *slash = strrchr(abs, '/');
    cfg->dir = slash == abs ? strdup("/") : strndup(abs, (size_t)(slash - abs));
    return cfg->dir != NULL;
}

static void load_clear(struct config_loader *ld)
{
    for (int s = 0; s < SEC_COUNT; s++) {
        for (int k = 0; k < K_MAX; k++)
            secure_free_str(ld->raw[s][k].value);
    }
    if (ld->line != NULL) {
        sodium_memzero(ld->line, ld->line_cap);
        free(ld->line);
    }
}

/* Parses, resolves and validates; every problem goes to ld->errs. */
static struct config *load_run(struct config_loader *ld)
{
    ld->errs->count = 0;
    if (sodium_init() < 0) {
        config_add_error(ld, 0, NULL, NULL, "libsodium failed to initialise");
        return NULL;
    }
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++)
        snprintf(ld->slot_names[i], sizeof(ld->slot_names[i]), "%s",
                 provider_id_name((enum provider_id)i));
    ld->cfg = config_new_defaults();
    if (ld->cfg == NULL || !set_paths(ld->cfg, ld->path)) {
        config_add_error(ld, 0, NULL, NULL, "out of memory");
        if (ld->cfg != NULL)
            config_free(ld->cfg);
        return NULL;
    }
    ld->fp = fopen(ld->path, "re");
    if (ld->fp == NULL) {
        config_add_error(ld, 0, NULL, NULL, "cannot open: %s", strerror(errno));
        config_free(ld->cfg);
        return NULL;
    }
    int rc = config_ini_read(ld);
    fclose(ld->fp);
    if (rc == -2)
        config_add_error(ld, 0, NULL, NULL, "out of memory while parsing");
    else if (rc > 0)
        config_add_error(ld, rc, NULL, NULL,
                         "syntax error"); /* not expected: the reader pre-checks */

    if (!ld->read_failed) {
        config_load_daemon(ld);
        config_load_database(ld);
        config_load_refresh(ld);
        config_load_http(ld); /* before providers: allow_insecure_http decides token_url checks */
        config_load_metrics(ld);
        for (int slot = 0; slot < PROVIDER_NAMED_COUNT + ld->generic_slots; slot++)
            config_load_provider(ld, slot);
        config_load_crypto(ld);
        if (ld->errs->count == 0)
            config_place_providers(ld);
    }
    for (int slot = 0; slot < PROVIDER_MAX; slot++)
        config_provider_free(ld->slot_config[slot]);
    load_clear(ld);
    if (ld->errs->count > 0) {
        config_sort_errors(ld);
        config_free(ld->cfg);
        return NULL;
    }
    return ld->cfg;
}

struct config *config_load(const char *path, config_warn_fn warn, void *warn_ud,
                           struct config_errors *errs)
{
    struct config_errors *scratch = NULL;

    if (errs == NULL) {
        /* The caller does not want the details; they are still collected. */
        scratch = calloc(1, sizeof(*scratch));
        if (scratch == NULL)
            return NULL;
        errs = scratch;
    }
    struct config_loader ld = {.path = path, .errs = errs, .warn = warn, .warn_ud = warn_ud};
    struct config *cfg = load_run(&ld);
    free(scratch);
    return cfg;
}

struct config *config_ref(struct config *cfg)
{
    if (cfg != NULL)
        cfg->refcount++;
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg == NULL)
        return;
    if (--cfg->refcount > 0)
        return;
    config_free(cfg);
}

int64_t config_lease_ms(const struct config *cfg)
{
    return cfg->request_timeout_ms * 2 + 10 * 1000;
}
