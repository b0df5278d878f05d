/* test_webhook_sig.c — Stripe-Signature (v1) verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "core/webhook_sig.h"

#define SECRET "whsec_test_secret"
#define BODY "{\"id\":\"evt_1\"}"
#define T 1700000000
/* HMAC-SHA256(SECRET, "1700000000." BODY), computed independently. */
#define SIG "248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a"
#define OTHER "0000000000000000000000000000000000000000000000000000000000000000"

static int verify(const char *header, time_t now)
{
    return whsig_verify(header, strlen(header), BODY, strlen(BODY), SECRET, now,
                        WEBHOOK_TOLERANCE_S);
}

static void test_whsig_accepts_valid_signature(void **state)
{
    assert_int_equal(verify("t=1700000000,v1=" SIG, T), WHSIG_OK);
}

static void test_whsig_accepts_signature_computed_at_runtime(void **state)
{
    const char *body = "{\"type\":\"account.application.deauthorized\"}";
    char msg[128], hex[65], header[128];
    unsigned char mac[32];

    snprintf(msg, sizeof(msg), "%d.%s", T + 5, body);
    hmac_sha256("whsec_other", 11, msg, strlen(msg), mac);
    hex_encode(mac, 32, hex);
    snprintf(header, sizeof(header), "t=%d,v1=%s", T + 5, hex);
    assert_int_equal(whsig_verify(header, strlen(header), body, strlen(body), "whsec_other", T, 300),
                     WHSIG_OK);
}

static void test_whsig_rejects_wrong_secret(void **state)
{
    const char *h = "t=1700000000,v1=" SIG;

    assert_int_equal(whsig_verify(h, strlen(h), BODY, strlen(BODY), "whsec_wrong", T, 300),
                     WHSIG_MISMATCH);
}

static void test_whsig_rejects_modified_body(void **state)
{
    const char *h = "t=1700000000,v1=" SIG;

    assert_int_equal(whsig_verify(h, strlen(h), "{\"id\":\"evt_2\"}", 14, SECRET, T, 300),
                     WHSIG_MISMATCH);
}

static void test_whsig_rejects_modified_timestamp(void **state)
{
    assert_int_equal(verify("t=1700000001,v1=" SIG, T), WHSIG_MISMATCH);
}

static void test_whsig_rejects_stale_timestamp_both_ways(void **state)
{
    assert_int_equal(verify("t=1700000000,v1=" SIG, T + 300), WHSIG_OK);
    assert_int_equal(verify("t=1700000000,v1=" SIG, T - 300), WHSIG_OK);
    assert_int_equal(verify("t=1700000000,v1=" SIG, T + 301), WHSIG_STALE);
    assert_int_equal(verify("t=1700000000,v1=" SIG, T - 301), WHSIG_STALE);
}

static void test_whsig_accepts_any_of_several_v1(void **state)
{
    assert_int_equal(verify("t=1700000000,v1=" OTHER ",v1=" SIG, T), WHSIG_OK);
    assert_int_equal(verify("t=1700000000,v1=" SIG ",v1=" OTHER, T), WHSIG_OK);
    assert_int_equal(verify("t=1700000000,v1=" OTHER ",v1=" OTHER, T), WHSIG_MISMATCH);
}

static void test_whsig_ignores_other_schemes(void **state)
{
    assert_int_equal(verify("t=1700000000,v0=" OTHER ",v1=" SIG ",v2=xyz", T), WHSIG_OK);
    assert_int_equal(verify("t=1700000000,v0=" SIG, T), WHSIG_NO_V1);
}

static void test_whsig_reports_missing_v1(void **state)
{
    assert_int_equal(verify("t=1700000000", T), WHSIG_NO_V1);
}

static void test_whsig_rejects_uppercase_or_truncated_hex(void **state)
{
    assert_int_equal(verify("t=1700000000,v1=248A374F50F943A28B0F6AB50FAF9A7E7E29B710FA26DF9FB1618B9BF8EA9C9A", T),
                     WHSIG_MISMATCH);
    assert_int_equal(verify("t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e", T), WHSIG_MISMATCH);
    assert_int_equal(verify("t=1700000000,v1=", T), WHSIG_MISMATCH);
}

