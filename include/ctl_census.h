/*
 * ctl_census.h — the key census behind `oauth-refreshctl status --keys`
 * (ctl_census.c owns it): how many stored tokens each key of the list opens,
 * so an operator knows when an old key can be removed. Never prints a token,
 * a plaintext or a key.
 */
#ifndef OAUTH_CTL_CENSUS_H
#define OAUTH_CTL_CENSUS_H

#include <stdio.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "common.h"
#include "keys.h"

/*
 * The token columns of the accounts after id $1, in id order, at most $2:
 * what the census counts and rotate-keys re-encrypts.
 */
extern const char ctl_census_rows_sql[];

/*
 * Tries every non-empty token column of every account with the key list and
 * sets st["keys"] = {"keys": N, "tokens": T, "by_key": [n0, n1, ...],
 * "under_primary": n0, "under_older_keys": T - n0 - U, "undecryptable": U,
 * "rows_needing_rotation": R, "undecryptable_ids": [first 20 ids]}.
 * Returns 0, or -1 with a message (no token text) in err.
 */
int ctl_census_count(PGconn *conn, const struct keyring *kr, json_t *st, char *err,
                     size_t errlen) WUR;
/* The human lines for st["keys"] on out (nothing when absent). */
void ctl_census_render(FILE *out, const json_t *st);

#endif
