/* test_store_flows.c — the store modules beside the connection records, each command
 * against a real redis-server (started by the test: free port, no persistence) through
 * hiredis' blocking client: org API keys (store/apikeys.h: create, list, revoke only the
 * org's own, the audit event only for a change), the setup assistant's one-time values
 * (store/flows.h: keys hold only the SHA-256 of the value, a ticket and a state work
 * once, the state binds browser and session and moves the session's mode), webhook
 * signing secrets (store/whsec.h) and the fleet page's command (store/audit.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis_proc.h"
#include "store_cmd_run.h"
#include "config.h"
#include "core/crypto.h"
#include "store/apikeys.h"
#include "store/audit.h"
#include "store/flows.h"
#include "store/whsec.h"

#define P "t:"
#define ORG "00D000000000001EAA"
#define ORG2 "00D000000000002EAA"
/* 43 base64url characters, like every one-time value */
#define TICKET "tttttttttttttttttttttttttttttttttttttttttt1"
#define SESSION "sssssssssssssssssssssssssssssssssssssssss01"
#define STATE "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz1"
#define BROWSER "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb1"

/* The reply as a string into out ("" for nil); 1 when it was a string. */
static int run_str(store_cmd_t *cmd, char *out, size_t cap)
{
    redisReply *r = run(cmd);
    int is = r->type == REDIS_REPLY_STRING;
    snprintf(out, cap, "%s", is ? r->str : "");
    freeReplyObject(r);
    return is;
}

static long long integer(const char *fmt, const char *a)
{
    redisReply *r = redisCommand(g_c, fmt, a);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return v;
}

static const char *get(const char *key)
{
    static char out[512];
    redisReply *r = redisCommand(g_c, "GET %s", key);
    snprintf(out, sizeof(out), "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return out;
}

/* prefix + kind + sha256 hex of value. */
static const char *hashed(const char *kind, const char *value)
{
    static char out[128];
    char h[65];
    sha256_hex(value, strlen(value), h);
    snprintf(out, sizeof(out), P "%s%s", kind, h);
    return out;
}

/* 1 when some key name or string value in Redis contains s. */
static int anywhere(const char *s)
{
    redisReply *keys = redisCommand(g_c, "KEYS *");
    int found = 0;
    for (size_t i = 0; i < keys->elements && !found; i++) {
        found = strstr(keys->element[i]->str, s) != NULL;
        redisReply *v = redisCommand(g_c, "GET %s", keys->element[i]->str);
        if (v->type == REDIS_REPLY_STRING && strstr(v->str, s) != NULL)
            found = 1;
        freeReplyObject(v);
    }
    freeReplyObject(keys);
    return found;
}

static config_t audit_cfg(void)
{
    config_t cfg = {0};
    cfg.redis_prefix = (char *)P;
    cfg.audit_retention_days = 30;
    return cfg;
}

/* ===== API keys ===== */

static void test_apikey_create_list_revoke(void **state)
{
    store_cmd_t cmd;
    char rec1[128], rec2[128];
    snprintf(rec1, sizeof(rec1), ORG "|%064d|1700000000", 1);
    snprintf(rec2, sizeof(rec2), ORG "|%064d|1700000100", 2);
    store_apikey_create(&cmd, P, ORG, "00000000000000a1", rec1, NULL);
    assert_int_equal(run_int(&cmd), 1);
    store_apikey_create(&cmd, P, ORG, "00000000000000a2", rec2, NULL);
    assert_int_equal(run_int(&cmd), 1);
    assert_string_equal(get(P "key:00000000000000a1"), rec1);
    assert_int_equal(integer("SCARD %s", P "org:" ORG ":keys"), 2);

    store_apikey_list(&cmd, P, ORG);
    redisReply *r = run(&cmd);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 4);
    for (size_t i = 0; i < 4; i += 2) {
        long created;
        assert_int_equal(store_apikey_created(r->element[i + 1]->str, r->element[i + 1]->len, &created), 0);
        assert_int_equal(created, strcmp(r->element[i]->str, "00000000000000a1") == 0 ? 1700000000 : 1700000100);
    }
    freeReplyObject(r);

    store_apikey_revoke(&cmd, P, ORG2, "00000000000000a1", NULL); /* another org's key: untouched */
    assert_int_equal(run_int(&cmd), 0);
    assert_string_equal(get(P "key:00000000000000a1"), rec1);
    store_apikey_revoke(&cmd, P, ORG, "00000000000000a1", NULL);
    assert_int_equal(run_int(&cmd), 1);
    assert_string_equal(get(P "key:00000000000000a1"), "");
    assert_int_equal(integer("SISMEMBER %s 00000000000000a1", P "org:" ORG ":keys"), 0);
    store_apikey_revoke(&cmd, P, ORG, "00000000000000a1", NULL); /* twice: nothing to do */
    assert_int_equal(run_int(&cmd), 0);

    store_apikey_list(&cmd, P, ORG);
    r = run(&cmd);
    assert_int_equal(r->elements, 2);
    assert_string_equal(r->element[0]->str, "00000000000000a2");
    freeReplyObject(r);
}

