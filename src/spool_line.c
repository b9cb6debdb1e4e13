/*
 * spool_line.c — the spool's line format (spool_line.h; the journal that
 * holds the lines is spool.c).
 *
 * Each item line is one result: "S2", the account id, provider, expiry
 * (microseconds), the four token ciphertexts exactly as the database will hold
 * them, scope and token type (urlsafe base64), and a keyed BLAKE2b tag of all
 * that under the primary Fernet key (keyring_tag). The tokens are already
 * Fernet ciphertext, so the spool holds no plaintext token without encrypting
 * them a second time (which cost a quarter of the daemon's CPU); the tag
 * detects damage and stops anyone without the key from writing a line the
 * daemon would replay (say, one account's token stored under another).
 * A partial result (a rotated refresh token without a usable access token)
 * is a "P2" line: account id, provider, retry time (microseconds), the old
 * and new refresh token and the id token ciphertexts, the error code (as
 * text), and the same kind of tag; "S2" lines are unchanged by it.
 * The provider is its id (0, 1, 2) for google, github and microsoft, and its
 * name for any other (a generic provider's id is only good for one process:
 * config.h); a name starts with a letter, so the two never look alike, and a
 * line of one of the three reads as it always did.
 * No released version wrote any other format: the first one (a Fernet token
 * over the item's JSON) lived for two hours of development on 2026-11-27
 * (4347c3e..4dc01e4) and was never tagged or shipped, so it is not read; such
 * a line would be reported and its segment kept aside (*.bad) like damage.
 * A settled line, "D2", names the journal file (its id) and the ordinals of
 * items in it that are settled, under the same kind of tag.
 */
#include "spool_line.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "stored_token.h"

#define SPOOL_LINE_MAGIC       "S2 "
#define SPOOL_PARTIAL_MAGIC    "P2 "              /* a partial result (store.h) */
#define SPOOL_TAG_PERSONAL     "oauthrd-spool-v2" /* exactly KEYRING_TAG_PERSONAL_BYTES */
#define SPOOL_TAG_CHARS        44                 /* urlsafe base64 of 32 bytes, padded */
#define SPOOL_FIELDS           9                  /* between the magic and the tag */
#define SPOOL_PARTIAL_FIELDS   7
#define SPOOL_SETTLED_MAGIC    "D2 "
#define SPOOL_SETTLED_PER_LINE 512 /* ordinals per settled line */
/* Expiries are whole microseconds below this (the year 2096: a token that
 * lives longer is not real). Below it, microseconds -> seconds as a double ->
 * microseconds is exact, which expiry_usec_is_stable() checks all the same. */
#define SPOOL_MAX_EXPIRY_USEC INT64_C(4000000000000000)

_Static_assert(sizeof SPOOL_TAG_PERSONAL - 1 == KEYRING_TAG_PERSONAL_BYTES,
               "the tag's personalisation is exactly 16 bytes");
_Static_assert(sizeof SPOOL_LINE_MAGIC == sizeof SPOOL_PARTIAL_MAGIC, "magics of one length");

/* Ciphertext (Fernet tokens, urlsafe base64) never holds a space or newline,
 * so it goes into a line as it is; anything else would break the format. A row
 * of django-fernet-fields holds "\x" + the token's hex (stored_token.h), and
 * its results are spooled in that form, exactly as the database will hold them. */
static bool is_ciphertext(const char *s)
{
    if (s != NULL && s[0] == '\\' && s[1] == 'x')
        return stored_token_form(s, strlen(s)) == STORED_FORM_BYTEA_HEX;
    /* strspn is table-driven: a character loop here was 2.5 % of the daemon.
     * Padded base64 comes in quanta of four characters, which also keeps "-"
     * (no id token) from passing for one. */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_=";
    if (s == NULL)
        return false;
    size_t n = strspn(s, alphabet);
    return n > 0 && s[n] == '\0' && n % 4 == 0;
}

