/*
 * fuzz_duration.c — libFuzzer target for the small value parsers (parse.h):
 * durations, booleans, bounded integers and decimals. The first byte
 * picks bounds, the rest is the NUL-terminated text. Properties: no parser
 * reads past the string; a parsed duration is non-negative and survives
 * format_duration_ms -> parse_duration_ms unchanged; bounded parsers respect
 * their bounds; digit-only input parses to the value a reference computes.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "parse.h"

/* Reference for parse_u64 on a string of digits: value, or false on overflow. */
static bool ref_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    /* parse.h: digit strings longer than a uint64 can hold (20) are refused. */
    if (*s == '\0' || strlen(s) > 20)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    uint8_t sel = data[0];
    char *s = fuzz_strndup(data + 1, size - 1);

    int64_t ms = -1;
    if (parse_duration_ms(s, &ms)) {
        FUZZ_CHECK(ms >= 0, "duration parsed to negative %lld ms", (long long)ms);
        char buf[128];
        format_duration_ms(ms, buf, sizeof(buf));
        int64_t again = -1;
        FUZZ_CHECK(parse_duration_ms(buf, &again), "formatted duration \"%s\" does not parse", buf);
        FUZZ_CHECK(again == ms, "\"%s\" -> %lld ms -> \"%s\" -> %lld ms", s, (long long)ms, buf,
                   (long long)again);
    }
    /* Any int64 formats into a short buffer without overflow, truncated or not. */
    if (size >= 9) {
        int64_t v;
        memcpy(&v, data + 1, sizeof(v));
        char small[1 + (sel & 15)];
        format_duration_ms(v, small, sizeof(small));
        FUZZ_CHECK(strlen(small) < sizeof(small), "format_duration_ms overran its buffer");
    }

    bool b;
    if (parse_bool(s, &b))
        FUZZ_CHECK(strlen(s) <= 5, "\"%s\" accepted as a boolean", s);

    uint64_t lo = (uint64_t)(sel & 7) * 3, hi = sel & 0x80 ? UINT64_MAX : (uint64_t)sel * 1000;
    uint64_t n, ref;
    bool ok = parse_u64(s, lo, hi, &n);
    if (ok)
        FUZZ_CHECK(n >= lo && n <= hi, "%llu outside [%llu, %llu]", (unsigned long long)n,
                   (unsigned long long)lo, (unsigned long long)hi);
    bool ref_ok = ref_u64(s, &ref) && ref >= lo && ref <= hi;
    FUZZ_CHECK(ok == ref_ok && (!ok || n == ref),
               "parse_u64 says %d (%llu), the reference says %d (%llu)", ok,
               ok ? (unsigned long long)n : 0ULL, ref_ok, ref_ok ? (unsigned long long)ref : 0ULL);

    double d;
    double dmax = (double)(sel & 0x7f) + 0.5;
    if (parse_double(s, 0, dmax, &d))
        FUZZ_CHECK(d >= 0 && d <= dmax, "%g outside [0, %g]", d, dmax);

    free(s);
    return 0;
}
