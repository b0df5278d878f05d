/* server.c — worker threads, listeners, accept balancing, h2o setup, and the request
 * context (breq_t: answers, deadlines, request helpers).
 *
 * Design: N worker threads, each with its own h2o evloop, context, dup of the one
 * listening socket, Redis connection (with its read cache, store/rcache.h) and curl
 * multi handle. Answers and their log lines leave at the end of each loop turn
 * (send_turn): the turn's log lines at once (written, or queued for the log writer
 * thread when the worker is busy), then the answers. The global h2o config is
 * shared read-only. A request gets its context here and is handed to the router
 * (http/router.h: matching, authentication, rate limits, the fused read), which runs a
 * handler in routes/. Handlers go asynchronous through breq_redis(), breq_token() and
 * breq_stripe() (http/breq_io.c) and breq_conn() (http/router.h); every request carries a
 * deadline so that it is always answered, even when Redis or Stripe hang (h2o does not
 * notice a client that went away while a handler is pending). An error is rendered the
 * way its route's kind says (JSON, Stripe's shape, an HTML page).
 *
 * Never logs a header value, a body or a query string: they carry secrets.
 * Tested end to end by tests/it (every route, status code and failure mode). */
#include "server.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include "core/crypto.h"
#include "core/form.h"
#include "core/timefmt.h"
#include "log.h"
#include "metrics.h"
#include "events/events.h"
#include "http/ratelimit.h"
#include "http/router.h"
#include "routes/routes.h"
#include "store/rcache.h"


#define PAGE_CSP_MAX 1024
#define STARTUP_REDIS_WAIT_MS 1000

static atomic_int g_stop;
static char g_csp[PAGE_CSP_MAX];
static uint32_t g_reqid_prefix;

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
 * turn (send_turn), after the caller's buffers are gone. */
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
static void add_answer_headers(h2o_req_t *req, const char *ctype)
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
    OPENSSL_cleanse(w->data, w->len);
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
        OPENSSL_cleanse(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
}

static void send_body(breq_t *b, int status, const char *ctype, const char *body, size_t len)
{
    h2o_req_t *req = b->req;
    req->res.status = status;
    req->res.reason = reason_of(status);
    add_answer_headers(req, ctype);
    req->res.content_length = len;
    /* the request body may hold a secret (a signing secret, a form): handlers read it
     * through breq_body's copy, and h2o reuses this memory unwiped */
    if (req->entity.base != NULL)
        OPENSSL_cleanse(req->entity.base, req->entity.len);
    /* and so does the socket's read buffer the header values point into: the API key
     * or admin token, the setup and OAuth cookies */
    wipe_header_values(req, H2O_TOKEN_AUTHORIZATION);
    wipe_header_values(req, H2O_TOKEN_COOKIE);
    /* HEAD: the headers of the GET answer, its Content-Length included, and no body
     * (RFC 9110 §9.3.2): a body would be read as the start of the next answer */
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    finish(b, status);
    /* sent at the end of the loop turn, right after the turn's log lines (send_turn) */
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
static size_t send_turn(worker_t *w)
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

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    worker_t *w = H2O_STRUCT_FROM_MEMBER(worker_t, ctx, req->conn->ctx);
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
        return 0;
    }
    router_run(b);
    return 0;
}

/* ===== Workers ===== */

typedef struct server {
    const config_t *cfg;
    h2o_globalconf_t globalconf;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    worker_t *workers;
} server_t;

/* Workers share the client connections evenly: a worker holding more connections than
 * an accepting sibling leaves new connections to it. The listening socket stays in every
 * worker's epoll, level-triggered, so the sibling is woken for them too, and the worker
 * that declined is woken again until they are taken: nobody has to wake anybody, and
 * the least loaded accepting worker always accepts. Without this, whichever worker woke
 * first took a burst of connections (wrk's 64 split 54/10 or 32/32 from one run to the
 * next), and the connections of the crowded worker waited longest: the p99 followed the
 * split.
 *
 * But only while the siblings take them: a sibling busy with a long loop turn (hundreds
 * of answers) accepts nothing meanwhile, and a burst of new connections, each holding a
 * first request, then waited turn after turn (wrk -c1000: p99 over 1 s, max 2.2 s).
 * So a worker that has left connections to its siblings for ACCEPT_HANDOFF_MS without
 * one of them accepting any takes them itself. */
