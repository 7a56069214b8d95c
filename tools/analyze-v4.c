/*
 * mig2-analyze - QEVM v4 streams (protocol v2, docs/protocol.md)
 *
 * After the preamble, a sequence of frames (section 4.1): a capture of
 * what a source sent on its main channel, or a one-way v4 file (section
 * 2.5) whose first frame is MANIFEST.  HELLOs are decoded by libmig2
 * itself (the engine's decoder), MANIFEST by its manifest decoder, and
 * the data phase by its data codec (mig2/data.h).  A one-way file is
 * also checked as a reader checks it: FINISHED against the MANIFEST,
 * DIGEST against the SHA-256 of everything before it.  One handler per
 * frame type in a table.  Types without a handler are printed as
 * "unknown 0x...." and skipped, as a receiver skips them.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include "analyze.h"

/* Records the subsection search of one DEVICE may parse at most. */
#define SPLIT_BUDGET (256u * 1024)

typedef struct V4 {
    Az *az;
    json_object *frames;
    Mig2Hello src;              /* the first SRC_HELLO: blocks, devices */
    bool have_src;
    Mig2Manifest *manifest;     /* one-way: the MANIFEST */
    const Mig2Profile *man;     /* what the data phase refers to: the
                                 * SRC_HELLO's or the MANIFEST's */
    bool zero_ok;               /* ZERO entries allowed in RAM frames */
    /* one-way streams (spec 2.5) */
    bool oneway;                /* the first frame is MANIFEST */
    Mig2Digest *digest;         /* every byte from the preamble on */
    uint8_t transcript[MIG2_HASH_LEN];  /* SHA-256(preamble || MANIFEST) */
    bool finished;              /* FINISHED seen */
    bool end_seen;              /* END seen: only DIGEST may follow */
    bool digested;              /* DIGEST seen: nothing may follow */
    json_object *devindex;      /* "instance/id" -> its manifest index */
    Mig2DataRamBlock *rblocks;  /* its RAM_BLOCK list, for the codec */
    int *rmap;                  /* RAM_BLOCK index -> az block */
    size_t n_rblocks;
    /* consecutive RAM frames are reported as one run */
    json_object *run;
    uint64_t run_frames, run_pages, run_zero, run_bytes;
    int64_t run_block;          /* -1 mixed */
    uint64_t pages;             /* in all RAM frames */
    bool ended;                 /* END or ERROR seen */
} V4;

typedef bool FrameFn(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                     uint16_t type, json_object *o);

/* ---------------------------------------------------------------- */
/* Handshake frames                                                  */
/* ---------------------------------------------------------------- */

static const char *tlv_name(uint16_t type, uint16_t frame)
{
    switch (type) {
    case MIG2_TLV_REVISIONS: return "REVISIONS";
    case MIG2_TLV_BUILD: return "BUILD";
    case MIG2_TLV_FEATURES: return "FEATURES";
    case MIG2_TLV_NONCE: return "NONCE";
    case MIG2_TLV_MACHINE: return "MACHINE";
    case MIG2_TLV_PAGE_SIZE: return "PAGE_SIZE";
    case MIG2_TLV_RAM_BLOCK: return "RAM_BLOCK";
    case MIG2_TLV_DEVICE: return "DEVICE";
    case MIG2_TLV_CONFIG:
        return frame == MIG2_FRAME_SRC_HELLO ? "CONFIG" : NULL;
    case MIG2_TLV_SELECTED_REVISION:
        return frame == MIG2_FRAME_DST_HELLO ? "SELECTED_REVISION" : NULL;
    case MIG2_TLV_CONFIG_RESULT:
        return frame == MIG2_FRAME_DST_HELLO ? "CONFIG_RESULT" : NULL;
    default: return NULL;
    }
}

static const char *config_type_name(unsigned t)
{
    switch (t) {
    case MIG2_CFG_BOOL: return "bool";
    case MIG2_CFG_U64: return "u64";
    case MIG2_CFG_STR: return "string";
    default: return "?";
    }
}

