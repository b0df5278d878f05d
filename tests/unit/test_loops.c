/* test_loops.c — redis_loop and curl_loop against real processes on a real h2o evloop.
 *
 * Redis: the test starts its own redis-server (free port, no persistence), kills and
 * restarts it, pauses it with CLIENT PAUSE from a second (synchronous hiredis)
 * connection, and starts a second instance with a password on a unix socket. The
 * subscriber and the read cache (store/rcache) are tested against the same server:
 * changes from another client, FLUSHALL, the subscriber killed, Redis paused or
 * restarted.
 * HTTP: a small server on a second thread (127.0.0.1, poll(2), keep-alive) answers by
 * path: /echo, /status/NNN, /redirect, /hang, /big (cap + 1 bytes), /exact (cap bytes),
 * /sink (reads a body of any size and answers with its length).
 *
 * Nothing waits by sleeping: every wait runs the h2o loop until a condition holds, with
 * a deadline; the only pauses are between readiness probes of a starting redis-server.
 * Every accepted request's callback is counted, so "exactly once" is asserted. */
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

/* The main instance, shared by the redis tests (restarted by those that kill it). */
static redis_proc_t g_redis;

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

static int redis_group_setup(void **state)
{
    memset(&g_redis, 0, sizeof(g_redis));
    g_redis.port = free_port();
    redis_start(&g_redis);
    return 0;
}

static int redis_group_teardown(void **state)
{
    redis_kill(&g_redis);
    return 0;
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
    snprintf(p->unix_path, sizeof(p->unix_path), "/tmp/test_loops.%d.sock", (int)getpid());
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

/* ===== A small HTTP server on a second thread ===== */

#define HTTPD_CONNS 128
#define HTTPD_BUF 16384

typedef struct hconn {
    int fd;
    size_t len;
    int hang;
    size_t sink_left, sink_total; /* /sink: body bytes still to discard, and the total */
    char buf[HTTPD_BUF];
} hconn_t;

typedef struct httpd {
    int lfd, port;
    int wake[2];
    pthread_t th;
    pthread_mutex_t mu;
    int nreq;
    char last_method[16], last_path[64], last_auth[256], last_ctype[128], last_body[1024];
    hconn_t *conns[HTTPD_CONNS];
} httpd_t;

static httpd_t g_httpd;

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            if (poll(&pfd, 1, 5000) <= 0)
                return -1;
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int status, const char *extra, const char *body, size_t blen)
{
    char head[256];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\n%sContent-Length: %zu\r\n\r\n",
                     status, extra, blen);
    return send_all(fd, head, (size_t)n) != 0 || send_all(fd, body, blen) != 0 ? -1 : 0;
}

/* Copy the value of header name (case-insensitive) from the header block. */
static void header_value(const char *hdrs, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    out[0] = '\0';
    for (const char *l = strstr(hdrs, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, name, nlen) == 0 && l[2 + nlen] == ':') {
            const char *v = l + 3 + nlen, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(e - v), v);
            return;
        }
    }
}

static int hconn_sink_done(hconn_t *c)
{
    char body[32];
    int n = snprintf(body, sizeof(body), "sunk:%zu", c->sink_total);
    c->sink_total = 0;
    return respond(c->fd, 200, "", body, (size_t)n);
}

