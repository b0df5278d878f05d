/* events.c — the background thread of a replica: events out and the fleet gauge (see
 * events.h). Blocking hiredis and libcurl on its own thread and its own Redis
 * connection: nothing here runs on a worker's loop. Never logs an event body, the
 * secret or a signature; logs event ids, statuses and attempt counts. */
#include "events/events.h"
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "core/orgid.h"
#include "log.h"
#include "store/audit.h"
#include "store/keys.h"
#include "store/store.h"

#define GROUP "deliver"
#define REDIS_TIMEOUT_MS 2000
#define READ_BLOCK_MS 1000
#define EVENTS_INGEST_BATCH 100

static const char LUA_LEASE[] = "local v = redis.call('GET', KEYS[1])\n"
                                "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end\n"
                                "if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end\n"
                                "return 0\n";

/* Redis's clock in ms: every due time is on it, so replicas' clocks never matter. */
#define LUA_NOW "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* Move what the stream holds into the per-org queues, oldest first: first every entry
 * still pending (a killed holder's, or one read while waiting), then new ones. An org
 * that had nothing queued becomes due now; one in back-off keeps its due time.
 * KEYS: outbox, due. ARGV: group, consumer, queue key prefix, count. Returns moved. */
static const char LUA_INGEST[] =
    LUA_NOW
    "local n = 0\n"
    "local function move(ents)\n"
    "  for _, ent in ipairs(ents) do\n"
    "    local id, f, org, e = ent[1], ent[2], nil, nil\n"
    "    if type(f) == 'table' then\n"
    "      for i = 1, #f - 1, 2 do\n"
    "        if f[i] == 'org' then org = f[i + 1] elseif f[i] == 'e' then e = f[i + 1] end\n"
    "      end\n"
    "    end\n"
    "    if org and e then\n"
    "      redis.call('RPUSH', ARGV[3] .. org, id .. ' ' .. e)\n"
    "      redis.call('ZADD', KEYS[2], 'NX', now, org)\n"
    "      n = n + 1\n"
    "    end\n"
    "    if type(id) == 'string' then\n"
    "      redis.call('XACK', KEYS[1], ARGV[1], id)\n"
    "      redis.call('XDEL', KEYS[1], id)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local c = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, '0-0', 'COUNT', ARGV[4])\n"
    "move(c[2])\n"
    "if c[1] == '0-0' then\n" /* every pending entry moved: new ones may follow them */
    "  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4], 'STREAMS', KEYS[1], '>')\n"
    "  if r then move(r[1][2]) end\n"
    "end\n"
    "return n\n";

/* The org whose queue's head is due first. KEYS: due, retry. ARGV: queue key prefix.
 * Returns {} when nothing is queued; {org, ms until due} when it is not due yet; else
 * {org, 0, head ("<entry id> <JSON>"), retry state or '', now}. */
static const char LUA_PICK[] =
    LUA_NOW
    "for _ = 1, 100 do\n"
    "  local z = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "  if #z == 0 then return {} end\n"
    "  local head = redis.call('LINDEX', ARGV[1] .. z[1], 0)\n"
    "  if not head then\n"
    "    redis.call('ZREM', KEYS[1], z[1])\n"
    "  else\n"
    "    local wait = tonumber(z[2]) - now\n"
    "    if wait > 0 then return {z[1], wait} end\n"
    "    local id = string.match(head, '^(%S+)')\n"
    "    return {z[1], 0, head, redis.call('HGET', KEYS[2], id) or '', now}\n"
    "  end\n"
    "end\n"
    "return {}\n";

/* The head entry ARGV[3] of org ARGV[2] was delivered (or dropped): pop it if it is still
 * the head, forget its retries, and make the org's next entry due now (by the holder of
 * the lease only: a holder that lost it must not move the new holder's schedule).
 * KEYS: due, retry, lease. ARGV: queue key prefix, org, entry id, consumer. */
static const char LUA_DONE[] =
    LUA_NOW
    "local q = ARGV[1] .. ARGV[2]\n"
    "local head = redis.call('LINDEX', q, 0)\n"
    "if head and (head == ARGV[3] or string.sub(head, 1, #ARGV[3] + 1) == ARGV[3] .. ' ') then\n"
    "  redis.call('LPOP', q)\n"
    "end\n"
    "redis.call('HDEL', KEYS[2], ARGV[3])\n"
    "if redis.call('LLEN', q) == 0 then redis.call('ZREM', KEYS[1], ARGV[2])\n"
    "elseif redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('ZADD', KEYS[1], now, ARGV[2]) end\n"
    "return 1\n";

/* The orgs whose queue head was refused at least once and waits for a retry. KEYS: due,
 * retry. ARGV: queue key prefix. For the gauge stb_events_orgs_waiting. */
static const char LUA_WAITING[] =
    "local n = 0\n"
    "for _, org in ipairs(redis.call('ZRANGE', KEYS[1], 0, 9999)) do\n"
    "  local head = redis.call('LINDEX', ARGV[1] .. org, 0)\n"
    "  local id = head and string.match(head, '^(%S+)')\n"
    "  if id and redis.call('HEXISTS', KEYS[2], id) == 1 then n = n + 1 end\n"
    "end\n"
    "return n\n";

/* Attempt ARGV[5] of entry ARGV[3] (org ARGV[2]'s head) failed: keep the retry state and
 * make the org due again in ARGV[6] ms; its later entries wait, other orgs do not.
 * Only by the lease holder, and only while the entry is still the head. KEYS: due, retry,
 * lease. ARGV: queue key prefix, org, entry id, consumer, attempts, back-off ms, first
 * attempt's time (ms; '' for now). */
static const char LUA_RETRY[] =
    LUA_NOW
    "if redis.call('GET', KEYS[3]) ~= ARGV[4] then return 0 end\n"
    "local head = redis.call('LINDEX', ARGV[1] .. ARGV[2], 0)\n"
    "if not head or string.sub(head, 1, #ARGV[3] + 1) ~= ARGV[3] .. ' ' then return 0 end\n"
    "local first = ARGV[7]\n"
    "if first == '' then first = tostring(now) end\n"
    "local due = now + tonumber(ARGV[6])\n"
    "redis.call('HSET', KEYS[2], ARGV[3], ARGV[5] .. ' ' .. first .. ' ' .. due)\n"
    "redis.call('ZADD', KEYS[1], due, ARGV[2])\n"
    "return 1\n";

static struct {
    const config_t *cfg;
    pthread_t tid;
    int started;
    atomic_int stop;
    char me[33];  /* this replica's consumer name and lease value */
    char k_outbox[160], k_lease[160], k_retry[160], k_orgs[160], k_due[160], k_queue[160];
    atomic_long conns[MODE_COUNT][2]; /* the gauge; -1 until the first count */
    atomic_long delivered, failed, dropped;
    atomic_long waiting; /* stb_events_orgs_waiting; -1 until the first count */
    int grouped;  /* the consumer group is known to exist (an emptied Redis loses it) */
} g;

/* ===== Pure helpers ===== */

void events_signature(const char *secret, long t, const char *body, size_t len, char *out, size_t cap)
{
    buf_t m = {0};
    unsigned char mac[32];
    char hex[65];
    buf_printf(&m, "%ld.", t);
    buf_append(&m, body, len);
    hmac_sha256(secret, strlen(secret), m.p, m.len, mac);
    hex_encode(mac, sizeof(mac), hex);
    snprintf(out, cap, "t=%ld,v1=%s", t, hex);
    buf_free(&m);
}

long events_backoff_ms(int n, long max_ms, double r)
{
    long d = 1000;
    for (int i = 1; i < n && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    long j = (long)((double)d * (0.5 + r));
    return j < max_ms ? j : max_ms; /* the jitter never passes the cap */
}

/* Sleep up to ms, in short steps, unless stopped. */
static void nap(long ms)
{
    while (ms > 0 && !atomic_load(&g.stop)) {
        long step = ms > 100 ? 100 : ms;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static double uniform(void)
{
    unsigned char b[4];
    rand_bytes(b, sizeof(b));
    return (double)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]) / 4294967296.0;
}

/* ===== Redis ===== */

static redisContext *connect_redis(void)
{
    const config_t *cfg = g.cfg;
    struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    redisContext *c = cfg->redis_unix != NULL ? redisConnectUnixWithTimeout(cfg->redis_unix, tv)
                                              : redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);
    redisReply *r;
    if (c == NULL || c->err)
        goto fail;
    tv.tv_sec += READ_BLOCK_MS / 1000; /* a blocking read waits READ_BLOCK_MS on top */
    redisSetTimeout(c, tv);
    if (cfg->redis_password != NULL) {
        r = redisCommand(c, "AUTH %s", cfg->redis_password);
        int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        if (r != NULL)
            freeReplyObject(r);
        if (!ok)
            goto fail;
    }
    if (cfg->redis_db != 0) {
        r = redisCommand(c, "SELECT %d", cfg->redis_db);
        int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        if (r != NULL)
            freeReplyObject(r);
        if (!ok)
            goto fail;
    }
    return c;
fail:
    if (c != NULL)
        redisFree(c);
    return NULL;
}

/* A command; NULL (and c dropped) on a transport failure. */
static redisReply *cmd(redisContext **c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(*c, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        redisFree(*c);
        *c = NULL;
    }
    return r;
}

/* ===== The gauge ===== */

/* fleet_sync (store/audit.h) for n orgs: in one script, so that an org's check and its
 * index entry are one step (a key created meanwhile is never undone). */
static void sync_orgs(redisContext **c, const char *const *orgs, size_t n)
{
    if (n == 0 || *c == NULL)
        return;
    const char **argv = calloc(n + 4, sizeof(char *));
    size_t *lens = calloc(n + 4, sizeof(size_t));
    if (argv == NULL || lens == NULL)
        abort();
    argv[0] = "EVAL";
    argv[1] = AUDIT_LUA_FLEET_SYNC;
    argv[2] = "0";
    argv[3] = g.cfg->redis_prefix;
    for (size_t i = 0; i < n; i++)
        argv[4 + i] = orgs[i];
    for (size_t i = 0; i < n + 4; i++)
        lens[i] = strlen(argv[i]);
    redisReply *z = redisCommandArgv(*c, (int)(n + 4), argv, lens);
    if (z == NULL) {
        redisFree(*c);
        *c = NULL;
    } else {
        freeReplyObject(z);
    }
    free(argv);
    free(lens);
}

/* The org id of a key name "<prefix><kind><org18><rest>" into org, or -1. */
static int org_of_key(const char *key, size_t klen, const char *kind, char org[ORGID_LEN + 1])
{
    size_t plen = strlen(g.cfg->redis_prefix) + strlen(kind);
    if (key == NULL || klen < plen + ORGID_LEN || key[plen + ORGID_LEN] != ':')
        return -1;
    memcpy(org, key + plen, ORGID_LEN);
    org[ORGID_LEN] = '\0';
    return 0;
}

/* SCAN (or ZSCAN of the index, kind NULL) page by page, fleet_sync on each page's orgs:
 * orgs with API keys stored by an earlier version join the index, orgs left with
 * nothing leave it. */
static void sync_pass(redisContext **c, const char *kind, const char *suffix)
{
    char cursor[32] = "0", pattern[200];
    snprintf(pattern, sizeof(pattern), "%s%s*%s", g.cfg->redis_prefix, kind ? kind : "", suffix);
    do {
        redisReply *r = kind ? cmd(c, "SCAN %s MATCH %s COUNT 500", cursor, pattern)
                             : cmd(c, "ZSCAN %s %s COUNT 500", g.k_orgs, cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY) {
            if (r != NULL)
                freeReplyObject(r);
            return;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str ? r->element[0]->str : "0");
        redisReply *keys = r->element[1];
        char(*orgs)[ORGID_LEN + 1] = calloc(keys->elements + 1, sizeof(*orgs));
        const char **ptrs = calloc(keys->elements + 1, sizeof(char *));
        size_t n = 0;
        if (orgs == NULL || ptrs == NULL)
            abort();
        /* ZSCAN answers member, score, member, score … */
        for (size_t i = 0; i < keys->elements; i += kind ? 1 : 2) {
            redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING)
                continue;
            if (kind ? org_of_key(k->str, k->len, kind, orgs[n]) != 0 : k->len != ORGID_LEN)
                continue;
            if (!kind)
                memcpy(orgs[n], k->str, ORGID_LEN + 1);
            ptrs[n] = orgs[n];
            n++;
        }
        sync_orgs(c, ptrs, n);
        free(orgs);
        free(ptrs);
        freeReplyObject(r);
    } while (*c != NULL && strcmp(cursor, "0") != 0);
}

