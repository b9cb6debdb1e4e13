/*
 * strbuf.h — a growable byte string, and the PostgreSQL array literals built
 * with it (text[] elements quoted so any byte but NUL survives). Used to send
 * a whole batch of results as one set-based statement. Never used for secrets:
 * it does not wipe what it frees.
 */
#ifndef OAUTH_STRBUF_H
#define OAUTH_STRBUF_H

#include "common.h"

struct strbuf {
    char *data; /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
    bool oom; /* sticky: an append failed */
};

void strbuf_init(struct strbuf *sb);
void strbuf_reset(struct strbuf *sb); /* len = 0, keeps capacity */
void strbuf_free(struct strbuf *sb);
void strbuf_append(struct strbuf *sb, const char *data, size_t len);
void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_printf(struct strbuf *sb, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* Array literals: call pgarray_begin, then one pgarray_* per element, then pgarray_end. */
void pgarray_begin(struct strbuf *sb);
void pgarray_text(struct strbuf *sb, const char *elem); /* NULL -> NULL element */
void pgarray_int64(struct strbuf *sb, int64_t v);
void pgarray_end(struct strbuf *sb);

#endif
