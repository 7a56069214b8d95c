/*
 * libFuzzer target error: the structured-error decoder (mig2_error_decode)
 * on an ERROR payload (spec 6.6), the whole input.
 *
 * Checks beyond the sanitizers:
 *  - decoding into a Mig2Error that already holds an error frees it (the
 *    API clears first; a leak shows under LeakSanitizer);
 *  - a payload that decodes re-encodes (mig2_error_encode) into a frame
 *    that decodes to the same code, flag, message and problems;
 *  - a failure is one of the codes engine.h documents for the decoder;
 *  - mig2_error_format renders any decoded error.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_str(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static void check_round_trip(const Mig2Error *err)
{
    Mig2Writer w;
    Mig2FrameHeader h;
    Mig2Error again = { 0 };
    size_t i;

    mig2_wr_init(&w, MIG2_FRAME_HEADER_LEN + MIG2_FRAME_MAX);
    mig2_error_encode(&w, err);
    FUZZ_CHECK(mig2_wr_error(&w) == MIG2_OK);
    FUZZ_CHECK(w.len >= MIG2_FRAME_HEADER_LEN);
    FUZZ_CHECK(mig2_frame_header_parse(w.buf, MIG2_FRAME_MAX, &h) ==
               MIG2_OK);
    FUZZ_CHECK(h.type == MIG2_FRAME_ERROR);
    FUZZ_CHECK(h.length == w.len - MIG2_FRAME_HEADER_LEN);
    FUZZ_CHECK(mig2_error_decode(w.buf + MIG2_FRAME_HEADER_LEN, h.length,
                                 &again) == MIG2_OK);
    FUZZ_CHECK(again.code == err->code);
    FUZZ_CHECK(again.retryable == err->retryable);
    FUZZ_CHECK(same_str(again.message, err->message));
    FUZZ_CHECK(again.n_problems == err->n_problems);
    for (i = 0; i < err->n_problems; i++) {
        const Mig2Problem *a = &err->problems[i], *b = &again.problems[i];

        FUZZ_CHECK(a->kind == b->kind);
        FUZZ_CHECK(same_str(a->path, b->path));
        FUZZ_CHECK(same_str(a->expected, b->expected));
        FUZZ_CHECK(same_str(a->actual, b->actual));
    }
    mig2_error_clear(&again);
    mig2_wr_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Mig2Error err = { 0 };
    char *text;
    int rc;

    /* Start from a non-empty error: decode must release it. */
    FUZZ_SETUP(mig2_error_decode((const uint8_t *)"\0\0\0\4\1", 5, &err) ==
               MIG2_OK);
    rc = mig2_error_decode(data, size, &err);
    FUZZ_CHECK(err.from_peer);
    if (rc == MIG2_OK) {
        FUZZ_CHECK(err.message != NULL && err.message[0] != '\0');
        FUZZ_CHECK(err.n_problems <= MIG2_MAX_PROBLEMS);
        check_round_trip(&err);
        (void)mig2_wire_error_name(err.code);
    } else {
        FUZZ_CHECK(rc == MIG2_ERR_TRUNCATED || rc == MIG2_ERR_TOO_LARGE ||
                   rc == MIG2_ERR_TRAILING || rc == MIG2_ERR_BAD_STRING ||
                   rc == MIG2_ERR_DUPLICATE);
    }
    /* What was decoded before a fault may be shown too. */
    text = mig2_error_format(&err);
    FUZZ_CHECK(text != NULL);
    free(text);
    mig2_error_clear(&err);
    return 0;
}
