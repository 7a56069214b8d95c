/*
 * mig2-analyze - print the structure of a migration stream file
 *
 * Usage:
 *   mig2-analyze [OPTIONS] FILE
 *
 * FILE is a QEVM stream: a legacy v3 stream as QEMU (or mig2-vm) writes
 * it to a file, or a v4 stream (protocol v2): a one-way v4 file (MANIFEST
 * to DIGEST, both checked) or the capture of what a source sent on its
 * main channel.  The whole structure is printed, with the file offset of
 * everything.  docs/mig2-analyze.md has the details.
 *
 * Options:
 *   --json           machine-readable output (keys: docs/mig2-analyze.md)
 *   --dump-ram DIR   write each RAM block's contents to DIR/<block name>
 *   --vmdesc         print only the vmdesc JSON (v3), pretty
 *   -h, --help       this text
 *
 * Exit status:
 *   0  the stream is well formed
 *   1  the stream is malformed or truncated (the message names the offset)
 *   2  usage error
 *   3  the file cannot be read, or a --dump-ram file cannot be written
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mig2/wire.h"

#include "analyze.h"

enum {
    EXIT_MALFORMED = 1,
    EXIT_USAGE = 2,
    EXIT_IO = 3,
};

static const char usage_text[] =
    "Usage: mig2-analyze [OPTIONS] FILE\n"
    "Print the structure of a migration stream (QEVM v3 or v4).\n"
    "\n"
    "  --json           machine-readable output\n"
    "  --dump-ram DIR   write each RAM block's contents to DIR/<block name>\n"
    "  --vmdesc         print only the vmdesc JSON (v3 streams), pretty\n"
    "  -h, --help       this text\n"
    "\n"
    "Exit status: 0 well formed, 1 malformed or truncated, 2 usage,\n"
    "3 the file cannot be read or a dump file cannot be written.\n";

/* ---------------------------------------------------------------- */
/* Errors and bounded reads                                          */
/* ---------------------------------------------------------------- */

static char *vstrf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));

static char *vstrf(const char *fmt, va_list ap)
{
    char *s = NULL;

    if (vasprintf(&s, fmt, ap) < 0) {
        return NULL;
    }
    return s;
}

bool az_fail(Az *az, size_t off, const char *fmt, ...)
{
    va_list ap;

    if (az->failed || az->io_failed) {
        return false;
    }
    va_start(ap, fmt);
    az->err_msg = vstrf(fmt, ap);
    va_end(ap);
    az->err_off = off;
    az->failed = true;
    return false;
}

bool az_io_fail(Az *az, const char *fmt, ...)
{
    va_list ap;

    if (az->failed || az->io_failed) {
        return false;
    }
    fprintf(stderr, "mig2-analyze: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    az->io_failed = true;
    return false;
}

bool az_need(Az *az, size_t pos, uint64_t n, const char *what)
{
    size_t left = pos <= az->size ? az->size - pos : 0;

    if (n <= left) {
        return true;
    }
    if (left == 0) {
        return az_fail(az, pos, "unexpected end of file, expected %s", what);
    }
    return az_fail(az, pos, "unexpected end of file, expected %s "
                   "(%" PRIu64 " bytes, %zu left)", what, n, left);
}

uint32_t az_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

bool az_u8(Az *az, size_t *pos, uint8_t *v, const char *what)
{
    if (!az_need(az, *pos, 1, what)) {
        return false;
    }
    *v = az->base[*pos];
    *pos += 1;
    return true;
}

bool az_u16(Az *az, size_t *pos, uint16_t *v, const char *what)
{
    if (!az_need(az, *pos, 2, what)) {
        return false;
    }
    *v = (uint16_t)(az->base[*pos] << 8 | az->base[*pos + 1]);
    *pos += 2;
    return true;
}

bool az_u32(Az *az, size_t *pos, uint32_t *v, const char *what)
{
    if (!az_need(az, *pos, 4, what)) {
        return false;
    }
    *v = az_be32(az->base + *pos);
    *pos += 4;
    return true;
}

bool az_u64(Az *az, size_t *pos, uint64_t *v, const char *what)
{
    if (!az_need(az, *pos, 8, what)) {
        return false;
    }
    *v = (uint64_t)az_be32(az->base + *pos) << 32 |
         az_be32(az->base + *pos + 4);
    *pos += 8;
    return true;
}

char *az_printable(const void *p, size_t n)
{
    const uint8_t *b = p;
    char *s = malloc(4 * n + 1), *o = s;
    size_t i;

    if (!s) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\') {
            *o++ = (char)b[i];
        } else {
            o += sprintf(o, "\\x%02x", b[i]);
        }
    }
    *o = '\0';
    return s;
}

