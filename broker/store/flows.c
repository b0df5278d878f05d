/* flows.c — tickets, setup sessions and OAuth states in Redis (see flows.h).
 * Owns: their key names (through store/keys.h, from the value's SHA-256), their JSON
 * records and the two scripts (ticket → session, state + the session's mode). Never:
 * talks to Redis (callers send), logs, or puts a one-time value in a key or a record.
 * Tested by tests/unit/test_store_flows.c and tests/it/test_browser_flow.py. */
#include "store/flows.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "core/crypto.h"
#include "core/mode.h"
#include "store/keys.h"

/* Ticket → session, atomically: the ticket can be used once. KEYS: ticket, session.
 * ARGV: the session's TTL. */
static const char LUA_TICKET_TO_SESSION[] = "local t = redis.call('GETDEL', KEYS[1])\n"
                                            "if not t then return false end\n"
                                            "redis.call('SET', KEYS[2], t, 'EX', ARGV[1])\n"
                                            "return t\n";

/* New OAuth state + the session's chosen mode. KEYS: state, session. ARGV: the state's
 * record, its TTL, the session's new record. */
static const char LUA_STATE_CREATE[] = "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
                                       "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
                                       "  redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')\n"
                                       "end\n"
                                       "return 1\n";

/* ===== Records ===== */

char *flow_session_json(const flow_session_t *s)
{
    json_t *j = json_pack("{s:s, s:s, s:s?}", "org", s->org, "mode", mode_name(s->mode), "return_url", s->return_url);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text == NULL)
        abort();
    return text;
}

int flow_session_parse(const char *text, size_t len, flow_session_t *s)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    const char *org = json_string_value(json_object_get(j, "org"));
    const char *mode = json_string_value(json_object_get(j, "mode"));
    const char *ret = json_string_value(json_object_get(j, "return_url"));
    int m = mode != NULL ? mode_parse(mode, strlen(mode)) : -1, rc = -1;
    if (org != NULL && strlen(org) == ORGID_LEN && m >= 0) {
        memcpy(s->org, org, ORGID_LEN + 1);
        s->mode = m;
        free(s->return_url);
        s->return_url = ret != NULL ? strdup(ret) : NULL;
        rc = 0;
    }
    json_decref(j);
    return rc;
}

void flow_session_clear(flow_session_t *s)
{
    free(s->return_url);
    s->return_url = NULL;
}

int flow_state_parse(const char *text, size_t len, flow_state_t *st)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    const char *org = json_string_value(json_object_get(j, "org"));
    const char *mode = json_string_value(json_object_get(j, "mode"));
    const char *browser = json_string_value(json_object_get(j, "browser"));
    const char *session = json_string_value(json_object_get(j, "session"));
    int rc = -1;
    if (org != NULL && strlen(org) == ORGID_LEN && mode != NULL && browser != NULL && strlen(browser) == 64 &&
        session != NULL && strlen(session) == 64) {
        memcpy(st->org, org, ORGID_LEN + 1);
        st->mode = mode_parse(mode, strlen(mode));
        memcpy(st->browser, browser, 65);
        memcpy(st->session, session, 65);
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* ===== Commands ===== */

/* Append prefix + the key KEYFMT (a KEY_* format with one %s) of value's SHA-256 hex. */
#define HASHED_KEY(c, prefix, KEYFMT, value)                    \
    do {                                                        \
        char h_[65];                                            \
        sha256_hex((value), strlen(value), h_);                 \
        store_cmd_addf((c), "%s" KEYFMT, (prefix), h_);         \
    } while (0)

void store_ticket_put(store_cmd_t *c, const char *prefix, const char *ticket, const flow_session_t *s, int ttl_s)
{
    char *text = flow_session_json(s);
    store_cmd_begin(c, "SET");
    HASHED_KEY(c, prefix, KEY_TICKET, ticket);
    store_cmd_adds(c, text);
    store_cmd_adds(c, "EX");
    store_cmd_addf(c, "%d", ttl_s);
    free(text);
}

void store_ticket_redeem(store_cmd_t *c, const char *prefix, const char *ticket, const char *session, int ttl_s)
{
    store_cmd_eval(c, LUA_TICKET_TO_SESSION, 2);
    HASHED_KEY(c, prefix, KEY_TICKET, ticket);
    HASHED_KEY(c, prefix, KEY_SESS, session);
    store_cmd_addf(c, "%d", ttl_s);
}

void store_session_get(store_cmd_t *c, const char *prefix, const char *session)
{
    store_cmd_begin(c, "GET");
    HASHED_KEY(c, prefix, KEY_SESS, session);
}

void store_state_put(store_cmd_t *c, const char *prefix, const char *state, const char *browser, const char *session,
                     const flow_session_t *s, int ttl_s)
{
    char browser_hash[65], session_hash[65];
    sha256_hex(browser, strlen(browser), browser_hash);
    sha256_hex(session, strlen(session), session_hash);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s}", "org", s->org, "mode", mode_name(s->mode), "browser", browser_hash,
                            "session", session_hash);
    char *text = json_dumps(rec, JSON_COMPACT), *sess = flow_session_json(s);
    if (text == NULL)
        abort();
    store_cmd_eval(c, LUA_STATE_CREATE, 2);
    HASHED_KEY(c, prefix, KEY_STATE, state);
    HASHED_KEY(c, prefix, KEY_SESS, session);
    store_cmd_adds(c, text);
    store_cmd_addf(c, "%d", ttl_s);
    store_cmd_adds(c, sess);
    free(text);
    free(sess);
    json_decref(rec);
}

void store_state_take(store_cmd_t *c, const char *prefix, const char *state)
{
    store_cmd_begin(c, "GETDEL");
    HASHED_KEY(c, prefix, KEY_STATE, state);
}
