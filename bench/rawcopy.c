/*
 * bench/rawcopy.c - the bare limit for moving guest RAM over loopback TCP
 *
 * Moves SIZE bytes (default 1 GiB) from a private mapping of a file of
 * random data (as mig2-vm --memory-file maps guest RAM) into fresh
 * anonymous memory advised MADV_HUGEPAGE (as QEMU does for guest RAM)
 * over N loopback TCP streams, with no protocol at all: sender thread i
 * connects to its own listening port and sends the contiguous i-th 1/N of
 * the region with large send() calls, receiver thread i reads straight
 * into the destination region at the same offset.  The destination is
 * compared with the source afterwards; a difference is a failure.
 *
 * The time is wall time from the first connect to the last byte received
 * (listening sockets and threads are set up before; the destination is
 * not touched before the copy, so its page faults are part of the time,
 * as on a migration destination).
 *
 * --hot measures raw loopback TCP instead: each sender repeatedly sends
 * one hot 1 MiB buffer, each receiver reads into one hot 1 MiB buffer.
 * --memcpy measures the same copy without TCP: N threads memcpy their
 * share from the file mapping into fresh THP-advised memory.
 *
 * Usage: rawcopy [--size SIZE] [--streams N[,N...]] [--file PATH]
 *                [--reps N] [--hot | --memcpy] [--json]
 *
 * --file PATH is created (random data from /dev/urandom) when missing or
 * smaller than SIZE, and kept; without --file a temporary file is created
 * and removed at exit.  --json prints one JSON object per run, one a line.
 *
 * Besides the time, each run reports the CPU time this process used in the
 * timed window (cpu s) and what the rest of the machine used meanwhile
 * (other s, from /proc/stat): a busy machine makes the figure meaningless.
 *
 * Exits 0 when every run moved every byte (and the destination matches),
 * 1 on a failed run, 2 on a usage error.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ram.h"

#define MAX_STREAMS 64
#define MAX_RUNS 16
#define HOT_BUF (1u << 20)
/* Largest single send(): the kernel splits it anyway, fewer syscalls. */
#define SEND_CHUNK (8u << 20)
#define FILL_CHUNK (8u << 20)

typedef enum Mode {
    MODE_FILE,
    MODE_HOT,
    MODE_MEMCPY,
} Mode;

typedef struct Stream {
    pthread_t sender;
    pthread_t receiver;
    int listen_fd;
    uint16_t port;
    const uint8_t *src;         /* MODE_FILE/MEMCPY: source slice */
    uint8_t *dst;               /* MODE_FILE/MEMCPY: destination slice */
    uint64_t len;               /* bytes this stream moves */
    uint64_t received;
    pthread_barrier_t *start;
    Mode mode;
    char err[160];
} Stream;

static const char *const mode_names[] = {
    [MODE_FILE] = "file",
    [MODE_HOT] = "hot",
    [MODE_MEMCPY] = "memcpy",
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Busy CPU seconds of all processes (all CPUs), -1 if unknown. */
static double machine_busy_s(void)
{
    unsigned long long v[8] = { 0 };
    FILE *f = fopen("/proc/stat", "r");
    long tck = sysconf(_SC_CLK_TCK);
    int n;

    if (!f) {
        return -1;
    }
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
               &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8 || tck <= 0) {
        return -1;
    }
    /*
     * user + nice + system.  Not irq and softirq: loopback TCP runs much
     * of its receive path in softirq, which is not charged to the task.
     */
    return (double)(v[0] + v[1] + v[2]) / (double)tck;
}

static double self_cpu_s(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) < 0) {
        return 0;
    }
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void set_err(Stream *s, const char *what)
{
    snprintf(s->err, sizeof(s->err), "%s: %s", what, strerror(errno));
}


