/*
 * Extra-channel headers and the per-session channel set (spec section 12).
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mig2/mig2.h"

#include "internal.h"

typedef struct Session {
    Mig2Engine *src;
    Mig2Engine *dst;
} Session;

static Mig2Profile *profile(bool source, bool multichannel, bool multifd,
                            uint64_t channels)
{
    Mig2Profile *p = mig2_profile_new();

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_machine(p, "m"), MIG2_OK);
    if (multichannel) {
        assert_int_equal(mig2_profile_add_feature(p, MIG2_FEAT_MULTICHANNEL,
                                                  false), MIG2_OK);
    }
    if (source) {
        assert_int_equal(mig2_profile_propose_bool(p, "multifd", multifd, 0),
                         MIG2_OK);
        assert_int_equal(mig2_profile_propose_u64(p, "multifd-channels",
                                                  channels, 0), MIG2_OK);
    } else {
        /* Destination policy: at most 4 channels. */
        assert_int_equal(mig2_profile_policy_clamp(p, "multifd-channels", 4),
                         MIG2_OK);
    }
    return p;
}

/* Run a whole handshake in memory. */
static void session_open(Session *s, bool multichannel, bool multifd,
                         uint64_t channels)
{
    Mig2Profile *sp = profile(true, multichannel, multifd, channels);
    Mig2Profile *dp = profile(false, multichannel, multifd, channels);
    int i;

    s->src = mig2_engine_new(MIG2_ROLE_SOURCE, sp, NULL, NULL);
    s->dst = mig2_engine_new(MIG2_ROLE_DESTINATION, dp, NULL, NULL);
    mig2_profile_free(sp);
    mig2_profile_free(dp);
    assert_non_null(s->src);
    assert_non_null(s->dst);
    for (i = 0; i < 8; i++) {
        const uint8_t *out;
        size_t len;

        if ((out = mig2_engine_output(s->src, &len)) != NULL) {
            assert_true(mig2_engine_recv(s->dst, out, len) >= 0);
            mig2_engine_output_consumed(s->src, len);
        }
        if ((out = mig2_engine_output(s->dst, &len)) != NULL) {
            assert_true(mig2_engine_recv(s->src, out, len) >= 0);
            mig2_engine_output_consumed(s->dst, len);
        }
    }
    assert_int_equal(mig2_engine_state(s->src), MIG2_STATE_COMPLETE);
    assert_int_equal(mig2_engine_state(s->dst), MIG2_STATE_COMPLETE);
}

static void session_close(Session *s)
{
    mig2_engine_free(s->src);
    mig2_engine_free(s->dst);
}

/* The header the source would send for one channel. */
static size_t header(const Session *s, const char *type, uint16_t index,
                     uint16_t count, uint8_t *buf)
{
    Mig2Writer w;
    size_t n;

    mig2_wr_init(&w, MIG2_CHANNEL_MAX_LEN);
    assert_int_equal(mig2_channel_header_write(s->src, type, index, count,
                                               &w), MIG2_OK);
    n = w.len;
    memcpy(buf, w.buf, n);
    mig2_wr_free(&w);
    return n;
}

/* A header with any index, MAC computed as a real source would. */
static size_t forge(const Session *s, const char *type, uint16_t index,
                    uint16_t count, uint8_t *buf)
{
    const uint8_t *sid = mig2_result_session_id(s->src);
    uint8_t tlen = (uint8_t)strlen(type), nums[4] = {
        (uint8_t)(index >> 8), (uint8_t)index,
        (uint8_t)(count >> 8), (uint8_t)count,
    };
    const void *parts[5] = { "mig2 channel", &tlen, type, nums, sid };
    size_t lens[5] = { 12, 1, tlen, 4, MIG2_SESSION_ID_LEN };
    uint8_t mac[MIG2_MAC_LEN];
    Mig2Writer w;
    size_t n;

    assert_int_equal(mig2_hmac(mig2_result_channel_key(s->src), MIG2_HASH_LEN,
                               parts, lens, 5, mac), MIG2_OK);
    mig2_wr_init(&w, MIG2_CHANNEL_MAX_LEN);
    mig2_wr_u32(&w, MIG2_CHANNEL_MAGIC);
    mig2_wr_u16(&w, MIG2_CHANNEL_VERSION);
    mig2_wr_u16(&w, (uint16_t)(53 + tlen));
    mig2_wr_str8(&w, type);
    mig2_wr_u16(&w, index);
    mig2_wr_u16(&w, count);
    mig2_wr_bytes(&w, sid, MIG2_SESSION_ID_LEN);
    mig2_wr_bytes(&w, mac, sizeof(mac));
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    n = w.len;
    memcpy(buf, w.buf, n);
    mig2_wr_free(&w);
    return n;
}

