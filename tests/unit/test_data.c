/*
 * Unit tests for the data-phase payload codec (lib/data.c): exact bytes
 * as mig2-vm sends them today, round trips, and malformed input.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"

/* @w holds exactly @len bytes equal to @exp and no error. */
static void assert_writer_bytes(const Mig2Writer *w, const void *exp,
                                size_t len)
{
    assert_int_equal(mig2_wr_error(w), MIG2_OK);
    assert_int_equal(w->len, len);
    assert_memory_equal(w->buf, exp, len);
}

/* A heap copy of @len bytes, so ASan sees reads past the end. */
static uint8_t *dup_bytes(const void *p, size_t len)
{
    uint8_t *d = malloc(len ? len : 1);

    assert_non_null(d);
    if (len) {
        memcpy(d, p, len);
    }
    return d;
}

/* ---------------------------------------------------------------- */
/* Frame names                                                       */
/* ---------------------------------------------------------------- */

static void test_frame_names(void **state)
{
    (void)state;
    assert_string_equal(mig2_frame_name(MIG2_FRAME_SRC_HELLO), "SRC_HELLO");
    assert_string_equal(mig2_frame_name(MIG2_FRAME_ERROR), "ERROR");
    assert_string_equal(mig2_frame_name(0x0101), "RAM");
    assert_string_equal(mig2_frame_name(0x0102), "SYNC");
    assert_string_equal(mig2_frame_name(0x0103), "SWITCHOVER");
    assert_string_equal(mig2_frame_name(0x0104), "DEVICE");
    assert_string_equal(mig2_frame_name(0x0105), "END");
    assert_string_equal(mig2_frame_name(0x0181), "DONE");
    assert_string_equal(mig2_frame_name(0x0182), "SYNC_ACK");
    assert_string_equal(mig2_frame_name(0x0201), "CHANNEL_ACCEPT");
    assert_string_equal(mig2_frame_name(0x0202), "CHANNEL_SYNC");
    assert_string_equal(mig2_frame_name(0x0005), "MANIFEST");
    assert_string_equal(mig2_frame_name(0x0106), "DIGEST");
    assert_null(mig2_frame_name(0x0000));
    assert_null(mig2_frame_name(0x0107));
    assert_null(mig2_frame_name(0x0183));
    assert_null(mig2_frame_name(0x0a0a));     /* grease */
    assert_null(mig2_frame_name(0x7afa));
}

/* ---------------------------------------------------------------- */
/* RAM                                                               */
/* ---------------------------------------------------------------- */

/* Block 1 of two, 512-byte pages, so the example stays small. */
static const Mig2DataRamBlock two_blocks[] = {
    { .size = 1 << 20, .page_size = 4096 },
    { .size = 4 * 512, .page_size = 512 },
};

/*
 * Pages 3 (data 0xaa..), 0 (zero) and 1 (data 0x11..) of block 1: the
 * head, three entries, then the two pages of data in entry order.
 */
static void ram_example(uint8_t **out, size_t *len)
{
    static const uint8_t head[] = {
        0x00, 0x00, 0x00, 0x01,                             /* block 1 */
        0x00, 0x00, 0x00, 0x03,                             /* n = 3 */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00,     /* 0x600 */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,     /* 0 | ZERO */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,     /* 0x200 */
    };
    uint8_t *b = malloc(sizeof(head) + 1024);

    assert_non_null(b);
    memcpy(b, head, sizeof(head));
    memset(b + sizeof(head), 0xaa, 512);
    memset(b + sizeof(head) + 512, 0x11, 512);
    *out = b;
    *len = sizeof(head) + 1024;
}

static void test_ram_encode_exact(void **state)
{
    uint8_t pa[512], pb[512], *exp;
    Mig2DataPage pages[3] = {
        { .offset = 0x600, .data = pa },
        { .offset = 0 },
        { .offset = 0x200, .data = pb },
    };
    Mig2Writer w;
    size_t len, plen;

    (void)state;
    memset(pa, 0xaa, sizeof(pa));
    memset(pb, 0x11, sizeof(pb));
    ram_example(&exp, &len);
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_data_ram_encode(&w, 1, 512, pages, 3);
    assert_writer_bytes(&w, exp, len);
    assert_int_equal(mig2_data_ram_length(3, 2, 512, &plen), MIG2_OK);
    assert_int_equal(plen, len);
    mig2_wr_free(&w);
    free(exp);
}

