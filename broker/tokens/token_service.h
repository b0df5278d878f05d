/* token_service.h — minting, refreshing and rotating tokens exactly once.
 *
 * Every path that calls Stripe's token endpoint with a refresh token goes through
 * here (connect test-from-live mints, rotations, apps refreshes). Stripe revokes the
 * previous token of a mode on every such call, so it must happen once per need,
 * whatever the concurrency: in-process single flight per (org, mode), a Redis lease
 * across replicas, a re-check under the lease and a write fenced by the lease owner and
 * the record's version (README "How it works", proto/redis.md). A result whose write is refused is
 * never served: the flight re-reads, or works again under a new lease.
 *
 * Knows nothing of HTTP: it runs on one event loop with that loop's Redis and Stripe
 * clients and answers through (cb, data), the way redis_loop does; routes reach it
 * through the request context (http/breq.h), which holds the request and arms its Stripe
 * deadline.
 * One service per worker thread; not thread safe. */
#ifndef BROKER_TOKENS_TOKEN_SERVICE_H
#define BROKER_TOKENS_TOKEN_SERVICE_H
#include "config.h"
#include "core/errors.h"
#include "core/record.h"
#include "store/redis_loop.h"
#include "stripe/curl_loop.h"

typedef struct token_service token_service_t;

typedef enum token_op {
    TOKEN_OP_MINT,    /* connect: mint a test token from the live connection */
    TOKEN_OP_REFRESH, /* apps: the token expires within the margin */
    TOKEN_OP_ROTATE,  /* explicit rotation: a new access token */
} token_op_t;

/* err is ERR_NONE on success (rec is the connected record to serve, valid during the
 * call only, and version its stored version: the one to fence a later rotation of its
 * token on), or the error to answer with (rec NULL, version 0). */
typedef void (*token_done_cb)(api_err_t err, const conn_record_t *rec, long version, void *data);

/* A service on loop, sending through redis and curl (all three outlive it). background:
 * this one runs the apps flavor's background refresh pass (one per process). */
token_service_t *token_service_create(h2o_evloop_t *loop, redis_loop_t *redis, curl_loop_t *curl,
                                      const config_t *cfg, int background);
/* Who asks for a token, for the audit event of the change it causes (store/audit.h):
 * kind "admin" or "api_key" (id: the key id), request_id the request's id; NULL or a
 * NULL kind: the broker itself. Copied: valid during the call only. */
typedef struct token_caller {
    const char *kind;
    const char *id;
    const char *request_id;
} token_caller_t;

/* Run op for org and mode. seen_version is the version of the record the caller read
 * (0 when it had none): if the stored record has moved past it, the newer record is
 * served without calling Stripe. Callers for the same org and mode share one flight.
 * cb is called exactly once: from the loop, or before this returns when Redis is not
 * connected (ERR_STORE_UNAVAILABLE). */
void token_service_run(token_service_t *ts, const char *org, int mode, token_op_t op, long seen_version,
                       const token_caller_t *caller, token_done_cb cb, void *data);
#endif
