/* conn.h — the connection records' writes: every Lua script that touches conn:<org>:<mode>
 * (and with it acct:<id>, cver:<org>, lock:/cool:<org>:<mode>) lives in store/conn.c, and
 * nowhere else (proto/redis.md, "Connections").
 *
 * A write is built as a command (store/cmd.h: argv form, binary safe) and sent by the
 * caller on its own channel: routes through the request context (http/breq.h: the
 * request's store deadline and life), the token service through redis_loop_commandv, the CLI through hiredis'
 * blocking redisCommandArgv. So the store knows nothing of HTTP, and a write's reply is
 * read where it was asked for; each builder says what its script returns.
 *
 * Every script that writes a record takes its new version from the org's counter
 * (versions never repeat for a key, not even across delete + re-authorize), and
 * conditional writes compare versions first: the fence of the exactly-once refresh.
 *
 * Every write builder takes an optional audit event (store_audit_t, NULL for none): the
 * script then records it (store/audit.h: the org's audit stream, the fleet index, the
 * outbox of events out), in the same atomic step as the change it describes, and only
 * when the change was written. Callers that do not audit pass
 * NULL; adding an audit later touches the builder's callers, not the scripts.
 * Tested by tests/unit/test_store_conn.c (each script against a real redis-server),
 * tests/it/test_lease_fence.py, tests/it/test_exactly_once.py, tests/it/test_webhooks.py,
 * tests/it/test_connection_delete.py, tests/it/test_keys.py (rotate-keys). */
#ifndef BROKER_STORE_CONN_H
#define BROKER_STORE_CONN_H
#include <stddef.h>
#include "store/cmd.h"

#define STORE_ANY_VERSION (-1L)

/* Another connection of the same org that a put drops in the same write if it still has
 * version `version` (a live authorization dropping a test connection minted from live for
 * another Stripe account). */
typedef struct store_conn_drop {
    int mode;
    const char *acct; /* its Stripe account id (its acct:<id> index) */
    long version;
} store_conn_drop_t;

/* GET conn:<org>:<mode>. Reply: the value or nil (open it with store_conn_open). */
void store_conn_get(store_cmd_t *c, const char *prefix, const char *org, int mode);

/* Write sealed (store_conn_seal) as conn:<org>:<mode> and index it under acct:<acct>
 * (acct NULL: no index), if the record still has version expected
 * (STORE_ANY_VERSION: whatever it has); drop as above (NULL: none).
 * Reply: {new version, 1 when drop's record was dropped else 0}, or -1 when expected
 * was not current (nothing written). */
void store_conn_put(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *sealed,
                    const char *acct, long expected, const store_conn_drop_t *drop, const store_audit_t *audit);

/* Delete conn:<org>:<mode> and its index member of acct:<acct> (acct NULL: none),
 * and, also_mode >= 0, the org's connection of that mode too (same account). Reply: 1. */
void store_conn_drop(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *acct, int also_mode,
                     const store_audit_t *audit);

/* One record a revoke rewrites: old is the whole value the decision was made on
 * ("<version>:<sealed>", as read), sealed the revoked record (conn_record_revoke). */
typedef struct store_conn_revoked {
    const char *org;
    int mode;
    const char *old;
    size_t old_len;
    const char *sealed;
} store_conn_revoked_t;

/* Rewrite the n records as revoked, only if every one still holds exactly its old value
 * (the seal's random nonce makes a value unique: a record deleted and written again
 * never passes), and remember the Stripe event evt:<event_id> for ttl_s, in one step.
 * Reply: n, or -1 when any record changed (nothing written). */
void store_conn_revoke(store_cmd_t *c, const char *prefix, const store_conn_revoked_t *recs, size_t n,
                       const char *event_id, int ttl_s, const store_audit_t *audit);
/* audit: NULL, or an array of n events, one for each record (recs[i] records audit[i]). */

/* Replace the value of key (a full conn: or whsec: key name) with new_value only if it
 * still holds old_value (rotate-keys' re-seal). Reply: 1 replaced, 0 it changed. */
void store_value_reseal(store_cmd_t *c, const char *key, const char *old_value, size_t old_len,
                        const char *new_value, const store_audit_t *audit);

/* ---- The token service's lease (lock:<org>:<mode>) and cooldown (cool:<org>:<mode>) ---- */

/* For a flight on org/mode that read version seen_version, with source_mode the record
 * it works from (a mint works from live): serve the stored record if its version moved
 * past seen_version, else answer "cooling down" after a recent transient failure, else
 * take the lease (SET NX PX lease_ms, owner) and return the records to work from.
 * Reply: {0, cur} changed | {1, cur, source} acquired | {2} wait | {3, cur} cooling down. */
void store_lease_acquire(store_cmd_t *c, const char *prefix, const char *org, int mode, int source_mode,
                         long seen_version, const char *owner, long lease_ms);

/* Extend the lease by lease_ms if owner still holds it. Reply: 1, or 0 when it is gone. */
void store_lease_renew(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *owner,
                       long lease_ms);

/* The end of a flight on org/mode (lease owner owner). */
typedef struct store_lease_commit {
    int write_mode;         /* the record written (the flight's mode, or a mint's live source) */
    int source_mode;        /* the record a mint worked from (else the flight's mode) */
    const char *sealed;     /* the record to write, NULL: write nothing */
    long expected;          /* the version the write expects the record to have */
    long source_version;    /* >= 0: the source record must still have it (a mint) */
    const char *acct;       /* index the written record under acct:<acct>; NULL: none */
    int cooldown_ms;        /* > 0: start the cooldown (after a transient Stripe failure) */
    int without_lease;      /* the write holds even when the lease is gone (a rotated refresh token) */
    const char *audit_kind; /* the audit event: "ok" a new token, "dead" a rejected refresh
                             * token, "fail" a transient failure, NULL/"" other writes */
    int failing_s;          /* BROKER_REFRESH_FAILING_S: refresh.failing after this long */
} store_lease_commit_t;

/* In one step: nothing at all unless owner still holds the lease (or without_lease);
 * the compare-and-set write; the cooldown; the release of the lease; the audit event,
 * recorded with the write, or, with no write, by the lease owner. failing:<org>:<mode>
 * holds the time of the first of a run of transient failures ("<t>:sent" once
 * refresh.failing went out, after w->failing_s): a "fail" sends the audit's out-event only
 * when it crosses that threshold; the next write deletes the key. An "ok" write offers its
 * out-event (connection.recovered), which store/audit.h's AUDIT_LUA sends only after an
 * outage of that connection (refresh.failing or connection.reauthorization_required sent:
 * a test connection minted again from live after both were revoked recovers too).
 * Reply: the new version, 0 nothing written, -1 a version moved (someone else wrote),
 * -2 the lease is no longer owner's (nothing written, not even the cooldown). */
void store_lease_commit(store_cmd_t *c, const char *prefix, const char *org, int mode, const char *owner,
                        const store_lease_commit_t *w, const store_audit_t *audit);
#endif
