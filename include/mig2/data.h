/*
 * libmig2 - data-phase frame payloads (docs/protocol.md sections 12.4, 13)
 *
 * Stateless, bounded encoders and parsers for the payloads of the frames
 * that follow the handshake: RAM, SYNC, SWITCHOVER, DEVICE, END on the
 * main channel from the source; DONE and SYNC_ACK from the destination;
 * CHANNEL_SYNC on extra channels.  Encoders append a payload to a
 * Mig2Writer (wrap it in mig2_wr_frame_begin/_end for a whole frame);
 * parsers take a payload and never read outside it.  Pointers in parsed
 * structures point into the payload.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_DATA_H
#define MIG2_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mig2/codec.h"
#include "mig2/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fixed payload lengths. */
#define MIG2_DATA_RAM_HEAD_LEN      8U      /* be32 block, be32 n */
#define MIG2_DATA_RAM_ENTRY_LEN     8U      /* be64 offset | ZERO */
#define MIG2_DATA_SYNC_LEN          12U     /* be32 round, be64 pages */
#define MIG2_DATA_SYNC_ACK_LEN      4U      /* be32 round */
#define MIG2_DATA_CHANNEL_SYNC_LEN  4U      /* be32 round */
#define MIG2_DATA_END_LEN           12U     /* be64 pages, be32 devices */
/* A DEVICE payload carries at most this many subsection records (u8). */
#define MIG2_DATA_MAX_SUBSECTIONS   255U

/*
 * Name of any registered frame type ("SRC_HELLO", "RAM", "CHANNEL_SYNC",
 * ...), or NULL for an unassigned or grease type.
 */
const char *mig2_frame_name(uint16_t type);

/* ---- RAM (0x0101) ---- */

/* What a parser must know of the block a RAM frame names. */
typedef struct Mig2DataRamBlock {
    uint64_t size;          /* used length in bytes */
    uint32_t page_size;     /* a power of two, 512 .. 2^30 */
} Mig2DataRamBlock;

/* One page to encode: @data is page_size bytes, or NULL for a zero page. */
typedef struct Mig2DataPage {
    uint64_t offset;
    const void *data;
} Mig2DataPage;

/*
 * A parsed RAM payload, or, while one streams in, its checked head and
 * entries (see mig2_data_ram_head_parse).
 */
typedef struct Mig2DataRam {
    uint32_t block;             /* index into the RAM_BLOCK list */
    uint32_t n;                 /* entries, at least 1 */
    uint32_t n_zero;            /* entries with the ZERO flag */
    uint32_t page_size;         /* the block's */
    uint64_t block_size;        /* the block's */
    const uint8_t *entries;     /* n x be64 */
    const uint8_t *data;        /* (n - n_zero) x page_size bytes; NULL
                                 * when only the entries were parsed */
    uint32_t bad_entry;         /* after MIG2_ERR_BAD_VALUE from the
                                 * entries: the index of the first bad one */
} Mig2DataRam;

/*
 * Payload length of a RAM frame of @n entries of which @n_data carry
 * data, in *@len.  MIG2_OK, MIG2_ERR_INVALID_ARG (n == 0, n_data > n, a
 * page size that is not a power of two from 512 to 2^30) or
 * MIG2_ERR_TOO_LARGE (over MIG2_FRAME_MAX).
 */
int mig2_data_ram_length(uint32_t n, uint32_t n_data, uint32_t page_size,
                         size_t *len);

/*
 * For senders that gather pages straight from guest memory (writev):
 * the 8-byte head and one 8-byte entry.  The entries, then the data of
 * each entry without ZERO in entry order, follow the head.  The entry
 * helpers are inline: senders and receivers call them once per page.
 */
void mig2_data_ram_head_put(uint8_t out[MIG2_DATA_RAM_HEAD_LEN],
                            uint32_t block, uint32_t n);

inline void mig2_data_ram_entry_put(uint8_t out[MIG2_DATA_RAM_ENTRY_LEN],
                                    uint64_t offset, bool zero)
{
    uint64_t v = offset | (zero ? (uint64_t)MIG2_RAM_ZERO : 0);

    out[0] = (uint8_t)(v >> 56);
    out[1] = (uint8_t)(v >> 48);
    out[2] = (uint8_t)(v >> 40);
    out[3] = (uint8_t)(v >> 32);
    out[4] = (uint8_t)(v >> 24);
    out[5] = (uint8_t)(v >> 16);
    out[6] = (uint8_t)(v >> 8);
    out[7] = (uint8_t)v;
}

/*
 * Entry @i (below r->n) of a RAM payload whose entries have been parsed:
 * its byte offset in the block in *@offset; true for a ZERO entry.
 */
