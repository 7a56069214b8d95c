/*
 * libmig2 - the sans-I/O handshake engine
 *
 * One state machine per role (docs/protocol.md, section 7).  Input is
 * reassembled into frames with a bounded buffer; each complete frame goes
 * to the handler of the current state.  Output accumulates in a writer the
 * caller drains.  Nothing here does I/O or reads a clock.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum EngState {
    ST_SRC_EXPECT_DST_HELLO,
    ST_SRC_EXPECT_FINISHED,
    ST_SRC_EXPECT_READY,
    ST_DST_EXPECT_PREAMBLE,
    ST_DST_EXPECT_SRC_HELLO,
    ST_DST_EXPECT_MANIFEST,     /* one-way: the stream's first frame */
    ST_DST_EXPECT_FINISHED,
    ST_COMPLETE,
    ST_FAILED,
} EngState;

#define MAX_EVENTS 4
/* Output never holds more than a grease frame, a HELLO and an ERROR. */
#define OUT_MAX (3 * (size_t)MIG2_FRAME_MAX)

static const char dst_finished_label[] = "mig2 dst finished";
static const char src_finished_label[] = "mig2 src finished";
static const char channel_key_label[] = "mig2 channel key";

struct Mig2Engine {
    Mig2Role role;
    EngState st;
    bool oneway;                /* one-way v4 stream: nothing goes back */
    Mig2Profile *local;
    Mig2Hello mine;             /* mine.profile aliases local */
    Mig2Hello peer;
    bool grease;
    uint32_t grease_seed;
    size_t max_frame;

    /* Input reassembly. */
    uint8_t pre[MIG2_PREAMBLE_LEN];
    size_t pre_len;
    uint8_t hdr[MIG2_FRAME_HEADER_LEN];
    size_t hdr_len;
    Mig2FrameHeader fh;
    uint8_t *payload;
    size_t payload_len;
    size_t payload_cap;
    bool skipping;              /* unknown frame: hash and drop payload */
    bool skip_hash;
    uint16_t peer_rmin, peer_rmax;  /* kept even when HELLO is not decoded */

    /* Output. */
    Mig2Writer out;
    size_t out_off;

    /* Transcript and keys. */
    Mig2Hash *th;
    bool th_done;
    uint8_t transcript[MIG2_HASH_LEN];
    uint8_t binding[64];
    size_t binding_len;
    uint8_t channel_key[MIG2_HASH_LEN];

    /* Events and errors. */
    Mig2Event events[MAX_EVENTS];
    size_t ev_head, ev_count;
    Mig2Error error;
    Mig2Error deferred;         /* source: problems found in DST_HELLO */
    bool awaiting;              /* source: a flight is out, none back yet */

    /* Results. */
    bool ready;
    uint16_t revision;
    uint16_t *feat[3];
    size_t n_feat[3];
    Mig2ConfigResult *cfg;
    size_t n_cfg;
    Mig2DeviceResult *dev;
    size_t n_dev;
    Mig2OmittedSubsection *omit;
    size_t n_omit;
    unsigned round_trips;
    uint64_t sent, recvd;
};

/* ---------------------------------------------------------------- */
/* Small helpers                                                     */
/* ---------------------------------------------------------------- */

static void push_event(Mig2Engine *e, Mig2EventType type)
{
    Mig2Event *ev;

    if (e->ev_count == MAX_EVENTS) {
        return;     /* cannot happen: at most 3 events per handshake step */
    }
    ev = &e->events[(e->ev_head + e->ev_count) % MAX_EVENTS];
    ev->type = type;
    ev->error = (type == MIG2_EV_FAILED || type == MIG2_EV_REJECTED)
                    ? &e->error : NULL;
    e->ev_count++;
}

/* Append frames built by @fn to the output, hashing them when asked. */
static int out_commit(Mig2Engine *e, size_t mark, bool hash)
{
    int rc = mig2_wr_error(&e->out);

    if (rc) {
        return rc;
    }
    if (hash && (rc = mig2_hash_update(e->th, e->out.buf + mark,
                                       e->out.len - mark))) {
        return rc;
    }
    e->sent += e->out.len - mark;
    return MIG2_OK;
}

/*
 * Queue @e->error as an ERROR frame and enter FAILED.  When the problems
 * do not fit, they are dropped so the code and message still go out.
 */
static int fail_with_error(Mig2Engine *e, int status)
{
    size_t mark = e->out.len;

    e->error.from_peer = false;
    if (e->oneway) {
        /* Nobody reads a one-way stream's answer: report it locally. */
        e->st = ST_FAILED;
        push_event(e, MIG2_EV_FAILED);
        return status;
    }
    mig2_error_encode(&e->out, &e->error);
    if (mig2_wr_error(&e->out)) {
        Mig2Error slim = {
            .code = e->error.code,
            .retryable = e->error.retryable,
            .message = e->error.message,
        };

        e->out.len = mark;
        e->out.err = MIG2_OK;
        mig2_error_encode(&e->out, &slim);
    }
    if (!mig2_wr_error(&e->out)) {
        e->sent += e->out.len - mark;
    }
    e->st = ST_FAILED;
    push_event(e, MIG2_EV_FAILED);
    return status;
}

/* Fail without sending anything (the peer does not speak v2). */
static int fail_silently(Mig2Engine *e, int status, uint32_t code,
                         const char *msg)
{
    mig2_error_clear(&e->error);
    mig2_error_set(&e->error, code, false, "%s", msg);
    e->st = ST_FAILED;
    push_event(e, MIG2_EV_FAILED);
    return status;
}

static int fail_protocol(Mig2Engine *e, const char *what,
                         const char *expected, const char *actual)
{
    mig2_error_clear(&e->error);
    mig2_error_set(&e->error, MIG2_WIRE_PROTOCOL, false, "%s", what);
    mig2_error_add(&e->error, MIG2_PROB_MALFORMED, "frame", expected, actual);
    return fail_with_error(e, MIG2_ERR_PROTOCOL);
}

