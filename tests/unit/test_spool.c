/*
 * test_spool.c — the durable spool of rotated results: what is written comes
 * back whole after a "restart", settled segments disappear, and damaged files
 * (truncated, tampered, foreign key) are reported and kept aside without
 * losing their good entries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fernet.h"
#include "secret.h"
#include "keys.h"
#include "spool.h"
#include "stored_token.h"
#include "store.h"

struct fixture {
    char dir[64];
    struct keyring *kr;
    struct store_item *replayed[64];
    size_t nreplayed;
    size_t warnings;
    size_t ncounted; /* count_and_free_cb */
};

static struct keyring *make_keyring(void)
{
    uint8_t raw[1][FERNET_KEY_BYTES];
    randombytes_buf(raw[0], sizeof raw[0]);
    char err[ERRBUF_LEN];
    struct keyring *kr =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 1, err, sizeof err);
    assert_non_null(kr);
    return kr;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/test-spool-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    fx->kr = make_keyring();
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    for (size_t i = 0; i < fx->nreplayed; i++)
        store_item_free(fx->replayed[i]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    keyring_unref(fx->kr);
    free(fx);
    return 0;
}

static char *encrypt_text(const struct keyring *kr, const char *plain)
{
    char *ct = NULL;
    assert_int_equal(keyring_encrypt(kr, (const uint8_t *)plain, strlen(plain), &ct), 0);
    return ct;
}

static void assert_decrypts_to(const struct keyring *kr, const char *ct, const char *plain)
{
    struct secret s = {0};
    char err[ERRBUF_LEN];
    assert_non_null(ct);
    assert_int_equal(keyring_decrypt(kr, ct, strlen(ct), &s, NULL, err, sizeof err), 0);
    assert_int_equal(s.len, strlen(plain));
    assert_memory_equal(s.data, plain, s.len);
    secret_clear(&s);
}

/* A rotated result as the engine hands it over: tokens already Fernet ciphertext. */
static struct store_item *make_item(const struct keyring *kr, int64_t id, const char *rt)
{
    struct store_item *it = calloc(1, sizeof *it);
    it->kind = STORE_REFRESHED;
    it->account_id = id;
    it->provider = PROVIDER_GITHUB;
    it->old_refresh_ct = encrypt_text(kr, "old-refresh-plaintext");
    it->access_ct = encrypt_text(kr, "access-plaintext");
    it->refresh_ct = encrypt_text(kr, rt);
    it->id_token_ct = NULL;
    it->expires_at = 1795800000.5;
    it->scope = strdup("repo user");
    it->token_type = NULL;
    it->rotated = true;
    return it;
}

static void add_cb(void *ud, struct store_item *item)
{
    struct fixture *fx = ud;
    assert_true(fx->nreplayed < 64);
    fx->replayed[fx->nreplayed++] = item;
}

/* Replay callback for more items than the fixture keeps: counts and frees. */
static void count_and_free_cb(void *ud, struct store_item *item)
{
    struct fixture *fx = ud;
    fx->ncounted++;
    store_item_free(item);
}

static void warn_cb(void *ud, const char *msg)
{
    struct fixture *fx = ud;
    fx->warnings++;
    /* A warning must never quote spooled content (Fernet tokens start so). */
    assert_null(strstr(msg, "gAAAAA"));
}

