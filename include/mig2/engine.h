/*
 * libmig2 - sans-I/O handshake engine
 *
 * The engine runs one side (source or destination) of the protocol v2
 * handshake on the main channel.  It never touches a file descriptor,
 * clock, thread or sleep: the caller feeds it the bytes it received
 * (mig2_engine_recv), sends whatever it has queued (mig2_engine_output,
 * mig2_engine_output_consumed) and reads events (mig2_engine_next_event).
 *
 * Typical loop:
 *
 *     e = mig2_engine_new(MIG2_ROLE_SOURCE, profile, NULL, &rc);
 *     while (mig2_engine_state(e) == MIG2_STATE_RUNNING) {
 *         send everything mig2_engine_output() returns;
 *         n = read(fd, buf, sizeof(buf));
 *         used = mig2_engine_recv(e, buf, n);
 *         while (mig2_engine_next_event(e, &ev)) { ... }
 *     }
 *     send what is still queued (an ERROR frame, the last FINISHED);
 *
 * Bytes after the handshake (the data phase) are not consumed: recv
 * returns how many bytes belonged to the handshake and the rest is the
 * caller's.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_ENGINE_H
#define MIG2_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mig2/codec.h"
#include "mig2/error.h"
#include "mig2/profile.h"
#include "mig2/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Mig2Engine Mig2Engine;

typedef enum Mig2Role {
    MIG2_ROLE_SOURCE = 0,
    MIG2_ROLE_DESTINATION = 1,
} Mig2Role;

typedef enum Mig2EngineState {
    MIG2_STATE_RUNNING = 0,     /* handshake in progress */
    MIG2_STATE_COMPLETE = 1,    /* handshake done; data phase may start */
    MIG2_STATE_FAILED = 2,      /* see mig2_engine_error() */
} Mig2EngineState;

typedef enum Mig2EventType {
    MIG2_EV_NONE = 0,
    /* Both flights are known; results API is filled in. */
    MIG2_EV_NEGOTIATED = 1,
    /* The handshake is complete: the source may send data now. */
    MIG2_EV_COMPLETE = 2,
    /* This side found problems and queued an ERROR frame. */
    MIG2_EV_FAILED = 3,
    /* The peer sent an ERROR frame. */
    MIG2_EV_REJECTED = 4,
} Mig2EventType;

typedef struct Mig2Event {
    Mig2EventType type;
    /* For FAILED / REJECTED: the error (owned by the engine). */
    const Mig2Error *error;
} Mig2Event;

typedef struct Mig2EngineOptions {
    /*
     * 16 bytes of fresh randomness: the session id (source) or the
     * destination nonce.  NULL: the engine draws them from GnuTLS's
     * nonce generator.  Fixed values make the transcript reproducible
     * (tests, spec examples).
     */
    const uint8_t *nonce;
    /* Largest frame payload accepted, at most MIG2_FRAME_MAX (0: that). */
    size_t max_frame;
    /* Leave out grease values (only for byte-exact examples). */
    bool no_grease;
    /*
     * A one-way v4 stream (docs/protocol.md section 2.5; mig2/manifest.h)
     * instead of the live handshake.  Source: mig2_engine_new queues the
     * preamble, the MANIFEST this profile states and FINISHED, and the
     * engine is COMPLETE at once, its results being the stated choices
     * (NEGOTIATED and COMPLETE are queued).  Destination: it expects a
     * MANIFEST as the first frame, then FINISHED, runs the live
     * destination's checks on them and becomes COMPLETE or FAILED with
     * every problem; it never queues output.  The nonce is the stream id.
     */
    bool oneway;
} Mig2EngineOptions;

/*
 * Create an engine for @role described by @profile (copied).  @opts may be
 * NULL.  Returns NULL and sets *@status (when non-NULL) to
 * MIG2_ERR_INVALID_ARG (bad role, profile without a machine, max_frame too
 * large), MIG2_ERR_NOMEM or MIG2_ERR_CRYPTO.
 *
 * A source engine queues its preamble and SRC_HELLO at once.
 */
Mig2Engine *mig2_engine_new(Mig2Role role, const Mig2Profile *profile,
                            const Mig2EngineOptions *opts, int *status);
void mig2_engine_free(Mig2Engine *e);

/*
 * Offer received bytes.  Returns the number of bytes consumed (which is
 * less than @len only when the handshake ended inside @buf, or 0 once it
 * has ended), or a negative Mig2Status when this call made the engine
 * fail: MIG2_ERR_NOT_MIGRATION, MIG2_ERR_LEGACY_STREAM,
 * MIG2_ERR_BAD_VERSION (destination preamble), MIG2_ERR_PROTOCOL (a
 * malformed or unexpected frame), MIG2_ERR_UNKNOWN_CRITICAL,
 * MIG2_ERR_NO_REVISION, MIG2_ERR_INCOMPATIBLE, MIG2_ERR_TRANSCRIPT,
 * MIG2_ERR_TOO_LARGE (frame over max_frame), MIG2_ERR_NOMEM,
 * MIG2_ERR_CRYPTO.  A peer's ERROR frame is not a local failure: recv
 * returns the bytes consumed and a REJECTED event follows.  After any
 * failure, send what mig2_engine_output() still holds, then close.
 */
ssize_t mig2_engine_recv(Mig2Engine *e, const uint8_t *buf, size_t len);

/*
 * Bytes queued for the peer: a pointer valid until the next call on @e,
 * and their count in *@len (0 when nothing is queued).
 */
const uint8_t *mig2_engine_output(Mig2Engine *e, size_t *len);
/* Mark @n queued bytes as sent. */
void mig2_engine_output_consumed(Mig2Engine *e, size_t n);