static void test_whsig_rejects_malformed_headers(void **state)
{
    static const char *const cases[] = {
        "",
        "garbage",
        "v1=" SIG,                             /* no t */
        "t=,v1=" SIG,
        "t=abc,v1=" SIG,
        "t=-1700000000,v1=" SIG,
        "t=+1700000000,v1=" SIG,
        "t=1700000000.5,v1=" SIG,
        "t=17000000000000000000000,v1=" SIG,  /* overflow */
        "t=1700000000,t=1700000000,v1=" SIG,  /* two timestamps */
        "t=1700000000,v1" SIG,                /* item without '=' */
        "t=1700000000,,v1=" SIG,              /* empty item */
        "=1,t=1700000000,v1=" SIG,
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (verify(cases[i], T) != WHSIG_MALFORMED)
            fail_msg("\"%s\" not malformed", cases[i]);
}

static void test_whsig_tolerates_spaces_after_commas(void **state)
{
    assert_int_equal(verify("t=1700000000, v1=" SIG, T), WHSIG_OK);
}

static void test_whsig_rejects_empty_secret(void **state)
{
    const char *h = "t=1700000000,v1=" SIG;

    assert_int_equal(whsig_verify(h, strlen(h), BODY, strlen(BODY), "", T, 300), WHSIG_MISMATCH);
    assert_int_equal(whsig_verify(h, strlen(h), BODY, strlen(BODY), NULL, T, 300), WHSIG_MISMATCH);
}

/* Each code has its own words (they end up in the log line of a refused webhook). */
static void test_whsig_reason_names_every_code(void **state)
{
    static const struct {
        int rc;
        const char *text;
    } want[] = {
        {WHSIG_OK, "valid"},
        {WHSIG_MALFORMED, "malformed Stripe-Signature header"},
        {WHSIG_NO_V1, "no v1 signature in the header"},
        {WHSIG_STALE, "timestamp outside the tolerance"},
        {WHSIG_MISMATCH, "no signature matches the payload"},
        {12345, "unknown signature error"},
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(whsig_reason(want[i].rc), want[i].text);
}

static void test_whsig_secret_valid_takes_printable_ascii_up_to_the_limit(void **state)
{
    char big[WHSIG_SECRET_MAX_BYTES + 2];
    memset(big, 'a', sizeof(big));
    assert_true(whsig_secret_valid("whsec_abc", 9));
    assert_true(whsig_secret_valid(big, WHSIG_SECRET_MAX_BYTES));
    assert_false(whsig_secret_valid(big, WHSIG_SECRET_MAX_BYTES + 1));
    assert_false(whsig_secret_valid("", 0));
    assert_false(whsig_secret_valid(NULL, 0));
    assert_false(whsig_secret_valid("whsec_a b", 9));
    assert_false(whsig_secret_valid("whsec_\x7f", 7));
    assert_false(whsig_secret_valid("whsec_\xc3\xa9", 8));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whsig_accepts_valid_signature),
        cmocka_unit_test(test_whsig_accepts_signature_computed_at_runtime),
        cmocka_unit_test(test_whsig_rejects_wrong_secret),
        cmocka_unit_test(test_whsig_rejects_modified_body),
        cmocka_unit_test(test_whsig_rejects_modified_timestamp),
        cmocka_unit_test(test_whsig_rejects_stale_timestamp_both_ways),
        cmocka_unit_test(test_whsig_accepts_any_of_several_v1),
        cmocka_unit_test(test_whsig_ignores_other_schemes),
        cmocka_unit_test(test_whsig_reports_missing_v1),
        cmocka_unit_test(test_whsig_rejects_uppercase_or_truncated_hex),
        cmocka_unit_test(test_whsig_rejects_malformed_headers),
        cmocka_unit_test(test_whsig_tolerates_spaces_after_commas),
        cmocka_unit_test(test_whsig_rejects_empty_secret),
        cmocka_unit_test(test_whsig_reason_names_every_code),
        cmocka_unit_test(test_whsig_secret_valid_takes_printable_ascii_up_to_the_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
