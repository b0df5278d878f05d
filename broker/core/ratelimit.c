/* ratelimit.c — fixed-window counters by key (see ratelimit.h).
 * Owns the table layout and the eviction rule. Keys are never secrets (callers pass
 * hashes of credentials, org ids, addresses); the hash is seeded per table so that
 * nobody outside can aim many keys at one set. Tested by tests/unit/test_ratelimit.c
 * and, through http/ratelimit.c, tests/fault/test_abuse_limits.py and test_abuse_limits_fair.py. */
#include "core/ratelimit.h"
#include <stdlib.h>
#include <string.h>
#include "core/crypto.h"

struct way {
    uint64_t until_s; /* end of the key's current window; 0: empty */
    uint32_t count;
    uint8_t klen;
    unsigned char key[RATELIMIT_KEY_MAX];
};

struct ratelimit {
    uint64_t seed;
    size_t mask;
    struct way *ways; /* (mask + 1) × RATELIMIT_WAYS */
};

ratelimit_t *ratelimit_new(unsigned sets_log2, uint64_t seed)
{
    ratelimit_t *t = calloc(1, sizeof(*t));
    size_t sets = (size_t)1 << sets_log2;
    if (t == NULL || (t->ways = calloc(sets * RATELIMIT_WAYS, sizeof(*t->ways))) == NULL)
        abort();
    if (seed == 0)
        rand_bytes((unsigned char *)&seed, sizeof(seed));
    t->seed = seed;
    t->mask = sets - 1;
    return t;
}

void ratelimit_free(ratelimit_t *t)
{
    if (t == NULL)
        return;
    free(t->ways);
    free(t);
}

static uint64_t hash64(const unsigned char *s, size_t n, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    h ^= h >> 29; /* FNV's low bits mix poorly; the set index uses them */
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static struct way *set_of(const ratelimit_t *t, const void *key, size_t klen)
{
    return &t->ways[(hash64(key, klen, t->seed) & t->mask) * RATELIMIT_WAYS];
}

int ratelimit_full(const ratelimit_t *t, const void *key, size_t klen, int limit, uint64_t now_s)
{
    if (limit <= 0 || klen > RATELIMIT_KEY_MAX)
        return 0;
    const struct way *set = set_of(t, key, klen);
    for (int i = 0; i < RATELIMIT_WAYS; i++)
        if (set[i].until_s > now_s && set[i].klen == klen && memcmp(set[i].key, key, klen) == 0)
            return set[i].count >= (uint32_t)limit ? (int)(set[i].until_s - now_s) : 0;
    return 0;
}

int ratelimit_hit(ratelimit_t *t, const void *key, size_t klen, int limit, int window_s, uint64_t now_s)
{
    if (limit <= 0)
        return 0;
    if (klen > RATELIMIT_KEY_MAX)
        klen = RATELIMIT_KEY_MAX;
    if (window_s < 1)
        window_s = 1;
    struct way *set = set_of(t, key, klen), *w = NULL, *victim = NULL;
    for (int i = 0; i < RATELIMIT_WAYS; i++) {
        struct way *c = &set[i];
        int live = c->until_s > now_s;
        if (live && c->klen == klen && memcmp(c->key, key, klen) == 0) {
            w = c;
            break;
        }
        /* the way to take for a new key: an empty or expired one, else the lowest count */
        if (victim == NULL || (!live && victim->until_s > now_s) ||
            (live && victim->until_s > now_s && c->count < victim->count))
            victim = c;
    }
    if (w == NULL) {
        w = victim;
        w->until_s = (now_s / (uint64_t)window_s + 1) * (uint64_t)window_s;
        w->count = 0;
        w->klen = (uint8_t)klen;
        memcpy(w->key, key, klen);
    }
    if (w->count < UINT32_MAX)
        w->count++;
    if (w->count <= (uint32_t)limit)
        return 0;
    return (int)(w->until_s - now_s);
}
