/*
 * bench/handshake.c - cost of one complete libmig2 handshake
 *
 * For manifests of N devices (default 10, 100, 1,000 and 10,000) this
 * measures a full in-memory handshake between a source and a destination
 * engine: bytes on the wire in each direction and wall time (median, min,
 * max over many runs).  Instruction counts come from scripts/bench.sh,
 * which runs `--once N` under callgrind with collection toggled on
 * bench_one_handshake() only.
 *
 * The profiles (a QEMU-like q35 machine, see build_profiles()) are built
 * once per size, outside the timed region.  The timed region is exactly
 * bench_one_handshake(): mig2_engine_new() for both roles, pumping bytes
 * between them in memory until both are COMPLETE, reading the results and
 * mig2_engine_free() for both.  Both engines get fixed nonces through
 * Mig2EngineOptions so that no RNG call adds noise and the transcript (and
 * so the byte counts, grease included) is the same on every run;
 * --random-nonces lets the engines draw them instead.
 *
 * Usage: handshake [--json] [--sizes 10,100,...] [--iterations N]
 *                  [--random-nonces] [--same-process] | --once N
 *
 * Each size is measured in its own child process (a fresh heap), unless
 * --same-process is given.
 *
 * Exits non-zero when a handshake does not complete or its results are
 * wrong; the speed and size targets are reported (PASS/FAIL) but never
 * change the exit status.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mig2/mig2.h"

/* Keep bench_one_handshake() a real, uncloned symbol for callgrind. */
#if defined(__GNUC__) && !defined(__clang__)
#define BENCH_NOINLINE __attribute__((noinline, noclone))
#else
#define BENCH_NOINLINE __attribute__((noinline))
#endif

#define MAX_SIZES 16
#define MAX_DEVICES ((size_t)MIG2_MAX_DEVICES)
/* Time budget per size, and the fewest runs for small and large sizes. */
#define BUDGET_NS 1000000000ULL
#define MIN_ITERS_SMALL 200
#define MIN_ITERS_LARGE 30
#define LARGE_DEVICES 10000
#define MAX_ITERS 200000
/* Pump steps before a handshake that still runs counts as stalled. */
#define MAX_STEPS 16

/* Targets from the issue; reported, never enforced. */
#define TARGET_DEVICES 1000
#define TARGET_NS 2000000ULL            /* 2 ms */
#define TARGET_BYTES 200000ULL          /* 200 KB, both directions */
#define TARGET_BIG_DEVICES 10000
#define TARGET_RATIO 12.0

/* ---------------------------------------------------------------- */
/* Profiles                                                          */
/* ---------------------------------------------------------------- */

/*
 * The manifest cycles through these kinds.  PCI functions get a unique
 * address in their id ("0000:00:03.0/virtio-net", instance 0); the others
 * repeat their id with increasing instance numbers ("cpu" 0, 1, ...).
 * Source save ranges and destination load ranges overlap, the destination
 * being one version newer (source 1..4, destination 1..5).
 */
typedef struct DevKind {
    const char *name;
    bool pci;
    uint32_t src_min, src_max;
    uint32_t dst_min, dst_max;
    const char *subs[2];
} DevKind;

static const DevKind dev_kinds[] = {
    { "cpu", false, 1, 12, 1, 13, { "cpu/async_pf_msr", "cpu/xsave" } },
    { "apic", false, 1, 3, 1, 4, { "apic/timer", "apic/sipi" } },
    { "virtio-net", true, 1, 4, 1, 5,
      { "virtio-net/rss", "virtio-net/vnet-hdr" } },
    { "serial", false, 1, 4, 1, 5, { "serial/fifo", "serial/timeout" } },
    { "virtio-blk", true, 1, 4, 1, 5,
      { "virtio-blk/queue-size", "virtio-blk/discard" } },
    { "kvmclock", false, 1, 2, 1, 3, { "kvmclock/reliable_get_clock",
                                       "kvmclock/mach_use_reliable" } },
    { "pcie-root-port", true, 1, 4, 1, 5,
      { "pcie-root-port/aer", "pcie-root-port/hotplug" } },
    { "mc146818rtc", false, 1, 3, 1, 4, { "mc146818rtc/irq_reinject",
                                          "mc146818rtc/century" } },
    { "e1000e", true, 1, 4, 1, 5, { "e1000e/tx_ctx", "e1000e/intr" } },
    { "ioapic", false, 1, 2, 1, 3, { "ioapic/version", "ioapic/irr" } },
};
#define N_KINDS (sizeof(dev_kinds) / sizeof(dev_kinds[0]))

