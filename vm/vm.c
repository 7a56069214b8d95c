/*
 * mig2-vm - run state, the guest workload and the guest digest
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devindex.h"
#include "qmp.h"
#include "vm.h"

static const char *const run_state_names[RUN_STATE__MAX] = {
    [RUN_STATE_PRELAUNCH] = "prelaunch",
    [RUN_STATE_RUNNING] = "running",
    [RUN_STATE_PAUSED] = "paused",
    [RUN_STATE_INMIGRATE] = "inmigrate",
    [RUN_STATE_FINISH_MIGRATE] = "finish-migrate",
    [RUN_STATE_POSTMIGRATE] = "postmigrate",
    [RUN_STATE_SHUTDOWN] = "shutdown",
};

const char *run_state_name(RunState s)
{
    return s < RUN_STATE__MAX ? run_state_names[s] : "unknown";
}

bool run_state_parse(const char *name, RunState *s)
{
    int i;

    for (i = 0; i < RUN_STATE__MAX; i++) {
        if (strcmp(run_state_names[i], name) == 0) {
            *s = (RunState)i;
            return true;
        }
    }
    return false;
}

RunState vm_state(Vm *vm)
{
    RunState s;

    pthread_mutex_lock(&vm->lock);
    s = vm->state;
    pthread_mutex_unlock(&vm->lock);
    return s;
}

bool vm_is_running(Vm *vm)
{
    return vm_state(vm) == RUN_STATE_RUNNING;
}

static void emit(Vm *vm, const char *event)
{
    if (vm->qmp) {
        qmp_emit_event(vm->qmp, event, NULL);
    }
}

void vm_set_state(Vm *vm, RunState s)
{
    bool was_running;

    pthread_mutex_lock(&vm->lock);
    was_running = vm->state == RUN_STATE_RUNNING;
    vm->state = s;
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->lock);
    if (was_running && s != RUN_STATE_RUNNING) {
        /* Wait out a guest burst already under way. */
        pthread_mutex_lock(&vm->vcpu_lock);
        pthread_mutex_unlock(&vm->vcpu_lock);
        emit(vm, "STOP");
    } else if (!was_running && s == RUN_STATE_RUNNING) {
        emit(vm, "RESUME");
    }
}

void vm_stop(Vm *vm, RunState new_state)
{
    vm_set_state(vm, new_state);
}

void vm_start(Vm *vm)
{
    vm_set_state(vm, RUN_STATE_RUNNING);
}

/*
 * Instances count the devices that share a stream id, as in QEMU: they
 * are 0..n-1, so the first free one is found by doubling, then halving.
 */
