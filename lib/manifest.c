/*
 * libmig2 - one-way v4 streams: the MANIFEST codec, the reader's check
 * and the stream digest (docs/protocol.md section 2.5)
 *
 * A MANIFEST is a SRC_HELLO whose choices are made: the codec is the
 * HELLO codec of message.c and the check is the live destination's
 * (mig2_evaluate_source), so a file and a live source with the same
 * manifest meet the same problems.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct Mig2Manifest {
    Mig2Hello h;            /* profile, nonce (stream id), selected */
};

struct Mig2Digest {
    Mig2Hash *h;
};

static const char src_finished_label[] = "mig2 src finished";

/* Features whose behaviour needs a live peer: never in use in a file. */
static bool needs_peer(uint16_t id)
{
    return id == MIG2_FEAT_RETURN_PATH || id == MIG2_FEAT_MULTICHANNEL ||
           id == MIG2_FEAT_TLS_BINDING || id == MIG2_FEAT_POSTCOPY ||
           id == MIG2_FEAT_SWITCHOVER_ACK;
}

/* Make @p the manifest a writer states (see mig2_manifest_from_profile). */
static int state_choices(Mig2Profile *p)
{
    size_t i, n = 0;
    bool have_oneway = false;

    /* Destination settings say nothing about what a stream carries. */
    for (i = 0; i < p->n_policy; i++) {
        free(p->policy[i].name);
    }
    p->n_policy = 0;
    p->n_known = 0;
    p->known_restricted = false;

    for (i = 0; i < p->n_features; i++) {
        if (needs_peer(p->features[i].id)) {
            continue;
        }
        have_oneway |= p->features[i].id == MIG2_FEAT_ONEWAY_MANIFEST;
        p->features[n] = p->features[i];
        p->features[n++].required = true;
    }
    p->n_features = n;
    if (!have_oneway) {
        int rc = mig2_profile_add_feature(p, MIG2_FEAT_ONEWAY_MANIFEST, true);

        if (rc) {
            return rc;
        }
    }
    /* Saved at the newest version this side has: nobody to ask. */
    for (i = 0; i < p->n_devices; i++) {
        p->devices[i].vmin = p->devices[i].vmax;
    }
    return MIG2_OK;
}

Mig2Manifest *mig2_manifest_from_profile(const Mig2Profile *profile,
                                         const uint8_t *stream_id,
                                         int *status)
{
    Mig2Manifest *m = NULL;
    int rc = MIG2_ERR_INVALID_ARG;

    if (!profile || !profile->machine) {
        goto fail;
    }
    rc = MIG2_ERR_NOMEM;
    if (!(m = calloc(1, sizeof(*m))) ||
        !(m->h.profile = mig2_profile_dup(profile))) {
        goto fail;
    }
    if ((rc = state_choices(m->h.profile))) {
        goto fail;
    }
    /*
     * Revisions 1 and 2 define the same one-way stream: the lowest one
     * lets every reader that implements it load the file.
     */
    m->h.selected = m->h.profile->rev_min;
    if (stream_id) {
        memcpy(m->h.nonce, stream_id, MIG2_NONCE_LEN);
    } else if ((rc = mig2_random(m->h.nonce, MIG2_NONCE_LEN))) {
        goto fail;
    }
    if (status) {
        *status = MIG2_OK;
    }
    return m;

fail:
    mig2_manifest_free(m);
    if (status) {
        *status = rc;
    }
    return NULL;
}

void mig2_manifest_free(Mig2Manifest *m)
{
    if (m) {
        mig2_hello_clear(&m->h);
        free(m);
    }
}

uint16_t mig2_manifest_revision(const Mig2Manifest *m)
{
    return m->h.selected;
}

const Mig2Profile *mig2_manifest_profile(const Mig2Manifest *m)
{
    return m->h.profile;
}

const uint8_t *mig2_manifest_stream_id(const Mig2Manifest *m)
{
    return m->h.nonce;
}

void mig2_manifest_encode(Mig2Writer *w, const Mig2Manifest *m, bool grease)
{
    uint32_t seed = (uint32_t)m->h.nonce[3] << 8 | m->h.nonce[12];

    mig2_hello_encode(w, MIG2_FRAME_MANIFEST, &m->h, grease, seed);
}

