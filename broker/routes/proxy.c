/* proxy.c — the Stripe proxy (README "The path a capture takes"): GET|POST|DELETE
 * /v1/orgs/{org_id}/stripe/{mode}/v1/{resource}[/…][?query] forwarded once to
 * STRIPE_API_URL with that mode's access token, which never leaves the broker.
 *
 * The router has authenticated the caller (org key of that org, or admin), for an org
 * key with the connection read in the same round trip (the route's fused read,
 * http/router.h), and this route's kind answers the broker's own errors in Stripe's
 * error shape as well as the contract's. Here: the mode, the path (core/proxy_rules.h)
 * and its resource against BROKER_PROXY_ALLOW, the forwarded headers, all checked
 * before the record is opened or anything sent; then the token exactly as
 * getAccessToken obtains it (token_serving_record:
 * test minted from live, apps refresh, single flight); then one send (stripe/api.h),
 * and Stripe's status, body and headers back. apps flavor: Stripe's 401 means the call
 * was refused, not processed, so the token is refreshed once through the single flight
 * (a rotation fenced on the version used) and the call sent again once, with the same
 * Idempotency-Key. Nothing is written to Redis here except by the token service.
 *
 * Never logs a body, a query or a token: the request line gets the Stripe path (ids
 * only: it is made of plain characters) and Stripe's Request-Id. Counted in
 * stb_proxy_requests_total{mode,resource,status}.
 * Tested by tests/it/test_proxy.py and tests/it/test_payments.py. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/proxy_rules.h"
#include "log.h"
#include "metrics.h"
#include "routes/params.h"
#include "routes/routes.h"
#include "store/store.h"
#include "stripe/api.h"

#define LOG_PATH_MAX 120 /* bytes of the Stripe path in the log line */

typedef struct proxy_state {
    breq_t *b;                /* for the count when the context ends */
    int mode;                 /* -1 until known */
    int resource;             /* index in BROKER_PROXY_ALLOW, -1: not (yet) known */
    stripe_api_call_t *call;
    long version;             /* version of the record whose token was sent */
    int resent;               /* the apps 401 resend was made */
    char path[LOG_PATH_MAX + 1];
    char request_id[PROXY_REQUEST_ID_MAX + 1];
} proxy_state_t;

static void state_free(void *p)
{
    proxy_state_t *st = p;
    metrics_proxy(st->mode, st->resource, st->b->status);
    stripe_api_free(st->call);
    free(st);
}

/* The request log line's fields: the Stripe path, and Stripe's Request-Id once known
 * (the log line escapes both; proxy_request_id_ok keeps a malformed one out). */
static void set_log(proxy_state_t *st, const char *request_id)
{
    breq_t *b = st->b;
    b->log_extra[0] = "stripe_path";
    b->log_extra[1] = st->path;
    b->log_extra[2] = NULL;
    if (request_id != NULL && proxy_request_id_ok(request_id, strlen(request_id))) {
        snprintf(st->request_id, sizeof(st->request_id), "%s", request_id);
        b->log_extra[2] = "stripe_request_id";
        b->log_extra[3] = st->request_id;
    }
}

/* ===== Stripe's answer ===== */

/* A POST or DELETE that Stripe answered is an audit event (stripe.call). It records a
 * call already made and changes no state, so it is its own script, sent without
 * waiting for it (the answer does not depend on it). */
static void record_call(breq_t *b, proxy_state_t *st, int status)
{
    const h2o_iovec_t *m = &b->req->method;
    audit_tail_t t;
    buf_t d = {0};
    if (!h2o_memis(m->base, m->len, H2O_STRLIT("POST")) && !h2o_memis(m->base, m->len, H2O_STRLIT("DELETE")))
        return;
    buf_printf(&d, "{\"method\":\"%.*s\",\"path\":", (int)m->len, m->base);
    buf_json_str(&d, st->path, strlen(st->path));
    buf_printf(&d, ",\"status\":%d", status);
    if (st->request_id[0]) {
        buf_puts(&d, ",\"request_id\":");
        buf_json_str(&d, st->request_id, strlen(st->request_id));
    }
    buf_puts(&d, "}");
    breq_audit_tail(b, &t, "stripe.call", st->mode, d.p, NULL, NULL);
    redis_loop_command(b->w->redis, NULL, NULL, "EVAL %s 0 %s %s %s %s %s", AUDIT_LUA_RECORD, t.argv[0], t.argv[1],
                       t.argv[2], t.argv[3], t.argv[4]);
    audit_tail_free(&t);
    buf_free(&d);
}