static void add_config_value(json_object *o, const Mig2ConfigValue *cv)
{
    az_jstr(o, "value_type", config_type_name(cv->type));
    switch (cv->type) {
    case MIG2_CFG_BOOL:
        az_jbool(o, "value", cv->b);
        break;
    case MIG2_CFG_U64:
        az_juint(o, "value", cv->u);
        break;
    default:
        az_jstr(o, "value", cv->s);
        break;
    }
}

static json_object *feature_object(uint16_t id, bool required)
{
    json_object *f = json_object_new_object();
    const char *name = mig2_feature_name(id);

    az_juint(f, "id", id);
    az_jstr(f, "name", name ? name : mig2_is_grease(id) ? "grease"
                                                        : "unknown");
    az_jbool(f, "required", required);
    return f;
}

static void add_features(json_object *o, Mig2Reader *val)
{
    json_object *list = az_jarray(o, "features");
    uint16_t id;
    uint8_t flags;

    while (mig2_rd_u16(val, &id) == MIG2_OK &&
           mig2_rd_u8(val, &flags) == MIG2_OK) {
        json_object_array_add(list, feature_object(
                                        id, flags & MIG2_FEATURE_REQUIRED));
    }
}

/*
 * A device of a manifest: a HELLO states a range of versions, a MANIFEST
 * one version (@single: lowest == highest).
 */
static void add_device(json_object *o, const Mig2Device *d, bool single)
{
    json_object *subs;
    size_t i;

    az_jstr(o, "id", d->id);
    az_juint(o, "instance", d->instance);
    if (single) {
        az_juint(o, "version", d->vmax);
    } else {
        az_juint(o, "version_min", d->vmin);
        az_juint(o, "version_max", d->vmax);
    }
    subs = az_jarray(o, "subsections");
    for (i = 0; i < d->n_subs; i++) {
        json_object *s = json_object_new_object();

        az_jstr(s, "name", d->subs[i].name);
        az_jbool(s, "needed", d->subs[i].needed);
        json_object_array_add(subs, s);
    }
}

/*
 * Keep the source's manifest (a SRC_HELLO's or a MANIFEST's): the data
 * phase refers to its RAM blocks and devices by index.
 */
static bool keep_manifest(V4 *v, size_t off, const Mig2Profile *p)
{
    size_t i;

    v->man = p;
    v->devindex = json_object_new_object();
    for (i = 0; i < p->n_devices; i++) {
        char *key = NULL;

        if (asprintf(&key, "%" PRIu32 "/%s", p->devices[i].instance,
                     p->devices[i].id) < 0) {
            return az_io_fail(v->az, "out of memory");
        }
        json_object_object_add(v->devindex, key, json_object_new_int64(i));
        free(key);
    }
    v->n_rblocks = p->n_ram;
    v->rblocks = calloc(p->n_ram + 1, sizeof(*v->rblocks));
    v->rmap = calloc(p->n_ram + 1, sizeof(*v->rmap));
    if (!v->rblocks || !v->rmap) {
        return az_io_fail(v->az, "out of memory");
    }
    for (i = 0; i < p->n_ram; i++) {
        v->rblocks[i].size = p->ram[i].size;
        v->rblocks[i].page_size = p->ram[i].page_size;
        v->rmap[i] = az_block_add(v->az, off, p->ram[i].name,
                                  strlen(p->ram[i].name), p->ram[i].size,
                                  p->ram[i].page_size);
        if (v->rmap[i] < 0) {
            return false;
        }
    }
    return true;
}

/* Keep the first SRC_HELLO of a capture (taken from @h). */
static bool keep_src(V4 *v, size_t off, Mig2Hello *h)
{
    v->src = *h;
    memset(h, 0, sizeof(*h));
    v->have_src = true;
    /* A capture does not show the destination's features. */
    v->zero_ok = true;
    return keep_manifest(v, off, v->src.profile);
}

