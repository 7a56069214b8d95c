/*
 * mig2-vm - the device catalog
 *
 * Every device type as a const table (see device.h).  timer and
 * globalstate are laid out exactly as QEMU 7.2 lays them out for -M none,
 * so a stream of mig2-vm's machine "none" and one of QEMU's carry the
 * same bytes.  The other types are models: enough registers, versions
 * and subsections to exercise negotiation, not emulation.
 *
 * Rules the tables keep (tests/vm/test_device.c checks them):
 *  - field names are unique within a type, subsections included;
 *  - subsection names are "<vmsd_name>/<something>";
 *  - tick() changes only fields that every release can send (so any
 *    negotiated version keeps the digest), and subsection fields only
 *    while the subsection is needed;
 *  - .needed depends on properties or on counters tick() leaves alone,
 *    so what the handshake announced still holds at switchover.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <string.h>

#include "device.h"

/* ---- timer (QEMU's vmstate_timers, softmmu/cpu-timers.c) ---- */

static const FieldDesc timer_fields[] = {
    DEVICE_FIELD_I64("cpu_ticks_offset", 1),
    DEVICE_FIELD_UNUSED(8, 1),          /* was "dummy" before QEMU 2.x */
    DEVICE_FIELD_I64("cpu_clock_offset", 2),
    DEVICE_FIELD_END,
};

static void timer_tick(DeviceState *d, uint64_t n)
{
    /* what cpu_disable_ticks() leaves after n microseconds of guest time */
    device_set(d, "cpu_ticks_offset", n * 2500);
    device_set(d, "cpu_clock_offset", n * 1000);
}

/* ---- globalstate (QEMU's vmstate_globalstate) ---- */

#define GLOBALSTATE_RUNSTATE_SIZE 100

static const FieldDesc globalstate_fields[] = {
    DEVICE_FIELD_U32("size", 1),
    DEVICE_FIELD_BUFFER("runstate", GLOBALSTATE_RUNSTATE_SIZE, 1),
    DEVICE_FIELD_END,
};

void globalstate_set(DeviceState *d, const char *runstate)
{
    uint8_t *buf = device_buffer(d, "runstate");
    size_t n = strlen(runstate);

    if (n > GLOBALSTATE_RUNSTATE_SIZE - 1) {
        n = GLOBALSTATE_RUNSTATE_SIZE - 1;
    }
    memset(buf, 0, GLOBALSTATE_RUNSTATE_SIZE);
    memcpy(buf, runstate, n);
    /* QEMU's pre_save: strlen + 1 */
    device_set(d, "size", n + 1);
}

const char *globalstate_get(const DeviceState *d)
{
    /* NUL-terminated: globalstate_set and post_load see to it */
    return (const char *)device_buffer_ro(d, "runstate");
}

static void globalstate_realize(DeviceState *d)
{
    /*
     * QEMU starts with "" and stores the run state just before saving;
     * a fresh mig2-vm is what -S gives, so it can save without a store.
     */
    globalstate_set(d, "prelaunch");
}

static bool globalstate_post_load(const DeviceState *d, char **errp)
{
    /* QEMU's RunState names (7.2); post_load refuses anything else */
    static const char *const names[] = {
        "debug", "inmigrate", "internal-error", "io-error", "paused",
        "postmigrate", "prelaunch", "finish-migrate", "restore-vm",
        "running", "save-vm", "shutdown", "suspended", "watchdog",
        "guest-panicked", "colo", NULL,
    };
    const char *s = (const char *)device_buffer_ro(d, "runstate");

    if (!memchr(s, '\0', GLOBALSTATE_RUNSTATE_SIZE)) {
        device_error_setg(errp, "globalstate: runstate is not "
                          "NUL-terminated");
        return false;
    }
    for (const char *const *n = names; *n; n++) {
        if (strcmp(*n, s) == 0) {
            return true;
        }
    }
    device_error_setg(errp, "globalstate: invalid runstate '%s'", s);
    return false;
}

/* ---- serial: a 16550A-like UART ---- */

