/*
 * Unit tests for the bounded reader/writer, frames, TLVs, grease and
 * stream detection (lib/codec.c, lib/wire.c).
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

/* ---------------------------------------------------------------- */
/* Helpers                                                           */
/* ---------------------------------------------------------------- */

/* @w holds exactly @len bytes equal to @exp and no error. */
static void assert_writer_bytes(const Mig2Writer *w, const void *exp,
                                size_t len)
{
    assert_int_equal(mig2_wr_error(w), MIG2_OK);
    assert_int_equal(w->len, len);
    if (len) {
        assert_memory_equal(w->buf, exp, len);
    }
}

/* @a and @b point at the same place (a getter left the reader alone). */
static void assert_reader_same(const Mig2Reader *a, const Mig2Reader *b)
{
    assert_ptr_equal(a->p, b->p);
    assert_ptr_equal(a->end, b->end);
}

/* A heap string of @n copies of @c (NUL-terminated). */
static char *repeat_char(char c, size_t n)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---------------------------------------------------------------- */
/* Fixed-width round trips                                           */
/* ---------------------------------------------------------------- */

static void test_u8_round_trip(void **state)
{
    static const uint8_t vals[] = { 0, 1, 0x7f, 0x80, 0xff };
    Mig2Writer w;
    Mig2Reader rd;
    uint8_t v;
    size_t i;

    (void)state;
    mig2_wr_init(&w, 64);
    for (i = 0; i < sizeof(vals); i++) {
        mig2_wr_u8(&w, vals[i]);
    }
    assert_writer_bytes(&w, vals, sizeof(vals));

    mig2_rd_init(&rd, w.buf, w.len);
    for (i = 0; i < sizeof(vals); i++) {
        assert_int_equal(mig2_rd_left(&rd), sizeof(vals) - i);
        assert_int_equal(mig2_rd_u8(&rd, &v), MIG2_OK);
        assert_int_equal(v, vals[i]);
    }
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_u16_round_trip(void **state)
{
    static const uint16_t vals[] = { 0, 0x0102, 0x00ff, 0xff00, 0xffff };
    static const uint8_t exp[] = {
        0x00, 0x00, 0x01, 0x02, 0x00, 0xff, 0xff, 0x00, 0xff, 0xff,
    };
    Mig2Writer w;
    Mig2Reader rd;
    uint16_t v;
    size_t i;

    (void)state;
    mig2_wr_init(&w, 64);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        mig2_wr_u16(&w, vals[i]);
    }
    assert_writer_bytes(&w, exp, sizeof(exp));

    mig2_rd_init(&rd, w.buf, w.len);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        assert_int_equal(mig2_rd_u16(&rd, &v), MIG2_OK);
        assert_int_equal(v, vals[i]);
    }
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_u32_round_trip(void **state)
{
    static const uint32_t vals[] = { 0, 0x01020304, 0x80000000, 0xffffffff };
    static const uint8_t exp[] = {
        0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04,
        0x80, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
    };
    Mig2Writer w;
    Mig2Reader rd;
    uint32_t v;
    size_t i;

    (void)state;
    mig2_wr_init(&w, 64);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        mig2_wr_u32(&w, vals[i]);
    }
    assert_writer_bytes(&w, exp, sizeof(exp));

    mig2_rd_init(&rd, w.buf, w.len);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        assert_int_equal(mig2_rd_u32(&rd, &v), MIG2_OK);
        assert_int_equal(v, vals[i]);
    }
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_u64_round_trip(void **state)
{
    static const uint64_t vals[] = {
        0, 0x0102030405060708ULL, 0x8000000000000000ULL, UINT64_MAX,
    };
    static const uint8_t exp[] = {
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    };
    Mig2Writer w;
    Mig2Reader rd;
    uint64_t v;
    size_t i;

    (void)state;
    mig2_wr_init(&w, 64);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        mig2_wr_u64(&w, vals[i]);
    }
    assert_writer_bytes(&w, exp, sizeof(exp));

    mig2_rd_init(&rd, w.buf, w.len);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        assert_int_equal(mig2_rd_u64(&rd, &v), MIG2_OK);
        assert_true(v == vals[i]);
    }
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_bytes_round_trip(void **state)
{
    static const uint8_t data[] = { 0xde, 0xad, 0x00, 0xbe, 0xef };
    uint8_t out[5], sentinel = 0x5a;
    Mig2Writer w;
    Mig2Reader rd;

    (void)state;
    mig2_wr_init(&w, 64);
    /* Zero bytes on a fresh (still unallocated) writer: a no-op. */
    mig2_wr_bytes(&w, NULL, 0);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, 0);
    mig2_wr_bytes(&w, data, sizeof(data));
    mig2_wr_bytes(&w, data, 0);
    assert_writer_bytes(&w, data, sizeof(data));

    mig2_rd_init(&rd, w.buf, w.len);
    assert_int_equal(mig2_rd_bytes(&rd, &sentinel, 0), MIG2_OK);
    assert_int_equal(sentinel, 0x5a);
    assert_int_equal(mig2_rd_skip(&rd, 1), MIG2_OK);
    assert_int_equal(mig2_rd_bytes(&rd, out, 4), MIG2_OK);
    assert_memory_equal(out, data + 1, 4);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    assert_int_equal(mig2_rd_skip(&rd, 0), MIG2_OK);
    mig2_wr_free(&w);
}

/* ---------------------------------------------------------------- */
/* Strings                                                           */
/* ---------------------------------------------------------------- */

