/* proxy_rules.h — the pure rules of the Stripe proxy (README "The path a capture takes"): which paths,
 * queries and headers go to Stripe, and which of Stripe's response headers come back.
 * No I/O, no allocation; every function takes outside bytes and is fuzzed. */
#ifndef BROKER_CORE_PROXY_RULES_H
#define BROKER_CORE_PROXY_RULES_H
#include <stddef.h>

#define PROXY_PATH_MAX_BYTES 256   /* the Stripe path "/v1/…" (no query) */
#define PROXY_QUERY_MAX_BYTES 4096 /* the query string (after '?') */
#define PROXY_HEADER_MAX_BYTES 512 /* one forwarded request header value */
#define PROXY_REQUEST_ID_MAX 64    /* Stripe's Request-Id as logged */

/* Check the raw Stripe path (what follows /stripe/{mode}, without the query): "/v1/"
 * then segments of [A-Za-z0-9_.-], none empty, "." or ".." (so no encoded character:
 * no %2F, no %2E). Returns 0 with the first segment (the resource) in *res / *res_len,
 * or -1. */
int proxy_path_check(const char *path, size_t len, const char **res, size_t *res_len);
/* Check a query string (after '?'): printable ASCII without space or '#', at most
 * PROXY_QUERY_MAX_BYTES. Returns 0 or -1. */
int proxy_query_check(const char *q, size_t len);

/* Request headers forwarded to Stripe: the index in PROXY_FWD_HEADERS of the header
 * named (any case), or -1 for every other header. */
enum { PROXY_FWD_CONTENT_TYPE, PROXY_FWD_ACCEPT, PROXY_FWD_IDEMPOTENCY_KEY, PROXY_FWD_STRIPE_VERSION, PROXY_FWD_COUNT };
extern const char *const PROXY_FWD_HEADERS[PROXY_FWD_COUNT]; /* canonical names */
int proxy_fwd_header(const char *name, size_t len);
/* A forwarded value: 1 to PROXY_HEADER_MAX_BYTES printable ASCII or tab. 0 or -1. */
int proxy_header_value_check(const char *v, size_t len);

/* Response headers passed back to the caller. */
enum {
    PROXY_RES_CONTENT_TYPE,
    PROXY_RES_REQUEST_ID,
    PROXY_RES_IDEMPOTENCY_KEY,
    PROXY_RES_STRIPE_VERSION,
    PROXY_RES_SHOULD_RETRY,
    PROXY_RES_RETRY_AFTER,
    PROXY_RES_COUNT
};
extern const char *const PROXY_RES_HEADERS[PROXY_RES_COUNT]; /* lower-case names */
/* One response header (name, and its value already trimmed, as core/http1_resp.h hands
 * them over): the PROXY_RES_* it is when its value may be passed on (printable ASCII or
 * tab only, at most PROXY_HEADER_MAX_BYTES), or -1 (another header, a bad value). */
int proxy_res_header(const char *name, size_t nlen, const char *value, size_t vlen);

/* 1 when s (len bytes) may be logged as a Stripe Request-Id: 1 to PROXY_REQUEST_ID_MAX
 * of [A-Za-z0-9_-]. */
int proxy_request_id_ok(const char *s, size_t len);
#endif
