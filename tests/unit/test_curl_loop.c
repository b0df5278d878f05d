/* test_curl_loop.c — stripe/curl_loop on a real h2o evloop against a small HTTP server
 * on a second thread (127.0.0.1, poll(2), keep-alive) that answers by path: /echo,
 * /status/NNN, /redirect, /hang, /big (cap + 1 bytes), /exact (cap bytes), /sink (reads
 * a body of any size and answers with its length).
 *
 * Nothing waits by sleeping: every wait runs the h2o loop until a condition holds, with
 * a deadline. Every accepted request's callback is counted, so "exactly once" is asserted. */
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
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
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
    int failed = cmocka_run_group_tests_name("curl_loop", tests, curl_group_setup, curl_group_teardown);
    curl_global_cleanup();
    return failed != 0;
}
