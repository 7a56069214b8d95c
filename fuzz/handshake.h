/*
 * mig2 fuzzing - the handshake harness shared by both roles' targets
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_FUZZ_HANDSHAKE_H
#define MIG2_FUZZ_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "mig2/engine.h"

/* Run one input (see handshake.c for its layout) against a @role engine. */
int fuzz_handshake_one(Mig2Role role, const uint8_t *data, size_t size);

#endif /* MIG2_FUZZ_HANDSHAKE_H */
