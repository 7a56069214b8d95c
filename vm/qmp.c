/*
 * mig2-vm - QMP-compatible control socket
 *
 * One thread (the caller of qmp_poll()) owns the listening socket and
 * every client: it reads, runs handlers and writes, all non-blocking, so a
 * slow or hostile client can only lose its own connection.  The one entry
 * point for other threads is qmp_emit_event(), which hands a serialized
 * line over under a mutex and wakes poll() through a self-pipe.
 *
 * Error texts and classes follow QEMU 7.2 (qapi/qmp-dispatch.c,
 * monitor/qmp.c, monitor/qmp-cmds-control.c, qapi/qobject-input-visitor.c)
 * so that scripts written against QEMU see the same answers.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* accept4(), pipe2(), SOCK_NONBLOCK */
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"

#define QMP_READ_CHUNK (64 * 1024)
/* Events waiting for the poll thread; past this they are dropped. */
#define QMP_MAX_EVENTS 4096
/* How long qmp_free() lets clients take their last replies. */
#define QMP_FREE_FLUSH_MS 200
/* Out of file descriptors: stop polling the listener this long. */
#define QMP_ACCEPT_BACKOFF_MS 100

typedef struct QmpBuf {
    char *data;
    size_t off;             /* first unsent byte */
    size_t len;             /* end of valid bytes */
    size_t cap;
} QmpBuf;

typedef struct QmpClient {
    int fd;                 /* -1: free slot */
    bool negotiated;        /* qmp_capabilities done: command mode */
    bool eof;               /* peer shut its side: no more input */
    json_tokener *tok;
    size_t in_pending;      /* bytes of the unfinished JSON value */
    QmpBuf out;
} QmpClient;

typedef struct QmpEvent {
    struct QmpEvent *next;
    size_t len;
    char line[];            /* serialized, CRLF-terminated */
} QmpEvent;

struct Qmp {
    int listen_fd;
    int wake_rd, wake_wr;   /* self-pipe for qmp_emit_event() */
    char *path;
    dev_t sock_dev;         /* so qmp_free() unlinks only our socket */
    ino_t sock_ino;
    const QmpCommand *cmds;
    void *opaque;
    int64_t ver_major, ver_minor, ver_micro;
    int64_t accept_paused_until;    /* ms, CLOCK_MONOTONIC */
    QmpClient clients[QMP_MAX_CLIENTS];

    pthread_mutex_t lock;   /* protects the event queue below */
    QmpEvent *ev_head;
    QmpEvent **ev_tail;
    size_t ev_count;

    char rbuf[QMP_READ_CHUNK];
};

static const char *const qmp_caps_args[] = { "enable", NULL };

/* ---------------------------------------------------------------- */
/* Small helpers                                                     */
/* ---------------------------------------------------------------- */

/* Like QEMU's g_malloc: the control plane has no useful way to go on. */
static void *qmp_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("mig2-vm: qmp: out of memory\n", stderr);
        abort();
    }
    return p;
}

static json_object *qmp_xnew(json_object *o)
{
    if (!o) {
        fputs("mig2-vm: qmp: out of memory\n", stderr);
        abort();
    }
    return o;
}

static char *qmp_vstrdup_printf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));

