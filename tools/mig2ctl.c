/*
 * mig2ctl - a small QMP client for mig2-vm (works against QEMU too)
 *
 * Usage:
 *   mig2ctl [OPTIONS] SOCKET COMMAND [JSON-ARGS]
 *       Negotiate capabilities, run COMMAND with the JSON-ARGS object as
 *       its "arguments", print the "return" value as pretty JSON.
 *   mig2ctl [OPTIONS] SOCKET [COMMAND [JSON-ARGS]] --wait-event NAME
 *                                                  [--match KEY=VALUE]...
 *       Wait for event NAME (whose "data" has KEY equal to VALUE for each
 *       --match) and print it.  With COMMAND, the command runs first on
 *       the same connection, so an event it causes cannot be missed.
 *   mig2ctl [OPTIONS] SOCKET [COMMAND [JSON-ARGS]] --events
 *       Print every event as one JSON line until the server closes the
 *       connection or the timeout expires (both are a normal end).
 *   mig2ctl [OPTIONS] SOCKET migrate-status
 *       Poll query-migrate (every --interval, and at once on a MIGRATION
 *       event) and print a progress line, until the status is completed,
 *       failed or cancelled.
 *
 * SOCKET is a path or "unix:PATH" (as given to mig2-vm --qmp).
 *
 * Options:
 *   --timeout SEC    give up after SEC seconds in all (default 10; 0: never)
 *   --interval SEC   migrate-status polling period (default 0.5)
 *   --compact        print JSON on one line
 *   -h, --help       this text
 *
 * Exit status:
 *   0  success (migrate-status: the migration completed)
 *   1  the command returned an error; migrate-status: failed or cancelled
 *   2  usage error, cannot connect, connection lost, or not a QMP server
 *   3  timed out
 *
 * Examples:
 *   mig2ctl /tmp/src.qmp query-status
 *   mig2ctl /tmp/src.qmp migrate '{"uri": "tcp:127.0.0.1:4444"}'
 *   mig2ctl /tmp/src.qmp migrate-status --timeout 120
 *   mig2ctl /tmp/src.qmp stop --wait-event STOP
 *   mig2ctl /tmp/dst.qmp --wait-event MIGRATION --match status=completed
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

enum {
    EXIT_CMD_ERROR = 1,
    EXIT_CONN = 2,
    EXIT_TIMEOUT = 3,
};

#define MAX_MATCHES 8
/* A reply larger than this is not from a sane QMP server. */
#define MAX_MESSAGE (64u << 20)

typedef struct Options {
    const char *socket;
    const char *command;
    const char *args;           /* JSON text or NULL */
    const char *wait_event;
    const char *match[MAX_MATCHES];
    int n_match;
    bool events;
    bool compact;
    double timeout;             /* seconds; 0: none */
    double interval;
} Options;

typedef struct Conn {
    int fd;
    json_tokener *tok;
    char buf[65536];
    size_t off, len;            /* unparsed bytes in @buf */
    size_t pending;             /* bytes of the value being parsed */
    int64_t deadline;           /* ms, CLOCK_MONOTONIC; -1: none */
    unsigned next_id;
} Conn;

typedef enum ReadResult {
    READ_OK,
    READ_EOF,
    READ_TIMEOUT,
    READ_ERROR,
} ReadResult;

