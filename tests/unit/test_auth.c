/* test_auth.c — bearer classification and the stored API key record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"
#include "core/crypto.h"

#define ADMIN "admin-token-0123456789abcdefghijklmnopqrstuv"
#define ORG "00D000000000001EAA"
#define OTHER_ORG "00D000000000002EAA"

static config_t cfg_with_admin(void)
{
    config_t c;
    memset(&c, 0, sizeof(c));
    c.admin_token = (char *)ADMIN;
    return c;
}

static bearer_kind_t kind_of(const char *authz)
{
    config_t c = cfg_with_admin();
    bearer_t b;
    auth_parse(&c, authz, authz ? strlen(authz) : 0, &b);
    return b.kind;
}

static void test_auth_absent_header_is_none(void **state)
{
    assert_int_equal(kind_of(NULL), BEARER_NONE);
}

static void test_auth_admin_token_is_admin(void **state)
{
    assert_int_equal(kind_of("Bearer " ADMIN), BEARER_ADMIN);
    assert_int_equal(kind_of("bearer " ADMIN), BEARER_ADMIN);
}

static void test_auth_rejects_malformed_bearers(void **state)
{
    static const char *const bad[] = {
        "", "Bearer", "Bearer ", "Basic " ADMIN, ADMIN, "Bearer " ADMIN "x", "Bearer stb_",
        "Bearer stb_0123456789abcdeg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer stb_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer stb_0123456789abcdef-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer stb_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kind_of(bad[i]), BEARER_MALFORMED);
}

static void test_auth_new_key_round_trips_through_its_record(void **state)
{
    config_t c = cfg_with_admin();
    char key[APIKEY_LEN + 1], id[APIKEY_ID_LEN + 1], hash[65], rec[128], authz[128];
    bearer_t b;

    auth_new_key(key, id, hash);
    assert_int_equal(strlen(key), APIKEY_LEN);
    assert_memory_equal(key + 4, id, APIKEY_ID_LEN);
    auth_key_record(rec, sizeof(rec), ORG, hash, 1795000000);
    assert_null(strstr(rec, key + 5 + APIKEY_ID_LEN)); /* the secret part is never stored */

    snprintf(authz, sizeof(authz), "Bearer %s", key);
    auth_parse(&c, authz, strlen(authz), &b);
    assert_int_equal(b.kind, BEARER_KEY);
    assert_string_equal(b.key_id, id);
    assert_int_equal(auth_check_record(&b, rec, strlen(rec), ORG), ERR_NONE);
    assert_int_equal(auth_check_record(&b, rec, strlen(rec), OTHER_ORG), ERR_FORBIDDEN);
    assert_int_equal(auth_check_record(&b, rec, strlen(rec), NULL), ERR_FORBIDDEN); /* admin route */
}

static void test_auth_wrong_secret_or_missing_record_is_unauthorized(void **state)
{
    config_t c = cfg_with_admin();
    char key[APIKEY_LEN + 1], id[APIKEY_ID_LEN + 1], hash[65], rec[128];
    bearer_t b;

    auth_new_key(key, id, hash);
    auth_key_record(rec, sizeof(rec), ORG, hash, 1795000000);
    key[APIKEY_LEN - 1] = key[APIKEY_LEN - 1] == 'A' ? 'B' : 'A';
    char authz[128];
    snprintf(authz, sizeof(authz), "Bearer %s", key);
    auth_parse(&c, authz, strlen(authz), &b);
    assert_int_equal(b.kind, BEARER_KEY);
    assert_int_equal(auth_check_record(&b, rec, strlen(rec), ORG), ERR_UNAUTHORIZED);
    assert_int_equal(auth_check_record(&b, NULL, 0, ORG), ERR_UNAUTHORIZED);
    assert_int_equal(auth_check_record(&b, "garbage", 7, ORG), ERR_UNAUTHORIZED);
}

static void test_auth_keys_are_unique(void **state)
{
    char k1[APIKEY_LEN + 1], k2[APIKEY_LEN + 1], i1[APIKEY_ID_LEN + 1], i2[APIKEY_ID_LEN + 1], h1[65], h2[65];
    auth_new_key(k1, i1, h1);
    auth_new_key(k2, i2, h2);
    assert_string_not_equal(k1, k2);
    assert_string_not_equal(i1, i2);
    assert_string_not_equal(h1, h2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_absent_header_is_none),
        cmocka_unit_test(test_auth_admin_token_is_admin),
        cmocka_unit_test(test_auth_rejects_malformed_bearers),
        cmocka_unit_test(test_auth_new_key_round_trips_through_its_record),
        cmocka_unit_test(test_auth_wrong_secret_or_missing_record_is_unauthorized),
        cmocka_unit_test(test_auth_keys_are_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
