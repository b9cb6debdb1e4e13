/*
 * django_keys.c — derives the Fernet keys of the two Django field packages
 * (django-fernet-fields' HKDF and django-fernet-encrypted-fields' PBKDF2)
 * from the application's secrets, exactly as the Python does, and builds the
 * keyring in the package's order, so the daemon decrypts and encrypts what
 * the application does.
 *
 * It owns only the arithmetic and the order. It must never read a file, put
 * a secret or a derived key into an error, or leave a derived key in freed
 * memory: the raw keys live in sodium_allocarray()ed memory, freed (and so
 * wiped) before it returns.
 */
#include "django_keys.h"

#include <limits.h>
#include <stdio.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <sodium.h>

/*
 * django-fernet-fields (fernet_fields/hkdf.py, derive_fernet_key):
 *   HKDF(SHA256, length=32, salt=b'django-fernet-fields-hkdf-salt',
 *        info=b'django-fernet-fields').derive(force_bytes(key))
 * for each key of settings.FERNET_KEYS (default [SECRET_KEY]), in order, as a
 * MultiFernet; the 32 derived bytes are the Fernet key (the package base64s
 * them only because Fernet() wants a base64 string).
 */
int django_keys_derive_fernet_fields(const uint8_t *secret, size_t len,
                                     uint8_t out[FERNET_KEY_BYTES])
{
    static const char salt[] = "django-fernet-fields-hkdf-salt";
    static const char info[] = "django-fernet-fields";
    int rc = -1;

    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (kdf == NULL)
        return -1;
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (kctx == NULL)
        return -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, sizeof(info) - 1),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(kctx, out, FERNET_KEY_BYTES, params) == 1)
        rc = 0;
    EVP_KDF_CTX_free(kctx);
    return rc;
}

/*
 * django-fernet-encrypted-fields (src/encrypted_fields/fields.py,
 * EncryptedFieldMixin.keys, jazzband/django-fernet-encrypted-fields):
 *   for secret_key in [SECRET_KEY] + SECRET_KEY_FALLBACKS:      # outer loop
 *       for salt_key in SALT_KEY (a list, or one string):        # inner loop
 *           PBKDF2HMAC(SHA256, length=32, salt=salt_key.encode("utf-8"),
 *                      iterations=100_000).derive(secret_key.encode("utf-8"))
 * as one MultiFernet in that order (older releases had no fallbacks, which is
 * the same list when secret_key_fallbacks_file is unset).
 */
int django_keys_derive_encrypted_fields(const uint8_t *secret, size_t len, const uint8_t *salt,
                                        size_t salt_len, uint8_t out[FERNET_KEY_BYTES])
{
    if (len > INT_MAX || salt_len > INT_MAX)
        return -1;
    return PKCS5_PBKDF2_HMAC((const char *)secret, (int)len, salt, (int)salt_len, 100000,
                             EVP_sha256(), FERNET_KEY_BYTES, out) == 1
               ? 0
               : -1;
}

/* The keyring of n derived keys; frees (and so wipes) raw either way. */
static struct keyring *ring_from(uint8_t (*raw)[FERNET_KEY_BYTES], size_t n, char *err,
                                 size_t errlen)
{
    struct keyring *kr = keyring_from_raw((const uint8_t(*)[FERNET_KEY_BYTES])raw, n, err, errlen);
    sodium_free(raw);
    return kr;
}

struct keyring *django_keys_fernet_fields_ring(const char *const item[], const size_t len[],
                                               size_t n, char *err, size_t errlen)
{
    uint8_t(*raw)[FERNET_KEY_BYTES] = sodium_allocarray(n, FERNET_KEY_BYTES);
    if (raw == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (django_keys_derive_fernet_fields((const uint8_t *)item[i], len[i], raw[i]) != 0) {
            snprintf(err, errlen, "HKDF-SHA256 failed in OpenSSL");
            sodium_free(raw);
            return NULL;
        }
    }
    return ring_from(raw, n, err, errlen);
}

struct keyring *django_keys_encrypted_fields_ring(const char *const secret[],
                                                  const size_t secret_len[], size_t n_secrets,
                                                  const char *const salt[], const size_t salt_len[],
                                                  size_t n_salts, char *err, size_t errlen)
{
    size_t n = n_secrets * n_salts;
    uint8_t(*raw)[FERNET_KEY_BYTES] = sodium_allocarray(n, FERNET_KEY_BYTES);
    if (raw == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t idx = 0;
    for (size_t s = 0; s < n_secrets; s++) {
        for (size_t t = 0; t < n_salts; t++) {
            if (django_keys_derive_encrypted_fields((const uint8_t *)secret[s], secret_len[s],
                                                    (const uint8_t *)salt[t], salt_len[t],
                                                    raw[idx++]) != 0) {
                snprintf(err, errlen, "PBKDF2-HMAC-SHA256 failed in OpenSSL");
                sodium_free(raw);
                return NULL;
            }
        }
    }
    return ring_from(raw, n, err, errlen);
}