/* Handle complete requests in c's buffer. Returns -1 to close the connection. */
static int hconn_process(httpd_t *h, hconn_t *c)
{
    while (!c->hang) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end == NULL)
            return 0;
        size_t hlen = (size_t)(end - c->buf) + 4;
        char cl[32], method[16] = "", path[64] = "";
        *end = '\0';
        header_value(c->buf, "Content-Length", cl, sizeof(cl));
        size_t blen = cl[0] != '\0' ? strtoul(cl, NULL, 10) : 0;
        sscanf(c->buf, "%15s %63s", method, path);
        if (strcmp(path, "/sink") == 0) {
            /* stream the body away: it may be far larger than the buffer */
            size_t have = c->len - hlen < blen ? c->len - hlen : blen;
            pthread_mutex_lock(&h->mu);
            h->nreq++;
            pthread_mutex_unlock(&h->mu);
            c->sink_total = blen;
            c->sink_left = blen - have;
            memmove(c->buf, c->buf + hlen + have, c->len - hlen - have);
            c->len -= hlen + have;
            if (c->sink_left > 0)
                return 0;
            if (hconn_sink_done(c) != 0)
                return -1;
            continue;
        }
        if (hlen + blen > HTTPD_BUF - 1)
            return -1;
        if (c->len < hlen + blen) {
            *end = '\r';
            return 0;
        }
        pthread_mutex_lock(&h->mu);
        h->nreq++;
        snprintf(h->last_method, sizeof(h->last_method), "%s", method);
        snprintf(h->last_path, sizeof(h->last_path), "%s", path);
        header_value(c->buf, "Authorization", h->last_auth, sizeof(h->last_auth));
        header_value(c->buf, "Content-Type", h->last_ctype, sizeof(h->last_ctype));
        snprintf(h->last_body, sizeof(h->last_body), "%.*s", (int)blen, c->buf + hlen);
        pthread_mutex_unlock(&h->mu);

        char body[1100];
        int rc = 0;
        if (strcmp(path, "/echo") == 0) {
            int n = snprintf(body, sizeof(body), "echo:%.*s", (int)blen, c->buf + hlen);
            rc = respond(c->fd, 200, "", body, (size_t)n);
        } else if (strncmp(path, "/status/", 8) == 0) {
            rc = respond(c->fd, atoi(path + 8), "", "status", 6);
        } else if (strcmp(path, "/redirect") == 0) {
            rc = respond(c->fd, 302, "Location: /echo\r\n", "moved", 5);
        } else if (strcmp(path, "/hang") == 0) {
            c->hang = 1;
        } else if (strcmp(path, "/big") == 0 || strcmp(path, "/exact") == 0) {
            size_t n = CURL_LOOP_MAX_RESPONSE + (path[1] == 'b' ? 1 : 0);
            char *big = malloc(n);
            memset(big, 'x', n);
            rc = respond(c->fd, 200, "", big, n);
            free(big);
        } else {
            rc = respond(c->fd, 404, "", "nope", 4);
        }
        if (rc != 0)
            return -1;
        memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
        c->len -= hlen + blen;
    }
    return 0;
}

static void *httpd_main(void *arg)
{
    httpd_t *h = arg;
    for (;;) {
        struct pollfd pfds[HTTPD_CONNS + 2];
        int idx[HTTPD_CONNS + 2], n = 0;
        pfds[n++] = (struct pollfd){h->wake[0], POLLIN, 0};
        pfds[n++] = (struct pollfd){h->lfd, POLLIN, 0};
        for (int i = 0; i < HTTPD_CONNS; i++)
            if (h->conns[i] != NULL) {
                idx[n] = i;
                pfds[n++] = (struct pollfd){h->conns[i]->fd, POLLIN, 0};
            }
        if (poll(pfds, (nfds_t)n, -1) < 0)
            continue;
        if (pfds[0].revents != 0)
            break;
        if (pfds[1].revents & POLLIN) {
            int fd = accept(h->lfd, NULL, NULL);
            int i = 0;
            while (fd >= 0 && i < HTTPD_CONNS && h->conns[i] != NULL)
                i++;
            if (fd >= 0 && i < HTTPD_CONNS) {
                h->conns[i] = calloc(1, sizeof(hconn_t));
                h->conns[i]->fd = fd;
            } else if (fd >= 0) {
                close(fd);
            }
        }
        for (int k = 2; k < n; k++) {
            if (pfds[k].revents == 0)
                continue;
            hconn_t *c = h->conns[idx[k]];
            char tmp[HTTPD_BUF];
            /* while not discarding a body, read no more than the buffer can take */
            size_t room = c->sink_left > 0 || c->hang ? sizeof(tmp) : HTTPD_BUF - 1 - c->len;
            ssize_t r = room > 0 ? read(c->fd, tmp, room) : -1;
            int close_it = r <= 0;
            char *in = tmp;
            if (r > 0 && c->sink_left > 0) {
                size_t take = (size_t)r < c->sink_left ? (size_t)r : c->sink_left;
                c->sink_left -= take;
                in += take;
                r -= (ssize_t)take;
                if (c->sink_left == 0 && hconn_sink_done(c) != 0)
                    close_it = 1;
            }
            if (r > 0 && !c->hang && !close_it) {
                if (c->len + (size_t)r > HTTPD_BUF - 1) {
                    close_it = 1;
                } else {
                    memcpy(c->buf + c->len, in, (size_t)r);
                    c->len += (size_t)r;
                    close_it = hconn_process(h, c) != 0;
                }
            }
            if (close_it) {
                close(c->fd);
                free(c);
                h->conns[idx[k]] = NULL;
            }
        }
    }
    for (int i = 0; i < HTTPD_CONNS; i++)
        if (h->conns[i] != NULL) {
            close(h->conns[i]->fd);
            free(h->conns[i]);
            h->conns[i] = NULL;
        }
    return NULL;
}

