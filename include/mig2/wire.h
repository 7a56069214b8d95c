/*
 * libmig2 - wire constants of protocol v2 (docs/protocol.md, section 17)
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_WIRE_H
#define MIG2_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Main-channel preamble: be32 magic, be32 version. */
#define MIG2_MAGIC              0x5145564dU     /* "QEVM" */
#define MIG2_STREAM_V3          3U              /* legacy, one-way */
#define MIG2_STREAM_V4          4U              /* v2 protocol: handshake */
#define MIG2_PREAMBLE_LEN       8U

/*
 * The legacy v3 stream (QEMU's format, facts from QEMU 7.2): section
 * types, and the flags in the low bits of each RAM record's be64 address.
 * mig2-vm writes and loads it, mig2-analyze reads it.
 */
enum {
    MIG2_V3_SEC_EOF = 0x00,
    MIG2_V3_SEC_START = 0x01,
    MIG2_V3_SEC_PART = 0x02,
    MIG2_V3_SEC_END = 0x03,
    MIG2_V3_SEC_FULL = 0x04,
    MIG2_V3_SEC_SUBSECTION = 0x05,
    MIG2_V3_SEC_VMDESC = 0x06,
    MIG2_V3_SEC_CONFIGURATION = 0x07,
    MIG2_V3_SEC_COMMAND = 0x08,
    MIG2_V3_SEC_FOOTER = 0x7e,
};

enum {
    MIG2_V3_RAM_ZERO = 0x02,
    MIG2_V3_RAM_MEM_SIZE = 0x04,
    MIG2_V3_RAM_PAGE = 0x08,
    MIG2_V3_RAM_EOS = 0x10,
    MIG2_V3_RAM_CONTINUE = 0x20,
    MIG2_V3_RAM_XBZRLE = 0x40,
    MIG2_V3_RAM_HOOK = 0x80,
    MIG2_V3_RAM_COMPRESS_PAGE = 0x100,
    MIG2_V3_RAM_MULTIFD_FLUSH = 0x200,
};

/* Protocol revisions this library implements. */
#define MIG2_REVISION_MIN       1U
#define MIG2_REVISION_MAX       2U

/* Frame header: be16 type, be16 flags, be32 payload length. */
#define MIG2_FRAME_HEADER_LEN   8U
#define MIG2_FRAME_FLAG_CRITICAL 0x0001U
/* Largest payload a receiver must accept, and the most it may accept. */
#define MIG2_FRAME_MAX          (16U * 1024 * 1024)

/* Frame types. */
#define MIG2_FRAME_SRC_HELLO    0x0001U
#define MIG2_FRAME_DST_HELLO    0x0002U
#define MIG2_FRAME_FINISHED     0x0003U
#define MIG2_FRAME_READY        0x0004U     /* revision 1 only */
#define MIG2_FRAME_MANIFEST     0x0005U     /* one-way v4 stream, first frame */
#define MIG2_FRAME_ERROR        0x000fU
/* Data phase on the main channel (docs/protocol.md section 13). */
#define MIG2_FRAME_RAM          0x0101U     /* S: pages of one block */
#define MIG2_FRAME_SYNC         0x0102U     /* S: end of a dirty round */
#define MIG2_FRAME_SWITCHOVER   0x0103U     /* S: guest stopped */
#define MIG2_FRAME_DEVICE       0x0104U     /* S: one device's state */
#define MIG2_FRAME_END          0x0105U     /* S: nothing more follows */
#define MIG2_FRAME_DIGEST       0x0106U     /* S: one-way stream, after END */
#define MIG2_FRAME_DONE         0x0181U     /* D: loaded, guest taken over */
#define MIG2_FRAME_SYNC_ACK     0x0182U     /* D: round received */
/* RAM page entry flag (low bit of the be64 offset). */
#define MIG2_RAM_ZERO           0x1U

/* TLV header: be16 type (bit 15 = critical), be32 length. */
#define MIG2_TLV_HEADER_LEN     6U
#define MIG2_TLV_CRITICAL       0x8000U
#define MIG2_TLV_TYPE_MASK      0x7fffU

/* TLV types in SRC_HELLO / DST_HELLO (critical bit shown where mandatory). */
#define MIG2_TLV_REVISIONS      0x0001U     /* be16 min, be16 max */
#define MIG2_TLV_BUILD          0x0002U     /* str16 */
#define MIG2_TLV_FEATURES       0x0003U     /* n x (be16 id, u8 flags) */
#define MIG2_TLV_NONCE          0x0004U     /* 16 bytes */
#define MIG2_TLV_MACHINE        0x0005U     /* str8 */
#define MIG2_TLV_PAGE_SIZE      0x0006U     /* be32 */
#define MIG2_TLV_RAM_BLOCK      0x0007U     /* str8 name, be64 size, be32 page */
#define MIG2_TLV_DEVICE         0x0008U     /* str8 id, be32 inst, be32 min/max, TLVs */
#define MIG2_TLV_CONFIG         0x0009U     /* str8 name, u8 type, u8 flags, value */
#define MIG2_TLV_SELECTED_REVISION 0x000aU  /* be16, DST_HELLO and MANIFEST */
#define MIG2_TLV_CONFIG_RESULT  0x000bU     /* str8, u8 type, u8 status, value */
/* Nested in DEVICE. */
#define MIG2_TLV_SUBSECTION     0x0001U     /* str8 name, u8 flags */
/* In ERROR. */
#define MIG2_TLV_MESSAGE        0x0001U     /* str16, at most 4096 bytes */
#define MIG2_TLV_PROBLEM        0x0002U     /* be16 kind, 3 x str16 */

/* FINISHED payload: 32 bytes of verify data. */
#define MIG2_VERIFY_LEN         32U
#define MIG2_HASH_LEN           32U
#define MIG2_NONCE_LEN          16U
#define MIG2_SESSION_ID_LEN     16U