static char *qmp_vstrdup_printf(const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    char *s;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        n = 0;
    }
    s = qmp_xrealloc(NULL, (size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static char *qmp_strdup_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static char *qmp_strdup_printf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = qmp_vstrdup_printf(fmt, ap);
    va_end(ap);
    return s;
}

static int64_t qmp_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t buf_pending(const QmpBuf *b)
{
    return b->len - b->off;
}

static void buf_put(QmpBuf *b, const void *p, size_t n)
{
    if (b->cap - b->len < n && b->off) {
        /* Reuse the already-sent prefix before growing. */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;

        while (cap - b->len < n) {
            cap *= 2;
        }
        b->data = qmp_xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_puts(QmpBuf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_free(QmpBuf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/*
 * Serialize @o the way QEMU's QMP prints (one line, ": " and ", "; the
 * caller ends it with "\r\n" as QEMU's monitor does), so line-oriented
 * scripts written against QEMU keep working.  json-c does all escaping;
 * only the punctuation between members is ours.
 */
static void buf_put_json(QmpBuf *b, json_object *o)
{
    const int flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;

    switch (json_object_get_type(o)) {
    case json_type_object: {
        const char *sep = "";

        buf_puts(b, "{");
        json_object_object_foreach(o, key, val) {
            json_object *k = qmp_xnew(json_object_new_string(key));

            buf_puts(b, sep);
            buf_puts(b, json_object_to_json_string_ext(k, flags));
            json_object_put(k);
            buf_puts(b, ": ");
            buf_put_json(b, val);
            sep = ", ";
        }
        buf_puts(b, "}");
        break;
    }
    case json_type_array: {
        size_t i, n = json_object_array_length(o);

        buf_puts(b, "[");
        for (i = 0; i < n; i++) {
            if (i) {
                buf_puts(b, ", ");
            }
            buf_put_json(b, json_object_array_get_idx(o, i));
        }
        buf_puts(b, "]");
        break;
    }
    default:
        buf_puts(b, json_object_to_json_string_ext(o, flags));
        break;
    }
}

/* ---------------------------------------------------------------- */
/* Errors and argument helpers                                       */
/* ---------------------------------------------------------------- */

void qmp_error_set(QmpError *err, const char *cls, const char *fmt, ...)
{
    va_list ap;

    if (err->cls) {
        return;
    }
    err->cls = cls;
    va_start(ap, fmt);
    err->desc = qmp_vstrdup_printf(fmt, ap);
    va_end(ap);
}

/*
 * Look up @name in @args.  Returns false with @err set if it is required
 * and absent; otherwise true, *@val NULL when absent.  JSON null is
 * returned as present (*@found true) for the caller's type check.
 */
static bool arg_lookup(json_object *args, const char *name, bool required,
                       json_object **val, bool *found, QmpError *err)
{
    *val = NULL;
    *found = args && json_object_object_get_ex(args, name, val);
    if (!*found && required) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "Parameter '%s' is missing",
                      name);
        return false;
    }
    return true;
}

static void arg_type_error(const char *name, const char *expected,
                           QmpError *err)
{
    qmp_error_set(err, QMP_ERROR_GENERIC,
                  "Invalid parameter type for '%s', expected: %s",
                  name, expected);
}

bool qmp_arg_str(json_object *args, const char *name, bool required,
                 const char **out, QmpError *err)
{
    json_object *v;
    bool found;

    if (!arg_lookup(args, name, required, &v, &found, err)) {
        return false;
    }
    if (!found) {
        return true;
    }
    if (!json_object_is_type(v, json_type_string)) {
        arg_type_error(name, "string", err);
        return false;
    }
    *out = json_object_get_string(v);
    return true;
}

bool qmp_arg_int(json_object *args, const char *name, bool required,
                 int64_t *out, bool *present, QmpError *err)
{
    json_object *v;
    bool found;
    int64_t i;

    if (present) {
        *present = false;
    }
    if (!arg_lookup(args, name, required, &v, &found, err)) {
        return false;
    }
    if (!found) {
        return true;
    }
    if (!json_object_is_type(v, json_type_int)) {
        arg_type_error(name, "integer", err);
        return false;
    }
    /* json-c clamps values above INT64_MAX; QEMU refuses them. */
    i = json_object_get_int64(v);
    if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX) {
        arg_type_error(name, "integer", err);
        return false;
    }
    *out = i;
    if (present) {
        *present = true;
    }
    return true;
}

bool qmp_arg_uint(json_object *args, const char *name, bool required,
                  uint64_t *out, bool *present, QmpError *err)
{
    json_object *v;
    bool found;
    int64_t i;

    if (present) {
        *present = false;
    }
    if (!arg_lookup(args, name, required, &v, &found, err)) {
        return false;
    }
    if (!found) {
        return true;
    }
    if (!json_object_is_type(v, json_type_int)) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "Parameter '%s' expects uint64",
                      name);
        return false;
    }
    /* As QEMU, for backward compatibility: a negative value wraps. */
    i = json_object_get_int64(v);
    *out = i < 0 ? (uint64_t)i : json_object_get_uint64(v);
    if (present) {
        *present = true;
    }
    return true;
}

