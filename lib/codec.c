/*
 * libmig2 - bounded reader and writer
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int mig2_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *p;

    if (need <= *cap) {
        return MIG2_OK;
    }
    ncap = *cap ? *cap : 4;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem) {
            return MIG2_ERR_NOMEM;
        }
        ncap *= 2;
    }
    p = realloc(*arr, ncap * elem);
    if (!p) {
        return MIG2_ERR_NOMEM;
    }
    *arr = p;
    *cap = ncap;
    return MIG2_OK;
}

char *mig2_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

void mig2_rd_init(Mig2Reader *rd, const void *buf, size_t len)
{
    /* NULL (len 0) reads as empty; never do arithmetic on a null pointer. */
    static const uint8_t empty[1];

    rd->p = buf ? buf : empty;
    rd->end = rd->p + (buf ? len : 0);
}

size_t mig2_rd_left(const Mig2Reader *rd)
{
    return (size_t)(rd->end - rd->p);
}

int mig2_rd_u8(Mig2Reader *rd, uint8_t *v)
{
    if (mig2_rd_left(rd) < 1) {
        return MIG2_ERR_TRUNCATED;
    }
    *v = rd->p[0];
    rd->p += 1;
    return MIG2_OK;
}

int mig2_rd_u16(Mig2Reader *rd, uint16_t *v)
{
    if (mig2_rd_left(rd) < 2) {
        return MIG2_ERR_TRUNCATED;
    }
    *v = (uint16_t)(rd->p[0] << 8 | rd->p[1]);
    rd->p += 2;
    return MIG2_OK;
}

int mig2_rd_u32(Mig2Reader *rd, uint32_t *v)
{
    if (mig2_rd_left(rd) < 4) {
        return MIG2_ERR_TRUNCATED;
    }
    *v = (uint32_t)rd->p[0] << 24 | (uint32_t)rd->p[1] << 16 |
         (uint32_t)rd->p[2] << 8 | rd->p[3];
    rd->p += 4;
    return MIG2_OK;
}

int mig2_rd_u64(Mig2Reader *rd, uint64_t *v)
{
    uint64_t r = 0;
    int i;

    if (mig2_rd_left(rd) < 8) {
        return MIG2_ERR_TRUNCATED;
    }
    for (i = 0; i < 8; i++) {
        r = r << 8 | rd->p[i];
    }
    *v = r;
    rd->p += 8;
    return MIG2_OK;
}

int mig2_rd_bytes(Mig2Reader *rd, void *out, size_t n)
{
    if (mig2_rd_left(rd) < n) {
        return MIG2_ERR_TRUNCATED;
    }
    if (n) {
        memcpy(out, rd->p, n);
    }
    rd->p += n;
    return MIG2_OK;
}

int mig2_rd_skip(Mig2Reader *rd, size_t n)
{
    if (mig2_rd_left(rd) < n) {
        return MIG2_ERR_TRUNCATED;
    }
    rd->p += n;
    return MIG2_OK;
}

int mig2_rd_sub(Mig2Reader *rd, size_t n, Mig2Reader *sub)
{
    if (mig2_rd_left(rd) < n) {
        return MIG2_ERR_TRUNCATED;
    }
    sub->p = rd->p;
    sub->end = rd->p + n;
    rd->p += n;
    return MIG2_OK;
}

int mig2_rd_end(const Mig2Reader *rd)
{
    return rd->p == rd->end ? MIG2_OK : MIG2_ERR_TRAILING;
}