typedef struct RamDef {
    const char *name;
    uint64_t size;
} RamDef;

static const RamDef ram_blocks[] = {
    { "pc.ram", 8ULL << 30 },
    { "pc.bios", 256ULL << 10 },
    { "pc.rom", 128ULL << 10 },
    { "0000:00:01.0/vga.vram", 16ULL << 20 },
    { "/rom@etc/acpi/tables", 128ULL << 10 },
    { "/rom@etc/table-loader", 4ULL << 10 },
    { "/rom@etc/acpi/rsdp", 4ULL << 10 },
};

static const uint16_t features[] = {
    MIG2_FEAT_RETURN_PATH, MIG2_FEAT_MULTICHANNEL, MIG2_FEAT_ZERO_PAGE,
    MIG2_FEAT_SWITCHOVER_ACK, MIG2_FEAT_DEVICE_STATE_VERSIONS,
};

/* Config items the source proposes (build_profile()). */
#define N_PROPOSALS 10

#define CHECK(expr)                                                         \
    do {                                                                    \
        int rc_ = (expr);                                                   \
        if (rc_ < 0) {                                                      \
            fprintf(stderr, "handshake: %s failed: %s\n", #expr,            \
                    mig2_strerror(rc_));                                    \
            goto fail;                                                      \
        }                                                                   \
    } while (0)

static int add_devices(Mig2Profile *p, size_t n, bool source)
{
    uint32_t inst[N_KINDS] = { 0 };
    unsigned pci = 0;
    size_t i, j;

    for (i = 0; i < n; i++) {
        const DevKind *k = &dev_kinds[i % N_KINDS];
        char id[64];
        uint32_t instance = 0;
        size_t n_subs;
        int dev;

        if (k->pci) {
            /* Bus 0 holds slots 2..31, function 0; then buses 1.., 8 fns. */
            unsigned a = pci++;

            if (a < 30) {
                snprintf(id, sizeof(id), "0000:00:%02x.0/%s", a + 2, k->name);
            } else {
                a -= 30;
                snprintf(id, sizeof(id), "0000:%02x:%02x.%x/%s",
                         1 + a / 256, (a / 8) % 32, a % 8, k->name);
            }
        } else {
            snprintf(id, sizeof(id), "%s", k->name);
            instance = inst[i % N_KINDS]++;
        }
        dev = mig2_profile_add_device(p, id, instance,
                                      source ? k->src_min : k->dst_min,
                                      source ? k->src_max : k->dst_max);
        if (dev < 0) {
            return dev;
        }
        /* One device in four has state in subsections: 1 or 2 of them. */
        if (i % 4 != 1) {
            continue;
        }
        n_subs = (i / 4) % 2 ? 2 : 1;
        for (j = 0; j < n_subs; j++) {
            /* Needed now for one subsection in three; dest knows them all. */
            bool needed = source && j == 0 && (i / 4) % 3 == 0;
            int rc = mig2_profile_add_subsection(p, dev, k->subs[j], needed);

            if (rc < 0) {
                return rc;
            }
        }
    }
    return MIG2_OK;
}

