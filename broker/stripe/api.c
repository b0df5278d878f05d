/* api.c — one Stripe payment API call forwarded by the proxy (see api.h).
 *
 * Owns: the request that leaves for Stripe (the request line, only the allow-listed
 * headers, the Idempotency-Key of a POST, the bearer), the answer's size cap and the
 * response headers kept, the worker's kept connections to STRIPE_API_URL, and the rule
 * that the broker never sends a request twice.
 *
 * The client is h2o's own HTTP/1.1 client on the worker's loop (h2o_http1client with a
 * socket pool: TLS with the certificate and the name verified, idle connections kept
 * STRIPE_API_MAXAGE_CONN_S and checked alive before reuse). libcurl, which the OAuth
 * calls keep (stripe/curl_loop.h), cost a proxied call more CPU than all of the broker's
 * own work, and two polls of its connection (tests/bench/notes.md).
 *
 * Never twice: a request goes out at most once per send. The client never re-sends by
 * itself; when a kept connection dies after the request was written, Stripe may have
 * processed it (a capture, a refund), so the call fails (502) and the caller's own
 * retry, with the same Idempotency-Key, is safe. A GET changes nothing at Stripe: it is
 * sent once more on another connection when the first failed before any answer.
 * HTTP/1.1, no pipelining: one request on one connection at a time.
 *
 * Never logs; the request head (with the bearer), the request body and the answer are
 * wiped when freed, and the answer's bytes are wiped from the connection's input buffer
 * as they are taken. Tested by tests/it/test_proxy.py (the simulator closing reused
 * connections at each point; headers; sizes; timeouts; TLS) and tests/it/test_payments.py. */
#include "stripe/api.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "h2o/http1client.h"
#include "h2o/socketpool.h"
#include "core/buf.h"
#include "core/crypto.h"

#define UUID_LEN 36

struct stripe_api_call {
    stripe_api_method_t method;
    char *target;                /* path [+ "?" query], after the base URL's own path */
    char *body;                  /* may be NULL */
    size_t body_len;
    char *headers[PROXY_FWD_COUNT]; /* "Name: value" lines, or NULL */
    char idem[UUID_LEN + 1];     /* the key the broker added, "" when none */
    const char *idem_value;      /* the key carried (the caller's or idem), or NULL */
};

/* The worker's connections to Stripe. */
struct stripe_api_conns {
    h2o_loop_t *loop;
    h2o_socketpool_t pool;
    h2o_http1client_ctx_t ctx;
    h2o_timeout_t io_timeout;    /* each read or write */
    h2o_timeout_t deadline;      /* the whole request */
    h2o_timeout_t later;         /* 0 ms: a failure found inside stripe_api_send */
    SSL_CTX *ssl;                /* https only */
    char *prefix;                /* the base URL's path ("" or "/…") */
    char *authority;             /* the Host header */
};

