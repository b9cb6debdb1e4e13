/*
 * test_provider.c — the provider dialects. A table drives classification:
 * every row (transport error, HTTP status, JSON error code, success shape) is
 * run against each dialect it names, and checks outcome, error code,
 * Retry-After and that no token or secret from the answer reached the
 * human-readable detail. Further tests check the success fields, the
 * expires_in rules (a rotated refresh token is never thrown away), and the
 * requests: exact form bodies with hostile characters percent-encoded, the
 * headers, and Microsoft's scope with offline_access.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "provider.h"

enum { G = 1, H = 2, M = 4, ALL = 7 };
#define ANY_RETRY (-2)

/* Strings planted in answers: none may ever appear in res->detail. */
#define AT  "ya29.SECRET-ACCESS-TOKEN-abcdefghijklmnopqrstuvwxyz0123456789"
#define RT  "ghr_SECRETREFRESHTOKEN1234567890abcdefghijklmnopqrstuvwxyzABCDEFGH"
#define IDT "eyJhbGciOiJSUzI1NiJ9.SECRETIDTOKENPAYLOAD0123456789abcdef.sig"
static const char *const planted[] = {AT, RT, IDT, "SECRET"};

struct row {
    const char *name;
    int dialects;
    int transport_error;
    long status;
    const char *body;
    bool oversized;
    const char *retry_after;
    enum refresh_outcome want;
    const char *want_error;
    int64_t want_retry_ms; /* ANY_RETRY: not checked */
    /* 0: what the outcome implies (revoked: reconnect, config: probe, else backoff);
       else the expected enum answer_retry + 1. Probe and pause are the provider's. */
    int want_rule;
};

#define ROW_T(name, d, te, want, err)                                                              \
    {                                                                                              \
        name, d, te, 0, NULL, false, NULL, want, err, ANY_RETRY, 0                                 \
    }
#define ROW_S(name, d, st, body, want, err)                                                        \
    {                                                                                              \
        name, d, 0, st, body, false, NULL, want, err, ANY_RETRY, 0                                 \
    }

/* A row with the retry rule it must carry (and so whose failure it is). */
#define ROW_R(name, d, st, body, ra, want, err, rule)                                              \
    {                                                                                              \
        name, d, 0, st, body, false, ra, want, err, ANY_RETRY, (rule) + 1                          \
    }
#define PAUSE_ROW(name, d, st, body, ra, err)                                                      \
    ROW_R(name, d, st, body, ra, OUTCOME_TRANSIENT, err, RETRY_PAUSE)

/* Google's 403 rate-limit answers (googleapis/google-oauth-java-client#57, gsutil#114). */
#define GOOGLE_403_PAGE                                                                            \
    "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 403 (Forbidden)!!1</title>"     \
    "<p><b>403.</b> <ins>That's an error.</ins><p>We're sorry, but you do not have access to "     \
    "this page. <ins>That's all we know.</ins>"
#define GOOGLE_403_REASON(reason)                                                                  \
    "{\"error\":{\"code\":403,\"message\":\"Rate Limit Exceeded\",\"errors\":[{\"domain\":"        \
    "\"usageLimits\",\"reason\":\"" reason "\",\"message\":\"Rate Limit Exceeded\"}]}}"
/* Microsoft's error body with one AADSTS number. */
#define MS_ERROR(error, n)                                                                         \
    "{\"error\":\"" error "\",\"error_description\":\"AADSTS" #n                                   \
    ": some text\",\"error_codes\":[" #n "],\"trace_id\":\"0b4e0f5c\"}"

