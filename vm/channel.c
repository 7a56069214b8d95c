/*
 * mig2-vm - migration transports
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "channel.h"
#include "tls.h"

/*
 * What a peek buffer holds at least: a read takes whatever has arrived
 * up to its free space, so a HELLO comes in a few reads, not one per
 * 16 bytes.
 */
#define PEEK_MIN_CAP 65536

static char *errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *errf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);
    return s;
}

void mig_addr_clear(MigAddr *a)
{
    free(a->host);
    free(a->port);
    free(a->path);
    free(a->cmd);
    memset(a, 0, sizeof(*a));
}

bool mig_addr_parse_uri(const char *uri, MigAddr *a, char **errp)
{
    const char *rest;

    memset(a, 0, sizeof(*a));
    if (!uri) {
        *errp = strdup("missing migration URI");
        return false;
    }
    if (strncmp(uri, "tcp:", 4) == 0) {
        const char *colon;

        rest = uri + 4;
        if (*rest == '[') {
            const char *close = strchr(rest, ']');

            if (!close || close[1] != ':') {
                goto bad;
            }
            a->host = strndup(rest + 1, (size_t)(close - rest - 1));
            colon = close + 1;
        } else {
            colon = strrchr(rest, ':');
            if (!colon) {
                goto bad;
            }
            a->host = strndup(rest, (size_t)(colon - rest));
        }
        a->port = strdup(colon + 1);
        if (!a->host || !a->port || !*a->port) {
            goto bad;
        }
        a->kind = MIG_ADDR_TCP;
        return true;
    }
    if (strncmp(uri, "unix:", 5) == 0 && uri[5]) {
        a->kind = MIG_ADDR_UNIX;
        a->path = strdup(uri + 5);
        return a->path != NULL;
    }
    if (strncmp(uri, "exec:", 5) == 0 && uri[5]) {
        a->kind = MIG_ADDR_EXEC;
        a->cmd = strdup(uri + 5);
        return a->cmd != NULL;
    }
    if (strncmp(uri, "file:", 5) == 0 && uri[5]) {
        a->kind = MIG_ADDR_FILE;
        a->path = strdup(uri + 5);
        return a->path != NULL;
    }
bad:
    mig_addr_clear(a);
    /* QEMU's wording for an unknown scheme. */
    *errp = errf("Invalid migration URI '%s': expected tcp:HOST:PORT, "
                 "unix:PATH, exec:COMMAND or file:PATH", uri);
    return false;
}

static const char *json_str(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string)) {
        return NULL;
    }
    return json_object_get_string(v);
}

bool mig_addr_from_json(json_object *addr, MigAddr *a, char **errp)
{
    const char *transport, *type;

    memset(a, 0, sizeof(*a));
    if (!addr || !json_object_is_type(addr, json_type_object)) {
        *errp = strdup("Parameter 'addr' expects an object");
        return false;
    }
    transport = json_str(addr, "transport");
    if (!transport) {
        *errp = strdup("Parameter 'addr.transport' is missing");
        return false;
    }
    if (strcmp(transport, "exec") == 0) {
        json_object *args, *first;

        /* QEMU: {"transport": "exec", "args": ["sh", "-c", "..."]}. */
        if (!json_object_object_get_ex(addr, "args", &args) ||
            !json_object_is_type(args, json_type_array) ||
            json_object_array_length(args) == 0) {
            *errp = strdup("Parameter 'addr.args' is missing");
            return false;
        }
        first = json_object_array_get_idx(args, json_object_array_length(args)
                                          - 1);
        a->kind = MIG_ADDR_EXEC;
        a->cmd = strdup(json_object_get_string(first));
        return a->cmd != NULL;
    }
    if (strcmp(transport, "file") == 0) {
        const char *fn = json_str(addr, "filename");

        if (!fn) {
            *errp = strdup("Parameter 'addr.filename' is missing");
            return false;
        }
        a->kind = MIG_ADDR_FILE;
        a->path = strdup(fn);
        return a->path != NULL;
    }
    if (strcmp(transport, "socket") != 0) {
        *errp = errf("Parameter 'addr.transport' does not accept value '%s'",
                     transport);
        return false;
    }
    type = json_str(addr, "type");
    if (!type) {
        *errp = strdup("Parameter 'addr.type' is missing");
        return false;
    }
    if (strcmp(type, "inet") == 0) {
        const char *host = json_str(addr, "host");
        const char *port = json_str(addr, "port");

        if (!host || !port) {
            *errp = strdup(!host ? "Parameter 'addr.host' is missing"
                                 : "Parameter 'addr.port' is missing");
            return false;
        }
        a->kind = MIG_ADDR_TCP;
        a->host = strdup(host);
        a->port = strdup(port);
        return a->host && a->port;
    }
    if (strcmp(type, "unix") == 0) {
        const char *path = json_str(addr, "path");

        if (!path) {
            *errp = strdup("Parameter 'addr.path' is missing");
            return false;
        }
        a->kind = MIG_ADDR_UNIX;
        a->path = strdup(path);
        return a->path != NULL;
    }
    *errp = errf("Parameter 'addr.type' does not accept value '%s'", type);
    return false;
}