int mig2_oneway_finished(const uint8_t transcript[MIG2_HASH_LEN],
                         uint8_t out[MIG2_HASH_LEN])
{
    const void *parts[2] = { src_finished_label, transcript };
    size_t lens[2] = { strlen(src_finished_label), MIG2_HASH_LEN };

    /* Section 11.2 with the empty binding: a file has no TLS session. */
    return mig2_hmac(NULL, 0, parts, lens, 2, out);
}

int mig2_manifest_write(Mig2Writer *w, const Mig2Manifest *m, bool grease)
{
    uint8_t th[MIG2_HASH_LEN], vd[MIG2_HASH_LEN];
    size_t start = w->len, f;
    Mig2Hash *h = NULL;
    int rc;

    mig2_wr_u32(w, MIG2_MAGIC);
    mig2_wr_u32(w, MIG2_STREAM_V4);
    mig2_manifest_encode(w, m, grease);
    if ((rc = mig2_wr_error(w))) {
        return rc;
    }
    if ((rc = mig2_hash_new(&h)) ||
        (rc = mig2_hash_update(h, w->buf + start, w->len - start)) ||
        (rc = mig2_hash_peek(h, th)) ||
        (rc = mig2_oneway_finished(th, vd))) {
        mig2_hash_free(h);
        return rc;
    }
    mig2_hash_free(h);
    f = mig2_wr_frame_begin(w, MIG2_FRAME_FINISHED, MIG2_FRAME_FLAG_CRITICAL);
    mig2_wr_bytes(w, vd, sizeof(vd));
    mig2_wr_frame_end(w, f);
    return mig2_wr_error(w);
}

bool mig2_manifest_peek_revision(const uint8_t *p, size_t len,
                                 uint16_t *selected)
{
    Mig2Reader rd, v;
    uint16_t type, min, max;
    bool crit;

    /* REVISIONS then SELECTED_REVISION: frozen, readable by any reader. */
    mig2_rd_init(&rd, p, len);
    return mig2_rd_tlv(&rd, &type, &crit, &v) == MIG2_OK &&
           type == MIG2_TLV_REVISIONS && mig2_rd_u16(&v, &min) == MIG2_OK &&
           mig2_rd_u16(&v, &max) == MIG2_OK && mig2_rd_end(&v) == MIG2_OK &&
           mig2_rd_tlv(&rd, &type, &crit, &v) == MIG2_OK &&
           type == MIG2_TLV_SELECTED_REVISION &&
           mig2_rd_u16(&v, selected) == MIG2_OK &&
           mig2_rd_end(&v) == MIG2_OK;
}

int mig2_oneway_revision_error(Mig2Error *err, uint16_t min, uint16_t max,
                               uint16_t selected)
{
    char want[16], got[8];

    snprintf(want, sizeof(want), "%u..%u", min, max);
    snprintf(got, sizeof(got), "%u", selected);
    mig2_error_clear(err);
    mig2_error_set(err, MIG2_WIRE_UNSUPPORTED_REVISION, false,
                   "the one-way stream follows protocol revision %s; this "
                   "side implements %s", got, want);
    mig2_error_add(err, MIG2_PROB_REVISION, "revision", want, got);
    return MIG2_ERR_NO_REVISION;
}

