/*
 * libmig2 - handshake messages: HELLO and ERROR encoding and decoding
 *
 * Stateless: these functions turn a Mig2Hello / Mig2Error into frame
 * bytes and back.  Decoders validate every field against the spec and
 * describe the first violation as a "malformed" problem.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---------------------------------------------------------------- */
/* Encoding                                                          */
/* ---------------------------------------------------------------- */

static void put_config_value(Mig2Writer *w, const Mig2ConfigValue *v)
{
    switch (v->type) {
    case MIG2_CFG_BOOL:
        mig2_wr_u8(w, v->b ? 1 : 0);
        break;
    case MIG2_CFG_U64:
        mig2_wr_u64(w, v->u);
        break;
    case MIG2_CFG_STR:
        mig2_wr_str16(w, v->s, MIG2_MAX_STR16);
        break;
    }
}

static void put_grease_tlv(Mig2Writer *w, uint32_t seed)
{
    /* 0x0a0a, 0x1a1a ... 0x7a7a, with 0..15 bytes of filler. */
    uint16_t type = (uint16_t)(0x0a0aU | ((seed & 7U) << 12) |
                               (((seed >> 3) & 7U) << 4));
    size_t len = (seed >> 6) & 15U;
    size_t mark = mig2_wr_tlv_begin(w, type, false);
    size_t i;

    for (i = 0; i < len; i++) {
        mig2_wr_u8(w, (uint8_t)(seed >> (i % 4 * 8)));
    }
    mig2_wr_tlv_end(w, mark);
}

void mig2_grease_frame(Mig2Writer *w, uint32_t seed)
{
    uint16_t type = (uint16_t)(0x0a0aU | ((seed & 7U) << 12) |
                               (((seed >> 3) & 7U) << 4));
    size_t len = (seed >> 6) & 15U;
    size_t mark = mig2_wr_frame_begin(w, type, 0);
    size_t i;

    for (i = 0; i < len; i++) {
        mig2_wr_u8(w, (uint8_t)i);
    }
    mig2_wr_frame_end(w, mark);
}

static void put_manifest(Mig2Writer *w, const Mig2Profile *p)
{
    size_t i, j, m, sm;

    m = mig2_wr_tlv_begin(w, MIG2_TLV_MACHINE, true);
    mig2_wr_str8(w, p->machine);
    mig2_wr_tlv_end(w, m);

    m = mig2_wr_tlv_begin(w, MIG2_TLV_PAGE_SIZE, true);
    mig2_wr_u32(w, p->page_size);
    mig2_wr_tlv_end(w, m);

    for (i = 0; i < p->n_ram; i++) {
        m = mig2_wr_tlv_begin(w, MIG2_TLV_RAM_BLOCK, true);
        mig2_wr_str8(w, p->ram[i].name);
        mig2_wr_u64(w, p->ram[i].size);
        mig2_wr_u32(w, p->ram[i].page_size);
        mig2_wr_tlv_end(w, m);
    }
    for (i = 0; i < p->n_devices; i++) {
        const Mig2Device *d = &p->devices[i];

        m = mig2_wr_tlv_begin(w, MIG2_TLV_DEVICE, true);
        mig2_wr_str8(w, d->id);
        mig2_wr_u32(w, d->instance);
        mig2_wr_u32(w, d->vmin);
        mig2_wr_u32(w, d->vmax);
        for (j = 0; j < d->n_subs; j++) {
            sm = mig2_wr_tlv_begin(w, MIG2_TLV_SUBSECTION, false);
            mig2_wr_str8(w, d->subs[j].name);
            mig2_wr_u8(w, d->subs[j].needed ? MIG2_SUBSECTION_NEEDED : 0);
            mig2_wr_tlv_end(w, sm);
        }
        mig2_wr_tlv_end(w, m);
    }
}

