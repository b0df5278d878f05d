/* redis_loop.c — one asynchronous hiredis 0.14 connection on a worker's h2o evloop.
 *
 * Design. hiredis has no h2o adapter, so this file is one: hiredis keeps its own fd and
 * does all reading and writing; h2o only watches a dup() of that fd, created with
 * H2O_SOCKET_FLAG_DONT_READ so h2o reports readiness without consuming bytes.
 *   addRead/delRead   -> h2o_socket_read_start/stop (level-triggered)
 *   addWrite/delWrite -> a "want write" flag plus one-shot h2o_socket_notify_write,
 *                        armed at most once at a time ("armed" flag): h2o asserts when
 *                        notify_write is armed twice and it cannot be cancelled.
 *   cleanup           -> closes only the dup (redisFree closes hiredis's own fd).
 *
 * Every command goes through one path: it is formatted to RESP, checked, and handed to
 * redisAsyncFormattedCommand with our on_reply as callback. Because Redis answers in
 * order, a FIFO of {callback, data, sent_at} runs alongside hiredis's own callback list;
 * on_reply pops its head. That FIFO gives stall detection for free: a 250 ms tick drops
 * the connection when its head has waited more than REDIS_STALL_MS (or when connecting
 * and the handshake take longer than that). Commands that break one-reply-per-command
 * (SUBSCRIBE family, MONITOR, CLIENT REPLY) are refused.
 *
 * Subscribers (redis_loop_create_subscriber) share all of this; their handshake ends with
 * CLIENT ID and SUBSCRIBE instead of PING. SUBSCRIBE is sent with hiredis's own pub/sub
 * callback (on_sub_reply), outside the FIFO: hiredis answers it, and every message after
 * it, through its channel table. Such a connection is ready once every channel is
 * confirmed, and takes no commands.
 *
 * Connection life: connect (non-blocking) -> [AUTH] -> [SELECT] -> PING -> ready. Only a
 * ready connection accepts commands; otherwise redis_loop_command* returns -1 and never
 * calls back. On any loss, hiredis fails every pending command with reply NULL (exactly
 * once, through on_reply), then conn_lost() reports the state change and schedules the
 * next attempt with exponential backoff (REDIS_BACKOFF_MIN_MS doubling to
 * REDIS_BACKOFF_MAX_MS). An h2o_timeout_t list has a fixed duration, so the wait is hops of
 * REDIS_BACKOFF_MIN_MS on one list, not a list per step: the loop walks every list of the
 * worker on every turn, and fewer lists make each turn cheaper.
 *
 * Re-entrancy rules honoured here: the context is never freed from inside one of its
 * own callbacks (onConnect runs without hiredis's IN_CALLBACK guard, and onDisconnect
 * runs half-way through the free); drops requested from inside a reply are deferred to a
 * 0 ms timer; drops from our own timers call redisAsyncFree directly. Timeout lists are
 * initialised in create and disposed only in destroy, never inside a timer callback
 * (h2o 2.2.5 iterates the lists while running them).
 *
 * Never logs a command, a reply or the password. Tested by tests/unit/test_redis_loop.c
 * against a real redis-server (kill, restart, CLIENT PAUSE, AUTH/SELECT over a unix
 * socket). */
#include "store/redis_loop.h"
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/async.h>
#include "log.h"

/* How often the stall check runs; detection happens REDIS_STALL_MS .. +TICK after. */
#define REDIS_TICK_MS 250
/* Backoff steps: 50, 100, 200, 400, 800, 1600, then REDIS_BACKOFF_MAX_MS. */
#define REDIS_BACKOFF_STEPS 7
/* Initial capacity of the pending FIFO (a power of two; it doubles as needed). */
#define REDIS_FIFO_INITIAL 64

/* One command waiting for its reply. */
typedef struct pending {
    redis_loop_cb cb;  /* user or handshake callback; NULL: reply is discarded */
    void *data;
    uint64_t sent_at;  /* monotonic ms when queued */
} pending_t;