static void test_str8_round_trip(void **state)
{
    static const char uni[] = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80";
    char *s255 = repeat_char('n', 255);
    char *s256 = repeat_char('n', 256);
    Mig2Writer w;
    Mig2Reader rd;
    const char *s;
    size_t len;

    (void)state;
    mig2_wr_init(&w, 1024);
    mig2_wr_str8(&w, "a");
    mig2_wr_str8(&w, uni);
    mig2_wr_str8(&w, s255);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, 2 + 1 + strlen(uni) + 1 + 255);
    assert_int_equal(w.buf[0], 1);
    assert_int_equal(w.buf[1], 'a');
    assert_int_equal(w.buf[2], strlen(uni));
    assert_int_equal(w.buf[3 + strlen(uni)], 0xff);

    mig2_rd_init(&rd, w.buf, w.len);
    assert_int_equal(mig2_rd_str8(&rd, &s, &len), MIG2_OK);
    assert_int_equal(len, 1);
    assert_memory_equal(s, "a", 1);
    assert_int_equal(mig2_rd_str8(&rd, &s, &len), MIG2_OK);
    assert_int_equal(len, strlen(uni));
    assert_memory_equal(s, uni, len);
    /* The string points into the input. */
    assert_ptr_equal(s, (const char *)w.buf + 3);
    assert_int_equal(mig2_rd_str8(&rd, &s, &len), MIG2_OK);
    assert_int_equal(len, 255);
    assert_memory_equal(s, s255, 255);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);

    /* 256 bytes do not fit a str8. */
    mig2_wr_init(&w, 1024);
    mig2_wr_str8(&w, s256);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 0);
    mig2_wr_free(&w);
    free(s255);
    free(s256);
}

static void test_str16_bounds(void **state)
{
    char *s4096 = repeat_char('x', MIG2_MAX_STR16);
    char *s4097 = repeat_char('x', MIG2_MAX_STR16 + 1);
    uint8_t raw[2 + MIG2_MAX_STR16 + 1];
    Mig2Writer w;
    Mig2Reader rd, before;
    const char *s = NULL;
    size_t len = 0;

    (void)state;
    /* Exactly max: written and read back. */
    mig2_wr_init(&w, 8192);
    mig2_wr_str16(&w, s4096, MIG2_MAX_STR16);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, 2 + MIG2_MAX_STR16);
    assert_int_equal(w.buf[0], 0x10);
    assert_int_equal(w.buf[1], 0x00);
    mig2_rd_init(&rd, w.buf, w.len);
    assert_int_equal(mig2_rd_str16(&rd, MIG2_MAX_STR16, &s, &len), MIG2_OK);
    assert_int_equal(len, MIG2_MAX_STR16);
    assert_memory_equal(s, s4096, len);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    /* The same bytes with a smaller bound: too large, reader untouched. */
    mig2_rd_init(&rd, w.buf, w.len);
    before = rd;
    assert_int_equal(mig2_rd_str16(&rd, MIG2_MAX_STR16 - 1, &s, &len),
                     MIG2_ERR_TOO_LARGE);
    assert_reader_same(&rd, &before);
    mig2_wr_free(&w);

    /* max + 1: the writer refuses it and writes nothing. */
    mig2_wr_init(&w, 8192);
    mig2_wr_str16(&w, s4097, MIG2_MAX_STR16);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 0);
    mig2_wr_free(&w);

    /* max + 1 on the wire: the reader refuses it. */
    raw[0] = (MIG2_MAX_STR16 + 1) >> 8;
    raw[1] = (MIG2_MAX_STR16 + 1) & 0xff;
    memset(raw + 2, 'x', MIG2_MAX_STR16 + 1);
    mig2_rd_init(&rd, raw, sizeof(raw));
    before = rd;
    assert_int_equal(mig2_rd_str16(&rd, MIG2_MAX_STR16, &s, &len),
                     MIG2_ERR_TOO_LARGE);
    assert_reader_same(&rd, &before);
    /* ... but a larger bound accepts it. */
    assert_int_equal(mig2_rd_str16(&rd, MIG2_MAX_STR16 + 1, &s, &len),
                     MIG2_OK);
    assert_int_equal(len, MIG2_MAX_STR16 + 1);

    /* Short bound: 3 fits 3, 4 does not. */
    mig2_wr_init(&w, 64);
    mig2_wr_str16(&w, "abc", 3);
    assert_writer_bytes(&w, "\x00\x03" "abc", 5);
    mig2_wr_str16(&w, "abcd", 3);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 5);
    mig2_wr_free(&w);
    free(s4096);
    free(s4097);
}

static void test_str_read_rejects(void **state)
{
    /* Each is one encoded string the reader must refuse as BAD_STRING. */
    static const struct {
        const char *bytes;
        size_t len;
        bool str16;
    } cases[] = {
        { "\x00", 1, false },                   /* empty str8 */
        { "\x00\x00", 2, true },                /* empty str16 */
        { "\x03" "a\x00" "b", 4, false },       /* embedded NUL */
        { "\x00\x03" "a\x00" "b", 5, true },
        { "\x02\xc0\x80", 3, false },           /* overlong NUL */
        { "\x00\x01\xff", 3, true },            /* invalid byte */
        { "\x02" "a\xc3", 3, false },           /* truncated sequence */
        { "\x03\xed\xa0\x80", 4, false },       /* surrogate */
    };
    Mig2Reader rd, before;
    const char *s = NULL;
    size_t len = 0, i;
    int rc;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mig2_rd_init(&rd, cases[i].bytes, cases[i].len);
        before = rd;
        rc = cases[i].str16 ? mig2_rd_str16(&rd, 100, &s, &len)
                            : mig2_rd_str8(&rd, &s, &len);
        assert_int_equal(rc, MIG2_ERR_BAD_STRING);
        assert_reader_same(&rd, &before);
    }
}