void mig2_hello_encode(Mig2Writer *w, uint16_t type, const Mig2Hello *h,
                       bool grease, uint32_t grease_seed)
{
    const Mig2Profile *p = h->profile;
    size_t frame = mig2_wr_frame_begin(w, type, MIG2_FRAME_FLAG_CRITICAL);
    size_t i, m;

    /* REVISIONS first: its position and layout are frozen. */
    m = mig2_wr_tlv_begin(w, MIG2_TLV_REVISIONS, true);
    mig2_wr_u16(w, p->rev_min);
    mig2_wr_u16(w, p->rev_max);
    mig2_wr_tlv_end(w, m);

    /* Second, where there is one: the revision everything after follows. */
    if (type == MIG2_FRAME_DST_HELLO || type == MIG2_FRAME_MANIFEST) {
        m = mig2_wr_tlv_begin(w, MIG2_TLV_SELECTED_REVISION, true);
        mig2_wr_u16(w, h->selected);
        mig2_wr_tlv_end(w, m);
    }

    /* Optional: a hello decoded from a peer that sent none has none. */
    if (p->build && *p->build) {
        m = mig2_wr_tlv_begin(w, MIG2_TLV_BUILD, false);
        mig2_wr_str16(w, p->build, MIG2_MAX_STR16);
        mig2_wr_tlv_end(w, m);
    }

    if (grease) {
        put_grease_tlv(w, grease_seed);
    }

    m = mig2_wr_tlv_begin(w, MIG2_TLV_FEATURES, false);
    for (i = 0; i < p->n_features; i++) {
        mig2_wr_u16(w, p->features[i].id);
        mig2_wr_u8(w, p->features[i].required ? MIG2_FEATURE_REQUIRED : 0);
    }
    if (grease) {
        mig2_wr_u16(w, (uint16_t)(0x0a0aU | ((grease_seed >> 10 & 7U) << 12)));
        mig2_wr_u8(w, 0);
    }
    mig2_wr_tlv_end(w, m);

    m = mig2_wr_tlv_begin(w, MIG2_TLV_NONCE, true);
    mig2_wr_bytes(w, h->nonce, MIG2_NONCE_LEN);
    mig2_wr_tlv_end(w, m);

    put_manifest(w, p);

    if (type != MIG2_FRAME_DST_HELLO) {
        for (i = 0; i < p->n_config; i++) {
            const Mig2ConfigItem *it = &p->config[i];

            m = mig2_wr_tlv_begin(w, MIG2_TLV_CONFIG, false);
            mig2_wr_str8(w, it->name);
            mig2_wr_u8(w, (uint8_t)it->v.type);
            mig2_wr_u8(w, it->flags);
            put_config_value(w, &it->v);
            mig2_wr_tlv_end(w, m);
        }
    } else {
        for (i = 0; i < h->n_outcomes; i++) {
            const Mig2ConfigOutcome *o = &h->outcomes[i];

            m = mig2_wr_tlv_begin(w, MIG2_TLV_CONFIG_RESULT, false);
            mig2_wr_str8(w, o->name);
            mig2_wr_u8(w, (uint8_t)o->final.type);
            mig2_wr_u8(w, o->status);
            put_config_value(w, &o->final);
            mig2_wr_tlv_end(w, m);
        }
    }
    mig2_wr_frame_end(w, frame);
}

/* Copy at most @max bytes of @s, cut at a UTF-8 boundary; "-" if empty. */
static void put_bounded_str16(Mig2Writer *w, const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    char *tmp;

    if (n == 0) {
        mig2_wr_str16(w, "-", max);
        return;
    }
    if (n <= max && mig2_utf8_valid(s, n)) {
        mig2_wr_str16(w, s, max);
        return;
    }
    if (n > max) {
        n = max;
    }
    /* Back off continuation bytes, then drop anything still invalid. */
    while (n > 0 && ((uint8_t)s[n] & 0xc0) == 0x80) {
        n--;
    }
    while (n > 0 && !mig2_utf8_valid(s, n)) {
        n--;
    }
    tmp = mig2_strndup(n ? s : "-", n ? n : 1);
    if (!tmp) {
        w->err = w->err ? w->err : MIG2_ERR_NOMEM;
        return;
    }
    mig2_wr_str16(w, tmp, max);
    free(tmp);
}

