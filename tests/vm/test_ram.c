/*
 * mig2-vm: guest RAM (dirty tracking, zero pages, sizes, file backing)
 * and migration addresses.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "channel.h"
#include "ram.h"

static void test_parse_size(void **state)
{
    uint64_t v;

    (void)state;
    assert_true(ram_parse_size("4096", &v));
    assert_int_equal(v, 4096);
    assert_true(ram_parse_size("256M", &v));
    assert_int_equal(v, 256ULL << 20);
    assert_true(ram_parse_size("1G", &v));
    assert_int_equal(v, 1ULL << 30);
    assert_true(ram_parse_size("2k", &v));
    assert_int_equal(v, 2048);
    assert_true(ram_parse_size("3MB", &v));
    assert_int_equal(v, 3ULL << 20);
    assert_false(ram_parse_size("", &v));
    assert_false(ram_parse_size("-1M", &v));
    assert_false(ram_parse_size("12Q", &v));
    assert_false(ram_parse_size("1M2", &v));
    assert_false(ram_parse_size("99999999999999999999", &v));
    assert_false(ram_parse_size("20000000000000T", &v));
}

static void test_dirty_tracking(void **state)
{
    RamBlock b;
    char *err = NULL;
    uint64_t *bits;
    uint64_t val = 0x1122334455667788ULL;

    (void)state;
    assert_true(ram_block_init(&b, "pc.ram", 130 * RAM_PAGE_SIZE, NULL, &err));
    assert_int_equal(b.n_pages, 130);
    assert_int_equal(b.dirty_words, 3);
    bits = calloc(b.dirty_words, sizeof(*bits));
    assert_int_equal(ram_count_dirty(&b), 0);

    /* A write straddling two pages dirties both. */
    ram_write(&b, 2 * RAM_PAGE_SIZE - 4, &val, sizeof(val));
    ram_write(&b, 129 * RAM_PAGE_SIZE, &val, sizeof(val));
    assert_int_equal(ram_count_dirty(&b), 3);
    assert_int_equal(ram_take_dirty(&b, bits), 3);
    assert_int_equal(bits[0], (1ULL << 1) | (1ULL << 2));
    assert_int_equal(bits[2], 1ULL << (129 - 128));
    assert_int_equal(ram_count_dirty(&b), 0);
    assert_memory_equal(b.host + 129 * RAM_PAGE_SIZE, &val, sizeof(val));

    /* Out-of-range writes are ignored, not clipped. */
    ram_write(&b, b.size - 4, &val, sizeof(val));
    assert_int_equal(ram_count_dirty(&b), 0);

    /* All dirty covers exactly n_pages bits. */
    ram_mark_all_dirty(&b);
    assert_int_equal(ram_count_dirty(&b), 130);
    assert_int_equal(ram_take_dirty(&b, bits), 130);
    assert_int_equal(bits[2], (1ULL << 2) - 1);
    free(bits);
    ram_block_destroy(&b);
}

static void test_zero_pages(void **state)
{
    RamBlock b;
    char *err = NULL;
    uint8_t page[RAM_PAGE_SIZE] = { 0 };

    (void)state;
    assert_true(ram_is_zero(page, sizeof(page)));
    page[RAM_PAGE_SIZE - 1] = 1;
    assert_false(ram_is_zero(page, sizeof(page)));
    page[RAM_PAGE_SIZE - 1] = 0;
    page[0] = 1;
    assert_false(ram_is_zero(page, sizeof(page)));

    assert_true(ram_block_init(&b, "r", 4 * RAM_PAGE_SIZE, NULL, &err));
    /* A page written by migration and then sent as zero is cleared. */
    memset(b.host + RAM_PAGE_SIZE, 0xab, RAM_PAGE_SIZE);
    ram_note_written(&b, RAM_PAGE_SIZE);
    ram_zero_page(&b, RAM_PAGE_SIZE);
    assert_true(ram_is_zero(b.host + RAM_PAGE_SIZE, RAM_PAGE_SIZE));
    ram_block_destroy(&b);
}