char *az_hex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    size_t i;

    if (!s) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        sprintf(s + 2 * i, "%02x", p[i]);
    }
    s[2 * n] = '\0';
    return s;
}

/* Drop what lies behind the walk in steps of this many bytes. */
#define RELEASE_STEP (64u << 20)

void az_release(Az *az, size_t pos)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t to = pos / page * page;

    if (to > az->released && to - az->released >= RELEASE_STEP) {
        madvise((void *)(az->base + az->released), to - az->released,
                MADV_DONTNEED);
        az->released = to;
    }
}

/* ---------------------------------------------------------------- */
/* JSON helpers                                                      */
/* ---------------------------------------------------------------- */

void az_jint(json_object *o, const char *key, int64_t v)
{
    json_object_object_add(o, key, json_object_new_int64(v));
}

void az_juint(json_object *o, const char *key, uint64_t v)
{
    json_object_object_add(o, key, json_object_new_uint64(v));
}

void az_jstr(json_object *o, const char *key, const char *s)
{
    json_object_object_add(o, key, s ? json_object_new_string(s) : NULL);
}

void az_jbool(json_object *o, const char *key, bool v)
{
    json_object_object_add(o, key, json_object_new_boolean(v));
}

json_object *az_jarray(json_object *o, const char *key)
{
    json_object *a = json_object_new_array();

    json_object_object_add(o, key, a);
    return a;
}

json_object *az_jobject(json_object *o, const char *key)
{
    json_object *a = json_object_new_object();

    json_object_object_add(o, key, a);
    return a;
}

/* ---------------------------------------------------------------- */
/* RAM blocks and --dump-ram                                         */
/* ---------------------------------------------------------------- */

/* mkdir -p for the directories of @path (relative to @dirfd). */
static bool make_parents(int dirfd, char *path)
{
    char *slash;

    for (slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdirat(dirfd, path, 0755) < 0 && errno != EEXIST) {
            *slash = '/';
            return false;
        }
        *slash = '/';
    }
    return true;
}

/*
 * The dump file name of a block: its name with a leading '/' dropped and
 * every "", "." or ".." path component made harmless, so no name can
 * leave the dump directory.
 */
static char *dump_name(const char *name)
{
    size_t n = strlen(name);
    char *out = malloc(2 * n + 2), *o = out;
    const char *p = name;

    if (!out) {
        return NULL;
    }
    while (*p == '/') {
        p++;
    }
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        if (len == 0) {
            p++;
            continue;
        }
        if ((len == 1 && p[0] == '.') || (len == 2 && !strncmp(p, "..", 2))) {
            *o++ = '_';
        }
        memcpy(o, p, len);
        o += len;
        p += len;
        if (*p == '/' && p[1]) {
            *o++ = '/';
        }
    }
    if (o == out) {
        *o++ = '_';
    }
    *o = '\0';
    return out;
}

