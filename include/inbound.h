/*
 * inbound.h — parsers for the numbers that reach the daemon at run time from
 * outside its own config: the payloads of the two NOTIFY channels it listens
 * on (any database role may send them) and the values of the rows its queries
 * return. Each is pure (no allocation, no logging, no locale: numbers are read
 * in the C locale), accepts the whole string or nothing, and returns only
 * finite values within documented ranges, so that nothing computed from them
 * can become a NaN or an endless timer. Fuzzed by tests/fuzz/fuzz_notify_*.c.
 */
#ifndef OAUTH_INBOUND_H
#define OAUTH_INBOUND_H

#include "common.h"

/* Epoch seconds the daemon accepts: 0001-01-01 to 9999-12-31T23:59:59Z, the
 * range of an ISO 8601 year of four digits. */
#define INBOUND_EPOCH_MIN (-62135596800.0)
#define INBOUND_EPOCH_MAX 253402300799.0

/* An account id: 1 to INT64_MAX in plain decimal digits (no sign, no blanks). */
bool inbound_account_id(const char *s, int64_t *out) WUR;

/* oauth_refresh_request: the payload is exactly one account id. */
bool inbound_refresh_request(const char *payload, int64_t *id) WUR;

/*
 * oauth_refreshd_account_changed: "<id>" or "<id> <epoch>", where the epoch is
 * what PostgreSQL's extract(epoch FROM expires_at)::text prints (see
 * inbound_pg_epoch). *expires_at is 0 when the payload has no epoch (nothing
 * is known: look at once). False, with the outputs untouched, for anything
 * else: "1 nan", "1 1e999", an id of 300 digits, an empty payload.
 */
bool inbound_account_changed(const char *payload, int64_t *id, double *expires_at) WUR;

/*
 * An epoch as PostgreSQL prints a numeric or float8: "-"? digits ("." digits)?,
 * at most 40 characters, within [INBOUND_EPOCH_MIN, INBOUND_EPOCH_MAX]; or
 * "Infinity" / "-Infinity" (a timestamp stored as 'infinity'), which become
 * the ends of that range so that order is kept and arithmetic stays finite.
 * "NaN", exponents, hex and everything else are refused.
 */
bool inbound_pg_epoch(const char *s, double *out) WUR;

/* A decimal integer ("-"? digits, at most 19 digits) within [min, max]. */
bool inbound_pg_int(const char *s, int64_t min, int64_t max, int64_t *out) WUR;

#endif
