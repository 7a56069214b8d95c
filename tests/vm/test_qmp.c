/*
 * Tests for the QMP-compatible control socket (vm/qmp.c): a server on a
 * temporary unix socket with a small fake command table, driven by client
 * sockets in the same process (qmp_poll() runs between writes and reads).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "qmp.h"

/* How long a helper waits for the server before failing the test. */
#define WAIT_MS 3000

typedef struct Fixture {
    Qmp *q;
    char dir[64];
    char path[108];
    int magic;              /* handlers get the fixture as opaque */
} Fixture;

/* ---------------------------------------------------------------- */
/* Fake command table                                                */
/* ---------------------------------------------------------------- */

static json_object *cmd_echo(json_object *args, void *opaque, QmpError *err)
{
    (void)opaque;
    (void)err;
    return json_object_get(args);
}

static json_object *cmd_fail(json_object *args, void *opaque, QmpError *err)
{
    (void)args;
    (void)opaque;
    qmp_error_set(err, QMP_ERROR_GENERIC, "fake failure %d", 42);
    /* A reply next to an error must be dropped, not leaked (ASan). */
    return json_object_new_object();
}

static json_object *cmd_noargs(json_object *args, void *opaque,
                               QmpError *err)
{
    (void)args;
    (void)opaque;
    (void)err;
    return NULL;
}

static json_object *cmd_opaque(json_object *args, void *opaque,
                               QmpError *err)
{
    Fixture *f = opaque;

    (void)args;
    (void)err;
    return json_object_new_int(f->magic);
}

static json_object *cmd_typed(json_object *args, void *opaque, QmpError *err)
{
    const char *name = NULL;
    int64_t count = -1;
    uint64_t size = 0;
    bool flag = false, has_count, has_flag, has_size;
    json_object *ret;

    (void)opaque;
    if (!qmp_arg_str(args, "name", true, &name, err) ||
        !qmp_arg_int(args, "count", false, &count, &has_count, err) ||
        !qmp_arg_bool(args, "flag", false, &flag, &has_flag, err) ||
        !qmp_arg_uint(args, "size", false, &size, &has_size, err)) {
        return NULL;
    }
    ret = json_object_new_object();
    json_object_object_add(ret, "name", json_object_new_string(name));
    if (has_count) {
        json_object_object_add(ret, "count", json_object_new_int64(count));
    }
    if (has_flag) {
        json_object_object_add(ret, "flag", json_object_new_boolean(flag));
    }
    if (has_size) {
        json_object_object_add(ret, "size", json_object_new_uint64(size));
    }
    return ret;
}

/* Emits an event from inside a handler (as "stop" emits STOP). */
static json_object *cmd_emit(json_object *args, void *opaque, QmpError *err)
{
    Fixture *f = opaque;

    (void)args;
    (void)err;
    qmp_emit_event(f->q, "TEST_EMITTED", NULL);
    return json_object_new_string("after");
}

static json_object *cmd_big(json_object *args, void *opaque, QmpError *err)
{
    int64_t size = 0;
    json_object *ret;
    char *s;

    (void)opaque;
    if (!qmp_arg_int(args, "size", true, &size, NULL, err)) {
        return NULL;
    }
    s = malloc((size_t)size + 1);
    assert_non_null(s);
    memset(s, 'b', (size_t)size);
    s[size] = '\0';
    ret = json_object_new_string(s);
    free(s);
    return ret;
}

static const char *const echo_args[] = { "a", "b", "s", "n", NULL };
static const char *const typed_args[] = {
    "name", "count", "flag", "size", NULL,
};
static const char *const big_args[] = { "size", NULL };

static const QmpCommand test_cmds[] = {
    { "echo", cmd_echo, echo_args },
    { "fail", cmd_fail, NULL },
    { "noargs", cmd_noargs, NULL },
    { "opaque", cmd_opaque, NULL },
    { "typed", cmd_typed, typed_args },
    { "emit", cmd_emit, NULL },
    { "big", cmd_big, big_args },
    { NULL, NULL, NULL },
};

/* ---------------------------------------------------------------- */
/* Fixture and client helpers                                        */
/* ---------------------------------------------------------------- */

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    char *err = NULL;

    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_qmp.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/qmp.sock", f->dir);
    f->magic = 4242;
    f->q = qmp_new(f->path, test_cmds, f, "0.1.0", &err);
    if (!f->q) {
        fail_msg("qmp_new: %s", err);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    struct stat st;

    qmp_free(f->q);
    /* qmp_free() removes the socket it created. */
    assert_int_equal(lstat(f->path, &st), -1);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct Client {
    int fd;
    bool eof;
    char *buf;              /* received bytes not yet returned */
    size_t len, cap;
} Client;

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static Client *client_new(Fixture *f)
{
    Client *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    c->fd = connect_unix(f->path);
    assert_true(c->fd >= 0);
    assert_int_equal(fcntl(c->fd, F_SETFL, O_NONBLOCK), 0);
    /* Let the server accept (and greet) before the next connect. */
    assert_true(qmp_poll(f->q, 0));
    return c;
}

static void client_free(Client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c->buf);
    free(c);
}

/*
 * Take the raw next line (without its "\r\n", which QEMU sends and so
 * must we), or NULL on EOF or timeout.
 */
