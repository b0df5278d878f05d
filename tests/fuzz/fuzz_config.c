/* fuzz_config.c — config_load with any value in any variable. The first byte picks
 * the variable, the rest is its value; the other variables hold a valid minimal
 * configuration. Checks that a failure names a variable and never echoes the value
 * (the error line must stay printable ASCII whatever bytes the value holds). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static const char *const VARS[] = {
    "BROKER_LISTEN", "BROKER_PUBLIC_URL", "BROKER_REDIS_URL", "BROKER_REDIS_PREFIX",
    "BROKER_THREADS", "BROKER_ENCRYPTION_KEYS", "BROKER_ADMIN_TOKEN", "BROKER_OAUTH_FLAVOR",
    "BROKER_REFRESH_MARGIN_S", "BROKER_UPSTREAM_TIMEOUT_MS", "BROKER_RETURN_URL_ALLOW",
    "BROKER_LOG_LEVEL", "BROKER_TRUSTED_PROXIES", "STRIPE_CLIENT_ID_TEST", "STRIPE_CLIENT_ID_LIVE",
    "STRIPE_SECRET_KEY_TEST", "STRIPE_SECRET_KEY_LIVE", "STRIPE_WEBHOOK_SECRET_TEST", "STRIPE_WEBHOOK_SECRET_LIVE",
    "STRIPE_CONNECT_URL", "STRIPE_API_URL", "STRIPE_MARKETPLACE_URL",
};

static const char *const BASE[][2] = {
    {"BROKER_PUBLIC_URL", "https://broker.example.com"},
    {"BROKER_ENCRYPTION_KEYS", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
    {"BROKER_ADMIN_TOKEN", "admin-token-0123456789abcdef0123456789"},
    {"STRIPE_CLIENT_ID_TEST", "ca_test"},
    {"STRIPE_SECRET_KEY_TEST", "sk_test_1"},
};

typedef struct fuzz_env {
    const char *var;
    const char *value;
} fuzz_env_t;

static const char *fuzz_getenv(const char *name, void *ctx)
{
    const fuzz_env_t *e = ctx;
    size_t i;

    if (strcmp(name, e->var) == 0)
        return e->value;
    for (i = 0; i < sizeof(BASE) / sizeof(BASE[0]); i++)
        if (strcmp(name, BASE[i][0]) == 0)
            return BASE[i][1];
    return NULL;
}

/* An error line is "<known variable>: <text>" made only of printable ASCII: the
 * messages are static text, so an echoed value would show up as the fuzzer's
 * non-ASCII or control bytes. */
static int error_is_clean(const char *err)
{
    size_t i, n;

    for (i = 0; err[i] != '\0'; i++)
        if ((unsigned char)err[i] < 0x20 || (unsigned char)err[i] > 0x7e)
            return 0;
    for (i = 0; i < sizeof(VARS) / sizeof(VARS[0]); i++) {
        n = strlen(VARS[i]);
        if (strncmp(err, VARS[i], n) == 0 && (err[n] == ':' || err[n] == '_'))
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_env_t e;
    config_t c;
    char err[256], *value;

    if (size == 0)
        return 0;
    value = malloc(size);
    memcpy(value, data + 1, size - 1);
    value[size - 1] = '\0';
    e.var = VARS[data[0] % (sizeof(VARS) / sizeof(VARS[0]))];
    e.value = value;
    if (config_load(&c, fuzz_getenv, &e, err, sizeof(err)) == 0) {
        if (c.public_url == NULL || c.keyring.n == 0 || c.admin_token == NULL ||
            c.return_allow_n == 0 || (c.redis_host == NULL) == (c.redis_unix == NULL))
            abort();
        config_free(&c);
    } else if (!error_is_clean(err)) {
        abort();
    }
    free(value);
    return 0;
}
