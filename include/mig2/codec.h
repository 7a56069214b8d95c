/*
 * libmig2 - codec: bounded big-endian reader and writer, frames and TLVs
 *
 * Stateless building blocks.  A Mig2Reader never reads outside
 * [p, end); every getter consumes exactly its bytes or returns an error
 * and leaves the reader unchanged.  A Mig2Writer grows up to a fixed bound
 * and records its first error, so a sequence of puts is checked once.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef MIG2_CODEC_H
#define MIG2_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Mig2Reader {
    const uint8_t *p;
    const uint8_t *end;
} Mig2Reader;

/* Point @rd at @len bytes of @buf (which may be NULL when @len is 0). */
void mig2_rd_init(Mig2Reader *rd, const void *buf, size_t len);
/* Bytes left. */
size_t mig2_rd_left(const Mig2Reader *rd);

/* Fixed-width big-endian getters: MIG2_OK or MIG2_ERR_TRUNCATED. */
int mig2_rd_u8(Mig2Reader *rd, uint8_t *v);
int mig2_rd_u16(Mig2Reader *rd, uint16_t *v);
int mig2_rd_u32(Mig2Reader *rd, uint32_t *v);
int mig2_rd_u64(Mig2Reader *rd, uint64_t *v);
/* Copy @n bytes out: MIG2_OK or MIG2_ERR_TRUNCATED. */
int mig2_rd_bytes(Mig2Reader *rd, void *out, size_t n);
/* Skip @n bytes: MIG2_OK or MIG2_ERR_TRUNCATED. */
int mig2_rd_skip(Mig2Reader *rd, size_t n);
/*
 * Split off the next @n bytes as @sub and advance past them:
 * MIG2_OK or MIG2_ERR_TRUNCATED.
 */
int mig2_rd_sub(Mig2Reader *rd, size_t n, Mig2Reader *sub);
/* MIG2_OK when nothing is left, else MIG2_ERR_TRAILING. */
int mig2_rd_end(const Mig2Reader *rd);

/*
 * Strings are UTF-8 without NUL and never empty.  str8 has a u8 length
 * (1..255); str16 a be16 length (1..@max).  @s points into the input and
 * is NOT NUL-terminated.  Returns MIG2_OK, MIG2_ERR_TRUNCATED,
 * MIG2_ERR_TOO_LARGE (str16 over @max) or MIG2_ERR_BAD_STRING.
 */
int mig2_rd_str8(Mig2Reader *rd, const char **s, size_t *len);
int mig2_rd_str16(Mig2Reader *rd, size_t max, const char **s, size_t *len);

/*
 * Read one TLV header and split its value into @value.  @type has the
 * critical bit removed; @critical reports it.  MIG2_OK or
 * MIG2_ERR_TRUNCATED (header or value runs past the end).
 */
int mig2_rd_tlv(Mig2Reader *rd, uint16_t *type, bool *critical,
                Mig2Reader *value);

/* True when @s[0..len) is valid UTF-8 with no NUL and no overlongs. */
bool mig2_utf8_valid(const char *s, size_t len);

typedef struct Mig2Writer {
    uint8_t *buf;
    size_t len;
    size_t cap;
    size_t max;     /* never grows beyond this many bytes */
    int err;        /* first error, MIG2_OK while none */
} Mig2Writer;

/* Start an empty writer that may grow to @max bytes. */
void mig2_wr_init(Mig2Writer *w, size_t max);
/* Free the buffer; the writer may be initialised again. */
void mig2_wr_free(Mig2Writer *w);
/* Hand the buffer to the caller (who frees it) and reset the writer. */
uint8_t *mig2_wr_steal(Mig2Writer *w, size_t *len);
/* The first error (MIG2_ERR_TOO_LARGE, MIG2_ERR_NOMEM, ...) or MIG2_OK. */
int mig2_wr_error(const Mig2Writer *w);

/* Appenders; on error they do nothing but record it in @w->err. */
void mig2_wr_u8(Mig2Writer *w, uint8_t v);
void mig2_wr_u16(Mig2Writer *w, uint16_t v);
void mig2_wr_u32(Mig2Writer *w, uint32_t v);
void mig2_wr_u64(Mig2Writer *w, uint64_t v);
void mig2_wr_bytes(Mig2Writer *w, const void *p, size_t n);
/* Records MIG2_ERR_BAD_STRING / MIG2_ERR_TOO_LARGE for invalid strings. */
void mig2_wr_str8(Mig2Writer *w, const char *s);
void mig2_wr_str16(Mig2Writer *w, const char *s, size_t max);

/*
 * Open a TLV (or a frame) whose length is patched when it is closed.
 * Returns a mark for the matching _end call.  Nesting is allowed.
 */
size_t mig2_wr_tlv_begin(Mig2Writer *w, uint16_t type, bool critical);
void mig2_wr_tlv_end(Mig2Writer *w, size_t mark);
size_t mig2_wr_frame_begin(Mig2Writer *w, uint16_t type, uint16_t flags);
void mig2_wr_frame_end(Mig2Writer *w, size_t mark);

/* A parsed frame header. */
typedef struct Mig2FrameHeader {
    uint16_t type;
    uint16_t flags;
    uint32_t length;
} Mig2FrameHeader;

/*
 * Parse the 8-byte frame header at @p.  Returns MIG2_OK, or
 * MIG2_ERR_TOO_LARGE when the length exceeds @max_payload (*@h is
 * filled in either case, so the caller can name what it refuses).
 */
int mig2_frame_header_parse(const uint8_t *p, size_t max_payload,
                            Mig2FrameHeader *h);
/*
 * Write an 8-byte frame header at @out, for senders that gather a frame
 * from several buffers (writev) instead of building it in a Mig2Writer.
 */
void mig2_frame_header_put(uint8_t *out, uint16_t type, uint16_t flags,
                           uint32_t length);

#ifdef __cplusplus
}
#endif

#endif /* MIG2_CODEC_H */