static const FieldDesc serial_fields[] = {
    DEVICE_FIELD_U16("divider", 1),
    DEVICE_FIELD_U8("rbr", 1),
    DEVICE_FIELD_U8("ier", 1),
    DEVICE_FIELD_U8("iir", 1),
    DEVICE_FIELD_U8("lcr", 1),
    DEVICE_FIELD_U8("mcr", 1),
    DEVICE_FIELD_U8("lsr", 1),
    DEVICE_FIELD_U8("msr", 1),
    DEVICE_FIELD_U8("scr", 1),
    DEVICE_FIELD_U8("fcr", 2),
    DEVICE_FIELD_U8("thr_ipending", 3),
    DEVICE_FIELD_U64("char_transmit_time", 3),
    DEVICE_FIELD_END,
};

static const FieldDesc serial_fifo_fields[] = {
    DEVICE_FIELD_BUFFER("recv_fifo", 16, 1),
    DEVICE_FIELD_U8("recv_fifo_count", 1),
    DEVICE_FIELD_END,
};

static const FieldDesc serial_timeout_fields[] = {
    DEVICE_FIELD_U64("timeout_ns", 1),
    DEVICE_FIELD_U8("timeout_ipending", 1),
    DEVICE_FIELD_END,
};

static bool serial_fifo_needed(const DeviceState *d)
{
    return device_prop_bool(d, "fifo");
}

static bool serial_timeout_needed(const DeviceState *d)
{
    /* a receive timeout can be pending only with RX interrupts on */
    return device_get(d, "ier") & 0x01;
}

static const SubsectionDesc serial_subs[] = {
    { "serial/fifo", 1, serial_fifo_fields, serial_fifo_needed },
    { "serial/timeout", 1, serial_timeout_fields, serial_timeout_needed },
    { .name = NULL },
};

static const PropDesc serial_props[] = {
    { "baud", "115200", PROP_UINT, 50, 115200 },
    { "fifo", "off", PROP_BOOL, 0, 0 },
    { .name = NULL },
};

static void serial_realize(DeviceState *d)
{
    uint64_t baud = device_prop_uint(d, "baud");
    bool fifo = device_prop_bool(d, "fifo");

    device_set(d, "divider", 115200 / baud);
    device_set(d, "iir", 0x01);             /* no interrupt pending */
    device_set(d, "lcr", 0x03);             /* 8N1 */
    device_set(d, "lsr", 0x60);             /* THR and TSR empty */
    device_set(d, "msr", 0xb0);             /* DCD, DSR, CTS */
    device_set(d, "fcr", fifo ? 0xc1 : 0);  /* FIFO on, trigger 14 */
    /* 10 bits a character */
    device_set(d, "char_transmit_time", 10 * UINT64_C(1000000000) / baud);
    device_set(d, "timeout_ns", 40 * UINT64_C(1000000000) / baud);
}

static void serial_tick(DeviceState *d, uint64_t n)
{
    device_set(d, "rbr", n);
    device_set(d, "scr", n >> 8);
    device_set(d, "lsr", 0x60 | (n & 1));   /* data ready every other */
    if (serial_fifo_needed(d)) {
        device_buffer(d, "recv_fifo")[n % 16] = (uint8_t)n;
        device_set(d, "recv_fifo_count", n % 16 + 1);
    }
}

/* ---- rtc: an mc146818-like clock with its CMOS ---- */

static const FieldDesc rtc_fields[] = {
    DEVICE_FIELD_BUFFER("cmos_data", 128, 1),
    DEVICE_FIELD_U8("cmos_index", 1),
    DEVICE_FIELD_U32("period", 2),
    DEVICE_FIELD_U64("base_rtc", 3),
    DEVICE_FIELD_U64("last_update", 3),
    DEVICE_FIELD_END,
};

static const FieldDesc rtc_reinject_fields[] = {
    DEVICE_FIELD_U16("irq_reinject_on_ack_count", 1),
    DEVICE_FIELD_END,
};

static bool rtc_reinject_needed(const DeviceState *d)
{
    /* as QEMU's: only while interrupts wait to be re-injected */
    return device_get(d, "irq_reinject_on_ack_count") != 0;
}

static const SubsectionDesc rtc_subs[] = {
    { "rtc/irq_reinject", 1, rtc_reinject_fields, rtc_reinject_needed },
    { .name = NULL },
};