static const char *const usage_text =
    "Usage: mig2ctl [OPTIONS] SOCKET COMMAND [JSON-ARGS]\n"
    "       mig2ctl [OPTIONS] SOCKET [COMMAND [JSON-ARGS]] --wait-event NAME"
    " [--match KEY=VALUE]...\n"
    "       mig2ctl [OPTIONS] SOCKET [COMMAND [JSON-ARGS]] --events\n"
    "       mig2ctl [OPTIONS] SOCKET migrate-status\n"
    "\n"
    "Talk QMP to mig2-vm (or QEMU) on unix socket SOCKET (PATH or\n"
    "unix:PATH).  Capabilities are negotiated first.\n"
    "\n"
    "  COMMAND [JSON-ARGS]  run COMMAND with the JSON object JSON-ARGS as\n"
    "                       its arguments; print the return value\n"
    "  --wait-event NAME    wait for event NAME and print it (after\n"
    "                       COMMAND, if given, on the same connection)\n"
    "  --match KEY=VALUE    only an event whose data KEY equals VALUE\n"
    "  --events             print events, one JSON line each, until the\n"
    "                       connection closes or the timeout expires\n"
    "  migrate-status       poll query-migrate and print progress until\n"
    "                       completed (exit 0), failed or cancelled (1)\n"
    "  --timeout SEC        give up after SEC seconds in all (default 10,\n"
    "                       0: never)\n"
    "  --interval SEC       migrate-status polling period (default 0.5)\n"
    "  --compact            print JSON on one line\n"
    "  -h, --help           show this help\n"
    "\n"
    "Exit status: 0 ok, 1 command error or migration not completed,\n"
    "2 usage or connection error, 3 timeout.\n";

/* ---------------------------------------------------------------- */
/* Output                                                            */
/* ---------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *scalar_text(json_object *o)
{
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                          JSON_C_TO_STRING_NOSLASHESCAPE);
}

/*
 * Pretty-print @o with two-space indentation.  json-c's own pretty mode
 * prints {} as two lines; this keeps empty containers (common: "return":
 * {}) on one.
 */
static void print_json(FILE *out, json_object *o, int indent)
{
    json_type t = json_object_get_type(o);

    if (t == json_type_object && json_object_object_length(o)) {
        const char *sep = "";

        fputs("{\n", out);
        json_object_object_foreach(o, key, val) {
            json_object *k = json_object_new_string(key);

            fprintf(out, "%s%*s%s: ", sep, indent + 2, "", scalar_text(k));
            json_object_put(k);
            print_json(out, val, indent + 2);
            sep = ",\n";
        }
        fprintf(out, "\n%*s}", indent, "");
    } else if (t == json_type_array && json_object_array_length(o)) {
        size_t i, n = json_object_array_length(o);

        fputs("[\n", out);
        for (i = 0; i < n; i++) {
            fprintf(out, "%s%*s", i ? ",\n" : "", indent + 2, "");
            print_json(out, json_object_array_get_idx(o, i), indent + 2);
        }
        fprintf(out, "\n%*s]", indent, "");
    } else if (t == json_type_object) {
        fputs("{}", out);
    } else if (t == json_type_array) {
        fputs("[]", out);
    } else {
        fputs(scalar_text(o), out);
    }
}

static void print_value(json_object *o, bool compact)
{
    if (compact) {
        puts(scalar_text(o));
    } else {
        print_json(stdout, o, 0);
        putchar('\n');
    }
    fflush(stdout);
}

static json_object *member(json_object *o, const char *key)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(o, key, &v)) {
        return NULL;
    }
    return v;
}

/* Print "error: CLASS: desc" for an error reply. */
static void print_error(json_object *rsp)
{
    json_object *e = member(rsp, "error");
    const char *cls = json_object_get_string(member(e, "class"));
    const char *desc = json_object_get_string(member(e, "desc"));

    fprintf(stderr, "error: %s: %s\n", cls ? cls : "?", desc ? desc : "?");
}

/* ---------------------------------------------------------------- */
/* Connection                                                        */
/* ---------------------------------------------------------------- */

static bool conn_open(Conn *c, const char *path, int64_t deadline)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->deadline = deadline;
    if (!strncmp(path, "unix:", 5)) {
        path += 5;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "mig2ctl: socket path too long: %s\n", path);
        return false;
    }
    strcpy(sa.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 ||
        connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "mig2ctl: cannot connect to %s: %s\n", path,
                strerror(errno));
        if (errno == ENOENT || errno == ECONNREFUSED) {
            fprintf(stderr, "mig2ctl: is mig2-vm running with --qmp "
                    "unix:%s?\n", path);
        }
        return false;
    }
    c->tok = json_tokener_new();
    if (!c->tok) {
        fprintf(stderr, "mig2ctl: out of memory\n");
        return false;
    }
    return true;
}

