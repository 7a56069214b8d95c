/*
 * mig2-vm - RAM over session-bound multifd channels (spec section 12)
 *
 * Source: one thread per channel connects to the main channel's address,
 * sends the channel header and, once accepted, turns queued page batches
 * into RAM frames (zero detection runs there, in parallel).  Until a
 * channel is up the main thread sends pages itself, so opening channels
 * overlaps with the first round.
 *
 * Destination: an acceptor thread admits channels through libmig2's
 * Mig2ChannelSet and refuses everything else with an ERROR frame; one
 * receiver thread per channel writes pages straight into guest RAM.
 * CHANNEL_SYNC frames make every round a barrier across channels.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mig2/mig2.h"

#include "migration_int.h"

/* Batches queued per channel: 8 x 2 MiB keeps a sender busy between refills. */
#define QUEUE_DEPTH 8

typedef enum JobKind { JOB_PAGES, JOB_SYNC } JobKind;

typedef struct Job {
    JobKind kind;
    uint32_t n;                 /* pages */
    uint32_t round;             /* sync */
    uint64_t pages[MIG_RAM_BATCH];
} Job;

typedef struct Sender {
    struct Multifd *f;
    unsigned index;
    pthread_t thread;
    bool started;
    Chan c;
    Job queue[QUEUE_DEPTH];
    unsigned head, count;
    pthread_cond_t wake;        /* work queued for an idle sender */
    bool idle;                  /* waiting on @wake */
    bool ready;                 /* accepted by the destination */
    bool done;                  /* thread finished */
} Sender;

struct Multifd {
    Migration *m;
    const Mig2Engine *e;
    unsigned n;
    bool zero;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* for the migration thread */
    unsigned waiters;           /* migration thread waiting on @cond */
    bool stopping;
    char *err;                  /* first failure of any channel */
    Sender *s;
};

/*
 * Wake everyone (caller holds the lock): for rare events only -- errors,
 * a channel joining or ending, stop.  Page batches wake just the one
 * sender they are queued on, and a finished batch wakes the migration
 * thread only when it waits, so the steady state costs no wakeups (on a
 * VM each cross-CPU wakeup is an IPI, hence a VM exit).
 */
static void wake_all(Multifd *f)
{
    unsigned i;

    pthread_cond_broadcast(&f->cond);
    for (i = 0; i < f->n; i++) {
        pthread_cond_signal(&f->s[i].wake);
    }
}

/* Wait on @cond (holding @lock) for at most @ms milliseconds. */
static void cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *lock, long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cond, lock, &ts);
}

/* Wait on @f->cond for at most 50 ms, so a cancel is noticed. */
static void wait_main(Multifd *f)
{
    f->waiters++;
    cond_wait_ms(&f->cond, &f->lock, 50);
    f->waiters--;
}

static void queued(Sender *s)
{
    s->count++;
    if (s->idle) {
        pthread_cond_signal(&s->wake);
    }
}

static void sender_fail(Sender *s, char *msg)
{
    Multifd *f = s->f;

    pthread_mutex_lock(&f->lock);
    if (!f->err) {
        f->err = mig_strf("multifd channel %u: %s", s->index,
                          msg ? msg : "failed");
    }
    wake_all(f);
    pthread_mutex_unlock(&f->lock);
    free(msg);
}

/*
 * Tests only: connect as a misbehaving source would, with a header for
 * @index of @count (valid MAC), and report the destination's answer.
 */
static void rogue_channel(Multifd *f, const char *what, uint16_t index,
                          uint16_t count)
{
    Chan c;
    Mig2Writer w;
    uint8_t h[8], p[4096];
    Mig2FrameHeader fh;
    char *err = NULL;

    if (!chan_open_outgoing(&c, &f->m->addr, -1, 2000, &err) ||
        (tls_enabled(&f->m->tls) && !tls_chan_client(&c, &f->m->tls, &err))) {
        fprintf(stderr, "mig2-vm: test channel (%s): %s\n", what, err);
        free(err);
        chan_close(&c);
        return;
    }
    mig2_wr_init(&w, MIG2_CHANNEL_MAX_LEN);
    if (mig2_channel_header_write(f->e, MIG2_CHANNEL_MULTIFD, index, count,
                                  &w) == MIG2_OK &&
        chan_write(&c, w.buf, w.len, &err) && chan_read(&c, h, 8, &err)) {
        mig2_frame_header_parse(h, UINT32_MAX, &fh);
        if (fh.type == MIG2_FRAME_ERROR && fh.length <= sizeof(p) &&
            chan_read(&c, p, fh.length, &err)) {
            char *text = mig_peer_error_text(p, fh.length);

            fprintf(stderr, "mig2-vm: test channel (%s) refused: %s\n", what,
                    text ? text : "");
            free(text);
        } else {
            fprintf(stderr, "mig2-vm: test channel (%s) got frame 0x%04x\n",
                    what, fh.type);
        }
    }
    free(err);
    mig2_wr_free(&w);
    chan_close(&c);
}

