/*
 * mig2-vm - the VM object shared by the endpoint's modules
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_VM_H
#define MIG2_VM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "device.h"
#include "ram.h"

typedef struct Qmp Qmp;
typedef struct Migration Migration;

/* QEMU's run state names. */
typedef enum RunState {
    RUN_STATE_PRELAUNCH,
    RUN_STATE_RUNNING,
    RUN_STATE_PAUSED,
    RUN_STATE_INMIGRATE,
    RUN_STATE_FINISH_MIGRATE,
    RUN_STATE_POSTMIGRATE,
    RUN_STATE_SHUTDOWN,
    RUN_STATE__MAX,
} RunState;

const char *run_state_name(RunState s);
/* Parse a name (as carried in globalstate); false if unknown. */
bool run_state_parse(const char *name, RunState *s);

typedef struct Vm {
    char *name;
    const MachineDesc *machine;
    const Release *release;
    char *build;                /* "mig2-vm 0.1.0 (release 2.0)" */

    RamBlock ram;               /* ram.host NULL: the machine has none */
    DeviceState **devs;
    size_t n_devs;
    struct DevIndex *dev_index; /* (id, instance) -> index in devs */
    DeviceState *globalstate;   /* also in devs */

    /*
     * Big lock: run state and device state.  The workload holds
     * vcpu_lock for each burst of guest activity, so taking it proves no
     * guest write is in flight.
     */
    pthread_mutex_t lock;
    pthread_mutex_t vcpu_lock;
    pthread_cond_t run_cond;
    RunState state;
    bool autostart;             /* false with -S */

    uint64_t dirty_rate;        /* pages per second; 0: no workload */
    pthread_t workload;
    bool workload_started;
    atomic_bool stopping;       /* the process is exiting */

    Qmp *qmp;
    Migration *mig;

    atomic_bool quit;
    atomic_int exit_code;
} Vm;

/* Run state changes; emit STOP / RESUME events as QEMU does. */
void vm_stop(Vm *vm, RunState new_state);
void vm_start(Vm *vm);
RunState vm_state(Vm *vm);
void vm_set_state(Vm *vm, RunState s);
bool vm_is_running(Vm *vm);

/* The guest workload thread (only with a dirty rate). */
bool vm_workload_start(Vm *vm, char **errp);
void vm_workload_stop(Vm *vm);

/*
 * Add @d (taking it; freed on failure) as the next instance of its stream
 * id, with the release's settings applied.
 */
bool vm_add_device(Vm *vm, DeviceState *d, char **errp);
/* Find a device by stream id and instance. */
DeviceState *vm_find_device(Vm *vm, const char *id, uint32_t instance);
/* Free the devices (at exit). */
void vm_free_devices(Vm *vm);

/*
 * x-query-guest-digest: SHA-256 over all RAM (hex into @ram) and all
 * device state (@devs), and over both (@all).  Buffers of 65 bytes.
 */
bool vm_digest(Vm *vm, char *all, char *ram, char *devs);

#endif /* MIG2_VM_VM_H */
