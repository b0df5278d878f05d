/* cmd.h — a Redis command in argv form (binary safe), as every store/ module builds it.
 *
 * The store modules (conn.h, apikeys.h, flows.h, whsec.h) know nothing of how a command
 * is sent: each builder fills a store_cmd_t and the caller sends it on its own channel —
 * routes through the request context (http/breq.h: the request's store deadline and
 * life), the token service through redis_loop_commandv, the CLI through hiredis'
 * blocking redisCommandArgv — then reads the reply the builder documents. The helpers
 * below are for the builders; callers only send and store_cmd_free.
 * Never: talks to Redis, logs. Tested by tests/unit/test_store_conn.c and
 * tests/unit/test_store_flows.c (builders run against a real redis-server). */
#ifndef BROKER_STORE_CMD_H
#define BROKER_STORE_CMD_H
#include <stddef.h>

/* A command in argv form; every string is owned (copied in) and wiped by store_cmd_free. */
typedef struct store_cmd {
    int argc;
    int cap;
    const char **argv; /* argc strings, each owned by the command */
    size_t *lens;
} store_cmd_t;

/* An audit event appended to a write: the AUDIT_TAIL_ARGS arguments of store/audit.h
 * (audit_tail_make: stream key, retention, event, outbox key, out-event). A script runs
 * that module's AUDIT_LUA on them in the same atomic step as the change it records, and
 * only when the change was written; never a secret. */
typedef struct audit_tail store_audit_t;

/* Wipe and free a command's strings (the struct itself may be on the stack). */
void store_cmd_free(store_cmd_t *c);

/* ---- For the builders ---- */

/* Start c (any previous content is forgotten, not freed) as the command `name`. */
void store_cmd_begin(store_cmd_t *c, const char *name);
/* Start c as "EVAL script nkeys"; the KEYS, then the ARGV follow. */
void store_cmd_eval(store_cmd_t *c, const char *script, size_t nkeys);
/* Append len bytes of s. */
void store_cmd_add(store_cmd_t *c, const char *s, size_t len);
/* Append a string (NULL: the empty string). */
void store_cmd_adds(store_cmd_t *c, const char *s);
/* Append a printf-formatted argument (at most KEY_MAX + 63 bytes: keys and numbers). */
void store_cmd_addf(store_cmd_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append the audit tail's AUDIT_TAIL_ARGS arguments (nothing for NULL). */
void store_cmd_audit(store_cmd_t *c, const store_audit_t *audit);
/* The same, but NULL appends AUDIT_TAIL_ARGS empty strings (an event of nothing): for
 * the scripts that always call audit_tail(). */
void store_cmd_audit_tail(store_cmd_t *c, const store_audit_t *audit);
#endif
