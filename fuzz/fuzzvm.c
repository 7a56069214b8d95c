/*
 * mig2 fuzzing - the VM object the legacy and QMP targets use
 *
 * Mirrors setup_vm() in vm/main.c for the options the seeds were made
 * with: default machine and release, FUZZ_VM_RAM of RAM, the machine's
 * devices then FUZZ_VM_DEVICES.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzzvm.h"
#include "migration.h"

static void add_device(Vm *vm, const char *spec)
{
    char *name = strdup(spec), *comma, *err = NULL;
    const DeviceType *t;
    DeviceState *d;

    FUZZ_SETUP(name);
    comma = strchr(name, ',');
    if (comma) {
        *comma = '\0';
    }
    t = device_type_find(name);
    FUZZ_SETUP(t);
    d = device_new(t, comma ? comma + 1 : NULL, 0, &err);
    if (!d) {
        fprintf(stderr, "fuzzvm: %s: %s\n", spec, err ? err : "?");
    }
    FUZZ_SETUP(d);
    free(name);
    FUZZ_SETUP(vm_add_device(vm, d, &err));
}

void fuzz_vm_init(Vm *vm)
{
    static const char *const extra[] = FUZZ_VM_DEVICES;
    const char *const *dd;
    char *err = NULL;

    memset(vm, 0, sizeof(*vm));
    pthread_mutex_init(&vm->lock, NULL);
    pthread_mutex_init(&vm->vcpu_lock, NULL);
    pthread_cond_init(&vm->run_cond, NULL);
    vm->machine = machine_default();
    vm->release = release_current();
    FUZZ_SETUP(vm->machine && vm->release);
    vm->name = strdup("mig2-fuzz");
    vm->build = strdup("mig2-vm (fuzz)");
    FUZZ_SETUP(vm->name && vm->build);
    FUZZ_SETUP(vm->machine->ram_block);
    FUZZ_SETUP(ram_block_init(&vm->ram, vm->machine->ram_block, FUZZ_VM_RAM,
                              NULL, &err));
    for (dd = vm->machine->default_devices; dd && *dd; dd++) {
        add_device(vm, *dd);
    }
    for (dd = extra; *dd; dd++) {
        add_device(vm, *dd);
    }
    FUZZ_SETUP(vm->globalstate);
    globalstate_set(vm->globalstate, "running");
    vm->autostart = true;
    vm->state = RUN_STATE_RUNNING;
    vm->mig = migration_new(vm);
    FUZZ_SETUP(vm->mig);
}

void fuzz_vm_fini(Vm *vm)
{
    migration_free(vm->mig);
    vm_free_devices(vm);
    ram_block_destroy(&vm->ram);
    free(vm->build);
    free(vm->name);
    pthread_mutex_destroy(&vm->lock);
    pthread_mutex_destroy(&vm->vcpu_lock);
    pthread_cond_destroy(&vm->run_cond);
}
