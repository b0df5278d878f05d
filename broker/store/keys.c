/* keys.c — builders and parsers of the key names of keys.h (the Redis key schema).
 * Owns: the spelling of "conn:<org>:<mode>", "key:<id>" and the "<org>:<mode>" member.
 * Never: puts a secret into a key name (ids and SHA-256 hashes only).
 * Tested by tests/unit/test_store.c. */
#include "store/keys.h"
#include <stdio.h>
#include <string.h>
#include "config.h"

static size_t cat(char *out, size_t n, const char *s, size_t len)
{
    if (n + len >= KEY_MAX)
        len = KEY_MAX - 1 - n;
    memcpy(out + n, s, len);
    return n + len;
}

size_t keys_conn(char out[KEY_MAX], const char *prefix, const char *org, int mode)
{
    const char *m = mode_name(mode);
    size_t n = cat(out, 0, prefix, strlen(prefix));
    n = cat(out, n, KEY_CONN_KIND, sizeof(KEY_CONN_KIND) - 1);
    n = cat(out, n, org, strlen(org));
    n = cat(out, n, ":", 1);
    n = cat(out, n, m, strlen(m));
    out[n] = '\0';
    return n;
}

size_t keys_apikey(char out[KEY_MAX], const char *prefix, const char *key_id, size_t id_len)
{
    size_t n = cat(out, 0, prefix, strlen(prefix));
    n = cat(out, n, KEY_APIKEY_KIND, sizeof(KEY_APIKEY_KIND) - 1);
    n = cat(out, n, key_id, id_len);
    out[n] = '\0';
    return n;
}

void keys_member(char out[KEYS_MEMBER_MAX + 1], const char *org, int mode)
{
    snprintf(out, KEYS_MEMBER_MAX + 1, "%s:%s", org, mode_name(mode));
}

int keys_member_parse(const char *s, size_t len, char *org, int *mode)
{
    if (len < ORGID_LEN + 2 || s[ORGID_LEN] != ':')
        return -1;
    memcpy(org, s, ORGID_LEN);
    org[ORGID_LEN] = '\0';
    *mode = mode_parse(s + ORGID_LEN + 1, len - ORGID_LEN - 1);
    return *mode < 0 ? -1 : 0;
}

int keys_identity(const char *key, const char *prefix, const char *kind, char *org, int *mode)
{
    size_t plen = strlen(prefix), klen = strlen(kind);
    if (strncmp(key, prefix, plen) != 0 || strncmp(key + plen, kind, klen) != 0)
        return -1;
    const char *p = key + plen + klen;
    return keys_member_parse(p, strlen(p), org, mode);
}
