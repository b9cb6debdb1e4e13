/*
 * fuzz_fernet.c — libFuzzer target for the Fernet decoder (fernet.h) and the
 * key list (keys.h). The first byte picks a mode, the rest is the input:
 *   0: a token, decrypted under a fixed two-key MultiFernet, with and without
 *      a TTL. Property: a token that verifies is canonical — re-encrypting its
 *      plaintext with the same key, timestamp and IV gives the same text.
 *   1: a plaintext, encrypted and decrypted back; any one character of the
 *      token changed must then fail to verify.
 *   2: a key text for fernet_key_decode; accepted keys re-encode to the input.
 *   3: a key file, loaded through keyring_load_file from a temporary file;
 *      the error never quotes the file.
 * Nothing here prints a key or a plaintext.
 */
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "b64.h"
#include "fernet.h"
#include "fuzz.h"
#include "keys.h"
#include "secret.h"

#define NOW 1700000000ULL

static const uint8_t raw_keys[2][FERNET_KEY_BYTES] = {
    {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
     0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
     0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20},
    {0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a,
     0x4b, 0x3c, 0x2d, 0x1e, 0x0f, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa,
     0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00},
};

static struct fernet_key keys[2];
static struct keyring *ring;

static void init_once(void)
{
    if (ring != NULL)
        return;
    char err[ERRBUF_LEN];
    FUZZ_CHECK(sodium_init() >= 0, "libsodium");
    for (int i = 0; i < 2; i++) {
        memcpy(keys[i].signing, raw_keys[i], 16);
        memcpy(keys[i].encryption, raw_keys[i] + 16, 16);
    }
    ring = keyring_from_raw(raw_keys, 2, err, sizeof(err));
    FUZZ_CHECK(ring != NULL, "keyring_from_raw: %s", err);
}

static void check_err_text(const char *err, size_t errlen)
{
    FUZZ_CHECK(memchr(err, '\0', errlen) != NULL, "error message not NUL-terminated");
    FUZZ_CHECK(err[0] != '\0', "failure without a reason");
}

static void mode_token(const uint8_t *data, size_t size)
{
    char *tok = fuzz_strndup(data, size);
    struct secret plain = {0};
    size_t idx = 99;
    char err[ERRBUF_LEN] = "";

    int rc = keyring_decrypt(ring, tok, size, &plain, &idx, err, sizeof(err));
    struct secret plain2 = {0};
    char err2[ERRBUF_LEN] = "";
    int rc2 = fernet_decrypt_keys(keys, 2, tok, size, NOW, 0, &plain2, NULL, err2, sizeof(err2));
    FUZZ_CHECK(rc == rc2, "keyring_decrypt %d, fernet_decrypt_keys %d on the same token", rc, rc2);
    if (rc != 0) {
        check_err_text(err, sizeof(err));
    } else {
        FUZZ_CHECK(idx < 2, "key index %zu of 2 keys", idx);
        FUZZ_CHECK(plain.len == plain2.len && memcmp(plain.data, plain2.data, plain.len) == 0,
                   "two decrypt paths disagree on the plaintext");
        FUZZ_CHECK(plain.data[plain.len] == '\0', "plaintext not NUL-terminated");
        /* Canonical: the same key, timestamp and IV make the same token. */
        uint8_t raw[64];
        size_t rawlen = 0;
        FUZZ_CHECK(size >= 44, "a %zu-char token verified", size);
        FUZZ_CHECK(b64url_decode(tok, 44, raw, sizeof(raw), &rawlen) == 0 && rawlen == 33,
                   "verified token's head does not decode");
        uint64_t ts = 0;
        for (int i = 1; i <= 8; i++)
            ts = (ts << 8) | raw[i];
        char *again = NULL;
        FUZZ_CHECK(fernet_encrypt(&keys[idx], (const uint8_t *)plain.data, plain.len, ts, raw + 9,
                                  &again) == 0,
                   "re-encryption failed");
        FUZZ_CHECK(strlen(again) == size && memcmp(again, tok, size) == 0,
                   "a token verified that is not the canonical encoding of its content");
        free(again);

        /* The TTL rules judge the authenticated timestamp. */
        uint64_t ttl = 1 + (data[0] % 7) * 1000;
        struct secret p3 = {0};
        char e3[ERRBUF_LEN] = "";
        int rc3 = fernet_decrypt_keys(keys, 2, tok, size, NOW, ttl, &p3, NULL, e3, sizeof(e3));
        bool fresh = ts > NOW ? ts - NOW <= 60 : NOW - ts <= ttl;
        FUZZ_CHECK((rc3 == 0) == fresh, "ttl %llu, timestamp %llu: decrypt %d",
                   (unsigned long long)ttl, (unsigned long long)ts, rc3);
        secret_clear(&p3);
    }
    secret_clear(&plain);
    secret_clear(&plain2);
    free(tok);
}

