/* test_store.c — the stored value formats: "<version>:<sealed>" connections and
 * "<updated>:<sealed>" webhook secrets, sealed with the record's identity; the key
 * names of store/keys.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "store/store.h"

#define ORG "00D000000000001EAA"
#define OTHER_ORG "00D000000000002EAA"
#define KEY_B64 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static config_t cfg;

static int setup(void **state)
{
    const char *err;
    memset(&cfg, 0, sizeof(cfg));
    cfg.redis_prefix = (char *)"stb:";
    return keyring_parse("k1:" KEY_B64, &cfg.keyring, &err);
}

static int teardown(void **state)
{
    keyring_free(&cfg.keyring);
    return 0;
}

static conn_record_t sample(void)
{
    conn_record_t r;
    memset(&r, 0, sizeof(r));
    r.status = CONN_CONNECTED;
    r.access_token = (char *)"sk_test_secretsecret";
    r.refresh_token = (char *)"rt_secretsecret";
    r.stripe_user_id = (char *)"acct_123";
    r.stripe_publishable_key = (char *)"pk_test_123";
    r.scope = (char *)"read_write";
    r.livemode = 1;
    r.connected_at = 1795000000;
    r.refreshed_at = 1795000123;
    r.expires_at = 1795003723;
    strcpy(r.derived_from, "live");
    return r;
}

/* "<version>:<sealed>" as the Lua scripts store it. */
static char *stored(long version, const char *org, int mode)
{
    conn_record_t r = sample();
    char *sealed = store_conn_seal(&cfg, org, mode, &r);
    size_t n = strlen(sealed) + 24;
    char *v = malloc(n);
    snprintf(v, n, "%ld:%s", version, sealed);
    free(sealed);
    return v;
}

/* Every field of the record comes back as it was sealed (each differs from its default). */
static void test_store_connection_round_trip(void **state)
{
    char *v = stored(7, ORG, MODE_TEST);
    conn_record_t want = sample(), r;
    long ver = 0;
    assert_null(strstr(v, "sk_test_secretsecret"));
    assert_null(strstr(v, "rt_secretsecret"));
    assert_int_equal(store_conn_open(&cfg, ORG, MODE_TEST, v, strlen(v), &ver, &r), STORE_OK);
    assert_int_equal(ver, 7);
    assert_int_equal(r.status, want.status);
    assert_string_equal(r.access_token, want.access_token);
    assert_string_equal(r.refresh_token, want.refresh_token);
    assert_string_equal(r.stripe_user_id, want.stripe_user_id);
    assert_string_equal(r.stripe_publishable_key, want.stripe_publishable_key);
    assert_string_equal(r.scope, want.scope);
    assert_int_equal(r.livemode, want.livemode);
    assert_int_equal(r.connected_at, want.connected_at);
    assert_int_equal(r.refreshed_at, want.refreshed_at);
    assert_int_equal(r.expires_at, want.expires_at);
    assert_string_equal(r.derived_from, want.derived_from);
    conn_record_clear(&r);
    free(v);

    /* and the other status, with the optional strings absent */
    memset(&want, 0, sizeof(want));
    want.status = CONN_REAUTH_REQUIRED;
    want.stripe_user_id = (char *)"acct_456";
    char *sealed = store_conn_seal(&cfg, ORG, MODE_LIVE, &want);
    size_t n = strlen(sealed) + 8;
    v = malloc(n);
    snprintf(v, n, "1:%s", sealed);
    free(sealed);
    assert_int_equal(store_conn_open(&cfg, ORG, MODE_LIVE, v, strlen(v), &ver, &r), STORE_OK);
    assert_int_equal(r.status, CONN_REAUTH_REQUIRED);
    assert_null(r.access_token);
    assert_null(r.refresh_token);
    assert_null(r.stripe_publishable_key);
    assert_null(r.scope);
    assert_string_equal(r.stripe_user_id, "acct_456");
    assert_int_equal(r.livemode, 0);
    assert_int_equal(r.expires_at, 0);
    assert_string_equal(r.derived_from, "");
    conn_record_clear(&r);
    free(v);
}

static void test_store_connection_absent(void **state)
{
    conn_record_t r;
    long ver;
    assert_int_equal(store_conn_open(&cfg, ORG, MODE_TEST, NULL, 0, &ver, &r), STORE_ABSENT);
}

static void test_store_connection_copied_to_another_org_or_mode_is_unreadable(void **state)
{
    char *v = stored(1, ORG, MODE_TEST);
    conn_record_t r;
    long ver;
    assert_int_equal(store_conn_open(&cfg, OTHER_ORG, MODE_TEST, v, strlen(v), &ver, &r), STORE_UNREADABLE);
    assert_int_equal(store_conn_open(&cfg, ORG, MODE_LIVE, v, strlen(v), &ver, &r), STORE_UNREADABLE);
    free(v);
}

