/* api.c — one Stripe payment API call forwarded by the proxy (see api.h).
 *
 * Owns: the request that leaves for Stripe (the URL, only the allow-listed headers,
 * the Idempotency-Key of a POST, the bearer), the answer's size cap and the response
 * headers kept, and the rule that the broker never sends a request twice.
 *
 * Never twice: libcurl re-sends a request by itself when a *reused* keep-alive
 * connection dies before the first answer byte ("Connection died, retrying a fresh
 * connect"); Stripe may have processed the first copy (a capture, a refund). Each
 * transfer counts the requests it is about to put on the wire (CURLOPT_PREREQFUNCTION
 * runs before each, on a new or a reused connection) and aborts a second one: the call
 * fails (502) and the caller's own retry, with the same Idempotency-Key, is safe. A GET
 * changes nothing at Stripe, so curl may re-send it. Reuse itself is kept: the TLS
 * handshake is most of a call's latency, and curl drops a connection it sees closed
 * before reusing it; CURLOPT_MAXAGE_CONN keeps idle connections well under the idle
 * limits of load balancers in front of Stripe. HTTP/1.1 only, so that one transfer is
 * one request on one connection (the case the counting above covers).
 *
 * Never logs; the bearer header, the request body and the answer are wiped when freed.
 * Tested by tests/it/test_proxy.py (the simulator closing reused connections at each
 * point; headers; sizes; timeouts) and tests/it/test_payments.py. */
#include "stripe/api.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/buf.h"
#include "core/crypto.h"

#define UUID_LEN 36

struct stripe_api_call {
    stripe_api_method_t method;
    char *url;                   /* base + path [+ "?" query] */
    char *body;                  /* may be NULL */
    size_t body_len;
    char *headers[PROXY_FWD_COUNT]; /* "Name: value" lines, or NULL */
    char idem[UUID_LEN + 1];     /* the key the broker added, "" when none */
    const char *idem_value;      /* the key carried (the caller's or idem), or NULL */
    long timeout_ms;
    int allow_http;
};

/* One send in flight: owns its copies, outlives the call and the caller's request. */
typedef struct xfer {
    curl_loop_t *c;
    CURL *easy;                  /* the loop's (curl_loop_easy_get), given back when done */
    struct curl_slist *hdrs;     /* holds the bearer (secret) */
    char *body;
    size_t body_len;
    buf_t resp;                  /* the answer's body (wiped) */
    char *res_hdr[PROXY_RES_COUNT];
    int sends;                   /* requests curl was about to put on the wire */
    int resend_ok;               /* GET */
    int refused;                 /* a second send was stopped */
    int too_large;
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
    call->timeout_ms = req->timeout_ms;
    call->allow_http = strncmp(req->base_url, "http://", 7) == 0; /* config allows it for loopback only */
    buf_puts(&url, req->base_url);
    buf_append(&url, req->path, req->path_len);
    if (req->query != NULL) {
        buf_append(&url, "?", 1);
        buf_append(&url, req->query, req->query_len);
    }
    call->url = url.p;
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
    free(call->url);
    secure_free(call->body, call->body_len);
    for (int i = 0; i < PROXY_FWD_COUNT; i++)
        free(call->headers[i]);
    free(call);
}

/* ===== One send ===== */

static void xfer_free(xfer_t *x)
{
    curl_loop_easy_put(x->c, x->easy);
    for (struct curl_slist *s = x->hdrs; s != NULL; s = s->next)
        explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(x->hdrs);
    secure_free(x->body, x->body_len);
    buf_wipe(&x->resp);
    for (int i = 0; i < PROXY_RES_COUNT; i++)
        free(x->res_hdr[i]);
    free(x);
}

/* Before each request curl puts on the wire for this transfer: the first goes, a second
 * one (curl's own retry on a reused connection) is stopped unless it is a GET. */