static void test_apikey_audit_only_for_a_change(void **state)
{
    config_t cfg = audit_cfg();
    audit_actor_t actor = {"admin", NULL};
    audit_tail_t t;
    store_cmd_t cmd;
    char rec[128];
    snprintf(rec, sizeof(rec), ORG "|%064d|1700000000", 1);
    audit_tail_make(&t, &cfg, ORG, "api_key.created", -1, &actor, NULL, "{\"key_id\":\"00000000000000a1\"}", NULL,
                    NULL);
    store_apikey_create(&cmd, P, ORG, "00000000000000a1", rec, &t);
    run_int(&cmd);
    audit_tail_free(&t);
    assert_int_equal(integer("XLEN %s", P "audit:" ORG), 1);

    audit_tail_make(&t, &cfg, ORG, "api_key.revoked", -1, &actor, NULL, "{\"key_id\":\"00000000000000ff\"}", NULL,
                    NULL);
    store_apikey_revoke(&cmd, P, ORG, "00000000000000ff", &t); /* no such key: no event */
    assert_int_equal(run_int(&cmd), 0);
    assert_int_equal(integer("XLEN %s", P "audit:" ORG), 1);
    store_apikey_revoke(&cmd, P, ORG, "00000000000000a1", &t);
    assert_int_equal(run_int(&cmd), 1);
    audit_tail_free(&t);
    assert_int_equal(integer("XLEN %s", P "audit:" ORG), 2);
}

static void test_apikey_created_needs_a_whole_record(void **state)
{
    long created = -1;
    assert_int_equal(store_apikey_created("short", 5, &created), -1);
    assert_int_equal(created, -1);
}

/* ===== Tickets, sessions, states ===== */

static void test_ticket_works_once_and_becomes_the_session(void **state)
{
    store_cmd_t cmd;
    char text[512];
    flow_session_t s = {.org = ORG, .mode = MODE_LIVE, .return_url = "https://acme.my.salesforce.com/x"};
    store_ticket_put(&cmd, P, TICKET, &s, 600);
    redisReply *r = run(&cmd);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    assert_int_equal(integer("TTL %s", hashed("ticket:", TICKET)) > 590, 1);
    assert_int_equal(anywhere(TICKET), 0); /* only its hash */

    store_ticket_redeem(&cmd, P, TICKET, SESSION, 1800);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 1);
    flow_session_t got = {0};
    assert_int_equal(flow_session_parse(text, strlen(text), &got), 0);
    assert_string_equal(got.org, ORG);
    assert_int_equal(got.mode, MODE_LIVE);
    assert_string_equal(got.return_url, s.return_url);
    flow_session_clear(&got);
    assert_int_equal(integer("TTL %s", hashed("sess:", SESSION)) > 1790, 1);
    assert_int_equal(anywhere(SESSION), 0);

    store_ticket_redeem(&cmd, P, TICKET, "another-session-value-of-43-characters-xyz", 1800);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 0); /* used */

    store_session_get(&cmd, P, SESSION);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 1);
    assert_int_equal(flow_session_parse(text, strlen(text), &got), 0);
    assert_string_equal(got.return_url, "https://acme.my.salesforce.com/x");
    flow_session_clear(&got);
}

