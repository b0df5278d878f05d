/* breq.c — the request context (see http/breq.h, "breq"): its life (references,
 * deadlines), the answers and their headers, the request helpers, and the end of a loop
 * turn that sends the turn's answers after their log lines.
 *
 * A request gets a context here (breq_start) and goes to the router (http/router.h).
 * Every answer wipes what may hold a secret before h2o reuses the memory: the request
 * body, the Authorization and Cookie header values, and the answer's own copy.
 * Never logs a header value, a body or a query string: they carry secrets.
 * Tested end to end by tests/it (every route, status code and failure mode;
 * test_review_findings.py for HEAD and the wiping, test_logs.py for the log lines). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "core/form.h"
#include "http/ratelimit.h"
#include "http/router.h"
#include "log.h"
#include "metrics.h"
#include "http/breq.h"

#define PAGE_CSP_MAX 1024

static char g_csp[PAGE_CSP_MAX];   /* set once by breq_init, read-only afterwards */
static uint32_t g_reqid_prefix;    /* the same */

/* ===== Start ===== */

void breq_init(const config_t *cfg)
{
    unsigned char rnd[4];
    rand_bytes(rnd, sizeof(rnd));
    g_reqid_prefix = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
    char origins[2][256];
    const char *urls[2] = {cfg->connect_url, cfg->marketplace_url};
    for (int i = 0; i < 2; i++) {
        /* origin = scheme://host[:port] */
        const char *p = strstr(urls[i], "://");
        const char *end = p != NULL ? strchr(p + 3, '/') : NULL;
        size_t n = end != NULL ? (size_t)(end - urls[i]) : strlen(urls[i]);
        snprintf(origins[i], sizeof(origins[i]), "%.*s", (int)n, urls[i]);
    }
    snprintf(g_csp, sizeof(g_csp),
             "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
             "frame-ancestors 'none'; form-action 'self' %s %s",
             origins[0], origins[1]);
}

/* ===== The request context ===== */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void breq_hold(breq_t *b)
{
    b->refs++;
}

void breq_release(breq_t *b)
{
    if (--b->refs > 0)
        return;
    if (h2o_timeout_is_linked(&b->deadline))
        h2o_timeout_unlink(&b->deadline);
    if (b->state_free != NULL)
        b->state_free(b->state);
    free(b);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    breq_t *b = H2O_STRUCT_FROM_MEMBER(breq_t, deadline, entry);
    if (breq_live(b))
        breq_error(b, b->deadline_err, NULL);
}

static void arm(breq_t *b, h2o_timeout_t *list, api_err_t err)
{
    if (!breq_live(b))
        return;
    if (h2o_timeout_is_linked(&b->deadline))
        h2o_timeout_unlink(&b->deadline);
    b->deadline_err = err;
    h2o_timeout_link(b->w->loop, list, &b->deadline);
}

void breq_deadline_store(breq_t *b)
{
    arm(b, &b->w->store_deadline, ERR_STORE_UNAVAILABLE);
}

void breq_deadline_stripe(breq_t *b)
{
    arm(b, &b->w->stripe_deadline, ERR_STRIPE_UNAVAILABLE);
}

void breq_deadline_proxy(breq_t *b)
{
    arm(b, &b->w->proxy_deadline, ERR_STRIPE_UNAVAILABLE);
}

/* ===== Answers ===== */

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 303: return "See Other";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* The value is copied into the request's pool: the answer leaves at the end of the loop
 * turn (breq_send_turn), after the caller's buffers are gone. */
static void add_header(h2o_req_t *req, const char *name, const char *value)
{
    size_t n = strlen(value);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 1, NULL,
                          h2o_strdup(&req->pool, value, n).base, n);
}

void breq_add_header(breq_t *b, const char *name, const char *value)
{
    if (breq_live(b))
        add_header(b->req, name, value);
}