static int dump_open(Az *az, const char *name, uint64_t size)
{
    int dirfd, fd = -1;
    char *rel;

    if (mkdir(az->dump_dir, 0755) < 0 && errno != EEXIST) {
        az_io_fail(az, "cannot create %s: %s", az->dump_dir, strerror(errno));
        return -1;
    }
    dirfd = open(az->dump_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        az_io_fail(az, "cannot open %s: %s", az->dump_dir, strerror(errno));
        return -1;
    }
    rel = dump_name(name);
    if (!rel || !make_parents(dirfd, rel) ||
        (fd = openat(dirfd, rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
                                     O_NOFOLLOW, 0644)) < 0 ||
        ftruncate(fd, (off_t)size) < 0) {
        az_io_fail(az, "cannot create %s/%s (%" PRIu64 " bytes): %s",
                   az->dump_dir, rel ? rel : name, size, strerror(errno));
        if (fd >= 0) {
            close(fd);
            fd = -1;
        }
    }
    free(rel);
    close(dirfd);
    return fd;
}

int az_block_find(const Az *az, const char *name, size_t len)
{
    char *s = az_printable(name, len);
    size_t i;
    int found = -1;

    for (i = 0; s && i < az->n_blocks; i++) {
        if (strcmp(az->blocks[i].name, s) == 0) {
            found = (int)i;
            break;
        }
    }
    free(s);
    return found;
}

int az_block_add(Az *az, size_t off, const char *name, size_t len,
                 uint64_t size, uint32_t page_size)
{
    int i = az_block_find(az, name, len);
    AzBlock *b;

    if (i >= 0) {
        if (az->blocks[i].size != size) {
            az_fail(az, off, "RAM block \"%s\" announced again with size "
                    "%" PRIu64 " (was %" PRIu64 ")", az->blocks[i].name,
                    size, az->blocks[i].size);
            return -1;
        }
        return i;
    }
    if (az->n_blocks == az->cap_blocks) {
        size_t cap = az->cap_blocks ? 2 * az->cap_blocks : 8;
        AzBlock *nb = realloc(az->blocks, cap * sizeof(*nb));

        if (!nb) {
            az_io_fail(az, "out of memory");
            return -1;
        }
        az->blocks = nb;
        az->cap_blocks = cap;
    }
    b = &az->blocks[az->n_blocks];
    memset(b, 0, sizeof(*b));
    b->fd = -1;
    b->name = az_printable(name, len);
    b->size = size;
    b->page_size = page_size;
    if (!b->name) {
        az_io_fail(az, "out of memory");
        return -1;
    }
    az->n_blocks++;
    if (az->dump_dir) {
        b->fd = dump_open(az, b->name, size);
        if (b->fd < 0) {
            return -1;
        }
    }
    return (int)(az->n_blocks - 1);
}

static bool dump_write(Az *az, AzBlock *b, const void *p, size_t n,
                       uint64_t at)
{
    const uint8_t *q = p;

    while (n) {
        ssize_t w = pwrite(b->fd, q, n, (off_t)at);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return az_io_fail(az, "cannot write %s/%s: %s", az->dump_dir,
                              b->name, w < 0 ? strerror(errno) : "no space");
        }
        q += w;
        n -= (size_t)w;
        at += (uint64_t)w;
    }
    return true;
}

bool az_page(Az *az, int bi, uint64_t addr, const uint8_t *data,
             uint8_t fill)
{
    AzBlock *b = &az->blocks[bi];

    if (data) {
        b->normal++;
    } else {
        b->zero++;
    }
    if (b->fd < 0) {
        return true;
    }
    if (data) {
        return dump_write(az, b, data, b->page_size, addr);
    }
    /* A later copy wins: zero what an earlier page may have written. */
    if (fill == 0 && fallocate(b->fd, FALLOC_FL_PUNCH_HOLE |
                                          FALLOC_FL_KEEP_SIZE,
                               (off_t)addr, (off_t)b->page_size) == 0) {
        return true;
    }
    {
        uint8_t *page = malloc(b->page_size);
        bool ok;

        if (!page) {
            return az_io_fail(az, "out of memory");
        }
        memset(page, fill, b->page_size);
        ok = dump_write(az, b, page, b->page_size, addr);
        free(page);
        return ok;
    }
}

