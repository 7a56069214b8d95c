/*
 * libFuzzer target channel: extra-channel headers (spec section 12) --
 * mig2_channel_header_length, mig2_channel_header_parse and admission
 * into a Mig2ChannelSet.
 *
 * Two real sessions are set up once, by running engine pairs in memory:
 * A negotiates multichannel with multifd on and 4 channels, B (the spec's
 * minimal profiles) negotiates no extra channels.  Each input builds a
 * fresh set for A or B (bit 0 of the first byte) and is then read as a
 * list of operations:
 *
 *   0  raw bytes offered as a header
 *   1  a header written by A's or B's source (mig2_channel_header_write)
 *      with a fuzzed type, index and count, then maybe one byte flipped
 *   2  a valid header cut short
 *   3  a valid header with a byte too many
 *
 * Every admission is checked and recorded in a model of the session's
 * channels (type, count, index range, no duplicates).  An unmodified
 * written header is checked against the model's reading of the rules
 * in spec 12.3 (session, type, count, index, duplicates): the set must
 * admit exactly the headers the rules admit, and every rejection must
 * carry one "malformed" problem with the path the rules name.  Cut or
 * padded headers must never parse.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

typedef struct Session {
    Mig2Engine *src;
    Mig2Engine *dst;
} Session;

static Session sessions[2];

/* Session B's source nonce, so that the two session ids differ. */
static const uint8_t other_nonce[MIG2_NONCE_LEN] = {
    0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
    0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
};

static void session_make(Session *s, unsigned prof, const uint8_t *nonce)
{
    Mig2EngineOptions so, dopt;
    Mig2Profile *p = fuzz_profile(prof);

    fuzz_engine_options(MIG2_ROLE_SOURCE, 0, &so);
    fuzz_engine_options(MIG2_ROLE_DESTINATION, 0, &dopt);
    if (nonce) {
        so.nonce = nonce;
    }
    s->src = mig2_engine_new(MIG2_ROLE_SOURCE, p, &so, NULL);
    s->dst = mig2_engine_new(MIG2_ROLE_DESTINATION, p, &dopt, NULL);
    mig2_profile_free(p);
    FUZZ_SETUP(s->src && s->dst);
    fuzz_pair_run(s->src, s->dst, NULL, NULL, false, false);
    FUZZ_SETUP(mig2_engine_state(s->src) == MIG2_STATE_COMPLETE);
    FUZZ_SETUP(mig2_engine_state(s->dst) == MIG2_STATE_COMPLETE);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    session_make(&sessions[0], 1, NULL);
    session_make(&sessions[1], 0, other_nonce);
    return 0;
}

/* A rejection names one reason, as channel.h lists them. */
static void check_rejection(int rc, const Mig2Error *why, const char *path)
{
    FUZZ_CHECK(rc == MIG2_ERR_PROTOCOL);
    FUZZ_CHECK(why->code == MIG2_WIRE_PROTOCOL);
    FUZZ_CHECK(why->message != NULL);
    FUZZ_CHECK(why->n_problems == 1);
    FUZZ_CHECK(why->problems[0].kind == MIG2_PROB_MALFORMED);
    if (path) {
        if (strcmp(why->problems[0].path, path) != 0) {
            fprintf(stderr, "rejected as %s, expected %s\n",
                    why->problems[0].path, path);
        }
        FUZZ_CHECK(strcmp(why->problems[0].path, path) == 0);
    }
}

typedef struct Model {
    unsigned set;               /* which session the set belongs to */
    unsigned expected;          /* multifd channels it expects */
    uint8_t seen[256];
    unsigned admitted;
} Model;

/* Offer a header; the model records what the set admitted. */
static int admit(Model *m, Mig2ChannelSet *set, const uint8_t *p,
                 size_t len, Mig2Error *why)
{
    Mig2ChannelHeader h;
    int rc = mig2_channel_set_admit(set, p, len, &h, why);

    if (rc == MIG2_OK) {
        FUZZ_CHECK(why->n_problems == 0);
        FUZZ_CHECK(memchr(h.type, '\0', sizeof(h.type)) != NULL);
        FUZZ_CHECK(strcmp(h.type, MIG2_CHANNEL_MULTIFD) == 0);
        FUZZ_CHECK(h.count == m->expected && h.index < h.count);
        FUZZ_CHECK(!m->seen[h.index]);
        m->seen[h.index] = 1;
        m->admitted++;
    }
    return rc;
}

/* What spec 12.3 says about an intact header @w from session @from. */
static const char *model_verdict(const Model *m, unsigned from,
                                 const char *type, unsigned index,
                                 unsigned count)
{
    if (from != m->set) {
        return "channel/session";
    }
    if (strcmp(type, MIG2_CHANNEL_MULTIFD) != 0 || m->expected == 0) {
        return "channel/type";
    }
    if (count != m->expected) {
        return "channel/count";
    }
    if (index >= count || m->seen[index]) {
        return "channel/index";
    }
    return NULL;
}

static void op_raw(FuzzIn *in, Model *m, Mig2ChannelSet *set,
                   Mig2Error *why)
{
    const uint8_t *p;
    size_t n = fuzz_take(in, fuzz_u16(in) % (MIG2_CHANNEL_MAX_LEN + 9), &p);
    Mig2ChannelHeader h;
    size_t total;
    int rc;

    if (n >= MIG2_CHANNEL_PREFIX_LEN &&
        mig2_channel_header_length(p, &total) == MIG2_OK) {
        FUZZ_CHECK(total > MIG2_CHANNEL_PREFIX_LEN &&
                   total <= MIG2_CHANNEL_MAX_LEN);
    }
    rc = mig2_channel_header_parse(p, n, &h);
    if (rc == MIG2_OK) {
        FUZZ_CHECK(memchr(h.type, '\0', sizeof(h.type)) != NULL);
        FUZZ_CHECK(n == MIG2_CHANNEL_PREFIX_LEN + 53 + strlen(h.type));
    }
    rc = admit(m, set, p, n, why);
    if (rc != MIG2_OK) {
        check_rejection(rc, why, NULL);
    }
}