/* Connect, send the header, wait for CHANNEL_ACCEPT. */
static bool sender_join(Sender *s, char **errp)
{
    Multifd *f = s->f;
    Mig2Writer w;
    uint8_t h[8];
    Mig2FrameHeader fh;
    const char *k;
    int rc;

    /* Test knobs: channels in reverse or random order, or one missing. */
    if ((k = mig_test_knob(f->m, "skip")) && (unsigned)atoi(k) == s->index) {
        *errp = NULL;
        return false;
    }
    if (mig_test_knob(f->m, "reverse")) {
        usleep((f->n - 1 - s->index) * 50000);
    } else if (mig_test_knob(f->m, "random")) {
        usleep((useconds_t)((s->index * 7919u + (unsigned)getpid()) % 100) *
               1000);
    }

    if (!chan_open_outgoing(&s->c, &f->m->addr, f->m->cancel_pipe[0],
                            (int)mig_cfg_u64(f->m, "x-stall-timeout"),
                            errp)) {
        return false;
    }
    chan_tune_bulk_sender(&s->c);
    /* Each channel runs its own TLS session (spec 12.1). */
    if (tls_enabled(&f->m->tls) && !tls_chan_client(&s->c, &f->m->tls, errp)) {
        return false;
    }
    mig2_wr_init(&w, MIG2_CHANNEL_MAX_LEN);
    rc = mig2_channel_header_write(f->e, MIG2_CHANNEL_MULTIFD,
                                   (uint16_t)s->index, (uint16_t)f->n, &w);
    if (rc || !chan_write(&s->c, w.buf, w.len, errp)) {
        if (rc) {
            *errp = mig_strf("cannot build the channel header: %s",
                             mig2_strerror(rc));
        }
        mig2_wr_free(&w);
        return false;
    }
    mig2_wr_free(&w);
    if (!chan_read(&s->c, h, 8, errp)) {
        return false;
    }
    mig2_frame_header_parse(h, UINT32_MAX, &fh);
    if (fh.type == MIG2_FRAME_CHANNEL_ACCEPT && fh.length == 0) {
        return true;
    }
    if (fh.type == MIG2_FRAME_ERROR && fh.length <= 65536) {
        uint8_t *p = malloc(fh.length ? fh.length : 1);

        if (p && chan_read(&s->c, p, fh.length, errp)) {
            *errp = mig_peer_error_text(p, fh.length);
        }
        free(p);
        return false;
    }
    *errp = mig_strf("unexpected answer 0x%04x to the channel header",
                     fh.type);
    return false;
}

/*
 * Tests only: a frame of a type this build does not know, with @len
 * bytes of payload and @flags (CRITICAL or not).
 */
static bool send_unknown(Chan *c, uint16_t type, uint16_t flags,
                         uint32_t len, char **errp)
{
    uint8_t h[MIG2_FRAME_HEADER_LEN];
    uint8_t *p = calloc(1, len ? len : 1);
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = p, .iov_len = len },
    };
    bool ok;

    if (!p) {
        *errp = strdup("out of memory");
        return false;
    }
    mig2_frame_header_put(h, type, flags, len);
    ok = chan_writev(c, iov, 2, errp);
    free(p);
    return ok;
}

/*
 * Tests only: send what @w holds (or a frame of an unknown critical
 * type), then report the destination's answer as this channel's failure.
 */
static bool send_refused(Sender *s, const char *what, Mig2Writer *w,
                         char **errp)
{
    uint8_t h[MIG2_FRAME_HEADER_LEN], *p = NULL;
    Mig2FrameHeader fh;
    bool sent;

    if (w) {
        sent = !mig2_wr_error(w) && chan_write(&s->c, w->buf, w->len, errp);
        mig2_wr_free(w);
    } else {
        sent = send_unknown(&s->c, 0x02f7, MIG2_FRAME_FLAG_CRITICAL, 5, errp);
    }
    if (!sent || !chan_read(&s->c, h, sizeof(h), errp)) {
        return false;
    }
    mig2_frame_header_parse(h, MIG2_FRAME_MAX, &fh);
    if (fh.type == MIG2_FRAME_ERROR && fh.length <= 65536 &&
        (p = malloc(fh.length ? fh.length : 1)) &&
        chan_read(&s->c, p, fh.length, errp)) {
        char *text = mig_peer_error_text(p, fh.length);

        *errp = mig_strf("test frame (%s) refused: %s", what,
                         text ? text : "");
        free(text);
    } else if (!*errp) {
        *errp = mig_strf("test frame (%s) answered with frame 0x%04x", what,
                         fh.type);
    }
    free(p);
    return false;
}

/*
 * Tests only (--x-channel-test): frames a conforming source never sends,
 * on channel 0 once it has joined.  Returns false with what the
 * destination answered, which ends the migration.
 */