static const struct row rows[] = {
    /* ---- transport ---- */
    ROW_T("timeout", ALL, CURLE_OPERATION_TIMEDOUT, OUTCOME_TRANSIENT, "timeout"),
    ROW_T("connect refused", ALL, CURLE_COULDNT_CONNECT, OUTCOME_TRANSIENT, "network"),
    ROW_T("dns failure", ALL, CURLE_COULDNT_RESOLVE_HOST, OUTCOME_TRANSIENT, "network"),
    ROW_T("reset while receiving", ALL, CURLE_RECV_ERROR, OUTCOME_TRANSIENT, "network"),
    ROW_T("send failure", ALL, CURLE_SEND_ERROR, OUTCOME_TRANSIENT, "network"),
    ROW_T("empty reply", ALL, CURLE_GOT_NOTHING, OUTCOME_TRANSIENT, "network"),
    ROW_T("body cut short", ALL, CURLE_PARTIAL_FILE, OUTCOME_TRANSIENT, "network"),
    ROW_T("http2 stream error", ALL, CURLE_HTTP2_STREAM, OUTCOME_TRANSIENT, "network"),
    ROW_T("certificate not trusted", ALL, CURLE_PEER_FAILED_VERIFICATION, OUTCOME_TRANSIENT, "tls"),
    ROW_T("tls handshake failed", ALL, CURLE_SSL_CONNECT_ERROR, OUTCOME_TRANSIENT, "tls"),
    ROW_T("ca file unusable", ALL, CURLE_SSL_CACERT_BADFILE, OUTCOME_TRANSIENT, "tls"),
    ROW_T("http url refused", ALL, CURLE_UNSUPPORTED_PROTOCOL, OUTCOME_CONFIG,
          "unsupported_protocol"),
    ROW_T("malformed url", ALL, CURLE_URL_MALFORMAT, OUTCOME_CONFIG, "bad_url"),
    ROW_T("aborted at shutdown", ALL, CURLE_ABORTED_BY_CALLBACK, OUTCOME_TRANSIENT, "aborted"),
    ROW_T("other curl error", ALL, CURLE_OUT_OF_MEMORY, OUTCOME_TRANSIENT, "transport"),
    ROW_T("content-length over cap", ALL, CURLE_FILESIZE_EXCEEDED, OUTCOME_BAD_RESPONSE,
          "oversized"),
    {"write aborted over cap", ALL, CURLE_WRITE_ERROR, 200, "{", true, NULL, OUTCOME_BAD_RESPONSE,
     "oversized", -1, 0},
    {"oversized flag wins over a 200", ALL, 0, 200, "{}", true, NULL, OUTCOME_BAD_RESPONSE,
     "oversized", -1, 0},

    /* ---- status ---- */
    {"429 with delta Retry-After", ALL, 0, 429, "", false, "30", OUTCOME_TRANSIENT, "http_429",
     30000, RETRY_PAUSE + 1},
    {"429 with date Retry-After", ALL, 0, 429, "", false, "Sun, 06 Nov 1994 08:50:37 GMT",
     OUTCOME_TRANSIENT, "http_429", 60000, RETRY_PAUSE + 1},
    {"429 without Retry-After", ALL, 0, 429, "{}", false, NULL, OUTCOME_TRANSIENT, "http_429", -1,
     RETRY_PAUSE + 1},
    {"429 with garbage Retry-After", ALL, 0, 429, "", false, "soon", OUTCOME_TRANSIENT, "http_429",
     -1, RETRY_PAUSE + 1},
    {"500", ALL, 0, 500, "oops", false, NULL, OUTCOME_TRANSIENT, "http_500", -1, 0},
    {"503 with Retry-After", ALL, 0, 503, "", false, "120", OUTCOME_TRANSIENT, "http_503", 120000,
     RETRY_PAUSE + 1},
    {"503 with date Retry-After", ALL, 0, 503, "", false, "Sun, 06 Nov 1994 08:50:37 GMT",
     OUTCOME_TRANSIENT, "http_503", 60000, RETRY_PAUSE + 1},
    {"503 without Retry-After", ALL, 0, 503, "<html>busy</html>", false, NULL, OUTCOME_TRANSIENT,
     "http_503", -1, RETRY_BACKOFF + 1},
    {"503 with garbage Retry-After", ALL, 0, 503, "", false, "later", OUTCOME_TRANSIENT, "http_503",
     -1, RETRY_BACKOFF + 1},
    {"502 with Retry-After is the account's backoff", ALL, 0, 502, "", false, "30",
     OUTCOME_TRANSIENT, "http_502", 30000, RETRY_BACKOFF + 1},
    PAUSE_ROW("408 request timeout", ALL, 408, "", NULL, "http_408"),
    {"403 with Retry-After", ALL, 0, 403, "{\"error\":\"access_denied\"}", false, "20",
     OUTCOME_TRANSIENT, "http_403", 20000, RETRY_PAUSE + 1},
    PAUSE_ROW("google 403 HTML page", G, 403, GOOGLE_403_PAGE, NULL, "http_403"),
    PAUSE_ROW("google 403 HTML page after blanks", G, 403, "\r\n  <html><body>x</body></html>",
              NULL, "http_403"),
    ROW_R("403 HTML page elsewhere", H | M, 403, GOOGLE_403_PAGE, NULL, OUTCOME_BAD_RESPONSE,
          "http_403", RETRY_BACKOFF),
    PAUSE_ROW("google 403 rateLimitExceeded", G, 403, GOOGLE_403_REASON("rateLimitExceeded"), NULL,
              "http_403"),
    PAUSE_ROW("google 403 userRateLimitExceeded", G, 403,
              GOOGLE_403_REASON("userRateLimitExceeded"), NULL, "http_403"),
    ROW_R("403 rateLimitExceeded elsewhere", H | M, 403, GOOGLE_403_REASON("rateLimitExceeded"),
          NULL, OUTCOME_BAD_RESPONSE, "bad_error_field", RETRY_BACKOFF),
    ROW_R("google 403 JSON without a rate limit", G, 403, "{\"error\":\"access_denied\"}", NULL,
          OUTCOME_BAD_RESPONSE, "access_denied", RETRY_BACKOFF),
    ROW_R("google 400 HTML page is no rate limit", G, 400, GOOGLE_403_PAGE, NULL,
          OUTCOME_BAD_RESPONSE, "http_400", RETRY_BACKOFF),
    {"502 with a JSON error is still transient", ALL, 0, 502, "{\"error\":\"invalid_grant\"}",
     false, NULL, OUTCOME_TRANSIENT, "http_502", -1, 0},
    ROW_S("500 google internal_failure", ALL, 500, "{\"error\":\"internal_failure\"}",
          OUTCOME_TRANSIENT, "http_500"),
    ROW_S("301 redirect not followed", ALL, 301, "", OUTCOME_BAD_RESPONSE, "redirect"),
    ROW_S("302 redirect not followed", ALL, 302, "<a href=x>", OUTCOME_BAD_RESPONSE, "redirect"),
    ROW_S("307 redirect not followed", ALL, 307, "", OUTCOME_BAD_RESPONSE, "redirect"),
    ROW_S("no status at all", ALL, 0, "", OUTCOME_BAD_RESPONSE, "http_0"),
    ROW_S("1xx final status", ALL, 101, "", OUTCOME_BAD_RESPONSE, "http_101"),
    ROW_S("404 without JSON", ALL, 404, "<html>not found</html>", OUTCOME_BAD_RESPONSE, "http_404"),
    ROW_S("400 JSON without error", ALL, 400, "{\"message\":\"nope\"}", OUTCOME_BAD_RESPONSE,
          "http_400"),
    ROW_S("403 JSON array", ALL, 403, "[\"error\"]", OUTCOME_BAD_RESPONSE, "http_403"),
    ROW_S("401 empty body", ALL, 401, "", OUTCOME_BAD_RESPONSE, "http_401"),
    ROW_S("400 with access_token but no error", ALL, 400,
          "{\"access_token\":\"" AT "\",\"expires_in\":3600}", OUTCOME_BAD_RESPONSE, "http_400"),

    /* ---- JSON error codes: shared (RFC 6749) ---- */
    ROW_S("invalid_grant", ALL, 400,
          "{\"error\":\"invalid_grant\",\"error_description\":\"Token has been expired or "
          "revoked.\"}",
          OUTCOME_REVOKED, "invalid_grant"),
    ROW_S("invalid_grant with HTTP 200", ALL, 200, "{\"error\":\"invalid_grant\"}", OUTCOME_REVOKED,
          "invalid_grant"),
    ROW_S("401 invalid_client", ALL, 401,
          "{\"error\":\"invalid_client\",\"error_description\":\"Unauthorized\"}", OUTCOME_CONFIG,
          "invalid_client"),
    ROW_S("400 invalid_client", ALL, 400, "{\"error\":\"invalid_client\"}", OUTCOME_CONFIG,
          "invalid_client"),
    ROW_S("unauthorized_client", H | M, 400, "{\"error\":\"unauthorized_client\"}", OUTCOME_CONFIG,
          "unauthorized_client"),
    ROW_S("unsupported_grant_type", ALL, 400,
          "{\"error\":\"unsupported_grant_type\",\"error_description\":\"Invalid grant_type\"}",
          OUTCOME_CONFIG, "unsupported_grant_type"),
    ROW_S("redirect_uri_mismatch", ALL, 200, "{\"error\":\"redirect_uri_mismatch\"}",
          OUTCOME_CONFIG, "redirect_uri_mismatch"),
    ROW_S("temporarily_unavailable", G | H, 400, "{\"error\":\"temporarily_unavailable\"}",
          OUTCOME_TRANSIENT, "temporarily_unavailable"),
    ROW_S("server_error", ALL, 400, "{\"error\":\"server_error\"}", OUTCOME_TRANSIENT,
          "server_error"),
    ROW_S("invalid_scope", G | H, 400, "{\"error\":\"invalid_scope\"}", OUTCOME_BAD_RESPONSE,
          "invalid_scope"),
    ROW_S("invalid_request", ALL, 400, "{\"error\":\"invalid_request\"}", OUTCOME_BAD_RESPONSE,
          "invalid_request"),
    ROW_S("unverified_user_email", ALL, 200, "{\"error\":\"unverified_user_email\"}",
          OUTCOME_BAD_RESPONSE, "unverified_user_email"),
    ROW_S("unknown error code", ALL, 400, "{\"error\":\"something_new\"}", OUTCOME_BAD_RESPONSE,
          "something_new"),
    ROW_S("error code sanitised", ALL, 400, "{\"error\":\"bad code!<script>\\u0001\"}",
          OUTCOME_BAD_RESPONSE, "badcodescript"),
    ROW_S("error code of only junk", ALL, 400, "{\"error\":\"!!! ***\"}", OUTCOME_BAD_RESPONSE,
          "unknown_error"),
    ROW_S("error code truncated", ALL, 400,
          "{\"error\":"
          "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
          OUTCOME_BAD_RESPONSE, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ROW_S("error is a number", ALL, 400, "{\"error\":42}", OUTCOME_BAD_RESPONSE, "bad_error_field"),
    ROW_S("error is empty", ALL, 200,
          "{\"error\":\"\",\"access_token\":\"" AT "\",\"expires_in\":3600}", OUTCOME_BAD_RESPONSE,
          "bad_error_field"),
    ROW_S("error is an object", ALL, 400, "{\"error\":{\"code\":\"invalid_grant\"}}",
          OUTCOME_BAD_RESPONSE, "bad_error_field"),
    ROW_S("any error field beats tokens", ALL, 200,
          "{\"error\":\"invalid_request\",\"access_token\":\"" AT "\",\"refresh_token\":\"" RT
          "\",\"expires_in\":3600}",
          OUTCOME_BAD_RESPONSE, "invalid_request"),
    ROW_S("error null is no error", ALL, 200,
          "{\"error\":null,\"access_token\":\"" AT "\",\"expires_in\":3600}", OUTCOME_SUCCESS, ""),
    ROW_S("error_description echoing a token is redacted", ALL, 400,
          "{\"error\":\"invalid_grant\",\"error_description\":\"bad token " RT " and " AT
          " and " IDT "\"}",
          OUTCOME_REVOKED, "invalid_grant"),

    /* ---- Google ---- */
    ROW_S("google invalid_grant invalid_rapt", ALL, 400,
          "{\"error\":\"invalid_grant\",\"error_subtype\":\"invalid_rapt\","
          "\"error_description\":\"reauth related error (invalid_rapt)\"}",
          OUTCOME_REVOKED, "invalid_grant"),
    ROW_S("google unauthorized_client: that token's client", G, 400,
          "{\"error\":\"unauthorized_client\",\"error_description\":\"Unauthorized\"}",
          OUTCOME_REVOKED, "unauthorized_client"),
    ROW_S("google deleted_client", G, 401,
          "{\"error\":\"deleted_client\",\"error_description\":\"The OAuth client was deleted.\"}",
          OUTCOME_CONFIG, "deleted_client"),
    ROW_S("google disabled_client", G, 401,
          "{\"error\":\"disabled_client\",\"error_description\":\"The OAuth client was "
          "disabled.\"}",
          OUTCOME_CONFIG, "disabled_client"),
    ROW_S("deleted_client elsewhere", H | M, 401, "{\"error\":\"deleted_client\"}",
          OUTCOME_BAD_RESPONSE, "deleted_client"),
    ROW_S("disabled_client elsewhere", H | M, 401, "{\"error\":\"disabled_client\"}",
          OUTCOME_BAD_RESPONSE, "disabled_client"),
    ROW_S("google admin_policy_enforced", G, 400, "{\"error\":\"admin_policy_enforced\"}",
          OUTCOME_REVOKED, "admin_policy_enforced"),
    ROW_S("admin_policy_enforced elsewhere", H | M, 400, "{\"error\":\"admin_policy_enforced\"}",
          OUTCOME_BAD_RESPONSE, "admin_policy_enforced"),
    ROW_S("google internal_failure", G, 400, "{\"error\":\"internal_failure\"}", OUTCOME_TRANSIENT,
          "internal_failure"),
    ROW_S("internal_failure elsewhere", H | M, 400, "{\"error\":\"internal_failure\"}",
          OUTCOME_BAD_RESPONSE, "internal_failure"),

    /* ---- GitHub: errors with HTTP 200 ---- */
    ROW_S("github bad_refresh_token with 200", H, 200,
          "{\"error\":\"bad_refresh_token\",\"error_description\":\"The refresh token passed is "
          "incorrect or expired.\",\"error_uri\":\"https://docs.github.com\"}",
          OUTCOME_REVOKED, "bad_refresh_token"),
    ROW_S("bad_refresh_token elsewhere", G | M, 200, "{\"error\":\"bad_refresh_token\"}",
          OUTCOME_BAD_RESPONSE, "bad_refresh_token"),
    ROW_S("github incorrect_client_credentials with 200", H, 200,
          "{\"error\":\"incorrect_client_credentials\"}", OUTCOME_CONFIG,
          "incorrect_client_credentials"),
    ROW_S("incorrect_client_credentials elsewhere", G | M, 200,
          "{\"error\":\"incorrect_client_credentials\"}", OUTCOME_BAD_RESPONSE,
          "incorrect_client_credentials"),

    /* ---- Microsoft ---- */
    ROW_S("microsoft interaction_required", M, 400,
          "{\"error\":\"interaction_required\",\"error_codes\":[50076]}", OUTCOME_REVOKED,
          "interaction_required"),
    ROW_S("microsoft consent_required", M, 400,
          "{\"error\":\"consent_required\",\"error_codes\":[65001]}", OUTCOME_REVOKED,
          "consent_required"),
    ROW_S("interaction_required elsewhere", G | H, 400, "{\"error\":\"interaction_required\"}",
          OUTCOME_BAD_RESPONSE, "interaction_required"),
    ROW_S("consent_required elsewhere", G | H, 400, "{\"error\":\"consent_required\"}",
          OUTCOME_BAD_RESPONSE, "consent_required"),
    ROW_S("microsoft invalid_grant AADSTS70008", M, 400,
          "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS70008: The provided "
          "authorization code or refresh token has expired due to inactivity.\","
          "\"error_codes\":[70008],\"timestamp\":\"2024-01-01 00:00:00Z\","
          "\"trace_id\":\"0b4e0f5c-1d2e-4f3a-8b9c-0d1e2f3a4b5c\"}",
          OUTCOME_REVOKED, "invalid_grant"),
    ROW_S("microsoft unauthorized_client AADSTS700016: that user's tenant", M, 400,
          MS_ERROR("unauthorized_client", 700016), OUTCOME_REVOKED, "unauthorized_client"),
    ROW_S("microsoft unauthorized_client AADSTS7000112: disabled in that tenant", M, 400,
          MS_ERROR("unauthorized_client", 7000112), OUTCOME_REVOKED, "unauthorized_client"),
    ROW_S("microsoft AADSTS number read from the description alone", M, 400,
          "{\"error\":\"unauthorized_client\",\"error_description\":\"AADSTS700016: Application "
          "not found in the directory\"}",
          OUTCOME_REVOKED, "unauthorized_client"),
    ROW_S("microsoft unauthorized_client with another number", M, 400,
          MS_ERROR("unauthorized_client", 700025), OUTCOME_CONFIG, "unauthorized_client"),
    ROW_S("AADSTS700016 decides nothing elsewhere", H, 400, MS_ERROR("unauthorized_client", 700016),
          OUTCOME_CONFIG, "unauthorized_client"),
    ROW_S("microsoft invalid_client AADSTS7000215", M, 401, MS_ERROR("invalid_client", 7000215),
          OUTCOME_CONFIG, "invalid_client"),
    ROW_S("microsoft invalid_request AADSTS90002: tenant not found", M, 400,
          MS_ERROR("invalid_request", 90002), OUTCOME_CONFIG, "invalid_request"),
    ROW_S("microsoft invalid_request AADSTS50194: single-tenant app on /common", M, 400,
          MS_ERROR("invalid_request", 50194), OUTCOME_CONFIG, "invalid_request"),
    ROW_S("microsoft invalid_request AADSTS900144: malformed request", M, 400,
          MS_ERROR("invalid_request", 900144), OUTCOME_CONFIG, "invalid_request"),
    ROW_S("microsoft invalid_request AADSTS90009 stays a bad response", M, 400,
          MS_ERROR("invalid_request", 90009), OUTCOME_BAD_RESPONSE, "invalid_request"),
    ROW_S("invalid_request AADSTS90002 elsewhere", G | H, 400, MS_ERROR("invalid_request", 90002),
          OUTCOME_BAD_RESPONSE, "invalid_request"),
    ROW_S("microsoft invalid_scope AADSTS70011", M, 400, MS_ERROR("invalid_scope", 70011),
          OUTCOME_REVOKED, "invalid_scope"),
    ROW_S("microsoft invalid_scope AADSTS700022", M, 400, MS_ERROR("invalid_scope", 700022),
          OUTCOME_REVOKED, "invalid_scope"),
    ROW_S("microsoft invalid_resource AADSTS500011", M, 400, MS_ERROR("invalid_resource", 500011),
          OUTCOME_REVOKED, "invalid_resource"),
    ROW_S("invalid_resource elsewhere", G | H, 400, "{\"error\":\"invalid_resource\"}",
          OUTCOME_BAD_RESPONSE, "invalid_resource"),
    ROW_S("microsoft AADSTS65001 (consent) whatever the error", M, 400,
          MS_ERROR("invalid_client", 65001), OUTCOME_REVOKED, "invalid_client"),
    ROW_S("microsoft invalid_grant AADSTS65001", M, 400, MS_ERROR("invalid_grant", 65001),
          OUTCOME_REVOKED, "invalid_grant"),
    ROW_S("microsoft AADSTS50076 (MFA)", M, 400, MS_ERROR("invalid_request", 50076),
          OUTCOME_REVOKED, "invalid_request"),
    ROW_S("microsoft AADSTS50079 (MFA enrolment)", M, 400, MS_ERROR("interaction_required", 50079),
          OUTCOME_REVOKED, "interaction_required"),
    PAUSE_ROW("microsoft temporarily_unavailable is overload", M, 400,
              MS_ERROR("temporarily_unavailable", 90055), NULL, "temporarily_unavailable"),
    ROW_S("microsoft invalid_client AADSTS7000222", M, 401,
          "{\"error\":\"invalid_client\",\"error_codes\":[7000222]}", OUTCOME_CONFIG,
          "invalid_client"),

    /* ---- success shape ---- */
    ROW_S("200 not JSON", G | M, 200, "access_token=" AT "&expires_in=3600", OUTCOME_BAD_RESPONSE,
          "bad_json"),
    ROW_S("github 200 form-encoded (no Accept honoured)", H, 200,
          "access_token=" AT "&expires_in=28800&token_type=bearer", OUTCOME_SUCCESS, ""),
    ROW_S("github 200 form-encoded error", H, 200,
          "error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect",
          OUTCOME_REVOKED, "bad_refresh_token"),
    ROW_S("200 html", ALL, 200, "<html><body>Sign in</body></html>", OUTCOME_BAD_RESPONSE,
          "bad_json"),
    ROW_S("200 empty body", ALL, 200, "", OUTCOME_BAD_RESPONSE, "bad_json"),
    ROW_S("200 JSON with trailing junk", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":3600}x", OUTCOME_SUCCESS, ""),
    ROW_S("200 JSON duplicate keys: the last wins", ALL, 200,
          "{\"access_token\":\"a\",\"access_token\":\"" AT "\",\"expires_in\":3600}",
          OUTCOME_SUCCESS, ""),
    ROW_S("200 JSON with NUL in the access token", ALL, 200,
          "{\"access_token\":\"a\\u0000b\",\"expires_in\":3600}", OUTCOME_BAD_RESPONSE,
          "missing_access_token"),
    ROW_S("200 JSON with NUL elsewhere", ALL, 200,
          "{\"access_token\":\"" AT "\",\"x\":\"a\\u0000b\",\"expires_in\":3600}", OUTCOME_SUCCESS,
          ""),
    ROW_S("200 lone surrogate in the access token", ALL, 200,
          "{\"access_token\":\"a\\udc00\",\"expires_in\":3600}", OUTCOME_BAD_RESPONSE,
          "missing_access_token"),
    ROW_S("200 lone surrogate elsewhere", ALL, 200,
          "{\"x\":\"\\udc00\",\"access_token\":\"" AT "\",\"expires_in\":3600}", OUTCOME_SUCCESS,
          ""),
    ROW_S("200 expires_in 1e400", ALL, 200, "{\"access_token\":\"" AT "\",\"expires_in\":1e400}",
          OUTCOME_SUCCESS, ""),
    ROW_S("200 integer beyond 2^63 elsewhere", ALL, 200,
          "{\"access_token\":\"" AT "\",\"n\":9223372036854775809,\"expires_in\":3600}",
          OUTCOME_SUCCESS, ""),
    ROW_S("200 JSON scalar", ALL, 200, "\"" AT "\"", OUTCOME_BAD_RESPONSE, "bad_json"),
    ROW_S("200 JSON array", ALL, 200, "[{\"access_token\":\"" AT "\"}]", OUTCOME_BAD_RESPONSE,
          "bad_shape"),
    ROW_S("200 truncated JSON", ALL, 200, "{\"access_token\":\"" AT, OUTCOME_BAD_RESPONSE,
          "bad_json"),
    ROW_S("200 truncated after the access token", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":36", OUTCOME_BAD_RESPONSE, "bad_json"),
    ROW_S("missing access_token", ALL, 200, "{\"expires_in\":3600}", OUTCOME_BAD_RESPONSE,
          "missing_access_token"),
    ROW_S("access_token not a string", ALL, 200, "{\"access_token\":5,\"expires_in\":3600}",
          OUTCOME_BAD_RESPONSE, "missing_access_token"),
    ROW_S("access_token empty", ALL, 200, "{\"access_token\":\"\",\"expires_in\":3600}",
          OUTCOME_BAD_RESPONSE, "missing_access_token"),
    ROW_S("access_token null", ALL, 200, "{\"access_token\":null,\"expires_in\":3600}",
          OUTCOME_BAD_RESPONSE, "missing_access_token"),
    ROW_S("refresh_token not a string", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":3600,\"refresh_token\":[1]}",
          OUTCOME_BAD_RESPONSE, "bad_shape"),
    ROW_S("plain success", ALL, 200, "{\"access_token\":\"" AT "\",\"expires_in\":3600}",
          OUTCOME_SUCCESS, ""),
    ROW_S("success 201", ALL, 201, "{\"access_token\":\"" AT "\",\"expires_in\":3600}",
          OUTCOME_SUCCESS, ""),
    ROW_S("expires_in zero, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":0}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in negative, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":-60}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in one year, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":31536000}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in huge, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":1e300}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in missing, no rotation: default", ALL, 200, "{\"access_token\":\"" AT "\"}",
          OUTCOME_SUCCESS, ""),
    ROW_S("expires_in bool, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":true}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in word, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":\"soon\"}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in negative string, no rotation: default", ALL, 200,
          "{\"access_token\":\"" AT "\",\"expires_in\":\"-1\"}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in zero, rotated: kept", ALL, 200,
          "{\"access_token\":\"" AT "\",\"refresh_token\":\"" RT "\",\"expires_in\":0}",
          OUTCOME_SUCCESS, ""),
    ROW_S("expires_in missing, rotated: kept", ALL, 200,
          "{\"access_token\":\"" AT "\",\"refresh_token\":\"" RT "\"}", OUTCOME_SUCCESS, ""),
    ROW_S("expires_in string junk, rotated: kept", ALL, 200,
          "{\"access_token\":\"" AT "\",\"refresh_token\":\"" RT "\",\"expires_in\":\"x\"}",
          OUTCOME_SUCCESS, ""),
};