static bool frame_hello(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                        uint16_t type, json_object *o)
{
    Mig2Hello h;
    Mig2Error err = { 0 };
    Mig2Reader rd, val;
    json_object *tlvs;
    size_t n_ram = 0, n_dev = 0, n_cfg = 0, n_out = 0;
    uint16_t t;
    bool crit;
    int rc;

    rc = mig2_hello_decode(p, len, type, &h, &err);
    if (rc != MIG2_OK) {
        az_fail(v->az, off, "malformed %s: %s", mig2_frame_name(type),
                err.message ? err.message : mig2_strerror(rc));
        mig2_error_clear(&err);
        mig2_hello_clear(&h);
        return false;
    }
    /* Decoded: every TLV below is well formed. */
    tlvs = az_jarray(o, "tlvs");
    mig2_rd_init(&rd, p, len);
    while (mig2_rd_tlv(&rd, &t, &crit, &val) == MIG2_OK) {
        json_object *to = json_object_new_object();
        const char *name = tlv_name(t, type);
        Mig2Profile *pr = h.profile;
        char *s;

        json_object_array_add(tlvs, to);
        az_juint(to, "type", t | (crit ? MIG2_TLV_CRITICAL : 0));
        az_jstr(to, "name", name);
        az_jbool(to, "critical", crit);
        az_juint(to, "length", mig2_rd_left(&val));
        if (!name) {
            az_jbool(to, "grease", mig2_is_grease(t));
            continue;
        }
        switch (t) {
        case MIG2_TLV_REVISIONS:
            az_juint(to, "min", pr->rev_min);
            az_juint(to, "max", pr->rev_max);
            break;
        case MIG2_TLV_SELECTED_REVISION:
            az_juint(to, "revision", h.selected);
            break;
        case MIG2_TLV_BUILD:
            az_jstr(to, "build", pr->build);
            break;
        case MIG2_TLV_FEATURES:
            add_features(to, &val);
            break;
        case MIG2_TLV_NONCE:
            s = az_hex(h.nonce, MIG2_NONCE_LEN);
            az_jstr(to, "nonce", s);
            free(s);
            break;
        case MIG2_TLV_MACHINE:
            az_jstr(to, "machine", pr->machine);
            break;
        case MIG2_TLV_PAGE_SIZE:
            az_juint(to, "page_size", pr->page_size);
            break;
        case MIG2_TLV_RAM_BLOCK:
            az_jstr(to, "block", pr->ram[n_ram].name);
            az_juint(to, "size", pr->ram[n_ram].size);
            az_juint(to, "page_size", pr->ram[n_ram].page_size);
            n_ram++;
            break;
        case MIG2_TLV_DEVICE:
            add_device(to, &pr->devices[n_dev++], false);
            break;
        case MIG2_TLV_CONFIG:
            az_jstr(to, "item", pr->config[n_cfg].name);
            add_config_value(to, &pr->config[n_cfg].v);
            az_jbool(to, "required",
                     pr->config[n_cfg].flags & MIG2_CONFIG_REQUIRED);
            n_cfg++;
            break;
        case MIG2_TLV_CONFIG_RESULT:
            az_jstr(to, "item", h.outcomes[n_out].name);
            add_config_value(to, &h.outcomes[n_out].final);
            az_jstr(to, "status",
                    mig2_config_status_name(h.outcomes[n_out].status));
            n_out++;
            break;
        }
    }
    if (type == MIG2_FRAME_SRC_HELLO && !v->man) {
        return keep_src(v, off, &h);
    }
    mig2_hello_clear(&h);
    return true;
}

static bool oneway_finished(V4 *v, size_t off, const uint8_t *p,
                            json_object *o);

static bool frame_finished(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                           uint16_t type, json_object *o)
{
    char *hex;

    (void)type;
    if (len != MIG2_VERIFY_LEN) {
        return az_fail(v->az, off, "FINISHED with %u bytes of verify data, "
                       "expected 32", len);
    }
    hex = az_hex(p, len);
    az_jstr(o, "verify_data", hex);
    free(hex);
    return !v->oneway || oneway_finished(v, off, p, o);
}

static bool frame_error(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                        uint16_t type, json_object *o)
{
    Mig2Error err = { 0 };
    json_object *probs;
    size_t i;
    int rc;

    (void)type;
    v->ended = true;
    rc = mig2_error_decode(p, len, &err);
    if (rc != MIG2_OK) {
        mig2_error_clear(&err);
        return az_fail(v->az, off, "malformed ERROR frame: %s",
                       mig2_strerror(rc));
    }
    az_juint(o, "code", err.code);
    az_jstr(o, "code_name", mig2_wire_error_name(err.code));
    az_jbool(o, "retryable", err.retryable);
    az_jstr(o, "message", err.message);
    probs = az_jarray(o, "problems");
    for (i = 0; i < err.n_problems; i++) {
        json_object *pr = json_object_new_object();

        az_juint(pr, "kind", err.problems[i].kind);
        az_jstr(pr, "kind_name", mig2_problem_kind_name(err.problems[i].kind));
        az_jstr(pr, "path", err.problems[i].path);
        az_jstr(pr, "expected", err.problems[i].expected);
        az_jstr(pr, "actual", err.problems[i].actual);
        json_object_array_add(probs, pr);
    }
    mig2_error_clear(&err);
    return true;
}

