/*
 * stored_token.c — reading and writing a token column in the form the
 * application's encrypted field uses (stored_token.h). It owns the detection
 * of django-fernet-fields' bytea-literal text ("\x" + hex) and the conversion
 * both ways. It must never treat a value as hex-wrapped unless the hex decodes
 * to a Fernet token's text, so that an ordinary token (which never starts with
 * a backslash) or garbage reaches keyring_decrypt() unchanged and fails there
 * as it always did.
 */
#include "stored_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

/* A Fernet token's text: version byte 0x80 and a timestamp below 2^40 read "gAAAAA". */
#define FERNET_TEXT_PREFIX "gAAAAA"

static bool is_b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '=';
}

/*
 * Decodes "\x" + hex into out (capacity (len - 2) / 2 + 1, NUL-terminated).
 * Returns the decoded length, or -1 when the value is not a hex-wrapped
 * Fernet token's text.
 */
static long unwrap_hex(const char *stored, size_t len, char *out)
{
    if (len < 4 || stored[0] != '\\' || stored[1] != 'x' || (len - 2) % 2 != 0)
        return -1;
    size_t n = (len - 2) / 2;
    for (size_t i = 0; i < n; i++) {
        int hi = parse_hex_digit(stored[2 + 2 * i]);
        int lo = parse_hex_digit(stored[3 + 2 * i]);
        if (hi < 0 || lo < 0 || !is_b64url_char((unsigned char)(hi << 4 | lo)))
            return -1;
        out[i] = (char)(hi << 4 | lo);
    }
    out[n] = '\0';
    size_t plen = strlen(FERNET_TEXT_PREFIX);
    if (n < plen || memcmp(out, FERNET_TEXT_PREFIX, plen) != 0)
        return -1;
    return (long)n;
}

enum stored_form stored_token_form(const char *stored, size_t len)
{
    if (stored == NULL || len < 4 || stored[0] != '\\')
        return STORED_FORM_TEXT;
    char *buf = malloc((len - 2) / 2 + 1);
    if (buf == NULL)
        return STORED_FORM_TEXT; /* then decrypting fails and says so; nothing is lost */
    long n = unwrap_hex(stored, len, buf);
    free(buf);
    return n < 0 ? STORED_FORM_TEXT : STORED_FORM_BYTEA_HEX;
}

int stored_token_decrypt(const struct keyring *kr, const char *stored, size_t len,
                         struct secret *plain, size_t *key_index, char *err, size_t errlen)
{
    if (stored == NULL || len < 4 || stored[0] != '\\')
        return keyring_decrypt(kr, stored, len, plain, key_index, err, errlen);
    char *buf = malloc((len - 2) / 2 + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    long n = unwrap_hex(stored, len, buf);
    int rc = n < 0 ? keyring_decrypt(kr, stored, len, plain, key_index, err, errlen)
                   : keyring_decrypt(kr, buf, (size_t)n, plain, key_index, err, errlen);
    free(buf); /* a token's ciphertext, not a secret */
    return rc;
}

/* Replaces *token (a Fernet token as text, may be NULL) by its "\x" + hex form. */
static int wrap_hex(char **token)
{
    if (*token == NULL)
        return 0;
    static const char digits[] = "0123456789abcdef";
    size_t n = strlen(*token);
    char *out = malloc(2 + 2 * n + 1);
    if (out == NULL)
        return -1;
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*token)[i];
        out[2 + 2 * i] = digits[c >> 4];
        out[3 + 2 * i] = digits[c & 15];
    }
    out[2 + 2 * n] = '\0';
    free(*token);
    *token = out;
    return 0;
}

int stored_token_encrypt(const struct keyring *kr, enum stored_form form, const uint8_t *plain,
                         size_t len, char **out)
{
    if (keyring_encrypt(kr, plain, len, out) < 0)
        return -1;
    if (form == STORED_FORM_BYTEA_HEX && wrap_hex(out) < 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int stored_token_match_item(const char *stored_refresh, struct store_item *it)
{
    if (stored_refresh == NULL ||
        stored_token_form(stored_refresh, strlen(stored_refresh)) != STORED_FORM_BYTEA_HEX)
        return 0;
    char *wrapped[3] = {it->access_ct, it->refresh_ct, it->id_token_ct};
    char *copy[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        if (wrapped[i] == NULL)
            continue;
        copy[i] = strdup(wrapped[i]);
        if (copy[i] == NULL || wrap_hex(&copy[i]) < 0) {
            for (int k = 0; k <= i; k++)
                free(copy[k]);
            return -1;
        }
    }
    /* All or nothing: swap only once every conversion succeeded. */
    char **slot[3] = {&it->access_ct, &it->refresh_ct, &it->id_token_ct};
    for (int i = 0; i < 3; i++) {
        if (copy[i] != NULL) {
            free(*slot[i]);
            *slot[i] = copy[i];
        }
    }
    return 0;
}
