/* store.h — the key schema and record formats in Redis (proto/redis.md, version 1).
 * Keys hold only ids and hashes; every secret value is sealed (core/seal.h) with the
 * record's identity as associated data. Every script that writes a connection record
 * takes its new version from STORE_LUA_NEXT_VERSION (versions never repeat), and
 * conditional writes compare it first (the fence of the exactly-once refresh). */
#ifndef BROKER_STORE_STORE_H
#define BROKER_STORE_STORE_H
#include <stddef.h>
#include "config.h"
#include "core/record.h"

#define TICKET_TTL_S 600
#define SESSION_TTL_S 1800
#define STATE_TTL_S 600
#define EVENT_TTL_S 86400

enum { STORE_OK = 0, STORE_ABSENT = 1, STORE_UNREADABLE = -1 };

/* Open a connection value "<version>:<sealed>" of org/mode. val NULL → STORE_ABSENT.
 * STORE_UNREADABLE is logged (the key name, never the value). */
int store_conn_open(const config_t *cfg, const char *org, int mode, const char *val, size_t len, long *version,
                    conn_record_t *out);
/* Seal a record for org/mode (malloc'd "1.<kid>.…", no version prefix). */
char *store_conn_seal(const config_t *cfg, const char *org, int mode, const conn_record_t *r);
/* Open a webhook secret value "<updated>:<sealed>". Returns STORE_OK (*secret malloc'd,
 * free with secure_free_str), STORE_ABSENT or STORE_UNREADABLE. */
int store_whsec_open(const config_t *cfg, const char *org, int mode, const char *val, size_t len, char **secret,
                     long *updated);
/* "<now>:<sealed secret>" (malloc'd). */
char *store_whsec_seal(const config_t *cfg, const char *org, int mode, const char *secret);

/* Lua prelude of every script that writes a connection record (a string literal to
 * put in front of the script). next_version(conn_key, cur) is the version of that
 * write: the INCR of the org's counter P cver:<org18> (named from the conn key, so
 * callers pass no extra key; fine on one Redis with or without replicas, not on Redis
 * Cluster, which the broker does not support), never below cur + 1. The counter is never deleted, so a
 * version never repeats for a key, not even across delete + re-authorize: a writer
 * that compares versions cannot mistake a re-created record for the one it read. */
#define STORE_LUA_NEXT_VERSION                                               \
    "local function next_version(conn_key, cur)\n"                           \
    "  local ck = string.gsub(conn_key, 'conn:([^:]+):[^:]+$', 'cver:%1')\n" \
    "  local v = redis.call('INCR', ck)\n"                                   \
    "  if v <= cur then v = cur + 1; redis.call('SET', ck, v) end\n"         \
    "  return v\n"                                                           \
    "end\n"

/* KEYS[1]=conn key, KEYS[2]=acct index key; ARGV[1]=sealed, ARGV[2]=index member
 * ("" for none), ARGV[3]=expected version or "*". Optionally, in the same write, another
 * connection dropped if it still has a version: KEYS[3]=its conn key, KEYS[4]=its acct
 * index key, ARGV[4]=that version, ARGV[5]=its index member. Returns {new version, 1 when
 * the other was dropped else 0}, or -1 when the expected version is not current.
 * ARGV ends with the AUDIT_TAIL_ARGS of the write's audit event (store/audit.h). */
extern const char STORE_LUA_CONN_PUT[];
/* KEYS[1]=conn key, KEYS[2]=acct index key; ARGV[1]=index member. Deletes both; with
 * KEYS[3], KEYS[4], ARGV[2]: the same for a derived connection. ARGV ends with the
 * AUDIT_TAIL_ARGS of the delete's audit event. */
extern const char STORE_LUA_CONN_DEL[];
/* KEYS[1]=P key:<key_id>, KEYS[2]=P org:<org18>:keys; ARGV[1]=record, ARGV[2]=key id, then
 * the audit tail (api_key.created). createApiKey and the CLI's create-api-key. */
extern const char STORE_LUA_KEY_CREATE[];
#endif
