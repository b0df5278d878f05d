/* table.c — the route table: every route of the HTTP surface as data (http/router.h
 * says what each column means). Order matters only for paths that two patterns match
 * (none today). Tested end to end by tests/it (every route). */
#include "http/router.h"
#include "routes/params.h"
#include "routes/routes.h"

#define API (&route_kind_api)
#define OPS (&route_kind_api)
#define PAGE (&route_kind_page)
#define STRIPE (&route_kind_stripe)
#define ORG ROUTE_AUTH_ORG
#define ADMIN ROUTE_AUTH_ADMIN
#define NONE ROUTE_AUTH_NONE

/* The proxy's mode is its path's second parameter. */
static int proxy_mode(breq_t *b)
{
    return peek_mode_param(b, 1);
}

const route_t routes_table[] = {
    {"GET", "/healthz", ops_healthz, NONE, OPS, NULL, 0},
    {"GET", "/readyz", ops_readyz, NONE, OPS, NULL, 0},
    {"GET", "/metrics", ops_metrics, NONE, OPS, NULL, 0},
    {"GET", "/openapi.yaml", ops_openapi, NONE, OPS, NULL, 0},
    {"POST", "/v1/admin/orgs/{org_id}/api-keys", admin_keys_create, ADMIN, API, NULL, 0},
    {"GET", "/v1/admin/orgs/{org_id}/api-keys", admin_keys_list, ADMIN, API, NULL, 0},
    {"DELETE", "/v1/admin/orgs/{org_id}/api-keys/{key_id}", admin_keys_delete, ADMIN, API, NULL, 0},
    {"GET", "/v1/orgs/{org_id}/access-token", token_get, ORG, API, peek_mode_query, 0},
    {"POST", "/v1/orgs/{org_id}/access-token/rotate", token_rotate, ORG, API, peek_mode_query, 0},
    {"GET", "/v1/orgs/{org_id}/connections", conn_list, ORG, API, NULL, 0},
    {"DELETE", "/v1/orgs/{org_id}/connections/{mode}", conn_delete, ORG, API, NULL, 0},
    {"POST", "/v1/orgs/{org_id}/authorize-links", links_create, ORG, API, NULL, 0},
    {"PUT", "/v1/orgs/{org_id}/webhook-secrets/{mode}", whsec_put, ORG, API, NULL, 0},
    {"GET", "/v1/orgs/{org_id}/webhook-secrets/{mode}", whsec_get, ORG, API, NULL, 0},
    {"DELETE", "/v1/orgs/{org_id}/webhook-secrets/{mode}", whsec_delete, ORG, API, NULL, 0},
    {"POST", "/v1/orgs/{org_id}/webhook-events/verify", whevents_verify, ORG, API, NULL, 0},
    {"GET", "/setup", setup_open, NONE, PAGE, NULL, 0},
    {"POST", "/setup/authorize", setup_authorize, NONE, PAGE, NULL, 0},
    {"POST", "/setup/webhook-secret", setup_webhook_secret, NONE, PAGE, NULL, 0},
    {"GET", "/setup/style.css", setup_style, NONE, OPS, NULL, 0},
    {"GET", "/oauth/callback", oauth_callback, NONE, PAGE, NULL, 0},
    {"POST", "/webhooks/stripe", webhooks_stripe, NONE, API, NULL, 0},
    /* the proxy forwards GET, POST and DELETE only: a HEAD is refused before any Stripe call */
    {"GET", "/v1/orgs/{org_id}/stripe/{mode}/*", proxy_forward, ORG, STRIPE, proxy_mode, ROUTE_NO_HEAD},
    {"POST", "/v1/orgs/{org_id}/stripe/{mode}/*", proxy_forward, ORG, STRIPE, proxy_mode, 0},
    {"DELETE", "/v1/orgs/{org_id}/stripe/{mode}/*", proxy_forward, ORG, STRIPE, proxy_mode, 0},
    {"GET", "/v1/orgs/{org_id}/audit-events", audit_events_list, ORG, API, NULL, 0},
    {"GET", "/v1/admin/orgs", admin_orgs_list, ADMIN, API, NULL, 0},
};

const int routes_count = (int)(sizeof(routes_table) / sizeof(routes_table[0]));