static const char *frame_name(uint16_t type)
{
    switch (type) {
    case MIG2_FRAME_SRC_HELLO: return "SRC_HELLO";
    case MIG2_FRAME_DST_HELLO: return "DST_HELLO";
    case MIG2_FRAME_FINISHED: return "FINISHED";
    case MIG2_FRAME_READY: return "READY";
    case MIG2_FRAME_MANIFEST: return "MANIFEST";
    case MIG2_FRAME_ERROR: return "ERROR";
    default: return "unknown";
    }
}

static int verify_data(const Mig2Engine *e, const char *label,
                       uint8_t out[MIG2_HASH_LEN])
{
    const void *parts[2] = { label, e->transcript };
    size_t lens[2] = { strlen(label), MIG2_HASH_LEN };

    return mig2_hmac(e->binding, e->binding_len, parts, lens, 2, out);
}

static int derive_channel_key(Mig2Engine *e)
{
    const uint8_t *sid, *dnonce;
    const void *parts[4];
    size_t lens[4];

    sid = e->role == MIG2_ROLE_SOURCE ? e->mine.nonce : e->peer.nonce;
    dnonce = e->role == MIG2_ROLE_SOURCE ? e->peer.nonce : e->mine.nonce;
    parts[0] = channel_key_label;
    lens[0] = strlen(channel_key_label);
    parts[1] = sid;
    lens[1] = MIG2_NONCE_LEN;
    parts[2] = dnonce;
    lens[2] = MIG2_NONCE_LEN;
    parts[3] = e->binding;
    lens[3] = e->binding_len;
    return mig2_hmac(e->transcript, MIG2_HASH_LEN, parts, lens, 4,
                     e->channel_key);
}

static int write_finished(Mig2Engine *e, const char *label)
{
    uint8_t vd[MIG2_HASH_LEN];
    size_t mark = e->out.len, f;
    int rc = verify_data(e, label, vd);

    if (rc) {
        return rc;
    }
    f = mig2_wr_frame_begin(&e->out, MIG2_FRAME_FINISHED,
                            MIG2_FRAME_FLAG_CRITICAL);
    mig2_wr_bytes(&e->out, vd, sizeof(vd));
    mig2_wr_frame_end(&e->out, f);
    return out_commit(e, mark, false);
}

static bool check_finished(const Mig2Engine *e, const char *label,
                           const uint8_t *p, size_t len)
{
    uint8_t vd[MIG2_HASH_LEN];
    uint8_t diff = 0;
    size_t i;

    if (len != MIG2_HASH_LEN || verify_data(e, label, vd)) {
        return false;
    }
    for (i = 0; i < MIG2_HASH_LEN; i++) {
        diff |= vd[i] ^ p[i];
    }
    return diff == 0;
}

/* FINISHED did not verify: fail with @text and the one problem it is. */
static int transcript_mismatch(Mig2Engine *e, const char *text)
{
    mig2_error_clear(&e->error);
    mig2_error_set(&e->error, MIG2_WIRE_TRANSCRIPT, false, "%s", text);
    mig2_error_add(&e->error, MIG2_PROB_TRANSCRIPT, "finished",
                   "verify data over this side's transcript",
                   "different verify data");
    return fail_with_error(e, MIG2_ERR_TRANSCRIPT);
}

static void transcript_close(Mig2Engine *e)
{
    if (!e->th_done) {
        mig2_hash_peek(e->th, e->transcript);
        e->th_done = true;
    }
}

/* ---------------------------------------------------------------- */
/* Results                                                           */
/* ---------------------------------------------------------------- */

static void results_clear(Mig2Engine *e)
{
    int i;

    for (i = 0; i < 3; i++) {
        free(e->feat[i]);
        e->feat[i] = NULL;
        e->n_feat[i] = 0;
    }
    free(e->cfg);
    free(e->dev);
    free(e->omit);
    e->cfg = NULL;
    e->dev = NULL;
    e->omit = NULL;
    e->n_cfg = e->n_dev = e->n_omit = 0;
}

/*
 * Fill the results from the two profiles.  @src is the proposing side,
 * @outcomes the destination's decisions (in proposal order).
 */
static int results_build(Mig2Engine *e, const Mig2Profile *src,
                         const Mig2Hello *outcomes,
                         const Mig2DevChoice *choices, size_t n_choices)
{
    /* A one-way writer has no peer: what it states is what is in use. */
    const Mig2Profile *peer = e->peer.profile ? e->peer.profile : e->local;
    size_t i, n;
    int rc;

    if ((rc = mig2_features_common(e->local, peer, &e->feat[0],
                                   &e->n_feat[0])) ||
        (rc = mig2_features_minus(e->local, peer, &e->feat[1],
                                  &e->n_feat[1])) ||
        (rc = mig2_features_minus(peer, e->local, &e->feat[2],
                                  &e->n_feat[2]))) {
        return rc;
    }
    n = outcomes->n_outcomes < src->n_config ? outcomes->n_outcomes
                                             : src->n_config;
    if (n) {
        if (!(e->cfg = calloc(n, sizeof(*e->cfg)))) {
            return MIG2_ERR_NOMEM;
        }
        for (i = 0; i < n; i++) {
            const Mig2ConfigItem *it = &src->config[i];
            const Mig2ConfigOutcome *o = &outcomes->outcomes[i];

            e->cfg[i].name = it->name;
            e->cfg[i].proposed = it->v;
            e->cfg[i].final = o->final;
            e->cfg[i].status = o->status;
            e->cfg[i].required = it->flags & MIG2_CONFIG_REQUIRED;
        }
        e->n_cfg = n;
    }
    if (n_choices) {
        if (!(e->dev = calloc(n_choices, sizeof(*e->dev)))) {
            return MIG2_ERR_NOMEM;
        }
        for (i = 0; i < n_choices; i++) {
            e->dev[i].id = choices[i].src->id;
            e->dev[i].instance = choices[i].src->instance;
            e->dev[i].version = choices[i].version;
        }
        e->n_dev = n_choices;
    }
    e->ready = true;
    return MIG2_OK;
}

