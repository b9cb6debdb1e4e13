/*
 * test_refresh.c — refresh_conclude(), the pure step from a classified answer
 * to a store item: a success, a rotated success, a partial rotation (issue 10
 * part 1: a new refresh token in an answer that is otherwise unusable is kept,
 * the old access token stays, the attempt counts as failed with its backoff),
 * a revocation, a transient failure; the plaintext refresh token is wiped
 * after each; and an out-of-memory with a rotated token aborts (fork). Also
 * refresh_prepare() (the claimed row taken over, decrypted, the request built,
 * and each reason it cannot be), refresh_failure_item(), refresh_attempt_clear()
 * and claimed_account_clear(), and refresh_answer_unreadable() (aborts).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "backoff.h"
#include "fernet.h"
#include "keys.h"
#include "refresh.h"
#include "secret.h"
#include "store.h"

#define NOW 1800000000.0
#define U   0.25

struct fixture {
    struct config cfg;
    struct refresh_attempt ra;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    uint8_t raw[1][FERNET_KEY_BYTES];
    randombytes_buf(raw[0], sizeof raw[0]);
    char err[ERRBUF_LEN];
    fx->cfg.keys = keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 1, err, sizeof err);
    assert_non_null(fx->cfg.keys);
    fx->cfg.refcount = 1;
    fx->cfg.retry_min_ms = 30000;
    fx->cfg.retry_max_ms = 3600000;
    fx->ra.cfg = &fx->cfg;
    fx->ra.acct.account_id = 42;
    fx->ra.acct.provider = PROVIDER_MICROSOFT;
    fx->ra.acct.attempts = 2;
    fx->ra.acct.claimed_at = NOW - 1;
    fx->ra.acct.expires_at = NOW + 120;
    assert_int_equal(
        keyring_encrypt(fx->cfg.keys, (const uint8_t *)"old-rt", 6, &fx->ra.acct.refresh_ct), 0);
    assert_int_equal(secret_set(&fx->ra.refresh_plain, "old-rt", 6), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    secret_clear(&fx->ra.refresh_plain);
    claimed_account_clear(&fx->ra.acct);
    keyring_unref(fx->cfg.keys);
    free(fx);
    return 0;
}

static void set(struct secret *s, const char *text)
{
    assert_int_equal(secret_set(s, text, strlen(text)), 0);
}

static void assert_decrypts_to(const struct keyring *kr, const char *ct, const char *plain)
{
    struct secret s = {0};
    char err[ERRBUF_LEN];
    assert_non_null(ct);
    assert_int_equal(keyring_decrypt(kr, ct, strlen(ct), &s, NULL, err, sizeof err), 0);
    assert_int_equal(s.len, strlen(plain));
    assert_memory_equal(s.data, plain, s.len);
    secret_clear(&s);
}

static void assert_plaintext_wiped(const struct fixture *fx)
{
    assert_null(fx->ra.refresh_plain.data);
    assert_int_equal(fx->ra.refresh_plain.len, 0);
}

static double expected_retry(const struct fixture *fx, int64_t retry_after_ms)
{
    return NOW + (double)backoff_delay_ms((unsigned)fx->ra.acct.attempts + 1, fx->cfg.retry_min_ms,
                                          fx->cfg.retry_max_ms, retry_after_ms, U) /
                     1000.0;
}

static struct store_item *conclude(struct fixture *fx, struct token_result *res)
{
    struct store_item *it = refresh_conclude(&fx->ra, res, fx->cfg.keys, NOW, U);
    token_result_clear(res);
    assert_non_null(it);
    assert_int_equal(it->account_id, 42);
    assert_int_equal(it->provider, PROVIDER_MICROSOFT);
    assert_string_equal(it->old_refresh_ct, fx->ra.acct.refresh_ct);
    assert_plaintext_wiped(fx);
    return it;
}

static void test_success_keeps_the_stored_refresh_token(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {
        .outcome = OUTCOME_SUCCESS, .retry_after_ms = -1, .expires_in_s = 3600};
    set(&res.access_token, "access-1");
    res.scope = strdup("a b");
    res.token_type = strdup("Bearer");
    struct store_item *it = conclude(fx, &res);
    assert_int_equal(it->kind, STORE_REFRESHED);
    assert_false(store_item_is_partial(it));
    assert_false(it->rotated);
    assert_decrypts_to(fx->cfg.keys, it->access_ct, "access-1");
    assert_null(it->refresh_ct);
    assert_null(it->id_token_ct);
    assert_true(it->expires_at == NOW + 3600);
    assert_string_equal(it->scope, "a b");
    assert_string_equal(it->token_type, "Bearer");
    /* Should the store have to fail it, the attempt's backoff is ready. */
    assert_true(it->retry_at == expected_retry(fx, -1));
    store_item_free(it);
}

