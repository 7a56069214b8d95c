/*
 * test_engine - the sans-I/O handshake engine's mechanics
 *
 * Reassembly, limits, the transcript, channel binding, data after the
 * handshake, peer errors, abort, and the source's verification of the
 * destination's choices.  Engines talk to each other in memory; frames
 * are built, cut and tampered with by hand where a test needs it.
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

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
#include <sanitizer/allocator_interface.h>
#else
#include <malloc.h>
#endif

/* Heap bytes in use right now (for "nothing allocated up front"). */
static size_t heap_in_use(void)
{
#ifdef TEST_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
#endif
}

static const uint8_t NONCE_S[MIG2_NONCE_LEN] = {
    0x53, 0x52, 0x43, 0x00, 0x01, 0x02, 0x03, 0x04,
    0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
};
static const uint8_t NONCE_D[MIG2_NONCE_LEN] = {
    0x44, 0x53, 0x54, 0xf0, 0xe1, 0xd2, 0xc3, 0xb4,
    0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c,
};
static const uint8_t PREAMBLE_V4[MIG2_PREAMBLE_LEN] = {
    0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x04,
};

/* ---------------------------------------------------------------- */
/* Byte buffers and frames                                           */
/* ---------------------------------------------------------------- */

static size_t frame_size(const Frame *f)
{
    return MIG2_FRAME_HEADER_LEN + f->len;
}

/* ---------------------------------------------------------------- */
/* Engines                                                           */
/* ---------------------------------------------------------------- */

/*
 * Offer @buf to @to in two pieces cut at @cut (then @chunk bytes per call,
 * 0 meaning all), as a caller would: stop at the first failure or when the
 * handshake ends.
 */
static void deliver(Side *to, const uint8_t *buf, size_t len, size_t cut,
                    size_t chunk)
{
    size_t off = 0;

    while (off < len && mig2_engine_state(to->e) == MIG2_STATE_RUNNING) {
        size_t n = len - off;
        ssize_t r;

        if (off < cut) {
            n = cut - off;
        } else if (chunk && chunk < n) {
            n = chunk;
        }
        r = mig2_engine_recv(to->e, buf + off, n);
        if (r < 0) {
            if (!to->rc) {
                to->rc = r;
            }
            drain_events(to);
            return;
        }
        assert_true((size_t)r <= n);
        off += (size_t)r;
        if ((size_t)r < n) {
            break;
        }
    }
    to->left += len - off;
    drain_events(to);
}

/* Move @from's queued output into @to: see deliver(). */
static bool move_cut(Side *from, Side *to, size_t cut, size_t chunk)
{
    size_t len;
    const uint8_t *out = mig2_engine_output(from->e, &len);

    if (!len) {
        return false;
    }
    buf_add(&from->sent, out, len);
    deliver(to, out, len, cut, chunk);
    mig2_engine_output_consumed(from->e, len);
    drain_events(from);
    return true;
}

/* Shuttle bytes both ways until neither side has anything to send. */
static void pump(Pair *p, size_t chunk)
{
    bool moved;

    do {
        moved = move_cut(&p->s, &p->d, 0, chunk);
        moved = move_cut(&p->d, &p->s, 0, chunk) || moved;
    } while (moved);
}

static Mig2Engine *engine(Mig2Role role, const Mig2Profile *prof,
                          const Mig2EngineOptions *opts)
{
    int rc = -1;
    Mig2Engine *e = mig2_engine_new(role, prof, opts, &rc);

    assert_non_null(e);
    assert_int_equal(rc, MIG2_OK);
    assert_int_equal(mig2_engine_role(e), role);
    return e;
}

static void pair_start(Pair *p, const Mig2Profile *sp, const Mig2Profile *dp,
                       const Mig2EngineOptions *so,
                       const Mig2EngineOptions *dopt)
{
    memset(p, 0, sizeof(*p));
    p->s.e = engine(MIG2_ROLE_SOURCE, sp, so);
    p->d.e = engine(MIG2_ROLE_DESTINATION, dp, dopt);
}

static void pair_free(Pair *p)
{
    mig2_engine_free(p->s.e);
    mig2_engine_free(p->d.e);
    buf_free(&p->s.sent);
    buf_free(&p->d.sent);
    memset(p, 0, sizeof(*p));
}

/* Options with fixed nonces; @grease on or off. */
static Mig2EngineOptions opts_s(bool grease)
{
    Mig2EngineOptions o = { .nonce = NONCE_S, .no_grease = !grease };

    return o;
}

static Mig2EngineOptions opts_d(bool grease)
{
    Mig2EngineOptions o = { .nonce = NONCE_D, .no_grease = !grease };

    return o;
}

/* Take @e's whole pending output (into @b when non-NULL). */
static size_t take_output(Mig2Engine *e, Buf *b)
{
    size_t len, rest;
    const uint8_t *out = mig2_engine_output(e, &len);

    if (len && b) {
        buf_add(b, out, len);
    }
    mig2_engine_output_consumed(e, len);
    assert_null(mig2_engine_output(e, &rest));
    assert_int_equal(rest, 0);
    return len;
}

static size_t pending(Mig2Engine *e)
{
    size_t len;

    mig2_engine_output(e, &len);
    return len;
}

/* @e's pending output is exactly one ERROR frame: decode it into @err. */
static void take_error_frame(Mig2Engine *e, Mig2Error *err)
{
    Buf b = { 0 };
    Frame f[MAX_FRAMES];

    take_output(e, &b);
    assert_int_equal(frames_of(b.p, b.len, f, MAX_FRAMES), 1);
    assert_int_equal(f[0].type, MIG2_FRAME_ERROR);
    assert_int_equal(f[0].flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(mig2_error_decode(f[0].payload, f[0].len, err), MIG2_OK);
    buf_free(&b);
}

/* The next event of @e is @type. */
static void pop_event(Mig2Engine *e, Mig2EventType type)
{
    Mig2Event ev;

    assert_true(mig2_engine_next_event(e, &ev));
    assert_int_equal(ev.type, type);
}

/* @e failed by itself with @rc: state, event and error say so. */
static void assert_failed_locally(Mig2Engine *e, ssize_t got, int rc,
                                  uint32_t code, const char *message)
{
    const Mig2Error *err = mig2_engine_error(e);
    Mig2Event ev;

    assert_int_equal(got, rc);
    assert_int_equal(mig2_engine_state(e), MIG2_STATE_FAILED);
    assert_non_null(err);
    assert_false(err->from_peer);
    assert_int_equal(err->code, code);
    if (message) {
        assert_string_equal(err->message, message);
    }
    assert_true(mig2_engine_next_event(e, &ev));
    assert_int_equal(ev.type, MIG2_EV_FAILED);
    assert_ptr_equal(ev.error, err);
    assert_false(mig2_engine_next_event(e, &ev));
    /* A failed engine takes nothing more. */
    assert_int_equal(mig2_engine_recv(e, PREAMBLE_V4, 8), 0);
}

/* @e failed with @rc and queued an ERROR with @code and @message. */
static void assert_failed_with_error(Mig2Engine *e, ssize_t got, int rc,
                                     uint32_t code, const char *message)
{
    Mig2Error wire = { 0 };

    assert_failed_locally(e, got, rc, code, message);
    take_error_frame(e, &wire);
    assert_int_equal(wire.code, code);
    assert_string_equal(wire.message, mig2_engine_error(e)->message);
    assert_int_equal(wire.n_problems, mig2_engine_error(e)->n_problems);
    mig2_error_clear(&wire);
}

static void assert_complete(const Pair *p)
{
    const Side *sides[2] = { &p->s, &p->d };
    int i;

    for (i = 0; i < 2; i++) {
        const Side *s = sides[i];

        assert_int_equal(s->rc, 0);
        assert_int_equal(mig2_engine_state(s->e), MIG2_STATE_COMPLETE);
        assert_null(mig2_engine_error(s->e));
        assert_int_equal(s->left, 0);
        assert_int_equal(s->n_ev, 2);
        assert_int_equal(s->ev[0], MIG2_EV_NEGOTIATED);
        assert_int_equal(s->ev[1], MIG2_EV_COMPLETE);
        assert_non_null(mig2_result_channel_key(s->e));
    }
    assert_memory_equal(mig2_result_transcript_hash(p->s.e),
                        mig2_result_transcript_hash(p->d.e), MIG2_HASH_LEN);
    assert_memory_equal(mig2_result_channel_key(p->s.e),
                        mig2_result_channel_key(p->d.e), MIG2_HASH_LEN);
}

/* ---------------------------------------------------------------- */
/* Profiles                                                          */
/* ---------------------------------------------------------------- */

#define MACHINE "pc-q35-8.2"

static Mig2Profile *small_profile(bool source)
{
    Mig2Profile *p = mig2_profile_new();
    int dev;

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_build(p, source ? "src 1.0" : "dst 1.0"),
                     MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(p, MACHINE), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH,
                                              false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE, false),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 256u << 20,
                                                4096), MIG2_OK);
    dev = mig2_profile_add_device(p, "timer", 0, 1, 2);
    assert_int_equal(dev, 0);
    dev = mig2_profile_add_device(p, "serial", 0, source ? 3 : 1, 4);
    assert_int_equal(dev, 1);
    assert_int_equal(mig2_profile_add_subsection(p, dev, "fifo", source),
                     MIG2_OK);
    if (source) {
        assert_int_equal(mig2_profile_add_subsection(p, dev, "legacy-irq",
                                                     false), MIG2_OK);
        assert_int_equal(mig2_profile_propose_u64(p, "multifd-channels", 8,
                                                  0), MIG2_OK);
        assert_int_equal(mig2_profile_propose_bool(p, "postcopy-ram", true,
                                                   0), MIG2_OK);
    } else {
        assert_int_equal(mig2_profile_policy_clamp(p, "multifd-channels", 4),
                         MIG2_OK);
        assert_int_equal(mig2_profile_policy_refuse(p, "postcopy-ram"),
                         MIG2_OK);
    }
    return p;
}

/* A full handshake of two small profiles with @so / @dopt. */
static void small_run(Pair *p, const Mig2EngineOptions *so,
                      const Mig2EngineOptions *dopt, size_t chunk)
{
    Mig2Profile *sp = small_profile(true), *dp = small_profile(false);

    pair_start(p, sp, dp, so, dopt);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
    pump(p, chunk);
}

/* Start a pair of small profiles without moving any byte. */
static void small_start(Pair *p, const Mig2EngineOptions *so,
                        const Mig2EngineOptions *dopt)
{
    Mig2Profile *sp = small_profile(true), *dp = small_profile(false);

    pair_start(p, sp, dp, so, dopt);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* A large manifest                                                  */
/* ---------------------------------------------------------------- */

#define BIG_DEVICES 1000

static const char *const kinds[10] = {
    "virtio-net-pci", "virtio-blk-pci", "e1000e", "isa-serial", "qxl-vga",
    "ich9-ahci", "usb-ehci", "virtio-balloon", "pvpanic", "vhost-user-fs",
};

static uint32_t big_smin(size_t i)
{
    return 1 + (uint32_t)(i % 3);
}

static uint32_t big_smax(size_t i)
{
    return big_smin(i) + (uint32_t)(i % 5);
}

static uint32_t big_dmax(size_t i)
{
    return big_smin(i) + (uint32_t)(i % 7);
}

static Mig2Profile *big_profile(bool source)
{
    static const uint16_t sfeat[] = { 1, 2, 3, 5 };
    static const uint16_t dfeat[] = { 8, 1, 2, 4, 3 };
    static const char *const ram[] = {
        "pc.ram", "vga.vram", "pc.bios", "pc.rom", "virtio-mem-0", "hugemem",
    };
    Mig2Profile *p = mig2_profile_new();
    size_t i;

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_machine(p, MACHINE), MIG2_OK);
    assert_int_equal(mig2_profile_set_build(p, source ? "big-src" : "big-dst"),
                     MIG2_OK);
    if (source) {
        for (i = 0; i < 4; i++) {
            assert_int_equal(mig2_profile_add_feature(p, sfeat[i], false),
                             MIG2_OK);
        }
    } else {
        for (i = 0; i < 5; i++) {
            assert_int_equal(mig2_profile_add_feature(p, dfeat[i], false),
                             MIG2_OK);
        }
    }
    for (i = 0; i < 6; i++) {
        assert_int_equal(mig2_profile_add_ram_block(p, ram[i],
                                                    (uint64_t)(i + 1) << 24,
                                                    i == 5 ? 2u << 20 : 4096),
                         MIG2_OK);
    }
    for (i = 0; i < BIG_DEVICES; i++) {
        int dev = mig2_profile_add_device(p, kinds[i % 10], (uint32_t)(i / 10),
                                          source ? big_smin(i) : 1,
                                          source ? big_smax(i) : big_dmax(i));

        assert_int_equal(dev, (int)i);
        assert_int_equal(mig2_profile_add_subsection(p, dev, "sub-a", source),
                         MIG2_OK);
        assert_int_equal(mig2_profile_add_subsection(p, dev, "sub-b", false),
                         MIG2_OK);
        if (source || i % 4) {
            assert_int_equal(mig2_profile_add_subsection(p, dev, "sub-c",
                                                         false), MIG2_OK);
        }
    }
    if (source) {
        assert_int_equal(mig2_profile_propose_u64(p, "multifd-channels", 8, 0),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_bool(p, "postcopy-ram", true, 0),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_u64(p, "downtime-limit", 500, 0),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_str(p, "multifd-compression",
                                                  "zstd", 0), MIG2_OK);
        assert_int_equal(mig2_profile_propose_u64(p, "x-vendor-knob", 3, 0),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_bool(p, "xbzrle", true,
                                                   MIG2_CONFIG_REQUIRED),
                         MIG2_OK);
    } else {
        assert_int_equal(mig2_profile_policy_clamp(p, "multifd-channels", 4),
                         MIG2_OK);
        assert_int_equal(mig2_profile_policy_refuse(p, "postcopy-ram"),
                         MIG2_OK);
    }
    return p;
}