static void test_file_backed(void **state)
{
    char path[] = "/tmp/mig2-test-ram-XXXXXX";
    int fd = mkstemp(path);
    uint8_t buf[2 * RAM_PAGE_SIZE], check[2 * RAM_PAGE_SIZE];
    RamBlock b;
    char *err = NULL;
    size_t i;

    (void)state;
    assert_true(fd >= 0);
    for (i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 7 + 3);
    }
    assert_int_equal(write(fd, buf, sizeof(buf)), sizeof(buf));

    /* Smaller than the guest: refused with the file named. */
    assert_false(ram_block_init(&b, "pc.ram", 4 * RAM_PAGE_SIZE, path, &err));
    assert_non_null(strstr(err, path));
    free(err);
    err = NULL;

    assert_true(ram_block_init(&b, "pc.ram", 2 * RAM_PAGE_SIZE, path, &err));
    assert_true(b.file_backed);
    /* Mapping pages ahead of the zero check changes nothing they hold. */
    ram_map_range(&b, 0, 1);
    ram_map_range(&b, 1, 5);    /* beyond the block: ignored */
    ram_map_range(&b, 1, 0);    /* empty: ignored */
    assert_memory_equal(b.host, buf, sizeof(buf));
    assert_true(ram_prealloc(&b, &err));
    assert_memory_equal(b.host, buf, sizeof(buf));
    /* A zero page arriving for file-backed RAM must be written. */
    ram_zero_page(&b, 0);
    assert_true(ram_is_zero(b.host, RAM_PAGE_SIZE));
    /* Private mapping: the file is untouched by guest writes. */
    memset(b.host + RAM_PAGE_SIZE, 0, RAM_PAGE_SIZE);
    ram_block_destroy(&b);
    assert_int_equal(pread(fd, check, sizeof(check), 0), sizeof(check));
    assert_memory_equal(check, buf, sizeof(buf));
    close(fd);
    unlink(path);

    assert_false(ram_block_init(&b, "pc.ram", RAM_PAGE_SIZE,
                                "/nonexistent/ram", &err));
    assert_non_null(strstr(err, "/nonexistent/ram"));
    free(err);
    err = NULL;
    assert_false(ram_block_init(&b, "pc.ram", 100, NULL, &err));
    free(err);
}

/* How many of the @n pages at @p are in this process's page tables. */
static size_t pages_mapped(const uint8_t *p, size_t n)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    size_t i, mapped = 0;

    assert_true(fd >= 0);
    for (i = 0; i < n; i++) {
        uint64_t e;
        off_t at = (off_t)(((uintptr_t)p / RAM_PAGE_SIZE + i) * sizeof(e));

        assert_int_equal(pread(fd, &e, sizeof(e), at), sizeof(e));
        mapped += (e >> 63) & 1;            /* bit 63: present */
    }
    close(fd);
    return mapped;
}

/* The fault-around window in bytes, or the default when not readable. */
static long fault_around_bytes(void)
{
    FILE *f = fopen("/sys/kernel/debug/fault_around_bytes", "r");
    long v = RAM_FAULT_AROUND;

    if (f) {
        if (fscanf(f, "%ld", &v) != 1) {
            v = RAM_FAULT_AROUND;
        }
        fclose(f);
    }
    return v;
}

static void test_map_range(void **state)
{
    enum { PAGES = 256, FIRST = 16, LAST = 207 };
    char path[] = "/tmp/mig2-test-ram-XXXXXX";
    int fd = mkstemp(path);
    uint8_t *data = malloc(PAGES * RAM_PAGE_SIZE);
    size_t stride = RAM_FAULT_AROUND / RAM_PAGE_SIZE, i;
    RamBlock b;
    char *err = NULL;

    (void)state;
    assert_true(fd >= 0);
    assert_non_null(data);
    for (i = 0; i < PAGES * RAM_PAGE_SIZE; i++) {
        data[i] = (uint8_t)(i * 13 + 1);
    }
    assert_int_equal(write(fd, data, PAGES * RAM_PAGE_SIZE),
                     PAGES * RAM_PAGE_SIZE);

    /* File-backed: one load per fault-around window maps the range. */
    assert_true(ram_block_init(&b, "pc.ram", PAGES * RAM_PAGE_SIZE, path,
                               &err));
    assert_int_equal(pages_mapped(b.host, PAGES), 0);
    ram_map_range(&b, FIRST, LAST);
    assert_int_equal(pages_mapped(b.host + FIRST * RAM_PAGE_SIZE, 1), 1);
    assert_int_equal(pages_mapped(b.host + LAST * RAM_PAGE_SIZE, 1), 1);
    for (i = FIRST; i <= LAST; i += stride) {
        assert_int_equal(pages_mapped(b.host + i * RAM_PAGE_SIZE, 1), 1);
    }
    /*
     * Around each load the kernel maps what of the window it can (it skips
     * a page it cannot lock at once: 179-192 of these 192 were seen), so
     * the loads alone map 12 or 13 pages; most of the range is mapped.
     */
    if (fault_around_bytes() >= (long)RAM_FAULT_AROUND) {
        assert_true(pages_mapped(b.host + FIRST * RAM_PAGE_SIZE,
                                 LAST - FIRST + 1) >= (LAST - FIRST + 1) / 2);
    }
    /* Nothing far outside the range (windows are 64 KiB aligned). */
    assert_int_equal(pages_mapped(b.host + (LAST + stride + 1) *
                                      RAM_PAGE_SIZE,
                                  PAGES - LAST - stride - 1), 0);
    assert_memory_equal(b.host, data, PAGES * RAM_PAGE_SIZE);
    ram_block_destroy(&b);

    /* Anonymous: mapped too (the shared zero page), and still zero. */
    assert_true(ram_block_init(&b, "pc.ram", PAGES * RAM_PAGE_SIZE, NULL,
                               &err));
    ram_map_range(&b, FIRST, LAST);
    assert_int_equal(pages_mapped(b.host + FIRST * RAM_PAGE_SIZE,
                                  LAST - FIRST + 1), LAST - FIRST + 1);
    assert_true(ram_is_zero(b.host, PAGES * RAM_PAGE_SIZE));
    ram_block_destroy(&b);

    close(fd);
    unlink(path);
    free(data);
}

