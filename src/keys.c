/*
 * keys.c — custody of the Fernet key list. It owns the keyring: the decoded
 * keys in one sodium_malloc()ed region (guard pages, mlock'ed, kept out of core
 * dumps) that is made read-only once loaded and wiped by sodium_free() when the
 * last reference goes; the reference count lives outside that region so that
 * ref/unref never need to unprotect the keys. It also owns the key-file format
 * (one urlsafe-base64 key per line, '#' comments, blank lines).
 *
 * It must never print, log or put into an error message any key text or key
 * byte, and never leave a copy of the key file's contents in freed memory.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"

/* A key file is a handful of 44-char lines; anything this big is a mistake. */
#define KEYFILE_MAX_BYTES (1024 * 1024)

struct keyring {
    int refcount;
    size_t n;
    struct fernet_key *keys; /* sodium_malloc()ed, read-only after load */
    /* OpenSSL objects reused by every encryption and decryption with these
     * keys (fernet.h): scratch state, which is why a keyring serves one
     * thread at a time (the daemon's loop, or one oauth-refreshctl command). */
    struct fernet_engine *engine;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) PRINTF_LIKE(3, 4);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Allocates a keyring with writable room for n keys. */
static struct keyring *keyring_alloc(size_t n, char *err, size_t errlen)
{
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium failed to initialise");
        return NULL;
    }
    struct keyring *kr = calloc(1, sizeof(*kr));
    if (kr == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    kr->keys = sodium_allocarray(n, sizeof(struct fernet_key));
    if (kr->keys == NULL) {
        free(kr);
        set_err(err, errlen, "cannot allocate guarded memory for %zu key(s)", n);
        return NULL;
    }
    kr->engine = fernet_engine_new();
    if (kr->engine == NULL) {
        sodium_free(kr->keys);
        free(kr);
        set_err(err, errlen, "cannot set up AES-128-CBC and HMAC-SHA256 (OpenSSL)");
        return NULL;
    }
    kr->n = n;
    kr->refcount = 1;
    return kr;
}

static struct keyring *keyring_seal(struct keyring *kr, char *err, size_t errlen)
{
    if (sodium_mprotect_readonly(kr->keys) != 0) {
        set_err(err, errlen, "cannot make key memory read-only: %s", strerror(errno));
        keyring_unref(kr);
        return NULL;
    }
    return kr;
}

struct keyring *keyring_from_raw(const uint8_t (*raw)[FERNET_KEY_BYTES], size_t n, char *err,
                                 size_t errlen)
{
    if (n == 0) {
        set_err(err, errlen, "no keys given");
        return NULL;
    }
    struct keyring *kr = keyring_alloc(n, err, errlen);
    if (kr == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        memcpy(kr->keys[i].signing, raw[i], 16);
        memcpy(kr->keys[i].encryption, raw[i] + 16, 16);
    }
    return keyring_seal(kr, err, errlen);
}

/* "group", "others" or "group and others" for the two bits of one kind. */
static const char *who_of(unsigned mode, unsigned grp, unsigned oth)
{
    if ((mode & grp) && (mode & oth))
        return "group and others";
    return (mode & grp) ? "group" : "others";
}

/*
 * One warning per load, naming every way the file is looser than it should
 * be: readable by group/others (they can read the keys), writable by
 * group/others or owned by a user that is neither this process's nor root
 * (they can replace the keys, and with them what every new token is
 * encrypted to). Never the content.
 */
static void warn_key_file(const char *path, unsigned mode, uid_t owner, keyring_warn_fn warn,
                          void *warn_ud)
{
    char msg[ERRBUF_LEN] = "";
    size_t o = 0;
    uid_t me = geteuid();
    if ((mode & (S_IRGRP | S_IROTH)) != 0)
        o += (size_t)snprintf(msg + o, sizeof msg - o, "; readable by %s (mode %04o)",
                              who_of(mode, S_IRGRP, S_IROTH), mode);
    if (o < sizeof msg && (mode & (S_IWGRP | S_IWOTH)) != 0)
        o += (size_t)snprintf(msg + o, sizeof msg - o, "; writable by %s (mode %04o)",
                              who_of(mode, S_IWGRP, S_IWOTH), mode);
    if (o < sizeof msg && owner != me && owner != 0)
        o += (size_t)snprintf(msg + o, sizeof msg - o,
                              "; owned by uid %u, neither this process's user (uid %u) nor root",
                              (unsigned)owner, (unsigned)me);
    if (o == 0 || warn == NULL)
        return;
    char full[ERRBUF_LEN + 256];
    snprintf(full, sizeof full,
             "key file %s is %s; it should be mode 0600 or 0400 and owned by the daemon's user "
             "or root",
             path, msg + 2);
    warn(warn_ud, full);
}

