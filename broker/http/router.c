/* router.c — matching a request to its route, authentication, the fused read (see
 * router.h).
 *
 * Owns the split patterns of the table, the 404/405/413 answers, the bearer check of API
 * routes and the connection reads of conn_mode routes (key record and connection in one
 * MGET, or from the worker's read cache). Route state stays with the routes: the read's
 * cache tickets live in the read's own operation, never in the request context.
 * Never logs a header, a key or a Redis value.
 * Tested end to end by tests/it (test_token.py, test_proxy.py, test_keys.py,
 * test_admin.py, test_cache.py) and tests/fault/test_abuse_limits.py; the one round trip
 * of the fused read by tests/it/test_fused_read.py. */
#include "http/router.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "auth.h"
#include "core/form.h"
#include "http/ratelimit.h"
#include "log.h"
#include "metrics.h"
#include "store/keys.h"

#define MAX_SEGMENTS 16
#define MAX_PARAMS 3

/* ===== The table ===== */

typedef struct seg {
    const char *p;
    size_t n;
} seg_t;

typedef struct route_info {
    seg_t segs[MAX_SEGMENTS]; /* the pattern, split once at start */
    int nsegs;
    int has_org;              /* the pattern names {org_id} */
} route_info_t;

static const route_t *g_routes; /* read-only after router_init */
static route_info_t *g_info;
static int g_nroutes;

/* Split the raw path (no query) into segments. Returns the count or -1. */
static int split_path(const char *p, size_t n, seg_t *segs)
{
    int count = 0;
    if (n == 0 || p[0] != '/')
        return -1;
    size_t i = 1, start = 1;
    for (; i <= n; i++) {
        if (i == n || p[i] == '/') {
            if (count == MAX_SEGMENTS)
                return -1;
            segs[count].p = p + start;
            segs[count].n = i - start;
            count++;
            start = i + 1;
        }
    }
    return count;
}

static int seg_is(const seg_t *s, const char *lit, size_t litlen)
{
    return s->n == litlen && memcmp(s->p, lit, litlen) == 0;
}

void router_init(const route_t *table, int n)
{
    g_routes = table;
    g_nroutes = n;
    g_info = calloc((size_t)n, sizeof(*g_info));
    if (g_info == NULL)
        abort();
    for (int i = 0; i < n; i++) {
        g_info[i].nsegs = split_path(table[i].pattern, strlen(table[i].pattern), g_info[i].segs);
        g_info[i].has_org = strstr(table[i].pattern, "{org_id}") != NULL;
        if (g_info[i].nsegs < 1 || !config_route_segment(g_info[i].segs[0].p, g_info[i].segs[0].n)) {
            fprintf(stderr, "stripe-token-broker: route %s is missing from config_route_segment\n", table[i].pattern);
            abort();
        }
    }
}

int router_count(void)
{
    return g_nroutes;
}

const char *router_pattern(int i)
{
    return i >= 0 && i < g_nroutes ? g_routes[i].pattern : "unmatched";
}

/* Match route r against the segments; captures "{…}" parameters in order. */
static int match_route(int r, const seg_t *segs, int nsegs, seg_t *params, int *nparams)
{
    const seg_t *psegs = g_info[r].segs;
    int np = g_info[r].nsegs;
    if (np > 0 && seg_is(&psegs[np - 1], "*", 1) && nsegs >= np - 1)
        np--; /* the tail, which may be empty (the handler refuses that): matched below */
    else if (np != nsegs)
        return 0;
    *nparams = 0;
    for (int i = 0; i < np; i++) {
        if (psegs[i].n > 0 && psegs[i].p[0] == '{') {
            if (segs[i].n == 0 || *nparams == MAX_PARAMS)
                return 0;
            params[(*nparams)++] = segs[i];
        } else if (!seg_is(&segs[i], psegs[i].p, psegs[i].n)) {
            return 0;
        }
    }
    if (np < g_info[r].nsegs) { /* the tail, raw: from the '/' before it to the end of the path */
        if (*nparams == MAX_PARAMS)
            return 0;
        if (nsegs == np) { /* nothing after the fixed part */
            params[*nparams].p = segs[np - 1].p + segs[np - 1].n;
            params[(*nparams)++].n = 0;
        } else {
            params[*nparams].p = segs[np].p - 1;
            params[(*nparams)++].n = (size_t)(segs[nsegs - 1].p + segs[nsegs - 1].n - segs[np].p) + 1;
        }
    }
    return 1;
}