static bool frame_empty(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                        uint16_t type, json_object *o)
{
    (void)o;
    if (mig2_data_empty_parse(p, len) != MIG2_OK) {
        return az_fail(v->az, off, "%s with a payload of %u bytes, expected "
                       "none", mig2_frame_name(type), len);
    }
    return true;
}

/* ---------------------------------------------------------------- */
/* One-way streams: MANIFEST, FINISHED, DIGEST (spec 2.5)            */
/* ---------------------------------------------------------------- */

static void add_manifest(json_object *o, const Mig2Manifest *m)
{
    const Mig2Profile *p = mig2_manifest_profile(m);
    json_object *list, *rev;
    size_t i;
    char *s;

    az_juint(o, "revision", mig2_manifest_revision(m));
    rev = az_jobject(o, "revisions");
    az_juint(rev, "min", p->rev_min);
    az_juint(rev, "max", p->rev_max);
    az_jstr(o, "build", p->build);
    s = az_hex(mig2_manifest_stream_id(m), MIG2_NONCE_LEN);
    az_jstr(o, "stream_id", s);
    free(s);
    list = az_jarray(o, "features");
    for (i = 0; i < p->n_features; i++) {
        json_object_array_add(list, feature_object(p->features[i].id,
                                                   p->features[i].required));
    }
    az_jstr(o, "machine", p->machine);
    az_juint(o, "page_size", p->page_size);
    list = az_jarray(o, "ram_blocks");
    for (i = 0; i < p->n_ram; i++) {
        json_object *b = json_object_new_object();

        az_jstr(b, "name", p->ram[i].name);
        az_juint(b, "size", p->ram[i].size);
        az_juint(b, "page_size", p->ram[i].page_size);
        json_object_array_add(list, b);
    }
    list = az_jarray(o, "devices");
    for (i = 0; i < p->n_devices; i++) {
        json_object *dv = json_object_new_object();

        add_device(dv, &p->devices[i], true);
        json_object_array_add(list, dv);
    }
    list = az_jarray(o, "config");
    for (i = 0; i < p->n_config; i++) {
        json_object *c = json_object_new_object();

        az_jstr(c, "item", p->config[i].name);
        add_config_value(c, &p->config[i].v);
        az_jbool(c, "required", p->config[i].flags & MIG2_CONFIG_REQUIRED);
        json_object_array_add(list, c);
    }
}

static bool frame_manifest(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                           uint16_t type, json_object *o)
{
    Mig2Error err = { 0 };
    const Mig2Profile *pr;
    size_t i;
    int rc;

    (void)p;
    (void)type;
    if (off != MIG2_PREAMBLE_LEN) {
        return az_fail(v->az, off, "MANIFEST at offset %zu: it is only ever "
                       "the first frame of a one-way stream", off);
    }
    rc = mig2_manifest_decode(v->az->base + off, MIG2_FRAME_HEADER_LEN + len,
                              0, &v->manifest, NULL, &err);
    if (rc != MIG2_OK) {
        az_fail(v->az, off, "malformed MANIFEST: %s%s%s%s",
                err.message ? err.message : mig2_strerror(rc),
                err.n_problems ? " (at " : "",
                err.n_problems ? err.problems[0].path : "",
                err.n_problems ? ")" : "");
        mig2_error_clear(&err);
        return false;
    }
    add_manifest(o, v->manifest);
    pr = mig2_manifest_profile(v->manifest);
    for (i = 0; i < pr->n_features; i++) {
        v->zero_ok |= pr->features[i].id == MIG2_FEAT_ZERO_PAGE;
    }
    return keep_manifest(v, off, pr);
}

