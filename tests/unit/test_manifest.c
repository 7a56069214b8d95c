/*
 * One-way v4 streams: the MANIFEST a writer states, its codec (truncated,
 * oversized, unknown TLVs, wrong frame type), the reader's check against
 * the live handshake's, the one-way engine in both roles, and DIGEST.
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

static const uint8_t stream_id[16] = {
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
};

/*
 * A source as mig2-vm describes itself: live-only features, a device
 * that saves 2..3 with a needed and a not-needed subsection, config.
 */
static Mig2Profile *writer_profile(void)
{
    Mig2Profile *p = mig2_profile_new();
    int dev;

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_build(p, "writer 1.0"), MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(p, "mig2-pc"), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH,
                                              false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE, false),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_MULTICHANNEL,
                                              true), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(
                         p, MIG2_FEAT_DEVICE_STATE_VERSIONS, false), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 64u << 20,
                                                4096), MIG2_OK);
    assert_int_equal(mig2_profile_add_device(p, "timer", 0, 1, 2), 0);
    dev = mig2_profile_add_device(p, "serial", 0, 2, 3);
    assert_int_equal(dev, 1);
    assert_int_equal(mig2_profile_add_subsection(p, dev, "serial/fifo", true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_subsection(p, dev, "serial/timeout",
                                                 false), MIG2_OK);
    assert_int_equal(mig2_profile_propose_u64(p, "downtime-limit", 500, 0),
                     MIG2_OK);
    assert_int_equal(mig2_profile_propose_bool(p, "multifd", true, 0),
                     MIG2_OK);
    /* A destination-side rule in a source profile says nothing here. */
    assert_int_equal(mig2_profile_policy_refuse(p, "multifd"), MIG2_OK);
    return p;
}

/* A reader that can load what writer_profile() writes. */
static Mig2Profile *reader_profile(void)
{
    Mig2Profile *p = mig2_profile_new();
    int dev;

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_build(p, "reader 1.0"), MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(p, "mig2-pc"), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH,
                                              false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE, false),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(
                         p, MIG2_FEAT_DEVICE_STATE_VERSIONS, false), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 64u << 20,
                                                4096), MIG2_OK);
    assert_int_equal(mig2_profile_add_device(p, "timer", 0, 1, 2), 0);
    dev = mig2_profile_add_device(p, "serial", 0, 1, 3);
    assert_int_equal(mig2_profile_add_subsection(p, dev, "serial/fifo", false),
                     MIG2_OK);
    return p;
}

static Mig2Manifest *writer_manifest(void)
{
    Mig2Profile *p = writer_profile();
    int rc = -1;
    Mig2Manifest *m = mig2_manifest_from_profile(p, stream_id, &rc);

    assert_int_equal(rc, MIG2_OK);
    assert_non_null(m);
    mig2_profile_free(p);
    return m;
}

/* The MANIFEST frame of writer_profile(), without grease. */
static void manifest_frame(Buf *b)
{
    Mig2Manifest *m = writer_manifest();
    Mig2Writer w;

    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_manifest_encode(&w, m, false);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    buf_add(b, w.buf, w.len);
    mig2_wr_free(&w);
    mig2_manifest_free(m);
}

/* Re-patch the frame length after editing a payload in place. */
static void fix_length(Buf *b)
{
    uint32_t n = (uint32_t)(b->len - MIG2_FRAME_HEADER_LEN);

    b->p[4] = (uint8_t)(n >> 24);
    b->p[5] = (uint8_t)(n >> 16);
    b->p[6] = (uint8_t)(n >> 8);
    b->p[7] = (uint8_t)n;
}

/* ---- what a writer states ---- */