static void count_connections(redisContext **c)
{
    long n[MODE_COUNT][2] = {{0}};
    char cursor[32] = "0", pattern[200];
    size_t plen = strlen(g.cfg->redis_prefix) + 5;
    snprintf(pattern, sizeof(pattern), "%sconn:*", g.cfg->redis_prefix);
    do {
        redisReply *r = cmd(c, "SCAN %s MATCH %s COUNT 500", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r != NULL)
                freeReplyObject(r);
            return;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str ? r->element[0]->str : "0");
        redisReply *keys = r->element[1];
        size_t nk = keys->type == REDIS_REPLY_ARRAY ? keys->elements : 0;
        const char **argv = calloc(nk + 1, sizeof(char *));
        const char **orgs = calloc(nk + 1, sizeof(char *));
        char(*orgbuf)[ORGID_LEN + 1] = calloc(nk + 1, sizeof(*orgbuf));
        size_t norgs = 0;
        if (argv == NULL || orgs == NULL || orgbuf == NULL)
            abort();
        /* one MGET for the page's values; their orgs join the fleet index (fleet_sync) */
        argv[0] = "MGET";
        for (size_t i = 0; i < nk; i++)
            argv[1 + i] = keys->element[i]->str ? keys->element[i]->str : "";
        redisReply *v = nk ? redisCommandArgv(*c, (int)nk + 1, argv, NULL) : NULL;
        for (size_t i = 0; v != NULL && v->type == REDIS_REPLY_ARRAY && i < nk && i < v->elements; i++) {
            const char *key = keys->element[i]->str;
            char *org = orgbuf[norgs];
            redisReply *e = v->element[i];
            if (key == NULL || org_of_key(key, strlen(key), KEY_CONN_KIND, org) != 0)
                continue;
            int mode = mode_parse(key + plen + ORGID_LEN + 1, strlen(key + plen + ORGID_LEN + 1));
            conn_record_t rec;
            long ver;
            if (mode < 0 || e->type != REDIS_REPLY_STRING)
                continue;
            orgs[norgs++] = org;
            if (store_conn_open(g.cfg, org, mode, e->str, e->len, &ver, &rec) == STORE_OK) {
                n[mode][rec.status == CONN_CONNECTED ? 0 : 1]++;
                conn_record_clear(&rec);
            }
        }
        if (nk > 0 && v == NULL) {
            redisFree(*c);
            *c = NULL;
        }
        if (v != NULL)
            freeReplyObject(v);
        sync_orgs(c, orgs, norgs);
        free(argv);
        free(orgs);
        free(orgbuf);
        freeReplyObject(r);
    } while (*c != NULL && strcmp(cursor, "0") != 0);
    if (*c == NULL)
        return;
    for (int m = 0; m < MODE_COUNT; m++)
        for (int s = 0; s < 2; s++)
            atomic_store(&g.conns[m][s], n[m][s]);
    sync_pass(c, "org:", ":keys");
    sync_pass(c, NULL, "");
    if (*c != NULL && g.cfg->events_url != NULL) {
        redisReply *r = cmd(c, "EVAL %s 2 %s %s %s", LUA_WAITING, g.k_due, g.k_retry, g.k_queue);
        if (r != NULL && r->type == REDIS_REPLY_INTEGER)
            atomic_store(&g.waiting, (long)r->integer);
        if (r != NULL)
            freeReplyObject(r);
    }
}