static const PropDesc rtc_props[] = {
    /* seconds since the epoch; fixed so both sides agree */
    { "base", "1700000000", PROP_UINT, 0, UINT32_MAX },
    /* test hook: interrupts waiting at start (never changes after) */
    { "x-reinject", "0", PROP_UINT, 0, UINT16_MAX },
    { .name = NULL },
};

static uint8_t to_bcd(uint64_t v)
{
    return (uint8_t)((v / 10 % 10) << 4 | v % 10);
}

/* The clock registers for @t seconds (BCD, 24h: register B 0x02). */
static void rtc_set_time(DeviceState *d, uint64_t t)
{
    uint8_t *cmos = device_buffer(d, "cmos_data");

    cmos[0x00] = to_bcd(t % 60);
    cmos[0x02] = to_bcd(t / 60 % 60);
    cmos[0x04] = to_bcd(t / 3600 % 24);
    cmos[0x06] = to_bcd((t / 86400 + 4) % 7 + 1);  /* 1970-01-01: Thu */
}

static void rtc_realize(DeviceState *d)
{
    uint8_t *cmos = device_buffer(d, "cmos_data");
    uint64_t base = device_prop_uint(d, "base");

    cmos[0x0a] = 0x26;      /* 32.768 kHz, 1024 Hz rate */
    cmos[0x0b] = 0x02;      /* 24h, BCD */
    cmos[0x0d] = 0x80;      /* CMOS valid */
    rtc_set_time(d, base);
    device_set(d, "period", 32);
    device_set(d, "base_rtc", base);
    device_set(d, "irq_reinject_on_ack_count",
               device_prop_uint(d, "x-reinject"));
}

static void rtc_tick(DeviceState *d, uint64_t n)
{
    rtc_set_time(d, device_prop_uint(d, "base") + n);
    device_set(d, "cmos_index", n & 0x7f);
}

/* ---- cpu: one x86-64-like vCPU ---- */

static const FieldDesc cpu_fields[] = {
    DEVICE_FIELD_BUFFER("regs", 16 * 8, 1),     /* rax..r15, be64 each */
    DEVICE_FIELD_U64("rip", 1),
    DEVICE_FIELD_U64("rflags", 1),
    DEVICE_FIELD_U64("tsc", 2),
    DEVICE_FIELD_U32("apic_id", 3),
    DEVICE_FIELD_END,
};

static const FieldDesc cpu_xsave_fields[] = {
    DEVICE_FIELD_U64("xcr0", 1),
    DEVICE_FIELD_BUFFER("xsave_area", 64, 1),
    DEVICE_FIELD_END,
};

static bool cpu_xsave_needed(const DeviceState *d)
{
    return device_prop_bool(d, "xsave");
}

static const SubsectionDesc cpu_subs[] = {
    { "cpu/xsave", 1, cpu_xsave_fields, cpu_xsave_needed },
    { .name = NULL },
};

static const PropDesc cpu_props[] = {
    { "apic-id", "0", PROP_UINT, 0, 255 },
    { "xsave", "off", PROP_BOOL, 0, 0 },
    { .name = NULL },
};

static void cpu_realize(DeviceState *d)
{
    device_set(d, "rip", 0xfff0);               /* reset vector */
    device_set(d, "rflags", 0x2);
    device_set(d, "apic_id", device_prop_uint(d, "apic-id"));
    device_set(d, "xcr0", cpu_xsave_needed(d) ? 0x7 : 0x1);
}

static void cpu_tick(DeviceState *d, uint64_t n)
{
    uint8_t *regs = device_buffer(d, "regs");

    for (unsigned i = 0; i < 16; i++) {
        uint64_t v = n * UINT64_C(0x9e3779b97f4a7c15) + i;

        for (unsigned b = 0; b < 8; b++) {
            regs[i * 8 + b] = (uint8_t)(v >> (56 - 8 * b));
        }
    }
    device_set(d, "rip", 0x100000 + (n % 4096) * 4);
    device_set(d, "rflags", 0x202 | (n & 1) << 6);  /* IF, ZF on odd */
    device_set(d, "tsc", n * 3000);
    if (cpu_xsave_needed(d)) {
        device_buffer(d, "xsave_area")[n % 64] = (uint8_t)n;
    }
}

