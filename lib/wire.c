/*
 * libmig2 - wire registries: features, configuration, stream detection
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "internal.h"

static const char *const feature_names[] = {
    [MIG2_FEAT_RETURN_PATH] = "return-path",
    [MIG2_FEAT_MULTICHANNEL] = "multichannel",
    [MIG2_FEAT_ZERO_PAGE] = "zero-page",
    [MIG2_FEAT_TLS_BINDING] = "tls-binding",
    [MIG2_FEAT_POSTCOPY] = "postcopy",
    [MIG2_FEAT_SWITCHOVER_ACK] = "switchover-ack",
    [MIG2_FEAT_ONEWAY_MANIFEST] = "oneway-manifest",
    [MIG2_FEAT_DEVICE_STATE_VERSIONS] = "device-state-versions",
};

#define N_FEATURE_NAMES (sizeof(feature_names) / sizeof(feature_names[0]))

const char *mig2_feature_name(uint16_t id)
{
    return id < N_FEATURE_NAMES ? feature_names[id] : NULL;
}

uint16_t mig2_feature_by_name(const char *name)
{
    uint16_t i;

    for (i = 1; name && i < N_FEATURE_NAMES; i++) {
        if (feature_names[i] && strcmp(feature_names[i], name) == 0) {
            return i;
        }
    }
    return 0;
}

/*
 * Capabilities and parameters with QEMU's QMP names and defaults; the
 * "x-" ones are mig2's own.  Append only: the order is not on the wire but
 * tools list it.
 */
static const Mig2ConfigDef config_registry[] = {
    { "auto-converge", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "events", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "multifd", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "postcopy-ram", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "return-path", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "zero-copy-send", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "validate-uuid", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "pause-before-switchover", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "switchover-ack", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "xbzrle", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "dirty-bitmaps", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "late-block-activate", MIG2_CFG_BOOL, 0, NULL, 0 },
    { "downtime-limit", MIG2_CFG_U64, 300, NULL, 0 },
    { "max-bandwidth", MIG2_CFG_U64, 134217728, NULL, 0 },
    /* QEMU's range (a uint8): more is clamped (spec 8.3.2). */
    { "multifd-channels", MIG2_CFG_U64, 2, NULL, 255 },
    { "cpu-throttle-initial", MIG2_CFG_U64, 20, NULL, 0 },
    { "cpu-throttle-increment", MIG2_CFG_U64, 10, NULL, 0 },
    { "max-cpu-throttle", MIG2_CFG_U64, 99, NULL, 0 },
    { "avail-switchover-bandwidth", MIG2_CFG_U64, 0, NULL, 0 },
    { "max-postcopy-bandwidth", MIG2_CFG_U64, 0, NULL, 0 },
    { "announce-initial", MIG2_CFG_U64, 50, NULL, 0 },
    { "x-channel-deadline", MIG2_CFG_U64, 5000, NULL, 0 },
    { "x-max-dirty-rounds", MIG2_CFG_U64, 30, NULL, 0 },
    { "x-stall-timeout", MIG2_CFG_U64, 30000, NULL, 0 },
    { "multifd-compression", MIG2_CFG_STR, 0, "none", 0 },
};

#define N_CONFIG (sizeof(config_registry) / sizeof(config_registry[0]))

size_t mig2_config_registry_count(void)
{
    return N_CONFIG;
}

const Mig2ConfigDef *mig2_config_registry_get(size_t i)
{
    return i < N_CONFIG ? &config_registry[i] : NULL;
}

const Mig2ConfigDef *mig2_config_registry_find(const char *name)
{
    size_t i;

    for (i = 0; name && i < N_CONFIG; i++) {
        if (strcmp(config_registry[i].name, name) == 0) {
            return &config_registry[i];
        }
    }
    return NULL;
}

static const char *const status_names[] = {
    [MIG2_CFG_ACCEPTED] = "accepted",
    [MIG2_CFG_CLAMPED] = "clamped",
    [MIG2_CFG_REFUSED] = "refused",
    [MIG2_CFG_UNKNOWN] = "unknown",
    [MIG2_CFG_BAD_TYPE] = "bad-type",
};

const char *mig2_config_status_name(unsigned status)
{
    if (status < sizeof(status_names) / sizeof(status_names[0])) {
        return status_names[status];
    }
    return "invalid";
}

Mig2StreamKind mig2_stream_detect(const uint8_t pre[MIG2_PREAMBLE_LEN])
{
    uint32_t magic = (uint32_t)pre[0] << 24 | (uint32_t)pre[1] << 16 |
                     (uint32_t)pre[2] << 8 | pre[3];
    uint32_t ver = (uint32_t)pre[4] << 24 | (uint32_t)pre[5] << 16 |
                   (uint32_t)pre[6] << 8 | pre[7];

    if (magic != MIG2_MAGIC) {
        return MIG2_STREAM_UNKNOWN;
    }
    if (ver == MIG2_STREAM_V3) {
        return MIG2_STREAM_LEGACY;
    }
    if (ver == MIG2_STREAM_V4) {
        return MIG2_STREAM_HANDSHAKE;
    }
    return MIG2_STREAM_OTHER_VERSION;
}

bool mig2_stream_is_oneway(const uint8_t head[MIG2_ONEWAY_DETECT_LEN])
{
    const uint8_t *f = head + MIG2_PREAMBLE_LEN;

    return mig2_stream_detect(head) == MIG2_STREAM_HANDSHAKE &&
           ((uint16_t)(f[0] << 8 | f[1])) == MIG2_FRAME_MANIFEST;
}

const char *mig2_version(void)
{
    return MIG2_VERSION_STRING;
}
