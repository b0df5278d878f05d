/* token.c — getAccessToken and rotation (proto/openapi.yaml): the hot path.
 *
 * A request with an org key needs the key record and the sealed connection: on a busy
 * worker from its read cache (store/rcache.h: kept exact by Redis, vouched for by a
 * recent probe), otherwise in one Redis round trip (MGET). Then the key hash is compared in constant
 * time and the record opened. Anything that needs Stripe (a test token minted from
 * live, an apps refresh, a rotation) goes through token_service, which makes it happen
 * once. Opening a record (AES-GCM, then JSON) and building the answer is most of the
 * path's own cost, so the answer built from a record is kept with the record's cache
 * entry (it holds the token: wiped with the entry) and reused while Redis returns the
 * same bytes (every write re-seals with a fresh nonce, so any change gives new bytes);
 * an apps answer is rebuilt once its token is within the refresh margin.
 *
 * Never logs a token. Tested by tests/it/test_token.py, test_cache.py and the refresh
 * suites. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include "auth.h"
#include "routes/params.h"
#include "routes/routes.h"
#include "store/rcache.h"
#include "store/store.h"

/* ===== The record to serve ===== */

int token_serving_record(breq_t *b, const char *val, size_t len, conn_record_t *rec, long *version,
                         breq_token_cb cb)
{
    const config_t *cfg = b->w->cfg;
    int rc = store_conn_open(cfg, b->org, b->mode, val, len, version, rec);

    if (rc == STORE_UNREADABLE) {
        breq_error(b, ERR_RECORD_UNREADABLE, NULL);
    } else if (rc == STORE_ABSENT) {
        if (cfg->flavor == FLAVOR_CONNECT && b->mode == MODE_TEST)
            breq_token(b, b->mode, TOKEN_OP_MINT, 0, cb);
        else
            breq_error(b, ERR_NOT_CONNECTED, NULL);
    } else if (rec->status != CONN_CONNECTED || rec->access_token == NULL) {
        /* a test token minted from live follows live: once live is authorized again, the
         * next request mints a new one (the mint answers 409 while live is still revoked) */
        if (cfg->flavor == FLAVOR_CONNECT && b->mode == MODE_TEST && strcmp(rec->derived_from, mode_name(MODE_LIVE)) == 0)
            breq_token(b, b->mode, TOKEN_OP_MINT, *version, cb);
        else
            breq_error(b, ERR_REAUTH_REQUIRED, NULL);
    } else if (cfg->flavor == FLAVOR_APPS && rec->expires_at != 0 &&
               rec->expires_at - time(NULL) <= cfg->refresh_margin_s) {
        breq_token(b, b->mode, TOKEN_OP_REFRESH, *version, cb);
    } else {
        return 1;
    }
    conn_record_clear(rec);
    return 0;
}

/* ===== Answers ===== */

static void on_token_done(breq_t *b, api_err_t err, const conn_record_t *rec, long version)
{
    (void)version;
    if (err != ERR_NONE) {
        breq_error(b, err, NULL);
        return;
    }
    buf_t out = {0};
    token_json(&out, rec, b->mode);
    audit_touch_used(b->w->redis, b->w->cfg, b->org, b->mode);
    breq_json(b, 200, out.p, out.len);
    buf_wipe(&out);
}

/* Answer from the stored connection value (NULL when absent); e is its cache entry,
 * or NULL when it was not cached. */
static void serve(breq_t *b, const char *val, size_t len, rcache_entry_t *e)
{
    const config_t *cfg = b->w->cfg;
    conn_record_t rec;
    long version = 0;
    size_t alen;
    int64_t expires_at;
    const char *answer = e != NULL ? rcache_derived(e, &alen, &expires_at) : NULL;

    if (answer != NULL && (expires_at == 0 || expires_at - time(NULL) > cfg->refresh_margin_s)) {
        audit_touch_used(b->w->redis, cfg, b->org, b->mode);
        breq_json(b, 200, answer, alen);
        return;
    }
    if (token_serving_record(b, val, len, &rec, &version, on_token_done) == 1) {
        buf_t out = {0};
        token_json(&out, &rec, b->mode);
        if (e != NULL)
            rcache_set_derived(e, out.p, out.len, (int64_t)rec.expires_at);
        audit_touch_used(b->w->redis, cfg, b->org, b->mode);
        breq_json(b, 200, out.p, out.len);
        buf_wipe(&out);
    }
    conn_record_clear(&rec);
}