static uint32_t next_instance(const DevIndex *x, const char *id)
{
    uint32_t lo = 0, hi = 1;
    size_t v;

    while (hi < UINT32_MAX / 2 && dev_index_get(x, id, hi - 1, &v)) {
        lo = hi;
        hi *= 2;
    }
    hi--;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (dev_index_get(x, id, mid, &v)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

bool vm_add_device(Vm *vm, DeviceState *d, char **errp)
{
    DeviceState **nd;

    if (!vm->dev_index && !(vm->dev_index = dev_index_new(16))) {
        goto nomem;
    }
    d->instance = next_instance(vm->dev_index, d->id);
    if (!release_apply(vm->release, d, errp)) {
        device_free(d);
        return false;
    }
    nd = realloc(vm->devs, (vm->n_devs + 1) * sizeof(*nd));
    if (!nd) {
        goto nomem;
    }
    vm->devs = nd;
    if (!dev_index_put(vm->dev_index, d->id, d->instance, vm->n_devs, NULL)) {
        goto nomem;     /* the instance was free: only memory can fail */
    }
    vm->devs[vm->n_devs++] = d;
    if (strcmp(d->type->name, "globalstate") == 0) {
        vm->globalstate = d;
    }
    return true;

nomem:
    device_free(d);
    *errp = strdup("out of memory");
    return false;
}

DeviceState *vm_find_device(Vm *vm, const char *id, uint32_t instance)
{
    size_t i;

    return vm->dev_index && dev_index_get(vm->dev_index, id, instance, &i)
               ? vm->devs[i]
               : NULL;
}

void vm_free_devices(Vm *vm)
{
    size_t i;

    for (i = 0; i < vm->n_devs; i++) {
        device_free(vm->devs[i]);
    }
    free(vm->devs);
    vm->devs = NULL;
    vm->n_devs = 0;
    vm->globalstate = NULL;
    dev_index_free(vm->dev_index);
    vm->dev_index = NULL;
}

/* ---- the guest ---- */

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

#define TICK_MS 10

static void *workload_main(void *opaque)
{
    Vm *vm = opaque;
    uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    uint64_t n = 0;
    double carry = 0;

    while (!atomic_load(&vm->stopping)) {
        bool running;

        /* The state is checked under vcpu_lock: see vm_set_state. */
        pthread_mutex_lock(&vm->vcpu_lock);
        pthread_mutex_lock(&vm->lock);
        running = vm->state == RUN_STATE_RUNNING;
        pthread_mutex_unlock(&vm->lock);
        if (running) {
            double want = (double)vm->dirty_rate * TICK_MS / 1000.0 + carry;
            uint64_t pages = (uint64_t)want, i;
            size_t d;

            carry = want - (double)pages;
            for (i = 0; vm->ram.host && i < pages; i++) {
                uint64_t pg = xorshift(&seed) % vm->ram.n_pages;
                uint64_t val = xorshift(&seed);
                uint64_t off = pg * RAM_PAGE_SIZE + (val % (RAM_PAGE_SIZE / 8))
                                                        * 8;

                ram_write(&vm->ram, off, &val, sizeof(val));
            }
            pthread_mutex_lock(&vm->lock);
            for (d = 0; d < vm->n_devs; d++) {
                device_tick(vm->devs[d], n);
            }
            pthread_mutex_unlock(&vm->lock);
            n++;
        }
        pthread_mutex_unlock(&vm->vcpu_lock);
        if (!running) {
            struct timespec until;

            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 100 * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_mutex_lock(&vm->lock);
            if (vm->state != RUN_STATE_RUNNING &&
                !atomic_load(&vm->stopping)) {
                pthread_cond_timedwait(&vm->run_cond, &vm->lock, &until);
            }
            pthread_mutex_unlock(&vm->lock);
            continue;
        }
        usleep(TICK_MS * 1000);
    }
    return NULL;
}

bool vm_workload_start(Vm *vm, char **errp)
{
    if (pthread_create(&vm->workload, NULL, workload_main, vm) != 0) {
        *errp = strdup("cannot start the workload thread");
        return false;
    }
    vm->workload_started = true;
    return true;
}

void vm_workload_stop(Vm *vm)
{
    if (!vm->workload_started) {
        return;
    }
    atomic_store(&vm->stopping, true);
    pthread_mutex_lock(&vm->lock);
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->lock);
    pthread_join(vm->workload, NULL);
    vm->workload_started = false;
}

/* ---- digest ---- */

static void to_hex(const uint8_t *d, char *out)
{
    int i;

    for (i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

bool vm_digest(Vm *vm, char *all, char *ram, char *devs)
{
    gnutls_hash_hd_t h;
    uint8_t dr[32], dd[32], da[32];
    Mig2Writer w;
    size_t i;
    uint8_t len[8];
    uint64_t v;

    /* No guest write may be half done while we read. */
    pthread_mutex_lock(&vm->vcpu_lock);
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
        pthread_mutex_unlock(&vm->vcpu_lock);
        return false;
    }
    if (vm->ram.host) {
        gnutls_hash(h, vm->ram.name, strlen(vm->ram.name) + 1);
        v = vm->ram.size;
        for (i = 0; i < 8; i++) {
            len[i] = (uint8_t)(v >> (56 - 8 * i));
        }
        gnutls_hash(h, len, 8);
        gnutls_hash(h, vm->ram.host, vm->ram.size);
    }
    gnutls_hash_deinit(h, dr);

    mig2_wr_init(&w, 64u << 20);
    pthread_mutex_lock(&vm->lock);
    for (i = 0; i < vm->n_devs; i++) {
        mig2_wr_str8(&w, vm->devs[i]->id);
        mig2_wr_u32(&w, vm->devs[i]->instance);
        device_canonical(vm->devs[i], &w);
    }
    pthread_mutex_unlock(&vm->lock);
    pthread_mutex_unlock(&vm->vcpu_lock);
    if (mig2_wr_error(&w) ||
        gnutls_hash_fast(GNUTLS_DIG_SHA256, w.buf ? w.buf : (void *)"", w.len,
                         dd) < 0) {
        mig2_wr_free(&w);
        return false;
    }
    mig2_wr_free(&w);
    {
        uint8_t both[64];

        memcpy(both, dr, 32);
        memcpy(both + 32, dd, 32);
        if (gnutls_hash_fast(GNUTLS_DIG_SHA256, both, sizeof(both), da) < 0) {
            return false;
        }
    }
    to_hex(da, all);
    to_hex(dr, ram);
    to_hex(dd, devs);
    return true;
}
