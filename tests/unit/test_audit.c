/* test_audit.c — the audit event and out-event encoding (store/audit.h), the Broker-Signature
 * and the delivery back-off (events/events.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "events/events.h"
#include "store/audit.h"

static config_t cfg_with(const char *events_url)
{
    config_t c;
    memset(&c, 0, sizeof(c));
    c.redis_prefix = "stb:";
    c.audit_retention_days = 400;
    c.events_url = (char *)events_url;
    return c;
}

static void test_audit_tail_encodes_the_event_and_no_out_event_without_a_url(void **state)
{
    config_t c = cfg_with(NULL);
    audit_tail_t t;
    audit_actor_t a = {"api_key", "0123456789abcdef"};
    audit_tail_make(&t, &c, "00D000000000001EAA", "token.rotated", MODE_LIVE, &a, "req1",
                    "{\"stripe_user_id\":\"acct_1\"}", "connection.recovered", NULL);
    assert_string_equal(t.argv[0], "stb:audit:00D000000000001EAA");
    assert_string_equal(t.argv[1], "34560000");
    json_t *e = json_loads(t.argv[2], 0, NULL);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "token.rotated");
    assert_string_equal(json_string_value(json_object_get(e, "mode")), "live");
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "actor"), "kind")), "api_key");
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "actor"), "id")), "0123456789abcdef");
    assert_string_equal(json_string_value(json_object_get(e, "request_id")), "req1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "details"), "stripe_user_id")), "acct_1");
    json_decref(e);
    assert_string_equal(t.argv[3], "");
    assert_string_equal(t.argv[4], "");
    audit_tail_free(&t);
}

static void test_audit_tail_out_event_with_a_url(void **state)
{
    config_t c = cfg_with("https://hooks.example.com");
    audit_tail_t t;
    audit_actor_t a = {"broker", NULL};
    audit_tail_make(&t, &c, "00D000000000001EAA", "connection.deleted", MODE_TEST, &a, NULL, NULL,
                    "connection.deleted", "{\"x\":1}");
    assert_string_equal(t.argv[3], "stb:outbox");
    json_t *o = json_loads(t.argv[4], 0, NULL);
    assert_non_null(o);
    const char *id = json_string_value(json_object_get(o, "id"));
    assert_non_null(id);
    assert_int_equal(strlen(id), 28);
    assert_memory_equal(id, "evt_", 4);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "connection.deleted");
    assert_string_equal(json_string_value(json_object_get(o, "org_id")), "00D000000000001EAA");
    assert_string_equal(json_string_value(json_object_get(o, "mode")), "test");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "data"), "x")), 1);
    json_decref(o);
    /* the audit event of a broker action has no request id and an actor without id */
    json_t *e = json_loads(t.argv[2], 0, NULL);
    assert_null(json_object_get(e, "request_id"));
    assert_null(json_object_get(json_object_get(e, "actor"), "id"));
    assert_int_equal(json_object_size(json_object_get(e, "details")), 0);
    json_decref(e);
    audit_tail_free(&t);
    audit_tail_none(&t);
    for (int i = 0; i < AUDIT_TAIL_ARGS; i++)
        assert_string_equal(t.argv[i], "");
    audit_tail_free(&t);
}

static void test_audit_entry_json_adds_id_and_time(void **state)
{
    char *out;
    const char *e = "{\"type\":\"api_key.created\",\"actor\":{\"kind\":\"admin\"},\"details\":{}}";
    assert_int_equal(audit_entry_json("1795732487123-4", 15, e, strlen(e), &out), 0);
    assert_string_equal(out, "{\"id\":\"1795732487123-4\",\"at\":\"2026-11-26T22:34:47Z\",\"type\":\"api_key.created\","
                             "\"actor\":{\"kind\":\"admin\"},\"details\":{}}");
    free(out);
    assert_int_equal(audit_entry_json("x-1", 3, e, strlen(e), &out), -1);
    assert_int_equal(audit_entry_json("1-1", 3, "[]", 2, &out), -1);
    assert_int_equal(audit_entry_json("1-1", 3, "{", 1, &out), -1);
}

static void test_audit_cursor_valid(void **state)
{
    assert_int_equal(audit_cursor_valid("1795732487123-0"), 0);
    assert_int_equal(audit_cursor_valid("0-0"), 0);
    assert_int_equal(audit_cursor_valid("1795732487123"), -1);
    assert_int_equal(audit_cursor_valid("-1"), -1);
    assert_int_equal(audit_cursor_valid("1-"), -1);
    assert_int_equal(audit_cursor_valid("1-2-3"), -1);
    assert_int_equal(audit_cursor_valid("12345678901234567890-0"), -1);
    assert_int_equal(audit_cursor_valid(""), -1);
}

static void test_events_signature_is_hmac_of_t_dot_body(void **state)
{
    char sig[128];
    const char *body = "{\"id\":\"evt_1\"}";
    events_signature("evsec_0123456789abcdef", 1764990000, body, strlen(body), sig, sizeof(sig));
    assert_string_equal(sig, "t=1764990000,v1=ea0d5249adb67d2aa58609a9e90c68a53e578a681ff6a74bcb3366749694d451");
}

static void test_events_backoff_doubles_with_jitter_up_to_the_cap(void **state)
{
    assert_int_equal(events_backoff_ms(1, 600000, 0.0), 500);
    assert_int_equal(events_backoff_ms(1, 600000, 0.999), 1499);   /* the first retry within 5 s */
    assert_int_equal(events_backoff_ms(2, 600000, 0.5), 2000);
    assert_int_equal(events_backoff_ms(5, 600000, 0.5), 16000);
    assert_int_equal(events_backoff_ms(40, 600000, 0.5), 600000);  /* capped, no overflow */
    assert_int_equal(events_backoff_ms(3, 2000, 0.0), 1000);
    /* the jitter never passes BROKER_EVENTS_RETRY_MAX_S */
    assert_int_equal(events_backoff_ms(40, 600000, 0.999), 600000);
    assert_int_equal(events_backoff_ms(2, 2000, 0.9), 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_tail_encodes_the_event_and_no_out_event_without_a_url),
        cmocka_unit_test(test_audit_tail_out_event_with_a_url),
        cmocka_unit_test(test_audit_entry_json_adds_id_and_time),
        cmocka_unit_test(test_audit_cursor_valid),
        cmocka_unit_test(test_events_signature_is_hmac_of_t_dot_body),
        cmocka_unit_test(test_events_backoff_doubles_with_jitter_up_to_the_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