/* ---------------------------------------------------------------- */
/* Destination                                                       */
/* ---------------------------------------------------------------- */

/* The REVISIONS TLV, if it is first and well formed (its layout is frozen). */
static bool peek_revisions(const uint8_t *p, size_t len, uint16_t *min,
                           uint16_t *max)
{
    Mig2Reader rd, v;
    uint16_t type;
    bool crit;

    mig2_rd_init(&rd, p, len);
    return mig2_rd_tlv(&rd, &type, &crit, &v) == MIG2_OK &&
           type == MIG2_TLV_REVISIONS && mig2_rd_u16(&v, min) == MIG2_OK &&
           mig2_rd_u16(&v, max) == MIG2_OK && mig2_rd_end(&v) == MIG2_OK &&
           *min >= 1 && *min <= *max;
}

static int dst_on_src_hello(Mig2Engine *e, const uint8_t *p, size_t len)
{
    Mig2Profile *src, *dst = e->local;
    Mig2DevChoice *choices = NULL;
    size_t n_choices = 0, mark;
    uint16_t smin, smax;
    int rc;

    mig2_error_clear(&e->error);
    /*
     * Settle the revision from the frozen first TLV before reading the
     * rest: a source that offers only newer revisions may use TLVs this
     * side cannot parse, and the right answer is unsupported-revision.
     */
    if (peek_revisions(p, len, &smin, &smax)) {
        e->peer_rmin = smin;
        e->peer_rmax = smax;
        e->revision = mig2_negotiate_revision(smin, smax, dst->rev_min,
                                              dst->rev_max);
        if (!e->revision) {
            char want[16], got[16];

            snprintf(want, sizeof(want), "%u..%u", dst->rev_min,
                     dst->rev_max);
            snprintf(got, sizeof(got), "%u..%u", smin, smax);
            mig2_error_set(&e->error, MIG2_WIRE_UNSUPPORTED_REVISION, false,
                           "no common protocol revision: destination "
                           "supports %s, source offers %s", want, got);
            mig2_error_add(&e->error, MIG2_PROB_REVISION, "revision", want,
                           got);
            return fail_with_error(e, MIG2_ERR_NO_REVISION);
        }
    }
    rc = mig2_hello_decode(p, len, MIG2_FRAME_SRC_HELLO, &e->peer, &e->error);
    if (rc) {
        return rc == MIG2_ERR_NOMEM ? rc : fail_with_error(e, rc);
    }
    src = e->peer.profile;
    e->mine.selected = e->revision;

    if ((rc = mig2_evaluate_source(src, dst, &e->mine, &choices, &n_choices,
                                   &e->omit, &e->n_omit, &e->error))) {
        free(choices);
        return rc;
    }

    mark = e->out.len;
    if (e->grease) {
        mig2_grease_frame(&e->out, e->grease_seed);
    }
    mig2_hello_encode(&e->out, MIG2_FRAME_DST_HELLO, &e->mine, e->grease,
                      e->grease_seed >> 8);
    rc = out_commit(e, mark, true);
    if (!rc) {
        transcript_close(e);
        rc = results_build(e, src, &e->mine, choices, n_choices);
    }
    free(choices);
    if (rc) {
        return rc;
    }

    if (e->error.n_problems) {
        mig2_problems_message(&e->error, "destination");
        return fail_with_error(e, MIG2_ERR_INCOMPATIBLE);
    }
    e->round_trips = e->revision >= 2 ? 1 : 2;
    if ((rc = write_finished(e, dst_finished_label))) {
        return rc;
    }
    push_event(e, MIG2_EV_NEGOTIATED);
    e->st = ST_DST_EXPECT_FINISHED;
    return MIG2_OK;
}

static int dst_on_finished(Mig2Engine *e, const uint8_t *p, size_t len)
{
    size_t mark, f;
    int rc;

    if (!check_finished(e, src_finished_label, p, len)) {
        return transcript_mismatch(e, "the source's FINISHED does not "
                                   "match the handshake transcript: the "
                                   "two sides saw different bytes");
    }
    if ((rc = derive_channel_key(e))) {
        return rc;
    }
    if (e->revision == 1) {
        mark = e->out.len;
        f = mig2_wr_frame_begin(&e->out, MIG2_FRAME_READY,
                                MIG2_FRAME_FLAG_CRITICAL);
        mig2_wr_frame_end(&e->out, f);
        if ((rc = out_commit(e, mark, false))) {
            return rc;
        }
    }
    e->st = ST_COMPLETE;
    push_event(e, MIG2_EV_COMPLETE);
    return MIG2_OK;
}

/*
 * One-way reader: the stream's first frame.  The revision comes from the
 * frozen first two TLVs, before anything else is interpreted; the check
 * waits for FINISHED, so a corrupted manifest is reported as such and
 * not as problems it invented.
 */
