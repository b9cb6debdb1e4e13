/*
 * store_split.c — bisection of a batch the database refuses (store_split.h).
 * It owns only counters; it never sees an item.
 */
#include "store_split.h"

void store_split_init(struct store_split *s, size_t max)
{
    s->suspects = 0;
    s->limit = max;
    s->max = max;
    s->alone_next = false;
}

size_t store_split_take(const struct store_split *s, size_t queued, unsigned inflight)
{
    size_t take = s->max;
    if (s->suspects > 0) {
        if (inflight > 0)
            return 0;
        take = s->limit < s->suspects ? s->limit : s->suspects;
        if (take == 0)
            take = 1;
    }
    return take < queued ? take : queued;
}

size_t store_split_taken(struct store_split *s, size_t n)
{
    size_t sus = s->suspects < n ? s->suspects : n;
    s->suspects -= sus;
    if (s->alone_next) {
        s->alone_next = false;
        s->limit = s->max;
    }
    return sus;
}

void store_split_returned(struct store_split *s, size_t suspects)
{
    s->suspects += suspects;
}

void store_split_refused(struct store_split *s, size_t n)
{
    s->suspects += n;
    s->limit = (n + 1) / 2;
}

void store_split_found(struct store_split *s)
{
    s->limit = s->max;
}

void store_split_requeue_alone(struct store_split *s)
{
    s->suspects += 1;
    s->limit = 1;
    s->alone_next = true;
}