/* ===== Delivery ===== */

static int on_progress(void *p, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    return atomic_load(&g.stop) ? 1 : 0;
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    return s * n;
}

/* POST body; returns the HTTP status, 0 for a transport failure or timeout. */
static long post(const char *body, size_t len)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char sig[128], hdr[160];
    long status = 0;
    if (h == NULL)
        return 0;
    events_signature(g.cfg->events_secret, (long)time(NULL), body, len, sig, sizeof(sig));
    snprintf(hdr, sizeof(hdr), "Broker-Signature: %s", sig);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, hdr);
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, g.cfg->events_url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)EVENTS_POST_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "stripe-token-broker/" BROKER_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return status;
}

static void eval_done(redisContext **c, const char *org, const char *id)
{
    redisReply *r = cmd(c, "EVAL %s 3 %s %s %s %s %s %s %s", LUA_DONE, g.k_due, g.k_retry, g.k_lease, g.k_queue, org,
                        id, g.me);
    if (r != NULL)
        freeReplyObject(r);
}

/* Deliver org's head entry head ("<entry id> <JSON>"); retry is its retry state
 * ("<attempts> <first ms> <next ms>", "" before the first failure), now Redis's time. */
static void attempt(redisContext **c, const char *org, const char *head, size_t hlen, const char *retry, long long now)
{
    const char *sp = memchr(head, ' ', hlen);
    char id[48], st[16], att[16], backoff[24], first_s[24] = "";
    int n = 0;
    long long first = 0, next = 0;
    if (sp == NULL || (size_t)(sp - head) >= sizeof(id)) { /* not an entry of ours: dropped unsent */
        if (hlen < sizeof(id)) {
            memcpy(id, head, hlen);
            id[hlen] = '\0';
            eval_done(c, org, id); /* pops a head equal to id */
        }
        return;
    }
    snprintf(id, sizeof(id), "%.*s", (int)(sp - head), head);
    if (retry[0] != '\0' && sscanf(retry, "%d %lld %lld", &n, &first, &next) >= 2)
        snprintf(first_s, sizeof(first_s), "%lld", first);
    else
        n = 0;
    long status = post(sp + 1, hlen - (size_t)(sp + 1 - head));
    snprintf(st, sizeof(st), "%ld", status);
    if (status >= 200 && status < 300) {
        atomic_fetch_add(&g.delivered, 1);
        eval_done(c, org, id);
        return;
    }
    if (atomic_load(&g.stop))
        return;
    atomic_fetch_add(&g.failed, 1);
    n++;
    snprintf(att, sizeof(att), "%d", n);
    if (first_s[0] != '\0' && now - first > (long long)EVENTS_GIVE_UP_S * 1000) {
        log_event(LOG_ERROR, "event not delivered for 48 hours: dropped", "org_id", org, "event_entry", id, "attempts",
                  att, "http_status", st, NULL);
        atomic_fetch_add(&g.dropped, 1);
        eval_done(c, org, id);
        return;
    }
    snprintf(backoff, sizeof(backoff), "%ld", events_backoff_ms(n, (long)g.cfg->events_retry_max_s * 1000, uniform()));
    log_event(LOG_WARN, "event delivery failed; will retry", "org_id", org, "event_entry", id, "attempts", att,
              "http_status", st, NULL);
    redisReply *r = cmd(c, "EVAL %s 3 %s %s %s %s %s %s %s %s %s %s", LUA_RETRY, g.k_due, g.k_retry, g.k_lease,
                        g.k_queue, org, id, g.me, att, backoff, first_s);
    if (r != NULL)
        freeReplyObject(r);
}