static int httpd_nreq(void)
{
    pthread_mutex_lock(&g_httpd.mu);
    int n = g_httpd.nreq;
    pthread_mutex_unlock(&g_httpd.mu);
    return n;
}

static int curl_group_setup(void **state)
{
    httpd_t *h = &g_httpd;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int on = 1;
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(h->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(h->lfd, 256) != 0 ||
        getsockname(h->lfd, (struct sockaddr *)&sa, &len) != 0 || pipe(h->wake) != 0)
        return -1;
    h->port = ntohs(sa.sin_port);
    return pthread_create(&h->th, NULL, httpd_main, h);
}

static int curl_group_teardown(void **state)
{
    httpd_t *h = &g_httpd;
    if (write(h->wake[1], "x", 1) != 1)
        return -1;
    pthread_join(h->th, NULL);
    close(h->lfd);
    close(h->wake[0]);
    close(h->wake[1]);
    pthread_mutex_destroy(&h->mu);
    return 0;
}

/* ===== curl_loop fixtures ===== */

#define MAX_POSTS 64

typedef struct ctest {
    h2o_evloop_t *loop;
    curl_loop_t *c;
    int calls[MAX_POSTS];
    long status[MAX_POSTS];
    char body[MAX_POSTS][64];
    size_t len[MAX_POSTS];
    uint64_t done_at[MAX_POSTS];
    int ndone;
} ctest_t;

typedef struct cslot {
    ctest_t *t;
    int i;
} cslot_t;

static cslot_t g_cslots[MAX_POSTS];

static void *cslot(ctest_t *t, int i)
{
    g_cslots[i].t = t;
    g_cslots[i].i = i;
    return &g_cslots[i];
}

static void on_post(long status, const char *body, size_t len, void *data)
{
    cslot_t *s = data;
    ctest_t *t = s->t;
    t->calls[s->i]++;
    t->ndone++;
    t->status[s->i] = status;
    t->len[s->i] = len;
    t->done_at[s->i] = now_ms();
    assert_non_null(body);
    assert_int_equal(body[len], '\0');
    snprintf(t->body[s->i], sizeof(t->body[s->i]), "%.*s", (int)(len < 63 ? len : 63), body);
}

static ctest_t *ctest_new(void)
{
    ctest_t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->loop = h2o_evloop_create();
    t->c = curl_loop_create(t->loop);
    assert_non_null(t->c);
    return t;
}

static void ctest_free(ctest_t *t)
{
    if (t->c != NULL)
        curl_loop_destroy(t->c);
    h2o_evloop_run(t->loop, 0);
    h2o_evloop_destroy(t->loop);
    free(t);
}

