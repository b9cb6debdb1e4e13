/*
 * ctl_rotate.h — key rotation for oauth-refreshctl: `rotate-keys` (declared in
 * ctl.h) and the key census behind `status --keys`, which counts how many
 * stored tokens each key of the list opens, so an operator knows when an old
 * key can be removed. Both read ciphertext only through keys.c and never print
 * a token, a plaintext or a key.
 */
#ifndef OAUTH_CTL_ROTATE_H
#define OAUTH_CTL_ROTATE_H

#include <jansson.h>
#include <libpq-fe.h>

#include "common.h"
#include "keys.h"

/*
 * Tries every non-empty token column of every account with the key list and
 * sets st["keys"] = {"keys": N, "tokens": T, "by_key": [n0, n1, ...],
 * "under_primary": n0, "under_older_keys": T - n0 - U, "undecryptable": U,
 * "rows_needing_rotation": R, "undecryptable_ids": [first 20 ids]}.
 * Returns 0, or -1 with a message (no token text) in err.
 */
int ctl_rotate_census(PGconn *conn, const struct keyring *kr, json_t *st, char *err,
                      size_t errlen) WUR;
/* The human lines for st["keys"] (nothing when absent). */
void ctl_rotate_print_census(const json_t *st);

#endif
