/*
 * mig2-vm - the device interpreter
 *
 * One walker over the const tables of vm/catalog.c saves, loads,
 * describes and hashes every device type, in the v4 DEVICE body and in
 * QEMU's vmstate encoding.
 *
 * A device's values buffer holds each field's wire bytes back to back:
 * the main fields in table order, then each subsection's fields.  Saving
 * copies slots out, loading copies bytes into a scratch copy that
 * replaces the buffer only once the whole input checked out.
 *
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "mig2/data.h"
#include "mig2/error.h"
#include "device.h"

/* QEMU_VM_SUBSECTION */
#define VMSTATE_SUBSECTION 0x05

void device_error_setg(char **errp, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int n;

    if (!errp || *errp) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    msg = malloc((size_t)n + 1);
    if (!msg) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *errp = msg;
}

static void die(const char *what, const DeviceType *t, const char *name)
{
    fprintf(stderr, "mig2-vm: %s '%s' in device type '%s'\n", what, name,
            t->name);
    abort();
}

/* ---- layout ---- */

static size_t field_size(const FieldDesc *f)
{
    switch (f->type) {
    case FIELD_U8:
        return 1;
    case FIELD_U16:
        return 2;
    case FIELD_U32:
        return 4;
    case FIELD_U64:
    case FIELD_I64:
        return 8;
    case FIELD_BUFFER:
    case FIELD_UNUSED:
        return f->size;
    }
    abort();
}

static bool field_is_int(const FieldDesc *f)
{
    return f->type != FIELD_BUFFER && f->type != FIELD_UNUSED;
}

/* Bytes of @fields present at @version (UINT32_MAX: all slots). */
static size_t fields_size(const FieldDesc *fields, uint32_t version)
{
    size_t n = 0;

    for (const FieldDesc *f = fields; f && f->name; f++) {
        if (f->since <= version) {
            n += field_size(f);
        }
    }
    return n;
}

static size_t sub_offset(const DeviceType *t, const SubsectionDesc *s)
{
    size_t off = fields_size(t->fields, UINT32_MAX);

    for (const SubsectionDesc *it = t->subs; it && it->name; it++) {
        if (it == s) {
            return off;
        }
        off += fields_size(it->fields, UINT32_MAX);
    }
    abort();
}

static size_t type_size(const DeviceType *t)
{
    size_t n = fields_size(t->fields, UINT32_MAX);

    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        n += fields_size(s->fields, UINT32_MAX);
    }
    return n;
}

/* Find @name among @fields; its slot offset relative to @fields' first. */
static const FieldDesc *fields_find(const FieldDesc *fields,
                                    const char *name, size_t *off)
{
    size_t o = 0;

    for (const FieldDesc *f = fields; f && f->name; f++) {
        if (strcmp(f->name, name) == 0) {
            *off = o;
            return f;
        }
        o += field_size(f);
    }
    return NULL;
}

/* A field of the type or of one of its subsections; aborts if none. */
static const FieldDesc *field_lookup(const DeviceType *t, const char *name,
                                     size_t *off)
{
    const FieldDesc *f = fields_find(t->fields, name, off);

    for (const SubsectionDesc *s = t->subs; !f && s && s->name; s++) {
        f = fields_find(s->fields, name, off);
        if (f) {
            *off += sub_offset(t, s);
        }
    }
    if (!f) {
        die("no field", t, name);
    }
    return f;
}

static const SubsectionDesc *sub_find(const DeviceType *t, const char *name,
                                      size_t len)
{
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        if (strlen(s->name) == len && memcmp(s->name, name, len) == 0) {
            return s;
        }
    }
    return NULL;
}

static size_t sub_count(const DeviceType *t)
{
    size_t n = 0;

    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        n++;
    }
    return n;
}

/* ---- field access ---- */

