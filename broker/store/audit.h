/* audit.h — the per-org audit trail and the events-out outbox in Redis (proto/openapi.yaml,
 * §4.5; proto/redis.md "Audit trail" and "Events out").
 *
 * An audit event is one entry of the Redis Stream P audit:<org18>; its stream id is its
 * id and its time. The entry has one field "e": the event as a JSON object without "id"
 * and "at" ({"type","mode"?,"actor","request_id"?,"details"}). It is written by the very
 * Lua script that makes the change it records (AUDIT_LUA below), so that no change goes
 * unrecorded and no event describes a change that did not happen. The same script trims
 * the stream by age (XADD … MINID now − BROKER_AUDIT_RETENTION_DAYS), re-checks the
 * org's place in the fleet index P orgs (fleet_sync: there while it has an API key or a
 * connection), and, for the changes that go out as events (deploy/salesforce/EVENTS.md),
 * appends the out-events to the outbox stream P outbox (delivered by events/).
 *
 * Nothing here holds a token, secret, key, code or cookie: callers pass ids only (key
 * ids, Stripe account ids, Stripe event ids, setup-session hashes).
 * Tested by tests/it/test_audit.py, tests/it/test_events.py, tests/it/test_fleet.py and
 * tests/unit/test_audit.c. */
#ifndef BROKER_STORE_AUDIT_H
#define BROKER_STORE_AUDIT_H
#include <stddef.h>
#include "config.h"
#include "store/cmd.h"

struct redis_loop;

#define AUDIT_PAGE_MAX 500
#define AUDIT_PAGE_DEFAULT 100
#define AUDIT_TAIL_ARGS 5

/* Lua: key_count(p, org), the org's API keys that still have their record; and
 * fleet_sync(p, org), which keeps the fleet index P orgs exact for one org: the org is in
 * it while it has an API key or a connection, and leaves it when it has neither (its
 * last key revoked with no connection, or its last connection deleted with no key).
 * p is BROKER_REDIS_PREFIX. */
#define AUDIT_LUA_FLEET                                                                  \
    "local function key_count(p, org)\n"                                                 \
    "  local n = 0\n"                                                                    \
    "  for _, id in ipairs(redis.call('SMEMBERS', p .. 'org:' .. org .. ':keys')) do\n"  \
    "    if redis.call('EXISTS', p .. 'key:' .. id) == 1 then n = n + 1 end\n"          \
    "  end\n"                                                                            \
    "  return n\n"                                                                       \
    "end\n"                                                                              \
    "local function fleet_sync(p, org)\n"                                                \
    "  if key_count(p, org) > 0 or redis.call('EXISTS', p .. 'conn:' .. org .. ':test',\n" \
    "                                         p .. 'conn:' .. org .. ':live') > 0 then\n" \
    "    redis.call('ZADD', p .. 'orgs', 'NX', 0, org)\n"                               \
    "  else\n"                                                                           \
    "    redis.call('ZREM', p .. 'orgs', org)\n"                                         \
    "  end\n"                                                                            \
    "end\n"

/* Lua prelude: audit_tail() writes the event the caller put into the last
 * AUDIT_TAIL_ARGS ARGV entries (see audit_tail_t); a script calls it exactly where its
 * change is certain (after the compare-and-set succeeded), and not at all otherwise. An
 * empty stream key means "no event" (a write that records nothing). A script that
 * changes several connections calls audit_add(five tail arguments) once for each.
 *
 * audit_add also re-checks the org's place in the fleet index (fleet_sync: the change is
 * already written), and appends the out-events, one per line of the out argument, to
 * the outbox. P outage:<org18>:<mode> remembers that a connection.reauthorization_required
 * or refresh.failing went out for that connection; a connection.recovered goes out only
 * while it is set, and clears it (so once per outage); connection.deleted clears it too
 * (for a derived connection deleted with it as well). */