static char *client_line(Fixture *f, Client *c, int wait_ms)
{
    int64_t deadline = now_ms() + wait_ms;

    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        ssize_t n;

        if (nl) {
            size_t l = (size_t)(nl - c->buf);
            char *line;

            assert_true(l > 0 && c->buf[l - 1] == '\r');
            line = malloc(l);
            assert_non_null(line);
            memcpy(line, c->buf, l - 1);
            line[l - 1] = '\0';
            memmove(c->buf, nl + 1, c->len - l - 1);
            c->len -= l + 1;
            return line;
        }
        if (c->eof || now_ms() > deadline) {
            return NULL;
        }
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 65536;
            c->buf = realloc(c->buf, c->cap);
            assert_non_null(c->buf);
        }
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->eof = true;
        } else {
            assert_true(qmp_poll(f->q, 5));
        }
    }
}

/* The next message, parsed; NULL on EOF or timeout. */
static json_object *client_msg(Fixture *f, Client *c)
{
    char *line = client_line(f, c, WAIT_MS);
    json_object *o;

    if (!line) {
        return NULL;
    }
    o = json_tokener_parse(line);
    if (!o) {
        fail_msg("server sent invalid JSON: %s", line);
    }
    free(line);
    return o;
}

/* Nothing arrives within @wait_ms (the server is polled meanwhile). */
static void client_expect_silence(Fixture *f, Client *c, int wait_ms)
{
    char *line = client_line(f, c, wait_ms);

    if (line) {
        fail_msg("unexpected message: %s", line);
    }
    assert_false(c->eof);
}

/* Send @len bytes, polling the server whenever the socket is full. */
static void client_write(Fixture *f, Client *c, const void *p, size_t len)
{
    const char *s = p;

    while (len) {
        ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);

        if (n > 0) {
            s += n;
            len -= (size_t)n;
        } else {
            assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
            assert_true(qmp_poll(f->q, 5));
        }
    }
}

static void client_puts(Fixture *f, Client *c, const char *s)
{
    client_write(f, c, s, strlen(s));
}

/* Send @req and return the next message (the reply: no events here). */
static json_object *client_cmd(Fixture *f, Client *c, const char *req)
{
    json_object *rsp;

    client_puts(f, c, req);
    rsp = client_msg(f, c);
    if (!rsp) {
        fail_msg("no reply to %s", req);
    }
    return rsp;
}

static json_object *member(json_object *o, const char *key)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(o, key, &v)) {
        fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
    }
    return v;
}

/* @rsp is {"return": ...}; returns the value (owned by @rsp). */
static json_object *assert_return(json_object *rsp)
{
    json_object *e;

    if (json_object_object_get_ex(rsp, "error", &e)) {
        fail_msg("unexpected error: %s", json_object_to_json_string(rsp));
    }
    return member(rsp, "return");
}

/* @rsp is an error of class @cls with exactly @desc (or any if NULL). */
static void assert_error(json_object *rsp, const char *cls, const char *desc)
{
    json_object *e = member(rsp, "error");

    assert_false(json_object_object_get_ex(rsp, "return", NULL));
    assert_string_equal(json_object_get_string(member(e, "class")), cls);
    if (desc) {
        assert_string_equal(json_object_get_string(member(e, "desc")), desc);
    }
}

/* Send @req, expect an error @cls/@desc, and free the reply. */
static void expect_error(Fixture *f, Client *c, const char *req,
                         const char *cls, const char *desc)
{
    json_object *rsp = client_cmd(f, c, req);

    assert_error(rsp, cls, desc);
    json_object_put(rsp);
}

static void expect_empty_return(Fixture *f, Client *c, const char *req)
{
    json_object *rsp = client_cmd(f, c, req);
    json_object *ret = assert_return(rsp);

    assert_true(json_object_is_type(ret, json_type_object));
    assert_int_equal(json_object_object_length(ret), 0);
    json_object_put(rsp);
}

/* Read the greeting and negotiate capabilities. */
static void client_negotiate(Fixture *f, Client *c)
{
    json_object *greeting = client_msg(f, c);

    assert_non_null(greeting);
    member(greeting, "QMP");
    json_object_put(greeting);
    expect_empty_return(f, c, "{\"execute\": \"qmp_capabilities\"}\n");
}

static Client *client_ready(Fixture *f)
{
    Client *c = client_new(f);

    client_negotiate(f, c);
    return c;
}

/* ---------------------------------------------------------------- */
/* Greeting and capabilities negotiation                             */
/* ---------------------------------------------------------------- */

static void test_greeting(void **state)
{
    Fixture *f = *state;
    Client *c = client_new(f);
    char *line = client_line(f, c, WAIT_MS);
    json_object *g, *qmp, *ver, *triple, *caps;

    assert_non_null(line);
    g = json_tokener_parse(line);
    assert_non_null(g);
    assert_int_equal(json_object_object_length(g), 1);
    qmp = member(g, "QMP");
    assert_int_equal(json_object_object_length(qmp), 2);
    ver = member(qmp, "version");
    triple = member(ver, "qemu");
    assert_int_equal(json_object_get_int(member(triple, "major")), 0);
    assert_int_equal(json_object_get_int(member(triple, "minor")), 1);
    assert_int_equal(json_object_get_int(member(triple, "micro")), 0);
    assert_true(json_object_is_type(member(triple, "micro"), json_type_int));
    assert_string_equal(json_object_get_string(member(ver, "package")),
                        "mig2-vm");
    caps = member(qmp, "capabilities");
    assert_true(json_object_is_type(caps, json_type_array));
    /* No out-of-band support, so nothing is offered. */
    assert_int_equal(json_object_array_length(caps), 0);
    /* QEMU's spacing, one line. */
    assert_non_null(strstr(line, "{\"QMP\": {\"version\": {\"qemu\": {"));
    free(line);
    json_object_put(g);
    client_free(c);
}

