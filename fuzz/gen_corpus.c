/*
 * gen_corpus - write the seed corpora of the libMig2 fuzz targets
 *
 * Usage: gen_corpus PATH/TO/protocol.md OUTDIR
 *
 * Writes OUTDIR/handshake_src, handshake_dst, error and channel.  The
 * handshake seeds are real transcripts: pairs of engines (the profiles in
 * common.c) run in memory, and each direction's bytes become a seed for
 * the target playing the other side, behind the two control bytes that
 * make the fuzzed engine the one that took part (handshake.c).  The spec's
 * hex examples (section 18) are seeds too.  ERROR payloads seen in the
 * transcripts seed the error target; the channel target gets operation
 * lists (fuzz_channel.c) that admit all four channels of its session and
 * try the rejections.  The legacy and QMP seeds come from gen-corpus.sh.
 *
 * Every handshake seed is replayed into a fresh engine without the
 * FINISHED fix-up and its end state printed, so a seed that no longer
 * reaches where it should is easy to see.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

static const char *outdir;

static void write_seed(const char *target, const char *name,
                       const uint8_t *p, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", outdir, target);
    if (mkdir(path, 0777) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* ---- the spec's examples ---- */

typedef struct Example {
    const char *name;
    FuzzBuf bytes;
} Example;

static Example examples[] = {
    { "preamble", { 0 } },
    { "src-hello-minimal", { 0 } },
    { "dst-hello-minimal", { 0 } },
    { "finished", { 0 } },
    { "error-incompatible", { 0 } },
};
#define N_EXAMPLES (sizeof(examples) / sizeof(examples[0]))

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;

    if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) < 0) {
        perror(path);
        exit(1);
    }
    s = malloc((size_t)n + 1);
    FUZZ_SETUP(s);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

/* The ```hex block after "<!-- example: NAME -->". */
static void load_example(const char *spec, Example *ex)
{
    char marker[96];
    const char *p, *end;

    snprintf(marker, sizeof(marker), "<!-- example: %s -->", ex->name);
    p = strstr(spec, marker);
    FUZZ_SETUP(p);
    p = strstr(p, "```hex");
    FUZZ_SETUP(p);
    p += 6;
    end = strstr(p, "```");
    FUZZ_SETUP(end);
    while (p < end) {
        unsigned v;

        if (sscanf(p, "%2x", &v) == 1 && p[0] != ' ' && p[0] != '\n') {
            uint8_t b = (uint8_t)v;

            fuzz_buf_add(&ex->bytes, &b, 1);
            p += 2;
        } else {
            p++;
        }
    }
}

static const FuzzBuf *example(const char *name)
{
    size_t i;

    for (i = 0; i < N_EXAMPLES; i++) {
        if (strcmp(examples[i].name, name) == 0) {
            return &examples[i].bytes;
        }
    }
    FUZZ_SETUP(!"no such example");
    return NULL;
}

/* ---- replay: where a seed takes a fresh engine, without fix-up ---- */

static const char *replay(Mig2Role role, const uint8_t *seed, size_t len)
{
    Mig2EngineOptions o;
    Mig2Profile *p = fuzz_profile(seed[0] & FUZZ_HS_PROFILE_MASK);
    Mig2Engine *e;
    Mig2Event ev;
    const char *what;
    size_t n;

    fuzz_engine_options(role, seed[0], &o);
    e = mig2_engine_new(role, p, &o, NULL);
    mig2_profile_free(p);
    FUZZ_SETUP(e);
    if (seed[0] & FUZZ_HS_BINDING) {
        FUZZ_SETUP(mig2_engine_set_binding(e, fuzz_binding,
                                           sizeof(fuzz_binding)) == 0);
    }
    (void)mig2_engine_output(e, &n);
    mig2_engine_output_consumed(e, n);
    (void)mig2_engine_recv(e, seed + 2, len - 2);
    while (mig2_engine_next_event(e, &ev)) {
    }
    switch (mig2_engine_state(e)) {
    case MIG2_STATE_COMPLETE:
        what = "complete";
        break;
    case MIG2_STATE_FAILED:
        what = mig2_engine_error(e)->from_peer ? "rejected by the peer"
                                                : "failed";
        break;
    default:
        what = "running";
        break;
    }
    mig2_engine_free(e);
    return what;
}