static void test_rotated_success_carries_the_new_tokens(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {
        .outcome = OUTCOME_SUCCESS, .retry_after_ms = -1, .expires_in_s = 60};
    set(&res.access_token, "access-2");
    set(&res.refresh_token, "new-rt");
    set(&res.id_token, "id-2");
    struct store_item *it = conclude(fx, &res);
    assert_int_equal(it->kind, STORE_REFRESHED);
    assert_false(store_item_is_partial(it));
    assert_true(it->rotated);
    assert_decrypts_to(fx->cfg.keys, it->access_ct, "access-2");
    assert_decrypts_to(fx->cfg.keys, it->refresh_ct, "new-rt");
    assert_decrypts_to(fx->cfg.keys, it->id_token_ct, "id-2");
    assert_null(it->scope);
    assert_null(it->token_type);
    store_item_free(it);
}

static void test_partial_rotation_keeps_the_new_refresh_token_and_fails_the_attempt(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {.outcome = OUTCOME_BAD_RESPONSE, .retry_after_ms = -1};
    snprintf(res.error, sizeof res.error, "missing_access_token");
    set(&res.refresh_token, "new-rt");
    struct store_item *it = conclude(fx, &res);
    assert_int_equal(it->kind, STORE_REFRESHED);
    assert_true(store_item_is_partial(it));
    assert_true(it->rotated);
    assert_string_equal(it->error, "missing_access_token");
    assert_null(it->access_ct); /* the database keeps the old one */
    assert_null(it->scope);
    assert_null(it->token_type);
    assert_null(it->id_token_ct);
    assert_decrypts_to(fx->cfg.keys, it->refresh_ct, "new-rt");
    assert_true(it->retry_at == expected_retry(fx, -1));
    assert_true(it->retry_at > NOW);
    store_item_free(it);
}

static void test_partial_rotation_keeps_the_id_token_too(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {.outcome = OUTCOME_BAD_RESPONSE, .retry_after_ms = 90000};
    snprintf(res.error, sizeof res.error, "token_type_too_long");
    set(&res.refresh_token, "new-rt-3");
    set(&res.id_token, "id-3");
    struct store_item *it = conclude(fx, &res);
    assert_true(store_item_is_partial(it));
    assert_string_equal(it->error, "token_type_too_long");
    assert_decrypts_to(fx->cfg.keys, it->refresh_ct, "new-rt-3");
    assert_decrypts_to(fx->cfg.keys, it->id_token_ct, "id-3");
    assert_true(it->retry_at == expected_retry(fx, 90000));
    store_item_free(it);
}

static void test_transient_failure_with_a_rotated_token_is_partial_too(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {.outcome = OUTCOME_TRANSIENT, .retry_after_ms = -1};
    snprintf(res.error, sizeof res.error, "bad_json");
    set(&res.refresh_token, "new-rt-4");
    struct store_item *it = conclude(fx, &res);
    assert_true(store_item_is_partial(it));
    assert_string_equal(it->error, "bad_json");
    assert_decrypts_to(fx->cfg.keys, it->refresh_ct, "new-rt-4");
    store_item_free(it);
}

static void test_revoked(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {.outcome = OUTCOME_REVOKED, .retry_after_ms = -1};
    snprintf(res.error, sizeof res.error, "invalid_grant");
    struct store_item *it = conclude(fx, &res);
    assert_int_equal(it->kind, STORE_REVOKED);
    assert_string_equal(it->error, "invalid_grant");
    assert_null(it->access_ct);
    assert_null(it->refresh_ct);
    store_item_free(it);
}

static void test_transient_without_a_new_token_is_a_plain_failure(void **state)
{
    struct fixture *fx = *state;
    struct token_result res = {.outcome = OUTCOME_TRANSIENT, .retry_after_ms = 5000};
    snprintf(res.error, sizeof res.error, "http_503");
    struct store_item *it = conclude(fx, &res);
    assert_int_equal(it->kind, STORE_FAILED);
    assert_false(store_item_is_partial(it));
    assert_false(it->rotated);
    assert_string_equal(it->error, "http_503");
    assert_null(it->refresh_ct);
    assert_true(it->retry_at == expected_retry(fx, 5000));
    store_item_free(it);
}

