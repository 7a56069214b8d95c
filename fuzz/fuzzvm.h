/*
 * mig2 fuzzing - a mig2-vm VM object in the fuzzer's process, built as
 * vm/main.c builds it (machine, release, default devices, extra devices),
 * with no QMP socket, no workload thread and no migration running.
 *
 * The legacy-stream target loads streams into it; the QMP target drives
 * its command table.  gen-corpus.sh starts the real mig2-vm with the same
 * settings (FUZZ_VM_ARGS) so that the seed streams match.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_FUZZ_FUZZVM_H
#define MIG2_FUZZ_FUZZVM_H

#include "vm.h"

/*
 * --memory 1M, and these --device options after the machine's defaults
 * (so that every device type and subsection can appear in a stream).
 * fuzz/gen-corpus.sh passes the same list to mig2-vm: keep them equal.
 */
#define FUZZ_VM_RAM (1u << 20)
#define FUZZ_VM_DEVICES                                                     \
    {                                                                       \
        "e1000", "cpu,apic-id=1,xsave=on", "serial,fifo=on",               \
        "virtio-net,rss=on,mac=52:54:00:12:34:99", "virtio-blk,x-inflight=2", \
        "rtc,x-reinject=3", NULL                                            \
    }

/* Build @vm (mig2-pc, current release) with its Migration; aborts on failure. */
void fuzz_vm_init(Vm *vm);
void fuzz_vm_fini(Vm *vm);

#endif /* MIG2_FUZZ_FUZZVM_H */
