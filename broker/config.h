/* config.h — the broker's configuration, read once from the environment (README "Configuration").
 * Every secret may come from NAME_FILE instead of NAME (both set is an error). A bad
 * value produces one line naming the variable and what is wrong, never the value. */
#ifndef BROKER_CONFIG_H
#define BROKER_CONFIG_H
#include <stddef.h>
#include "core/mode.h"
#include "core/netaddr.h"
#include "core/seal.h"

typedef enum oauth_flavor { FLAVOR_CONNECT = 0, FLAVOR_APPS = 1 } oauth_flavor_t;

typedef struct stripe_mode_config {
    int enabled;           /* client id and secret key both set */
    char *client_id;       /* ca_… */
    char *secret_key;      /* sk_… (secret) */
    char *webhook_secret;  /* whsec_… (secret), NULL when unset */
    const char *missing;   /* half configured (so not enabled): the variable not set; else NULL */
} stripe_mode_config_t;

typedef struct config {
    char *listen_host;     /* from BROKER_LISTEN */
    int listen_port;
    char *public_url;      /* no trailing slash */
    int public_https;      /* public_url is https:// (cookies get Secure) */
    char *public_path;     /* public_url's path ("/stripe-broker"), "" when none */
    char *redis_host;      /* NULL when redis_unix is set */
    int redis_port;
    char *redis_unix;      /* unix socket path or NULL */
    char *redis_password;  /* secret, NULL when none */
    int redis_db;
    char *redis_prefix;
    int threads;
    seal_keyring_t keyring;
    char *admin_token;     /* secret */
    oauth_flavor_t flavor;
    int refresh_margin_s;
    int background_refresh_s; /* BROKER_BACKGROUND_REFRESH_S (apps): seconds between passes */
    int rate_ip_per_min;      /* BROKER_RATE_LIMIT_IP_PER_MIN: browser pages and failed authentications, per client, per worker; 0 off */
    int rate_org_per_s;       /* BROKER_RATE_LIMIT_ORG_PER_S: org API, per org, per worker; 0 off */
    cidr_t *trusted_proxies;  /* BROKER_TRUSTED_PROXIES: peers whose X-Forwarded-For names the client */
    size_t trusted_proxies_n;
    int cache_busy_rps;       /* BROKER_CACHE_BUSY_RPS: a worker this busy answers from its read cache; 0 never */
    int upstream_timeout_ms;
    char **return_allow;   /* origin patterns, lower case, e.g. https + "://" + "*.my.site.com" */
    size_t return_allow_n;
    int log_level;         /* 0 debug, 1 info, 2 warn, 3 error */
    stripe_mode_config_t stripe[MODE_COUNT];
    char *connect_url;     /* no trailing slash */
    char *api_url;
    char *marketplace_url;
    char **proxy_allow;    /* BROKER_PROXY_ALLOW: Stripe API resources the proxy forwards ([a-z_]+) */
    size_t proxy_allow_n;  /* at most PROXY_ALLOW_MAX_ENTRIES */
    int proxy_timeout_ms;  /* BROKER_PROXY_TIMEOUT_MS: whole-request limit of one proxied call */
    int audit_retention_days; /* BROKER_AUDIT_RETENTION_DAYS: audit stream entries older are trimmed */
    char *events_url;      /* BROKER_EVENTS_URL: receiver of events out (deploy/salesforce/EVENTS.md), NULL: off */
    char *events_secret;   /* BROKER_EVENTS_SECRET (secret): signs them; set exactly when events_url is */
    int refresh_failing_s; /* BROKER_REFRESH_FAILING_S: transient refresh failures this long: refresh.failing */
    int events_retry_max_s; /* BROKER_EVENTS_RETRY_MAX_S: longest back-off between two attempts */
} config_t;

#define PROXY_ALLOW_MAX_ENTRIES 32
#define PROXY_RESOURCE_MAX_LEN 64

/* Looks up an environment variable; returns NULL when unset. */
typedef const char *(*config_getenv_fn)(const char *name, void *ctx);

/* Fill c from the environment. Returns 0, or -1 with one line ("BROKER_X: …") in err. */
int config_load(config_t *c, config_getenv_fn get, void *ctx, char *err, size_t errlen);
/* Wipe secrets and free everything. */
void config_free(config_t *c);


/* 1 when url is an absolute http(s) URL (no user info, backslash, space, control or
 * non-ASCII character, at most 2048 characters) whose origin (scheme, host, port)
 * matches one of c->return_allow; a leading "*." there matches one or more labels. */
int config_return_url_allowed(const config_t *c, const char *url);
/* The index of resource (len bytes) in c->proxy_allow, or -1 when it is not allowed. */
int config_proxy_resource(const config_t *c, const char *resource, size_t len);
/* 1 when s (n bytes) is the first path segment of one of the broker's routes, which
 * BROKER_PUBLIC_URL's path must not start with (http/router.c checks the route table
 * against this list at start). */
int config_route_segment(const char *s, size_t n);
#endif