static void handshake_seed(Mig2Role role, const char *name, uint8_t ctl,
                           uint8_t seed, const uint8_t *p, size_t len)
{
    const char *target = role == MIG2_ROLE_SOURCE ? "handshake_src"
                                                  : "handshake_dst";
    FuzzBuf b = { 0 };
    uint8_t hdr[2] = { ctl, seed };

    fuzz_buf_add(&b, hdr, 2);
    fuzz_buf_add(&b, p, len);
    write_seed(target, name, b.p, b.len);
    printf("%-14s %-28s %6zu bytes  %s\n", target, name, b.len,
           replay(role, b.p, b.len));
    fuzz_buf_free(&b);
}

/* ---- ERROR payloads found in a stream of frames ---- */

static unsigned n_error_seeds;

static void collect_errors(const char *scenario, const uint8_t *p,
                           size_t len)
{
    size_t off = 0;

    while (len - off >= MIG2_FRAME_HEADER_LEN) {
        uint16_t type = fuzz_be16(p + off);
        uint32_t flen = fuzz_be32(p + off + 4);
        char name[96];

        if (flen > len - off - MIG2_FRAME_HEADER_LEN) {
            return;
        }
        if (type == MIG2_FRAME_ERROR) {
            snprintf(name, sizeof(name), "engine-%s-%u", scenario,
                     n_error_seeds++);
            write_seed("error", name, p + off + MIG2_FRAME_HEADER_LEN, flen);
        }
        off += MIG2_FRAME_HEADER_LEN + flen;
    }
}

/* ---- engine pairs ---- */

typedef struct Scenario {
    const char *name;
    unsigned src, dst;          /* profiles */
    uint8_t src_ctl, dst_ctl;   /* extra control bits for each seed */
    bool binding;
    bool abort_src, abort_dst;
    bool trailing;              /* data-phase bytes after the handshake */
} Scenario;

#define NG FUZZ_HS_NO_GREASE
#define CH(m) ((uint8_t)((m) << FUZZ_HS_CHUNK_SHIFT))

static const Scenario scenarios[] = {
    { "minimal", 0, 0, NG, NG, false, false, false, false },
    { "minimal-grease", 0, 0, 0, CH(FUZZ_CHUNK_SMALL), false, false, false,
      false },
    { "pc", 1, 1, 0, 0, false, false, false, false },
    { "pc-binding", 1, 1, 0, 0, true, false, false, false },
    { "pc-chunks", 1, 1, CH(FUZZ_CHUNK_SMALL), CH(FUZZ_CHUNK_BYTE), false,
      false, false, false },
    { "pc-data-phase", 1, 1, CH(FUZZ_CHUNK_LARGE), 0, false, false, false,
      true },
    { "pc-small-frames", 1, 1, FUZZ_HS_SMALL_FRAMES, FUZZ_HS_SMALL_FRAMES,
      false, false, false, false },
    { "rev1", 2, 2, 0, 0, false, false, false, false },
    { "rev1-binding", 2, 2, NG, NG, true, false, false, true },
    { "rev1-src-only", 2, 1, 0, 0, false, false, false, false },
    { "rev1-dst-only", 1, 2, 0, 0, false, false, false, false },
    { "older-src", 3, 1, 0, 0, false, false, false, false },
    { "older-dst", 1, 3, 0, 0, false, false, false, false },
    { "older-both", 3, 3, 0, 0, false, false, false, false },
    { "machine-mismatch", 0, 1, 0, 0, false, false, false, false },
    { "src-cancels", 2, 2, 0, 0, false, true, false, false },
    { "dst-cancels", 2, 2, 0, 0, false, false, true, false },
};

