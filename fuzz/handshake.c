/*
 * mig2 fuzzing - one handshake engine fed a hostile peer's bytes
 *
 * The fuzzed engine plays one role with one of the profiles in common.c;
 * the input is everything its peer sends:
 *
 *   byte 0   control (FUZZ_HS_* in common.h): profile, FINISHED fix-up,
 *            small max_frame, TLS binding, grease, how recv() is called
 *   byte 1   seed for the chunk sizes
 *   rest     the peer's stream: for a destination, the preamble, grease,
 *            SRC_HELLO, FINISHED, ERROR ...; for a source (after its own
 *            preamble and SRC_HELLO went out), DST_HELLO, FINISHED,
 *            READY, ERROR ..., and maybe data-phase bytes after them
 *
 * Structure where blind mutation would stall: the harness walks the
 * stream frame by frame (by the 8-byte headers in it) and, with
 * FUZZ_HS_FIXUP, rewrites the payload of a 32-byte FINISHED frame with
 * the verify data the engine expects, computed from the engine's own
 * transcript hash.  A mutated HELLO therefore still reaches FINISHED,
 * READY, COMPLETE and the channel key, which no random 32 bytes would.
 *
 * Besides the sanitizers, each step checks the engine's contract: recv()
 * never reports more than it was given, a negative result means FAILED,
 * a failed engine has an error, events carry errors where they must, and
 * every frame the engine queues decodes with the library's own decoders.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "internal.h"

#include "common.h"
#include "handshake.h"

typedef struct Run {
    Mig2Engine *e;
    Mig2Role role;
    uint8_t ctl;
    uint32_t rng;
    bool stopped;       /* the handshake ended: leave the rest unread */
} Run;

static void drain_events(Run *r)
{
    Mig2Event ev;
    unsigned n = 0;

    while (mig2_engine_next_event(r->e, &ev)) {
        FUZZ_CHECK(++n <= 8);
        switch (ev.type) {
        case MIG2_EV_NEGOTIATED:
            FUZZ_CHECK(mig2_result_ready(r->e));
            FUZZ_CHECK(ev.error == NULL);
            break;
        case MIG2_EV_COMPLETE:
            FUZZ_CHECK(mig2_engine_state(r->e) == MIG2_STATE_COMPLETE);
            FUZZ_CHECK(ev.error == NULL);
            break;
        case MIG2_EV_FAILED:
        case MIG2_EV_REJECTED:
            FUZZ_CHECK(ev.error != NULL && ev.error->message != NULL);
            FUZZ_CHECK(ev.error->from_peer == (ev.type == MIG2_EV_REJECTED));
            break;
        default:
            FUZZ_CHECK(!"unknown event type");
        }
    }
}

/* Take what the engine queued, as a transport would send it. */
static void drain_output(Run *r)
{
    size_t n, half;
    const uint8_t *p = mig2_engine_output(r->e, &n);

    if (!n) {
        return;
    }
    fuzz_check_output_frames(p, n);
    /* Sometimes in two writes, to cover partial consumption. */
    half = (r->ctl & 0x02) ? n / 2 : n;
    mig2_engine_output_consumed(r->e, half);
    mig2_engine_output_consumed(r->e, n - half);
    p = mig2_engine_output(r->e, &n);
    FUZZ_CHECK(n == 0 && p == NULL);
}

static void after_recv(Run *r, ssize_t rc, size_t offered)
{
    Mig2EngineState st = mig2_engine_state(r->e);

    FUZZ_CHECK(rc < 0 || (size_t)rc <= offered);
    if (rc < 0) {
        FUZZ_CHECK(st == MIG2_STATE_FAILED);
    }
    if (st == MIG2_STATE_FAILED) {
        const Mig2Error *err = mig2_engine_error(r->e);

        FUZZ_CHECK(err != NULL && err->message != NULL);
    } else {
        FUZZ_CHECK(mig2_engine_error(r->e) == NULL);
    }
    if (st != MIG2_STATE_RUNNING) {
        r->stopped = true;
    }
    /* Bytes left over are the data phase: never consumed. */
    if (rc >= 0 && (size_t)rc < offered) {
        FUZZ_CHECK(st != MIG2_STATE_RUNNING);
    }
    drain_events(r);
    drain_output(r);
}

