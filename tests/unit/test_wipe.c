/* test_wipe.c — no freed block holds a secret.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=free,--wrap=realloc (Makefile): every free and
 * realloc made by the broker's own code passes through the wrappers below, which look
 * for a marker secret in the block being given back. A realloc of a block holding the
 * marker counts as a leak whether or not it moved: realloc may move it and free the
 * old block unwiped. jansson (a shared library) frees through the allocator that
 * secure_json_init installs; a tap in front of it checks that each of jansson's frees
 * reaches the wrapped free, so none bypasses the scan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/buf.h"
#include "core/crypto.h"
#include "core/record.h"
#include "core/stripe_resp.h"
#include "routes/params.h"

/* A token-sized secret; the scan looks for its distinctive middle. */
#define SECRET "sk_test_51WipeMe0000000000MARKERq7Zx9Kp2Lm4Nb6Vc8Xd0Fg2Hj4Kl6Zx8Cv0Bn2Mq4We6Rt8Yu0Io2Pa4Sd6Fg8Hj0Kl2"
#define CORE "MARKERq7Zx9Kp2Lm"

void *__real_malloc(size_t n);
void __real_free(void *p);
void *__real_realloc(void *p, size_t n);

/* volatile: the compiler takes free() for a call that writes no global */
static volatile int armed;           /* scanning on */
static volatile int leaks;           /* blocks given back with the marker in them */
static volatile unsigned long frees; /* wrapped frees while armed */
static volatile int bypassed;        /* jansson frees that never reached the wrapped free */

static int holds_secret(void *p)
{
    return p != NULL && memmem(p, malloc_usable_size(p), CORE, strlen(CORE)) != NULL;
}

void *__wrap_malloc(size_t n)
{
    return __real_malloc(n);
}

void __wrap_free(void *p)
{
    if (armed && p != NULL) {
        frees++;
        if (holds_secret(p))
            leaks++;
    }
    __real_free(p);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (armed && holds_secret(p))
        leaks++;
    return __real_realloc(p, n);
}

static json_malloc_t prod_malloc;
static json_free_t prod_free;

static void tap_free(void *p)
{
    unsigned long before = frees;
    if (p == NULL)
        return;
    prod_free(p);
    if (armed && frees == before)
        bypassed++;
}

static int setup(void **state)
{
    secure_json_init(); /* what main() does first */
    json_get_alloc_funcs(&prod_malloc, &prod_free);
    json_set_alloc_funcs(prod_malloc, tap_free);
    return 0;
}

static int teardown(void **state)
{
    json_set_alloc_funcs(prod_malloc, prod_free);
    return 0;
}

static void arm(void)
{
    armed = 1;
    leaks = 0;
    frees = 0;
    bypassed = 0;
}

static void disarm_and_check(const char *what)
{
    armed = 0;
    if (leaks != 0 || bypassed != 0)
        fail_msg("%s: %d freed block(s) held the secret, %d jansson free(s) bypassed the wiping free", what, leaks,
                 bypassed);
}

static void test_growing_buffer_leaves_no_copy(void **state)
{
    buf_t b = {0};
    arm();
    buf_puts(&b, SECRET);
    for (int i = 0; i < 200; i++)
        buf_printf(&b, "%d,", i);
    assert_non_null(memmem(b.p, b.len, CORE, strlen(CORE)));
    buf_wipe(&b);
    disarm_and_check("buf growth");
    assert_true(frees > 0);
}

static void test_get_access_token_answer_leaves_no_copy(void **state)
{
    conn_record_t rec;
    memset(&rec, 0, sizeof(rec));
    rec.status = CONN_CONNECTED;
    rec.access_token = strdup(SECRET);
    rec.stripe_user_id = strdup("acct_1WipeTest000000");
    rec.stripe_publishable_key = strdup("pk_test_51WipeTest0000000000000000000000000000000000000000");
    rec.scope = strdup("read_write");
    arm();
    buf_t out = {0};
    token_json(&out, &rec, 0);
    assert_non_null(strstr(out.p, SECRET));
    buf_wipe(&out);
    conn_record_clear(&rec);
    disarm_and_check("getAccessToken answer");
}

