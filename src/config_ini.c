/*
 * config_ini.c — the first phase of config_load(): the sections and keys of
 * SPEC §3 by name, and the INI file read into raw values, one per key, each
 * with the line that set it; then the typed reads (durations, whole numbers)
 * of those values that every section's loader uses. Private to the loader
 * (config_load.h).
 *
 * Parsing is done by libinih. Debian's inih calls the handler without a line
 * number, so the file is fed to ini_parse_stream() through a reader that
 * counts lines, which also lets us report every syntax error (inih reports
 * only the first), strip inline '#' comments like the SPEC's example uses,
 * and refuse over-long lines instead of letting inih split them silently.
 * A raw value may be a secret (an inline client_secret or conninfo): it is
 * never put into a message, and load_clear wipes it.
 */
#include "config_load.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "parse.h"

static const char *const provider_keys[K_MAX + 1] = {
    "client_id", "client_secret", "client_secret_file", "token_url",
    "tenant",    "max_in_flight", "max_rate",           "dialect",
    "issuer",    "client_auth",   "send_scope",         NULL,
};

const char *const *config_section_keys(enum section_id sec)
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

void config_section_name(const struct config_loader *ld, enum section_id sec, char *buf, size_t len)
{
    if (sec < SEC_PROVIDER)
        snprintf(buf, len, "%s", base_section_names[sec]);
    else
        snprintf(buf, len, "provider.%s", ld->slot_names[sec - SEC_PROVIDER]);
}

/* A provider section's slot: a named provider's id, else a generic section's slot. */
static int provider_slot(const struct config_loader *ld, const char *name)
{
    int id = provider_id_from_name(name);
    if (id >= 0 && id < PROVIDER_NAMED_COUNT)
        return id;
    for (int i = PROVIDER_NAMED_COUNT; i < PROVIDER_NAMED_COUNT + ld->generic_slots; i++) {
        if (strcmp(name, ld->slot_names[i]) == 0)
            return i;
    }
    return -1;
}

