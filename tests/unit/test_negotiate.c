/*
 * test_negotiate - negotiation and the compatibility check, end to end
 *
 * A source and a destination engine run back to back in memory: pump()
 * moves each side's queued output into the other (whole, or in chunks to
 * exercise reassembly) and records events.  Every test looks at what both
 * sides concluded and at the ERROR frame the destination put on the wire.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#include "harness.h"

/* Chunk sizes for pump(): whole buffers, single bytes, 7 bytes. */
static const size_t chunks[] = { 0, 1, 7 };
#define N_CHUNKS (sizeof(chunks) / sizeof(chunks[0]))

/* ---------------------------------------------------------------- */
/* Byte buffers and frames                                           */
/* ---------------------------------------------------------------- */

/* Like frames_of(), leaving out grease frames. */
static size_t real_frames_of(const uint8_t *buf, size_t len, Frame *f,
                             size_t max)
{
    Frame all[MAX_FRAMES];
    size_t n = frames_of(buf, len, all, MAX_FRAMES), i, k = 0;

    for (i = 0; i < n; i++) {
        if (mig2_is_grease(all[i].type)) {
            assert_int_equal(all[i].flags, 0);
            assert_in_range(all[i].len, 0, 15);
            continue;
        }
        assert_true(k < max);
        f[k++] = all[i];
    }
    return k;
}

/* ---------------------------------------------------------------- */
/* Two engines back to back                                          */
/* ---------------------------------------------------------------- */

/* Move @from's queued output into @to, @chunk bytes per recv (0: all). */
static bool move(Side *from, Side *to, size_t chunk)
{
    size_t len, off = 0;
    const uint8_t *out = mig2_engine_output(from->e, &len);
    bool failed = false;

    if (!len) {
        return false;
    }
    buf_add(&from->sent, out, len);
    while (off < len && mig2_engine_state(to->e) == MIG2_STATE_RUNNING) {
        size_t n = chunk && chunk < len - off ? chunk : len - off;
        ssize_t r = mig2_engine_recv(to->e, out + off, n);

        if (r < 0) {
            if (!to->rc) {
                to->rc = r;
            }
            failed = true;
            break;
        }
        assert_true((size_t)r <= n);
        off += (size_t)r;
        if ((size_t)r < n) {
            break;
        }
    }
    if (!failed) {
        to->left += len - off;
    }
    mig2_engine_output_consumed(from->e, len);
    drain_events(to);
    drain_events(from);
    return true;
}

/* Shuttle bytes both ways until neither side has anything to send. */
static void pump(Side *src, Side *dst, size_t chunk)
{
    bool moved;

    do {
        moved = move(src, dst, chunk);
        moved = move(dst, src, chunk) || moved;
    } while (moved);
}

static void pair_start(Pair *p, const Mig2Profile *sp, const Mig2Profile *dp)
{
    int rc = -1;

    memset(p, 0, sizeof(*p));
    p->s.e = mig2_engine_new(MIG2_ROLE_SOURCE, sp, NULL, &rc);
    assert_non_null(p->s.e);
    assert_int_equal(rc, MIG2_OK);
    rc = -1;
    p->d.e = mig2_engine_new(MIG2_ROLE_DESTINATION, dp, NULL, &rc);
    assert_non_null(p->d.e);
    assert_int_equal(rc, MIG2_OK);
}

static void pair_run(Pair *p, const Mig2Profile *sp, const Mig2Profile *dp,
                     size_t chunk)
{
    pair_start(p, sp, dp);
    pump(&p->s, &p->d, chunk);
}

static void pair_free(Pair *p)
{
    mig2_engine_free(p->s.e);
    mig2_engine_free(p->d.e);
    free(p->s.sent.p);
    free(p->d.sent.p);
    memset(p, 0, sizeof(*p));
}

/* ---------------------------------------------------------------- */
/* Profiles                                                          */
/* ---------------------------------------------------------------- */

#define MACHINE "pc-q35-8.2"

/* Machine, one RAM block and one device, identical on both sides. */
static Mig2Profile *base_profile(bool source)
{
    Mig2Profile *p = mig2_profile_new();
    int dev;

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_build(p, source ? "test-src 1"
                                                      : "test-dst 1"),
                     MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(p, MACHINE), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 1ULL << 30,
                                                4096), MIG2_OK);
    dev = mig2_profile_add_device(p, "timer", 0, 1, 2);
    assert_true(dev >= 0);
    assert_int_equal(mig2_profile_add_subsection(p, dev, "irq", false),
                     MIG2_OK);
    return p;
}

static int add_dev(Mig2Profile *p, const char *id, uint32_t inst,
                   uint32_t vmin, uint32_t vmax)
{
    int dev = mig2_profile_add_device(p, id, inst, vmin, vmax);

    assert_true(dev >= 0);
    return dev;
}

static void add_sub(Mig2Profile *p, int dev, const char *name, bool needed)
{
    assert_int_equal(mig2_profile_add_subsection(p, dev, name, needed),
                     MIG2_OK);
}

/* ---------------------------------------------------------------- */
/* Assertions                                                        */
/* ---------------------------------------------------------------- */

/* Same code, message and problem list (from_peer aside). */
static void assert_same_error(const Mig2Error *a, const Mig2Error *b)
{
    size_t i;

    assert_int_equal(a->code, b->code);
    assert_int_equal(a->retryable, b->retryable);
    assert_string_equal(a->message, b->message);
    assert_int_equal(a->n_problems, b->n_problems);
    for (i = 0; i < a->n_problems; i++) {
        assert_problem(b, i, a->problems[i].kind, a->problems[i].path,
                       a->problems[i].expected, a->problems[i].actual);
    }
}

static void assert_complete(const Pair *p)
{
    const Side *sides[2] = { &p->s, &p->d };
    int i;

    for (i = 0; i < 2; i++) {
        const Side *s = sides[i];

        assert_int_equal(mig2_engine_state(s->e), MIG2_STATE_COMPLETE);
        assert_null(mig2_engine_error(s->e));
        assert_int_equal(s->rc, 0);
        assert_int_equal(s->left, 0);
        assert_int_equal(s->n_ev, 2);
        assert_int_equal(s->ev[0], MIG2_EV_NEGOTIATED);
        assert_int_equal(s->ev[1], MIG2_EV_COMPLETE);
        assert_true(mig2_result_ready(s->e));
    }
    assert_int_equal(mig2_result_revision(p->s.e),
                     mig2_result_revision(p->d.e));
    assert_memory_equal(mig2_result_transcript_hash(p->s.e),
                        mig2_result_transcript_hash(p->d.e), MIG2_HASH_LEN);
    assert_memory_equal(mig2_result_channel_key(p->s.e),
                        mig2_result_channel_key(p->d.e), MIG2_HASH_LEN);
    assert_memory_equal(mig2_result_session_id(p->s.e),
                        mig2_result_session_id(p->d.e), MIG2_SESSION_ID_LEN);
}

/*
 * The destination refused with local status @rc and wire @code; the source
 * got the same error as REJECTED and sent nothing after its first flight.
 * Returns the destination's error.
 */