static void test_stated_choices(void **state)
{
    Mig2Manifest *m = writer_manifest();
    const Mig2Profile *p = mig2_manifest_profile(m);
    uint32_t vmin, vmax;
    uint16_t id, rmin, rmax;
    const char *name;
    bool req, needed;

    (void)state;
    /* Revisions 1 and 2 write the same stream: the lowest is chosen. */
    assert_int_equal(mig2_manifest_revision(m), 1);
    mig2_profile_revisions(p, &rmin, &rmax);
    assert_int_equal(rmin, MIG2_REVISION_MIN);
    assert_int_equal(rmax, MIG2_REVISION_MAX);
    assert_memory_equal(mig2_manifest_stream_id(m), stream_id, 16);
    /* Live-only features gone, the rest required, oneway-manifest added. */
    assert_int_equal(mig2_profile_feature_count(p), 3);
    assert_true(mig2_profile_feature(p, 0, &id, &req));
    assert_int_equal(id, MIG2_FEAT_ZERO_PAGE);
    assert_true(req);
    assert_true(mig2_profile_feature(p, 1, &id, &req));
    assert_int_equal(id, MIG2_FEAT_DEVICE_STATE_VERSIONS);
    assert_true(req);
    assert_true(mig2_profile_feature(p, 2, &id, &req));
    assert_int_equal(id, MIG2_FEAT_ONEWAY_MANIFEST);
    assert_true(req);
    assert_false(mig2_profile_feature(p, 3, &id, &req));
    /* Each device at the newest version it saves. */
    assert_true(mig2_profile_device(p, 0, &name, NULL, &vmin, &vmax));
    assert_string_equal(name, "timer");
    assert_int_equal(vmin, 2);
    assert_int_equal(vmax, 2);
    assert_true(mig2_profile_device(p, 1, &name, NULL, &vmin, &vmax));
    assert_int_equal(vmin, 3);
    assert_int_equal(vmax, 3);
    assert_int_equal(mig2_profile_subsection_count(p, 1), 2);
    assert_true(mig2_profile_subsection(p, 1, 0, &name, &needed));
    assert_string_equal(name, "serial/fifo");
    assert_true(needed);
    assert_true(mig2_profile_subsection(p, 1, 1, &name, &needed));
    assert_false(needed);
    assert_int_equal(mig2_profile_config_count(p), 2);
    assert_null(mig2_profile_policy(p, "multifd"));
    mig2_manifest_free(m);

    assert_null(mig2_manifest_from_profile(NULL, NULL, NULL));
}

/* ---- codec ---- */

static void test_roundtrip(void **state)
{
    Buf b = { 0 };
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    Mig2Writer w;
    size_t used = 0, frame_len;
    const char *build;
    uint16_t id;
    bool req;

    (void)state;
    manifest_frame(&b);
    frame_len = b.len;
    buf_add(&b, "trailing", 8);     /* the data phase: not ours */
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_OK);
    assert_int_equal(used, frame_len);
    assert_int_equal(err.n_problems, 0);
    assert_int_equal(mig2_manifest_revision(m), 1);
    assert_memory_equal(mig2_manifest_stream_id(m), stream_id, 16);
    build = mig2_profile_build(mig2_manifest_profile(m));
    assert_string_equal(build, "writer 1.0");
    assert_string_equal(mig2_profile_machine(mig2_manifest_profile(m)),
                        "mig2-pc");
    assert_true(mig2_profile_feature(mig2_manifest_profile(m), 2, &id, &req));
    assert_int_equal(id, MIG2_FEAT_ONEWAY_MANIFEST);
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_manifest_encode(&w, m, false);
    assert_int_equal(w.len, frame_len);
    assert_memory_equal(w.buf, b.p, frame_len);
    mig2_wr_free(&w);
    mig2_manifest_free(m);

    /* With grease: still decodes, and grease is not a feature. */
    m = writer_manifest();
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_manifest_encode(&w, m, true);
    mig2_manifest_free(m);
    assert_true(w.len > frame_len);
    assert_int_equal(mig2_manifest_decode(w.buf, w.len, 0, &m, &used, &err),
                     MIG2_OK);
    assert_int_equal(mig2_profile_feature_count(mig2_manifest_profile(m)), 3);
    mig2_manifest_free(m);
    mig2_wr_free(&w);
    buf_free(&b);
}

static void test_truncated(void **state)
{
    Buf b = { 0 };
    Mig2Manifest *m = (Mig2Manifest *)&m;
    Mig2Error err = { 0 };
    size_t n, used;

    (void)state;
    manifest_frame(&b);
    /* Every prefix is "need more bytes", never a half manifest. */
    for (n = 0; n < b.len; n++) {
        assert_int_equal(mig2_manifest_decode(b.p, n, 0, &m, &used, &err),
                         MIG2_ERR_TRUNCATED);
        assert_null(m);
    }
    /* A frame cut short with a consistent header: a TLV runs past it. */
    b.len -= 3;
    fix_length(&b);
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_ERR_PROTOCOL);
    assert_null(m);
    assert_int_equal(err.code, MIG2_WIRE_PROTOCOL);
    assert_int_equal(err.n_problems, 1);
    assert_int_equal(err.problems[0].kind, MIG2_PROB_MALFORMED);
    assert_non_null(strstr(err.problems[0].path, "manifest/"));
    mig2_error_clear(&err);
    buf_free(&b);
}

