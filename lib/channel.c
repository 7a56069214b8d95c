/*
 * libmig2 - channel headers and the per-session channel set
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig2/channel.h"
#include "internal.h"

static const char channel_label[] = "mig2 channel";

/* HMAC over the fields that bind a channel to its session (spec 12.2). */
static int channel_mac(const uint8_t key[MIG2_HASH_LEN], const char *type,
                       uint16_t index, uint16_t count, const uint8_t *sid,
                       uint8_t out[MIG2_MAC_LEN])
{
    uint8_t tlen = (uint8_t)strlen(type);
    uint8_t nums[4] = {
        (uint8_t)(index >> 8), (uint8_t)index,
        (uint8_t)(count >> 8), (uint8_t)count,
    };
    const void *parts[5] = { channel_label, &tlen, type, nums, sid };
    size_t lens[5] = { strlen(channel_label), 1, tlen, 4,
                       MIG2_SESSION_ID_LEN };

    return mig2_hmac(key, MIG2_HASH_LEN, parts, lens, 5, out);
}

static bool type_ok(const char *type)
{
    size_t n = type ? strlen(type) : 0;

    return n >= 1 && n <= MIG2_MAX_NAME && mig2_utf8_valid(type, n);
}

int mig2_channel_header_write(const Mig2Engine *e, const char *type,
                              uint16_t index, uint16_t count, Mig2Writer *w)
{
    const uint8_t *key = e ? mig2_result_channel_key(e) : NULL;
    const uint8_t *sid = e ? mig2_result_session_id(e) : NULL;
    uint8_t mac[MIG2_MAC_LEN];
    int rc;

    if (!e || !w || !type_ok(type) || index >= count) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (!key || !sid) {
        return MIG2_ERR_STATE;
    }
    if ((rc = channel_mac(key, type, index, count, sid, mac))) {
        return rc;
    }
    mig2_wr_u32(w, MIG2_CHANNEL_MAGIC);
    mig2_wr_u16(w, MIG2_CHANNEL_VERSION);
    mig2_wr_u16(w, (uint16_t)(53 + strlen(type)));
    mig2_wr_str8(w, type);
    mig2_wr_u16(w, index);
    mig2_wr_u16(w, count);
    mig2_wr_bytes(w, sid, MIG2_SESSION_ID_LEN);
    mig2_wr_bytes(w, mac, sizeof(mac));
    return mig2_wr_error(w);
}

int mig2_channel_header_length(const uint8_t *prefix, size_t *total)
{
    Mig2Reader rd;
    uint32_t magic;
    uint16_t ver, len;

    mig2_rd_init(&rd, prefix, MIG2_CHANNEL_PREFIX_LEN);
    mig2_rd_u32(&rd, &magic);
    mig2_rd_u16(&rd, &ver);
    mig2_rd_u16(&rd, &len);
    if (magic != MIG2_CHANNEL_MAGIC || ver != MIG2_CHANNEL_VERSION) {
        return MIG2_ERR_BAD_VALUE;
    }
    /* 53 fixed bytes plus a type of 1..255 bytes. */
    if (len < 54 || len > 53 + MIG2_MAX_NAME) {
        return MIG2_ERR_TOO_LARGE;
    }
    *total = MIG2_CHANNEL_PREFIX_LEN + len;
    return MIG2_OK;
}

int mig2_channel_header_parse(const uint8_t *p, size_t len,
                              Mig2ChannelHeader *h)
{
    Mig2Reader rd;
    const char *type;
    size_t tlen, total;
    int rc;

    memset(h, 0, sizeof(*h));
    if (len < MIG2_CHANNEL_PREFIX_LEN) {
        return MIG2_ERR_TRUNCATED;
    }
    if ((rc = mig2_channel_header_length(p, &total))) {
        return MIG2_ERR_BAD_VALUE;
    }
    if (len < total) {
        return MIG2_ERR_TRUNCATED;
    }
    if (len > total) {
        return MIG2_ERR_TRAILING;
    }
    mig2_rd_init(&rd, p + MIG2_CHANNEL_PREFIX_LEN,
                 total - MIG2_CHANNEL_PREFIX_LEN);
    if ((rc = mig2_rd_str8(&rd, &type, &tlen))) {
        return rc;
    }
    /* The length must match the type exactly (spec 12.2). */
    if (total != MIG2_CHANNEL_PREFIX_LEN + 53 + tlen) {
        return MIG2_ERR_BAD_VALUE;
    }
    memcpy(h->type, type, tlen);
    h->type[tlen] = '\0';
    if ((rc = mig2_rd_u16(&rd, &h->index)) ||
        (rc = mig2_rd_u16(&rd, &h->count)) ||
        (rc = mig2_rd_bytes(&rd, h->session_id, MIG2_SESSION_ID_LEN)) ||
        (rc = mig2_rd_bytes(&rd, h->mac, MIG2_MAC_LEN)) ||
        (rc = mig2_rd_end(&rd))) {
        return rc;
    }
    return MIG2_OK;
}

struct Mig2ChannelSet {
    uint8_t key[MIG2_HASH_LEN];
    uint8_t sid[MIG2_SESSION_ID_LEN];
    uint16_t multifd;           /* expected multifd channels */
    uint8_t *seen;              /* per multifd index */
    uint16_t admitted;
};