static void assert_rejected(Mig2ChannelSet *set, const uint8_t *p,
                            size_t len, const char *path)
{
    Mig2ChannelHeader h;
    Mig2Error why = { 0 };

    assert_int_equal(mig2_channel_set_admit(set, p, len, &h, &why),
                     MIG2_ERR_PROTOCOL);
    assert_int_equal(why.code, MIG2_WIRE_PROTOCOL);
    assert_int_equal(why.n_problems, 1);
    assert_string_equal(why.problems[0].path, path);
    assert_non_null(strstr(why.message, "channel rejected"));
    mig2_error_clear(&why);
}

static void test_header_layout(void **state)
{
    Session s;
    uint8_t buf[MIG2_CHANNEL_MAX_LEN];
    Mig2ChannelHeader h;
    size_t n, total;

    (void)state;
    session_open(&s, true, true, 4);
    n = header(&s, "multifd", 2, 4, buf);
    /* 8-byte prefix + str8 "multifd" (1 + 7) + 2 + 2 + 16 + 32. */
    assert_int_equal(n, 8 + 53 + 7);
    assert_memory_equal(buf, "MIG2\x00\x01\x00\x3c\x07multifd", 16);
    assert_int_equal(mig2_channel_header_length(buf, &total), MIG2_OK);
    assert_int_equal(total, n);
    assert_int_equal(mig2_channel_header_parse(buf, n, &h), MIG2_OK);
    assert_string_equal(h.type, "multifd");
    assert_int_equal(h.index, 2);
    assert_int_equal(h.count, 4);
    assert_memory_equal(h.session_id, mig2_result_session_id(s.dst),
                        MIG2_SESSION_ID_LEN);

    assert_int_equal(mig2_channel_header_parse(buf, n - 1, &h),
                     MIG2_ERR_TRUNCATED);
    assert_int_equal(mig2_channel_header_parse(buf, n + 1, &h),
                     MIG2_ERR_TRAILING);
    buf[0] = 'Q';
    assert_int_equal(mig2_channel_header_length(buf, &total),
                     MIG2_ERR_BAD_VALUE);
    buf[0] = 'M';
    buf[5] = 2;     /* header version 2 */
    assert_int_equal(mig2_channel_header_parse(buf, n, &h),
                     MIG2_ERR_BAD_VALUE);
    buf[5] = 1;
    buf[7] = 10;    /* length below the minimum */
    assert_int_equal(mig2_channel_header_length(buf, &total),
                     MIG2_ERR_TOO_LARGE);
    session_close(&s);
}

