/*
 * libmig2 - error registry and structured errors
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct StatusInfo {
    int code;
    const char *name;
    const char *text;
    bool fatal;
} StatusInfo;

/* One table: code, name, text, and whether the object is now unusable. */
static const StatusInfo status_table[] = {
    { MIG2_OK, "MIG2_OK", "success", false },
    { MIG2_ERR_TRUNCATED, "MIG2_ERR_TRUNCATED",
      "input ended inside a field", false },
    { MIG2_ERR_TRAILING, "MIG2_ERR_TRAILING",
      "unexpected bytes after a complete item", false },
    { MIG2_ERR_TOO_LARGE, "MIG2_ERR_TOO_LARGE",
      "length exceeds its limit", false },
    { MIG2_ERR_BAD_STRING, "MIG2_ERR_BAD_STRING",
      "string is empty, contains NUL or is not UTF-8", false },
    { MIG2_ERR_BAD_VALUE, "MIG2_ERR_BAD_VALUE",
      "field holds an invalid value", false },
    { MIG2_ERR_DUPLICATE, "MIG2_ERR_DUPLICATE",
      "item appears more than once", false },
    { MIG2_ERR_MISSING, "MIG2_ERR_MISSING",
      "mandatory item is missing", false },
    { MIG2_ERR_UNKNOWN_CRITICAL, "MIG2_ERR_UNKNOWN_CRITICAL",
      "peer sent a critical extension this side does not understand",
      true },
    { MIG2_ERR_LIMIT, "MIG2_ERR_LIMIT", "too many items", false },
    { MIG2_ERR_INVALID_ARG, "MIG2_ERR_INVALID_ARG", "invalid argument",
      false },
    { MIG2_ERR_STATE, "MIG2_ERR_STATE", "not valid in the current state",
      false },
    { MIG2_ERR_NOMEM, "MIG2_ERR_NOMEM", "out of memory", true },
    { MIG2_ERR_CRYPTO, "MIG2_ERR_CRYPTO", "hash library failure", true },
    { MIG2_ERR_NOT_MIGRATION, "MIG2_ERR_NOT_MIGRATION",
      "not a migration stream (no QEVM magic)", true },
    { MIG2_ERR_LEGACY_STREAM, "MIG2_ERR_LEGACY_STREAM",
      "peer sent a legacy v3 stream where the v2 handshake was required",
      true },
    { MIG2_ERR_BAD_VERSION, "MIG2_ERR_BAD_VERSION",
      "unsupported migration stream version", true },
    { MIG2_ERR_NO_REVISION, "MIG2_ERR_NO_REVISION",
      "no protocol revision in common with the peer", true },
    { MIG2_ERR_INCOMPATIBLE, "MIG2_ERR_INCOMPATIBLE",
      "source and destination are not compatible", true },
    { MIG2_ERR_TRANSCRIPT, "MIG2_ERR_TRANSCRIPT",
      "handshake transcript mismatch", true },
    { MIG2_ERR_PEER, "MIG2_ERR_PEER", "the peer reported an error", true },
    { MIG2_ERR_PROTOCOL, "MIG2_ERR_PROTOCOL",
      "the peer violated the protocol", true },
};

static const StatusInfo *status_info(int status)
{
    size_t i;

    for (i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++) {
        if (status_table[i].code == status) {
            return &status_table[i];
        }
    }
    return NULL;
}

const char *mig2_status_name(int status)
{
    const StatusInfo *si = status_info(status);

    return si ? si->name : "unknown";
}

const char *mig2_strerror(int status)
{
    const StatusInfo *si = status_info(status);

    return si ? si->text : "unknown error";
}

bool mig2_status_is_fatal(int status)
{
    const StatusInfo *si = status_info(status);

    /* Unknown negative codes are treated as fatal: safest default. */
    return si ? si->fatal : status < 0;
}

static const char *const wire_error_names[] = {
    [MIG2_WIRE_PROTOCOL] = "protocol",
    [MIG2_WIRE_UNSUPPORTED_REVISION] = "unsupported-revision",
    [MIG2_WIRE_UNKNOWN_CRITICAL] = "unknown-critical",
    [MIG2_WIRE_INCOMPATIBLE] = "incompatible",
    [MIG2_WIRE_TRANSCRIPT] = "transcript",
    [MIG2_WIRE_INTERNAL] = "internal",
    [MIG2_WIRE_CANCELLED] = "cancelled",
    [MIG2_WIRE_BUSY] = "busy",
    [MIG2_WIRE_TIMEOUT] = "timeout",
    [MIG2_WIRE_LOAD_FAILED] = "load-failed",
    [MIG2_WIRE_TLS_REQUIRED] = "tls-required",
};

const char *mig2_wire_error_name(uint32_t code)
{
    if (code < sizeof(wire_error_names) / sizeof(wire_error_names[0]) &&
        wire_error_names[code]) {
        return wire_error_names[code];
    }
    return "unknown";
}

