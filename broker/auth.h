/* auth.h — bearer credentials: the operator's admin token and org API keys.
 * An org API key is "stb_<key id: 16 hex>_<secret: 43 base64url>"; Redis holds only
 * its SHA-256 (the key is 256 random bits, so a plain hash suffices), under the key
 * id. Comparisons are constant time. Never logs or returns a credential. */
#ifndef BROKER_AUTH_H
#define BROKER_AUTH_H
#include <stddef.h>
#include "config.h"
#include "core/errors.h"

#define APIKEY_ID_LEN 16
#define APIKEY_LEN (4 + APIKEY_ID_LEN + 1 + 43)

typedef enum bearer_kind { BEARER_NONE, BEARER_MALFORMED, BEARER_ADMIN, BEARER_KEY } bearer_kind_t;

typedef struct bearer {
    bearer_kind_t kind;
    char key_id[APIKEY_ID_LEN + 1]; /* BEARER_KEY */
    char hash[65];                  /* BEARER_KEY: SHA-256 hex of the whole key */
} bearer_t;

/* Classify an Authorization header value (NULL when absent). */
void auth_parse(const config_t *cfg, const char *authz, size_t len, bearer_t *out);
/* Check a stored key record ("<org>|<sha256 hex>|<created unix>") against the bearer.
 * org is the org the request names, or NULL for an admin-only route.
 * Returns ERR_NONE when the key is valid for it, else ERR_UNAUTHORIZED or ERR_FORBIDDEN. */
api_err_t auth_check_record(const bearer_t *bk, const char *rec, size_t len, const char *org);
/* Make a new key: api_key (APIKEY_LEN+1), key_id (APIKEY_ID_LEN+1), hash (65). */
void auth_new_key(char *api_key, char *key_id, char *hash);
/* The stored record for a new key, in out (size >= 128). */
void auth_key_record(char *out, size_t size, const char *org, const char *hash, long created);
#endif
