/* test_config.c — configuration from the environment (CONTRACT §2): defaults, every
 * variable, NAME_FILE, and error lines that name the variable and never the value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define ADMIN "admin-token-0123456789abcdef0123456789"

/* ===== A fake environment ===== */

#define ENV_MAX 48

typedef struct fake_env {
    const char *names[ENV_MAX];
    const char *values[ENV_MAX];
    size_t n;
} fake_env_t;

static const char *fake_getenv(const char *name, void *ctx)
{
    fake_env_t *e = ctx;
    size_t i;

    for (i = 0; i < e->n; i++)
        if (strcmp(e->names[i], name) == 0)
            return e->values[i];
    return NULL;
}

/* Set (value non-NULL) or unset (NULL) a variable. */
static void env_set(fake_env_t *e, const char *name, const char *value)
{
    size_t i;

    for (i = 0; i < e->n; i++) {
        if (strcmp(e->names[i], name) == 0) {
            if (value != NULL) {
                e->values[i] = value;
            } else {
                e->n--;
                e->names[i] = e->names[e->n];
                e->values[i] = e->values[e->n];
            }
            return;
        }
    }
    if (value != NULL) {
        assert_true(e->n < ENV_MAX);
        e->names[e->n] = name;
        e->values[e->n++] = value;
    }
}

/* The smallest valid environment. */
static fake_env_t minimal_env(void)
{
    fake_env_t e = {{0}, {0}, 0};

    env_set(&e, "BROKER_PUBLIC_URL", "https://broker.example.com");
    env_set(&e, "BROKER_ENCRYPTION_KEYS", "k1:" KEY_A);
    env_set(&e, "BROKER_ADMIN_TOKEN", ADMIN);
    env_set(&e, "STRIPE_CLIENT_ID_TEST", "ca_test_1");
    env_set(&e, "STRIPE_SECRET_KEY_TEST", "sk_test_1");
    return e;
}

static int load(fake_env_t *e, config_t *c, char *err, size_t errlen)
{
    return config_load(c, fake_getenv, e, err, errlen);
}

/* Load e expecting success; the caller frees c. */
static void load_ok(fake_env_t *e, config_t *c)
{
    char err[256] = "";

    if (load(e, c, err, sizeof(err)) != 0)
        fail_msg("config_load failed: %s", err);
}

/* Load e expecting an error that starts with "<var>: ". */
static void load_fails(fake_env_t *e, const char *var, char *err, size_t errlen)
{
    config_t c;
    size_t n = strlen(var);

    if (load(e, &c, err, errlen) != -1)
        fail_msg("accepted a bad %s", var);
    if (strncmp(err, var, n) != 0 || strncmp(err + n, ": ", 2) != 0)
        fail_msg("error \"%s\" does not start with \"%s: \"", err, var);
    assert_null(c.public_url); /* freed and zeroed */
}

/* ===== Defaults and values ===== */

static void test_config_minimal_env_gets_defaults(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.public_url, "https://broker.example.com");
    assert_int_equal(c.public_https, 1);
    assert_string_equal(c.redis_host, "127.0.0.1");
    assert_int_equal(c.redis_port, 6379);
    assert_int_equal(c.redis_db, 0);
    assert_null(c.redis_unix);
    assert_null(c.redis_password);
    assert_string_equal(c.redis_prefix, "stb:");
    assert_true(c.threads >= 1 && c.threads <= 256);
    assert_int_equal(c.keyring.n, 1);
    assert_string_equal(c.admin_token, ADMIN);
    assert_int_equal(c.flavor, FLAVOR_CONNECT);
    assert_int_equal(c.refresh_margin_s, 300);
    assert_int_equal(c.upstream_timeout_ms, 5000);
    assert_int_equal(c.return_allow_n, 4);
    assert_string_equal(c.return_allow[0], "https://*.my.salesforce.com");
    assert_string_equal(c.return_allow[3], "https://*.force.com");
    assert_int_equal(c.log_level, 1);
    assert_int_equal(c.stripe[MODE_TEST].enabled, 1);
    assert_string_equal(c.stripe[MODE_TEST].client_id, "ca_test_1");
    assert_string_equal(c.stripe[MODE_TEST].secret_key, "sk_test_1");
    assert_null(c.stripe[MODE_TEST].webhook_secret);
    assert_int_equal(c.stripe[MODE_LIVE].enabled, 0);
    assert_string_equal(c.connect_url, "https://connect.stripe.com");
    assert_string_equal(c.api_url, "https://api.stripe.com");
    assert_string_equal(c.marketplace_url, "https://marketplace.stripe.com");
    assert_int_equal(c.proxy_allow_n, 8);
    assert_string_equal(c.proxy_allow[0], "payment_intents");
    assert_string_equal(c.proxy_allow[7], "disputes");
    assert_int_equal(config_proxy_resource(&c, "refunds", 7), 2);
    assert_int_equal(config_proxy_resource(&c, "refund", 6), -1);
    assert_int_equal(config_proxy_resource(&c, "accounts", 8), -1);
    assert_int_equal(c.proxy_timeout_ms, 30000);
    assert_int_equal(c.audit_retention_days, 400);
    assert_int_equal(c.refresh_failing_s, 900);
    assert_int_equal(c.events_retry_max_s, 600);
    assert_null(c.events_url);
    assert_null(c.events_secret);
    config_free(&c);
    assert_null(c.admin_token);
}