static void assert_same_value(const Mig2ConfigValue *a,
                              const Mig2ConfigValue *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->b, b->b);
    assert_int_equal(a->u, b->u);
    if (a->type == MIG2_CFG_STR) {
        assert_string_equal(a->s, b->s);
    }
}

static void test_big_manifest(void **state)
{
    static const Mig2ConfigStatus want_status[6] = {
        MIG2_CFG_CLAMPED, MIG2_CFG_REFUSED, MIG2_CFG_ACCEPTED,
        MIG2_CFG_ACCEPTED, MIG2_CFG_UNKNOWN, MIG2_CFG_ACCEPTED,
    };
    Mig2Profile *sp = big_profile(true), *dp = big_profile(false);
    uint64_t s_sent, s_recvd, d_sent, d_recvd;
    const uint16_t *a, *b;
    size_t i, n, k;
    Pair p;

    (void)state;
    assert_int_equal(mig2_profile_device_count(sp), BIG_DEVICES);
    assert_int_equal(mig2_profile_ram_block_count(dp), 6);
    pair_start(&p, sp, dp, NULL, NULL);
    pump(&p, 0);
    assert_complete(&p);

    assert_int_equal(mig2_result_revision(p.s.e), 2);
    assert_int_equal(mig2_result_revision(p.d.e), 2);
    assert_int_equal(mig2_result_round_trips(p.s.e), 1);
    assert_int_equal(mig2_result_round_trips(p.d.e), 1);
    assert_string_equal(mig2_result_peer_build(p.s.e), "big-dst");
    assert_string_equal(mig2_result_peer_build(p.d.e), "big-src");

    /* Features: common {1,2,3}; the rest mirrored. */
    n = mig2_result_features(p.s.e, MIG2_FEATURES_COMMON, &a);
    assert_int_equal(n, 3);
    assert_int_equal(a[0], 1);
    assert_int_equal(a[1], 2);
    assert_int_equal(a[2], 3);
    n = mig2_result_features(p.d.e, MIG2_FEATURES_COMMON, &a);
    assert_int_equal(n, 3);
    assert_int_equal(a[0], 1);
    assert_int_equal(a[1], 2);
    assert_int_equal(a[2], 3);
    n = mig2_result_features(p.s.e, MIG2_FEATURES_PEER_LACKS, &a);
    assert_int_equal(n, 1);
    assert_int_equal(a[0], 5);
    assert_int_equal(mig2_result_features(p.d.e, MIG2_FEATURES_LOCAL_LACKS,
                                          &b), 1);
    assert_int_equal(b[0], 5);
    n = mig2_result_features(p.s.e, MIG2_FEATURES_LOCAL_LACKS, &a);
    assert_int_equal(n, 2);
    assert_int_equal(a[0], 8);
    assert_int_equal(a[1], 4);
    assert_int_equal(mig2_result_features(p.d.e, MIG2_FEATURES_PEER_LACKS,
                                          &b), 2);
    assert_memory_equal(a, b, 2 * sizeof(*a));

    /* Config: every result identical on both sides. */
    assert_int_equal(mig2_result_config_count(p.s.e), 6);
    assert_int_equal(mig2_result_config_count(p.d.e), 6);
    for (i = 0; i < 6; i++) {
        const Mig2ConfigResult *x = mig2_result_config(p.s.e, i);
        const Mig2ConfigResult *y = mig2_result_config(p.d.e, i);

        assert_string_equal(x->name, y->name);
        assert_same_value(&x->proposed, &y->proposed);
        assert_same_value(&x->final, &y->final);
        assert_int_equal(x->status, want_status[i]);
        assert_int_equal(y->status, want_status[i]);
        assert_int_equal(x->required, y->required);
        assert_int_equal(x->required, i == 5);
    }
    assert_int_equal(mig2_result_config_find(p.d.e, "multifd-channels")
                         ->final.u, 4);

    /* Devices: versions in the source's order, on both sides. */
    for (k = 0; k < 2; k++) {
        const Mig2Engine *e = k ? p.d.e : p.s.e;

        assert_int_equal(mig2_result_device_count(e), BIG_DEVICES);
        for (i = 0; i < BIG_DEVICES; i++) {
            const Mig2DeviceResult *r = mig2_result_device(e, i);
            uint32_t want = big_smax(i) < big_dmax(i) ? big_smax(i)
                                                      : big_dmax(i);

            assert_string_equal(r->id, kinds[i % 10]);
            assert_int_equal(r->instance, i / 10);
            assert_int_equal(r->version, want);
        }
        assert_int_equal(mig2_result_omitted_count(e), BIG_DEVICES / 4);
        for (i = 0; i < BIG_DEVICES / 4; i++) {
            const Mig2OmittedSubsection *o = mig2_result_omitted(e, i);

            assert_string_equal(o->device, kinds[(i * 4) % 10]);
            assert_int_equal(o->instance, i * 4 / 10);
            assert_string_equal(o->subsection, "sub-c");
        }
    }

    assert_memory_equal(mig2_result_session_id(p.s.e),
                        mig2_result_session_id(p.d.e), MIG2_SESSION_ID_LEN);

    /* Byte counts: what one sent, the other received. */
    mig2_result_bytes(p.s.e, &s_sent, &s_recvd);
    mig2_result_bytes(p.d.e, &d_sent, &d_recvd);
    assert_int_equal(s_sent, d_recvd);
    assert_int_equal(d_sent, s_recvd);
    assert_int_equal(s_sent, p.s.sent.len);
    assert_int_equal(d_sent, p.d.sent.len);
    assert_true(s_sent > 50000);

    pair_free(&p);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Determinism, transcript and keys                                  */
/* ---------------------------------------------------------------- */

static void hmac2(const void *key, size_t key_len, const char *label,
                  const uint8_t *data, size_t len, uint8_t out[MIG2_HASH_LEN])
{
    const void *parts[2] = { label, data };
    size_t lens[2] = { strlen(label), len };

    assert_int_equal(mig2_hmac(key, key_len, parts, lens, 2, out), MIG2_OK);
}

/*
 * Check the transcript, both FINISHED frames and the channel key of a
 * completed no-grease run against the formulas of the design notes.
 */
static void check_crypto(const Pair *p, const uint8_t *binding,
                         size_t binding_len)
{
    Frame sf[MAX_FRAMES], df[MAX_FRAMES];
    uint8_t th[MIG2_HASH_LEN], vd[MIG2_HASH_LEN], key[MIG2_HASH_LEN];
    uint8_t msg[2 * MIG2_NONCE_LEN + 64];
    Mig2Hash *h;
    size_t ns, nd;

    ns = frames_of(p->s.sent.p + MIG2_PREAMBLE_LEN,
                   p->s.sent.len - MIG2_PREAMBLE_LEN, sf, MAX_FRAMES);
    nd = frames_of(p->d.sent.p, p->d.sent.len, df, MAX_FRAMES);
    assert_int_equal(ns, 2);
    assert_int_equal(nd, 2);
    assert_int_equal(sf[0].type, MIG2_FRAME_SRC_HELLO);
    assert_int_equal(sf[1].type, MIG2_FRAME_FINISHED);
    assert_int_equal(df[0].type, MIG2_FRAME_DST_HELLO);
    assert_int_equal(df[1].type, MIG2_FRAME_FINISHED);
    assert_int_equal(sf[1].flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(sf[1].len, MIG2_VERIFY_LEN);
    assert_int_equal(df[1].len, MIG2_VERIFY_LEN);
    assert_memory_equal(p->s.sent.p, PREAMBLE_V4, MIG2_PREAMBLE_LEN);

    /* transcript = SHA-256(preamble || SRC_HELLO || DST_HELLO) */
    assert_int_equal(mig2_hash_new(&h), MIG2_OK);
    assert_int_equal(mig2_hash_update(h, p->s.sent.p,
                                      MIG2_PREAMBLE_LEN + frame_size(&sf[0])),
                     MIG2_OK);
    assert_int_equal(mig2_hash_update(h, df[0].start, frame_size(&df[0])),
                     MIG2_OK);
    assert_int_equal(mig2_hash_peek(h, th), MIG2_OK);
    mig2_hash_free(h);
    assert_memory_equal(mig2_result_transcript_hash(p->s.e), th,
                        MIG2_HASH_LEN);

    hmac2(binding, binding_len, "mig2 dst finished", th, sizeof(th), vd);
    assert_memory_equal(df[1].payload, vd, MIG2_VERIFY_LEN);
    hmac2(binding, binding_len, "mig2 src finished", th, sizeof(th), vd);
    assert_memory_equal(sf[1].payload, vd, MIG2_VERIFY_LEN);

    /* channel key = HMAC(th, label || session id || dst nonce || binding) */
    memcpy(msg, NONCE_S, MIG2_NONCE_LEN);
    memcpy(msg + MIG2_NONCE_LEN, NONCE_D, MIG2_NONCE_LEN);
    if (binding_len) {
        memcpy(msg + 2 * MIG2_NONCE_LEN, binding, binding_len);
    }
    hmac2(th, sizeof(th), "mig2 channel key", msg,
          2 * MIG2_NONCE_LEN + binding_len, key);
    assert_memory_equal(mig2_result_channel_key(p->s.e), key, MIG2_HASH_LEN);
    assert_memory_equal(mig2_result_session_id(p->d.e), NONCE_S,
                        MIG2_SESSION_ID_LEN);
}

static void test_determinism(void **state)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Pair a, b;

    (void)state;
    small_run(&a, &so, &dopt, 0);
    small_run(&b, &so, &dopt, 7);
    assert_complete(&a);
    assert_complete(&b);
    assert_int_equal(a.s.sent.len, b.s.sent.len);
    assert_memory_equal(a.s.sent.p, b.s.sent.p, a.s.sent.len);
    assert_int_equal(a.d.sent.len, b.d.sent.len);
    assert_memory_equal(a.d.sent.p, b.d.sent.p, a.d.sent.len);
    assert_memory_equal(mig2_result_transcript_hash(a.s.e),
                        mig2_result_transcript_hash(b.d.e), MIG2_HASH_LEN);
    assert_memory_equal(mig2_result_channel_key(a.s.e),
                        mig2_result_channel_key(b.d.e), MIG2_HASH_LEN);
    check_crypto(&a, NULL, 0);
    pair_free(&b);

    /* Another destination nonce: other bytes, other transcript. */
    dopt.nonce = NONCE_S;
    small_run(&b, &so, &dopt, 0);
    assert_complete(&b);
    assert_int_equal(a.s.sent.len, b.s.sent.len);
    assert_int_equal(a.d.sent.len, b.d.sent.len);
    assert_memory_not_equal(a.d.sent.p, b.d.sent.p, a.d.sent.len);
    assert_memory_not_equal(mig2_result_transcript_hash(a.s.e),
                            mig2_result_transcript_hash(b.s.e),
                            MIG2_HASH_LEN);
    pair_free(&a);
    pair_free(&b);
}

/* The grease TLV and grease feature id in a HELLO payload. */
static void assert_hello_greased(const Frame *f)
{
    Mig2Reader rd, v;
    uint16_t type, id;
    uint8_t flags;
    bool crit, tlv = false, feat = false;

    mig2_rd_init(&rd, f->payload, f->len);
    while (mig2_rd_left(&rd)) {
        assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
        if (mig2_is_grease(type)) {
            assert_false(crit);
            assert_in_range(mig2_rd_left(&v), 0, 15);
            assert_false(tlv);
            tlv = true;
        }
        if (type == MIG2_TLV_FEATURES) {
            while (mig2_rd_left(&v)) {
                assert_int_equal(mig2_rd_u16(&v, &id), MIG2_OK);
                assert_int_equal(mig2_rd_u8(&v, &flags), MIG2_OK);
                feat = feat || mig2_is_grease(id);
            }
        }
    }
    assert_true(tlv);
    assert_true(feat);
}

static void test_grease(void **state)
{
    uint8_t ns[MIG2_NONCE_LEN], nd[MIG2_NONCE_LEN];
    Frame f[MAX_FRAMES];
    const uint16_t *ids;
    size_t n;
    int round;

    (void)state;
    for (round = 0; round < 16; round++) {
        Mig2EngineOptions so = { .nonce = ns }, dopt = { .nonce = nd };
        Pair p;

        memcpy(ns, NONCE_S, sizeof(ns));
        memcpy(nd, NONCE_D, sizeof(nd));
        /* The grease seed comes from nonce bytes 0, 5, 10 and 15. */
        ns[0] = ns[5] = ns[10] = ns[15] = (uint8_t)(round * 37);
        nd[0] = nd[5] = nd[10] = nd[15] = (uint8_t)(round * 91 + 3);
        small_run(&p, &so, &dopt, (size_t)round % 3);
        assert_complete(&p);

        n = frames_of(p.s.sent.p + MIG2_PREAMBLE_LEN,
                      p.s.sent.len - MIG2_PREAMBLE_LEN, f, MAX_FRAMES);
        assert_int_equal(n, 3);
        assert_true(mig2_is_grease(f[0].type));
        assert_int_equal(f[0].flags, 0);
        assert_in_range(f[0].len, 0, 15);
        assert_int_equal(f[1].type, MIG2_FRAME_SRC_HELLO);
        assert_hello_greased(&f[1]);
        assert_int_equal(f[2].type, MIG2_FRAME_FINISHED);

        n = frames_of(p.d.sent.p, p.d.sent.len, f, MAX_FRAMES);
        assert_int_equal(n, 3);
        assert_true(mig2_is_grease(f[0].type));
        assert_int_equal(f[0].flags, 0);
        assert_int_equal(f[1].type, MIG2_FRAME_DST_HELLO);
        assert_hello_greased(&f[1]);
        assert_int_equal(f[2].type, MIG2_FRAME_FINISHED);

        /* Grease never shows up in results. */
        n = mig2_result_features(p.s.e, MIG2_FEATURES_COMMON, &ids);
        assert_int_equal(n, 2);
        n = mig2_result_features(p.s.e, MIG2_FEATURES_LOCAL_LACKS, &ids);
        assert_int_equal(n, 0);
        n = mig2_result_features(p.d.e, MIG2_FEATURES_LOCAL_LACKS, &ids);
        assert_int_equal(n, 0);
        pair_free(&p);
    }
}

/* ---------------------------------------------------------------- */
/* Destination preamble                                              */
/* ---------------------------------------------------------------- */

static void test_preamble(void **state)
{
    static const struct {
        uint8_t pre[MIG2_PREAMBLE_LEN];
        int rc;
        const char *message;
    } cases[] = {
        { { 'G', 'E', 'T', ' ', '/', ' ', 'H', 'T' }, MIG2_ERR_NOT_MIGRATION,
          "not a migration stream (no QEVM magic)" },
        { { 0x51, 0x45, 0x56, 0x4e, 0, 0, 0, 4 }, MIG2_ERR_NOT_MIGRATION,
          "not a migration stream (no QEVM magic)" },
        { { 0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3 }, MIG2_ERR_LEGACY_STREAM,
          "the source sent a legacy v3 migration stream, but this "
          "destination requires the v2 handshake (channel-type handshake)" },
        { { 0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 5 }, MIG2_ERR_BAD_VERSION,
          "Unsupported migration stream version 5 (expected 4)" },
        { { 0x51, 0x45, 0x56, 0x4d, 1, 0, 0, 4 }, MIG2_ERR_BAD_VERSION,
          "Unsupported migration stream version 16777220 (expected 4)" },
    };
    Mig2Profile *dp = small_profile(false);
    size_t i, split;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (split = 0; split < MIG2_PREAMBLE_LEN; split += 3) {
            Mig2Engine *d = engine(MIG2_ROLE_DESTINATION, dp, NULL);
            uint8_t buf[64];
            ssize_t r;

            /* The preamble, then more bytes that are never looked at. */
            memset(buf, 0xee, sizeof(buf));
            memcpy(buf, cases[i].pre, MIG2_PREAMBLE_LEN);
            if (split) {
                assert_int_equal(mig2_engine_recv(d, buf, split),
                                 (ssize_t)split);
                assert_int_equal(mig2_engine_state(d), MIG2_STATE_RUNNING);
            }
            r = mig2_engine_recv(d, buf + split, sizeof(buf) - split);
            assert_failed_locally(d, r, cases[i].rc, MIG2_WIRE_PROTOCOL,
                                  cases[i].message);
            /* Nothing goes back to a peer that does not speak v2. */
            assert_int_equal(pending(d), 0);
            assert_false(mig2_result_ready(d));
            mig2_engine_free(d);
        }
    }
    assert_true(strstr(cases[3].message,
                       "Unsupported migration stream version") != NULL);

    /* A v4 preamble alone: fine, nothing to say yet. */
    {
        Mig2Engine *d = engine(MIG2_ROLE_DESTINATION, dp, NULL);
        uint64_t sent, recvd;

        assert_int_equal(mig2_engine_recv(d, PREAMBLE_V4, 8), 8);
        assert_int_equal(mig2_engine_state(d), MIG2_STATE_RUNNING);
        assert_int_equal(pending(d), 0);
        assert_null(mig2_engine_error(d));
        mig2_result_bytes(d, &sent, &recvd);
        assert_int_equal(sent, 0);
        assert_int_equal(recvd, 8);
        assert_null(mig2_result_session_id(d));
        assert_null(mig2_result_transcript_hash(d));
        mig2_engine_free(d);
    }
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Frame limits                                                      */
/* ---------------------------------------------------------------- */

static void test_engine_new_args(void **state)
{
    Mig2Profile *p = small_profile(true), *bare = mig2_profile_new();
    Mig2EngineOptions o = { .max_frame = MIG2_FRAME_MAX + 1 };
    int rc = 0;

    (void)state;
    assert_null(mig2_engine_new(MIG2_ROLE_SOURCE, p, &o, &rc));
    assert_int_equal(rc, MIG2_ERR_INVALID_ARG);
    rc = 0;
    assert_null(mig2_engine_new((Mig2Role)2, p, NULL, &rc));
    assert_int_equal(rc, MIG2_ERR_INVALID_ARG);
    rc = 0;
    assert_null(mig2_engine_new(MIG2_ROLE_DESTINATION, NULL, NULL, &rc));
    assert_int_equal(rc, MIG2_ERR_INVALID_ARG);
    rc = 0;
    /* A profile without a machine. */
    assert_null(mig2_engine_new(MIG2_ROLE_DESTINATION, bare, NULL, &rc));
    assert_int_equal(rc, MIG2_ERR_INVALID_ARG);
    assert_null(mig2_engine_new(MIG2_ROLE_DESTINATION, bare, NULL, NULL));
    o.max_frame = MIG2_FRAME_MAX;
    mig2_engine_free(engine(MIG2_ROLE_DESTINATION, p, &o));
    mig2_engine_free(NULL);
    mig2_profile_free(p);
    mig2_profile_free(bare);
}

static void test_frame_too_large(void **state)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Frame f[MAX_FRAMES];
    char msg[96], actual[32];
    Buf b = { 0 };
    ssize_t r;
    Pair p;

    (void)state;
    /* Destination with a 64-byte limit gets a bigger SRC_HELLO. */
    dopt.max_frame = 64;
    small_start(&p, &so, &dopt);
    take_output(p.s.e, &b);
    assert_int_equal(frames_of(b.p + 8, b.len - 8, f, MAX_FRAMES), 1);
    assert_true(f[0].len > 64);
    snprintf(msg, sizeof(msg),
             "SRC_HELLO frame of %u bytes exceeds the 64-byte limit",
             f[0].len);
    snprintf(actual, sizeof(actual), "%u bytes", f[0].len);
    /* Header and 3 payload bytes; the rest is never looked at. */
    r = mig2_engine_recv(p.d.e, b.p, 8 + 8 + 3);
    assert_failed_with_error(p.d.e, r, MIG2_ERR_TOO_LARGE, MIG2_WIRE_PROTOCOL,
                             msg);
    assert_int_equal(mig2_engine_error(p.d.e)->n_problems, 1);
    assert_problem(mig2_engine_error(p.d.e), 0, MIG2_PROB_MALFORMED, "frame",
                   "at most 64 bytes", actual);
    buf_free(&b);
    pair_free(&p);

    /* The source's limit applies to DST_HELLO too; its ERROR reaches the */
    /* destination, which reports it as REJECTED. */
    dopt.max_frame = 0;
    so.max_frame = 100;
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    take_output(p.d.e, &b);
    r = mig2_engine_recv(p.s.e, b.p, b.len);
    assert_int_equal(r, MIG2_ERR_TOO_LARGE);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_FAILED);
    drain_events(&p.s);
    assert_int_equal(p.s.n_ev, 1);
    assert_int_equal(p.s.ev[0], MIG2_EV_FAILED);
    move_cut(&p.s, &p.d, 0, 0);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_FAILED);
    assert_int_equal(p.d.n_ev, 2);
    assert_int_equal(p.d.ev[1], MIG2_EV_REJECTED);
    assert_true(mig2_engine_error(p.d.e)->from_peer);
    assert_int_equal(mig2_engine_error(p.d.e)->code, MIG2_WIRE_PROTOCOL);
    assert_int_equal(frames_of(b.p, b.len, f, MAX_FRAMES), 2);
    snprintf(msg, sizeof(msg),
             "DST_HELLO frame of %u bytes exceeds the 100-byte limit",
             f[0].len);
    snprintf(actual, sizeof(actual), "%u bytes", f[0].len);
    assert_string_equal(mig2_engine_error(p.d.e)->message, msg);
    assert_int_equal(mig2_engine_error(p.d.e)->n_problems, 1);
    assert_problem(mig2_engine_error(p.d.e), 0, MIG2_PROB_MALFORMED, "frame",
                   "at most 100 bytes", actual);
    buf_free(&b);
    pair_free(&p);

    /* Exactly at the limit is fine, one byte more is not. */
    {
        Mig2Profile *dp = small_profile(false);
        Mig2EngineOptions o = { .max_frame = 16 };
        Mig2Engine *d = engine(MIG2_ROLE_DESTINATION, dp, &o);
        uint8_t junk[17] = { 0 };

        buf_add(&b, PREAMBLE_V4, 8);
        put_frame(&b, 0x0123, 0, junk, 16);
        assert_int_equal(mig2_engine_recv(d, b.p, b.len), (ssize_t)b.len);
        assert_int_equal(mig2_engine_state(d), MIG2_STATE_RUNNING);
        b.len = 0;
        put_frame(&b, 0x0123, 0, junk, 17);
        r = mig2_engine_recv(d, b.p, b.len);
        assert_failed_with_error(d, r, MIG2_ERR_TOO_LARGE, MIG2_WIRE_PROTOCOL,
                                 NULL);
        assert_non_null(strstr(mig2_engine_error(d)->message,
                               " of 17 bytes exceeds the 16-byte limit"));
        assert_problem(mig2_engine_error(d), 0, MIG2_PROB_MALFORMED, "frame",
                       "at most 16 bytes", "17 bytes");
        mig2_engine_free(d);

        /* An oversized ERROR ends it too, but nobody answers an ERROR. */
        d = engine(MIG2_ROLE_DESTINATION, dp, &o);
        b.len = 0;
        buf_add(&b, PREAMBLE_V4, 8);
        put_frame(&b, MIG2_FRAME_ERROR, MIG2_FRAME_FLAG_CRITICAL, junk, 17);
        r = mig2_engine_recv(d, b.p, b.len);
        assert_failed_locally(d, r, MIG2_ERR_TOO_LARGE, MIG2_WIRE_PROTOCOL,
                              "ERROR frame of 17 bytes exceeds the 16-byte "
                              "limit");
        assert_int_equal(pending(d), 0);
        mig2_engine_free(d);
        mig2_profile_free(dp);
        buf_free(&b);
    }
}

