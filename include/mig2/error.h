/*
 * libmig2 - error registry
 *
 * Two families of codes live here:
 *  - local result codes (Mig2Status, negative ints) returned by every
 *    libmig2 function;
 *  - wire error codes (Mig2WireError) and problem kinds (Mig2ProblemKind)
 *    carried in ERROR frames, registered in docs/protocol.md.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_ERROR_H
#define MIG2_ERROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Local result codes.  0 is success; every failure is negative.  Codes at
 * or below MIG2_ERR_FATAL_BELOW mean the object that returned them is
 * unusable and must be freed.
 */
typedef enum Mig2Status {
    MIG2_OK = 0,
    MIG2_ERR_TRUNCATED = -1,        /* input ended inside a field */
    MIG2_ERR_TRAILING = -2,         /* bytes left after a complete item */
    MIG2_ERR_TOO_LARGE = -3,        /* a length exceeds its bound */
    MIG2_ERR_BAD_STRING = -4,       /* empty, NUL inside, or not UTF-8 */
    MIG2_ERR_BAD_VALUE = -5,        /* a field holds a value it cannot */
    MIG2_ERR_DUPLICATE = -6,        /* a once-only TLV or name repeated */
    MIG2_ERR_MISSING = -7,          /* a mandatory TLV is absent */
    MIG2_ERR_UNKNOWN_CRITICAL = -8, /* critical TLV or frame not understood */
    MIG2_ERR_LIMIT = -9,            /* too many items of one kind */
    MIG2_ERR_INVALID_ARG = -10,     /* caller passed something unusable */
    MIG2_ERR_STATE = -11,           /* call or frame not valid now */
    MIG2_ERR_NOMEM = -12,           /* allocation failed */
    MIG2_ERR_CRYPTO = -13,          /* the hash library failed */
    MIG2_ERR_NOT_MIGRATION = -14,   /* first bytes are not QEVM */
    MIG2_ERR_LEGACY_STREAM = -15,   /* QEVM v3 where v4 was required */
    MIG2_ERR_BAD_VERSION = -16,     /* QEVM with an unknown version */
    MIG2_ERR_NO_REVISION = -17,     /* no common protocol revision */
    MIG2_ERR_INCOMPATIBLE = -18,    /* compatibility check found problems */
    MIG2_ERR_TRANSCRIPT = -19,      /* FINISHED did not match transcript */
    MIG2_ERR_PEER = -20,            /* the peer sent an ERROR frame */
    MIG2_ERR_PROTOCOL = -21,        /* peer broke the protocol otherwise */
} Mig2Status;

/* Number of local codes, for iterating the registry in tests. */
#define MIG2_STATUS_COUNT 22

/* Short constant-like name, e.g. "MIG2_ERR_TRUNCATED"; "unknown" if none. */
const char *mig2_status_name(int status);
/* One-line English description; never NULL. */
const char *mig2_strerror(int status);
/*
 * True when @status leaves the returning object unusable (every failure of
 * the handshake engine is fatal; codec errors are not, the caller simply
 * discards the input).
 */
bool mig2_status_is_fatal(int status);

/* Wire error codes (ERROR frame, be32).  Registry: docs/protocol.md 17.2. */
typedef enum Mig2WireError {
    MIG2_WIRE_PROTOCOL = 1,         /* malformed or unexpected frame */
    MIG2_WIRE_UNSUPPORTED_REVISION = 2,
    MIG2_WIRE_UNKNOWN_CRITICAL = 3,
    MIG2_WIRE_INCOMPATIBLE = 4,     /* problems list says what */
    MIG2_WIRE_TRANSCRIPT = 5,       /* FINISHED verify data mismatch */
    MIG2_WIRE_INTERNAL = 6,
    MIG2_WIRE_CANCELLED = 7,
    MIG2_WIRE_BUSY = 8,             /* another migration holds the endpoint */
    MIG2_WIRE_TIMEOUT = 9,
    MIG2_WIRE_LOAD_FAILED = 10,     /* later phases: state did not load */
    MIG2_WIRE_TLS_REQUIRED = 11,    /* the destination refuses plaintext */
} Mig2WireError;

/* Name such as "incompatible"; "unknown" for unregistered codes. */
const char *mig2_wire_error_name(uint32_t code);

/* Problem kinds (be16 in a PROBLEM TLV).  Registry: docs/protocol.md 17.3. */
typedef enum Mig2ProblemKind {
    MIG2_PROB_OTHER = 0,
    MIG2_PROB_REVISION = 1,
    MIG2_PROB_FEATURE_REQUIRED = 2,
    MIG2_PROB_MACHINE = 3,
    MIG2_PROB_PAGE_SIZE = 4,
    MIG2_PROB_RAM_BLOCK_MISSING = 5,
    MIG2_PROB_RAM_BLOCK_UNEXPECTED = 6,
    MIG2_PROB_RAM_BLOCK_SIZE = 7,
    MIG2_PROB_RAM_BLOCK_PAGE_SIZE = 8,
    MIG2_PROB_DEVICE_MISSING = 9,
    MIG2_PROB_DEVICE_UNEXPECTED = 10,
    MIG2_PROB_DEVICE_VERSION = 11,
    MIG2_PROB_SUBSECTION_UNKNOWN = 12,
    MIG2_PROB_CONFIG_UNKNOWN = 13,
    MIG2_PROB_CONFIG_REFUSED = 14,
    MIG2_PROB_CONFIG_CLAMPED = 15,
    MIG2_PROB_CONFIG_TYPE = 16,
    MIG2_PROB_MALFORMED = 17,
    MIG2_PROB_UNKNOWN_CRITICAL = 18,
    MIG2_PROB_TRANSCRIPT = 19,
    MIG2_PROB_CHOICE = 20,          /* destination chose outside the offer */
} Mig2ProblemKind;

#define MIG2_PROB_KIND_COUNT 21

/* Name such as "device-version"; "unknown" for unregistered kinds. */
const char *mig2_problem_kind_name(unsigned kind);

/* One mismatch: where it is, what one side has, what the other has. */
typedef struct Mig2Problem {
    uint16_t kind;          /* Mig2ProblemKind, or an unknown peer value */
    char *path;             /* e.g. "devices/timer@0/version" */
    char *expected;         /* what the side that found it can accept */
    char *actual;           /* what the other side offered */
} Mig2Problem;

/*
 * A structured error: produced locally (from_peer false) and sent in an
 * ERROR frame, or decoded from a peer's ERROR frame (from_peer true).
 */
typedef struct Mig2Error {
    uint32_t code;          /* Mig2WireError */
    bool retryable;
    bool from_peer;
    char *message;          /* UTF-8, never NULL once set */
    size_t n_problems;
    Mig2Problem *problems;
    size_t n_dropped;       /* problems beyond MIG2_MAX_PROBLEMS, not kept */
} Mig2Error;

/* Release everything @err owns and zero it. */
void mig2_error_clear(Mig2Error *err);

/*
 * Render @err as text, one problem per line, into a newly allocated
 * string the caller frees.  Returns NULL only on allocation failure.
 */
char *mig2_error_format(const Mig2Error *err);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_ERROR_H */
