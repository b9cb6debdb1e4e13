/*
 * daemon_main.c — oauth-refreshd's entry point: the command line (SPEC §2),
 * --check-config, and handing a loaded configuration to the daemon (daemon.h),
 * which owns the event loop. Only startup may exit with a fatal error here;
 * everything at run time is the daemon's to handle.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"
#include "daemon.h"
#include "harden.h"
#include "log.h"
#include "version.h"

#define DEFAULT_CONFIG OAUTH_DEFAULT_CONFIG

static void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: oauth-refreshd [-c FILE] [--check-config] [--once] [--version] [--help]\n\n"
            "Keeps OAuth access tokens stored in PostgreSQL fresh.\n\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "      --check-config validate the configuration and every secret it names, then exit\n"
            "      --once         refresh every account due now, write all results, then exit\n"
            "  -h, --help         show this help\n"
            "      --version      show the version\n\n"
            "Exit status: 0 ok, 1 some refreshes failed (--once) or a rotated token was lost\n"
            "at exit, 64 bad command line, 69 database unavailable, 78 configuration error.\n",
            DEFAULT_CONFIG);
}

static void config_warning_cb(void *ud, const char *msg)
{
    (void)ud;
    log_warning("%s", msg);
}

static void print_config_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        log_err("%s", errs->msg[i]);
    if (errs->count == 0)
        log_err("configuration rejected");
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 1000, OPT_ONCE, OPT_VERSION };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},    {"check-config", no_argument, NULL, OPT_CHECK},
        {"once", no_argument, NULL, OPT_ONCE},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION}, {NULL, 0, NULL, 0},
    };
    const char *config_path = DEFAULT_CONFIG;
    bool check_only = false, once = false;

    log_init("oauth-refreshd");
    char herr[ERRBUF_LEN];
    if (harden_process(herr, sizeof herr) != 0) /* before any secret is read */
        log_warning("%s", herr);
    int opt;
    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case OPT_CHECK:
            check_only = true;
            break;
        case OPT_ONCE:
            once = true;
            break;
        case 'h':
            print_usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("oauth-refreshd %s\n", OAUTH_VERSION);
            return 0;
        default:
            print_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "oauth-refreshd: unexpected argument '%s'\n", argv[optind]);
        print_usage(stderr);
        return EXIT_USAGE;
    }
    if (check_only && once) {
        fprintf(stderr, "oauth-refreshd: --check-config and --once exclude each other\n");
        return EXIT_USAGE;
    }
    if (sodium_init() < 0) {
        log_err("libsodium failed to initialise");
        return EXIT_UNAVAILABLE;
    }

    if (check_only)
        log_force_stderr(true);
    struct config_errors errs = {0};
    struct config *cfg = config_load(config_path, config_warning_cb, NULL, &errs);
    if (!cfg) {
        print_config_errors(&errs);
        return EXIT_CONFIG;
    }
    if (check_only) {
        size_t nprov = 0;
        for (int i = 0; i < PROVIDER_MAX; i++)
            nprov += cfg->providers[i] != NULL;
        printf("%s: configuration OK (%zu key%s, %zu provider%s)\n", cfg->path,
               keyring_count(cfg->keys), keyring_count(cfg->keys) == 1 ? "" : "s", nprov,
               nprov == 1 ? "" : "s");
        config_unref(cfg);
        return 0;
    }

    log_set_level(cfg->log_level);
    struct daemon_options dopt = {.config_path = config_path, .once = once};
    int rc = daemon_run(cfg, &dopt); /* takes the config reference */
    return rc;
}