static void test_record_decode_leaves_no_copy(void **state)
{
    conn_record_t rec, back;
    memset(&rec, 0, sizeof(rec));
    rec.status = CONN_CONNECTED;
    rec.access_token = strdup(SECRET);
    rec.refresh_token = strdup("rt_" SECRET);
    rec.stripe_user_id = strdup("acct_1WipeTest000000");
    arm();
    char *json = conn_record_encode(&rec);
    assert_int_equal(conn_record_decode(json, strlen(json), &back), 0);
    assert_string_equal(back.access_token, SECRET);
    conn_record_clear(&back);
    secure_free_str(json);
    conn_record_clear(&rec);
    disarm_and_check("connection record encode/decode");
}

static void test_stripe_token_answer_leaves_no_copy(void **state)
{
    const char body[] = "{\"access_token\":\"" SECRET "\",\"refresh_token\":\"rt_" SECRET "\","
                        "\"token_type\":\"bearer\",\"stripe_user_id\":\"acct_1WipeTest000000\","
                        "\"stripe_publishable_key\":\"pk_test_1\",\"scope\":\"read_write\",\"livemode\":false}";
    stripe_token_t tok;
    char err[64];
    arm();
    assert_int_equal(stripe_token_parse(200, body, strlen(body), &tok, err), STRIPE_OK);
    assert_string_equal(tok.access_token, SECRET);
    stripe_token_clear(&tok);
    disarm_and_check("Stripe token answer");
}

/* What whsec_put does with its body: json_loadb, read the field, json_decref. */
static void test_signing_secret_body_leaves_no_copy(void **state)
{
    const char body[] = "{\"signing_secret\": \"whsec_" SECRET "\"}";
    arm();
    json_t *j = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    assert_non_null(strstr(json_string_value(json_object_get(j, "signing_secret")), CORE));
    json_decref(j);
    disarm_and_check("signing secret body");
    assert_true(frees > 0); /* jansson's frees were seen */
}

/* jansson's serialiser grows its output by allocate-copy-free too. */
static void test_json_dumps_leaves_no_copy(void **state)
{
    arm();
    json_t *j = json_pack("{s:s, s:s}", "access_token", SECRET, "refresh_token", "rt_" SECRET);
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(strstr(text, CORE));
    json_decref(j);
    secure_free_str(text);
    disarm_and_check("json_dumps");
}

/* libcurl's allocator (main: curl_global_init_mem): a block it grows or frees leaves no
 * copy of the bearer or the body behind, and a grown block keeps its content. */
static void test_curl_allocator_leaves_no_copy(void **state)
{
    arm();
    char *p = secure_block_realloc(NULL, sizeof(SECRET));
    assert_non_null(p);
    memcpy(p, SECRET, sizeof(SECRET));
    for (size_t n = 2 * sizeof(SECRET); n < 64 * 1024; n *= 2) {
        p = secure_block_realloc(p, n);
        assert_non_null(p);
        assert_string_equal(p, SECRET);
    }
    p = secure_block_realloc(p, 8); /* shrinking keeps the head, wipes the rest */
    assert_memory_equal(p, SECRET, 8);
    secure_block_free(p);
    disarm_and_check("curl allocator");
    assert_true(frees > 0);
}

/* The scan itself works: a secret freed without wiping is seen. */
static void test_the_scan_sees_an_unwiped_secret(void **state)
{
    char *p = malloc(sizeof(SECRET));
    assert_non_null(p);
    memcpy(p, SECRET, sizeof(SECRET));
    assert_non_null(strstr(p, CORE)); /* used, so the copy is not optimised away */
    arm();
    free(p);
    armed = 0;
    assert_int_equal(leaks, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_scan_sees_an_unwiped_secret),
        cmocka_unit_test(test_growing_buffer_leaves_no_copy),
        cmocka_unit_test(test_get_access_token_answer_leaves_no_copy),
        cmocka_unit_test(test_record_decode_leaves_no_copy),
        cmocka_unit_test(test_stripe_token_answer_leaves_no_copy),
        cmocka_unit_test(test_signing_secret_body_leaves_no_copy),
        cmocka_unit_test(test_json_dumps_leaves_no_copy),
        cmocka_unit_test(test_curl_allocator_leaves_no_copy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
