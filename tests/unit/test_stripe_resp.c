/* test_stripe_resp.c — classification of Stripe OAuth token responses and of
 * /oauth/deauthorize answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/stripe_resp.h"

#define CONNECT_OK                                                                                 \
    "{\"access_token\":\"sk_test_tok\",\"refresh_token\":\"rt_123\",\"livemode\":false,"            \
    "\"token_type\":\"bearer\",\"stripe_publishable_key\":\"pk_test_1\","                           \
    "\"stripe_user_id\":\"acct_1\",\"scope\":\"read_write\"}"

static stripe_outcome_t parse(long status, const char *body, stripe_token_t *tok, char err[64])
{
    return stripe_token_parse(status, body, body != NULL ? strlen(body) : 0, tok, err);
}

static void test_stripe_resp_connect_success_fills_token(void **state)
{
    stripe_token_t tok;
    char err[64];

    assert_int_equal(parse(200, CONNECT_OK, &tok, err), STRIPE_OK);
    assert_string_equal(tok.access_token, "sk_test_tok");
    assert_string_equal(tok.refresh_token, "rt_123");
    assert_string_equal(tok.stripe_user_id, "acct_1");
    assert_string_equal(tok.stripe_publishable_key, "pk_test_1");
    assert_string_equal(tok.scope, "read_write");
    assert_int_equal(tok.livemode, 0);
    assert_int_equal(tok.expires_in, -1);
    assert_string_equal(err, "");
    stripe_token_clear(&tok);
    assert_null(tok.access_token);
}

static void test_stripe_resp_apps_success_reads_expires_in(void **state)
{
    stripe_token_t tok;
    char err[64];

    assert_int_equal(parse(200,
                           "{\"access_token\":\"ek_live_1\",\"refresh_token\":\"rt_2\","
                           "\"livemode\":true,\"stripe_user_id\":\"acct_9\",\"scope\":\"stripe_apps\","
                           "\"expires_in\":3600}",
                           &tok, err),
                     STRIPE_OK);
    assert_int_equal(tok.livemode, 1);
    assert_int_equal(tok.expires_in, 3600);
    stripe_token_clear(&tok);
}

static void test_stripe_resp_refresh_token_is_optional(void **state)
{
    stripe_token_t tok;
    char err[64];

    assert_int_equal(parse(200, "{\"access_token\":\"sk_1\",\"stripe_user_id\":\"acct_1\"}", &tok, err),
                     STRIPE_OK);
    assert_null(tok.refresh_token);
    assert_null(tok.scope);
    assert_null(tok.stripe_publishable_key);
    stripe_token_clear(&tok);
}

typedef struct resp_case {
    long status;
    const char *body;
    stripe_outcome_t want;
    const char *err;
} resp_case_t;

static void test_stripe_resp_classification_table(void **state)
{
    static const resp_case_t cases[] = {
        /* transport failures and overload are transient */
        {0, NULL, STRIPE_TRANSIENT, ""},
        {0, CONNECT_OK, STRIPE_TRANSIENT, ""},
        {429, "{\"error\":\"rate_limit\"}", STRIPE_TRANSIENT, "rate_limit"},
        {500, "{\"error\":\"api_error\"}", STRIPE_TRANSIENT, "api_error"},
        {502, "<html>bad gateway</html>", STRIPE_TRANSIENT, ""},
        {503, "", STRIPE_TRANSIENT, ""},
        {302, "{}", STRIPE_TRANSIENT, ""},
        /* the authorization is gone */
        {400, "{\"error\":\"invalid_grant\",\"error_description\":\"Refresh token rt_secret expired\"}",
         STRIPE_TERMINAL, "invalid_grant"},
        {401, "{\"error\":\"invalid_grant\"}", STRIPE_TERMINAL, "invalid_grant"},
        {400, "{\"error\":{\"code\":\"invalid_grant\",\"message\":\"x\"}}", STRIPE_TERMINAL,
         "invalid_grant"},
        /* other refusals */
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"No such api key sk_x\"}",
         STRIPE_REJECTED, "invalid_client"},
        {400, "{\"error\":\"invalid_request\"}", STRIPE_REJECTED, "invalid_request"},
        {400, "{\"error\":\"unsupported_grant_type\"}", STRIPE_REJECTED, "unsupported_grant_type"},
        {403, "{\"error\":\"invalid_grant\"}", STRIPE_REJECTED, "invalid_grant"},
        {400, "{}", STRIPE_REJECTED, ""},
        {400, "{\"error\":\"Invalid Grant!\"}", STRIPE_REJECTED, ""}, /* not a code: not copied */
        {400, "{\"error\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
         STRIPE_REJECTED, ""},
        /* unusable answers are transient */
        {400, "not json", STRIPE_TRANSIENT, ""},
        {200, "not json", STRIPE_TRANSIENT, ""},
        {200, "", STRIPE_TRANSIENT, ""},
        {200, "[]", STRIPE_TRANSIENT, ""},
        {200, "{}", STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"sk_1\"}", STRIPE_TRANSIENT, ""},
        {200, "{\"stripe_user_id\":\"acct_1\"}", STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"\",\"stripe_user_id\":\"acct_1\"}", STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":5,\"stripe_user_id\":\"acct_1\"}", STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"sk\",\"stripe_user_id\":\"acct_1\",\"expires_in\":\"3600\"}",
         STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"sk\",\"stripe_user_id\":\"acct_1\",\"expires_in\":-1}",
         STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"sk\",\"stripe_user_id\":\"acct_1\",\"livemode\":\"yes\"}",
         STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"sk\\u0000x\",\"stripe_user_id\":\"acct_1\"}", STRIPE_TRANSIENT, ""},
        {200, "{\"access_token\":\"a\",\"access_token\":\"b\",\"stripe_user_id\":\"acct_1\"}",
         STRIPE_TRANSIENT, ""},
        {201, "{\"access_token\":\"sk\",\"stripe_user_id\":\"acct_1\"}", STRIPE_OK, ""},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stripe_token_t tok;
        char err[64];
        stripe_outcome_t o = parse(cases[i].status, cases[i].body, &tok, err);
        if (o != cases[i].want)
            fail_msg("case %zu (%ld %s): %s", i, cases[i].status,
                     cases[i].body ? cases[i].body : "(null)", stripe_outcome_name(o));
        assert_string_equal(err, cases[i].err);
        if (o != STRIPE_OK)
            assert_null(tok.access_token);
        stripe_token_clear(&tok);
    }
}

