/*
 * Unit tests for the error registry, ERROR and HELLO message encoding and
 * decoding (lib/error.c, lib/message.c) and the profile setters' error
 * returns (lib/profile.c).
 *
 * Which test reaches which local code (the codec itself is covered in
 * test_codec.c: test_truncated_getters, test_rd_end_trailing,
 * test_str16_bounds, test_str_read_rejects, test_writer_max_sticky,
 * test_frame_header_parse):
 *
 *   MIG2_ERR_TRUNCATED        test_src_truncated_tlv_header,
 *                             test_src_tlv_length_past_end,
 *                             test_src_features_not_multiple_of_3,
 *                             test_error_decode_malformed
 *   MIG2_ERR_TRAILING         test_src_nonce_bad_length,
 *                             test_src_config_other_errors,
 *                             test_error_decode_malformed
 *   MIG2_ERR_TOO_LARGE        test_src_config_other_errors (str16 > 4096),
 *                             test_error_decode_malformed
 *   MIG2_ERR_BAD_STRING       test_src_machine_bad_string,
 *                             test_profile_bad_strings,
 *                             test_error_decode_malformed
 *   MIG2_ERR_BAD_VALUE        test_src_page_size_bad, test_src_revisions_bad,
 *                             test_src_config_bool_2,
 *                             test_src_config_unknown_type,
 *                             test_src_device_vmin_over_vmax
 *   MIG2_ERR_DUPLICATE        test_src_duplicate_once_only,
 *                             test_src_feature_duplicate,
 *                             test_src_ram_block_duplicate,
 *                             test_profile_duplicates,
 *                             test_error_decode_malformed (two MESSAGEs)
 *   MIG2_ERR_MISSING          test_src_missing_mandatory,
 *                             test_src_first_tlv_not_revisions
 *   MIG2_ERR_UNKNOWN_CRITICAL test_src_unknown_critical_tlv,
 *                             test_src_device_unknown_critical_nested
 *   MIG2_ERR_LIMIT            test_profile_limits, test_src_features_limit,
 *                             test_src_subsection_errors (257)
 *   MIG2_ERR_INVALID_ARG      test_profile_revisions, test_profile_page_size,
 *                             test_profile_devices, test_profile_features,
 *                             test_profile_config_args
 *   MIG2_ERR_PROTOCOL         every test_src_* malformed case
 *
 * HELLO decode failures surface the local code as the "actual" string of
 * the one malformed problem (mig2_strerror(code)); test_status_registry
 * checks those texts are distinct, so matching the text matches the code.
 *
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"

#define WMAX (MIG2_FRAME_MAX + MIG2_FRAME_HEADER_LEN)

static const uint8_t test_nonce[MIG2_NONCE_LEN] = {
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
};

/* A heap string of @n copies of the @unit_len-byte @unit after @prefix. */
static char *repeat_str(const char *prefix, const char *unit, size_t n)
{
    size_t pl = strlen(prefix), ul = strlen(unit), i;
    char *s = malloc(pl + ul * n + 1);

    assert_non_null(s);
    memcpy(s, prefix, pl);
    for (i = 0; i < n; i++) {
        memcpy(s + pl + i * ul, unit, ul);
    }
    s[pl + ul * n] = '\0';
    return s;
}

/* ================================================================ */
/* Registry                                                          */
/* ================================================================ */

static const struct {
    int code;
    const char *name;
} status_expect[] = {
    { MIG2_OK, "MIG2_OK" },
    { MIG2_ERR_TRUNCATED, "MIG2_ERR_TRUNCATED" },
    { MIG2_ERR_TRAILING, "MIG2_ERR_TRAILING" },
    { MIG2_ERR_TOO_LARGE, "MIG2_ERR_TOO_LARGE" },
    { MIG2_ERR_BAD_STRING, "MIG2_ERR_BAD_STRING" },
    { MIG2_ERR_BAD_VALUE, "MIG2_ERR_BAD_VALUE" },
    { MIG2_ERR_DUPLICATE, "MIG2_ERR_DUPLICATE" },
    { MIG2_ERR_MISSING, "MIG2_ERR_MISSING" },
    { MIG2_ERR_UNKNOWN_CRITICAL, "MIG2_ERR_UNKNOWN_CRITICAL" },
    { MIG2_ERR_LIMIT, "MIG2_ERR_LIMIT" },
    { MIG2_ERR_INVALID_ARG, "MIG2_ERR_INVALID_ARG" },
    { MIG2_ERR_STATE, "MIG2_ERR_STATE" },
    { MIG2_ERR_NOMEM, "MIG2_ERR_NOMEM" },
    { MIG2_ERR_CRYPTO, "MIG2_ERR_CRYPTO" },
    { MIG2_ERR_NOT_MIGRATION, "MIG2_ERR_NOT_MIGRATION" },
    { MIG2_ERR_LEGACY_STREAM, "MIG2_ERR_LEGACY_STREAM" },
    { MIG2_ERR_BAD_VERSION, "MIG2_ERR_BAD_VERSION" },
    { MIG2_ERR_NO_REVISION, "MIG2_ERR_NO_REVISION" },
    { MIG2_ERR_INCOMPATIBLE, "MIG2_ERR_INCOMPATIBLE" },
    { MIG2_ERR_TRANSCRIPT, "MIG2_ERR_TRANSCRIPT" },
    { MIG2_ERR_PEER, "MIG2_ERR_PEER" },
    { MIG2_ERR_PROTOCOL, "MIG2_ERR_PROTOCOL" },
};

#define N_STATUS (sizeof(status_expect) / sizeof(status_expect[0]))

static void test_status_registry(void **state)
{
    static const int unknown[] = {
        -MIG2_STATUS_COUNT, 1, 22, -1000, INT_MIN, INT_MAX,
    };
    size_t i, j;

    (void)state;
    assert_int_equal(N_STATUS, MIG2_STATUS_COUNT);
    for (i = 0; i < N_STATUS; i++) {
        /* The codes are 0, -1, ... -(COUNT - 1) without gaps. */
        assert_int_equal(status_expect[i].code, -(int)i);
        assert_string_equal(mig2_status_name(status_expect[i].code),
                            status_expect[i].name);
        assert_non_null(mig2_strerror(status_expect[i].code));
        assert_true(strlen(mig2_strerror(status_expect[i].code)) > 0);
        assert_string_not_equal(mig2_strerror(status_expect[i].code),
                                "unknown error");
    }
    for (i = 0; i < N_STATUS; i++) {
        for (j = i + 1; j < N_STATUS; j++) {
            assert_string_not_equal(mig2_status_name(-(int)i),
                                    mig2_status_name(-(int)j));
            assert_string_not_equal(mig2_strerror(-(int)i),
                                    mig2_strerror(-(int)j));
        }
    }
    for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(mig2_status_name(unknown[i]), "unknown");
        assert_string_equal(mig2_strerror(unknown[i]), "unknown error");
    }
}

static void test_status_fatal(void **state)
{
    static const int not_fatal[] = {
        MIG2_OK, MIG2_ERR_TRUNCATED, MIG2_ERR_TRAILING, MIG2_ERR_TOO_LARGE,
        MIG2_ERR_BAD_STRING, MIG2_ERR_BAD_VALUE, MIG2_ERR_DUPLICATE,
        MIG2_ERR_MISSING, MIG2_ERR_LIMIT, MIG2_ERR_INVALID_ARG,
        MIG2_ERR_STATE,
    };
    static const int fatal[] = {
        MIG2_ERR_UNKNOWN_CRITICAL, MIG2_ERR_NOMEM, MIG2_ERR_CRYPTO,
        MIG2_ERR_NOT_MIGRATION, MIG2_ERR_LEGACY_STREAM,
        MIG2_ERR_BAD_VERSION, MIG2_ERR_NO_REVISION, MIG2_ERR_INCOMPATIBLE,
        MIG2_ERR_TRANSCRIPT, MIG2_ERR_PEER, MIG2_ERR_PROTOCOL,
    };
    size_t i;

    (void)state;
    assert_int_equal(sizeof(not_fatal) / sizeof(not_fatal[0]) +
                     sizeof(fatal) / sizeof(fatal[0]), MIG2_STATUS_COUNT);
    for (i = 0; i < sizeof(not_fatal) / sizeof(not_fatal[0]); i++) {
        assert_false(mig2_status_is_fatal(not_fatal[i]));
    }
    for (i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        assert_true(mig2_status_is_fatal(fatal[i]));
    }
    /* Unknown negative codes are fatal, unknown positive ones are not. */
    assert_true(mig2_status_is_fatal(-MIG2_STATUS_COUNT));
    assert_true(mig2_status_is_fatal(INT_MIN));
    assert_false(mig2_status_is_fatal(7));
}

static void test_wire_error_names(void **state)
{
    static const char *const names[] = {
        NULL, "protocol", "unsupported-revision", "unknown-critical",
        "incompatible", "transcript", "internal", "cancelled", "busy",
        "timeout", "load-failed", "tls-required",
    };
    static const uint32_t unknown[] = { 0, 12, 13, 255, 0x10000, UINT32_MAX };
    size_t i, j;

    (void)state;
    assert_int_equal(MIG2_WIRE_LOAD_FAILED, 10);
    assert_int_equal(MIG2_WIRE_TLS_REQUIRED, 11);
    for (i = 1; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_string_equal(mig2_wire_error_name((uint32_t)i), names[i]);
        for (j = 1; j < i; j++) {
            assert_string_not_equal(mig2_wire_error_name((uint32_t)i),
                                    mig2_wire_error_name((uint32_t)j));
        }
    }
    for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(mig2_wire_error_name(unknown[i]), "unknown");
    }
}

static void test_problem_kind_names(void **state)
{
    static const char *const names[] = {
        "other", "revision", "feature-required", "machine", "page-size",
        "ram-block-missing", "ram-block-unexpected", "ram-block-size",
        "ram-block-page-size", "device-missing", "device-unexpected",
        "device-version", "subsection-unknown", "config-unknown",
        "config-refused", "config-clamped", "config-type", "malformed",
        "unknown-critical", "transcript", "choice",
    };
    static const unsigned unknown[] = { 21, 22, 0x1234, 0xffff, UINT_MAX };
    size_t i, j;

    (void)state;
    assert_int_equal(sizeof(names) / sizeof(names[0]), MIG2_PROB_KIND_COUNT);
    assert_int_equal(MIG2_PROB_CHOICE, MIG2_PROB_KIND_COUNT - 1);
    for (i = 0; i < MIG2_PROB_KIND_COUNT; i++) {
        assert_string_equal(mig2_problem_kind_name((unsigned)i), names[i]);
        for (j = 0; j < i; j++) {
            assert_string_not_equal(mig2_problem_kind_name((unsigned)i),
                                    mig2_problem_kind_name((unsigned)j));
        }
    }
    for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(mig2_problem_kind_name(unknown[i]), "unknown");
    }
}

static void test_error_format(void **state)
{
    static const char exp[] =
        "local error (incompatible, retryable): 3 problems\n"
        "  device-version: devices/timer@0/version: expected 1..2, "
        "got 3..4\n"
        "  ram-block-size: ram-blocks/pc.ram: expected 4096, got 8192\n"
        "  kind 999: x/y: expected e\xc3\xa9, got a";
    Mig2Error err = { 0 };
    char *s;
    size_t i;

    (void)state;
    assert_int_equal(mig2_error_set(&err, MIG2_WIRE_INCOMPATIBLE, true,
                                    "%d problems", 3), MIG2_OK);
    assert_int_equal(mig2_error_add(&err, MIG2_PROB_DEVICE_VERSION,
                                    "devices/timer@0/version", "1..2",
                                    "3..4"), MIG2_OK);
    assert_int_equal(mig2_error_addf(&err, MIG2_PROB_RAM_BLOCK_SIZE,
                                     "ram-blocks/%s", "4096", "8192",
                                     "pc.ram"), MIG2_OK);
    assert_int_equal(mig2_error_add(&err, 999, "x/y", "e\xc3\xa9", "a"),
                     MIG2_OK);
    s = mig2_error_format(&err);
    assert_non_null(s);
    assert_string_equal(s, exp);
    for (i = 0; i < err.n_problems; i++) {
        assert_non_null(strstr(s, err.problems[i].path));
        assert_non_null(strstr(s, err.problems[i].expected));
        assert_non_null(strstr(s, err.problems[i].actual));
    }
    free(s);

    /* From the peer, not retryable, no problems. */
    mig2_error_clear(&err);
    assert_int_equal(mig2_error_set(&err, MIG2_WIRE_BUSY, false, "later"),
                     MIG2_OK);
    err.from_peer = true;
    s = mig2_error_format(&err);
    assert_string_equal(s, "peer error (busy): later");
    free(s);
    mig2_error_clear(&err);
    assert_null(err.message);
    assert_int_equal(err.n_problems, 0);
}