/* The gather helpers produce the same bytes as the writer. */
static void test_ram_head_entry_put(void **state)
{
    uint8_t *exp, got[8 + 3 * 8];
    size_t len;

    (void)state;
    ram_example(&exp, &len);
    mig2_data_ram_head_put(got, 1, 3);
    mig2_data_ram_entry_put(got + 8, 0x600, false);
    mig2_data_ram_entry_put(got + 16, 0, true);
    mig2_data_ram_entry_put(got + 24, 0x200, false);
    assert_memory_equal(got, exp, sizeof(got));
    free(exp);
}

/* The inline entry helpers agree with each other on every flag. */
static void test_ram_entry_get_put(void **state)
{
    static const uint64_t offsets[] = {
        0, 0x1000, 0x123456789ab000ULL, 0xfffffffffffff000ULL,
    };
    uint8_t buf[8];
    Mig2DataRam r = { .entries = buf, .n = 1 };
    uint64_t off;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        mig2_data_ram_entry_put(buf, offsets[i], false);
        assert_false(mig2_data_ram_entry_get(&r, 0, &off));
        assert_int_equal(off, offsets[i]);
        mig2_data_ram_entry_put(buf, offsets[i], true);
        assert_true(mig2_data_ram_entry_get(&r, 0, &off));
        assert_int_equal(off, offsets[i]);
        assert_int_equal(buf[7] & 1, 1);
    }
}

/* As mig2-vm's mig_send_pages() frames them: block 0, 4 KiB pages. */
static void test_ram_vm_layout(void **state)
{
    static const uint8_t exp_head[] = {
        0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0x10, 0x18,     /* frame */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01,
    };
    uint8_t page[4096];
    Mig2DataPage pages[2] = {
        { .offset = 0x1000, .data = page },
        { .offset = 0x2000 },
    };
    Mig2Writer w;
    size_t mark;

    (void)state;
    memset(page, 0x5a, sizeof(page));
    mig2_wr_init(&w, 2 * MIG2_FRAME_MAX);
    mark = mig2_wr_frame_begin(&w, MIG2_FRAME_RAM, MIG2_FRAME_FLAG_CRITICAL);
    mig2_data_ram_encode(&w, 0, 4096, pages, 2);
    mig2_wr_frame_end(&w, mark);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, sizeof(exp_head) + 4096);
    assert_memory_equal(w.buf, exp_head, sizeof(exp_head));
    assert_memory_equal(w.buf + sizeof(exp_head), page, 4096);
    mig2_wr_free(&w);
}

static void test_ram_parse_iterate(void **state)
{
    uint8_t *p;
    size_t len;
    Mig2DataRam r;
    Mig2DataRamIter it;
    uint64_t off;
    const uint8_t *data;

    (void)state;
    ram_example(&p, &len);
    assert_int_equal(mig2_data_ram_parse(p, len, two_blocks, 2, true, &r),
                     MIG2_OK);
    assert_int_equal(r.block, 1);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.n_zero, 1);
    assert_int_equal(r.page_size, 512);
    mig2_data_ram_iter_init(&it, &r);
    assert_true(mig2_data_ram_iter_next(&it, &off, &data));
    assert_int_equal(off, 0x600);
    assert_non_null(data);
    assert_int_equal(data[0], 0xaa);
    assert_int_equal(data[511], 0xaa);
    assert_true(mig2_data_ram_iter_next(&it, &off, &data));
    assert_int_equal(off, 0);
    assert_null(data);
    assert_true(mig2_data_ram_iter_next(&it, &off, &data));
    assert_int_equal(off, 0x200);
    assert_int_equal(data[0], 0x11);
    assert_ptr_equal(data + 512, p + len);
    assert_false(mig2_data_ram_iter_next(&it, &off, &data));
    free(p);
}

/* Every proper prefix of a valid payload fails; nothing reads past it. */
static void test_ram_truncated_everywhere(void **state)
{
    uint8_t *p, *cut;
    size_t len, i;
    Mig2DataRam r;

    (void)state;
    ram_example(&p, &len);
    for (i = 0; i < len; i++) {
        cut = dup_bytes(p, i);
        assert_int_equal(mig2_data_ram_parse(cut, i, two_blocks, 2, true, &r),
                         MIG2_ERR_TRUNCATED);
        free(cut);
    }
    free(p);
}