char *mig_addr_to_string(const MigAddr *a)
{
    switch (a->kind) {
    case MIG_ADDR_TCP:
        return strchr(a->host, ':') ? errf("tcp:[%s]:%s", a->host, a->port)
                                    : errf("tcp:%s:%s", a->host, a->port);
    case MIG_ADDR_UNIX:
        return errf("unix:%s", a->path);
    case MIG_ADDR_EXEC:
        return errf("exec:%s", a->cmd);
    case MIG_ADDR_FILE:
        return errf("file:%s", a->path);
    }
    return NULL;
}

bool mig_addr_bidirectional(const MigAddr *a)
{
    return a->kind == MIG_ADDR_TCP || a->kind == MIG_ADDR_UNIX;
}

void chan_init(Chan *c, int rfd, int wfd, int cancel_fd, int stall_ms)
{
    memset(c, 0, sizeof(*c));
    c->rfd = rfd;
    c->wfd = wfd;
    c->cancel_fd = cancel_fd;
    c->stall_ms = stall_ms;
}

void chan_close(Chan *c)
{
    if (c->tls) {
        tls_chan_bye(c, 1000);
        tls_conn_free(c->tls);
        c->tls = NULL;
    }
    if (c->wfd >= 0 && c->wfd != c->rfd) {
        close(c->wfd);
    }
    if (c->rfd >= 0) {
        close(c->rfd);
    }
    if (c->child > 0) {
        int st;

        /* Give a command that got EOF a moment to finish, then insist. */
        if (waitpid(c->child, &st, WNOHANG) == 0) {
            usleep(100000);
            if (waitpid(c->child, &st, WNOHANG) == 0) {
                kill(c->child, SIGKILL);
                waitpid(c->child, &st, 0);
            }
        }
    }
    free(c->buf);
    c->rfd = c->wfd = -1;
    c->child = 0;
    c->buf = NULL;
    c->pos = c->len = c->cap = 0;
}

