/* test_cookie.c — reading one cookie from a Cookie header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/cookie.h"

typedef struct cookie_case {
    const char *hdr;
    const char *name;
    int rc;
    const char *want;
} cookie_case_t;

static void test_cookie_get_table(void **state)
{
    static const cookie_case_t cases[] = {
        {"stb_setup=abc", "stb_setup", 1, "abc"},
        {"a=1; stb_setup=abc; b=2", "stb_setup", 1, "abc"},
        {"a=1;stb_setup=abc", "stb_setup", 1, "abc"},
        {"  stb_setup = abc  ;", "stb_setup", 1, "abc"},
        {"stb_setup=", "stb_setup", 1, ""},
        {"stb_setup=a=b", "stb_setup", 1, "a=b"},
        {"a=1; b=2", "stb_setup", 0, NULL},
        {"", "stb_setup", 0, NULL},
        {"xstb_setup=1; stb_setupx=2", "stb_setup", 0, NULL},
        {"STB_SETUP=1", "stb_setup", 0, NULL},  /* names are case-sensitive */
        {"stb_setup", "stb_setup", 0, NULL},    /* no '=': ignored */
        {";;;", "stb_setup", 0, NULL},
        {"stb_setup=1; stb_setup=2", "stb_setup", -1, NULL},
        {"stb_setup=1;stb_setup=1", "stb_setup", -1, NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *val = NULL;
        size_t vlen = 0;
        int rc = cookie_get(cases[i].hdr, strlen(cases[i].hdr), cases[i].name, &val, &vlen);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": %d, want %d", cases[i].hdr, rc, cases[i].rc);
        if (cases[i].want != NULL) {
            assert_int_equal(vlen, strlen(cases[i].want));
            assert_memory_equal(val, cases[i].want, vlen);
        }
    }
}

static void test_cookie_value_points_into_header(void **state)
{
    const char *hdr = "a=1; s=xyz";
    const char *val = NULL;
    size_t vlen = 0;

    assert_int_equal(cookie_get(hdr, strlen(hdr), "s", &val, &vlen), 1);
    assert_ptr_equal(val, hdr + 7);
    assert_int_equal(vlen, 3);
}

static void test_cookie_respects_len(void **state)
{
    const char *val = NULL;
    size_t vlen = 0;

    assert_int_equal(cookie_get("a=1; s=xyz", 4, "s", &val, &vlen), 0);
    assert_int_equal(cookie_get("s=xyz; s=2", 5, "s", &val, &vlen), 1);
    assert_int_equal(vlen, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_get_table),
        cmocka_unit_test(test_cookie_value_points_into_header),
        cmocka_unit_test(test_cookie_respects_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
