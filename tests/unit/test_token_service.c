/* test_token_service.c — tokens/token_service on its own: a real h2o loop, a real
 * redis-server (started by the test), the real curl_loop, and a small fake of Stripe's
 * token endpoint on a second thread (counts calls, answers a new access token each time
 * with the refresh token unchanged, as Connect does, and can hold its answer until the
 * test releases it). No HTTP request of the broker is
 * involved: the service is driven through token_service_run(…, caller, cb, data).
 *
 * What it pins: single flight in one process (many callers, one Stripe call, one
 * answer each); the version fence (a caller that saw an older version is served the
 * stored record without a Stripe call); a lease held by another owner (wait, then serve
 * what that owner wrote, no Stripe call); a lost lease (the holder's write is refused
 * and its token never served: the flight works again under a new lease); the cooldown
 * after a transient failure. Waits run the loop until a condition holds, with bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <poll.h>
#include <stdatomic.h>
#include "redis_proc.h"
#include "config.h"
#include "core/crypto.h"
#include "store/conn.h"
#include "store/store.h"
#include "tokens/token_service.h"

#define ORG "00D000000000001EAA"
#define PREFIX "t:"
#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

/* ===== A fake Stripe token endpoint ===== */

static struct {
    int fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    atomic_int calls;     /* requests answered or being answered */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int hold;             /* answers wait while set */
    int status;           /* HTTP status to answer */
} g_stripe = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void stripe_answer(int c)
{
    char req[8192];
    size_t n = 0;
    /* the whole request: headers, then Content-Length bytes of form */
    for (;;) {
        ssize_t r = read(c, req + n, sizeof(req) - 1 - n);
        if (r <= 0)
            return;
        n += (size_t)r;
        req[n] = '\0';
        char *end = strstr(req, "\r\n\r\n");
        if (end != NULL) {
            char *cl = strcasestr(req, "\r\ncontent-length:");
            size_t want = cl != NULL ? strtoul(cl + 17, NULL, 10) : 0;
            if (n >= (size_t)(end + 4 - req) + want)
                break;
        }
        if (n == sizeof(req) - 1)
            return;
    }
    int call = atomic_fetch_add(&g_stripe.calls, 1) + 1;
    pthread_mutex_lock(&g_stripe.mu);
    while (g_stripe.hold && !atomic_load(&g_stripe.stop))
        pthread_cond_wait(&g_stripe.cv, &g_stripe.mu);
    int status = g_stripe.status;
    pthread_mutex_unlock(&g_stripe.mu);
    char body[512], out[1024];
    int blen = status == 200 ? snprintf(body, sizeof(body),
                                        "{\"access_token\":\"sk_test_minted_%d\",\"refresh_token\":\"rt_live_1\","
                                        "\"stripe_user_id\":\"acct_1\",\"livemode\":false,\"scope\":\"read_write\","
                                        "\"token_type\":\"bearer\",\"stripe_publishable_key\":\"pk_test_1\"}",
                                        call)
                             : snprintf(body, sizeof(body), "{\"error\":{\"type\":\"api_error\"}}");
    int olen = snprintf(out, sizeof(out),
                        "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n\r\n%s",
                        status, blen, body);
    ssize_t w = write(c, out, (size_t)olen);
    (void)w;
}

static void *stripe_main(void *arg)
{
    while (!atomic_load(&g_stripe.stop)) {
        struct pollfd p = {g_stripe.fd, POLLIN, 0};
        if (poll(&p, 1, 50) != 1)
            continue;
        int c = accept(g_stripe.fd, NULL, NULL);
        if (c < 0)
            continue;
        stripe_answer(c);
        close(c);
    }
    return NULL;
}

static void stripe_hold(int hold)
{
    pthread_mutex_lock(&g_stripe.mu);
    g_stripe.hold = hold;
    pthread_cond_broadcast(&g_stripe.cv);
    pthread_mutex_unlock(&g_stripe.mu);
}

static void stripe_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    g_stripe.fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(g_stripe.fd >= 0);
    assert_int_equal(bind(g_stripe.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(g_stripe.fd, 64), 0);
    assert_int_equal(getsockname(g_stripe.fd, (struct sockaddr *)&sa, &len), 0);
    g_stripe.port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&g_stripe.thread, NULL, stripe_main, NULL), 0);
}

