/*
 * breaker.h — one provider's circuit breaker: paused after consecutive
 * transient failures or the provider's own overload (Retry-After), paused for
 * a configuration error (our client registration refused) until a probe
 * passes or a reload, and half-open (one probe at a time) when a pause ends.
 * The engine owns one per provider and asks it whether the provider may be
 * claimed for; the breaker logs its pauses and resumptions. Pure: the time is
 * passed in (ev_now() seconds), nothing is allocated.
 */
#ifndef OAUTH_BREAKER_H
#define OAUTH_BREAKER_H

#include "common.h"
#include "config.h"
#include "provider.h"

/* Consecutive transient failures that pause a provider. */
#define BREAKER_THRESHOLD 8

struct breaker_timing {
    int64_t retry_min_ms, retry_max_ms; /* pause lengths grow from min, capped at max */
    int64_t config_error_probe_ms;      /* a refused registration is probed this often */
};

struct breaker {
    enum provider_id provider; /* for the log */
    double paused_until;       /* 0 = not paused */
    bool probing;              /* paused provider: its one probe is in flight */
    bool config_error;         /* invalid_client & co: paused until a probe succeeds or a reload */
    double config_probe_at;    /* config_error's next probe may go */
    bool config_reread;        /* the config was read again for the coming probe */
    unsigned consecutive_failures;
    unsigned pauses; /* consecutive pauses, for the pause length */
    char last_error[64];
};

/* No request may go now (a probe only when breaker_probe_due). */
bool breaker_paused(const struct breaker *b, double now);
/* The next request is the probe of a pause that is over. */
bool breaker_probe_due(const struct breaker *b, double now);
/* Paused or probing: at most one request at a time. */
bool breaker_half_open(const struct breaker *b);
/* For STATUS= and the metrics: refusing our registration, or within a pause. */
bool breaker_shows_paused(const struct breaker *b, double now);
/* A config_error provider whose probe is due and whose config was not re-read for it yet. */
bool breaker_wants_reread(const struct breaker *b, double now);
/* The answer to one request (probe: it was the probe) moves the breaker. */
void breaker_update(struct breaker *b, const struct token_result *res, bool probe, double now,
                    const struct breaker_timing *t);
/* A reload is the operator's answer to a configuration error: lift it. */
void breaker_reload(struct breaker *b);

#endif