/*
 * Reads the whole file into guarded memory (secret_file_read_owned; wiped by
 * sodium_free) and warns, once, when it is looser than it should be.
 * Returns the buffer (NUL-terminated, *len bytes) or NULL with err set.
 */
static char *read_key_file(const char *path, keyring_warn_fn warn, void *warn_ud, size_t *len,
                           char *err, size_t errlen)
{
    char why[ERRBUF_LEN];
    unsigned mode = 0;
    uid_t owner = 0;
    char *buf =
        secret_file_read_owned(path, KEYFILE_MAX_BYTES, len, &mode, &owner, why, sizeof why);
    if (buf == NULL) {
        set_err(err, errlen, "%s%s", why, strncmp(why, "larger", 6) == 0 ? "; not a key file" : "");
        return NULL;
    }
    warn_key_file(path, mode, owner, warn, warn_ud);
    return buf;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/*
 * Walks the lines of buf. With keys == NULL only validates and counts; else
 * decodes into keys[0..]. Returns the number of keys or -1 with err set.
 */
static long parse_keys(const char *buf, size_t len, struct fernet_key *keys, char *err,
                       size_t errlen)
{
    long count = 0;
    size_t lineno = 0;
    size_t pos = 0;
    while (pos < len) {
        lineno++;
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - buf) : len;
        size_t a = pos, b = end;
        pos = end + 1;
        while (a < b && is_space(buf[a]))
            a++;
        while (b > a && is_space(buf[b - 1]))
            b--;
        if (a == b || buf[a] == '#')
            continue;
        struct fernet_key tmp;
        struct fernet_key *dst = keys != NULL ? &keys[count] : &tmp;
        if (fernet_key_decode(buf + a, b - a, dst) != 0) {
            sodium_memzero(&tmp, sizeof(tmp));
            /* The length is not secret; the characters are. */
            set_err(err, errlen,
                    "line %zu: not a valid Fernet key (expected 44 characters of urlsafe "
                    "base64; the line has %zu)",
                    lineno, b - a);
            return -1;
        }
        sodium_memzero(&tmp, sizeof(tmp));
        count++;
    }
    if (count == 0) {
        set_err(err, errlen, "no keys found (expected one urlsafe-base64 Fernet key per line)");
        return -1;
    }
    return count;
}

struct keyring *keyring_load_file(const char *path, keyring_warn_fn warn, void *warn_ud, char *err,
                                  size_t errlen)
{
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium failed to initialise");
        return NULL;
    }
    size_t len = 0;
    char *buf = read_key_file(path, warn, warn_ud, &len, err, errlen);
    if (buf == NULL)
        return NULL;
    if (memchr(buf, '\0', len) != NULL) {
        /* A NUL is never part of a text key file; do not let it cut a line. */
        sodium_free(buf);
        set_err(err, errlen, "file contains NUL bytes; not a text key file");
        return NULL;
    }
    struct keyring *kr = NULL;
    long n = parse_keys(buf, len, NULL, err, errlen);
    if (n > 0) {
        kr = keyring_alloc((size_t)n, err, errlen);
        if (kr != NULL && parse_keys(buf, len, kr->keys, err, errlen) != n) {
            keyring_unref(kr);
            kr = NULL;
        }
    }
    sodium_free(buf); /* wipes the file's text */
    if (kr == NULL)
        return NULL;
    return keyring_seal(kr, err, errlen);
}