static size_t count_files(const char *dir, const char *suffix)
{
    char path[128];
    snprintf(path, sizeof path, "%s/spool", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name), sl = strlen(suffix);
        if (len > sl && strcmp(de->d_name + len - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static char *only_segment_path(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/spool", dir);
    DIR *d = opendir(path);
    struct dirent *de;
    char *found = NULL;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".spool") && !strstr(de->d_name, ".bad")) {
            assert_null(found);
            assert_true(asprintf(&found, "%s/%s", path, de->d_name) > 0);
        }
    closedir(d);
    assert_non_null(found);
    return found;
}

static void write_three(struct fixture *fx, struct spool *sp, struct store_item **items)
{
    items[0] = make_item(fx->kr, 1, "rt-one");
    items[1] = make_item(fx->kr, 2, "rt-two");
    items[2] = make_item(fx->kr, 3, "rt-three");
    char err[ERRBUF_LEN];
    assert_int_equal(spool_write(sp, fx->kr, items, 3, err, sizeof err), 0);
    for (int i = 0; i < 3; i++)
        assert_true(items[i]->spool_id != 0);
}

/* Writes three items and "crashes": nothing is released, the spool is closed. */
static void write_three_and_crash(struct fixture *fx)
{
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    struct store_item *items[3];
    write_three(fx, sp, items);
    for (int i = 0; i < 3; i++)
        store_item_free(items[i]);
    spool_close(sp);
}

/* A restart: opens the spool again and replays it with kr into fx. */
static struct spool *restart_and_replay(struct fixture *fx, const struct keyring *kr,
                                        struct spool_replay_stats *st)
{
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    spool_replay(sp, kr, add_cb, warn_cb, fx, st);
    return sp;
}

static void test_written_items_come_back_whole_after_restart(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    struct store_item *items[3];
    write_three(fx, sp, items);
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    for (int i = 0; i < 3; i++)
        store_item_free(items[i]);
    spool_close(sp); /* "crash": nothing was released */

    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 3);
    assert_int_equal(st.bad_items, 0);
    assert_int_equal(fx->nreplayed, 3);
    assert_int_equal(fx->replayed[1]->account_id, 2);
    assert_decrypts_to(fx->kr, fx->replayed[1]->refresh_ct, "rt-two");
    assert_decrypts_to(fx->kr, fx->replayed[1]->old_refresh_ct, "old-refresh-plaintext");
    assert_decrypts_to(fx->kr, fx->replayed[1]->access_ct, "access-plaintext");
    assert_string_equal(fx->replayed[1]->scope, "repo user");
    assert_null(fx->replayed[1]->id_token_ct);
    assert_true(fx->replayed[1]->rotated);
    assert_true(fx->replayed[1]->expires_at == 1795800000.5);

    /* Settling every replayed item removes the segment. */
    for (size_t i = 0; i < 3; i++)
        spool_release(sp, fx->replayed[i]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    assert_int_equal(spool_open_segments(sp), 0);
    spool_close(sp);
}

/* django-fernet-fields rows hold "\\x" + the token's hex: their results are spooled
 * in that form (exactly what the database will hold) and come back unchanged. */
static char *as_bytea_hex(char *ct)
{
    size_t n = strlen(ct);
    char *out = malloc(2 * n + 3);
    assert_non_null(out);
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", (unsigned char)ct[i]);
    free(ct);
    return out;
}

static void test_results_in_the_bytea_hex_form_come_back_unchanged(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    struct store_item *it = make_item(fx->kr, 7, "rt-bytes");
    it->old_refresh_ct = as_bytea_hex(it->old_refresh_ct);
    it->access_ct = as_bytea_hex(it->access_ct);
    it->refresh_ct = as_bytea_hex(it->refresh_ct);
    char *want = strdup(it->refresh_ct);
    struct store_item *items[1] = {it};
    assert_int_equal(spool_write(sp, fx->kr, items, 1, err, sizeof err), 0);
    assert_int_not_equal(it->spool_id, 0);
    store_item_free(it);
    spool_close(sp);

    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 1);
    assert_int_equal(st.bad_items, 0);
    assert_string_equal(fx->replayed[0]->refresh_ct, want);
    assert_int_equal(
        stored_token_form(fx->replayed[0]->old_refresh_ct, strlen(fx->replayed[0]->old_refresh_ct)),
        STORED_FORM_BYTEA_HEX);
    free(want);
    spool_release(sp, fx->replayed[0]->spool_id);
    spool_close(sp);
}

/* A partial result (issue 10): a rotated refresh token without a usable access token. */
static struct store_item *make_partial(const struct keyring *kr, int64_t id, const char *rt,
                                       bool with_id_token)
{
    struct store_item *it = make_item(kr, id, rt);
    free(it->access_ct);
    it->access_ct = NULL;
    free(it->scope);
    it->scope = NULL;
    it->expires_at = 0;
    it->id_token_ct = with_id_token ? encrypt_text(kr, "id-token-plaintext") : NULL;
    snprintf(it->error, sizeof it->error, "missing_access_token");
    it->retry_at = 1795800030.25;
    return it;
}

static void test_partial_results_come_back_whole_after_restart(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    struct store_item *items[3] = {make_item(fx->kr, 1, "rt-full"),
                                   make_partial(fx->kr, 2, "rt-partial", false),
                                   make_partial(fx->kr, 3, "rt-partial-id", true)};
    assert_int_equal(spool_write(sp, fx->kr, items, 3, err, sizeof err), 0);
    for (int i = 0; i < 3; i++)
        store_item_free(items[i]);
    spool_close(sp);

    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 3);
    assert_int_equal(st.bad_items, 0);
    assert_false(store_item_is_partial(fx->replayed[0]));
    assert_decrypts_to(fx->kr, fx->replayed[0]->access_ct, "access-plaintext");
    for (int i = 1; i < 3; i++) {
        struct store_item *it = fx->replayed[i];
        assert_int_equal(it->kind, STORE_REFRESHED);
        assert_true(store_item_is_partial(it));
        assert_true(it->rotated);
        assert_int_equal(it->account_id, i + 1);
        assert_int_equal(it->provider, PROVIDER_GITHUB);
        assert_string_equal(it->error, "missing_access_token");
        assert_true(it->retry_at == 1795800030.25);
        assert_null(it->access_ct);
        assert_null(it->scope);
        assert_null(it->token_type);
        assert_decrypts_to(fx->kr, it->old_refresh_ct, "old-refresh-plaintext");
        assert_decrypts_to(fx->kr, it->refresh_ct, i == 1 ? "rt-partial" : "rt-partial-id");
    }
    assert_null(fx->replayed[1]->id_token_ct);
    assert_decrypts_to(fx->kr, fx->replayed[2]->id_token_ct, "id-token-plaintext");
    for (size_t i = 0; i < 3; i++)
        spool_release(sp, fx->replayed[i]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    spool_close(sp);
}

