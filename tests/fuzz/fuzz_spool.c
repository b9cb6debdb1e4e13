/*
 * fuzz_spool.c — libFuzzer target for the replay of the durable spool
 * (spool.h): the one file the daemon reads back after a crash, which may be
 * truncated or tampered with. The input becomes one segment file, line by
 * line: a line starting with '@' gets the tag the spool's key makes for the
 * rest of the line plus a space appended (so that the parser of a current
 * "S2" or "P2" line is reached), one starting with '!' is encrypted by the harness
 * under the spool's key (a Fernet token where a line belongs: the unreleased
 * first format, which is not read and must be counted as damage), one
 * starting with '~' under a foreign key, any other
 * line is written as it is.
 *
 * Properties: every line is replayed, counted as damaged, a torn last line
 * (no newline: a write a crash cut short) or a settled line ("D2"); warnings
 * are terminated and never quote an encrypted line's content; replayed items
 * are whole (the three ciphertexts the write-back needs); a second replay (a
 * restart) gives back exactly the same items and finds nothing damaged; once
 * every item is released no segment is left behind.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "b64.h"
#include "fuzz.h"
#include "keys.h"
#include "spool.h"
#include "store.h"

#define MAX_ITEMS 1024

static struct keyring *ring, *foreign;
static char dir[64];

struct replay {
    size_t n;
    struct store_item *items[MAX_ITEMS];
};

static void cleanup(void);

static void init_once(void)
{
    if (ring != NULL)
        return;
    FUZZ_CHECK(sodium_init() >= 0, "libsodium");
    uint8_t raw[1][FERNET_KEY_BYTES];
    char err[ERRBUF_LEN];
    memset(raw, 0x42, sizeof raw);
    ring = keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 1, err, sizeof err);
    memset(raw, 0x17, sizeof raw);
    foreign = keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 1, err, sizeof err);
    FUZZ_CHECK(ring != NULL && foreign != NULL, "keyring: %s", err);
    snprintf(dir, sizeof dir, "/tmp/oauth-fuzz-spool-XXXXXX");
    FUZZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    atexit(cleanup);
}

static void empty_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        FUZZ_CHECK(unlink(p) == 0, "cannot remove %s", p);
    }
    closedir(d);
}

static void cleanup(void)
{
    char spool_dir[128];
    snprintf(spool_dir, sizeof spool_dir, "%s/spool", dir);
    empty_dir(spool_dir);
    rmdir(spool_dir);
    rmdir(dir);
}

static size_t count_segments(const char *path)
{
    DIR *d = opendir(path);
    FUZZ_CHECK(d != NULL, "spool dir vanished");
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "seg-", 4) == 0 && l > 6 && strcmp(e->d_name + l - 6, ".spool") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void add_cb(void *ud, struct store_item *item)
{
    struct replay *r = ud;
    FUZZ_CHECK(item != NULL, "NULL item");
    /* A partial result ("P2") has no access token by design; it has an error. */
    FUZZ_CHECK(
        item->old_refresh_ct && item->refresh_ct &&
            (store_item_is_partial(item) ? item->access_ct == NULL : item->access_ct != NULL),
        "a replayed item lacks a ciphertext the write-back needs");
    FUZZ_CHECK(item->provider >= 0 && item->provider < PROVIDER_MAX, "provider %d",
               (int)item->provider);
    FUZZ_CHECK(item->rotated && item->kind == STORE_REFRESHED, "replayed item kind");
    FUZZ_CHECK(item->spool_id != 0, "replayed item without a segment id");
    FUZZ_CHECK(r->n < MAX_ITEMS, "more items than lines");
    r->items[r->n++] = item;
}

