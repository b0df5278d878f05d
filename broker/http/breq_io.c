/* breq_io.c — a request's calls to Redis, the token service and Stripe (see server.h,
 * "on the request's behalf"). Each holds the request, arms its deadline, and calls the
 * handler's callback only while the request is live; a failure answers 503
 * store_unavailable or 502 stripe_unavailable itself. The adapters below are where HTTP
 * meets the modules that know nothing of it (store/, tokens/, stripe/).
 * Never logs a command, a reply or a body. Tested end to end by tests/it (every route's
 * Redis and Stripe failure: test_store_failure.py, test_stripe_failures.py). */
#include <stdarg.h>
#include <stdlib.h>
#include "log.h"
#include "metrics.h"
#include "server.h"

/* ===== Redis for a request ===== */

typedef struct redis_op {
    breq_t *b;
    breq_redis_cb cb;
} redis_op_t;

static void on_redis_reply(redisReply *r, void *data)
{
    redis_op_t *op = data;
    breq_t *b = op->b;
    breq_redis_cb cb = op->cb;
    free(op);
    if (breq_live(b)) {
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            metrics_redis_error();
            if (r != NULL)
                log_event(LOG_ERROR, "redis command failed", "route", breq_route_pattern(b), NULL);
            breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
        } else {
            cb(b, r);
        }
    }
    breq_release(b);
}

static redis_op_t *op_new(breq_t *b, breq_redis_cb cb)
{
    redis_op_t *op = malloc(sizeof(*op));
    if (op == NULL)
        abort();
    op->b = b;
    op->cb = cb;
    return op;
}

static int op_failed(breq_t *b, redis_op_t *op)
{
    free(op);
    metrics_redis_error();
    breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
    return -1;
}

int breq_redis(breq_t *b, breq_redis_cb cb, const char *fmt, ...)
{
    redis_op_t *op = op_new(b, cb);
    va_list ap;
    breq_deadline_store(b);
    va_start(ap, fmt);
    int rc = redis_loop_vcommand(b->w->redis, on_redis_reply, op, fmt, ap);
    va_end(ap);
    if (rc != 0)
        return op_failed(b, op);
    breq_hold(b);
    return 0;
}

int breq_redisv(breq_t *b, breq_redis_cb cb, int argc, const char **argv, const size_t *lens)
{
    redis_op_t *op = op_new(b, cb);
    breq_deadline_store(b);
    if (redis_loop_commandv(b->w->redis, on_redis_reply, op, argc, argv, lens) != 0)
        return op_failed(b, op);
    breq_hold(b);
    return 0;
}

/* ===== The token service for a request ===== */

typedef struct token_wait {
    breq_t *b;
    breq_token_cb cb;
} token_wait_t;

static void on_token_result(api_err_t err, const conn_record_t *rec, long version, void *data)
{
    token_wait_t *op = data;
    breq_t *b = op->b;
    breq_token_cb cb = op->cb;
    free(op);
    if (breq_live(b))
        cb(b, err, rec, version);
    breq_release(b);
}

void breq_token(breq_t *b, int mode, token_op_t op, long seen_version, breq_token_cb cb)
{
    token_wait_t *t = malloc(sizeof(*t));
    if (t == NULL)
        abort();
    t->b = b;
    t->cb = cb;
    breq_hold(b);
    breq_deadline_stripe(b);
    token_caller_t caller = {NULL, NULL, b->request_id};
    if (b->is_admin)
        caller.kind = "admin";
    else if (b->bearer.kind == BEARER_KEY)
        caller = (token_caller_t){"api_key", b->bearer.key_id, b->request_id};
    token_service_run(b->w->tokens, b->org, mode, op, seen_version, &caller, on_token_result, t);
}

/* ===== Stripe for a request ===== */

typedef struct stripe_op {
    breq_t *b;
    breq_stripe_cb cb;
} stripe_op_t;

static void on_stripe_reply(long status, const char *body, size_t len, void *data)
{
    stripe_op_t *op = data;
    breq_t *b = op->b;
    breq_stripe_cb cb = op->cb;
    free(op);
    if (breq_live(b))
        cb(b, status, body, len);
    breq_release(b);
}

int breq_stripe(breq_t *b, const curl_loop_req_t *req, breq_stripe_cb cb)
{
    stripe_op_t *op = malloc(sizeof(*op));
    if (op == NULL)
        abort();
    op->b = b;
    op->cb = cb;
    breq_deadline_stripe(b);
    if (curl_loop_post(b->w->curl, req, on_stripe_reply, op) != 0) {
        free(op);
        breq_error(b, ERR_STRIPE_UNAVAILABLE, NULL);
        return -1;
    }
    breq_hold(b);
    return 0;
}