/*
 * A generic provider's id is only good for one process (config.h): its lines
 * name it, and a named provider's lines keep their digit, as before.
 */
static void test_a_generic_provider_is_spooled_by_name(void **state)
{
    struct fixture *fx = *state;
    int kc = provider_id_register("keycloak");
    assert_true(kc >= PROVIDER_NAMED_COUNT);
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    struct store_item *items[3] = {make_item(fx->kr, 1, "rt-kc"),
                                   make_partial(fx->kr, 2, "rt-kc-partial", false),
                                   make_item(fx->kr, 3, "rt-github")};
    items[0]->provider = (enum provider_id)kc;
    items[1]->provider = (enum provider_id)kc;
    assert_int_equal(spool_write(sp, fx->kr, items, 3, err, sizeof err), 0);
    for (int i = 0; i < 3; i++)
        store_item_free(items[i]);
    spool_close(sp);

    char *path = only_segment_path(fx->dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    assert_non_null(fgets(line, sizeof line, f));
    assert_memory_equal(line, "S2 1 keycloak ", 14);
    assert_non_null(fgets(line, sizeof line, f));
    assert_memory_equal(line, "P2 2 keycloak ", 14);
    assert_non_null(fgets(line, sizeof line, f));
    assert_memory_equal(line, "S2 3 1 ", 7);
    fclose(f);
    free(path);

    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 3);
    assert_int_equal(st.bad_items, 0);
    assert_int_equal(fx->replayed[0]->provider, kc);
    assert_decrypts_to(fx->kr, fx->replayed[0]->refresh_ct, "rt-kc");
    assert_int_equal(fx->replayed[1]->provider, kc);
    assert_true(store_item_is_partial(fx->replayed[1]));
    assert_decrypts_to(fx->kr, fx->replayed[1]->refresh_ct, "rt-kc-partial");
    assert_int_equal(fx->replayed[2]->provider, PROVIDER_GITHUB);
    for (size_t i = 0; i < 3; i++)
        spool_release(sp, fx->replayed[i]->spool_id);
    spool_close(sp);

    /* An id no config gave out has no name: such an item is refused, not spooled as a number. */
    struct store_item *bad = make_item(fx->kr, 4, "rt-x");
    bad->provider = (enum provider_id)(PROVIDER_MAX - 1);
    if (strcmp(provider_id_name(bad->provider), "unknown") == 0) {
        sp = spool_open(fx->dir, err, sizeof err);
        assert_int_equal(spool_write(sp, fx->kr, &bad, 1, err, sizeof err), -1);
        spool_close(sp);
    }
    store_item_free(bad);
}

static void test_a_result_set_aside_is_kept_but_never_replayed(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN], path[4300];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    struct store_item *it = make_partial(fx->kr, 9, "rt-poison", false);
    assert_int_equal(spool_set_aside(sp, fx->kr, it, path, sizeof path, err, sizeof err), 0);
    assert_non_null(strstr(path, ".spool.bad"));
    assert_int_equal(count_files(fx->dir, ".bad"), 1);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    store_item_free(it);
    spool_close(sp);
    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 0);
    assert_int_equal(fx->nreplayed, 0);
    assert_int_equal(count_files(fx->dir, ".bad"), 1);
    spool_close(sp);
}

static void test_segment_stays_until_its_last_item_is_released(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *items[3];
    write_three(fx, sp, items);
    spool_release(sp, items[0]->spool_id);
    spool_release(sp, items[1]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    spool_release(sp, items[2]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    for (int i = 0; i < 3; i++)
        store_item_free(items[i]);
    spool_close(sp);
}

static void test_spool_holds_no_plaintext(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *items[3];
    write_three(fx, sp, items);
    char *path = only_segment_path(fx->dir);
    FILE *f = fopen(path, "r");
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_null(strstr(buf, "rt-two"));
    assert_null(strstr(buf, "plaintext"));
    /* The tokens are stored as the ciphertext the database will hold. */
    assert_non_null(strstr(buf, items[1]->refresh_ct));
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0);
    free(path);
    for (int i = 0; i < 3; i++)
        store_item_free(items[i]);
    spool_close(sp);
}

/* Damages the only segment with fn, then replays. */
static void replay_damaged(struct fixture *fx, void (*fn)(const char *path), size_t expect_good,
                           size_t expect_bad)
{
    write_three_and_crash(fx);
    char *path = only_segment_path(fx->dir);
    fn(path);
    free(path);

    struct spool_replay_stats st;
    struct spool *sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, expect_good);
    assert_int_equal(st.bad_items, expect_bad);
    assert_true(fx->warnings >= 1);
    assert_int_equal(count_files(fx->dir, ".bad"), 1); /* kept for the operator */
    /* The good entries were re-spooled in a fresh segment: release removes it. */
    for (size_t i = 0; i < fx->nreplayed; i++)
        spool_release(sp, fx->replayed[i]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    spool_close(sp);
}

static void truncate_mid_last_line(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 30), 0);
}

