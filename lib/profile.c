/*
 * libmig2 - endpoint profiles
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GROW(arr, n, cap) \
    mig2_grow((void **)&(arr), &(cap), (n) + 1, sizeof(*(arr)))

static bool name_ok(const char *s)
{
    size_t n;

    if (!s) {
        return false;
    }
    n = strlen(s);
    return n >= 1 && n <= MIG2_MAX_NAME && mig2_utf8_valid(s, n);
}

static bool pow2_in(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

Mig2Profile *mig2_profile_new(void)
{
    Mig2Profile *p = calloc(1, sizeof(*p));

    if (!p) {
        return NULL;
    }
    p->rev_min = MIG2_REVISION_MIN;
    p->rev_max = MIG2_REVISION_MAX;
    p->page_size = 4096;
    p->build = strdup("libmig2 " MIG2_VERSION_STRING);
    if (!p->build) {
        free(p);
        return NULL;
    }
    return p;
}

static void device_free(Mig2Device *d)
{
    size_t i;

    for (i = 0; i < d->n_subs; i++) {
        free(d->subs[i].name);
    }
    free(d->subs);
    free(d->id);
}

void mig2_profile_free(Mig2Profile *p)
{
    size_t i;

    if (!p) {
        return;
    }
    for (i = 0; i < p->n_ram; i++) {
        free(p->ram[i].name);
    }
    for (i = 0; i < p->n_devices; i++) {
        device_free(&p->devices[i]);
    }
    for (i = 0; i < p->n_config; i++) {
        free(p->config[i].name);
        free((char *)p->config[i].v.s);
    }
    for (i = 0; i < p->n_policy; i++) {
        free(p->policy[i].name);
    }
    free(p->features);
    free(p->ram);
    free(p->devices);
    free(p->config);
    free(p->policy);
    free(p->known);
    free(p->build);
    free(p->machine);
    free(p);
}

int mig2_profile_set_revisions(Mig2Profile *p, uint16_t min, uint16_t max)
{
    if (!p || min < MIG2_REVISION_MIN || max > MIG2_REVISION_MAX ||
        min > max) {
        return MIG2_ERR_INVALID_ARG;
    }
    p->rev_min = min;
    p->rev_max = max;
    return MIG2_OK;
}

static int set_string(char **dst, const char *s, size_t max)
{
    char *d;
    size_t n;

    if (!s) {
        return MIG2_ERR_INVALID_ARG;
    }
    n = strlen(s);
    if (n == 0 || n > max || !mig2_utf8_valid(s, n)) {
        return MIG2_ERR_BAD_STRING;
    }
    d = strdup(s);
    if (!d) {
        return MIG2_ERR_NOMEM;
    }
    free(*dst);
    *dst = d;
    return MIG2_OK;
}

int mig2_profile_set_build(Mig2Profile *p, const char *build)
{
    return p ? set_string(&p->build, build, MIG2_MAX_STR16)
             : MIG2_ERR_INVALID_ARG;
}

int mig2_profile_set_machine(Mig2Profile *p, const char *machine)
{
    return p ? set_string(&p->machine, machine, MIG2_MAX_NAME)
             : MIG2_ERR_INVALID_ARG;
}

int mig2_profile_add_feature(Mig2Profile *p, uint16_t id, bool required)
{
    size_t i;

    if (!p || id == 0 || mig2_is_grease(id)) {
        return MIG2_ERR_INVALID_ARG;
    }
    for (i = 0; i < p->n_features; i++) {
        if (p->features[i].id == id) {
            return MIG2_ERR_DUPLICATE;
        }
    }
    if (p->n_features >= MIG2_MAX_FEATURES) {
        return MIG2_ERR_LIMIT;
    }
    if (GROW(p->features, p->n_features, p->cap_features)) {
        return MIG2_ERR_NOMEM;
    }
    p->features[p->n_features].id = id;
    p->features[p->n_features].required = required;
    p->n_features++;
    return MIG2_OK;
}

int mig2_profile_set_page_size(Mig2Profile *p, uint32_t page_size)
{
    if (!p || !pow2_in(page_size, 512, 1U << 30)) {
        return MIG2_ERR_INVALID_ARG;
    }
    p->page_size = page_size;
    return MIG2_OK;
}

int mig2_profile_add_ram_block(Mig2Profile *p, const char *name,
                               uint64_t size, uint32_t page_size)
{
    size_t i;
    char *n;

    if (!p || !pow2_in(page_size, 512, 1U << 30)) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (!name_ok(name)) {
        return MIG2_ERR_BAD_STRING;
    }
    for (i = 0; i < p->n_ram; i++) {
        if (strcmp(p->ram[i].name, name) == 0) {
            return MIG2_ERR_DUPLICATE;
        }
    }
    if (p->n_ram >= MIG2_MAX_RAM_BLOCKS) {
        return MIG2_ERR_LIMIT;
    }
    if (GROW(p->ram, p->n_ram, p->cap_ram) || !(n = strdup(name))) {
        return MIG2_ERR_NOMEM;
    }
    p->ram[p->n_ram].name = n;
    p->ram[p->n_ram].size = size;
    p->ram[p->n_ram].page_size = page_size;
    p->n_ram++;
    return MIG2_OK;
}

/*
 * Duplicate devices are found by the compatibility check's sorted index,
 * not here: a linear scan per add would make a 10,000-device profile
 * quadratic.
 */