/* A source (@source) or destination profile for @n devices, or NULL. */
static Mig2Profile *build_profile(size_t n, bool source)
{
    Mig2Profile *p = mig2_profile_new();
    size_t i;

    if (!p) {
        fprintf(stderr, "handshake: out of memory\n");
        return NULL;
    }
    CHECK(mig2_profile_set_build(p, source ? "qemu 9.1.0 (bench source)"
                                           : "qemu 9.2.0 (bench destination)"));
    CHECK(mig2_profile_set_machine(p, "pc-q35-9.1"));
    CHECK(mig2_profile_set_page_size(p, 4096));
    for (i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
        CHECK(mig2_profile_add_feature(p, features[i], false));
    }
    for (i = 0; i < sizeof(ram_blocks) / sizeof(ram_blocks[0]); i++) {
        CHECK(mig2_profile_add_ram_block(p, ram_blocks[i].name,
                                         ram_blocks[i].size, 4096));
    }
    CHECK(add_devices(p, n, source));
    if (source) {
        /* N_PROPOSALS items; "return-path" must be accepted unchanged. */
        CHECK(mig2_profile_propose_bool(p, "return-path", true,
                                        MIG2_CONFIG_REQUIRED));
        CHECK(mig2_profile_propose_bool(p, "multifd", true, 0));
        CHECK(mig2_profile_propose_u64(p, "multifd-channels", 16, 0));
        CHECK(mig2_profile_propose_str(p, "multifd-compression", "zstd", 0));
        CHECK(mig2_profile_propose_u64(p, "max-bandwidth", 10ULL << 30, 0));
        CHECK(mig2_profile_propose_u64(p, "downtime-limit", 300, 0));
        CHECK(mig2_profile_propose_bool(p, "switchover-ack", true, 0));
        CHECK(mig2_profile_propose_bool(p, "events", true, 0));
        CHECK(mig2_profile_propose_bool(p, "auto-converge", true, 0));
        CHECK(mig2_profile_propose_u64(p, "cpu-throttle-initial", 30, 0));
    } else {
        /* At most 8 channels and 1 GiB/s: two items come back clamped. */
        CHECK(mig2_profile_policy_clamp(p, "multifd-channels", 8));
        CHECK(mig2_profile_policy_clamp(p, "max-bandwidth", 1ULL << 30));
    }
    return p;

fail:
    mig2_profile_free(p);
    return NULL;
}

/* ---------------------------------------------------------------- */
/* One handshake                                                     */
/* ---------------------------------------------------------------- */

typedef struct Bench {
    size_t devices;
    Mig2Profile *src;
    Mig2Profile *dst;
    Mig2EngineOptions src_opts;
    Mig2EngineOptions dst_opts;
    uint8_t src_nonce[MIG2_NONCE_LEN];
    uint8_t dst_nonce[MIG2_NONCE_LEN];
} Bench;

typedef struct Outcome {
    uint64_t bytes_s2d;
    uint64_t bytes_d2s;
    unsigned round_trips;
    uint16_t revision;
    const char *why;            /* NULL when the run was good */
} Outcome;

#define EV_BIT(t) (1U << (t))

/* Pop every event of @e into *@seen; false once it failed or was refused. */
static bool drain_events(Mig2Engine *e, unsigned *seen)
{
    Mig2Event ev;
    bool ok = true;

    while (mig2_engine_next_event(e, &ev)) {
        *seen |= EV_BIT(ev.type);
        if (ev.type == MIG2_EV_FAILED || ev.type == MIG2_EV_REJECTED) {
            ok = false;
        }
    }
    return ok;
}

/* On failure only: say what the failed engine reports, on stderr. */
static void report_failure(const char *who, const Mig2Engine *e)
{
    const Mig2Error *err = mig2_engine_error(e);
    char *text = err ? mig2_error_format(err) : NULL;

    if (text) {
        fprintf(stderr, "handshake: %s: %s\n", who, text);
    }
    free(text);
}