void mig2_error_encode(Mig2Writer *w, const Mig2Error *err)
{
    size_t frame = mig2_wr_frame_begin(w, MIG2_FRAME_ERROR,
                                       MIG2_FRAME_FLAG_CRITICAL);
    size_t i, m;

    mig2_wr_u32(w, err->code);
    mig2_wr_u8(w, err->retryable ? MIG2_ERROR_RETRYABLE : 0);
    m = mig2_wr_tlv_begin(w, MIG2_TLV_MESSAGE, false);
    put_bounded_str16(w, err->message && *err->message
                             ? err->message
                             : mig2_wire_error_name(err->code),
                      MIG2_MAX_STR16);
    mig2_wr_tlv_end(w, m);
    for (i = 0; i < err->n_problems; i++) {
        const Mig2Problem *pr = &err->problems[i];

        m = mig2_wr_tlv_begin(w, MIG2_TLV_PROBLEM, false);
        mig2_wr_u16(w, pr->kind);
        put_bounded_str16(w, pr->path, MIG2_MAX_PROBLEM_STR);
        put_bounded_str16(w, pr->expected, MIG2_MAX_PROBLEM_STR);
        put_bounded_str16(w, pr->actual, MIG2_MAX_PROBLEM_STR);
        mig2_wr_tlv_end(w, m);
    }
    mig2_wr_frame_end(w, frame);
}

/* ---------------------------------------------------------------- */
/* Decoding                                                          */
/* ---------------------------------------------------------------- */

typedef struct DecodeCtx {
    const char *frame;      /* "src-hello" / "dst-hello" / "manifest" */
    bool manifest;          /* one-way: stated choices, not offers */
    Mig2Error *err;
} DecodeCtx;

static const char *tlv_name(uint16_t type)
{
    switch (type) {
    case MIG2_TLV_REVISIONS: return "revisions";
    case MIG2_TLV_BUILD: return "build";
    case MIG2_TLV_FEATURES: return "features";
    case MIG2_TLV_NONCE: return "nonce";
    case MIG2_TLV_MACHINE: return "machine";
    case MIG2_TLV_PAGE_SIZE: return "page-size";
    case MIG2_TLV_RAM_BLOCK: return "ram-block";
    case MIG2_TLV_DEVICE: return "device";
    case MIG2_TLV_CONFIG: return "config";
    case MIG2_TLV_SELECTED_REVISION: return "selected-revision";
    case MIG2_TLV_CONFIG_RESULT: return "config-result";
    default: return "tlv";
    }
}

/* Record the first decode failure as one "malformed" problem. */
static int malformed(DecodeCtx *c, const char *what, size_t index,
                     const char *expected, int why)
{
    char path[96];

    snprintf(path, sizeof(path), "%s/%s[%zu]", c->frame, what, index);
    mig2_error_set(c->err, MIG2_WIRE_PROTOCOL, false,
                   "malformed %s: %s: %s", c->frame, path,
                   mig2_strerror(why));
    mig2_error_add(c->err, MIG2_PROB_MALFORMED, path, expected,
                   mig2_strerror(why));
    return MIG2_ERR_PROTOCOL;
}

static int unknown_critical(DecodeCtx *c, const char *where, uint16_t type)
{
    char path[320], actual[32];     /* @where: up to 300 (see callers) */

    snprintf(path, sizeof(path), "%s/tlv/0x%04x", where,
             (unsigned)(type | MIG2_TLV_CRITICAL));
    snprintf(actual, sizeof(actual), "critical type 0x%04x",
             (unsigned)(type | MIG2_TLV_CRITICAL));
    mig2_error_set(c->err, MIG2_WIRE_UNKNOWN_CRITICAL, false,
                   "%s carries a critical extension this side does not "
                   "understand: %s", c->frame, path);
    mig2_error_add(c->err, MIG2_PROB_UNKNOWN_CRITICAL, path,
                   "a known type", actual);
    return MIG2_ERR_UNKNOWN_CRITICAL;
}

