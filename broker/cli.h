/* cli.h — the operator's commands (README "The two commands"): check, create-api-key, rotate-keys,
 * and the audit trail and fleet view (audit, orgs).
 * They use a blocking Redis connection: they are short-lived tools, not the server. */
#ifndef BROKER_CLI_H
#define BROKER_CLI_H
#include "config.h"

int cli_check(const config_t *cfg);
int cli_create_api_key(const config_t *cfg, const char *org);
int cli_rotate_keys(const config_t *cfg);
/* audit ORG_ID: the org's audit events, newest first (at most 500), one a line. */
int cli_audit(const config_t *cfg, const char *org);
/* orgs [--status S]: the fleet view as a table (status: connected or
 * reauthorization_required, NULL for every org). */
int cli_orgs(const config_t *cfg, const char *status);
#endif