static void test_ram_malformed(void **state)
{
    uint8_t *p, *q;
    size_t len;
    Mig2DataRam r;

    (void)state;
    ram_example(&p, &len);

    /* One byte too many. */
    q = malloc(len + 1);
    assert_non_null(q);
    memcpy(q, p, len);
    q[len] = 0;
    assert_int_equal(mig2_data_ram_parse(q, len + 1, two_blocks, 2, true, &r),
                     MIG2_ERR_TRAILING);
    free(q);

    /* ZERO without the zero-page feature. */
    assert_int_equal(mig2_data_ram_parse(p, len, two_blocks, 2, false, &r),
                     MIG2_ERR_BAD_VALUE);

    /* A block index past the list, and an empty list. */
    assert_int_equal(mig2_data_ram_parse(p, len, two_blocks, 1, true, &r),
                     MIG2_ERR_BAD_VALUE);
    assert_int_equal(mig2_data_ram_parse(p, len, NULL, 0, true, &r),
                     MIG2_ERR_BAD_VALUE);

    /* An offset that is not a multiple of the page size. */
    q = dup_bytes(p, len);
    q[15] = 0x08;                               /* 0x608 */
    assert_int_equal(mig2_data_ram_parse(q, len, two_blocks, 2, true, &r),
                     MIG2_ERR_BAD_VALUE);
    /* A page that starts at the end of the block (4 x 512). */
    q[14] = 0x08;
    q[15] = 0x00;                               /* 0x800 */
    assert_int_equal(mig2_data_ram_parse(q, len, two_blocks, 2, true, &r),
                     MIG2_ERR_BAD_VALUE);
    /* Far past it: the addition must not wrap. */
    memset(q + 8, 0xff, 6);
    q[14] = 0xfe;
    q[15] = 0x00;                               /* 2^64 - 512 */
    assert_int_equal(mig2_data_ram_parse(q, len, two_blocks, 2, true, &r),
                     MIG2_ERR_BAD_VALUE);
    free(q);

    /* n = 0. */
    q = dup_bytes(p, len);
    memset(q + 4, 0, 4);
    assert_int_equal(mig2_data_ram_parse(q, len, two_blocks, 2, true, &r),
                     MIG2_ERR_BAD_VALUE);
    /* n huge against a short payload: no read past the end. */
    memset(q + 4, 0xff, 4);
    assert_int_equal(mig2_data_ram_parse(q, len, two_blocks, 2, true, &r),
                     MIG2_ERR_TRUNCATED);
    /* n = 2: the third entry and its page are left over. */
    q[4] = q[5] = q[6] = 0;
    q[7] = 2;
    assert_int_equal(mig2_data_ram_parse(q, len, two_blocks, 2, true, &r),
                     MIG2_ERR_TRAILING);
    free(q);

    /* A block page size that is no page size. */
    {
        const Mig2DataRamBlock bad[] = {
            { .size = 4096, .page_size = 4096 },
            { .size = 4096, .page_size = 0 },
        };

        assert_int_equal(mig2_data_ram_parse(p, len, bad, 2, true, &r),
                         MIG2_ERR_BAD_VALUE);
    }
    free(p);
}

/* A page straddling the end of a block whose size is no page multiple. */
static void test_ram_page_straddles_end(void **state)
{
    static const Mig2DataRamBlock odd[] = {
        { .size = 4096 + 100, .page_size = 4096 },
    };
    Mig2Writer w;
    Mig2DataPage pg = { .offset = 4096 };
    Mig2DataRam r;

    (void)state;
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_data_ram_encode(&w, 0, 4096, &pg, 1);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(mig2_data_ram_parse(w.buf, w.len, odd, 1, true, &r),
                     MIG2_ERR_BAD_VALUE);
    pg.offset = 0;
    mig2_wr_free(&w);
    mig2_data_ram_encode(&w, 0, 4096, &pg, 1);
    assert_int_equal(mig2_data_ram_parse(w.buf, w.len, odd, 1, true, &r),
                     MIG2_OK);
    mig2_wr_free(&w);
}