static void conn_close(Conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    if (c->tok) {
        json_tokener_free(c->tok);
    }
}

/* Milliseconds left before @deadline (or the connection's), -1: none. */
static int time_left(const Conn *c, int64_t deadline)
{
    int64_t d = c->deadline;
    int64_t left;

    if (deadline >= 0 && (d < 0 || deadline < d)) {
        d = deadline;
    }
    if (d < 0) {
        return -1;
    }
    left = d - now_ms();
    if (left < 0) {
        return 0;
    }
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

/*
 * Next JSON value from the server, waiting at most until @deadline (ms,
 * -1: only the connection's own deadline).
 */
static ReadResult conn_next(Conn *c, int64_t deadline, json_object **out)
{
    *out = NULL;
    for (;;) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        ssize_t n;
        int r;

        while (c->off < c->len) {
            size_t avail = c->len - c->off;
            json_object *o = json_tokener_parse_ex(c->tok, c->buf + c->off,
                                                   (int)avail);
            enum json_tokener_error jerr = json_tokener_get_error(c->tok);

            if (jerr == json_tokener_continue) {
                c->pending += avail;
                c->off = c->len;
                if (c->pending > MAX_MESSAGE) {
                    fprintf(stderr, "mig2ctl: server message too large\n");
                    return READ_ERROR;
                }
                break;
            }
            if (jerr != json_tokener_success) {
                fprintf(stderr, "mig2ctl: bad JSON from server: %s\n",
                        json_tokener_error_desc(jerr));
                return READ_ERROR;
            }
            c->off += json_tokener_get_parse_end(c->tok);
            c->pending = 0;
            json_tokener_reset(c->tok);
            if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                fprintf(stderr, "mig2ctl: server sent a non-object\n");
                return READ_ERROR;
            }
            *out = o;
            return READ_OK;
        }

        r = poll(&pfd, 1, time_left(c, deadline));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            fprintf(stderr, "mig2ctl: poll: %s\n", strerror(errno));
            return READ_ERROR;
        }
        if (r == 0) {
            return READ_TIMEOUT;
        }
        n = read(c->fd, c->buf, sizeof(c->buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            fprintf(stderr, "mig2ctl: read: %s\n", strerror(errno));
            return READ_ERROR;
        }
        if (n == 0) {
            return READ_EOF;
        }
        c->off = 0;
        c->len = (size_t)n;
    }
}

