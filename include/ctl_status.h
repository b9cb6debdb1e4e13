/*
 * ctl_status.h — `oauth-refreshctl status` (declared in ctl.h) in two steps
 * (ctl_status.c owns them): a query step that reads the figures into one JSON
 * object, and a render step that prints that object for people. `--json`
 * prints the same object, so the two outputs never disagree.
 */
#ifndef OAUTH_CTL_STATUS_H
#define OAUTH_CTL_STATUS_H

#include <stdio.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "common.h"

struct config;

/*
 * Reads the status of the database behind conn (schema at version) into a
 * new object: "schema_version", "refreshable", "leased",
 * "rotate_keys_leased", "due", "failing", "revoked", "lead_time_s",
 * "next_due_at" and "next_due_in_s" (null when nothing is due), "now",
 * "providers" (present in oauth_accounts), "unconfigured" (of those, the ones
 * cfg has no section for; null without cfg), "last_errors" ({provider:
 * [{account_id, error, at, revoked, attempts}], newest first}). Returns 0 with
 * the object (the caller's reference) in *out, or an exit code after
 * printing why (cmd names the command).
 */
int ctl_status_query(PGconn *conn, const char *cmd, const struct config *cfg, int64_t lead_ms,
                     int version, json_t **out) WUR;

/* The human text of a status object (and of its "keys" census, when present), on out. */
void ctl_status_render(FILE *out, const json_t *st);

#endif