static const struct provider_ops *dialect_ops(int bit)
{
    switch (bit) {
    case G:
        return provider_ops_get(PROVIDER_GOOGLE);
    case H:
        return provider_ops_get(PROVIDER_GITHUB);
    case M:
        return provider_ops_get(PROVIDER_MICROSOFT);
    }
    return NULL;
}

/* Sun, 06 Nov 1994 08:49:37 GMT */
#define NOW_EPOCH 784111777

static struct http_answer answer_of(const struct row *r)
{
    struct http_answer a = {
        .transport_error = r->transport_error,
        .transport_detail = r->transport_error ? "curl said " RT : NULL,
        .status = r->status,
        .body = r->body,
        .body_len = r->body ? strlen(r->body) : 0,
        .oversized = r->oversized,
        .retry_after = r->retry_after,
        .received_at = NOW_EPOCH,
    };
    return a;
}

static void check_no_leak(const char *where, const struct token_result *res)
{
    for (size_t i = 0; i < sizeof(planted) / sizeof(planted[0]); i++)
        if (strstr(res->detail, planted[i]) || strstr(res->error, planted[i]))
            fail_msg("%s: detail/error must not contain planted secret \"%.12s...\"; seen "
                     "error=\"%s\" detail=\"%s\"",
                     where, planted[i], res->error, res->detail);
    for (const char *p = res->detail; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            fail_msg("%s: detail has a non-printable byte 0x%02x", where, (unsigned char)*p);
}

static void test_classification_table_covers_every_row_for_every_dialect(void **state)
{
    (void)state;
    size_t checked = 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct row *r = &rows[i];
        for (int bit = G; bit <= M; bit <<= 1) {
            if (!(r->dialects & bit))
                continue;
            const struct provider_ops *ops = dialect_ops(bit);
            struct http_answer a = answer_of(r);
            struct token_result res;
            memset(&res, 0, sizeof(res));
            ops->read_answer(&a, &res);
            char where[160];
            snprintf(where, sizeof(where), "%s [%s]", r->name, ops->name);
            if (res.outcome != r->want)
                fail_msg("%s: expected outcome %s, seen %s (error=\"%s\" detail=\"%s\")", where,
                         refresh_outcome_name(r->want), refresh_outcome_name(res.outcome),
                         res.error, res.detail);
            if (strcmp(res.error, r->want_error) != 0)
                fail_msg("%s: expected error \"%s\", seen \"%s\"", where, r->want_error, res.error);
            if (r->want_retry_ms != ANY_RETRY && res.retry_after_ms != r->want_retry_ms)
                fail_msg("%s: expected retry_after_ms %lld, seen %lld", where,
                         (long long)r->want_retry_ms, (long long)res.retry_after_ms);
            enum answer_retry want_rule = r->want_rule ? (enum answer_retry)(r->want_rule - 1)
                                          : r->want == OUTCOME_REVOKED ? RETRY_RECONNECT
                                          : r->want == OUTCOME_CONFIG  ? RETRY_PROBE
                                                                       : RETRY_BACKOFF;
            enum answer_scope want_scope = want_rule == RETRY_PROBE || want_rule == RETRY_PAUSE
                                               ? SCOPE_PROVIDER
                                               : SCOPE_ACCOUNT;
            if (res.retry_rule != want_rule)
                fail_msg("%s: expected retry rule %s, seen %s", where, answer_retry_name(want_rule),
                         answer_retry_name(res.retry_rule));
            if (res.failure_scope != want_scope)
                fail_msg("%s: expected scope %s, seen %s", where, answer_scope_name(want_scope),
                         answer_scope_name(res.failure_scope));
            if (res.outcome != OUTCOME_SUCCESS && res.access_token.data)
                fail_msg("%s: a failed classification must not carry an access token", where);
            if (res.outcome == OUTCOME_SUCCESS &&
                (!res.access_token.data || strcmp(res.access_token.data, AT) != 0))
                fail_msg("%s: success must carry the access token", where);
            if (r->want != OUTCOME_SUCCESS && r->want_error[0] == '\0')
                fail_msg("%s: table row without an error code", where);
            if (res.outcome != OUTCOME_SUCCESS && res.detail[0] == '\0')
                fail_msg("%s: expected a detail for operators, seen none", where);
            check_no_leak(where, &res);
            token_result_clear(&res);
            checked++;
        }
    }
    /* Every row ran for at least one dialect. */
    assert_true(checked >= sizeof(rows) / sizeof(rows[0]));
}