/*
 * Deliver everything @from has queued to @to (dropped when @to no longer
 * runs, as a closed socket would) and add it to *@count.  Returns 1 when
 * bytes moved, 0 when none, -1 when @to failed on them.
 */
static int pump(Mig2Engine *from, Mig2Engine *to, uint64_t *count)
{
    const uint8_t *out;
    size_t len;
    int moved = 0;

    while ((out = mig2_engine_output(from, &len)) != NULL) {
        if (mig2_engine_state(to) == MIG2_STATE_RUNNING &&
            mig2_engine_recv(to, out, len) < 0) {
            return -1;
        }
        mig2_engine_output_consumed(from, len);
        *count += len;
        moved = 1;
    }
    return moved;
}

/* Check what the caller of a real migration would read; NULL when fine. */
static const char *check_results(const Bench *b, Mig2Engine *src,
                                 Mig2Engine *dst, Outcome *o)
{
    uint64_t s_sent, s_recvd, d_sent, d_recvd;
    size_t i, n;

    if (!mig2_result_ready(src) || !mig2_result_ready(dst)) {
        return "results not ready";
    }
    o->revision = mig2_result_revision(src);
    o->round_trips = mig2_result_round_trips(src);
    if (o->revision != mig2_result_revision(dst) || o->revision == 0) {
        return "the two sides disagree on the revision";
    }
    if (!mig2_result_transcript_hash(src) ||
        !mig2_result_transcript_hash(dst) ||
        memcmp(mig2_result_transcript_hash(src),
               mig2_result_transcript_hash(dst), MIG2_HASH_LEN) != 0 ||
        !mig2_result_channel_key(src) || !mig2_result_channel_key(dst) ||
        memcmp(mig2_result_channel_key(src), mig2_result_channel_key(dst),
               MIG2_HASH_LEN) != 0) {
        return "transcript hash or channel key differ";
    }
    n = mig2_result_device_count(src);
    if (n != b->devices || mig2_result_device_count(dst) != b->devices) {
        return "wrong number of device results";
    }
    for (i = 0; i < n; i++) {
        const Mig2DeviceResult *ds = mig2_result_device(src, i);
        const Mig2DeviceResult *dd = mig2_result_device(dst, i);
        const DevKind *k = &dev_kinds[i % N_KINDS];

        /* Highest common version: the source's maximum. */
        if (ds->version != k->src_max || dd->version != ds->version) {
            return "wrong device version";
        }
    }
    if (mig2_result_omitted_count(src) != 0) {
        return "subsections omitted although the destination knows them";
    }
    n = mig2_result_config_count(src);
    if (n != N_PROPOSALS || mig2_result_config_count(dst) != n) {
        return "wrong number of config results";
    }
    for (i = 0; i < n; i++) {
        const Mig2ConfigResult *c = mig2_result_config(src, i);

        if (c->status != MIG2_CFG_ACCEPTED && c->status != MIG2_CFG_CLAMPED) {
            return "unexpected config status";
        }
    }
    mig2_result_bytes(src, &s_sent, &s_recvd);
    mig2_result_bytes(dst, &d_sent, &d_recvd);
    if (s_sent != o->bytes_s2d || d_recvd != o->bytes_s2d ||
        d_sent != o->bytes_d2s || s_recvd != o->bytes_d2s) {
        return "engine byte counters disagree with the bytes pumped";
    }
    return NULL;
}

/*
 * The timed region: both engines from creation to free.  Fills @o; its
 * why is NULL when the handshake completed with the expected results.
 */
