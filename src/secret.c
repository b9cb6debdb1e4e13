/*
 * secret.c — heap buffers for plaintext that must not outlive its use. It owns
 * only the wipe-then-free discipline: every byte handed to it is zeroed with
 * sodium_memzero before the memory goes back to the allocator. It must never
 * hold key material (keys.c keeps keys in guarded memory) and never print what
 * it holds. It also owns guarded copies of long-lived secret strings (client
 * secrets, the conninfo: sodium_malloc, read-only) and reads secret files
 * into guarded memory, for keys.c, config_secrets.c and db.c alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

char *secret_guarded_dup(const char *s, size_t len)
{
    if (sodium_init() < 0)
        return NULL;
    char *copy = sodium_malloc(len + 1);
    if (copy == NULL)
        return NULL;
    if (len > 0)
        memcpy(copy, s, len);
    copy[len] = '\0';
    /* Read-only: a stray write faults instead of corrupting the secret, and
     * nothing may wipe it but secret_guarded_free. */
    if (sodium_mprotect_readonly(copy) != 0) {
        sodium_free(copy);
        return NULL;
    }
    return copy;
}

void secret_guarded_free(char *s)
{
    if (s != NULL)
        sodium_free(s); /* makes it writable, wipes, unmaps */
}

char *secret_file_read(const char *path, size_t max_bytes, size_t *len, unsigned *mode, char *err,
                       size_t errlen)
{
    uid_t owner;
    return secret_file_read_owned(path, max_bytes, len, mode, &owner, err, errlen);
}

char *secret_file_read_owned(const char *path, size_t max_bytes, size_t *len, unsigned *mode,
                             uid_t *owner, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        close(fd);
        return NULL;
    }
    if ((uintmax_t)st.st_size > max_bytes) {
        snprintf(err, errlen, "larger than %zu bytes", max_bytes);
        close(fd);
        return NULL;
    }
    /* +1 to notice growth past the size we saw, +1 for the NUL. */
    size_t cap = (size_t)st.st_size + 2;
    char *buf = sodium_malloc(cap);
    if (buf == NULL) {
        snprintf(err, errlen, "cannot allocate guarded memory");
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < cap - 1) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read: %s", strerror(errno));
            close(fd);
            sodium_free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got > (size_t)st.st_size) {
        snprintf(err, errlen, "changed while being read");
        sodium_free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    *mode = (unsigned)(st.st_mode & 07777);
    *owner = st.st_uid;
    return buf;
}
