/* rcache.c — the worker's tracked read cache (see rcache.h).
 *
 * Owns the subscriber connection, the tracking handshake on the main connection, the
 * barriers and a 4-way set-associative table of entries. An entry is either reserved
 * (ticket != 0: a read is on its way) or filled. Invalidations, flushes and connection
 * changes clear entries; they never wait for anything.
 *
 * Barriers: waiters of one loop turn share one barrier; a 0 ms timer (timers run after
 * the turn's I/O) sends it as PUBLISH <channel> <seq>. Sent barriers wait in a FIFO;
 * the message <seq> coming back on the subscriber completes every barrier up to it.
 * h2o writes a socket only in a later turn, so every waiter had arrived before its
 * barrier left.
 *
 * States: tracking is "on" from the +OK of CLIENT TRACKING ON REDIRECT <subscriber id>
 * until the main connection or the subscriber drops. Entries filled under an earlier
 * tracking session are flushed when a new one starts (their invalidations went to a
 * subscriber that is gone).
 *
 * Never logs a key's value. Tested by tests/unit/test_loops.c (against a real
 * redis-server: changes from another client, FLUSHALL, the subscriber killed, Redis
 * paused) and tests/it/test_cache.py (replicas that see each other's writes). */
#include "store/rcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/crypto.h"
#include "log.h"
#include "metrics.h"

typedef struct rcache_entry {
    uint64_t hash;
    uint64_t ticket;    /* != 0: reserved, value not known yet */
    uint64_t since_ms;  /* when filled (or reserved) */
    char *key;          /* NULL: empty slot */
    size_t klen;
    char *val;          /* NULL with present 0: the key does not exist */
    size_t vlen;
    int present;
    char *derived;      /* the caller's, may hold a secret: wiped */
    size_t dlen;
    int64_t dtag;
} slot_t;

typedef struct waiter {
    rcache_barrier_cb cb;
    void *data;
} waiter_t;

typedef struct barrier {
    struct barrier *next;
    uint64_t seq, sent_ms;
    waiter_t *w;
    size_t n, cap;
} barrier_t;

struct rcache {
    h2o_evloop_t *loop;
    redis_loop_t *main;
    redis_loop_t *sub;
    char barrier_channel[128];
    const char *channels[2];
    int main_up, sub_up;
    uint64_t sub_up_ms;
    long long tracking_id;  /* subscriber id tracking is on for; 0: off */
    long long tracking_req; /* id of an outstanding CLIENT TRACKING; 0: none */
    int refused_logged;
    uint64_t next_ticket;

    barrier_t *open;        /* this turn's waiters; sent when the turn ends */
    barrier_t *head, *tail; /* sent, not back yet, oldest first */
    barrier_t *spare;
    uint64_t barrier_seq;
    int overdue;            /* a barrier missed RCACHE_BARRIER_MS: no hits until one is back */
    uint64_t last_back_ms;
    uint64_t confirmed_ms;  /* send time of the newest barrier that came back */
    uint64_t last_sent_ms;
    uint64_t window_ms;     /* start of the current RCACHE_BUSY_WINDOW_MS window */
    unsigned window_hits, prev_window_hits;
    h2o_timeout_t zero_list;
    h2o_timeout_entry_t close_entry;
    h2o_timeout_t tick_list;
    h2o_timeout_entry_t tick_entry;

    slot_t *slots;          /* RCACHE_SETS * RCACHE_WAYS */
    rcache_stats_t st;
    rcache_stats_t reported; /* what metrics already has */
};

static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return h;
}

static slot_t *set_of(rcache_t *c, uint64_t h)
{
    return &c->slots[(h & (RCACHE_SETS - 1)) * RCACHE_WAYS];
}

