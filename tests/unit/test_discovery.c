/*
 * test_discovery.c — reading an OpenID Connect discovery document
 * (discovery_read_document): the issuer must be the configured one (OIDC
 * Discovery §4.3), the token endpoint must be usable under the HTTPS rules,
 * and the client authentication is picked (basic if listed, else post; an
 * absent list means client_secret_basic) or, when configured, checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "discovery.h"

#define ISSUER "https://id.example/realms/main"
#define TOKEN  "https://id.example/realms/main/protocol/openid-connect/token"

static struct provider_config pc_with(enum client_auth configured)
{
    struct provider_config pc = {
        .id = PROVIDER_NAMED_COUNT,
        .client_id = (char *)"c",
        .generic = true,
        .issuer = (char *)ISSUER,
        .client_auth_configured = configured,
        .client_auth = configured,
    };
    return pc;
}

/* Reads doc; returns the error text ("" on success) and the picked method. */
static int read_doc(enum client_auth configured, bool insecure, const char *doc,
                    enum client_auth *auth, char *err, size_t errlen)
{
    struct provider_config pc = pc_with(configured);
    char *url = NULL;
    err[0] = '\0';
    *auth = CLIENT_AUTH_DEFAULT;
    int rc = discovery_read_document(&pc, insecure, doc, strlen(doc), &url, auth, err, errlen);
    if (rc == 0) {
        assert_non_null(url);
        assert_non_null(strstr(doc, url)); /* the document's own token_endpoint */
    } else {
        assert_null(url);
        assert_true(err[0] != '\0');
    }
    free(url);
    return rc;
}

#define DOC(methods) "{\"issuer\":\"" ISSUER "\",\"token_endpoint\":\"" TOKEN "\"" methods "}"

static void the_method_is_picked_from_the_list(void **state)
{
    (void)state;
    enum client_auth auth;
    char err[256];
    assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, false,
                              DOC(",\"token_endpoint_auth_methods_supported\":"
                                  "[\"client_secret_post\",\"client_secret_basic\"]"),
                              &auth, err, sizeof err),
                     0);
    assert_int_equal(auth, CLIENT_AUTH_BASIC);
    assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, false,
                              DOC(",\"token_endpoint_auth_methods_supported\":"
                                  "[\"private_key_jwt\",\"client_secret_post\"]"),
                              &auth, err, sizeof err),
                     0);
    assert_int_equal(auth, CLIENT_AUTH_POST);
    /* OIDC Discovery §3: without the list, client_secret_basic. */
    assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, false, DOC(""), &auth, err, sizeof err), 0);
    assert_int_equal(auth, CLIENT_AUTH_BASIC);
    assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, false,
                              DOC(",\"token_endpoint_auth_methods_supported\":"
                                  "[\"private_key_jwt\",\"tls_client_auth\"]"),
                              &auth, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "supports neither client_secret_basic nor client_secret_post"));
}

static void a_configured_method_the_provider_does_not_list_is_refused(void **state)
{
    (void)state;
    enum client_auth auth;
    char err[256];
    const char *only_post =
        DOC(",\"token_endpoint_auth_methods_supported\":[\"client_secret_post\"]");
    assert_int_equal(read_doc(CLIENT_AUTH_BASIC, false, only_post, &auth, err, sizeof err), -1);
    assert_string_equal(err, "client_auth = client_secret_basic is not among the provider's "
                             "token_endpoint_auth_methods_supported");
    assert_int_equal(read_doc(CLIENT_AUTH_POST, false, only_post, &auth, err, sizeof err), 0);
    assert_int_equal(auth, CLIENT_AUTH_POST);
    assert_int_equal(read_doc(CLIENT_AUTH_POST, false, DOC(""), &auth, err, sizeof err), -1);
}

static void the_document_must_name_the_configured_issuer(void **state)
{
    (void)state;
    enum client_auth auth;
    char err[256];
    static const char *const bad[] = {
        "{\"issuer\":\"" ISSUER "/\",\"token_endpoint\":\"" TOKEN "\"}",
        "{\"issuer\":\"https://evil.example/realms/main\",\"token_endpoint\":\"" TOKEN "\"}",
        "{\"token_endpoint\":\"" TOKEN "\"}",
        "{\"issuer\":7,\"token_endpoint\":\"" TOKEN "\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, false, bad[i], &auth, err, sizeof err), -1);
        assert_non_null(strstr(err, "names another issuer than " ISSUER));
    }
}

static void the_token_endpoint_must_be_usable(void **state)
{
    (void)state;
    enum client_auth auth;
    char err[256];
    const char *http_doc = "{\"issuer\":\"" ISSUER "\",\"token_endpoint\":\"http://id.example/t\"}";
    assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, false, http_doc, &auth, err, sizeof err), -1);
    assert_non_null(strstr(err, "is not https://"));
    assert_int_equal(read_doc(CLIENT_AUTH_DEFAULT, true, http_doc, &auth, err, sizeof err), 0);
    static const char *const bad[] = {
        "{\"issuer\":\"" ISSUER "\"}",
        "{\"issuer\":\"" ISSUER "\",\"token_endpoint\":\"\"}",
        "{\"issuer\":\"" ISSUER "\",\"token_endpoint\":[\"" TOKEN "\"]}",
        "{\"issuer\":\"" ISSUER "\",\"token_endpoint\":\"https://a/\\nb\"}",
        "{\"issuer\":\"" ISSUER "\",\"token_endpoint\":\"ftp://id.example/t\"}",
        "[]",
        "not json",
        "{\"issuer\":\"" ISSUER "\",\"issuer\":\"" ISSUER "\",\"token_endpoint\":\"" TOKEN "\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (read_doc(CLIENT_AUTH_DEFAULT, false, bad[i], &auth, err, sizeof err) != -1)
            fail_msg("document %zu was accepted: %s", i, bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_method_is_picked_from_the_list),
        cmocka_unit_test(a_configured_method_the_provider_does_not_list_is_refused),
        cmocka_unit_test(the_document_must_name_the_configured_issuer),
        cmocka_unit_test(the_token_endpoint_must_be_usable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
