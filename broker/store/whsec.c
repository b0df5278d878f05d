/* whsec.c — the commands and scripts of webhook signing secrets (see whsec.h).
 * Owns: the scripts (KEYS then ARGV written once here). Never: talks to Redis (callers
 * send), logs, or sees a secret in clear. Tested by tests/unit/test_store_flows.c. */
#include "store/whsec.h"
#include "core/mode.h"
#include "store/audit.h"
#include "store/keys.h"

/* KEYS: the secret's key. ARGV: the value, then the audit tail. */
static const char LUA_SET[] = AUDIT_LUA "redis.call('SET', KEYS[1], ARGV[1])\n"
                                        "audit_tail()\n"
                                        "return 1\n";
/* KEYS: the secret's key; ARGV: the audit tail (recorded only when there was a secret). */
static const char LUA_DEL[] = AUDIT_LUA "if redis.call('DEL', KEYS[1]) == 1 then audit_tail() end\n"
                                        "return 1\n";

void store_whsec_get(store_cmd_t *c, const char *prefix, const char *org, int mode)
{
    store_cmd_begin(c, "GET");
    store_cmd_addf(c, "%s" KEY_WHSEC, prefix, org, mode_name(mode));
}

void store_whsec_put(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *value,
                     const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_SET, 1);
    store_cmd_addf(c, "%s" KEY_WHSEC, prefix, org, mode_name(mode));
    store_cmd_adds(c, value);
    store_cmd_audit_tail(c, audit);
}

void store_whsec_delete(store_cmd_t *c, const char *prefix, const char *org, int mode, const store_audit_t *audit)
{
    store_cmd_eval(c, LUA_DEL, 1);
    store_cmd_addf(c, "%s" KEY_WHSEC, prefix, org, mode_name(mode));
    store_cmd_audit_tail(c, audit);
}
