/*
 * test_config.c — config_load() against real files in a temporary directory:
 * every default, every key, every error with its exact "file:line: [section]
 * key: message" text, secret and non-secret path resolution, warnings, the
 * shipped example config, and the Django key derivations against vectors made
 * with Python's cryptography package.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "b64.h"
#include "config.h"
#include "django_keys.h"
#include "keys.h"
#include "secret.h"
#include "version.h"

/* A valid key for the minimal config (generated for these tests only). */
#define TEST_KEY  "6YD0bRyoj0R-oh8l4gNZKterTSoPD88dQ9-2iyBWFjY="
#define CRYPTO_OK "[crypto]\nkeys_file = fernet.keys\n"

struct fixture {
    char dir[64];
    char path[128];
    char warnings[16][ERRBUF_LEN];
    size_t nwarn;
    struct config_errors errs;
};

static struct fixture fx;

static void write_file(const char *name, const char *text, mode_t mode)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", fx.dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_config.XXXXXX");
    if (mkdtemp(fx.dir) == NULL)
        return -1;
    snprintf(fx.path, sizeof(fx.path), "%s/oauth.conf", fx.dir);
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("STATE_DIRECTORY");
    write_file("fernet.keys", TEST_KEY "\n", 0600);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void warn_cb(void *ud, const char *msg)
{
    (void)ud;
    if (fx.nwarn < 16)
        snprintf(fx.warnings[fx.nwarn++], ERRBUF_LEN, "%s", msg);
}

static struct config *load_text(const char *text)
{
    write_file("oauth.conf", text, 0644);
    fx.nwarn = 0;
    return config_load(fx.path, warn_cb, NULL, &fx.errs);
}

static void dump_errors(void)
{
    for (size_t i = 0; i < fx.errs.count; i++)
        print_message("  error: %s\n", fx.errs.msg[i]);
}

static struct config *expect_ok(const char *text)
{
    struct config *cfg = load_text(text);
    if (cfg == NULL) {
        dump_errors();
        fail_msg("expected the config to load, got %zu error(s)", fx.errs.count);
    }
    return cfg;
}

/* The config is rejected and one of the errors is exactly "<path>:<rest>". */
static void expect_error(const char *text, const char *rest)
{
    char want[2 * ERRBUF_LEN];
    snprintf(want, sizeof(want), "%s%s", fx.path, rest);
    struct config *cfg = load_text(text);
    if (cfg != NULL) {
        config_unref(cfg);
        fail_msg("expected error \"%s\", but the config loaded", want);
    }
    for (size_t i = 0; i < fx.errs.count; i++) {
        if (strcmp(fx.errs.msg[i], want) == 0)
            return;
    }
    dump_errors();
    fail_msg("expected error \"%s\" among the %zu above", want, fx.errs.count);
}

/* Like expect_error, for messages whose tail belongs to another module (keys.c). */
static void expect_error_prefix(const char *text, const char *rest)
{
    char want[2 * ERRBUF_LEN];
    snprintf(want, sizeof(want), "%s%s", fx.path, rest);
    struct config *cfg = load_text(text);
    if (cfg != NULL) {
        config_unref(cfg);
        fail_msg("expected error starting \"%s\", but the config loaded", want);
    }
    for (size_t i = 0; i < fx.errs.count; i++) {
        if (strncmp(fx.errs.msg[i], want, strlen(want)) == 0)
            return;
    }
    dump_errors();
    fail_msg("expected an error starting \"%s\" among the %zu above", want, fx.errs.count);
}

static bool has_warning(const char *needle)
{
    for (size_t i = 0; i < fx.nwarn; i++) {
        if (strstr(fx.warnings[i], needle) != NULL)
            return true;
    }
    return false;
}

static void no_message_contains(const char *secret)
{
    for (size_t i = 0; i < fx.errs.count; i++) {
        if (strstr(fx.errs.msg[i], secret) != NULL)
            fail_msg("error message leaks a secret: %s", fx.errs.msg[i]);
    }
    for (size_t i = 0; i < fx.nwarn; i++) {
        if (strstr(fx.warnings[i], secret) != NULL)
            fail_msg("warning leaks a secret: %s", fx.warnings[i]);
    }
}

/* ---- defaults and every key ------------------------------------------- */

static void minimal_config_gets_every_default(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(CRYPTO_OK);
    assert_int_equal(cfg->refcount, 1);
    assert_int_equal(cfg->generation, 0);
    assert_string_equal(cfg->path, fx.path);
    assert_string_equal(cfg->dir, fx.dir);
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_string_equal(cfg->state_directory, "/var/lib/oauth-refreshd");
    assert_int_equal(cfg->shutdown_timeout_ms, 20000);
    assert_string_equal(cfg->conninfo, "");
    assert_non_null(cfg->keys);
    assert_int_equal(keyring_count(cfg->keys), 1);
    assert_int_equal(cfg->key_derivation, KEY_DERIVATION_NONE);
    assert_int_equal(cfg->lead_time_ms, 300000);
    assert_int_equal(cfg->jitter_ms, 60000);
    assert_int_equal(cfg->scan_interval_ms, 60000);
    assert_int_equal(cfg->batch_size, 500);
    assert_int_equal(cfg->max_in_flight, 512);
    assert_int_equal(cfg->request_timeout_ms, 30000);
    assert_int_equal(cfg->retry_min_ms, 5000);
    assert_int_equal(cfg->retry_max_ms, 3600000);
    assert_int_equal(cfg->config_error_probe_ms, 600000);
    assert_null(cfg->ca_file);
    assert_string_equal(cfg->user_agent, "oauth-refreshd/" OAUTH_VERSION);
    assert_false(cfg->allow_insecure_http);
    assert_null(cfg->metrics_listen);
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++)
        assert_null(cfg->providers[i]);
    assert_int_equal(config_lease_ms(cfg), 30000 * 2 + 10000);
    assert_int_equal(fx.nwarn, 0);
    config_unref(cfg);
}

static void empty_values_mean_default(void **state)
{
    (void)state;
    struct config *cfg = expect_ok("[daemon]\nstate_directory =\n[database]\nconninfo =\n"
                                   "conninfo_file =\n[http]\nca_file =\nuser_agent =\n"
                                   "[metrics]\nlisten =\n" CRYPTO_OK);
    assert_string_equal(cfg->state_directory, "/var/lib/oauth-refreshd");
    assert_string_equal(cfg->conninfo, "");
    assert_null(cfg->ca_file);
    assert_string_equal(cfg->user_agent, "oauth-refreshd/" OAUTH_VERSION);
    assert_null(cfg->metrics_listen);
    config_unref(cfg);
}

