/* test_seal.c — AES-256-GCM sealing: round trip, binding to org/mode/field, tamper
 * detection, format versions, key ids, rotation, and the keyring parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "core/seal.h"

/* Three 32-byte keys in standard base64 (`openssl rand -base64 32` style). */
#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define KEY_C "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="
#define ORG "00D000000000001EAA"
#define ORG2 "00D000000000002EAA"
#define SECRET "sk_test_51Hcontents"

static seal_keyring_t ring(const char *spec)
{
    seal_keyring_t kr;
    const char *err = NULL;

    if (keyring_parse(spec, &kr, &err) != 0)
        fail_msg("keyring_parse: %s", err);
    return kr;
}

static char *seal_default(const seal_keyring_t *kr)
{
    return seal_seal(kr, ORG, "live", "access_token", SECRET, strlen(SECRET));
}

static int open_as(const seal_keyring_t *kr, const char *sealed, const char *org,
                   const char *mode, const char *field)
{
    char *pt = NULL;
    size_t ptlen = 0;
    int rc = seal_open(kr, sealed, strlen(sealed), org, mode, field, &pt, &ptlen);

    if (rc == SEAL_OK) {
        assert_int_equal(ptlen, strlen(SECRET));
        assert_string_equal(pt, SECRET);
        secure_free(pt, ptlen + 1);
    } else {
        assert_null(pt);
    }
    return rc;
}

/* ===== Sealing and opening ===== */

static void test_seal_round_trips(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s = seal_default(&kr);

    assert_int_equal(open_as(&kr, s, ORG, "live", "access_token"), SEAL_OK);
    free(s);
    keyring_free(&kr);
}

static void test_seal_has_documented_format(void **state)
{
    seal_keyring_t kr = ring("key-2024_a:" KEY_A);
    char *s = seal_default(&kr);
    const char *nonce = s + strlen("1.key-2024_a.");
    const char *ct = strchr(nonce, '.');

    assert_int_equal(strncmp(s, "1.key-2024_a.", 13), 0);
    assert_non_null(ct);
    assert_int_equal(ct - nonce, 16);                      /* 12 bytes */
    assert_int_equal(strlen(ct + 1), ((strlen(SECRET) + 16) * 4 + 2) / 3); /* ct + tag */
    assert_null(strchr(s, '='));
    assert_null(strstr(s, SECRET));
    free(s);
    keyring_free(&kr);
}

static void test_seal_uses_a_fresh_nonce_each_time(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *a = seal_default(&kr), *b = seal_default(&kr);

    assert_string_not_equal(a, b);
    free(a);
    free(b);
    keyring_free(&kr);
}

static void test_seal_round_trips_empty_and_binary_values(void **state)
{
    static const unsigned char bin[] = {0, 1, 2, 0xff, 0};
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s, *pt;
    size_t ptlen;

    s = seal_seal(&kr, ORG, "test", "f", "", 0);
    assert_int_equal(seal_open(&kr, s, strlen(s), ORG, "test", "f", &pt, &ptlen), SEAL_OK);
    assert_int_equal(ptlen, 0);
    assert_string_equal(pt, "");
    secure_free(pt, 1);
    free(s);
    s = seal_seal(&kr, ORG, "test", "f", bin, sizeof(bin));
    assert_int_equal(seal_open(&kr, s, strlen(s), ORG, "test", "f", &pt, &ptlen), SEAL_OK);
    assert_int_equal(ptlen, sizeof(bin));
    assert_memory_equal(pt, bin, sizeof(bin));
    secure_free(pt, ptlen + 1);
    free(s);
    keyring_free(&kr);
}

static void test_seal_fails_with_wrong_key_of_same_id(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A), other = ring("k1:" KEY_B);
    char *s = seal_default(&kr);

    assert_int_equal(open_as(&other, s, ORG, "live", "access_token"), SEAL_ERR_AUTH);
    free(s);
    keyring_free(&kr);
    keyring_free(&other);
}

