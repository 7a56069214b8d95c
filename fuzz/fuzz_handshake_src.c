/*
 * libFuzzer target handshake_src: a source engine, after its preamble and
 * SRC_HELLO went out, fed what a destination sends (DST_HELLO, FINISHED,
 * READY, ERROR, grease, data-phase bytes).
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
    return fuzz_handshake_one(MIG2_ROLE_SOURCE, data, size);
}
