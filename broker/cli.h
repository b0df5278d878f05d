/* cli.h — the operator's commands (README "The two commands"): check, create-api-key, rotate-keys.
 * They use a blocking Redis connection: they are short-lived tools, not the server. */
#ifndef BROKER_CLI_H
#define BROKER_CLI_H
#include "config.h"

int cli_check(const config_t *cfg);
int cli_create_api_key(const config_t *cfg, const char *org);
int cli_rotate_keys(const config_t *cfg);
#endif