static void test_seal_is_bound_to_org_mode_and_field(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s = seal_default(&kr);

    assert_int_equal(open_as(&kr, s, ORG2, "live", "access_token"), SEAL_ERR_AUTH);
    assert_int_equal(open_as(&kr, s, ORG, "test", "access_token"), SEAL_ERR_AUTH);
    assert_int_equal(open_as(&kr, s, ORG, "live", "refresh_token"), SEAL_ERR_AUTH);
    /* the separators keep the parts apart: "a|b" + "c" is not "a" + "b|c" */
    assert_int_equal(open_as(&kr, s, ORG "|live", "access_token", ""), SEAL_ERR_AUTH);
    free(s);
    keyring_free(&kr);
}

static void test_seal_detects_tampering_of_every_character(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s = seal_default(&kr);
    size_t i, len = strlen(s);

    for (i = 0; i < len; i++) {
        char saved = s[i];
        const char *repl = "A0z_.";
        for (; *repl != '\0'; repl++) {
            if (*repl == saved)
                continue;
            s[i] = *repl;
            if (open_as(&kr, s, ORG, "live", "access_token") == SEAL_OK)
                fail_msg("opened after changing position %zu to '%c'", i, *repl);
        }
        s[i] = saved;
    }
    assert_int_equal(open_as(&kr, s, ORG, "live", "access_token"), SEAL_OK);
    free(s);
    keyring_free(&kr);
}

static void test_seal_detects_truncation_and_extension(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s = seal_default(&kr), *longer;
    size_t len = strlen(s), cut;
    char *pt;
    size_t ptlen;

    for (cut = 0; cut < len; cut++)
        assert_int_not_equal(seal_open(&kr, s, cut, ORG, "live", "access_token", &pt, &ptlen),
                             SEAL_OK);
    longer = malloc(len + 5);
    memcpy(longer, s, len);
    memcpy(longer + len, "AAAA", 5);
    assert_int_not_equal(open_as(&kr, longer, ORG, "live", "access_token"), SEAL_OK);
    memcpy(longer + len, "=", 2);
    assert_int_not_equal(open_as(&kr, longer, ORG, "live", "access_token"), SEAL_OK);
    free(longer);
    free(s);
    keyring_free(&kr);
}

static void test_seal_detects_swapped_parts(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *a = seal_default(&kr), *b = seal_default(&kr);
    char mixed[512];

    /* a's nonce with b's ciphertext */
    snprintf(mixed, sizeof(mixed), "%.*s%s", (int)(strrchr(a, '.') - a), a, strrchr(b, '.'));
    assert_int_equal(open_as(&kr, mixed, ORG, "live", "access_token"), SEAL_ERR_AUTH);
    free(a);
    free(b);
    keyring_free(&kr);
}

typedef struct bad_sealed {
    const char *s;
    int rc;
} bad_sealed_t;

static void test_seal_classifies_malformed_values(void **state)
{
    static const bad_sealed_t cases[] = {
        {"", SEAL_ERR_FORMAT},
        {"1", SEAL_ERR_FORMAT},
        {"1.", SEAL_ERR_FORMAT},
        {"1.k1", SEAL_ERR_FORMAT},
        {"1.k1.AAAAAAAAAAAAAAAA", SEAL_ERR_FORMAT},
        {"1.k1.AAAAAAAAAAAAAAAA.", SEAL_ERR_FORMAT},               /* shorter than a tag */
        {"1.k1.AAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", SEAL_ERR_FORMAT}, /* short nonce */
        {"1.k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAA+", SEAL_ERR_FORMAT}, /* std alphabet */
        {"1..AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", SEAL_ERR_FORMAT},
        {"1.k!.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", SEAL_ERR_FORMAT},
        {"x.k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", SEAL_ERR_FORMAT},
        {".k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", SEAL_ERR_FORMAT},
        {"sk_live_plaintext", SEAL_ERR_FORMAT},
        {"1.k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", SEAL_ERR_AUTH},
    };
    seal_keyring_t kr = ring("k1:" KEY_A);
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = open_as(&kr, cases[i].s, ORG, "live", "access_token");
        if (rc != cases[i].rc)
            fail_msg("\"%s\": %d, want %d", cases[i].s, rc, cases[i].rc);
    }
    keyring_free(&kr);
}