static void test_commands_before_negotiation(void **state)
{
    Fixture *f = *state;
    Client *c = client_new(f);
    json_object *rsp;

    json_object_put(client_msg(f, c));
    /* Existing and unknown commands alike: QEMU's rewording. */
    expect_error(f, c, "{\"execute\": \"echo\"}", "CommandNotFound",
                 "Expecting capabilities negotiation with "
                 "'qmp_capabilities'");
    rsp = client_cmd(f, c, "{\"execute\": \"no-such\", \"id\": 7}");
    assert_error(rsp, "CommandNotFound",
                 "Expecting capabilities negotiation with "
                 "'qmp_capabilities'");
    assert_int_equal(json_object_get_int(member(rsp, "id")), 7);
    json_object_put(rsp);
    /* Built-ins need negotiation too. */
    expect_error(f, c, "{\"execute\": \"query-version\"}",
                 "CommandNotFound", NULL);
    /* Structural errors keep their own text. */
    expect_error(f, c, "[]", "GenericError",
                 "QMP input must be a JSON object");
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\", "
                 "\"arguments\": {\"x\": 1}}",
                 "GenericError", "Parameter 'x' is unexpected");

    expect_empty_return(f, c, "{\"execute\": \"qmp_capabilities\"}");
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\"}",
                 "CommandNotFound",
                 "Capabilities negotiation is already complete, command "
                 "ignored");
    rsp = client_cmd(f, c, "{\"execute\": \"opaque\"}");
    assert_int_equal(json_object_get_int(assert_return(rsp)), 4242);
    json_object_put(rsp);
    client_free(c);
}

static void test_capabilities_enable(void **state)
{
    Fixture *f = *state;
    Client *c = client_new(f);

    json_object_put(client_msg(f, c));
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\", "
                 "\"arguments\": {\"enable\": [\"oob\"]}}",
                 "GenericError", "Capability oob not available");
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\", "
                 "\"arguments\": {\"enable\": [\"oob\", \"oob\"]}}",
                 "GenericError", "Capability oob, oob not available");
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\", "
                 "\"arguments\": {\"enable\": [\"fast\"]}}",
                 "GenericError",
                 "Parameter 'null' does not accept value 'fast'");
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\", "
                 "\"arguments\": {\"enable\": [1]}}",
                 "GenericError",
                 "Invalid parameter type for 'enable[0]', expected: "
                 "string");
    expect_error(f, c, "{\"execute\": \"qmp_capabilities\", "
                 "\"arguments\": {\"enable\": \"oob\"}}",
                 "GenericError",
                 "Invalid parameter type for 'enable', expected: array");
    /* Still negotiating after the failures. */
    expect_error(f, c, "{\"execute\": \"noargs\"}", "CommandNotFound",
                 NULL);
    expect_empty_return(f, c, "{\"execute\": \"qmp_capabilities\", "
                        "\"arguments\": {\"enable\": []}}");
    expect_empty_return(f, c, "{\"execute\": \"noargs\"}");
    client_free(c);
}

/* ---------------------------------------------------------------- */
/* Commands, ids and errors                                          */
/* ---------------------------------------------------------------- */

static void test_command_not_found(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);

    expect_error(f, c, "{\"execute\": \"nope\"}", "CommandNotFound",
                 "The command nope has not been found");
    expect_error(f, c, "{\"execute\": \"\"}", "CommandNotFound",
                 "The command  has not been found");
    client_free(c);
}

static void test_builtin_queries(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    static const char *const want[] = {
        "qmp_capabilities", "query-commands", "query-version", "echo",
        "fail", "noargs", "opaque", "typed", "emit", "big", NULL,
    };
    json_object *rsp, *list, *ret;
    size_t i, j, n;

    rsp = client_cmd(f, c, "{\"execute\": \"query-commands\"}");
    list = assert_return(rsp);
    n = json_object_array_length(list);
    assert_int_equal(n, 10);
    for (i = 0; want[i]; i++) {
        bool found = false;

        for (j = 0; j < n; j++) {
            json_object *e = json_object_array_get_idx(list, j);

            if (!strcmp(json_object_get_string(member(e, "name")),
                        want[i])) {
                found = true;
            }
        }
        if (!found) {
            fail_msg("%s missing from query-commands", want[i]);
        }
    }
    json_object_put(rsp);

    rsp = client_cmd(f, c, "{\"execute\": \"query-version\"}");
    ret = assert_return(rsp);
    assert_int_equal(json_object_get_int(member(member(ret, "qemu"),
                                                "minor")), 1);
    assert_string_equal(json_object_get_string(member(ret, "package")),
                        "mig2-vm");
    json_object_put(rsp);

    expect_error(f, c, "{\"execute\": \"query-version\", "
                 "\"arguments\": {\"verbose\": true}}",
                 "GenericError", "Parameter 'verbose' is unexpected");
    client_free(c);
}

static void test_echo_and_id(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    json_object *rsp, *ret, *id;

    rsp = client_cmd(f, c, "{\"execute\": \"echo\", \"arguments\": "
                     "{\"a\": 1, \"s\": \"x/y \\\"q\\\"\"}, \"id\": 5}");
    ret = assert_return(rsp);
    assert_int_equal(json_object_get_int(member(ret, "a")), 1);
    assert_string_equal(json_object_get_string(member(ret, "s")),
                        "x/y \"q\"");
    assert_int_equal(json_object_get_int(member(rsp, "id")), 5);
    json_object_put(rsp);

    /* Any JSON value is a valid id and comes back unchanged. */
    rsp = client_cmd(f, c, "{\"id\": {\"tag\": [1, \"two\"]}, "
                     "\"execute\": \"noargs\"}");
    id = member(rsp, "id");
    assert_string_equal(json_object_to_json_string_ext(
                            id, JSON_C_TO_STRING_PLAIN),
                        "{\"tag\":[1,\"two\"]}");
    json_object_put(rsp);

    rsp = client_cmd(f, c, "{\"execute\": \"noargs\", \"id\": \"abc\"}");
    assert_string_equal(json_object_get_string(member(rsp, "id")), "abc");
    json_object_put(rsp);

    rsp = client_cmd(f, c, "{\"execute\": \"noargs\", \"id\": null}");
    assert_true(json_object_object_get_ex(rsp, "id", &id));
    assert_null(id);
    json_object_put(rsp);

    /* No id sent, none returned. */
    rsp = client_cmd(f, c, "{\"execute\": \"noargs\"}");
    assert_false(json_object_object_get_ex(rsp, "id", NULL));
    json_object_put(rsp);
    client_free(c);
}