bool qmp_arg_bool(json_object *args, const char *name, bool required,
                  bool *out, bool *present, QmpError *err)
{
    json_object *v;
    bool found;

    if (present) {
        *present = false;
    }
    if (!arg_lookup(args, name, required, &v, &found, err)) {
        return false;
    }
    if (!found) {
        return true;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        arg_type_error(name, "boolean", err);
        return false;
    }
    *out = json_object_get_boolean(v);
    if (present) {
        *present = true;
    }
    return true;
}

/* ---------------------------------------------------------------- */
/* Clients: output                                                   */
/* ---------------------------------------------------------------- */

static void client_drop(QmpClient *c)
{
    if (c->fd < 0) {
        return;
    }
    close(c->fd);
    c->fd = -1;
    json_tokener_free(c->tok);
    c->tok = NULL;
    buf_free(&c->out);
}

/* Send what the socket takes now; false if the client was dropped. */
static bool client_flush(QmpClient *c)
{
    while (c->fd >= 0 && buf_pending(&c->out)) {
        ssize_t n = send(c->fd, c->out.data + c->out.off,
                         buf_pending(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            c->out.off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return true;
        } else {
            client_drop(c);
            return false;
        }
    }
    if (c->fd >= 0) {
        /* Drained: don't keep a burst-sized buffer around. */
        if (c->out.cap > 1024 * 1024) {
            buf_free(&c->out);
        }
        c->out.off = c->out.len = 0;
    }
    return c->fd >= 0;
}

/* A client that does not read loses its connection, never the server. */
static void client_check_backlog(QmpClient *c)
{
    if (c->fd >= 0 && buf_pending(&c->out) > QMP_MAX_OUTPUT) {
        client_drop(c);
    }
}

static void client_send(QmpClient *c, json_object *msg)
{
    if (c->fd < 0) {
        return;
    }
    buf_put_json(&c->out, msg);
    buf_puts(&c->out, "\r\n");
    client_check_backlog(c);
}

/* {"class": @cls, "desc": @desc} */
static json_object *error_body(const char *cls, const char *desc)
{
    json_object *e = qmp_xnew(json_object_new_object());

    json_object_object_add(e, "class", json_object_new_string(cls));
    json_object_object_add(e, "desc", json_object_new_string(desc));
    return e;
}

/* ---------------------------------------------------------------- */
/* Events                                                            */
/* ---------------------------------------------------------------- */

void qmp_emit_event(Qmp *q, const char *name, json_object *data)
{
    struct timeval tv;
    json_object *ev, *ts;
    QmpBuf b = { 0 };
    QmpEvent *e;
    bool queued = false;

    if (!q) {
        json_object_put(data);
        return;
    }

    gettimeofday(&tv, NULL);
    ts = qmp_xnew(json_object_new_object());
    json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
    json_object_object_add(ts, "microseconds",
                           json_object_new_int64(tv.tv_usec));
    ev = qmp_xnew(json_object_new_object());
    json_object_object_add(ev, "timestamp", ts);
    json_object_object_add(ev, "event", json_object_new_string(name));
    if (data) {
        json_object_object_add(ev, "data", data);
    }
    /* Serialize here so the poll thread never touches our objects. */
    buf_put_json(&b, ev);
    buf_puts(&b, "\r\n");
    json_object_put(ev);

    e = qmp_xrealloc(NULL, sizeof(*e) + b.len);
    e->next = NULL;
    e->len = b.len;
    memcpy(e->line, b.data, b.len);
    buf_free(&b);

    pthread_mutex_lock(&q->lock);
    if (q->ev_count < QMP_MAX_EVENTS) {
        *q->ev_tail = e;
        q->ev_tail = &e->next;
        q->ev_count++;
        queued = true;
    }
    pthread_mutex_unlock(&q->lock);

    if (!queued) {
        free(e);
        return;
    }
    if (write(q->wake_wr, "", 1) < 0) {
        /* EAGAIN: the pipe is full, so a wake-up is pending anyway. */
    }
}

/* Hand queued events to every client in command mode. */
static void deliver_events(Qmp *q)
{
    char tmp[256];
    QmpEvent *e, *next;
    size_t i;

    /* Drain first: an event queued after this point writes a new byte. */
    while (read(q->wake_rd, tmp, sizeof(tmp)) > 0) {
        /* nothing */
    }

    pthread_mutex_lock(&q->lock);
    e = q->ev_head;
    q->ev_head = NULL;
    q->ev_tail = &q->ev_head;
    q->ev_count = 0;
    pthread_mutex_unlock(&q->lock);

    for (; e; e = next) {
        next = e->next;
        for (i = 0; i < QMP_MAX_CLIENTS; i++) {
            QmpClient *c = &q->clients[i];

            /* As QEMU: no events before capabilities negotiation. */
            if (c->fd >= 0 && c->negotiated) {
                buf_put(&c->out, e->line, e->len);
                client_check_backlog(c);
            }
        }
        free(e);
    }
}

/* ---------------------------------------------------------------- */
/* Built-in commands                                                 */
/* ---------------------------------------------------------------- */

static json_object *version_info(const Qmp *q)
{
    json_object *v = qmp_xnew(json_object_new_object());
    json_object *triple = qmp_xnew(json_object_new_object());

    /* Members in the order QEMU happens to print them. */
    json_object_object_add(triple, "micro",
                           json_object_new_int64(q->ver_micro));
    json_object_object_add(triple, "minor",
                           json_object_new_int64(q->ver_minor));
    json_object_object_add(triple, "major",
                           json_object_new_int64(q->ver_major));
    json_object_object_add(v, "qemu", triple);
    json_object_object_add(v, "package", json_object_new_string("mig2-vm"));
    return v;
}

static const QmpCommand *find_command(const Qmp *q, const char *name)
{
    const QmpCommand *cmd;

    for (cmd = q->cmds; cmd && cmd->name; cmd++) {
        if (!strcmp(cmd->name, name)) {
            return cmd;
        }
    }
    return NULL;
}

static json_object *query_commands(const Qmp *q)
{
    static const char *const builtins[] = {
        "qmp_capabilities", "query-commands", "query-version", NULL,
    };
    json_object *list = qmp_xnew(json_object_new_array());
    const QmpCommand *cmd;
    size_t i;

    for (i = 0; builtins[i]; i++) {
        if (!find_command(q, builtins[i])) {
            json_object *o = qmp_xnew(json_object_new_object());

            json_object_object_add(o, "name",
                                   json_object_new_string(builtins[i]));
            json_object_array_add(list, o);
        }
    }
    for (cmd = q->cmds; cmd && cmd->name; cmd++) {
        json_object *o = qmp_xnew(json_object_new_object());

        json_object_object_add(o, "name", json_object_new_string(cmd->name));
        json_object_array_add(list, o);
    }
    return list;
}

/*
 * qmp_capabilities' "enable": QEMU checks the whole list against the enum
 * first, then refuses every capability it did not offer (we offer none).
 */
static bool caps_accept(json_object *args, QmpError *err)
{
    json_object *en;
    QmpBuf unavailable = { 0 };
    size_t i, n;

    if (!json_object_object_get_ex(args, "enable", &en)) {
        return true;
    }
    if (!json_object_is_type(en, json_type_array)) {
        arg_type_error("enable", "array", err);
        return false;
    }
    n = json_object_array_length(en);
    for (i = 0; i < n; i++) {
        json_object *cap = json_object_array_get_idx(en, i);

        if (!json_object_is_type(cap, json_type_string)) {
            qmp_error_set(err, QMP_ERROR_GENERIC,
                          "Invalid parameter type for 'enable[%zu]', "
                          "expected: string", i);
            return false;
        }
        if (strcmp(json_object_get_string(cap), "oob")) {
            /* Sic: QEMU names list elements "null" here. */
            qmp_error_set(err, QMP_ERROR_GENERIC,
                          "Parameter 'null' does not accept value '%s'",
                          json_object_get_string(cap));
            return false;
        }
    }
    if (!n) {
        return true;
    }
    /* Every element is "oob" by now, and "oob" is never offered. */
    for (i = 0; i < n; i++) {
        buf_puts(&unavailable, i ? ", oob" : "oob");
    }
    buf_put(&unavailable, "", 1);
    qmp_error_set(err, QMP_ERROR_GENERIC, "Capability %s not available",
                  unavailable.data);
    buf_free(&unavailable);
    return false;
}

/* ---------------------------------------------------------------- */
/* Dispatch                                                          */
/* ---------------------------------------------------------------- */

static bool check_args(json_object *args, const char *const *allowed,
                       QmpError *err)
{
    json_object_object_foreach(args, key, val) {
        const char *const *a;
        bool ok = false;

        (void)val;
        for (a = allowed; a && *a; a++) {
            if (!strcmp(*a, key)) {
                ok = true;
                break;
            }
        }
        if (!ok) {
            qmp_error_set(err, QMP_ERROR_GENERIC,
                          "Parameter '%s' is unexpected", key);
            return false;
        }
    }
    return true;
}

/* QEMU's qmp_dispatch_check_obj(), without exec-oob (never offered). */
static const char *check_request(json_object *req, json_object **args,
                                 QmpError *err)
{
    const char *exec = NULL;

    *args = NULL;
    json_object_object_foreach(req, key, val) {
        if (!strcmp(key, "execute")) {
            if (!json_object_is_type(val, json_type_string)) {
                qmp_error_set(err, QMP_ERROR_GENERIC,
                              "QMP input member 'execute' must be a string");
                return NULL;
            }
            exec = json_object_get_string(val);
        } else if (!strcmp(key, "arguments")) {
            if (!json_object_is_type(val, json_type_object)) {
                qmp_error_set(err, QMP_ERROR_GENERIC,
                              "QMP input member 'arguments' must be an "
                              "object");
                return NULL;
            }
            *args = val;
        } else if (strcmp(key, "id")) {
            qmp_error_set(err, QMP_ERROR_GENERIC,
                          "QMP input member '%s' is unexpected", key);
            return NULL;
        }
    }
    if (!exec) {
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "QMP input lacks member 'execute'");
    }
    return exec;
}

