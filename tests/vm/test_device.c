/*
 * Unit tests for the mig2-vm device model: the interpreter (vm/device.c),
 * the catalog (vm/catalog.c) and the release and machine tables
 * (vm/release.c).
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mig2/error.h"
#include "device.h"
#include "devindex.h"
#include "vm.h"

/* ---------------------------------------------------------------- */
/* Helpers                                                           */
/* ---------------------------------------------------------------- */

static DeviceState *new_dev_t(const DeviceType *t, const char *opts)
{
    char *err = NULL;
    DeviceState *d = device_new(t, opts, 0, &err);

    if (!d) {
        fail_msg("device_new(%s, %s): %s", t->name, opts ? opts : "",
                 err ? err : "(no message)");
    }
    assert_null(err);
    return d;
}

static DeviceState *new_dev(const char *type, const char *opts)
{
    const DeviceType *t = device_type_find(type);

    assert_non_null(t);
    return new_dev_t(t, opts);
}

/* device_new must fail with exactly @msg. */
static void assert_new_fails(const char *type, const char *opts,
                             const char *msg)
{
    char *err = NULL;
    DeviceState *d = device_new(device_type_find(type), opts, 0, &err);

    assert_null(d);
    assert_non_null(err);
    assert_string_equal(err, msg);
    free(err);
}

/* Options under which every subsection of @t is needed (NULL: none). */
static const char *rich_opts(const DeviceType *t)
{
    static const struct {
        const char *type, *opts;
    } tab[] = {
        { "serial", "fifo=on" },
        { "rtc", "x-reinject=3" },
        { "cpu", "xsave=on,apic-id=7" },
        { "virtio-net", "rss=on,mac=02:00:00:00:00:01" },
        { "virtio-blk", "x-inflight=2,num-queues=4" },
        { "e1000", "mitigation=on" },
    };

    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (strcmp(tab[i].type, t->name) == 0) {
            return tab[i].opts;
        }
    }
    return NULL;
}

static DeviceState *new_rich(const DeviceType *t)
{
    DeviceState *d = new_dev_t(t, rich_opts(t));

    if (strcmp(t->name, "serial") == 0) {
        device_set(d, "ier", 0x01);     /* serial/timeout */
    }
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        assert_true(device_sub_needed(d, s));
    }
    return d;
}

static size_t count_fields(const FieldDesc *fields)
{
    size_t n = 0;

    for (const FieldDesc *f = fields; f && f->name; f++) {
        n++;
    }
    return n;
}

static size_t int_size(const FieldDesc *f)
{
    switch (f->type) {
    case FIELD_U8:
        return 1;
    case FIELD_U16:
        return 2;
    case FIELD_U32:
        return 4;
    default:
        return 8;
    }
}

/* Bytes of @fields at @version, computed independently of device.c. */
static size_t wire_size(const FieldDesc *fields, uint32_t version)
{
    size_t n = 0;

    for (const FieldDesc *f = fields; f && f->name; f++) {
        if (f->since <= version) {
            n += f->type == FIELD_BUFFER || f->type == FIELD_UNUSED
                 ? f->size : int_size(f);
        }
    }
    return n;
}

/*
 * Give every field of @d a value derived from @seed: integers odd and
 * non-zero (which also makes the counter-driven subsections needed),
 * buffers a pattern.  globalstate gets a valid run state.
 */
static void scramble_fields(DeviceState *d, const FieldDesc *fields,
                            uint64_t seed)
{
    uint64_t k = 1;

    for (const FieldDesc *f = fields; f && f->name; f++, k++) {
        uint64_t v = (seed * 0x9e3779b97f4a7c15u + k * 0x1234567u) | 1;

        if (f->type == FIELD_BUFFER) {
            uint8_t *b = device_buffer(d, f->name);

            for (uint32_t i = 0; i < f->size; i++) {
                b[i] = (uint8_t)(v >> (i % 8 * 8)) ^ (uint8_t)i;
            }
        } else if (f->type != FIELD_UNUSED) {
            device_set(d, f->name, v);
        }
    }
}

static void scramble(DeviceState *d, uint64_t seed)
{
    scramble_fields(d, d->type->fields, seed);
    for (const SubsectionDesc *s = d->type->subs; s && s->name; s++) {
        scramble_fields(d, s->fields, seed + 100);
    }
    if (strcmp(d->type->name, "globalstate") == 0) {
        globalstate_set(d, seed & 1 ? "running" : "paused");
    }
}

/* Field @f of @a and @b hold the same value. */
static bool field_same(const DeviceState *a, const DeviceState *b,
                       const FieldDesc *f)
{
    if (f->type == FIELD_UNUSED) {
        return true;
    }
    if (f->type == FIELD_BUFFER) {
        return memcmp(device_buffer_ro(a, f->name),
                      device_buffer_ro(b, f->name), f->size) == 0;
    }
    return device_get(a, f->name) == device_get(b, f->name);
}

/*
 * After loading @src's state at @version into @got, each field present
 * at @version (and each field of a subsection in @sent) equals @src's,
 * every other one equals @orig's (a twin of @got before the load).
 */
static void assert_loaded(const DeviceState *got, const DeviceState *src,
                          const DeviceState *orig, uint32_t version,
                          const char *const *sent)
{
    const DeviceType *t = got->type;

    for (const FieldDesc *f = t->fields; f->name; f++) {
        const DeviceState *want = f->since <= version ? src : orig;

        if (!field_same(got, want, f)) {
            fail_msg("%s v%u: field %s", t->name, version, f->name);
        }
    }
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        bool in = false;

        for (const char *const *n = sent; n && *n; n++) {
            in |= strcmp(*n, s->name) == 0;
        }
        for (const FieldDesc *f = s->fields; f->name; f++) {
            if (!field_same(got, in ? src : orig, f)) {
                fail_msg("%s v%u: %s field %s", t->name, version, s->name,
                         f->name);
            }
        }
    }
}

/* Snapshot of all state, to prove a failed load changed nothing. */
static uint8_t *snapshot(const DeviceState *d)
{
    uint8_t *p = malloc(d->values_len + 1);

    assert_non_null(p);
    memcpy(p, d->values, d->values_len);
    return p;
}

static void assert_unchanged(const DeviceState *d, const uint8_t *snap)
{
    assert_memory_equal(d->values, snap, d->values_len);
}

static uint8_t *save_v4(const DeviceState *d, uint32_t version,
                        const char *const *omit, size_t *len)
{
    Mig2Writer w;

    mig2_wr_init(&w, 1 << 20);
    device_save(d, version, omit, &w);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    return mig2_wr_steal(&w, len);
}

static uint8_t *save_vm(const DeviceState *d, uint32_t version, size_t *len)
{
    Mig2Writer w;

    mig2_wr_init(&w, 1 << 20);
    device_save_vmstate(d, version, &w);
    assert_int_equal(mig2_wr_error(&w), MIG2_OK);
    return mig2_wr_steal(&w, len);
}

/* device_load must fail with a message containing @want; state kept. */
static void assert_load_fails(DeviceState *d, uint32_t version,
                              const uint8_t *p, size_t len, const char *want)
{
    uint8_t *snap = snapshot(d);
    char *err = NULL;

    assert_false(device_load(d, version, p, len, &err));
    assert_non_null(err);
    if (!strstr(err, want)) {
        fail_msg("error '%s' lacks '%s'", err, want);
    }
    assert_unchanged(d, snap);
    free(err);
    free(snap);
}

