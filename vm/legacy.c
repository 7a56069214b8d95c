/*
 * mig2-vm - the legacy v3 stream, in QEMU's format
 *
 * QEVM v3, a CONFIGURATION section with the machine name, the "ram"
 * section (START, PART per dirty round, END) and one FULL section per
 * device in QEMU's vmstate encoding, each with a footer, then EOF and the
 * vmdesc JSON.  Constants are those of QEMU's migration/savevm.c and
 * ram.c (see ../shared/reference/qemu-migration-today.md, section B).
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig2/mig2.h"

#include "migration_int.h"


#define RAM_SECTION_ID 2u       /* as QEMU 7.2 numbers it for -M pc/none */
#define RAM_VERSION 4u
#define FLUSH_AT (1u << 20)

/* A buffered writer over a Chan: pages are copied, then sent in batches. */
typedef struct Out {
    Chan *c;
    Mig2Writer w;
    char *err;
} Out;

static bool out_flush(Out *o)
{
    if (o->err) {
        return false;
    }
    if (mig2_wr_error(&o->w)) {
        o->err = strdup("stream encoding failed");
        return false;
    }
    if (o->w.len && !chan_write(o->c, o->w.buf, o->w.len, &o->err)) {
        return false;
    }
    o->w.len = 0;
    return true;
}

static bool out_maybe_flush(Out *o)
{
    return o->w.len < FLUSH_AT || out_flush(o);
}

static void put_idstr(Mig2Writer *w, const char *s)
{
    size_t n = strlen(s);

    mig2_wr_u8(w, (uint8_t)n);
    mig2_wr_bytes(w, s, n);
}

/* START and FULL name the section; PART and END only give its id. */
static void section_header(Mig2Writer *w, uint8_t type, uint32_t id,
                           const char *idstr, uint32_t instance,
                           uint32_t version)
{
    mig2_wr_u8(w, type);
    mig2_wr_u32(w, id);
    put_idstr(w, idstr);
    mig2_wr_u32(w, instance);
    mig2_wr_u32(w, version);
}

static void section_continue(Mig2Writer *w, uint8_t type, uint32_t id)
{
    mig2_wr_u8(w, type);
    mig2_wr_u32(w, id);
}

static void footer(Mig2Writer *w, uint32_t id)
{
    mig2_wr_u8(w, MIG2_V3_SEC_FOOTER);
    mig2_wr_u32(w, id);
}

typedef struct V3Round {
    Out *o;
    uint8_t section;        /* MIG2_V3_SEC_PART for rounds, MIG2_V3_SEC_END for the last */
} V3Round;

/* One PART section carrying the pages of @bitmap. */
static bool v3_round(Migration *m, Chan *c, const uint64_t *bitmap,
                     uint32_t round, uint64_t *pages, void *opaque,
                     char **errp)
{
    V3Round *r = opaque;
    Out *o = r->o;
    Vm *vm = m->vm;
    size_t wi;
    bool first = true;

    (void)round;
    (void)c;
    *pages = 0;
    section_continue(&o->w, r->section, RAM_SECTION_ID);
    for (wi = 0; wi < vm->ram.dirty_words; wi++) {
        uint64_t bits = bitmap[wi];

        while (bits) {
            uint64_t pg = wi * 64 + (uint64_t)__builtin_ctzll(bits);
            const uint8_t *host = vm->ram.host + pg * RAM_PAGE_SIZE;
            bool zero = ram_is_zero(host, RAM_PAGE_SIZE);
            uint64_t flags = zero ? MIG2_V3_RAM_ZERO : MIG2_V3_RAM_PAGE;

            bits &= bits - 1;
            mig2_wr_u64(&o->w, pg * RAM_PAGE_SIZE | flags |
                               (first ? 0 : MIG2_V3_RAM_CONTINUE));
            if (first) {
                put_idstr(&o->w, vm->ram.name);
                first = false;
            }
            if (zero) {
                mig2_wr_u8(&o->w, 0);
            } else {
                mig2_wr_bytes(&o->w, host, RAM_PAGE_SIZE);
            }
            pthread_mutex_lock(&m->lock);
            if (zero) {
                m->stats.duplicate++;
            } else {
                m->stats.normal++;
            }
            m->stats.transferred = c->bytes_out + o->w.len;
            pthread_mutex_unlock(&m->lock);
            (*pages)++;
            if (!out_maybe_flush(o)) {
                *errp = strdup(o->err);
                return false;
            }
            if (mig_cancelled(m)) {
                *errp = strdup("migration cancelled");
                return false;
            }
        }
    }
    mig2_wr_u64(&o->w, MIG2_V3_RAM_EOS);
    footer(&o->w, RAM_SECTION_ID);
    if (!out_flush(o)) {
        *errp = strdup(o->err);
        return false;
    }
    return true;
}

