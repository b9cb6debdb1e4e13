/*
 * b64.h — urlsafe base64 as Python's base64.urlsafe_b64encode writes it
 * (alphabet A-Z a-z 0-9 - _, '=' padding). Built on libsodium's codec.
 * Decoding is strict: it accepts every string Python's encoder produces and
 * rejects anything else (wrong alphabet, bad padding, embedded whitespace).
 */
#ifndef OAUTH_B64_H
#define OAUTH_B64_H

#include "common.h"

/* Encoded length including padding, excluding the NUL. */
size_t b64url_encoded_len(size_t binlen);
/* Writes a NUL-terminated encoding into out (size >= encoded_len + 1). */
void b64url_encode(const uint8_t *bin, size_t binlen, char *out, size_t outlen);
/*
 * Decodes len chars of s into out (capacity outcap). Returns 0 and sets
 * *outlen, or -1 when s is not strict padded urlsafe base64 or does not fit.
 */
int b64url_decode(const char *s, size_t len, uint8_t *out, size_t outcap, size_t *outlen) WUR;

/*
 * The same encoding and the same strictness for public data only (Fernet
 * ciphertext, never keys or plaintext): OpenSSL's table-driven codec, about ten
 * times faster than libsodium's constant-time one, whose running time does
 * depend on the data.
 */
void b64url_encode_public(const uint8_t *bin, size_t binlen, char *out, size_t outlen);
int b64url_decode_public(const char *s, size_t len, uint8_t *out, size_t outcap,
                         size_t *outlen) WUR;

#endif