/* Log, count, and forget the h2o request: after this b->req is NULL. */
static void finish(breq_t *b, int status)
{
    uint64_t dur = now_us() - b->start_us;
    b->status = status;
    int level = status >= 500 ? LOG_WARN : LOG_INFO; /* a 5xx line stays at BROKER_LOG_LEVEL=warn */
    if (log_enabled(level)) {
        char line[LOG_REQUEST_FIELDS_MAX];
        log_request_t r = {b->request_id, b->req->method.base, b->req->method.len,
                           router_pattern(b->route), status, dur, b->org,
                           {b->log_extra[0], b->log_extra[1], b->log_extra[2], b->log_extra[3]}};
        log_request_fields(line, &r);
        log_raw(level, line);
    }
    rate_after_answer(b, status);
    metrics_http(b->route, status, dur);
    b->req = NULL;
    b->w->inflight--;
    if (h2o_timeout_is_linked(&b->deadline))
        h2o_timeout_unlink(&b->deadline);
}

/* The content type (static, may be NULL) and the headers every answer carries. */
void breq_answer_headers(h2o_req_t *req, const char *ctype)
{
    if (ctype != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    add_header(req, "cache-control", "no-store");
    add_header(req, "x-content-type-options", "nosniff");
}

/* The answer's copy in the request's pool, wiped when h2o clears the pool after sending
 * it: an answer may hold an access token or an API key, and the pool's memory is reused
 * or freed without being wiped. */
typedef struct wiped_body {
    size_t len;
    char data[];
} wiped_body_t;

static void wipe_body(void *p)
{
    wiped_body_t *w = p;
    explicit_bzero(w->data, w->len);
}

static h2o_iovec_t body_copy(h2o_req_t *req, const char *body, size_t len)
{
    wiped_body_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w) + len + 1, wipe_body);
    w->len = len;
    memcpy(w->data, body, len);
    w->data[len] = '\0';
    return h2o_iovec_init(w->data, len);
}

static void wipe_header_values(h2o_req_t *req, const h2o_token_t *name)
{
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, name, i)) != -1;)
        explicit_bzero(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
}

static void send_body(breq_t *b, int status, const char *ctype, const char *body, size_t len)
{
    h2o_req_t *req = b->req;
    req->res.status = status;
    req->res.reason = reason_of(status);
    breq_answer_headers(req, ctype);
    req->res.content_length = len;
    /* the request body may hold a secret (a signing secret, a form): handlers read it
     * through breq_body's copy, and h2o reuses this memory unwiped */
    if (req->entity.base != NULL)
        explicit_bzero(req->entity.base, req->entity.len);
    /* and so does the socket's read buffer the header values point into: the API key
     * or admin token, the setup and OAuth cookies */
    wipe_header_values(req, H2O_TOKEN_AUTHORIZATION);
    wipe_header_values(req, H2O_TOKEN_COOKIE);
    /* HEAD: the headers of the GET answer, its Content-Length included, and no body
     * (RFC 9110 §9.3.2): a body would be read as the start of the next answer */
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    finish(b, status);
    /* sent at the end of the loop turn, right after the turn's log lines (breq_send_turn) */
    h2o_vector_reserve(NULL, &b->w->sends, b->w->sends.size + 1);
    b->w->sends.entries[b->w->sends.size++] =
        (struct pending_send){req, head ? h2o_iovec_init("", 0) : body_copy(req, body, len)};
    breq_release(b);
}

/* A worker is busy while it answers over QUIET_MAX_ANSWERS in the current or the last
 * window of 100 ms (1,000 requests/s): then its log lines go to the log writer thread,
 * and its answers never wait on stderr. A quiet worker writes them itself. */
#define QUIET_MAX_ANSWERS 100

static int busy(worker_t *w, size_t answers)
{
    return ratewin_add(&w->answers, h2o_now(w->loop), 100, (unsigned)answers) > QUIET_MAX_ANSWERS;
}