int chan_wait(Chan *c, int fd, short events, char **errp)
{
    struct pollfd pfd[2] = {
        { .fd = fd, .events = events },
        { .fd = c->cancel_fd, .events = POLLIN },
    };
    int n;

    for (;;) {
        n = poll(pfd, c->cancel_fd >= 0 ? 2 : 1,
                 c->stall_ms > 0 ? c->stall_ms : -1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        break;
    }
    if (n < 0) {
        *errp = errf("poll failed: %s", strerror(errno));
        return -1;
    }
    if (c->cancel_fd >= 0 && (pfd[1].revents & POLLIN)) {
        *errp = strdup("migration cancelled");
        return -1;
    }
    if (n == 0) {
        c->stalled = true;
        *errp = errf("the peer sent nothing for %d ms (stall deadline)",
                     c->stall_ms);
        return 0;
    }
    return 1;
}

/* Show the tap the first @n bytes of @iov. */
static void tap_iov(Chan *c, const struct iovec *iov, size_t n)
{
    for (; n; iov++) {
        size_t k = n < iov->iov_len ? n : iov->iov_len;

        c->tap(c->tap_opaque, iov->iov_base, k);
        n -= k;
    }
}

bool chan_write(Chan *c, const void *p, size_t n, char **errp)
{
    struct iovec iov = { .iov_base = (void *)p, .iov_len = n };

    return chan_writev(c, &iov, 1, errp);
}

bool chan_writev(Chan *c, struct iovec *iov, int iovcnt, char **errp)
{
    if (c->tls) {
        /* The tap sees what we hand TLS (before it goes: this is rare). */
        for (int i = 0; c->tap && i < iovcnt; i++) {
            c->tap(c->tap_opaque, iov[i].iov_base, iov[i].iov_len);
        }
        return tls_chan_writev(c, iov, iovcnt, errp);
    }
    while (iovcnt > 0) {
        ssize_t n;

        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        n = writev(c->wfd, iov, iovcnt > 1024 ? 1024 : iovcnt);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (chan_wait(c, c->wfd, POLLOUT, errp) <= 0) {
                    return false;
                }
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET) {
                *errp = strdup("the peer closed the connection");
            } else {
                *errp = errf("write failed: %s", strerror(errno));
            }
            return false;
        }
        c->bytes_out += (uint64_t)n;
        if (c->tap) {
            tap_iov(c, iov, (size_t)n);
        }
        while (n > 0) {
            if ((size_t)n >= iov->iov_len) {
                n -= (ssize_t)iov->iov_len;
                iov++;
                iovcnt--;
            } else {
                iov->iov_base = (uint8_t *)iov->iov_base + n;
                iov->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    return true;
}

/* One read() into @p with the deadline; 0 at EOF, -1 on error. */
static ssize_t raw_read(Chan *c, void *p, size_t n, char **errp)
{
    if (c->tls) {
        return tls_chan_read(c, p, n, errp);
    }
    for (;;) {
        ssize_t r = read(c->rfd, p, n);

        if (r >= 0) {
            c->bytes_in += (uint64_t)r;
            return r;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (chan_wait(c, c->rfd, POLLIN, errp) <= 0) {
                return -1;
            }
            continue;
        }
        if (errno == ECONNRESET) {
            return 0;
        }
        *errp = errf("read failed: %s", strerror(errno));
        return -1;
    }
}

ssize_t chan_read_some(Chan *c, void *p, size_t n, char **errp)
{
    ssize_t r;

    if (c->len == c->pos && c->readahead && n < PEEK_MIN_CAP) {
        size_t avail;

        /* At least one byte: the read takes whatever else has come. */
        if (!chan_peek(c, 1, &avail, errp)) {
            return -1;
        }
    }
    if (c->len > c->pos) {
        size_t k = c->len - c->pos < n ? c->len - c->pos : n;

        memcpy(p, c->buf + c->pos, k);
        chan_consume(c, k);
        return (ssize_t)k;
    }
    r = raw_read(c, p, n, errp);
    if (r > 0 && c->tap) {
        c->tap(c->tap_opaque, p, (size_t)r);
    }
    return r;
}

bool chan_read(Chan *c, void *p, size_t n, char **errp)
{
    uint8_t *d = p;

    while (n) {
        ssize_t r = chan_read_some(c, d, n, errp);

        if (r < 0) {
            return false;
        }
        if (r == 0) {
            *errp = strdup("the peer closed the connection");
            return false;
        }
        d += r;
        n -= (size_t)r;
    }
    return true;
}

/* Skip @n bytes of @iov (iov_len of consumed entries becomes 0). */
static void iov_advance(struct iovec **iov, int *iovcnt, size_t n)
{
    while (n && *iovcnt) {
        size_t k = n < (*iov)->iov_len ? n : (*iov)->iov_len;

        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + k;
        (*iov)->iov_len -= k;
        n -= k;
        if ((*iov)->iov_len == 0) {
            (*iov)++;
            (*iovcnt)--;
        }
    }
}

bool chan_readv(Chan *c, struct iovec *iov, int iovcnt, char **errp)
{
    /* Bytes already buffered (from a peek) come first. */
    while (iovcnt && c->len > c->pos) {
        size_t k = c->len - c->pos;

        if (k > iov->iov_len) {
            k = iov->iov_len;
        }
        memcpy(iov->iov_base, c->buf + c->pos, k);
        chan_consume(c, k);
        iov_advance(&iov, &iovcnt, k);
    }
    while (iovcnt > 0) {
        ssize_t n;

        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        if (c->tls) {
            /* GnuTLS decrypts record by record: one buffer at a time. */
            n = tls_chan_read(c, iov->iov_base, iov->iov_len, errp);
            if (n < 0) {
                return false;
            }
            if (n == 0) {
                *errp = strdup("the peer closed the connection");
                return false;
            }
            if (c->tap) {
                c->tap(c->tap_opaque, iov->iov_base, (size_t)n);
            }
            iov_advance(&iov, &iovcnt, (size_t)n);
            continue;
        }
        n = readv(c->rfd, iov, iovcnt > 1024 ? 1024 : iovcnt);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (chan_wait(c, c->rfd, POLLIN, errp) <= 0) {
                    return false;
                }
                continue;
            }
            *errp = errno == ECONNRESET
                        ? strdup("the peer closed the connection")
                        : errf("read failed: %s", strerror(errno));
            return false;
        }
        if (n == 0) {
            *errp = strdup("the peer closed the connection");
            return false;
        }
        c->bytes_in += (uint64_t)n;
        if (c->tap) {
            tap_iov(c, iov, (size_t)n);
        }
        iov_advance(&iov, &iovcnt, (size_t)n);
    }
    return true;
}