static char *url(const char *path)
{
    static char buf[8][128];
    static int n;
    char *u = buf[n++ % 8];
    snprintf(u, sizeof(buf[0]), "http://127.0.0.1:%d%s", g_httpd.port, path);
    return u;
}

static curl_loop_req_t req_for(const char *path, const char *form)
{
    return (curl_loop_req_t){.url = url(path), .form = form, .timeout_ms = 5000, .allow_http = 1};
}

/* ===== curl_loop tests ===== */

static void test_curl_post_returns_status_and_body(void **state)
{
    ctest_t *t = ctest_new();
    curl_loop_req_t req = req_for("/echo", "grant_type=authorization_code&code=ac_123");
    req.bearer = "sk_test_bearer";
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_int_equal(curl_loop_inflight(t->c), 1);
    assert_int_equal(t->calls[0], 0); /* never synchronously */
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 5000));
    assert_int_equal(t->status[0], 200);
    assert_string_equal(t->body[0], "echo:grant_type=authorization_code&code=ac_123");
    assert_int_equal(curl_loop_inflight(t->c), 0);
    pthread_mutex_lock(&g_httpd.mu);
    assert_string_equal(g_httpd.last_method, "POST");
    assert_string_equal(g_httpd.last_auth, "Bearer sk_test_bearer");
    assert_string_equal(g_httpd.last_ctype, "application/x-www-form-urlencoded");
    pthread_mutex_unlock(&g_httpd.mu);
    ctest_free(t);
}

static void test_curl_basic_auth_is_user_and_empty_password(void **state)
{
    ctest_t *t = ctest_new();
    curl_loop_req_t req = req_for("/echo", "stripe_user_id=acct_1");
    req.basic_user = "sk_test_abc";
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 5000));
    assert_int_equal(t->status[0], 200);
    pthread_mutex_lock(&g_httpd.mu);
    assert_string_equal(g_httpd.last_auth, "Basic c2tfdGVzdF9hYmM6"); /* base64("sk_test_abc:") */
    assert_string_equal(g_httpd.last_body, "stripe_user_id=acct_1");
    pthread_mutex_unlock(&g_httpd.mu);
    ctest_free(t);
}

static void test_curl_error_status_and_body_pass_through(void **state)
{
    ctest_t *t = ctest_new();
    curl_loop_req_t req = req_for("/status/402", "a=b");
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 5000));
    assert_int_equal(t->status[0], 402);
    assert_string_equal(t->body[0], "status");
    ctest_free(t);
}

static void test_curl_redirect_is_not_followed(void **state)
{
    ctest_t *t = ctest_new();
    int before = httpd_nreq();
    curl_loop_req_t req = req_for("/redirect", "a=b");
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 5000));
    assert_int_equal(t->status[0], 302);
    assert_string_equal(t->body[0], "moved");
    assert_int_equal(httpd_nreq(), before + 1);
    ctest_free(t);
}

static void test_curl_50_concurrent_posts_all_complete(void **state)
{
    ctest_t *t = ctest_new();
    char forms[50][16];
    for (int i = 0; i < 50; i++) {
        snprintf(forms[i], sizeof(forms[i]), "id=%d", i);
        curl_loop_req_t req = req_for("/echo", forms[i]);
        assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, i)), 0);
    }
    assert_int_equal(curl_loop_inflight(t->c), 50);
    assert_true(RUN_UNTIL(t->loop, t->ndone == 50, 10000));
    for (int i = 0; i < 50; i++) {
        char want[32];
        snprintf(want, sizeof(want), "echo:id=%d", i);
        assert_int_equal(t->calls[i], 1);
        assert_int_equal(t->status[i], 200);
        assert_string_equal(t->body[i], want);
    }
    assert_int_equal(curl_loop_inflight(t->c), 0);
    ctest_free(t);
}

