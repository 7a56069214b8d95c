/*
 * chaos-proxy - a loopback TCP proxy that misbehaves on purpose
 *
 * A test tool (built with the tests, never installed).  It sits between a
 * migration source and its destination: it listens on one port and, for
 * every client it accepts, opens a connection of its own to the target.
 * The main channel and every extra (multifd) channel a source opens to
 * the same address therefore all pass through it.
 *
 *   chaos-proxy --target 127.0.0.1:4444 [--listen [HOST:]PORT]
 *               [--rule SPEC]... [--log-frames N] [-v]
 *
 * Without --listen it listens on an ephemeral port of 127.0.0.1; either
 * way it prints the port it listens on, alone on a line, on stdout.
 *
 * Each connection is two pipes: c2s (client to server: source to
 * destination) and s2c (server to client: the destination's answers).
 * Connections are numbered from 1 in the order they are accepted; the
 * first one ("main") is a source's main channel.
 *
 * A rule is a comma-separated list of key[=value] items:
 *
 *   conn=all|main|N     which connections (default all; main is 1)
 *   dir=c2s|s2c|both    which pipes (required)
 *
 * and exactly one action:
 *
 *   delay=MS            forward every chunk MS ms after it was read; each
 *                       chunk keeps its own timestamp, so the delay adds
 *                       latency without serialising the throughput
 *   rate=BYTES          at most BYTES per second (suffixes k, M: 1024-based)
 *   cut[=close|reset]   at the position, end the connection both ways:
 *                       close shuts down both write sides (each peer reads
 *                       exactly what was forwarded, then end of stream)
 *                       and discards what still arrives; reset sends RSTs
 *   stall[=MS]          at the position, stop forwarding this pipe (for MS
 *                       ms, default for ever); the connection stays open
 *   flip[=MASK]         XOR the byte at the position with MASK (default
 *                       0xff)
 *   insert=HEX          send these bytes (at most 256) before the byte at
 *                       the position
 *
 * The position of cut, stall, flip and insert (default: at=0):
 *
 *   at=N                byte N of the pipe's stream, counted from 0
 *   frame=N             the boundary right after the Nth unit (0: before
 *                       anything)
 *   type=T[,nth=K]      the first byte of the Kth (default 1st) frame of
 *                       type T (e.g. 0x0104 for DEVICE)
 *   off=M               M bytes further (with at, frame or type)
 *
 * Units follow docs/protocol.md section 4.1: a frame is an 8-byte header
 * (16-bit type, 16-bit flags, 32-bit payload length, big-endian) and its
 * payload.  In the c2s pipe the first unit may instead be the 8-byte
 * preamble ("QEVM" and a version, section 3.1) or a channel header
 * ("MIG2", version, 16-bit length of the rest, section 12.2); it counts as
 * one unit.  Positions are offsets in the stream the sender wrote, before
 * any flip or insert.  A cut or stall happens as soon as the pipe has
 * forwarded everything before its position; a flip when the byte arrives.
 * A pipe never forwards past a frame boundary whose header is incomplete
 * while it has a rule still waiting for a frame position.  A stream that
 * stops parsing as frames (a length over 16 MiB) leaves such rules unfired.
 *
 * Examples: --rule dir=both,delay=50 adds 100 ms of round trip; --rule
 * conn=main,dir=c2s,cut,type=0x0104,nth=2 cuts the main channel just before
 * the second DEVICE frame; --rule conn=2,dir=c2s,cut,at=4M cuts the first
 * extra channel after 4 MiB.
 *
 * Every rule that fires is logged on stderr ("chaos-proxy: conn 1 c2s: cut
 * at 8"), as is each connection's end with its byte counts;
 * --log-frames N also logs the first N units of every pipe, -v more.
 *
 * One thread, one poll() loop, non-blocking sockets, a fixed buffer per
 * pipe (--buffer, default 1 MiB): a full buffer stops reading, so a slow
 * pipe pushes back on its sender as TCP would.  SIGTERM or SIGINT closes
 * everything and exits 0.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_RULES 32
#define DEFAULT_MAX_CONNS 64
#define DEFAULT_BUFFER (1u << 20)
#define DEFAULT_DRAIN_MS 5000
#define CHUNK_SLOTS 4096            /* delayed chunks queued per pipe */
#define FRAME_MAX (16u << 20)       /* spec 4.5 */
#define INSERT_MAX 256
#define MAX_WAIT_MS 1000            /* poll never sleeps longer */

enum { C2S, S2C };

static const char *const dir_names[] = { "c2s", "s2c" };

typedef enum RuleAction {
    ACT_DELAY,
    ACT_RATE,
    ACT_CUT,
    ACT_STALL,
    ACT_FLIP,
    ACT_INSERT,
} RuleAction;

static const char *const action_names[] = {
    [ACT_DELAY] = "delay",
    [ACT_RATE] = "rate",
    [ACT_CUT] = "cut",
    [ACT_STALL] = "stall",
    [ACT_FLIP] = "flip",
    [ACT_INSERT] = "insert",
};

typedef enum PosKind {
    POS_AT,
    POS_FRAME,
    POS_TYPE,
} PosKind;

typedef struct Rule {
    RuleAction action;
    unsigned conn;              /* 0: every connection */
    bool dir[2];
    PosKind pos;
    uint64_t at;                /* POS_AT: offset; POS_FRAME: unit count */
    uint16_t type;              /* POS_TYPE */
    uint64_t nth;               /* POS_TYPE, from 1 */
    uint64_t off;
    uint64_t value;             /* delay ms, rate B/s, stall ms, flip mask */
    bool reset;                 /* cut with RSTs */
    uint8_t insert[INSERT_MAX];
    size_t insert_len;
} Rule;