/* Wait up to ms for a new entry of the stream (read into this consumer's pending list:
 * the next ingest moves it, or, should this replica die first, the next holder's). */
static void wait_new(redisContext **c, long long ms)
{
    if (ms > READ_BLOCK_MS)
        ms = READ_BLOCK_MS;
    if (ms < 1)
        ms = 1;
    redisReply *r = cmd(c, "XREADGROUP GROUP %s %s COUNT 1 BLOCK %lld STREAMS %s >", GROUP, g.me, ms, g.k_outbox);
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        g.grouped = 0;
    if (r != NULL)
        freeReplyObject(r);
}

/* One step of the lease holder: move new entries into the per-org queues, then deliver
 * the head of the org due first, or wait until one is due or a new entry comes. */
static void deliver_step(redisContext **c)
{
    redisReply *r = cmd(c, "EVAL %s 2 %s %s %s %s %s %d", LUA_INGEST, g.k_outbox, g.k_due, GROUP, g.me, g.k_queue,
                        EVENTS_INGEST_BATCH);
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR) { /* NOGROUP: Redis was emptied or restarted */
        if (strstr(r->str, "NOGROUP") != NULL)
            g.grouped = 0;
        else
            log_event(LOG_ERROR, "events out: cannot read the outbox", "error", r->str, NULL);
        freeReplyObject(r);
        nap(1000);
        return;
    }
    freeReplyObject(r);
    r = cmd(c, "EVAL %s 2 %s %s %s", LUA_PICK, g.k_due, g.k_retry, g.k_queue);
    if (r == NULL)
        return;
    /* {} | {org, wait} | {org, 0, head, retry, now} */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 5 && r->element[0]->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_STRING && r->element[3]->type == REDIS_REPLY_STRING &&
        r->element[4]->type == REDIS_REPLY_INTEGER) {
        attempt(c, r->element[0]->str, r->element[2]->str, r->element[2]->len, r->element[3]->str,
                r->element[4]->integer);
        freeReplyObject(r);
        return;
    }
    long long wait = READ_BLOCK_MS;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER)
        wait = r->element[1]->integer;
    else if (r->type == REDIS_REPLY_ERROR)
        log_event(LOG_ERROR, "events out: cannot read the queues", "error", r->str, NULL);
    freeReplyObject(r);
    wait_new(c, wait);
}

