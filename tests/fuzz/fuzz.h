/*
 * fuzz.h — what every fuzz target in tests/fuzz shares: the libFuzzer entry
 * point (declared here so that -Wmissing-prototypes holds), and FUZZ_CHECK,
 * which turns a broken property into an abort() that both libFuzzer and the
 * plain corpus replayer (replay_main.c) report as a crash.
 *
 * A target must never print input bytes that may be secrets on success, and
 * must never touch anything outside the temporary directory it makes itself.
 */
#ifndef OAUTH_FUZZ_H
#define OAUTH_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property violated: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated malloc()ed copy of data (exactly size + 1 bytes, so ASan sees overreads). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    for (size_t i = 0; i < size; i++)
        s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

#endif
