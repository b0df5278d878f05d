/* test_rcache.c — a redis_loop subscriber and the read cache (store/rcache) against a
 * real redis-server (started by the test; tests/unit/redis_proc.h) on a real h2o evloop:
 * changes from another client, FLUSHALL, the subscriber killed, Redis paused or
 * restarted. Nothing waits by sleeping: every wait runs the loop until a condition
 * holds, with a deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include "store/rcache.h"
#include "store/redis_loop.h"
#include "stripe/curl_loop.h"

#include "redis_proc.h"

/* ===== Subscriber and read cache (store/rcache) ===== */

typedef struct kt {
    h2o_evloop_t *loop;
    redis_loop_t *main;
    rcache_t *c;
    int messages;
    char last_msg[64];
} kt_t;

static void kt_state(int connected, void *data)
{
    kt_t *t = data;
    if (t->c != NULL)
        rcache_main_state(t->c, connected);
}

static kt_t *kt_new(void)
{
    kt_t *t = calloc(1, sizeof(*t));
    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = g_redis.port};
    assert_non_null(t);
    t->loop = h2o_evloop_create();
    t->main = redis_loop_create(t->loop, &cfg, kt_state, t);
    t->c = rcache_create(t->loop, t->main, &cfg, "t:", 5000);
    assert_non_null(t->c);
    assert_true(RUN_UNTIL(t->loop, rcache_tracking(t->c), 5000));
    return t;
}

static void kt_free(kt_t *t)
{
    rcache_destroy(t->c);
    redis_loop_destroy(t->main);
    h2o_evloop_run(t->loop, 0);
    h2o_evloop_destroy(t->loop);
    free(t);
}

typedef struct fill_req {
    kt_t *t;
    const char *key;
    uint64_t ticket;
    int done;
} fill_req_t;

static void on_fill_reply(redisReply *reply, void *data)
{
    fill_req_t *f = data;
    assert_non_null(reply);
    rcache_fill(f->t->c, f->key, strlen(f->key), f->ticket, reply->type == REDIS_REPLY_STRING ? reply->str : NULL,
                reply->type == REDIS_REPLY_STRING ? reply->len : 0);
    f->done = 1;
}

/* Reserve key, GET it on the main connection, fill with the reply. */
static void cache_read(kt_t *t, const char *key)
{
    fill_req_t f = {t, key, rcache_reserve(t->c, key, strlen(key)), 0};
    assert_true(f.ticket != 0);
    assert_int_equal(redis_loop_command(t->main, on_fill_reply, &f, "GET %s", key), 0);
    assert_true(RUN_UNTIL(t->loop, f.done, 3000));
}

static void ctl_ok(const char *fmt, const char *a, const char *b);

/* 1 when key is cached with exactly want (NULL: cached as absent). */
static int cached_as(kt_t *t, const char *key, const char *want)
{
    rcache_entry_t *e = rcache_get(t->c, key, strlen(key));
    size_t len;
    const char *v;
    if (e == NULL)
        return 0;
    v = rcache_value(e, &len);
    if (want == NULL)
        return v == NULL;
    return v != NULL && len == strlen(want) && memcmp(v, want, len) == 0;
}

static int is_cached(kt_t *t, const char *key)
{
    return rcache_get(t->c, key, strlen(key)) != NULL;
}

static void test_rcache_derived_data_lives_and_dies_with_the_entry(void **state)
{
    kt_t *t = kt_new();
    size_t len;
    int64_t tag;
    ctl_ok("SET %s %s", "t:d", "v1");
    cache_read(t, "t:d");
    rcache_entry_t *e = rcache_get(t->c, "t:d", 3);
    assert_non_null(e);
    assert_null(rcache_derived(e, &len, &tag));
    rcache_set_derived(e, "answer", 6, 42);
    e = rcache_get(t->c, "t:d", 3);
    const char *d = rcache_derived(e, &len, &tag);
    assert_non_null(d);
    assert_int_equal(len, 6);
    assert_memory_equal(d, "answer", 6);
    assert_int_equal(tag, 42);
    ctl_ok("SET %s %s", "t:d", "v2");
    assert_true(RUN_UNTIL(t->loop, !is_cached(t, "t:d"), 2000));
    cache_read(t, "t:d");
    e = rcache_get(t->c, "t:d", 3);
    assert_non_null(e);
    assert_null(rcache_derived(e, &len, &tag)); /* built from the old value: gone */
    kt_free(t);
}