static int rd_name(Mig2Reader *rd, char **out)
{
    const char *s;
    size_t n;
    int rc = mig2_rd_str8(rd, &s, &n);

    if (rc) {
        return rc;
    }
    *out = mig2_strndup(s, n);
    return *out ? MIG2_OK : MIG2_ERR_NOMEM;
}

static int rd_config_value(Mig2Reader *rd, uint8_t type, Mig2ConfigValue *v,
                           char **owned)
{
    uint8_t b;
    const char *s;
    size_t n;
    int rc;

    memset(v, 0, sizeof(*v));
    *owned = NULL;
    v->type = type;
    switch (type) {
    case MIG2_CFG_BOOL:
        if ((rc = mig2_rd_u8(rd, &b))) {
            return rc;
        }
        if (b > 1) {
            return MIG2_ERR_BAD_VALUE;
        }
        v->b = b;
        return MIG2_OK;
    case MIG2_CFG_U64:
        return mig2_rd_u64(rd, &v->u);
    case MIG2_CFG_STR:
        if ((rc = mig2_rd_str16(rd, MIG2_MAX_STR16, &s, &n))) {
            return rc;
        }
        *owned = mig2_strndup(s, n);
        v->s = *owned;
        return *owned ? MIG2_OK : MIG2_ERR_NOMEM;
    default:
        return MIG2_ERR_BAD_VALUE;
    }
}

static bool pow2_page(uint32_t v)
{
    return v >= 512 && v <= (1U << 30) && (v & (v - 1)) == 0;
}

/*
 * @all_required: a MANIFEST lists the features its stream uses, so every
 * one is required of the reader whatever its flag says.
 */
static int decode_features(Mig2Reader *v, Mig2Profile *p, bool all_required)
{
    uint16_t id;
    uint8_t flags;
    size_t i;
    int rc;

    if (mig2_rd_left(v) % 3) {
        return MIG2_ERR_TRUNCATED;
    }
    if (mig2_rd_left(v) / 3 > MIG2_MAX_FEATURES + 16) {
        return MIG2_ERR_LIMIT;
    }
    while (mig2_rd_left(v)) {
        mig2_rd_u16(v, &id);
        mig2_rd_u8(v, &flags);
        if (mig2_is_grease(id)) {
            continue;
        }
        if (id == 0) {
            return MIG2_ERR_BAD_VALUE;
        }
        for (i = 0; i < p->n_features; i++) {
            if (p->features[i].id == id) {
                return MIG2_ERR_DUPLICATE;
            }
        }
        rc = mig2_profile_add_feature(p, id, all_required ||
                                             (flags & MIG2_FEATURE_REQUIRED));
        if (rc) {
            return rc;
        }
    }
    return MIG2_OK;
}

