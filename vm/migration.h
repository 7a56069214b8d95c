/*
 * mig2-vm - the migration engine of the reference endpoint
 *
 * One Migration per VM.  Outgoing and incoming migrations run on their own
 * thread; QMP handlers (main thread) start, cancel and query them.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_MIGRATION_H
#define MIG2_VM_MIGRATION_H

#include <stdbool.h>

#include <json-c/json.h>

#include "channel.h"
#include "vm.h"

typedef enum MigChannelType {
    MIG_CHANNEL_MAIN,       /* legacy v3 stream (destination: v3 or v4) */
    MIG_CHANNEL_HANDSHAKE,  /* protocol v2: QEVM v4 + handshake */
} MigChannelType;

/* QEMU's MigrationStatus names. */
typedef enum MigStatus {
    MIG_STATUS_NONE,
    MIG_STATUS_SETUP,
    MIG_STATUS_ACTIVE,
    MIG_STATUS_DEVICE,
    MIG_STATUS_COMPLETED,
    MIG_STATUS_FAILED,
    MIG_STATUS_CANCELLING,
    MIG_STATUS_CANCELLED,
} MigStatus;

const char *mig_status_name(MigStatus s);

Migration *migration_new(Vm *vm);
void migration_free(Migration *m);

/* ---- configuration (capabilities and parameters) ---- */

/*
 * migrate-set-capabilities / -parameters.  Names and types come from
 * libmig2's config registry.  Refused while a migration is active.
 */
bool migration_set_capability(Migration *m, const char *name, bool on,
                              char **errp);
bool migration_set_parameter(Migration *m, const char *name,
                             json_object *value, char **errp);
json_object *migration_query_capabilities(Migration *m);

/*
 * Parameters of this endpoint that are not protocol config items: they
 * choose what this side writes, or its security policy, and are never
 * proposed in a handshake (x-oneway-format, docs/protocol.md section 2.4;
 * tls-creds, tls-hostname, tls-authz, section 2.6).  NULL-terminated.
 */
const char *const *migration_local_parameters(void);
/* False with *@errp (QEMU's wording) when @value does not suit @name. */
bool migration_check_local_parameter(const char *name, json_object *value,
                                     char **errp);
json_object *migration_query_parameters(Migration *m);

/*
 * Local destination policy ("clamp:NAME=MAX", "refuse:NAME"), from the
 * command line; not a migration parameter.
 */
bool migration_add_policy(Migration *m, const char *rule, char **errp);

/* ---- running ---- */

bool migration_start_outgoing(Migration *m, const MigAddr *addr,
                              MigChannelType type, char **errp);
bool migration_start_incoming(Migration *m, const MigAddr *addr,
                              MigChannelType type, bool exit_on_error,
                              char **errp);
bool migration_cancel(Migration *m, char **errp);
bool migration_is_active(Migration *m);

/* query-migrate and x-query-handshake return values. */
json_object *migration_query(Migration *m);
json_object *migration_query_handshake(Migration *m);

/* Join a finished migration thread (main loop housekeeping). */
void migration_reap(Migration *m);

#endif /* MIG2_VM_MIGRATION_H */
