/*
 * spool.c — durable segments of results that carry a rotated refresh token
 * (spool.h). It owns the files under <state_directory>/spool and the count of
 * unsettled items per segment; it never talks to the database and never
 * decides what a result means.
 *
 * Each line of a segment is one item: "S2", the account id, provider, expiry
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
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "b64.h"
#include "stored_token.h"
#include "secret.h"
#include "strbuf.h"

#define SEGMENT_PREFIX "seg-"
#define SEGMENT_SUFFIX ".spool"

#define SPOOL_LINE_MAGIC     "S2 "
#define SPOOL_PARTIAL_MAGIC  "P2 "              /* a partial result (store.h) */
#define SPOOL_TAG_PERSONAL   "oauthrd-spool-v2" /* exactly KEYRING_TAG_PERSONAL_BYTES */
#define SPOOL_TAG_CHARS      44                 /* urlsafe base64 of 32 bytes, padded */
#define SPOOL_FIELDS         9                  /* between the magic and the tag */
#define SPOOL_PARTIAL_FIELDS 7
/* Expiries are whole microseconds below this (the year 2096: a token that
 * lives longer is not real). Below it, microseconds -> seconds as a double ->
 * microseconds is exact, which expiry_usec_is_stable() checks all the same. */
#define SPOOL_MAX_EXPIRY_USEC INT64_C(4000000000000000)

_Static_assert(sizeof SPOOL_TAG_PERSONAL - 1 == KEYRING_TAG_PERSONAL_BYTES,
               "the tag's personalisation is exactly 16 bytes");
_Static_assert(sizeof SPOOL_LINE_MAGIC == sizeof SPOOL_PARTIAL_MAGIC, "magics of one length");

struct segment {
    int64_t id;
    size_t remaining;
};

struct spool {
    char *dir;
    int dirfd;
    int64_t next_id;
    struct segment *segs;
    size_t nsegs, capsegs;
    struct strbuf buf; /* the segment being written; kept to reuse its memory */
};

static void segment_path(const struct spool *sp, int64_t id, char *buf, size_t len)
{
    snprintf(buf, len, "%s/" SEGMENT_PREFIX "%020" PRId64 SEGMENT_SUFFIX, sp->dir, id);
}

