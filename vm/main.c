/*
 * mig2-vm - the reference VM endpoint of protocol v2
 *
 * A process that owns guest RAM and device state and migrates them, driven
 * over a QMP-compatible socket the way a management app drives QEMU.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mig2/mig2.h"

#include "commands.h"
#include "migration.h"
#include "migration_int.h"
#include "qmp.h"
#include "tls.h"
#include "vm.h"

#define VM_VERSION "0.1.0"

/* Set from signal handlers: the only way they can talk to main. */
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

static void usage(FILE *out)
{
    fprintf(out,
"usage: mig2-vm [options]\n"
"  --name NAME                 name of this VM\n"
"  --qmp unix:PATH             QMP server socket\n"
"  --machine NAME|help         machine type (default %s)\n"
"  --memory SIZE               guest RAM, e.g. 256M, 1G (default 128M)\n"
"  --memory-file PATH          back guest RAM with PATH (private mapping)\n"
"  --mem-prealloc              fault all guest RAM in at start-up\n"
"  --device TYPE[,id=ID][,key=value...]|help   add a device (repeatable)\n"
"  --nodefaults                no default devices\n"
"  --incoming URI|defer        wait for an incoming migration\n"
"  --workload dirty-rate=N     guest writes N pages/s and ticks devices\n"
"  --release R|help            behave like release R (default newest)\n"
"  --migration-policy RULE     destination policy: clamp:NAME=MAX or\n"
"                              refuse:NAME (repeatable)\n"
"  --object tls-creds-x509,id=ID,dir=DIR,endpoint=server|client\n"
"           [,verify-peer=on|off][,priority=STRING]\n"
"  --object authz-simple,id=ID,identity=DN\n"
"                              TLS credentials and the allowed client, for\n"
"                              the tls-creds and tls-authz parameters\n"
"  -S                          start paused (prelaunch)\n"
"  --x-channel-test LIST       tests only: misbehave on purpose, LIST of\n"
"                              reverse, random, skip=N, duplicate, extra,\n"
"                              unknown-frame, unknown-critical, oversized,\n"
"                              ram-past-end (source multifd channels),\n"
"                              switchover-payload (source), done-payload,\n"
"                              sync-ack-payload (destination)\n"
"  --version                   print the version\n",
            machine_default()->name);
}

static void machines_print(FILE *out)
{
    const MachineDesc *const *t = machine_table();
    size_t i;

    fprintf(out, "Supported machines are:\n");
    for (i = 0; t[i]; i++) {
        fprintf(out, "%-12s %s%s\n", t[i]->name, t[i]->desc,
                t[i] == machine_default() ? " (default)" : "");
    }
}

typedef struct Options {
    const char *name;
    const char *qmp;
    const char *machine;
    uint64_t memory;
    const char *memory_file;
    bool mem_prealloc;
    const char **devices;
    size_t n_devices;
    const char **policies;
    size_t n_policies;
    const char **objects;
    size_t n_objects;
    bool nodefaults;
    const char *incoming;
    uint64_t dirty_rate;
    const char *release;
    bool paused;
    const char *chan_test;
} Options;

static bool add_device(Vm *vm, const char *spec, bool user, char **errp)
{
    char *type_name = strdup(spec), *comma;
    const DeviceType *t;
    DeviceState *d;

    if (!type_name) {
        *errp = strdup("out of memory");
        return false;
    }
    comma = strchr(type_name, ',');
    if (comma) {
        *comma = '\0';
    }
    t = device_type_find(type_name);
    if (!t || (user && !t->user_creatable)) {
        if (asprintf(errp, "'%s' is not a valid device model name "
                     "(see --device help)", type_name) < 0) {
            *errp = NULL;
        }
        free(type_name);
        return false;
    }
    d = device_new(t, comma ? comma + 1 : NULL, 0, errp);
    free(type_name);
    return d && vm_add_device(vm, d, errp);
}

