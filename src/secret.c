/*
 * secret.c — heap buffers for plaintext that must not outlive its use. It owns
 * only the wipe-then-free discipline: every byte handed to it is zeroed with
 * sodium_memzero before the memory goes back to the allocator. It must never
 * hold key material (keys.c keeps keys in guarded memory) and never print what
 * it holds.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secret.h"

int secret_set(struct secret *s, const void *data, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    if (len > 0)
        memcpy(copy, data, len);
    copy[len] = '\0';
    secret_clear(s);
    s->data = copy;
    s->len = len;
    return 0;
}

void secret_adopt(struct secret *s, char *data, size_t len)
{
    secret_clear(s);
    s->data = data;
    s->len = data != NULL ? len : 0;
}

void secret_clear(struct secret *s)
{
    if (s->data != NULL) {
        /* +1: the terminating NUL is ours too, and cheap to wipe. */
        sodium_memzero(s->data, s->len + 1);
        free(s->data);
    }
    s->data = NULL;
    s->len = 0;
}

void secure_free_str(char *s)
{
    if (s == NULL)
        return;
    sodium_memzero(s, strlen(s));
    free(s);
}

void secure_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    sodium_memzero(p, len);
    free(p);
}
