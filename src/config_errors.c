/*
 * config_errors.c — the wording of configuration errors and warnings: every
 * problem found, each "file:line: [section] key: message", listed in file
 * order, at most CONFIG_MAX_ERRORS of them. Private to the loader
 * (config_load.h).
 *
 * The callers never pass a secret into a message; this file only formats and
 * orders what it is given.
 */
#include "config_load.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Formats "path[:line]: [[section] [key]: ]message" into out. An over-long
 * path or message is cut at outlen on purpose: the start says where. */
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
static void format_where(char *out, size_t outlen, const char *path, int line, const char *section,
                         const char *key, const char *msg)
{
    char where[ERRBUF_LEN];
    int n;

    if (line > 0)
        n = snprintf(where, sizeof(where), "%s:%d: ", path, line);
    else
        n = snprintf(where, sizeof(where), "%s: ", path);
    if (n < 0)
        n = 0;
    if (section != NULL && key != NULL)
        snprintf(out, outlen, "%s[%s] %s: %s", where, section, key, msg);
    else if (section != NULL)
        snprintf(out, outlen, "%s[%s]: %s", where, section, msg);
    else if (key != NULL)
        snprintf(out, outlen, "%s%s: %s", where, key, msg);
    else
        snprintf(out, outlen, "%s%s", where, msg);
}
#pragma GCC diagnostic pop

void config_add_error(struct config_loader *ld, int line, const char *section, const char *key,
                      const char *fmt, ...)
{
    char msg[ERRBUF_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct config_errors *e = ld->errs;
    if (e->count < CONFIG_MAX_ERRORS) {
        format_where(e->msg[e->count], sizeof(e->msg[0]), ld->path, line, section, key, msg);
        ld->error_line[e->count] = line;
        e->count++;
    } else if (!ld->overflowed) {
        ld->overflowed = true;
        snprintf(e->msg[CONFIG_MAX_ERRORS - 1], sizeof(e->msg[0]),
                 "%s: too many errors; only the first %d are shown", ld->path,
                 CONFIG_MAX_ERRORS - 1);
    }
}

void config_add_warning(struct config_loader *ld, int line, const char *section, const char *key,
                        const char *fmt, ...)
{
    char msg[ERRBUF_LEN], full[ERRBUF_LEN];
    va_list ap;

    if (ld->warn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    format_where(full, sizeof(full), ld->path, line, section, key, msg);
    ld->warn(ld->warn_ud, full);
}

/*
 * Errors are found in two passes (syntax while reading, values afterwards);
 * list them in file order, file-level ones (line 0) last, the overflow
 * notice (if any) staying at the very end. Stable insertion sort: n <= 32.
 */
void config_sort_errors(struct config_loader *ld)
{
    struct config_errors *e = ld->errs;
    size_t n = ld->overflowed ? e->count - 1 : e->count;
    char tmp[ERRBUF_LEN];

    for (size_t i = 1; i < n; i++) {
        int li = ld->error_line[i];
        unsigned ki = li > 0 ? (unsigned)li : UINT_MAX;
        size_t j = i;
        while (j > 0) {
            int lj = ld->error_line[j - 1];
            unsigned kj = lj > 0 ? (unsigned)lj : UINT_MAX;
            if (kj <= ki)
                break;
            j--;
        }
        if (j == i)
            continue;
        memcpy(tmp, e->msg[i], sizeof(tmp));
        memmove(e->msg[j + 1], e->msg[j], (i - j) * sizeof(e->msg[0]));
        memcpy(e->msg[j], tmp, sizeof(tmp));
        memmove(&ld->error_line[j + 1], &ld->error_line[j], (i - j) * sizeof(int));
        ld->error_line[j] = li;
    }
}
