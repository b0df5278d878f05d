/* router.h — the route table's shape, and how a request reaches its handler.
 *
 * A route is data: method, path pattern, handler, who may call it (auth), its kind
 * (how its errors are rendered, whether the page rate limit applies) and, for a route
 * that serves from an org's connection record, how it finds the mode of that record.
 * The table itself is the routes' (routes/table.c); this module matches a request
 * against it, answers 404 / 405 (with Allow) / 413, authenticates API routes (an org key
 * of the org the path names, or the admin token), charges the rate limits
 * (http/ratelimit.h) and runs the handler.
 *
 * The fused read: a route that declares conn_mode reads the connection of {org, mode}.
 * For an org-key caller whose mode is valid the router reads the key record and that
 * connection together, in one MGET, or not at all when the worker's read cache may
 * serve both (store/rcache.h: reserved before the read, so that a racing change wins);
 * it checks the key, charges the org's allowance, runs the handler, and the handler's
 * breq_conn() gets the connection already read. An admin caller, or a handler that asks
 * later, gets the connection read alone (one GET, not cached). A mode that is not valid
 * takes the common path (the key record alone), so that the key is judged before the
 * mode on every route.
 *
 * Single threaded per worker; the table is read-only once router_init has run. */
#ifndef BROKER_HTTP_ROUTER_H
#define BROKER_HTTP_ROUTER_H
#include "http/breq.h"
#include "store/rcache.h"

typedef void (*route_fn)(breq_t *b);
/* Answer b with error e (status is api_err_status(e)); message NULL: the default. */
typedef void (*route_error_fn)(breq_t *b, int status, api_err_t e, const char *message);

/* What routes of one kind share. */
typedef struct route_kind {
    const char *name;
    route_error_fn render_error; /* how breq_error answers on these routes */
    int page_limit;              /* the browser-page rate limit applies (http/ratelimit.h) */
    int shapes_405;              /* a 405 on one of its paths is rendered by this kind too */
} route_kind_t;

/* The JSON error of the API (proto/openapi.yaml): the kind of API and ops routes, and
 * of every answer not tied to a route (404, 405, 413 before matching). */
extern const route_kind_t route_kind_api;

enum route_auth { ROUTE_AUTH_NONE, ROUTE_AUTH_ORG, ROUTE_AUTH_ADMIN };

#define ROUTE_NO_HEAD 1u /* a GET route that does not also serve HEAD (405 instead) */

typedef struct route {
    const char *method;
    const char *pattern; /* segments; "{org_id}" is normalised, other "{…}" are captured; a
                          * last "*" captures the rest of the path (one segment or more) */
    route_fn fn;
    enum route_auth auth;
    const route_kind_t *kind;
    /* The fused read (above): sets b->mode and returns it when the request names a valid,
     * enabled mode, else -1 without answering (the handler reports it). NULL: the route
     * reads no connection through the router. */
    int (*conn_mode)(breq_t *b);
    unsigned flags; /* ROUTE_* */
} route_t;

/* Take the table (kept, never copied: static data). Aborts on a pattern the config's
 * path check (config_route_segment) does not know. */
void router_init(const route_t *table, int n);
/* The number of routes; route index router_count() is the "unmatched" bucket. */
int router_count(void);
/* The pattern of route i, "unmatched" for router_count(). */
const char *router_pattern(int i);
/* Match b's request and run it (answers it, now or later). */
void router_run(breq_t *b);

/* The connection value of b->org / b->mode (NULL when absent) and its read-cache entry
 * (NULL when not cached; valid during the call). */
typedef void (*breq_conn_cb)(breq_t *b, const char *val, size_t len, rcache_entry_t *e);
/* Called by a conn_mode route's handler once b->mode is known: cb runs at once with what
 * the fused read fetched, or after one GET (admin callers; answered 503
 * store_unavailable when Redis fails, and cb not called). */
void breq_conn(breq_t *b, breq_conn_cb cb);
#endif
