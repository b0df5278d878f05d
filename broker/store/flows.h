/* flows.h — the setup assistant's one-time values in Redis (proto/redis.md, "Setup
 * assistant — tickets, sessions, states"): tickets of authorize links (ticket:<h>, 600 s),
 * setup sessions (sess:<h>, 1800 s) and OAuth states (state:<h>, 600 s), where <h> is the
 * SHA-256 hex of the random value. The builders take the value itself and hash it, so a
 * key name never holds one in clear; the records' JSON is parsed and written here too,
 * and every script that touches them lives in store/flows.c. Builders fill a store_cmd_t
 * (store/cmd.h) that the caller sends, and say what the reply is.
 * Never logs; holds a one-time value only while it hashes it. Tested by
 * tests/unit/test_store_flows.c (each command against a real redis-server) and
 * tests/it/test_browser_flow.py. */
#ifndef BROKER_STORE_FLOWS_H
#define BROKER_STORE_FLOWS_H
#include <stddef.h>
#include "core/orgid.h"
#include "store/cmd.h"

/* The record of a ticket and of the session it becomes: {"org","mode","return_url"?}. */
typedef struct flow_session {
    char org[ORGID_LEN + 1]; /* canonical org id */
    int mode;                /* MODE_TEST / MODE_LIVE */
    char *return_url;        /* malloc'd; NULL: none */
} flow_session_t;

/* The record's JSON text (malloc'd). */
char *flow_session_json(const flow_session_t *s);
/* Parse a ticket's or session's record (len bytes) into s (its return_url replaced).
 * Returns 0, or -1 when it is not such a record (s then unchanged). */
int flow_session_parse(const char *text, size_t len, flow_session_t *s);
/* Free s's return_url. */
void flow_session_clear(flow_session_t *s);

/* The record of an OAuth state: {"org","mode","browser","session"}: the SHA-256 hex of
 * the browser-binding cookie and of the setup-session cookie that created it. */
typedef struct flow_state {
    char org[ORGID_LEN + 1];
    int mode;
    char browser[65];
    char session[65];
} flow_state_t;

/* Parse a state's record: 0, or -1 when it is not one (a field missing or malformed). */
int flow_state_parse(const char *text, size_t len, flow_state_t *st);

/* A new ticket for s, for ttl_s. Reply: OK. */
void store_ticket_put(store_cmd_t *c, const char *prefix, const char *ticket, const flow_session_t *s, int ttl_s);
/* Consume the ticket and make its record the session `session` (the session cookie's
 * value) for ttl_s, in one step: a ticket works once. Reply: the record, or nil when
 * the ticket was used, expired or never existed. */
void store_ticket_redeem(store_cmd_t *c, const char *prefix, const char *ticket, const char *session, int ttl_s);
/* The session's record. Reply: the record or nil. */
void store_session_get(store_cmd_t *c, const char *prefix, const char *session);
/* A new OAuth state for s (org, and the mode chosen), bound to the browser cookie
 * `browser` and the session cookie `session`, for ttl_s; in the same step the session's
 * record becomes s (the chosen mode; its TTL kept) if the session still exists. Reply: 1. */
void store_state_put(store_cmd_t *c, const char *prefix, const char *state, const char *browser, const char *session,
                     const flow_session_t *s, int ttl_s);
/* Consume the state (whoever presents it: a state seen once is never good again).
 * Reply: its record, or nil. */
void store_state_take(store_cmd_t *c, const char *prefix, const char *state);
#endif