/* A 16 MiB frame header costs nothing until its payload arrives. */
static void test_frame_lazy_allocation(void **state)
{
    Mig2Profile *dp = small_profile(false);
    Mig2Engine *d = engine(MIG2_ROLE_DESTINATION, dp, NULL);
    const size_t step = 1 << 20;
    uint8_t *chunk = calloc(1, step);
    Buf b = { 0 };
    size_t before, i;
    Mig2Event ev;

    (void)state;
    assert_non_null(chunk);
    buf_add(&b, PREAMBLE_V4, 8);
    put_be16(&b, 0x0123);
    put_be16(&b, 0);
    put_be32(&b, MIG2_FRAME_MAX);
    before = heap_in_use();
    assert_int_equal(mig2_engine_recv(d, b.p, b.len), (ssize_t)b.len);
    assert_int_equal(mig2_engine_state(d), MIG2_STATE_RUNNING);
    assert_true(heap_in_use() < before + 65536);
    /* One payload byte: a small buffer, not the announced 16 MiB. */
    assert_int_equal(mig2_engine_recv(d, chunk, 1), 1);
    assert_true(heap_in_use() < before + 1024 * 1024);

    /* The whole frame is accepted (and skipped: unknown, not critical). */
    assert_int_equal(mig2_engine_recv(d, chunk, step - 1),
                     (ssize_t)(step - 1));
    for (i = 1; i < MIG2_FRAME_MAX / step; i++) {
        assert_int_equal(mig2_engine_recv(d, chunk, step), (ssize_t)step);
    }
    assert_int_equal(mig2_engine_state(d), MIG2_STATE_RUNNING);
    assert_false(mig2_engine_next_event(d, &ev));
    assert_int_equal(pending(d), 0);
    free(chunk);
    buf_free(&b);
    mig2_engine_free(d);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Unknown and misplaced frames                                      */
/* ---------------------------------------------------------------- */

/* Frames a receiver must skip: unknown non-critical types and grease. */
static void put_skippable(Buf *b)
{
    static const uint8_t junk[5] = { 1, 2, 3, 4, 5 };

    put_frame(b, 0x0123, 0, junk, 5);
    put_frame(b, 0x0a0a, 0, NULL, 0);
    put_frame(b, 0x7afa, 0, junk, 3);
    put_frame(b, 0x1a2a, 0, junk, 1);
    /* Flag bits other than CRITICAL mean nothing. */
    put_frame(b, 0x0100, 0xfffe, junk, 2);
    put_frame(b, 0x0201, 0x0002, NULL, 0);
}

static void test_unknown_frames_skipped(void **state)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Frame f[MAX_FRAMES];
    Buf flight = { 0 }, b = { 0 };
    Pair p;

    (void)state;
    /* Before SRC_HELLO: skipped by the destination but hashed, so the */
    /* source, which never sent them, sees a transcript mismatch. */
    small_start(&p, &so, &dopt);
    take_output(p.s.e, &flight);
    buf_add(&b, flight.p, MIG2_PREAMBLE_LEN);
    put_skippable(&b);
    buf_add(&b, flight.p + MIG2_PREAMBLE_LEN, flight.len - MIG2_PREAMBLE_LEN);
    deliver(&p.d, b.p, b.len, 0, 0);
    assert_int_equal(p.d.rc, 0);
    assert_int_equal(p.d.left, 0);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_RUNNING);
    assert_int_equal(p.d.n_ev, 1);
    assert_int_equal(p.d.ev[0], MIG2_EV_NEGOTIATED);
    move_cut(&p.d, &p.s, 0, 0);
    assert_int_equal(p.s.rc, MIG2_ERR_TRANSCRIPT);
    assert_int_equal(frames_of(p.d.sent.p, p.d.sent.len, f, MAX_FRAMES), 2);
    pair_free(&p);
    buf_free(&b);

    /* After SRC_HELLO and after DST_HELLO they are outside the transcript: */
    /* DST_HELLO, junk, FINISHED to the source; junk, FINISHED back. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    flight.len = 0;
    take_output(p.d.e, &flight);
    assert_int_equal(frames_of(flight.p, flight.len, f, MAX_FRAMES), 2);
    b.len = 0;
    buf_add(&b, f[0].start, frame_size(&f[0]));
    put_skippable(&b);
    buf_add(&b, f[1].start, frame_size(&f[1]));
    deliver(&p.s, b.p, b.len, 0, 0);
    assert_int_equal(p.s.rc, 0);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    b.len = 0;
    put_skippable(&b);
    take_output(p.s.e, &b);
    deliver(&p.d, b.p, b.len, 0, 0);
    assert_int_equal(p.d.rc, 0);
    assert_int_equal(p.d.left, 0);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_COMPLETE);
    assert_memory_equal(mig2_result_channel_key(p.s.e),
                        mig2_result_channel_key(p.d.e), MIG2_HASH_LEN);
    pair_free(&p);
    buf_free(&b);
    buf_free(&flight);
}

static void test_unknown_critical_frame(void **state)
{
    static const uint16_t types[] = { 0x0123, 0x0a0a, 0x0006, 0x0100 };
    Mig2Profile *dp = small_profile(false), *sp = small_profile(true);
    Mig2EngineOptions so = opts_s(false);
    char actual[48], msg[96];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        Mig2Engine *d = engine(MIG2_ROLE_DESTINATION, dp, NULL);
        Mig2Engine *s = engine(MIG2_ROLE_SOURCE, sp, &so);
        Mig2Error wire = { 0 };
        Buf b = { 0 };
        ssize_t r;

        snprintf(actual, sizeof(actual), "critical frame type 0x%04x",
                 types[i]);
        snprintf(msg, sizeof(msg), "the peer sent a %s this side does not "
                 "understand", actual);
        buf_add(&b, PREAMBLE_V4, 8);
        put_frame(&b, types[i], MIG2_FRAME_FLAG_CRITICAL, "x", 1);
        r = mig2_engine_recv(d, b.p, b.len);
        assert_failed_locally(d, r, MIG2_ERR_UNKNOWN_CRITICAL,
                              MIG2_WIRE_UNKNOWN_CRITICAL, msg);
        assert_int_equal(mig2_engine_error(d)->n_problems, 1);
        assert_problem(mig2_engine_error(d), 0, MIG2_PROB_UNKNOWN_CRITICAL,
                       "frame", "a known frame type", actual);
        take_error_frame(d, &wire);
        assert_int_equal(wire.code, MIG2_WIRE_UNKNOWN_CRITICAL);
        assert_string_equal(wire.message, msg);
        assert_problem(&wire, 0, MIG2_PROB_UNKNOWN_CRITICAL, "frame",
                       "a known frame type", actual);
        mig2_error_clear(&wire);

        /* The source too. */
        take_output(s, NULL);
        r = mig2_engine_recv(s, b.p + 8, b.len - 8);
        assert_failed_with_error(s, r, MIG2_ERR_UNKNOWN_CRITICAL,
                                 MIG2_WIRE_UNKNOWN_CRITICAL, msg);
        buf_free(&b);
        mig2_engine_free(d);
        mig2_engine_free(s);
    }
    mig2_profile_free(dp);
    mig2_profile_free(sp);
}