static void test_oversized(void **state)
{
    Buf b = { 0 };
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    char actual[32];
    size_t used;

    (void)state;
    manifest_frame(&b);
    /* A local limit below the frame: refused before the payload. */
    snprintf(actual, sizeof(actual), "%zu bytes",
             b.len - MIG2_FRAME_HEADER_LEN);
    assert_int_equal(mig2_manifest_decode(b.p, MIG2_FRAME_HEADER_LEN, 64, &m,
                                          &used, &err), MIG2_ERR_TOO_LARGE);
    assert_null(m);
    assert_problem(&err, 0, MIG2_PROB_MALFORMED, "frame", "at most 64 bytes",
                   actual);
    mig2_error_clear(&err);
    /* Over the protocol's 16 MiB, whatever the caller allows. */
    b.len = 0;
    put_frame(&b, MIG2_FRAME_MANIFEST, MIG2_FRAME_FLAG_CRITICAL, NULL, 0);
    b.p[4] = 0x01;
    b.p[7] = 0x01;      /* 16 MiB + 1 */
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_ERR_TOO_LARGE);
    assert_problem(&err, 0, MIG2_PROB_MALFORMED, "frame",
                   "at most 16777216 bytes", "16777217 bytes");
    mig2_error_clear(&err);
    buf_free(&b);
}

/* @b with one TLV @type/@value appended to the MANIFEST payload. */
static void append_tlv(Buf *b, uint16_t type, const char *value)
{
    put_be16(b, type);
    put_be32(b, (uint32_t)strlen(value));
    buf_add(b, value, strlen(value));
    fix_length(b);
}

static void test_unknown_tlvs(void **state)
{
    Buf b = { 0 }, ref = { 0 };
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    Mig2Writer w;
    size_t used;

    (void)state;
    manifest_frame(&ref);
    /* Non-critical: skipped; the manifest is what it was without it. */
    manifest_frame(&b);
    append_tlv(&b, 0x0123, "from a newer writer");
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_OK);
    assert_int_equal(used, b.len);
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_manifest_encode(&w, m, false);
    assert_int_equal(w.len, ref.len);
    assert_memory_equal(w.buf, ref.p, ref.len);
    mig2_wr_free(&w);
    mig2_manifest_free(m);
    buf_free(&b);

    /* Critical: the reader must not load what it cannot understand. */
    manifest_frame(&b);
    append_tlv(&b, 0x8123, "x");
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_ERR_UNKNOWN_CRITICAL);
    assert_null(m);
    assert_int_equal(err.code, MIG2_WIRE_UNKNOWN_CRITICAL);
    assert_problem(&err, 0, MIG2_PROB_UNKNOWN_CRITICAL, "manifest/tlv/0x8123",
                   "a known type", "critical type 0x8123");
    mig2_error_clear(&err);
    buf_free(&b);

    /* A TLV registered for DST_HELLO only is unknown in a MANIFEST. */
    manifest_frame(&b);
    append_tlv(&b, 0x800b, "x");
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_ERR_UNKNOWN_CRITICAL);
    assert_problem(&err, 0, MIG2_PROB_UNKNOWN_CRITICAL, "manifest/tlv/0x800b",
                   "a known type", "critical type 0x800b");
    mig2_error_clear(&err);
    buf_free(&ref);
    buf_free(&b);
}