static void send_call(breq_t *b, const char *token);

static void on_token_again(breq_t *b, api_err_t err, const conn_record_t *rec, long version)
{
    (void)version;
    if (err != ERR_NONE)
        breq_error(b, err, NULL);
    else
        send_call(b, rec->access_token);
}

static void on_answer(const stripe_api_res_t *res, void *data)
{
    breq_t *b = data;
    proxy_state_t *st = b->state;
    if (!breq_live(b)) {
        breq_release(b);
        return;
    }
    if (res->fail != STRIPE_API_OK) {
        static const char *const why[] = {"", "transport", "timeout", "response too large"};
        log_event(LOG_WARN, "stripe proxy call failed", "org_id", b->org, "mode", mode_name(st->mode), "stripe_path",
                  st->path, "error", why[res->fail], NULL);
        breq_error(b, ERR_STRIPE_UNAVAILABLE, NULL);
    } else if (res->status == 401 && b->w->cfg->flavor == FLAVOR_APPS && !st->resent) {
        /* refused, so not processed: a token rotated elsewhere or expired early */
        st->resent = 1;
        breq_token(b, st->mode, TOKEN_OP_ROTATE, st->version, on_token_again);
    } else {
        const char *const *h = res->headers;
        const char *pass[] = {"request-id",
                              h[PROXY_RES_REQUEST_ID],
                              "idempotency-key",
                              h[PROXY_RES_IDEMPOTENCY_KEY],
                              "stripe-version",
                              h[PROXY_RES_STRIPE_VERSION],
                              "stripe-should-retry",
                              h[PROXY_RES_SHOULD_RETRY],
                              "retry-after",
                              res->status == 429 || res->status == 503 ? h[PROXY_RES_RETRY_AFTER] : NULL,
                              NULL};
        set_log(st, h[PROXY_RES_REQUEST_ID]);
        record_call(b, st, (int)res->status);
        audit_touch_used(b->w->redis, b->w->cfg, b->org, st->mode);
        breq_passthrough(b, (int)res->status, h[PROXY_RES_CONTENT_TYPE], pass, res->body, res->len);
    }
    breq_release(b);
}

static void send_call(breq_t *b, const char *token)
{
    proxy_state_t *st = b->state;
    breq_deadline_proxy(b);
    if (token == NULL || stripe_api_send(b->w->stripe_api, st->call, token, on_answer, b) != 0) {
        breq_error(b, ERR_STRIPE_UNAVAILABLE, NULL);
        return;
    }
    breq_hold(b);
}

/* ===== The token ===== */

/* The token service served the record (minted, refreshed, or moved on): a 401 rotation
 * is fenced on its version, so that it replaces this very token. */
static void on_token(breq_t *b, api_err_t err, const conn_record_t *rec, long version)
{
    proxy_state_t *st = b->state;
    st->version = version;
    on_token_again(b, err, rec, version);
}

/* What a call keeps with the connection's read-cache entry: 'P', the record's version,
 * then its access token with its NUL, so that the next call on the same stored bytes
 * opens nothing (AES-GCM and the JSON parse were a tenth of a call's CPU). getAccessToken
 * keeps its answer there ('{'): an org served both ways alternately re-opens the
 * record, as before. Kept only while the cache may serve (BROKER_CACHE_BUSY_RPS > 0);
 * wiped with the entry (store/rcache.h). */
#define DERIVED_TOKEN 'P'
#define DERIVED_HEAD (1 + sizeof(long))

/* The token kept with e that may be sent now (an apps token outside its refresh
 * margin), with its version in *version; NULL when none. */
static const char *kept_token(const config_t *cfg, const rcache_entry_t *e, long *version)
{
    size_t len;
    int64_t expires_at;
    const char *d = e != NULL ? rcache_derived(e, &len, &expires_at) : NULL;
    if (d == NULL || len <= DERIVED_HEAD || d[0] != DERIVED_TOKEN || d[len - 1] != '\0' ||
        (expires_at != 0 && expires_at - time(NULL) <= cfg->refresh_margin_s))
        return NULL;
    memcpy(version, d + 1, sizeof(long));
    return d + DERIVED_HEAD;
}

