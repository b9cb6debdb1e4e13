/*
 * log.h — the one way the programs speak to operators. Under systemd (when
 * $JOURNAL_STREAM names stderr's device:inode) records go to journald's native
 * protocol with PRIORITY, MESSAGE_ID and OAUTH_* fields; otherwise readable
 * lines go to stderr. Callers must never pass a token, secret or key: the
 * fields are for ids, provider names, error codes and times only.
 */
#ifndef OAUTH_LOG_H
#define OAUTH_LOG_H

#include <syslog.h>
#include <time.h>

#include "common.h"

/* MESSAGE_IDs of key events (generated once with systemd-id128 new; listed in
 * docs/journal-message-ids.md, which a test keeps in step with this list). */
#define MSGID_STARTED          "2ddc8e8776f5445fa348b1da5fd5d0e4"
#define MSGID_READY            "20f6817bbdbb4462a14909916ef92f57"
#define MSGID_RELOADED         "8b29e27d2a984fe18a8e2fefa43bc9e3"
#define MSGID_RELOAD_FAILED    "432f717f5f4c4392b7a6587506f776ee"
#define MSGID_DB_LOST          "624c8374aafe4e0ea5590e5ee0e8c876"
#define MSGID_DB_RESTORED      "e724fb39fd254fcaa00821320c321a46"
#define MSGID_PROVIDER_PAUSED  "095e5df5d7814b3288e4f2cabbdf1c12"
#define MSGID_PROVIDER_RESUMED "cd102e4dfc754568ac2be9fe948d1884"
#define MSGID_REVOKED          "b17aee900d3b4d67a75067eb0cb175cc"
#define MSGID_REFRESH_FAILED   "863118a2eed649c5addc24c698dadd51"
#define MSGID_STOPPING         "4e544bbaee5c4dafa4456c69107aa4c6"
#define MSGID_CONFIG_ERROR     "15ab70c92f3e4e03a0b5e2290a6d1dd5"
#define MSGID_LISTEN_DEAF      "77fc52f158b844cea5b8ba1a085ef735"

/* Optional structured context of a record; zero/NULL members are omitted. */
struct log_ctx {
    int64_t account_id; /* 0 = none */
    const char *provider;
    const char *error;      /* an error code or short reason, never a secret */
    int http_status;        /* 0 = none */
    const char *expires_at; /* ISO 8601 */
    /* token_fingerprint() (keys.h) of the refresh token an attempt used, and
     * of the one a rotation gave; never a token. */
    const char *token_fp;
    const char *new_token_fp;
};

/* ident is the program name; decides journald vs stderr once. */
void log_init(const char *ident);
void log_set_level(int level); /* records above level are dropped */
/* Forces stderr lines (tests, --check-config, oauth-refreshctl). */
void log_force_stderr(bool on);

void log_event(int prio, const char *msgid, const struct log_ctx *ctx, const char *fmt, ...)
    PRINTF_LIKE(4, 5);

#define log_debug(...)   log_event(LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define log_info(...)    log_event(LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_notice(...)  log_event(LOG_NOTICE, NULL, NULL, __VA_ARGS__)
#define log_warning(...) log_event(LOG_WARNING, NULL, NULL, __VA_ARGS__)
#define log_err(...)     log_event(LOG_ERR, NULL, NULL, __VA_ARGS__)

/*
 * The formatting core, exposed for tests: renders one record as journald
 * fields ("PRIORITY=6\nMESSAGE=...\n...") or as a stderr line into buf.
 */
size_t log_format_journal(char *buf, size_t buflen, int prio, const char *msgid,
                          const struct log_ctx *ctx, const char *message);
size_t log_format_line(char *buf, size_t buflen, int prio, const struct log_ctx *ctx,
                       const char *message);
/* log_format_line with the time, program name and pid given (deterministic tests). */
size_t log_format_line_at(char *buf, size_t buflen, time_t now, const char *ident, long pid,
                          int prio, const struct log_ctx *ctx, const char *message);
/* "debug".."err" -> LOG_*; -1 when unknown. */
int log_level_from_name(const char *name);

#endif
