/*
 * parse.c — the small value parsers of the configuration: durations,
 * booleans, bounded integers, decimal numbers and hex digits, plus the inverse of
 * the duration parser for messages. Everything here is pure: no allocation, no
 * logging, no global state. Each parser accepts the whole string or nothing:
 * no sign, no surrounding whitespace, no trailing junk, no overflow, and no
 * digit strings longer than the type can hold.
 */
#include "parse.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* More digits than this cannot be a valid uint64/int64 and are refused early. */
#define MAX_DIGITS 20

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}
static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Reads a run of decimal digits at *p into *out, advancing *p. Fails on no
 * digit, too many digits or a value above max.
 */
static bool read_digits(const char **p, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    size_t n = 0;

    while (is_digit(s[n])) {
        unsigned d = (unsigned)(s[n] - '0');
        if (n >= MAX_DIGITS || v > (max - d) / 10)
            return false;
        v = v * 10 + d;
        n++;
    }
    if (n == 0)
        return false;
    *p = s + n;
    *out = v;
    return true;
}

struct duration_unit {
    const char *name;
    int64_t ms;
};

static const struct duration_unit duration_units[] = {
    {"ms", 1},          {"s", 1000},     {"sec", 1000},     {"second", 1000},
    {"seconds", 1000},  {"m", 60000},    {"min", 60000},    {"minute", 60000},
    {"minutes", 60000}, {"h", 3600000},  {"hr", 3600000},   {"hour", 3600000},
    {"hours", 3600000}, {"d", 86400000}, {"day", 86400000}, {"days", 86400000},
};

static int64_t duration_unit_ms(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(duration_units); i++) {
        if (strlen(duration_units[i].name) == len && memcmp(duration_units[i].name, name, len) == 0)
            return duration_units[i].ms;
    }
    return -1;
}

bool parse_duration_ms(const char *s, int64_t *out_ms)
{
    if (s == NULL || *s == '\0' || is_space(*s))
        return false;

    /* A bare number is seconds. */
    const char *p = s;
    uint64_t n;
    if (is_digit(*p)) {
        const char *q = p;
        if (read_digits(&q, UINT64_MAX, &n) && *q == '\0') {
            if (n > (uint64_t)(INT64_MAX / 1000))
                return false;
            *out_ms = (int64_t)n * 1000;
            return true;
        }
    }

    int64_t total = 0;
    while (*p != '\0') {
        if (!read_digits(&p, (uint64_t)INT64_MAX, &n))
            return false; /* unit without number, sign, junk or overflow */
        while (is_space(*p))
            p++;
        const char *unit = p;
        while (is_lower(*p))
            p++;
        int64_t unit_ms = duration_unit_ms(unit, (size_t)(p - unit));
        if (unit_ms < 0)
            return false; /* missing or unknown unit */
        if (n > (uint64_t)(INT64_MAX / unit_ms))
            return false;
        int64_t part = (int64_t)n * unit_ms;
        if (total > INT64_MAX - part)
            return false;
        total += part;
        if (is_space(*p)) {
            while (is_space(*p))
                p++;
            if (*p == '\0')
                return false; /* trailing whitespace */
        }
    }
    *out_ms = total;
    return true;
}

bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    if (s == NULL)
        return false;
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *p = s;
    uint64_t n;

    if (s == NULL || !read_digits(&p, UINT64_MAX, &n) || *p != '\0')
        return false;
    if (n < min || n > max)
        return false;
    *out = n;
    return true;
}

bool parse_double(const char *s, double min, double max, double *out)
{
    /* Shape first (digits, optionally '.' digits), so strtod never sees
     * signs, exponents, hex, inf or nan. */
    size_t i = 0, int_digits = 0, frac_digits = 0;

    if (s == NULL)
        return false;
    while (is_digit(s[i])) {
        i++;
        int_digits++;
    }
    if (s[i] == '.') {
        i++;
        while (is_digit(s[i])) {
            i++;
            frac_digits++;
        }
        if (frac_digits == 0)
            return false;
    }
    if (int_digits == 0 || s[i] != '\0' || i > 40)
        return false;

    /* strtod honours LC_NUMERIC; parse in the C locale whatever the caller set. */
    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0)
        return false;
    char *end = NULL;
    double v = strtod_l(s, &end, c_locale);
    freelocale(c_locale);
    if (end == NULL || *end != '\0' || v != v || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int parse_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void format_duration_ms(int64_t ms, char *buf, size_t buflen)
{
    static const struct {
        const char *name;
        uint64_t ms;
    } parts[] = {{"d", 86400000}, {"h", 3600000}, {"min", 60000}, {"s", 1000}, {"ms", 1}};
    size_t used = 0;
    uint64_t rest;

    if (buf == NULL || buflen == 0)
        return;
    buf[0] = '\0';
    if (ms == 0) {
        snprintf(buf, buflen, "0s");
        return;
    }
    if (ms < 0) {
        rest = (uint64_t)(-(ms + 1)) + 1; /* no overflow for INT64_MIN */
        used = (size_t)snprintf(buf, buflen, "-");
    } else {
        rest = (uint64_t)ms;
    }
    for (size_t i = 0; i < ARRAY_LEN(parts) && rest > 0; i++) {
        uint64_t n = rest / parts[i].ms;
        rest %= parts[i].ms;
        if (n == 0)
            continue;
        if (used >= buflen)
            break;
        int w = snprintf(buf + used, buflen - used, "%llu%s", (unsigned long long)n, parts[i].name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}
