/*
 * mig2-vm - migration threads, start/cancel and query-migrate
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration_int.h"
#include "qmp.h"

Migration *migration_new(Vm *vm)
{
    Migration *m = calloc(1, sizeof(*m));
    size_t i, n = mig2_config_registry_count();

    if (!m) {
        return NULL;
    }
    m->vm = vm;
    m->listen_fd = -1;
    m->cancel_pipe[0] = m->cancel_pipe[1] = -1;
    pthread_mutex_init(&m->lock, NULL);
    m->cfg = calloc(n, sizeof(*m->cfg));
    m->policy = mig2_profile_new();
    if (!m->cfg || !m->policy || !tls_params_init(&m->tls)) {
        migration_free(m);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        const Mig2ConfigDef *def = mig2_config_registry_get(i);

        m->cfg[i].type = def->type;
        m->cfg[i].b = def->type == MIG2_CFG_BOOL && def->def_u;
        m->cfg[i].u = def->type == MIG2_CFG_U64 ? def->def_u : 0;
        m->cfg[i].s = def->def_s ? strdup(def->def_s) : NULL;
    }
    return m;
}

static void close_pipe(Migration *m)
{
    if (m->cancel_pipe[0] >= 0) {
        close(m->cancel_pipe[0]);
        close(m->cancel_pipe[1]);
    }
    m->cancel_pipe[0] = m->cancel_pipe[1] = -1;
}

void migration_reap(Migration *m)
{
    if (m->thread_live && !atomic_load(&m->running)) {
        pthread_join(m->thread, NULL);
        m->thread_live = false;
        close_pipe(m);
    }
}

void migration_free(Migration *m)
{
    size_t i;

    if (!m) {
        return;
    }
    if (m->thread_live) {
        char *e = NULL;

        migration_cancel(m, &e);
        free(e);
        pthread_join(m->thread, NULL);
        m->thread_live = false;
    }
    close_pipe(m);
    if (m->listen_fd >= 0) {
        close(m->listen_fd);
    }
    for (i = 0; m->cfg && i < mig2_config_registry_count(); i++) {
        free((char *)m->cfg[i].s);
    }
    free(m->cfg);
    tls_params_free(&m->tls);
    mig2_profile_free(m->policy);
    mig_addr_clear(&m->addr);
    free(m->bound);
    free(m->error_desc);
    json_object_put(m->hs_info);
    json_object_put(m->rejected);
    free(m->chan_test);
    free(m->prev_globalstate);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/*
 * A run is active until its status is final: the thread sets that status
 * last, just before it exits, so a new command may then join it.
 */
bool migration_is_active(Migration *m)
{
    MigStatus s = mig_status(m);

    return s == MIG_STATUS_SETUP || s == MIG_STATUS_ACTIVE ||
           s == MIG_STATUS_DEVICE || s == MIG_STATUS_CANCELLING;
}

/* Reset per-migration state before a new run. */
static bool begin(Migration *m, const MigAddr *addr, MigChannelType type,
                  bool outgoing, char **errp)
{
    migration_reap(m);
    if (migration_is_active(m)) {
        *errp = strdup("There's a migration process in progress");
        return false;
    }
    if (m->thread_live) {
        /* The last run reported its final status and is exiting. */
        pthread_join(m->thread, NULL);
        m->thread_live = false;
        close_pipe(m);
    }
    /* TLS objects exist and suit this end and transport: QEMU's errors. */
    pthread_mutex_lock(&m->lock);
    if (!tls_begin(&m->tls, outgoing, addr, errp)) {
        pthread_mutex_unlock(&m->lock);
        return false;
    }
    pthread_mutex_unlock(&m->lock);
    if (pipe2(m->cancel_pipe, O_CLOEXEC) < 0) {
        *errp = strdup("cannot create the cancel pipe");
        return false;
    }
    pthread_mutex_lock(&m->lock);
    free(m->error_desc);
    m->error_desc = NULL;
    json_object_put(m->hs_info);
    m->hs_info = NULL;
    json_object_put(m->rejected);
    m->rejected = NULL;
    memset(&m->stats, 0, sizeof(m->stats));
    m->setup_ms = m->total_ms = m->downtime_ms = 0;
    m->start_ms = mig_now_ms();
    m->outgoing = outgoing;
    m->type = type;
    m->stopped_guest = false;
    mig_addr_clear(&m->addr);
    m->addr = *addr;
    m->addr.host = addr->host ? strdup(addr->host) : NULL;
    m->addr.port = addr->port ? strdup(addr->port) : NULL;
    m->addr.path = addr->path ? strdup(addr->path) : NULL;
    m->addr.cmd = addr->cmd ? strdup(addr->cmd) : NULL;
    pthread_mutex_unlock(&m->lock);
    atomic_store(&m->cancel_requested, false);
    atomic_store(&m->running, true);
    /*
     * As QEMU: 'setup' as soon as the command returns, so query-migrate
     * never shows the previous run's final status (or nothing at all,
     * without the listening address) for the new one.
     */
    mig_set_status(m, MIG_STATUS_SETUP);
    return true;
}