/* Section ids for devices: after the RAM section's, as QEMU spaces them. */
static uint32_t device_section_id(size_t i)
{
    return i == 0 ? 0 : (uint32_t)(RAM_SECTION_ID + 2 * i);
}

bool mig_v3_source(Migration *m, Chan *c, char **errp)
{
    Vm *vm = m->vm;
    Out o = { .c = c };
    V3Round r = { .o = &o, .section = MIG2_V3_SEC_PART };
    json_object *vmdesc, *devs;
    const char *js;
    uint64_t pages = 0, *bitmap;
    size_t i;
    bool ok;

    mig2_wr_init(&o.w, 64u << 20);
    mig2_wr_u32(&o.w, MIG2_MAGIC);
    mig2_wr_u32(&o.w, MIG2_STREAM_V3);
    mig2_wr_u8(&o.w, MIG2_V3_SEC_CONFIGURATION);
    mig2_wr_u32(&o.w, (uint32_t)strlen(vm->machine->name));
    mig2_wr_bytes(&o.w, vm->machine->name, strlen(vm->machine->name));

    /* RAM START: the block list, then EOS. */
    section_header(&o.w, MIG2_V3_SEC_START, RAM_SECTION_ID, "ram", 0, RAM_VERSION);
    mig2_wr_u64(&o.w, (vm->ram.host ? vm->ram.size : 0) | MIG2_V3_RAM_MEM_SIZE);
    if (vm->ram.host) {
        put_idstr(&o.w, vm->ram.name);
        mig2_wr_u64(&o.w, vm->ram.size);
    }
    mig2_wr_u64(&o.w, MIG2_V3_RAM_EOS);
    footer(&o.w, RAM_SECTION_ID);
    if (!out_flush(&o)) {
        *errp = o.err;
        mig2_wr_free(&o.w);
        return false;
    }
    pthread_mutex_lock(&m->lock);
    m->setup_ms = mig_now_ms() - m->start_ms;
    m->stats.total = vm->ram.size;
    pthread_mutex_unlock(&m->lock);
    mig_set_status(m, MIG_STATUS_ACTIVE);

    ok = mig_precopy(m, c, v3_round, &r, errp);
    if (!ok) {
        free(o.err);
        mig2_wr_free(&o.w);
        return false;
    }
    mig_switchover_stop(m);

    /* RAM END with whatever changed since the last round. */
    bitmap = calloc(vm->ram.dirty_words ? vm->ram.dirty_words : 1,
                    sizeof(*bitmap));
    if (!bitmap) {
        *errp = strdup("out of memory");
        mig2_wr_free(&o.w);
        return false;
    }
    if (vm->ram.host) {
        ram_take_dirty(&vm->ram, bitmap);
    }
    r.section = MIG2_V3_SEC_END;
    ok = v3_round(m, c, bitmap, 0, &pages, &r, errp);
    free(bitmap);
    if (!ok) {
        free(o.err);
        mig2_wr_free(&o.w);
        return false;
    }

    vmdesc = json_object_new_object();
    devs = json_object_new_array();
    json_object_object_add(vmdesc, "page_size",
                           json_object_new_int(RAM_PAGE_SIZE));
    pthread_mutex_lock(&vm->lock);
    for (i = 0; i < vm->n_devs; i++) {
        const DeviceState *d = vm->devs[i];
        uint32_t id = device_section_id(i);

        section_header(&o.w, MIG2_V3_SEC_FULL, id, d->id, d->instance, d->save_max);
        device_save_vmstate(d, d->save_max, &o.w);
        footer(&o.w, id);
        json_object_array_add(devs, device_vmdesc(d, d->save_max));
    }
    pthread_mutex_unlock(&vm->lock);
    json_object_object_add(vmdesc, "devices", devs);
    mig2_wr_u8(&o.w, MIG2_V3_SEC_EOF);
    js = json_object_to_json_string_ext(vmdesc, JSON_C_TO_STRING_PLAIN |
                                                    JSON_C_TO_STRING_NOSLASHESCAPE);
    mig2_wr_u8(&o.w, MIG2_V3_SEC_VMDESC);
    mig2_wr_u32(&o.w, (uint32_t)strlen(js));
    mig2_wr_bytes(&o.w, js, strlen(js));
    json_object_put(vmdesc);
    ok = out_flush(&o);
    if (!ok) {
        *errp = o.err;
    }
    pthread_mutex_lock(&m->lock);
    m->stats.transferred = c->bytes_out;
    m->stats.remaining = 0;
    pthread_mutex_unlock(&m->lock);
    mig2_wr_free(&o.w);
    return ok;
}