/* ---- virtio-net ---- */

#define VIRTIO_F_VERSION_1      (UINT64_C(1) << 32)
#define VIRTIO_NET_F_MAC        (UINT64_C(1) << 5)
#define VIRTIO_NET_F_STATUS     (UINT64_C(1) << 16)
#define VIRTIO_NET_F_RSS        (UINT64_C(1) << 60)

static const FieldDesc virtio_net_fields[] = {
    DEVICE_FIELD_U16("status", 1),
    DEVICE_FIELD_BUFFER("mac", 6, 1),
    DEVICE_FIELD_U8("promisc", 1),
    DEVICE_FIELD_U64("rx_packets", 1),
    DEVICE_FIELD_U64("tx_packets", 1),
    DEVICE_FIELD_U64("features", 2),
    DEVICE_FIELD_END,
};

static const FieldDesc virtio_net_rss_fields[] = {
    DEVICE_FIELD_U32("rss_hash_types", 1),
    DEVICE_FIELD_U16("rss_indirections_len", 1),
    DEVICE_FIELD_BUFFER("rss_key", 40, 1),
    DEVICE_FIELD_END,
};

static bool virtio_net_rss_needed(const DeviceState *d)
{
    return device_prop_bool(d, "rss");
}

static const SubsectionDesc virtio_net_subs[] = {
    { "virtio-net/rss", 1, virtio_net_rss_fields, virtio_net_rss_needed },
    { .name = NULL },
};

static const PropDesc virtio_net_props[] = {
    { "mac", "52:54:00:12:34:56", PROP_MAC, 0, 0 },
    { "rss", "off", PROP_BOOL, 0, 0 },
    { .name = NULL },
};

static void virtio_net_realize(DeviceState *d)
{
    bool rss = virtio_net_rss_needed(d);
    uint8_t *key = device_buffer(d, "rss_key");

    device_prop_mac(d, "mac", device_buffer(d, "mac"));
    device_set(d, "status", 0x0f);  /* ACKNOWLEDGE..DRIVER_OK */
    device_set(d, "promisc", 1);
    device_set(d, "features", VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC |
               VIRTIO_NET_F_STATUS | (rss ? VIRTIO_NET_F_RSS : 0));
    if (rss) {
        device_set(d, "rss_hash_types", 0x1ff);
        device_set(d, "rss_indirections_len", 128);
        for (unsigned i = 0; i < 40; i++) {
            key[i] = (uint8_t)(0x6d + i * 0x5a);
        }
    }
}

static void virtio_net_tick(DeviceState *d, uint64_t n)
{
    device_set(d, "rx_packets", n * 3);
    device_set(d, "tx_packets", n * 2);
}

/* ---- virtio-blk ---- */

#define VIRTIO_BLK_F_SEG_MAX    (UINT64_C(1) << 2)
#define VIRTIO_BLK_F_BLK_SIZE   (UINT64_C(1) << 6)
#define VIRTIO_BLK_F_MQ         (UINT64_C(1) << 12)

static const FieldDesc virtio_blk_fields[] = {
    DEVICE_FIELD_U64("features", 1),
    DEVICE_FIELD_U16("num_queues", 1),
    DEVICE_FIELD_U64("completed", 1),
    DEVICE_FIELD_U32("seg_max", 2),
    DEVICE_FIELD_END,
};

static const FieldDesc virtio_blk_inflight_fields[] = {
    DEVICE_FIELD_U16("inflight_count", 1),
    DEVICE_FIELD_BUFFER("inflight_ids", 32, 1),  /* up to 16 be16 ids */
    DEVICE_FIELD_END,
};

static bool virtio_blk_inflight_needed(const DeviceState *d)
{
    return device_get(d, "inflight_count") != 0;
}

static const SubsectionDesc virtio_blk_subs[] = {
    { "virtio-blk/inflight", 1, virtio_blk_inflight_fields,
      virtio_blk_inflight_needed },
    { .name = NULL },
};