/* Feature flags (per entry of FEATURES). */
#define MIG2_FEATURE_REQUIRED   0x01U

/* Subsection flags. */
#define MIG2_SUBSECTION_NEEDED  0x01U

/* Config item flags (CONFIG TLV). */
#define MIG2_CONFIG_REQUIRED    0x01U

/* ERROR frame flags (u8 after the be32 code). */
#define MIG2_ERROR_RETRYABLE    0x01U

/* Receiver limits; a peer exceeding them gets MIG2_WIRE_PROTOCOL. */
#define MIG2_MAX_NAME           255U    /* str8 */
#define MIG2_MAX_STR16          4096U
#define MIG2_MAX_PROBLEM_STR    1024U
#define MIG2_MAX_FEATURES       1024U
#define MIG2_MAX_RAM_BLOCKS     4096U
#define MIG2_MAX_DEVICES        65536U
#define MIG2_MAX_SUBSECTIONS    256U
#define MIG2_MAX_CONFIG         1024U
#define MIG2_MAX_PROBLEMS       4096U

/*
 * Grease: TLV types and feature ids whose both bytes end in 0xa
 * ((v & 0x0f0f) == 0x0a0a, bit 15 clear) are never assigned.  Senders put
 * them in to keep receivers honest; receivers ignore them like any other
 * unknown non-critical value.
 */
static inline bool mig2_is_grease(uint16_t v)
{
    return (v & 0x8f0fU) == 0x0a0aU;
}

/* Registered features (docs/protocol.md 17.5). */
typedef enum Mig2FeatureId {
    MIG2_FEAT_RETURN_PATH = 1,      /* main channel stays bidirectional */
    MIG2_FEAT_MULTICHANNEL = 2,     /* session-bound named channels */
    MIG2_FEAT_ZERO_PAGE = 3,        /* zero pages sent as a flag */
    MIG2_FEAT_TLS_BINDING = 4,      /* transcript bound to TLS exporter */
    MIG2_FEAT_POSTCOPY = 5,
    MIG2_FEAT_SWITCHOVER_ACK = 6,
    MIG2_FEAT_ONEWAY_MANIFEST = 7,  /* one-way v4 streams (MANIFEST) */
    MIG2_FEAT_DEVICE_STATE_VERSIONS = 8, /* per-device negotiated versions */
} Mig2FeatureId;

/* Feature name, e.g. "multichannel"; NULL if unregistered. */
const char *mig2_feature_name(uint16_t id);
/* Registered feature id for @name, or 0. */
uint16_t mig2_feature_by_name(const char *name);

/* Config item value types. */
typedef enum Mig2ConfigType {
    MIG2_CFG_BOOL = 0,      /* u8 0 or 1 */
    MIG2_CFG_U64 = 1,       /* be64 */
    MIG2_CFG_STR = 2,       /* str16 */
} Mig2ConfigType;

/* What the destination did with a proposed config item. */
typedef enum Mig2ConfigStatus {
    MIG2_CFG_ACCEPTED = 0,  /* final value == proposed */
    MIG2_CFG_CLAMPED = 1,   /* u64 lowered to the destination's maximum */
    MIG2_CFG_REFUSED = 2,   /* policy refused; final value is the default */
    MIG2_CFG_UNKNOWN = 3,   /* destination does not know the name */
    MIG2_CFG_BAD_TYPE = 4,  /* known name, wrong type; final = default */
} Mig2ConfigStatus;

const char *mig2_config_status_name(unsigned status);

/* A typed config value.  @s is owned by whatever holds the value. */
typedef struct Mig2ConfigValue {
    Mig2ConfigType type;
    bool b;
    uint64_t u;
    const char *s;
} Mig2ConfigValue;

/*
 * The library's registry of known capabilities (bool) and parameters
 * (u64, string), named as QEMU's QMP names them where QEMU has them.
 */
typedef struct Mig2ConfigDef {
    const char *name;
    Mig2ConfigType type;
    uint64_t def_u;         /* default for bool (0/1) and u64 */
    const char *def_s;      /* default for strings */
    uint64_t max_u;         /* u64: largest meaningful value, 0 for none */
} Mig2ConfigDef;

/* Number of registered items and item @i (NULL when out of range). */
size_t mig2_config_registry_count(void);
const Mig2ConfigDef *mig2_config_registry_get(size_t i);
/* Registered item called @name, or NULL. */
const Mig2ConfigDef *mig2_config_registry_find(const char *name);

/* Classify the first 8 bytes of a main channel. */
typedef enum Mig2StreamKind {
    MIG2_STREAM_UNKNOWN = 0,    /* not QEVM */
    MIG2_STREAM_LEGACY = 3,     /* QEVM v3 */
    MIG2_STREAM_HANDSHAKE = 4,  /* QEVM v4 */
    MIG2_STREAM_OTHER_VERSION = 5, /* QEVM with any other version */
} Mig2StreamKind;

Mig2StreamKind mig2_stream_detect(const uint8_t preamble[MIG2_PREAMBLE_LEN]);

/*
 * Bytes that tell a one-way v4 stream from a live handshake: the preamble
 * and the first frame header (docs/protocol.md section 2.4).
 */
#define MIG2_ONEWAY_DETECT_LEN  (MIG2_PREAMBLE_LEN + MIG2_FRAME_HEADER_LEN)

/*
 * True when the first MIG2_ONEWAY_DETECT_LEN bytes of a stream are QEVM
 * version 4 followed by a MANIFEST frame header: a one-way v4 stream.
 */
bool mig2_stream_is_oneway(const uint8_t head[MIG2_ONEWAY_DETECT_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_WIRE_H */