static void test_ram_length_bounds(void **state)
{
    size_t len = 0;
    Mig2Writer w;
    uint8_t page[4096] = { 0 };
    Mig2DataPage pg = { .offset = 0x800, .data = page };

    (void)state;
    assert_int_equal(mig2_data_ram_length(0, 0, 4096, &len),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_data_ram_length(1, 2, 4096, &len),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_data_ram_length(1, 1, 4095, &len),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_data_ram_length(1, 1, 256, &len),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_data_ram_length(1, 1, 1U << 31, &len),
                     MIG2_ERR_INVALID_ARG);
    /* 4088 pages of 4 KiB fit in 16 MiB with their entries; 4089 not. */
    assert_int_equal(mig2_data_ram_length(4088, 4088, 4096, &len), MIG2_OK);
    assert_int_equal(len, 8 + 4088 * 8 + 4088 * 4096);
    assert_int_equal(mig2_data_ram_length(4089, 4089, 4096, &len),
                     MIG2_ERR_TOO_LARGE);
    assert_int_equal(mig2_data_ram_length(UINT32_MAX, UINT32_MAX, 1U << 30,
                                          &len),
                     MIG2_ERR_TOO_LARGE);
    /* Zero pages are cheap: 2 million of them fit. */
    assert_int_equal(mig2_data_ram_length(2000000, 0, 4096, &len), MIG2_OK);

    /* The encoder refuses a misaligned offset and no pages at all. */
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_data_ram_encode(&w, 0, 4096, &pg, 1);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_INVALID_ARG);
    mig2_wr_free(&w);
    mig2_data_ram_encode(&w, 0, 4096, NULL, 0);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_INVALID_ARG);
    mig2_wr_free(&w);
}

/*
 * A receiver reading a payload piece by piece: the head with only the
 * frame's length to go on, then the entries, then the data.
 */
static void test_ram_streaming(void **state)
{
    uint8_t *p;
    size_t len;
    Mig2DataRam r, whole;
    uint64_t off;

    (void)state;
    ram_example(&p, &len);
    assert_int_equal(mig2_data_ram_head_parse(p, len, two_blocks, 2, &r),
                     MIG2_OK);
    assert_int_equal(r.block, 1);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.page_size, 512);
    assert_int_equal(r.block_size, 4 * 512);
    assert_null(r.entries);
    assert_int_equal(mig2_data_ram_entries_parse(&r, p + 8, len, true),
                     MIG2_OK);
    assert_ptr_equal(r.entries, p + 8);
    assert_null(r.data);
    assert_int_equal(r.n_zero, 1);
    assert_false(mig2_data_ram_entry_get(&r, 0, &off));
    assert_int_equal(off, 0x600);
    assert_true(mig2_data_ram_entry_get(&r, 1, &off));
    assert_int_equal(off, 0);
    assert_false(mig2_data_ram_entry_get(&r, 2, &off));
    assert_int_equal(off, 0x200);
    assert_int_equal(mig2_data_ram_parse(p, len, two_blocks, 2, true, &whole),
                     MIG2_OK);
    assert_ptr_equal(whole.data, p + 8 + 3 * 8);

    /* The length the frame announces decides, before any entry is read. */
    assert_int_equal(mig2_data_ram_head_parse(p, 7, two_blocks, 2, &r),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_data_ram_head_parse(p, 8 + 3 * 8 - 1, two_blocks,
                                              2, &r),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_data_ram_head_parse(p, 8 + 3 * 8, two_blocks, 2,
                                              &r),
                     MIG2_OK);
    /* ... and the entries want exactly their data, no more, no less. */
    assert_int_equal(mig2_data_ram_entries_parse(&r, p + 8, 8 + 3 * 8, true),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_data_ram_head_parse(p, len + 1, two_blocks, 2, &r),
                     MIG2_OK);
    assert_int_equal(mig2_data_ram_entries_parse(&r, p + 8, len + 1, true),
                     MIG2_ERR_TRAILING);
    assert_int_equal(mig2_data_ram_head_parse(p, len, two_blocks, 2, &r),
                     MIG2_OK);
    assert_int_equal(mig2_data_ram_entries_parse(&r, p + 8, len, false),
                     MIG2_ERR_BAD_VALUE);
    assert_int_equal(r.bad_entry, 1);              /* the ZERO entry */
    free(p);
}

