/*
 * mig2-analyze - the legacy QEVM v3 stream (QEMU's format)
 *
 * Constants are QEMU's (migration/savevm.c, migration/ram.c; see
 * ../shared/reference/qemu-migration-today.md section B).  RAM sections
 * delimit themselves (EOS).  Any other section is an opaque blob to a
 * generic parser: its end is found from the vmdesc JSON QEMU writes after
 * EOF, which lists every field of every device section with the number of
 * bytes it took ("size", times "array_len"), and its subsections in
 * stream order.  Without a vmdesc entry, the section ends at the first
 * "0x7e <section id>" footer followed by a section type or the end of the
 * file.  docs/mig2-analyze.md explains both.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig2/wire.h"

#include "analyze.h"


/* Only the end of a file is searched for the vmdesc (QEMU's is ~100 KB). */
#define VMDESC_SEARCH (64u << 20)
#define VMDESC_TRIES 4
/* Deepest subsection nesting followed in a vmdesc. */
#define MAX_DEPTH 16
/* XBZRLE encoding flag and compressed page bound (zlib's for 4 KiB). */
#define XBZRLE_FLAG 0x01

typedef struct V3Sec {
    uint32_t id;
    char *idstr;            /* printable */
    bool ram;
} V3Sec;

typedef struct V3 {
    Az *az;
    json_object *sections;
    json_object *vmdesc;        /* located at the end of the file, or NULL */
    json_object *index;         /* "instance/name" -> vmdesc device */
    size_t vmdesc_off;
    uint32_t page_size;
    int footers;                /* -1: not known yet, 0: off, 1: on */
    bool ignore_shared;
    V3Sec *secs;
    size_t n_secs, cap_secs;
    int last_block;
    uint32_t flags_seen;
} V3;

static const char *const ram_flag_names[] = {
    [1] = "ZERO", [2] = "MEM_SIZE", [3] = "PAGE", [4] = "EOS",
    [5] = "CONTINUE", [6] = "XBZRLE", [7] = "HOOK", [8] = "COMPRESS_PAGE",
    [9] = "MULTIFD_FLUSH",
};

/* ---------------------------------------------------------------- */
/* vmdesc                                                            */
/* ---------------------------------------------------------------- */

