/* test_crypto.c — hashes, MACs, codecs, random values and constant-time equality. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"

static void test_sha256_hex_matches_known_vectors(void **state)
{
    char out[65];

    sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hmac_sha256_matches_rfc4231(void **state)
{
    unsigned char key[20], mac[32];
    char hex[65];

    memset(key, 0x0b, sizeof(key)); /* RFC 4231 test case 1 */
    hmac_sha256(key, sizeof(key), "Hi There", 8, mac);
    hex_encode(mac, 32, hex);
    assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac); /* test case 2 */
    hex_encode(mac, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_hmac_sha256_accepts_empty_message(void **state)
{
    unsigned char mac[32];
    char hex[65];

    hmac_sha256("key", 3, "", 0, mac);
    hex_encode(mac, 32, hex);
    assert_string_equal(hex, "5d5d139563c95b5967b9bd9a8c9b233a9dedb45072794cd232dc1b74832607d0");
}

static void test_ct_equal_compares_contents_and_lengths(void **state)
{
    assert_int_equal(ct_equal("abc", 3, "abc", 3), 1);
    assert_int_equal(ct_equal("abc", 3, "abd", 3), 0);
    assert_int_equal(ct_equal("abc", 3, "abcd", 4), 0);
    assert_int_equal(ct_equal("abcd", 4, "abc", 3), 0);
    assert_int_equal(ct_equal("", 0, "", 0), 1);
}

static void test_hex_encode_is_lowercase(void **state)
{
    static const unsigned char data[] = {0x00, 0xab, 0xff, 0x10};
    char out[9];

    hex_encode(data, sizeof(data), out);
    assert_string_equal(out, "00abff10");
}

typedef struct b64_case {
    const char *raw;
    const char *url;
} b64_case_t;

static void test_b64url_encode_table(void **state)
{
    static const b64_case_t cases[] = {
        {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"},
        {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[16];
        size_t n = b64url_encode((const unsigned char *)cases[i].raw, strlen(cases[i].raw), out);
        assert_int_equal(n, strlen(cases[i].url));
        assert_string_equal(out, cases[i].url);
    }
}

typedef struct b64_decode_case {
    const char *in;
    const char *want; /* NULL: malformed */
} b64_decode_case_t;

static void test_b64_decode_table(void **state)
{
    static const b64_decode_case_t cases[] = {
        {"", ""},          {"Zg", "f"},        {"Zg==", "f"},        {"Zm8", "fo"},
        {"Zm8=", "fo"},    {"Zm9v", "foo"},    {"Zm9vYmFy", "foobar"}, {"-_8", "\xfb\xff"},
        {"+/8", "\xfb\xff"}, {"+/8=", "\xfb\xff"},
        {"Z", NULL},       {"Zg=", NULL},      {"Zg===", NULL},      {"Z===", NULL},
        {"Zh", NULL},      /* non-zero unused bits: not canonical */
        {"Zm9", NULL},     {"Zg==Zg==", NULL}, {"Zm 9v", NULL},      {"Zm9v\n", NULL},
        {"Zm9v!", NULL},   {"=", NULL},        {"==", NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char out[32];
        ssize_t n = b64_decode(cases[i].in, strlen(cases[i].in), out);
        if (cases[i].want == NULL) {
            if (n != -1)
                fail_msg("accepted \"%s\"", cases[i].in);
        } else {
            if (n < 0)
                fail_msg("rejected \"%s\"", cases[i].in);
            assert_int_equal((size_t)n, strlen(cases[i].want));
            assert_memory_equal(out, cases[i].want, (size_t)n);
        }
    }
}

static void test_b64_round_trips_every_length(void **state)
{
    unsigned char data[70], back[70 + 3];
    char enc[100];
    size_t len;

    for (len = 0; len <= 64; len++) {
        size_t n;
        rand_bytes(data, len);
        n = b64url_encode(data, len, enc);
        assert_int_equal(b64_decode(enc, n, back), (ssize_t)len);
        assert_memory_equal(back, data, len);
    }
}

static void test_rand_token_is_unpadded_base64url_of_the_size(void **state)
{
    char a[4 * 32 / 3 + 2], b[4 * 32 / 3 + 2];
    unsigned char raw[32 + 3];

    rand_token(a, 32);
    rand_token(b, 32);
    assert_int_equal(strlen(a), 43);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     43);
    assert_int_equal(b64_decode(a, 43, raw), 32);
    assert_string_not_equal(a, b);
}

/* 100 bytes take three chunks of the CSPRNG: every byte is random, so the decoded token
 * does not repeat a chunk, and two tokens differ in every chunk. */
static void test_rand_token_handles_sizes_beyond_one_chunk(void **state)
{
    char a[4 * 100 / 3 + 2], b[4 * 100 / 3 + 2];
    unsigned char ra[100 + 3], rb[100 + 3];

    rand_token(a, 100);
    rand_token(b, 100);
    assert_int_equal(strlen(a), 134);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 134);
    assert_int_equal(b64_decode(a, 134, ra), 100);
    assert_int_equal(b64_decode(b, 134, rb), 100);
    /* 48-byte chunks (RAND_CHUNK_BYTES): bytes 0-47, 48-95, 96-99 */
    assert_memory_not_equal(ra, ra + 48, 48);
    assert_memory_not_equal(ra, ra + 96, 4);
    assert_memory_not_equal(ra + 48, ra + 96, 4);
    for (size_t off = 0; off < 100; off += 48)
        assert_memory_not_equal(ra + off, rb + off, off + 48 <= 100 ? 48 : 100 - off);
}

/* secure_free must wipe before it frees. Seen by interposing free() in this test binary
 * (glibc's __libc_free does the freeing): the bytes of the watched block are copied just
 * before they are released. Not under AddressSanitizer, which owns free(). */
#if defined(__SANITIZE_ADDRESS__)
#define WATCH_FREE 0
#else
#define WATCH_FREE 1
extern void __libc_free(void *p);
static void *watched;
static size_t watched_len;
static unsigned char at_free[64];
static int freed;

void free(void *p)
{
    if (p != NULL && p == watched) {
        memcpy(at_free, p, watched_len);
        freed = 1;
        watched = NULL;
    }
    __libc_free(p);
}
#endif

static void test_secure_free_wipes_before_freeing(void **state)
{
#if WATCH_FREE
    static const unsigned char zero[sizeof(at_free)];
    char *s = strdup("sk_live_0123456789abcdefghijklmnopqrstuvwxyz");
    unsigned char *p = malloc(sizeof(at_free));

    assert_non_null(s);
    assert_non_null(p);
    memset(p, 0xa5, sizeof(at_free));
    watched = p, watched_len = sizeof(at_free), freed = 0;
    secure_free(p, sizeof(at_free));
    assert_true(freed);
    assert_memory_equal(at_free, zero, sizeof(at_free));

    watched_len = strlen(s), watched = s, freed = 0;
    secure_free_str(s);
    assert_true(freed);
    assert_memory_equal(at_free, zero, watched_len);

    secure_free(NULL, 10); /* NULL is fine: nothing happens */
    secure_free_str(NULL);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_hex_matches_known_vectors),
        cmocka_unit_test(test_hmac_sha256_matches_rfc4231),
        cmocka_unit_test(test_hmac_sha256_accepts_empty_message),
        cmocka_unit_test(test_ct_equal_compares_contents_and_lengths),
        cmocka_unit_test(test_hex_encode_is_lowercase),
        cmocka_unit_test(test_b64url_encode_table),
        cmocka_unit_test(test_b64_decode_table),
        cmocka_unit_test(test_b64_round_trips_every_length),
        cmocka_unit_test(test_rand_token_is_unpadded_base64url_of_the_size),
        cmocka_unit_test(test_rand_token_handles_sizes_beyond_one_chunk),
        cmocka_unit_test(test_secure_free_wipes_before_freeing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
