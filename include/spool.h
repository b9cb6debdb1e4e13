/*
 * spool.h — the durable spool of results that carry a rotated refresh token
 * (SPEC §6: never lose a rotated refresh token). Items are appended to a
 * journal file under <state_directory>/spool/ (seg-<id>.spool), one tagged
 * line per result: "S2" for a full result, "P2" for a partial one (a rotated
 * refresh token alone, store.h): the tokens as the Fernet ciphertext the
 * database will hold, never plaintext, and a keyed tag over the line (the
 * formats are in spool_line.c). A write is durable (fdatasync) before it
 * returns, so before the items are sent to the database; settled items are
 * recorded ("D2" lines) with the next write, and a file is removed once every
 * item in it is settled. At start the daemon replays what is left. A last
 * line a crash cut short was never confirmed and is ignored; any other line
 * that cannot be read is reported, the file's readable items are replayed,
 * and the file is kept aside (*.bad) for the operator: never fatal, never
 * silently dropped.
 */
#ifndef OAUTH_SPOOL_H
#define OAUTH_SPOOL_H

#include "common.h"
#include "keys.h"
#include "store.h"

struct spool;

/* Opens (creating) <state_dir>/spool. NULL with a reason on failure. */
struct spool *spool_open(const char *state_dir, char *err, size_t errlen) WUR;

/*
 * Appends the n items to the journal and makes them durable; sets each
 * item's spool_id. Returns -1 with a reason (items stay unspooled). Keeps a
 * reference to kr until the next write with other keys or spool_close (which
 * records what was settled since the last write with it).
 */
int spool_write(struct spool *sp, const struct keyring *kr, struct store_item *const *items,
                size_t n, char *err, size_t errlen) WUR;

/*
 * Keeps one result the database refuses for good (a poison value) out of the
 * way but on disk: written alone, durably, as <spool>/seg-<new id>.spool.bad,
 * which is never replayed, for the operator. path receives the file's name.
 * Returns -1 with a reason when it cannot be written.
 */
int spool_set_aside(struct spool *sp, const struct keyring *kr, const struct store_item *item,
                    char *path, size_t pathlen, char *err, size_t errlen) WUR;

/* The item with this spool_id is settled (written or discarded); a file goes after its last. */
void spool_release(struct spool *sp, int64_t id);

/* What a replay found. */
struct spool_replay_stats {
    size_t segments, items, bad_items, bad_segments;
    size_t torn_lines; /* a last line a crash cut short (never confirmed): ignored */
    size_t settled;    /* items not replayed: their file records them as settled */
};

/*
 * Reads every file left by an earlier run and hands each unsettled item to
 * add() (which takes ownership), oldest first. Releasing the items removes
 * the file. Corrupt entries are counted and reported through warn().
 */
void spool_replay(struct spool *sp, const struct keyring *kr,
                  void (*add)(void *ud, struct store_item *item),
                  void (*warn)(void *ud, const char *msg), void *ud,
                  struct spool_replay_stats *stats);

/* Files with items not yet released. */
size_t spool_open_segments(const struct spool *sp);

/* Lines are written to the journal in pieces of about this size, so the
 * spool never holds a whole flush's lines; what it keeps between writes
 * (for reuse) is spool_buffer_bytes(). */
#define SPOOL_WRITE_PIECE (128 * 1024)
size_t spool_buffer_bytes(const struct spool *sp);
void spool_close(struct spool *sp);

#endif
