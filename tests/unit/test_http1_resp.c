/* test_http1_resp.c — reading an HTTP/1.1 response as it arrives (core/http1_resp.h):
 * every answer is fed whole, then split at every byte, and must read the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/http1_resp.h"

typedef struct got {
    char headers[1024];
    char body[1024];
    size_t body_len;
    size_t body_cap; /* the body callback stops past this */
} got_t;

static void on_header(void *data, const char *name, size_t nlen, const char *value, size_t vlen)
{
    got_t *g = data;
    size_t n = strlen(g->headers);
    snprintf(g->headers + n, sizeof(g->headers) - n, "%.*s=%.*s;", (int)nlen, name, (int)vlen, value);
}

static int on_body(void *data, const char *p, size_t len)
{
    got_t *g = data;
    if (g->body_len + len > g->body_cap)
        return -1;
    memcpy(g->body + g->body_len, p, len);
    g->body_len += len;
    return 0;
}

static const http1_resp_cbs_t cbs = {on_header, on_body};

/* Feed s in pieces of at most `step` bytes, keeping what a call left unused (as a
 * connection's input buffer does); eof: the connection ends after s. Returns the
 * final code; *rest: bytes after the answer. */
static int feed(http1_resp_t *r, got_t *g, const char *s, size_t step, int eof, size_t *rest)
{
    char buf[4096];
    size_t have = 0, off = 0, len = strlen(s);
    int rc = HTTP1_RESP_MORE;
    http1_resp_init(r);
    memset(g, 0, sizeof(*g));
    g->body_cap = sizeof(g->body);
    *rest = 0;
    while (rc == HTTP1_RESP_MORE && off < len) {
        size_t n = len - off < step ? len - off : step, used = 0;
        memcpy(buf + have, s + off, n);
        have += n;
        off += n;
        rc = http1_resp_feed(r, buf, have, &used, &cbs, g);
        assert_true(used <= have);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    if (rc == HTTP1_RESP_MORE && eof)
        rc = http1_resp_eof(r);
    *rest = have + (len - off);
    return rc;
}

typedef struct ok_case {
    const char *in;
    int eof;
    int status;
    int keepalive;
    const char *body;
    const char *headers;
} ok_case_t;

static void test_answers_read_the_same_in_any_pieces(void **state)
{
    static const ok_case_t cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nRequest-Id: req_1\r\n\r\nhello", 0, 200, 1, "hello",
         "Content-Length=5;Request-Id=req_1;"},
        {"HTTP/1.1 402 Payment Required\r\nContent-Length:  2 \r\n\r\n{}", 0, 402, 1, "{}", "Content-Length=2;"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-T: 1\r\n\r\n", 0, 200,
         1, "hello!", "Transfer-Encoding=chunked;"},
        {"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nA\n0123456789\n0\n\n", 0, 200, 1, "0123456789",
         "Transfer-Encoding=chunked;"},
        {"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", 0, 201, 1, "x",
         "Content-Length=1;"},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 0, 204, 1, "", "Content-Length=10;"},
        {"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", 0, 200, 0, "",
         "Connection=keep-alive, Close;Content-Length=0;"},
        {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab", 0, 200, 0, "ab", "Content-Length=2;"},
        {"HTTP/1.1 200 OK\r\n\r\nuntil the end", 1, 200, 0, "until the end", ""},
        {"HTTP/1.1 500\r\nContent-Length: 1\r\n\r\nz", 0, 500, 1, "z", "Content-Length=1;"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\na\r\n0\r\n\r\n", 0, 200, 0, "a",
         "Transfer-Encoding=chunked;Content-Length=3;"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const ok_case_t *c = &cases[i];
        for (size_t step = 1; step <= strlen(c->in); step++) {
            http1_resp_t r;
            got_t g;
            size_t rest;
            int rc = feed(&r, &g, c->in, step, c->eof, &rest);
            if (rc != HTTP1_RESP_DONE || r.status != c->status || r.keepalive != c->keepalive || rest != 0 ||
                g.body_len != strlen(c->body) || memcmp(g.body, c->body, g.body_len) != 0 ||
                strcmp(g.headers, c->headers) != 0)
                fail_msg("case %zu, pieces of %zu: rc %d status %d keepalive %d rest %zu body \"%.*s\" headers \"%s\"",
                         i, step, rc, r.status, r.keepalive, rest, (int)g.body_len, g.body, g.headers);
        }
    }
}

static void test_what_follows_an_answer_is_left_unused(void **state)
{
    http1_resp_t r;
    got_t g;
    size_t rest;
    assert_int_equal(feed(&r, &g, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 200", 64, 0, &rest), HTTP1_RESP_DONE);
    assert_int_equal(rest, strlen("HTTP/1.1 200"));
    assert_int_equal(g.body_len, 2);
}

static void test_broken_answers_are_errors(void **state)
{
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 600 What\r\n\r\n",
        "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rx",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http1_resp_t r;
        got_t g;
        size_t rest;
        int rc = feed(&r, &g, bad[i], strlen(bad[i]), 0, &rest);
        if (rc != HTTP1_RESP_ERROR)
            fail_msg("\"%s\": %d, not an error", bad[i], rc);
        /* and it stays one */
        size_t used;
        assert_int_equal(http1_resp_feed(&r, "x", 1, &used, &cbs, &g), HTTP1_RESP_ERROR);
    }
}

static void test_a_connection_ending_early_is_an_error(void **state)
{
    static const char *const cut[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\nContent-Le",
    };
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
        http1_resp_t r;
        got_t g;
        size_t rest;
        assert_int_equal(feed(&r, &g, cut[i], 7, 1, &rest), HTTP1_RESP_ERROR);
    }
}

static void test_a_head_over_the_limit_is_an_error_not_a_wait(void **state)
{
    static char big[HTTP1_RESP_HEAD_MAX + 64];
    http1_resp_t r;
    got_t g;
    size_t used = 0;
    memset(big, 'a', sizeof(big));
    memcpy(big, "HTTP/1.1 200 OK\r\nX-A: ", 22);
    http1_resp_init(&r);
    memset(&g, 0, sizeof(g));
    assert_int_equal(http1_resp_feed(&r, big, sizeof(big), &used, &cbs, &g), HTTP1_RESP_ERROR);
    http1_resp_init(&r);
    assert_int_equal(http1_resp_feed(&r, big, 100, &used, &cbs, &g), HTTP1_RESP_MORE);
    assert_int_equal(used, 0);
}

static void test_the_body_callback_can_stop_the_reading(void **state)
{
    static const char *const in[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n0123456789",
    };
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        http1_resp_t r;
        got_t g = {0};
        size_t used;
        g.body_cap = 4;
        http1_resp_init(&r);
        assert_int_equal(http1_resp_feed(&r, in[i], strlen(in[i]), &used, &cbs, &g), HTTP1_RESP_STOPPED);
        assert_true(g.body_len <= 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_read_the_same_in_any_pieces),
        cmocka_unit_test(test_what_follows_an_answer_is_left_unused),
        cmocka_unit_test(test_broken_answers_are_errors),
        cmocka_unit_test(test_a_connection_ending_early_is_an_error),
        cmocka_unit_test(test_a_head_over_the_limit_is_an_error_not_a_wait),
        cmocka_unit_test(test_the_body_callback_can_stop_the_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
