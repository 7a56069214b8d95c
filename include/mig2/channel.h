/*
 * libmig2 - session-bound extra channels (docs/protocol.md section 12)
 *
 * Sans-I/O, like the engine: these functions build and check channel
 * headers and keep track of which channels a session has admitted.  The
 * caller owns the sockets and the clock (the x-channel-deadline).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_CHANNEL_H
#define MIG2_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mig2/codec.h"
#include "mig2/engine.h"
#include "mig2/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MIG2_CHANNEL_MAGIC          0x4d494732U     /* "MIG2" */
#define MIG2_CHANNEL_VERSION        1U
/* magic, version and length: enough to know the whole header's size. */
#define MIG2_CHANNEL_PREFIX_LEN     8U
#define MIG2_CHANNEL_MAX_LEN        (MIG2_CHANNEL_PREFIX_LEN + 53U + 255U)
#define MIG2_MAC_LEN                32U

/* Frames on extra channels. */
#define MIG2_FRAME_CHANNEL_ACCEPT   0x0201U     /* D: channel admitted */
#define MIG2_FRAME_CHANNEL_SYNC     0x0202U     /* S: end of a round here */

/* Channel type names. */
#define MIG2_CHANNEL_MULTIFD        "multifd"
#define MIG2_CHANNEL_POSTCOPY       "postcopy-preempt"

typedef struct Mig2ChannelHeader {
    char type[256];             /* NUL-terminated */
    uint16_t index;
    uint16_t count;
    uint8_t session_id[MIG2_SESSION_ID_LEN];
    uint8_t mac[MIG2_MAC_LEN];
} Mig2ChannelHeader;

/*
 * Source: append the header of channel @index of @count channels of
 * @type to @w, for the session of @e (a COMPLETE source engine).  Returns
 * MIG2_OK, MIG2_ERR_STATE (engine not complete), MIG2_ERR_INVALID_ARG
 * (index >= count, bad type), MIG2_ERR_CRYPTO, or the writer's error.
 */
int mig2_channel_header_write(const Mig2Engine *e, const char *type,
                              uint16_t index, uint16_t count, Mig2Writer *w);

/*
 * Destination: from the first MIG2_CHANNEL_PREFIX_LEN bytes, the total
 * header length in *@total.  MIG2_OK, MIG2_ERR_BAD_VALUE (wrong magic or
 * header version) or MIG2_ERR_TOO_LARGE (length out of range).
 */
int mig2_channel_header_length(const uint8_t *prefix, size_t *total);

/*
 * Parse a whole header (prefix included).  MIG2_OK, MIG2_ERR_TRUNCATED,
 * MIG2_ERR_TRAILING, MIG2_ERR_BAD_VALUE (magic, version, length),
 * MIG2_ERR_BAD_STRING (type).
 */
int mig2_channel_header_parse(const uint8_t *p, size_t len,
                              Mig2ChannelHeader *h);

/*
 * The channels one session expects and has admitted.  Built from a
 * COMPLETE engine of either role: when feature multichannel is in use and
 * the final config has "multifd" true, "multifd-channels" channels of
 * type multifd are expected; otherwise none.
 */
typedef struct Mig2ChannelSet Mig2ChannelSet;

/* NULL with *@status set: MIG2_ERR_STATE (engine not complete), NOMEM. */
Mig2ChannelSet *mig2_channel_set_new(const Mig2Engine *e, int *status);
void mig2_channel_set_free(Mig2ChannelSet *s);

/* Number of channels of @type the session expects (0 if none). */
unsigned mig2_channel_set_expected(const Mig2ChannelSet *s, const char *type);

/*
 * Admit the channel whose whole header is @p/@len.  On success fills *@h
 * and returns MIG2_OK: answer CHANNEL_ACCEPT.  Otherwise returns
 * MIG2_ERR_PROTOCOL (or MIG2_ERR_NOMEM / MIG2_ERR_CRYPTO) and fills @why
 * (cleared first) for the ERROR frame to send before closing: code
 * protocol and one problem whose path names the reason:
 *   channel/header    garbage (magic, version, length, type string)
 *   channel/session   not this session's id
 *   channel/mac       the MAC does not verify
 *   channel/type      a type the session did not negotiate
 *   channel/count     a count other than the negotiated one
 *   channel/index     index >= count, or already admitted
 * A rejected channel changes nothing in the set.
 */
int mig2_channel_set_admit(Mig2ChannelSet *s, const uint8_t *p, size_t len,
                           Mig2ChannelHeader *h, Mig2Error *why);

/* True when every expected channel has been admitted. */
bool mig2_channel_set_complete(const Mig2ChannelSet *s);

/*
 * Describe the first channel still missing, e.g. "multifd channel 2 of 4",
 * into @buf; false when none is missing.
 */
bool mig2_channel_set_missing(const Mig2ChannelSet *s, char *buf,
                              size_t len);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_CHANNEL_H */