static void test_addr_uri(void **state)
{
    MigAddr a;
    char *err = NULL, *s;

    (void)state;
    assert_true(mig_addr_parse_uri("tcp:127.0.0.1:4444", &a, &err));
    assert_int_equal(a.kind, MIG_ADDR_TCP);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(a.port, "4444");
    assert_true(mig_addr_bidirectional(&a));
    s = mig_addr_to_string(&a);
    assert_string_equal(s, "tcp:127.0.0.1:4444");
    free(s);
    mig_addr_clear(&a);

    assert_true(mig_addr_parse_uri("tcp:[::1]:5", &a, &err));
    assert_string_equal(a.host, "::1");
    s = mig_addr_to_string(&a);
    assert_string_equal(s, "tcp:[::1]:5");
    free(s);
    mig_addr_clear(&a);

    assert_true(mig_addr_parse_uri("unix:/tmp/x.sock", &a, &err));
    assert_int_equal(a.kind, MIG_ADDR_UNIX);
    mig_addr_clear(&a);
    assert_true(mig_addr_parse_uri("exec:cat > f", &a, &err));
    assert_int_equal(a.kind, MIG_ADDR_EXEC);
    assert_string_equal(a.cmd, "cat > f");
    assert_false(mig_addr_bidirectional(&a));
    mig_addr_clear(&a);
    assert_true(mig_addr_parse_uri("file:/tmp/vm.mig", &a, &err));
    assert_int_equal(a.kind, MIG_ADDR_FILE);
    assert_false(mig_addr_bidirectional(&a));
    mig_addr_clear(&a);

    assert_false(mig_addr_parse_uri("tcp:nocolon", &a, &err));
    assert_non_null(strstr(err, "Invalid migration URI"));
    free(err);
    err = NULL;
    assert_false(mig_addr_parse_uri("rdma:1.2.3.4:5", &a, &err));
    free(err);
    err = NULL;
    assert_false(mig_addr_parse_uri("tcp:1.2.3.4:", &a, &err));
    free(err);
}

static void test_addr_json(void **state)
{
    json_object *o;
    MigAddr a;
    char *err = NULL;

    (void)state;
    o = json_tokener_parse("{\"transport\": \"socket\", \"type\": \"inet\", "
                           "\"host\": \"::1\", \"port\": \"7\"}");
    assert_true(mig_addr_from_json(o, &a, &err));
    assert_int_equal(a.kind, MIG_ADDR_TCP);
    assert_string_equal(a.host, "::1");
    mig_addr_clear(&a);
    json_object_put(o);

    o = json_tokener_parse("{\"transport\": \"socket\", \"type\": \"unix\", "
                           "\"path\": \"/tmp/s\"}");
    assert_true(mig_addr_from_json(o, &a, &err));
    assert_string_equal(a.path, "/tmp/s");
    mig_addr_clear(&a);
    json_object_put(o);

    o = json_tokener_parse("{\"transport\": \"socket\", \"type\": \"inet\", "
                           "\"host\": \"h\"}");
    assert_false(mig_addr_from_json(o, &a, &err));
    assert_string_equal(err, "Parameter 'addr.port' is missing");
    free(err);
    err = NULL;
    json_object_put(o);

    o = json_tokener_parse("{\"transport\": \"rdma\"}");
    assert_false(mig_addr_from_json(o, &a, &err));
    assert_non_null(strstr(err, "does not accept value 'rdma'"));
    free(err);
    err = NULL;
    json_object_put(o);

    assert_false(mig_addr_from_json(NULL, &a, &err));
    free(err);
}