static void ctl_ok(const char *fmt, const char *a, const char *b)
{
    redisReply *rep = ctl_command(&g_redis, fmt, a, b);
    assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
    freeReplyObject(rep);
}

static void on_sub_message(const char *channel, size_t len, redisReply *payload, void *data)
{
    kt_t *t = data;
    t->messages++;
    if (payload->type == REDIS_REPLY_STRING)
        snprintf(t->last_msg, sizeof(t->last_msg), "%.*s", (int)payload->len, payload->str);
}

static void test_subscriber_receives_messages_and_takes_no_commands(void **state)
{
    kt_t t = {.loop = h2o_evloop_create()};
    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = g_redis.port};
    const char *channels[] = {"t:chan"};
    redis_loop_t *sub = redis_loop_create_subscriber(t.loop, &cfg, channels, 1, on_sub_message, NULL, &t);
    assert_true(RUN_UNTIL(t.loop, redis_loop_ready(sub), 5000));
    assert_true(redis_loop_client_id(sub) > 0);
    assert_int_equal(redis_loop_command(sub, NULL, NULL, "PING"), -1);
    ctl_ok("PUBLISH %s %s", "t:chan", "hello");
    assert_true(RUN_UNTIL(t.loop, t.messages == 1, 3000));
    assert_string_equal(t.last_msg, "hello");
    /* killed: it comes back by itself, with a new id, and still receives */
    long long id = redis_loop_client_id(sub);
    redisReply *rep = ctl_command(&g_redis, "CLIENT KILL TYPE pubsub");
    freeReplyObject(rep);
    assert_true(RUN_UNTIL(t.loop, redis_loop_client_id(sub) != 0 && redis_loop_client_id(sub) != id, 5000));
    ctl_ok("PUBLISH %s %s", "t:chan", "again");
    assert_true(RUN_UNTIL(t.loop, t.messages == 2, 3000));
    assert_string_equal(t.last_msg, "again");
    redis_loop_destroy(sub);
    h2o_evloop_run(t.loop, 0);
    h2o_evloop_destroy(t.loop);
}

static void test_rcache_serves_what_it_read_until_another_client_changes_it(void **state)
{
    kt_t *t = kt_new();
    ctl_ok("SET %s %s", "t:k1", "one");
    assert_false(is_cached(t, "t:k1"));
    cache_read(t, "t:k1");
    assert_true(cached_as(t, "t:k1", "one"));
    ctl_ok("SET %s %s", "t:k1", "two");
    assert_true(RUN_UNTIL(t->loop, !is_cached(t, "t:k1"), 2000));
    cache_read(t, "t:k1");
    assert_true(cached_as(t, "t:k1", "two"));
    ctl_ok("DEL %s%s", "t:k1", "");
    assert_true(RUN_UNTIL(t->loop, !is_cached(t, "t:k1"), 2000));
    kt_free(t);
}

static void test_rcache_caches_absence_until_the_key_is_created(void **state)
{
    kt_t *t = kt_new();
    cache_read(t, "t:absent");
    assert_true(cached_as(t, "t:absent", NULL));
    ctl_ok("SET %s %s", "t:absent", "now");
    assert_true(RUN_UNTIL(t->loop, !is_cached(t, "t:absent"), 2000));
    kt_free(t);
}

static void test_rcache_change_between_reserve_and_fill_is_not_cached(void **state)
{
    kt_t *t = kt_new();
    ctl_ok("SET %s %s", "t:race", "old");
    cache_read(t, "t:race"); /* tracked from now on */
    uint64_t ticket = rcache_reserve(t->c, "t:race", 6);
    uint64_t inv = rcache_stats(t->c).invalidations;
    ctl_ok("SET %s %s", "t:race", "new");
    assert_true(RUN_UNTIL(t->loop, rcache_stats(t->c).invalidations > inv, 2000));
    rcache_fill(t->c, "t:race", 6, ticket, "old", 3); /* a reply read before the change */
    assert_false(is_cached(t, "t:race"));
    kt_free(t);
}

/* Two reads of one key in flight: the later reservation wins the fill, and the earlier
 * read, holding the same bytes, still finds the entry (rcache_same); other bytes or a
 * changed key find nothing. */