static bool misbehave(Sender *s, char **errp)
{
    Migration *m = s->f->m;
    static const uint8_t page[RAM_PAGE_SIZE];
    Mig2Writer w;

    mig2_wr_init(&w, 2 * MIG2_FRAME_HEADER_LEN + RAM_PAGE_SIZE + 16);
    if (mig_test_knob(m, "oversized")) {
        /* Nearly 4 GiB, and as many entries as that would hold. */
        uint8_t b[MIG2_FRAME_HEADER_LEN + MIG2_DATA_RAM_HEAD_LEN];

        mig2_frame_header_put(b, MIG2_FRAME_RAM, MIG2_FRAME_FLAG_CRITICAL,
                              0xfffffff0u);
        mig2_data_ram_head_put(b + MIG2_FRAME_HEADER_LEN, 0, 0x1ffffffdu);
        mig2_wr_bytes(&w, b, sizeof(b));
        return send_refused(s, "oversized", &w, errp);
    }
    if (mig_test_knob(m, "ram-past-end")) {
        /* One page at the end of the block: outside it. */
        Mig2DataPage pg = { .offset = m->vm->ram.size, .data = page };
        size_t mark = mig2_wr_frame_begin(&w, MIG2_FRAME_RAM,
                                          MIG2_FRAME_FLAG_CRITICAL);

        mig2_data_ram_encode(&w, 0, RAM_PAGE_SIZE, &pg, 1);
        mig2_wr_frame_end(&w, mark);
        return send_refused(s, "ram-past-end", &w, errp);
    }
    mig2_wr_free(&w);
    if (mig_test_knob(m, "unknown-critical")) {
        return send_refused(s, "unknown-critical", NULL, errp);
    }
    return true;
}

/*
 * Tests only: before each CHANNEL_SYNC, unknown frames without CRITICAL,
 * which the destination must skip: a grease type with a short payload,
 * and a reserved channel type with one longer than any read buffer.
 */
static bool send_skippable(Sender *s, char **errp)
{
    return !mig_test_knob(s->f->m, "unknown-frame") ||
           (send_unknown(&s->c, 0x1a2a, 0, 7, errp) &&
            send_unknown(&s->c, 0x02f7, 0, 70000, errp));
}