static void run_scenario(const Scenario *sc)
{
    uint8_t sctl = (uint8_t)(sc->src | FUZZ_HS_FIXUP | sc->src_ctl);
    uint8_t dctl = (uint8_t)(sc->dst | FUZZ_HS_FIXUP | sc->dst_ctl);
    Mig2EngineOptions so, dopt;
    Mig2Profile *ps = fuzz_profile(sc->src), *pd = fuzz_profile(sc->dst);
    Mig2Engine *s, *d;
    FuzzBuf s2d = { 0 }, d2s = { 0 };
    size_t first;

    if (sc->binding) {
        sctl |= FUZZ_HS_BINDING;
        dctl |= FUZZ_HS_BINDING;
    }
    fuzz_engine_options(MIG2_ROLE_SOURCE, sctl, &so);
    fuzz_engine_options(MIG2_ROLE_DESTINATION, dctl, &dopt);
    s = mig2_engine_new(MIG2_ROLE_SOURCE, ps, &so, NULL);
    d = mig2_engine_new(MIG2_ROLE_DESTINATION, pd, &dopt, NULL);
    FUZZ_SETUP(s && d);
    if (sc->binding) {
        FUZZ_SETUP(mig2_engine_set_binding(s, fuzz_binding,
                                           sizeof(fuzz_binding)) == 0);
        FUZZ_SETUP(mig2_engine_set_binding(d, fuzz_binding,
                                           sizeof(fuzz_binding)) == 0);
    }
    (void)mig2_engine_output(s, &first);
    fuzz_pair_run(s, d, &s2d, &d2s, sc->abort_src, sc->abort_dst);
    if (sc->trailing) {
        /* A SYNC frame of round 1: the data phase has begun. */
        static const uint8_t sync[] = {
            0x01, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04,
            0x00, 0x00, 0x00, 0x01,
        };

        fuzz_buf_add(&s2d, sync, sizeof(sync));
        fuzz_buf_add(&d2s, sync, sizeof(sync));
    }

    /* The destination target gets all the source sent ... */
    handshake_seed(MIG2_ROLE_DESTINATION, sc->name, dctl,
                   (uint8_t)(sc - scenarios), s2d.p, s2d.len);
    /* ... the source target what came back after its first flight. */
    handshake_seed(MIG2_ROLE_SOURCE, sc->name, sctl,
                   (uint8_t)(sc - scenarios), d2s.p, d2s.len);
    collect_errors(sc->name, s2d.p + MIG2_PREAMBLE_LEN,
                   s2d.len - MIG2_PREAMBLE_LEN);
    collect_errors(sc->name, d2s.p, d2s.len);

    mig2_engine_free(s);
    mig2_engine_free(d);
    mig2_profile_free(ps);
    mig2_profile_free(pd);
    fuzz_buf_free(&s2d);
    fuzz_buf_free(&d2s);
}

/* The FINISHED a minimal, grease-free source answers the spec's flight. */
static void spec_source_finished(FuzzBuf *out)
{
    Mig2EngineOptions o;
    Mig2Profile *p = fuzz_profile(0);
    Mig2Engine *e;
    const uint8_t *q;
    size_t n;

    fuzz_engine_options(MIG2_ROLE_SOURCE, NG, &o);
    e = mig2_engine_new(MIG2_ROLE_SOURCE, p, &o, NULL);
    mig2_profile_free(p);
    FUZZ_SETUP(e);
    (void)mig2_engine_output(e, &n);
    mig2_engine_output_consumed(e, n);
    FUZZ_SETUP(mig2_engine_recv(e, example("dst-hello-minimal")->p,
                                example("dst-hello-minimal")->len) >= 0);
    FUZZ_SETUP(mig2_engine_recv(e, example("finished")->p,
                                example("finished")->len) >= 0);
    FUZZ_SETUP(mig2_engine_state(e) == MIG2_STATE_COMPLETE);
    q = mig2_engine_output(e, &n);
    FUZZ_SETUP(n == MIG2_FRAME_HEADER_LEN + MIG2_VERIFY_LEN);
    fuzz_buf_add(out, q, n);
    mig2_engine_free(e);
}