static int method_is(const h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

/* 1 when route r serves req's method: its own, or HEAD on a GET route that allows it. */
static int serves_method(const route_t *rt, const h2o_req_t *req)
{
    return method_is(req, rt->method) ||
           (method_is(req, "HEAD") && strcmp(rt->method, "GET") == 0 && !(rt->flags & ROUTE_NO_HEAD));
}

/* ===== The JSON API's errors ===== */

static void render_json(breq_t *b, int status, api_err_t e, const char *message)
{
    buf_t out = {0};
    api_err_json(&out, e, message);
    breq_json(b, status, out.p, out.len);
    buf_free(&out);
}

const route_kind_t route_kind_api = {"api", render_json, 0, 0};

/* ===== Authentication ===== */

/* The outcome rc of checking b's bearer (ERR_NONE: it checked out). A failure is
 * answered (401/403, or 429 once the client address or the key id failed too often); a
 * success on an org route is charged to the org's allowance (429 when over). Returns 1
 * when b was answered, 0 when the handler goes on. */
static int auth_checked(breq_t *b, api_err_t rc)
{
    if (rc != ERR_NONE) {
        rate_auth_failed(b, rc, NULL);
        return 1;
    }
    return g_routes[b->route].auth == ROUTE_AUTH_ORG && rate_org_charge(b);
}

/* What the fused read fetched, for the handler's breq_conn while it runs. */
struct route_conn_read {
    const char *val;
    size_t len;
    rcache_entry_t *e;
};

/* The key record is known (kv NULL: no such key): check it, then run the handler with
 * the connection the same read fetched (conn NULL: the read fetched none). */
static void run_checked(breq_t *b, const char *kv, size_t kl, const struct route_conn_read *conn)
{
    const route_t *rt = &g_routes[b->route];
    if (auth_checked(b, auth_check_record(&b->bearer, kv, kl, rt->auth == ROUTE_AUTH_ADMIN ? NULL : b->org)))
        return;
    breq_hold(b); /* the handler may answer (and drop its ref) at once */
    b->conn_read = conn;
    rt->fn(b);
    b->conn_read = NULL;
    breq_release(b);
}

static void on_key_record(breq_t *b, redisReply *r)
{
    int here = r->type == REDIS_REPLY_STRING;
    run_checked(b, here ? r->str : NULL, here ? r->len : 0, NULL);
}

/* ===== Reads of the connection ===== */

/* A read of the router's own (the fused read, or the connection alone): the cache
 * tickets reserved before it was sent. */
typedef struct conn_op {
    breq_conn_cb cb;       /* the connection alone: the handler's */
    uint64_t ticket[2];    /* [0] the key record (fused read only), [1] the connection */
} conn_op_t;

/* The Redis key names of the fused read (store/keys.h builds them without printf). */
static void fused_keys(const breq_t *b, char key[KEY_MAX], size_t *klen, char conn[KEY_MAX], size_t *clen)
{
    const char *prefix = b->w->cfg->redis_prefix;
    if (key != NULL)
        *klen = keys_apikey(key, prefix, b->bearer.key_id, APIKEY_ID_LEN);
    *clen = keys_conn(conn, prefix, b->org, b->mode);
}

/* Send the read for b (http/breq_io.c: store deadline, 503 when Redis fails), with the
 * handler's callback and the cache tickets reserved before it. */
static void op_send(breq_t *b, breq_redis_arg_cb fn, breq_conn_cb cb, int argc, const char **argv,
                    const size_t *lens, const uint64_t ticket[2])
{
    conn_op_t *op = malloc(sizeof(*op));
    if (op == NULL)
        abort();
    op->cb = cb;
    op->ticket[0] = ticket[0];
    op->ticket[1] = ticket[1];
    breq_redisv_arg(b, fn, op, argc, argv, lens);
}

static void on_key_and_conn(breq_t *b, redisReply *r, void *data)
{
    const conn_op_t *op = data;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
        return;
    }
    redisReply *k = r->element[0], *c = r->element[1];
    const char *kv = k->type == REDIS_REPLY_STRING ? k->str : NULL;
    const char *cv = c->type == REDIS_REPLY_STRING ? c->str : NULL;
    size_t kl = kv != NULL ? k->len : 0, cl = cv != NULL ? c->len : 0;
    char key[KEY_MAX], conn[KEY_MAX];
    size_t klen, clen;
    fused_keys(b, key, &klen, conn, &clen);
    rcache_fill(b->w->cache, key, klen, op->ticket[0], kv, kl);
    struct route_conn_read cr = {cv, cl, rcache_fill(b->w->cache, conn, clen, op->ticket[1], cv, cl)};
    /* a later request's read of the same key took over the reservation: the entry still
     * serves what was derived from these very bytes */
    if (cr.e == NULL)
        cr.e = rcache_same(b->w->cache, conn, clen, cv, cl);
    run_checked(b, kv, kl, &cr);
}

