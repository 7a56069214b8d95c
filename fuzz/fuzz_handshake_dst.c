/*
 * libFuzzer target handshake_dst: a destination engine fed what a source
 * sends (preamble, grease, SRC_HELLO, FINISHED, ERROR, data-phase
 * bytes).
 * Input layout and checks: handshake.c.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdint.h>

#include "handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_handshake_one(MIG2_ROLE_DESTINATION, data, size);
}
