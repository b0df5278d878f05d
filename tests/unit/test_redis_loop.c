/* test_redis_loop.c — store/redis_loop against a real redis-server on a real h2o evloop.
 *
 * The test starts its own redis-server (free port, no persistence; tests/unit/redis_proc.h),
 * kills and restarts it, pauses it with CLIENT PAUSE from a second (synchronous hiredis)
 * connection, and starts a second instance with a password on a unix socket.
 *
 * Nothing waits by sleeping: every wait runs the h2o loop until a condition holds, with
 * a deadline; the only pauses are between readiness probes of a starting redis-server.
 * Every accepted command's callback is counted, so "exactly once" is asserted. */
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

/* ===== redis_loop fixtures ===== */

#define MAX_CALLS 1100

typedef struct rtest {
    h2o_evloop_t *loop;
    redis_loop_t *r;
    int states[16]; /* on_state history */
    int nstates;
    /* per-command bookkeeping */
    int calls[MAX_CALLS];
    int got_null[MAX_CALLS];
    long long ints[MAX_CALLS];
    int order[MAX_CALLS];
    int ncalled;
    char last_str[64];
    size_t last_len;
    int last_type;
} rtest_t;

typedef struct slot {
    rtest_t *t;
    int i;
} slot_t;

static slot_t g_slots[MAX_CALLS];

static void on_state(int connected, void *data)
{
    rtest_t *t = data;
    if (t->nstates < 16)
        t->states[t->nstates++] = connected;
}

static void on_cmd(redisReply *reply, void *data)
{
    slot_t *s = data;
    rtest_t *t = s->t;
    t->calls[s->i]++;
    t->order[t->ncalled++ % MAX_CALLS] = s->i;
    if (reply == NULL) {
        t->got_null[s->i] = 1;
        return;
    }
    t->last_type = reply->type;
    if (reply->type == REDIS_REPLY_INTEGER)
        t->ints[s->i] = reply->integer;
    if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) {
        t->last_len = reply->len;
        memcpy(t->last_str, reply->str, reply->len < sizeof(t->last_str) ? reply->len : sizeof(t->last_str));
    }
}

static void *slot(rtest_t *t, int i)
{
    g_slots[i].t = t;
    g_slots[i].i = i;
    return &g_slots[i];
}

static rtest_t *rtest_new(const redis_loop_config_t *cfg)
{
    rtest_t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->loop = h2o_evloop_create();
    t->r = redis_loop_create(t->loop, cfg, on_state, t);
    assert_non_null(t->r);
    return t;
}

static rtest_t *rtest_connected(void)
{
    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = g_redis.port};
    rtest_t *t = rtest_new(&cfg);
    assert_true(RUN_UNTIL(t->loop, redis_loop_ready(t->r), 5000));
    return t;
}

static void rtest_free(rtest_t *t)
{
    if (t->r != NULL)
        redis_loop_destroy(t->r);
    h2o_evloop_run(t->loop, 0); /* frees the closed sockets */
    h2o_evloop_destroy(t->loop);
    free(t);
}

/* ===== redis_loop tests ===== */

static void test_redis_refuses_commands_until_connected(void **state)
{
    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = g_redis.port};
    rtest_t *t = rtest_new(&cfg);
    assert_false(redis_loop_ready(t->r));
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "PING"), -1);
    assert_true(RUN_UNTIL(t->loop, redis_loop_ready(t->r), 5000));
    assert_int_equal(t->nstates, 1);
    assert_int_equal(t->states[0], 1);
    /* a later command completes, and the refused one was never called back */
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 1), "PING"), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[1] == 1, 2000));
    assert_int_equal(t->calls[0], 0);
    rtest_free(t);
}

static rtest_t *g_chain_t;

static void on_set_then_get(redisReply *reply, void *data)
{
    on_cmd(reply, data);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    /* a command queued from inside a callback */
    assert_int_equal(redis_loop_command(g_chain_t->r, on_cmd, slot(g_chain_t, 1), "GET %s", "loops:bin"), 0);
}

static void test_redis_set_get_round_trip(void **state)
{
    rtest_t *t = rtest_connected();
    g_chain_t = t;
    static const char value[] = {'a', '\0', 'b', '\r', '\n', 'c'};
    const char *argv[] = {"SET", "loops:bin", value};
    size_t lens[] = {3, 9, sizeof(value)};
    assert_int_equal(redis_loop_commandv(t->r, on_set_then_get, slot(t, 0), 3, argv, lens), 0);
    assert_int_equal(t->calls[0], 0); /* never called back synchronously */
    assert_true(RUN_UNTIL(t->loop, t->calls[1] == 1, 2000));
    assert_int_equal(t->calls[0], 1);
    assert_int_equal(t->last_type, REDIS_REPLY_STRING);
    assert_int_equal(t->last_len, sizeof(value));
    assert_memory_equal(t->last_str, value, sizeof(value));
    assert_false(t->got_null[0] || t->got_null[1]);
    rtest_free(t);
}

