/*
 * ctl_crypto.c — the Fernet subcommands of oauth-refreshctl: keygen, encrypt
 * and decrypt (SPEC §2). It owns only the command-line surface: options, where
 * the key list comes from (--keys-file, else the configuration's), reading
 * stdin and writing stdout byte-exact, and exit codes. The cryptography is
 * fernet.c's and the key custody keys.c's.
 *
 * It must never print a key or plaintext to stderr, never pass plaintext
 * through stdio buffers it cannot wipe (it uses write(2) directly), and never
 * write partial output for a token that does not verify.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "ctl.h"
#include "ctl_common.h"
#include "fernet.h"
#include "keys.h"
#include "secret.h"
#include "stored_token.h"

#define PROG "oauth-refreshctl"
/* Tokens are kilobytes; anything near this is not a token or credential. */
#define CTL_STDIN_MAX (16u * 1024u * 1024u)

/*
 * The key list: from keys_file when given, else from the configuration file.
 * Returns an owned keyring reference, or NULL after printing why.
 */
static struct keyring *ctl_keys_load(const struct ctl_ctx *ctx, const char *cmd,
                                     const char *keys_file)
{
    if (keys_file != NULL)
        return ctl_keys_file_load(cmd, keys_file);
    struct config *cfg;
    if (ctl_config_load(ctx, cmd, &cfg) != 0)
        return NULL;
    struct keyring *kr = keyring_ref(cfg->keys);
    config_unref(cfg);
    if (kr == NULL)
        fprintf(stderr, PROG " %s: %s configures no Fernet keys ([crypto] keys_file)\n", cmd,
                ctx->config_path);
    return kr;
}

/*
 * Reads all of fd into a wiped-on-free buffer (NUL-terminated). Growing copies
 * the data into a new buffer and wipes the old one, so no stray plaintext copy
 * is left behind by realloc. Returns 0, or -1 after printing why.
 */
static int ctl_read_all(int fd, const char *cmd, struct secret *out)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        goto oom;
    for (;;) {
        if (len + 1 == cap) {
            if (cap > CTL_STDIN_MAX) {
                secure_free(buf, cap);
                fprintf(stderr, PROG " %s: input is larger than %u bytes; refusing it\n", cmd,
                        CTL_STDIN_MAX);
                return -1;
            }
            size_t ncap = cap * 2;
            char *nbuf = malloc(ncap);
            if (nbuf == NULL) {
                secure_free(buf, cap);
                goto oom;
            }
            memcpy(nbuf, buf, len);
            secure_free(buf, cap);
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            secure_free(buf, cap);
            fprintf(stderr, PROG " %s: cannot read stdin: %s\n", cmd, strerror(e));
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > CTL_STDIN_MAX) {
            secure_free(buf, cap);
            fprintf(stderr, PROG " %s: input is larger than %u bytes; refusing it\n", cmd,
                    CTL_STDIN_MAX);
            return -1;
        }
    }
    buf[len] = '\0';
    /* Shrink-free adoption: secret_clear wipes len + 1 bytes, so wipe the
     * unused tail now. */
    sodium_memzero(buf + len + 1, cap - len - 1);
    secret_adopt(out, buf, len);
    return 0;
oom:
    fprintf(stderr, PROG " %s: out of memory\n", cmd);
    return -1;
}

static int ctl_write_all(int fd, const char *cmd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            fprintf(stderr, PROG " %s: cannot write stdout: %s\n", cmd, strerror(errno));
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void ctl_usage(FILE *out, const char *cmd)
{
    if (strcmp(cmd, "keygen") == 0)
        fprintf(out, "Usage: " PROG " keygen\n"
                     "Print a new random Fernet key (urlsafe base64) and a newline.\n");
    else
        fprintf(out,
                "Usage: " PROG " [-c FILE] %s [--keys-file F]\n"
                "%s stdin to stdout with the configured Fernet key list, or the keys\n"
                "in F (one key per line, first = primary; then no config file is read).\n",
                cmd, strcmp(cmd, "encrypt") == 0 ? "Encrypt" : "Decrypt");
}

/*
 * Parses [--keys-file F] [-h]. Returns -1 to continue, else the exit code.
 */
static int ctl_parse(int argc, char **argv, bool keys_option, const char **keys_file)
{
    static const struct option with_keys[] = {
        {"keys-file", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = argv[0];
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, keys_option ? "+hk:" : "+h",
                              keys_option ? with_keys : with_keys + 1, NULL)) != -1) {
        switch (opt) {
        case 'k':
            *keys_file = optarg;
            break;
        case 'h':
            ctl_usage(stdout, cmd);
            return EXIT_OK_;
        default:
            if (optopt == 'k' ||
                (optind > 0 && optind <= argc && strcmp(argv[optind - 1], "--keys-file") == 0))
                fprintf(stderr, PROG " %s: --keys-file needs a file name\n", cmd);
            else
                fprintf(stderr, PROG " %s: unknown option '%s'\n", cmd, argv[optind - 1]);
            ctl_usage(stderr, cmd);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG " %s: unexpected argument '%s'\n", cmd, argv[optind]);
        ctl_usage(stderr, cmd);
        return EXIT_USAGE;
    }
    if (keys_file != NULL && *keys_file != NULL && (*keys_file)[0] == '\0') {
        fprintf(stderr, PROG " %s: --keys-file needs a file name\n", cmd);
        return EXIT_USAGE;
    }
    return -1;
}

