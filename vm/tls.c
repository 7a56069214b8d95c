/*
 * mig2-vm - TLS (GnuTLS) for migration channels
 *
 * Objects and parameters follow QEMU (crypto/tlscredsx509.c file names,
 * migration/tls.c errors); the code is mig2's own.  Every session runs on
 * a non-blocking socket: a GNUTLS_E_AGAIN is waited out with chan_wait()
 * (stall deadline, cancel pipe) in the direction GnuTLS asks for, and
 * data GnuTLS has already decrypted is taken before any poll().
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "mig2/mig2.h"

#include "migration_int.h"
#include "tls.h"

/* ---------------------------------------------------------------- */
/* Objects                                                           */
/* ---------------------------------------------------------------- */

struct TlsCreds {
    char *id;
    char *dir;
    char *priority_str;
    bool server;
    bool verify_peer;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    gnutls_dh_params_t dh;
};

typedef struct TlsAuthz {
    char *id;
    char *identity;
} TlsAuthz;

static TlsCreds **creds_list;
static size_t n_creds;
static TlsAuthz **authz_list;
static size_t n_authz;

static const TlsCreds *creds_find(const char *id)
{
    size_t i;

    for (i = 0; i < n_creds; i++) {
        if (strcmp(creds_list[i]->id, id) == 0) {
            return creds_list[i];
        }
    }
    return NULL;
}

static const TlsAuthz *authz_find(const char *id)
{
    size_t i;

    for (i = 0; i < n_authz; i++) {
        if (strcmp(authz_list[i]->id, id) == 0) {
            return authz_list[i];
        }
    }
    return NULL;
}

static void creds_free(TlsCreds *c)
{
    if (!c) {
        return;
    }
    if (c->cred) {
        gnutls_certificate_free_credentials(c->cred);
    }
    if (c->prio) {
        gnutls_priority_deinit(c->prio);
    }
    if (c->dh) {
        gnutls_dh_params_deinit(c->dh);
    }
    free(c->id);
    free(c->dir);
    free(c->priority_str);
    free(c);
}

void tls_objects_free(void)
{
    size_t i;

    for (i = 0; i < n_creds; i++) {
        creds_free(creds_list[i]);
    }
    for (i = 0; i < n_authz; i++) {
        free(authz_list[i]->id);
        free(authz_list[i]->identity);
        free(authz_list[i]);
    }
    free(creds_list);
    free(authz_list);
    creds_list = NULL;
    authz_list = NULL;
    n_creds = n_authz = 0;
}

/*
 * Next comma-separated token of *@p, with QEMU's ",," for a literal comma;
 * NULL at the end.  Caller frees.
 */