/* The same for the vmstate loader, which must not move the reader. */
static void assert_load_vm_fails(DeviceState *d, uint32_t version,
                                 const uint8_t *p, size_t len,
                                 const char *want)
{
    uint8_t *snap = snapshot(d);
    char *err = NULL;
    Mig2Reader rd;

    mig2_rd_init(&rd, p, len);
    assert_false(device_load_vmstate(d, version, &rd, &err));
    assert_non_null(err);
    if (!strstr(err, want)) {
        fail_msg("error '%s' lacks '%s'", err, want);
    }
    assert_ptr_equal(rd.p, p);
    assert_unchanged(d, snap);
    free(err);
    free(snap);
}

static char *capture(void (*print)(FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    print(f);
    fclose(f);
    return buf;
}

static const char *json_plain(json_object *o)
{
    /* QEMU's JSON writer does not escape '/' */
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                          JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---------------------------------------------------------------- */
/* Catalog consistency                                               */
/* ---------------------------------------------------------------- */

static bool name_used_before(const DeviceType *t, const FieldDesc *upto)
{
    const FieldDesc *lists[32];
    size_t n = 0;

    lists[n++] = t->fields;
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        lists[n++] = s->fields;
    }
    for (size_t i = 0; i < n; i++) {
        for (const FieldDesc *f = lists[i]; f->name; f++) {
            if (f == upto) {
                return false;
            }
            if (strcmp(f->name, upto->name) == 0) {
                return true;
            }
        }
    }
    return false;
}

static void check_fields(const DeviceType *t, const FieldDesc *fields,
                         uint32_t max_since)
{
    assert_non_null(fields);
    assert_true(count_fields(fields) > 0);
    for (const FieldDesc *f = fields; f->name; f++) {
        assert_in_range(f->since, 1, max_since);
        if (f->type == FIELD_BUFFER || f->type == FIELD_UNUSED) {
            assert_true(f->size > 0);
        }
        if (name_used_before(t, f)) {
            fail_msg("%s: field name %s repeats", t->name, f->name);
        }
    }
}

static void test_catalog_consistent(void **state)
{
    const DeviceType *const *cat = device_catalog();
    size_t n = 0;

    (void)state;
    for (const DeviceType *const *tp = cat; *tp; tp++, n++) {
        const DeviceType *t = *tp;
        size_t vlen = strlen(t->vmsd_name);

        assert_ptr_equal(device_type_find(t->name), t);
        for (const DeviceType *const *up = cat; up != tp; up++) {
            assert_string_not_equal((*up)->name, t->name);
            assert_string_not_equal((*up)->vmsd_name, t->vmsd_name);
        }
        assert_non_null(t->desc);
        assert_in_range(t->min_version, 1, t->version);
        check_fields(t, t->fields, t->version);
        for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
            assert_true(strlen(s->name) > vlen + 1);
            assert_true(strlen(s->name) <= 255);
            assert_memory_equal(s->name, t->vmsd_name, vlen);
            assert_int_equal(s->name[vlen], '/');
            assert_true(s->version >= 1);
            check_fields(t, s->fields, s->version);
        }
        /* every default is accepted by the parser */
        device_free(new_dev_t(t, NULL));
    }
    assert_true(n >= 7);
    assert_null(device_type_find("no-such-device"));
    assert_false(device_type_find("timer")->user_creatable);
    assert_false(device_type_find("globalstate")->user_creatable);
    assert_true(device_type_find("serial")->user_creatable);
}

static void test_catalog_print(void **state)
{
    char *text = capture(device_catalog_print);

    (void)state;
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        assert_non_null(strstr(text, (*tp)->name));
    }
    assert_non_null(strstr(text, "fifo=<on|off> (default off)"));
    assert_non_null(strstr(text, "subsection serial/fifo"));
    assert_non_null(strstr(text, "machine-owned"));
    free(text);
}

/* ---------------------------------------------------------------- */
/* Field access                                                      */
/* ---------------------------------------------------------------- */

static void test_get_set(void **state)
{
    DeviceState *d = new_dev("timer", NULL);
    DeviceState *s = new_dev("serial", NULL);

    (void)state;
    device_set(d, "cpu_ticks_offset", (uint64_t)-5);
    assert_int_equal((int64_t)device_get(d, "cpu_ticks_offset"), -5);
    /* stored big-endian: the slot is the wire form */
    assert_int_equal(d->values[0], 0xff);
    assert_int_equal(d->values[7], 0xfb);

    device_set(s, "ier", 0x1ff);
    assert_int_equal(device_get(s, "ier"), 0xff);
    device_set(s, "divider", 0x12345);
    assert_int_equal(device_get(s, "divider"), 0x2345);
    device_buffer(s, "recv_fifo")[3] = 0xaa;
    assert_int_equal(device_buffer_ro(s, "recv_fifo")[3], 0xaa);
    device_set(s, "recv_fifo_count", 4);
    assert_int_equal(device_get(s, "recv_fifo_count"), 4);
    device_free(d);
    device_free(s);
}

/* ---------------------------------------------------------------- */
/* Round trips                                                       */
/* ---------------------------------------------------------------- */

/*
 * For every type and every version: a scrambled, ticked source with all
 * subsections needed, into a differently scrambled destination.
 */
static void round_trip(bool vmstate)
{
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        const DeviceType *t = *tp;
        const char *sent[16] = { NULL };
        size_t ns = 0;

        for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
            sent[ns++] = s->name;
        }
        for (uint32_t v = t->min_version; v <= t->version; v++) {
            DeviceState *src = new_rich(t);
            DeviceState *dst = new_rich(t);
            DeviceState *twin = new_rich(t);
            char *err = NULL;
            uint8_t *buf;
            size_t len;
            bool ok;

            scramble(src, 1);
            device_tick(src, 77);
            scramble(dst, 2);
            scramble(twin, 2);
            if (vmstate) {
                Mig2Reader rd;

                buf = save_vm(src, v, &len);
                mig2_rd_init(&rd, buf, len);
                ok = device_load_vmstate(dst, v, &rd, &err);
                assert_int_equal(mig2_rd_left(&rd), 0);
            } else {
                buf = save_v4(src, v, NULL, &len);
                ok = device_load(dst, v, buf, len, &err);
            }
            if (!ok) {
                fail_msg("%s v%u: %s", t->name, v, err);
            }
            assert_loaded(dst, src, twin, v, sent);
            if (v == t->version) {
                /* everything travelled: the hashes agree */
                assert_memory_equal(dst->values, src->values,
                                    src->values_len);
            }
            free(buf);
            device_free(src);
            device_free(dst);
            device_free(twin);
        }
    }
}

static void test_round_trip_v4(void **state)
{
    (void)state;
    round_trip(false);
}

static void test_round_trip_vmstate(void **state)
{
    (void)state;
    round_trip(true);
}

/* Exact sizes: fields, then per subsection its header and fields. */
static void test_encoded_sizes(void **state)
{
    (void)state;
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        const DeviceType *t = *tp;

        for (uint32_t v = 1; v <= t->version; v++) {
            DeviceState *d = new_rich(t);
            size_t v4 = wire_size(t->fields, v) + 1;
            size_t vm = wire_size(t->fields, v);
            size_t len;
            uint8_t *buf;

            for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
                size_t body = wire_size(s->fields, s->version);

                v4 += 1 + strlen(s->name) + 4 + body;
                vm += 1 + 1 + strlen(s->name) + 4 + body;
            }
            buf = save_v4(d, v, NULL, &len);
            assert_int_equal(len, v4);
            free(buf);
            buf = save_vm(d, v, &len);
            assert_int_equal(len, vm);
            free(buf);
            device_free(d);
        }
    }
}