/* A MANIFEST payload built TLV by TLV. */
static void raw_manifest(Buf *b, uint16_t rmin, uint16_t rmax, int selected,
                         uint32_t dev_min, uint32_t dev_max)
{
    Buf p = { 0 };
    static const uint8_t nonce[16];

    put_be16(&p, 0x8001);
    put_be32(&p, 4);
    put_be16(&p, rmin);
    put_be16(&p, rmax);
    if (selected >= 0) {
        put_be16(&p, 0x800a);
        put_be32(&p, 2);
        put_be16(&p, (uint16_t)selected);
    }
    put_be16(&p, 0x8004);
    put_be32(&p, 16);
    buf_add(&p, nonce, 16);
    put_be16(&p, 0x8005);
    put_be32(&p, 5);
    buf_add(&p, "\x04none", 5);
    put_be16(&p, 0x8006);
    put_be32(&p, 4);
    put_be32(&p, 4096);
    put_be16(&p, 0x8008);
    put_be32(&p, 18);
    buf_add(&p, "\x05timer", 6);
    put_be32(&p, 0);
    put_be32(&p, dev_min);
    put_be32(&p, dev_max);
    put_frame(b, MIG2_FRAME_MANIFEST, MIG2_FRAME_FLAG_CRITICAL, p.p,
              (uint32_t)p.len);
    buf_free(&p);
}

static void expect_malformed(const Buf *b, const char *path,
                             const char *expected)
{
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    size_t used;

    assert_int_equal(mig2_manifest_decode(b->p, b->len, 0, &m, &used, &err),
                     MIG2_ERR_PROTOCOL);
    assert_null(m);
    assert_int_equal(err.code, MIG2_WIRE_PROTOCOL);
    assert_int_equal(err.n_problems, 1);
    assert_int_equal(err.problems[0].kind, MIG2_PROB_MALFORMED);
    assert_string_equal(err.problems[0].path, path);
    assert_string_equal(err.problems[0].expected, expected);
    mig2_error_clear(&err);
}

/*
 * BUILD is optional (spec 6.3): a manifest without one (here BUILD's
 * type was changed into an unknown non-critical 0x003d) decodes, and
 * re-encodes without BUILD instead of failing.  Found by fuzz_manifest.
 */
static void test_no_build(void **state)
{
    static const uint8_t frame[] = {
        0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x55, 0x80, 0x01, 0x00, 0x00,
        0x00, 0x04, 0x00, 0x01, 0x00, 0x02, 0x80, 0x0a, 0x00, 0x00, 0x00, 0x02,
        0x00, 0x01, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x09, 0x00, 0x07, 0x65, 0x78,
        0x61, 0x6d, 0x70, 0x6c, 0x65, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00,
        0x07, 0x01, 0x80, 0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, 0x02, 0x03,
        0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
        0x80, 0x05, 0x00, 0x00, 0x00, 0x05, 0x04, 0x6e, 0x6f, 0x6e, 0x65, 0x80,
        0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x10, 0x00,
    };
    Mig2Manifest *m = NULL, *again = NULL;
    Mig2Error err = { 0 };
    Mig2Writer w;
    size_t used;

    (void)state;
    assert_int_equal(mig2_manifest_decode(frame, sizeof(frame), 0, &m, &used,
                                          &err), MIG2_OK);
    assert_null(mig2_profile_build(mig2_manifest_profile(m)));
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_manifest_encode(&w, m, false);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(mig2_manifest_decode(w.buf, w.len, 0, &again, &used,
                                          &err), MIG2_OK);
    assert_int_equal(used, w.len);
    assert_null(mig2_profile_build(mig2_manifest_profile(again)));
    mig2_manifest_free(again);
    mig2_manifest_free(m);
    mig2_wr_free(&w);
    mig2_error_clear(&err);
}

static void test_stated_revision_and_versions(void **state)
{
    Buf b = { 0 };
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    size_t used;

    (void)state;
    raw_manifest(&b, 1, 2, 2, 4, 4);
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_OK);
    assert_int_equal(mig2_manifest_revision(m), 2);
    mig2_manifest_free(m);
    buf_free(&b);

    raw_manifest(&b, 1, 2, -1, 4, 4);
    expect_malformed(&b, "manifest/tlv[1]",
                     "selected-revision as the second TLV");
    buf_free(&b);
    raw_manifest(&b, 1, 1, 2, 4, 4);
    expect_malformed(&b, "manifest/selected-revision[0]",
                     "a revision within revisions");
    buf_free(&b);
    /* A device's range is a choice here: one version, not a range. */
    raw_manifest(&b, 1, 2, 1, 3, 4);
    expect_malformed(&b, "manifest/device[0]", "version min == max");
    buf_free(&b);

    /* A newer writer's revision: refused from the first two TLVs. */
    raw_manifest(&b, 1, 9, 9, 4, 4);
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_ERR_NO_REVISION);
    assert_int_equal(err.code, MIG2_WIRE_UNSUPPORTED_REVISION);
    assert_problem(&err, 0, MIG2_PROB_REVISION, "revision", "1..2", "9");
    mig2_error_clear(&err);
    buf_free(&b);
}

