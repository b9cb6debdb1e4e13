/*
 * provider_microsoft.c — the Microsoft identity platform v2.0 dialect
 * (login.microsoftonline.com/{tenant}/oauth2/v2.0/token; the tenant is already
 * in token_url). scope is always sent: the stored scopes with offline_access
 * added when missing, because Microsoft returns a new refresh token only when
 * offline_access is requested (AADSTS90009 is unrelated: an app asking for a
 * token for itself). Every refresh rotates the refresh token. We branch on
 * "error" as Microsoft asks, and on the AADSTS number only where it decides
 * whose failure it is (unauthorized_client 700016 is one user's tenant,
 * invalid_request 90002 our tenant setting): the rows are in provider_table.c.
 * The AADSTS numbers of error_codes go into the detail for operators. Pure: no
 * I/O, no logging.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider_dialect.h"

#define MICROSOFT_DEFAULT_LIFETIME_S 3600
#define MICROSOFT_MAX_NOTED_CODES    4

static void microsoft_error_note(const json_t *root, char *buf, size_t buflen)
{
    const json_t *codes = json_object_get(root, "error_codes");
    if (!json_is_array(codes))
        return;
    size_t o = 0, noted = 0;
    for (size_t i = 0; i < json_array_size(codes) && noted < MICROSOFT_MAX_NOTED_CODES; i++) {
        const json_t *c = json_array_get(codes, i);
        if (!json_is_integer(c))
            continue;
        json_int_t n = json_integer_value(c);
        if (n < 0 || n > 99999999)
            continue;
        int w = snprintf(buf + o, buflen - o, "%sAADSTS%lld", noted ? "," : "", (long long)n);
        if (w < 0 || (size_t)w >= buflen - o) {
            buf[o] = '\0';
            break;
        }
        o += (size_t)w;
        noted++;
    }
}

static const struct provider_dialect microsoft_dialect = {
    .id = PROVIDER_MICROSOFT,
    .default_lifetime_s = MICROSOFT_DEFAULT_LIFETIME_S,
    .error_note = microsoft_error_note,
};

static bool scope_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * The stored scope, whitespace-normalised, with offline_access appended when
 * no word of it is offline_access. Owned by the caller (free()).
 */
static char *microsoft_scope(const char *stored)
{
    static const char oa[] = "offline_access";
    size_t slen = stored ? strlen(stored) : 0;
    char *out = malloc(slen + sizeof(oa) + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    bool have_oa = false;
    const char *p = stored;
    while (p && *p) {
        while (scope_space(*p))
            p++;
        const char *w = p;
        while (*p && !scope_space(*p))
            p++;
        size_t wl = (size_t)(p - w);
        if (wl == 0)
            continue;
        if (wl == sizeof(oa) - 1 && memcmp(w, oa, wl) == 0)
            have_oa = true;
        if (o)
            out[o++] = ' ';
        memcpy(out + o, w, wl);
        o += wl;
    }
    if (!have_oa) {
        if (o)
            out[o++] = ' ';
        memcpy(out + o, oa, sizeof(oa) - 1);
        o += sizeof(oa) - 1;
    }
    out[o] = '\0';
    return out;
}

static int microsoft_build_request(const struct provider_config *pc, const char *refresh_token,
                                   const char *scope, struct provider_request *out, char *err,
                                   size_t errlen)
{
    if (!pc || !pc->client_id || !refresh_token) {
        memset(out, 0, sizeof(*out));
        snprintf(err, errlen, "microsoft: client_id and refresh token are required");
        return -1;
    }
    char *sc = microsoft_scope(scope);
    if (!sc) {
        memset(out, 0, sizeof(*out));
        snprintf(err, errlen, "out of memory building the request");
        return -1;
    }
    const struct provider_form_field fields[] = {
        {"client_id", pc->client_id},
        {"grant_type", "refresh_token"},
        {"refresh_token", refresh_token},
        {"client_secret", pc->client_secret && *pc->client_secret ? pc->client_secret : NULL},
        {"scope", sc},
    };
    int rc = provider_build_form(pc, fields, ARRAY_LEN(fields), out, err, errlen);
    free(sc);
    return rc;
}

static void microsoft_read_answer(const struct http_answer *ans, struct token_result *res)
{
    provider_read_answer_dialect(ans, &microsoft_dialect, res);
}

const struct provider_ops provider_microsoft_ops = {
    .id = PROVIDER_MICROSOFT,
    .name = "microsoft",
    .default_lifetime_s = MICROSOFT_DEFAULT_LIFETIME_S,
    .build_request = microsoft_build_request,
    .read_answer = microsoft_read_answer,
};