static void test_str_write_rejects(void **state)
{
    static const char *const bad[] = {
        "", "\xc0\x80", "a\xff", "\xe2\x82", "\xed\xbf\xbf",
        "\xf4\x90\x80\x80",
    };
    Mig2Writer w;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mig2_wr_init(&w, 64);
        mig2_wr_str8(&w, bad[i]);
        assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
        assert_int_equal(w.len, 0);
        mig2_wr_free(&w);

        mig2_wr_init(&w, 64);
        mig2_wr_str16(&w, bad[i], 64);
        assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
        assert_int_equal(w.len, 0);
        mig2_wr_free(&w);
    }
    mig2_wr_init(&w, 64);
    mig2_wr_str8(&w, NULL);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
    mig2_wr_free(&w);
}

/* ---------------------------------------------------------------- */
/* Truncation, trailing bytes, sub-readers                           */
/* ---------------------------------------------------------------- */

enum {
    G_U8, G_U16, G_U32, G_U64, G_BYTES, G_SKIP, G_SUB, G_STR8, G_STR16,
    G_TLV, G_COUNT
};

/* Run getter @g on @rd; @need is what bytes/skip/sub ask for. */
static int run_getter(int g, Mig2Reader *rd, size_t need)
{
    uint8_t b8, buf[16];
    uint16_t b16, type;
    uint32_t b32;
    uint64_t b64;
    Mig2Reader sub;
    const char *s;
    size_t len;
    bool crit;

    switch (g) {
    case G_U8:
        return mig2_rd_u8(rd, &b8);
    case G_U16:
        return mig2_rd_u16(rd, &b16);
    case G_U32:
        return mig2_rd_u32(rd, &b32);
    case G_U64:
        return mig2_rd_u64(rd, &b64);
    case G_BYTES:
        return mig2_rd_bytes(rd, buf, need);
    case G_SKIP:
        return mig2_rd_skip(rd, need);
    case G_SUB:
        return mig2_rd_sub(rd, need, &sub);
    case G_STR8:
        return mig2_rd_str8(rd, &s, &len);
    case G_STR16:
        return mig2_rd_str16(rd, 4096, &s, &len);
    case G_TLV:
        return mig2_rd_tlv(rd, &type, &crit, &sub);
    }
    fail_msg("bad getter %d", g);
    return 0;
}

static void test_truncated_getters(void **state)
{
    /*
     * For each getter, a complete item of @full bytes; every proper
     * prefix must give TRUNCATED and leave the reader alone.
     */
    static const struct {
        int g;
        const char *bytes;
        size_t full;
    } cases[] = {
        { G_U8, "\x01", 1 },
        { G_U16, "\x01\x02", 2 },
        { G_U32, "\x01\x02\x03\x04", 4 },
        { G_U64, "\x01\x02\x03\x04\x05\x06\x07\x08", 8 },
        { G_BYTES, "abcdef", 6 },
        { G_SKIP, "abcdef", 6 },
        { G_SUB, "abcdef", 6 },
        { G_STR8, "\x05hello", 6 },
        { G_STR16, "\x00\x05hello", 7 },
        { G_TLV, "\x80\x05\x00\x00\x00\x03" "abc", 9 },
    };
    Mig2Reader rd, before;
    size_t i, n;
    int seen[G_COUNT] = { 0 };

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (n = 0; n < cases[i].full; n++) {
            mig2_rd_init(&rd, cases[i].bytes, n);
            before = rd;
            assert_int_equal(run_getter(cases[i].g, &rd, cases[i].full),
                             MIG2_ERR_TRUNCATED);
            assert_reader_same(&rd, &before);
        }
        /* And the complete item reads fine and consumes everything. */
        mig2_rd_init(&rd, cases[i].bytes, cases[i].full);
        assert_int_equal(run_getter(cases[i].g, &rd, cases[i].full),
                         MIG2_OK);
        assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
        seen[cases[i].g]++;
    }
    for (i = 0; i < G_COUNT; i++) {
        assert_int_equal(seen[i], 1);
    }
}

static void test_rd_end_trailing(void **state)
{
    static const uint8_t buf[] = { 1, 2, 3 };
    Mig2Reader rd;
    uint16_t v;

    (void)state;
    mig2_rd_init(&rd, buf, 0);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);

    mig2_rd_init(&rd, buf, sizeof(buf));
    assert_int_equal(mig2_rd_end(&rd), MIG2_ERR_TRAILING);
    assert_int_equal(mig2_rd_u16(&rd, &v), MIG2_OK);
    assert_int_equal(v, 0x0102);
    assert_int_equal(mig2_rd_left(&rd), 1);
    assert_int_equal(mig2_rd_end(&rd), MIG2_ERR_TRAILING);
    assert_int_equal(mig2_rd_skip(&rd, 1), MIG2_OK);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
}