static void *run(void *arg)
{
    redisContext *c = NULL;
    time_t gauge_due = 0;
    int held = 0;
    char lease_ms[16];
    snprintf(lease_ms, sizeof(lease_ms), "%d", EVENTS_LEASE_MS);
    while (!atomic_load(&g.stop)) {
        if (c == NULL) {
            g.grouped = 0;
            if ((c = connect_redis()) == NULL) {
                nap(1000);
                continue;
            }
        }
        if (time(NULL) >= gauge_due) {
            count_connections(&c);
            gauge_due = time(NULL) + EVENTS_GAUGE_EVERY_S;
            continue;
        }
        if (g.cfg->events_url == NULL) {
            nap(1000);
            continue;
        }
        redisReply *r;
        if (!g.grouped) {
            r = cmd(&c, "XGROUP CREATE %s %s 0 MKSTREAM", g.k_outbox, GROUP);
            g.grouped = r != NULL && (r->type != REDIS_REPLY_ERROR || strstr(r->str, "BUSYGROUP") != NULL);
            if (r != NULL)
                freeReplyObject(r);
            if (!g.grouped) {
                nap(1000);
                continue;
            }
        }
        r = cmd(&c, "EVAL %s 1 %s %s %s", LUA_LEASE, g.k_lease, g.me, lease_ms);
        int now_held = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        if (r != NULL)
            freeReplyObject(r);
        if (now_held != held)
            log_event(LOG_INFO, now_held ? "events out: this replica delivers" : "events out: another replica delivers",
                      NULL);
        held = now_held;
        if (!held) {
            nap(1000);
            continue;
        }
        deliver_step(&c);
    }
    if (c != NULL) {
        if (held) { /* hand over at once rather than after the lease */
            redisReply *r = redisCommand(c, "EVAL %s 1 %s %s", "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                                              "redis.call('DEL', KEYS[1]) end return 1",
                                         g.k_lease, g.me);
            if (r != NULL)
                freeReplyObject(r);
        }
        redisFree(c);
    }
    return NULL;
}