/* Loading an older version keeps the fields it lacks (QEMU's rule). */
static void test_older_version_keeps_newer_fields(void **state)
{
    DeviceState *src = new_dev("cpu", "apic-id=5");
    DeviceState *dst = new_dev("cpu", "apic-id=9");
    char *err = NULL;
    uint8_t *buf;
    size_t len;
    Mig2Reader rd;

    (void)state;
    device_tick(src, 10);
    buf = save_v4(src, 2, NULL, &len);
    assert_true(device_load(dst, 2, buf, len, &err));
    assert_int_equal(device_get(dst, "apic_id"), 9);
    assert_int_equal(device_get(dst, "tsc"), 30000);
    assert_int_equal(device_get(dst, "rip"), device_get(src, "rip"));
    free(buf);

    /* v1 also lacks tsc */
    device_tick(src, 11);
    buf = save_vm(src, 1, &len);
    mig2_rd_init(&rd, buf, len);
    assert_true(device_load_vmstate(dst, 1, &rd, &err));
    assert_int_equal(device_get(dst, "tsc"), 30000);
    assert_int_equal(device_get(dst, "rip"), device_get(src, "rip"));
    assert_int_equal(device_get(dst, "apic_id"), 9);
    free(buf);
    device_free(src);
    device_free(dst);

    /* rtc v1: base_rtc (v3) and period (v2) stay */
    src = new_dev("rtc", "base=1000");
    dst = new_dev("rtc", "base=2000");
    device_set(dst, "period", 99);
    buf = save_v4(src, 1, NULL, &len);
    assert_true(device_load(dst, 1, buf, len, &err));
    assert_int_equal(device_get(dst, "base_rtc"), 2000);
    assert_int_equal(device_get(dst, "period"), 99);
    assert_memory_equal(device_buffer_ro(dst, "cmos_data"),
                        device_buffer_ro(src, "cmos_data"), 128);
    free(buf);
    device_free(src);
    device_free(dst);
}

/* ---------------------------------------------------------------- */
/* Subsections                                                       */
/* ---------------------------------------------------------------- */

static void test_subsections_v4(void **state)
{
    DeviceState *d = new_dev("serial", NULL);
    size_t fields = wire_size(device_type_find("serial")->fields, 3);
    uint8_t *buf;
    size_t len;

    (void)state;
    /* nothing needed: just the count */
    buf = save_v4(d, 3, NULL, &len);
    assert_int_equal(len, fields + 1);
    assert_int_equal(buf[fields], 0);
    free(buf);
    device_free(d);

    d = new_dev("serial", "fifo=on");
    device_tick(d, 3);
    buf = save_v4(d, 3, NULL, &len);
    assert_int_equal(len, fields + 1 + 12 + 4 + 17);
    assert_int_equal(buf[fields], 1);
    assert_int_equal(buf[fields + 1], 11);
    assert_memory_equal(buf + fields + 2, "serial/fifo", 11);
    assert_memory_equal(buf + fields + 13, "\0\0\0\x11", 4);
    assert_memory_equal(buf + fields + 17,
                        device_buffer_ro(d, "recv_fifo"), 16);
    assert_int_equal(buf[fields + 33], 4);      /* recv_fifo_count */
    free(buf);

    /* a register bit makes serial/timeout needed, after serial/fifo */
    device_set(d, "ier", 0x05);
    buf = save_v4(d, 3, NULL, &len);
    assert_int_equal(buf[fields], 2);
    assert_memory_equal(buf + fields + 34, "\x0eserial/timeout", 15);
    free(buf);
    device_free(d);
}

static void test_subsections_vmstate(void **state)
{
    DeviceState *d = new_dev("serial", "fifo=on");
    size_t fields = wire_size(device_type_find("serial")->fields, 2);
    uint8_t *buf;
    size_t len;

    (void)state;
    buf = save_vm(d, 2, &len);
    assert_int_equal(len, fields + 1 + 1 + 11 + 4 + 17);
    assert_memory_equal(buf + fields, "\x05\x0bserial/fifo\0\0\0\x01", 17);
    free(buf);
    device_free(d);

    d = new_dev("serial", NULL);
    buf = save_vm(d, 2, &len);
    assert_int_equal(len, fields);
    free(buf);
    device_free(d);
}

/* A subsection the source does not send leaves the destination's. */
static void test_subsection_not_sent_keeps_fields(void **state)
{
    DeviceState *src = new_dev("virtio-blk", NULL);
    DeviceState *dst = new_dev("virtio-blk", "x-inflight=3");
    char *err = NULL;
    uint8_t *buf;
    size_t len;
    Mig2Reader rd;

    (void)state;
    assert_false(device_sub_needed(src, &src->type->subs[0]));
    buf = save_v4(src, 2, NULL, &len);
    assert_true(device_load(dst, 2, buf, len, &err));
    assert_int_equal(device_get(dst, "inflight_count"), 3);
    free(buf);
    buf = save_vm(src, 2, &len);
    mig2_rd_init(&rd, buf, len);
    assert_true(device_load_vmstate(dst, 2, &rd, &err));
    assert_int_equal(device_get(dst, "inflight_count"), 3);
    free(buf);
    device_free(src);
    device_free(dst);
}

static void test_omit(void **state)
{
    static const char *const omit_fifo[] = { "serial/fifo", NULL };
    static const char *const omit_all[] = {
        "serial/timeout", "serial/fifo", "serial/none", NULL,
    };
    DeviceState *src = new_rich(device_type_find("serial"));
    DeviceState *dst = new_dev("serial", NULL);
    size_t fields = wire_size(src->type->fields, 3);
    char *err = NULL;
    uint8_t *buf;
    size_t len;

    (void)state;
    device_tick(src, 9);
    buf = save_v4(src, 3, omit_fifo, &len);
    assert_int_equal(buf[fields], 1);
    assert_memory_equal(buf + fields + 1, "\x0eserial/timeout", 15);
    assert_true(device_load(dst, 3, buf, len, &err));
    assert_int_equal(device_get(dst, "recv_fifo_count"), 0);
    assert_int_equal(device_get(dst, "timeout_ns"),
                     device_get(src, "timeout_ns"));
    free(buf);

    buf = save_v4(src, 3, omit_all, &len);
    assert_int_equal(len, fields + 1);
    assert_int_equal(buf[fields], 0);
    free(buf);
    device_free(src);
    device_free(dst);
}

/* A build that does not know a subsection neither sends nor takes it. */
static void test_subsection_unknown_to_build(void **state)
{
    static const char *const known[] = { "serial/timeout", NULL };
    DeviceState *src = new_dev("serial", "fifo=on");
    DeviceState *old = new_dev("serial", NULL);
    size_t fields = wire_size(src->type->fields, 2);
    uint8_t *buf;
    size_t len;

    (void)state;
    old->known_subs = known;
    buf = save_v4(src, 2, NULL, &len);
    assert_load_fails(old, 2, buf, len,
                      "device 'serial@0': subsection 'serial/fifo' at "
                      "offset 12 is not known to this build");
    free(buf);
    buf = save_vm(src, 2, &len);
    assert_load_vm_fails(old, 2, buf, len,
                         "VM subsection 'serial/fifo' in 'serial' does not "
                         "exist");
    free(buf);

    /* and an old source with the state in hand still does not send it */
    device_set(src, "ier", 1);
    src->known_subs = known;
    buf = save_v4(src, 2, NULL, &len);
    assert_int_equal(buf[fields], 1);
    assert_memory_equal(buf + fields + 1, "\x0eserial/timeout", 15);
    free(buf);
    device_free(src);
    device_free(old);
}