static void test_curl_large_request_body_is_sent_completely(void **state)
{
    /* far more than a socket buffer: curl keeps wanting to write across many loop
     * passes without telling us again, so this needs the write re-arm */
    const size_t n = 4u << 20;
    char *form = malloc(n + 1);
    assert_non_null(form);
    memset(form, 'f', n);
    form[n] = '\0';
    ctest_t *t = ctest_new();
    curl_loop_req_t req = req_for("/sink", form);
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    free(form); /* the request is copied */
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 4000));
    assert_int_equal(t->status[0], 200);
    assert_string_equal(t->body[0], "sunk:4194304");
    ctest_free(t);
}

static void test_curl_hanging_server_times_out_with_zero(void **state)
{
    ctest_t *t = ctest_new();
    curl_loop_req_t req = req_for("/hang", "a=b");
    req.timeout_ms = 700;
    uint64_t t0 = now_ms();
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, (uint64_t)req.timeout_ms + 1000));
    uint64_t elapsed = t->done_at[0] - t0;
    assert_int_equal(t->status[0], 0);
    assert_int_equal(t->len[0], 0);
    assert_true(elapsed >= (uint64_t)req.timeout_ms - 50); /* it was the timeout, not an error */
    assert_true(elapsed < (uint64_t)req.timeout_ms + 1000);
    ctest_free(t);
}

static void test_curl_connection_refused_gives_zero(void **state)
{
    ctest_t *t = ctest_new();
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/echo", free_port());
    curl_loop_req_t req = {.url = u, .form = "a=b", .timeout_ms = 5000, .allow_http = 1};
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 2000));
    assert_int_equal(t->status[0], 0);
    assert_string_equal(t->body[0], "");
    ctest_free(t);
}

static void test_curl_response_cap_is_enforced(void **state)
{
    ctest_t *t = ctest_new();
    curl_loop_req_t exact = req_for("/exact", "a=b"), big = req_for("/big", "a=b");
    assert_int_equal(curl_loop_post(t->c, &exact, on_post, cslot(t, 0)), 0);
    assert_int_equal(curl_loop_post(t->c, &big, on_post, cslot(t, 1)), 0);
    assert_true(RUN_UNTIL(t->loop, t->ndone == 2, 5000));
    assert_int_equal(t->status[0], 200);
    assert_int_equal(t->len[0], CURL_LOOP_MAX_RESPONSE);
    assert_int_equal(t->status[1], 0);
    assert_int_equal(t->len[1], 0);
    ctest_free(t);
}

static void test_curl_plain_http_refused_unless_allowed(void **state)
{
    ctest_t *t = ctest_new();
    int before = httpd_nreq();
    curl_loop_req_t req = req_for("/echo", "a=b");
    req.allow_http = 0;
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->calls[0] == 1, 2000));
    assert_int_equal(t->status[0], 0);
    assert_int_equal(httpd_nreq(), before);
    ctest_free(t);
}

static void test_curl_post_rejects_bad_requests(void **state)
{
    ctest_t *t = ctest_new();
    curl_loop_req_t req = req_for("/echo", "a=b");
    req.timeout_ms = 0; /* every call needs a deadline */
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), -1);
    req = req_for("/echo", "a=b");
    req.url = NULL;
    assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, 0)), -1);
    assert_int_equal(curl_loop_inflight(t->c), 0);
    RUN_UNTIL(t->loop, 0, 50);
    assert_int_equal(t->calls[0], 0);
    ctest_free(t);
}

static ctest_t *g_chain_c;

static void on_post_chain(long status, const char *body, size_t len, void *data)
{
    cslot_t *s = data;
    on_post(status, body, len, data);
    if (s->i < 4) {
        curl_loop_req_t req = req_for("/echo", "next");
        assert_int_equal(curl_loop_post(g_chain_c->c, &req, on_post_chain, cslot(g_chain_c, s->i + 1)), 0);
    }
}

