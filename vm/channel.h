/*
 * mig2-vm - migration transports: addresses, sockets, exec, file
 *
 * A Chan is one byte stream with deadlines: every blocking read or write
 * also watches a cancel pipe and gives up after the stall timeout, so a
 * silent peer or a migrate-cancel never leaves a thread stuck.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_CHANNEL_H
#define MIG2_VM_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <json-c/json.h>

typedef enum MigAddrKind {
    MIG_ADDR_TCP,
    MIG_ADDR_UNIX,
    MIG_ADDR_EXEC,
    MIG_ADDR_FILE,
} MigAddrKind;

typedef struct MigAddr {
    MigAddrKind kind;
    char *host;     /* tcp */
    char *port;     /* tcp */
    char *path;     /* unix, file */
    char *cmd;      /* exec */
} MigAddr;

/* Parse "tcp:HOST:PORT", "unix:PATH", "exec:CMD", "file:PATH". */
bool mig_addr_parse_uri(const char *uri, MigAddr *a, char **errp);
/* Parse a QMP "addr" object ({"transport": "socket", "type": ...}). */
bool mig_addr_from_json(json_object *addr, MigAddr *a, char **errp);
void mig_addr_clear(MigAddr *a);
/* "tcp:127.0.0.1:4444" etc.; caller frees. */
char *mig_addr_to_string(const MigAddr *a);
/* True for transports that carry bytes both ways. */
bool mig_addr_bidirectional(const MigAddr *a);

struct TlsConn;

typedef struct Chan {
    int rfd;                /* read side */
    int wfd;                /* write side (same as rfd for sockets) */
    pid_t child;            /* exec: the command's pid, else 0 */
    int cancel_fd;          /* readable when the operation is cancelled */
    int stall_ms;           /* 0: wait forever */
    uint8_t *buf;           /* read buffer */
    size_t pos, len, cap;
    uint64_t bytes_in;
    uint64_t bytes_out;
    /*
     * When set, sees every byte in stream order: each byte written, and
     * each byte read once it is handed out (read, readv, consume; a peek
     * is not a read).  The one-way stream's DIGEST is computed here.
     */
    void (*tap)(void *opaque, const void *p, size_t n);
    void *tap_opaque;
    struct TlsConn *tls;    /* NULL: plain; else all I/O goes through it */
    /*
     * Small reads fill the buffer from the socket first: for a run of
     * small frames (device state), not for RAM, whose pages would be
     * copied out of the buffer instead of read in place.
     */
    bool readahead;
    bool stalled;           /* a wait ran out of its stall deadline */
} Chan;

void chan_init(Chan *c, int rfd, int wfd, int cancel_fd, int stall_ms);
/*
 * Close the fds, reap an exec child (killing it if still running).  Over
 * TLS, first send close_notify (bounded, best effort).
 */
void chan_close(Chan *c);
/*
 * Wait for @events on @fd, watching @c's cancel pipe and stall deadline.
 * Returns 1 ready, 0 stalled, -1 cancelled or failed (*errp set).
 */
int chan_wait(Chan *c, int fd, short events, char **errp);

/*
 * SO_SNDBUF of an outgoing TCP connection to this same host (the kernel
 * doubles it for its bookkeeping).  Measured on loopback, 2 CPUs with
 * 2 MiB of L2 each, 1 GiB over 2 channels: 256-512 KiB equally fast,
 * 768 KiB slower, autotuning (4 MiB) a third slower.  Over 1 channel,
 * 512 KiB matched autotuning and 256 KiB was 5% slower.
 */
#define CHAN_LOCAL_SNDBUF (512 * 1024)

/*
 * Whether a connection from @local to @peer stays on this host: the peer
 * is a loopback address, or the address we connect from (the kernel
 * picks the peer's own address for a local peer).
 */
bool chan_same_host(const struct sockaddr *local,
                    const struct sockaddr *peer);
/*
 * For a channel that carries RAM pages: on a TCP connection to this same
 * host, fix the send buffer at CHAN_LOCAL_SNDBUF (see channel.c).  True
 * when it did.  Not for the main channel: a write that waits for room
 * mid-frame is cut short by a cancel, and the ERROR that tells the
 * destination why could not follow a cut frame.
 */
bool chan_tune_bulk_sender(Chan *c);

/* Source side: open @a for writing (and reading when bidirectional). */
bool chan_open_outgoing(Chan *c, const MigAddr *a, int cancel_fd,
                        int stall_ms, char **errp);

