/*
 * provider.h — the dialects of the token endpoints (the three named ones and
 * the generic RFC 6749 one) behind one small
 * table of functions: how to build a refresh request, and how to read the
 * answer into one of five outcomes. Dialects are pure: no I/O, no clocks, no
 * logging; they only see bytes. They never copy a secret anywhere but into the
 * struct secret fields they return.
 */
#ifndef OAUTH_PROVIDER_H
#define OAUTH_PROVIDER_H

#include "common.h"
#include "config.h"
#include "http.h"
#include "secret.h"

/* Response bodies larger than this are refused (SPEC §6). */
#define PROVIDER_MAX_RESPONSE_BYTES (64 * 1024)

enum refresh_outcome {
    OUTCOME_SUCCESS,
    OUTCOME_REVOKED,      /* user must re-authorize: stop retrying */
    OUTCOME_TRANSIENT,    /* retry later with backoff */
    OUTCOME_CONFIG,       /* client credentials/registration wrong: pause provider */
    OUTCOME_BAD_RESPONSE, /* the answer cannot be used: nothing is overwritten */
};
const char *refresh_outcome_name(enum refresh_outcome o);

/*
 * Whose failure an answer is, and when to ask again (docs/providers.md). The
 * outcome says what happened; these say who pays. Zero values (an account's
 * own answer, retried after its backoff) suit success and most failures.
 */
enum answer_scope {
    SCOPE_ACCOUNT,  /* this account's state changes; the provider keeps going */
    SCOPE_PROVIDER, /* the provider is paused; the account is not to blame */
};
enum answer_retry {
    RETRY_BACKOFF,   /* this account again after its backoff (Retry-After honoured) */
    RETRY_RECONNECT, /* never, until the application stores a new refresh token */
    RETRY_PROBE,     /* provider paused; one account probes every config_error_probe */
    RETRY_PAUSE,     /* provider paused for Retry-After or a bounded default; the account
                        is not charged an attempt and is simply tried again after it */
};
const char *answer_scope_name(enum answer_scope s);
const char *answer_retry_name(enum answer_retry r);

/* What to send. All members owned; free with provider_request_clear(). */
struct provider_request {
    char *url;
    struct secret body;        /* form-encoded; holds refresh token and client secret */
    struct secret auth_header; /* "Authorization: Basic ..." (client_secret_basic) or empty */
    const char *headers[4];    /* static strings or auth_header.data, NULL-terminated list */
};
void provider_request_clear(struct provider_request *req);

/* struct http_answer (what the transport saw) is the input of classification: http.h. */

/*
 * The classification. read_answer() overwrites it whole (it does not free what
 * it held: pass a zeroed or cleared one). Free with token_result_clear().
 *
 * Contract with the store (SPEC §6, "an answer that carries a new
 * refresh_token is never thrown away"):
 *  - refresh_token may be set whatever the outcome when a 2xx answer carried a
 *    usable new refresh token: on SUCCESS, and on BAD_RESPONSE when something
 *    else is wrong (error "missing_access_token": no usable access token;
 *    "bad_json": the body is not one complete JSON object, the token was read
 *    before the break; "bad_error_field": an "error" member that is not a
 *    non-empty string).
 *    id_token is then set too when the answer carried one. The caller must
 *    store them (and keep the old access token) rather than drop them.
 *  - An answer with a non-empty string "error" (a 4xx, or GitHub's 200) never
 *    carries a token: none is read from it.
 *  - A body a strict JSON parser refuses (a number out of range, duplicate
 *    members: the last wins, a bad escape elsewhere, \u0000) is read
 *    leniently for the members needed; detail then says "read leniently".
 *  - A missing or absurd expires_in (not a number or a string of digits in
 *    1 s .. 1 year) is never a failure: expires_in_s is the dialect's
 *    default_lifetime_s and expires_in_defaulted is set, for a warning.
 *  - error "out_of_memory" (outcome TRANSIENT): memory ran out while reading
 *    the answer; refresh_token may or may not have been copied. With a 2xx
 *    status the answer may have rotated the refresh token and the copy may be
 *    lost: the caller (engine) treats an out_of_memory with a 2xx status as
 *    fatal for the process (exit loudly; systemd restarts, the spool replays)
 *    rather than carry on as if nothing had been rotated.
 */
struct token_result {
    enum refresh_outcome outcome;
    char error[64];   /* machine code: "invalid_grant", "http_503", "timeout", "bad_json"... */
    char detail[256]; /* for humans and logs: no token text, ever */
    int64_t retry_after_ms;          /* -1 when the provider gave none */
    enum answer_scope failure_scope; /* whose failure it is (docs/providers.md) */
    enum answer_retry retry_rule;    /* when to ask again */
    /* SUCCESS (refresh_token and id_token also on a rotated BAD_RESPONSE, see above): */
    struct secret access_token;
    struct secret refresh_token; /* empty when not rotated */
    struct secret id_token;      /* empty when not returned */
    int64_t expires_in_s;
    bool expires_in_defaulted; /* missing/absurd: the documented default was used */
    char *scope;               /* malloc()ed or NULL when the provider gave none */
    char *token_type;          /* malloc()ed or NULL */
};
void token_result_clear(struct token_result *res);

struct provider_ops {
    enum provider_id id;
    const char *name;
    int64_t default_lifetime_s; /* documented lifetime used when expires_in is unusable */
    /*
     * Builds the refresh request. scope is the stored scope (may be NULL).
     * Returns -1 with a reason in err on failure (e.g. OOM).
     */
    int (*build_request)(const struct provider_config *pc, const char *refresh_token,
                         const char *scope, struct provider_request *out, char *err, size_t errlen);
    /* Classifies an answer; always fills res (outcome, error, detail). */
    void (*read_answer)(const struct http_answer *ans, struct token_result *res);
};

const struct provider_ops *provider_ops_get(enum provider_id id);

/*
 * Shared helpers the dialects are built from (exposed for unit tests):
 * the transport/status part of classification that is the same for every
 * provider, and the reading of a standard RFC 6749 JSON answer.
 */
bool provider_classify_transport(const struct http_answer *ans, struct token_result *res);
void provider_read_standard_json(const struct http_answer *ans, int64_t default_lifetime_s,
                                 struct token_result *res);

#endif