static void test_rcache_same_finds_the_entry_a_newer_read_filled(void **state)
{
    kt_t *t = kt_new();
    ctl_ok("SET %s %s", "t:two", "v1");
    cache_read(t, "t:two");
    uint64_t first = rcache_reserve(t->c, "t:two", 5);
    uint64_t second = rcache_reserve(t->c, "t:two", 5);
    assert_non_null(rcache_fill(t->c, "t:two", 5, second, "v1", 2));
    assert_null(rcache_fill(t->c, "t:two", 5, first, "v1", 2));
    rcache_entry_t *e = rcache_same(t->c, "t:two", 5, "v1", 2);
    assert_non_null(e);
    assert_ptr_equal(e, rcache_get(t->c, "t:two", 5));
    assert_null(rcache_same(t->c, "t:two", 5, "v2", 2));
    assert_null(rcache_same(t->c, "t:two", 5, NULL, 0));
    assert_null(rcache_same(t->c, "t:other", 7, "v1", 2));
    uint64_t inv = rcache_stats(t->c).invalidations;
    ctl_ok("SET %s %s", "t:two", "v2");
    assert_true(RUN_UNTIL(t->loop, rcache_stats(t->c).invalidations > inv, 2000));
    assert_null(rcache_same(t->c, "t:two", 5, "v1", 2));
    kt_free(t);
}

static void test_rcache_flushall_empties_it(void **state)
{
    kt_t *t = kt_new();
    ctl_ok("SET %s %s", "t:f1", "x");
    cache_read(t, "t:f1");
    assert_true(cached_as(t, "t:f1", "x"));
    redisReply *rep = ctl_command(&g_redis, "FLUSHALL");
    freeReplyObject(rep);
    assert_true(RUN_UNTIL(t->loop, !is_cached(t, "t:f1"), 2000));
    kt_free(t);
}

/* Calls rcache_fresh as a busy worker would until it says 1 (or ms pass). */
static int busy_until_fresh(kt_t *t, int ms)
{
    int ok = 0;
    uint64_t deadline = now_ms() + (uint64_t)ms;
    while (!ok && now_ms() < deadline) {
        for (int i = 0; i < 600 && !ok; i++)
            ok = rcache_fresh(t->c);
        h2o_evloop_run(t->loop, 1);
    }
    return ok;
}

static void test_rcache_is_fresh_only_for_a_busy_worker_with_a_recent_probe(void **state)
{
    kt_t *t = kt_new();
    assert_false(rcache_fresh(t->c)); /* quiet: read Redis */
    uint64_t probes = rcache_stats(t->c).probes;
    assert_true(busy_until_fresh(t, 3000));
    assert_true(rcache_stats(t->c).probes > probes);
    /* quiet again: two windows without requests */
    RUN_UNTIL(t->loop, 0, 3 * RCACHE_BUSY_WINDOW_MS);
    assert_false(rcache_fresh(t->c));
    kt_free(t);
}

static void test_rcache_stalled_redis_is_not_fresh_within_the_bound(void **state)
{
    kt_t *t = kt_new();
    assert_true(busy_until_fresh(t, 3000));
    redisReply *rep = ctl_command(&g_redis, "CLIENT PAUSE 1500 ALL");
    freeReplyObject(rep);
    uint64_t t0 = now_ms();
    int fresh = 1;
    while (fresh && now_ms() - t0 < 1000) {
        for (int i = 0; i < 600; i++)
            fresh = rcache_fresh(t->c);
        h2o_evloop_run(t->loop, 1);
    }
    assert_false(fresh);
    assert_true(now_ms() - t0 <= RCACHE_FRESH_MS + 100);
    /* Redis answers again: fresh again */
    assert_true(busy_until_fresh(t, 5000));
    kt_free(t);
}

/* The watchdog drops a subscriber whose probe stays out RCACHE_SUB_DEAD_MS. The first
 * probe after a quiet spell longer than that is not late: it gets its own time (here
 * Redis holds it back for 300 ms, six watchdog ticks). */
