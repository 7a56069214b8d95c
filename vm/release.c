/*
 * mig2-vm - releases (--release) and machines (--machine)
 *
 * A release is what an older (or the current) build of mig2-vm could do:
 * its protocol revisions and, per device type, the state versions it
 * saves and loads and the subsections it knows.  --release R makes this
 * build behave like R, so tests can migrate between "builds" with one
 * binary.  The story the table tells:
 *
 *  1.0  revision 1 only.  serial without a FIFO subsection, cpu without
 *       apic_id (v3), rtc without base_rtc (v3), virtio-net v1 without
 *       RSS, virtio-blk v1 without in-flight requests; no e1000.
 *  1.1  revision 2.  serial v3 and FIFO, rtc v3 (and it stops saving v1),
 *       virtio-net v2, virtio-blk v2 with in-flight requests; cpu still
 *       at v2; still no RSS and no e1000.
 *  2.0  everything newest; stops saving serial v1, rtc v2 and cpu v1;
 *       adds e1000.
 *
 * So 2.0 -> 1.1 works with cpu at v2, 2.0 -> 1.0 fails on rtc (2.0 saves
 * only v3, 1.0 loads up to v2) and on any needed FIFO, RSS or in-flight
 * subsection, and every older source works into 2.0.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <string.h>

#include "device.h"

static const char *const no_subs[] = { NULL };
static const char *const subs_serial_1_0[] = { "serial/timeout", NULL };

/* NULL subs: all of the type's subsections. */
static const ReleaseDevice devices_1_0[] = {
    { "timer", 2, 2, 1, 2, NULL },
    { "globalstate", 1, 1, 1, 1, NULL },
    { "serial", 1, 2, 1, 2, subs_serial_1_0 },
    { "rtc", 1, 2, 1, 2, NULL },
    { "cpu", 1, 2, 1, 2, NULL },
    { "virtio-net", 1, 1, 1, 1, no_subs },
    { "virtio-blk", 1, 1, 1, 1, no_subs },
    { .type = NULL },
};

static const ReleaseDevice devices_1_1[] = {
    { "timer", 2, 2, 1, 2, NULL },
    { "globalstate", 1, 1, 1, 1, NULL },
    { "serial", 1, 3, 1, 3, NULL },
    { "rtc", 2, 3, 1, 3, NULL },
    { "cpu", 1, 2, 1, 2, NULL },
    { "virtio-net", 1, 2, 1, 2, no_subs },
    { "virtio-blk", 1, 2, 1, 2, NULL },
    { .type = NULL },
};

static const ReleaseDevice devices_2_0[] = {
    { "timer", 2, 2, 1, 2, NULL },
    { "globalstate", 1, 1, 1, 1, NULL },
    { "serial", 2, 3, 1, 3, NULL },
    { "rtc", 3, 3, 1, 3, NULL },
    { "cpu", 2, 3, 1, 3, NULL },
    { "virtio-net", 1, 2, 1, 2, NULL },
    { "virtio-blk", 1, 2, 1, 2, NULL },
    { "e1000", 1, 2, 1, 2, NULL },
    { .type = NULL },
};

static const Release release_1_0 = {
    .name = "1.0",
    .desc = "first release: protocol revision 1, oldest device versions",
    .rev_min = 1,
    .rev_max = 1,
    .devices = devices_1_0,
};

static const Release release_1_1 = {
    .name = "1.1",
    .desc = "revision 2; serial FIFO, rtc v3, in-flight virtio-blk",
    .rev_min = 1,
    .rev_max = 2,
    .devices = devices_1_1,
};

static const Release release_2_0 = {
    .name = "2.0",
    .desc = "current: every device at its newest version, e1000",
    .rev_min = 1,
    .rev_max = 2,
    .devices = devices_2_0,
};

static const Release *const releases[] = {
    &release_1_0,
    &release_1_1,
    &release_2_0,
    NULL,
};

const Release *const *release_table(void)
{
    return releases;
}

const Release *release_find(const char *name)
{
    for (const Release *const *r = releases; *r; r++) {
        if (strcmp((*r)->name, name) == 0) {
            return *r;
        }
    }
    return NULL;
}

const Release *release_current(void)
{
    return releases[sizeof(releases) / sizeof(releases[0]) - 2];
}

static const ReleaseDevice *release_device(const Release *r,
                                           const char *type)
{
    for (const ReleaseDevice *rd = r->devices; rd->type; rd++) {
        if (strcmp(rd->type, type) == 0) {
            return rd;
        }
    }
    return NULL;
}

