/* test_mode.c — the two Stripe modes: names and parsing (core/mode.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/mode.h"

static void test_mode_parses_test_and_live(void **state)
{
    assert_int_equal(mode_parse("test", 4), MODE_TEST);
    assert_int_equal(mode_parse("live", 4), MODE_LIVE);
}

static void test_mode_rejects_anything_else(void **state)
{
    static const char *const bad[] = {"", "tes", "tests", "Test", "LIVE", "lives", "prod", "test\n", " live"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (mode_parse(bad[i], strlen(bad[i])) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(mode_parse(NULL, 4), -1);
    assert_int_equal(mode_parse("test", 3), -1);        /* the length counts, not the NUL */
    assert_int_equal(mode_parse("test\0x", 6), -1);     /* an embedded NUL */
}

static void test_mode_names_round_trip(void **state)
{
    for (int m = 0; m < MODE_COUNT; m++)
        assert_int_equal(mode_parse(mode_name(m), strlen(mode_name(m))), m);
    assert_string_equal(mode_name(MODE_TEST), "test");
    assert_string_equal(mode_name(MODE_LIVE), "live");
}

static void test_mode_name_of_no_mode_is_unknown(void **state)
{
    assert_string_equal(mode_name(-1), "unknown");
    assert_string_equal(mode_name(MODE_COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_parses_test_and_live),
        cmocka_unit_test(test_mode_rejects_anything_else),
        cmocka_unit_test(test_mode_names_round_trip),
        cmocka_unit_test(test_mode_name_of_no_mode_is_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
