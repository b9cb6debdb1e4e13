/*
 * b64.c — urlsafe base64 exactly as Python's base64.urlsafe_b64encode writes it
 * (alphabet A-Z a-z 0-9 - _, '=' padding to a multiple of 4). It owns only the
 * mapping between bytes and that text, on top of libsodium's constant-time
 * codec. It must never be lenient: whitespace, the standard alphabet's '+' and
 * '/', missing or extra padding and non-canonical trailing bits are all
 * rejected, so one byte string has exactly one accepted encoding.
 */
#include <string.h>

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