void az_page_other(Az *az, int bi)
{
    az->blocks[bi].other++;
    if (az->dump_dir && !az->warned_undumped++) {
        fprintf(stderr, "mig2-analyze: warning: compressed or XBZRLE pages "
                "are not decoded; --dump-ram leaves them as they were\n");
    }
}

json_object *az_ram_summary(const Az *az)
{
    json_object *ram = json_object_new_object(), *blocks;
    uint64_t normal = 0, zero = 0, other = 0;
    size_t i;

    if (az->ram_page_size) {
        az_juint(ram, "page_size", az->ram_page_size);
    }
    if (az->ram_flags) {
        json_object_object_add(ram, "flags_seen",
                               json_object_get(az->ram_flags));
    }
    blocks = az_jarray(ram, "blocks");
    for (i = 0; i < az->n_blocks; i++) {
        const AzBlock *b = &az->blocks[i];
        json_object *o = json_object_new_object();

        az_jstr(o, "name", b->name);
        az_juint(o, "size", b->size);
        az_juint(o, "page_size", b->page_size);
        az_juint(o, "normal_pages", b->normal);
        az_juint(o, "zero_pages", b->zero);
        az_juint(o, "other_pages", b->other);
        json_object_array_add(blocks, o);
        normal += b->normal;
        zero += b->zero;
        other += b->other;
    }
    az_juint(ram, "normal_pages", normal);
    az_juint(ram, "zero_pages", zero);
    az_juint(ram, "other_pages", other);
    return ram;
}

/* ---------------------------------------------------------------- */
/* Text output, rendered from the tree                               */
/* ---------------------------------------------------------------- */

static json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;

    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static uint64_t juint(json_object *o, const char *key)
{
    json_object *v = jget(o, key);

    return v ? json_object_get_uint64(v) : 0;
}

/* The string under @key, "" when there is none. */
static const char *jstr(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    const char *s = v ? json_object_get_string(v) : NULL;

    return s ? s : "";
}

static bool jhas(json_object *o, const char *key)
{
    return jget(o, key) != NULL;
}

/*
 * "key value, key value" for every key of @o not in @skip: strings
 * quoted, arrays and objects as compact JSON.
 */
static void print_fields(json_object *o, const char *const *skip)
{
    bool first = true;

    json_object_object_foreach(o, key, val) {
        const char *const *s;
        bool skipped = false;

        for (s = skip; s && *s; s++) {
            if (strcmp(*s, key) == 0) {
                skipped = true;
            }
        }
        if (skipped) {
            continue;
        }
        printf("%s%s ", first ? "" : ", ", key);
        first = false;
        if (json_object_is_type(val, json_type_string)) {
            printf("\"%s\"", json_object_get_string(val));
        } else {
            printf("%s", json_object_to_json_string_ext(
                             val, JSON_C_TO_STRING_PLAIN |
                                      JSON_C_TO_STRING_NOSLASHESCAPE));
        }
    }
}

static void print_ram_summary(json_object *ram)
{
    json_object *blocks = jget(ram, "blocks"), *flags = jget(ram, "flags_seen");
    size_t i;

    if (!ram) {
        return;
    }
    printf("RAM");
    if (jhas(ram, "page_size")) {
        printf(", page size %" PRIu64, juint(ram, "page_size"));
    }
    if (flags) {
        printf(", flags seen:");
        for (i = 0; i < json_object_array_length(flags); i++) {
            printf(" %s", json_object_get_string(
                              json_object_array_get_idx(flags, i)));
        }
    }
    printf("\n  %-28s %14s %12s %12s %8s\n", "block", "size", "normal",
           "zero", "other");
    for (i = 0; blocks && i < json_object_array_length(blocks); i++) {
        json_object *b = json_object_array_get_idx(blocks, i);

        printf("  %-28s %14" PRIu64 " %12" PRIu64 " %12" PRIu64 " %8" PRIu64
               "\n", jstr(b, "name"), juint(b, "size"),
               juint(b, "normal_pages"), juint(b, "zero_pages"),
               juint(b, "other_pages"));
    }
    printf("  %-28s %14s %12" PRIu64 " %12" PRIu64 " %8" PRIu64 "\n",
           "total pages", "", juint(ram, "normal_pages"),
           juint(ram, "zero_pages"), juint(ram, "other_pages"));
}