/* The provider's words and the fingerprints travel with the item: the words of a failure
 * (made printable ASCII whatever their origin), none for a success; the fingerprint of the
 * token used and, when rotated, of the new one, under the primary key. */
static void test_items_carry_the_providers_words_and_the_fingerprints(void **state)
{
    struct fixture *fx = *state;
    char old_fp[TOKEN_FP_HEX_LEN + 1], new_fp[TOKEN_FP_HEX_LEN + 1];
    assert_int_equal(token_fingerprint(fx->cfg.keys, "old-rt", 6, old_fp), 0);
    assert_int_equal(token_fingerprint(fx->cfg.keys, "new-rt", 6, new_fp), 0);

    struct token_result res = {.outcome = OUTCOME_TRANSIENT, .retry_after_ms = -1};
    snprintf(res.error, sizeof res.error, "server_error");
    snprintf(res.detail, sizeof res.detail, "server_error: down [redacted]\n\xc3\xa9");
    struct store_item *it = conclude(fx, &res);
    assert_int_equal(it->kind, STORE_FAILED);
    assert_string_equal(it->detail, "server_error: down [redacted]???");
    assert_string_equal(it->token_fp, old_fp);
    assert_string_equal(it->new_token_fp, "");
    store_item_free(it);

    assert_int_equal(secret_set(&fx->ra.refresh_plain, "old-rt", 6), 0);
    struct token_result ok = {.outcome = OUTCOME_SUCCESS, .retry_after_ms = -1, .expires_in_s = 60};
    set(&ok.access_token, "access");
    set(&ok.refresh_token, "new-rt");
    snprintf(ok.detail, sizeof ok.detail, "read leniently");
    it = conclude(fx, &ok);
    assert_int_equal(it->kind, STORE_REFRESHED);
    assert_string_equal(it->detail, "");
    assert_string_equal(it->token_fp, old_fp);
    assert_string_equal(it->new_token_fp, new_fp);
    assert_string_not_equal(old_fp, new_fp);
    store_item_free(it);

    assert_int_equal(secret_set(&fx->ra.refresh_plain, "old-rt", 6), 0);
    struct token_result partial = {.outcome = OUTCOME_BAD_RESPONSE, .retry_after_ms = -1};
    snprintf(partial.error, sizeof partial.error, "missing_access_token");
    snprintf(partial.detail, sizeof partial.detail, "no access_token in the answer");
    set(&partial.refresh_token, "new-rt");
    it = conclude(fx, &partial);
    assert_true(store_item_is_partial(it));
    assert_string_equal(it->detail, "no access_token in the answer");
    assert_string_equal(it->new_token_fp, new_fp);
    store_item_free(it);
}