/* The frames of a complete no-grease, fixed-nonce run at @rev. */
typedef struct Script {
    Buf src;        /* preamble, SRC_HELLO, FINISHED */
    Buf dst;        /* DST_HELLO, FINISHED [, READY] */
    Frame sf[MAX_FRAMES];
    Frame df[MAX_FRAMES];
    size_t n_sf, n_df;
} Script;

static void script_make(Script *sc, uint16_t rev)
{
    Mig2Profile *sp = small_profile(true), *dp = small_profile(false);
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Pair p;

    memset(sc, 0, sizeof(*sc));
    assert_int_equal(mig2_profile_set_revisions(sp, 1, rev), MIG2_OK);
    pair_start(&p, sp, dp, &so, &dopt);
    pump(&p, 0);
    assert_complete(&p);
    sc->src = p.s.sent;
    sc->dst = p.d.sent;
    memset(&p.s.sent, 0, sizeof(p.s.sent));
    memset(&p.d.sent, 0, sizeof(p.d.sent));
    pair_free(&p);
    sc->n_sf = frames_of(sc->src.p + 8, sc->src.len - 8, sc->sf, MAX_FRAMES);
    sc->n_df = frames_of(sc->dst.p, sc->dst.len, sc->df, MAX_FRAMES);
    assert_int_equal(sc->n_sf, 2);
    assert_int_equal(sc->n_df, rev == 1 ? 3 : 2);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void script_free(Script *sc)
{
    buf_free(&sc->src);
    buf_free(&sc->dst);
}

/*
 * Feed @f to @e and expect a protocol failure with @message and one
 * malformed problem at "frame" with @expected / @actual.
 */
static void expect_unexpected(Mig2Engine *e, const Frame *f,
                              const char *message, const char *expected,
                              const char *actual)
{
    ssize_t r;

    take_output(e, NULL);
    r = mig2_engine_recv(e, f->start, frame_size(f));
    assert_failed_with_error(e, r, MIG2_ERR_PROTOCOL, MIG2_WIRE_PROTOCOL,
                             message);
    assert_int_equal(mig2_engine_error(e)->n_problems, 1);
    assert_problem(mig2_engine_error(e), 0, MIG2_PROB_MALFORMED, "frame",
                   expected, actual);
}

static void test_wrong_state_frames(void **state)
{
    Mig2Profile *sp = small_profile(true), *dp = small_profile(false);
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Script sc, sc1;
    const Frame *src_hello, *src_fin, *dst_hello, *dst_fin, *ready;
    Frame empty_ready = { .type = MIG2_FRAME_READY };
    Mig2Engine *e;
    uint8_t ready_bytes[8] = { 0, 4, 0, 1, 0, 0, 0, 0 };
    uint8_t fat_ready[9] = { 0, 4, 0, 1, 0, 0, 0, 1, 0 };
    Frame fat = { .type = MIG2_FRAME_READY, .len = 1 };

    (void)state;
    script_make(&sc, 2);
    script_make(&sc1, 1);
    src_hello = &sc.sf[0];
    src_fin = &sc.sf[1];
    dst_hello = &sc.df[0];
    dst_fin = &sc.df[1];
    ready = &sc1.df[2];
    empty_ready.start = ready_bytes;
    fat.start = fat_ready;
    fat.payload = fat_ready + 8;

    /* Destination, waiting for SRC_HELLO. */
    e = engine(MIG2_ROLE_DESTINATION, dp, &dopt);
    assert_int_equal(mig2_engine_recv(e, PREAMBLE_V4, 8), 8);
    expect_unexpected(e, src_fin,
                      "unexpected frame: FINISHED while waiting for "
                      "SRC_HELLO", "SRC_HELLO", "FINISHED");
    mig2_engine_free(e);
    e = engine(MIG2_ROLE_DESTINATION, dp, &dopt);
    assert_int_equal(mig2_engine_recv(e, PREAMBLE_V4, 8), 8);
    expect_unexpected(e, dst_hello,
                      "unexpected frame: DST_HELLO while waiting for "
                      "SRC_HELLO", "SRC_HELLO", "DST_HELLO");
    mig2_engine_free(e);
    e = engine(MIG2_ROLE_DESTINATION, dp, &dopt);
    assert_int_equal(mig2_engine_recv(e, PREAMBLE_V4, 8), 8);
    expect_unexpected(e, ready,
                      "unexpected frame: READY while waiting for SRC_HELLO",
                      "SRC_HELLO", "READY");
    mig2_engine_free(e);

    /* Destination, waiting for FINISHED: SRC_HELLO again. */
    e = engine(MIG2_ROLE_DESTINATION, dp, &dopt);
    assert_int_equal(mig2_engine_recv(e, sc.src.p,
                                      8 + frame_size(src_hello)),
                     (ssize_t)(8 + frame_size(src_hello)));
    assert_int_equal(mig2_engine_state(e), MIG2_STATE_RUNNING);
    pop_event(e, MIG2_EV_NEGOTIATED);
    expect_unexpected(e, src_hello,
                      "unexpected frame: SRC_HELLO while waiting for "
                      "FINISHED", "FINISHED", "SRC_HELLO");
    mig2_engine_free(e);

    /* Source, waiting for DST_HELLO. */
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    expect_unexpected(e, dst_fin,
                      "unexpected frame: FINISHED while waiting for "
                      "DST_HELLO", "DST_HELLO", "FINISHED");
    mig2_engine_free(e);
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    expect_unexpected(e, src_hello,
                      "unexpected frame: SRC_HELLO while waiting for "
                      "DST_HELLO", "DST_HELLO", "SRC_HELLO");
    mig2_engine_free(e);

    /* Source at revision 2, after DST_HELLO: READY is not expected. */
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    assert_int_equal(mig2_engine_recv(e, dst_hello->start,
                                      frame_size(dst_hello)),
                     (ssize_t)frame_size(dst_hello));
    expect_unexpected(e, &empty_ready,
                      "unexpected frame: READY while waiting for FINISHED",
                      "FINISHED", "READY");
    mig2_engine_free(e);

    /* Source at revision 1, waiting for READY: FINISHED again, fat READY. */
    assert_int_equal(mig2_profile_set_revisions(sp, 1, 1), MIG2_OK);
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    assert_int_equal(mig2_engine_recv(e, sc1.dst.p,
                                      frame_size(&sc1.df[0]) +
                                          frame_size(&sc1.df[1])),
                     (ssize_t)(frame_size(&sc1.df[0]) +
                               frame_size(&sc1.df[1])));
    assert_int_equal(mig2_engine_state(e), MIG2_STATE_RUNNING);
    pop_event(e, MIG2_EV_NEGOTIATED);
    expect_unexpected(e, &sc1.df[1],
                      "unexpected frame: FINISHED while waiting for READY",
                      "READY", "FINISHED");
    mig2_engine_free(e);
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    assert_int_equal(mig2_engine_recv(e, sc1.dst.p,
                                      frame_size(&sc1.df[0]) +
                                          frame_size(&sc1.df[1])),
                     (ssize_t)(frame_size(&sc1.df[0]) +
                               frame_size(&sc1.df[1])));
    pop_event(e, MIG2_EV_NEGOTIATED);
    expect_unexpected(e, &fat, "READY frame carries a payload",
                      "an empty payload", "a payload");
    mig2_engine_free(e);

    script_free(&sc);
    script_free(&sc1);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Transcript                                                        */
/* ---------------------------------------------------------------- */

static const char src_fin_msg[] =
    "the source's FINISHED does not match the handshake transcript: the two "
    "sides saw different bytes";
static const char dst_fin_msg[] =
    "the destination's FINISHED does not match the handshake transcript: "
    "the two sides saw different bytes";

static void assert_transcript_error(Mig2Engine *e, ssize_t r,
                                    const char *msg)
{
    assert_failed_locally(e, r, MIG2_ERR_TRANSCRIPT, MIG2_WIRE_TRANSCRIPT,
                          msg);
    assert_int_equal(mig2_engine_error(e)->n_problems, 1);
    assert_problem(mig2_engine_error(e), 0, MIG2_PROB_TRANSCRIPT, "finished",
                   "verify data over this side's transcript",
                   "different verify data");
    assert_null(mig2_result_channel_key(e));
}

/* Find TLV @type in a HELLO payload; returns its value's offset in @f. */
static size_t tlv_offset(const Frame *f, uint16_t want)
{
    Mig2Reader rd, v;
    uint16_t type;
    bool crit;

    mig2_rd_init(&rd, f->payload, f->len);
    while (mig2_rd_left(&rd)) {
        assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
        if (type == want) {
            return (size_t)(v.p - f->start);
        }
    }
    fail_msg("TLV 0x%04x not found", want);
    return 0;
}

static void test_transcript_tamper(void **state)
{
    Mig2EngineOptions so = opts_s(true), dopt = opts_d(true);
    Mig2Error wire = { 0 };
    Frame f[MAX_FRAMES];
    Buf b = { 0 };
    size_t n, off;
    ssize_t r;
    Pair p;

    (void)state;
    /* A byte of the destination's FINISHED. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    take_output(p.d.e, &b);
    b.p[b.len - 5] ^= 0x20;
    r = mig2_engine_recv(p.s.e, b.p, b.len);
    assert_transcript_error(p.s.e, r, dst_fin_msg);
    /* The destination learns why. */
    move_cut(&p.s, &p.d, 0, 0);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_FAILED);
    assert_int_equal(p.d.ev[p.d.n_ev - 1], MIG2_EV_REJECTED);
    assert_int_equal(mig2_engine_error(p.d.e)->code, MIG2_WIRE_TRANSCRIPT);
    assert_string_equal(mig2_engine_error(p.d.e)->message, dst_fin_msg);
    pair_free(&p);
    buf_free(&b);

    /* A byte of the source's FINISHED. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    move_cut(&p.d, &p.s, 0, 0);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    take_output(p.s.e, &b);
    assert_int_equal(b.len, MIG2_FRAME_HEADER_LEN + MIG2_VERIFY_LEN);
    b.p[MIG2_FRAME_HEADER_LEN] ^= 0x01;
    r = mig2_engine_recv(p.d.e, b.p, b.len);
    assert_transcript_error(p.d.e, r, src_fin_msg);
    take_error_frame(p.d.e, &wire);
    assert_int_equal(wire.code, MIG2_WIRE_TRANSCRIPT);
    assert_string_equal(wire.message, src_fin_msg);
    mig2_error_clear(&wire);
    pair_free(&p);
    buf_free(&b);

    /* A truncated FINISHED is just as wrong. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    move_cut(&p.d, &p.s, 0, 0);
    take_output(p.s.e, NULL);
    put_frame(&b, MIG2_FRAME_FINISHED, MIG2_FRAME_FLAG_CRITICAL, "short", 5);
    r = mig2_engine_recv(p.d.e, b.p, b.len);
    assert_transcript_error(p.d.e, r, src_fin_msg);
    pair_free(&p);
    buf_free(&b);

    /* A byte of DST_HELLO (the nonce): it still decodes, but the */
    /* transcripts differ and the source notices at FINISHED. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    take_output(p.d.e, &b);
    n = frames_of(b.p, b.len, f, MAX_FRAMES);
    assert_int_equal(n, 3);
    assert_int_equal(f[1].type, MIG2_FRAME_DST_HELLO);
    off = (size_t)(f[1].start - b.p) + tlv_offset(&f[1], MIG2_TLV_NONCE);
    b.p[off] ^= 0xff;
    r = mig2_engine_recv(p.s.e, b.p, b.len);
    assert_transcript_error(p.s.e, r, dst_fin_msg);
    pair_free(&p);
    buf_free(&b);

    /* A byte of SRC_HELLO (the session id) on its way to the destination. */
    small_start(&p, &so, &dopt);
    take_output(p.s.e, &b);
    n = frames_of(b.p + 8, b.len - 8, f, MAX_FRAMES);
    assert_int_equal(n, 2);
    off = (size_t)(f[1].start - b.p) + tlv_offset(&f[1], MIG2_TLV_NONCE);
    b.p[off] ^= 0x80;
    deliver(&p.d, b.p, b.len, 0, 0);
    assert_int_equal(p.d.rc, 0);
    move_cut(&p.d, &p.s, 0, 0);
    assert_int_equal(p.s.rc, MIG2_ERR_TRANSCRIPT);
    pair_free(&p);
    buf_free(&b);
}

static void test_binding(void **state)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    uint8_t bind_a[64], bind_b[64], plain_key[MIG2_HASH_LEN];
    Pair p;
    int k;

    (void)state;
    memset(bind_a, 0xa5, sizeof(bind_a));
    memcpy(bind_b, bind_a, sizeof(bind_b));
    bind_b[63] ^= 1;

    /* No binding: the reference key. */
    small_run(&p, &so, &dopt, 0);
    assert_complete(&p);
    memcpy(plain_key, mig2_result_channel_key(p.s.e), sizeof(plain_key));
    pair_free(&p);

    /* Equal binding: success, and another channel key. */
    small_start(&p, &so, &dopt);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 32), MIG2_OK);
    assert_int_equal(mig2_engine_set_binding(p.d.e, bind_a, 32), MIG2_OK);
    pump(&p, 0);
    assert_complete(&p);
    assert_memory_not_equal(mig2_result_channel_key(p.s.e), plain_key,
                            MIG2_HASH_LEN);
    check_crypto(&p, bind_a, 32);
    pair_free(&p);

    /* 64 bytes is the most; the last call wins. */
    small_start(&p, &so, &dopt);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 65),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_engine_set_binding(p.s.e, NULL, 1),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_engine_set_binding(NULL, bind_a, 1),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind_b, 64), MIG2_OK);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 64), MIG2_OK);
    assert_int_equal(mig2_engine_set_binding(p.d.e, bind_a, 64), MIG2_OK);
    pump(&p, 0);
    assert_complete(&p);
    check_crypto(&p, bind_a, 64);
    pair_free(&p);

    /* Binding reset to nothing gives the plain key back. */
    small_start(&p, &so, &dopt);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 16), MIG2_OK);
    assert_int_equal(mig2_engine_set_binding(p.s.e, NULL, 0), MIG2_OK);
    pump(&p, 0);
    assert_complete(&p);
    assert_memory_equal(mig2_result_channel_key(p.d.e), plain_key,
                        MIG2_HASH_LEN);
    pair_free(&p);

    /* Different bindings (one bit, or one side only): transcript failure */
    /* at the source, which then tells the destination. */
    for (k = 0; k < 3; k++) {
        small_start(&p, &so, &dopt);
        if (k == 0) {
            assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 64),
                             MIG2_OK);
            assert_int_equal(mig2_engine_set_binding(p.d.e, bind_b, 64),
                             MIG2_OK);
        } else if (k == 1) {
            assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 8),
                             MIG2_OK);
        } else {
            assert_int_equal(mig2_engine_set_binding(p.d.e, bind_a, 8),
                             MIG2_OK);
        }
        pump(&p, 0);
        assert_int_equal(p.s.rc, MIG2_ERR_TRANSCRIPT);
        assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_FAILED);
        assert_int_equal(mig2_engine_error(p.s.e)->code, MIG2_WIRE_TRANSCRIPT);
        assert_string_equal(mig2_engine_error(p.s.e)->message, dst_fin_msg);
        assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_FAILED);
        assert_int_equal(p.d.ev[p.d.n_ev - 1], MIG2_EV_REJECTED);
        assert_int_equal(mig2_engine_error(p.d.e)->code, MIG2_WIRE_TRANSCRIPT);
        assert_null(mig2_result_channel_key(p.d.e));
        pair_free(&p);
    }
}