static void print_v3_section(json_object *s)
{
    const char *type = jstr(s, "type");
    json_object *subs = jget(s, "subsections"), *ram = jget(s, "ram");
    size_t i;

    printf("0x%08" PRIx64 "  ", juint(s, "offset"));
    if (strcmp(type, "COMMAND") == 0) {
        static const char *const skip[] = {
            "offset", "type", "command", "command_id", "length", NULL,
        };

        printf("COMMAND %s (%" PRIu64 "), %" PRIu64 " bytes",
               jstr(s, "command"), juint(s, "command_id"),
               juint(s, "length"));
        if (json_object_object_length(s) > 5) {
            printf(": ");
            print_fields(s, skip);
        }
        printf("\n");
        return;
    }
    printf("%-5s id %-3" PRIu64 " \"%s\"", type, juint(s, "section_id"),
           jstr(s, "idstr"));
    if (jhas(s, "version_id")) {
        printf(" instance %" PRIu64 " version %" PRIu64,
               juint(s, "instance_id"), juint(s, "version_id"));
    }
    printf(": %" PRIu64 " bytes (size from %s)", juint(s, "size"),
           jstr(s, "size_from"));
    if (jhas(s, "footer_offset")) {
        printf(", footer at 0x%08" PRIx64, juint(s, "footer_offset"));
    }
    printf("\n");
    for (i = 0; subs && i < json_object_array_length(subs); i++) {
        json_object *sub = json_object_array_get_idx(subs, i);

        printf("0x%08" PRIx64 "    subsection \"%s\" version %" PRIu64
               ": %" PRIu64 " bytes\n", juint(sub, "offset"),
               jstr(sub, "name"), juint(sub, "version"), juint(sub, "size"));
    }
    if (ram) {
        json_object *blocks = jget(ram, "blocks");

        if (jhas(ram, "mem_size")) {
            printf("              MEM_SIZE %" PRIu64 ":",
                   juint(ram, "mem_size"));
            for (i = 0; blocks && i < json_object_array_length(blocks); i++) {
                json_object *b = json_object_array_get_idx(blocks, i);

                printf("%s \"%s\" %" PRIu64, i ? "," : "", jstr(b, "name"),
                       juint(b, "size"));
            }
            printf("%s\n", blocks && json_object_array_length(blocks)
                               ? "" : " no blocks");
        }
        printf("              pages: %" PRIu64 " normal, %" PRIu64 " zero",
               juint(ram, "normal_pages"), juint(ram, "zero_pages"));
        if (juint(ram, "other_pages")) {
            printf(", %" PRIu64 " other", juint(ram, "other_pages"));
        }
        printf("\n");
    }
}

static void print_v3(json_object *root)
{
    json_object *cfg = jget(root, "configuration");
    json_object *secs = jget(root, "sections");
    json_object *eof = jget(root, "eof"), *vmdesc = jget(root, "vmdesc");
    size_t i;

    if (cfg) {
        json_object *subs = jget(cfg, "subsections");

        printf("0x%08" PRIx64 "  CONFIGURATION machine \"%s\": %" PRIu64
               " bytes\n", juint(cfg, "offset"), jstr(cfg, "machine"),
               juint(cfg, "size"));
        for (i = 0; subs && i < json_object_array_length(subs); i++) {
            static const char *const skip[] = {
                "offset", "name", "version", "size", NULL,
            };
            json_object *sub = json_object_array_get_idx(subs, i);

            printf("0x%08" PRIx64 "    subsection \"%s\" version %" PRIu64
                   ": %" PRIu64 " bytes: ", juint(sub, "offset"),
                   jstr(sub, "name"), juint(sub, "version"),
                   juint(sub, "size"));
            print_fields(sub, skip);
            printf("\n");
        }
    }
    for (i = 0; secs && i < json_object_array_length(secs); i++) {
        print_v3_section(json_object_array_get_idx(secs, i));
    }
    if (eof) {
        printf("0x%08" PRIx64 "  EOF\n", juint(eof, "offset"));
    }
    if (vmdesc) {
        printf("0x%08" PRIx64 "  VMDESC %" PRIu64 " bytes of JSON: %" PRIu64
               " devices, page size %" PRIu64 "\n", juint(vmdesc, "offset"),
               juint(vmdesc, "length"), juint(vmdesc, "devices"),
               juint(vmdesc, "page_size"));
    }
}