struct spool *spool_open(const char *state_dir, char *err, size_t errlen)
{
    struct spool *sp = calloc(1, sizeof *sp);
    if (!sp) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (asprintf(&sp->dir, "%s/spool", state_dir) < 0) {
        free(sp);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (mkdir(sp->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create spool directory %s: %s", sp->dir, strerror(errno));
        spool_close(sp);
        return NULL;
    }
    sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        snprintf(err, errlen, "cannot open spool directory %s: %s", sp->dir, strerror(errno));
        spool_close(sp);
        return NULL;
    }
    /* Ids only need to be unique and increasing within this directory: start
     * from the clock so a restart never reuses a replayed segment's name. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sp->next_id = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    return sp;
}

static int track_segment(struct spool *sp, int64_t id, size_t n)
{
    if (sp->nsegs == sp->capsegs) {
        size_t cap = sp->capsegs ? sp->capsegs * 2 : 16;
        struct segment *s = realloc(sp->segs, cap * sizeof *s);
        if (!s)
            return -1;
        sp->segs = s;
        sp->capsegs = cap;
    }
    sp->segs[sp->nsegs++] = (struct segment){.id = id, .remaining = n};
    return 0;
}

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
static int append_item(struct strbuf *sb, const struct keyring *kr, const struct store_item *it)
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

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes data as the file path (through path.tmp): whole and durable, or not at all. */
static int write_durably(struct spool *sp, const char *path, const char *data, size_t len,
                         char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create spool segment %s: %s", tmp, strerror(errno));
        return -1;
    }
    bool ok = write_all(fd, data, len) == 0 && fsync(fd) == 0;
    int saved = ok ? 0 : errno;
    ok = close(fd) == 0 && ok;
    /* rename + directory fsync: the segment appears whole or not at all. */
    ok = ok && rename(tmp, path) == 0 && fsync(sp->dirfd) == 0;
    if (!ok) {
        snprintf(err, errlen, "cannot write spool segment %s: %s", path,
                 strerror(saved ? saved : errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int spool_write(struct spool *sp, const struct keyring *kr, struct store_item *const *items,
                size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    strbuf_reset(&sp->buf);
    for (size_t i = 0; i < n; i++)
        if (append_item(&sp->buf, kr, items[i]) < 0) {
            snprintf(err, errlen, "%s",
                     sp->buf.oom ? "out of memory building a spool segment"
                                 : "a result cannot be spooled (not ciphertext, "
                                   "or no key)");
            return -1;
        }
    int64_t id = sp->next_id++;
    char path[4096];
    segment_path(sp, id, path, sizeof path);
    if (write_durably(sp, path, sp->buf.data, sp->buf.len, err, errlen) < 0)
        return -1;
    if (track_segment(sp, id, n) < 0) {
        snprintf(err, errlen, "out of memory tracking spool segment");
        return -1; /* the file stays and is replayed at the next start */
    }
    for (size_t i = 0; i < n; i++)
        items[i]->spool_id = id;
    return 0;
}

int spool_set_aside(struct spool *sp, const struct keyring *kr, const struct store_item *item,
                    char *path, size_t pathlen, char *err, size_t errlen)
{
    struct strbuf sb = {0};
    if (append_item(&sb, kr, item) < 0) {
        strbuf_free(&sb);
        snprintf(err, errlen, "the result cannot be written as a spool line");
        return -1;
    }
    char seg[4096];
    segment_path(sp, sp->next_id++, seg, sizeof seg);
    snprintf(path, pathlen, "%s.bad", seg);
    int rc = write_durably(sp, path, sb.data, sb.len, err, errlen);
    strbuf_free(&sb);
    return rc;
}

void spool_release(struct spool *sp, int64_t id)
{
    for (size_t i = 0; i < sp->nsegs; i++) {
        if (sp->segs[i].id != id)
            continue;
        if (--sp->segs[i].remaining == 0) {
            char path[4096];
            segment_path(sp, id, path, sizeof path);
            unlink(path);
            sp->segs[i] = sp->segs[--sp->nsegs];
        }
        return;
    }
}

size_t spool_open_segments(const struct spool *sp)
{
    return sp->nsegs;
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
static struct store_item *read_line(const struct keyring *kr, char *line, size_t len,
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

static bool is_segment_name(const char *name, int64_t *id)
{
    size_t plen = strlen(SEGMENT_PREFIX), slen = strlen(SEGMENT_SUFFIX), len = strlen(name);
    if (len <= plen + slen || strncmp(name, SEGMENT_PREFIX, plen) != 0 ||
        strcmp(name + len - slen, SEGMENT_SUFFIX) != 0)
        return false;
    char *end;
    long long v = strtoll(name + plen, &end, 10);
    if (end != name + len - slen)
        return false;
    *id = v;
    return true;
}

/*
 * The longest line replay reads: far beyond any valid line (four token
 * ciphertexts, scope and token type, all from a provider answer of at most
 * PROVIDER_MAX_RESPONSE_BYTES = 64 KiB: under 300 KiB). A longer line is damage: skipped to its
 * end, never held whole, and the segment set aside like any damaged one.
 */
#define SPOOL_LINE_MAX (1024 * 1024)

/*
 * getline() with that bound. Returns the bytes read (newline included) and
 * sets *too_long for a line longer than SPOOL_LINE_MAX, whose content is then
 * not kept; 0 at the end of the file, -1 when out of memory. *buf (NUL
 * terminated) grows to at most SPOOL_LINE_MAX + 2 bytes.
 */
static ssize_t getline_bounded(char **buf, size_t *cap, FILE *f, bool *too_long)
{
    size_t len = 0;
    int c;
    *too_long = false;
    while ((c = getc_unlocked(f)) != EOF) {
        if (len < SPOOL_LINE_MAX) {
            if (len + 2 > *cap) {
                size_t want = *cap < 4096 ? 4096 : *cap * 2;
                if (want > SPOOL_LINE_MAX + 2)
                    want = SPOOL_LINE_MAX + 2;
                char *p = realloc(*buf, want);
                if (p == NULL)
                    return -1;
                *buf = p;
                *cap = want;
            }
            (*buf)[len] = (char)c;
        } else {
            *too_long = true;
        }
        len++;
        if (c == '\n')
            break;
    }
    if (*buf != NULL)
        (*buf)[len < SPOOL_LINE_MAX ? len : SPOOL_LINE_MAX] = '\0';
    return len > SSIZE_MAX ? SSIZE_MAX : (ssize_t)len;
}

/*
 * A segment is opened as what it must be: a regular file of the spool
 * directory itself, not a symlink (O_NOFOLLOW: a planted link cannot make the
 * daemon read, and set aside, a file elsewhere) nor a FIFO or device
 * (O_NONBLOCK, then fstat: nothing stalls the replay). NULL with errno set.
 */
static FILE *open_segment(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    struct stat st;
    int e = fstat(fd, &st) != 0 ? errno : !S_ISREG(st.st_mode) ? EINVAL : 0;
    if (e != 0) {
        close(fd);
        errno = e;
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

/* Replays one segment; returns the number of items handed over. */
static size_t replay_segment(struct spool *sp, const struct keyring *kr, int64_t id,
                             void (*add)(void *, struct store_item *),
                             void (*warn)(void *, const char *), void *ud,
                             struct spool_replay_stats *st)
{
    char path[4096], msg[8192];
    segment_path(sp, id, path, sizeof path);
    FILE *f = open_segment(path);
    if (!f) {
        snprintf(msg, sizeof msg, "spool: cannot read %.1024s: %s", path, strerror(errno));
        warn(ud, msg);
        st->bad_segments++;
        return 0;
    }
    struct store_item **items = NULL;
    size_t n = 0, cap = 0, bad = 0, lineno = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    bool too_long;
    while ((got = getline_bounded(&line, &linecap, f, &too_long)) > 0) {
        lineno++;
        if (too_long) {
            snprintf(msg, sizeof msg,
                     "spool: %.1024s line %zu is longer than any valid line (damaged); not read",
                     path, lineno);
            warn(ud, msg);
            bad++;
            continue;
        }
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        msg[0] = '\0';
        struct store_item *it = read_line(kr, line, len, path, lineno, msg, sizeof msg);
        if (!it) {
            warn(ud, msg);
            bad++;
            continue;
        }
        if (n == cap) {
            size_t c = cap ? cap * 2 : 64;
            struct store_item **p = realloc(items, c * sizeof *p);
            if (!p) {
                store_item_free(it);
                bad++;
                continue;
            }
            items = p;
            cap = c;
        }
        items[n++] = it;
    }
    free(line);
    fclose(f);

    st->bad_items += bad;
    if (bad > 0) {
        /* Keep the damaged file for the operator; its good items get a new segment. */
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.bad", path);
        rename(path, aside);
        snprintf(
            msg, sizeof msg,
            "spool: %zu damaged entries in %.1024s; the file is kept as %.1100s, %zu good entries "
            "are replayed",
            bad, path, aside, n);
        warn(ud, msg);
        st->bad_segments++;
        if (n > 0) {
            char err[ERRBUF_LEN];
            if (spool_write(sp, kr, items, n, err, sizeof err) < 0)
                warn(ud, err);
        }
    } else if (n == 0) {
        unlink(path);
    } else {
        if (track_segment(sp, id, n) < 0)
            warn(ud, "spool: out of memory tracking a replayed segment");
        for (size_t i = 0; i < n; i++)
            items[i]->spool_id = id;
    }
    for (size_t i = 0; i < n; i++)
        add(ud, items[i]);
    free(items);
    return n;
}

static int cmp_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void spool_replay(struct spool *sp, const struct keyring *kr,
                  void (*add)(void *ud, struct store_item *item),
                  void (*warn)(void *ud, const char *msg), void *ud,
                  struct spool_replay_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    DIR *dir = opendir(sp->dir);
    if (!dir) {
        char msg[4200];
        snprintf(msg, sizeof msg, "spool: cannot list %s: %s", sp->dir, strerror(errno));
        warn(ud, msg);
        return;
    }
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        int64_t id;
        if (!is_segment_name(de->d_name, &id))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 16;
            int64_t *p = realloc(ids, c * sizeof *p);
            if (!p)
                break;
            ids = p;
            cap = c;
        }
        ids[n++] = id;
    }
    closedir(dir);
    /* Oldest first: a later segment may hold a newer result for the same account.
     * (qsort's base must not be NULL, even for n == 0: an empty spool has no ids.) */
    if (n > 1)
        qsort(ids, n, sizeof *ids, cmp_int64);
    for (size_t i = 0; i < n; i++) {
        stats->segments++;
        stats->items += replay_segment(sp, kr, ids[i], add, warn, ud, stats);
        if (ids[i] >= sp->next_id)
            sp->next_id = ids[i] + 1;
    }
    free(ids);
}

void spool_close(struct spool *sp)
{
    if (!sp)
        return;
    if (sp->dirfd > 0)
        close(sp->dirfd);
    free(sp->segs);
    strbuf_free(&sp->buf);
    free(sp->dir);
    free(sp);
}
