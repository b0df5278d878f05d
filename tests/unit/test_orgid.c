/* test_orgid.c — Salesforce org ids: 15 -> 18, case restoration, rejections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/orgid.h"

typedef struct orgid_case {
    const char *in;
    const char *want; /* NULL: rejected */
} orgid_case_t;

static void check(const orgid_case_t *cases, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char out[ORGID_LEN + 1];
        int rc = orgid_normalize(cases[i].in, strlen(cases[i].in), out);
        if (cases[i].want == NULL) {
            if (rc != -1)
                fail_msg("accepted %s", cases[i].in);
        } else {
            if (rc != 0)
                fail_msg("rejected %s", cases[i].in);
            assert_string_equal(out, cases[i].want);
        }
    }
}

static void test_orgid_15_gets_checksum_suffix(void **state)
{
    static const orgid_case_t cases[] = {
        {"00D000000000001", "00D000000000001EAA"},
        {"00DG000001SUbc4", "00DG000001SUbc4MAD"},
        {"00Dxx0000001gER", "00Dxx0000001gEREAY"},
        {"00D5e000000AbCd", "00D5e000000AbCdEAK"},
        {"00DABCDEabcdeXY", "00DABCDEabcdeXY2HY"},
        {"00DZZZZZZZZZZZZ", "00DZZZZZZZZZZZZ255"},
        {"00Dzzzzzzzzzzzz", "00DzzzzzzzzzzzzEAA"},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_checksum_matches_salesforce_example(void **state)
{
    /* STRIPE.md: 003G000001SUbc4 -> 003G000001SUbc4IAD. Not an org id (003), so
     * check the same chunks under an org prefix: only chunk 1 differs ("00DG0": D
     * and G upper -> bits 2,3 -> 12 -> 'M' where "003G0" gives 8 -> 'I'). */
    static const orgid_case_t cases[] = {
        {"00DG000001SUbc4", "00DG000001SUbc4MAD"},
        {"003G000001SUbc4", NULL},
        {"003G000001SUbc4IAD", NULL},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_18_is_kept_canonical(void **state)
{
    static const orgid_case_t cases[] = {
        {"00D000000000001EAA", "00D000000000001EAA"},
        {"00DG000001SUbc4MAD", "00DG000001SUbc4MAD"},
        {"00DABCDEabcdeXY2HY", "00DABCDEabcdeXY2HY"},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_18_restores_case_from_suffix(void **state)
{
    static const orgid_case_t cases[] = {
        {"00dg000001subc4mad", "00DG000001SUbc4MAD"},
        {"00DG000001SUBC4MAD", "00DG000001SUbc4MAD"},
        {"00DG000001SUbc4mad", "00DG000001SUbc4MAD"},
        {"00dabcdeABCDExy2hy", "00DABCDEabcdeXY2HY"},
        {"00dzzzzzzzzzzzz255", "00DZZZZZZZZZZZZ255"},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_15_and_18_forms_agree(void **state)
{
    char a[ORGID_LEN + 1], b[ORGID_LEN + 1];

    assert_int_equal(orgid_normalize("00Dxx0000001gER", 15, a), 0);
    assert_int_equal(orgid_normalize("00DXX0000001GEReay", 18, b), 0);
    assert_string_equal(a, b);
}

static void test_orgid_rejects_bad_checksum(void **state)
{
    static const orgid_case_t cases[] = {
        {"00D000000000001EAB", NULL}, /* marks the digit '1' as upper case */
        {"00D000000000001AAA", NULL}, /* D would become lower case: not 00D */
        {"00DG000001SUbc4M6D", NULL}, /* '6' is not in the suffix alphabet */
        {"00DG000001SUbc4M!D", NULL},
        {"00D000000000001BAA", NULL}, /* bit 0 on the digit '0' */
        {"00D000000000001E5A", NULL}, /* 31: every position upper, but digits */
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_rejects_bad_prefix(void **state)
{
    static const orgid_case_t cases[] = {
        {"00d000000000001", NULL}, /* 15 characters are case-sensitive */
        {"001000000000001", NULL},
        {"0D0000000000001", NULL},
        {"a0D000000000001", NULL},
        {"005000000000001AAA", NULL},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_rejects_bad_characters(void **state)
{
    static const orgid_case_t cases[] = {
        {"00D00000000000-", NULL}, {"00D00000000000 ", NULL},
        {"00D0000000000%31", NULL}, {"00D000000000.01", NULL},
        {"00D000000000001EA_", NULL}, {"00D00000000000\xc3\xa9", NULL},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_rejects_bad_lengths(void **state)
{
    static const orgid_case_t cases[] = {
        {"", NULL},
        {"00D", NULL},
        {"00D00000000001", NULL},
        {"00D0000000000001", NULL},
        {"00D000000000001E", NULL},
        {"00D000000000001EA", NULL},
        {"00D000000000001EAAA", NULL},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_orgid_rejects_embedded_nul(void **state)
{
    char out[ORGID_LEN + 1];

    assert_int_equal(orgid_normalize("00D00000000\0" "0001", 15, out), -1);
}

static void test_orgid_rejects_null(void **state)
{
    char out[ORGID_LEN + 1];

    assert_int_equal(orgid_normalize(NULL, 15, out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orgid_15_gets_checksum_suffix),
        cmocka_unit_test(test_orgid_checksum_matches_salesforce_example),
        cmocka_unit_test(test_orgid_18_is_kept_canonical),
        cmocka_unit_test(test_orgid_18_restores_case_from_suffix),
        cmocka_unit_test(test_orgid_15_and_18_forms_agree),
        cmocka_unit_test(test_orgid_rejects_bad_checksum),
        cmocka_unit_test(test_orgid_rejects_bad_prefix),
        cmocka_unit_test(test_orgid_rejects_bad_characters),
        cmocka_unit_test(test_orgid_rejects_bad_lengths),
        cmocka_unit_test(test_orgid_rejects_embedded_nul),
        cmocka_unit_test(test_orgid_rejects_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
