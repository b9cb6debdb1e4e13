/*
 * store_write.c — the write statements of the store: which SQL function a
 * batch of each kind calls (store_refreshed / store_failed / store_revoked)
 * and the array literals of its rows, one array per column, so a batch of up
 * to 500 results is one statement, one round trip and one commit. It builds
 * text and nothing else: it sends nothing, owns no item and keeps no state.
 * Ciphertext only passes through it (a revocation's token is decrypted in
 * store_revoked.c to fingerprint it).
 */
#include "store_internal.h"

#include <stdio.h>

#include "timeutil.h"

static void interval_param(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%.3f seconds", (double)ms / 1000.0);
}

static void time_array(struct strbuf *sb, double t)
{
    char iso[ISO8601_LEN];
    time_format_iso8601(t, true, iso);
    pgarray_text(sb, iso);
}

const char *store_write_statement(struct store *st, const struct store_batch *b, struct strbuf *arr,
                                  size_t *narr, char *interval, size_t interval_len)
{
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        pgarray_begin(&arr[i]);
    for (struct store_item *it = b->items.head; it; it = it->next) {
        pgarray_int64(&arr[0], it->account_id);
        switch (b->kind) {
        case STORE_REFRESHED:
            pgarray_text(&arr[1], it->old_refresh_ct);
            pgarray_text(&arr[2], it->access_ct);
            pgarray_text(&arr[3], it->refresh_ct);
            pgarray_text(&arr[4], it->id_token_ct);
            if (store_item_is_partial(it)) {
                pgarray_text(&arr[5], NULL); /* keep the stored expiry */
                pgarray_text(&arr[8], it->error);
                time_array(&arr[9], it->retry_at);
                pgarray_text(&arr[10], it->detail);
            } else {
                time_array(&arr[5], it->expires_at);
                pgarray_text(&arr[8], NULL);
                pgarray_text(&arr[9], NULL);
                pgarray_text(&arr[10], NULL);
            }
            pgarray_text(&arr[6], it->scope);
            pgarray_text(&arr[7], it->token_type);
            break;
        case STORE_FAILED:
            pgarray_text(&arr[1], it->error);
            time_array(&arr[2], it->retry_at);
            pgarray_text(&arr[3], it->detail);
            break;
        case STORE_REVOKED: {
            char tag[REVOKED_TAG_HEX_LEN];
            pgarray_text(&arr[1], it->old_refresh_ct);
            pgarray_text(&arr[2], it->error);
            pgarray_text(&arr[3],
                         store_revoked_tag_hex(st->keys, it->old_refresh_ct, tag) ? tag : NULL);
            pgarray_text(&arr[4], it->detail);
            break;
        }
        }
    }
    for (size_t i = 0; i < STORE_ARRAYS; i++)
        pgarray_end(&arr[i]);
    interval_param(interval, interval_len, st->lead_ms);
    switch (b->kind) {
    case STORE_REFRESHED:
        *narr = 11;
        return "SELECT account_id, stored FROM oauth_refreshd.store_refreshed($1, $2::bigint[], "
               "$3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], "
               "$9::text[], $13::interval, $10::text[], $11::timestamptz[], $12::text[])";
    case STORE_FAILED:
        *narr = 4;
        return "SELECT oauth_refreshd.store_failed($1, $2::bigint[], $3::text[], "
               "$4::timestamptz[], $6::interval, $5::text[])";
    case STORE_REVOKED:
        *narr = 5;
        return "SELECT account_id, revoked FROM oauth_refreshd.store_revoked($1, $2::bigint[], "
               "$3::text[], $4::text[], $5::text[], $6::text[])";
    }
    return NULL;
}
