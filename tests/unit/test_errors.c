/* test_errors.c — the API error vocabulary of CONTRACT §4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/errors.h"

typedef struct err_case {
    api_err_t e;
    int status;
    const char *code;
} err_case_t;

static const err_case_t CONTRACT_TABLE[] = {
    {ERR_INVALID_REQUEST, 400, "invalid_request"},
    {ERR_MODE_NOT_ENABLED, 400, "mode_not_enabled"},
    {ERR_UNAUTHORIZED, 401, "unauthorized"},
    {ERR_FORBIDDEN, 403, "forbidden"},
    {ERR_NOT_CONNECTED, 404, "not_connected"},
    {ERR_NOT_FOUND, 404, "not_found"},
    {ERR_METHOD_NOT_ALLOWED, 405, "method_not_allowed"},
    {ERR_REAUTH_REQUIRED, 409, "reauthorization_required"},
    {ERR_PAYLOAD_TOO_LARGE, 413, "payload_too_large"},
    {ERR_RATE_LIMITED, 429, "rate_limited"},
    {ERR_RECORD_UNREADABLE, 500, "record_unreadable"},
    {ERR_STRIPE_UNAVAILABLE, 502, "stripe_unavailable"},
    {ERR_STORE_UNAVAILABLE, 503, "store_unavailable"},
};

static void test_errors_match_contract_table(void **state)
{
    size_t i;

    /* every error of the contract, and nothing else: ERR_NONE is success, not an error */
    assert_int_equal(sizeof(CONTRACT_TABLE) / sizeof(CONTRACT_TABLE[0]), ERR__COUNT - 1);
    for (i = 0; i < ERR__COUNT - 1; i++) {
        assert_int_equal(api_err_status(CONTRACT_TABLE[i].e), CONTRACT_TABLE[i].status);
        assert_string_equal(api_err_code(CONTRACT_TABLE[i].e), CONTRACT_TABLE[i].code);
    }
}

static void test_errors_have_one_sentence_messages(void **state)
{
    int e;

    for (e = ERR_NONE + 1; e < ERR__COUNT; e++) {
        const char *m = api_err_message((api_err_t)e);
        size_t len = strlen(m);
        assert_true(len > 20);
        assert_true(m[0] >= 'A' && m[0] <= 'Z');
        assert_int_equal(m[len - 1], '.');
    }
}

static void test_errors_reauth_message_says_what_to_do(void **state)
{
    assert_string_equal(api_err_message(ERR_REAUTH_REQUIRED),
                        "The Stripe authorization for this org and mode was revoked; an admin "
                        "must authorize again in the setup assistant.");
}

static void test_errors_json_has_contract_shape(void **state)
{
    int e;

    for (e = ERR_NONE + 1; e < ERR__COUNT; e++) {
        buf_t b = {0};
        json_t *doc, *err;
        api_err_json(&b, (api_err_t)e, NULL);
        doc = json_loads(b.p, 0, NULL);
        assert_non_null(doc);
        assert_int_equal(json_object_size(doc), 1);
        err = json_object_get(doc, "error");
        assert_int_equal(json_object_size(err), 2);
        assert_string_equal(json_string_value(json_object_get(err, "code")),
                            api_err_code((api_err_t)e));
        assert_string_equal(json_string_value(json_object_get(err, "message")),
                            api_err_message((api_err_t)e));
        json_decref(doc);
        buf_free(&b);
    }
}

static void test_errors_json_escapes_custom_message(void **state)
{
    buf_t b = {0};
    json_t *doc;

    api_err_json(&b, ERR_INVALID_REQUEST, "bad \"mode\"\n<x>");
    doc = json_loads(b.p, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "error"), "message")),
                        "bad \"mode\"\n<x>");
    assert_null(strchr(b.p, '<'));
    json_decref(doc);
    buf_free(&b);
}

static void test_errors_stripe_shape_adds_the_type(void **state)
{
    buf_t b = {0};
    api_err_json_stripe(&b, ERR_FORBIDDEN, NULL);
    assert_non_null(strstr(b.p, "\"type\":\"invalid_request_error\",\"code\":\"forbidden\",\"message\":"));
    buf_reset(&b);
    api_err_json_stripe(&b, ERR_STRIPE_UNAVAILABLE, "x");
    assert_string_equal(b.p, "{\"error\":{\"type\":\"api_error\",\"code\":\"stripe_unavailable\",\"message\":\"x\"}}");
    buf_reset(&b);
    api_err_json_stripe(&b, ERR_STORE_UNAVAILABLE, NULL);
    assert_non_null(strstr(b.p, "\"type\":\"api_error\""));
    buf_reset(&b);
    api_err_json(&b, ERR_FORBIDDEN, NULL);
    assert_null(strstr(b.p, "\"type\""));
    buf_free(&b);
}

static void test_errors_unknown_value_is_a_500(void **state)
{
    assert_int_equal(api_err_status(ERR__COUNT), 500);
    assert_int_equal(api_err_status((api_err_t)-1), 500);
    assert_int_equal(ERR_NONE, 0); /* success is 0: `if (err)` means "answer an error" */
    assert_int_equal(api_err_status(ERR_NONE), 500);
    assert_non_null(api_err_code(ERR__COUNT));
    assert_non_null(api_err_message((api_err_t)1000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_match_contract_table),
        cmocka_unit_test(test_errors_have_one_sentence_messages),
        cmocka_unit_test(test_errors_reauth_message_says_what_to_do),
        cmocka_unit_test(test_errors_json_has_contract_shape),
        cmocka_unit_test(test_errors_json_escapes_custom_message),
        cmocka_unit_test(test_errors_unknown_value_is_a_500),
        cmocka_unit_test(test_errors_stripe_shape_adds_the_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