static void read_with(enum provider_id id, long status, const char *body, struct token_result *res)
{
    struct http_answer a = {
        .status = status, .body = body, .body_len = strlen(body), .received_at = NOW_EPOCH};
    memset(res, 0, sizeof(*res));
    provider_ops_get(id)->read_answer(&a, res);
}

static void test_success_fields_are_copied(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_MICROSOFT, 200,
              "{\"token_type\":\"Bearer\",\"scope\":\"openid User.Read\",\"expires_in\":4312,"
              "\"ext_expires_in\":4312,\"access_token\":\"" AT "\",\"refresh_token\":\"" RT
              "\",\"id_token\":\"" IDT "\"}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    assert_string_equal(res.access_token.data, AT);
    assert_int_equal(res.access_token.len, strlen(AT));
    assert_string_equal(res.refresh_token.data, RT);
    assert_string_equal(res.id_token.data, IDT);
    assert_int_equal(res.expires_in_s, 4312);
    assert_false(res.expires_in_defaulted);
    assert_string_equal(res.scope, "openid User.Read");
    assert_string_equal(res.token_type, "Bearer");
    token_result_clear(&res);
    assert_null(res.access_token.data);
    assert_null(res.scope);
}

static void test_google_answer_without_refresh_token_keeps_nothing_to_rotate(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GOOGLE, 200,
              "{\"access_token\":\"" AT "\",\"expires_in\":3920,\"scope\":\"email\","
              "\"token_type\":\"Bearer\",\"id_token\":\"\"}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    if (res.refresh_token.data || res.refresh_token.len)
        fail_msg("no refresh_token in the answer: expected an empty refresh_token");
    if (res.id_token.data)
        fail_msg("empty id_token: expected it not to be kept");
    assert_int_equal(res.expires_in_s, 3920);
    token_result_clear(&res);
}

static void test_github_rotation_answer(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GITHUB, 200,
              "{\"access_token\":\"ghu_"
              "abc\",\"expires_in\":28800,\"refresh_token\":\"" RT
              "\",\"refresh_token_expires_in\":15811200,\"scope\":\"\",\"token_type\":"
              "\"bearer\"}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    assert_string_equal(res.access_token.data, "ghu_abc");
    assert_string_equal(res.refresh_token.data, RT);
    assert_int_equal(res.expires_in_s, 28800);
    assert_string_equal(res.scope, "");
    assert_string_equal(res.token_type, "bearer");
    token_result_clear(&res);
}

static void test_expires_in_accepted_forms(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int64_t want;
    } cases[] = {
        {"3600", 3600},   {"1", 1},         {"31535999", 31535999}, {"\"3600\"", 3600},
        {"3600.0", 3600}, {"3599.9", 3599}, {"\"0003600\"", 3600},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"access_token\":\"a\",\"expires_in\":%s}", cases[i].json);
        struct token_result res;
        read_with(PROVIDER_GOOGLE, 200, body, &res);
        if (res.outcome != OUTCOME_SUCCESS || res.expires_in_s != cases[i].want ||
            res.expires_in_defaulted)
            fail_msg("expires_in %s: expected success with %lld, seen %s %lld (%s)", cases[i].json,
                     (long long)cases[i].want, refresh_outcome_name(res.outcome),
                     (long long)res.expires_in_s, res.detail);
        token_result_clear(&res);
    }
}

