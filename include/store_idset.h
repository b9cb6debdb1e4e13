/*
 * store_idset.h — a multiset of account ids (open addressing, linear probing,
 * deletion by backward shift): the store asks store_has_account() once per
 * claimed account, and walking every held item made a claim of 500 cost
 * 500 x (items held). It owns its two arrays and nothing else; it knows
 * nothing of items or of the database.
 */
#ifndef OAUTH_STORE_IDSET_H
#define OAUTH_STORE_IDSET_H

#include "common.h"

struct store_idset {
    int64_t *key;
    uint32_t *count; /* 0 = empty slot */
    size_t cap, used;
};

/* Counts one more holder of id. On OOM the id is not recorded: store_has_account()
 * then says no, which is what it said before the store held the item (the lease
 * still protects the account). */
void store_idset_add(struct store_idset *s, int64_t id);
/* Whether id is held; *at receives its slot. */
bool store_idset_find(const struct store_idset *s, int64_t id, size_t *at);
/* Counts one holder of id fewer (nothing when it is not held). */
void store_idset_remove(struct store_idset *s, int64_t id);
void store_idset_free(struct store_idset *s);

#endif