static int parse_streams(const char *str, int *out)
{
    int n = 0;
    const char *p = str;

    while (*p) {
        char *end;
        long v;

        errno = 0;
        v = strtol(p, &end, 10);
        if (errno || end == p || v < 1 || v > MAX_STREAMS || n == MAX_RUNS ||
            (*end != ',' && *end != '\0')) {
            return -1;
        }
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* Create (or extend) @path with random data up to @size bytes. */
static bool make_file(const char *path, uint64_t size)
{
    struct stat st;
    uint8_t *buf;
    uint64_t off;
    int fd, rnd;
    bool ok = true;

    if (stat(path, &st) == 0 && (uint64_t)st.st_size >= size) {
        return true;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        fprintf(stderr, "rawcopy: cannot create %s: %s\n", path,
                strerror(errno));
        return false;
    }
    rnd = open("/dev/urandom", O_RDONLY);
    buf = malloc(FILL_CHUNK);
    if (rnd < 0 || !buf) {
        fprintf(stderr, "rawcopy: cannot read /dev/urandom\n");
        ok = false;
    }
    for (off = 0; ok && off < size; ) {
        size_t want = size - off < FILL_CHUNK ? (size_t)(size - off)
                                              : FILL_CHUNK;
        ssize_t got = read(rnd, buf, want);

        if (got <= 0 || write(fd, buf, (size_t)got) != got) {
            fprintf(stderr, "rawcopy: filling %s failed: %s\n", path,
                    strerror(errno));
            ok = false;
            break;
        }
        off += (uint64_t)got;
    }
    free(buf);
    if (rnd >= 0) {
        close(rnd);
    }
    /* Written back now, not in the middle of a measurement. */
    if (ok && fsync(fd) < 0) {
        ok = false;
    }
    if (close(fd) < 0) {
        ok = false;
    }
    return ok;
}

static int listen_any(uint16_t *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        return -1;
    }
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void *sender_main(void *opaque)
{
    Stream *s = opaque;
    struct sockaddr_in a = { .sin_family = AF_INET };
    uint8_t *hot = NULL;
    uint64_t off = 0;
    int fd;

    if (s->mode == MODE_HOT) {
        hot = malloc(HOT_BUF);
        if (!hot) {
            snprintf(s->err, sizeof(s->err), "out of memory");
        } else {
            memset(hot, 0x5a, HOT_BUF);
        }
    }
    pthread_barrier_wait(s->start);
    if (s->mode == MODE_HOT && !hot) {
        return NULL;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(s->port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        set_err(s, "connect");
        if (fd >= 0) {
            close(fd);
        }
        free(hot);
        return NULL;
    }
    while (off < s->len) {
        uint64_t left = s->len - off;
        size_t want;
        const void *p;
        ssize_t n;

        if (s->mode == MODE_HOT) {
            want = left < HOT_BUF ? (size_t)left : HOT_BUF;
            p = hot;
        } else {
            want = left < SEND_CHUNK ? (size_t)left : SEND_CHUNK;
            p = s->src + off;
        }
        n = send(fd, p, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            set_err(s, "send");
            break;
        }
        off += (uint64_t)n;
    }
    close(fd);
    free(hot);
    return NULL;
}

static void *receiver_main(void *opaque)
{
    Stream *s = opaque;
    uint8_t *hot = NULL;
    int fd;

    if (s->mode == MODE_HOT) {
        hot = malloc(HOT_BUF);
        if (!hot) {
            snprintf(s->err, sizeof(s->err), "out of memory");
        } else {
            memset(hot, 0, HOT_BUF);
        }
    }
    pthread_barrier_wait(s->start);
    if (s->mode == MODE_HOT && !hot) {
        return NULL;
    }
    fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0) {
        set_err(s, "accept");
        free(hot);
        return NULL;
    }
    while (s->received < s->len) {
        uint64_t left = s->len - s->received;
        ssize_t n;

        if (s->mode == MODE_HOT) {
            n = recv(fd, hot, left < HOT_BUF ? (size_t)left : HOT_BUF, 0);
        } else {
            /* Straight into the destination, as much as is there. */
            n = recv(fd, s->dst + s->received, (size_t)left, 0);
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                errno = EPIPE;
            }
            set_err(s, "recv");
            break;
        }
        s->received += (uint64_t)n;
    }
    close(fd);
    free(hot);
    return NULL;
}

static void *memcpy_main(void *opaque)
{
    Stream *s = opaque;

    pthread_barrier_wait(s->start);
    memcpy(s->dst, s->src, (size_t)s->len);
    s->received = s->len;
    return NULL;
}

/* Fresh anonymous memory advised for huge pages, as QEMU's guest RAM. */
static uint8_t *fresh_region(uint64_t size)
{
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    if (p == MAP_FAILED) {
        return NULL;
    }
    if (madvise(p, (size_t)size, MADV_HUGEPAGE) < 0) {
        /* No THP in this kernel: still a valid (slower) destination. */
    }
    return p;
}

/*
 * One run: returns the seconds from first connect to last byte, or a
 * negative value on failure (message printed).
 */
static double run_once(Mode mode, int n, uint64_t size, const char *file,
                       bool *verified, double *cpu_self, double *cpu_other)
{
    Stream st[MAX_STREAMS];
    pthread_barrier_t start;
    uint8_t *src = NULL, *dst = NULL;
    uint64_t per = size / (uint64_t)n;
    double t0, t1 = 0, busy0, busy1, self0;
    int i, fd, started = 0;
    bool ok = true;

    *verified = false;
    memset(st, 0, sizeof(st));
    if (mode != MODE_HOT) {
        fd = open(file, O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "rawcopy: cannot open %s: %s\n", file,
                    strerror(errno));
            return -1;
        }
        /* Private, writable: exactly how mig2-vm maps --memory-file. */
        src = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE,
                   fd, 0);
        close(fd);
        if (src == MAP_FAILED) {
            fprintf(stderr, "rawcopy: cannot map %s: %s\n", file,
                    strerror(errno));
            return -1;
        }
        dst = fresh_region(size);
        if (!dst) {
            fprintf(stderr, "rawcopy: cannot map the destination: %s\n",
                    strerror(errno));
            munmap(src, (size_t)size);
            return -1;
        }
    }
    /* Senders and receivers (or copiers), plus this thread. */
    pthread_barrier_init(&start, NULL,
                         (unsigned)(mode == MODE_MEMCPY ? n : 2 * n) + 1);
    for (i = 0; i < n; i++) {
        Stream *s = &st[i];

        s->mode = mode;
        s->start = &start;
        s->listen_fd = -1;
        s->len = i == n - 1 ? size - per * (uint64_t)(n - 1) : per;
        if (src) {
            s->src = src + per * (uint64_t)i;
            s->dst = dst + per * (uint64_t)i;
        }
        if (mode != MODE_MEMCPY) {
            s->listen_fd = listen_any(&s->port);
            if (s->listen_fd < 0) {
                fprintf(stderr, "rawcopy: cannot listen: %s\n",
                        strerror(errno));
                ok = false;
                break;
            }
        }
    }
    for (i = 0; ok && i < n; i++) {
        Stream *s = &st[i];

        if (mode == MODE_MEMCPY) {
            if (pthread_create(&s->sender, NULL, memcpy_main, s) != 0) {
                ok = false;
                break;
            }
        } else {
            if (pthread_create(&s->receiver, NULL, receiver_main, s) != 0) {
                ok = false;
                break;
            }
            if (pthread_create(&s->sender, NULL, sender_main, s) != 0) {
                ok = false;
                break;
            }
        }
        started++;
    }
    if (!ok) {
        /*
         * A thread could not be created: the barrier would never open.
         * Give up without cleaning up the blocked threads.
         */
        fprintf(stderr, "rawcopy: cannot set up the streams\n");
        exit(1);
    }
    busy0 = machine_busy_s();
    self0 = self_cpu_s();
    t0 = now_s();
    pthread_barrier_wait(&start);
    for (i = 0; i < started; i++) {
        pthread_join(st[i].sender, NULL);
        if (mode != MODE_MEMCPY) {
            pthread_join(st[i].receiver, NULL);
        }
    }
    t1 = now_s();
    *cpu_self = self_cpu_s() - self0;
    busy1 = machine_busy_s();
    /* CPU time the rest of the machine used meanwhile (noise). */
    *cpu_other = busy0 < 0 || busy1 < 0 ? -1 : busy1 - busy0 - *cpu_self;
    if (*cpu_other < 0 && busy0 >= 0 && busy1 >= 0) {
        *cpu_other = 0;         /* clock-tick rounding */
    }
    for (i = 0; i < n; i++) {
        if (st[i].listen_fd >= 0) {
            close(st[i].listen_fd);
        }
        if (st[i].err[0]) {
            fprintf(stderr, "rawcopy: stream %d: %s\n", i, st[i].err);
            ok = false;
        } else if (st[i].received != st[i].len) {
            fprintf(stderr, "rawcopy: stream %d: %" PRIu64 " of %" PRIu64
                    " bytes\n", i, st[i].received, st[i].len);
            ok = false;
        }
    }
    pthread_barrier_destroy(&start);
    if (ok && src) {
        if (memcmp(src, dst, (size_t)size) != 0) {
            fprintf(stderr, "rawcopy: the destination differs from the "
                    "source\n");
            ok = false;
        } else {
            *verified = true;
        }
    }
    if (src) {
        munmap(src, (size_t)size);
        munmap(dst, (size_t)size);
    }
    return ok ? t1 - t0 : -1;
}