/* The expiry as the reader will see it again: usec -> seconds -> usec unchanged. */
static bool expiry_usec_is_stable(int64_t usec)
{
    return usec >= 0 && usec < SPOOL_MAX_EXPIRY_USEC && llround(((double)usec / 1e6) * 1e6) == usec;
}

/* Microseconds since the epoch, the spool's exact representation of an expiry;
 * false for what could not be read back as the same value. */
static bool expiry_to_usec(double t, int64_t *usec)
{
    if (!(t >= 0 && t < (double)SPOOL_MAX_EXPIRY_USEC / 1e6))
        return false;
    *usec = llround(t * 1e6);
    return expiry_usec_is_stable(*usec);
}

static void put_ciphertext(struct strbuf *sb, const char *ct)
{
    strbuf_append(sb, " ", 1);
    if (ct)
        strbuf_puts(sb, ct);
    else
        strbuf_append(sb, "-", 1);
}

/* Text that is not a secret (scope, token type) but may hold any byte but NUL:
 * "-" for none, else ':' and its urlsafe base64 (so "" stays distinct). */
static void put_text(struct strbuf *sb, const char *text)
{
    if (!text) {
        strbuf_append(sb, " -", 2);
        return;
    }
    size_t len = strlen(text);
    size_t enc = b64url_encoded_len(len);
    char *b = malloc(enc + 1);
    if (!b) {
        sb->oom = true;
        return;
    }
    b64url_encode_public((const uint8_t *)text, len, b, enc + 1);
    strbuf_append(sb, " :", 2);
    strbuf_append(sb, b, enc);
    free(b);
}

/* Closes the line that starts at start with its keyed tag and a newline. */
static int append_tag(struct strbuf *sb, const struct keyring *kr, size_t start)
{
    strbuf_append(sb, " ", 1);
    if (sb->oom)
        return -1;
    uint8_t tag[KEYRING_TAG_BYTES];
    if (keyring_tag(kr, SPOOL_TAG_PERSONAL, sb->data + start, sb->len - start, tag) < 0)
        return -1;
    char tag64[SPOOL_TAG_CHARS + 1];
    b64url_encode_public(tag, sizeof tag, tag64, sizeof tag64);
    strbuf_append(sb, tag64, SPOOL_TAG_CHARS);
    strbuf_append(sb, "\n", 1);
    return sb->oom ? -1 : 0;
}

/* Whether p can be written: a named id, or a generic id with a name. */
static bool provider_writable(enum provider_id p)
{
    return (int)p >= 0 && p < PROVIDER_MAX &&
           (p < PROVIDER_NAMED_COUNT || strcmp(provider_id_name(p), "unknown") != 0);
}

/* "id provider usec": the provider as its digit, or as its name (see the top). */
static void put_head(struct strbuf *sb, const char *magic, int64_t id, enum provider_id p,
                     int64_t usec)
{
    if (p < PROVIDER_NAMED_COUNT)
        strbuf_printf(sb, "%s%" PRId64 " %d %" PRId64, magic, id, (int)p, usec);
    else
        strbuf_printf(sb, "%s%" PRId64 " %s %" PRId64, magic, id, provider_id_name(p), usec);
}

/*
 * A provider field: a named provider's digit, or a generic provider's name,
 * which gets an id in this process if it has none yet (its section may be
 * gone from the config: the result is written all the same).
 */
static bool parse_provider(const char *f, enum provider_id *out)
{
    if (f[0] >= '0' && f[0] <= '9') {
        if (f[1] != '\0' || f[0] - '0' >= PROVIDER_NAMED_COUNT)
            return false;
        *out = (enum provider_id)(f[0] - '0');
        return true;
    }
    int id = provider_id_register(f);
    if (id < 0)
        return false;
    *out = (enum provider_id)id;
    return true;
}

/*
 * A partial result: "P2 id provider retry_usec old refresh id_token error
 * tag". No access token, expiry, scope or token type: the database keeps its
 * own; the error and retry time record the failed attempt.
 */