/* MANIFEST: what the stream states, one topic a line. */
static void print_manifest(json_object *f)
{
    json_object *list;
    size_t i, j;

    printf("              revision %" PRIu64 " (the writer implements %"
           PRIu64 "..%" PRIu64 "), build \"%s\"\n", juint(f, "revision"),
           juint(jget(f, "revisions"), "min"),
           juint(jget(f, "revisions"), "max"), jstr(f, "build"));
    printf("              stream id %s\n", jstr(f, "stream_id"));
    printf("              machine \"%s\", page size %" PRIu64 "\n",
           jstr(f, "machine"), juint(f, "page_size"));
    list = jget(f, "features");
    printf("              features:");
    for (i = 0; list && i < json_object_array_length(list); i++) {
        json_object *ft = json_object_array_get_idx(list, i);

        printf("%s %s (%" PRIu64 ")%s", i ? "," : "", jstr(ft, "name"),
               juint(ft, "id"),
               json_object_get_boolean(jget(ft, "required"))
                   ? " required" : "");
    }
    printf("%s\n", list && json_object_array_length(list) ? "" : " none");
    list = jget(f, "ram_blocks");
    for (i = 0; list && i < json_object_array_length(list); i++) {
        json_object *b = json_object_array_get_idx(list, i);

        printf("              RAM block \"%s\": size %" PRIu64 ", page size %"
               PRIu64 "\n", jstr(b, "name"), juint(b, "size"),
               juint(b, "page_size"));
    }
    list = jget(f, "devices");
    for (i = 0; list && i < json_object_array_length(list); i++) {
        json_object *d = json_object_array_get_idx(list, i);
        json_object *subs = jget(d, "subsections");

        printf("              device \"%s\" instance %" PRIu64 " version %"
               PRIu64, jstr(d, "id"), juint(d, "instance"),
               juint(d, "version"));
        for (j = 0; subs && j < json_object_array_length(subs); j++) {
            json_object *sub = json_object_array_get_idx(subs, j);

            printf("%s \"%s\"%s", j ? "," : ", subsections",
                   jstr(sub, "name"),
                   json_object_get_boolean(jget(sub, "needed"))
                       ? " (needed)" : "");
        }
        printf("\n");
    }
    list = jget(f, "config");
    for (i = 0; list && i < json_object_array_length(list); i++) {
        json_object *c = json_object_array_get_idx(list, i);

        printf("              config \"%s\" = %s (%s%s)\n", jstr(c, "item"),
               json_object_to_json_string_ext(jget(c, "value"),
                                              JSON_C_TO_STRING_PLAIN),
               jstr(c, "value_type"),
               json_object_get_boolean(jget(c, "required"))
                   ? ", required" : "");
    }
}