/* The thread could not start (or listen failed): end the run 'failed'. */
static void begin_failed(Migration *m, const char *why)
{
    atomic_store(&m->running, false);
    close_pipe(m);
    mig_fail(m, "%s", why ? why : "migration failed");
    mig_set_status(m, MIG_STATUS_FAILED);
}

static void finish(Migration *m, bool ok, char *err)
{
    Vm *vm = m->vm;
    MigStatus final;

    pthread_mutex_lock(&m->lock);
    m->total_ms = mig_now_ms() - m->start_ms;
    if (m->downtime_start) {
        m->downtime_ms = mig_now_ms() - m->downtime_start;
        m->downtime_start = 0;
    }
    pthread_mutex_unlock(&m->lock);
    if (ok) {
        final = MIG_STATUS_COMPLETED;
    } else {
        final = mig_cancelled(m) ? MIG_STATUS_CANCELLED : MIG_STATUS_FAILED;
        mig_fail(m, "%s", err ? err : "migration failed");
    }
    if (m->outgoing) {
        if (ok) {
            vm_set_state(vm, RUN_STATE_POSTMIGRATE);
        } else if (m->stopped_guest) {
            /* The source keeps its guest: back to where it was. */
            if (m->prev_globalstate) {
                pthread_mutex_lock(&vm->lock);
                globalstate_set(vm->globalstate, m->prev_globalstate);
                pthread_mutex_unlock(&vm->lock);
            }
            if (m->prev_state == RUN_STATE_RUNNING) {
                vm_start(vm);
            } else {
                vm_set_state(vm, m->prev_state);
            }
        }
    }
    mig_set_status(m, final);
    free(err);
}

static void *outgoing_thread(void *opaque)
{
    Migration *m = opaque;
    Chan c;
    char *err = NULL;
    bool ok, oneway_v4;

    /* x-oneway-format picks the stream of one-way transports only. */
    pthread_mutex_lock(&m->lock);
    oneway_v4 = m->oneway_v4 && !mig_addr_bidirectional(&m->addr);
    pthread_mutex_unlock(&m->lock);

    mig_set_status(m, MIG_STATUS_SETUP);
    ok = chan_open_outgoing(&c, &m->addr, m->cancel_pipe[0],
                            (int)mig_cfg_u64(m, "x-stall-timeout"), &err);
    if (ok && tls_enabled(&m->tls) && !tls_chan_client(&c, &m->tls, &err)) {
        ok = false;
        chan_close(&c);
    }
    if (ok) {
        if (m->type == MIG_CHANNEL_HANDSHAKE) {
            ok = mig_v2_source(m, &c, &err);
        } else if (oneway_v4) {
            ok = mig_oneway_source(m, &c, &err);
        } else {
            ok = mig_v3_source(m, &c, &err);
        }
        chan_close(&c);
    }
    finish(m, ok, err);
    atomic_store(&m->running, false);
    return NULL;
}

