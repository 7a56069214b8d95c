/*
 * The byte examples in docs/protocol.md section 18 are real: this test
 * reads them from the spec, checks that the engines produce exactly those
 * bytes from the documented profiles, and that decoding then re-encoding
 * each one gives the same bytes back.
 *
 * Usage: test_spec_examples PATH/TO/protocol.md
 *        test_spec_examples --print   (emit the blocks to paste in the spec)
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

#include "internal.h"

static const char *spec_path;

typedef struct Bytes {
    uint8_t *p;
    size_t len;
} Bytes;

static const uint8_t src_nonce[16] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
};
static const uint8_t dst_nonce[16] = {
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

static Mig2Profile *minimal_profile(const char *machine)
{
    Mig2Profile *p = mig2_profile_new();

    assert_non_null(p);
    assert_int_equal(mig2_profile_set_build(p, "example"), MIG2_OK);
    assert_int_equal(mig2_profile_set_machine(p, machine), MIG2_OK);
    return p;
}

static Mig2Engine *engine(Mig2Role role, const char *machine)
{
    Mig2EngineOptions opts = {
        .nonce = role == MIG2_ROLE_SOURCE ? src_nonce : dst_nonce,
        .no_grease = true,
    };
    Mig2Profile *p = minimal_profile(machine);
    Mig2Engine *e = mig2_engine_new(role, p, &opts, NULL);

    mig2_profile_free(p);
    assert_non_null(e);
    return e;
}

/* Take everything @e has queued. */
static Bytes drain(Mig2Engine *e)
{
    const uint8_t *out;
    Bytes b = { NULL, 0 };

    out = mig2_engine_output(e, &b.len);
    if (b.len) {
        b.p = malloc(b.len);
        assert_non_null(b.p);
        memcpy(b.p, out, b.len);
        mig2_engine_output_consumed(e, b.len);
    }
    return b;
}

static Bytes slice(const Bytes *b, size_t off, size_t len)
{
    Bytes s = { malloc(len ? len : 1), len };

    assert_non_null(s.p);
    assert_true(off + len <= b->len);
    memcpy(s.p, b->p + off, len);
    return s;
}

static size_t frame_len(const Bytes *b, size_t off)
{
    Mig2FrameHeader h;

    assert_true(off + MIG2_FRAME_HEADER_LEN <= b->len);
    mig2_frame_header_parse(b->p + off, MIG2_FRAME_MAX, &h);
    return MIG2_FRAME_HEADER_LEN + h.length;
}

typedef struct Examples {
    Bytes preamble, src_hello, dst_hello, finished, error;
    Bytes ow_manifest, ow_finished, ow_end;
} Examples;

/* Append a frame with a CRITICAL header to @b (realloc'ed). */
static void add_frame(Bytes *b, uint16_t type, const uint8_t *p, size_t n)
{
    b->p = realloc(b->p, b->len + MIG2_FRAME_HEADER_LEN + n);
    assert_non_null(b->p);
    b->p[b->len++] = (uint8_t)(type >> 8);
    b->p[b->len++] = (uint8_t)type;
    b->p[b->len++] = 0;
    b->p[b->len++] = MIG2_FRAME_FLAG_CRITICAL;
    b->p[b->len++] = (uint8_t)(n >> 24);
    b->p[b->len++] = (uint8_t)(n >> 16);
    b->p[b->len++] = (uint8_t)(n >> 8);
    b->p[b->len++] = (uint8_t)n;
    if (n) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
}

/* SHA-256 of @a then @b, as a one-way stream's DIGEST covers them. */
static void digest_of(const Bytes *a, const Bytes *b, uint8_t out[32])
{
    Mig2Digest *d = mig2_digest_new(NULL);

    assert_non_null(d);
    assert_int_equal(mig2_digest_update(d, a->p, a->len), MIG2_OK);
    assert_int_equal(mig2_digest_update(d, b->p, b->len), MIG2_OK);
    assert_int_equal(mig2_digest_value(d, out), MIG2_OK);
    mig2_digest_free(d);
}

/*
 * The minimal one-way stream: the head a one-way source engine writes,
 * then the data phase of a machine without RAM or devices (SWITCHOVER,
 * END with zero counts) and DIGEST.
 */
