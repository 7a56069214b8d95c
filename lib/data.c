/*
 * libmig2 - data-phase frame payloads
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "internal.h"

/* Registered frame types (docs/protocol.md section 4.2). */
static const struct {
    uint16_t type;
    const char *name;
} frame_names[] = {
    { MIG2_FRAME_SRC_HELLO, "SRC_HELLO" },
    { MIG2_FRAME_DST_HELLO, "DST_HELLO" },
    { MIG2_FRAME_FINISHED, "FINISHED" },
    { MIG2_FRAME_READY, "READY" },
    { MIG2_FRAME_MANIFEST, "MANIFEST" },
    { MIG2_FRAME_ERROR, "ERROR" },
    { MIG2_FRAME_RAM, "RAM" },
    { MIG2_FRAME_SYNC, "SYNC" },
    { MIG2_FRAME_SWITCHOVER, "SWITCHOVER" },
    { MIG2_FRAME_DEVICE, "DEVICE" },
    { MIG2_FRAME_END, "END" },
    { MIG2_FRAME_DIGEST, "DIGEST" },
    { MIG2_FRAME_DONE, "DONE" },
    { MIG2_FRAME_SYNC_ACK, "SYNC_ACK" },
    { MIG2_FRAME_CHANNEL_ACCEPT, "CHANNEL_ACCEPT" },
    { MIG2_FRAME_CHANNEL_SYNC, "CHANNEL_SYNC" },
};