static void test_reply_format(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    char *line;

    /* Exactly QEMU's layout, so line-oriented scripts keep working. */
    client_puts(f, c, "{\"execute\": \"noargs\", \"id\": 1}");
    line = client_line(f, c, WAIT_MS);
    assert_non_null(line);
    assert_string_equal(line, "{\"return\": {}, \"id\": 1}");
    free(line);

    client_puts(f, c, "{\"execute\": \"echo\", \"arguments\": "
                "{\"a\": [1, 2], \"b\": {\"p\": \"/tmp/x\"}}}");
    line = client_line(f, c, WAIT_MS);
    assert_non_null(line);
    assert_string_equal(line, "{\"return\": {\"a\": [1, 2], \"b\": "
                        "{\"p\": \"/tmp/x\"}}}");
    free(line);

    client_puts(f, c, "{\"execute\": \"nope\", \"id\": \"x\"}");
    line = client_line(f, c, WAIT_MS);
    assert_non_null(line);
    assert_string_equal(line, "{\"id\": \"x\", \"error\": {\"class\": "
                        "\"CommandNotFound\", \"desc\": \"The command nope "
                        "has not been found\"}}");
    free(line);
    client_free(c);
}

static void test_id_on_errors(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    json_object *rsp;

    rsp = client_cmd(f, c, "{\"execute\": \"nope\", \"id\": 1}");
    assert_error(rsp, "CommandNotFound", NULL);
    assert_int_equal(json_object_get_int(member(rsp, "id")), 1);
    json_object_put(rsp);

    /* QEMU echoes the id even when the request itself is malformed. */
    rsp = client_cmd(f, c, "{\"id\": 2, \"execute\": \"noargs\", "
                     "\"bogus\": 0}");
    assert_error(rsp, "GenericError",
                 "QMP input member 'bogus' is unexpected");
    assert_int_equal(json_object_get_int(member(rsp, "id")), 2);
    json_object_put(rsp);

    rsp = client_cmd(f, c, "{\"execute\": \"fail\", \"id\": 3}");
    assert_error(rsp, "GenericError", "fake failure 42");
    assert_int_equal(json_object_get_int(member(rsp, "id")), 3);
    json_object_put(rsp);

    /* A parse error has no id: the request could not be read. */
    rsp = client_cmd(f, c, "{\"id\": 4, \"execute\" \"x\"}\n");
    assert_error(rsp, "GenericError", NULL);
    assert_false(json_object_object_get_ex(rsp, "id", NULL));
    json_object_put(rsp);
    client_free(c);
}

static void test_malformed_json_recovers(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    json_object *rsp, *e;

    /* Bad line then a good one, in one write. */
    client_puts(f, c, "{\"execute\": }\n"
                "{\"execute\": \"echo\", \"arguments\": {\"n\": 1}}\n");
    rsp = client_msg(f, c);
    assert_non_null(rsp);
    assert_error(rsp, "GenericError", NULL);
    e = member(rsp, "error");
    assert_true(strncmp(json_object_get_string(member(e, "desc")),
                        "JSON parse error, ", 18) == 0);
    json_object_put(rsp);
    rsp = client_msg(f, c);
    assert_non_null(rsp);
    assert_int_equal(json_object_get_int(member(assert_return(rsp), "n")),
                     1);
    json_object_put(rsp);

    /* In separate writes, with garbage that is not even JSON. */
    expect_error(f, c, "\xff\xfe garbage\n", "GenericError", NULL);
    expect_error(f, c, "{\"a\" 1}\n", "GenericError", NULL);
    expect_error(f, c, "{\"execute\": \"noargs\"]\n", "GenericError", NULL);
    expect_error(f, c, "}\n", "GenericError", NULL);
    expect_empty_return(f, c, "{\"execute\": \"noargs\"}");

    /* Invalid UTF-8 inside a string is refused, not echoed back. */
    expect_error(f, c, "{\"execute\": \"echo\", \"arguments\": "
                 "{\"s\": \"\xc3\x28\"}}\n", "GenericError", NULL);
    expect_empty_return(f, c, "{\"execute\": \"noargs\"}");
    client_free(c);
}

static void test_single_quotes(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    json_object *rsp;

    /* QEMU's JSON extension, used by its own test scripts. */
    rsp = client_cmd(f, c, "{'execute': 'echo', 'arguments': {'s': 'q'}, "
                     "'id': 'sq'}");
    assert_string_equal(json_object_get_string(member(assert_return(rsp),
                                                      "s")), "q");
    assert_string_equal(json_object_get_string(member(rsp, "id")), "sq");
    json_object_put(rsp);
    client_free(c);
}

