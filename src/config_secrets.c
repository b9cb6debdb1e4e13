/*
 * config_secrets.c — where the configuration's files are and the reading of
 * its secret files: client secrets, a conninfo with a password, the Django
 * application's SECRET_KEY, fallbacks, salts and FERNET_KEYS. A relative
 * secret file name is looked up in $CREDENTIALS_DIRECTORY (systemd
 * LoadCredential=) when set, else next to the config file. Private to the
 * loader (config_load.h).
 *
 * It must never put a secret's content into an error or warning, and never
 * leave one in freed memory: contents live in sodium_malloc()ed memory and are
 * handed on as guarded copies.
 */
#include "config_load.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "secret.h"

/* Secret files hold one value or a short list; anything larger is a mistake. */
#define SECRET_FILE_MAX_BYTES (64 * 1024)

char *config_path_join(const char *dir, const char *name)
{
    char *out = NULL;
    if (name[0] == '/')
        return strdup(name);
    if (asprintf(&out, "%s/%s", dir, name) < 0)
        return NULL;
    return out;
}

/* Secret files: $CREDENTIALS_DIRECTORY when set, else the config's directory. */
char *config_secret_path(struct config_loader *ld, const char *name)
{
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    return config_path_join(creds != NULL && creds[0] != '\0' ? creds : ld->cfg->dir, name);
}

/*
 * Reads a secret file into guarded memory (secret_file_read) and reports what
 * is wrong with it against the key that named it. Returns NULL after
 * reporting; the report never holds content.
 */
static char *read_secret_file(struct config_loader *ld, const char *path, const char *section,
                              const char *key, int line, size_t *len_out)
{
    char why[ERRBUF_LEN];
    unsigned mode = 0;
    char *buf = secret_file_read(path, SECRET_FILE_MAX_BYTES, len_out, &mode, why, sizeof why);
    if (buf == NULL) {
        config_add_error(ld, line, section, key, "%s: %s%s", path, why,
                         strncmp(why, "larger", 6) == 0 ? "; not a secret file" : "");
        return NULL;
    }
    if ((mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)) != 0)
        config_add_warning(
            ld, line, section, key,
            "%s is accessible to group or others (mode %04o); it should be 0600 or 0400", path,
            mode);
    if (memchr(buf, '\0', *len_out) != NULL) {
        config_add_error(ld, line, section, key, "%s: contains NUL bytes", path);
        sodium_free(buf);
        return NULL;
    }
    return buf;
}

/*
 * Reads a single-value secret file: surrounding whitespace (the trailing
 * newline editors add) is stripped. Returns a guarded copy
 * (secret_guarded_dup; the caller releases it with secret_guarded_free), or
 * NULL after reporting.
 */
char *config_secret_single(struct config_loader *ld, const char *name, enum section_id sec, int k,
                           int line, bool multiline_ok)
{
    char secname[32];
    const char *key = config_section_keys(sec)[k];
    config_section_name(ld, sec, secname, sizeof(secname));

    char *path = config_secret_path(ld, name);
    if (path == NULL) {
        config_add_error(ld, line, secname, key, "out of memory");
        return NULL;
    }
    size_t len = 0;
    char *buf = read_secret_file(ld, path, secname, key, line, &len);
    if (buf == NULL) {
        free(path);
        return NULL;
    }
    char *a = buf, *b = buf + len;
    while (a < b && config_is_blank(*a))
        a++;
    while (b > a && config_is_blank(b[-1]))
        b--;
    char *out = NULL;
    if (a == b) {
        config_add_error(ld, line, secname, key, "%s: file is empty", path);
    } else if (!multiline_ok && memchr(a, '\n', (size_t)(b - a)) != NULL) {
        config_add_error(ld, line, secname, key, "%s: holds more than one line; expected one value",
                         path);
    } else {
        out = secret_guarded_dup(a, (size_t)(b - a));
        if (out == NULL)
            config_add_error(ld, line, secname, key, "out of memory");
    }
    sodium_free(buf);
    free(path);
    return out;
}

void config_secret_list_free(struct config_secret_list *l)
{
    if (l->buf != NULL)
        sodium_free(l->buf);
    memset(l, 0, sizeof(*l));
}

/*
 * Reads a list secret file: one value per line, surrounding whitespace
 * stripped, blank lines skipped. There are no comments: Django secret keys
 * may legitimately contain '#'.
 */
bool config_secret_list_read(struct config_loader *ld, const char *name, int k, int line,
                             bool empty_ok, struct config_secret_list *out)
{
    const char *key = config_section_keys(SEC_CRYPTO)[k];
    char *path = config_secret_path(ld, name);
    if (path == NULL) {
        config_add_error(ld, line, "crypto", key, "out of memory");
        return false;
    }
    size_t len = 0;
    memset(out, 0, sizeof(*out));
    out->buf = read_secret_file(ld, path, "crypto", key, line, &len);
    if (out->buf == NULL) {
        free(path);
        return false;
    }
    char *p = out->buf, *end = out->buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl != NULL ? nl : end;
        char *a = p, *b = e;
        while (a < b && config_is_blank(*a))
            a++;
        while (b > a && config_is_blank(b[-1]))
            b--;
        if (a < b) {
            if (out->n == DERIVED_KEYS_MAX) {
                config_add_error(ld, line, "crypto", key, "%s: more than %d entries", path,
                                 DERIVED_KEYS_MAX);
                config_secret_list_free(out);
                free(path);
                return false;
            }
            out->item[out->n] = a;
            out->len[out->n] = (size_t)(b - a);
            out->n++;
        }
        p = e + 1;
    }
    if (out->n == 0 && !empty_ok) {
        config_add_error(ld, line, "crypto", key, "%s: file is empty", path);
        config_secret_list_free(out);
        free(path);
        return false;
    }
    free(path);
    return true;
}
