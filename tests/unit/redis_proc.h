/* redis_proc.h — test helpers shared by the unit tests that run against a real
 * redis-server (test_redis_loop.c, test_rcache.c, test_store_conn.c, test_store_flows.c,
 * test_token_service.c): a monotonic clock, RUN_UNTIL (run an h2o loop until a condition
 * holds, with a deadline), a free port, redis-server processes started (free port, no
 * persistence), probed, queried and killed, and the one instance a test binary shares
 * (g_redis, with its cmocka group setup and teardown).
 * Static functions: each test binary includes it once. */
#ifndef TESTS_UNIT_REDIS_PROC_H
#define TESTS_UNIT_REDIS_PROC_H
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>

/* ===== Time and waiting ===== */

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run the loop until cond holds or ms have passed; evaluates to cond. */
#define RUN_UNTIL(loop, cond, ms)                                                                                      \
    ({                                                                                                                 \
        uint64_t deadline_ = now_ms() + (ms);                                                                          \
        while (!(cond) && now_ms() < deadline_)                                                                        \
            h2o_evloop_run((loop), 10);                                                                                \
        (cond);                                                                                                        \
    })

/* A port nobody listens on right now. */
static inline int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ===== redis-server processes ===== */

typedef struct redis_proc {
    pid_t pid;
    int port;             /* TCP port, or 0 for a unix-socket-only instance */
    char unix_path[96];
    const char *password;
} redis_proc_t;

static inline redisContext *ctl_connect(const redis_proc_t *p)
{
    struct timeval tv = {0, 200 * 1000};
    redisContext *c = p->port != 0 ? redisConnectWithTimeout("127.0.0.1", p->port, tv)
                                   : redisConnectUnixWithTimeout(p->unix_path, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){10, 0});
    if (p->password != NULL) {
        redisReply *rep = redisCommand(c, "AUTH %s", p->password);
        int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
        freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* A synchronous command on a fresh controller connection; returns the reply. */
static inline redisReply *ctl_command(const redis_proc_t *p, const char *fmt, ...)
{
    redisContext *c = ctl_connect(p);
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(rep);
    return rep;
}

/* An integer field of INFO (e.g. "blocked_clients"), or -1. */
static inline long ctl_info_field(const redis_proc_t *p, const char *field)
{
    redisReply *rep = ctl_command(p, "INFO");
    long v = -1;
    char key[64];
    snprintf(key, sizeof(key), "\r\n%s:", field);
    if (rep->type == REDIS_REPLY_STRING) {
        const char *at = strstr(rep->str, key);
        if (at != NULL)
            v = strtol(at + strlen(key), NULL, 10);
    }
    freeReplyObject(rep);
    return v;
}

static inline void redis_start(redis_proc_t *p)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", p->port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        const char *argv[20] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"};
        int n = 9;
        if (p->unix_path[0] != '\0') {
            argv[n++] = "--unixsocket";
            argv[n++] = p->unix_path;
        }
        if (p->password != NULL) {
            argv[n++] = "--requirepass";
            argv[n++] = p->password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    /* readiness: connect and PING, polling for at most 5 s */
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        redisContext *c = ctl_connect(p);
        if (c != NULL) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
            freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return;
        }
        assert_true(now_ms() < deadline);
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
}

static inline void redis_kill(redis_proc_t *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
}

/* ===== The shared instance ===== */

/* The redis-server the tests of one binary share: started by redis_shared_start (or the
 * cmocka group setup redis_group_setup) on a free port, killed by redis_group_teardown. A
 * test that kills it to watch a failure starts it again, on the same port, with
 * redis_start(&g_redis). */
static redis_proc_t g_redis __attribute__((unused));

static inline void redis_shared_start(void)
{
    memset(&g_redis, 0, sizeof(g_redis));
    g_redis.port = free_port();
    redis_start(&g_redis);
}

static inline int redis_group_setup(void **state)
{
    redis_shared_start();
    return 0;
}

static inline int redis_group_teardown(void **state)
{
    redis_kill(&g_redis);
    return 0;
}
#endif
