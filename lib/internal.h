/*
 * libmig2 - internal declarations shared by the library sources
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_INTERNAL_H
#define MIG2_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mig2/mig2.h"

/* ---- small helpers ---- */

/* Grow *@arr (element size @elem) so that it holds at least @need items. */
int mig2_grow(void **arr, size_t *cap, size_t need, size_t elem);
/* strndup that returns NULL only on allocation failure. */
char *mig2_strndup(const char *s, size_t n);

/* ---- crypto (GnuTLS) ---- */

typedef struct Mig2Hash Mig2Hash;

int mig2_hash_new(Mig2Hash **h);
int mig2_hash_update(Mig2Hash *h, const void *p, size_t n);
/* Digest of everything so far; the hash stays usable. */
int mig2_hash_peek(Mig2Hash *h, uint8_t out[MIG2_HASH_LEN]);
void mig2_hash_free(Mig2Hash *h);
/* HMAC-SHA256 over the concatenation of @n parts. */
int mig2_hmac(const void *key, size_t key_len, const void *const *parts,
              const size_t *lens, size_t n, uint8_t out[MIG2_HASH_LEN]);

/* ---- the profile, also used for a decoded peer manifest ---- */

typedef struct Mig2Subsection {
    char *name;
    bool needed;
} Mig2Subsection;

typedef struct Mig2Device {
    char *id;
    uint32_t instance;
    uint32_t vmin;
    uint32_t vmax;
    Mig2Subsection *subs;
    size_t n_subs;
    size_t cap_subs;
} Mig2Device;

typedef struct Mig2RamBlock {
    char *name;
    uint64_t size;
    uint32_t page_size;
} Mig2RamBlock;

typedef struct Mig2Feature {
    uint16_t id;
    bool required;
} Mig2Feature;

typedef struct Mig2ConfigItem {
    char *name;
    Mig2ConfigValue v;      /* v.s owned (char *) when a string */
    uint8_t flags;
} Mig2ConfigItem;

typedef enum Mig2PolicyKind {
    MIG2_POLICY_CLAMP = 1,
    MIG2_POLICY_REFUSE = 2,
} Mig2PolicyKind;

typedef struct Mig2Policy {
    char *name;
    Mig2PolicyKind kind;
    uint64_t max;
} Mig2Policy;

struct Mig2Profile {
    uint16_t rev_min;
    uint16_t rev_max;
    char *build;
    char *machine;
    uint32_t page_size;
    Mig2Feature *features;
    size_t n_features, cap_features;
    Mig2RamBlock *ram;
    size_t n_ram, cap_ram;
    Mig2Device *devices;
    size_t n_devices, cap_devices;
    Mig2ConfigItem *config;
    size_t n_config, cap_config;
    Mig2Policy *policy;
    size_t n_policy, cap_policy;
    /* Known config names; NULL means "every registered name". */
    const Mig2ConfigDef **known;
    size_t n_known, cap_known;
    bool known_restricted;
};

const Mig2ConfigDef *mig2_profile_known(const Mig2Profile *p,
                                        const char *name);
/*
 * Add a device whose @id is already valid (decoded or copied), taking
 * ownership of it (freed on failure; NULL means allocation failed).
 */
int mig2_profile_take_device(Mig2Profile *p, char *id, uint32_t instance,
                             uint32_t vmin, uint32_t vmax);
const Mig2Policy *mig2_profile_policy(const Mig2Profile *p,
                                      const char *name);
/* Append helpers that take ownership-free copies of already valid data. */
int mig2_profile_add_config(Mig2Profile *p, const char *name,
                            const Mig2ConfigValue *v, unsigned flags);

/* ---- structured errors ---- */