static void *sender_main(void *opaque)
{
    Sender *s = opaque;
    Multifd *f = s->f;
    char *err = NULL;

    if (!sender_join(s, &err)) {
        if (!err) {
            /* A test's missing channel: stay silent, never finish. */
            pthread_mutex_lock(&f->lock);
            while (!f->stopping && !f->err) {
                s->idle = true;
                pthread_cond_wait(&s->wake, &f->lock);
                s->idle = false;
            }
            pthread_mutex_unlock(&f->lock);
            goto out;
        }
        sender_fail(s, err);
        goto out;
    }
    if (s->index == 0 && mig_test_knob(f->m, "duplicate")) {
        rogue_channel(f, "duplicate", 0, (uint16_t)f->n);
    }
    if (s->index == 0 && mig_test_knob(f->m, "extra")) {
        rogue_channel(f, "extra", (uint16_t)f->n, (uint16_t)(f->n + 1));
    }
    if (s->index == 0 && !misbehave(s, &err)) {
        sender_fail(s, err);
        goto out;
    }
    pthread_mutex_lock(&f->lock);
    s->ready = true;
    wake_all(f);
    for (;;) {
        Job *j;
        bool ok;

        while (!s->count && !f->stopping && !f->err) {
            s->idle = true;
            pthread_cond_wait(&s->wake, &f->lock);
            s->idle = false;
        }
        if (!s->count || f->err) {
            break;
        }
        j = &s->queue[s->head];
        pthread_mutex_unlock(&f->lock);
        if (j->kind == JOB_PAGES) {
            ok = mig_send_pages(f->m, &s->c, j->pages, j->n, f->zero, &err);
        } else {
            ok = send_skippable(s, &err) &&
                 mig_send_channel_sync(&s->c, j->round, &err);
        }
        pthread_mutex_lock(&f->lock);
        s->head = (s->head + 1) % QUEUE_DEPTH;
        s->count--;
        /*
         * Wake a waiting migration thread only once half the queue is
         * free, so that it refills several slots per wakeup instead of
         * preempting a busy thread for every batch.
         */
        if (f->waiters && s->count <= QUEUE_DEPTH / 2) {
            pthread_cond_signal(&f->cond);
        }
        if (!ok) {
            pthread_mutex_unlock(&f->lock);
            sender_fail(s, err);
            err = NULL;
            pthread_mutex_lock(&f->lock);
            break;
        }
    }
    pthread_mutex_unlock(&f->lock);
out:
    pthread_mutex_lock(&f->lock);
    s->done = true;
    wake_all(f);
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

Multifd *mfd_source_start(Migration *m, const Mig2Engine *e, unsigned n,
                          bool zero, char **errp)
{
    Multifd *f = calloc(1, sizeof(*f));
    unsigned i;

    if (!f || !(f->s = calloc(n, sizeof(*f->s)))) {
        free(f);
        *errp = strdup("out of memory");
        return NULL;
    }
    f->m = m;
    f->e = e;
    f->n = n;
    f->zero = zero;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    for (i = 0; i < n; i++) {
        pthread_cond_init(&f->s[i].wake, NULL);
    }
    for (i = 0; i < n; i++) {
        f->s[i].f = f;
        f->s[i].index = i;
        chan_init(&f->s[i].c, -1, -1, -1, 0);
        if (pthread_create(&f->s[i].thread, NULL, sender_main, &f->s[i])) {
            *errp = strdup("cannot start a multifd thread");
            mfd_source_stop(f);
            return NULL;
        }
        f->s[i].started = true;
    }
    return f;
}

bool mfd_source_failed(Multifd *f, char **errp)
{
    bool failed;

    pthread_mutex_lock(&f->lock);
    failed = f->err != NULL;
    if (failed && errp && !*errp) {
        *errp = strdup(f->err);
    }
    pthread_mutex_unlock(&f->lock);
    return failed;
}

/*
 * Hand a batch to the ready channel with the shortest queue; wait when
 * all are full.  Returns 0 queued, 1 no channel is ready yet (the caller
 * sends the batch itself), -1 failed.
 */
int mfd_source_dispatch(Multifd *f, const uint64_t *pages, uint32_t n,
                        char **errp)
{
    pthread_mutex_lock(&f->lock);
    for (;;) {
        Sender *best = NULL;
        unsigned i, ready = 0;

        if (f->err) {
            *errp = strdup(f->err);
            pthread_mutex_unlock(&f->lock);
            return -1;
        }
        if (mig_cancelled(f->m)) {
            *errp = strdup("migration cancelled");
            pthread_mutex_unlock(&f->lock);
            return -1;
        }
        for (i = 0; i < f->n; i++) {
            Sender *s = &f->s[i];

            if (!s->ready || s->done) {
                continue;
            }
            ready++;
            if (s->count < QUEUE_DEPTH && (!best || s->count < best->count)) {
                best = s;
            }
        }
        if (!ready) {
            pthread_mutex_unlock(&f->lock);
            return 1;
        }
        if (best) {
            Job *j = &best->queue[(best->head + best->count) % QUEUE_DEPTH];

            j->kind = JOB_PAGES;
            j->n = n;
            memcpy(j->pages, pages, n * sizeof(*pages));
            queued(best);
            pthread_mutex_unlock(&f->lock);
            return 0;
        }
        wait_main(f);
    }
}

/* Queue CHANNEL_SYNC(@round) on every channel, joined or not yet. */
bool mfd_source_sync(Multifd *f, uint32_t round, char **errp)
{
    unsigned i;

    pthread_mutex_lock(&f->lock);
    for (i = 0; i < f->n; i++) {
        Sender *s = &f->s[i];

        while (s->count == QUEUE_DEPTH && !f->err && !s->done &&
               !mig_cancelled(f->m)) {
            wait_main(f);
        }
        if (f->err || s->done || mig_cancelled(f->m)) {
            *errp = strdup(f->err ? f->err
                           : mig_cancelled(f->m) ? "migration cancelled"
                                                 : "a multifd channel ended");
            pthread_mutex_unlock(&f->lock);
            return false;
        }
        s->queue[(s->head + s->count) % QUEUE_DEPTH].kind = JOB_SYNC;
        s->queue[(s->head + s->count) % QUEUE_DEPTH].round = round;
        queued(s);
    }
    pthread_mutex_unlock(&f->lock);
    return true;
}

bool mfd_source_flush(Multifd *f, char **errp)
{
    unsigned i;

    pthread_mutex_lock(&f->lock);
    for (;;) {
        bool busy = false;

        for (i = 0; i < f->n; i++) {
            busy |= f->s[i].count > 0 && !f->s[i].done;
        }
        if (f->err || !busy) {
            break;
        }
        f->waiters++;
        pthread_cond_wait(&f->cond, &f->lock);
        f->waiters--;
    }
    if (f->err) {
        *errp = strdup(f->err);
        pthread_mutex_unlock(&f->lock);
        return false;
    }
    pthread_mutex_unlock(&f->lock);
    return true;
}

void mfd_source_stop(Multifd *f)
{
    unsigned i;

    if (!f) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->stopping = true;
    wake_all(f);
    pthread_mutex_unlock(&f->lock);
    for (i = 0; i < f->n; i++) {
        if (f->s[i].started) {
            pthread_join(f->s[i].thread, NULL);
        }
        if (f->s[i].c.rfd >= 0 || f->s[i].c.wfd >= 0) {
            chan_close(&f->s[i].c);
        }
    }
    for (i = 0; i < f->n; i++) {
        pthread_cond_destroy(&f->s[i].wake);
    }
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f->err);
    free(f->s);
    free(f);
}

