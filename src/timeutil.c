/*
 * timeutil.c — wall clock and ISO 8601 formatting. The event loop's own clock
 * (ev_now) is monotonic-ish and used for timers; this one is for timestamps
 * that leave the process.
 */
#include "timeutil.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

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
