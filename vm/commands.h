/*
 * mig2-vm - the QMP command table
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_COMMANDS_H
#define MIG2_VM_COMMANDS_H

#include "qmp.h"
#include "vm.h"

/* The command table; handlers take the Vm as their opaque pointer. */
const QmpCommand *vm_commands(void);

#endif /* MIG2_VM_COMMANDS_H */