/* SHA-256 over the concatenation of @a and @b. */
static void sha2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                 uint8_t out[MIG2_HASH_LEN])
{
    Mig2Hash *h;

    assert_int_equal(mig2_hash_new(&h), MIG2_OK);
    assert_int_equal(mig2_hash_update(h, a, alen), MIG2_OK);
    assert_int_equal(mig2_hash_update(h, b, blen), MIG2_OK);
    assert_int_equal(mig2_hash_peek(h, out), MIG2_OK);
    mig2_hash_free(h);
}

/*
 * A man in the middle downgrades the source's offer: it strips zero-page
 * from SRC_HELLO's FEATURES, relays DST_HELLO unchanged, and replaces
 * both FINISHED frames with ones computed over what each side saw, keyed
 * with what it knows: the empty string.  Without a binding that works and
 * the two ends silently disagree (spec 11.5).  With a binding it does not
 * hold -- the same exporter on both ends, or two different ones, as when
 * it splices two TLS sessions -- the source finds FINISHED(d) wrong and
 * the handshake fails with transcript (spec 11.4).
 */
static void test_mitm_downgrade(void **state)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    uint8_t bind_a[32], bind_b[32];
    uint8_t th_s[MIG2_HASH_LEN], th_d[MIG2_HASH_LEN], vd[MIG2_HASH_LEN];
    int mode;

    (void)state;
    memset(bind_a, 0x3c, sizeof(bind_a));
    memset(bind_b, 0xc3, sizeof(bind_b));
    for (mode = 0; mode < 3; mode++) {
        Buf sflight = { 0 }, forged = { 0 }, dflight = { 0 }, tail = { 0 };
        Mig2Error err = { 0 };
        Frame f[MAX_FRAMES];
        Mig2Hello h;
        Mig2Writer w;
        uint8_t *hello;
        size_t len, i, j;
        Pair p;

        small_start(&p, &so, &dopt);
        if (mode > 0) {
            assert_int_equal(mig2_engine_set_binding(p.s.e, bind_a, 32),
                             MIG2_OK);
            assert_int_equal(mig2_engine_set_binding(
                                 p.d.e, mode == 1 ? bind_a : bind_b, 32),
                             MIG2_OK);
        }

        /* Source -> attacker: preamble and SRC_HELLO, zero-page cut. */
        take_output(p.s.e, &sflight);
        assert_int_equal(frames_of(sflight.p + MIG2_PREAMBLE_LEN,
                                   sflight.len - MIG2_PREAMBLE_LEN, f,
                                   MAX_FRAMES), 1);
        assert_int_equal(f[0].type, MIG2_FRAME_SRC_HELLO);
        assert_int_equal(mig2_hello_decode(f[0].payload, f[0].len,
                                           MIG2_FRAME_SRC_HELLO, &h, &err),
                         MIG2_OK);
        for (i = j = 0; i < h.profile->n_features; i++) {
            if (h.profile->features[i].id != MIG2_FEAT_ZERO_PAGE) {
                h.profile->features[j++] = h.profile->features[i];
            }
        }
        assert_int_equal(j + 1, h.profile->n_features);
        h.profile->n_features = j;
        mig2_wr_init(&w, MIG2_FRAME_MAX);
        mig2_hello_encode(&w, MIG2_FRAME_SRC_HELLO, &h, false, 0);
        assert_int_equal(mig2_wr_error(&w), MIG2_OK);
        hello = mig2_wr_steal(&w, &len);
        mig2_hello_clear(&h);
        buf_add(&forged, sflight.p, MIG2_PREAMBLE_LEN);
        buf_add(&forged, hello, len);
        free(hello);

        /* Attacker -> destination; destination -> attacker. */
        deliver(&p.d, forged.p, forged.len, 0, 0);
        assert_int_equal(p.d.rc, 0);
        take_output(p.d.e, &dflight);
        assert_int_equal(frames_of(dflight.p, dflight.len, f, MAX_FRAMES), 2);
        assert_int_equal(f[0].type, MIG2_FRAME_DST_HELLO);
        assert_int_equal(f[1].type, MIG2_FRAME_FINISHED);

        /* What each side hashed: the destination saw the forged offer. */
        sha2(sflight.p, sflight.len, f[0].start, frame_size(&f[0]), th_s);
        sha2(forged.p, forged.len, f[0].start, frame_size(&f[0]), th_d);
        assert_memory_equal(mig2_result_transcript_hash(p.d.e), th_d,
                            MIG2_HASH_LEN);
        assert_memory_not_equal(th_s, th_d, MIG2_HASH_LEN);

        /* Attacker -> source: DST_HELLO and a FINISHED(d) for th_s. */
        buf_add(&tail, f[0].start, frame_size(&f[0]));
        hmac2(NULL, 0, "mig2 dst finished", th_s, sizeof(th_s), vd);
        put_frame(&tail, MIG2_FRAME_FINISHED, MIG2_FRAME_FLAG_CRITICAL, vd,
                  sizeof(vd));
        deliver(&p.s, tail.p, tail.len, 0, 0);
        buf_free(&tail);

        if (mode == 0) {
            /* No binding: the source accepts and sends FINISHED(s)... */
            assert_int_equal(p.s.rc, 0);
            assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
            assert_memory_equal(mig2_result_transcript_hash(p.s.e), th_s,
                                MIG2_HASH_LEN);
            take_output(p.s.e, &tail);
            assert_int_equal(frames_of(tail.p, tail.len, f, MAX_FRAMES), 1);
            assert_int_equal(f[0].type, MIG2_FRAME_FINISHED);
            buf_free(&tail);
            /* ... which the attacker replaces by one for th_d. */
            hmac2(NULL, 0, "mig2 src finished", th_d, sizeof(th_d), vd);
            put_frame(&tail, MIG2_FRAME_FINISHED, MIG2_FRAME_FLAG_CRITICAL,
                      vd, sizeof(vd));
            deliver(&p.d, tail.p, tail.len, 0, 0);
            buf_free(&tail);
            assert_int_equal(p.d.rc, 0);
            assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_COMPLETE);
            /* Both "complete", disagreeing on what is in use. */
            assert_true(mig2_result_has_feature(p.s.e, MIG2_FEAT_ZERO_PAGE));
            assert_false(mig2_result_has_feature(p.d.e,
                                                 MIG2_FEAT_ZERO_PAGE));
        } else {
            /* The forged FINISHED(d) does not verify under the binding. */
            assert_int_equal(p.s.rc, MIG2_ERR_TRANSCRIPT);
            assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_FAILED);
            assert_int_equal(mig2_engine_error(p.s.e)->code,
                             MIG2_WIRE_TRANSCRIPT);
            assert_null(mig2_result_channel_key(p.s.e));
            /* Its ERROR, relayed, ends the destination too. */
            move_cut(&p.s, &p.d, 0, 0);
            assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_FAILED);
            assert_int_equal(p.d.ev[p.d.n_ev - 1], MIG2_EV_REJECTED);
            assert_int_equal(mig2_engine_error(p.d.e)->code,
                             MIG2_WIRE_TRANSCRIPT);
            assert_null(mig2_result_channel_key(p.d.e));
        }
        mig2_error_clear(&err);
        buf_free(&sflight);
        buf_free(&forged);
        buf_free(&dflight);
        pair_free(&p);
    }
}

