/* api.h — one Stripe payment API call forwarded by the proxy (README "The path a capture takes"), on a
 * worker's curl_loop. Knows nothing of the broker's HTTP requests: the route hands
 * over the method, the Stripe path and query, the body and the forwarded header
 * values; this module adds the Idempotency-Key, the bearer, sends, and brings back
 * Stripe's status, body and the response headers of core/proxy_rules.h.
 *
 * Rules for callers:
 * - A call is prepared once (stripe_api_new) and sent with stripe_api_send; each send
 *   is one request on the wire at most: a transfer that curl would send a second time
 *   (a reused connection that died before any answer byte) fails instead, except a GET.
 *   Sending the same call again is the caller's decision (only when Stripe refused the
 *   first, e.g. its 401): it carries the same Idempotency-Key.
 * - Connections to Stripe are kept in the worker's curl multi handle for reuse (at most
 *   STRIPE_API_MAXAGE_CONN_S idle).
 * - cb runs once, on the loop thread, never inside stripe_api_send; the call may be
 *   freed while a send is in flight (the transfer keeps its own copies).
 * - Never logs; the bearer, the body and the answer are wiped when freed. */
#ifndef BROKER_STRIPE_API_H
#define BROKER_STRIPE_API_H
#include <stddef.h>
#include "core/proxy_rules.h"
#include "stripe/curl_loop.h"

#define STRIPE_API_MAX_RESPONSE (1024 * 1024)
#define STRIPE_API_MAXAGE_CONN_S 30

typedef enum stripe_api_method { STRIPE_API_GET, STRIPE_API_POST, STRIPE_API_DELETE } stripe_api_method_t;

typedef struct stripe_api_req {
    stripe_api_method_t method;
    const char *base_url;                  /* STRIPE_API_URL, no trailing slash */
    const char *path;                      /* "/v1/…", checked by proxy_path_check */
    size_t path_len;
    const char *query;                     /* after '?', checked by proxy_query_check; NULL: none */
    size_t query_len;
    const char *body;                      /* sent with POST and DELETE when body_len > 0 */
    size_t body_len;
    const char *headers[PROXY_FWD_COUNT];  /* forwarded values (checked), NULL when absent */
    size_t header_len[PROXY_FWD_COUNT];
    long timeout_ms;                       /* whole request */
} stripe_api_req_t;

typedef enum stripe_api_fail {
    STRIPE_API_OK,          /* Stripe answered */
    STRIPE_API_TRANSPORT,   /* connect, TLS, a broken answer */
    STRIPE_API_TIMEOUT,
    STRIPE_API_TOO_LARGE,   /* body over STRIPE_API_MAX_RESPONSE */
    STRIPE_API_NO_RESEND,   /* curl was about to send it a second time: stopped */
} stripe_api_fail_t;

typedef struct stripe_api_res {
    long status;                          /* 0 unless fail == STRIPE_API_OK */
    stripe_api_fail_t fail;
    const char *headers[PROXY_RES_COUNT]; /* values (NUL-terminated) or NULL */
    const char *body;                     /* NUL-terminated */
    size_t len;
} stripe_api_res_t;

typedef struct stripe_api_call stripe_api_call_t;
/* res and everything in it is valid during the callback only. */
typedef void (*stripe_api_cb)(const stripe_api_res_t *res, void *data);

/* Copy what the request needs; a POST without an Idempotency-Key gets a random UUID.
 * Returns NULL when out of memory. */
stripe_api_call_t *stripe_api_new(const stripe_api_req_t *req);
/* The Idempotency-Key the call carries, or NULL (GET/DELETE without one). */
const char *stripe_api_idempotency_key(const stripe_api_call_t *call);
/* Send the call once with bearer (copied). Returns 0, or -1 (cb is then never called). */
int stripe_api_send(curl_loop_t *c, const stripe_api_call_t *call, const char *bearer, stripe_api_cb cb, void *data);
void stripe_api_free(stripe_api_call_t *call);
#endif