static int dst_on_manifest(Mig2Engine *e, const uint8_t *p, size_t len)
{
    const Mig2Profile *dst = e->local;
    uint16_t sel;
    int rc;

    mig2_error_clear(&e->error);
    if (mig2_manifest_peek_revision(p, len, &sel) &&
        (sel < dst->rev_min || sel > dst->rev_max)) {
        mig2_oneway_revision_error(&e->error, dst->rev_min, dst->rev_max,
                                   sel);
        return fail_with_error(e, MIG2_ERR_NO_REVISION);
    }
    rc = mig2_hello_decode(p, len, MIG2_FRAME_MANIFEST, &e->peer, &e->error);
    if (rc) {
        return rc == MIG2_ERR_NOMEM ? rc : fail_with_error(e, rc);
    }
    e->peer_rmin = e->peer.profile->rev_min;
    e->peer_rmax = e->peer.profile->rev_max;
    e->revision = e->peer.selected;
    transcript_close(e);
    e->st = ST_DST_EXPECT_FINISHED;
    return MIG2_OK;
}

/* One-way reader: FINISHED binds the manifest; then the live checks. */
static int dst_oneway_finished(Mig2Engine *e, const uint8_t *p, size_t len)
{
    Mig2DevChoice *choices = NULL;
    size_t n_choices = 0;
    int rc;

    if (!check_finished(e, src_finished_label, p, len)) {
        return transcript_mismatch(e, "the one-way stream's FINISHED does "
                                   "not match its MANIFEST: the stream is "
                                   "corrupt");
    }
    mig2_error_clear(&e->error);
    rc = mig2_evaluate_source(e->peer.profile, e->local, &e->mine, &choices,
                              &n_choices, &e->omit, &e->n_omit, &e->error);
    if (!rc) {
        rc = results_build(e, e->peer.profile, &e->mine, choices, n_choices);
    }
    free(choices);
    if (rc) {
        return rc;
    }
    if (e->error.n_problems) {
        mig2_problems_message(&e->error, "destination");
        return fail_with_error(e, MIG2_ERR_INCOMPATIBLE);
    }
    push_event(e, MIG2_EV_NEGOTIATED);
    e->st = ST_COMPLETE;
    push_event(e, MIG2_EV_COMPLETE);
    return MIG2_OK;
}

/* ---------------------------------------------------------------- */
/* Source                                                            */
/* ---------------------------------------------------------------- */

static int src_on_dst_hello(Mig2Engine *e, const uint8_t *p, size_t len)
{
    Mig2Profile *src = e->local, *dst;
    Mig2DevChoice *choices = NULL;
    size_t n_choices = 0;
    uint16_t want;
    int rc;

    transcript_close(e);
    mig2_error_clear(&e->error);
    rc = mig2_hello_decode(p, len, MIG2_FRAME_DST_HELLO, &e->peer, &e->error);
    if (rc) {
        return rc == MIG2_ERR_NOMEM ? rc : fail_with_error(e, rc);
    }
    dst = e->peer.profile;
    e->revision = e->peer.selected;

    /* Check every choice the destination made; report all at once. */
    want = mig2_negotiate_revision(src->rev_min, src->rev_max, dst->rev_min,
                                   dst->rev_max);
    if (!want || e->peer.selected != want) {
        char exp[16], got[16];

        snprintf(exp, sizeof(exp), "%u", want);
        snprintf(got, sizeof(got), "%u", e->peer.selected);
        if ((rc = mig2_error_add(&e->deferred, MIG2_PROB_CHOICE,
                                 "revision", exp, got))) {
            return rc;
        }
    }
    if ((rc = mig2_verify_config(src, &e->peer, &e->deferred)) ||
        (rc = mig2_check_required_features(dst, src, &e->deferred)) ||
        (rc = mig2_check_required_features(src, dst, &e->deferred)) ||
        (rc = mig2_check_compat(src, dst, &choices, &n_choices, &e->omit,
                                &e->n_omit, &e->deferred))) {
        free(choices);
        return rc;
    }
    rc = results_build(e, src, &e->peer, choices, n_choices);
    free(choices);
    if (rc) {
        return rc;
    }
    /*
     * Wait for the next frame before acting: when the destination rejects
     * us, its ERROR follows, and its problems are the ones to report.
     */
    e->st = ST_SRC_EXPECT_FINISHED;
    return MIG2_OK;
}

static int src_on_finished(Mig2Engine *e, const uint8_t *p, size_t len)
{
    int rc;

    /* Transcript first: corrupted bytes are not incompatibilities. */
    if (!check_finished(e, dst_finished_label, p, len)) {
        return transcript_mismatch(e, "the destination's FINISHED does "
                                   "not match the handshake transcript: "
                                   "the two sides saw different bytes");
    }
    if (e->deferred.n_problems) {
        mig2_error_clear(&e->error);
        e->error = e->deferred;
        memset(&e->deferred, 0, sizeof(e->deferred));
        mig2_problems_message(&e->error, "source");
        return fail_with_error(e, MIG2_ERR_INCOMPATIBLE);
    }
    push_event(e, MIG2_EV_NEGOTIATED);
    if ((rc = write_finished(e, src_finished_label)) ||
        (rc = derive_channel_key(e))) {
        return rc;
    }
    if (e->revision == 1) {
        e->awaiting = true;
        e->st = ST_SRC_EXPECT_READY;
        return MIG2_OK;
    }
    e->st = ST_COMPLETE;
    push_event(e, MIG2_EV_COMPLETE);
    return MIG2_OK;
}

/* ---------------------------------------------------------------- */
/* Frame dispatch                                                    */
/* ---------------------------------------------------------------- */

static int on_peer_error(Mig2Engine *e, const uint8_t *p, size_t len)
{
    int rc;

    mig2_error_clear(&e->error);
    rc = mig2_error_decode(p, len, &e->error);
    if (rc == MIG2_ERR_NOMEM) {
        return rc;
    }
    if (rc) {
        /* Still an error from the peer: keep its code, say it was garbled. */
        free(e->error.message);
        e->error.message = NULL;
        mig2_error_set(&e->error, e->error.code ? e->error.code
                                                : MIG2_WIRE_PROTOCOL,
                       false, "the peer sent a malformed ERROR frame (%s)",
                       mig2_strerror(rc));
    }
    e->error.from_peer = true;
    e->st = ST_FAILED;
    push_event(e, MIG2_EV_REJECTED);
    return MIG2_OK;
}