/* The end of a loop turn: hand over the turn's log lines (at once), then send the
 * answers, so that a quiet worker's answer never leaves before its line. An answer
 * queued while sending (a pipelined request started by h2o) gets its line handed over
 * in the next round here. The vector keeps its capacity from turn to turn. Returns the
 * number of answers sent. */
size_t breq_send_turn(worker_t *w)
{
    static h2o_generator_t generator = {NULL, NULL};
    size_t i = 0;
    int direct = !busy(w, w->sends.size);
    while (i < w->sends.size) {
        log_flush(direct);
        for (size_t n = w->sends.size; i < n; i++) {
            struct pending_send p = w->sends.entries[i]; /* sending may grow the vector */
            h2o_start_response(p.req, &generator);
            h2o_send(p.req, &p.body, p.body.len != 0, H2O_SEND_STATE_FINAL);
        }
    }
    w->sends.size = 0;
    log_flush(direct);
    return i;
}

void breq_json(breq_t *b, int status, const char *json, size_t len)
{
    if (!breq_live(b))
        return;
    send_body(b, status, "application/json", json, len);
}

void breq_text(breq_t *b, int status, const char *content_type, const char *body, size_t len)
{
    if (!breq_live(b))
        return;
    send_body(b, status, content_type, body, len);
}

void breq_no_content(breq_t *b)
{
    if (!breq_live(b))
        return;
    send_body(b, 204, NULL, "", 0);
}

static void add_page_headers(h2o_req_t *req, const char *set_cookie)
{
    add_header(req, "content-security-policy", g_csp);
    add_header(req, "x-frame-options", "DENY");
    add_header(req, "referrer-policy", "no-referrer");
    while (set_cookie != NULL && *set_cookie != '\0') {
        const char *nl = strchr(set_cookie, '\n');
        size_t n = nl != NULL ? (size_t)(nl - set_cookie) : strlen(set_cookie);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SET_COOKIE, NULL,
                       h2o_strdup(&req->pool, set_cookie, n).base, n);
        set_cookie = nl != NULL ? nl + 1 : NULL;
    }
}

void breq_html(breq_t *b, int status, const char *html, size_t len, const char *set_cookie)
{
    if (!breq_live(b))
        return;
    add_page_headers(b->req, set_cookie);
    send_body(b, status, "text/html; charset=utf-8", html, len);
}

void breq_redirect(breq_t *b, const char *location, const char *set_cookie)
{
    if (!breq_live(b))
        return;
    add_page_headers(b->req, set_cookie);
    /* a path of ours ("/setup") is under BROKER_PUBLIC_URL's path */
    h2o_iovec_t loc = location[0] == '/' ? h2o_concat(&b->req->pool, h2o_iovec_init(b->w->cfg->public_path,
                                                                                     strlen(b->w->cfg->public_path)),
                                                      h2o_iovec_init(location, strlen(location)))
                                         : h2o_strdup(&b->req->pool, location, strlen(location));
    h2o_add_header(&b->req->pool, &b->req->res.headers, H2O_TOKEN_LOCATION, NULL, loc.base, loc.len);
    send_body(b, 303, "text/plain; charset=utf-8", "", 0);
}

void breq_error(breq_t *b, api_err_t e, const char *message)
{
    if (!breq_live(b))
        return;
    if (e == ERR_UNAUTHORIZED)
        add_header(b->req, "www-authenticate", "Bearer");
    if (e == ERR_STORE_UNAVAILABLE)
        add_header(b->req, "retry-after", "1");
    /* rendered the way the route's kind renders its errors (http/router.h) */
    (b->kind != NULL ? b->kind : &route_kind_api)->render_error(b, api_err_status(e), e, message);
}