static void every_key_is_read(void **state)
{
    (void)state;
    write_file("ca.pem", "not really a bundle\n", 0644);
    write_file("g.secret", "gsecret\n", 0600);
    write_file("gh.secret", "  ghsecret  \n\n", 0600);
    write_file("ms.secret", "mssecret", 0600);
    struct config *cfg = expect_ok(
        "[daemon]\nlog_level = debug\nstate_directory = /srv/state\nshutdown_timeout = 45s\n"
        "[database]\nconninfo = host=db dbname=app\n"
        "[crypto]\nkeys_file = fernet.keys\nkey_derivation = none\n"
        "[refresh]\nlead_time = 10min\njitter = 30s\nscan_interval = 2min\nbatch_size = 50\n"
        "max_in_flight = 64\nrequest_timeout = 15s\nretry_min = 250ms\nretry_max = 2h\n"
        "config_error_probe = 90s\n"
        "[http]\nca_file = ca.pem\nuser_agent = test-agent/1.0\nallow_insecure_http = yes\n"
        "[metrics]\nlisten = 127.0.0.1:9464\n"
        "[provider.google]\nclient_id = gid\nclient_secret_file = g.secret\n"
        "token_url = https://google.test/token\nmax_in_flight = 7\nmax_rate = 2.5\n"
        "[provider.github]\nclient_id = ghid\nclient_secret_file = gh.secret\n"
        "token_url = http://127.0.0.1:8080/token\nmax_in_flight = 9\nmax_rate = 0\n"
        "[provider.microsoft]\nclient_id = msid\nclient_secret_file = ms.secret\n"
        "tenant = contoso.onmicrosoft.com\n");
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    assert_string_equal(cfg->state_directory, "/srv/state");
    assert_int_equal(cfg->shutdown_timeout_ms, 45000);
    assert_string_equal(cfg->conninfo, "host=db dbname=app");
    assert_int_equal(cfg->lead_time_ms, 600000);
    assert_int_equal(cfg->jitter_ms, 30000);
    assert_int_equal(cfg->scan_interval_ms, 120000);
    assert_int_equal(cfg->batch_size, 50);
    assert_int_equal(cfg->max_in_flight, 64);
    assert_int_equal(cfg->request_timeout_ms, 15000);
    assert_int_equal(config_lease_ms(cfg), 40000);
    assert_int_equal(cfg->retry_min_ms, 250);
    assert_int_equal(cfg->retry_max_ms, 7200000);
    assert_int_equal(cfg->config_error_probe_ms, 90000);
    char ca[256];
    snprintf(ca, sizeof(ca), "%s/ca.pem", fx.dir);
    assert_string_equal(cfg->ca_file, ca);
    assert_string_equal(cfg->user_agent, "test-agent/1.0");
    assert_true(cfg->allow_insecure_http);
    assert_string_equal(cfg->metrics_listen, "127.0.0.1:9464");

    struct provider_config *g = cfg->providers[PROVIDER_GOOGLE];
    assert_non_null(g);
    assert_int_equal(g->id, PROVIDER_GOOGLE);
    assert_string_equal(g->client_id, "gid");
    assert_string_equal(g->client_secret, "gsecret");
    assert_string_equal(g->token_url, "https://google.test/token");
    assert_null(g->tenant);
    assert_int_equal(g->max_in_flight, 7);
    assert_true(g->max_rate == 2.5);

    struct provider_config *gh = cfg->providers[PROVIDER_GITHUB];
    assert_non_null(gh);
    assert_string_equal(gh->client_secret, "ghsecret");
    assert_string_equal(gh->token_url, "http://127.0.0.1:8080/token");
    assert_int_equal(gh->max_in_flight, 9);
    assert_true(gh->max_rate == 0.0);

    struct provider_config *ms = cfg->providers[PROVIDER_MICROSOFT];
    assert_non_null(ms);
    assert_string_equal(ms->client_secret, "mssecret");
    assert_string_equal(ms->tenant, "contoso.onmicrosoft.com");
    assert_string_equal(ms->token_url,
                        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/"
                        "token");
    assert_int_equal(ms->max_in_flight, 128);
    assert_true(ms->max_rate == 50.0);

    /* the one http:// URL is allowed but warned about */
    assert_true(has_warning("[provider.github] token_url: \"http://127.0.0.1:8080/token\" is "
                            "plain http://"));
    config_unref(cfg);
}

static void provider_defaults_fill_token_urls(void **state)
{
    (void)state;
    write_file("s", "x\n", 0600);
    struct config *cfg =
        expect_ok(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret_file = s\n"
                            "[provider.github]\nclient_id = b\nclient_secret_file = s\n"
                            "[provider.microsoft]\nclient_id = c\nclient_secret_file = s\n");
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->token_url,
                        "https://oauth2.googleapis.com/token");
    assert_string_equal(cfg->providers[PROVIDER_GITHUB]->token_url,
                        "https://github.com/login/oauth/access_token");
    assert_string_equal(cfg->providers[PROVIDER_MICROSOFT]->token_url,
                        "https://login.microsoftonline.com/common/oauth2/v2.0/token");
    assert_string_equal(cfg->providers[PROVIDER_MICROSOFT]->tenant, "common");
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++) {
        assert_int_equal(cfg->providers[i]->max_in_flight, 128);
        assert_true(cfg->providers[i]->max_rate == 50.0);
    }
    config_unref(cfg);
}

static void log_levels_are_the_five_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int level;
    } cases[] = {{"debug", LOG_DEBUG},
                 {"info", LOG_INFO},
                 {"notice", LOG_NOTICE},
                 {"warning", LOG_WARNING},
                 {"err", LOG_ERR}};
    char text[256];
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        snprintf(text, sizeof(text), "[daemon]\nlog_level = %s\n" CRYPTO_OK, cases[i].name);
        struct config *cfg = expect_ok(text);
        assert_int_equal(cfg->log_level, cases[i].level);
        config_unref(cfg);
    }
    expect_error("[daemon]\nlog_level = loud\n" CRYPTO_OK,
                 ":2: [daemon] log_level: \"loud\" is not one of debug, info, notice, warning, "
                 "err");
}

/* [http] http_version: HTTP/2 unless the operator asks for HTTP/1.1 (issue 12:
 * bench/run measures both against the same nginx). */
static void http_version_is_2_or_1_1(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(CRYPTO_OK);
    assert_int_equal(cfg->http_version, 20);
    config_unref(cfg);
    static const struct {
        const char *text;
        int version;
    } cases[] = {{"2", 20}, {"2.0", 20}, {"1.1", 11}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), CRYPTO_OK "[http]\nhttp_version = %s\n", cases[i].text);
        cfg = expect_ok(text);
        assert_int_equal(cfg->http_version, cases[i].version);
        config_unref(cfg);
    }
    expect_error(CRYPTO_OK "[http]\nhttp_version = 3\n",
                 ":4: [http] http_version: \"3\" is not 2 or 1.1");
    expect_error(CRYPTO_OK "[http]\nhttp_version = 1.0\n",
                 ":4: [http] http_version: \"1.0\" is not 2 or 1.1");
}

static void spec_style_inline_comments_are_ignored(void **state)
{
    (void)state;
    struct config *cfg =
        expect_ok("[daemon]\nlog_level = notice                 # debug | info | notice\n"
                  "state_directory =                # durable spool\n"
                  "shutdown_timeout = 20s ; semicolon too\n"
                  "[crypto]\nkeys_file = fernet.keys          # one key per line\n"
                  "  # an indented comment\n"
                  "[http]\nuser_agent = a#b;c\n");
    assert_int_equal(cfg->log_level, LOG_NOTICE);
    assert_string_equal(cfg->state_directory, "/var/lib/oauth-refreshd");
    assert_int_equal(cfg->shutdown_timeout_ms, 20000);
    assert_string_equal(cfg->user_agent, "a#b;c"); /* no whitespace before: not a comment */
    config_unref(cfg);
}

static void indented_keys_are_keys_not_continuations(void **state)
{
    (void)state;
    struct config *cfg =
        expect_ok("[daemon]\n  log_level = debug\n\tshutdown_timeout = 5s\n" CRYPTO_OK);
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    assert_int_equal(cfg->shutdown_timeout_ms, 5000);
    config_unref(cfg);
}

static void byte_order_mark_and_crlf_are_accepted(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(
        "\xEF\xBB\xBF[daemon]\r\nlog_level = err\r\n[crypto]\r\nkeys_file = fernet.keys\r\n");
    assert_int_equal(cfg->log_level, LOG_ERR);
    config_unref(cfg);
}

/* ---- structural errors ------------------------------------------------ */

static void missing_config_file_is_reported(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof(path), "%s/nope.conf", fx.dir);
    assert_null(config_load(path, warn_cb, NULL, &fx.errs));
    assert_int_equal(fx.errs.count, 1);
    char want[300];
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    assert_string_equal(fx.errs.msg[0], want);
}

static void unknown_key_names_file_line_section_and_key(void **state)
{
    (void)state;
    expect_error("[daemon]\nlog_level = info\nlog_levle = info\n" CRYPTO_OK,
                 ":3: [daemon] log_levle: unknown key");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = x\nclient_secret = y\nscope = z\n",
                 ":6: [provider.google] scope: unknown key");
}

static void unknown_section_is_reported_once_at_its_header(void **state)
{
    (void)state;
    expect_error(CRYPTO_OK "\n[daemonn]\nlog_level = info\nother = 1\n",
                 ":4: [daemonn]: unknown section");
    assert_int_equal(fx.errs.count, 1); /* its keys are not reported again */
}

static void unknown_provider_is_an_error(void **state)
{
    (void)state;
    expect_error(CRYPTO_OK "[provider.yahoo]\nclient_id = x\n",
                 ":3: [provider.yahoo]: unknown provider \"yahoo\" (known: google, github, "
                 "microsoft; any other needs dialect = oauth2)");
    expect_error(CRYPTO_OK "[provider.]\n",
                 ":3: [provider.]: \"\" is not a provider name (a letter a-z, then up to 19 of "
                 "a-z, 0-9, - and _, as in oauth_accounts.provider)");
    expect_error(CRYPTO_OK "[provider.Google]\n",
                 ":3: [provider.Google]: \"Google\" is not a provider name (a letter a-z, then "
                 "up to 19 of a-z, 0-9, - and _, as in oauth_accounts.provider)");
}

/* ---- generic providers (dialect = oauth2) ---- */

#define KEYCLOAK_SECTION                                                                           \
    "[provider.keycloak]\ndialect = oauth2\nclient_id = kc\nclient_secret_file = kc.secret\n"