static int append_partial(struct strbuf *sb, const struct keyring *kr, const struct store_item *it)
{
    int64_t usec;
    if (!is_ciphertext(it->old_refresh_ct) || !is_ciphertext(it->refresh_ct) ||
        (it->id_token_ct && !is_ciphertext(it->id_token_ct)) || !provider_writable(it->provider) ||
        !expiry_to_usec(it->retry_at, &usec))
        return -1;
    size_t start = sb->len;
    put_head(sb, SPOOL_PARTIAL_MAGIC, it->account_id, it->provider, usec);
    put_ciphertext(sb, it->old_refresh_ct);
    put_ciphertext(sb, it->refresh_ct);
    put_ciphertext(sb, it->id_token_ct);
    put_text(sb, it->error);
    return append_tag(sb, kr, start);
}

/*
 * Appends one line for it: "S2 id provider expiry_usec old access refresh
 * id_token scope token_type tag". The tokens are the Fernet ciphertext the
 * database will hold (already encrypted and authenticated, so not encrypted
 * again); the keyed tag binds them to this account and detects any damage.
 */
int spool_line_append(struct strbuf *sb, const struct keyring *kr, const struct store_item *it)
{
    if (store_item_is_partial(it))
        return append_partial(sb, kr, it);
    int64_t usec;
    if (!is_ciphertext(it->old_refresh_ct) || !is_ciphertext(it->access_ct) ||
        !is_ciphertext(it->refresh_ct) || (it->id_token_ct && !is_ciphertext(it->id_token_ct)) ||
        !provider_writable(it->provider) || !expiry_to_usec(it->expires_at, &usec))
        return -1;
    size_t start = sb->len;
    put_head(sb, SPOOL_LINE_MAGIC, it->account_id, it->provider, usec);
    put_ciphertext(sb, it->old_refresh_ct);
    put_ciphertext(sb, it->access_ct);
    put_ciphertext(sb, it->refresh_ct);
    put_ciphertext(sb, it->id_token_ct);
    put_text(sb, it->scope);
    put_text(sb, it->token_type);
    return append_tag(sb, kr, start);
}

/*
 * "D2 <file id> <ordinal>,<ordinal>,... <tag>": these items of this file are
 * settled, so a replay after a crash does not write them again. Tagged like
 * an item line: a damaged or planted one would hide a result that must be
 * replayed. Written with the next items (same write, same fdatasync), so
 * recording costs no system call of its own; if a crash loses the last ones,
 * those items are replayed and the compare-and-swap finds them written.
 */
int spool_line_append_settled(struct strbuf *sb, const struct keyring *kr, int64_t file_id,
                              const uint32_t *ord, size_t n)
{
    for (size_t i = 0; i < n; i += SPOOL_SETTLED_PER_LINE) {
        size_t start = sb->len;
        strbuf_printf(sb, "%s%" PRId64 " ", SPOOL_SETTLED_MAGIC, file_id);
        size_t end = i + SPOOL_SETTLED_PER_LINE < n ? i + SPOOL_SETTLED_PER_LINE : n;
        for (size_t k = i; k < end; k++)
            strbuf_printf(sb, k == i ? "%" PRIu32 : ",%" PRIu32, ord[k]);
        if (append_tag(sb, kr, start) < 0)
            return -1;
    }
    return 0;
}

/* Splits line[0..len) at single spaces into at most max fields (NUL-terminating
 * them in place); returns the count, or max + 1 when there are more. */
static size_t split_fields(char *line, size_t len, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line, *end = line + len;
    while (p <= end) {
        char *sp = memchr(p, ' ', (size_t)(end - p));
        if (n == max)
            return max + 1;
        fields[n++] = p;
        if (!sp) {
            *end = '\0';
            break;
        }
        *sp = '\0';
        p = sp + 1;
    }
    return n;
}

/* A decimal integer exactly as "%" PRId64 prints it (no '+', no leading zeros,
 * no "-0"), within [min, max]. */