/* One-way: FINISHED binds the preamble and MANIFEST (spec 2.5.3). */
static bool oneway_finished(V4 *v, size_t off, const uint8_t *p,
                            json_object *o)
{
    uint8_t want[MIG2_VERIFY_LEN];

    if (v->finished) {
        return az_fail(v->az, off, "a second FINISHED in a one-way stream");
    }
    v->finished = true;
    if (mig2_oneway_finished(v->transcript, want) != MIG2_OK) {
        return az_io_fail(v->az, "cannot compute FINISHED: SHA-256 failed");
    }
    az_jbool(o, "verified", memcmp(want, p, sizeof(want)) == 0);
    if (memcmp(want, p, sizeof(want)) != 0) {
        return az_fail(v->az, off, "FINISHED does not match the preamble and "
                       "MANIFEST (HMAC-SHA256 over their SHA-256, spec "
                       "2.5.3): the head of the stream is damaged");
    }
    return true;
}

static bool frame_digest(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                         uint16_t type, json_object *o)
{
    uint8_t want[MIG2_HASH_LEN];
    char *got, *hex;
    bool ok;

    (void)type;
    if (!v->oneway || !v->end_seen) {
        return az_fail(v->az, off, "DIGEST %s", v->oneway
                       ? "before END" : "outside a one-way stream");
    }
    v->digested = true;
    if (len != MIG2_HASH_LEN) {
        return az_fail(v->az, off, "DIGEST with %u bytes, expected 32", len);
    }
    if (mig2_digest_value(v->digest, want) != MIG2_OK) {
        return az_io_fail(v->az, "cannot compute the digest: SHA-256 "
                          "failed");
    }
    ok = memcmp(want, p, sizeof(want)) == 0;
    got = az_hex(p, len);
    hex = az_hex(want, sizeof(want));
    az_jstr(o, "digest", got);
    az_juint(o, "covered", off);
    az_jbool(o, "digest_ok", ok);
    if (!ok) {
        az_fail(v->az, off, "DIGEST does not match the stream: it says %s, "
                "the SHA-256 of bytes 0 to %zu is %s (the stream is "
                "corrupt)", got ? got : "", off, hex ? hex : "");
    }
    free(got);
    free(hex);
    return ok;
}

/* ---------------------------------------------------------------- */
/* Data phase                                                        */
/* ---------------------------------------------------------------- */

static void close_run(V4 *v)
{
    if (!v->run) {
        return;
    }
    az_juint(v->run, "length", v->run_bytes);
    az_juint(v->run, "frames", v->run_frames);
    az_juint(v->run, "pages", v->run_pages);
    az_juint(v->run, "zero_pages", v->run_zero);
    az_jstr(v->run, "block", v->run_block < 0 ? "(several)"
                             : v->az->blocks[v->run_block].name);
    v->run = NULL;
}