int mig2_manifest_decode(const uint8_t *buf, size_t len, size_t max_payload,
                         Mig2Manifest **out, size_t *consumed, Mig2Error *err)
{
    Mig2FrameHeader fh;
    Mig2Manifest *m;
    uint16_t selected;
    char limit[32], actual[32];
    int rc;

    *out = NULL;
    if (!max_payload || max_payload > MIG2_FRAME_MAX) {
        max_payload = MIG2_FRAME_MAX;
    }
    if (len < MIG2_FRAME_HEADER_LEN) {
        return MIG2_ERR_TRUNCATED;
    }
    mig2_error_clear(err);
    if (mig2_frame_header_parse(buf, max_payload, &fh)) {
        snprintf(limit, sizeof(limit), "at most %zu bytes", max_payload);
        snprintf(actual, sizeof(actual), "%u bytes", fh.length);
        mig2_error_set(err, MIG2_WIRE_PROTOCOL, false,
                       "MANIFEST frame of %u bytes exceeds the %zu-byte "
                       "limit", fh.length, max_payload);
        mig2_error_add(err, MIG2_PROB_MALFORMED, "frame", limit, actual);
        return MIG2_ERR_TOO_LARGE;
    }
    if (fh.type != MIG2_FRAME_MANIFEST) {
        snprintf(actual, sizeof(actual), "frame type 0x%04x", fh.type);
        mig2_error_set(err, MIG2_WIRE_PROTOCOL, false,
                       "a one-way stream starts with MANIFEST, not %s",
                       actual);
        mig2_error_add(err, MIG2_PROB_MALFORMED, "frame",
                       "frame type 0x0005 (MANIFEST)", actual);
        return MIG2_ERR_STATE;
    }
    if (len - MIG2_FRAME_HEADER_LEN < fh.length) {
        return MIG2_ERR_TRUNCATED;
    }
    buf += MIG2_FRAME_HEADER_LEN;
    if (mig2_manifest_peek_revision(buf, fh.length, &selected) &&
        (selected < MIG2_REVISION_MIN || selected > MIG2_REVISION_MAX)) {
        return mig2_oneway_revision_error(err, MIG2_REVISION_MIN,
                                          MIG2_REVISION_MAX, selected);
    }
    if (!(m = calloc(1, sizeof(*m)))) {
        return MIG2_ERR_NOMEM;
    }
    rc = mig2_hello_decode(buf, fh.length, MIG2_FRAME_MANIFEST, &m->h, err);
    if (rc) {
        mig2_manifest_free(m);
        return rc;
    }
    *out = m;
    if (consumed) {
        *consumed = MIG2_FRAME_HEADER_LEN + fh.length;
    }
    return MIG2_OK;
}

int mig2_oneway_local(const Mig2Profile *local, Mig2Profile **out)
{
    size_t i;

    *out = mig2_profile_dup(local);
    if (!*out) {
        return MIG2_ERR_NOMEM;
    }
    for (i = 0; i < local->n_features; i++) {
        if (local->features[i].id == MIG2_FEAT_ONEWAY_MANIFEST) {
            return MIG2_OK;
        }
    }
    /* Whoever reads a MANIFEST implements one-way streams by definition. */
    return mig2_profile_add_feature(*out, MIG2_FEAT_ONEWAY_MANIFEST, false);
}

int mig2_manifest_check(const Mig2Manifest *m, const Mig2Profile *local,
                        Mig2Error *err)
{
    Mig2Hello outcomes = { 0 };
    Mig2DevChoice *choices = NULL;
    Mig2OmittedSubsection *omitted = NULL;
    Mig2Profile *reader = NULL;
    size_t n_choices, n_omitted;
    int rc;

    mig2_error_clear(err);
    if (m->h.selected < local->rev_min || m->h.selected > local->rev_max) {
        return mig2_oneway_revision_error(err, local->rev_min,
                                          local->rev_max, m->h.selected);
    }
    if ((rc = mig2_oneway_local(local, &reader))) {
        mig2_profile_free(reader);
        return rc;
    }
    rc = mig2_evaluate_source(m->h.profile, reader, &outcomes, &choices,
                              &n_choices, &omitted, &n_omitted, err);
    free(choices);
    free(omitted);
    mig2_hello_clear(&outcomes);
    mig2_profile_free(reader);
    if (rc) {
        return rc;
    }
    if (err->n_problems) {
        mig2_problems_message(err, "destination");
        return MIG2_ERR_INCOMPATIBLE;
    }
    return MIG2_OK;
}

Mig2Digest *mig2_digest_new(int *status)
{
    Mig2Digest *d = calloc(1, sizeof(*d));
    int rc = MIG2_ERR_NOMEM;

    if (d && (rc = mig2_hash_new(&d->h)) != MIG2_OK) {
        free(d);
        d = NULL;
    }
    if (status) {
        *status = d ? MIG2_OK : rc;
    }
    return d;
}

void mig2_digest_free(Mig2Digest *d)
{
    if (d) {
        mig2_hash_free(d->h);
        free(d);
    }
}

int mig2_digest_update(Mig2Digest *d, const void *p, size_t n)
{
    return mig2_hash_update(d->h, p, n);
}

int mig2_digest_value(Mig2Digest *d, uint8_t out[MIG2_HASH_LEN])
{
    return mig2_hash_peek(d->h, out);
}

void mig2_digest_encode(Mig2Writer *w, const uint8_t value[MIG2_HASH_LEN])
{
    size_t f = mig2_wr_frame_begin(w, MIG2_FRAME_DIGEST,
                                   MIG2_FRAME_FLAG_CRITICAL);

    mig2_wr_bytes(w, value, MIG2_HASH_LEN);
    mig2_wr_frame_end(w, f);
}
