/* redis_loop.h — one asynchronous hiredis connection on a worker's h2o evloop.
 * It connects, reconnects with backoff after any failure, and fails every pending
 * command (callback with reply NULL) when the connection drops. A command that has
 * waited longer than REDIS_STALL_MS makes the connection count as stalled: it is
 * dropped and re-established, so a hung Redis never holds memory or requests for
 * long. Callers still keep their own per-request deadline (hiredis 0.14 has no
 * command timeout). Single-threaded: use only on the loop's own thread.
 *
 * Rules for callers:
 * - Every accepted command's callback runs exactly once, never from inside the
 *   redis_loop_command* call that queued it.
 * - Callbacks may queue new commands; they must not call redis_loop_destroy.
 * - The connection is shared by every request of the worker: no SUBSCRIBE family,
 *   MONITOR or CLIENT REPLY (refused, -1), and no SELECT/AUTH/RESET of your own.
 *   Pub/sub has its own kind of redis_loop: redis_loop_create_subscriber().
 *   Blocking commands (BLPOP …) count as stalled after REDIS_STALL_MS.
 * - A TCP host name is resolved with a blocking getaddrinfo on every (re)connect
 *   (hiredis 0.14): prefer an IP address or a unix socket.
 * - The process must ignore SIGPIPE (hiredis writes with plain write(2)). */
#ifndef BROKER_STORE_REDIS_LOOP_H
#define BROKER_STORE_REDIS_LOOP_H
#include <h2o.h>
#include <stdarg.h>
#include <hiredis/hiredis.h>

#define REDIS_STALL_MS 3000
#define REDIS_BACKOFF_MIN_MS 50
#define REDIS_BACKOFF_MAX_MS 2000

typedef struct redis_loop redis_loop_t;

/* reply is NULL when the command failed (not connected, connection lost, stalled).
 * The reply is freed by hiredis after the callback returns. */
typedef void (*redis_loop_cb)(redisReply *reply, void *data);
/* Called on every change of connection state (connected 1/0); may be NULL. */
typedef void (*redis_loop_state_cb)(int connected, void *data);
/* A message published on a subscribed channel; payload is freed after the call. */
typedef void (*redis_loop_message_cb)(const char *channel, size_t len, redisReply *payload, void *data);

typedef struct redis_loop_config {
    const char *host;     /* TCP host, or NULL when unix_path is set */
    int port;
    const char *unix_path;
    const char *password; /* AUTH before anything else when non-NULL */
    int db;               /* SELECT when non-zero */
} redis_loop_config_t;

/* Create and start connecting (non-blocking); failures are retried with backoff, so
 * this returns NULL only when out of memory. The config strings must outlive the
 * redis_loop. Connecting and the handshake ([AUTH] [SELECT] PING) must finish within
 * REDIS_STALL_MS. */
redis_loop_t *redis_loop_create(h2o_evloop_t *loop, const redis_loop_config_t *cfg,
                                redis_loop_state_cb on_state, void *state_data);
/* A subscriber: a connection that only listens. Its handshake is [AUTH] [SELECT]
 * CLIENT ID, then SUBSCRIBE to every channel (strings borrowed, must outlive it); it
 * counts as connected once every subscription is confirmed, and reconnects like any
 * other. Every message is given to on_message. It accepts no commands. */
redis_loop_t *redis_loop_create_subscriber(h2o_evloop_t *loop, const redis_loop_config_t *cfg,
                                           const char *const *channels, int nchannels,
                                           redis_loop_message_cb on_message, redis_loop_state_cb on_state,
                                           void *data);
/* The server's CLIENT ID of a connected subscriber, else 0. */
long long redis_loop_client_id(redis_loop_t *r);
/* Drop the connection now and reconnect after the backoff (pending commands get NULL).
 * Not from inside one of this redis_loop's callbacks. */
void redis_loop_reconnect(redis_loop_t *r);
/* 1 when connected (AUTH/SELECT done, PING answered) and usable. */
int redis_loop_ready(redis_loop_t *r);
/* Queue a command (argv form, binary safe). Returns 0, or -1 when not connected, in
 * which case cb is never called. */
int redis_loop_commandv(redis_loop_t *r, redis_loop_cb cb, void *data, int argc,
                        const char **argv, const size_t *argvlen);
/* printf-style variant (hiredis format: %s, %b, %d …). Same return contract. */
int redis_loop_command(redis_loop_t *r, redis_loop_cb cb, void *data, const char *fmt, ...);
/* va_list variant of redis_loop_command (redisvAsyncCommand). Same return contract. */
int redis_loop_vcommand(redis_loop_t *r, redis_loop_cb cb, void *data, const char *fmt, va_list ap);
/* Disconnect (pending callbacks get NULL; on_state is not called) and free. Not from
 * inside a redis_loop callback. Call before disposing of the loop. */
void redis_loop_destroy(redis_loop_t *r);
#endif
