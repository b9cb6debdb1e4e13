/*
 * provider_oauth2.c — the generic RFC 6749 dialect ([provider.NAME] with
 * dialect = oauth2) for any other authorization server (Keycloak, Okta,
 * Auth0, GitLab, Slack...): the §6 refresh request, grant_type,
 * refresh_token and, when send_scope is set and a scope is stored, scope;
 * the client authenticated by client_secret_basic (RFC 6749 §2.3.1: HTTP
 * Basic over the form-urlencoded client id and secret, the method every
 * server must support) or client_secret_post (both in the body). Answers
 * are read by the shared RFC 6749 reader, classified by the table's rows for
 * any dialect (the RFC 6749 §5.2 codes). Pure: no I/O, no logging.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider_dialect.h"

/* RFC 6749 gives no default; an hour is what most servers issue. */
#define OAUTH2_DEFAULT_LIFETIME_S 3600

static const struct provider_dialect oauth2_dialect = {
    .id = PROVIDER_NAMED_COUNT, /* no named dialect's rows: only the rows for any */
    .default_lifetime_s = OAUTH2_DEFAULT_LIFETIME_S,
};

/*
 * "Authorization: Basic base64(urlenc(client_id) ":" urlenc(secret))" into
 * out (a secret: it carries the client secret). Returns -1 on OOM.
 */
static int basic_header(const struct provider_config *pc, struct secret *out)
{
    static const char prefix[] = "Authorization: Basic ";
    char *id = provider_form_encode(pc->client_id);
    char *pw = provider_form_encode(pc->client_secret ? pc->client_secret : "");
    char *pair = NULL, *hdr = NULL;
    int rc = -1;
    if (!id || !pw)
        goto out;
    size_t idlen = strlen(id), pwlen = strlen(pw), pairlen = idlen + 1 + pwlen;
    if ((pair = malloc(pairlen + 1)) == NULL)
        goto out;
    memcpy(pair, id, idlen);
    pair[idlen] = ':';
    memcpy(pair + idlen + 1, pw, pwlen + 1);
    size_t b64cap = sodium_base64_ENCODED_LEN(pairlen, sodium_base64_VARIANT_ORIGINAL);
    size_t hdrlen = sizeof(prefix) - 1 + b64cap;
    if ((hdr = malloc(hdrlen)) == NULL)
        goto out;
    memcpy(hdr, prefix, sizeof(prefix) - 1);
    sodium_bin2base64(hdr + sizeof(prefix) - 1, b64cap, (const unsigned char *)pair, pairlen,
                      sodium_base64_VARIANT_ORIGINAL);
    secret_adopt(out, hdr, strlen(hdr));
    hdr = NULL;
    rc = 0;
out:
    secure_free_str(id);
    secure_free_str(pw);
    secure_free_str(pair);
    return rc;
}

static int oauth2_build_request(const struct provider_config *pc, const char *refresh_token,
                                const char *scope, struct provider_request *out, char *err,
                                size_t errlen)
{
    if (!pc || !pc->client_id || !refresh_token) {
        memset(out, 0, sizeof(*out));
        snprintf(err, errlen, "oauth2: client_id and refresh token are required");
        return -1;
    }
    bool post = pc->client_auth == CLIENT_AUTH_POST;
    const char *secret = pc->client_secret && *pc->client_secret ? pc->client_secret : NULL;
    const struct provider_form_field fields[] = {
        {"grant_type", "refresh_token"},
        {"refresh_token", refresh_token},
        {"scope", pc->send_scope && scope && *scope ? scope : NULL},
        {"client_id", post ? pc->client_id : NULL},
        {"client_secret", post ? secret : NULL},
    };
    if (provider_build_form(pc, fields, ARRAY_LEN(fields), out, err, errlen) < 0)
        return -1;
    if (post)
        return 0;
    if (basic_header(pc, &out->auth_header) < 0) {
        provider_request_clear(out);
        snprintf(err, errlen, "out of memory building the request");
        return -1;
    }
    out->headers[2] = out->auth_header.data;
    return 0;
}

static void oauth2_read_answer(const struct http_answer *ans, struct token_result *res)
{
    provider_read_answer_dialect(ans, &oauth2_dialect, res);
}

const struct provider_ops provider_oauth2_ops = {
    .id = PROVIDER_NAMED_COUNT,
    .name = "oauth2",
    .default_lifetime_s = OAUTH2_DEFAULT_LIFETIME_S,
    .build_request = oauth2_build_request,
    .read_answer = oauth2_read_answer,
};
