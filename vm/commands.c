/*
 * mig2-vm - QMP commands
 *
 * Names and arguments follow QEMU's QMP where QEMU has the command.
 * Handlers only validate and hand over; migration work happens on the
 * migration thread, so a bad command never disturbs a running migration.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig2/mig2.h"

#include "commands.h"
#include "migration.h"
#include "qmp.h"

static void set_err(QmpError *err, char *msg)
{
    qmp_error_set(err, QMP_ERROR_GENERIC, "%s", msg ? msg : "error");
    free(msg);
}

static json_object *cmd_query_status(json_object *args, void *opaque,
                                     QmpError *err)
{
    Vm *vm = opaque;
    RunState s = vm_state(vm);
    json_object *o = json_object_new_object();

    (void)args;
    (void)err;
    json_object_object_add(o, "status",
                           json_object_new_string(run_state_name(s)));
    json_object_object_add(o, "singlestep", json_object_new_boolean(false));
    json_object_object_add(o, "running",
                           json_object_new_boolean(s == RUN_STATE_RUNNING));
    return o;
}

static json_object *cmd_stop(json_object *args, void *opaque, QmpError *err)
{
    Vm *vm = opaque;
    RunState s = vm_state(vm);

    (void)args;
    (void)err;
    if (s == RUN_STATE_RUNNING) {
        vm_stop(vm, RUN_STATE_PAUSED);
    } else if (s == RUN_STATE_INMIGRATE) {
        /* QEMU: an incoming VM then stays paused after migration. */
        vm->autostart = false;
    }
    return NULL;
}

static json_object *cmd_cont(json_object *args, void *opaque, QmpError *err)
{
    Vm *vm = opaque;
    RunState s = vm_state(vm);

    (void)args;
    switch (s) {
    case RUN_STATE_INMIGRATE:
        vm->autostart = true;
        return NULL;
    case RUN_STATE_FINISH_MIGRATE:
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "The VM is finishing a migration");
        return NULL;
    case RUN_STATE_POSTMIGRATE:
        /* QEMU allows it: the source resumes after migrating away. */
    default:
        if (s != RUN_STATE_RUNNING) {
            vm_start(vm);
        }
        return NULL;
    }
}

static json_object *cmd_quit(json_object *args, void *opaque, QmpError *err)
{
    Vm *vm = opaque;

    (void)args;
    (void)err;
    atomic_store(&vm->quit, true);
    return NULL;
}

/* uri or channels -> address and channel type, QEMU's rules. */
static bool parse_target(json_object *args, MigAddr *addr,
                         MigChannelType *type, QmpError *err)
{
    json_object *uri = NULL, *channels = NULL, *ch, *ct, *a;
    const char *t;
    char *e = NULL;

    json_object_object_get_ex(args, "uri", &uri);
    json_object_object_get_ex(args, "channels", &channels);
    if (uri && channels) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "need either 'uri' or "
                      "'channels' argument");
        return false;
    }
    if (!uri && !channels) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "Parameter 'uri' is missing");
        return false;
    }
    if (uri) {
        if (!json_object_is_type(uri, json_type_string)) {
            qmp_error_set(err, QMP_ERROR_GENERIC,
                          "Invalid parameter type for 'uri', expected: "
                          "string");
            return false;
        }
        *type = MIG_CHANNEL_MAIN;
        if (!mig_addr_parse_uri(json_object_get_string(uri), addr, &e)) {
            set_err(err, e);
            return false;
        }
        return true;
    }
    if (!json_object_is_type(channels, json_type_array)) {
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "Invalid parameter type for 'channels', expected: "
                      "array");
        return false;
    }
    if (json_object_array_length(channels) != 1) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "Channel list has more than "
                      "one entries");
        return false;
    }
    ch = json_object_array_get_idx(channels, 0);
    if (!json_object_is_type(ch, json_type_object) ||
        !json_object_object_get_ex(ch, "channel-type", &ct) ||
        !json_object_is_type(ct, json_type_string)) {
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "Parameter 'channel-type' is missing");
        return false;
    }
    t = json_object_get_string(ct);
    if (strcmp(t, "main") == 0) {
        *type = MIG_CHANNEL_MAIN;
    } else if (strcmp(t, "handshake") == 0) {
        *type = MIG_CHANNEL_HANDSHAKE;
    } else {
        qmp_error_set(err, QMP_ERROR_GENERIC, "Parameter 'channel-type' does "
                      "not accept value '%s'", t);
        return false;
    }
    json_object_object_get_ex(ch, "addr", &a);
    if (!mig_addr_from_json(a, addr, &e)) {
        set_err(err, e);
        return false;
    }
    return true;
}

