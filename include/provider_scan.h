/*
 * provider_scan.h — the few members of a token answer the dialects need, read
 * by a strict parser (jansson, in provider.c) or, when that refuses the body as
 * a whole, by the tolerant readers here: a bounded scanner over the top-level
 * JSON object only, and a reader for form-encoded answers (GitHub without
 * Accept: application/json). SPEC §6: a body a strict parser refuses (a number
 * out of range, duplicate keys, a bad escape elsewhere) must still yield a
 * rotated refresh token. Pure: no I/O, no logging; decoded strings are the
 * only copies made, and they are wiped when freed.
 */
#ifndef OAUTH_PROVIDER_SCAN_H
#define OAUTH_PROVIDER_SCAN_H

#include "common.h"

enum provider_member_id {
    PM_ACCESS_TOKEN,
    PM_REFRESH_TOKEN,
    PM_ID_TOKEN,
    PM_TOKEN_TYPE,
    PM_SCOPE,
    PM_ERROR,
    PM_ERROR_DESCRIPTION,
    PM_EXPIRES_IN,
    PM_COUNT
};

enum provider_member_kind {
    PMK_ABSENT = 0,
    PMK_STRING,   /* text: the decoded bytes, valid UTF-8 without NUL; len may be 0 */
    PMK_NUMBER,   /* num: its value (±HUGE_VAL when out of double's range) */
    PMK_NULL,     /* JSON null */
    PMK_OTHER,    /* true, false, an object or an array */
    PMK_UNUSABLE, /* a string that cannot be used as text: a lone surrogate, \u0000, a
                     bad escape, a raw control character or invalid UTF-8 */
};

struct provider_member {
    enum provider_member_kind kind;
    char *text; /* PMK_STRING only: malloc()ed, NUL-terminated, wiped on free */
    size_t len;
    double num; /* PMK_NUMBER only */
};

struct provider_members {
    struct provider_member m[PM_COUNT];
    /* The tolerant reader saw the whole body: the scanner reached the closing
     * brace of the top-level object, or the form reader read every pair. */
    bool complete;
    /* Members of ours that appeared more than once (the last one is kept). */
    unsigned duplicates;
};

/* The JSON member name of id ("access_token", ...). */
const char *provider_member_name(enum provider_member_id id);

/* Replaces member id with a copy of the string s (len bytes); -1 when out of memory. */
int provider_members_set_string(struct provider_members *pm, enum provider_member_id id,
                                const char *s, size_t len) WUR;
/* Replaces member id with a non-string kind (number: num is its value). */
void provider_members_set_other(struct provider_members *pm, enum provider_member_id id,
                                enum provider_member_kind kind, double num);

/*
 * Tolerant reading of body[0..len) as a JSON object. Only the top level is
 * looked at: nested values are skipped (depth counted, no recursion) and never
 * read. A member is taken only once the ',' or '}' after its value is seen, so
 * a body that stops in the middle never yields a cut value; reading stops at
 * the first byte that cannot continue the object, keeping what was taken
 * before. Duplicate members: the last one wins (see provider_scan.c).
 * Returns 0 when the body opens an object (out filled, possibly with no
 * members), 1 when it does not (out untouched but zeroed), -1 out of memory
 * (out cleared). Never reads past len; body need not be NUL-terminated.
 */
int provider_scan_json(const char *body, size_t len, struct provider_members *out) WUR;

/*
 * Reading of an application/x-www-form-urlencoded answer ("a=b&c=d", '+' is a
 * space, %XX escapes). All or nothing: returns 1 (out zeroed) unless every
 * pair has a name of [A-Za-z0-9_.-] and an '='; 0 when read; -1 out of memory.
 * Every value is a string (expires_in too).
 */
int provider_scan_form(const char *body, size_t len, struct provider_members *out) WUR;

/* Wipes and frees every member; out is zeroed. */
void provider_members_clear(struct provider_members *pm);

#endif