static uint64_t be_get(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void be_put(uint8_t *p, size_t n, uint64_t v)
{
    for (size_t i = n; i > 0; i--) {
        p[i - 1] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t device_get(const DeviceState *d, const char *field)
{
    size_t off;
    const FieldDesc *f = field_lookup(d->type, field, &off);

    if (!field_is_int(f)) {
        die("not an integer field", d->type, field);
    }
    return be_get(d->values + off, field_size(f));
}

void device_set(DeviceState *d, const char *field, uint64_t v)
{
    size_t off;
    const FieldDesc *f = field_lookup(d->type, field, &off);

    if (!field_is_int(f)) {
        die("not an integer field", d->type, field);
    }
    be_put(d->values + off, field_size(f), v);
}

const uint8_t *device_buffer_ro(const DeviceState *d, const char *field)
{
    size_t off;
    const FieldDesc *f = field_lookup(d->type, field, &off);

    if (f->type != FIELD_BUFFER) {
        die("not a buffer field", d->type, field);
    }
    return d->values + off;
}

uint8_t *device_buffer(DeviceState *d, const char *field)
{
    return d->values + (device_buffer_ro(d, field) - d->values);
}

/* ---- properties ---- */

static const PropDesc *prop_find(const DeviceType *t, const char *name,
                                 size_t len, size_t *idx)
{
    size_t i = 0;

    for (const PropDesc *p = t->props; p && p->name; p++, i++) {
        if (strlen(p->name) == len && memcmp(p->name, name, len) == 0) {
            *idx = i;
            return p;
        }
    }
    return NULL;
}

const char *device_prop(const DeviceState *d, const char *name)
{
    size_t i;

    if (!prop_find(d->type, name, strlen(name), &i)) {
        return NULL;
    }
    return d->prop_values[i];
}

static const char *prop_must(const DeviceState *d, const char *name,
                             PropKind kind)
{
    size_t i;
    const PropDesc *p = prop_find(d->type, name, strlen(name), &i);

    if (!p || p->kind != kind) {
        die("no such property", d->type, name);
    }
    return d->prop_values[i];
}

static bool parse_uint(const char *s, uint64_t *v)
{
    char *end;
    int base = 10;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    /* strtoull would take a sign or leading blanks */
    if (!isxdigit((unsigned char)s[0])) {
        return false;
    }
    errno = 0;
    *v = strtoull(s, &end, base);
    return errno == 0 && *end == '\0';
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool parse_mac(const char *s, uint8_t mac[6])
{
    for (int i = 0; i < 6; i++) {
        const char *p = s + i * 3;
        int hi, lo;

        /* stop at a NUL before reading further */
        if ((hi = hex_nibble(p[0])) < 0 || (lo = hex_nibble(p[1])) < 0 ||
            p[2] != (i == 5 ? '\0' : ':')) {
            return false;
        }
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

bool device_prop_bool(const DeviceState *d, const char *name)
{
    return strcmp(prop_must(d, name, PROP_BOOL), "on") == 0;
}

uint64_t device_prop_uint(const DeviceState *d, const char *name)
{
    uint64_t v = 0;

    parse_uint(prop_must(d, name, PROP_UINT), &v);
    return v;
}

void device_prop_mac(const DeviceState *d, const char *name, uint8_t mac[6])
{
    if (!parse_mac(prop_must(d, name, PROP_MAC), mac)) {
        memset(mac, 0, 6);
    }
}

static char *dup_or_error(const char *s, char **errp)
{
    char *c = strdup(s);

    if (!c) {
        device_error_setg(errp, "out of memory");
    }
    return c;
}

/*
 * Check @val for @p and return its normalised text (allocated), or NULL
 * with *errp set.
 */
static char *prop_parse(const DeviceType *t, const PropDesc *p,
                        const char *val, char **errp)
{
    uint64_t v;
    uint8_t mac[6];

    switch (p->kind) {
    case PROP_BOOL:
        if (!strcmp(val, "on") || !strcmp(val, "yes") ||
            !strcmp(val, "true")) {
            return dup_or_error("on", errp);
        }
        if (!strcmp(val, "off") || !strcmp(val, "no") ||
            !strcmp(val, "false")) {
            return dup_or_error("off", errp);
        }
        device_error_setg(errp, "Parameter '%s' expects 'on' or 'off'",
                          p->name);
        return NULL;
    case PROP_UINT:
        if (!parse_uint(val, &v) || v < p->min || v > p->max) {
            device_error_setg(errp, "Property '%s.%s' doesn't take value "
                              "'%s' (minimum: %" PRIu64 ", maximum: %"
                              PRIu64 ")", t->name, p->name, val, p->min,
                              p->max);
            return NULL;
        }
        return dup_or_error(val, errp);
    case PROP_MAC:
        if (!parse_mac(val, mac)) {
            device_error_setg(errp, "Property '%s.%s' doesn't take value "
                              "'%s' (expected xx:xx:xx:xx:xx:xx)", t->name,
                              p->name, val);
            return NULL;
        }
        return dup_or_error(val, errp);
    }
    abort();
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
static bool id_wellformed(const char *id)
{
    if (!isalpha((unsigned char)id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    /* it travels as a str8 */
    return strlen(id) <= 255;
}

/* ---- instances ---- */

void device_free(DeviceState *d)
{
    size_t i = 0;

    if (!d) {
        return;
    }
    if (d->prop_values) {
        for (const PropDesc *p = d->type->props; p && p->name; p++, i++) {
            free(d->prop_values[i]);
        }
    }
    free(d->prop_values);
    free(d->values);
    free(d->id);
    free(d);
}

/* Apply one "key=value" (or bare "key") option to @d. */
static bool device_apply_opt(DeviceState *d, const char *key, size_t klen,
                             const char *val, bool *seen, char **errp)
{
    const DeviceType *t = d->type;
    const PropDesc *p;
    size_t i;
    char *norm;

    if (klen == 0) {
        device_error_setg(errp, "Invalid parameter '' for device '%s'",
                          t->name);
        return false;
    }
    if (klen == 2 && memcmp(key, "id", 2) == 0) {
        if (d->id) {
            device_error_setg(errp, "Parameter 'id' given twice");
            return false;
        }
        if (!val || !id_wellformed(val)) {
            device_error_setg(errp, "Parameter 'id' expects an identifier "
                              "(letters, digits, '-', '.', '_', starting "
                              "with a letter, at most 255)");
            return false;
        }
        d->id = dup_or_error(val, errp);
        return d->id != NULL;
    }
    p = prop_find(t, key, klen, &i);
    if (!p) {
        device_error_setg(errp, "Property '%.*s' not found for device '%s'",
                          (int)klen, key, t->name);
        return false;
    }
    if (seen[i]) {
        device_error_setg(errp, "Property '%s' given twice for device '%s'",
                          p->name, t->name);
        return false;
    }
    seen[i] = true;
    if (!val) {
        /* QEMU reads a bare "fifo" as fifo=on */
        if (p->kind != PROP_BOOL) {
            device_error_setg(errp, "Expected '=' after parameter '%s'",
                              p->name);
            return false;
        }
        val = "on";
    }
    norm = prop_parse(t, p, val, errp);
    if (!norm) {
        return false;
    }
    free(d->prop_values[i]);
    d->prop_values[i] = norm;
    return true;
}

static bool device_parse_opts(DeviceState *d, const char *opts, char **errp)
{
    size_t nprops = 0;
    bool *seen;
    char *copy, *item, *save = NULL;
    bool ok = true;

    for (const PropDesc *p = d->type->props; p && p->name; p++) {
        nprops++;
    }
    if (!opts || !*opts) {
        return true;
    }
    seen = calloc(nprops + 1, sizeof(*seen));
    copy = strdup(opts);
    if (!seen || !copy) {
        free(seen);
        free(copy);
        device_error_setg(errp, "out of memory");
        return false;
    }
    /* strtok_r would merge empty items; catch them first */
    if (opts[0] == ',' || opts[strlen(opts) - 1] == ',' ||
        strstr(opts, ",,")) {
        device_error_setg(errp, "Invalid parameter '' for device '%s'",
                          d->type->name);
        ok = false;
    }
    for (item = ok ? strtok_r(copy, ",", &save) : NULL; ok && item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');

        ok = device_apply_opt(d, item, eq ? (size_t)(eq - item)
                                          : strlen(item),
                              eq ? eq + 1 : NULL, seen, errp);
    }
    free(seen);
    free(copy);
    return ok;
}

DeviceState *device_new(const DeviceType *type, const char *opts,
                        uint32_t instance, char **errp)
{
    DeviceState *d = calloc(1, sizeof(*d));
    size_t nprops = 0, i = 0;

    if (!d) {
        device_error_setg(errp, "out of memory");
        return NULL;
    }
    d->type = type;
    d->instance = instance;
    for (const PropDesc *p = type->props; p && p->name; p++) {
        nprops++;
    }
    d->prop_values = calloc(nprops + 1, sizeof(*d->prop_values));
    if (!d->prop_values) {
        goto oom;
    }
    for (const PropDesc *p = type->props; p && p->name; p++, i++) {
        d->prop_values[i] = strdup(p->def);
        if (!d->prop_values[i]) {
            goto oom;
        }
    }
    if (!device_parse_opts(d, opts, errp)) {
        device_free(d);
        return NULL;
    }
    if (!d->id) {
        d->id = strdup(type->vmsd_name);
        if (!d->id) {
            goto oom;
        }
    }
    d->values_len = type_size(type);
    d->values = calloc(d->values_len ? d->values_len : 1, 1);
    if (!d->values) {
        goto oom;
    }
    d->save_min = type->min_version;
    d->save_max = type->version;
    d->load_min = type->min_version;
    d->load_max = type->version;
    d->known_subs = NULL;
    if (type->realize) {
        type->realize(d);
    }
    return d;

oom:
    device_free(d);
    device_error_setg(errp, "out of memory");
    return NULL;
}

bool device_sub_known(const DeviceState *d, const SubsectionDesc *s)
{
    if (!d->known_subs) {
        return true;
    }
    for (const char *const *n = d->known_subs; *n; n++) {
        if (strcmp(*n, s->name) == 0) {
            return true;
        }
    }
    return false;
}

bool device_sub_needed(const DeviceState *d, const SubsectionDesc *s)
{
    return !s->needed || s->needed(d);
}

void device_tick(DeviceState *d, uint64_t n)
{
    if (d->type->tick) {
        d->type->tick(d, n);
    }
}

/* ---- encodings ---- */

static bool name_in(const char *const *list, const char *name)
{
    for (; list && *list; list++) {
        if (strcmp(*list, name) == 0) {
            return true;
        }
    }
    return false;
}

/* What the saver sends: needed now and known to this build. */
static bool sub_sent(const DeviceState *d, const SubsectionDesc *s)
{
    return device_sub_known(d, s) && device_sub_needed(d, s);
}

static void check_version(const DeviceState *d, uint32_t version)
{
    if (version < 1 || version > d->type->version) {
        fprintf(stderr, "mig2-vm: saving '%s' at version %" PRIu32
                " it does not have\n", d->type->name, version);
        abort();
    }
}

static void save_fields(const uint8_t *slots, const FieldDesc *fields,
                        uint32_t version, Mig2Writer *w)
{
    static const uint8_t zeros[64];
    size_t off = 0;

    for (const FieldDesc *f = fields; f && f->name; f++) {
        size_t n = field_size(f);

        if (f->since <= version) {
            if (f->type != FIELD_UNUSED) {
                mig2_wr_bytes(w, slots + off, n);
            } else {
                for (size_t i = 0; i < n; i += sizeof(zeros)) {
                    mig2_wr_bytes(w, zeros, n - i < sizeof(zeros)
                                            ? n - i : sizeof(zeros));
                }
            }
        }
        off += n;
    }
}

/*
 * Read the fields present at @version from @rd into @slots.  Returns
 * NULL, or the field that ran out of input (@rd left at its start).
 */
static const FieldDesc *load_fields(uint8_t *slots, const FieldDesc *fields,
                                    uint32_t version, Mig2Reader *rd)
{
    size_t off = 0;

    for (const FieldDesc *f = fields; f && f->name; f++) {
        size_t n = field_size(f);

        if (f->since <= version) {
            int r = f->type == FIELD_UNUSED ? mig2_rd_skip(rd, n)
                                            : mig2_rd_bytes(rd, slots + off,
                                                            n);
            if (r != MIG2_OK) {
                return f;
            }
        }
        off += n;
    }
    return NULL;
}

void device_save(const DeviceState *d, uint32_t version,
                 const char *const *omit, Mig2Writer *w)
{
    const DeviceType *t = d->type;
    uint8_t count = 0;

    check_version(d, version);
    save_fields(d->values, t->fields, version, w);
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        if (sub_sent(d, s) && !name_in(omit, s->name)) {
            count++;
        }
    }
    mig2_data_device_tail_begin(w, count);
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        if (sub_sent(d, s) && !name_in(omit, s->name)) {
            size_t mark = mig2_data_subsection_begin(w, s->name);

            save_fields(d->values + sub_offset(t, s), s->fields, s->version,
                        w);
            mig2_data_subsection_end(w, mark);
        }
    }
}

/* Run the type's post_load check on candidate values @scratch. */
static bool post_load_ok(const DeviceState *d, uint8_t *scratch,
                         char **errp)
{
    DeviceState view;

    if (!d->type->post_load) {
        return true;
    }
    view = *d;
    view.values = scratch;
    return d->type->post_load(&view, errp);
}

static size_t rd_pos(const Mig2Reader *rd, const uint8_t *base)
{
    return (size_t)(rd->p - base);
}

bool device_load(DeviceState *d, uint32_t version, const uint8_t *p,
                 size_t len, char **errp)
{
    const DeviceType *t = d->type;
    const char *id = d->id;
    uint32_t inst = d->instance;
    uint8_t *scratch = NULL;
    bool *seen = NULL;
    const FieldDesc *f;
    Mig2Reader rd;
    uint8_t count;

    if (version < d->load_min || version > d->load_max) {
        device_error_setg(errp, "device '%s@%" PRIu32 "': version %" PRIu32
                          " is outside the loadable range %" PRIu32 "..%"
                          PRIu32, id, inst, version, d->load_min,
                          d->load_max);
        return false;
    }
    scratch = malloc(d->values_len ? d->values_len : 1);
    seen = calloc(sub_count(t) + 1, sizeof(*seen));
    if (!scratch || !seen) {
        device_error_setg(errp, "out of memory");
        goto fail;
    }
    memcpy(scratch, d->values, d->values_len);
    mig2_rd_init(&rd, p, len);

    f = load_fields(scratch, t->fields, version, &rd);
    if (f) {
        device_error_setg(errp, "device '%s@%" PRIu32 "': truncated at "
                          "offset %zu, in field '%s' (size %zu, %zu left)",
                          id, inst, rd_pos(&rd, p), f->name, field_size(f),
                          mig2_rd_left(&rd));
        goto fail;
    }
    if (mig2_rd_u8(&rd, &count) != MIG2_OK) {
        device_error_setg(errp, "device '%s@%" PRIu32 "': truncated at "
                          "offset %zu, in the subsection count", id, inst,
                          rd_pos(&rd, p));
        goto fail;
    }
    for (unsigned i = 0; i < count; i++) {
        size_t at = rd_pos(&rd, p);
        const SubsectionDesc *s;
        const char *name;
        size_t nlen, want;
        uint32_t slen;
        Mig2Reader sr;
        int r;

        r = mig2_rd_str8(&rd, &name, &nlen);
        if (r == MIG2_ERR_TRUNCATED) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': truncated at "
                              "offset %zu, in the name of subsection %u of "
                              "%u", id, inst, at, i + 1, (unsigned)count);
            goto fail;
        }
        if (r != MIG2_OK) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': subsection "
                              "%u of %u at offset %zu: bad name (%s)", id,
                              inst, i + 1, (unsigned)count, at,
                              mig2_strerror(r));
            goto fail;
        }
        s = sub_find(t, name, nlen);
        if (!s) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': unknown "
                              "subsection '%.*s' at offset %zu", id, inst,
                              (int)nlen, name, at);
            goto fail;
        }
        if (!device_sub_known(d, s)) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': subsection "
                              "'%s' at offset %zu is not known to this "
                              "build", id, inst, s->name, at);
            goto fail;
        }
        if (seen[s - t->subs]) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': subsection "
                              "'%s' repeated at offset %zu", id, inst,
                              s->name, at);
            goto fail;
        }
        seen[s - t->subs] = true;
        if (mig2_rd_u32(&rd, &slen) != MIG2_OK) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': truncated at "
                              "offset %zu, in the length of subsection '%s'",
                              id, inst, rd_pos(&rd, p), s->name);
            goto fail;
        }
        want = fields_size(s->fields, s->version);
        if (slen != want) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': subsection "
                              "'%s' at offset %zu has length %" PRIu32
                              ", expected %zu", id, inst, s->name, at, slen,
                              want);
            goto fail;
        }
        if (mig2_rd_sub(&rd, slen, &sr) != MIG2_OK) {
            device_error_setg(errp, "device '%s@%" PRIu32 "': truncated at "
                              "offset %zu, in subsection '%s' (size %" PRIu32
                              ", %zu left)", id, inst, rd_pos(&rd, p),
                              s->name, slen, mig2_rd_left(&rd));
            goto fail;
        }
        /* the length matched, so the fields fit exactly */
        load_fields(scratch + sub_offset(t, s), s->fields, s->version, &sr);
    }
    if (mig2_rd_end(&rd) != MIG2_OK) {
        device_error_setg(errp, "device '%s@%" PRIu32 "': trailing bytes "
                          "at offset %zu (%zu after the last subsection)",
                          id, inst, rd_pos(&rd, p), mig2_rd_left(&rd));
        goto fail;
    }
    if (!post_load_ok(d, scratch, errp)) {
        goto fail;
    }
    memcpy(d->values, scratch, d->values_len);
    free(scratch);
    free(seen);
    return true;

