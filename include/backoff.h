/*
 * backoff.h — pure scheduling arithmetic: exponential backoff with full
 * jitter between retry_min and retry_max, Retry-After parsing (seconds or an
 * HTTP date), and the per-provider token bucket. No clocks are read here:
 * callers pass the time and the random draw, so tests are exact.
 */
#ifndef OAUTH_BACKOFF_H
#define OAUTH_BACKOFF_H

#include <time.h>

#include "common.h"

/*
 * Delay before attempt number attempts+1 (attempts >= 1 failures so far):
 * base = min(retry_max, retry_min * 2^(attempts-1)); result is uniform in
 * [base/2, base] using u in [0,1). A Retry-After (retry_after_ms >= 0) wins
 * when it is longer, capped at retry_max.
 */
int64_t backoff_delay_ms(unsigned attempts, int64_t retry_min_ms, int64_t retry_max_ms,
                         int64_t retry_after_ms, double u);

/*
 * Parses a Retry-After header value: delta-seconds or an IMF-fixdate /
 * RFC 850 / asctime date (relative to now). Returns milliseconds >= 0, or -1
 * when absent/unparseable.
 */
int64_t retry_after_parse_ms(const char *value, time_t now);

struct token_bucket {
    double rate;  /* tokens per second; <= 0 means unlimited */
    double burst; /* capacity */
    double tokens;
    double last; /* time of last update, seconds */
};

void token_bucket_init(struct token_bucket *tb, double rate, double now);
/* Takes one token if available. */
bool token_bucket_take(struct token_bucket *tb, double now);
/* Seconds until one token is available (0 if now). */
double token_bucket_wait(const struct token_bucket *tb, double now);

#endif
