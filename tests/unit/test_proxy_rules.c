/* test_proxy_rules.c — the Stripe proxy's path, query and header rules (core/proxy_rules.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/proxy_rules.h"

typedef struct path_case {
    const char *path;
    const char *resource; /* NULL: refused */
} path_case_t;

static void test_proxy_path_accepts_plain_stripe_paths(void **state)
{
    static const path_case_t cases[] = {
        {"/v1/payment_intents", "payment_intents"},
        {"/v1/payment_intents/pi_3Mt2abc/capture", "payment_intents"},
        {"/v1/customers/cus_1/sources/card_1.x", "customers"},
        {"/v1/refunds", "refunds"},
        {"/v1/a-b", "a-b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *res = NULL;
        size_t n = 0;
        if (proxy_path_check(cases[i].path, strlen(cases[i].path), &res, &n) != 0)
            fail_msg("refused %s", cases[i].path);
        assert_int_equal(n, strlen(cases[i].resource));
        assert_memory_equal(res, cases[i].resource, n);
    }
}

static void test_proxy_path_refuses_traversal_encoding_and_empty_segments(void **state)
{
    static const char *const bad[] = {
        "",  "/", "/v1", "/v1/", "/v2/charges", "v1/charges", "/v1//charges", "/v1/charges/", "/v1/charges//x",
        "/v1/charges/../accounts", "/v1/../v1/accounts", "/v1/./charges", "/v1/charges/.", "/v1/charges/%2F..",
        "/v1/charges%2Fx", "/v1/charges/%2e%2e", "/v1/charges x", "/v1/charges\\..", "/v1/charges;x", "/v1/ch\x80",
        "/V1/charges", "/v1/charges?x=1", "/v1/charges#x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *res = NULL;
        size_t n = 0;
        if (proxy_path_check(bad[i], strlen(bad[i]), &res, &n) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    char longp[PROXY_PATH_MAX_BYTES + 2];
    memset(longp, 'a', sizeof(longp));
    memcpy(longp, "/v1/", 4);
    const char *res;
    size_t n;
    assert_int_equal(proxy_path_check(longp, PROXY_PATH_MAX_BYTES, &res, &n), 0);
    assert_int_equal(proxy_path_check(longp, PROXY_PATH_MAX_BYTES + 1, &res, &n), -1);
}

static void test_proxy_query_rules(void **state)
{
    assert_int_equal(proxy_query_check("", 0), 0);
    assert_int_equal(proxy_query_check("limit=3&expand[]=data.charges", 29), 0);
    assert_int_equal(proxy_query_check("a=b c", 5), -1);
    assert_int_equal(proxy_query_check("a=b#c", 5), -1);
    assert_int_equal(proxy_query_check("a=\x01", 3), -1);
    assert_int_equal(proxy_query_check("a=\xc3\xa9", 4), -1);
}

static void test_proxy_forwards_only_the_four_headers(void **state)
{
    assert_int_equal(proxy_fwd_header("content-type", 12), PROXY_FWD_CONTENT_TYPE);
    assert_int_equal(proxy_fwd_header("Accept", 6), PROXY_FWD_ACCEPT);
    assert_int_equal(proxy_fwd_header("IDEMPOTENCY-KEY", 15), PROXY_FWD_IDEMPOTENCY_KEY);
    assert_int_equal(proxy_fwd_header("stripe-version", 14), PROXY_FWD_STRIPE_VERSION);
    static const char *const dropped[] = {"authorization", "cookie", "stripe-account", "connection", "x-forwarded-for",
                                          "x-forwarded-host", "host", "transfer-encoding", "te", "upgrade",
                                          "proxy-authorization", "content-length", "accept-encoding", "stripe-versio",
                                          "content-type2"};
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        if (proxy_fwd_header(dropped[i], strlen(dropped[i])) != -1)
            fail_msg("forwards %s", dropped[i]);
    assert_int_equal(proxy_header_value_check("2024-06-20", 10), 0);
    assert_int_equal(proxy_header_value_check("", 0), -1);
    assert_int_equal(proxy_header_value_check("a\rb", 3), -1);
    assert_int_equal(proxy_header_value_check("a\x7f", 2), -1);
}

static void test_proxy_response_headers_kept(void **state)
{
#define RES(name, value) proxy_res_header(name, strlen(name), value, strlen(value))
    assert_int_equal(RES("Request-Id", "req_abc123"), PROXY_RES_REQUEST_ID);
    assert_int_equal(RES("retry-after", "2"), PROXY_RES_RETRY_AFTER);
    assert_int_equal(RES("STRIPE-VERSION", "2024-06-20"), PROXY_RES_STRIPE_VERSION);
    assert_int_equal(RES("Set-Cookie", "a=b"), -1);
    assert_int_equal(RES("Request-Id-X", "req_1"), -1);
    assert_int_equal(RES("Stripe-Version", ""), -1);
    assert_int_equal(RES("Request-Id", "req\r\nX: 1"), -1);
    assert_int_equal(RES("Request-Id", "req\x7f"), -1);
#undef RES
    assert_int_equal(proxy_request_id_ok("req_AZaz09-_", 12), 1);
    assert_int_equal(proxy_request_id_ok("req\"x", 5), 0);
    assert_int_equal(proxy_request_id_ok("", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_path_accepts_plain_stripe_paths),
        cmocka_unit_test(test_proxy_path_refuses_traversal_encoding_and_empty_segments),
        cmocka_unit_test(test_proxy_query_rules),
        cmocka_unit_test(test_proxy_forwards_only_the_four_headers),
        cmocka_unit_test(test_proxy_response_headers_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