static void flip_a_byte_in_line_two(const char *path)
{
    FILE *f = fopen(path, "r+");
    char line[4096];
    assert_non_null(fgets(line, sizeof line, f));
    long at = ftell(f) + 60;
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c == 'A' ? 'B' : 'A', f);
    fclose(f);
}

static void append_garbage(const char *path)
{
    FILE *f = fopen(path, "a");
    fputs("this is not a fernet token\n", f);
    fclose(f);
}

/* A crash cut the last write short: that line was never confirmed (the write
 * returns after its fdatasync), so it is ignored, and it is not damage. */
static void test_a_torn_last_line_is_ignored_and_the_rest_replayed(void **state)
{
    struct fixture *fx = *state;
    write_three_and_crash(fx);
    char *path = only_segment_path(fx->dir);
    truncate_mid_last_line(path);
    free(path);
    struct spool_replay_stats st;
    struct spool *sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 2);
    assert_int_equal(st.bad_items, 0);
    assert_int_equal(st.torn_lines, 1);
    assert_int_equal(count_files(fx->dir, ".bad"), 0);
    assert_int_equal(fx->replayed[0]->account_id, 1);
    assert_int_equal(fx->replayed[1]->account_id, 2);
    for (size_t i = 0; i < fx->nreplayed; i++)
        spool_release(sp, fx->replayed[i]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    spool_close(sp);
}

static void test_tampered_entry_is_detected_and_skipped(void **state)
{
    replay_damaged(*state, flip_a_byte_in_line_two, 2, 1);
}

static void test_garbage_line_is_reported(void **state)
{
    replay_damaged(*state, append_garbage, 3, 1);
}

/*
 * Line 1 stays, then a 256 MiB line of NUL bytes (a hole: no disk used) ends
 * with a newline before lines 2 and 3. Longer than any valid line: damage.
 */
#define HUGE_LINE (256L * 1024 * 1024)
static void insert_a_huge_line_after_line_one(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char text[64 * 1024];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    size_t first = (size_t)(nl - text) + 1;
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, text, first, 0), (ssize_t)first);
    off_t at = (off_t)first + HUGE_LINE;
    assert_int_equal(pwrite(fd, "\n", 1, at), 1);
    assert_int_equal(pwrite(fd, text + first, len - first, at + 1), (ssize_t)(len - first));
    close(fd);
}

static long max_rss_kib(void)
{
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

static void test_an_overlong_line_is_set_aside_without_being_held(void **state)
{
    long before = max_rss_kib();
    replay_damaged(*state, insert_a_huge_line_after_line_one, 3, 1);
    long grown = max_rss_kib() - before;
    if (grown > 64 * 1024)
        fail_msg("replaying a %ld MiB line raised the peak RSS by %ld MiB: it was read whole",
                 HUGE_LINE >> 20, grown >> 10);
}

static void test_a_segment_that_is_a_symlink_is_not_followed(void **state)
{
    struct fixture *fx = *state;
    write_three_and_crash(fx);
    char *path = only_segment_path(fx->dir);
    /* The real file moves elsewhere; the segment's name becomes a link to it. */
    char elsewhere[128];
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", fx->dir);
    assert_int_equal(rename(path, elsewhere), 0);
    assert_int_equal(symlink(elsewhere, path), 0);

    struct spool_replay_stats st;
    struct spool *sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 0);
    assert_int_equal(st.bad_segments, 1);
    assert_true(fx->warnings >= 1);
    spool_close(sp);
    free(path);
}

static void test_segment_under_unknown_key_is_kept_aside(void **state)
{
    struct fixture *fx = *state;
    write_three_and_crash(fx);

    struct keyring *other = make_keyring();
    struct spool_replay_stats st;
    struct spool *sp = restart_and_replay(fx, other, &st);
    assert_int_equal(st.items, 0);
    assert_int_equal(st.bad_items, 3);
    assert_int_equal(count_files(fx->dir, ".bad"), 1);
    spool_close(sp);
    keyring_unref(other);
}

