/*
 * store_values.c — checking a result's values against the database's column
 * limits, and demoting a result the database cannot take (store_values.h).
 * It owns no state; the store keeps the limits and decides when to call it.
 */
#include "store_values.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void store_limits_set(struct store_limits *lim, const char *column, int64_t len)
{
    if (len < 0)
        len = 0;
    if (strcmp(column, "access_token") == 0)
        lim->access_token = len;
    else if (strcmp(column, "refresh_token") == 0)
        lim->refresh_token = len;
    else if (strcmp(column, "id_token") == 0)
        lim->id_token = len;
    else if (strcmp(column, "scope") == 0)
        lim->scope = len;
    else if (strcmp(column, "token_type") == 0)
        lim->token_type = len;
}

size_t store_utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool too_long(const char *value, int64_t limit)
{
    /* Ciphertext is ASCII, but scope and token type may be any UTF-8. */
    return value && limit > 0 && strlen(value) > (size_t)limit &&
           store_utf8_chars(value) > (size_t)limit;
}

const char *store_values_check(const struct store_limits *lim, const struct store_item *item)
{
    if (item->kind != STORE_REFRESHED)
        return NULL;
    if (too_long(item->token_type, lim->token_type))
        return "token_type_too_long";
    if (too_long(item->scope, lim->scope))
        return "scope_too_long";
    if (too_long(item->access_ct, lim->access_token))
        return "access_token_too_long";
    if (too_long(item->refresh_ct, lim->refresh_token))
        return "refresh_token_too_long";
    if (too_long(item->id_token_ct, lim->id_token))
        return "id_token_too_long";
    return NULL;
}

bool store_sqlstate_is_data_error(const char *sqlstate)
{
    return sqlstate && (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0) &&
           strlen(sqlstate) == 5;
}

static void drop(char **ct)
{
    free(*ct);
    *ct = NULL;
}

enum store_demotion store_item_demotion(const struct store_item *item, const char *code)
{
    if (item->kind == STORE_FAILED)
        return STORE_DEMOTED_NONE;
    bool id_token_at_fault = strcmp(code, "id_token_too_long") == 0;
    /* A partial result the database refused again holds nothing more to drop
     * but the rotated token itself. */
    bool keep = item->kind == STORE_REFRESHED && item->rotated && item->refresh_ct &&
                strcmp(code, "refresh_token_too_long") != 0 &&
                (!store_item_is_partial(item) || id_token_at_fault);
    return keep ? STORE_DEMOTED_PARTIAL : STORE_DEMOTED_FAILED;
}

enum store_demotion store_item_demote(struct store_item *item, const char *code, double now)
{
    enum store_demotion d = store_item_demotion(item, code);
    if (d == STORE_DEMOTED_NONE)
        return d;
    snprintf(item->error, sizeof item->error, "%s", code);
    if (!(item->retry_at > now))
        item->retry_at = now + STORE_DEMOTE_RETRY_S;
    drop(&item->access_ct);
    drop(&item->scope);
    drop(&item->token_type);
    item->expires_at = 0;
    if (d == STORE_DEMOTED_PARTIAL) {
        if (strcmp(code, "id_token_too_long") == 0)
            drop(&item->id_token_ct);
        return d;
    }
    drop(&item->refresh_ct);
    drop(&item->id_token_ct);
    item->kind = STORE_FAILED;
    return d;
}
