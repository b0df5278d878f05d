/* store.h — the record formats in Redis (proto/redis.md, version 1): a connection is
 * "<version>:<sealed record>", a webhook secret "<updated>:<sealed secret>". Every secret
 * value is sealed (core/seal.h) with the record's identity as associated data. The key
 * names are store/keys.h's; the commands and scripts are store/conn.h's (connections),
 * store/apikeys.h's (API keys), store/flows.h's (tickets, sessions, OAuth states) and
 * store/whsec.h's (webhook signing secrets), each built as a store/cmd.h command. */
#ifndef BROKER_STORE_STORE_H
#define BROKER_STORE_STORE_H
#include <stddef.h>
#include "config.h"
#include "core/record.h"
#include "store/conn.h"
#include "store/keys.h"

#define TICKET_TTL_S 600
#define SESSION_TTL_S 1800
#define STATE_TTL_S 600
#define EVENT_TTL_S 86400

enum { STORE_OK = 0, STORE_ABSENT = 1, STORE_UNREADABLE = -1 };

/* Open a connection value "<version>:<sealed>" of org/mode. val NULL → STORE_ABSENT.
 * STORE_UNREADABLE is logged (the key name, never the value). */
int store_conn_open(const config_t *cfg, const char *org, int mode, const char *val, size_t len, long *version,
                    conn_record_t *out);
/* Seal a record for org/mode (malloc'd "1.<kid>.…", no version prefix). */
char *store_conn_seal(const config_t *cfg, const char *org, int mode, const conn_record_t *r);
/* Open a webhook secret value "<updated>:<sealed>". Returns STORE_OK (*secret malloc'd,
 * free with secure_free_str), STORE_ABSENT or STORE_UNREADABLE. */
int store_whsec_open(const config_t *cfg, const char *org, int mode, const char *val, size_t len, char **secret,
                     long *updated);
/* "<now>:<sealed secret>" (malloc'd). */
char *store_whsec_seal(const config_t *cfg, const char *org, int mode, const char *secret);
#endif
