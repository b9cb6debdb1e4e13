/*
 * test_harden.c — harden_process() leaves the calling process non-dumpable
 * with both core limits at 0 (the binaries' own check is
 * tests/integration/test_hardening.py, on the real processes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "harden.h"

static void test_the_process_is_not_dumpable_and_dumps_no_core(void **state)
{
    (void)state;
    struct rlimit rl;
    char err[ERRBUF_LEN];
    assert_int_equal(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), 0);
    assert_int_equal(harden_process(err, sizeof err), 0);
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
    assert_int_equal(rl.rlim_cur, 0);
    assert_int_equal(rl.rlim_max, 0);
    /* A second call (e.g. a library doing it again) is harmless. */
    assert_int_equal(harden_process(err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_process_is_not_dumpable_and_dumps_no_core),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