/* codec.h allows a NULL buffer of length 0. */
static void test_rd_null_empty(void **state)
{
    Mig2Reader rd, sub;
    uint8_t v;

    (void)state;
    mig2_rd_init(&rd, NULL, 0);
    assert_int_equal(mig2_rd_left(&rd), 0);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    assert_int_equal(mig2_rd_u8(&rd, &v), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_skip(&rd, 0), MIG2_OK);
    assert_int_equal(mig2_rd_bytes(&rd, &v, 0), MIG2_OK);
    assert_int_equal(mig2_rd_sub(&rd, 0, &sub), MIG2_OK);
    assert_int_equal(mig2_rd_left(&sub), 0);
    assert_int_equal(mig2_rd_sub(&rd, 1, &sub), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
}

static void test_sub_reader_bound(void **state)
{
    static const uint8_t buf[] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    Mig2Reader rd, sub, subsub, before;
    uint32_t v32;
    uint16_t v16;
    uint8_t v8;

    (void)state;
    mig2_rd_init(&rd, buf, sizeof(buf));
    assert_int_equal(mig2_rd_sub(&rd, 3, &sub), MIG2_OK);
    assert_int_equal(mig2_rd_left(&sub), 3);
    assert_int_equal(mig2_rd_left(&rd), 5);

    /* The sub-reader stops at its bound although the buffer goes on. */
    before = sub;
    assert_int_equal(mig2_rd_u32(&sub, &v32), MIG2_ERR_TRUNCATED);
    assert_reader_same(&sub, &before);
    assert_int_equal(mig2_rd_skip(&sub, 4), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_sub(&sub, 4, &subsub), MIG2_ERR_TRUNCATED);
    assert_reader_same(&sub, &before);

    /* Nested: a sub-reader of a sub-reader. */
    assert_int_equal(mig2_rd_sub(&sub, 2, &subsub), MIG2_OK);
    assert_int_equal(mig2_rd_u8(&subsub, &v8), MIG2_OK);
    assert_int_equal(v8, 1);
    assert_int_equal(mig2_rd_u16(&subsub, &v16), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_u8(&subsub, &v8), MIG2_OK);
    assert_int_equal(v8, 2);
    assert_int_equal(mig2_rd_u8(&subsub, &v8), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_end(&subsub), MIG2_OK);

    assert_int_equal(mig2_rd_u8(&sub, &v8), MIG2_OK);
    assert_int_equal(v8, 3);
    assert_int_equal(mig2_rd_u8(&sub, &v8), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_end(&sub), MIG2_OK);

    /* The parent continues right after the split-off bytes. */
    assert_int_equal(mig2_rd_u32(&rd, &v32), MIG2_OK);
    assert_int_equal(v32, 0x04050607);
    before = rd;
    assert_int_equal(mig2_rd_sub(&rd, 2, &sub), MIG2_ERR_TRUNCATED);
    assert_reader_same(&rd, &before);
    assert_int_equal(mig2_rd_sub(&rd, 1, &sub), MIG2_OK);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
}

/* A TLV's value reader cannot see the next TLV. */
static void test_tlv_value_bounded(void **state)
{
    static const uint8_t buf[] = {
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0xaa,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0xbb, 0xcc,
    };
    Mig2Reader rd, v;
    uint16_t type, v16;
    bool crit;
    uint8_t b;

    (void)state;
    mig2_rd_init(&rd, buf, sizeof(buf));
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
    assert_int_equal(type, 1);
    assert_int_equal(mig2_rd_u16(&v, &v16), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_u8(&v, &b), MIG2_OK);
    assert_int_equal(b, 0xaa);
    assert_int_equal(mig2_rd_u8(&v, &b), MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
    assert_int_equal(type, 2);
    assert_int_equal(mig2_rd_u16(&v, &v16), MIG2_OK);
    assert_int_equal(v16, 0xbbcc);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
}

/* ---------------------------------------------------------------- */
/* UTF-8                                                             */
/* ---------------------------------------------------------------- */

static void test_utf8_valid_forms(void **state)
{
    static const char *const good[] = {
        "a",
        "\x7f",                         /* U+007F */
        "\xc2\x80",                     /* U+0080 */
        "\xc3\xa9",                     /* U+00E9 */
        "\xdf\xbf",                     /* U+07FF */
        "\xe0\xa0\x80",                 /* U+0800 */
        "\xe2\x82\xac",                 /* U+20AC */
        "\xed\x9f\xbf",                 /* U+D7FF, just below surrogates */
        "\xee\x80\x80",                 /* U+E000, just above */
        "\xef\xbf\xbf",                 /* U+FFFF */
        "\xf0\x90\x80\x80",             /* U+10000 */
        "\xf0\x9f\x98\x80",             /* U+1F600 */
        "\xf4\x8f\xbf\xbf",             /* U+10FFFF */
        "mixed \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 end",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(mig2_utf8_valid(good[i], strlen(good[i])));
    }
    /* Empty is valid UTF-8; the "never empty" rule is the codec's. */
    assert_true(mig2_utf8_valid("", 0));
}

static void test_utf8_invalid_forms(void **state)
{
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {
        { "\xc0\x80", 2 },              /* overlong NUL */
        { "\xc1\xbf", 2 },              /* overlong U+007F */
        { "\xe0\x80\x80", 3 },          /* overlong 3-byte */
        { "\xe0\x9f\xbf", 3 },          /* overlong U+07FF */
        { "\xf0\x80\x80\x80", 4 },      /* overlong 4-byte */
        { "\xf0\x8f\xbf\xbf", 4 },      /* overlong U+FFFF */
        { "\xed\xa0\x80", 3 },          /* U+D800 */
        { "\xed\xbf\xbf", 3 },          /* U+DFFF */
        { "\xf4\x90\x80\x80", 4 },      /* U+110000 */
        { "\xf5\x80\x80\x80", 4 },      /* lead byte past U+10FFFF */
        { "\xf7\xbf\xbf\xbf", 4 },
        { "\xf8\x88\x80\x80\x80", 5 },  /* 5-byte form */
        { "\xfc\x84\x80\x80\x80\x80", 6 },
        { "\xfe", 1 },
        { "\xff", 1 },
        { "\x80", 1 },                  /* lone continuation */
        { "a\xbf", 2 },
        { "\xc3", 1 },                  /* truncated sequences */
        { "\xe2\x82", 2 },
        { "\xf0\x9f\x98", 3 },
        { "ab\xe2\x82", 4 },
        { "\xc3\x41", 2 },              /* bad continuation */
        { "\xe2\x28\xac", 3 },
        { "\xf0\x9f\x98\x41", 4 },
        { "a\0b", 3 },                  /* embedded NUL */
        { "\0", 1 },
        { "abc\0", 4 },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mig2_utf8_valid(bad[i].s, bad[i].len)) {
            fail_msg("case %zu accepted as UTF-8", i);
        }
    }
    /* The length is honoured: a valid sequence cut short is invalid. */
    assert_false(mig2_utf8_valid("\xc3\xa9", 1));
    assert_false(mig2_utf8_valid("\xe2\x82\xac", 2));
    /* ... and bytes past the length are not looked at. */
    assert_true(mig2_utf8_valid("ab\xff", 2));
}

/* ---------------------------------------------------------------- */
/* Writer bound                                                      */
/* ---------------------------------------------------------------- */

static void test_writer_max_sticky(void **state)
{
    static const uint8_t exp[] = { 0x01, 0x02, 0x03, 0x04 };
    Mig2Writer w;
    uint8_t *buf;
    size_t len;

    (void)state;
    mig2_wr_init(&w, 5);
    mig2_wr_u32(&w, 0x01020304);
    assert_writer_bytes(&w, exp, 4);
    /* 2 more bytes would make 6 > 5. */
    mig2_wr_u16(&w, 0xffff);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 4);
    /* Sticky: even a put that would fit does nothing now. */
    mig2_wr_u8(&w, 0xee);
    mig2_wr_bytes(&w, "z", 1);
    mig2_wr_str8(&w, "");
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 4);
    assert_memory_equal(w.buf, exp, 4);

    /* Steal hands the bytes over and resets the writer. */
    buf = mig2_wr_steal(&w, &len);
    assert_non_null(buf);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, exp, 4);
    free(buf);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, 0);
    assert_null(w.buf);
    mig2_wr_u8(&w, 0x42);
    assert_writer_bytes(&w, "\x42", 1);
    mig2_wr_free(&w);

    /* A writer of max 0 accepts nothing. */
    mig2_wr_init(&w, 0);
    mig2_wr_u8(&w, 1);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 0);
    mig2_wr_free(&w);
}

