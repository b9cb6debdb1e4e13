/*
 * log.c — the one sink for operator-facing records. It decides once, at
 * log_init(), whether stderr is connected to journald ($JOURNAL_STREAM names
 * stderr's device:inode): then records go out through the native protocol
 * (sd_journal_sendv) with PRIORITY, MESSAGE_ID and OAUTH_* fields; otherwise as
 * one readable line per record on stderr, written with a single write(2).
 * The formatting core is pure and shared by both paths and the tests.
 * It must never receive a token, secret or key; it also never lets a message
 * break its framing: control characters (newlines included) become spaces.
 * The module-level sink settings (ident, level, journal or not) are the only
 * process-wide state, set at startup and on reload.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Every record is sent from journal_send(): its CODE_FILE/LINE would say nothing. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#define LOG_MESSAGE_MAX 2048
#define LOG_RECORD_MAX  4096

static struct {
    char ident[64];
    int level;
    bool journal;      /* stderr is the journal's stream */
    bool force_stderr; /* tests, --check-config, ctl */
} sink = {"oauth-refreshd", LOG_INFO, false, false};

static const char *const prio_names[] = {
    "emergency", "alert", "critical", "error", "warning", "notice", "info", "debug",
};

static const char *prio_name(int prio)
{
    if (prio < LOG_EMERG || prio > LOG_DEBUG)
        return "info";
    return prio_names[prio];
}

int log_level_from_name(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"debug", LOG_DEBUG},  {"info", LOG_INFO}, {"notice", LOG_NOTICE}, {"warning", LOG_WARNING},
        {"warn", LOG_WARNING}, {"err", LOG_ERR},   {"error", LOG_ERR},
    };
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcmp(name, names[i].name) == 0)
            return names[i].level;
    }
    return -1;
}

/* True when $JOURNAL_STREAM ("dev:ino") names the file stderr is. */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char tail;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *ident)
{
    if (ident != NULL) {
        const char *base = strrchr(ident, '/');
        snprintf(sink.ident, sizeof(sink.ident), "%s", base != NULL ? base + 1 : ident);
    }
    sink.journal = stderr_is_journal();
}

void log_set_level(int level)
{
    if (level < LOG_EMERG)
        level = LOG_EMERG;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    sink.level = level;
}

void log_force_stderr(bool on)
{
    sink.force_stderr = on;
}

/*
 * Bounded appender: keeps buf NUL-terminated, silently truncates, and never
 * lets a control character through (they would break either framing).
 */
struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void out_putc(struct out *o, char c)
{
    if (o->len + 1 < o->cap) {
        o->buf[o->len++] = c;
        o->buf[o->len] = '\0';
    }
}

static void out_raw(struct out *o, const char *s)
{
    for (; *s != '\0'; s++)
        out_putc(o, *s);
}

static void out_clean(struct out *o, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        out_putc(o, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
    }
}