static bool setup_vm(Vm *vm, const Options *o, char **errp)
{
    const char *const *dd;
    size_t i;

    vm->machine = machine_find(o->machine ? o->machine
                                          : machine_default()->name);
    if (!vm->machine) {
        if (asprintf(errp, "unsupported machine type '%s' (see --machine "
                     "help)", o->machine) < 0) {
            *errp = NULL;
        }
        return false;
    }
    vm->release = o->release ? release_find(o->release) : release_current();
    if (!vm->release) {
        if (asprintf(errp, "unknown release '%s' (see --release help)",
                     o->release) < 0) {
            *errp = NULL;
        }
        return false;
    }
    if (asprintf(&vm->build, "mig2-vm %s (release %s, libmig2 %s)",
                 VM_VERSION, vm->release->name, mig2_version()) < 0) {
        vm->build = NULL;
        *errp = strdup("out of memory");
        return false;
    }
    vm->name = strdup(o->name ? o->name : "mig2-vm");
    if (vm->machine->ram_block &&
        (!ram_block_init(&vm->ram, vm->machine->ram_block, o->memory,
                         o->memory_file, errp) ||
         (o->mem_prealloc && !ram_prealloc(&vm->ram, errp)))) {
        return false;
    }
    /* Machine-owned devices first, then defaults, then the user's. */
    for (dd = vm->machine->default_devices; dd && *dd; dd++) {
        char *type = strdup(*dd), *c = strchr(type, ',');
        const DeviceType *t;

        if (c) {
            *c = '\0';
        }
        t = device_type_find(type);
        free(type);
        if (o->nodefaults && t && t->user_creatable) {
            continue;
        }
        if (!add_device(vm, *dd, false, errp)) {
            return false;
        }
    }
    for (i = 0; i < o->n_devices; i++) {
        if (!add_device(vm, o->devices[i], true, errp)) {
            return false;
        }
    }
    if (!vm->globalstate) {
        *errp = strdup("machine has no globalstate device");
        return false;
    }
    globalstate_set(vm->globalstate, o->paused ? "prelaunch" : "running");
    return true;
}

static void teardown(Vm *vm)
{
    migration_free(vm->mig);
    vm->mig = NULL;
    vm_workload_stop(vm);
    qmp_free(vm->qmp);
    vm->qmp = NULL;
    vm_free_devices(vm);
    if (vm->ram.host) {
        ram_block_destroy(&vm->ram);
    }
    free(vm->build);
    free(vm->name);
    pthread_mutex_destroy(&vm->lock);
    pthread_mutex_destroy(&vm->vcpu_lock);
    pthread_cond_destroy(&vm->run_cond);
}

enum {
    OPT_NAME = 256, OPT_QMP, OPT_MACHINE, OPT_MEMORY, OPT_MEMORY_FILE,
    OPT_DEVICE, OPT_NODEFAULTS, OPT_INCOMING, OPT_WORKLOAD, OPT_RELEASE,
    OPT_POLICY, OPT_VERSION, OPT_HELP, OPT_PREALLOC, OPT_CHAN_TEST,
    OPT_OBJECT,
};

static const struct option long_opts[] = {
    { "name", required_argument, NULL, OPT_NAME },
    { "qmp", required_argument, NULL, OPT_QMP },
    { "machine", required_argument, NULL, OPT_MACHINE },
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "memory-file", required_argument, NULL, OPT_MEMORY_FILE },
    { "mem-prealloc", no_argument, NULL, OPT_PREALLOC },
    { "x-channel-test", required_argument, NULL, OPT_CHAN_TEST },
    { "device", required_argument, NULL, OPT_DEVICE },
    { "nodefaults", no_argument, NULL, OPT_NODEFAULTS },
    { "incoming", required_argument, NULL, OPT_INCOMING },
    { "workload", required_argument, NULL, OPT_WORKLOAD },
    { "release", required_argument, NULL, OPT_RELEASE },
    { "migration-policy", required_argument, NULL, OPT_POLICY },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "version", no_argument, NULL, OPT_VERSION },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
};

