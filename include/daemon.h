/*
 * daemon.h — the one daemon context and its life: event loop, database
 * connection, http adapter, scheduler, signals, sd_notify. daemon_run() owns
 * everything it creates and returns a SPEC §2 exit code.
 */
#ifndef OAUTH_DAEMON_H
#define OAUTH_DAEMON_H

#include "common.h"
#include "config.h"

struct daemon_options {
    const char *config_path; /* re-read on SIGHUP */
    bool once;               /* --once: refresh what is due, then exit */
};

/* Runs until done (--once) or until SIGTERM/SIGINT. Takes cfg's reference. */
int daemon_run(struct config *cfg, const struct daemon_options *opt);

#endif