/* Rewrites the only segment's text with edit(), which changes it in place. */
static void edit_segment(const char *dir, void (*edit)(char *text))
{
    char *path = only_segment_path(dir);
    FILE *f = fopen(path, "r");
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    edit(text);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(path);
}

/* "S2 2 ..." (the second line) becomes "S2 9 ...": account 2's tokens claimed for 9. */
static void move_line_two_to_account_nine(char *text)
{
    char *l2 = strchr(text, '\n') + 1;
    assert_memory_equal(l2, "S2 2 ", 5);
    l2[3] = '9';
}

static void test_a_line_moved_to_another_account_does_not_verify(void **state)
{
    struct fixture *fx = *state;
    write_three_and_crash(fx);
    edit_segment(fx->dir, move_line_two_to_account_nine);

    struct spool_replay_stats st;
    struct spool *sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 2);
    assert_int_equal(st.bad_items, 1);
    for (size_t i = 0; i < fx->nreplayed; i++) {
        assert_true(fx->replayed[i]->account_id != 9);
        spool_release(sp, fx->replayed[i]->spool_id);
    }
    spool_close(sp);
}

static void test_results_that_are_not_ciphertext_are_refused_whole(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *items[2] = {make_item(fx->kr, 1, "a"), make_item(fx->kr, 2, "b")};
    /* "-" means "no id token" in a line; "abc" is not padded base64. */
    const char *bad[] = {"has space", "two\nlines", "", "plain;text", "-", "abc"};
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
        char *keep = items[1]->access_ct;
        items[1]->access_ct = (char *)bad[b];
        assert_int_equal(spool_write(sp, fx->kr, items, 2, err, sizeof err), -1);
        items[1]->access_ct = keep;
        assert_null(strstr(err, bad[b][0] ? bad[b] : "\x01")); /* never quoted */
    }
    items[1]->expires_at = -1;
    assert_int_equal(spool_write(sp, fx->kr, items, 2, err, sizeof err), -1);
    items[1]->expires_at = 1.0 / 0.0;
    assert_int_equal(spool_write(sp, fx->kr, items, 2, err, sizeof err), -1);
    items[1]->expires_at = 4.0e9; /* 2096: beyond what the spool keeps exactly */
    assert_int_equal(spool_write(sp, fx->kr, items, 2, err, sizeof err), -1);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    assert_int_equal(count_files(fx->dir, ".tmp"), 0);
    assert_int_equal(items[0]->spool_id, 0);
    for (int i = 0; i < 2; i++)
        store_item_free(items[i]);
    spool_close(sp);
}

static void test_scope_and_token_type_survive_any_bytes(void **state)
{
    struct fixture *fx = *state;
    const char *texts[] = {"", " ", "a b\nc\td", "-", ":", "S2 1 2", "é ü ✓", "x=y&z"};
    const size_t n = sizeof texts / sizeof *texts;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *items[8];
    for (size_t i = 0; i < n; i++) {
        items[i] = make_item(fx->kr, (int64_t)i + 1, "rt");
        free(items[i]->scope);
        items[i]->scope = strdup(texts[i]);
        items[i]->token_type = i % 2 ? strdup(texts[n - 1 - i]) : NULL;
        items[i]->id_token_ct = i % 3 ? encrypt_text(fx->kr, "id-token") : NULL;
        items[i]->expires_at = 1795800000.0 + (double)i * 0.000001;
    }
    assert_int_equal(spool_write(sp, fx->kr, items, n, err, sizeof err), 0);
    spool_close(sp);
    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, n);
    for (size_t i = 0; i < n; i++) {
        const struct store_item *r = fx->replayed[i];
        assert_int_equal(r->account_id, (int64_t)i + 1);
        assert_string_equal(r->scope, texts[i]);
        if (i % 2)
            assert_string_equal(r->token_type, texts[n - 1 - i]);
        else
            assert_null(r->token_type);
        if (i % 3)
            assert_string_equal(r->id_token_ct, items[i]->id_token_ct);
        else
            assert_null(r->id_token_ct);
        assert_true(r->expires_at == items[i]->expires_at);
        spool_release(sp, r->spool_id);
        store_item_free(items[i]);
    }
    spool_close(sp);
}