static void test_store_connection_malformed_values_are_unreadable(void **state)
{
    static const char *const bad[] = {"", "7", "x:1.k1.a.b", ":1.k1.a.b", "7:", "7:2.k1.AAAA.BBBB", "7:1.k9.AAAA.BBBB"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        conn_record_t r;
        long ver;
        assert_int_equal(store_conn_open(&cfg, ORG, MODE_TEST, bad[i], strlen(bad[i]), &ver, &r), STORE_UNREADABLE);
    }
}

static void test_store_webhook_secret_round_trip(void **state)
{
    char *v = store_whsec_seal(&cfg, ORG, MODE_LIVE, "whsec_abcdef");
    char *secret = NULL;
    long updated = 0;
    assert_null(strstr(v, "whsec_abcdef"));
    assert_int_equal(store_whsec_open(&cfg, ORG, MODE_LIVE, v, strlen(v), &secret, &updated), STORE_OK);
    assert_string_equal(secret, "whsec_abcdef");
    assert_true(updated > 0);
    secure_free_str(secret);
    assert_int_equal(store_whsec_open(&cfg, ORG, MODE_TEST, v, strlen(v), &secret, &updated), STORE_UNREADABLE);
    free(v);
}

/* The key schema (store/keys.h): the hot path's builders spell what the formats spell. */
static void test_store_keys_builders_match_the_formats(void **state)
{
    char k[KEY_MAX], f[KEY_MAX];
    assert_int_equal(keys_conn(k, "stb:", ORG, MODE_LIVE), strlen("stb:conn:" ORG ":live"));
    assert_string_equal(k, "stb:conn:" ORG ":live");
    snprintf(f, sizeof(f), "%s" KEY_CONN, "stb:", ORG, mode_name(MODE_TEST));
    keys_conn(k, "stb:", ORG, MODE_TEST);
    assert_string_equal(k, f);
    assert_int_equal(keys_apikey(k, "p:", "0123456789abcdef", 16), strlen("p:key:0123456789abcdef"));
    assert_string_equal(k, "p:key:0123456789abcdef");
}

static void test_store_keys_member_round_trip_and_rejects(void **state)
{
    char m[KEYS_MEMBER_MAX + 1], org[ORGID_LEN + 1];
    int mode = -1;
    keys_member(m, ORG, MODE_TEST);
    assert_string_equal(m, ORG ":test");
    assert_int_equal(keys_member_parse(m, strlen(m), org, &mode), 0);
    assert_string_equal(org, ORG);
    assert_int_equal(mode, MODE_TEST);
    static const char *const bad[] = {"", ORG, ORG ":", ORG ":tes", ORG ":tests", ORG "-live", "00D:live"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(keys_member_parse(bad[i], strlen(bad[i]), org, &mode), -1);
}

static void test_store_keys_identity_needs_prefix_and_kind(void **state)
{
    char org[ORGID_LEN + 1];
    int mode = -1;
    assert_int_equal(keys_identity("stb:conn:" ORG ":live", "stb:", KEY_CONN_KIND, org, &mode), 0);
    assert_string_equal(org, ORG);
    assert_int_equal(mode, MODE_LIVE);
    assert_int_equal(keys_identity("stb:whsec:" ORG ":test", "stb:", KEY_WHSEC_KIND, org, &mode), 0);
    assert_int_equal(mode, MODE_TEST);
    assert_int_equal(keys_identity("stb:whsec:" ORG ":test", "stb:", KEY_CONN_KIND, org, &mode), -1);
    assert_int_equal(keys_identity("xx:conn:" ORG ":test", "stb:", KEY_CONN_KIND, org, &mode), -1);
    assert_int_equal(keys_identity("stb:conn:" ORG ":prod", "stb:", KEY_CONN_KIND, org, &mode), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_connection_round_trip),
        cmocka_unit_test(test_store_connection_absent),
        cmocka_unit_test(test_store_connection_copied_to_another_org_or_mode_is_unreadable),
        cmocka_unit_test(test_store_connection_malformed_values_are_unreadable),
        cmocka_unit_test(test_store_webhook_secret_round_trip),
        cmocka_unit_test(test_store_keys_builders_match_the_formats),
        cmocka_unit_test(test_store_keys_member_round_trip_and_rejects),
        cmocka_unit_test(test_store_keys_identity_needs_prefix_and_kind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