static int on_prereq(void *data, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    xfer_t *x = data;
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    if (x->sends++ > 0 && !x->resend_ok) {
        x->refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

static size_t on_header(char *line, size_t size, size_t n, void *data)
{
    xfer_t *x = data;
    size_t len = size * n;
    const char *v;
    size_t vlen;
    int i;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* a new answer (after a 1xx): keep only the last one's headers */
        for (i = 0; i < PROXY_RES_COUNT; i++) {
            free(x->res_hdr[i]);
            x->res_hdr[i] = NULL;
        }
    } else if ((i = proxy_res_header(line, len, &v, &vlen)) >= 0 && x->res_hdr[i] == NULL) {
        x->res_hdr[i] = dup_n(v, vlen);
    }
    return len;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *data)
{
    xfer_t *x = data;
    size_t len = size * n;
    if (len > STRIPE_API_MAX_RESPONSE - x->resp.len) {
        x->too_large = 1;
        return 0; /* curl fails the transfer (CURLE_WRITE_ERROR) */
    }
    if (len > 0)
        buf_append(&x->resp, ptr, len);
    return len;
}

static void on_done(CURL *easy, CURLcode result, void *data)
{
    xfer_t *x = data;
    stripe_api_res_t res = {0};
    (void)easy;
    if (result == CURLE_OK && curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &res.status) == CURLE_OK &&
        res.status >= 100) {
        res.fail = STRIPE_API_OK;
    } else {
        res.status = 0;
        res.fail = x->too_large                              ? STRIPE_API_TOO_LARGE
                   : x->refused                              ? STRIPE_API_NO_RESEND
                   : result == CURLE_OPERATION_TIMEDOUT      ? STRIPE_API_TIMEOUT
                                                             : STRIPE_API_TRANSPORT;
    }
    for (int i = 0; i < PROXY_RES_COUNT && res.fail == STRIPE_API_OK; i++)
        res.headers[i] = x->res_hdr[i];
    res.body = res.fail == STRIPE_API_OK && x->resp.p != NULL ? x->resp.p : "";
    res.len = res.fail == STRIPE_API_OK ? x->resp.len : 0;
    x->cb(&res, x->data);
    xfer_free(x);
}

int stripe_api_send(curl_loop_t *c, const stripe_api_call_t *call, const char *bearer, stripe_api_cb cb, void *data)
{
#ifdef BROKER_VERSION
    static const char user_agent[] = "stripe-token-broker/" BROKER_VERSION;
#else
    static const char user_agent[] = "stripe-token-broker";
#endif
    xfer_t *x = calloc(1, sizeof(*x));
    buf_t authz = {0};
    struct curl_slist *l;
    CURL *e;
    if (x == NULL)
        return -1;
    x->c = c;
    x->cb = cb;
    x->data = data;
    x->resend_ok = call->method == STRIPE_API_GET;
    if (call->body != NULL) {
        if ((x->body = dup_n(call->body, call->body_len)) == NULL)
            goto fail;
        x->body_len = call->body_len;
    }
    buf_puts(&authz, "Authorization: Bearer ");
    buf_puts(&authz, bearer);
    l = curl_slist_append(NULL, authz.p);
    buf_wipe(&authz);
    if ((x->hdrs = l) == NULL || (l = curl_slist_append(x->hdrs, "Expect:")) == NULL)
        goto fail;
    for (int i = 0; i < PROXY_FWD_COUNT; i++)
        if (call->headers[i] != NULL && (l = curl_slist_append(x->hdrs, call->headers[i])) == NULL)
            goto fail;
    if ((x->easy = e = curl_loop_easy_get(c)) == NULL)
        goto fail;
    if (curl_easy_setopt(e, CURLOPT_URL, call->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, call->allow_http ? "http,https" : "https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, call->timeout_ms) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, (long)STRIPE_API_MAXAGE_CONN_S) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PREREQDATA, x) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERDATA, x) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, x) != CURLE_OK)
        goto fail;
    if (call->method == STRIPE_API_POST || (call->method == STRIPE_API_DELETE && x->body != NULL)) {
        if (curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body != NULL ? x->body : "") != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len) != CURLE_OK)
            goto fail;
    }
    if (call->method == STRIPE_API_DELETE && curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE") != CURLE_OK)
        goto fail;
    if (curl_loop_run(c, e, on_done, x) != 0)
        goto fail;
    return 0;
fail:
    xfer_free(x);
    return -1;
}