static int run_lost(bool rotated)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* No core file from the expected abort. */
        signal(SIGABRT, SIG_DFL);
        struct token_result res = {.outcome = OUTCOME_BAD_RESPONSE};
        if (rotated && secret_set(&res.refresh_token, "rt", 2) < 0)
            _exit(3);
        refresh_result_lost(&res, 7);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void test_losing_a_rotated_token_to_oom_aborts(void **state)
{
    (void)state;
    int status = run_lost(true);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    status = run_lost(false);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- refresh_prepare ---- */

static struct provider_config test_pc = {
    .id = PROVIDER_MICROSOFT,
    .client_id = (char *)"cid-123",
    .client_secret = (char *)"csecret",
    .tenant = (char *)"common",
    .token_url = (char *)"https://login.example/common/oauth2/v2.0/token",
    .max_in_flight = 128,
    .max_rate = 50,
};

/* The claimed row as the engine hands it over: taken out of the fixture. */
static struct claimed_account take_claimed(struct fixture *fx)
{
    struct claimed_account acct = fx->ra.acct;
    memset(&fx->ra.acct, 0, sizeof fx->ra.acct);
    secret_clear(&fx->ra.refresh_plain);
    return acct;
}

static int prepare(struct fixture *fx, struct claimed_account *acct, char *code, char *detail)
{
    code[0] = detail[0] = '\0';
    int rc = refresh_prepare(&fx->ra, &fx->cfg, acct, code, 64, detail, 256);
    /* Whatever the outcome, the attempt owns the row and holds a reference. */
    assert_null(acct->refresh_ct);
    assert_int_equal(acct->account_id, 0);
    assert_ptr_equal(fx->ra.cfg, &fx->cfg);
    assert_int_equal(fx->cfg.refcount, 2);
    assert_int_equal(fx->ra.acct.account_id, 42);
    return rc;
}

static void test_prepare_decrypts_and_builds_the_request(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.providers[PROVIDER_MICROSOFT] = &test_pc;
    struct claimed_account acct = take_claimed(fx);
    char code[64], detail[256];
    assert_int_equal(prepare(fx, &acct, code, detail), 0);
    assert_ptr_equal(fx->ra.ops, provider_ops_get(PROVIDER_MICROSOFT));
    assert_int_equal(fx->ra.key_index, 0);
    assert_int_equal(fx->ra.refresh_plain.len, 6);
    assert_memory_equal(fx->ra.refresh_plain.data, "old-rt", 6);
    assert_string_equal(fx->ra.req.url, test_pc.token_url);
    assert_non_null(strstr(fx->ra.req.body.data, "refresh_token=old-rt"));
    assert_string_equal(code, "");

    refresh_attempt_clear(&fx->ra);
    assert_int_equal(fx->cfg.refcount, 1);
    assert_null(fx->ra.cfg);
    assert_null(fx->ra.refresh_plain.data);
    assert_null(fx->ra.req.url);
    assert_null(fx->ra.req.body.data);
    assert_null(fx->ra.acct.refresh_ct);
}

static void test_prepare_names_a_token_under_an_older_key(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.providers[PROVIDER_MICROSOFT] = &test_pc;
    uint8_t raw[2][FERNET_KEY_BYTES];
    randombytes_buf(raw, sizeof raw);
    char err[ERRBUF_LEN];
    struct keyring *old =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw + 1, 1, err, sizeof err);
    struct keyring *both =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 2, err, sizeof err);
    assert_non_null(old);
    assert_non_null(both);
    struct claimed_account acct = take_claimed(fx);
    free(acct.refresh_ct);
    assert_int_equal(keyring_encrypt(old, (const uint8_t *)"older", 5, &acct.refresh_ct), 0);
    struct keyring *mine = fx->cfg.keys;
    fx->cfg.keys = both;
    char code[64], detail[256];
    assert_int_equal(prepare(fx, &acct, code, detail), 0);
    assert_int_equal(fx->ra.key_index, 1);
    assert_memory_equal(fx->ra.refresh_plain.data, "older", 5);
    refresh_attempt_clear(&fx->ra);
    fx->cfg.keys = mine;
    keyring_unref(old);
    keyring_unref(both);
}

static void expect_refused(struct fixture *fx, struct claimed_account *acct, const char *want)
{
    char code[64], detail[256];
    assert_int_equal(prepare(fx, acct, code, detail), -1);
    assert_string_equal(code, want);
    assert_true(detail[0] != '\0');
    /* No plaintext outlives a refusal's cleanup, and nothing leaks (ASan). */
    refresh_attempt_clear(&fx->ra);
    assert_int_equal(fx->cfg.refcount, 1);
}

static void test_prepare_refuses_an_unknown_provider(void **state)
{
    struct fixture *fx = *state;
    struct claimed_account acct = take_claimed(fx);
    acct.provider = -1;
    expect_refused(fx, &acct, "unknown_provider");
    acct = (struct claimed_account){
        .account_id = 42, .provider = PROVIDER_MAX, .refresh_ct = strdup("x")};
    expect_refused(fx, &acct, "unknown_provider");
}

static void test_prepare_refuses_a_provider_not_configured(void **state)
{
    struct fixture *fx = *state;
    struct claimed_account acct = take_claimed(fx);
    char code[64], detail[256];
    assert_int_equal(prepare(fx, &acct, code, detail), -1);
    assert_string_equal(code, "provider_not_configured");
    assert_non_null(strstr(detail, "[provider.microsoft]"));
    refresh_attempt_clear(&fx->ra);
}

static void test_prepare_refuses_an_undecryptable_token(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.providers[PROVIDER_MICROSOFT] = &test_pc;
    struct claimed_account acct = take_claimed(fx);
    free(acct.refresh_ct);
    acct.refresh_ct = strdup("gAAAAAnot-a-token");
    expect_refused(fx, &acct, "undecryptable_refresh_token");
}

