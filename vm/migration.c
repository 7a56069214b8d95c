/*
 * mig2-vm - migration: configuration, threads, status, v2 data phase
 *
 * The handshake itself is libmig2's engine; this file only moves its
 * bytes.  After the handshake the source sends RAM in dirty rounds, stops
 * the guest, sends the rest and every device at its negotiated version,
 * and counts the migration complete only when the destination says DONE
 * (docs/protocol.md section 13).  The legacy v3 stream lives in legacy.c.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mig2/mig2.h"

#include "devindex.h"
#include "migration_int.h"
#include "qmp.h"

/* Largest data-phase frame we accept that is not RAM (DEVICE, ...). */
#define MAX_STATE_FRAME (4u << 20)

static const char *const status_names[] = {
    [MIG_STATUS_NONE] = "none",
    [MIG_STATUS_SETUP] = "setup",
    [MIG_STATUS_ACTIVE] = "active",
    [MIG_STATUS_DEVICE] = "device",
    [MIG_STATUS_COMPLETED] = "completed",
    [MIG_STATUS_FAILED] = "failed",
    [MIG_STATUS_CANCELLING] = "cancelling",
    [MIG_STATUS_CANCELLED] = "cancelled",
};

const char *mig_status_name(MigStatus s)
{
    return status_names[s];
}

int64_t mig_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *mig_strf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);
    return s;
}

/* ---------------------------------------------------------------- */
/* Configuration                                                     */
/* ---------------------------------------------------------------- */

