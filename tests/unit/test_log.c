/* test_log.c — the log writer thread: whole lines in order, direct or queued, nothing
 * waits on a stalled stderr, and every line is either written or counted as dropped
 * (and the drop reported).
 *
 * stderr is replaced by a pipe of one page that the test reads, or leaves unread to
 * stand for a file system or container runtime that stalls. Waits poll the pipe with
 * a deadline; the burst that meets the unread pipe must finish before an alarm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "log.h"

static int saved_stderr = -1;
static int rd = -1; /* the read end of the pipe standing in for stderr */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int pipe_as_stderr(void **state)
{
    int p[2];
    (void)state;
    if (pipe(p) != 0)
        return -1;
    fcntl(p[0], F_SETPIPE_SZ, 4096);
    saved_stderr = dup(STDERR_FILENO);
    stderr = fdopen(saved_stderr, "w"); /* the test framework's own messages */
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    rd = p[0];
    return 0;
}

static int restore_stderr(void **state)
{
    (void)state;
    log_writer_stop();
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(rd);
    return 0;
}

/* Reads what the pipe holds into out, waiting up to wait_ms for the first byte. */
static void drain(buf_t *out, int wait_ms)
{
    struct pollfd pfd = {rd, POLLIN, 0};
    char chunk[65536];
    while (poll(&pfd, 1, wait_ms) == 1) {
        ssize_t n = read(rd, chunk, sizeof(chunk));
        if (n <= 0)
            break;
        buf_append(out, chunk, (size_t)n);
        wait_ms = 0;
    }
}

/* Waits (deadline 2 s) until out holds needle. */
static int await_text(buf_t *out, const char *needle)
{
    uint64_t deadline = now_ms() + 2000;
    while (out->p == NULL || strstr(out->p, needle) == NULL) {
        if (now_ms() > deadline)
            return 0;
        drain(out, 50);
    }
    return 1;
}

static void test_without_writer_a_line_is_written_before_the_call_returns(void **state)
{
    buf_t out = {0};
    log_event(LOG_INFO, "direct", "k", "v", NULL);
    drain(&out, 0);
    assert_non_null(out.p);
    assert_non_null(strstr(out.p, "\"msg\":\"direct\",\"k\":\"v\"}\n"));
    assert_int_equal(out.p[0], '{');
    buf_free(&out);
}

static void test_writer_delivers_a_line_without_further_calls(void **state)
{
    buf_t out = {0};
    assert_int_equal(log_writer_start(), 0);
    log_event(LOG_WARN, "queued", NULL);
    assert_true(await_text(&out, "\"level\":\"warn\",\"msg\":\"queued\"}\n"));
    log_writer_stop();
    log_event(LOG_INFO, "after stop", NULL);
    drain(&out, 0);
    assert_non_null(strstr(out.p, "\"msg\":\"after stop\"}\n")); /* direct again */
    buf_free(&out);
}

