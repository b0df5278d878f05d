/* curl_loop.h — asynchronous HTTP POSTs with libcurl multi on a worker's h2o evloop.
 * Used only to call Stripe. Each call has a whole-request timeout; the callback runs
 * exactly once, on the loop thread, with status 0 on a transport failure or timeout.
 * Never logs a URL's query, a header or a body (they carry secrets).
 *
 * Rules for callers:
 * - The callback never runs inside curl_loop_post; it may start new POSTs, but must
 *   not call curl_loop_destroy.
 * - https only (http too when allow_http), redirects are not followed (a 3xx comes
 *   back as its status), bodies over CURL_LOOP_MAX_RESPONSE fail with status 0.
 * - curl_global_init must have run (main, before threads: curl_global_init_mem with the
 *   wiping allocator of core/crypto.h), and the process must
 *   ignore SIGPIPE (CURLOPT_NOSIGNAL is set, so curl does not do it for us). */
#ifndef BROKER_STRIPE_CURL_LOOP_H
#define BROKER_STRIPE_CURL_LOOP_H
#include <h2o.h>
#include <stddef.h>
#include <curl/curl.h>

#define CURL_LOOP_MAX_RESPONSE (256 * 1024)

typedef struct curl_loop curl_loop_t;

/* status: HTTP status, or 0 when the call failed (connect, timeout, too large).
 * body is NUL-terminated (empty on failure) and freed (wiped) after the callback. */
typedef void (*curl_loop_cb)(long status, const char *body, size_t len, void *data);

typedef struct curl_loop_req {
    const char *url;
    const char *form;         /* application/x-www-form-urlencoded body */
    const char *bearer;       /* "Authorization: Bearer …" when non-NULL */
    const char *basic_user;   /* HTTP Basic "user:" (empty password) when non-NULL */
    long timeout_ms;          /* whole request, > 0 (connect, send, wait, receive) */
    int allow_http;           /* 1: http:// allowed (loopback simulator) */
} curl_loop_req_t;

curl_loop_t *curl_loop_create(h2o_evloop_t *loop);
/* Start a POST. Every string is copied (secrets are wiped when the call ends).
 * Returns 0, or -1 (bad request, out of memory, during destroy: cb is then never
 * called). */
int curl_loop_post(curl_loop_t *c, const curl_loop_req_t *req, curl_loop_cb cb, void *data);
/* Number of transfers in flight. */
size_t curl_loop_inflight(curl_loop_t *c);
/* Abort every transfer (callbacks run with status 0) and free. Not from inside a
 * curl_loop callback. Call before disposing of the loop. */
void curl_loop_destroy(curl_loop_t *c);
#endif
