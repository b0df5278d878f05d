/* test_paging.c — the list routes' paging parameters (core/paging.h): limit, cursor,
 * since, status, every rule and its edges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/paging.h"
#include "core/timefmt.h"

static paging_err_t parse(const char *qs, paging_list_t list, paging_t *p)
{
    return paging_parse(qs, qs ? strlen(qs) : 0, list, p);
}

static void test_defaults_when_absent(void **state)
{
    paging_t p;
    assert_int_equal(parse(NULL, PAGING_AUDIT, &p), PAGING_OK);
    assert_int_equal(p.limit, 100);
    assert_string_equal(p.cursor, "");
    assert_true(p.since_ms == -1);
    assert_int_equal(parse("other=1&mode=test", PAGING_FLEET, &p), PAGING_OK);
    assert_int_equal(p.limit, 100);
    assert_int_equal(p.status, PAGING_STATUS_ANY);
}

static void test_limit_is_1_to_500(void **state)
{
    static const char *const bad[] = {"limit=0", "limit=501", "limit=", "limit=-1", "limit=+5", "limit=1e2",
                                      "limit=abc", "limit=10x", "limit=99999999", "limit=%31%30%30%00",
                                      "limit=1&limit=2", "limit=1%2"};
    paging_t p;
    assert_int_equal(parse("limit=1", PAGING_AUDIT, &p), PAGING_OK);
    assert_int_equal(p.limit, 1);
    assert_int_equal(parse("limit=500", PAGING_FLEET, &p), PAGING_OK);
    assert_int_equal(p.limit, 500);
    assert_int_equal(parse("limit=0042", PAGING_AUDIT, &p), PAGING_OK);
    assert_int_equal(p.limit, 42);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        paging_err_t e = parse(bad[i], PAGING_AUDIT, &p);
        assert_true(e == PAGING_BAD_LIMIT || e == PAGING_BAD_QUERY);
    }
    assert_int_equal(parse("limit=1&limit=2", PAGING_AUDIT, &p), PAGING_BAD_QUERY);
}

static void test_audit_cursor_is_a_stream_id(void **state)
{
    static const char *const bad[] = {"cursor=", "cursor=abc", "cursor=1-", "cursor=-1", "cursor=1-2-3",
                                      "cursor=1.5-0", "cursor=18446744073709551616-0", "cursor=1-018446744073709551615",
                                      "cursor=%2B1-0", "cursor=00DABC000000001XYZ"};
    paging_t p;
    assert_int_equal(parse("cursor=1733470000000-0", PAGING_AUDIT, &p), PAGING_OK);
    assert_string_equal(p.cursor, "1733470000000-0");
    assert_int_equal(parse("cursor=18446744073709551615-18446744073709551615", PAGING_AUDIT, &p), PAGING_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], PAGING_AUDIT, &p), PAGING_BAD_CURSOR);
}

static void test_fleet_cursor_is_an_org_id_and_status_two_values(void **state)
{
    paging_t p;
    assert_int_equal(parse("cursor=00D5g000004Ac1SEAS&status=connected", PAGING_FLEET, &p), PAGING_OK);
    assert_string_equal(p.cursor, "00D5g000004Ac1SEAS");
    assert_int_equal(p.status, PAGING_STATUS_CONNECTED);
    assert_int_equal(parse("status=reauthorization_required", PAGING_FLEET, &p), PAGING_OK);
    assert_int_equal(p.status, PAGING_STATUS_REAUTH);
    assert_int_equal(parse("cursor=1-0", PAGING_FLEET, &p), PAGING_BAD_CURSOR);
    assert_int_equal(parse("cursor=00D5g000004Ac1SEA", PAGING_FLEET, &p), PAGING_BAD_CURSOR);
    assert_int_equal(parse("cursor=00D5g000004Ac1SEA!", PAGING_FLEET, &p), PAGING_BAD_CURSOR);
    assert_int_equal(parse("status=revoked", PAGING_FLEET, &p), PAGING_BAD_STATUS);
    assert_int_equal(parse("status=", PAGING_FLEET, &p), PAGING_BAD_STATUS);
    /* each list ignores the other's parameters */
    assert_int_equal(parse("status=revoked", PAGING_AUDIT, &p), PAGING_OK);
    assert_int_equal(parse("since=yesterday", PAGING_FLEET, &p), PAGING_OK);
}

/* since is read by core/timefmt (test_timefmt.c has its forms); here what paging adds: the
 * query's decoding (an encoded '+', or one sent as is) and a time before 1970 as 0. */
static void test_since_is_rfc3339_to_the_millisecond(void **state)
{
    paging_t p;
    assert_int_equal(parse("since=2026-11-26T23%3A34%3A47%2B01%3A00", PAGING_AUDIT, &p), PAGING_OK);
    assert_true(p.since_ms == 1795732487000LL);
    assert_int_equal(parse("since=2026-11-26T23:34:47.1231+01:00", PAGING_AUDIT, &p), PAGING_OK);
    assert_true(p.since_ms == 1795732487124LL);
    assert_int_equal(parse("since=1969-01-01T00:00:00Z", PAGING_AUDIT, &p), PAGING_OK);
    assert_true(p.since_ms == 0); /* before 1970: everything */
    assert_int_equal(parse("since=2026-13-01T00:00:00Z", PAGING_AUDIT, &p), PAGING_BAD_SINCE);
}

static void test_before_is_the_previous_stream_id(void **state)
{
    char out[PAGING_CURSOR_MAX + 1];
    assert_int_equal(paging_before("1733470000000-5", out, sizeof(out)), 0);
    assert_string_equal(out, "1733470000000-4");
    assert_int_equal(paging_before("1733470000000-0", out, sizeof(out)), 0);
    assert_string_equal(out, "1733469999999-18446744073709551615");
    assert_int_equal(paging_before("0-1", out, sizeof(out)), 0);
    assert_string_equal(out, "0-0");
    assert_int_equal(paging_before("0-0", out, sizeof(out)), -1);
    assert_int_equal(paging_before("x", out, sizeof(out)), -1);
}

static void test_messages_never_echo_a_value(void **state)
{
    for (int e = PAGING_BAD_QUERY; e <= PAGING_BAD_STATUS; e++)
        assert_true(strlen(paging_message((paging_err_t)e)) > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_when_absent),
        cmocka_unit_test(test_limit_is_1_to_500),
        cmocka_unit_test(test_audit_cursor_is_a_stream_id),
        cmocka_unit_test(test_fleet_cursor_is_an_org_id_and_status_two_values),
        cmocka_unit_test(test_since_is_rfc3339_to_the_millisecond),
        cmocka_unit_test(test_before_is_the_previous_stream_id),
        cmocka_unit_test(test_messages_never_echo_a_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