static BENCH_NOINLINE void bench_one_handshake(const Bench *b, Outcome *o)
{
    Mig2Engine *src, *dst = NULL;
    unsigned src_seen = 0, dst_seen = 0, step;
    const unsigned want = EV_BIT(MIG2_EV_NEGOTIATED) | EV_BIT(MIG2_EV_COMPLETE);
    int rc, moved;

    memset(o, 0, sizeof(*o));
    src = mig2_engine_new(MIG2_ROLE_SOURCE, b->src, &b->src_opts, &rc);
    if (src) {
        dst = mig2_engine_new(MIG2_ROLE_DESTINATION, b->dst, &b->dst_opts,
                              &rc);
    }
    if (!src || !dst) {
        o->why = "mig2_engine_new failed";
        goto out;
    }
    for (step = 0; step < MAX_STEPS; step++) {
        moved = pump(src, dst, &o->bytes_s2d);
        if (moved < 0 || !drain_events(dst, &dst_seen)) {
            o->why = "the destination failed";
            report_failure("destination", dst);
            goto out;
        }
        rc = pump(dst, src, &o->bytes_d2s);
        if (rc < 0 || !drain_events(src, &src_seen)) {
            o->why = "the source failed";
            report_failure("source", src);
            goto out;
        }
        if (mig2_engine_state(src) != MIG2_STATE_RUNNING &&
            mig2_engine_state(dst) != MIG2_STATE_RUNNING) {
            break;
        }
        if (!moved && !rc) {
            o->why = "the handshake stalled";
            goto out;
        }
    }
    /* Anything still queued (nothing, for a good run) is on the wire too. */
    if (pump(src, dst, &o->bytes_s2d) < 0 ||
        pump(dst, src, &o->bytes_d2s) < 0) {
        o->why = "failure after completion";
        goto out;
    }
    if (mig2_engine_state(src) != MIG2_STATE_COMPLETE ||
        mig2_engine_state(dst) != MIG2_STATE_COMPLETE ||
        (src_seen & want) != want || (dst_seen & want) != want) {
        o->why = "the handshake did not complete";
        goto out;
    }
    o->why = check_results(b, src, dst, o);
out:
    mig2_engine_free(src);
    mig2_engine_free(dst);
}

static void bench_free(Bench *b)
{
    mig2_profile_free(b->src);
    mig2_profile_free(b->dst);
    memset(b, 0, sizeof(*b));
}

static int bench_init(Bench *b, size_t devices, bool random_nonces)
{
    size_t i;

    memset(b, 0, sizeof(*b));
    b->devices = devices;
    b->src = build_profile(devices, true);
    b->dst = build_profile(devices, false);
    if (!b->src || !b->dst) {
        bench_free(b);
        return -1;
    }
    for (i = 0; i < MIG2_NONCE_LEN; i++) {
        b->src_nonce[i] = (uint8_t)(0x10 + i);
        b->dst_nonce[i] = (uint8_t)(0xa0 + i);
    }
    if (!random_nonces) {
        b->src_opts.nonce = b->src_nonce;
        b->dst_opts.nonce = b->dst_nonce;
    }
    return 0;
}

/* ---------------------------------------------------------------- */
/* Timing                                                            */
/* ---------------------------------------------------------------- */

typedef struct SizeResult {
    size_t devices;
    Outcome o;
    size_t iterations;
    uint64_t ns_median;
    uint64_t ns_min;
    uint64_t ns_max;
} SizeResult;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * Time handshakes of @devices devices: exactly @iterations when non-zero,
 * else at least the minimum for the size and until BUDGET_NS has passed.
 */