static const char *const problem_names[MIG2_PROB_KIND_COUNT] = {
    [MIG2_PROB_OTHER] = "other",
    [MIG2_PROB_REVISION] = "revision",
    [MIG2_PROB_FEATURE_REQUIRED] = "feature-required",
    [MIG2_PROB_MACHINE] = "machine",
    [MIG2_PROB_PAGE_SIZE] = "page-size",
    [MIG2_PROB_RAM_BLOCK_MISSING] = "ram-block-missing",
    [MIG2_PROB_RAM_BLOCK_UNEXPECTED] = "ram-block-unexpected",
    [MIG2_PROB_RAM_BLOCK_SIZE] = "ram-block-size",
    [MIG2_PROB_RAM_BLOCK_PAGE_SIZE] = "ram-block-page-size",
    [MIG2_PROB_DEVICE_MISSING] = "device-missing",
    [MIG2_PROB_DEVICE_UNEXPECTED] = "device-unexpected",
    [MIG2_PROB_DEVICE_VERSION] = "device-version",
    [MIG2_PROB_SUBSECTION_UNKNOWN] = "subsection-unknown",
    [MIG2_PROB_CONFIG_UNKNOWN] = "config-unknown",
    [MIG2_PROB_CONFIG_REFUSED] = "config-refused",
    [MIG2_PROB_CONFIG_CLAMPED] = "config-clamped",
    [MIG2_PROB_CONFIG_TYPE] = "config-type",
    [MIG2_PROB_MALFORMED] = "malformed",
    [MIG2_PROB_UNKNOWN_CRITICAL] = "unknown-critical",
    [MIG2_PROB_TRANSCRIPT] = "transcript",
    [MIG2_PROB_CHOICE] = "choice",
};

const char *mig2_problem_kind_name(unsigned kind)
{
    if (kind < MIG2_PROB_KIND_COUNT && problem_names[kind]) {
        return problem_names[kind];
    }
    return "unknown";
}

void mig2_error_clear(Mig2Error *err)
{
    size_t i;

    if (!err) {
        return;
    }
    for (i = 0; i < err->n_problems; i++) {
        free(err->problems[i].path);
        free(err->problems[i].expected);
        free(err->problems[i].actual);
    }
    free(err->problems);
    free(err->message);
    memset(err, 0, sizeof(*err));
}

int mig2_error_set(Mig2Error *err, uint32_t code, bool retryable,
                   const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return MIG2_ERR_NOMEM;
    }
    free(err->message);
    err->message = msg;
    err->code = code;
    err->retryable = retryable;
    return MIG2_OK;
}

int mig2_error_add(Mig2Error *err, unsigned kind, const char *path,
                   const char *expected, const char *actual)
{
    Mig2Problem *pr;
    size_t cap = err->n_problems;

    if (err->n_problems >= MIG2_MAX_PROBLEMS) {
        err->n_dropped++;
        return MIG2_OK;
    }
    /* Problems are rare; grow one at a time to keep the code simple. */
    pr = realloc(err->problems, (cap + 1) * sizeof(*pr));
    if (!pr) {
        return MIG2_ERR_NOMEM;
    }
    err->problems = pr;
    pr = &err->problems[err->n_problems];
    pr->kind = kind;
    pr->path = strdup(path);
    pr->expected = strdup(expected);
    pr->actual = strdup(actual);
    if (!pr->path || !pr->expected || !pr->actual) {
        free(pr->path);
        free(pr->expected);
        free(pr->actual);
        return MIG2_ERR_NOMEM;
    }
    err->n_problems++;
    return MIG2_OK;
}

int mig2_error_addf(Mig2Error *err, unsigned kind, const char *path_fmt,
                    const char *expected, const char *actual, ...)
{
    va_list ap;
    char *path;
    int n, rc;

    va_start(ap, actual);
    n = vasprintf(&path, path_fmt, ap);
    va_end(ap);
    if (n < 0) {
        return MIG2_ERR_NOMEM;
    }
    rc = mig2_error_add(err, kind, path, expected, actual);
    free(path);
    return rc;
}

char *mig2_error_format(const Mig2Error *err)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    size_t i;

    if (!f) {
        return NULL;
    }
    /* Unknown codes and kinds are shown as numbers (spec 10.5). */
    if (strcmp(mig2_wire_error_name(err->code), "unknown") == 0) {
        fprintf(f, "%s error (error code %" PRIu32 "%s): %s",
                err->from_peer ? "peer" : "local", err->code,
                err->retryable ? ", retryable" : "",
                err->message ? err->message : "");
    } else {
        fprintf(f, "%s error (%s%s): %s", err->from_peer ? "peer" : "local",
                mig2_wire_error_name(err->code),
                err->retryable ? ", retryable" : "",
                err->message ? err->message : "");
    }
    for (i = 0; i < err->n_problems; i++) {
        const Mig2Problem *pr = &err->problems[i];

        if (pr->kind < MIG2_PROB_KIND_COUNT && problem_names[pr->kind]) {
            fprintf(f, "\n  %s", problem_names[pr->kind]);
        } else {
            fprintf(f, "\n  kind %u", (unsigned)pr->kind);
        }
        fprintf(f, ": %s: expected %s, got %s", pr->path, pr->expected,
                pr->actual);
    }
    if (err->n_dropped) {
        fprintf(f, "\n  ... and %zu more problems", err->n_dropped);
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* Summarise problems as the ERROR message: count and the first one. */
void mig2_problems_message(Mig2Error *err, const char *who)
{
    if (err->n_problems == 0) {
        return;
    }
    mig2_error_set(err, MIG2_WIRE_INCOMPATIBLE, false,
                   "%s found %zu problem%s; first: %s %s: expected %s, got %s",
                   who, err->n_problems + err->n_dropped,
                   err->n_problems + err->n_dropped == 1 ? "" : "s",
                   mig2_problem_kind_name(err->problems[0].kind),
                   err->problems[0].path, err->problems[0].expected,
                   err->problems[0].actual);
}