static bool parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    bool neg = *s == '-';
    s += neg;
    if (*s == '\0' || (*s == '0' && (s[1] != '\0' || neg)))
        return false;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
    for (; *s; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (d > 9 || v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    int64_t r = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    if (r < min || r > max)
        return false;
    *out = r;
    return true;
}

/* "-" -> NULL (*ok untouched); else a copy, or *ok = false. */
static char *dup_ciphertext(const char *f, bool may_be_null, bool *ok)
{
    if (may_be_null && strcmp(f, "-") == 0)
        return NULL;
    char *s = is_ciphertext(f) ? strdup(f) : NULL;
    if (!s)
        *ok = false;
    return s;
}

static char *dup_text(const char *f, bool *ok)
{
    if (strcmp(f, "-") == 0)
        return NULL;
    size_t len = strlen(f);
    uint8_t *out = len > 0 && f[0] == ':' ? malloc(len) : NULL;
    size_t got = 0;
    if (!out || b64url_decode_public(f + 1, len - 1, out, len, &got) < 0 ||
        memchr(out, '\0', got) != NULL) {
        free(out);
        *ok = false;
        return NULL;
    }
    out[got] = '\0';
    return (char *)out;
}

/*
 * Checks the tag of a line that starts with a known magic and splits what lies
 * between magic and tag into nfields fields (in place). *verified tells a
 * damaged or foreign line (the tag does not verify under any key) from one
 * that verifies but does not have the right shape.
 */
static bool line_fields(const struct keyring *kr, char *line, size_t len, char **f, size_t nfields,
                        bool *verified)
{
    *verified = false;
    char *last = memrchr(line, ' ', len);
    if (!last || (size_t)(line + len - (last + 1)) != SPOOL_TAG_CHARS)
        return false;
    uint8_t tag[KEYRING_TAG_BYTES];
    size_t taglen = 0;
    if (b64url_decode_public(last + 1, SPOOL_TAG_CHARS, tag, sizeof tag, &taglen) < 0 ||
        taglen != sizeof tag ||
        !keyring_tag_verify(kr, SPOOL_TAG_PERSONAL, line, (size_t)(last + 1 - line), tag, NULL))
        return false;
    *verified = true;
    size_t magic = strlen(SPOOL_LINE_MAGIC); /* every magic has this length */
    if ((size_t)(last - line) < magic)
        return false; /* magic + tag, nothing between */
    return split_fields(line + magic, (size_t)(last - line) - magic, f, nfields) == nfields;
}

/*
 * The head both kinds of line share: the verified fields (into f), then the
 * account id, provider and a time in microseconds (into *usec). Returns a new
 * rotated item with those set, which the caller owns, or NULL.
 */
static struct store_item *item_head(const struct keyring *kr, char *line, size_t len, char **f,
                                    size_t nfields, bool *verified, int64_t *usec)
{
    if (!line_fields(kr, line, len, f, nfields, verified))
        return NULL;
    int64_t id;
    enum provider_id prov;
    if (!parse_int64(f[0], INT64_MIN, INT64_MAX, &id) || !parse_provider(f[1], &prov) ||
        !parse_int64(f[2], 0, SPOOL_MAX_EXPIRY_USEC - 1, usec) || !expiry_usec_is_stable(*usec))
        return NULL;
    struct store_item *it = calloc(1, sizeof *it);
    if (!it)
        return NULL;
    it->kind = STORE_REFRESHED;
    it->rotated = true;
    it->account_id = id;
    it->provider = prov;
    return it;
}

/* Reads one "S2 ..." line (see append_item). */
static struct store_item *item_from_line(const struct keyring *kr, char *line, size_t len,
                                         bool *verified)
{
    char *f[SPOOL_FIELDS];
    int64_t usec;
    struct store_item *it = item_head(kr, line, len, f, SPOOL_FIELDS, verified, &usec);
    if (!it)
        return NULL;
    bool ok = true;
    it->expires_at = (double)usec / 1e6;
    it->old_refresh_ct = dup_ciphertext(f[3], false, &ok);
    it->access_ct = dup_ciphertext(f[4], false, &ok);
    it->refresh_ct = dup_ciphertext(f[5], false, &ok);
    it->id_token_ct = dup_ciphertext(f[6], true, &ok);
    it->scope = dup_text(f[7], &ok);
    it->token_type = dup_text(f[8], &ok);
    if (!ok) {
        store_item_free(it);
        return NULL;
    }
    return it;
}

/* Reads one "P2 ..." line (see append_partial). */
static struct store_item *partial_from_line(const struct keyring *kr, char *line, size_t len,
                                            bool *verified)
{
    char *f[SPOOL_PARTIAL_FIELDS];
    int64_t usec;
    struct store_item *it = item_head(kr, line, len, f, SPOOL_PARTIAL_FIELDS, verified, &usec);
    if (!it)
        return NULL;
    bool ok = true;
    it->retry_at = (double)usec / 1e6;
    it->old_refresh_ct = dup_ciphertext(f[3], false, &ok);
    it->refresh_ct = dup_ciphertext(f[4], false, &ok);
    it->id_token_ct = dup_ciphertext(f[5], true, &ok);
    char *error = dup_text(f[6], &ok);
    /* A partial result is told from a full one by its error: it must be there. */
    if (ok && error && error[0] != '\0' && strlen(error) < sizeof it->error)
        memcpy(it->error, error, strlen(error) + 1);
    else
        ok = false;
    free(error);
    if (!ok) {
        store_item_free(it);
        return NULL;
    }
    return it;
}

/* One line of a segment; msg says why on NULL. */
struct store_item *spool_line_read(const struct keyring *kr, char *line, size_t len,
                                   const char *path, size_t lineno, char *msg, size_t msglen)
{
    struct store_item *it = NULL;
    size_t magic = strlen(SPOOL_LINE_MAGIC);
    bool partial = len >= magic && memcmp(line, SPOOL_PARTIAL_MAGIC, magic) == 0;
    if (partial || (len >= magic && memcmp(line, SPOOL_LINE_MAGIC, magic) == 0)) {
        bool verified;
        it = partial ? partial_from_line(kr, line, len, &verified)
                     : item_from_line(kr, line, len, &verified);
        if (!it && !verified)
            snprintf(msg, msglen,
                     "spool: %.1024s line %zu does not verify (damaged, or made "
                     "with a key that is no longer loaded)",
                     path, lineno);
    }
    if (!it && msg[0] == '\0')
        snprintf(msg, msglen, "spool: %.1024s line %zu is not a valid result", path, lineno);
    return it;
}

bool spool_line_read_settled(const struct keyring *kr, int64_t id, char *line, size_t len,
                             struct spool_ords *set, bool *verified)
{
    char *f[2];
    int64_t fid;
    if (!line_fields(kr, line, len, f, 2, verified) ||
        !parse_int64(f[0], INT64_MIN, INT64_MAX, &fid) || fid != id)
        return false;
    for (char *p = f[1], *next; *p; p = next) {
        char *comma = strchr(p, ',');
        next = comma ? comma + 1 : p + strlen(p);
        if (comma)
            *comma = '\0';
        int64_t ord;
        if (!parse_int64(p, 0, SPOOL_ORD_MAX, &ord))
            return false;
        if (set->n == set->cap) {
            size_t c = set->cap ? set->cap * 2 : 256;
            uint32_t *q = realloc(set->ord, c * sizeof *q);
            if (!q)
                return true; /* not marked: replayed, and found written */
            set->ord = q;
            set->cap = c;
        }
        set->ord[set->n++] = (uint32_t)ord;
    }
    return true;
}

bool spool_line_is_settled(const char *line, size_t len)
{
    size_t magic = strlen(SPOOL_SETTLED_MAGIC);
    return len >= magic && memcmp(line, SPOOL_SETTLED_MAGIC, magic) == 0;
}