/* ---------------------------------------------------------------- */
/* Rejected input                                                    */
/* ---------------------------------------------------------------- */

static void test_v4_truncated(void **state)
{
    (void)state;
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        DeviceState *src = new_rich(*tp);
        DeviceState *dst = new_dev_t(*tp, rich_opts(*tp));
        uint32_t v = (*tp)->version;
        uint8_t *buf;
        size_t len;

        scramble(src, 5);
        buf = save_v4(src, v, NULL, &len);
        for (size_t cut = 0; cut < len; cut++) {
            assert_load_fails(dst, v, buf, cut, "truncated at offset");
        }
        free(buf);
        device_free(src);
        device_free(dst);
    }
}

static void test_v4_truncated_messages(void **state)
{
    DeviceState *src = new_rich(device_type_find("serial"));
    DeviceState *dst = new_dev("serial", "id=com1");
    uint8_t *buf;
    size_t len;

    (void)state;
    buf = save_v4(src, 3, NULL, &len);
    assert_load_fails(dst, 3, buf, 5,
                      "device 'com1@0': truncated at offset 5, in field "
                      "'lcr' (size 1, 0 left)");
    assert_load_fails(dst, 3, buf, 20,
                      "device 'com1@0': truncated at offset 20, in the "
                      "subsection count");
    assert_load_fails(dst, 3, buf, 33,
                      "device 'com1@0': truncated at offset 33, in the "
                      "length of subsection 'serial/fifo'");
    assert_load_fails(dst, 3, buf, 40,
                      "device 'com1@0': truncated at offset 37, in "
                      "subsection 'serial/fifo' (size 17, 3 left)");
    assert_load_fails(dst, 3, buf, 22, "device 'com1@0': truncated at "
                      "offset 21, in the name of subsection 1 of 2");
    free(buf);
    device_free(src);
    device_free(dst);
}

static void test_v4_trailing(void **state)
{
    DeviceState *src = new_dev("timer", NULL);
    DeviceState *dst = new_dev("timer", NULL);
    uint8_t *buf;
    size_t len;

    (void)state;
    device_tick(src, 1);
    buf = save_v4(src, 2, NULL, &len);
    assert_int_equal(len, 25);
    buf = realloc(buf, len + 2);
    buf[len] = 0x7e;
    buf[len + 1] = 0;
    assert_load_fails(dst, 2, buf, len + 2,
                      "device 'timer@0': trailing bytes at offset 25 (2 "
                      "after the last subsection)");
    free(buf);
    device_free(src);
    device_free(dst);
}

/* Build a v4 serial v3 body with hand-made subsections after the fields. */
static uint8_t *serial_body(const uint8_t *tail, size_t tail_len,
                            size_t *len)
{
    DeviceState *d = new_dev("serial", NULL);
    size_t fields = wire_size(d->type->fields, 3);
    uint8_t *buf = save_v4(d, 3, NULL, len);

    device_free(d);
    assert_int_equal(*len, fields + 1);
    buf = realloc(buf, fields + tail_len);
    memcpy(buf + fields, tail, tail_len);
    *len = fields + tail_len;
    return buf;
}

static void test_v4_bad_subsections(void **state)
{
    static const uint8_t unknown[] = "\x01\x0aserial/foo\0\0\0\0";
    static const uint8_t bad_len[] = "\x01\x0eserial/timeout\0\0\0\x08"
                                     "12345678";
    static const uint8_t twice[] = "\x02\x0eserial/timeout\0\0\0\x09"
                                   "123456789"
                                   "\x0eserial/timeout\0\0\0\x09"
                                   "123456789";
    static const uint8_t empty_name[] = "\x01\x00";
    DeviceState *d = new_dev("serial", NULL);
    uint8_t *buf;
    size_t len;

    (void)state;
    buf = serial_body(unknown, sizeof(unknown) - 1, &len);
    assert_load_fails(d, 3, buf, len, "device 'serial@0': unknown "
                      "subsection 'serial/foo' at offset 21");
    free(buf);
    buf = serial_body(bad_len, sizeof(bad_len) - 1, &len);
    assert_load_fails(d, 3, buf, len, "device 'serial@0': subsection "
                      "'serial/timeout' at offset 21 has length 8, "
                      "expected 9");
    free(buf);
    buf = serial_body(twice, sizeof(twice) - 1, &len);
    assert_load_fails(d, 3, buf, len, "device 'serial@0': subsection "
                      "'serial/timeout' repeated at offset 49");
    free(buf);
    buf = serial_body(empty_name, sizeof(empty_name) - 1, &len);
    assert_load_fails(d, 3, buf, len, "bad name");
    free(buf);
    device_free(d);
}

static void test_v4_bad_version(void **state)
{
    DeviceState *d = new_dev("serial", NULL);
    uint8_t *buf;
    size_t len;

    (void)state;
    buf = save_v4(d, 3, NULL, &len);
    assert_load_fails(d, 4, buf, len, "device 'serial@0': version 4 is "
                      "outside the loadable range 1..3");
    assert_load_fails(d, 0, buf, len, "version 0 is outside");
    d->load_min = 2;
    d->load_max = 2;
    assert_load_fails(d, 3, buf, len, "version 3 is outside the loadable "
                      "range 2..2");
    free(buf);
    buf = save_v4(d, 1, NULL, &len);
    assert_load_fails(d, 1, buf, len, "version 1 is outside");
    free(buf);
    device_free(d);
}

static void test_vmstate_truncated(void **state)
{
    (void)state;
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        DeviceState *src = new_rich(*tp);
        DeviceState *dst = new_dev_t(*tp, rich_opts(*tp));
        uint32_t v = (*tp)->version;
        size_t fields = wire_size((*tp)->fields, v);
        uint8_t *buf;
        size_t len;

        scramble(src, 6);
        buf = save_vm(src, v, &len);
        /*
         * Inside the fields it fails; once they are complete, a cut
         * subsection header is the stream's business (QEMU stops
         * peeking), a cut subsection body fails.
         */
        for (size_t cut = 0; cut < fields; cut++) {
            assert_load_vm_fails(dst, v, buf, cut, "Failed to load ");
        }
        free(buf);
        device_free(src);
        device_free(dst);
    }
}

static void test_vmstate_errors(void **state)
{
    DeviceState *src = new_rich(device_type_find("serial"));
    DeviceState *dst = new_dev("serial", NULL);
    size_t fields = wire_size(src->type->fields, 3);
    uint8_t *buf;
    size_t len;

    (void)state;
    buf = save_vm(src, 3, &len);
    assert_load_vm_fails(dst, 4, buf, len, "serial: incoming version_id 4 "
                         "is too new for local version_id 3");
    dst->load_min = 2;
    assert_load_vm_fails(dst, 1, buf, len, "serial: incoming version_id 1 "
                         "is too old for local minimum version_id 2");
    assert_load_vm_fails(dst, 3, buf, 5, "Failed to load serial:lcr "
                         "(truncated at offset 5: size 1, 0 left)");
    /* header complete, version cut */
    assert_load_vm_fails(dst, 3, buf, fields + 13 + 2, "Failed to load "
                         "serial/fifo (truncated at offset 33: its "
                         "version)");
    assert_load_vm_fails(dst, 3, buf, fields + 17 + 3, "Failed to load "
                         "serial/fifo:recv_fifo (truncated at offset 37: "
                         "size 16, 3 left)");
    /* a newer subsection version */
    buf[fields + 16] = 2;
    assert_load_vm_fails(dst, 3, buf, len, "serial/fifo: incoming "
                         "version_id 2 is too new for local version_id 1");
    buf[fields + 16] = 0;
    assert_load_vm_fails(dst, 3, buf, len, "serial/fifo: incoming "
                         "version_id 0 is too old");
    buf[fields + 16] = 1;
    /* an unknown subsection */
    memcpy(buf + fields + 2, "serial/fizz", 11);
    assert_load_vm_fails(dst, 3, buf, len, "VM subsection 'serial/fizz' in "
                         "'serial' does not exist");
    free(buf);
    device_free(src);
    device_free(dst);
}

