/*
 * mig2-vm - an index of devices by (stream id, instance)
 *
 * VMs with thousands of devices (10,000 in the handshake bench) made
 * every per-device lookup by a linear scan quadratic: 300 ms of the
 * downtime went to strcmp.  The index is an open-addressing hash table
 * of (id, instance) -> value; the ids are borrowed and must outlive it.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_DEVINDEX_H
#define MIG2_VM_DEVINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct DevIndex DevIndex;

/* An empty index with room for @n entries before it grows; NULL: OOM. */
DevIndex *dev_index_new(size_t n);
void dev_index_free(DevIndex *x);
/*
 * Map (@id, @instance) to @value.  False when the key is already there
 * (its value is kept) or memory ran out (*@nomem set, when not NULL).
 */
bool dev_index_put(DevIndex *x, const char *id, uint32_t instance,
                   size_t value, bool *nomem);
/* The value of (@id, @instance) in *@value; false when absent. */
bool dev_index_get(const DevIndex *x, const char *id, uint32_t instance,
                   size_t *value);

#endif