/* One send in flight: owns its copies, outlives the call and the caller's request. */
typedef struct xfer {
    stripe_api_conns_t *c;
    h2o_http1client_t *client;   /* NULL when none is open for this send */
    h2o_iovec_t reqbufs[2];      /* the head (holds the bearer: secret), the body */
    size_t nbufs;
    int is_get;                  /* may go out once more on another connection */
    int attempts;
    int in_send;                 /* inside stripe_api_send: the callback must wait */
    stripe_api_fail_t fail;      /* the result, for a deferred callback */
    h2o_timeout_entry_t deadline;
    h2o_timeout_entry_t later;
    long status;
    buf_t resp;                  /* the answer's body (wiped) */
    char *res_hdr[PROXY_RES_COUNT];
    stripe_api_cb cb;
    void *data;
} xfer_t;

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* A random version 4 UUID (RFC 4122), lower-case. */
static void uuid4(char out[UUID_LEN + 1])
{
    unsigned char r[16];
    rand_bytes(r, sizeof(r));
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    snprintf(out, UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
             r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
}

/* ===== The call ===== */

stripe_api_call_t *stripe_api_new(const stripe_api_req_t *req)
{
    stripe_api_call_t *call = calloc(1, sizeof(*call));
    buf_t url = {0};
    if (call == NULL)
        return NULL;
    call->method = req->method;
    buf_append(&url, req->path, req->path_len);
    if (req->query != NULL) {
        buf_append(&url, "?", 1);
        buf_append(&url, req->query, req->query_len);
    }
    call->target = url.p;
    if (req->method != STRIPE_API_GET && req->body_len > 0) {
        if ((call->body = dup_n(req->body, req->body_len)) == NULL)
            goto fail;
        call->body_len = req->body_len;
    }
    for (int i = 0; i < PROXY_FWD_COUNT; i++) {
        const char *v = req->headers[i];
        size_t vlen = req->header_len[i];
        if (v == NULL && i == PROXY_FWD_IDEMPOTENCY_KEY && req->method == STRIPE_API_POST) {
            uuid4(call->idem); /* no resend may act twice, not even the caller's */
            v = call->idem;
            vlen = UUID_LEN;
        }
        if (v == NULL)
            continue;
        buf_t h = {0};
        buf_printf(&h, "%s: ", PROXY_FWD_HEADERS[i]);
        buf_append(&h, v, vlen);
        call->headers[i] = h.p;
        if (i == PROXY_FWD_IDEMPOTENCY_KEY)
            call->idem_value = h.p + strlen(PROXY_FWD_HEADERS[i]) + 2;
    }
    return call;
fail:
    stripe_api_free(call);
    return NULL;
}

const char *stripe_api_idempotency_key(const stripe_api_call_t *call)
{
    return call->idem_value;
}

void stripe_api_free(stripe_api_call_t *call)
{
    if (call == NULL)
        return;
    free(call->target);
    secure_free(call->body, call->body_len);
    for (int i = 0; i < PROXY_FWD_COUNT; i++)
        free(call->headers[i]);
    free(call);
}

/* ===== The connections ===== */

stripe_api_conns_t *stripe_api_conns_create(h2o_loop_t *loop, h2o_multithread_receiver_t *getaddr, const char *base_url,
                                            long timeout_ms)
{
    stripe_api_conns_t *c = calloc(1, sizeof(*c));
    h2o_url_t u;
    if (c == NULL || h2o_url_parse(base_url, strlen(base_url), &u) != 0)
        goto fail;
    c->loop = loop;
    if (u.scheme == &H2O_URL_SCHEME_HTTPS) {
        if ((c->ssl = SSL_CTX_new(TLS_client_method())) == NULL ||
            SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION) != 1 || SSL_CTX_set_default_verify_paths(c->ssl) != 1)
            goto fail;
        /* the name is checked by OpenSSL in the chain's verification: h2o 2.2.5's own check
         * is skipped when the client still has output at the handshake's end (TLS 1.3) */
        X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(c->ssl);
        char *host = dup_n(u.host.base, u.host.len);
        int ok = host != NULL && (X509_VERIFY_PARAM_set1_ip_asc(vp, host) == 1 ||
                                  (X509_VERIFY_PARAM_set1_host(vp, host, 0) == 1 &&
                                   (X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS), 1)));
        free(host);
        if (!ok)
            goto fail;
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    }
    c->prefix = dup_n(u.path.base, u.path.len == 1 && u.path.base[0] == '/' ? 0 : u.path.len);
    c->authority = dup_n(u.authority.base, u.authority.len);
    if (c->prefix == NULL || c->authority == NULL)
        goto fail;
    h2o_socketpool_init_by_hostport(&c->pool, u.host, h2o_url_get_port(&u), c->ssl != NULL, SIZE_MAX);
    h2o_socketpool_set_timeout(&c->pool, loop, STRIPE_API_MAXAGE_CONN_S * 1000);
    h2o_timeout_init(loop, &c->io_timeout, (uint64_t)timeout_ms);
    h2o_timeout_init(loop, &c->deadline, (uint64_t)timeout_ms);
    h2o_timeout_init(loop, &c->later, 0);
    c->ctx = (h2o_http1client_ctx_t){loop, getaddr, &c->io_timeout, NULL, c->ssl};
    return c;
fail:
    if (c != NULL) {
        SSL_CTX_free(c->ssl);
        free(c->prefix);
        free(c->authority);
        free(c);
    }
    return NULL;
}

/* ===== One send ===== */

static void xfer_free(xfer_t *x)
{
    secure_free(x->reqbufs[0].base, x->reqbufs[0].len);
    secure_free(x->reqbufs[1].base, x->reqbufs[1].len);
    buf_wipe(&x->resp);
    for (int i = 0; i < PROXY_RES_COUNT; i++)
        free(x->res_hdr[i]);
    free(x);
}

/* The caller's callback, then the send is over; never inside stripe_api_send. */
static void finish(xfer_t *x, stripe_api_fail_t fail)
{
    stripe_api_res_t res = {0};
    if (h2o_timeout_is_linked(&x->deadline))
        h2o_timeout_unlink(&x->deadline);
    if (x->in_send) {
        x->fail = fail;
        h2o_timeout_link(x->c->loop, &x->c->later, &x->later);
        return;
    }
    res.fail = fail;
    res.status = fail == STRIPE_API_OK ? x->status : 0;
    for (int i = 0; i < PROXY_RES_COUNT && fail == STRIPE_API_OK; i++)
        res.headers[i] = x->res_hdr[i];
    res.body = fail == STRIPE_API_OK && x->resp.p != NULL ? x->resp.p : "";
    res.len = fail == STRIPE_API_OK ? x->resp.len : 0;
    x->cb(&res, x->data);
    xfer_free(x);
}

static void on_later(h2o_timeout_entry_t *e)
{
    xfer_t *x = H2O_STRUCT_FROM_MEMBER(xfer_t, later, e);
    finish(x, x->fail);
}

static void on_deadline(h2o_timeout_entry_t *e)
{
    xfer_t *x = H2O_STRUCT_FROM_MEMBER(xfer_t, deadline, e);
    if (x->client != NULL)
        h2o_http1client_cancel(x->client);
    x->client = NULL;
    finish(x, STRIPE_API_TIMEOUT);
}

static void start(xfer_t *x);

