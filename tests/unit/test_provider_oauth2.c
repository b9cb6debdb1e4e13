/*
 * test_provider_oauth2.c — the generic RFC 6749 dialect (dialect = oauth2):
 * its refresh request byte for byte with both client authentication methods
 * (RFC 6749 §2.3.1: the client id and secret are form-urlencoded before they
 * are joined and base64-encoded for HTTP Basic), the stored scope only when
 * send_scope says so, and its answers classified by the table's RFC 6749 rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "provider.h"

#define RT     "rt-1//x&y=z"
#define RT_ENC "rt-1%2F%2Fx%26y%3Dz"

static const struct provider_ops *ops(void)
{
    const struct provider_ops *o = provider_ops_get(PROVIDER_NAMED_COUNT);
    assert_non_null(o);
    return o;
}

static struct provider_config generic(enum client_auth auth, bool send_scope, const char *id,
                                      const char *secret)
{
    struct provider_config pc = {
        .id = PROVIDER_NAMED_COUNT,
        .client_id = (char *)id,
        .client_secret = (char *)secret,
        .token_url = (char *)"https://id.example/realms/main/protocol/openid-connect/token",
        .generic = true,
        .client_auth = auth,
        .send_scope = send_scope,
        .max_in_flight = 128,
        .max_rate = 50,
    };
    return pc;
}

static void build(const struct provider_config *pc, const char *scope, struct provider_request *req)
{
    char err[256] = "";
    if (ops()->build_request(pc, RT, scope, req, err, sizeof(err)) != 0)
        fail_msg("build_request failed: %s", err);
}

static void check(const struct provider_request *req, const char *body, const char *auth)
{
    assert_string_equal(req->url, "https://id.example/realms/main/protocol/openid-connect/token");
    assert_string_equal(req->headers[0], "Accept: application/json");
    assert_string_equal(req->headers[1], "Content-Type: application/x-www-form-urlencoded");
    if (auth) {
        assert_non_null(req->headers[2]);
        assert_string_equal(req->headers[2], auth);
    } else {
        assert_null(req->headers[2]);
    }
    assert_null(req->headers[3]);
    if (!req->body.data || strcmp(req->body.data, body) != 0)
        fail_msg("body:\n expected \"%s\"\n seen     \"%s\"", body,
                 req->body.data ? req->body.data : "(null)");
    assert_int_equal(req->body.len, strlen(body));
}

static void basic_puts_the_client_in_the_authorization_header(void **state)
{
    (void)state;
    struct provider_config pc = generic(CLIENT_AUTH_BASIC, false, "kc-client", "secret");
    struct provider_request req;
    build(&pc, "openid email", &req);
    /* base64("kc-client:secret") */
    check(&req, "grant_type=refresh_token&refresh_token=" RT_ENC,
          "Authorization: Basic a2MtY2xpZW50OnNlY3JldA==");
    provider_request_clear(&req);
    assert_null(req.auth_header.data);
    assert_null(req.body.data);
}

static void basic_form_urlencodes_id_and_secret_before_base64(void **state)
{
    (void)state;
    /* RFC 6749 §2.3.1: a ':' in the id must not end it, nor '%' or '+' change it. */
    struct provider_config pc =
        generic(CLIENT_AUTH_BASIC, false, "cid:1 \xc3\xa9+&", "s3cr&t=+ /:%");
    struct provider_request req;
    build(&pc, NULL, &req);
    /* base64("cid%3A1%20%C3%A9%2B%26:s3cr%26t%3D%2B%20%2F%3A%25") */
    check(&req, "grant_type=refresh_token&refresh_token=" RT_ENC,
          "Authorization: Basic "
          "Y2lkJTNBMSUyMCVDMyVBOSUyQiUyNjpzM2NyJTI2dCUzRCUyQiUyMCUyRiUzQSUyNQ==");
    provider_request_clear(&req);
}

static void post_puts_the_client_in_the_body(void **state)
{
    (void)state;
    struct provider_config pc =
        generic(CLIENT_AUTH_POST, false, "cid:1 \xc3\xa9+&", "s3cr&t=+ /:%");
    struct provider_request req;
    build(&pc, "openid", &req);
    check(&req,
          "grant_type=refresh_token&refresh_token=" RT_ENC
          "&client_id=cid%3A1%20%C3%A9%2B%26&client_secret=s3cr%26t%3D%2B%20%2F%3A%25",
          NULL);
    assert_null(req.auth_header.data);
    provider_request_clear(&req);
}

static void scope_is_sent_only_when_asked_and_stored(void **state)
{
    (void)state;
    struct provider_config pc = generic(CLIENT_AUTH_POST, true, "c", "s");
    struct provider_request req;
    build(&pc, "openid offline_access api:read", &req);
    check(&req,
          "grant_type=refresh_token&refresh_token=" RT_ENC
          "&scope=openid%20offline_access%20api%3Aread&client_id=c&client_secret=s",
          NULL);
    provider_request_clear(&req);
    build(&pc, NULL, &req);
    check(&req, "grant_type=refresh_token&refresh_token=" RT_ENC "&client_id=c&client_secret=s",
          NULL);
    provider_request_clear(&req);
    build(&pc, "", &req);
    check(&req, "grant_type=refresh_token&refresh_token=" RT_ENC "&client_id=c&client_secret=s",
          NULL);
    provider_request_clear(&req);
    pc.send_scope = false;
    build(&pc, "openid", &req);
    check(&req, "grant_type=refresh_token&refresh_token=" RT_ENC "&client_id=c&client_secret=s",
          NULL);
    provider_request_clear(&req);
}

