/*
 * b64.c — urlsafe base64 exactly as Python's base64.urlsafe_b64encode writes it
 * (alphabet A-Z a-z 0-9 - _, '=' padding to a multiple of 4). It owns only the
 * mapping between bytes and that text, on top of libsodium's constant-time
 * codec (secrets: keys) or OpenSSL's faster one (public data: ciphertext). It
 * must never be lenient: whitespace, the standard alphabet's '+' and
 * '/', missing or extra padding and non-canonical trailing bits are all
 * rejected, so one byte string has exactly one accepted encoding.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "b64.h"

#define B64_VARIANT sodium_base64_VARIANT_URLSAFE

size_t b64url_encoded_len(size_t binlen)
{
    return (binlen + 2) / 3 * 4;
}

void b64url_encode(const uint8_t *bin, size_t binlen, char *out, size_t outlen)
{
    /* sodium_bin2base64 aborts on a short buffer; the caller's contract is
     * outlen >= encoded_len + 1, so a violation is a programming error. */
    sodium_bin2base64(out, outlen, bin, binlen, B64_VARIANT);
}

int b64url_decode(const char *s, size_t len, uint8_t *out, size_t outcap, size_t *outlen)
{
    *outlen = 0;
    /* Padded encodings are always whole quanta; this also rules out "" being
     * confused with anything but the empty string. */
    if (len % 4 != 0)
        return -1;
    if (len == 0)
        return 0;
    /* libsodium 1.0.18 reads the input through a plain (signed) char, and its
     * branch-free table maps every byte >= 0x80 to a valid digit: "AAA\x80"
     * decodes. Vet the character set ourselves first, without branching on
     * the data (key files are decoded here). */
    unsigned bad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned ok = ((c >= 'A') & (c <= 'Z')) | ((c >= 'a') & (c <= 'z')) |
                      ((c >= '0') & (c <= '9')) | (c == '-') | (c == '_') | (c == '=');
        bad |= ok ^ 1U;
    }
    if (bad != 0)
        return -1;
    size_t got = 0;
    const char *end = NULL;
    /* ignore = NULL: no whitespace or other characters are skipped. With
     * b64_end given, libsodium reports where it stopped; we insist that is the
     * very end of the input (no trailing garbage, no embedded NUL). */
    if (sodium_base642bin(out, outcap, s, len, NULL, &got, &end, B64_VARIANT) != 0)
        return -1;
    if (end != s + len)
        return -1;
    /* The length must match what the padding promises: 3 bytes per quantum
     * minus one per '='. libsodium checks the padding count; this catches a
     * stray '=' inside the text that stopped decoding early. */
    size_t pad = (s[len - 1] == '=') + (s[len - 2] == '=');
    if (got != len / 4 * 3 - pad)
        return -1;
    *outlen = got;
    return 0;
}

/* ---- public data: OpenSSL's codec ------------------------------------------
 * Tokens are ciphertext: nothing is learnt from how long decoding them takes,
 * and libsodium's constant-time codec was the largest single cost of a
 * refresh. OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock do the coding (standard
 * alphabet, so '-'/'_' are mapped to '+'/'/' around them); EVP_DecodeBlock is
 * lenient (a '=' inside the text, non-canonical bits), so the strict rules are
 * checked here first, exactly as the constant-time path enforces them. */

#define B64_CHUNK 4096 /* characters translated and decoded per EVP_DecodeBlock call */

/*
 * Copies n urlsafe characters to out in the standard alphabet; returns false
 * when one is not in the urlsafe alphabet (including '=', whitespace, NUL).
 * Range tests and selects rather than a table so that the compiler vectorises
 * it (see CMakeLists.txt): as a table walk it was most of a Fernet decryption.
 */
static bool urlsafe_to_std(const uint8_t *restrict in, uint8_t *restrict out, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        uint8_t c = in[k];
        uint8_t upper = (uint8_t)(c - 'A') < 26 ? 0xff : 0;
        uint8_t lower = (uint8_t)(c - 'a') < 26 ? 0xff : 0;
        uint8_t digit = (uint8_t)(c - '0') < 10 ? 0xff : 0;
        uint8_t minus = c == '-' ? 0xff : 0;
        uint8_t under = c == '_' ? 0xff : 0;
        uint8_t valid = upper | lower | digit | minus | under;
        /* An invalid character becomes NUL, which no valid one does. */
        out[k] = (uint8_t)(((c & ~(minus | under)) | ('+' & minus) | ('/' & under)) & valid);
    }
    return memchr(out, 0, n) == NULL;
}

/* The 6-bit value of an urlsafe character (valid characters only). */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : 63;
}

void b64url_encode_public(const uint8_t *bin, size_t binlen, char *out, size_t outlen)
{
    size_t need = b64url_encoded_len(binlen) + 1;
    if (outlen < need || binlen > (size_t)INT_MAX / 2)
        abort(); /* the caller's contract, as with sodium_bin2base64 */
    int n = EVP_EncodeBlock((unsigned char *)out, bin, (int)binlen);
    /* Written as selects so that the compiler vectorises it (b64.c is built
     * with -O3): as a per-character loop it was most of a Fernet encryption. */
    unsigned char *u = (unsigned char *)out;
    for (int i = 0; i < n; i++) {
        unsigned char c = u[i];
        u[i] = c == '+' ? '-' : (c == '/' ? '_' : c);
    }
    out[n] = '\0';
}

int b64url_decode_public(const char *s, size_t len, uint8_t *out, size_t outcap, size_t *outlen)
{
    *outlen = 0;
    if (len % 4 != 0 || len > (size_t)INT_MAX / 2)
        return -1;
    if (len == 0)
        return 0;
    size_t pad = (s[len - 1] == '=') + (s[len - 1] == '=' && s[len - 2] == '=');
    /* Canonical: the bits the padding leaves over must be zero (the characters
     * are vetted below; an invalid one here fails there). */
    if (pad == 1 && (b64url_value((unsigned char)s[len - 2]) & 0x3) != 0)
        return -1;
    if (pad == 2 && (b64url_value((unsigned char)s[len - 3]) & 0xf) != 0)
        return -1;
    size_t got = len / 4 * 3 - pad;
    if (got > outcap)
        return -1;
    uint8_t buf[B64_CHUNK];
    uint8_t tail[3];
    size_t o = 0;
    for (size_t i = 0; i < len; i += B64_CHUNK) {
        size_t n = len - i < B64_CHUNK ? len - i : B64_CHUNK;
        bool last = i + n == len;
        size_t data = last ? n - pad : n;
        if (!urlsafe_to_std((const uint8_t *)s + i, buf, data))
            return -1; /* wrong alphabet, whitespace, NUL or a '=' inside the text */
        for (size_t k = data; k < n; k++)
            buf[k] = '=';
        /* EVP_DecodeBlock writes whole quanta, padding included: the last one
         * goes through a small buffer so out needs room for got bytes only. */
        size_t body = last ? n - 4 : n;
        if (body > 0 && EVP_DecodeBlock(out + o, buf, (int)body) != (int)(body / 4 * 3))
            return -1;
        o += body / 4 * 3;
        if (last) {
            if (EVP_DecodeBlock(tail, buf + body, 4) != 3)
                return -1;
            memcpy(out + o, tail, 3 - pad);
            o += 3 - pad;
        }
    }
    *outlen = o;
    return o == got ? 0 : -1;
}
