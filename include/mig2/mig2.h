/*
 * libmig2 - protocol v2 live-migration handshake library
 *
 * Umbrella header.  Layers, bottom up:
 *   mig2/error.h    result codes, wire error codes, structured errors
 *   mig2/wire.h     wire constants and registries
 *   mig2/codec.h    bounded reader/writer, frames, TLVs
 *   mig2/profile.h  what an endpoint is and offers
 *   mig2/engine.h   the sans-I/O handshake engine and its results
 *   mig2/channel.h  session-bound extra channels: headers, admission
 *   mig2/manifest.h one-way v4 streams: MANIFEST, its check, DIGEST
 *   mig2/data.h     data-phase frame payloads: RAM, SYNC, DEVICE, END...
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_MIG2_H
#define MIG2_MIG2_H

#define MIG2_VERSION_MAJOR 0
#define MIG2_VERSION_MINOR 1
#define MIG2_VERSION_MICRO 0
#define MIG2_VERSION_STRING "0.1.0"

#include "mig2/error.h"
#include "mig2/wire.h"
#include "mig2/codec.h"
#include "mig2/profile.h"
#include "mig2/engine.h"
#include "mig2/channel.h"
#include "mig2/manifest.h"
#include "mig2/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version string, e.g. "0.1.0". */
const char *mig2_version(void);

/* Fill @buf with @len random bytes (GnuTLS nonce RNG): MIG2_OK or
 * MIG2_ERR_CRYPTO. */
int mig2_random(void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_MIG2_H */
