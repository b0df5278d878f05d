/* apikeys.h — org API keys in Redis (proto/redis.md, "API keys"): the record
 * key:<key id> = "<org18>|<sha256 hex of the key>|<created>" (auth.h builds and checks
 * it) and the org's set org:<org18>:keys of key ids. Every script that writes or lists
 * them lives in store/apikeys.c; builders fill a store_cmd_t (store/cmd.h) that the
 * caller sends (createApiKey and the key routes through the request context, the CLI's
 * create-api-key through hiredis) and say what the reply is.
 * A key is never stored, only its hash; nothing here sees one. Tested by
 * tests/unit/test_store_flows.c (each script against a real redis-server),
 * tests/it/test_admin.py and tests/it/test_cache.py. */
#ifndef BROKER_STORE_APIKEYS_H
#define BROKER_STORE_APIKEYS_H
#include <stddef.h>
#include "store/cmd.h"

/* Store the key record `record` of org under key_id and add key_id to the org's set,
 * recording audit (api_key.created; NULL: nothing) in the same step. Reply: 1. */
void store_apikey_create(store_cmd_t *c, const char *prefix, const char *org, const char *key_id, const char *record,
                         const store_audit_t *audit);
/* The org's keys. Reply: a flat array key id, record, key id, record, … (ids whose record
 * is gone are left out). */
void store_apikey_list(store_cmd_t *c, const char *prefix, const char *org);
/* Delete key_id if it belongs to org (its record starts with org), recording audit
 * (api_key.revoked) only then. Reply: 1 deleted, 0 no such key of that org. */
void store_apikey_revoke(store_cmd_t *c, const char *prefix, const char *org, const char *key_id,
                         const store_audit_t *audit);
/* The creation time of a key record (len bytes): 0 with *created set, or -1 when it is
 * not a record of ours. */
int store_apikey_created(const char *record, size_t len, long *created);
#endif
