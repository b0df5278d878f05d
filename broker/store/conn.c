/* conn.c — every Lua script that writes a connection record, and the commands that run
 * them (see conn.h, proto/redis.md).
 *
 * Owns: the scripts; the argv layout of each (KEYS, then ARGV), written once here.
 * Each script starts with the prelude PRELUDE: next_version (the org's version counter)
 * and audit(na, out), which records the optional audit event with store/audit.h's
 * AUDIT_LUA: when the builder was given one, its AUDIT_TAIL_ARGS arguments are
 * ARGV[na + 1 …] (na: the script's own argument count); out == false leaves out its
 * out-event. A script calls audit only once its change is written.
 * Never: talks to Redis (callers send the commands), logs, or holds a token in clear
 * (records arrive sealed). Tested by tests/unit/test_store_conn.c (every script against a
 * real redis-server) and, through the routes and the token service, tests/it/. */
#include "store/conn.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "store/audit.h"
#include "store/keys.h"

/* ===== The scripts ===== */

/* next_version(conn_key, cur): the INCR of the org's counter cver:<org> (named from the
 * conn key, so callers pass no extra key; fine on one Redis with or without replicas, not
 * on Redis Cluster, which the broker does not support), never below cur + 1. The counter
 * is never deleted, so a version never repeats for a key, not even across delete and
 * re-authorize: a writer that compares versions cannot mistake a re-created record for
 * the one it read. The pattern spells KEY_CONN and KEY_CVER (store/keys.h). */
#define PRELUDE                                                              \
    "local function next_version(conn_key, cur)\n"                           \
    "  local ck = string.gsub(conn_key, 'conn:([^:]+):[^:]+$', 'cver:%1')\n" \
    "  local v = redis.call('INCR', ck)\n"                                   \
    "  if v <= cur then v = cur + 1; redis.call('SET', ck, v) end\n"         \
    "  return v\n"                                                           \
    "end\n"                                                                  \
    AUDIT_LUA                                                                \
    "local function audit(na, out)\n"                                        \
    "  if #ARGV < na + 5 then return end\n"                                  \
    "  local okey = ARGV[na + 4]\n"                                          \
    "  if out == false then okey = '' end\n"                                 \
    "  audit_add(ARGV[na + 1], ARGV[na + 2], ARGV[na + 3], okey, ARGV[na + 5])\n" \
    "end\n"

/* KEYS: conn, acct index, drop's conn, drop's acct index. ARGV: sealed, index member or
 * '', expected version or '*', drop's version or '', drop's index member. */
static const char LUA_PUT[] = PRELUDE
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ver = 0\n"
    "if cur then ver = tonumber(string.match(cur, '^(%d+):')) or 0 end\n"
    "if ARGV[3] ~= '*' and tonumber(ARGV[3]) ~= ver then return -1 end\n"
    "ver = next_version(KEYS[1], ver)\n"
    "redis.call('SET', KEYS[1], ver .. ':' .. ARGV[1])\n"
    "if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end\n"
    "local dropped = 0\n"
    "if ARGV[4] ~= '' then\n"
    "  local o = redis.call('GET', KEYS[3])\n"
    "  if o and tonumber(string.match(o, '^(%d+):')) == tonumber(ARGV[4]) then\n"
    "    redis.call('DEL', KEYS[3])\n"
    "    redis.call('SREM', KEYS[4], ARGV[5])\n"
    "    dropped = 1\n"
    "  end\n"
    "end\n"
    "audit(5)\n"
    "return {ver, dropped}\n";

/* KEYS: conn, acct index, other conn, acct index. ARGV: member or '', other's member or
 * '' (no other connection). */
static const char LUA_DROP[] = PRELUDE
    "redis.call('DEL', KEYS[1])\n"
    "if ARGV[1] ~= '' then redis.call('SREM', KEYS[2], ARGV[1]) end\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  redis.call('SREM', KEYS[4], ARGV[2])\n"
    "end\n"
    "audit(2)\n"
    "return 1\n";

/* KEYS: n conns, event. ARGV: n, then old value and new sealed record per conn, then the
 * event's TTL. */
static const char LUA_REVOKE[] = PRELUDE
    "local n = tonumber(ARGV[1])\n"
    "for i = 1, n do\n"
    "  if redis.call('GET', KEYS[i]) ~= ARGV[2 * i] then return -1 end\n"
    "end\n"
    "for i = 1, n do\n"
    "  local ver = tonumber(string.match(ARGV[2 * i], '^(%d+):')) or 0\n"
    "  redis.call('SET', KEYS[i], next_version(KEYS[i], ver) .. ':' .. ARGV[2 * i + 1])\n"
    "end\n"
    "redis.call('SET', KEYS[n + 1], '1', 'EX', ARGV[2 * n + 2])\n"
    "for i = 1, n do audit(2 * n + 2 + 5 * (i - 1)) end\n"
    "return n\n";

