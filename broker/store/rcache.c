/* rcache.c — the worker's tracked read cache (see rcache.h).
 *
 * Owns the subscriber connection, the tracking handshake on the main connection, the
 * probes and an RCACHE_WAYS-way set-associative table of entries. An entry is filled (its value
 * known), reserved (ticket != 0: a read is on its way), or both (a re-read of a
 * value still valid). Invalidations, flushes and connection changes clear entries;
 * they never wait for anything.
 *
 * Tracking is "on" from the +OK of CLIENT TRACKING ON REDIRECT <subscriber id> until
 * the main connection or the subscriber drops. Entries filled under an earlier
 * tracking session are flushed when a new one starts (their invalidations went to a
 * subscriber that is gone).
 *
 * Probes: PUBLISH <channel> <seq> on the main connection, one at a time (a new one may
 * replace one that has been out for RCACHE_FRESH_MS). When <seq> comes back on the
 * subscriber, its send time becomes the "confirmed" time that rcache_fresh() checks.
 *
 * Never logs a key's value. Tested by tests/unit/test_rcache.c (against a real
 * redis-server: changes from another client, FLUSHALL, races, the subscriber killed,
 * Redis paused or restarted) and tests/it/test_cache.py (replicas that see each
 * other's writes, with the cache in use and without). */
#include "store/rcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/crypto.h"
#include "core/ratewin.h"
#include "log.h"
#include "metrics.h"

struct rcache_entry {
    uint64_t hash;
    uint64_t ticket;    /* != 0: reserved */
    uint64_t since_ms;  /* when filled (or reserved, while not filled) */
    char *key;          /* NULL: empty slot */
    size_t klen;
    int filled;
    int present;        /* filled: 0 when the key does not exist */
    char *val;
    size_t vlen;
    char *derived;      /* the caller's, may hold a secret: wiped */
    size_t dlen;
    int64_t dtag;
};

typedef struct rcache_entry slot_t;

struct rcache {
    h2o_evloop_t *loop;
    redis_loop_t *main;
    redis_loop_t *sub;
    char probe_channel[128];
    const char *channels[2];
    int main_up, sub_up;
    long long tracking_id;  /* subscriber id tracking is on for; 0: off */
    long long tracking_req; /* id of an outstanding CLIENT TRACKING; 0: none */
    int refused_logged;
    uint64_t next_ticket;

    uint64_t probe_seq;     /* the newest probe sent */
    uint64_t probe_sent_ms;
    uint64_t probe_since_ms;/* send time of the first probe not back (probe_out) */
    int probe_out;          /* probe_seq has not come back yet */
    uint64_t confirmed_ms;  /* send time of the newest probe that came back; 0: none */
    ratewin_t reqs;         /* requests per RCACHE_BUSY_WINDOW_MS */
    unsigned busy_reqs;     /* per window; 0: never busy */

    h2o_timeout_t tick_list;
    h2o_timeout_entry_t tick_entry;
    slot_t *slots;          /* RCACHE_SETS * RCACHE_WAYS */
    uint64_t *tags;         /* each slot's key hash, 0 when empty: a set's in one cache line */
    rcache_stats_t st;
    rcache_stats_t reported; /* what metrics already has */
};

/* ===== The table ===== */

static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return h | 1; /* 0 marks an empty slot */
}

static slot_t *set_of(rcache_t *c, uint64_t h)
{
    return &c->slots[(h & (RCACHE_SETS - 1)) * RCACHE_WAYS];
}

static slot_t *find(rcache_t *c, uint64_t h, const char *key, size_t klen)
{
    slot_t *set = set_of(c, h);
    const uint64_t *tags = &c->tags[set - c->slots];
    for (int i = 0; i < RCACHE_WAYS; i++)
        if (tags[i] == h && set[i].klen == klen && memcmp(set[i].key, key, klen) == 0)
            return &set[i];
    return NULL;
}

static void drop_value(slot_t *s)
{
    if (s->val != NULL)
        secure_free(s->val, s->vlen);
    if (s->derived != NULL)
        secure_free(s->derived, s->dlen);
    s->val = s->derived = NULL;
    s->vlen = s->dlen = 0;
    s->filled = s->present = 0;
}