static void test_write_errors(void **state)
{
    Session s;
    Mig2Writer w;
    Mig2Profile *p = mig2_profile_new();
    Mig2Engine *e;

    (void)state;
    session_open(&s, true, true, 4);
    mig2_wr_init(&w, 1024);
    assert_int_equal(mig2_channel_header_write(s.src, "multifd", 4, 4, &w),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(mig2_channel_header_write(s.src, "", 0, 4, &w),
                     MIG2_ERR_INVALID_ARG);
    assert_int_equal(w.len, 0);
    mig2_profile_set_machine(p, "m");
    e = mig2_engine_new(MIG2_ROLE_SOURCE, p, NULL, NULL);
    assert_int_equal(mig2_channel_header_write(e, "multifd", 0, 1, &w),
                     MIG2_ERR_STATE);
    assert_null(mig2_channel_set_new(e, NULL));
    mig2_engine_free(e);
    mig2_profile_free(p);
    mig2_wr_free(&w);
    session_close(&s);
}

static void test_admit_any_order(void **state)
{
    static const uint16_t order[] = { 3, 0, 2, 1 };
    Session s;
    Mig2ChannelSet *set;
    Mig2ChannelHeader h;
    Mig2Error why = { 0 };
    uint8_t buf[MIG2_CHANNEL_MAX_LEN];
    char miss[64];
    size_t i, n;
    int rc;

    (void)state;
    /* The source asks for 8; the destination's policy clamps to 4. */
    session_open(&s, true, true, 8);
    set = mig2_channel_set_new(s.dst, &rc);
    assert_non_null(set);
    assert_int_equal(mig2_channel_set_expected(set, "multifd"), 4);
    assert_int_equal(mig2_channel_set_expected(set, "postcopy-preempt"), 0);
    assert_true(mig2_channel_set_missing(set, miss, sizeof(miss)));
    assert_string_equal(miss, "multifd channel 0 of 4");
    for (i = 0; i < 4; i++) {
        assert_false(mig2_channel_set_complete(set));
        n = header(&s, "multifd", order[i], 4, buf);
        assert_int_equal(mig2_channel_set_admit(set, buf, n, &h, &why),
                         MIG2_OK);
        assert_int_equal(h.index, order[i]);
        if (i == 1) {
            assert_true(mig2_channel_set_missing(set, miss, sizeof(miss)));
            assert_string_equal(miss, "multifd channel 1 of 4");
        }
    }
    assert_true(mig2_channel_set_complete(set));
    assert_false(mig2_channel_set_missing(set, miss, sizeof(miss)));

    /* A fifth channel (a duplicate index) is refused. */
    n = header(&s, "multifd", 0, 4, buf);
    assert_rejected(set, buf, n, "channel/index");
    mig2_channel_set_free(set);
    session_close(&s);
}

static void test_rejections(void **state)
{
    Session s, other;
    Mig2ChannelSet *set;
    uint8_t buf[MIG2_CHANNEL_MAX_LEN];
    Mig2ChannelHeader h;
    Mig2Error why = { 0 };
    size_t n;

    (void)state;
    session_open(&s, true, true, 2);
    session_open(&other, true, true, 2);
    set = mig2_channel_set_new(s.dst, NULL);
    assert_non_null(set);

    /* Garbage: not even a header. */
    memcpy(buf, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_rejected(set, buf, 18, "channel/header");
    /* A valid header replayed from another session. */
    n = header(&other, "multifd", 0, 2, buf);
    assert_rejected(set, buf, n, "channel/session");
    /* Right session id, wrong key: one bit of the MAC flipped. */
    n = header(&s, "multifd", 0, 2, buf);
    buf[n - 1] ^= 1;
    assert_rejected(set, buf, n, "channel/mac");
    /* The MAC covers index and count: changing them breaks it. */
    n = header(&s, "multifd", 0, 2, buf);
    buf[8 + 1 + 7 + 1] = 1;     /* index 0 -> 1 */
    assert_rejected(set, buf, n, "channel/mac");
    /* A type the session did not negotiate. */
    n = header(&s, "postcopy-preempt", 0, 1, buf);
    assert_rejected(set, buf, n, "channel/type");
    /* A count other than the negotiated 2. */
    n = header(&s, "multifd", 0, 3, buf);
    assert_rejected(set, buf, n, "channel/count");
    /* Index 2 of 2: the writer refuses it, so forge it with the key. */
    n = forge(&s, "multifd", 2, 2, buf);
    assert_rejected(set, buf, n, "channel/index");
    /* Nothing so far was admitted; a duplicate index is refused. */
    assert_false(mig2_channel_set_complete(set));
    n = header(&s, "multifd", 1, 2, buf);
    assert_int_equal(mig2_channel_set_admit(set, buf, n, &h, &why), MIG2_OK);
    assert_rejected(set, buf, n, "channel/index");
    n = header(&s, "multifd", 0, 2, buf);
    assert_int_equal(mig2_channel_set_admit(set, buf, n, &h, &why), MIG2_OK);
    assert_true(mig2_channel_set_complete(set));
    mig2_channel_set_free(set);
    session_close(&other);
    session_close(&s);
}

static void test_nothing_negotiated(void **state)
{
    Session s;
    Mig2ChannelSet *set;
    uint8_t buf[MIG2_CHANNEL_MAX_LEN];
    char miss[64];
    size_t n;

    (void)state;
    /* multifd off: no channel of any type is expected. */
    session_open(&s, true, false, 4);
    set = mig2_channel_set_new(s.dst, NULL);
    assert_int_equal(mig2_channel_set_expected(set, "multifd"), 0);
    assert_true(mig2_channel_set_complete(set));
    assert_false(mig2_channel_set_missing(set, miss, sizeof(miss)));
    n = header(&s, "multifd", 0, 4, buf);
    assert_rejected(set, buf, n, "channel/type");
    mig2_channel_set_free(set);
    session_close(&s);

    /* multifd on, but one side lacks the multichannel feature. */
    session_open(&s, false, true, 4);
    set = mig2_channel_set_new(s.src, NULL);
    assert_int_equal(mig2_channel_set_expected(set, "multifd"), 0);
    mig2_channel_set_free(set);
    session_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_admit_any_order),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_nothing_negotiated),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