static void test_error_add_drops_beyond_max(void **state)
{
    Mig2Error err = { 0 };
    const char *tail = "\n  ... and 3 more problems";
    char *s;
    size_t i;

    (void)state;
    mig2_error_set(&err, MIG2_WIRE_INCOMPATIBLE, false, "many");
    for (i = 0; i < MIG2_MAX_PROBLEMS + 3; i++) {
        assert_int_equal(mig2_error_addf(&err, MIG2_PROB_DEVICE_MISSING,
                                         "devices/d%zu@0", "present",
                                         "absent", i), MIG2_OK);
    }
    assert_int_equal(err.n_problems, MIG2_MAX_PROBLEMS);
    assert_int_equal(err.n_dropped, 3);
    assert_string_equal(err.problems[MIG2_MAX_PROBLEMS - 1].path,
                        "devices/d4095@0");
    s = mig2_error_format(&err);
    assert_non_null(s);
    assert_true(strlen(s) > strlen(tail));
    assert_string_equal(s + strlen(s) - strlen(tail), tail);
    free(s);
    mig2_error_clear(&err);
}

/* ================================================================ */
/* ERROR frames                                                      */
/* ================================================================ */

/* Encode @err into @w and check the frame header around it. */
static void encode_error(const Mig2Error *err, Mig2Writer *w)
{
    Mig2FrameHeader fh;

    mig2_wr_init(w, WMAX);
    mig2_error_encode(w, err);
    assert_int_equal(mig2_wr_error(w), MIG2_OK);
    assert_true(w->len >= MIG2_FRAME_HEADER_LEN + 5);
    assert_int_equal(mig2_frame_header_parse(w->buf, MIG2_FRAME_MAX, &fh),
                     MIG2_OK);
    assert_int_equal(fh.type, MIG2_FRAME_ERROR);
    assert_int_equal(fh.flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(fh.length, w->len - MIG2_FRAME_HEADER_LEN);
}

/* Decode the payload of the ERROR frame in @w into @out. */
static int decode_error_frame(const Mig2Writer *w, Mig2Error *out)
{
    memset(out, 0, sizeof(*out));
    return mig2_error_decode(w->buf + MIG2_FRAME_HEADER_LEN,
                             w->len - MIG2_FRAME_HEADER_LEN, out);
}

static void test_error_encode_exact_bytes(void **state)
{
    static const uint8_t exp[] = {
        0x00, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x00, 0x26,
        0x00, 0x00, 0x00, 0x08, 0x01,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x0a,
        0x00, 0x08, 'b', 'u', 's', 'y', ' ', 'n', 'o', 'w',
        0x00, 0x02, 0x00, 0x00, 0x00, 0x0b,
        0x00, 0x11, 0x00, 0x01, 'p', 0x00, 0x01, 'e', 0x00, 0x01, 'a',
    };
    Mig2Error err = { 0 };
    Mig2Writer w;

    (void)state;
    mig2_error_set(&err, MIG2_WIRE_BUSY, true, "busy now");
    mig2_error_add(&err, MIG2_PROB_MALFORMED, "p", "e", "a");
    encode_error(&err, &w);
    assert_int_equal(w.len, sizeof(exp));
    assert_memory_equal(w.buf, exp, sizeof(exp));
    mig2_wr_free(&w);
    mig2_error_clear(&err);
}

static void test_error_round_trip(void **state)
{
    Mig2Error err = { 0 }, dec;
    Mig2Writer w;
    size_t i;

    (void)state;
    mig2_error_set(&err, MIG2_WIRE_INCOMPATIBLE, false,
                   "compat: \xc3\xbcn\xc3\xaf" "code \xe2\x82\xac");
    for (i = 0; i < 100; i++) {
        /* Kinds cycle through every registered one and a few unknown. */
        assert_int_equal(mig2_error_addf(&err, (unsigned)(i % 25),
                                         "devices/dev%zu@%zu/version",
                                         "1..2", "a-\xe2\x82\xac-x", i,
                                         i * 7), MIG2_OK);
    }
    encode_error(&err, &w);
    /* Code and flags right after the header. */
    assert_memory_equal(w.buf + 8, "\x00\x00\x00\x04\x00", 5);
    assert_int_equal(decode_error_frame(&w, &dec), MIG2_OK);
    assert_true(dec.from_peer);
    assert_int_equal(dec.code, MIG2_WIRE_INCOMPATIBLE);
    assert_false(dec.retryable);
    assert_string_equal(dec.message, err.message);
    assert_int_equal(dec.n_problems, 100);
    assert_int_equal(dec.n_dropped, 0);
    for (i = 0; i < 100; i++) {
        assert_int_equal(dec.problems[i].kind, i % 25);
        assert_string_equal(dec.problems[i].path, err.problems[i].path);
        assert_string_equal(dec.problems[i].expected, "1..2");
        assert_string_equal(dec.problems[i].actual, "a-\xe2\x82\xac-x");
    }
    mig2_error_clear(&dec);
    mig2_wr_free(&w);
    mig2_error_clear(&err);

    /* Retryable, unregistered code, no problems. */
    mig2_error_set(&err, 0x12345678, true, "x");
    encode_error(&err, &w);
    assert_memory_equal(w.buf + 8, "\x12\x34\x56\x78\x01", 5);
    assert_int_equal(decode_error_frame(&w, &dec), MIG2_OK);
    assert_int_equal(dec.code, 0x12345678);
    assert_true(dec.retryable);
    assert_string_equal(dec.message, "x");
    assert_int_equal(dec.n_problems, 0);
    mig2_error_clear(&dec);
    mig2_wr_free(&w);
    mig2_error_clear(&err);
}

/* Encode @err, decode it and hand back the decoded form. */
static void error_through_wire(const Mig2Error *err, Mig2Error *dec)
{
    Mig2Writer w;

    encode_error(err, &w);
    assert_int_equal(decode_error_frame(&w, dec), MIG2_OK);
    mig2_wr_free(&w);
}

static void test_error_encode_truncates_utf8(void **state)
{
    /* 2 + 1666 * 3 = 5000 bytes; 4096 falls inside a 3-byte char. */
    char *msg = repeat_str("ab", "\xe2\x82\xac", 1666);
    /* 1 + 550 * 2 = 1101 bytes; 1024 falls inside a 2-byte char. */
    char *path = repeat_str("x", "\xc3\xa9", 550);
    char *expected = repeat_str("", "e", 3000);
    /* 1 + 300 * 4 = 1201 bytes; 1024 is the 4th byte of a char. */
    char *actual = repeat_str("a", "\xf0\x9f\x98\x80", 300);
    Mig2Error err = { 0 }, dec;

    (void)state;
    assert_int_equal(strlen(msg), 5000);
    mig2_error_set(&err, MIG2_WIRE_INCOMPATIBLE, false, "%s", msg);
    mig2_error_add(&err, MIG2_PROB_OTHER, path, expected, actual);
    /* Empty and invalid strings. */
    mig2_error_add(&err, MIG2_PROB_OTHER, "", "ok\xff", "\xff\xfe");
    error_through_wire(&err, &dec);

    assert_int_equal(strlen(dec.message), 4094);
    assert_memory_equal(dec.message, msg, 4094);
    assert_true(mig2_utf8_valid(dec.message, 4094));
    assert_int_equal(dec.n_problems, 2);
    assert_int_equal(strlen(dec.problems[0].path), 1023);
    assert_memory_equal(dec.problems[0].path, path, 1023);
    assert_int_equal(strlen(dec.problems[0].expected), 1024);
    assert_int_equal(strlen(dec.problems[0].actual), 1021);
    assert_memory_equal(dec.problems[0].actual, actual, 1021);
    assert_string_equal(dec.problems[1].path, "-");
    assert_string_equal(dec.problems[1].expected, "ok");
    assert_string_equal(dec.problems[1].actual, "-");
    mig2_error_clear(&dec);
    mig2_error_clear(&err);

    /* Exactly 4096 bytes stay whole; 4097 ASCII bytes lose one. */
    free(msg);
    msg = repeat_str("", "m", MIG2_MAX_STR16);
    mig2_error_set(&err, MIG2_WIRE_INTERNAL, false, "%s", msg);
    error_through_wire(&err, &dec);
    assert_string_equal(dec.message, msg);
    mig2_error_clear(&dec);
    mig2_error_set(&err, MIG2_WIRE_INTERNAL, false, "%sz", msg);
    error_through_wire(&err, &dec);
    assert_string_equal(dec.message, msg);
    mig2_error_clear(&dec);

    /* An empty message is replaced by the code's name. */
    mig2_error_set(&err, MIG2_WIRE_TIMEOUT, false, "%s", "");
    error_through_wire(&err, &dec);
    assert_string_equal(dec.message, "timeout");
    mig2_error_clear(&dec);
    mig2_error_clear(&err);

    free(msg);
    free(path);
    free(expected);
    free(actual);
}

/* Start an ERROR payload (no frame header): code and flags. */
static void err_head(Mig2Writer *w, uint32_t code, uint8_t flags)
{
    mig2_wr_init(w, WMAX);
    mig2_wr_u32(w, code);
    mig2_wr_u8(w, flags);
}

/* A TLV with raw @n bytes of value. */
static void put_tlv(Mig2Writer *w, uint16_t type, bool crit, const void *v,
                    size_t n)
{
    size_t m = mig2_wr_tlv_begin(w, type, crit);

    mig2_wr_bytes(w, v, n);
    mig2_wr_tlv_end(w, m);
}

/* A PROBLEM TLV, strings written as given (str16, no bound). */
static void put_problem(Mig2Writer *w, uint16_t kind, const char *path,
                        const char *expected, const char *actual)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_PROBLEM, false);

    mig2_wr_u16(w, kind);
    mig2_wr_str16(w, path, UINT16_MAX);
    mig2_wr_str16(w, expected, UINT16_MAX);
    mig2_wr_str16(w, actual, UINT16_MAX);
    mig2_wr_tlv_end(w, m);
}

/* Decode the payload in @w and check the result is @rc; frees @w. */
static void expect_error_decode(Mig2Writer *w, int rc)
{
    Mig2Error dec;

    assert_int_equal(mig2_wr_error(w), MIG2_OK);
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(mig2_error_decode(w->buf, w->len, &dec), rc);
    mig2_error_clear(&dec);
    mig2_wr_free(w);
}

static void test_error_decode_skips_unknown_tlvs(void **state)
{
    Mig2Writer w;
    Mig2Error dec;
    char *s;

    (void)state;
    err_head(&w, MIG2_WIRE_INCOMPATIBLE, 0);
    put_tlv(&w, 0x7777, false, "junk", 4);
    put_tlv(&w, 0x0777, true, "critical junk", 13);
    put_tlv(&w, 0x0a0a, false, NULL, 0);
    put_tlv(&w, MIG2_TLV_MESSAGE, false, "\x00\x02hi", 4);
    put_tlv(&w, 0x0003, true, "?", 1);
    put_problem(&w, 0x1234, "p", "e", "a");
    put_tlv(&w, 0x7fff, true, NULL, 0);
    put_problem(&w, MIG2_PROB_MACHINE, "machine", "pc", "q35");
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);

    memset(&dec, 0, sizeof(dec));
    assert_int_equal(mig2_error_decode(w.buf, w.len, &dec), MIG2_OK);
    assert_true(dec.from_peer);
    assert_int_equal(dec.code, MIG2_WIRE_INCOMPATIBLE);
    assert_false(dec.retryable);
    assert_string_equal(dec.message, "hi");
    assert_int_equal(dec.n_problems, 2);
    /* An unknown kind is kept as its number. */
    assert_int_equal(dec.problems[0].kind, 0x1234);
    assert_string_equal(dec.problems[0].path, "p");
    assert_int_equal(dec.problems[1].kind, MIG2_PROB_MACHINE);
    assert_string_equal(dec.problems[1].actual, "q35");
    s = mig2_error_format(&dec);
    assert_non_null(strstr(s, "\n  kind 4660: p: expected e, got a"));
    free(s);
    mig2_error_clear(&dec);
    mig2_wr_free(&w);
}

