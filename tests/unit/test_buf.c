/* test_buf.c — growable buffers and JSON string escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/buf.h"

static void test_buf_appends_and_stays_terminated(void **state)
{
    buf_t b = {0};
    int i;

    for (i = 0; i < 1000; i++)
        buf_append(&b, "ab", 2);
    assert_int_equal(b.len, 2000);
    assert_int_equal(b.p[2000], '\0');
    assert_true(b.cap > b.len);
    buf_free(&b);
    assert_null(b.p);
}

static void test_buf_printf_formats(void **state)
{
    buf_t b = {0};

    buf_puts(&b, "x=");
    buf_printf(&b, "%d/%s", 42, "y");
    assert_string_equal(b.p, "x=42/y");
    buf_wipe(&b);
    assert_null(b.p);
}

static void test_buf_reset_keeps_memory(void **state)
{
    buf_t b = {0};

    buf_puts(&b, "secret");
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    buf_puts(&b, "ok");
    assert_string_equal(b.p, "ok");
    buf_free(&b);
}

typedef struct json_case {
    const char *in;
    size_t len;
    const char *want;
} json_case_t;

#define C(s, w) {s, sizeof(s) - 1, w}

static void test_buf_json_str_table(void **state)
{
    static const json_case_t cases[] = {
        C("", "\"\""),
        C("abc", "\"abc\""),
        C("a\"b\\c", "\"a\\\"b\\\\c\""),
        C("\n\r\t", "\"\\n\\r\\t\""),
        C("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""),
        C("a\0b", "\"a\\u0000b\""),
        C("</script>&", "\"\\u003c/script\\u003e\\u0026\""),
        C("caf\xc3\xa9 \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""),
        C("\xff", "\"\\ufffd\""),
        C("\xc3", "\"\\ufffd\""),
        C("\xc0\xaf", "\"\\ufffd\\ufffd\""),       /* overlong */
        C("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""), /* surrogate */
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_t b = {0};
        json_t *v;
        buf_json_str(&b, cases[i].in, cases[i].len);
        assert_string_equal(b.p, cases[i].want);
        v = json_loads(b.p, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        assert_non_null(v); /* always valid JSON */
        json_decref(v);
        buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_appends_and_stays_terminated),
        cmocka_unit_test(test_buf_printf_formats),
        cmocka_unit_test(test_buf_reset_keeps_memory),
        cmocka_unit_test(test_buf_json_str_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
