/*
 * mig2-vm - guest RAM
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ram.h"

bool ram_block_init(RamBlock *b, const char *name, uint64_t size,
                    const char *file, char **errp)
{
    void *p;

    memset(b, 0, sizeof(*b));
    if (size == 0 || size % RAM_PAGE_SIZE) {
        *errp = strdup("memory size must be a non-zero multiple of 4 KiB");
        return false;
    }
    if (file) {
        struct stat st;
        int fd = open(file, O_RDONLY);

        if (fd < 0) {
            if (asprintf(errp, "cannot open memory file '%s': %s", file,
                         strerror(errno)) < 0) {
                *errp = NULL;
            }
            return false;
        }
        if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < size) {
            close(fd);
            if (asprintf(errp, "memory file '%s' is smaller than the guest "
                         "RAM (%llu bytes)", file,
                         (unsigned long long)size) < 0) {
                *errp = NULL;
            }
            return false;
        }
        /* Private: guest writes never reach the file. */
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        close(fd);
        b->file_backed = true;
    } else {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            madvise(p, size, MADV_HUGEPAGE);
        }
    }
    if (p == MAP_FAILED) {
        if (asprintf(errp, "cannot map guest RAM '%s': %s", name,
                     strerror(errno)) < 0) {
            *errp = NULL;
        }
        return false;
    }
    b->host = p;
    b->size = size;
    b->n_pages = size / RAM_PAGE_SIZE;
    b->dirty_words = (b->n_pages + 63) / 64;
    b->dirty = calloc(b->dirty_words, sizeof(*b->dirty));
    b->name = strdup(name);
    if (!b->dirty || !b->name) {
        ram_block_destroy(b);
        *errp = strdup("out of memory");
        return false;
    }
    return true;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22       /* Linux 5.14; older headers lack it */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

bool ram_prealloc(RamBlock *b, char **errp)
{
    uint64_t off;

    if (madvise(b->host, b->size, MADV_POPULATE_WRITE) == 0) {
        return true;
    }
    if (errno != EINVAL) {
        if (asprintf(errp, "cannot preallocate guest RAM: %s",
                     strerror(errno)) < 0) {
            *errp = NULL;
        }
        return false;
    }
    /* Older kernel: write each page's first byte back to itself. */
    for (off = 0; off < b->size; off += RAM_PAGE_SIZE) {
        volatile uint8_t *p = b->host + off;

        *p = *p;
    }
    return true;
}

void ram_block_destroy(RamBlock *b)
{
    if (b->host) {
        munmap(b->host, b->size);
    }
    free((void *)b->dirty);
    free(b->name);
    memset(b, 0, sizeof(*b));
}

static void mark_dirty(RamBlock *b, uint64_t off, uint64_t len)
{
    uint64_t first = off / RAM_PAGE_SIZE;
    uint64_t last = (off + len - 1) / RAM_PAGE_SIZE;
    uint64_t pg;

    for (pg = first; pg <= last; pg++) {
        atomic_fetch_or_explicit(&b->dirty[pg / 64], 1ULL << (pg % 64),
                                 memory_order_relaxed);
    }
}

void ram_write(RamBlock *b, uint64_t off, const void *src, size_t len)
{
    if (len == 0 || off >= b->size || len > b->size - off) {
        return;
    }
    memcpy(b->host + off, src, len);
    /*
     * Mark after the copy and with release order: whoever takes the bit
     * afterwards and then reads the page sees these bytes.
     */
    atomic_thread_fence(memory_order_release);
    mark_dirty(b, off, len);
}

void ram_mark_all_dirty(RamBlock *b)
{
    size_t i;

    for (i = 0; i < b->dirty_words; i++) {
        uint64_t v = ~0ULL;

        if (i == b->dirty_words - 1 && b->n_pages % 64) {
            v = (1ULL << (b->n_pages % 64)) - 1;
        }
        atomic_store_explicit(&b->dirty[i], v, memory_order_relaxed);
    }
}

uint64_t ram_take_dirty(RamBlock *b, uint64_t *out)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; i < b->dirty_words; i++) {
        out[i] = atomic_exchange_explicit(&b->dirty[i], 0,
                                          memory_order_acquire);
        n += (uint64_t)__builtin_popcountll(out[i]);
    }
    return n;
}

uint64_t ram_count_dirty(const RamBlock *b)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; i < b->dirty_words; i++) {
        n += (uint64_t)__builtin_popcountll(
            atomic_load_explicit(&b->dirty[i], memory_order_relaxed));
    }
    return n;
}

void ram_note_written(RamBlock *b, uint64_t off)
{
    mark_dirty(b, off, 1);
}

void ram_zero_page(RamBlock *b, uint64_t off)
{
    uint64_t pg = off / RAM_PAGE_SIZE;
    bool written = atomic_load_explicit(&b->dirty[pg / 64],
                                        memory_order_relaxed) &
                   (1ULL << (pg % 64));
    uint8_t *host = b->host + pg * RAM_PAGE_SIZE;

    if ((written || b->file_backed) && !ram_is_zero(host, RAM_PAGE_SIZE)) {
        memset(host, 0, RAM_PAGE_SIZE);
    }
}

void ram_map_range(RamBlock *b, uint64_t first, uint64_t last)
{
    uint8_t *start;
    uint64_t len, off;

    if (first > last || last >= b->n_pages) {
        return;
    }
    start = b->host + first * RAM_PAGE_SIZE;
    len = (last - first + 1) * RAM_PAGE_SIZE;
    if (!b->file_backed) {
        /* Errors only mean the pages fault in later, as without this. */
        (void)madvise(start, len, MADV_POPULATE_READ);
        return;
    }
    /*
     * A read fault on a file mapping maps its whole (aligned) fault-around
     * window from the page cache, so one load per window maps the range;
     * MADV_POPULATE_READ walks it page by page and cost 1.6-1.9x as much
     * (see ram.h).
     */
    for (off = 0; off < len;
         off = ((uintptr_t)(start + off) / RAM_FAULT_AROUND + 1) *
                   RAM_FAULT_AROUND - (uintptr_t)start) {
        (void)((const volatile uint8_t *)start)[off];
    }
}

bool ram_is_zero(const uint8_t *p, size_t len)
{
    /* Compare the buffer with itself shifted by one word: all-equal + first zero. */
    return len == 0 ||
           (p[0] == 0 && (len == 1 || memcmp(p, p + 1, len - 1) == 0));
}

bool ram_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;

    if (!s || !*s || *s == '-') {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return false;
    }
    switch (*end) {
    case '\0':
        break;
    case 'k': case 'K':
        mul = 1ULL << 10;
        end++;
        break;
    case 'm': case 'M':
        mul = 1ULL << 20;
        end++;
        break;
    case 'g': case 'G':
        mul = 1ULL << 30;
        end++;
        break;
    case 't': case 'T':
        mul = 1ULL << 40;
        end++;
        break;
    default:
        return false;
    }
    if (*end == 'B' || *end == 'b') {
        end++;
    }
    if (*end || v > UINT64_MAX / mul) {
        return false;
    }
    *out = v * mul;
    return true;
}