static void test_split_across_writes(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    const char *req = "{\"execute\": \"echo\", \"arguments\": "
                      "{\"s\": \"split\", \"n\": 12345}, \"id\": 9}";
    json_object *rsp;
    size_t i;

    /* One byte per write, the server polled between them. */
    for (i = 0; req[i]; i++) {
        client_write(f, c, &req[i], 1);
        assert_true(qmp_poll(f->q, 0));
        if (req[i + 1]) {
            client_expect_silence(f, c, 0);
        }
    }
    rsp = client_msg(f, c);
    assert_non_null(rsp);
    assert_int_equal(json_object_get_int(member(assert_return(rsp), "n")),
                     12345);
    assert_int_equal(json_object_get_int(member(rsp, "id")), 9);
    json_object_put(rsp);

    /* A number split in the middle. */
    client_puts(f, c, "{\"execute\": \"echo\", \"arguments\": {\"n\": 12");
    assert_true(qmp_poll(f->q, 0));
    client_puts(f, c, "34}}");
    rsp = client_msg(f, c);
    assert_non_null(rsp);
    assert_int_equal(json_object_get_int(member(assert_return(rsp), "n")),
                     1234);
    json_object_put(rsp);
    client_free(c);
}

static void test_several_per_write(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    int i;

    /* No separators at all, then mixed whitespace. */
    client_puts(f, c, "{\"execute\":\"noargs\",\"id\":0}"
                "{\"execute\":\"noargs\",\"id\":1}"
                "{\"execute\":\"noargs\",\"id\":2} \r\n\t"
                "{\"execute\":\"noargs\",\"id\":3}\n\n"
                "{\"execute\":\"noargs\",\"id\":4}\n");
    for (i = 0; i < 5; i++) {
        json_object *rsp = client_msg(f, c);

        assert_non_null(rsp);
        assert_return(rsp);
        assert_int_equal(json_object_get_int(member(rsp, "id")), i);
        json_object_put(rsp);
    }
    client_free(c);
}

static void test_non_object_input(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    static const char *const inputs[] = {
        "[1, 2]", "42\n", "\"execute\"", "null\n", "true\n", "[]", NULL,
    };
    size_t i;

    for (i = 0; inputs[i]; i++) {
        json_object *rsp = client_cmd(f, c, inputs[i]);

        assert_error(rsp, "GenericError", "QMP input must be a JSON object");
        assert_false(json_object_object_get_ex(rsp, "id", NULL));
        json_object_put(rsp);
    }
    expect_empty_return(f, c, "{\"execute\": \"noargs\"}");
    client_free(c);
}

static void test_bad_request_members(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);

    expect_error(f, c, "{\"execute\": 1}", "GenericError",
                 "QMP input member 'execute' must be a string");
    expect_error(f, c, "{\"execute\": \"echo\", \"arguments\": [1]}",
                 "GenericError",
                 "QMP input member 'arguments' must be an object");
    expect_error(f, c, "{\"execute\": \"echo\", \"arguments\": null}",
                 "GenericError",
                 "QMP input member 'arguments' must be an object");
    expect_error(f, c, "{\"execute\": \"noargs\", \"extra\": 1}",
                 "GenericError", "QMP input member 'extra' is unexpected");
    /* exec-oob needs the oob capability, which is never offered. */
    expect_error(f, c, "{\"exec-oob\": \"noargs\"}", "GenericError",
                 "QMP input member 'exec-oob' is unexpected");
    expect_error(f, c, "{\"arguments\": {}}", "GenericError",
                 "QMP input lacks member 'execute'");
    expect_error(f, c, "{}", "GenericError",
                 "QMP input lacks member 'execute'");
    client_free(c);
}

static void test_unexpected_argument(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);

    expect_error(f, c, "{\"execute\": \"echo\", \"arguments\": "
                 "{\"a\": 1, \"zzz\": 2}}",
                 "GenericError", "Parameter 'zzz' is unexpected");
    /* A NULL argument list allows none. */
    expect_error(f, c, "{\"execute\": \"noargs\", \"arguments\": "
                 "{\"a\": 1}}",
                 "GenericError", "Parameter 'a' is unexpected");
    expect_empty_return(f, c, "{\"execute\": \"noargs\", "
                        "\"arguments\": {}}");
    client_free(c);
}

static void test_handler_results(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    json_object *rsp;

    expect_error(f, c, "{\"execute\": \"fail\"}", "GenericError",
                 "fake failure 42");
    /* NULL from a handler without an error is {}. */
    expect_empty_return(f, c, "{\"execute\": \"noargs\"}");
    /* The handler gets {} when "arguments" is absent. */
    rsp = client_cmd(f, c, "{\"execute\": \"echo\"}");
    assert_int_equal(json_object_object_length(assert_return(rsp)), 0);
    json_object_put(rsp);
    client_free(c);
}