struct redis_loop {
    h2o_evloop_t *loop;
    redis_loop_config_t cfg; /* strings borrowed from the caller */
    redis_loop_state_cb on_state;
    void *state_data;

    /* The current connection; NULL while waiting to reconnect. */
    redisAsyncContext *ac;
    h2o_socket_t *sock;      /* h2o wrapper of dup(ac->c.fd); NULL once cleaned up */
    int reading;             /* read polling started on sock */
    int want_write;          /* hiredis asked for write readiness (addWrite, not delWrite) */
    int write_armed;         /* a notify_write is outstanding on sock */
    int ready;               /* handshake done: commands accepted */
    int handshake_failed;    /* an AUTH/SELECT/PING reply was an error */
    int reported;            /* last state given to on_state (1 connected) */
    int destroying;
    int dispatching;         /* depth of calls into user callbacks */
    uint64_t connect_started_at; /* monotonic ms */
    unsigned backoff_step;

    /* FIFO of pending commands, in the order hiredis will answer them. */
    pending_t *q;
    size_t q_head, q_count, q_cap;

    h2o_timeout_t backoff_list; /* REDIS_BACKOFF_MIN_MS: hops until reconnect_at */
    h2o_timeout_entry_t reconnect_entry;
    uint64_t reconnect_at;   /* h2o_now of the next attempt */
    h2o_timeout_t tick_list;
    h2o_timeout_entry_t tick_entry;
    h2o_timeout_t zero_list;
    h2o_timeout_entry_t drop_entry; /* deferred drop (handshake failure) */

    /* Subscribers only (nchannels > 0). */
    const char *const *channels;
    int nchannels;
    int confirmed;             /* subscriptions confirmed on this connection */
    long long client_id;       /* CLIENT ID of this connection */
    redis_loop_message_cb on_message;
};

static void conn_start(redis_loop_t *r);

/* ===== Helpers ===== */

/* Monotonic milliseconds (h2o_now() is wall-clock time on 2.2.5). */
static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Make room for one more FIFO entry. Returns 0, or -1 when out of memory. */
static int fifo_reserve(redis_loop_t *r)
{
    if (r->q_count < r->q_cap)
        return 0;
    size_t ncap = r->q_cap != 0 ? r->q_cap * 2 : REDIS_FIFO_INITIAL;
    pending_t *nq = malloc(ncap * sizeof(*nq));
    if (nq == NULL)
        return -1;
    for (size_t i = 0; i < r->q_count; i++)
        nq[i] = r->q[(r->q_head + i) & (r->q_cap - 1)];
    free(r->q);
    r->q = nq;
    r->q_cap = ncap;
    r->q_head = 0;
    return 0;
}

/* Append an entry; fifo_reserve() must have succeeded just before. */
static void fifo_push(redis_loop_t *r, redis_loop_cb cb, void *data)
{
    assert(r->q_count < r->q_cap);
    pending_t *p = &r->q[(r->q_head + r->q_count) & (r->q_cap - 1)];
    p->cb = cb;
    p->data = data;
    p->sent_at = mono_ms();
    r->q_count++;
}

static pending_t fifo_pop(redis_loop_t *r)
{
    assert(r->q_count > 0);
    pending_t p = r->q[r->q_head];
    r->q_head = (r->q_head + 1) & (r->q_cap - 1);
    r->q_count--;
    return p;
}

/* Run a pending entry's callback (user code). */
static void dispatch(redis_loop_t *r, pending_t p, redisReply *reply)
{
    if (p.cb == NULL)
        return;
    r->dispatching++;
    p.cb(reply, p.data);
    r->dispatching--;
}

static void report_state(redis_loop_t *r, int connected)
{
    if (r->reported == connected)
        return;
    r->reported = connected;
    if (r->on_state != NULL && !r->destroying) {
        r->dispatching++;
        r->on_state(connected, r->state_data);
        r->dispatching--;
    }
}

