/* main.c — the stripe-token-broker command line (README "The two commands").
 * Parses the command, loads the configuration (exiting with one line naming the bad
 * variable), and runs the server or an operator command. Never prints a secret. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "config.h"
#include "core/crypto.h"
#include "log.h"
#include "server.h"

static const char usage[] =
    "usage: stripe-token-broker [serve | check | create-api-key ORG_ID | rotate-keys | audit ORG_ID |\n"
    "                            orgs [--status STATUS] | --help | --version]\n"
    "\n"
    "  serve              run the service (the default)\n"
    "  check              validate the configuration and reach Redis; exit 0 or 1\n"
    "  create-api-key ID  print a new API key for the Salesforce org ID (shown once)\n"
    "  rotate-keys        re-encrypt every stored secret with the first key of BROKER_ENCRYPTION_KEYS\n"
    "  audit ID           print the audit events of the Salesforce org ID, newest first\n"
    "  orgs               print every org and its connections (--status connected or\n"
    "                     reauthorization_required: only orgs with a connection in that status)\n"
    "\n"
    "Configuration comes from the environment (BROKER_PUBLIC_URL, BROKER_ENCRYPTION_KEYS,\n"
    "BROKER_ADMIN_TOKEN, STRIPE_CLIENT_ID_TEST/LIVE, STRIPE_SECRET_KEY_TEST/LIVE, …);\n"
    "every variable is also read from NAME_FILE. See README.md.\n";

static const char *env_get(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    config_t cfg;
    char err[256];
    int rc;

    secure_json_init();
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("stripe-token-broker %s\n", BROKER_VERSION);
        return 0;
    }
    int known = strcmp(cmd, "serve") == 0 || strcmp(cmd, "check") == 0 || strcmp(cmd, "rotate-keys") == 0 ||
                strcmp(cmd, "create-api-key") == 0 || strcmp(cmd, "audit") == 0 || strcmp(cmd, "orgs") == 0;
    int args_ok = strcmp(cmd, "create-api-key") == 0 || strcmp(cmd, "audit") == 0 ? argc == 3
                  : strcmp(cmd, "orgs") == 0 ? argc == 2 || (argc == 4 && strcmp(argv[2], "--status") == 0)
                                             : argc <= 2;
    if (!known || !args_ok) {
        fputs(usage, stderr);
        return 2;
    }
    if (config_load(&cfg, env_get, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "stripe-token-broker: %s\n", err);
        return 1;
    }
    log_set_level(cfg.log_level);
    for (int mode = MODE_TEST; mode <= MODE_LIVE; mode++) {
        if (cfg.stripe[mode].missing != NULL)
            log_event(LOG_WARN, "Stripe mode not enabled: half of its credentials are set", "mode", mode_name(mode),
                      "missing", cfg.stripe[mode].missing, NULL);
        if (cfg.stripe[mode].enabled && cfg.stripe[mode].webhook_secret == NULL)
            log_event(LOG_WARN, "no webhook signing secret for an enabled Stripe mode: its deauthorizations are never seen",
                      "mode", mode_name(mode), "missing",
                      mode == MODE_LIVE ? "STRIPE_WEBHOOK_SECRET_LIVE" : "STRIPE_WEBHOOK_SECRET_TEST", NULL);
    }
    if (strcmp(cmd, "check") == 0)
        rc = cli_check(&cfg);
    else if (strcmp(cmd, "create-api-key") == 0)
        rc = cli_create_api_key(&cfg, argv[2]);
    else if (strcmp(cmd, "rotate-keys") == 0)
        rc = cli_rotate_keys(&cfg);
    else if (strcmp(cmd, "audit") == 0)
        rc = cli_audit(&cfg, argv[2]);
    else if (strcmp(cmd, "orgs") == 0)
        rc = cli_orgs(&cfg, argc == 4 ? argv[3] : NULL);
    else {
        /* libcurl keeps the proxy's bearer and request body (card details) in blocks of its
         * own: they are wiped when freed or grown */
        curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, secure_block_free, secure_block_realloc, strdup, calloc);
        rc = server_run(&cfg);
        curl_global_cleanup();
    }
    config_free(&cfg);
    return rc;
}