inline bool mig2_data_ram_entry_get(const Mig2DataRam *r, uint32_t i,
                                    uint64_t *offset)
{
    const uint8_t *p = r->entries + (size_t)i * MIG2_DATA_RAM_ENTRY_LEN;
    uint64_t v = (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 |
                 (uint64_t)p[2] << 40 | (uint64_t)p[3] << 32 |
                 (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 |
                 (uint64_t)p[6] << 8 | p[7];

    *offset = v & ~(uint64_t)MIG2_RAM_ZERO;
    return (v & MIG2_RAM_ZERO) != 0;
}

/*
 * Append a whole RAM payload for @n pages of block @block.  Records
 * MIG2_ERR_INVALID_ARG in @w for n == 0, a bad page size or an offset
 * that is not a multiple of it, and MIG2_ERR_TOO_LARGE when the payload
 * would exceed MIG2_FRAME_MAX.
 */
void mig2_data_ram_encode(Mig2Writer *w, uint32_t block, uint32_t page_size,
                          const Mig2DataPage *pages, uint32_t n);

/*
 * Parse a RAM payload against the sender's RAM block list @blocks
 * (@n_blocks entries, in RAM_BLOCK order).  ZERO entries are refused
 * unless @zero_allowed (feature zero-page in use).  Returns MIG2_OK or:
 *   MIG2_ERR_TRUNCATED  the head or the entries do not fit, or the data
 *                       is shorter than the entries say
 *   MIG2_ERR_TRAILING   more data than the entries say
 *   MIG2_ERR_BAD_VALUE  n == 0, a block index outside @blocks, an offset
 *                       not a multiple of the page size, a page past the
 *                       end of the block (offset + page size > block
 *                       size), ZERO without @zero_allowed
 * On failure *@r is unspecified, except that after MIG2_ERR_BAD_VALUE
 * r->entries is NULL when the head was at fault, else the entries and
 * r->bad_entry the first bad one.
 */
int mig2_data_ram_parse(const uint8_t *p, size_t len,
                        const Mig2DataRamBlock *blocks, size_t n_blocks,
                        bool zero_allowed, Mig2DataRam *r);

/*
 * The same checks for a receiver that reads a RAM payload of
 * @payload_len bytes (its frame header's length) piece by piece, so that
 * page data can go straight into guest memory:
 *
 * 1. mig2_data_ram_head_parse() on the first 8 bytes, at @head: block
 *    and n, checked against @blocks and bounded by @payload_len, so that
 *    the 8 * n bytes of entries that follow are known to lie inside the
 *    payload before the caller makes room for them.  MIG2_OK,
 *    MIG2_ERR_TRUNCATED (@payload_len below 8 + 8 * n) or
 *    MIG2_ERR_BAD_VALUE (n == 0, no such block, a block whose page size
 *    is no page size).
 * 2. mig2_data_ram_entries_parse() on the 8 * r->n bytes at @entries:
 *    every offset and ZERO flag as above, and @payload_len exactly what
 *    the entries call for.  Sets r->entries (= @entries) and r->n_zero;
 *    r->data stays NULL.  MIG2_OK, MIG2_ERR_BAD_VALUE (r->bad_entry
 *    names the entry), MIG2_ERR_TRUNCATED or MIG2_ERR_TRAILING (the
 *    payload has room for less or more page data than the entries say).
 * 3. The (r->n - r->n_zero) x r->page_size bytes of data, in entry
 *    order, read wherever the caller wants them.
 */
int mig2_data_ram_head_parse(const uint8_t head[MIG2_DATA_RAM_HEAD_LEN],
                             size_t payload_len,
                             const Mig2DataRamBlock *blocks, size_t n_blocks,
                             Mig2DataRam *r);
int mig2_data_ram_entries_parse(Mig2DataRam *r, const uint8_t *entries,
                                size_t payload_len, bool zero_allowed);

/* Walks the entries of a parsed RAM payload in order. */
typedef struct Mig2DataRamIter {
    const Mig2DataRam *r;
    uint32_t i;
    const uint8_t *data;
} Mig2DataRamIter;

void mig2_data_ram_iter_init(Mig2DataRamIter *it, const Mig2DataRam *r);
/*
 * The next entry: its byte offset in the block and its data (page_size
 * bytes, or NULL for a zero page).  False after the last one.
 */
bool mig2_data_ram_iter_next(Mig2DataRamIter *it, uint64_t *offset,
                             const uint8_t **data);

/* ---- SYNC (0x0102), SYNC_ACK (0x0182), CHANNEL_SYNC (0x0202) ---- */

void mig2_data_sync_encode(Mig2Writer *w, uint32_t round, uint64_t pages);
/* MIG2_OK, MIG2_ERR_TRUNCATED or MIG2_ERR_TRAILING. */
int mig2_data_sync_parse(const uint8_t *p, size_t len, uint32_t *round,
                         uint64_t *pages);

/* SYNC_ACK and CHANNEL_SYNC carry only a round number. */
void mig2_data_round_encode(Mig2Writer *w, uint32_t round);
/* MIG2_OK, MIG2_ERR_TRUNCATED or MIG2_ERR_TRAILING. */
int mig2_data_round_parse(const uint8_t *p, size_t len, uint32_t *round);

/* ---- SWITCHOVER (0x0103), DONE (0x0181): empty ---- */

/* MIG2_OK for an empty payload, else MIG2_ERR_TRAILING. */
int mig2_data_empty_parse(const uint8_t *p, size_t len);

/* ---- END (0x0105) ---- */

void mig2_data_end_encode(Mig2Writer *w, uint64_t pages, uint32_t devices);
/* MIG2_OK, MIG2_ERR_TRUNCATED or MIG2_ERR_TRAILING. */
int mig2_data_end_parse(const uint8_t *p, size_t len, uint64_t *pages,
                        uint32_t *devices);

/* ---- DEVICE (0x0104) ---- */

/*
 * The fixed head of a DEVICE payload; @body is what follows it: the
 * device's fields (layout defined by the device), then the subsection
 * records (the "tail").  Only the device knows where its fields end.
 */
typedef struct Mig2DataDevice {
    const char *id;             /* NOT NUL-terminated */
    size_t id_len;
    uint32_t instance;
    uint32_t version;
    const uint8_t *body;
    size_t body_len;
} Mig2DataDevice;

/* One subsection record of the tail. */
typedef struct Mig2DataSubsection {
    const char *name;           /* NOT NUL-terminated when parsed */
    size_t name_len;
    const uint8_t *data;
    uint32_t len;
} Mig2DataSubsection;

/*
 * Append the head: str8 @id, be32 @instance, be32 @version.  The caller
 * appends the fields, then the tail with mig2_data_device_tail_encode().
 */
void mig2_data_device_head_encode(Mig2Writer *w, const char *id,
                                  uint32_t instance, uint32_t version);
/*
 * Append the tail: u8 count, then per subsection str8 name, be32 length
 * and the bytes.  @subs[i].name is NUL-terminated here (name_len is
 * ignored).  Records MIG2_ERR_LIMIT in @w for more than
 * MIG2_DATA_MAX_SUBSECTIONS, a string error for a bad name.
 */
void mig2_data_device_tail_encode(Mig2Writer *w,
                                  const Mig2DataSubsection *subs, size_t n);

/*
 * The tail piece by piece, for a saver that writes each subsection's
 * bytes straight into @w: mig2_data_device_tail_begin() with the number
 * of records, then per record mig2_data_subsection_begin() (str8 @name
 * and a length that mig2_data_subsection_end() fills in), the bytes, and
 * mig2_data_subsection_end() with the mark begin returned.  Records
 * MIG2_ERR_LIMIT in @w for @count over MIG2_DATA_MAX_SUBSECTIONS, a
 * string error for a bad name, MIG2_ERR_TOO_LARGE for a record over
 * 2^32 - 1 bytes.
 */
void mig2_data_device_tail_begin(Mig2Writer *w, size_t count);
size_t mig2_data_subsection_begin(Mig2Writer *w, const char *name);
void mig2_data_subsection_end(Mig2Writer *w, size_t mark);

/*
 * Parse the head.  MIG2_OK, MIG2_ERR_TRUNCATED or MIG2_ERR_BAD_STRING
 * (empty id or not UTF-8).
 */
int mig2_data_device_parse(const uint8_t *p, size_t len, Mig2DataDevice *d);

/*
 * Parse the tail of @d, which starts @fields_len bytes into the body,
 * into @subs (room for @max records); the count goes to *@n.  Returns
 * MIG2_OK, MIG2_ERR_TRUNCATED (fields_len past the body, or a record
 * that does not fit), MIG2_ERR_TRAILING (bytes after the last record),
 * MIG2_ERR_BAD_STRING (a bad name), MIG2_ERR_DUPLICATE (a name twice)
 * or MIG2_ERR_LIMIT (more records than @max).
 */
int mig2_data_device_tail_parse(const Mig2DataDevice *d, size_t fields_len,
                                Mig2DataSubsection *subs, size_t max,
                                size_t *n);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_DATA_H */
