/* rcache.h — a worker's read cache of Redis values, kept exact by Redis itself
 * (server-assisted client-side caching: CLIENT TRACKING with a redirect).
 *
 * The worker's Redis connection is put in tracking mode, redirected to a subscriber
 * connection of the same worker: after the worker reads a key, Redis tells that
 * subscriber when anyone changes, deletes, expires or evicts it (or flushes the
 * database), and the entry is dropped.
 *
 * A cached value is never served on its own word. The caller first waits for a
 * barrier: at the end of the loop turn, one PUBLISH on the worker's connection, which
 * comes back on its subscriber. Messages to one connection arrive in order, so when
 * it is back, every invalidation for a write Redis ran before the barrier — that is,
 * before any request that waits on it had arrived — has been applied. So an answer
 * from the cache is exactly as fresh as a Redis read made after the request arrived,
 * and a Redis that is stalled or gone stops cached answers at once: the barrier does
 * not come back, the request's own deadline answers 503. What the cache saves is
 * Redis's work per request (one PUBLISH per loop turn instead of one read per
 * request) and the broker's work to parse and open records.
 *
 * Fallbacks: without tracking (connection down, CLIENT TRACKING refused, subscriber
 * down) nothing is cached and callers read Redis. A barrier that is not back within
 * RCACHE_BARRIER_MS releases its waiters to read Redis themselves, and the cache is
 * not used until a barrier comes back again; a subscriber silent for
 * RCACHE_SUB_DEAD_MS while the main connection is up is reconnected. No entry is
 * used after RCACHE_MAX_AGE_MS, whatever happens (the design's bound on revocation).
 *
 * A read that races a change: reserve the keys before sending the read and fill them
 * with the reply; an invalidation that arrives in between cancels the reservation.
 *
 * Values are kept as Redis returned them (connection records stay sealed); a caller
 * may attach what it derived from a value (routes/token.c keeps the answer it built),
 * which goes away with the entry. Single threaded: one per worker, used only on its
 * loop. */
#ifndef BROKER_STORE_RCACHE_H
#define BROKER_STORE_RCACHE_H
#include <stdint.h>
#include "store/redis_loop.h"

#define RCACHE_SETS 2048         /* a power of two */
#define RCACHE_WAYS 4            /* entries per set: 8192 in all */
#define RCACHE_MAX_AGE_MS 10000
#define RCACHE_BARRIER_MS 250
#define RCACHE_SUB_DEAD_MS 3000
#define RCACHE_TICK_MS 50        /* the watchdog's period */
#define RCACHE_BUSY_WINDOW_MS 10
#define RCACHE_BUSY_HITS 50      /* per window: 5,000 cached answers/s on the worker */
#define RCACHE_FRESH_MS 100      /* busy: a barrier back and sent this recently covers a request */
#define RCACHE_PROBE_MS 10       /* busy: barriers keep being sent this often */

typedef struct rcache rcache_t;

typedef struct rcache_stats {
    uint64_t hits, misses, fills, invalidations, flushes, barriers, barriers_failed, immediate;
} rcache_stats_t;

/* Called once per waiter: confirmed 1 when the barrier came back (now look the keys
 * up again: they may have been invalidated meanwhile), 0 when it did not (read Redis). */
typedef void (*rcache_barrier_cb)(void *data, int confirmed);

/* Start the subscriber (same Redis settings as main) and the watchdog. main must
 * outlive the cache; its state changes must be passed to rcache_main_state(). The
 * barrier channel is "<key_prefix>rcache-barrier:<random>". */
rcache_t *rcache_create(h2o_evloop_t *loop, redis_loop_t *main, const redis_loop_config_t *cfg,
                        const char *key_prefix);
/* Not from inside a callback of the cache; pending waiters are called with 0. */
void rcache_destroy(rcache_t *c);
/* The main connection came up (1) or went down (0). */
void rcache_main_state(rcache_t *c, int connected);
/* 1 while cached values may be served (after a barrier). */
int rcache_usable(rcache_t *c);

/* A cached entry, valid until control returns to the loop. */
typedef struct rcache_entry rcache_entry_t;

/* The entry of key when it is cached and may be served, else NULL (ask Redis). */
rcache_entry_t *rcache_get(rcache_t *c, const char *key, size_t klen);
/* Its value as Redis returned it (NULL: the key does not exist), and *len. */
const char *rcache_value(const rcache_entry_t *e, size_t *len);
/* What the caller derived from the value (the answer built from a record), or NULL;
 * kept with the entry, wiped and freed with it. */
const char *rcache_derived(const rcache_entry_t *e, size_t *len, int64_t *tag);
void rcache_set_derived(rcache_entry_t *e, const char *data, size_t len, int64_t tag);
/* Wait for a barrier sent after now: cb runs later (never inside this call), exactly
 * once; returns 0. Returns 1 when the worker is busy and a barrier sent less than
 * RCACHE_FRESH_MS ago is back (answer now; cb is never called), and -1 when the
 * cache is not usable (cb is never called). Entries stay valid across this call. */
int rcache_barrier(rcache_t *c, rcache_barrier_cb cb, void *data);
/* Before reading key from Redis on the main connection: a ticket for rcache_fill (0
 * when the cache is not tracking: fill then does nothing). */
uint64_t rcache_reserve(rcache_t *c, const char *key, size_t klen);
/* The value read after rcache_reserve (val NULL: no such key). Kept only if nothing
 * invalidated the key in between; returns the entry then, else NULL. */
rcache_entry_t *rcache_fill(rcache_t *c, const char *key, size_t klen, uint64_t ticket, const char *val,
                            size_t len);

rcache_stats_t rcache_stats(const rcache_t *c);
#endif