static void generic_provider_with_token_url_loads(void **state)
{
    (void)state;
    write_file("kc.secret", "kcsecret\n", 0600);
    struct config *cfg =
        expect_ok(CRYPTO_OK KEYCLOAK_SECTION "token_url = https://id.test/realms/a/token\n"
                                             "[provider.okta-prod]\ndialect = oauth2\n"
                                             "token_url = https://okta.test/token\n"
                                             "client_auth = client_secret_post\n"
                                             "send_scope = yes\nclient_id = ok\n"
                                             "client_secret_file = kc.secret\n");
    int kc = provider_id_from_name("keycloak"), okta = provider_id_from_name("okta-prod");
    assert_true(kc >= PROVIDER_NAMED_COUNT && kc < PROVIDER_MAX);
    assert_true(okta >= PROVIDER_NAMED_COUNT && okta < PROVIDER_MAX && okta != kc);
    assert_string_equal(provider_id_name((enum provider_id)kc), "keycloak");
    const struct provider_config *pc = cfg->providers[kc];
    assert_non_null(pc);
    assert_int_equal(pc->id, kc);
    assert_true(pc->generic);
    assert_null(pc->issuer);
    assert_string_equal(pc->token_url, "https://id.test/realms/a/token");
    assert_int_equal(pc->client_auth, CLIENT_AUTH_BASIC); /* RFC 6749 §2.3.1's MUST */
    assert_false(pc->send_scope);
    assert_string_equal(pc->client_secret, "kcsecret");
    pc = cfg->providers[okta];
    assert_int_equal(pc->client_auth, CLIENT_AUTH_POST);
    assert_true(pc->send_scope);
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++)
        assert_null(cfg->providers[i]);
    config_unref(cfg);

    /* A reload that names them the other way round keeps each name's id. */
    cfg = expect_ok(CRYPTO_OK "[provider.okta-prod]\ndialect = oauth2\n"
                              "token_url = https://okta.test/token\nclient_id = ok\n"
                              "client_secret_file = kc.secret\n" KEYCLOAK_SECTION
                              "token_url = https://id.test/realms/a/token\n");
    assert_int_equal(provider_id_from_name("keycloak"), kc);
    assert_int_equal(provider_id_from_name("okta-prod"), okta);
    assert_string_equal(cfg->providers[kc]->client_id, "kc");
    assert_string_equal(cfg->providers[okta]->client_id, "ok");
    config_unref(cfg);
}

static void generic_provider_with_issuer_waits_for_discovery(void **state)
{
    (void)state;
    write_file("kc.secret", "kcsecret\n", 0600);
    struct config *cfg =
        expect_ok(CRYPTO_OK KEYCLOAK_SECTION "issuer = https://id.test/realms/a\n");
    const struct provider_config *pc = cfg->providers[provider_id_from_name("keycloak")];
    assert_non_null(pc);
    assert_string_equal(pc->issuer, "https://id.test/realms/a");
    assert_null(pc->token_url);                             /* discovery says */
    assert_int_equal(pc->client_auth, CLIENT_AUTH_DEFAULT); /* discovery picks */
    config_unref(cfg);
}

static void generic_provider_errors(void **state)
{
    (void)state;
    write_file("kc.secret", "kcsecret\n", 0600);
    expect_error(CRYPTO_OK KEYCLOAK_SECTION "issuer = http://id.test/realms/a\n",
                 ":7: [provider.keycloak] issuer: \"http://id.test/realms/a\" is plain http://; "
                 "token URLs must be https:// (http:// is allowed only with [http] "
                 "allow_insecure_http = yes, for tests)");
    expect_error(CRYPTO_OK KEYCLOAK_SECTION "issuer = https://id.test/a\n"
                                            "token_url = https://id.test/token\n",
                 ":7: [provider.keycloak] issuer: issuer and token_url are mutually exclusive "
                 "(token_url is set at line 8): the issuer's discovery document names the "
                 "token endpoint");
    expect_error(CRYPTO_OK KEYCLOAK_SECTION, ":3: [provider.keycloak] token_url: required (or "
                                             "issuer, for discovery)");
    expect_error(CRYPTO_OK KEYCLOAK_SECTION "token_url = https://id.test/token\n"
                                            "client_auth = private_key_jwt\n",
                 ":8: [provider.keycloak] client_auth: \"private_key_jwt\" is not "
                 "client_secret_basic or client_secret_post");
    expect_error(CRYPTO_OK KEYCLOAK_SECTION "token_url = https://id.test/token\n"
                                            "send_scope = maybe\n",
                 ":8: [provider.keycloak] send_scope: \"maybe\" is not yes or no");
    expect_error(CRYPTO_OK KEYCLOAK_SECTION "token_url = http://id.test/token\n",
                 ":7: [provider.keycloak] token_url: \"http://id.test/token\" is plain http://; "
                 "token URLs must be https:// (http:// is allowed only with [http] "
                 "allow_insecure_http = yes, for tests)");
    expect_error(CRYPTO_OK "[provider.keycloak]\ndialect = saml\ntoken_url = https://a.test/t\n"
                           "client_id = kc\nclient_secret_file = kc.secret\n",
                 ":4: [provider.keycloak] dialect: \"saml\" is not a dialect (oauth2)");
    expect_error(CRYPTO_OK KEYCLOAK_SECTION "token_url = https://id.test/token\ntenant = x\n",
                 ":8: [provider.keycloak] tenant: only valid in [provider.microsoft]");
    /* The three named providers keep their own dialects. */
    expect_error(CRYPTO_OK "[provider.google]\ndialect = oauth2\nclient_id = g\n"
                           "client_secret_file = kc.secret\n",
                 ":4: [provider.google] dialect: google keeps its own dialect; dialect = oauth2 "
                 "is for providers other than google, github and microsoft");
    expect_error(CRYPTO_OK "[provider.github]\nclient_id = g\nclient_secret_file = kc.secret\n"
                           "client_auth = client_secret_post\n",
                 ":6: [provider.github] client_auth: only valid with dialect = oauth2");
    expect_error(CRYPTO_OK "[provider.microsoft]\nclient_id = g\nclient_secret_file = kc.secret\n"
                           "issuer = https://login.test\n",
                 ":6: [provider.microsoft] issuer: only valid with dialect = oauth2");
    expect_error(CRYPTO_OK "[provider.this-name-is-far-too-long]\n",
                 ":3: [provider.this-name-is-far-too-long]: \"this-name-is-far-too-long\" is not a "
                 "provider name (a letter a-z, then up to 19 of a-z, 0-9, - and _, as in "
                 "oauth_accounts.provider)");
    expect_error(CRYPTO_OK "[provider.7eleven]\n",
                 ":3: [provider.7eleven]: \"7eleven\" is not a provider name (a letter a-z, then "
                 "up to 19 of a-z, 0-9, - and _, as in oauth_accounts.provider)");
    /* A rejected config gives no id to the names it held. */
    assert_int_equal(provider_id_from_name("never-accepted"), -1);
    expect_error(CRYPTO_OK "[provider.never-accepted]\ndialect = oauth2\n",
                 ":3: [provider.never-accepted] token_url: required (or issuer, for discovery)");
    assert_int_equal(provider_id_from_name("never-accepted"), -1);
}

static void provider_names_and_ids(void **state)
{
    (void)state;
    assert_true(provider_name_valid("keycloak"));
    assert_true(provider_name_valid("a"));
    assert_true(provider_name_valid("gitlab_self-hosted2"));
    assert_true(provider_name_valid("abcdefghijklmnopqrst")); /* 20 */
    assert_false(provider_name_valid("abcdefghijklmnopqrstu"));
    assert_false(provider_name_valid(""));
    assert_false(provider_name_valid(NULL));
    assert_false(provider_name_valid("Okta"));
    assert_false(provider_name_valid("0kta"));
    assert_false(provider_name_valid("ok ta"));
    assert_false(provider_name_valid("ok.ta"));
    assert_int_equal(provider_id_register("google"), -1); /* named: not a generic name */
    assert_int_equal(provider_id_register("Bad"), -1);
    int a = provider_id_register("regtest-a");
    assert_true(a >= PROVIDER_NAMED_COUNT);
    assert_int_equal(provider_id_register("regtest-a"), a);
    assert_int_equal(provider_id_from_name("regtest-a"), a);
    /* The ids run out at PROVIDER_MAX, and are never given twice. */
    int last = a;
    char name[32];
    for (int i = 0; i < PROVIDER_MAX; i++) {
        snprintf(name, sizeof(name), "regtest-%d", i);
        int id = provider_id_register(name);
        if (id < 0)
            break;
        assert_true(id > last);
        last = id;
    }
    assert_int_equal(last, PROVIDER_MAX - 1);
    assert_int_equal(provider_id_register("one-too-many"), -1);
    assert_string_equal(client_auth_name(CLIENT_AUTH_BASIC), "client_secret_basic");
    assert_string_equal(client_auth_name(CLIENT_AUTH_POST), "client_secret_post");
}

