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

/* MESSAGE_IDs of key events (generated once with systemd-id128 new). */
#define MSGID_STARTED          "6f0b3c5e1d8a4f2c9b7e0a1d2c3b4a51"
#define MSGID_READY            "a1c4e7f0b2d54e8a9c6f1b3d5e7a9c02"
#define MSGID_RELOADED         "3d9e1f7a5b2c4d6e8f0a1b2c3d4e5f63"
#define MSGID_RELOAD_FAILED    "c8b7a6f5e4d34c2b1a0f9e8d7c6b5a74"
#define MSGID_DB_LOST          "5e4d3c2b1a0f4e9d8c7b6a5f4e3d2c85"
#define MSGID_DB_RESTORED      "9a8b7c6d5e4f4a3b2c1d0e9f8a7b6c96"
#define MSGID_PROVIDER_PAUSED  "2b3c4d5e6f7a4b8c9d0e1f2a3b4c5da7"
#define MSGID_PROVIDER_RESUMED "e1f2a3b4c5d64e7f8a9b0c1d2e3f4ab8"
#define MSGID_REVOKED          "7c6b5a4f3e2d4c1b0a9f8e7d6c5b4ac9"
#define MSGID_REFRESH_FAILED   "4f5e6d7c8b9a4f0e1d2c3b4a5f6e7dda"
#define MSGID_STOPPING         "b0c1d2e3f4a54b6c7d8e9f0a1b2c3deb"
#define MSGID_CONFIG_ERROR     "d2e3f4a5b6c74d8e9f0a1b2c3d4e5ffc"

/* Optional structured context of a record; zero/NULL members are omitted. */
struct log_ctx {
    int64_t account_id; /* 0 = none */
    const char *provider;
    const char *error;      /* an error code or short reason, never a secret */
    int http_status;        /* 0 = none */
    const char *expires_at; /* ISO 8601 */
};

/* ident is the program name; decides journald vs stderr once. */
void log_init(const char *ident);
void log_set_level(int level); /* records above level are dropped */
int log_get_level(void);
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