struct keyring *keyring_ref(struct keyring *kr)
{
    if (kr != NULL)
        __atomic_add_fetch(&kr->refcount, 1, __ATOMIC_RELAXED);
    return kr;
}

void keyring_unref(struct keyring *kr)
{
    if (kr == NULL)
        return;
    if (__atomic_sub_fetch(&kr->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    sodium_free(kr->keys); /* unprotects, wipes and unmaps */
    fernet_engine_free(kr->engine);
    free(kr);
}

size_t keyring_count(const struct keyring *kr)
{
    return kr != NULL ? kr->n : 0;
}

int keyring_encrypt(const struct keyring *kr, const uint8_t *plain, size_t len, char **token_out)
{
    *token_out = NULL;
    if (kr == NULL || kr->n == 0)
        return -1;
    time_t now = time(NULL);
    return fernet_encrypt_with(kr->engine, &kr->keys[0], plain, len, (uint64_t)(now > 0 ? now : 0),
                               NULL, token_out);
}

int keyring_decrypt(const struct keyring *kr, const char *token, size_t token_len,
                    struct secret *plain, size_t *key_index, char *err, size_t errlen)
{
    if (kr == NULL || kr->n == 0) {
        set_err(err, errlen, "no keys loaded");
        return -1;
    }
    /* No TTL for stored tokens (SPEC §4), so the clock does not matter. */
    return fernet_decrypt_keys_with(kr->engine, kr->keys, kr->n, token, token_len, 0, 0, plain,
                                    key_index, err, errlen);
}

/* The tag key is the whole 32-byte Fernet key; the personalisation keeps its
 * outputs apart from every other use of that key. */
static void tag_with(const struct fernet_key *k, const char *personal, const void *msg, size_t len,
                     uint8_t tag[KEYRING_TAG_BYTES])
{
    uint8_t key[sizeof k->signing + sizeof k->encryption];
    memcpy(key, k->signing, sizeof k->signing);
    memcpy(key + sizeof k->signing, k->encryption, sizeof k->encryption);
    crypto_generichash_blake2b_salt_personal(tag, KEYRING_TAG_BYTES, msg, len, key, sizeof key,
                                             NULL, (const unsigned char *)personal);
    sodium_memzero(key, sizeof key);
}

int keyring_tag(const struct keyring *kr, const char personal[KEYRING_TAG_PERSONAL_BYTES],
                const void *msg, size_t len, uint8_t tag[KEYRING_TAG_BYTES])
{
    if (kr == NULL || kr->n == 0)
        return -1;
    tag_with(&kr->keys[0], personal, msg, len, tag);
    return 0;
}

bool keyring_tag_verify(const struct keyring *kr, const char personal[KEYRING_TAG_PERSONAL_BYTES],
                        const void *msg, size_t len, const uint8_t tag[KEYRING_TAG_BYTES],
                        size_t *key_index)
{
    if (kr == NULL)
        return false;
    for (size_t i = 0; i < kr->n; i++) {
        uint8_t want[KEYRING_TAG_BYTES];
        tag_with(&kr->keys[i], personal, msg, len, want);
        bool same = crypto_verify_32(want, tag) == 0;
        sodium_memzero(want, sizeof want);
        if (same) {
            if (key_index)
                *key_index = i;
            return true;
        }
    }
    return false;
}

/* The personalisation of token fingerprints (keys.h), apart from every other tag. */
static const char TOKEN_FP_PERSONAL[KEYRING_TAG_PERSONAL_BYTES] = {
    'o', 'a', 'u', 't', 'h', 'r', 'd', '-', 'f', 'p', '-', 'v', '1', 0, 0, 0};

int token_fingerprint(const struct keyring *kr, const void *token, size_t len,
                      char out[TOKEN_FP_HEX_LEN + 1])
{
    uint8_t tag[KEYRING_TAG_BYTES];
    out[0] = '\0';
    if (keyring_tag(kr, TOKEN_FP_PERSONAL, token, len, tag) != 0)
        return -1;
    sodium_bin2hex(out, TOKEN_FP_HEX_LEN + 1, tag, TOKEN_FP_HEX_LEN / 2);
    sodium_memzero(tag, sizeof tag);
    return 0;
}
