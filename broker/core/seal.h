/* seal.h — AES-256-GCM sealing of secrets at rest (proto/redis.md).
 * A sealed value is text: "1.<kid>.<nonce b64url>.<ciphertext+tag b64url>". The
 * associated data is "stb1|<org>|<mode>|<field>", so a value copied to another org,
 * mode or field does not open. The first key of the ring seals; every key opens. */
#ifndef BROKER_CORE_SEAL_H
#define BROKER_CORE_SEAL_H
#include <stddef.h>

#define SEAL_KID_MAX 32
#define SEAL_FORMAT_VERSION 1

typedef struct seal_key {
    char kid[SEAL_KID_MAX + 1];
    unsigned char key[32];
} seal_key_t;

typedef struct seal_keyring {
    seal_key_t *keys; /* keys[0] seals */
    size_t n;
} seal_keyring_t;

enum { SEAL_OK = 0, SEAL_ERR_FORMAT = -1, SEAL_ERR_VERSION = -2, SEAL_ERR_KID = -3, SEAL_ERR_AUTH = -4 };

/* Parse "kid:base64key[,kid:base64key…]" (kid 1–32 of [A-Za-z0-9_-], unique; key 32
 * bytes). Returns 0, or -1 with a static description (never the key) in *err. */
int keyring_parse(const char *spec, seal_keyring_t *out, const char **err);
void keyring_free(seal_keyring_t *kr);

/* Seal pt[0..ptlen) under keys[0]. Returns a malloc'd NUL-terminated string. */
char *seal_seal(const seal_keyring_t *kr, const char *org, const char *mode, const char *field,
                const void *pt, size_t ptlen);
/* Open a sealed value. On SEAL_OK *pt is a malloc'd NUL-terminated buffer of *ptlen
 * bytes (free with secure_free); otherwise one of the SEAL_ERR_ codes. */
int seal_open(const seal_keyring_t *kr, const char *sealed, size_t len, const char *org,
              const char *mode, const char *field, char **pt, size_t *ptlen);
/* Copy the key id of a sealed value into kid. Returns 0 or SEAL_ERR_FORMAT/VERSION. */
int seal_kid(const char *sealed, size_t len, char kid[SEAL_KID_MAX + 1]);
#endif