static int run_size(size_t devices, size_t iterations, bool random_nonces,
                    SizeResult *r)
{
    size_t min_iters = devices >= LARGE_DEVICES ? MIN_ITERS_LARGE
                                                : MIN_ITERS_SMALL;
    size_t max_iters = iterations ? iterations : MAX_ITERS;
    uint64_t *ns, start, t0;
    Bench b;
    Outcome o;
    size_t n = 0;
    int ret = -1;

    if (bench_init(&b, devices, random_nonces)) {
        return -1;
    }
    ns = malloc(max_iters * sizeof(*ns));
    if (!ns) {
        fprintf(stderr, "handshake: out of memory\n");
        goto out;
    }
    /* One untimed run warms caches and the allocator, and checks results. */
    bench_one_handshake(&b, &r->o);
    if (r->o.why) {
        fprintf(stderr, "handshake: %zu devices: %s\n", devices, r->o.why);
        goto out;
    }
    start = now_ns();
    while (n < max_iters) {
        t0 = now_ns();
        bench_one_handshake(&b, &o);
        ns[n++] = now_ns() - t0;
        if (o.why) {
            fprintf(stderr, "handshake: %zu devices, run %zu: %s\n", devices,
                    n, o.why);
            goto out;
        }
        /* Fixed nonces make every run's bytes (grease included) equal. */
        if (!random_nonces && (o.bytes_s2d != r->o.bytes_s2d ||
                               o.bytes_d2s != r->o.bytes_d2s)) {
            fprintf(stderr, "handshake: %zu devices, run %zu: byte counts "
                    "changed between runs\n", devices, n);
            goto out;
        }
        if (!iterations && n >= min_iters && now_ns() - start >= BUDGET_NS) {
            break;
        }
    }
    qsort(ns, n, sizeof(*ns), cmp_u64);
    r->devices = devices;
    r->iterations = n;
    r->ns_min = ns[0];
    r->ns_max = ns[n - 1];
    r->ns_median = n % 2 ? ns[n / 2] : (ns[n / 2 - 1] + ns[n / 2]) / 2;
    ret = 0;
out:
    free(ns);
    bench_free(&b);
    return ret;
}

/*
 * run_size() in a child process, so that every size starts from the same
 * state (a fresh heap, one warm-up run): the allocator state left behind
 * by thousands of smaller handshakes shifts a size's median by several
 * percent, and a size's figure should not depend on which sizes ran
 * before it.
 */
static int run_size_isolated(size_t devices, size_t iterations,
                             bool random_nonces, SizeResult *r)
{
    int fd[2], status;
    ssize_t got;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    if (pipe(fd) < 0 || (pid = fork()) < 0) {
        perror("handshake: pipe/fork");
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
        if (run_size(devices, iterations, random_nonces, r) ||
            write(fd[1], r, sizeof(*r)) != (ssize_t)sizeof(*r)) {
            _exit(1);
        }
        _exit(0);
    }
    close(fd[1]);
    do {
        got = read(fd[0], r, sizeof(*r));
    } while (got < 0 && errno == EINTR);
    close(fd[0]);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("handshake: waitpid");
            return -1;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        got != (ssize_t)sizeof(*r)) {
        if (WIFSIGNALED(status)) {
            fprintf(stderr, "handshake: %zu devices: killed by signal %d\n",
                    devices, WTERMSIG(status));
        }
        return -1;
    }
    r->o.why = NULL;    /* the child's pointers mean nothing here */
    return 0;
}

/* ---------------------------------------------------------------- */
/* Output                                                            */
/* ---------------------------------------------------------------- */

static void print_json(const SizeResult *r, bool random_nonces)
{
    printf("{\"devices\":%zu,\"bytes_src_to_dst\":%" PRIu64
           ",\"bytes_dst_to_src\":%" PRIu64 ",\"bytes_total\":%" PRIu64
           ",\"ns_median\":%" PRIu64 ",\"ns_min\":%" PRIu64
           ",\"ns_max\":%" PRIu64 ",\"iterations\":%zu"
           ",\"round_trips\":%u,\"revision\":%u,\"nonces\":\"%s\"}\n",
           r->devices, r->o.bytes_s2d, r->o.bytes_d2s,
           r->o.bytes_s2d + r->o.bytes_d2s, r->ns_median, r->ns_min,
           r->ns_max, r->iterations, r->o.round_trips, r->o.revision,
           random_nonces ? "random" : "fixed");
}