void breq_passthrough(breq_t *b, int status, const char *ctype, const char *const *headers, const char *body,
                      size_t len)
{
    if (!breq_live(b))
        return;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i += 2)
        if (headers[i + 1] != NULL)
            add_header(b->req, headers[i], headers[i + 1]);
    send_body(b, status, ctype != NULL ? h2o_strdup(&b->req->pool, ctype, strlen(ctype)).base : NULL, body, len);
}

void breq_method_not_allowed(breq_t *b, const char *allow)
{
    if (!breq_live(b))
        return;
    add_header(b->req, "allow", allow);
    breq_error(b, ERR_METHOD_NOT_ALLOWED, NULL);
}

/* ===== Request helpers ===== */

const h2o_iovec_t *breq_header(breq_t *b, const char *name)
{
    size_t n = strlen(name);
    ssize_t i = h2o_find_header_by_str(&b->req->headers, name, n, -1);
    return i < 0 ? NULL : &b->req->headers.entries[i].value;
}

/* The request's query string (after '?'), or NULL (*len 0) when it has none. */
static const char *query_of(const h2o_req_t *req, size_t *len)
{
    if (req->query_at == SIZE_MAX) {
        *len = 0;
        return NULL;
    }
    *len = req->path.len - req->query_at - 1;
    return req->path.base + req->query_at + 1;
}

int breq_query(breq_t *b, const char *name, char **out)
{
    size_t len;
    const char *qs = query_of(b->req, &len);
    return form_get(qs, len, name, out);
}

int breq_query_buf(breq_t *b, const char *name, char *dst, size_t cap)
{
    size_t len;
    const char *qs = query_of(b->req, &len);
    return form_get_buf(qs, len, name, dst, cap);
}

const char *breq_body(breq_t *b, size_t *len)
{
    h2o_iovec_t copy = body_copy(b->req, b->req->entity.base != NULL ? b->req->entity.base : "",
                                 b->req->entity.base != NULL ? b->req->entity.len : 0);
    *len = copy.len;
    return copy.base;
}

const char *breq_key(breq_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    size_t plen = strlen(b->w->cfg->redis_prefix), tlen = strlen(tmp);
    char *key = h2o_mem_alloc_pool(&b->req->pool, plen + tlen + 1);
    memcpy(key, b->w->cfg->redis_prefix, plen);
    memcpy(key + plen, tmp, tlen + 1);
    return key;
}

/* The route's pattern, for log lines ("" when unmatched). */
const char *breq_route_pattern(const breq_t *b)
{
    return b->route < router_count() ? router_pattern(b->route) : "";
}

/* Total size of the request headers (names and values). */
static size_t header_bytes(const h2o_req_t *req)
{
    size_t n = req->path.len + req->authority.len;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    return n;
}

void breq_start(worker_t *w, h2o_req_t *req)
{
    static __thread uint32_t counter;
    breq_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        abort();
    b->req = req;
    b->w = w;
    b->refs = 1;
    b->route = router_count();
    b->mode = -1;
    b->deadline.cb = on_deadline;
    b->start_us = now_us();
    /* 8 hex digits of the process, 2 of the worker, 6 of a counter (no printf: per request) */
    uint64_t id = (uint64_t)g_reqid_prefix << 32 | (uint64_t)(w->id & 0xff) << 24 | (++counter & 0xffffff);
    for (int i = 15; i >= 0; i--, id >>= 4)
        b->request_id[i] = "0123456789abcdef"[id & 0xf];
    b->request_id[16] = '\0';
    w->inflight++;
    /* A request with a body ends its connection: whatever a client pipelined after it
     * (request smuggling through Content-Length / Transfer-Encoding disagreements,
     * which h2o 2.2.5 resolves without closing) is never read as a request. */
    if (req->entity.base != NULL)
        req->http1_is_persistent = 0;
    if (header_bytes(req) > HEADERS_MAX_BYTES) {
        req->http1_is_persistent = 0;
        breq_error(b, ERR_INVALID_REQUEST, "The request headers are too large.");
        return;
    }
    router_run(b);
}