/* @ip as a socket address, IPv4 or IPv6 as its text says. */
static struct sockaddr_storage sockaddr_of(const char *ip)
{
    struct sockaddr_storage ss = { 0 };
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;

    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &a6->sin6_addr), 1);
        a6->sin6_family = AF_INET6;
    }
    return ss;
}

/*
 * Which connections count as staying on this host, for
 * chan_tune_bulk_sender().
 */
static void test_same_host(void **state)
{
    static const struct {
        const char *local, *peer;
        bool same;
    } cases[] = {
        { "127.0.0.1", "127.0.0.1", true },
        { "127.0.0.1", "127.3.2.1", true },
        { "10.0.0.1", "127.0.0.1", true },
        { "10.0.0.1", "10.0.0.1", true },
        { "10.0.0.1", "10.0.0.2", false },
        { "192.168.1.5", "128.0.0.1", false },
        { "::1", "::1", true },
        { "::ffff:127.0.0.1", "::ffff:127.0.0.1", true },
        { "2001:db8::1", "2001:db8::1", true },
        { "2001:db8::1", "2001:db8::2", false },
        { "::ffff:10.0.0.1", "::ffff:10.0.0.2", false },
        { "fe80::1", "fe80::2", false },
    };
    struct sockaddr_storage l, p;
    struct sockaddr_un u = { .sun_family = AF_UNIX };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        l = sockaddr_of(cases[i].local);
        p = sockaddr_of(cases[i].peer);
        if (chan_same_host((struct sockaddr *)&l, (struct sockaddr *)&p) !=
            cases[i].same) {
            fail_msg("%s -> %s: expected %s", cases[i].local, cases[i].peer,
                     cases[i].same ? "same host" : "another host");
        }
    }
    /* Mixed families, and unix sockets (never tuned) are not. */
    l = sockaddr_of("127.0.0.1");
    p = sockaddr_of("::1");
    assert_false(chan_same_host((struct sockaddr *)&l,
                                (struct sockaddr *)&p));
    assert_false(chan_same_host((struct sockaddr *)&u,
                                (struct sockaddr *)&u));
}

/* What the kernel makes of SO_SNDBUF @v: twice, capped at wmem_max. */
static int sndbuf_effective(int v)
{
    FILE *f = fopen("/proc/sys/net/core/wmem_max", "r");
    int max = v;

    if (f) {
        assert_int_equal(fscanf(f, "%d", &max), 1);
        fclose(f);
    }
    return 2 * (v < max ? v : max);
}

/*
 * A bulk sender's connection over loopback gets the fixed send buffer;
 * other connections, and the destination's end, keep the kernel's one.
 */
static void test_local_sndbuf(void **state)
{
    MigAddr a = { 0 };
    Chan c;
    char *err = NULL, *bound = NULL;
    int lfd, afd, v = 0;
    socklen_t vl = sizeof(v);

    (void)state;
    assert_true(mig_addr_parse_uri("tcp:127.0.0.1:0", &a, &err));
    lfd = chan_listen(&a, &bound, &err);
    assert_true(lfd >= 0);
    mig_addr_clear(&a);
    assert_true(mig_addr_parse_uri(bound, &a, &err));
    assert_true(chan_open_outgoing(&c, &a, -1, 5000, &err));
    assert_int_equal(getsockopt(c.wfd, SOL_SOCKET, SO_SNDBUF, &v, &vl), 0);
    assert_int_not_equal(v, sndbuf_effective(CHAN_LOCAL_SNDBUF));
    assert_true(chan_tune_bulk_sender(&c));
    assert_int_equal(getsockopt(c.wfd, SOL_SOCKET, SO_SNDBUF, &v, &vl), 0);
    assert_int_equal(v, sndbuf_effective(CHAN_LOCAL_SNDBUF));

    afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    v = 0;
    assert_int_equal(getsockopt(afd, SOL_SOCKET, SO_SNDBUF, &v, &vl), 0);
    assert_int_not_equal(v, sndbuf_effective(CHAN_LOCAL_SNDBUF));
    close(afd);
    chan_close(&c);
    close(lfd);
    mig_addr_clear(&a);
    free(bound);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_dirty_tracking),
        cmocka_unit_test(test_zero_pages),
        cmocka_unit_test(test_file_backed),
        cmocka_unit_test(test_map_range),
        cmocka_unit_test(test_addr_uri),
        cmocka_unit_test(test_addr_json),
        cmocka_unit_test(test_same_host),
        cmocka_unit_test(test_local_sndbuf),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
