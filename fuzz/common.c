/*
 * mig2 fuzzing - profiles and checks shared by the targets and gen_corpus
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "internal.h"

#include "common.h"

const uint8_t fuzz_src_nonce[MIG2_NONCE_LEN] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
};
const uint8_t fuzz_dst_nonce[MIG2_NONCE_LEN] = {
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};
const uint8_t fuzz_binding[32] = {
    0x62, 0x69, 0x6e, 0x64, 0x69, 0x6e, 0x67, 0x20,
    0x66, 0x6f, 0x72, 0x20, 0x66, 0x75, 0x7a, 0x7a,
    0x69, 0x6e, 0x67, 0x20, 0x6d, 0x69, 0x67, 0x32,
    0x20, 0x65, 0x6e, 0x67, 0x69, 0x6e, 0x65, 0x73,
};

/* Devices, RAM and features of the PC profiles (1 to 3). */
static void pc_manifest(Mig2Profile *p, bool older)
{
    int dev;

    FUZZ_SETUP(mig2_profile_set_machine(p, "pc-i440fx-7.2") == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_ram_block(p, "pc.ram", 128u << 20,
                                          4096) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_ram_block(p, "vga.vram", 16u << 20,
                                          4096) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH,
                                        true) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_feature(p, MIG2_FEAT_MULTICHANNEL,
                                        false) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE,
                                        false) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_feature(p, MIG2_FEAT_DEVICE_STATE_VERSIONS,
                                        false) == MIG2_OK);

    FUZZ_SETUP(mig2_profile_add_device(p, "timer", 0, 1, 2) >= 0);
    dev = mig2_profile_add_device(p, "serial", 0, older ? 2 : 1, 3);
    FUZZ_SETUP(dev >= 0);
    FUZZ_SETUP(mig2_profile_add_subsection(p, dev, "fifo", true) == MIG2_OK);
    if (!older) {
        FUZZ_SETUP(mig2_profile_add_subsection(p, dev, "modem",
                                               false) == MIG2_OK);
    }
    dev = mig2_profile_add_device(p, "virtio-net", 0, 1, 1);
    FUZZ_SETUP(dev >= 0);
    FUZZ_SETUP(mig2_profile_add_subsection(p, dev, "rss", true) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_add_device(p, "cpu", 0, 1, 4) >= 0);
    FUZZ_SETUP(mig2_profile_add_device(p, "cpu", 1, 1, 4) >= 0);
    if (older) {
        /* One the others lack, and a feature they do not announce. */
        FUZZ_SETUP(mig2_profile_add_device(p, "e1000", 0, 1, 2) >= 0);
        FUZZ_SETUP(mig2_profile_add_feature(p, MIG2_FEAT_SWITCHOVER_ACK,
                                            true) == MIG2_OK);
    } else {
        FUZZ_SETUP(mig2_profile_add_device(p, "rtc", 0, 1, 3) >= 0);
        FUZZ_SETUP(mig2_profile_add_feature(p, MIG2_FEAT_POSTCOPY,
                                            false) == MIG2_OK);
    }
}

/* What a source proposes and a destination enforces (PC profiles). */
static void pc_config(Mig2Profile *p, bool older)
{
    FUZZ_SETUP(mig2_profile_propose_bool(p, "multifd", true,
                                         0) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_propose_u64(p, "multifd-channels", 4,
                                        MIG2_CONFIG_REQUIRED) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_propose_u64(p, "max-bandwidth", 1u << 30,
                                        0) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_propose_u64(p, "downtime-limit", 300,
                                        0) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_propose_bool(p, "postcopy-ram", true,
                                         0) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_propose_str(p, "multifd-compression", "zstd",
                                        0) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_propose_u64(p, "x-future-knob", 7,
                                        0) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_policy_clamp(p, "max-bandwidth",
                                         100u << 20) == MIG2_OK);
    FUZZ_SETUP(mig2_profile_policy_refuse(p, "postcopy-ram") == MIG2_OK);
    if (older) {
        static const char *const known[] = {
            "multifd", "multifd-channels", "max-bandwidth", "postcopy-ram",
            "multifd-compression",
        };
        size_t i;

        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            FUZZ_SETUP(mig2_profile_know_config(p, known[i]) == MIG2_OK);
        }
    }
}

Mig2Profile *fuzz_profile(unsigned idx)
{
    Mig2Profile *p = mig2_profile_new();

    FUZZ_SETUP(p);
    switch (idx % FUZZ_PROFILES) {
    case 0:
        FUZZ_SETUP(mig2_profile_set_build(p, "example") == MIG2_OK);
        FUZZ_SETUP(mig2_profile_set_machine(p, "none") == MIG2_OK);
        break;
    case 1:
    case 2:
        FUZZ_SETUP(mig2_profile_set_build(p, "mig2-fuzz (pc)") == MIG2_OK);
        pc_manifest(p, false);
        pc_config(p, false);
        if (idx % FUZZ_PROFILES == 2) {
            FUZZ_SETUP(mig2_profile_set_revisions(p, 1, 1) == MIG2_OK);
        }
        break;
    default:
        FUZZ_SETUP(mig2_profile_set_build(p, "mig2-fuzz (older)") ==
                   MIG2_OK);
        pc_manifest(p, true);
        pc_config(p, true);
        break;
    }
    return p;
}