static void test_state_binds_browser_and_session_and_moves_the_mode(void **state)
{
    store_cmd_t cmd;
    char text[512], bh[65], sh[65];
    flow_session_t s = {.org = ORG, .mode = MODE_TEST, .return_url = NULL};
    store_ticket_put(&cmd, P, TICKET, &s, 600);
    freeReplyObject(run(&cmd));
    store_ticket_redeem(&cmd, P, TICKET, SESSION, 1800);
    freeReplyObject(run(&cmd));

    s.mode = MODE_LIVE; /* the admin chose live on the page */
    store_state_put(&cmd, P, STATE, BROWSER, SESSION, &s, 600);
    assert_int_equal(run_int(&cmd), 1);
    assert_int_equal(anywhere(STATE), 0);
    assert_int_equal(anywhere(BROWSER), 0);
    assert_int_equal(integer("TTL %s", hashed("sess:", SESSION)) > 1790, 1); /* kept */
    store_session_get(&cmd, P, SESSION);
    run_str(&cmd, text, sizeof(text));
    flow_session_t got = {0};
    assert_int_equal(flow_session_parse(text, strlen(text), &got), 0);
    assert_int_equal(got.mode, MODE_LIVE);
    flow_session_clear(&got);

    store_state_take(&cmd, P, STATE);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 1);
    flow_state_t st;
    assert_int_equal(flow_state_parse(text, strlen(text), &st), 0);
    sha256_hex(BROWSER, strlen(BROWSER), bh);
    sha256_hex(SESSION, strlen(SESSION), sh);
    assert_string_equal(st.org, ORG);
    assert_int_equal(st.mode, MODE_LIVE);
    assert_string_equal(st.browser, bh);
    assert_string_equal(st.session, sh);
    store_state_take(&cmd, P, STATE);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 0); /* consumed */
}

static void test_state_never_recreates_an_ended_session(void **state)
{
    store_cmd_t cmd;
    flow_session_t s = {.org = ORG, .mode = MODE_TEST, .return_url = NULL};
    store_state_put(&cmd, P, STATE, BROWSER, SESSION, &s, 600);
    assert_int_equal(run_int(&cmd), 1);
    assert_int_equal(integer("EXISTS %s", hashed("sess:", SESSION)), 0);
    assert_int_equal(integer("EXISTS %s", hashed("state:", STATE)), 1);
}

static void test_flow_records_reject_what_is_not_theirs(void **state)
{
    static const char *const sessions[] = {
        "", "{}", "not json", "{\"org\":\"00D\",\"mode\":\"test\"}", "{\"org\":\"" ORG "\",\"mode\":\"prod\"}",
        "{\"org\":\"" ORG "\"}", "{\"mode\":\"test\"}",
    };
    for (size_t i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
        flow_session_t s = {.mode = -7};
        if (flow_session_parse(sessions[i], strlen(sessions[i]), &s) != -1 || s.mode != -7)
            fail_msg("accepted session %s", sessions[i]);
    }
    static const char *const states[] = {
        "{\"org\":\"" ORG "\",\"mode\":\"test\",\"browser\":\"ab\",\"session\":\"ab\"}",
        "{\"org\":\"" ORG "\",\"mode\":\"test\"}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        flow_state_t st;
        if (flow_state_parse(states[i], strlen(states[i]), &st) != -1)
            fail_msg("accepted state %s", states[i]);
    }
}

static void test_flow_session_round_trips(void **state)
{
    flow_session_t s = {.org = ORG, .mode = MODE_TEST, .return_url = "https://a.my.salesforce.com/?q=\"<x>\""};
    char *text = flow_session_json(&s);
    flow_session_t got = {0};
    assert_int_equal(flow_session_parse(text, strlen(text), &got), 0);
    assert_string_equal(got.org, ORG);
    assert_int_equal(got.mode, MODE_TEST);
    assert_string_equal(got.return_url, s.return_url);
    flow_session_clear(&got);
    free(text);
    s.return_url = NULL; /* none: parsed back as none */
    text = flow_session_json(&s);
    got.return_url = strdup("stale");
    assert_int_equal(flow_session_parse(text, strlen(text), &got), 0);
    assert_null(got.return_url);
    free(text);
}