/* Destination side: a listening socket (tcp/unix), reported address. */
int chan_listen(const MigAddr *a, char **bound, char **errp);
/*
 * A client of chan_accept_loop(), from its connection until it has sent
 * the 8-byte preamble of a migration stream.
 */
typedef struct ChanPending {
    int fd;
    int64_t deadline;       /* CLOCK_MONOTONIC ms; then it is dropped */
    size_t have;
    uint8_t pre[8];
    void *ext;              /* the hooks' state for it (a TLS session) */
    int mode;               /* the hooks' own */
} ChanPending;

/* How chan_accept_loop() serves its clients. */
typedef struct ChanAcceptHooks {
    /*
     * @p is readable, or has buffered input: 1 when its preamble is
     * complete (it is chosen), 0 to keep waiting, -1 when finished with
     * (the loop releases it).
     */
    int (*serve)(void *opaque, ChanPending *p);
    /* Events to poll @p for; NULL: POLLIN. */
    short (*events)(void *opaque, const ChanPending *p);
    /* Input of @p's already read off its socket; NULL: never. */
    bool (*buffered)(void *opaque, const ChanPending *p);
    /* @p's deadline passed while serve() waited; NULL: nothing to say. */
    void (*expired)(void *opaque, ChanPending *p);
    /* Free p->ext; NULL: nothing to free.  The loop closes p->fd. */
    void (*release)(void *opaque, ChanPending *p);
} ChanAcceptHooks;

/*
 * Accept clients on @lfd and serve them side by side, so that one that
 * connects and says nothing (or sends garbage) cannot keep the real
 * source waiting: each gets @header_ms (the hooks may move its
 * deadline).  Waiting for a client has no deadline; only @cancel_fd
 * ends it.  The first client served as complete ends the loop: @c then
 * reads its socket with its preamble buffered (and takes over ->ext as
 * its TLS session when @tls), and every other client is released.
 */
bool chan_accept_loop(Chan *c, int lfd, int cancel_fd, int stall_ms,
                      int header_ms, const ChanAcceptHooks *h, void *opaque,
                      bool tls, char **errp);
/*
 * Wait for the main connection: the first client to send the QEVM magic
 * (no deadline for that, cancellable); each client gets @header_ms to
 * send its first 8 bytes, which stay in @c's buffer.
 */
bool chan_accept(Chan *c, int lfd, int cancel_fd, int stall_ms,
                 int header_ms, char **errp);
/*
 * The same, calling @dropped (when not NULL) with the first bytes of each
 * client that is dropped for not sending the QEVM magic.
 */
typedef void (*ChanDroppedFn)(void *opaque, const uint8_t *pre, size_t len);
bool chan_accept_notify(Chan *c, int lfd, int cancel_fd, int stall_ms,
                        int header_ms, ChanDroppedFn dropped, void *opaque,
                        char **errp);
/* Destination side of exec:/file: open for reading. */
bool chan_open_incoming_stream(Chan *c, const MigAddr *a, int cancel_fd,
                               int stall_ms, char **errp);

bool chan_write(Chan *c, const void *p, size_t n, char **errp);
bool chan_writev(Chan *c, struct iovec *iov, int iovcnt, char **errp);
/* Exactly @n bytes; false on EOF, stall, cancel or error. */
bool chan_read(Chan *c, void *p, size_t n, char **errp);
/* Fill every buffer of @iov exactly: one readv() for many pages. */
bool chan_readv(Chan *c, struct iovec *iov, int iovcnt, char **errp);
/* Up to @n bytes (at least 1); 0 at EOF, -1 on error. */
ssize_t chan_read_some(Chan *c, void *p, size_t n, char **errp);
/*
 * Make at least @n bytes available in the read buffer, fewer only at EOF.
 * Returns a pointer to them and the count in *@avail.
 */
const uint8_t *chan_peek(Chan *c, size_t n, size_t *avail, char **errp);
void chan_consume(Chan *c, size_t n);
/* True when a read would not block (data, EOF or error pending). */
bool chan_readable(Chan *c);
/*
 * After sending an ERROR: stop writing, then read and discard what the
 * peer still sends until it closes or @ms pass.  Closing with unread input
 * would make the kernel send a reset, which can destroy the ERROR before
 * the peer reads it.
 */
void chan_linger(Chan *c, int ms);

#endif /* MIG2_VM_CHANNEL_H */
