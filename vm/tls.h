/*
 * mig2-vm - TLS (GnuTLS) for migration channels
 *
 * Credentials are taken the way QEMU takes them:
 *
 *   --object tls-creds-x509,id=ID,dir=DIR,endpoint=server|client
 *            [,verify-peer=on|off][,priority=STRING]
 *   --object authz-simple,id=ID,identity=DN
 *
 * and chosen per migration with the parameters tls-creds, tls-hostname and
 * tls-authz (an empty string means unset).  They are local settings of
 * each endpoint, never negotiated: a destination with tls-creds refuses
 * plaintext connections.
 *
 * A TlsConn is one GnuTLS session on one non-blocking socket.  A Chan
 * with a TlsConn reads and writes through it (channel.c calls the
 * tls_chan_* functions below), so the stall deadline, cancel pipe,
 * readv/writev and peek all work unchanged over TLS.  A session is used
 * by one thread at a time.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_VM_TLS_H
#define MIG2_VM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <json-c/json.h>

#include "mig2/mig2.h"

#include "channel.h"

typedef struct Migration Migration;
typedef struct TlsCreds TlsCreds;
typedef struct TlsConn TlsConn;

/* The exporter label of spec section 11.4 and the binding's length. */
#define TLS_BINDING_LABEL "EXPORTER-mig2-v2-binding"
#define TLS_BINDING_LEN 32

/* Default GnuTLS priority string, as QEMU's default build. */
#define TLS_DEFAULT_PRIORITY "NORMAL"

/* ---- objects (--object), created at start-up, freed at exit ---- */

/*
 * Parse and create one object: "tls-creds-x509,..." (the credentials are
 * loaded at once, so a missing file fails start-up) or "authz-simple,...".
 * "help" lists the types.  Not thread-safe: call before threads start.
 */
bool tls_object_add(const char *spec, char **errp);
void tls_objects_free(void);

/* ---- per-migration parameters ---- */

/* The TLS part of a Migration (migration_int.h). */
typedef struct MigTls {
    /* QMP parameters; never NULL, "" when unset. */
    char *creds_id;
    char *hostname;
    char *authz_id;
    /* Resolved for the current run by tls_begin(); read-only meanwhile. */
    const TlsCreds *creds;      /* NULL: plaintext */
    char *peer_name;            /* source: the name the server must have */
    char *identity;             /* destination: the allowed client DN */
} MigTls;

bool tls_params_init(MigTls *t);
void tls_params_free(MigTls *t);
/* True for "tls-creds", "tls-hostname", "tls-authz". */
bool tls_param_is(const char *name);
/* A string, or null (QEMU's StrOrNull: null means ""). Caller holds lock. */
bool tls_param_set(MigTls *t, const char *name, json_object *value,
                   char **errp);
/* Add the three parameters to a query-migrate-parameters object. */
void tls_params_query(const MigTls *t, json_object *o);

/*
 * At migrate / migrate-incoming: resolve the objects for a run to (or
 * from) @addr, with QEMU's errors ("No TLS credentials with id ...").
 * Plain runs (tls-creds "") pass.  Caller holds the migration lock.
 */
bool tls_begin(MigTls *t, bool outgoing, const MigAddr *addr, char **errp);
static inline bool tls_enabled(const MigTls *t)
{
    return t->creds != NULL;
}

/* ---- sessions on channels ---- */

/*
 * Source: run the client handshake on @c's socket (the stall deadline and
 * cancel pipe apply), verifying the server's certificate and name unless
 * verify-peer=off.  On success @c reads and writes through TLS.
 */
bool tls_chan_client(Chan *c, const MigTls *t, char **errp);

/*
 * Destination: wait for the main connection on @lfd like chan_accept(),
 * but over TLS: each client gets @header_ms for its TLS handshake, the
 * authz check and its 8-byte preamble; clients are served side by side.
 * A plaintext v4 preamble is answered with ERROR tls-required, and every
 * refused client is recorded with mig_note_rejected().
 */
bool tls_accept_main(Migration *m, Chan *c, int lfd, int cancel_fd,
                     int stall_ms, int header_ms, char **errp);

/*
 * chan_accept_notify() callback of a plaintext destination (@opaque is
 * the Migration): a client that opened with a TLS handshake is noted.
 */
void tls_note_dropped(void *opaque, const uint8_t *pre, size_t len);

/* Outcome of tls_accept_step(). */
typedef enum TlsStep {
    TLS_STEP_WAIT,          /* poll for tls_conn_events() and call again */
    TLS_STEP_READY,         /* established and authorised */
    TLS_STEP_PLAIN,         /* the client's first byte is not TLS */
    TLS_STEP_FAILED,        /* *errp says why; close the socket */
} TlsStep;

/*
 * Destination acceptors: advance the TLS layer of a new, non-blocking
 * connection @fd by what is available.  *@conn starts NULL and is owned
 * by the caller (tls_conn_free) whatever the result.
 */
TlsStep tls_accept_step(const MigTls *t, int fd, TlsConn **conn,
                        char **errp);
/* poll() events a waiting session needs. */
short tls_conn_events(const TlsConn *conn);
/* Non-blocking read: >0 bytes, 0 end of stream, -1 with errno EAGAIN or
 * EIO (*errp set, when @errp is not NULL). */
ssize_t tls_conn_recv(TlsConn *conn, void *p, size_t n, char **errp);
/* Decrypted bytes are waiting inside GnuTLS (poll would not see them). */
bool tls_conn_pending(TlsConn *conn);
/* Best effort, non-blocking: a small frame on a fresh connection. */
void tls_conn_send_now(TlsConn *conn, const void *p, size_t n);
/* Send close_notify (best effort, bounded by @ms), once. */
void tls_conn_bye(TlsConn *conn, int ms);
void tls_conn_free(TlsConn *conn);
/* Make @conn the TLS layer of @c (which takes ownership). */
void tls_chan_attach(Chan *c, TlsConn *conn);

/* Channel I/O through TLS (channel.c). */
ssize_t tls_chan_read(Chan *c, void *p, size_t n, char **errp);
bool tls_chan_writev(Chan *c, struct iovec *iov, int iovcnt, char **errp);
bool tls_chan_readable(Chan *c);
/* close_notify, bounded by @ms; then the session is freed by chan_close. */
void tls_chan_bye(Chan *c, int ms);

/*
 * The binding of spec 11.4: the exporter with TLS_BINDING_LABEL, an empty
 * context and TLS_BINDING_LEN bytes.  Fails for TLS 1.2 without the
 * extended master secret.
 */
bool tls_chan_binding(Chan *c, uint8_t out[TLS_BINDING_LEN], char **errp);
/* {"version", "cipher", "peer-certificate-dn"} for queries. */
json_object *tls_chan_info(Chan *c);

/*
 * The handshake over TLS (spec 11.4); each is a no-op on a plain channel.
 * tls_require_binding announces tls-binding REQUIRED in @p;
 * tls_bind_engine gives @e the binding (right after mig2_engine_new);
 * tls_publish adds {"tls": ...} to x-query-handshake.
 */
bool tls_require_binding(Chan *c, Mig2Profile *p, char **errp);
bool tls_bind_engine(Chan *c, Mig2Engine *e, char **errp);
void tls_publish(Migration *m, Chan *c);

#endif /* MIG2_VM_TLS_H */