static unsigned long count_lines(const buf_t *b, const char *needle)
{
    unsigned long n = 0;
    for (const char *p = b->p; p != NULL && (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* The sum of the "lines" counts of every drop report in out. */
static unsigned long reported_drops(const buf_t *b)
{
    const char *tag = "\"msg\":\"log lines dropped: stderr did not keep up\",\"lines\":\"";
    unsigned long n = 0;
    for (const char *p = b->p; p != NULL && (p = strstr(p, tag)) != NULL; p++)
        n += strtoul(p + strlen(tag), NULL, 10);
    return n;
}

struct reader {
    buf_t out;
    _Atomic int stop;
    size_t chunk; /* 0: read all there is; else read this much at a time (a slow reader) */
};

static void *read_all(void *arg)
{
    struct reader *r = arg;
    while (!r->stop) {
        if (r->chunk == 0) {
            drain(&r->out, 20);
            continue;
        }
        char b[512];
        struct pollfd pfd = {rd, POLLIN, 0};
        if (poll(&pfd, 1, 20) == 1) {
            ssize_t n = read(rd, b, r->chunk < sizeof(b) ? r->chunk : sizeof(b));
            if (n > 0)
                buf_append(&r->out, b, (size_t)n);
        }
    }
    drain(&r->out, 0);
    return NULL;
}

/* 1 when every line of b starts as a log line does and ends with its closing brace. */
static int lines_whole(const buf_t *b)
{
    const char *p = b->p, *end = b->p + b->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL || strncmp(p, "{\"ts\":\"", 7) != 0 || nl[-1] != '}')
            return 0;
        p = nl + 1;
    }
    return 1;
}

static void test_a_stalled_stderr_drops_lines_and_never_blocks_the_caller(void **state)
{
    enum { N = 60000 }; /* about 6 MB of lines: more than the queue and the pipe hold */
    const char *line_tag = "\"msg\":\"burst\"";
    uint64_t before = log_dropped_lines();
    assert_int_equal(log_writer_start(), 0);
    alarm(10); /* a caller blocked on stderr would hang here: the alarm fails the test */
    for (int i = 0; i < N; i++) {
        char n[16];
        snprintf(n, sizeof(n), "%d", i);
        log_event(LOG_INFO, "burst", "i", n, "pad", "..................................................", NULL);
    }
    alarm(0);
    unsigned long dropped = log_dropped_lines() - before;
    assert_true(dropped > 0);
    assert_true(dropped < N);

    /* stderr drains again: everything queued arrives, then the report of the drop */
    struct reader r = {{0}, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, read_all, &r);
    log_writer_stop(); /* returns once everything queued is written */
    r.stop = 1;
    pthread_join(t, NULL);

    unsigned long written = count_lines(&r.out, line_tag);
    assert_int_equal(written + dropped, N);
    assert_int_equal(reported_drops(&r.out), dropped);
    /* every line whole: as many line ends as line starts */
    assert_int_equal(count_lines(&r.out, "{\"ts\":\""), count_lines(&r.out, "}\n"));
    buf_free(&r.out);
}

struct sock_reader {
    int fd;
    _Atomic int stop;
    unsigned long lines;
};

static void *read_socket(void *arg)
{
    struct sock_reader *r = arg;
    char b[65536];
    for (;;) {
        struct pollfd pfd = {r->fd, POLLIN, 0};
        if (poll(&pfd, 1, 20) != 1) {
            if (r->stop)
                break;
            continue;
        }
        ssize_t n = read(r->fd, b, sizeof(b));
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            r->lines += b[i] == '\n';
    }
    return NULL;
}

static void test_a_socket_that_nobody_reads_never_blocks_a_direct_write(void **state)
{
    /* a socket cannot be reopened non-blocking: every line goes through the writer */
    enum { N = 40000 };
    int sv[2], small = 4096;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    int pipe_end = dup(STDERR_FILENO);
    dup2(sv[0], STDERR_FILENO);
    close(sv[0]);
    uint64_t before = log_dropped_lines();
    assert_int_equal(log_writer_start(), 0);
    alarm(10); /* a direct write blocked on the socket would hang here */
    for (int i = 0; i < N; i++)
        log_event(LOG_INFO, "to a socket", "pad", "..................................................", NULL);
    alarm(0);
    unsigned long dropped = log_dropped_lines() - before;
    assert_true(dropped > 0);
    struct sock_reader r = {sv[1], 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, read_socket, &r);
    log_writer_stop();
    dup2(pipe_end, STDERR_FILENO); /* closes our end of the socket: the reader sees EOF */
    close(pipe_end);
    r.stop = 1;
    pthread_join(t, NULL);
    close(sv[1]);
    assert_true(r.lines + dropped >= N); /* plus the report of the drop */
}

static void *batch_thread(void *arg)
{
    (void)arg;
    log_batch_start();
    for (int i = 0; i < 1000; i++) {
        log_event(LOG_INFO, "batched", NULL);
        log_flush(1); /* direct: into a pipe that is often full */
    }
    log_batch_stop();
    return NULL;
}

static void test_batches_of_threads_arrive_whole(void **state)
{
    pthread_t t[2];
    assert_int_equal(log_writer_start(), 0);
    struct reader r = {{0}, 0, 64};
    pthread_t rt;
    pthread_create(&rt, NULL, read_all, &r);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, batch_thread, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    log_writer_stop();
    r.stop = 1;
    pthread_join(rt, NULL);
    assert_int_equal(count_lines(&r.out, "\"msg\":\"batched\"}\n"), 2000);
    assert_int_equal(count_lines(&r.out, "{\"ts\":\""), 2000);
    assert_true(lines_whole(&r.out));
    buf_free(&r.out);
}

static void *mixed_thread(void *arg)
{
    (void)arg;
    log_batch_start();
    for (int i = 0; i < 3000; i++) {
        char n[16];
        snprintf(n, sizeof(n), "%d", i);
        log_event(LOG_INFO, "seq", "i", n, NULL);
        log_flush(i % 3 != 0); /* written at once, or queued for the writer */
    }
    log_batch_stop();
    return NULL;
}

static void test_direct_and_queued_lines_keep_their_order(void **state)
{
    const char *tag = "\"msg\":\"seq\",\"i\":\"";
    pthread_t t;
    assert_int_equal(log_writer_start(), 0);
    struct reader r = {{0}, 0, 0};
    pthread_t rt;
    pthread_create(&rt, NULL, read_all, &r);
    pthread_create(&t, NULL, mixed_thread, NULL);
    pthread_join(t, NULL);
    log_writer_stop();
    r.stop = 1;
    pthread_join(rt, NULL);
    long next = 0;
    for (const char *p = r.out.p; p != NULL && (p = strstr(p, tag)) != NULL; p++) {
        long i = strtol(p + strlen(tag), NULL, 10);
        assert_int_equal(i, next);
        next++;
    }
    assert_int_equal(next, 3000);
    buf_free(&r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_without_writer_a_line_is_written_before_the_call_returns),
        cmocka_unit_test(test_writer_delivers_a_line_without_further_calls),
        cmocka_unit_test(test_a_stalled_stderr_drops_lines_and_never_blocks_the_caller),
        cmocka_unit_test(test_a_socket_that_nobody_reads_never_blocks_a_direct_write),
        cmocka_unit_test(test_batches_of_threads_arrive_whole),
        cmocka_unit_test(test_direct_and_queued_lines_keep_their_order),
    };
    return cmocka_run_group_tests(tests, pipe_as_stderr, restore_stderr);
}