static void test_redis_1000_pipelined_incrs_answered_in_order(void **state)
{
    rtest_t *t = rtest_connected();
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "DEL loops:counter"), 0);
    for (int i = 1; i <= 1000; i++)
        assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, i), "INCR loops:counter"), 0);
    assert_true(RUN_UNTIL(t->loop, t->ncalled == 1001, 5000));
    for (int i = 1; i <= 1000; i++) {
        assert_int_equal(t->calls[i], 1);
        assert_false(t->got_null[i]);
        assert_int_equal(t->ints[i], i);     /* INCR number i saw the counter at i */
        assert_int_equal(t->order[i], i);    /* and its callback ran i-th */
    }
    rtest_free(t);
}

static void test_redis_refuses_commands_that_break_reply_order(void **state)
{
    rtest_t *t = rtest_connected();
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "SUBSCRIBE ch"), -1);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "psubscribe ch*"), -1);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "UNSUBSCRIBE"), -1);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "MONITOR"), -1);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "CLIENT REPLY OFF"), -1);
    /* the connection is still usable */
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 1), "PING"), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[1] == 1, 2000));
    assert_int_equal(t->calls[0], 0);
    assert_int_equal(t->last_type, REDIS_REPLY_STATUS);
    rtest_free(t);
}

static void test_redis_kill_fails_pending_commands_with_null(void **state)
{
    rtest_t *t = rtest_connected();
    /* BLPOP parks the connection server-side; the GETs queue behind it */
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "BLPOP loops:never 0"), 0);
    for (int i = 1; i <= 10; i++)
        assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, i), "GET loops:x"), 0);
    assert_true(RUN_UNTIL(t->loop, ctl_info_field(&g_redis, "blocked_clients") == 1, 2000));
    redis_kill(&g_redis);
    assert_true(RUN_UNTIL(t->loop, t->ncalled == 11, 2000));
    for (int i = 0; i <= 10; i++) {
        assert_int_equal(t->calls[i], 1);
        assert_true(t->got_null[i]);
    }
    assert_int_equal(t->nstates, 2);
    assert_int_equal(t->states[1], 0);
    assert_false(redis_loop_ready(t->r));
    /* later loop passes do not call anything again */
    RUN_UNTIL(t->loop, 0, 100);
    assert_int_equal(t->ncalled, 11);
    rtest_free(t);
    redis_start(&g_redis);
}

static void test_redis_commands_return_minus_one_while_disconnected(void **state)
{
    rtest_t *t = rtest_connected();
    redis_kill(&g_redis);
    assert_true(RUN_UNTIL(t->loop, t->nstates == 2, 2000));
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "PING"), -1);
    const char *argv[] = {"PING"};
    assert_int_equal(redis_loop_commandv(t->r, on_cmd, slot(t, 1), 1, argv, NULL), -1);
    RUN_UNTIL(t->loop, 0, 300); /* several reconnect attempts, all refused */
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 2), "PING"), -1);
    assert_int_equal(t->ncalled, 0);
    assert_int_equal(t->nstates, 2);
    rtest_free(t);
    redis_start(&g_redis);
}

/* Accepts and closes every connection waiting on lfd; returns how many. */
static int accept_and_close(int lfd)
{
    int n = 0, c;
    while ((c = accept(lfd, NULL, NULL)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

static void test_redis_reconnect_attempts_back_off(void **state)
{
    /* a server that takes each connection and closes it at once: every attempt fails */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), attempts = 0;
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 64), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = ntohs(sa.sin_port)};
    rtest_t *t = rtest_new(&cfg);
    /* waits of 50, 100, 200, 400 ms after the first attempt: 5 attempts in the first second
     * (a fixed 50 ms would make about 17, the longest step alone 1) */
    RUN_UNTIL(t->loop, (attempts += accept_and_close(lfd), 0), 1000);
    assert_in_range(attempts, 3, 7);
    assert_false(redis_loop_ready(t->r));
    rtest_free(t);
    close(lfd);
}

