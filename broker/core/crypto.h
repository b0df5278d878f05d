/* crypto.h — random values, hashes, MACs, encodings and constant-time comparison.
 * Pure functions over OpenSSL; no I/O, no global state but jansson's allocator. */
#ifndef BROKER_CORE_CRYPTO_H
#define BROKER_CORE_CRYPTO_H
#include <stddef.h>
#include <sys/types.h>

/* Fill buf with n cryptographically random bytes; aborts if the CSPRNG fails. */
void rand_bytes(unsigned char *buf, size_t n);
/* A random value of nbytes bytes as unpadded base64url into out (size >= 4*nbytes/3+2). */
void rand_token(char *out, size_t nbytes);
/* SHA-256 of data as 64 lowercase hex characters plus NUL. */
void sha256_hex(const void *data, size_t len, char out[65]);
void hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[32]);
/* 1 when a[0..alen) equals b[0..blen); time depends only on the lengths. */
int ct_equal(const void *a, size_t alen, const void *b, size_t blen);
/* Lowercase hex of data into out (size >= 2*len+1). */
void hex_encode(const unsigned char *data, size_t len, char *out);
/* Value of one hex digit (either case), or -1. */
int hex_value(unsigned char c);
/* Unpadded base64url of data into out (size >= 4*len/3+3); returns length written. */
size_t b64url_encode(const unsigned char *data, size_t len, char *out);
/* Decode standard or url-safe base64, padding optional, into out (size >= 3*len/4+3).
 * Returns the decoded length or -1 on a malformed input. */
ssize_t b64_decode(const char *in, size_t len, unsigned char *out);
/* Zero and free p (len bytes); NULL is fine. */
void secure_free(void *p, size_t len);
/* Zero and free a NUL-terminated string; NULL is fine. */
void secure_free_str(char *s);
/* A free that wipes the whole block (malloc_usable_size) first, and a realloc that
 * allocates, copies, wipes and frees the old block: the allocator of the libraries that
 * copy secrets into blocks of their own (jansson, libcurl: curl_global_init_mem). */
void secure_block_free(void *p);
void *secure_block_realloc(void *p, size_t n);
/* Make jansson wipe every block it frees (its parser and serialiser copy secrets
 * into buffers of their own). Call once at start, before any jansson call. */
void secure_json_init(void);
#endif