/* ---------------------------------------------------------------- */
/* Destination                                                       */
/* ---------------------------------------------------------------- */

typedef struct Receiver {
    struct MfdDest *d;
    unsigned index;
    pthread_t thread;
    Chan c;
    int64_t synced;             /* last CHANNEL_SYNC round, -1 none */
    uint64_t pages;
    bool done;
} Receiver;

struct MfdDest {
    Migration *m;
    const Mig2Engine *e;
    Mig2ChannelSet *set;
    int listen_fd;
    int stop_pipe[2];
    pthread_t acceptor;
    bool acceptor_started;
    unsigned n;
    Receiver *r;                /* n slots, by index */
    bool *started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t deadline;           /* all channels admitted by then */
    char *err;
    bool expired;               /* the acceptor saw the deadline pass */
    bool reported;              /* mfd_dest_wait_sync returned a failure */
    bool stopping;
};

static void dest_fail(MfdDest *d, char *msg)
{
    pthread_mutex_lock(&d->lock);
    if (!d->err) {
        d->err = msg;
        msg = NULL;
    }
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    free(msg);
}

static void *receiver_main(void *opaque)
{
    static const uint16_t valid[] = {
        MIG2_FRAME_RAM, MIG2_FRAME_CHANNEL_SYNC, MIG2_FRAME_ERROR, 0,
    };
    Receiver *r = opaque;
    MfdDest *d = r->d;
    char *err = NULL;
    uint32_t code = 0;

    for (;;) {
        Mig2FrameHeader fh;
        uint8_t *p = NULL;
        uint32_t round;

        /* Unknown frames are skipped or refused in there (spec 4.3). */
        if (!mig_next_frame(&r->c, valid, &fh, &code, &err)) {
            break;
        }
        if (fh.type == MIG2_FRAME_RAM) {
            uint64_t n = 0;

            if (!mig_load_ram(d->m, &r->c, d->e, fh.length, &n, &err)) {
                break;
            }
            pthread_mutex_lock(&d->lock);
            r->pages += n;
            pthread_mutex_unlock(&d->lock);
            continue;
        }
        if (!mig_read_payload(&r->c, &fh, fh.type == MIG2_FRAME_ERROR
                                              ? 65536
                                              : MIG2_DATA_CHANNEL_SYNC_LEN,
                              &p, &code, &err)) {
            break;
        }
        if (fh.type == MIG2_FRAME_ERROR) {
            err = mig_peer_error_text(p, fh.length);
            free(p);
            break;
        }
        if (mig2_data_round_parse(p, fh.length, &round) != MIG2_OK) {
            code = MIG2_WIRE_PROTOCOL;
            err = mig_strf("CHANNEL_SYNC frame of %u bytes, expected %u",
                           fh.length, MIG2_DATA_CHANNEL_SYNC_LEN);
            free(p);
            break;
        }
        free(p);
        pthread_mutex_lock(&d->lock);
        r->synced = (int64_t)round;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
    }
    /* After the migration ends the source closes: not a failure. */
    if (!d->stopping) {
        dest_fail(d, mig_strf("multifd channel %u: %s", r->index,
                              err ? err : "closed"));
    }
    pthread_mutex_lock(&d->lock);
    r->done = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    if (code) {
        mig_send_error(&r->c, code, err);
    }
    free(err);
    return NULL;
}

/*
 * Connections the acceptor is still reading a header from, or draining
 * after refusing them.  All are served by one poll loop, so a slow or
 * silent client costs the others nothing.
 */
#define MAX_PENDING 32
#define HEADER_MS 1000          /* a client gets this long to send a header */
#define TLS_HEADER_MS 3000      /* ... with its TLS handshake first */
#define LINGER_MS 200           /* and this long to read our ERROR */

typedef struct Pending {
    int fd;
    TlsConn *tls;               /* with tls-creds: the client's session */
    bool draining;              /* refused: shut down, reading to EOF */
    int64_t deadline;
    size_t have;
    size_t want;
    uint8_t buf[MIG2_CHANNEL_MAX_LEN];
} Pending;

/* Best effort: the socket is fresh, so a small frame fits its buffer. */
static void send_all_now(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;

    while (len) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);

        if (n <= 0) {
            return;
        }
        b += n;
        len -= (size_t)n;
    }
}

/* Close a pending connection and its TLS session. */
static void pending_drop(Pending *p)
{
    tls_conn_free(p->tls);
    p->tls = NULL;
    close(p->fd);
}

