/* server.c — worker threads, listeners, accept balancing and the h2o setup.
 *
 * Design: N worker threads, each with its own h2o evloop, context, dup of the one
 * listening socket, Redis connection (with its read cache, store/rcache.h) and curl
 * multi handle. The global h2o config is shared read-only; every request h2o parses
 * gets its context on the worker that accepted it (http/breq.c) and goes to the router
 * (http/router.h). Answers and their log lines leave at the end of each loop turn
 * (breq_send_turn): the turn's log lines at once (written, or queued for the log writer
 * thread when the worker is busy), then the answers. SIGTERM stops accepting and drains
 * the requests in flight within DRAIN_MAX_MS.
 *
 * Never logs a header value, a body or a query string: they carry secrets.
 * Tested end to end by tests/it/test_ops.py (SIGTERM, h2o's own 413/400 answers, the
 * accept balance: a stuck worker, a worker waiting for its sibling sleeps, connections
 * shared evenly). */
#include "server.h"
#include "http/breq.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
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


#define STARTUP_REDIS_WAIT_MS 1000

static atomic_int g_stop;

/* ===== Workers ===== */

/* h2o's handler of every request: a context on the worker that accepted it (http/breq.c). */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    breq_start(H2O_STRUCT_FROM_MEMBER(worker_t, ctx, req->conn->ctx), req);
    return 0;
}


typedef struct server {
    const config_t *cfg;
    h2o_globalconf_t globalconf;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    worker_t *workers;
} server_t;

/* Workers share the client connections evenly: a worker holding more connections than
 * an accepting sibling leaves new connections to it. The listening socket is in every
 * worker's epoll, level-triggered, so the sibling is woken for them too, and the least
 * loaded accepting worker accepts. Without this, whichever worker woke first took a burst
 * of connections (wrk's 64 split 54/10 or 32/32 from one run to the next), and the
 * connections of the crowded worker waited longest: the p99 followed the split.
 *
 * But only while the siblings take them: a sibling busy with a long loop turn (hundreds
 * of answers) accepts nothing meanwhile, and a burst of new connections, each holding a
 * first request, then waited turn after turn (wrk -c1000: p99 over 1 s, max 2.2 s).
 * So a worker that has left connections to its siblings for ACCEPT_HANDOFF_MS without
 * one of them accepting any takes them itself.
 *
 * While it leaves them, a worker does not watch the listener (leave). Level-triggered, the
 * listener woke it every loop turn until the connection was taken: it spun, taking a core
 * from the very sibling it waited for, and on two busy cores the sibling then missed the
 * window and the spinning worker took the connection after all (10 connections opened one
 * after the other split 6/4 in two test runs of five). It watches again when a sibling
 * accepts (that sibling wakes it through its eventfd: wake_leaving), when a sibling
 * starts leaving connections to it (so that two workers never both wait for the other), and
 * every ACCEPT_RETRY_MS, to take them itself once the window is over. Woken by the accept,
 * not only by the timer, so that a burst goes to both workers at once: 64 connections
 * opened together were all answered within 5-6 ms, as when it spun; 20-21 ms with the
 * timer alone. */
#define ACCEPT_HANDOFF_MS 2
#define ACCEPT_RETRY_MS 1

static int over_share(const worker_t *w)
{
    int mine = atomic_load_explicit(&w->conns, memory_order_relaxed);
    for (int i = 0; i < w->nsiblings; i++)
        if (atomic_load_explicit(&w->siblings[i].accepting, memory_order_relaxed) &&
            mine > atomic_load_explicit(&w->siblings[i].conns, memory_order_relaxed))
            return 1;
    return 0;
}

static unsigned siblings_accepts(const worker_t *w)
{
    unsigned seen = 0;
    for (int i = 0; i < w->nsiblings; i++)
        if (&w->siblings[i] != w)
            seen += atomic_load(&w->siblings[i].accepts);
    return seen;
}

/* 1 while the connections this worker leaves to its siblings are being taken. */
static int siblings_taking(worker_t *w)
{
    unsigned seen = siblings_accepts(w);
    uint64_t now = h2o_now(w->loop);
    if (w->leave_since == 0 || seen != w->leave_seen) {
        w->leave_since = now;
        w->leave_seen = seen;
        return 1;
    }
    return now - w->leave_since < ACCEPT_HANDOFF_MS;
}

static void on_accept(h2o_socket_t *listener, const char *err);

