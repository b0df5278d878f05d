/* apikeys.c — the scripts and commands of org API keys (see apikeys.h).
 * Owns: the key record's place (key:<id>, org:<org>:keys) and the scripts that write or
 * list them, KEYS then ARGV written once here. Never: talks to Redis (callers send), logs,
 * or sees an API key (records hold its SHA-256). Tested by tests/unit/test_store_flows.c
 * and tests/it/test_admin.py. */
#include "store/apikeys.h"
#include <stdlib.h>
#include <string.h>
#include "core/orgid.h"
#include "store/audit.h"
#include "store/keys.h"

/* KEYS: the record, the org's set. ARGV: record, key id, then the audit tail. */
static const char LUA_CREATE[] = AUDIT_LUA "redis.call('SET', KEYS[1], ARGV[1])\n"
                                           "redis.call('SADD', KEYS[2], ARGV[2])\n"
                                           "audit_tail()\n"
                                           "return 1\n";

/* KEYS: the org's set. ARGV: the prefix of a record's key ("<prefix>key:"). */
static const char LUA_LIST[] = "local ids = redis.call('SMEMBERS', KEYS[1])\n"
                               "local out = {}\n"
                               "for _, id in ipairs(ids) do\n"
                               "  local v = redis.call('GET', ARGV[1] .. id)\n"
                               "  if v then table.insert(out, id); table.insert(out, v) end\n"
                               "end\n"
                               "return out\n";

/* KEYS: the record, the org's set. ARGV: org, key id, then the audit tail. The record
 * starts with its org's 18 characters. */
static const char LUA_REVOKE[] = AUDIT_LUA "local v = redis.call('GET', KEYS[1])\n"
                                           "if not v or string.sub(v, 1, 18) ~= ARGV[1] then return 0 end\n"
                                           "redis.call('DEL', KEYS[1])\n"
                                           "redis.call('SREM', KEYS[2], ARGV[2])\n"
                                           "audit_tail()\n"
                                           "return 1\n";

void store_apikey_create(store_cmd_t *c, const char *prefix, const char *org, const char *key_id, const char *record,
                         const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_CREATE, 2);
    store_cmd_addf(c, "%s" KEY_APIKEY, prefix, key_id);
    store_cmd_addf(c, "%s" KEY_ORG_KEYS, prefix, org);
    store_cmd_adds(c, record);
    store_cmd_adds(c, key_id);
    store_cmd_audit_tail(c, audit);
}

void store_apikey_list(store_cmd_t *c, const char *prefix, const char *org)
{
    store_cmd_eval(c, LUA_LIST, 1);
    store_cmd_addf(c, "%s" KEY_ORG_KEYS, prefix, org);
    store_cmd_addf(c, "%s" KEY_APIKEY_KIND, prefix);
}

void store_apikey_revoke(store_cmd_t *c, const char *prefix, const char *org, const char *key_id,
                         const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_REVOKE, 2);
    store_cmd_addf(c, "%s" KEY_APIKEY, prefix, key_id);
    store_cmd_addf(c, "%s" KEY_ORG_KEYS, prefix, org);
    store_cmd_adds(c, org);
    store_cmd_adds(c, key_id);
    store_cmd_audit_tail(c, audit);
}

int store_apikey_created(const char *record, size_t len, long *created)
{
    /* "<org18>|<64 hex>|<created>" */
    if (len < ORGID_LEN + 1 + 64 + 2)
        return -1;
    *created = strtol(record + ORGID_LEN + 1 + 64 + 1, NULL, 10);
    return 0;
}