static bool frame_ram(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                      uint16_t flags)
{
    Az *az = v->az;
    Mig2DataRam r;
    Mig2DataRamIter it;
    uint64_t addr;
    const uint8_t *data;
    int rc, b;

    if (!v->man) {
        return az_fail(az, off, "RAM frame before any SRC_HELLO or MANIFEST "
                       "(which lists the RAM blocks)");
    }
    rc = mig2_data_ram_parse(p, len, v->rblocks, v->n_rblocks, v->zero_ok,
                             &r);
    if (rc != MIG2_OK) {
        uint32_t blk = len >= 4 ? az_be32(p) : 0;
        uint32_t n = len >= 8 ? az_be32(p + 4) : 0;

        uint64_t bad = 0;

        if (rc == MIG2_ERR_BAD_VALUE && r.entries) {
            /* An entry was at fault: name it and where it lies. */
            bool zero = mig2_data_ram_entry_get(&r, r.bad_entry, &bad);

            return az_fail(az, off + MIG2_FRAME_HEADER_LEN +
                                   MIG2_DATA_RAM_HEAD_LEN +
                                   (size_t)r.bad_entry *
                                       MIG2_DATA_RAM_ENTRY_LEN,
                           "malformed RAM frame (block %u, %u entries, %u "
                           "bytes): entry %u, offset 0x%" PRIx64 "%s, %s",
                           blk, n, len, r.bad_entry, bad,
                           zero ? " ZERO" : "",
                           zero && !v->zero_ok
                               ? "a zero page, but the stream does not use "
                                 "feature zero-page"
                               : "is not a page inside the block");
        }
        return az_fail(az, off, "malformed RAM frame (block %u, %u entries, "
                       "%u bytes): %s", blk, n, len,
                       rc == MIG2_ERR_BAD_VALUE
                           ? "no such block, or no entries"
                           : rc == MIG2_ERR_TRAILING
                                 ? "more page data than its entries say"
                                 : "shorter than its entries say");
    }
    b = v->rmap[r.block];
    mig2_data_ram_iter_init(&it, &r);
    while (mig2_data_ram_iter_next(&it, &addr, &data)) {
        if (!az_page(az, b, addr, data, 0)) {
            return false;
        }
    }
    if (!v->run) {
        v->run = json_object_new_object();
        json_object_array_add(v->frames, v->run);
        az_juint(v->run, "offset", off);
        az_juint(v->run, "type", MIG2_FRAME_RAM);
        az_jstr(v->run, "name", "RAM");
        az_juint(v->run, "flags", flags);
        az_jbool(v->run, "critical", flags & MIG2_FRAME_FLAG_CRITICAL);
        v->run_frames = v->run_pages = v->run_zero = v->run_bytes = 0;
        v->run_block = b;
    }
    if (v->run_block != b) {
        v->run_block = -1;
    }
    v->run_frames++;
    v->run_pages += r.n;
    v->run_zero += r.n_zero;
    v->run_bytes += len;
    v->pages += r.n;
    return true;
}

static bool frame_sync(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                       uint16_t type, json_object *o)
{
    uint32_t round;
    uint64_t pages;

    (void)type;
    if (mig2_data_sync_parse(p, len, &round, &pages) != MIG2_OK) {
        return az_fail(v->az, off, "SYNC with %u bytes, expected 12", len);
    }
    az_juint(o, "round", round);
    az_juint(o, "pages", pages);
    return true;
}

static bool frame_round(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                        uint16_t type, json_object *o)
{
    uint32_t round;

    if (mig2_data_round_parse(p, len, &round) != MIG2_OK) {
        return az_fail(v->az, off, "%s with %u bytes, expected 4",
                       mig2_frame_name(type), len);
    }
    az_juint(o, "round", round);
    return true;
}

static bool frame_end(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                      uint16_t type, json_object *o)
{
    uint64_t pages;
    uint32_t devices;

    (void)type;
    if (mig2_data_end_parse(p, len, &pages, &devices) != MIG2_OK) {
        return az_fail(v->az, off, "END with %u bytes, expected 12", len);
    }
    v->ended = true;
    v->end_seen = true;
    az_juint(o, "pages", pages);
    az_juint(o, "devices", devices);
    /* Pages that went over extra channels are not in this stream. */
    az_juint(o, "pages_in_this_stream", v->pages);
    return true;
}

static const Mig2Device *manifest_device(const V4 *v,
                                         const Mig2DataDevice *d)
{
    json_object *idx = NULL;
    char *key = NULL;

    if (!v->man || asprintf(&key, "%" PRIu32 "/%.*s", d->instance,
                            (int)d->id_len, d->id) < 0) {
        return NULL;
    }
    json_object_object_get_ex(v->devindex, key, &idx);
    free(key);
    return idx ? &v->man->devices[json_object_get_int64(idx)] : NULL;
}

static bool names_known(const Mig2Device *md, const Mig2DataSubsection *s,
                        size_t n)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        for (j = 0; j < md->n_subs; j++) {
            if (strlen(md->subs[j].name) == s[i].name_len &&
                memcmp(md->subs[j].name, s[i].name, s[i].name_len) == 0) {
                break;
            }
        }
        if (j == md->n_subs) {
            return false;
        }
    }
    return true;
}

/*
 * Only the device knows where its fields end.  The tail after them is
 * "count, then count x (str8 name, be32 length, bytes)" up to the end of
 * the payload, with names from the device's manifest entry: take the
 * first split at which the rest parses exactly so.
 */