static json_object *run_command(Qmp *q, QmpClient *c, const char *name,
                                json_object *args, QmpError *err)
{
    const QmpCommand *cmd;
    json_object *ret;

    if (!strcmp(name, "qmp_capabilities")) {
        if (!check_args(args, qmp_caps_args, err)) {
            return NULL;
        }
        if (c->negotiated) {
            qmp_error_set(err, QMP_ERROR_COMMAND_NOT_FOUND,
                          "Capabilities negotiation is already complete, "
                          "command ignored");
            return NULL;
        }
        if (caps_accept(args, err)) {
            c->negotiated = true;
        }
        return NULL;
    }
    if (!c->negotiated) {
        /* QEMU's rewording of CommandNotFound in negotiation mode. */
        qmp_error_set(err, QMP_ERROR_COMMAND_NOT_FOUND,
                      "Expecting capabilities negotiation with "
                      "'qmp_capabilities'");
        return NULL;
    }

    cmd = find_command(q, name);
    if (cmd) {
        if (!check_args(args, cmd->args, err)) {
            return NULL;
        }
        ret = cmd->fn(args, q->opaque, err);
        if (err->cls) {
            json_object_put(ret);
            ret = NULL;
        }
        /* Events the handler emitted precede its reply, as in QEMU. */
        deliver_events(q);
        return ret;
    }
    if (!strcmp(name, "query-commands")) {
        return check_args(args, NULL, err) ? query_commands(q) : NULL;
    }
    if (!strcmp(name, "query-version")) {
        return check_args(args, NULL, err) ? version_info(q) : NULL;
    }
    qmp_error_set(err, QMP_ERROR_COMMAND_NOT_FOUND,
                  "The command %s has not been found", name);
    return NULL;
}

