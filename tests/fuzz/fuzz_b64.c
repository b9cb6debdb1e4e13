/*
 * fuzz_b64.c — libFuzzer target for the strict urlsafe base64 codecs (b64.h):
 * the constant-time one (libsodium, for keys) and the public one (OpenSSL,
 * for ciphertext). Properties: decoding never reads or writes out of bounds,
 * whatever the capacity; whatever decodes re-encodes to exactly the input (one
 * accepted encoding per byte string); encode-then-decode returns the input
 * bytes; and the two codecs agree on every input, byte for byte and on every
 * refusal (differential).
 */
#include <string.h>

#include "b64.h"
#include "fuzz.h"

/* Both decoders on the same text and capacity must say the same thing. */
static void check_same_decode(const char *text, size_t size, size_t cap)
{
    uint8_t *a = malloc(cap ? cap : 1), *b = malloc(cap ? cap : 1);
    FUZZ_CHECK(a != NULL && b != NULL, "out of memory");
    size_t la = 0, lb = 0;
    int ra = b64url_decode(text, size, a, cap, &la);
    int rb = b64url_decode_public(text, size, b, cap, &lb);
    FUZZ_CHECK(ra == rb, "%zu chars, room %zu: constant-time decoder says %d, public one %d", size,
               cap, ra, rb);
    if (ra == 0)
        FUZZ_CHECK(la == lb && memcmp(a, b, la) == 0,
                   "%zu chars: the two decoders give different bytes (%zu vs %zu)", size, la, lb);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    check_same_decode((const char *)data, size, size / 4 * 3 + 1);
    check_same_decode((const char *)data, size, size / 4 * 3 > 0 ? size / 4 * 3 - 1 : 0);

    /* The input as text: decode into exactly the room it needs, and into less. */
    const char *text = (const char *)data;
    size_t cap = size / 4 * 3 + 1;
    uint8_t *out = malloc(cap);
    FUZZ_CHECK(out != NULL, "out of memory");
    size_t got = 123456;
    if (b64url_decode(text, size, out, cap, &got) == 0) {
        FUZZ_CHECK(got <= cap, "decoded %zu bytes into a %zu-byte buffer", got, cap);
        FUZZ_CHECK(size % 4 == 0, "accepted a %zu-char text that is not whole quanta", size);
        size_t elen = b64url_encoded_len(got);
        FUZZ_CHECK(elen == size, "%zu bytes decoded from %zu chars re-encode to %zu chars", got,
                   size, elen);
        char *again = malloc(elen + 1);
        FUZZ_CHECK(again != NULL, "out of memory");
        b64url_encode(out, got, again, elen + 1);
        FUZZ_CHECK(memcmp(again, text, size) == 0,
                   "accepted a non-canonical encoding (%zu chars decode to %zu bytes that "
                   "re-encode differently)",
                   size, got);
        free(again);

        /* One byte too little room must be refused, never overflowed. */
        if (got > 0) {
            uint8_t *tight = malloc(got - 1 ? got - 1 : 1);
            FUZZ_CHECK(tight != NULL, "out of memory");
            size_t g2 = 0;
            FUZZ_CHECK(b64url_decode(text, size, tight, got - 1, &g2) != 0,
                       "decoded %zu bytes into %zu bytes of room", got, got - 1);
            free(tight);
        }
    } else {
        FUZZ_CHECK(got == 0, "a refused input left *outlen = %zu", got);
    }
    free(out);

    /* The input as bytes: encode, then decode back. */
    size_t elen = b64url_encoded_len(size);
    char *enc = malloc(elen + 1);
    uint8_t *back = malloc(size + 1);
    FUZZ_CHECK(enc != NULL && back != NULL, "out of memory");
    b64url_encode(data, size, enc, elen + 1);
    FUZZ_CHECK(strlen(enc) == elen, "encoding of %zu bytes is %zu chars, expected %zu", size,
               strlen(enc), elen);
    char *enc2 = malloc(elen + 1);
    FUZZ_CHECK(enc2 != NULL, "out of memory");
    b64url_encode_public(data, size, enc2, elen + 1);
    FUZZ_CHECK(strcmp(enc, enc2) == 0, "the two encoders differ on %zu bytes", size);
    free(enc2);
    size_t blen = 0;
    FUZZ_CHECK(b64url_decode(enc, elen, back, size + 1, &blen) == 0,
               "the codec refused its own encoding of %zu bytes", size);
    FUZZ_CHECK(blen == size && memcmp(back, data, size) == 0,
               "round trip of %zu bytes gave %zu different bytes", size, blen);
    free(enc);
    free(back);
    return 0;
}
