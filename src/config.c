/*
 * config.c — turns the INI file of SPEC §3 into one immutable, validated,
 * reference-counted struct config. It owns the list of sections and keys with
 * their defaults, the rules for resolving secret and non-secret paths, the
 * reading of secret files (among them the Django application's secrets that
 * django_keys.c derives the keyring from), and the wording of configuration errors
 * ("file:line: [section] key: message", every problem found, not just the
 * first).
 *
 * It must never put a secret (client secret, conninfo, key, Django secret or
 * salt) into an error or warning, never leave a secret in freed memory, never
 * create directories or connect to anything, and never return a half-checked
 * config: config_load() yields a whole config or NULL.
 *
 * Parsing is done by libinih. Debian's inih calls the handler without a line
 * number, so the file is fed to ini_parse_stream() through a reader that
 * counts lines, which also lets us report every syntax error (inih reports
 * only the first), strip inline '#' comments like the SPEC's example uses,
 * and refuse over-long lines instead of letting inih split them silently.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <curl/curl.h>
#include <ini.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "django_keys.h"
#include "log.h"
#include "parse.h"
#include "secret.h"
#include "version.h"

#define DEFAULT_STATE_DIRECTORY "/var/lib/oauth-refreshd"
/* Secret files hold one value or a short list; anything larger is a mistake. */
#define SECRET_FILE_MAX_BYTES (64 * 1024)
/* At most this many keys come out of a key derivation (PBKDF2 costs ~50 ms each). */
#define DERIVED_KEYS_MAX 32

/* ---- provider names ---------------------------------------------------- */

static const char *const provider_names[PROVIDER_NAMED_COUNT] = {"google", "github", "microsoft"};
static const char *const provider_default_token_urls[PROVIDER_NAMED_COUNT] = {
    "https://oauth2.googleapis.com/token",
    "https://github.com/login/oauth/access_token",
    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
};

/*
 * The generic providers' names by id, for the life of the process (config.h):
 * filled by the loader of an accepted config on the loop's thread, never
 * emptied, so a name read here stays valid.
 */
static char registered_names[PROVIDER_MAX][PROVIDER_NAME_MAX + 1];

static int named_id(const char *name)
{
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++) {
        if (strcmp(name, provider_names[i]) == 0)
            return i;
    }
    return -1;
}

int provider_id_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    int id = named_id(name);
    if (id >= 0 || !provider_name_valid(name))
        return id;
    for (int i = PROVIDER_NAMED_COUNT; i < PROVIDER_MAX; i++) {
        if (strcmp(name, registered_names[i]) == 0)
            return i;
    }
    return -1;
}

const char *provider_id_name(enum provider_id id)
{
    if ((int)id < 0 || id >= PROVIDER_MAX)
        return "unknown";
    if (id < PROVIDER_NAMED_COUNT)
        return provider_names[id];
    return registered_names[id][0] ? registered_names[id] : "unknown";
}

bool provider_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    /* A letter first: the spool tells a name from a named provider's digit by it. */
    if (n == 0 || n > PROVIDER_NAME_MAX || name[0] < 'a' || name[0] > 'z')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

int provider_id_register(const char *name)
{
    if (!provider_name_valid(name) || named_id(name) >= 0)
        return -1;
    int id = provider_id_from_name(name);
    if (id >= 0)
        return id;
    for (int i = PROVIDER_NAMED_COUNT; i < PROVIDER_MAX; i++) {
        if (registered_names[i][0] == '\0') {
            snprintf(registered_names[i], sizeof(registered_names[i]), "%s", name);
            return i;
        }
    }
    return -1;
}

const char *client_auth_name(enum client_auth a)
{
    switch (a) {
    case CLIENT_AUTH_DEFAULT:
        return "default";
    case CLIENT_AUTH_BASIC:
        return "client_secret_basic";
    case CLIENT_AUTH_POST:
        return "client_secret_post";
    }
    return "unknown";
}

/* ---- the schema: sections and their keys ------------------------------- */

enum section_id {
    SEC_DAEMON,
    SEC_DATABASE,
    SEC_CRYPTO,
    SEC_REFRESH,
    SEC_HTTP,
    SEC_METRICS,
    SEC_PROVIDER, /* SEC_PROVIDER + slot: a named id, or a generic section's slot
                     (PROVIDER_NAMED_COUNT up, in the file's order; see place_providers) */
    SEC_COUNT = SEC_PROVIDER + PROVIDER_MAX,
};

enum { K_MAX = 12 }; /* the most keys a section has, with room */

/* Key indexes per section (must match section_keys below). */
enum { K_LOG_LEVEL, K_STATE_DIRECTORY, K_SHUTDOWN_TIMEOUT };
enum { K_CONNINFO, K_CONNINFO_FILE, K_HEARTBEAT_INTERVAL };
enum {
    K_KEYS_FILE,
    K_KEY_DERIVATION,
    K_SECRET_KEY_FILE,
    K_SECRET_KEY_FALLBACKS_FILE,
    K_SALT_KEYS_FILE,
    K_FERNET_KEYS_FILE,
};
enum {
    K_LEAD_TIME,
    K_JITTER,
    K_SCAN_INTERVAL,
    K_BATCH_SIZE,
    K_MAX_IN_FLIGHT,
    K_REQUEST_TIMEOUT,
    K_RETRY_MIN,
    K_RETRY_MAX,
    K_CONFIG_ERROR_PROBE,
};
enum { K_CA_FILE, K_USER_AGENT, K_ALLOW_INSECURE_HTTP, K_HTTP_VERSION };
enum { K_LISTEN };
enum {
    K_CLIENT_ID,
    K_CLIENT_SECRET,
    K_CLIENT_SECRET_FILE,
    K_TOKEN_URL,
    K_TENANT,
    K_P_MAX_IN_FLIGHT,
    K_MAX_RATE,
    K_DIALECT,
    K_ISSUER,
    K_CLIENT_AUTH,
    K_SEND_SCOPE,
};

static const char *const provider_keys[K_MAX + 1] = {
    "client_id", "client_secret", "client_secret_file", "token_url",
    "tenant",    "max_in_flight", "max_rate",           "dialect",
    "issuer",    "client_auth",   "send_scope",         NULL,
};

static const char *const *section_keys(enum section_id sec)
{
    static const char *const daemon[] = {"log_level", "state_directory", "shutdown_timeout", NULL};
    static const char *const database[] = {"conninfo", "conninfo_file", "heartbeat_interval", NULL};
    static const char *const crypto[] = {"keys_file",
                                         "key_derivation",
                                         "secret_key_file",
                                         "secret_key_fallbacks_file",
                                         "salt_keys_file",
                                         "fernet_keys_file",
                                         NULL};
    static const char *const refresh[] = {
        "lead_time",       "jitter",    "scan_interval", "batch_size",         "max_in_flight",
        "request_timeout", "retry_min", "retry_max",     "config_error_probe", NULL};
    static const char *const http[] = {"ca_file", "user_agent", "allow_insecure_http",
                                       "http_version", NULL};
    static const char *const metrics[] = {"listen", NULL};

    switch (sec) {
    case SEC_DAEMON:
        return daemon;
    case SEC_DATABASE:
        return database;
    case SEC_CRYPTO:
        return crypto;
    case SEC_REFRESH:
        return refresh;
    case SEC_HTTP:
        return http;
    case SEC_METRICS:
        return metrics;
    default:
        return provider_keys;
    }
}

static const char *const base_section_names[SEC_PROVIDER] = {
    "daemon", "database", "crypto", "refresh", "http", "metrics",
};

struct load;
static void section_name(const struct load *ld, enum section_id sec, char *buf, size_t len);

/* ---- load context ------------------------------------------------------ */