/*
 * The head alone bounds the count by the announced length: a frame of
 * MIG2_FRAME_MAX bytes holds at most (2^24 - 8) / 8 entries, and a
 * header lying about a 4 GiB payload is the caller's to refuse first.
 */
static void test_ram_head_bounds_count(void **state)
{
    static const Mig2DataRamBlock big[] = {
        { .size = 1ULL << 40, .page_size = 4096 },
    };
    uint8_t head[8];
    Mig2DataRam r;
    uint32_t most = (MIG2_FRAME_MAX - 8) / 8;

    (void)state;
    mig2_data_ram_head_put(head, 0, most);
    assert_int_equal(mig2_data_ram_head_parse(head, MIG2_FRAME_MAX, big, 1,
                                              &r),
                     MIG2_OK);
    assert_int_equal(r.n, most);
    mig2_data_ram_head_put(head, 0, most + 1);
    assert_int_equal(mig2_data_ram_head_parse(head, MIG2_FRAME_MAX, big, 1,
                                              &r),
                     MIG2_ERR_TRUNCATED);
    mig2_data_ram_head_put(head, 0, UINT32_MAX);
    assert_int_equal(mig2_data_ram_head_parse(head, MIG2_FRAME_MAX, big, 1,
                                              &r),
                     MIG2_ERR_TRUNCATED);
    mig2_data_ram_head_put(head, 1, 1);
    assert_int_equal(mig2_data_ram_head_parse(head, MIG2_FRAME_MAX, big, 1,
                                              &r),
                     MIG2_ERR_BAD_VALUE);
    mig2_data_ram_head_put(head, 0, 0);
    assert_int_equal(mig2_data_ram_head_parse(head, MIG2_FRAME_MAX, big, 1,
                                              &r),
                     MIG2_ERR_BAD_VALUE);
}

/* Random damage to a valid payload: any result, but no stray read. */
static void test_ram_mutations(void **state)
{
    uint8_t *p, *q;
    size_t len, i;
    Mig2DataRam r;
    unsigned seed = 12345;

    (void)state;
    ram_example(&p, &len);
    for (i = 0; i < 20000; i++) {
        size_t at, cut;

        seed = seed * 1103515245 + 12345;
        at = (seed >> 8) % 32;          /* the head and entries */
        seed = seed * 1103515245 + 12345;
        cut = len - (seed >> 8) % 64;
        q = dup_bytes(p, cut);
        q[at] ^= (uint8_t)(1 + (seed >> 20) % 255);
        /* Piece by piece, the verdict is the same. */
        {
            Mig2DataRam s;
            int rc = mig2_data_ram_head_parse(q, cut, two_blocks, 2, &s);

            if (rc == MIG2_OK) {
                rc = mig2_data_ram_entries_parse(&s, q + 8, cut, true);
            }
            assert_int_equal(rc, mig2_data_ram_parse(q, cut, two_blocks, 2,
                                                     true, &r));
        }
        if (mig2_data_ram_parse(q, cut, two_blocks, 2, true, &r) == MIG2_OK) {
            Mig2DataRamIter it;
            uint64_t off;
            const uint8_t *data;
            uint32_t n = 0;

            mig2_data_ram_iter_init(&it, &r);
            while (mig2_data_ram_iter_next(&it, &off, &data)) {
                assert_true(off + 512 <= two_blocks[r.block].size);
                if (data) {
                    assert_true(data + 512 <= q + cut);
                }
                n++;
            }
            assert_int_equal(n, r.n);
        }
        free(q);
    }
    free(p);
}

/* ---------------------------------------------------------------- */
/* SYNC, SYNC_ACK, CHANNEL_SYNC, END, empty frames                   */
/* ---------------------------------------------------------------- */