static void generate_oneway(Examples *ex)
{
    Mig2EngineOptions opts = {
        .nonce = src_nonce, .no_grease = true, .oneway = true,
    };
    static const uint8_t end[12];
    Mig2Profile *p = minimal_profile("none");
    Mig2Engine *e = mig2_engine_new(MIG2_ROLE_SOURCE, p, &opts, NULL);
    Bytes head, data = { NULL, 0 };
    uint8_t dg[32];
    Mig2Writer w;
    size_t n;

    mig2_profile_free(p);
    assert_non_null(e);
    head = drain(e);
    mig2_engine_free(e);
    n = frame_len(&head, MIG2_PREAMBLE_LEN);
    ex->ow_manifest = slice(&head, MIG2_PREAMBLE_LEN, n);
    ex->ow_finished = slice(&head, MIG2_PREAMBLE_LEN + n,
                            head.len - MIG2_PREAMBLE_LEN - n);
    add_frame(&data, MIG2_FRAME_SWITCHOVER, NULL, 0);
    add_frame(&data, MIG2_FRAME_END, end, sizeof(end));
    digest_of(&head, &data, dg);
    mig2_wr_init(&w, 64);
    mig2_digest_encode(&w, dg);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    ex->ow_end = data;
    ex->ow_end.p = realloc(ex->ow_end.p, ex->ow_end.len + w.len);
    assert_non_null(ex->ow_end.p);
    memcpy(ex->ow_end.p + ex->ow_end.len, w.buf, w.len);
    ex->ow_end.len += w.len;
    mig2_wr_free(&w);
    free(head.p);
}

/* Run the documented exchanges and cut the output into the examples. */
static void generate(Examples *ex)
{
    Mig2Engine *src = engine(MIG2_ROLE_SOURCE, "none");
    Mig2Engine *dst = engine(MIG2_ROLE_DESTINATION, "none");
    Bytes s = drain(src), d;
    size_t n;

    assert_int_equal(mig2_engine_recv(dst, s.p, s.len), (ssize_t)s.len);
    d = drain(dst);
    ex->preamble = slice(&s, 0, MIG2_PREAMBLE_LEN);
    ex->src_hello = slice(&s, MIG2_PREAMBLE_LEN, s.len - MIG2_PREAMBLE_LEN);
    n = frame_len(&d, 0);
    ex->dst_hello = slice(&d, 0, n);
    ex->finished = slice(&d, n, d.len - n);
    assert_int_equal(ex->finished.len, MIG2_FRAME_HEADER_LEN + 32);
    mig2_engine_free(dst);
    free(d.p);

    /* The incompatible destination: machine "pc". */
    dst = engine(MIG2_ROLE_DESTINATION, "pc");
    assert_int_equal(mig2_engine_recv(dst, s.p, s.len), MIG2_ERR_INCOMPATIBLE);
    d = drain(dst);
    n = frame_len(&d, 0);
    ex->error = slice(&d, n, d.len - n);
    assert_int_equal(frame_len(&ex->error, 0), ex->error.len);
    mig2_engine_free(dst);
    mig2_engine_free(src);
    free(d.p);
    free(s.p);
    generate_oneway(ex);
}

static void examples_free(Examples *ex)
{
    free(ex->preamble.p);
    free(ex->src_hello.p);
    free(ex->dst_hello.p);
    free(ex->finished.p);
    free(ex->error.p);
    free(ex->ow_manifest.p);
    free(ex->ow_finished.p);
    free(ex->ow_end.p);
}

static void print_hex(const char *name, const Bytes *b)
{
    size_t i;

    printf("<!-- example: %s -->\n```hex\n", name);
    for (i = 0; i < b->len; i++) {
        printf("%02x%s", b->p[i],
               (i % 16 == 15 || i + 1 == b->len) ? "\n" : " ");
    }
    printf("```\n\n");
}

/* Find "<!-- example: NAME -->" and parse the ```hex block after it. */
static Bytes spec_example(const char *doc, const char *name)
{
    char marker[96];
    const char *at, *end;
    Bytes b = { NULL, 0 };
    size_t cap;

    snprintf(marker, sizeof(marker), "<!-- example: %s -->", name);
    at = strstr(doc, marker);
    assert_non_null(at);
    at = strstr(at, "```hex");
    assert_non_null(at);
    at += strlen("```hex");
    end = strstr(at, "```");
    assert_non_null(end);
    cap = (size_t)(end - at) / 2 + 1;
    b.p = malloc(cap);
    assert_non_null(b.p);
    while (at < end) {
        unsigned v;

        if (*at == ' ' || *at == '\n' || *at == '\r' || *at == '\t') {
            at++;
            continue;
        }
        /* A placeholder or stray text is a failure, not an empty dump. */
        assert_int_equal(sscanf(at, "%2x", &v), 1);
        assert_true(b.len < cap);
        b.p[b.len++] = (uint8_t)v;
        at += 2;
    }
    assert_true(b.len > 0);
    return b;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void assert_bytes_equal(const Bytes *a, const Bytes *b)
{
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->p, b->p, a->len);
}