const uint8_t *chan_peek(Chan *c, size_t n, size_t *avail, char **errp)
{
    if (c->pos && c->len - c->pos < n) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->cap < n || c->cap < PEEK_MIN_CAP) {
        size_t cap = n > PEEK_MIN_CAP ? n : PEEK_MIN_CAP;
        uint8_t *b = realloc(c->buf, cap);

        if (!b) {
            *errp = strdup("out of memory");
            return NULL;
        }
        c->buf = b;
        c->cap = cap;
    }
    while (c->len - c->pos < n) {
        ssize_t r = raw_read(c, c->buf + c->len, c->cap - c->len, errp);

        if (r < 0) {
            return NULL;
        }
        if (r == 0) {
            break;
        }
        c->len += (size_t)r;
    }
    *avail = c->len - c->pos;
    return c->buf + c->pos;
}

void chan_consume(Chan *c, size_t n)
{
    if (c->tap && n) {
        c->tap(c->tap_opaque, c->buf + c->pos, n);
    }
    c->pos += n;
    if (c->pos >= c->len) {
        c->pos = c->len = 0;
    }
}

bool chan_readable(Chan *c)
{
    struct pollfd pfd = { .fd = c->rfd, .events = POLLIN };

    if (c->tls) {
        return tls_chan_readable(c);
    }
    return c->len > c->pos || poll(&pfd, 1, 0) > 0;
}

void chan_linger(Chan *c, int ms)
{
    int64_t deadline;
    struct timespec ts;
    uint8_t buf[65536];

    /* Over TLS the end of our data is a close_notify, then the FIN. */
    tls_chan_bye(c, ms);
    if (c->wfd >= 0 && c->wfd == c->rfd) {
        shutdown(c->wfd, SHUT_WR);
    }
    if (c->rfd < 0) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ms;
    for (;;) {
        struct pollfd pfd = { .fd = c->rfd, .events = POLLIN };
        int64_t now;
        ssize_t n;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0) {
            return;
        }
        n = read(c->rfd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
            return;
        }
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl >= 0) {
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

/* Receive buffers, and send buffers to other hosts, are autotuned. */
static void tune_socket(int fd, bool tcp)
{
    int one = 1;

    if (tcp) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    set_nonblock(fd);
}

bool chan_same_host(const struct sockaddr *local, const struct sockaddr *peer)
{
    if (local->sa_family != peer->sa_family) {
        return false;
    }
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *l = (const struct sockaddr_in *)local;
        const struct sockaddr_in *p = (const struct sockaddr_in *)peer;

        return (ntohl(p->sin_addr.s_addr) >> 24) == 127 ||
               l->sin_addr.s_addr == p->sin_addr.s_addr;
    }
    if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *l = (const struct sockaddr_in6 *)local;
        const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)peer;

        return IN6_IS_ADDR_LOOPBACK(&p->sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&p->sin6_addr) &&
                p->sin6_addr.s6_addr[12] == 127) ||
               IN6_ARE_ADDR_EQUAL(&l->sin6_addr, &p->sin6_addr);
    }
    return false;
}

/*
 * A bulk sender's TCP connection to this same host gets a small fixed
 * send buffer.  There the receiver copies out what the sender has just
 * written, and a buffer the size of a CPU cache keeps those bytes in the
 * cache; autotuning grows it to tcp_wmem's maximum (4 MiB by default),
 * and the receiver then reads most of them from memory.  Between hosts
 * the buffer has to cover the bandwidth-delay product instead, so there
 * autotuning stays.
 */