static void test_sync_exact(void **state)
{
    static const uint8_t exp[] = {
        0x00, 0x00, 0x00, 0x07,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02,
    };
    Mig2Writer w;
    uint32_t round;
    uint64_t pages;
    uint8_t *cut;
    size_t i;

    (void)state;
    mig2_wr_init(&w, 64);
    mig2_data_sync_encode(&w, 7, 0x100000002ULL);
    assert_writer_bytes(&w, exp, sizeof(exp));
    assert_int_equal(MIG2_DATA_SYNC_LEN, sizeof(exp));
    assert_int_equal(mig2_data_sync_parse(exp, sizeof(exp), &round, &pages),
                     MIG2_OK);
    assert_int_equal(round, 7);
    assert_int_equal(pages, 0x100000002ULL);
    for (i = 0; i < sizeof(exp); i++) {
        cut = dup_bytes(exp, i);
        assert_int_equal(mig2_data_sync_parse(cut, i, &round, &pages),
                         MIG2_ERR_TRUNCATED);
        free(cut);
    }
    mig2_wr_u8(&w, 0);
    assert_int_equal(mig2_data_sync_parse(w.buf, w.len, &round, &pages),
                     MIG2_ERR_TRAILING);
    mig2_wr_free(&w);
}

static void test_round_exact(void **state)
{
    static const uint8_t exp[] = { 0x12, 0x34, 0x56, 0x78 };
    Mig2Writer w;
    uint32_t round;

    (void)state;
    mig2_wr_init(&w, 64);
    mig2_data_round_encode(&w, 0x12345678);
    assert_writer_bytes(&w, exp, sizeof(exp));
    assert_int_equal(mig2_data_round_parse(exp, 4, &round), MIG2_OK);
    assert_int_equal(round, 0x12345678);
    assert_int_equal(mig2_data_round_parse(exp, 3, &round),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_data_round_parse(NULL, 0, &round),
                     MIG2_ERR_TRUNCATED);
    mig2_wr_u8(&w, 9);
    assert_int_equal(mig2_data_round_parse(w.buf, 5, &round),
                     MIG2_ERR_TRAILING);
    mig2_wr_free(&w);
}

/* END as mig2-vm's v2 source sends it: be64 pages, be32 devices. */
static void test_end_exact(void **state)
{
    static const uint8_t exp[] = {
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x05,
    };
    Mig2Writer w;
    uint64_t pages;
    uint32_t devices;

    (void)state;
    mig2_wr_init(&w, 64);
    mig2_data_end_encode(&w, 65536, 5);
    assert_writer_bytes(&w, exp, sizeof(exp));
    assert_int_equal(MIG2_DATA_END_LEN, sizeof(exp));
    assert_int_equal(mig2_data_end_parse(exp, sizeof(exp), &pages, &devices),
                     MIG2_OK);
    assert_int_equal(pages, 65536);
    assert_int_equal(devices, 5);
    assert_int_equal(mig2_data_end_parse(exp, 11, &pages, &devices),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_data_end_parse(exp, 8, &pages, &devices),
                     MIG2_ERR_TRUNCATED);
    mig2_wr_u32(&w, 0);
    assert_int_equal(mig2_data_end_parse(w.buf, w.len, &pages, &devices),
                     MIG2_ERR_TRAILING);
    mig2_wr_free(&w);
}

static void test_empty(void **state)
{
    static const uint8_t one[] = { 0 };

    (void)state;
    assert_int_equal(mig2_data_empty_parse(NULL, 0), MIG2_OK);
    assert_int_equal(mig2_data_empty_parse(one, 1), MIG2_ERR_TRAILING);
}

/* ---------------------------------------------------------------- */
/* DEVICE                                                            */
/* ---------------------------------------------------------------- */

/*
 * "timer" instance 0 version 2, fields 01 02 03 04, then two subsections:
 * "timer/a" with 2 bytes and "timer/b" with none.
 */
static const uint8_t device_example[] = {
    0x05, 't', 'i', 'm', 'e', 'r',
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02,
    0x01, 0x02, 0x03, 0x04,                         /* fields */
    0x02,                                           /* 2 subsections */
    0x07, 't', 'i', 'm', 'e', 'r', '/', 'a',
    0x00, 0x00, 0x00, 0x02, 0xbe, 0xef,
    0x07, 't', 'i', 'm', 'e', 'r', '/', 'b',
    0x00, 0x00, 0x00, 0x00,
};