static void dispatch(Qmp *q, QmpClient *c, json_object *req)
{
    QmpError err = { 0 };
    json_object *id = NULL, *args, *ret = NULL, *rsp;
    bool has_id = false;
    const char *name;

    if (!json_object_is_type(req, json_type_object)) {
        qmp_error_set(&err, QMP_ERROR_GENERIC,
                      "QMP input must be a JSON object");
    } else {
        has_id = json_object_object_get_ex(req, "id", &id);
        name = check_request(req, &args, &err);
        if (name) {
            json_object *empty = NULL;

            if (!args) {
                args = empty = qmp_xnew(json_object_new_object());
            }
            ret = run_command(q, c, name, args, &err);
            json_object_put(empty);
        }
    }

    /* Member order as QEMU prints it: {"id", "error"}, {"return", "id"}. */
    rsp = qmp_xnew(json_object_new_object());
    if (err.cls) {
        if (has_id) {
            json_object_object_add(rsp, "id", json_object_get(id));
        }
        json_object_object_add(rsp, "error", error_body(err.cls, err.desc));
    } else {
        json_object_object_add(rsp, "return",
                               ret ? ret : json_object_new_object());
        if (has_id) {
            json_object_object_add(rsp, "id", json_object_get(id));
        }
    }
    client_send(c, rsp);
    json_object_put(rsp);
    free(err.desc);
}