static int section_from_name(const struct config_loader *ld, const char *name)
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
static int generic_section_new(struct config_loader *ld, const char *name)
{
    if (!provider_name_valid(name)) {
        config_add_error(
            ld, ld->lineno, NULL, NULL,
            "[provider.%.40s]: \"%.40s\" is not a provider name (a letter a-z, then up to "
            "%d of a-z, 0-9, - and _, as in oauth_accounts.provider)",
            name, name, PROVIDER_NAME_MAX - 1);
        return -1;
    }
    if (PROVIDER_NAMED_COUNT + ld->generic_slots >= PROVIDER_MAX) {
        config_add_error(ld, ld->lineno, NULL, NULL,
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
static void note_section(struct config_loader *ld, const char *name)
{
    int sec = section_from_name(ld, name);
    if (sec < 0 && strncmp(name, "provider.", 9) == 0) {
        sec = generic_section_new(ld, name + 9);
        if (sec < 0)
            return;
    }
    if (sec < 0) {
        config_add_error(ld, ld->lineno, name, NULL, "unknown section");
        return;
    }
    if (ld->section_line[sec] != 0) {
        config_add_error(ld, ld->lineno, name, NULL, "section appears twice (first at line %d)",
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
    struct config_loader *ld = stream;

    for (;;) {
        errno = 0;
        ssize_t n = getline(&ld->line, &ld->line_cap, ld->fp);
        if (n < 0) {
            if (ferror(ld->fp)) {
                config_add_error(ld, 0, NULL, NULL, "cannot read: %s",
                                 strerror(errno ? errno : EIO));
                ld->read_failed = true;
            }
            return NULL;
        }
        ld->lineno++;
        char *s = ld->line;
        if (strlen(s) != (size_t)n) {
            config_add_error(ld, ld->lineno, NULL, NULL, "line contains a NUL byte");
            continue;
        }
        if (ld->lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
            s += 3; /* UTF-8 byte order mark */
        while (config_is_blank(*s))
            s++;
        if (*s == '#' || *s == ';')
            continue;
        cut_comment(s);
        size_t len = strlen(s);
        while (len > 0 && config_is_blank(s[len - 1]))
            s[--len] = '\0';
        if (len == 0)
            continue;
        if (num < 3 || len > (size_t)num - 2) {
            config_add_error(ld, ld->lineno, NULL, NULL, "line too long (at most %d characters)",
                             num > 2 ? num - 2 : 0);
            continue;
        }
        if (s[0] == '[') {
            char *close = strchr(s, ']');
            if (close == NULL) {
                config_add_error(ld, ld->lineno, NULL, NULL, "section header without closing ']'");
                continue;
            }
            if (close[1] != '\0') {
                config_add_error(ld, ld->lineno, NULL, NULL,
                                 "unexpected text after section header");
                continue;
            }
            *close = '\0';
            note_section(ld, s + 1);
            *close = ']';
        } else if (strpbrk(s, "=:") == NULL) {
            config_add_error(ld, ld->lineno, NULL, NULL,
                             "expected \"key = value\" or \"[section]\"");
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
    const char *const *keys = config_section_keys(sec);
    for (int i = 0; keys[i] != NULL; i++) {
        if (strcmp(keys[i], key) == 0)
            return i;
    }
    return -1;
}

static int handler_cb(void *user, const char *section, const char *name, const char *value)
{
    struct config_loader *ld = user;

    if (*section == '\0') {
        config_add_error(ld, ld->lineno, NULL, name, "key outside any [section]");
        return 1;
    }
    int sec = section_from_name(ld, section);
    if (sec < 0)
        return 1; /* reported once at the header */
    int k = key_index((enum section_id)sec, name);
    if (k < 0) {
        config_add_error(ld, ld->lineno, section, name, "unknown key");
        return 1;
    }
    struct raw_value *rv = &ld->raw[sec][k];
    if (rv->line != 0) {
        config_add_error(ld, ld->lineno, section, name, "set twice (first at line %d)", rv->line);
        return 1;
    }
    rv->value = strdup(value);
    if (rv->value == NULL) {
        config_add_error(ld, ld->lineno, section, name, "out of memory");
        return 1;
    }
    rv->line = ld->lineno;
    return 1; /* errors are collected here, never via inih's return value */
}

int config_ini_read(struct config_loader *ld)
{
    return ini_parse_stream(reader_cb, ld, handler_cb, ld);
}

/* ---- the raw values and typed reads of them ------------------------------ */

/* The value of a key, or NULL when unset or empty (empty means "default"). */
const char *config_raw_get(struct config_loader *ld, enum section_id sec, int k, int *line)
{
    struct raw_value *rv = &ld->raw[sec][k];
    if (line != NULL)
        *line = rv->line != 0 ? rv->line : ld->section_line[sec];
    if (rv->line == 0 || rv->value == NULL || rv->value[0] == '\0')
        return NULL;
    return rv->value;
}

bool config_has_control_chars(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

bool config_get_duration(struct config_loader *ld, enum section_id sec, int k, int64_t min,
                         int64_t max, int64_t *out)
{
    int line;
    const char *v;
    char secname[32];

    v = config_raw_get(ld, sec, k, &line);
    if (ld->raw[sec][k].line == 0)
        return true; /* default */
    config_section_name(ld, sec, secname, sizeof(secname));
    int64_t ms;
    if (v == NULL || !parse_duration_ms(v, &ms)) {
        config_add_error(ld, line, secname, config_section_keys(sec)[k],
                         "\"%s\" is not a duration (e.g. 300, 250ms, 5min, 1h30min)", v ? v : "");
        return false;
    }
    if (ms < min || ms > max) {
        char a[32], b[32];
        format_duration_ms(min, a, sizeof(a));
        format_duration_ms(max, b, sizeof(b));
        config_add_error(ld, line, secname, config_section_keys(sec)[k],
                         "must be between %s and %s", a, b);
        return false;
    }
    *out = ms;
    return true;
}

bool config_get_unsigned(struct config_loader *ld, enum section_id sec, int k, uint64_t min,
                         uint64_t max, unsigned *out)
{
    int line;
    char secname[32];
    const char *v = config_raw_get(ld, sec, k, &line);
    uint64_t n;

    if (ld->raw[sec][k].line == 0)
        return true;
    config_section_name(ld, sec, secname, sizeof(secname));
    if (v == NULL || !parse_u64(v, min, max, &n)) {
        config_add_error(ld, line, secname, config_section_keys(sec)[k],
                         "\"%s\" is not a whole number between %llu and %llu", v ? v : "",
                         (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

char *config_dup_or_oom(struct config_loader *ld, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        config_add_error(ld, 0, NULL, NULL, "out of memory");
    return d;
}