/* ---------------------------------------------------------------- */
/* Loading                                                           */
/* ---------------------------------------------------------------- */

typedef struct In {
    Chan *c;
    char **errp;
} In;

static bool in_bytes(In *in, void *p, size_t n)
{
    if (!chan_read(in->c, p, n, in->errp)) {
        char *e = *in->errp;

        *in->errp = mig_strf("stream ended or failed: %s", e);
        free(e);
        return false;
    }
    return true;
}

static bool in_u8(In *in, uint8_t *v)
{
    return in_bytes(in, v, 1);
}

static bool in_u32(In *in, uint32_t *v)
{
    uint8_t b[4];

    if (!in_bytes(in, b, 4)) {
        return false;
    }
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
         b[3];
    return true;
}

static bool in_u64(In *in, uint64_t *v)
{
    uint32_t hi, lo;

    if (!in_u32(in, &hi) || !in_u32(in, &lo)) {
        return false;
    }
    *v = (uint64_t)hi << 32 | lo;
    return true;
}

static bool in_idstr(In *in, char out[256])
{
    uint8_t n;

    if (!in_u8(in, &n) || !in_bytes(in, out, n)) {
        return false;
    }
    out[n] = '\0';
    return true;
}

static bool fail(In *in, char *msg)
{
    *in->errp = msg ? msg : strdup("out of memory");
    return false;
}