#define ACCEPT_HANDOFF_MS 2

static int over_share(const worker_t *w)
{
    int mine = atomic_load_explicit(&w->conns, memory_order_relaxed);
    for (int i = 0; i < w->nsiblings; i++)
        if (atomic_load_explicit(&w->siblings[i].accepting, memory_order_relaxed) &&
            mine > atomic_load_explicit(&w->siblings[i].conns, memory_order_relaxed))
            return 1;
    return 0;
}

/* 1 while the connections this worker leaves to its siblings are being taken. */
static int siblings_taking(worker_t *w)
{
    unsigned seen = 0;
    uint64_t now = h2o_now(w->loop);
    for (int i = 0; i < w->nsiblings; i++)
        if (&w->siblings[i] != w)
            seen += atomic_load_explicit(&w->siblings[i].accepts, memory_order_relaxed);
    if (w->leave_since == 0 || seen != w->leave_seen) {
        w->leave_since = now;
        w->leave_seen = seen;
        return 1;
    }
    return now - w->leave_since < ACCEPT_HANDOFF_MS;
}

static void on_conn_close(void *data)
{
    worker_t *w = data;
    atomic_fetch_sub_explicit(&w->conns, 1, memory_order_relaxed);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    worker_t *w = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 16; i++) {
        if (over_share(w) && siblings_taking(w))
            return;
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        atomic_fetch_add_explicit(&w->conns, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->accepts, 1, memory_order_relaxed);
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = w;
        h2o_accept(&w->accept_ctx, sock);
    }
    w->leave_since = 0;
}

/* ===== h2o's own error answers =====
 *
 * h2o answers a few requests itself, before any handler runs: a body over
 * max_request_entity_size (413), a broken chunked encoding or content-length (400), in
 * text/plain. Those answers, and only those, take the host's fallback path (every
 * request that reaches a handler is bound to "/"); this filter there gives them the
 * contract's JSON error and headers. */
typedef struct json_error_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
} json_error_ostream_t;

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                            h2o_send_state_t state)
{
    json_error_ostream_t *o = (json_error_ostream_t *)self;
    /* h2o_send_inline: the whole body in one final call, or none for HEAD */
    h2o_ostream_send_next(self, req, bufcnt != 0 ? &o->body : NULL, bufcnt != 0, state);
}