static char *next_token(const char **p)
{
    const char *s = *p;
    char *out, *o;

    if (!s || !*s) {
        return NULL;
    }
    out = o = malloc(strlen(s) + 1);
    if (!out) {
        *p = NULL;
        return NULL;
    }
    *p = NULL;
    while (*s) {
        if (*s == ',' && s[1] == ',') {
            *o++ = ',';
            s += 2;
        } else if (*s == ',') {
            *p = s + 1;
            break;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

static bool parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        *out = false;
        return true;
    }
    return false;
}

static bool id_taken(const char *id)
{
    return creds_find(id) || authz_find(id);
}

/* @name in the credentials directory; must exist when @required. */
static char *creds_path(const TlsCreds *c, const char *name, bool required,
                        char **errp)
{
    char *path = mig_strf("%s/%s", c->dir, name);

    if (!path) {
        *errp = strdup("out of memory");
        return NULL;
    }
    if (access(path, R_OK) == 0) {
        return path;
    }
    if (required || errno != ENOENT) {
        /* QEMU's wording. */
        *errp = mig_strf("Unable to access credentials %s: %s", path,
                         strerror(errno));
    }
    free(path);
    return NULL;
}

static bool creds_load(TlsCreds *c, char **errp)
{
    char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL, *dh = NULL;
    const char *errpos = NULL;
    bool ok = false;
    int rc;

    ca = creds_path(c, "ca-cert.pem", true, errp);
    if (!ca) {
        goto out;
    }
    crl = creds_path(c, "ca-crl.pem", false, errp);
    if (*errp) {
        goto out;
    }
    cert = creds_path(c, c->server ? "server-cert.pem" : "client-cert.pem",
                      c->server, errp);
    if (*errp) {
        goto out;
    }
    key = creds_path(c, c->server ? "server-key.pem" : "client-key.pem",
                     c->server, errp);
    if (*errp) {
        goto out;
    }
    if (!cert != !key) {
        *errp = mig_strf("tls-creds-x509 '%s': %s/%s without %s", c->id,
                         c->dir, cert ? "client-cert.pem" : "client-key.pem",
                         cert ? "client-key.pem" : "client-cert.pem");
        goto out;
    }
    if (c->server) {
        dh = creds_path(c, "dh-params.pem", false, errp);
        if (*errp) {
            goto out;
        }
    }
    rc = gnutls_certificate_allocate_credentials(&c->cred);
    if (rc < 0) {
        *errp = mig_strf("Cannot allocate credentials: %s",
                         gnutls_strerror(rc));
        goto out;
    }
    rc = gnutls_certificate_set_x509_trust_file(c->cred, ca,
                                                GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
        *errp = mig_strf("Cannot load CA certificate '%s': %s", ca,
                         rc == 0 ? "no certificate in the file"
                                 : gnutls_strerror(rc));
        goto out;
    }
    if (cert) {
        rc = gnutls_certificate_set_x509_key_file2(c->cred, cert, key,
                                                   GNUTLS_X509_FMT_PEM,
                                                   NULL, 0);
        if (rc < 0) {
            *errp = mig_strf("Cannot load certificate '%s' & key '%s': %s",
                             cert, key, gnutls_strerror(rc));
            goto out;
        }
    }
    if (crl) {
        rc = gnutls_certificate_set_x509_crl_file(c->cred, crl,
                                                  GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            *errp = mig_strf("Cannot load CRL '%s': %s", crl,
                             gnutls_strerror(rc));
            goto out;
        }
    }
    if (dh) {
        gnutls_datum_t d = { NULL, 0 };

        rc = gnutls_load_file(dh, &d);
        if (rc >= 0) {
            rc = gnutls_dh_params_init(&c->dh);
        }
        if (rc >= 0) {
            rc = gnutls_dh_params_import_pkcs3(c->dh, &d,
                                               GNUTLS_X509_FMT_PEM);
        }
        gnutls_free(d.data);
        if (rc < 0) {
            *errp = mig_strf("Cannot load DH parameters '%s': %s", dh,
                             gnutls_strerror(rc));
            goto out;
        }
        gnutls_certificate_set_dh_params(c->cred, c->dh);
    }
    rc = gnutls_priority_init(&c->prio, c->priority_str, &errpos);
    if (rc < 0) {
        *errp = mig_strf("Unable to set TLS session priority %s: %s (at "
                         "'%s')", c->priority_str, gnutls_strerror(rc),
                         errpos ? errpos : "");
        c->prio = NULL;
        goto out;
    }
    ok = true;
out:
    free(ca);
    free(crl);
    free(cert);
    free(key);
    free(dh);
    return ok;
}

static bool add_creds(const char *opts, char **errp)
{
    TlsCreds *c = calloc(1, sizeof(*c));
    const char *p = opts;
    char *tok;
    bool ok = true;

    if (!c) {
        *errp = strdup("out of memory");
        return false;
    }
    c->verify_peer = true;          /* QEMU's default */
    while (ok && (tok = next_token(&p)) != NULL) {
        char *eq = strchr(tok, '=');
        const char *v;

        if (!eq) {
            *errp = mig_strf("tls-creds-x509: '%s' is not key=value", tok);
            ok = false;
            free(tok);
            break;
        }
        *eq = '\0';
        v = eq + 1;
        if (!strcmp(tok, "id")) {
            free(c->id);
            c->id = strdup(v);
        } else if (!strcmp(tok, "dir")) {
            free(c->dir);
            c->dir = strdup(v);
        } else if (!strcmp(tok, "priority")) {
            free(c->priority_str);
            c->priority_str = strdup(v);
        } else if (!strcmp(tok, "endpoint")) {
            if (!strcmp(v, "server") || !strcmp(v, "client")) {
                c->server = !strcmp(v, "server");
            } else {
                *errp = mig_strf("Parameter 'endpoint' does not accept "
                                 "value '%s' (server or client)", v);
                ok = false;
            }
        } else if (!strcmp(tok, "verify-peer")) {
            if (!parse_bool(v, &c->verify_peer)) {
                *errp = mig_strf("Parameter 'verify-peer' expects 'on' or "
                                 "'off', not '%s'", v);
                ok = false;
            }
        } else {
            *errp = mig_strf("Property 'tls-creds-x509.%s' not found "
                             "(id, dir, endpoint, verify-peer, priority)",
                             tok);
            ok = false;
        }
        free(tok);
    }
    if (ok && (!c->id || !*c->id)) {
        *errp = strdup("tls-creds-x509: Parameter 'id' is missing");
        ok = false;
    } else if (ok && id_taken(c->id)) {
        *errp = mig_strf("an object with id '%s' already exists", c->id);
        ok = false;
    } else if (ok && (!c->dir || !*c->dir)) {
        *errp = mig_strf("tls-creds-x509 '%s': Missing 'dir' property value",
                         c->id);
        ok = false;
    }
    if (ok && !c->priority_str) {
        c->priority_str = strdup(TLS_DEFAULT_PRIORITY);
    }
    ok = ok && creds_load(c, errp);
    if (ok) {
        TlsCreds **n = realloc(creds_list, (n_creds + 1) * sizeof(*n));

        if (!n) {
            *errp = strdup("out of memory");
            ok = false;
        } else {
            creds_list = n;
            creds_list[n_creds++] = c;
        }
    }
    if (!ok) {
        creds_free(c);
    }
    return ok;
}

static bool add_authz(const char *opts, char **errp)
{
    TlsAuthz *a = calloc(1, sizeof(*a));
    TlsAuthz **n;
    const char *p = opts;
    char *tok;

    if (!a) {
        *errp = strdup("out of memory");
        return false;
    }
    while ((tok = next_token(&p)) != NULL) {
        char *eq = strchr(tok, '=');

        if (eq && !strncmp(tok, "id=", 3)) {
            free(a->id);
            a->id = strdup(eq + 1);
        } else if (eq && !strncmp(tok, "identity=", 9)) {
            free(a->identity);
            a->identity = strdup(eq + 1);
        } else {
            *errp = mig_strf("authz-simple: unexpected '%s' (id, identity)",
                             tok);
            free(tok);
            goto fail;
        }
        free(tok);
    }
    if (!a->id || !*a->id) {
        *errp = strdup("authz-simple: Parameter 'id' is missing");
        goto fail;
    }
    if (!a->identity || !*a->identity) {
        *errp = mig_strf("authz-simple '%s': Parameter 'identity' is missing",
                         a->id);
        goto fail;
    }
    if (id_taken(a->id)) {
        *errp = mig_strf("an object with id '%s' already exists", a->id);
        goto fail;
    }
    n = realloc(authz_list, (n_authz + 1) * sizeof(*n));
    if (!n) {
        *errp = strdup("out of memory");
        goto fail;
    }
    authz_list = n;
    authz_list[n_authz++] = a;
    return true;
fail:
    free(a->id);
    free(a->identity);
    free(a);
    return false;
}

bool tls_object_add(const char *spec, char **errp)
{
    const char *comma = strchr(spec, ',');
    size_t tlen = comma ? (size_t)(comma - spec) : strlen(spec);

    if (tlen == 14 && !strncmp(spec, "tls-creds-x509", 14)) {
        return add_creds(comma ? comma + 1 : "", errp);
    }
    if (tlen == 12 && !strncmp(spec, "authz-simple", 12)) {
        return add_authz(comma ? comma + 1 : "", errp);
    }
    *errp = mig_strf("invalid object type '%.*s': mig2-vm knows "
                     "tls-creds-x509 and authz-simple", (int)tlen, spec);
    return false;
}

/* ---------------------------------------------------------------- */
/* Parameters                                                        */
/* ---------------------------------------------------------------- */

/* Also in migration.c's list of local parameters. */
static const char *const param_names[] = {
    "tls-creds", "tls-hostname", "tls-authz", NULL,
};

bool tls_params_init(MigTls *t)
{
    memset(t, 0, sizeof(*t));
    t->creds_id = strdup("");
    t->hostname = strdup("");
    t->authz_id = strdup("");
    return t->creds_id && t->hostname && t->authz_id;
}

void tls_params_free(MigTls *t)
{
    free(t->creds_id);
    free(t->hostname);
    free(t->authz_id);
    free(t->peer_name);
    free(t->identity);
    memset(t, 0, sizeof(*t));
}

bool tls_param_is(const char *name)
{
    size_t i;

    for (i = 0; param_names[i]; i++) {
        if (!strcmp(name, param_names[i])) {
            return true;
        }
    }
    return false;
}

bool tls_param_set(MigTls *t, const char *name, json_object *value,
                   char **errp)
{
    char **slot = !strcmp(name, "tls-creds") ? &t->creds_id
                  : !strcmp(name, "tls-hostname") ? &t->hostname
                                                  : &t->authz_id;
    char *v;

    if (value && !json_object_is_type(value, json_type_string)) {
        *errp = mig_strf("Invalid parameter type for '%s', expected: "
                         "string", name);
        return false;
    }
    v = strdup(value ? json_object_get_string(value) : "");
    if (!v) {
        *errp = strdup("out of memory");
        return false;
    }
    free(*slot);
    *slot = v;
    return true;
}

void tls_params_query(const MigTls *t, json_object *o)
{
    json_object_object_add(o, "tls-creds",
                           json_object_new_string(t->creds_id));
    json_object_object_add(o, "tls-hostname",
                           json_object_new_string(t->hostname));
    json_object_object_add(o, "tls-authz",
                           json_object_new_string(t->authz_id));
}

bool tls_begin(MigTls *t, bool outgoing, const MigAddr *addr, char **errp)
{
    const TlsCreds *c;

    t->creds = NULL;
    free(t->peer_name);
    free(t->identity);
    t->peer_name = t->identity = NULL;
    if (!*t->creds_id) {
        return true;
    }
    c = creds_find(t->creds_id);
    if (!c) {
        *errp = authz_find(t->creds_id)
                    ? mig_strf("Object with id '%s' is not TLS credentials",
                               t->creds_id)
                    : mig_strf("No TLS credentials with id '%s'",
                               t->creds_id);
        return false;
    }
    if (c->server == outgoing) {
        *errp = mig_strf("Expected TLS credentials for a %s endpoint",
                         outgoing ? "client" : "server");
        return false;
    }
    if (!mig_addr_bidirectional(addr)) {
        *errp = strdup("TLS (tls-creds) needs a socket transport (tcp or "
                       "unix); exec: and file: carry no TLS");
        return false;
    }
    if (outgoing) {
        const char *name = *t->hostname ? t->hostname
                           : addr->kind == MIG_ADDR_TCP ? addr->host : NULL;

        if (!name || !*name) {
            *errp = strdup("No hostname available for TLS (set "
                           "tls-hostname)");
            return false;
        }
        t->peer_name = strdup(name);
    } else if (*t->authz_id) {
        const TlsAuthz *a = authz_find(t->authz_id);

        if (!a) {
            *errp = mig_strf("No authz-simple object with id '%s'",
                             t->authz_id);
            return false;
        }
        if (!c->verify_peer) {
            *errp = mig_strf("tls-authz needs client certificates, but "
                             "tls-creds '%s' has verify-peer=off", c->id);
            return false;
        }
        t->identity = strdup(a->identity);
    }
    t->creds = c;
    return true;
}

static void refused(Migration *m, const char *reason, const char *detail)
{
    mig_note_rejected(m, reason, detail);
    fprintf(stderr, "mig2-vm: refused a migration connection: %s\n",
            detail);
}

static void refused_plain_dest(Migration *m)
{
    refused(m, "tls", "a TLS client connected, but this destination has no "
                      "tls-creds: dropped (set tls-creds on both sides, or "
                      "on neither)");
}

/* ---------------------------------------------------------------- */
/* Sessions                                                          */
/* ---------------------------------------------------------------- */

struct TlsConn {
    gnutls_session_t s;
    int fd;
    bool server;
    bool established;
    bool bye_sent;
    int sticky;             /* a fatal error of an earlier read, or 0 */
    bool eof;               /* end of stream seen */
    size_t max_record;
    uint8_t *wbuf;          /* coalesces small iovecs into whole records */
    char *peer_dn;          /* server: the client certificate's DN */
    /* Verification data: GnuTLS keeps these pointers for the session. */
    gnutls_typed_vdata_st vd[2];
    char *peer_name;        /* client: the name the server must have */
};

void tls_conn_free(TlsConn *t)
{
    if (!t) {
        return;
    }
    gnutls_deinit(t->s);
    free(t->wbuf);
    free(t->peer_dn);
    free(t->peer_name);
    free(t);
}

/* An IPv4 or IPv6 literal (no SNI for those, RFC 6066). */
static bool is_ip_literal(const char *name)
{
    uint8_t b[16];

    return inet_pton(AF_INET, name, b) == 1 ||
           inet_pton(AF_INET6, name, b) == 1;
}

static TlsConn *conn_new(const TlsCreds *c, int fd, const char *peer_name,
                         char **errp)
{
    TlsConn *t = calloc(1, sizeof(*t));
    unsigned nvd = 0;
    int rc;

    if (!t || (peer_name && !(t->peer_name = strdup(peer_name)))) {
        free(t);
        *errp = strdup("out of memory");
        return NULL;
    }
    t->fd = fd;
    t->server = c->server;
    /* No tickets: no resumption, and no post-handshake message in flight. */
    rc = gnutls_init(&t->s, (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                                GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL |
                                GNUTLS_NO_TICKETS);
    if (rc < 0) {
        *errp = mig_strf("cannot start a TLS session: %s",
                         gnutls_strerror(rc));
        free(t->peer_name);
        free(t);
        return NULL;
    }
    rc = gnutls_priority_set(t->s, c->prio);
    if (rc >= 0) {
        rc = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->cred);
    }
    if (rc >= 0 && !c->server && peer_name && !is_ip_literal(peer_name)) {
        rc = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, peer_name,
                                    strlen(peer_name));
    }
    if (rc < 0) {
        *errp = mig_strf("cannot set up the TLS session: %s",
                         gnutls_strerror(rc));
        tls_conn_free(t);
        return NULL;
    }
    if (c->verify_peer) {
        /*
         * Verified during the handshake, so a refusal becomes an alert to
         * the peer: the chain against the CA, the name (client side) and
         * the key purpose (server or client authentication).
         */
        if (!c->server && t->peer_name) {
            t->vd[nvd].type = GNUTLS_DT_DNS_HOSTNAME;
            t->vd[nvd].data = (unsigned char *)t->peer_name;
            t->vd[nvd].size = 0;
            nvd++;
        }
        t->vd[nvd].type = GNUTLS_DT_KEY_PURPOSE_OID;
        t->vd[nvd].data = (unsigned char *)(c->server
                                                ? GNUTLS_KP_TLS_WWW_CLIENT
                                                : GNUTLS_KP_TLS_WWW_SERVER);
        t->vd[nvd].size = 0;
        nvd++;
        gnutls_session_set_verify_cert2(t->s, t->vd, nvd, 0);
        if (c->server) {
            gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
        }
    }
    gnutls_handshake_set_timeout(t->s, GNUTLS_INDEFINITE_TIMEOUT);
    gnutls_transport_set_int(t->s, fd);
    return t;
}