static void test_rcache_first_probe_after_a_quiet_spell_is_not_taken_for_lost(void **state)
{
    kt_t *t = kt_new();
    assert_true(busy_until_fresh(t, 3000));
    RUN_UNTIL(t->loop, 0, RCACHE_SUB_DEAD_MS + 300); /* quiet: no probes */
    uint64_t probes = rcache_stats(t->c).probes;
    redisReply *rep = ctl_command(&g_redis, "CLIENT PAUSE 300 ALL");
    freeReplyObject(rep);
    for (int i = 0; i < 600; i++)
        rcache_fresh(t->c); /* busy again: a probe goes out, and waits */
    assert_true(rcache_stats(t->c).probes > probes);
    assert_false(RUN_UNTIL(t->loop, !rcache_tracking(t->c), 6 * RCACHE_TICK_MS));
    assert_true(busy_until_fresh(t, 3000));
    assert_true(rcache_tracking(t->c));
    kt_free(t);
}

static void test_rcache_same_bytes_keep_what_was_derived(void **state)
{
    kt_t *t = kt_new();
    size_t len;
    int64_t tag;
    ctl_ok("SET %s %s", "t:same", "v");
    cache_read(t, "t:same");
    rcache_set_derived(rcache_get(t->c, "t:same", 6), "answer", 6, 0);
    cache_read(t, "t:same"); /* read again, same bytes */
    assert_non_null(rcache_derived(rcache_get(t->c, "t:same", 6), &len, &tag));
    kt_free(t);
}

static void test_rcache_lost_subscriber_empties_it_and_it_comes_back(void **state)
{
    kt_t *t = kt_new();
    ctl_ok("SET %s %s", "t:s", "v");
    cache_read(t, "t:s");
    assert_true(cached_as(t, "t:s", "v"));
    redisReply *rep = ctl_command(&g_redis, "CLIENT KILL TYPE pubsub");
    freeReplyObject(rep);
    assert_true(RUN_UNTIL(t->loop, !rcache_tracking(t->c), 2000));
    assert_false(is_cached(t, "t:s"));
    assert_true(RUN_UNTIL(t->loop, rcache_tracking(t->c), 5000));
    /* tracking is on again: a change is seen */
    cache_read(t, "t:s");
    assert_true(cached_as(t, "t:s", "v"));
    ctl_ok("SET %s %s", "t:s", "w");
    assert_true(RUN_UNTIL(t->loop, !is_cached(t, "t:s"), 2000));
    kt_free(t);
}

static void test_rcache_redis_restart_empties_it_and_it_comes_back(void **state)
{
    kt_t *t = kt_new();
    ctl_ok("SET %s %s", "t:r", "v");
    cache_read(t, "t:r");
    redis_kill(&g_redis);
    assert_true(RUN_UNTIL(t->loop, !rcache_tracking(t->c), 2000));
    assert_false(is_cached(t, "t:r"));
    assert_int_equal(rcache_reserve(t->c, "t:r", 3), 0);
    redis_start(&g_redis);
    assert_true(RUN_UNTIL(t->loop, rcache_tracking(t->c), 8000));
    kt_free(t);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2); the broker's main does the same */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscriber_receives_messages_and_takes_no_commands),
        cmocka_unit_test(test_rcache_serves_what_it_read_until_another_client_changes_it),
        cmocka_unit_test(test_rcache_caches_absence_until_the_key_is_created),
        cmocka_unit_test(test_rcache_change_between_reserve_and_fill_is_not_cached),
        cmocka_unit_test(test_rcache_same_finds_the_entry_a_newer_read_filled),
        cmocka_unit_test(test_rcache_flushall_empties_it),
        cmocka_unit_test(test_rcache_derived_data_lives_and_dies_with_the_entry),
        cmocka_unit_test(test_rcache_is_fresh_only_for_a_busy_worker_with_a_recent_probe),
        cmocka_unit_test(test_rcache_stalled_redis_is_not_fresh_within_the_bound),
        cmocka_unit_test(test_rcache_first_probe_after_a_quiet_spell_is_not_taken_for_lost),
        cmocka_unit_test(test_rcache_same_bytes_keep_what_was_derived),
        cmocka_unit_test(test_rcache_lost_subscriber_empties_it_and_it_comes_back),
        cmocka_unit_test(test_rcache_redis_restart_empties_it_and_it_comes_back),
    };
    return cmocka_run_group_tests_name("rcache", tests, redis_group_setup, redis_group_teardown);
}