/* ===== Webhook signing secrets ===== */

static void test_whsec_put_get_delete_audit_only_a_change(void **state)
{
    config_t cfg = audit_cfg();
    audit_actor_t actor = {"admin", NULL};
    audit_tail_t t;
    store_cmd_t cmd;
    char text[256];
    store_whsec_get(&cmd, P, ORG, MODE_LIVE);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 0);

    audit_tail_make(&t, &cfg, ORG, "webhook_secret.set", MODE_LIVE, &actor, NULL, NULL, NULL, NULL);
    store_whsec_put(&cmd, P, ORG, MODE_LIVE, "1700000000:1.k1.sealed", &t);
    assert_int_equal(run_int(&cmd), 1);
    audit_tail_free(&t);
    assert_string_equal(get(P "whsec:" ORG ":live"), "1700000000:1.k1.sealed");
    store_whsec_get(&cmd, P, ORG, MODE_LIVE);
    assert_int_equal(run_str(&cmd, text, sizeof(text)), 1);
    assert_string_equal(text, "1700000000:1.k1.sealed");
    assert_int_equal(integer("XLEN %s", P "audit:" ORG), 1);

    audit_tail_make(&t, &cfg, ORG, "webhook_secret.deleted", MODE_LIVE, &actor, NULL, NULL, NULL, NULL);
    store_whsec_delete(&cmd, P, ORG, MODE_LIVE, &t);
    assert_int_equal(run_int(&cmd), 1);
    store_whsec_delete(&cmd, P, ORG, MODE_LIVE, &t); /* nothing left: no second event */
    assert_int_equal(run_int(&cmd), 1);
    audit_tail_free(&t);
    assert_int_equal(integer("EXISTS %s", P "whsec:" ORG ":live"), 0);
    assert_int_equal(integer("XLEN %s", P "audit:" ORG), 2);

    store_whsec_put(&cmd, P, ORG, MODE_TEST, "1:x", NULL); /* no audit: nothing recorded */
    assert_int_equal(run_int(&cmd), 1);
    assert_int_equal(integer("XLEN %s", P "audit:" ORG), 2);
}

/* ===== The fleet page ===== */

static void test_fleet_page_pages_the_index(void **state)
{
    store_cmd_t cmd;
    freeReplyObject(redisCommand(g_c, "ZADD %s 0 %s 0 %s", P "orgs", ORG, ORG2));
    audit_fleet_page(&cmd, P, "", 1);
    redisReply *r = run(&cmd);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, AUDIT_FLEET_COLS);
    assert_string_equal(r->element[0]->str, ORG);
    freeReplyObject(r);
    audit_fleet_page(&cmd, P, ORG, 10);
    r = run(&cmd);
    assert_int_equal(r->elements, AUDIT_FLEET_COLS);
    assert_string_equal(r->element[0]->str, ORG2);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_apikey_create_list_revoke, flush),
        cmocka_unit_test_setup(test_apikey_audit_only_for_a_change, flush),
        cmocka_unit_test_setup(test_apikey_created_needs_a_whole_record, flush),
        cmocka_unit_test_setup(test_ticket_works_once_and_becomes_the_session, flush),
        cmocka_unit_test_setup(test_state_binds_browser_and_session_and_moves_the_mode, flush),
        cmocka_unit_test_setup(test_state_never_recreates_an_ended_session, flush),
        cmocka_unit_test_setup(test_flow_records_reject_what_is_not_theirs, flush),
        cmocka_unit_test_setup(test_flow_session_round_trips, flush),
        cmocka_unit_test_setup(test_whsec_put_get_delete_audit_only_a_change, flush),
        cmocka_unit_test_setup(test_fleet_page_pages_the_index, flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