/* Why @rc ended the session, for a message about the @peer. */
static char *describe(const TlsConn *t, int rc, const char *peer)
{
    switch (rc) {
    case GNUTLS_E_FATAL_ALERT_RECEIVED:
        return mig_strf("the %s refused the TLS session (alert: %s)", peer,
                        gnutls_alert_get_name(gnutls_alert_get(t->s)));
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
    case GNUTLS_E_CERTIFICATE_ERROR: {
        unsigned st = gnutls_session_get_verify_cert_status(t->s);
        gnutls_datum_t out = { NULL, 0 };
        char *s;

        if (st && gnutls_certificate_verification_status_print(
                      st, GNUTLS_CRT_X509, &out, 0) == 0) {
            size_t n = strlen((const char *)out.data);

            while (n && out.data[n - 1] == ' ') {
                out.data[--n] = '\0';
            }
            s = mig_strf("the %s's certificate did not verify: %s", peer,
                         (const char *)out.data);
            gnutls_free(out.data);
            return s;
        }
        return mig_strf("the %s's certificate did not verify: %s", peer,
                        gnutls_strerror(rc));
    }
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
    case GNUTLS_E_CERTIFICATE_REQUIRED:
        /* GnuTLS sends none when it has none from a CA the peer named. */
        return mig_strf("the %s sent no certificate, or none issued by a CA "
                        "this end trusts (%s)", peer, gnutls_strerror(rc));
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PULL_ERROR:
    case GNUTLS_E_PUSH_ERROR:
        return mig_strf("the %s closed the connection", peer);
    case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
    case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
    case GNUTLS_E_UNEXPECTED_PACKET:
        return mig_strf("the %s does not speak TLS here (%s)", peer,
                        gnutls_strerror(rc));
    default:
        return mig_strf("%s", gnutls_strerror(rc));
    }
}