/* An org key on a conn_mode route with a valid mode: the key record and the connection
 * from the cache when it may serve both, else in one MGET reserved in the cache first
 * so that a change racing the read wins. */
static void fused_read(breq_t *b)
{
    rcache_t *cache = b->w->cache;
    rcache_entry_t *ke, *ce;
    char key[KEY_MAX], conn[KEY_MAX];
    size_t klen, clen, kl;

    fused_keys(b, key, &klen, conn, &clen);
    if (rcache_fresh(cache) && (ke = rcache_get(cache, key, klen)) != NULL &&
        (ce = rcache_get(cache, conn, clen)) != NULL) {
        const char *kv = rcache_value(ke, &kl);
        struct route_conn_read cr;
        cr.val = rcache_value(ce, &cr.len);
        cr.e = ce;
        run_checked(b, kv, kl, &cr);
        return;
    }
    const uint64_t ticket[2] = {rcache_reserve(cache, key, klen), rcache_reserve(cache, conn, clen)};
    const char *argv[3] = {"MGET", key, conn};
    const size_t lens[3] = {4, klen, clen};
    op_send(b, on_key_and_conn, NULL, 3, argv, lens, ticket);
}

static void on_conn_alone(breq_t *b, redisReply *r, void *data)
{
    const conn_op_t *op = data;
    const char *cv = r->type == REDIS_REPLY_STRING ? r->str : NULL;
    op->cb(b, cv, cv != NULL ? r->len : 0, NULL);
}

void breq_conn(breq_t *b, breq_conn_cb cb)
{
    const struct route_conn_read *cr = b->conn_read;
    if (!breq_live(b))
        return;
    if (cr != NULL) {
        b->conn_read = NULL;
        cb(b, cr->val, cr->len, cr->e);
        return;
    }
    /* the connection alone (an admin's call) is not cached: nothing derived from it is
     * kept either (the memory tests read an admin's answers with the cache off) */
    char conn[KEY_MAX];
    size_t clen;
    fused_keys(b, NULL, NULL, conn, &clen);
    const uint64_t ticket[2] = {0, 0};
    const char *argv[2] = {"GET", conn};
    const size_t lens[2] = {3, clen};
    op_send(b, on_conn_alone, cb, 2, argv, lens, ticket);
}

/* ===== Dispatch ===== */

