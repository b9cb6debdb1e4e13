/*
 * spool.c — durable segments of results that carry a rotated refresh token
 * (spool.h). It owns the files under <state_directory>/spool and the count of
 * unsettled items per segment; it never talks to the database and never
 * decides what a result means. Each line of a segment is one item serialised
 * as JSON (jansson) and encrypted as a Fernet token under the primary key, so
 * the spool holds no plaintext and any damage is detected by the MAC.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "secret.h"

#define SEGMENT_PREFIX "seg-"
#define SEGMENT_SUFFIX ".spool"

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

static json_t *item_to_json(const struct store_item *it)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "account_id", json_integer(it->account_id));
    json_object_set_new(o, "provider", json_integer(it->provider));
    json_object_set_new(o, "old_refresh", json_string(it->old_refresh_ct));
    json_object_set_new(o, "access", it->access_ct ? json_string(it->access_ct) : json_null());
    json_object_set_new(o, "refresh", it->refresh_ct ? json_string(it->refresh_ct) : json_null());
    json_object_set_new(o, "id_token",
                        it->id_token_ct ? json_string(it->id_token_ct) : json_null());
    json_object_set_new(o, "expires_at", json_real(it->expires_at));
    json_object_set_new(o, "scope", it->scope ? json_string(it->scope) : json_null());
    json_object_set_new(o, "token_type", it->token_type ? json_string(it->token_type) : json_null());
    return o;
}

/* Appends one encrypted line for it to f. */
static int write_item(FILE *f, const struct keyring *kr, const struct store_item *it)
{
    json_t *o = item_to_json(it);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return -1;
    char *token = NULL;
    int rc = keyring_encrypt(kr, (const uint8_t *)text, strlen(text), &token);
    secure_free_str(text);
    if (rc < 0)
        return -1;
    rc = fprintf(f, "%s\n", token) < 0 ? -1 : 0;
    free(token);
    return rc;
}

int spool_write(struct spool *sp, const struct keyring *kr, struct store_item *const *items,
                size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    int64_t id = sp->next_id++;
    char path[4096], tmp[4200];
    segment_path(sp, id, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(err, errlen, "cannot create spool segment %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = write_item(f, kr, items[i]) == 0;
    int saved = errno;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (!ok)
        saved = errno;
    ok = (fclose(f) == 0) && ok;
    /* rename + directory fsync: the segment appears whole or not at all. */
    ok = ok && rename(tmp, path) == 0 && fsync(sp->dirfd) == 0;
    if (!ok) {
        snprintf(err, errlen, "cannot write spool segment %s: %s", path,
                 strerror(saved ? saved : errno));
        unlink(tmp);
        return -1;
    }
    if (track_segment(sp, id, n) < 0) {
        snprintf(err, errlen, "out of memory tracking spool segment");
        return -1; /* the file stays and is replayed at the next start */
    }
    for (size_t i = 0; i < n; i++)
        items[i]->spool_id = id;
    return 0;
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

static char *json_str_dup(json_t *o, const char *key, bool *ok)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *ok = false;
        return NULL;
    }
    char *s = strdup(json_string_value(v));
    if (!s)
        *ok = false;
    return s;
}

static struct store_item *item_from_json(const char *text, size_t len)
{
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    struct store_item *it = calloc(1, sizeof *it);
    bool ok = it != NULL;
    if (ok) {
        it->kind = STORE_REFRESHED;
        it->rotated = true;
        json_t *id = json_object_get(o, "account_id");
        json_t *prov = json_object_get(o, "provider");
        json_t *exp = json_object_get(o, "expires_at");
        ok = json_is_integer(id) && json_is_integer(prov) && json_is_number(exp) &&
             json_integer_value(prov) >= 0 && json_integer_value(prov) < PROVIDER_COUNT;
        if (ok) {
            it->account_id = json_integer_value(id);
            it->provider = (enum provider_id)json_integer_value(prov);
            it->expires_at = json_number_value(exp);
        }
        it->old_refresh_ct = json_str_dup(o, "old_refresh", &ok);
        it->access_ct = json_str_dup(o, "access", &ok);
        it->refresh_ct = json_str_dup(o, "refresh", &ok);
        it->id_token_ct = json_str_dup(o, "id_token", &ok);
        it->scope = json_str_dup(o, "scope", &ok);
        it->token_type = json_str_dup(o, "token_type", &ok);
        ok = ok && it->old_refresh_ct && it->access_ct && it->refresh_ct;
    }
    json_decref(o);
    if (!ok) {
        store_item_free(it);
        return NULL;
    }
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

/* Replays one segment; returns the number of items handed over. */
static size_t replay_segment(struct spool *sp, const struct keyring *kr, int64_t id,
                             void (*add)(void *, struct store_item *),
                             void (*warn)(void *, const char *), void *ud,
                             struct spool_replay_stats *st)
{
    char path[4096], msg[8192];
    msg[0] = '\0'; /* tested with strncmp below before any line has written it */
    segment_path(sp, id, path, sizeof path);
    FILE *f = fopen(path, "re");
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
    while ((got = getline(&line, &linecap, f)) > 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        struct secret plain = {0};
        char err[ERRBUF_LEN];
        struct store_item *it = NULL;
        if (keyring_decrypt(kr, line, len, &plain, NULL, err, sizeof err) == 0)
            it = item_from_json(plain.data, plain.len);
        else
            snprintf(msg, sizeof msg, "spool: %.1024s line %zu does not verify (%.512s)", path, lineno,
                     err);
        secret_clear(&plain);
        if (!it) {
            if (strncmp(msg, "spool:", 6) != 0)
                snprintf(msg, sizeof msg, "spool: %.1024s line %zu is not a valid result", path,
                         lineno);
            warn(ud, msg);
            msg[0] = '\0';
            bad++;
            continue;
        }
        msg[0] = '\0';
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
        snprintf(msg, sizeof msg,
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
    free(sp->dir);
    free(sp);
}
