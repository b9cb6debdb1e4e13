/*
 * provider_dialect.h — private to provider*.c: what a dialect adds to the
 * shared RFC 6749 machinery of provider.c. A dialect names itself (its rows
 * of the classification table, provider_table.c, apply) and may add a short,
 * non-secret note (e.g. AADSTS numbers) to the detail; everything else
 * (transport, status, JSON, success fields) is shared.
 * Nothing outside the provider files includes this header.
 */
#ifndef OAUTH_PROVIDER_DIALECT_H
#define OAUTH_PROVIDER_DIALECT_H

#include <jansson.h>

#include "provider.h"

struct provider_dialect {
    int id; /* enum provider_id: which rows of provider_table.c apply */
    int64_t default_lifetime_s;
    /*
     * Optional: writes a short note about an error answer into buf (e.g.
     * "AADSTS70008" or "error_subtype=invalid_rapt"); only characters that
     * cannot carry a token. root is the parsed answer object; it is not
     * called when only the tolerant scanner could read the answer.
     */
    void (*error_note)(const json_t *root, char *buf, size_t buflen);
    /* The endpoint may answer form-encoded (GitHub without Accept: application/json). */
    bool form_answers;
};

/* Transport, status and JSON classification with the dialect's additions. */
void provider_read_answer_dialect(const struct http_answer *ans, const struct provider_dialect *d,
                                  struct token_result *res);

/* One field of a form body; value NULL means "omit this field". */
struct provider_form_field {
    const char *name;
    const char *value;
};

/*
 * Fills out with url = token_url, a percent-encoded form body (RFC 3986
 * unreserved characters kept, everything else %XX) and the JSON/form headers.
 * Returns -1 with a reason in err (OOM, missing client_id or token_url).
 */
int provider_build_form(const struct provider_config *pc, const struct provider_form_field *fields,
                        size_t nfields, struct provider_request *out, char *err, size_t errlen) WUR;

/*
 * The plain RFC 6749 refresh request (grant_type, refresh_token, client_id,
 * client_secret) that Google and GitHub take; dialect names it in errors.
 */
int provider_build_refresh_form(const char *dialect, const struct provider_config *pc,
                                const char *refresh_token, struct provider_request *out, char *err,
                                size_t errlen) WUR;

/* A malloc()ed copy of s percent-encoded as provider_build_form encodes values; NULL on OOM.
 * The caller wipes it when s was a secret. */
char *provider_form_encode(const char *s);

/* Copies s keeping only [A-Za-z0-9_.-], truncated to fit buf; "" when nothing is left. */
void provider_sanitize_code(const char *s, char *buf, size_t buflen);

extern const struct provider_ops provider_google_ops;
extern const struct provider_ops provider_github_ops;
extern const struct provider_ops provider_microsoft_ops;
extern const struct provider_ops provider_oauth2_ops;

#endif