/* Bytes after the device that are not its subsections stay unread. */
static void test_vmstate_stops_at_foreign_bytes(void **state)
{
    DeviceState *src = new_dev("timer", NULL);
    DeviceState *dst = new_dev("timer", NULL);
    static const uint8_t tails[][12] = {
        { 0x7e, 0, 0, 0, 0 },                          /* footer */
        { 0x05, 6, 'o', 't', 'h', 'e', 'r', '/' },      /* not "timer" */
        { 0x05, 5, 't', 'i', 'm', 'e', 'r' },           /* too short */
        { 0x05, 9, 't', 'i', 'm', 'e', 'r', '/' },      /* cut name */
        { 0x05 },                                       /* cut length */
    };
    static const size_t tail_len[] = { 5, 8, 7, 8, 1 };
    char *err = NULL;

    (void)state;
    device_tick(src, 3);
    for (size_t i = 0; i < sizeof(tail_len) / sizeof(tail_len[0]); i++) {
        Mig2Writer w;
        Mig2Reader rd;

        mig2_wr_init(&w, 4096);
        device_save_vmstate(src, 2, &w);
        mig2_wr_bytes(&w, tails[i], tail_len[i]);
        mig2_rd_init(&rd, w.buf, w.len);
        assert_true(device_load_vmstate(dst, 2, &rd, &err));
        assert_int_equal(mig2_rd_left(&rd), tail_len[i]);
        assert_int_equal(rd.p[0], tails[i][0]);
        mig2_wr_free(&w);
    }
    assert_int_equal(device_get(dst, "cpu_clock_offset"), 3000);

    /* "timer/..." is ours: an unknown one is an error */
    {
        static const uint8_t tail[] = "\x05\x0ctimer/icount\0\0\0\x01";
        Mig2Writer w;

        mig2_wr_init(&w, 4096);
        device_save_vmstate(src, 2, &w);
        mig2_wr_bytes(&w, tail, sizeof(tail) - 1);
        assert_load_vm_fails(dst, 2, w.buf, w.len, "VM subsection "
                             "'timer/icount' in 'timer' does not exist");
        mig2_wr_free(&w);
    }
    device_free(src);
    device_free(dst);
}

/* ---------------------------------------------------------------- */
/* QEMU 7.2 layouts                                                  */
/* ---------------------------------------------------------------- */

static void test_timer_qemu_bytes(void **state)
{
    static const uint8_t zeros[24];
    static const uint8_t ticked[24] = {
        0, 0, 0, 0, 0, 0, 0x27, 0x10,           /* 4 * 2500 */
        0, 0, 0, 0, 0, 0, 0, 0,                 /* unused */
        0, 0, 0, 0, 0, 0, 0x0f, 0xa0,           /* 4 * 1000 */
    };
    DeviceState *d = new_dev("timer", NULL);
    const DeviceType *t = d->type;
    Mig2Writer w;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_string_equal(t->vmsd_name, "timer");
    assert_int_equal(t->version, 2);
    assert_int_equal(t->min_version, 1);
    assert_null(t->subs);
    buf = save_vm(d, 2, &len);
    assert_int_equal(len, 24);
    assert_memory_equal(buf, zeros, 24);
    free(buf);
    buf = save_vm(d, 1, &len);
    assert_int_equal(len, 16);
    free(buf);

    device_tick(d, 4);
    buf = save_vm(d, 2, &len);
    assert_memory_equal(buf, ticked, 24);
    free(buf);
    /* the canonical form is the newest encoding */
    mig2_wr_init(&w, 4096);
    device_canonical(d, &w);
    assert_int_equal(w.len, 24);
    assert_memory_equal(w.buf, ticked, 24);
    mig2_wr_free(&w);
    device_free(d);

    /* whatever sits in QEMU's unused bytes is skipped on load */
    {
        uint8_t in[24];
        DeviceState *e = new_dev("timer", NULL);
        char *err = NULL;
        Mig2Reader rd;

        memcpy(in, ticked, 24);
        memset(in + 8, 0xee, 8);
        mig2_rd_init(&rd, in, 24);
        assert_true(device_load_vmstate(e, 2, &rd, &err));
        buf = save_vm(e, 2, &len);
        assert_memory_equal(buf, ticked, 24);
        free(buf);
        device_free(e);
    }
}

static void test_globalstate_qemu_bytes(void **state)
{
    uint8_t want[104] = { 0, 0, 0, 10, 'p', 'r', 'e', 'l', 'a', 'u', 'n',
                          'c', 'h' };
    DeviceState *d = new_dev("globalstate", NULL);
    DeviceState *e = new_dev("globalstate", NULL);
    char *err = NULL;
    Mig2Reader rd;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_string_equal(d->type->vmsd_name, "globalstate");
    assert_int_equal(d->type->version, 1);
    assert_string_equal(globalstate_get(d), "prelaunch");
    buf = save_vm(d, 1, &len);
    assert_int_equal(len, 104);
    assert_memory_equal(buf, want, 104);
    free(buf);

    globalstate_set(d, "running");
    assert_int_equal(device_get(d, "size"), 8);
    buf = save_vm(d, 1, &len);
    mig2_rd_init(&rd, buf, len);
    assert_true(device_load_vmstate(e, 1, &rd, &err));
    assert_string_equal(globalstate_get(e), "running");
    free(buf);

    /* QEMU's post_load refuses a run state it does not know */
    globalstate_set(d, "bogus");
    buf = save_vm(d, 1, &len);
    assert_load_vm_fails(e, 1, buf, len,
                         "globalstate: invalid runstate 'bogus'");
    free(buf);
    buf = save_v4(d, 1, NULL, &len);
    assert_load_fails(e, 1, buf, len, "invalid runstate 'bogus'");
    memset(buf + 4, 'x', 100);
    assert_load_fails(e, 1, buf, len, "not NUL-terminated");
    free(buf);
    assert_string_equal(globalstate_get(e), "running");

    /* names are cut to fit */
    {
        char big[200];

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        globalstate_set(d, big);
        assert_int_equal(strlen(globalstate_get(d)), 99);
        assert_int_equal(device_get(d, "size"), 100);
    }
    device_free(d);
    device_free(e);
}

/* ---------------------------------------------------------------- */
/* vmdesc                                                            */
/* ---------------------------------------------------------------- */

