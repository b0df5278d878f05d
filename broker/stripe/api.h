/* api.h — one Stripe payment API call forwarded by the proxy (README "The path a capture
 * takes"), on the worker's own HTTP/1.1 connections to STRIPE_API_URL (stripe_api_conns_t).
 * Knows nothing of the broker's HTTP requests: the route hands over the method, the
 * Stripe path and query, the body and the forwarded header values; this module adds the
 * Idempotency-Key, the bearer, sends, and brings back Stripe's status, body and the
 * response headers of core/proxy_rules.h.
 *
 * Rules for callers:
 * - A call is prepared once (stripe_api_new) and sent with stripe_api_send; each send
 *   is one request on the wire at most; only a GET whose connection failed before any
 *   answer is sent again, once, on another connection.
 *   Sending the same call again is the caller's decision (only when Stripe refused the
 *   first, e.g. its 401): it carries the same Idempotency-Key.
 * - Connections to Stripe are kept per worker for reuse (at most STRIPE_API_MAX_IDLE_CONNS,
 *   each at most STRIPE_API_MAXAGE_CONN_S idle); https verifies Stripe's certificate chain
 *   against the system's CAs (SSL_CERT_FILE overrides them) and the URL's host name.
 * - One stripe_api_conns_t per worker loop, used on that loop's thread only; it lives as
 *   long as the worker (never freed).
 * - cb runs once, on the loop thread, never inside stripe_api_send; the call may be
 *   freed while a send is in flight (the transfer keeps its own copies).
 * - Never logs; the bearer, the body and the answer are wiped when freed. */
#ifndef BROKER_STRIPE_API_H
#define BROKER_STRIPE_API_H
#include <h2o.h>
#include <stddef.h>
#include "core/proxy_rules.h"

#define STRIPE_API_MAX_RESPONSE (1024 * 1024)
#define STRIPE_API_MAXAGE_CONN_S 30
#define STRIPE_API_MAX_IDLE_CONNS 64 /* kept per worker */

typedef enum stripe_api_method { STRIPE_API_GET, STRIPE_API_POST, STRIPE_API_DELETE } stripe_api_method_t;

typedef struct stripe_api_req {
    stripe_api_method_t method;
    const char *path;                      /* "/v1/…", checked by proxy_path_check */
    size_t path_len;
    const char *query;                     /* after '?', checked by proxy_query_check; NULL: none */
    size_t query_len;
    const char *body;                      /* sent with POST and DELETE when body_len > 0 */
    size_t body_len;
    const char *headers[PROXY_FWD_COUNT];  /* forwarded values (checked), NULL when absent */
    size_t header_len[PROXY_FWD_COUNT];
} stripe_api_req_t;

typedef enum stripe_api_fail {
    STRIPE_API_OK,          /* Stripe answered */
    STRIPE_API_TRANSPORT,   /* connect, TLS, a broken answer */
    STRIPE_API_TIMEOUT,
    STRIPE_API_TOO_LARGE,   /* body over STRIPE_API_MAX_RESPONSE */
} stripe_api_fail_t;

typedef struct stripe_api_res {
    long status;                          /* 0 unless fail == STRIPE_API_OK */
    stripe_api_fail_t fail;
    const char *headers[PROXY_RES_COUNT]; /* values (NUL-terminated) or NULL */
    const char *body;                     /* NUL-terminated */
    size_t len;
} stripe_api_res_t;

typedef struct stripe_api_call stripe_api_call_t;
typedef struct stripe_api_conns stripe_api_conns_t;
/* res and everything in it is valid during the callback only. */
typedef void (*stripe_api_cb)(const stripe_api_res_t *res, void *data);

/* Copy what the request needs; a POST without an Idempotency-Key gets a random UUID.
 * Returns NULL when out of memory. */
stripe_api_call_t *stripe_api_new(const stripe_api_req_t *req);
/* The Idempotency-Key the call carries, or NULL (GET/DELETE without one). */
const char *stripe_api_idempotency_key(const stripe_api_call_t *call);
/* A worker's connections to base_url (STRIPE_API_URL, checked by config), on loop;
 * timeout_ms: whole request. May be made on another thread than the loop's (nothing that
 * reads is made before the first send). Returns NULL when out of memory. */
stripe_api_conns_t *stripe_api_conns_create(h2o_loop_t *loop, const char *base_url, long timeout_ms);
/* Send the call once with bearer (copied). Returns 0, or -1 (cb is then never called). */
int stripe_api_send(stripe_api_conns_t *c, const stripe_api_call_t *call, const char *bearer, stripe_api_cb cb, void *data);
void stripe_api_free(stripe_api_call_t *call);
#endif