static void test_prepare_refuses_an_empty_token(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.providers[PROVIDER_MICROSOFT] = &test_pc;
    struct claimed_account acct = take_claimed(fx);
    free(acct.refresh_ct);
    assert_int_equal(keyring_encrypt(fx->cfg.keys, (const uint8_t *)"", 0, &acct.refresh_ct), 0);
    expect_refused(fx, &acct, "empty_refresh_token");
}

static void test_prepare_refuses_a_request_it_cannot_build(void **state)
{
    struct fixture *fx = *state;
    struct provider_config pc = test_pc;
    pc.token_url = NULL; /* an issuer whose discovery has not answered */
    fx->cfg.providers[PROVIDER_MICROSOFT] = &pc;
    struct claimed_account acct = take_claimed(fx);
    expect_refused(fx, &acct, "request_build_failed");
    assert_null(fx->ra.req.body.data);
}

/* ---- refresh_failure_item, claimed_account_clear ---- */

static void test_failure_item_backs_off_from_the_attempts(void **state)
{
    struct fixture *fx = *state;
    struct store_item *it =
        refresh_failure_item(&fx->cfg, &fx->ra.acct, "provider_not_configured", -1, NOW, U);
    assert_non_null(it);
    assert_int_equal(it->kind, STORE_FAILED);
    assert_int_equal(it->account_id, 42);
    assert_int_equal(it->provider, PROVIDER_MICROSOFT);
    assert_string_equal(it->old_refresh_ct, fx->ra.acct.refresh_ct);
    assert_string_equal(it->error, "provider_not_configured");
    assert_true(it->retry_at == expected_retry(fx, -1));
    assert_true(it->retry_at > NOW);
    assert_false(it->rotated);
    assert_null(it->access_ct);
    assert_int_equal(it->claimed_at, NOW - 1);
    store_item_free(it);

    /* The provider's Retry-After is honoured. */
    it = refresh_failure_item(&fx->cfg, &fx->ra.acct, "x", 600000, NOW, U);
    assert_true(it->retry_at == expected_retry(fx, 600000));
    store_item_free(it);
}

static void test_failure_item_for_a_row_without_a_token_or_a_known_provider(void **state)
{
    struct fixture *fx = *state;
    struct claimed_account acct = {.account_id = 9, .provider = -1, .attempts = 0};
    struct store_item *it = refresh_failure_item(&fx->cfg, &acct, "unknown_provider", -1, NOW, U);
    assert_non_null(it);
    assert_string_equal(it->old_refresh_ct, ""); /* the CAS then matches no token */
    assert_true(it->provider >= 0 && it->provider < PROVIDER_MAX);
    store_item_free(it);
}

static void test_claimed_account_clear_frees_and_zeroes(void **state)
{
    (void)state;
    struct claimed_account acct = {.account_id = 5,
                                   .provider = 1,
                                   .refresh_ct = strdup("ct"),
                                   .scope = strdup("openid"),
                                   .attempts = 3};
    claimed_account_clear(&acct);
    assert_null(acct.refresh_ct);
    assert_null(acct.scope);
    assert_int_equal(acct.account_id, 0);
    assert_int_equal(acct.attempts, 0);
}

static void test_an_unreadable_success_aborts(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        refresh_answer_unreadable(7);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success_keeps_the_stored_refresh_token, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rotated_success_carries_the_new_tokens, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_partial_rotation_keeps_the_new_refresh_token_and_fails_the_attempt, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_partial_rotation_keeps_the_id_token_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transient_failure_with_a_rotated_token_is_partial_too,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_without_a_new_token_is_a_plain_failure,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_items_carry_the_providers_words_and_the_fingerprints,
                                        setup, teardown),
        cmocka_unit_test(test_losing_a_rotated_token_to_oom_aborts),
        cmocka_unit_test_setup_teardown(test_prepare_decrypts_and_builds_the_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prepare_names_a_token_under_an_older_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_an_unknown_provider, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_a_provider_not_configured, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_an_undecryptable_token, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_an_empty_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_a_request_it_cannot_build, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failure_item_backs_off_from_the_attempts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_failure_item_for_a_row_without_a_token_or_a_known_provider, setup, teardown),
        cmocka_unit_test(test_claimed_account_clear_frees_and_zeroes),
        cmocka_unit_test(test_an_unreadable_success_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