static void stripe_stop(void)
{
    atomic_store(&g_stripe.stop, 1);
    stripe_hold(0);
    pthread_join(g_stripe.thread, NULL);
    close(g_stripe.fd);
}

/* ===== The service under test ===== */

#define ENV_MAX 16

static struct {
    const char *names[ENV_MAX], *values[ENV_MAX];
    int n;
    char stripe_url[64];
} g_env;

static const char *env_get(const char *name, void *ctx)
{
    for (int i = 0; i < g_env.n; i++)
        if (strcmp(g_env.names[i], name) == 0)
            return g_env.values[i];
    return NULL;
}

static void env_set(const char *name, const char *value)
{
    g_env.names[g_env.n] = name;
    g_env.values[g_env.n++] = value;
}

static redisContext *g_ctl;
static config_t g_cfg;
static h2o_evloop_t *g_loop;
static redis_loop_t *g_rl;
static curl_loop_t *g_curl;
static token_service_t *g_ts;

static int group_setup(void **state)
{
    char err[256] = "";
    redis_shared_start();
    g_ctl = ctl_connect(&g_redis);
    stripe_start();
    snprintf(g_env.stripe_url, sizeof(g_env.stripe_url), "http://127.0.0.1:%d", g_stripe.port);
    env_set("BROKER_PUBLIC_URL", "https://broker.example.com");
    env_set("BROKER_ENCRYPTION_KEYS", "k1:" KEY_A);
    env_set("BROKER_ADMIN_TOKEN", "admin-token-0123456789abcdef0123456789");
    env_set("STRIPE_CLIENT_ID_TEST", "ca_test_1");
    env_set("STRIPE_SECRET_KEY_TEST", "sk_test_platform");
    env_set("STRIPE_CLIENT_ID_LIVE", "ca_live_1");
    env_set("STRIPE_SECRET_KEY_LIVE", "sk_live_platform");
    env_set("STRIPE_CONNECT_URL", g_env.stripe_url);
    env_set("BROKER_REDIS_PREFIX", PREFIX);
    env_set("BROKER_UPSTREAM_TIMEOUT_MS", "2000");
    if (config_load(&g_cfg, env_get, NULL, err, sizeof(err)) != 0)
        fail_msg("config_load: %s", err);
    g_loop = h2o_evloop_create();
    static redis_loop_config_t rc = {"127.0.0.1", 0, NULL, NULL, 0};
    rc.port = g_redis.port;
    g_rl = redis_loop_create(g_loop, &rc, NULL, NULL);
    g_curl = curl_loop_create(g_loop);
    g_ts = token_service_create(g_loop, g_rl, g_curl, &g_cfg, 0);
    assert_non_null(g_ts);
    assert_true(RUN_UNTIL(g_loop, redis_loop_ready(g_rl), 5000));
    return 0;
}

static int group_teardown(void **state)
{
    stripe_stop();
    redisFree(g_ctl);
    redis_kill(&g_redis);
    return 0;
}

/* Each test: an empty Redis, Stripe answering 200 at once, no call counted. */
static int fresh(void **state)
{
    freeReplyObject(redisCommand(g_ctl, "FLUSHALL"));
    atomic_store(&g_stripe.calls, 0);
    g_stripe.status = 200;
    stripe_hold(0);
    return 0;
}

/* One caller's answer. */
typedef struct answer {
    int called;
    api_err_t err;
    char access_token[64];
    long version; /* of the record served */
} answer_t;

static void on_done(api_err_t err, const conn_record_t *rec, long version, void *data)
{
    answer_t *a = data;
    a->called++;
    a->err = err;
    a->version = version;
    if (rec != NULL && rec->access_token != NULL)
        snprintf(a->access_token, sizeof(a->access_token), "%s", rec->access_token);
}

/* Store a connection of mode (connected, with an access and a refresh token) under the
 * org; returns its version. */