int events_start(const config_t *cfg)
{
    unsigned char rnd[16];
    g.cfg = cfg;
    atomic_store(&g.stop, 0);
    rand_bytes(rnd, sizeof(rnd));
    hex_encode(rnd, sizeof(rnd), g.me);
    snprintf(g.k_outbox, sizeof(g.k_outbox), "%s" KEY_OUTBOX, cfg->redis_prefix);
    snprintf(g.k_lease, sizeof(g.k_lease), "%s" KEY_OUTBOX_LEASE, cfg->redis_prefix);
    snprintf(g.k_retry, sizeof(g.k_retry), "%s" KEY_OUTBOX_RETRY, cfg->redis_prefix);
    snprintf(g.k_orgs, sizeof(g.k_orgs), "%s" KEY_ORGS, cfg->redis_prefix);
    snprintf(g.k_due, sizeof(g.k_due), "%s" KEY_OUTBOX_DUE, cfg->redis_prefix);
    snprintf(g.k_queue, sizeof(g.k_queue), "%s" KEY_OUTBOX_QUEUE, cfg->redis_prefix);
    for (int m = 0; m < MODE_COUNT; m++)
        for (int s = 0; s < 2; s++)
            atomic_store(&g.conns[m][s], -1);
    atomic_store(&g.waiting, -1);
    if (pthread_create(&g.tid, NULL, run, NULL) != 0)
        return -1;
    g.started = 1;
    return 0;
}