static void on_conn(breq_t *b, redisReply *r)
{
    serve(b, r->type == REDIS_REPLY_STRING ? r->str : NULL, r->type == REDIS_REPLY_STRING ? r->len : 0, NULL);
}

void token_get(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    breq_redis(b, on_conn, "GET %s", breq_key(b, KEY_CONN, b->org, mode_name(b->mode)));
}

/* The key record and the connection are known (ce: the connection's cache entry, or
 * NULL): check the key (a key that checked out is charged to its org's allowance), then
 * answer. */
static void key_and_conn(breq_t *b, const char *key, size_t klen, const char *conn, size_t clen,
                         rcache_entry_t *ce)
{
    if (breq_auth_checked(b, auth_check_record(&b->bearer, key, klen, b->org)))
        return;
    serve(b, conn, clen, ce);
}

/* The Redis key names of the hot path (store/keys.h builds them without printf). */
static void hot_keys(const breq_t *b, char key[KEY_MAX], size_t *klen, char conn[KEY_MAX], size_t *clen)
{
    const char *prefix = b->w->cfg->redis_prefix;
    *klen = keys_apikey(key, prefix, b->bearer.key_id, APIKEY_ID_LEN);
    *clen = keys_conn(conn, prefix, b->org, b->mode);
}

static void on_key_and_conn(breq_t *b, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
        return;
    }
    redisReply *k = r->element[0], *c = r->element[1];
    const char *kv = k->type == REDIS_REPLY_STRING ? k->str : NULL, *cv = c->type == REDIS_REPLY_STRING ? c->str : NULL;
    size_t kl = kv != NULL ? k->len : 0, cl = cv != NULL ? c->len : 0;
    char key[KEY_MAX], conn[KEY_MAX];
    size_t klen, clen;
    hot_keys(b, key, &klen, conn, &clen);
    rcache_fill(b->w->cache, key, klen, b->cache_ticket[0], kv, kl);
    key_and_conn(b, kv, kl, cv, cl, rcache_fill(b->w->cache, conn, clen, b->cache_ticket[1], cv, cl));
}

int token_get_with_key(breq_t *b)
{
    rcache_t *cache = b->w->cache;
    rcache_entry_t *ke, *ce;
    char key[KEY_MAX], conn[KEY_MAX];
    size_t klen, clen, kl, cl;

    if (peek_mode_query(b) < 0)
        return -1;
    hot_keys(b, key, &klen, conn, &clen);
    /* a busy worker answers from the cache while Redis vouches for it (rcache.h) */
    if (rcache_fresh(cache) && (ke = rcache_get(cache, key, klen)) != NULL &&
        (ce = rcache_get(cache, conn, clen)) != NULL) {
        const char *kv = rcache_value(ke, &kl), *cv = rcache_value(ce, &cl);
        key_and_conn(b, kv, kl, cv, cl, ce);
        return 0;
    }
    /* else one round trip, reserved in the cache first so that a change racing the
     * read wins */
    b->cache_ticket[0] = rcache_reserve(cache, key, klen);
    b->cache_ticket[1] = rcache_reserve(cache, conn, clen);
    const char *argv[3] = {"MGET", key, conn};
    const size_t lens[3] = {4, klen, clen};
    breq_redisv(b, on_key_and_conn, 3, argv, lens);
    return 0;
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
        breq_token(b, b->mode, TOKEN_OP_ROTATE, version, on_token_done);
    conn_record_clear(&rec);
}

void token_rotate(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    breq_redis(b, on_conn_for_rotate, "GET %s", breq_key(b, KEY_CONN, b->org, mode_name(b->mode)));
}