static void spec_seeds(void)
{
    const FuzzBuf *err = example("error-incompatible");
    FuzzBuf b = { 0 };

    /* The source's side of section 18, and the FINISHED it then sends. */
    fuzz_buf_add(&b, example("preamble")->p, example("preamble")->len);
    fuzz_buf_add(&b, example("src-hello-minimal")->p,
                 example("src-hello-minimal")->len);
    spec_source_finished(&b);
    handshake_seed(MIG2_ROLE_DESTINATION, "spec-examples", 0 | NG, 0, b.p,
                   b.len);
    fuzz_buf_free(&b);

    /* The destination's, verbatim: its FINISHED must verify as is. */
    fuzz_buf_add(&b, example("dst-hello-minimal")->p,
                 example("dst-hello-minimal")->len);
    fuzz_buf_add(&b, example("finished")->p, example("finished")->len);
    handshake_seed(MIG2_ROLE_SOURCE, "spec-examples", 0 | NG, 0, b.p,
                   b.len);
    fuzz_buf_free(&b);

    /* An ERROR instead of a HELLO, both ways. */
    handshake_seed(MIG2_ROLE_SOURCE, "spec-error", 0 | NG, 0, err->p,
                   err->len);
    fuzz_buf_add(&b, example("preamble")->p, example("preamble")->len);
    fuzz_buf_add(&b, err->p, err->len);
    handshake_seed(MIG2_ROLE_DESTINATION, "spec-preamble-then-error",
                   0 | NG, 0, b.p, b.len);
    fuzz_buf_free(&b);
    write_seed("error", "spec-error-incompatible",
               err->p + MIG2_FRAME_HEADER_LEN,
               err->len - MIG2_FRAME_HEADER_LEN);
}

/* Hand-made ERROR payloads for corners the engines never send. */
static void error_seeds(void)
{
    static const uint8_t code_only[] = { 0, 0, 0, 8, 1 };
    static const uint8_t unknown_code[] = { 0, 0, 0x12, 0x34, 0xfe };
    static const uint8_t with_tlvs[] = {
        0, 0, 0, 1, 0,
        0x7a, 0x7a, 0, 0, 0, 1, 0x00,                   /* unknown TLV */
        0x80, 0x09, 0, 0, 0, 0,                         /* critical unknown */
        0, 1, 0, 0, 0, 4, 0, 2, 'h', 'i',               /* MESSAGE */
        0, 2, 0, 0, 0, 0x0c, 0x00, 0x63,                /* PROBLEM kind 99 */
        0, 1, 'p', 0, 2, 0xc3, 0xa9, 0, 1, 'a',
    };

    write_seed("error", "code-only-busy", code_only, sizeof(code_only));
    write_seed("error", "unknown-code", unknown_code, sizeof(unknown_code));
    write_seed("error", "tlvs", with_tlvs, sizeof(with_tlvs));
}

