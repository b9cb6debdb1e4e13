/*
 * test_stored_token.c — the forms of a stored token (stored_token.h): a
 * Fernet token as text passes through; "\x" + hex of a Fernet token's text
 * (django-fernet-fields' bytes in a TEXT column) is recognised and decrypts;
 * lookalikes ("\x" + hex of something else, odd or non-hex digits) are left
 * to fail as undecryptable; new tokens are written in the row's form, and a
 * refresh result's ciphertexts follow the stored refresh token's form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "keys.h"
#include "store.h"
#include "stored_token.h"

static struct keyring *test_keyring(void)
{
    uint8_t raw[1][FERNET_KEY_BYTES];
    for (size_t i = 0; i < FERNET_KEY_BYTES; i++)
        raw[0][i] = (uint8_t)(i * 7 + 1);
    char err[ERRBUF_LEN];
    struct keyring *kr = keyring_from_raw(raw, 1, err, sizeof err);
    assert_non_null(kr);
    return kr;
}

static char *hex_of(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(2 + 2 * n + 1);
    assert_non_null(out);
    strcpy(out, "\\x");
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 + 2 * i, "%02x", (unsigned char)s[i]);
    return out;
}

static void assert_decrypts_to(struct keyring *kr, const char *stored, const char *want)
{
    struct secret plain = {0};
    size_t idx = 9;
    char err[ERRBUF_LEN] = "";
    assert_int_equal(
        stored_token_decrypt(kr, stored, strlen(stored), &plain, &idx, err, sizeof err), 0);
    assert_int_equal(idx, 0);
    assert_string_equal(plain.data, want);
    secret_clear(&plain);
}

static void test_text_and_hex_forms_both_decrypt(void **state)
{
    (void)state;
    struct keyring *kr = test_keyring();
    char *tok = NULL;
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)"rt-1", 4, &tok), 0);
    assert_int_equal(stored_token_form(tok, strlen(tok)), STORED_FORM_TEXT);
    assert_decrypts_to(kr, tok, "rt-1");

    char *hex = hex_of(tok);
    assert_int_equal(strncmp(hex, "\\x6741414141", 12), 0);
    assert_int_equal(stored_token_form(hex, strlen(hex)), STORED_FORM_BYTEA_HEX);
    assert_decrypts_to(kr, hex, "rt-1");
    for (char *p = hex + 2; *p; p++) /* PostgreSQL writes lower case; accept either */
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_decrypts_to(kr, hex, "rt-1");
    free(hex);
    free(tok);
    keyring_unref(kr);
}

static void test_lookalikes_stay_undecryptable(void **state)
{
    (void)state;
    struct keyring *kr = test_keyring();
    char *not_fernet = hex_of("hello world, not a token");
    const char *bad[] = {not_fernet, "\\x674", "\\x67zz41", "\\x", "\\", "", "plain text"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(stored_token_form(bad[i], strlen(bad[i])), STORED_FORM_TEXT);
        struct secret plain = {0};
        char err[ERRBUF_LEN] = "";
        assert_int_equal(
            stored_token_decrypt(kr, bad[i], strlen(bad[i]), &plain, NULL, err, sizeof err), -1);
        assert_true(err[0] != '\0');
        assert_null(plain.data);
    }
    free(not_fernet);
    keyring_unref(kr);
}

static void test_encrypt_writes_the_requested_form(void **state)
{
    (void)state;
    struct keyring *kr = test_keyring();
    char *text = NULL, *hex = NULL;
    assert_int_equal(stored_token_encrypt(kr, STORED_FORM_TEXT, (const uint8_t *)"at", 2, &text),
                     0);
    assert_int_equal(stored_token_form(text, strlen(text)), STORED_FORM_TEXT);
    assert_int_equal(
        stored_token_encrypt(kr, STORED_FORM_BYTEA_HEX, (const uint8_t *)"at", 2, &hex), 0);
    assert_int_equal(stored_token_form(hex, strlen(hex)), STORED_FORM_BYTEA_HEX);
    assert_int_equal(strlen(hex), 2 + 2 * strlen(text));
    assert_decrypts_to(kr, hex, "at");
    free(text);
    free(hex);
    keyring_unref(kr);
}

static void test_a_result_follows_the_stored_refresh_tokens_form(void **state)
{
    (void)state;
    struct keyring *kr = test_keyring();
    char *stored = NULL;
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)"old", 3, &stored), 0);
    char *stored_hex = hex_of(stored);

    struct store_item it = {0};
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)"new-at", 6, &it.access_ct), 0);
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)"new-rt", 6, &it.refresh_ct), 0);
    char *access_text = strdup(it.access_ct);

    /* A row in text form: nothing changes. */
    assert_int_equal(stored_token_match_item(stored, &it), 0);
    assert_string_equal(it.access_ct, access_text);

    /* A row in hex form: every new ciphertext is written in hex, the kept one stays NULL. */
    assert_int_equal(stored_token_match_item(stored_hex, &it), 0);
    assert_int_equal(stored_token_form(it.access_ct, strlen(it.access_ct)), STORED_FORM_BYTEA_HEX);
    assert_int_equal(stored_token_form(it.refresh_ct, strlen(it.refresh_ct)),
                     STORED_FORM_BYTEA_HEX);
    assert_null(it.id_token_ct);
    assert_decrypts_to(kr, it.access_ct, "new-at");
    assert_decrypts_to(kr, it.refresh_ct, "new-rt");

    free(it.access_ct);
    free(it.refresh_ct);
    free(access_text);
    free(stored_hex);
    free(stored);
    keyring_unref(kr);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_and_hex_forms_both_decrypt),
        cmocka_unit_test(test_lookalikes_stay_undecryptable),
        cmocka_unit_test(test_encrypt_writes_the_requested_form),
        cmocka_unit_test(test_a_result_follows_the_stored_refresh_tokens_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