static slot_t *find(rcache_t *c, uint64_t h, const char *key, size_t klen)
{
    slot_t *set = set_of(c, h);
    for (int i = 0; i < RCACHE_WAYS; i++)
        if (set[i].key != NULL && set[i].hash == h && set[i].klen == klen && memcmp(set[i].key, key, klen) == 0)
            return &set[i];
    return NULL;
}

static void slot_clear(slot_t *s)
{
    if (s->val != NULL)
        secure_free(s->val, s->vlen);
    if (s->derived != NULL)
        secure_free(s->derived, s->dlen);
    free(s->key);
    memset(s, 0, sizeof(*s));
}

static void flush_all(rcache_t *c)
{
    for (size_t i = 0; i < (size_t)RCACHE_SETS * RCACHE_WAYS; i++)
        if (c->slots[i].key != NULL)
            slot_clear(&c->slots[i]);
    c->st.flushes++;
}

/* 1 when ms (a past h2o_now) is less than limit ago; a clock step back counts as stale. */
static int fresh(const rcache_t *c, uint64_t ms, uint64_t limit)
{
    uint64_t now = h2o_now(c->loop);
    return now >= ms && now - ms < limit;
}

/* ===== Barriers ===== */

/* Call every waiter of b, then recycle b (callbacks may add waiters to c->open). */
static void barrier_finish(rcache_t *c, barrier_t *b, int confirmed)
{
    for (size_t i = 0; i < b->n; i++)
        b->w[i].cb(b->w[i].data, confirmed);
    b->n = 0;
    b->next = c->spare;
    c->spare = b;
}

static void barrier_flush(rcache_t *c);

/* Release every barrier on its way (they cannot be trusted to come back, or to mean
 * anything when they do). */
static void barriers_fail(rcache_t *c)
{
    barrier_t *b;
    while ((b = c->head) != NULL) {
        c->head = b->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->st.barriers_failed++;
        barrier_finish(c, b, 0);
    }
    barrier_flush(c);
}