static long store_record(int mode, const char *access_token, const char *derived_from)
{
    conn_record_t r = {0};
    r.status = CONN_CONNECTED;
    r.access_token = strdup(access_token);
    r.refresh_token = strdup(mode == MODE_LIVE ? "rt_live_1" : "rt_test_0");
    r.stripe_user_id = strdup("acct_1");
    r.livemode = mode == MODE_LIVE;
    r.connected_at = r.refreshed_at = time(NULL);
    snprintf(r.derived_from, sizeof(r.derived_from), "%s", derived_from);
    char *sealed = store_conn_seal(&g_cfg, ORG, mode, &r);
    conn_record_clear(&r);
    store_cmd_t cmd;
    store_conn_put(&cmd, PREFIX, ORG, mode, sealed, "acct_1", STORE_ANY_VERSION, NULL, NULL);
    free(sealed);
    redisReply *rep = redisCommandArgv(g_ctl, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    long v = (long)rep->element[0]->integer;
    freeReplyObject(rep);
    return v;
}

static long stored_test_version; /* set by stored_test_token: that record's version */

/* The stored test record's access token ("" when none). */

static const char *stored_test_token(void)
{
    static char out[64];
    conn_record_t r;
    long ver = 0;
    out[0] = '\0';
    stored_test_version = 0;
    redisReply *rep = redisCommand(g_ctl, "GET %s", PREFIX "conn:" ORG ":test");
    if (rep->type == REDIS_REPLY_STRING &&
        store_conn_open(&g_cfg, ORG, MODE_TEST, rep->str, rep->len, &ver, &r) == STORE_OK) {
        snprintf(out, sizeof(out), "%s", r.access_token != NULL ? r.access_token : "");
        stored_test_version = ver;
        conn_record_clear(&r);
    }
    freeReplyObject(rep);
    return out;
}

static int exists(const char *key)
{
    redisReply *rep = redisCommand(g_ctl, "EXISTS %s", key);
    int v = (int)rep->integer;
    freeReplyObject(rep);
    return v;
}

/* EVAL calls since the last CONFIG RESETSTAT. */
static long eval_calls(void)
{
    redisReply *rep = redisCommand(g_ctl, "INFO commandstats");
    const char *at = rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "cmdstat_eval:calls=") : NULL;
    long v = at != NULL ? strtol(at + strlen("cmdstat_eval:calls="), NULL, 10) : 0;
    freeReplyObject(rep);
    return v;
}

/* ===== Tests ===== */

static void test_single_flight_makes_one_stripe_call_for_many_callers(void **state)
{
    answer_t a[8] = {{0}};
    store_record(MODE_LIVE, "sk_live_1", "");
    freeReplyObject(redisCommand(g_ctl, "CONFIG RESETSTAT"));
    for (int i = 0; i < 8; i++)
        token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &a[i]);
    assert_true(RUN_UNTIL(g_loop, a[7].called && a[0].called, 5000));
    for (int i = 0; i < 8; i++) {
        assert_int_equal(a[i].called, 1);
        assert_int_equal(a[i].err, ERR_NONE);
        assert_string_equal(a[i].access_token, "sk_test_minted_1");
    }
    assert_int_equal(atomic_load(&g_stripe.calls), 1);
    /* one flight in this process: one ACQUIRE and one COMMIT reached Redis, not one per
     * caller (the lease alone would also keep Stripe to one call, at 8 round trips) */
    assert_int_equal(eval_calls(), 2);
    assert_string_equal(stored_test_token(), "sk_test_minted_1");
    /* every caller learns the version the mint was written with (a proxy fences its 401
     * rotation on it) */
    for (int i = 0; i < 8; i++)
        assert_int_equal(a[i].version, stored_test_version);
    assert_true(stored_test_version > 0);
    assert_int_equal(exists(PREFIX "lock:" ORG ":test"), 0); /* released */
}

static void test_a_caller_that_saw_an_older_version_gets_the_stored_record(void **state)
{
    answer_t a = {0};
    store_record(MODE_LIVE, "sk_live_1", "");
    long v = store_record(MODE_TEST, "sk_test_stored", "live");
    assert_true(v > 0);
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_ROTATE, v - 1, NULL, on_done, &a);
    assert_true(RUN_UNTIL(g_loop, a.called, 5000));
    assert_int_equal(a.err, ERR_NONE);
    assert_string_equal(a.access_token, "sk_test_stored");
    assert_int_equal(a.version, v);
    assert_int_equal(atomic_load(&g_stripe.calls), 0);
}