/* ---------------------------------------------------------------- */
/* Data after the handshake                                          */
/* ---------------------------------------------------------------- */

static void test_data_after_handshake(void **state)
{
    static const char data[] = "data phase: RAM pages follow";
    Mig2EngineOptions so = opts_s(true), dopt = opts_d(true);
    uint64_t sent, recvd, s_sent, s_recvd;
    Buf b = { 0 };
    size_t hs;
    Pair p;
    Mig2Profile *sp, *dp;

    (void)state;
    /* Revision 2: the source's FINISHED, then data, in one buffer. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    move_cut(&p.d, &p.s, 0, 0);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    hs = take_output(p.s.e, &b);
    assert_int_equal(hs, b.len);
    buf_add(&b, data, sizeof(data));
    assert_int_equal(mig2_engine_recv(p.d.e, b.p, b.len), (ssize_t)hs);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_COMPLETE);
    assert_int_equal(mig2_engine_recv(p.d.e, b.p + hs, b.len - hs), 0);
    assert_int_equal(mig2_engine_recv(p.d.e, b.p, b.len), 0);
    mig2_result_bytes(p.d.e, &sent, &recvd);
    mig2_result_bytes(p.s.e, &s_sent, &s_recvd);
    assert_int_equal(recvd, s_sent);
    assert_int_equal(sent, s_recvd);
    /* Nothing more to say after COMPLETE at revision 2. */
    assert_int_equal(pending(p.d.e), 0);
    pair_free(&p);
    buf_free(&b);

    /* The source: the destination's flight, then bytes it never reads. */
    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    take_output(p.d.e, &b);
    hs = b.len;
    buf_add(&b, data, sizeof(data));
    assert_int_equal(mig2_engine_recv(p.s.e, b.p, b.len), (ssize_t)hs);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    assert_int_equal(mig2_engine_recv(p.s.e, (const uint8_t *)data,
                                      sizeof(data)), 0);
    pair_free(&p);
    buf_free(&b);

    /* Revision 1: the source reads up to READY and no further. */
    sp = small_profile(true);
    dp = small_profile(false);
    assert_int_equal(mig2_profile_set_revisions(dp, 1, 1), MIG2_OK);
    pair_start(&p, sp, dp, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    move_cut(&p.d, &p.s, 0, 0);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_RUNNING);
    move_cut(&p.s, &p.d, 0, 0);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_COMPLETE);
    take_output(p.d.e, &b);
    assert_int_equal(b.len, MIG2_FRAME_HEADER_LEN);
    hs = b.len;
    buf_add(&b, data, sizeof(data));
    assert_int_equal(mig2_engine_recv(p.s.e, b.p, b.len), (ssize_t)hs);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    assert_int_equal(mig2_result_round_trips(p.s.e), 2);
    pair_free(&p);
    buf_free(&b);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

/* ---------------------------------------------------------------- */
/* Peer errors                                                       */
/* ---------------------------------------------------------------- */

/* A retryable "busy" ERROR frame with two problems. */
static void put_peer_error(Buf *b)
{
    Mig2Error err = { 0 };
    Mig2Writer w;
    uint8_t *bytes;
    size_t len;

    assert_int_equal(mig2_error_set(&err, MIG2_WIRE_BUSY, true,
                                    "another migration is running"),
                     MIG2_OK);
    assert_int_equal(mig2_error_add(&err, MIG2_PROB_OTHER, "endpoint",
                                     "idle", "migrating"), MIG2_OK);
    assert_int_equal(mig2_error_add(&err, 999, "x/y", "ä", "ö"), MIG2_OK);
    mig2_wr_init(&w, 1 << 16);
    mig2_error_encode(&w, &err);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    bytes = mig2_wr_steal(&w, &len);
    buf_add(b, bytes, len);
    free(bytes);
    mig2_error_clear(&err);
}

/* @e was rejected by the peer error of put_peer_error(). */
static void assert_rejected_busy(Mig2Engine *e)
{
    const Mig2Error *err = mig2_engine_error(e);
    Mig2Event ev;
    char *text;

    assert_int_equal(mig2_engine_state(e), MIG2_STATE_FAILED);
    assert_non_null(err);
    assert_true(err->from_peer);
    assert_int_equal(err->code, MIG2_WIRE_BUSY);
    assert_true(err->retryable);
    assert_string_equal(err->message, "another migration is running");
    assert_int_equal(err->n_problems, 2);
    assert_problem(err, 0, MIG2_PROB_OTHER, "endpoint", "idle", "migrating");
    assert_int_equal(err->problems[1].kind, 999);
    assert_string_equal(err->problems[1].path, "x/y");
    assert_string_equal(err->problems[1].expected, "ä");
    assert_string_equal(err->problems[1].actual, "ö");
    assert_true(mig2_engine_next_event(e, &ev));
    assert_int_equal(ev.type, MIG2_EV_REJECTED);
    assert_ptr_equal(ev.error, err);
    assert_false(mig2_engine_next_event(e, &ev));
    /* A receiver never answers an ERROR. */
    assert_int_equal(pending(e), 0);
    text = mig2_error_format(err);
    assert_non_null(text);
    assert_non_null(strstr(text,
                           "peer error (busy, retryable): another migration "
                           "is running\n"
                           "  other: endpoint: expected idle, "
                           "got migrating\n"));
    assert_non_null(strstr(text, "x/y: expected ä, got ö"));
    free(text);
}