/* Pop the next event into *@ev: true if there was one. */
bool mig2_engine_next_event(Mig2Engine *e, Mig2Event *ev);

Mig2EngineState mig2_engine_state(const Mig2Engine *e);
Mig2Role mig2_engine_role(const Mig2Engine *e);
/* True for an engine created with the oneway option. */
bool mig2_engine_oneway(const Mig2Engine *e);
/* The error of a FAILED engine (local or the peer's), else NULL. */
const Mig2Error *mig2_engine_error(const Mig2Engine *e);

/*
 * Mix channel binding material (the TLS exporter, see the spec's section
 * on TLS) into the FINISHED verify data and the channel key.  Must be
 * called before the first recv (destination) or right after
 * mig2_engine_new (source: the SRC_HELLO does not depend on it).
 * MIG2_ERR_STATE when too late or for a one-way engine (a file has no
 * TLS session), MIG2_ERR_INVALID_ARG over 64 bytes.
 */
int mig2_engine_set_binding(Mig2Engine *e, const uint8_t *data, size_t len);

/*
 * Abort: queue an ERROR frame with @code (Mig2WireError) and @message,
 * and move to FAILED.  MIG2_ERR_STATE when already complete or failed.
 */
int mig2_engine_abort(Mig2Engine *e, uint32_t code, const char *message);

/*
 * ERROR frames outside the handshake (the data phase uses the same frozen
 * layout, docs/protocol.md section 6.6).  encode writes a whole frame,
 * header included, truncating strings at UTF-8 boundaries to the wire
 * bounds; check mig2_wr_error(@w).  decode takes the payload only, clears
 * @err first and returns MIG2_OK, MIG2_ERR_TRUNCATED, MIG2_ERR_TRAILING (a
 * MESSAGE or PROBLEM value longer than its strings), MIG2_ERR_TOO_LARGE,
 * MIG2_ERR_BAD_STRING, MIG2_ERR_DUPLICATE or MIG2_ERR_NOMEM; on failure
 * @err may hold what was decoded before the fault (the caller clears it).
 */
void mig2_error_encode(Mig2Writer *w, const Mig2Error *err);
int mig2_error_decode(const uint8_t *p, size_t len, Mig2Error *err);

/* ---- Results (valid after MIG2_EV_NEGOTIATED) ---- */

typedef enum Mig2FeatureSet {
    MIG2_FEATURES_COMMON = 0,       /* both sides: what is in use */
    MIG2_FEATURES_PEER_LACKS = 1,   /* ours, not the peer's */
    MIG2_FEATURES_LOCAL_LACKS = 2,  /* the peer's, not ours */
} Mig2FeatureSet;

typedef struct Mig2ConfigResult {
    const char *name;
    Mig2ConfigValue proposed;   /* what the source proposed */
    Mig2ConfigValue final;      /* what both sides use */
    Mig2ConfigStatus status;
    bool required;
} Mig2ConfigResult;

typedef struct Mig2DeviceResult {
    const char *id;
    uint32_t instance;
    uint32_t version;           /* the state version both sides use */
} Mig2DeviceResult;

typedef struct Mig2OmittedSubsection {
    const char *device;
    uint32_t instance;
    const char *subsection;
} Mig2OmittedSubsection;

/* True once results are available. */
bool mig2_result_ready(const Mig2Engine *e);
/* The negotiated revision (0 before negotiation). */
uint16_t mig2_result_revision(const Mig2Engine *e);
/* The peer's announced revision range. */
void mig2_result_peer_revisions(const Mig2Engine *e, uint16_t *min,
                                uint16_t *max);
/* The peer's build string (NUL-terminated, owned by the engine). */
const char *mig2_result_peer_build(const Mig2Engine *e);
/* Feature ids in @set; *@ids points into the engine.  Returns the count. */
size_t mig2_result_features(const Mig2Engine *e, Mig2FeatureSet set,
                            const uint16_t **ids);
/* True when feature @id is in use (both sides have it). */
bool mig2_result_has_feature(const Mig2Engine *e, uint16_t id);
/* Final configuration, one entry per item the source proposed. */
size_t mig2_result_config_count(const Mig2Engine *e);
const Mig2ConfigResult *mig2_result_config(const Mig2Engine *e, size_t i);
/* Final config item called @name, or NULL when not proposed. */
const Mig2ConfigResult *mig2_result_config_find(const Mig2Engine *e,
                                                const char *name);
/* Per-device versions, in the source's manifest order. */
size_t mig2_result_device_count(const Mig2Engine *e);
const Mig2DeviceResult *mig2_result_device(const Mig2Engine *e, size_t i);
/* Subsections the source will leave out because the destination lacks them. */
size_t mig2_result_omitted_count(const Mig2Engine *e);
const Mig2OmittedSubsection *mig2_result_omitted(const Mig2Engine *e,
                                                 size_t i);
/* SHA-256 over preamble, SRC_HELLO and DST_HELLO (32 bytes). */
const uint8_t *mig2_result_transcript_hash(const Mig2Engine *e);
/* Session id chosen by the source (16 bytes). */
const uint8_t *mig2_result_session_id(const Mig2Engine *e);
/*
 * Per-session key for channel header MACs (32 bytes), after COMPLETE;
 * NULL for a one-way engine.
 */
const uint8_t *mig2_result_channel_key(const Mig2Engine *e);
/* Round trips from the source's first byte until it may send data. */
unsigned mig2_result_round_trips(const Mig2Engine *e);
/* Bytes this engine sent and received during the handshake. */
void mig2_result_bytes(const Mig2Engine *e, uint64_t *sent, uint64_t *recvd);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_ENGINE_H */