static void test_stripe_resp_never_copies_error_description(void **state)
{
    stripe_token_t tok;
    char err[64];

    parse(400, "{\"error\":\"invalid_grant\",\"error_description\":\"ac_secretcode\"}", &tok, err);
    assert_null(strstr(err, "ac_secret"));
}

static void test_stripe_resp_outcome_names(void **state)
{
    assert_string_equal(stripe_outcome_name(STRIPE_OK), "ok");
    assert_string_equal(stripe_outcome_name(STRIPE_TERMINAL), "invalid_grant");
    assert_string_equal(stripe_outcome_name(STRIPE_REJECTED), "rejected");
    assert_string_equal(stripe_outcome_name(STRIPE_TRANSIENT), "transient");
}

static void test_stripe_token_clear_is_idempotent(void **state)
{
    stripe_token_t tok;
    char err[64];

    parse(200, CONNECT_OK, &tok, err);
    stripe_token_clear(&tok);
    stripe_token_clear(&tok);
    assert_null(tok.refresh_token);
}

typedef struct deauth_case {
    long status;
    const char *body;
    stripe_deauth_t want;
    const char *err;
} deauth_case_t;

#define NOT_CONNECTED_DESC                                                                         \
    "This application is not connected to stripe account acct_1, or that account does not exist."