/* The body of one "ram" section (START, PART or END) up to its EOS. */
static bool load_ram(Migration *m, In *in, uint64_t *pages)
{
    Vm *vm = m->vm;
    bool have_block = false;

    for (;;) {
        uint64_t v, flags, addr;
        char name[256];

        if (!in_u64(in, &v)) {
            return false;
        }
        flags = v & (RAM_PAGE_SIZE - 1);
        addr = v & ~(uint64_t)(RAM_PAGE_SIZE - 1);
        if (flags & MIG2_V3_RAM_MEM_SIZE) {
            uint64_t total = addr, seen = 0;

            while (seen < total) {
                uint64_t size;

                if (!in_idstr(in, name) || !in_u64(in, &size)) {
                    return false;
                }
                if (!vm->ram.host || strcmp(name, vm->ram.name) != 0) {
                    return fail(in, mig_strf("Unknown ramblock \"%s\", cannot "
                                             "accept migration", name));
                }
                if (size != vm->ram.size) {
                    return fail(in, mig_strf("Size mismatch: %s: 0x%" PRIx64
                                             " != 0x%" PRIx64, name, size,
                                             vm->ram.size));
                }
                seen += size;
            }
            if (seen != total) {
                return fail(in, strdup("RAM block sizes do not add up to "
                                       "the announced total"));
            }
            continue;
        }
        if (flags & MIG2_V3_RAM_EOS) {
            return true;
        }
        if (flags & (MIG2_V3_RAM_ZERO | MIG2_V3_RAM_PAGE)) {
            uint8_t *host;

            if (!(flags & MIG2_V3_RAM_CONTINUE)) {
                if (!in_idstr(in, name)) {
                    return false;
                }
                if (!vm->ram.host || strcmp(name, vm->ram.name) != 0) {
                    return fail(in, mig_strf("Unknown ramblock \"%s\", cannot "
                                             "accept migration", name));
                }
                have_block = true;
            } else if (!have_block) {
                return fail(in, strdup("RAM page continues a block that was "
                                       "never named"));
            }
            if (addr >= vm->ram.size) {
                return fail(in, mig_strf("RAM page 0x%" PRIx64 " is outside "
                                         "block %s", addr, vm->ram.name));
            }
            host = vm->ram.host + addr;
            if (flags & MIG2_V3_RAM_ZERO) {
                uint8_t ch;

                if (!in_u8(in, &ch)) {
                    return false;
                }
                if (ch == 0) {
                    ram_zero_page(&vm->ram, addr);
                } else {
                    memset(host, ch, RAM_PAGE_SIZE);
                    ram_note_written(&vm->ram, addr);
                }
            } else if (!in_bytes(in, host, RAM_PAGE_SIZE)) {
                return false;
            } else {
                ram_note_written(&vm->ram, addr);
            }
            pthread_mutex_lock(&m->lock);
            if (flags & MIG2_V3_RAM_ZERO) {
                m->stats.duplicate++;
            } else {
                m->stats.normal++;
            }
            pthread_mutex_unlock(&m->lock);
            (*pages)++;
            continue;
        }
        if (flags & MIG2_V3_RAM_MULTIFD_FLUSH) {
            continue;
        }
        return fail(in, mig_strf("Unknown combination of migration flags: "
                                 "0x%" PRIx64, flags));
    }
}

static bool check_footer(In *in, uint32_t id, const char *what)
{
    uint8_t t;
    uint32_t fid;

    if (!in_u8(in, &t)) {
        return false;
    }
    if (t != MIG2_V3_SEC_FOOTER || !in_u32(in, &fid) || fid != id) {
        if (*in->errp) {
            return false;
        }
        return fail(in, mig_strf("Missing section footer for %s", what));
    }
    return true;
}

/* The largest vmstate a device can produce at @version, for buffering. */
static size_t vmstate_bound(const DeviceState *d)
{
    const DeviceType *t = d->type;
    size_t n = 0, i, j;

    for (i = 0; t->fields[i].name; i++) {
        n += t->fields[i].size ? t->fields[i].size : 8;
    }
    for (i = 0; t->subs && t->subs[i].name; i++) {
        n += 1 + 1 + strlen(t->subs[i].name) + 4;
        for (j = 0; t->subs[i].fields[j].name; j++) {
            n += t->subs[i].fields[j].size ? t->subs[i].fields[j].size : 8;
        }
    }
    return n + 16;
}

static bool load_device_section(Migration *m, In *in, const char *idstr,
                                uint32_t instance, uint32_t version)
{
    Vm *vm = m->vm;
    DeviceState *d = vm_find_device(vm, idstr, instance);
    const uint8_t *p;
    size_t avail, want;
    Mig2Reader rd;
    char *lerr = NULL;
    bool ok;

    if (!d) {
        return fail(in, mig_strf("Unknown savevm section or instance '%s' %u. "
                                 "Make sure that your current VM setup "
                                 "matches your saved VM setup, including "
                                 "any hotplugged devices", idstr, instance));
    }
    if (version > d->load_max || version < d->load_min) {
        return fail(in, mig_strf("savevm: unsupported version %u for '%s' v%u",
                                 version, idstr, d->load_max));
    }
    /*
     * vmstate has no length: buffer the most this device can take (or
     * what is left of the stream) and let the loader consume its part.
     */
    want = vmstate_bound(d);
    p = chan_peek(in->c, want, &avail, in->errp);
    if (!p) {
        return false;
    }
    mig2_rd_init(&rd, p, avail);
    pthread_mutex_lock(&vm->lock);
    ok = device_load_vmstate(d, version, &rd, &lerr);
    pthread_mutex_unlock(&vm->lock);
    if (!ok) {
        char *msg = mig_strf("error while loading state for instance 0x%x of "
                             "device '%s': %s", instance, idstr,
                             lerr ? lerr : "invalid state");

        free(lerr);
        return fail(in, msg);
    }
    chan_consume(in->c, (size_t)(rd.p - p));
    return true;
}