static void test_vmdesc_timer(void **state)
{
    DeviceState *d = new_dev("timer", NULL);
    json_object *o;

    (void)state;
    o = device_vmdesc(d, 2);
    assert_string_equal(json_plain(o),
        "{\"name\":\"timer\",\"instance_id\":0,\"vmsd_name\":\"timer\","
        "\"version\":2,\"fields\":["
        "{\"name\":\"cpu_ticks_offset\",\"type\":\"int64\",\"size\":8},"
        "{\"name\":\"unused\",\"type\":\"unused_buffer\",\"size\":8},"
        "{\"name\":\"cpu_clock_offset\",\"type\":\"int64\",\"size\":8}]}");
    json_object_put(o);
    o = device_vmdesc(d, 1);
    assert_int_equal(json_object_array_length(
        json_object_object_get(o, "fields")), 2);
    json_object_put(o);
    device_free(d);

    d = new_dev("globalstate", NULL);
    o = device_vmdesc(d, 1);
    assert_string_equal(json_plain(o),
        "{\"name\":\"globalstate\",\"instance_id\":0,"
        "\"vmsd_name\":\"globalstate\",\"version\":1,\"fields\":["
        "{\"name\":\"size\",\"type\":\"uint32\",\"size\":4},"
        "{\"name\":\"runstate\",\"type\":\"buffer\",\"size\":100}]}");
    json_object_put(o);
    device_free(d);
}

static void test_vmdesc_subsections(void **state)
{
    char *err = NULL;
    DeviceState *d = device_new(device_type_find("serial"),
                                "id=com2,fifo=on", 3, &err);
    json_object *o, *subs, *sub;

    (void)state;
    assert_non_null(d);
    o = device_vmdesc(d, 2);
    assert_string_equal(json_object_get_string(
        json_object_object_get(o, "name")), "com2");
    assert_int_equal(json_object_get_int(
        json_object_object_get(o, "instance_id")), 3);
    assert_string_equal(json_object_get_string(
        json_object_object_get(o, "vmsd_name")), "serial");
    assert_int_equal(json_object_array_length(
        json_object_object_get(o, "fields")), 10);
    subs = json_object_object_get(o, "subsections");
    assert_non_null(subs);
    assert_int_equal(json_object_array_length(subs), 1);
    sub = json_object_array_get_idx(subs, 0);
    assert_string_equal(json_plain(sub),
        "{\"vmsd_name\":\"serial/fifo\",\"version\":1,\"fields\":["
        "{\"name\":\"recv_fifo\",\"type\":\"buffer\",\"size\":16},"
        "{\"name\":\"recv_fifo_count\",\"type\":\"uint8\",\"size\":1}]}");
    json_object_put(o);
    device_free(d);

    d = new_dev("serial", NULL);
    o = device_vmdesc(d, 3);
    assert_null(json_object_object_get(o, "subsections"));
    json_object_put(o);
    device_free(d);
}

/* ---------------------------------------------------------------- */
/* Options                                                           */
/* ---------------------------------------------------------------- */

static void test_options(void **state)
{
    DeviceState *d;
    uint8_t mac[6];

    (void)state;
    assert_new_fails("serial", "foo=1",
                     "Property 'foo' not found for device 'serial'");
    assert_new_fails("timer", "fifo=on",
                     "Property 'fifo' not found for device 'timer'");
    assert_new_fails("serial", "fifo=maybe",
                     "Parameter 'fifo' expects 'on' or 'off'");
    assert_new_fails("serial", "baud=0", "Property 'serial.baud' doesn't "
                     "take value '0' (minimum: 50, maximum: 115200)");
    assert_new_fails("serial", "baud=-50", "Property 'serial.baud' "
                     "doesn't take value '-50' (minimum: 50, maximum: "
                     "115200)");
    assert_new_fails("serial", "baud=9600x", "Property 'serial.baud' "
                     "doesn't take value '9600x' (minimum: 50, maximum: "
                     "115200)");
    assert_new_fails("serial", "baud=", "Property 'serial.baud' doesn't "
                     "take value '' (minimum: 50, maximum: 115200)");
    assert_new_fails("serial", "baud",
                     "Expected '=' after parameter 'baud'");
    assert_new_fails("serial", "fifo=on,fifo=off",
                     "Property 'fifo' given twice for device 'serial'");
    assert_new_fails("serial", "fifo=on,",
                     "Invalid parameter '' for device 'serial'");
    assert_new_fails("serial", "=on",
                     "Invalid parameter '' for device 'serial'");
    assert_new_fails("serial", "id=1com", "Parameter 'id' expects an "
                     "identifier (letters, digits, '-', '.', '_', starting "
                     "with a letter, at most 255)");
    assert_new_fails("serial", "id=", "Parameter 'id' expects an "
                     "identifier (letters, digits, '-', '.', '_', starting "
                     "with a letter, at most 255)");
    assert_new_fails("serial", "id=a,id=b", "Parameter 'id' given twice");
    assert_new_fails("virtio-net", "mac=52:54:00:ab:cd",
                     "Property 'virtio-net.mac' doesn't take value "
                     "'52:54:00:ab:cd' (expected xx:xx:xx:xx:xx:xx)");
    assert_new_fails("virtio-net", "mac=52:54:00:ab:cd:ef:01",
                     "Property 'virtio-net.mac' doesn't take value "
                     "'52:54:00:ab:cd:ef:01' (expected xx:xx:xx:xx:xx:xx)");
    assert_new_fails("virtio-net", "mac=52:54:00:ab:cd:eg",
                     "Property 'virtio-net.mac' doesn't take value "
                     "'52:54:00:ab:cd:eg' (expected xx:xx:xx:xx:xx:xx)");
    assert_new_fails("virtio-blk", "num-queues=17", "Property "
                     "'virtio-blk.num-queues' doesn't take value '17' "
                     "(minimum: 1, maximum: 16)");

    d = new_dev("serial", "fifo,baud=0x2580,id=com1.x-y_z");
    assert_string_equal(device_prop(d, "fifo"), "on");
    assert_true(device_prop_bool(d, "fifo"));
    assert_int_equal(device_prop_uint(d, "baud"), 9600);
    assert_int_equal(device_get(d, "divider"), 12);
    assert_string_equal(d->id, "com1.x-y_z");
    assert_null(device_prop(d, "nope"));
    device_free(d);

    d = new_dev("serial", "fifo=yes");
    assert_string_equal(device_prop(d, "fifo"), "on");
    device_free(d);
    d = new_dev("serial", "fifo=false");
    assert_string_equal(device_prop(d, "fifo"), "off");
    device_free(d);
    d = new_dev("serial", "");
    assert_string_equal(d->id, "serial");
    assert_string_equal(device_prop(d, "baud"), "115200");
    device_free(d);

    d = new_dev("virtio-net", "mac=02:AB:cd:00:00:7f");
    device_prop_mac(d, "mac", mac);
    assert_memory_equal(mac, "\x02\xab\xcd\x00\x00\x7f", 6);
    assert_memory_equal(device_buffer_ro(d, "mac"), mac, 6);
    device_free(d);
    d = new_dev("virtio-net", NULL);
    assert_memory_equal(device_buffer_ro(d, "mac"), "\x52\x54\x00\x12\x34"
                        "\x56", 6);
    device_free(d);

    /* a NULL errp is allowed */
    assert_null(device_new(device_type_find("serial"), "x=1", 0, NULL));
}

/* ---------------------------------------------------------------- */
/* Workload                                                          */
/* ---------------------------------------------------------------- */

/* The lowest version any pair of releases can negotiate for @t. */
static uint32_t lowest_negotiable(const DeviceType *t)
{
    uint32_t low = t->version;

    for (const Release *const *r = release_table(); *r; r++) {
        for (const ReleaseDevice *rd = (*r)->devices; rd->type; rd++) {
            if (strcmp(rd->type, t->name) == 0) {
                low = rd->save_max < low ? rd->save_max : low;
                low = rd->load_max < low ? rd->load_max : low;
            }
        }
    }
    return low;
}