static const char *peer_word(const TlsConn *t)
{
    return t->server ? "source" : "destination";
}

/* The client certificate's DN, as QEMU's authz sees it. */
static char *peer_dn(gnutls_session_t s)
{
    const gnutls_datum_t *certs;
    unsigned n = 0;
    gnutls_x509_crt_t crt;
    char *dn = NULL;
    size_t len = 0;

    certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || !n || gnutls_x509_crt_init(&crt) < 0) {
        return NULL;
    }
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
        gnutls_x509_crt_get_dn(crt, NULL, &len) ==
            GNUTLS_E_SHORT_MEMORY_BUFFER &&
        (dn = malloc(len + 1)) != NULL &&
        gnutls_x509_crt_get_dn(crt, dn, &len) < 0) {
        free(dn);
        dn = NULL;
    }
    gnutls_x509_crt_deinit(crt);
    return dn;
}

/*
 * One non-blocking step of the handshake: 1 done, 0 wait (for
 * tls_conn_events), -1 failed (*errp).  A failure we detect is sent to
 * the peer as an alert.
 */
static int handshake_step(TlsConn *t, char **errp)
{
    int rc;

    do {
        rc = gnutls_handshake(t->s);
    } while (rc < 0 && rc != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(rc));
    if (rc == GNUTLS_E_AGAIN) {
        return 0;
    }
    if (rc < 0) {
        *errp = describe(t, rc, peer_word(t));
        if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED &&
            rc != GNUTLS_E_PREMATURE_TERMINATION &&
            rc != GNUTLS_E_PULL_ERROR && rc != GNUTLS_E_PUSH_ERROR) {
            gnutls_alert_send_appropriate(t->s, rc);
        }
        return -1;
    }
    t->max_record = gnutls_record_get_max_size(t->s);
    if (t->max_record == 0 || t->max_record > 16384) {
        t->max_record = 16384;
    }
    if (t->server) {
        t->peer_dn = peer_dn(t->s);
    }
    t->established = true;
    return 1;
}