static void test_stripe_deauth_classification_table(void **state)
{
    static const deauth_case_t cases[] = {
        /* done: a 2xx naming the account sent */
        {200, "{\"stripe_user_id\":\"acct_1\"}", STRIPE_DEAUTH_DONE, ""},
        {200, "{\"stripe_user_id\":\"acct_2\"}", STRIPE_DEAUTH_FAILED, ""},
        {200, "{}", STRIPE_DEAUTH_FAILED, ""},
        {200, "{not json", STRIPE_DEAUTH_FAILED, ""},
        {200, NULL, STRIPE_DEAUTH_FAILED, ""},
        /* Stripe's "not connected" answer: the account is already gone */
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"" NOT_CONNECTED_DESC "\"}",
         STRIPE_DEAUTH_NOT_CONNECTED, "invalid_client"},
        {400, "{\"error\":\"invalid_client\",\"error_description\":\"" NOT_CONNECTED_DESC "\"}",
         STRIPE_DEAUTH_NOT_CONNECTED, "invalid_client"},
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"this APPLICATION is Not Connected To "
              "Stripe Account acct_1\"}",
         STRIPE_DEAUTH_NOT_CONNECTED, "invalid_client"},
        /* … only for the account sent, the whole id */
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"This application is not connected to "
              "stripe account acct_2.\"}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"This application is not connected to "
              "stripe account acct_10.\"}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        /* … and only with invalid_client, from a 400/401 */
        {401, "{\"error\":\"invalid_request\",\"error_description\":\"" NOT_CONNECTED_DESC "\"}",
         STRIPE_DEAUTH_FAILED, "invalid_request"},
        {403, "{\"error\":\"invalid_client\",\"error_description\":\"" NOT_CONNECTED_DESC "\"}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        {500, "{\"error\":\"invalid_client\",\"error_description\":\"" NOT_CONNECTED_DESC "\"}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        /* every other refusal: a wrong key or client id is invalid_client too */
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"Invalid API Key provided: sk_test_****abcd\"}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        {401, "{\"error\":\"invalid_client\",\"error_description\":\"No such application: 'ca_x'\"}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        {401, "{\"error\":\"invalid_client\"}", STRIPE_DEAUTH_FAILED, "invalid_client"},
        {400, "{\"error\":\"invalid_request\",\"error_description\":\"client_id is required\"}",
         STRIPE_DEAUTH_FAILED, "invalid_request"},
        {400, "{\"error\":{\"code\":\"invalid_client\",\"message\":\"" NOT_CONNECTED_DESC "\"}}",
         STRIPE_DEAUTH_FAILED, "invalid_client"},
        /* transport, overload, unusable */
        {0, NULL, STRIPE_DEAUTH_FAILED, ""},
        {429, "{\"error\":\"rate_limited\"}", STRIPE_DEAUTH_FAILED, "rate_limited"},
        {503, "<html>", STRIPE_DEAUTH_FAILED, ""},
    };
    char err[64];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const deauth_case_t *c = &cases[i];
        stripe_deauth_t got = stripe_deauth_parse(c->status, c->body, c->body ? strlen(c->body) : 0, "acct_1", err);
        if (got != c->want || strcmp(err, c->err) != 0)
            fail_msg("case %zu (HTTP %ld): got %d err \"%s\", want %d err \"%s\"", i, c->status, got, err, c->want,
                     c->err);
    }
    /* no account to compare with: never "not connected" */
    static const char nc[] = "{\"error\":\"invalid_client\",\"error_description\":\"" NOT_CONNECTED_DESC "\"}";
    assert_int_equal(stripe_deauth_parse(401, nc, strlen(nc), "", err), STRIPE_DEAUTH_FAILED);
    assert_int_equal(stripe_deauth_parse(401, nc, strlen(nc), NULL, err), STRIPE_DEAUTH_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stripe_resp_connect_success_fills_token),
        cmocka_unit_test(test_stripe_resp_apps_success_reads_expires_in),
        cmocka_unit_test(test_stripe_resp_refresh_token_is_optional),
        cmocka_unit_test(test_stripe_resp_classification_table),
        cmocka_unit_test(test_stripe_resp_never_copies_error_description),
        cmocka_unit_test(test_stripe_resp_outcome_names),
        cmocka_unit_test(test_stripe_token_clear_is_idempotent),
        cmocka_unit_test(test_stripe_deauth_classification_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
