/*
 * fuzz_notify_request.c — libFuzzer target for the payload of
 * oauth_refresh_request (inbound_refresh_request), which any database role
 * may send. The input is the payload (NOTIFY cannot carry a NUL: the text
 * ends at the first one). Properties: accepted payloads are 1 to 19 plain
 * digits and the id is positive and equals a reference reading; everything
 * else is refused with the output untouched.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "inbound.h"

/* Reference: all digits, at most 19, value in 1..INT64_MAX. */
static bool ref_id(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) /* NOTIFY payloads are shorter than 8000 bytes */
        return 0;
    char *s = fuzz_strndup(data, size);
    int64_t id = -7, ref = 0;
    bool ok = inbound_refresh_request(s, &id);
    bool ref_ok = ref_id(s, &ref);
    FUZZ_CHECK(ok == ref_ok, "parser says %d, the reference says %d", ok, ref_ok);
    if (ok)
        FUZZ_CHECK(id == ref && id > 0, "id %lld, reference %lld", (long long)id, (long long)ref);
    else
        FUZZ_CHECK(id == -7, "output changed on refusal");
    free(s);
    return 0;
}
