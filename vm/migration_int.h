/*
 * mig2-vm - migration internals shared by migration.c, legacy.c and
 * migthread.c
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_MIGRATION_INT_H
#define MIG2_VM_MIGRATION_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "mig2/mig2.h"

#include "migration.h"
#include "tls.h"

typedef struct MigStats {
    uint64_t transferred;
    uint64_t remaining;
    uint64_t total;
    uint64_t duplicate;
    uint64_t normal;
    uint64_t dirty_sync_count;
    double last_rate;           /* bytes per ms of the last round */
} MigStats;

struct Migration {
    Vm *vm;
    pthread_mutex_t lock;       /* everything below that threads share */

    Mig2ConfigValue *cfg;       /* one per registry item; strings owned */
    bool oneway_v4;             /* x-oneway-format: v4, not legacy */
    Mig2Profile *policy;        /* destination policy rules only */
    MigTls tls;                 /* tls-creds, ...: local, not negotiated */

    /* The current or last migration. */
    bool outgoing;
    bool thread_live;           /* started and not yet joined */
    pthread_t thread;
    atomic_bool running;        /* the thread has not finished */
    atomic_bool cancel_requested;
    int cancel_pipe[2];
    MigAddr addr;
    MigChannelType type;
    bool exit_on_error;
    int listen_fd;
    char *bound;                /* the listening address, for query */

    MigStatus status;
    char *error_desc;
    int64_t start_ms;
    int64_t setup_ms;
    int64_t total_ms;
    int64_t downtime_ms;
    int64_t downtime_start;
    MigStats stats;
    json_object *hs_info;       /* x-query-handshake */
    json_object *rejected;      /* destination: refused connections */
    char *chan_test;            /* --x-channel-test, tests only */

    RunState prev_state;        /* source: run state before switchover */
    char *prev_globalstate;     /* source: globalstate before switchover */
    bool stopped_guest;
};

int64_t mig_now_ms(void);
char *mig_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t mig_cfg_u64(Migration *m, const char *name);
bool mig_cfg_bool(Migration *m, const char *name);
void mig_apply_final_config(Migration *m, const Mig2Engine *e);

void mig_set_status(Migration *m, MigStatus s);
MigStatus mig_status(Migration *m);
void mig_fail(Migration *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bool mig_cancelled(Migration *m);

Mig2Profile *mig_build_profile(Migration *m, bool source, char **errp);
bool mig_run_handshake(Migration *m, Chan *c, Mig2Engine *e, char **errp);
void mig_send_error(Chan *c, uint32_t code, const char *msg);
char *mig_peer_error_text(const uint8_t *p, size_t len);

/* Pages per RAM frame: 1 MiB of data, well under the frame limit. */
#define MIG_RAM_BATCH 512

typedef struct Multifd Multifd;
typedef struct MfdDest MfdDest;

/* The value of @key in --x-channel-test (tests only), or NULL. */
const char *mig_test_knob(const Migration *m, const char *key);

/* One CRITICAL frame: an 8-byte header and @len bytes of @p. */
bool mig_send_frame(Chan *c, uint16_t type, const void *p, size_t len,
                    char **errp);
/* The same for the payload in @w (encoded with mig2/data.h); frees @w. */
bool mig_send_built(Chan *c, uint16_t type, Mig2Writer *w, char **errp);
bool mig_send_channel_sync(Chan *c, uint32_t round, char **errp);
/*
 * The next frame of a data phase on @c that the receiver acts on (spec
 * 4.3, 4.5).  A length over MIG2_FRAME_MAX is refused before anything of
 * the payload is read; a type this build does not know is skipped as it
 * streams in when CRITICAL is clear (each at most MIG2_FRAME_MAX bytes),
 * refused (unknown-critical) when it is set; a known type that is not in
 * @valid (0-terminated) is refused (protocol).  Returns false with
 * *@errp, and the ERROR code to answer with in *@code: 0 when the channel
 * broke, or for an oversized ERROR, which nobody answers.
 */
bool mig_next_frame(Chan *c, const uint16_t *valid, Mig2FrameHeader *fh,
                    uint32_t *code, char **errp);
/*
 * Read @fh's payload into *@p (the caller frees it) when it is at most
 * @max bytes; refuses a longer one unread (*@code as above).
 */
bool mig_read_payload(Chan *c, const Mig2FrameHeader *fh, uint32_t max,
                      uint8_t **p, uint32_t *code, char **errp);
bool mig_send_pages(Migration *m, Chan *c, const uint64_t *pages, uint32_t n,
                    bool zero_flag, char **errp);
/* Read the rest of a RAM frame of @len bytes into guest RAM. */
bool mig_load_ram(Migration *m, Chan *c, const Mig2Engine *e, uint32_t len,
                  uint64_t *pages, char **errp);

/* multifd.c: source channels. */
Multifd *mfd_source_start(Migration *m, const Mig2Engine *e, unsigned n,
                          bool zero, char **errp);
int mfd_source_dispatch(Multifd *f, const uint64_t *pages, uint32_t n,
                        char **errp);
bool mfd_source_sync(Multifd *f, uint32_t round, char **errp);
/* Wait until every queued batch is on the wire. */
bool mfd_source_flush(Multifd *f, char **errp);
bool mfd_source_failed(Multifd *f, char **errp);
void mfd_source_stop(Multifd *f);

/* multifd.c: destination acceptor and receivers. */
MfdDest *mfd_dest_start(Migration *m, const Mig2Engine *e, int listen_fd,
                        char **errp);
unsigned mfd_dest_channels(const MfdDest *d);
bool mfd_dest_wait_sync(MfdDest *d, uint32_t round, char **errp);
/* The channel deadline ended the migration while the main thread read. */
bool mfd_dest_timed_out(MfdDest *d, char **errp);
/*
 * The first failure of a multifd channel, or NULL; waits up to @wait_ms
 * for channels still running to finish (the main channel closed: they
 * may be about to say why).
 */
char *mfd_dest_failure(MfdDest *d, int wait_ms);
uint64_t mfd_dest_pages(MfdDest *d);
void mfd_dest_stop(MfdDest *d);
/* Record a refused connection for query-migrate (thread-safe). */
void mig_note_rejected(Migration *m, const char *reason, const char *detail);

/* One dirty round: send the pages in @bitmap; report how many. */
typedef bool (*MigRoundFn)(Migration *m, Chan *c, const uint64_t *bitmap,
                           uint32_t round, uint64_t *pages, void *opaque,
                           char **errp);
bool mig_precopy(Migration *m, Chan *c, MigRoundFn send_round, void *opaque,
                 char **errp);
bool mig_send_dirty(Migration *m, Chan *c, Multifd *f, const uint64_t *bitmap,
                    bool zero_flag, uint64_t *pages, char **errp);
void mig_switchover_stop(Migration *m);

/* Protocol v2 (migration.c). */
bool mig_v2_source(Migration *m, Chan *c, char **errp);
bool mig_v2_destination(Migration *m, Chan *c, char **errp);
/* One-way v4 stream: MANIFEST, state, DIGEST (migration.c). */
bool mig_oneway_source(Migration *m, Chan *c, char **errp);
bool mig_oneway_destination(Migration *m, Chan *c, char **errp);

/* Legacy v3 stream, QEMU's format (legacy.c). */
bool mig_v3_source(Migration *m, Chan *c, char **errp);
/* The 8-byte preamble has been consumed already. */
bool mig_v3_destination(Migration *m, Chan *c, char **errp);

#endif /* MIG2_VM_MIGRATION_INT_H */
