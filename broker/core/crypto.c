/* crypto.c — random values, SHA-256, HMAC-SHA256, hex/base64 codecs and
 * constant-time comparison, all over OpenSSL 3.
 *
 * Owns: no state but one SHA-256 context per thread (reused, see sha256_hex) and the
 * wiping allocator of jansson and libcurl (secure_block_free/realloc: every block they
 * free or grow is wiped first; secure_json_init installs it for jansson, main for curl);
 * every function is pure apart from the CSPRNG.
 * Never: logs, or returns a partial random value (rand_bytes aborts when the CSPRNG
 * fails, because a predictable token is worse than a crash). Intermediate copies of
 * secret material are wiped before they are freed.
 * Tested by: tests/unit/test_crypto.c (RFC 4231 HMAC vectors, FIPS SHA-256 vectors,
 * base64 round trips and strictness, constant-time equality), tests/unit/test_wipe.c
 * (no block jansson frees holds a secret). */
#include "crypto.h"
#include <pthread.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define RAND_CHUNK_BYTES 48 /* a multiple of 3, so chunks encode without padding */

static const char B64URL_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void rand_bytes(unsigned char *buf, size_t n)
{
    while (n > 0) {
        int chunk = n > 1024 * 1024 ? 1024 * 1024 : (int)n;
        if (RAND_bytes(buf, chunk) != 1)
            abort();
        buf += chunk;
        n -= (size_t)chunk;
    }
}

void rand_token(char *out, size_t nbytes)
{
    unsigned char chunk[RAND_CHUNK_BYTES];

    out[0] = '\0';
    while (nbytes > 0) {
        size_t n = nbytes < sizeof(chunk) ? nbytes : sizeof(chunk);
        rand_bytes(chunk, n);
        out += b64url_encode(chunk, n, out);
        nbytes -= n;
    }
    explicit_bzero(chunk, sizeof(chunk));
}

/* OpenSSL 3 looks the algorithm up on every EVP_sha256() use, and EVP_Digest() allocates
 * and frees two contexts per call; the hot path hashes an API key per request. So the
 * implementation is fetched once (thread-safe, immutable) and each thread keeps one digest
 * context, reset by every EVP_DigestInit_ex2() and freed when the thread ends. Between
 * calls it holds only the last digest (OpenSSL wipes the input block in its final step). */
static EVP_MD *g_sha256;
static pthread_key_t g_sha256_ctx;
static pthread_once_t g_sha256_once = PTHREAD_ONCE_INIT;

static void free_ctx(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void fetch_sha256(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&g_sha256_ctx, free_ctx) != 0)
        abort();
}

void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;

    pthread_once(&g_sha256_once, fetch_sha256);
    EVP_MD_CTX *ctx = pthread_getspecific(g_sha256_ctx);
    if (ctx == NULL && ((ctx = EVP_MD_CTX_new()) == NULL || pthread_setspecific(g_sha256_ctx, ctx) != 0))
        abort();
    if (g_sha256 == NULL || EVP_DigestInit_ex2(ctx, g_sha256, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != sizeof(md))
        abort();
    hex_encode(md, sizeof(md), out);
}

void hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[32])
{
    unsigned int outlen = 0;
    static const unsigned char empty[1];

    if (klen > 0x7fffffff)
        abort();
    if (HMAC(EVP_sha256(), klen > 0 ? key : empty, (int)klen, mlen > 0 ? msg : empty, mlen, out,
             &outlen) == NULL ||
        outlen != 32)
        abort();
}

int ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    /* Compare a with itself when the lengths differ, so the time spent depends only
     * on the lengths, never on the contents. */
    int same_len = alen == blen;
    int eq = CRYPTO_memcmp(a, same_len ? b : a, alen) == 0;
    return same_len & eq;
}

int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void hex_encode(const unsigned char *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

size_t b64url_encode(const unsigned char *data, size_t len, char *out)
{
    size_t i, o = 0;

    for (i = 0; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)data[i] << 16 | (unsigned)data[i + 1] << 8 | data[i + 2];
        out[o++] = B64URL_ALPHABET[(v >> 18) & 63];
        out[o++] = B64URL_ALPHABET[(v >> 12) & 63];
        out[o++] = B64URL_ALPHABET[(v >> 6) & 63];
        out[o++] = B64URL_ALPHABET[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)data[i] << 16;
        out[o++] = B64URL_ALPHABET[(v >> 18) & 63];
        out[o++] = B64URL_ALPHABET[(v >> 12) & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)data[i] << 16 | (unsigned)data[i + 1] << 8;
        out[o++] = B64URL_ALPHABET[(v >> 18) & 63];
        out[o++] = B64URL_ALPHABET[(v >> 12) & 63];
        out[o++] = B64URL_ALPHABET[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

/* Value of one base64 character in either alphabet, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Strict: padding only at the end and only to a multiple of 4, no whitespace, and
 * the unused low bits of the last character must be zero, so every byte string has
 * exactly one encoding per alphabet (a flipped character never decodes to the same
 * bytes). */
ssize_t b64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t pad = 0, i, o = 0, rem;
    unsigned acc = 0;
    int bits = 0;

    while (pad < 2 && len > pad && in[len - 1 - pad] == '=')
        pad++;
    len -= pad;
    rem = len % 4;
    if (rem == 1 || (pad > 0 && (len + pad) % 4 != 0))
        return -1;
    for (i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-zero leftover bits: not a canonical encoding */
        return -1;
    return (ssize_t)o;
}

void secure_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    explicit_bzero(p, len);
    free(p);
}

void secure_free_str(char *s)
{
    if (s == NULL)
        return;
    secure_free(s, strlen(s));
}

/* The free of a library that copies secrets into blocks of its own: the whole block is
 * wiped first. jansson's parser keeps secrets in blocks the caller never sees (the
 * lexer's token buffer, which grows by allocate-copy-free; json_dumps' output buffer),
 * so wiping the values before json_decref is not enough; libcurl keeps the request
 * headers (the bearer) and body in its own buffers. */
void secure_block_free(void *p)
{
    if (p == NULL)
        return;
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

void *secure_block_realloc(void *p, size_t n)
{
    if (p == NULL)
        return malloc(n);
    void *q = malloc(n != 0 ? n : 1);
    if (q == NULL)
        return NULL; /* p stays as it was, like realloc */
    size_t have = malloc_usable_size(p);
    memcpy(q, p, have < n ? have : n);
    secure_block_free(p);
    return q;
}

void secure_json_init(void)
{
    json_set_alloc_funcs(malloc, secure_block_free);
}