static void slot_clear(rcache_t *c, slot_t *s)
{
    drop_value(s);
    free(s->key);
    memset(s, 0, sizeof(*s));
    c->tags[s - c->slots] = 0;
}

static void flush_all(rcache_t *c)
{
    size_t n = 0;
    for (size_t i = 0; i < (size_t)RCACHE_SETS * RCACHE_WAYS; i++) {
        if (c->slots[i].key != NULL) {
            slot_clear(c, &c->slots[i]);
            n++;
        }
    }
    if (n != 0)
        c->st.flushes++;
}

/* 1 when ms (a past h2o_now) is less than limit ago; a clock step back counts as stale. */
static int fresh(const rcache_t *c, uint64_t ms, uint64_t limit)
{
    uint64_t now = h2o_now(c->loop);
    return now >= ms && now - ms < limit;
}

/* ===== Tracking ===== */

static void tracking_off(rcache_t *c)
{
    if (c->tracking_id != 0)
        log_event(LOG_WARN, "redis tracking session ended: read cache flushed", (const char *)NULL);
    c->tracking_id = 0;
    c->confirmed_ms = 0;
    c->probe_out = 0;
    flush_all(c);
}

static void on_tracking_reply(redisReply *reply, void *data)
{
    rcache_t *c = data;
    long long req = c->tracking_req;
    c->tracking_req = 0;
    if (reply == NULL)
        return; /* main lost: rcache_main_state() follows */
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!c->refused_logged) {
            c->refused_logged = 1;
            log_event(LOG_WARN, "redis refused CLIENT TRACKING: the read cache stays off", (const char *)NULL);
        }
        return;
    }
    if (c->sub_up && redis_loop_client_id(c->sub) == req) {
        flush_all(c);
        c->tracking_id = req;
    }
}

static void maybe_enable(rcache_t *c)
{
    long long id = c->sub_up ? redis_loop_client_id(c->sub) : 0;
    if (!c->main_up || id == 0 || c->tracking_id == id || c->tracking_req != 0 || c->refused_logged)
        return;
    if (redis_loop_command(c->main, on_tracking_reply, c, "CLIENT TRACKING ON REDIRECT %lld", id) == 0)
        c->tracking_req = id;
}

void rcache_main_state(rcache_t *c, int connected)
{
    c->main_up = connected;
    if (!connected)
        tracking_off(c);
    else
        maybe_enable(c);
}

static void on_sub_state(int connected, void *data)
{
    rcache_t *c = data;
    c->sub_up = connected;
    if (!connected) {
        tracking_off(c);
        return;
    }
    maybe_enable(c);
}

static void invalidate(rcache_t *c, const char *key, size_t klen)
{
    slot_t *s = find(c, key_hash(key, klen), key, klen);
    c->st.invalidations++;
    if (s != NULL)
        slot_clear(c, s);
}

static void on_message(const char *channel, size_t len, redisReply *payload, void *data)
{
    rcache_t *c = data;
    if (len == strlen(c->probe_channel) && memcmp(channel, c->probe_channel, len) == 0) {
        if (payload->type == REDIS_REPLY_STRING && c->probe_out &&
            strtoull(payload->str, NULL, 10) == c->probe_seq) {
            c->probe_out = 0;
            c->confirmed_ms = c->probe_sent_ms;
        }
        return;
    }
    /* __redis__:invalidate: an array of key names, or nil for a flush */
    if (payload->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < payload->elements; i++)
            if (payload->element[i]->type == REDIS_REPLY_STRING)
                invalidate(c, payload->element[i]->str, payload->element[i]->len);
    } else if (payload->type == REDIS_REPLY_STRING) {
        invalidate(c, payload->str, payload->len);
    } else {
        flush_all(c);
    }
}

/* ===== Probes ===== */