#define AUDIT_LUA                                                                        \
    AUDIT_LUA_FLEET                                                                      \
    "local function audit_add(skey, ret, ev, okey, oev)\n"                               \
    "  if skey == '' then return end\n"                                                  \
    "  local t = redis.call('TIME')\n"                                                   \
    "  local min = tonumber(t[1]) - tonumber(ret)\n"                                     \
    "  if min < 0 then min = 0 end\n"                                                    \
    "  redis.call('XADD', skey, 'MINID', string.format('%d', min) .. '000', '*', 'e', ev)\n" \
    "  local org = string.match(skey, 'audit:([^:]+)$')\n"                               \
    "  local p = string.sub(skey, 1, #skey - #org - 6)\n"                                \
    "  fleet_sync(p, org)\n"                                                             \
    "  if okey == '' then return end\n"                                                  \
    "  for oe in string.gmatch(oev, '[^\\n]+') do\n"                                     \
    "    local ty = string.match(oe, '\"type\":\"([^\"]*)\"')\n"                         \
    "    local mk = p .. 'outage:' .. org .. ':' .. (string.match(oe, '\"mode\":\"(%a+)\"') or '')\n" \
    "    local send = true\n"                                                            \
    "    if ty == 'connection.recovered' then send = redis.call('DEL', mk) == 1\n"       \
    "    elseif ty == 'connection.reauthorization_required' or ty == 'refresh.failing' then\n" \
    "      redis.call('SET', mk, '1')\n"                                                 \
    "    elseif ty == 'connection.deleted' then\n"                                       \
    "      redis.call('DEL', mk)\n"                                                      \
    "      local dm = string.match(oe, '\"derived_deleted\":\"(%a+)\"')\n"              \
    "      if dm then redis.call('DEL', p .. 'outage:' .. org .. ':' .. dm) end\n"       \
    "    end\n"                                                                          \
    "    if send then redis.call('XADD', okey, '*', 'org', org, 'e', oe) end\n"          \
    "  end\n"                                                                            \
    "end\n"                                                                              \
    "local function audit_tail()\n"                                                      \
    "  local n = #ARGV\n"                                                                \
    "  audit_add(ARGV[n-4], ARGV[n-3], ARGV[n-2], ARGV[n-1], ARGV[n])\n"                 \
    "end\n"

/* A script that only records: KEYS none; ARGV the audit tail. For the proxy's
 * stripe.call, which records a Stripe call after Stripe answered and changes no state. */
#define AUDIT_LUA_RECORD AUDIT_LUA "audit_tail()\nreturn 1\n"

/* The fleet index: KEYS[1]=P orgs; ARGV[1]=prefix, ARGV[2]=cursor (the last org of the
 * previous page, "" for the first), ARGV[3]=count. Returns AUDIT_FLEET_COLS values per
 * org, in org-id order: org, conn test, conn live ("" when absent), last used test, last
 * used live (Unix seconds, "" when never), number of API keys (integer: key_count, the
 * keys GET …/api-keys lists). The fleet view and the CLI's orgs. */
#define AUDIT_FLEET_COLS 6
extern const char AUDIT_LUA_FLEET_PAGE[];
/* The command that runs it for one page of at most count orgs after cursor ("" or NULL:
 * the first page), the keys under prefix (store/cmd.h: the caller sends it). */
void audit_fleet_page(store_cmd_t *c, const char *prefix, const char *cursor, int count);
/* fleet_sync for each org of ARGV[2…]; ARGV[1]=prefix, no KEYS. Returns 1. The
 * background pass of events/ runs it on every org it finds (connections, API keys, the
 * index itself), so orgs stored by an earlier version join the index, and orgs left
 * with nothing leave it. */
extern const char AUDIT_LUA_FLEET_SYNC[];

/* Record that org's connection of mode was just used (getAccessToken, the proxy):
 * HSET P used:<org18> <mode> <unix time>, fire-and-forget on the worker's Redis
 * connection (r, a redis_loop_t), at most once a minute per worker thread per
 * connection (a small thread-local table of last write times). */
void audit_touch_used(struct redis_loop *r, const config_t *cfg, const char *org, int mode);

/* Who made a change (the audit event's "actor", proto/openapi.yaml). id may be NULL. */
typedef struct audit_actor {
    const char *kind; /* "admin", "api_key", "setup_session", "stripe", "broker" */
    const char *id;   /* key id, setup-session id, Stripe event id; never a secret */
} audit_actor_t;

/* The AUDIT_TAIL_ARGS arguments to append to a script's ARGV, malloc'd strings:
 * stream key, retention seconds, event JSON, outbox key ("" when none), out-event JSON. */
typedef struct audit_tail {
    char *argv[AUDIT_TAIL_ARGS];
} audit_tail_t;

/* The tail of a write that records nothing (every argument ""). */
void audit_tail_none(audit_tail_t *t);
/* The tail of event `type` for org (mode -1: none); details_json is a JSON object text
 * or NULL for {}; request_id may be NULL. out_type names the event out (deploy/salesforce/EVENTS.md) to send
 * as well (NULL: none; ignored when BROKER_EVENTS_URL is unset), out_data_json its "data"
 * (NULL: {}). A connection.authorized is followed by a connection.recovered (data: the
 * same plus "reason": "reauthorized") that AUDIT_LUA sends only after an outage. */
void audit_tail_make(audit_tail_t *t, const config_t *cfg, const char *org, const char *type, int mode,
                     const audit_actor_t *actor, const char *request_id, const char *details_json,
                     const char *out_type, const char *out_data_json);
void audit_tail_free(audit_tail_t *t);

/* Build "{"id":…,"at":…,<rest of e>}" from a stream entry id and its "e" field into out
 * (malloc'd, NUL-terminated). Returns 0, or -1 when the entry is not one of ours. */
int audit_entry_json(const char *id, size_t idlen, const char *e, size_t elen, char **out);
/* A cursor is a stream id "<ms>-<seq>" (digits). Returns 0 when s is one. */
int audit_cursor_valid(const char *s);
#endif