static json_object *cmd_migrate(json_object *args, void *opaque,
                                QmpError *err)
{
    Vm *vm = opaque;
    MigAddr addr;
    MigChannelType type;
    char *e = NULL;
    json_object *v;

    if (json_object_object_get_ex(args, "resume", &v) &&
        json_object_get_boolean(v)) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "postcopy resume is not "
                      "supported by mig2-vm");
        return NULL;
    }
    if (!parse_target(args, &addr, &type, err)) {
        return NULL;
    }
    if (!migration_start_outgoing(vm->mig, &addr, type, &e)) {
        set_err(err, e);
    }
    mig_addr_clear(&addr);
    return NULL;
}

static json_object *cmd_migrate_incoming(json_object *args, void *opaque,
                                         QmpError *err)
{
    Vm *vm = opaque;
    MigAddr addr;
    MigChannelType type;
    bool exit_on_error = true, present;
    char *e = NULL;

    if (!qmp_arg_bool(args, "exit-on-error", false, &exit_on_error, &present,
                      err)) {
        return NULL;
    }
    if (!present) {
        exit_on_error = true;
    }
    if (!parse_target(args, &addr, &type, err)) {
        return NULL;
    }
    if (!migration_start_incoming(vm->mig, &addr, type, exit_on_error, &e)) {
        set_err(err, e);
    }
    mig_addr_clear(&addr);
    return NULL;
}

static json_object *cmd_migrate_cancel(json_object *args, void *opaque,
                                       QmpError *err)
{
    Vm *vm = opaque;
    char *e = NULL;

    (void)args;
    if (!migration_cancel(vm->mig, &e)) {
        set_err(err, e);
    }
    return NULL;
}

static json_object *cmd_set_caps(json_object *args, void *opaque,
                                 QmpError *err)
{
    Vm *vm = opaque;
    json_object *caps;
    size_t i, n;

    if (!json_object_object_get_ex(args, "capabilities", &caps)) {
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "Parameter 'capabilities' is missing");
        return NULL;
    }
    if (!json_object_is_type(caps, json_type_array)) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "Invalid parameter type for "
                      "'capabilities', expected: array");
        return NULL;
    }
    n = json_object_array_length(caps);
    /* Validate everything first: all or nothing, as QEMU does. */
    for (i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(caps, i), *name, *state;
        const Mig2ConfigDef *def;

        if (!json_object_is_type(c, json_type_object) ||
            !json_object_object_get_ex(c, "capability", &name) ||
            !json_object_is_type(name, json_type_string) ||
            !json_object_object_get_ex(c, "state", &state) ||
            !json_object_is_type(state, json_type_boolean)) {
            qmp_error_set(err, QMP_ERROR_GENERIC, "each capability needs "
                          "'capability' (string) and 'state' (bool)");
            return NULL;
        }
        def = mig2_config_registry_find(json_object_get_string(name));
        if (!def || def->type != MIG2_CFG_BOOL) {
            qmp_error_set(err, QMP_ERROR_GENERIC, "Parameter 'capability' "
                          "does not accept value '%s'",
                          json_object_get_string(name));
            return NULL;
        }
    }
    if (migration_is_active(vm->mig)) {
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "There's a migration process in progress");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(caps, i), *name, *state;
        char *e = NULL;

        json_object_object_get_ex(c, "capability", &name);
        json_object_object_get_ex(c, "state", &state);
        if (!migration_set_capability(vm->mig, json_object_get_string(name),
                                      json_object_get_boolean(state), &e)) {
            set_err(err, e);
            return NULL;
        }
    }
    return NULL;
}

static json_object *cmd_query_caps(json_object *args, void *opaque,
                                   QmpError *err)
{
    Vm *vm = opaque;

    (void)args;
    (void)err;
    return migration_query_capabilities(vm->mig);
}