static void test_device_encode_exact(void **state)
{
    static const uint8_t fields[] = { 1, 2, 3, 4 };
    static const uint8_t a[] = { 0xbe, 0xef };
    const Mig2DataSubsection subs[] = {
        { .name = "timer/a", .data = a, .len = 2 },
        { .name = "timer/b", .len = 0 },
    };
    Mig2Writer w;

    (void)state;
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_data_device_head_encode(&w, "timer", 0, 2);
    mig2_wr_bytes(&w, fields, sizeof(fields));
    mig2_data_device_tail_encode(&w, subs, 2);
    assert_writer_bytes(&w, device_example, sizeof(device_example));
    mig2_wr_free(&w);

    /* No subsection: the tail is a single 0. */
    mig2_data_device_head_encode(&w, "t", 1, 1);
    mig2_data_device_tail_encode(&w, NULL, 0);
    {
        static const uint8_t exp[] = {
            0x01, 't', 0, 0, 0, 1, 0, 0, 0, 1, 0x00,
        };

        assert_writer_bytes(&w, exp, sizeof(exp));
    }
    mig2_wr_free(&w);
}

static void test_device_parse(void **state)
{
    Mig2DataDevice d;
    Mig2DataSubsection subs[4];
    size_t n;

    (void)state;
    assert_int_equal(mig2_data_device_parse(device_example,
                                            sizeof(device_example), &d),
                     MIG2_OK);
    assert_int_equal(d.id_len, 5);
    assert_memory_equal(d.id, "timer", 5);
    assert_int_equal(d.instance, 0);
    assert_int_equal(d.version, 2);
    assert_ptr_equal(d.body, device_example + 14);
    assert_int_equal(d.body_len, sizeof(device_example) - 14);
    assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 4, &n),
                     MIG2_OK);
    assert_int_equal(n, 2);
    assert_int_equal(subs[0].name_len, 7);
    assert_memory_equal(subs[0].name, "timer/a", 7);
    assert_int_equal(subs[0].len, 2);
    assert_int_equal(subs[0].data[1], 0xef);
    assert_memory_equal(subs[1].name, "timer/b", 7);
    assert_int_equal(subs[1].len, 0);

    /* Wrong field lengths do not parse as a tail. */
    assert_int_not_equal(mig2_data_device_tail_parse(&d, 3, subs, 4, &n),
                         MIG2_OK);
    assert_int_equal(n, 0);
    assert_int_not_equal(mig2_data_device_tail_parse(&d, 5, subs, 4, &n),
                         MIG2_OK);
    assert_int_equal(mig2_data_device_tail_parse(&d, d.body_len, subs, 4,
                                                 &n),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_data_device_tail_parse(&d, d.body_len + 1, subs,
                                                 4, &n),
                     MIG2_ERR_TRUNCATED);
    /* Room for one record only. */
    assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 1, &n),
                     MIG2_ERR_LIMIT);
}

static void test_device_truncated_everywhere(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(device_example); i++) {
        uint8_t *cut = dup_bytes(device_example, i);
        Mig2DataDevice d;
        Mig2DataSubsection subs[4];
        size_t n;
        int rc = mig2_data_device_parse(cut, i, &d);

        if (i < 14) {
            assert_int_equal(rc, MIG2_ERR_TRUNCATED);
        } else {
            assert_int_equal(rc, MIG2_OK);
            assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 4, &n),
                             MIG2_ERR_TRUNCATED);
        }
        free(cut);
    }
}

static void test_device_malformed(void **state)
{
    uint8_t *q;
    Mig2DataDevice d;
    Mig2DataSubsection subs[4];
    size_t n;
    static const uint8_t empty_id[] = { 0x00, 0, 0, 0, 0, 0, 0, 0, 1, 0 };

    (void)state;
    /* An empty device id. */
    assert_int_equal(mig2_data_device_parse(empty_id, sizeof(empty_id), &d),
                     MIG2_ERR_BAD_STRING);

    /* Trailing byte after the last subsection. */
    q = malloc(sizeof(device_example) + 1);
    assert_non_null(q);
    memcpy(q, device_example, sizeof(device_example));
    q[sizeof(device_example)] = 0;
    assert_int_equal(mig2_data_device_parse(q, sizeof(device_example) + 1,
                                            &d), MIG2_OK);
    assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 4, &n),
                     MIG2_ERR_TRAILING);
    free(q);

    /* The same subsection twice. */
    q = dup_bytes(device_example, sizeof(device_example));
    q[sizeof(device_example) - 5] = 'a';        /* timer/b -> timer/a */
    assert_int_equal(mig2_data_device_parse(q, sizeof(device_example), &d),
                     MIG2_OK);
    assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 4, &n),
                     MIG2_ERR_DUPLICATE);
    /* A subsection name with a NUL in it. */
    q[sizeof(device_example) - 6] = 0;
    assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 4, &n),
                     MIG2_ERR_BAD_STRING);
    free(q);

    /* A subsection length past the end. */
    q = dup_bytes(device_example, sizeof(device_example));
    q[29] = 0x7f;
    assert_int_equal(mig2_data_device_parse(q, sizeof(device_example), &d),
                     MIG2_OK);
    assert_int_equal(mig2_data_device_tail_parse(&d, 4, subs, 4, &n),
                     MIG2_ERR_TRUNCATED);
    free(q);
}