static const Mig2Error *assert_dst_refused(const Pair *p, int rc,
                                           uint32_t code)
{
    const Mig2Error *de = mig2_engine_error(p->d.e);
    const Mig2Error *se = mig2_engine_error(p->s.e);
    Frame f[MAX_FRAMES];
    Mig2Error wire = { 0 };
    size_t n;

    /* Destination: failed locally, event FAILED. */
    assert_int_equal(p->d.rc, rc);
    assert_int_equal(mig2_engine_state(p->d.e), MIG2_STATE_FAILED);
    assert_non_null(de);
    assert_false(de->from_peer);
    assert_int_equal(de->code, code);
    assert_int_equal(p->d.n_ev, 1);
    assert_int_equal(p->d.ev[0], MIG2_EV_FAILED);
    assert_ptr_equal(p->d.ev_err[0], de);

    /* On the wire: [DST_HELLO,] ERROR, never FINISHED. */
    n = real_frames_of(p->d.sent.p, p->d.sent.len, f, MAX_FRAMES);
    if (rc == MIG2_ERR_INCOMPATIBLE) {
        assert_int_equal(n, 2);
        assert_int_equal(f[0].type, MIG2_FRAME_DST_HELLO);
        assert_int_equal(f[1].type, MIG2_FRAME_ERROR);
    } else {
        /* Nothing else, not even a grease frame. */
        assert_int_equal(frames_of(p->d.sent.p, p->d.sent.len, f,
                                   MAX_FRAMES), 1);
        n = 1;
        assert_int_equal(f[0].type, MIG2_FRAME_ERROR);
    }
    assert_int_equal(f[n - 1].flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(mig2_error_decode(f[n - 1].payload, f[n - 1].len,
                                       &wire), MIG2_OK);
    assert_same_error(de, &wire);
    mig2_error_clear(&wire);

    /* Source: the peer's error, event REJECTED, no answer. */
    assert_int_equal(p->s.rc, 0);
    assert_int_equal(mig2_engine_state(p->s.e), MIG2_STATE_FAILED);
    assert_non_null(se);
    assert_true(se->from_peer);
    assert_int_equal(p->s.n_ev, 1);
    assert_int_equal(p->s.ev[0], MIG2_EV_REJECTED);
    assert_ptr_equal(p->s.ev_err[0], se);
    assert_same_error(de, se);
    assert_true(p->s.sent.len > MIG2_PREAMBLE_LEN);
    n = real_frames_of(p->s.sent.p + MIG2_PREAMBLE_LEN,
                       p->s.sent.len - MIG2_PREAMBLE_LEN, f, MAX_FRAMES);
    assert_int_equal(n, 1);
    assert_int_equal(f[0].type, MIG2_FRAME_SRC_HELLO);
    return de;
}

/* The ERROR message the destination builds from its problem list. */
static void assert_summary(const Mig2Error *err)
{
    char want[1024];
    size_t n = err->n_problems;

    assert_true(n > 0);
    snprintf(want, sizeof(want),
             "destination found %zu problem%s; first: %s %s: expected %s, "
             "got %s", n, n == 1 ? "" : "s",
             mig2_problem_kind_name(err->problems[0].kind),
             err->problems[0].path, err->problems[0].expected,
             err->problems[0].actual);
    assert_string_equal(err->message, want);
}

/* Run @sp against @dp and expect exactly one compatibility problem. */
static void expect_one_problem(const Mig2Profile *sp, const Mig2Profile *dp,
                               unsigned kind, const char *path,
                               const char *expected, const char *actual)
{
    const Mig2Error *err;
    Pair p;
    size_t c;

    for (c = 0; c < N_CHUNKS; c++) {
        pair_run(&p, sp, dp, chunks[c]);
        err = assert_dst_refused(&p, MIG2_ERR_INCOMPATIBLE,
                                 MIG2_WIRE_INCOMPATIBLE);
        assert_int_equal(err->n_problems, 1);
        assert_problem(err, 0, kind, path, expected, actual);
        assert_summary(err);
        pair_free(&p);
    }
}

/* ---------------------------------------------------------------- */
/* Revisions                                                         */
/* ---------------------------------------------------------------- */

static void test_revision_matrix(void **state)
{
    static const uint16_t ranges[3][2] = { { 1, 1 }, { 1, 2 }, { 2, 2 } };
    Frame f[MAX_FRAMES];
    size_t c, i, j, n;
    char want[16], got[16];

    (void)state;
    for (c = 0; c < N_CHUNKS; c++) {
        for (i = 0; i < 3; i++) {
            for (j = 0; j < 3; j++) {
                Mig2Profile *sp = base_profile(true);
                Mig2Profile *dp = base_profile(false);
                uint16_t smin = ranges[i][0], smax = ranges[i][1];
                uint16_t dmin = ranges[j][0], dmax = ranges[j][1];
                uint16_t lo = smin > dmin ? smin : dmin;
                uint16_t hi = smax < dmax ? smax : dmax;
                uint16_t a, b;
                Pair p;

                assert_int_equal(mig2_profile_set_revisions(sp, smin, smax),
                                 MIG2_OK);
                assert_int_equal(mig2_profile_set_revisions(dp, dmin, dmax),
                                 MIG2_OK);
                pair_run(&p, sp, dp, chunks[c]);

                if (hi < lo) {
                    const Mig2Error *err = assert_dst_refused(
                        &p, MIG2_ERR_NO_REVISION,
                        MIG2_WIRE_UNSUPPORTED_REVISION);

                    snprintf(want, sizeof(want), "%u..%u", dmin, dmax);
                    snprintf(got, sizeof(got), "%u..%u", smin, smax);
                    assert_int_equal(err->n_problems, 1);
                    assert_problem(err, 0, MIG2_PROB_REVISION, "revision",
                                   want, got);
                    assert_int_equal(mig2_result_revision(p.s.e), 0);
                    assert_int_equal(mig2_result_revision(p.d.e), 0);
                } else {
                    assert_complete(&p);
                    mig2_result_peer_revisions(p.d.e, &a, &b);
                    assert_int_equal(a, smin);
                    assert_int_equal(b, smax);
                    assert_int_equal(mig2_result_revision(p.s.e), hi);
                    assert_int_equal(mig2_result_revision(p.d.e), hi);
                    assert_int_equal(mig2_result_round_trips(p.s.e),
                                     hi == 2 ? 1 : 2);
                    assert_int_equal(mig2_result_round_trips(p.d.e),
                                     hi == 2 ? 1 : 2);
                    mig2_result_peer_revisions(p.s.e, &a, &b);
                    assert_int_equal(a, dmin);
                    assert_int_equal(b, dmax);
                    assert_string_equal(mig2_result_peer_build(p.s.e),
                                        "test-dst 1");
                    assert_string_equal(mig2_result_peer_build(p.d.e),
                                        "test-src 1");
                    /* Revision 1 ends with READY, revision 2 does not. */
                    n = real_frames_of(p.d.sent.p, p.d.sent.len, f,
                                       MAX_FRAMES);
                    assert_int_equal(n, hi == 1 ? 3 : 2);
                    assert_int_equal(f[0].type, MIG2_FRAME_DST_HELLO);
                    assert_int_equal(f[1].type, MIG2_FRAME_FINISHED);
                    if (hi == 1) {
                        assert_int_equal(f[2].type, MIG2_FRAME_READY);
                        assert_int_equal(f[2].len, 0);
                    }
                }
                pair_free(&p);
                mig2_profile_free(sp);
                mig2_profile_free(dp);
            }
        }
    }
}

/* A source from the future (3..4) meets a 1..2 destination. */
static void test_revision_none_in_common(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    const Mig2Error *err;
    Pair p;

    (void)state;
    sp->rev_min = 3;    /* the profile API stops at MIG2_REVISION_MAX */
    sp->rev_max = 4;
    pair_run(&p, sp, dp, 0);
    err = assert_dst_refused(&p, MIG2_ERR_NO_REVISION,
                             MIG2_WIRE_UNSUPPORTED_REVISION);
    assert_string_equal(err->message,
                        "no common protocol revision: destination supports "
                        "1..2, source offers 3..4");
    assert_int_equal(err->n_problems, 1);
    assert_problem(err, 0, MIG2_PROB_REVISION, "revision", "1..2", "3..4");
    assert_string_equal(mig2_wire_error_name(err->code),
                        "unsupported-revision");
    pair_free(&p);

    /* And the other way round: a destination that only speaks 3..4. */
    assert_int_equal(mig2_profile_set_revisions(sp, 1, 2), MIG2_OK);
    dp->rev_min = 3;
    dp->rev_max = 4;
    pair_run(&p, sp, dp, 0);
    err = assert_dst_refused(&p, MIG2_ERR_NO_REVISION,
                             MIG2_WIRE_UNSUPPORTED_REVISION);
    assert_problem(err, 0, MIG2_PROB_REVISION, "revision", "3..4", "1..2");
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/*
 * The revision is settled from the first TLV before anything else: a
 * future source's SRC_HELLO may carry TLVs this destination cannot parse
 * (here a critical unknown one) and still gets unsupported-revision.
 * From a source in range, the same TLV is an unknown-critical error.
 */
static void test_revision_before_rest(void **state)
{
    static const uint8_t crit_tlv[] = { 0x81, 0x23, 0, 0, 0, 2, 'h', 'i' };
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    Frame f[MAX_FRAMES];
    int future;

    (void)state;
    for (future = 0; future < 2; future++) {
        Mig2Engine *s, *d;
        const Mig2Error *err;
        Mig2Error wire = { 0 };
        const uint8_t *out;
        size_t len, n, hello;
        Buf b = { 0 };
        Mig2Event ev;
        uint32_t plen;

        sp->rev_min = future ? 3 : 1;
        sp->rev_max = future ? 4 : 2;
        s = mig2_engine_new(MIG2_ROLE_SOURCE, sp, NULL, NULL);
        d = mig2_engine_new(MIG2_ROLE_DESTINATION, dp, NULL, NULL);
        assert_non_null(s);
        assert_non_null(d);
        out = mig2_engine_output(s, &len);
        n = frames_of(out + MIG2_PREAMBLE_LEN, len - MIG2_PREAMBLE_LEN, f,
                      MAX_FRAMES);
        assert_int_equal(n, 2);
        assert_int_equal(f[1].type, MIG2_FRAME_SRC_HELLO);
        /* Preamble and grease as sent, SRC_HELLO with one TLV more. */
        hello = (size_t)(f[1].payload - out) - MIG2_FRAME_HEADER_LEN;
        buf_add(&b, out, hello + 4);
        plen = f[1].len + sizeof(crit_tlv);
        buf_add(&b, (uint8_t[4]){ (uint8_t)(plen >> 24), (uint8_t)(plen >> 16),
                                  (uint8_t)(plen >> 8), (uint8_t)plen }, 4);
        buf_add(&b, f[1].payload, f[1].len);
        buf_add(&b, crit_tlv, sizeof(crit_tlv));
        assert_int_equal(mig2_engine_recv(d, b.p, b.len),
                         future ? MIG2_ERR_NO_REVISION
                                : MIG2_ERR_UNKNOWN_CRITICAL);
        err = mig2_engine_error(d);
        assert_non_null(err);
        assert_true(mig2_engine_next_event(d, &ev));
        assert_int_equal(ev.type, MIG2_EV_FAILED);
        assert_int_equal(err->n_problems, 1);
        if (future) {
            assert_int_equal(err->code, MIG2_WIRE_UNSUPPORTED_REVISION);
            assert_problem(err, 0, MIG2_PROB_REVISION, "revision", "1..2",
                           "3..4");
        } else {
            assert_int_equal(err->code, MIG2_WIRE_UNKNOWN_CRITICAL);
            assert_problem(err, 0, MIG2_PROB_UNKNOWN_CRITICAL,
                           "src-hello/tlv/0x8123", "a known type",
                           "critical type 0x8123");
        }
        /* Only the ERROR goes back. */
        out = mig2_engine_output(d, &len);
        assert_int_equal(frames_of(out, len, f, MAX_FRAMES), 1);
        assert_int_equal(f[0].type, MIG2_FRAME_ERROR);
        assert_int_equal(mig2_error_decode(f[0].payload, f[0].len, &wire),
                         MIG2_OK);
        assert_int_equal(wire.code, err->code);
        assert_string_equal(wire.problems[0].path, err->problems[0].path);
        mig2_error_clear(&wire);
        free(b.p);
        mig2_engine_free(s);
        mig2_engine_free(d);
    }
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* A source that also knows a future revision settles on 2. */
static void test_revision_future_source(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    uint16_t a, b;
    Pair p;

    (void)state;
    sp->rev_min = 1;
    sp->rev_max = 5;
    pair_run(&p, sp, dp, 0);
    assert_complete(&p);
    assert_int_equal(mig2_result_revision(p.s.e), 2);
    assert_int_equal(mig2_result_round_trips(p.s.e), 1);
    mig2_result_peer_revisions(p.d.e, &a, &b);
    assert_int_equal(a, 1);
    assert_int_equal(b, 5);
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Features                                                          */
/* ---------------------------------------------------------------- */

#define MAX_IDS 12

/* Zero-terminated id lists; the expected ones sorted ascending. */
typedef struct FeatCase {
    uint16_t src[MAX_IDS];
    uint16_t dst[MAX_IDS];
    uint16_t common[MAX_IDS];
    uint16_t src_only[MAX_IDS];
    uint16_t dst_only[MAX_IDS];
} FeatCase;

static int cmp_u16(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;

    return x < y ? -1 : x > y;
}

static size_t id_count(const uint16_t *ids)
{
    size_t n = 0;

    while (ids[n]) {
        n++;
    }
    return n;
}

/* The set @ids[0..n) equals the sorted, zero-terminated @want. */
static void assert_ids(const uint16_t *ids, size_t n, const uint16_t *want)
{
    uint16_t sorted[MAX_IDS];

    assert_int_equal(n, id_count(want));
    assert_true(n <= MAX_IDS);
    if (n) {
        memcpy(sorted, ids, n * sizeof(*ids));
        qsort(sorted, n, sizeof(*sorted), cmp_u16);
        assert_memory_equal(sorted, want, n * sizeof(*want));
    }
}

static bool id_in(const uint16_t *ids, uint16_t id)
{
    size_t i;

    for (i = 0; ids[i]; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

static void test_feature_sets(void **state)
{
    static const FeatCase cases[] = {
        /* disjoint */
        { { 1, 2 }, { 3, 4 }, { 0 }, { 1, 2 }, { 3, 4 } },
        /* source's set inside the destination's */
        { { 2 }, { 1, 2, 3 }, { 2 }, { 0 }, { 1, 3 } },
        /* destination's set inside the source's, with an unregistered id */
        { { 1, 0x0123, 2, 3 }, { 3 }, { 3 }, { 1, 2, 0x0123 }, { 0 } },
        /* equal, in different orders */
        { { 1, 2, 3, 4, 5, 6, 7, 8 }, { 8, 7, 6, 5, 4, 3, 2, 1 },
          { 1, 2, 3, 4, 5, 6, 7, 8 }, { 0 }, { 0 } },
        /* both empty */
        { { 0 }, { 0 }, { 0 }, { 0 }, { 0 } },
        /* one empty */
        { { 0 }, { 5, 6 }, { 0 }, { 0 }, { 5, 6 } },
        { { 5, 6 }, { 0 }, { 0 }, { 5, 6 }, { 0 } },
        /* overlapping */
        { { 8, 1, 5 }, { 5, 7, 8 }, { 5, 8 }, { 1 }, { 7 } },
    };
    size_t k, i;

    (void)state;
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const FeatCase *fc = &cases[k];
        Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
        const uint16_t *ids, *mirror;
        size_t n, m;
        Pair p;

        for (i = 0; fc->src[i]; i++) {
            assert_int_equal(mig2_profile_add_feature(sp, fc->src[i], false),
                             MIG2_OK);
        }
        for (i = 0; fc->dst[i]; i++) {
            assert_int_equal(mig2_profile_add_feature(dp, fc->dst[i], false),
                             MIG2_OK);
        }
        pair_run(&p, sp, dp, chunks[k % N_CHUNKS]);
        assert_complete(&p);

        n = mig2_result_features(p.s.e, MIG2_FEATURES_COMMON, &ids);
        assert_ids(ids, n, fc->common);
        n = mig2_result_features(p.d.e, MIG2_FEATURES_COMMON, &ids);
        assert_ids(ids, n, fc->common);
        n = mig2_result_features(p.s.e, MIG2_FEATURES_PEER_LACKS, &ids);
        assert_ids(ids, n, fc->src_only);
        n = mig2_result_features(p.s.e, MIG2_FEATURES_LOCAL_LACKS, &ids);
        assert_ids(ids, n, fc->dst_only);
        n = mig2_result_features(p.d.e, MIG2_FEATURES_PEER_LACKS, &ids);
        assert_ids(ids, n, fc->dst_only);
        n = mig2_result_features(p.d.e, MIG2_FEATURES_LOCAL_LACKS, &ids);
        assert_ids(ids, n, fc->src_only);

        /* Mirror images, down to the order (the owner's announcement). */
        n = mig2_result_features(p.s.e, MIG2_FEATURES_PEER_LACKS, &ids);
        m = mig2_result_features(p.d.e, MIG2_FEATURES_LOCAL_LACKS, &mirror);
        assert_int_equal(n, m);
        if (n) {
            assert_memory_equal(ids, mirror, n * sizeof(*ids));
        }
        n = mig2_result_features(p.s.e, MIG2_FEATURES_LOCAL_LACKS, &ids);
        m = mig2_result_features(p.d.e, MIG2_FEATURES_PEER_LACKS, &mirror);
        assert_int_equal(n, m);
        if (n) {
            assert_memory_equal(ids, mirror, n * sizeof(*ids));
        }

        for (i = 1; i <= 9; i++) {
            assert_int_equal(mig2_result_has_feature(p.s.e, (uint16_t)i),
                             id_in(fc->common, (uint16_t)i));
            assert_int_equal(mig2_result_has_feature(p.d.e, (uint16_t)i),
                             id_in(fc->common, (uint16_t)i));
        }
        assert_false(mig2_result_has_feature(p.s.e, 0x0a0a));
        n = mig2_result_features(p.s.e, (Mig2FeatureSet)3, &ids);
        assert_int_equal(n, 0);
        assert_null(ids);
        pair_free(&p);
        mig2_profile_free(sp);
        mig2_profile_free(dp);
    }
}

static void test_feature_required(void **state)
{
    Mig2Profile *sp, *dp;
    const Mig2Error *err;
    Pair p;

    (void)state;
    /* Both have the required feature: fine. */
    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_POSTCOPY, true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(dp, MIG2_FEAT_POSTCOPY, false),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(dp, MIG2_FEAT_ZERO_PAGE, true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_ZERO_PAGE, false),
                     MIG2_OK);
    pair_run(&p, sp, dp, 0);
    assert_complete(&p);
    assert_true(mig2_result_has_feature(p.s.e, MIG2_FEAT_POSTCOPY));
    assert_true(mig2_result_has_feature(p.d.e, MIG2_FEAT_ZERO_PAGE));
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    /* The source requires what the destination lacks. */
    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_POSTCOPY, true),
                     MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_FEATURE_REQUIRED,
                       "features/postcopy", "present", "absent");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    /* The destination requires what the source lacks. */
    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_add_feature(dp, MIG2_FEAT_SWITCHOVER_ACK,
                                              true), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_POSTCOPY, false),
                     MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_FEATURE_REQUIRED,
                       "features/switchover-ack", "present", "absent");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    /* An unregistered feature is named by its number. */
    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_add_feature(sp, 0x0123, true), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_FEATURE_REQUIRED,
                       "features/0x0123", "present", "absent");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    /* Both at once: the destination's own requirements come first. */
    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_MULTICHANNEL,
                                              true), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_TLS_BINDING,
                                              true), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(dp, MIG2_FEAT_RETURN_PATH,
                                              true), MIG2_OK);
    pair_run(&p, sp, dp, 7);
    err = assert_dst_refused(&p, MIG2_ERR_INCOMPATIBLE,
                             MIG2_WIRE_INCOMPATIBLE);
    assert_int_equal(err->n_problems, 3);
    assert_problem(err, 0, MIG2_PROB_FEATURE_REQUIRED, "features/return-path",
                   "present", "absent");
    assert_problem(err, 1, MIG2_PROB_FEATURE_REQUIRED,
                   "features/multichannel", "present", "absent");
    assert_problem(err, 2, MIG2_PROB_FEATURE_REQUIRED, "features/tls-binding",
                   "present", "absent");
    assert_string_equal(err->message,
                        "destination found 3 problems; first: "
                        "feature-required features/return-path: expected "
                        "present, got absent");
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Configuration                                                     */
/* ---------------------------------------------------------------- */