Mig2ChannelSet *mig2_channel_set_new(const Mig2Engine *e, int *status)
{
    const uint8_t *key = e ? mig2_result_channel_key(e) : NULL;
    const uint8_t *sid = e ? mig2_result_session_id(e) : NULL;
    const Mig2ConfigResult *on, *n;
    Mig2ChannelSet *s;

    if (!key || !sid) {
        if (status) {
            *status = MIG2_ERR_STATE;
        }
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        if (status) {
            *status = MIG2_ERR_NOMEM;
        }
        return NULL;
    }
    memcpy(s->key, key, sizeof(s->key));
    memcpy(s->sid, sid, sizeof(s->sid));
    on = mig2_result_config_find(e, "multifd");
    n = mig2_result_config_find(e, "multifd-channels");
    if (mig2_result_has_feature(e, MIG2_FEAT_MULTICHANNEL) && on &&
        on->final.type == MIG2_CFG_BOOL && on->final.b) {
        /* Not proposed: the registered default applies (spec 8.3). */
        uint64_t count = n && n->final.type == MIG2_CFG_U64
                             ? n->final.u
                             : mig2_config_registry_find("multifd-channels")
                                   ->def_u;

        /* The registered maximum (spec 8.3.2), from a peer that did not
         * clamp to it as well. */
        s->multifd = (uint16_t)(count > 255 ? 255 : count);
    }
    s->seen = calloc(s->multifd ? s->multifd : 1, 1);
    if (!s->seen) {
        free(s);
        if (status) {
            *status = MIG2_ERR_NOMEM;
        }
        return NULL;
    }
    if (status) {
        *status = MIG2_OK;
    }
    return s;
}

void mig2_channel_set_free(Mig2ChannelSet *s)
{
    if (s) {
        free(s->seen);
        free(s);
    }
}

unsigned mig2_channel_set_expected(const Mig2ChannelSet *s, const char *type)
{
    return type && strcmp(type, MIG2_CHANNEL_MULTIFD) == 0 ? s->multifd : 0;
}

static int reject(Mig2Error *why, const char *path, const char *expected,
                  const char *actual, const char *what)
{
    mig2_error_set(why, MIG2_WIRE_PROTOCOL, false, "channel rejected: %s",
                   what);
    if (mig2_error_add(why, MIG2_PROB_MALFORMED, path, expected, actual)) {
        return MIG2_ERR_NOMEM;
    }
    return MIG2_ERR_PROTOCOL;
}

int mig2_channel_set_admit(Mig2ChannelSet *s, const uint8_t *p, size_t len,
                           Mig2ChannelHeader *h, Mig2Error *why)
{
    uint8_t mac[MIG2_MAC_LEN], diff = 0;
    char a[64], b[64];
    unsigned want;
    size_t i;
    int rc;

    mig2_error_clear(why);
    rc = mig2_channel_header_parse(p, len, h);
    if (rc) {
        return reject(why, "channel/header", "a version 1 channel header",
                      mig2_strerror(rc), "not a valid channel header");
    }
    for (i = 0; i < MIG2_SESSION_ID_LEN; i++) {
        diff |= h->session_id[i] ^ s->sid[i];
    }
    if (diff) {
        return reject(why, "channel/session", "this session's id",
                      "another session id",
                      "the channel belongs to another session");
    }
    if ((rc = channel_mac(s->key, h->type, h->index, h->count, h->session_id,
                          mac))) {
        return rc;
    }
    for (i = 0, diff = 0; i < MIG2_MAC_LEN; i++) {
        diff |= mac[i] ^ h->mac[i];
    }
    if (diff) {
        return reject(why, "channel/mac", "a MAC from this session's key",
                      "a MAC that does not verify",
                      "the channel's MAC does not verify");
    }
    want = mig2_channel_set_expected(s, h->type);
    if (want == 0) {
        snprintf(a, sizeof(a), "%.40s", h->type);
        return reject(why, "channel/type", "a negotiated channel type", a,
                      "channel type not negotiated for this session");
    }
    if (h->count != want) {
        snprintf(a, sizeof(a), "%u", want);
        snprintf(b, sizeof(b), "%u", h->count);
        return reject(why, "channel/count", a, b,
                      "channel count differs from the negotiated one");
    }
    if (h->index >= h->count || s->seen[h->index]) {
        snprintf(a, sizeof(a), "an unused index below %u", want);
        snprintf(b, sizeof(b), "%u%s", h->index,
                 h->index < h->count ? " (already admitted)" : "");
        return reject(why, "channel/index", a, b,
                      h->index >= h->count ? "channel index out of range"
                                           : "duplicate channel index");
    }
    s->seen[h->index] = 1;
    s->admitted++;
    return MIG2_OK;
}

bool mig2_channel_set_complete(const Mig2ChannelSet *s)
{
    return s->admitted == s->multifd;
}

bool mig2_channel_set_missing(const Mig2ChannelSet *s, char *buf,
                              size_t len)
{
    uint16_t i;

    for (i = 0; i < s->multifd; i++) {
        if (!s->seen[i]) {
            snprintf(buf, len, "multifd channel %u of %u", i, s->multifd);
            return true;
        }
    }
    return false;
}
