/*
 * inbound.c — the parsers of inbound.h: NOTIFY payloads and row values. The
 * shape of every number is checked by hand before strtod sees it, so strtod
 * never meets "nan", "inf", exponents, hex or a locale's decimal comma; what
 * it returns is then checked to be finite and in range. Pure: no allocation
 * beyond a C locale handle, no logging, no global state.
 */
#include "inbound.h"

#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest number text accepted: an epoch with microseconds is ~18. */
#define NUMBER_MAX_LEN 40
/* INT64_MAX has 19 digits. */
#define INT_MAX_DIGITS 19

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads up to INT_MAX_DIGITS digits at s[0..len) as an unsigned value that
 * fits int64. */
static bool digits_to_int64(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > INT_MAX_DIGITS)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0'); /* 19 digits cannot overflow uint64 */
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

static bool account_id_n(const char *s, size_t len, int64_t *out)
{
    int64_t v;
    if (!digits_to_int64(s, len, &v) || v <= 0)
        return false;
    *out = v;
    return true;
}

bool inbound_account_id(const char *s, int64_t *out)
{
    return s != NULL && account_id_n(s, strlen(s), out);
}

bool inbound_refresh_request(const char *payload, int64_t *id)
{
    return inbound_account_id(payload, id);
}

bool inbound_account_changed(const char *payload, int64_t *id, double *expires_at)
{
    if (payload == NULL)
        return false;
    const char *sp = strchr(payload, ' ');
    size_t id_len = sp ? (size_t)(sp - payload) : strlen(payload);
    int64_t v;
    if (!account_id_n(payload, id_len, &v))
        return false;
    double when = 0;
    if (sp && !inbound_pg_epoch(sp + 1, &when))
        return false;
    *id = v;
    *expires_at = when;
    return true;
}

/* "-"? digits ("." digits)? of at most NUMBER_MAX_LEN characters. */
static bool decimal_shape(const char *s)
{
    size_t i = 0, int_digits = 0, frac_digits = 0;
    if (s[i] == '-')
        i++;
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
    return int_digits > 0 && s[i] == '\0' && i <= NUMBER_MAX_LEN;
}

bool inbound_pg_epoch(const char *s, double *out)
{
    if (s == NULL)
        return false;
    if (strcmp(s, "Infinity") == 0) {
        *out = INBOUND_EPOCH_MAX;
        return true;
    }
    if (strcmp(s, "-Infinity") == 0) {
        *out = INBOUND_EPOCH_MIN;
        return true;
    }
    if (!decimal_shape(s))
        return false;
    /* strtod honours LC_NUMERIC; read in the C locale whatever the process set. */
    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0)
        return false;
    char *end = NULL;
    double v = strtod_l(s, &end, c_locale);
    freelocale(c_locale);
    if (end == NULL || *end != '\0' || !isfinite(v) || v < INBOUND_EPOCH_MIN ||
        v > INBOUND_EPOCH_MAX)
        return false;
    *out = v == 0 ? 0 : v; /* no -0 */
    return true;
}

bool inbound_pg_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL)
        return false;
    bool neg = s[0] == '-';
    const char *digits = s + neg;
    int64_t v;
    if (!digits_to_int64(digits, strlen(digits), &v))
        return false;
    if (neg)
        v = -v; /* |INT64_MIN| is not accepted: 19 digits above INT64_MAX were refused */
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}