/* ===== Event-library hooks for hiredis ===== */

static void on_sock_readable(h2o_socket_t *sock, const char *err);
static void on_sock_writable(h2o_socket_t *sock, const char *err);

static void arm_write(redis_loop_t *r)
{
    if (r->sock != NULL && !r->write_armed) {
        r->write_armed = 1;
        h2o_socket_notify_write(r->sock, on_sock_writable);
    }
}

static void ev_add_read(void *privdata)
{
    redis_loop_t *r = privdata;
    if (r->sock != NULL && !r->reading) {
        r->reading = 1;
        h2o_socket_read_start(r->sock, on_sock_readable);
    }
}

static void ev_del_read(void *privdata)
{
    redis_loop_t *r = privdata;
    if (r->sock != NULL && r->reading) {
        r->reading = 0;
        h2o_socket_read_stop(r->sock);
    }
}

static void ev_add_write(void *privdata)
{
    redis_loop_t *r = privdata;
    r->want_write = 1;
    arm_write(r);
}

/* A notification already armed cannot be cancelled: it will fire and be ignored. */
static void ev_del_write(void *privdata)
{
    redis_loop_t *r = privdata;
    r->want_write = 0;
}

static void ev_cleanup(void *privdata)
{
    redis_loop_t *r = privdata;
    if (r->sock != NULL) {
        h2o_socket_close(r->sock); /* closes the dup only; pending notifications die with it */
        r->sock = NULL;
    }
    r->reading = r->want_write = r->write_armed = 0;
}

/* After hiredis handled an event: if the connection survived and still wants to write
 * but nothing is armed (hiredis does not re-add write while connect(2) is in progress),
 * arm again so the connection cannot stall. */
static void after_event(redis_loop_t *r, redisAsyncContext *ac)
{
    if (r->ac == ac && r->want_write)
        arm_write(r);
}

static void on_sock_readable(h2o_socket_t *sock, const char *err)
{
    redis_loop_t *r = sock->data;
    redisAsyncContext *ac = r->ac;
    (void)err; /* DONT_READ sockets report errors as readability; hiredis sees them */
    redisAsyncHandleRead(ac);
    after_event(r, ac);
}

static void on_sock_writable(h2o_socket_t *sock, const char *err)
{
    redis_loop_t *r = sock->data;
    redisAsyncContext *ac = r->ac;
    (void)err;
    r->write_armed = 0;
    if (!r->want_write)
        return;
    redisAsyncHandleWrite(ac);
    after_event(r, ac);
}

/* ===== Connection life ===== */

static void schedule_reconnect(redis_loop_t *r)
{
    unsigned step = r->backoff_step < REDIS_BACKOFF_STEPS ? r->backoff_step : REDIS_BACKOFF_STEPS - 1;
    uint64_t ms = (uint64_t)REDIS_BACKOFF_MIN_MS << step;
    if (!h2o_timeout_is_linked(&r->reconnect_entry)) {
        r->reconnect_at = h2o_now(r->loop) + (ms < REDIS_BACKOFF_MAX_MS ? ms : REDIS_BACKOFF_MAX_MS);
        h2o_timeout_link(r->loop, &r->backoff_list, &r->reconnect_entry);
    }
    if (r->backoff_step < REDIS_BACKOFF_STEPS - 1)
        r->backoff_step++;
}

/* The connection is gone (or going: called from hiredis's onConnect/onDisconnect, right
 * before it frees the context). Idempotent per connection. Must not touch r->ac. */
static void conn_lost(redis_loop_t *r)
{
    if (r->ac == NULL)
        return;
    r->ac = NULL;
    r->ready = 0;
    r->confirmed = 0;
    r->client_id = 0;
    h2o_timeout_unlink(&r->drop_entry);
    /* hiredis has failed every command it knew; anything left is ours to fail. */
    while (r->q_count > 0)
        dispatch(r, fifo_pop(r), NULL);
    if (r->destroying)
        return;
    schedule_reconnect(r);
    report_state(r, 0);
}