static void test_a_lease_held_by_another_owner_is_waited_for(void **state)
{
    answer_t a = {0}, b = {0};
    store_record(MODE_LIVE, "sk_live_1", "");
    freeReplyObject(redisCommand(g_ctl, "SET %s other-replica PX 20000", PREFIX "lock:" ORG ":test"));
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &a);
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &b);
    /* a few polls go by (POLL_MS each) and nobody is answered */
    uint64_t until = now_ms() + 300;
    RUN_UNTIL(g_loop, now_ms() >= until || a.called, 1000);
    assert_int_equal(a.called + b.called, 0);
    /* the other owner writes: both callers get its record, without a Stripe call */
    store_record(MODE_TEST, "sk_test_by_the_other", "live");
    assert_true(RUN_UNTIL(g_loop, a.called && b.called, 5000));
    assert_int_equal(a.err, ERR_NONE);
    assert_string_equal(a.access_token, "sk_test_by_the_other");
    assert_string_equal(b.access_token, "sk_test_by_the_other");
    assert_int_equal(atomic_load(&g_stripe.calls), 0);
}

static void test_a_lost_lease_is_never_served_and_the_work_is_done_again(void **state)
{
    answer_t a = {0};
    store_record(MODE_LIVE, "sk_live_1", "");
    stripe_hold(1);
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &a);
    assert_true(RUN_UNTIL(g_loop, atomic_load(&g_stripe.calls) == 1, 5000));
    /* the lease vanishes during the Stripe call (expired, failover, FLUSHALL of the key) */
    freeReplyObject(redisCommand(g_ctl, "DEL %s", PREFIX "lock:" ORG ":test"));
    stripe_hold(0);
    assert_true(RUN_UNTIL(g_loop, a.called, 8000));
    assert_int_equal(a.err, ERR_NONE);
    /* the first call's token was not written nor served: a second call under a new lease */
    assert_int_equal(atomic_load(&g_stripe.calls), 2);
    assert_string_equal(a.access_token, "sk_test_minted_2");
    assert_string_equal(stored_test_token(), "sk_test_minted_2");
}

static void test_a_transient_failure_starts_a_cooldown_that_spares_stripe(void **state)
{
    answer_t a = {0}, b = {0};
    store_record(MODE_LIVE, "sk_live_1", "");
    g_stripe.status = 500;
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &a);
    assert_true(RUN_UNTIL(g_loop, a.called, 5000));
    assert_int_equal(a.err, ERR_STRIPE_UNAVAILABLE);
    assert_int_equal(atomic_load(&g_stripe.calls), 1);
    assert_int_equal(exists(PREFIX "cool:" ORG ":test"), 1);
    g_stripe.status = 200;
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &b);
    assert_true(RUN_UNTIL(g_loop, b.called, 5000));
    assert_int_equal(b.err, ERR_STRIPE_UNAVAILABLE);
    assert_int_equal(atomic_load(&g_stripe.calls), 1); /* cooling down: no second call */
    assert_string_equal(stored_test_token(), "");
}

static void test_no_connection_to_mint_from_is_not_connected(void **state)
{
    answer_t a = {0};
    token_service_run(g_ts, ORG, MODE_TEST, TOKEN_OP_MINT, 0, NULL, on_done, &a);
    assert_true(RUN_UNTIL(g_loop, a.called, 5000));
    assert_int_equal(a.called, 1);
    assert_int_equal(a.err, ERR_NOT_CONNECTED);
    assert_int_equal(atomic_load(&g_stripe.calls), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_single_flight_makes_one_stripe_call_for_many_callers, fresh),
        cmocka_unit_test_setup(test_a_caller_that_saw_an_older_version_gets_the_stored_record, fresh),
        cmocka_unit_test_setup(test_a_lease_held_by_another_owner_is_waited_for, fresh),
        cmocka_unit_test_setup(test_a_lost_lease_is_never_served_and_the_work_is_done_again, fresh),
        cmocka_unit_test_setup(test_a_transient_failure_starts_a_cooldown_that_spares_stripe, fresh),
        cmocka_unit_test_setup(test_no_connection_to_mint_from_is_not_connected, fresh),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