/* The tail piece by piece: the same bytes as from a list. */
static void test_device_tail_streaming(void **state)
{
    static const uint8_t fields[] = { 1, 2, 3, 4 };
    Mig2Writer w;
    size_t mark;

    (void)state;
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_data_device_head_encode(&w, "timer", 0, 2);
    mig2_wr_bytes(&w, fields, sizeof(fields));
    mig2_data_device_tail_begin(&w, 2);
    mark = mig2_data_subsection_begin(&w, "timer/a");
    mig2_wr_u8(&w, 0xbe);
    mig2_wr_u8(&w, 0xef);
    mig2_data_subsection_end(&w, mark);
    mark = mig2_data_subsection_begin(&w, "timer/b");
    mig2_data_subsection_end(&w, mark);
    assert_writer_bytes(&w, device_example, sizeof(device_example));
    mig2_wr_free(&w);

    mig2_data_device_tail_begin(&w, 256);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_LIMIT);
    mig2_wr_free(&w);
    mig2_data_device_tail_begin(&w, 1);
    mark = mig2_data_subsection_begin(&w, "");
    mig2_data_subsection_end(&w, mark);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
    mig2_wr_free(&w);
}

static void test_device_tail_limits(void **state)
{
    Mig2DataSubsection subs[256];
    Mig2Writer w;
    size_t i;

    (void)state;
    for (i = 0; i < 256; i++) {
        subs[i].name = "s";
        subs[i].data = NULL;
        subs[i].len = 0;
    }
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_data_device_tail_encode(&w, subs, 256);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_LIMIT);
    mig2_wr_free(&w);
    subs[0].name = "";
    mig2_data_device_tail_encode(&w, subs, 1);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
    mig2_wr_free(&w);
}

int main(void)
{
    const struct CMUnitTest names[] = {
        cmocka_unit_test(test_frame_names),
    };
    const struct CMUnitTest ram[] = {
        cmocka_unit_test(test_ram_encode_exact),
        cmocka_unit_test(test_ram_head_entry_put),
        cmocka_unit_test(test_ram_entry_get_put),
        cmocka_unit_test(test_ram_vm_layout),
        cmocka_unit_test(test_ram_parse_iterate),
        cmocka_unit_test(test_ram_truncated_everywhere),
        cmocka_unit_test(test_ram_malformed),
        cmocka_unit_test(test_ram_page_straddles_end),
        cmocka_unit_test(test_ram_length_bounds),
        cmocka_unit_test(test_ram_streaming),
        cmocka_unit_test(test_ram_head_bounds_count),
        cmocka_unit_test(test_ram_mutations),
    };
    const struct CMUnitTest small[] = {
        cmocka_unit_test(test_sync_exact),
        cmocka_unit_test(test_round_exact),
        cmocka_unit_test(test_end_exact),
        cmocka_unit_test(test_empty),
    };
    const struct CMUnitTest device[] = {
        cmocka_unit_test(test_device_encode_exact),
        cmocka_unit_test(test_device_parse),
        cmocka_unit_test(test_device_truncated_everywhere),
        cmocka_unit_test(test_device_malformed),
        cmocka_unit_test(test_device_tail_streaming),
        cmocka_unit_test(test_device_tail_limits),
    };
    int failed = 0;

    failed += cmocka_run_group_tests_name("names", names, NULL, NULL);
    failed += cmocka_run_group_tests_name("ram", ram, NULL, NULL);
    failed += cmocka_run_group_tests_name("small", small, NULL, NULL);
    failed += cmocka_run_group_tests_name("device", device, NULL, NULL);
    return failed ? 1 : 0;
}