bool migration_start_outgoing(Migration *m, const MigAddr *addr,
                              MigChannelType type, char **errp)
{
    RunState st = vm_state(m->vm);

    if (st == RUN_STATE_POSTMIGRATE) {
        *errp = strdup("Can't migrate the vm that was paused due to previous "
                       "migration");
        return false;
    }
    if (st == RUN_STATE_INMIGRATE) {
        *errp = strdup("Guest is waiting for an incoming migration");
        return false;
    }
    if (type == MIG_CHANNEL_HANDSHAKE && !mig_addr_bidirectional(addr)) {
        /* Refused before anything is written (spec 2.3). */
        *errp = strdup("channel-type 'handshake' needs a bidirectional "
                       "transport (tcp or unix socket); file: and exec: "
                       "carry only the legacy one-way stream");
        return false;
    }
    if (!begin(m, addr, type, true, errp)) {
        return false;
    }
    m->thread_live = true;
    if (pthread_create(&m->thread, NULL, outgoing_thread, m) != 0) {
        m->thread_live = false;
        *errp = strdup("cannot start the migration thread");
        begin_failed(m, *errp);
        return false;
    }
    return true;
}

/* Destination: after loading, take on the source's run state. */
static void incoming_done(Migration *m)
{
    Vm *vm = m->vm;
    RunState st = RUN_STATE_PAUSED;
    const char *gs;

    pthread_mutex_lock(&vm->lock);
    gs = globalstate_get(vm->globalstate);
    if (!gs || !run_state_parse(gs, &st)) {
        st = RUN_STATE_RUNNING;
    }
    pthread_mutex_unlock(&vm->lock);
    if (st == RUN_STATE_RUNNING && vm->autostart) {
        vm_start(vm);
    } else if (st == RUN_STATE_RUNNING) {
        vm_set_state(vm, RUN_STATE_PAUSED);
    } else {
        vm_set_state(vm, st);
    }
}