static void test_config_events_variables(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_EVENTS_URL", "https://hooks.example.com/broker/");
    env_set(&e, "BROKER_EVENTS_SECRET", "evsec_0123456789abcdef");
    env_set(&e, "BROKER_AUDIT_RETENTION_DAYS", "30");
    load_ok(&e, &c);
    assert_string_equal(c.events_url, "https://hooks.example.com/broker");
    assert_string_equal(c.events_secret, "evsec_0123456789abcdef");
    assert_int_equal(c.audit_retention_days, 30);
    config_free(&c);
    env_set(&e, "BROKER_EVENTS_URL", "http://127.0.0.1:9000/in");
    load_ok(&e, &c);
    assert_string_equal(c.events_url, "http://127.0.0.1:9000/in");
    config_free(&c);
    /* without the secret it is an error naming the secret */
    env_set(&e, "BROKER_EVENTS_SECRET", NULL);
    char err[256];
    load_fails(&e, "BROKER_EVENTS_SECRET", err, sizeof(err));
}

static void test_config_proxy_variables(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_PROXY_ALLOW", " refunds ,payment_intents");
    env_set(&e, "BROKER_PROXY_TIMEOUT_MS", "120000");
    load_ok(&e, &c);
    assert_int_equal(c.proxy_allow_n, 2);
    assert_string_equal(c.proxy_allow[0], "refunds");
    assert_string_equal(c.proxy_allow[1], "payment_intents");
    assert_int_equal(config_proxy_resource(&c, "payment_intents", 15), 1);
    assert_int_equal(config_proxy_resource(&c, "charges", 7), -1);
    assert_int_equal(c.proxy_timeout_ms, 120000);
    config_free(&c);
}

static void test_config_reads_every_variable(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_LISTEN", "0.0.0.0:9090");
    env_set(&e, "BROKER_PUBLIC_URL", "http://localhost:8080/broker/");
    env_set(&e, "BROKER_REDIS_URL", "redis://:p%40ss@redis.internal:6380/3");
    env_set(&e, "BROKER_REDIS_PREFIX", "stb-prod:");
    env_set(&e, "BROKER_THREADS", "7");
    env_set(&e, "BROKER_ENCRYPTION_KEYS", "k2:" KEY_A ",k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
    env_set(&e, "BROKER_OAUTH_FLAVOR", "apps");
    env_set(&e, "BROKER_REFRESH_MARGIN_S", "0");
    env_set(&e, "BROKER_UPSTREAM_TIMEOUT_MS", "120000");
    env_set(&e, "BROKER_RETURN_URL_ALLOW", "https://*.Example.COM, http://localhost:3000/");
    env_set(&e, "BROKER_LOG_LEVEL", "error");
    env_set(&e, "BROKER_TRUSTED_PROXIES", " 10.0.0.0/8, fd00::/8 ,192.168.1.7");
    env_set(&e, "STRIPE_CLIENT_ID_LIVE", "ca_live_1");
    env_set(&e, "STRIPE_SECRET_KEY_LIVE", "sk_live_1");
    env_set(&e, "STRIPE_WEBHOOK_SECRET_TEST", "whsec_t");
    env_set(&e, "STRIPE_WEBHOOK_SECRET_LIVE", "whsec_l");
    env_set(&e, "STRIPE_CONNECT_URL", "http://127.0.0.1:12111/");
    env_set(&e, "STRIPE_API_URL", "http://[::1]:12111");
    env_set(&e, "STRIPE_MARKETPLACE_URL", "https://market.example.com//");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 9090);
    assert_string_equal(c.public_url, "http://localhost:8080/broker");
    assert_int_equal(c.public_https, 0);
    assert_string_equal(c.redis_host, "redis.internal");
    assert_int_equal(c.redis_port, 6380);
    assert_string_equal(c.redis_password, "p@ss");
    assert_int_equal(c.redis_db, 3);
    assert_string_equal(c.redis_prefix, "stb-prod:");
    assert_int_equal(c.trusted_proxies_n, 3);
    assert_int_equal(c.trusted_proxies[0].bits, 96 + 8);
    assert_int_equal(c.trusted_proxies[1].bits, 8);
    assert_int_equal(c.trusted_proxies[2].bits, 128);
    assert_int_equal(c.threads, 7);
    assert_int_equal(c.keyring.n, 2);
    assert_string_equal(c.keyring.keys[0].kid, "k2");
    assert_int_equal(c.flavor, FLAVOR_APPS);
    assert_int_equal(c.refresh_margin_s, 0);
    assert_int_equal(c.upstream_timeout_ms, 120000);
    assert_int_equal(c.return_allow_n, 2);
    assert_string_equal(c.return_allow[0], "https://*.example.com");
    assert_string_equal(c.return_allow[1], "http://localhost:3000");
    assert_int_equal(c.log_level, 3);
    assert_int_equal(c.stripe[MODE_LIVE].enabled, 1);
    assert_string_equal(c.stripe[MODE_LIVE].secret_key, "sk_live_1");
    assert_string_equal(c.stripe[MODE_TEST].webhook_secret, "whsec_t");
    assert_string_equal(c.stripe[MODE_LIVE].webhook_secret, "whsec_l");
    assert_string_equal(c.connect_url, "http://127.0.0.1:12111");
    assert_string_equal(c.api_url, "http://[::1]:12111");
    assert_string_equal(c.marketplace_url, "https://market.example.com");
    config_free(&c);
}