static void test_typed_arguments(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    json_object *rsp, *ret;

    expect_error(f, c, "{\"execute\": \"typed\"}", "GenericError",
                 "Parameter 'name' is missing");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": 5}}", "GenericError",
                 "Invalid parameter type for 'name', expected: string");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"count\": \"5\"}}", "GenericError",
                 "Invalid parameter type for 'count', expected: integer");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"count\": 1.5}}", "GenericError",
                 "Invalid parameter type for 'count', expected: integer");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"count\": 9223372036854775808}}",
                 "GenericError",
                 "Invalid parameter type for 'count', expected: integer");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"flag\": 1}}", "GenericError",
                 "Invalid parameter type for 'flag', expected: boolean");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"flag\": null}}", "GenericError",
                 "Invalid parameter type for 'flag', expected: boolean");

    /* QEMU's uint64/size texts. */
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"size\": 1.5}}", "GenericError",
                 "Parameter 'size' expects uint64");
    expect_error(f, c, "{\"execute\": \"typed\", \"arguments\": "
                 "{\"name\": \"x\", \"size\": \"1M\"}}", "GenericError",
                 "Parameter 'size' expects uint64");
    rsp = client_cmd(f, c, "{\"execute\": \"typed\", \"arguments\": "
                     "{\"name\": \"x\", \"size\": 18446744073709551615}}");
    assert_true(json_object_get_uint64(member(assert_return(rsp), "size")) ==
                UINT64_MAX);
    json_object_put(rsp);
    /* A negative value wraps, as in QEMU (the handler range-checks). */
    rsp = client_cmd(f, c, "{\"execute\": \"typed\", \"arguments\": "
                     "{\"name\": \"x\", \"size\": -1}}");
    assert_true(json_object_get_uint64(member(assert_return(rsp), "size")) ==
                UINT64_MAX);
    json_object_put(rsp);

    rsp = client_cmd(f, c, "{\"execute\": \"typed\", \"arguments\": "
                     "{\"name\": \"x\"}}");
    ret = assert_return(rsp);
    assert_string_equal(json_object_get_string(member(ret, "name")), "x");
    assert_false(json_object_object_get_ex(ret, "count", NULL));
    assert_false(json_object_object_get_ex(ret, "flag", NULL));
    json_object_put(rsp);

    rsp = client_cmd(f, c, "{\"execute\": \"typed\", \"arguments\": "
                     "{\"name\": \"y\", \"count\": -9223372036854775808, "
                     "\"flag\": false}}");
    ret = assert_return(rsp);
    assert_true(json_object_get_int64(member(ret, "count")) == INT64_MIN);
    assert_false(json_object_get_boolean(member(ret, "flag")));
    json_object_put(rsp);
    client_free(c);
}

static void test_arg_helpers_direct(void **state)
{
    json_object *args = json_tokener_parse("{\"s\": \"v\", \"i\": 7, "
                                           "\"b\": true}");
    QmpError err = { 0 };
    const char *s = "untouched";
    int64_t i = -1;
    bool b = false, present = true;

    (void)state;
    /* Absent optional arguments leave the defaults alone. */
    assert_true(qmp_arg_str(args, "nope", false, &s, &err));
    assert_string_equal(s, "untouched");
    assert_true(qmp_arg_int(args, "nope", false, &i, &present, &err));
    assert_int_equal(i, -1);
    assert_false(present);
    assert_true(qmp_arg_bool(args, "nope", false, &b, NULL, &err));
    assert_null(err.cls);

    assert_true(qmp_arg_str(args, "s", true, &s, &err));
    assert_string_equal(s, "v");
    assert_true(qmp_arg_int(args, "i", true, &i, &present, &err));
    assert_int_equal(i, 7);
    assert_true(present);
    assert_true(qmp_arg_bool(args, "b", false, &b, &present, &err));
    assert_true(b);
    assert_true(present);

    /* NULL args behave as {}. */
    assert_false(qmp_arg_int(NULL, "i", true, &i, NULL, &err));
    assert_string_equal(err.cls, QMP_ERROR_GENERIC);
    assert_string_equal(err.desc, "Parameter 'i' is missing");
    /* The first error wins. */
    assert_false(qmp_arg_bool(args, "s", true, &b, NULL, &err));
    assert_string_equal(err.desc, "Parameter 'i' is missing");
    free(err.desc);
    json_object_put(args);
}

/* ---------------------------------------------------------------- */
/* Limits and misbehaving clients                                    */
/* ---------------------------------------------------------------- */

static void test_oversized_input_disconnects(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    Client *other = client_ready(f);
    static char chunk[16384];
    size_t sent = 0;
    json_object *rsp;
    char *line;

    memset(chunk, 'x', sizeof(chunk));
    client_puts(f, c, "{\"execute\": \"echo\", \"arguments\": {\"s\": \"");
    while (sent < QMP_MAX_INPUT + 2 * sizeof(chunk)) {
        ssize_t n = send(c->fd, chunk, sizeof(chunk), MSG_NOSIGNAL);

        if (n > 0) {
            sent += (size_t)n;
        } else if (errno == EAGAIN) {
            assert_true(qmp_poll(f->q, 5));
        } else {
            /* The server already hung up on us. */
            assert_true(errno == EPIPE || errno == ECONNRESET);
            break;
        }
    }
    rsp = client_msg(f, c);
    assert_non_null(rsp);
    assert_error(rsp, "GenericError", NULL);
    assert_non_null(strstr(json_object_get_string(member(member(rsp,
                                                                "error"),
                                                         "desc")),
                           "exceeds"));
    json_object_put(rsp);
    line = client_line(f, c, WAIT_MS);
    assert_null(line);
    assert_true(c->eof);

    /* Others are unaffected. */
    expect_empty_return(f, other, "{\"execute\": \"noargs\"}");
    client_free(c);
    client_free(other);
}

