/* breq.h — the worker a request runs on (worker_t) and the request context (breq_t,
 * implemented in http/breq.c; its Redis, token and Stripe adapters in http/breq_io.c; the
 * router: http/router.h, the rate limits: http/ratelimit.h; the threads that run the
 * workers: server.h).
 *
 * Every worker thread owns one h2o evloop, one h2o context, one Redis connection
 * and one curl multi handle; a request is handled start to finish on the thread
 * that accepted it, so nothing on the request path takes a lock.
 *
 * A request that goes asynchronous lives in a breq_t: a malloc'd, refcounted
 * context that outlives the h2o request if it must (a Redis or Stripe reply may
 * arrive after the deadline already answered). Exactly one answer is sent per
 * request: the first of the handler's reply or its deadline. */
#ifndef BROKER_HTTP_BREQ_H
#define BROKER_HTTP_BREQ_H
#include <stdatomic.h>
#include <h2o.h>
#include <stdint.h>
#include "auth.h"
#include "config.h"
#include "core/buf.h"
#include "core/errors.h"
#include "core/netaddr.h"
#include "core/ratelimit.h"
#include "core/ratewin.h"
#include "core/orgid.h"
#include "store/redis_loop.h"
#include "stripe/api.h"
#include "stripe/curl_loop.h"
#include "tokens/token_service.h"

#define BODY_MAX_BYTES (64 * 1024)
#define HEADERS_MAX_BYTES (32 * 1024) /* larger header blocks: 400 and close */
#define STORE_DEADLINE_MS 900   /* answer 503 store_unavailable before 1 s */
#define DRAIN_MAX_MS 10000      /* SIGTERM: finish in-flight requests within this */

struct pending_send {
    h2o_req_t *req;
    h2o_iovec_t body; /* in the request's pool */
};

typedef struct worker {
    int id;
    const config_t *cfg;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    redis_loop_t *redis;
    struct rcache *cache;           /* tracked read cache of key and connection records */
    curl_loop_t *curl;              /* OAuth calls to Stripe */
    stripe_api_conns_t *stripe_api; /* the proxy's connections to STRIPE_API_URL */
    token_service_t *tokens;        /* in-flight mints/refreshes of this worker */
    h2o_timeout_t store_deadline;   /* STORE_DEADLINE_MS */
    h2o_timeout_t stripe_deadline;  /* upstream timeout + STORE_DEADLINE_MS */
    h2o_timeout_t proxy_deadline;   /* BROKER_PROXY_TIMEOUT_MS + STORE_DEADLINE_MS */
    size_t inflight;                /* requests not yet answered */
    atomic_int conns;               /* client connections open (read by the other workers) */
    atomic_int accepting;           /* takes new connections (from start-up to SIGTERM) */
    atomic_uint accepts;            /* connections accepted so far (read by the other workers) */
    uint64_t leave_since;           /* h2o_now when it began leaving connections to a sibling; 0: not */
    unsigned leave_seen;            /* the siblings' accepts then */
    atomic_int leaving;             /* 1 while it does not watch the listener, leaving connections to
                                     * a sibling; the sibling that clears it wakes it (server.c) */
    h2o_timeout_t leave_retry;      /* ACCEPT_RETRY_MS: a worker leaving connections looks again */
    h2o_timeout_entry_t leave_retry_entry;
    int wake_fd;                    /* eventfd a sibling writes to end its leaving (wake_leaving) */
    h2o_socket_t *wake;             /* wake_fd in the loop */
    struct worker *siblings;        /* every worker of the process, this one included */
    int nsiblings;
    ratewin_t answers;              /* answers per 100 ms: busy or quiet (send_turn) */
    H2O_VECTOR(struct pending_send) sends; /* answers of this loop turn, sent after its log lines */
    ratelimit_t *rate;              /* rate-limit counters (http/ratelimit.c) */
} worker_t;

typedef struct breq breq_t;
typedef void (*breq_free_fn)(void *state);
struct route_kind;
struct route_conn_read;

struct breq {
    h2o_req_t *req;          /* NULL once answered: never touch it then */
    worker_t *w;
    int refs;                /* one for the unanswered request + one per pending async op */
    int route;               /* index into the route table (metrics, logs); router_count(): none */
    const struct route_kind *kind; /* how errors are rendered (http/router.h); NULL: JSON */
    int status;              /* status sent, for the log */
    uint64_t start_us;
    char request_id[17];
    char org[ORGID_LEN + 1]; /* canonical org id, "" when none */
    int mode;                /* MODE_TEST/MODE_LIVE or -1 */
    const char *params[3];   /* path parameters, raw (not decoded); see route table */
    size_t param_len[3];
    int is_admin;            /* authenticated with the admin token */
    bearer_t bearer;         /* the parsed Authorization header (API routes) */
    int flow_cred;           /* a browser page carrying a setup session / OAuth state cookie */
    int client_known;        /* client is worked out (http/ratelimit.c client_addr) */
    netaddr_t client;        /* the client's address (the peer, or behind trusted proxies) */
    const struct route_conn_read *conn_read; /* the fused read's connection, while the handler
                              * runs from it (http/router.c); NULL otherwise */
    h2o_timeout_entry_t deadline;
    api_err_t deadline_err;  /* what the deadline answers */
    const char *log_extra[4]; /* handler's fields for the request log line: name, value, …; NULL ends (log.h) */
    void *state;             /* handler state */
    breq_free_fn state_free;
};

/* ---- The context's life (http/breq.c) ---- */