static void print_v4(json_object *root)
{
    static const char *const frame_skip[] = {
        "offset", "type", "name", "flags", "critical", "length", "tlvs",
        "grease", NULL,
    };
    static const char *const tlv_skip[] = {
        "type", "name", "critical", "length", "grease", NULL,
    };
    json_object *frames = jget(root, "frames");
    size_t i, j;

    for (i = 0; frames && i < json_object_array_length(frames); i++) {
        json_object *f = json_object_array_get_idx(frames, i);
        json_object *tlvs = jget(f, "tlvs");
        const char *name = jstr(f, "name");

        printf("0x%08" PRIx64 "  ", juint(f, "offset"));
        if (!*name) {
            printf("unknown 0x%04" PRIx64 ", %" PRIu64 " bytes%s%s\n",
                   juint(f, "type"), juint(f, "length"),
                   jget(f, "grease") && json_object_get_boolean(
                                            jget(f, "grease"))
                       ? " (grease)" : "",
                   json_object_get_boolean(jget(f, "critical"))
                       ? " (critical)" : "");
            continue;
        }
        printf("%s (0x%04" PRIx64 "), flags 0x%04" PRIx64 "%s, %" PRIu64
               " bytes", name, juint(f, "type"), juint(f, "flags"),
               json_object_get_boolean(jget(f, "critical")) ? " CRITICAL"
                                                            : "",
               juint(f, "length"));
        if (strcmp(name, "MANIFEST") == 0 && jhas(f, "revision")) {
            printf("\n");
            print_manifest(f);
            continue;
        }
        if (strcmp(name, "DIGEST") == 0 && jhas(f, "digest_ok")) {
            printf(": %s, SHA-256 of bytes 0 to %" PRIu64 " %s %s\n",
                   json_object_get_boolean(jget(f, "digest_ok"))
                       ? "digest ok" : "digest MISMATCH",
                   juint(f, "covered"),
                   json_object_get_boolean(jget(f, "digest_ok"))
                       ? "is" : "is not", jstr(f, "digest"));
            continue;
        }
        if (json_object_object_length(f) > 6 + (tlvs != NULL)) {
            printf(": ");
            print_fields(f, frame_skip);
        }
        printf("\n");
        for (j = 0; tlvs && j < json_object_array_length(tlvs); j++) {
            json_object *t = json_object_array_get_idx(tlvs, j);
            const char *tn = jstr(t, "name");

            printf("              ");
            if (!*tn) {
                printf("unknown TLV 0x%04" PRIx64 ", %" PRIu64 " bytes%s\n",
                       juint(t, "type"), juint(t, "length"),
                       json_object_get_boolean(jget(t, "grease"))
                           ? " (grease)" : "");
                continue;
            }
            printf("%s (0x%04" PRIx64 "): ", tn, juint(t, "type"));
            print_fields(t, tlv_skip);
            printf("\n");
        }
    }
}

static void print_text(json_object *root)
{
    const char *stream = jstr(root, "stream");

    printf("%s: %" PRIu64 " bytes\n", jstr(root, "file"),
           juint(root, "file_size"));
    if (!jhas(root, "magic")) {
        return;
    }
    printf("0x%08x  header: magic 0x%08" PRIx64 " (QEVM), version %" PRIu64
           "%s\n", 0, juint(root, "magic"), juint(root, "version"),
           strcmp(stream, "v4") != 0 ? ""
           : json_object_get_boolean(jget(root, "oneway"))
               ? " (protocol v2, one-way stream)" : " (protocol v2)");
    if (strcmp(stream, "v3") == 0) {
        print_v3(root);
    } else if (strcmp(stream, "v4") == 0) {
        print_v4(root);
    }
    print_ram_summary(jget(root, "ram"));
}

/* ---------------------------------------------------------------- */
/* main                                                              */
/* ---------------------------------------------------------------- */

static int map_file(Az *az)
{
    struct stat st;
    int fd = open(az->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        fprintf(stderr, "mig2-analyze: cannot open %s: %s\n", az->path,
                strerror(errno));
        return EXIT_IO;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "mig2-analyze: %s: not a regular file\n", az->path);
        close(fd);
        return EXIT_IO;
    }
    az->size = (size_t)st.st_size;
    if (az->size) {
        void *p = mmap(NULL, az->size, PROT_READ, MAP_PRIVATE, fd, 0);

        if (p == MAP_FAILED) {
            fprintf(stderr, "mig2-analyze: cannot map %s: %s\n", az->path,
                    strerror(errno));
            close(fd);
            return EXIT_IO;
        }
        /* One sequential pass: let the kernel read ahead and drop behind. */
        madvise(p, az->size, MADV_SEQUENTIAL);
        az->base = p;
    }
    close(fd);
    return 0;
}

