/*
 * provider_scan.c — the tolerant readers of a token answer: a scanner over the
 * top-level JSON object that takes only the members the dialects need, and a
 * reader for form-encoded answers. They run only when jansson refuses a body
 * as a whole (provider.c), so that one bad value elsewhere in an answer never
 * costs a rotated refresh token (SPEC §6).
 *
 * Bounds: every index is checked against len before it is read, nothing
 * recurses (nested values are skipped by counting depth), a decoded string is
 * never longer than its escaped text, and only the members of
 * provider_member_name() are copied. A needed string that cannot be text (a
 * lone surrogate, \u0000, a bad escape, a raw control character, invalid
 * UTF-8) is marked unusable rather than guessed at.
 *
 * Duplicate members: the last one wins. That is what ECMAScript's JSON.parse,
 * Python's json, Go's encoding/json and jansson without
 * JSON_REJECT_DUPLICATES all do, so it is what the provider's own stack and
 * its other clients see; refusing the answer as ambiguous would throw away
 * the only copy of a rotated refresh token, whereas the last value is at
 * worst as wrong as a refusal.
 */
#include "provider_scan.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

#define SCAN_NOT_FOUND  SIZE_MAX
#define SCAN_KEY_MAX    128 /* escaped key text longer than this is not one of ours */
#define SCAN_NUMBER_MAX 63  /* longer number literals are taken as out of range */

static const char *const member_names[PM_COUNT] = {
    [PM_ACCESS_TOKEN] = "access_token",
    [PM_REFRESH_TOKEN] = "refresh_token",
    [PM_ID_TOKEN] = "id_token",
    [PM_TOKEN_TYPE] = "token_type",
    [PM_SCOPE] = "scope",
    [PM_ERROR] = "error",
    [PM_ERROR_DESCRIPTION] = "error_description",
    [PM_EXPIRES_IN] = "expires_in",
};

const char *provider_member_name(enum provider_member_id id)
{
    return (unsigned)id < PM_COUNT ? member_names[id] : "";
}

static int member_lookup(const char *name, size_t len)
{
    for (int i = 0; i < PM_COUNT; i++)
        if (strlen(member_names[i]) == len && memcmp(member_names[i], name, len) == 0)
            return i;
    return -1;
}

/* ---- members ---- */

static void member_free(struct provider_member *m)
{
    if (m->text) {
        sodium_memzero(m->text, m->len);
        free(m->text);
    }
    memset(m, 0, sizeof(*m));
}

void provider_members_clear(struct provider_members *pm)
{
    if (!pm)
        return;
    for (int i = 0; i < PM_COUNT; i++)
        member_free(&pm->m[i]);
    memset(pm, 0, sizeof(*pm));
}

static void member_replace(struct provider_members *pm, enum provider_member_id id)
{
    if (pm->m[id].kind != PMK_ABSENT)
        pm->duplicates++;
    member_free(&pm->m[id]);
}

int provider_members_set_string(struct provider_members *pm, enum provider_member_id id,
                                const char *s, size_t len)
{
    char *t = malloc(len + 1);
    if (!t)
        return -1;
    memcpy(t, s, len);
    t[len] = '\0';
    member_replace(pm, id);
    pm->m[id].kind = PMK_STRING;
    pm->m[id].text = t;
    pm->m[id].len = len;
    return 0;
}

void provider_members_set_other(struct provider_members *pm, enum provider_member_id id,
                                enum provider_member_kind kind, double num)
{
    member_replace(pm, id);
    pm->m[id].kind = kind;
    pm->m[id].num = kind == PMK_NUMBER ? num : 0.0;
}

/* ---- text ---- */

/* RFC 3629 UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i - 1 < more)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += more + 1;
    }
    return true;
}

static size_t utf8_put(unsigned char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Four hex digits at s[i..i+4), all below end. */
static bool hex4(const char *s, size_t i, size_t end, unsigned *out)
{
    if (i > end || end - i < 4)
        return false;
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int d = parse_hex_digit(s[i + k]);
        if (d < 0)
            return false;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return true;
}

