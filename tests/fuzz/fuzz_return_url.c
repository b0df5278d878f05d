/* fuzz_return_url.c — config_return_url_allowed on any URL, against the default
 * allow-list and a custom one. Checks that an allowed URL has no user info, no
 * backslash and an allowed scheme. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

static config_t defaults, custom;

static const char *env_default(const char *name, void *ctx)
{
    static const char *const base[][2] = {
        {"BROKER_PUBLIC_URL", "https://broker.example.com"},
        {"BROKER_ENCRYPTION_KEYS", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
        {"BROKER_ADMIN_TOKEN", "admin-token-0123456789abcdef0123456789"},
        {"STRIPE_CLIENT_ID_TEST", "ca_test"},
        {"STRIPE_SECRET_KEY_TEST", "sk_test_1"},
        {"BROKER_RETURN_URL_ALLOW", NULL},
    };
    size_t i;

    if (ctx != NULL && strcmp(name, "BROKER_RETURN_URL_ALLOW") == 0)
        return ctx;
    for (i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        if (strcmp(name, base[i][0]) == 0)
            return base[i][1];
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];

    if (config_load(&defaults, env_default, NULL, err, sizeof(err)) != 0 ||
        config_load(&custom, env_default, (void *)"http://localhost:3000,https://*.example.com:8443",
                    err, sizeof(err)) != 0)
        abort();
    return 0;
}

static void check_allowed(const char *url)
{
    const char *auth = strstr(url, "://");
    size_t alen;

    if (auth == NULL || strchr(url, '\\') != NULL || strlen(url) > 2048)
        abort();
    if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0)
        abort();
    auth += 3;
    alen = strcspn(auth, "/?#");
    if (memchr(auth, '@', alen) != NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);

    memcpy(url, data, size);
    url[size] = '\0';
    if (config_return_url_allowed(&defaults, url))
        check_allowed(url);
    if (config_return_url_allowed(&custom, url))
        check_allowed(url);
    free(url);
    return 0;
}
