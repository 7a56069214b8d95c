/*
 * libFuzzer target legacy: mig2-vm's loader for the legacy v3 stream
 * (vm/legacy.c, mig_v3_destination), the whole input being the stream.
 *
 * The bytes reach the loader exactly as a `migrate-incoming file:PATH`
 * stream does: through a Chan whose read side is a file descriptor, here
 * a memfd holding the input (a regular-file read path, no pipe size limit,
 * no change to vm/).  As in the incoming thread (vm/migthread.c), the
 * 8-byte preamble is peeked, must be QEVM v3, and is consumed before the
 * loader runs.  The VM (fuzzvm.c) has 1 MiB of RAM and the devices the
 * seed streams were saved with (gen-corpus.sh).
 *
 * Checks beyond the sanitizers: a failed load always says why.  With
 * MIG2_FUZZ_VERBOSE set, each input's outcome is printed.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mig2/mig2.h"

#include "common.h"
#include "fuzzvm.h"
#include "migration_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static Vm vm;
static bool verbose;    /* MIG2_FUZZ_VERBOSE=1: say how each load ended */
/* Each device's state before any load: every input starts from it. */
static uint8_t **pristine;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t i;

    (void)argc;
    (void)argv;
    verbose = getenv("MIG2_FUZZ_VERBOSE") != NULL;
    fuzz_vm_init(&vm);
    pristine = calloc(vm.n_devs, sizeof(*pristine));
    FUZZ_SETUP(pristine);
    for (i = 0; i < vm.n_devs; i++) {
        pristine[i] = malloc(vm.devs[i]->values_len + 1);
        FUZZ_SETUP(pristine[i]);
        memcpy(pristine[i], vm.devs[i]->values, vm.devs[i]->values_len);
    }
    return 0;
}

/*
 * A load starts from the device's current values (fields a stream lacks
 * keep them), so an input could depend on the one before: put them back.
 */
static void restore_devices(void)
{
    size_t i;

    for (i = 0; i < vm.n_devs; i++) {
        memcpy(vm.devs[i]->values, pristine[i], vm.devs[i]->values_len);
    }
}

static int input_fd(const uint8_t *data, size_t size)
{
    int fd = memfd_create("mig2-fuzz-legacy", MFD_CLOEXEC);
    size_t off = 0;

    FUZZ_SETUP(fd >= 0);
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);

        FUZZ_SETUP(n > 0);
        off += (size_t)n;
    }
    FUZZ_SETUP(lseek(fd, 0, SEEK_SET) == 0);
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Chan c;
    char *err = NULL;
    const uint8_t *pre;
    size_t avail = 0;

    restore_devices();
    /* Read side only, no cancel pipe, no stall deadline: a file. */
    chan_init(&c, input_fd(data, size), -1, -1, 0);
    pre = chan_peek(&c, MIG2_PREAMBLE_LEN, &avail, &err);
    FUZZ_CHECK(pre != NULL);
    if (avail == MIG2_PREAMBLE_LEN &&
        mig2_stream_detect(pre) == MIG2_STREAM_LEGACY) {
        chan_consume(&c, MIG2_PREAMBLE_LEN);
        if (!mig_v3_destination(vm.mig, &c, &err)) {
            FUZZ_CHECK(err != NULL);
        }
        if (verbose) {
            fprintf(stderr, "legacy: %s\n", err ? err : "loaded");
        }
    } else if (verbose) {
        fprintf(stderr, "legacy: not a QEVM v3 stream\n");
    }
    free(err);
    chan_close(&c);
    return 0;
}
