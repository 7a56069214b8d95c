/*
 * libmig2 - negotiation and the compatibility check
 *
 * Pure functions over two profiles.  Both roles run the same code, so the
 * source reaches the same results the destination announced, and any
 * disagreement is itself a problem.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint16_t mig2_negotiate_revision(uint16_t amin, uint16_t amax,
                                 uint16_t bmin, uint16_t bmax)
{
    uint16_t hi = amax < bmax ? amax : bmax;
    uint16_t lo = amin > bmin ? amin : bmin;

    return hi >= lo ? hi : 0;
}

static bool has_feature(const Mig2Profile *p, uint16_t id)
{
    size_t i;

    for (i = 0; i < p->n_features; i++) {
        if (p->features[i].id == id) {
            return true;
        }
    }
    return false;
}

static int features_filter(const Mig2Profile *a, const Mig2Profile *b,
                           bool want_in_b, uint16_t **out, size_t *n)
{
    size_t i;

    *out = NULL;
    *n = 0;
    if (a->n_features == 0) {
        return MIG2_OK;
    }
    *out = malloc(a->n_features * sizeof(**out));
    if (!*out) {
        return MIG2_ERR_NOMEM;
    }
    for (i = 0; i < a->n_features; i++) {
        if (has_feature(b, a->features[i].id) == want_in_b) {
            (*out)[(*n)++] = a->features[i].id;
        }
    }
    return MIG2_OK;
}

int mig2_features_minus(const Mig2Profile *a, const Mig2Profile *b,
                        uint16_t **out, size_t *n)
{
    return features_filter(a, b, false, out, n);
}

int mig2_features_common(const Mig2Profile *a, const Mig2Profile *b,
                         uint16_t **out, size_t *n)
{
    return features_filter(a, b, true, out, n);
}

static void feature_label(uint16_t id, char *buf, size_t len)
{
    const char *name = mig2_feature_name(id);

    if (name) {
        snprintf(buf, len, "%s", name);
    } else {
        snprintf(buf, len, "0x%04x", id);
    }
}

int mig2_check_required_features(const Mig2Profile *a, const Mig2Profile *b,
                                 Mig2Error *err)
{
    char label[32];     /* the longest registered name, or 0xNNNN */
    size_t i;
    int rc;

    for (i = 0; i < a->n_features; i++) {
        if (a->features[i].required && !has_feature(b, a->features[i].id)) {
            feature_label(a->features[i].id, label, sizeof(label));
            rc = mig2_error_addf(err, MIG2_PROB_FEATURE_REQUIRED,
                                 "features/%s", "present", "absent", label);
            if (rc) {
                return rc;
            }
        }
    }
    return MIG2_OK;
}

/* Render a config value for a problem report.  Caller frees. */
static char *value_str(const Mig2ConfigValue *v)
{
    char *s = NULL;

    switch (v->type) {
    case MIG2_CFG_BOOL:
        s = strdup(v->b ? "true" : "false");
        break;
    case MIG2_CFG_U64:
        if (asprintf(&s, "%" PRIu64, v->u) < 0) {
            s = NULL;
        }
        break;
    case MIG2_CFG_STR:
        if (asprintf(&s, "\"%s\"", v->s) < 0) {
            s = NULL;
        }
        break;
    }
    return s;
}

static bool value_eq(const Mig2ConfigValue *a, const Mig2ConfigValue *b)
{
    if (a->type != b->type) {
        return false;
    }
    switch (a->type) {
    case MIG2_CFG_BOOL:
        return a->b == b->b;
    case MIG2_CFG_U64:
        return a->u == b->u;
    case MIG2_CFG_STR:
        return strcmp(a->s, b->s) == 0;
    }
    return false;
}

static void default_value(const Mig2ConfigDef *def, Mig2ConfigValue *v)
{
    memset(v, 0, sizeof(*v));
    v->type = def->type;
    v->b = def->type == MIG2_CFG_BOOL && def->def_u;
    v->u = def->type == MIG2_CFG_U64 ? def->def_u : 0;
    v->s = def->def_s;
}

static const char *status_expected(Mig2ConfigStatus st)
{
    switch (st) {
    case MIG2_CFG_UNKNOWN: return "a parameter this destination knows";
    case MIG2_CFG_BAD_TYPE: return "a value of the registered type";
    case MIG2_CFG_REFUSED: return "refused by destination policy";
    default: return "accepted";
    }
}