/* A positional rule as it applies to one pipe. */
typedef struct RuleInst {
    const Rule *r;
    bool resolved;              /* pos is known */
    bool fired;
    uint64_t pos;
    uint64_t seen;              /* POS_TYPE: matching frames so far */
} RuleInst;

typedef enum ParseState {
    PS_HEADER,                  /* collecting a unit's first 8 bytes */
    PS_BODY,                    /* skipping the rest of the unit */
    PS_DEAD,                    /* not (or no longer) a frame stream */
} ParseState;

typedef struct Parser {
    ParseState st;
    bool first;                 /* next unit is the stream's first */
    uint8_t hdr[8];
    size_t have;
    uint64_t off;               /* stream offset of the next byte fed */
    uint64_t unit_start;
    uint64_t body_left;
    uint64_t units;             /* units whose header was parsed */
} Parser;

typedef struct Chunk {
    uint64_t end;               /* stream offset just past the chunk */
    int64_t due;                /* when it may go out (ms) */
} Chunk;

typedef struct Conn Conn;

typedef struct Pipe {
    Conn *conn;
    int dir;
    int in_fd;
    int out_fd;
    uint8_t *buf;               /* ring: stream offset o is buf[o % cap] */
    size_t cap;
    uint64_t rd;                /* stream bytes read */
    uint64_t fwd;               /* stream bytes forwarded */
    uint64_t sent;              /* bytes written, inserted ones included */
    bool eof;                   /* in_fd reached end of stream */
    bool shut;                  /* out_fd's write side is shut down */
    bool want_out;              /* the last write would block */
    uint64_t delay_ms;
    Chunk *chunks;              /* ring of CHUNK_SLOTS when delay_ms */
    size_t ch_head;
    size_t ch_count;
    uint64_t rate;              /* bytes/s, 0: unlimited */
    double tokens;
    int64_t tok_ms;
    bool stalled;
    int64_t stall_until;        /* 0: for ever */
    const uint8_t *ins;         /* pending inserted bytes */
    size_t ins_left;
    Parser ps;
    RuleInst inst[MAX_RULES];
    int ninst;
} Pipe;

typedef enum ConnState {
    CS_CONNECTING,              /* waiting for the target to accept */
    CS_OPEN,
    CS_DRAINING,                /* cut: discarding until both ends close */
    CS_CLOSED,
} ConnState;

struct Conn {
    unsigned id;
    ConnState st;
    int fd[2];                  /* 0: the client, 1: the target */
    Pipe p[2];
    int64_t drain_until;
    bool drained[2];            /* DRAINING: fd[i] reached end of stream */
};

typedef struct Proxy {
    int lfd;
    int sig_pipe[2];
    struct addrinfo *target;
    Rule rules[MAX_RULES];
    int nrules;
    size_t bufsize;
    unsigned max_conns;
    int64_t drain_ms;
    uint64_t log_frames;
    bool verbose;
    Conn **conns;
    unsigned nconns;
    unsigned next_id;
} Proxy;

static Proxy proxy;