static bool list_has(const char *const *list, const char *name)
{
    if (!list) {
        return true;
    }
    for (; *list; list++) {
        if (strcmp(*list, name) == 0) {
            return true;
        }
    }
    return false;
}

bool release_apply(const Release *r, DeviceState *d, char **errp)
{
    const DeviceType *t = d->type;
    const ReleaseDevice *rd = release_device(r, t->name);

    if (!rd) {
        device_error_setg(errp, "Device '%s' does not exist in release %s",
                          t->name, r->name);
        return false;
    }
    /* an older build could not hold state it has no subsection for */
    for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
        if (!list_has(rd->subs, s->name) && device_sub_needed(d, s)) {
            device_error_setg(errp, "Device '%s' needs subsection '%s', "
                              "which release %s does not have", d->id,
                              s->name, r->name);
            return false;
        }
    }
    d->save_min = rd->save_min;
    d->save_max = rd->save_max;
    d->load_min = rd->load_min;
    d->load_max = rd->load_max;
    d->known_subs = rd->subs;
    return true;
}

static void print_subs(const DeviceType *t, const char *const *subs,
                       FILE *out)
{
    bool any = false;

    for (const SubsectionDesc *s = t ? t->subs : NULL; s && s->name; s++) {
        if (list_has(subs, s->name)) {
            fprintf(out, "%s%s", any ? ", " : "  subsections: ", s->name);
            any = true;
        }
    }
    if (!any && t && t->subs && t->subs[0].name) {
        fprintf(out, "  subsections: none");
    }
    fputc('\n', out);
}

void release_print(FILE *out)
{
    fprintf(out, "Releases (--release NAME; the default is %s):\n",
            release_current()->name);
    for (const Release *const *rp = releases; *rp; rp++) {
        const Release *r = *rp;

        fprintf(out, "  %s  protocol revisions %u..%u  %s\n", r->name,
                (unsigned)r->rev_min, (unsigned)r->rev_max, r->desc);
        for (const ReleaseDevice *rd = r->devices; rd->type; rd++) {
            fprintf(out, "      %-12s save %" PRIu32 "..%" PRIu32 "  load %"
                    PRIu32 "..%" PRIu32, rd->type, rd->save_min,
                    rd->save_max, rd->load_min, rd->load_max);
            print_subs(device_type_find(rd->type), rd->subs, out);
        }
    }
}

/* ---- machines ---- */

static const char *const devices_none[] = { "timer", "globalstate", NULL };

/* Machine-owned first, as QEMU registers them; --nodefaults keeps those. */
static const char *const devices_pc[] = {
    "timer", "globalstate", "cpu", "serial", "rtc", "virtio-net",
    "virtio-blk", NULL,
};

static const MachineDesc machine_none = {
    .name = "none",
    .desc = "empty machine, as QEMU 7.2's -M none (no RAM block)",
    .ram_block = NULL,
    .default_devices = devices_none,
};

static const MachineDesc machine_pc = {
    .name = "mig2-pc",
    .desc = "reference PC: pc.ram and a default device set",
    .ram_block = "pc.ram",
    .default_devices = devices_pc,
};

static const MachineDesc machine_q35 = {
    .name = "mig2-q35",
    .desc = "the same devices under another machine name",
    .ram_block = "pc.ram",
    .default_devices = devices_pc,
};

static const MachineDesc *const machines[] = {
    &machine_pc,
    &machine_q35,
    &machine_none,
    NULL,
};

const MachineDesc *const *machine_table(void)
{
    return machines;
}

const MachineDesc *machine_find(const char *name)
{
    for (const MachineDesc *const *m = machines; *m; m++) {
        if (strcmp((*m)->name, name) == 0) {
            return *m;
        }
    }
    return NULL;
}

const MachineDesc *machine_default(void)
{
    return &machine_pc;
}

void machine_print(FILE *out)
{
    fprintf(out, "Machines (--machine NAME):\n");
    for (const MachineDesc *const *mp = machines; *mp; mp++) {
        const MachineDesc *m = *mp;

        fprintf(out, "  %-10s %s%s\n", m->name, m->desc,
                m == machine_default() ? " (default)" : "");
        fprintf(out, "             RAM block: %s; devices:",
                m->ram_block ? m->ram_block : "none");
        for (const char *const *d = m->default_devices; *d; d++) {
            fprintf(out, " %s", *d);
        }
        fputc('\n', out);
    }
}
