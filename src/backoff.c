/*
 * backoff.c — pure scheduling arithmetic: exponential backoff with jitter,
 * the Retry-After header (delta-seconds or any of RFC 9110's three HTTP-date
 * forms) and the per-provider token bucket.
 *
 * It owns no state and reads no clock: every function takes the time and the
 * random draw from its caller, so tests are exact. It must never trust a
 * Retry-After value: anything that is not exactly one of the allowed forms is
 * rejected (-1), and huge values are clamped rather than overflowing.
 */
#include "backoff.h"

#include <ctype.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <string.h>

/* RFC 9110 §1.2.2: an overflowing delta-seconds is treated as 2^31. */
#define RETRY_AFTER_MAX_S INT64_C(2147483648)

int64_t backoff_delay_ms(unsigned attempts, int64_t retry_min_ms, int64_t retry_max_ms,
                         int64_t retry_after_ms, double u)
{
    if (retry_min_ms < 1)
        retry_min_ms = 1;
    if (retry_max_ms < retry_min_ms)
        retry_max_ms = retry_min_ms;
    if (attempts < 1)
        attempts = 1;
    if (!(u >= 0.0)) /* also catches NaN */
        u = 0.0;
    if (u >= 1.0)
        u = nextafter(1.0, 0.0);

    /* Doubling stops at retry_max, so it can never overflow. */
    int64_t base = retry_min_ms;
    for (unsigned i = 1; i < attempts && base < retry_max_ms; i++)
        base = base > retry_max_ms / 2 ? retry_max_ms : base * 2;
    if (base > retry_max_ms)
        base = retry_max_ms;

    int64_t half = base / 2;
    int64_t delay = half + (int64_t)(u * (double)(base - half));
    if (delay > base)
        delay = base;

    if (retry_after_ms >= 0 && retry_after_ms > delay)
        delay = retry_after_ms < retry_max_ms ? retry_after_ms : retry_max_ms;
    return delay;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses a date in exactly one format; the whole string must be consumed. */
static bool parse_date_fmt(const char *s, const char *fmt, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(s, fmt, &tm);
    if (!end || *end != '\0')
        return false;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = t;
    return true;
}

static bool parse_http_date(const char *s, time_t *out)
{
    /*
     * Day and month names must be English whatever the process locale is:
     * switch this thread to the C locale for the duration of the parse.
     */
    locale_t c_loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    locale_t old = (locale_t)0;
    if (c_loc != (locale_t)0)
        old = uselocale(c_loc);

    /* Only the three forms RFC 9110 §5.6.7 allows, and only with "GMT". */
    bool ok = parse_date_fmt(s, "%a, %d %b %Y %H:%M:%S GMT", out) || /* IMF-fixdate */
              parse_date_fmt(s, "%A, %d-%b-%y %H:%M:%S GMT", out) || /* RFC 850 */
              parse_date_fmt(s, "%a %b %e %H:%M:%S %Y", out);        /* asctime */

    if (c_loc != (locale_t)0) {
        uselocale(old);
        freelocale(c_loc);
    }
    return ok;
}

int64_t retry_after_parse_ms(const char *value, time_t now)
{
    if (!value)
        return -1;
    while (is_ows(*value))
        value++;
    size_t len = strlen(value);
    while (len > 0 && is_ows(value[len - 1]))
        len--;
    if (len == 0 || len > 64)
        return -1;

    char buf[65];
    memcpy(buf, value, len);
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 || c > 0x7e)
            return -1;
    }

    if (isdigit((unsigned char)buf[0])) {
        int64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)buf[i]))
                return -1;
            if (secs < RETRY_AFTER_MAX_S)
                secs = secs * 10 + (buf[i] - '0');
        }
        if (secs > RETRY_AFTER_MAX_S)
            secs = RETRY_AFTER_MAX_S;
        return secs * 1000;
    }

    time_t when;
    if (!parse_http_date(buf, &when))
        return -1;
    if (when <= now)
        return 0;
    int64_t delta = (int64_t)when - (int64_t)now;
    if (delta > RETRY_AFTER_MAX_S)
        delta = RETRY_AFTER_MAX_S;
    return delta * 1000;
}

void token_bucket_init(struct token_bucket *tb, double rate, double now)
{
    tb->rate = rate;
    /* One second's worth of requests, and at least one. */
    tb->burst = rate >= 1.0 ? rate : 1.0;
    tb->tokens = tb->burst;
    tb->last = now;
}

static double bucket_level(const struct token_bucket *tb, double now)
{
    double elapsed = now - tb->last;
    if (!(elapsed > 0.0)) /* clock went back, or NaN: no refill */
        elapsed = 0.0;
    double level = tb->tokens + elapsed * tb->rate;
    return level > tb->burst ? tb->burst : level;
}

bool token_bucket_take(struct token_bucket *tb, double now)
{
    if (!(tb->rate > 0.0))
        return true;
    double level = bucket_level(tb, now);
    if (!isnan(now))
        tb->last = now; /* a clock that went back resynchronises here */
    tb->tokens = level;
    if (level < 1.0)
        return false;
    tb->tokens = level - 1.0;
    return true;
}

double token_bucket_wait(const struct token_bucket *tb, double now)
{
    if (!(tb->rate > 0.0))
        return 0.0;
    double level = bucket_level(tb, now);
    if (level >= 1.0)
        return 0.0;
    return (1.0 - level) / tb->rate;
}
