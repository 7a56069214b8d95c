/*
 * mig2-analyze - what the stream parsers share (tools/mig2-analyze.c)
 *
 * The parsers walk a read-only mapping of the whole file and describe it
 * as a json-c tree; the text output is rendered from that tree, so both
 * outputs always say the same thing.  The first malformation stops the
 * walk and is recorded with its byte offset.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_ANALYZE_H
#define MIG2_ANALYZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* One RAM block: from a v3 MEM_SIZE record or a v4 RAM_BLOCK TLV. */
typedef struct AzBlock {
    char *name;                 /* as on the wire, printable-escaped */
    uint64_t size;
    uint32_t page_size;
    uint64_t normal;            /* pages with data */
    uint64_t zero;              /* zero (or fill-byte) pages */
    uint64_t other;             /* compressed / XBZRLE: not dumped */
    int fd;                     /* --dump-ram file, or -1 */
} AzBlock;

typedef struct Az {
    const char *path;
    const uint8_t *base;        /* the whole file, mapped */
    size_t size;

    /* options */
    const char *dump_dir;

    json_object *root;

    /* the first malformation */
    bool failed;
    size_t err_off;
    char *err_msg;
    /* not malformed, but the file cannot be analysed (exit 3) */
    bool io_failed;

    AzBlock *blocks;
    size_t n_blocks;
    size_t cap_blocks;
    uint64_t warned_undumped;
    /* v3 only: RAM flags seen (array of names) and the page size */
    json_object *ram_flags;
    uint32_t ram_page_size;
    /* the mapping below this offset has been handed back (az_release) */
    size_t released;
} Az;

/* ---- errors ---- */

/* Record the first malformation at @off; always returns false. */
bool az_fail(Az *az, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An I/O problem (dump files): reported at once, exit status 3. */
bool az_io_fail(Az *az, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- bounded reads at *@pos; on failure they name @what ---- */

/* True when @n bytes are left at @pos; else fails with "expected @what". */
bool az_need(Az *az, size_t pos, uint64_t n, const char *what);
bool az_u8(Az *az, size_t *pos, uint8_t *v, const char *what);
bool az_u16(Az *az, size_t *pos, uint16_t *v, const char *what);
bool az_u32(Az *az, size_t *pos, uint32_t *v, const char *what);
bool az_u64(Az *az, size_t *pos, uint64_t *v, const char *what);
uint32_t az_be32(const uint8_t *p);

/*
 * @n bytes of wire text as a printable NUL-terminated string (bytes
 * outside 0x20..0x7e become \xNN); the caller frees it.  NULL only when
 * out of memory.
 */
char *az_printable(const void *p, size_t n);
char *az_hex(const uint8_t *p, size_t n);

/*
 * The walk will not look below @pos again: let the kernel drop the pages
 * of the mapping behind it, so a large stream is never resident whole.
 */
void az_release(Az *az, size_t pos);

/* ---- JSON helpers (the tree owns what is added) ---- */

void az_jint(json_object *o, const char *key, int64_t v);
void az_juint(json_object *o, const char *key, uint64_t v);
void az_jstr(json_object *o, const char *key, const char *s);
void az_jbool(json_object *o, const char *key, bool v);
/* A new array stored under @key in @o. */
json_object *az_jarray(json_object *o, const char *key);
json_object *az_jobject(json_object *o, const char *key);

/* ---- RAM blocks, page accounting and --dump-ram ---- */

/*
 * Register block @name (@len bytes of wire text) of @size bytes; returns
 * its index, or -1 after recording an error.  A name seen before keeps its
 * index (and must have the same size).
 */
int az_block_add(Az *az, size_t off, const char *name, size_t len,
                 uint64_t size, uint32_t page_size);
/* The index of block @name, or -1. */
int az_block_find(const Az *az, const char *name, size_t len);

/*
 * Account for one page of block @b at byte @addr: @data is page_size
 * bytes, or NULL for a page filled with @fill.  Writes it to the dump.
 */
bool az_page(Az *az, int b, uint64_t addr, const uint8_t *data,
             uint8_t fill);
/* A page whose contents this tool cannot decode (compressed, XBZRLE). */
void az_page_other(Az *az, int b);
/* The "ram" summary object for the tree. */
json_object *az_ram_summary(const Az *az);

/* ---- the stream parsers ---- */

/* Walk a QEVM v3 stream after its 8-byte header; fills az->root. */
bool az_parse_v3(Az *az);
/* Walk a QEVM v4 stream (protocol v2) after its preamble. */
bool az_parse_v4(Az *az);

#endif /* MIG2_ANALYZE_H */