static void test_writer_first_error_kept(void **state)
{
    Mig2Writer w;

    (void)state;
    /* A string error is recorded first and stays, even after TOO_LARGE. */
    mig2_wr_init(&w, 4);
    mig2_wr_str8(&w, "\xff");
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
    mig2_wr_u64(&w, 1);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_BAD_STRING);
    assert_int_equal(w.len, 0);
    /* Free resets the writer for reuse with the same bound. */
    mig2_wr_free(&w);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.max, 4);
    mig2_wr_u32(&w, 7);
    assert_writer_bytes(&w, "\x00\x00\x00\x07", 4);
    mig2_wr_free(&w);
}

static void test_writer_grows_to_max(void **state)
{
    enum { N = 1000 };
    Mig2Writer w;
    size_t i;

    (void)state;
    mig2_wr_init(&w, N);
    for (i = 0; i < N; i++) {
        mig2_wr_u8(&w, (uint8_t)i);
    }
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, N);
    for (i = 0; i < N; i++) {
        assert_int_equal(w.buf[i], (uint8_t)i);
    }
    mig2_wr_u8(&w, 0);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, N);
    mig2_wr_free(&w);

    /* A single put larger than max. */
    mig2_wr_init(&w, 7);
    mig2_wr_u64(&w, 0);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    assert_int_equal(w.len, 0);
    mig2_wr_free(&w);
}

/* ---------------------------------------------------------------- */
/* TLVs and frames                                                   */
/* ---------------------------------------------------------------- */