#define V_BOOL(x) ((Mig2ConfigValue){ .type = MIG2_CFG_BOOL, .b = (x) })
#define V_U64(x) ((Mig2ConfigValue){ .type = MIG2_CFG_U64, .u = (x) })
#define V_STR(x) ((Mig2ConfigValue){ .type = MIG2_CFG_STR, .s = (x) })

static void assert_value(const Mig2ConfigValue *got,
                         const Mig2ConfigValue *want)
{
    assert_int_equal(got->type, want->type);
    switch (want->type) {
    case MIG2_CFG_BOOL:
        assert_int_equal(got->b, want->b);
        break;
    case MIG2_CFG_U64:
        assert_int_equal(got->u, want->u);
        break;
    case MIG2_CFG_STR:
        assert_non_null(got->s);
        assert_string_equal(got->s, want->s);
        break;
    }
}

typedef struct CfgWant {
    const char *name;
    Mig2ConfigValue proposed;
    Mig2ConfigValue final;
    Mig2ConfigStatus status;
    bool required;
} CfgWant;

/* Both sides report exactly @want, in proposal order. */
static void assert_config(const Pair *p, const CfgWant *want, size_t n)
{
    const Mig2Engine *es[2] = { p->s.e, p->d.e };
    size_t i;
    int k;

    for (k = 0; k < 2; k++) {
        assert_int_equal(mig2_result_config_count(es[k]), n);
        assert_null(mig2_result_config(es[k], n));
        for (i = 0; i < n; i++) {
            const Mig2ConfigResult *r = mig2_result_config(es[k], i);

            assert_non_null(r);
            assert_ptr_equal(mig2_result_config_find(es[k], want[i].name), r);
            assert_string_equal(r->name, want[i].name);
            assert_value(&r->proposed, &want[i].proposed);
            assert_value(&r->final, &want[i].final);
            assert_string_equal(mig2_config_status_name(r->status),
                                mig2_config_status_name(want[i].status));
            assert_int_equal(r->required, want[i].required);
        }
    }
}

