/* seal.c — AES-256-GCM sealing of secrets at rest, and the keyring.
 *
 * Owns: the sealed format "1.<kid>.<nonce>.<ct+tag>" (nonce: 12 random bytes; tag: 16
 * bytes appended to the ciphertext; both base64url without padding) and the
 * associated data "stb1|<org>|<mode>|<field>", which binds a value to its place so a
 * copy under another org, mode or field fails to open. The parser is strict (only
 * the url alphabet, canonical encodings, exact lengths), so any change to any part
 * of a sealed value is detected. keyring_parse reads BROKER_ENCRYPTION_KEYS.
 * Never: logs or returns key material in an error; leaves a key or a plaintext copy
 * in freed memory (explicit_bzero before free).
 * Tested by: tests/unit/test_seal.c, tests/fuzz/fuzz_seal_open.c and
 * tests/fuzz/fuzz_keyring.c. */
#include "seal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "crypto.h"

#define SEAL_KEY_BYTES 32
#define SEAL_NONCE_BYTES 12
#define SEAL_TAG_BYTES 16
#define SEAL_NONCE_B64_LEN 16 /* 12 bytes, unpadded base64url */
#define SEAL_AD_PREFIX "stb1|"
#define KEYRING_MAX_KEYS 64
#define KEYRING_ERR_LEN 96

/* ===== Keyring ============================================================ */

static int is_kid_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static int kid_valid(const char *s, size_t len)
{
    size_t i;

    if (len < 1 || len > SEAL_KID_MAX)
        return 0;
    for (i = 0; i < len; i++)
        if (!is_kid_char((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A description naming the entry; static per thread (config is read by one thread). */
static const char *entry_err(size_t entry, const char *what)
{
    static _Thread_local char msg[KEYRING_ERR_LEN];

    snprintf(msg, sizeof(msg), "entry %zu: %s", entry, what);
    return msg;
}

/* Parse one "kid:key" entry (spaces around it trimmed) into k. */
static const char *parse_entry(const char *s, size_t len, size_t entry, seal_key_t *k)
{
    unsigned char raw[3 * 64 / 4 + 3];
    const char *colon;
    ssize_t n;

    while (len > 0 && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0)
        return entry_err(entry, "empty entry (expected kid:base64key)");
    colon = memchr(s, ':', len);
    if (colon == NULL)
        return entry_err(entry, "expected kid:base64key");
    if (!kid_valid(s, (size_t)(colon - s)))
        return entry_err(entry, "key id must be 1-32 characters of A-Z a-z 0-9 _ -");
    len -= (size_t)(colon - s) + 1;
    n = len <= 64 ? b64_decode(colon + 1, len, raw) : -1;
    if (n != SEAL_KEY_BYTES) {
        explicit_bzero(raw, sizeof(raw));
        return entry_err(entry, "key must be 32 bytes of base64");
    }
    memcpy(k->kid, s, (size_t)(colon - s));
    k->kid[colon - s] = '\0';
    memcpy(k->key, raw, SEAL_KEY_BYTES);
    explicit_bzero(raw, sizeof(raw));
    return NULL;
}

int keyring_parse(const char *spec, seal_keyring_t *out, const char **err)
{
    seal_keyring_t kr = {NULL, 0};
    const char *p = spec, *e = NULL;
    size_t i;

    out->keys = NULL;
    out->n = 0;
    if (spec == NULL || spec[0] == '\0') {
        *err = "no keys (expected kid:base64key[,kid:base64key...])";
        return -1;
    }
    kr.keys = calloc(KEYRING_MAX_KEYS, sizeof(*kr.keys));
    if (kr.keys == NULL)
        abort();
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

        if (kr.n == KEYRING_MAX_KEYS) {
            e = "too many keys (at most 64)";
            goto fail;
        }
        if ((e = parse_entry(p, len, kr.n + 1, &kr.keys[kr.n])) != NULL)
            goto fail;
        for (i = 0; i < kr.n; i++) {
            if (strcmp(kr.keys[i].kid, kr.keys[kr.n].kid) == 0) {
                e = entry_err(kr.n + 1, "duplicate key id");
                goto fail;
            }
        }
        kr.n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *out = kr;
    return 0;
fail:
    kr.n = KEYRING_MAX_KEYS; /* wipe every slot, including a half-parsed one */
    keyring_free(&kr);
    *err = e;
    return -1;
}

void keyring_free(seal_keyring_t *kr)
{
    if (kr->keys != NULL)
        secure_free(kr->keys, kr->n * sizeof(*kr->keys));
    kr->keys = NULL;
    kr->n = 0;
}

static const seal_key_t *keyring_find(const seal_keyring_t *kr, const char *kid, size_t len)
{
    size_t i;

    for (i = 0; i < kr->n; i++)
        if (strlen(kr->keys[i].kid) == len && memcmp(kr->keys[i].kid, kid, len) == 0)
            return &kr->keys[i];
    return NULL;
}

/* ===== AES-256-GCM ======================================================== */

/* "stb1|<org>|<mode>|<field>" as a malloc'd string. */
static char *make_ad(const char *org, const char *mode, const char *field, size_t *len)
{
    size_t n = strlen(SEAL_AD_PREFIX) + strlen(org) + strlen(mode) + strlen(field) + 3;
    char *ad = malloc(n);

    if (ad == NULL)
        abort();
    snprintf(ad, n, "%s%s|%s|%s", SEAL_AD_PREFIX, org, mode, field);
    *len = n - 1;
    return ad;
}

/* Encrypt (enc=1) or decrypt (enc=0) in[0..len) into out; tag is written when
 * encrypting and checked when decrypting. Returns 0, or -1 on failure. */
static int gcm(int enc, const unsigned char key[SEAL_KEY_BYTES],
               const unsigned char nonce[SEAL_NONCE_BYTES], const char *ad, size_t adlen,
               const unsigned char *in, size_t len, unsigned char *out,
               unsigned char tag[SEAL_TAG_BYTES])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, rc = -1;

    if (ctx == NULL)
        abort();
    if (len > 0x7fffffff || adlen > 0x7fffffff)
        goto out;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_BYTES, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)ad, (int)adlen) != 1)
        goto out;
    if (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_BYTES, tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + (len > 0 ? n : 0), &n) != 1)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_BYTES, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

