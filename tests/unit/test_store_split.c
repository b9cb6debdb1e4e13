/*
 * test_store_split.c — the store's batch splitting (store_split.h) against a
 * model database that refuses any batch holding a poisoned result: every good
 * result is written exactly once, the poisoned one ends alone, and it takes a
 * few statements (about two per halving), not a retry of the same batch
 * forever (issue 10 part 2).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "store_split.h"

#define MAX    500
#define NITEMS 1200

struct model {
    int queue[NITEMS * 2];
    size_t head, len;
    int lives[NITEMS];   /* refusals left for each id (0 = good) */
    int written[NITEMS]; /* times written (a demoted result too) */
    size_t statements, refused_alone;
};

static void model_init(struct model *m, size_t n)
{
    memset(m, 0, sizeof *m);
    m->head = NITEMS; /* room to push back in front */
    for (size_t i = 0; i < n; i++)
        m->queue[m->head + i] = (int)i;
    m->len = n;
}

static void push_front(struct model *m, const int *ids, size_t n)
{
    m->head -= n;
    memcpy(&m->queue[m->head], ids, n * sizeof *ids);
    m->len += n;
}

/* Runs the store's loop until the queue is empty; returns statements sent. */
static size_t drain(struct model *m)
{
    struct store_split s;
    store_split_init(&s, MAX);
    while (m->len > 0) {
        size_t take = store_split_take(&s, m->len, 0);
        assert_true(take > 0 && take <= MAX && take <= m->len);
        int batch[MAX];
        memcpy(batch, &m->queue[m->head], take * sizeof *batch);
        m->head += take;
        m->len -= take;
        (void)store_split_taken(&s, take);
        m->statements++;
        assert_true(m->statements < 10000); /* never the same batch forever */
        bool refused = false;
        for (size_t i = 0; i < take; i++)
            refused |= m->lives[batch[i]] > 0;
        if (!refused) {
            for (size_t i = 0; i < take; i++)
                m->written[batch[i]]++;
            continue;
        }
        if (take > 1) {
            push_front(m, batch, take);
            store_split_refused(&s, take);
            continue;
        }
        /* Alone: the result at fault. The store demotes it and sends it again
         * on its own; it is taken once it has no refusal left. */
        m->refused_alone++;
        m->lives[batch[0]]--;
        store_split_found(&s);
        push_front(m, batch, 1);
        store_split_requeue_alone(&s);
    }
    return m->statements;
}

static void assert_all_written_once(const struct model *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(m->written[i], 1);
}

static void test_one_poison_among_500_is_isolated_in_a_few_statements(void **state)
{
    (void)state;
    const int where[] = {0, 17, 250, 499};
    for (size_t w = 0; w < sizeof where / sizeof *where; w++) {
        struct model m;
        model_init(&m, 500);
        m.lives[where[w]] = 1; /* refused as it is; its demoted form is taken */
        size_t st = drain(&m);
        assert_all_written_once(&m, 500);
        assert_int_equal(m.refused_alone, 1);
        /* 500 -> 250 -> ... -> 1: two statements per halving at most, plus the rest. */
        assert_true(st <= 2 * 9 + 3);
    }
}

static void test_a_result_refused_twice_is_demoted_twice(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 40);
    m.lives[17] = 2;
    size_t st = drain(&m);
    assert_int_equal(m.refused_alone, 2);
    assert_all_written_once(&m, 40);
    assert_true(st <= 2 * 6 + 4);
}

static void test_two_poisons_and_more_than_one_batch(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 1200);
    m.lives[3] = 1;
    m.lives[777] = 1;
    size_t st = drain(&m);
    assert_int_equal(m.refused_alone, 2);
    assert_all_written_once(&m, 1200);
    assert_true(st <= 3 + 2 * (2 * 9 + 3));
}

static void test_no_poison_means_full_batches(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 1200);
    assert_int_equal(drain(&m), 3);
}

static void test_suspects_go_one_batch_at_a_time_and_survive_a_lost_connection(void **state)
{
    (void)state;
    struct store_split s;
    store_split_init(&s, MAX);
    assert_int_equal(store_split_take(&s, 800, 1), MAX); /* normal: batches overlap */
    store_split_refused(&s, 300);
    assert_int_equal(store_split_take(&s, 800, 1), 0); /* isolating: wait for the one in flight */
    assert_int_equal(store_split_take(&s, 800, 0), 150);
    assert_int_equal(store_split_taken(&s, 150), 150);
    store_split_returned(&s, 150); /* the connection died: they are suspects again */
    assert_int_equal(s.suspects, 300);
    assert_int_equal(store_split_take(&s, 800, 0), 150);
    store_split_found(&s);
    assert_int_equal(store_split_take(&s, 800, 0), 300); /* the rest of the suspects at once */
    assert_int_equal(store_split_taken(&s, 300), 300);
    assert_int_equal(store_split_take(&s, 800, 0), MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_poison_among_500_is_isolated_in_a_few_statements),
        cmocka_unit_test(test_a_result_refused_twice_is_demoted_twice),
        cmocka_unit_test(test_two_poisons_and_more_than_one_batch),
        cmocka_unit_test(test_no_poison_means_full_batches),
        cmocka_unit_test(test_suspects_go_one_batch_at_a_time_and_survive_a_lost_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
