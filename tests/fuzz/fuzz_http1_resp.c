/* fuzz_http1_resp.c — an HTTP/1.1 response from Stripe (core/http1_resp.h) on any bytes:
 * fed whole and fed in two pieces (split where the first byte says, unused bytes kept as a
 * connection's buffer keeps them), it reads the same: code, status, keep-alive, body and
 * headers; nothing is used past the input, and a finished answer has a final status. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_resp.h"

typedef struct sink {
    unsigned char sum[2]; /* a digest of what the callbacks saw */
    size_t body, headers;
} sink_t;

static void on_header(void *data, const char *name, size_t nlen, const char *value, size_t vlen)
{
    sink_t *s = data;
    if (nlen == 0)
        abort();
    for (size_t i = 0; i < nlen; i++)
        s->sum[0] = (unsigned char)(s->sum[0] * 31 + (unsigned char)name[i]);
    for (size_t i = 0; i < vlen; i++)
        s->sum[0] = (unsigned char)(s->sum[0] * 31 + (unsigned char)value[i]);
    s->headers++;
}

static int on_body(void *data, const char *p, size_t len)
{
    sink_t *s = data;
    for (size_t i = 0; i < len; i++)
        s->sum[1] = (unsigned char)(s->sum[1] * 31 + (unsigned char)p[i]);
    s->body += len;
    return s->body > 4096 ? -1 : 0;
}

static const http1_resp_cbs_t cbs = {on_header, on_body};

/* Feed in[0..len) in pieces ending at the given cuts; returns the code. */
static int run(const char *in, size_t len, size_t cut, http1_resp_t *r, sink_t *s)
{
    char *buf = malloc(len + 1);
    size_t have = 0, off = 0;
    int rc = HTTP1_RESP_MORE;
    http1_resp_init(r);
    memset(s, 0, sizeof(*s));
    for (int piece = 0; piece < 2 && rc == HTTP1_RESP_MORE; piece++) {
        size_t end = piece == 0 ? cut : len, used = 0;
        memcpy(buf + have, in + off, end - off);
        have += end - off;
        off = end;
        rc = http1_resp_feed(r, buf, have, &used, &cbs, s);
        if (used > have)
            abort();
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    if (rc == HTTP1_RESP_MORE)
        rc = http1_resp_eof(r);
    free(buf);
    if (rc == HTTP1_RESP_DONE && (r->status < 200 || r->status > 599))
        abort();
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http1_resp_t a, b;
    sink_t sa, sb;
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, cut = len == 0 ? 0 : data[0] % (len + 1);
    int ra = run(in, len, len, &a, &sa), rb = run(in, len, cut, &b, &sb);
    if (ra != rb || (ra == HTTP1_RESP_DONE && (a.status != b.status || a.keepalive != b.keepalive)))
        abort();
    if (ra == HTTP1_RESP_DONE && (sa.body != sb.body || sa.headers != sb.headers || memcmp(sa.sum, sb.sum, 2) != 0))
        abort();
    return 0;
}