/* Send @err, then keep the connection until the peer has read it. */
static void refuse(Pending *p, const Mig2Error *err)
{
    Mig2Writer w;

    mig2_wr_init(&w, 16384);
    mig2_error_encode(&w, err);
    if (!mig2_wr_error(&w)) {
        if (p->tls) {
            tls_conn_send_now(p->tls, w.buf, w.len);
            tls_conn_bye(p->tls, LINGER_MS);
        } else {
            send_all_now(p->fd, w.buf, w.len);
        }
    }
    mig2_wr_free(&w);
    /* Closing with unread input would reset the connection, ERROR and all. */
    shutdown(p->fd, SHUT_WR);
    p->draining = true;
    p->deadline = mig_now_ms() + LINGER_MS;
}

/* A whole header arrived (or its prefix was garbage): admit or refuse. */
static bool dest_decide(MfdDest *d, Pending *p)
{
    Mig2ChannelHeader h;
    Mig2Error why = { 0 };
    char *err = NULL;
    Receiver *r;
    Chan c;
    int rc;

    pthread_mutex_lock(&d->lock);
    rc = mig2_channel_set_admit(d->set, p->buf, p->have, &h, &why);
    pthread_mutex_unlock(&d->lock);
    if (rc) {
        mig_note_rejected(d->m, why.n_problems ? why.problems[0].path
                                               : "channel",
                          why.message);
        refuse(p, &why);
        mig2_error_clear(&why);
        return false;
    }
    chan_init(&c, p->fd, p->fd, d->m->cancel_pipe[0],
              (int)mig_cfg_u64(d->m, "x-stall-timeout"));
    tls_chan_attach(&c, p->tls);
    p->tls = NULL;
    if (!mig_send_frame(&c, MIG2_FRAME_CHANNEL_ACCEPT, NULL, 0, &err)) {
        free(err);
        chan_close(&c);
        return true;
    }
    r = &d->r[h.index];
    r->d = d;
    r->index = h.index;
    r->c = c;
    r->synced = -1;
    pthread_mutex_lock(&d->lock);
    if (pthread_create(&r->thread, NULL, receiver_main, r) == 0) {
        d->started[h.index] = true;
    } else {
        chan_close(&r->c);
        if (!d->err) {
            d->err = strdup("cannot start a multifd receiver");
        }
    }
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return true;
}

/*
 * Read what @p's client sent.  Returns true when the entry is finished
 * with (admitted, or closed): the caller then forgets it.
 */
static bool pending_read(MfdDest *d, Pending *p)
{
    ssize_t n;

    if (p->draining) {
        uint8_t sink[4096];

        n = read(p->fd, sink, sizeof(sink));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            pending_drop(p);
            return true;
        }
        return false;
    }
    if (tls_enabled(&d->m->tls)) {
        char *why = NULL;

        switch (tls_accept_step(&d->m->tls, p->fd, &p->tls, &why)) {
        case TLS_STEP_WAIT:
            return false;
        case TLS_STEP_FAILED:
            mig_note_rejected(d->m, "tls", why);
            fprintf(stderr, "mig2-vm: refused a channel: %s\n", why);
            free(why);
            /* Let the alert reach the client before the socket closes. */
            shutdown(p->fd, SHUT_WR);
            p->draining = true;
            p->deadline = mig_now_ms() + LINGER_MS;
            return false;
        case TLS_STEP_PLAIN: {
            Mig2Error plain = {
                .code = MIG2_WIRE_TLS_REQUIRED,
                .message = (char *)"this destination requires TLS on "
                                   "every channel (tls-creds is set)",
            };

            mig_note_rejected(d->m, "tls", "a plaintext connection, but "
                                           "this destination requires TLS");
            refuse(p, &plain);
            return false;
        }
        case TLS_STEP_READY:
            break;
        }
    }
again:
    n = p->tls ? tls_conn_recv(p->tls, p->buf + p->have, p->want - p->have,
                               NULL)
               : read(p->fd, p->buf + p->have, p->want - p->have);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return false;
    }
    if (n <= 0) {
        mig_note_rejected(d->m, "channel/header",
                          "the client closed before sending a header");
        pending_drop(p);
        return true;
    }
    p->have += (size_t)n;
    if (p->have < p->want) {
        /* Over TLS the rest may be decrypted already: poll can't tell. */
        goto again;
    }
    if (p->want == MIG2_CHANNEL_PREFIX_LEN) {
        size_t total;

        if (mig2_stream_detect(p->buf) == MIG2_STREAM_HANDSHAKE ||
            mig2_stream_detect(p->buf) == MIG2_STREAM_LEGACY) {
            /* Another source while we migrate: one migration at a time. */
            Mig2Error busy = {
                .code = MIG2_WIRE_BUSY,
                .retryable = true,
                .message = (char *)"this destination is already receiving "
                                   "a migration",
            };

            mig_note_rejected(d->m, "busy", "another source connected");
            refuse(p, &busy);
            return false;
        }
        if (mig2_channel_header_length(p->buf, &total) == MIG2_OK) {
            p->want = total;
            goto again;
        }
        /* Garbage: let the channel set describe it. */
    }
    return dest_decide(d, p);
}

