/*
 * config_crypto.c — the [crypto] section: the Fernet key list, read from
 * keys_file (key_derivation = none) or derived from the Django application's
 * secrets by the scheme key_derivation names (the arithmetic is in
 * django_keys.c). Which files each scheme needs, and which it refuses, is
 * decided here. Private to the loader (config_load.h).
 *
 * It must never put a key, a SECRET_KEY or a salt into a message.
 */
#include "config_load.h"

#include <stdlib.h>
#include <string.h>

#include "django_keys.h"

/* Derives the key list of the configured scheme and builds the keyring. */
static void derive_keyring(struct config_loader *ld)
{
    struct config *cfg = ld->cfg;
    struct config_secret_list secrets = {0}, fallbacks = {0}, salts = {0};
    int line_sk, line_fb, line_salt, line_fk, line_kd;
    const char *sk = config_raw_get(ld, SEC_CRYPTO, K_SECRET_KEY_FILE, &line_sk);
    const char *fb = config_raw_get(ld, SEC_CRYPTO, K_SECRET_KEY_FALLBACKS_FILE, &line_fb);
    const char *sl = config_raw_get(ld, SEC_CRYPTO, K_SALT_KEYS_FILE, &line_salt);
    const char *fk = config_raw_get(ld, SEC_CRYPTO, K_FERNET_KEYS_FILE, &line_fk);
    (void)config_raw_get(ld, SEC_CRYPTO, K_KEY_DERIVATION, &line_kd);
    bool ok = true;

    if (cfg->key_derivation == KEY_DERIVATION_DJANGO_FERNET_FIELDS) {
        if (fb != NULL)
            config_add_error(ld, line_fb, "crypto", "secret_key_fallbacks_file",
                             "only used with key_derivation = django-fernet-encrypted-fields");
        if (sl != NULL)
            config_add_error(ld, line_salt, "crypto", "salt_keys_file",
                             "only used with key_derivation = django-fernet-encrypted-fields");
        if (fb != NULL || sl != NULL)
            return;
        if (sk != NULL && fk != NULL) {
            config_add_error(
                ld, line_fk, "crypto", "fernet_keys_file",
                "set fernet_keys_file (FERNET_KEYS) or secret_key_file (SECRET_KEY), not "
                "both (secret_key_file is set at line %d)",
                line_sk);
            return;
        }
        if (sk == NULL && fk == NULL) {
            config_add_error(
                ld, line_kd, "crypto", "key_derivation",
                "django-fernet-fields needs fernet_keys_file (the app's FERNET_KEYS) or "
                "secret_key_file (its SECRET_KEY)");
            return;
        }
        if (fk != NULL)
            ok = config_secret_list_read(ld, fk, K_FERNET_KEYS_FILE, line_fk, false, &secrets);
        else
            ok = config_secret_list_read(ld, sk, K_SECRET_KEY_FILE, line_sk, false, &secrets);
        if (ok && fk == NULL && secrets.n != 1) {
            config_add_error(ld, line_sk, "crypto", "secret_key_file",
                             "holds %zu lines; expected one SECRET_KEY", secrets.n);
            ok = false;
        }
        if (ok) {
            char err[ERRBUF_LEN];
            cfg->keys = django_keys_fernet_fields_ring(secrets.item, secrets.len, secrets.n, err,
                                                       sizeof(err));
            if (cfg->keys == NULL)
                config_add_error(ld, line_kd, "crypto", "key_derivation", "%s", err);
        }
    } else { /* KEY_DERIVATION_DJANGO_FERNET_ENCRYPTED_FIELDS */
        if (fk != NULL) {
            config_add_error(ld, line_fk, "crypto", "fernet_keys_file",
                             "only used with key_derivation = django-fernet-fields");
            return;
        }
        if (sk == NULL)
            config_add_error(ld, line_kd, "crypto", "secret_key_file",
                             "required with key_derivation = django-fernet-encrypted-fields");
        if (sl == NULL)
            config_add_error(ld, line_kd, "crypto", "salt_keys_file",
                             "required with key_derivation = django-fernet-encrypted-fields");
        if (sk == NULL || sl == NULL)
            return;
        ok = config_secret_list_read(ld, sk, K_SECRET_KEY_FILE, line_sk, false, &secrets);
        if (ok && secrets.n != 1) {
            config_add_error(ld, line_sk, "crypto", "secret_key_file",
                             "holds %zu lines; expected one SECRET_KEY", secrets.n);
            ok = false;
        }
        if (ok && fb != NULL)
            ok = config_secret_list_read(ld, fb, K_SECRET_KEY_FALLBACKS_FILE, line_fb, true,
                                         &fallbacks);
        if (ok)
            ok = config_secret_list_read(ld, sl, K_SALT_KEYS_FILE, line_salt, false, &salts);
        if (ok && (1 + fallbacks.n) * salts.n > DERIVED_KEYS_MAX) {
            config_add_error(ld, line_salt, "crypto", "salt_keys_file",
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
                config_add_error(ld, line_kd, "crypto", "key_derivation", "%s", err);
        }
    }
    config_secret_list_free(&secrets);
    config_secret_list_free(&fallbacks);
    config_secret_list_free(&salts);
}

struct keys_warn {
    struct config_loader *ld;
    int line;
};

static void keys_warn_cb(void *ud, const char *msg)
{
    struct keys_warn *kw = ud;
    config_add_warning(kw->ld, kw->line, "crypto", "keys_file", "%s", msg);
}

void config_load_crypto(struct config_loader *ld)
{
    struct config *cfg = ld->cfg;
    int line;
    const char *v = config_raw_get(ld, SEC_CRYPTO, K_KEY_DERIVATION, &line);

    if (v != NULL || ld->raw[SEC_CRYPTO][K_KEY_DERIVATION].line != 0) {
        if (v != NULL && strcmp(v, "none") == 0) {
            cfg->key_derivation = KEY_DERIVATION_NONE;
        } else if (v != NULL && strcmp(v, "django-fernet-fields") == 0) {
            cfg->key_derivation = KEY_DERIVATION_DJANGO_FERNET_FIELDS;
        } else if (v != NULL && strcmp(v, "django-fernet-encrypted-fields") == 0) {
            cfg->key_derivation = KEY_DERIVATION_DJANGO_FERNET_ENCRYPTED_FIELDS;
        } else {
            config_add_error(ld, line, "crypto", "key_derivation",
                             "\"%s\" is not one of none, django-fernet-fields, "
                             "django-fernet-encrypted-fields",
                             v != NULL ? v : "");
            return;
        }
    }

    int kf_line;
    const char *kf = config_raw_get(ld, SEC_CRYPTO, K_KEYS_FILE, &kf_line);
    if (cfg->key_derivation != KEY_DERIVATION_NONE) {
        if (kf != NULL) {
            config_add_error(ld, kf_line, "crypto", "keys_file",
                             "cannot be combined with key_derivation = %s (the keys are derived)",
                             v);
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
        if (config_raw_get(ld, SEC_CRYPTO, derivation_only[i], &l) != NULL) {
            config_add_error(ld, l, "crypto", config_section_keys(SEC_CRYPTO)[derivation_only[i]],
                             "only used with a key_derivation other than none");
            stray = true;
        }
    }
    if (kf == NULL) {
        config_add_error(ld, kf_line, "crypto", "keys_file",
                         "required (the Fernet key list) when key_derivation = none");
        return;
    }
    if (stray)
        return;
    char *path = config_secret_path(ld, kf);
    if (path == NULL) {
        config_add_error(ld, kf_line, "crypto", "keys_file", "out of memory");
        return;
    }
    char err[ERRBUF_LEN];
    struct keys_warn kw = {ld, kf_line};
    cfg->keys = keyring_load_file(path, keys_warn_cb, &kw, err, sizeof(err));
    if (cfg->keys == NULL)
        config_add_error(ld, kf_line, "crypto", "keys_file", "%s: %s", path, err);
    free(path);
}