/* ---------------------------------------------------------------- */
/* Helpers                                                           */
/* ---------------------------------------------------------------- */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
    va_list ap;

    fputs("chaos-proxy: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl >= 0) {
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

static void set_nodelay(int fd)
{
    int one = 1;

    /* Small frames go out at once: Nagle would distort the latency. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* "123", "4k", "16M", "0x10": false unless the whole string is a number. */
static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    unsigned long long x;

    if (!s || !*s || *s == '-') {
        return false;
    }
    errno = 0;
    x = strtoull(s, &end, 0);
    if (errno || end == s) {
        return false;
    }
    if (*end == 'k' || *end == 'K') {
        x <<= 10;
        end++;
    } else if (*end == 'M') {
        x <<= 20;
        end++;
    } else if (*end == 'G') {
        x <<= 30;
        end++;
    }
    if (*end) {
        return false;
    }
    *v = x;
    return true;
}

static bool parse_hex(const char *s, uint8_t *out, size_t max, size_t *len)
{
    size_t n = strlen(s), i;

    if (n == 0 || n % 2 || n / 2 > max) {
        return false;
    }
    for (i = 0; i < n / 2; i++) {
        unsigned v;

        if (sscanf(s + 2 * i, "%2x", &v) != 1 ||
            !strchr("0123456789abcdefABCDEF", s[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", s[2 * i + 1])) {
            return false;
        }
        out[i] = (uint8_t)v;
    }
    *len = n / 2;
    return true;
}

/* ---------------------------------------------------------------- */
/* Rules                                                             */
/* ---------------------------------------------------------------- */

static bool rule_set_action(Rule *r, bool *have, RuleAction a)
{
    if (*have) {
        return false;
    }
    *have = true;
    r->action = a;
    return true;
}

/* Parse one --rule; false with a message on stderr. */
static bool parse_rule(const char *spec, Rule *r)
{
    char *copy = strdup(spec), *save = NULL, *item;
    bool have_action = false, have_dir = false, have_pos = false;
    bool ok = true;

    if (!copy) {
        return false;
    }
    memset(r, 0, sizeof(*r));
    r->nth = 1;
    r->value = 0;
    for (item = strtok_r(copy, ",", &save); item && ok;
         item = strtok_r(NULL, ",", &save)) {
        char *val = strchr(item, '=');

        if (val) {
            *val++ = '\0';
        }
        if (strcmp(item, "conn") == 0 && val) {
            uint64_t n;

            if (strcmp(val, "all") == 0) {
                r->conn = 0;
            } else if (strcmp(val, "main") == 0) {
                r->conn = 1;
            } else if (parse_u64(val, &n) && n >= 1 && n <= UINT32_MAX) {
                r->conn = (unsigned)n;
            } else {
                ok = false;
            }
        } else if (strcmp(item, "dir") == 0 && val) {
            have_dir = true;
            r->dir[C2S] = strcmp(val, "c2s") == 0 || strcmp(val, "both") == 0;
            r->dir[S2C] = strcmp(val, "s2c") == 0 || strcmp(val, "both") == 0;
            ok = r->dir[C2S] || r->dir[S2C];
        } else if (strcmp(item, "delay") == 0 && val) {
            ok = rule_set_action(r, &have_action, ACT_DELAY) &&
                 parse_u64(val, &r->value);
        } else if (strcmp(item, "rate") == 0 && val) {
            ok = rule_set_action(r, &have_action, ACT_RATE) &&
                 parse_u64(val, &r->value) && r->value > 0;
        } else if (strcmp(item, "cut") == 0) {
            ok = rule_set_action(r, &have_action, ACT_CUT);
            if (val) {
                r->reset = strcmp(val, "reset") == 0;
                ok = ok && (r->reset || strcmp(val, "close") == 0);
            }
        } else if (strcmp(item, "stall") == 0) {
            ok = rule_set_action(r, &have_action, ACT_STALL) &&
                 (!val || parse_u64(val, &r->value));
        } else if (strcmp(item, "flip") == 0) {
            r->value = 0xff;
            ok = rule_set_action(r, &have_action, ACT_FLIP) &&
                 (!val || (parse_u64(val, &r->value) && r->value >= 1 &&
                           r->value <= 0xff));
        } else if (strcmp(item, "insert") == 0 && val) {
            ok = rule_set_action(r, &have_action, ACT_INSERT) &&
                 parse_hex(val, r->insert, sizeof(r->insert), &r->insert_len);
        } else if (strcmp(item, "at") == 0 && val && !have_pos) {
            have_pos = true;
            r->pos = POS_AT;
            ok = parse_u64(val, &r->at);
        } else if (strcmp(item, "frame") == 0 && val && !have_pos) {
            have_pos = true;
            r->pos = POS_FRAME;
            ok = parse_u64(val, &r->at);
        } else if (strcmp(item, "type") == 0 && val && !have_pos) {
            uint64_t t;

            have_pos = true;
            r->pos = POS_TYPE;
            ok = parse_u64(val, &t) && t <= 0xffff;
            r->type = (uint16_t)t;
        } else if (strcmp(item, "nth") == 0 && val) {
            ok = parse_u64(val, &r->nth) && r->nth >= 1;
        } else if (strcmp(item, "off") == 0 && val) {
            ok = parse_u64(val, &r->off);
        } else {
            ok = false;
        }
    }
    free(copy);
    if (ok && (!have_action || !have_dir)) {
        fprintf(stderr, "chaos-proxy: rule '%s' needs dir= and an action\n",
                spec);
        return false;
    }
    if (!ok) {
        fprintf(stderr, "chaos-proxy: bad rule '%s' (see --help)\n", spec);
    }
    return ok;
}

static bool rule_positional(const Rule *r)
{
    return r->action != ACT_DELAY && r->action != ACT_RATE;
}

static void inst_resolve(Pipe *p, RuleInst *ri, uint64_t pos)
{
    ri->resolved = true;
    ri->pos = pos;
    if (pos < p->fwd) {
        /* Cannot happen while the parse hold works; never fire late. */
        logf_("conn %u %s: %s position %" PRIu64 " already passed",
              p->conn->id, dir_names[p->dir], action_names[ri->r->action],
              pos);
        ri->fired = true;
    }
}

static bool pipe_has_unresolved(const Pipe *p)
{
    int i;

    for (i = 0; i < p->ninst; i++) {
        if (!p->inst[i].resolved && !p->inst[i].fired) {
            return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------- */
/* Frame parser (positions are in the sender's stream)               */
/* ---------------------------------------------------------------- */

static void parser_unit(Pipe *p)
{
    Parser *ps = &p->ps;
    bool frame = true;
    uint64_t body;
    uint16_t type = 0, flags = 0;
    int i;

    if (ps->first && p->dir == C2S && memcmp(ps->hdr, "QEVM", 4) == 0) {
        frame = false;
        body = 0;
    } else if (ps->first && p->dir == C2S && memcmp(ps->hdr, "MIG2", 4) == 0) {
        frame = false;
        body = be16(ps->hdr + 6);
    } else {
        type = be16(ps->hdr);
        flags = be16(ps->hdr + 2);
        body = be32(ps->hdr + 4);
        if (body > FRAME_MAX) {
            logf_("conn %u %s: %" PRIu32 "-byte frame at %" PRIu64
                  ": not a frame stream, frame positions stop here",
                  p->conn->id, dir_names[p->dir], be32(ps->hdr + 4),
                  ps->unit_start);
            ps->st = PS_DEAD;
            return;
        }
    }
    ps->first = false;
    ps->units++;
    if (ps->units <= proxy.log_frames) {
        if (frame) {
            logf_("conn %u %s: unit %" PRIu64 " at %" PRIu64 ": frame type "
                  "0x%04x flags 0x%04x length %" PRIu64, p->conn->id,
                  dir_names[p->dir], ps->units, ps->unit_start, type, flags,
                  body);
        } else {
            logf_("conn %u %s: unit %" PRIu64 " at %" PRIu64 ": %s length "
                  "%" PRIu64, p->conn->id, dir_names[p->dir], ps->units,
                  ps->unit_start, body ? "channel-header" : "preamble",
                  8 + body);
        }
    }
    for (i = 0; i < p->ninst; i++) {
        RuleInst *ri = &p->inst[i];

        if (ri->resolved || ri->fired) {
            continue;
        }
        if (ri->r->pos == POS_FRAME && ri->r->at == ps->units) {
            inst_resolve(p, ri, ps->unit_start + 8 + body + ri->r->off);
        } else if (ri->r->pos == POS_TYPE && frame && type == ri->r->type &&
                   ++ri->seen == ri->r->nth) {
            inst_resolve(p, ri, ps->unit_start + ri->r->off);
        }
    }
    if (body) {
        ps->st = PS_BODY;
        ps->body_left = body;
    } else {
        ps->st = PS_HEADER;
        ps->have = 0;
        ps->unit_start = ps->off;
    }
}

static void parser_feed(Pipe *p, const uint8_t *d, size_t n)
{
    Parser *ps = &p->ps;

    while (n && ps->st != PS_DEAD) {
        size_t k;

        if (ps->st == PS_HEADER) {
            k = 8 - ps->have < n ? 8 - ps->have : n;
            memcpy(ps->hdr + ps->have, d, k);
            ps->have += k;
            ps->off += k;
            d += k;
            n -= k;
            if (ps->have == 8) {
                parser_unit(p);
            }
        } else {
            k = ps->body_left < n ? (size_t)ps->body_left : n;
            ps->body_left -= k;
            ps->off += k;
            d += k;
            n -= k;
            if (!ps->body_left) {
                ps->st = PS_HEADER;
                ps->have = 0;
                ps->unit_start = ps->off;
            }
        }
    }
}

/* Forwarding may not pass this offset yet (frame positions unknown). */
static uint64_t parser_hold(const Pipe *p)
{
    if (p->ps.st == PS_HEADER && pipe_has_unresolved(p)) {
        return p->ps.unit_start;
    }
    return UINT64_MAX;
}

/* ---------------------------------------------------------------- */
/* Connections                                                       */
/* ---------------------------------------------------------------- */

static void conn_close_fds(Conn *c, bool reset)
{
    int i;

    for (i = 0; i < 2; i++) {
        if (c->fd[i] < 0) {
            continue;
        }
        if (reset) {
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };

            setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c->fd[i]);
        c->fd[i] = -1;
    }
}

static void conn_end(Conn *c, const char *why)
{
    if (c->st == CS_CLOSED) {
        return;
    }
    logf_("conn %u closed (%s): c2s %" PRIu64 " read %" PRIu64 " forwarded, "
          "s2c %" PRIu64 " read %" PRIu64 " forwarded", c->id, why,
          c->p[C2S].rd, c->p[C2S].fwd, c->p[S2C].rd, c->p[S2C].fwd);
    conn_close_fds(c, false);
    c->st = CS_CLOSED;
}

/* A rule ends the connection: both ways, at once. */
static void conn_cut(Conn *c, bool reset)
{
    int i;

    if (reset) {
        conn_close_fds(c, true);
        conn_end(c, "cut, reset");
        return;
    }
    /*
     * Each peer reads what was forwarded, then end of stream.  What they
     * still send is read and dropped: closing a socket with unread input
     * would send a reset, which could destroy data before it is read.
     */
    for (i = 0; i < 2; i++) {
        shutdown(c->fd[i], SHUT_WR);
        c->drained[i] = false;
    }
    c->st = CS_DRAINING;
    c->drain_until = now_ms() + proxy.drain_ms;
}

static void conn_drain(Conn *c, int i)
{
    uint8_t sink[65536];
    ssize_t n;

    for (;;) {
        n = read(c->fd[i], sink, sizeof(sink));
        if (n > 0) {
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->drained[i] = true;
        }
        break;
    }
    if (c->drained[0] && c->drained[1]) {
        conn_end(c, "cut");
    }
}

static bool pipe_init(Conn *c, int dir)
{
    Pipe *p = &c->p[dir];
    int i;

    memset(p, 0, sizeof(*p));
    p->conn = c;
    p->dir = dir;
    p->in_fd = c->fd[dir == C2S ? 0 : 1];
    p->out_fd = c->fd[dir == C2S ? 1 : 0];
    p->cap = proxy.bufsize;
    p->buf = malloc(p->cap);
    p->ps.st = PS_HEADER;
    p->ps.first = true;
    p->tok_ms = now_ms();
    if (!p->buf) {
        return false;
    }
    for (i = 0; i < proxy.nrules; i++) {
        const Rule *r = &proxy.rules[i];

        if ((r->conn && r->conn != c->id) || !r->dir[dir]) {
            continue;
        }
        if (r->action == ACT_DELAY) {
            p->delay_ms = r->value;
        } else if (r->action == ACT_RATE) {
            p->rate = r->value;
            /* A small start: no initial burst beyond ~20 ms of traffic. */
            p->tokens = 0;
        } else {
            RuleInst *ri = &p->inst[p->ninst++];

            ri->r = r;
            if (r->pos == POS_AT) {
                ri->resolved = true;
                ri->pos = r->at + r->off;
            } else if (r->pos == POS_FRAME && r->at == 0) {
                ri->resolved = true;
                ri->pos = r->off;
            }
        }
    }
    if (p->delay_ms) {
        p->chunks = calloc(CHUNK_SLOTS, sizeof(*p->chunks));
        if (!p->chunks) {
            return false;
        }
    }
    return true;
}

static void conn_free(Conn *c)
{
    int i;

    conn_close_fds(c, false);
    for (i = 0; i < 2; i++) {
        free(c->p[i].buf);
        free(c->p[i].chunks);
    }
    free(c);
}

static void log_fire(const Pipe *p, const RuleInst *ri, const char *extra)
{
    logf_("conn %u %s: %s at %" PRIu64 "%s", p->conn->id, dir_names[p->dir],
          action_names[ri->r->action], ri->pos, extra ? extra : "");
}

/*
 * Fire the rules whose position the pipe has reached.  Returns false
 * when one ended the connection; *@hold when a flip waits for its byte.
 */
static bool pipe_fire(Pipe *p, bool *hold)
{
    int i;

    *hold = false;
    for (i = 0; i < p->ninst; i++) {
        RuleInst *ri = &p->inst[i];
        char extra[64];

        if (!ri->resolved || ri->fired || ri->pos != p->fwd) {
            continue;
        }
        switch (ri->r->action) {
        case ACT_FLIP:
            if (p->rd <= p->fwd) {
                *hold = true;
                continue;
            }
            snprintf(extra, sizeof(extra), ": 0x%02x -> 0x%02x",
                     p->buf[p->fwd % p->cap],
                     p->buf[p->fwd % p->cap] ^ (uint8_t)ri->r->value);
            p->buf[p->fwd % p->cap] ^= (uint8_t)ri->r->value;
            ri->fired = true;
            log_fire(p, ri, extra);
            break;
        case ACT_INSERT:
            ri->fired = true;
            p->ins = ri->r->insert;
            p->ins_left = ri->r->insert_len;
            snprintf(extra, sizeof(extra), ": %zu bytes", p->ins_left);
            log_fire(p, ri, extra);
            break;
        case ACT_STALL:
            ri->fired = true;
            p->stalled = true;
            p->stall_until = ri->r->value ? now_ms() + (int64_t)ri->r->value
                                          : 0;
            log_fire(p, ri, ri->r->value ? " (timed)" : " (for ever)");
            break;
        case ACT_CUT:
            ri->fired = true;
            log_fire(p, ri, ri->r->reset ? " (reset)" : "");
            conn_cut(p->conn, ri->r->reset);
            return false;
        default:
            break;
        }
    }
    return true;
}

/* The stream offset this pipe may forward up to now. */
static uint64_t pipe_limit(Pipe *p, int64_t now)
{
    uint64_t lim = p->rd, h;
    size_t i;
    int k;

    if (p->delay_ms) {
        uint64_t ok = p->fwd;

        for (i = 0; i < p->ch_count; i++) {
            const Chunk *ch = &p->chunks[(p->ch_head + i) % CHUNK_SLOTS];

            if (ch->due > now) {
                break;
            }
            ok = ch->end;
        }
        lim = ok < lim ? ok : lim;
    }
    for (k = 0; k < p->ninst; k++) {
        const RuleInst *ri = &p->inst[k];

        if (ri->resolved && !ri->fired && ri->pos >= p->fwd && ri->pos < lim) {
            lim = ri->pos;
        }
    }
    h = parser_hold(p);
    return h < lim ? h : lim;
}

static void pipe_refill(Pipe *p, int64_t now)
{
    double burst;

    if (!p->rate) {
        return;
    }
    burst = (double)p->rate / 50.0;
    if (burst < 1500.0) {
        burst = 1500.0;
    }
    p->tokens += (double)p->rate * (double)(now - p->tok_ms) / 1000.0;
    if (p->tokens > burst) {
        p->tokens = burst;
    }
    p->tok_ms = now;
}

/* Forward what may go now.  Returns false when the connection ended. */
static bool pipe_pump(Pipe *p)
{
    Conn *c = p->conn;
    int64_t now = now_ms();

    while (c->st == CS_OPEN) {
        uint64_t lim, n;
        size_t at;
        ssize_t w;
        bool hold;

        if (!pipe_fire(p, &hold)) {
            return false;
        }
        if (p->stalled) {
            if (!p->stall_until || now < p->stall_until) {
                return true;
            }
            p->stalled = false;
            logf_("conn %u %s: stall ends at %" PRIu64, c->id,
                  dir_names[p->dir], p->fwd);
        }
        if (p->ins_left) {
            w = send(p->out_fd, p->ins, p->ins_left, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    p->want_out = errno == EAGAIN;
                    return true;
                }
                conn_end(c, "write failed");
                return false;
            }
            p->ins += w;
            p->ins_left -= (size_t)w;
            p->sent += (uint64_t)w;
            continue;
        }
        if (hold) {
            break;
        }
        lim = pipe_limit(p, now);
        if (lim <= p->fwd) {
            break;
        }
        n = lim - p->fwd;
        at = (size_t)(p->fwd % p->cap);
        if (n > p->cap - at) {
            n = p->cap - at;
        }
        if (p->rate) {
            pipe_refill(p, now);
            if (p->tokens < 1.0) {
                break;
            }
            if ((double)n > p->tokens) {
                n = (uint64_t)p->tokens;
            }
        }
        w = send(p->out_fd, p->buf + at, (size_t)n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                p->want_out = errno == EAGAIN;
                return true;
            }
            conn_end(c, "write failed");
            return false;
        }
        p->fwd += (uint64_t)w;
        p->sent += (uint64_t)w;
        if (p->rate) {
            p->tokens -= (double)w;
        }
        while (p->ch_count &&
               p->chunks[p->ch_head].end <= p->fwd) {
            p->ch_head = (p->ch_head + 1) % CHUNK_SLOTS;
            p->ch_count--;
        }
    }
    if (c->st == CS_OPEN && p->eof && !p->shut && p->fwd == p->rd &&
        !p->stalled && !p->ins_left) {
        shutdown(p->out_fd, SHUT_WR);
        p->shut = true;
        if (proxy.verbose) {
            logf_("conn %u %s: end of stream after %" PRIu64 " bytes", c->id,
                  dir_names[p->dir], p->rd);
        }
        if (c->p[C2S].shut && c->p[S2C].shut) {
            conn_end(c, "both ends closed");
            return false;
        }
    }
    return c->st == CS_OPEN;
}

static bool pipe_can_read(const Pipe *p)
{
    return !p->eof && p->rd - p->fwd < p->cap &&
           (!p->delay_ms || p->ch_count < CHUNK_SLOTS);
}

static void pipe_read(Pipe *p)
{
    Conn *c = p->conn;
    size_t at = (size_t)(p->rd % p->cap);
    size_t room = p->cap - (size_t)(p->rd - p->fwd);
    ssize_t n;

    if (!pipe_can_read(p)) {
        return;
    }
    if (room > p->cap - at) {
        room = p->cap - at;
    }
    n = read(p->in_fd, p->buf + at, room);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            conn_end(c, errno == ECONNRESET ? "reset by a peer"
                                            : "read failed");
        }
        return;
    }
    if (n == 0) {
        p->eof = true;
        /* No more bytes: nothing can complete a partial frame header. */
        p->ps.st = PS_DEAD;
        if (proxy.verbose) {
            logf_("conn %u %s: end of stream from the %s after %" PRIu64
                  " bytes", c->id, dir_names[p->dir],
                  p->dir == C2S ? "client" : "target", p->rd);
        }
        return;
    }
    parser_feed(p, p->buf + at, (size_t)n);
    p->rd += (uint64_t)n;
    if (p->delay_ms) {
        Chunk *ch = &p->chunks[(p->ch_head + p->ch_count) % CHUNK_SLOTS];

        ch->end = p->rd;
        ch->due = now_ms() + (int64_t)p->delay_ms;
        p->ch_count++;
    }
}

/* When this pipe needs the loop to wake up next (-1: no timer). */
static int64_t pipe_next_timer(const Pipe *p, int64_t now)
{
    int64_t t = -1;

    if (p->conn->st != CS_OPEN) {
        return -1;
    }
    if (p->stalled) {
        return p->stall_until ? p->stall_until : -1;
    }
    if (p->rd > p->fwd && p->delay_ms) {
        size_t i;

        for (i = 0; i < p->ch_count; i++) {
            const Chunk *ch = &p->chunks[(p->ch_head + i) % CHUNK_SLOTS];

            if (ch->due > now) {
                t = ch->due;
                break;
            }
        }
    }
    if (p->rd > p->fwd && p->rate && p->tokens < 1500.0) {
        int64_t r = now + 1 + (int64_t)((1500.0 - p->tokens) * 1000.0 /
                                        (double)p->rate);

        t = t < 0 || r < t ? r : t;
    }
    return t;
}

static void conn_open(Conn *c)
{
    c->st = CS_OPEN;
    if (proxy.verbose) {
        logf_("conn %u open", c->id);
    }
    if (pipe_pump(&c->p[C2S])) {
        pipe_pump(&c->p[S2C]);
    }
}

static void accept_clients(void)
{
    for (;;) {
        int fd = accept4(proxy.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        Conn *c;
        int up;

        if (fd < 0) {
            return;
        }
        proxy.next_id++;
        if (proxy.nconns >= proxy.max_conns) {
            logf_("conn %u refused: %u connections open", proxy.next_id,
                  proxy.nconns);
            close(fd);
            continue;
        }
        set_nodelay(fd);
        c = calloc(1, sizeof(*c));
        up = socket(proxy.target->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (!c || up < 0) {
            logf_("conn %u: out of resources", proxy.next_id);
            free(c);
            close(fd);
            if (up >= 0) {
                close(up);
            }
            continue;
        }
        c->id = proxy.next_id;
        c->fd[0] = fd;
        c->fd[1] = up;
        set_nonblock(up);
        set_nodelay(up);
        if (!pipe_init(c, C2S) || !pipe_init(c, S2C)) {
            logf_("conn %u: out of memory", c->id);
            conn_free(c);
            continue;
        }
        proxy.conns[proxy.nconns++] = c;
        if (proxy.verbose) {
            logf_("conn %u accepted", c->id);
        }
        if (connect(up, proxy.target->ai_addr, proxy.target->ai_addrlen) == 0) {
            conn_open(c);
        } else if (errno == EINPROGRESS) {
            c->st = CS_CONNECTING;
        } else {
            logf_("conn %u: cannot connect to the target: %s", c->id,
                  strerror(errno));
            conn_end(c, "connect failed");
        }
    }
}

static void conn_connected(Conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        logf_("conn %u: cannot connect to the target: %s", c->id,
              strerror(err ? err : errno));
        conn_end(c, "connect failed");
        return;
    }
    conn_open(c);
}

/* ---------------------------------------------------------------- */
/* Main loop                                                         */
/* ---------------------------------------------------------------- */

static void on_signal(int sig)
{
    int saved = errno;
    char b = (char)sig;

    if (write(proxy.sig_pipe[1], &b, 1) < 0) {
        /* The loop also wakes within MAX_WAIT_MS. */
    }
    errno = saved;
}

static short pipe_events_in(const Pipe *p)
{
    return pipe_can_read(p) ? POLLIN : 0;
}

static void run(void)
{
    struct pollfd *pfd = calloc(2 + 2 * (size_t)proxy.max_conns,
                                sizeof(*pfd));

    if (!pfd) {
        logf_("out of memory");
        return;
    }
    for (;;) {
        int64_t now = now_ms(), next = now + MAX_WAIT_MS;
        unsigned i;
        int n, k;

        pfd[0] = (struct pollfd){ .fd = proxy.lfd, .events = POLLIN };
        pfd[1] = (struct pollfd){ .fd = proxy.sig_pipe[0], .events = POLLIN };
        for (i = 0; i < proxy.nconns; i++) {
            Conn *c = proxy.conns[i];
            struct pollfd *a = &pfd[2 + 2 * i], *b = a + 1;

            a->fd = c->fd[0];
            b->fd = c->fd[1];
            a->events = b->events = 0;
            a->revents = b->revents = 0;
            if (c->st == CS_CONNECTING) {
                a->events = pipe_events_in(&c->p[C2S]);
                b->events = POLLOUT;
            } else if (c->st == CS_OPEN) {
                a->events = pipe_events_in(&c->p[C2S]) |
                            (c->p[S2C].want_out ? POLLOUT : 0);
                b->events = pipe_events_in(&c->p[S2C]) |
                            (c->p[C2S].want_out ? POLLOUT : 0);
                for (k = 0; k < 2; k++) {
                    int64_t t = pipe_next_timer(&c->p[k], now);

                    if (t >= 0 && t < next) {
                        next = t;
                    }
                }
            } else if (c->st == CS_DRAINING) {
                a->events = c->drained[0] ? 0 : POLLIN;
                b->events = c->drained[1] ? 0 : POLLIN;
                if (c->drain_until < next) {
                    next = c->drain_until;
                }
            }
            /* Nothing wanted: do not let a hang-up wake the loop. */
            if (!a->events) {
                a->fd = -1;
            }
            if (!b->events) {
                b->fd = -1;
            }
        }
        n = poll(pfd, 2 + 2 * (nfds_t)proxy.nconns,
                 next > now ? (int)(next - now) : 0);
        if (n < 0 && errno != EINTR) {
            logf_("poll failed: %s", strerror(errno));
            break;
        }
        if (n > 0 && pfd[1].revents) {
            break;
        }
        for (i = 0; i < proxy.nconns; i++) {
            Conn *c = proxy.conns[i];
            short ra = n > 0 ? pfd[2 + 2 * i].revents : 0;
            short rb = n > 0 ? pfd[3 + 2 * i].revents : 0;

            if (c->st == CS_CONNECTING) {
                if (ra) {
                    pipe_read(&c->p[C2S]);
                }
                if (rb && c->st == CS_CONNECTING) {
                    conn_connected(c);
                }
            } else if (c->st == CS_OPEN) {
                if (ra & POLLOUT) {
                    c->p[S2C].want_out = false;
                }
                if (rb & POLLOUT) {
                    c->p[C2S].want_out = false;
                }
                if (ra & (POLLIN | POLLHUP | POLLERR)) {
                    pipe_read(&c->p[C2S]);
                }
                if (c->st == CS_OPEN && (rb & (POLLIN | POLLHUP | POLLERR))) {
                    pipe_read(&c->p[S2C]);
                }
                if (c->st == CS_OPEN && !c->p[C2S].want_out) {
                    pipe_pump(&c->p[C2S]);
                }
                if (c->st == CS_OPEN && !c->p[S2C].want_out) {
                    pipe_pump(&c->p[S2C]);
                }
            } else if (c->st == CS_DRAINING) {
                if (ra) {
                    conn_drain(c, 0);
                }
                if (rb && c->st == CS_DRAINING) {
                    conn_drain(c, 1);
                }
                if (c->st == CS_DRAINING && now_ms() >= c->drain_until) {
                    conn_end(c, "cut, drain timed out");
                }
            }
        }
        /* Forget closed connections. */
        for (i = 0; i < proxy.nconns; i++) {
            if (proxy.conns[i]->st == CS_CLOSED) {
                conn_free(proxy.conns[i]);
                proxy.conns[i] = proxy.conns[--proxy.nconns];
                i--;
            }
        }
        if (n > 0 && (pfd[0].revents & POLLIN)) {
            accept_clients();
        }
    }
    free(pfd);
}

/* ---------------------------------------------------------------- */
/* Set-up                                                            */
/* ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
"usage: chaos-proxy --target HOST:PORT [options]\n"
"  --target HOST:PORT   where each accepted client is connected to\n"
"  --listen [HOST:]PORT listen here (default 127.0.0.1:0); the port is\n"
"                       printed on stdout either way\n"
"  --rule SPEC          misbehave (repeatable, at most %d):\n"
"      conn=all|main|N  dir=c2s|s2c|both, and one action:\n"
"      delay=MS rate=BYTES cut[=close|reset] stall[=MS] flip[=MASK]\n"
"      insert=HEX; cut, stall, flip and insert happen at a position:\n"
"      at=N | frame=N | type=T[,nth=K], plus off=M (default at=0)\n"
"  --buffer BYTES       buffer per pipe (default 1M)\n"
"  --max-conns N        connections at once (default %d)\n"
"  --drain-ms MS        after a cut, wait this long for both ends to\n"
"                       close (default %d)\n"
"  --log-frames N       log the first N units of every pipe\n"
"  -v, --verbose        log connections and ends of stream\n"
"  -h, --help\n"
"See the comment at the top of tests/tools/chaos-proxy.c.\n",
            MAX_RULES, DEFAULT_MAX_CONNS, DEFAULT_DRAIN_MS);
}

/* "HOST:PORT" or "PORT" (host @defhost); "[v6]:PORT" too. */
static struct addrinfo *resolve(const char *spec, const char *defhost,
                                bool passive)
{
    struct addrinfo hints = {
        .ai_socktype = SOCK_STREAM,
        .ai_flags = passive ? AI_PASSIVE : 0,
    }, *res = NULL;
    char *copy = strdup(spec), *host, *port;
    int rc;

    if (!copy) {
        return NULL;
    }
    port = strrchr(copy, ':');
    if (port) {
        *port++ = '\0';
        host = copy;
        if (*host == '[' && host[strlen(host) - 1] == ']') {
            host[strlen(host) - 1] = '\0';
            host++;
        }
    } else {
        host = (char *)defhost;
        port = copy;
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        fprintf(stderr, "chaos-proxy: cannot resolve '%s': %s\n", spec,
                gai_strerror(rc));
        res = NULL;
    }
    free(copy);
    return res;
}

static int listen_on(const char *spec)
{
    struct addrinfo *res = resolve(spec, "127.0.0.1", true), *ai;
    int fd = -1, one = 1;

    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 128) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    if (res) {
        freeaddrinfo(res);
    }
    if (fd >= 0) {
        set_nonblock(fd);
    }
    return fd;
}

static unsigned bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        return 0;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "target", required_argument, NULL, 't' },
        { "listen", required_argument, NULL, 'l' },
        { "rule", required_argument, NULL, 'r' },
        { "buffer", required_argument, NULL, 'b' },
        { "max-conns", required_argument, NULL, 'm' },
        { "drain-ms", required_argument, NULL, 'd' },
        { "log-frames", required_argument, NULL, 'f' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *target = NULL, *listen_spec = "127.0.0.1:0";
    struct sigaction sa;
    uint64_t v;
    unsigned i;
    int opt;

    proxy.bufsize = DEFAULT_BUFFER;
    proxy.max_conns = DEFAULT_MAX_CONNS;
    proxy.drain_ms = DEFAULT_DRAIN_MS;
    proxy.lfd = -1;
    while ((opt = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
        switch (opt) {
        case 't':
            target = optarg;
            break;
        case 'l':
            listen_spec = optarg;
            break;
        case 'r':
            if (proxy.nrules == MAX_RULES) {
                fprintf(stderr, "chaos-proxy: at most %d rules\n", MAX_RULES);
                return 2;
            }
            if (!parse_rule(optarg, &proxy.rules[proxy.nrules])) {
                return 2;
            }
            proxy.nrules++;
            break;
        case 'b':
            if (!parse_u64(optarg, &v) || v < 4096 || v > (1u << 30)) {
                fprintf(stderr, "chaos-proxy: bad --buffer '%s'\n", optarg);
                return 2;
            }
            proxy.bufsize = (size_t)v;
            break;
        case 'm':
            if (!parse_u64(optarg, &v) || v < 1 || v > 4096) {
                fprintf(stderr, "chaos-proxy: bad --max-conns '%s'\n", optarg);
                return 2;
            }
            proxy.max_conns = (unsigned)v;
            break;
        case 'd':
            if (!parse_u64(optarg, &v) || v > 3600000) {
                fprintf(stderr, "chaos-proxy: bad --drain-ms '%s'\n", optarg);
                return 2;
            }
            proxy.drain_ms = (int64_t)v;
            break;
        case 'f':
            if (!parse_u64(optarg, &proxy.log_frames)) {
                fprintf(stderr, "chaos-proxy: bad --log-frames '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'v':
            proxy.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!target || optind != argc) {
        usage(stderr);
        return 2;
    }
    for (i = 0; i < (unsigned)proxy.nrules; i++) {
        if (!rule_positional(&proxy.rules[i]) &&
            (proxy.rules[i].pos != POS_AT || proxy.rules[i].at ||
             proxy.rules[i].off)) {
            fprintf(stderr, "chaos-proxy: delay and rate take no position\n");
            return 2;
        }
    }
    proxy.target = resolve(target, "127.0.0.1", false);
    if (!proxy.target) {
        return 2;
    }
    proxy.conns = calloc(proxy.max_conns, sizeof(*proxy.conns));
    if (!proxy.conns || pipe2(proxy.sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "chaos-proxy: out of resources\n");
        freeaddrinfo(proxy.target);
        free(proxy.conns);
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    proxy.lfd = listen_on(listen_spec);
    if (proxy.lfd < 0) {
        fprintf(stderr, "chaos-proxy: cannot listen on '%s': %s\n",
                listen_spec, strerror(errno));
        freeaddrinfo(proxy.target);
        free(proxy.conns);
        close(proxy.sig_pipe[0]);
        close(proxy.sig_pipe[1]);
        return 1;
    }
    printf("%u\n", bound_port(proxy.lfd));
    fflush(stdout);

    run();

    for (i = 0; i < proxy.nconns; i++) {
        conn_end(proxy.conns[i], "proxy stopped");
        conn_free(proxy.conns[i]);
    }
    free(proxy.conns);
    close(proxy.lfd);
    close(proxy.sig_pipe[0]);
    close(proxy.sig_pipe[1]);
    freeaddrinfo(proxy.target);
    if (proxy.verbose) {
        logf_("stopped");
    }
    return 0;
}