static void keep_token(const config_t *cfg, rcache_entry_t *e, const conn_record_t *rec, long version)
{
    if (e == NULL || cfg->cache_busy_rps <= 0 || rec->access_token == NULL)
        return;
    size_t tlen = strlen(rec->access_token) + 1, len = DERIVED_HEAD + tlen;
    char *d = malloc(len);
    if (d == NULL)
        return;
    d[0] = DERIVED_TOKEN;
    memcpy(d + 1, &version, sizeof(long));
    memcpy(d + DERIVED_HEAD, rec->access_token, tlen);
    rcache_set_derived(e, d, len, (int64_t)rec->expires_at);
    explicit_bzero(d, len);
    free(d);
}

static void on_conn(breq_t *b, const char *val, size_t len, rcache_entry_t *e)
{
    const config_t *cfg = b->w->cfg;
    proxy_state_t *st = b->state;
    conn_record_t rec;
    const char *token = kept_token(cfg, e, &st->version);
    if (token != NULL) {
        send_call(b, token);
        return;
    }
    if (token_serving_record(b, val, len, &rec, &st->version, on_token) == 1) {
        keep_token(cfg, e, &rec, st->version);
        send_call(b, rec.access_token);
        conn_record_clear(&rec);
    }
}

/* ===== The request ===== */

static int method_of(const h2o_req_t *req)
{
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")))
        return STRIPE_API_POST;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE")))
        return STRIPE_API_DELETE;
    return STRIPE_API_GET; /* HEAD never gets here (the route table: ROUTE_NO_HEAD, 405) */
}

void proxy_forward(breq_t *b)
{
    const config_t *cfg = b->w->cfg;
    h2o_req_t *req = b->req;
    proxy_state_t *st = calloc(1, sizeof(*st));
    stripe_api_req_t ar = {0};
    const char *res;
    size_t res_len;

    if (st == NULL)
        abort();
    st->b = b;
    st->mode = st->resource = -1;
    b->state = st;
    b->state_free = state_free;
    if (parse_mode_param(b, 1) < 0)
        return;
    st->mode = b->mode;
    /* the path: plain segments only, then its resource against the allow-list */
    if (proxy_path_check(b->params[2], b->param_len[2], &res, &res_len) != 0) {
        breq_error(b, ERR_INVALID_REQUEST,
                   "The Stripe path must be /v1/<resource>[/…] with plain segments (no empty segment, no "
                   "'.' or '..', no encoded character).");
        return;
    }
    memcpy(st->path, b->params[2], b->param_len[2] < LOG_PATH_MAX ? b->param_len[2] : LOG_PATH_MAX);
    set_log(st, NULL);
    if ((st->resource = config_proxy_resource(cfg, res, res_len)) < 0) {
        breq_error(b, ERR_FORBIDDEN, "This Stripe resource is not in the broker's BROKER_PROXY_ALLOW list.");
        return;
    }
    ar.method = (stripe_api_method_t)method_of(req);
    ar.path = b->params[2];
    ar.path_len = b->param_len[2];
    if (req->query_at != SIZE_MAX) {
        ar.query = req->path.base + req->query_at + 1;
        ar.query_len = req->path.len - req->query_at - 1;
        if (proxy_query_check(ar.query, ar.query_len) != 0) {
            breq_error(b, ERR_INVALID_REQUEST, "The query string has characters Stripe does not take.");
            return;
        }
    }
    ar.body = req->entity.base;
    ar.body_len = req->entity.base != NULL ? req->entity.len : 0;
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        int k = proxy_fwd_header(h->name->base, h->name->len);
        if (k < 0 || ar.headers[k] != NULL)
            continue; /* not forwarded, or a repeat: the first counts */
        if (proxy_header_value_check(h->value.base, h->value.len) != 0) {
            breq_error(b, ERR_INVALID_REQUEST, "A forwarded header (Content-Type, Accept, Idempotency-Key or "
                                               "Stripe-Version) is empty, too long or has control characters.");
            return;
        }
        ar.headers[k] = h->value.base;
        ar.header_len[k] = h->value.len;
    }
    if ((st->call = stripe_api_new(&ar)) == NULL) {
        breq_error(b, ERR_STRIPE_UNAVAILABLE, NULL);
        return;
    }
    breq_conn(b, on_conn);
}

/* ===== Errors ===== */

/* The broker's own errors on the proxy's paths: in Stripe's error shape (with the
 * contract's fields), so that a Stripe client reads them as it reads Stripe's. */
static void render_error(breq_t *b, int status, api_err_t e, const char *message)
{
    buf_t out = {0};
    api_err_json_stripe(&out, e, message);
    breq_json(b, status, out.p, out.len);
    buf_free(&out);
}

const route_kind_t route_kind_stripe = {"stripe", render_error, 0, 1};
