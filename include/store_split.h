/*
 * store_split.h — the bookkeeping that finds the one result the database
 * refuses in a batch of many (issue 10 part 2): after a batch fails on its
 * data, its items go back to the front of their queue as "suspects", and
 * suspects go out in batches of half the failed batch's size, one batch at a
 * time, until a batch of one fails: that result is at fault (the store demotes
 * it), and what is left goes in full batches again. Pure counting, one
 * instance per queue; the store owns the items and the queue.
 */
#ifndef OAUTH_STORE_SPLIT_H
#define OAUTH_STORE_SPLIT_H

#include "common.h"

struct store_split {
    size_t suspects; /* items at the queue's front that came from a refused batch */
    size_t limit;    /* the largest batch while suspects remain */
    size_t max;      /* the normal batch size */
    bool alone_next; /* the next batch is one result (store_split_requeue_alone) */
};

void store_split_init(struct store_split *s, size_t max);

/*
 * How many items the next batch takes from a queue of queued items while
 * inflight batches of this queue are being written; 0 = send nothing now
 * (suspects go out one batch at a time).
 */
size_t store_split_take(const struct store_split *s, size_t queued, unsigned inflight);

/* A batch of n items was taken from the front: returns how many are suspects
 * (keep it with the batch for store_split_returned). */
size_t store_split_taken(struct store_split *s, size_t n);

/* A batch came back unwritten to the queue's front (connection lost, a
 * statement error that is not the data's): its suspects are suspects again. */
void store_split_returned(struct store_split *s, size_t suspects);

/*
 * A batch of n > 1 items was refused for its data and put back at the front:
 * they are all suspects, and the next batches take half as many.
 */
void store_split_refused(struct store_split *s, size_t n);

/* A batch of one was refused: the result at fault is found; the rest go in
 * full batches again (a further bad one is isolated the same way). */
void store_split_found(struct store_split *s);

/* The result at fault, demoted, was put back at the front of this queue: it
 * goes out alone next, so it is not bisected among the others again. */
void store_split_requeue_alone(struct store_split *s);

#endif