short tls_conn_events(const TlsConn *t)
{
    return gnutls_record_get_direction(t->s) ? POLLOUT : POLLIN;
}

bool tls_conn_pending(TlsConn *t)
{
    return t->established && gnutls_record_check_pending(t->s) > 0;
}

ssize_t tls_conn_recv(TlsConn *t, void *p, size_t n, char **errp)
{
    ssize_t r;

    if (t->eof) {
        return 0;
    }
    if (t->sticky) {
        r = t->sticky;
    } else {
        do {
            r = gnutls_record_recv(t->s, p, n);
        } while (r == GNUTLS_E_INTERRUPTED ||
                 (r < 0 && r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(
                                                       (int)r)));
    }
    if (r > 0) {
        return r;
    }
    if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION ||
        r == GNUTLS_E_PULL_ERROR) {
        /* close_notify, or the transport ended: the callers' EOF. */
        t->eof = true;
        return 0;
    }
    if (r == GNUTLS_E_AGAIN) {
        errno = EAGAIN;
        return -1;
    }
    t->sticky = (int)r;
    if (errp) {
        char *why = describe(t, (int)r, peer_word(t));

        *errp = mig_strf("TLS: %s", why);
        free(why);
    }
    errno = EIO;
    return -1;
}

void tls_conn_send_now(TlsConn *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    int tries = 0;

    while (n && tries < 50) {
        ssize_t r = gnutls_record_send(t->s, b, n);

        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            struct pollfd pfd = { .fd = t->fd, .events = POLLOUT };

            poll(&pfd, 1, 10);
            tries++;
            continue;
        }
        if (r <= 0) {
            return;
        }
        b += r;
        n -= (size_t)r;
    }
}

void tls_conn_bye(TlsConn *t, int ms)
{
    int waited = 0, rc;

    if (!t || t->bye_sent || !t->established) {
        return;
    }
    t->bye_sent = true;
    for (;;) {
        rc = gnutls_bye(t->s, GNUTLS_SHUT_WR);
        if (rc != GNUTLS_E_AGAIN && rc != GNUTLS_E_INTERRUPTED) {
            return;
        }
        if (waited >= ms) {
            return;
        }
        {
            struct pollfd pfd = { .fd = t->fd, .events = POLLOUT };

            poll(&pfd, 1, 10);
            waited += 10;
        }
    }
}

void tls_chan_attach(Chan *c, TlsConn *t)
{
    c->tls = t;
}

/* ---------------------------------------------------------------- */
/* Channel I/O                                                       */
/* ---------------------------------------------------------------- */

ssize_t tls_chan_read(Chan *c, void *p, size_t n, char **errp)
{
    for (;;) {
        ssize_t r = tls_conn_recv(c->tls, p, n, errp);

        if (r >= 0) {
            c->bytes_in += (uint64_t)r;
            return r;
        }
        if (errno != EAGAIN) {
            return -1;
        }
        /* Nothing decrypted is left inside GnuTLS: poll is accurate. */
        if (chan_wait(c, c->rfd, tls_conn_events(c->tls), errp) <= 0) {
            return -1;
        }
    }
}

/* Send one record's worth of @p (retrying a GNUTLS_E_AGAIN as GnuTLS
 * requires); the bytes it took, or -1. */
