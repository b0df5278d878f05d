/* test_html.c — the HTML escaper. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/html.h"

typedef struct html_case {
    const char *in;
    size_t len;
    const char *want;
} html_case_t;

#define C(s, w) {s, sizeof(s) - 1, w}

static void test_html_escape_table(void **state)
{
    static const html_case_t cases[] = {
        C("", ""),
        C("plain text", "plain text"),
        C("&", "&amp;"),
        C("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        C("\" onmouseover=\"x", "&quot; onmouseover=&quot;x"),
        C("it's", "it&#39;s"),
        C("&amp;", "&amp;amp;"),
        C("a\tb\nc", "a\tb\nc"),
        C("a\rb\x01\x1f\x7f" "c", "abc"),
        C("a\0b", "ab"),
        C("caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac"),
        C("acct_1<>&\"'", "acct_1&lt;&gt;&amp;&quot;&#39;"),
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_t b = {0};
        html_escape(&b, cases[i].in, cases[i].len);
        assert_string_equal(b.len > 0 ? b.p : "", cases[i].want);
        assert_int_equal(b.len, strlen(cases[i].want));
        buf_free(&b);
    }
}

static void test_html_escape_appends_to_existing_content(void **state)
{
    buf_t b = {0};

    buf_puts(&b, "<p>");
    html_escape(&b, "<b>", 3);
    buf_puts(&b, "</p>");
    assert_string_equal(b.p, "<p>&lt;b&gt;</p>");
    buf_free(&b);
}

static void test_html_escape_respects_len(void **state)
{
    buf_t b = {0};

    html_escape(&b, "ab<cd", 3);
    assert_string_equal(b.p, "ab&lt;");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_html_escape_table),
        cmocka_unit_test(test_html_escape_appends_to_existing_content),
        cmocka_unit_test(test_html_escape_respects_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
