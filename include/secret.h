/*
 * secret.h — plaintext that must not outlive its use. A secret buffer is heap
 * memory that is wiped (sodium_memzero) before it is freed, and is always NUL
 * terminated so it can be handed to APIs that want C strings. It never owns
 * key material: keys live in keys.c's guarded memory.
 */
#ifndef OAUTH_SECRET_H
#define OAUTH_SECRET_H

#include <sys/types.h>

#include "common.h"

struct secret {
    char *data; /* len bytes + a NUL; NULL when empty/unset */
    size_t len;
};

/* Copies len bytes into a new secret (NUL-terminated). Returns -1 on OOM. */
int secret_set(struct secret *s, const void *data, size_t len) WUR;
/* Takes ownership of a malloc()ed buffer of len bytes plus NUL. */
void secret_adopt(struct secret *s, char *data, size_t len);
/* Wipes and frees; leaves {NULL, 0}. Safe on an empty secret. */
void secret_clear(struct secret *s);
/* Wipes and frees a malloc()ed C string (NULL is fine). */
void secure_free_str(char *s);
/* Wipes and frees a malloc()ed buffer of len bytes (NULL is fine). */
void secure_free(void *p, size_t len);

/*
 * A long-lived secret string (client secret, conninfo): len bytes + NUL in
 * guarded memory (sodium_malloc: guard pages, locked, kept out of core dumps)
 * made read-only. Never written to again; released with secret_guarded_free,
 * which wipes it. Returns NULL when out of memory.
 */
char *secret_guarded_dup(const char *s, size_t len) WUR;
/* Wipes and releases what secret_guarded_dup returned (NULL is fine). */
void secret_guarded_free(char *s);

/*
 * Reads a whole file that holds secrets (a key file, a client secret) into
 * guarded memory: sodium_malloc()ed (locked, kept out of core dumps), NUL
 * terminated, released with sodium_free(), which wipes it. Refuses what is
 * not a regular file, more than max_bytes, or growing while read. Sets *mode
 * to the file's permission bits so the caller can warn about loose ones.
 * Returns NULL with a reason in err ("cannot open: ...", "not a regular file",
 * "larger than N bytes", ...) that never holds the file's content.
 */
char *secret_file_read(const char *path, size_t max_bytes, size_t *len, unsigned *mode, char *err,
                       size_t errlen) WUR;
/* The same, also setting *owner to the file's owner (for keys.c's warning). */
char *secret_file_read_owned(const char *path, size_t max_bytes, size_t *len, unsigned *mode,
                             uid_t *owner, char *err, size_t errlen) WUR;

#endif