static void test_many_clients(void **state)
{
    Fixture *f = *state;
    Client *c[QMP_MAX_CLIENTS];
    Client *extra;
    json_object *rsp;
    char req[128];
    int i;

    for (i = 0; i < QMP_MAX_CLIENTS; i++) {
        c[i] = client_new(f);
    }
    /* One over the limit: an error line, then the door. */
    extra = client_new(f);
    rsp = client_msg(f, extra);
    assert_non_null(rsp);
    assert_error(rsp, "GenericError", NULL);
    json_object_put(rsp);
    assert_null(client_line(f, extra, WAIT_MS));
    assert_true(extra->eof);
    client_free(extra);

    /* Interleaved: every client talks, each keeps its own state. */
    for (i = 0; i < QMP_MAX_CLIENTS; i++) {
        json_object_put(client_msg(f, c[i]));
    }
    for (i = 0; i < QMP_MAX_CLIENTS; i += 2) {
        expect_empty_return(f, c[i], "{\"execute\": \"qmp_capabilities\"}");
    }
    for (i = 0; i < QMP_MAX_CLIENTS; i++) {
        snprintf(req, sizeof(req), "{\"execute\": \"echo\", "
                 "\"arguments\": {\"n\": %d}, \"id\": %d}", i, i);
        rsp = client_cmd(f, c[i], req);
        if (i % 2) {
            assert_error(rsp, "CommandNotFound", NULL);
        } else {
            assert_int_equal(json_object_get_int(member(assert_return(rsp),
                                                        "n")), i);
        }
        assert_int_equal(json_object_get_int(member(rsp, "id")), i);
        json_object_put(rsp);
    }

    /* A freed slot is reusable. */
    client_free(c[3]);
    assert_true(qmp_poll(f->q, 10));
    c[3] = client_ready(f);
    expect_empty_return(f, c[3], "{\"execute\": \"noargs\"}");
    for (i = 0; i < QMP_MAX_CLIENTS; i++) {
        client_free(c[i]);
    }
}

