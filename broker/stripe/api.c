/* api.c — one Stripe payment API call forwarded by the proxy (see api.h).
 *
 * Owns: the request that leaves for Stripe (the request line, only the allow-listed
 * headers, the Idempotency-Key of a POST, the bearer), the answer's size cap and the
 * response headers kept, the worker's kept connections to STRIPE_API_URL, and the rule
 * that the broker never sends a request twice.
 *
 * The client is this file's, on the worker's h2o sockets: connect (the name resolved by
 * the h2o context's resolver thread), TLS (the chain and the name verified by OpenSSL),
 * one write, the answer read by core/http1_resp.h. Kept connections stay watched (a close
 * or a stray byte from Stripe closes one at once) and are checked with the kernel before
 * reuse. libcurl, which the OAuth calls keep (stripe/curl_loop.h), cost a proxied call
 * more CPU than all of the broker's own work and two polls of its connection; h2o's
 * h2o_http1client prints plain text to stderr when its pool finds a connection closed,
 * and moves every kept socket out of the loop and back per call (tests/bench/notes.md).
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
 * connections at each point; headers; sizes; timeouts), tests/it/test_proxy_tls.py and
 * tests/it/test_payments.py. */
#include "stripe/api.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include "core/buf.h"
#include "core/crypto.h"
#include "core/http1_resp.h"

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
    h2o_multithread_queue_t *resolved; /* a name host: the resolver thread's answers ... */
    h2o_multithread_receiver_t getaddr; /* ... to h2o_hostinfo_getaddr; both made on first use */
    SSL_CTX *ssl;                /* https only */
    char *host;                  /* for the resolver and the TLS server name */
    char serv[8];                /* the port */
    struct sockaddr_storage addr; /* an IP address host: no resolving */
    socklen_t addrlen;           /* 0: a name */
    char *prefix;                /* the base URL's path ("" or "/…") */
    char *authority;             /* the Host header */
    h2o_linklist_t idle;         /* kept connections, the most recent first */
    size_t nidle;
    h2o_timeout_t deadline;      /* the whole request */
    h2o_timeout_t later;         /* 0 ms: a failure found inside stripe_api_send */
};

/* A connection to Stripe: opening, carrying one send, or kept (watched: a close or an
 * unexpected byte from Stripe closes it at once). */
typedef struct upconn {
    stripe_api_conns_t *c;
    h2o_socket_t *sock;
    struct xfer *x;              /* the send on it, NULL when kept */
    h2o_linklist_t link;         /* in c->idle while kept */
    uint64_t idle_since;
} upconn_t;