static void usage(FILE *out)
{
    fprintf(out,
"usage: rawcopy [--size SIZE] [--streams N[,N...]] [--file PATH] [--reps N]\n"
"               [--hot | --memcpy] [--json]\n"
"  --size SIZE      bytes to move, e.g. 1G, 256M (default 1G)\n"
"  --streams LIST   TCP streams (or memcpy threads), e.g. 2 or 1,2,4\n"
"                   (default 1,2,4)\n"
"  --file PATH      source data; created with random data when missing\n"
"                   (default: a temporary file, removed at exit)\n"
"  --reps N         runs per stream count (default 1)\n"
"  --hot            raw loopback TCP from a hot 1 MiB buffer instead\n"
"  --memcpy         the same copy without TCP (N memcpy threads)\n"
"  --json           one JSON object per run, one a line\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "size", required_argument, NULL, 's' },
        { "streams", required_argument, NULL, 'n' },
        { "file", required_argument, NULL, 'f' },
        { "reps", required_argument, NULL, 'r' },
        { "hot", no_argument, NULL, 'H' },
        { "memcpy", no_argument, NULL, 'M' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t size = 1ULL << 30;
    int streams[MAX_RUNS] = { 1, 2, 4 };
    int n_streams = 3, reps = 1, c, i, r, rc = 0;
    const char *file = NULL;
    char tmpl[] = "/tmp/rawcopy.XXXXXX";
    bool json = false, tmp_file = false;
    Mode mode = MODE_FILE;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!ram_parse_size(optarg, &size) || size == 0) {
                fprintf(stderr, "rawcopy: invalid --size '%s'\n", optarg);
                return 2;
            }
            break;
        case 'n':
            n_streams = parse_streams(optarg, streams);
            if (n_streams <= 0) {
                fprintf(stderr, "rawcopy: invalid --streams '%s' (1..%d, "
                        "comma-separated)\n", optarg, MAX_STREAMS);
                return 2;
            }
            break;
        case 'f':
            file = optarg;
            break;
        case 'r':
            reps = atoi(optarg);
            if (reps < 1) {
                fprintf(stderr, "rawcopy: invalid --reps '%s'\n", optarg);
                return 2;
            }
            break;
        case 'H':
            mode = MODE_HOT;
            break;
        case 'M':
            mode = MODE_MEMCPY;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (mode != MODE_HOT) {
        if (!file) {
            int fd = mkstemp(tmpl);

            if (fd < 0) {
                fprintf(stderr, "rawcopy: mkstemp: %s\n", strerror(errno));
                return 1;
            }
            close(fd);
            file = tmpl;
            tmp_file = true;
        }
        if (!make_file(file, size)) {
            if (tmp_file) {
                unlink(file);
            }
            return 1;
        }
    }
    if (!json) {
        printf("%-7s %7s %12s %10s %9s %8s %8s %s\n", "mode", "streams",
               "bytes", "seconds", "GiB/s", "cpu s", "other s", "verified");
    }
    for (i = 0; i < n_streams; i++) {
        for (r = 0; r < reps; r++) {
            bool verified;
            double cpu_self = 0, cpu_other = -1;
            double t = run_once(mode, streams[i], size, file, &verified,
                                &cpu_self, &cpu_other);
            double gibs = t > 0 ? (double)size / t / (double)(1ULL << 30) : 0;
            const char *v = mode == MODE_HOT ? "n/a"
                            : verified ? "yes" : "NO";

            if (t < 0) {
                rc = 1;
            }
            if (json) {
                printf("{\"mode\": \"%s\", \"streams\": %d, \"bytes\": %"
                       PRIu64 ", \"seconds\": %.6f, \"gib_per_s\": %.4f, "
                       "\"ok\": %s, \"verified\": %s, \"cpu_s\": %.3f, "
                       "\"other_cpu_s\": %.3f}\n",
                       mode_names[mode], streams[i], size, t < 0 ? 0 : t,
                       gibs, t < 0 ? "false" : "true",
                       verified ? "true" : "false", cpu_self, cpu_other);
            } else {
                printf("%-7s %7d %12" PRIu64 " %10.4f %9.3f %8.3f %8.3f %s\n",
                       mode_names[mode], streams[i], size, t < 0 ? 0 : t,
                       gibs, cpu_self, cpu_other, t < 0 ? "FAILED" : v);
            }
            fflush(stdout);
        }
    }
    if (tmp_file) {
        unlink(file);
    }
    return rc;
}