static void test_peer_error_each_step(void **state)
{
    Mig2Profile *sp = small_profile(true), *dp = small_profile(false);
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Script sc, sc1;
    Buf err = { 0 }, b = { 0 };
    Mig2Engine *e;
    Mig2Event ev;
    size_t n;

    (void)state;
    script_make(&sc, 2);
    script_make(&sc1, 1);
    put_peer_error(&err);

    /* Source waiting for DST_HELLO (after a grease frame). */
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    take_output(e, NULL);
    put_frame(&b, 0x2a3a, 0, "gg", 2);
    buf_add(&b, err.p, err.len);
    assert_int_equal(mig2_engine_recv(e, b.p, b.len), (ssize_t)b.len);
    assert_rejected_busy(e);
    assert_false(mig2_result_ready(e));
    assert_int_equal(mig2_engine_recv(e, err.p, err.len), 0);
    mig2_engine_free(e);

    /* Source after DST_HELLO, waiting for FINISHED. */
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    take_output(e, NULL);
    n = frame_size(&sc.df[0]);
    assert_int_equal(mig2_engine_recv(e, sc.df[0].start, n), (ssize_t)n);
    assert_true(mig2_result_ready(e));
    assert_false(mig2_engine_next_event(e, &ev));
    assert_int_equal(mig2_engine_recv(e, err.p, err.len), (ssize_t)err.len);
    assert_rejected_busy(e);
    mig2_engine_free(e);

    /* Source at revision 1 after its FINISHED, waiting for READY. */
    assert_int_equal(mig2_profile_set_revisions(sp, 1, 1), MIG2_OK);
    e = engine(MIG2_ROLE_SOURCE, sp, &so);
    take_output(e, NULL);
    n = frame_size(&sc1.df[0]) + frame_size(&sc1.df[1]);
    assert_int_equal(mig2_engine_recv(e, sc1.dst.p, n), (ssize_t)n);
    assert_true(mig2_engine_next_event(e, &ev));
    assert_int_equal(ev.type, MIG2_EV_NEGOTIATED);
    /* Its FINISHED is out; no data before READY. */
    assert_int_equal(take_output(e, NULL),
                     MIG2_FRAME_HEADER_LEN + MIG2_VERIFY_LEN);
    assert_int_equal(mig2_engine_recv(e, err.p, err.len), (ssize_t)err.len);
    assert_rejected_busy(e);
    mig2_engine_free(e);

    /* Destination waiting for SRC_HELLO. */
    e = engine(MIG2_ROLE_DESTINATION, dp, &dopt);
    b.len = 0;
    buf_add(&b, PREAMBLE_V4, 8);
    buf_add(&b, err.p, err.len);
    assert_int_equal(mig2_engine_recv(e, b.p, b.len), (ssize_t)b.len);
    assert_rejected_busy(e);
    mig2_engine_free(e);

    /* Destination waiting for the source's FINISHED. */
    e = engine(MIG2_ROLE_DESTINATION, dp, &dopt);
    n = 8 + frame_size(&sc.sf[0]);
    assert_int_equal(mig2_engine_recv(e, sc.src.p, n), (ssize_t)n);
    assert_true(mig2_engine_next_event(e, &ev));
    assert_int_equal(ev.type, MIG2_EV_NEGOTIATED);
    take_output(e, NULL);
    assert_int_equal(mig2_engine_recv(e, err.p, err.len), (ssize_t)err.len);
    assert_rejected_busy(e);
    mig2_engine_free(e);

    script_free(&sc);
    script_free(&sc1);
    buf_free(&err);
    buf_free(&b);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

static void test_peer_error_garbled(void **state)
{
    Mig2Profile *sp = small_profile(true);
    static const uint8_t truncated_problem[] = {
        0, 0, 0, 4, 0,                  /* code incompatible, flags */
        0x00, 0x02, 0, 0, 0, 100,       /* PROBLEM claiming 100 bytes */
        0, 3, 0,
    };
    static const uint8_t two_bytes[] = { 0, 0 };
    static const uint8_t twice_message[] = {
        0, 0, 0, 9, 1,
        0, 1, 0, 0, 0, 3, 0, 1, 'a',
        0, 1, 0, 0, 0, 3, 0, 1, 'b',
    };
    static const uint8_t crit_tlv[] = {
        0, 0, 0, 7, 0,
        0x81, 0x23, 0, 0, 0, 1, 'z',    /* unknown critical TLV: skipped */
        0, 1, 0, 0, 0, 4, 0, 2, 'o', 'k',
    };
    static const uint8_t no_message[] = { 0, 0, 0, 10, 1 };
    static const struct {
        const uint8_t *p;
        size_t len;
        uint32_t code;
        bool retryable;
        const char *message;
    } cases[] = {
        { truncated_problem, sizeof(truncated_problem), MIG2_WIRE_INCOMPATIBLE,
          false,
          "the peer sent a malformed ERROR frame (input ended inside a "
          "field)" },
        { two_bytes, sizeof(two_bytes), MIG2_WIRE_PROTOCOL, false,
          "the peer sent a malformed ERROR frame (input ended inside a "
          "field)" },
        { NULL, 0, MIG2_WIRE_PROTOCOL, false,
          "the peer sent a malformed ERROR frame (input ended inside a "
          "field)" },
        { twice_message, sizeof(twice_message), MIG2_WIRE_TIMEOUT, false,
          "the peer sent a malformed ERROR frame (item appears more than "
          "once)" },
        /* Not garbled: unknown TLVs are skipped even when critical. */
        { crit_tlv, sizeof(crit_tlv), MIG2_WIRE_CANCELLED, false, "ok" },
        /* No MESSAGE: the code's name stands in. */
        { no_message, sizeof(no_message), MIG2_WIRE_LOAD_FAILED, true,
          "load-failed" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Mig2Engine *s = engine(MIG2_ROLE_SOURCE, sp, NULL);
        const Mig2Error *err;
        Buf b = { 0 };
        Mig2Event ev;

        take_output(s, NULL);
        put_frame(&b, MIG2_FRAME_ERROR, MIG2_FRAME_FLAG_CRITICAL, cases[i].p,
                  (uint32_t)cases[i].len);
        assert_int_equal(mig2_engine_recv(s, b.p, b.len), (ssize_t)b.len);
        assert_int_equal(mig2_engine_state(s), MIG2_STATE_FAILED);
        err = mig2_engine_error(s);
        assert_non_null(err);
        assert_true(err->from_peer);
        assert_int_equal(err->code, cases[i].code);
        assert_int_equal(err->retryable, cases[i].retryable);
        assert_string_equal(err->message, cases[i].message);
        assert_true(mig2_engine_next_event(s, &ev));
        assert_int_equal(ev.type, MIG2_EV_REJECTED);
        assert_int_equal(pending(s), 0);
        buf_free(&b);
        mig2_engine_free(s);
    }
    mig2_profile_free(sp);
}

/* ---------------------------------------------------------------- */
/* Abort and state errors                                            */
/* ---------------------------------------------------------------- */

static void test_abort(void **state)
{
    Mig2EngineOptions so = opts_s(true), dopt = opts_d(true);
    Mig2Error wire = { 0 };
    Frame f[MAX_FRAMES];
    Buf b = { 0 };
    size_t n;
    Pair p;

    (void)state;
    assert_int_equal(mig2_engine_abort(NULL, 7, "x"), MIG2_ERR_INVALID_ARG);

    /* A fresh source: its first flight is still queued, ERROR follows. */
    small_start(&p, &so, &dopt);
    assert_int_equal(mig2_engine_abort(p.s.e, MIG2_WIRE_CANCELLED,
                                       "operator cancelled"), MIG2_OK);
    assert_failed_locally(p.s.e, 0, 0, MIG2_WIRE_CANCELLED,
                          "operator cancelled");
    take_output(p.s.e, &b);
    n = frames_of(b.p + 8, b.len - 8, f, MAX_FRAMES);
    assert_int_equal(n, 3);
    assert_int_equal(f[1].type, MIG2_FRAME_SRC_HELLO);
    assert_int_equal(f[2].type, MIG2_FRAME_ERROR);
    assert_int_equal(mig2_error_decode(f[2].payload, f[2].len, &wire),
                     MIG2_OK);
    assert_int_equal(wire.code, MIG2_WIRE_CANCELLED);
    assert_false(wire.retryable);
    assert_string_equal(wire.message, "operator cancelled");
    assert_int_equal(wire.n_problems, 0);
    mig2_error_clear(&wire);
    /* The destination sees the hello, then the ERROR. */
    deliver(&p.d, b.p, b.len, 0, 1);
    assert_int_equal(p.d.rc, 0);
    assert_int_equal(mig2_engine_state(p.d.e), MIG2_STATE_FAILED);
    assert_int_equal(p.d.n_ev, 2);
    assert_int_equal(p.d.ev[0], MIG2_EV_NEGOTIATED);
    assert_int_equal(p.d.ev[1], MIG2_EV_REJECTED);
    assert_int_equal(mig2_engine_error(p.d.e)->code, MIG2_WIRE_CANCELLED);
    assert_string_equal(mig2_engine_error(p.d.e)->message,
                        "operator cancelled");
    /* Twice is once too many. */
    assert_int_equal(mig2_engine_abort(p.s.e, MIG2_WIRE_CANCELLED, "again"),
                     MIG2_ERR_STATE);
    assert_int_equal(mig2_engine_abort(p.d.e, MIG2_WIRE_CANCELLED, "again"),
                     MIG2_ERR_STATE);
    assert_int_equal(pending(p.s.e), 0);
    pair_free(&p);
    buf_free(&b);

    /* A destination before SRC_HELLO, no message: the code's name. */
    small_start(&p, &so, &dopt);
    take_output(p.s.e, &b);
    assert_int_equal(mig2_engine_recv(p.d.e, b.p, 8), 8);
    assert_int_equal(mig2_engine_abort(p.d.e, MIG2_WIRE_BUSY, NULL), MIG2_OK);
    assert_failed_locally(p.d.e, 0, 0, MIG2_WIRE_BUSY, "busy");
    /* busy is always sent RETRYABLE (spec 10.2). */
    assert_true(mig2_engine_error(p.d.e)->retryable);
    move_cut(&p.d, &p.s, 0, 0);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_FAILED);
    assert_int_equal(p.s.n_ev, 1);
    assert_int_equal(p.s.ev[0], MIG2_EV_REJECTED);
    assert_int_equal(mig2_engine_error(p.s.e)->code, MIG2_WIRE_BUSY);
    assert_true(mig2_engine_error(p.s.e)->retryable);
    assert_string_equal(mig2_engine_error(p.s.e)->message, "busy");
    /* Only the ERROR: no grease frame in an ERROR-only flight. */
    assert_int_equal(frames_of(p.d.sent.p, p.d.sent.len, f, MAX_FRAMES), 1);
    assert_int_equal(f[0].type, MIG2_FRAME_ERROR);
    pair_free(&p);
    buf_free(&b);

    /* An empty message and an unregistered code. */
    small_start(&p, &so, &dopt);
    assert_int_equal(mig2_engine_abort(p.s.e, 4242, ""), MIG2_OK);
    assert_string_equal(mig2_engine_error(p.s.e)->message, "unknown");
    pump(&p, 0);
    assert_int_equal(mig2_engine_error(p.d.e)->code, 4242);
    assert_string_equal(mig2_engine_error(p.d.e)->message, "unknown");
    pair_free(&p);

    /* After COMPLETE: too late. */
    small_run(&p, &so, &dopt, 0);
    assert_complete(&p);
    assert_int_equal(mig2_engine_abort(p.s.e, MIG2_WIRE_CANCELLED, "late"),
                     MIG2_ERR_STATE);
    assert_int_equal(mig2_engine_abort(p.d.e, MIG2_WIRE_CANCELLED, "late"),
                     MIG2_ERR_STATE);
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    assert_int_equal(pending(p.s.e), 0);
    assert_int_equal(pending(p.d.e), 0);
    pair_free(&p);
}

static void test_binding_too_late(void **state)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    static const uint8_t bind[4] = { 1, 2, 3, 4 };
    Frame f[MAX_FRAMES];
    Buf b = { 0 };
    Pair p;

    (void)state;
    /* Destination: once the first byte is in. */
    small_start(&p, &so, &dopt);
    take_output(p.s.e, &b);
    assert_int_equal(mig2_engine_recv(p.d.e, b.p, 1), 1);
    assert_int_equal(mig2_engine_set_binding(p.d.e, bind, 4), MIG2_ERR_STATE);
    /* Source: still fine while waiting for DST_HELLO... */
    assert_int_equal(mig2_engine_set_binding(p.s.e, NULL, 0), MIG2_OK);
    assert_int_equal(mig2_engine_recv(p.d.e, b.p + 1, b.len - 1),
                     (ssize_t)(b.len - 1));
    /* ...but not once DST_HELLO is in (the transcript is closed)... */
    b.len = 0;
    take_output(p.d.e, &b);
    assert_int_equal(frames_of(b.p, b.len, f, MAX_FRAMES), 2);
    assert_int_equal(mig2_engine_recv(p.s.e, b.p, frame_size(&f[0])),
                     (ssize_t)frame_size(&f[0]));
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_RUNNING);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind, 4), MIG2_ERR_STATE);
    assert_int_equal(mig2_engine_set_binding(p.s.e, NULL, 0), MIG2_ERR_STATE);
    /* ...and the refused call changed nothing: the handshake completes. */
    assert_int_equal(mig2_engine_recv(p.s.e, f[1].start, frame_size(&f[1])),
                     (ssize_t)frame_size(&f[1]));
    assert_int_equal(mig2_engine_state(p.s.e), MIG2_STATE_COMPLETE);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind, 4), MIG2_ERR_STATE);
    pair_free(&p);
    buf_free(&b);

    small_start(&p, &so, &dopt);
    take_output(p.s.e, &b);
    b.len = 0;
    put_frame(&b, 0x0a0a, 0, NULL, 0);
    put_frame(&b, MIG2_FRAME_DST_HELLO, MIG2_FRAME_FLAG_CRITICAL, "x", 1);
    /* A malformed DST_HELLO fails the source: binding refused after. */
    assert_int_equal(mig2_engine_recv(p.s.e, b.p, b.len), MIG2_ERR_PROTOCOL);
    assert_int_equal(mig2_engine_set_binding(p.s.e, bind, 4), MIG2_ERR_STATE);
    assert_int_equal(mig2_engine_error(p.s.e)->code, MIG2_WIRE_PROTOCOL);
    assert_int_equal(mig2_engine_error(p.s.e)->n_problems, 1);
    assert_int_equal(mig2_engine_error(p.s.e)->problems[0].kind,
                     MIG2_PROB_MALFORMED);
    pair_free(&p);
    buf_free(&b);
}

/* ---------------------------------------------------------------- */
/* The source checks the destination's choices                       */
/* ---------------------------------------------------------------- */

typedef void (*HelloEdit)(Mig2Hello *h);

/*
 * The destination's flight for the small profiles (no grease, fixed
 * nonces) with DST_HELLO decoded, changed by @edit and encoded again.
 * With @refinish, FINISHED is recomputed over the changed transcript (as
 * a destination that really chose so would send it); otherwise it is the
 * one the honest destination sent.
 */
static void tampered_flight(HelloEdit edit, bool refinish, Buf *out)
{
    Mig2EngineOptions so = opts_s(false), dopt = opts_d(false);
    Mig2Error err = { 0 };
    Frame f[MAX_FRAMES];
    Mig2Hello h;
    Mig2Writer w;
    Buf b = { 0 };
    size_t n, len;
    uint8_t *bytes;
    uint8_t th[MIG2_HASH_LEN], vd[MIG2_HASH_LEN];
    Mig2Hash *hash;
    Pair p;

    small_start(&p, &so, &dopt);
    move_cut(&p.s, &p.d, 0, 0);
    take_output(p.d.e, &b);
    n = frames_of(b.p, b.len, f, MAX_FRAMES);
    assert_int_equal(n, 2);
    assert_int_equal(f[0].type, MIG2_FRAME_DST_HELLO);
    assert_int_equal(f[1].type, MIG2_FRAME_FINISHED);

    assert_int_equal(mig2_hello_decode(f[0].payload, f[0].len,
                                       MIG2_FRAME_DST_HELLO, &h, &err),
                     MIG2_OK);
    assert_int_equal(err.n_problems, 0);
    if (edit) {
        edit(&h);
    }
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_hello_encode(&w, MIG2_FRAME_DST_HELLO, &h, false, 0);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    bytes = mig2_wr_steal(&w, &len);
    mig2_hello_clear(&h);
    if (!edit) {
        /* Decoding and encoding again is lossless. */
        assert_int_equal(len, frame_size(&f[0]));
        assert_memory_equal(bytes, f[0].start, len);
    }
    buf_add(out, bytes, len);

    if (refinish) {
        /* transcript: preamble || SRC_HELLO || the new DST_HELLO */
        assert_int_equal(mig2_hash_new(&hash), MIG2_OK);
        assert_int_equal(mig2_hash_update(hash, p.s.sent.p, p.s.sent.len),
                         MIG2_OK);
        assert_int_equal(mig2_hash_update(hash, bytes, len), MIG2_OK);
        assert_int_equal(mig2_hash_peek(hash, th), MIG2_OK);
        mig2_hash_free(hash);
        hmac2(NULL, 0, "mig2 dst finished", th, sizeof(th), vd);
        put_frame(out, MIG2_FRAME_FINISHED, MIG2_FRAME_FLAG_CRITICAL, vd,
                  sizeof(vd));
        if (!edit) {
            assert_memory_equal(vd, f[1].payload, sizeof(vd));
        }
    } else {
        buf_add(out, f[1].start, frame_size(&f[1]));
    }
    free(bytes);
    buf_free(&b);
    pair_free(&p);
}