static void test_config_listen_accepts_ipv6_in_brackets(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_LISTEN", "[::]:8443");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "::");
    assert_int_equal(c.listen_port, 8443);
    config_free(&c);
}

static void test_config_redis_accepts_unix_socket(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_REDIS_URL", "unix:///run/redis/redis.sock?db=5");
    load_ok(&e, &c);
    assert_string_equal(c.redis_unix, "/run/redis/redis.sock");
    assert_null(c.redis_host);
    assert_int_equal(c.redis_db, 5);
    config_free(&c);
    env_set(&e, "BROKER_REDIS_URL", "unix:///tmp/r.sock");
    load_ok(&e, &c);
    assert_string_equal(c.redis_unix, "/tmp/r.sock");
    assert_int_equal(c.redis_db, 0);
    config_free(&c);
}

static void test_config_redis_port_and_db_default(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_REDIS_URL", "redis://cache");
    load_ok(&e, &c);
    assert_string_equal(c.redis_host, "cache");
    assert_int_equal(c.redis_port, 6379);
    assert_int_equal(c.redis_db, 0);
    config_free(&c);
    env_set(&e, "BROKER_REDIS_URL", "redis://[::1]:7000/");
    load_ok(&e, &c);
    assert_string_equal(c.redis_host, "::1");
    assert_int_equal(c.redis_port, 7000);
    config_free(&c);
}

static void test_config_redis_password_may_contain_at_sign(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_REDIS_URL", "redis://:p@ss@redis:6379/1");
    load_ok(&e, &c);
    assert_string_equal(c.redis_password, "p@ss");
    assert_string_equal(c.redis_host, "redis");
    assert_int_equal(c.redis_db, 1);
    config_free(&c);
}

static void test_config_only_live_mode_is_enough(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "STRIPE_CLIENT_ID_TEST", NULL);
    env_set(&e, "STRIPE_SECRET_KEY_TEST", NULL);
    env_set(&e, "STRIPE_CLIENT_ID_LIVE", "ca_live");
    env_set(&e, "STRIPE_SECRET_KEY_LIVE", "sk_live_1");
    load_ok(&e, &c);
    assert_int_equal(c.stripe[MODE_TEST].enabled, 0);
    assert_int_equal(c.stripe[MODE_LIVE].enabled, 1);
    config_free(&c);
}

/* ===== Errors ===== */

typedef struct bad_var {
    const char *var;   /* variable to set (NULL value: unset it) */
    const char *value;
    const char *named; /* the variable the error must name */
} bad_var_t;