static void test_error_decode_defaults(void **state)
{
    Mig2Writer w;
    Mig2Error dec;

    (void)state;
    /* No MESSAGE: the code's name; flag bits other than 0 ignored. */
    err_head(&w, MIG2_WIRE_BUSY, 0xff);
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(mig2_error_decode(w.buf, w.len, &dec), MIG2_OK);
    assert_int_equal(dec.code, MIG2_WIRE_BUSY);
    assert_true(dec.retryable);
    assert_string_equal(dec.message, "busy");
    assert_int_equal(dec.n_problems, 0);
    mig2_error_clear(&dec);
    mig2_wr_free(&w);

    err_head(&w, 77, 0xfe);
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(mig2_error_decode(w.buf, w.len, &dec), MIG2_OK);
    assert_false(dec.retryable);
    assert_string_equal(dec.message, "error code 77");
    mig2_error_clear(&dec);
    mig2_wr_free(&w);
}

static void test_error_decode_malformed(void **state)
{
    static const uint8_t head[] = { 0, 0, 0, 4, 0 };
    char *big = repeat_str("", "m", MIG2_MAX_STR16 + 1);
    char *long_path = repeat_str("", "p", MIG2_MAX_PROBLEM_STR + 1);
    Mig2Error dec;
    Mig2Writer w;
    size_t n, m;

    (void)state;
    /* Shorter than code + flags. */
    for (n = 0; n < sizeof(head); n++) {
        memset(&dec, 0, sizeof(dec));
        assert_int_equal(mig2_error_decode(head, n, &dec),
                         MIG2_ERR_TRUNCATED);
        mig2_error_clear(&dec);
    }
    /* TLV header cut short. */
    err_head(&w, 4, 0);
    mig2_wr_bytes(&w, "\x00\x01\x00", 3);
    expect_error_decode(&w, MIG2_ERR_TRUNCATED);
    /* TLV length past the end. */
    err_head(&w, 4, 0);
    mig2_wr_bytes(&w, "\x00\x01\x00\x00\x00\x0a\x00\x02hi", 10);
    expect_error_decode(&w, MIG2_ERR_TRUNCATED);
    /* MESSAGE: empty, bad UTF-8, over 4096, trailing byte, twice. */
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_MESSAGE, false, "\x00\x00", 2);
    expect_error_decode(&w, MIG2_ERR_BAD_STRING);
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_MESSAGE, false, "\x00\x02\xc3\x28", 4);
    expect_error_decode(&w, MIG2_ERR_BAD_STRING);
    err_head(&w, 4, 0);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_MESSAGE, false);
    mig2_wr_str16(&w, big, UINT16_MAX);
    mig2_wr_tlv_end(&w, m);
    expect_error_decode(&w, MIG2_ERR_TOO_LARGE);
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_MESSAGE, false, "\x00\x01" "ax", 4);
    expect_error_decode(&w, MIG2_ERR_TRAILING);
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_MESSAGE, false, "\x00\x01" "a", 3);
    put_tlv(&w, MIG2_TLV_MESSAGE, false, "\x00\x01" "b", 3);
    expect_error_decode(&w, MIG2_ERR_DUPLICATE);
    /* PROBLEM: too short, missing actual, oversized path, trailing. */
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_PROBLEM, false, "\x00", 1);
    expect_error_decode(&w, MIG2_ERR_TRUNCATED);
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_PROBLEM, false, "\x00\x01\x00\x01p\x00\x01" "e", 8);
    expect_error_decode(&w, MIG2_ERR_TRUNCATED);
    err_head(&w, 4, 0);
    put_problem(&w, 1, long_path, "e", "a");
    expect_error_decode(&w, MIG2_ERR_TOO_LARGE);
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_PROBLEM, false,
            "\x00\x01\x00\x01p\x00\x01" "e\x00\x01" "a!", 12);
    expect_error_decode(&w, MIG2_ERR_TRAILING);
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_PROBLEM, false,
            "\x00\x01\x00\x01p\x00\x04" "e\xed\xa0\x80\x00\x01" "a", 14);
    expect_error_decode(&w, MIG2_ERR_BAD_STRING);
    /* The same PROBLEM without the trailing byte is fine. */
    err_head(&w, 4, 0);
    put_tlv(&w, MIG2_TLV_PROBLEM, true,
            "\x00\x01\x00\x01p\x00\x01" "e\x00\x01" "a", 11);
    expect_error_decode(&w, MIG2_OK);
    free(big);
    free(long_path);
}

static void test_error_decode_many_problems(void **state)
{
    Mig2Writer w;
    Mig2Error dec;
    char path[32];
    size_t i;

    (void)state;
    err_head(&w, MIG2_WIRE_INCOMPATIBLE, 0);
    for (i = 0; i < MIG2_MAX_PROBLEMS + 4; i++) {
        snprintf(path, sizeof(path), "d/%zu", i);
        put_problem(&w, MIG2_PROB_DEVICE_MISSING, path, "present", "absent");
    }
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(mig2_error_decode(w.buf, w.len, &dec), MIG2_OK);
    assert_int_equal(dec.n_problems, MIG2_MAX_PROBLEMS);
    assert_int_equal(dec.n_dropped, 4);
    assert_string_equal(dec.problems[0].path, "d/0");
    assert_string_equal(dec.problems[MIG2_MAX_PROBLEMS - 1].path, "d/4095");
    mig2_error_clear(&dec);
    mig2_wr_free(&w);
}

/* ================================================================ */
/* HELLO round trips                                                 */
/* ================================================================ */

static Mig2Profile *rich_profile(bool with_config)
{
    Mig2Profile *p = mig2_profile_new();
    int d;

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_revisions(p, 1, 2), MIG2_OK);
    assert_int_equal(mig2_profile_set_build(p, "qemu 9.1.0 \xe2\x80\x94 "
                                            "t\xc3\xa9st"), MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(p, "pc-q35-9.1"), MIG2_OK);
    assert_int_equal(mig2_profile_set_page_size(p, 16384), MIG2_OK);

    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH, true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_MULTICHANNEL,
                                              false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE, true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, 0x1234, false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, 0xffff, true), MIG2_OK);

    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 4ULL << 30,
                                                4096), MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "vga.vram", 0, 512),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "/rom@etc/acpi/tables",
                                                UINT64_MAX, 1U << 30),
                     MIG2_OK);

    d = mig2_profile_add_device(p, "timer", 0, 1, 3);
    assert_int_equal(d, 0);
    assert_int_equal(mig2_profile_add_subsection(p, d, "timer/hpet", true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_subsection(p, d, "timer/rtc", false),
                     MIG2_OK);
    d = mig2_profile_add_device(p, "virtio-net", 1, 5, 5);
    assert_int_equal(d, 1);
    d = mig2_profile_add_device(p, "e1000", UINT32_MAX, 0, UINT32_MAX);
    assert_int_equal(d, 2);
    assert_int_equal(mig2_profile_add_subsection(p, d, "e1000/full_mac",
                                                 false), MIG2_OK);
    assert_int_equal(mig2_profile_add_subsection(p, d, "e1000/tx_tso", true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_subsection(p, d, "\xc3\xa9t\xc3\xa9",
                                                 true), MIG2_OK);

    if (with_config) {
        assert_int_equal(mig2_profile_propose_bool(p, "multifd", true,
                                                   MIG2_CONFIG_REQUIRED),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_bool(p, "events", false, 0),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_u64(p, "downtime-limit",
                                                  UINT64_MAX,
                                                  MIG2_CONFIG_REQUIRED),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_u64(p, "multifd-channels", 0,
                                                  0), MIG2_OK);
        assert_int_equal(mig2_profile_propose_str(p, "multifd-compression",
                                                  "zstd",
                                                  MIG2_CONFIG_REQUIRED),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_str(p, "x-unregistered",
                                                  "\xc3\xbc", 0), MIG2_OK);
    }
    return p;
}

static void assert_profiles_equal(const Mig2Profile *a, const Mig2Profile *b)
{
    size_t i, j;

    assert_int_equal(a->rev_min, b->rev_min);
    assert_int_equal(a->rev_max, b->rev_max);
    assert_string_equal(a->build, b->build);
    assert_string_equal(a->machine, b->machine);
    assert_int_equal(a->page_size, b->page_size);

    assert_int_equal(a->n_features, b->n_features);
    for (i = 0; i < a->n_features; i++) {
        assert_int_equal(a->features[i].id, b->features[i].id);
        assert_true(a->features[i].required == b->features[i].required);
    }

    assert_int_equal(a->n_ram, b->n_ram);
    for (i = 0; i < a->n_ram; i++) {
        assert_string_equal(a->ram[i].name, b->ram[i].name);
        assert_true(a->ram[i].size == b->ram[i].size);
        assert_int_equal(a->ram[i].page_size, b->ram[i].page_size);
    }

    assert_int_equal(a->n_devices, b->n_devices);
    for (i = 0; i < a->n_devices; i++) {
        const Mig2Device *da = &a->devices[i], *db = &b->devices[i];

        assert_string_equal(da->id, db->id);
        assert_int_equal(da->instance, db->instance);
        assert_int_equal(da->vmin, db->vmin);
        assert_int_equal(da->vmax, db->vmax);
        assert_int_equal(da->n_subs, db->n_subs);
        for (j = 0; j < da->n_subs; j++) {
            assert_string_equal(da->subs[j].name, db->subs[j].name);
            assert_true(da->subs[j].needed == db->subs[j].needed);
        }
    }

    assert_int_equal(a->n_config, b->n_config);
    for (i = 0; i < a->n_config; i++) {
        const Mig2ConfigItem *ia = &a->config[i], *ib = &b->config[i];

        assert_string_equal(ia->name, ib->name);
        assert_int_equal(ia->flags, ib->flags);
        assert_int_equal(ia->v.type, ib->v.type);
        switch (ia->v.type) {
        case MIG2_CFG_BOOL:
            assert_true(ia->v.b == ib->v.b);
            break;
        case MIG2_CFG_U64:
            assert_true(ia->v.u == ib->v.u);
            break;
        case MIG2_CFG_STR:
            assert_string_equal(ia->v.s, ib->v.s);
            break;
        }
    }
}

/* Encode @h as a @type frame into @w (no grease unless asked). */
static void encode_hello(const Mig2Hello *h, uint16_t type, bool grease,
                         uint32_t seed, Mig2Writer *w)
{
    Mig2FrameHeader fh;

    mig2_wr_init(w, WMAX);
    mig2_hello_encode(w, type, h, grease, seed);
    assert_int_equal(mig2_wr_error(w), MIG2_OK);
    assert_int_equal(mig2_frame_header_parse(w->buf, MIG2_FRAME_MAX, &fh),
                     MIG2_OK);
    assert_int_equal(fh.type, type);
    assert_int_equal(fh.flags, MIG2_FRAME_FLAG_CRITICAL);
    assert_int_equal(fh.length, w->len - MIG2_FRAME_HEADER_LEN);
}

static int decode_hello_frame(const Mig2Writer *w, uint16_t type,
                              Mig2Hello *h, Mig2Error *err)
{
    memset(err, 0, sizeof(*err));
    return mig2_hello_decode(w->buf + MIG2_FRAME_HEADER_LEN,
                             w->len - MIG2_FRAME_HEADER_LEN, type, h, err);
}

static void test_hello_round_trip_src(void **state)
{
    Mig2Hello h = { 0 }, dec;
    Mig2Error err;
    Mig2Writer w;

    (void)state;
    h.profile = rich_profile(true);
    memcpy(h.nonce, test_nonce, sizeof(h.nonce));
    encode_hello(&h, MIG2_FRAME_SRC_HELLO, false, 0, &w);
    /* REVISIONS is the first TLV, critical, 1..2. */
    assert_memory_equal(w.buf + 8, "\x80\x01\x00\x00\x00\x04\x00\x01\x00\x02",
                        10);

    assert_int_equal(decode_hello_frame(&w, MIG2_FRAME_SRC_HELLO, &dec, &err),
                     MIG2_OK);
    assert_int_equal(err.n_problems, 0);
    assert_null(err.message);
    assert_memory_equal(dec.nonce, test_nonce, MIG2_NONCE_LEN);
    assert_int_equal(dec.n_outcomes, 0);
    assert_profiles_equal(h.profile, dec.profile);
    /* Sanity: the comparison saw the rich content. */
    assert_int_equal(dec.profile->n_features, 5);
    assert_int_equal(dec.profile->n_ram, 3);
    assert_int_equal(dec.profile->n_devices, 3);
    assert_int_equal(dec.profile->devices[2].n_subs, 3);
    assert_int_equal(dec.profile->n_config, 6);
    assert_int_equal(dec.profile->config[0].flags, MIG2_CONFIG_REQUIRED);
    assert_int_equal(dec.profile->config[1].flags, 0);
    mig2_hello_clear(&dec);
    mig2_error_clear(&err);
    mig2_wr_free(&w);
    mig2_profile_free(h.profile);
}

static void test_hello_round_trip_grease(void **state)
{
    static const uint32_t seeds[] = {
        0, 1, 7, 0x3f, 0x40, 0x3c0, 0x1c00, 0xdeadbeef, UINT32_MAX,
    };
    Mig2Hello h = { 0 }, dec;
    Mig2Error err;
    Mig2Writer w;
    Mig2Reader rd, v;
    uint16_t type, id;
    uint8_t flags;
    bool crit;
    size_t i, grease_tlvs, grease_ids, ids;

    (void)state;
    h.profile = rich_profile(true);
    memcpy(h.nonce, test_nonce, sizeof(h.nonce));
    for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        encode_hello(&h, MIG2_FRAME_SRC_HELLO, true, seeds[i], &w);
        /* The payload really carries one grease TLV and one grease id. */
        grease_tlvs = grease_ids = ids = 0;
        mig2_rd_init(&rd, w.buf + 8, w.len - 8);
        while (mig2_rd_left(&rd)) {
            assert_int_equal(mig2_rd_tlv(&rd, &type, &crit, &v), MIG2_OK);
            if (mig2_is_grease(type)) {
                assert_false(crit);
                assert_true(mig2_rd_left(&v) <= 15);
                grease_tlvs++;
            }
            while (type == MIG2_TLV_FEATURES && mig2_rd_left(&v)) {
                assert_int_equal(mig2_rd_u16(&v, &id), MIG2_OK);
                assert_int_equal(mig2_rd_u8(&v, &flags), MIG2_OK);
                grease_ids += mig2_is_grease(id);
                ids++;
            }
        }
        assert_int_equal(grease_tlvs, 1);
        assert_int_equal(grease_ids, 1);
        assert_int_equal(ids, h.profile->n_features + 1);

        assert_int_equal(decode_hello_frame(&w, MIG2_FRAME_SRC_HELLO, &dec,
                                            &err), MIG2_OK);
        assert_profiles_equal(h.profile, dec.profile);
        mig2_hello_clear(&dec);
        mig2_error_clear(&err);
        mig2_wr_free(&w);
    }
    mig2_profile_free(h.profile);
}