bool chan_tune_bulk_sender(Chan *c)
{
    struct sockaddr_storage local, peer;
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    int size = CHAN_LOCAL_SNDBUF;

    return c->wfd >= 0 &&
           getsockname(c->wfd, (struct sockaddr *)&local, &ll) == 0 &&
           getpeername(c->wfd, (struct sockaddr *)&peer, &pl) == 0 &&
           chan_same_host((struct sockaddr *)&local,
                          (struct sockaddr *)&peer) &&
           setsockopt(c->wfd, SOL_SOCKET, SO_SNDBUF, &size,
                      sizeof(size)) == 0;
}

static int unix_sockaddr(const char *path, struct sockaddr_un *sun,
                         char **errp)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        *errp = errf("unix socket path too long: %s", path);
        return -1;
    }
    strcpy(sun->sun_path, path);
    return 0;
}

/* Connect with a deadline; the socket ends up non-blocking. */
static int connect_fd(int fd, const struct sockaddr *sa, socklen_t len,
                      Chan *tmp, const char *what, char **errp)
{
    int err = 0;
    socklen_t el = sizeof(err);

    set_nonblock(fd);
    if (connect(fd, sa, len) == 0) {
        return 0;
    }
    if (errno != EINPROGRESS) {
        *errp = errf("Failed to connect to '%s': %s", what, strerror(errno));
        return -1;
    }
    if (chan_wait(tmp, fd, POLLOUT, errp) <= 0) {
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
        *errp = errf("Failed to connect to '%s': %s", what,
                     strerror(err ? err : errno));
        return -1;
    }
    return 0;
}

/* Run "sh -c @cmd" with its stdin (@to_child) and/or stdout piped. */
static bool spawn(Chan *c, const char *cmd, bool to_child, bool from_child,
                  char **errp)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 };
    pid_t pid;

    if ((to_child && pipe2(in, O_CLOEXEC) < 0) ||
        (from_child && pipe2(out, O_CLOEXEC) < 0)) {
        *errp = errf("pipe failed: %s", strerror(errno));
        goto fail;
    }
    pid = fork();
    if (pid < 0) {
        *errp = errf("fork failed: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        if (to_child) {
            dup2(in[0], STDIN_FILENO);
        }
        if (from_child) {
            dup2(out[1], STDOUT_FILENO);
        }
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (to_child) {
        close(in[0]);
        c->wfd = in[1];
        set_nonblock(c->wfd);
    }
    if (from_child) {
        close(out[1]);
        c->rfd = out[0];
        set_nonblock(c->rfd);
    }
    c->child = pid;
    return true;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) {
            close(in[i]);
        }
        if (out[i] >= 0) {
            close(out[i]);
        }
    }
    return false;
}

bool chan_open_outgoing(Chan *c, const MigAddr *a, int cancel_fd,
                        int stall_ms, char **errp)
{
    chan_init(c, -1, -1, cancel_fd, stall_ms);
    switch (a->kind) {
    case MIG_ADDR_TCP: {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
        char *what = mig_addr_to_string(a);
        int rc, fd = -1;

        rc = getaddrinfo(a->host, a->port, &hints, &res);
        if (rc) {
            *errp = errf("address resolution failed for %s:%s: %s", a->host,
                         a->port, gai_strerror(rc));
            free(what);
            return false;
        }
        for (ai = res; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                continue;
            }
            free(*errp);
            *errp = NULL;
            if (connect_fd(fd, ai->ai_addr, ai->ai_addrlen, c, what + 4,
                           errp) == 0) {
                break;
            }
            close(fd);
            fd = -1;
        }
        freeaddrinfo(res);
        free(what);
        if (fd < 0) {
            if (!*errp) {
                *errp = strdup("cannot create socket");
            }
            return false;
        }
        tune_socket(fd, true);
        c->rfd = c->wfd = fd;
        return true;
    }
    case MIG_ADDR_UNIX: {
        struct sockaddr_un sun;
        int fd;

        if (unix_sockaddr(a->path, &sun, errp) < 0) {
            return false;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect_fd(fd, (struct sockaddr *)&sun, sizeof(sun), c,
                                 a->path, errp) < 0) {
            if (fd >= 0) {
                close(fd);
            } else {
                *errp = errf("socket failed: %s", strerror(errno));
            }
            return false;
        }
        tune_socket(fd, false);
        c->rfd = c->wfd = fd;
        return true;
    }
    case MIG_ADDR_EXEC:
        return spawn(c, a->cmd, true, false, errp);
    case MIG_ADDR_FILE: {
        int fd = open(a->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0) {
            *errp = errf("cannot open '%s': %s", a->path, strerror(errno));
            return false;
        }
        c->wfd = fd;
        return true;
    }
    }
    return false;
}

