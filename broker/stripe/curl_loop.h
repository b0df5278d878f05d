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
#define CURL_LOOP_MAX_IDLE_CONNS 64 /* connections kept for reuse per loop (curl_loop_run) */
#define CURL_LOOP_MAX_IDLE_EASY 64  /* easy handles kept for reuse per loop (curl_loop_easy_get) */

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
/* A transfer whose easy handle the caller configured (stripe/api.c: any method, its
 * own headers and callbacks). curl_loop sets only CURLOPT_PRIVATE and the socket open
 * and close callbacks (a kept connection stays watched between its transfers) and runs
 * it on the loop; unlike curl_loop_post, connections may be kept for reuse unless the
 * caller sets CURLOPT_FORBID_REUSE. done runs exactly once, never inside curl_loop_run, with curl's
 * result (CURLE_ABORTED_BY_CALLBACK when curl_loop_destroy aborts it); the caller then
 * owns the easy handle again (curl_loop_easy_put, or curl_easy_cleanup). */
typedef void (*curl_loop_easy_cb)(CURL *easy, CURLcode result, void *data);
/* Returns 0, or -1 (during destroy, out of memory): done is then never called. */
int curl_loop_run(curl_loop_t *c, CURL *easy, curl_loop_easy_cb done, void *data);
/* An easy handle for curl_loop_run: an idle one of this loop's, or a new one (NULL: out
 * of memory). An idle handle was reset by curl_loop_easy_put: no option, header list,
 * callback or URL of its last transfer is left (curl already freed, through the wiping
 * allocator, the request it built and the buffer it read the answer into); reusing it
 * spares curl's allocation and set-up of a handle per call. */
CURL *curl_loop_easy_get(curl_loop_t *c);
/* The caller is done with easy (after curl_loop_run's done, or instead of it): reset and
 * kept for the next curl_loop_easy_get, or cleaned up when CURL_LOOP_MAX_IDLE_EASY are
 * kept already or the loop is being destroyed. */
void curl_loop_easy_put(curl_loop_t *c, CURL *easy);
/* Number of transfers in flight. */
size_t curl_loop_inflight(curl_loop_t *c);
/* Abort every transfer (callbacks run with status 0) and free. Not from inside a
 * curl_loop callback. Call before disposing of the loop. */
void curl_loop_destroy(curl_loop_t *c);
#endif