static void test_a_segment_tagged_with_a_demoted_key_is_replayed(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    uint8_t raw[2][FERNET_KEY_BYTES];
    randombytes_buf(raw, sizeof raw);
    /* Written under key A; then a reload put a new primary key B in front of it. */
    struct keyring *a =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw + 1, 1, err, sizeof err);
    struct keyring *ba =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 2, err, sizeof err);
    struct keyring *b_only =
        keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, 1, err, sizeof err);
    assert_non_null(a);
    assert_non_null(ba);
    assert_non_null(b_only);
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *items[2] = {make_item(a, 1, "one"), make_item(a, 2, "two")};
    assert_int_equal(spool_write(sp, a, items, 2, err, sizeof err), 0);
    spool_close(sp);

    sp = spool_open(fx->dir, err, sizeof err);
    struct spool_replay_stats st;
    spool_replay(sp, ba, add_cb, warn_cb, fx, &st);
    assert_int_equal(st.items, 2);
    assert_int_equal(st.bad_items, 0);
    spool_close(sp); /* a crash again: nothing released */

    /* Once A is gone from the list, the lines no longer verify: kept aside, not lost. */
    sp = spool_open(fx->dir, err, sizeof err);
    spool_replay(sp, b_only, add_cb, warn_cb, fx, &st);
    assert_int_equal(st.items, 0);
    assert_int_equal(st.bad_items, 2);
    assert_int_equal(count_files(fx->dir, ".bad"), 1);
    spool_close(sp);
    for (int i = 0; i < 2; i++)
        store_item_free(items[i]);
    keyring_unref(a);
    keyring_unref(ba);
    keyring_unref(b_only);
}

/* A line of the unreleased first format (one Fernet token over the item's
 * JSON, spool.c): not read, but reported and kept aside, never dropped. */
