/* token.c — getAccessToken and rotation (proto/openapi.yaml): the hot path.
 *
 * A request with an org key needs the key record and the sealed connection: the router
 * reads both at once (the route's fused read, http/router.h: on a busy worker from its
 * read cache, store/rcache.h, otherwise in one Redis round trip) and compares the key
 * hash in constant time; here the record is opened. Anything that needs Stripe (a test token minted from
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

    /* an answer ('{'), not what the proxy keeps there (routes/proxy.c) */
    if (answer != NULL && alen > 0 && answer[0] == '{' &&
        (expires_at == 0 || expires_at - time(NULL) > cfg->refresh_margin_s)) {
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

/* getAccessToken: the router has read the connection with the key record (one MGET, or
 * none from the read cache: http/router.h) when the caller has an org key; an admin's
 * request reads it here. */
void token_get(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    breq_conn(b, serve);
}

static void on_conn_for_rotate(breq_t *b, const char *val, size_t len, rcache_entry_t *e)
{
    const config_t *cfg = b->w->cfg;
    conn_record_t rec;
    long version = 0;
    int rc = store_conn_open(cfg, b->org, b->mode, val, len, &version, &rec);
    (void)e;
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

/* rotate: the connection comes with the key record like getAccessToken's (the rotation
 * itself is fenced on the version read, so a cached read is as good as a fresh one). */
void token_rotate(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    breq_conn(b, on_conn_for_rotate);
}