/* One \uXXXX escape (a surrogate pair as one) at s[*i] (just after "\u"). */
static bool decode_u_escape(const char *s, size_t *i, size_t end, unsigned *cp)
{
    unsigned hi;
    if (!hex4(s, *i, end, &hi))
        return false;
    *i += 4;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return false; /* a lone low surrogate */
    if (hi >= 0xD800 && hi <= 0xDBFF) {
        unsigned lo;
        if (end - *i < 6 || s[*i] != '\\' || s[*i + 1] != 'u' || !hex4(s, *i + 2, end, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
            return false; /* a high surrogate without its low half */
        *i += 6;
        hi = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    }
    *cp = hi;
    return hi != 0; /* \u0000 cannot be part of a C string */
}

/*
 * Decodes the JSON string text s[a..b) (between the quotes) into out, which
 * has room for b - a + 1 bytes (decoding never lengthens). Returns the length,
 * or -1 when the text is not usable.
 */
static long decode_json_string(const char *s, size_t a, size_t b, unsigned char *out)
{
    size_t o = 0, i = a;
    while (i < b) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            out[o++] = c;
            i++;
            continue;
        }
        if (b - i < 2)
            return -1;
        char e = s[i + 1];
        i += 2;
        unsigned cp;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[o++] = (unsigned char)e;
            break;
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u':
            if (!decode_u_escape(s, &i, b, &cp))
                return -1;
            o += utf8_put(out + o, cp);
            break;
        default:
            return -1;
        }
    }
    out[o] = '\0';
    return utf8_valid(out, o) ? (long)o : -1;
}

/* ---- the JSON scanner ---- */

static size_t skip_ws(const char *s, size_t len, size_t p)
{
    while (p < len && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r'))
        p++;
    return p;
}

/* Index of the quote closing the string that opens at s[p]; SCAN_NOT_FOUND when none. */
static size_t string_end(const char *s, size_t len, size_t p)
{
    for (size_t i = p + 1; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i;
    }
    return SCAN_NOT_FOUND;
}

/* Index just past the object or array that opens at s[p]; SCAN_NOT_FOUND when it never ends. */
static size_t nested_end(const char *s, size_t len, size_t p)
{
    size_t depth = 0;
    for (size_t i = p; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            i = string_end(s, len, i);
            if (i == SCAN_NOT_FOUND)
                return SCAN_NOT_FOUND;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return i + 1;
        }
    }
    return SCAN_NOT_FOUND;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t digits_end(const char *s, size_t len, size_t i)
{
    while (i < len && is_digit(s[i]))
        i++;
    return i;
}

/* Index just past the RFC 8259 number at s[p]; p itself when there is none. */
static size_t number_end(const char *s, size_t len, size_t p)
{
    size_t i = p;
    if (i < len && s[i] == '-')
        i++;
    if (i >= len || !is_digit(s[i]))
        return p;
    i = s[i] == '0' ? i + 1 : digits_end(s, len, i);
    if (i < len && s[i] == '.') {
        size_t d = digits_end(s, len, i + 1);
        if (d == i + 1)
            return p;
        i = d;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = digits_end(s, len, i);
        if (d == i)
            return p;
        i = d;
    }
    return i;
}

/* The value of a number literal; strtod gives ±HUGE_VAL beyond double's range. */
static double number_value(const char *s, size_t n)
{
    char buf[SCAN_NUMBER_MAX + 1];
    if (n > SCAN_NUMBER_MAX)
        return NAN;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return strtod(buf, NULL);
}

static bool literal_at(const char *s, size_t len, size_t p, const char *word)
{
    size_t n = strlen(word);
    return len - p >= n && memcmp(s + p, word, n) == 0;
}

/* Which of our members the key text s[a..b) names; -1 for none. */
static int key_id(const char *s, size_t a, size_t b)
{
    unsigned char name[SCAN_KEY_MAX + 1];
    if (b - a > SCAN_KEY_MAX)
        return -1;
    long n = decode_json_string(s, a, b, name);
    return n < 0 ? -1 : member_lookup((const char *)name, (size_t)n);
}

/* A value found by the scanner, not yet taken. */
struct scan_value {
    enum provider_member_kind kind;
    size_t a, b; /* string text, between the quotes */
    double num;
};

/* Takes a scanned value as member id: -1 out of memory. */
static int scan_take(struct provider_members *pm, int id, const char *s, const struct scan_value *v)
{
    if (v->kind != PMK_STRING) {
        provider_members_set_other(pm, (enum provider_member_id)id, v->kind, v->num);
        return 0;
    }
    unsigned char *t = malloc(v->b - v->a + 1);
    if (!t)
        return -1;
    long n = decode_json_string(s, v->a, v->b, t);
    member_replace(pm, (enum provider_member_id)id);
    if (n < 0) {
        sodium_memzero(t, v->b - v->a + 1);
        free(t);
        pm->m[id].kind = PMK_UNUSABLE;
        return 0;
    }
    pm->m[id].kind = PMK_STRING;
    pm->m[id].text = (char *)t;
    pm->m[id].len = (size_t)n;
    return 0;
}

/* Reads the value at s[p]; returns the index after it, or SCAN_NOT_FOUND. */
static size_t scan_value(const char *s, size_t len, size_t p, struct scan_value *v)
{
    memset(v, 0, sizeof(*v));
    char c = s[p];
    if (c == '"') {
        size_t e = string_end(s, len, p);
        if (e == SCAN_NOT_FOUND)
            return SCAN_NOT_FOUND;
        v->kind = PMK_STRING;
        v->a = p + 1;
        v->b = e;
        return e + 1;
    }
    if (c == '{' || c == '[') {
        v->kind = PMK_OTHER;
        return nested_end(s, len, p);
    }
    if (c == '-' || is_digit(c)) {
        size_t e = number_end(s, len, p);
        if (e == p)
            return SCAN_NOT_FOUND;
        v->kind = PMK_NUMBER;
        v->num = number_value(s + p, e - p);
        return e;
    }
    if (literal_at(s, len, p, "true") || literal_at(s, len, p, "false")) {
        v->kind = PMK_OTHER;
        return p + (c == 't' ? 4 : 5);
    }
    if (literal_at(s, len, p, "null")) {
        v->kind = PMK_NULL;
        return p + 4;
    }
    return SCAN_NOT_FOUND;
}

int provider_scan_json(const char *s, size_t len, struct provider_members *out)
{
    memset(out, 0, sizeof(*out));
    size_t p = skip_ws(s, len, 0);
    if (p >= len || s[p] != '{')
        return 1;
    p++;
    for (;;) {
        p = skip_ws(s, len, p);
        if (p >= len)
            return 0;
        if (s[p] == '}') {
            out->complete = true;
            return 0;
        }
        if (s[p] != '"')
            return 0;
        size_t kend = string_end(s, len, p);
        if (kend == SCAN_NOT_FOUND)
            return 0;
        int id = key_id(s, p + 1, kend);
        p = skip_ws(s, len, kend + 1);
        if (p >= len || s[p] != ':')
            return 0;
        p = skip_ws(s, len, p + 1);
        if (p >= len)
            return 0;
        struct scan_value v;
        size_t after = scan_value(s, len, p, &v);
        if (after == SCAN_NOT_FOUND)
            return 0;
        size_t q = skip_ws(s, len, after);
        if (q >= len || (s[q] != ',' && s[q] != '}'))
            return 0; /* the value is not known to be whole: do not take it */
        if (id >= 0 && scan_take(out, id, s, &v) < 0) {
            provider_members_clear(out);
            return -1;
        }
        if (s[q] == '}') {
            out->complete = true;
            return 0;
        }
        p = q + 1;
    }
}

/* ---- form-encoded answers ---- */

static bool form_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' ||
           c == '.' || c == '-';
}

