/*
 * mig2-vm - devices described as data
 *
 * A DeviceType is a const table in the spirit of QEMU's
 * VMStateDescription: named fields, each with the version it appeared in,
 * and optional subsections with a "needed" predicate.  One interpreter
 * (device.c) saves, loads, describes and hashes every type, in both
 * encodings:
 *   - the v4 DEVICE frame body (docs/protocol.md section 13), and
 *   - QEMU's legacy vmstate encoding (v3 stream sections).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_DEVICE_H
#define MIG2_VM_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "mig2/codec.h"

typedef enum FieldType {
    FIELD_U8,
    FIELD_U16,
    FIELD_U32,
    FIELD_U64,
    FIELD_I64,
    FIELD_BUFFER,           /* @size raw bytes */
    FIELD_UNUSED,           /* @size bytes, saved as zeros, skipped on load
                             * (QEMU's VMSTATE_UNUSED) */
} FieldType;

typedef struct FieldDesc {
    const char *name;
    FieldType type;
    uint32_t size;          /* bytes; implied for integers */
    uint32_t since;         /* first state version that has the field */
} FieldDesc;

/* Table helpers: DEVICE_FIELD_U32("ier", 1) reads "ier, since v1". */
#define DEVICE_FIELD_U8(n, s)  { .name = (n), .type = FIELD_U8, .since = (s) }
#define DEVICE_FIELD_U16(n, s) { .name = (n), .type = FIELD_U16, .since = (s) }
#define DEVICE_FIELD_U32(n, s) { .name = (n), .type = FIELD_U32, .since = (s) }
#define DEVICE_FIELD_U64(n, s) { .name = (n), .type = FIELD_U64, .since = (s) }
#define DEVICE_FIELD_I64(n, s) { .name = (n), .type = FIELD_I64, .since = (s) }
#define DEVICE_FIELD_BUFFER(n, sz, s) \
    { .name = (n), .type = FIELD_BUFFER, .size = (sz), .since = (s) }
/* Named "unused" as QEMU's vmdesc names it. */
#define DEVICE_FIELD_UNUSED(sz, s) \
    { .name = "unused", .type = FIELD_UNUSED, .size = (sz), .since = (s) }
#define DEVICE_FIELD_END        { .name = NULL }

typedef struct DeviceState DeviceState;

typedef struct SubsectionDesc {
    const char *name;       /* full name, QEMU style: "serial/fifo" */
    uint32_t version;       /* it loads 1..version, saves version */
    const FieldDesc *fields;    /* terminated by a NULL name */
    /* NULL: always needed.  Must not depend on what tick() changes. */
    bool (*needed)(const DeviceState *d);
} SubsectionDesc;

typedef enum PropKind {
    PROP_BOOL,              /* on|off (also yes/no, true/false) */
    PROP_UINT,              /* decimal or 0x hex, within [min, max] */
    PROP_MAC,               /* xx:xx:xx:xx:xx:xx */
} PropKind;

typedef struct PropDesc {
    const char *name;
    const char *def;        /* default value as text */
    PropKind kind;
    uint64_t min, max;      /* PROP_UINT only */
} PropDesc;

typedef struct DeviceType {
    const char *name;       /* --device NAME */
    const char *vmsd_name;  /* idstr in streams, e.g. "timer" */
    const char *desc;       /* one line for --device help */
    uint32_t version;       /* newest state version */
    uint32_t min_version;   /* oldest state version it loads */
    const FieldDesc *fields;        /* NULL-name terminated */
    const SubsectionDesc *subs;     /* NULL-name terminated, may be NULL */
    const PropDesc *props;          /* NULL-name terminated, may be NULL */
    bool user_creatable;    /* false for machine-owned (timer, globalstate) */
    /* Set initial field values from properties; may be NULL. */
    void (*realize)(DeviceState *d);
    /*
     * The guest workload touches the device (@n grows every call).  It
     * only changes fields every release can send, so that a migration at
     * any negotiated version keeps the digest; may be NULL.
     */
    void (*tick)(DeviceState *d, uint64_t n);
    /*
     * Validate freshly loaded state before it replaces the current one
     * (@d holds the candidate values); false and *errp to refuse the
     * load.  May be NULL.
     */
    bool (*post_load)(const DeviceState *d, char **errp);
} DeviceType;

struct DeviceState {
    const DeviceType *type;
    char *id;               /* the stream id: vmsd_name or a user id */
    uint32_t instance;
    /*
     * What this build can do with the type (from --release); device_new
     * allows the type's whole range.
     */
    uint32_t save_min;      /* oldest version it offers to save */
    uint32_t save_max;      /* newest version it saves */
    uint32_t load_min;      /* oldest version it loads */
    uint32_t load_max;      /* newest version it loads */
    const char *const *known_subs;  /* NULL: all of the type's */
    /*
     * Field values: one slot per field, subsection fields after them.
     * Each slot holds the field's wire bytes (big-endian integers), so
     * the whole buffer is the canonical encoding.
     */
    uint8_t *values;
    size_t values_len;
    char **prop_values;     /* parallel to type->props */
};

/* ---- catalog ---- */

/* All device types, NULL-terminated. */
const DeviceType *const *device_catalog(void);
const DeviceType *device_type_find(const char *name);
/* Print "--device help" text. */
void device_catalog_print(FILE *out);

/*
 * globalstate: the run state name QEMU carries (size = strlen + 1, the
 * NUL-terminated name in a 100-byte buffer).  Longer names are cut.
 */
