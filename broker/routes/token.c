/* token.c — getAccessToken and rotation (CONTRACT §4.2): the hot path.
 *
 * A request with an org key costs one Redis round trip: MGET of the key record and
 * the sealed connection, then the key hash is compared in constant time and the
 * record opened. Anything that needs Stripe (a test token minted from live, an apps
 * refresh, a rotation) goes through token_service, which makes it happen once.
 * Never logs a token. Tested by tests/it/test_token.py and the refresh suites. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "auth.h"
#include "routes/params.h"
#include "routes/routes.h"
#include "store/store.h"
#include "token_service.h"

static void on_token_done(breq_t *b, int err, const conn_record_t *rec)
{
    if (err >= 0) {
        breq_error(b, (api_err_t)err, NULL);
        return;
    }
    buf_t out = {0};
    token_json(&out, rec, b->mode);
    breq_json(b, 200, out.p, out.len);
    buf_wipe(&out);
}

/* Answer from the stored connection value (NULL when absent). */
static void serve(breq_t *b, const char *val, size_t len)
{
    const config_t *cfg = b->w->cfg;
    conn_record_t rec;
    long version = 0;
    int rc = store_conn_open(cfg, b->org, b->mode, val, len, &version, &rec);

    if (rc == STORE_UNREADABLE) {
        breq_error(b, ERR_RECORD_UNREADABLE, NULL);
    } else if (rc == STORE_ABSENT) {
        if (cfg->flavor == FLAVOR_CONNECT && b->mode == MODE_TEST)
            token_service_run(b, b->mode, TOKEN_OP_MINT, 0, on_token_done);
        else
            breq_error(b, ERR_NOT_CONNECTED, NULL);
    } else if (rec.status != CONN_CONNECTED || rec.access_token == NULL) {
        breq_error(b, ERR_REAUTH_REQUIRED, NULL);
    } else if (cfg->flavor == FLAVOR_APPS && rec.expires_at != 0 &&
               rec.expires_at - time(NULL) <= cfg->refresh_margin_s) {
        token_service_run(b, b->mode, TOKEN_OP_REFRESH, version, on_token_done);
    } else {
        on_token_done(b, -1, &rec);
    }
    conn_record_clear(&rec);
}

static void on_conn(breq_t *b, redisReply *r)
{
    serve(b, r->type == REDIS_REPLY_STRING ? r->str : NULL, r->type == REDIS_REPLY_STRING ? r->len : 0);
}

void token_get(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    breq_redis(b, on_conn, "GET %s", breq_key(b, "conn:%s:%s", b->org, mode_name(b->mode)));
}

static void on_key_and_conn(breq_t *b, redisReply *r)
{
    bearer_t *bk = b->state;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
        return;
    }
    redisReply *key = r->element[0], *conn = r->element[1];
    int rc = auth_check_record(bk, key->type == REDIS_REPLY_STRING ? key->str : NULL,
                               key->type == REDIS_REPLY_STRING ? key->len : 0, b->org);
    if (rc >= 0) {
        breq_error(b, (api_err_t)rc, NULL);
        return;
    }
    serve(b, conn->type == REDIS_REPLY_STRING ? conn->str : NULL, conn->type == REDIS_REPLY_STRING ? conn->len : 0);
}

void token_get_with_key(breq_t *b, const struct bearer *bk)
{
    if (parse_mode_query(b) < 0)
        return;
    bearer_t *copy = malloc(sizeof(*copy));
    if (copy == NULL)
        abort();
    *copy = *bk;
    b->state = copy;
    b->state_free = free;
    breq_redis(b, on_key_and_conn, "MGET %s %s", breq_key(b, "key:%s", bk->key_id),
               breq_key(b, "conn:%s:%s", b->org, mode_name(b->mode)));
}

static void on_conn_for_rotate(breq_t *b, redisReply *r)
{
    const config_t *cfg = b->w->cfg;
    conn_record_t rec;
    long version = 0;
    int rc = store_conn_open(cfg, b->org, b->mode, r->type == REDIS_REPLY_STRING ? r->str : NULL,
                             r->type == REDIS_REPLY_STRING ? r->len : 0, &version, &rec);
    if (rc == STORE_UNREADABLE)
        breq_error(b, ERR_RECORD_UNREADABLE, NULL);
    else if (rc == STORE_ABSENT)
        breq_error(b, ERR_NOT_CONNECTED, NULL);
    else if (rec.status != CONN_CONNECTED)
        breq_error(b, ERR_REAUTH_REQUIRED, NULL);
    else
        token_service_run(b, b->mode, TOKEN_OP_ROTATE, version, on_token_done);
    conn_record_clear(&rec);
}

void token_rotate(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    breq_redis(b, on_conn_for_rotate, "GET %s", breq_key(b, "conn:%s:%s", b->org, mode_name(b->mode)));
}
