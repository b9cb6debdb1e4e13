/*
 * sdnotify.c — sd_notify messages and the watchdog timer. It never decides
 * anything about the daemon's state; it only reports what it is told, and asks
 * the healthy() callback before each watchdog ping.
 */
#include "sdnotify.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "timeutil.h"

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sdnotify *sn = w->data;
    if (!sn->healthy || sn->healthy(sn->ud))
        sd_notify(0, "WATCHDOG=1");
}

void sdnotify_init(struct sdnotify *sn, struct ev_loop *loop, bool (*healthy)(void *ud), void *ud)
{
    memset(sn, 0, sizeof *sn);
    sn->loop = loop;
    sn->healthy = healthy;
    sn->ud = ud;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        sn->watchdog_usec = usec;
        double interval = (double)usec / 2e6;
        ev_init(&sn->watchdog, watchdog_cb);
        timer_set(&sn->watchdog, interval, interval);
        sn->watchdog.data = sn;
        ev_timer_start(loop, &sn->watchdog);
        /* Loop timers must not keep --once alive. */
        ev_unref(loop);
    }
}

void sdnotify_ready(struct sdnotify *sn, const char *status)
{
    snprintf(sn->last_status, sizeof sn->last_status, "%s", status ? status : "");
    sd_notifyf(0, "READY=1\nSTATUS=%s", sn->last_status);
}

void sdnotify_reloading(struct sdnotify *sn)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=reloading configuration", usec);
}

void sdnotify_stopping(struct sdnotify *sn, const char *status)
{
    snprintf(sn->last_status, sizeof sn->last_status, "%s", status ? status : "stopping");
    sd_notifyf(0, "STOPPING=1\nSTATUS=%s", sn->last_status);
}

void sdnotify_status(struct sdnotify *sn, const char *status)
{
    if (strcmp(sn->last_status, status) == 0)
        return;
    snprintf(sn->last_status, sizeof sn->last_status, "%s", status);
    sd_notifyf(0, "STATUS=%s", sn->last_status);
}

void sdnotify_stop(struct sdnotify *sn)
{
    if (sn->watchdog_usec && ev_is_active(&sn->watchdog)) {
        ev_ref(sn->loop);
        ev_timer_stop(sn->loop, &sn->watchdog);
    }
}