const char *mig2_frame_name(uint16_t type)
{
    size_t i;

    for (i = 0; i < sizeof(frame_names) / sizeof(frame_names[0]); i++) {
        if (frame_names[i].type == type) {
            return frame_names[i].name;
        }
    }
    return NULL;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The external definitions of the inline helpers of mig2/data.h. */
extern inline void mig2_data_ram_entry_put(
    uint8_t out[MIG2_DATA_RAM_ENTRY_LEN], uint64_t offset, bool zero);
extern inline bool mig2_data_ram_entry_get(const Mig2DataRam *r, uint32_t i,
                                           uint64_t *offset);

static bool page_size_ok(uint32_t v)
{
    return v >= 512 && v <= (1U << 30) && (v & (v - 1)) == 0;
}

/* ---- RAM ---- */

int mig2_data_ram_length(uint32_t n, uint32_t n_data, uint32_t page_size,
                         size_t *len)
{
    uint64_t total;

    if (n == 0 || n_data > n || !page_size_ok(page_size)) {
        return MIG2_ERR_INVALID_ARG;
    }
    /* Both terms fit in 64 bits: n, n_data < 2^32 and page_size <= 2^30. */
    total = MIG2_DATA_RAM_HEAD_LEN + (uint64_t)n * MIG2_DATA_RAM_ENTRY_LEN +
            (uint64_t)n_data * page_size;
    if (total > MIG2_FRAME_MAX) {
        return MIG2_ERR_TOO_LARGE;
    }
    *len = (size_t)total;
    return MIG2_OK;
}

void mig2_data_ram_head_put(uint8_t out[MIG2_DATA_RAM_HEAD_LEN],
                            uint32_t block, uint32_t n)
{
    put_be32(out, block);
    put_be32(out + 4, n);
}

void mig2_data_ram_encode(Mig2Writer *w, uint32_t block, uint32_t page_size,
                          const Mig2DataPage *pages, uint32_t n)
{
    uint32_t i, n_data = 0;
    size_t len;
    int rc;

    if (w->err) {
        return;
    }
    for (i = 0; i < n; i++) {
        if (pages[i].offset & ((uint64_t)page_size - 1)) {
            w->err = MIG2_ERR_INVALID_ARG;
            return;
        }
        n_data += pages[i].data != NULL;
    }
    rc = mig2_data_ram_length(n, n_data, page_size, &len);
    if (rc) {
        w->err = rc;
        return;
    }
    mig2_wr_u32(w, block);
    mig2_wr_u32(w, n);
    for (i = 0; i < n; i++) {
        mig2_wr_u64(w, pages[i].offset |
                           (pages[i].data ? 0 : (uint64_t)MIG2_RAM_ZERO));
    }
    for (i = 0; i < n; i++) {
        if (pages[i].data) {
            mig2_wr_bytes(w, pages[i].data, page_size);
        }
    }
}

int mig2_data_ram_head_parse(const uint8_t head[MIG2_DATA_RAM_HEAD_LEN],
                             size_t payload_len,
                             const Mig2DataRamBlock *blocks, size_t n_blocks,
                             Mig2DataRam *r)
{
    Mig2Reader rd;
    int rc;

    r->entries = NULL;
    r->data = NULL;
    r->bad_entry = 0;
    mig2_rd_init(&rd, head, payload_len < MIG2_DATA_RAM_HEAD_LEN
                                ? payload_len : MIG2_DATA_RAM_HEAD_LEN);
    if ((rc = mig2_rd_u32(&rd, &r->block)) || (rc = mig2_rd_u32(&rd, &r->n))) {
        return rc;
    }
    if (r->n == 0 || r->block >= n_blocks ||
        !page_size_ok(blocks[r->block].page_size)) {
        return MIG2_ERR_BAD_VALUE;
    }
    /* Bound n by the payload before anyone trusts it as a count. */
    if (r->n > (payload_len - MIG2_DATA_RAM_HEAD_LEN) /
                   MIG2_DATA_RAM_ENTRY_LEN) {
        return MIG2_ERR_TRUNCATED;
    }
    r->page_size = blocks[r->block].page_size;
    r->block_size = blocks[r->block].size;
    r->n_zero = 0;
    return MIG2_OK;
}

int mig2_data_ram_entries_parse(Mig2DataRam *r, const uint8_t *entries,
                                size_t payload_len, bool zero_allowed)
{
    uint64_t want, left;
    uint32_t i;

    r->entries = entries;
    r->n_zero = 0;
    for (i = 0; i < r->n; i++) {
        uint64_t off;
        bool zero = mig2_data_ram_entry_get(r, i, &off);

        /* Aligned, and the whole page inside the block (spec 13.2). */
        if ((off & ((uint64_t)r->page_size - 1)) || off > r->block_size ||
            r->block_size - off < r->page_size || (zero && !zero_allowed)) {
            r->bad_entry = i;
            return MIG2_ERR_BAD_VALUE;
        }
        r->n_zero += zero;
    }
    /* head_parse made sure the head and the entries fit. */
    left = payload_len - MIG2_DATA_RAM_HEAD_LEN -
           (uint64_t)r->n * MIG2_DATA_RAM_ENTRY_LEN;
    want = (uint64_t)(r->n - r->n_zero) * r->page_size;
    if (left < want) {
        return MIG2_ERR_TRUNCATED;
    }
    return left > want ? MIG2_ERR_TRAILING : MIG2_OK;
}

int mig2_data_ram_parse(const uint8_t *p, size_t len,
                        const Mig2DataRamBlock *blocks, size_t n_blocks,
                        bool zero_allowed, Mig2DataRam *r)
{
    int rc = mig2_data_ram_head_parse(p, len, blocks, n_blocks, r);

    if (rc == MIG2_OK) {
        rc = mig2_data_ram_entries_parse(r, p + MIG2_DATA_RAM_HEAD_LEN, len,
                                         zero_allowed);
    }
    if (rc == MIG2_OK) {
        r->data = r->entries + (size_t)r->n * MIG2_DATA_RAM_ENTRY_LEN;
    }
    return rc;
}

void mig2_data_ram_iter_init(Mig2DataRamIter *it, const Mig2DataRam *r)
{
    it->r = r;
    it->i = 0;
    it->data = r->data;
}

bool mig2_data_ram_iter_next(Mig2DataRamIter *it, uint64_t *offset,
                             const uint8_t **data)
{
    if (it->i >= it->r->n) {
        return false;
    }
    if (mig2_data_ram_entry_get(it->r, it->i++, offset)) {
        *data = NULL;
    } else {
        *data = it->data;
        it->data += it->r->page_size;
    }
    return true;
}

/* ---- fixed-size payloads ---- */

void mig2_data_sync_encode(Mig2Writer *w, uint32_t round, uint64_t pages)
{
    mig2_wr_u32(w, round);
    mig2_wr_u64(w, pages);
}

int mig2_data_sync_parse(const uint8_t *p, size_t len, uint32_t *round,
                         uint64_t *pages)
{
    Mig2Reader rd;
    int rc;

    mig2_rd_init(&rd, p, len);
    if ((rc = mig2_rd_u32(&rd, round)) || (rc = mig2_rd_u64(&rd, pages))) {
        return rc;
    }
    return mig2_rd_end(&rd);
}

void mig2_data_round_encode(Mig2Writer *w, uint32_t round)
{
    mig2_wr_u32(w, round);
}

int mig2_data_round_parse(const uint8_t *p, size_t len, uint32_t *round)
{
    Mig2Reader rd;
    int rc;

    mig2_rd_init(&rd, p, len);
    if ((rc = mig2_rd_u32(&rd, round))) {
        return rc;
    }
    return mig2_rd_end(&rd);
}

int mig2_data_empty_parse(const uint8_t *p, size_t len)
{
    (void)p;
    return len ? MIG2_ERR_TRAILING : MIG2_OK;
}

void mig2_data_end_encode(Mig2Writer *w, uint64_t pages, uint32_t devices)
{
    mig2_wr_u64(w, pages);
    mig2_wr_u32(w, devices);
}

int mig2_data_end_parse(const uint8_t *p, size_t len, uint64_t *pages,
                        uint32_t *devices)
{
    Mig2Reader rd;
    int rc;

    mig2_rd_init(&rd, p, len);
    if ((rc = mig2_rd_u64(&rd, pages)) || (rc = mig2_rd_u32(&rd, devices))) {
        return rc;
    }
    return mig2_rd_end(&rd);
}

/* ---- DEVICE ---- */

void mig2_data_device_head_encode(Mig2Writer *w, const char *id,
                                  uint32_t instance, uint32_t version)
{
    mig2_wr_str8(w, id);
    mig2_wr_u32(w, instance);
    mig2_wr_u32(w, version);
}

void mig2_data_device_tail_begin(Mig2Writer *w, size_t count)
{
    if (!w->err && count > MIG2_DATA_MAX_SUBSECTIONS) {
        w->err = MIG2_ERR_LIMIT;
    }
    mig2_wr_u8(w, (uint8_t)count);
}

size_t mig2_data_subsection_begin(Mig2Writer *w, const char *name)
{
    size_t mark;

    mig2_wr_str8(w, name);
    mark = w->len;
    mig2_wr_u32(w, 0);
    return mark;
}

void mig2_data_subsection_end(Mig2Writer *w, size_t mark)
{
    size_t len;

    if (w->err) {
        return;
    }
    len = w->len - mark - 4;
    if (len > UINT32_MAX) {
        w->err = MIG2_ERR_TOO_LARGE;
        return;
    }
    put_be32(w->buf + mark, (uint32_t)len);
}

void mig2_data_device_tail_encode(Mig2Writer *w,
                                  const Mig2DataSubsection *subs, size_t n)
{
    size_t i;

    mig2_data_device_tail_begin(w, n);
    for (i = 0; i < n && !w->err; i++) {
        size_t mark = mig2_data_subsection_begin(w, subs[i].name);

        mig2_wr_bytes(w, subs[i].data, subs[i].len);
        mig2_data_subsection_end(w, mark);
    }
}

int mig2_data_device_parse(const uint8_t *p, size_t len, Mig2DataDevice *d)
{
    Mig2Reader rd;
    int rc;

    mig2_rd_init(&rd, p, len);
    if ((rc = mig2_rd_str8(&rd, &d->id, &d->id_len)) ||
        (rc = mig2_rd_u32(&rd, &d->instance)) ||
        (rc = mig2_rd_u32(&rd, &d->version))) {
        return rc;
    }
    d->body = rd.p;
    d->body_len = mig2_rd_left(&rd);
    return MIG2_OK;
}

int mig2_data_device_tail_parse(const Mig2DataDevice *d, size_t fields_len,
                                Mig2DataSubsection *subs, size_t max,
                                size_t *n)
{
    Mig2Reader rd;
    uint8_t count;
    size_t i, j;
    int rc;

    *n = 0;
    mig2_rd_init(&rd, d->body, d->body_len);
    if ((rc = mig2_rd_skip(&rd, fields_len)) ||
        (rc = mig2_rd_u8(&rd, &count))) {
        return rc;
    }
    if (count > max) {
        return MIG2_ERR_LIMIT;
    }
    for (i = 0; i < count; i++) {
        Mig2DataSubsection *s = &subs[i];
        Mig2Reader data;

        if ((rc = mig2_rd_str8(&rd, &s->name, &s->name_len)) ||
            (rc = mig2_rd_u32(&rd, &s->len)) ||
            (rc = mig2_rd_sub(&rd, s->len, &data))) {
            return rc;
        }
        s->data = data.p;
        for (j = 0; j < i; j++) {
            if (subs[j].name_len == s->name_len &&
                memcmp(subs[j].name, s->name, s->name_len) == 0) {
                return MIG2_ERR_DUPLICATE;
            }
        }
    }
    if ((rc = mig2_rd_end(&rd))) {
        return rc;
    }
    *n = count;
    return MIG2_OK;
}
