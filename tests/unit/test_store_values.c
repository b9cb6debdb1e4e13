/*
 * test_store_values.c — what may enter a batch (issue 10 part 2): values are
 * checked against the columns' real limits with a precise error, characters
 * counted as PostgreSQL counts them; a result the database cannot take is
 * demoted to one it can (a partial result keeps a rotated refresh token), and
 * only SQLSTATE classes 22 and 23 count as a row's data at fault.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "store_values.h"

#define NOW 1800000000.0

static struct store_item *full_item(bool rotated)
{
    struct store_item *it = calloc(1, sizeof *it);
    it->kind = STORE_REFRESHED;
    it->account_id = 5;
    it->old_refresh_ct = strdup("b2xk");
    it->access_ct = strdup("YWNjZXNz");
    it->refresh_ct = rotated ? strdup("bmV3cnQ=") : NULL;
    it->id_token_ct = rotated ? strdup("aWR0") : NULL;
    it->scope = strdup("openid email");
    it->token_type = strdup("Bearer");
    it->expires_at = NOW + 3600;
    it->retry_at = NOW + 30;
    it->rotated = rotated;
    return it;
}

static void test_limits_name_the_value_that_does_not_fit(void **state)
{
    (void)state;
    struct store_limits lim = {0};
    store_limits_set(&lim, "token_type", 50);
    store_limits_set(&lim, "scope", 12);
    store_limits_set(&lim, "unknown_column", 1);
    struct store_item *it = full_item(true);
    assert_null(store_values_check(&lim, it));
    free(it->token_type);
    it->token_type = strdup("BearerBearerBearerBearerBearerBearerBearerBearerBearerBearer");
    assert_int_equal(strlen(it->token_type), 60);
    assert_string_equal(store_values_check(&lim, it), "token_type_too_long");
    free(it->token_type);
    /* 50 characters of two bytes each fit VARCHAR(50). */
    it->token_type = malloc(101);
    for (int i = 0; i < 50; i++)
        memcpy(it->token_type + 2 * i, "\xc3\xa9", 2);
    it->token_type[100] = '\0';
    assert_int_equal(store_utf8_chars(it->token_type), 50);
    assert_null(store_values_check(&lim, it));
    free(it->scope);
    it->scope = strdup("openid email profile");
    assert_string_equal(store_values_check(&lim, it), "scope_too_long");
    struct store_limits tokens = {.access_token = 4};
    assert_string_equal(store_values_check(&tokens, it), "access_token_too_long");
    tokens = (struct store_limits){.refresh_token = 4};
    assert_string_equal(store_values_check(&tokens, it), "refresh_token_too_long");
    tokens = (struct store_limits){.id_token = 3};
    assert_string_equal(store_values_check(&tokens, it), "id_token_too_long");
    store_item_free(it);
}

static void test_a_rotated_result_that_does_not_fit_keeps_its_refresh_token(void **state)
{
    (void)state;
    struct store_item *it = full_item(true);
    assert_int_equal(store_item_demote(it, "token_type_too_long", NOW), STORE_DEMOTED_PARTIAL);
    assert_int_equal(it->kind, STORE_REFRESHED);
    assert_true(store_item_is_partial(it));
    assert_string_equal(it->error, "token_type_too_long");
    assert_string_equal(it->refresh_ct, "bmV3cnQ=");
    assert_string_equal(it->id_token_ct, "aWR0");
    assert_null(it->access_ct);
    assert_null(it->scope);
    assert_null(it->token_type);
    assert_true(it->retry_at == NOW + 30); /* the attempt's own backoff */
    /* Refused again by the database: nothing less to write but a failure. */
    assert_int_equal(store_item_demotion(it, "db_23514"), STORE_DEMOTED_FAILED);
    assert_int_equal(store_item_demote(it, "db_23514", NOW), STORE_DEMOTED_FAILED);
    assert_int_equal(it->kind, STORE_FAILED);
    assert_string_equal(it->error, "db_23514");
    assert_null(it->refresh_ct);
    assert_int_equal(store_item_demote(it, "db_22001", NOW), STORE_DEMOTED_NONE);
    store_item_free(it);
}

static void test_an_id_token_that_does_not_fit_is_left_out(void **state)
{
    (void)state;
    struct store_item *it = full_item(true);
    assert_int_equal(store_item_demote(it, "id_token_too_long", NOW), STORE_DEMOTED_PARTIAL);
    assert_null(it->id_token_ct);
    assert_string_equal(it->refresh_ct, "bmV3cnQ=");
    store_item_free(it);
}

static void test_what_cannot_keep_a_refresh_token_becomes_a_failure(void **state)
{
    (void)state;
    struct store_item *it = full_item(true);
    assert_int_equal(store_item_demote(it, "refresh_token_too_long", NOW), STORE_DEMOTED_FAILED);
    assert_int_equal(it->kind, STORE_FAILED);
    assert_null(it->refresh_ct);
    store_item_free(it);

    it = full_item(false);
    it->retry_at = 0; /* replayed: no backoff known */
    assert_int_equal(store_item_demote(it, "db_22001", NOW), STORE_DEMOTED_FAILED);
    assert_int_equal(it->kind, STORE_FAILED);
    assert_string_equal(it->error, "db_22001");
    assert_true(it->retry_at == NOW + STORE_DEMOTE_RETRY_S);
    store_item_free(it);

    it = full_item(false);
    it->kind = STORE_REVOKED;
    assert_int_equal(store_item_demote(it, "db_23514", NOW), STORE_DEMOTED_FAILED);
    assert_int_equal(it->kind, STORE_FAILED);
    store_item_free(it);
}

static void test_only_classes_22_and_23_are_data_errors(void **state)
{
    (void)state;
    assert_true(store_sqlstate_is_data_error("22001"));
    assert_true(store_sqlstate_is_data_error("23514"));
    assert_true(store_sqlstate_is_data_error("22P02"));
    assert_false(store_sqlstate_is_data_error("08006")); /* connection failure */
    assert_false(store_sqlstate_is_data_error("40001")); /* serialization */
    assert_false(store_sqlstate_is_data_error("57P01")); /* admin shutdown */
    assert_false(store_sqlstate_is_data_error("P0001"));
    assert_false(store_sqlstate_is_data_error("22"));
    assert_false(store_sqlstate_is_data_error(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_name_the_value_that_does_not_fit),
        cmocka_unit_test(test_a_rotated_result_that_does_not_fit_keeps_its_refresh_token),
        cmocka_unit_test(test_an_id_token_that_does_not_fit_is_left_out),
        cmocka_unit_test(test_what_cannot_keep_a_refresh_token_becomes_a_failure),
        cmocka_unit_test(test_only_classes_22_and_23_are_data_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