static void check_tick(const DeviceType *t, const char *opts)
{
    DeviceState *a = new_dev_t(t, opts);
    DeviceState *b = new_dev_t(t, opts);
    DeviceState *ref = new_dev_t(t, opts);
    uint32_t low = lowest_negotiable(t);
    bool needed[16];
    size_t i = 0;

    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        needed[i++] = device_sub_needed(a, s);
    }
    for (uint64_t n = 1; n <= 300; n++) {
        device_tick(a, n);
        device_tick(b, n);
        i = 0;
        for (const SubsectionDesc *s = t->subs; s && s->name; s++, i++) {
            if (device_sub_needed(a, s) != needed[i]) {
                fail_msg("%s: tick %" PRIu64 " changes whether %s is "
                         "needed", t->name, n, s->name);
            }
        }
    }
    /* deterministic */
    assert_memory_equal(a->values, b->values, a->values_len);
    if (t->tick && strcmp(t->name, "globalstate") != 0) {
        assert_memory_not_equal(a->values, ref->values, a->values_len);
    }
    for (const FieldDesc *f = t->fields; f->name; f++) {
        if (f->since > low && !field_same(a, ref, f)) {
            fail_msg("%s: tick changes %s (since %u, lowest %u)", t->name,
                     f->name, f->since, low);
        }
    }
    i = 0;
    for (const SubsectionDesc *s = t->subs; s && s->name; s++, i++) {
        if (needed[i]) {
            continue;
        }
        for (const FieldDesc *f = s->fields; f->name; f++) {
            if (!field_same(a, ref, f)) {
                fail_msg("%s: tick changes %s of unneeded %s", t->name,
                         f->name, s->name);
            }
        }
    }
    device_free(a);
    device_free(b);
    device_free(ref);
}

static void test_tick_rules(void **state)
{
    (void)state;
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        check_tick(*tp, NULL);
        check_tick(*tp, rich_opts(*tp));
    }
}

/* ---------------------------------------------------------------- */
/* Releases and machines                                             */
/* ---------------------------------------------------------------- */

static void test_release_table(void **state)
{
    const Release *const *tab = release_table();
    size_t n = 0;

    (void)state;
    for (const Release *const *rp = tab; *rp; rp++, n++) {
        const Release *r = *rp;

        assert_ptr_equal(release_find(r->name), r);
        assert_true(r->rev_min >= 1 && r->rev_min <= r->rev_max);
        assert_non_null(r->desc);
        for (const ReleaseDevice *rd = r->devices; rd->type; rd++) {
            const DeviceType *t = device_type_find(rd->type);

            assert_non_null(t);
            assert_in_range(rd->save_min, t->min_version, rd->save_max);
            assert_in_range(rd->save_max, rd->save_min, t->version);
            assert_in_range(rd->load_min, t->min_version, rd->load_max);
            assert_in_range(rd->load_max, rd->load_min, t->version);
            /* a build loads what it saves */
            assert_true(rd->load_min <= rd->save_min);
            assert_true(rd->save_max <= rd->load_max);
            for (const char *const *s = rd->subs; s && *s; s++) {
                bool found = false;

                for (const SubsectionDesc *sd = t->subs; sd && sd->name;
                     sd++) {
                    found |= strcmp(sd->name, *s) == 0;
                }
                assert_true(found);
            }
            /* the QEMU 7.2 devices never move */
            if (strcmp(rd->type, "timer") == 0) {
                assert_int_equal(rd->save_max, 2);
            }
        }
    }
    assert_true(n >= 3);
    assert_ptr_equal(release_current(), tab[n - 1]);
    assert_string_equal(release_current()->name, "2.0");
    assert_non_null(release_find("1.0"));
    assert_non_null(release_find("1.1"));
    assert_null(release_find("9.9"));
    assert_int_equal(release_find("1.0")->rev_max, 1);
    assert_int_equal(release_find("2.0")->rev_max, 2);
}

/* The negotiated version of section 9.4, for the story in release.c. */
static int negotiate(const char *src, const char *dst, const char *type)
{
    const ReleaseDevice *s = NULL, *d = NULL;
    uint32_t v, low;

    for (const ReleaseDevice *rd = release_find(src)->devices; rd->type;
         rd++) {
        s = strcmp(rd->type, type) == 0 ? rd : s;
    }
    for (const ReleaseDevice *rd = release_find(dst)->devices; rd->type;
         rd++) {
        d = strcmp(rd->type, type) == 0 ? rd : d;
    }
    assert_non_null(s);
    assert_non_null(d);
    v = s->save_max < d->load_max ? s->save_max : d->load_max;
    low = s->save_min > d->load_min ? s->save_min : d->load_min;
    return v >= low ? (int)v : -1;
}

static void test_release_story(void **state)
{
    (void)state;
    /* newer into older: lower versions */
    assert_int_equal(negotiate("2.0", "1.1", "cpu"), 2);
    assert_int_equal(negotiate("2.0", "1.1", "rtc"), 3);
    assert_int_equal(negotiate("2.0", "1.0", "serial"), 2);
    assert_int_equal(negotiate("2.0", "1.0", "virtio-net"), 1);
    /* ... except rtc into 1.0 */
    assert_int_equal(negotiate("2.0", "1.0", "rtc"), -1);
    /* older into newer always works */
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        if (strcmp((*tp)->name, "e1000") != 0) {
            assert_true(negotiate("1.0", "2.0", (*tp)->name) > 0);
            assert_true(negotiate("1.1", "2.0", (*tp)->name) > 0);
            assert_true(negotiate("1.0", "1.1", (*tp)->name) > 0);
        }
        assert_int_equal(negotiate("2.0", "2.0", (*tp)->name),
                         (*tp)->version);
    }
}

static void test_release_apply(void **state)
{
    const Release *r10 = release_find("1.0");
    DeviceState *d = new_dev("serial", NULL);
    char *err = NULL;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(d->save_min, 1);
    assert_int_equal(d->save_max, 3);
    assert_null(d->known_subs);
    assert_true(release_apply(r10, d, &err));
    assert_null(err);
    assert_int_equal(d->save_min, 1);
    assert_int_equal(d->save_max, 2);
    assert_int_equal(d->load_min, 1);
    assert_int_equal(d->load_max, 2);
    assert_false(device_sub_known(d, &d->type->subs[0]));     /* fifo */
    assert_true(device_sub_known(d, &d->type->subs[1]));      /* timeout */
    /* the limits hold on load */
    {
        DeviceState *src = new_dev("serial", NULL);

        buf = save_v4(src, 3, NULL, &len);
        assert_load_fails(d, 3, buf, len, "outside the loadable range "
                          "1..2");
        free(buf);
        device_free(src);
    }
    assert_true(release_apply(release_current(), d, &err));
    assert_int_equal(d->save_min, 2);
    assert_int_equal(d->save_max, 3);
    assert_null(d->known_subs);
    device_free(d);

    /* a type the release lacks */
    d = new_dev("e1000", NULL);
    assert_false(release_apply(r10, d, &err));
    assert_string_equal(err, "Device 'e1000' does not exist in release 1.0");
    free(err);
    err = NULL;
    assert_int_equal(d->save_max, 2);
    assert_null(d->known_subs);
    device_free(d);

    /* state an old build could not hold */
    d = new_dev("serial", "id=com1,fifo=on");
    assert_false(release_apply(r10, d, &err));
    assert_string_equal(err, "Device 'com1' needs subsection 'serial/fifo', "
                        "which release 1.0 does not have");
    free(err);
    err = NULL;
    assert_int_equal(d->save_max, 3);
    device_free(d);
    d = new_dev("virtio-net", "rss=on");
    assert_false(release_apply(release_find("1.1"), d, &err));
    free(err);
    err = NULL;
    assert_true(release_apply(release_current(), d, &err));
    device_free(d);

    /* every catalog device takes the current release */
    for (const DeviceType *const *tp = device_catalog(); *tp; tp++) {
        d = new_rich(*tp);
        assert_true(release_apply(release_current(), d, &err));
        assert_int_equal(d->load_max, (*tp)->version);
        device_free(d);
    }
}