/* Drop the connection now. Only from our own timers or destroy, never from inside a
 * hiredis callback (there, use drop_later). */
static void conn_drop(redis_loop_t *r)
{
    redisAsyncContext *ac = r->ac;
    if (ac == NULL)
        return;
    assert((ac->c.flags & REDIS_IN_CALLBACK) == 0);
    r->ready = 0;
    redisAsyncFree(ac); /* NULL to every pending callback, cleanup, onDisconnect if connected */
    conn_lost(r);       /* when it was still connecting, onDisconnect did not run */
}

static void on_drop_timer(h2o_timeout_entry_t *entry)
{
    redis_loop_t *r = H2O_STRUCT_FROM_MEMBER(redis_loop_t, drop_entry, entry);
    conn_drop(r);
}

static void drop_later(redis_loop_t *r)
{
    r->ready = 0;
    if (!h2o_timeout_is_linked(&r->drop_entry))
        h2o_timeout_link(r->loop, &r->zero_list, &r->drop_entry);
}

static void on_reconnect_timer(h2o_timeout_entry_t *entry)
{
    redis_loop_t *r = H2O_STRUCT_FROM_MEMBER(redis_loop_t, reconnect_entry, entry);
    if (h2o_now(r->loop) < r->reconnect_at) {
        h2o_timeout_link(r->loop, &r->backoff_list, &r->reconnect_entry); /* a hop of a longer wait */
        return;
    }
    conn_start(r);
}

/* Periodic stall check. */
static void on_tick(h2o_timeout_entry_t *entry)
{
    redis_loop_t *r = H2O_STRUCT_FROM_MEMBER(redis_loop_t, tick_entry, entry);
    h2o_timeout_link(r->loop, &r->tick_list, &r->tick_entry);
    if (r->ac == NULL)
        return;
    uint64_t now = mono_ms();
    if (!r->ready && now - r->connect_started_at > REDIS_STALL_MS) {
        log_event(LOG_WARN, "redis connect timed out", (const char *)NULL);
        conn_drop(r);
    } else if (r->q_count > 0 && now - r->q[r->q_head].sent_at > REDIS_STALL_MS) {
        log_event(LOG_WARN, "redis stalled, reconnecting", (const char *)NULL);
        conn_drop(r);
    }
}

/* ---- Handshake: [AUTH] [SELECT] PING, pipelined; the first error drops the link ---- */

static void handshake_reply(redis_loop_t *r, redisReply *reply, const char *step)
{
    if (reply == NULL || r->handshake_failed)
        return; /* connection lost: conn_lost() handles it */
    if (reply->type == REDIS_REPLY_ERROR) {
        char msg[128];
        /* Redis's own error text: never contains the password */
        snprintf(msg, sizeof(msg), "%.*s", (int)(reply->len < 120 ? reply->len : 120), reply->str);
        r->handshake_failed = 1;
        log_event(LOG_WARN, "redis handshake failed", "step", step, "error", msg, (const char *)NULL);
        drop_later(r);
    }
}

static void on_auth_reply(redisReply *reply, void *data)
{
    handshake_reply(data, reply, "AUTH");
}

static void on_select_reply(redisReply *reply, void *data)
{
    handshake_reply(data, reply, "SELECT");
}

static void on_ping_reply(redisReply *reply, void *data)
{
    redis_loop_t *r = data;
    handshake_reply(r, reply, "PING");
    if (reply == NULL || r->handshake_failed || r->ac == NULL)
        return;
    r->ready = 1;
    r->backoff_step = 0;
    report_state(r, 1);
}