static void out_printf(struct out *o, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void out_printf(struct out *o, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    out_raw(o, tmp);
}

static void out_init(struct out *o, char *buf, size_t cap)
{
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    if (cap > 0)
        buf[0] = '\0';
}

size_t log_format_journal(char *buf, size_t buflen, int prio, const char *msgid,
                          const struct log_ctx *ctx, const char *message)
{
    struct out o;

    out_init(&o, buf, buflen);
    out_printf(&o, "PRIORITY=%d\n", prio);
    out_raw(&o, "MESSAGE=");
    out_clean(&o, message != NULL ? message : "");
    out_putc(&o, '\n');
    if (msgid != NULL) {
        out_raw(&o, "MESSAGE_ID=");
        out_clean(&o, msgid);
        out_putc(&o, '\n');
    }
    out_raw(&o, "SYSLOG_IDENTIFIER=");
    out_clean(&o, sink.ident);
    out_putc(&o, '\n');
    if (ctx != NULL) {
        if (ctx->account_id != 0)
            out_printf(&o, "OAUTH_ACCOUNT_ID=%lld\n", (long long)ctx->account_id);
        if (ctx->provider != NULL) {
            out_raw(&o, "OAUTH_PROVIDER=");
            out_clean(&o, ctx->provider);
            out_putc(&o, '\n');
        }
        if (ctx->error != NULL) {
            out_raw(&o, "OAUTH_ERROR=");
            out_clean(&o, ctx->error);
            out_putc(&o, '\n');
        }
        if (ctx->http_status != 0)
            out_printf(&o, "OAUTH_HTTP_STATUS=%d\n", ctx->http_status);
        if (ctx->expires_at != NULL) {
            out_raw(&o, "OAUTH_EXPIRES_AT=");
            out_clean(&o, ctx->expires_at);
            out_putc(&o, '\n');
        }
        if (ctx->token_fp != NULL && ctx->token_fp[0] != '\0') {
            out_raw(&o, "OAUTH_TOKEN_FP=");
            out_clean(&o, ctx->token_fp);
            out_putc(&o, '\n');
        }
        if (ctx->new_token_fp != NULL && ctx->new_token_fp[0] != '\0') {
            out_raw(&o, "OAUTH_NEW_TOKEN_FP=");
            out_clean(&o, ctx->new_token_fp);
            out_putc(&o, '\n');
        }
    }
    return o.len;
}

size_t log_format_line_at(char *buf, size_t buflen, time_t now, const char *ident, long pid,
                          int prio, const struct log_ctx *ctx, const char *message)
{
    struct out o;
    struct tm tm;
    char stamp[32] = "";
    bool any = false;

    out_init(&o, buf, buflen);
    if (gmtime_r(&now, &tm) != NULL)
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    out_raw(&o, stamp);
    out_putc(&o, ' ');
    out_clean(&o, ident != NULL ? ident : "");
    out_printf(&o, "[%ld]: %s: ", pid, prio_name(prio));
    out_clean(&o, message != NULL ? message : "");
    if (ctx != NULL) {
        const char *sep = " (";
        if (ctx->account_id != 0) {
            out_raw(&o, sep);
            out_printf(&o, "account=%lld", (long long)ctx->account_id);
            sep = " ";
            any = true;
        }
        if (ctx->provider != NULL) {
            out_raw(&o, sep);
            out_raw(&o, "provider=");
            out_clean(&o, ctx->provider);
            sep = " ";
            any = true;
        }
        if (ctx->error != NULL) {
            out_raw(&o, sep);
            out_raw(&o, "error=");
            out_clean(&o, ctx->error);
            sep = " ";
            any = true;
        }
        if (ctx->http_status != 0) {
            out_raw(&o, sep);
            out_printf(&o, "http_status=%d", ctx->http_status);
            sep = " ";
            any = true;
        }
        if (ctx->expires_at != NULL) {
            out_raw(&o, sep);
            out_raw(&o, "expires_at=");
            out_clean(&o, ctx->expires_at);
            sep = " ";
            any = true;
        }
        if (ctx->token_fp != NULL && ctx->token_fp[0] != '\0') {
            out_raw(&o, sep);
            out_raw(&o, "fp=");
            out_clean(&o, ctx->token_fp);
            sep = " ";
            any = true;
        }
        if (ctx->new_token_fp != NULL && ctx->new_token_fp[0] != '\0') {
            out_raw(&o, sep);
            out_raw(&o, "new_fp=");
            out_clean(&o, ctx->new_token_fp);
            any = true;
        }
        if (any)
            out_putc(&o, ')');
    }
    out_putc(&o, '\n');
    /* A truncated record still ends its line. */
    if (o.len > 0 && o.buf[o.len - 1] != '\n')
        o.buf[o.len - 1] = '\n';
    return o.len;
}

size_t log_format_line(char *buf, size_t buflen, int prio, const struct log_ctx *ctx,
                       const char *message)
{
    return log_format_line_at(buf, buflen, time(NULL), sink.ident, (long)getpid(), prio, ctx,
                              message);
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Sends the record formatted by log_format_journal: one iovec per line. */
static void journal_send(char *record, size_t len)
{
    struct iovec iov[16];
    int n = 0;
    char *p = record;
    char *end = record + len;

    while (p < end && n < (int)ARRAY_LEN(iov)) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        iov[n].iov_base = p;
        iov[n].iov_len = l;
        n++;
        p += l + (nl != NULL ? 1 : 0);
    }
    if (sd_journal_sendv(iov, n) < 0) {
        /* journald gone: keep the record on stderr rather than lose it. */
        sink.journal = false;
    }
}

void log_event(int prio, const char *msgid, const struct log_ctx *ctx, const char *fmt, ...)
{
    char message[LOG_MESSAGE_MAX];
    char record[LOG_RECORD_MAX];
    va_list ap;

    if (prio > sink.level)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    if (sink.journal && !sink.force_stderr) {
        size_t len = log_format_journal(record, sizeof(record), prio, msgid, ctx, message);
        journal_send(record, len);
        if (sink.journal)
            return;
    }
    size_t len = log_format_line(record, sizeof(record), prio, ctx, message);
    write_all(STDERR_FILENO, record, len);
}