static void duplicate_provider_section_is_an_error(void **state)
{
    (void)state;
    write_file("s", "x\n", 0600);
    expect_error(CRYPTO_OK "[provider.github]\nclient_id = a\nclient_secret_file = s\n"
                           "[provider.github]\nclient_id = b\n",
                 ":6: [provider.github]: section appears twice (first at line 3)");
    expect_error("[daemon]\n" CRYPTO_OK "[daemon]\n",
                 ":4: [daemon]: section appears twice (first at line 1)");
}

static void duplicate_key_is_an_error(void **state)
{
    (void)state;
    expect_error("[refresh]\nbatch_size = 5\nbatch_size = 6\n" CRYPTO_OK,
                 ":3: [refresh] batch_size: set twice (first at line 2)");
}

static void key_outside_a_section_is_an_error(void **state)
{
    (void)state;
    expect_error("log_level = info\n" CRYPTO_OK, ":1: log_level: key outside any [section]");
}

static void syntax_errors_are_all_reported_with_lines(void **state)
{
    (void)state;
    char longline[400];
    snprintf(longline, sizeof(longline), "user_agent = %0300d\n", 0);
    char text[1024];
    snprintf(text, sizeof(text),
             "[daemon\nlog_level = info\njust words\n[http] trailing\n[http]\n%s" CRYPTO_OK
             "continued value\n",
             longline);
    struct config *cfg = load_text(text);
    assert_null(cfg);
    static const char *const want[] = {
        ":1: section header without closing ']'",
        ":2: log_level: key outside any [section]",
        ":3: expected \"key = value\" or \"[section]\"",
        ":4: unexpected text after section header",
        ":6: line too long (at most 198 characters)",
        ":9: expected \"key = value\" or \"[section]\"",
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        char w[ERRBUF_LEN];
        snprintf(w, sizeof(w), "%s%s", fx.path, want[i]);
        bool found = false;
        for (size_t j = 0; j < fx.errs.count; j++)
            found = found || strcmp(fx.errs.msg[j], w) == 0;
        if (!found) {
            dump_errors();
            fail_msg("expected error \"%s\"", w);
        }
    }
    assert_int_equal(fx.errs.count, ARRAY_LEN(want));
}

static void nul_byte_in_a_line_is_an_error(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof(p), "%s/oauth.conf", fx.dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fwrite("[daemon]\nlog_level = in\0fo\n" CRYPTO_OK, 1,
           sizeof("[daemon]\nlog_level = in\0fo\n" CRYPTO_OK) - 1, f);
    fclose(f);
    assert_null(config_load(fx.path, warn_cb, NULL, &fx.errs));
    char want[300];
    snprintf(want, sizeof(want), "%s:2: line contains a NUL byte", fx.path);
    assert_int_equal(fx.errs.count, 1);
    assert_string_equal(fx.errs.msg[0], want);
}

static void errors_are_listed_in_file_order(void **state)
{
    (void)state;
    assert_null(load_text("[daemon]\nlog_level = loud\nfoo = 1\n[provider.yahoo]\n[refresh]\n"
                          "lead_time = x\n"));
    static const char *const want[] = {
        ":2: [daemon] log_level: \"loud\" is not one of debug, info, notice, warning, err",
        ":3: [daemon] foo: unknown key",
        (":4: [provider.yahoo]: unknown provider \"yahoo\" (known: google, github, microsoft; "
         "any other needs dialect = oauth2)"),
        ":6: [refresh] lead_time: \"x\" is not a duration (e.g. 300, 250ms, 5min, 1h30min)",
        ": [crypto] keys_file: required (the Fernet key list) when key_derivation = none",
    };
    assert_int_equal(fx.errs.count, ARRAY_LEN(want));
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        char w[2 * ERRBUF_LEN];
        snprintf(w, sizeof(w), "%s%s", fx.path, want[i]);
        if (strcmp(fx.errs.msg[i], w) != 0) {
            dump_errors();
            fail_msg("error %zu: expected \"%s\"", i, w);
        }
    }
}

static void error_list_is_capped_and_says_so(void **state)
{
    (void)state;
    char text[4096] = "[daemon]\n";
    for (int i = 0; i < 40; i++) {
        char line[32];
        snprintf(line, sizeof(line), "bogus%d = 1\n", i);
        strcat(text, line);
    }
    strcat(text, CRYPTO_OK);
    assert_null(load_text(text));
    assert_int_equal(fx.errs.count, CONFIG_MAX_ERRORS);
    char want[300];
    snprintf(want, sizeof(want), "%s:2: [daemon] bogus0: unknown key", fx.path);
    assert_string_equal(fx.errs.msg[0], want);
    snprintf(want, sizeof(want), "%s: too many errors; only the first %d are shown", fx.path,
             CONFIG_MAX_ERRORS - 1);
    assert_string_equal(fx.errs.msg[CONFIG_MAX_ERRORS - 1], want);
}

/* ---- value errors ------------------------------------------------------ */

static void hostile_durations_are_rejected_with_the_value(void **state)
{
    (void)state;
    static const char *const bad[] = {"",
                                      "-5s",
                                      "+5s",
                                      "5x",
                                      "1h 30",
                                      "s",
                                      "99999999999999999999s",
                                      "9223372036854775808ms",
                                      "5min5min5minx"};
    char text[256], want[256];
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        snprintf(text, sizeof(text), "[refresh]\nlead_time = %s\n" CRYPTO_OK, bad[i]);
        snprintf(want, sizeof(want),
                 ":2: [refresh] lead_time: \"%s\" is not a duration (e.g. 300, 250ms, 5min, "
                 "1h30min)",
                 bad[i]);
        expect_error(text, want);
    }
}

static void durations_out_of_range_are_rejected(void **state)
{
    (void)state;
    expect_error("[refresh]\nrequest_timeout = 11min\n" CRYPTO_OK,
                 ":2: [refresh] request_timeout: must be between 1s and 10min");
    expect_error("[refresh]\nlead_time = 0\n" CRYPTO_OK,
                 ":2: [refresh] lead_time: must be between 1s and 1d");
    expect_error("[refresh]\nconfig_error_probe = 500ms\n" CRYPTO_OK,
                 ":2: [refresh] config_error_probe: must be between 1s and 1d");
    expect_error("[daemon]\nshutdown_timeout = 2h\n" CRYPTO_OK,
                 ":2: [daemon] shutdown_timeout: must be between 0s and 1h");
    expect_error("[refresh]\nretry_min = 2h\nretry_max = 1h\n" CRYPTO_OK,
                 ":2: [refresh] retry_min: must not exceed retry_max");
    expect_error("[refresh]\nretry_min = 2h\n" CRYPTO_OK,
                 ":2: [refresh] retry_min: must not exceed retry_max");
    struct config *cfg = expect_ok("[daemon]\nshutdown_timeout = 0\n[refresh]\njitter = 0\n"
                                   "request_timeout = 10min\n" CRYPTO_OK);
    assert_int_equal(cfg->shutdown_timeout_ms, 0);
    assert_int_equal(cfg->jitter_ms, 0);
    assert_int_equal(config_lease_ms(cfg), 2 * 600000 + 10000);
    config_unref(cfg);
}

static void numbers_are_bounded(void **state)
{
    (void)state;
    expect_error("[refresh]\nbatch_size = 0\n" CRYPTO_OK,
                 ":2: [refresh] batch_size: \"0\" is not a whole number between 1 and 100000");
    expect_error("[refresh]\nmax_in_flight = -1\n" CRYPTO_OK,
                 ":2: [refresh] max_in_flight: \"-1\" is not a whole number between 1 and "
                 "100000");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                           "max_in_flight = 1e3\n",
                 ":6: [provider.google] max_in_flight: \"1e3\" is not a whole number between 1 "
                 "and 100000");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\nmax_rate = "
                           "fast\n",
                 ":6: [provider.google] max_rate: \"fast\" is not a number of requests per "
                 "second between 0 (unlimited) and 100000");
}

static void booleans_are_checked(void **state)
{
    (void)state;
    expect_error("[http]\nallow_insecure_http = maybe\n" CRYPTO_OK,
                 ":2: [http] allow_insecure_http: \"maybe\" is not a boolean (yes/no, "
                 "true/false, on/off, 1/0)");
    struct config *cfg = expect_ok("[http]\nallow_insecure_http = TRUE\n" CRYPTO_OK);
    assert_true(cfg->allow_insecure_http);
    config_unref(cfg);
}