/* "multifd channel I of N did not arrive within ..." (caller holds lock) */
static char *deadline_error(MfdDest *d)
{
    char miss[64] = "a channel";

    mig2_channel_set_missing(d->set, miss, sizeof(miss));
    return mig_strf("%s did not arrive within %" PRIu64 " ms "
                    "(x-channel-deadline)", miss,
                    mig_cfg_u64(d->m, "x-channel-deadline"));
}

static void *acceptor_main(void *opaque)
{
    MfdDest *d = opaque;
    Pending *pend = calloc(MAX_PENDING, sizeof(*pend));
    int np = 0, i;

    if (!pend) {
        dest_fail(d, strdup("out of memory"));
        return NULL;
    }
    for (;;) {
        struct pollfd pfd[2 + MAX_PENDING];
        int64_t now = mig_now_ms(), next = -1;
        int n, timeout;

        pthread_mutex_lock(&d->lock);
        if (!d->err && !mig2_channel_set_complete(d->set)) {
            next = d->deadline;
        }
        pthread_mutex_unlock(&d->lock);
        pfd[0] = (struct pollfd){ .fd = d->listen_fd, .events = POLLIN };
        pfd[1] = (struct pollfd){ .fd = d->stop_pipe[0], .events = POLLIN };
        for (i = 0; i < np; i++) {
            short ev = pend[i].tls && !pend[i].draining
                           ? tls_conn_events(pend[i].tls)
                           : POLLIN;

            pfd[2 + i] = (struct pollfd){ .fd = pend[i].fd, .events = ev };
            if (next < 0 || pend[i].deadline < next) {
                next = pend[i].deadline;
            }
        }
        timeout = next < 0 ? -1 : next > now ? (int)(next - now) : 0;
        n = poll(pfd, (nfds_t)(2 + np), timeout);
        if (n < 0 && errno != EINTR) {
            break;
        }
        if (n > 0 && pfd[1].revents) {
            break;
        }
        now = mig_now_ms();

        /* x-channel-deadline passed with a channel missing (spec 12.5). */
        pthread_mutex_lock(&d->lock);
        if (!d->err && !mig2_channel_set_complete(d->set) &&
            now >= d->deadline) {
            /*
             * Fail now, not at the main channel's next SYNC, which may be
             * a whole RAM round later.  The cancel pipe wakes the main
             * thread's read; v2_load then reports this, ERROR timeout.
             */
            d->err = deadline_error(d);
            d->expired = true;
            pthread_cond_broadcast(&d->cond);
            if (d->m->cancel_pipe[1] >= 0 &&
                write(d->m->cancel_pipe[1], "d", 1) < 0) {
                /* The SYNC barrier still sees d->err. */
            }
        }
        pthread_mutex_unlock(&d->lock);

        /* Serve pending clients; forget finished ones. */
        for (i = 0; n > 0 && i < np; i++) {
            if (pfd[2 + i].revents && pending_read(d, &pend[i])) {
                pend[i].fd = -1;
            }
        }
        for (i = 0; i < np; i++) {
            if (pend[i].fd >= 0 && now >= pend[i].deadline) {
                if (!pend[i].draining) {
                    mig_note_rejected(d->m, "channel/header",
                                      tls_enabled(&d->m->tls)
                                          ? "no TLS handshake and complete "
                                            "header within 3000 ms"
                                          : "no complete header within "
                                            "1000 ms");
                }
                pending_drop(&pend[i]);
                pend[i].fd = -1;
            }
        }
        for (i = 0; i < np; i++) {
            if (pend[i].fd < 0) {
                pend[i] = pend[--np];
                i--;
            }
        }

        /* New connections, non-blocking like every Chan fd. */
        while (n > 0 && (pfd[0].revents & POLLIN)) {
            int fd = accept4(d->listen_fd, NULL, NULL,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);

            if (fd < 0) {
                break;
            }
            if (np == MAX_PENDING) {
                mig_note_rejected(d->m, "channel/header",
                                  "too many connections without a header");
                close(fd);
                continue;
            }
            memset(&pend[np], 0, offsetof(Pending, buf));
            pend[np].fd = fd;
            pend[np].want = MIG2_CHANNEL_PREFIX_LEN;
            pend[np].deadline = now + (tls_enabled(&d->m->tls) ? TLS_HEADER_MS
                                                               : HEADER_MS);
            np++;
        }
    }
    for (i = 0; i < np; i++) {
        pending_drop(&pend[i]);
    }
    free(pend);
    return NULL;
}

