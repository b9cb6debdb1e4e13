/*
 * ctl_census.c — the key census of `oauth-refreshctl status --keys`: every
 * non-empty token column of every account is tried with the key list, and
 * the tokens each key opens are counted, so an operator knows when an old key
 * can be removed (after `rotate-keys`, ctl_rotate.c). Reads in id order, in
 * batches (keyset pagination), so a big table is never held at once.
 *
 * It reads ciphertext only through stored_token.c and keys.c, and never
 * prints or keeps a token, a plaintext or a key: each plaintext is wiped at
 * once; undecryptable rows are named by id only.
 */
#include "ctl_census.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "secret.h"
#include "stored_token.h"

#define CENSUS_BATCH 1000
#define CENSUS_IDS   20

const char ctl_census_rows_sql[] =
    "SELECT id, access_token, refresh_token, id_token FROM public.oauth_accounts"
    " WHERE id > $1::bigint ORDER BY id LIMIT $2::integer";

int ctl_census_count(PGconn *conn, const struct keyring *kr, json_t *st, char *err, size_t errlen)
{
    size_t nkeys = keyring_count(kr);
    uint64_t *by_key = calloc(nkeys ? nkeys : 1, sizeof *by_key);
    if (by_key == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uint64_t tokens = 0, bad = 0, rows_old = 0;
    json_t *bad_ids = json_array();
    int64_t last = 0;
    int rc = 0;
    for (;;) {
        char after[32], limit[16];
        snprintf(after, sizeof after, "%" PRId64, last);
        snprintf(limit, sizeof limit, "%d", CENSUS_BATCH);
        const char *params[] = {after, limit};
        PGresult *res = PQexecParams(conn, ctl_census_rows_sql, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            db_redact(err, errlen, PQresultErrorMessage(res));
            PQclear(res);
            rc = -1;
            break;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
            bool old_key = false, undecryptable = false;
            for (int c = 1; c <= 3; c++) {
                if (PQgetisnull(res, i, c) || PQgetvalue(res, i, c)[0] == '\0')
                    continue;
                const char *tok = PQgetvalue(res, i, c);
                struct secret plain = {0};
                size_t idx = 0;
                char e[ERRBUF_LEN];
                tokens++;
                if (stored_token_decrypt(kr, tok, strlen(tok), &plain, &idx, e, sizeof e) < 0) {
                    bad++;
                    undecryptable = true;
                } else {
                    by_key[idx < nkeys ? idx : 0]++;
                    old_key = old_key || idx > 0;
                }
                secret_clear(&plain);
            }
            rows_old += old_key;
            if (undecryptable && json_array_size(bad_ids) < CENSUS_IDS)
                json_array_append_new(bad_ids, json_integer(id));
            last = id;
        }
        PQclear(res);
        if (n < CENSUS_BATCH)
            break;
    }
    if (rc == 0) {
        json_t *arr = json_array();
        for (size_t k = 0; k < nkeys; k++)
            json_array_append_new(arr, json_integer((json_int_t)by_key[k]));
        json_t *keys =
            json_pack("{s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:O}", "keys", (json_int_t)nkeys,
                      "tokens", (json_int_t)tokens, "by_key", arr, "under_primary",
                      (json_int_t)by_key[0], "under_older_keys",
                      (json_int_t)(tokens - by_key[0] - bad), "undecryptable", (json_int_t)bad,
                      "rows_needing_rotation", (json_int_t)rows_old, "undecryptable_ids", bad_ids);
        if (keys == NULL || json_object_set_new(st, "keys", keys) < 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
    }
    json_decref(bad_ids);
    free(by_key);
    return rc;
}

void ctl_census_render(FILE *out, const json_t *st)
{
    const json_t *k = json_object_get(st, "keys");
    if (!json_is_object(k))
        return;
    json_int_t older = json_integer_value(json_object_get(k, "under_older_keys"));
    json_int_t bad = json_integer_value(json_object_get(k, "undecryptable"));
    fprintf(out,
            "keys:             %" JSON_INTEGER_FORMAT " in the list; %" JSON_INTEGER_FORMAT
            " tokens: %" JSON_INTEGER_FORMAT " under the primary key, %" JSON_INTEGER_FORMAT
            " under older keys (%" JSON_INTEGER_FORMAT " accounts), %" JSON_INTEGER_FORMAT
            " undecryptable\n",
            json_integer_value(json_object_get(k, "keys")),
            json_integer_value(json_object_get(k, "tokens")),
            json_integer_value(json_object_get(k, "under_primary")), older,
            json_integer_value(json_object_get(k, "rows_needing_rotation")), bad);
    const json_t *by = json_object_get(k, "by_key");
    for (size_t i = 1; i < json_array_size(by); i++)
        fprintf(out,
                "                  key %zu of the list opens %" JSON_INTEGER_FORMAT " tokens%s\n",
                i + 1, json_integer_value(json_array_get(by, i)),
                json_integer_value(json_array_get(by, i)) == 0 ? ": no token needs it" : "");
    if (older > 0)
        fprintf(out,
                "                  run `oauth-refreshctl rotate-keys` before removing an older "
                "key\n");
    else if (json_array_size(by) > 1)
        fprintf(out, "                  no token needs an older key: they can be removed\n");
    if (bad > 0) {
        fprintf(out, "                  undecryptable in accounts:");
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(k, "undecryptable_ids"), i, v)
        {
            fprintf(out, " %" JSON_INTEGER_FORMAT, json_integer_value(v));
        }
        fprintf(out, "%s\n", bad > CENSUS_IDS ? " ..." : "");
    }
}