struct raw_value {
    char *value; /* malloc()ed copy of the INI value; may be a secret: wiped */
    int line;    /* 0 = not set */
};

struct load {
    const char *path; /* as the caller named it: used in messages */
    struct config *cfg;
    struct config_errors *errs;
    config_warn_fn warn;
    void *warn_ud;

    FILE *fp;
    int lineno;
    char *line; /* getline buffer: may hold inline secrets, wiped */
    size_t line_cap;
    bool read_failed;

    int section_line[SEC_COUNT]; /* line of the first [section] header, 0 = absent */
    /* provider section slots: the names (slots below PROVIDER_NAMED_COUNT are the
     * named providers'), and the sections loaded, placed by id at the end */
    char slot_names[PROVIDER_MAX][PROVIDER_NAME_MAX + 1];
    int generic_slots; /* slots given to generic sections so far */
    struct provider_config *slot_config[PROVIDER_MAX];
    struct raw_value raw[SEC_COUNT][K_MAX];
    bool overflowed;
    int error_line[CONFIG_MAX_ERRORS]; /* to list errors in file order */
};

static void add_error(struct load *ld, int line, const char *section, const char *key,
                      const char *fmt, ...) PRINTF_LIKE(5, 6);

/* Formats "path[:line]: [[section] [key]: ]message" into out. An over-long
 * path or message is cut at outlen on purpose: the start says where. */
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
static void format_where(char *out, size_t outlen, const char *path, int line, const char *section,
                         const char *key, const char *msg)
{
    char where[ERRBUF_LEN];
    int n;

    if (line > 0)
        n = snprintf(where, sizeof(where), "%s:%d: ", path, line);
    else
        n = snprintf(where, sizeof(where), "%s: ", path);
    if (n < 0)
        n = 0;
    if (section != NULL && key != NULL)
        snprintf(out, outlen, "%s[%s] %s: %s", where, section, key, msg);
    else if (section != NULL)
        snprintf(out, outlen, "%s[%s]: %s", where, section, msg);
    else if (key != NULL)
        snprintf(out, outlen, "%s%s: %s", where, key, msg);
    else
        snprintf(out, outlen, "%s%s", where, msg);
}
#pragma GCC diagnostic pop

