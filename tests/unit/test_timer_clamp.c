/*
 * test_timer_clamp.c — every libev timer is set through timer_set/timer_arm,
 * which never hands libev a NaN, a negative or an endless value (issue 10
 * part 3). The last test runs a real loop: a timer armed with NaN must not
 * keep a 10 ms timer from firing, as it did when the NaN sat on top of
 * libev's heap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>
#include <math.h>

#include "timeutil.h"

static void clamp_maps_every_hostile_value_into_range(void **state)
{
    (void)state;
    assert_true(timer_clamp_s(NAN) == TIMER_NAN_S);
    assert_true(timer_clamp_s(-NAN) == TIMER_NAN_S);
    assert_true(timer_clamp_s(-1) == 0);
    assert_true(timer_clamp_s(-INFINITY) == 0);
    assert_true(timer_clamp_s(-0.0) == 0);
    assert_true(timer_clamp_s(INFINITY) == TIMER_MAX_S);
    assert_true(timer_clamp_s(1e300) == TIMER_MAX_S);
    assert_true(timer_clamp_s(TIMER_MAX_S + 1) == TIMER_MAX_S);
    assert_true(timer_clamp_s(0) == 0);
    assert_true(timer_clamp_s(0.02) == 0.02);
    assert_true(timer_clamp_s(3600) == 3600);
    assert_true(timer_clamp_s(TIMER_MAX_S) == TIMER_MAX_S);
}

static void cb_noop(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void set_stores_clamped_values(void **state)
{
    (void)state;
    ev_timer w;
    ev_init(&w, cb_noop);
    timer_set(&w, NAN, NAN);
    assert_true(w.at == TIMER_NAN_S);
    assert_true(w.repeat == TIMER_NAN_S);
    timer_set(&w, -5, -5);
    assert_true(w.at == 0 && w.repeat == 0);
    timer_set(&w, INFINITY, 1e308);
    assert_true(w.at == TIMER_MAX_S && w.repeat == TIMER_MAX_S);
    timer_set(&w, 0.25, 2);
    assert_true(w.at == 0.25 && w.repeat == 2);
}

static int fired;

static void cb_break(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    fired++;
    ev_break(loop, EVBREAK_ALL);
}

static void a_nan_timer_does_not_stop_the_others(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(loop);
    ev_timer bad, good;
    ev_init(&bad, cb_noop);
    ev_init(&good, cb_break);
    /* In this order a raw ev_timer_set(NaN) puts the NaN above the good timer for good. */
    timer_arm(loop, &good, 0.01, 0);
    timer_arm(loop, &bad, NAN, 0);
    alarm(20); /* a wedged loop fails the test instead of hanging it */
    ev_run(loop, 0);
    alarm(0);
    assert_int_equal(fired, 1);
    ev_timer_stop(loop, &bad);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clamp_maps_every_hostile_value_into_range),
        cmocka_unit_test(set_stores_clamped_values),
        cmocka_unit_test(a_nan_timer_does_not_stop_the_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