int chan_listen(const MigAddr *a, char **bound, char **errp)
{
    int fd = -1, one = 1;

    *bound = NULL;
    if (a->kind == MIG_ADDR_TCP) {
        struct addrinfo hints = {
            .ai_socktype = SOCK_STREAM,
            .ai_flags = AI_PASSIVE,
        }, *res, *ai;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char host[NI_MAXHOST], port[NI_MAXSERV];
        int rc;

        rc = getaddrinfo(*a->host ? a->host : NULL, a->port, &hints, &res);
        if (rc) {
            *errp = errf("address resolution failed for %s:%s: %s", a->host,
                         a->port, gai_strerror(rc));
            return -1;
        }
        for (ai = res; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                continue;
            }
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
                listen(fd, 16) == 0) {
                break;
            }
            *errp = errf("Failed to bind socket: %s", strerror(errno));
            close(fd);
            fd = -1;
        }
        freeaddrinfo(res);
        if (fd < 0) {
            return -1;
        }
        free(*errp);
        *errp = NULL;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
            getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port,
                        sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            *bound = strchr(host, ':') ? errf("tcp:[%s]:%s", host, port)
                                       : errf("tcp:%s:%s", host, port);
        }
    } else if (a->kind == MIG_ADDR_UNIX) {
        struct sockaddr_un sun;

        if (unix_sockaddr(a->path, &sun, errp) < 0) {
            return -1;
        }
        unlink(a->path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
            listen(fd, 16) < 0) {
            *errp = errf("Failed to bind socket to %s: %s", a->path,
                         strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
        *bound = errf("unix:%s", a->path);
    } else {
        *errp = strdup("not a listening transport");
        return -1;
    }
    set_nonblock(fd);
    return fd;
}

#define ACCEPT_PENDING 32

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pending_release(const ChanAcceptHooks *h, void *opaque,
                            ChanPending *p)
{
    if (h->release) {
        h->release(opaque, p);
    }
    if (p->fd >= 0) {
        close(p->fd);
    }
    p->fd = -1;
}

bool chan_accept_loop(Chan *c, int lfd, int cancel_fd, int stall_ms,
                      int header_ms, const ChanAcceptHooks *h, void *opaque,
                      bool tls, char **errp)
{
    ChanPending pend[ACCEPT_PENDING];
    int np = 0, i, chosen = -1;

    while (chosen < 0) {
        struct pollfd pfd[2 + ACCEPT_PENDING];
        int64_t now = now_ms(), next = -1;
        bool buffered = false;
        int n;

        pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        pfd[1] = (struct pollfd){ .fd = cancel_fd, .events = POLLIN };
        for (i = 0; i < np; i++) {
            pfd[2 + i] = (struct pollfd){
                .fd = pend[i].fd,
                .events = h->events ? h->events(opaque, &pend[i]) : POLLIN,
            };
            buffered |= h->buffered && h->buffered(opaque, &pend[i]);
            if (next < 0 || pend[i].deadline < next) {
                next = pend[i].deadline;
            }
        }
        n = poll(pfd, (nfds_t)(2 + np),
                 buffered ? 0
                 : next < 0 ? -1
                 : next > now ? (int)(next - now) : 0);
        if (n < 0 && errno != EINTR) {
            *errp = errf("poll failed: %s", strerror(errno));
            break;
        }
        if (n > 0 && cancel_fd >= 0 && (pfd[1].revents & POLLIN)) {
            *errp = strdup("migration cancelled");
            break;
        }
        now = now_ms();
        for (i = 0; i < np && chosen < 0; i++) {
            int r = 0;

            if ((n > 0 && pfd[2 + i].revents) ||
                (h->buffered && h->buffered(opaque, &pend[i]))) {
                r = h->serve(opaque, &pend[i]);
            }
            if (r > 0) {
                chosen = i;
                break;
            }
            if (r == 0 && now >= pend[i].deadline) {
                if (h->expired) {
                    h->expired(opaque, &pend[i]);
                }
                r = -1;
            }
            if (r < 0) {
                pending_release(h, opaque, &pend[i]);
            }
        }
        for (i = 0; chosen < 0 && i < np; i++) {
            if (pend[i].fd < 0) {
                pend[i] = pend[--np];
                i--;
            }
        }
        while (chosen < 0 && n > 0 && (pfd[0].revents & POLLIN)) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
                             SOCK_CLOEXEC | SOCK_NONBLOCK);

            if (fd < 0) {
                break;
            }
            if (np == ACCEPT_PENDING) {
                close(fd);
                continue;
            }
            /* No Nagle delay in the handshake's flights (or TLS's). */
            tune_socket(fd, ss.ss_family != AF_UNIX);
            memset(&pend[np], 0, sizeof(pend[np]));
            pend[np].fd = fd;
            pend[np].deadline = now + header_ms;
            np++;
        }
    }
    for (i = 0; i < np; i++) {
        if (i != chosen) {
            pending_release(h, opaque, &pend[i]);
        }
    }
    if (chosen < 0) {
        return false;
    }
    chan_init(c, pend[chosen].fd, pend[chosen].fd, cancel_fd, stall_ms);
    c->tls = tls ? pend[chosen].ext : NULL;
    /* The preamble stays readable for whoever parses the stream. */
    c->buf = malloc(sizeof(pend[chosen].pre));
    if (!c->buf) {
        chan_close(c);
        *errp = strdup("out of memory");
        return false;
    }
    memcpy(c->buf, pend[chosen].pre, sizeof(pend[chosen].pre));
    c->len = c->cap = sizeof(pend[chosen].pre);
    return true;
}