MfdDest *mfd_dest_start(Migration *m, const Mig2Engine *e, int listen_fd,
                        char **errp)
{
    MfdDest *d = calloc(1, sizeof(*d));
    int rc;

    if (!d) {
        *errp = strdup("out of memory");
        return NULL;
    }
    d->m = m;
    d->e = e;
    d->listen_fd = listen_fd;
    d->stop_pipe[0] = d->stop_pipe[1] = -1;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    d->set = mig2_channel_set_new(e, &rc);
    if (!d->set) {
        *errp = mig_strf("cannot track channels: %s", mig2_strerror(rc));
        mfd_dest_stop(d);
        return NULL;
    }
    d->n = mig2_channel_set_expected(d->set, MIG2_CHANNEL_MULTIFD);
    d->r = calloc(d->n ? d->n : 1, sizeof(*d->r));
    d->started = calloc(d->n ? d->n : 1, sizeof(*d->started));
    d->deadline = mig_now_ms() + (int64_t)mig_cfg_u64(m, "x-channel-deadline");
    if (!d->r || !d->started || pipe2(d->stop_pipe, O_CLOEXEC) < 0) {
        *errp = strdup("out of memory");
        mfd_dest_stop(d);
        return NULL;
    }
    if (listen_fd >= 0) {
        if (pthread_create(&d->acceptor, NULL, acceptor_main, d)) {
            *errp = strdup("cannot start the channel acceptor");
            mfd_dest_stop(d);
            return NULL;
        }
        d->acceptor_started = true;
    }
    return d;
}

unsigned mfd_dest_channels(const MfdDest *d)
{
    return d->n;
}

/*
 * Wait until every channel delivered CHANNEL_SYNC(@round).  Fails when a
 * channel broke, or one that never arrived passes x-channel-deadline.
 */
bool mfd_dest_wait_sync(MfdDest *d, uint32_t round, char **errp)
{
    pthread_mutex_lock(&d->lock);
    for (;;) {
        unsigned i, behind = 0;
        bool all_admitted = true;

        if (d->err) {
            *errp = strdup(d->err);
            d->reported = true;
            break;
        }
        for (i = 0; i < d->n; i++) {
            if (!d->started[i]) {
                all_admitted = false;
                behind++;
            } else if (d->r[i].synced < (int64_t)round) {
                behind++;
            }
        }
        if (!behind) {
            pthread_mutex_unlock(&d->lock);
            return true;
        }
        if (!all_admitted && mig_now_ms() >= d->deadline) {
            *errp = deadline_error(d);
            d->reported = true;
            break;
        }
        if (mig_cancelled(d->m)) {
            *errp = strdup("migration cancelled");
            break;
        }
        cond_wait_ms(&d->cond, &d->lock, 50);
    }
    pthread_mutex_unlock(&d->lock);
    return false;
}

/*
 * True (with the reason) when the acceptor failed the migration at
 * x-channel-deadline and mfd_dest_wait_sync has not reported it: the
 * main thread's failure is then only the interrupted read.
 */
bool mfd_dest_timed_out(MfdDest *d, char **errp)
{
    bool out;

    pthread_mutex_lock(&d->lock);
    out = d->expired && !d->reported;
    if (out) {
        *errp = strdup(d->err);
        d->reported = true;
    }
    pthread_mutex_unlock(&d->lock);
    return out;
}

char *mfd_dest_failure(MfdDest *d, int wait_ms)
{
    int64_t until = mig_now_ms() + wait_ms;
    char *why = NULL;

    pthread_mutex_lock(&d->lock);
    for (;;) {
        unsigned i, busy = 0;

        for (i = 0; i < d->n; i++) {
            busy += d->started[i] && !d->r[i].done;
        }
        if (!busy || mig_now_ms() >= until) {
            break;
        }
        cond_wait_ms(&d->cond, &d->lock, 10);
    }
    if (d->err) {
        why = strdup(d->err);
    }
    pthread_mutex_unlock(&d->lock);
    return why;
}

uint64_t mfd_dest_pages(MfdDest *d)
{
    uint64_t n = 0;
    unsigned i;

    pthread_mutex_lock(&d->lock);
    for (i = 0; i < d->n; i++) {
        n += d->r[i].pages;
    }
    pthread_mutex_unlock(&d->lock);
    return n;
}

void mfd_dest_stop(MfdDest *d)
{
    unsigned i;

    if (!d) {
        return;
    }
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_mutex_unlock(&d->lock);
    if (d->stop_pipe[1] >= 0 && write(d->stop_pipe[1], "x", 1) < 0) {
        /* The acceptor also stops when the listener closes. */
    }
    if (d->acceptor_started) {
        pthread_join(d->acceptor, NULL);
    }
    for (i = 0; d->started && i < d->n; i++) {
        if (d->started[i]) {
            /* Wake a receiver blocked in read, then reap it. */
            shutdown(d->r[i].c.rfd, SHUT_RDWR);
            pthread_join(d->r[i].thread, NULL);
            chan_close(&d->r[i].c);
        }
    }
    if (d->stop_pipe[0] >= 0) {
        close(d->stop_pipe[0]);
        close(d->stop_pipe[1]);
    }
    mig2_channel_set_free(d->set);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d->r);
    free(d->started);
    free(d->err);
    free(d);
}