static void parse(Az *az)
{
    size_t pos = 0;
    uint32_t magic, version;

    az->root = json_object_new_object();
    az_jstr(az->root, "file", az->path);
    az_juint(az->root, "file_size", az->size);
    if (!az_u32(az, &pos, &magic, "the stream magic 0x5145564d (QEVM)")) {
        return;
    }
    if (magic != MIG2_MAGIC) {
        az_fail(az, 0, "not a migration stream: magic 0x%08x, expected "
                "0x5145564d (QEVM)", magic);
        return;
    }
    if (!az_u32(az, &pos, &version, "the stream version")) {
        return;
    }
    az_juint(az->root, "magic", magic);
    az_juint(az->root, "version", version);
    if (version == MIG2_STREAM_V3) {
        az_jstr(az->root, "stream", "v3");
        az_parse_v3(az);
    } else if (version == MIG2_STREAM_V4) {
        az_jstr(az->root, "stream", "v4");
        az_parse_v4(az);
    } else {
        az_fail(az, 4, "unsupported stream version %u, expected 3 or 4",
                version);
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },
        { "dump-ram", required_argument, NULL, 'd' },
        { "vmdesc", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    Az az = { 0 };
    bool json = false, vmdesc_only = false;
    int c, rc;
    size_t i;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'd':
            az.dump_dir = optarg;
            break;
        case 'v':
            vmdesc_only = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs(usage_text, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || (json && vmdesc_only) || !*argv[optind]) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    az.path = argv[optind];
    rc = map_file(&az);
    if (rc) {
        return rc;
    }

    parse(&az);
    if (jhas(az.root, "stream")) {
        json_object_object_add(az.root, "ram", az_ram_summary(&az));
    }
    for (i = 0; i < az.n_blocks; i++) {
        if (az.blocks[i].fd >= 0 && close(az.blocks[i].fd) < 0) {
            az_io_fail(&az, "cannot write %s/%s: %s", az.dump_dir,
                       az.blocks[i].name, strerror(errno));
        }
    }
    if (az.failed) {
        json_object *e = az_jobject(az.root, "error");

        az_juint(e, "offset", az.err_off);
        az_jstr(e, "message", az.err_msg ? az.err_msg : "out of memory");
    }

    if (vmdesc_only) {
        json_object *js = jget(jget(az.root, "vmdesc"), "json");

        if (js) {
            printf("%s\n", json_object_to_json_string_ext(
                               js, JSON_C_TO_STRING_PRETTY |
                                       JSON_C_TO_STRING_SPACED |
                                       JSON_C_TO_STRING_NOSLASHESCAPE));
        } else if (!az.failed && !az.io_failed) {
            az_fail(&az, az.size, "no vmdesc in this stream");
        }
    } else if (json) {
        printf("%s\n", json_object_to_json_string_ext(
                           az.root, JSON_C_TO_STRING_PRETTY |
                                        JSON_C_TO_STRING_SPACED |
                                        JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (!az.io_failed) {
        print_text(az.root);
    }
    fflush(stdout);
    if (az.failed) {
        fprintf(stderr, "mig2-analyze: offset %zu: %s\n", az.err_off,
                az.err_msg ? az.err_msg : "out of memory");
    }

    for (i = 0; i < az.n_blocks; i++) {
        free(az.blocks[i].name);
    }
    free(az.blocks);
    free(az.err_msg);
    json_object_put(az.ram_flags);
    json_object_put(az.root);
    if (az.base) {
        munmap((void *)az.base, az.size);
    }
    if (az.io_failed) {
        return EXIT_IO;
    }
    return az.failed ? EXIT_MALFORMED : 0;
}