/* KEYS: the value's key. ARGV: old value, new value. */
static const char LUA_RESEAL[] = PRELUDE
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[2])\n"
    "  audit(2)\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* KEYS: target conn, lock, source conn, cooldown. ARGV: seen version, owner, lease ms. */
static const char LUA_ACQUIRE[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ver = cur and tonumber(string.match(cur, '^(%d+):')) or 0\n"
    "if ver ~= tonumber(ARGV[1]) then return {0, cur or false} end\n"
    "if redis.call('EXISTS', KEYS[4]) == 1 then return {3, cur or false} end\n"
    "if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then\n"
    "  return {1, cur or false, redis.call('GET', KEYS[3]) or false}\n"
    "end\n"
    "return {2}\n";

/* KEYS: lock. ARGV: owner, lease ms. */
static const char LUA_RENEW[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                "end\n"
                                "return 0\n";

/* KEYS: conn to write, lock, acct index, cooldown, source conn. ARGV: sealed or '',
 * expected version, owner, index member or '', cooldown ms, expected source version or
 * '', '1' when the write needs no lease, the audit kind ('ok', 'dead', 'fail' or ''),
 * the refresh.failing threshold in seconds. failing:<org>:<mode> (KEY_FAILING) is
 * named from the conn key, like cver. */
static const char LUA_COMMIT[] = PRELUDE
    "local owner = redis.call('GET', KEYS[2]) == ARGV[3]\n"
    "if not owner and ARGV[7] ~= '1' then return -2 end\n"
    "local fk = (string.gsub(KEYS[1], 'conn:([^:]+):([^:]+)$', 'failing:%1:%2'))\n"
    "local res = 0\n"
    "if ARGV[1] ~= '' then\n"
    "  local cur = redis.call('GET', KEYS[1])\n"
    "  local ver = cur and tonumber(string.match(cur, '^(%d+):')) or 0\n"
    "  local ok = ver == tonumber(ARGV[2])\n"
    "  if ok and ARGV[6] ~= '' then\n"
    "    local src = redis.call('GET', KEYS[5])\n"
    "    ok = (src and tonumber(string.match(src, '^(%d+):')) or 0) == tonumber(ARGV[6])\n"
    "  end\n"
    "  if ok then\n"
    "    res = next_version(KEYS[1], ver)\n"
    "    redis.call('SET', KEYS[1], res .. ':' .. ARGV[1])\n"
    "    if ARGV[4] ~= '' then redis.call('SADD', KEYS[3], ARGV[4]) end\n"
    "    local was = redis.call('GET', fk)\n"
    "    if was then redis.call('DEL', fk) end\n"
    "    audit(9)\n" /* an 'ok' write's connection.recovered: sent by AUDIT_LUA after an outage only */
    "  else res = -1 end\n"
    "elseif owner and ARGV[8] == 'fail' then\n"
    "  local now = tonumber(redis.call('TIME')[1])\n"
    "  local v = redis.call('GET', fk)\n"
    "  if not v then v = tostring(now); redis.call('SET', fk, v, 'EX', 604800) end\n"
    "  local first = tonumber(string.match(v, '^(%d+)')) or now\n"
    "  local send = string.find(v, ':sent', 1, true) == nil and now - first >= tonumber(ARGV[9])\n"
    "  if send then redis.call('SET', fk, first .. ':sent', 'EX', 604800) end\n"
    "  audit(9, send)\n"
    "elseif owner then audit(9) end\n"
    "if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], '1', 'PX', ARGV[5]) end\n"
    "if owner then redis.call('DEL', KEYS[2]) end\n"
    "return res\n";

/* ===== Building commands (store/cmd.h) ===== */

static void conn_key(store_cmd_t *c, const char *prefix, const char *org, int mode)
{
    char k[KEY_MAX];
    store_cmd_add(c, k, keys_conn(k, prefix, org, mode));
}

static void member(store_cmd_t *c, const char *org, int mode)
{
    char m[KEYS_MEMBER_MAX + 1];
    keys_member(m, org, mode);
    store_cmd_adds(c, m);
}

/* ===== Connection records ===== */

void store_conn_get(store_cmd_t *c, const char *prefix, const char *org, int mode)
{
    store_cmd_begin(c, "GET");
    conn_key(c, prefix, org, mode);
}

void store_conn_put(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *sealed,
                    const char *acct, long expected, const store_conn_drop_t *drop, const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_PUT, 4);
    conn_key(c, prefix, org, mode);
    store_cmd_addf(c, "%s" KEY_ACCT, prefix, acct != NULL ? acct : "");
    if (drop != NULL) {
        conn_key(c, prefix, org, drop->mode);
        store_cmd_addf(c, "%s" KEY_ACCT, prefix, drop->acct);
    } else {
        conn_key(c, prefix, org, mode); /* placeholders: never touched */
        store_cmd_addf(c, "%s" KEY_ACCT, prefix, acct != NULL ? acct : "");
    }
    store_cmd_adds(c, sealed);
    if (acct != NULL)
        member(c, org, mode);
    else
        store_cmd_adds(c, "");
    if (expected == STORE_ANY_VERSION)
        store_cmd_adds(c, "*");
    else
        store_cmd_addf(c, "%ld", expected);
    if (drop != NULL) {
        store_cmd_addf(c, "%ld", drop->version);
        member(c, org, drop->mode);
    } else {
        store_cmd_adds(c, "");
        store_cmd_adds(c, "");
    }
    store_cmd_audit(c, audit);
}

void store_conn_drop(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *acct, int also_mode,
                     const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_DROP, 4);
    conn_key(c, prefix, org, mode);
    store_cmd_addf(c, "%s" KEY_ACCT, prefix, acct != NULL ? acct : "");
    conn_key(c, prefix, org, also_mode >= 0 ? also_mode : mode);
    store_cmd_addf(c, "%s" KEY_ACCT, prefix, acct != NULL ? acct : "");
    if (acct != NULL)
        member(c, org, mode);
    else
        store_cmd_adds(c, "");
    if (also_mode >= 0)
        member(c, org, also_mode);
    else
        store_cmd_adds(c, "");
    store_cmd_audit(c, audit);
}