/* At most one per RCACHE_PROBE_MS: formatting cost does not matter here. */
static void probe_send(rcache_t *c)
{
    if (redis_loop_command(c->main, NULL, NULL, "PUBLISH %s %llu", c->probe_channel,
                           (unsigned long long)(c->probe_seq + 1)) != 0)
        return;
    c->probe_seq++;
    c->probe_sent_ms = h2o_now(c->loop);
    if (!c->probe_out)
        c->probe_since_ms = c->probe_sent_ms; /* a replacement does not restart the clock */
    c->probe_out = 1;
    c->st.probes++;
}

/* The watchdog: a subscriber that stays silent while probed is reconnected; and the
 * counters go to metrics (so the request path has no atomics). Silent means no probe back
 * for RCACHE_SUB_DEAD_MS since the first one still out was sent — not since the last one
 * came back: after a quiet spell (no probes) longer than that, the first probe of the
 * next busy spell was taken for lost when a tick came before its answer, and a healthy
 * subscriber was dropped with the whole cache (seen once in about twenty bench points). */
static void on_tick(h2o_timeout_entry_t *entry)
{
    rcache_t *c = H2O_STRUCT_FROM_MEMBER(rcache_t, tick_entry, entry);
    h2o_timeout_link(c->loop, &c->tick_list, &c->tick_entry);
    metrics_cache(c->st.hits - c->reported.hits, c->st.misses - c->reported.misses,
                  c->st.invalidations - c->reported.invalidations, c->st.probes - c->reported.probes,
                  c->st.flushes - c->reported.flushes);
    c->reported = c->st;
    if (c->tracking_id != 0 && c->main_up && c->probe_out && !fresh(c, c->probe_since_ms, RCACHE_SUB_DEAD_MS)) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(h2o_now(c->loop) - c->probe_since_ms));
        log_event(LOG_WARN, "redis invalidation channel silent, reconnecting", "probe_out_ms", ms, (const char *)NULL);
        redis_loop_reconnect(c->sub); /* on_sub_state(0) turns tracking off */
    }
}

/* ===== Public API ===== */

rcache_t *rcache_create(h2o_evloop_t *loop, redis_loop_t *main, const redis_loop_config_t *cfg,
                        const char *key_prefix, int busy_rps)
{
    rcache_t *c = calloc(1, sizeof(*c));
    const size_t n = (size_t)RCACHE_SETS * RCACHE_WAYS;
    char id[33];
    if (c == NULL || (c->slots = calloc(n, sizeof(*c->slots))) == NULL ||
        (c->tags = aligned_alloc(64, n * sizeof(*c->tags))) == NULL) {
        if (c != NULL)
            free(c->slots);
        free(c);
        return NULL;
    }
    memset(c->tags, 0, n * sizeof(*c->tags));
    rand_token(id, 12);
    snprintf(c->probe_channel, sizeof(c->probe_channel), "%srcache-probe:%s", key_prefix, id);
    c->channels[0] = "__redis__:invalidate";
    c->channels[1] = c->probe_channel;
    c->loop = loop;
    c->main = main;
    c->busy_reqs = busy_rps <= 0 ? 0 : (unsigned)((uint64_t)busy_rps * RCACHE_BUSY_WINDOW_MS / 1000 + 1);
    c->main_up = redis_loop_ready(main);
    h2o_timeout_init(loop, &c->tick_list, RCACHE_TICK_MS);
    c->tick_entry.cb = on_tick;
    h2o_timeout_link(loop, &c->tick_list, &c->tick_entry);
    if ((c->sub = redis_loop_create_subscriber(loop, cfg, c->channels, 2, on_message, on_sub_state, c)) == NULL) {
        rcache_destroy(c);
        return NULL;
    }
    return c;
}

void rcache_destroy(rcache_t *c)
{
    if (c == NULL)
        return;
    if (c->sub != NULL)
        redis_loop_destroy(c->sub);
    h2o_timeout_unlink(&c->tick_entry);
    h2o_timeout_dispose(c->loop, &c->tick_list);
    flush_all(c);
    free(c->slots);
    free(c->tags);
    free(c);
}

int rcache_tracking(const rcache_t *c)
{
    return c->tracking_id != 0;
}

