/* test_form.c — query strings and form bodies: decoding, lookup, encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/form.h"

/* ===== form_unescape ===== */

typedef struct unescape_case {
    const char *in;
    int plus_is_space;
    const char *want; /* NULL: malformed */
} unescape_case_t;

static void test_form_unescape_table(void **state)
{
    static const unescape_case_t cases[] = {
        {"", 1, ""},
        {"abc", 1, "abc"},
        {"a%20b", 1, "a b"},
        {"a+b", 1, "a b"},
        {"a+b", 0, "a+b"},
        {"%2B", 1, "+"},
        {"%2b%2F%3d", 1, "+/="},
        {"%C3%A9", 1, "\xc3\xa9"},
        {"100%25", 1, "100%"},
        {"%", 1, NULL},
        {"%4", 1, NULL},
        {"a%4", 1, NULL},
        {"%G0", 1, NULL},
        {"%0G", 1, NULL},
        {"%%30", 1, NULL},
        {"% 20", 1, NULL},
        {"%00", 1, NULL},
        {"a%00b", 0, NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        ssize_t n = form_unescape(cases[i].in, strlen(cases[i].in), out, cases[i].plus_is_space);
        if (cases[i].want == NULL) {
            if (n != -1)
                fail_msg("accepted \"%s\"", cases[i].in);
        } else {
            if (n < 0)
                fail_msg("rejected \"%s\"", cases[i].in);
            assert_int_equal((size_t)n, strlen(cases[i].want));
            assert_string_equal(out, cases[i].want);
        }
    }
}

static void test_form_unescape_rejects_literal_nul(void **state)
{
    char out[8];

    assert_int_equal(form_unescape("a\0b", 3, out, 1), -1);
}

static void test_form_unescape_stops_at_len(void **state)
{
    char out[8];

    assert_int_equal(form_unescape("ab%41", 2, out, 1), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(form_unescape("%41", 2, out, 1), -1); /* escape cut by len */
}

/* ===== form_get ===== */

typedef struct get_case {
    const char *qs;
    const char *name;
    int rc;
    const char *want;
} get_case_t;

static void test_form_get_table(void **state)
{
    static const get_case_t cases[] = {
        {"a=1&b=2", "a", 1, "1"},
        {"a=1&b=2", "b", 1, "2"},
        {"a=1&b=2", "c", 0, NULL},
        {"", "a", 0, NULL},
        {"a=", "a", 1, ""},
        {"a", "a", 1, ""},
        {"a&b=2", "b", 1, "2"},
        {"mode=test&return_url=https%3A%2F%2Fx.my.salesforce.com%2Fa%3Fb%3D1", "return_url", 1,
         "https://x.my.salesforce.com/a?b=1"},
        {"q=a+b%2Bc", "q", 1, "a b+c"},
        {"a=1&&b=2", "b", 1, "2"},
        {"&a=1&", "a", 1, "1"},
        {"a=x=y", "a", 1, "x=y"},
        {"%61=1", "a", 1, "1"},           /* names are compared after decoding */
        {"a+b=1", "a b", 1, "1"},
        {"A=1", "a", 0, NULL},            /* names are case-sensitive */
        {"ab=1", "a", 0, NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *v = (char *)"unset";
        int rc = form_get(cases[i].qs, strlen(cases[i].qs), cases[i].name, &v);
        if (rc != cases[i].rc)
            fail_msg("form_get(\"%s\", %s) = %d", cases[i].qs, cases[i].name, rc);
        if (cases[i].want != NULL)
            assert_string_equal(v, cases[i].want);
        else
            assert_null(v);
        free(v);
    }
}

/* form_get_buf gives form_get's answers without an allocation, and 2 for a value whose
 * escaped form does not fit. */
static void test_form_get_buf_agrees_and_bounds(void **state)
{
    static const char *qs[] = {"mode=test", "mode=live&x=1", "x=1", "mode=te%73t", "mode=test&mode=live",
                               "mode=%zz", "mode=", "mode=testtesttesttest", "mode=%74%65%73%74%74"};
    char dst[16];
    size_t i;

    for (i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        char *v = NULL;
        int rc = form_get(qs[i], strlen(qs[i]), "mode", &v), brc;
        memset(dst, 'z', sizeof(dst));
        brc = form_get_buf(qs[i], strlen(qs[i]), "mode", dst, sizeof(dst));
        if (rc == 1 && strlen(qs[i]) - 5 >= sizeof(dst)) {
            assert_int_equal(brc, 2);
            assert_string_equal(dst, "");
        } else {
            assert_int_equal(brc, rc);
            assert_string_equal(dst, rc == 1 ? v : "");
        }
        free(v);
    }
    /* the bound is on the escaped form: 15 bytes fit in 16, 16 do not */
    assert_int_equal(form_get_buf("a=123456789012345", 17, "a", dst, 16), 1);
    assert_string_equal(dst, "123456789012345");
    assert_int_equal(form_get_buf("a=1234567890123456", 18, "a", dst, 16), 2);
}

static void test_form_get_rejects_duplicate_name(void **state)
{
    char *v = NULL;

    assert_int_equal(form_get("mode=test&mode=live", 19, "mode", &v), -1);
    assert_null(v);
    assert_int_equal(form_get("mode=test&mo%64e=test", 21, "mode", &v), -1);
    assert_null(v);
}

static void test_form_get_rejects_bad_escape_anywhere(void **state)
{
    char *v = NULL;
    const char *qs = "a=1&junk=%zz";

    assert_int_equal(form_get(qs, strlen(qs), "a", &v), -1);
    assert_null(v);
    qs = "a=1&b%=2";
    assert_int_equal(form_get(qs, strlen(qs), "a", &v), -1);
}

static void test_form_get_rejects_nul_escape(void **state)
{
    char *v = NULL;
    const char *qs = "code=ac_1%00x";

    assert_int_equal(form_get(qs, strlen(qs), "code", &v), -1);
    assert_null(v);
}

static void test_form_get_respects_len(void **state)
{
    char *v = NULL;

    assert_int_equal(form_get("a=1&b=2", 3, "b", &v), 0);
    assert_int_equal(form_get("a=123", 4, "a", &v), 1);
    assert_string_equal(v, "12");
    free(v);
}

static void test_form_get_escaped_names_of_any_length(void **state)
{
    /* a name is compared after decoding, however long its escaped form */
    const char *name = "a_long_name_whose_escaped_form_needs_more_than_128_bytes";
    buf_t qs = {0};
    char *v = NULL;

    for (const char *c = name; *c != '\0'; c++)
        buf_printf(&qs, "%%%02x", (unsigned char)*c);
    buf_puts(&qs, "=v%41&mode=live");
    assert_true(qs.len > 128);
    assert_int_equal(form_get(qs.p, qs.len, name, &v), 1);
    assert_string_equal(v, "vA");
    free(v);
    assert_int_equal(form_get(qs.p, qs.len, "mode", &v), 1);
    assert_string_equal(v, "live");
    free(v);
    /* a segment too long to be the name is still checked */
    assert_int_equal(form_get("mode=live&xxxxxxxxxxxxxxxxxxxx%zz=1", 35, "mode", &v), -1);
    assert_null(v);
    buf_free(&qs);
}

static void test_form_unescape_without_destination_only_checks(void **state)
{
    assert_int_equal(form_unescape("a%41+b", 6, NULL, 1), 4);
    assert_int_equal(form_unescape("a%4", 3, NULL, 1), -1);
    assert_int_equal(form_unescape("a%00", 4, NULL, 1), -1);
}

/* ===== form_append ===== */

static void test_form_append_encodes_all_but_unreserved(void **state)
{
    buf_t b = {0};

    form_append(&b, "redirect_uri", "https://b.example.com/oauth/callback?x=1&y=a b+c~._-");
    assert_string_equal(b.p, "redirect_uri=https%3A%2F%2Fb.example.com%2Foauth%2Fcallback%3Fx%3D1"
                             "%26y%3Da%20b%2Bc~._-");
    buf_free(&b);
}

static void test_form_append_separates_pairs(void **state)
{
    buf_t b = {0};

    form_append(&b, "a", "1");
    form_append(&b, "b", "");
    assert_string_equal(b.p, "a=1&b=");
    buf_reset(&b);
    buf_puts(&b, "https://connect.stripe.com/oauth/authorize?");
    form_append(&b, "response_type", "code");
    form_append(&b, "scope", "read_write");
    assert_string_equal(b.p,
                        "https://connect.stripe.com/oauth/authorize?response_type=code&scope=read_write");
    buf_free(&b);
}

static void test_form_append_round_trips_through_form_get(void **state)
{
    static const char value[] = "\x01 %+&=?#\xff\xc3\xa9/~";
    buf_t b = {0};
    char *v = NULL;

    form_append(&b, "k", value);
    assert_int_equal(form_get(b.p, b.len, "k", &v), 1);
    assert_string_equal(v, value);
    free(v);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_unescape_table),
        cmocka_unit_test(test_form_unescape_rejects_literal_nul),
        cmocka_unit_test(test_form_unescape_stops_at_len),
        cmocka_unit_test(test_form_get_table),
        cmocka_unit_test(test_form_get_rejects_duplicate_name),
        cmocka_unit_test(test_form_get_buf_agrees_and_bounds),
        cmocka_unit_test(test_form_get_escaped_names_of_any_length),
        cmocka_unit_test(test_form_unescape_without_destination_only_checks),
        cmocka_unit_test(test_form_get_rejects_bad_escape_anywhere),
        cmocka_unit_test(test_form_get_rejects_nul_escape),
        cmocka_unit_test(test_form_get_respects_len),
        cmocka_unit_test(test_form_append_encodes_all_but_unreserved),
        cmocka_unit_test(test_form_append_separates_pairs),
        cmocka_unit_test(test_form_append_round_trips_through_form_get),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
