/*
 * mig2-vm - QMP-compatible control socket
 *
 * Same framing as QEMU's QMP: on connect the server sends a greeting
 * {"QMP": {"version": ..., "capabilities": []}}; the client must send
 * {"execute": "qmp_capabilities"} first; then one JSON object per command,
 * answered by {"return": ...} or {"error": {"class": ..., "desc": ...}},
 * with the client's "id" echoed.  Events are {"event", "data",
 * "timestamp": {"seconds", "microseconds"}} lines sent to every client in
 * command mode.  Every message the server sends is one line, formatted
 * like QEMU's ({"return": {}, "id": 1}) and, as QEMU's, ended by "\r\n".
 *
 * No out-of-band execution: the greeting offers no capabilities, so
 * {"enable": ["oob"]} is refused as QEMU refuses a capability it did not
 * offer.  Malformed JSON gets a GenericError ("JSON parse error, ...",
 * with json-c's wording after the comma) and the server resumes at the
 * next line of input.  As in QEMU, 'single-quoted' strings are accepted.
 *
 * The server runs on the thread that calls qmp_poll(); command handlers
 * run there too.  qmp_emit_event() may be called from any thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_QMP_H
#define MIG2_VM_QMP_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

typedef struct Qmp Qmp;

/*
 * Limits.  A client past QMP_MAX_INPUT bytes of one unfinished JSON value
 * gets an error and is disconnected; so is a client that lets more than
 * QMP_MAX_OUTPUT bytes of replies and events pile up unread.  Clients
 * beyond QMP_MAX_CLIENTS get an error line and are closed at once.
 */
#define QMP_MAX_CLIENTS 16
#define QMP_MAX_INPUT (1u << 20)
#define QMP_MAX_OUTPUT (8u << 20)

/* QEMU's error classes. */
#define QMP_ERROR_GENERIC "GenericError"
#define QMP_ERROR_COMMAND_NOT_FOUND "CommandNotFound"

typedef struct QmpError {
    const char *cls;        /* one of the QMP_ERROR_* strings */
    char *desc;             /* allocated; freed by the server */
} QmpError;

/*
 * A command handler.  @args is the "arguments" object (never NULL: an
 * empty object when the client sent none).  Return the "return" value
 * (a new reference; NULL means {}), or set @err via qmp_error_set() and
 * return NULL.
 */
typedef json_object *(*QmpHandler)(json_object *args, void *opaque,
                                   QmpError *err);

typedef struct QmpCommand {
    const char *name;
    QmpHandler fn;
    /*
     * Allowed argument names, NULL-terminated; NULL allows none.  Other
     * names are refused ("Parameter 'x' is unexpected") before @fn runs.
     */
    const char *const *args;
} QmpCommand;

/*
 * Listen on unix socket @path (a stale socket there is removed; any other
 * kind of file is an error).  @cmds is a table terminated by a NULL name.
 * Built in: qmp_capabilities, and query-commands and query-version unless
 * @cmds has its own.  @version "MAJOR.MINOR.MICRO" is reported in the
 * greeting and by query-version (as QEMU's "qemu" triple, with package
 * "mig2-vm").  Returns NULL and sets *errp (caller frees) on failure.
 */
Qmp *qmp_new(const char *path, const QmpCommand *cmds, void *opaque,
             const char *version, char **errp);
/*
 * Deliver queued events, give every client up to ~200 ms to take its
 * pending output (so the reply to "quit" arrives), close everything and
 * unlink the socket path if it is still ours.  Accepts NULL.  No
 * qmp_emit_event() may run concurrently.
 */
void qmp_free(Qmp *q);

/*
 * Wait up to @timeout_ms (-1: forever) for activity, then serve it:
 * accept, read, run commands, deliver events, write.  Returns false only
 * if poll() itself failed (EINTR is not a failure).
 */
bool qmp_poll(Qmp *q, int timeout_ms);

/*
 * Queue an event for every client in command mode; thread-safe.  Takes
 * @data (or NULL: no "data" member, as QEMU's STOP).  @q may be NULL (no
 * control socket): @data is just freed.  Events emitted by a handler are
 * sent before that handler's reply, as QEMU does.
 */
void qmp_emit_event(Qmp *q, const char *name, json_object *data);

/* Fill @err with a formatted description; the first error set wins. */
void qmp_error_set(QmpError *err, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Argument helpers: false and @err set, with QEMU's texts ("Parameter
 * 'x' is missing", "Invalid parameter type for 'x', expected: integer").
 * An optional argument that is absent leaves *@out untouched and sets
 * *@present (may be NULL) to false.  JSON null counts as the wrong type.
 * The string stays valid as long as @args.
 *
 * qmp_arg_int is QEMU's 'int' (int64); qmp_arg_uint is its 'uint64' and
 * 'size' (most migration parameters): "Parameter 'x' expects uint64",
 * and, as QEMU does for backward compatibility, a negative value wraps.
 */
bool qmp_arg_str(json_object *args, const char *name, bool required,
                 const char **out, QmpError *err);
bool qmp_arg_int(json_object *args, const char *name, bool required,
                 int64_t *out, bool *present, QmpError *err);
bool qmp_arg_uint(json_object *args, const char *name, bool required,
                  uint64_t *out, bool *present, QmpError *err);
bool qmp_arg_bool(json_object *args, const char *name, bool required,
                  bool *out, bool *present, QmpError *err);

#endif /* MIG2_VM_QMP_H */
