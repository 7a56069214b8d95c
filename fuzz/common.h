/*
 * mig2 fuzzing - helpers shared by the libFuzzer targets and the corpus
 * generator: a bounded reader over the fuzzer's input (in the manner of
 * LLVM's FuzzedDataProvider), the endpoint profiles the handshake targets
 * run, and the byte-stream helpers they use.
 *
 * Nothing here may depend on libFuzzer: gen_corpus links it too.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_FUZZ_COMMON_H
#define MIG2_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mig2/mig2.h"

/*
 * A finding that no sanitizer would see (a broken invariant): print it and
 * abort, which libFuzzer reports as a crash with the input saved.
 */
#define FUZZ_CHECK(cond)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* Harness setup that cannot fail unless the harness itself is broken. */
#define FUZZ_SETUP(cond)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: fuzz setup failed: %s\n", __FILE__,     \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* ---- the input as a stream of decisions ---- */

typedef struct FuzzIn {
    const uint8_t *p;
    size_t left;
} FuzzIn;

static inline void fuzz_in_init(FuzzIn *in, const uint8_t *p, size_t len)
{
    in->p = p;
    in->left = len;
}

/* The next byte, or 0 once the input is used up. */
static inline uint8_t fuzz_u8(FuzzIn *in)
{
    if (!in->left) {
        return 0;
    }
    in->left--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(FuzzIn *in)
{
    uint16_t hi = fuzz_u8(in);

    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

/* Up to @n bytes: *@out points into the input; returns how many. */
static inline size_t fuzz_take(FuzzIn *in, size_t n, const uint8_t **out)
{
    if (n > in->left) {
        n = in->left;
    }
    *out = in->p;
    in->p += n;
    in->left -= n;
    return n;
}

/* A small deterministic generator for chunk sizes (xorshift32). */
static inline uint32_t fuzz_rand(uint32_t *state)
{
    uint32_t x = *state ? *state : 0x9e3779b9u;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static inline uint32_t fuzz_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static inline uint16_t fuzz_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* ---- profiles ---- */

/*
 * The endpoints the handshake targets play, chosen by two bits of the
 * input; gen_corpus runs pairs of them to make the seeds.
 *   0  the spec's minimal profile (docs/protocol.md section 18)
 *   1  a PC with RAM blocks, devices and subsections, features, a
 *      configuration proposal and a destination policy; revisions 1..2
 *   2  the same, revision 1 only (FINISHED then READY)
 *   3  an older build: fewer config names known, narrower device
 *      versions, a device and a subsection the others lack, a required
 *      feature the others do not announce
 */
#define FUZZ_PROFILES 4

Mig2Profile *fuzz_profile(unsigned idx);

/* The fixed nonces (the spec's examples use these too). */
extern const uint8_t fuzz_src_nonce[MIG2_NONCE_LEN];
extern const uint8_t fuzz_dst_nonce[MIG2_NONCE_LEN];
/* TLS binding material used when an input asks for one. */
extern const uint8_t fuzz_binding[32];

/*
 * Handshake target inputs start with two control bytes, then the peer's
 * bytes.  Control byte 0:
 */
#define FUZZ_HS_PROFILE_MASK   0x03u   /* the fuzzed engine's profile */
#define FUZZ_HS_FIXUP          0x04u   /* rewrite FINISHED verify data */
#define FUZZ_HS_SMALL_FRAMES   0x08u   /* max_frame = FUZZ_HS_SMALL_MAX */
#define FUZZ_HS_BINDING        0x10u   /* set fuzz_binding as TLS binding */
#define FUZZ_HS_NO_GREASE      0x20u   /* the fuzzed engine sends no grease */
#define FUZZ_HS_CHUNK_SHIFT    6       /* 2 bits: how recv() is called */
/* Control byte 1 seeds the chunk sizes. */
#define FUZZ_HS_SMALL_MAX      512u

enum {
    FUZZ_CHUNK_FRAME = 0,      /* one recv() per frame */
    FUZZ_CHUNK_SMALL = 1,      /* 1..64 bytes at a time */
    FUZZ_CHUNK_BYTE = 2,       /* one byte at a time */
    FUZZ_CHUNK_LARGE = 3,      /* 1..4096 bytes, across frame boundaries */
};

/* Engine options for control byte @ctl and role @role. */
void fuzz_engine_options(Mig2Role role, uint8_t ctl, Mig2EngineOptions *o);

/*
 * The FINISHED verify data a side would send: HMAC-SHA256 keyed with the
 * binding over @label and the transcript hash (spec 11.2).
 */
bool fuzz_verify_data(const Mig2Engine *e, bool binding, const char *label,
                      uint8_t out[MIG2_HASH_LEN]);

#define FUZZ_LABEL_DST_FINISHED "mig2 dst finished"
#define FUZZ_LABEL_SRC_FINISHED "mig2 src finished"

/*
 * Check every frame in @p/@len (whole frames, as an engine queues them):
 * ERROR frames must decode, HELLO frames must decode with the library's
 * own decoder.  Aborts on a violation.
 */
void fuzz_check_output_frames(const uint8_t *p, size_t len);

/* ---- engine pairs (gen_corpus, the channel target's sessions) ---- */

typedef struct FuzzBuf {
    uint8_t *p;
    size_t len, cap;
} FuzzBuf;

void fuzz_buf_add(FuzzBuf *b, const void *p, size_t n);
void fuzz_buf_free(FuzzBuf *b);

/*
 * Shuttle bytes between source @s and destination @d until neither has
 * anything to send, appending what each sent to @s2d / @d2s (may be NULL).
 * With @abort_dst the destination aborts (ERROR cancelled) once it has
 * read the source's first flight; with @abort_src the source aborts
 * instead of reading the destination's first answer (which is still
 * recorded in @d2s).
 */
void fuzz_pair_run(Mig2Engine *s, Mig2Engine *d, FuzzBuf *s2d, FuzzBuf *d2s,
                   bool abort_src, bool abort_dst);

#endif /* MIG2_FUZZ_COMMON_H */
