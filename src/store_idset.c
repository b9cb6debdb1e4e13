/*
 * store_idset.c — the account id multiset of the store (store_idset.h). Pure
 * memory: no I/O, no clocks.
 */
#include "store_idset.h"

#include <stdlib.h>
#include <string.h>

static size_t store_idset_slot(const struct store_idset *s, int64_t id)
{
    uint64_t x = (uint64_t)id;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (s->cap - 1);
}

static bool store_idset_grow(struct store_idset *s)
{
    size_t ncap = s->cap ? s->cap * 2 : 1024;
    struct store_idset n = {
        .key = calloc(ncap, sizeof *n.key), .count = calloc(ncap, sizeof *n.count), .cap = ncap};
    if (!n.key || !n.count) {
        free(n.key);
        free(n.count);
        return false;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->count[i])
            continue;
        size_t j = store_idset_slot(&n, s->key[i]);
        while (n.count[j])
            j = (j + 1) & (ncap - 1);
        n.key[j] = s->key[i];
        n.count[j] = s->count[i];
        n.used++;
    }
    free(s->key);
    free(s->count);
    *s = n;
    return true;
}

void store_idset_add(struct store_idset *s, int64_t id)
{
    if ((s->used + 1) * 2 > s->cap && !store_idset_grow(s))
        return;
    size_t i = store_idset_slot(s, id);
    while (s->count[i] && s->key[i] != id)
        i = (i + 1) & (s->cap - 1);
    if (!s->count[i]) {
        s->key[i] = id;
        s->used++;
    }
    s->count[i]++;
}

bool store_idset_find(const struct store_idset *s, int64_t id, size_t *at)
{
    if (!s->cap)
        return false;
    size_t i = store_idset_slot(s, id);
    while (s->count[i]) {
        if (s->key[i] == id) {
            *at = i;
            return true;
        }
        i = (i + 1) & (s->cap - 1);
    }
    return false;
}

void store_idset_remove(struct store_idset *s, int64_t id)
{
    size_t i;
    if (!store_idset_find(s, id, &i))
        return;
    if (--s->count[i])
        return;
    s->used--;
    /* Backward shift: move later members of the probe run into the hole. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & (s->cap - 1);
        if (!s->count[j])
            break;
        size_t home = store_idset_slot(s, s->key[j]);
        bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            s->key[i] = s->key[j];
            s->count[i] = s->count[j];
            s->count[j] = 0;
            i = j;
        }
    }
}

void store_idset_free(struct store_idset *s)
{
    free(s->key);
    free(s->count);
    memset(s, 0, sizeof *s);
}
