/*
 * timeutil.c — wall clock and ISO 8601 formatting, and the clamp every libev
 * timer goes through. The event loop's own clock (ev_now) is monotonic-ish and
 * used for timers; the wall clock is for timestamps that leave the process.
 *
 * Why one clamp for all timers: libev keeps timers in a heap ordered by
 * their expiry; a NaN expiry compares false with everything, stays on top of
 * the heap and no other timer fires again (watchdog pings, store flushes,
 * curl timeouts). Callers validate what they parse, but a timer is armed in a
 * dozen places from values computed from others: the last line of defence is
 * here, once.
 */
#include "timeutil.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

#include "log.h"

double time_now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void time_format_iso8601(double t, bool millis, char buf[ISO8601_LEN])
{
    double whole = floor(t);
    time_t secs = (time_t)whole;
    int ms = (int)((t - whole) * 1000.0);
    if (ms > 999)
        ms = 999;
    struct tm tm;
    gmtime_r(&secs, &tm);
    if (millis)
        snprintf(buf, ISO8601_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    else
        snprintf(buf, ISO8601_LEN, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

double timer_clamp_s(double s)
{
    if (isnan(s))
        return TIMER_NAN_S;
    if (s < 0)
        return 0; /* also -0 and -inf: due now */
    if (s > TIMER_MAX_S)
        return TIMER_MAX_S; /* also +inf */
    return s;
}

void timer_set(ev_timer *w, double after, double repeat)
{
    double a = timer_clamp_s(after), r = timer_clamp_s(repeat);
    /* NaN != NaN: a NaN is always reported. */
    if (a != after)
        log_debug("timer: delay %g s is out of range; using %g s", after, a);
    if (r != repeat)
        log_debug("timer: repeat %g s is out of range; using %g s", repeat, r);
    ev_timer_set(w, a, r);
}

void timer_arm(struct ev_loop *loop, ev_timer *w, double after, double repeat)
{
    ev_timer_stop(loop, w);
    timer_set(w, after, repeat);
    ev_timer_start(loop, w);
}