/* Decode a HELLO frame and encode it again: same bytes. */
static void roundtrip_hello(const Bytes *frame, uint16_t type)
{
    Mig2Hello h;
    Mig2Error err = { 0 };
    Mig2Writer w;

    assert_int_equal(frame_len(frame, 0), frame->len);
    assert_int_equal(mig2_hello_decode(frame->p + MIG2_FRAME_HEADER_LEN,
                                       frame->len - MIG2_FRAME_HEADER_LEN,
                                       type, &h, &err), MIG2_OK);
    assert_string_equal(h.profile->machine, "none");
    assert_string_equal(h.profile->build, "example");
    assert_int_equal(h.profile->page_size, 4096);
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_hello_encode(&w, type, &h, false, 0);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    assert_int_equal(w.len, frame->len);
    assert_memory_equal(w.buf, frame->p, w.len);
    mig2_wr_free(&w);
    mig2_hello_clear(&h);
}

static void test_examples_match_encoder(void **state)
{
    char *doc = read_file(spec_path);
    Examples ex;
    Bytes b;

    (void)state;
    generate(&ex);
    b = spec_example(doc, "preamble");
    assert_bytes_equal(&b, &ex.preamble);
    free(b.p);
    b = spec_example(doc, "src-hello-minimal");
    assert_bytes_equal(&b, &ex.src_hello);
    free(b.p);
    b = spec_example(doc, "dst-hello-minimal");
    assert_bytes_equal(&b, &ex.dst_hello);
    free(b.p);
    b = spec_example(doc, "finished");
    assert_bytes_equal(&b, &ex.finished);
    free(b.p);
    b = spec_example(doc, "error-incompatible");
    assert_bytes_equal(&b, &ex.error);
    free(b.p);
    b = spec_example(doc, "oneway-manifest");
    assert_bytes_equal(&b, &ex.ow_manifest);
    free(b.p);
    b = spec_example(doc, "oneway-finished");
    assert_bytes_equal(&b, &ex.ow_finished);
    free(b.p);
    b = spec_example(doc, "oneway-end");
    assert_bytes_equal(&b, &ex.ow_end);
    free(b.p);
    examples_free(&ex);
    free(doc);
}

static void test_examples_roundtrip(void **state)
{
    char *doc = read_file(spec_path);
    Bytes pre = spec_example(doc, "preamble");
    Bytes sh = spec_example(doc, "src-hello-minimal");
    Bytes dh = spec_example(doc, "dst-hello-minimal");
    Bytes fin = spec_example(doc, "finished");
    Bytes er = spec_example(doc, "error-incompatible");
    Mig2Error err = { 0 };
    Mig2Writer w;

    (void)state;
    assert_int_equal(mig2_stream_detect(pre.p), MIG2_STREAM_HANDSHAKE);
    roundtrip_hello(&sh, MIG2_FRAME_SRC_HELLO);
    roundtrip_hello(&dh, MIG2_FRAME_DST_HELLO);
    assert_int_equal(fin.len, MIG2_FRAME_HEADER_LEN + 32);

    assert_int_equal(frame_len(&er, 0), er.len);
    assert_int_equal(mig2_error_decode(er.p + MIG2_FRAME_HEADER_LEN,
                                       er.len - MIG2_FRAME_HEADER_LEN, &err),
                     MIG2_OK);
    assert_int_equal(err.code, MIG2_WIRE_INCOMPATIBLE);
    assert_false(err.retryable);
    assert_int_equal(err.n_problems, 1);
    assert_int_equal(err.problems[0].kind, MIG2_PROB_MACHINE);
    assert_string_equal(err.problems[0].path, "machine");
    assert_string_equal(err.problems[0].expected, "pc");
    assert_string_equal(err.problems[0].actual, "none");
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    err.from_peer = false;
    mig2_error_encode(&w, &err);
    assert_int_equal(w.len, er.len);
    assert_memory_equal(w.buf, er.p, w.len);
    mig2_wr_free(&w);
    mig2_error_clear(&err);

    free(pre.p);
    free(sh.p);
    free(dh.p);
    free(fin.p);
    free(er.p);
    free(doc);
}

/* The spec's bytes drive a real destination to the spec's answer. */
static void test_examples_drive_engine(void **state)
{
    char *doc = read_file(spec_path);
    Bytes pre = spec_example(doc, "preamble");
    Bytes sh = spec_example(doc, "src-hello-minimal");
    Bytes dh = spec_example(doc, "dst-hello-minimal");
    Bytes fin = spec_example(doc, "finished");
    Mig2Engine *dst = engine(MIG2_ROLE_DESTINATION, "none");
    Bytes out;

    (void)state;
    assert_int_equal(mig2_engine_recv(dst, pre.p, pre.len), (ssize_t)pre.len);
    assert_int_equal(mig2_engine_recv(dst, sh.p, sh.len), (ssize_t)sh.len);
    out = drain(dst);
    assert_int_equal(out.len, dh.len + fin.len);
    assert_memory_equal(out.p, dh.p, dh.len);
    assert_memory_equal(out.p + dh.len, fin.p, fin.len);
    free(out.p);
    mig2_engine_free(dst);
    free(pre.p);
    free(sh.p);
    free(dh.p);
    free(fin.p);
    free(doc);
}

