/*
 * test_provider_oom.c — out of memory while an answer that rotated is read
 * (issue 10, part 1). malloc is replaced in this executable (glibc allows it;
 * the real one is __libc_malloc) so that the Nth allocation, or every one from
 * the Nth on, fails while read_answer runs. Whatever allocation fails, the
 * result is either the full success with the rotated refresh token, or says
 * "out_of_memory" so the engine can stop the process rather than drop the
 * token; never a plain failure that looks like a bad answer.
 *
 * Under AddressSanitizer the sanitizer owns malloc: the test is skipped there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "provider.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define OOM_UNDER_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define OOM_UNDER_SANITIZER 1
#endif

#define RT "ghr_ROTATEDREFRESHTOKEN0123456789abcdefghijklmnopqrstuvwxyz"

#ifndef OOM_UNDER_SANITIZER
extern void *__libc_malloc(size_t n);

static long oom_countdown = -1; /* < 0: never fail; 0: fail this call */
static bool oom_sticky;         /* keep failing once the countdown hit 0 */
static bool oom_hit;

void *malloc(size_t n)
{
    if (oom_countdown == 0) {
        oom_hit = true;
        if (!oom_sticky)
            oom_countdown = -1;
        return NULL;
    }
    if (oom_countdown > 0)
        oom_countdown--;
    return __libc_malloc(n);
}
#endif

static const char *const rotating_bodies[] = {
    /* strict */
    "{\"access_token\":\"ghu_access\",\"refresh_token\":\"" RT
    "\",\"expires_in\":28800,\"scope\":\"\",\"token_type\":\"bearer\",\"id_token\":\"idt\"}",
    /* jansson's lenient pass: duplicates */
    "{\"access_token\":\"ghu_access\",\"scope\":\"a\",\"scope\":\"b\",\"refresh_token\":\"" RT
    "\",\"expires_in\":28800,\"token_type\":\"bearer\"}",
    /* the scanner: 1e400 */
    "{\"access_token\":\"ghu_access\",\"refresh_token\":\"" RT
    "\",\"expires_in\":1e400,\"scope\":\"\",\"token_type\":\"bearer\"}",
    /* the form reader */
    "access_token=ghu_access&refresh_token=" RT "&expires_in=28800&scope=&token_type=bearer",
};

static void test_oom_while_reading_a_rotated_answer_is_reported_distinctly(void **state)
{
    (void)state;
#ifdef OOM_UNDER_SANITIZER
    (void)rotating_bodies;
    skip();
#else
    const struct provider_ops *ops = provider_ops_get(PROVIDER_GITHUB);
    for (size_t b = 0; b < sizeof(rotating_bodies) / sizeof(rotating_bodies[0]); b++) {
        struct http_answer a = {.status = 200,
                                .body = rotating_bodies[b],
                                .body_len = strlen(rotating_bodies[b]),
                                .received_at = 1700000000};
        for (int sticky = 0; sticky <= 1; sticky++) {
            unsigned failures_seen = 0;
            for (long k = 0; k < 10000; k++) {
                struct token_result res;
                memset(&res, 0, sizeof(res));
                oom_hit = false;
                oom_sticky = sticky;
                oom_countdown = k;
                ops->read_answer(&a, &res);
                oom_countdown = -1;
                bool hit = oom_hit;
                bool ok = res.outcome == OUTCOME_SUCCESS && res.refresh_token.data &&
                          strcmp(res.refresh_token.data, RT) == 0;
                bool said_oom = strcmp(res.error, "out_of_memory") == 0;
                if (!ok && !said_oom)
                    fail_msg("body %zu, allocation %ld failing%s: seen %s/%s (%s): neither the "
                             "rotated token nor out_of_memory",
                             b, k, sticky ? " (and all after)" : "",
                             refresh_outcome_name(res.outcome), res.error, res.detail);
                if (said_oom && res.outcome != OUTCOME_TRANSIENT)
                    fail_msg("body %zu: out_of_memory must be transient", b);
                token_result_clear(&res);
                if (!hit)
                    break; /* every allocation of a full read succeeded: done */
                failures_seen++;
            }
            assert_true(failures_seen > 0);
        }
    }
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oom_while_reading_a_rotated_answer_is_reported_distinctly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