/* Once, before the workers start: the request-id prefix and the pages' CSP. */
void breq_init(const config_t *cfg);
/* A new request on worker w: its context, then the router (answers it, now or later). */
void breq_start(worker_t *w, h2o_req_t *req);
/* The end of w's loop turn: the turn's log lines, then its answers. Returns how many
 * answers were sent. */
size_t breq_send_turn(worker_t *w);
/* The content type (static, may be NULL) and the headers every answer carries (also
 * h2o's own error answers, server.c). */
void breq_answer_headers(h2o_req_t *req, const char *ctype);

/* ---- Async bookkeeping ---- */

/* Take a reference for a pending async operation. */
void breq_hold(breq_t *b);
/* Drop a reference; frees the context (and its state) with the last one. */
void breq_release(breq_t *b);
/* 1 while the request still waits for an answer. */
static inline int breq_live(const breq_t *b) { return b->req != NULL; }
/* (Re)arm the deadline: STORE_DEADLINE_MS answering 503, or the Stripe deadline
 * answering 502. */
void breq_deadline_store(breq_t *b);
void breq_deadline_stripe(breq_t *b);
/* The same for a proxied Stripe call (BROKER_PROXY_TIMEOUT_MS). */
void breq_deadline_proxy(breq_t *b);

/* ---- Answers (each sends the response, logs it and drops the request ref) ---- */

void breq_json(breq_t *b, int status, const char *json, size_t len);
void breq_no_content(breq_t *b);
/* The error e (message NULL: its default), rendered by the kind of b's route. */
void breq_error(breq_t *b, api_err_t e, const char *message);
/* Another server's answer passed on (the Stripe proxy): status, content type (may be
 * NULL), headers as NULL-terminated name/value pairs (a NULL value is skipped), body. */
void breq_passthrough(breq_t *b, int status, const char *ctype, const char *const *headers, const char *body,
                      size_t len);
/* 405 with the Allow header. */
void breq_method_not_allowed(breq_t *b, const char *allow);
/* An HTML page; set_cookie may be NULL or several "\n"-separated Set-Cookie values. */
void breq_html(breq_t *b, int status, const char *html, size_t len, const char *set_cookie);
/* 303 See Other to location. */
void breq_redirect(breq_t *b, const char *location, const char *set_cookie);
/* Add a response header (name lowercase) to the answer b will send; copied. */
void breq_add_header(breq_t *b, const char *name, const char *value);
/* Plain answer with a content type (metrics, openapi). */
void breq_text(breq_t *b, int status, const char *content_type, const char *body, size_t len);

/* ---- Request helpers (valid only while breq_live) ---- */

/* Value of the request header `name` (lowercase), or NULL. */
const h2o_iovec_t *breq_header(breq_t *b, const char *name);
/* Decoded query parameter: 1 found (*out malloc'd), 0 absent, -1 malformed. */
int breq_query(breq_t *b, const char *name, char **out);
/* The same into dst (cap bytes) without an allocation; 2: found but too long (form_get_buf). */
int breq_query_buf(breq_t *b, const char *name, char *dst, size_t cap);
/* Request body as a NUL-terminated copy in the request pool (len in *len). */
const char *breq_body(breq_t *b, size_t *len);
/* Redis key "<prefix><fmt…>" in the request pool. */
const char *breq_key(breq_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The pattern of b's route ("" when unmatched), for log lines. */
const char *breq_route_pattern(const breq_t *b);

/* ---- Redis on the request's behalf (http/breq_io.c) ---- */

/* Called only while b is live, with a reply that is not an error. */
typedef void (*breq_redis_cb)(breq_t *b, redisReply *r);
/* Send a command (hiredis format) for b with the store deadline armed. When Redis
 * fails, errors or is too slow, b is answered 503 store_unavailable and cb is not
 * called. Returns 0, or -1 when b was already answered 503. */
int breq_redis(breq_t *b, breq_redis_cb cb, const char *fmt, ...);
int breq_redisv(breq_t *b, breq_redis_cb cb, int argc, const char **argv, const size_t *lens);
/* The same with an argument for cb: arg is malloc'd by the caller and owned from then on
 * by the call, which frees it when it ends (after cb, or without cb). */
typedef void (*breq_redis_arg_cb)(breq_t *b, redisReply *r, void *arg);
int breq_redisv_arg(breq_t *b, breq_redis_arg_cb cb, void *arg, int argc, const char **argv, const size_t *lens);

/* ---- The token service on the request's behalf (http/breq_io.c) ---- */

/* Called only while b is live: err ERR_NONE with the record to serve (valid during the
 * call) and its stored version, or the error to answer (rec NULL, version 0). */
typedef void (*breq_token_cb)(breq_t *b, api_err_t err, const conn_record_t *rec, long version);
/* Run op for b->org and mode on the worker's token service (tokens/token_service.h)
 * with the Stripe deadline armed; b is held until the service answers. */
void breq_token(breq_t *b, int mode, token_op_t op, long seen_version, breq_token_cb cb);

/* ---- Stripe on the request's behalf (http/breq_io.c) ---- */

/* Called only while b is live. status 0: transport failure or timeout. */
typedef void (*breq_stripe_cb)(breq_t *b, long status, const char *body, size_t len);
/* Start a Stripe call for b with the Stripe deadline armed. Returns 0, or -1 when
 * b was answered 502 stripe_unavailable. */
int breq_stripe(breq_t *b, const curl_loop_req_t *req, breq_stripe_cb cb);
#endif