static int cfg_index(const char *name)
{
    size_t i;

    for (i = 0; i < mig2_config_registry_count(); i++) {
        if (strcmp(mig2_config_registry_get(i)->name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

uint64_t mig_cfg_u64(Migration *m, const char *name)
{
    int i = cfg_index(name);
    uint64_t v;

    pthread_mutex_lock(&m->lock);
    v = i >= 0 ? m->cfg[i].u : 0;
    pthread_mutex_unlock(&m->lock);
    return v;
}

bool mig_cfg_bool(Migration *m, const char *name)
{
    int i = cfg_index(name);
    bool v;

    pthread_mutex_lock(&m->lock);
    v = i >= 0 && m->cfg[i].b;
    pthread_mutex_unlock(&m->lock);
    return v;
}

bool migration_set_capability(Migration *m, const char *name, bool on,
                              char **errp)
{
    int i = cfg_index(name);

    if (i < 0 || mig2_config_registry_get((size_t)i)->type != MIG2_CFG_BOOL) {
        *errp = mig_strf("Invalid parameter '%s'", name);
        return false;
    }
    if (migration_is_active(m)) {
        *errp = strdup("There's a migration process in progress");
        return false;
    }
    pthread_mutex_lock(&m->lock);
    m->cfg[i].b = on;
    pthread_mutex_unlock(&m->lock);
    return true;
}

static const char *const local_params[] = {
    "x-oneway-format", "tls-creds", "tls-hostname", "tls-authz", NULL,
};

const char *const *migration_local_parameters(void)
{
    return local_params;
}

bool migration_check_local_parameter(const char *name, json_object *value,
                                     char **errp)
{
    const char *v;

    if (tls_param_is(name)) {
        /* TLS is local policy (spec 2.6): a string, or null for "". */
        if (value && !json_object_is_type(value, json_type_string)) {
            *errp = mig_strf("Invalid parameter type for '%s', expected: "
                             "string", name);
            return false;
        }
        return true;
    }
    if (strcmp(name, "x-oneway-format") != 0) {
        *errp = mig_strf("Parameter '%s' is unexpected", name);
        return false;
    }
    if (!json_object_is_type(value, json_type_string)) {
        *errp = mig_strf("Invalid parameter type for '%s', expected: string",
                         name);
        return false;
    }
    v = json_object_get_string(value);
    if (strcmp(v, "legacy") != 0 && strcmp(v, "v4") != 0) {
        *errp = mig_strf("Parameter '%s' does not accept value '%s'", name, v);
        return false;
    }
    return true;
}

bool migration_set_parameter(Migration *m, const char *name,
                             json_object *value, char **errp)
{
    int i = cfg_index(name);
    const Mig2ConfigDef *def;

    if (strcmp(name, "x-oneway-format") == 0) {
        if (!migration_check_local_parameter(name, value, errp)) {
            return false;
        }
        pthread_mutex_lock(&m->lock);
        m->oneway_v4 = strcmp(json_object_get_string(value), "v4") == 0;
        pthread_mutex_unlock(&m->lock);
        return true;
    }

    if (tls_param_is(name)) {
        bool ok;

        pthread_mutex_lock(&m->lock);
        ok = tls_param_set(&m->tls, name, value, errp);
        pthread_mutex_unlock(&m->lock);
        return ok;
    }
    if (i < 0 ||
        (def = mig2_config_registry_get((size_t)i))->type == MIG2_CFG_BOOL) {
        *errp = mig_strf("Parameter '%s' is unexpected", name);
        return false;
    }
    if (def->type == MIG2_CFG_U64) {
        int64_t v;

        if (!json_object_is_type(value, json_type_int) ||
            (v = json_object_get_int64(value)) < 0) {
            *errp = mig_strf("Parameter '%s' expects a non-negative integer",
                             name);
            return false;
        }
        /* The registered maximum (spec 8.3.4); QEMU's floor of 1. */
        if ((def->max_u && (uint64_t)v > def->max_u) ||
            (strcmp(name, "multifd-channels") == 0 && v < 1)) {
            *errp = mig_strf("Parameter '%s' expects a value between %d "
                             "and %" PRIu64, name,
                             strcmp(name, "multifd-channels") == 0 ? 1 : 0,
                             def->max_u);
            return false;
        }
        pthread_mutex_lock(&m->lock);
        m->cfg[i].u = (uint64_t)v;
        pthread_mutex_unlock(&m->lock);
        return true;
    }
    if (!json_object_is_type(value, json_type_string) ||
        !*json_object_get_string(value)) {
        *errp = mig_strf("Parameter '%s' expects a string", name);
        return false;
    }
    pthread_mutex_lock(&m->lock);
    free((char *)m->cfg[i].s);
    m->cfg[i].s = strdup(json_object_get_string(value));
    pthread_mutex_unlock(&m->lock);
    return true;
}

json_object *migration_query_capabilities(Migration *m)
{
    json_object *arr = json_object_new_array();
    size_t i;

    pthread_mutex_lock(&m->lock);
    for (i = 0; i < mig2_config_registry_count(); i++) {
        const Mig2ConfigDef *def = mig2_config_registry_get(i);
        json_object *o;

        if (def->type != MIG2_CFG_BOOL) {
            continue;
        }
        o = json_object_new_object();
        json_object_object_add(o, "capability",
                               json_object_new_string(def->name));
        json_object_object_add(o, "state",
                               json_object_new_boolean(m->cfg[i].b));
        json_object_array_add(arr, o);
    }
    pthread_mutex_unlock(&m->lock);
    return arr;
}

json_object *migration_query_parameters(Migration *m)
{
    json_object *o = json_object_new_object();
    size_t i;

    pthread_mutex_lock(&m->lock);
    for (i = 0; i < mig2_config_registry_count(); i++) {
        const Mig2ConfigDef *def = mig2_config_registry_get(i);

        if (def->type == MIG2_CFG_U64) {
            json_object_object_add(o, def->name,
                                   json_object_new_int64((int64_t)m->cfg[i].u));
        } else if (def->type == MIG2_CFG_STR) {
            json_object_object_add(o, def->name,
                                   json_object_new_string(m->cfg[i].s));
        }
    }
    json_object_object_add(o, "x-oneway-format", json_object_new_string(
        m->oneway_v4 ? "v4" : "legacy"));
    tls_params_query(&m->tls, o);
    pthread_mutex_unlock(&m->lock);
    return o;
}

bool migration_add_policy(Migration *m, const char *rule, char **errp)
{
    const char *eq;
    int rc;

    if (strncmp(rule, "refuse:", 7) == 0) {
        rc = mig2_profile_policy_refuse(m->policy, rule + 7);
    } else if (strncmp(rule, "clamp:", 6) == 0 &&
               (eq = strchr(rule + 6, '=')) != NULL) {
        char *name = strndup(rule + 6, (size_t)(eq - rule - 6));
        char *end;
        unsigned long long max;

        errno = 0;
        max = strtoull(eq + 1, &end, 10);
        rc = (!name || errno || *end || end == eq + 1)
                 ? MIG2_ERR_INVALID_ARG
                 : mig2_profile_policy_clamp(m->policy, name, max);
        free(name);
    } else {
        rc = MIG2_ERR_INVALID_ARG;
    }
    if (rc) {
        *errp = mig_strf("invalid migration policy '%s' (expected "
                         "clamp:NAME=MAX or refuse:NAME): %s", rule,
                         mig2_strerror(rc));
        return false;
    }
    return true;
}

/* The destination takes the negotiated values as its own. */
void mig_apply_final_config(Migration *m, const Mig2Engine *e)
{
    size_t i;

    pthread_mutex_lock(&m->lock);
    for (i = 0; i < mig2_result_config_count(e); i++) {
        const Mig2ConfigResult *r = mig2_result_config(e, i);
        int k = cfg_index(r->name);

        if (k < 0 || r->status == MIG2_CFG_UNKNOWN ||
            r->final.type != m->cfg[k].type) {
            continue;
        }
        m->cfg[k].b = r->final.b;
        m->cfg[k].u = r->final.u;
        if (r->final.type == MIG2_CFG_STR) {
            free((char *)m->cfg[k].s);
            m->cfg[k].s = strdup(r->final.s);
        }
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---------------------------------------------------------------- */
/* Status and errors                                                 */
/* ---------------------------------------------------------------- */

void mig_set_status(Migration *m, MigStatus s)
{
    json_object *data;

    pthread_mutex_lock(&m->lock);
    if (m->status == s) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    m->status = s;
    pthread_mutex_unlock(&m->lock);
    data = json_object_new_object();
    json_object_object_add(data, "status",
                           json_object_new_string(mig_status_name(s)));
    if (m->vm->qmp) {
        qmp_emit_event(m->vm->qmp, "MIGRATION", data);
    } else {
        json_object_put(data);
    }
}

MigStatus mig_status(Migration *m)
{
    MigStatus s;

    pthread_mutex_lock(&m->lock);
    s = m->status;
    pthread_mutex_unlock(&m->lock);
    return s;
}

/* Record the first error; later ones only add detail to stderr. */
void mig_fail(Migration *m, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) {
        msg = NULL;
    }
    va_end(ap);
    pthread_mutex_lock(&m->lock);
    if (!m->error_desc) {
        m->error_desc = msg;
        msg = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    free(msg);
}

bool mig_cancelled(Migration *m)
{
    return atomic_load(&m->cancel_requested);
}

/* ---------------------------------------------------------------- */
/* Profiles                                                          */
/* ---------------------------------------------------------------- */

Mig2Profile *mig_build_profile(Migration *m, bool source, char **errp)
{
    Vm *vm = m->vm;
    Mig2Profile *p = source ? mig2_profile_new() : mig2_profile_dup(m->policy);
    size_t i, j;
    int rc = MIG2_OK;

    if (!p) {
        *errp = strdup("out of memory");
        return NULL;
    }
    rc = mig2_profile_set_revisions(p, vm->release->rev_min,
                                    vm->release->rev_max);
    if (!rc) {
        rc = mig2_profile_set_build(p, vm->build);
    }
    if (!rc) {
        rc = mig2_profile_set_machine(p, vm->machine->name);
    }
    if (!rc) {
        rc = mig2_profile_set_page_size(p, RAM_PAGE_SIZE);
    }
    if (!rc) {
        rc = mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH, false);
    }
    if (!rc) {
        rc = mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE, false);
    }
    if (!rc) {
        rc = mig2_profile_add_feature(p, MIG2_FEAT_DEVICE_STATE_VERSIONS,
                                      false);
    }
    if (!rc) {
        rc = mig2_profile_add_feature(p, MIG2_FEAT_MULTICHANNEL, false);
    }
    if (!rc && vm->ram.host) {
        rc = mig2_profile_add_ram_block(p, vm->ram.name, vm->ram.size,
                                        RAM_PAGE_SIZE);
    }
    pthread_mutex_lock(&vm->lock);
    for (i = 0; i < vm->n_devs && !rc; i++) {
        const DeviceState *d = vm->devs[i];
        const SubsectionDesc *s;
        int idx;

        if (source) {
            idx = mig2_profile_add_device(p, d->id, d->instance,
                                          d->save_min, d->save_max);
        } else {
            idx = mig2_profile_add_device(p, d->id, d->instance, d->load_min,
                                          d->load_max);
        }
        rc = idx < 0 ? idx : MIG2_OK;
        for (j = 0; !rc && d->type->subs && d->type->subs[j].name; j++) {
            s = &d->type->subs[j];
            if (!device_sub_known(d, s)) {
                continue;
            }
            rc = mig2_profile_add_subsection(p, idx, s->name,
                                             source && device_sub_needed(d, s));
        }
    }
    pthread_mutex_unlock(&vm->lock);
    if (source) {
        pthread_mutex_lock(&m->lock);
        for (i = 0; i < mig2_config_registry_count() && !rc; i++) {
            rc = mig2_profile_propose(p, mig2_config_registry_get(i)->name,
                                      &m->cfg[i], 0);
        }
        pthread_mutex_unlock(&m->lock);
    }
    if (rc) {
        *errp = mig_strf("cannot describe this VM to the handshake: %s",
                         mig2_strerror(rc));
        mig2_profile_free(p);
        return NULL;
    }
    return p;
}

/* ---------------------------------------------------------------- */
/* Handshake over a channel                                          */
/* ---------------------------------------------------------------- */

static json_object *hex_json(const uint8_t *p, size_t n)
{
    char buf[2 * 64 + 1];
    size_t i;

    if (!p) {
        return NULL;
    }
    for (i = 0; i < n && i < 64; i++) {
        snprintf(buf + 2 * i, 3, "%02x", p[i]);
    }
    return json_object_new_string(buf);
}

static json_object *features_json(const Mig2Engine *e, Mig2FeatureSet set)
{
    json_object *arr = json_object_new_array();
    const uint16_t *ids;
    size_t n = mig2_result_features(e, set, &ids), i;

    for (i = 0; i < n; i++) {
        const char *name = mig2_feature_name(ids[i]);
        char num[16];

        snprintf(num, sizeof(num), "0x%04x", ids[i]);
        json_object_array_add(arr, json_object_new_string(name ? name : num));
    }
    return arr;
}

static json_object *value_json(const Mig2ConfigValue *v)
{
    switch (v->type) {
    case MIG2_CFG_BOOL:
        return json_object_new_boolean(v->b);
    case MIG2_CFG_U64:
        return json_object_new_int64((int64_t)v->u);
    default:
        return json_object_new_string(v->s ? v->s : "");
    }
}

/* Everything x-query-handshake reports, taken from the engine. */
static json_object *handshake_json(const Mig2Engine *e, const char *local)
{
    json_object *o = json_object_new_object();
    json_object *arr, *feat;
    const Mig2Error *err = mig2_engine_error(e);
    uint16_t pmin, pmax;
    size_t i;

    json_object_object_add(o, "role", json_object_new_string(
        mig2_engine_role(e) == MIG2_ROLE_SOURCE ? "source" : "destination"));
    json_object_object_add(o, "local-build", json_object_new_string(local));
    json_object_object_add(o, "state", json_object_new_string(
        mig2_engine_state(e) == MIG2_STATE_COMPLETE ? "complete"
        : mig2_engine_state(e) == MIG2_STATE_FAILED ? "failed"
                                                     : "running"));
    if (mig2_result_ready(e)) {
        mig2_result_peer_revisions(e, &pmin, &pmax);
        json_object_object_add(o, "revision",
                               json_object_new_int(mig2_result_revision(e)));
        {
            char r[32];

            snprintf(r, sizeof(r), "%u..%u", pmin, pmax);
            json_object_object_add(o, "peer-revisions",
                                   json_object_new_string(r));
        }
        json_object_object_add(o, "peer-build", json_object_new_string(
            mig2_result_peer_build(e)));
        json_object_object_add(o, "round-trips", json_object_new_int(
            (int)mig2_result_round_trips(e)));
        feat = json_object_new_object();
        json_object_object_add(feat, "common",
                               features_json(e, MIG2_FEATURES_COMMON));
        json_object_object_add(feat, "peer-lacks",
                               features_json(e, MIG2_FEATURES_PEER_LACKS));
        json_object_object_add(feat, "local-lacks",
                               features_json(e, MIG2_FEATURES_LOCAL_LACKS));
        json_object_object_add(o, "features", feat);
        arr = json_object_new_array();
        for (i = 0; i < mig2_result_config_count(e); i++) {
            const Mig2ConfigResult *r = mig2_result_config(e, i);
            json_object *c = json_object_new_object();

            json_object_object_add(c, "name", json_object_new_string(r->name));
            json_object_object_add(c, "proposed", value_json(&r->proposed));
            json_object_object_add(c, "final", value_json(&r->final));
            json_object_object_add(c, "status", json_object_new_string(
                mig2_config_status_name(r->status)));
            json_object_array_add(arr, c);
        }
        json_object_object_add(o, "configuration", arr);
        arr = json_object_new_array();
        for (i = 0; i < mig2_result_device_count(e); i++) {
            const Mig2DeviceResult *d = mig2_result_device(e, i);
            json_object *c = json_object_new_object();

            json_object_object_add(c, "id", json_object_new_string(d->id));
            json_object_object_add(c, "instance",
                                   json_object_new_int64(d->instance));
            json_object_object_add(c, "version",
                                   json_object_new_int64(d->version));
            json_object_array_add(arr, c);
        }
        json_object_object_add(o, "device-versions", arr);
        arr = json_object_new_array();
        for (i = 0; i < mig2_result_omitted_count(e); i++) {
            const Mig2OmittedSubsection *s = mig2_result_omitted(e, i);
            json_object *c = json_object_new_object();

            json_object_object_add(c, "device",
                                   json_object_new_string(s->device));
            json_object_object_add(c, "instance",
                                   json_object_new_int64(s->instance));
            json_object_object_add(c, "subsection",
                                   json_object_new_string(s->subsection));
            json_object_array_add(arr, c);
        }
        json_object_object_add(o, "omitted-subsections", arr);
    }
    if (mig2_result_transcript_hash(e)) {
        json_object_object_add(o, "transcript-hash",
                               hex_json(mig2_result_transcript_hash(e), 32));
    }
    if (mig2_result_session_id(e)) {
        json_object_object_add(o, "session-id",
                               hex_json(mig2_result_session_id(e), 16));
    }
    if (err) {
        char *text = mig2_error_format(err);

        arr = json_object_new_array();
        for (i = 0; i < err->n_problems; i++) {
            const Mig2Problem *pr = &err->problems[i];
            json_object *c = json_object_new_object();

            json_object_object_add(c, "kind", json_object_new_string(
                mig2_problem_kind_name(pr->kind)));
            json_object_object_add(c, "path", json_object_new_string(pr->path));
            json_object_object_add(c, "expected",
                                   json_object_new_string(pr->expected));
            json_object_object_add(c, "actual",
                                   json_object_new_string(pr->actual));
            json_object_array_add(arr, c);
        }
        json_object_object_add(o, "problems", arr);
        json_object_object_add(o, "error-origin", json_object_new_string(
            err->from_peer ? "peer" : "local"));
        json_object_object_add(o, "error", json_object_new_string(
            text ? text : ""));
        free(text);
    }
    return o;
}

static void publish_handshake(Migration *m, const Mig2Engine *e)
{
    json_object *o = handshake_json(e, m->vm->build);

    pthread_mutex_lock(&m->lock);
    json_object_put(m->hs_info);
    m->hs_info = o;
    pthread_mutex_unlock(&m->lock);
}

static bool flush_engine(Chan *c, Mig2Engine *e, char **errp)
{
    const uint8_t *out;
    size_t len;

    while ((out = mig2_engine_output(e, &len)) != NULL) {
        if (!chan_write(c, out, len, errp)) {
            return false;
        }
        mig2_engine_output_consumed(e, len);
    }
    return true;
}

/*
 * Run the handshake on @c.  On success the engine is COMPLETE and any
 * bytes after it stay in @c's buffer for the data phase.  On failure
 * *errp says why, for query-migrate's error-desc.
 */
bool mig_run_handshake(Migration *m, Chan *c, Mig2Engine *e, char **errp)
{
    bool got_any = false;

    for (;;) {
        const uint8_t *p;
        size_t avail;
        ssize_t used;
        Mig2Event ev;
        char *werr = NULL;

        if (!flush_engine(c, e, &werr)) {
            if (mig2_engine_state(e) == MIG2_STATE_FAILED) {
                /* Our ERROR could not be delivered; our reason stands. */
                free(werr);
                werr = NULL;
            } else {
                *errp = mig_strf("handshake failed: %s", werr);
                free(werr);
                publish_handshake(m, e);
                return false;
            }
        }
        if (mig2_engine_state(e) != MIG2_STATE_RUNNING) {
            break;
        }
        p = chan_peek(c, 1, &avail, &werr);
        if (!p || avail == 0) {
            publish_handshake(m, e);
            if (!p) {
                *errp = mig_strf("handshake failed: %s", werr);
            } else if (mig2_engine_oneway(e)) {
                *errp = strdup("the one-way stream ended before its "
                               "MANIFEST and FINISHED were complete");
            } else if (mig2_engine_role(e) == MIG2_ROLE_SOURCE && !got_any) {
                *errp = strdup("the destination closed the connection "
                               "during the handshake without answering: it "
                               "likely predates migration protocol v2 "
                               "(QEVM version 4) or refused the connection");
            } else {
                *errp = strdup("the peer closed the connection during the "
                               "handshake");
            }
            free(werr);
            return false;
        }
        got_any = true;
        used = mig2_engine_recv(e, p, avail);
        if (used > 0) {
            chan_consume(c, (size_t)used);
        }
        while (mig2_engine_next_event(e, &ev)) {
            /*
             * Nothing to do: the results are published once, when the
             * handshake ends either way (a snapshot of 10,000 devices
             * costs ~15 ms of setup time).
             */
        }
    }
    publish_handshake(m, e);
    if (mig2_engine_state(e) == MIG2_STATE_FAILED) {
        const Mig2Error *err = mig2_engine_error(e);
        char *text = mig2_error_format(err);

        *errp = mig_strf("%s", text ? text : "handshake failed");
        free(text);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- */
/* Data phase: frames                                                */
/* ---------------------------------------------------------------- */

const char *mig_test_knob(const Migration *m, const char *key)
{
    const char *t = m->chan_test, *p;
    size_t n = strlen(key);

    for (p = t; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (strncmp(p, key, n) == 0 && (p[n] == ',' || p[n] == '=' ||
                                       p[n] == '\0')) {
            return p[n] == '=' ? p + n + 1 : p + n;
        }
    }
    return NULL;
}

bool mig_send_frame(Chan *c, uint16_t type, const void *p, size_t len,
                       char **errp)
{
    uint8_t h[MIG2_FRAME_HEADER_LEN];
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)p, .iov_len = len },
    };

    mig2_frame_header_put(h, type, MIG2_FRAME_FLAG_CRITICAL, (uint32_t)len);
    return chan_writev(c, iov, 2, errp);
}

bool mig_send_built(Chan *c, uint16_t type, Mig2Writer *w, char **errp)
{
    bool ok;

    if (mig2_wr_error(w)) {
        *errp = mig_strf("cannot encode %s: %s", mig2_frame_name(type),
                         mig2_strerror(mig2_wr_error(w)));
        ok = false;
    } else {
        ok = mig_send_frame(c, type, w->buf, w->len, errp);
    }
    mig2_wr_free(w);
    return ok;
}

bool mig_send_channel_sync(Chan *c, uint32_t round, char **errp)
{
    Mig2Writer w;

    mig2_wr_init(&w, MIG2_DATA_CHANNEL_SYNC_LEN);
    mig2_data_round_encode(&w, round);
    return mig_send_built(c, MIG2_FRAME_CHANNEL_SYNC, &w, errp);
}

/* Send an ERROR frame built from a code and message (best effort). */
void mig_send_error(Chan *c, uint32_t code, const char *msg)
{
    Mig2Error err = { .code = code, .message = (char *)msg };
    Mig2Writer w;
    char *ignored = NULL;

    if (c->wfd < 0) {
        return;     /* a one-way reader has nobody to tell */
    }
    mig2_wr_init(&w, 16384);
    mig2_error_encode(&w, &err);
    if (!mig2_wr_error(&w)) {
        chan_write(c, w.buf, w.len, &ignored);
    }
    free(ignored);
    mig2_wr_free(&w);
}

/* Turn a received ERROR payload into a readable string. */
char *mig_peer_error_text(const uint8_t *p, size_t len)
{
    Mig2Error err = { 0 };
    char *text = NULL, *detail;

    if (mig2_error_decode(p, len, &err) != MIG2_OK) {
        text = mig_strf("peer reported %s error (malformed ERROR frame)",
                        mig2_wire_error_name(err.code));
    } else {
        detail = mig2_error_format(&err);
        text = mig_strf("destination reported %s", detail ? detail : "");
        free(detail);
    }
    mig2_error_clear(&err);
    return text;
}

static bool skip_bytes(Chan *c, uint32_t len, char **errp)
{
    uint8_t buf[4096];

    while (len) {
        uint32_t k = len < sizeof(buf) ? len : (uint32_t)sizeof(buf);

        if (!chan_read(c, buf, k, errp)) {
            return false;
        }
        len -= k;
    }
    return true;
}

static const char *frame_label(uint16_t type)
{
    const char *name = mig2_frame_name(type);

    return name ? name : "unknown";
}

bool mig_next_frame(Chan *c, const uint16_t *valid, Mig2FrameHeader *fh,
                    uint32_t *code, char **errp)
{
    for (;;) {
        uint8_t h[MIG2_FRAME_HEADER_LEN];
        const uint16_t *v;

        *code = 0;
        if (!chan_read(c, h, sizeof(h), errp)) {
            return false;
        }
        if (mig2_frame_header_parse(h, MIG2_FRAME_MAX, fh)) {
            /* Nobody answers an ERROR, not even an oversized one. */
            *code = fh->type == MIG2_FRAME_ERROR ? 0 : MIG2_WIRE_PROTOCOL;
            *errp = mig_strf("frame 0x%04x (%s) announces %" PRIu32 " bytes, "
                             "more than the %u-byte limit", fh->type,
                             frame_label(fh->type), fh->length,
                             MIG2_FRAME_MAX);
            return false;
        }
        for (v = valid; *v && *v != fh->type; v++) {
        }
        if (*v) {
            return true;
        }
        if (mig2_frame_name(fh->type)) {
            *code = MIG2_WIRE_PROTOCOL;
            *errp = mig_strf("unexpected %s frame", frame_label(fh->type));
            return false;
        }
        if (fh->flags & MIG2_FRAME_FLAG_CRITICAL) {
            *code = MIG2_WIRE_UNKNOWN_CRITICAL;
            *errp = mig_strf("unknown critical frame 0x%04x", fh->type);
            return false;
        }
        /* Unknown and not critical: skipped as it streams in (spec 4.3). */
        if (!skip_bytes(c, fh->length, errp)) {
            return false;
        }
    }
}

bool mig_read_payload(Chan *c, const Mig2FrameHeader *fh, uint32_t max,
                      uint8_t **p, uint32_t *code, char **errp)
{
    *p = NULL;
    *code = 0;
    if (fh->length > max) {
        *code = fh->type == MIG2_FRAME_ERROR ? 0 : MIG2_WIRE_PROTOCOL;
        *errp = mig_strf("%s frame of %" PRIu32 " bytes is too large (at "
                         "most %" PRIu32 " here)", frame_label(fh->type),
                         fh->length, max);
        return false;
    }
    *p = malloc(fh->length ? fh->length : 1);
    if (!*p) {
        *errp = strdup("out of memory");
        return false;
    }
    if (!chan_read(c, *p, fh->length, errp)) {
        free(*p);
        *p = NULL;
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- */
/* Source: RAM rounds                                                */
/* ---------------------------------------------------------------- */

/*
 * One RAM frame for @n pages of the (single) block: zero pages become a
 * flag when the feature is in use; page data goes straight from guest RAM
 * into writev, no copy.  Safe to call from several threads at once, each
 * with its own channel.
 */
bool mig_send_pages(Migration *m, Chan *c, const uint64_t *pages, uint32_t n,
                    bool zero_flag, char **errp)
{
    uint8_t head[MIG2_FRAME_HEADER_LEN + MIG2_DATA_RAM_HEAD_LEN];
    uint64_t entries[MIG_RAM_BATCH];
    struct iovec iov[MIG_RAM_BATCH + 2];
    uint32_t i, normal = 0;
    int n_iov = 2;
    size_t len;

    /* A dense batch (round 0, mostly) is mapped in one call; see ram.h. */
    if (zero_flag && n && pages[n - 1] - pages[0] < 2 * (uint64_t)n) {
        ram_map_range(&m->vm->ram, pages[0], pages[n - 1]);
    }
    for (i = 0; i < n; i++) {
        const uint8_t *host = m->vm->ram.host + pages[i] * RAM_PAGE_SIZE;
        bool zero = zero_flag && ram_is_zero(host, RAM_PAGE_SIZE);

        mig2_data_ram_entry_put((uint8_t *)&entries[i],
                                pages[i] * RAM_PAGE_SIZE, zero);
        if (!zero) {
            /* Neighbouring pages go out as one buffer. */
            if (n_iov > 2 && (const uint8_t *)iov[n_iov - 1].iov_base +
                                 iov[n_iov - 1].iov_len == host) {
                iov[n_iov - 1].iov_len += RAM_PAGE_SIZE;
            } else {
                iov[n_iov].iov_base = (void *)host;
                iov[n_iov].iov_len = RAM_PAGE_SIZE;
                n_iov++;
            }
            normal++;
        }
    }
    if (mig2_data_ram_length(n, normal, RAM_PAGE_SIZE, &len) != MIG2_OK) {
        *errp = mig_strf("cannot frame %u pages", n);
        return false;
    }
    mig2_frame_header_put(head, MIG2_FRAME_RAM, MIG2_FRAME_FLAG_CRITICAL,
                          (uint32_t)len);
    /* Block 0: the only one we have. */
    mig2_data_ram_head_put(head + MIG2_FRAME_HEADER_LEN, 0, n);
    iov[0].iov_base = head;
    iov[0].iov_len = sizeof(head);
    iov[1].iov_base = entries;
    iov[1].iov_len = MIG2_DATA_RAM_ENTRY_LEN * (size_t)n;
    pthread_mutex_lock(&m->lock);
    m->stats.normal += normal;
    m->stats.duplicate += n - normal;
    m->stats.transferred += MIG2_FRAME_HEADER_LEN + len;
    m->stats.remaining -= m->stats.remaining >= (uint64_t)n * RAM_PAGE_SIZE
                              ? (uint64_t)n * RAM_PAGE_SIZE
                              : m->stats.remaining;
    pthread_mutex_unlock(&m->lock);
    if (c->tap && normal) {
        /*
         * A running guest may change a page between writev and the tap
         * that hashes it: a digest must cover the bytes written, so they
         * are copied once and both use the copy.
         */
        uint8_t *bounce = malloc((size_t)normal * RAM_PAGE_SIZE), *at;
        bool ok;
        int k;

        if (!bounce) {
            *errp = strdup("out of memory");
            return false;
        }
        for (k = 2, at = bounce; k < n_iov; k++) {
            memcpy(at, iov[k].iov_base, iov[k].iov_len);
            at += iov[k].iov_len;
        }
        iov[2].iov_base = bounce;
        iov[2].iov_len = (size_t)normal * RAM_PAGE_SIZE;
        ok = chan_writev(c, iov, 3, errp);
        free(bounce);
        return ok;
    }
    return chan_writev(c, iov, n_iov, errp);
}

/* How a source's error starts when the destination broke the protocol. */
#define DEST_BROKE "destination broke the protocol: "

/*
 * Read the destination's next frame on the main channel: DONE or
 * SYNC_ACK (its round in *@round), each checked against its layout.
 * Returns the type, or 0 with *@errp set: an ERROR frame becomes the
 * destination's reason, a lost connection is reported with @ctx, and a
 * frame the destination may not send fails (answered with ERROR when
 * @answer).  Unknown non-critical frames are skipped (spec 4.3).
 */
static uint16_t read_reply(Chan *c, const char *ctx, bool answer,
                           uint32_t *round, char **errp)
{
    static const uint16_t valid[] = {
        MIG2_FRAME_DONE, MIG2_FRAME_SYNC_ACK, MIG2_FRAME_ERROR, 0,
    };
    Mig2FrameHeader fh;
    uint8_t *p = NULL;
    uint32_t code;
    int rc = MIG2_OK;
    char *e;

    if (!mig_next_frame(c, valid, &fh, &code, errp) ||
        !mig_read_payload(c, &fh, MAX_STATE_FRAME, &p, &code, errp)) {
        if (!code) {
            e = *errp;
            *errp = mig_strf("%s: %s", ctx, e);
            free(e);
            return 0;
        }
    } else if (fh.type == MIG2_FRAME_ERROR) {
        *errp = mig_peer_error_text(p, fh.length);
        free(p);
        return 0;
    } else {
        rc = fh.type == MIG2_FRAME_DONE
                 ? mig2_data_empty_parse(p, fh.length)
                 : mig2_data_round_parse(p, fh.length, round);
        free(p);
        if (rc == MIG2_OK) {
            return fh.type;
        }
        code = MIG2_WIRE_PROTOCOL;
        *errp = mig_strf("%s frame of %" PRIu32 " bytes, expected %u",
                         mig2_frame_name(fh.type), fh.length,
                         fh.type == MIG2_FRAME_DONE
                             ? 0 : MIG2_DATA_SYNC_ACK_LEN);
    }
    if (answer) {
        mig_send_error(c, code, *errp);
    }
    e = *errp;
    *errp = mig_strf(DEST_BROKE "%s", e);
    free(e);
    return 0;
}

/*
 * While we stream, the destination may only speak up with an ERROR (or
 * an informative SYNC_ACK): read whatever it already sent.
 */
static bool check_peer(Migration *m, Chan *c, char **errp)
{
    uint32_t round;

    (void)m;
    while (chan_readable(c)) {
        uint16_t t = read_reply(c, "destination connection lost", true,
                                &round, errp);

        if (t == MIG2_FRAME_DONE) {
            *errp = strdup("destination sent DONE before END");
            return false;
        }
        if (!t) {
            return false;
        }
    }
    return true;
}

/* Wait for up to @ms for the bandwidth limit; false when cancelled. */
static void throttle(Migration *m, int64_t round_start, uint64_t bytes)
{
    uint64_t bw = mig_cfg_u64(m, "max-bandwidth");
    int64_t due, now;

    /* Like QEMU, the final pass after switchover is never throttled. */
    if (bw == 0 || m->stopped_guest) {
        return;
    }
    due = round_start + (int64_t)(bytes * 1000 / bw);
    now = mig_now_ms();
    if (due > now && !mig_cancelled(m)) {
        usleep((useconds_t)((due - now) * 1000));
    }
}

/* A batch of pages: on a multifd channel when one is up, else here. */
static bool emit_batch(Migration *m, Chan *c, Multifd *f,
                       const uint64_t *pages, uint32_t n, bool zero_flag,
                       char **errp)
{
    if (f) {
        int r = mfd_source_dispatch(f, pages, n, errp);

        if (r <= 0) {
            return r == 0;
        }
    }
    return mig_send_pages(m, c, pages, n, zero_flag, errp);
}

static uint64_t transferred(Migration *m)
{
    uint64_t v;

    pthread_mutex_lock(&m->lock);
    v = m->stats.transferred;
    pthread_mutex_unlock(&m->lock);
    return v;
}

/*
 * Send every page whose bit is set in @bitmap, in batches, over @f's
 * channels when @f is not NULL.  Between batches: look at the return
 * path, obey the bandwidth limit, notice a cancel.
 */
bool mig_send_dirty(Migration *m, Chan *c, Multifd *f, const uint64_t *bitmap,
                    bool zero_flag, uint64_t *pages, char **errp)
{
    Vm *vm = m->vm;
    int64_t start = mig_now_ms();
    uint64_t base = transferred(m);
    uint64_t batch[MIG_RAM_BATCH];
    uint32_t n = 0;
    size_t w;

    *pages = 0;
    for (w = 0; w < vm->ram.dirty_words; w++) {
        uint64_t bits = bitmap[w];

        while (bits) {
            batch[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (n < MIG_RAM_BATCH) {
                continue;
            }
            if (!emit_batch(m, c, f, batch, n, zero_flag, errp)) {
                return false;
            }
            *pages += n;
            n = 0;
            if (mig_cancelled(m)) {
                *errp = strdup("migration cancelled");
                return false;
            }
            if (!check_peer(m, c, errp)) {
                return false;
            }
            throttle(m, start, transferred(m) - base);
        }
    }
    if (n && !emit_batch(m, c, f, batch, n, zero_flag, errp)) {
        return false;
    }
    *pages += n;
    return true;
}

/* ---------------------------------------------------------------- */
/* Source: v2                                                        */
/* ---------------------------------------------------------------- */

static bool send_sync(Chan *c, uint32_t round, uint64_t pages, char **errp)
{
    Mig2Writer w;

    mig2_wr_init(&w, MIG2_DATA_SYNC_LEN);
    mig2_data_sync_encode(&w, round, pages);
    return mig_send_built(c, MIG2_FRAME_SYNC, &w, errp);
}

/* The negotiated device results by (id, instance); NULL: no memory. */
static DevIndex *index_results(const Mig2Engine *e)
{
    size_t i, n = mig2_result_device_count(e);
    DevIndex *x = dev_index_new(n);

    for (i = 0; x && i < n; i++) {
        const Mig2DeviceResult *r = mig2_result_device(e, i);
        bool nomem;

        if (!dev_index_put(x, r->id, r->instance, i, &nomem) && nomem) {
            dev_index_free(x);
            x = NULL;
        }
    }
    return x;
}

/*
 * The subsections the handshake left out, by device: those of result i
 * are omitted[order[first[i]] .. order[first[i + 1] - 1]].  One pass, so
 * that thousands of devices cost no more than their number.
 */
static bool group_omitted(const Mig2Engine *e, size_t **first,
                          size_t **order)
{
    size_t n = mig2_result_device_count(e), no = mig2_result_omitted_count(e);
    size_t *owner = calloc(no + 1, sizeof(*owner)), *at = NULL, i, j;
    DevIndex *x = index_results(e);
    bool ok = false;

    *first = calloc(n + 2, sizeof(**first));
    *order = calloc(no + 1, sizeof(**order));
    at = calloc(n + 1, sizeof(*at));
    if (!owner || !x || !*first || !*order || !at) {
        goto out;
    }
    for (j = 0; j < no; j++) {
        const Mig2OmittedSubsection *o = mig2_result_omitted(e, j);

        /* One the results do not list belongs to no device (n). */
        if (!dev_index_get(x, o->device, o->instance, &owner[j])) {
            owner[j] = n;
        }
        (*first)[owner[j] + 1]++;
    }
    for (i = 0; i <= n; i++) {
        (*first)[i + 1] += (*first)[i];
        at[i] = (*first)[i];
    }
    for (j = 0; j < no; j++) {
        (*order)[at[owner[j]]++] = j;
    }
    ok = true;
out:
    if (!ok) {
        free(*first);
        free(*order);
        *first = *order = NULL;
    }
    free(owner);
    free(at);
    dev_index_free(x);
    return ok;
}

/*
 * DEVICE frames leave in writes of about this size rather than one each:
 * the guest is stopped, and with thousands of devices a syscall per
 * device was a third of the downtime.
 */
#define DEVICE_BATCH 65536

/* Save every device at its negotiated version into DEVICE frames. */
static bool send_devices(Migration *m, Chan *c, const Mig2Engine *e,
                         uint32_t *count, char **errp)
{
    Vm *vm = m->vm;
    size_t i, j, *first, *order;
    Mig2Writer batch;
    bool ok = true;

    *count = 0;
    if (!group_omitted(e, &first, &order)) {
        *errp = strdup("out of memory");
        return false;
    }
    mig2_wr_init(&batch, DEVICE_BATCH + MIG2_FRAME_HEADER_LEN +
                             MAX_STATE_FRAME);
    for (i = 0; i < mig2_result_device_count(e) && ok; i++) {
        const Mig2DeviceResult *r = mig2_result_device(e, i);
        DeviceState *d = vm_find_device(vm, r->id, r->instance);
        const char *omit[65];
        size_t n_omit = 0;
        Mig2Writer w;

        if (!d) {
            *errp = mig_strf("device %s@%u vanished", r->id, r->instance);
            ok = false;
            break;
        }
        for (j = first[i]; j < first[i + 1] && n_omit < 64; j++) {
            omit[n_omit++] = mig2_result_omitted(e, order[j])->subsection;
        }
        omit[n_omit] = NULL;
        mig2_wr_init(&w, MAX_STATE_FRAME);
        mig2_data_device_head_encode(&w, r->id, r->instance, r->version);
        pthread_mutex_lock(&vm->lock);
        device_save(d, r->version, omit, &w);
        pthread_mutex_unlock(&vm->lock);
        if (mig2_wr_error(&w)) {
            *errp = mig_strf("cannot save device %s: %s", r->id,
                             mig2_strerror(mig2_wr_error(&w)));
            mig2_wr_free(&w);
            ok = false;
            break;
        }
        pthread_mutex_lock(&m->lock);
        m->stats.transferred += MIG2_FRAME_HEADER_LEN + w.len;
        pthread_mutex_unlock(&m->lock);
        {
            uint8_t h[MIG2_FRAME_HEADER_LEN];

            mig2_frame_header_put(h, MIG2_FRAME_DEVICE,
                                  MIG2_FRAME_FLAG_CRITICAL, (uint32_t)w.len);
            mig2_wr_bytes(&batch, h, sizeof(h));
            mig2_wr_bytes(&batch, w.buf, w.len);
            mig2_wr_free(&w);
        }
        if (batch.len >= DEVICE_BATCH) {
            ok = chan_write(c, batch.buf, batch.len, errp);
            batch.len = 0;
        }
        (*count)++;
    }
    if (ok && batch.len) {
        ok = chan_write(c, batch.buf, batch.len, errp);
    }
    mig2_wr_free(&batch);
    free(first);
    free(order);
    return ok;
}

/* Wait for DONE (or ERROR) after END, within the stall deadline. */
static bool wait_done(Chan *c, char **errp)
{
    uint32_t round;

    for (;;) {
        uint16_t t = read_reply(c, "no confirmation from the destination",
                                true, &round, errp);

        if (t != MIG2_FRAME_SYNC_ACK) {
            return t == MIG2_FRAME_DONE;
        }
    }
}

/*
 * Dirty rounds until the rest fits the downtime limit at the measured
 * rate, or the round limit is hit.  Shared by v2 and the legacy stream
 * through @send_round.
 */
bool mig_precopy(Migration *m, Chan *c, MigRoundFn send_round, void *opaque,
                 char **errp)
{
    Vm *vm = m->vm;
    uint64_t *bitmap = calloc(vm->ram.dirty_words ? vm->ram.dirty_words : 1,
                              sizeof(*bitmap));
    uint64_t max_rounds = mig_cfg_u64(m, "x-max-dirty-rounds");
    uint64_t limit_ms = mig_cfg_u64(m, "downtime-limit");
    uint32_t round;
    bool ok = true;

    if (!bitmap) {
        *errp = strdup("out of memory");
        return false;
    }
    if (!vm->ram.host) {
        free(bitmap);
        return true;
    }
    ram_mark_all_dirty(&vm->ram);
    for (round = 0; ok; round++) {
        int64_t t0 = mig_now_ms(), dt;
        uint64_t b0 = c->bytes_out, pages = 0, n, left;
        double rate;

        n = ram_take_dirty(&vm->ram, bitmap);
        pthread_mutex_lock(&m->lock);
        m->stats.remaining = (n + ram_count_dirty(&vm->ram)) * RAM_PAGE_SIZE;
        pthread_mutex_unlock(&m->lock);
        ok = send_round(m, c, bitmap, round, &pages, opaque, errp);
        if (!ok) {
            break;
        }
        pthread_mutex_lock(&m->lock);
        m->stats.dirty_sync_count++;
        pthread_mutex_unlock(&m->lock);
        dt = mig_now_ms() - t0;
        rate = (double)(c->bytes_out - b0) / (double)(dt > 0 ? dt : 1);
        left = ram_count_dirty(&vm->ram) * RAM_PAGE_SIZE;
        pthread_mutex_lock(&m->lock);
        m->stats.remaining = left;
        m->stats.last_rate = rate;
        pthread_mutex_unlock(&m->lock);
        if ((double)left <= rate * (double)limit_ms ||
            round + 1 >= max_rounds) {
            break;
        }
        if (mig_cancelled(m)) {
            *errp = strdup("migration cancelled");
            ok = false;
        }
    }
    free(bitmap);
    return ok;
}

/*
 * Read return-path frames until the SYNC_ACK for @round.  Waiting for it
 * makes the round's measured rate end to end: socket buffers otherwise
 * hide a destination that is still busy writing pages, and the guest
 * would be stopped while it catches up.
 */
static bool wait_sync_ack(Chan *c, uint32_t round, char **errp)
{
    for (;;) {
        uint32_t got = 0;
        uint16_t t = read_reply(c, "destination connection lost", true, &got,
                                errp);

        if (t == MIG2_FRAME_DONE) {
            *errp = strdup("destination sent DONE before END");
            return false;
        }
        if (!t || got == round) {
            return t != 0;
        }
    }
}

typedef struct V2Round {
    bool zero;              /* zero-page feature in use */
    bool acks;              /* return-path in use: wait for SYNC_ACK */
    Multifd *f;             /* multifd channels, or NULL */
} V2Round;

/*
 * One round: the pages, CHANNEL_SYNC on every channel, SYNC on the main
 * channel (the destination's barrier), and the destination's ack.
 */
static bool v2_round(Migration *m, Chan *c, const uint64_t *bitmap,
                     uint32_t round, uint64_t *pages, void *opaque,
                     char **errp)
{
    V2Round *r = opaque;

    return mig_send_dirty(m, c, r->f, bitmap, r->zero, pages, errp) &&
           (!r->f || mfd_source_sync(r->f, round, errp)) &&
           send_sync(c, round, *pages, errp) &&
           (!r->acks || wait_sync_ack(c, round, errp));
}

/* How many multifd channels the session agreed on (0: none). */
static unsigned negotiated_channels(const Mig2Engine *e)
{
    Mig2ChannelSet *set = mig2_channel_set_new(e, NULL);
    unsigned n = set ? mig2_channel_set_expected(set, MIG2_CHANNEL_MULTIFD)
                     : 0;

    mig2_channel_set_free(set);
    return n;
}

/* Stop the guest for switchover; remember how to restore it. */
void mig_switchover_stop(Migration *m)
{
    Vm *vm = m->vm;
    RunState prev = vm_state(vm);

    m->prev_state = prev;
    m->stopped_guest = true;
    m->downtime_start = mig_now_ms();
    vm_stop(vm, RUN_STATE_FINISH_MIGRATE);
    pthread_mutex_lock(&vm->lock);
    /* Put back if the migration fails: the source keeps its state. */
    free(m->prev_globalstate);
    m->prev_globalstate = strdup(globalstate_get(vm->globalstate));
    /* As QEMU's globalstate: the destination ends in the source's state. */
    globalstate_set(vm->globalstate, run_state_name(prev));
    pthread_mutex_unlock(&vm->lock);
    mig_set_status(m, MIG_STATUS_DEVICE);
}

/*
 * Sending failed or the stream broke: the destination may have said why
 * just before it closed.  Look for its ERROR briefly; keep our own reason
 * when there is none.
 */
static void salvage_peer_error(Chan *c, char **errp);

/*
 * Did the destination's ERROR on the main channel end the migration?  Then
 * it knows why and needs no ERROR back.  An ERROR on a multifd channel
 * ("multifd channel N: destination reported ...") does not count: the
 * destination's main channel still waits and must be told.
 */
static bool main_peer_error(const char *err)
{
    return err && strncmp(err, "destination reported ", 21) == 0;
}

static void salvage_peer_error(Chan *c, char **errp)
{
    int i;

    c->stall_ms = 500;
    for (i = 0; i < 256; i++) {
        uint32_t round;
        char *why = NULL;

        if (read_reply(c, "", false, &round, &why)) {
            continue;
        }
        if (why && strstr(why, "destination reported")) {
            free(*errp);
            *errp = why;
        } else {
            free(why);
        }
        return;
    }
}

/*
 * The data phase from the first RAM frame through END (section 13): dirty
 * rounds, switchover, the last pages behind a barrier, every device at
 * its negotiated (or, one-way, stated) version.  @f: multifd channels or
 * NULL.
 */
static bool send_state(Migration *m, Chan *c, const Mig2Engine *e,
                       Multifd *f, char **errp)
{
    bool zero = mig2_result_has_feature(e, MIG2_FEAT_ZERO_PAGE);
    V2Round r = {
        .zero = zero,
        .acks = mig2_result_has_feature(e, MIG2_FEAT_RETURN_PATH),
        .f = f,
    };
    Mig2Writer end;
    uint64_t *bitmap, pages = 0;
    uint32_t round, ndev = 0;
    bool ok = mig_precopy(m, c, v2_round, &r, errp);

    if (!ok) {
        return false;
    }
    mig_switchover_stop(m);
    /* Tests only: a SWITCHOVER that is not empty (spec 13.4). */
    ok = mig_send_frame(c, MIG2_FRAME_SWITCHOVER, "junk",
                        mig_test_knob(m, "switchover-payload") ? 4 : 0, errp);
    bitmap = calloc(m->vm->ram.dirty_words ? m->vm->ram.dirty_words : 1,
                    sizeof(*bitmap));
    if (ok && bitmap && m->vm->ram.host) {
        ram_take_dirty(&m->vm->ram, bitmap);
        ok = mig_send_dirty(m, c, f, bitmap, zero, &pages, errp);
    }
    free(bitmap);
    /* The final pass ends with a barrier too: no page after a device. */
    pthread_mutex_lock(&m->lock);
    round = (uint32_t)m->stats.dirty_sync_count;
    pthread_mutex_unlock(&m->lock);
    ok = ok && (!f || mfd_source_sync(f, round, errp)) &&
         send_sync(c, round, pages, errp) &&
         (!f || mfd_source_flush(f, errp));
    ok = ok && send_devices(m, c, e, &ndev, errp);
    if (ok) {
        mig2_wr_init(&end, MIG2_DATA_END_LEN);
        pthread_mutex_lock(&m->lock);
        mig2_data_end_encode(&end, m->stats.normal + m->stats.duplicate, ndev);
        pthread_mutex_unlock(&m->lock);
        ok = mig_send_built(c, MIG2_FRAME_END, &end, errp);
    }
    return ok;
}

/*
 * The main-channel handshake for either side, bound to the channel's TLS
 * session when it has one.  Returns the completed engine, or NULL with
 * *@errp set.
 */
static Mig2Engine *v2_handshake(Migration *m, Chan *c, bool source,
                                char **errp)
{
    Mig2Profile *p = mig_build_profile(m, source, errp);
    Mig2Engine *e;
    bool ok;
    int rc;

    if (!p || !tls_require_binding(c, p, errp)) {
        mig2_profile_free(p);
        return NULL;
    }
    e = mig2_engine_new(source ? MIG2_ROLE_SOURCE : MIG2_ROLE_DESTINATION, p,
                        NULL, &rc);
    mig2_profile_free(p);
    if (!e) {
        *errp = mig_strf("cannot start the handshake: %s", mig2_strerror(rc));
        return NULL;
    }
    ok = tls_bind_engine(c, e, errp) && mig_run_handshake(m, c, e, errp);
    tls_publish(m, c);
    if (!ok) {
        mig2_engine_free(e);
        return NULL;
    }
    return e;
}

bool mig_v2_source(Migration *m, Chan *c, char **errp)
{
    Mig2Engine *e = v2_handshake(m, c, true, errp);
    Multifd *f = NULL;
    unsigned nchan;
    bool ok = true, told, stalled;

    if (!e) {
        return false;
    }
    pthread_mutex_lock(&m->lock);
    m->setup_ms = mig_now_ms() - m->start_ms;
    m->stats.total = m->vm->ram.size;
    m->stats.transferred = c->bytes_out;
    pthread_mutex_unlock(&m->lock);
    mig_set_status(m, MIG_STATUS_ACTIVE);

    nchan = negotiated_channels(e);
    if (nchan) {
        /* The channels connect while round 0 starts on the main channel. */
        f = mfd_source_start(m, e, nchan,
                             mig2_result_has_feature(e, MIG2_FEAT_ZERO_PAGE),
                             errp);
        ok = f != NULL;
    }
    ok = ok && send_state(m, c, e, f, errp) && wait_done(c, errp);
    /* Our own stall deadline ended it (salvaging below may stall too). */
    stalled = c->stalled;
    /* The destination said why, or broke the protocol and was told so. */
    told = !ok && (main_peer_error(*errp) ||
                   (*errp && strncmp(*errp, DEST_BROKE,
                                     strlen(DEST_BROKE)) == 0));
    if (!ok && !mig_cancelled(m) && !told) {
        salvage_peer_error(c, errp);
        told = main_peer_error(*errp);
    }
    if (!ok && mig2_engine_state(e) == MIG2_STATE_COMPLETE && !told) {
        /* Tell the destination why we stop, if it still listens. */
        mig_send_error(c, mig_cancelled(m) ? MIG2_WIRE_CANCELLED
                          : stalled        ? MIG2_WIRE_TIMEOUT
                                           : MIG2_WIRE_INTERNAL,
                       *errp ? *errp : "source failed");
    }
    mfd_source_stop(f);
    mig2_engine_free(e);
    return ok;
}

/* ---------------------------------------------------------------- */
/* One-way v4 stream (section 2.5)                                   */
/* ---------------------------------------------------------------- */

static void digest_tap(void *opaque, const void *p, size_t n)
{
    /* A hash failure shows up as a DIGEST mismatch at the end. */
    (void)mig2_digest_update(opaque, p, n);
}

/*
 * A one-way engine for this VM as writer (@source) or reader, and the
 * DIGEST over every byte @c carries from now on.
 */
static bool oneway_begin(Migration *m, Chan *c, bool source, Mig2Engine **e,
                         Mig2Digest **d, char **errp)
{
    Mig2EngineOptions opts = { .oneway = true };
    Mig2Profile *p = mig_build_profile(m, source, errp);
    int rc;

    if (!p) {
        return false;
    }
    *e = mig2_engine_new(source ? MIG2_ROLE_SOURCE : MIG2_ROLE_DESTINATION,
                         p, &opts, &rc);
    mig2_profile_free(p);
    *d = *e ? mig2_digest_new(&rc) : NULL;
    if (!*d) {
        mig2_engine_free(*e);
        *errp = mig_strf("cannot %s the one-way stream: %s",
                         source ? "start" : "read", mig2_strerror(rc));
        return false;
    }
    c->tap = digest_tap;
    c->tap_opaque = *d;
    return true;
}

/*
 * Writer: the head the engine states (preamble, MANIFEST, FINISHED), the
 * data phase as a live source would send it without a return path, and
 * DIGEST over all of it.  Nothing is read back.
 */
bool mig_oneway_source(Migration *m, Chan *c, char **errp)
{
    Mig2Digest *d;
    Mig2Engine *e;
    uint8_t value[MIG2_HASH_LEN];
    uint8_t frame[MIG2_FRAME_HEADER_LEN + MIG2_HASH_LEN];
    Mig2Writer w;
    bool ok;

    if (!oneway_begin(m, c, true, &e, &d, errp)) {
        return false;
    }
    publish_handshake(m, e);
    ok = flush_engine(c, e, errp);
    if (ok) {
        pthread_mutex_lock(&m->lock);
        m->setup_ms = mig_now_ms() - m->start_ms;
        m->stats.total = m->vm->ram.size;
        m->stats.transferred = c->bytes_out;
        pthread_mutex_unlock(&m->lock);
        mig_set_status(m, MIG_STATUS_ACTIVE);
        ok = send_state(m, c, e, NULL, errp);
    }
    if (ok) {
        ok = mig2_digest_value(d, value) == MIG2_OK;
        mig2_wr_init(&w, sizeof(frame));
        mig2_digest_encode(&w, value);
        ok = ok && !mig2_wr_error(&w) && w.len == sizeof(frame);
        if (ok) {
            memcpy(frame, w.buf, sizeof(frame));
        } else {
            *errp = strdup("cannot compute the stream digest");
        }
        mig2_wr_free(&w);
        ok = ok && chan_write(c, frame, sizeof(frame), errp);
    }
    if (!ok && c->bytes_out) {
        /* Whoever reads the stream later learns why it stops here. */
        mig_send_error(c, mig_cancelled(m) ? MIG2_WIRE_CANCELLED
                                           : MIG2_WIRE_INTERNAL,
                       *errp ? *errp : "source failed");
    }
    pthread_mutex_lock(&m->lock);
    m->stats.transferred = c->bytes_out;
    m->stats.remaining = 0;
    pthread_mutex_unlock(&m->lock);
    c->tap = NULL;
    mig2_digest_free(d);
    mig2_engine_free(e);
    return ok;
}

/* ---------------------------------------------------------------- */
/* Destination: v2                                                   */
/* ---------------------------------------------------------------- */

typedef struct LoadState {
    const Mig2Engine *e;
    Mig2Digest *digest;     /* one-way: the stream so far, else NULL */
    bool *loaded;           /* per device result */
    DevIndex *results;      /* device results by (id, instance) */
    uint64_t pages;
    uint32_t devices;
    bool switched;
} LoadState;

/* Fail the load: tell the source, then report locally. */
static bool load_error(Chan *c, uint32_t code, char **errp, char *msg)
{
    mig_send_error(c, code, msg ? msg : "load failed");
    *errp = msg;
    return false;
}

/* Buffers per readv of RAM pages: what one readv takes (IOV_MAX). */
#define LOAD_IOV 1024

/* Read the 8 * r->n bytes of entries, growing @heap as they arrive. */
static bool read_entries(Chan *c, Mig2DataRam *r, uint64_t *stack,
                         uint64_t **heap, char **errp)
{
    uint64_t *ent = stack;
    uint32_t have = 0, cap = MIG_RAM_BATCH;

    /*
     * A sender's batch fits the stack.  Beyond that, memory grows with
     * what has arrived, never with what the header claims (spec 15.1).
     */
    while (have < r->n) {
        uint32_t k = r->n - have < cap - have ? r->n - have : cap - have;

        if (k == 0) {
            uint64_t *more;

            cap = cap > r->n / 2 ? r->n : 2 * cap;
            more = realloc(*heap, (size_t)cap * sizeof(*more));
            if (!more) {
                *errp = strdup("out of memory");
                return false;
            }
            if (!*heap) {
                memcpy(more, stack, (size_t)have * sizeof(*more));
            }
            *heap = ent = more;
            continue;
        }
        if (!chan_read(c, ent + have, (size_t)k * MIG2_DATA_RAM_ENTRY_LEN,
                       errp)) {
            return false;
        }
        have += k;
    }
    r->entries = (const uint8_t *)ent;
    return true;
}

bool mig_load_ram(Migration *m, Chan *c, const Mig2Engine *e, uint32_t len,
                  uint64_t *pages, char **errp)
{
    Vm *vm = m->vm;
    const Mig2DataRamBlock block = {
        .size = vm->ram.size, .page_size = RAM_PAGE_SIZE,
    };
    uint8_t head[MIG2_DATA_RAM_HEAD_LEN];
    uint64_t stack[MIG_RAM_BATCH], *heap = NULL, off;
    struct iovec iov[LOAD_IOV];
    Mig2DataRam r;
    uint32_t i, data_pages;
    int k = 0, rc;

    if (len < sizeof(head) || !chan_read(c, head, sizeof(head), errp)) {
        return *errp ? false
                     : load_error(c, MIG2_WIRE_PROTOCOL, errp,
                                  strdup("RAM frame shorter than its head"));
    }
    rc = mig2_data_ram_head_parse(head, len, &block, vm->ram.host ? 1 : 0,
                                  &r);
    if (rc != MIG2_OK) {
        return load_error(c, MIG2_WIRE_PROTOCOL, errp,
                          rc == MIG2_ERR_TRUNCATED
                              ? mig_strf("RAM frame of %u bytes cannot hold "
                                         "its %u entries", len, r.n)
                              : mig_strf("RAM frame for block %u with %u "
                                         "entries: no such block, or no "
                                         "entries", r.block, r.n));
    }
    if (!read_entries(c, &r, stack, &heap, errp)) {
        free(heap);
        return false;
    }
    rc = mig2_data_ram_entries_parse(&r, r.entries, len,
                                     mig2_result_has_feature(
                                         e, MIG2_FEAT_ZERO_PAGE));
    if (rc != MIG2_OK) {
        char *msg;

        if (rc != MIG2_ERR_BAD_VALUE) {
            msg = mig_strf("RAM frame length %u does not match its %u "
                           "entries", len, r.n);
        } else if (mig2_data_ram_entry_get(&r, r.bad_entry, &off) &&
                   !mig2_result_has_feature(e, MIG2_FEAT_ZERO_PAGE)) {
            msg = strdup("zero-page flag without the zero-page feature");
        } else {
            msg = mig_strf("RAM entry %u (offset 0x%" PRIx64 ") is not a "
                           "page of block %s (%" PRIu64 " bytes)",
                           r.bad_entry, off, vm->ram.name, vm->ram.size);
        }
        free(heap);
        return load_error(c, MIG2_WIRE_PROTOCOL, errp, msg);
    }
    /*
     * Every offset checked: read the pages straight into guest memory,
     * neighbours in one buffer, up to a batch of buffers per readv.
     */
    for (i = 0; i < r.n; i++) {
        if (mig2_data_ram_entry_get(&r, i, &off)) {
            ram_zero_page(&vm->ram, off);
            continue;
        }
        if (k && (uint8_t *)iov[k - 1].iov_base + iov[k - 1].iov_len ==
                     vm->ram.host + off) {
            iov[k - 1].iov_len += RAM_PAGE_SIZE;
            continue;
        }
        if (k == LOAD_IOV) {
            if (!chan_readv(c, iov, k, errp)) {
                free(heap);
                return false;
            }
            k = 0;
        }
        iov[k].iov_base = vm->ram.host + off;
        iov[k].iov_len = RAM_PAGE_SIZE;
        k++;
    }
    if (k && !chan_readv(c, iov, k, errp)) {
        free(heap);
        return false;
    }
    for (i = 0; i < r.n; i++) {
        if (!mig2_data_ram_entry_get(&r, i, &off)) {
            ram_note_written(&vm->ram, off);
        }
    }
    free(heap);
    data_pages = r.n - r.n_zero;
    *pages += r.n;
    pthread_mutex_lock(&m->lock);
    m->stats.transferred += MIG2_FRAME_HEADER_LEN + len;
    m->stats.normal += data_pages;
    m->stats.duplicate += r.n_zero;
    pthread_mutex_unlock(&m->lock);
    return true;
}

static bool load_device(Migration *m, Chan *c, const uint8_t *p,
                        uint32_t len, LoadState *ls, char **errp)
{
    Vm *vm = m->vm;
    Mig2DataDevice dd;
    size_t i;
    uint32_t inst, ver;
    char name[256];
    DeviceState *d;
    char *lerr = NULL;
    bool ok;

    if (mig2_data_device_parse(p, len, &dd) != MIG2_OK) {
        return load_error(c, MIG2_WIRE_PROTOCOL, errp,
                          strdup("DEVICE frame header is malformed"));
    }
    memcpy(name, dd.id, dd.id_len);
    name[dd.id_len] = '\0';
    inst = dd.instance;
    ver = dd.version;
    if (!dev_index_get(ls->results, name, inst, &i)) {
        return load_error(c, MIG2_WIRE_PROTOCOL, errp,
                          mig_strf("DEVICE frame for %s@%u, which is not in "
                                   "the negotiated manifest", name, inst));
    }
    if (ls->loaded[i]) {
        return load_error(c, MIG2_WIRE_PROTOCOL, errp,
                          mig_strf("device %s@%u sent twice", name, inst));
    }
    if (ver != mig2_result_device(ls->e, i)->version) {
        return load_error(c, MIG2_WIRE_PROTOCOL, errp,
                          mig_strf("device %s@%u sent at version %u, "
                                   "negotiated %u", name, inst, ver,
                                   mig2_result_device(ls->e, i)->version));
    }
    d = vm_find_device(vm, name, inst);
    if (!d) {
        return load_error(c, MIG2_WIRE_LOAD_FAILED, errp,
                          mig_strf("no device %s@%u here", name, inst));
    }
    pthread_mutex_lock(&vm->lock);
    ok = device_load(d, ver, dd.body, dd.body_len, &lerr);
    pthread_mutex_unlock(&vm->lock);
    if (!ok) {
        char *msg = mig_strf("error while loading state for device %s@%u "
                             "version %u: %s", name, inst, ver,
                             lerr ? lerr : "invalid state");

        free(lerr);
        return load_error(c, MIG2_WIRE_LOAD_FAILED, errp, msg);
    }
    ls->loaded[i] = true;
    ls->devices++;
    return true;
}

/*
 * One-way reader after END: the next frame must be DIGEST, and its value
 * the hash of every byte read up to here.  Until then nothing loaded
 * counts: a flipped bit anywhere in the file fails the restore.
 */
static bool check_digest(Chan *c, Mig2Digest *d, char **errp)
{
    uint8_t want[MIG2_HASH_LEN], got[MIG2_HASH_LEN], h[8];
    Mig2FrameHeader fh;

    if (mig2_digest_value(d, want)) {
        *errp = strdup("cannot compute the stream digest");
        return false;
    }
    if (!chan_read(c, h, sizeof(h), errp)) {
        free(*errp);
        *errp = strdup("the one-way stream ends after END, without its "
                       "DIGEST: it is truncated");
        return false;
    }
    if (mig2_frame_header_parse(h, MIG2_FRAME_MAX, &fh) ||
        fh.type != MIG2_FRAME_DIGEST || fh.length != MIG2_HASH_LEN) {
        *errp = mig_strf("the one-way stream has frame 0x%04x of %u bytes "
                         "where its 32-byte DIGEST belongs", fh.type,
                         fh.length);
        return false;
    }
    if (!chan_read(c, got, sizeof(got), errp)) {
        return false;
    }
    if (memcmp(want, got, sizeof(want)) != 0) {
        *errp = strdup("the one-way stream is corrupt: its DIGEST does not "
                       "match the SHA-256 of the bytes read before it");
        return false;
    }
    return true;
}

/* END: every device arrived, and the counts match (spec 13.6). */
static bool load_end(Chan *c, const uint8_t *p, uint32_t len, LoadState *ls,
                     MfdDest *mfd, char **errp)
{
    const Mig2Engine *e = ls->e;
    size_t i, missing = mig2_result_device_count(e);
    uint64_t pages, arrived = ls->pages + (mfd ? mfd_dest_pages(mfd) : 0);
    uint32_t devices;

    for (i = 0; i < mig2_result_device_count(e); i++) {
        if (ls->loaded[i]) {
            missing--;
        } else {
            break;
        }
    }
    if (mig2_data_end_parse(p, len, &pages, &devices) != MIG2_OK) {
        return load_error(c, MIG2_WIRE_PROTOCOL, errp,
                          mig_strf("END frame of %u bytes, expected %u", len,
                                   MIG2_DATA_END_LEN));
    }
    if (missing) {
        const Mig2DeviceResult *r = mig2_result_device(e, i);

        return load_error(c, MIG2_WIRE_LOAD_FAILED, errp,
                          mig_strf("the stream ended without state for "
                                   "device %s@%u (%zu missing)", r->id,
                                   r->instance, missing));
    }
    if (devices != ls->devices || pages != arrived) {
        return load_error(c, MIG2_WIRE_LOAD_FAILED, errp,
                          mig_strf("END counts (%" PRIu64 " pages, %u "
                                   "devices) differ from what arrived "
                                   "(%" PRIu64 ", %u)", pages, devices,
                                   arrived, ls->devices));
    }
    return true;
}

static bool v2_load(Migration *m, Chan *c, const Mig2Engine *e,
                    Mig2Digest *digest, char **errp)
{
    static const uint16_t valid[] = {
        MIG2_FRAME_RAM, MIG2_FRAME_SYNC, MIG2_FRAME_SWITCHOVER,
        MIG2_FRAME_DEVICE, MIG2_FRAME_END, MIG2_FRAME_ERROR, 0,
    };
    LoadState ls = { .e = e, .digest = digest };
    MfdDest *mfd = NULL;
    char *werr = NULL;
    bool rp = mig2_result_has_feature(e, MIG2_FEAT_RETURN_PATH);
    bool ok = true, done = false;

    ls.loaded = calloc(mig2_result_device_count(e) + 1, sizeof(bool));
    ls.results = index_results(e);
    pthread_mutex_lock(&m->lock);
    m->stats.total = m->vm->ram.size;
    pthread_mutex_unlock(&m->lock);
    if (!ls.loaded || !ls.results) {
        free(ls.loaded);
        dev_index_free(ls.results);
        *errp = strdup("out of memory");
        return false;
    }
    /*
     * The listening socket stays ours for the whole migration: extra
     * channels join through it, and anything else is refused there.
     */
    if (m->listen_fd >= 0) {
        mfd = mfd_dest_start(m, e, m->listen_fd, errp);
        if (!mfd) {
            free(ls.loaded);
            dev_index_free(ls.results);
            return false;
        }
    }
    while (ok && !done) {
        Mig2FrameHeader fh;
        uint8_t *p = NULL;
        uint32_t code, round;
        uint64_t pages;
        Mig2Writer w;

        /* Unknown frames are skipped or refused in there (spec 4.3). */
        if (!mig_next_frame(c, valid, &fh, &code, errp)) {
            ok = code ? load_error(c, code, errp, *errp) : false;
            break;
        }
        if (fh.type == MIG2_FRAME_RAM) {
            ok = mig_load_ram(m, c, e, fh.length, &ls.pages, errp);
            continue;
        }
        if (!mig_read_payload(c, &fh, MAX_STATE_FRAME, &p, &code, errp)) {
            ok = code ? load_error(c, code, errp, *errp) : false;
            break;
        }
        switch (fh.type) {
        case MIG2_FRAME_SYNC:
            if (mig2_data_sync_parse(p, fh.length, &round, &pages)) {
                ok = load_error(c, MIG2_WIRE_PROTOCOL, errp,
                                mig_strf("SYNC frame of %u bytes, expected "
                                         "%u", fh.length,
                                         MIG2_DATA_SYNC_LEN));
                break;
            }
            /* The barrier: every channel's pages of this round are in. */
            if (mfd && !mfd_dest_wait_sync(mfd, round, &werr)) {
                ok = load_error(c, strstr(werr, "did not arrive")
                                       ? MIG2_WIRE_TIMEOUT
                                       : MIG2_WIRE_LOAD_FAILED,
                                errp, werr);
                werr = NULL;
            } else if (rp) {
                mig2_wr_init(&w, MIG2_DATA_SYNC_LEN);
                mig2_data_round_encode(&w, round);
                if (mig_test_knob(m, "sync-ack-payload")) {
                    mig2_wr_u32(&w, 0);     /* tests only: too long */
                }
                ok = mig_send_built(c, MIG2_FRAME_SYNC_ACK, &w, errp);
            }
            break;
        case MIG2_FRAME_SWITCHOVER:
            if (mig2_data_empty_parse(p, fh.length) != MIG2_OK) {
                ok = load_error(c, MIG2_WIRE_PROTOCOL, errp,
                                mig_strf("SWITCHOVER frame of %u bytes, "
                                         "expected none", fh.length));
                break;
            }
            ls.switched = true;
            /* Device state comes next: many small frames. */
            c->readahead = true;
            mig_set_status(m, MIG_STATUS_DEVICE);
            break;
        case MIG2_FRAME_DEVICE:
            ok = load_device(m, c, p, fh.length, &ls, errp);
            break;
        case MIG2_FRAME_END:
            ok = load_end(c, p, fh.length, &ls, mfd, errp);
            done = true;
            if (ok && ls.digest) {
                ok = check_digest(c, ls.digest, errp);
            } else if (ok) {
                /* Tests only: a DONE that is not empty (spec 13.6). */
                ok = mig_send_frame(c, MIG2_FRAME_DONE, "junk",
                                    mig_test_knob(m, "done-payload") ? 4 : 0,
                                    errp);
            }
            break;
        case MIG2_FRAME_ERROR:
            *errp = mig_peer_error_text(p, fh.length);
            {
                /* The text says "destination"; here the source spoke. */
                char *s = *errp ? strstr(*errp, "destination reported")
                                : NULL;

                if (s) {
                    /* "destination" (11) -> "source" (6), no padding */
                    memcpy(s, "source", 6);
                    memmove(s + 6, s + 11, strlen(s + 11) + 1);
                }
            }
            ok = false;
            break;
        default:
            break;
        }
        free(p);
    }
    if (!ok && digest && *errp &&
        strcmp(*errp, "the peer closed the connection") == 0) {
        /* A file has no peer: say what happened to it. */
        free(*errp);
        *errp = strdup("the one-way stream is truncated: it ends before "
                       "its END and DIGEST");
    }
    if (!ok && mfd && mfd_dest_timed_out(mfd, &werr)) {
        /* The reason is the missing channel, not the read it ended. */
        free(*errp);
        *errp = NULL;
        load_error(c, MIG2_WIRE_TIMEOUT, errp, werr);
        werr = NULL;
    } else if (!ok && mfd && *errp &&
               strcmp(*errp, "the peer closed the connection") == 0 &&
               (werr = mfd_dest_failure(mfd, 500)) &&
               !strstr(werr, "the peer closed the connection")) {
        /* The source gave up because a channel of ours refused it. */
        free(*errp);
        *errp = werr;
        werr = NULL;
    } else if (!ok && mig_cancelled(m)) {
        /* quit or a signal: the source learns why instead of a reset. */
        mig_send_error(c, MIG2_WIRE_CANCELLED,
                       "the destination is shutting down");
    } else if (!ok && c->stalled && !digest) {
        /* Our deadline found it: say so (spec 15.5), not just close. */
        mig_send_error(c, MIG2_WIRE_TIMEOUT, *errp);
    }
    free(werr);
    free(ls.loaded);
    dev_index_free(ls.results);
    mfd_dest_stop(mfd);
    return ok;
}

bool mig_v2_destination(Migration *m, Chan *c, char **errp)
{
    Mig2Engine *e = v2_handshake(m, c, false, errp);
    bool ok;

    if (!e) {
        return false;
    }
    mig_apply_final_config(m, e);
    /*
     * The channel was opened with our own stall deadline; the data phase
     * runs on the negotiated one (spec 8.3.4), as the multifd receivers
     * do.
     */
    c->stall_ms = (int)mig_cfg_u64(m, "x-stall-timeout");
    mig_set_status(m, MIG_STATUS_ACTIVE);
    ok = v2_load(m, c, e, NULL, errp);
    mig2_engine_free(e);
    return ok;
}

/*
 * One-way reader: the engine checks MANIFEST and FINISHED against this
 * VM before a byte of state is read (every problem at once, as a live
 * destination reports them); then the data phase, then DIGEST.
 */
bool mig_oneway_destination(Migration *m, Chan *c, char **errp)
{
    Mig2Engine *e;
    Mig2Digest *d;
    bool ok;

    /* Every byte from the preamble on: the engine consumes it from here. */
    if (!oneway_begin(m, c, false, &e, &d, errp)) {
        return false;
    }
    ok = mig_run_handshake(m, c, e, errp);
    if (ok) {
        mig_apply_final_config(m, e);
        mig_set_status(m, MIG_STATUS_ACTIVE);
        ok = v2_load(m, c, e, d, errp);
    }
    c->tap = NULL;
    mig2_digest_free(d);
    mig2_engine_free(e);
    return ok;
}
