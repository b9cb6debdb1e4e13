/*
 * store_values.h — what the store may put in one batch: every value checked
 * against the real length limits of the application's columns (read from
 * information_schema at connect), and the rule that turns a result the
 * database cannot take into one it can (a partial result that still keeps a
 * rotated refresh token, or a failed attempt). Pure: no I/O, no clocks (the
 * caller passes now), no logging. One bad value then fails its own account,
 * never the batch of up to 500 it travels in (issue 10, SPEC §6).
 */
#ifndef OAUTH_STORE_VALUES_H
#define OAUTH_STORE_VALUES_H

#include "common.h"
#include "store.h"

/* Character limits of public.oauth_accounts' columns; 0 = unbounded (TEXT). */
struct store_limits {
    int64_t access_token, refresh_token, id_token, scope, token_type;
};

/*
 * The information_schema query (no parameters): rows of (column_name,
 * character_maximum_length) for the columns the store writes.
 */
#define STORE_LIMITS_SQL                                                                           \
    "SELECT column_name::text, character_maximum_length FROM information_schema.columns "          \
    "WHERE table_schema = 'public' AND table_name = 'oauth_accounts' AND column_name IN "          \
    "('access_token', 'refresh_token', 'id_token', 'scope', 'token_type')"

/* Sets one limit by column name (unknown names are ignored); len <= 0 = none. */
void store_limits_set(struct store_limits *lim, const char *column, int64_t len);

/* Characters of a UTF-8 string (continuation bytes not counted), as PostgreSQL counts. */
size_t store_utf8_chars(const char *s);

/*
 * NULL when every value of item fits lim; else the precise error code of the
 * first that does not ("token_type_too_long", "scope_too_long",
 * "access_token_too_long", "refresh_token_too_long", "id_token_too_long").
 */
const char *store_values_check(const struct store_limits *lim, const struct store_item *item);

/* True for a SQLSTATE of class 22 (data exception) or 23 (integrity
 * constraint violation): the data of some row is at fault, not the connection
 * or the statement. */
bool store_sqlstate_is_data_error(const char *sqlstate);

/* When the next attempt happens if nothing better is known (a result replayed
 * from the spool carries no backoff). */
#define STORE_DEMOTE_RETRY_S 60.0

enum store_demotion {
    STORE_DEMOTED_PARTIAL, /* still STORE_REFRESHED: keeps the rotated refresh token */
    STORE_DEMOTED_FAILED,  /* now STORE_FAILED (was STORE_REFRESHED or STORE_REVOKED) */
    STORE_DEMOTED_NONE,    /* a STORE_FAILED item: nothing less to write */
};

/*
 * Makes item writable without the value(s) the database refused, recording
 * code as the attempt's error: a full result that carries a rotated refresh
 * token becomes a partial result (unless the refresh token itself is what did
 * not fit: code "refresh_token_too_long"; an id token that does not fit is
 * left out); anything else refreshed, or a revocation, becomes a failed
 * attempt (retry at item->retry_at, or now + STORE_DEMOTE_RETRY_S). A partial
 * result refused again becomes a failed attempt. Frees the ciphertexts that
 * are no longer written. Returns what became of it; a STORE_DEMOTED_FAILED
 * item that was rotated loses its new refresh token here: the caller keeps it
 * aside first (store_item_demotion() tells beforehand).
 */
enum store_demotion store_item_demote(struct store_item *item, const char *code, double now);
/* What store_item_demote() would make of item, without changing it. */
enum store_demotion store_item_demotion(const struct store_item *item, const char *code);

#endif