static void test_slow_reader_disconnected(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    Client *other = client_ready(f);
    const char *req = "{\"execute\": \"big\", \"arguments\": "
                      "{\"size\": 1048576}}\n";
    int64_t start = now_ms();
    int i, replies = 0;
    char *line;

    /* Twelve 1 MiB replies requested, none read. */
    for (i = 0; i < 12; i++) {
        if (send(c->fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
            /* Cut off already: fine, that is the point. */
            assert_true(errno == EPIPE || errno == ECONNRESET);
            break;
        }
        assert_true(qmp_poll(f->q, 0));
    }
    /* The server stayed responsive meanwhile. */
    expect_empty_return(f, other, "{\"execute\": \"noargs\"}");
    assert_true(now_ms() - start < WAIT_MS);

    while ((line = client_line(f, c, WAIT_MS))) {
        replies++;
        free(line);
    }
    /* Cut off with most of its replies unsent. */
    assert_true(c->eof);
    assert_true(replies < 12);
    client_free(c);
    client_free(other);
}

static void test_client_vanishes(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    Client *other = client_ready(f);
    int i;

    /* Replies to a closed socket must not raise SIGPIPE. */
    for (i = 0; i < 4; i++) {
        client_puts(f, c, "{\"execute\": \"big\", \"arguments\": "
                    "{\"size\": 100000}}");
    }
    close(c->fd);
    c->fd = -1;
    for (i = 0; i < 5; i++) {
        assert_true(qmp_poll(f->q, 5));
    }
    /* Mid-object disconnect. */
    client_free(c);
    c = client_ready(f);
    client_puts(f, c, "{\"execute\": \"ech");
    assert_true(qmp_poll(f->q, 5));
    client_free(c);
    assert_true(qmp_poll(f->q, 5));

    expect_empty_return(f, other, "{\"execute\": \"noargs\"}");
    client_free(other);
}

static void test_half_close_still_answered(void **state)
{
    Fixture *f = *state;
    Client *c = client_new(f);
    int i;

    /* As `echo ... | socat - UNIX-CONNECT:sock` does. */
    client_puts(f, c, "{\"execute\": \"qmp_capabilities\"}\n"
                "{\"execute\": \"noargs\", \"id\": \"last\"}\n");
    assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
    for (i = 0; i < 3; i++) {
        json_object *m = client_msg(f, c);

        assert_non_null(m);
        if (i == 2) {
            assert_string_equal(json_object_get_string(member(m, "id")),
                                "last");
        }
        json_object_put(m);
    }
    assert_null(client_line(f, c, WAIT_MS));
    assert_true(c->eof);
    client_free(c);
}

static void test_out_of_fds_no_spin(void **state)
{
    Fixture *f = *state;
    const char *preload = getenv("LD_PRELOAD");
    struct rlimit old, low;
    int fill[64], nfill = 0, fd, i;
    int64_t start, waited;
    Client *c;

    /*
     * Valgrind emulates the descriptor limit by closing what accept()
     * returned above it, which drops the queued client this test needs.
     */
    if (preload && strstr(preload, "vgpreload")) {
        skip();
    }

    /* Leave exactly one descriptor free: for the client's socket. */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    fd = dup(0);
    assert_true(fd >= 0);
    close(fd);
    low = old;
    low.rlim_cur = (rlim_t)fd + 8;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (nfill < 64 && (fd = dup(0)) >= 0) {
        fill[nfill++] = fd;
    }
    assert_int_equal(errno, EMFILE);
    close(fill[--nfill]);
    fd = connect_unix(f->path);
    assert_true(fd >= 0);

    /* accept() fails with EMFILE: qmp_poll must wait, not spin. */
    qmp_poll(f->q, 0);
    start = now_ms();
    qmp_poll(f->q, 50);
    waited = now_ms() - start;

    /* Descriptors back before any assertion can end the test. */
    for (i = 0; i < nfill; i++) {
        close(fill[i]);
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_true(waited >= 40);

    /* The queued client is served now. */
    c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = fd;
    assert_int_equal(fcntl(c->fd, F_SETFL, O_NONBLOCK), 0);
    client_negotiate(f, c);
    expect_empty_return(f, c, "{\"execute\": \"noargs\"}");
    client_free(c);
}

/* ---------------------------------------------------------------- */
/* Events                                                            */
/* ---------------------------------------------------------------- */

typedef struct EmitArgs {
    Qmp *q;
    int delay_ms;
} EmitArgs;

static void *emit_thread(void *opaque)
{
    EmitArgs *a = opaque;
    struct timespec ts = { 0, (long)a->delay_ms * 1000000L };
    json_object *data = json_object_new_object();

    nanosleep(&ts, NULL);
    json_object_object_add(data, "n", json_object_new_int(42));
    qmp_emit_event(a->q, "TEST_EVENT", data);
    return NULL;
}

static void test_event_from_thread(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    Client *negotiating = client_new(f);
    EmitArgs args = { f->q, 50 };
    pthread_t th;
    json_object *ev, *ts;
    int64_t start;

    json_object_put(client_msg(f, negotiating));
    assert_int_equal(pthread_create(&th, NULL, emit_thread, &args), 0);
    /* The event wakes a long poll early. */
    start = now_ms();
    assert_true(qmp_poll(f->q, 10000));
    assert_true(now_ms() - start < 5000);
    assert_int_equal(pthread_join(th, NULL), 0);

    ev = client_msg(f, c);
    assert_non_null(ev);
    assert_string_equal(json_object_get_string(member(ev, "event")),
                        "TEST_EVENT");
    assert_int_equal(json_object_get_int(member(member(ev, "data"), "n")),
                     42);
    ts = member(ev, "timestamp");
    assert_true(json_object_is_type(member(ts, "seconds"), json_type_int));
    assert_true(json_object_get_int64(member(ts, "seconds")) >
                1600000000);
    assert_true(json_object_get_int64(member(ts, "microseconds")) >= 0);
    assert_true(json_object_get_int64(member(ts, "microseconds")) <
                1000000);
    json_object_put(ev);

    /* Nothing for a client still negotiating, as in QEMU. */
    expect_empty_return(f, negotiating, "{\"execute\": \"qmp_capabilities\"}");
    client_free(negotiating);
    client_free(c);
}

static void test_event_before_reply(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    Client *watcher = client_ready(f);
    json_object *m;

    client_puts(f, c, "{\"execute\": \"emit\", \"id\": 1}");
    m = client_msg(f, c);
    assert_non_null(m);
    assert_string_equal(json_object_get_string(member(m, "event")),
                        "TEST_EMITTED");
    /* No data: no "data" member, like QEMU's STOP. */
    assert_false(json_object_object_get_ex(m, "data", NULL));
    json_object_put(m);
    m = client_msg(f, c);
    assert_non_null(m);
    assert_string_equal(json_object_get_string(assert_return(m)), "after");
    json_object_put(m);

    /* Every client in command mode gets it. */
    m = client_msg(f, watcher);
    assert_non_null(m);
    assert_string_equal(json_object_get_string(member(m, "event")),
                        "TEST_EMITTED");
    json_object_put(m);
    client_free(watcher);
    client_free(c);
}

static void test_emit_many_threads(void **state)
{
    Fixture *f = *state;
    Client *c = client_ready(f);
    EmitArgs args = { f->q, 0 };
    pthread_t th[8];
    int i;

    for (i = 0; i < 8; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, emit_thread, &args),
                         0);
    }
    for (i = 0; i < 8; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    for (i = 0; i < 8; i++) {
        json_object *ev = client_msg(f, c);

        assert_non_null(ev);
        assert_string_equal(json_object_get_string(member(ev, "event")),
                            "TEST_EVENT");
        json_object_put(ev);
    }
    client_expect_silence(f, c, 20);
    client_free(c);
}

static void test_emit_without_server(void **state)
{
    (void)state;
    /* No control socket: the data is simply released (ASan checks). */
    qmp_emit_event(NULL, "STOP", json_object_new_object());
    qmp_emit_event(NULL, "STOP", NULL);
    qmp_free(NULL);
}

/* ---------------------------------------------------------------- */
/* Socket path handling                                              */
/* ---------------------------------------------------------------- */

static void test_socket_path(void **state)
{
    char dir[] = "/tmp/test_qmp_path.XXXXXX";
    char path[200], longpath[200];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char *err = NULL;
    Qmp *q, *q2;
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/s", dir);

    /* A stale socket (nobody listening) is replaced. */
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    strcpy(sa.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    q = qmp_new(path, test_cmds, NULL, "1.2.3", &err);
    assert_non_null(q);
    assert_null(err);

    /* A live one is not. */
    q2 = qmp_new(path, test_cmds, NULL, "1.2.3", &err);
    assert_null(q2);
    assert_non_null(strstr(err, "in use"));
    free(err);
    err = NULL;
    qmp_free(q);
    assert_int_equal(access(path, F_OK), -1);

    /* Never delete a file that is not a socket. */
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_null(qmp_new(path, test_cmds, NULL, "1.2.3", &err));
    assert_non_null(strstr(err, "not a socket"));
    free(err);
    err = NULL;
    assert_int_equal(access(path, F_OK), 0);
    unlink(path);

    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    assert_null(qmp_new(longpath, test_cmds, NULL, "1.2.3", &err));
    assert_non_null(strstr(err, "too long"));
    free(err);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands_before_negotiation,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_capabilities_enable,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_not_found,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_builtin_queries,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_and_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_on_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_json_recovers,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_quotes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_across_writes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_per_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_object_input,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_request_members,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unexpected_argument,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_results,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_typed_arguments,
                                        setup, teardown),
        cmocka_unit_test(test_arg_helpers_direct),
        cmocka_unit_test_setup_teardown(test_oversized_input_disconnects,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_disconnected,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_vanishes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_still_answered,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_fds_no_spin,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_from_thread,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_before_reply,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_emit_many_threads,
                                        setup, teardown),
        cmocka_unit_test(test_emit_without_server),
        cmocka_unit_test(test_socket_path),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
