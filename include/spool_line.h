/*
 * spool_line.h — the text of the spool's lines (spool_line.c), shared by
 * spool.c and nothing else: an item line ("S2" a full result, "P2" a partial
 * one), a settled line ("D2": these items of this journal are written), each
 * closed by a keyed tag, and the reading of each back. Pure: no files, no
 * clocks; the ciphertext passes through as it is and no plaintext is seen.
 */
#ifndef OAUTH_SPOOL_LINE_H
#define OAUTH_SPOOL_LINE_H

#include "common.h"
#include "keys.h"
#include "store.h"
#include "strbuf.h"

/* Ordinals of items in one journal (spool.c): below 2^SPOOL_ORD_BITS. */
#define SPOOL_ORD_BITS 24
#define SPOOL_ORD_MAX  ((UINT32_C(1) << SPOOL_ORD_BITS) - 1)

/* Appends the line of it (with its newline); -1 when it cannot be one (not
 * ciphertext, an expiry that does not read back the same, out of memory). */
int spool_line_append(struct strbuf *sb, const struct keyring *kr, const struct store_item *it);

/* Appends the settled lines of n ordinals of journal file_id; -1 on OOM. */
int spool_line_append_settled(struct strbuf *sb, const struct keyring *kr, int64_t file_id,
                              const uint32_t *ord, size_t n);

/* Whether line[0..len) is a settled line (by its magic only). */
bool spool_line_is_settled(const char *line, size_t len);

/* A list of ordinals read from settled lines; free ord. */
struct spool_ords {
    uint32_t *ord;
    size_t n, cap;
};

/*
 * Reads a settled line of file_id (line is split in place) and adds its
 * ordinals to set; false when it does not verify (*verified false) or is not
 * a valid settled line of this file.
 */
bool spool_line_read_settled(const struct keyring *kr, int64_t file_id, char *line, size_t len,
                             struct spool_ords *set, bool *verified);

/*
 * Reads an item line (split in place); the item is the caller's. NULL with
 * the reason in msg (naming path and lineno, never the line's content).
 */
struct store_item *spool_line_read(const struct keyring *kr, char *line, size_t len,
                                   const char *path, size_t lineno, char *msg, size_t msglen);

#endif