static void device_split(V4 *v, const Mig2DataDevice *d, json_object *o)
{
    const Mig2Device *md = manifest_device(v, d);
    Mig2DataSubsection subs[MIG2_DATA_MAX_SUBSECTIONS];
    uint64_t budget = SPLIT_BUDGET;
    size_t k, n, i;

    if (!md) {
        az_jstr(o, "tail", "the device is not in the source's manifest");
        return;
    }
    for (k = 0; k < d->body_len && budget; k++) {
        uint8_t count = d->body[k];

        if (count > md->n_subs) {
            continue;
        }
        budget -= count < budget ? count : budget;
        if (mig2_data_device_tail_parse(d, k, subs, count, &n) != MIG2_OK) {
            continue;
        }
        /* Name checks cost too: n x the manifest's subsections. */
        budget -= n * md->n_subs < budget ? n * md->n_subs : budget;
        if (names_known(md, subs, n)) {
            json_object *list;

            az_juint(o, "fields_size", k);
            list = az_jarray(o, "subsections");
            for (i = 0; i < n; i++) {
                json_object *s = json_object_new_object();
                char *name = az_printable(subs[i].name, subs[i].name_len);

                az_jstr(s, "name", name);
                az_juint(s, "size", subs[i].len);
                json_object_array_add(list, s);
                free(name);
            }
            return;
        }
    }
    az_jstr(o, "tail", budget ? "not found" : "not found (search too long)");
}

static bool frame_device(V4 *v, size_t off, const uint8_t *p, uint32_t len,
                         uint16_t type, json_object *o)
{
    Mig2DataDevice d;
    char *id;

    (void)type;
    if (mig2_data_device_parse(p, len, &d) != MIG2_OK) {
        return az_fail(v->az, off, "malformed DEVICE frame: its head (str8 "
                       "id, be32 instance, be32 version) does not fit or "
                       "the id is not a valid string");
    }
    id = az_printable(d.id, d.id_len);
    az_jstr(o, "id", id);
    free(id);
    az_juint(o, "instance", d.instance);
    az_juint(o, "version", d.version);
    az_juint(o, "body_size", d.body_len);
    device_split(v, &d, o);
    return true;
}

/* ---------------------------------------------------------------- */
/* The frame loop                                                    */
/* ---------------------------------------------------------------- */

static const struct {
    uint16_t type;
    FrameFn *fn;
} handlers[] = {
    { MIG2_FRAME_SRC_HELLO, frame_hello },
    { MIG2_FRAME_DST_HELLO, frame_hello },
    { MIG2_FRAME_FINISHED, frame_finished },
    { MIG2_FRAME_READY, frame_empty },
    { MIG2_FRAME_MANIFEST, frame_manifest },
    { MIG2_FRAME_ERROR, frame_error },
    { MIG2_FRAME_SYNC, frame_sync },
    { MIG2_FRAME_SWITCHOVER, frame_empty },
    { MIG2_FRAME_DEVICE, frame_device },
    { MIG2_FRAME_END, frame_end },
    { MIG2_FRAME_DIGEST, frame_digest },
    { MIG2_FRAME_DONE, frame_empty },
    { MIG2_FRAME_SYNC_ACK, frame_round },
    { MIG2_FRAME_CHANNEL_ACCEPT, frame_empty },
    { MIG2_FRAME_CHANNEL_SYNC, frame_round },
};

static FrameFn *handler(uint16_t type)
{
    size_t i;

    for (i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        if (handlers[i].type == type) {
            return handlers[i].fn;
        }
    }
    return NULL;
}

/*
 * One-way streams have a fixed order (spec 2.5.1): MANIFEST, FINISHED,
 * the data phase, END, DIGEST.  Unknown frames are skipped anywhere
 * before END; the frames of a live handshake or of a reader belong
 * nowhere.
 */