/*
 * The spec's one-way stream, read back: the manifest decodes and encodes
 * to the same bytes, a one-way reader of the same machine accepts the
 * head, and DIGEST is the SHA-256 of everything before it.
 */
static void test_oneway_example(void **state)
{
    char *doc = read_file(spec_path);
    Bytes pre = spec_example(doc, "preamble");
    Bytes man = spec_example(doc, "oneway-manifest");
    Bytes fin = spec_example(doc, "oneway-finished");
    Bytes end = spec_example(doc, "oneway-end");
    Mig2EngineOptions opts = { .nonce = dst_nonce, .oneway = true };
    Mig2Profile *p = minimal_profile("none");
    Mig2Engine *d = mig2_engine_new(MIG2_ROLE_DESTINATION, p, &opts, NULL);
    Mig2Manifest *m = NULL;
    Mig2Error err = { 0 };
    Bytes head = { NULL, 0 }, body;
    uint8_t dg[32];
    size_t used = 0, out_len, digest_at;
    uint16_t id;
    bool req;
    Mig2Writer w;

    (void)state;
    assert_int_equal(mig2_manifest_decode(man.p, man.len, 0, &m, &used,
                                          &err), MIG2_OK);
    assert_int_equal(used, man.len);
    assert_int_equal(mig2_manifest_revision(m), 1);
    assert_string_equal(mig2_profile_machine(mig2_manifest_profile(m)),
                        "none");
    assert_int_equal(mig2_profile_feature_count(mig2_manifest_profile(m)),
                     1);
    assert_true(mig2_profile_feature(mig2_manifest_profile(m), 0, &id,
                                     &req));
    assert_int_equal(id, MIG2_FEAT_ONEWAY_MANIFEST);
    assert_true(req);
    mig2_wr_init(&w, MIG2_FRAME_MAX);
    mig2_manifest_encode(&w, m, false);
    assert_int_equal(w.len, man.len);
    assert_memory_equal(w.buf, man.p, man.len);
    mig2_wr_free(&w);
    mig2_manifest_free(m);

    assert_non_null(d);
    assert_int_equal(mig2_engine_recv(d, pre.p, pre.len), (ssize_t)pre.len);
    assert_int_equal(mig2_engine_recv(d, man.p, man.len), (ssize_t)man.len);
    assert_int_equal(mig2_engine_recv(d, fin.p, fin.len), (ssize_t)fin.len);
    assert_int_equal(mig2_engine_state(d), MIG2_STATE_COMPLETE);
    assert_null(mig2_engine_output(d, &out_len));

    /* DIGEST covers the preamble through END. */
    head.p = malloc(pre.len + man.len + fin.len);
    assert_non_null(head.p);
    memcpy(head.p, pre.p, pre.len);
    memcpy(head.p + pre.len, man.p, man.len);
    memcpy(head.p + pre.len + man.len, fin.p, fin.len);
    head.len = pre.len + man.len + fin.len;
    digest_at = end.len - MIG2_FRAME_HEADER_LEN - 32;
    body = slice(&end, 0, digest_at);
    digest_of(&head, &body, dg);
    assert_int_equal(end.p[digest_at + 1], MIG2_FRAME_DIGEST & 0xff);
    assert_memory_equal(end.p + digest_at + MIG2_FRAME_HEADER_LEN, dg, 32);

    free(body.p);
    free(head.p);
    mig2_engine_free(d);
    mig2_profile_free(p);
    free(pre.p);
    free(man.p);
    free(fin.p);
    free(end.p);
    free(doc);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_match_encoder),
        cmocka_unit_test(test_examples_roundtrip),
        cmocka_unit_test(test_examples_drive_engine),
        cmocka_unit_test(test_oneway_example),
    };

    if (argc > 1 && strcmp(argv[1], "--print") == 0) {
        Examples ex;

        generate(&ex);
        print_hex("preamble", &ex.preamble);
        print_hex("src-hello-minimal", &ex.src_hello);
        print_hex("dst-hello-minimal", &ex.dst_hello);
        print_hex("finished", &ex.finished);
        print_hex("error-incompatible", &ex.error);
        print_hex("oneway-manifest", &ex.ow_manifest);
        print_hex("oneway-finished", &ex.ow_finished);
        print_hex("oneway-end", &ex.ow_end);
        examples_free(&ex);
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/TO/protocol.md | --print\n", argv[0]);
        return 2;
    }
    spec_path = argv[1];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
