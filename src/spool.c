/*
 * spool.c — the durable journal of results that carry a rotated refresh token
 * (spool.h). It owns the files under <state_directory>/spool, the one it
 * appends to, and the count of unsettled items per file; it never talks to the
 * database and never decides what a result means. The text of a line is
 * spool_line.c's.
 *
 * One journal file per process is appended to: each spool_write() is one
 * fdatasync() after a write() per SPOOL_WRITE_PIECE of lines (and, for a new
 * file, one fsync() of the directory), where it used to create a segment,
 * fsync it, rename it, fsync the directory and later unlink it. Items settled
 * since the last write are recorded in the same write ("D2" lines), so a
 * replay after a crash writes each held result once; the few settled after
 * the last write are replayed and the store's compare-and-swap finds them
 * written. A file is removed once every item in it is settled; a new one is
 * started when the current one is SPOOL_ROTATE_BYTES long. Files left by an
 * earlier run are never appended to (a crash may have torn their last line):
 * they are replayed, kept until their last item is settled, and then removed.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spool_line.h"
#include "strbuf.h"

#define SEGMENT_PREFIX "seg-"
#define SEGMENT_SUFFIX ".spool"

/*
 * Item ids (store_item.spool_id): the journal's generation in this process
 * above SPOOL_ORD_BITS, the item's ordinal in the file below, so that a
 * release names the line it settles. A journal takes at most SPOOL_ORD_MAX
 * items, and a new one is started once it is SPOOL_ROTATE_BYTES long.
 */
#define SPOOL_ROTATE_BYTES (64 * 1024 * 1024)

/* A journal file with unsettled items (the current one, or an older one). */
struct segment {
    int64_t id; /* the file's name */
    uint32_t gen;
    size_t remaining;
};

/* The journal being appended to: one per process, never one a replay read. */
struct journal {
    int fd; /* -1: none open; the next write starts one */
    int64_t id;
    uint32_t gen;
    uint32_t lines; /* item lines written (the next ordinal) */
    off_t size;     /* durable bytes */
    off_t unsynced; /* written after them by the spool_write under way */
    bool fresh;     /* created, its directory entry not yet made durable */
    /* Ordinals settled since the last write, recorded with the next one. */
    uint32_t *settled;
    size_t nsettled, capsettled;
};

struct spool {
    char *dir;
    int dirfd;
    int64_t next_id;
    struct segment *segs;
    size_t nsegs, capsegs;
    uint32_t next_gen;
    struct journal cur;
    struct keyring *kr; /* the last write's keys: spool_close records settled items with them */
    struct strbuf buf;  /* the lines being appended; kept to reuse its memory */
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
    sp->next_gen = 1;
    sp->cur.fd = -1;
    return sp;
}