/* Propose every item of @want on @sp. */
static void propose(Mig2Profile *sp, const CfgWant *want, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        assert_int_equal(mig2_profile_add_config(sp, want[i].name,
                                                 &want[i].proposed,
                                                 want[i].required
                                                     ? MIG2_CONFIG_REQUIRED
                                                     : 0),
                         MIG2_OK);
    }
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Propose @want on @sp, run the handshake against @dp (@chunk bytes per
 * step, 0: whole), require it complete with exactly @want on both sides,
 * then free the pair and both profiles.
 */
static void negotiate_expect(Mig2Profile *sp, Mig2Profile *dp,
                             const CfgWant *want, size_t n, size_t chunk)
{
    Pair p;

    propose(sp, want, n);
    pair_run(&p, sp, dp, chunk);
    assert_complete(&p);
    assert_config(&p, want, n);
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_config_fresh_destination(void **state)
{
    const CfgWant want[] = {
        { "postcopy-ram", V_BOOL(true), V_BOOL(true), MIG2_CFG_ACCEPTED,
          false },
        { "multifd-channels", V_U64(16), V_U64(16), MIG2_CFG_ACCEPTED,
          true },
        { "multifd-compression", V_STR("zstd"), V_STR("zstd"),
          MIG2_CFG_ACCEPTED, false },
        { "max-bandwidth", V_U64(0), V_U64(0), MIG2_CFG_ACCEPTED, false },
        { "events", V_BOOL(false), V_BOOL(false), MIG2_CFG_ACCEPTED, true },
        { "downtime-limit", V_U64(UINT64_MAX), V_U64(UINT64_MAX),
          MIG2_CFG_ACCEPTED, false },
    };
    Mig2Profile *sp = base_profile(true);
    Mig2Profile *dp = mig2_profile_new();
    size_t c;
    Pair p;

    (void)state;
    /* A destination with nothing but its machine and manifest. */
    assert_int_equal(mig2_profile_set_machine(dp, MACHINE), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(dp, "pc.ram", 1ULL << 30,
                                                4096), MIG2_OK);
    add_sub(dp, add_dev(dp, "timer", 0, 1, 2), "irq", false);
    propose(sp, want, N_OF(want));
    for (c = 0; c < N_CHUNKS; c++) {
        pair_run(&p, sp, dp, chunks[c]);
        assert_complete(&p);
        assert_config(&p, want, N_OF(want));
        assert_null(mig2_result_config_find(p.s.e, "xbzrle"));
        assert_null(mig2_result_config_find(p.d.e, NULL));
        pair_free(&p);
    }
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* No proposal at all: no results. */
static void test_config_none(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    Pair p;

    (void)state;
    assert_int_equal(mig2_profile_policy_clamp(dp, "multifd-channels", 1),
                     MIG2_OK);
    pair_run(&p, sp, dp, 0);
    assert_complete(&p);
    assert_config(&p, NULL, 0);
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_config_clamp(void **state)
{
    const CfgWant want[] = {
        { "multifd-channels", V_U64(8), V_U64(4), MIG2_CFG_CLAMPED, false },
        { "downtime-limit", V_U64(200), V_U64(200), MIG2_CFG_ACCEPTED,
          false },
        { "max-bandwidth", V_U64(1000), V_U64(1000), MIG2_CFG_ACCEPTED,
          false },
        { "announce-initial", V_U64(UINT64_MAX), V_U64(0), MIG2_CFG_CLAMPED,
          false },
        /* No policy for this one. */
        { "x-max-dirty-rounds", V_U64(7), V_U64(7), MIG2_CFG_ACCEPTED,
          false },
    };
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_policy_clamp(dp, "multifd-channels", 4),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_clamp(dp, "downtime-limit", 500),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_clamp(dp, "max-bandwidth", 1000),
                     MIG2_OK);
    /* The second rule for a name replaces the first. */
    assert_int_equal(mig2_profile_policy_clamp(dp, "announce-initial", 9),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_clamp(dp, "announce-initial", 0),
                     MIG2_OK);
    /* Clamping a bool makes no sense. */
    assert_int_equal(mig2_profile_policy_clamp(dp, "postcopy-ram", 1),
                     MIG2_ERR_INVALID_ARG);
    negotiate_expect(sp, dp, want, N_OF(want), 1);
}

/*
 * multifd-channels has a registered maximum (255): a larger proposal is
 * clamped without any policy, a policy above it changes nothing, and a
 * REQUIRED proposal above it is refused with the maximum as expected.
 */
static void test_config_registered_max(void **state)
{
    static const struct {
        uint64_t proposed, policy, final;   /* policy 0: none */
        Mig2ConfigStatus status;
    } cases[] = {
        { 1000, 0, 255, MIG2_CFG_CLAMPED },
        { 256, 300, 255, MIG2_CFG_CLAMPED },
        { 255, 0, 255, MIG2_CFG_ACCEPTED },
        { 300, 100, 100, MIG2_CFG_CLAMPED },
    };
    Mig2Profile *sp, *dp;
    size_t i;

    (void)state;
    assert_int_equal(mig2_config_registry_find("multifd-channels")->max_u,
                     255);
    /* Items without one are never clamped by the registry. */
    assert_int_equal(mig2_config_registry_find("max-bandwidth")->max_u, 0);
    for (i = 0; i < N_OF(cases); i++) {
        CfgWant want[] = {
            { "multifd-channels", V_U64(cases[i].proposed),
              V_U64(cases[i].final), cases[i].status, false },
            { "max-bandwidth", V_U64(UINT64_MAX), V_U64(UINT64_MAX),
              MIG2_CFG_ACCEPTED, false },
        };

        sp = base_profile(true);
        dp = base_profile(false);
        if (cases[i].policy) {
            assert_int_equal(mig2_profile_policy_clamp(dp, "multifd-channels",
                                                       cases[i].policy),
                             MIG2_OK);
        }
        negotiate_expect(sp, dp, want, N_OF(want), 3);
    }

    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_propose_u64(sp, "multifd-channels", 1000,
                                              MIG2_CONFIG_REQUIRED), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_CONFIG_CLAMPED,
                       "config/multifd-channels", "at most 255", "1000");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_config_refuse(void **state)
{
    const CfgWant want[] = {
        { "postcopy-ram", V_BOOL(true), V_BOOL(false), MIG2_CFG_REFUSED,
          false },
        /* Proposing the default is not refused. */
        { "xbzrle", V_BOOL(false), V_BOOL(false), MIG2_CFG_ACCEPTED, false },
        { "max-bandwidth", V_U64(5), V_U64(134217728), MIG2_CFG_REFUSED,
          false },
        { "downtime-limit", V_U64(300), V_U64(300), MIG2_CFG_ACCEPTED,
          false },
        { "multifd-compression", V_STR("zstd"), V_STR("none"),
          MIG2_CFG_REFUSED, false },
        /* Refuse replaced an earlier clamp rule. */
        { "multifd-channels", V_U64(3), V_U64(2), MIG2_CFG_REFUSED, false },
    };
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_policy_refuse(dp, "postcopy-ram"), MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "xbzrle"), MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "max-bandwidth"),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "downtime-limit"),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "multifd-compression"),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_clamp(dp, "multifd-channels", 100),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "multifd-channels"),
                     MIG2_OK);
    negotiate_expect(sp, dp, want, N_OF(want), 7);
}

