/*
 * libmig2 - SHA-256, HMAC-SHA256 and randomness through GnuTLS
 *
 * SPDX-License-Identifier: MIT
 */
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdlib.h>

#include "internal.h"

struct Mig2Hash {
    gnutls_hash_hd_t hd;
};

int mig2_hash_new(Mig2Hash **out)
{
    Mig2Hash *h = calloc(1, sizeof(*h));

    if (!h) {
        return MIG2_ERR_NOMEM;
    }
    if (gnutls_hash_init(&h->hd, GNUTLS_DIG_SHA256) < 0) {
        free(h);
        return MIG2_ERR_CRYPTO;
    }
    *out = h;
    return MIG2_OK;
}

int mig2_hash_update(Mig2Hash *h, const void *p, size_t n)
{
    if (n && gnutls_hash(h->hd, p, n) < 0) {
        return MIG2_ERR_CRYPTO;
    }
    return MIG2_OK;
}

int mig2_hash_peek(Mig2Hash *h, uint8_t out[MIG2_HASH_LEN])
{
    /* A copy keeps the running hash usable for later frames. */
    gnutls_hash_hd_t c = gnutls_hash_copy(h->hd);

    if (!c) {
        return MIG2_ERR_CRYPTO;
    }
    gnutls_hash_deinit(c, out);
    return MIG2_OK;
}

void mig2_hash_free(Mig2Hash *h)
{
    if (h) {
        gnutls_hash_deinit(h->hd, NULL);
        free(h);
    }
}

int mig2_hmac(const void *key, size_t key_len, const void *const *parts,
              const size_t *lens, size_t n, uint8_t out[MIG2_HASH_LEN])
{
    static const uint8_t empty_key[1];
    gnutls_hmac_hd_t hd;
    size_t i;

    if (gnutls_hmac_init(&hd, GNUTLS_MAC_SHA256,
                         key_len ? key : empty_key, key_len) < 0) {
        return MIG2_ERR_CRYPTO;
    }
    for (i = 0; i < n; i++) {
        if (lens[i] && gnutls_hmac(hd, parts[i], lens[i]) < 0) {
            gnutls_hmac_deinit(hd, NULL);
            return MIG2_ERR_CRYPTO;
        }
    }
    gnutls_hmac_deinit(hd, out);
    return MIG2_OK;
}

int mig2_random(void *buf, size_t len)
{
    if (len && gnutls_rnd(GNUTLS_RND_NONCE, buf, len) < 0) {
        return MIG2_ERR_CRYPTO;
    }
    return MIG2_OK;
}