static const PropDesc virtio_blk_props[] = {
    { "num-queues", "1", PROP_UINT, 1, 16 },
    { "seg-max", "126", PROP_UINT, 1, 1024 },
    /* test hook: requests in flight at start (never changes after) */
    { "x-inflight", "0", PROP_UINT, 0, 16 },
    { .name = NULL },
};

static void virtio_blk_realize(DeviceState *d)
{
    uint64_t nq = device_prop_uint(d, "num-queues");
    uint64_t inflight = device_prop_uint(d, "x-inflight");
    uint8_t *ids = device_buffer(d, "inflight_ids");

    device_set(d, "features", VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_SEG_MAX |
               VIRTIO_BLK_F_BLK_SIZE | (nq > 1 ? VIRTIO_BLK_F_MQ : 0));
    device_set(d, "num_queues", nq);
    device_set(d, "seg_max", device_prop_uint(d, "seg-max"));
    device_set(d, "inflight_count", inflight);
    for (unsigned i = 0; i < inflight; i++) {
        ids[2 * i + 1] = (uint8_t)(i * 3);
    }
}

static void virtio_blk_tick(DeviceState *d, uint64_t n)
{
    device_set(d, "completed", n * 7);
}

/* ---- e1000 (only in release 2.0) ---- */

static const FieldDesc e1000_fields[] = {
    DEVICE_FIELD_BUFFER("mac", 6, 1),
    DEVICE_FIELD_U32("ctrl", 1),
    DEVICE_FIELD_U32("status", 1),
    DEVICE_FIELD_U32("icr", 1),
    DEVICE_FIELD_U32("ims", 1),
    DEVICE_FIELD_U32("tpt", 1),
    DEVICE_FIELD_U32("itr", 2),
    DEVICE_FIELD_END,
};

static const FieldDesc e1000_mit_fields[] = {
    DEVICE_FIELD_U32("rdtr", 1),
    DEVICE_FIELD_U32("radv", 1),
    DEVICE_FIELD_U32("tadv", 1),
    DEVICE_FIELD_U8("mit_irq_level", 1),
    DEVICE_FIELD_END,
};

static bool e1000_mit_needed(const DeviceState *d)
{
    return device_prop_bool(d, "mitigation");
}

static const SubsectionDesc e1000_subs[] = {
    { "e1000/mit_state", 1, e1000_mit_fields, e1000_mit_needed },
    { .name = NULL },
};

static const PropDesc e1000_props[] = {
    { "mac", "52:54:00:12:34:57", PROP_MAC, 0, 0 },
    { "mitigation", "on", PROP_BOOL, 0, 0 },
    { .name = NULL },
};

static void e1000_realize(DeviceState *d)
{
    device_prop_mac(d, "mac", device_buffer(d, "mac"));
    device_set(d, "ctrl", 0x00140240);      /* FD, SLU, speed 1000 */
    device_set(d, "status", 0x80080783);    /* link up, 1000 Mb/s FD */
    device_set(d, "ims", 0x9d);
    if (e1000_mit_needed(d)) {
        device_set(d, "itr", 500);
        device_set(d, "radv", 8);
        device_set(d, "tadv", 32);
    }
}

static void e1000_tick(DeviceState *d, uint64_t n)
{
    device_set(d, "tpt", n);
    device_set(d, "icr", n & 1 ? 0x80 : 0);     /* RXT0 */
}

/* ---- the catalog ---- */

static const DeviceType timer_type = {
    .name = "timer",
    .vmsd_name = "timer",
    .desc = "CPU tick and clock offsets (QEMU 7.2 layout)",
    .version = 2,
    .min_version = 1,
    .fields = timer_fields,
    .user_creatable = false,
    .tick = timer_tick,
};

static const DeviceType globalstate_type = {
    .name = "globalstate",
    .vmsd_name = "globalstate",
    .desc = "run state carried to the destination (QEMU 7.2 layout)",
    .version = 1,
    .min_version = 1,
    .fields = globalstate_fields,
    .user_creatable = false,
    .realize = globalstate_realize,
    .post_load = globalstate_post_load,
};