static void *incoming_thread(void *opaque)
{
    Migration *m = opaque;
    Chan c = { .rfd = -1, .wfd = -1 };
    char *err = NULL;
    const uint8_t *pre;
    size_t avail = 0;
    int stall = (int)mig_cfg_u64(m, "x-stall-timeout");
    bool ok, v2 = false;

    mig_set_status(m, MIG_STATUS_SETUP);
    if (m->listen_fd >= 0) {
        /*
         * The listener stays open: v2 admits extra channels through it
         * and refuses other sources there; it closes when the run ends.
         */
        int header_ms = stall < 5000 && stall > 0 ? stall : 5000;

        if (tls_enabled(&m->tls)) {
            ok = tls_accept_main(m, &c, m->listen_fd, m->cancel_pipe[0],
                                 stall, header_ms, &err);
        } else {
            ok = chan_accept_notify(&c, m->listen_fd, m->cancel_pipe[0],
                                    stall, header_ms, tls_note_dropped, m,
                                    &err);
        }
    } else {
        ok = chan_open_incoming_stream(&c, &m->addr, m->cancel_pipe[0], stall,
                                       &err);
    }
    if (ok) {
        pre = chan_peek(&c, MIG2_PREAMBLE_LEN, &avail, &err);
        if (!pre) {
            ok = false;
        } else if (avail < MIG2_PREAMBLE_LEN) {
            ok = false;
            err = strdup("the stream ended before its 8-byte header");
        }
    }
    if (ok) {
        switch (mig2_stream_detect(pre)) {
        case MIG2_STREAM_LEGACY:
            if (m->type == MIG_CHANNEL_HANDSHAKE) {
                ok = false;
                err = strdup("the source sent a legacy v3 migration stream, "
                             "but this destination was told to expect the "
                             "v2 handshake (channel-type 'handshake')");
                break;
            }
            chan_consume(&c, MIG2_PREAMBLE_LEN);
            /* One-way and single channel: nothing more to accept. */
            if (m->listen_fd >= 0) {
                close(m->listen_fd);
                m->listen_fd = -1;
            }
            ok = mig_v3_destination(m, &c, &err);
            break;
        case MIG2_STREAM_HANDSHAKE:
            /* The first frame tells a one-way stream from a live one. */
            pre = chan_peek(&c, MIG2_ONEWAY_DETECT_LEN, &avail, &err);
            if (!pre) {
                ok = false;
                break;
            }
            if (avail >= MIG2_ONEWAY_DETECT_LEN &&
                mig2_stream_is_oneway(pre)) {
                if (m->type == MIG_CHANNEL_HANDSHAKE) {
                    ok = false;
                    err = strdup("the source sent a one-way v4 stream "
                                 "(MANIFEST), but this destination was told "
                                 "to expect the live handshake "
                                 "(channel-type 'handshake')");
                    break;
                }
                /* One-way: nothing to answer, no channels to accept. */
                if (m->listen_fd >= 0) {
                    close(m->listen_fd);
                    m->listen_fd = -1;
                }
                ok = mig_oneway_destination(m, &c, &err);
                break;
            }
            if (!mig_addr_bidirectional(&m->addr)) {
                ok = false;
                err = strdup("a live v2 stream (QEVM v4 without a MANIFEST) "
                             "cannot be read from a one-way transport");
                break;
            }
            /* The engine reads the preamble itself: it is hashed. */
            v2 = true;
            ok = mig_v2_destination(m, &c, &err);
            break;
        case MIG2_STREAM_UNKNOWN:
            ok = false;
            err = strdup("Not a migration stream (bad magic)");
            break;
        default:
            ok = false;
            err = mig_strf("Unsupported migration stream version %u",
                           (unsigned)(pre[4] << 24 | pre[5] << 16 |
                                      pre[6] << 8 | pre[7]));
            break;
        }
    }
    if (c.rfd >= 0 || c.wfd >= 0) {
        /*
         * Only v2 sends an ERROR.  Refusing a preamble sends nothing
         * (spec 7.4) and a v3 load has no return path: draining those
         * would let a one-way source write its whole stream and count the
         * migration complete although nothing was loaded here.
         */
        if (!ok && v2) {
            /* Let our ERROR reach the source before the socket closes. */
            chan_linger(&c, 2000);
        }
        chan_close(&c);
    }
    if (m->listen_fd >= 0) {
        close(m->listen_fd);
        m->listen_fd = -1;
    }
    if (ok) {
        incoming_done(m);
    } else {
        fprintf(stderr, "mig2-vm: load of migration failed: %s\n",
                err ? err : "unknown error");
    }
    finish(m, ok, err);
    if (!ok && m->exit_on_error) {
        atomic_store(&m->vm->exit_code, 1);
        atomic_store(&m->vm->quit, true);
    }
    atomic_store(&m->running, false);
    return NULL;
}

bool migration_start_incoming(Migration *m, const MigAddr *addr,
                              MigChannelType type, bool exit_on_error,
                              char **errp)
{
    if (vm_state(m->vm) != RUN_STATE_INMIGRATE) {
        *errp = strdup("'-incoming' was not specified on the command line");
        return false;
    }
    if (type == MIG_CHANNEL_HANDSHAKE && !mig_addr_bidirectional(addr)) {
        *errp = strdup("channel-type 'handshake' needs a bidirectional "
                       "transport (tcp or unix socket); file: and exec: "
                       "carry only the legacy one-way stream");
        return false;
    }
    if (!begin(m, addr, type, false, errp)) {
        return false;
    }
    m->exit_on_error = exit_on_error;
    free(m->bound);
    m->bound = NULL;
    if (mig_addr_bidirectional(addr)) {
        m->listen_fd = chan_listen(addr, &m->bound, errp);
        if (m->listen_fd < 0) {
            begin_failed(m, *errp);
            return false;
        }
    }
    m->thread_live = true;
    if (pthread_create(&m->thread, NULL, incoming_thread, m) != 0) {
        m->thread_live = false;
        *errp = strdup("cannot start the migration thread");
        begin_failed(m, *errp);
        return false;
    }
    return true;
}

bool migration_cancel(Migration *m, char **errp)
{
    (void)errp;
    if (!atomic_load(&m->running)) {
        return true;        /* QEMU: cancelling nothing is not an error */
    }
    atomic_store(&m->cancel_requested, true);
    mig_set_status(m, MIG_STATUS_CANCELLING);
    if (m->cancel_pipe[1] >= 0 && write(m->cancel_pipe[1], "c", 1) < 0) {
        /* The flag alone still stops the loops at their next check. */
    }
    return true;
}

