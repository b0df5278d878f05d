/* test_timefmt.c — RFC 3339 UTC timestamps and the monotonic clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/timefmt.h"

typedef struct time_case {
    time_t t;
    const char *s;
} time_case_t;

static const time_case_t KNOWN[] = {
    {0, "1970-01-01T00:00:00Z"},
    {1795732487, "2026-11-26T22:34:47Z"},
    {951782400, "2000-02-29T00:00:00Z"},
    {4102444799, "2099-12-31T23:59:59Z"},
};

static void test_time_rfc3339_formats_utc(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(KNOWN) / sizeof(KNOWN[0]); i++) {
        char out[21];
        time_rfc3339(KNOWN[i].t, out);
        assert_string_equal(out, KNOWN[i].s);
    }
}

static void test_time_rfc3339_clamps_out_of_range(void **state)
{
    char out[21];

    time_rfc3339((time_t)999999999999999LL, out);
    assert_string_equal(out, "9999-12-31T23:59:59Z");
    time_rfc3339((time_t)-999999999999999LL, out);
    assert_string_equal(out, "0000-01-01T00:00:00Z");
}

static void test_time_parse_reads_what_format_writes(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(KNOWN) / sizeof(KNOWN[0]); i++) {
        time_t t = -1;
        assert_int_equal(time_parse_rfc3339(KNOWN[i].s, &t), 0);
        assert_int_equal(t, KNOWN[i].t);
    }
}

static void test_time_parse_rejects_other_forms(void **state)
{
    static const char *const bad[] = {
        "",
        "2026-11-26",
        "2026-11-26T22:34:47",
        "2026-11-26T22:34:47+00:00",
        "2026-11-26T22:34:47.123Z",
        "2026-11-26 22:34:47Z",
        "2026-11-26t22:34:47z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T22:60:00Z",
        "2026-11-26T22:34:60Z",
        "+026-11-26T22:34:47Z",
        "2026-1a-26T22:34:47Z",
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        time_t t;
        if (time_parse_rfc3339(bad[i], &t) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

/* time_parse_rfc3339_ms takes the RFC 3339 forms callers write (Python's isoformat,
 * JavaScript's toISOString, other offsets) to the millisecond. */
static void test_time_parse_ms_reads_rfc3339_forms(void **state)
{
    static const struct {
        const char *s;
        long long ms;
    } ok[] = {
        {"2026-11-26T22:34:47Z", 1795732487000LL},
        {"2026-11-26t22:34:47z", 1795732487000LL},
        {"2026-11-26T22:34:47+00:00", 1795732487000LL},
        {"2026-11-26T22:34:47-00:00", 1795732487000LL},
        {"2026-11-26T22:34:47.123Z", 1795732487123LL},
        {"2026-11-26T22:34:47.5Z", 1795732487500LL},
        {"2026-11-26T22:34:47.120000+00:00", 1795732487120LL},
        {"2026-11-26T22:34:47.123001+00:00", 1795732487124LL}, /* below a ms: rounded up */
        {"2026-11-26T22:34:47.999999Z", 1795732488000LL},
        {"2026-11-27T00:34:47+02:00", 1795732487000LL},
        {"2026-11-26T19:04:47-03:30", 1795732487000LL},
        {"1970-01-01T00:00:00Z", 0LL},
        {"1969-12-31T23:59:59Z", -1000LL},
        {"2024-02-29T00:00:00Z", 1709164800000LL},
        {"2016-12-31T23:59:60Z", 1483228800000LL}, /* a leap second */
        {"2026-11-26T23:34:47 01:00", 1795732487000LL}, /* a query's unencoded '+' */
        {"2026-11-26T22:34:47.1230000Z", 1795732487123LL},
    };
    size_t i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        long long ms = -1;
        if (time_parse_rfc3339_ms(ok[i].s, &ms) != 0)
            fail_msg("refused \"%s\"", ok[i].s);
        if (ms != ok[i].ms)
            fail_msg("\"%s\" read as %lld, not %lld", ok[i].s, ms, ok[i].ms);
    }
}

static void test_time_parse_ms_rejects_other_forms(void **state)
{
    static const char *const bad[] = {
        "",
        "2026-11-26",
        "2026-11-26T22:34:47",
        "2026-11-26 22:34:47Z",
        "2026-11-26T22:34:47.Z",
        "2026-11-26T22:34:47.12a3Z",
        "2026-11-26T22:34:47+0000",
        "2026-11-26T22:34:47+00",
        "2026-11-26T22:34:47+24:00",
        "2026-11-26T22:34:47+01:60",
        "2026-11-26T22:34:47+01:00x",
        "2026-11-26T22:34:47Z ",
        "2026-11-26T22:34:47ZZ",
        "2026-02-29T00:00:00Z",
        "2026-11-26T22:34:61Z",
        "2026-11-26T22:34",
        "yesterday",
        "1795732487",
        "2026-13-01T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-1-26T22:34:47Z",
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long long ms;
        if (time_parse_rfc3339_ms(bad[i], &ms) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

/* time_mono_ms is CLOCK_MONOTONIC in milliseconds: a reading taken between two calls
 * lies between them (a constant or a wall clock would not), and it never goes back. */
static void test_time_mono_ms_is_the_monotonic_clock(void **state)
{
    struct timespec ts;
    uint64_t prev = 0;

    for (int i = 0; i < 1000; i++) {
        uint64_t a = time_mono_ms();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t b = time_mono_ms();
        uint64_t c = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        assert_true(a <= c);
        assert_true(c <= b);
        assert_true(a >= prev);
        prev = b;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_rfc3339_formats_utc),
        cmocka_unit_test(test_time_rfc3339_clamps_out_of_range),
        cmocka_unit_test(test_time_parse_reads_what_format_writes),
        cmocka_unit_test(test_time_parse_rejects_other_forms),
        cmocka_unit_test(test_time_parse_ms_reads_rfc3339_forms),
        cmocka_unit_test(test_time_parse_ms_rejects_other_forms),
        cmocka_unit_test(test_time_mono_ms_is_the_monotonic_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
