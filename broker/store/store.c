/* store.c — record formats and Lua scripts (see store.h, proto/redis.md).
 * Pure functions: formats values, never talks to Redis itself. Never logs a value,
 * only key names. Tested by tests/unit/test_store.c and the secrets-at-rest scan. */
#include "store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "log.h"
#include "store/audit.h"

const char STORE_LUA_CONN_PUT[] =
    STORE_LUA_NEXT_VERSION
    AUDIT_LUA
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ver = 0\n"
    "if cur then ver = tonumber(string.match(cur, '^(%d+):')) or 0 end\n"
    "if ARGV[3] ~= '*' and tonumber(ARGV[3]) ~= ver then return -1 end\n"
    "ver = next_version(KEYS[1], ver)\n"
    "redis.call('SET', KEYS[1], ver .. ':' .. ARGV[1])\n"
    "if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end\n"
    "audit_tail()\n"
    "local dropped = 0\n"
    "if KEYS[3] then\n"
    "  local o = redis.call('GET', KEYS[3])\n"
    "  if o and tonumber(string.match(o, '^(%d+):')) == tonumber(ARGV[4]) then\n"
    "    redis.call('DEL', KEYS[3])\n"
    "    redis.call('SREM', KEYS[4], ARGV[5])\n"
    "    dropped = 1\n"
    "  end\n"
    "end\n"
    "return {ver, dropped}\n";

const char STORE_LUA_CONN_DEL[] =
    AUDIT_LUA
    "redis.call('DEL', KEYS[1])\n"
    "if ARGV[1] ~= '' then redis.call('SREM', KEYS[2], ARGV[1]) end\n"
    "if KEYS[3] then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  if ARGV[2] ~= '' then redis.call('SREM', KEYS[4], ARGV[2]) end\n"
    "end\n"
    "audit_tail()\n"
    "return 1\n";

const char STORE_LUA_KEY_CREATE[] =
    AUDIT_LUA
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "redis.call('SADD', KEYS[2], ARGV[2])\n"
    "audit_tail()\n"
    "return 1\n";

/* Split "<number>:<rest>". Returns 0 or -1. */
static int split_num(const char *val, size_t len, long *num, const char **rest, size_t *restlen)
{
    long n = 0;
    size_t i = 0;
    for (; i < len && i < 19 && val[i] >= '0' && val[i] <= '9'; i++)
        n = n * 10 + (val[i] - '0');
    if (i == 0 || i >= len || val[i] != ':')
        return -1;
    *num = n;
    *rest = val + i + 1;
    *restlen = len - i - 1;
    return 0;
}

static void log_unreadable(const config_t *cfg, const char *what, const char *org, int mode, int rc)
{
    char key[128];
    snprintf(key, sizeof(key), "%s%s:%s:%s", cfg->redis_prefix, what, org, mode_name(mode));
    log_event(LOG_ERROR, "stored record cannot be opened", "key", key, "reason",
              rc == SEAL_ERR_KID       ? "no key for its key id"
              : rc == SEAL_ERR_VERSION ? "unknown format version"
              : rc == SEAL_ERR_AUTH    ? "authentication failed (tampered or copied)"
                                       : "malformed",
              NULL);
}

int store_conn_open(const config_t *cfg, const char *org, int mode, const char *val, size_t len, long *version,
                    conn_record_t *out)
{
    const char *sealed;
    size_t slen;
    char *pt = NULL;
    size_t ptlen = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if (val == NULL)
        return STORE_ABSENT;
    if (split_num(val, len, version, &sealed, &slen) != 0) {
        log_unreadable(cfg, "conn", org, mode, SEAL_ERR_FORMAT);
        return STORE_UNREADABLE;
    }
    if ((rc = seal_open(&cfg->keyring, sealed, slen, org, mode_name(mode), "connection", &pt, &ptlen)) != SEAL_OK) {
        log_unreadable(cfg, "conn", org, mode, rc);
        return STORE_UNREADABLE;
    }
    rc = conn_record_decode(pt, ptlen, out);
    secure_free(pt, ptlen);
    if (rc != 0) {
        log_unreadable(cfg, "conn", org, mode, SEAL_ERR_VERSION);
        conn_record_clear(out);
        return STORE_UNREADABLE;
    }
    return STORE_OK;
}

char *store_conn_seal(const config_t *cfg, const char *org, int mode, const conn_record_t *r)
{
    char *json = conn_record_encode(r);
    char *sealed = seal_seal(&cfg->keyring, org, mode_name(mode), "connection", json, strlen(json));
    secure_free_str(json);
    return sealed;
}

int store_whsec_open(const config_t *cfg, const char *org, int mode, const char *val, size_t len, char **secret,
                     long *updated)
{
    const char *sealed;
    size_t slen, ptlen;
    int rc;

    *secret = NULL;
    if (val == NULL)
        return STORE_ABSENT;
    if (split_num(val, len, updated, &sealed, &slen) != 0) {
        log_unreadable(cfg, "whsec", org, mode, SEAL_ERR_FORMAT);
        return STORE_UNREADABLE;
    }
    if ((rc = seal_open(&cfg->keyring, sealed, slen, org, mode_name(mode), "webhook_secret", secret, &ptlen)) !=
        SEAL_OK) {
        log_unreadable(cfg, "whsec", org, mode, rc);
        return STORE_UNREADABLE;
    }
    return STORE_OK;
}

char *store_whsec_seal(const config_t *cfg, const char *org, int mode, const char *secret)
{
    char *sealed = seal_seal(&cfg->keyring, org, mode_name(mode), "webhook_secret", secret, strlen(secret));
    size_t n = strlen(sealed) + 24;
    char *out = malloc(n);
    if (out == NULL)
        abort();
    snprintf(out, n, "%ld:%s", (long)time(NULL), sealed);
    free(sealed);
    return out;
}