/* Send a barrier (b may have no waiters: a probe). Returns 0, or -1 (b untouched). */
static int barrier_send(rcache_t *c, barrier_t *b)
{
    char seq[24], tmp[24];
    size_t n = 0, k = 0;
    uint64_t v = c->barrier_seq + 1;
    do
        tmp[k++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (k > 0)
        seq[n++] = tmp[--k];
    const char *argv[3] = {"PUBLISH", c->barrier_channel, seq};
    const size_t lens[3] = {7, strlen(c->barrier_channel), n};
    if (redis_loop_commandv(c->main, NULL, NULL, 3, argv, lens) != 0)
        return -1;
    b->seq = ++c->barrier_seq;
    b->sent_ms = c->last_sent_ms = h2o_now(c->loop);
    b->next = NULL;
    if (c->tail != NULL)
        c->tail->next = b;
    else
        c->head = b;
    c->tail = b;
    c->st.barriers++;
    return 0;
}

static barrier_t *barrier_new(rcache_t *c)
{
    barrier_t *b = c->spare;
    if (b != NULL) {
        c->spare = b->next;
        return b;
    }
    return calloc(1, sizeof(*b));
}

/* Send the open barrier when none is on its way (one at a time: waiters that arrive
 * meanwhile share the next one). Its waiters all arrived before it leaves. */
static void barrier_flush(rcache_t *c)
{
    barrier_t *b = c->open;
    if (b == NULL || c->head != NULL)
        return;
    c->open = NULL;
    if (!rcache_usable(c) || barrier_send(c, b) != 0)
        barrier_finish(c, b, 0);
}

/* The end of a loop turn (0 ms timers run after the turn's I/O). */
static void on_close_timer(h2o_timeout_entry_t *entry)
{
    barrier_flush(H2O_STRUCT_FROM_MEMBER(rcache_t, close_entry, entry));
}

static void barrier_back(rcache_t *c, uint64_t seq)
{
    barrier_t *b;
    c->overdue = 0;
    c->last_back_ms = h2o_now(c->loop);
    while ((b = c->head) != NULL && b->seq <= seq) {
        c->head = b->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->confirmed_ms = b->sent_ms;
        barrier_finish(c, b, 1);
    }
    barrier_flush(c);
}

/* ===== Tracking ===== */

static void tracking_off(rcache_t *c)
{
    c->tracking_id = 0;
    c->confirmed_ms = 0;
    flush_all(c);
    barriers_fail(c);
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
        c->overdue = 0;
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
    c->sub_up_ms = h2o_now(c->loop);
    maybe_enable(c);
}

static void invalidate(rcache_t *c, const char *key, size_t klen)
{
    slot_t *s = find(c, key_hash(key, klen), key, klen);
    c->st.invalidations++;
    if (s != NULL)
        slot_clear(s);
}

static void on_message(const char *channel, size_t len, redisReply *payload, void *data)
{
    rcache_t *c = data;
    if (len == strlen(c->barrier_channel) && memcmp(channel, c->barrier_channel, len) == 0) {
        if (payload->type == REDIS_REPLY_STRING)
            barrier_back(c, strtoull(payload->str, NULL, 10));
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

/* The watchdog: a barrier that is late releases every waiter to read Redis, and a
 * probe keeps asking until one is back; a subscriber that stays silent is reconnected. */
static void on_tick(h2o_timeout_entry_t *entry)
{
    rcache_t *c = H2O_STRUCT_FROM_MEMBER(rcache_t, tick_entry, entry);
    h2o_timeout_link(c->loop, &c->tick_list, &c->tick_entry);
    metrics_cache(c->st.hits - c->reported.hits, c->st.misses - c->reported.misses,
                  c->st.invalidations - c->reported.invalidations, c->st.barriers - c->reported.barriers,
                  c->st.barriers_failed - c->reported.barriers_failed, c->st.immediate - c->reported.immediate);
    c->reported = c->st;
    if (c->head != NULL && !fresh(c, c->head->sent_ms, RCACHE_BARRIER_MS)) {
        c->overdue = 1;
        c->confirmed_ms = 0;
        barriers_fail(c);
    }
    if (!c->overdue || c->tracking_id == 0)
        return;
    uint64_t last = c->last_back_ms > c->sub_up_ms ? c->last_back_ms : c->sub_up_ms;
    if (c->main_up && c->sub_up && !fresh(c, last, RCACHE_SUB_DEAD_MS)) {
        log_event(LOG_WARN, "redis invalidation channel silent, reconnecting", (const char *)NULL);
        redis_loop_reconnect(c->sub); /* on_sub_state(0) turns tracking off */
        return;
    }
    barrier_t *probe;
    if (c->head == NULL && (probe = barrier_new(c)) != NULL && barrier_send(c, probe) != 0)
        barrier_finish(c, probe, 0);
}

/* ===== Public API ===== */

rcache_t *rcache_create(h2o_evloop_t *loop, redis_loop_t *main, const redis_loop_config_t *cfg,
                        const char *key_prefix)
{
    rcache_t *c = calloc(1, sizeof(*c));
    char id[33];
    if (c == NULL || (c->slots = calloc((size_t)RCACHE_SETS * RCACHE_WAYS, sizeof(*c->slots))) == NULL) {
        free(c);
        return NULL;
    }
    rand_token(id, 12);
    snprintf(c->barrier_channel, sizeof(c->barrier_channel), "%srcache-barrier:%s", key_prefix, id);
    c->channels[0] = "__redis__:invalidate";
    c->channels[1] = c->barrier_channel;
    c->loop = loop;
    c->main = main;
    c->main_up = redis_loop_ready(main);
    h2o_timeout_init(loop, &c->zero_list, 0);
    c->close_entry.cb = on_close_timer;
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
    c->tracking_id = 0;
    h2o_timeout_unlink(&c->close_entry);
    barrier_t *open = c->open;
    c->open = NULL;
    if (open != NULL)
        barrier_finish(c, open, 0);
    barriers_fail(c);
    h2o_timeout_unlink(&c->tick_entry);
    h2o_timeout_dispose(c->loop, &c->tick_list);
    h2o_timeout_dispose(c->loop, &c->zero_list);
    flush_all(c);
    for (barrier_t *b = c->spare, *n; b != NULL; b = n) {
        n = b->next;
        free(b->w);
        free(b);
    }
    free(c->slots);
    free(c);
}

int rcache_usable(rcache_t *c)
{
    return c->tracking_id != 0 && !c->overdue;
}

rcache_entry_t *rcache_get(rcache_t *c, const char *key, size_t klen)
{
    slot_t *s = rcache_usable(c) ? find(c, key_hash(key, klen), key, klen) : NULL;
    if (s == NULL || s->ticket != 0 || !fresh(c, s->since_ms, RCACHE_MAX_AGE_MS)) {
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

/* Busy: at least RCACHE_BUSY_HITS barrier requests in the previous window. */
static int busy(rcache_t *c)
{
    uint64_t now = h2o_now(c->loop);
    if (now < c->window_ms || now - c->window_ms >= RCACHE_BUSY_WINDOW_MS) {
        c->prev_window_hits = now - c->window_ms < 2 * RCACHE_BUSY_WINDOW_MS ? c->window_hits : 0;
        c->window_hits = 0;
        c->window_ms = now;
    }
    c->window_hits++;
    return c->prev_window_hits >= RCACHE_BUSY_HITS;
}

static int open_barrier(rcache_t *c)
{
    if (c->open == NULL && (c->open = barrier_new(c)) == NULL)
        return -1;
    if (!h2o_timeout_is_linked(&c->close_entry))
        h2o_timeout_link(c->loop, &c->zero_list, &c->close_entry);
    return 0;
}

int rcache_barrier(rcache_t *c, rcache_barrier_cb cb, void *data)
{
    if (!rcache_usable(c))
        return -1;
    if (busy(c) && c->confirmed_ms != 0 && fresh(c, c->confirmed_ms, RCACHE_FRESH_MS)) {
        /* under load: covered by a recent barrier; keep them coming */
        if (c->open == NULL && !fresh(c, c->last_sent_ms, RCACHE_PROBE_MS))
            open_barrier(c);
        c->st.immediate++;
        return 1;
    }
    if (open_barrier(c) != 0)
        return -1;
    barrier_t *b = c->open;
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 16;
        waiter_t *nw = realloc(b->w, ncap * sizeof(*nw));
        if (nw == NULL)
            return -1;
        b->w = nw;
        b->cap = ncap;
    }
    b->w[b->n].cb = cb;
    b->w[b->n].data = data;
    b->n++;
    return 0;
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
    }
    slot_clear(s);
    if ((s->key = malloc(klen)) == NULL)
        return 0;
    memcpy(s->key, key, klen);
    s->klen = klen;
    s->hash = h;
    s->ticket = ++c->next_ticket;
    s->since_ms = h2o_now(c->loop);
    return s->ticket;
}

rcache_entry_t *rcache_fill(rcache_t *c, const char *key, size_t klen, uint64_t ticket, const char *val,
                            size_t len)
{
    slot_t *s = ticket != 0 ? find(c, key_hash(key, klen), key, klen) : NULL;
    if (s == NULL || s->ticket != ticket)
        return NULL;
    if (val != NULL) {
        if ((s->val = malloc(len ? len : 1)) == NULL) {
            slot_clear(s);
            return NULL;
        }
        memcpy(s->val, val, len);
    }
    s->vlen = len;
    s->present = val != NULL;
    s->ticket = 0;
    s->since_ms = h2o_now(c->loop);
    c->st.fills++;
    return s;
}

rcache_stats_t rcache_stats(const rcache_t *c)
{
    return c->st;
}