static const bad_var_t BAD_VALUES[] = {
    {"BROKER_LISTEN", "8080", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "127.0.0.1", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "127.0.0.1:0", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "127.0.0.1:65536", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "127.0.0.1:80x", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "::1:8080", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "[::1:8080", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "[zz]:8080", "BROKER_LISTEN"},
    {"BROKER_LISTEN", ":8080", "BROKER_LISTEN"},
    {"BROKER_PUBLIC_URL", NULL, "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "broker.example.com", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "ftp://broker.example.com", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https://", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https:///path", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https://b.example.com/?x=1", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https://b.example.com#frag", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https://user:pw@b.example.com", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https://b.example.com /x", "BROKER_PUBLIC_URL"},
    {"BROKER_PUBLIC_URL", "https://b..example.com", "BROKER_PUBLIC_URL"},
    {"BROKER_REDIS_URL", "http://127.0.0.1:6379", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "rediss://127.0.0.1:6379", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://host:0", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://host:6379/x", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://host:6379/-1", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://host:6379/0?timeout=1", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://user:hunter2hunter2@host", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://:@host", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "redis://:hunter2%zzhunter2@host", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "unix://relative.sock", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "unix:///", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_URL", "unix:///tmp/r.sock?database=1", "BROKER_REDIS_URL"},
    {"BROKER_REDIS_PREFIX", "has space", "BROKER_REDIS_PREFIX"},
    {"BROKER_REDIS_PREFIX", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "BROKER_REDIS_PREFIX"},
    {"BROKER_THREADS", "0", "BROKER_THREADS"},
    {"BROKER_THREADS", "257", "BROKER_THREADS"},
    {"BROKER_THREADS", "-1", "BROKER_THREADS"},
    {"BROKER_THREADS", "+4", "BROKER_THREADS"},
    {"BROKER_THREADS", " 4", "BROKER_THREADS"},
    {"BROKER_THREADS", "4 ", "BROKER_THREADS"},
    {"BROKER_THREADS", "0x10", "BROKER_THREADS"},
    {"BROKER_THREADS", "99999999999999999999999", "BROKER_THREADS"},
    {"BROKER_ENCRYPTION_KEYS", NULL, "BROKER_ENCRYPTION_KEYS"},
    {"BROKER_ENCRYPTION_KEYS", "k1:c2hvcnQ=", "BROKER_ENCRYPTION_KEYS"},
    {"BROKER_ENCRYPTION_KEYS", "k1:" KEY_A ",k1:" KEY_A, "BROKER_ENCRYPTION_KEYS"},
    {"BROKER_ADMIN_TOKEN", NULL, "BROKER_ADMIN_TOKEN"},
    {"BROKER_ADMIN_TOKEN", "short-admin-token", "BROKER_ADMIN_TOKEN"},
    {"BROKER_ADMIN_TOKEN", "admin token with spaces 0123456789abcdef", "BROKER_ADMIN_TOKEN"},
    {"BROKER_ADMIN_TOKEN", "admin-token-with-tab\t0123456789abcdef", "BROKER_ADMIN_TOKEN"},
    {"BROKER_OAUTH_FLAVOR", "standard", "BROKER_OAUTH_FLAVOR"},
    {"BROKER_OAUTH_FLAVOR", "Connect", "BROKER_OAUTH_FLAVOR"},
    {"BROKER_REFRESH_MARGIN_S", "86401", "BROKER_REFRESH_MARGIN_S"},
    {"BROKER_REFRESH_MARGIN_S", "5m", "BROKER_REFRESH_MARGIN_S"},
    {"BROKER_UPSTREAM_TIMEOUT_MS", "99", "BROKER_UPSTREAM_TIMEOUT_MS"},
    {"BROKER_UPSTREAM_TIMEOUT_MS", "120001", "BROKER_UPSTREAM_TIMEOUT_MS"},
    {"BROKER_RETURN_URL_ALLOW", "*.force.com", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_RETURN_URL_ALLOW", "https://a.*.force.com", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_RETURN_URL_ALLOW", "https://*force.com", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_RETURN_URL_ALLOW", "https://*", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_RETURN_URL_ALLOW", "https://x.force.com/path", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_RETURN_URL_ALLOW", "https://x.force.com,,https://y.force.com", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_RETURN_URL_ALLOW", "https://x.force.com:0", "BROKER_RETURN_URL_ALLOW"},
    {"BROKER_TRUSTED_PROXIES", "10.0.0.0/8,ingress", "BROKER_TRUSTED_PROXIES"},
    {"BROKER_TRUSTED_PROXIES", "10.0.0.0/33", "BROKER_TRUSTED_PROXIES"},
    {"BROKER_TRUSTED_PROXIES", "::/129", "BROKER_TRUSTED_PROXIES"},
    {"BROKER_TRUSTED_PROXIES", "10.0.0.1,,10.0.0.2", "BROKER_TRUSTED_PROXIES"},
    {"BROKER_TRUSTED_PROXIES", "10.0.0.1:80", "BROKER_TRUSTED_PROXIES"},
    {"BROKER_PROXY_ALLOW", "refunds,,charges", "BROKER_PROXY_ALLOW"},
    {"BROKER_PROXY_ALLOW", "Refunds", "BROKER_PROXY_ALLOW"},
    {"BROKER_PROXY_ALLOW", "refunds/x", "BROKER_PROXY_ALLOW"},
    {"BROKER_PROXY_ALLOW", "payment-intents", "BROKER_PROXY_ALLOW"},
    {"BROKER_PROXY_ALLOW", "refunds,refunds", "BROKER_PROXY_ALLOW"},
    {"BROKER_PROXY_ALLOW", "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,aa,ab,ac,ad,ae,af,ag", "BROKER_PROXY_ALLOW"},
    {"BROKER_PROXY_TIMEOUT_MS", "99", "BROKER_PROXY_TIMEOUT_MS"},
    {"BROKER_PROXY_TIMEOUT_MS", "120001", "BROKER_PROXY_TIMEOUT_MS"},
    {"BROKER_PROXY_TIMEOUT_MS", "30s", "BROKER_PROXY_TIMEOUT_MS"},
    {"BROKER_AUDIT_RETENTION_DAYS", "0", "BROKER_AUDIT_RETENTION_DAYS"},
    {"BROKER_AUDIT_RETENTION_DAYS", "36501", "BROKER_AUDIT_RETENTION_DAYS"},
    {"BROKER_REFRESH_FAILING_S", "0", "BROKER_REFRESH_FAILING_S"},
    {"BROKER_EVENTS_RETRY_MAX_S", "3601", "BROKER_EVENTS_RETRY_MAX_S"},
    {"BROKER_EVENTS_URL", "http://hooks.example.com", "BROKER_EVENTS_URL"},
    {"BROKER_EVENTS_URL", "ftp://127.0.0.1/x", "BROKER_EVENTS_URL"},
    {"BROKER_EVENTS_SECRET", "evsec_0123456789abcdef", "BROKER_EVENTS_URL"},
    {"BROKER_LOG_LEVEL", "trace", "BROKER_LOG_LEVEL"},
    {"BROKER_LOG_LEVEL", "INFO", "BROKER_LOG_LEVEL"},
    {"STRIPE_SECRET_KEY_TEST", NULL, "STRIPE_SECRET_KEY_TEST"},
    {"STRIPE_CLIENT_ID_TEST", NULL, "STRIPE_CLIENT_ID_TEST"},
    {"STRIPE_CLIENT_ID_TEST", "ca test", "STRIPE_CLIENT_ID_TEST"},
    {"STRIPE_SECRET_KEY_TEST", "sk_test_1\n", "STRIPE_SECRET_KEY_TEST"},
    {"STRIPE_SECRET_KEY_TEST", "", "STRIPE_SECRET_KEY_TEST"},
    {"STRIPE_SECRET_KEY_TEST", "sk_live_1", "STRIPE_SECRET_KEY_TEST"},
    {"STRIPE_SECRET_KEY_TEST", "pk_test_1", "STRIPE_SECRET_KEY_TEST"},
    {"STRIPE_CLIENT_ID_TEST", "pk_test_1", "STRIPE_CLIENT_ID_TEST"},
    {"BROKER_LISTEN", "256.1.1.1:8080", "BROKER_LISTEN"},
    {"BROKER_LISTEN", "[::g]:8080", "BROKER_LISTEN"},
    {"STRIPE_WEBHOOK_SECRET_LIVE", "whsec x", "STRIPE_WEBHOOK_SECRET_LIVE"},
    {"STRIPE_CONNECT_URL", "http://connect.stripe.com", "STRIPE_CONNECT_URL"},
    {"STRIPE_CONNECT_URL", "http://128.0.0.1:1234", "STRIPE_CONNECT_URL"},
    {"STRIPE_CONNECT_URL", "http://localhost.evil.com", "STRIPE_CONNECT_URL"},
    {"STRIPE_CONNECT_URL", "http://[::2]:80", "STRIPE_CONNECT_URL"},
    {"STRIPE_API_URL", "https://api.stripe.com?x", "STRIPE_API_URL"},
    {"STRIPE_API_URL", "api.stripe.com", "STRIPE_API_URL"},
    {"STRIPE_MARKETPLACE_URL", "http://marketplace.stripe.com", "STRIPE_MARKETPLACE_URL"},
};

/* The comma lists (BROKER_RETURN_URL_ALLOW, BROKER_TRUSTED_PROXIES, BROKER_PROXY_ALLOW):
 * the whole error line, which names the entry that failed by its place, never its value. */
typedef struct list_error {
    const char *var, *value, *err;
} list_error_t;

static void test_config_comma_lists_name_the_entry_that_fails(void **state)
{
    static char many_origins[65 * 24], many_proxies[65 * 12], many_resources[33 * 4];
    size_t i;
    many_origins[0] = many_proxies[0] = many_resources[0] = '\0';
    for (i = 0; i < 65; i++) {
        snprintf(many_origins + strlen(many_origins), 24, "%shttps://o%zu.force.com", i ? "," : "", i);
        snprintf(many_proxies + strlen(many_proxies), 12, "%s10.0.0.%zu", i ? "," : "", i);
    }
    for (i = 0; i < 33; i++)
        snprintf(many_resources + strlen(many_resources), 5, "%sr%c%c", i ? "," : "", 'a' + (int)(i / 26),
                 'a' + (int)(i % 26));
    const list_error_t cases[] = {
        {"BROKER_RETURN_URL_ALLOW", "https://a.force.com, ,https://b.force.com",
         "BROKER_RETURN_URL_ALLOW: entry 2: empty entry"},
        {"BROKER_RETURN_URL_ALLOW", many_origins, "BROKER_RETURN_URL_ALLOW: too many entries (at most 64)"},
        {"BROKER_TRUSTED_PROXIES", "10.0.0.1,\t,10.0.0.2",
         "BROKER_TRUSTED_PROXIES: entry 2 is not an IPv4 or IPv6 address or CIDR range (10.0.0.0/8, fd00::/8)"},
        {"BROKER_TRUSTED_PROXIES", "10.0.0.1,fd00::/8,ingress",
         "BROKER_TRUSTED_PROXIES: entry 3 is not an IPv4 or IPv6 address or CIDR range (10.0.0.0/8, fd00::/8)"},
        {"BROKER_TRUSTED_PROXIES", many_proxies, "BROKER_TRUSTED_PROXIES: too many entries (at most 64)"},
        {"BROKER_PROXY_ALLOW", "refunds,charges,Charges",
         "BROKER_PROXY_ALLOW: entry 3: not a Stripe resource name (lower-case letters and _)"},
        {"BROKER_PROXY_ALLOW", " refunds , refunds", "BROKER_PROXY_ALLOW: entry 2: listed twice"},
        {"BROKER_PROXY_ALLOW", "refunds,", "BROKER_PROXY_ALLOW: entry 2: empty entry"},
        {"BROKER_PROXY_ALLOW", many_resources, "BROKER_PROXY_ALLOW: entry 33: too many entries (at most 32)"},
    };
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_env_t e = minimal_env();
        char err[256];
        env_set(&e, cases[i].var, cases[i].value);
        load_fails(&e, cases[i].var, err, sizeof(err));
        if (strcmp(err, cases[i].err) != 0)
            fail_msg("case %zu: \"%s\", expected \"%s\"", i, err, cases[i].err);
    }
}

static void test_config_rejects_bad_values_naming_the_variable(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(BAD_VALUES) / sizeof(BAD_VALUES[0]); i++) {
        const bad_var_t *b = &BAD_VALUES[i];
        fake_env_t e = minimal_env();
        char err[256];
        env_set(&e, b->var, b->value);
        load_fails(&e, b->named, err, sizeof(err));
        if (b->value != NULL && strlen(b->value) >= 6 && strstr(err, b->value) != NULL)
            fail_msg("error \"%s\" contains the value", err);
    }
}

static void test_config_requires_one_stripe_mode(void **state)
{
    fake_env_t e = minimal_env();
    char err[256];

    env_set(&e, "STRIPE_CLIENT_ID_TEST", NULL);
    env_set(&e, "STRIPE_SECRET_KEY_TEST", NULL);
    load_fails(&e, "STRIPE_CLIENT_ID_TEST", err, sizeof(err));
}

static void test_config_half_a_pair_leaves_its_mode_disabled(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;
    char err[256];

    /* CONTRACT §2: a mode is enabled when both are set; half a pair is not an error while
     * another mode is enabled */
    env_set(&e, "STRIPE_SECRET_KEY_LIVE", "sk_live_x");
    assert_int_equal(config_load(&c, fake_getenv, &e, err, sizeof(err)), 0);
    assert_true(c.stripe[MODE_TEST].enabled);
    assert_false(c.stripe[MODE_LIVE].enabled);
    assert_null(c.stripe[MODE_TEST].missing);
    assert_string_equal(c.stripe[MODE_LIVE].missing, "STRIPE_CLIENT_ID_LIVE");
    config_free(&c);

    env_set(&e, "STRIPE_SECRET_KEY_LIVE", NULL);
    env_set(&e, "STRIPE_CLIENT_ID_LIVE", "ca_live");
    assert_int_equal(config_load(&c, fake_getenv, &e, err, sizeof(err)), 0);
    assert_false(c.stripe[MODE_LIVE].enabled);
    assert_string_equal(c.stripe[MODE_LIVE].missing, "STRIPE_SECRET_KEY_LIVE");
    config_free(&c);

    /* with no mode left, the error names the variable missing */
    env_set(&e, "STRIPE_SECRET_KEY_TEST", NULL);
    load_fails(&e, "STRIPE_SECRET_KEY_TEST", err, sizeof(err));
    assert_null(strstr(err, "ca_live"));
}

static void test_config_errors_never_contain_secrets(void **state)
{
    static const char *const secret_vars[] = {
        "BROKER_ADMIN_TOKEN", "BROKER_ENCRYPTION_KEYS", "BROKER_REDIS_URL",
        "STRIPE_SECRET_KEY_TEST", "STRIPE_WEBHOOK_SECRET_TEST", "STRIPE_CLIENT_ID_TEST",
    };
    /* values that are wrong and carry a recognisable marker */
    static const char *const values[] = {
        "MARKERsecret value with spaces 0123456789abcdef",
        "MARKER:notbase64!!",
        "redis://:MARKERpw@host:notaport",
    };
    size_t i, j;

    for (i = 0; i < sizeof(secret_vars) / sizeof(secret_vars[0]); i++) {
        for (j = 0; j < sizeof(values) / sizeof(values[0]); j++) {
            fake_env_t e = minimal_env();
            config_t c;
            char err[256] = "";
            env_set(&e, secret_vars[i], values[j]);
            if (load(&e, &c, err, sizeof(err)) == 0) {
                config_free(&c);
                continue;
            }
            if (strstr(err, "MARKER") != NULL)
                fail_msg("%s: error \"%s\" leaks the value", secret_vars[i], err);
        }
    }
}

static void test_config_error_fits_small_buffers(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;
    char err[8];

    env_set(&e, "BROKER_THREADS", "x");
    assert_int_equal(load(&e, &c, err, sizeof(err)), -1);
    assert_string_equal(err, "BROKER_");
    assert_int_equal(load(&e, &c, NULL, 0), -1);
}

/* ===== NAME_FILE ===== */

/* Write contents to a fresh temporary file; returns its path (static storage). */
static const char *temp_file(const char *contents, size_t len)
{
    static char paths[8][64];
    static int next;
    char *path = paths[next++ % 8];
    int fd;

    strcpy(path, "/tmp/stb-config-test-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, contents, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_config_file_variant_strips_one_newline(void **state)
{
    fake_env_t e = minimal_env();
    const char *crlf = temp_file("sk_test_fromfile\r\n", 18);
    const char *lf = temp_file(ADMIN "\n", strlen(ADMIN) + 1);
    const char *none = temp_file("k1:" KEY_A, strlen("k1:" KEY_A));
    config_t c;

    env_set(&e, "STRIPE_SECRET_KEY_TEST", NULL);
    env_set(&e, "STRIPE_SECRET_KEY_TEST_FILE", crlf);
    env_set(&e, "BROKER_ADMIN_TOKEN", NULL);
    env_set(&e, "BROKER_ADMIN_TOKEN_FILE", lf);
    env_set(&e, "BROKER_ENCRYPTION_KEYS", NULL);
    env_set(&e, "BROKER_ENCRYPTION_KEYS_FILE", none);
    load_ok(&e, &c);
    assert_string_equal(c.stripe[MODE_TEST].secret_key, "sk_test_fromfile");
    assert_string_equal(c.admin_token, ADMIN);
    assert_int_equal(c.keyring.n, 1);
    config_free(&c);
    unlink(crlf);
    unlink(lf);
    unlink(none);
}

static void test_config_file_variant_works_for_any_variable(void **state)
{
    fake_env_t e = minimal_env();
    const char *f = temp_file("apps\n", 5);
    config_t c;

    env_set(&e, "BROKER_OAUTH_FLAVOR_FILE", f);
    load_ok(&e, &c);
    assert_int_equal(c.flavor, FLAVOR_APPS);
    config_free(&c);
    unlink(f);
}

static void test_config_file_keeps_inner_newlines_as_errors(void **state)
{
    fake_env_t e = minimal_env();
    const char *f = temp_file("sk_test_1\n\n", 11);
    char err[256];

    env_set(&e, "STRIPE_SECRET_KEY_TEST", NULL);
    env_set(&e, "STRIPE_SECRET_KEY_TEST_FILE", f);
    load_fails(&e, "STRIPE_SECRET_KEY_TEST", err, sizeof(err));
    unlink(f);
}

static void test_config_rejects_both_name_and_file(void **state)
{
    fake_env_t e = minimal_env();
    const char *f = temp_file(ADMIN, strlen(ADMIN));
    char err[256];

    env_set(&e, "BROKER_ADMIN_TOKEN_FILE", f);
    load_fails(&e, "BROKER_ADMIN_TOKEN", err, sizeof(err));
    assert_non_null(strstr(err, "BROKER_ADMIN_TOKEN_FILE"));
    assert_null(strstr(err, ADMIN));
    unlink(f);
}

static void test_config_rejects_unreadable_or_empty_file(void **state)
{
    fake_env_t e = minimal_env();
    const char *empty = temp_file("\n", 1);
    const char *nul = temp_file("sk_\0x", 5);
    char err[256];

    env_set(&e, "STRIPE_SECRET_KEY_TEST", NULL);
    env_set(&e, "STRIPE_SECRET_KEY_TEST_FILE", "/nonexistent/stb/secret");
    load_fails(&e, "STRIPE_SECRET_KEY_TEST_FILE", err, sizeof(err));
    env_set(&e, "STRIPE_SECRET_KEY_TEST_FILE", empty);
    load_fails(&e, "STRIPE_SECRET_KEY_TEST_FILE", err, sizeof(err));
    env_set(&e, "STRIPE_SECRET_KEY_TEST_FILE", nul);
    load_fails(&e, "STRIPE_SECRET_KEY_TEST_FILE", err, sizeof(err));
    env_set(&e, "STRIPE_SECRET_KEY_TEST_FILE", ""); /* empty: unset, so the key is missing */
    load_fails(&e, "STRIPE_SECRET_KEY_TEST", err, sizeof(err));
    unlink(empty);
    unlink(nul);
}

/* ===== Upstream URLs ===== */

static void test_config_upstream_http_only_for_loopback(void **state)
{
    static const char *const ok[] = {
        "http://127.0.0.1:12111", "http://127.1.2.3", "http://localhost:1", "http://LOCALHOST",
        "http://[::1]:9", "https://stripe.example.com/base/", "HTTPS://connect.stripe.com",
    };
    size_t i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        fake_env_t e = minimal_env();
        config_t c;
        env_set(&e, "STRIPE_CONNECT_URL", ok[i]);
        load_ok(&e, &c);
        assert_int_equal(strncmp(c.connect_url, "http", 4), 0);
        assert_int_not_equal(c.connect_url[strlen(c.connect_url) - 1], '/');
        config_free(&c);
    }
}

/* ===== return_url ===== */

typedef struct return_case {
    const char *url;
    int allowed;
} return_case_t;

static void test_config_return_url_allow_list(void **state)
{
    static const return_case_t cases[] = {
        {"https://acme.my.salesforce.com/lightning/page/home", 1},
        {"https://acme.my.salesforce.com", 1},
        {"https://acme.my.salesforce.com:443/x", 1},
        {"https://ACME.My.Salesforce.COM/x", 1},
        {"HTTPS://acme.my.salesforce.com/x", 1},
        {"https://acme--sandbox.sandbox.my.salesforce.com/x", 1},
        {"https://a.b.force.com/x", 1},
        {"https://acme.lightning.force.com/one/one.app#/x", 1},
        {"https://acme.my.site.com/s/?a=1", 1},
        {"https://acme.my.salesforce.com?x=1", 1},
        {"https://force.com/x", 0},
        {"https://evilforce.com/x", 0},
        {"https://acme.force.com.evil.com/x", 0},
        {"https://acme.my.salesforce.com.evil.com/", 0},
        {"http://acme.my.salesforce.com/x", 0},
        {"https://acme.my.salesforce.com:8443/x", 0},
        {"https://acme.my.salesforce.com:/x", 0},
        {"https://user@acme.my.salesforce.com/x", 0},
        {"https://evil.com@acme.my.salesforce.com/x", 0},
        {"https://acme.my.salesforce.com\\@evil.com/x", 0},
        {"https://acme.my.salesforce.com /x", 0},
        {"https://acme.my.salesforce.com/x\ty", 0},
        {"https://acme.my.salesforce.com/\xc3\xa9", 0},
        {"https://acme.my.salesforce.com./x", 0},
        {"https://.my.salesforce.com/x", 0},
        {"https://a..my.salesforce.com/x", 0},
        {"//acme.my.salesforce.com/x", 0},
        {"/relative/path", 0},
        {"javascript:alert(1)", 0},
        {"https://[::1]/x", 0},
        {"https://acme%2emy.salesforce.com/x", 0},
        {"", 0},
    };
    fake_env_t e = minimal_env();
    config_t c;
    size_t i;

    load_ok(&e, &c);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (config_return_url_allowed(&c, cases[i].url) != cases[i].allowed)
            fail_msg("\"%s\": want %d", cases[i].url, cases[i].allowed);
    assert_int_equal(config_return_url_allowed(&c, NULL), 0);
    config_free(&c);
}

static void test_config_return_url_rejects_over_2048_chars(void **state)
{
    fake_env_t e = minimal_env();
    char url[2100];
    config_t c;

    load_ok(&e, &c);
    strcpy(url, "https://acme.my.salesforce.com/");
    memset(url + strlen(url), 'a', 2048 - strlen(url));
    url[2048] = '\0';
    assert_int_equal(config_return_url_allowed(&c, url), 1);
    url[2048] = 'a';
    url[2049] = '\0';
    assert_int_equal(config_return_url_allowed(&c, url), 0);
    config_free(&c);
}

static void test_config_return_url_exact_host_and_port_patterns(void **state)
{
    fake_env_t e = minimal_env();
    config_t c;

    env_set(&e, "BROKER_RETURN_URL_ALLOW", "http://localhost:3000,https://app.example.com");
    load_ok(&e, &c);
    assert_int_equal(config_return_url_allowed(&c, "http://localhost:3000/done"), 1);
    assert_int_equal(config_return_url_allowed(&c, "http://localhost/done"), 0);
    assert_int_equal(config_return_url_allowed(&c, "http://localhost:3001/done"), 0);
    assert_int_equal(config_return_url_allowed(&c, "https://app.example.com/x"), 1);
    assert_int_equal(config_return_url_allowed(&c, "https://x.app.example.com/x"), 0);
    config_free(&c);
}

/* ===== Modes ===== */

static void test_mode_parse_and_name(void **state)
{
    assert_int_equal(mode_parse("test", 4), MODE_TEST);
    assert_int_equal(mode_parse("live", 4), MODE_LIVE);
    assert_int_equal(mode_parse("Live", 4), -1);
    assert_int_equal(mode_parse("lives", 5), -1);
    assert_int_equal(mode_parse("liv", 3), -1);
    assert_int_equal(mode_parse("", 0), -1);
    assert_int_equal(mode_parse(NULL, 4), -1);
    assert_int_equal(mode_parse("testx", 4), MODE_TEST); /* len bounds the comparison */
    assert_string_equal(mode_name(MODE_TEST), "test");
    assert_string_equal(mode_name(MODE_LIVE), "live");
    assert_string_equal(mode_name(7), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_minimal_env_gets_defaults),
        cmocka_unit_test(test_config_reads_every_variable),
        cmocka_unit_test(test_config_proxy_variables),
        cmocka_unit_test(test_config_events_variables),
        cmocka_unit_test(test_config_listen_accepts_ipv6_in_brackets),
        cmocka_unit_test(test_config_redis_accepts_unix_socket),
        cmocka_unit_test(test_config_redis_port_and_db_default),
        cmocka_unit_test(test_config_redis_password_may_contain_at_sign),
        cmocka_unit_test(test_config_only_live_mode_is_enough),
        cmocka_unit_test(test_config_rejects_bad_values_naming_the_variable),
        cmocka_unit_test(test_config_comma_lists_name_the_entry_that_fails),
        cmocka_unit_test(test_config_requires_one_stripe_mode),
        cmocka_unit_test(test_config_half_a_pair_leaves_its_mode_disabled),
        cmocka_unit_test(test_config_errors_never_contain_secrets),
        cmocka_unit_test(test_config_error_fits_small_buffers),
        cmocka_unit_test(test_config_file_variant_strips_one_newline),
        cmocka_unit_test(test_config_file_variant_works_for_any_variable),
        cmocka_unit_test(test_config_file_keeps_inner_newlines_as_errors),
        cmocka_unit_test(test_config_rejects_both_name_and_file),
        cmocka_unit_test(test_config_rejects_unreadable_or_empty_file),
        cmocka_unit_test(test_config_upstream_http_only_for_loopback),
        cmocka_unit_test(test_config_return_url_allow_list),
        cmocka_unit_test(test_config_return_url_rejects_over_2048_chars),
        cmocka_unit_test(test_config_return_url_exact_host_and_port_patterns),
        cmocka_unit_test(test_mode_parse_and_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