static void test_wrong_frame_type(void **state)
{
    Buf b = { 0 };
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    size_t used;

    (void)state;
    manifest_frame(&b);
    b.p[1] = (uint8_t)MIG2_FRAME_SRC_HELLO;
    assert_int_equal(mig2_manifest_decode(b.p, b.len, 0, &m, &used, &err),
                     MIG2_ERR_STATE);
    assert_null(m);
    assert_problem(&err, 0, MIG2_PROB_MALFORMED, "frame",
                   "frame type 0x0005 (MANIFEST)", "frame type 0x0001");
    mig2_error_clear(&err);
    buf_free(&b);
}

/* ---- the reader's check is the live destination's ---- */

/* What a live destination with @dst says to a SRC_HELLO of @src. */
static void live_problems(const Mig2Profile *src, const Mig2Profile *dst,
                          Mig2Error *out)
{
    Mig2EngineOptions o = { .no_grease = true };
    Mig2Engine *s = mig2_engine_new(MIG2_ROLE_SOURCE, src, &o, NULL);
    Mig2Engine *d = mig2_engine_new(MIG2_ROLE_DESTINATION, dst, &o, NULL);
    const uint8_t *p;
    size_t len, i;

    assert_non_null(s);
    assert_non_null(d);
    p = mig2_engine_output(s, &len);
    mig2_engine_recv(d, p, len);
    assert_int_equal(mig2_engine_state(d), MIG2_STATE_FAILED);
    memset(out, 0, sizeof(*out));
    for (i = 0; i < mig2_engine_error(d)->n_problems; i++) {
        const Mig2Problem *pr = &mig2_engine_error(d)->problems[i];

        mig2_error_add(out, pr->kind, pr->path, pr->expected, pr->actual);
    }
    mig2_engine_free(s);
    mig2_engine_free(d);
}

static void test_check_matches_live(void **state)
{
    Mig2Manifest *m = writer_manifest();
    Mig2Profile *r = reader_profile(), *bad = mig2_profile_new();
    Mig2Error err = { 0 }, live = { 0 };
    int dev;
    size_t i;

    (void)state;
    assert_int_equal(mig2_manifest_check(m, r, &err), MIG2_OK);
    assert_int_equal(err.n_problems, 0);

    /* RAM size, a missing device, a version too new, a needed subsection. */
    assert_int_equal(mig2_profile_set_build(bad, "old reader"), MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(bad, "mig2-pc"), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(bad, MIG2_FEAT_ZERO_PAGE, false),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(bad, "pc.ram", 32u << 20,
                                                4096), MIG2_OK);
    dev = mig2_profile_add_device(bad, "serial", 0, 1, 2);
    assert_true(dev >= 0);
    assert_int_equal(mig2_manifest_check(m, bad, &err),
                     MIG2_ERR_INCOMPATIBLE);
    assert_int_equal(err.code, MIG2_WIRE_INCOMPATIBLE);
    assert_int_equal(err.n_problems, 5);
    assert_problem(&err, 0, MIG2_PROB_FEATURE_REQUIRED,
                   "features/device-state-versions", "present", "absent");
    assert_problem(&err, 1, MIG2_PROB_RAM_BLOCK_SIZE, "ram-blocks/pc.ram/size",
                   "33554432", "67108864");
    assert_problem(&err, 2, MIG2_PROB_DEVICE_MISSING, "devices/timer@0",
                   "absent", "versions 2..2");
    assert_problem(&err, 3, MIG2_PROB_DEVICE_VERSION,
                   "devices/serial@0/version", "1..2", "3..3");
    assert_problem(&err, 4, MIG2_PROB_SUBSECTION_UNKNOWN,
                   "devices/serial@0/subsections/serial/fifo",
                   "unknown to the destination", "needed");
    assert_non_null(strstr(err.message, "destination found 5 problems"));

    /* A live source stating the same manifest meets the same problems. */
    assert_int_equal(mig2_profile_add_feature(bad, MIG2_FEAT_ONEWAY_MANIFEST,
                                              false), MIG2_OK);
    live_problems(mig2_manifest_profile(m), bad, &live);
    assert_int_equal(live.n_problems, err.n_problems);
    for (i = 0; i < live.n_problems; i++) {
        assert_problem(&err, i, live.problems[i].kind, live.problems[i].path,
                       live.problems[i].expected, live.problems[i].actual);
    }
    mig2_error_clear(&live);

    /* A reader of revision 2 only cannot read a revision 1 stream. */
    assert_int_equal(mig2_profile_set_revisions(r, 2, 2), MIG2_OK);
    assert_int_equal(mig2_manifest_check(m, r, &err), MIG2_ERR_NO_REVISION);
    assert_int_equal(err.code, MIG2_WIRE_UNSUPPORTED_REVISION);
    assert_int_equal(err.n_problems, 1);
    assert_problem(&err, 0, MIG2_PROB_REVISION, "revision", "2..2", "1");

    mig2_error_clear(&err);
    mig2_profile_free(bad);
    mig2_profile_free(r);
    mig2_manifest_free(m);
}