static void warn_cb(void *ud, const char *msg)
{
    (void)ud;
    FUZZ_CHECK(memchr(msg, '\0', 16384) != NULL, "warning not terminated");
    /* Plaintext the harness encrypted starts with this marker only inside tokens. */
    FUZZ_CHECK(strstr(msg, "\"old_refresh\"") == NULL, "a warning quotes a spooled result");
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void release_all(struct spool *sp, struct replay *r)
{
    for (size_t i = 0; i < r->n; i++) {
        spool_release(sp, r->items[i]->spool_id);
        store_item_free(r->items[i]);
    }
    r->n = 0;
}

/* Lines of the file that start as a settled line does ("D2 "). */
static size_t settled_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = 0;
    bool at_start = true;
    int c, k = 0;
    while ((c = getc(f)) != EOF) {
        if (at_start && k < 3 && c == "D2 "[k]) {
            if (++k == 3)
                n++;
        } else {
            at_start = false;
        }
        if (c == '\n') {
            at_start = true;
            k = 0;
        }
    }
    fclose(f);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 32 * 1024)
        return 0;
    init_once();
    char spool_dir[128], seg[256];
    snprintf(spool_dir, sizeof spool_dir, "%s/spool", dir);
    mkdir(spool_dir, 0700);
    empty_dir(spool_dir);
    snprintf(seg, sizeof seg, "%s/seg-%020d.spool", spool_dir, 5);

    FILE *f = fopen(seg, "w");
    FUZZ_CHECK(f != NULL, "cannot write the segment");
    size_t lines = 0, pos = 0;
    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (data + pos)) : size - pos;
        const uint8_t *line = data + pos;
        if (len > 0 && line[0] == '@') {
            static char buf[32 * 1024 + 64];
            memcpy(buf, line + 1, len - 1);
            buf[len - 1] = ' ';
            uint8_t tag[KEYRING_TAG_BYTES];
            FUZZ_CHECK(keyring_tag(ring, "oauthrd-spool-v2", buf, len, tag) == 0, "tag");
            char tag64[64];
            b64url_encode(tag, sizeof tag, tag64, sizeof tag64);
            fwrite(buf, 1, len, f);
            fputs(tag64, f);
        } else if (len > 0 && (line[0] == '!' || line[0] == '~')) {
            char *tok = NULL;
            FUZZ_CHECK(keyring_encrypt(line[0] == '!' ? ring : foreign, line + 1, len - 1, &tok) ==
                           0,
                       "encrypt");
            fputs(tok, f);
            free(tok);
        } else {
            fwrite(line, 1, len, f);
        }
        if (nl)
            fputc('\n', f);
        lines++;
        pos += len + (nl ? 1 : 0);
    }
    FUZZ_CHECK(fclose(f) == 0, "fclose");
    if (size == 0)
        lines = 0;

    size_t dlines = settled_lines(seg);
    char err[ERRBUF_LEN] = "";
    struct spool *sp = spool_open(dir, err, sizeof err);
    FUZZ_CHECK(sp != NULL, "spool_open: %s", err);
    static struct replay first, second;
    struct spool_replay_stats st;
    spool_replay(sp, ring, add_cb, warn_cb, &first, &st);
    FUZZ_CHECK(st.items == first.n, "stats say %zu items, %zu were handed over", st.items, first.n);
    /* Each line is an item replayed, damaged, left out as settled, a torn last
     * line, or a settled line (a damaged settled line counts twice below). */
    size_t accounted = st.items + st.bad_items + st.torn_lines + st.settled;
    FUZZ_CHECK(accounted <= lines && accounted + dlines >= lines && st.torn_lines <= 1,
               "%zu lines (%zu settled lines): %zu replayed + %zu damaged + %zu torn + %zu settled",
               lines, dlines, st.items, st.bad_items, st.torn_lines, st.settled);
    FUZZ_CHECK((st.bad_items > 0) == (st.bad_segments > 0), "bad items %zu, bad segments %zu",
               st.bad_items, st.bad_segments);
    spool_close(sp);

    /* A restart: the same good items come back, nothing is damaged any more. */
    sp = spool_open(dir, err, sizeof err);
    FUZZ_CHECK(sp != NULL, "spool_open again: %s", err);
    spool_replay(sp, ring, add_cb, warn_cb, &second, &st);
    FUZZ_CHECK(st.bad_items == 0 && st.bad_segments == 0, "damage found on the second replay");
    FUZZ_CHECK(second.n == first.n, "first replay %zu items, second %zu", first.n, second.n);
    for (size_t i = 0; i < first.n; i++) {
        const struct store_item *a = first.items[i], *b = second.items[i];
        FUZZ_CHECK(a->account_id == b->account_id && a->provider == b->provider &&
                       (a->expires_at == b->expires_at ||
                        (a->expires_at != a->expires_at && b->expires_at != b->expires_at)) &&
                       same_str(a->old_refresh_ct, b->old_refresh_ct) &&
                       same_str(a->access_ct, b->access_ct) &&
                       same_str(a->refresh_ct, b->refresh_ct) &&
                       same_str(a->id_token_ct, b->id_token_ct) && same_str(a->scope, b->scope) &&
                       same_str(a->token_type, b->token_type) && strcmp(a->error, b->error) == 0 &&
                       a->retry_at == b->retry_at,
                   "item %zu changed between two replays", i);
    }
    release_all(sp, &second);
    for (size_t i = 0; i < first.n; i++)
        store_item_free(first.items[i]);
    first.n = 0;
    FUZZ_CHECK(spool_open_segments(sp) == 0, "segments still open after every release");
    FUZZ_CHECK(count_segments(spool_dir) == 0, "a segment file is left after every release");
    spool_close(sp);
    empty_dir(spool_dir);
    return 0;
}