static void test_absurd_expires_in_with_rotation_uses_provider_default(void **state)
{
    (void)state;
    static const char *const bad[] = {"0",
                                      "-5",
                                      "31536000",
                                      "1e300",
                                      "true",
                                      "null",
                                      "\"\"",
                                      "\"1h\"",
                                      "\"-3\"",
                                      "[3600]",
                                      "{}",
                                      "0.5",
                                      "\"99999999999999\""};
    static const enum provider_id ids[] = {PROVIDER_GOOGLE, PROVIDER_GITHUB, PROVIDER_MICROSOFT};
    static const int64_t defaults[] = {3600, 28800, 3600};
    for (size_t d = 0; d < 3; d++) {
        assert_int_equal(provider_ops_get(ids[d])->default_lifetime_s, defaults[d]);
        for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
            char body[256];
            if (i == sizeof(bad) / sizeof(bad[0])) /* missing altogether */
                snprintf(body, sizeof(body),
                         "{\"access_token\":\"a\",\"refresh_token\":\"" RT "\"}");
            else
                snprintf(body, sizeof(body),
                         "{\"access_token\":\"a\",\"refresh_token\":\"" RT "\",\"expires_in\":%s}",
                         bad[i]);
            struct token_result res;
            read_with(ids[d], 200, body, &res);
            const char *what = i < sizeof(bad) / sizeof(bad[0]) ? bad[i] : "(missing)";
            if (res.outcome != OUTCOME_SUCCESS)
                fail_msg("%s expires_in %s with rotation: expected success, seen %s %s",
                         provider_ops_get(ids[d])->name, what, refresh_outcome_name(res.outcome),
                         res.error);
            if (res.expires_in_s != defaults[d] || !res.expires_in_defaulted)
                fail_msg("%s expires_in %s: expected default %lld flagged, seen %lld (%d)",
                         provider_ops_get(ids[d])->name, what, (long long)defaults[d],
                         (long long)res.expires_in_s, res.expires_in_defaulted);
            if (!res.refresh_token.data || strcmp(res.refresh_token.data, RT) != 0)
                fail_msg("%s expires_in %s: the rotated refresh token must be kept",
                         provider_ops_get(ids[d])->name, what);
            check_no_leak(what, &res);
            token_result_clear(&res);
        }
    }
}

static void test_missing_access_token_still_hands_back_rotated_refresh_token(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GITHUB, 200, "{\"refresh_token\":\"" RT "\",\"expires_in\":28800}", &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    assert_string_equal(res.error, "missing_access_token");
    if (!res.refresh_token.data || strcmp(res.refresh_token.data, RT) != 0)
        fail_msg("expected the rotated refresh token to be handed back for safekeeping");
    check_no_leak("missing access_token", &res);
    token_result_clear(&res);
}

static void test_microsoft_detail_lists_aadsts_codes(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_MICROSOFT, 400,
              "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS50173: The provided "
              "grant has expired due to it being revoked.\",\"error_codes\":[50173,70008,"
              "\"x\",-1]}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_REVOKED);
    if (!strstr(res.detail, "AADSTS50173,AADSTS70008"))
        fail_msg("expected detail to list AADSTS50173,AADSTS70008; seen \"%s\"", res.detail);
    if (strstr(res.detail, "AADSTS-1"))
        fail_msg("negative code must be skipped; seen \"%s\"", res.detail);
    token_result_clear(&res);
}

static void test_google_detail_notes_invalid_rapt(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GOOGLE, 400,
              "{\"error\":\"invalid_grant\",\"error_subtype\":\"invalid_rapt\"}", &res);
    assert_int_equal(res.outcome, OUTCOME_REVOKED);
    if (!strstr(res.detail, "invalid_rapt"))
        fail_msg("expected detail to mention invalid_rapt; seen \"%s\"", res.detail);
    token_result_clear(&res);
}

static void test_error_description_is_sanitised_and_truncated(void **state)
{
    (void)state;
    char body[4096];
    char desc[2000];
    memset(desc, 'x', sizeof(desc) - 1);
    desc[sizeof(desc) - 1] = '\0';
    for (size_t i = 0; i < sizeof(desc) - 1; i += 10)
        desc[i] = ' '; /* short words: nothing to redact */
    snprintf(body, sizeof(body),
             "{\"error\":\"invalid_request\",\"error_description\":\"caf\\u00e9\\n\\t%s\"}", desc);
    struct token_result res;
    read_with(PROVIDER_GITHUB, 400, body, &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    if (strlen(res.detail) != sizeof(res.detail) - 1)
        fail_msg("expected detail truncated to %zu chars, seen %zu", sizeof(res.detail) - 1,
                 strlen(res.detail));
    if (!strstr(res.detail, "caf??"))
        fail_msg("expected non-ASCII bytes replaced by '?'; seen \"%.60s\"", res.detail);
    check_no_leak("long description", &res);
    token_result_clear(&res);
}

static void test_redaction_names_the_replacement(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GOOGLE, 400,
              "{\"error\":\"invalid_grant\",\"error_description\":\"token " RT " is bad\"}", &res);
    if (!strstr(res.detail, "token [redacted] is bad"))
        fail_msg("expected \"token [redacted] is bad\" in detail; seen \"%s\"", res.detail);
    token_result_clear(&res);
}

static void test_transport_detail_never_echoes_curl_text_secrets(void **state)
{
    (void)state;
    struct http_answer a = {.transport_error = CURLE_PEER_FAILED_VERIFICATION,
                            .transport_detail = "SSL certificate problem: unable to get local "
                                                "issuer certificate",
                            .received_at = NOW_EPOCH};
    struct token_result res;
    memset(&res, 0, sizeof(res));
    provider_ops_get(PROVIDER_GOOGLE)->read_answer(&a, &res);
    assert_int_equal(res.outcome, OUTCOME_TRANSIENT);
    assert_string_equal(res.error, "tls");
    if (!strstr(res.detail, "TLS verification failed") || !strstr(res.detail, "local issuer"))
        fail_msg("expected a TLS verification detail with curl's reason; seen \"%s\"", res.detail);
    token_result_clear(&res);
}

