/* breq_io.c — a request's calls to Redis, the token service and Stripe (see http/breq.h,
 * "on the request's behalf"). The adapters below are where HTTP meets the modules that
 * know nothing of it (store/, tokens/, stripe/).
 *
 * Every call is a pending operation (pending_t): it arms the request's deadline and
 * holds the request before the call starts; the module's (cb, data) answer ends it,
 * calling the handler's callback only while the request is still live (its deadline
 * may have answered already) and then releasing it. A call that cannot start answers
 * at once (503 store_unavailable or 502 stripe_unavailable), and so does a Redis
 * failure or error reply; the handler's callback is then never called.
 * Never logs a command, a reply or a body. Tested end to end by tests/it (every route's
 * Redis and Stripe failure: test_store_failure.py, test_stripe_failures.py). */
#include <stdarg.h>
#include <stdlib.h>
#include "log.h"
#include "metrics.h"
#include "http/breq.h"

/* ===== Pending operations ===== */

/* One call in flight for a request: the request (held), the handler's callback and its
 * argument (breq_redisv_arg: malloc'd, freed when the call ends). */
typedef struct pending {
    breq_t *b;
    union {
        breq_redis_cb redis;
        breq_redis_arg_cb redis_arg;
        breq_token_cb token;
        breq_stripe_cb stripe;
    } cb;
    void *arg;
} pending_t;

/* Hand result to the handler's callback in p (b is live). */
typedef void (*pending_deliver_fn)(breq_t *b, const pending_t *p, const void *result);

/* Start an operation for b: arm the deadline (arm), hold b. The caller sets p->cb and
 * starts the call with p as its data. */
static pending_t *pending_begin(breq_t *b, void (*arm)(breq_t *b))
{
    pending_t *p = malloc(sizeof(*p));
    if (p == NULL)
        abort();
    p->b = b;
    p->arg = NULL;
    arm(b);
    breq_hold(b);
    return p;
}

/* The call could not start: answer err now and drop the hold. Returns -1. */
static int pending_refused(pending_t *p, api_err_t err)
{
    breq_t *b = p->b;
    free(p->arg);
    free(p);
    breq_error(b, err, NULL);
    breq_release(b);
    return -1;
}

/* The call answered (result: what the module gave): deliver it while b is live, then
 * drop the hold (which may free b). */
static void pending_end(pending_t *p, pending_deliver_fn deliver, const void *result)
{
    pending_t op = *p;
    free(p);
    if (breq_live(op.b))
        deliver(op.b, &op, result);
    free(op.arg);
    breq_release(op.b);
}

/* ===== Redis for a request ===== */

/* 1 when r is a reply to hand on; else b is answered 503 store_unavailable. */
static int redis_reply_ok(breq_t *b, const redisReply *r)
{
    if (r != NULL && r->type != REDIS_REPLY_ERROR)
        return 1;
    metrics_redis_error();
    if (r != NULL)
        log_event(LOG_ERROR, "redis command failed", "route", breq_route_pattern(b), NULL);
    breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
    return 0;
}

static void deliver_redis(breq_t *b, const pending_t *p, const void *result)
{
    redisReply *r = (redisReply *)result;
    if (redis_reply_ok(b, r))
        p->cb.redis(b, r);
}

static void deliver_redis_arg(breq_t *b, const pending_t *p, const void *result)
{
    redisReply *r = (redisReply *)result;
    if (redis_reply_ok(b, r))
        p->cb.redis_arg(b, r, p->arg);
}

static void on_redis_reply(redisReply *r, void *data)
{
    pending_end(data, deliver_redis, r);
}

static void on_redis_arg_reply(redisReply *r, void *data)
{
    pending_end(data, deliver_redis_arg, r);
}

static int redis_refused(pending_t *p)
{
    metrics_redis_error();
    return pending_refused(p, ERR_STORE_UNAVAILABLE);
}

int breq_redis(breq_t *b, breq_redis_cb cb, const char *fmt, ...)
{
    pending_t *p = pending_begin(b, breq_deadline_store);
    va_list ap;
    p->cb.redis = cb;
    va_start(ap, fmt);
    int rc = redis_loop_vcommand(b->w->redis, on_redis_reply, p, fmt, ap);
    va_end(ap);
    return rc != 0 ? redis_refused(p) : 0;
}

int breq_redisv(breq_t *b, breq_redis_cb cb, int argc, const char **argv, const size_t *lens)
{
    pending_t *p = pending_begin(b, breq_deadline_store);
    p->cb.redis = cb;
    if (redis_loop_commandv(b->w->redis, on_redis_reply, p, argc, argv, lens) != 0)
        return redis_refused(p);
    return 0;
}

int breq_redisv_arg(breq_t *b, breq_redis_arg_cb cb, void *arg, int argc, const char **argv, const size_t *lens)
{
    pending_t *p = pending_begin(b, breq_deadline_store);
    p->cb.redis_arg = cb;
    p->arg = arg;
    if (redis_loop_commandv(b->w->redis, on_redis_arg_reply, p, argc, argv, lens) != 0)
        return redis_refused(p);
    return 0;
}

/* ===== The token service for a request ===== */

typedef struct token_result {
    api_err_t err;
    const conn_record_t *rec;
    long version;
} token_result_t;

static void deliver_token(breq_t *b, const pending_t *p, const void *result)
{
    const token_result_t *t = result;
    p->cb.token(b, t->err, t->rec, t->version);
}

static void on_token_result(api_err_t err, const conn_record_t *rec, long version, void *data)
{
    token_result_t t = {err, rec, version};
    pending_end(data, deliver_token, &t);
}

void breq_token(breq_t *b, int mode, token_op_t op, long seen_version, breq_token_cb cb)
{
    pending_t *p = pending_begin(b, breq_deadline_stripe);
    p->cb.token = cb;
    token_caller_t caller = {NULL, NULL, b->request_id};
    if (b->is_admin)
        caller.kind = "admin";
    else if (b->bearer.kind == BEARER_KEY)
        caller = (token_caller_t){"api_key", b->bearer.key_id, b->request_id};
    token_service_run(b->w->tokens, b->org, mode, op, seen_version, &caller, on_token_result, p);
}

/* ===== Stripe for a request ===== */

typedef struct stripe_result {
    long status;
    const char *body;
    size_t len;
} stripe_result_t;

static void deliver_stripe(breq_t *b, const pending_t *p, const void *result)
{
    const stripe_result_t *s = result;
    p->cb.stripe(b, s->status, s->body, s->len);
}

static void on_stripe_reply(long status, const char *body, size_t len, void *data)
{
    stripe_result_t s = {status, body, len};
    pending_end(data, deliver_stripe, &s);
}

int breq_stripe(breq_t *b, const curl_loop_req_t *req, breq_stripe_cb cb)
{
    pending_t *p = pending_begin(b, breq_deadline_stripe);
    p->cb.stripe = cb;
    if (curl_loop_post(b->w->curl, req, on_stripe_reply, p) != 0)
        return pending_refused(p, ERR_STRIPE_UNAVAILABLE);
    return 0;
}
