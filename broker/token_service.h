/* token_service.h — minting, refreshing and rotating tokens exactly once.
 *
 * Every path that calls Stripe's token endpoint with a refresh token goes through
 * here (connect test-from-live mints, rotations, apps refreshes). Stripe revokes the
 * previous token of a mode on every such call, so it must happen once per need,
 * whatever the concurrency: in-process single flight per (org, mode), a Redis lease
 * across replicas, a re-check under the lease and a write fenced by the lease owner and
 * the record's version (DESIGN.md, proto/redis.md). A result whose write is refused is
 * never served: the flight re-reads, or works again under a new lease. */
#ifndef BROKER_TOKEN_SERVICE_H
#define BROKER_TOKEN_SERVICE_H
#include "core/record.h"
#include "server.h"

typedef struct token_service token_service_t;

typedef enum token_op {
    TOKEN_OP_MINT,    /* connect: mint a test token from the live connection */
    TOKEN_OP_REFRESH, /* apps: the token expires within the margin */
    TOKEN_OP_ROTATE,  /* explicit rotation: a new access token */
} token_op_t;

/* err is ERR_NONE on success (rec is the record to serve, valid during the call), or
 * the error to answer with. */
typedef void (*token_done_cb)(breq_t *b, api_err_t err, const conn_record_t *rec);

token_service_t *token_service_create(worker_t *w);
/* Run op for b->org and mode. seen_version is the version of the record the caller
 * read (0 when it had none): if the stored record has moved past it, the newer record
 * is served without calling Stripe. cb runs once, while b is live. */
void token_service_run(breq_t *b, int mode, token_op_t op, long seen_version, token_done_cb cb);
#endif
