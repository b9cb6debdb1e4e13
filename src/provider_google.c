/*
 * provider_google.c — the Google dialect (oauth2.googleapis.com/token):
 * a form POST with the client secret in the body; the answer usually has no
 * refresh_token (the caller keeps the stored one). What its error answers
 * mean (unauthorized_client and admin_policy_enforced are the user's to fix,
 * deleted_client and disabled_client ours, a 403 HTML page is overload) is in
 * the table of provider_table.c; invalid_grant's error_subtype (invalid_rapt)
 * is noted in the detail. Pure: no I/O, no logging.
 */
#include <stdio.h>
#include <string.h>

#include "provider_dialect.h"

#define GOOGLE_DEFAULT_LIFETIME_S 3600

static void google_error_note(const json_t *root, char *buf, size_t buflen)
{
    const json_t *sub = json_object_get(root, "error_subtype");
    if (!json_is_string(sub))
        return;
    char code[48];
    provider_sanitize_code(json_string_value(sub), code, sizeof(code));
    if (code[0])
        snprintf(buf, buflen, "error_subtype=%s", code);
}

static const struct provider_dialect google_dialect = {
    .id = PROVIDER_GOOGLE,
    .default_lifetime_s = GOOGLE_DEFAULT_LIFETIME_S,
    .error_note = google_error_note,
};

static int google_build_request(const struct provider_config *pc, const char *refresh_token,
                                const char *scope, struct provider_request *out, char *err,
                                size_t errlen)
{
    (void)scope; /* Google refreshes keep the granted scopes */
    return provider_build_refresh_form("google", pc, refresh_token, out, err, errlen);
}

static void google_read_answer(const struct http_answer *ans, struct token_result *res)
{
    provider_read_answer_dialect(ans, &google_dialect, res);
}

const struct provider_ops provider_google_ops = {
    .id = PROVIDER_GOOGLE,
    .name = "google",
    .default_lifetime_s = GOOGLE_DEFAULT_LIFETIME_S,
    .build_request = google_build_request,
    .read_answer = google_read_answer,
};