static bool load_configuration(Migration *m, In *in)
{
    uint32_t len;
    char name[256];

    if (!in_u32(in, &len)) {
        return false;
    }
    if (len > 255) {
        return fail(in, mig_strf("machine type name of %u bytes", len));
    }
    if (!in_bytes(in, name, len)) {
        return false;
    }
    name[len] = '\0';
    if (strcmp(name, m->vm->machine->name) != 0) {
        return fail(in, mig_strf("Machine type received is '%s' and local is "
                                 "'%s'", name, m->vm->machine->name));
    }
    return true;
}

bool mig_v3_destination(Migration *m, Chan *c, char **errp)
{
    In in = { .c = c, .errp = errp };
    uint32_t ram_id = UINT32_MAX;
    uint64_t pages = 0;
    size_t loaded = 0;

    pthread_mutex_lock(&m->lock);
    m->stats.total = m->vm->ram.size;
    pthread_mutex_unlock(&m->lock);

    mig_set_status(m, MIG_STATUS_ACTIVE);
    for (;;) {
        uint8_t type;
        uint32_t id, instance, version;
        char idstr[256];

        if (!in_u8(&in, &type)) {
            return false;
        }
        switch (type) {
        case MIG2_V3_SEC_CONFIGURATION:
            if (!load_configuration(m, &in)) {
                return false;
            }
            break;
        case MIG2_V3_SEC_START:
        case MIG2_V3_SEC_FULL:
            if (!in_u32(&in, &id) || !in_idstr(&in, idstr) ||
                !in_u32(&in, &instance) || !in_u32(&in, &version)) {
                return false;
            }
            if (strcmp(idstr, "ram") == 0) {
                if (version != RAM_VERSION) {
                    return fail(&in, mig_strf("savevm: unsupported version "
                                              "%u for 'ram' v%u", version,
                                              RAM_VERSION));
                }
                ram_id = id;
                if (!load_ram(m, &in, &pages)) {
                    return false;
                }
            } else if (!load_device_section(m, &in, idstr, instance,
                                            version)) {
                return false;
            } else {
                loaded++;
            }
            if (!check_footer(&in, id, idstr)) {
                return false;
            }
            break;
        case MIG2_V3_SEC_PART:
        case MIG2_V3_SEC_END:
            if (!in_u32(&in, &id)) {
                return false;
            }
            if (id != ram_id) {
                return fail(&in, mig_strf("Unknown savevm section %u", id));
            }
            if (!load_ram(m, &in, &pages) || !check_footer(&in, id, "ram")) {
                return false;
            }
            if (type == MIG2_V3_SEC_END) {
                mig_set_status(m, MIG_STATUS_DEVICE);
            }
            break;
        case MIG2_V3_SEC_COMMAND: {
            uint8_t hdr[4], skip[256];
            size_t left;

            /* be16 command, be16 length: nothing here needs acting on. */
            if (!in_bytes(&in, hdr, 4)) {
                return false;
            }
            for (left = (size_t)(hdr[2] << 8 | hdr[3]); left;) {
                size_t k = left < sizeof(skip) ? left : sizeof(skip);

                if (!in_bytes(&in, skip, k)) {
                    return false;
                }
                left -= k;
            }
            break;
        }
        case MIG2_V3_SEC_EOF:
            pthread_mutex_lock(&m->lock);
            m->stats.transferred = c->bytes_in;
            pthread_mutex_unlock(&m->lock);
            (void)loaded;
            return true;
        default:
            return fail(&in, mig_strf("Unknown savevm section type %u", type));
        }
        pthread_mutex_lock(&m->lock);
        m->stats.transferred = c->bytes_in;
        pthread_mutex_unlock(&m->lock);
        if (mig_cancelled(m)) {
            return fail(&in, strdup("migration cancelled"));
        }
    }
}