void events_stop(void)
{
    if (!g.started)
        return;
    atomic_store(&g.stop, 1);
    pthread_join(g.tid, NULL);
    g.started = 0;
}

void events_render_metrics(buf_t *out)
{
    static const char *const st[2] = {"connected", "reauthorization_required"};
    buf_puts(out, "# HELP stb_connections Stored connections by mode and status (counted every 30 s).\n"
                  "# TYPE stb_connections gauge\n");
    for (int m = 0; m < MODE_COUNT; m++)
        for (int s = 0; s < 2; s++) {
            long v = atomic_load(&g.conns[m][s]);
            if (v >= 0)
                buf_printf(out, "stb_connections{mode=\"%s\",status=\"%s\"} %ld\n", mode_name(m), st[s], v);
        }
    if (g.cfg != NULL && g.cfg->events_url != NULL) {
        buf_puts(out, "# HELP stb_events_deliveries_total Attempts to deliver events out, by outcome.\n"
                      "# TYPE stb_events_deliveries_total counter\n");
        buf_printf(out, "stb_events_deliveries_total{outcome=\"delivered\"} %ld\n", atomic_load(&g.delivered));
        buf_printf(out, "stb_events_deliveries_total{outcome=\"failed\"} %ld\n", atomic_load(&g.failed));
        buf_printf(out, "stb_events_deliveries_total{outcome=\"dropped\"} %ld\n", atomic_load(&g.dropped));
        long w = atomic_load(&g.waiting);
        if (w >= 0)
            buf_printf(out, "# HELP stb_events_orgs_waiting Orgs whose next event was refused and waits for a retry "
                            "(counted every 30 s).\n# TYPE stb_events_orgs_waiting gauge\nstb_events_orgs_waiting %ld\n",
                       w);
    }
}