bool mig2_utf8_valid(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t n, k;

        if (c == 0) {
            return false;
        } else if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n) {
            return false;
        }
        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        /* Reject overlong forms, surrogates and values past U+10FFFF. */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
            (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

static int rd_str(Mig2Reader *rd, size_t n, const Mig2Reader *undo,
                  const char **s, size_t *len)
{
    if (mig2_rd_left(rd) < n) {
        *rd = *undo;
        return MIG2_ERR_TRUNCATED;
    }
    if (n == 0 || !mig2_utf8_valid((const char *)rd->p, n)) {
        *rd = *undo;
        return MIG2_ERR_BAD_STRING;
    }
    *s = (const char *)rd->p;
    *len = n;
    rd->p += n;
    return MIG2_OK;
}

int mig2_rd_str8(Mig2Reader *rd, const char **s, size_t *len)
{
    Mig2Reader undo = *rd;
    uint8_t n;

    if (mig2_rd_u8(rd, &n) != MIG2_OK) {
        return MIG2_ERR_TRUNCATED;
    }
    return rd_str(rd, n, &undo, s, len);
}

int mig2_rd_str16(Mig2Reader *rd, size_t max, const char **s, size_t *len)
{
    Mig2Reader undo = *rd;
    uint16_t n;

    if (mig2_rd_u16(rd, &n) != MIG2_OK) {
        return MIG2_ERR_TRUNCATED;
    }
    if (n > max) {
        *rd = undo;
        return MIG2_ERR_TOO_LARGE;
    }
    return rd_str(rd, n, &undo, s, len);
}

int mig2_rd_tlv(Mig2Reader *rd, uint16_t *type, bool *critical,
                Mig2Reader *value)
{
    Mig2Reader undo = *rd;
    uint16_t t;
    uint32_t len;

    if (mig2_rd_u16(rd, &t) != MIG2_OK || mig2_rd_u32(rd, &len) != MIG2_OK ||
        mig2_rd_sub(rd, len, value) != MIG2_OK) {
        *rd = undo;
        return MIG2_ERR_TRUNCATED;
    }
    *type = t & MIG2_TLV_TYPE_MASK;
    *critical = (t & MIG2_TLV_CRITICAL) != 0;
    return MIG2_OK;
}

void mig2_wr_init(Mig2Writer *w, size_t max)
{
    memset(w, 0, sizeof(*w));
    w->max = max;
}

void mig2_wr_free(Mig2Writer *w)
{
    free(w->buf);
    mig2_wr_init(w, w->max);
}

uint8_t *mig2_wr_steal(Mig2Writer *w, size_t *len)
{
    uint8_t *b = w->buf;

    *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    w->err = MIG2_OK;
    return b;
}

int mig2_wr_error(const Mig2Writer *w)
{
    return w->err;
}

static uint8_t *wr_reserve(Mig2Writer *w, size_t n)
{
    uint8_t *p;

    if (w->err) {
        return NULL;
    }
    if (n > w->max || w->len > w->max - n) {
        w->err = MIG2_ERR_TOO_LARGE;
        return NULL;
    }
    if (n == 0) {
        /* Nothing to reserve; w->buf may still be NULL. */
        return NULL;
    }
    if (w->len + n > w->cap) {
        size_t ncap = w->cap ? w->cap : 256;

        while (ncap < w->len + n) {
            ncap *= 2;
        }
        if (ncap > w->max) {
            ncap = w->max;
        }
        p = realloc(w->buf, ncap);
        if (!p) {
            w->err = MIG2_ERR_NOMEM;
            return NULL;
        }
        w->buf = p;
        w->cap = ncap;
    }
    p = w->buf + w->len;
    w->len += n;
    return p;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    int i;

    for (i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

void mig2_wr_u8(Mig2Writer *w, uint8_t v)
{
    uint8_t *p = wr_reserve(w, 1);

    if (p) {
        p[0] = v;
    }
}

void mig2_wr_u16(Mig2Writer *w, uint16_t v)
{
    uint8_t *p = wr_reserve(w, 2);

    if (p) {
        put_be(p, v, 2);
    }
}

void mig2_wr_u32(Mig2Writer *w, uint32_t v)
{
    uint8_t *p = wr_reserve(w, 4);

    if (p) {
        put_be(p, v, 4);
    }
}

void mig2_wr_u64(Mig2Writer *w, uint64_t v)
{
    uint8_t *p = wr_reserve(w, 8);

    if (p) {
        put_be(p, v, 8);
    }
}

void mig2_wr_bytes(Mig2Writer *w, const void *src, size_t n)
{
    uint8_t *p = wr_reserve(w, n);

    if (p && n) {
        memcpy(p, src, n);
    }
}

static bool wr_check_str(Mig2Writer *w, const char *s, size_t max,
                         size_t *len)
{
    if (w->err) {
        return false;
    }
    if (!s || !*s) {
        w->err = MIG2_ERR_BAD_STRING;
        return false;
    }
    *len = strlen(s);
    if (*len > max) {
        w->err = MIG2_ERR_TOO_LARGE;
        return false;
    }
    if (!mig2_utf8_valid(s, *len)) {
        w->err = MIG2_ERR_BAD_STRING;
        return false;
    }
    return true;
}

void mig2_wr_str8(Mig2Writer *w, const char *s)
{
    size_t len;

    if (wr_check_str(w, s, MIG2_MAX_NAME, &len)) {
        mig2_wr_u8(w, (uint8_t)len);
        mig2_wr_bytes(w, s, len);
    }
}

void mig2_wr_str16(Mig2Writer *w, const char *s, size_t max)
{
    size_t len;

    if (max > UINT16_MAX) {
        max = UINT16_MAX;
    }
    if (wr_check_str(w, s, max, &len)) {
        mig2_wr_u16(w, (uint16_t)len);
        mig2_wr_bytes(w, s, len);
    }
}

size_t mig2_wr_tlv_begin(Mig2Writer *w, uint16_t type, bool critical)
{
    size_t mark = w->len;

    mig2_wr_u16(w, (uint16_t)((type & MIG2_TLV_TYPE_MASK) |
                              (critical ? MIG2_TLV_CRITICAL : 0)));
    mig2_wr_u32(w, 0);
    return mark;
}

void mig2_wr_tlv_end(Mig2Writer *w, size_t mark)
{
    size_t body;

    if (w->err) {
        return;
    }
    body = w->len - mark - MIG2_TLV_HEADER_LEN;
    if (body > UINT32_MAX) {
        w->err = MIG2_ERR_TOO_LARGE;
        return;
    }
    put_be(w->buf + mark + 2, body, 4);
}

size_t mig2_wr_frame_begin(Mig2Writer *w, uint16_t type, uint16_t flags)
{
    size_t mark = w->len;

    mig2_wr_u16(w, type);
    mig2_wr_u16(w, flags);
    mig2_wr_u32(w, 0);
    return mark;
}

void mig2_wr_frame_end(Mig2Writer *w, size_t mark)
{
    size_t body;

    if (w->err) {
        return;
    }
    body = w->len - mark - MIG2_FRAME_HEADER_LEN;
    if (body > MIG2_FRAME_MAX) {
        w->err = MIG2_ERR_TOO_LARGE;
        return;
    }
    put_be(w->buf + mark + 4, body, 4);
}

int mig2_frame_header_parse(const uint8_t *p, size_t max_payload,
                            Mig2FrameHeader *h)
{
    h->type = (uint16_t)(p[0] << 8 | p[1]);
    h->flags = (uint16_t)(p[2] << 8 | p[3]);
    h->length = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
                (uint32_t)p[6] << 8 | p[7];
    return h->length > max_payload ? MIG2_ERR_TOO_LARGE : MIG2_OK;
}

void mig2_frame_header_put(uint8_t *out, uint16_t type, uint16_t flags,
                           uint32_t length)
{
    put_be(out, type, 2);
    put_be(out + 2, flags, 2);
    put_be(out + 4, length, 4);
}
