/*
 * ctl_main.c — oauth-refreshctl's entry point: global options (-c, --help,
 * --version) and dispatch to one subcommand (ctl.h). It owns nothing else; every
 * subcommand loads what it needs and returns a SPEC §2 exit code.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "harden.h"
#include "log.h"
#include "version.h"

#define DEFAULT_CONFIG OAUTH_DEFAULT_CONFIG

struct ctl_command {
    const char *name;
    int (*run)(const struct ctl_ctx *ctx, int argc, char **argv);
    const char *summary;
};

static const struct ctl_command commands[] = {
    {"migrate", ctl_migrate, "create or upgrade the daemon's SQL objects (idempotent)"},
    {"keygen", ctl_keygen, "print a new random Fernet key"},
    {"encrypt", ctl_encrypt, "encrypt stdin to stdout [--keys-file F]"},
    {"decrypt", ctl_decrypt, "decrypt stdin to stdout [--keys-file F]"},
    {"status", ctl_status, "counts, next due time, last errors [--json]"},
    {"show", ctl_show,
     "one account's story: state, next due, last error, token fingerprint: show ID... [--json]"},
    {"refresh", ctl_refresh, "ask the running daemon to refresh accounts now: refresh ID..."},
    {"rotate-keys", ctl_rotate_keys,
     "re-encrypt every stored token under the primary key (online, resumable)"},
    {"grants", ctl_grants, "print the GRANTs a least-privilege daemon role needs: grants ROLE"},
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: oauth-refreshctl [-c FILE] COMMAND [ARGS]\n\n"
            "Options:\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "  -h, --help         show this help\n"
            "      --version      show the version\n\nCommands:\n",
            DEFAULT_CONFIG);
    for (size_t i = 0; i < ARRAY_LEN(commands); i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct ctl_ctx ctx = {.config_path = DEFAULT_CONFIG, .config_path_given = false};

    log_init("oauth-refreshctl");
    log_force_stderr(true);
    char herr[ERRBUF_LEN];
    if (harden_process(herr, sizeof herr) != 0) /* before any secret is read */
        fprintf(stderr, "oauth-refreshctl: warning: %s\n", herr);
    int opt;
    /* '+' stops at the first non-option: the subcommand's options are its own. */
    while ((opt = getopt_long(argc, argv, "+c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            ctx.config_path = optarg;
            ctx.config_path_given = true;
            break;
        case 'h':
            print_usage(stdout);
            return 0;
        case 'V':
            printf("oauth-refreshctl %s\n", OAUTH_VERSION);
            return 0;
        default:
            print_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "oauth-refreshctl: missing command\n");
        print_usage(stderr);
        return EXIT_USAGE;
    }
    int first = optind;
    const char *name = argv[first];
    for (size_t i = 0; i < ARRAY_LEN(commands); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            optind = 0; /* glibc: a full re-initialisation for the subcommand's getopt */
            return commands[i].run(&ctx, argc - first, argv + first);
        }
    }
    fprintf(stderr, "oauth-refreshctl: unknown command '%s'\n", name);
    print_usage(stderr);
    return EXIT_USAGE;
}