static void test_release_print(void **state)
{
    char *text = capture(release_print);

    (void)state;
    assert_non_null(strstr(text, "the default is 2.0"));
    assert_non_null(strstr(text, "1.0  protocol revisions 1..1"));
    assert_non_null(strstr(text, "1.1  protocol revisions 1..2"));
    assert_non_null(strstr(text, "serial       save 1..2  load 1..2  "
                            "subsections: serial/timeout\n"));
    free(text);
}

/* The (id, instance) index: growth, duplicates, near misses. */
static void test_dev_index(void **state)
{
    enum { N = 10000 };
    static char ids[N][16];
    DevIndex *x = dev_index_new(0);
    size_t i, v;
    bool nomem;

    (void)state;
    assert_non_null(x);
    for (i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "dev%zu", i / 3);
        assert_true(dev_index_put(x, ids[i], (uint32_t)(i % 3), i, &nomem));
    }
    for (i = 0; i < N; i++) {
        assert_true(dev_index_get(x, ids[i], (uint32_t)(i % 3), &v));
        assert_int_equal(v, i);
    }
    /* A key already there keeps its value. */
    assert_false(dev_index_put(x, "dev7", 1, 99, &nomem));
    assert_false(nomem);
    assert_true(dev_index_get(x, "dev7", 1, &v));
    assert_int_equal(v, 22);
    /* The same id at another instance, the same instance elsewhere. */
    assert_false(dev_index_get(x, "dev7", 3, &v));
    assert_false(dev_index_get(x, "dev", 0, &v));
    assert_false(dev_index_get(x, "dev99999", 0, &v));
    dev_index_free(x);
    dev_index_free(NULL);
}

/*
 * Devices are numbered per stream id, 0..n-1, as QEMU numbers its
 * instances; lookups go through the index; a device the release cannot
 * have is refused and freed (ASan would see a leak or a double free).
 */
static void test_vm_add_device(void **state)
{
    Vm vm;
    char *err = NULL;
    int i;

    (void)state;
    memset(&vm, 0, sizeof(vm));
    vm.release = release_current();
    for (i = 0; i < 1000; i++) {
        assert_true(vm_add_device(&vm, new_dev("serial", NULL), &err));
    }
    assert_true(vm_add_device(&vm, new_dev("rtc", NULL), &err));
    assert_true(vm_add_device(&vm, new_dev("serial", "id=s1"), &err));
    assert_true(vm_add_device(&vm, new_dev("globalstate", NULL), &err));
    assert_null(err);
    assert_int_equal(vm.n_devs, 1003);
    for (i = 0; i < 1000; i++) {
        DeviceState *d = vm_find_device(&vm, "serial", (uint32_t)i);

        assert_ptr_equal(d, vm.devs[i]);
        assert_int_equal(d->instance, i);
    }
    assert_null(vm_find_device(&vm, "serial", 1000));
    assert_int_equal(vm_find_device(&vm, "rtc", 0)->instance, 0);
    assert_ptr_equal(vm_find_device(&vm, "s1", 0), vm.devs[1001]);
    assert_ptr_equal(vm.globalstate, vm.devs[1002]);

    vm.release = release_find("1.0");
    assert_false(vm_add_device(&vm, new_dev("e1000", NULL), &err));
    assert_non_null(err);
    free(err);
    assert_int_equal(vm.n_devs, 1003);
    assert_null(vm_find_device(&vm, "e1000", 0));

    vm_free_devices(&vm);
    assert_int_equal(vm.n_devs, 0);
    assert_null(vm_find_device(&vm, "serial", 0));
}

static void test_machines(void **state)
{
    const MachineDesc *none = machine_find("none");
    const MachineDesc *pc = machine_find("mig2-pc");
    const MachineDesc *q35 = machine_find("mig2-q35");
    size_t n = 0;
    char *text;

    (void)state;
    assert_non_null(none);
    assert_non_null(pc);
    assert_non_null(q35);
    assert_null(machine_find("pc"));
    assert_ptr_equal(machine_default(), pc);
    assert_null(none->ram_block);
    assert_string_equal(pc->ram_block, "pc.ram");
    assert_string_equal(q35->ram_block, "pc.ram");
    assert_string_equal(none->default_devices[0], "timer");
    assert_string_equal(none->default_devices[1], "globalstate");
    assert_null(none->default_devices[2]);
    for (const MachineDesc *const *m = machine_table(); *m; m++, n++) {
        for (const char *const *dv = (*m)->default_devices; *dv; dv++) {
            DeviceState *d = new_dev(*dv, NULL);
            char *err = NULL;

            assert_true(release_apply(release_find("1.0"), d, &err));
            device_free(d);
        }
    }
    assert_int_equal(n, 3);
    assert_string_equal(pc->default_devices[6], "virtio-blk");
    assert_null(pc->default_devices[7]);
    assert_ptr_equal(q35->default_devices, pc->default_devices);
    text = capture(machine_print);
    assert_non_null(strstr(text, "mig2-pc"));
    assert_non_null(strstr(text, "(default)"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalog_consistent),
        cmocka_unit_test(test_catalog_print),
        cmocka_unit_test(test_get_set),
        cmocka_unit_test(test_round_trip_v4),
        cmocka_unit_test(test_round_trip_vmstate),
        cmocka_unit_test(test_encoded_sizes),
        cmocka_unit_test(test_older_version_keeps_newer_fields),
        cmocka_unit_test(test_subsections_v4),
        cmocka_unit_test(test_subsections_vmstate),
        cmocka_unit_test(test_subsection_not_sent_keeps_fields),
        cmocka_unit_test(test_omit),
        cmocka_unit_test(test_subsection_unknown_to_build),
        cmocka_unit_test(test_v4_truncated),
        cmocka_unit_test(test_v4_truncated_messages),
        cmocka_unit_test(test_v4_trailing),
        cmocka_unit_test(test_v4_bad_subsections),
        cmocka_unit_test(test_v4_bad_version),
        cmocka_unit_test(test_vmstate_truncated),
        cmocka_unit_test(test_vmstate_errors),
        cmocka_unit_test(test_vmstate_stops_at_foreign_bytes),
        cmocka_unit_test(test_timer_qemu_bytes),
        cmocka_unit_test(test_globalstate_qemu_bytes),
        cmocka_unit_test(test_vmdesc_timer),
        cmocka_unit_test(test_vmdesc_subsections),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_tick_rules),
        cmocka_unit_test(test_release_table),
        cmocka_unit_test(test_release_story),
        cmocka_unit_test(test_release_apply),
        cmocka_unit_test(test_release_print),
        cmocka_unit_test(test_machines),
        cmocka_unit_test(test_dev_index),
        cmocka_unit_test(test_vm_add_device),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
