/*
 * provider_github.c — the GitHub dialect (GitHub App user-to-server tokens,
 * github.com/login/oauth/access_token or a GHES host). Accept: application/json
 * is required, or GitHub answers form-encoded. Every refresh rotates the
 * refresh token. Errors arrive with HTTP 200 and an "error" member, which the
 * shared reader treats as failure whatever the status; the table of
 * provider_table.c says bad_refresh_token means revoked and
 * incorrect_client_credentials a configuration error. Should an answer still
 * come form-encoded (a proxy dropping the Accept header), it is read as a
 * form, so that its rotated refresh token is not lost. Pure: no I/O.
 */
#include <stdio.h>
#include <string.h>

#include "provider_dialect.h"

#define GITHUB_DEFAULT_LIFETIME_S 28800

static const struct provider_dialect github_dialect = {
    .id = PROVIDER_GITHUB,
    .default_lifetime_s = GITHUB_DEFAULT_LIFETIME_S,
    .error_note = NULL,
    .form_answers = true,
};

static int github_build_request(const struct provider_config *pc, const char *refresh_token,
                                const char *scope, struct provider_request *out, char *err,
                                size_t errlen)
{
    (void)scope; /* GitHub App permissions are not requested per refresh */
    return provider_build_refresh_form("github", pc, refresh_token, out, err, errlen);
}

static void github_read_answer(const struct http_answer *ans, struct token_result *res)
{
    provider_read_answer_dialect(ans, &github_dialect, res);
}

const struct provider_ops provider_github_ops = {
    .id = PROVIDER_GITHUB,
    .name = "github",
    .default_lifetime_s = GITHUB_DEFAULT_LIFETIME_S,
    .build_request = github_build_request,
    .read_answer = github_read_answer,
};
