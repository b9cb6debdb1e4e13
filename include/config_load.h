/*
 * config_load.h — private to the configuration loader (config.c and its
 * rooms config_errors.c, config_ini.c, config_secrets.c, config_sections.c,
 * config_crypto.c, config_provider.c); nothing else includes it. It holds the
 * schema's section and key indexes, and struct config_loader, the state of one
 * config_load() call: the raw values read from the file, where each was set,
 * the errors found so far and the config being built.
 *
 * The load runs in two phases: config_ini.c reads the file into raw values
 * (syntax errors), then one function per section (config_sections.c,
 * config_crypto.c, config_provider.c) turns them into the config (value
 * errors). Every error goes through config_add_error, never straight to a
 * stream, and no message ever holds a secret.
 */
#ifndef OAUTH_CONFIG_LOAD_H
#define OAUTH_CONFIG_LOAD_H

#include <stdio.h>

#include "config.h"

/* ---- the schema: sections and their keys (names in config_ini.c) -------- */

enum section_id {
    SEC_DAEMON,
    SEC_DATABASE,
    SEC_CRYPTO,
    SEC_REFRESH,
    SEC_HTTP,
    SEC_METRICS,
    SEC_PROVIDER, /* SEC_PROVIDER + slot: a named id, or a generic section's slot
                     (PROVIDER_NAMED_COUNT up, in the file's order; see config_place_providers) */
    SEC_COUNT = SEC_PROVIDER + PROVIDER_MAX,
};

enum { K_MAX = 12 }; /* the most keys a section has, with room */

/* Key indexes per section (must match config_section_keys below). */
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

/* The key names of a section, NULL-terminated, in the order of its K_ enum. */
const char *const *config_section_keys(enum section_id sec);

/* ---- the state of one load ---------------------------------------------- */

struct raw_value {
    char *value; /* malloc()ed copy of the INI value; may be a secret: wiped */
    int line;    /* 0 = not set */
};

struct config_loader {
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

static inline bool config_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* ---- errors and warnings (config_errors.c) ------------------------------ */

/* Records "file:line: [section] key: message"; line 0 means the whole file. */
void config_add_error(struct config_loader *ld, int line, const char *section, const char *key,
                      const char *fmt, ...) PRINTF_LIKE(5, 6);
/* Hands the same wording to the caller's warn function (if any). */
void config_add_warning(struct config_loader *ld, int line, const char *section, const char *key,
                        const char *fmt, ...) PRINTF_LIKE(5, 6);
/* Puts ld->errs in file order, file-level errors last. */
void config_sort_errors(struct config_loader *ld);

/* ---- the file and its raw values (config_ini.c) ------------------------- */

/* Feeds ld->fp to inih; returns ini_parse_stream's result. */
int config_ini_read(struct config_loader *ld);
/* "daemon", "provider.NAME", ... of a section, into buf. */
void config_section_name(const struct config_loader *ld, enum section_id sec, char *buf,
                         size_t len);
/* The value of a key, or NULL when unset or empty (empty means "default");
 * *line (if given) is its line, else the section's. */
const char *config_raw_get(struct config_loader *ld, enum section_id sec, int k, int *line);
bool config_has_control_chars(const char *s);
/* Typed values: true when unset (default kept) or valid; false after reporting. */
bool config_get_duration(struct config_loader *ld, enum section_id sec, int k, int64_t min,
                         int64_t max, int64_t *out);
bool config_get_unsigned(struct config_loader *ld, enum section_id sec, int k, uint64_t min,
                         uint64_t max, unsigned *out);
/* strdup, reporting out of memory. */
char *config_dup_or_oom(struct config_loader *ld, const char *s);

/* ---- paths and secret files (config_secrets.c) -------------------------- */

/* At most this many keys come out of a key derivation (PBKDF2 costs ~50 ms each). */
#define DERIVED_KEYS_MAX 32

/* name itself when absolute, else dir/name; malloc()ed, NULL on OOM. */
char *config_path_join(const char *dir, const char *name);
/* Secret files: $CREDENTIALS_DIRECTORY when set, else the config's directory. */
char *config_secret_path(struct config_loader *ld, const char *name);
/*
 * A single-value secret file, trimmed. Returns a guarded copy (the caller
 * releases it with secret_guarded_free), or NULL after reporting.
 */
char *config_secret_single(struct config_loader *ld, const char *name, enum section_id sec, int k,
                           int line, bool multiline_ok);

/* The entries of a list secret file (each non-blank line, trimmed). */
struct config_secret_list {
    char *buf; /* sodium_malloc()ed file content, entries point into it */
    size_t n;
    const char *item[DERIVED_KEYS_MAX];
    size_t len[DERIVED_KEYS_MAX];
};
/* Reads a [crypto] list secret file into *out; false after reporting. */
bool config_secret_list_read(struct config_loader *ld, const char *name, int k, int line,
                             bool empty_ok, struct config_secret_list *out);
void config_secret_list_free(struct config_secret_list *l);

/* ---- phase two: one function per section --------------------------------- */

void config_load_daemon(struct config_loader *ld);   /* config_sections.c */
void config_load_database(struct config_loader *ld); /* config_sections.c */
void config_load_refresh(struct config_loader *ld);  /* config_sections.c */
void config_load_http(struct config_loader *ld);     /* config_sections.c */
void config_load_metrics(struct config_loader *ld);  /* config_sections.c */
void config_load_crypto(struct config_loader *ld);   /* config_crypto.c */
/* Loads the section of slot (a named id, or a generic section's slot) into
 * ld->slot_config (config_provider.c). */
void config_load_provider(struct config_loader *ld, int slot);
/* Moves the loaded provider sections into cfg->providers by id. */
void config_place_providers(struct config_loader *ld);
void config_provider_free(struct provider_config *pc);

#endif