/* Write a header from session @from; false when the writer refuses. */
static bool write_header(unsigned from, const char *type, uint16_t index,
                         uint16_t count, Mig2Writer *w)
{
    mig2_wr_init(w, MIG2_CHANNEL_MAX_LEN + 1);
    if (mig2_channel_header_write(sessions[from].src, type, index, count,
                                  w) != MIG2_OK) {
        mig2_wr_free(w);
        return false;
    }
    FUZZ_CHECK(w->len <= MIG2_CHANNEL_MAX_LEN);
    return true;
}

static uint16_t pick_number(FuzzIn *in)
{
    uint8_t how = fuzz_u8(in);

    switch (how >> 6) {
    case 0:
        return how % 6;
    case 1:
        return 4;
    default:
        return fuzz_u16(in);
    }
}

static void op_written(FuzzIn *in, Model *m, Mig2ChannelSet *set,
                       Mig2Error *why)
{
    unsigned from = fuzz_u8(in) & 1;
    uint8_t sel = fuzz_u8(in) % 3;
    char type[256] = MIG2_CHANNEL_MULTIFD;
    uint16_t index = pick_number(in), count = pick_number(in);
    uint8_t flip;
    const char *verdict;
    Mig2Writer w;
    int rc;

    if (sel == 1) {
        strcpy(type, MIG2_CHANNEL_POSTCOPY);
    } else if (sel == 2) {
        const uint8_t *p;
        size_t n = fuzz_take(in, fuzz_u8(in), &p);

        memcpy(type, p, n);
        type[n] = '\0';
    }
    if (!write_header(from, type, index, count, &w)) {
        return;
    }
    flip = fuzz_u8(in);
    if (flip) {
        w.buf[fuzz_u16(in) % w.len] ^= flip;
    }
    /* The verdict first: admit() updates the model. */
    verdict = model_verdict(m, from, type, index, count);
    rc = admit(m, set, w.buf, w.len, why);
    if (!flip) {
        if (verdict) {
            check_rejection(rc, why, verdict);
        } else {
            if (rc != MIG2_OK) {
                fprintf(stderr, "refused %s %u/%u from session %u: %s (%s)\n",
                        type, index, count, from, mig2_strerror(rc),
                        why->n_problems ? why->problems[0].path : "-");
            }
            FUZZ_CHECK(rc == MIG2_OK);
        }
    } else if (rc == MIG2_OK) {
        /* A flip the MAC does not cover cannot exist: all bytes count. */
        FUZZ_CHECK(!"admitted a header with a flipped byte");
    } else {
        check_rejection(rc, why, NULL);
    }
    mig2_wr_free(&w);
}

static void op_bad_length(FuzzIn *in, bool cut, Model *m,
                          Mig2ChannelSet *set, Mig2Error *why)
{
    Mig2ChannelHeader h;
    Mig2Writer w;
    size_t n;
    int rc;

    if (!write_header(fuzz_u8(in) & 1, MIG2_CHANNEL_MULTIFD, 0, 4, &w)) {
        FUZZ_CHECK(!"a valid header was refused");
    }
    if (cut) {
        n = fuzz_u16(in) % w.len;
    } else {
        mig2_wr_u8(&w, fuzz_u8(in));
        FUZZ_CHECK(mig2_wr_error(&w) == MIG2_OK);
        n = w.len;
    }
    rc = mig2_channel_header_parse(w.buf, n, &h);
    FUZZ_CHECK(rc == (cut ? MIG2_ERR_TRUNCATED : MIG2_ERR_TRAILING));
    rc = admit(m, set, w.buf, n, why);
    check_rejection(rc, why, "channel/header");
    mig2_wr_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzIn in;
    Model m = { 0 };
    Mig2ChannelSet *set;
    Mig2Error why = { 0 };
    char missing[80];
    size_t mlen;
    int rc, ops = 0;

    fuzz_in_init(&in, data, size);
    m.set = fuzz_u8(&in) & 1;
    set = mig2_channel_set_new(sessions[m.set].dst, &rc);
    FUZZ_SETUP(set && rc == MIG2_OK);
    m.expected = mig2_channel_set_expected(set, MIG2_CHANNEL_MULTIFD);
    FUZZ_CHECK(m.expected == (m.set == 0 ? 4 : 0));
    FUZZ_CHECK(mig2_channel_set_expected(set, MIG2_CHANNEL_POSTCOPY) == 0);

    while (in.left && ops++ < 64) {
        switch (fuzz_u8(&in) % 4) {
        case 0:
            op_raw(&in, &m, set, &why);
            break;
        case 1:
            op_written(&in, &m, set, &why);
            break;
        case 2:
            op_bad_length(&in, true, &m, set, &why);
            break;
        default:
            op_bad_length(&in, false, &m, set, &why);
            break;
        }
        mig2_error_clear(&why);
    }

    FUZZ_CHECK(mig2_channel_set_complete(set) == (m.admitted == m.expected));
    mlen = 1 + fuzz_u8(&in) % sizeof(missing);
    FUZZ_CHECK(mig2_channel_set_missing(set, missing, mlen) ==
               (m.admitted != m.expected));
    FUZZ_CHECK(memchr(missing, '\0', mlen) != NULL ||
               m.admitted == m.expected);
    mig2_channel_set_free(set);
    return 0;
}