/* Offer @len bytes in the sizes the control byte asks for. */
static void feed(Run *r, const uint8_t *p, size_t len)
{
    unsigned mode = r->ctl >> FUZZ_HS_CHUNK_SHIFT;

    while (len && !r->stopped) {
        size_t n = len;
        ssize_t rc;

        switch (mode) {
        case FUZZ_CHUNK_SMALL:
            n = 1 + fuzz_rand(&r->rng) % 64;
            break;
        case FUZZ_CHUNK_BYTE:
            n = 1;
            break;
        default:
            break;
        }
        if (n > len) {
            n = len;
        }
        rc = mig2_engine_recv(r->e, p, n);
        after_recv(r, rc, n);
        if (rc < 0 || (size_t)rc < n) {
            return;
        }
        p += n;
        len -= n;
    }
}

/* Everything the results API offers, read once (valid after NEGOTIATED). */
static void read_results(const Mig2Engine *e)
{
    const uint16_t *ids;
    uint16_t min, max;
    uint64_t sent, recvd;
    size_t i, n;
    int set;

    mig2_result_peer_revisions(e, &min, &max);
    (void)strlen(mig2_result_peer_build(e));
    (void)mig2_result_revision(e);
    for (set = MIG2_FEATURES_COMMON; set <= MIG2_FEATURES_LOCAL_LACKS;
         set++) {
        n = mig2_result_features(e, (Mig2FeatureSet)set, &ids);
        for (i = 0; i < n; i++) {
            (void)mig2_feature_name(ids[i]);
        }
    }
    n = mig2_result_config_count(e);
    for (i = 0; i < n; i++) {
        const Mig2ConfigResult *c = mig2_result_config(e, i);

        FUZZ_CHECK(c && c->name);
        FUZZ_CHECK(mig2_result_config_find(e, c->name) != NULL);
        (void)mig2_config_status_name(c->status);
        if (c->final.type == MIG2_CFG_STR) {
            FUZZ_CHECK(c->final.s != NULL);
            (void)strlen(c->final.s);
        }
    }
    n = mig2_result_device_count(e);
    for (i = 0; i < n; i++) {
        const Mig2DeviceResult *d = mig2_result_device(e, i);

        FUZZ_CHECK(d && d->id);
        (void)strlen(d->id);
    }
    n = mig2_result_omitted_count(e);
    for (i = 0; i < n; i++) {
        const Mig2OmittedSubsection *o = mig2_result_omitted(e, i);

        FUZZ_CHECK(o && o->device && o->subsection);
        (void)strlen(o->device);
        (void)strlen(o->subsection);
    }
    (void)mig2_result_has_feature(e, MIG2_FEAT_MULTICHANNEL);
    (void)mig2_result_round_trips(e);
    mig2_result_bytes(e, &sent, &recvd);
    (void)mig2_result_session_id(e);
    (void)mig2_result_transcript_hash(e);
}

/* A complete session: the channel key and the extra channels it allows. */
static void use_session(const Mig2Engine *e)
{
    Mig2ChannelSet *set;
    Mig2Writer w;
    char missing[64];
    int rc;

    FUZZ_CHECK(mig2_result_channel_key(e) != NULL);
    set = mig2_channel_set_new(e, &rc);
    FUZZ_CHECK(set != NULL && rc == MIG2_OK);
    (void)mig2_channel_set_expected(set, MIG2_CHANNEL_MULTIFD);
    (void)mig2_channel_set_missing(set, missing, sizeof(missing));
    (void)mig2_channel_set_complete(set);
    if (mig2_engine_role(e) == MIG2_ROLE_SOURCE) {
        unsigned count = mig2_channel_set_expected(set, MIG2_CHANNEL_MULTIFD);

        mig2_wr_init(&w, MIG2_CHANNEL_MAX_LEN);
        if (count) {
            Mig2ChannelHeader h;
            Mig2Error why = { 0 };

            FUZZ_CHECK(mig2_channel_header_write(e, MIG2_CHANNEL_MULTIFD, 0,
                                                 (uint16_t)count, &w) ==
                       MIG2_OK);
            /* The session's own header is admitted by its own set. */
            FUZZ_CHECK(mig2_channel_set_admit(set, w.buf, w.len, &h,
                                              &why) == MIG2_OK);
            mig2_error_clear(&why);
        }
        mig2_wr_free(&w);
    }
    mig2_channel_set_free(set);
}