/* Channel operation lists (layout in fuzz_channel.c). */
static void channel_seeds(void)
{
    /* Session A: admit 0..3 (count 4 = selector 0x40), flip nothing. */
    static const uint8_t all_four[] = {
        0,
        1, 0, 0, 0, 0x40, 0,
        1, 0, 0, 1, 0x40, 0,
        1, 0, 0, 2, 0x40, 0,
        1, 0, 0, 3, 0x40, 0,
    };
    /* Duplicate, wrong count, other session, other type, flipped MAC. */
    static const uint8_t rejections[] = {
        0,
        1, 0, 0, 1, 0x40, 0,
        1, 0, 0, 1, 0x40, 0,
        1, 0, 0, 2, 3, 0,
        1, 1, 0, 2, 0x40, 0,
        1, 0, 1, 2, 0x40, 0,
        1, 0, 2, 2, 0x40, 4, 'x', 'y', 'z', 'w', 0,
        1, 0, 0, 3, 0x40, 0x80, 0, 60,
        2, 0, 0, 30,
        3, 0, 0xaa,
    };
    /* Session B: nothing is negotiated, so every header is refused. */
    static const uint8_t session_b[] = {
        1,
        1, 1, 0, 0, 0x40, 0,
        1, 1, 0, 0, 2, 0,
        1, 0, 0, 0, 0x40, 0,
    };
    FuzzBuf raw = { 0 };
    Mig2Engine *s, *d;
    Mig2EngineOptions so, dopt;
    Mig2Profile *p = fuzz_profile(1);
    Mig2Writer w;
    uint8_t hdr[3];

    write_seed("channel", "admit-all", all_four, sizeof(all_four));
    write_seed("channel", "rejections", rejections, sizeof(rejections));
    write_seed("channel", "session-b", session_b, sizeof(session_b));

    /* A real header from session A's source, offered as raw bytes. */
    fuzz_engine_options(MIG2_ROLE_SOURCE, 0, &so);
    fuzz_engine_options(MIG2_ROLE_DESTINATION, 0, &dopt);
    s = mig2_engine_new(MIG2_ROLE_SOURCE, p, &so, NULL);
    d = mig2_engine_new(MIG2_ROLE_DESTINATION, p, &dopt, NULL);
    FUZZ_SETUP(s && d);
    fuzz_pair_run(s, d, NULL, NULL, false, false);
    mig2_wr_init(&w, MIG2_CHANNEL_MAX_LEN);
    FUZZ_SETUP(mig2_channel_header_write(s, MIG2_CHANNEL_MULTIFD, 2, 4,
                                         &w) == MIG2_OK);
    hdr[0] = 0;
    hdr[1] = 0;
    hdr[2] = 0;
    fuzz_buf_add(&raw, hdr, 1);                 /* session A */
    hdr[0] = 0;                                 /* op raw */
    hdr[1] = (uint8_t)(w.len >> 8);
    hdr[2] = (uint8_t)w.len;
    fuzz_buf_add(&raw, hdr, 3);
    fuzz_buf_add(&raw, w.buf, w.len);
    write_seed("channel", "raw-header", raw.p, raw.len);
    fuzz_buf_free(&raw);
    mig2_wr_free(&w);
    mig2_engine_free(s);
    mig2_engine_free(d);
    mig2_profile_free(p);
}

/* MANIFEST frames a writer states for each profile, with and without grease. */
static void manifest_seeds(void)
{
    unsigned i;

    for (i = 0; i < FUZZ_PROFILES; i++) {
        Mig2Profile *p = fuzz_profile(i);
        Mig2Manifest *m = mig2_manifest_from_profile(p, fuzz_src_nonce, NULL);
        int grease;

        FUZZ_SETUP(p && m);
        for (grease = 0; grease < 2; grease++) {
            Mig2Writer w;
            char name[32];

            mig2_wr_init(&w, MIG2_FRAME_HEADER_LEN + MIG2_FRAME_MAX);
            mig2_manifest_encode(&w, m, grease);
            FUZZ_SETUP(mig2_wr_error(&w) == MIG2_OK);
            snprintf(name, sizeof(name), "profile%u%s", i,
                     grease ? "-grease" : "");
            write_seed("manifest", name, w.buf, w.len);
            mig2_wr_free(&w);
        }
        mig2_manifest_free(m);
        mig2_profile_free(p);
    }
}

int main(int argc, char **argv)
{
    char *spec;
    size_t i;

    if (argc != 3) {
        fprintf(stderr, "usage: gen_corpus PATH/TO/protocol.md OUTDIR\n");
        return 2;
    }
    outdir = argv[2];
    if (mkdir(outdir, 0777) < 0 && errno != EEXIST) {
        perror(outdir);
        return 1;
    }
    spec = read_file(argv[1]);
    for (i = 0; i < N_EXAMPLES; i++) {
        load_example(spec, &examples[i]);
    }
    free(spec);

    for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        run_scenario(&scenarios[i]);
    }
    spec_seeds();
    error_seeds();
    channel_seeds();
    manifest_seeds();
    for (i = 0; i < N_EXAMPLES; i++) {
        fuzz_buf_free(&examples[i].bytes);
    }
    return 0;
}