static void test_tlv_nested_lengths(void **state)
{
    static const uint8_t exp[] = {
        0x80, 0x08, 0x00, 0x00, 0x00, 0x10,     /* DEVICE, critical, 16 */
        0xaa,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x02,     /* inner, 2 */
        0x12, 0x34,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00,     /* empty inner */
        0xbb,
        0x00, 0x05, 0x00, 0x00, 0x00, 0x01,     /* sibling, 1 */
        0xcc,
    };
    Mig2Writer w;
    Mig2Reader rd, v, iv;
    size_t outer, inner, empty, sib;
    uint16_t type, v16;
    bool crit;
    uint8_t b;

    (void)state;
    mig2_wr_init(&w, 256);
    outer = mig2_wr_tlv_begin(&w, MIG2_TLV_DEVICE, true);
    mig2_wr_u8(&w, 0xaa);
    inner = mig2_wr_tlv_begin(&w, 0x0001, false);
    mig2_wr_u16(&w, 0x1234);
    mig2_wr_tlv_end(&w, inner);
    empty = mig2_wr_tlv_begin(&w, 0x0002, false);
    mig2_wr_tlv_end(&w, empty);
    mig2_wr_u8(&w, 0xbb);
    mig2_wr_tlv_end(&w, outer);
    /* The critical bit inside @type is masked; only @critical counts. */
    sib = mig2_wr_tlv_begin(&w, 0x8005, false);
    mig2_wr_u8(&w, 0xcc);
    mig2_wr_tlv_end(&w, sib);
    assert_int_equal(outer, 0);
    assert_int_equal(inner, 7);
    assert_int_equal(sib, 22);
    assert_writer_bytes(&w, exp, sizeof(exp));

    /* And read back. */
    mig2_rd_init(&rd, w.buf, w.len);
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
    assert_int_equal(type, MIG2_TLV_DEVICE);
    assert_true(crit);
    assert_int_equal(mig2_rd_left(&v), 16);
    assert_int_equal(mig2_rd_u8(&v, &b), MIG2_OK);
    assert_int_equal(mig2_rd_tlv(&v, &type, &crit, &iv), MIG2_OK);
    assert_int_equal(type, 1);
    assert_false(crit);
    assert_int_equal(mig2_rd_u16(&iv, &v16), MIG2_OK);
    assert_int_equal(v16, 0x1234);
    assert_int_equal(mig2_rd_end(&iv), MIG2_OK);
    assert_int_equal(mig2_rd_tlv(&v, &type, &crit, &iv), MIG2_OK);
    assert_int_equal(type, 2);
    assert_int_equal(mig2_rd_left(&iv), 0);
    assert_int_equal(mig2_rd_u8(&v, &b), MIG2_OK);
    assert_int_equal(b, 0xbb);
    assert_int_equal(mig2_rd_end(&v), MIG2_OK);
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
    assert_int_equal(type, 5);
    assert_false(crit);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_tlv_zero_length(void **state)
{
    static const uint8_t exp[] = {
        0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
        0x80, 0x07, 0x00, 0x00, 0x00, 0x00,
    };
    Mig2Writer w;
    Mig2Reader rd, v;
    uint16_t type = 0;
    bool crit = true;
    size_t m;

    (void)state;
    mig2_wr_init(&w, 64);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_RAM_BLOCK, false);
    mig2_wr_tlv_end(&w, m);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_RAM_BLOCK, true);
    mig2_wr_tlv_end(&w, m);
    assert_writer_bytes(&w, exp, sizeof(exp));

    mig2_rd_init(&rd, exp, sizeof(exp));
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
    assert_int_equal(type, MIG2_TLV_RAM_BLOCK);
    assert_false(crit);
    assert_int_equal(mig2_rd_left(&v), 0);
    assert_int_equal(mig2_rd_end(&v), MIG2_OK);
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
    assert_int_equal(type, MIG2_TLV_RAM_BLOCK);
    assert_true(crit);
    assert_int_equal(mig2_rd_left(&v), 0);
    assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_tlv_critical_bit(void **state)
{
    static const struct {
        uint8_t hi, lo;
        uint16_t type;
        bool crit;
    } cases[] = {
        { 0x00, 0x00, 0x0000, false },
        { 0x80, 0x00, 0x0000, true },
        { 0x00, 0x05, 0x0005, false },
        { 0x80, 0x05, 0x0005, true },
        { 0x81, 0x23, 0x0123, true },
        { 0x7f, 0xff, 0x7fff, false },
        { 0xff, 0xff, 0x7fff, true },
    };
    uint8_t buf[7];
    Mig2Reader rd, v;
    uint16_t type;
    bool crit;
    uint8_t b;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf[0] = cases[i].hi;
        buf[1] = cases[i].lo;
        buf[2] = buf[3] = buf[4] = 0;
        buf[5] = 1;
        buf[6] = (uint8_t)i;
        mig2_rd_init(&rd, buf, sizeof(buf));
        assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
        assert_int_equal(type, cases[i].type);
        assert_true(crit == cases[i].crit);
        assert_int_equal(mig2_rd_u8(&v, &b), MIG2_OK);
        assert_int_equal(b, i);
        assert_int_equal(mig2_rd_end(&rd), MIG2_OK);
    }
}

static void test_tlv_truncated(void **state)
{
    /* Length says 5, only 4 value bytes; and a huge length. */
    static const uint8_t short_val[] = {
        0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 1, 2, 3, 4,
    };
    static const uint8_t huge[] = {
        0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    };
    Mig2Reader rd, v, before;
    uint16_t type;
    bool crit;

    (void)state;
    mig2_rd_init(&rd, short_val, sizeof(short_val));
    before = rd;
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_ERR_TRUNCATED);
    assert_reader_same(&rd, &before);
    mig2_rd_init(&rd, huge, sizeof(huge));
    before = rd;
    assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_ERR_TRUNCATED);
    assert_reader_same(&rd, &before);
}

static void test_frame_exact_bytes(void **state)
{
    static const uint8_t exp[] = {
        0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x09,
        0x80, 0x01, 0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c',
        0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,   /* empty frame */
    };
    Mig2FrameHeader h;
    Mig2Writer w;
    size_t f, t;

    (void)state;
    mig2_wr_init(&w, 64);
    f = mig2_wr_frame_begin(&w, MIG2_FRAME_SRC_HELLO,
                            MIG2_FRAME_FLAG_CRITICAL);
    t = mig2_wr_tlv_begin(&w, 1, true);
    mig2_wr_bytes(&w, "abc", 3);
    mig2_wr_tlv_end(&w, t);
    mig2_wr_frame_end(&w, f);
    f = mig2_wr_frame_begin(&w, MIG2_FRAME_ERROR, 0);
    mig2_wr_frame_end(&w, f);
    assert_int_equal(f, 17);
    assert_writer_bytes(&w, exp, sizeof(exp));

    assert_int_equal(mig2_frame_header_parse(w.buf, MIG2_FRAME_MAX, &h),
                     MIG2_OK);
    assert_int_equal(h.type, MIG2_FRAME_SRC_HELLO);
    assert_int_equal(h.flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(h.length, 9);
    assert_int_equal(mig2_frame_header_parse(w.buf + 17, 0, &h), MIG2_OK);
    assert_int_equal(h.type, MIG2_FRAME_ERROR);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.length, 0);
    mig2_wr_free(&w);
}

