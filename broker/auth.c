/* auth.c — bearer credentials (see auth.h).
 * Owns the API key format and the stored key record. Never logs, stores or returns a
 * key in clear; compares secrets in constant time. Tested by tests/unit/test_auth.c
 * and the admin/auth integration tests. */
#include "auth.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "core/crypto.h"

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int is_b64url(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

void auth_parse(const config_t *cfg, const char *authz, size_t len, bearer_t *out)
{
    memset(out, 0, sizeof(*out));
    if (authz == NULL) {
        out->kind = BEARER_NONE;
        return;
    }
    out->kind = BEARER_MALFORMED;
    if (len < 7 || strncasecmp(authz, "Bearer ", 7) != 0)
        return;
    const char *tok = authz + 7;
    size_t n = len - 7;
    while (n > 0 && *tok == ' ')
        tok++, n--;
    while (n > 0 && tok[n - 1] == ' ')
        n--;
    if (n == 0)
        return;
    if (ct_equal(tok, n, cfg->admin_token, strlen(cfg->admin_token))) {
        out->kind = BEARER_ADMIN;
        return;
    }
    if (n != APIKEY_LEN || memcmp(tok, "stb_", 4) != 0 || tok[4 + APIKEY_ID_LEN] != '_' ||
        !is_hex(tok + 4, APIKEY_ID_LEN) || !is_b64url(tok + 5 + APIKEY_ID_LEN, 43))
        return;
    memcpy(out->key_id, tok + 4, APIKEY_ID_LEN);
    out->key_id[APIKEY_ID_LEN] = '\0';
    sha256_hex(tok, n, out->hash);
    out->kind = BEARER_KEY;
}

api_err_t auth_check_record(const bearer_t *bk, const char *rec, size_t len, const char *org)
{
    /* "<org 18>|<sha 64>|<created>" */
    if (bk->kind != BEARER_KEY || rec == NULL || len < 18 + 1 + 64 + 1 || rec[18] != '|' || rec[18 + 65] != '|')
        return ERR_UNAUTHORIZED;
    if (!ct_equal(rec + 19, 64, bk->hash, 64))
        return ERR_UNAUTHORIZED;
    if (org == NULL || memcmp(rec, org, 18) != 0)
        return ERR_FORBIDDEN;
    return ERR_NONE;
}

void auth_new_key(char *api_key, char *key_id, char *hash)
{
    unsigned char idb[APIKEY_ID_LEN / 2];
    char secret[64];

    rand_bytes(idb, sizeof(idb));
    hex_encode(idb, sizeof(idb), key_id);
    rand_token(secret, 32);
    memcpy(api_key, "stb_", 4);
    memcpy(api_key + 4, key_id, APIKEY_ID_LEN);
    api_key[4 + APIKEY_ID_LEN] = '_';
    memcpy(api_key + 5 + APIKEY_ID_LEN, secret, 43);
    api_key[APIKEY_LEN] = '\0';
    sha256_hex(api_key, APIKEY_LEN, hash);
    explicit_bzero(secret, sizeof(secret));
}

void auth_key_record(char *out, size_t size, const char *org, const char *hash, long created)
{
    snprintf(out, size, "%s|%s|%ld", org, hash, created);
}