static void test_a_line_of_the_unreleased_first_format_is_kept_aside(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    char *old_rt = encrypt_text(fx->kr, "old"), *acc = encrypt_text(fx->kr, "acc"),
         *rt = encrypt_text(fx->kr, "new");
    char json[4096];
    snprintf(json, sizeof json,
             "{\"account_id\":77,\"provider\":2,\"old_refresh\":\"%s\",\"access\":\"%s\","
             "\"refresh\":\"%s\",\"id_token\":null,\"expires_at\":1795800000.25,"
             "\"scope\":\"openid offline_access\",\"token_type\":\"Bearer\"}",
             old_rt, acc, rt);
    char *line = encrypt_text(fx->kr, json);
    char path[128];
    snprintf(path, sizeof path, "%s/spool", fx->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/spool/seg-%020d.spool", fx->dir, 1);
    FILE *f = fopen(path, "w");
    fprintf(f, "%s\n", line);
    fclose(f);

    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct spool_replay_stats st;
    spool_replay(sp, fx->kr, add_cb, warn_cb, fx, &st);
    assert_int_equal(st.items, 0);
    assert_int_equal(st.bad_items, 1);
    assert_int_equal(st.bad_segments, 1);
    assert_true(fx->warnings >= 1);
    assert_int_equal(count_files(fx->dir, ".bad"), 1);
    spool_close(sp);
    free(old_rt);
    free(acc);
    free(rt);
    free(line);
}

static void test_unwritable_state_directory_is_an_error(void **state)
{
    char err[ERRBUF_LEN] = "";
    assert_null(spool_open("/proc/definitely/not/here", err, sizeof err));
    assert_non_null(strstr(err, "spool"));
}

/* ---- the journal: one file, appended, settled items recorded ---- */

static void write_n(struct fixture *fx, struct spool *sp, struct store_item **items, size_t n,
                    int64_t first_id)
{
    char err[ERRBUF_LEN];
    for (size_t i = 0; i < n; i++)
        items[i] = make_item(fx->kr, first_id + (int64_t)i, "rt-journal");
    assert_int_equal(spool_write(sp, fx->kr, items, n, err, sizeof err), 0);
}

static void free_n(struct store_item **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_item_free(items[i]);
}

static void test_every_write_appends_to_one_journal(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *a[2], *b[2], *c[2];
    write_n(fx, sp, a, 2, 10);
    write_n(fx, sp, b, 2, 20);
    write_n(fx, sp, c, 2, 30);
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    assert_int_equal(spool_open_segments(sp), 1);
    spool_release(sp, a[0]->spool_id);
    spool_release(sp, a[1]->spool_id);
    spool_release(sp, b[0]->spool_id);
    spool_release(sp, b[1]->spool_id);
    spool_release(sp, c[0]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    spool_release(sp, c[1]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0); /* all settled: removed */
    /* The next write starts a new journal. */
    struct store_item *d[1];
    write_n(fx, sp, d, 1, 40);
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    spool_release(sp, d[0]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    free_n(a, 2);
    free_n(b, 2);
    free_n(c, 2);
    free_n(d, 1);
    spool_close(sp);
}

/* ---- a flush larger than the write buffer ---- */

/* 500 results (a full store batch) with a Microsoft-sized access token each:
 * about 3 MB of lines in one spool_write. */
#define BIG_BATCH 500
static void make_big_batch(struct fixture *fx, struct store_item **items, int64_t first_id)
{
    char jwt[4096];
    memset(jwt, 'j', sizeof jwt - 1);
    jwt[sizeof jwt - 1] = '\0';
    for (size_t i = 0; i < BIG_BATCH; i++) {
        items[i] = make_item(fx->kr, first_id + (int64_t)i, "rt-big");
        free(items[i]->access_ct);
        items[i]->access_ct = encrypt_text(fx->kr, jwt);
    }
}

/* A restart (a new spool on the same directory) replays exactly n items, with no
 * line reported as damaged. */
static void assert_a_restart_replays(struct fixture *fx, size_t n)
{
    char err[ERRBUF_LEN];
    struct spool_replay_stats st = {0};
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    assert_non_null(sp);
    spool_replay(sp, fx->kr, count_and_free_cb, warn_cb, fx, &st);
    assert_int_equal(fx->ncounted, n);
    assert_int_equal(fx->warnings, 0);
    spool_close(sp);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void test_a_large_flush_is_appended_in_pieces_not_held_whole(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *items[BIG_BATCH];
    make_big_batch(fx, items, 1000);
    assert_int_equal(spool_write(sp, fx->kr, items, BIG_BATCH, err, sizeof err), 0);
    char *path = only_segment_path(fx->dir);
    off_t written = file_size(path);
    assert_true(written > 2 * 1024 * 1024);
    /* The lines went out in pieces: what the spool keeps between writes is a
     * piece and one line (SPOOL_WRITE_PIECE), not the flush (4 MB in the
     * benchmark). */
    if (spool_buffer_bytes(sp) > 1024 * 1024)
        fail_msg("the spool holds %zu bytes after writing %lld: the flush was built whole",
                 spool_buffer_bytes(sp), (long long)written);
    free_n(items, BIG_BATCH);
    spool_close(sp);
    /* Every line is whole: a restart replays all of them. */
    assert_a_restart_replays(fx, BIG_BATCH);
    free(path);
}

static void
test_a_refused_result_after_pieces_were_written_leaves_the_journal_as_it_was(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *big[BIG_BATCH];
    make_big_batch(fx, big, 1000);
    char *keep = big[BIG_BATCH - 1]->access_ct;
    big[BIG_BATCH - 1]->access_ct = (char *)"not ciphertext";
    /* Into no journal yet: none is left behind. */
    assert_int_equal(spool_write(sp, fx->kr, big, BIG_BATCH, err, sizeof err), -1);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    assert_int_equal(spool_open_segments(sp), 0);
    /* Into a journal with two results: it is cut back to them. */
    struct store_item *two[2];
    write_n(fx, sp, two, 2, 10);
    char *path = only_segment_path(fx->dir);
    off_t before = file_size(path);
    assert_int_equal(spool_write(sp, fx->kr, big, BIG_BATCH, err, sizeof err), -1);
    assert_int_equal(file_size(path), before);
    for (size_t i = 0; i < BIG_BATCH - 1; i++)
        assert_int_equal(big[i]->spool_id, 0);
    /* The journal goes on: the next write lands after the two. */
    big[BIG_BATCH - 1]->access_ct = keep;
    assert_int_equal(spool_write(sp, fx->kr, big, BIG_BATCH, err, sizeof err), 0);
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    free_n(big, BIG_BATCH);
    free_n(two, 2);
    spool_close(sp);
    assert_a_restart_replays(fx, 2 + BIG_BATCH);
    free(path);
}

/* Writes the big batch with the journal limited to `room` more bytes (RLIMIT_FSIZE:
 * write() stops at the limit, short, then fails with EFBIG) and checks that the
 * failed call left the journal exactly as it was, and that it goes on after. */
static void fail_a_big_write_after(struct fixture *fx, off_t room)
{
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *two[2], *big[BIG_BATCH];
    write_n(fx, sp, two, 2, 10);
    char *path = only_segment_path(fx->dir);
    off_t before = file_size(path);
    make_big_batch(fx, big, 1000);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)(before + room);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = spool_write(sp, fx->kr, big, BIG_BATCH, err, sizeof err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "cannot write spool journal"));
    if (file_size(path) != before)
        fail_msg("a failed write left %lld bytes after the %lld that were durable",
                 (long long)(file_size(path) - before), (long long)before);
    assert_int_equal(spool_write(sp, fx->kr, big, BIG_BATCH, err, sizeof err), 0);
    free_n(big, BIG_BATCH);
    free_n(two, 2);
    spool_close(sp);
    assert_a_restart_replays(fx, 2 + BIG_BATCH);
    free(path);
}

static void
test_a_write_that_stops_inside_the_first_piece_leaves_the_journal_as_it_was(void **state)
{
    fail_a_big_write_after(*state, 1000);
}

static void test_a_write_that_stops_after_whole_pieces_leaves_the_journal_as_it_was(void **state)
{
    fail_a_big_write_after(*state, 3 * SPOOL_WRITE_PIECE / 2);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[256 * 1024];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char *copy = malloc(*len + 1);
    memcpy(copy, buf, *len);
    copy[*len] = '\0';
    return copy;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static bool replayed_has(const struct fixture *fx, int64_t id)
{
    for (size_t i = 0; i < fx->nreplayed; i++)
        if (fx->replayed[i]->account_id == id)
            return true;
    return false;
}

/*
 * A crash in the middle of a journal: the file as the last fdatasync left it.
 * Items settled before the last write were recorded with it and are not
 * replayed; every unsettled one is, once.
 */
static void test_replay_after_a_crash_mid_journal_skips_what_was_settled(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *a[3], *b[2];
    write_n(fx, sp, a, 3, 10);
    spool_release(sp, a[0]->spool_id);
    spool_release(sp, a[2]->spool_id);
    write_n(fx, sp, b, 2, 20); /* carries the record of 10 and 12 */
    char *path = only_segment_path(fx->dir);
    size_t len;
    char *crash = read_file(path, &len);
    assert_non_null(strstr(crash, "\nD2 "));
    free_n(a, 3);
    free_n(b, 2);
    spool_close(sp);
    write_file(path, crash, len); /* as the crash left it */
    free(crash);
    free(path);

    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.bad_items, 0);
    assert_int_equal(st.items, 3);
    assert_int_equal(fx->nreplayed, 3);
    assert_true(replayed_has(fx, 11));
    assert_true(replayed_has(fx, 20));
    assert_true(replayed_has(fx, 21));
    assert_false(replayed_has(fx, 10));
    assert_false(replayed_has(fx, 12));
    for (size_t i = 0; i < fx->nreplayed; i++)
        spool_release(sp, fx->replayed[i]->spool_id);
    assert_int_equal(count_files(fx->dir, ".spool"), 0);
    spool_close(sp);
}

static void test_a_clean_close_records_what_was_settled_since_the_last_write(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *a[3];
    write_n(fx, sp, a, 3, 10);
    spool_release(sp, a[1]->spool_id);
    free_n(a, 3);
    spool_close(sp);
    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.items, 2);
    assert_false(replayed_has(fx, 11));
    spool_close(sp);
}

/* A settled line that does not verify hides nothing: it is damage, and every
 * item of the file is replayed (the compare-and-swap finds the written ones). */
static void test_a_damaged_settled_line_hides_no_item(void **state)
{
    struct fixture *fx = *state;
    char err[ERRBUF_LEN];
    struct spool *sp = spool_open(fx->dir, err, sizeof err);
    struct store_item *a[2], *b[1];
    write_n(fx, sp, a, 2, 10);
    spool_release(sp, a[0]->spool_id);
    write_n(fx, sp, b, 1, 20);
    char *path = only_segment_path(fx->dir);
    size_t len;
    char *text = read_file(path, &len);
    free_n(a, 2);
    free_n(b, 1);
    spool_close(sp);
    char *d = strstr(text, "\nD2 ");
    assert_non_null(d);
    d[5] = d[5] == '1' ? '2' : '1'; /* a digit of the file id */
    write_file(path, text, len);
    free(text);
    free(path);
    struct spool_replay_stats st;
    sp = restart_and_replay(fx, fx->kr, &st);
    assert_int_equal(st.bad_items, 1);
    assert_int_equal(st.items, 3);
    assert_true(replayed_has(fx, 10));
    assert_int_equal(count_files(fx->dir, ".bad"), 1);
    spool_close(sp);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_write_appends_to_one_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_large_flush_is_appended_in_pieces_not_held_whole,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_result_after_pieces_were_written_leaves_the_journal_as_it_was, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_write_that_stops_inside_the_first_piece_leaves_the_journal_as_it_was, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_write_that_stops_after_whole_pieces_leaves_the_journal_as_it_was, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_replay_after_a_crash_mid_journal_skips_what_was_settled, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_clean_close_records_what_was_settled_since_the_last_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_damaged_settled_line_hides_no_item, setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_items_come_back_whole_after_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_partial_results_come_back_whole_after_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_generic_provider_is_spooled_by_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_result_set_aside_is_kept_but_never_replayed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_segment_stays_until_its_last_item_is_released, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_spool_holds_no_plaintext, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_torn_last_line_is_ignored_and_the_rest_replayed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_entry_is_detected_and_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_garbage_line_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_overlong_line_is_set_aside_without_being_held,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_segment_that_is_a_symlink_is_not_followed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_segment_under_unknown_key_is_kept_aside, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_line_moved_to_another_account_does_not_verify, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_results_that_are_not_ciphertext_are_refused_whole,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_scope_and_token_type_survive_any_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_segment_tagged_with_a_demoted_key_is_replayed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_line_of_the_unreleased_first_format_is_kept_aside,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_results_in_the_bytea_hex_form_come_back_unchanged,
                                        setup, teardown),
        cmocka_unit_test(test_unwritable_state_directory_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