static void edit_revision_1(Mig2Hello *h)
{
    h->selected = 1;
}

static void edit_revision_3(Mig2Hello *h)
{
    h->selected = 3;
}

static void edit_accepted_other_value(Mig2Hello *h)
{
    assert_int_equal(h->n_outcomes, 2);
    assert_string_equal(h->outcomes[0].name, "multifd-channels");
    assert_int_equal(h->outcomes[0].status, MIG2_CFG_CLAMPED);
    h->outcomes[0].status = MIG2_CFG_ACCEPTED;
    h->outcomes[0].final.u = 9;
}

static void edit_clamped_upwards(Mig2Hello *h)
{
    h->outcomes[0].final.u = 9;
}

/* "Clamped" to the very value proposed: not lower, so not a clamp. */
static void edit_clamped_to_proposal(Mig2Hello *h)
{
    h->outcomes[0].final.u = 8;
}

static void edit_refused_other_type(Mig2Hello *h)
{
    assert_int_equal(h->outcomes[1].status, MIG2_CFG_REFUSED);
    h->outcomes[1].final.type = MIG2_CFG_U64;
    h->outcomes[1].final.u = 0;
}

static void edit_renamed(Mig2Hello *h)
{
    free(h->outcomes[1].name);
    h->outcomes[1].name = strdup("xbzrle");
    assert_non_null(h->outcomes[1].name);
}

static void edit_dropped(Mig2Hello *h)
{
    free(h->outcomes[1].name);
    h->n_outcomes = 1;
}

static void edit_both(Mig2Hello *h)
{
    edit_revision_1(h);
    edit_accepted_other_value(h);
}

static void edit_device_range(Mig2Hello *h)
{
    assert_string_equal(h->profile->devices[0].id, "timer");
    h->profile->devices[0].vmin = 5;
    h->profile->devices[0].vmax = 6;
}

static void edit_required_feature(Mig2Hello *h)
{
    assert_int_equal(mig2_profile_add_feature(h->profile, MIG2_FEAT_POSTCOPY,
                                              true), MIG2_OK);
}

typedef struct ChoiceCase {
    HelloEdit edit;
    size_t n;
    struct {
        unsigned kind;
        const char *path, *expected, *actual;
    } pr[2];
} ChoiceCase;

static void test_tampered_choice(void **state)
{
    static const char consistent[] = "a final value consistent with the status";
    const ChoiceCase cases[] = {
        { edit_revision_1, 1,
          { { MIG2_PROB_CHOICE, "revision", "2", "1" } } },
        { edit_revision_3, 1,
          { { MIG2_PROB_CHOICE, "revision", "2", "3" } } },
        { edit_accepted_other_value, 1,
          { { MIG2_PROB_CHOICE, "config/multifd-channels", consistent,
              "accepted" } } },
        { edit_clamped_upwards, 1,
          { { MIG2_PROB_CHOICE, "config/multifd-channels", consistent,
              "clamped" } } },
        { edit_clamped_to_proposal, 1,
          { { MIG2_PROB_CHOICE, "config/multifd-channels", consistent,
              "clamped" } } },
        { edit_refused_other_type, 1,
          { { MIG2_PROB_CHOICE, "config/postcopy-ram", consistent,
              "refused" } } },
        { edit_renamed, 1,
          { { MIG2_PROB_CHOICE, "config/postcopy-ram", "postcopy-ram",
              "xbzrle" } } },
        { edit_dropped, 1,
          { { MIG2_PROB_CHOICE, "config", "2 results", "1 results" } } },
        { edit_both, 2,
          { { MIG2_PROB_CHOICE, "revision", "2", "1" },
            { MIG2_PROB_CHOICE, "config/multifd-channels", consistent,
              "accepted" } } },
        /* The source runs the compatibility check itself. */
        { edit_device_range, 1,
          { { MIG2_PROB_DEVICE_VERSION, "devices/timer@0/version", "5..6",
              "1..2" } } },
        { edit_required_feature, 1,
          { { MIG2_PROB_FEATURE_REQUIRED, "features/postcopy", "present",
              "absent" } } },
    };
    Mig2Profile *sp = small_profile(true);
    Mig2EngineOptions so = opts_s(false);
    Buf b = { 0 };
    size_t i, k;
    int fin;

    (void)state;
    /* Unchanged, the flight completes the source. */
    tampered_flight(NULL, true, &b);
    {
        Mig2Engine *s = engine(MIG2_ROLE_SOURCE, sp, &so);

        assert_int_equal(mig2_engine_recv(s, b.p, b.len), (ssize_t)b.len);
        assert_int_equal(mig2_engine_state(s), MIG2_STATE_COMPLETE);
        mig2_engine_free(s);
    }
    buf_free(&b);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (fin = 0; fin < 3; fin++) {
            Mig2Engine *s = engine(MIG2_ROLE_SOURCE, sp, &so);
            Frame f[MAX_FRAMES];
            const Mig2Error *err;
            Mig2Error wire = { 0 };
            char msg[512];
            Mig2Event ev;
            ssize_t r;

            tampered_flight(cases[i].edit, fin == 0, &b);
            assert_int_equal(frames_of(b.p, b.len, f, MAX_FRAMES), 2);
            if (fin == 1) {
                /*
                 * The honest FINISHED does not cover the changed DST_HELLO:
                 * the transcript is checked before the choices.
                 */
                take_output(s, NULL);
                r = mig2_engine_recv(s, b.p, b.len);
                assert_failed_with_error(s, r, MIG2_ERR_TRANSCRIPT,
                                         MIG2_WIRE_TRANSCRIPT, dst_fin_msg);
                mig2_engine_free(s);
                buf_free(&b);
                continue;
            } else if (fin == 2) {
                /* If the destination rejects us, its ERROR wins. */
                b.len = frame_size(&f[0]);
                {
                    Buf e = { 0 };

                    put_peer_error(&e);
                    buf_add(&b, e.p, e.len);
                    buf_free(&e);
                }
            }
            take_output(s, NULL);
            r = mig2_engine_recv(s, b.p, b.len);
            if (fin == 2) {
                assert_int_equal(r, (ssize_t)b.len);
                assert_rejected_busy(s);
                mig2_engine_free(s);
                buf_free(&b);
                continue;
            }
            assert_int_equal(r, MIG2_ERR_INCOMPATIBLE);
            assert_int_equal(mig2_engine_state(s), MIG2_STATE_FAILED);
            err = mig2_engine_error(s);
            assert_false(err->from_peer);
            assert_int_equal(err->code, MIG2_WIRE_INCOMPATIBLE);
            assert_int_equal(err->n_problems, cases[i].n);
            for (k = 0; k < cases[i].n; k++) {
                assert_problem(err, k, cases[i].pr[k].kind,
                               cases[i].pr[k].path, cases[i].pr[k].expected,
                               cases[i].pr[k].actual);
            }
            snprintf(msg, sizeof(msg),
                     "source found %zu problem%s; first: %s %s: expected %s, "
                     "got %s", cases[i].n, cases[i].n == 1 ? "" : "s",
                     mig2_problem_kind_name(cases[i].pr[0].kind),
                     cases[i].pr[0].path, cases[i].pr[0].expected,
                     cases[i].pr[0].actual);
            assert_string_equal(err->message, msg);
            assert_true(mig2_engine_next_event(s, &ev));
            assert_int_equal(ev.type, MIG2_EV_FAILED);
            assert_false(mig2_engine_next_event(s, &ev));
            /* The ERROR on the wire carries the same problems. */
            take_error_frame(s, &wire);
            assert_int_equal(wire.code, MIG2_WIRE_INCOMPATIBLE);
            assert_string_equal(wire.message, msg);
            assert_int_equal(wire.n_problems, cases[i].n);
            for (k = 0; k < cases[i].n; k++) {
                assert_problem(&wire, k, cases[i].pr[k].kind,
                               cases[i].pr[k].path, cases[i].pr[k].expected,
                               cases[i].pr[k].actual);
            }
            mig2_error_clear(&wire);
            assert_null(mig2_result_channel_key(s));
            mig2_engine_free(s);
            buf_free(&b);
        }
    }
    mig2_profile_free(sp);
}

/* ---------------------------------------------------------------- */
/* Reassembly                                                        */
/* ---------------------------------------------------------------- */

/* Same bytes and same results as the reference run @ref. */
static void assert_same_run(const Pair *p, const Pair *ref)
{
    assert_complete(p);
    assert_int_equal(p->s.sent.len, ref->s.sent.len);
    assert_memory_equal(p->s.sent.p, ref->s.sent.p, p->s.sent.len);
    assert_int_equal(p->d.sent.len, ref->d.sent.len);
    assert_memory_equal(p->d.sent.p, ref->d.sent.p, p->d.sent.len);
    assert_memory_equal(mig2_result_transcript_hash(p->d.e),
                        mig2_result_transcript_hash(ref->d.e), MIG2_HASH_LEN);
    assert_memory_equal(mig2_result_channel_key(p->d.e),
                        mig2_result_channel_key(ref->d.e), MIG2_HASH_LEN);
    assert_int_equal(mig2_result_config_count(p->d.e), 2);
    assert_int_equal(mig2_result_config(p->d.e, 0)->final.u, 4);
    assert_int_equal(mig2_result_device(p->d.e, 1)->version, 4);
    assert_int_equal(mig2_result_omitted_count(p->d.e), 1);
}

static void test_split_every_boundary(void **state)
{
    Mig2EngineOptions so = opts_s(true), dopt = opts_d(true);
    size_t cut, flight, len;
    Pair ref, p;

    (void)state;
    small_run(&ref, &so, &dopt, 0);
    assert_complete(&ref);

    /* Each of the three flights, cut in two at every byte. */
    for (flight = 0; flight < 3; flight++) {
        for (cut = 0;; cut++) {
            small_start(&p, &so, &dopt);
            if (flight == 0) {
                mig2_engine_output(p.s.e, &len);
                move_cut(&p.s, &p.d, cut, 0);
            } else {
                move_cut(&p.s, &p.d, 0, 0);
            }
            if (flight == 1) {
                mig2_engine_output(p.d.e, &len);
                move_cut(&p.d, &p.s, cut, 0);
            } else {
                move_cut(&p.d, &p.s, 0, 0);
            }
            if (flight == 2) {
                mig2_engine_output(p.s.e, &len);
                move_cut(&p.s, &p.d, cut, 0);
            }
            pump(&p, 0);
            assert_same_run(&p, &ref);
            pair_free(&p);
            if (cut >= len) {
                break;
            }
        }
    }
    pair_free(&ref);
}

static void test_byte_at_a_time(void **state)
{
    Mig2EngineOptions so = opts_s(true), dopt = opts_d(true);
    Mig2Profile *sp = small_profile(true), *dp = small_profile(false);
    uint16_t rev;
    Pair ref, p;

    (void)state;
    small_run(&ref, &so, &dopt, 0);
    small_run(&p, &so, &dopt, 1);
    assert_same_run(&p, &ref);
    pair_free(&p);
    pair_free(&ref);

    /* Revision 1, with READY, likewise. */
    for (rev = 1; rev <= 2; rev++) {
        assert_int_equal(mig2_profile_set_revisions(dp, 1, rev), MIG2_OK);
        pair_start(&ref, sp, dp, &so, &dopt);
        pump(&ref, 0);
        pair_start(&p, sp, dp, &so, &dopt);
        pump(&p, 1);
        assert_same_run(&p, &ref);
        assert_int_equal(mig2_result_revision(p.s.e), rev);
        assert_int_equal(mig2_result_round_trips(p.s.e), rev == 1 ? 2 : 1);
        pair_free(&p);
        pair_free(&ref);
    }
    mig2_profile_free(sp);
    mig2_profile_free(dp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_manifest),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_grease),
        cmocka_unit_test(test_preamble),
        cmocka_unit_test(test_engine_new_args),
        cmocka_unit_test(test_frame_too_large),
        cmocka_unit_test(test_frame_lazy_allocation),
        cmocka_unit_test(test_unknown_frames_skipped),
        cmocka_unit_test(test_unknown_critical_frame),
        cmocka_unit_test(test_wrong_state_frames),
        cmocka_unit_test(test_transcript_tamper),
        cmocka_unit_test(test_binding),
        cmocka_unit_test(test_mitm_downgrade),
        cmocka_unit_test(test_data_after_handshake),
        cmocka_unit_test(test_peer_error_each_step),
        cmocka_unit_test(test_peer_error_garbled),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_binding_too_late),
        cmocka_unit_test(test_tampered_choice),
        cmocka_unit_test(test_split_every_boundary),
        cmocka_unit_test(test_byte_at_a_time),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