static bool oneway_order(V4 *v, size_t off, uint16_t type)
{
    const char *name = mig2_frame_name(type);

    if (v->end_seen && type != MIG2_FRAME_DIGEST) {
        return az_fail(v->az, off, "%s frame 0x%04x after END, where DIGEST "
                       "belongs", name ? name : "unknown", type);
    }
    switch (type) {
    case MIG2_FRAME_MANIFEST:
    case MIG2_FRAME_FINISHED:
    case MIG2_FRAME_ERROR:
    case MIG2_FRAME_DIGEST:
        return true;
    case MIG2_FRAME_RAM:
    case MIG2_FRAME_SYNC:
    case MIG2_FRAME_SWITCHOVER:
    case MIG2_FRAME_DEVICE:
    case MIG2_FRAME_END:
        return v->finished ||
               az_fail(v->az, off, "%s before FINISHED, which follows "
                       "MANIFEST", name);
    default:
        return !name ||
               az_fail(v->az, off, "%s in a one-way stream, which carries "
                       "no handshake and has no reader that answers", name);
    }
}

bool az_parse_v4(Az *az)
{
    V4 v = { .az = az };
    size_t pos = MIG2_PREAMBLE_LEN;
    bool ok = true;

    v.frames = az_jarray(az->root, "frames");
    /* MANIFEST first means a one-way stream (spec 2.4): hash it all. */
    v.oneway = az->size >= pos + 2 &&
               (az->base[pos] << 8 | az->base[pos + 1]) == MIG2_FRAME_MANIFEST;
    az_jbool(az->root, "oneway", v.oneway);
    if (v.oneway && (!(v.digest = mig2_digest_new(NULL)) ||
                     mig2_digest_update(v.digest, az->base, pos))) {
        ok = az_io_fail(az, "cannot compute SHA-256");
    }
    while (ok && pos < az->size) {
        size_t at = pos;
        Mig2FrameHeader h;
        const uint8_t *p;
        json_object *o;
        FrameFn *fn;

        az_release(az, at);
        if (v.digested) {
            ok = az_fail(az, at, "data after DIGEST, which is the last frame "
                         "of a one-way stream");
            break;
        }
        if (!az_need(az, pos, MIG2_FRAME_HEADER_LEN, "a frame header")) {
            ok = false;
            break;
        }
        if (mig2_frame_header_parse(az->base + pos, MIG2_FRAME_MAX, &h)) {
            ok = az_fail(az, at, "frame 0x%04x announces %u bytes, more than "
                         "the 16 MiB limit", h.type, h.length);
            break;
        }
        pos += MIG2_FRAME_HEADER_LEN;
        if (!az_need(az, pos, h.length, "the frame's payload") ||
            (v.oneway && !oneway_order(&v, at, h.type))) {
            ok = false;
            break;
        }
        p = az->base + pos;
        pos += h.length;
        if (h.type == MIG2_FRAME_RAM) {
            ok = frame_ram(&v, at, p, h.length, h.flags);
        } else {
            close_run(&v);
            o = json_object_new_object();
            json_object_array_add(v.frames, o);
            az_juint(o, "offset", at);
            az_juint(o, "type", h.type);
            az_jstr(o, "name", mig2_frame_name(h.type));
            az_juint(o, "flags", h.flags);
            az_jbool(o, "critical", h.flags & MIG2_FRAME_FLAG_CRITICAL);
            az_juint(o, "length", h.length);
            fn = handler(h.type);
            if (fn) {
                ok = fn(&v, at, p, h.length, h.type, o);
            } else if (!mig2_frame_name(h.type)) {
                az_jbool(o, "grease", mig2_is_grease(h.type));
            }
        }
        /* DIGEST covers every frame before it, unknown ones included. */
        if (ok && v.digest && !v.digested &&
            (mig2_digest_update(v.digest, az->base + at, pos - at) ||
             (h.type == MIG2_FRAME_MANIFEST &&
              mig2_digest_value(v.digest, v.transcript)))) {
            ok = az_io_fail(az, "cannot compute SHA-256");
        }
    }
    close_run(&v);
    if (ok && !v.ended) {
        ok = az_fail(az, pos, "unexpected end of file, expected a frame "
                     "header (the stream ended before END or ERROR)");
    } else if (ok && v.end_seen && v.oneway && !v.digested) {
        ok = az_fail(az, pos, "unexpected end of file, expected DIGEST (the "
                     "one-way stream ends after END: it is truncated)");
    }
    if (v.have_src) {
        mig2_hello_clear(&v.src);
    }
    mig2_manifest_free(v.manifest);
    mig2_digest_free(v.digest);
    json_object_put(v.devindex);
    free(v.rblocks);
    free(v.rmap);
    return ok;
}