void store_conn_revoke(store_cmd_t *c, const char *prefix, const store_conn_revoked_t *recs, size_t n,
                       const char *event_id, int ttl_s, const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_REVOKE, n + 1);
    for (size_t i = 0; i < n; i++)
        conn_key(c, prefix, recs[i].org, recs[i].mode);
    store_cmd_addf(c, "%s" KEY_EVT, prefix, event_id);
    store_cmd_addf(c, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        store_cmd_add(c, recs[i].old, recs[i].old_len);
        store_cmd_adds(c, recs[i].sealed);
    }
    store_cmd_addf(c, "%d", ttl_s);
    for (size_t i = 0; audit != NULL && i < n; i++)
        store_cmd_audit(c, &audit[i]);
}

void store_value_reseal(store_cmd_t *c, const char *key, const char *old_value, size_t old_len,
                        const char *new_value, const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_RESEAL, 1);
    store_cmd_adds(c, key);
    store_cmd_add(c, old_value, old_len);
    store_cmd_adds(c, new_value);
    store_cmd_audit(c, audit);
}

/* ===== The token service's lease ===== */

void store_lease_acquire(store_cmd_t *c, const char *prefix, const char *org, int mode, int source_mode,
                         long seen_version, const char *owner, long lease_ms)
{
    store_cmd_eval(c, LUA_ACQUIRE, 4);
    conn_key(c, prefix, org, mode);
    store_cmd_addf(c, "%s" KEY_LOCK, prefix, org, mode_name(mode));
    conn_key(c, prefix, org, source_mode);
    store_cmd_addf(c, "%s" KEY_COOL, prefix, org, mode_name(mode));
    store_cmd_addf(c, "%ld", seen_version);
    store_cmd_adds(c, owner);
    store_cmd_addf(c, "%ld", lease_ms);
}

void store_lease_renew(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *owner,
                       long lease_ms)
{
    store_cmd_eval(c, LUA_RENEW, 1);
    store_cmd_addf(c, "%s" KEY_LOCK, prefix, org, mode_name(mode));
    store_cmd_adds(c, owner);
    store_cmd_addf(c, "%ld", lease_ms);
}

void store_lease_commit(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *owner,
                        const store_lease_commit_t *w, const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_COMMIT, 5);
    conn_key(c, prefix, org, w->write_mode);
    store_cmd_addf(c, "%s" KEY_LOCK, prefix, org, mode_name(mode));
    store_cmd_addf(c, "%s" KEY_ACCT, prefix, w->acct != NULL ? w->acct : "");
    store_cmd_addf(c, "%s" KEY_COOL, prefix, org, mode_name(mode));
    conn_key(c, prefix, org, w->source_mode);
    store_cmd_adds(c, w->sealed);
    store_cmd_addf(c, "%ld", w->expected);
    store_cmd_adds(c, owner);
    if (w->acct != NULL)
        member(c, org, mode);
    else
        store_cmd_adds(c, "");
    store_cmd_addf(c, "%d", w->cooldown_ms);
    if (w->source_version >= 0)
        store_cmd_addf(c, "%ld", w->source_version);
    else
        store_cmd_adds(c, "");
    store_cmd_adds(c, w->without_lease ? "1" : "0");
    store_cmd_adds(c, w->audit_kind);
    store_cmd_addf(c, "%d", w->failing_s);
    store_cmd_audit(c, audit);
}
