/* test_record.c — the connection record's JSON form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/crypto.h"
#include "core/record.h"
#include "core/stripe_resp.h"

static conn_record_t sample(void)
{
    conn_record_t r;

    memset(&r, 0, sizeof(r));
    r.status = CONN_CONNECTED;
    r.access_token = strdup("sk_test_access\"\\\n");
    r.refresh_token = strdup("rt_refresh");
    r.stripe_user_id = strdup("acct_123");
    r.stripe_publishable_key = strdup("pk_test_1");
    r.scope = strdup("read_write");
    r.livemode = 1;
    r.connected_at = 1795732487;
    r.refreshed_at = 1795732500;
    r.expires_at = 1795736087;
    strcpy(r.derived_from, "live");
    return r;
}

static void test_record_round_trips_every_field(void **state)
{
    conn_record_t r = sample(), back;
    char *json = conn_record_encode(&r);

    assert_int_equal(conn_record_decode(json, strlen(json), &back), 0);
    assert_int_equal(back.status, CONN_CONNECTED);
    assert_string_equal(back.access_token, r.access_token);
    assert_string_equal(back.refresh_token, "rt_refresh");
    assert_string_equal(back.stripe_user_id, "acct_123");
    assert_string_equal(back.stripe_publishable_key, "pk_test_1");
    assert_string_equal(back.scope, "read_write");
    assert_int_equal(back.livemode, 1);
    assert_int_equal(back.connected_at, 1795732487);
    assert_int_equal(back.refreshed_at, 1795732500);
    assert_int_equal(back.expires_at, 1795736087);
    assert_string_equal(back.derived_from, "live");
    secure_free_str(json);
    conn_record_clear(&r);
    conn_record_clear(&back);
}

static void test_record_encodes_documented_fields(void **state)
{
    conn_record_t r = sample();
    char *json = conn_record_encode(&r);
    json_t *doc = json_loads(json, 0, NULL);

    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "connected");
    assert_true(json_is_true(json_object_get(doc, "livemode")));
    assert_int_equal(json_integer_value(json_object_get(doc, "expires_at")), 1795736087);
    assert_string_equal(json_string_value(json_object_get(doc, "derived_from")), "live");
    json_decref(doc);
    secure_free_str(json);
    conn_record_clear(&r);
}

static void test_record_revoked_round_trips_without_tokens(void **state)
{
    conn_record_t r, back;
    char *json;

    memset(&r, 0, sizeof(r));
    r.status = CONN_REAUTH_REQUIRED;
    r.stripe_user_id = strdup("acct_1");
    json = conn_record_encode(&r);
    assert_null(strstr(json, "access_token"));
    assert_null(strstr(json, "derived_from"));
    assert_non_null(strstr(json, "\"reauthorization_required\""));
    assert_int_equal(conn_record_decode(json, strlen(json), &back), 0);
    assert_int_equal(back.status, CONN_REAUTH_REQUIRED);
    assert_null(back.access_token);
    assert_null(back.refresh_token);
    assert_string_equal(back.derived_from, "");
    secure_free_str(json);
    conn_record_clear(&r);
    conn_record_clear(&back);
}

static void test_record_decode_ignores_unknown_fields(void **state)
{
    const char *j = "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\","
                    "\"stripe_user_id\":\"acct_1\",\"future\":[1,2]}";
    conn_record_t r;

    assert_int_equal(conn_record_decode(j, strlen(j), &r), 0);
    assert_int_equal(r.expires_at, 0);
    assert_int_equal(r.livemode, 0);
    conn_record_clear(&r);
}

static void test_record_decode_rejects_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "null",
        "[]",
        "{",
        "{}",
        "{\"v\":2,\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\"}",
        "{\"v\":\"1\",\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\"}",
        "{\"v\":1,\"status\":\"revoked\",\"access_token\":\"a\",\"stripe_user_id\":\"x\"}",
        "{\"v\":1,\"access_token\":\"a\",\"stripe_user_id\":\"x\"}",
        "{\"v\":1,\"status\":\"connected\",\"stripe_user_id\":\"x\"}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\"}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":1,\"stripe_user_id\":\"x\"}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\\u0000b\",\"stripe_user_id\":\"x\"}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\","
        "\"livemode\":1}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\","
        "\"expires_at\":-5}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\","
        "\"connected_at\":1.5}",
        "{\"v\":1,\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\","
        "\"derived_from\":\"sandbox\"}",
        "{\"v\":1,\"v\":1,\"status\":\"connected\",\"access_token\":\"a\",\"stripe_user_id\":\"x\"}",
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        conn_record_t r;
        if (conn_record_decode(bad[i], strlen(bad[i]), &r) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_null(r.access_token);
        assert_null(r.stripe_user_id);
    }
}

static void test_record_clear_leaves_zeroed_record(void **state)
{
    conn_record_t r = sample();

    conn_record_clear(&r);
    assert_null(r.access_token);
    assert_null(r.refresh_token);
    assert_null(r.stripe_user_id);
    assert_int_equal(r.connected_at, 0);
    assert_string_equal(r.derived_from, "");
    conn_record_clear(&r);
}

static void test_record_revoke_drops_both_tokens_and_keeps_the_rest(void **state)
{
    conn_record_t r = {0};
    r.status = CONN_CONNECTED;
    r.access_token = strdup("sk_test_a");
    r.refresh_token = strdup("rt_test_a");
    r.stripe_user_id = strdup("acct_1");
    r.connected_at = 100;
    r.expires_at = 200;
    conn_record_revoke(&r);
    assert_int_equal(r.status, CONN_REAUTH_REQUIRED);
    assert_null(r.access_token);
    assert_null(r.refresh_token);
    assert_int_equal(r.expires_at, 0);
    assert_string_equal(r.stripe_user_id, "acct_1");
    assert_int_equal(r.connected_at, 100);
    conn_record_clear(&r);
}

static void test_record_from_token_moves_the_answer_and_fills_from_base(void **state)
{
    stripe_token_t tok = {0};
    tok.access_token = strdup("sk_test_new");
    tok.stripe_user_id = strdup("acct_1");
    tok.expires_in = -1;
    conn_record_t base = {0}, r = {0};
    base.refresh_token = strdup("rt_base");
    base.scope = strdup("read_write");
    base.stripe_publishable_key = strdup("pk_base");
    conn_record_from_token(&r, &tok, &base, 1, 1, 50, 1000);
    assert_int_equal(r.status, CONN_CONNECTED);
    assert_string_equal(r.access_token, "sk_test_new");
    assert_null(tok.access_token); /* moved */
    assert_null(tok.stripe_user_id);
    assert_string_equal(r.refresh_token, "rt_base");
    assert_string_equal(r.scope, "read_write");
    assert_string_equal(r.stripe_publishable_key, "pk_base");
    assert_int_equal(r.livemode, 1);
    assert_int_equal(r.connected_at, 50);
    assert_int_equal(r.refreshed_at, 1000);
    assert_int_equal(r.expires_at, 1000 + STRIPE_APPS_TOKEN_TTL_S); /* apps, no expires_in */
    assert_string_equal(r.derived_from, "");
    conn_record_clear(&r);
    /* no base, connect: nothing invented, no expiry */
    tok.access_token = strdup("sk_live_x");
    tok.expires_in = -1;
    conn_record_from_token(&r, &tok, NULL, 0, 0, 7, 7);
    assert_null(r.refresh_token);
    assert_null(r.scope);
    assert_int_equal(r.expires_at, 0);
    conn_record_clear(&r);
    conn_record_clear(&base);
    stripe_token_clear(&tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trips_every_field),
        cmocka_unit_test(test_record_encodes_documented_fields),
        cmocka_unit_test(test_record_revoked_round_trips_without_tokens),
        cmocka_unit_test(test_record_decode_ignores_unknown_fields),
        cmocka_unit_test(test_record_decode_rejects_malformed),
        cmocka_unit_test(test_record_clear_leaves_zeroed_record),
        cmocka_unit_test(test_record_revoke_drops_both_tokens_and_keeps_the_rest),
        cmocka_unit_test(test_record_from_token_moves_the_answer_and_fills_from_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