static void test_frame_header_parse(void **state)
{
    static const uint8_t hdr[] = {
        0xfe, 0xdc, 0xba, 0x98, 0x00, 0x00, 0x01, 0x00,     /* len 256 */
    };
    static const uint8_t at_max[] = {
        0x00, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,     /* 16 MiB */
    };
    static const uint8_t over_max[] = {
        0x00, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01,     /* 16 MiB + 1 */
    };
    static const uint8_t all_ones[] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    };
    Mig2FrameHeader h;

    (void)state;
    assert_int_equal(mig2_frame_header_parse(hdr, 256, &h), MIG2_OK);
    assert_int_equal(h.type, 0xfedc);
    assert_int_equal(h.flags, 0xba98);
    assert_int_equal(h.length, 256);
    /* A lower receiver limit. */
    assert_int_equal(mig2_frame_header_parse(hdr, 255, &h),
                     MIG2_ERR_TOO_LARGE);
    assert_int_equal(h.length, 256);

    assert_int_equal(mig2_frame_header_parse(at_max, MIG2_FRAME_MAX, &h),
                     MIG2_OK);
    assert_int_equal(h.length, MIG2_FRAME_MAX);
    assert_int_equal(mig2_frame_header_parse(over_max, MIG2_FRAME_MAX, &h),
                     MIG2_ERR_TOO_LARGE);
    assert_int_equal(h.length, MIG2_FRAME_MAX + 1);
    assert_int_equal(mig2_frame_header_parse(all_ones, MIG2_FRAME_MAX, &h),
                     MIG2_ERR_TOO_LARGE);
    assert_int_equal(h.type, 0xffff);
    assert_int_equal(h.length, 0xffffffffU);
}

static void test_frame_end_too_large(void **state)
{
    Mig2Writer w;
    uint8_t *zero = calloc(1, MIG2_FRAME_MAX + 1);
    size_t f;

    (void)state;
    assert_non_null(zero);
    /* Exactly MIG2_FRAME_MAX of payload is fine ... */
    mig2_wr_init(&w, 2 * MIG2_FRAME_MAX);
    f = mig2_wr_frame_begin(&w, 0x0100, 0);
    mig2_wr_bytes(&w, zero, MIG2_FRAME_MAX);
    mig2_wr_frame_end(&w, f);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_memory_equal(w.buf, "\x01\x00\x00\x00\x01\x00\x00\x00", 8);
    mig2_wr_free(&w);
    /* ... one more byte is not. */
    f = mig2_wr_frame_begin(&w, 0x0100, 0);
    mig2_wr_bytes(&w, zero, MIG2_FRAME_MAX + 1);
    mig2_wr_frame_end(&w, f);
    assert_int_equal(mig2_wr_error(&w), MIG2_ERR_TOO_LARGE);
    mig2_wr_free(&w);
    free(zero);
}

/* ---------------------------------------------------------------- */
/* Grease and stream detection                                       */
/* ---------------------------------------------------------------- */

static void test_grease_patterns(void **state)
{
    unsigned hi, lo, v, count = 0;

    (void)state;
    /* Every 0xHaLa with H in 0..7 and L in 0..f is grease. */
    for (hi = 0; hi < 8; hi++) {
        for (lo = 0; lo < 16; lo++) {
            v = hi << 12 | 0x0a00 | lo << 4 | 0x0a;
            assert_true(mig2_is_grease((uint16_t)v));
            /* With the critical bit set it is not. */
            assert_false(mig2_is_grease((uint16_t)(v | 0x8000)));
        }
    }
    /* And nothing else is. */
    for (v = 0; v <= 0xffff; v++) {
        count += mig2_is_grease((uint16_t)v);
    }
    assert_int_equal(count, 8 * 16);
    assert_false(mig2_is_grease(0x0a0b));
    assert_false(mig2_is_grease(0x0b0a));
    assert_false(mig2_is_grease(0x0a00));
    assert_false(mig2_is_grease(0x000a));
    assert_false(mig2_is_grease(0x8a0a));
    assert_false(mig2_is_grease(0xfafa));
    assert_true(mig2_is_grease(0x7afa));
}

static void test_grease_never_registered(void **state)
{
    static const uint16_t tlvs[] = {
        MIG2_TLV_REVISIONS, MIG2_TLV_BUILD, MIG2_TLV_FEATURES,
        MIG2_TLV_NONCE, MIG2_TLV_MACHINE, MIG2_TLV_PAGE_SIZE,
        MIG2_TLV_RAM_BLOCK, MIG2_TLV_DEVICE, MIG2_TLV_CONFIG,
        MIG2_TLV_SELECTED_REVISION, MIG2_TLV_CONFIG_RESULT,
        MIG2_TLV_SUBSECTION, MIG2_TLV_MESSAGE, MIG2_TLV_PROBLEM,
    };
    static const uint16_t frames[] = {
        MIG2_FRAME_SRC_HELLO, MIG2_FRAME_DST_HELLO, MIG2_FRAME_FINISHED,
        MIG2_FRAME_READY, MIG2_FRAME_ERROR,
    };
    unsigned v, named = 0;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(tlvs) / sizeof(tlvs[0]); i++) {
        assert_false(mig2_is_grease(tlvs[i]));
        assert_false(mig2_is_grease((uint16_t)(tlvs[i] |
                                               MIG2_TLV_CRITICAL)));
    }
    for (i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
        assert_false(mig2_is_grease(frames[i]));
    }
    /* Every id with a registered feature name. */
    for (v = 0; v <= 0xffff; v++) {
        if (mig2_feature_name((uint16_t)v)) {
            named++;
            assert_false(mig2_is_grease((uint16_t)v));
            assert_int_equal(mig2_feature_by_name(mig2_feature_name(
                                 (uint16_t)v)), v);
        }
    }
    assert_int_equal(named, MIG2_FEAT_DEVICE_STATE_VERSIONS);
    assert_null(mig2_feature_name(0));
    assert_int_equal(mig2_feature_by_name("no-such-feature"), 0);
}