static void test_hello_round_trip_dst(void **state)
{
    Mig2ConfigOutcome outs[] = {
        { (char *)"multifd", { .type = MIG2_CFG_BOOL, .b = true },
          MIG2_CFG_ACCEPTED },
        { (char *)"downtime-limit", { .type = MIG2_CFG_U64, .u = 5000 },
          MIG2_CFG_CLAMPED },
        { (char *)"multifd-compression",
          { .type = MIG2_CFG_STR, .s = "none" }, MIG2_CFG_REFUSED },
        { (char *)"x-what", { .type = MIG2_CFG_U64, .u = 1 },
          MIG2_CFG_UNKNOWN },
    };
    Mig2Hello h = { 0 }, dec;
    Mig2Error err;
    Mig2Writer w;
    size_t i;

    (void)state;
    h.profile = rich_profile(false);
    memcpy(h.nonce, test_nonce, sizeof(h.nonce));
    h.selected = 2;
    h.outcomes = outs;
    h.n_outcomes = sizeof(outs) / sizeof(outs[0]);
    encode_hello(&h, MIG2_FRAME_DST_HELLO, true, 42, &w);

    assert_int_equal(decode_hello_frame(&w, MIG2_FRAME_DST_HELLO, &dec, &err),
                     MIG2_OK);
    assert_int_equal(dec.selected, 2);
    assert_memory_equal(dec.nonce, test_nonce, MIG2_NONCE_LEN);
    assert_profiles_equal(h.profile, dec.profile);
    assert_int_equal(dec.n_outcomes, h.n_outcomes);
    for (i = 0; i < h.n_outcomes; i++) {
        assert_string_equal(dec.outcomes[i].name, outs[i].name);
        assert_int_equal(dec.outcomes[i].status, outs[i].status);
        assert_int_equal(dec.outcomes[i].final.type, outs[i].final.type);
        assert_true(dec.outcomes[i].final.b == outs[i].final.b);
        assert_true(dec.outcomes[i].final.u == outs[i].final.u);
    }
    assert_string_equal(dec.outcomes[2].final.s, "none");
    mig2_hello_clear(&dec);
    mig2_error_clear(&err);

    /* The same frame read as a SRC_HELLO: SELECTED_REVISION is unknown. */
    assert_int_equal(decode_hello_frame(&w, MIG2_FRAME_SRC_HELLO, &dec, &err),
                     MIG2_ERR_UNKNOWN_CRITICAL);
    assert_int_equal(err.n_problems, 1);
    assert_string_equal(err.problems[0].path, "src-hello/tlv/0x800a");
    mig2_hello_clear(&dec);
    mig2_error_clear(&err);
    mig2_wr_free(&w);
    mig2_profile_free(h.profile);
}

/* ================================================================ */
/* Malformed SRC_HELLO payloads                                      */
/* ================================================================ */

static void put_revisions(Mig2Writer *w, uint16_t min, uint16_t max)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_REVISIONS, true);

    mig2_wr_u16(w, min);
    mig2_wr_u16(w, max);
    mig2_wr_tlv_end(w, m);
}

static void put_nonce(Mig2Writer *w)
{
    put_tlv(w, MIG2_TLV_NONCE, true, test_nonce, MIG2_NONCE_LEN);
}

static void put_machine(Mig2Writer *w, const char *machine)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_MACHINE, true);

    mig2_wr_str8(w, machine);
    mig2_wr_tlv_end(w, m);
}

static void put_page_size(Mig2Writer *w, uint32_t ps)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_PAGE_SIZE, true);

    mig2_wr_u32(w, ps);
    mig2_wr_tlv_end(w, m);
}

static void put_features(Mig2Writer *w, const uint16_t *ids,
                         const uint8_t *flags, size_t n)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_FEATURES, false), i;

    for (i = 0; i < n; i++) {
        mig2_wr_u16(w, ids[i]);
        mig2_wr_u8(w, flags ? flags[i] : 0);
    }
    mig2_wr_tlv_end(w, m);
}

static void put_ram_block(Mig2Writer *w, const char *name, uint64_t size,
                          uint32_t page)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_RAM_BLOCK, true);

    mig2_wr_str8(w, name);
    mig2_wr_u64(w, size);
    mig2_wr_u32(w, page);
    mig2_wr_tlv_end(w, m);
}

/* Open a DEVICE TLV; add nested TLVs, then mig2_wr_tlv_end() the mark. */
static size_t begin_device(Mig2Writer *w, const char *id, uint32_t inst,
                           uint32_t vmin, uint32_t vmax)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_DEVICE, true);

    mig2_wr_str8(w, id);
    mig2_wr_u32(w, inst);
    mig2_wr_u32(w, vmin);
    mig2_wr_u32(w, vmax);
    return m;
}

static void put_subsection(Mig2Writer *w, const char *name, uint8_t flags)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_SUBSECTION, false);

    mig2_wr_str8(w, name);
    mig2_wr_u8(w, flags);
    mig2_wr_tlv_end(w, m);
}

/* A CONFIG TLV with a raw value of @n bytes. */
static void put_config_raw(Mig2Writer *w, const char *name, uint8_t type,
                           uint8_t flags, const void *val, size_t n)
{
    size_t m = mig2_wr_tlv_begin(w, MIG2_TLV_CONFIG, false);

    mig2_wr_str8(w, name);
    mig2_wr_u8(w, type);
    mig2_wr_u8(w, flags);
    mig2_wr_bytes(w, val, n);
    mig2_wr_tlv_end(w, m);
}

enum {
    OMIT_NONCE = 1,
    OMIT_MACHINE = 2,
    OMIT_PAGE_SIZE = 4,
};

/*
 * Start a valid SRC_HELLO payload in @w: REVISIONS 1..2, NONCE, MACHINE
 * "pc-q35-9.1", PAGE_SIZE 4096 minus the ones in @omit.  Without omissions
 * the next TLV has index 4.
 */
static void start_hello(Mig2Writer *w, unsigned omit)
{
    mig2_wr_init(w, WMAX);
    put_revisions(w, 1, 2);
    if (!(omit & OMIT_NONCE)) {
        put_nonce(w);
    }
    if (!(omit & OMIT_MACHINE)) {
        put_machine(w, "pc-q35-9.1");
    }
    if (!(omit & OMIT_PAGE_SIZE)) {
        put_page_size(w, 4096);
    }
}

/* Decode @w as a SRC_HELLO payload. */
static int decode_src(const Mig2Writer *w, Mig2Hello *h, Mig2Error *err)
{
    assert_int_equal(mig2_wr_error(w), MIG2_OK);
    memset(err, 0, sizeof(*err));
    return mig2_hello_decode(w->buf, w->len, MIG2_FRAME_SRC_HELLO, h, err);
}

/*
 * Decode @w as a SRC_HELLO payload and expect MIG2_ERR_PROTOCOL with one
 * "malformed" problem at @path caused by local code @why.  Frees @w.
 */
static void expect_malformed(Mig2Writer *w, const char *path, int why)
{
    Mig2Hello h;
    Mig2Error err;

    assert_int_equal(decode_src(w, &h, &err), MIG2_ERR_PROTOCOL);
    assert_int_equal(err.code, MIG2_WIRE_PROTOCOL);
    assert_false(err.retryable);
    assert_false(err.from_peer);
    assert_int_equal(err.n_problems, 1);
    assert_int_equal(err.problems[0].kind, MIG2_PROB_MALFORMED);
    assert_string_equal(err.problems[0].path, path);
    assert_string_equal(err.problems[0].actual, mig2_strerror(why));
    assert_non_null(err.message);
    assert_non_null(strstr(err.message, path));
    mig2_hello_clear(&h);
    mig2_error_clear(&err);
    mig2_wr_free(w);
}