static void test_seal_reports_unknown_version(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s = seal_default(&kr);
    char kid[SEAL_KID_MAX + 1];

    s[0] = '2';
    assert_int_equal(open_as(&kr, s, ORG, "live", "access_token"), SEAL_ERR_VERSION);
    assert_int_equal(seal_kid(s, strlen(s), kid), SEAL_ERR_VERSION);
    assert_int_equal(open_as(&kr, "12.k1.AAAAAAAAAAAAAAAA.AAAA", ORG, "live", "a"),
                     SEAL_ERR_VERSION);
    assert_int_equal(open_as(&kr, "0.k1.x", ORG, "live", "a"), SEAL_ERR_VERSION);
    free(s);
    keyring_free(&kr);
}

static void test_seal_reports_unknown_kid(void **state)
{
    seal_keyring_t old = ring("old:" KEY_A), next = ring("new:" KEY_B);
    char *s = seal_default(&old);

    assert_int_equal(open_as(&next, s, ORG, "live", "access_token"), SEAL_ERR_KID);
    free(s);
    keyring_free(&old);
    keyring_free(&next);
}

static void test_seal_opens_old_values_after_rotation(void **state)
{
    seal_keyring_t old = ring("old:" KEY_A), rotated = ring("new:" KEY_B ",old:" KEY_A);
    char *s = seal_default(&old), *resealed;
    char kid[SEAL_KID_MAX + 1];

    assert_int_equal(open_as(&rotated, s, ORG, "live", "access_token"), SEAL_OK);
    resealed = seal_default(&rotated);
    assert_int_equal(seal_kid(resealed, strlen(resealed), kid), SEAL_OK);
    assert_string_equal(kid, "new");
    assert_int_equal(open_as(&rotated, resealed, ORG, "live", "access_token"), SEAL_OK);
    assert_int_equal(open_as(&old, resealed, ORG, "live", "access_token"), SEAL_ERR_KID);
    free(s);
    free(resealed);
    keyring_free(&old);
    keyring_free(&rotated);
}

static void test_seal_kid_reads_the_key_id(void **state)
{
    seal_keyring_t kr = ring("k1:" KEY_A);
    char *s = seal_default(&kr);
    char kid[SEAL_KID_MAX + 1];

    assert_int_equal(seal_kid(s, strlen(s), kid), SEAL_OK);
    assert_string_equal(kid, "k1");
    assert_int_equal(seal_kid("garbage", 7, kid), SEAL_ERR_FORMAT);
    free(s);
    keyring_free(&kr);
}

/* ===== keyring_parse ===== */

static void test_keyring_parses_several_keys_first_seals(void **state)
{
    seal_keyring_t kr = ring("a:" KEY_A ",b-2:" KEY_B ", c_3:" KEY_C);
    unsigned char want[32 + 3];

    assert_int_equal(kr.n, 3);
    assert_string_equal(kr.keys[0].kid, "a");
    assert_string_equal(kr.keys[1].kid, "b-2");
    assert_string_equal(kr.keys[2].kid, "c_3");
    assert_int_equal(b64_decode(KEY_B, strlen(KEY_B), want), 32);
    assert_memory_equal(kr.keys[1].key, want, 32);
    keyring_free(&kr);
    assert_null(kr.keys);
    assert_int_equal(kr.n, 0);
}

static void test_keyring_accepts_url_alphabet_and_no_padding(void **state)
{
    seal_keyring_t kr = ring("k:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8,"
                             "u:-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8");

    assert_int_equal(kr.n, 2);
    keyring_free(&kr);
}