static void test_config_unknown(void **state)
{
    const CfgWant want[] = {
        { "multifd-channels", V_U64(8), V_U64(8), MIG2_CFG_ACCEPTED, false },
        /* Registered, but this destination is too old to know it. */
        { "postcopy-ram", V_BOOL(true), V_BOOL(true), MIG2_CFG_UNKNOWN,
          false },
        /* Not registered anywhere; even a wrong type is just unknown. */
        { "x-vendor-knob", V_U64(7), V_U64(7), MIG2_CFG_UNKNOWN, false },
        { "x-vendor-mode", V_STR("fast"), V_STR("fast"), MIG2_CFG_UNKNOWN,
          false },
        /* Unknown wins over the refuse policy. */
        { "xbzrle", V_BOOL(true), V_BOOL(true), MIG2_CFG_UNKNOWN, false },
    };
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_know_config(dp, "multifd-channels"),
                     MIG2_OK);
    assert_int_equal(mig2_profile_know_config(dp, "multifd-channels"),
                     MIG2_ERR_DUPLICATE);
    assert_int_equal(mig2_profile_know_config(dp, "x-vendor-knob"),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_policy_refuse(dp, "xbzrle"), MIG2_OK);
    negotiate_expect(sp, dp, want, N_OF(want), 0);
}