/* ---- the engine, one-way ---- */

static Mig2Engine *oneway_engine(Mig2Role role, const Mig2Profile *p)
{
    Mig2EngineOptions o = { .nonce = stream_id, .oneway = true };
    int rc = -1;
    Mig2Engine *e = mig2_engine_new(role, p, &o, &rc);

    assert_int_equal(rc, MIG2_OK);
    assert_non_null(e);
    return e;
}

/* The head a one-way writer engine queues, taken out of it. */
static void writer_head(Buf *b, bool check_results)
{
    Mig2Profile *p = writer_profile();
    Mig2Engine *s = oneway_engine(MIG2_ROLE_SOURCE, p);
    Mig2Event ev;
    const uint8_t *out;
    Frame f[4];
    size_t len;

    mig2_profile_free(p);
    assert_true(mig2_engine_oneway(s));
    assert_int_equal(mig2_engine_state(s), MIG2_STATE_COMPLETE);
    assert_true(mig2_engine_next_event(s, &ev));
    assert_int_equal(ev.type, MIG2_EV_NEGOTIATED);
    assert_true(mig2_engine_next_event(s, &ev));
    assert_int_equal(ev.type, MIG2_EV_COMPLETE);
    out = mig2_engine_output(s, &len);
    assert_memory_equal(out, "QEVM\0\0\0\4", 8);
    assert_true(mig2_stream_is_oneway(out));
    assert_int_equal(frames_of(out + 8, len - 8, f, 4), 2);
    assert_int_equal(f[0].type, MIG2_FRAME_MANIFEST);
    assert_int_equal(f[0].flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(f[1].type, MIG2_FRAME_FINISHED);
    assert_int_equal(f[1].len, 32);
    if (check_results) {
        const Mig2DeviceResult *r;

        assert_int_equal(mig2_result_revision(s), 1);
        assert_true(mig2_result_has_feature(s, MIG2_FEAT_ZERO_PAGE));
        assert_false(mig2_result_has_feature(s, MIG2_FEAT_RETURN_PATH));
        assert_false(mig2_result_has_feature(s, MIG2_FEAT_MULTICHANNEL));
        assert_int_equal(mig2_result_device_count(s), 2);
        r = mig2_result_device(s, 1);
        assert_string_equal(r->id, "serial");
        assert_int_equal(r->version, 3);
        assert_int_equal(mig2_result_config_count(s), 2);
        assert_int_equal(mig2_result_config_find(s, "downtime-limit")->final.u,
                         500);
        assert_null(mig2_result_channel_key(s));
        assert_int_equal(mig2_result_round_trips(s), 0);
        assert_memory_equal(mig2_result_session_id(s), stream_id, 16);
        assert_non_null(mig2_result_transcript_hash(s));
        assert_int_equal(mig2_engine_set_binding(s, stream_id, 16),
                         MIG2_ERR_STATE);
    }
    buf_add(b, out, len);
    mig2_engine_output_consumed(s, len);
    mig2_engine_free(s);
}

static void test_engine_oneway_roundtrip(void **state)
{
    Buf head = { 0 };
    Mig2Profile *r = reader_profile();
    static const size_t chunks[] = { 1, 7, 4096 };
    size_t c;

    (void)state;
    writer_head(&head, true);
    /* Data after the head is the caller's; in any chunking. */
    buf_add(&head, "\x01\x03\0\x01\0\0\0\0", 8);
    for (c = 0; c < 3; c++) {
        Mig2Engine *d = oneway_engine(MIG2_ROLE_DESTINATION, r);
        const Mig2DeviceResult *dr;
        size_t off = 0, len;

        while (mig2_engine_state(d) == MIG2_STATE_RUNNING) {
            size_t n = head.len - off < chunks[c] ? head.len - off : chunks[c];
            ssize_t used = mig2_engine_recv(d, head.p + off, n);

            assert_true(used >= 0);
            off += (size_t)used;
            assert_null(mig2_engine_output(d, &len));
        }
        assert_int_equal(mig2_engine_state(d), MIG2_STATE_COMPLETE);
        assert_int_equal(head.len - off, 8);
        assert_int_equal(mig2_result_revision(d), 1);
        assert_true(mig2_result_has_feature(d, MIG2_FEAT_ZERO_PAGE));
        assert_true(mig2_result_has_feature(d, MIG2_FEAT_ONEWAY_MANIFEST));
        assert_false(mig2_result_has_feature(d, MIG2_FEAT_RETURN_PATH));
        dr = mig2_result_device(d, 1);
        assert_int_equal(dr->version, 3);
        /* The reader's own settings do not shape the file's config. */
        assert_true(mig2_result_config_find(d, "multifd")->final.b);
        /* serial/timeout was not needed: left out, nobody complains. */
        assert_int_equal(mig2_result_omitted_count(d), 1);
        assert_string_equal(mig2_result_omitted(d, 0)->subsection,
                            "serial/timeout");
        assert_memory_equal(mig2_result_session_id(d), stream_id, 16);
        assert_string_equal(mig2_result_peer_build(d), "writer 1.0");
        mig2_engine_free(d);
    }
    mig2_profile_free(r);
    buf_free(&head);
}

/* Feed @b to a one-way reader of @r: it fails with @rc, writing nothing. */
static Mig2Engine *reader_fails(const Buf *b, const Mig2Profile *r, int rc,
                                uint32_t code)
{
    Mig2Engine *d = oneway_engine(MIG2_ROLE_DESTINATION, r);
    Mig2Event ev;
    size_t len;

    assert_int_equal(mig2_engine_recv(d, b->p, b->len), rc);
    assert_int_equal(mig2_engine_state(d), MIG2_STATE_FAILED);
    assert_int_equal(mig2_engine_error(d)->code, code);
    assert_false(mig2_engine_error(d)->from_peer);
    assert_null(mig2_engine_output(d, &len));
    assert_int_equal(len, 0);
    assert_true(mig2_engine_next_event(d, &ev));
    assert_int_equal(ev.type, MIG2_EV_FAILED);
    return d;
}

static void test_engine_oneway_failures(void **state)
{
    Buf head = { 0 }, b = { 0 };
    Mig2Profile *r = reader_profile();
    Mig2Engine *d;
    size_t build_at;

    (void)state;
    writer_head(&head, false);

    /* A flipped byte in the manifest: FINISHED catches it first. */
    buf_add(&b, head.p, head.len);
    build_at = (size_t)((uint8_t *)memmem(b.p, b.len, "writer 1.0", 10) -
                        b.p);
    b.p[build_at] = 'W';
    d = reader_fails(&b, r, MIG2_ERR_TRANSCRIPT, MIG2_WIRE_TRANSCRIPT);
    assert_problem(mig2_engine_error(d), 0, MIG2_PROB_TRANSCRIPT, "finished",
                   "verify data over this side's transcript",
                   "different verify data");
    mig2_engine_free(d);
    buf_free(&b);

    /* Incompatible: every problem, nothing written back. */
    assert_int_equal(mig2_profile_set_machine(r, "q35"), MIG2_OK);
    d = reader_fails(&head, r, MIG2_ERR_INCOMPATIBLE, MIG2_WIRE_INCOMPATIBLE);
    assert_problem(mig2_engine_error(d), 0, MIG2_PROB_MACHINE, "machine",
                   "q35", "mig2-pc");
    mig2_engine_free(d);

    /* A live stream is not a one-way stream, nor is one after grease. */
    b.len = 0;
    buf_add(&b, "QEVM\0\0\0\4", 8);
    put_frame(&b, MIG2_FRAME_SRC_HELLO, MIG2_FRAME_FLAG_CRITICAL, "", 0);
    assert_false(mig2_stream_is_oneway(b.p));
    mig2_engine_free(reader_fails(&b, r, MIG2_ERR_PROTOCOL,
                                  MIG2_WIRE_PROTOCOL));
    b.len = 8;
    put_frame(&b, 0x0a0a, 0, "", 0);
    buf_add(&b, head.p + 8, head.len - 8);
    d = reader_fails(&b, r, MIG2_ERR_PROTOCOL, MIG2_WIRE_PROTOCOL);
    assert_problem(mig2_engine_error(d), 0, MIG2_PROB_MALFORMED, "frame",
                   "MANIFEST", "frame type 0x0a0a");
    mig2_engine_free(d);
    /* v3 is the legacy loader's business. */
    b.len = 0;
    buf_add(&b, "QEVM\0\0\0\3", 8);
    mig2_engine_free(reader_fails(&b, r, MIG2_ERR_LEGACY_STREAM,
                                  MIG2_WIRE_PROTOCOL));
    buf_free(&b);
    buf_free(&head);
    mig2_profile_free(r);
}

/* A live destination does not take a MANIFEST for a SRC_HELLO. */
static void test_live_destination_refuses_manifest(void **state)
{
    Buf head = { 0 };
    Mig2Profile *r = reader_profile();
    Mig2Engine *d = mig2_engine_new(MIG2_ROLE_DESTINATION, r, NULL, NULL);
    size_t len;

    (void)state;
    writer_head(&head, false);
    assert_int_equal(mig2_engine_recv(d, head.p, head.len), MIG2_ERR_PROTOCOL);
    assert_int_equal(mig2_engine_error(d)->code, MIG2_WIRE_PROTOCOL);
    assert_string_equal(mig2_engine_error(d)->message,
                        "unexpected frame: MANIFEST while waiting for "
                        "SRC_HELLO");
    assert_non_null(mig2_engine_output(d, &len));     /* its ERROR */
    mig2_engine_free(d);
    mig2_profile_free(r);
    buf_free(&head);
}

/* ---- DIGEST ---- */

static void test_digest(void **state)
{
    /* SHA-256("abc"), FIPS 180-2 appendix B.1. */
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
    };
    uint8_t v[32];
    int rc = -1;
    Mig2Digest *d = mig2_digest_new(&rc);
    Mig2Writer w;

    (void)state;
    assert_int_equal(rc, MIG2_OK);
    assert_int_equal(mig2_digest_update(d, "a", 1), MIG2_OK);
    assert_int_equal(mig2_digest_update(d, "bc", 2), MIG2_OK);
    assert_int_equal(mig2_digest_value(d, v), MIG2_OK);
    assert_memory_equal(v, abc, 32);
    /* Still usable: the value so far, again. */
    assert_int_equal(mig2_digest_value(d, v), MIG2_OK);
    assert_memory_equal(v, abc, 32);
    mig2_wr_init(&w, 64);
    mig2_digest_encode(&w, v);
    assert_int_equal(w.len, 40);
    assert_memory_equal(w.buf, "\x01\x06\x00\x01\x00\x00\x00\x20", 8);
    assert_memory_equal(w.buf + 8, abc, 32);
    mig2_wr_free(&w);
    mig2_digest_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stated_choices),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_unknown_tlvs),
        cmocka_unit_test(test_no_build),
        cmocka_unit_test(test_stated_revision_and_versions),
        cmocka_unit_test(test_wrong_frame_type),
        cmocka_unit_test(test_check_matches_live),
        cmocka_unit_test(test_engine_oneway_roundtrip),
        cmocka_unit_test(test_engine_oneway_failures),
        cmocka_unit_test(test_live_destination_refuses_manifest),
        cmocka_unit_test(test_digest),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