/* Expect MIG2_ERR_UNKNOWN_CRITICAL naming @path and @crit_type.  Frees @w. */
static void expect_unknown_critical(Mig2Writer *w, const char *path,
                                    uint16_t crit_type)
{
    Mig2Hello h;
    Mig2Error err;
    char actual[32];

    snprintf(actual, sizeof(actual), "critical type 0x%04x",
             (unsigned)crit_type);
    assert_int_equal(decode_src(w, &h, &err), MIG2_ERR_UNKNOWN_CRITICAL);
    assert_int_equal(err.code, MIG2_WIRE_UNKNOWN_CRITICAL);
    assert_int_equal(err.n_problems, 1);
    assert_int_equal(err.problems[0].kind, MIG2_PROB_UNKNOWN_CRITICAL);
    assert_string_equal(err.problems[0].path, path);
    assert_string_equal(err.problems[0].expected, "a known type");
    assert_string_equal(err.problems[0].actual, actual);
    assert_non_null(strstr(err.message, path));
    mig2_hello_clear(&h);
    mig2_error_clear(&err);
    mig2_wr_free(w);
}

/* Decode @w as SRC_HELLO, expect success; @h is the caller's to clear. */
static void expect_decoded(Mig2Writer *w, Mig2Hello *h)
{
    Mig2Error err;

    assert_int_equal(decode_src(w, h, &err), MIG2_OK);
    assert_int_equal(err.n_problems, 0);
    assert_null(err.message);
    mig2_error_clear(&err);
    mig2_wr_free(w);
}

static void test_src_minimal_ok(void **state)
{
    Mig2Writer w;
    Mig2Hello h;

    (void)state;
    start_hello(&w, 0);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->rev_min, 1);
    assert_int_equal(h.profile->rev_max, 2);
    assert_memory_equal(h.nonce, test_nonce, MIG2_NONCE_LEN);
    assert_string_equal(h.profile->machine, "pc-q35-9.1");
    assert_int_equal(h.profile->page_size, 4096);
    /* No BUILD TLV: no build string. */
    assert_null(h.profile->build);
    assert_int_equal(h.profile->n_features, 0);
    assert_int_equal(h.profile->n_ram, 0);
    assert_int_equal(h.profile->n_devices, 0);
    assert_int_equal(h.profile->n_config, 0);
    mig2_hello_clear(&h);
}

static void test_src_first_tlv_not_revisions(void **state)
{
    Mig2Writer w;

    (void)state;
    mig2_wr_init(&w, WMAX);
    put_nonce(&w);
    put_revisions(&w, 1, 2);
    put_machine(&w, "m");
    put_page_size(&w, 4096);
    expect_malformed(&w, "src-hello/tlv[0]", MIG2_ERR_MISSING);

    /* Not even a grease TLV may come first. */
    mig2_wr_init(&w, WMAX);
    put_tlv(&w, 0x0a0a, false, NULL, 0);
    put_revisions(&w, 1, 2);
    put_nonce(&w);
    put_machine(&w, "m");
    put_page_size(&w, 4096);
    expect_malformed(&w, "src-hello/tlv[0]", MIG2_ERR_MISSING);
}

/* One valid instance of once-only TLV @type. */
static void put_once_only(Mig2Writer *w, uint16_t type)
{
    switch (type) {
    case MIG2_TLV_REVISIONS:
        put_revisions(w, 1, 1);
        break;
    case MIG2_TLV_BUILD:
        put_tlv(w, MIG2_TLV_BUILD, false, "\x00\x01" "b", 3);
        break;
    case MIG2_TLV_FEATURES:
        put_features(w, NULL, NULL, 0);
        break;
    case MIG2_TLV_NONCE:
        put_nonce(w);
        break;
    case MIG2_TLV_MACHINE:
        put_machine(w, "other");
        break;
    case MIG2_TLV_PAGE_SIZE:
        put_page_size(w, 8192);
        break;
    default:
        fail_msg("not a once-only type: %u", type);
    }
}

static void test_src_duplicate_once_only(void **state)
{
    static const struct {
        uint16_t type;
        bool in_base;
        const char *path;
    } cases[] = {
        { MIG2_TLV_REVISIONS, true, "src-hello/revisions[1]" },
        { MIG2_TLV_BUILD, false, "src-hello/build[1]" },
        { MIG2_TLV_FEATURES, false, "src-hello/features[1]" },
        { MIG2_TLV_NONCE, true, "src-hello/nonce[1]" },
        { MIG2_TLV_MACHINE, true, "src-hello/machine[1]" },
        { MIG2_TLV_PAGE_SIZE, true, "src-hello/page-size[1]" },
    };
    Mig2Writer w;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        start_hello(&w, 0);
        if (!cases[i].in_base) {
            put_once_only(&w, cases[i].type);
        }
        put_once_only(&w, cases[i].type);
        expect_malformed(&w, cases[i].path, MIG2_ERR_DUPLICATE);
    }
}

static void test_src_missing_mandatory(void **state)
{
    static const unsigned omit[] = { OMIT_NONCE, OMIT_MACHINE,
                                     OMIT_PAGE_SIZE };
    Mig2Writer w;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(omit) / sizeof(omit[0]); i++) {
        start_hello(&w, omit[i]);
        /* The path names the index past the last TLV. */
        expect_malformed(&w, "src-hello/tlv[3]", MIG2_ERR_MISSING);
    }
    start_hello(&w, OMIT_NONCE | OMIT_MACHINE | OMIT_PAGE_SIZE);
    put_tlv(&w, MIG2_TLV_BUILD, false, "\x00\x01" "b", 3);
    expect_malformed(&w, "src-hello/tlv[2]", MIG2_ERR_MISSING);
    /* An empty payload lacks everything. */
    mig2_wr_init(&w, WMAX);
    expect_malformed(&w, "src-hello/tlv[0]", MIG2_ERR_MISSING);
}

static void test_src_truncated_tlv_header(void **state)
{
    Mig2Writer w;
    size_t n;

    (void)state;
    for (n = 1; n < MIG2_TLV_HEADER_LEN; n++) {
        start_hello(&w, 0);
        mig2_wr_bytes(&w, "\x00\x02\x00\x00\x00\x00", n);
        expect_malformed(&w, "src-hello/tlv[4]", MIG2_ERR_TRUNCATED);
    }
}

static void test_src_tlv_length_past_end(void **state)
{
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    mig2_wr_bytes(&w, "\x00\x02\x00\x00\x00\x10" "\x00\x02" "ab", 10);
    expect_malformed(&w, "src-hello/tlv[4]", MIG2_ERR_TRUNCATED);
    /* A mandatory TLV whose length runs past the end. */
    mig2_wr_init(&w, WMAX);
    put_revisions(&w, 1, 2);
    mig2_wr_bytes(&w, "\x80\x04\x00\x00\x00\x10" "0123456789abcde", 21);
    expect_malformed(&w, "src-hello/tlv[1]", MIG2_ERR_TRUNCATED);
}

static void test_src_machine_zero_length(void **state)
{
    Mig2Writer w;

    (void)state;
    /* An empty MACHINE TLV has not even the str8 length. */
    start_hello(&w, OMIT_MACHINE);
    put_tlv(&w, MIG2_TLV_MACHINE, true, NULL, 0);
    expect_malformed(&w, "src-hello/machine[0]", MIG2_ERR_TRUNCATED);
    /* A str8 of length 0. */
    start_hello(&w, OMIT_MACHINE);
    put_tlv(&w, MIG2_TLV_MACHINE, true, "\x00", 1);
    expect_malformed(&w, "src-hello/machine[0]", MIG2_ERR_BAD_STRING);
}

static void test_src_machine_bad_string(void **state)
{
    static const struct {
        const char *v;
        size_t n;
        int why;
    } cases[] = {
        { "\x03" "a\xc0\x80", 4, MIG2_ERR_BAD_STRING },     /* overlong */
        { "\x02\xff\xfe", 3, MIG2_ERR_BAD_STRING },
        { "\x02" "a\x00", 3, MIG2_ERR_BAD_STRING },         /* NUL */
        { "\x03\xed\xb0\x80", 4, MIG2_ERR_BAD_STRING },     /* surrogate */
        { "\x05" "abc", 4, MIG2_ERR_TRUNCATED },
        { "\x01" "ab", 3, MIG2_ERR_TRAILING },
    };
    Mig2Writer w;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        start_hello(&w, OMIT_MACHINE);
        put_tlv(&w, MIG2_TLV_MACHINE, true, cases[i].v, cases[i].n);
        expect_malformed(&w, "src-hello/machine[0]", cases[i].why);
    }
}

static void test_src_page_size_bad(void **state)
{
    static const uint32_t bad[] = {
        0, 1, 3, 256, 511, 513, 4097, 6144, (1U << 30) + 1, 1U << 31,
        UINT32_MAX,
    };
    static const uint32_t good[] = { 512, 4096, 65536, 1U << 30 };
    Mig2Writer w;
    Mig2Hello h;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        start_hello(&w, OMIT_PAGE_SIZE);
        put_page_size(&w, bad[i]);
        expect_malformed(&w, "src-hello/page-size[0]", MIG2_ERR_BAD_VALUE);
    }
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        start_hello(&w, OMIT_PAGE_SIZE);
        put_page_size(&w, good[i]);
        expect_decoded(&w, &h);
        assert_int_equal(h.profile->page_size, good[i]);
        mig2_hello_clear(&h);
    }
    start_hello(&w, OMIT_PAGE_SIZE);
    put_tlv(&w, MIG2_TLV_PAGE_SIZE, true, "\x00\x00\x10", 3);
    expect_malformed(&w, "src-hello/page-size[0]", MIG2_ERR_TRUNCATED);
    start_hello(&w, OMIT_PAGE_SIZE);
    put_tlv(&w, MIG2_TLV_PAGE_SIZE, true, "\x00\x00\x10\x00\x00", 5);
    expect_malformed(&w, "src-hello/page-size[0]", MIG2_ERR_TRAILING);
}

static void test_src_revisions_bad(void **state)
{
    static const uint16_t bad[][2] = {
        { 2, 1 }, { 0, 2 }, { 0, 0 }, { 0xffff, 1 },
    };
    Mig2Writer w;
    Mig2Hello h;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mig2_wr_init(&w, WMAX);
        put_revisions(&w, bad[i][0], bad[i][1]);
        put_nonce(&w);
        put_machine(&w, "m");
        put_page_size(&w, 4096);
        expect_malformed(&w, "src-hello/revisions[0]", MIG2_ERR_BAD_VALUE);
    }
    mig2_wr_init(&w, WMAX);
    put_tlv(&w, MIG2_TLV_REVISIONS, true, "\x00\x01\x00", 3);
    expect_malformed(&w, "src-hello/revisions[0]", MIG2_ERR_TRUNCATED);
    mig2_wr_init(&w, WMAX);
    put_tlv(&w, MIG2_TLV_REVISIONS, true, "\x00\x01\x00\x02\x00", 5);
    expect_malformed(&w, "src-hello/revisions[0]", MIG2_ERR_TRAILING);

    /* A range this library does not implement still decodes. */
    mig2_wr_init(&w, WMAX);
    put_revisions(&w, 3, 7);
    put_nonce(&w);
    put_machine(&w, "m");
    put_page_size(&w, 4096);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->rev_min, 3);
    assert_int_equal(h.profile->rev_max, 7);
    mig2_hello_clear(&h);
}

static void test_src_nonce_bad_length(void **state)
{
    Mig2Writer w;

    (void)state;
    start_hello(&w, OMIT_NONCE);
    put_tlv(&w, MIG2_TLV_NONCE, true, test_nonce, MIG2_NONCE_LEN - 1);
    expect_malformed(&w, "src-hello/nonce[0]", MIG2_ERR_TRUNCATED);
    start_hello(&w, OMIT_NONCE);
    put_tlv(&w, MIG2_TLV_NONCE, true, "0123456789abcdefg", 17);
    expect_malformed(&w, "src-hello/nonce[0]", MIG2_ERR_TRAILING);
}

static void test_src_features_not_multiple_of_3(void **state)
{
    Mig2Writer w;
    size_t n;

    (void)state;
    for (n = 1; n <= 5; n++) {
        if (n == 3) {
            continue;
        }
        start_hello(&w, 0);
        put_tlv(&w, MIG2_TLV_FEATURES, false, "\x00\x01\x00\x00\x02", n);
        expect_malformed(&w, "src-hello/features[0]", MIG2_ERR_TRUNCATED);
    }
}