static void test_curl_post_from_inside_a_callback(void **state)
{
    ctest_t *t = ctest_new();
    g_chain_c = t;
    curl_loop_req_t req = req_for("/echo", "next");
    assert_int_equal(curl_loop_post(t->c, &req, on_post_chain, cslot(t, 0)), 0);
    assert_true(RUN_UNTIL(t->loop, t->ndone == 5, 5000));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(t->calls[i], 1);
        assert_int_equal(t->status[i], 200);
    }
    ctest_free(t);
}

static void test_curl_destroy_calls_in_flight_back_with_zero(void **state)
{
    ctest_t *t = ctest_new();
    int before = httpd_nreq();
    for (int i = 0; i < 5; i++) {
        curl_loop_req_t req = req_for("/hang", "a=b");
        req.timeout_ms = 30000;
        assert_int_equal(curl_loop_post(t->c, &req, on_post, cslot(t, i)), 0);
    }
    /* every request reached the server: the transfers are really in flight */
    assert_true(RUN_UNTIL(t->loop, httpd_nreq() == before + 5, 5000));
    assert_int_equal(t->ndone, 0);
    curl_loop_destroy(t->c);
    t->c = NULL;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(t->calls[i], 1);
        assert_int_equal(t->status[i], 0);
    }
    ctest_free(t);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2); the broker's main does the same */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    const struct CMUnitTest redis_tests[] = {
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
        cmocka_unit_test(test_subscriber_receives_messages_and_takes_no_commands),
        cmocka_unit_test(test_rcache_serves_what_it_read_until_another_client_changes_it),
        cmocka_unit_test(test_rcache_caches_absence_until_the_key_is_created),
        cmocka_unit_test(test_rcache_change_between_reserve_and_fill_is_not_cached),
        cmocka_unit_test(test_rcache_flushall_empties_it),
        cmocka_unit_test(test_rcache_derived_data_lives_and_dies_with_the_entry),
        cmocka_unit_test(test_rcache_is_fresh_only_for_a_busy_worker_with_a_recent_probe),
        cmocka_unit_test(test_rcache_stalled_redis_is_not_fresh_within_the_bound),
        cmocka_unit_test(test_rcache_first_probe_after_a_quiet_spell_is_not_taken_for_lost),
        cmocka_unit_test(test_rcache_same_bytes_keep_what_was_derived),
        cmocka_unit_test(test_rcache_lost_subscriber_empties_it_and_it_comes_back),
        cmocka_unit_test(test_rcache_redis_restart_empties_it_and_it_comes_back),
    };
    const struct CMUnitTest curl_tests[] = {
        cmocka_unit_test(test_curl_post_returns_status_and_body),
        cmocka_unit_test(test_curl_basic_auth_is_user_and_empty_password),
        cmocka_unit_test(test_curl_error_status_and_body_pass_through),
        cmocka_unit_test(test_curl_redirect_is_not_followed),
        cmocka_unit_test(test_curl_50_concurrent_posts_all_complete),
        cmocka_unit_test(test_curl_large_request_body_is_sent_completely),
        cmocka_unit_test(test_curl_hanging_server_times_out_with_zero),
        cmocka_unit_test(test_curl_connection_refused_gives_zero),
        cmocka_unit_test(test_curl_response_cap_is_enforced),
        cmocka_unit_test(test_curl_plain_http_refused_unless_allowed),
        cmocka_unit_test(test_curl_post_rejects_bad_requests),
        cmocka_unit_test(test_curl_post_from_inside_a_callback),
        cmocka_unit_test(test_curl_destroy_calls_in_flight_back_with_zero),
    };
    int failed = cmocka_run_group_tests_name("redis_loop", redis_tests, redis_group_setup, redis_group_teardown);
    failed += cmocka_run_group_tests_name("curl_loop", curl_tests, curl_group_setup, curl_group_teardown);
    curl_global_cleanup();
    return failed != 0;
}