static void test_redis_reconnects_by_itself_after_restart(void **state)
{
    rtest_t *t = rtest_connected();
    redis_kill(&g_redis);
    assert_true(RUN_UNTIL(t->loop, t->nstates == 2, 2000));
    RUN_UNTIL(t->loop, 0, 500); /* let the backoff grow past its first steps */
    redis_start(&g_redis);
    /* the longest backoff step is REDIS_BACKOFF_MAX_MS */
    assert_true(RUN_UNTIL(t->loop, redis_loop_ready(t->r), REDIS_BACKOFF_MAX_MS + 1000));
    assert_int_equal(t->nstates, 3);
    assert_int_equal(t->states[0], 1);
    assert_int_equal(t->states[1], 0);
    assert_int_equal(t->states[2], 1);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "SET loops:k %s", "again"), 0);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 1), "GET loops:k"), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[1] == 1, 2000));
    assert_false(t->got_null[0] || t->got_null[1]);
    assert_int_equal(t->last_len, 5);
    assert_memory_equal(t->last_str, "again", 5);
    rtest_free(t);
}

static void test_redis_stall_fails_pending_command_within_bound(void **state)
{
    rtest_t *t = rtest_connected();
    /* the pause outlasts the bound below, so only stall detection can pass this test */
    const int pause_ms = REDIS_STALL_MS + 1500;
    redisReply *rep = ctl_command(&g_redis, "CLIENT PAUSE %d ALL", pause_ms);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    uint64_t paused_at = now_ms();
    uint64_t t0 = now_ms();
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "GET loops:x"), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, REDIS_STALL_MS + 1000));
    uint64_t elapsed = now_ms() - t0;
    assert_true(t->got_null[0]);
    assert_true(elapsed >= REDIS_STALL_MS);
    assert_true(elapsed < REDIS_STALL_MS + 1000);
    assert_int_equal(t->nstates, 2);
    assert_int_equal(t->states[1], 0);
    /* and it comes back once Redis does */
    uint64_t resume_at = paused_at + (uint64_t)pause_ms, now = now_ms();
    assert_true(RUN_UNTIL(t->loop, redis_loop_ready(t->r), (resume_at > now ? resume_at - now : 0) + 3000));
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 1), "PING"), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[1] == 1, 2000));
    assert_false(t->got_null[1]);
    rtest_free(t);
}

static void test_redis_destroy_fails_pending_commands_with_null(void **state)
{
    rtest_t *t = rtest_connected();
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "BLPOP loops:never 0"), 0);
    assert_true(RUN_UNTIL(t->loop, ctl_info_field(&g_redis, "blocked_clients") == 1, 2000));
    for (int i = 1; i <= 5; i++) /* queued, not even written yet */
        assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, i), "GET loops:x"), 0);
    redis_loop_destroy(t->r);
    t->r = NULL;
    for (int i = 0; i <= 5; i++) {
        assert_int_equal(t->calls[i], 1);
        assert_true(t->got_null[i]);
    }
    assert_int_equal(t->nstates, 1); /* destroy does not report a state change */
    rtest_free(t);
    /* the server saw the client go */
    redis_proc_t *p = &g_redis;
    uint64_t deadline = now_ms() + 2000;
    while (ctl_info_field(p, "blocked_clients") != 0 && now_ms() < deadline)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    assert_int_equal(ctl_info_field(p, "blocked_clients"), 0);
}

/* Accept whatever is pending on a non-blocking listener; remember when. */
static int accept_pending(int lfd, int *fds, uint64_t *at, int *n, int max)
{
    int fd;
    while (*n < max && (fd = accept(lfd, NULL, NULL)) >= 0) {
        fds[*n] = fd;
        at[*n] = now_ms();
        (*n)++;
    }
    return *n;
}

static void test_redis_silent_server_is_abandoned_and_retried(void **state)
{
    /* accepts the connection, never answers PING: the handshake must time out */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), fds[8], n = 0;
    uint64_t at[8];
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 8), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = ntohs(sa.sin_port)};
    rtest_t *t = rtest_new(&cfg);
    assert_true(RUN_UNTIL(t->loop, accept_pending(lfd, fds, at, &n, 8) >= 1, 2000));
    assert_true(RUN_UNTIL(t->loop, accept_pending(lfd, fds, at, &n, 8) >= 2, REDIS_STALL_MS + 1500));
    assert_true(at[1] - at[0] >= REDIS_STALL_MS - 100); /* it waited, then gave up */
    assert_false(redis_loop_ready(t->r));
    assert_int_equal(t->nstates, 0);
    rtest_free(t);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(lfd);
}

/* Local ports of the sockets in SYN_SENT towards 127.0.0.1:rport (from /proc/net/tcp). */
static int syn_sent_ports(int rport, int *ports, int max)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    int n = 0;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned laddr, lport, raddr, rp, st;
        if (sscanf(line, " %*d: %x:%x %x:%x %x", &laddr, &lport, &raddr, &rp, &st) == 5 && st == 0x02 &&
            (int)rp == rport && n < max)
            ports[n++] = (int)lport;
    }
    fclose(f);
    return n;
}