/* The frame type each state waits for. */
static uint16_t expected_frame(EngState st)
{
    switch (st) {
    case ST_SRC_EXPECT_DST_HELLO: return MIG2_FRAME_DST_HELLO;
    case ST_SRC_EXPECT_FINISHED: return MIG2_FRAME_FINISHED;
    case ST_SRC_EXPECT_READY: return MIG2_FRAME_READY;
    case ST_DST_EXPECT_SRC_HELLO: return MIG2_FRAME_SRC_HELLO;
    case ST_DST_EXPECT_FINISHED: return MIG2_FRAME_FINISHED;
    case ST_DST_EXPECT_MANIFEST: return MIG2_FRAME_MANIFEST;
    default: return 0;
    }
}

static bool known_frame(uint16_t type)
{
    return type == MIG2_FRAME_SRC_HELLO || type == MIG2_FRAME_DST_HELLO ||
           type == MIG2_FRAME_FINISHED || type == MIG2_FRAME_READY ||
           type == MIG2_FRAME_MANIFEST || type == MIG2_FRAME_ERROR;
}

static int handle_frame(Mig2Engine *e)
{
    const Mig2FrameHeader *h = &e->fh;
    const uint8_t *p = e->payload;
    size_t len = h->length;
    bool before_hello = e->st == ST_DST_EXPECT_SRC_HELLO ||
                        e->st == ST_SRC_EXPECT_DST_HELLO ||
                        e->st == ST_DST_EXPECT_MANIFEST;
    int rc;

    /* Every frame of the peer's first flight is part of the transcript. */
    if (before_hello && h->type != MIG2_FRAME_ERROR) {
        if ((rc = mig2_hash_update(e->th, e->hdr, sizeof(e->hdr))) ||
            (rc = mig2_hash_update(e->th, p, len))) {
            return rc;
        }
    }
    if (h->type == MIG2_FRAME_ERROR) {
        return on_peer_error(e, p, len);
    }
    if (h->type != expected_frame(e->st)) {
        char msg[80];

        snprintf(msg, sizeof(msg), "unexpected frame: %s while waiting for %s",
                 frame_name(h->type), frame_name(expected_frame(e->st)));
        return fail_protocol(e, msg, frame_name(expected_frame(e->st)),
                             frame_name(h->type));
    }
    if (e->awaiting) {
        e->awaiting = false;
        e->round_trips++;
    }
    switch (e->st) {
    case ST_DST_EXPECT_SRC_HELLO:
        return dst_on_src_hello(e, p, len);
    case ST_DST_EXPECT_FINISHED:
        return e->oneway ? dst_oneway_finished(e, p, len)
                         : dst_on_finished(e, p, len);
    case ST_DST_EXPECT_MANIFEST:
        return dst_on_manifest(e, p, len);
    case ST_SRC_EXPECT_DST_HELLO:
        return src_on_dst_hello(e, p, len);
    case ST_SRC_EXPECT_FINISHED:
        return src_on_finished(e, p, len);
    case ST_SRC_EXPECT_READY:
        if (len != 0) {
            return fail_protocol(e, "READY frame carries a payload",
                                 "an empty payload", "a payload");
        }
        e->st = ST_COMPLETE;
        push_event(e, MIG2_EV_COMPLETE);
        return MIG2_OK;
    default:
        return MIG2_ERR_STATE;
    }
}

static int on_preamble(Mig2Engine *e)
{
    char msg[160];
    uint32_t ver = (uint32_t)e->pre[4] << 24 | (uint32_t)e->pre[5] << 16 |
                   (uint32_t)e->pre[6] << 8 | e->pre[7];

    switch (mig2_stream_detect(e->pre)) {
    case MIG2_STREAM_HANDSHAKE:
        e->st = e->oneway ? ST_DST_EXPECT_MANIFEST : ST_DST_EXPECT_SRC_HELLO;
        return mig2_hash_update(e->th, e->pre, sizeof(e->pre));
    case MIG2_STREAM_LEGACY:
        return fail_silently(e, MIG2_ERR_LEGACY_STREAM, MIG2_WIRE_PROTOCOL,
                             "the source sent a legacy v3 migration stream, "
                             "but this destination requires the v2 "
                             "handshake (channel-type handshake)");
    case MIG2_STREAM_UNKNOWN:
        return fail_silently(e, MIG2_ERR_NOT_MIGRATION, MIG2_WIRE_PROTOCOL,
                             "not a migration stream (no QEVM magic)");
    default:
        snprintf(msg, sizeof(msg),
                 "Unsupported migration stream version %u (expected 4)", ver);
        return fail_silently(e, MIG2_ERR_BAD_VERSION, MIG2_WIRE_PROTOCOL,
                             msg);
    }
}

/*
 * A frame type this side does not know.  Critical: fail at once, without
 * reading the payload.  Otherwise its payload is skipped as it arrives,
 * never buffered; it is hashed when it belongs to the peer's first flight.
 */
