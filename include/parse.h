/*
 * parse.h — small, pure parsers for configuration values: durations, booleans,
 * sizes and bounded integers. They never allocate, never log and accept only
 * the whole string (no trailing junk, no overflow, no negative values).
 */
#ifndef OAUTH_PARSE_H
#define OAUTH_PARSE_H

#include "common.h"

/*
 * Duration: a plain number means seconds ("300"); otherwise one or more
 * number+unit groups, optionally separated by spaces: "250ms", "5min", "1h30min",
 * "2h 15min". Units: ms, s/sec/second(s), m/min/minute(s), h/hr/hour(s), d/day(s).
 * Numbers are non-negative integers; the total must fit in int64 milliseconds.
 */
bool parse_duration_ms(const char *s, int64_t *out_ms) WUR;
/* yes/no, true/false, on/off, 1/0 (case-insensitive). */
bool parse_bool(const char *s, bool *out) WUR;
/* The value of one hex digit (either case), or -1. */
int parse_hex_digit(char c);
/* Decimal unsigned integer within [min, max]. */
bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) WUR;
/* Non-negative decimal number (e.g. "50", "0.5") within [min, max]. */
bool parse_double(const char *s, double min, double max, double *out) WUR;
/* Formats a duration for humans into buf ("1h30min", "250ms", "0s"). */
void format_duration_ms(int64_t ms, char *buf, size_t buflen);

#endif
