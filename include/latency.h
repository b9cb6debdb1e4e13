/*
 * latency.h — the claim-to-written time of results, kept for the one log line
 * at exit that the benchmark reads: fine buckets (1 ms to 1 s, 10 ms to 10 s,
 * 1 s to 300 s) and the maximum. Pure: no clock, no allocation.
 */
#ifndef OAUTH_LATENCY_H
#define OAUTH_LATENCY_H

#include "common.h"

#define LATENCY_BUCKETS (1000 + 900 + 290 + 1)
struct latency_hist {
    uint32_t bucket[LATENCY_BUCKETS];
    uint64_t count;
    double max_s;
};

void latency_record(struct latency_hist *h, double s);
/* "claim to written: p50 .. ms, p90 .. ms, p99 .. ms, max .. ms (N results)" or "" when none. */
void latency_summary(const struct latency_hist *h, char *buf, size_t len);

#endif