static json_object *parse_json(const uint8_t *p, size_t len)
{
    json_tokener *tok = json_tokener_new_ex(128);
    json_object *o;

    if (!tok || len > INT32_MAX) {
        json_tokener_free(tok);
        return NULL;
    }
    o = json_tokener_parse_ex(tok, (const char *)p, (int)len);
    if (o && (json_tokener_get_error(tok) != json_tokener_success ||
              tok->char_offset != (int)len ||
              !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/*
 * The vmdesc is the last thing in the file: 0x06, be32 length, then that
 * much JSON up to the end.  Find it before walking, so device sections can
 * be sized; the walk checks it really sits right after EOF.
 */
static void locate_vmdesc(V3 *v)
{
    Az *az = v->az;
    size_t lo, p;
    unsigned tries = 0;

    if (az->size < 8 + 6) {
        return;
    }
    lo = az->size > VMDESC_SEARCH ? az->size - VMDESC_SEARCH : 8;
    for (p = az->size - 6; p >= lo; p--) {
        if (az->base[p] == MIG2_V3_SEC_VMDESC && az->base[p + 5] == '{' &&
            az_be32(az->base + p + 1) == az->size - p - 5) {
            /*
             * JSON holds no raw 0x06, so the real vmdesc is the last
             * candidate; a few tries bound the work on crafted files.
             */
            if (++tries > VMDESC_TRIES) {
                return;
            }
            v->vmdesc = parse_json(az->base + p + 5, az->size - p - 5);
            if (v->vmdesc) {
                v->vmdesc_off = p;
                return;
            }
        }
        if (p == lo) {
            break;
        }
    }
}

static char *index_key(const char *name, size_t len, uint32_t instance)
{
    char *key = NULL;

    if (asprintf(&key, "%" PRIu32 "/%.*s", instance, (int)len, name) < 0) {
        return NULL;
    }
    return key;
}

/* Index the vmdesc devices by instance and name; check page_size. */
static bool index_vmdesc(V3 *v)
{
    json_object *devs = NULL, *ps = NULL;
    size_t i;

    if (!v->vmdesc) {
        return true;
    }
    if (json_object_object_get_ex(v->vmdesc, "page_size", &ps)) {
        int64_t n = json_object_get_int64(ps);

        if (n < 1024 || n > (1 << 30) || (n & (n - 1))) {
            return az_fail(v->az, v->vmdesc_off, "vmdesc page_size %" PRId64
                           " is not a power of two from 1024 to 2^30", n);
        }
        v->page_size = (uint32_t)n;
    }
    v->index = json_object_new_object();
    if (!json_object_object_get_ex(v->vmdesc, "devices", &devs) ||
        !json_object_is_type(devs, json_type_array)) {
        return true;
    }
    for (i = 0; i < json_object_array_length(devs); i++) {
        json_object *d = json_object_array_get_idx(devs, i), *n, *inst;
        char *key;

        if (!json_object_object_get_ex(d, "name", &n) ||
            !json_object_object_get_ex(d, "instance_id", &inst)) {
            continue;
        }
        key = index_key(json_object_get_string(n),
                        strlen(json_object_get_string(n)),
                        (uint32_t)json_object_get_int64(inst));
        if (key && !json_object_object_get_ex(v->index, key, NULL)) {
            json_object_object_add(v->index, key, json_object_get(d));
        }
        free(key);
    }
    return true;
}

static json_object *vmdesc_device(V3 *v, const char *name, size_t len,
                                  uint32_t instance)
{
    json_object *d = NULL;
    char *key;

    if (!v->index) {
        return NULL;
    }
    key = index_key(name, len, instance);
    if (key) {
        json_object_object_get_ex(v->index, key, &d);
    }
    free(key);
    return d;
}

static void free_userdata(json_object *o, void *userdata)
{
    (void)o;
    free(userdata);
}

/*
 * Walk one vmdesc description (a device or a subsection) at *@pos: its
 * fields take the sum of their sizes, then each listed subsection follows
 * as 0x05, name, be32 version and its own description.  Top-level
 * subsections are added to @out when it is not NULL.
 */
static bool walk_desc(V3 *v, json_object *desc, size_t *pos, int depth,
                      json_object *out)
{
    Az *az = v->az;
    json_object *fields = NULL, *subs = NULL;
    const char *who = "?";
    json_object *nm;
    uint64_t total = 0, *cached;
    size_t i;

    if (json_object_object_get_ex(desc, "vmsd_name", &nm) ||
        json_object_object_get_ex(desc, "name", &nm)) {
        who = json_object_get_string(nm);
    }
    if (depth > MAX_DEPTH) {
        return az_fail(az, *pos, "vmdesc of \"%s\" nests subsections more "
                       "than %d deep", who, MAX_DEPTH);
    }
    if (!json_object_object_get_ex(desc, "fields", &fields) ||
        !json_object_is_type(fields, json_type_array)) {
        return az_fail(az, *pos, "the vmdesc entry of \"%s\" has no fields "
                       "list", who);
    }
    cached = json_object_get_userdata(fields);
    if (cached) {
        total = *cached;
    } else {
        for (i = 0; i < json_object_array_length(fields); i++) {
            json_object *f = json_object_array_get_idx(fields, i), *sz, *al;
            int64_t size, n = 1;

            if (!json_object_object_get_ex(f, "size", &sz) ||
                (size = json_object_get_int64(sz)) < 0) {
                return az_fail(az, *pos, "the vmdesc entry of \"%s\" has a "
                               "field without a valid size", who);
            }
            if (json_object_object_get_ex(f, "array_len", &al) &&
                (n = json_object_get_int64(al)) < 0) {
                return az_fail(az, *pos, "the vmdesc entry of \"%s\" has a "
                               "negative array_len", who);
            }
            /* Both are below 2^63: saturate rather than wrap. */
            if (n && (uint64_t)size > (UINT64_MAX - total) / (uint64_t)n) {
                total = UINT64_MAX;
            } else {
                total += (uint64_t)size * (uint64_t)n;
            }
        }
        /* A device may have many sections: sum its fields once. */
        cached = malloc(sizeof(*cached));
        if (cached) {
            *cached = total;
            json_object_set_userdata(fields, cached, free_userdata);
        }
    }
    if (total > az->size - *pos) {
        return az_fail(az, *pos, "unexpected end of file, expected the "
                       "fields of \"%s\" (%" PRIu64 " bytes as the vmdesc "
                       "sizes them, %zu left)", who, total, az->size - *pos);
    }
    *pos += total;
    if (!json_object_object_get_ex(desc, "subsections", &subs)) {
        return true;
    }
    for (i = 0; i < json_object_array_length(subs); i++) {
        json_object *sd = json_object_array_get_idx(subs, i), *sv;
        const char *want = "?";
        size_t at = *pos;
        uint8_t marker, len;
        uint32_t version;
        char *name;

        if (json_object_object_get_ex(sd, "vmsd_name", &sv)) {
            want = json_object_get_string(sv);
        }
        if (!az_u8(az, pos, &marker, "a subsection marker 0x05")) {
            return false;
        }
        if (marker != MIG2_V3_SEC_SUBSECTION) {
            return az_fail(az, at, "expected subsection marker 0x05 for "
                           "\"%s\", got 0x%02x", want, marker);
        }
        if (!az_u8(az, pos, &len, "the subsection name length") ||
            !az_need(az, *pos, len, "the subsection name")) {
            return false;
        }
        if (len != strlen(want) || memcmp(az->base + *pos, want, len) != 0) {
            name = az_printable(az->base + *pos, len);
            az_fail(az, *pos, "expected subsection \"%s\", got \"%s\"", want,
                    name ? name : "?");
            free(name);
            return false;
        }
        *pos += len;
        if (!az_u32(az, pos, &version, "the subsection version")) {
            return false;
        }
        if (!walk_desc(v, sd, pos, depth + 1, NULL)) {
            return false;
        }
        if (out) {
            json_object *o = json_object_new_object();

            az_juint(o, "offset", at);
            az_jstr(o, "name", want);
            az_juint(o, "version", version);
            az_juint(o, "size", *pos - at);
            json_object_array_add(out, o);
        }
    }
    return true;
}

/*
 * Without a vmdesc entry: the data ends at the first footer for @id that
 * is followed by a section type byte or the end of the file.
 */
static bool footer_scan(V3 *v, size_t from, uint32_t id, size_t *end)
{
    const uint8_t *b = v->az->base;
    size_t size = v->az->size, p = from;

    while (p + 5 <= size) {
        const uint8_t *hit = memchr(b + p, MIG2_V3_SEC_FOOTER, size - 4 - p);

        if (!hit) {
            break;
        }
        p = (size_t)(hit - b);
        if (az_be32(b + p + 1) == id &&
            (p + 5 == size || b[p + 5] == MIG2_V3_SEC_EOF ||
             (b[p + 5] >= MIG2_V3_SEC_START && b[p + 5] <= MIG2_V3_SEC_FULL) ||
             b[p + 5] == MIG2_V3_SEC_COMMAND)) {
            *end = p;
            return true;
        }
        p++;
    }
    return false;
}

/* ---------------------------------------------------------------- */
/* RAM                                                               */
/* ---------------------------------------------------------------- */

static bool ram_mem_size(V3 *v, size_t *pos, uint64_t total,
                         json_object *ram)
{
    Az *az = v->az;
    json_object *blocks = az_jarray(ram, "blocks");
    uint64_t seen = 0;

    az_juint(ram, "mem_size", total);
    while (seen < total) {
        size_t at = *pos;
        uint8_t len;
        uint64_t used, addr;
        const char *name;
        json_object *o;
        int b;

        if (!az_u8(az, pos, &len, "a RAM block name length") ||
            !az_need(az, *pos, len, "a RAM block name")) {
            return false;
        }
        name = (const char *)az->base + *pos;
        *pos += len;
        if (!az_u64(az, pos, &used, "a RAM block's used length")) {
            return false;
        }
        if (v->ignore_shared && !az_u64(az, pos, &addr, "a RAM block's "
                                        "address (x-ignore-shared)")) {
            return false;
        }
        if (used > total - seen) {
            return az_fail(az, at, "RAM block sizes add up to more than the "
                           "MEM_SIZE total %" PRIu64, total);
        }
        seen += used;
        b = az_block_add(az, at, name, len, used, v->page_size);
        if (b < 0) {
            return false;
        }
        o = json_object_new_object();
        az_jstr(o, "name", az->blocks[b].name);
        az_juint(o, "size", used);
        json_object_array_add(blocks, o);
    }
    return true;
}

/* The block a page record names (its idstr, or CONTINUE). */
static int ram_block(V3 *v, size_t *pos, uint32_t flags)
{
    Az *az = v->az;
    size_t at = *pos;
    uint8_t len;
    int b;

    if (flags & MIG2_V3_RAM_CONTINUE) {
        if (v->last_block < 0) {
            az_fail(az, at - 8, "RAM page with CONTINUE before any block");
        }
        return v->last_block;
    }
    if (!az_u8(az, pos, &len, "a RAM block name length") ||
        !az_need(az, *pos, len, "a RAM block name")) {
        return -1;
    }
    b = az_block_find(az, (const char *)az->base + *pos, len);
    if (b < 0) {
        char *name = az_printable(az->base + *pos, len);

        az_fail(az, at, "unknown RAM block \"%s\" (not in a MEM_SIZE record)",
                name ? name : "?");
        free(name);
        return -1;
    }
    *pos += len;
    v->last_block = b;
    return b;
}

/* One RAM section's records up to and including EOS. */
static bool ram_section(V3 *v, size_t *pos, json_object *sec)
{
    Az *az = v->az;
    json_object *ram = az_jobject(sec, "ram");
    uint64_t normal = 0, zero = 0, other = 0;
    uint64_t mask = v->page_size - 1;

    for (;;) {
        size_t at = *pos;
        uint64_t rec, addr;
        uint32_t flags, kind;
        uint8_t fill, xflag;
        uint16_t xlen;
        uint32_t clen;
        int b = -1;
        unsigned bit;

        az_release(az, at);
        if (!az_u64(az, pos, &rec, "a RAM record (be64 offset | flags)")) {
            return false;
        }
        flags = (uint32_t)(rec & mask);
        addr = rec & ~mask;
        for (bit = 0; bit < 10; bit++) {
            if (flags & (1u << bit) & 0x3feu) {
                v->flags_seen |= 1u << bit;
            }
        }
        kind = flags & ~(uint32_t)MIG2_V3_RAM_CONTINUE;
        if ((flags & MIG2_V3_RAM_CONTINUE) &&
            kind != MIG2_V3_RAM_ZERO && kind != MIG2_V3_RAM_PAGE && kind != MIG2_V3_RAM_XBZRLE &&
            kind != MIG2_V3_RAM_COMPRESS_PAGE) {
            return az_fail(az, at, "RAM flags 0x%x: CONTINUE on a record "
                           "without a page", flags);
        }
        if (kind == MIG2_V3_RAM_ZERO || kind == MIG2_V3_RAM_PAGE || kind == MIG2_V3_RAM_XBZRLE ||
            kind == MIG2_V3_RAM_COMPRESS_PAGE) {
            b = ram_block(v, pos, flags);
            if (b < 0) {
                return false;
            }
            if (addr >= az->blocks[b].size ||
                az->blocks[b].size - addr < v->page_size) {
                return az_fail(az, at, "RAM page at 0x%" PRIx64 " is outside "
                               "block \"%s\" (%" PRIu64 " bytes)", addr,
                               az->blocks[b].name, az->blocks[b].size);
            }
        }
        switch (kind) {
        case MIG2_V3_RAM_MEM_SIZE:
            if (!ram_mem_size(v, pos, addr, ram)) {
                return false;
            }
            break;
        case MIG2_V3_RAM_ZERO:
            if (!az_u8(az, pos, &fill, "the fill byte of a zero page") ||
                !az_page(az, b, addr, NULL, fill)) {
                return false;
            }
            zero++;
            break;
        case MIG2_V3_RAM_PAGE:
            if (!az_need(az, *pos, v->page_size, "the data of a RAM page") ||
                !az_page(az, b, addr, az->base + *pos, 0)) {
                return false;
            }
            *pos += v->page_size;
            normal++;
            break;
        case MIG2_V3_RAM_XBZRLE:
            if (!az_u8(az, pos, &xflag, "the XBZRLE encoding flag") ||
                !az_u16(az, pos, &xlen, "the XBZRLE data length")) {
                return false;
            }
            if (xflag != XBZRLE_FLAG || xlen > v->page_size) {
                return az_fail(az, at, "bad XBZRLE page header (flag 0x%02x, "
                               "length %u)", xflag, xlen);
            }
            if (!az_need(az, *pos, xlen, "XBZRLE data")) {
                return false;
            }
            *pos += xlen;
            az_page_other(az, b);
            other++;
            break;
        case MIG2_V3_RAM_COMPRESS_PAGE:
            if (!az_u32(az, pos, &clen, "the compressed page length") ||
                !az_need(az, *pos, clen, "compressed page data")) {
                return false;
            }
            *pos += clen;
            az_page_other(az, b);
            other++;
            break;
        case MIG2_V3_RAM_EOS:
            az_juint(ram, "normal_pages", normal);
            az_juint(ram, "zero_pages", zero);
            az_juint(ram, "other_pages", other);
            return true;
        case MIG2_V3_RAM_MULTIFD_FLUSH:
            break;
        case MIG2_V3_RAM_HOOK:
            return az_fail(az, at, "RAM_SAVE_FLAG_HOOK (RDMA) records cannot "
                           "be parsed from a file");
        default:
            return az_fail(az, at, "unknown RAM flag combination 0x%x", flags);
        }
    }
}

/* ---------------------------------------------------------------- */
/* Configuration, commands, sections                                 */
/* ---------------------------------------------------------------- */

static bool config_subsection(V3 *v, size_t *pos, json_object *subs)
{
    Az *az = v->az;
    json_object *o = json_object_new_object();
    size_t at = *pos;
    uint8_t marker, len;
    uint32_t version, n, i;
    const char *name;
    char *pname;

    json_object_array_add(subs, o);
    if (!az_u8(az, pos, &marker, "a subsection") ||
        !az_u8(az, pos, &len, "the subsection name length") ||
        !az_need(az, *pos, len, "the subsection name")) {
        return false;
    }
    name = (const char *)az->base + *pos;
    pname = az_printable(name, len);
    *pos += len;
    az_juint(o, "offset", at);
    az_jstr(o, "name", pname);
    if (!az_u32(az, pos, &version, "the subsection version")) {
        free(pname);
        return false;
    }
    az_juint(o, "version", version);
    if (len == 30 && !memcmp(name, "configuration/target-page-bits", 30)) {
        if (!az_u32(az, pos, &n, "target-page-bits")) {
            goto fail;
        }
        az_juint(o, "target_page_bits", n);
    } else if (len == 26 && !memcmp(name, "configuration/capabilities", 26)) {
        json_object *caps;

        if (!az_u32(az, pos, &n, "the capability count")) {
            goto fail;
        }
        caps = az_jarray(o, "capabilities");
        for (i = 0; i < n; i++) {
            uint8_t cl;
            char *cap;

            if (!az_u8(az, pos, &cl, "a capability name length") ||
                !az_need(az, *pos, cl, "a capability name")) {
                goto fail;
            }
            cap = az_printable(az->base + *pos, cl);
            if (cl == 15 && !memcmp(az->base + *pos, "x-ignore-shared", 15)) {
                v->ignore_shared = true;
            }
            *pos += cl;
            json_object_array_add(caps, json_object_new_string(cap ? cap
                                                                   : "?"));
            free(cap);
        }
    } else if (len == 18 && !memcmp(name, "configuration/uuid", 18)) {
        char *hex;

        if (!az_need(az, *pos, 16, "the 16-byte UUID")) {
            goto fail;
        }
        hex = az_hex(az->base + *pos, 16);
        az_jstr(o, "uuid", hex);
        free(hex);
        *pos += 16;
    } else {
        az_fail(az, at, "unknown configuration subsection \"%s\" (its size "
                "is unknown)", pname);
        goto fail;
    }
    az_juint(o, "size", *pos - at);
    free(pname);
    return true;

fail:
    free(pname);
    return false;
}

static bool configuration(V3 *v, size_t *pos)
{
    Az *az = v->az;
    json_object *cfg = az_jobject(az->root, "configuration"), *subs;
    size_t at = *pos;
    uint32_t len;
    char *machine;

    *pos += 1;
    az_juint(cfg, "offset", at);
    if (!az_u32(az, pos, &len, "the machine name length") ||
        !az_need(az, *pos, len, "the machine name")) {
        return false;
    }
    machine = az_printable(az->base + *pos, len);
    az_jstr(cfg, "machine", machine);
    free(machine);
    *pos += len;
    subs = az_jarray(cfg, "subsections");
    /* Subsections follow while the next byte is 0x05, never a section. */
    while (*pos < az->size && az->base[*pos] == MIG2_V3_SEC_SUBSECTION) {
        if (!config_subsection(v, pos, subs)) {
            return false;
        }
    }
    az_juint(cfg, "size", *pos - at);
    return true;
}

static const struct {
    const char *name;
    int len;                /* -1: variable */
} commands[] = {
    [1] = { "OPEN_RETURN_PATH", 0 },
    [2] = { "PING", 4 },
    [3] = { "POSTCOPY_ADVISE", -1 },
    [4] = { "POSTCOPY_LISTEN", 0 },
    [5] = { "POSTCOPY_RUN", 0 },
    [6] = { "POSTCOPY_RAM_DISCARD", -1 },
    [7] = { "PACKAGED", 4 },
    [8] = { "ENABLE_COLO", 0 },
    [9] = { "POSTCOPY_RESUME", 0 },
    [10] = { "RECV_BITMAP", -1 },
    [11] = { "SWITCHOVER_START", 0 },
};

static bool command(V3 *v, size_t *pos)
{
    Az *az = v->az;
    json_object *o = json_object_new_object();
    size_t at = *pos, data;
    uint16_t cmd, len;
    const char *name = NULL;

    json_object_array_add(v->sections, o);
    *pos += 1;
    az_juint(o, "offset", at);
    az_jstr(o, "type", "COMMAND");
    if (!az_u16(az, pos, &cmd, "a command number") ||
        !az_u16(az, pos, &len, "a command length") ||
        !az_need(az, *pos, len, "the command's data")) {
        return false;
    }
    if (cmd < sizeof(commands) / sizeof(commands[0])) {
        name = commands[cmd].name;
    }
    az_jstr(o, "command", name ? name : "UNKNOWN");
    az_juint(o, "command_id", cmd);
    az_juint(o, "length", len);
    if (name && commands[cmd].len >= 0 && len != commands[cmd].len) {
        return az_fail(az, at, "command %s with %u bytes of data, expected "
                       "%d", name, len, commands[cmd].len);
    }
    data = *pos;
    *pos += len;
    switch (cmd) {
    case 2:
        az_juint(o, "value", az_be32(az->base + data));
        break;
    case 3:
        if (len != 0 && len != 16) {
            return az_fail(az, at, "POSTCOPY_ADVISE with %u bytes of data, "
                           "expected 0 or 16", len);
        }
        if (len == 16) {
            az_juint(o, "pagesize_summary",
                     (uint64_t)az_be32(az->base + data) << 32 |
                         az_be32(az->base + data + 4));
            az_juint(o, "target_page_size",
                     (uint64_t)az_be32(az->base + data + 8) << 32 |
                         az_be32(az->base + data + 12));
        }
        break;
    case 7: {
        uint32_t size = az_be32(az->base + data);

        /* The package (a nested stream) is skipped, not parsed. */
        az_juint(o, "package_size", size);
        if (!az_need(az, *pos, size, "the packaged stream")) {
            return false;
        }
        *pos += size;
        break;
    }
    case 10:
        if (len >= 1 && az->base[data] <= len - 1) {
            char *blk = az_printable(az->base + data + 1, az->base[data]);

            az_jstr(o, "block", blk);
            free(blk);
        }
        break;
    default:
        break;
    }
    return true;
}

static V3Sec *find_sec(V3 *v, uint32_t id)
{
    size_t i;

    for (i = v->n_secs; i-- > 0;) {
        if (v->secs[i].id == id) {
            return &v->secs[i];
        }
    }
    return NULL;
}

static V3Sec *add_sec(V3 *v, uint32_t id, const char *idstr, size_t len)
{
    V3Sec *s;

    if (v->n_secs == v->cap_secs) {
        size_t cap = v->cap_secs ? 2 * v->cap_secs : 32;
        V3Sec *n = realloc(v->secs, cap * sizeof(*n));

        if (!n) {
            return NULL;
        }
        v->secs = n;
        v->cap_secs = cap;
    }
    s = &v->secs[v->n_secs];
    s->idstr = az_printable(idstr, len);
    if (!s->idstr) {
        return NULL;
    }
    s->id = id;
    s->ram = len == 3 && !memcmp(idstr, "ram", 3);
    v->n_secs++;
    return s;
}

static bool section(V3 *v, size_t *pos, uint8_t type)
{
    static const char *const type_names[] = {
        [MIG2_V3_SEC_START] = "START", [MIG2_V3_SEC_PART] = "PART", [MIG2_V3_SEC_END] = "END",
        [MIG2_V3_SEC_FULL] = "FULL",
    };
    Az *az = v->az;
    json_object *o = json_object_new_object();
    size_t at = *pos, data, end;
    uint32_t id, instance = 0, version = 0, fid;
    const char *idstr = NULL;
    uint8_t len = 0, footer;
    json_object *desc = NULL;
    V3Sec *s;

    json_object_array_add(v->sections, o);
    *pos += 1;
    az_juint(o, "offset", at);
    az_jstr(o, "type", type_names[type]);
    if (!az_u32(az, pos, &id, "a section id")) {
        return false;
    }
    az_juint(o, "section_id", id);
    if (type == MIG2_V3_SEC_START || type == MIG2_V3_SEC_FULL) {
        if (!az_u8(az, pos, &len, "the section idstr length") ||
            !az_need(az, *pos, len, "the section idstr")) {
            return false;
        }
        idstr = (const char *)az->base + *pos;
        *pos += len;
        if (!az_u32(az, pos, &instance, "the section instance id") ||
            !az_u32(az, pos, &version, "the section version id")) {
            return false;
        }
        s = add_sec(v, id, idstr, len);
        if (!s) {
            return az_io_fail(az, "out of memory");
        }
        az_jstr(o, "idstr", s->idstr);
        az_juint(o, "instance_id", instance);
        az_juint(o, "version_id", version);
        if (!s->ram) {
            desc = vmdesc_device(v, idstr, len, instance);
        }
    } else {
        s = find_sec(v, id);
        if (!s) {
            return az_fail(az, at + 1, "%s of section id %u, which no START "
                           "opened", type_names[type], id);
        }
        az_jstr(o, "idstr", s->idstr);
    }

    data = *pos;
    az_juint(o, "data_offset", data);
    if (s->ram) {
        if (version != 4 && type == MIG2_V3_SEC_START) {
            return az_fail(az, at, "RAM section version %u, expected 4",
                           version);
        }
        az_jstr(o, "size_from", "ram");
        if (!ram_section(v, pos, o)) {
            return false;
        }
    } else if (desc && type == MIG2_V3_SEC_FULL) {
        json_object *subs = az_jarray(o, "subsections");

        az_jstr(o, "size_from", "vmdesc");
        if (!walk_desc(v, desc, pos, 0, subs)) {
            return false;
        }
    } else {
        az_jstr(o, "size_from", "footer-scan");
        if (v->footers == 0) {
            return az_fail(az, data, "cannot find the end of section \"%s\": "
                           "no vmdesc entry and no section footers",
                           s->idstr);
        }
        if (!footer_scan(v, data, id, &end)) {
            if (v->vmdesc) {
                return az_fail(az, data, "cannot find the end of section "
                               "\"%s\" (id %u): not in the vmdesc, and no "
                               "footer follows", s->idstr, id);
            }
            return az_fail(az, az->size, "unexpected end of file inside "
                           "section \"%s\" (id %u, data from offset %zu): "
                           "no vmdesc to size it and no footer found",
                           s->idstr, id, data);
        }
        *pos = end;
    }
    az_juint(o, "size", *pos - data);

    if (v->footers < 0) {
        v->footers = *pos < az->size && az->base[*pos] == MIG2_V3_SEC_FOOTER;
    }
    if (v->footers) {
        size_t fat = *pos;

        if (!az_u8(az, pos, &footer, "the section footer 0x7e")) {
            return false;
        }
        if (footer != MIG2_V3_SEC_FOOTER) {
            return az_fail(az, fat, "expected section footer 0x7e, got 0x%02x",
                           footer);
        }
        if (!az_u32(az, pos, &fid, "the section id in the footer")) {
            return false;
        }
        if (fid != id) {
            return az_fail(az, fat, "section footer for id %u, expected %u",
                           fid, id);
        }
        az_juint(o, "footer_offset", fat);
    }
    return true;
}

static bool eof_vmdesc(V3 *v, size_t *pos)
{
    Az *az = v->az;
    json_object *o, *js, *devs = NULL, *ps = NULL;
    size_t at;
    uint8_t t;
    uint32_t len;

    o = az_jobject(az->root, "eof");
    az_juint(o, "offset", *pos);
    *pos += 1;
    at = *pos;
    if (!az_u8(az, pos, &t, "the vmdesc (0x06) after EOF")) {
        return false;
    }
    if (t != MIG2_V3_SEC_VMDESC) {
        return az_fail(az, at, "expected the vmdesc 0x06 after EOF, got 0x%02x",
                       t);
    }
    if (!az_u32(az, pos, &len, "the vmdesc length") ||
        !az_need(az, *pos, len, "the vmdesc JSON")) {
        return false;
    }
    if (v->vmdesc && v->vmdesc_off == at) {
        js = json_object_get(v->vmdesc);
    } else {
        js = parse_json(az->base + *pos, len);
    }
    if (!js) {
        return az_fail(az, *pos, "the vmdesc is not a JSON object");
    }
    *pos += len;
    o = az_jobject(az->root, "vmdesc");
    az_juint(o, "offset", at);
    az_juint(o, "length", len);
    json_object_object_get_ex(js, "page_size", &ps);
    az_juint(o, "page_size", ps ? (uint64_t)json_object_get_int64(ps) : 0);
    json_object_object_get_ex(js, "devices", &devs);
    az_juint(o, "devices", devs && json_object_is_type(devs, json_type_array)
                               ? json_object_array_length(devs) : 0);
    json_object_object_add(o, "json", js);
    if (*pos != az->size) {
        return az_fail(az, *pos, "%zu bytes after the vmdesc, expected the "
                       "end of the file", az->size - *pos);
    }
    return true;
}

bool az_parse_v3(Az *az)
{
    V3 v = {
        .az = az,
        .page_size = 4096,
        .footers = -1,
        .last_block = -1,
    };
    json_object *flags;
    size_t pos = 8, i;
    bool ok = true, done = false;
    unsigned bit;

    locate_vmdesc(&v);
    ok = index_vmdesc(&v);
    v.sections = json_object_new_array();
    if (ok && pos < az->size && az->base[pos] == MIG2_V3_SEC_CONFIGURATION) {
        ok = configuration(&v, &pos);
    }
    json_object_object_add(az->root, "sections", v.sections);
    while (ok && !done) {
        uint8_t t;

        if (!az_u8(az, &pos, &t, "a section type (or EOF 0x00)")) {
            ok = false;
            break;
        }
        pos--;
        switch (t) {
        case MIG2_V3_SEC_EOF:
            ok = eof_vmdesc(&v, &pos);
            done = true;
            break;
        case MIG2_V3_SEC_START:
        case MIG2_V3_SEC_PART:
        case MIG2_V3_SEC_END:
        case MIG2_V3_SEC_FULL:
            ok = section(&v, &pos, t);
            break;
        case MIG2_V3_SEC_COMMAND:
            ok = command(&v, &pos);
            break;
        case MIG2_V3_SEC_FOOTER:
            ok = az_fail(az, pos, "section footer 0x7e where a section was "
                         "expected");
            break;
        case MIG2_V3_SEC_CONFIGURATION:
            ok = az_fail(az, pos, "a second CONFIGURATION section");
            break;
        default:
            ok = az_fail(az, pos, "unknown section type 0x%02x", t);
            break;
        }
    }

    /* RAM flags seen, for the summary. */
    flags = json_object_new_array();
    for (bit = 1; bit < 10; bit++) {
        if (v.flags_seen & (1u << bit)) {
            json_object_array_add(flags,
                                  json_object_new_string(ram_flag_names[bit]));
        }
    }
    az->ram_flags = flags;
    az->ram_page_size = v.page_size;

    for (i = 0; i < v.n_secs; i++) {
        free(v.secs[i].idstr);
    }
    free(v.secs);
    json_object_put(v.vmdesc);
    json_object_put(v.index);
    return ok;
}