static void metrics_listen_must_be_host_and_port(void **state)
{
    (void)state;
    static const char *const good[] = {"127.0.0.1:9464", "[::1]:9464", "localhost:1",
                                       "0.0.0.0:65535"};
    static const char *const bad[] = {
        "9464",      ":9464",       "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
        "[::1]9464", "host name:1", "[]:1",       "a:b"};
    char text[256], want[256];
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        snprintf(text, sizeof(text), "[metrics]\nlisten = %s\n" CRYPTO_OK, good[i]);
        struct config *cfg = expect_ok(text);
        assert_string_equal(cfg->metrics_listen, good[i]);
        config_unref(cfg);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        snprintf(text, sizeof(text), "[metrics]\nlisten = %s\n" CRYPTO_OK, bad[i]);
        snprintf(want, sizeof(want),
                 ":2: [metrics] listen: \"%s\" is not host:port (e.g. 127.0.0.1:9464 or "
                 "[::1]:9464)",
                 bad[i]);
        expect_error(text, want);
    }
}

static void user_agent_rejects_control_characters(void **state)
{
    (void)state;
    expect_error("[http]\nuser_agent = a\x01"
                 "b\n" CRYPTO_OK,
                 ":2: [http] user_agent: contains control characters");
}

/* ---- providers ---------------------------------------------------------- */

static void token_url_must_be_https(void **state)
{
    (void)state;
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                           "token_url = http://oauth2.googleapis.com/token\n",
                 ":6: [provider.google] token_url: \"http://oauth2.googleapis.com/token\" is "
                 "plain http://; token URLs must be https:// (http:// is allowed only with "
                 "[http] allow_insecure_http = yes, for tests)");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                           "token_url = ftp://example.com/token\n",
                 ":6: [provider.google] token_url: \"ftp://example.com/token\" is not an "
                 "https:// URL");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                           "token_url = https://\n",
                 ":6: [provider.google] token_url: \"https://\" is not a valid URL");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                           "token_url = https://exa mple.com/\n",
                 ":6: [provider.google] token_url: \"https://exa mple.com/\" is not a valid URL");
    expect_error(CRYPTO_OK "[provider.github]\nclient_id = a\nclient_secret = b\n"
                           "token_url = https://{tenant}.example.com/\n",
                 ":6: [provider.github] token_url: {tenant} is only substituted for microsoft");
}

static void http_token_url_allowed_after_provider_section(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                                             "token_url = http://127.0.0.1:1/token\n"
                                             "[http]\nallow_insecure_http = yes\n");
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->token_url, "http://127.0.0.1:1/token");
    char want[ERRBUF_LEN];
    snprintf(want, sizeof(want),
             "%s:6: [provider.google] token_url: \"http://127.0.0.1:1/token\" is plain http:// "
             "(allowed by [http] allow_insecure_http = yes); client secrets and tokens travel "
             "unencrypted",
             fx.path);
    assert_true(has_warning(want));
    config_unref(cfg);
}

static void microsoft_tenant_is_substituted_and_validated(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(
        CRYPTO_OK "[provider.microsoft]\nclient_id = a\nclient_secret = b\n"
                  "tenant = 72f988bf-86f1-41af-91ab-2d7cd011db47\n"
                  "token_url = https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token\n");
    assert_string_equal(cfg->providers[PROVIDER_MICROSOFT]->token_url,
                        "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/"
                        "oauth2/v2.0/token");
    config_unref(cfg);
    expect_error(CRYPTO_OK "[provider.microsoft]\nclient_id = a\nclient_secret = b\n"
                           "tenant = ../evil\n",
                 ":6: [provider.microsoft] tenant: \"../evil\" is not a tenant (common, "
                 "organizations, consumers, a tenant id or domain)");
    expect_error(CRYPTO_OK "[provider.microsoft]\nclient_id = a\nclient_secret = b\n"
                           "tenant = a/b?x=1\n",
                 ":6: [provider.microsoft] tenant: \"a/b?x=1\" is not a tenant (common, "
                 "organizations, consumers, a tenant id or domain)");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n"
                           "tenant = common\n",
                 ":6: [provider.google] tenant: only valid in [provider.microsoft]");
}

static void client_id_is_required(void **state)
{
    (void)state;
    expect_error(CRYPTO_OK "[provider.github]\nclient_secret = b\n",
                 ":3: [provider.github] client_id: required");
    expect_error(CRYPTO_OK "[provider.github]\nclient_id =\nclient_secret = b\n",
                 ":4: [provider.github] client_id: required");
    expect_error(CRYPTO_OK "[provider.google]\n", ":3: [provider.google] client_id: required");
}

static void client_secret_needs_exactly_one_form(void **state)
{
    (void)state;
    write_file("g.secret", "s3cr3t-from-file\n", 0600);
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\n",
                 ":3: [provider.google] client_secret_file: required (or, discouraged, "
                 "client_secret)");
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = inline-s3cr3t\n"
                           "client_secret_file = g.secret\n",
                 ":6: [provider.google] client_secret_file: client_secret and "
                 "client_secret_file are mutually exclusive (client_secret is set at line 5)");
    no_message_contains("inline-s3cr3t");
    no_message_contains("s3cr3t-from-file");
}

static void inline_client_secret_works_but_is_discouraged(void **state)
{
    (void)state;
    struct config *cfg =
        expect_ok(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = inline-s3cr3t\n");
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->client_secret, "inline-s3cr3t");
    assert_int_equal(fx.nwarn, 1);
    char want[ERRBUF_LEN];
    snprintf(want, sizeof(want),
             "%s:5: [provider.google] client_secret: a secret written into the config file is "
             "discouraged; put it in a file named by client_secret_file (systemd "
             "LoadCredential=)",
             fx.path);
    assert_string_equal(fx.warnings[0], want);
    no_message_contains("inline-s3cr3t");
    config_unref(cfg);
}

/* ---- path resolution --------------------------------------------------- */

static void secret_files_resolve_in_credentials_directory_when_set(void **state)
{
    (void)state;
    char creds[128];
    snprintf(creds, sizeof(creds), "%s/creds", fx.dir);
    assert_int_equal(mkdir(creds, 0700), 0);
    write_file("creds/fernet.keys", TEST_KEY "\n" TEST_KEY "\n", 0600);
    write_file("creds/google.secret", "from-credentials\n", 0600);
    write_file("creds/db", "host=creds dbname=x\n", 0600);
    write_file("google.secret", "from-config-dir\n", 0600);
    write_file("db", "host=configdir\n", 0600);
    write_file("ca.pem", "bundle\n", 0644);
    const char *text = CRYPTO_OK "[database]\nconninfo_file = db\n"
                                 "[http]\nca_file = ca.pem\n"
                                 "[provider.google]\nclient_id = a\n"
                                 "client_secret_file = google.secret\n";

    setenv("CREDENTIALS_DIRECTORY", creds, 1);
    struct config *cfg = expect_ok(text);
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->client_secret, "from-credentials");
    assert_string_equal(cfg->conninfo, "host=creds dbname=x");
    assert_int_equal(keyring_count(cfg->keys), 2);
    /* ca_file is not a secret: still next to the config file */
    char ca[256];
    snprintf(ca, sizeof(ca), "%s/ca.pem", fx.dir);
    assert_string_equal(cfg->ca_file, ca);
    config_unref(cfg);

    unsetenv("CREDENTIALS_DIRECTORY");
    cfg = expect_ok(text);
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->client_secret, "from-config-dir");
    assert_string_equal(cfg->conninfo, "host=configdir");
    assert_int_equal(keyring_count(cfg->keys), 1);
    config_unref(cfg);

    /* an empty $CREDENTIALS_DIRECTORY counts as unset */
    setenv("CREDENTIALS_DIRECTORY", "", 1);
    cfg = expect_ok(text);
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->client_secret, "from-config-dir");
    config_unref(cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
}

static void ca_file_is_never_looked_up_in_credentials_directory(void **state)
{
    (void)state;
    char creds[128];
    snprintf(creds, sizeof(creds), "%s/creds", fx.dir);
    assert_int_equal(mkdir(creds, 0700), 0);
    write_file("creds/ca.pem", "bundle\n", 0644);
    write_file("creds/fernet.keys", TEST_KEY "\n", 0600);
    setenv("CREDENTIALS_DIRECTORY", creds, 1);
    char want[512];
    snprintf(want, sizeof(want),
             ":4: [http] ca_file: %s/ca.pem: cannot open: No such file or directory", fx.dir);
    expect_error(CRYPTO_OK "[http]\nca_file = ca.pem\n", want);
    unsetenv("CREDENTIALS_DIRECTORY");
    expect_error(CRYPTO_OK "[http]\nca_file = /\n", ":4: [http] ca_file: /: not a regular file");
}

