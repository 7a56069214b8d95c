/*
 * libmig2 - one-way v4 streams: MANIFEST, its check, DIGEST
 *
 * A file (or a one-way exec: pipe) has no destination to answer a
 * handshake.  Its writer states, in one MANIFEST frame, what a live source
 * would have offered in SRC_HELLO, with every choice already made: the
 * revision the stream follows, the features it uses, the one state
 * version of each device.  A reader checks that manifest against itself
 * before it reads any state and reports the same structured problems as a
 * live destination (docs/protocol.md section 2.5).
 *
 * The stream:  preamble (QEVM, 4)  MANIFEST  FINISHED  data phase  END
 *              DIGEST
 *
 * The handshake engine (engine.h, option "oneway") writes and reads the
 * head of the stream (preamble, MANIFEST, FINISHED) and yields the usual
 * results; this header holds the stateless pieces: the manifest codec,
 * the reader's check and the running stream digest.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_MANIFEST_H
#define MIG2_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mig2/codec.h"
#include "mig2/error.h"
#include "mig2/profile.h"
#include "mig2/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Mig2Manifest Mig2Manifest;

/*
 * The manifest a writer states for @profile, its source profile as it
 * would offer it in SRC_HELLO:
 *  - the stream follows the lowest revision of the profile's range;
 *  - features: the profile's, less those that need a live peer
 *    (return-path, multichannel, tls-binding, postcopy, switchover-ack),
 *    plus oneway-manifest; every one REQUIRED;
 *  - every device at the highest version it can save (min == max);
 *  - machine, page size, RAM blocks, subsections and config as given;
 *    destination policy in @profile is ignored.
 * @stream_id: the 16-byte NONCE, or NULL to draw fresh random bytes.
 * Returns NULL and sets *@status (when non-NULL) to MIG2_ERR_INVALID_ARG
 * (no profile or no machine), MIG2_ERR_NOMEM or MIG2_ERR_CRYPTO.
 */
Mig2Manifest *mig2_manifest_from_profile(const Mig2Profile *profile,
                                         const uint8_t *stream_id,
                                         int *status);
void mig2_manifest_free(Mig2Manifest *m);

/* The revision the stream follows (SELECTED_REVISION). */
uint16_t mig2_manifest_revision(const Mig2Manifest *m);
/* What the manifest states; read it with the profile.h getters. */
const Mig2Profile *mig2_manifest_profile(const Mig2Manifest *m);
/* The 16-byte stream id (NONCE). */
const uint8_t *mig2_manifest_stream_id(const Mig2Manifest *m);

/*
 * Append the MANIFEST frame (header included) to @w; with @grease, one
 * grease TLV and one grease feature id.  Check mig2_wr_error(@w).
 */
void mig2_manifest_encode(Mig2Writer *w, const Mig2Manifest *m, bool grease);

/*
 * Append the head of a one-way stream to @w: the preamble (QEVM, 4), the
 * MANIFEST frame and FINISHED over SHA-256(preamble || MANIFEST).
 * Returns MIG2_OK, the writer's error, or MIG2_ERR_CRYPTO.
 */
int mig2_manifest_write(Mig2Writer *w, const Mig2Manifest *m, bool grease);

/*
 * Decode the MANIFEST frame at the start of @buf (@len bytes, header
 * included).  On success *@out is the manifest (free it) and *@consumed
 * the frame's length; bytes after it are left alone.  Otherwise *@out is
 * NULL and:
 *   MIG2_ERR_TRUNCATED   @buf ends inside the frame (@err untouched)
 *   MIG2_ERR_TOO_LARGE   the header announces more than @max_payload
 *                        (0: MIG2_FRAME_MAX); @err: protocol, "frame"
 *   MIG2_ERR_STATE       the frame is not a MANIFEST; @err: protocol
 *   MIG2_ERR_NO_REVISION the stream follows a revision this library does
 *                        not implement; @err: unsupported-revision
 *   MIG2_ERR_PROTOCOL    malformed; @err names the place ("manifest/...")
 *   MIG2_ERR_UNKNOWN_CRITICAL  a critical TLV this library does not know
 *   MIG2_ERR_NOMEM
 * @err is cleared first, except for MIG2_ERR_TRUNCATED.
 */
int mig2_manifest_decode(const uint8_t *buf, size_t len, size_t max_payload,
                         Mig2Manifest **out, size_t *consumed,
                         Mig2Error *err);

/*
 * The reader's check of @m against @local, its destination profile: the
 * revision, then the destination checks of the live handshake (config,
 * REQUIRED features both ways, compatibility), every problem at once,
 * expected = @local, actual = the stream.  A one-way reader implements
 * oneway-manifest whether or not @local lists it.  @err is cleared first.
 * Returns MIG2_OK (no problem), MIG2_ERR_NO_REVISION (code
 * unsupported-revision), MIG2_ERR_INCOMPATIBLE (code incompatible) or
 * MIG2_ERR_NOMEM.
 */
int mig2_manifest_check(const Mig2Manifest *m, const Mig2Profile *local,
                        Mig2Error *err);

/*
 * The DIGEST of a one-way stream: SHA-256 over every byte from the first
 * preamble byte through the END frame.  Writer and reader feed it what
 * they write or read, in order.
 */
typedef struct Mig2Digest Mig2Digest;

/* NULL and *@status (when non-NULL) MIG2_ERR_NOMEM or MIG2_ERR_CRYPTO. */
Mig2Digest *mig2_digest_new(int *status);
void mig2_digest_free(Mig2Digest *d);
/* MIG2_OK or MIG2_ERR_CRYPTO. */
int mig2_digest_update(Mig2Digest *d, const void *p, size_t n);
/* The digest of everything so far; @d stays usable.  As update. */
int mig2_digest_value(Mig2Digest *d, uint8_t out[MIG2_HASH_LEN]);
/* Append a DIGEST frame carrying @value to @w. */
void mig2_digest_encode(Mig2Writer *w, const uint8_t value[MIG2_HASH_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_MANIFEST_H */