static void test_src_feature_duplicate(void **state)
{
    static const uint16_t ids[] = { 1, 2, 1 };
    static const uint8_t flags[] = { MIG2_FEATURE_REQUIRED, 0, 0 };
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    put_features(&w, ids, NULL, 3);
    expect_malformed(&w, "src-hello/features[0]", MIG2_ERR_DUPLICATE);
    /* Differing flags do not make it a different feature. */
    start_hello(&w, 0);
    put_features(&w, ids, flags, 3);
    expect_malformed(&w, "src-hello/features[0]", MIG2_ERR_DUPLICATE);
}

static void test_src_feature_zero(void **state)
{
    static const uint16_t ids[] = { 1, 0 };
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    put_features(&w, ids, NULL, 2);
    expect_malformed(&w, "src-hello/features[0]", MIG2_ERR_BAD_VALUE);
}

static void test_src_features_limit(void **state)
{
    uint16_t *ids = calloc(MIG2_MAX_FEATURES + 17, sizeof(*ids));
    Mig2Writer w;
    Mig2Hello h;
    size_t i, n;
    uint16_t id;

    (void)state;
    assert_non_null(ids);
    /* More entries than 1024 + 16 grease: refused before looking. */
    for (i = 0; i < MIG2_MAX_FEATURES + 17; i++) {
        ids[i] = 0x0a0a;
    }
    start_hello(&w, 0);
    put_features(&w, ids, NULL, MIG2_MAX_FEATURES + 17);
    expect_malformed(&w, "src-hello/features[0]", MIG2_ERR_LIMIT);

    /* 1024 real ids and 16 grease ids: fine. */
    for (n = 0, id = 1; n < MIG2_MAX_FEATURES; id++) {
        if (!mig2_is_grease(id)) {
            ids[n++] = id;
        }
    }
    for (i = 0; i < 16; i++) {
        ids[n + i] = (uint16_t)(0x0a0a | i << 4);
    }
    start_hello(&w, 0);
    put_features(&w, ids, NULL, MIG2_MAX_FEATURES + 16);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->n_features, MIG2_MAX_FEATURES);
    mig2_hello_clear(&h);

    /* 1025 real ids: within the entry bound, over the feature limit. */
    while (mig2_is_grease(id)) {
        id++;
    }
    ids[MIG2_MAX_FEATURES] = id;
    start_hello(&w, 0);
    put_features(&w, ids, NULL, MIG2_MAX_FEATURES + 1);
    expect_malformed(&w, "src-hello/features[0]", MIG2_ERR_LIMIT);
    free(ids);
}

static void test_src_unknown_critical_tlv(void **state)
{
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    put_tlv(&w, 0x0123, true, "xyz", 3);
    expect_unknown_critical(&w, "src-hello/tlv/0x8123", 0x8123);
    /* Before the mandatory TLVs: still unknown-critical, not missing. */
    mig2_wr_init(&w, WMAX);
    put_revisions(&w, 1, 2);
    put_tlv(&w, 0x7fff, true, NULL, 0);
    expect_unknown_critical(&w, "src-hello/tlv/0xffff", 0xffff);
    /* A critical type 0. */
    start_hello(&w, 0);
    put_tlv(&w, 0x0000, true, NULL, 0);
    expect_unknown_critical(&w, "src-hello/tlv/0x8000", 0x8000);
}

static void test_src_unknown_noncritical_skipped(void **state)
{
    Mig2Writer w;
    Mig2Hello h;

    (void)state;
    start_hello(&w, 0);
    put_tlv(&w, 0x0123, false, "anything \xff\x00 at all", 18);
    put_tlv(&w, 0x7fff, false, NULL, 0);
    put_tlv(&w, 0x0000, false, "\x80\x01", 2);
    /* Parsing goes on after them. */
    put_ram_block(&w, "pc.ram", 1 << 20, 4096);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->n_ram, 1);
    assert_string_equal(h.profile->ram[0].name, "pc.ram");
    mig2_hello_clear(&h);
}

static void test_src_grease_skipped(void **state)
{
    static const uint16_t ids[] = { 0x0a0a, 1, 0x5a3a, 2, 0x7afa };
    static const uint8_t flags[] = { 1, 1, 0xff, 0, 1 };
    Mig2Writer w;
    Mig2Hello h;

    (void)state;
    start_hello(&w, 0);
    put_tlv(&w, 0x0a0a, false, NULL, 0);
    put_tlv(&w, 0x7afa, false, "0123456789abcde", 15);
    put_features(&w, ids, flags, 5);
    put_tlv(&w, 0x3a5a, false, "\x80", 1);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->n_features, 2);
    assert_int_equal(h.profile->features[0].id, 1);
    assert_true(h.profile->features[0].required);
    assert_int_equal(h.profile->features[1].id, 2);
    assert_false(h.profile->features[1].required);
    mig2_hello_clear(&h);

    /* With the critical bit a grease number is no longer grease. */
    start_hello(&w, 0);
    put_tlv(&w, 0x0a0a, true, NULL, 0);
    expect_unknown_critical(&w, "src-hello/tlv/0x8a0a", 0x8a0a);
}

static void test_src_device_unknown_critical_nested(void **state)
{
    Mig2Writer w;
    size_t m;

    (void)state;
    start_hello(&w, 0);
    m = begin_device(&w, "ok", 0, 1, 1);
    mig2_wr_tlv_end(&w, m);
    m = begin_device(&w, "timer", 0, 1, 2);
    put_subsection(&w, "timer/hpet", 0);
    put_tlv(&w, 0x0042, true, "zz", 2);
    mig2_wr_tlv_end(&w, m);
    expect_unknown_critical(&w, "src-hello/device[1]/tlv/0x8042", 0x8042);
}

static void test_src_device_unknown_nested_skipped(void **state)
{
    Mig2Writer w;
    Mig2Hello h;
    size_t dm, sm;

    (void)state;
    start_hello(&w, 0);
    dm = begin_device(&w, "timer", 3, 1, 2);
    put_tlv(&w, 0x0042, false, "zz", 2);
    put_subsection(&w, "timer/hpet", MIG2_SUBSECTION_NEEDED);
    put_tlv(&w, 0x0a0a, false, NULL, 0);
    /* A SUBSECTION sent with the critical bit is still a SUBSECTION. */
    sm = mig2_wr_tlv_begin(&w, MIG2_TLV_SUBSECTION, true);
    mig2_wr_str8(&w, "timer/rtc");
    mig2_wr_u8(&w, 0xfe);
    mig2_wr_tlv_end(&w, sm);
    mig2_wr_tlv_end(&w, dm);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->n_devices, 1);
    assert_string_equal(h.profile->devices[0].id, "timer");
    assert_int_equal(h.profile->devices[0].instance, 3);
    assert_int_equal(h.profile->devices[0].n_subs, 2);
    assert_string_equal(h.profile->devices[0].subs[0].name, "timer/hpet");
    assert_true(h.profile->devices[0].subs[0].needed);
    assert_string_equal(h.profile->devices[0].subs[1].name, "timer/rtc");
    /* Only bit 0 of the flags means NEEDED. */
    assert_false(h.profile->devices[0].subs[1].needed);
    mig2_hello_clear(&h);
}

static void test_src_device_vmin_over_vmax(void **state)
{
    Mig2Writer w;
    Mig2Hello h;
    size_t m;

    (void)state;
    start_hello(&w, 0);
    m = begin_device(&w, "timer", 0, 3, 2);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/device[0]", MIG2_ERR_BAD_VALUE);
    /* vmin == vmax is fine. */
    start_hello(&w, 0);
    m = begin_device(&w, "timer", 0, 2, 2);
    mig2_wr_tlv_end(&w, m);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->devices[0].vmin, 2);
    assert_int_equal(h.profile->devices[0].vmax, 2);
    mig2_hello_clear(&h);
}

static void test_src_device_header_bad(void **state)
{
    Mig2Writer w;
    size_t m;

    (void)state;
    /* Header cut after the instance. */
    start_hello(&w, 0);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_DEVICE, true);
    mig2_wr_str8(&w, "timer");
    mig2_wr_u32(&w, 0);
    mig2_wr_u32(&w, 1);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/device[0]", MIG2_ERR_TRUNCATED);
    /* Empty id. */
    start_hello(&w, 0);
    put_tlv(&w, MIG2_TLV_DEVICE, true,
            "\x00" "\x00\x00\x00\x00" "\x00\x00\x00\x01" "\x00\x00\x00\x01",
            13);
    expect_malformed(&w, "src-hello/device[0]", MIG2_ERR_BAD_STRING);
    /* Nested TLV header cut short. */
    start_hello(&w, 0);
    m = begin_device(&w, "timer", 0, 1, 1);
    mig2_wr_bytes(&w, "\x00\x01\x00", 3);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/device[0]", MIG2_ERR_TRUNCATED);
}

static void test_src_subsection_errors(void **state)
{
    char name[16];
    Mig2Writer w;
    Mig2Hello h;
    size_t m, i;

    (void)state;
    /* Same name twice in one device. */
    start_hello(&w, 0);
    m = begin_device(&w, "a", 0, 1, 1);
    mig2_wr_tlv_end(&w, m);
    m = begin_device(&w, "b", 0, 1, 1);
    put_subsection(&w, "s", 0);
    put_subsection(&w, "s", 1);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/subsection[1]", MIG2_ERR_DUPLICATE);
    /* ... but the same name in two devices is fine. */
    start_hello(&w, 0);
    m = begin_device(&w, "a", 0, 1, 1);
    put_subsection(&w, "s", 0);
    mig2_wr_tlv_end(&w, m);
    m = begin_device(&w, "b", 0, 1, 1);
    put_subsection(&w, "s", 0);
    mig2_wr_tlv_end(&w, m);
    expect_decoded(&w, &h);
    mig2_hello_clear(&h);
    /* Trailing byte, missing flags, empty name. */
    start_hello(&w, 0);
    m = begin_device(&w, "a", 0, 1, 1);
    put_tlv(&w, MIG2_TLV_SUBSECTION, false, "\x01s\x00\x00", 4);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/subsection[0]", MIG2_ERR_TRAILING);
    start_hello(&w, 0);
    m = begin_device(&w, "a", 0, 1, 1);
    put_tlv(&w, MIG2_TLV_SUBSECTION, false, "\x01s", 2);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/subsection[0]", MIG2_ERR_TRUNCATED);
    start_hello(&w, 0);
    m = begin_device(&w, "a", 0, 1, 1);
    put_tlv(&w, MIG2_TLV_SUBSECTION, false, "\x00\x00", 2);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/subsection[0]", MIG2_ERR_BAD_STRING);
    /* More than 256 subsections in one device. */
    start_hello(&w, 0);
    m = begin_device(&w, "a", 0, 1, 1);
    for (i = 0; i <= MIG2_MAX_SUBSECTIONS; i++) {
        snprintf(name, sizeof(name), "s%zu", i);
        put_subsection(&w, name, 0);
    }
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/subsection[0]", MIG2_ERR_LIMIT);
}

static void test_src_config_bool_2(void **state)
{
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", MIG2_CFG_BOOL, 0, "\x01", 1);
    put_config_raw(&w, "events", MIG2_CFG_BOOL, 0, "\x02", 1);
    expect_malformed(&w, "src-hello/config[1]", MIG2_ERR_BAD_VALUE);
}

static void test_src_config_unknown_type(void **state)
{
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", 3, 0, "\x01", 1);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_BAD_VALUE);
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", 0xff, 0, NULL, 0);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_BAD_VALUE);
}