/* Length of the name of the pair at s[i..e) when it is "name=...", else 0. */
static size_t form_name_len(const char *s, size_t i, size_t e)
{
    size_t k = i;
    while (k < e && form_name_char(s[k]))
        k++;
    return (k > i && k < e && s[k] == '=') ? k - i : 0;
}

static size_t form_pair_end(const char *s, size_t len, size_t i)
{
    while (i < len && s[i] != '&')
        i++;
    return i;
}

/* Percent-decodes s[a..b) into out (room for b - a + 1); -1 when not usable text. */
static long form_decode(const char *s, size_t a, size_t b, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = a; i < b; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (b - i < 3 || parse_hex_digit(s[i + 1]) < 0 || parse_hex_digit(s[i + 2]) < 0)
                return -1;
            c = (unsigned char)(parse_hex_digit(s[i + 1]) * 16 + parse_hex_digit(s[i + 2]));
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return utf8_valid(out, o) ? (long)o : -1;
}

static int form_take(struct provider_members *pm, int id, const char *s, size_t a, size_t b)
{
    unsigned char *t = malloc(b - a + 1);
    if (!t)
        return -1;
    long n = form_decode(s, a, b, t);
    member_replace(pm, (enum provider_member_id)id);
    if (n < 0) {
        sodium_memzero(t, b - a + 1);
        free(t);
        pm->m[id].kind = PMK_UNUSABLE;
        return 0;
    }
    pm->m[id].kind = PMK_STRING;
    pm->m[id].text = (char *)t;
    pm->m[id].len = (size_t)n;
    return 0;
}

int provider_scan_form(const char *s, size_t len, struct provider_members *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return 1;
    for (size_t i = 0; i <= len;) {
        size_t e = form_pair_end(s, len, i);
        if (form_name_len(s, i, e) == 0)
            return 1;
        i = e + 1;
    }
    for (size_t i = 0; i <= len;) {
        size_t e = form_pair_end(s, len, i);
        size_t n = form_name_len(s, i, e);
        int id = member_lookup(s + i, n);
        if (id >= 0 && form_take(out, id, s, i + n + 1, e) < 0) {
            provider_members_clear(out);
            return -1;
        }
        i = e + 1;
    }
    out->complete = true;
    return 0;
}