static void test_config_bad_type(void **state)
{
    const CfgWant want[] = {
        { "multifd-channels", V_BOOL(true), V_U64(2), MIG2_CFG_BAD_TYPE,
          false },
        { "postcopy-ram", V_U64(1), V_BOOL(false), MIG2_CFG_BAD_TYPE, false },
        { "multifd-compression", V_BOOL(true), V_STR("none"),
          MIG2_CFG_BAD_TYPE, false },
        { "downtime-limit", V_STR("fast"), V_U64(300), MIG2_CFG_BAD_TYPE,
          false },
        /* Bad type wins over a clamp policy. */
        { "max-bandwidth", V_STR("huge"), V_U64(134217728),
          MIG2_CFG_BAD_TYPE, false },
    };
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_policy_clamp(dp, "max-bandwidth", 10),
                     MIG2_OK);
    negotiate_expect(sp, dp, want, N_OF(want), 0);
}

/* Each REQUIRED item that is not accepted fails the handshake alone. */
static void test_config_required_each(void **state)
{
    Mig2Profile *sp, *dp;

    (void)state;
    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_propose_u64(sp, "multifd-channels", 8,
                                              MIG2_CONFIG_REQUIRED), MIG2_OK);
    assert_int_equal(mig2_profile_policy_clamp(dp, "multifd-channels", 4),
                     MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_CONFIG_CLAMPED,
                       "config/multifd-channels", "at most 4", "8");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_propose_bool(sp, "postcopy-ram", true,
                                               MIG2_CONFIG_REQUIRED), MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "postcopy-ram"), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_CONFIG_REFUSED,
                       "config/postcopy-ram", "refused by destination policy",
                       "true");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_propose_str(sp, "multifd-compression",
                                              "zstd", MIG2_CONFIG_REQUIRED),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "multifd-compression"),
                     MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_CONFIG_REFUSED,
                       "config/multifd-compression",
                       "refused by destination policy", "\"zstd\"");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_propose_u64(sp, "x-vendor-knob", 7,
                                              MIG2_CONFIG_REQUIRED), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_CONFIG_UNKNOWN,
                       "config/x-vendor-knob",
                       "a parameter this destination knows", "7");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    sp = base_profile(true);
    dp = base_profile(false);
    assert_int_equal(mig2_profile_propose_bool(sp, "multifd-channels", false,
                                               MIG2_CONFIG_REQUIRED), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_CONFIG_TYPE,
                       "config/multifd-channels",
                       "a value of the registered type", "false");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* Several REQUIRED failures: every one reported, in proposal order. */
static void test_config_required_all(void **state)
{
    const CfgWant want[] = {
        { "multifd-channels", V_U64(8), V_U64(4), MIG2_CFG_CLAMPED, true },
        /* Not required: not accepted, but no problem. */
        { "xbzrle", V_BOOL(true), V_BOOL(false), MIG2_CFG_REFUSED, false },
        { "postcopy-ram", V_BOOL(true), V_BOOL(false), MIG2_CFG_REFUSED,
          true },
        /* Required and accepted: no problem. */
        { "downtime-limit", V_U64(100), V_U64(100), MIG2_CFG_ACCEPTED, true },
        { "x-vendor-mode", V_STR("fast"), V_STR("fast"), MIG2_CFG_UNKNOWN,
          true },
        { "max-bandwidth", V_BOOL(true), V_U64(134217728), MIG2_CFG_BAD_TYPE,
          true },
        { "x-vendor-knob", V_U64(1), V_U64(1), MIG2_CFG_UNKNOWN, false },
    };
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    const Mig2Error *err;
    size_t c;
    Pair p;

    (void)state;
    assert_int_equal(mig2_profile_policy_clamp(dp, "multifd-channels", 4),
                     MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "xbzrle"), MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "postcopy-ram"), MIG2_OK);
    propose(sp, want, N_OF(want));
    for (c = 0; c < N_CHUNKS; c++) {
        pair_run(&p, sp, dp, chunks[c]);
        err = assert_dst_refused(&p, MIG2_ERR_INCOMPATIBLE,
                                 MIG2_WIRE_INCOMPATIBLE);
        assert_int_equal(err->n_problems, 4);
        assert_problem(err, 0, MIG2_PROB_CONFIG_CLAMPED,
                       "config/multifd-channels", "at most 4", "8");
        assert_problem(err, 1, MIG2_PROB_CONFIG_REFUSED, "config/postcopy-ram",
                       "refused by destination policy", "true");
        assert_problem(err, 2, MIG2_PROB_CONFIG_UNKNOWN,
                       "config/x-vendor-mode",
                       "a parameter this destination knows", "\"fast\"");
        assert_problem(err, 3, MIG2_PROB_CONFIG_TYPE, "config/max-bandwidth",
                       "a value of the registered type", "true");
        assert_summary(err);
        /* Both sides still computed every outcome. */
        assert_config(&p, want, N_OF(want));
        pair_free(&p);
    }
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Compatibility check                                               */
/* ---------------------------------------------------------------- */

