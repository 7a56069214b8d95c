/*
 * mig2-vm - guest RAM with page-granular dirty tracking
 *
 * Guest memory is one mmap per block: anonymous (advised for transparent
 * huge pages, as QEMU does) or a private mapping of a file, so tests can
 * fill RAM with known data without the guest's writes reaching the file.
 * The "guest" here is the workload thread, so dirty tracking is done in
 * software: every guest write goes through ram_write(), which sets the
 * page's bit atomically.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_RAM_H
#define MIG2_VM_RAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RAM_PAGE_SIZE 4096u

typedef struct RamBlock {
    char *name;
    uint8_t *host;
    uint64_t size;
    uint64_t n_pages;
    bool file_backed;
    _Atomic uint64_t *dirty;    /* one bit per page */
    size_t dirty_words;
} RamBlock;

/*
 * Map @size bytes (a multiple of RAM_PAGE_SIZE) for block @name, from
 * @file when non-NULL (the file must be at least @size bytes).  Returns
 * false and sets *errp (caller frees).
 */
bool ram_block_init(RamBlock *b, const char *name, uint64_t size,
                    const char *file, char **errp);
void ram_block_destroy(RamBlock *b);
/*
 * Fault every page in now (QEMU's -mem-prealloc), so that first-touch
 * page faults do not land in a migration's downtime.  Contents are kept.
 */
bool ram_prealloc(RamBlock *b, char **errp);

/* A guest write: copy and mark the pages dirty. */
void ram_write(RamBlock *b, uint64_t off, const void *src, size_t len);
void ram_mark_all_dirty(RamBlock *b);
/*
 * Move the dirty bits into @out (dirty_words words), clearing them in the
 * block.  Returns the number of dirty pages.
 */
uint64_t ram_take_dirty(RamBlock *b, uint64_t *out);
uint64_t ram_count_dirty(const RamBlock *b);

/*
 * Destination side: the dirty bitmap records pages written by incoming
 * migration, so a zero page arriving for a page never written (and not
 * file-backed) needs no action: fresh anonymous memory is zero, and not
 * touching it spares a page fault.
 */
void ram_note_written(RamBlock *b, uint64_t off);
/* Make the page at @off zero, touching it only when it may not be. */
void ram_zero_page(RamBlock *b, uint64_t off);

/* Linux's default fault-around window for file mappings (fault_around_bytes). */
#define RAM_FAULT_AROUND (64u * 1024)

/*
 * Source side, before reading pages [@first, @last]: map the range into
 * the page tables, so that the zero-page check (the first touch of each
 * page) does not take a page fault every few pages.  Measured on 1 GiB of
 * a private file mapping (one thread, page cache warm): mapping it with
 * one load per fault-around window and then checking every page took
 * 39-41 ms; MADV_POPULATE_READ and the check took 63-76 ms (the populate
 * walks every page even when mapped: 30 ms over resident pages); the check
 * alone, faulting as it went, 77-80 ms.  So file-backed blocks are mapped
 * by loads; anonymous blocks, which have no fault-around, by
 * MADV_POPULATE_READ (145 ms against 185 ms for untouched 4 KiB pages;
 * transparent huge pages make either a few ms).  Advisory: on kernels
 * without MADV_POPULATE_READ the pages fault in during the check.
 */
void ram_map_range(RamBlock *b, uint64_t first, uint64_t last);

/* True when @len bytes at @p are all zero. */
bool ram_is_zero(const uint8_t *p, size_t len);

/* Parse "256M", "1G", "4096" (bytes); false on junk or overflow. */
bool ram_parse_size(const char *s, uint64_t *out);

#endif /* MIG2_VM_RAM_H */