char *seal_seal(const seal_keyring_t *kr, const char *org, const char *mode, const char *field,
                const void *pt, size_t ptlen)
{
    const seal_key_t *k = &kr->keys[0];
    unsigned char nonce[SEAL_NONCE_BYTES];
    unsigned char *ct;
    size_t adlen, ctlen = ptlen + SEAL_TAG_BYTES, outcap, o;
    char *ad, *out;

    if (kr->n == 0 || ptlen > 0x7fffffff)
        abort(); /* config guarantees a key; a 2 GiB secret is a bug */
    rand_bytes(nonce, sizeof(nonce));
    ad = make_ad(org, mode, field, &adlen);
    ct = malloc(ctlen);
    if (ct == NULL)
        abort();
    if (gcm(1, k->key, nonce, ad, adlen, pt, ptlen, ct, ct + ptlen) != 0)
        abort();
    outcap = 2 + strlen(k->kid) + 1 + SEAL_NONCE_B64_LEN + 1 + (ctlen * 4 + 2) / 3 + 3;
    out = malloc(outcap);
    if (out == NULL)
        abort();
    o = (size_t)snprintf(out, outcap, "%d.%s.", SEAL_FORMAT_VERSION, k->kid);
    o += b64url_encode(nonce, sizeof(nonce), out + o);
    out[o++] = '.';
    b64url_encode(ct, ctlen, out + o);
    free(ct); /* ciphertext is not secret */
    free(ad);
    return out;
}

/* The parts of a sealed value, pointing into it. */
typedef struct sealed_parts {
    const char *kid, *nonce, *ct;
    size_t kidlen, noncelen, ctlen;
} sealed_parts_t;

