/* rcache.h — a worker's read cache of Redis values, kept exact by Redis itself
 * (server-assisted client-side caching: CLIENT TRACKING with a redirect).
 *
 * The worker's Redis connection is put in tracking mode, redirected to a subscriber
 * connection of the same worker: after the worker reads a key, Redis tells that
 * subscriber when anyone changes, deletes, expires or evicts it (or flushes the
 * database), and the entry is dropped.
 *
 * When a cached value may be served without asking Redis: only while the worker is
 * busy (busy_rps, BROKER_CACHE_BUSY_RPS: that many requests per second, counted in
 * the current or the previous RCACHE_BUSY_WINDOW_MS, so that a short scheduling gap
 * does not flip it), and
 * only while a probe sent less than RCACHE_FRESH_MS ago has come back. A probe is a
 * PUBLISH on the worker's connection received by its subscriber; messages to one
 * connection arrive in order, so when it is back every invalidation for a write Redis
 * ran before it has been applied. Hence a cached answer misses no write older than
 * RCACHE_FRESH_MS (invalidations normally arrive within a millisecond), and a Redis
 * that stalls stops cached answers within RCACHE_FRESH_MS. A quiet worker reads Redis
 * for every request (exact; Redis has time for it) and the cache only spares it the
 * work of opening a record that did not change (see rcache_set_derived). Probes are
 * sent only while busy, at most every RCACHE_PROBE_MS.
 *
 * Without tracking (connection down, CLIENT TRACKING refused, subscriber down) nothing
 * is cached. A subscriber that stays silent for RCACHE_SUB_DEAD_MS while probes are
 * sent is reconnected. No entry is used after RCACHE_MAX_AGE_MS, whatever happens.
 *
 * A read that races a change: reserve the key before sending the read and fill it with
 * the reply; an invalidation that arrives in between cancels the reservation.
 *
 * Values are kept as Redis returned them (connection records stay sealed); a caller
 * may attach what it derived from a value (routes/token.c keeps the answer it built,
 * routes/proxy.c the token it sends: the first byte tells them apart),
 * which stays while the value does and goes away with it. Single threaded: one per
 * worker, used only on its loop. */
#ifndef BROKER_STORE_RCACHE_H
#define BROKER_STORE_RCACHE_H
#include <stdint.h>
#include "store/redis_loop.h"

#define RCACHE_SETS 2048         /* a power of two */
#define RCACHE_WAYS 8            /* entries per set (16,384 in all): with 4, a few sets of
                                  * 1,000 orgs' 2,000 keys overflowed and 0.5 % of requests
                                  * missed, all the time */
#define RCACHE_MAX_AGE_MS 60000  /* entries live 30 to 60 s (spread, so they do not expire together) */
#define RCACHE_BUSY_WINDOW_MS 100
#define RCACHE_FRESH_MS 100
#define RCACHE_PROBE_MS 10
#define RCACHE_SUB_DEAD_MS 3000
#define RCACHE_TICK_MS 50        /* the watchdog's period (and metrics) */

typedef struct rcache rcache_t;
typedef struct rcache_entry rcache_entry_t; /* valid until control returns to the loop */

typedef struct rcache_stats {
    uint64_t hits, misses, invalidations, probes;
    uint64_t flushes; /* the whole table dropped while it held entries */
} rcache_stats_t;

/* Start the subscriber (same Redis settings as main) and the watchdog. main must
 * outlive the cache; its state changes must be passed to rcache_main_state(). The
 * probe channel is "<key_prefix>rcache-probe:<random>". busy_rps 0: never serve from
 * the cache (it then only keeps what was derived from values). */
rcache_t *rcache_create(h2o_evloop_t *loop, redis_loop_t *main, const redis_loop_config_t *cfg,
                        const char *key_prefix, int busy_rps);
void rcache_destroy(rcache_t *c);
/* The main connection came up (1) or went down (0). */
void rcache_main_state(rcache_t *c, int connected);

/* 1 while tracking is on (entries can be filled and served). */
int rcache_tracking(const rcache_t *c);
/* Count one request; 1 when cached entries may be served without reading Redis now
 * (busy, and a probe sent less than RCACHE_FRESH_MS ago is back). Sends probes. */
int rcache_fresh(rcache_t *c);
/* The entry of key when its value is cached (NULL: ask Redis). */
rcache_entry_t *rcache_get(rcache_t *c, const char *key, size_t klen);
/* Its value as Redis returned it (NULL: the key does not exist), and *len. */
const char *rcache_value(const rcache_entry_t *e, size_t *len);
/* What the caller derived from the value, or NULL; kept while the value stays the
 * same (also across reads that return the same bytes), wiped and freed with it. */
const char *rcache_derived(const rcache_entry_t *e, size_t *len, int64_t *tag);
void rcache_set_derived(rcache_entry_t *e, const char *data, size_t len, int64_t tag);
/* Before reading key from Redis on the main connection: a ticket for rcache_fill (0
 * when the cache is not tracking: fill then does nothing). */
uint64_t rcache_reserve(rcache_t *c, const char *key, size_t klen);
/* The value read after rcache_reserve (val NULL: no such key). Kept only if nothing
 * invalidated the key in between; returns the entry then, else NULL. */
rcache_entry_t *rcache_fill(rcache_t *c, const char *key, size_t klen, uint64_t ticket, const char *val,
                            size_t len);

/* The entry of key when it holds exactly val (a value just read from Redis; NULL: no
 * such key), whatever reads of it are still pending: what was derived from those bytes
 * holds for them. For a read whose rcache_fill lost to a newer reservation of the same
 * key (concurrent requests); NULL when the entry holds other bytes or none. */
rcache_entry_t *rcache_same(rcache_t *c, const char *key, size_t klen, const char *val, size_t len);

rcache_stats_t rcache_stats(const rcache_t *c);
#endif
