/*
 * libFuzzer target qmp: mig2-vm's QMP server (vm/qmp.c: JSON framing,
 * negotiation, request checks, dispatch) with mig2-vm's real command table
 * (vm/commands.c: argument checks, address parsing, migration parameters,
 * run state), fed what a client writes on the control socket.
 *
 * Input: byte 0 bit 0 set sends {"execute": "qmp_capabilities"} first, so
 * mutations need not keep the negotiation intact; the rest is written as
 * is, then the client half-closes.  The server runs in this process on a
 * unix socket in a private temporary directory; each input is one new
 * client connection, served by qmp_poll() until the server closes it,
 * with every reply read and dropped.  A server that never lets go of the
 * client is reported as a hang (libFuzzer's -timeout).
 *
 * Containment.  Most commands only touch the in-process VM object (run
 * state, parameters, queries) and are fuzzed as they are.  `quit` only
 * sets a flag, reset before every input.  `migrate` and
 * `migrate-incoming` would connect to, or listen on, whatever address the
 * input names, or run an exec: command: the two functions that start a
 * migration, migration_start_outgoing() and migration_start_incoming(),
 * are replaced at link time (ld --wrap, see meson.build) by stubs that
 * format the parsed address and refuse.  Everything before them --
 * argument checks, parse_target(), the uri and address parsers in
 * vm/channel.c -- is the real code.  Before the first input the harness
 * checks that the stub is in place and aborts if it is not.  A parse-only
 * entry point does not exist in vm/, and a fake command table would not
 * fuzz the real handlers.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "fuzzvm.h"
#include "migration.h"
#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

bool __wrap_migration_start_outgoing(Migration *m, const MigAddr *addr,
                                     MigChannelType type, char **errp);
bool __wrap_migration_start_incoming(Migration *m, const MigAddr *addr,
                                     MigChannelType type, bool exit_on_error,
                                     char **errp);

static Vm vm;
static Qmp *server;
static char dir[64];
static char path[108];
static unsigned long stub_calls;

/* ---- the link-time stubs: nothing leaves the process ---- */

static bool refuse(const MigAddr *addr, char **errp)
{
    char *where = mig_addr_to_string(addr);

    stub_calls++;
    FUZZ_CHECK(where != NULL);
    free(where);
    (void)mig_addr_bidirectional(addr);
    *errp = strdup("migration is disabled in the fuzzer");
    return false;
}

bool __wrap_migration_start_outgoing(Migration *m, const MigAddr *addr,
                                     MigChannelType type, char **errp)
{
    (void)m;
    (void)type;
    return refuse(addr, errp);
}

bool __wrap_migration_start_incoming(Migration *m, const MigAddr *addr,
                                     MigChannelType type, bool exit_on_error,
                                     char **errp)
{
    (void)m;
    (void)type;
    (void)exit_on_error;
    return refuse(addr, errp);
}

/* ---- one client ---- */

static const char negotiate[] = "{\"execute\": \"qmp_capabilities\"}\r\n";

static int client_connect(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    FUZZ_SETUP(fd >= 0);
    strcpy(sa.sun_path, path);
    FUZZ_SETUP(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    return fd;
}

/* Read and drop replies; true once the server closed the connection. */
static bool client_drain(int fd)
{
    char buf[65536];

    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);

        if (n > 0) {
            continue;
        }
        if (n == 0) {
            return true;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return false;
        }
        return true;    /* reset: the server dropped us */
    }
}

static void client_write(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            /* The socket is full: let the server read some. */
            FUZZ_CHECK(qmp_poll(server, 10));
            if (client_drain(fd)) {
                return;
            }
        } else {
            return;     /* the server dropped us (input too large) */
        }
    }
}

/* Run one client session: returns once the server has closed it. */
static void session(const uint8_t *p, size_t len, bool negotiated)
{
    int fd = client_connect(), rounds;

    FUZZ_CHECK(qmp_poll(server, 0));  /* accept and greet */
    if (negotiated) {
        client_write(fd, (const uint8_t *)negotiate, strlen(negotiate));
    }
    client_write(fd, p, len);
    shutdown(fd, SHUT_WR);
    for (rounds = 0;; rounds++) {
        /* Ten seconds without letting go is a hang; libFuzzer says so. */
        FUZZ_CHECK(rounds < 10000);
        FUZZ_CHECK(qmp_poll(server, rounds < 100 ? 0 : 1));
        if (client_drain(fd)) {
            break;
        }
    }
    close(fd);
    /* The server side is gone too: poll until the slot is free. */
    FUZZ_CHECK(qmp_poll(server, 0));
}

static void reset_vm(void)
{
    migration_free(vm.mig);
    vm.mig = migration_new(&vm);
    FUZZ_SETUP(vm.mig);
    vm_set_state(&vm, RUN_STATE_RUNNING);
    vm.autostart = true;
    atomic_store(&vm.quit, false);
}

/* At exit: the socket and its directory (not after a crash). */
static void cleanup(void)
{
    vm.qmp = NULL;
    qmp_free(server);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char probe[] =
        "{\"execute\": \"migrate\", \"arguments\": {\"uri\": "
        "\"unix:/nonexistent/mig2-fuzz\"}}\r\n"
        "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": "
        "\"unix:/nonexistent/mig2-fuzz\"}}\r\n";
    char *err = NULL;

    (void)argc;
    (void)argv;
    strcpy(dir, "/tmp/mig2-fuzz-qmp.XXXXXX");
    FUZZ_SETUP(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/qmp.sock", dir);
    fuzz_vm_init(&vm);
    server = qmp_new(path, vm_commands(), &vm, "0.1.0", &err);
    if (!server) {
        fprintf(stderr, "qmp_new: %s\n", err ? err : "?");
    }
    FUZZ_SETUP(server);
    vm.qmp = server;

    /* Containment: both migration starters must be the stubs. */
    session((const uint8_t *)probe, strlen(probe), true);
    if (stub_calls != 2) {
        fprintf(stderr, "fuzz_qmp: migration start is not stubbed out "
                        "(%lu stub calls); refusing to fuzz\n", stub_calls);
        abort();
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    reset_vm();
    session(data + 1, size - 1, data[0] & 1);
    return 0;
}