static int on_unknown_header(Mig2Engine *e)
{
    bool before_hello = e->st == ST_DST_EXPECT_SRC_HELLO ||
                        e->st == ST_SRC_EXPECT_DST_HELLO;
    const Mig2FrameHeader h = e->fh;
    int rc;

    if (e->st == ST_DST_EXPECT_MANIFEST) {
        char what[48];

        /* The MANIFEST's place is what tells a one-way stream apart. */
        snprintf(what, sizeof(what), "frame type 0x%04x", h.type);
        return fail_protocol(e, "a one-way stream must start with MANIFEST",
                             "MANIFEST", what);
    }
    if (h.flags & MIG2_FRAME_FLAG_CRITICAL) {
        char what[48];

        snprintf(what, sizeof(what), "critical frame type 0x%04x", h.type);
        mig2_error_clear(&e->error);
        mig2_error_set(&e->error, MIG2_WIRE_UNKNOWN_CRITICAL, false,
                       "the peer sent a %s this side does not understand",
                       what);
        mig2_error_add(&e->error, MIG2_PROB_UNKNOWN_CRITICAL, "frame",
                       "a known frame type", what);
        return fail_with_error(e, MIG2_ERR_UNKNOWN_CRITICAL);
    }
    if (before_hello &&
        (rc = mig2_hash_update(e->th, e->hdr, sizeof(e->hdr)))) {
        return rc;
    }
    e->skipping = true;
    e->skip_hash = before_hello;
    e->payload_len = 0;
    return MIG2_OK;
}

/* A header announced more than we accept: stop before reading it. */
static int on_oversized(Mig2Engine *e)
{
    char msg[96], limit[32], actual[32];

    snprintf(msg, sizeof(msg), "%s frame of %u bytes exceeds the %zu-byte "
             "limit", frame_name(e->fh.type), e->fh.length, e->max_frame);
    if (e->fh.type == MIG2_FRAME_ERROR) {
        /* Nobody answers an ERROR, not even a broken one. */
        return fail_silently(e, MIG2_ERR_TOO_LARGE, MIG2_WIRE_PROTOCOL, msg);
    }
    snprintf(limit, sizeof(limit), "at most %zu bytes", e->max_frame);
    snprintf(actual, sizeof(actual), "%u bytes", e->fh.length);
    mig2_error_clear(&e->error);
    mig2_error_set(&e->error, MIG2_WIRE_PROTOCOL, false, "%s", msg);
    mig2_error_add(&e->error, MIG2_PROB_MALFORMED, "frame", limit, actual);
    return fail_with_error(e, MIG2_ERR_TOO_LARGE);
}

/* Make room for @want more payload bytes, growing with what arrives. */
static int payload_reserve(Mig2Engine *e, size_t want)
{
    size_t need = e->payload_len + want, ncap;
    uint8_t *p;

    if (need <= e->payload_cap) {
        return MIG2_OK;
    }
    ncap = e->payload_cap ? e->payload_cap * 2 : 4096;
    if (ncap < need) {
        ncap = need;
    }
    if (ncap > e->fh.length) {
        ncap = e->fh.length;
    }
    p = realloc(e->payload, ncap);
    if (!p) {
        return MIG2_ERR_NOMEM;
    }
    e->payload = p;
    e->payload_cap = ncap;
    return MIG2_OK;
}

ssize_t mig2_engine_recv(Mig2Engine *e, const uint8_t *buf, size_t len)
{
    size_t used = 0, n;
    int rc;

    if (!e || (!buf && len)) {
        return MIG2_ERR_INVALID_ARG;
    }
    while (used < len && e->st != ST_COMPLETE && e->st != ST_FAILED) {
        if (e->st == ST_DST_EXPECT_PREAMBLE) {
            n = sizeof(e->pre) - e->pre_len;
            n = n < len - used ? n : len - used;
            memcpy(e->pre + e->pre_len, buf + used, n);
            e->pre_len += n;
            used += n;
            if (e->pre_len == sizeof(e->pre) && (rc = on_preamble(e))) {
                goto out_err;
            }
            continue;
        }
        if (e->hdr_len < sizeof(e->hdr)) {
            n = sizeof(e->hdr) - e->hdr_len;
            n = n < len - used ? n : len - used;
            memcpy(e->hdr + e->hdr_len, buf + used, n);
            e->hdr_len += n;
            used += n;
            if (e->hdr_len < sizeof(e->hdr)) {
                continue;
            }
            if (mig2_frame_header_parse(e->hdr, e->max_frame, &e->fh)) {
                rc = on_oversized(e);
                goto out_err;
            }
            if (!known_frame(e->fh.type) &&
                (rc = on_unknown_header(e)) != MIG2_OK) {
                goto out_err;
            }
            e->payload_len = 0;
        }
        if (e->skipping) {
            n = e->fh.length - e->payload_len;
            n = n < len - used ? n : len - used;
            if (e->skip_hash && n &&
                (rc = mig2_hash_update(e->th, buf + used, n))) {
                goto out_err;
            }
            e->payload_len += n;
            used += n;
            if (e->payload_len == e->fh.length) {
                e->skipping = false;
                e->hdr_len = 0;
                e->payload_len = 0;
            }
            continue;
        }
        n = e->fh.length - e->payload_len;
        n = n < len - used ? n : len - used;
        if (n) {
            if ((rc = payload_reserve(e, n))) {
                goto out_err;
            }
            memcpy(e->payload + e->payload_len, buf + used, n);
            e->payload_len += n;
            used += n;
        }
        if (e->payload_len == e->fh.length) {
            e->hdr_len = 0;
            rc = handle_frame(e);
            e->payload_len = 0;
            if (rc) {
                goto out_err;
            }
        }
    }
    e->recvd += used;
    return (ssize_t)used;

out_err:
    e->recvd += used;
    if (e->st != ST_FAILED) {
        /* Local trouble (memory, hashing): tell the peer, then stop. */
        mig2_error_clear(&e->error);
        mig2_error_set(&e->error, MIG2_WIRE_INTERNAL, false,
                       "internal error: %s", mig2_strerror(rc));
        fail_with_error(e, rc);
    }
    return rc;
}

/* ---------------------------------------------------------------- */
/* Life cycle and accessors                                          */
/* ---------------------------------------------------------------- */

static uint32_t seed_from(const uint8_t *nonce)
{
    return (uint32_t)nonce[0] << 24 | (uint32_t)nonce[5] << 16 |
           (uint32_t)nonce[10] << 8 | nonce[15];
}