static void test_compat_machine(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_set_machine(sp, "pc-i440fx-7.2"), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_MACHINE, "machine", MACHINE,
                       "pc-i440fx-7.2");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_page_size(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_set_page_size(sp, 65536), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_PAGE_SIZE, "page-size", "4096",
                       "65536");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_ram_missing(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_add_ram_block(sp, "vga.vram", 16 << 20,
                                                4096), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_RAM_BLOCK_MISSING,
                       "ram-blocks/vga.vram", "absent", "16777216 bytes");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_ram_unexpected(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_add_ram_block(dp, "pc.bios", 262144, 4096),
                     MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_RAM_BLOCK_UNEXPECTED,
                       "ram-blocks/pc.bios", "262144 bytes", "absent");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_ram_size(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_add_ram_block(sp, "rom", 1 << 20, 4096),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(dp, "rom", 2 << 20, 4096),
                     MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_RAM_BLOCK_SIZE, "ram-blocks/rom/size",
                       "2097152", "1048576");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_ram_page_size(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    assert_int_equal(mig2_profile_add_ram_block(sp, "hugemem", 1ULL << 32,
                                                2 << 20), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(dp, "hugemem", 1ULL << 32,
                                                4096), MIG2_OK);
    expect_one_problem(sp, dp, MIG2_PROB_RAM_BLOCK_PAGE_SIZE,
                       "ram-blocks/hugemem/page-size", "4096", "2097152");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_device_missing(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    add_dev(sp, "serial", 0, 3, 4);
    /* Same id, other instance: still missing. */
    add_dev(dp, "serial", 1, 3, 4);
    add_dev(sp, "serial", 1, 3, 4);
    expect_one_problem(sp, dp, MIG2_PROB_DEVICE_MISSING, "devices/serial@0",
                       "absent", "versions 3..4");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_device_unexpected(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    add_dev(dp, "virtio-net", 2, 1, 11);
    expect_one_problem(sp, dp, MIG2_PROB_DEVICE_UNEXPECTED,
                       "devices/virtio-net@2", "versions 1..11", "absent");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_device_version(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    add_dev(sp, "serial", 0, 3, 4);
    add_dev(dp, "serial", 0, 1, 2);
    expect_one_problem(sp, dp, MIG2_PROB_DEVICE_VERSION,
                       "devices/serial@0/version", "1..2", "3..4");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    /* The other way round: the destination only loads newer versions. */
    sp = base_profile(true);
    dp = base_profile(false);
    add_dev(sp, "serial", 4294967295U, 5, 6);
    add_dev(dp, "serial", 4294967295U, 1, 4);
    expect_one_problem(sp, dp, MIG2_PROB_DEVICE_VERSION,
                       "devices/serial@4294967295/version", "1..4", "5..6");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_subsection_unknown(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    int dev;

    (void)state;
    dev = add_dev(sp, "serial", 0, 1, 4);
    add_sub(sp, dev, "fifo", true);
    add_sub(sp, dev, "legacy-irq", false);
    dev = add_dev(dp, "serial", 0, 1, 4);
    add_sub(dp, dev, "legacy-irq", false);
    expect_one_problem(sp, dp, MIG2_PROB_SUBSECTION_UNKNOWN,
                       "devices/serial@0/subsections/fifo",
                       "unknown to the destination", "needed");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_duplicates(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);

    (void)state;
    /* The profile API leaves duplicate devices to the check. */
    add_dev(sp, "timer", 0, 1, 2);
    expect_one_problem(sp, dp, MIG2_PROB_MALFORMED, "devices/timer@0",
                       "unique", "duplicate in source");
    mig2_profile_free(sp);
    mig2_profile_free(dp);

    sp = base_profile(true);
    dp = base_profile(false);
    add_dev(dp, "timer", 0, 1, 2);
    expect_one_problem(sp, dp, MIG2_PROB_MALFORMED, "devices/timer@0",
                       "unique", "duplicate in destination");
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* Everything at once, in the order the destination reports it. */
static void test_compat_all_at_once(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    const Mig2Error *err;
    size_t c;
    int dev;
    Pair p;

    (void)state;
    assert_int_equal(mig2_profile_set_machine(sp, "pc-i440fx-7.2"), MIG2_OK);
    assert_int_equal(mig2_profile_set_page_size(dp, 16384), MIG2_OK);
    /* RAM: pc.ram size differs, vga.vram missing, rom differs twice, */
    /* extra.ram unexpected. */
    assert_int_equal(mig2_profile_add_ram_block(sp, "vga.vram", 16 << 20,
                                                4096), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(sp, "rom", 1 << 20, 4096),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(dp, "extra.ram", 8 << 20,
                                                4096), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(dp, "rom", 2 << 20, 65536),
                     MIG2_OK);
    sp->ram[0].size = 1ULL << 30;
    dp->ram[0].size = 2ULL << 30;
    /* Devices: serial version, gone missing, net needs vlan, new extra. */
    add_dev(sp, "serial", 0, 3, 4);
    add_dev(sp, "gone", 0, 1, 1);
    dev = add_dev(sp, "net", 0, 1, 1);
    add_sub(sp, dev, "vlan", true);
    add_sub(sp, dev, "stats", false);
    add_dev(dp, "new", 3, 2, 5);
    add_dev(dp, "net", 0, 1, 1);
    add_dev(dp, "serial", 0, 1, 2);
    /* Plus a required feature and a required config item. */
    assert_int_equal(mig2_profile_add_feature(sp, MIG2_FEAT_POSTCOPY, true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_propose_bool(sp, "return-path", true,
                                               MIG2_CONFIG_REQUIRED), MIG2_OK);
    assert_int_equal(mig2_profile_policy_refuse(dp, "return-path"), MIG2_OK);

    for (c = 0; c < N_CHUNKS; c++) {
        pair_run(&p, sp, dp, chunks[c]);
        err = assert_dst_refused(&p, MIG2_ERR_INCOMPATIBLE,
                                 MIG2_WIRE_INCOMPATIBLE);
        assert_int_equal(err->n_problems, 13);
        assert_problem(err, 0, MIG2_PROB_CONFIG_REFUSED, "config/return-path",
                       "refused by destination policy", "true");
        assert_problem(err, 1, MIG2_PROB_FEATURE_REQUIRED, "features/postcopy",
                       "present", "absent");
        assert_problem(err, 2, MIG2_PROB_MACHINE, "machine", MACHINE,
                       "pc-i440fx-7.2");
        assert_problem(err, 3, MIG2_PROB_PAGE_SIZE, "page-size", "16384",
                       "4096");
        assert_problem(err, 4, MIG2_PROB_RAM_BLOCK_SIZE,
                       "ram-blocks/pc.ram/size", "2147483648", "1073741824");
        assert_problem(err, 5, MIG2_PROB_RAM_BLOCK_MISSING,
                       "ram-blocks/vga.vram", "absent", "16777216 bytes");
        assert_problem(err, 6, MIG2_PROB_RAM_BLOCK_SIZE, "ram-blocks/rom/size",
                       "2097152", "1048576");
        assert_problem(err, 7, MIG2_PROB_RAM_BLOCK_PAGE_SIZE,
                       "ram-blocks/rom/page-size", "65536", "4096");
        assert_problem(err, 8, MIG2_PROB_RAM_BLOCK_UNEXPECTED,
                       "ram-blocks/extra.ram", "8388608 bytes", "absent");
        assert_problem(err, 9, MIG2_PROB_DEVICE_VERSION,
                       "devices/serial@0/version", "1..2", "3..4");
        assert_problem(err, 10, MIG2_PROB_DEVICE_MISSING, "devices/gone@0",
                       "absent", "versions 1..1");
        assert_problem(err, 11, MIG2_PROB_SUBSECTION_UNKNOWN,
                       "devices/net@0/subsections/vlan",
                       "unknown to the destination", "needed");
        assert_problem(err, 12, MIG2_PROB_DEVICE_UNEXPECTED, "devices/new@3",
                       "versions 2..5", "absent");
        assert_string_equal(err->message,
                            "destination found 13 problems; first: "
                            "config-refused config/return-path: expected "
                            "refused by destination policy, got true");
        pair_free(&p);
    }
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

typedef struct VerCase {
    const char *id;
    uint32_t inst;
    uint32_t smin, smax, dmin, dmax;
    uint32_t want;
} VerCase;

static void test_compat_version_choice(void **state)
{
    static const VerCase cases[] = {
        { "a", 0, 1, 5, 2, 3, 3 },
        { "a", 1, 1, 1, 1, 2, 1 },              /* same id, other instance */
        { "b", 0, 3, 3, 3, 3, 3 },              /* equal single versions */
        { "c", 0, 1, 3, 3, 7, 3 },              /* touching from below */
        { "d", 0, 4, 9, 1, 4, 4 },              /* touching from above */
        { "e", 0, 2, 2, 1, 10, 2 },
        { "f", 0, 0, 0, 0, 0, 0 },
        { "g", 7, 10, 20, 5, 15, 15 },
        { "h", 0, 0, UINT32_MAX, 7, 9, 9 },
        { "i", 0, 7, 9, 0, UINT32_MAX, 9 },
        { "timer", 0, 1, 2, 1, 2, 2 },
    };
    const size_t n = sizeof(cases) / sizeof(cases[0]);
    Mig2Profile *sp = mig2_profile_new(), *dp = mig2_profile_new();
    size_t i, k;
    Pair p;

    (void)state;
    assert_int_equal(mig2_profile_set_machine(sp, MACHINE), MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(dp, MACHINE), MIG2_OK);
    for (i = 0; i < n; i++) {
        const VerCase *vc = &cases[i];
        const VerCase *rc = &cases[n - 1 - i];  /* dst lists them reversed */

        add_dev(sp, vc->id, vc->inst, vc->smin, vc->smax);
        add_dev(dp, rc->id, rc->inst, rc->dmin, rc->dmax);
    }
    pair_run(&p, sp, dp, 0);
    assert_complete(&p);
    for (k = 0; k < 2; k++) {
        const Mig2Engine *e = k ? p.d.e : p.s.e;

        assert_int_equal(mig2_result_device_count(e), n);
        assert_null(mig2_result_device(e, n));
        for (i = 0; i < n; i++) {
            const Mig2DeviceResult *r = mig2_result_device(e, i);

            assert_non_null(r);
            assert_string_equal(r->id, cases[i].id);
            assert_int_equal(r->instance, cases[i].inst);
            assert_int_equal(r->version, cases[i].want);
        }
    }
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_compat_omitted(void **state)
{
    Mig2Profile *sp = base_profile(true), *dp = base_profile(false);
    static const char *const want[][2] = {
        { "timer", "legacy" },
        { "net", "b" },
        { "net", "d" },
    };
    size_t i, k;
    int dev;
    Pair p;

    (void)state;
    add_sub(sp, 0, "legacy", false);
    dev = add_dev(sp, "net", 0, 1, 1);
    add_sub(sp, dev, "a", false);
    add_sub(sp, dev, "b", false);
    add_sub(sp, dev, "c", true);
    add_sub(sp, dev, "d", false);
    dev = add_dev(dp, "net", 0, 1, 1);
    add_sub(dp, dev, "c", false);
    add_sub(dp, dev, "a", false);
    add_sub(dp, dev, "z", false);   /* the destination's extra is fine */
    pair_run(&p, sp, dp, 7);
    assert_complete(&p);
    for (k = 0; k < 2; k++) {
        const Mig2Engine *e = k ? p.d.e : p.s.e;

        assert_int_equal(mig2_result_omitted_count(e), 3);
        assert_null(mig2_result_omitted(e, 3));
        for (i = 0; i < 3; i++) {
            const Mig2OmittedSubsection *o = mig2_result_omitted(e, i);

            assert_non_null(o);
            assert_string_equal(o->device, want[i][0]);
            assert_int_equal(o->instance, 0);
            assert_string_equal(o->subsection, want[i][1]);
        }
    }
    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_revision_matrix),
        cmocka_unit_test(test_revision_none_in_common),
        cmocka_unit_test(test_revision_before_rest),
        cmocka_unit_test(test_revision_future_source),
        cmocka_unit_test(test_feature_sets),
        cmocka_unit_test(test_feature_required),
        cmocka_unit_test(test_config_fresh_destination),
        cmocka_unit_test(test_config_none),
        cmocka_unit_test(test_config_clamp),
        cmocka_unit_test(test_config_registered_max),
        cmocka_unit_test(test_config_refuse),
        cmocka_unit_test(test_config_unknown),
        cmocka_unit_test(test_config_bad_type),
        cmocka_unit_test(test_config_required_each),
        cmocka_unit_test(test_config_required_all),
        cmocka_unit_test(test_compat_machine),
        cmocka_unit_test(test_compat_page_size),
        cmocka_unit_test(test_compat_ram_missing),
        cmocka_unit_test(test_compat_ram_unexpected),
        cmocka_unit_test(test_compat_ram_size),
        cmocka_unit_test(test_compat_ram_page_size),
        cmocka_unit_test(test_compat_device_missing),
        cmocka_unit_test(test_compat_device_unexpected),
        cmocka_unit_test(test_compat_device_version),
        cmocka_unit_test(test_compat_subsection_unknown),
        cmocka_unit_test(test_compat_duplicates),
        cmocka_unit_test(test_compat_all_at_once),
        cmocka_unit_test(test_compat_version_choice),
        cmocka_unit_test(test_compat_omitted),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