fail:
    free(scratch);
    free(seen);
    return false;
}

void device_save_vmstate(const DeviceState *d, uint32_t version,
                         Mig2Writer *w)
{
    const DeviceType *t = d->type;

    check_version(d, version);
    save_fields(d->values, t->fields, version, w);
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        if (sub_sent(d, s)) {
            mig2_wr_u8(w, VMSTATE_SUBSECTION);
            mig2_wr_str8(w, s->name);
            mig2_wr_u32(w, s->version);
            save_fields(d->values + sub_offset(t, s), s->fields, s->version,
                        w);
        }
    }
}

/* QEMU's version checks, worded as vmstate_load_state() words them. */
static bool vmstate_version_ok(const char *name, uint32_t version,
                               uint32_t min, uint32_t max, char **errp)
{
    if (version > max) {
        device_error_setg(errp, "%s: incoming version_id %" PRIu32 " is too "
                          "new for local version_id %" PRIu32, name, version,
                          max);
        return false;
    }
    if (version < min) {
        device_error_setg(errp, "%s: incoming version_id %" PRIu32 " is too "
                          "old for local minimum version_id %" PRIu32, name,
                          version, min);
        return false;
    }
    return true;
}

bool device_load_vmstate(DeviceState *d, uint32_t version, Mig2Reader *rd,
                         char **errp)
{
    const DeviceType *t = d->type;
    const char *vmsd = t->vmsd_name;
    size_t vlen = strlen(vmsd);
    Mig2Reader r = *rd;
    const uint8_t *base = r.p;
    const FieldDesc *f;
    uint8_t *scratch;

    if (!vmstate_version_ok(vmsd, version, d->load_min, d->load_max, errp)) {
        return false;
    }
    scratch = malloc(d->values_len ? d->values_len : 1);
    if (!scratch) {
        device_error_setg(errp, "out of memory");
        return false;
    }
    memcpy(scratch, d->values, d->values_len);

    f = load_fields(scratch, t->fields, version, &r);
    if (f) {
        device_error_setg(errp, "Failed to load %s:%s (truncated at offset "
                          "%zu: size %zu, %zu left)", vmsd, f->name,
                          rd_pos(&r, base), field_size(f), mig2_rd_left(&r));
        goto fail;
    }
    /*
     * Like QEMU, peek: a subsection has no length, so anything that is
     * not "0x05, len, <vmsd>..." belongs to the stream, not to us.
     */
    for (;;) {
        size_t left = mig2_rd_left(&r);
        const SubsectionDesc *s;
        const char *name;
        uint8_t len;
        uint32_t sv;

        if (left < 2 || r.p[0] != VMSTATE_SUBSECTION) {
            break;
        }
        len = r.p[1];
        if (len < vlen + 1 || left < 2u + len) {
            break;
        }
        name = (const char *)r.p + 2;
        if (memcmp(name, vmsd, vlen) != 0) {
            break;
        }
        s = sub_find(t, name, len);
        if (!s || !device_sub_known(d, s)) {
            device_error_setg(errp, "VM subsection '%.*s' in '%s' does not "
                              "exist", (int)len, name, vmsd);
            goto fail;
        }
        mig2_rd_skip(&r, 2u + len);
        if (mig2_rd_u32(&r, &sv) != MIG2_OK) {
            device_error_setg(errp, "Failed to load %s (truncated at offset "
                              "%zu: its version)", s->name, rd_pos(&r, base));
            goto fail;
        }
        if (!vmstate_version_ok(s->name, sv, 1, s->version, errp)) {
            goto fail;
        }
        f = load_fields(scratch + sub_offset(t, s), s->fields, sv, &r);
        if (f) {
            device_error_setg(errp, "Failed to load %s:%s (truncated at "
                              "offset %zu: size %zu, %zu left)", s->name,
                              f->name, rd_pos(&r, base), field_size(f),
                              mig2_rd_left(&r));
            goto fail;
        }
    }
    if (!post_load_ok(d, scratch, errp)) {
        goto fail;
    }
    memcpy(d->values, scratch, d->values_len);
    free(scratch);
    *rd = r;
    return true;

fail:
    free(scratch);
    return false;
}

