/*
 * libmig2 - endpoint profile
 *
 * A profile describes one endpoint to the handshake: the protocol
 * revisions and features it implements, its build string, its machine,
 * RAM blocks and devices (the manifest), the configuration it proposes
 * (source) and the policy it applies to a proposal (destination).
 *
 * A profile is plain data; the engine copies what it needs, so a profile
 * may be freed or reused once mig2_engine_new() returned.
 *
 * Every setter returns MIG2_OK or a negative Mig2Status:
 *   MIG2_ERR_INVALID_ARG  NULL or out-of-range argument
 *   MIG2_ERR_BAD_STRING   name empty, longer than 255 bytes, not UTF-8
 *   MIG2_ERR_DUPLICATE    name (or device id + instance) already present
 *   MIG2_ERR_LIMIT        more items than the wire allows
 *   MIG2_ERR_NOMEM        allocation failed
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_PROFILE_H
#define MIG2_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mig2/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Mig2Profile Mig2Profile;

/*
 * A new profile with: revisions MIG2_REVISION_MIN..MAX, no features,
 * build "libmig2 <version>", machine unset, page size 4096, no RAM, no
 * devices, no proposal, no policy, all registered config names known.
 * Returns NULL on allocation failure.
 */
Mig2Profile *mig2_profile_new(void);
void mig2_profile_free(Mig2Profile *p);

/* Revision range; both within MIG2_REVISION_MIN..MIG2_REVISION_MAX. */
int mig2_profile_set_revisions(Mig2Profile *p, uint16_t min, uint16_t max);
/* Free-form build identification, 1..4096 bytes of UTF-8. */
int mig2_profile_set_build(Mig2Profile *p, const char *build);
/*
 * Announce feature @id (any value but 0 and grease).  With @required the
 * handshake fails when the peer lacks it.
 */
int mig2_profile_add_feature(Mig2Profile *p, uint16_t id, bool required);
/* Machine type name, e.g. "pc-i440fx-7.2". */
int mig2_profile_set_machine(Mig2Profile *p, const char *machine);
/* Target page size in bytes: a power of two from 512 to 1 GiB. */
int mig2_profile_set_page_size(Mig2Profile *p, uint32_t page_size);
/* RAM block: unique name, size in bytes, page size (power of two). */
int mig2_profile_add_ram_block(Mig2Profile *p, const char *name,
                               uint64_t size, uint32_t page_size);
/*
 * Device @id / @instance with the state versions it can produce (source)
 * or accept (destination), @vmin <= @vmax.  On success returns the
 * device's index (>= 0) for mig2_profile_add_subsection().
 */
int mig2_profile_add_device(Mig2Profile *p, const char *id,
                            uint32_t instance, uint32_t vmin, uint32_t vmax);
/*
 * Subsection @name of device @dev.  For a source, @needed says the
 * subsection must be sent (its .needed condition holds now); a destination
 * passes false.
 */
int mig2_profile_add_subsection(Mig2Profile *p, int dev, const char *name,
                                bool needed);

/*
 * Source: propose a configuration item.  @flags may hold
 * MIG2_CONFIG_REQUIRED: the migration must not go ahead unless the
 * destination accepts the value unchanged.  Setting a name twice replaces
 * the earlier value.
 */
int mig2_profile_propose_bool(Mig2Profile *p, const char *name, bool v,
                              unsigned flags);
int mig2_profile_propose_u64(Mig2Profile *p, const char *name, uint64_t v,
                             unsigned flags);
int mig2_profile_propose_str(Mig2Profile *p, const char *name,
                             const char *v, unsigned flags);

/* Propose an item of any type (@v->s is copied); as the typed setters. */
int mig2_profile_propose(Mig2Profile *p, const char *name,
                         const Mig2ConfigValue *v, unsigned flags);

/*
 * Destination policy.  clamp: a u64 item above @max is lowered to @max.
 * refuse: the item falls back to its default (a capability is turned off).
 * Setting policy for a name twice replaces the earlier rule.
 */
int mig2_profile_policy_clamp(Mig2Profile *p, const char *name, uint64_t max);
int mig2_profile_policy_refuse(Mig2Profile *p, const char *name);

/*
 * Destination: restrict the config names it knows to the ones passed to
 * this call (an older build knows fewer).  @name must be registered.  The
 * first call empties the default "all registered names" set.
 */
int mig2_profile_know_config(Mig2Profile *p, const char *name);

/* A deep copy of @p, or NULL on allocation failure. */
Mig2Profile *mig2_profile_dup(const Mig2Profile *p);

/* Read-back helpers (tests, tools). */
size_t mig2_profile_device_count(const Mig2Profile *p);
size_t mig2_profile_ram_block_count(const Mig2Profile *p);

/*
 * Read-back of a profile or of a decoded manifest (mig2/manifest.h).
 * Strings point into @p.  The indexed getters return false when @i (or
 * @dev, @j) is out of range; out-pointers may be NULL.
 */
void mig2_profile_revisions(const Mig2Profile *p, uint16_t *min,
                            uint16_t *max);
const char *mig2_profile_build(const Mig2Profile *p);     /* NULL: none */
const char *mig2_profile_machine(const Mig2Profile *p);
uint32_t mig2_profile_page_size(const Mig2Profile *p);
size_t mig2_profile_feature_count(const Mig2Profile *p);
bool mig2_profile_feature(const Mig2Profile *p, size_t i, uint16_t *id,
                          bool *required);
bool mig2_profile_ram_block(const Mig2Profile *p, size_t i,
                            const char **name, uint64_t *size,
                            uint32_t *page_size);
bool mig2_profile_device(const Mig2Profile *p, size_t i, const char **id,
                         uint32_t *instance, uint32_t *vmin, uint32_t *vmax);
size_t mig2_profile_subsection_count(const Mig2Profile *p, size_t dev);
bool mig2_profile_subsection(const Mig2Profile *p, size_t dev, size_t j,
                             const char **name, bool *needed);
size_t mig2_profile_config_count(const Mig2Profile *p);
/* @v->s points into @p; @flags gets MIG2_CONFIG_REQUIRED when set. */
bool mig2_profile_config(const Mig2Profile *p, size_t i, const char **name,
                         Mig2ConfigValue *v, unsigned *flags);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_PROFILE_H */