json_object *migration_query(Migration *m)
{
    json_object *o = json_object_new_object(), *ram;
    int64_t now = mig_now_ms();

    pthread_mutex_lock(&m->lock);
    if (m->status == MIG_STATUS_NONE) {
        pthread_mutex_unlock(&m->lock);
        return o;
    }
    json_object_object_add(o, "status", json_object_new_string(
        mig_status_name(m->status)));
    if (m->bound && !m->outgoing) {
        json_object *arr = json_object_new_array();

        json_object_array_add(arr, json_object_new_string(m->bound));
        json_object_object_add(o, "socket-address", arr);
    }
    if (m->outgoing || m->status == MIG_STATUS_COMPLETED) {
        bool done = m->status == MIG_STATUS_COMPLETED ||
                    m->status == MIG_STATUS_FAILED ||
                    m->status == MIG_STATUS_CANCELLED;
        int64_t total = done ? m->total_ms : now - m->start_ms;
        double mbps = total > 0 ? (double)m->stats.transferred * 8.0 /
                                      ((double)total * 1000.0)
                                : 0.0;

        json_object_object_add(o, "total-time", json_object_new_int64(total));
        json_object_object_add(o, "setup-time",
                               json_object_new_int64(m->setup_ms));
        if (m->status == MIG_STATUS_COMPLETED) {
            json_object_object_add(o, "downtime",
                                   json_object_new_int64(m->downtime_ms));
        } else if (m->stats.last_rate > 0) {
            json_object_object_add(o, "expected-downtime", json_object_new_int64(
                (int64_t)((double)m->stats.remaining / m->stats.last_rate)));
        }
        ram = json_object_new_object();
        json_object_object_add(ram, "transferred",
                               json_object_new_int64((int64_t)
                                                     m->stats.transferred));
        json_object_object_add(ram, "remaining",
                               json_object_new_int64((int64_t)
                                                     m->stats.remaining));
        json_object_object_add(ram, "total",
                               json_object_new_int64((int64_t)m->stats.total));
        json_object_object_add(ram, "duplicate",
                               json_object_new_int64((int64_t)
                                                     m->stats.duplicate));
        json_object_object_add(ram, "normal",
                               json_object_new_int64((int64_t)
                                                     m->stats.normal));
        json_object_object_add(ram, "normal-bytes", json_object_new_int64(
            (int64_t)(m->stats.normal * RAM_PAGE_SIZE)));
        json_object_object_add(ram, "dirty-sync-count",
                               json_object_new_int64((int64_t)
                                   m->stats.dirty_sync_count));
        json_object_object_add(ram, "mbps", json_object_new_double(mbps));
        json_object_object_add(o, "ram", ram);
    }
    if (m->rejected) {
        json_object_object_add(o, "x-rejected-connections",
                               json_object_get(m->rejected));
    }
    if (m->error_desc && (m->status == MIG_STATUS_FAILED ||
                          m->status == MIG_STATUS_CANCELLED)) {
        json_object_object_add(o, "error-desc",
                               json_object_new_string(m->error_desc));
    }
    pthread_mutex_unlock(&m->lock);
    return o;
}

void mig_note_rejected(Migration *m, const char *reason, const char *detail)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "reason", json_object_new_string(reason));
    json_object_object_add(o, "detail",
                           json_object_new_string(detail ? detail : ""));
    pthread_mutex_lock(&m->lock);
    if (!m->rejected) {
        m->rejected = json_object_new_array();
    }
    /* Bounded: a flood of bad connections cannot grow this forever. */
    if (json_object_array_length(m->rejected) < 64) {
        json_object_array_add(m->rejected, o);
        o = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    json_object_put(o);
}

json_object *migration_query_handshake(Migration *m)
{
    json_object *o;

    pthread_mutex_lock(&m->lock);
    o = m->hs_info ? json_object_get(m->hs_info) : json_object_new_object();
    pthread_mutex_unlock(&m->lock);
    return o;
}