void fuzz_engine_options(Mig2Role role, uint8_t ctl, Mig2EngineOptions *o)
{
    memset(o, 0, sizeof(*o));
    o->nonce = role == MIG2_ROLE_SOURCE ? fuzz_src_nonce : fuzz_dst_nonce;
    o->no_grease = ctl & FUZZ_HS_NO_GREASE;
    o->max_frame = ctl & FUZZ_HS_SMALL_FRAMES ? FUZZ_HS_SMALL_MAX : 0;
}

bool fuzz_verify_data(const Mig2Engine *e, bool binding, const char *label,
                      uint8_t out[MIG2_HASH_LEN])
{
    const uint8_t *th = mig2_result_transcript_hash(e);
    const void *parts[2];
    size_t lens[2];

    if (!th) {
        return false;
    }
    parts[0] = label;
    lens[0] = strlen(label);
    parts[1] = th;
    lens[1] = MIG2_HASH_LEN;
    return mig2_hmac(binding ? fuzz_binding : NULL,
                     binding ? sizeof(fuzz_binding) : 0, parts, lens, 2,
                     out) == MIG2_OK;
}

void fuzz_check_output_frames(const uint8_t *p, size_t len)
{
    size_t off = 0;

    while (off < len) {
        Mig2FrameHeader h;
        const uint8_t *payload;

        FUZZ_CHECK(len - off >= MIG2_FRAME_HEADER_LEN);
        FUZZ_CHECK(mig2_frame_header_parse(p + off, MIG2_FRAME_MAX,
                                           &h) == MIG2_OK);
        payload = p + off + MIG2_FRAME_HEADER_LEN;
        FUZZ_CHECK(len - off - MIG2_FRAME_HEADER_LEN >= h.length);

        if (h.type == MIG2_FRAME_ERROR) {
            Mig2Error err = { 0 };

            FUZZ_CHECK(mig2_error_decode(payload, h.length, &err) ==
                       MIG2_OK);
            mig2_error_clear(&err);
        } else if (h.type == MIG2_FRAME_SRC_HELLO ||
                   h.type == MIG2_FRAME_DST_HELLO) {
            Mig2Hello hello = { 0 };
            Mig2Error err = { 0 };
            int rc = mig2_hello_decode(payload, h.length, h.type, &hello,
                                       &err);

            if (rc != MIG2_OK) {
                char *text = mig2_error_format(&err);

                fprintf(stderr, "own HELLO does not decode: %s\n%s\n",
                        mig2_strerror(rc), text ? text : "");
                free(text);
            }
            FUZZ_CHECK(rc == MIG2_OK);
            mig2_hello_clear(&hello);
            mig2_error_clear(&err);
        } else if (h.type == MIG2_FRAME_FINISHED) {
            FUZZ_CHECK(h.length == MIG2_VERIFY_LEN);
        } else if (h.type == MIG2_FRAME_READY) {
            FUZZ_CHECK(h.length == 0);
        }
        off += MIG2_FRAME_HEADER_LEN + h.length;
    }
}

void fuzz_buf_add(FuzzBuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;

        while (cap < b->len + n) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        FUZZ_SETUP(b->p);
        b->cap = cap;
    }
    if (n) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
}

void fuzz_buf_free(FuzzBuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Move what @from queued into @to; true if anything moved. */
static bool pair_step(Mig2Engine *from, Mig2Engine *to, FuzzBuf *rec)
{
    size_t n;
    const uint8_t *p = mig2_engine_output(from, &n);
    Mig2Event ev;

    if (!n) {
        return false;
    }
    if (rec) {
        fuzz_buf_add(rec, p, n);
    }
    (void)mig2_engine_recv(to, p, n);
    mig2_engine_output_consumed(from, n);
    while (mig2_engine_next_event(to, &ev)) {
    }
    return true;
}

void fuzz_pair_run(Mig2Engine *s, Mig2Engine *d, FuzzBuf *s2d, FuzzBuf *d2s,
                   bool abort_src, bool abort_dst)
{
    bool moved = true, aborted_src = false, aborted_dst = false;
    Mig2Event ev;
    int rounds;

    for (rounds = 0; moved && rounds < 16; rounds++) {
        moved = pair_step(s, d, s2d);
        if (moved && abort_dst && !aborted_dst) {
            /* The destination gives up once it has read the source. */
            aborted_dst = true;
            (void)mig2_engine_abort(d, MIG2_WIRE_CANCELLED,
                                    "cancelled by the operator");
        }
        if (abort_src && !aborted_src) {
            /* The source gives up before it reads the reply. */
            size_t n;
            const uint8_t *p = mig2_engine_output(d, &n);

            if (n) {
                if (d2s) {
                    fuzz_buf_add(d2s, p, n);
                }
                mig2_engine_output_consumed(d, n);
                aborted_src = true;
                (void)mig2_engine_abort(s, MIG2_WIRE_CANCELLED,
                                        "cancelled by the operator");
                moved = true;
                continue;
            }
        }
        if (pair_step(d, s, d2s)) {
            moved = true;
        }
    }
    while (mig2_engine_next_event(s, &ev)) {
    }
    while (mig2_engine_next_event(d, &ev)) {
    }
}
