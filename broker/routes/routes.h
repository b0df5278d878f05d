/* routes.h — the HTTP surface: one handler per route, grouped one file per resource,
 * and the route table (table.c). The router (http/router.h) has already matched the path
 * and method, authenticated the bearer for API routes (b->is_admin, or an org key of
 * b->org) and normalised the org id into b->org before a handler runs. Handlers answer
 * through breq_*; a route kind renders its routes' errors. */
#ifndef BROKER_ROUTES_H
#define BROKER_ROUTES_H
#include "core/paging.h"
#include "http/router.h"
#include "http/breq.h"
#include "store/keys.h"
#include "store/audit.h"

/* table.c — every route; routes_count of them */
extern const route_t routes_table[];
extern const int routes_count;
/* pages.c — HTML pages: errors as an error page, the browser-page rate limit */
extern const route_kind_t route_kind_page;
/* proxy.c — the Stripe proxy: errors in Stripe's shape, a 405 on its paths as well */
extern const route_kind_t route_kind_stripe;

/* ops.c */
void ops_healthz(breq_t *b);
void ops_readyz(breq_t *b);
void ops_metrics(breq_t *b);
void ops_openapi(breq_t *b);
/* admin.c */
void admin_keys_create(breq_t *b);
void admin_keys_list(breq_t *b);
void admin_keys_delete(breq_t *b);
/* token.c — getAccessToken and rotation; the hot path (getAccessToken reads its
 * connection through the router's fused read: breq_conn) */
void token_get(breq_t *b);
void token_rotate(breq_t *b);
/* The record to serve for b->org / b->mode, obtained the way getAccessToken obtains it,
 * from the stored connection value val (NULL when absent): returns 1 with *rec and
 * *version filled when it can be served as it is (the caller conn_record_clear()s it);
 * else 0, with rec cleared, when b was answered with the error or token_service runs
 * (test minted from live, apps refresh) and calls cb. */
int token_serving_record(breq_t *b, const char *val, size_t len, conn_record_t *rec, long *version,
                         breq_token_cb cb);
/* proxy.c — the Stripe proxy (README "The path a capture takes") */
void proxy_forward(breq_t *b);
/* connections.c — connections, authorize links, webhook secrets */
void conn_list(breq_t *b);
void conn_delete(breq_t *b);
void links_create(breq_t *b);
void whsec_put(breq_t *b);
void whsec_get(breq_t *b);
void whsec_delete(breq_t *b);
void whevents_verify(breq_t *b);
/* Seal and store a webhook signing secret for b->org / b->mode, then run cb (shared
 * by the API and the setup page). */
void whsec_store(breq_t *b, const char *secret, breq_redis_cb cb);
/* setup.c — the setup assistant pages */
void setup_open(breq_t *b);
void setup_authorize(breq_t *b);
void setup_webhook_secret(breq_t *b);
void setup_style(breq_t *b);
/* oauth.c — Stripe's redirect back */
void oauth_callback(breq_t *b);
/* audit.c — the audit trail's read (proto/openapi.yaml) */
void audit_events_list(breq_t *b);
/* The audit tail (store/audit.h) of a change made by b's caller (admin, org key, or the
 * broker when neither): b->org, b->request_id; free with audit_tail_free. */
void breq_audit_tail(breq_t *b, audit_tail_t *t, const char *type, int mode, const char *details_json,
                     const char *out_type, const char *out_data_json);
/* The raw query string of b (no '?'; NULL and 0 when there is none). */
const char *breq_query_string(breq_t *b, size_t *len);
/* The paging parameters of list (a paging_list_t) into *p (core/paging.h): 0, or -1 when
 * b was answered 400 invalid_request. */
int breq_paging(breq_t *b, int list, paging_t *p);
/* fleet.c — the fleet view (proto/openapi.yaml) */
void admin_orgs_list(breq_t *b);
/* webhooks.c — Stripe's webhooks */
void webhooks_stripe(breq_t *b);
#endif