static unsigned status_problem(Mig2ConfigStatus st)
{
    switch (st) {
    case MIG2_CFG_UNKNOWN: return MIG2_PROB_CONFIG_UNKNOWN;
    case MIG2_CFG_BAD_TYPE: return MIG2_PROB_CONFIG_TYPE;
    case MIG2_CFG_REFUSED: return MIG2_PROB_CONFIG_REFUSED;
    default: return MIG2_PROB_CONFIG_CLAMPED;
    }
}

/* Problem for a REQUIRED item the destination did not accept as is. */
static int required_problem(Mig2Error *err, const Mig2ConfigItem *it,
                            Mig2ConfigStatus st, const Mig2ConfigValue *fin)
{
    char *actual = value_str(&it->v);
    char *expected = NULL;
    int rc;

    if (st == MIG2_CFG_CLAMPED) {
        char *f = value_str(fin);

        if (f && asprintf(&expected, "at most %s", f) < 0) {
            expected = NULL;
        }
        free(f);
    } else {
        expected = strdup(status_expected(st));
    }
    rc = (actual && expected)
             ? mig2_error_addf(err, status_problem(st), "config/%s",
                               expected, actual, it->name)
             : MIG2_ERR_NOMEM;
    free(actual);
    free(expected);
    return rc;
}

int mig2_negotiate_config(const Mig2Profile *src, const Mig2Profile *dst,
                          Mig2Hello *out, Mig2Error *err)
{
    size_t i;
    int rc;

    if (src->n_config &&
        (rc = mig2_grow((void **)&out->outcomes, &out->cap_outcomes,
                        src->n_config, sizeof(*out->outcomes)))) {
        return rc;
    }
    for (i = 0; i < src->n_config; i++) {
        const Mig2ConfigItem *it = &src->config[i];
        const Mig2ConfigDef *def = mig2_profile_known(dst, it->name);
        Mig2ConfigOutcome *o = &out->outcomes[out->n_outcomes];
        Mig2ConfigValue fin = it->v;
        Mig2ConfigStatus st = MIG2_CFG_ACCEPTED;

        if (!def) {
            st = MIG2_CFG_UNKNOWN;
        } else if (def->type != it->v.type) {
            st = MIG2_CFG_BAD_TYPE;
            default_value(def, &fin);
        } else {
            const Mig2Policy *pol = mig2_profile_policy(dst, it->name);
            Mig2ConfigValue dv;
            uint64_t max = def->type == MIG2_CFG_U64 && def->max_u
                               ? def->max_u
                               : UINT64_MAX;

            /* A registered maximum clamps like a policy (spec 8.3.2). */
            if (pol && pol->kind == MIG2_POLICY_CLAMP && pol->max < max) {
                max = pol->max;
            }
            default_value(def, &dv);
            if (pol && pol->kind == MIG2_POLICY_REFUSE &&
                !value_eq(&it->v, &dv)) {
                st = MIG2_CFG_REFUSED;
                fin = dv;
            } else if (it->v.type == MIG2_CFG_U64 && it->v.u > max) {
                st = MIG2_CFG_CLAMPED;
                fin.u = max;
            }
        }
        o->name = strdup(it->name);
        o->final = fin;
        o->final.s = NULL;
        if (fin.type == MIG2_CFG_STR) {
            o->final.s = strdup(fin.s);
        }
        o->status = (uint8_t)st;
        out->n_outcomes++;
        if (!o->name || (fin.type == MIG2_CFG_STR && !o->final.s)) {
            return MIG2_ERR_NOMEM;
        }
        if ((it->flags & MIG2_CONFIG_REQUIRED) && st != MIG2_CFG_ACCEPTED &&
            (rc = required_problem(err, it, st, &fin))) {
            return rc;
        }
    }
    return MIG2_OK;
}

static int choice_problem(Mig2Error *err, const char *name,
                          const char *expected, const char *actual)
{
    return mig2_error_addf(err, MIG2_PROB_CHOICE, "config/%s", expected,
                           actual, name);
}