typedef struct keyring_bad {
    const char *spec;
    const char *err;
} keyring_bad_t;

static void test_keyring_rejects_malformed_specs(void **state)
{
    static const keyring_bad_t cases[] = {
        {"", "no keys (expected kid:base64key[,kid:base64key...])"},
        {KEY_A, "entry 1: expected kid:base64key"},
        {"k1:" KEY_A ",", "entry 2: empty entry (expected kid:base64key)"},
        {"k1:" KEY_A ",bad kid:" KEY_B, "entry 2: key id must be 1-32 characters of A-Z a-z 0-9 _ -"},
        {":" KEY_A, "entry 1: key id must be 1-32 characters of A-Z a-z 0-9 _ -"},
        {"k.1:" KEY_A, "entry 1: key id must be 1-32 characters of A-Z a-z 0-9 _ -"},
        {"abcdefghijabcdefghijabcdefghijabc:" KEY_A,
         "entry 1: key id must be 1-32 characters of A-Z a-z 0-9 _ -"},
        {"k1:c2hvcnQ=", "entry 1: key must be 32 bytes of base64"},
        {"k1:" KEY_A "AAAA", "entry 1: key must be 32 bytes of base64"},
        {"k1:not*base64", "entry 1: key must be 32 bytes of base64"},
        {"k1:", "entry 1: key must be 32 bytes of base64"},
        {"k1:" KEY_A ",k1:" KEY_B, "entry 2: duplicate key id"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        seal_keyring_t kr = {(seal_key_t *)1, 99};
        const char *err = NULL;
        assert_int_equal(keyring_parse(cases[i].spec, &kr, &err), -1);
        assert_non_null(err);
        assert_string_equal(err, cases[i].err);
        assert_null(kr.keys);
        assert_int_equal(kr.n, 0);
    }
}

static void test_keyring_accepts_32_character_kid(void **state)
{
    seal_keyring_t kr = ring("abcdefghijabcdefghijabcdefghijab:" KEY_A);

    assert_string_equal(kr.keys[0].kid, "abcdefghijabcdefghijabcdefghijab");
    keyring_free(&kr);
}

static void test_keyring_error_never_contains_the_key(void **state)
{
    const char *specs[] = {("k1:" KEY_A "x"), ("k1:" KEY_A ",k1:" KEY_A), ("k 1:" KEY_A)};
    size_t i;

    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        seal_keyring_t kr;
        const char *err = NULL;
        assert_int_equal(keyring_parse(specs[i], &kr, &err), -1);
        assert_null(strstr(err, "AAECAwQF"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_round_trips),
        cmocka_unit_test(test_seal_has_documented_format),
        cmocka_unit_test(test_seal_uses_a_fresh_nonce_each_time),
        cmocka_unit_test(test_seal_round_trips_empty_and_binary_values),
        cmocka_unit_test(test_seal_fails_with_wrong_key_of_same_id),
        cmocka_unit_test(test_seal_is_bound_to_org_mode_and_field),
        cmocka_unit_test(test_seal_detects_tampering_of_every_character),
        cmocka_unit_test(test_seal_detects_truncation_and_extension),
        cmocka_unit_test(test_seal_detects_swapped_parts),
        cmocka_unit_test(test_seal_classifies_malformed_values),
        cmocka_unit_test(test_seal_reports_unknown_version),
        cmocka_unit_test(test_seal_reports_unknown_kid),
        cmocka_unit_test(test_seal_opens_old_values_after_rotation),
        cmocka_unit_test(test_seal_kid_reads_the_key_id),
        cmocka_unit_test(test_keyring_parses_several_keys_first_seals),
        cmocka_unit_test(test_keyring_accepts_url_alphabet_and_no_padding),
        cmocka_unit_test(test_keyring_rejects_malformed_specs),
        cmocka_unit_test(test_keyring_accepts_32_character_kid),
        cmocka_unit_test(test_keyring_error_never_contains_the_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