static void test_stream_detect(void **state)
{
    static const struct {
        uint8_t b[MIG2_PREAMBLE_LEN];
        Mig2StreamKind kind;
    } cases[] = {
        { { 'Q', 'E', 'V', 'M', 0, 0, 0, 3 }, MIG2_STREAM_LEGACY },
        { { 'Q', 'E', 'V', 'M', 0, 0, 0, 4 }, MIG2_STREAM_HANDSHAKE },
        { { 'Q', 'E', 'V', 'M', 0, 0, 0, 0 }, MIG2_STREAM_OTHER_VERSION },
        { { 'Q', 'E', 'V', 'M', 0, 0, 0, 2 }, MIG2_STREAM_OTHER_VERSION },
        { { 'Q', 'E', 'V', 'M', 0, 0, 0, 5 }, MIG2_STREAM_OTHER_VERSION },
        { { 'Q', 'E', 'V', 'M', 1, 0, 0, 4 }, MIG2_STREAM_OTHER_VERSION },
        { { 'Q', 'E', 'V', 'M', 0, 0, 1, 3 }, MIG2_STREAM_OTHER_VERSION },
        { { 'Q', 'E', 'V', 'M', 0xff, 0xff, 0xff, 0xff },
          MIG2_STREAM_OTHER_VERSION },
        { { 'q', 'E', 'V', 'M', 0, 0, 0, 4 }, MIG2_STREAM_UNKNOWN },
        { { 'Q', 'E', 'V', 'N', 0, 0, 0, 3 }, MIG2_STREAM_UNKNOWN },
        { { 'M', 'I', 'G', '2', 0, 0, 0, 4 }, MIG2_STREAM_UNKNOWN },
        { { 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 4 }, MIG2_STREAM_UNKNOWN },
        { { 0, 0, 0, 0, 0, 0, 0, 0 }, MIG2_STREAM_UNKNOWN },
        { { 'M', 'V', 'E', 'Q', 0, 0, 0, 4 }, MIG2_STREAM_UNKNOWN },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(mig2_stream_detect(cases[i].b), cases[i].kind);
    }
}

int main(void)
{
    const struct CMUnitTest scalars[] = {
        cmocka_unit_test(test_u8_round_trip),
        cmocka_unit_test(test_u16_round_trip),
        cmocka_unit_test(test_u32_round_trip),
        cmocka_unit_test(test_u64_round_trip),
        cmocka_unit_test(test_bytes_round_trip),
    };
    const struct CMUnitTest strings[] = {
        cmocka_unit_test(test_str8_round_trip),
        cmocka_unit_test(test_str16_bounds),
        cmocka_unit_test(test_str_read_rejects),
        cmocka_unit_test(test_str_write_rejects),
        cmocka_unit_test(test_utf8_valid_forms),
        cmocka_unit_test(test_utf8_invalid_forms),
    };
    const struct CMUnitTest reader[] = {
        cmocka_unit_test(test_truncated_getters),
        cmocka_unit_test(test_rd_end_trailing),
        cmocka_unit_test(test_rd_null_empty),
        cmocka_unit_test(test_sub_reader_bound),
        cmocka_unit_test(test_tlv_value_bounded),
    };
    const struct CMUnitTest writer[] = {
        cmocka_unit_test(test_writer_max_sticky),
        cmocka_unit_test(test_writer_first_error_kept),
        cmocka_unit_test(test_writer_grows_to_max),
    };
    const struct CMUnitTest framing[] = {
        cmocka_unit_test(test_tlv_nested_lengths),
        cmocka_unit_test(test_tlv_zero_length),
        cmocka_unit_test(test_tlv_critical_bit),
        cmocka_unit_test(test_tlv_truncated),
        cmocka_unit_test(test_frame_exact_bytes),
        cmocka_unit_test(test_frame_header_parse),
        cmocka_unit_test(test_frame_end_too_large),
    };
    const struct CMUnitTest wire[] = {
        cmocka_unit_test(test_grease_patterns),
        cmocka_unit_test(test_grease_never_registered),
        cmocka_unit_test(test_stream_detect),
    };
    int failed = 0;

    failed += cmocka_run_group_tests_name("scalars", scalars, NULL, NULL);
    failed += cmocka_run_group_tests_name("strings", strings, NULL, NULL);
    failed += cmocka_run_group_tests_name("reader", reader, NULL, NULL);
    failed += cmocka_run_group_tests_name("writer", writer, NULL, NULL);
    failed += cmocka_run_group_tests_name("framing", framing, NULL, NULL);
    failed += cmocka_run_group_tests_name("wire", wire, NULL, NULL);
    return failed ? 1 : 0;
}
