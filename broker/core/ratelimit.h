/* ratelimit.h — fixed-window counters by key, in a fixed-size table (no lock, one per
 * worker thread). A key is up to RATELIMIT_KEY_MAX bytes (callers prefix a class byte:
 * per org, per client address, per key id…) and is stored whole and compared, so two
 * keys never share or reset each other's count. The table is set-associative
 * (RATELIMIT_WAYS ways per set, picked by a hash with a per-table random seed); a new
 * key takes an empty or expired way of its set, else the way with the lowest count
 * (the one whose forgetting loses the least). Tested by tests/unit/test_ratelimit.c. */
#ifndef BROKER_CORE_RATELIMIT_H
#define BROKER_CORE_RATELIMIT_H
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_KEY_MAX 40
#define RATELIMIT_WAYS 4

typedef struct ratelimit ratelimit_t;

/* A table of 2^sets_log2 sets (aborts when out of memory). seed 0: a random one. */
ratelimit_t *ratelimit_new(unsigned sets_log2, uint64_t seed);
void ratelimit_free(ratelimit_t *t);
/* Counts one hit of key at now_s in windows of window_s seconds (aligned to multiples
 * of window_s). Returns 0 while the window's count is at most limit (limit <= 0: never
 * limited, nothing counted), else the seconds until the window ends (at least 1). */
int ratelimit_hit(ratelimit_t *t, const void *key, size_t klen, int limit, int window_s, uint64_t now_s);
/* The seconds until key's window ends when its window already holds limit hits (the next
 * hit would be over); else 0. Counts nothing. */
int ratelimit_full(const ratelimit_t *t, const void *key, size_t klen, int limit, uint64_t now_s);
#endif