static void mode_plain(const uint8_t *data, size_t size)
{
    char *tok = NULL;
    uint8_t iv[FERNET_IV_BYTES] = {0};
    memcpy(iv, data, size < sizeof(iv) ? size : sizeof(iv));
    FUZZ_CHECK(fernet_encrypt(&keys[0], data, size, NOW, iv, &tok) == 0, "encrypt failed");
    size_t tlen = strlen(tok);
    struct secret plain = {0};
    size_t idx = 99;
    char err[ERRBUF_LEN] = "";
    FUZZ_CHECK(keyring_decrypt(ring, tok, tlen, &plain, &idx, err, sizeof(err)) == 0,
               "own token does not decrypt: %s", err);
    FUZZ_CHECK(idx == 0 && plain.len == size && memcmp(plain.data, data, size) == 0,
               "round trip of %zu bytes gave %zu bytes under key %zu", size, plain.len, idx);
    secret_clear(&plain);

    /* Change one character into another of the alphabet: it must not verify. */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t pos = (size * 7919u) % tlen;
    if (tok[pos] != '=') {
        char c = tok[pos];
        const char *at = strchr(alphabet, c);
        FUZZ_CHECK(at != NULL, "token character outside the alphabet");
        tok[pos] = alphabet[((size_t)(at - alphabet) + 1 + size % 63) % 64];
        int rc = keyring_decrypt(ring, tok, tlen, &plain, &idx, err, sizeof(err));
        FUZZ_CHECK(rc != 0, "a token with character %zu changed still verified", pos);
        tok[pos] = c;
    }
    free(tok);
}

static void mode_key(const uint8_t *data, size_t size)
{
    char *txt = fuzz_strndup(data, size);
    struct fernet_key k;
    if (fernet_key_decode(txt, size, &k) == 0) {
        FUZZ_CHECK(size == 44, "accepted a %zu-char key", size);
        uint8_t raw[32];
        memcpy(raw, k.signing, 16);
        memcpy(raw + 16, k.encryption, 16);
        char again[45];
        b64url_encode(raw, sizeof(raw), again, sizeof(again));
        FUZZ_CHECK(memcmp(again, txt, 44) == 0, "accepted a non-canonical key text");
        sodium_memzero(raw, sizeof(raw));
    }
    sodium_memzero(&k, sizeof(k));
    free(txt);
}

static void mode_keyfile(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/oauth-fuzz-keys-XXXXXX";
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0, "mkstemp");
    FUZZ_CHECK(write(fd, data, size) == (ssize_t)size, "write");
    close(fd);
    char err[ERRBUF_LEN] = "";
    struct keyring *kr = keyring_load_file(path, NULL, NULL, err, sizeof(err));
    unlink(path);
    if (kr == NULL) {
        check_err_text(err, sizeof(err));
        /* Only the fixed wording and numbers: a key line never lands in the message. */
        for (const char *p = err; *p; p++)
            FUZZ_CHECK(*p != '=' && *p != '_', "key-file error quotes key text");
        return;
    }
    FUZZ_CHECK(keyring_count(kr) >= 1, "an empty keyring was returned");
    keyring_unref(kr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16 * 1024)
        return 0;
    init_once();
    switch (data[0] & 3) {
    case 0:
        mode_token(data + 1, size - 1);
        break;
    case 1:
        mode_plain(data + 1, size - 1);
        break;
    case 2:
        mode_key(data + 1, size - 1);
        break;
    default:
        mode_keyfile(data + 1, size - 1);
        break;
    }
    return 0;
}