static void test_standard_helpers_are_usable_alone(void **state)
{
    (void)state;
    struct http_answer a = {.status = 200,
                            .body = "{\"access_token\":\"x\",\"expires_in\":\"7\"}",
                            .received_at = NOW_EPOCH};
    a.body_len = strlen(a.body);
    struct token_result res;
    memset(&res, 0, sizeof(res));
    assert_false(provider_classify_transport(&a, &res));
    provider_read_standard_json(&a, 1234, &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    assert_int_equal(res.expires_in_s, 7);
    assert_int_equal(res.retry_after_ms, -1);
    token_result_clear(&res);

    a.status = 503;
    a.retry_after = "5";
    assert_true(provider_classify_transport(&a, &res));
    assert_int_equal(res.outcome, OUTCOME_TRANSIENT);
    assert_string_equal(res.error, "http_503");
    assert_int_equal(res.retry_after_ms, 5000);
    token_result_clear(&res);
}

/* ---- requests ---- */

static struct provider_config pc_of(enum provider_id id, const char *secret)
{
    struct provider_config pc = {
        .id = id,
        .client_id = (char *)"cid-123.apps.example",
        .client_secret = (char *)secret,
        .tenant = (char *)"common",
        .token_url = (char *)"https://token.example/oauth2/token",
        .max_in_flight = 128,
        .max_rate = 50,
    };
    return pc;
}

#define HOSTILE_RT         "1//0g&x=y+z %25 \n\r\"'<>;#?/\xc3\xa9~-._"
#define HOSTILE_RT_ENC     "1%2F%2F0g%26x%3Dy%2Bz%20%2525%20%0A%0D%22%27%3C%3E%3B%23%3F%2F%C3%A9~-._"
#define HOSTILE_SECRET     "s3cr&t=+ /"
#define HOSTILE_SECRET_ENC "s3cr%26t%3D%2B%20%2F"

static void check_headers(const struct provider_request *req)
{
    assert_non_null(req->headers[0]);
    assert_string_equal(req->headers[0], "Accept: application/json");
    assert_non_null(req->headers[1]);
    assert_string_equal(req->headers[1], "Content-Type: application/x-www-form-urlencoded");
    assert_null(req->headers[2]);
}

static void check_body(const char *who, const struct provider_request *req, const char *want)
{
    if (!req->body.data || strcmp(req->body.data, want) != 0)
        fail_msg("%s body:\n expected \"%s\"\n seen     \"%s\"", who, want,
                 req->body.data ? req->body.data : "(null)");
    if (req->body.len != strlen(want))
        fail_msg("%s body length: expected %zu, seen %zu", who, strlen(want), req->body.len);
}

static void test_google_request_is_percent_encoded_form(void **state)
{
    (void)state;
    struct provider_config pc = pc_of(PROVIDER_GOOGLE, HOSTILE_SECRET);
    struct provider_request req;
    char err[256] = "";
    assert_int_equal(provider_ops_get(PROVIDER_GOOGLE)
                         ->build_request(&pc, HOSTILE_RT, "email", &req, err, sizeof(err)),
                     0);
    assert_string_equal(req.url, "https://token.example/oauth2/token");
    check_headers(&req);
    check_body("google", &req,
               "grant_type=refresh_token&refresh_token=" HOSTILE_RT_ENC
               "&client_id=cid-123.apps.example&client_secret=" HOSTILE_SECRET_ENC);
    provider_request_clear(&req);
    assert_null(req.url);
    assert_null(req.body.data);
}

static void test_github_request_is_percent_encoded_form(void **state)
{
    (void)state;
    struct provider_config pc = pc_of(PROVIDER_GITHUB, "ghsecret");
    struct provider_request req;
    char err[256] = "";
    assert_int_equal(
        provider_ops_get(PROVIDER_GITHUB)->build_request(&pc, RT, NULL, &req, err, sizeof(err)), 0);
    check_headers(&req);
    check_body("github", &req,
               "grant_type=refresh_token&refresh_token=" RT
               "&client_id=cid-123.apps.example&client_secret=ghsecret");
    provider_request_clear(&req);
}

static void test_request_without_client_secret_omits_it(void **state)
{
    (void)state;
    struct provider_config pc = pc_of(PROVIDER_GOOGLE, NULL);
    struct provider_request req;
    char err[256] = "";
    assert_int_equal(
        provider_ops_get(PROVIDER_GOOGLE)->build_request(&pc, "r", NULL, &req, err, sizeof(err)),
        0);
    check_body("google without secret", &req,
               "grant_type=refresh_token&refresh_token=r&client_id=cid-123.apps.example");
    provider_request_clear(&req);
}

static void test_request_without_client_id_or_url_fails_cleanly(void **state)
{
    (void)state;
    for (int d = 0; d < PROVIDER_NAMED_COUNT; d++) {
        struct provider_config pc = pc_of((enum provider_id)d, "s");
        pc.client_id = NULL;
        struct provider_request req;
        char err[256] = "";
        assert_int_equal(provider_ops_get((enum provider_id)d)
                             ->build_request(&pc, "r", NULL, &req, err, sizeof(err)),
                         -1);
        if (!err[0])
            fail_msg("%s: expected a reason for the failure",
                     provider_ops_get((enum provider_id)d)->name);
        assert_null(req.url);
        assert_null(req.body.data);
        provider_request_clear(&req);

        pc = pc_of((enum provider_id)d, "s");
        pc.token_url = NULL;
        err[0] = '\0';
        assert_int_equal(provider_ops_get((enum provider_id)d)
                             ->build_request(&pc, "r", NULL, &req, err, sizeof(err)),
                         -1);
        assert_true(err[0] != '\0');
        assert_null(req.body.data);
        provider_request_clear(&req);
    }
}

static void check_ms_scope(const char *stored, const char *want_encoded)
{
    struct provider_config pc = pc_of(PROVIDER_MICROSOFT, "mssecret");
    struct provider_request req;
    char err[256] = "";
    assert_int_equal(provider_ops_get(PROVIDER_MICROSOFT)
                         ->build_request(&pc, "0.AAA-rt", stored, &req, err, sizeof(err)),
                     0);
    check_headers(&req);
    char want[512];
    snprintf(want, sizeof(want),
             "client_id=cid-123.apps.example&grant_type=refresh_token&refresh_token=0.AAA-rt"
             "&client_secret=mssecret&scope=%s",
             want_encoded);
    char who[128];
    snprintf(who, sizeof(who), "microsoft scope \"%s\"", stored ? stored : "(NULL)");
    check_body(who, &req, want);
    provider_request_clear(&req);
}

static void test_microsoft_scope_gets_offline_access(void **state)
{
    (void)state;
    check_ms_scope(NULL, "offline_access");
    check_ms_scope("", "offline_access");
    check_ms_scope("   \t ", "offline_access");
    check_ms_scope("openid profile", "openid%20profile%20offline_access");
    check_ms_scope("offline_access openid", "offline_access%20openid");
    check_ms_scope("openid  offline_access\tUser.Read", "openid%20offline_access%20User.Read");
    check_ms_scope("offline_accessX", "offline_accessX%20offline_access");
    check_ms_scope("https://graph.microsoft.com/Mail.Read",
                   "https%3A%2F%2Fgraph.microsoft.com%2FMail.Read%20offline_access");
}

static void test_table_of_functions(void **state)
{
    (void)state;
    static const char *const names[] = {"google", "github", "microsoft"};
    for (int d = 0; d < PROVIDER_NAMED_COUNT; d++) {
        const struct provider_ops *ops = provider_ops_get((enum provider_id)d);
        assert_non_null(ops);
        assert_int_equal(ops->id, d);
        assert_string_equal(ops->name, names[d]);
        assert_non_null(ops->build_request);
        assert_non_null(ops->read_answer);
    }
    assert_null(provider_ops_get(PROVIDER_MAX));
    assert_string_equal(refresh_outcome_name(OUTCOME_SUCCESS), "success");
    assert_string_equal(refresh_outcome_name(OUTCOME_REVOKED), "revoked");
    assert_string_equal(refresh_outcome_name(OUTCOME_TRANSIENT), "transient");
    assert_string_equal(refresh_outcome_name(OUTCOME_CONFIG), "config");
    assert_string_equal(refresh_outcome_name(OUTCOME_BAD_RESPONSE), "bad_response");
}

static void test_oversized_body_without_flag_is_refused(void **state)
{
    (void)state;
    size_t n = PROVIDER_MAX_RESPONSE_BYTES + 10;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, ' ', n);
    memcpy(big, "{\"access_token\":\"a\",\"expires_in\":5}", 35);
    big[n] = '\0';
    struct http_answer a = {.status = 200, .body = big, .body_len = n, .received_at = NOW_EPOCH};
    struct token_result res;
    memset(&res, 0, sizeof(res));
    provider_ops_get(PROVIDER_GITHUB)->read_answer(&a, &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    assert_string_equal(res.error, "oversized");
    token_result_clear(&res);
    free(big);
}

static void test_deeply_nested_json_is_rejected_without_crash(void **state)
{
    (void)state;
    size_t depth = 100000;
    char *s = malloc(depth * 2 + 1);
    assert_non_null(s);
    for (size_t i = 0; i < depth; i++) {
        s[i] = '[';
        s[depth * 2 - 1 - i] = ']';
    }
    s[depth * 2] = '\0';
    struct http_answer a = {
        .status = 200, .body = s, .body_len = depth * 2, .received_at = NOW_EPOCH};
    struct token_result res;
    memset(&res, 0, sizeof(res));
    provider_ops_get(PROVIDER_GOOGLE)->read_answer(&a, &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    token_result_clear(&res);
    free(s);
}

/* ---- issue 10: a rotated refresh token is kept whatever else is wrong ---- */

static const enum provider_id all_ids[] = {PROVIDER_GOOGLE, PROVIDER_GITHUB, PROVIDER_MICROSOFT};

static void expect_secret(const char *where, const struct secret *s, const char *want)
{
    if (!want) {
        if (s->data || s->len)
            fail_msg("%s: expected no value, seen %zu bytes", where, s->len);
        return;
    }
    if (!s->data || s->len != strlen(want) || memcmp(s->data, want, s->len) != 0)
        fail_msg("%s: expected \"%.16s...\" (%zu bytes), seen %s (%zu bytes)", where, want,
                 strlen(want), s->data ? "another value" : "none", s->len);
}

static void test_rotated_answer_without_usable_access_token_keeps_refresh_and_id_token(void **state)
{
    (void)state;
    static const char *const at_forms[] = {
        "",                                /* missing */
        "\"access_token\":null,",          /* null */
        "\"access_token\":5,",             /* not a string */
        "\"access_token\":\"\",",          /* empty */
        "\"access_token\":[\"x\"],",       /* array */
        "\"access_token\":\"a\\u0000b\",", /* NUL: jansson's lenient pass */
        "\"access_token\":\"a\\udc00\",",  /* lone surrogate: the scanner */
    };
    for (size_t d = 0; d < ARRAY_LEN(all_ids); d++) {
        for (size_t i = 0; i < ARRAY_LEN(at_forms); i++) {
            char body[512], where[96];
            snprintf(body, sizeof(body),
                     "{%s\"refresh_token\":\"" RT "\",\"id_token\":\"" IDT
                     "\",\"expires_in\":3600,\"token_type\":\"Bearer\"}",
                     at_forms[i]);
            snprintf(where, sizeof(where), "%s, access token form %zu",
                     provider_ops_get(all_ids[d])->name, i);
            struct token_result res;
            read_with(all_ids[d], 200, body, &res);
            if (res.outcome != OUTCOME_BAD_RESPONSE ||
                strcmp(res.error, "missing_access_token") != 0)
                fail_msg("%s: expected bad_response/missing_access_token, seen %s/%s (%s)", where,
                         refresh_outcome_name(res.outcome), res.error, res.detail);
            expect_secret(where, &res.refresh_token, RT);
            expect_secret(where, &res.id_token, IDT);
            expect_secret(where, &res.access_token, NULL);
            assert_non_null(strstr(res.detail, "it did carry a refresh_token"));
            check_no_leak(where, &res);
            token_result_clear(&res);
        }
    }
}

/* Bodies jansson's strict parse refuses as a whole; each rotates. */
struct broken_body {
    const char *name;
    const char *body;
    bool defaulted; /* expires_in is the broken value */
    const char *want_rt;
    bool strict_json; /* jansson's strict parse takes it (no "read leniently") */
};

#define OK_AT "\"access_token\":\"" AT "\""
#define OK_RT "\"refresh_token\":\"" RT "\""

static const struct broken_body broken_bodies[] = {
    {"expires_in 1e400", "{" OK_AT "," OK_RT ",\"expires_in\":1e400}", true, RT, false},
    {"expires_in -1e400", "{" OK_AT "," OK_RT ",\"expires_in\":-1e400}", true, RT, false},
    {"expires_in 2^63+1", "{" OK_AT "," OK_RT ",\"expires_in\":9223372036854775809}", true, RT,
     false},
    {"expires_in 2^64", "{" OK_AT "," OK_RT ",\"expires_in\":18446744073709551616}", true, RT,
     false},
    {"integer beyond 2^63 elsewhere",
     "{" OK_AT ",\"refresh_token_expires_in\":99999999999999999999," OK_RT ",\"expires_in\":28800}",
     false, RT, false},
    {"1e400 nested elsewhere", "{\"x\":{\"y\":[1e400]}," OK_AT "," OK_RT ",\"expires_in\":3600}",
     false, RT, false},
    {"duplicate keys", "{" OK_AT ",\"scope\":\"a\",\"scope\":\"b\"," OK_RT ",\"expires_in\":3600}",
     false, RT, false},
    {"duplicate refresh_token: the last wins",
     "{\"refresh_token\":\"decoy\"," OK_AT "," OK_RT ",\"expires_in\":3600}", false, RT, false},
    {"bad escape elsewhere", "{" OK_AT ",\"note\":\"\\udc00\"," OK_RT ",\"expires_in\":3600}",
     false, RT, false},
    {"bad escape elsewhere, 1e400 too",
     "{" OK_AT ",\"note\":\"\\udc00\"," OK_RT ",\"expires_in\":1e400}", true, RT, false},
    {"invalid escape letter elsewhere",
     "{" OK_AT ",\"note\":\"\\q\"," OK_RT ",\"expires_in\":3600}", false, RT, false},
    {"NUL escape elsewhere", "{" OK_AT ",\"note\":\"a\\u0000\"," OK_RT ",\"expires_in\":3600}",
     false, RT, false},
    {"raw control byte elsewhere", "{" OK_AT ",\"note\":\"a\x01\"," OK_RT ",\"expires_in\":3600}",
     false, RT, false},
    {"invalid UTF-8 elsewhere", "{" OK_AT ",\"note\":\"\xff\xfe\"," OK_RT ",\"expires_in\":3600}",
     false, RT, false},
    {"expires_in string garbage", "{" OK_AT "," OK_RT ",\"expires_in\":\"abc\"}", true, RT, true},
    {"escaped member names",
     "{\"access\\u005ftoken\":\"" AT "\",\"refresh\\u005Ftoken\":\"" RT
     "\",\"n\":1e999,\"expires_in\":3600}",
     false, RT, false},
    {"trailing junk after the object", "{" OK_AT "," OK_RT ",\"expires_in\":3600} junk", false, RT,
     false},
};

static void test_strictly_refused_bodies_still_yield_the_rotated_token(void **state)
{
    (void)state;
    static const int64_t defaults[] = {3600, 28800, 3600};
    for (size_t d = 0; d < ARRAY_LEN(all_ids); d++) {
        for (size_t i = 0; i < ARRAY_LEN(broken_bodies); i++) {
            const struct broken_body *b = &broken_bodies[i];
            char where[128];
            snprintf(where, sizeof(where), "%s [%s]", b->name, provider_ops_get(all_ids[d])->name);
            struct token_result res;
            read_with(all_ids[d], 200, b->body, &res);
            if (res.outcome != OUTCOME_SUCCESS)
                fail_msg("%s: expected success, seen %s/%s (%s)", where,
                         refresh_outcome_name(res.outcome), res.error, res.detail);
            expect_secret(where, &res.access_token, AT);
            expect_secret(where, &res.refresh_token, b->want_rt);
            if (b->defaulted != res.expires_in_defaulted)
                fail_msg("%s: expires_in_defaulted %d, expected %d", where,
                         res.expires_in_defaulted, b->defaulted);
            int64_t want_exp = b->defaulted ? defaults[d] : 0;
            if (b->defaulted && res.expires_in_s != want_exp)
                fail_msg("%s: expected the default %lld, seen %lld", where, (long long)want_exp,
                         (long long)res.expires_in_s);
            if (!b->defaulted && (res.expires_in_s < 3600 || res.expires_in_s > 28800))
                fail_msg("%s: expected the given expires_in, seen %lld", where,
                         (long long)res.expires_in_s);
            if (!b->strict_json && !strstr(res.detail, "read leniently"))
                fail_msg("%s: the detail should say the answer was read leniently: \"%s\"", where,
                         res.detail);
            check_no_leak(where, &res);
            token_result_clear(&res);
        }
    }
}

static void test_duplicate_members_the_last_one_wins(void **state)
{
    (void)state;
    struct token_result res;
    /* jansson's lenient pass */
    read_with(PROVIDER_MICROSOFT, 200,
              "{\"access_token\":\"old\",\"refresh_token\":\"first\",\"access_token\":\"" AT
              "\",\"refresh_token\":\"" RT "\",\"expires_in\":60,\"expires_in\":4000}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    expect_secret("jansson lenient", &res.access_token, AT);
    expect_secret("jansson lenient", &res.refresh_token, RT);
    assert_int_equal(res.expires_in_s, 4000);
    token_result_clear(&res);
    /* the scanner (1e400 makes jansson give up) */
    read_with(PROVIDER_MICROSOFT, 200,
              "{\"access_token\":\"old\",\"refresh_token\":\"first\",\"x\":1e400,"
              "\"access_token\":\"" AT "\",\"refresh_token\":\"" RT
              "\",\"expires_in\":60,\"expires_in\":4000}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    expect_secret("scanner", &res.access_token, AT);
    expect_secret("scanner", &res.refresh_token, RT);
    assert_int_equal(res.expires_in_s, 4000);
    token_result_clear(&res);
}

static void test_absurd_expires_in_without_rotation_uses_provider_default(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "1e400",  "-1",   "0",    "\"abc\"", "9223372036854775809", "31536000", "63072000", "-0",
        "1e-400", "\"\"", "null", "false",   "{\"s\":3600}"};
    static const int64_t defaults[] = {3600, 28800, 3600};
    for (size_t d = 0; d < ARRAY_LEN(all_ids); d++) {
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            char body[256], where[96];
            snprintf(body, sizeof(body), "{\"access_token\":\"" AT "\",\"expires_in\":%s}", bad[i]);
            snprintf(where, sizeof(where), "%s expires_in %s", provider_ops_get(all_ids[d])->name,
                     bad[i]);
            struct token_result res;
            read_with(all_ids[d], 200, body, &res);
            if (res.outcome != OUTCOME_SUCCESS || !res.expires_in_defaulted ||
                res.expires_in_s != defaults[d])
                fail_msg("%s: expected success with the default %lld flagged, seen %s %lld %d (%s)",
                         where, (long long)defaults[d], refresh_outcome_name(res.outcome),
                         (long long)res.expires_in_s, res.expires_in_defaulted, res.detail);
            expect_secret(where, &res.refresh_token, NULL);
            assert_non_null(strstr(res.detail, "default lifetime"));
            token_result_clear(&res);
        }
    }
}

static void test_error_answer_never_carries_a_token(void **state)
{
    (void)state;
    static const struct {
        enum provider_id id;
        long status;
        const char *body;
    } cases[] = {
        {PROVIDER_GOOGLE, 400,
         "{\"error\":\"invalid_grant\"," OK_AT "," OK_RT ",\"id_token\":\"" IDT "\"}"},
        {PROVIDER_MICROSOFT, 400,
         "{\"error\":\"invalid_grant\"," OK_RT ",\"error_codes\":[70008]}"},
        {PROVIDER_GITHUB, 200, "{\"error\":\"bad_refresh_token\"," OK_AT "," OK_RT "}"},
        {PROVIDER_GITHUB, 200, "error=bad_refresh_token&refresh_token=" RT},
        /* strictly refused: the scanner reads the error */
        {PROVIDER_GITHUB, 200, "{\"error\":\"bad_refresh_token\",\"n\":1e400," OK_RT "}"},
        {PROVIDER_GOOGLE, 400, "{\"error\":\"invalid_grant\",\"x\":\"\\udc00\"," OK_RT "}"},
        /* a 4xx whose error field is unusable: no token either */
        {PROVIDER_GOOGLE, 400, "{\"error\":42," OK_AT "," OK_RT "}"},
        {PROVIDER_MICROSOFT, 401, "{" OK_AT "," OK_RT ",\"expires_in\":3600}"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char where[64];
        snprintf(where, sizeof(where), "error answer %zu", i);
        struct token_result res;
        read_with(cases[i].id, cases[i].status, cases[i].body, &res);
        if (res.outcome == OUTCOME_SUCCESS)
            fail_msg("%s: an error answer was taken for success", where);
        expect_secret(where, &res.access_token, NULL);
        expect_secret(where, &res.refresh_token, NULL);
        expect_secret(where, &res.id_token, NULL);
        check_no_leak(where, &res);
        token_result_clear(&res);
    }
}

static void test_2xx_with_unusable_error_member_keeps_rotated_token(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GITHUB, 200,
              "{\"error\":\"\"," OK_AT "," OK_RT ",\"id_token\":\"" IDT "\",\"expires_in\":1}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    assert_string_equal(res.error, "bad_error_field");
    expect_secret("error \"\"", &res.refresh_token, RT);
    expect_secret("error \"\"", &res.id_token, IDT);
    expect_secret("error \"\"", &res.access_token, NULL);
    token_result_clear(&res);
}

static void test_scanner_decodes_escapes_and_refuses_lone_surrogates(void **state)
{
    (void)state;
    struct token_result res;
    /* \u00e9, a surrogate pair (U+1F600), \/ and \" in the refresh token; 1e400 forces the scanner
     */
    read_with(PROVIDER_MICROSOFT, 200,
              "{" OK_AT ",\"refresh_token\":\"r\\u00e9\\ud83d\\ude00\\/\\\"\\\\x\",\"n\":1e400,"
              "\"expires_in\":3600}",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    expect_secret("escapes", &res.refresh_token, "r\xc3\xa9\xf0\x9f\x98\x80/\"\\x");
    token_result_clear(&res);

    static const char *const unusable[] = {"r\\udc00", "r\\ud83d", "r\\ud83dx", "r\\ud83d\\u0041",
                                           "r\\u0000", "r\\u12",   "r\\x",      "r\xc0\xaf"};
    for (size_t i = 0; i < ARRAY_LEN(unusable); i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{" OK_AT ",\"refresh_token\":\"%s\",\"n\":1e400,\"expires_in\":3600}",
                 unusable[i]);
        read_with(PROVIDER_MICROSOFT, 200, body, &res);
        if (res.outcome == OUTCOME_SUCCESS || res.refresh_token.data)
            fail_msg("refresh token \"%s\": an unusable member must not be used (seen %s)",
                     unusable[i], refresh_outcome_name(res.outcome));
        assert_string_equal(res.error, "bad_shape");
        token_result_clear(&res);
    }
}

static void test_github_form_encoded_rotation_is_read(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GITHUB, 200,
              "access_token=ghu_abc%2Bdef&expires_in=28800&refresh_token=" RT
              "&refresh_token_expires_in=15811200&scope=&token_type=bearer",
              &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    expect_secret("form", &res.access_token, "ghu_abc+def");
    expect_secret("form", &res.refresh_token, RT);
    assert_int_equal(res.expires_in_s, 28800);
    assert_false(res.expires_in_defaulted);
    assert_string_equal(res.token_type, "bearer");
    assert_string_equal(res.scope, "");
    token_result_clear(&res);
    /* no access token: the refresh token is still handed back */
    read_with(PROVIDER_GITHUB, 200, "refresh_token=" RT "&expires_in=28800", &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    assert_string_equal(res.error, "missing_access_token");
    expect_secret("form without access token", &res.refresh_token, RT);
    token_result_clear(&res);
    /* not a form at all */
    read_with(PROVIDER_GITHUB, 200, "refresh_token " RT, &res);
    assert_string_equal(res.error, "bad_json");
    expect_secret("not a form", &res.refresh_token, NULL);
    token_result_clear(&res);
    /* the other dialects never read forms */
    read_with(PROVIDER_GOOGLE, 200, "access_token=" AT "&refresh_token=" RT, &res);
    assert_string_equal(res.error, "bad_json");
    expect_secret("google form", &res.refresh_token, NULL);
    token_result_clear(&res);
}

static void test_hostile_bodies_are_read_within_bounds(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{",
        "{\"",
        "{\"refresh_token\"",
        "{\"refresh_token\":",
        "{\"refresh_token\":\"" RT,
        "{\"refresh_token\":\"" RT "\\",
        "{\"refresh_token\":\"" RT "\"",
        "{\"n\":1e400,\"refresh_token\":\"" RT "\"",
        "{\"n\":1e400,\"refresh_token\":\"" RT "\" x",
        "{\"n\":1e400,\"x\":[[[[[{\"refresh_token\":\"" RT "\"}",
        "{\"n\":1e400,\"x\":tru",
        "{\"n\":1e400,\"x\":-",
        "{\"n\":1e400,\"x\":1.",
        "{\"n\":1e400,\"x\":1e",
        "{\"n\":1e400,,}",
        "  \r\n\t",
        "\"{\"",
        "{\"n\":1e400,\"x\":\"\\u",
        "{\"n\":1e400,\"x\":\"\\ud800\\u",
    };
    for (size_t i = 0; i < ARRAY_LEN(bodies); i++) {
        /* an exact-size heap copy, so ASan sees any read past the end */
        size_t n = strlen(bodies[i]);
        char *b = malloc(n ? n : 1);
        assert_non_null(b);
        memcpy(b, bodies[i], n);
        struct http_answer a = {.status = 200, .body = b, .body_len = n, .received_at = NOW_EPOCH};
        for (size_t d = 0; d < ARRAY_LEN(all_ids); d++) {
            struct token_result res;
            memset(&res, 0, sizeof(res));
            provider_ops_get(all_ids[d])->read_answer(&a, &res);
            if (res.outcome == OUTCOME_SUCCESS)
                fail_msg("hostile body %zu: success without an access token", i);
            /* A refresh token cut short or nested never counts; a whole one at the top level does.
             */
            if (res.refresh_token.data && strcmp(res.refresh_token.data, RT) != 0)
                fail_msg("hostile body %zu: a cut refresh token was kept", i);
            if (res.refresh_token.data && (i < 6 || i == 9))
                fail_msg("hostile body %zu: a refresh token without its delimiter was kept", i);
            check_no_leak("hostile", &res);
            token_result_clear(&res);
        }
        free(b);
    }
}

static void test_cut_body_hands_back_a_whole_rotated_token_but_is_no_success(void **state)
{
    (void)state;
    struct token_result res;
    read_with(PROVIDER_GITHUB, 200,
              "{\"n\":1e400,\"access_token\":\"" AT "\",\"refresh_token\":\"" RT
              "\",\"id_token\":\"" IDT "\",\"expires_in\":28",
              &res);
    assert_int_equal(res.outcome, OUTCOME_BAD_RESPONSE);
    assert_string_equal(res.error, "bad_json");
    expect_secret("cut body", &res.refresh_token, RT);
    expect_secret("cut body", &res.id_token, IDT);
    expect_secret("cut body", &res.access_token, NULL);
    check_no_leak("cut body", &res);
    token_result_clear(&res);
}

static void test_long_number_literal_and_deep_nesting_in_scanner(void **state)
{
    (void)state;
    size_t depth = 100000;
    size_t cap = depth * 2 + 256;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t o = (size_t)snprintf(s, cap, "{\"n\":1e400,\"deep\":");
    for (size_t i = 0; i < depth; i++)
        s[o++] = '[';
    for (size_t i = 0; i < depth; i++)
        s[o++] = ']';
    o += (size_t)snprintf(s + o, cap - o, ",\"access_token\":\"a\",\"refresh_token\":\"r\"}");
    struct http_answer a = {.status = 200, .body = s, .body_len = o, .received_at = NOW_EPOCH};
    struct token_result res;
    memset(&res, 0, sizeof(res));
    provider_ops_get(PROVIDER_GITHUB)->read_answer(&a, &res);
    /* over the 64 KiB cap: refused, never parsed */
    assert_string_equal(res.error, "oversized");
    token_result_clear(&res);

    depth = 20000; /* under the cap */
    o = (size_t)snprintf(s, cap, "{\"n\":1e400,\"deep\":");
    for (size_t i = 0; i < depth; i++)
        s[o++] = '[';
    for (size_t i = 0; i < depth; i++)
        s[o++] = ']';
    o += (size_t)snprintf(s + o, cap - o,
                          ",\"expires_in\":1%0300d,\"access_token\":\"a\",\"refresh_token\":\"r\"}",
                          0);
    a.body_len = o;
    provider_ops_get(PROVIDER_GITHUB)->read_answer(&a, &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    assert_true(res.expires_in_defaulted);
    expect_secret("deep", &res.refresh_token, "r");
    token_result_clear(&res);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_table_covers_every_row_for_every_dialect),
        cmocka_unit_test(test_success_fields_are_copied),
        cmocka_unit_test(test_google_answer_without_refresh_token_keeps_nothing_to_rotate),
        cmocka_unit_test(test_github_rotation_answer),
        cmocka_unit_test(test_expires_in_accepted_forms),
        cmocka_unit_test(test_absurd_expires_in_with_rotation_uses_provider_default),
        cmocka_unit_test(test_missing_access_token_still_hands_back_rotated_refresh_token),
        cmocka_unit_test(test_microsoft_detail_lists_aadsts_codes),
        cmocka_unit_test(test_google_detail_notes_invalid_rapt),
        cmocka_unit_test(test_error_description_is_sanitised_and_truncated),
        cmocka_unit_test(test_redaction_names_the_replacement),
        cmocka_unit_test(test_transport_detail_never_echoes_curl_text_secrets),
        cmocka_unit_test(test_standard_helpers_are_usable_alone),
        cmocka_unit_test(test_google_request_is_percent_encoded_form),
        cmocka_unit_test(test_github_request_is_percent_encoded_form),
        cmocka_unit_test(test_request_without_client_secret_omits_it),
        cmocka_unit_test(test_request_without_client_id_or_url_fails_cleanly),
        cmocka_unit_test(test_microsoft_scope_gets_offline_access),
        cmocka_unit_test(test_table_of_functions),
        cmocka_unit_test(test_oversized_body_without_flag_is_refused),
        cmocka_unit_test(test_deeply_nested_json_is_rejected_without_crash),
        cmocka_unit_test(
            test_rotated_answer_without_usable_access_token_keeps_refresh_and_id_token),
        cmocka_unit_test(test_strictly_refused_bodies_still_yield_the_rotated_token),
        cmocka_unit_test(test_duplicate_members_the_last_one_wins),
        cmocka_unit_test(test_absurd_expires_in_without_rotation_uses_provider_default),
        cmocka_unit_test(test_error_answer_never_carries_a_token),
        cmocka_unit_test(test_2xx_with_unusable_error_member_keeps_rotated_token),
        cmocka_unit_test(test_scanner_decodes_escapes_and_refuses_lone_surrogates),
        cmocka_unit_test(test_github_form_encoded_rotation_is_read),
        cmocka_unit_test(test_hostile_bodies_are_read_within_bounds),
        cmocka_unit_test(test_cut_body_hands_back_a_whole_rotated_token_but_is_no_success),
        cmocka_unit_test(test_long_number_literal_and_deep_nesting_in_scanner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
