/*
 * Test harness shared by the engine and negotiation suites: byte
 * buffers, frame splitting, and the state of one engine in a pair.
 * Include after <cmocka.h> and "internal.h".  Everything is static inline
 * so a suite may use only part of it.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_TEST_HARNESS_H
#define MIG2_TEST_HARNESS_H

typedef struct Buf {
    uint8_t *p;
    size_t len, cap;
} Buf;

static inline void buf_add(Buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;

        while (cap < b->len + n) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
}

static inline void buf_free(Buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static inline void put_be16(Buf *b, uint16_t v)
{
    uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };

    buf_add(b, x, 2);
}

static inline void put_be32(Buf *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
                     (uint8_t)(v >> 8), (uint8_t)v };

    buf_add(b, x, 4);
}

static inline void put_frame(Buf *b, uint16_t type, uint16_t flags,
                             const void *payload, uint32_t len)
{
    put_be16(b, type);
    put_be16(b, flags);
    put_be32(b, len);
    buf_add(b, payload, len);
}

typedef struct Frame {
    uint16_t type;
    uint16_t flags;
    uint32_t len;
    const uint8_t *start;       /* header */
    const uint8_t *payload;
} Frame;

#define MAX_FRAMES 16

/* Split @buf into frames; it must hold whole frames only. */
static inline size_t frames_of(const uint8_t *buf, size_t len, Frame *f,
                               size_t max)
{
    size_t off = 0, n = 0;

    while (off < len) {
        assert_true(len - off >= MIG2_FRAME_HEADER_LEN);
        assert_true(n < max);
        f[n].type = (uint16_t)(buf[off] << 8 | buf[off + 1]);
        f[n].flags = (uint16_t)(buf[off + 2] << 8 | buf[off + 3]);
        f[n].len = (uint32_t)buf[off + 4] << 24 |
                   (uint32_t)buf[off + 5] << 16 |
                   (uint32_t)buf[off + 6] << 8 | buf[off + 7];
        f[n].start = buf + off;
        f[n].payload = buf + off + MIG2_FRAME_HEADER_LEN;
        assert_true(len - off - MIG2_FRAME_HEADER_LEN >= f[n].len);
        off += MIG2_FRAME_HEADER_LEN + f[n].len;
        n++;
    }
    return n;
}

#define MAX_EV 16

/* One engine of a pair, and what it did. */
typedef struct Side {
    Mig2Engine *e;
    Mig2EventType ev[MAX_EV];
    const Mig2Error *ev_err[MAX_EV];
    size_t n_ev;
    ssize_t rc;         /* first negative recv() result, 0 if none */
    size_t left;        /* bytes recv() left to the caller */
    Buf sent;           /* every byte this side queued */
} Side;

typedef struct Pair {
    Side s;
    Side d;
} Pair;

static inline void drain_events(Side *s)
{
    Mig2Event ev;

    while (mig2_engine_next_event(s->e, &ev)) {
        assert_true(s->n_ev < MAX_EV);
        s->ev[s->n_ev] = ev.type;
        s->ev_err[s->n_ev] = ev.error;
        s->n_ev++;
    }
}

static inline void assert_problem(const Mig2Error *err, size_t i,
                                  unsigned kind, const char *path,
                                  const char *expected, const char *actual)
{
    assert_true(i < err->n_problems);
    assert_string_equal(mig2_problem_kind_name(err->problems[i].kind),
                        mig2_problem_kind_name(kind));
    assert_int_equal(err->problems[i].kind, kind);
    assert_string_equal(err->problems[i].path, path);
    assert_string_equal(err->problems[i].expected, expected);
    assert_string_equal(err->problems[i].actual, actual);
}

#endif /* MIG2_TEST_HARNESS_H */
