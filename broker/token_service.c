/* token_service.c — exactly-once mint/refresh/rotate (see token_service.h).
 * First version: no Stripe call yet; every op answers that no connection can be
 * derived. Replaced by the single-flight implementation. */
#include "token_service.h"
#include <stdlib.h>

struct token_service {
    worker_t *w;
};

token_service_t *token_service_create(worker_t *w)
{
    token_service_t *ts = calloc(1, sizeof(*ts));
    if (ts != NULL)
        ts->w = w;
    return ts;
}

void token_service_run(breq_t *b, int mode, token_op_t op, long seen_version, token_done_cb cb)
{
    cb(b, op == TOKEN_OP_MINT ? ERR_NOT_CONNECTED : ERR_STRIPE_UNAVAILABLE, NULL);
}
