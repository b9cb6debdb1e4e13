/*
 * latency.c — the claim-to-written histogram (latency.h) and its quantiles,
 * each reported as its bucket's upper bound (never above the maximum seen).
 */
#include <inttypes.h>
#include <stdio.h>

#include "latency.h"

static size_t latency_bucket(double s)
{
    if (s < 0)
        s = 0;
    if (s < 1.0)
        return (size_t)(s * 1000.0);
    if (s < 10.0)
        return 1000 + (size_t)((s - 1.0) * 100.0);
    if (s < 300.0)
        return 1900 + (size_t)(s - 10.0);
    return LATENCY_BUCKETS - 1;
}

/* Upper bound of a bucket, in seconds. */
static double latency_bucket_top(size_t i)
{
    if (i < 1000)
        return (double)(i + 1) / 1000.0;
    if (i < 1900)
        return 1.0 + (double)(i - 1000 + 1) / 100.0;
    if (i < 2190)
        return 10.0 + (double)(i - 1900 + 1);
    return 1e9;
}

void latency_record(struct latency_hist *h, double s)
{
    h->bucket[latency_bucket(s)]++;
    h->count++;
    if (s > h->max_s)
        h->max_s = s;
}

static double latency_quantile(const struct latency_hist *h, double q)
{
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (size_t i = 0; i < LATENCY_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= want)
            return latency_bucket_top(i) < h->max_s ? latency_bucket_top(i) : h->max_s;
    }
    return h->max_s;
}

void latency_summary(const struct latency_hist *h, char *buf, size_t len)
{
    if (h->count == 0) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, len,
             "claim to written: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%" PRIu64
             " results)",
             latency_quantile(h, 0.5) * 1000.0, latency_quantile(h, 0.9) * 1000.0,
             latency_quantile(h, 0.99) * 1000.0, h->max_s * 1000.0, h->count);
}