static int src_start(Mig2Engine *e)
{
    size_t mark = e->out.len;

    mig2_wr_u32(&e->out, MIG2_MAGIC);
    mig2_wr_u32(&e->out, MIG2_STREAM_V4);
    if (e->grease) {
        mig2_grease_frame(&e->out, e->grease_seed);
    }
    mig2_hello_encode(&e->out, MIG2_FRAME_SRC_HELLO, &e->mine, e->grease,
                      e->grease_seed >> 8);
    e->awaiting = true;
    return out_commit(e, mark, true);
}

/*
 * One-way writer: the whole head of the stream at once.  The engine's
 * profile becomes the manifest it states, so its results are the choices
 * every compatible reader will make.
 */
static int src_start_oneway(Mig2Engine *e)
{
    Mig2Manifest *m = mig2_manifest_from_profile(e->local, e->mine.nonce,
                                                 NULL);
    Mig2Hello outcomes = { 0 };
    Mig2DevChoice *choices = NULL;
    size_t n_choices = 0, mark = e->out.len;
    Mig2Error none = { 0 };
    int rc;

    if (!m) {
        return MIG2_ERR_NOMEM;
    }
    mig2_profile_free(e->local);
    e->local = e->mine.profile = mig2_profile_dup(mig2_manifest_profile(m));
    if (!e->local) {
        mig2_manifest_free(m);
        return MIG2_ERR_NOMEM;
    }
    e->mine.selected = e->revision = mig2_manifest_revision(m);
    rc = mig2_manifest_write(&e->out, m, e->grease);
    mig2_manifest_free(m);
    if (rc) {
        return rc;
    }
    /* The transcript: everything before FINISHED. */
    if ((rc = mig2_hash_update(e->th, e->out.buf + mark,
                               e->out.len - mark - MIG2_FRAME_HEADER_LEN -
                                   MIG2_VERIFY_LEN))) {
        return rc;
    }
    transcript_close(e);
    e->sent += e->out.len - mark;
    rc = mig2_evaluate_source(e->local, e->local, &outcomes, &choices,
                              &n_choices, &e->omit, &e->n_omit, &none);
    if (!rc) {
        rc = results_build(e, e->local, &outcomes, choices, n_choices);
    }
    free(choices);
    /* results_build borrowed the outcome values: keep them with ours. */
    e->mine.outcomes = outcomes.outcomes;
    e->mine.n_outcomes = outcomes.n_outcomes;
    e->mine.cap_outcomes = outcomes.cap_outcomes;
    mig2_error_clear(&none);
    if (rc) {
        return rc;
    }
    e->st = ST_COMPLETE;
    push_event(e, MIG2_EV_NEGOTIATED);
    push_event(e, MIG2_EV_COMPLETE);
    return MIG2_OK;
}

Mig2Engine *mig2_engine_new(Mig2Role role, const Mig2Profile *profile,
                            const Mig2EngineOptions *opts, int *status)
{
    Mig2Engine *e = NULL;
    int rc = MIG2_ERR_INVALID_ARG;

    if ((role != MIG2_ROLE_SOURCE && role != MIG2_ROLE_DESTINATION) ||
        !profile || !profile->machine ||
        (opts && opts->max_frame > MIG2_FRAME_MAX)) {
        goto fail;
    }
    rc = MIG2_ERR_NOMEM;
    if (!(e = calloc(1, sizeof(*e))) ||
        !(e->local = mig2_profile_dup(profile))) {
        goto fail;
    }
    e->role = role;
    e->oneway = opts && opts->oneway;
    if (e->oneway && role == MIG2_ROLE_DESTINATION) {
        mig2_profile_free(e->local);
        e->local = NULL;
        if ((rc = mig2_oneway_local(profile, &e->local))) {
            goto fail;
        }
    }
    e->mine.profile = e->local;
    e->max_frame = opts && opts->max_frame ? opts->max_frame : MIG2_FRAME_MAX;
    e->grease = !(opts && opts->no_grease);
    mig2_wr_init(&e->out, OUT_MAX);
    if (opts && opts->nonce) {
        memcpy(e->mine.nonce, opts->nonce, MIG2_NONCE_LEN);
    } else if ((rc = mig2_random(e->mine.nonce, MIG2_NONCE_LEN))) {
        goto fail;
    }
    e->grease_seed = seed_from(e->mine.nonce);
    if ((rc = mig2_hash_new(&e->th))) {
        goto fail;
    }
    if (role == MIG2_ROLE_SOURCE && e->oneway) {
        if ((rc = src_start_oneway(e))) {
            goto fail;
        }
    } else if (role == MIG2_ROLE_SOURCE) {
        e->st = ST_SRC_EXPECT_DST_HELLO;
        if ((rc = src_start(e))) {
            goto fail;
        }
    } else {
        e->st = ST_DST_EXPECT_PREAMBLE;
    }
    if (status) {
        *status = MIG2_OK;
    }
    return e;

fail:
    mig2_engine_free(e);
    if (status) {
        *status = rc;
    }
    return NULL;
}

void mig2_engine_free(Mig2Engine *e)
{
    if (!e) {
        return;
    }
    results_clear(e);
    e->mine.profile = NULL;     /* alias of local */
    mig2_hello_clear(&e->mine);
    mig2_hello_clear(&e->peer);
    mig2_profile_free(e->local);
    mig2_error_clear(&e->error);
    mig2_error_clear(&e->deferred);
    mig2_hash_free(e->th);
    mig2_wr_free(&e->out);
    free(e->payload);
    free(e);
}

const uint8_t *mig2_engine_output(Mig2Engine *e, size_t *len)
{
    *len = e->out.len - e->out_off;
    return *len ? e->out.buf + e->out_off : NULL;
}