/* Set code/message (printf style) on @err, dropping earlier content. */
int mig2_error_set(Mig2Error *err, uint32_t code, bool retryable,
                   const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/*
 * Append a problem; strings are printf-formatted triples.  Beyond
 * MIG2_MAX_PROBLEMS only n_dropped grows.
 */
int mig2_error_add(Mig2Error *err, unsigned kind, const char *path,
                   const char *expected, const char *actual);
int mig2_error_addf(Mig2Error *err, unsigned kind, const char *path_fmt,
                    const char *expected, const char *actual, ...)
    __attribute__((format(printf, 3, 6)));
/*
 * When @err holds problems: code incompatible and the summary message
 * "<who> found N problems; first: ..." that every side uses.
 */
void mig2_problems_message(Mig2Error *err, const char *who);

/* ---- messages (lib/message.c) ---- */

/* Config results as carried in DST_HELLO. */
typedef struct Mig2ConfigOutcome {
    char *name;
    Mig2ConfigValue final;  /* final.s owned */
    uint8_t status;
} Mig2ConfigOutcome;

/* Everything a HELLO carries besides the manifest in @profile. */
typedef struct Mig2Hello {
    Mig2Profile *profile;   /* revisions, build, features, manifest, config */
    uint8_t nonce[MIG2_NONCE_LEN];
    uint16_t selected;      /* DST_HELLO only */
    Mig2ConfigOutcome *outcomes;
    size_t n_outcomes, cap_outcomes;
} Mig2Hello;

void mig2_hello_clear(Mig2Hello *h);

/*
 * Encode a HELLO frame (@type SRC_HELLO, DST_HELLO or MANIFEST) from @h
 * into @w (MANIFEST: @h->selected is the stream's revision).
 * @grease_seed picks the grease TLV (ignored when @grease is false).
 */
void mig2_hello_encode(Mig2Writer *w, uint16_t type, const Mig2Hello *h,
                       bool grease, uint32_t grease_seed);
/*
 * Decode a HELLO payload.  On failure fills @err (code protocol or
 * unknown-critical, one problem naming the place) and returns
 * MIG2_ERR_PROTOCOL or MIG2_ERR_UNKNOWN_CRITICAL.
 */
int mig2_hello_decode(const uint8_t *p, size_t len, uint16_t type,
                      Mig2Hello *h, Mig2Error *err);


/* Write a grease frame chosen by @seed. */
void mig2_grease_frame(Mig2Writer *w, uint32_t seed);

/* ---- negotiation (lib/negotiate.c): pure functions ---- */

typedef struct Mig2DevChoice {
    const Mig2Device *src;
    uint32_t version;
} Mig2DevChoice;

/* Highest revision in both ranges, or 0. */
uint16_t mig2_negotiate_revision(uint16_t amin, uint16_t amax,
                                 uint16_t bmin, uint16_t bmax);

/* Features in @a that @b lacks (grease never counted); caller frees. */
int mig2_features_minus(const Mig2Profile *a, const Mig2Profile *b,
                        uint16_t **out, size_t *n);
int mig2_features_common(const Mig2Profile *a, const Mig2Profile *b,
                         uint16_t **out, size_t *n);
/* Problems for required features of @a that @b lacks. */
int mig2_check_required_features(const Mig2Profile *a, const Mig2Profile *b,
                                 Mig2Error *err);

/*
 * Destination: decide every proposed item of @src under @dst's policy.
 * Fills @out (one per proposal) and adds problems for REQUIRED items not
 * accepted.
 */
int mig2_negotiate_config(const Mig2Profile *src, const Mig2Profile *dst,
                          Mig2Hello *out, Mig2Error *err);
/* Source: check the destination's outcomes against the proposal. */
int mig2_verify_config(const Mig2Profile *src, const Mig2Hello *dst,
                       Mig2Error *err);

/*
 * The compatibility check.  Adds every problem to @err; fills @choices
 * (one per source device, in order, when no version problem) and
 * @omitted.  Both arrays are allocated; caller frees.
 */
int mig2_check_compat(const Mig2Profile *src, const Mig2Profile *dst,
                      Mig2DevChoice **choices, size_t *n_choices,
                      Mig2OmittedSubsection **omitted, size_t *n_omitted,
                      Mig2Error *err);

/*
 * Everything a destination decides about a source's manifest (spec 8.4):
 * config outcomes into @outcomes, then REQUIRED features both ways, then
 * the compatibility check; every problem goes to @err in the order of
 * section 9.5.  The live handshake and the one-way reader both use it, so
 * the two report identical problems for identical manifests.
 */
int mig2_evaluate_source(const Mig2Profile *src, const Mig2Profile *dst,
                         Mig2Hello *outcomes, Mig2DevChoice **choices,
                         size_t *n_choices, Mig2OmittedSubsection **omitted,
                         size_t *n_omitted, Mig2Error *err);

/* ---- one-way streams (lib/manifest.c) ---- */

/* FINISHED verify data of a one-way stream over @transcript. */
int mig2_oneway_finished(const uint8_t transcript[MIG2_HASH_LEN],
                         uint8_t out[MIG2_HASH_LEN]);
/* SELECTED_REVISION, when the first two TLVs of @p are well formed. */
bool mig2_manifest_peek_revision(const uint8_t *p, size_t len,
                                 uint16_t *selected);
/* Fill @err for a stream revision outside @min..@max; MIG2_ERR_NO_REVISION. */
int mig2_oneway_revision_error(Mig2Error *err, uint16_t min, uint16_t max,
                               uint16_t selected);
/* A copy of @local that implements oneway-manifest. */
int mig2_oneway_local(const Mig2Profile *local, Mig2Profile **out);

#endif /* MIG2_INTERNAL_H */
