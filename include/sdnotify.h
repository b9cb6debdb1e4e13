/*
 * sdnotify.h — the daemon's conversation with systemd: READY/RELOADING/
 * STOPPING/STATUS messages and the watchdog. Pings come from a loop timer at
 * half the watchdog interval and only while the loop is healthy, so a wedged
 * loop lets systemd kill it. Without $NOTIFY_SOCKET everything is a no-op.
 */
#ifndef OAUTH_SDNOTIFY_H
#define OAUTH_SDNOTIFY_H

#include <ev.h>

#include "common.h"

struct sdnotify {
    struct ev_loop *loop;
    ev_timer watchdog;
    uint64_t watchdog_usec; /* 0 = disabled */
    bool (*healthy)(void *ud);
    void *ud;
    char last_status[512];
};

/* Starts the watchdog timer when systemd asked for one. healthy may be NULL. */
void sdnotify_init(struct sdnotify *sn, struct ev_loop *loop, bool (*healthy)(void *ud), void *ud);
void sdnotify_ready(struct sdnotify *sn, const char *status);
void sdnotify_reloading(struct sdnotify *sn);
void sdnotify_stopping(struct sdnotify *sn, const char *status);
/* Sends STATUS= only when the text changed. */
void sdnotify_status(struct sdnotify *sn, const char *status);
void sdnotify_stop(struct sdnotify *sn);

#endif