/* Plain clients: a complete preamble with the QEVM magic is chosen. */
typedef struct PlainAccept {
    ChanDroppedFn dropped;
    void *opaque;
} PlainAccept;

static void plain_drop(PlainAccept *pa, const ChanPending *p)
{
    if (pa->dropped && p->have) {
        pa->dropped(pa->opaque, p->pre, p->have);
    }
}

static int plain_serve(void *opaque, ChanPending *p)
{
    ssize_t r = read(p->fd, p->pre + p->have, sizeof(p->pre) - p->have);

    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        return 0;
    }
    if (r <= 0) {
        plain_drop(opaque, p);
        return -1;
    }
    p->have += (size_t)r;
    if (p->have < sizeof(p->pre)) {
        return 0;
    }
    if (memcmp(p->pre, "QEVM", 4) == 0) {
        return 1;
    }
    /* Not a migration stream: dropped without an answer. */
    plain_drop(opaque, p);
    return -1;
}

static void plain_expired(void *opaque, ChanPending *p)
{
    plain_drop(opaque, p);
}

bool chan_accept(Chan *c, int lfd, int cancel_fd, int stall_ms,
                 int header_ms, char **errp)
{
    return chan_accept_notify(c, lfd, cancel_fd, stall_ms, header_ms, NULL,
                              NULL, errp);
}

bool chan_accept_notify(Chan *c, int lfd, int cancel_fd, int stall_ms,
                        int header_ms, ChanDroppedFn dropped, void *opaque,
                        char **errp)
{
    static const ChanAcceptHooks hooks = {
        .serve = plain_serve,
        .expired = plain_expired,
    };
    PlainAccept pa = { .dropped = dropped, .opaque = opaque };

    return chan_accept_loop(c, lfd, cancel_fd, stall_ms, header_ms, &hooks,
                            &pa, false, errp);
}

bool chan_open_incoming_stream(Chan *c, const MigAddr *a, int cancel_fd,
                               int stall_ms, char **errp)
{
    chan_init(c, -1, -1, cancel_fd, stall_ms);
    if (a->kind == MIG_ADDR_EXEC) {
        return spawn(c, a->cmd, false, true, errp);
    }
    if (a->kind == MIG_ADDR_FILE) {
        int fd = open(a->path, O_RDONLY | O_CLOEXEC);

        if (fd < 0) {
            *errp = errf("cannot open '%s': %s", a->path, strerror(errno));
            return false;
        }
        c->rfd = fd;
        return true;
    }
    *errp = strdup("not a stream transport");
    return false;
}
