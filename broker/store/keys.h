/* keys.h — the Redis key schema (proto/redis.md, "Keys"): the only place a key name or a
 * set member is spelled. Every key is "<BROKER_REDIS_PREFIX><name>"; the KEY_* formats
 * below are the <name> part, for printf-style builders that put the prefix in front
 * (the request context's key helper in routes/, snprintf with cfg->redis_prefix
 * elsewhere); keys_conn and keys_apikey build the two keys of the token hot path
 * without printf.
 * The Lua prelude of store/conn.c derives "cver:<org>" and "failing:<org>:<mode>" from a
 * conn key name: KEY_CONN, KEY_CVER and KEY_FAILING change together; store/audit.h's
 * AUDIT_LUA derives KEY_ORGS and KEY_OUTAGE from a KEY_AUDIT name and spells KEY_CONN,
 * KEY_ORG_KEYS and KEY_APIKEY_KIND, and its fleet page KEY_USED too, in Lua: those change
 * together too. Tested by tests/unit/test_store.c and,
 * through every route, tests/it/test_secrets_at_rest.py (every key has the prefix). */
#ifndef BROKER_STORE_KEYS_H
#define BROKER_STORE_KEYS_H
#include <stddef.h>
#include "core/orgid.h"

#define KEY_MAX 160 /* a key with the longest prefix and the longest id */

#define KEY_CONN_KIND "conn:"   /* conn:<org18>:<mode>: "<version>:<sealed record>" */
#define KEY_CONN "conn:%s:%s"   /* org, mode_name(mode) */
#define KEY_CONN_ALL "conn:*"   /* SCAN pattern of every connection */
#define KEY_CVER "cver:%s"      /* org: the org's last connection version (Lua only) */
#define KEY_ACCT "acct:%s"      /* Stripe account id: set of "<org18>:<mode>" members */
#define KEY_LOCK "lock:%s:%s"   /* org, mode: the token service's lease */
#define KEY_COOL "cool:%s:%s"   /* org, mode: cooldown after a transient Stripe failure */
#define KEY_BGREFRESH "bgrefresh" /* the background refresh pass's lease (one replica) */
#define KEY_WHSEC_KIND "whsec:" /* whsec:<org18>:<mode>: "<updated>:<sealed secret>" */
#define KEY_WHSEC "whsec:%s:%s" /* org, mode_name(mode) */
#define KEY_APIKEY_KIND "key:"  /* key:<key id>: "<org18>|<sha256 hex>|<created>" */
#define KEY_APIKEY "key:%s"     /* key id */
#define KEY_ORG_KEYS "org:%s:keys" /* org: set of key ids */
#define KEY_TICKET "ticket:%s"  /* sha256 hex of the ticket */
#define KEY_SESS "sess:%s"      /* sha256 hex of the setup session cookie */
#define KEY_STATE "state:%s"    /* sha256 hex of the OAuth state */
#define KEY_EVT "evt:%s"        /* Stripe event id: handled */
#define KEY_AUDIT "audit:%s"    /* org: the audit trail, a stream of {"e": event JSON} */
#define KEY_ORGS "orgs"         /* the fleet index: sorted set of org ids (score 0) */
#define KEY_USED "used:%s"      /* org: hash mode -> Unix time the connection was last used */
#define KEY_FAILING "failing:%s:%s" /* org, mode: "<first failure>[:sent]" of a run of failures */
#define KEY_OUTBOX "outbox"     /* events out: a stream of {"org", "e": out-event JSON} */
#define KEY_OUTBOX_LEASE "outbox:lease" /* events out: the delivery lease */
#define KEY_OUTBOX_RETRY "outbox:retry" /* events out: entry id -> retry state */
#define KEY_OUTBOX_DUE "outbox:due"     /* events out: sorted set org -> when its queue's head is due (ms) */
#define KEY_OUTBOX_QUEUE "outbox:q:"    /* events out: + org: list of "<entry id> <out-event JSON>" */
#define KEY_OUTAGE "outage:%s:%s"       /* org, mode: a problem event went out, recovery not yet (Lua only) */

/* "<org18>:<mode>", the member of an acct:<id> set, and the tail of conn/whsec keys. */
#define KEYS_MEMBER_MAX (ORGID_LEN + 1 + 4)

/* prefix + "conn:<org>:<mode name>" into out (KEY_MAX bytes, NUL-terminated); the length. */
size_t keys_conn(char out[KEY_MAX], const char *prefix, const char *org, int mode);
/* prefix + "key:<key id>" into out; the length. */
size_t keys_apikey(char out[KEY_MAX], const char *prefix, const char *key_id, size_t id_len);
/* "<org>:<mode name>" into out (KEYS_MEMBER_MAX + 1 bytes). */
void keys_member(char out[KEYS_MEMBER_MAX + 1], const char *org, int mode);
/* Parse "<org18>:<mode name>" (len bytes): 0 with org (ORGID_LEN + 1) and *mode set, or -1. */
int keys_member_parse(const char *s, size_t len, char *org, int *mode);
/* Parse a full key name "<prefix><kind><org18>:<mode>" (kind KEY_CONN_KIND or
 * KEY_WHSEC_KIND): 0 with org and *mode set, or -1 when it is not such a key. */
int keys_identity(const char *key, const char *prefix, const char *kind, char *org, int *mode);
#endif