int mig2_profile_take_device(Mig2Profile *p, char *id, uint32_t instance,
                             uint32_t vmin, uint32_t vmax)
{
    Mig2Device *d;

    if (!id) {
        return MIG2_ERR_NOMEM;
    }
    if (p->n_devices >= MIG2_MAX_DEVICES) {
        free(id);
        return MIG2_ERR_LIMIT;
    }
    if (GROW(p->devices, p->n_devices, p->cap_devices)) {
        free(id);
        return MIG2_ERR_NOMEM;
    }
    d = &p->devices[p->n_devices];
    memset(d, 0, sizeof(*d));
    d->id = id;
    d->instance = instance;
    d->vmin = vmin;
    d->vmax = vmax;
    return (int)p->n_devices++;
}

int mig2_profile_add_device(Mig2Profile *p, const char *id,
                            uint32_t instance, uint32_t vmin, uint32_t vmax)
{
    if (!p || vmin > vmax) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (!name_ok(id)) {
        return MIG2_ERR_BAD_STRING;
    }
    if (p->n_devices >= MIG2_MAX_DEVICES) {
        return MIG2_ERR_LIMIT;
    }
    return mig2_profile_take_device(p, strdup(id), instance, vmin, vmax);
}

int mig2_profile_add_subsection(Mig2Profile *p, int dev, const char *name,
                                bool needed)
{
    Mig2Device *d;
    size_t i;
    char *n;

    if (!p || dev < 0 || (size_t)dev >= p->n_devices) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (!name_ok(name)) {
        return MIG2_ERR_BAD_STRING;
    }
    d = &p->devices[dev];
    for (i = 0; i < d->n_subs; i++) {
        if (strcmp(d->subs[i].name, name) == 0) {
            return MIG2_ERR_DUPLICATE;
        }
    }
    if (d->n_subs >= MIG2_MAX_SUBSECTIONS) {
        return MIG2_ERR_LIMIT;
    }
    if (GROW(d->subs, d->n_subs, d->cap_subs) || !(n = strdup(name))) {
        return MIG2_ERR_NOMEM;
    }
    d->subs[d->n_subs].name = n;
    d->subs[d->n_subs].needed = needed;
    d->n_subs++;
    return MIG2_OK;
}

int mig2_profile_add_config(Mig2Profile *p, const char *name,
                            const Mig2ConfigValue *v, unsigned flags)
{
    Mig2ConfigItem *it = NULL;
    char *s = NULL;
    size_t i;

    if (!p || !v || flags & ~MIG2_CONFIG_REQUIRED || v->type > MIG2_CFG_STR) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (!name_ok(name)) {
        return MIG2_ERR_BAD_STRING;
    }
    if (v->type == MIG2_CFG_STR) {
        size_t n = v->s ? strlen(v->s) : 0;

        if (n == 0 || n > MIG2_MAX_STR16 || !mig2_utf8_valid(v->s, n)) {
            return MIG2_ERR_BAD_STRING;
        }
        if (!(s = strdup(v->s))) {
            return MIG2_ERR_NOMEM;
        }
    }
    for (i = 0; i < p->n_config; i++) {
        if (strcmp(p->config[i].name, name) == 0) {
            it = &p->config[i];
            free((char *)it->v.s);
            break;
        }
    }
    if (!it) {
        if (p->n_config >= MIG2_MAX_CONFIG) {
            free(s);
            return MIG2_ERR_LIMIT;
        }
        if (GROW(p->config, p->n_config, p->cap_config)) {
            free(s);
            return MIG2_ERR_NOMEM;
        }
        it = &p->config[p->n_config];
        if (!(it->name = strdup(name))) {
            free(s);
            return MIG2_ERR_NOMEM;
        }
        p->n_config++;
    }
    it->v = *v;
    it->v.b = v->type == MIG2_CFG_BOOL ? v->b : false;
    it->v.u = v->type == MIG2_CFG_U64 ? v->u : 0;
    it->v.s = s;
    it->flags = (uint8_t)flags;
    return MIG2_OK;
}

