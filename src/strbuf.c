/*
 * strbuf.c — growable strings and PostgreSQL array literals. Allocation
 * failure is sticky (sb->oom) so callers check once, after building.
 */
#include "strbuf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strbuf_init(struct strbuf *sb)
{
    memset(sb, 0, sizeof *sb);
}

void strbuf_reset(struct strbuf *sb)
{
    sb->len = 0;
    sb->oom = false;
    if (sb->data)
        sb->data[0] = '\0';
}

void strbuf_free(struct strbuf *sb)
{
    free(sb->data);
    strbuf_init(sb);
}

static bool strbuf_reserve(struct strbuf *sb, size_t extra)
{
    if (sb->oom)
        return false;
    if (sb->len + extra + 1 <= sb->cap)
        return true;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    char *p = realloc(sb->data, cap);
    if (!p) {
        sb->oom = true;
        return false;
    }
    sb->data = p;
    sb->cap = cap;
    return true;
}

void strbuf_append(struct strbuf *sb, const char *data, size_t len)
{
    if (!strbuf_reserve(sb, len))
        return;
    memcpy(sb->data + sb->len, data, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void strbuf_puts(struct strbuf *sb, const char *s)
{
    strbuf_append(sb, s, strlen(s));
}

void strbuf_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !strbuf_reserve(sb, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void pgarray_begin(struct strbuf *sb)
{
    strbuf_append(sb, "{", 1);
}

static void pgarray_sep(struct strbuf *sb)
{
    if (sb->len > 0 && sb->data[sb->len - 1] != '{')
        strbuf_append(sb, ",", 1);
}

void pgarray_text(struct strbuf *sb, const char *elem)
{
    pgarray_sep(sb);
    if (!elem) {
        strbuf_append(sb, "NULL", 4);
        return;
    }
    /* Always quote: a bare element could be read as NULL, or split on , { }. */
    strbuf_append(sb, "\"", 1);
    /* strcspn finds the next character to escape with glibc's vector code:
     * the elements are mostly kilobytes of ciphertext without any. */
    for (const char *p = elem; *p; p++) {
        size_t run = strcspn(p, "\"\\");
        strbuf_append(sb, p, run);
        p += run;
        if (!*p)
            break;
        char esc[2] = {'\\', *p};
        strbuf_append(sb, esc, 2);
    }
    strbuf_append(sb, "\"", 1);
}

void pgarray_int64(struct strbuf *sb, int64_t v)
{
    pgarray_sep(sb);
    strbuf_printf(sb, "%" PRId64, v);
}

void pgarray_end(struct strbuf *sb)
{
    strbuf_append(sb, "}", 1);
}