static bool parse_args(int argc, char **argv, Options *o, int *exit_now)
{
    int c;

    memset(o, 0, sizeof(*o));
    o->memory = 128ULL << 20;
    *exit_now = -1;
    while ((c = getopt_long(argc, argv, "S", long_opts, NULL)) != -1) {
        switch (c) {
        case 'S':
            o->paused = true;
            break;
        case OPT_NAME:
            o->name = optarg;
            break;
        case OPT_QMP:
            if (strncmp(optarg, "unix:", 5) != 0 || !optarg[5]) {
                fprintf(stderr, "mig2-vm: --qmp takes unix:PATH\n");
                return false;
            }
            /* QEMU accepts ",server=on,wait=off" suffixes: ignore them. */
            o->qmp = optarg + 5;
            break;
        case OPT_MACHINE:
            if (strcmp(optarg, "help") == 0) {
                machines_print(stdout);
                *exit_now = 0;
                return true;
            }
            o->machine = optarg;
            break;
        case OPT_MEMORY:
            if (!ram_parse_size(optarg, &o->memory) || o->memory == 0 ||
                o->memory % RAM_PAGE_SIZE) {
                fprintf(stderr, "mig2-vm: invalid --memory '%s' (a positive "
                        "multiple of 4K, e.g. 256M)\n", optarg);
                return false;
            }
            break;
        case OPT_MEMORY_FILE:
            o->memory_file = optarg;
            break;
        case OPT_PREALLOC:
            o->mem_prealloc = true;
            break;
        case OPT_CHAN_TEST:
            o->chan_test = optarg;
            break;
        case OPT_DEVICE:
            if (strcmp(optarg, "help") == 0) {
                device_catalog_print(stdout);
                *exit_now = 0;
                return true;
            }
            o->devices = realloc(o->devices,
                                 (o->n_devices + 1) * sizeof(*o->devices));
            o->devices[o->n_devices++] = optarg;
            break;
        case OPT_NODEFAULTS:
            o->nodefaults = true;
            break;
        case OPT_INCOMING:
            o->incoming = optarg;
            break;
        case OPT_WORKLOAD:
            if (strncmp(optarg, "dirty-rate=", 11) != 0 ||
                !ram_parse_size(optarg + 11, &o->dirty_rate)) {
                fprintf(stderr, "mig2-vm: --workload takes "
                        "dirty-rate=PAGES_PER_SECOND\n");
                return false;
            }
            break;
        case OPT_RELEASE:
            if (strcmp(optarg, "help") == 0) {
                release_print(stdout);
                *exit_now = 0;
                return true;
            }
            o->release = optarg;
            break;
        case OPT_POLICY:
            o->policies = realloc(o->policies,
                                  (o->n_policies + 1) * sizeof(*o->policies));
            o->policies[o->n_policies++] = optarg;
            break;
        case OPT_OBJECT:
            o->objects = realloc(o->objects,
                                 (o->n_objects + 1) * sizeof(*o->objects));
            o->objects[o->n_objects++] = optarg;
            break;
        case OPT_VERSION:
            printf("mig2-vm %s (libmig2 %s, protocol revisions %u..%u)\n",
                   VM_VERSION, mig2_version(), MIG2_REVISION_MIN,
                   MIG2_REVISION_MAX);
            *exit_now = 0;
            return true;
        case OPT_HELP:
            usage(stdout);
            *exit_now = 0;
            return true;
        default:
            usage(stderr);
            return false;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mig2-vm: unexpected argument '%s'\n", argv[optind]);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    Options o;
    Vm vm;
    char *err = NULL;
    char *qmp_path = NULL;
    int exit_now, rc = 1;
    size_t i;

    if (!parse_args(argc, argv, &o, &exit_now)) {
        return 2;
    }
    if (exit_now >= 0) {
        free(o.devices);
        free(o.policies);
        free(o.objects);
        return exit_now;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    memset(&vm, 0, sizeof(vm));
    pthread_mutex_init(&vm.lock, NULL);
    pthread_mutex_init(&vm.vcpu_lock, NULL);
    pthread_cond_init(&vm.run_cond, NULL);
    vm.dirty_rate = o.dirty_rate;
    vm.autostart = !o.paused;
    vm.state = o.incoming ? RUN_STATE_INMIGRATE
               : o.paused ? RUN_STATE_PRELAUNCH : RUN_STATE_RUNNING;

    /* Objects first, as QEMU creates them before the machine. */
    for (i = 0; i < o.n_objects; i++) {
        if (!tls_object_add(o.objects[i], &err)) {
            goto out;
        }
    }
    if (!setup_vm(&vm, &o, &err)) {
        goto out;
    }
    vm.mig = migration_new(&vm);
    if (!vm.mig) {
        err = strdup("out of memory");
        goto out;
    }
    if (o.chan_test) {
        vm.mig->chan_test = strdup(o.chan_test);
    }
    for (i = 0; i < o.n_policies; i++) {
        if (!migration_add_policy(vm.mig, o.policies[i], &err)) {
            goto out;
        }
    }
    if (o.qmp) {
        char *c;

        qmp_path = strdup(o.qmp);
        c = strchr(qmp_path, ',');
        if (c) {
            *c = '\0';
        }
        vm.qmp = qmp_new(qmp_path, vm_commands(), &vm, VM_VERSION, &err);
        if (!vm.qmp) {
            goto out;
        }
    }
    if (vm.dirty_rate && !vm_workload_start(&vm, &err)) {
        goto out;
    }
    if (o.incoming && strcmp(o.incoming, "defer") != 0) {
        MigAddr a;

        if (!mig_addr_parse_uri(o.incoming, &a, &err)) {
            goto out;
        }
        if (!migration_start_incoming(vm.mig, &a, MIG_CHANNEL_MAIN, true,
                                      &err)) {
            mig_addr_clear(&a);
            goto out;
        }
        mig_addr_clear(&a);
    }

    while (!atomic_load(&vm.quit) && !got_signal) {
        if (vm.qmp) {
            if (!qmp_poll(vm.qmp, 100)) {
                err = strdup("QMP server failed");
                break;
            }
        } else {
            usleep(100000);
        }
        migration_reap(vm.mig);
    }
    rc = err ? 1 : atomic_load(&vm.exit_code);

out:
    if (err) {
        fprintf(stderr, "mig2-vm: %s\n", err);
        free(err);
    }
    teardown(&vm);
    tls_objects_free();
    free(qmp_path);
    free(o.devices);
    free(o.policies);
    free(o.objects);
    return rc;
}