static void without_a_token_url_nothing_is_built(void **state)
{
    (void)state;
    /* An issuer's provider before discovery: no token URL yet. */
    struct provider_config pc = generic(CLIENT_AUTH_BASIC, false, "c", "s");
    pc.token_url = NULL;
    struct provider_request req;
    char err[256] = "";
    assert_int_equal(ops()->build_request(&pc, RT, NULL, &req, err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
    assert_null(req.body.data);
    assert_null(req.auth_header.data);
    provider_request_clear(&req);
}

static void read(long status, const char *body, struct token_result *res)
{
    struct http_answer a = {.status = status, .body = body, .body_len = strlen(body)};
    memset(res, 0, sizeof(*res));
    ops()->read_answer(&a, res);
}

static void answers_are_classified_by_the_rfc_rows(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *body;
        enum refresh_outcome outcome;
        enum answer_scope scope;
        enum answer_retry retry;
        const char *error;
    } cases[] = {
        {400, "{\"error\":\"invalid_grant\",\"error_description\":\"Token is not active\"}",
         OUTCOME_REVOKED, SCOPE_ACCOUNT, RETRY_RECONNECT, "invalid_grant"},
        {401, "{\"error\":\"invalid_client\"}", OUTCOME_CONFIG, SCOPE_PROVIDER, RETRY_PROBE,
         "invalid_client"},
        {400, "{\"error\":\"unauthorized_client\"}", OUTCOME_CONFIG, SCOPE_PROVIDER, RETRY_PROBE,
         "unauthorized_client"},
        {400, "{\"error\":\"unsupported_grant_type\"}", OUTCOME_CONFIG, SCOPE_PROVIDER, RETRY_PROBE,
         "unsupported_grant_type"},
        {400, "{\"error\":\"invalid_scope\"}", OUTCOME_BAD_RESPONSE, SCOPE_ACCOUNT, RETRY_BACKOFF,
         "invalid_scope"},
        {503, "{\"error\":\"temporarily_unavailable\"}", OUTCOME_TRANSIENT, SCOPE_ACCOUNT,
         RETRY_BACKOFF, "http_503"},
        {429, "slow down", OUTCOME_TRANSIENT, SCOPE_PROVIDER, RETRY_PAUSE, "http_429"},
        /* Google's and Microsoft's own rows are not the generic dialect's. */
        {403, "<html>We're sorry</html>", OUTCOME_BAD_RESPONSE, SCOPE_ACCOUNT, RETRY_BACKOFF,
         "http_403"},
        {400, "{\"error\":\"deleted_client\"}", OUTCOME_BAD_RESPONSE, SCOPE_ACCOUNT, RETRY_BACKOFF,
         "deleted_client"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct token_result res;
        read(cases[i].status, cases[i].body, &res);
        if (res.outcome != cases[i].outcome || res.failure_scope != cases[i].scope ||
            res.retry_rule != cases[i].retry || strcmp(res.error, cases[i].error) != 0)
            fail_msg("case %zu (%ld %s): got %s/%s/%s \"%s\"", i, cases[i].status, cases[i].body,
                     refresh_outcome_name(res.outcome), answer_scope_name(res.failure_scope),
                     answer_retry_name(res.retry_rule), res.error);
        token_result_clear(&res);
    }
}

static void a_rotating_answer_is_read(void **state)
{
    (void)state;
    struct token_result res;
    read(200,
         "{\"access_token\":\"at-1\",\"token_type\":\"Bearer\",\"expires_in\":300,"
         "\"refresh_token\":\"rt-2\",\"scope\":\"openid offline_access\",\"id_token\":\"idt\"}",
         &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    assert_string_equal(res.access_token.data, "at-1");
    assert_string_equal(res.refresh_token.data, "rt-2");
    assert_string_equal(res.id_token.data, "idt");
    assert_int_equal(res.expires_in_s, 300);
    assert_string_equal(res.scope, "openid offline_access");
    token_result_clear(&res);
    read(200, "{\"access_token\":\"at-1\",\"token_type\":\"Bearer\"}", &res);
    assert_int_equal(res.outcome, OUTCOME_SUCCESS);
    assert_true(res.expires_in_defaulted);
    assert_int_equal(res.expires_in_s, ops()->default_lifetime_s);
    token_result_clear(&res);
}

static void every_generic_id_speaks_the_dialect(void **state)
{
    (void)state;
    for (int id = PROVIDER_NAMED_COUNT; id < PROVIDER_MAX; id++)
        assert_ptr_equal(provider_ops_get((enum provider_id)id), ops());
    assert_string_equal(ops()->name, "oauth2");
    assert_null(provider_ops_get(PROVIDER_MAX));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(basic_puts_the_client_in_the_authorization_header),
        cmocka_unit_test(basic_form_urlencodes_id_and_secret_before_base64),
        cmocka_unit_test(post_puts_the_client_in_the_body),
        cmocka_unit_test(scope_is_sent_only_when_asked_and_stored),
        cmocka_unit_test(without_a_token_url_nothing_is_built),
        cmocka_unit_test(answers_are_classified_by_the_rfc_rows),
        cmocka_unit_test(a_rotating_answer_is_read),
        cmocka_unit_test(every_generic_id_speaks_the_dialect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