static const DeviceType serial_type = {
    .name = "serial",
    .vmsd_name = "serial",
    .desc = "16550A-like UART",
    .version = 3,
    .min_version = 1,
    .fields = serial_fields,
    .subs = serial_subs,
    .props = serial_props,
    .user_creatable = true,
    .realize = serial_realize,
    .tick = serial_tick,
};

static const DeviceType rtc_type = {
    .name = "rtc",
    .vmsd_name = "rtc",
    .desc = "mc146818-like real-time clock and CMOS",
    .version = 3,
    .min_version = 1,
    .fields = rtc_fields,
    .subs = rtc_subs,
    .props = rtc_props,
    .user_creatable = true,
    .realize = rtc_realize,
    .tick = rtc_tick,
};

static const DeviceType cpu_type = {
    .name = "cpu",
    .vmsd_name = "cpu",
    .desc = "x86-64-like vCPU registers",
    .version = 3,
    .min_version = 1,
    .fields = cpu_fields,
    .subs = cpu_subs,
    .props = cpu_props,
    .user_creatable = true,
    .realize = cpu_realize,
    .tick = cpu_tick,
};

static const DeviceType virtio_net_type = {
    .name = "virtio-net",
    .vmsd_name = "virtio-net",
    .desc = "virtio network device",
    .version = 2,
    .min_version = 1,
    .fields = virtio_net_fields,
    .subs = virtio_net_subs,
    .props = virtio_net_props,
    .user_creatable = true,
    .realize = virtio_net_realize,
    .tick = virtio_net_tick,
};

static const DeviceType virtio_blk_type = {
    .name = "virtio-blk",
    .vmsd_name = "virtio-blk",
    .desc = "virtio block device",
    .version = 2,
    .min_version = 1,
    .fields = virtio_blk_fields,
    .subs = virtio_blk_subs,
    .props = virtio_blk_props,
    .user_creatable = true,
    .realize = virtio_blk_realize,
    .tick = virtio_blk_tick,
};

static const DeviceType e1000_type = {
    .name = "e1000",
    .vmsd_name = "e1000",
    .desc = "Intel 82540EM-like network card",
    .version = 2,
    .min_version = 1,
    .fields = e1000_fields,
    .subs = e1000_subs,
    .props = e1000_props,
    .user_creatable = true,
    .realize = e1000_realize,
    .tick = e1000_tick,
};

static const DeviceType *const catalog[] = {
    &timer_type,
    &globalstate_type,
    &serial_type,
    &rtc_type,
    &cpu_type,
    &virtio_net_type,
    &virtio_blk_type,
    &e1000_type,
    NULL,
};

const DeviceType *const *device_catalog(void)
{
    return catalog;
}

const DeviceType *device_type_find(const char *name)
{
    for (const DeviceType *const *t = catalog; *t; t++) {
        if (strcmp((*t)->name, name) == 0) {
            return *t;
        }
    }
    return NULL;
}

static void print_prop(const PropDesc *p, FILE *out)
{
    switch (p->kind) {
    case PROP_BOOL:
        fprintf(out, "    %s=<on|off> (default %s)\n", p->name, p->def);
        break;
    case PROP_UINT:
        fprintf(out, "    %s=<%" PRIu64 "..%" PRIu64 "> (default %s)\n",
                p->name, p->min, p->max, p->def);
        break;
    case PROP_MAC:
        fprintf(out, "    %s=<xx:xx:xx:xx:xx:xx> (default %s)\n", p->name,
                p->def);
        break;
    }
}

void device_catalog_print(FILE *out)
{
    fprintf(out, "Devices (--device NAME[,id=ID][,PROP=VALUE...]):\n");
    for (const DeviceType *const *tp = catalog; *tp; tp++) {
        const DeviceType *t = *tp;

        fprintf(out, "  %-12s %s; state versions %" PRIu32 "..%" PRIu32 "%s\n",
                t->name, t->desc, t->min_version, t->version,
                t->user_creatable ? "" : "; machine-owned, not creatable");
        for (const PropDesc *p = t->props; p && p->name; p++) {
            print_prop(p, out);
        }
        for (const SubsectionDesc *s = t->subs; s && s->name; s++) {
            fprintf(out, "    subsection %s (version %" PRIu32 ")\n",
                    s->name, s->version);
        }
    }
}