int mig2_profile_propose(Mig2Profile *p, const char *name,
                         const Mig2ConfigValue *v, unsigned flags)
{
    return mig2_profile_add_config(p, name, v, flags);
}

int mig2_profile_propose_bool(Mig2Profile *p, const char *name, bool v,
                              unsigned flags)
{
    Mig2ConfigValue cv = { .type = MIG2_CFG_BOOL, .b = v };

    return mig2_profile_add_config(p, name, &cv, flags);
}

int mig2_profile_propose_u64(Mig2Profile *p, const char *name, uint64_t v,
                             unsigned flags)
{
    Mig2ConfigValue cv = { .type = MIG2_CFG_U64, .u = v };

    return mig2_profile_add_config(p, name, &cv, flags);
}

int mig2_profile_propose_str(Mig2Profile *p, const char *name,
                             const char *v, unsigned flags)
{
    Mig2ConfigValue cv = { .type = MIG2_CFG_STR, .s = v };

    return mig2_profile_add_config(p, name, &cv, flags);
}

static int set_policy(Mig2Profile *p, const char *name, Mig2PolicyKind kind,
                      uint64_t max)
{
    Mig2Policy *pol = NULL;
    size_t i;

    if (!p) {
        return MIG2_ERR_INVALID_ARG;
    }
    if (!name_ok(name)) {
        return MIG2_ERR_BAD_STRING;
    }
    for (i = 0; i < p->n_policy; i++) {
        if (strcmp(p->policy[i].name, name) == 0) {
            pol = &p->policy[i];
            break;
        }
    }
    if (!pol) {
        if (p->n_policy >= MIG2_MAX_CONFIG) {
            return MIG2_ERR_LIMIT;
        }
        if (GROW(p->policy, p->n_policy, p->cap_policy)) {
            return MIG2_ERR_NOMEM;
        }
        pol = &p->policy[p->n_policy];
        if (!(pol->name = strdup(name))) {
            return MIG2_ERR_NOMEM;
        }
        p->n_policy++;
    }
    pol->kind = kind;
    pol->max = max;
    return MIG2_OK;
}

int mig2_profile_policy_clamp(Mig2Profile *p, const char *name, uint64_t max)
{
    const Mig2ConfigDef *def = mig2_config_registry_find(name);

    /* Clamping only makes sense for numbers. */
    if (def && def->type != MIG2_CFG_U64) {
        return MIG2_ERR_INVALID_ARG;
    }
    return set_policy(p, name, MIG2_POLICY_CLAMP, max);
}

int mig2_profile_policy_refuse(Mig2Profile *p, const char *name)
{
    return set_policy(p, name, MIG2_POLICY_REFUSE, 0);
}

int mig2_profile_know_config(Mig2Profile *p, const char *name)
{
    const Mig2ConfigDef *def = mig2_config_registry_find(name);
    size_t i;

    if (!p || !def) {
        return MIG2_ERR_INVALID_ARG;
    }
    p->known_restricted = true;
    for (i = 0; i < p->n_known; i++) {
        if (p->known[i] == def) {
            return MIG2_ERR_DUPLICATE;
        }
    }
    if (GROW(p->known, p->n_known, p->cap_known)) {
        return MIG2_ERR_NOMEM;
    }
    p->known[p->n_known++] = def;
    return MIG2_OK;
}

const Mig2ConfigDef *mig2_profile_known(const Mig2Profile *p,
                                        const char *name)
{
    const Mig2ConfigDef *def = mig2_config_registry_find(name);
    size_t i;

    if (!def || !p->known_restricted) {
        return def;
    }
    for (i = 0; i < p->n_known; i++) {
        if (p->known[i] == def) {
            return def;
        }
    }
    return NULL;
}

const Mig2Policy *mig2_profile_policy(const Mig2Profile *p, const char *name)
{
    size_t i;

    for (i = 0; i < p->n_policy; i++) {
        if (strcmp(p->policy[i].name, name) == 0) {
            return &p->policy[i];
        }
    }
    return NULL;
}

size_t mig2_profile_device_count(const Mig2Profile *p)
{
    return p ? p->n_devices : 0;
}

size_t mig2_profile_ram_block_count(const Mig2Profile *p)
{
    return p ? p->n_ram : 0;
}

void mig2_profile_revisions(const Mig2Profile *p, uint16_t *min,
                            uint16_t *max)
{
    *min = p->rev_min;
    *max = p->rev_max;
}

const char *mig2_profile_build(const Mig2Profile *p)
{
    return p->build;
}

const char *mig2_profile_machine(const Mig2Profile *p)
{
    return p->machine;
}