/* 1 when the only SYN_SENT socket to rport is a new one (not old_port). */
static int connect_retried(int rport, int old_port)
{
    int ports[8], n = syn_sent_ports(rport, ports, 8);
    return n == 1 && ports[0] != old_port;
}

static void test_redis_hanging_tcp_connect_is_abandoned_and_retried(void **state)
{
    /* Linux drops SYNs to a listener whose accept queue is full (listen backlog 0:
     * one slot, taken by a filler), so the loop's connect(2) hangs in SYN_SENT. */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), ports[8];
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    int filler = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(filler, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int rport = ntohs(sa.sin_port);

    redis_loop_config_t cfg = {.host = "127.0.0.1", .port = rport};
    rtest_t *t = rtest_new(&cfg);
    assert_true(RUN_UNTIL(t->loop, syn_sent_ports(rport, ports, 8) == 1, 1000));
    int first = ports[0];
    uint64_t t0 = now_ms();
    /* the hanging attempt is closed and a new one started, within the bound */
    assert_true(RUN_UNTIL(t->loop, connect_retried(rport, first), REDIS_STALL_MS + 1000));
    assert_true(now_ms() - t0 >= REDIS_STALL_MS - 300);
    assert_false(redis_loop_ready(t->r));
    assert_int_equal(t->nstates, 0);
    rtest_free(t);
    close(filler);
    close(lfd);
}

/* A second instance: password, unix socket only. */
static void auth_instance(redis_proc_t *p)
{
    memset(p, 0, sizeof(*p));
    p->port = 0;
    snprintf(p->unix_path, sizeof(p->unix_path), "/tmp/test_redis_loop.%d.sock", (int)getpid());
    p->password = "loops-secret";
    unlink(p->unix_path); /* a stale one from a crashed run */
    redis_start(p);
}

static void test_redis_auth_and_select_over_unix_socket(void **state)
{
    redis_proc_t p;
    auth_instance(&p);
    redis_loop_config_t cfg = {.unix_path = p.unix_path, .password = p.password, .db = 3};
    rtest_t *t = rtest_new(&cfg);
    assert_true(RUN_UNTIL(t->loop, redis_loop_ready(t->r), 3000));
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "SET loops:db %s", "three"), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 2000));
    assert_false(t->got_null[0]);
    rtest_free(t);

    redisContext *c = ctl_connect(&p);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET loops:db");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "three");
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 0");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET loops:db");
    assert_int_equal(rep->type, REDIS_REPLY_NIL); /* it went to db 3 only */
    freeReplyObject(rep);
    redisFree(c);
    redis_kill(&p);
    unlink(p.unix_path);
}

static void test_redis_wrong_password_never_becomes_ready(void **state)
{
    redis_proc_t p;
    auth_instance(&p);
    long before = ctl_info_field(&p, "total_error_replies");
    redis_loop_config_t cfg = {.unix_path = p.unix_path, .password = "wrong"};
    rtest_t *t = rtest_new(&cfg);
    /* each attempt earns WRONGPASS (AUTH) and NOAUTH (PING): wait for two attempts, which
     * shows it keeps retrying, and check it never reported connected */
    assert_true(RUN_UNTIL(t->loop, ctl_info_field(&p, "total_error_replies") >= before + 4, 3000));
    assert_false(redis_loop_ready(t->r));
    assert_int_equal(t->nstates, 0);
    assert_int_equal(redis_loop_command(t->r, on_cmd, slot(t, 0), "PING"), -1);
    rtest_free(t);
    redis_kill(&p);
    unlink(p.unix_path);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2); the broker's main does the same */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_refuses_commands_until_connected),
        cmocka_unit_test(test_redis_reconnect_attempts_back_off),
        cmocka_unit_test(test_redis_set_get_round_trip),
        cmocka_unit_test(test_redis_1000_pipelined_incrs_answered_in_order),
        cmocka_unit_test(test_redis_refuses_commands_that_break_reply_order),
        cmocka_unit_test(test_redis_kill_fails_pending_commands_with_null),
        cmocka_unit_test(test_redis_commands_return_minus_one_while_disconnected),
        cmocka_unit_test(test_redis_reconnects_by_itself_after_restart),
        cmocka_unit_test(test_redis_stall_fails_pending_command_within_bound),
        cmocka_unit_test(test_redis_destroy_fails_pending_commands_with_null),
        cmocka_unit_test(test_redis_silent_server_is_abandoned_and_retried),
        cmocka_unit_test(test_redis_hanging_tcp_connect_is_abandoned_and_retried),
        cmocka_unit_test(test_redis_auth_and_select_over_unix_socket),
        cmocka_unit_test(test_redis_wrong_password_never_becomes_ready),
    };
    return cmocka_run_group_tests_name("redis_loop", tests, redis_group_setup, redis_group_teardown);
}