void globalstate_set(DeviceState *d, const char *runstate);
const char *globalstate_get(const DeviceState *d);

/* ---- instances ---- */

/*
 * Create a device of @type from "key=value,..." options (may be NULL;
 * "id" names it in the stream, default the vmsd_name).  @instance is the
 * instance number.  On error returns NULL and sets *errp (caller frees).
 */
DeviceState *device_new(const DeviceType *type, const char *opts,
                        uint32_t instance, char **errp);
void device_free(DeviceState *d);
bool device_sub_known(const DeviceState *d, const SubsectionDesc *s);
/* @s's .needed condition now (true when it has none). */
bool device_sub_needed(const DeviceState *d, const SubsectionDesc *s);
/* The guest workload step: type->tick if it has one. */
void device_tick(DeviceState *d, uint64_t n);

/*
 * Typed access to fields by name (main or subsection fields; names are
 * unique within a type).  A name the type lacks, or the wrong kind of
 * field, is a programming error and aborts.  device_set truncates @v to
 * the field's width; I64 fields travel as two's complement.
 */
uint64_t device_get(const DeviceState *d, const char *field);
void device_set(DeviceState *d, const char *field, uint64_t v);
uint8_t *device_buffer(DeviceState *d, const char *field);
const uint8_t *device_buffer_ro(const DeviceState *d, const char *field);
/* Property text (normalised: bools "on"/"off"); NULL if no such prop. */
const char *device_prop(const DeviceState *d, const char *name);
/* Parsed property values; abort if @name is not a prop of that kind. */
bool device_prop_bool(const DeviceState *d, const char *name);
uint64_t device_prop_uint(const DeviceState *d, const char *name);
void device_prop_mac(const DeviceState *d, const char *name, uint8_t mac[6]);

/* Set *@errp (when @errp is non-NULL and *@errp NULL) to a new message. */
void device_error_setg(char **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- encodings ---- */

/*
 * v4 DEVICE body at @version: the fields that exist at @version, then
 * u8 count and, per subsection that is needed and not in @omit (NULL-
 * terminated names), str8 name, be32 length, fields.
 */
void device_save(const DeviceState *d, uint32_t version,
                 const char *const *omit, Mig2Writer *w);
/*
 * Load a v4 body; false and *errp on any mismatch (state unchanged):
 * @version outside [load_min, load_max], truncation, trailing bytes,
 * unknown, unknown-to-this-build, repeated or wrongly sized
 * subsections.  Fields newer than @version keep their values.
 */
bool device_load(DeviceState *d, uint32_t version, const uint8_t *p,
                 size_t len, char **errp);

/*
 * QEMU vmstate encoding at @version: the fields, then per needed
 * subsection known to this build 0x05, u8 len, name, be32 version,
 * fields.
 */
void device_save_vmstate(const DeviceState *d, uint32_t version,
                         Mig2Writer *w);
/*
 * Load QEMU vmstate from @rd (which covers the rest of the stream: the
 * format has no length, subsections are recognised by their 0x05 byte).
 * On success @rd is advanced past the device's data; the loop stops, as
 * QEMU's does, at a byte that does not start one of this device's
 * subsections.  Returns false with a QEMU-like *errp message (state and
 * @rd unchanged).
 */
bool device_load_vmstate(DeviceState *d, uint32_t version, Mig2Reader *rd,
                         char **errp);

/*
 * vmdesc JSON entry, as QEMU writes it: "name", "instance_id",
 * "vmsd_name", "version", "fields" [{"name", "type", "size"}] and, when
 * some are sent, "subsections" [{"vmsd_name", "version", "fields"}].
 */
json_object *device_vmdesc(const DeviceState *d, uint32_t version);

/*
 * Canonical bytes for hashing: all fields at the newest version, then
 * every subsection's fields, whether needed or not.
 */
void device_canonical(const DeviceState *d, Mig2Writer *w);

/* ---- releases (--release) ---- */

typedef struct ReleaseDevice {
    const char *type;
    uint32_t save_min;
    uint32_t save_max;
    uint32_t load_min;
    uint32_t load_max;
    /* Known subsections (full names); NULL: all of the type's. */
    const char *const *subs;
} ReleaseDevice;

typedef struct Release {
    const char *name;           /* "1.0", "2.0" */
    const char *desc;
    uint16_t rev_min, rev_max;  /* protocol revisions */
    const ReleaseDevice *devices;   /* NULL-type terminated */
} Release;

/* All releases, newest last, NULL-terminated; the newest is the default. */
const Release *const *release_table(void);
const Release *release_find(const char *name);
const Release *release_current(void);
void release_print(FILE *out);
/*
 * Apply @r's limits to @d.  False and *errp (@d unchanged) when the
 * release lacks the type, or lacks a subsection @d needs now (e.g.
 * serial,fifo=on under a release without "serial/fifo").
 */
bool release_apply(const Release *r, DeviceState *d, char **errp);

/* ---- machines ---- */

typedef struct MachineDesc {
    const char *name;
    const char *desc;
    const char *ram_block;      /* NULL: no RAM block (machine "none") */
    const char *const *default_devices;    /* "--device" strings */
} MachineDesc;

const MachineDesc *machine_find(const char *name);
const MachineDesc *const *machine_table(void);
const MachineDesc *machine_default(void);
/* Print "--machine help" text. */
void machine_print(FILE *out);

#endif /* MIG2_VM_DEVICE_H */