static void absolute_secret_paths_are_used_as_given(void **state)
{
    (void)state;
    char text[512];
    write_file("abs.secret", "absolute\n", 0600);
    setenv("CREDENTIALS_DIRECTORY", "/nonexistent", 1);
    snprintf(text, sizeof(text),
             "[crypto]\nkeys_file = %s/fernet.keys\n[provider.github]\nclient_id = a\n"
             "client_secret_file = %s/abs.secret\n",
             fx.dir, fx.dir);
    struct config *cfg = expect_ok(text);
    assert_string_equal(cfg->providers[PROVIDER_GITHUB]->client_secret, "absolute");
    config_unref(cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
}

static void missing_and_bad_secret_files_are_reported(void **state)
{
    (void)state;
    char want[512];
    snprintf(want, sizeof(want),
             ":5: [provider.google] client_secret_file: %s/missing.secret: cannot open: No such "
             "file or directory",
             fx.dir);
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret_file = "
                           "missing.secret\n",
                 want);

    write_file("empty.secret", " \n\n", 0600);
    snprintf(want, sizeof(want),
             ":5: [provider.google] client_secret_file: %s/empty.secret: file is empty", fx.dir);
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret_file = "
                           "empty.secret\n",
                 want);

    write_file("two.secret", "line-one-s3cr3t\nline-two-s3cr3t\n", 0600);
    snprintf(want, sizeof(want),
             ":5: [provider.google] client_secret_file: %s/two.secret: holds more than one "
             "line; expected one value",
             fx.dir);
    expect_error(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret_file = "
                           "two.secret\n",
                 want);
    no_message_contains("s3cr3t");

    snprintf(want, sizeof(want),
             ":5: [provider.google] client_secret_file: %s: not a regular "
             "file",
             fx.dir);
    char text[512];
    snprintf(text, sizeof(text),
             CRYPTO_OK "[provider.google]\nclient_id = a\n"
                       "client_secret_file = %s\n",
             fx.dir);
    expect_error(text, want);
}

