/* store.c — record formats (see store.h, proto/redis.md).
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
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "%s%s%s:%s", cfg->redis_prefix, what, org, mode_name(mode));
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
        log_unreadable(cfg, KEY_CONN_KIND, org, mode, SEAL_ERR_FORMAT);
        return STORE_UNREADABLE;
    }
    if ((rc = seal_open(&cfg->keyring, sealed, slen, org, mode_name(mode), "connection", &pt, &ptlen)) != SEAL_OK) {
        log_unreadable(cfg, KEY_CONN_KIND, org, mode, rc);
        return STORE_UNREADABLE;
    }
    rc = conn_record_decode(pt, ptlen, out);
    secure_free(pt, ptlen);
    if (rc != 0) {
        log_unreadable(cfg, KEY_CONN_KIND, org, mode, SEAL_ERR_VERSION);
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
        log_unreadable(cfg, KEY_WHSEC_KIND, org, mode, SEAL_ERR_FORMAT);
        return STORE_UNREADABLE;
    }
    if ((rc = seal_open(&cfg->keyring, sealed, slen, org, mode_name(mode), "webhook_secret", secret, &ptlen)) !=
        SEAL_OK) {
        log_unreadable(cfg, KEY_WHSEC_KIND, org, mode, rc);
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