static void test_src_config_other_errors(void **state)
{
    char *big = repeat_str("", "z", MIG2_MAX_STR16 + 1);
    Mig2Writer w;
    Mig2Hello h;
    size_t m;

    (void)state;
    /* Trailing byte after a bool. */
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", MIG2_CFG_BOOL, 0, "\x01\x00", 2);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_TRAILING);
    /* u64 cut short. */
    start_hello(&w, 0);
    put_config_raw(&w, "downtime-limit", MIG2_CFG_U64, 0, "\0\0\0\0\0\0\1",
                   7);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_TRUNCATED);
    /* Empty string value; empty name. */
    start_hello(&w, 0);
    put_config_raw(&w, "multifd-compression", MIG2_CFG_STR, 0, "\0\0", 2);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_BAD_STRING);
    start_hello(&w, 0);
    put_tlv(&w, MIG2_TLV_CONFIG, false, "\x00\x00\x00\x01", 4);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_BAD_STRING);
    /* String value over 4096 bytes. */
    start_hello(&w, 0);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_CONFIG, false);
    mig2_wr_str8(&w, "multifd-compression");
    mig2_wr_u8(&w, MIG2_CFG_STR);
    mig2_wr_u8(&w, 0);
    mig2_wr_str16(&w, big, UINT16_MAX);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/config[0]", MIG2_ERR_TOO_LARGE);
    /* The same name twice (unlike the profile API, which replaces). */
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", MIG2_CFG_BOOL, 0, "\x01", 1);
    put_config_raw(&w, "multifd", MIG2_CFG_BOOL, 0, "\x00", 1);
    expect_malformed(&w, "src-hello/config[1]", MIG2_ERR_DUPLICATE);
    /* Flag bits other than REQUIRED are dropped. */
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", MIG2_CFG_BOOL, 0xff, "\x01", 1);
    expect_decoded(&w, &h);
    assert_int_equal(h.profile->n_config, 1);
    assert_int_equal(h.profile->config[0].flags, MIG2_CONFIG_REQUIRED);
    assert_true(h.profile->config[0].v.b);
    mig2_hello_clear(&h);
    free(big);
}

static void test_src_config_limit(void **state)
{
    char name[16];
    Mig2Writer w;
    size_t i;

    (void)state;
    start_hello(&w, 0);
    for (i = 0; i <= MIG2_MAX_CONFIG; i++) {
        snprintf(name, sizeof(name), "c%zu", i);
        put_config_raw(&w, name, MIG2_CFG_BOOL, 0, "\x01", 1);
    }
    expect_malformed(&w, "src-hello/config[1024]", MIG2_ERR_LIMIT);
}

static void test_src_dst_only_tlvs_unknown(void **state)
{
    Mig2Writer w;
    Mig2Hello h;
    size_t m;

    (void)state;
    /* CONFIG_RESULT is unknown in a SRC_HELLO: skipped when non-critical. */
    start_hello(&w, 0);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_CONFIG_RESULT, false);
    mig2_wr_str8(&w, "multifd");
    mig2_wr_u8(&w, MIG2_CFG_BOOL);
    mig2_wr_u8(&w, MIG2_CFG_ACCEPTED);
    mig2_wr_u8(&w, 1);
    mig2_wr_tlv_end(&w, m);
    /* Even a malformed one: it is not looked at. */
    put_tlv(&w, MIG2_TLV_CONFIG_RESULT, false, "\xff", 1);
    put_tlv(&w, MIG2_TLV_SELECTED_REVISION, false, "\x00\x02", 2);
    expect_decoded(&w, &h);
    assert_int_equal(h.n_outcomes, 0);
    assert_int_equal(h.profile->n_config, 0);
    assert_int_equal(h.selected, 0);
    mig2_hello_clear(&h);
    /* ... and unknown-critical when critical. */
    start_hello(&w, 0);
    put_tlv(&w, MIG2_TLV_CONFIG_RESULT, true, "\x01x\x00\x00\x01", 5);
    expect_unknown_critical(&w, "src-hello/tlv/0x800b", 0x800b);
    start_hello(&w, 0);
    put_tlv(&w, MIG2_TLV_SELECTED_REVISION, true, "\x00\x02", 2);
    expect_unknown_critical(&w, "src-hello/tlv/0x800a", 0x800a);
}

static void test_src_ram_block_duplicate(void **state)
{
    Mig2Writer w;

    (void)state;
    start_hello(&w, 0);
    put_ram_block(&w, "pc.ram", 1 << 20, 4096);
    put_ram_block(&w, "vga.vram", 1 << 20, 4096);
    put_ram_block(&w, "pc.ram", 2 << 20, 4096);
    expect_malformed(&w, "src-hello/ram-block[2]", MIG2_ERR_DUPLICATE);
}

static void test_src_ram_block_bad(void **state)
{
    Mig2Writer w;
    size_t m;

    (void)state;
    start_hello(&w, 0);
    put_ram_block(&w, "pc.ram", 1 << 20, 1000);
    expect_malformed(&w, "src-hello/ram-block[0]", MIG2_ERR_BAD_VALUE);
    start_hello(&w, 0);
    put_tlv(&w, MIG2_TLV_RAM_BLOCK, true, "\x00", 1);
    expect_malformed(&w, "src-hello/ram-block[0]", MIG2_ERR_BAD_STRING);
    start_hello(&w, 0);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_RAM_BLOCK, true);
    mig2_wr_str8(&w, "pc.ram");
    mig2_wr_u64(&w, 1);
    mig2_wr_u32(&w, 4096);
    mig2_wr_u8(&w, 0);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/ram-block[0]", MIG2_ERR_TRAILING);
    start_hello(&w, 0);
    m = mig2_wr_tlv_begin(&w, MIG2_TLV_RAM_BLOCK, true);
    mig2_wr_str8(&w, "pc.ram");
    mig2_wr_u64(&w, 1);
    mig2_wr_tlv_end(&w, m);
    expect_malformed(&w, "src-hello/ram-block[0]", MIG2_ERR_TRUNCATED);
}

static void test_dst_requires_selected_revision(void **state)
{
    Mig2Writer w;
    Mig2Hello h;
    Mig2Error err;

    (void)state;
    /* A SRC_HELLO payload read as a DST_HELLO lacks SELECTED_REVISION. */
    start_hello(&w, 0);
    put_config_raw(&w, "multifd", MIG2_CFG_BOOL, 0, "\x01", 1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(mig2_hello_decode(w.buf, w.len, MIG2_FRAME_DST_HELLO,
                                       &h, &err), MIG2_ERR_PROTOCOL);
    assert_int_equal(err.n_problems, 1);
    assert_string_equal(err.problems[0].path, "dst-hello/tlv[5]");
    assert_string_equal(err.problems[0].actual,
                        mig2_strerror(MIG2_ERR_MISSING));
    mig2_hello_clear(&h);
    mig2_error_clear(&err);
    mig2_wr_free(&w);
}

/* ================================================================ */
/* Profile setters                                                   */
/* ================================================================ */

static void test_profile_revisions(void **state)
{
    static const uint16_t bad[][2] = {
        { 0, 2 }, { 1, 3 }, { 2, 1 }, { 0, 0 }, { 3, 3 }, { 0, 1 },
    };
    static const uint16_t good[][2] = { { 1, 1 }, { 2, 2 }, { 1, 2 } };
    Mig2Profile *p = mig2_profile_new();
    size_t i;

    (void)state;
    assert_non_null(p);
    assert_int_equal(p->rev_min, MIG2_REVISION_MIN);
    assert_int_equal(p->rev_max, MIG2_REVISION_MAX);
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(mig2_profile_set_revisions(p, good[i][0],
                                                    good[i][1]), MIG2_OK);
        assert_int_equal(p->rev_min, good[i][0]);
        assert_int_equal(p->rev_max, good[i][1]);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(mig2_profile_set_revisions(p, bad[i][0], bad[i][1]),
                         MIG2_ERR_INVALID_ARG);
        /* Unchanged. */
        assert_int_equal(p->rev_min, 1);
        assert_int_equal(p->rev_max, 2);
    }
    assert_int_equal(mig2_profile_set_revisions(NULL, 1, 2),
                     MIG2_ERR_INVALID_ARG);
    mig2_profile_free(p);
}

static void test_profile_page_size(void **state)
{
    static const uint32_t bad[] = {
        0, 1, 3, 256, 511, 513, 4097, 6144, 1U << 31, UINT32_MAX,
    };
    Mig2Profile *p = mig2_profile_new();
    size_t i;

    (void)state;
    assert_int_equal(p->page_size, 4096);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(mig2_profile_set_page_size(p, bad[i]),
                         MIG2_ERR_INVALID_ARG);
        assert_int_equal(p->page_size, 4096);
        assert_int_equal(mig2_profile_add_ram_block(p, "r", 1, bad[i]),
                         MIG2_ERR_INVALID_ARG);
    }
    assert_int_equal(mig2_profile_ram_block_count(p), 0);
    assert_int_equal(mig2_profile_set_page_size(p, 512), MIG2_OK);
    assert_int_equal(p->page_size, 512);
    assert_int_equal(mig2_profile_set_page_size(p, 1U << 30), MIG2_OK);
    assert_int_equal(p->page_size, 1U << 30);
    assert_int_equal(mig2_profile_set_page_size(NULL, 4096),
                     MIG2_ERR_INVALID_ARG);
    mig2_profile_free(p);
}

static void test_profile_bad_strings(void **state)
{
    char *s255 = repeat_str("", "n", 255);
    char *s256 = repeat_str("", "n", 256);
    char *b4096 = repeat_str("", "b", MIG2_MAX_STR16);
    char *b4097 = repeat_str("", "b", MIG2_MAX_STR16 + 1);
    const char *bad[] = { "", NULL, "\xff", "a\xc0\x80", "\xed\xa0\x80",
                          "\xe2\x82" };
    Mig2Profile *p = mig2_profile_new();
    size_t i;
    int d;

    (void)state;
    bad[1] = s256;
    d = mig2_profile_add_device(p, "dev", 0, 1, 1);
    assert_int_equal(d, 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(mig2_profile_set_machine(p, bad[i]),
                         MIG2_ERR_BAD_STRING);
        assert_int_equal(mig2_profile_add_ram_block(p, bad[i], 1, 4096),
                         MIG2_ERR_BAD_STRING);
        assert_int_equal(mig2_profile_add_device(p, bad[i], 0, 1, 1),
                         MIG2_ERR_BAD_STRING);
        assert_int_equal(mig2_profile_add_subsection(p, d, bad[i], false),
                         MIG2_ERR_BAD_STRING);
        assert_int_equal(mig2_profile_propose_bool(p, bad[i], true, 0),
                         MIG2_ERR_BAD_STRING);
        assert_int_equal(mig2_profile_policy_refuse(p, bad[i]),
                         MIG2_ERR_BAD_STRING);
        if (i != 1) {
            /* Build allows 4096 bytes, so 256 is fine there. */
            assert_int_equal(mig2_profile_set_build(p, bad[i]),
                             MIG2_ERR_BAD_STRING);
            assert_int_equal(mig2_profile_propose_str(p, "x", bad[i], 0),
                             MIG2_ERR_BAD_STRING);
        }
    }
    assert_null(p->machine);
    assert_int_equal(mig2_profile_ram_block_count(p), 0);
    assert_int_equal(mig2_profile_device_count(p), 1);
    assert_int_equal(p->devices[0].n_subs, 0);
    assert_int_equal(p->n_config, 0);
    assert_int_equal(p->n_policy, 0);
    assert_string_equal(p->build, "libmig2 " MIG2_VERSION_STRING);

    /* NULL strings are invalid arguments where the setter says so. */
    assert_int_equal(mig2_profile_set_machine(p, NULL), MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_set_build(p, NULL), MIG2_ERR_INVALID_ARG);

    /* The limits themselves. */
    assert_int_equal(mig2_profile_set_machine(p, s255), MIG2_OK);
    assert_string_equal(p->machine, s255);
    assert_int_equal(mig2_profile_set_build(p, b4097), MIG2_ERR_BAD_STRING);
    assert_int_equal(mig2_profile_set_build(p, b4096), MIG2_OK);
    assert_string_equal(p->build, b4096);
    mig2_profile_free(p);
    free(s255);
    free(s256);
    free(b4096);
    free(b4097);
}