static void print_header(bool random_nonces)
{
    printf("libmig2 handshake: source + destination engines in memory, "
           "%s nonces, grease on\n", random_nonces ? "random" : "fixed");
    printf("time = mig2_engine_new x2 + pump to COMPLETE + results + "
           "mig2_engine_free x2\n\n");
    printf("%8s %11s %11s %11s %11s %11s %11s %7s %4s\n", "devices",
           "src->dst B", "dst->src B", "total B", "median us", "min us",
           "max us", "runs", "RTT");
}

static void print_row(const SizeResult *r)
{
    printf("%8zu %11" PRIu64 " %11" PRIu64 " %11" PRIu64
           " %11.1f %11.1f %11.1f %7zu %4u\n",
           r->devices, r->o.bytes_s2d, r->o.bytes_d2s,
           r->o.bytes_s2d + r->o.bytes_d2s, r->ns_median / 1e3,
           r->ns_min / 1e3, r->ns_max / 1e3, r->iterations,
           r->o.round_trips);
    fflush(stdout);
}

static const SizeResult *find_size(const SizeResult *r, size_t n,
                                   size_t devices)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (r[i].devices == devices) {
            return &r[i];
        }
    }
    return NULL;
}

static const char *verdict(bool ok)
{
    return ok ? "PASS" : "FAIL";
}

static void print_target(const char *what, const char *value,
                         const char *target, const char *result)
{
    printf("  %-28s %14s   %-12s %s\n", what, value, target, result);
}

static void print_targets(const SizeResult *r, size_t n)
{
    const SizeResult *k = find_size(r, n, TARGET_DEVICES);
    const SizeResult *big = find_size(r, n, TARGET_BIG_DEVICES);
    uint64_t k_bytes, big_bytes;
    char v[32];
    double tr;

    printf("\ntargets (reported only; they never change the exit status)\n");
    if (!k) {
        printf("  1,000 devices: not measured (add 1000 to --sizes)\n");
        return;
    }
    k_bytes = k->o.bytes_s2d + k->o.bytes_d2s;
    snprintf(v, sizeof(v), "%.3f ms", k->ns_median / 1e6);
    print_target("1,000 devices, median time", v, "< 2 ms",
                 verdict(k->ns_median < TARGET_NS));
    snprintf(v, sizeof(v), "%" PRIu64 " B", k_bytes);
    print_target("1,000 devices, bytes (both)", v, "< 200,000 B",
                 verdict(k_bytes < TARGET_BYTES));
    if (!big) {
        printf("  10,000/1,000 ratios: not measured (add 10000 to --sizes)\n");
        return;
    }
    big_bytes = big->o.bytes_s2d + big->o.bytes_d2s;
    tr = (double)big->ns_median / (double)k->ns_median;
    snprintf(v, sizeof(v), "%.2fx", tr);
    print_target("10,000/1,000 median time", v, "<= 12x",
                 verdict(tr <= TARGET_RATIO));
    snprintf(v, sizeof(v), "%.2fx", (double)big_bytes / (double)k_bytes);
    print_target("10,000/1,000 bytes", v, "", "(information)");
    print_target("10,000/1,000 instructions", "", "<= 12x",
                 "see the callgrind table (scripts/bench.sh)");
}