static void add_error(struct load *ld, int line, const char *section, const char *key,
                      const char *fmt, ...)
{
    char msg[ERRBUF_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct config_errors *e = ld->errs;
    if (e->count < CONFIG_MAX_ERRORS) {
        format_where(e->msg[e->count], sizeof(e->msg[0]), ld->path, line, section, key, msg);
        ld->error_line[e->count] = line;
        e->count++;
    } else if (!ld->overflowed) {
        ld->overflowed = true;
        snprintf(e->msg[CONFIG_MAX_ERRORS - 1], sizeof(e->msg[0]),
                 "%s: too many errors; only the first %d are shown", ld->path,
                 CONFIG_MAX_ERRORS - 1);
    }
}

static void add_warning(struct load *ld, int line, const char *section, const char *key,
                        const char *fmt, ...) PRINTF_LIKE(5, 6);
static void add_warning(struct load *ld, int line, const char *section, const char *key,
                        const char *fmt, ...)
{
    char msg[ERRBUF_LEN], full[ERRBUF_LEN];
    va_list ap;

    if (ld->warn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    format_where(full, sizeof(full), ld->path, line, section, key, msg);
    ld->warn(ld->warn_ud, full);
}

/* ---- the line reader fed to inih --------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static void section_name(const struct load *ld, enum section_id sec, char *buf, size_t len)
{
    if (sec < SEC_PROVIDER)
        snprintf(buf, len, "%s", base_section_names[sec]);
    else
        snprintf(buf, len, "provider.%s", ld->slot_names[sec - SEC_PROVIDER]);
}

/* A provider section's slot: a named provider's id, else a generic section's slot. */
static int provider_slot(const struct load *ld, const char *name)
{
    int id = named_id(name);
    if (id >= 0)
        return id;
    for (int i = PROVIDER_NAMED_COUNT; i < PROVIDER_NAMED_COUNT + ld->generic_slots; i++) {
        if (strcmp(name, ld->slot_names[i]) == 0)
            return i;
    }
    return -1;
}

static int section_from_name(const struct load *ld, const char *name)
{
    for (int i = 0; i < SEC_PROVIDER; i++) {
        if (strcmp(name, base_section_names[i]) == 0)
            return i;
    }
    if (strncmp(name, "provider.", 9) == 0) {
        int p = provider_slot(ld, name + 9);
        if (p >= 0)
            return SEC_PROVIDER + p;
    }
    return -1;
}

/* Gives a new generic [provider.NAME] section a slot; -1 after reporting why not. */
static int generic_section_new(struct load *ld, const char *name)
{
    if (!provider_name_valid(name)) {
        add_error(ld, ld->lineno, NULL, NULL,
                  "[provider.%.40s]: \"%.40s\" is not a provider name (a letter a-z, then up to "
                  "%d of a-z, 0-9, - and _, as in oauth_accounts.provider)",
                  name, name, PROVIDER_NAME_MAX - 1);
        return -1;
    }
    if (PROVIDER_NAMED_COUNT + ld->generic_slots >= PROVIDER_MAX) {
        add_error(ld, ld->lineno, NULL, NULL,
                  "[provider.%s]: too many providers (at most %d besides google, github and "
                  "microsoft)",
                  name, PROVIDER_MAX - PROVIDER_NAMED_COUNT);
        return -1;
    }
    int slot = PROVIDER_NAMED_COUNT + ld->generic_slots++;
    snprintf(ld->slot_names[slot], sizeof(ld->slot_names[slot]), "%s", name);
    return SEC_PROVIDER + slot;
}

/* Records a [section] header; reports unknown and repeated sections. */
static void note_section(struct load *ld, const char *name)
{
    int sec = section_from_name(ld, name);
    if (sec < 0 && strncmp(name, "provider.", 9) == 0) {
        sec = generic_section_new(ld, name + 9);
        if (sec < 0)
            return;
    }
    if (sec < 0) {
        add_error(ld, ld->lineno, name, NULL, "unknown section");
        return;
    }
    if (ld->section_line[sec] != 0) {
        add_error(ld, ld->lineno, name, NULL, "section appears twice (first at line %d)",
                  ld->section_line[sec]);
        return;
    }
    ld->section_line[sec] = ld->lineno;
}

/*
 * Cuts an inline comment: '#' or ';' at the start or after whitespace (a ';'
 * or '#' inside a value such as "a;b" stays).
 */
static void cut_comment(char *s)
{
    for (char *p = s; *p != '\0'; p++) {
        if ((*p == '#' || *p == ';') && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return;
        }
    }
}

/* fgets-style reader: one whole, pre-checked line per call (see file comment). */
static char *reader_cb(char *str, int num, void *stream)
{
    struct load *ld = stream;

    for (;;) {
        errno = 0;
        ssize_t n = getline(&ld->line, &ld->line_cap, ld->fp);
        if (n < 0) {
            if (ferror(ld->fp)) {
                add_error(ld, 0, NULL, NULL, "cannot read: %s", strerror(errno ? errno : EIO));
                ld->read_failed = true;
            }
            return NULL;
        }
        ld->lineno++;
        char *s = ld->line;
        if (strlen(s) != (size_t)n) {
            add_error(ld, ld->lineno, NULL, NULL, "line contains a NUL byte");
            continue;
        }
        if (ld->lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
            s += 3; /* UTF-8 byte order mark */
        while (is_blank(*s))
            s++;
        if (*s == '#' || *s == ';')
            continue;
        cut_comment(s);
        size_t len = strlen(s);
        while (len > 0 && is_blank(s[len - 1]))
            s[--len] = '\0';
        if (len == 0)
            continue;
        if (num < 3 || len > (size_t)num - 2) {
            add_error(ld, ld->lineno, NULL, NULL, "line too long (at most %d characters)",
                      num > 2 ? num - 2 : 0);
            continue;
        }
        if (s[0] == '[') {
            char *close = strchr(s, ']');
            if (close == NULL) {
                add_error(ld, ld->lineno, NULL, NULL, "section header without closing ']'");
                continue;
            }
            if (close[1] != '\0') {
                add_error(ld, ld->lineno, NULL, NULL, "unexpected text after section header");
                continue;
            }
            *close = '\0';
            note_section(ld, s + 1);
            *close = ']';
        } else if (strpbrk(s, "=:") == NULL) {
            add_error(ld, ld->lineno, NULL, NULL, "expected \"key = value\" or \"[section]\"");
            continue;
        }
        memcpy(str, s, len);
        str[len] = '\n';
        str[len + 1] = '\0';
        return str;
    }
}

static int key_index(enum section_id sec, const char *key)
{
    const char *const *keys = section_keys(sec);
    for (int i = 0; keys[i] != NULL; i++) {
        if (strcmp(keys[i], key) == 0)
            return i;
    }
    return -1;
}

static int handler_cb(void *user, const char *section, const char *name, const char *value)
{
    struct load *ld = user;

    if (*section == '\0') {
        add_error(ld, ld->lineno, NULL, name, "key outside any [section]");
        return 1;
    }
    int sec = section_from_name(ld, section);
    if (sec < 0)
        return 1; /* reported once at the header */
    int k = key_index((enum section_id)sec, name);
    if (k < 0) {
        add_error(ld, ld->lineno, section, name, "unknown key");
        return 1;
    }
    struct raw_value *rv = &ld->raw[sec][k];
    if (rv->line != 0) {
        add_error(ld, ld->lineno, section, name, "set twice (first at line %d)", rv->line);
        return 1;
    }
    rv->value = strdup(value);
    if (rv->value == NULL) {
        add_error(ld, ld->lineno, section, name, "out of memory");
        return 1;
    }
    rv->line = ld->lineno;
    return 1; /* errors are collected here, never via inih's return value */
}

/* ---- helpers for phase two --------------------------------------------- */

/* The value of a key, or NULL when unset or empty (empty means "default"). */
static const char *raw_get(struct load *ld, enum section_id sec, int k, int *line)
{
    struct raw_value *rv = &ld->raw[sec][k];
    if (line != NULL)
        *line = rv->line != 0 ? rv->line : ld->section_line[sec];
    if (rv->line == 0 || rv->value == NULL || rv->value[0] == '\0')
        return NULL;
    return rv->value;
}

static bool has_control_chars(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

static char *path_join(const char *dir, const char *name)
{
    char *out = NULL;
    if (name[0] == '/')
        return strdup(name);
    if (asprintf(&out, "%s/%s", dir, name) < 0)
        return NULL;
    return out;
}

/* Secret files: $CREDENTIALS_DIRECTORY when set, else the config's directory. */
static char *resolve_secret_path(struct load *ld, const char *name)
{
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    return path_join(creds != NULL && creds[0] != '\0' ? creds : ld->cfg->dir, name);
}

/*
 * Reads a secret file into guarded memory (secret_file_read) and reports what
 * is wrong with it against the key that named it. Returns NULL after
 * reporting; the report never holds content.
 */
static char *read_secret_file(struct load *ld, const char *path, const char *section,
                              const char *key, int line, size_t *len_out)
{
    char why[ERRBUF_LEN];
    unsigned mode = 0;
    char *buf = secret_file_read(path, SECRET_FILE_MAX_BYTES, len_out, &mode, why, sizeof why);
    if (buf == NULL) {
        add_error(ld, line, section, key, "%s: %s%s", path, why,
                  strncmp(why, "larger", 6) == 0 ? "; not a secret file" : "");
        return NULL;
    }
    if ((mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)) != 0)
        add_warning(ld, line, section, key,
                    "%s is accessible to group or others (mode %04o); it should be 0600 or 0400",
                    path, mode);
    if (memchr(buf, '\0', *len_out) != NULL) {
        add_error(ld, line, section, key, "%s: contains NUL bytes", path);
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
static char *secret_file_single(struct load *ld, const char *name, enum section_id sec, int k,
                                int line, bool multiline_ok)
{
    char secname[32];
    const char *key = section_keys(sec)[k];
    section_name(ld, sec, secname, sizeof(secname));

    char *path = resolve_secret_path(ld, name);
    if (path == NULL) {
        add_error(ld, line, secname, key, "out of memory");
        return NULL;
    }
    size_t len = 0;
    char *buf = read_secret_file(ld, path, secname, key, line, &len);
    if (buf == NULL) {
        free(path);
        return NULL;
    }
    char *a = buf, *b = buf + len;
    while (a < b && is_blank(*a))
        a++;
    while (b > a && is_blank(b[-1]))
        b--;
    char *out = NULL;
    if (a == b) {
        add_error(ld, line, secname, key, "%s: file is empty", path);
    } else if (!multiline_ok && memchr(a, '\n', (size_t)(b - a)) != NULL) {
        add_error(ld, line, secname, key, "%s: holds more than one line; expected one value", path);
    } else {
        out = secret_guarded_dup(a, (size_t)(b - a));
        if (out == NULL)
            add_error(ld, line, secname, key, "out of memory");
    }
    sodium_free(buf);
    free(path);
    return out;
}

/* One entry of a list secret file (each non-blank line, trimmed). */
struct secret_list {
    char *buf; /* sodium_malloc()ed file content, entries point into it */
    size_t n;
    const char *item[DERIVED_KEYS_MAX];
    size_t len[DERIVED_KEYS_MAX];
};

static void secret_list_free(struct secret_list *l)
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
static bool secret_file_list(struct load *ld, const char *name, int k, int line, bool empty_ok,
                             struct secret_list *out)
{
    const char *key = section_keys(SEC_CRYPTO)[k];
    char *path = resolve_secret_path(ld, name);
    if (path == NULL) {
        add_error(ld, line, "crypto", key, "out of memory");
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
        while (a < b && is_blank(*a))
            a++;
        while (b > a && is_blank(b[-1]))
            b--;
        if (a < b) {
            if (out->n == DERIVED_KEYS_MAX) {
                add_error(ld, line, "crypto", key, "%s: more than %d entries", path,
                          DERIVED_KEYS_MAX);
                secret_list_free(out);
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
        add_error(ld, line, "crypto", key, "%s: file is empty", path);
        secret_list_free(out);
        free(path);
        return false;
    }
    free(path);
    return true;
}

static bool get_duration(struct load *ld, enum section_id sec, int k, int64_t min, int64_t max,
                         int64_t *out)
{
    int line;
    const char *v;
    char secname[32];

    v = raw_get(ld, sec, k, &line);
    if (ld->raw[sec][k].line == 0)
        return true; /* default */
    section_name(ld, sec, secname, sizeof(secname));
    int64_t ms;
    if (v == NULL || !parse_duration_ms(v, &ms)) {
        add_error(ld, line, secname, section_keys(sec)[k],
                  "\"%s\" is not a duration (e.g. 300, 250ms, 5min, 1h30min)", v ? v : "");
        return false;
    }
    if (ms < min || ms > max) {
        char a[32], b[32];
        format_duration_ms(min, a, sizeof(a));
        format_duration_ms(max, b, sizeof(b));
        add_error(ld, line, secname, section_keys(sec)[k], "must be between %s and %s", a, b);
        return false;
    }
    *out = ms;
    return true;
}

static bool get_unsigned(struct load *ld, enum section_id sec, int k, uint64_t min, uint64_t max,
                         unsigned *out)
{
    int line;
    char secname[32];
    const char *v = raw_get(ld, sec, k, &line);
    uint64_t n;

    if (ld->raw[sec][k].line == 0)
        return true;
    section_name(ld, sec, secname, sizeof(secname));
    if (v == NULL || !parse_u64(v, min, max, &n)) {
        add_error(ld, line, secname, section_keys(sec)[k],
                  "\"%s\" is not a whole number between %llu and %llu", v ? v : "",
                  (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

static char *dup_or_oom(struct load *ld, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        add_error(ld, 0, NULL, NULL, "out of memory");
    return d;
}

/* ---- phase two: one function per section -------------------------------- */

static void load_daemon(struct load *ld)
{
    struct config *cfg = ld->cfg;
    int line;
    const char *v;

    if ((v = raw_get(ld, SEC_DAEMON, K_LOG_LEVEL, &line)) != NULL ||
        ld->raw[SEC_DAEMON][K_LOG_LEVEL].line != 0) {
        int lvl = log_level_from_name(v != NULL ? v : "");
        if (lvl < 0)
            add_error(ld, line, "daemon", "log_level",
                      "\"%s\" is not one of debug, info, notice, warning, err", v ? v : "");
        else
            cfg->log_level = lvl;
    }

    v = raw_get(ld, SEC_DAEMON, K_STATE_DIRECTORY, &line);
    if (v != NULL) {
        cfg->state_directory = path_join(cfg->dir, v);
    } else {
        /* systemd passes StateDirectory= as absolute paths joined by ':'. */
        const char *env = getenv("STATE_DIRECTORY");
        if (env != NULL && env[0] != '\0' && env[0] != ':') {
            size_t n = strcspn(env, ":");
            cfg->state_directory = strndup(env, n);
        } else {
            cfg->state_directory = strdup(DEFAULT_STATE_DIRECTORY);
        }
    }
    if (cfg->state_directory == NULL)
        add_error(ld, 0, NULL, NULL, "out of memory");
    else if (cfg->state_directory[0] != '/')
        add_error(ld, 0, "daemon", "state_directory", "$STATE_DIRECTORY must be an absolute path");

    (void)get_duration(ld, SEC_DAEMON, K_SHUTDOWN_TIMEOUT, 0, 3600 * 1000LL,
                       &cfg->shutdown_timeout_ms);
}

static bool conninfo_valid(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    /* libpq's message may quote part of the string, which may hold a password. */
    if (err != NULL)
        PQfreemem(err);
    if (opts == NULL)
        return false;
    PQconninfoFree(opts);
    return true;
}

static void load_heartbeat(struct load *ld)
{
    int64_t ms = ld->cfg->heartbeat_interval_ms;
    if (!get_duration(ld, SEC_DATABASE, K_HEARTBEAT_INTERVAL, 0, 24 * 3600 * 1000LL, &ms))
        return;
    if (ms != 0 && ms < 1000) {
        int line;
        (void)raw_get(ld, SEC_DATABASE, K_HEARTBEAT_INTERVAL, &line);
        add_error(ld, line, "database", "heartbeat_interval", "must be 0 (off) or at least 1s");
        return;
    }
    ld->cfg->heartbeat_interval_ms = ms;
}

static void load_database(struct load *ld)
{
    int line, file_line;
    load_heartbeat(ld);
    const char *inline_v = raw_get(ld, SEC_DATABASE, K_CONNINFO, &line);
    const char *file_v = raw_get(ld, SEC_DATABASE, K_CONNINFO_FILE, &file_line);

    if (inline_v != NULL && file_v != NULL) {
        add_error(ld, file_line, "database", "conninfo_file",
                  "conninfo and conninfo_file are mutually exclusive (conninfo is set at line %d)",
                  line);
        return;
    }
    if (file_v != NULL) {
        char *c = secret_file_single(ld, file_v, SEC_DATABASE, K_CONNINFO_FILE, file_line, true);
        if (c == NULL)
            return;
        if (!conninfo_valid(c)) {
            add_error(ld, file_line, "database", "conninfo_file",
                      "%s does not hold a valid libpq conninfo string or URI", file_v);
            secret_guarded_free(c);
            return;
        }
        ld->cfg->conninfo = c;
        return;
    }
    if (inline_v != NULL && !conninfo_valid(inline_v)) {
        add_error(ld, line, "database", "conninfo", "not a valid libpq conninfo string or URI");
        return;
    }
    /* Guarded like the keys. libpq makes its own copies when it connects
     * (db.c, ctl_db.c): those are out of our hands. */
    const char *c = inline_v != NULL ? inline_v : "";
    if ((ld->cfg->conninfo = secret_guarded_dup(c, strlen(c))) == NULL)
        add_error(ld, line, "database", "conninfo", "out of memory");
}

/* ---- key derivations (the arithmetic is in django_keys.c) ------------- */

/* Derives the key list of the configured scheme and builds the keyring. */
static void derive_keyring(struct load *ld)
{
    struct config *cfg = ld->cfg;
    struct secret_list secrets = {0}, fallbacks = {0}, salts = {0};
    int line_sk, line_fb, line_salt, line_fk, line_kd;
    const char *sk = raw_get(ld, SEC_CRYPTO, K_SECRET_KEY_FILE, &line_sk);
    const char *fb = raw_get(ld, SEC_CRYPTO, K_SECRET_KEY_FALLBACKS_FILE, &line_fb);
    const char *sl = raw_get(ld, SEC_CRYPTO, K_SALT_KEYS_FILE, &line_salt);
    const char *fk = raw_get(ld, SEC_CRYPTO, K_FERNET_KEYS_FILE, &line_fk);
    (void)raw_get(ld, SEC_CRYPTO, K_KEY_DERIVATION, &line_kd);
    bool ok = true;

    if (cfg->key_derivation == KEY_DERIVATION_DJANGO_FERNET_FIELDS) {
        if (fb != NULL)
            add_error(ld, line_fb, "crypto", "secret_key_fallbacks_file",
                      "only used with key_derivation = django-fernet-encrypted-fields");
        if (sl != NULL)
            add_error(ld, line_salt, "crypto", "salt_keys_file",
                      "only used with key_derivation = django-fernet-encrypted-fields");
        if (fb != NULL || sl != NULL)
            return;
        if (sk != NULL && fk != NULL) {
            add_error(ld, line_fk, "crypto", "fernet_keys_file",
                      "set fernet_keys_file (FERNET_KEYS) or secret_key_file (SECRET_KEY), not "
                      "both (secret_key_file is set at line %d)",
                      line_sk);
            return;
        }
        if (sk == NULL && fk == NULL) {
            add_error(ld, line_kd, "crypto", "key_derivation",
                      "django-fernet-fields needs fernet_keys_file (the app's FERNET_KEYS) or "
                      "secret_key_file (its SECRET_KEY)");
            return;
        }
        if (fk != NULL)
            ok = secret_file_list(ld, fk, K_FERNET_KEYS_FILE, line_fk, false, &secrets);
        else
            ok = secret_file_list(ld, sk, K_SECRET_KEY_FILE, line_sk, false, &secrets);
        if (ok && fk == NULL && secrets.n != 1) {
            add_error(ld, line_sk, "crypto", "secret_key_file",
                      "holds %zu lines; expected one SECRET_KEY", secrets.n);
            ok = false;
        }
        if (ok) {
            char err[ERRBUF_LEN];
            cfg->keys = django_keys_fernet_fields_ring(secrets.item, secrets.len, secrets.n, err,
                                                       sizeof(err));
            if (cfg->keys == NULL)
                add_error(ld, line_kd, "crypto", "key_derivation", "%s", err);
        }
    } else { /* KEY_DERIVATION_DJANGO_FERNET_ENCRYPTED_FIELDS */
        if (fk != NULL) {
            add_error(ld, line_fk, "crypto", "fernet_keys_file",
                      "only used with key_derivation = django-fernet-fields");
            return;
        }
        if (sk == NULL)
            add_error(ld, line_kd, "crypto", "secret_key_file",
                      "required with key_derivation = django-fernet-encrypted-fields");
        if (sl == NULL)
            add_error(ld, line_kd, "crypto", "salt_keys_file",
                      "required with key_derivation = django-fernet-encrypted-fields");
        if (sk == NULL || sl == NULL)
            return;
        ok = secret_file_list(ld, sk, K_SECRET_KEY_FILE, line_sk, false, &secrets);
        if (ok && secrets.n != 1) {
            add_error(ld, line_sk, "crypto", "secret_key_file",
                      "holds %zu lines; expected one SECRET_KEY", secrets.n);
            ok = false;
        }
        if (ok && fb != NULL)
            ok = secret_file_list(ld, fb, K_SECRET_KEY_FALLBACKS_FILE, line_fb, true, &fallbacks);
        if (ok)
            ok = secret_file_list(ld, sl, K_SALT_KEYS_FILE, line_salt, false, &salts);
        if (ok && (1 + fallbacks.n) * salts.n > DERIVED_KEYS_MAX) {
            add_error(ld, line_salt, "crypto", "salt_keys_file",
                      "%zu secret keys x %zu salts make more than %d keys", 1 + fallbacks.n,
                      salts.n, DERIVED_KEYS_MAX);
            ok = false;
        }
        if (ok) {
            const char *sec[DERIVED_KEYS_MAX + 1];
            size_t sec_len[DERIVED_KEYS_MAX + 1];
            sec[0] = secrets.item[0];
            sec_len[0] = secrets.len[0];
            for (size_t f = 0; f < fallbacks.n; f++) {
                sec[1 + f] = fallbacks.item[f];
                sec_len[1 + f] = fallbacks.len[f];
            }
            char err[ERRBUF_LEN];
            cfg->keys = django_keys_encrypted_fields_ring(sec, sec_len, 1 + fallbacks.n, salts.item,
                                                          salts.len, salts.n, err, sizeof(err));
            if (cfg->keys == NULL)
                add_error(ld, line_kd, "crypto", "key_derivation", "%s", err);
        }
    }
    secret_list_free(&secrets);
    secret_list_free(&fallbacks);
    secret_list_free(&salts);
}

struct keys_warn {
    struct load *ld;
    int line;
};

static void keys_warn_cb(void *ud, const char *msg)
{
    struct keys_warn *kw = ud;
    add_warning(kw->ld, kw->line, "crypto", "keys_file", "%s", msg);
}

static void load_crypto(struct load *ld)
{
    struct config *cfg = ld->cfg;
    int line;
    const char *v = raw_get(ld, SEC_CRYPTO, K_KEY_DERIVATION, &line);

    if (v != NULL || ld->raw[SEC_CRYPTO][K_KEY_DERIVATION].line != 0) {
        if (v != NULL && strcmp(v, "none") == 0) {
            cfg->key_derivation = KEY_DERIVATION_NONE;
        } else if (v != NULL && strcmp(v, "django-fernet-fields") == 0) {
            cfg->key_derivation = KEY_DERIVATION_DJANGO_FERNET_FIELDS;
        } else if (v != NULL && strcmp(v, "django-fernet-encrypted-fields") == 0) {
            cfg->key_derivation = KEY_DERIVATION_DJANGO_FERNET_ENCRYPTED_FIELDS;
        } else {
            add_error(ld, line, "crypto", "key_derivation",
                      "\"%s\" is not one of none, django-fernet-fields, "
                      "django-fernet-encrypted-fields",
                      v != NULL ? v : "");
            return;
        }
    }

    int kf_line;
    const char *kf = raw_get(ld, SEC_CRYPTO, K_KEYS_FILE, &kf_line);
    if (cfg->key_derivation != KEY_DERIVATION_NONE) {
        if (kf != NULL) {
            add_error(ld, kf_line, "crypto", "keys_file",
                      "cannot be combined with key_derivation = %s (the keys are derived)", v);
            return;
        }
        derive_keyring(ld);
        return;
    }

    static const int derivation_only[] = {K_SECRET_KEY_FILE, K_SECRET_KEY_FALLBACKS_FILE,
                                          K_SALT_KEYS_FILE, K_FERNET_KEYS_FILE};
    bool stray = false;
    for (size_t i = 0; i < ARRAY_LEN(derivation_only); i++) {
        int l;
        if (raw_get(ld, SEC_CRYPTO, derivation_only[i], &l) != NULL) {
            add_error(ld, l, "crypto", section_keys(SEC_CRYPTO)[derivation_only[i]],
                      "only used with a key_derivation other than none");
            stray = true;
        }
    }
    if (kf == NULL) {
        add_error(ld, kf_line, "crypto", "keys_file",
                  "required (the Fernet key list) when key_derivation = none");
        return;
    }
    if (stray)
        return;
    char *path = resolve_secret_path(ld, kf);
    if (path == NULL) {
        add_error(ld, kf_line, "crypto", "keys_file", "out of memory");
        return;
    }
    char err[ERRBUF_LEN];
    struct keys_warn kw = {ld, kf_line};
    cfg->keys = keyring_load_file(path, keys_warn_cb, &kw, err, sizeof(err));
    if (cfg->keys == NULL)
        add_error(ld, kf_line, "crypto", "keys_file", "%s: %s", path, err);
    free(path);
}

static void load_refresh(struct load *ld)
{
    struct config *cfg = ld->cfg;
    const int64_t S = 1000, MIN = 60 * S, H = 60 * MIN, D = 24 * H;

    (void)get_duration(ld, SEC_REFRESH, K_LEAD_TIME, S, D, &cfg->lead_time_ms);
    (void)get_duration(ld, SEC_REFRESH, K_JITTER, 0, D, &cfg->jitter_ms);
    (void)get_duration(ld, SEC_REFRESH, K_SCAN_INTERVAL, S, D, &cfg->scan_interval_ms);
    (void)get_unsigned(ld, SEC_REFRESH, K_BATCH_SIZE, 1, 100000, &cfg->batch_size);
    (void)get_unsigned(ld, SEC_REFRESH, K_MAX_IN_FLIGHT, 1, 100000, &cfg->max_in_flight);
    (void)get_duration(ld, SEC_REFRESH, K_REQUEST_TIMEOUT, S, 10 * MIN, &cfg->request_timeout_ms);
    bool a = get_duration(ld, SEC_REFRESH, K_RETRY_MIN, 100, D, &cfg->retry_min_ms);
    bool b = get_duration(ld, SEC_REFRESH, K_RETRY_MAX, S, 7 * D, &cfg->retry_max_ms);
    if (a && b && cfg->retry_min_ms > cfg->retry_max_ms) {
        int line;
        (void)raw_get(ld, SEC_REFRESH, K_RETRY_MIN, &line);
        add_error(ld, line, "refresh", "retry_min", "must not exceed retry_max");
    }
    (void)get_duration(ld, SEC_REFRESH, K_CONFIG_ERROR_PROBE, S, D, &cfg->config_error_probe_ms);
}

static void load_http(struct load *ld)
{
    struct config *cfg = ld->cfg;
    int line;
    const char *v;

    if ((v = raw_get(ld, SEC_HTTP, K_CA_FILE, &line)) != NULL) {
        /* Not a secret: always next to the config file, never in the credentials. */
        char *path = path_join(cfg->dir, v);
        if (path == NULL) {
            add_error(ld, line, "http", "ca_file", "out of memory");
        } else {
            struct stat st;
            int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
            if (fd < 0) {
                add_error(ld, line, "http", "ca_file", "%s: cannot open: %s", path,
                          strerror(errno));
                free(path);
            } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
                add_error(ld, line, "http", "ca_file", "%s: not a regular file", path);
                free(path);
            } else {
                cfg->ca_file = path;
            }
            if (fd >= 0)
                close(fd);
        }
    }

    if ((v = raw_get(ld, SEC_HTTP, K_USER_AGENT, &line)) != NULL) {
        if (has_control_chars(v))
            add_error(ld, line, "http", "user_agent", "contains control characters");
        else
            cfg->user_agent = dup_or_oom(ld, v);
    } else {
        cfg->user_agent = dup_or_oom(ld, "oauth-refreshd/" OAUTH_VERSION);
    }

    if (ld->raw[SEC_HTTP][K_ALLOW_INSECURE_HTTP].line != 0) {
        v = raw_get(ld, SEC_HTTP, K_ALLOW_INSECURE_HTTP, &line);
        if (v == NULL || !parse_bool(v, &cfg->allow_insecure_http))
            add_error(ld, line, "http", "allow_insecure_http",
                      "\"%s\" is not a boolean (yes/no, true/false, on/off, 1/0)", v ? v : "");
    }

    /* HTTP/2 (one multiplexed connection per endpoint) or HTTP/1.1 (a pool of
     * kept-alive connections): bench/run measures both (issue 12). */
    cfg->http_version = 20;
    if ((v = raw_get(ld, SEC_HTTP, K_HTTP_VERSION, &line)) != NULL) {
        if (strcmp(v, "2") == 0 || strcmp(v, "2.0") == 0)
            cfg->http_version = 20;
        else if (strcmp(v, "1.1") == 0)
            cfg->http_version = 11;
        else
            add_error(ld, line, "http", "http_version", "\"%s\" is not 2 or 1.1", v);
    }
}

/* host:port, [v6]:port; port 1..65535. */
static bool listen_valid(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close == s + 1 || close[1] != ':')
            return false;
        for (const char *p = s + 1; p < close; p++) {
            if (strchr("0123456789abcdefABCDEF:.", *p) == NULL)
                return false;
        }
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s)
            return false;
        for (const char *p = s; p < colon; p++) {
            if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", *p) ==
                NULL)
                return false;
        }
    }
    uint64_t port;
    return parse_u64(colon + 1, 1, 65535, &port);
}

static void load_metrics(struct load *ld)
{
    int line;
    const char *v = raw_get(ld, SEC_METRICS, K_LISTEN, &line);
    if (v == NULL)
        return;
    if (!listen_valid(v)) {
        add_error(ld, line, "metrics", "listen",
                  "\"%s\" is not host:port (e.g. 127.0.0.1:9464 or [::1]:9464)", v);
        return;
    }
    ld->cfg->metrics_listen = dup_or_oom(ld, v);
}

static bool tenant_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 128)
        return false;
    return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n;
}

/* Replaces every "{tenant}" in url. Returns a malloc()ed string or NULL (OOM). */
static char *substitute_tenant(const char *url, const char *tenant)
{
    static const char marker[] = "{tenant}";
    size_t ml = sizeof(marker) - 1, tl = strlen(tenant), count = 0;
    for (const char *p = strstr(url, marker); p != NULL; p = strstr(p + ml, marker))
        count++;
    char *out = malloc(strlen(url) + count * tl + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    const char *p = url, *m;
    while ((m = strstr(p, marker)) != NULL) {
        memcpy(o, p, (size_t)(m - p));
        o += m - p;
        memcpy(o, tenant, tl);
        o += tl;
        p = m + ml;
    }
    strcpy(o, p);
    return out;
}

/* Checks scheme and shape of a token URL (or issuer: key names it); warns for permitted http://. */
static bool url_check(struct load *ld, const char *url, const char *secname, const char *key,
                      int line)
{
    bool https = strncasecmp(url, "https://", 8) == 0;
    bool http = strncasecmp(url, "http://", 7) == 0;

    if (!https && !http) {
        add_error(ld, line, secname, key, "\"%s\" is not an https:// URL", url);
        return false;
    }
    if (http && !ld->cfg->allow_insecure_http) {
        add_error(ld, line, secname, key,
                  "\"%s\" is plain http://; token URLs must be https:// (http:// is allowed "
                  "only with [http] allow_insecure_http = yes, for tests)",
                  url);
        return false;
    }
    bool ok = false;
    CURLU *u = curl_url();
    if (u != NULL && !has_control_chars(url) && strchr(url, ' ') == NULL &&
        curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
        char *host = NULL;
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host != NULL &&
            host[0] != '\0')
            ok = true;
        curl_free(host);
    }
    if (u != NULL)
        curl_url_cleanup(u);
    if (!ok) {
        add_error(ld, line, secname, key, "\"%s\" is not a valid URL", url);
        return false;
    }
    if (http)
        add_warning(ld, line, secname, key,
                    "\"%s\" is plain http:// (allowed by [http] allow_insecure_http = yes); "
                    "client secrets and tokens travel unencrypted",
                    url);
    return true;
}

static bool token_url_check(struct load *ld, const char *url, const char *secname, int line)
{
    return url_check(ld, url, secname, "token_url", line);
}

static void provider_config_free(struct provider_config *pc)
{
    if (pc == NULL)
        return;
    free(pc->client_id);
    secret_guarded_free(pc->client_secret);
    free(pc->tenant);
    free(pc->token_url);
    free(pc->issuer);
    free(pc);
}

/* The keys of the generic dialect: refused on the named providers, checked on the others. */
static bool load_provider_dialect(struct load *ld, enum section_id sec, int slot,
                                  const char *secname, struct provider_config *pc)
{
    static const int generic_only[] = {K_ISSUER, K_CLIENT_AUTH, K_SEND_SCOPE};
    int line, sline = ld->section_line[sec];
    const char *v = raw_get(ld, sec, K_DIALECT, &line);
    bool ok = true;

    if (slot < PROVIDER_NAMED_COUNT) {
        if (v != NULL && strcmp(v, ld->slot_names[slot]) != 0) {
            add_error(ld, line, secname, "dialect",
                      "%s keeps its own dialect; dialect = oauth2 is for providers other than "
                      "google, github and microsoft",
                      ld->slot_names[slot]);
            ok = false;
        }
        for (size_t i = 0; i < ARRAY_LEN(generic_only); i++) {
            if (raw_get(ld, sec, generic_only[i], &line) != NULL) {
                add_error(ld, line, secname, provider_keys[generic_only[i]],
                          "only valid with dialect = oauth2");
                ok = false;
            }
        }
        return ok;
    }

    pc->generic = true;
    if (v == NULL) {
        /* Most likely a typo of a named provider, or a section without its dialect. */
        add_error(ld, sline, secname, NULL,
                  "unknown provider \"%s\" (known: google, github, microsoft; any other "
                  "needs dialect = oauth2)",
                  ld->slot_names[slot]);
        return false;
    }
    if (strcmp(v, "oauth2") != 0) {
        add_error(ld, line, secname, "dialect", "\"%s\" is not a dialect (oauth2)", v);
        ok = false;
    }
    if ((v = raw_get(ld, sec, K_CLIENT_AUTH, &line)) != NULL) {
        if (strcmp(v, "client_secret_basic") == 0)
            pc->client_auth = CLIENT_AUTH_BASIC;
        else if (strcmp(v, "client_secret_post") == 0)
            pc->client_auth = CLIENT_AUTH_POST;
        else {
            add_error(ld, line, secname, "client_auth",
                      "\"%s\" is not client_secret_basic or client_secret_post", v);
            ok = false;
        }
    }
    if ((v = raw_get(ld, sec, K_SEND_SCOPE, &line)) != NULL && !parse_bool(v, &pc->send_scope)) {
        add_error(ld, line, secname, "send_scope", "\"%s\" is not yes or no", v);
        ok = false;
    }

    int uline;
    const char *url = raw_get(ld, sec, K_TOKEN_URL, &uline);
    const char *issuer = raw_get(ld, sec, K_ISSUER, &line);
    if (issuer != NULL && url != NULL) {
        add_error(ld, line, secname, "issuer",
                  "issuer and token_url are mutually exclusive (token_url is set at line %d): "
                  "the issuer's discovery document names the token endpoint",
                  uline);
        ok = false;
    } else if (issuer == NULL && url == NULL) {
        add_error(ld, sline, secname, "token_url", "required (or issuer, for discovery)");
        ok = false;
    } else if (issuer != NULL) {
        /* The same rules as a token URL: https unless allow_insecure_http. */
        if (!url_check(ld, issuer, secname, "issuer", line))
            ok = false;
        else if ((pc->issuer = strdup(issuer)) == NULL) {
            add_error(ld, line, secname, "issuer", "out of memory");
            ok = false;
        }
    } else if (strstr(url, "{tenant}") != NULL) {
        add_error(ld, uline, secname, "token_url", "{tenant} is only substituted for microsoft");
        ok = false;
    } else if ((pc->token_url = strdup(url)) == NULL) {
        add_error(ld, uline, secname, "token_url", "out of memory");
        ok = false;
    } else if (!token_url_check(ld, pc->token_url, secname, uline)) {
        ok = false;
    }
    pc->client_auth_configured = pc->client_auth;
    if (pc->client_auth == CLIENT_AUTH_DEFAULT && pc->issuer == NULL)
        pc->client_auth = CLIENT_AUTH_BASIC; /* RFC 6749 §2.3.1: every server supports it */
    return ok;
}

/* token_url of a named provider: its default, {tenant} substituted for microsoft. */
static bool load_provider_token_url(struct load *ld, enum section_id sec, enum provider_id id,
                                    const char *secname, const char *tenant,
                                    struct provider_config *pc)
{
    int line;
    const char *url = raw_get(ld, sec, K_TOKEN_URL, &line);
    if (url == NULL) {
        url = provider_default_token_urls[id];
        line = ld->section_line[sec];
    }
    if (id == PROVIDER_MICROSOFT) {
        pc->token_url = substitute_tenant(url, tenant);
    } else if (strstr(url, "{tenant}") != NULL) {
        add_error(ld, line, secname, "token_url", "{tenant} is only substituted for microsoft");
        return false;
    } else {
        pc->token_url = strdup(url);
    }
    if (pc->token_url == NULL) {
        add_error(ld, line, secname, "token_url", "out of memory");
        return false;
    }
    return token_url_check(ld, pc->token_url, secname, line);
}

/* Loads the section of slot (a named id, or a generic section's slot) into ld->slot_config. */
static void load_provider(struct load *ld, int slot)
{
    enum section_id sec = (enum section_id)(SEC_PROVIDER + slot);
    char secname[32];
    int line, sline = ld->section_line[sec];
    const char *v;

    if (sline == 0)
        return; /* provider not in use */
    section_name(ld, sec, secname, sizeof(secname));

    struct provider_config *pc = calloc(1, sizeof(*pc));
    if (pc == NULL) {
        add_error(ld, sline, secname, NULL, "out of memory");
        return;
    }
    pc->id = (enum provider_id)slot; /* a generic one gets its id in place_providers */
    pc->max_in_flight = 128;
    pc->max_rate = 50;
    bool ok = load_provider_dialect(ld, sec, slot, secname, pc);
    if (slot >= PROVIDER_NAMED_COUNT && ld->raw[sec][K_DIALECT].line == 0) {
        provider_config_free(pc); /* said once: no dialect, nothing else to check */
        return;
    }
    if ((v = raw_get(ld, sec, K_CLIENT_ID, &line)) == NULL) {
        add_error(ld, line, secname, "client_id", "required");
        ok = false;
    } else if (has_control_chars(v)) {
        add_error(ld, line, secname, "client_id", "contains control characters");
        ok = false;
    } else if ((pc->client_id = strdup(v)) == NULL) {
        add_error(ld, line, secname, "client_id", "out of memory");
        ok = false;
    }

    int sline_inline, sline_file;
    const char *sec_inline = raw_get(ld, sec, K_CLIENT_SECRET, &sline_inline);
    const char *sec_file = raw_get(ld, sec, K_CLIENT_SECRET_FILE, &sline_file);
    if (sec_inline != NULL && sec_file != NULL) {
        add_error(ld, sline_file, secname, "client_secret_file",
                  "client_secret and client_secret_file are mutually exclusive "
                  "(client_secret is set at line %d)",
                  sline_inline);
        ok = false;
    } else if (sec_inline == NULL && sec_file == NULL) {
        add_error(ld, sline, secname, "client_secret_file",
                  "required (or, discouraged, client_secret)");
        ok = false;
    } else if (sec_file != NULL) {
        pc->client_secret =
            secret_file_single(ld, sec_file, sec, K_CLIENT_SECRET_FILE, sline_file, false);
        if (pc->client_secret == NULL)
            ok = false;
    } else {
        if (has_control_chars(sec_inline)) {
            add_error(ld, sline_inline, secname, "client_secret", "contains control characters");
            ok = false;
        } else if ((pc->client_secret = secret_guarded_dup(sec_inline, strlen(sec_inline))) ==
                   NULL) {
            add_error(ld, sline_inline, secname, "client_secret", "out of memory");
            ok = false;
        } else {
            add_warning(ld, sline_inline, secname, "client_secret",
                        "a secret written into the config file is discouraged; put it in a "
                        "file named by client_secret_file (systemd LoadCredential=)");
        }
    }

    const char *tenant = "common";
    if ((v = raw_get(ld, sec, K_TENANT, &line)) != NULL) {
        if (slot != PROVIDER_MICROSOFT) {
            add_error(ld, line, secname, "tenant", "only valid in [provider.microsoft]");
            ok = false;
        } else if (!tenant_valid(v)) {
            add_error(ld, line, secname, "tenant",
                      "\"%s\" is not a tenant (common, organizations, consumers, a tenant id "
                      "or domain)",
                      v);
            ok = false;
        } else {
            tenant = v;
        }
    }
    if (slot == PROVIDER_MICROSOFT && (pc->tenant = strdup(tenant)) == NULL) {
        add_error(ld, sline, secname, "tenant", "out of memory");
        ok = false;
    }

    if (slot < PROVIDER_NAMED_COUNT &&
        !load_provider_token_url(ld, sec, (enum provider_id)slot, secname, tenant, pc))
        ok = false;
    if (!get_unsigned(ld, sec, K_P_MAX_IN_FLIGHT, 1, 100000, &pc->max_in_flight))
        ok = false;
    if (ld->raw[sec][K_MAX_RATE].line != 0) {
        v = raw_get(ld, sec, K_MAX_RATE, &line);
        if (v == NULL || !parse_double(v, 0, 100000, &pc->max_rate)) {
            add_error(ld, line, secname, "max_rate",
                      "\"%s\" is not a number of requests per second between 0 (unlimited) "
                      "and 100000",
                      v ? v : "");
            ok = false;
        }
    }

    if (!ok) {
        provider_config_free(pc);
        return;
    }
    ld->slot_config[slot] = pc;
}

/*
 * Puts the loaded sections into cfg->providers by id: the named ones at
 * theirs, the generic ones at the id their name has in this process (given
 * now if new: only for a config that is otherwise accepted, so a rejected
 * reload takes no id).
 */
static void place_providers(struct load *ld)
{
    for (int slot = 0; slot < PROVIDER_MAX; slot++) {
        struct provider_config *pc = ld->slot_config[slot];
        if (pc == NULL)
            continue;
        ld->slot_config[slot] = NULL;
        int id = slot;
        if (slot >= PROVIDER_NAMED_COUNT && (id = provider_id_register(ld->slot_names[slot])) < 0) {
            add_error(ld, ld->section_line[SEC_PROVIDER + slot], NULL, NULL,
                      "[provider.%s]: no provider id left: this process has seen %d other "
                      "providers since it started (restart it)",
                      ld->slot_names[slot], PROVIDER_MAX - PROVIDER_NAMED_COUNT);
            provider_config_free(pc);
            continue;
        }
        pc->id = (enum provider_id)id;
        ld->cfg->providers[id] = pc;
    }
}

/* ---- public ------------------------------------------------------------ */

static void config_free(struct config *cfg)
{
    free(cfg->path);
    free(cfg->dir);
    free(cfg->state_directory);
    secret_guarded_free(cfg->conninfo);
    if (cfg->keys != NULL)
        keyring_unref(cfg->keys);
    free(cfg->ca_file);
    free(cfg->user_agent);
    free(cfg->metrics_listen);
    for (int i = 0; i < PROVIDER_MAX; i++)
        provider_config_free(cfg->providers[i]);
    sodium_memzero(cfg, sizeof(*cfg));
    free(cfg);
}

static struct config *config_new_defaults(void)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    cfg->refcount = 1;
    cfg->log_level = LOG_INFO;
    cfg->shutdown_timeout_ms = 20 * 1000;
    cfg->key_derivation = KEY_DERIVATION_NONE;
    cfg->lead_time_ms = 5 * 60 * 1000;
    cfg->jitter_ms = 60 * 1000;
    cfg->scan_interval_ms = 60 * 1000;
    cfg->heartbeat_interval_ms = 30 * 1000;
    cfg->batch_size = 500;
    cfg->max_in_flight = 512;
    cfg->request_timeout_ms = 30 * 1000;
    cfg->retry_min_ms = 5 * 1000;
    cfg->retry_max_ms = 3600 * 1000;
    cfg->config_error_probe_ms = 10 * 60 * 1000;
    cfg->allow_insecure_http = false;
    cfg->http_version = 20;
    return cfg;
}

/* Absolute path of the file and its directory, without resolving symlinks of the file. */
static bool set_paths(struct config *cfg, const char *path)
{
    char *abs = NULL;
    if (path[0] == '/') {
        abs = strdup(path);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (cwd == NULL)
            return false;
        if (asprintf(&abs, "%s/%s", cwd, path) < 0)
            abs = NULL;
        free(cwd);
    }
    if (abs == NULL)
        return false;
    cfg->path = abs;
    char *slash = strrchr(abs, '/');
    cfg->dir = slash == abs ? strdup("/") : strndup(abs, (size_t)(slash - abs));
    return cfg->dir != NULL;
}

static void load_clear(struct load *ld)
{
    for (int s = 0; s < SEC_COUNT; s++) {
        for (int k = 0; k < K_MAX; k++)
            secure_free_str(ld->raw[s][k].value);
    }
    if (ld->line != NULL) {
        sodium_memzero(ld->line, ld->line_cap);
        free(ld->line);
    }
}

/*
 * Errors are found in two passes (syntax while reading, values afterwards);
 * list them in file order, file-level ones (line 0) last, the overflow
 * notice (if any) staying at the very end. Stable insertion sort: n <= 32.
 */
static void sort_errors(struct load *ld)
{
    struct config_errors *e = ld->errs;
    size_t n = ld->overflowed ? e->count - 1 : e->count;
    char tmp[ERRBUF_LEN];

    for (size_t i = 1; i < n; i++) {
        int li = ld->error_line[i];
        unsigned ki = li > 0 ? (unsigned)li : UINT_MAX;
        size_t j = i;
        while (j > 0) {
            int lj = ld->error_line[j - 1];
            unsigned kj = lj > 0 ? (unsigned)lj : UINT_MAX;
            if (kj <= ki)
                break;
            j--;
        }
        if (j == i)
            continue;
        memcpy(tmp, e->msg[i], sizeof(tmp));
        memmove(e->msg[j + 1], e->msg[j], (i - j) * sizeof(e->msg[0]));
        memcpy(e->msg[j], tmp, sizeof(tmp));
        memmove(&ld->error_line[j + 1], &ld->error_line[j], (i - j) * sizeof(int));
        ld->error_line[j] = li;
    }
}

/* Parses, resolves and validates; every problem goes to ld->errs. */
static struct config *load_run(struct load *ld)
{
    ld->errs->count = 0;
    if (sodium_init() < 0) {
        add_error(ld, 0, NULL, NULL, "libsodium failed to initialise");
        return NULL;
    }
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++)
        snprintf(ld->slot_names[i], sizeof(ld->slot_names[i]), "%s", provider_names[i]);
    ld->cfg = config_new_defaults();
    if (ld->cfg == NULL || !set_paths(ld->cfg, ld->path)) {
        add_error(ld, 0, NULL, NULL, "out of memory");
        if (ld->cfg != NULL)
            config_free(ld->cfg);
        return NULL;
    }
    ld->fp = fopen(ld->path, "re");
    if (ld->fp == NULL) {
        add_error(ld, 0, NULL, NULL, "cannot open: %s", strerror(errno));
        config_free(ld->cfg);
        return NULL;
    }
    int rc = ini_parse_stream(reader_cb, ld, handler_cb, ld);
    fclose(ld->fp);
    if (rc == -2)
        add_error(ld, 0, NULL, NULL, "out of memory while parsing");
    else if (rc > 0)
        add_error(ld, rc, NULL, NULL, "syntax error"); /* not expected: the reader pre-checks */

    if (!ld->read_failed) {
        load_daemon(ld);
        load_database(ld);
        load_refresh(ld);
        load_http(ld); /* before providers: allow_insecure_http decides token_url checks */
        load_metrics(ld);
        for (int slot = 0; slot < PROVIDER_NAMED_COUNT + ld->generic_slots; slot++)
            load_provider(ld, slot);
        load_crypto(ld);
        if (ld->errs->count == 0)
            place_providers(ld);
    }
    for (int slot = 0; slot < PROVIDER_MAX; slot++)
        provider_config_free(ld->slot_config[slot]);
    load_clear(ld);
    if (ld->errs->count > 0) {
        sort_errors(ld);
        config_free(ld->cfg);
        return NULL;
    }
    return ld->cfg;
}

struct config *config_load(const char *path, config_warn_fn warn, void *warn_ud,
                           struct config_errors *errs)
{
    struct config_errors *scratch = NULL;

    if (errs == NULL) {
        /* The caller does not want the details; they are still collected. */
        scratch = calloc(1, sizeof(*scratch));
        if (scratch == NULL)
            return NULL;
        errs = scratch;
    }
    struct load ld = {.path = path, .errs = errs, .warn = warn, .warn_ud = warn_ud};
    struct config *cfg = load_run(&ld);
    free(scratch);
    return cfg;
}

struct config *config_ref(struct config *cfg)
{
    if (cfg != NULL)
        cfg->refcount++;
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg == NULL)
        return;
    if (--cfg->refcount > 0)
        return;
    config_free(cfg);
}

int64_t config_lease_ms(const struct config *cfg)
{
    return cfg->request_timeout_ms * 2 + 10 * 1000;
}