void mig2_engine_output_consumed(Mig2Engine *e, size_t n)
{
    size_t left = e->out.len - e->out_off;

    e->out_off += n < left ? n : left;
    if (e->out_off == e->out.len) {
        e->out.len = e->out_off = 0;
    }
}

bool mig2_engine_next_event(Mig2Engine *e, Mig2Event *ev)
{
    if (!e->ev_count) {
        return false;
    }
    *ev = e->events[e->ev_head];
    e->ev_head = (e->ev_head + 1) % MAX_EVENTS;
    e->ev_count--;
    return true;
}

Mig2EngineState mig2_engine_state(const Mig2Engine *e)
{
    if (e->st == ST_COMPLETE) {
        return MIG2_STATE_COMPLETE;
    }
    return e->st == ST_FAILED ? MIG2_STATE_FAILED : MIG2_STATE_RUNNING;
}

Mig2Role mig2_engine_role(const Mig2Engine *e)
{
    return e->role;
}

const Mig2Error *mig2_engine_error(const Mig2Engine *e)
{
    return e->st == ST_FAILED ? &e->error : NULL;
}

int mig2_engine_set_binding(Mig2Engine *e, const uint8_t *data, size_t len)
{
    if (!e || (!data && len) || len > sizeof(e->binding)) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (e->oneway || e->th_done || e->st == ST_FAILED ||
        e->st == ST_COMPLETE ||
        (e->role == MIG2_ROLE_DESTINATION && e->pre_len > 0)) {
        return MIG2_ERR_STATE;
    }
    if (len) {
        memcpy(e->binding, data, len);
    }
    e->binding_len = len;
    return MIG2_OK;
}

int mig2_engine_abort(Mig2Engine *e, uint32_t code, const char *message)
{
    if (!e) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (e->st == ST_FAILED || e->st == ST_COMPLETE) {
        return MIG2_ERR_STATE;
    }
    mig2_error_clear(&e->error);
    /* The spec (10.2): senders MUST set RETRYABLE for busy. */
    mig2_error_set(&e->error, code, code == MIG2_WIRE_BUSY, "%s",
                   message && *message ? message : mig2_wire_error_name(code));
    fail_with_error(e, MIG2_OK);
    return MIG2_OK;
}

bool mig2_result_ready(const Mig2Engine *e)
{
    return e->ready;
}

uint16_t mig2_result_revision(const Mig2Engine *e)
{
    return e->ready ? e->revision : 0;
}

void mig2_result_peer_revisions(const Mig2Engine *e, uint16_t *min,
                                uint16_t *max)
{
    const Mig2Profile *p = e->peer.profile;

    /* A destination that refused the revision never decoded the HELLO. */
    *min = p ? p->rev_min : e->peer_rmin;
    *max = p ? p->rev_max : e->peer_rmax;
}

const char *mig2_result_peer_build(const Mig2Engine *e)
{
    return e->peer.profile && e->peer.profile->build ? e->peer.profile->build
                                                     : "";
}

size_t mig2_result_features(const Mig2Engine *e, Mig2FeatureSet set,
                            const uint16_t **ids)
{
    if ((unsigned)set > MIG2_FEATURES_LOCAL_LACKS) {
        *ids = NULL;
        return 0;
    }
    *ids = e->feat[set];
    return e->n_feat[set];
}

bool mig2_result_has_feature(const Mig2Engine *e, uint16_t id)
{
    size_t i;

    for (i = 0; i < e->n_feat[MIG2_FEATURES_COMMON]; i++) {
        if (e->feat[MIG2_FEATURES_COMMON][i] == id) {
            return true;
        }
    }
    return false;
}

size_t mig2_result_config_count(const Mig2Engine *e)
{
    return e->n_cfg;
}

const Mig2ConfigResult *mig2_result_config(const Mig2Engine *e, size_t i)
{
    return i < e->n_cfg ? &e->cfg[i] : NULL;
}

const Mig2ConfigResult *mig2_result_config_find(const Mig2Engine *e,
                                                const char *name)
{
    size_t i;

    for (i = 0; name && i < e->n_cfg; i++) {
        if (strcmp(e->cfg[i].name, name) == 0) {
            return &e->cfg[i];
        }
    }
    return NULL;
}

size_t mig2_result_device_count(const Mig2Engine *e)
{
    return e->n_dev;
}

const Mig2DeviceResult *mig2_result_device(const Mig2Engine *e, size_t i)
{
    return i < e->n_dev ? &e->dev[i] : NULL;
}

size_t mig2_result_omitted_count(const Mig2Engine *e)
{
    return e->n_omit;
}

const Mig2OmittedSubsection *mig2_result_omitted(const Mig2Engine *e,
                                                 size_t i)
{
    return i < e->n_omit ? &e->omit[i] : NULL;
}

const uint8_t *mig2_result_transcript_hash(const Mig2Engine *e)
{
    return e->th_done ? e->transcript : NULL;
}

const uint8_t *mig2_result_session_id(const Mig2Engine *e)
{
    if (e->role == MIG2_ROLE_SOURCE) {
        return e->mine.nonce;
    }
    return e->peer.profile ? e->peer.nonce : NULL;
}

const uint8_t *mig2_result_channel_key(const Mig2Engine *e)
{
    /* A one-way stream has no extra channels to authenticate. */
    return e->st == ST_COMPLETE && !e->oneway ? e->channel_key : NULL;
}

bool mig2_engine_oneway(const Mig2Engine *e)
{
    return e->oneway;
}

unsigned mig2_result_round_trips(const Mig2Engine *e)
{
    return e->round_trips;
}

void mig2_result_bytes(const Mig2Engine *e, uint64_t *sent, uint64_t *recvd)
{
    *sent = e->sent;
    *recvd = e->recvd;
}
