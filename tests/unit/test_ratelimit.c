/* test_ratelimit.c — fixed-window counters by key (core/ratelimit.h): keys that land
 * in one set keep their own counts (the table once kept one key per slot, so two orgs
 * sharing a slot reset each other's counter), windows end on time, and a full set
 * gives up its lowest count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/ratelimit.h"

/* One set only: every key shares it, as colliding keys would. */
static void test_keys_in_one_set_keep_their_own_counts(void **state)
{
    ratelimit_t *t = ratelimit_new(0, 42);
    const char *a = "o00D000000000001AAA", *b = "o00D000000000002AAA";

    /* interleaved: with one key per slot each hit of one would reset the other */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ratelimit_hit(t, a, strlen(a), 5, 1, 100), 0);
        assert_int_equal(ratelimit_hit(t, b, strlen(b), 5, 1, 100), 0);
    }
    assert_int_equal(ratelimit_hit(t, a, strlen(a), 5, 1, 100), 1);
    assert_int_equal(ratelimit_hit(t, b, strlen(b), 5, 1, 100), 1);
    assert_int_equal(ratelimit_full(t, a, strlen(a), 6, 100), 1);
    assert_int_equal(ratelimit_full(t, a, strlen(a), 7, 100), 0);
    ratelimit_free(t);
}

/* A random seed and several sets: whichever keys share a set, each counts on its own. */
static void test_keys_count_apart_whatever_the_seed(void **state)
{
    for (int round = 0; round < 64; round++) {
        ratelimit_t *t = ratelimit_new(2, 0); /* 4 sets, 4 keys: shared sets are frequent */
        const char *k[4] = {"o0", "o1", "o2", "o3"};
        for (int r = 0; r < 3; r++)
            for (int i = 0; i < 4; i++)
                assert_int_equal(ratelimit_hit(t, k[i], 2, 3, 60, 1000), 0);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(ratelimit_full(t, k[i], 2, 3, 1000), 20); /* 3 hits; window 960..1020 */
            assert_int_equal(ratelimit_full(t, k[i], 2, 4, 1000), 0);
        }
        ratelimit_free(t);
    }
}

static void test_window_ends_and_retry_after(void **state)
{
    ratelimit_t *t = ratelimit_new(4, 7);
    const char *k = "a127.0.0.1";

    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_hit(t, k, strlen(k), 3, 60, 125), 0);
    /* windows are aligned: 120..180 */
    assert_int_equal(ratelimit_hit(t, k, strlen(k), 3, 60, 125), 55);
    assert_int_equal(ratelimit_hit(t, k, strlen(k), 3, 60, 179), 1);
    assert_int_equal(ratelimit_full(t, k, strlen(k), 5, 179), 1);
    assert_int_equal(ratelimit_full(t, k, strlen(k), 6, 179), 0);
    assert_int_equal(ratelimit_full(t, k, strlen(k), 3, 180), 0);
    assert_int_equal(ratelimit_hit(t, k, strlen(k), 3, 60, 180), 0);
    /* limit 0: off, nothing counted */
    for (int i = 0; i < 10; i++)
        assert_int_equal(ratelimit_hit(t, "x", 1, 0, 60, 180), 0);
    assert_int_equal(ratelimit_full(t, "x", 1, 1, 180), 0);
    ratelimit_free(t);
}

/* A full set: the newcomer takes the way with the lowest count; the others keep theirs. */
static void test_full_set_gives_up_the_lowest_count(void **state)
{
    ratelimit_t *t = ratelimit_new(0, 1);
    const char *keys[RATELIMIT_WAYS] = {"k0", "k1", "k2", "k3"};

    for (int i = 0; i < RATELIMIT_WAYS; i++)
        for (int n = 0; n <= i + 1; n++) /* k0: 2 hits, k1: 3, k2: 4, k3: 5 */
            ratelimit_hit(t, keys[i], 2, 100, 60, 0);
    ratelimit_hit(t, "new", 3, 100, 60, 0);
    assert_int_equal(ratelimit_full(t, "k0", 2, 1, 0), 0);  /* forgotten */
    assert_int_equal(ratelimit_full(t, "k1", 2, 3, 0), 60); /* 3 hits: kept */
    assert_int_equal(ratelimit_full(t, "k3", 2, 5, 0), 60); /* 5 hits: kept */
    assert_int_equal(ratelimit_full(t, "new", 3, 2, 0), 0);
    assert_int_equal(ratelimit_hit(t, "new", 3, 1, 60, 0), 60);
    /* an expired way is taken before any live one */
    assert_int_equal(ratelimit_hit(t, "late", 4, 100, 1, 59), 0);
    ratelimit_free(t);
}

/* Keys are compared whole: a key that is a prefix of another is another key. */
static void test_prefix_keys_are_distinct(void **state)
{
    ratelimit_t *t = ratelimit_new(0, 3);
    assert_int_equal(ratelimit_hit(t, "ab", 2, 1, 60, 0), 0);
    assert_int_equal(ratelimit_hit(t, "abc", 3, 1, 60, 0), 0);
    assert_int_equal(ratelimit_hit(t, "a", 1, 1, 60, 0), 0);
    assert_int_equal(ratelimit_hit(t, "ab", 2, 1, 60, 0), 60);
    ratelimit_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_in_one_set_keep_their_own_counts),
        cmocka_unit_test(test_keys_count_apart_whatever_the_seed),
        cmocka_unit_test(test_window_ends_and_retry_after),
        cmocka_unit_test(test_full_set_gives_up_the_lowest_count),
        cmocka_unit_test(test_prefix_keys_are_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
