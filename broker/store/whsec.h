/* whsec.h — an org's webhook signing secrets in Redis (proto/redis.md): whsec:<org18>:<mode>
 * = "<updated>:<sealed secret>" (store.h seals and opens the value). The scripts that
 * write them live in store/whsec.c; builders fill a store_cmd_t (store/cmd.h) that the
 * caller sends, and say what the reply is. A secret arrives here sealed, never in clear.
 * Tested by tests/unit/test_store_flows.c (each command against a real redis-server),
 * tests/it/test_token.py and tests/it/test_browser_flow.py. */
#ifndef BROKER_STORE_WHSEC_H
#define BROKER_STORE_WHSEC_H
#include "store/cmd.h"

/* The stored value of org/mode. Reply: "<updated>:<sealed>" or nil. */
void store_whsec_get(store_cmd_t *c, const char *prefix, const char *org, int mode);
/* Store value (store_whsec_seal's) as org/mode's secret, recording audit
 * (webhook_secret.set; NULL: nothing) in the same step. Reply: 1. */
void store_whsec_put(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *value,
                     const store_audit_t *audit);
/* Delete org/mode's secret, recording audit (webhook_secret.deleted) only when there was
 * one. Reply: 1. */
void store_whsec_delete(store_cmd_t *c, const char *prefix, const char *org, int mode, const store_audit_t *audit);
#endif