static void loose_secret_file_mode_is_warned_about(void **state)
{
    (void)state;
    write_file("g.secret", "x\n", 0644);
    struct config *cfg =
        expect_ok(CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret_file = g.secret\n");
    char want[512];
    snprintf(want, sizeof(want),
             "%s:5: [provider.google] client_secret_file: %s/g.secret is accessible to group or "
             "others (mode 0644); it should be 0600 or 0400",
             fx.path, fx.dir);
    assert_true(has_warning(want));
    config_unref(cfg);
}

static void state_directory_comes_from_key_then_env_then_default(void **state)
{
    (void)state;
    setenv("STATE_DIRECTORY", "/run/state-a:/run/state-b", 1);
    struct config *cfg = expect_ok(CRYPTO_OK);
    assert_string_equal(cfg->state_directory, "/run/state-a");
    config_unref(cfg);

    cfg = expect_ok("[daemon]\nstate_directory = /explicit\n" CRYPTO_OK);
    assert_string_equal(cfg->state_directory, "/explicit");
    config_unref(cfg);

    cfg = expect_ok("[daemon]\nstate_directory = spool\n" CRYPTO_OK);
    char want[256];
    snprintf(want, sizeof(want), "%s/spool", fx.dir);
    assert_string_equal(cfg->state_directory, want);
    config_unref(cfg);

    setenv("STATE_DIRECTORY", "relative", 1);
    expect_error(CRYPTO_OK, ": [daemon] state_directory: $STATE_DIRECTORY must be an absolute "
                            "path");
    unsetenv("STATE_DIRECTORY");
    cfg = expect_ok(CRYPTO_OK);
    assert_string_equal(cfg->state_directory, "/var/lib/oauth-refreshd");
    config_unref(cfg);
}

/* ---- database ---------------------------------------------------------- */

static void conninfo_and_conninfo_file_are_exclusive(void **state)
{
    (void)state;
    write_file("db", "host=x password=hunter2\n", 0600);
    expect_error("[database]\nconninfo = host=y\nconninfo_file = db\n" CRYPTO_OK,
                 ":3: [database] conninfo_file: conninfo and conninfo_file are mutually "
                 "exclusive (conninfo is set at line 2)");
    no_message_contains("hunter2");
}

static void conninfo_is_validated_without_echoing_it(void **state)
{
    (void)state;
    expect_error("[database]\nconninfo = host=x password='hunter2\n" CRYPTO_OK,
                 ":2: [database] conninfo: not a valid libpq conninfo string or URI");
    no_message_contains("hunter2");
    write_file("db", "postgresql://u:hunter2@h/db?bogus_option=%zz\n", 0600);
    expect_error("[database]\nconninfo_file = db\n" CRYPTO_OK,
                 ":2: [database] conninfo_file: db does not hold a valid libpq conninfo string "
                 "or URI");
    no_message_contains("hunter2");

    write_file("db", "host=db.internal\n  user=app password=hunter2\n", 0600);
    struct config *cfg = expect_ok("[database]\nconninfo_file = db\n" CRYPTO_OK);
    assert_string_equal(cfg->conninfo, "host=db.internal\n  user=app password=hunter2");
    config_unref(cfg);
    cfg = expect_ok(
        "[database]\nconninfo = postgresql://app@localhost/app?sslmode=verify-full\n" CRYPTO_OK);
    assert_string_equal(cfg->conninfo, "postgresql://app@localhost/app?sslmode=verify-full");
    config_unref(cfg);
}

/* ---- crypto ------------------------------------------------------------ */

static void keys_file_is_required_and_checked(void **state)
{
    (void)state;
    expect_error("[daemon]\n", ": [crypto] keys_file: required (the Fernet key list) when "
                               "key_derivation = none");
    expect_error("[crypto]\nkey_derivation = none\n",
                 ":1: [crypto] keys_file: required (the Fernet key list) when key_derivation = "
                 "none");
    write_file("bad.keys", "# comment\n" TEST_KEY "\nnot-a-key\n", 0600);
    char want[512];
    snprintf(want, sizeof(want), ":2: [crypto] keys_file: %s/bad.keys: line 3: ", fx.dir);
    expect_error_prefix("[crypto]\nkeys_file = bad.keys\n", want);
    snprintf(want, sizeof(want),
             ":2: [crypto] keys_file: %s/none.keys: cannot open: No such file or directory",
             fx.dir);
    expect_error("[crypto]\nkeys_file = none.keys\n", want);
    no_message_contains(TEST_KEY);
    expect_error("[crypto]\nkeys_file = fernet.keys\nkey_derivation = scrypt\n",
                 ":3: [crypto] key_derivation: \"scrypt\" is not one of none, "
                 "django-fernet-fields, django-fernet-encrypted-fields");
}

static void loose_key_file_mode_is_passed_on_as_a_warning(void **state)
{
    (void)state;
    write_file("fernet.keys", TEST_KEY "\n", 0644);
    struct config *cfg = expect_ok(CRYPTO_OK);
    assert_int_equal(fx.nwarn, 1);
    char want[256];
    snprintf(want, sizeof(want), "%s:2: [crypto] keys_file: ", fx.path);
    assert_true(strncmp(fx.warnings[0], want, strlen(want)) == 0);
    config_unref(cfg);
}

static void derivation_keys_are_refused_in_the_wrong_mode(void **state)
{
    (void)state;
    write_file("sk", "secret\n", 0600);
    expect_error(CRYPTO_OK "secret_key_file = sk\n",
                 ":3: [crypto] secret_key_file: only used with a key_derivation other than none");
    expect_error("[crypto]\nkey_derivation = django-fernet-fields\nkeys_file = fernet.keys\n"
                 "secret_key_file = sk\n",
                 ":3: [crypto] keys_file: cannot be combined with key_derivation = "
                 "django-fernet-fields (the keys are derived)");
    expect_error("[crypto]\nkey_derivation = django-fernet-fields\nsecret_key_file = sk\n"
                 "salt_keys_file = sk\n",
                 ":4: [crypto] salt_keys_file: only used with key_derivation = "
                 "django-fernet-encrypted-fields");
    expect_error("[crypto]\nkey_derivation = django-fernet-fields\nsecret_key_file = sk\n"
                 "fernet_keys_file = sk\n",
                 ":4: [crypto] fernet_keys_file: set fernet_keys_file (FERNET_KEYS) or "
                 "secret_key_file (SECRET_KEY), not both (secret_key_file is set at line 3)");
    expect_error("[crypto]\nkey_derivation = django-fernet-fields\n",
                 ":2: [crypto] key_derivation: django-fernet-fields needs fernet_keys_file (the "
                 "app's FERNET_KEYS) or secret_key_file (its SECRET_KEY)");
    expect_error("[crypto]\nkey_derivation = django-fernet-encrypted-fields\nsecret_key_file = "
                 "sk\n",
                 ":2: [crypto] salt_keys_file: required with key_derivation = "
                 "django-fernet-encrypted-fields");
    expect_error("[crypto]\nkey_derivation = django-fernet-encrypted-fields\nsalt_keys_file = "
                 "sk\nfernet_keys_file = sk\n",
                 ":4: [crypto] fernet_keys_file: only used with key_derivation = "
                 "django-fernet-fields");
    write_file("two", "one\ntwo\n", 0600);
    expect_error("[crypto]\nkey_derivation = django-fernet-encrypted-fields\nsecret_key_file = "
                 "two\nsalt_keys_file = sk\n",
                 ":3: [crypto] secret_key_file: holds 2 lines; expected one SECRET_KEY");
}

/*
 * Vectors from Python's cryptography (Debian's /usr/bin/python3):
 *   hk = lambda k: base64.urlsafe_b64encode(HKDF(algorithm=hashes.SHA256(), length=32,
 *        salt=b'django-fernet-fields-hkdf-salt', info=b'django-fernet-fields')
 *        .derive(k.encode())).decode()
 *   pb = lambda s, t: base64.urlsafe_b64encode(PBKDF2HMAC(algorithm=hashes.SHA256(),
 *        length=32, salt=t.encode(), iterations=100000).derive(s.encode())).decode()
 *   tokens: Fernet(key).encrypt_at_time(b"...", 1700000000)
 */
#define DJ_SECRET "django-insecure-example-secret-key#1"
static const struct {
    const char *secret;
    const char *key;
} hkdf_vectors[] = {
    {DJ_SECRET, "nH9Bmyum6sWC0YWC0pm5DxQReRbA_HHBxHvOOdpfwaI="},
    {"old-fernet-key", "u8mUHf3dHbDIY30QkAyzkIuznDCiRVxup1WEzaShC1Y="},
    {"", "SuI5KyU9Uqrrst623hJb98pxlQDRvFaFDCeOBtbqpNU="},
};
static const struct {
    const char *secret, *salt, *key;
} pbkdf2_vectors[] = {
    {DJ_SECRET, "salt-one", "0E08f9HNAg-G4tJi1QynmAANkrnumrCCfWkQ00kFsa0="},
    {"old-secret", "salt-one", "_pdxr6D7ZadEbk2KRQovypCA6otwstw4P_66rksZb5U="},
    {DJ_SECRET, "salt-two", "-QavTBfX5YsF5mg5jhw66sDbnqZPxCPITz77Z9FL7G4="},
    {"old-secret", "salt-two", "XoldoBenSjTQxNDtRKM1JAEnDLGKEz7sFKTgSYzY9OM="},
};
/* Fernet(hk("old-fernet-key")).encrypt_at_time(b"from-fernet-fields", 1700000000) */
#define TOKEN_FF                                                                                   \
    "gAAAAABlU_EAY7_Z9hZwdEp0hrKkcgXDW9Ap6LKjbcvFujUDXsap4L8UVR5vfa-hOX62QL1xbxrPZmweE5-"          \
    "K5W02syLpC"                                                                                   \
    "NaADhhhz2AG9_XRQ-FBaq3di9Y="
/* Fernet(pb("old-secret", "salt-two")).encrypt_at_time(b"from-encrypted-fields", 1700000000) */
#define TOKEN_EFE_LAST                                                                             \
    "gAAAAABlU_"                                                                                   \
    "EAmL6oFsk3Xy8KboKb34kmhttJQmWREgszCTbBq7qXnILO6ehGmsDYEZBwpw4i3r3SfjCIV3lkWBrmtF02r"          \
    "VhJsm4zlF5Afuw4kgVCzXLU-WI="
/* Fernet(pb(DJ_SECRET, "salt-two")).encrypt_at_time(b"second-key", 1700000000) */
#define TOKEN_EFE_SECOND                                                                           \
    "gAAAAABlU_EAduMAkaFY4WXdxPBxXIbwwDrsHBNyC_jUPQzRoJtd08pks9WLhT4F4sMqp8Y0veA213XKLp4Cn_s4D5Y_" \
    "X"                                                                                            \
    "fPIiA=="

static void expect_key(const uint8_t got[FERNET_KEY_BYTES], const char *want_b64, const char *what)
{
    char enc[64];
    b64url_encode(got, FERNET_KEY_BYTES, enc, sizeof(enc));
    if (strcmp(enc, want_b64) != 0)
        fail_msg("%s: expected key %s, derived %s", what, want_b64, enc);
}

static void django_fernet_fields_hkdf_matches_python(void **state)
{
    (void)state;
    uint8_t out[FERNET_KEY_BYTES];
    for (size_t i = 0; i < ARRAY_LEN(hkdf_vectors); i++) {
        assert_int_equal(django_keys_derive_fernet_fields((const uint8_t *)hkdf_vectors[i].secret,
                                                          strlen(hkdf_vectors[i].secret), out),
                         0);
        expect_key(out, hkdf_vectors[i].key, hkdf_vectors[i].secret);
    }
}

static void django_fernet_encrypted_fields_pbkdf2_matches_python(void **state)
{
    (void)state;
    uint8_t out[FERNET_KEY_BYTES];
    for (size_t i = 0; i < ARRAY_LEN(pbkdf2_vectors); i++) {
        assert_int_equal(
            django_keys_derive_encrypted_fields(
                (const uint8_t *)pbkdf2_vectors[i].secret, strlen(pbkdf2_vectors[i].secret),
                (const uint8_t *)pbkdf2_vectors[i].salt, strlen(pbkdf2_vectors[i].salt), out),
            0);
        expect_key(out, pbkdf2_vectors[i].key, pbkdf2_vectors[i].salt);
    }
}

static void expect_decrypts(const struct config *cfg, const char *token, const char *plain,
                            size_t want_index)
{
    struct secret out = {0};
    size_t idx = 99;
    char err[ERRBUF_LEN] = "";
    if (keyring_decrypt(cfg->keys, token, strlen(token), &out, &idx, err, sizeof(err)) != 0)
        fail_msg("expected the derived keyring to decrypt a Python-made token: %s", err);
    assert_int_equal(out.len, strlen(plain));
    assert_memory_equal(out.data, plain, out.len);
    if (idx != want_index)
        fail_msg("expected the token to verify under key %zu, it did under key %zu", want_index,
                 idx);
    secret_clear(&out);
}

static void django_fernet_fields_config_builds_the_multifernet_in_order(void **state)
{
    (void)state;
    write_file("fernet_keys", DJ_SECRET "\n\nold-fernet-key\n", 0600);
    struct config *cfg = expect_ok("[crypto]\nkey_derivation = django-fernet-fields\n"
                                   "fernet_keys_file = fernet_keys\n");
    assert_int_equal(cfg->key_derivation, KEY_DERIVATION_DJANGO_FERNET_FIELDS);
    assert_int_equal(keyring_count(cfg->keys), 2);
    expect_decrypts(cfg, TOKEN_FF, "from-fernet-fields", 1);
    no_message_contains(DJ_SECRET);
    config_unref(cfg);

    /* SECRET_KEY alone (FERNET_KEYS unset): one key; the '#' is part of the secret */
    write_file("django.secret", DJ_SECRET "\n", 0600);
    cfg = expect_ok("[crypto]\nkey_derivation = django-fernet-fields\n"
                    "secret_key_file = django.secret\n");
    assert_int_equal(keyring_count(cfg->keys), 1);
    char *token = NULL;
    assert_int_equal(keyring_encrypt(cfg->keys, (const uint8_t *)"x", 1, &token), 0);
    expect_decrypts(cfg, token, "x", 0);
    free(token);
    config_unref(cfg);
}

static void django_fernet_encrypted_fields_config_puts_secrets_outer_salts_inner(void **state)
{
    (void)state;
    write_file("django.secret", DJ_SECRET "\n", 0600);
    write_file("fallbacks", "old-secret\n", 0600);
    write_file("salts", "salt-one\nsalt-two\n", 0600);
    struct config *cfg = expect_ok("[crypto]\nkey_derivation = django-fernet-encrypted-fields\n"
                                   "secret_key_file = django.secret\n"
                                   "secret_key_fallbacks_file = fallbacks\n"
                                   "salt_keys_file = salts\n");
    assert_int_equal(cfg->key_derivation, KEY_DERIVATION_DJANGO_FERNET_ENCRYPTED_FIELDS);
    /* order: (SECRET_KEY, salt-one), (SECRET_KEY, salt-two), (old, salt-one), (old, salt-two) */
    assert_int_equal(keyring_count(cfg->keys), 4);
    expect_decrypts(cfg, TOKEN_EFE_SECOND, "second-key", 1);
    expect_decrypts(cfg, TOKEN_EFE_LAST, "from-encrypted-fields", 3);
    no_message_contains("old-secret");
    config_unref(cfg);

    /* an empty fallbacks file is fine (SECRET_KEY_FALLBACKS = []) */
    write_file("fallbacks", "\n", 0600);
    cfg = expect_ok("[crypto]\nkey_derivation = django-fernet-encrypted-fields\n"
                    "secret_key_file = django.secret\nsecret_key_fallbacks_file = fallbacks\n"
                    "salt_keys_file = salts\n");
    assert_int_equal(keyring_count(cfg->keys), 2);
    expect_decrypts(cfg, TOKEN_EFE_SECOND, "second-key", 1);
    config_unref(cfg);
}

/* ---- the shipped example and the small API ---------------------------- */

static void shipped_example_config_loads_with_example_credentials(void **state)
{
    (void)state;
    setenv("CREDENTIALS_DIRECTORY", TEST_SOURCE_DIR "/conf/example-credentials", 1);
    fx.nwarn = 0;
    struct config *cfg =
        config_load(TEST_SOURCE_DIR "/conf/oauth-refreshd.conf", warn_cb, NULL, &fx.errs);
    unsetenv("CREDENTIALS_DIRECTORY");
    if (cfg == NULL) {
        dump_errors();
        fail_msg("expected the shipped example config to load");
    }
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_string_equal(cfg->conninfo, "postgresql:///app");
    assert_int_equal(keyring_count(cfg->keys), 1);
    assert_int_equal(cfg->lead_time_ms, 300000);
    assert_int_equal(cfg->shutdown_timeout_ms, 20000);
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++)
        assert_non_null(cfg->providers[i]);
    assert_string_equal(cfg->providers[PROVIDER_MICROSOFT]->token_url,
                        "https://login.microsoftonline.com/common/oauth2/v2.0/token");
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->client_secret,
                        "example-google-client-secret-replace-me");
    config_unref(cfg);
}

