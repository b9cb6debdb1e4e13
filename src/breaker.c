/*
 * breaker.c — a provider's circuit breaker (breaker.h): the pause rules, the
 * half-open probe, and the journal lines that say so.
 */
#include <math.h>
#include <stdio.h>

#include "breaker.h"
#include "log.h"

bool breaker_paused(const struct breaker *b, double now)
{
    if (b->config_error) /* until its probe time; then one probe */
        return now < b->config_probe_at || b->probing;
    if (b->paused_until == 0)
        return false;
    if (now < b->paused_until)
        return true;
    /* The pause is over: let one probe through before opening fully. */
    return b->probing;
}

bool breaker_probe_due(const struct breaker *b, double now)
{
    if (b->config_error)
        return now >= b->config_probe_at;
    return b->paused_until != 0 && now >= b->paused_until;
}

bool breaker_half_open(const struct breaker *b)
{
    return b->paused_until != 0 || b->config_error;
}

bool breaker_shows_paused(const struct breaker *b, double now)
{
    return b->config_error || (b->paused_until != 0 && now < b->paused_until);
}

/*
 * Before a provider paused for a configuration error is probed, the
 * configuration and its secret files are read again (once per probe), so a
 * secret fixed on disk is used without a SIGHUP; a fix made only at the
 * provider is seen by the probe itself.
 */
bool breaker_wants_reread(const struct breaker *b, double now)
{
    return b->config_error && !b->probing && !b->config_reread && now >= b->config_probe_at;
}

static void pause_for(struct breaker *b, double seconds, const char *why, double now,
                      const struct breaker_timing *t)
{
    double max_s = (double)t->retry_max_ms / 1000.0;
    if (seconds > max_s)
        seconds = max_s;
    if (seconds < 1)
        seconds = 1;
    bool was_paused = b->paused_until != 0;
    b->paused_until = now + seconds;
    b->probing = false;
    const char *name = provider_id_name(b->provider);
    struct log_ctx ctx = {.provider = name, .error = why};
    log_event(was_paused ? LOG_INFO : LOG_WARNING, MSGID_PROVIDER_PAUSED, &ctx,
              "provider %s paused for %.0fs after %s", name, seconds, why);
}

/* The next pause of a growing series, from retry_min. */
static double next_pause_s(struct breaker *b, const struct breaker_timing *t)
{
    double base = (double)t->retry_min_ms / 1000.0;
    double len = base * pow(2.0, b->pauses < 16 ? b->pauses : 16);
    b->pauses++;
    return len;
}

/*
 * The provider refused our client registration: the engine says so loudly
 * once, then one account probes it every config_error_probe, so that a fix
 * made at the provider (or a secret that was only late) is seen without a reload.
 */
static void config_pause(struct breaker *b, bool probe, double now, const struct breaker_timing *t)
{
    double every = (double)t->config_error_probe_ms / 1000.0;
    bool was = b->config_error;
    if (was && !probe)
        return; /* sent before the pause: nothing new */
    b->config_error = true;
    b->config_probe_at = now + every;
    b->config_reread = false;
    if (probe)
        b->probing = false;
    if (probe && was) {
        const char *name = provider_id_name(b->provider);
        struct log_ctx ctx = {.provider = name, .error = b->last_error};
        log_event(LOG_INFO, NULL, &ctx,
                  "provider %s still refuses our client registration (%s); next probe in %.0fs",
                  name, b->last_error, every);
    }
}

/*
 * The provider's own overload (429, 408, Retry-After, rate-limit pages): pause
 * it for its Retry-After, else for a pause that grows from retry_min. Answers
 * to requests sent before the pause began add nothing and do not lengthen it.
 */
static void overload_pause(struct breaker *b, const struct token_result *res, bool probe,
                           double now, const struct breaker_timing *t)
{
    bool paused = b->paused_until > now;
    double len;
    if (res->retry_after_ms > 0)
        len = (double)res->retry_after_ms / 1000.0;
    else if (paused && !probe)
        return;
    else
        len = next_pause_s(b, t);
    if (paused && now + len <= b->paused_until)
        return;
    pause_for(b, len, res->error, now, t);
}

static void resume(struct breaker *b)
{
    const char *name = provider_id_name(b->provider);
    struct log_ctx ctx = {.provider = name};
    if (b->config_error) {
        log_event(LOG_NOTICE, MSGID_PROVIDER_RESUMED, &ctx,
                  "provider %s resumed: it accepts our client registration again", name);
        b->config_error = false;
        b->config_probe_at = 0;
        b->config_reread = false;
    } else if (b->paused_until != 0) {
        log_event(LOG_NOTICE, MSGID_PROVIDER_RESUMED, &ctx, "provider %s resumed", name);
    }
    b->paused_until = 0;
    b->probing = false;
    b->pauses = 0;
    b->consecutive_failures = 0;
}

/*
 * A probe ends here whatever its outcome: a success resumes the provider, a
 * transient failure pauses it again, and anything else (one account's
 * malformed answer, a credentials error) says nothing about the provider's
 * health, so the next job is let through as the next probe. Left set,
 * `probing` would keep breaker_paused() true for good.
 */
void breaker_update(struct breaker *b, const struct token_result *res, bool probe, double now,
                    const struct breaker_timing *t)
{
    if (probe)
        b->probing = false;
    snprintf(b->last_error, sizeof b->last_error, "%s",
             res->outcome == OUTCOME_SUCCESS ? "" : res->error);
    switch (res->outcome) {
    case OUTCOME_SUCCESS:
    case OUTCOME_REVOKED:
        /* The provider answered sensibly (revoked answers are about one
         * account): it is healthy, and accepts our client registration. */
        if (b->paused_until != 0 || b->consecutive_failures || b->config_error)
            resume(b);
        break;
    case OUTCOME_CONFIG:
        config_pause(b, probe, now, t);
        break;
    case OUTCOME_TRANSIENT:
        if (res->retry_rule == RETRY_PAUSE) {
            overload_pause(b, res, probe, now, t);
            break;
        }
        b->consecutive_failures++;
        if (probe || b->consecutive_failures >= BREAKER_THRESHOLD)
            pause_for(b, next_pause_s(b, t), res->error, now, t);
        break;
    case OUTCOME_BAD_RESPONSE:
        break;
    }
    /* A configuration probe that got no verdict: the next one after the interval. */
    if (probe && b->config_error && res->outcome != OUTCOME_CONFIG) {
        b->probing = false;
        b->config_reread = false;
        b->config_probe_at = now + (double)t->config_error_probe_ms / 1000.0;
    }
}

void breaker_reload(struct breaker *b)
{
    b->config_error = false;
    b->config_probe_at = 0;
}