uint32_t mig2_profile_page_size(const Mig2Profile *p)
{
    return p->page_size;
}

size_t mig2_profile_feature_count(const Mig2Profile *p)
{
    return p->n_features;
}

bool mig2_profile_feature(const Mig2Profile *p, size_t i, uint16_t *id,
                          bool *required)
{
    if (i >= p->n_features) {
        return false;
    }
    if (id) {
        *id = p->features[i].id;
    }
    if (required) {
        *required = p->features[i].required;
    }
    return true;
}

bool mig2_profile_ram_block(const Mig2Profile *p, size_t i,
                            const char **name, uint64_t *size,
                            uint32_t *page_size)
{
    if (i >= p->n_ram) {
        return false;
    }
    if (name) {
        *name = p->ram[i].name;
    }
    if (size) {
        *size = p->ram[i].size;
    }
    if (page_size) {
        *page_size = p->ram[i].page_size;
    }
    return true;
}

bool mig2_profile_device(const Mig2Profile *p, size_t i, const char **id,
                         uint32_t *instance, uint32_t *vmin, uint32_t *vmax)
{
    const Mig2Device *d;

    if (i >= p->n_devices) {
        return false;
    }
    d = &p->devices[i];
    if (id) {
        *id = d->id;
    }
    if (instance) {
        *instance = d->instance;
    }
    if (vmin) {
        *vmin = d->vmin;
    }
    if (vmax) {
        *vmax = d->vmax;
    }
    return true;
}

size_t mig2_profile_subsection_count(const Mig2Profile *p, size_t dev)
{
    return dev < p->n_devices ? p->devices[dev].n_subs : 0;
}

bool mig2_profile_subsection(const Mig2Profile *p, size_t dev, size_t j,
                             const char **name, bool *needed)
{
    if (dev >= p->n_devices || j >= p->devices[dev].n_subs) {
        return false;
    }
    if (name) {
        *name = p->devices[dev].subs[j].name;
    }
    if (needed) {
        *needed = p->devices[dev].subs[j].needed;
    }
    return true;
}

size_t mig2_profile_config_count(const Mig2Profile *p)
{
    return p->n_config;
}

bool mig2_profile_config(const Mig2Profile *p, size_t i, const char **name,
                         Mig2ConfigValue *v, unsigned *flags)
{
    if (i >= p->n_config) {
        return false;
    }
    if (name) {
        *name = p->config[i].name;
    }
    if (v) {
        *v = p->config[i].v;
    }
    if (flags) {
        *flags = p->config[i].flags;
    }
    return true;
}

Mig2Profile *mig2_profile_dup(const Mig2Profile *p)
{
    Mig2Profile *c = mig2_profile_new();
    size_t i, j;
    int rc = MIG2_OK;

    if (!c) {
        return NULL;
    }
    c->rev_min = p->rev_min;
    c->rev_max = p->rev_max;
    c->page_size = p->page_size;
    if (p->build) {
        rc = set_string(&c->build, p->build, MIG2_MAX_STR16);
    }
    if (p->machine && !rc) {
        rc = set_string(&c->machine, p->machine, MIG2_MAX_NAME);
    }
    for (i = 0; i < p->n_features && !rc; i++) {
        rc = mig2_profile_add_feature(c, p->features[i].id,
                                      p->features[i].required);
    }
    for (i = 0; i < p->n_ram && !rc; i++) {
        rc = mig2_profile_add_ram_block(c, p->ram[i].name, p->ram[i].size,
                                        p->ram[i].page_size);
    }
    for (i = 0; i < p->n_devices && !rc; i++) {
        const Mig2Device *d = &p->devices[i];
        /* Already validated: copy without checking the id again. */
        int idx = mig2_profile_take_device(c, strdup(d->id), d->instance,
                                           d->vmin, d->vmax);

        rc = idx < 0 ? idx : MIG2_OK;
        for (j = 0; j < d->n_subs && !rc; j++) {
            rc = mig2_profile_add_subsection(c, idx, d->subs[j].name,
                                             d->subs[j].needed);
        }
    }
    for (i = 0; i < p->n_config && !rc; i++) {
        rc = mig2_profile_add_config(c, p->config[i].name, &p->config[i].v,
                                     p->config[i].flags);
    }
    for (i = 0; i < p->n_policy && !rc; i++) {
        rc = set_policy(c, p->policy[i].name, p->policy[i].kind,
                        p->policy[i].max);
    }
    for (i = 0; i < p->n_known && !rc; i++) {
        rc = mig2_profile_know_config(c, p->known[i]->name);
    }
    c->known_restricted = p->known_restricted;
    if (rc) {
        mig2_profile_free(c);
        return NULL;
    }
    return c;
}