static ssize_t send_record(Chan *c, const uint8_t *p, size_t n, char **errp)
{
    TlsConn *t = c->tls;

    for (;;) {
        ssize_t r = gnutls_record_send(t->s, p, n);

        if (r > 0) {
            return r;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            if (chan_wait(c, c->wfd, tls_conn_events(t), errp) <= 0) {
                return -1;
            }
            continue;
        }
        if (r == GNUTLS_E_PUSH_ERROR) {
            *errp = strdup("the peer closed the connection");
        } else {
            char *why = describe(t, (int)r, peer_word(t));

            *errp = mig_strf("TLS: %s", why);
            free(why);
        }
        return -1;
    }
}

bool tls_chan_writev(Chan *c, struct iovec *iov, int iovcnt, char **errp)
{
    TlsConn *t = c->tls;
    size_t fill = 0;

    if (!t->wbuf) {
        t->wbuf = malloc(t->max_record);
        if (!t->wbuf) {
            *errp = strdup("out of memory");
            return false;
        }
    }
    /*
     * Whole records: pieces smaller than a record (frame headers, 4 KiB
     * pages) are gathered in wbuf; a long piece goes out from where it is.
     */
    while (iovcnt > 0 || fill) {
        const uint8_t *src;
        size_t len, off;
        ssize_t r;

        if (iovcnt > 0 && iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        if (iovcnt > 0 && fill < t->max_record &&
            (fill || iov->iov_len < t->max_record)) {
            size_t k = t->max_record - fill;

            if (k > iov->iov_len) {
                k = iov->iov_len;
            }
            memcpy(t->wbuf + fill, iov->iov_base, k);
            fill += k;
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= k;
            if (fill < t->max_record && iovcnt > 1) {
                continue;
            }
            if (fill < t->max_record && iov->iov_len == 0) {
                iov++;
                iovcnt--;
                if (iovcnt > 0) {
                    continue;
                }
            }
        }
        if (fill) {
            src = t->wbuf;
            len = fill;
        } else {
            src = iov->iov_base;
            len = iov->iov_len < t->max_record ? iov->iov_len
                                               : t->max_record;
        }
        for (off = 0; off < len; off += (size_t)r) {
            r = send_record(c, src + off, len - off, errp);
            if (r < 0) {
                return false;
            }
            c->bytes_out += (uint64_t)r;
        }
        if (fill) {
            fill = 0;
        } else {
            iov->iov_base = (uint8_t *)iov->iov_base + len;
            iov->iov_len -= len;
        }
    }
    return true;
}

bool tls_chan_readable(Chan *c)
{
    struct pollfd pfd = { .fd = c->rfd, .events = POLLIN };
    TlsConn *t = c->tls;
    ssize_t r;

    if (c->len > c->pos || tls_conn_pending(t) || t->eof || t->sticky) {
        return true;
    }
    if (poll(&pfd, 1, 0) <= 0) {
        return false;
    }
    /*
     * Bytes on the socket need not be data (a partial record, a TLS
     * control message): decrypt what is there into the peek buffer, so
     * that "readable" means a read will not block.
     */
    if (c->cap - c->len < t->max_record) {
        uint8_t *b;

        if (c->pos) {
            memmove(c->buf, c->buf + c->pos, c->len - c->pos);
            c->len -= c->pos;
            c->pos = 0;
        }
        if (c->cap - c->len < t->max_record) {
            b = realloc(c->buf, c->len + t->max_record);
            if (!b) {
                return true;    /* the read will report it */
            }
            c->buf = b;
            c->cap = c->len + t->max_record;
        }
    }
    r = tls_conn_recv(t, c->buf + c->len, c->cap - c->len, NULL);
    if (r > 0) {
        c->len += (size_t)r;
        c->bytes_in += (uint64_t)r;
        return true;
    }
    return r == 0 || errno != EAGAIN;
}

void tls_chan_bye(Chan *c, int ms)
{
    if (c->tls) {
        tls_conn_bye(c->tls, ms);
    }
}

/* ---------------------------------------------------------------- */
/* Source: client handshake                                          */
/* ---------------------------------------------------------------- */

bool tls_chan_client(Chan *c, const MigTls *mt, char **errp)
{
    TlsConn *t = conn_new(mt->creds, c->rfd, mt->peer_name, errp);
    char *why = NULL;
    int rc;

    if (!t) {
        return false;
    }
    while ((rc = handshake_step(t, &why)) == 0) {
        if (chan_wait(c, c->rfd, tls_conn_events(t), &why) <= 0) {
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        *errp = mig_strf("TLS handshake with '%s' failed: %s%s",
                         mt->peer_name, why ? why : "unknown error",
                         why && strstr(why, "closed the connection")
                             ? " (does the destination have tls-creds "
                               "set?)"
                             : "");
        free(why);
        tls_conn_free(t);
        return false;
    }
    c->tls = t;
    return true;
}

/* ---------------------------------------------------------------- */
/* Binding and information                                           */
/* ---------------------------------------------------------------- */

bool tls_chan_binding(Chan *c, uint8_t out[TLS_BINDING_LEN], char **errp)
{
    gnutls_session_t s = c->tls->s;
    int rc;

    if (gnutls_protocol_get_version(s) != GNUTLS_TLS1_3 &&
        !gnutls_session_ext_master_secret_status(s)) {
        /* RFC 7627: without it the exporter is not unique to the session. */
        *errp = mig_strf("TLS binding: %s without the extended master "
                         "secret cannot bind the handshake (spec 11.4); "
                         "use TLS 1.3",
                         gnutls_protocol_get_name(
                             gnutls_protocol_get_version(s)));
        return false;
    }
    /* A non-NULL, zero-length context: RFC 5705's empty context value. */
    rc = gnutls_prf_rfc5705(s, strlen(TLS_BINDING_LABEL), TLS_BINDING_LABEL,
                            0, "", TLS_BINDING_LEN, (char *)out);
    if (rc < 0) {
        *errp = mig_strf("TLS binding: the exporter failed: %s",
                         gnutls_strerror(rc));
        return false;
    }
    return true;
}

json_object *tls_chan_info(Chan *c)
{
    json_object *o = json_object_new_object();
    gnutls_session_t s;
    const char *v;

    if (!c->tls) {
        return o;
    }
    s = c->tls->s;
    v = gnutls_protocol_get_name(gnutls_protocol_get_version(s));
    json_object_object_add(o, "version", json_object_new_string(v ? v : "?"));
    v = gnutls_cipher_get_name(gnutls_cipher_get(s));
    json_object_object_add(o, "cipher", json_object_new_string(v ? v : "?"));
    if (c->tls->peer_dn) {
        json_object_object_add(o, "peer-certificate-dn",
                               json_object_new_string(c->tls->peer_dn));
    }
    return o;
}

bool tls_require_binding(Chan *c, Mig2Profile *p, char **errp)
{
    int rc;

    if (!c->tls) {
        return true;
    }
    /* Spec 11.4: over TLS the binding is used and REQUIRED. */
    rc = mig2_profile_add_feature(p, MIG2_FEAT_TLS_BINDING, true);
    if (rc) {
        *errp = mig_strf("cannot announce tls-binding: %s",
                         mig2_strerror(rc));
        return false;
    }
    return true;
}

bool tls_bind_engine(Chan *c, Mig2Engine *e, char **errp)
{
    uint8_t b[TLS_BINDING_LEN];
    int rc;

    if (!c->tls) {
        return true;
    }
    if (!tls_chan_binding(c, b, errp)) {
        return false;
    }
    rc = mig2_engine_set_binding(e, b, sizeof(b));
    memset(b, 0, sizeof(b));
    if (rc) {
        *errp = mig_strf("cannot bind the handshake to TLS: %s",
                         mig2_strerror(rc));
        return false;
    }
    return true;
}

void tls_publish(Migration *m, Chan *c)
{
    json_object *o;

    if (!c->tls) {
        return;
    }
    o = tls_chan_info(c);
    json_object_object_add(o, "binding-label",
                           json_object_new_string(TLS_BINDING_LABEL));
    pthread_mutex_lock(&m->lock);
    if (!m->hs_info) {
        m->hs_info = json_object_new_object();
    }
    json_object_object_add(m->hs_info, "tls", o);
    pthread_mutex_unlock(&m->lock);
}

void tls_note_dropped(void *opaque, const uint8_t *pre, size_t len)
{
    /* A TLS record: content type 22 (handshake), version major 3. */
    if (len >= 2 && pre[0] == 22 && pre[1] == 3) {
        refused_plain_dest(opaque);
    }
}

/* ---------------------------------------------------------------- */
/* Destination: accepting over TLS                                   */
/* ---------------------------------------------------------------- */

TlsStep tls_accept_step(const MigTls *mt, int fd, TlsConn **conn,
                        char **errp)
{
    TlsConn *t = *conn;
    int rc;

    if (!t) {
        uint8_t b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK);

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return TLS_STEP_WAIT;
        }
        if (n <= 0) {
            *errp = strdup("the client closed the connection before its "
                           "TLS handshake");
            return TLS_STEP_FAILED;
        }
        /* A TLS record starts with its content type, 22 = handshake. */
        if (b != 22) {
            return TLS_STEP_PLAIN;
        }
        t = *conn = conn_new(mt->creds, fd, NULL, errp);
        if (!t) {
            return TLS_STEP_FAILED;
        }
    }
    if (t->established) {
        return TLS_STEP_READY;
    }
    rc = handshake_step(t, errp);
    if (rc == 0) {
        return TLS_STEP_WAIT;
    }
    if (rc < 0) {
        char *why = *errp;

        *errp = mig_strf("TLS handshake failed: %s", why);
        free(why);
        return TLS_STEP_FAILED;
    }
    if (mt->identity && (!t->peer_dn || strcmp(t->peer_dn, mt->identity))) {
        /* QEMU's authz-simple: the DN must equal the identity exactly. */
        *errp = mig_strf("TLS x509 authz check for '%s' is denied "
                         "(tls-authz '%s' allows '%s')",
                         t->peer_dn ? t->peer_dn : "(no certificate)",
                         mt->authz_id, mt->identity);
        gnutls_alert_send(t->s, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
        return TLS_STEP_FAILED;
    }
    return TLS_STEP_READY;
}

#define TLS_LINGER_MS 500

/* ChanPending.mode of a client on the TLS listener. */
enum {
    TLS_PEND_PLAIN = 1,     /* no TLS: reading the preamble to refuse it */
    TLS_PEND_DRAINING = 2,  /* refused: reading to EOF */
};

typedef struct TlsAccept {
    Migration *m;
    const MigTls *mt;
    int header_ms;
} TlsAccept;

/* A plaintext v4 source: tell it, in a frame it can read, why not. */
static void refuse_plain_v4(ChanPending *p)
{
    Mig2Error err = {
        .code = MIG2_WIRE_TLS_REQUIRED,
        .message = (char *)"this destination requires TLS: its tls-creds "
                           "parameter is set, so plaintext connections are "
                           "refused; set tls-creds on the source",
    };
    Mig2Writer w;
    size_t off = 0;

    mig2_wr_init(&w, 4096);
    mig2_error_encode(&w, &err);
    while (!mig2_wr_error(&w) && off < w.len) {
        ssize_t n = send(p->fd, w.buf + off, w.len - off, MSG_NOSIGNAL);

        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    mig2_wr_free(&w);
    shutdown(p->fd, SHUT_WR);
    p->mode |= TLS_PEND_DRAINING;
    p->deadline = mig_now_ms() + TLS_LINGER_MS;
}

static bool is_qevm(const uint8_t *pre)
{
    return pre[0] == 'Q' && pre[1] == 'E' && pre[2] == 'V' && pre[3] == 'M';
}

/* A client that sent no TLS record: read its preamble to refuse it. */
static int serve_plain(Migration *m, ChanPending *p)
{
    ssize_t n = read(p->fd, p->pre + p->have, sizeof(p->pre) - p->have);

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return 0;
    }
    if (n <= 0) {
        return -1;
    }
    p->have += (size_t)n;
    if (p->have < sizeof(p->pre)) {
        return 0;
    }
    if (!is_qevm(p->pre)) {
        return -1;      /* not a migration stream: as chan_accept */
    }
    if (p->pre[4] == 0 && p->pre[5] == 0 && p->pre[6] == 0 &&
        p->pre[7] == 4) {
        refused(m, "tls", "a plaintext migration (QEVM v4) arrived, but "
                          "this destination requires TLS (tls-creds is "
                          "set); answered ERROR tls-required");
        refuse_plain_v4(p);
        return 0;
    }
    /* A v3 source speaks no frames: close without a word (3.1). */
    refused(m, "tls", "a plaintext legacy migration stream arrived, but "
                      "this destination requires TLS (tls-creds is set)");
    return -1;
}

/*
 * Serve one client (ChanAcceptHooks.serve): 1 when it sent a preamble
 * over an authorised TLS session, -1 when it is finished with, 0 to keep
 * waiting.
 */
static int tls_serve(void *opaque, ChanPending *p)
{
    TlsAccept *ta = opaque;
    char *err = NULL;
    ssize_t n;

    if (p->mode & TLS_PEND_DRAINING) {
        uint8_t sink[4096];

        n = read(p->fd, sink, sizeof(sink));
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ? -1
                                                                       : 0;
    }
    if (p->mode & TLS_PEND_PLAIN) {
        return serve_plain(ta->m, p);
    }
    switch (tls_accept_step(ta->mt, p->fd, (TlsConn **)&p->ext, &err)) {
    case TLS_STEP_WAIT:
        return 0;
    case TLS_STEP_PLAIN:
        p->mode |= TLS_PEND_PLAIN;
        return serve_plain(ta->m, p);
    case TLS_STEP_FAILED:
        refused(ta->m, "tls", err);
        free(err);
        /*
         * Our alert is on its way, but the client's first flight may be
         * unread: closing now would reset the connection, alert and all.
         */
        shutdown(p->fd, SHUT_WR);
        p->mode |= TLS_PEND_DRAINING;
        p->deadline = mig_now_ms() + TLS_LINGER_MS;
        return 0;
    case TLS_STEP_READY:
        break;
    }
    do {
        n = tls_conn_recv(p->ext, p->pre + p->have, sizeof(p->pre) - p->have,
                          NULL);
        if (n > 0) {
            p->have += (size_t)n;
        }
    } while (n > 0 && p->have < sizeof(p->pre));
    if (p->have == sizeof(p->pre)) {
        return is_qevm(p->pre) ? 1 : -1;
    }
    return n < 0 && errno == EAGAIN ? 0 : -1;
}

static short tls_events(void *opaque, const ChanPending *p)
{
    (void)opaque;
    return p->ext && !(p->mode & TLS_PEND_DRAINING) ? tls_conn_events(p->ext)
                                                     : POLLIN;
}

static bool tls_buffered(void *opaque, const ChanPending *p)
{
    (void)opaque;
    return p->ext && tls_conn_pending(p->ext);
}

static void tls_expired(void *opaque, ChanPending *p)
{
    TlsAccept *ta = opaque;

    /* Silent clients go quietly, as with chan_accept. */
    if (!(p->mode & TLS_PEND_DRAINING) && p->ext) {
        char *why = mig_strf("no TLS handshake and preamble within %d ms",
                             ta->header_ms);

        refused(ta->m, "tls", why ? why : "deadline");
        free(why);
    }
}

static void tls_release(void *opaque, ChanPending *p)
{
    (void)opaque;
    tls_conn_free(p->ext);
    p->ext = NULL;
}

bool tls_accept_main(Migration *m, Chan *c, int lfd, int cancel_fd,
                     int stall_ms, int header_ms, char **errp)
{
    static const ChanAcceptHooks hooks = {
        .serve = tls_serve,
        .events = tls_events,
        .buffered = tls_buffered,
        .expired = tls_expired,
        .release = tls_release,
    };
    TlsAccept ta = { .m = m, .mt = &m->tls, .header_ms = header_ms };

    return chan_accept_loop(c, lfd, cancel_fd, stall_ms, header_ms, &hooks,
                            &ta, true, errp);
}