int mig2_verify_config(const Mig2Profile *src, const Mig2Hello *dh,
                       Mig2Error *err)
{
    char want[48], got[48];
    size_t i;
    int rc;

    if (dh->n_outcomes != src->n_config) {
        snprintf(want, sizeof(want), "%zu results", src->n_config);
        snprintf(got, sizeof(got), "%zu results", dh->n_outcomes);
        return mig2_error_add(err, MIG2_PROB_CHOICE, "config", want, got);
    }
    for (i = 0; i < src->n_config; i++) {
        const Mig2ConfigItem *it = &src->config[i];
        const Mig2ConfigOutcome *o = &dh->outcomes[i];
        Mig2ConfigStatus st = o->status;
        bool ok;

        if (strcmp(o->name, it->name) != 0) {
            rc = choice_problem(err, it->name, it->name, o->name);
            if (rc) {
                return rc;
            }
            continue;
        }
        switch (st) {
        case MIG2_CFG_ACCEPTED:
        case MIG2_CFG_UNKNOWN:
            ok = value_eq(&o->final, &it->v);
            break;
        case MIG2_CFG_CLAMPED:
            ok = it->v.type == MIG2_CFG_U64 && o->final.type == MIG2_CFG_U64 &&
                 o->final.u < it->v.u;
            break;
        case MIG2_CFG_REFUSED:
            ok = o->final.type == it->v.type;
            break;
        default:
            ok = o->final.type != it->v.type;
            break;
        }
        if (!ok) {
            rc = choice_problem(err, it->name,
                                "a final value consistent with the status",
                                mig2_config_status_name(st));
        } else if ((it->flags & MIG2_CONFIG_REQUIRED) &&
                   st != MIG2_CFG_ACCEPTED) {
            rc = required_problem(err, it, st, &o->final);
        } else {
            rc = MIG2_OK;
        }
        if (rc) {
            return rc;
        }
    }
    return MIG2_OK;
}

/* ---- compatibility check ---- */

/*
 * Devices are matched through an open-addressing hash index on (id,
 * instance): manifests run to tens of thousands of devices, and sorting
 * them with strcmp dominated the handshake's cost.
 */
typedef struct DevIndex {
    const Mig2Device **slot;
    size_t mask;
} DevIndex;