/* ---- description and hashing ---- */

static const char *field_type_name(const FieldDesc *f)
{
    /* QEMU's VMStateInfo names */
    switch (f->type) {
    case FIELD_U8:
        return "uint8";
    case FIELD_U16:
        return "uint16";
    case FIELD_U32:
        return "uint32";
    case FIELD_U64:
        return "uint64";
    case FIELD_I64:
        return "int64";
    case FIELD_BUFFER:
        return "buffer";
    case FIELD_UNUSED:
        return "unused_buffer";
    }
    abort();
}

static json_object *vmdesc_fields(const FieldDesc *fields, uint32_t version)
{
    json_object *arr = json_object_new_array();

    for (const FieldDesc *f = fields; f && f->name; f++) {
        json_object *o;

        if (f->since > version) {
            continue;
        }
        o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(f->name));
        json_object_object_add(o, "type",
                               json_object_new_string(field_type_name(f)));
        json_object_object_add(o, "size",
                               json_object_new_int64((int64_t)field_size(f)));
        json_object_array_add(arr, o);
    }
    return arr;
}

json_object *device_vmdesc(const DeviceState *d, uint32_t version)
{
    const DeviceType *t = d->type;
    json_object *o = json_object_new_object();
    json_object *subs = NULL;

    json_object_object_add(o, "name", json_object_new_string(d->id));
    json_object_object_add(o, "instance_id",
                           json_object_new_int64(d->instance));
    json_object_object_add(o, "vmsd_name",
                           json_object_new_string(t->vmsd_name));
    json_object_object_add(o, "version", json_object_new_int64(version));
    json_object_object_add(o, "fields", vmdesc_fields(t->fields, version));
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        json_object *so;

        if (!sub_sent(d, s)) {
            continue;
        }
        if (!subs) {
            subs = json_object_new_array();
        }
        so = json_object_new_object();
        json_object_object_add(so, "vmsd_name",
                               json_object_new_string(s->name));
        json_object_object_add(so, "version",
                               json_object_new_int64(s->version));
        json_object_object_add(so, "fields",
                               vmdesc_fields(s->fields, s->version));
        json_object_array_add(subs, so);
    }
    if (subs) {
        json_object_object_add(o, "subsections", subs);
    }
    return o;
}

void device_canonical(const DeviceState *d, Mig2Writer *w)
{
    /* the slots are the newest-version wire bytes already */
    mig2_wr_bytes(w, d->values, d->values_len);
}