static int decode_device(DecodeCtx *c, Mig2Reader *v, Mig2Profile *p,
                         size_t index)
{
    uint32_t inst, vmin, vmax;
    const char *s;
    size_t n;
    int rc, dev;

    if ((rc = mig2_rd_str8(v, &s, &n)) || (rc = mig2_rd_u32(v, &inst)) ||
        (rc = mig2_rd_u32(v, &vmin)) || (rc = mig2_rd_u32(v, &vmax))) {
        return malformed(c, "device", index,
                         "str8 id, be32 instance, be32 min, be32 max", rc);
    }
    if (vmin > vmax) {
        return malformed(c, "device", index, "version min <= max",
                         MIG2_ERR_BAD_VALUE);
    }
    /* A one-way stream states the one version the state was saved at. */
    if (c->manifest && vmin != vmax) {
        return malformed(c, "device", index, "version min == max",
                         MIG2_ERR_BAD_VALUE);
    }
    /* The reader validated the id: hand the copy over, no second one. */
    dev = mig2_profile_take_device(p, mig2_strndup(s, n), inst, vmin, vmax);
    if (dev < 0) {
        return dev == MIG2_ERR_NOMEM ? dev
                                     : malformed(c, "device", index,
                                                 "at most 65536 devices", dev);
    }
    while (mig2_rd_left(v)) {
        Mig2Reader sv;
        uint16_t type;
        bool crit;
        uint8_t flags;
        char *name;

        if ((rc = mig2_rd_tlv(v, &type, &crit, &sv))) {
            return malformed(c, "device", index, "nested TLVs", rc);
        }
        if (type != MIG2_TLV_SUBSECTION) {
            if (crit) {
                char where[300];

                snprintf(where, sizeof(where), "%s/device[%zu]", c->frame,
                         index);
                return unknown_critical(c, where, type);
            }
            continue;
        }
        if ((rc = rd_name(&sv, &name))) {
            return rc == MIG2_ERR_NOMEM ? rc
                   : malformed(c, "subsection", index, "str8 name, u8 flags",
                               rc);
        }
        rc = mig2_rd_u8(&sv, &flags);
        if (!rc) {
            rc = mig2_rd_end(&sv);
        }
        if (!rc) {
            rc = mig2_profile_add_subsection(p, dev, name,
                                             flags & MIG2_SUBSECTION_NEEDED);
        }
        free(name);
        if (rc) {
            return rc == MIG2_ERR_NOMEM ? rc
                   : malformed(c, "subsection", index,
                               "unique names, str8 name, u8 flags", rc);
        }
    }
    return MIG2_OK;
}

static int decode_config(Mig2Reader *v, Mig2Profile *p)
{
    Mig2ConfigValue cv;
    uint8_t type, flags;
    char *name = NULL, *owned = NULL;
    size_t i;
    int rc;

    if ((rc = rd_name(v, &name))) {
        return rc;
    }
    if ((rc = mig2_rd_u8(v, &type)) || (rc = mig2_rd_u8(v, &flags)) ||
        (rc = rd_config_value(v, type, &cv, &owned)) ||
        (rc = mig2_rd_end(v))) {
        goto out;
    }
    for (i = 0; i < p->n_config; i++) {
        if (strcmp(p->config[i].name, name) == 0) {
            rc = MIG2_ERR_DUPLICATE;
            goto out;
        }
    }
    rc = mig2_profile_add_config(p, name, &cv,
                                 flags & MIG2_CONFIG_REQUIRED);
out:
    free(name);
    free(owned);
    return rc;
}

static int decode_outcome(Mig2Reader *v, Mig2Hello *h)
{
    Mig2ConfigOutcome *o;
    Mig2ConfigValue cv;
    uint8_t type, status;
    char *name = NULL, *owned = NULL;
    int rc;

    if (h->n_outcomes >= MIG2_MAX_CONFIG) {
        return MIG2_ERR_LIMIT;
    }
    if ((rc = rd_name(v, &name))) {
        return rc;
    }
    if ((rc = mig2_rd_u8(v, &type)) || (rc = mig2_rd_u8(v, &status)) ||
        (rc = rd_config_value(v, type, &cv, &owned)) ||
        (rc = mig2_rd_end(v))) {
        goto fail;
    }
    if (status > MIG2_CFG_BAD_TYPE) {
        rc = MIG2_ERR_BAD_VALUE;
        goto fail;
    }
    if ((rc = mig2_grow((void **)&h->outcomes, &h->cap_outcomes,
                        h->n_outcomes + 1, sizeof(*h->outcomes)))) {
        goto fail;
    }
    o = &h->outcomes[h->n_outcomes++];
    o->name = name;
    o->final = cv;
    o->status = status;
    return MIG2_OK;
fail:
    free(name);
    free(owned);
    return rc;
}

