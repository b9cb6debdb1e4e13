/*
 * timeutil.h — wall-clock time as double seconds and its ISO 8601 UTC form,
 * the one format used in SQL parameters, events and logs; and the one way a
 * libev timer is set (timer_set/timer_arm), so that no value that came from
 * outside — a NOTIFY payload, a row, a header, the environment — can put a
 * NaN, a negative or an endless delay on libev's timer heap.
 */
#ifndef OAUTH_TIMEUTIL_H
#define OAUTH_TIMEUTIL_H

#include <ev.h>

#include "common.h"

#define ISO8601_LEN 64

/* The longest delay or repeat a timer is ever given (one day): nothing in the
 * daemon waits longer, and libev's heap stays ordered by real numbers. */
#define TIMER_MAX_S 86400.0
/* What a NaN becomes: neither a busy loop (0) nor a stall (forever). */
#define TIMER_NAN_S 1.0

double time_now_wall(void);
/* "2026-11-27T17:42:10Z", or with millis "2026-11-27T17:42:10.123Z". */
void time_format_iso8601(double t, bool millis, char buf[ISO8601_LEN]);

/* s bounded to [0, TIMER_MAX_S]; NaN becomes TIMER_NAN_S. Pure. */
double timer_clamp_s(double s);
/*
 * The only caller of ev_timer_set in src/: sets w (which must not be active)
 * to fire after `after` seconds and then every `repeat` (0: once), both
 * through timer_clamp_s; a value it had to change is logged at debug level.
 */
void timer_set(ev_timer *w, double after, double repeat);
/* Stops w if active, sets it as timer_set does, and starts it. */
void timer_arm(struct ev_loop *loop, ev_timer *w, double after, double repeat);

#endif