/* Wakes the siblings that do not watch the listener, leaving connections to others, and
 * hold fewer than `below` (the one that clears a sibling's flag writes its eventfd, once).
 * Not through the h2o context's queue: h2o 2.2.5 reads its pipe into buffers of the thread
 * that made the context, the main thread for every worker (worker_init), so a worker
 * reading it raced worker 0 for its buffer allocator (a request read as "\0ET /v1/…"). */
static void wake_leaving(worker_t *w, int below)
{
    static const uint64_t one = 1;
    for (int i = 0; i < w->nsiblings; i++) {
        worker_t *s = &w->siblings[i];
        if (s != w && atomic_load(&s->leaving) && atomic_load_explicit(&s->conns, memory_order_relaxed) < below &&
            atomic_exchange(&s->leaving, 0))
            while (write(s->wake_fd, &one, sizeof(one)) == -1 && errno == EINTR)
                ;
    }
}

static void rejoin(worker_t *w)
{
    atomic_store(&w->leaving, 0);
    h2o_timeout_unlink(&w->leave_retry_entry);
    if (w->listener != NULL) /* NULL: SIGTERM stopped accepting */
        h2o_socket_read_start(w->listener, on_accept);
}

static void leave(worker_t *w)
{
    h2o_socket_read_stop(w->listener);
    h2o_timeout_link(w->loop, &w->leave_retry, &w->leave_retry_entry);
    atomic_store(&w->leaving, 1);
    wake_leaving(w, atomic_load_explicit(&w->conns, memory_order_relaxed)); /* the ones it leaves them to */
    /* A sibling that accepted since siblings_taking looked may have found the flag down.
     * Each side writes (the flag, its accepts) before it reads the other's, sequentially
     * consistent: of a sibling's accept and this, at least one sees the other. */
    if (siblings_accepts(w) != w->leave_seen)
        rejoin(w);
}

static void on_leave_retry(h2o_timeout_entry_t *entry)
{
    rejoin(H2O_STRUCT_FROM_MEMBER(worker_t, leave_retry_entry, entry));
}

static void on_wake(h2o_socket_t *sock, const char *err)
{
    worker_t *w = sock->data;
    uint64_t n;
    while (read(w->wake_fd, &n, sizeof(n)) == -1 && errno == EINTR)
        ;
    rejoin(w);
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
        if (over_share(w) && siblings_taking(w)) {
            leave(w);
            return;
        }
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        atomic_fetch_add_explicit(&w->conns, 1, memory_order_relaxed);
        atomic_fetch_add(&w->accepts, 1);
        wake_leaving(w, INT_MAX);
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
        breq_answer_headers(req, "application/json");
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
    /* glibc's explicit_bzero is its vectorised memset kept from being optimised away:
     * about 500 instructions for 32 KiB, where OPENSSL_cleanse's byte loop took 21,000
     * (a quarter of a getAccessToken answer's whole cost when the worker sleeps after it) */
    explicit_bzero(pad, sizeof(pad));
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
            atomic_store(&w->leaving, 0);
            h2o_timeout_unlink(&w->leave_retry_entry);
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
        if ((sent = breq_send_turn(w)) != 0) {
            dirty = 1;
        } else if (dirty) {
            scrub_stack();
            dirty = 0;
        }
    }
    breq_send_turn(w);
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
    w->stripe_api = stripe_api_conns_create(w->loop, cfg->api_url, cfg->proxy_timeout_ms);
    w->tokens = token_service_create(w->loop, w->redis, w->curl, cfg, w->id == 0);
    if (w->redis == NULL || w->cache == NULL || w->curl == NULL || w->stripe_api == NULL || w->tokens == NULL)
        return -1;
    w->listener = h2o_evloop_socket_create(w->loop, listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_timeout_init(w->loop, &w->leave_retry, ACCEPT_RETRY_MS);
    w->leave_retry_entry.cb = on_leave_retry;
    /* DONT_READ, as the listener: made on the main thread, a socket h2o reads into would
     * take its buffers from worker 0's allocator (wake_leaving) */
    if ((w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
        return -1;
    w->wake = h2o_evloop_socket_create(w->loop, w->wake_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->wake->data = w;
    h2o_socket_read_start(w->wake, on_wake);
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

int server_run(const config_t *cfg)
{
    server_t s = {0};
    s.cfg = cfg;
    breq_init(cfg);
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