/* ---------------------------------------------------------------- */
/* Command line                                                      */
/* ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: handshake [--json] [--sizes N,N,...] [--iterations N]\n"
            "                 [--random-nonces] [--same-process]\n"
            "       handshake --once N\n"
            "  --json            one JSON object per line and size, nothing "
            "else\n"
            "  --sizes LIST      device counts (default 10,100,1000,10000; "
            "1..%zu)\n"
            "  --iterations N    exactly N timed runs per size (default: at "
            "least %d,\n"
            "                    %d from %d devices, and about 1 s per "
            "size)\n"
            "  --random-nonces   let the engines draw their nonces (default: "
            "fixed)\n"
            "  --same-process    run every size in this process (default: "
            "one\n"
            "                    child process per size, each with a fresh "
            "heap)\n"
            "  --once N          one handshake of N devices, one line of "
            "output\n"
            "                    (for valgrind --tool=callgrind "
            "--toggle-collect=bench_one_handshake)\n",
            MAX_DEVICES, MIN_ITERS_SMALL, MIN_ITERS_LARGE, LARGE_DEVICES);
}

static int parse_count(const char *s, size_t max, size_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > max) {
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static int parse_sizes(const char *s, size_t *sizes, size_t *n)
{
    char buf[256], *tok, *save = NULL;

    if (!s || strlen(s) >= sizeof(buf)) {
        return -1;
    }
    strcpy(buf, s);
    *n = 0;
    for (tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_SIZES || parse_count(tok, MAX_DEVICES, &sizes[*n])) {
            return -1;
        }
        (*n)++;
    }
    return *n ? 0 : -1;
}

static int run_once(size_t devices, bool random_nonces)
{
    Bench b;
    Outcome o;

    if (bench_init(&b, devices, random_nonces)) {
        return 1;
    }
    bench_one_handshake(&b, &o);
    bench_free(&b);
    if (o.why) {
        fprintf(stderr, "handshake: %zu devices: %s\n", devices, o.why);
        return 1;
    }
    printf("once: %zu devices, %" PRIu64 " B src->dst, %" PRIu64
           " B dst->src, revision %u, %u round trip(s): complete\n",
           devices, o.bytes_s2d, o.bytes_d2s, o.revision, o.round_trips);
    return 0;
}

int main(int argc, char **argv)
{
    size_t sizes[MAX_SIZES] = { 10, 100, 1000, 10000 };
    size_t n_sizes = 4, iterations = 0, once = 0, i;
    SizeResult results[MAX_SIZES];
    bool json = false, random_nonces = false, same_process = false;
    int a;

    for (a = 1; a < argc; a++) {
        const char *arg = argv[a];
        const char *val = a + 1 < argc ? argv[a + 1] : NULL;

        if (strcmp(arg, "--json") == 0) {
            json = true;
        } else if (strcmp(arg, "--random-nonces") == 0) {
            random_nonces = true;
        } else if (strcmp(arg, "--same-process") == 0) {
            same_process = true;
        } else if (strcmp(arg, "--sizes") == 0) {
            if (parse_sizes(val, sizes, &n_sizes)) {
                fprintf(stderr, "handshake: --sizes wants up to %d counts "
                        "from 1 to %zu, comma-separated\n", MAX_SIZES,
                        MAX_DEVICES);
                return 2;
            }
            a++;
        } else if (strcmp(arg, "--iterations") == 0) {
            if (parse_count(val, MAX_ITERS, &iterations)) {
                fprintf(stderr, "handshake: --iterations wants 1..%d\n",
                        MAX_ITERS);
                return 2;
            }
            a++;
        } else if (strcmp(arg, "--once") == 0) {
            if (parse_count(val, MAX_DEVICES, &once)) {
                fprintf(stderr, "handshake: --once wants 1..%zu devices\n",
                        MAX_DEVICES);
                return 2;
            }
            a++;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "handshake: unknown argument '%s'\n", arg);
            usage(stderr);
            return 2;
        }
    }
    if (once) {
        return run_once(once, random_nonces);
    }
    if (!json) {
        print_header(random_nonces);
    }
    for (i = 0; i < n_sizes; i++) {
        if (same_process
                ? run_size(sizes[i], iterations, random_nonces, &results[i])
                : run_size_isolated(sizes[i], iterations, random_nonces,
                                    &results[i])) {
            return 1;
        }
        if (json) {
            print_json(&results[i], random_nonces);
            fflush(stdout);
        } else {
            print_row(&results[i]);
        }
    }
    if (!json) {
        print_targets(results, n_sizes);
    }
    return 0;
}