/* ---------------------------------------------------------------- */
/* Clients: input                                                    */
/* ---------------------------------------------------------------- */

/* Reply with an error that has no "id" (the request was unreadable). */
static void client_error(QmpClient *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void client_error(QmpClient *c, const char *fmt, ...)
{
    va_list ap;
    char *desc;
    json_object *rsp;

    va_start(ap, fmt);
    desc = qmp_vstrdup_printf(fmt, ap);
    va_end(ap);
    rsp = qmp_xnew(json_object_new_object());
    json_object_object_add(rsp, "error", error_body(QMP_ERROR_GENERIC, desc));
    client_send(c, rsp);
    json_object_put(rsp);
    free(desc);
}

/*
 * Feed @len bytes to the client's tokener and run each complete value.
 * A value may span calls; a call may hold several values.
 */
static void client_feed(Qmp *q, QmpClient *c, const char *data, size_t len)
{
    size_t off = 0;

    while (off < len && c->fd >= 0) {
        json_object *obj = json_tokener_parse_ex(c->tok, data + off,
                                                 (int)(len - off));
        enum json_tokener_error jerr = json_tokener_get_error(c->tok);
        size_t used = json_tokener_get_parse_end(c->tok);

        if (jerr == json_tokener_continue) {
            c->in_pending += len - off;
        } else {
            c->in_pending += used;
        }
        if (c->in_pending > QMP_MAX_INPUT) {
            json_object_put(obj);
            client_error(c, "JSON input exceeds %u bytes, closing the "
                         "connection", QMP_MAX_INPUT);
            client_flush(c);
            client_drop(c);
            return;
        }
        if (jerr == json_tokener_continue) {
            return;
        }

        json_tokener_reset(c->tok);
        c->in_pending = 0;
        if (jerr != json_tokener_success) {
            const char *nl = memchr(data + off + used, '\n',
                                    len - off - used);

            client_error(c, "JSON parse error, %s",
                         json_tokener_error_desc(jerr));
            /*
             * Resynchronise at the next line: QMP clients send one
             * command per line, and a JSON tokenizer cannot tell where
             * the broken value ends.
             */
            off = nl ? (size_t)(nl - data) + 1 : len;
            continue;
        }

        /* Success; @obj is NULL for a JSON null. */
        off += used ? used : len - off;
        dispatch(q, c, obj);
        json_object_put(obj);
    }
}

static void client_read(Qmp *q, QmpClient *c)
{
    ssize_t n = recv(c->fd, q->rbuf, sizeof(q->rbuf), 0);

    if (n > 0) {
        client_feed(q, c, q->rbuf, (size_t)n);
    } else if (n == 0) {
        /* Half-closed peers still get their replies. */
        c->eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        client_drop(c);
    }
}

static void accept_clients(Qmp *q)
{
    for (;;) {
        int fd = accept4(q->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        QmpClient *c = NULL;
        json_object *greeting, *inner;
        size_t i;

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                /* The connection stays queued; don't spin on it. */
                q->accept_paused_until = qmp_now_ms() +
                                         QMP_ACCEPT_BACKOFF_MS;
            }
            return;
        }
        for (i = 0; i < QMP_MAX_CLIENTS; i++) {
            if (q->clients[i].fd < 0) {
                c = &q->clients[i];
                break;
            }
        }
        if (!c) {
            char line[160];
            int len = snprintf(line, sizeof(line),
                               "{\"error\": {\"class\": \"%s\", \"desc\": "
                               "\"Too many QMP clients (at most %d)\"}}\r\n",
                               QMP_ERROR_GENERIC, QMP_MAX_CLIENTS);

            if (send(fd, line, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* The client is turned away either way. */
            }
            close(fd);
            continue;
        }

        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->tok = json_tokener_new();
        if (!c->tok) {
            close(fd);
            c->fd = -1;
            continue;
        }
        /*
         * Not JSON_TOKENER_STRICT: that refuses single-quoted strings,
         * which QEMU accepts and its own scripts use ({'execute': ...}).
         * The price is that comments and trailing commas pass too.
         */
        json_tokener_set_flags(c->tok, JSON_TOKENER_VALIDATE_UTF8);

        inner = qmp_xnew(json_object_new_object());
        json_object_object_add(inner, "version", version_info(q));
        json_object_object_add(inner, "capabilities",
                               json_object_new_array());
        greeting = qmp_xnew(json_object_new_object());
        json_object_object_add(greeting, "QMP", inner);
        client_send(c, greeting);
        json_object_put(greeting);
    }
}

/* ---------------------------------------------------------------- */
/* Server                                                            */
/* ---------------------------------------------------------------- */

/* Remove a socket left by a dead process; refuse anything else. */
static bool remove_stale(const char *path, char **errp)
{
    struct stat st;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) {
            return true;
        }
        *errp = qmp_strdup_printf("%s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        *errp = qmp_strdup_printf("%s exists and is not a socket", path);
        return false;
    }
    /* Non-blocking: a live server with a full backlog gives EAGAIN. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        strcpy(sa.sun_path, path);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
            errno == EAGAIN) {
            close(fd);
            *errp = qmp_strdup_printf("%s is in use by another process",
                                      path);
            return false;
        }
        close(fd);
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        *errp = qmp_strdup_printf("cannot remove stale %s: %s", path,
                                  strerror(errno));
        return false;
    }
    return true;
}

Qmp *qmp_new(const char *path, const QmpCommand *cmds, void *opaque,
             const char *version, char **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    int pipefd[2];
    unsigned maj = 0, min = 0, mic = 0;
    Qmp *q;
    size_t i;

    *errp = NULL;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        *errp = qmp_strdup_printf("QMP socket path too long (max %zu "
                                  "bytes): %s", sizeof(sa.sun_path) - 1,
                                  path);
        return NULL;
    }
    if (!remove_stale(path, errp)) {
        return NULL;
    }

    q = qmp_xrealloc(NULL, sizeof(*q));
    memset(q, 0, sizeof(*q));
    q->listen_fd = q->wake_rd = q->wake_wr = -1;
    for (i = 0; i < QMP_MAX_CLIENTS; i++) {
        q->clients[i].fd = -1;
    }
    pthread_mutex_init(&q->lock, NULL);
    q->ev_tail = &q->ev_head;
    q->cmds = cmds;
    q->opaque = opaque;
    if (version && sscanf(version, "%u.%u.%u", &maj, &min, &mic) < 1) {
        maj = min = mic = 0;
    }
    q->ver_major = maj;
    q->ver_minor = min;
    q->ver_micro = mic;

    if (pipe2(pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
        *errp = qmp_strdup_printf("pipe: %s", strerror(errno));
        goto fail;
    }
    q->wake_rd = pipefd[0];
    q->wake_wr = pipefd[1];

    q->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          0);
    if (q->listen_fd < 0) {
        *errp = qmp_strdup_printf("socket: %s", strerror(errno));
        goto fail;
    }
    strcpy(sa.sun_path, path);
    if (bind(q->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        *errp = qmp_strdup_printf("cannot bind QMP socket %s: %s", path,
                                  strerror(errno));
        goto fail;
    }
    q->path = qmp_strdup_printf("%s", path);
    if (stat(path, &st) == 0) {
        q->sock_dev = st.st_dev;
        q->sock_ino = st.st_ino;
    }
    if (listen(q->listen_fd, QMP_MAX_CLIENTS) < 0) {
        *errp = qmp_strdup_printf("cannot listen on QMP socket %s: %s", path,
                                  strerror(errno));
        goto fail;
    }
    return q;

fail:
    qmp_free(q);
    return NULL;
}

bool qmp_poll(Qmp *q, int timeout_ms)
{
    struct pollfd pfd[2 + QMP_MAX_CLIENTS];
    QmpClient *owner[2 + QMP_MAX_CLIENTS];
    nfds_t n = 0, i;
    int64_t pause;
    size_t k;

    /* fd -1 makes poll() skip the listener while accepting is paused. */
    pause = q->accept_paused_until - qmp_now_ms();
    if (pause > 0 && (timeout_ms < 0 || timeout_ms > pause)) {
        timeout_ms = (int)pause;
    }
    pfd[n] = (struct pollfd) {
        .fd = pause > 0 ? -1 : q->listen_fd,
        .events = POLLIN,
    };
    owner[n++] = NULL;
    pfd[n] = (struct pollfd) { .fd = q->wake_rd, .events = POLLIN };
    owner[n++] = NULL;
    for (k = 0; k < QMP_MAX_CLIENTS; k++) {
        QmpClient *c = &q->clients[k];
        short ev = 0;

        if (c->fd < 0) {
            continue;
        }
        if (!c->eof) {
            ev |= POLLIN;
        }
        if (buf_pending(&c->out)) {
            ev |= POLLOUT;
        }
        pfd[n] = (struct pollfd) { .fd = c->fd, .events = ev };
        owner[n++] = c;
    }

    if (poll(pfd, n, timeout_ms) < 0) {
        return errno == EINTR;
    }

    if (pfd[1].revents) {
        deliver_events(q);
    }
    for (i = 2; i < n; i++) {
        QmpClient *c = owner[i];

        /* The slot may have been dropped while serving another client. */
        if (c->fd != pfd[i].fd || !pfd[i].revents) {
            continue;
        }
        if (!c->eof && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
            client_read(q, c);
        }
        if (c->fd >= 0 && c->eof && (pfd[i].revents & (POLLHUP | POLLERR))
            && !(pfd[i].revents & POLLIN)) {
            /* Gone for good: nobody will read the pending output. */
            client_drop(c);
        }
    }
    if (pfd[0].revents) {
        accept_clients(q);
    }

    /* Write replies now rather than one poll round later. */
    for (k = 0; k < QMP_MAX_CLIENTS; k++) {
        QmpClient *c = &q->clients[k];

        if (c->fd >= 0 && client_flush(c) && c->eof
            && !buf_pending(&c->out)) {
            client_drop(c);
        }
    }
    return true;
}