static void references_are_counted(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(CRYPTO_OK);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(cfg->refcount, 2);
    config_unref(cfg);
    assert_int_equal(cfg->refcount, 1);
    config_unref(cfg); /* freed: ASan would flag a leak or double free */
    config_unref(NULL);
    assert_null(config_ref(NULL));
}

static void callers_may_pass_no_error_list_or_warn_callback(void **state)
{
    (void)state;
    write_file("oauth.conf", "[daemon]\nbogus = 1\n" CRYPTO_OK, 0644);
    assert_null(config_load(fx.path, NULL, NULL, NULL));
    write_file("oauth.conf", CRYPTO_OK "[provider.google]\nclient_id = a\nclient_secret = b\n",
               0644);
    struct config *cfg = config_load(fx.path, NULL, NULL, NULL); /* warns into the void */
    assert_non_null(cfg);
    config_unref(cfg);
}

static void provider_names_round_trip(void **state)
{
    (void)state;
    assert_int_equal(provider_id_from_name("google"), PROVIDER_GOOGLE);
    assert_int_equal(provider_id_from_name("github"), PROVIDER_GITHUB);
    assert_int_equal(provider_id_from_name("microsoft"), PROVIDER_MICROSOFT);
    assert_int_equal(provider_id_from_name("Google"), -1);
    assert_int_equal(provider_id_from_name(""), -1);
    assert_int_equal(provider_id_from_name(NULL), -1);
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++)
        assert_int_equal(provider_id_from_name(provider_id_name((enum provider_id)i)), i);
    assert_string_equal(provider_id_name(PROVIDER_MAX), "unknown");
}

/*
 * True when p lies in a read-only mapping that is kept out of core dumps
 * (VmFlags "dd"): what sodium_malloc + sodium_mprotect_readonly give, and what
 * malloc never does.
 */
static bool in_guarded_memory(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    bool inside = false, found = false, readonly = false, dontdump = false;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
            if (found)
                break;
            inside = a >= lo && a < hi;
            if (inside) {
                found = true;
                readonly = perms[0] == 'r' && perms[1] == '-';
            }
        } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            dontdump = strstr(line, " dd") != NULL;
        }
    }
    fclose(f);
    return found && readonly && dontdump;
}

static void client_secrets_and_conninfo_live_in_guarded_memory(void **state)
{
    (void)state;
    /* The check itself: malloc'ed memory is not guarded, a guarded copy is. */
    char *plain = strdup("x");
    assert_false(in_guarded_memory(plain));
    free(plain);
    char *g = secret_guarded_dup("abc", 3);
    assert_non_null(g);
    assert_string_equal(g, "abc");
    assert_true(in_guarded_memory(g));
    secret_guarded_free(g);
    secret_guarded_free(NULL);

    write_file("g.secret", "gsecret\n", 0600);
    write_file("db.conninfo", "host=db dbname=app password=hunter2\n", 0600);
    struct config *cfg = expect_ok(CRYPTO_OK "[database]\nconninfo_file = db.conninfo\n"
                                             "[provider.google]\nclient_id = gid\n"
                                             "client_secret_file = g.secret\n"
                                             "[provider.github]\nclient_id = ghid\n"
                                             "client_secret = inline-secret\n");
    assert_string_equal(cfg->conninfo, "host=db dbname=app password=hunter2");
    assert_true(in_guarded_memory(cfg->conninfo));
    assert_string_equal(cfg->providers[PROVIDER_GOOGLE]->client_secret, "gsecret");
    assert_true(in_guarded_memory(cfg->providers[PROVIDER_GOOGLE]->client_secret));
    assert_string_equal(cfg->providers[PROVIDER_GITHUB]->client_secret, "inline-secret");
    assert_true(in_guarded_memory(cfg->providers[PROVIDER_GITHUB]->client_secret));
    config_unref(cfg);

    cfg = expect_ok(CRYPTO_OK "[database]\nconninfo = host=db password=hunter2\n");
    assert_string_equal(cfg->conninfo, "host=db password=hunter2");
    assert_true(in_guarded_memory(cfg->conninfo));
    config_unref(cfg);
    cfg = expect_ok(CRYPTO_OK);
    assert_string_equal(cfg->conninfo, "");
    assert_true(in_guarded_memory(cfg->conninfo));
    config_unref(cfg);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(minimal_config_gets_every_default),
        T(generic_provider_with_token_url_loads),
        T(generic_provider_with_issuer_waits_for_discovery),
        T(generic_provider_errors),
        T(client_secrets_and_conninfo_live_in_guarded_memory),
        T(empty_values_mean_default),
        T(every_key_is_read),
        T(http_version_is_2_or_1_1),
        T(provider_defaults_fill_token_urls),
        T(log_levels_are_the_five_names),
        T(spec_style_inline_comments_are_ignored),
        T(indented_keys_are_keys_not_continuations),
        T(byte_order_mark_and_crlf_are_accepted),
        T(missing_config_file_is_reported),
        T(unknown_key_names_file_line_section_and_key),
        T(unknown_section_is_reported_once_at_its_header),
        T(unknown_provider_is_an_error),
        T(duplicate_provider_section_is_an_error),
        T(duplicate_key_is_an_error),
        T(key_outside_a_section_is_an_error),
        T(syntax_errors_are_all_reported_with_lines),
        T(nul_byte_in_a_line_is_an_error),
        T(errors_are_listed_in_file_order),
        T(error_list_is_capped_and_says_so),
        T(hostile_durations_are_rejected_with_the_value),
        T(durations_out_of_range_are_rejected),
        T(numbers_are_bounded),
        T(booleans_are_checked),
        T(metrics_listen_must_be_host_and_port),
        T(user_agent_rejects_control_characters),
        T(token_url_must_be_https),
        T(http_token_url_allowed_after_provider_section),
        T(microsoft_tenant_is_substituted_and_validated),
        T(client_id_is_required),
        T(client_secret_needs_exactly_one_form),
        T(inline_client_secret_works_but_is_discouraged),
        T(secret_files_resolve_in_credentials_directory_when_set),
        T(ca_file_is_never_looked_up_in_credentials_directory),
        T(absolute_secret_paths_are_used_as_given),
        T(missing_and_bad_secret_files_are_reported),
        T(loose_secret_file_mode_is_warned_about),
        T(state_directory_comes_from_key_then_env_then_default),
        T(conninfo_and_conninfo_file_are_exclusive),
        T(conninfo_is_validated_without_echoing_it),
        T(keys_file_is_required_and_checked),
        T(loose_key_file_mode_is_passed_on_as_a_warning),
        T(derivation_keys_are_refused_in_the_wrong_mode),
        T(django_fernet_fields_hkdf_matches_python),
        T(django_fernet_encrypted_fields_pbkdf2_matches_python),
        T(django_fernet_fields_config_builds_the_multifernet_in_order),
        T(django_fernet_encrypted_fields_config_puts_secrets_outer_salts_inner),
        T(shipped_example_config_loads_with_example_credentials),
        T(references_are_counted),
        T(callers_may_pass_no_error_list_or_warn_callback),
        T(provider_names_round_trip),
        T(provider_names_and_ids), /* last: it uses up every generic id */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
