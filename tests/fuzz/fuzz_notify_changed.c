/*
 * fuzz_notify_changed.c — libFuzzer target for the payload of
 * oauth_refreshd_account_changed (inbound_account_changed): "<id>" or
 * "<id> <epoch>", sent by the schema's trigger but by any database role too.
 * The input is the payload (up to the first NUL, which NOTIFY cannot carry).
 * Properties: an accepted payload gives a positive id equal to the digits
 * before the first blank and a finite epoch within [INBOUND_EPOCH_MIN,
 * INBOUND_EPOCH_MAX] that is never -0; the epoch text, when it is a plain
 * decimal, reads to the same value with strtod; a refused payload leaves the
 * outputs untouched; and whatever the epoch, the delay the engine would
 * compute from it goes through timer_clamp_s into [0, TIMER_MAX_S].
 */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "inbound.h"
#include "timeutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *s = fuzz_strndup(data, size);
    int64_t id = -7;
    double exp = -7;
    bool ok = inbound_account_changed(s, &id, &exp);
    if (!ok) {
        FUZZ_CHECK(id == -7 && exp == -7, "outputs changed on refusal");
    } else {
        FUZZ_CHECK(id > 0, "id %lld", (long long)id);
        FUZZ_CHECK(isfinite(exp) && exp >= INBOUND_EPOCH_MIN && exp <= INBOUND_EPOCH_MAX,
                   "epoch %g out of range", exp);
        FUZZ_CHECK(!(exp == 0 && signbit(exp)), "epoch -0");
        const char *sp = strchr(s, ' ');
        size_t id_len = sp ? (size_t)(sp - s) : strlen(s);
        FUZZ_CHECK(id_len >= 1 && id_len <= 19, "id of %zu characters accepted", id_len);
        int64_t ref = 0;
        for (size_t i = 0; i < id_len; i++) {
            FUZZ_CHECK(s[i] >= '0' && s[i] <= '9', "non-digit in the id");
            ref = ref * 10 + (s[i] - '0');
        }
        FUZZ_CHECK(ref == id, "id %lld, digits say %lld", (long long)id, (long long)ref);
        if (!sp)
            FUZZ_CHECK(exp == 0, "no epoch, yet %g", exp);
        else if (strcmp(sp + 1, "Infinity") != 0 && strcmp(sp + 1, "-Infinity") != 0) {
            double want = strtod(sp + 1, NULL); /* the harness runs in the C locale */
            FUZZ_CHECK(exp == (want == 0 ? 0 : want), "epoch %.17g, strtod says %.17g", exp, want);
        }
        /* As the engine does: the delay until the account is due, then the clamp. */
        double delay = timer_clamp_s(exp - 1764876000.0);
        FUZZ_CHECK(delay >= 0 && delay <= TIMER_MAX_S, "delay %g", delay);
    }
    free(s);
    return 0;
}