static int track_segment(struct spool *sp, int64_t id, uint32_t gen, size_t n)
{
    if (sp->nsegs == sp->capsegs) {
        size_t cap = sp->capsegs ? sp->capsegs * 2 : 16;
        struct segment *s = realloc(sp->segs, cap * sizeof *s);
        if (!s)
            return -1;
        sp->segs = s;
        sp->capsegs = cap;
    }
    sp->segs[sp->nsegs++] = (struct segment){.id = id, .gen = gen, .remaining = n};
    return 0;
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

static int64_t item_spool_id(uint32_t gen, uint32_t ord)
{
    return ((int64_t)gen << SPOOL_ORD_BITS) | ord;
}

static struct segment *segment_of_gen(struct spool *sp, uint32_t gen)
{
    for (size_t i = 0; i < sp->nsegs; i++)
        if (sp->segs[i].gen == gen)
            return &sp->segs[i];
    return NULL;
}

/* Forgets a journal with nothing unsettled in it, and removes its file. */
static void segment_drop(struct spool *sp, struct segment *seg)
{
    char path[4096];
    segment_path(sp, seg->id, path, sizeof path);
    unlink(path);
    if (seg->gen == sp->cur.gen && sp->cur.fd >= 0) {
        close(sp->cur.fd);
        sp->cur.fd = -1;
        sp->cur.nsettled = 0;
    }
    *seg = sp->segs[--sp->nsegs];
}

/* Starts a new journal file (the current one, if any, is left to its items). */
static int journal_start(struct spool *sp, char *err, size_t errlen)
{
    if (sp->cur.fd >= 0)
        close(sp->cur.fd);
    sp->cur.fd = -1;
    sp->cur.nsettled = 0;
    int64_t id = sp->next_id++;
    char path[4096];
    segment_path(sp, id, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create spool journal %s: %s", path, strerror(errno));
        return -1;
    }
    uint32_t gen = sp->next_gen++;
    if (track_segment(sp, id, gen, 0) < 0) {
        close(fd);
        unlink(path);
        snprintf(err, errlen, "out of memory tracking a spool journal");
        return -1;
    }
    sp->cur = (struct journal){.fd = fd,
                               .id = id,
                               .gen = gen,
                               .fresh = true,
                               .settled = sp->cur.settled,
                               .capsettled = sp->cur.capsettled};
    return 0;
}

/*
 * A failed write or sync: the file is cut back to what was durable before; a
 * journal that cannot be cut back, or whose fdatasync failed (the kernel may
 * have dropped the pages), is written to no more; a journal this failure
 * leaves with no confirmed item is removed.
 */
static void journal_cut_back(struct spool *sp, bool sync_failed)
{
    struct journal *j = &sp->cur;
    if (j->fd < 0)
        return;
    if (sync_failed || ftruncate(j->fd, j->size) < 0) {
        close(j->fd);
        j->fd = -1;
    }
    j->unsynced = 0;
    struct segment *seg = segment_of_gen(sp, j->gen);
    if (seg && seg->remaining == 0)
        segment_drop(sp, seg); /* nothing of it was ever confirmed */
}

/*
 * Writes what sp->buf holds to the journal (starting a new one first when
 * *start) and empties the buffer; not yet durable (journal_sync).
 */
static int journal_put(struct spool *sp, bool *start, char *err, size_t errlen)
{
    if (*start) {
        if (journal_start(sp, err, errlen) < 0)
            return -1;
        *start = false;
    }
    struct journal *j = &sp->cur;
    if (write_all(j->fd, sp->buf.data, sp->buf.len) < 0) {
        snprintf(err, errlen, "cannot write spool journal: %s", strerror(errno));
        journal_cut_back(sp, false);
        return -1;
    }
    j->unsynced += (off_t)sp->buf.len;
    strbuf_reset(&sp->buf);
    return 0;
}

/* Makes what journal_put wrote durable: one fdatasync (and, for a new file,
 * one fsync of the directory). */
static int journal_sync(struct spool *sp, char *err, size_t errlen)
{
    struct journal *j = &sp->cur;
    bool synced = fdatasync(j->fd) == 0;
    if (!synced || (j->fresh && fsync(sp->dirfd) < 0)) {
        snprintf(err, errlen, "cannot write spool journal: %s", strerror(errno));
        journal_cut_back(sp, !synced);
        return -1;
    }
    j->fresh = false;
    j->size += j->unsynced;
    j->unsynced = 0;
    return 0;
}

/* Appends sp->buf to the current journal and makes it durable. */
static int journal_append(struct spool *sp, char *err, size_t errlen)
{
    bool start = false;
    if (journal_put(sp, &start, err, errlen) < 0)
        return -1;
    return journal_sync(sp, err, errlen);
}

/*
 * The lines are written out a piece (SPOOL_WRITE_PIECE) at a time as they are
 * made, and made durable once at the end: a flush of 500 results is several
 * MB of lines (Microsoft's access and id tokens), which the spool need not
 * hold at once. Nothing of a call that fails stays in the file.
 */
int spool_write(struct spool *sp, const struct keyring *kr, struct store_item *const *items,
                size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    if (sp->kr != kr) {
        if (sp->kr)
            keyring_unref(sp->kr);
        sp->kr = keyring_ref((struct keyring *)kr);
    }
    bool start =
        sp->cur.fd < 0 || sp->cur.size >= SPOOL_ROTATE_BYTES || n > SPOOL_ORD_MAX - sp->cur.lines;
    strbuf_reset(&sp->buf);
    if (!start && spool_line_append_settled(&sp->buf, kr, sp->cur.id, sp->cur.settled,
                                            sp->cur.nsettled) < 0) {
        snprintf(err, errlen, "out of memory recording settled spool items");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (spool_line_append(&sp->buf, kr, items[i]) < 0) {
            snprintf(err, errlen, "%s",
                     sp->buf.oom ? "out of memory building spool lines"
                                 : "a result cannot be spooled (not ciphertext, "
                                   "or no key)");
            if (!start)
                journal_cut_back(sp, false);
            return -1;
        }
        if (sp->buf.len >= SPOOL_WRITE_PIECE && journal_put(sp, &start, err, errlen) < 0)
            return -1;
    }
    if (journal_put(sp, &start, err, errlen) < 0 || journal_sync(sp, err, errlen) < 0)
        return -1;
    sp->cur.nsettled = 0;
    struct segment *seg = segment_of_gen(sp, sp->cur.gen);
    seg->remaining += n;
    for (size_t i = 0; i < n; i++)
        items[i]->spool_id = item_spool_id(sp->cur.gen, sp->cur.lines++);
    return 0;
}

int spool_set_aside(struct spool *sp, const struct keyring *kr, const struct store_item *item,
                    char *path, size_t pathlen, char *err, size_t errlen)
{
    struct strbuf sb = {0};
    if (spool_line_append(&sb, kr, item) < 0) {
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
    uint32_t gen = (uint32_t)(id >> SPOOL_ORD_BITS);
    struct segment *seg = segment_of_gen(sp, gen);
    if (!seg || seg->remaining == 0)
        return;
    if (--seg->remaining == 0) {
        segment_drop(sp, seg);
        return;
    }
    struct journal *j = &sp->cur;
    if (gen != j->gen || j->fd < 0)
        return; /* an older file: it goes when its last item is settled */
    if (j->nsettled == j->capsettled) {
        size_t cap = j->capsettled ? j->capsettled * 2 : 256;
        uint32_t *p = realloc(j->settled, cap * sizeof *p);
        if (!p)
            return; /* not recorded: a replay finds the item written */
        j->settled = p;
        j->capsettled = cap;
    }
    j->settled[j->nsettled++] = (uint32_t)(id & SPOOL_ORD_MAX);
}
size_t spool_open_segments(const struct spool *sp)
{
    return sp->nsegs;
}

size_t spool_buffer_bytes(const struct spool *sp)
{
    return sp->buf.cap;
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

static int cmp_uint32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* What one file held: its unsettled items with their ordinals. */
struct replayed {
    struct store_item **items;
    uint32_t *ord;
    size_t n, cap;
};

static bool replayed_push(struct replayed *r, struct store_item *it, uint32_t ord)
{
    if (r->n == r->cap) {
        size_t c = r->cap ? r->cap * 2 : 64;
        struct store_item **p = realloc(r->items, c * sizeof *p);
        if (p)
            r->items = p;
        uint32_t *q = p ? realloc(r->ord, c * sizeof *q) : NULL;
        if (!q)
            return false;
        r->ord = q;
        r->cap = c;
    }
    r->items[r->n] = it;
    r->ord[r->n++] = ord;
    return true;
}

/* Drops the items the file's settled lines name: they were written. */
static void replayed_drop_settled(struct replayed *r, struct spool_ords *set)
{
    if (set->n == 0)
        return;
    qsort(set->ord, set->n, sizeof *set->ord, cmp_uint32);
    size_t keep = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (bsearch(&r->ord[i], set->ord, set->n, sizeof *set->ord, cmp_uint32)) {
            store_item_free(r->items[i]);
            continue;
        }
        r->items[keep] = r->items[i];
        r->ord[keep++] = r->ord[i];
    }
    r->n = keep;
}

/*
 * Reads one file's lines into r (items with their ordinals) and set (settled
 * ordinals); returns how many lines are damaged. Every line but a settled one
 * takes an ordinal, as when it was written. A last line without its newline
 * is a write the crash cut short: it was never confirmed (spool_write returns
 * after the fdatasync), so it is ignored, not counted as damage.
 */
static size_t read_segment(FILE *f, const struct keyring *kr, int64_t id, const char *path,
                           struct replayed *r, struct spool_ords *set,
                           void (*warn)(void *, const char *), void *ud,
                           struct spool_replay_stats *st)
{
    char msg[8192];
    size_t bad = 0, lineno = 0;
    uint64_t ord = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    bool too_long;
    while ((got = getline_bounded(&line, &linecap, f, &too_long)) > 0) {
        lineno++;
        if (!too_long && line[got - 1] != '\n') {
            snprintf(msg, sizeof msg,
                     "spool: %.1024s line %zu was cut short by a crash before it was "
                     "confirmed; ignored",
                     path, lineno);
            warn(ud, msg);
            st->torn_lines++;
            break;
        }
        if (too_long) {
            snprintf(msg, sizeof msg,
                     "spool: %.1024s line %zu is longer than any valid line (damaged); not read",
                     path, lineno);
            warn(ud, msg);
            ord++;
            bad++;
            continue;
        }
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (spool_line_is_settled(line, len)) {
            bool verified;
            if (!spool_line_read_settled(kr, id, line, len, set, &verified)) {
                snprintf(msg, sizeof msg, "spool: %.1024s line %zu (settled items) %s", path,
                         lineno, verified ? "is not valid" : "does not verify (damaged)");
                warn(ud, msg);
                bad++;
            }
            continue;
        }
        uint64_t this_ord = ord++;
        msg[0] = '\0';
        struct store_item *it = spool_line_read(kr, line, len, path, lineno, msg, sizeof msg);
        if (it && this_ord > SPOOL_ORD_MAX) {
            snprintf(msg, sizeof msg, "spool: %.1024s has more lines than a journal holds", path);
            store_item_free(it);
            it = NULL;
        }
        if (!it) {
            warn(ud, msg);
            bad++;
            continue;
        }
        if (!replayed_push(r, it, (uint32_t)this_ord)) {
            store_item_free(it);
            bad++;
        }
    }
    free(line);
    return bad;
}

/* Replays one file; returns the number of items handed over. */
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
    struct replayed r = {0};
    struct spool_ords set = {0};
    size_t bad = read_segment(f, kr, id, path, &r, &set, warn, ud, st);
    fclose(f);
    size_t before = r.n;
    replayed_drop_settled(&r, &set);
    st->settled += before - r.n;
    free(set.ord);
    size_t n = r.n;
    st->bad_items += bad;
    if (bad > 0) {
        /* Keep the damaged file for the operator; its good items go to the journal. */
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
            if (spool_write(sp, kr, r.items, n, err, sizeof err) < 0)
                warn(ud, err);
        }
    } else if (n == 0) {
        unlink(path);
    } else {
        /* Kept as it is (never appended to: its tail may be torn) until its
         * last item is settled. */
        uint32_t gen = sp->next_gen++;
        if (track_segment(sp, id, gen, n) < 0)
            warn(ud, "spool: out of memory tracking a replayed segment");
        for (size_t i = 0; i < n; i++)
            r.items[i]->spool_id = item_spool_id(gen, r.ord[i]);
    }
    for (size_t i = 0; i < n; i++)
        add(ud, r.items[i]);
    free(r.items);
    free(r.ord);
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
    /* New files (a damaged file's good items are written again) take ids after
     * every file found, even if the clock went back. */
    if (n > 0 && ids[n - 1] >= sp->next_id)
        sp->next_id = ids[n - 1] + 1;
    for (size_t i = 0; i < n; i++) {
        stats->segments++;
        stats->items += replay_segment(sp, kr, ids[i], add, warn, ud, stats);
    }
    free(ids);
}

void spool_close(struct spool *sp)
{
    if (!sp)
        return;
    /* What was settled since the last write is recorded now (best effort: a
     * replay otherwise finds those items written). */
    if (sp->cur.fd >= 0 && sp->cur.nsettled > 0 && sp->kr) {
        strbuf_reset(&sp->buf);
        char err[ERRBUF_LEN];
        if (spool_line_append_settled(&sp->buf, sp->kr, sp->cur.id, sp->cur.settled,
                                      sp->cur.nsettled) == 0)
            (void)journal_append(sp, err, sizeof err);
    }
    if (sp->cur.fd >= 0)
        close(sp->cur.fd);
    free(sp->cur.settled);
    if (sp->kr)
        keyring_unref(sp->kr);
    if (sp->dirfd > 0)
        close(sp->dirfd);
    free(sp->segs);
    strbuf_free(&sp->buf);
    free(sp->dir);
    free(sp);
}