int fuzz_handshake_one(Mig2Role role, const uint8_t *data, size_t size)
{
    Run r = { .role = role };
    Mig2EngineOptions opts;
    Mig2Profile *prof;
    const uint8_t *stream;
    uint8_t *buf;
    size_t len, pos = 0;
    int rc;

    if (size < 2) {
        return 0;
    }
    r.ctl = data[0];
    r.rng = 0x6d696732u ^ data[1];
    /* A copy: FINISHED frames may be rewritten in place. */
    len = size - 2;
    buf = malloc(len ? len : 1);
    FUZZ_SETUP(buf);
    memcpy(buf, data + 2, len);
    stream = buf;

    prof = fuzz_profile(r.ctl & FUZZ_HS_PROFILE_MASK);
    fuzz_engine_options(role, r.ctl, &opts);
    r.e = mig2_engine_new(role, prof, &opts, &rc);
    mig2_profile_free(prof);
    FUZZ_SETUP(r.e && rc == MIG2_OK);
    if (r.ctl & FUZZ_HS_BINDING) {
        FUZZ_SETUP(mig2_engine_set_binding(r.e, fuzz_binding,
                                           sizeof(fuzz_binding)) == MIG2_OK);
    }
    if (role == MIG2_ROLE_SOURCE) {
        /* The first flight: preamble, then frames. */
        size_t n;
        const uint8_t *p = mig2_engine_output(r.e, &n);

        FUZZ_CHECK(n > MIG2_PREAMBLE_LEN);
        fuzz_check_output_frames(p + MIG2_PREAMBLE_LEN,
                                 n - MIG2_PREAMBLE_LEN);
        mig2_engine_output_consumed(r.e, n);
    } else {
        size_t n = len < MIG2_PREAMBLE_LEN ? len : MIG2_PREAMBLE_LEN;

        feed(&r, stream, n);
        pos = n;
    }

    if ((r.ctl >> FUZZ_HS_CHUNK_SHIFT) == FUZZ_CHUNK_LARGE) {
        /* Chunks that ignore frame boundaries (no fix-up possible). */
        while (pos < len && !r.stopped) {
            size_t n = 1 + fuzz_rand(&r.rng) % 4096;

            if (n > len - pos) {
                n = len - pos;
            }
            ssize_t got = mig2_engine_recv(r.e, stream + pos, n);

            after_recv(&r, got, n);
            pos += n;
        }
    }
    while (pos < len && !r.stopped) {
        size_t seg = len - pos;

        if (seg >= MIG2_FRAME_HEADER_LEN) {
            uint16_t type = fuzz_be16(stream + pos);
            uint32_t flen = fuzz_be32(stream + pos + 4);

            if (flen < seg - MIG2_FRAME_HEADER_LEN) {
                seg = MIG2_FRAME_HEADER_LEN + flen;
            }
            if ((r.ctl & FUZZ_HS_FIXUP) && type == MIG2_FRAME_FINISHED &&
                flen == MIG2_VERIFY_LEN &&
                seg == MIG2_FRAME_HEADER_LEN + MIG2_VERIFY_LEN) {
                uint8_t vd[MIG2_HASH_LEN];

                if (fuzz_verify_data(r.e, r.ctl & FUZZ_HS_BINDING,
                                     role == MIG2_ROLE_SOURCE
                                         ? FUZZ_LABEL_DST_FINISHED
                                         : FUZZ_LABEL_SRC_FINISHED,
                                     vd)) {
                    memcpy(buf + pos + MIG2_FRAME_HEADER_LEN, vd,
                           sizeof(vd));
                }
            }
        }
        feed(&r, stream + pos, seg);
        pos += seg;
    }

    if (mig2_result_ready(r.e)) {
        read_results(r.e);
    }
    switch (mig2_engine_state(r.e)) {
    case MIG2_STATE_COMPLETE:
        use_session(r.e);
        FUZZ_CHECK(mig2_engine_recv(r.e, stream, len) == 0);
        FUZZ_CHECK(mig2_engine_abort(r.e, MIG2_WIRE_CANCELLED, "late") ==
                   MIG2_ERR_STATE);
        break;
    case MIG2_STATE_RUNNING:
        /* The transport gave up: cancel, as mig2-vm does on a stall. */
        FUZZ_CHECK(mig2_engine_abort(r.e, MIG2_WIRE_TIMEOUT, NULL) ==
                   MIG2_OK);
        FUZZ_CHECK(mig2_engine_state(r.e) == MIG2_STATE_FAILED);
        drain_events(&r);
        drain_output(&r);
        break;
    case MIG2_STATE_FAILED: {
        char *text = mig2_error_format(mig2_engine_error(r.e));

        FUZZ_CHECK(text != NULL);
        free(text);
        FUZZ_CHECK(mig2_engine_recv(r.e, stream, len) <= 0);
        break;
    }
    }
    mig2_engine_free(r.e);
    free(buf);
    return 0;
}