void mig2_hello_clear(Mig2Hello *h)
{
    size_t i;

    mig2_profile_free(h->profile);
    for (i = 0; i < h->n_outcomes; i++) {
        free(h->outcomes[i].name);
        free((char *)h->outcomes[i].final.s);
    }
    free(h->outcomes);
    memset(h, 0, sizeof(*h));
}

/* Bit per once-only TLV type seen. */
#define SEEN(t) (1U << (t))

int mig2_hello_decode(const uint8_t *buf, size_t len, uint16_t ftype,
                      Mig2Hello *h, Mig2Error *err)
{
    DecodeCtx c = {
        .frame = ftype == MIG2_FRAME_SRC_HELLO ? "src-hello"
                 : ftype == MIG2_FRAME_MANIFEST ? "manifest"
                                                : "dst-hello",
        .manifest = ftype == MIG2_FRAME_MANIFEST,
        .err = err,
    };
    bool dst = ftype == MIG2_FRAME_DST_HELLO;
    bool man = c.manifest;
    uint32_t seen = 0, mandatory;
    size_t index = 0, n_ram = 0, n_dev = 0, n_cfg = 0;
    Mig2Reader rd, v;
    Mig2Profile *p;
    uint16_t type;
    bool crit;
    int rc;

    memset(h, 0, sizeof(*h));
    if (!(p = h->profile = mig2_profile_new())) {
        return MIG2_ERR_NOMEM;
    }
    /* A peer's manifest says what it has; nothing is "known" by default. */
    free(p->build);
    p->build = NULL;
    p->page_size = 0;
    mig2_rd_init(&rd, buf, len);
    for (index = 0; mig2_rd_left(&rd); index++) {
        const char *s;
        size_t n;

        if ((rc = mig2_rd_tlv(&rd, &type, &crit, &v))) {
            return malformed(&c, "tlv", index, "TLV header and value", rc);
        }
        if (index == 0 && type != MIG2_TLV_REVISIONS) {
            return malformed(&c, "tlv", 0, "revisions as the first TLV",
                             MIG2_ERR_MISSING);
        }
        /* A reader settles the stream's revision from the first two TLVs. */
        if (man && index == 1 && type != MIG2_TLV_SELECTED_REVISION) {
            return malformed(&c, "tlv", 1,
                             "selected-revision as the second TLV",
                             MIG2_ERR_MISSING);
        }
        switch (type) {
        case MIG2_TLV_REVISIONS:
        case MIG2_TLV_BUILD:
        case MIG2_TLV_FEATURES:
        case MIG2_TLV_NONCE:
        case MIG2_TLV_MACHINE:
        case MIG2_TLV_PAGE_SIZE:
        case MIG2_TLV_SELECTED_REVISION:
            if (type == MIG2_TLV_SELECTED_REVISION && !dst && !man) {
                goto unknown;
            }
            if (seen & SEEN(type)) {
                return malformed(&c, tlv_name(type), 1, "at most once",
                                 MIG2_ERR_DUPLICATE);
            }
            seen |= SEEN(type);
            break;
        default:
            break;
        }
        switch (type) {
        case MIG2_TLV_REVISIONS:
            if ((rc = mig2_rd_u16(&v, &p->rev_min)) ||
                (rc = mig2_rd_u16(&v, &p->rev_max)) ||
                (rc = mig2_rd_end(&v))) {
                return malformed(&c, "revisions", 0, "be16 min, be16 max",
                                 rc);
            }
            if (p->rev_min == 0 || p->rev_min > p->rev_max) {
                return malformed(&c, "revisions", 0, "1 <= min <= max",
                                 MIG2_ERR_BAD_VALUE);
            }
            break;
        case MIG2_TLV_SELECTED_REVISION:
            if ((rc = mig2_rd_u16(&v, &h->selected)) ||
                (rc = mig2_rd_end(&v))) {
                return malformed(&c, "selected-revision", 0, "be16", rc);
            }
            /* REVISIONS came first: the writer must implement its choice. */
            if (man && (h->selected < p->rev_min ||
                        h->selected > p->rev_max)) {
                return malformed(&c, "selected-revision", 0,
                                 "a revision within revisions",
                                 MIG2_ERR_BAD_VALUE);
            }
            break;
        case MIG2_TLV_BUILD:
            if ((rc = mig2_rd_str16(&v, MIG2_MAX_STR16, &s, &n)) ||
                (rc = mig2_rd_end(&v))) {
                return malformed(&c, "build", 0, "str16 of at most 4096 bytes",
                                 rc);
            }
            if (!(p->build = mig2_strndup(s, n))) {
                return MIG2_ERR_NOMEM;
            }
            break;
        case MIG2_TLV_FEATURES:
            if ((rc = decode_features(&v, p, man))) {
                return rc == MIG2_ERR_NOMEM ? rc
                       : malformed(&c, "features", 0,
                                   "unique (be16 id, u8 flags) entries", rc);
            }
            break;
        case MIG2_TLV_NONCE:
            if ((rc = mig2_rd_bytes(&v, h->nonce, MIG2_NONCE_LEN)) ||
                (rc = mig2_rd_end(&v))) {
                return malformed(&c, "nonce", 0, "16 bytes", rc);
            }
            break;
        case MIG2_TLV_MACHINE:
            if ((rc = mig2_rd_str8(&v, &s, &n)) || (rc = mig2_rd_end(&v))) {
                return malformed(&c, "machine", 0, "str8", rc);
            }
            if (!(p->machine = mig2_strndup(s, n))) {
                return MIG2_ERR_NOMEM;
            }
            break;
        case MIG2_TLV_PAGE_SIZE:
            if ((rc = mig2_rd_u32(&v, &p->page_size)) ||
                (rc = mig2_rd_end(&v))) {
                return malformed(&c, "page-size", 0, "be32", rc);
            }
            if (!pow2_page(p->page_size)) {
                return malformed(&c, "page-size", 0,
                                 "a power of two from 512 to 2^30",
                                 MIG2_ERR_BAD_VALUE);
            }
            break;
        case MIG2_TLV_RAM_BLOCK: {
            uint64_t size;
            uint32_t page;
            char *name;

            if ((rc = rd_name(&v, &name))) {
                return rc == MIG2_ERR_NOMEM ? rc
                       : malformed(&c, "ram-block", n_ram, "str8 name", rc);
            }
            rc = mig2_rd_u64(&v, &size);
            if (!rc) {
                rc = mig2_rd_u32(&v, &page);
            }
            if (!rc) {
                rc = mig2_rd_end(&v);
            }
            if (!rc && !pow2_page(page)) {
                rc = MIG2_ERR_BAD_VALUE;
            }
            if (!rc) {
                rc = mig2_profile_add_ram_block(p, name, size, page);
            }
            free(name);
            if (rc) {
                return rc == MIG2_ERR_NOMEM ? rc
                       : malformed(&c, "ram-block", n_ram,
                                   "unique str8 name, be64 size, "
                                   "be32 page size", rc);
            }
            n_ram++;
            break;
        }
        case MIG2_TLV_DEVICE:
            if ((rc = decode_device(&c, &v, p, n_dev))) {
                return rc;
            }
            n_dev++;
            break;
        case MIG2_TLV_CONFIG:
            if (dst) {
                goto unknown;
            }
            if ((rc = decode_config(&v, p))) {
                return rc == MIG2_ERR_NOMEM ? rc
                       : malformed(&c, "config", n_cfg,
                                   "unique str8 name, u8 type, u8 flags, "
                                   "value", rc);
            }
            n_cfg++;
            break;
        case MIG2_TLV_CONFIG_RESULT:
            if (!dst) {
                goto unknown;
            }
            if ((rc = decode_outcome(&v, h))) {
                return rc == MIG2_ERR_NOMEM ? rc
                       : malformed(&c, "config-result", n_cfg,
                                   "str8 name, u8 type, u8 status, value",
                                   rc);
            }
            n_cfg++;
            break;
        default:
        unknown:
            if (crit) {
                return unknown_critical(&c, c.frame, type);
            }
            break;
        }
    }
    mandatory = SEEN(MIG2_TLV_REVISIONS) | SEEN(MIG2_TLV_NONCE) |
                SEEN(MIG2_TLV_MACHINE) | SEEN(MIG2_TLV_PAGE_SIZE);
    if (dst || man) {
        mandatory |= SEEN(MIG2_TLV_SELECTED_REVISION);
    }
    if ((seen & mandatory) != mandatory) {
        return malformed(&c, "tlv", index,
                         dst || man ? "revisions, selected-revision, nonce, "
                                      "machine and page-size"
                                    : "revisions, nonce, machine and "
                                      "page-size",
                         MIG2_ERR_MISSING);
    }
    return MIG2_OK;
}