/* One send in flight: owns its copies, outlives the call and the caller's request. */
typedef struct xfer {
    stripe_api_conns_t *c;
    upconn_t *conn;              /* NULL when none */
    h2o_hostinfo_getaddr_req_t *resolving;
    h2o_iovec_t reqbufs[2];      /* the head (holds the bearer: secret), the body */
    size_t nbufs;
    int is_get;                  /* may go out once more on another connection */
    int attempts;
    int in_send;                 /* inside stripe_api_send: the callback must wait */
    int answered;                /* a byte of the answer arrived */
    http1_resp_t rs;
    stripe_api_fail_t fail;      /* the result, for a deferred callback */
    h2o_timeout_entry_t deadline;
    h2o_timeout_entry_t later;
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

stripe_api_conns_t *stripe_api_conns_create(h2o_loop_t *loop, const char *base_url, long timeout_ms)
{
    stripe_api_conns_t *c = calloc(1, sizeof(*c));
    struct sockaddr_in *a4;
    struct sockaddr_in6 *a6;
    h2o_url_t u;
    if (c == NULL || h2o_url_parse(base_url, strlen(base_url), &u) != 0)
        goto fail;
    c->loop = loop;
    h2o_linklist_init_anchor(&c->idle);
    if ((c->host = dup_n(u.host.base, u.host.len)) == NULL)
        goto fail;
    snprintf(c->serv, sizeof(c->serv), "%u", (unsigned)h2o_url_get_port(&u));
    a4 = (struct sockaddr_in *)&c->addr;
    a6 = (struct sockaddr_in6 *)&c->addr;
    if (inet_pton(AF_INET, c->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(h2o_url_get_port(&u));
        c->addrlen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, c->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(h2o_url_get_port(&u));
        c->addrlen = sizeof(*a6);
    }
    if (u.scheme == &H2O_URL_SCHEME_HTTPS) {
        /* OpenSSL checks the name (or the address) in the chain's verification: h2o
         * 2.2.5's own check is skipped when the client still has output at the end of
         * the handshake, which TLS 1.3 always has */
        X509_VERIFY_PARAM *vp;
        if ((c->ssl = SSL_CTX_new(TLS_client_method())) == NULL ||
            SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION) != 1 || SSL_CTX_set_default_verify_paths(c->ssl) != 1)
            goto fail;
        vp = SSL_CTX_get0_param(c->ssl);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((c->addrlen != 0 ? X509_VERIFY_PARAM_set1_ip_asc(vp, c->host) : X509_VERIFY_PARAM_set1_host(vp, c->host, 0)) != 1)
            goto fail;
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    }
    c->prefix = dup_n(u.path.base, u.path.len == 1 && u.path.base[0] == '/' ? 0 : u.path.len);
    c->authority = dup_n(u.authority.base, u.authority.len);
    if (c->prefix == NULL || c->authority == NULL)
        goto fail;
    h2o_timeout_init(loop, &c->deadline, (uint64_t)timeout_ms);
    h2o_timeout_init(loop, &c->later, 0);
    return c;
fail:
    if (c != NULL) {
        SSL_CTX_free(c->ssl);
        free(c->host);
        free(c->prefix);
        free(c->authority);
        free(c);
    }
    return NULL;
}

static void conn_close(upconn_t *k)
{
    if (h2o_linklist_is_linked(&k->link)) {
        h2o_linklist_unlink(&k->link);
        k->c->nidle--;
    }
    h2o_socket_close(k->sock);
    free(k);
}

/* A kept connection heard from Stripe: its end, an error, or a byte no request asked
 * for. A TLS record that carries no data (a session ticket) keeps it. */
static void on_idle_read(h2o_socket_t *sock, const char *err)
{
    if (err != NULL || sock->input->size > 0)
        conn_close(sock->data);
}

static void conn_keep(upconn_t *k)
{
    stripe_api_conns_t *c = k->c;
    if (c->nidle >= STRIPE_API_MAX_IDLE_CONNS) {
        conn_close(k);
        return;
    }
    k->x = NULL;
    k->idle_since = h2o_now(c->loop);
    h2o_linklist_insert(c->idle.next, &k->link);
    c->nidle++;
    h2o_socket_read_start(k->sock, on_idle_read);
}

/* The most recent kept connection that is still open, or NULL; expired ones are closed. */
static upconn_t *conn_take(stripe_api_conns_t *c)
{
    uint64_t now = h2o_now(c->loop);
    while (!h2o_linklist_is_empty(&c->idle)) {
        upconn_t *k = H2O_STRUCT_FROM_MEMBER(upconn_t, link, c->idle.next);
        char b;
        ssize_t r;
        h2o_linklist_unlink(&k->link);
        c->nidle--;
        if (now - k->idle_since >= STRIPE_API_MAXAGE_CONN_S * 1000) {
            conn_close(k); /* and every older one after it */
            continue;
        }
        /* a close that arrived in this loop turn is not seen yet: ask the kernel */
        r = recv(h2o_socket_get_fd(k->sock), &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if ((r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) || (r > 0 && c->ssl != NULL)) {
            h2o_socket_read_stop(k->sock);
            return k;
        }
        conn_close(k);
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

/* The caller's callback, then the send is over; never inside stripe_api_send. The
 * connection is already kept or closed. */
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
    res.status = fail == STRIPE_API_OK ? x->rs.status : 0;
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

static void drop_conn(xfer_t *x)
{
    if (x->conn != NULL)
        conn_close(x->conn);
    x->conn = NULL;
    if (x->resolving != NULL)
        h2o_hostinfo_getaddr_cancel(x->resolving);
    x->resolving = NULL;
}

static void on_deadline(h2o_timeout_entry_t *e)
{
    xfer_t *x = H2O_STRUCT_FROM_MEMBER(xfer_t, deadline, e);
    drop_conn(x);
    finish(x, STRIPE_API_TIMEOUT);
}

static void start(xfer_t *x);

/* The connection failed and no answer came: a GET goes once more, anything else fails
 * (Stripe may have the request: a retry is the caller's, with its Idempotency-Key). */
static void failed(xfer_t *x)
{
    drop_conn(x);
    if (x->is_get && !x->answered && x->attempts < 2)
        start(x);
    else
        finish(x, STRIPE_API_TRANSPORT);
}

static void on_res_header(void *data, const char *name, size_t nlen, const char *value, size_t vlen)
{
    xfer_t *x = data;
    int k = proxy_res_header(name, nlen, value, vlen);
    if (k >= 0 && x->res_hdr[k] == NULL)
        x->res_hdr[k] = dup_n(value, vlen);
}

static int on_res_body(void *data, const char *p, size_t len)
{
    xfer_t *x = data;
    if (len > STRIPE_API_MAX_RESPONSE - x->resp.len)
        return -1;
    buf_append(&x->resp, p, len);
    return 0;
}

static const http1_resp_cbs_t res_cbs = {on_res_header, on_res_body};

static void on_read(h2o_socket_t *sock, const char *err)
{
    upconn_t *k = sock->data;
    xfer_t *x = k->x;
    h2o_buffer_t *in = sock->input;
    size_t used = 0;
    int rc;
    if (err != NULL) {
        if (!x->answered || http1_resp_eof(&x->rs) != HTTP1_RESP_DONE) {
            failed(x);
            return;
        }
        rc = HTTP1_RESP_DONE;
    } else {
        x->answered |= in->size > 0;
        rc = http1_resp_feed(&x->rs, in->bytes, in->size, &used, &res_cbs, x);
        explicit_bzero(in->bytes, used); /* the answer's bytes stay only in x->resp */
        h2o_buffer_consume(&sock->input, used);
    }
    switch (rc) {
    case HTTP1_RESP_MORE:
        return;
    case HTTP1_RESP_DONE:
        x->conn = NULL;
        if (err == NULL && x->rs.keepalive && sock->input->size == 0)
            conn_keep(k);
        else
            conn_close(k);
        finish(x, STRIPE_API_OK);
        return;
    default:
        drop_conn(x);
        finish(x, rc == HTTP1_RESP_STOPPED ? STRIPE_API_TOO_LARGE : STRIPE_API_TRANSPORT);
        return;
    }
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    upconn_t *k = sock->data;
    if (err != NULL) {
        failed(k->x);
        return;
    }
    h2o_socket_read_start(sock, on_read);
}

static void send_on(xfer_t *x)
{
    h2o_socket_write(x->conn->sock, x->reqbufs, x->nbufs, on_written);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    upconn_t *k = sock->data;
    if (err != NULL)
        failed(k->x);
    else
        send_on(k->x);
}

static void on_connected(h2o_socket_t *sock, const char *err)
{
    upconn_t *k = sock->data;
    if (err != NULL)
        failed(k->x);
    else if (k->c->ssl != NULL)
        h2o_socket_ssl_handshake(sock, k->c->ssl, k->c->host, on_handshake);
    else
        send_on(k->x);
}

static void connect_to(xfer_t *x, struct sockaddr *sa, socklen_t len)
{
    upconn_t *k = calloc(1, sizeof(*k));
    if (k == NULL || (k->sock = h2o_socket_connect(x->c->loop, sa, len, on_connected)) == NULL) {
        free(k);
        failed(x);
        return;
    }
    k->c = x->c;
    k->x = x;
    k->sock->data = k;
    x->conn = k;
}

static void on_resolved(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *data)
{
    xfer_t *x = data;
    x->resolving = NULL;
    if (errstr != NULL)
        failed(x);
    else {
        struct addrinfo *a = h2o_hostinfo_select_one(res);
        connect_to(x, a->ai_addr, a->ai_addrlen);
    }
}

static void start(xfer_t *x)
{
    stripe_api_conns_t *c = x->c;
    x->attempts++;
    http1_resp_init(&x->rs);
    if ((x->conn = conn_take(c)) != NULL) {
        x->conn->x = x;
        send_on(x);
    } else if (c->addrlen != 0) {
        connect_to(x, (struct sockaddr *)&c->addr, c->addrlen);
    } else {
        /* The answers come back through a queue whose socket reads into buffers of the
         * allocator of the thread that made it (h2o 2.2.5: per thread, not locked): so it
         * is made here, on the worker's thread, not with the h2o context on the main one. */
        if (c->resolved == NULL) {
            c->resolved = h2o_multithread_create_queue(c->loop);
            h2o_multithread_register_receiver(c->resolved, &c->getaddr, h2o_hostinfo_getaddr_receiver);
        }
        x->resolving = h2o_hostinfo_getaddr(&c->getaddr, h2o_iovec_init(c->host, strlen(c->host)),
                                            h2o_iovec_init(c->serv, strlen(c->serv)), AF_UNSPEC, SOCK_STREAM, IPPROTO_TCP,
                                            AI_ADDRCONFIG | AI_NUMERICSERV, on_resolved, x);
    }
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