/* Authenticate API routes, then run the handler. */
static void dispatch(breq_t *b)
{
    const route_t *rt = &g_routes[b->route];
    if (rt->auth == ROUTE_AUTH_NONE) {
        rt->fn(b);
        return;
    }
    const h2o_iovec_t *authz = breq_header(b, "authorization");
    const bearer_t *bk = &b->bearer;
    auth_parse(b->w->cfg, authz ? authz->base : NULL, authz ? authz->len : 0, &b->bearer);
    if (bk->kind == BEARER_NONE || bk->kind == BEARER_MALFORMED) {
        rate_auth_failed(b, ERR_UNAUTHORIZED, bk->kind == BEARER_NONE ? "An Authorization: Bearer header is required."
                                                                     : "The bearer token is not valid.");
        return;
    }
    /* the org id is validated after the bearer is known to be well-formed (admin routes
     * over every org, such as the fleet view, have none) */
    char raw[128];
    ssize_t n;
    if (g_info[b->route].has_org &&
        (b->param_len[0] >= sizeof(raw) || (n = form_unescape(b->params[0], b->param_len[0], raw, 0)) < 0 ||
         orgid_normalize(raw, (size_t)n, b->org) != 0)) {
        b->org[0] = '\0';
        breq_error(b, ERR_INVALID_REQUEST,
                   "The org id is not a valid Salesforce organization id (15 or 18 characters, starting with 00D).");
        return;
    }
    if (bk->kind == BEARER_ADMIN) {
        b->is_admin = 1;
        if (auth_checked(b, ERR_NONE))
            return;
        rt->fn(b);
        return;
    }
    if (rt->conn_mode != NULL && rt->conn_mode(b) >= 0) {
        fused_read(b);
        return;
    }
    breq_redis(b, on_key_record, "GET %s", breq_key(b, KEY_APIKEY, bk->key_id));
}

/* An ingress that forwards BROKER_PUBLIC_URL's path unchanged: the routes are matched
 * (and the query read) without it. A request without it is served the same (probes and
 * scrapers reach the pod directly). */
static void strip_public_path(const config_t *cfg, h2o_req_t *req)
{
    size_t n = strlen(cfg->public_path);
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    if (n == 0 || plen <= n || memcmp(req->path.base, cfg->public_path, n) != 0 || req->path.base[n] != '/')
        return;
    req->path.base += n;
    req->path.len -= n;
    if (req->query_at != SIZE_MAX)
        req->query_at -= n;
}

void router_run(breq_t *b)
{
    h2o_req_t *req = b->req;
    strip_public_path(b->w->cfg, req);
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    seg_t segs[MAX_SEGMENTS], params[MAX_PARAMS];
    int nsegs = split_path(req->path.base, plen, segs), nparams = 0;
    char allow[64] = "";
    int path_known = 0;

    for (int i = 0; nsegs > 0 && i < g_nroutes; i++) {
        const route_t *rt = &g_routes[i];
        if (!match_route(i, segs, nsegs, params, &nparams))
            continue;
        if (!serves_method(rt, req)) {
            path_known = 1;
            if (rt->kind->shapes_405)
                b->kind = rt->kind;
            if (strstr(allow, rt->method) == NULL) {
                if (allow[0])
                    strcat(allow, ", ");
                strcat(allow, rt->method);
            }
            continue;
        }
        b->route = i;
        b->kind = rt->kind;
        for (int j = 0; j < nparams; j++) {
            b->params[j] = params[j].p;
            b->param_len[j] = params[j].n;
        }
        if (req->entity.base != NULL && req->entity.len > BODY_MAX_BYTES) {
            breq_error(b, ERR_PAYLOAD_TOO_LARGE, NULL);
            return;
        }
        if (rt->kind->page_limit && rate_page_check(b))
            return;
        dispatch(b);
        return;
    }
    if (path_known)
        breq_method_not_allowed(b, allow);
    else
        breq_error(b, ERR_NOT_FOUND, NULL);
}