static uint64_t dev_hash(const Mig2Device *d)
{
    uint64_t h = 1469598103934665603ULL;    /* FNV-1a */
    const unsigned char *p;

    for (p = (const unsigned char *)d->id; *p; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    h = (h ^ d->instance) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static bool dev_same(const Mig2Device *a, const Mig2Device *b)
{
    return a->instance == b->instance && strcmp(a->id, b->id) == 0;
}

/* Index @n devices; a repeated (id, instance) is a malformed problem. */
static int dev_index_build(DevIndex *ix, const Mig2Device *devs, size_t n,
                           const char *side, Mig2Error *err)
{
    size_t cap = 16, i;
    int rc;

    while (cap < 2 * n) {
        cap *= 2;
    }
    ix->slot = calloc(cap, sizeof(*ix->slot));
    ix->mask = cap - 1;
    if (!ix->slot) {
        return MIG2_ERR_NOMEM;
    }
    for (i = 0; i < n; i++) {
        const Mig2Device *d = &devs[i];
        size_t j = dev_hash(d) & ix->mask;

        while (ix->slot[j] && !dev_same(ix->slot[j], d)) {
            j = (j + 1) & ix->mask;
        }
        if (ix->slot[j]) {
            rc = mig2_error_addf(err, MIG2_PROB_MALFORMED,
                                 "devices/%s@%" PRIu32, "unique", side,
                                 d->id, d->instance);
            if (rc) {
                return rc;
            }
            continue;
        }
        ix->slot[j] = d;
    }
    return MIG2_OK;
}

static const Mig2Device *dev_index_find(const DevIndex *ix,
                                        const Mig2Device *key)
{
    size_t j = dev_hash(key) & ix->mask;

    while (ix->slot[j]) {
        if (dev_same(ix->slot[j], key)) {
            return ix->slot[j];
        }
        j = (j + 1) & ix->mask;
    }
    return NULL;
}

static int cmp_ram(const void *a, const void *b)
{
    const Mig2RamBlock *x = *(const Mig2RamBlock *const *)a;
    const Mig2RamBlock *y = *(const Mig2RamBlock *const *)b;

    return strcmp(x->name, y->name);
}

/* Sorted array of pointers to @n elements of @size at @base. */
static const void **sorted_index(const void *base, size_t n, size_t size,
                                 int (*cmp)(const void *, const void *))
{
    const void **idx = malloc((n ? n : 1) * sizeof(*idx));
    size_t i;

    if (!idx) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        idx[i] = (const uint8_t *)base + i * size;
    }
    qsort(idx, n, sizeof(*idx), cmp);
    return idx;
}

static const void *find_in(const void **idx, size_t n, const void *key,
                           int (*cmp)(const void *, const void *))
{
    const void *const *hit = bsearch(&key, idx, n, sizeof(*idx), cmp);

    return hit ? *hit : NULL;
}

static int dup_ram_problems(const void **idx, size_t n, const char *side,
                            Mig2Error *err)
{
    size_t i;
    int rc;

    for (i = 1; i < n; i++) {
        const Mig2RamBlock *r = idx[i];

        if (cmp_ram(&idx[i - 1], &idx[i]) != 0) {
            continue;
        }
        rc = mig2_error_addf(err, MIG2_PROB_MALFORMED, "ram-blocks/%s",
                             "unique", side, r->name);
        if (rc) {
            return rc;
        }
    }
    return MIG2_OK;
}

static int check_ram(const Mig2Profile *src, const Mig2Profile *dst,
                     Mig2Error *err)
{
    const void **si = sorted_index(src->ram, src->n_ram, sizeof(*src->ram),
                                   cmp_ram);
    const void **di = sorted_index(dst->ram, dst->n_ram, sizeof(*dst->ram),
                                   cmp_ram);
    char a[40], b[40];
    size_t i;
    int rc = MIG2_ERR_NOMEM;

    if (!si || !di) {
        goto out;
    }
    if ((rc = dup_ram_problems(si, src->n_ram, "duplicate in source",
                               err)) ||
        (rc = dup_ram_problems(di, dst->n_ram, "duplicate in destination",
                               err))) {
        goto out;
    }
    for (i = 0; i < src->n_ram && !rc; i++) {
        const Mig2RamBlock *s = &src->ram[i];
        const Mig2RamBlock *d = find_in(di, dst->n_ram, s, cmp_ram);

        if (!d) {
            snprintf(a, sizeof(a), "%" PRIu64 " bytes", s->size);
            rc = mig2_error_addf(err, MIG2_PROB_RAM_BLOCK_MISSING,
                                 "ram-blocks/%s", "absent", a, s->name);
            continue;
        }
        if (d->size != s->size) {
            snprintf(a, sizeof(a), "%" PRIu64, d->size);
            snprintf(b, sizeof(b), "%" PRIu64, s->size);
            rc = mig2_error_addf(err, MIG2_PROB_RAM_BLOCK_SIZE,
                                 "ram-blocks/%s/size", a, b, s->name);
        }
        if (!rc && d->page_size != s->page_size) {
            snprintf(a, sizeof(a), "%" PRIu32, d->page_size);
            snprintf(b, sizeof(b), "%" PRIu32, s->page_size);
            rc = mig2_error_addf(err, MIG2_PROB_RAM_BLOCK_PAGE_SIZE,
                                 "ram-blocks/%s/page-size", a, b, s->name);
        }
    }
    for (i = 0; i < dst->n_ram && !rc; i++) {
        const Mig2RamBlock *d = &dst->ram[i];

        if (!find_in(si, src->n_ram, d, cmp_ram)) {
            snprintf(a, sizeof(a), "%" PRIu64 " bytes", d->size);
            rc = mig2_error_addf(err, MIG2_PROB_RAM_BLOCK_UNEXPECTED,
                                 "ram-blocks/%s", a, "absent", d->name);
        }
    }
out:
    free(si);
    free(di);
    return rc;
}

static bool dev_has_sub(const Mig2Device *d, const char *name)
{
    size_t i;

    for (i = 0; i < d->n_subs; i++) {
        if (strcmp(d->subs[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

static int check_device(const Mig2Device *s, const Mig2Device *d,
                        Mig2DevChoice *choices, size_t *n_choices,
                        Mig2OmittedSubsection **omitted, size_t *n_omitted,
                        size_t *cap_omitted, Mig2Error *err)
{
    uint32_t hi = s->vmax < d->vmax ? s->vmax : d->vmax;
    uint32_t lo = s->vmin > d->vmin ? s->vmin : d->vmin;
    char a[48], b[48];
    size_t i;
    int rc;

    if (hi < lo) {
        snprintf(a, sizeof(a), "%" PRIu32 "..%" PRIu32, d->vmin, d->vmax);
        snprintf(b, sizeof(b), "%" PRIu32 "..%" PRIu32, s->vmin, s->vmax);
        rc = mig2_error_addf(err, MIG2_PROB_DEVICE_VERSION,
                             "devices/%s@%" PRIu32 "/version", a, b, s->id,
                             s->instance);
        if (rc) {
            return rc;
        }
    } else {
        choices[*n_choices].src = s;
        choices[*n_choices].version = hi;
        (*n_choices)++;
    }
    for (i = 0; i < s->n_subs; i++) {
        const Mig2Subsection *sub = &s->subs[i];

        if (dev_has_sub(d, sub->name)) {
            continue;
        }
        if (sub->needed) {
            rc = mig2_error_addf(err, MIG2_PROB_SUBSECTION_UNKNOWN,
                                 "devices/%s@%" PRIu32 "/subsections/%s",
                                 "unknown to the destination", "needed",
                                 s->id, s->instance, sub->name);
            if (rc) {
                return rc;
            }
            continue;
        }
        if ((rc = mig2_grow((void **)omitted, cap_omitted, *n_omitted + 1,
                            sizeof(**omitted)))) {
            return rc;
        }
        (*omitted)[*n_omitted].device = s->id;
        (*omitted)[*n_omitted].instance = s->instance;
        (*omitted)[*n_omitted].subsection = sub->name;
        (*n_omitted)++;
    }
    return MIG2_OK;
}

int mig2_check_compat(const Mig2Profile *src, const Mig2Profile *dst,
                      Mig2DevChoice **choices_out, size_t *n_choices,
                      Mig2OmittedSubsection **omitted, size_t *n_omitted,
                      Mig2Error *err)
{
    DevIndex si = { 0 }, di = { 0 };
    Mig2DevChoice *choices = NULL;
    size_t cap_omitted = 0, i;
    char a[40], b[40];
    int rc = MIG2_OK;

    *choices_out = NULL;
    *omitted = NULL;
    *n_choices = *n_omitted = 0;

    if (strcmp(src->machine, dst->machine) != 0) {
        rc = mig2_error_add(err, MIG2_PROB_MACHINE, "machine", dst->machine,
                            src->machine);
    }
    if (!rc && src->page_size != dst->page_size) {
        snprintf(a, sizeof(a), "%" PRIu32, dst->page_size);
        snprintf(b, sizeof(b), "%" PRIu32, src->page_size);
        rc = mig2_error_add(err, MIG2_PROB_PAGE_SIZE, "page-size", a, b);
    }
    if (!rc) {
        rc = check_ram(src, dst, err);
    }
    if (rc) {
        return rc;
    }

    choices = malloc((src->n_devices ? src->n_devices : 1) *
                     sizeof(*choices));
    if (!choices) {
        rc = MIG2_ERR_NOMEM;
        goto out;
    }
    if ((rc = dev_index_build(&si, src->devices, src->n_devices,
                              "duplicate in source", err)) ||
        (rc = dev_index_build(&di, dst->devices, dst->n_devices,
                              "duplicate in destination", err))) {
        goto out;
    }
    for (i = 0; i < src->n_devices && !rc; i++) {
        const Mig2Device *s = &src->devices[i];
        const Mig2Device *d = dev_index_find(&di, s);

        if (!d) {
            snprintf(b, sizeof(b), "versions %" PRIu32 "..%" PRIu32, s->vmin,
                     s->vmax);
            rc = mig2_error_addf(err, MIG2_PROB_DEVICE_MISSING,
                                 "devices/%s@%" PRIu32, "absent", b, s->id,
                                 s->instance);
            continue;
        }
        rc = check_device(s, d, choices, n_choices, omitted, n_omitted,
                          &cap_omitted, err);
    }
    for (i = 0; i < dst->n_devices && !rc; i++) {
        const Mig2Device *d = &dst->devices[i];

        if (!dev_index_find(&si, d)) {
            snprintf(a, sizeof(a), "versions %" PRIu32 "..%" PRIu32, d->vmin,
                     d->vmax);
            rc = mig2_error_addf(err, MIG2_PROB_DEVICE_UNEXPECTED,
                                 "devices/%s@%" PRIu32, a, "absent", d->id,
                                 d->instance);
        }
    }
out:
    free(si.slot);
    free(di.slot);
    if (rc) {
        free(choices);
        free(*omitted);
        *omitted = NULL;
        *n_omitted = *n_choices = 0;
        return rc;
    }
    *choices_out = choices;
    return MIG2_OK;
}

int mig2_evaluate_source(const Mig2Profile *src, const Mig2Profile *dst,
                         Mig2Hello *outcomes, Mig2DevChoice **choices,
                         size_t *n_choices, Mig2OmittedSubsection **omitted,
                         size_t *n_omitted, Mig2Error *err)
{
    int rc;

    *choices = NULL;
    *omitted = NULL;
    *n_choices = *n_omitted = 0;
    /* The order of section 9.5: configuration, features, compatibility. */
    if ((rc = mig2_negotiate_config(src, dst, outcomes, err)) ||
        (rc = mig2_check_required_features(dst, src, err)) ||
        (rc = mig2_check_required_features(src, dst, err))) {
        return rc;
    }
    return mig2_check_compat(src, dst, choices, n_choices, omitted,
                             n_omitted, err);
}