static void test_profile_devices(void **state)
{
    Mig2Profile *p = mig2_profile_new();

    (void)state;
    assert_int_equal(mig2_profile_add_device(p, "timer", 0, 2, 1),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_device(p, "timer", 0, UINT32_MAX, 0),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_device_count(p), 0);
    /* No device yet: index 0 is bad. */
    assert_int_equal(mig2_profile_add_subsection(p, 0, "s", false),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_device(p, "timer", 0, 1, 1), 0);
    assert_int_equal(mig2_profile_add_device(p, "timer", 1, 0, UINT32_MAX),
                     1);
    assert_int_equal(mig2_profile_add_subsection(p, -1, "s", false),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_subsection(p, 2, "s", false),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_subsection(p, INT32_MIN, "s", false),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_subsection(p, 1, "s", true), MIG2_OK);
    assert_int_equal(p->devices[0].n_subs, 0);
    assert_int_equal(p->devices[1].n_subs, 1);
    assert_true(p->devices[1].subs[0].needed);
    assert_int_equal(mig2_profile_add_device(NULL, "x", 0, 1, 1),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_device_count(p), 2);
    mig2_profile_free(p);
}

static void test_profile_features(void **state)
{
    static const uint16_t grease[] = { 0x0a0a, 0x1a2a, 0x7afa, 0x4a9a };
    Mig2Profile *p = mig2_profile_new();
    size_t i;

    (void)state;
    assert_int_equal(mig2_profile_add_feature(p, 0, false),
                     MIG2_ERR_INVALID_ARG);
    for (i = 0; i < sizeof(grease) / sizeof(grease[0]); i++) {
        assert_int_equal(mig2_profile_add_feature(p, grease[i], true),
                         MIG2_ERR_INVALID_ARG);
    }
    assert_int_equal(p->n_features, 0);
    /* 0x8a0a has the top bit set: not grease, an ordinary unknown id. */
    assert_int_equal(mig2_profile_add_feature(p, 0x8a0a, false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_POSTCOPY, true),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_POSTCOPY, false),
                     MIG2_ERR_DUPLICATE);
    assert_int_equal(p->n_features, 2);
    assert_true(p->features[1].required);
    assert_int_equal(mig2_profile_add_feature(NULL, 1, false),
                     MIG2_ERR_INVALID_ARG);
    mig2_profile_free(p);
}

static void test_profile_duplicates(void **state)
{
    Mig2Profile *p = mig2_profile_new();
    int d0, d1;

    (void)state;
    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 1, 4096),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_ram_block(p, "pc.ram", 2, 8192),
                     MIG2_ERR_DUPLICATE);
    assert_int_equal(mig2_profile_ram_block_count(p), 1);
    assert_true(p->ram[0].size == 1);

    d0 = mig2_profile_add_device(p, "a", 0, 1, 1);
    d1 = mig2_profile_add_device(p, "b", 0, 1, 1);
    assert_int_equal(mig2_profile_add_subsection(p, d0, "s", false),
                     MIG2_OK);
    assert_int_equal(mig2_profile_add_subsection(p, d0, "s", true),
                     MIG2_ERR_DUPLICATE);
    assert_int_equal(mig2_profile_add_subsection(p, d1, "s", true), MIG2_OK);
    assert_int_equal(p->devices[d0].n_subs, 1);
    assert_false(p->devices[d0].subs[0].needed);

    assert_int_equal(mig2_profile_add_feature(p, 1, false), MIG2_OK);
    assert_int_equal(mig2_profile_add_feature(p, 1, true),
                     MIG2_ERR_DUPLICATE);

    assert_int_equal(mig2_profile_know_config(p, "multifd"), MIG2_OK);
    assert_int_equal(mig2_profile_know_config(p, "multifd"),
                     MIG2_ERR_DUPLICATE);
    assert_int_equal(p->n_known, 1);

    /* Proposing a name twice is not an error: it replaces the value. */
    assert_int_equal(mig2_profile_propose_str(p, "multifd-compression",
                                              "zlib", 0), MIG2_OK);
    assert_int_equal(mig2_profile_propose_u64(p, "multifd-compression", 3,
                                              MIG2_CONFIG_REQUIRED), MIG2_OK);
    assert_int_equal(p->n_config, 1);
    assert_int_equal(p->config[0].v.type, MIG2_CFG_U64);
    assert_true(p->config[0].v.u == 3);
    assert_null(p->config[0].v.s);
    assert_int_equal(p->config[0].flags, MIG2_CONFIG_REQUIRED);
    mig2_profile_free(p);
}

static void test_profile_limits(void **state)
{
    Mig2Profile *p = mig2_profile_new();
    char name[32];
    size_t i, n;
    uint16_t id;
    int d;

    (void)state;
    /* Config items: 1024, then LIMIT; replacing one still works. */
    for (i = 0; i < MIG2_MAX_CONFIG; i++) {
        snprintf(name, sizeof(name), "item-%zu", i);
        assert_int_equal(mig2_profile_propose_u64(p, name, i, 0), MIG2_OK);
    }
    assert_int_equal(mig2_profile_propose_u64(p, "one-too-many", 1, 0),
                     MIG2_ERR_LIMIT);
    assert_int_equal(mig2_profile_propose_str(p, "one-too-many", "s", 0),
                     MIG2_ERR_LIMIT);
    assert_int_equal(mig2_profile_propose_u64(p, "item-7", 70, 0), MIG2_OK);
    assert_int_equal(p->n_config, MIG2_MAX_CONFIG);

    /* Subsections: 256 per device, then LIMIT. */
    d = mig2_profile_add_device(p, "dev", 0, 1, 1);
    for (i = 0; i < MIG2_MAX_SUBSECTIONS; i++) {
        snprintf(name, sizeof(name), "sub-%zu", i);
        assert_int_equal(mig2_profile_add_subsection(p, d, name, false),
                         MIG2_OK);
    }
    assert_int_equal(mig2_profile_add_subsection(p, d, "extra", false),
                     MIG2_ERR_LIMIT);
    /* A duplicate of a full device is still reported as a duplicate. */
    assert_int_equal(mig2_profile_add_subsection(p, d, "sub-0", false),
                     MIG2_ERR_DUPLICATE);
    assert_int_equal(p->devices[d].n_subs, MIG2_MAX_SUBSECTIONS);

    /* Features: 1024, then LIMIT. */
    for (n = 0, id = 1; n < MIG2_MAX_FEATURES; id++) {
        if (!mig2_is_grease(id)) {
            assert_int_equal(mig2_profile_add_feature(p, id, false),
                             MIG2_OK);
            n++;
        }
    }
    assert_int_equal(mig2_profile_add_feature(p, 0x7000, false),
                     MIG2_ERR_LIMIT);
    assert_int_equal(p->n_features, MIG2_MAX_FEATURES);

    /* Policies: 1024 names, then LIMIT. */
    for (i = 0; i < MIG2_MAX_CONFIG; i++) {
        snprintf(name, sizeof(name), "pol-%zu", i);
        assert_int_equal(mig2_profile_policy_refuse(p, name), MIG2_OK);
    }
    assert_int_equal(mig2_profile_policy_refuse(p, "pol-extra"),
                     MIG2_ERR_LIMIT);
    mig2_profile_free(p);
}

static void test_profile_config_args(void **state)
{
    Mig2ConfigValue bad_type = { .type = (Mig2ConfigType)3, .u = 1 };
    Mig2Profile *p = mig2_profile_new();

    (void)state;
    /* Unknown flag bits, unknown value type, NULL value. */
    assert_int_equal(mig2_profile_propose_bool(p, "multifd", true, 0x02),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_config(p, "multifd", &bad_type, 0),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_add_config(p, "multifd", NULL, 0),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_propose_bool(NULL, "multifd", true, 0),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(p->n_config, 0);
    /* Clamping a registered bool or string makes no sense. */
    assert_int_equal(mig2_profile_policy_clamp(p, "multifd", 1),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_policy_clamp(p, "multifd-compression", 1),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_policy_clamp(p, "downtime-limit", 100),
                     MIG2_OK);
    assert_int_equal(p->n_policy, 1);
    assert_int_equal(mig2_profile_policy_refuse(NULL, "multifd"),
                     MIG2_ERR_INVALID_ARG);
    /* know_config wants a registered name. */
    assert_int_equal(mig2_profile_know_config(p, "no-such-item"),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_know_config(p, NULL),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_profile_know_config(NULL, "multifd"),
                     MIG2_ERR_INVALID_ARG);
    mig2_profile_free(p);
}

int main(void)
{
    const struct CMUnitTest registry[] = {
        cmocka_unit_test(test_status_registry),
        cmocka_unit_test(test_status_fatal),
        cmocka_unit_test(test_wire_error_names),
        cmocka_unit_test(test_problem_kind_names),
        cmocka_unit_test(test_error_format),
        cmocka_unit_test(test_error_add_drops_beyond_max),
    };
    const struct CMUnitTest error_frames[] = {
        cmocka_unit_test(test_error_encode_exact_bytes),
        cmocka_unit_test(test_error_round_trip),
        cmocka_unit_test(test_error_encode_truncates_utf8),
        cmocka_unit_test(test_error_decode_skips_unknown_tlvs),
        cmocka_unit_test(test_error_decode_defaults),
        cmocka_unit_test(test_error_decode_malformed),
        cmocka_unit_test(test_error_decode_many_problems),
    };
    const struct CMUnitTest hello[] = {
        cmocka_unit_test(test_hello_round_trip_src),
        cmocka_unit_test(test_hello_round_trip_grease),
        cmocka_unit_test(test_hello_round_trip_dst),
        cmocka_unit_test(test_src_minimal_ok),
        cmocka_unit_test(test_src_first_tlv_not_revisions),
        cmocka_unit_test(test_src_duplicate_once_only),
        cmocka_unit_test(test_src_missing_mandatory),
        cmocka_unit_test(test_src_truncated_tlv_header),
        cmocka_unit_test(test_src_tlv_length_past_end),
        cmocka_unit_test(test_src_machine_zero_length),
        cmocka_unit_test(test_src_machine_bad_string),
        cmocka_unit_test(test_src_page_size_bad),
        cmocka_unit_test(test_src_revisions_bad),
        cmocka_unit_test(test_src_nonce_bad_length),
        cmocka_unit_test(test_src_features_not_multiple_of_3),
        cmocka_unit_test(test_src_feature_duplicate),
        cmocka_unit_test(test_src_feature_zero),
        cmocka_unit_test(test_src_features_limit),
        cmocka_unit_test(test_src_unknown_critical_tlv),
        cmocka_unit_test(test_src_unknown_noncritical_skipped),
        cmocka_unit_test(test_src_grease_skipped),
        cmocka_unit_test(test_src_device_unknown_critical_nested),
        cmocka_unit_test(test_src_device_unknown_nested_skipped),
        cmocka_unit_test(test_src_device_vmin_over_vmax),
        cmocka_unit_test(test_src_device_header_bad),
        cmocka_unit_test(test_src_subsection_errors),
        cmocka_unit_test(test_src_config_bool_2),
        cmocka_unit_test(test_src_config_unknown_type),
        cmocka_unit_test(test_src_config_other_errors),
        cmocka_unit_test(test_src_config_limit),
        cmocka_unit_test(test_src_dst_only_tlvs_unknown),
        cmocka_unit_test(test_src_ram_block_duplicate),
        cmocka_unit_test(test_src_ram_block_bad),
        cmocka_unit_test(test_dst_requires_selected_revision),
    };
    const struct CMUnitTest profile[] = {
        cmocka_unit_test(test_profile_revisions),
        cmocka_unit_test(test_profile_page_size),
        cmocka_unit_test(test_profile_bad_strings),
        cmocka_unit_test(test_profile_devices),
        cmocka_unit_test(test_profile_features),
        cmocka_unit_test(test_profile_duplicates),
        cmocka_unit_test(test_profile_limits),
        cmocka_unit_test(test_profile_config_args),
    };
    int failed = 0;

    failed += cmocka_run_group_tests_name("registry", registry, NULL, NULL);
    failed += cmocka_run_group_tests_name("error-frames", error_frames, NULL,
                                          NULL);
    failed += cmocka_run_group_tests_name("hello", hello, NULL, NULL);
    failed += cmocka_run_group_tests_name("profile", profile, NULL, NULL);
    return failed ? 1 : 0;
}
