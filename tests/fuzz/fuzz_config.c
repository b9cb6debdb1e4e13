/*
 * fuzz_config.c — libFuzzer target for config_load (config.h): the input is
 * written as the config file into a private temporary directory that also
 * holds a valid Fernet key file and a few secret files, so that relative
 * *_file paths in the input can succeed as well as fail.
 *
 * Properties: config_load returns a whole config or NULL with at least one
 * error; every message is terminated and names the file; the content of a
 * secret file never appears in an error or a warning; an accepted config
 * satisfies the documented bounds (retry_min <= retry_max, token URLs are
 * http(s), providers have a client_id and secret, keys are loaded).
 *
 * Inputs that name /dev, /proc, /sys or /run are skipped: a FIFO or a device
 * could block or never end, which would be a fuzzer artefact, not a finding.
 */
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "keys.h"

/* Secret-file contents that must never show up in a message. */
#define CLIENT_SECRET_TEXT "zq8-client-secret-never-printed-7Hk"
#define CONNINFO_TEXT      "host=127.0.0.1 dbname=app password=zq8-db-password-never-printed"
#define DJANGO_SECRET_TEXT "zq8-django-secret-key-never-printed-Lm3"
#define FERNET_KEY_TEXT    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="

static char dir[64];
static char cfg_path[128];

static void write_file(const char *name, const char *text, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    FUZZ_CHECK(fd >= 0, "cannot create %s", path);
    size_t n = strlen(text);
    FUZZ_CHECK(write(fd, text, n) == (ssize_t)n, "cannot write %s", path);
    close(fd);
}

static const char *const files[] = {"fernet.keys",        "google.secret", "github.secret",
                                    "conninfo",           "django.secret", "ca.pem",
                                    "oauth-refreshd.conf"};

static void cleanup(void)
{
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void init_once(void)
{
    if (dir[0] != '\0')
        return;
    snprintf(dir, sizeof(dir), "/tmp/oauth-fuzz-config-XXXXXX");
    FUZZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(cfg_path, sizeof(cfg_path), "%s/oauth-refreshd.conf", dir);
    write_file("fernet.keys", "# primary\n" FERNET_KEY_TEXT "\n", 0600);
    write_file("google.secret", CLIENT_SECRET_TEXT "\n", 0600);
    write_file("github.secret", CLIENT_SECRET_TEXT "\n", 0644); /* warns: loose mode */
    write_file("conninfo", CONNINFO_TEXT "\n", 0600);
    write_file("django.secret", DJANGO_SECRET_TEXT "\n", 0600);
    write_file("ca.pem", "not really a certificate\n", 0644);
    /* Secrets resolve against the config's directory; no systemd hand-offs. */
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("STATE_DIRECTORY");
    atexit(cleanup);
}

static void check_message(const char *msg, size_t cap)
{
    FUZZ_CHECK(memchr(msg, '\0', cap) != NULL, "message not terminated");
    static const char *const secrets[] = {CLIENT_SECRET_TEXT, "zq8-db-password", DJANGO_SECRET_TEXT,
                                          FERNET_KEY_TEXT};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        FUZZ_CHECK(strstr(msg, secrets[i]) == NULL, "secret-file content #%zu in a message: %s", i,
                   msg);
}

static void warn_cb(void *ud, const char *msg)
{
    (void)ud;
    check_message(msg, strlen(msg) + 1);
}

static bool mentions_special(const uint8_t *data, size_t size)
{
    static const char *const bad[] = {"dev", "proc", "sys", "run"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (memmem(data, size, bad[i], strlen(bad[i])) != NULL)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16 * 1024 || mentions_special(data, size))
        return 0;
    /* The secrets must not be in the input itself, or quoting the input would look like a
     * leak (libFuzzer's comparison tracing does find them). */
    static const char *const planted[] = {"zq8-", FERNET_KEY_TEXT};
    for (size_t i = 0; i < sizeof(planted) / sizeof(planted[0]); i++)
        if (memmem(data, size, planted[i], strlen(planted[i])) != NULL)
            return 0;
    init_once();

    int fd = open(cfg_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0, "cannot write the config");
    FUZZ_CHECK(write(fd, data, size) == (ssize_t)size, "short write");
    close(fd);

    struct config_errors errs;
    memset(&errs, 0x5a, sizeof(errs));
    struct config *cfg = config_load(cfg_path, warn_cb, NULL, &errs);
    if (cfg == NULL) {
        FUZZ_CHECK(errs.count >= 1 && errs.count <= CONFIG_MAX_ERRORS, "rejected with %zu errors",
                   errs.count);
        for (size_t i = 0; i < errs.count; i++) {
            check_message(errs.msg[i], sizeof(errs.msg[i]));
            FUZZ_CHECK(strncmp(errs.msg[i], cfg_path, strlen(cfg_path)) == 0,
                       "error %zu does not start with the file name: %s", i, errs.msg[i]);
        }
        return 0;
    }
    FUZZ_CHECK(errs.count == 0, "accepted with %zu errors", errs.count);
    FUZZ_CHECK(cfg->refcount == 1 && cfg->keys != NULL && keyring_count(cfg->keys) >= 1,
               "accepted config without keys");
    FUZZ_CHECK(cfg->retry_min_ms <= cfg->retry_max_ms, "retry_min > retry_max");
    FUZZ_CHECK(cfg->request_timeout_ms >= 1000 && cfg->batch_size >= 1 && cfg->max_in_flight >= 1,
               "bounds");
    FUZZ_CHECK(cfg->state_directory != NULL && cfg->state_directory[0] == '/', "state_directory");
    FUZZ_CHECK(cfg->conninfo != NULL && cfg->user_agent != NULL, "defaults missing");
    for (int i = 0; i < PROVIDER_MAX; i++) {
        const struct provider_config *pc = cfg->providers[i];
        if (pc == NULL)
            continue;
        FUZZ_CHECK(pc->client_id && pc->client_id[0] && pc->client_secret && pc->client_secret[0],
                   "provider %d without credentials", i);
        FUZZ_CHECK(pc->token_url && (strncasecmp(pc->token_url, "https://", 8) == 0 ||
                                     (cfg->allow_insecure_http &&
                                      strncasecmp(pc->token_url, "http://", 7) == 0)),
                   "provider %d token_url scheme", i);
        FUZZ_CHECK(strstr(pc->token_url, "{tenant}") == NULL, "unsubstituted {tenant}");
        FUZZ_CHECK(pc->max_in_flight >= 1, "provider max_in_flight 0");
    }
    config_unref(config_ref(cfg));
    FUZZ_CHECK(cfg->refcount == 1, "ref/unref");
    config_unref(cfg);
    return 0;
}