int rcache_fresh(rcache_t *c)
{
    uint64_t now = h2o_now(c->loop);
    unsigned reqs = ratewin_add(&c->reqs, now, RCACHE_BUSY_WINDOW_MS, 1);
    if (c->tracking_id == 0 || c->busy_reqs == 0 || reqs < c->busy_reqs)
        return 0;
    /* the next probe, or one in place of a probe that is not back in time */
    if (!fresh(c, c->probe_sent_ms, c->probe_out ? RCACHE_FRESH_MS : RCACHE_PROBE_MS))
        probe_send(c);
    return c->confirmed_ms != 0 && fresh(c, c->confirmed_ms, RCACHE_FRESH_MS);
}

rcache_entry_t *rcache_get(rcache_t *c, const char *key, size_t klen)
{
    slot_t *s = c->tracking_id != 0 ? find(c, key_hash(key, klen), key, klen) : NULL;
    if (s == NULL || !s->filled || !fresh(c, s->since_ms, RCACHE_MAX_AGE_MS - s->hash % (RCACHE_MAX_AGE_MS / 2))) {
        c->st.misses++;
        return NULL;
    }
    c->st.hits++;
    return s;
}

const char *rcache_value(const rcache_entry_t *e, size_t *len)
{
    *len = e->present ? e->vlen : 0;
    return e->present ? e->val : NULL;
}

const char *rcache_derived(const rcache_entry_t *e, size_t *len, int64_t *tag)
{
    *len = e->dlen;
    *tag = e->dtag;
    return e->derived;
}

void rcache_set_derived(rcache_entry_t *e, const char *data, size_t len, int64_t tag)
{
    if (e->derived != NULL)
        secure_free(e->derived, e->dlen);
    e->derived = malloc(len ? len : 1);
    if (e->derived != NULL)
        memcpy(e->derived, data, len);
    e->dlen = e->derived != NULL ? len : 0;
    e->dtag = tag;
}

uint64_t rcache_reserve(rcache_t *c, const char *key, size_t klen)
{
    if (c->tracking_id == 0)
        return 0;
    uint64_t h = key_hash(key, klen);
    slot_t *s = find(c, h, key, klen);
    if (s == NULL) {
        /* an empty way, else the one filled longest ago */
        slot_t *set = set_of(c, h);
        s = &set[0];
        for (int i = 0; i < RCACHE_WAYS && s->key != NULL; i++)
            if (set[i].key == NULL || set[i].since_ms < s->since_ms)
                s = &set[i];
        slot_clear(c, s);
        if ((s->key = malloc(klen)) == NULL)
            return 0;
        memcpy(s->key, key, klen);
        s->klen = klen;
        s->hash = h;
        c->tags[s - c->slots] = h;
        s->since_ms = h2o_now(c->loop);
    }
    s->ticket = ++c->next_ticket;
    return s->ticket;
}

rcache_entry_t *rcache_fill(rcache_t *c, const char *key, size_t klen, uint64_t ticket, const char *val,
                            size_t len)
{
    slot_t *s = ticket != 0 ? find(c, key_hash(key, klen), key, klen) : NULL;
    if (s == NULL || s->ticket != ticket)
        return NULL;
    s->ticket = 0;
    s->since_ms = h2o_now(c->loop);
    if (s->filled && s->present == (val != NULL) && (val == NULL || (s->vlen == len && memcmp(s->val, val, len) == 0)))
        return s; /* the same bytes: what was derived from them still holds */
    drop_value(s);
    if (val != NULL) {
        if ((s->val = malloc(len ? len : 1)) == NULL) {
            slot_clear(c, s);
            return NULL;
        }
        memcpy(s->val, val, len);
        s->vlen = len;
    }
    s->present = val != NULL;
    s->filled = 1;
    return s;
}

rcache_entry_t *rcache_same(rcache_t *c, const char *key, size_t klen, const char *val, size_t len)
{
    slot_t *s = c->tracking_id != 0 ? find(c, key_hash(key, klen), key, klen) : NULL;
    if (s == NULL || !s->filled || s->present != (val != NULL) ||
        (val != NULL && (s->vlen != len || memcmp(s->val, val, len) != 0)))
        return NULL;
    return s;
}

rcache_stats_t rcache_stats(const rcache_t *c)
{
    return c->st;
}