/* The connection failed before any answer: a GET goes once more, anything else fails. */
static void failed_before_answer(xfer_t *x)
{
    x->client = NULL;
    if (x->is_get && x->attempts < 2)
        start(x);
    else
        finish(x, STRIPE_API_TRANSPORT);
}

/* Take the answer's bytes out of the connection's input buffer, wiping them there. */
static int take_body(xfer_t *x, h2o_socket_t *sock)
{
    h2o_buffer_t *in = sock->input;
    if (in->size == 0)
        return 0;
    if (in->size > STRIPE_API_MAX_RESPONSE - x->resp.len) {
        explicit_bzero(in->bytes, in->size);
        h2o_buffer_consume(&sock->input, in->size);
        return -1;
    }
    buf_append(&x->resp, in->bytes, in->size);
    explicit_bzero(in->bytes, in->size);
    h2o_buffer_consume(&sock->input, in->size);
    return 0;
}

static int on_body(h2o_http1client_t *client, const char *errstr)
{
    xfer_t *x = client->data;
    if (take_body(x, client->sock) != 0) {
        x->client = NULL; /* the client closes the connection when this returns */
        finish(x, STRIPE_API_TOO_LARGE);
        return -1;
    }
    if (errstr == NULL)
        return 0;
    x->client = NULL;
    finish(x, errstr == h2o_http1client_error_is_eos ? STRIPE_API_OK : STRIPE_API_TRANSPORT);
    return 0;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    xfer_t *x = client->data;
    buf_t line = {0};
    (void)minor_version, (void)msg, (void)rlen;
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        failed_before_answer(x);
        return NULL;
    }
    x->status = status;
    for (size_t i = 0; i < num_headers; i++) {
        const char *v;
        size_t vlen;
        int k;
        buf_reset(&line);
        buf_append(&line, headers[i].name->base, headers[i].name->len);
        buf_append(&line, ": ", 2);
        buf_append(&line, headers[i].value.base, headers[i].value.len);
        if ((k = proxy_res_header(line.p, line.len, &v, &vlen)) >= 0 && x->res_hdr[k] == NULL)
            x->res_hdr[k] = dup_n(v, vlen);
    }
    buf_free(&line);
    if (errstr == h2o_http1client_error_is_eos) {
        x->client = NULL;
        finish(x, STRIPE_API_OK);
        return NULL;
    }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    xfer_t *x = client->data;
    if (errstr != NULL) {
        failed_before_answer(x);
        return NULL;
    }
    *reqbufs = x->reqbufs;
    *reqbufcnt = x->nbufs;
    *method_is_head = 0;
    return on_head;
}

static void start(xfer_t *x)
{
    x->attempts++;
    h2o_http1client_connect_with_pool(&x->client, x, &x->c->ctx, &x->c->pool, on_connect);
}

int stripe_api_send(stripe_api_conns_t *c, const stripe_api_call_t *call, const char *bearer, stripe_api_cb cb, void *data)
{
#ifdef BROKER_VERSION
    static const char user_agent[] = "stripe-token-broker/" BROKER_VERSION;
#else
    static const char user_agent[] = "stripe-token-broker";
#endif
    static const char *const method[] = {"GET", "POST", "DELETE"};
    xfer_t *x = calloc(1, sizeof(*x));
    buf_t head = {0};
    int has_body = call->method == STRIPE_API_POST || (call->method == STRIPE_API_DELETE && call->body != NULL);
    if (x == NULL)
        return -1;
    x->c = c;
    x->cb = cb;
    x->data = data;
    x->is_get = call->method == STRIPE_API_GET;
    x->deadline.cb = on_deadline;
    x->later.cb = on_later;
    buf_printf(&head, "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAuthorization: Bearer ", method[call->method],
               c->prefix, call->target, c->authority, user_agent);
    buf_puts(&head, bearer);
    buf_puts(&head, "\r\n");
    if (call->headers[PROXY_FWD_ACCEPT] == NULL)
        buf_puts(&head, "Accept: */*\r\n");
    if (has_body && call->headers[PROXY_FWD_CONTENT_TYPE] == NULL)
        buf_puts(&head, "Content-Type: application/x-www-form-urlencoded\r\n");
    for (int i = 0; i < PROXY_FWD_COUNT; i++)
        if (call->headers[i] != NULL)
            buf_printf(&head, "%s\r\n", call->headers[i]);
    if (has_body)
        buf_printf(&head, "Content-Length: %zu\r\n", call->body_len);
    buf_puts(&head, "\r\n");
    if (head.p == NULL) {
        free(x);
        return -1;
    }
    x->reqbufs[0] = h2o_iovec_init(head.p, head.len);
    x->nbufs = 1;
    if (call->body_len > 0 && has_body) {
        char *b = dup_n(call->body, call->body_len);
        if (b == NULL) {
            xfer_free(x);
            return -1;
        }
        x->reqbufs[1] = h2o_iovec_init(b, call->body_len);
        x->nbufs = 2;
    }
    h2o_timeout_link(c->loop, &c->deadline, &x->deadline);
    x->in_send = 1;
    start(x);
    x->in_send = 0;
    return 0;
}
