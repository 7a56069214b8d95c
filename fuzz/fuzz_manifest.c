/*
 * libFuzzer target manifest: the one-way v4 MANIFEST decoder
 * (mig2_manifest_decode, spec 2.4) on the whole input as a MANIFEST frame,
 * header included, then the reader's check against each fuzz profile.
 *
 * Checks beyond the sanitizers:
 *  - a failure is one of the codes manifest.h documents for the decoder,
 *    and every code but TRUNCATED comes with an error to show;
 *  - a decoded manifest consumed no more than the input, and re-encodes
 *    into a frame that decodes to the same revision, stream id and
 *    profile encoding (encode(decode(x)) is a fixed point);
 *  - mig2_manifest_check against every fuzz profile returns a documented
 *    code, with problems exactly when it says incompatible.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode(const Mig2Manifest *m, Mig2Writer *w)
{
    mig2_wr_init(w, MIG2_FRAME_HEADER_LEN + MIG2_FRAME_MAX);
    mig2_manifest_encode(w, m, false);
    FUZZ_CHECK(mig2_wr_error(w) == MIG2_OK);
}

static void check_round_trip(const Mig2Manifest *m)
{
    Mig2Writer w1, w2;
    Mig2Manifest *again = NULL;
    Mig2Error err = { 0 };
    size_t used = 0;

    encode(m, &w1);
    FUZZ_CHECK(mig2_manifest_decode(w1.buf, w1.len, 0, &again, &used,
                                    &err) == MIG2_OK);
    FUZZ_CHECK(used == w1.len);
    FUZZ_CHECK(mig2_manifest_revision(again) == mig2_manifest_revision(m));
    FUZZ_CHECK(memcmp(mig2_manifest_stream_id(again),
                      mig2_manifest_stream_id(m), MIG2_NONCE_LEN) == 0);
    encode(again, &w2);
    FUZZ_CHECK(w1.len == w2.len && memcmp(w1.buf, w2.buf, w1.len) == 0);
    mig2_manifest_free(again);
    mig2_error_clear(&err);
    mig2_wr_free(&w1);
    mig2_wr_free(&w2);
}

static void check_against(const Mig2Manifest *m)
{
    unsigned i;

    for (i = 0; i < FUZZ_PROFILES; i++) {
        Mig2Profile *local = fuzz_profile(i);
        Mig2Error err = { 0 };
        char *text;
        int rc;

        FUZZ_SETUP(local != NULL);
        rc = mig2_manifest_check(m, local, &err);
        FUZZ_CHECK(rc == MIG2_OK || rc == MIG2_ERR_NO_REVISION ||
                   rc == MIG2_ERR_INCOMPATIBLE);
        FUZZ_CHECK((rc == MIG2_ERR_INCOMPATIBLE) == (err.n_problems > 0) ||
                   rc == MIG2_ERR_NO_REVISION);
        text = mig2_error_format(&err);
        free(text);
        mig2_error_clear(&err);
        mig2_profile_free(local);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    size_t used = 0;
    int rc = mig2_manifest_decode(data, size, 0, &m, &used, &err);

    if (rc == MIG2_OK) {
        FUZZ_CHECK(m != NULL && used <= size);
        check_round_trip(m);
        check_against(m);
        mig2_manifest_free(m);
    } else {
        FUZZ_CHECK(m == NULL);
        FUZZ_CHECK(rc == MIG2_ERR_TRUNCATED || rc == MIG2_ERR_TOO_LARGE ||
                   rc == MIG2_ERR_STATE || rc == MIG2_ERR_NO_REVISION ||
                   rc == MIG2_ERR_PROTOCOL ||
                   rc == MIG2_ERR_UNKNOWN_CRITICAL || rc == MIG2_ERR_NOMEM);
        if (rc != MIG2_ERR_TRUNCATED && rc != MIG2_ERR_NOMEM) {
            char *text = mig2_error_format(&err);

            FUZZ_CHECK(err.code != 0);
            free(text);
        }
    }
    mig2_error_clear(&err);
    return 0;
}