int ctl_keygen(const struct ctl_ctx *ctx, int argc, char **argv)
{
    (void)ctx;
    int rc = ctl_parse(argc, argv, false, NULL);
    if (rc >= 0)
        return rc;
    if (sodium_init() < 0) {
        fprintf(stderr, PROG " keygen: libsodium failed to initialise\n");
        return EXIT_WORK_FAILED;
    }
    char key[46];
    fernet_generate_key(key);
    key[44] = '\n';
    key[45] = '\0';
    rc = ctl_write_all(STDOUT_FILENO, argv[0], key, 45) == 0 ? EXIT_OK_ : EXIT_WORK_FAILED;
    sodium_memzero(key, sizeof(key));
    return rc;
}

/*
 * What encrypt and decrypt share: options, the key list, all of stdin.
 * Returns -1 to go on (*kr and *in then belong to the caller), else the
 * command's exit code.
 */
static int start_stdin_command(const struct ctl_ctx *ctx, int argc, char **argv,
                               struct keyring **kr, struct secret *in)
{
    const char *keys_file = NULL;
    int rc = ctl_parse(argc, argv, true, &keys_file);
    if (rc >= 0)
        return rc;
    *kr = ctl_keys_load(ctx, argv[0], keys_file);
    if (*kr == NULL)
        return EXIT_CONFIG;
    if (ctl_read_all(STDIN_FILENO, argv[0], in) != 0) {
        keyring_unref(*kr);
        *kr = NULL;
        return EXIT_WORK_FAILED;
    }
    return -1;
}

int ctl_encrypt(const struct ctl_ctx *ctx, int argc, char **argv)
{
    struct keyring *kr = NULL;
    struct secret plain = {0};
    int rc = start_stdin_command(ctx, argc, argv, &kr, &plain);
    if (rc >= 0)
        return rc;
    char *token = NULL;
    if (keyring_encrypt(kr, (const uint8_t *)plain.data, plain.len, &token) != 0) {
        fprintf(stderr, PROG " %s: encryption failed\n", argv[0]);
        rc = EXIT_WORK_FAILED;
    } else {
        size_t n = strlen(token);
        token[n] = '\n'; /* the token's NUL becomes its newline; length is kept */
        rc = ctl_write_all(STDOUT_FILENO, argv[0], token, n + 1) == 0 ? EXIT_OK_ : EXIT_WORK_FAILED;
        free(token);
    }
    secret_clear(&plain);
    keyring_unref(kr);
    return rc;
}

static bool ctl_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

int ctl_decrypt(const struct ctl_ctx *ctx, int argc, char **argv)
{
    struct keyring *kr = NULL;
    struct secret in = {0};
    int rc = start_stdin_command(ctx, argc, argv, &kr, &in);
    if (rc >= 0)
        return rc;
    /* The token, without the newline of `echo` or a pasted line's spaces. */
    size_t a = 0, b = in.len;
    while (a < b && ctl_is_space(in.data[a]))
        a++;
    while (b > a && ctl_is_space(in.data[b - 1]))
        b--;
    if (a == b) {
        fprintf(stderr, PROG " %s: no token on stdin\n", argv[0]);
        secret_clear(&in);
        keyring_unref(kr);
        return EXIT_WORK_FAILED;
    }
    struct secret plain = {0};
    char err[ERRBUF_LEN] = "";
    if (stored_token_decrypt(kr, in.data + a, b - a, &plain, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, PROG " %s: cannot decrypt: %s\n", argv[0], err);
        rc = EXIT_WORK_FAILED;
    } else {
        rc = ctl_write_all(STDOUT_FILENO, argv[0], plain.data, plain.len) == 0 ? EXIT_OK_
                                                                               : EXIT_WORK_FAILED;
    }
    secret_clear(&plain);
    secret_clear(&in);
    keyring_unref(kr);
    return rc;
}
