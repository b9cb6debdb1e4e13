/*
 * ctl.h — the subcommands of oauth-refreshctl, one function each, dispatched by
 * ctl_main.c. Each returns a SPEC §2 exit code. argv[0] is the subcommand name;
 * options after it belong to the subcommand. config_path is the -c value (or the
 * default) and is only loaded by commands that need it.
 */
#ifndef OAUTH_CTL_H
#define OAUTH_CTL_H

#include "common.h"

struct ctl_ctx {
    const char *config_path;
    bool config_path_given; /* -c was on the command line */
};

int ctl_keygen(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_encrypt(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_decrypt(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_migrate(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_status(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_refresh(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_show(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_rotate_keys(const struct ctl_ctx *ctx, int argc, char **argv);
int ctl_grants(const struct ctl_ctx *ctx, int argc, char **argv);

/* Warns on stderr when a conninfo taken from the command line (so shown by ps)
 * holds a password; never prints the conninfo. */
void ctl_warn_argv_conninfo(const char *cmd, const char *conninfo);

#endif