int mig2_error_decode(const uint8_t *buf, size_t len, Mig2Error *err)
{
    Mig2Reader rd, v;
    uint8_t flags;
    uint16_t type;
    bool crit, have_msg = false;
    int rc;

    mig2_error_clear(err);
    err->from_peer = true;
    mig2_rd_init(&rd, buf, len);
    if ((rc = mig2_rd_u32(&rd, &err->code)) ||
        (rc = mig2_rd_u8(&rd, &flags))) {
        return rc;
    }
    err->retryable = flags & MIG2_ERROR_RETRYABLE;
    while (mig2_rd_left(&rd)) {
        const char *s[4];
        size_t n[4];
        uint16_t kind;

        if ((rc = mig2_rd_tlv(&rd, &type, &crit, &v))) {
            return rc;
        }
        /* An error is always shown: unknown TLVs are skipped, critical or not. */
        if (type == MIG2_TLV_MESSAGE) {
            if (have_msg) {
                return MIG2_ERR_DUPLICATE;
            }
            if ((rc = mig2_rd_str16(&v, MIG2_MAX_STR16, &s[0], &n[0])) ||
                (rc = mig2_rd_end(&v))) {
                return rc;
            }
            if (!(err->message = mig2_strndup(s[0], n[0]))) {
                return MIG2_ERR_NOMEM;
            }
            have_msg = true;
        } else if (type == MIG2_TLV_PROBLEM) {
            char *str[3] = { NULL, NULL, NULL };
            int i;

            if ((rc = mig2_rd_u16(&v, &kind)) ||
                (rc = mig2_rd_str16(&v, MIG2_MAX_PROBLEM_STR, &s[1], &n[1])) ||
                (rc = mig2_rd_str16(&v, MIG2_MAX_PROBLEM_STR, &s[2], &n[2])) ||
                (rc = mig2_rd_str16(&v, MIG2_MAX_PROBLEM_STR, &s[3], &n[3])) ||
                (rc = mig2_rd_end(&v))) {
                return rc;
            }
            for (i = 0; i < 3; i++) {
                str[i] = mig2_strndup(s[i + 1], n[i + 1]);
            }
            rc = (str[0] && str[1] && str[2])
                     ? mig2_error_add(err, kind, str[0], str[1], str[2])
                     : MIG2_ERR_NOMEM;
            for (i = 0; i < 3; i++) {
                free(str[i]);
            }
            if (rc) {
                return rc;
            }
        }
    }
    if (!err->message) {
        /* No MESSAGE: the code's name, or its number when unregistered. */
        if (strcmp(mig2_wire_error_name(err->code), "unknown") == 0) {
            if (asprintf(&err->message, "error code %u",
                         (unsigned)err->code) < 0) {
                err->message = NULL;
            }
        } else {
            err->message = strdup(mig2_wire_error_name(err->code));
        }
        if (!err->message) {
            return MIG2_ERR_NOMEM;
        }
    }
    return MIG2_OK;
}
