/*
 * mig2-vm - an index of devices by (stream id, instance)
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "devindex.h"

typedef struct Slot {
    const char *id;             /* NULL: empty */
    uint32_t instance;
    size_t value;
} Slot;

struct DevIndex {
    Slot *slot;
    size_t mask;                /* capacity - 1, a power of two minus 1 */
    size_t n;
};

static size_t key_hash(const char *id, uint32_t instance)
{
    uint64_t h = 1469598103934665603ULL;    /* FNV-1a over the id */
    const unsigned char *p;

    for (p = (const unsigned char *)id; *p; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    h = (h ^ instance) * 0x9e3779b97f4a7c15ULL;
    return (size_t)(h ^ (h >> 29));
}

/* The slot holding the key, or the empty slot where it would go. */
static Slot *find(const DevIndex *x, const char *id, uint32_t instance)
{
    size_t j = key_hash(id, instance) & x->mask;

    while (x->slot[j].id && (x->slot[j].instance != instance ||
                             strcmp(x->slot[j].id, id) != 0)) {
        j = (j + 1) & x->mask;
    }
    return &x->slot[j];
}

static bool alloc_slots(DevIndex *x, size_t n)
{
    size_t cap = 16;

    /* At most half full: probes stay short. */
    while (cap < 2 * n) {
        cap *= 2;
    }
    x->slot = calloc(cap, sizeof(*x->slot));
    x->mask = cap - 1;
    return x->slot != NULL;
}

DevIndex *dev_index_new(size_t n)
{
    DevIndex *x = calloc(1, sizeof(*x));

    if (x && !alloc_slots(x, n)) {
        free(x);
        x = NULL;
    }
    return x;
}

void dev_index_free(DevIndex *x)
{
    if (x) {
        free(x->slot);
        free(x);
    }
}

static bool grow(DevIndex *x)
{
    DevIndex bigger = { 0 };
    size_t i;

    if (!alloc_slots(&bigger, 2 * (x->n + 1))) {
        return false;
    }
    for (i = 0; i <= x->mask; i++) {
        if (x->slot[i].id) {
            *find(&bigger, x->slot[i].id, x->slot[i].instance) = x->slot[i];
        }
    }
    free(x->slot);
    x->slot = bigger.slot;
    x->mask = bigger.mask;
    return true;
}

bool dev_index_put(DevIndex *x, const char *id, uint32_t instance,
                   size_t value, bool *nomem)
{
    Slot *s;

    if (nomem) {
        *nomem = false;
    }
    if (2 * (x->n + 1) > x->mask + 1 && !grow(x)) {
        if (nomem) {
            *nomem = true;
        }
        return false;
    }
    s = find(x, id, instance);
    if (s->id) {
        return false;
    }
    *s = (Slot){ .id = id, .instance = instance, .value = value };
    x->n++;
    return true;
}

bool dev_index_get(const DevIndex *x, const char *id, uint32_t instance,
                   size_t *value)
{
    const Slot *s = find(x, id, instance);

    if (!s->id) {
        return false;
    }
    *value = s->value;
    return true;
}