/* hiredis's pub/sub callback: subscription confirmations, then messages. */
static void on_sub_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redis_loop_t *r = privdata;
    redisReply *reply = reply_;
    if (reply == NULL || r->ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcasecmp(kind, "subscribe") == 0) {
        if (++r->confirmed == r->nchannels && !r->handshake_failed) {
            r->ready = 1;
            r->backoff_step = 0;
            report_state(r, 1);
        }
    } else if (strcasecmp(kind, "message") == 0 && r->ready && r->on_message != NULL) {
        r->dispatching++;
        r->on_message(reply->element[1]->str, reply->element[1]->len, reply->element[2], r->state_data);
        r->dispatching--;
    }
}

static void on_client_id_reply(redisReply *reply, void *data)
{
    redis_loop_t *r = data;
    handshake_reply(r, reply, "CLIENT ID");
    if (reply == NULL || r->handshake_failed || r->ac == NULL)
        return;
    if (reply->type != REDIS_REPLY_INTEGER) {
        r->handshake_failed = 1;
        drop_later(r);
        return;
    }
    r->client_id = reply->integer;
    const char *argv[1 + 8];
    size_t lens[1 + 8];
    argv[0] = "SUBSCRIBE", lens[0] = 9;
    for (int i = 0; i < r->nchannels; i++)
        argv[1 + i] = r->channels[i], lens[1 + i] = strlen(r->channels[i]);
    if (redisAsyncCommandArgv(r->ac, on_sub_reply, r, 1 + r->nchannels, argv, lens) != REDIS_OK)
        drop_later(r);
}

/* hiredis reply callback for every command: the FIFO head is this reply's owner. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_loop_t *r = privdata;
    (void)ac;
    if (reply == NULL)
        r->ready = 0; /* the context is being torn down: refuse new commands */
    if (r->q_count == 0)
        return; /* cannot happen: every hiredis callback has a FIFO entry */
    dispatch(r, fifo_pop(r), reply);
}

/* Queue an internal command during the handshake. Returns 0 or -1. */
static int handshake_send(redis_loop_t *r, redis_loop_cb cb, const char *fmt, ...)
{
    va_list ap;
    int rc;
    if (fifo_reserve(r) != 0)
        return -1;
    va_start(ap, fmt);
    rc = redisvAsyncCommand(r->ac, on_reply, r, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK)
        return -1;
    fifo_push(r, cb, r);
    return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    redis_loop_t *r = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this returns; no onDisconnect follows */
        conn_lost(r);
        return;
    }
    if (r->cfg.unix_path == NULL)
        redisEnableKeepAlive((redisContext *)&ac->c);
    r->handshake_failed = 0;
    if ((r->cfg.password != NULL && handshake_send(r, on_auth_reply, "AUTH %s", r->cfg.password) != 0) ||
        (r->cfg.db != 0 && handshake_send(r, on_select_reply, "SELECT %d", r->cfg.db) != 0) ||
        (r->nchannels == 0 ? handshake_send(r, on_ping_reply, "PING")
                           : handshake_send(r, on_client_id_reply, "CLIENT ID")) != 0)
        drop_later(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    conn_lost(ac->data);
}