static void json_error_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    api_err_t e = req->res.status == 413 ? ERR_PAYLOAD_TOO_LARGE : req->res.status == 400 ? ERR_INVALID_REQUEST : ERR_NONE;
    if (e != ERR_NONE) {
        buf_t b = {0};
        api_err_json(&b, e, e == ERR_INVALID_REQUEST ? "The request body is malformed." : NULL);
        json_error_ostream_t *o = (json_error_ostream_t *)h2o_add_ostream(req, sizeof(*o), slot);
        o->super.do_send = json_error_send;
        o->body = h2o_strdup(&req->pool, b.p, b.len);
        buf_free(&b);
        memset(&req->res.headers, 0, sizeof(req->res.headers));
        add_answer_headers(req, "application/json");
        req->res.content_length = o->body.len;
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

static int open_listener(const server_t *s)
{
    int fd, on = 1;
    if ((fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 ||
        bind(fd, (const struct sockaddr *)&s->addr, s->addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void on_redis_state(int connected, void *data)
{
    worker_t *w = data;
    if (w->id == 0)
        log_event(connected ? LOG_INFO : LOG_WARN, connected ? "redis connected" : "redis disconnected", NULL);
    if (!connected)
        metrics_redis_error();
    if (w->cache != NULL)
        rcache_main_state(w->cache, connected);
}

/* Wipes the stack below the worker loop's frame. Code the broker does not own leaves
 * request bytes there: glibc saves the vector registers on the stack when a shared
 * library's function is first bound, and those may hold a body or an answer being
 * copied. Run before the worker sleeps, so nothing of a busy spell stays behind. */
#define STACK_SCRUB_BYTES (32 * 1024)
static __attribute__((noinline)) void scrub_stack(void)
{
    char pad[STACK_SCRUB_BYTES];
    OPENSSL_cleanse(pad, sizeof(pad));
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uint64_t drain_start = 0, t0 = time_mono_ms();

    if (w->id != 0) { /* worker 0 is the main thread: it keeps the process's name */
        char name[16];
        snprintf(name, sizeof(name), "stb-worker-%d", w->id);
        pthread_setname_np(pthread_self(), name);
    }

    /* Give Redis a moment before accepting (the kernel queues connections meanwhile),
     * so that a broker that is up is also ready when Redis is; a Redis that is down
     * delays nothing past STARTUP_REDIS_WAIT_MS. */
    while (!redis_loop_ready(w->redis) && time_mono_ms() - t0 < STARTUP_REDIS_WAIT_MS && !atomic_load(&g_stop))
        h2o_evloop_run(w->loop, 10);
    h2o_socket_read_start(w->listener, on_accept);
    atomic_store(&w->accepting, 1);
    log_batch_start();
    size_t sent = 0;
    int dirty = 0; /* answers went out since the stack was last scrubbed */
    while (!atomic_load(&g_stop) || w->inflight > 0) {
        if (atomic_load(&g_stop) && w->listener != NULL) {
            /* SIGTERM: stop accepting, let keep-alive connections close, drain */
            atomic_store(&w->accepting, 0);
            h2o_socket_read_stop(w->listener);
            h2o_socket_close(w->listener);
            w->listener = NULL;
            h2o_context_request_shutdown(&w->ctx);
            drain_start = time_mono_ms();
        }
        if (drain_start != 0 && time_mono_ms() - drain_start > DRAIN_MAX_MS)
            break;
        /* After answers were sent, the next turn must not sleep: h2o completes a write made
         * outside its loop by a pending callback, and that callback is what resumes reading
         * the connection's next request; without an event or a timer to end the wait, a
         * keep-alive client waited up to 50 ms for each answer after a Redis round trip. */
        h2o_evloop_run(w->loop, sent != 0 ? 0 : 50);
        if ((sent = send_turn(w)) != 0) {
            dirty = 1;
        } else if (dirty) {
            scrub_stack();
            dirty = 0;
        }
    }
    send_turn(w);
    log_batch_stop();
    return NULL;
}

static int worker_init(server_t *s, worker_t *w, int id, int listen_fd)
{
    const config_t *cfg = s->cfg;
    w->id = id;
    w->cfg = cfg;
    w->siblings = s->workers;
    w->nsiblings = cfg->threads;
    w->loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, w->loop, &s->globalconf);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = s->globalconf.hosts;
    h2o_timeout_init(w->loop, &w->store_deadline, STORE_DEADLINE_MS);
    h2o_timeout_init(w->loop, &w->stripe_deadline, (uint64_t)cfg->upstream_timeout_ms + STORE_DEADLINE_MS);
    h2o_timeout_init(w->loop, &w->proxy_deadline, (uint64_t)cfg->proxy_timeout_ms + STORE_DEADLINE_MS);
    redis_loop_config_t rc = {cfg->redis_host, cfg->redis_port, cfg->redis_unix, cfg->redis_password, cfg->redis_db};
    w->redis = redis_loop_create(w->loop, &rc, on_redis_state, w);
    w->cache = w->redis != NULL ? rcache_create(w->loop, w->redis, &rc, cfg->redis_prefix, cfg->cache_busy_rps) : NULL;
    w->curl = curl_loop_create(w->loop);
    w->tokens = token_service_create(w->loop, w->redis, w->curl, cfg, w->id == 0);
    if (w->redis == NULL || w->cache == NULL || w->curl == NULL || w->tokens == NULL)
        return -1;
    w->listener = h2o_evloop_socket_create(w->loop, listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_stop, 1);
}

static int parse_listen(const config_t *cfg, server_t *s)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    if (getaddrinfo(cfg->listen_host, port, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
    s->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void build_csp(const config_t *cfg)
{
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

int server_run(const config_t *cfg)
{
    server_t s = {0};
    s.cfg = cfg;
    unsigned char rnd[4];
    rand_bytes(rnd, sizeof(rnd));
    g_reqid_prefix = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
    build_csp(cfg);
    router_init(routes_table, routes_count);

    const char *names[routes_count + 1];
    for (int i = 0; i <= routes_count; i++)
        names[i] = router_pattern(i);
    metrics_init(names, routes_count + 1);
    metrics_proxy_init((const char *const *)cfg->proxy_allow, (int)cfg->proxy_allow_n);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    if (parse_listen(cfg, &s) != 0) {
        fprintf(stderr, "stripe-token-broker: BROKER_LISTEN: cannot resolve the address\n");
        return 1;
    }

    h2o_config_init(&s.globalconf);
    s.globalconf.max_request_entity_size = BODY_MAX_BYTES * 4; /* larger: h2o's 413, as JSON (json_error_setup) */
    s.globalconf.http1.upgrade_to_http2 = 0;
    s.globalconf.server_name = h2o_iovec_init(H2O_STRLIT("stripe-token-broker"));
    h2o_hostconf_t *host = h2o_config_register_host(&s.globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;
    h2o_create_filter(&host->fallback_path, sizeof(h2o_filter_t))->on_setup_ostream = json_error_setup;

    s.workers = calloc((size_t)cfg->threads, sizeof(worker_t));
    if (s.workers == NULL)
        abort();
    int listen_fd = -1;
    for (int i = 0; i < cfg->threads; i++) {
        /* one listening socket shared by every worker (each watches its own dup): a
         * connection goes to whichever worker accepts it first, so a busy worker takes
         * fewer (per-worker SO_REUSEPORT sockets hash connections to workers whatever
         * their load); and a second process cannot bind the port by mistake */
        int fd = i == 0 ? (listen_fd = open_listener(&s)) : fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
        if (fd == -1) {
            fprintf(stderr, "stripe-token-broker: BROKER_LISTEN: cannot listen on %s:%d: %s\n", cfg->listen_host,
                    cfg->listen_port, strerror(errno));
            return 1;
        }
        if (worker_init(&s, &s.workers[i], i, fd) != 0) {
            fprintf(stderr, "stripe-token-broker: cannot start worker %d\n", i);
            return 1;
        }
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    char threads[16];
    snprintf(threads, sizeof(threads), "%d", cfg->threads);
    log_event(LOG_INFO, "listening", "listen", cfg->listen_host, "port", port, "threads", threads, "version",
              BROKER_VERSION, "flavor", cfg->flavor == FLAVOR_APPS ? "apps" : "connect", NULL);

    if (log_writer_start() != 0) {
        fprintf(stderr, "stripe-token-broker: cannot start the log writer\n");
        return 1;
    }
    if (events_start(cfg) != 0) {
        fprintf(stderr, "stripe-token-broker: cannot start the events thread\n");
        return 1;
    }
    pthread_t *tids = calloc((size_t)cfg->threads, sizeof(pthread_t));
    for (int i = 1; i < cfg->threads; i++)
        pthread_create(&tids[i], NULL, worker_main, &s.workers[i]);
    worker_main(&s.workers[0]);
    for (int i = 1; i < cfg->threads; i++)
        pthread_join(tids[i], NULL);
    free(tids);
    events_stop();
    log_event(LOG_INFO, "stopped", NULL);
    log_writer_stop();
    /* The process exits now; the loops are not torn down (h2o 2.2.5 has no clean
     * way to destroy an evloop with live sockets), the OS reclaims everything. */
    return 0;
}
