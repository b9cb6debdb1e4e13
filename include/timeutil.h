/*
 * timeutil.h — wall-clock time as double seconds and its ISO 8601 UTC form,
 * the one format used in SQL parameters, events and logs.
 */
#ifndef OAUTH_TIMEUTIL_H
#define OAUTH_TIMEUTIL_H

#include "common.h"

#define ISO8601_LEN 64

double time_now_wall(void);
/* "2026-11-27T17:42:10Z", or with millis "2026-11-27T17:42:10.123Z". */
void time_format_iso8601(double t, bool millis, char buf[ISO8601_LEN]);

#endif