void qmp_free(Qmp *q)
{
    struct stat st;
    int64_t deadline;
    QmpEvent *e, *next;
    size_t i;

    if (!q) {
        return;
    }

    if (q->wake_rd >= 0) {
        deliver_events(q);
    }
    deadline = qmp_now_ms() + QMP_FREE_FLUSH_MS;
    for (;;) {
        struct pollfd pfd[QMP_MAX_CLIENTS];
        QmpClient *owner[QMP_MAX_CLIENTS];
        nfds_t n = 0, j;
        int64_t left = deadline - qmp_now_ms();

        for (i = 0; i < QMP_MAX_CLIENTS; i++) {
            QmpClient *c = &q->clients[i];

            if (c->fd >= 0 && client_flush(c) && buf_pending(&c->out)) {
                pfd[n] = (struct pollfd) { .fd = c->fd, .events = POLLOUT };
                owner[n++] = c;
            }
        }
        if (!n || left <= 0) {
            break;
        }
        if (poll(pfd, n, (int)left) < 0 && errno != EINTR) {
            break;
        }
        for (j = 0; j < n; j++) {
            if (pfd[j].revents & (POLLHUP | POLLERR)) {
                client_drop(owner[j]);
            }
        }
    }
    for (i = 0; i < QMP_MAX_CLIENTS; i++) {
        client_drop(&q->clients[i]);
    }

    if (q->listen_fd >= 0) {
        close(q->listen_fd);
        /* Another process may have taken the path over since. */
        if (q->path && stat(q->path, &st) == 0 && st.st_dev == q->sock_dev
            && st.st_ino == q->sock_ino) {
            unlink(q->path);
        }
    }
    if (q->wake_rd >= 0) {
        close(q->wake_rd);
    }
    if (q->wake_wr >= 0) {
        close(q->wake_wr);
    }
    for (e = q->ev_head; e; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_destroy(&q->lock);
    free(q->path);
    free(q);
}