static int is_b64url(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (!is_kid_char((unsigned char)s[i])) /* same alphabet: A-Z a-z 0-9 - _ */
            return 0;
    return 1;
}

/* Split and check the syntax; version first, so a future format is reported as such. */
static int split_sealed(const char *s, size_t len, sealed_parts_t *p)
{
    const char *end, *d1, *d2, *d3;
    size_t i;

    if (s == NULL)
        return SEAL_ERR_FORMAT;
    end = s + len;
    d1 = memchr(s, '.', len);
    if (d1 == NULL || d1 == s)
        return SEAL_ERR_FORMAT;
    for (i = 0; s + i < d1; i++)
        if (s[i] < '0' || s[i] > '9')
            return SEAL_ERR_FORMAT;
    if (d1 - s != 1 || s[0] != '0' + SEAL_FORMAT_VERSION)
        return SEAL_ERR_VERSION;
    d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
    if (d2 == NULL)
        return SEAL_ERR_FORMAT;
    p->kid = d1 + 1;
    p->kidlen = (size_t)(d2 - d1 - 1);
    if (!kid_valid(p->kid, p->kidlen))
        return SEAL_ERR_FORMAT;
    d3 = memchr(d2 + 1, '.', (size_t)(end - d2 - 1));
    if (d3 == NULL)
        return SEAL_ERR_FORMAT;
    p->nonce = d2 + 1;
    p->noncelen = (size_t)(d3 - d2 - 1);
    p->ct = d3 + 1;
    p->ctlen = (size_t)(end - d3 - 1);
    if (p->noncelen != SEAL_NONCE_B64_LEN || !is_b64url(p->nonce, p->noncelen) ||
        !is_b64url(p->ct, p->ctlen) || p->ctlen < (SEAL_TAG_BYTES * 4 + 2) / 3)
        return SEAL_ERR_FORMAT;
    return SEAL_OK;
}

int seal_kid(const char *sealed, size_t len, char kid[SEAL_KID_MAX + 1])
{
    sealed_parts_t p;
    int rc = split_sealed(sealed, len, &p);

    if (rc != SEAL_OK)
        return rc;
    memcpy(kid, p.kid, p.kidlen);
    kid[p.kidlen] = '\0';
    return SEAL_OK;
}

int seal_open(const seal_keyring_t *kr, const char *sealed, size_t len, const char *org,
              const char *mode, const char *field, char **pt, size_t *ptlen)
{
    unsigned char nonce[SEAL_NONCE_BYTES + 3];
    unsigned char *ct = NULL;
    char *ad = NULL, *plain = NULL;
    const seal_key_t *k;
    sealed_parts_t p;
    size_t adlen, n;
    ssize_t ctlen;
    int rc;

    *pt = NULL;
    *ptlen = 0;
    if ((rc = split_sealed(sealed, len, &p)) != SEAL_OK)
        return rc;
    if ((k = keyring_find(kr, p.kid, p.kidlen)) == NULL)
        return SEAL_ERR_KID;
    rc = SEAL_ERR_FORMAT;
    if (b64_decode(p.nonce, p.noncelen, nonce) != SEAL_NONCE_BYTES)
        goto out;
    if ((ct = malloc(p.ctlen * 3 / 4 + 3)) == NULL)
        abort();
    ctlen = b64_decode(p.ct, p.ctlen, ct);
    if (ctlen < SEAL_TAG_BYTES)
        goto out;
    n = (size_t)ctlen - SEAL_TAG_BYTES;
    if ((plain = malloc(n + 1)) == NULL)
        abort();
    ad = make_ad(org, mode, field, &adlen);
    rc = SEAL_ERR_AUTH;
    if (gcm(0, k->key, nonce, ad, adlen, ct, n, (unsigned char *)plain, ct + n) != 0)
        goto out;
    plain[n] = '\0';
    *pt = plain;
    *ptlen = n;
    plain = NULL;
    rc = SEAL_OK;
out:
    if (plain != NULL)
        secure_free(plain, n + 1);
    free(ct);
    free(ad);
    return rc;
}