static bool conn_send(Conn *c, json_object *msg)
{
    const char *json = json_object_to_json_string_ext(msg,
                                                      JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(json) + 1;
    char *line = malloc(len);
    const char *p = line;
    bool ok = true;

    if (!line) {
        fprintf(stderr, "mig2ctl: out of memory\n");
        return false;
    }
    /* One write: the server may act (quit) and close before a second. */
    memcpy(line, json, len - 1);
    line[len - 1] = '\n';
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            fprintf(stderr, "mig2ctl: send: %s\n", strerror(errno));
            ok = false;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    free(line);
    return ok;
}

static int read_failure(ReadResult r, const char *what)
{
    if (r == READ_TIMEOUT) {
        fprintf(stderr, "mig2ctl: timed out waiting for %s\n", what);
        return EXIT_TIMEOUT;
    }
    if (r == READ_EOF) {
        fprintf(stderr, "mig2ctl: connection closed by the server while "
                "waiting for %s\n", what);
    }
    return EXIT_CONN;
}

/* ---------------------------------------------------------------- */
/* Events                                                            */
/* ---------------------------------------------------------------- */

/* Does @ev match --wait-event NAME and every --match KEY=VALUE? */
static bool event_matches(const Options *o, json_object *ev)
{
    const char *name = json_object_get_string(member(ev, "event"));
    json_object *data = member(ev, "data");
    int i;

    if (!o->wait_event || !name || strcmp(name, o->wait_event)) {
        return false;
    }
    for (i = 0; i < o->n_match; i++) {
        const char *eq = strchr(o->match[i], '=');
        char *key = strndup(o->match[i], (size_t)(eq - o->match[i]));
        json_object *v = NULL;
        bool found;

        found = key && json_object_is_type(data, json_type_object) &&
                json_object_object_get_ex(data, key, &v);
        free(key);
        /* Strings compare by content, anything else by its JSON text. */
        if (!found ||
            strcmp(json_object_is_type(v, json_type_string)
                   ? json_object_get_string(v) : scalar_text(v), eq + 1)) {
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------- */
/* Commands                                                          */
/* ---------------------------------------------------------------- */

typedef struct Session {
    Conn conn;
    const Options *opts;
    json_object *matched;       /* event that satisfied --wait-event */
    bool migration_event;       /* a MIGRATION event arrived */
} Session;

/* Events that arrive while a reply is awaited. */
static void session_event(Session *s, json_object *ev)
{
    const char *name = json_object_get_string(member(ev, "event"));

    if (name && !strcmp(name, "MIGRATION")) {
        s->migration_event = true;
    }
    if (s->opts->events) {
        print_value(ev, true);
    }
    if (!s->matched && event_matches(s->opts, ev)) {
        s->matched = json_object_get(ev);
    }
}

/*
 * Run @cmd with @args (taken; may be NULL).  Returns 0 with *@rsp set to
 * the reply ({"return"} or {"error"}), or an exit status.
 */
static int session_exec(Session *s, const char *cmd, json_object *args,
                        json_object **rsp)
{
    json_object *req = json_object_new_object();
    char id[32];
    int ret = 0;

    *rsp = NULL;
    snprintf(id, sizeof(id), "mig2ctl-%u", s->conn.next_id++);
    json_object_object_add(req, "execute", json_object_new_string(cmd));
    if (args) {
        json_object_object_add(req, "arguments", args);
    }
    json_object_object_add(req, "id", json_object_new_string(id));
    if (!conn_send(&s->conn, req)) {
        json_object_put(req);
        return EXIT_CONN;
    }
    json_object_put(req);

    for (;;) {
        json_object *m;
        ReadResult r = conn_next(&s->conn, -1, &m);
        const char *mid;

        if (r != READ_OK) {
            char what[160];

            snprintf(what, sizeof(what), "the reply to %s", cmd);
            return read_failure(r, what);
        }
        if (member(m, "event")) {
            session_event(s, m);
            json_object_put(m);
            continue;
        }
        mid = json_object_get_string(member(m, "id"));
        if ((member(m, "return") || member(m, "error")) && mid &&
            !strcmp(mid, id)) {
            *rsp = m;
            break;
        }
        /* Not ours (another id, or an id-less parse error): report it. */
        if (member(m, "error")) {
            print_error(m);
            json_object_put(m);
            ret = EXIT_CONN;
            break;
        }
        json_object_put(m);
    }
    return ret;
}

static int session_start(Session *s)
{
    json_object *g = NULL, *rsp;
    ReadResult r = conn_next(&s->conn, -1, &g);
    int ret;

    if (r != READ_OK) {
        return read_failure(r, "the QMP greeting");
    }
    if (member(g, "error")) {
        /* Turned away, e.g. too many clients. */
        print_error(g);
        json_object_put(g);
        return EXIT_CONN;
    }
    if (!member(g, "QMP")) {
        fprintf(stderr, "mig2ctl: not a QMP server (no greeting): %s\n",
                scalar_text(g));
        json_object_put(g);
        return EXIT_CONN;
    }
    json_object_put(g);
    ret = session_exec(s, "qmp_capabilities", NULL, &rsp);
    if (ret) {
        return ret;
    }
    if (member(rsp, "error")) {
        print_error(rsp);
        json_object_put(rsp);
        return EXIT_CONN;
    }
    json_object_put(rsp);
    return 0;
}

static int run_command(Session *s)
{
    const Options *o = s->opts;
    json_object *args = NULL, *rsp;
    int ret;

    if (o->args) {
        enum json_tokener_error jerr;

        args = json_tokener_parse_verbose(o->args, &jerr);
        if (!args && jerr != json_tokener_success) {
            fprintf(stderr, "mig2ctl: JSON-ARGS is not valid JSON: %s\n",
                    json_tokener_error_desc(jerr));
            return EXIT_CONN;
        }
        if (!json_object_is_type(args, json_type_object)) {
            fprintf(stderr, "mig2ctl: JSON-ARGS must be a JSON object\n");
            json_object_put(args);
            return EXIT_CONN;
        }
    }
    ret = session_exec(s, o->command, args, &rsp);
    if (ret) {
        return ret;
    }
    if (member(rsp, "error")) {
        print_error(rsp);
        json_object_put(rsp);
        return EXIT_CMD_ERROR;
    }
    print_value(member(rsp, "return"), o->compact);
    json_object_put(rsp);
    return 0;
}

static int wait_event(Session *s)
{
    while (!s->matched) {
        json_object *m;
        ReadResult r = conn_next(&s->conn, -1, &m);

        if (r != READ_OK) {
            char what[160];

            snprintf(what, sizeof(what), "event %s", s->opts->wait_event);
            return read_failure(r, what);
        }
        if (member(m, "event")) {
            session_event(s, m);
        }
        json_object_put(m);
    }
    print_value(s->matched, s->opts->compact);
    return 0;
}

static int stream_events(Session *s)
{
    for (;;) {
        json_object *m;
        ReadResult r = conn_next(&s->conn, -1, &m);

        if (r == READ_EOF || r == READ_TIMEOUT) {
            return 0;
        }
        if (r != READ_OK) {
            return EXIT_CONN;
        }
        if (member(m, "event")) {
            session_event(s, m);
        }
        json_object_put(m);
    }
}

static double mib(json_object *o, const char *key)
{
    return json_object_get_double(member(o, key)) / (1024.0 * 1024.0);
}

/* One progress line for a query-migrate reply. */
static void format_progress(char *line, size_t size, const char *status,
                            json_object *ret)
{
    json_object *ram = member(ret, "ram");
    size_t n = 0;

    n += (size_t)snprintf(line + n, size - n, "status: %s", status);
    if (member(ret, "total-time") && n < size) {
        n += (size_t)snprintf(line + n, size - n, "  time: %" PRId64 " ms",
                              json_object_get_int64(member(ret,
                                                           "total-time")));
    }
    if (ram && n < size) {
        n += (size_t)snprintf(line + n, size - n,
                              "  transferred: %.1f MiB  remaining: %.1f MiB"
                              "  total: %.1f MiB  mbps: %.1f"
                              "  dirty-sync-count: %" PRId64,
                              mib(ram, "transferred"), mib(ram, "remaining"),
                              mib(ram, "total"),
                              json_object_get_double(member(ram, "mbps")),
                              json_object_get_int64(member(ram,
                                                    "dirty-sync-count")));
    }
    if (member(ret, "downtime") && n < size) {
        snprintf(line + n, size - n, "  downtime: %" PRId64 " ms",
                 json_object_get_int64(member(ret, "downtime")));
    }
}

static int migrate_status(Session *s)
{
    char status[64] = "none";
    char line[512], last[512] = "";

    for (;;) {
        json_object *rsp, *ret;
        int64_t next;
        int rc = session_exec(s, "query-migrate", NULL, &rsp);

        if (rc) {
            return rc;
        }
        if (member(rsp, "error")) {
            print_error(rsp);
            json_object_put(rsp);
            return EXIT_CMD_ERROR;
        }
        ret = member(rsp, "return");
        /* QEMU omits "status" before any migration. */
        snprintf(status, sizeof(status), "%s",
                 member(ret, "status")
                 ? json_object_get_string(member(ret, "status")) : "none");
        format_progress(line, sizeof(line), status, ret);
        /* Print on change only: polling faster than progress is fine. */
        if (strcmp(line, last)) {
            puts(line);
            fflush(stdout);
            snprintf(last, sizeof(last), "%s", line);
        }
        if (!strcmp(status, "completed")) {
            json_object_put(rsp);
            return 0;
        }
        if (!strcmp(status, "failed") || !strcmp(status, "cancelled")) {
            const char *desc = json_object_get_string(member(ret,
                                                             "error-desc"));

            fprintf(stderr, "mig2ctl: migration %s%s%s\n", status,
                    desc ? ": " : "", desc ? desc : "");
            json_object_put(rsp);
            return EXIT_CMD_ERROR;
        }
        json_object_put(rsp);

        /* Sleep until the next round, waking early on MIGRATION. */
        s->migration_event = false;
        next = now_ms() + (int64_t)(s->opts->interval * 1000);
        while (!s->migration_event) {
            json_object *m;
            ReadResult r = conn_next(&s->conn, next, &m);

            if (r == READ_TIMEOUT) {
                if (time_left(&s->conn, -1) == 0) {
                    fprintf(stderr, "mig2ctl: timed out; last status: "
                            "%s\n", status);
                    return EXIT_TIMEOUT;
                }
                break;
            }
            if (r != READ_OK) {
                return read_failure(r, "migration status");
            }
            if (member(m, "event")) {
                session_event(s, m);
            }
            json_object_put(m);
        }
    }
}

/* ---------------------------------------------------------------- */
/* main                                                              */
/* ---------------------------------------------------------------- */

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || v < 0 || v > 1e9) {
        return false;
    }
    *out = v;
    return true;
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("mig2ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'mig2ctl --help'.\n", stderr);
    return EXIT_CONN;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "timeout", required_argument, NULL, 't' },
        { "interval", required_argument, NULL, 'i' },
        { "wait-event", required_argument, NULL, 'w' },
        { "match", required_argument, NULL, 'm' },
        { "events", no_argument, NULL, 'e' },
        { "compact", no_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    Options o = { .timeout = 10, .interval = 0.5 };
    Session s = { .opts = &o };
    int opt, ret, npos;
    bool status_mode;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 't':
            if (!parse_seconds(optarg, &o.timeout)) {
                return usage_error("bad --timeout '%s'", optarg);
            }
            break;
        case 'i':
            if (!parse_seconds(optarg, &o.interval) || o.interval < 0.01) {
                return usage_error("bad --interval '%s'", optarg);
            }
            break;
        case 'w':
            o.wait_event = optarg;
            break;
        case 'm':
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                return usage_error("--match needs KEY=VALUE, not '%s'",
                                   optarg);
            }
            if (o.n_match == MAX_MATCHES) {
                return usage_error("too many --match options");
            }
            o.match[o.n_match++] = optarg;
            break;
        case 'e':
            o.events = true;
            break;
        case 'c':
            o.compact = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return usage_error("invalid option");
        }
    }

    npos = argc - optind;
    if (npos < 1) {
        return usage_error("missing SOCKET");
    }
    if (npos > 3) {
        return usage_error("unexpected argument '%s'", argv[optind + 3]);
    }
    o.socket = argv[optind];
    o.command = npos > 1 ? argv[optind + 1] : NULL;
    o.args = npos > 2 ? argv[optind + 2] : NULL;
    status_mode = o.command && !strcmp(o.command, "migrate-status");

    if (o.events && o.wait_event) {
        return usage_error("--events and --wait-event exclude each other");
    }
    if (o.n_match && !o.wait_event) {
        return usage_error("--match needs --wait-event");
    }
    if (!o.command && !o.events && !o.wait_event) {
        return usage_error("missing COMMAND");
    }
    if (status_mode && (o.args || o.events || o.wait_event)) {
        return usage_error("migrate-status takes no arguments or event "
                           "options");
    }

    if (!conn_open(&s.conn, o.socket,
                   o.timeout > 0 ? now_ms() + (int64_t)(o.timeout * 1000)
                   : -1)) {
        conn_close(&s.conn);
        return EXIT_CONN;
    }
    ret = session_start(&s);
    if (!ret && status_mode) {
        ret = migrate_status(&s);
    } else if (!ret) {
        if (o.command) {
            ret = run_command(&s);
        }
        if (!ret && o.wait_event) {
            ret = wait_event(&s);
        } else if (!ret && o.events) {
            ret = stream_events(&s);
        }
    }
    json_object_put(s.matched);
    conn_close(&s.conn);
    return ret;
}