static json_object *cmd_set_params(json_object *args, void *opaque,
                                   QmpError *err)
{
    Vm *vm = opaque;
    char *e = NULL;

    /* Validate all names and types before changing anything. */
    json_object_object_foreach(args, key, val) {
        const Mig2ConfigDef *def = mig2_config_registry_find(key);
        const char *const *local = migration_local_parameters();

        while (*local && strcmp(*local, key) != 0) {
            local++;
        }
        if (*local) {
            if (!migration_check_local_parameter(key, val, &e)) {
                set_err(err, e);
                return NULL;
            }
            continue;
        }

        if (!def || def->type == MIG2_CFG_BOOL) {
            qmp_error_set(err, QMP_ERROR_GENERIC,
                          "Parameter '%s' is unexpected", key);
            return NULL;
        }
        if ((def->type == MIG2_CFG_U64 &&
             !json_object_is_type(val, json_type_int)) ||
            (def->type == MIG2_CFG_STR &&
             !json_object_is_type(val, json_type_string))) {
            qmp_error_set(err, QMP_ERROR_GENERIC, "Invalid parameter type "
                          "for '%s', expected: %s", key,
                          def->type == MIG2_CFG_U64 ? "integer" : "string");
            return NULL;
        }
    }
    if (migration_is_active(vm->mig)) {
        qmp_error_set(err, QMP_ERROR_GENERIC,
                      "There's a migration process in progress");
        return NULL;
    }
    {
        json_object_object_foreach(args, key2, val2) {
            if (!migration_set_parameter(vm->mig, key2, val2, &e)) {
                set_err(err, e);
                return NULL;
            }
        }
    }
    return NULL;
}

static json_object *cmd_query_params(json_object *args, void *opaque,
                                     QmpError *err)
{
    Vm *vm = opaque;

    (void)args;
    (void)err;
    return migration_query_parameters(vm->mig);
}

static json_object *cmd_query_migrate(json_object *args, void *opaque,
                                      QmpError *err)
{
    Vm *vm = opaque;

    (void)args;
    (void)err;
    return migration_query(vm->mig);
}

static json_object *cmd_query_handshake(json_object *args, void *opaque,
                                        QmpError *err)
{
    Vm *vm = opaque;

    (void)args;
    (void)err;
    return migration_query_handshake(vm->mig);
}

static json_object *cmd_guest_digest(json_object *args, void *opaque,
                                     QmpError *err)
{
    Vm *vm = opaque;
    char all[65], ram[65], devs[65];
    json_object *o;

    (void)args;
    if (!vm_digest(vm, all, ram, devs)) {
        qmp_error_set(err, QMP_ERROR_GENERIC, "digest computation failed");
        return NULL;
    }
    o = json_object_new_object();
    json_object_object_add(o, "digest", json_object_new_string(all));
    json_object_object_add(o, "ram", json_object_new_string(ram));
    json_object_object_add(o, "devices", json_object_new_string(devs));
    return o;
}

static const char *const migrate_args[] = {
    "uri", "channels", "blk", "inc", "detach", "resume", NULL,
};
static const char *const incoming_args[] = {
    "uri", "channels", "exit-on-error", NULL,
};
static const char *const caps_args[] = { "capabilities", NULL };

/* migrate-set-parameters takes any registered name: checked in the handler. */
static const char *const *param_args(void)
{
    static const char *names[64];
    size_t i, n = 0;

    if (!names[0]) {
        const char *const *local = migration_local_parameters();

        for (i = 0; i < mig2_config_registry_count() && n < 62; i++) {
            if (mig2_config_registry_get(i)->type != MIG2_CFG_BOOL) {
                names[n++] = mig2_config_registry_get(i)->name;
            }
        }
        for (; *local && n < 63; local++) {
            names[n++] = *local;
        }
        names[n] = NULL;
    }
    return names;
}

const QmpCommand *vm_commands(void)
{
    static QmpCommand cmds[] = {
        { "query-status", cmd_query_status, NULL },
        { "stop", cmd_stop, NULL },
        { "cont", cmd_cont, NULL },
        { "quit", cmd_quit, NULL },
        { "migrate", cmd_migrate, migrate_args },
        { "migrate-incoming", cmd_migrate_incoming, incoming_args },
        { "migrate-cancel", cmd_migrate_cancel, NULL },
        { "migrate-set-capabilities", cmd_set_caps, caps_args },
        { "query-migrate-capabilities", cmd_query_caps, NULL },
        { "migrate-set-parameters", cmd_set_params, NULL },
        { "query-migrate-parameters", cmd_query_params, NULL },
        { "query-migrate", cmd_query_migrate, NULL },
        { "x-query-handshake", cmd_query_handshake, NULL },
        { "x-query-guest-digest", cmd_guest_digest, NULL },
        { NULL, NULL, NULL },
    };
    size_t i;

    for (i = 0; cmds[i].name; i++) {
        if (strcmp(cmds[i].name, "migrate-set-parameters") == 0) {
            cmds[i].args = param_args();
        }
    }
    return cmds;
}