/* Start a non-blocking connect; on an immediate failure, schedule the next attempt. */
static void conn_start(redis_loop_t *r)
{
    redisAsyncContext *ac;
    int fd = -1;

    r->connect_started_at = mono_ms();
    if (r->cfg.unix_path != NULL)
        ac = redisAsyncConnectUnix(r->cfg.unix_path);
    else
        ac = redisAsyncConnect(r->cfg.host != NULL ? r->cfg.host : "127.0.0.1", r->cfg.port);
    if (ac == NULL || ac->err != 0 || (fd = fcntl(ac->c.fd, F_DUPFD_CLOEXEC, 0)) == -1) {
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    r->ac = ac;
    r->sock = h2o_evloop_socket_create(r->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    r->sock->data = r;
    r->reading = r->want_write = r->write_armed = 0;
    r->ready = 0;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* last: setting the connect callback calls addWrite, which needs the hooks */
    redisAsyncSetConnectCallback(ac, on_connect);
}

/* ===== Command validation ===== */

/* Parse a decimal length terminated by CRLF at *p (bounded by end). Returns -1 if bad. */
static long parse_len(const char **p, const char *end)
{
    long v = 0;
    const char *s = *p;
    if (s >= end || *s < '0' || *s > '9')
        return -1;
    while (s < end && *s >= '0' && *s <= '9') {
        if (v > 100000000L)
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n')
        return -1;
    *p = s + 2;
    return v;
}

static int arg_is(const char *a, size_t alen, const char *name)
{
    return alen == strlen(name) && strncasecmp(a, name, alen) == 0;
}

/* cmd must be exactly one RESP array of bulk strings (what redisFormatCommand makes),
 * naming a command that gets exactly one reply. Returns 0 or -1. */
static int check_command(const char *cmd, size_t len)
{
    const char *p = cmd, *end = cmd + len;
    const char *a0 = NULL, *a1 = NULL;
    size_t l0 = 0, l1 = 0;
    long n;

    if (len < 4 || *p++ != '*' || (n = parse_len(&p, end)) < 1)
        return -1;
    for (long i = 0; i < n; i++) {
        long l;
        if (p >= end || *p++ != '$' || (l = parse_len(&p, end)) < 0 || end - p < l + 2)
            return -1;
        if (i == 0)
            a0 = p, l0 = (size_t)l;
        else if (i == 1)
            a1 = p, l1 = (size_t)l;
        p += l;
        if (p[0] != '\r' || p[1] != '\n')
            return -1;
        p += 2;
    }
    if (p != end)
        return -1;
    static const char *const refused[] = {"subscribe",   "psubscribe",   "ssubscribe", "unsubscribe",
                                          "punsubscribe", "sunsubscribe", "monitor"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (arg_is(a0, l0, refused[i]))
            return -1;
    if (arg_is(a0, l0, "client") && a1 != NULL && arg_is(a1, l1, "reply"))
        return -1;
    return 0;
}

/* ===== Public API ===== */

static redis_loop_t *redis_loop_init(redis_loop_t *r, h2o_evloop_t *loop, const redis_loop_config_t *cfg,
                                     redis_loop_state_cb on_state, void *state_data)
{
    r->loop = loop;
    r->cfg = *cfg;
    r->on_state = on_state;
    r->state_data = state_data;
    h2o_timeout_init(loop, &r->backoff_list, REDIS_BACKOFF_MIN_MS);
    h2o_timeout_init(loop, &r->tick_list, REDIS_TICK_MS);
    h2o_timeout_init(loop, &r->zero_list, 0);
    r->reconnect_entry.cb = on_reconnect_timer;
    r->tick_entry.cb = on_tick;
    r->drop_entry.cb = on_drop_timer;
    h2o_timeout_link(loop, &r->tick_list, &r->tick_entry);
    conn_start(r);
    return r;
}

redis_loop_t *redis_loop_create(h2o_evloop_t *loop, const redis_loop_config_t *cfg,
                                redis_loop_state_cb on_state, void *state_data)
{
    redis_loop_t *r = calloc(1, sizeof(*r));
    return r != NULL ? redis_loop_init(r, loop, cfg, on_state, state_data) : NULL;
}

redis_loop_t *redis_loop_create_subscriber(h2o_evloop_t *loop, const redis_loop_config_t *cfg,
                                           const char *const *channels, int nchannels,
                                           redis_loop_message_cb on_message, redis_loop_state_cb on_state,
                                           void *data)
{
    if (nchannels < 1 || nchannels > 8)
        return NULL;
    redis_loop_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->channels = channels;
    r->nchannels = nchannels;
    r->on_message = on_message;
    return redis_loop_init(r, loop, cfg, on_state, data);
}

long long redis_loop_client_id(redis_loop_t *r)
{
    return r->ready && r->ac != NULL ? r->client_id : 0;
}

void redis_loop_reconnect(redis_loop_t *r)
{
    assert(r->dispatching == 0);
    if (r->ac == NULL)
        return;
    conn_drop(r);
}

int redis_loop_ready(redis_loop_t *r)
{
    return r->ready && r->ac != NULL;
}

/* Queue a formatted command: the one path every public command function takes. */
static int send_formatted(redis_loop_t *r, redis_loop_cb cb, void *data, const char *cmd, size_t len)
{
    if (!redis_loop_ready(r) || r->nchannels != 0 || check_command(cmd, len) != 0 || fifo_reserve(r) != 0)
        return -1;
    if (redisAsyncFormattedCommand(r->ac, on_reply, r, cmd, len) != REDIS_OK)
        return -1;
    fifo_push(r, cb, data);
    return 0;
}

/* Append "<c><n>\r\n" (a RESP length line) at p; returns the new end. */
static char *resp_len(char *p, char c, size_t n)
{
    char tmp[24];
    int k = 0;
    *p++ = c;
    do
        tmp[k++] = (char)('0' + n % 10);
    while ((n /= 10) != 0);
    while (k > 0)
        *p++ = tmp[--k];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* The RESP form of argv, written directly (hiredis's formatter costs a sprintf per
 * argument, and argv commands are the request path's). Short commands use the stack. */
int redis_loop_commandv(redis_loop_t *r, redis_loop_cb cb, void *data, int argc,
                        const char **argv, const size_t *argvlen)
{
    char stack[1024], *cmd, *p;
    size_t len = 24;
    int rc;
    if (!redis_loop_ready(r) || argc < 1)
        return -1;
    for (int i = 0; i < argc; i++)
        len += argvlen[i] + 24 + 4;
    if ((cmd = len <= sizeof(stack) ? stack : malloc(len)) == NULL)
        return -1;
    p = resp_len(cmd, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = resp_len(p, '$', argvlen[i]);
        memcpy(p, argv[i], argvlen[i]);
        p += argvlen[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    rc = send_formatted(r, cb, data, cmd, (size_t)(p - cmd));
    explicit_bzero(cmd, (size_t)(p - cmd));
    if (cmd != stack)
        free(cmd);
    return rc;
}

int redis_loop_vcommand(redis_loop_t *r, redis_loop_cb cb, void *data, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    int len, rc;
    if (!redis_loop_ready(r))
        return -1;
    if ((len = redisvFormatCommand(&cmd, fmt, ap)) < 0)
        return -1;
    rc = send_formatted(r, cb, data, cmd, (size_t)len);
    explicit_bzero(cmd, (size_t)len);
    free(cmd);
    return rc;
}

int redis_loop_command(redis_loop_t *r, redis_loop_cb cb, void *data, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = redis_loop_vcommand(r, cb, data, fmt, ap);
    va_end(ap);
    return rc;
}

void redis_loop_destroy(redis_loop_t *r)
{
    if (r == NULL)
        return;
    /* Destroying from inside one of our callbacks would free what the caller's caller
     * is still using. */
    assert(r->dispatching == 0);
    r->destroying = 1;
    r->ready = 0;
    conn_drop(r); /* pending callbacks get NULL; no reconnect, no on_state */
    while (r->q_count > 0)
        dispatch(r, fifo_pop(r), NULL);
    h2o_timeout_unlink(&r->reconnect_entry);
    h2o_timeout_unlink(&r->tick_entry);
    h2o_timeout_unlink(&r->drop_entry);
    h2o_timeout_dispose(r->loop, &r->backoff_list);
    h2o_timeout_dispose(r->loop, &r->tick_list);
    h2o_timeout_dispose(r->loop, &r->zero_list);
    free(r->q);
    free(r);
}
