/* test_netaddr.c — addresses, CIDR ranges and the client behind trusted proxies
 * (core/netaddr.h): X-Forwarded-For counts only from a trusted peer, and is read from
 * the right up to the first address that is not a trusted proxy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "core/netaddr.h"

static netaddr_t addr(const char *s)
{
    netaddr_t a;
    if (netaddr_parse(s, strlen(s), &a) != 0)
        fail_msg("not an address: %s", s);
    return a;
}

static void test_parse(void **state)
{
    netaddr_t a;
    static const char *const bad[] = {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4/8", "[::1]", "::1%eth0",
                                      "example.com", " 1.2.3.4", "1.2.3.4:80", "gggg::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (netaddr_parse(bad[i], strlen(bad[i]), &a) == 0)
            fail_msg("accepted %s", bad[i]);
    a = addr("10.1.2.3");
    static const unsigned char want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
    assert_memory_equal(a.a, want, 16);
    netaddr_t b = addr("::ffff:10.1.2.3");
    assert_memory_equal(a.a, b.a, 16);
}

static void test_cidr(void **state)
{
    cidr_t l[3];
    static const char *const bad[] = {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "10.0.0.0/8x",
                                      "10.0.0.0/0008", "fd00::/64/1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (cidr_parse(bad[i], strlen(bad[i]), &l[0]) == 0)
            fail_msg("accepted %s", bad[i]);
    assert_int_equal(cidr_parse("10.0.0.0/8", 10, &l[0]), 0);
    assert_int_equal(cidr_parse("fd00:1::/33", 11, &l[1]), 0);
    assert_int_equal(cidr_parse("192.168.1.7", 11, &l[2]), 0);
    netaddr_t a;
    a = addr("10.200.3.4");
    assert_true(cidr_list_match(l, 3, &a));
    a = addr("11.0.0.1");
    assert_false(cidr_list_match(l, 3, &a));
    a = addr("fd00:1:7fff::1");
    assert_true(cidr_list_match(l, 3, &a));
    a = addr("fd00:1:8000::1");
    assert_false(cidr_list_match(l, 3, &a));
    a = addr("192.168.1.7");
    assert_true(cidr_list_match(l, 3, &a));
    a = addr("192.168.1.8");
    assert_false(cidr_list_match(l, 3, &a));
    /* host bits in the range are ignored; /0 is everything of its family */
    assert_int_equal(cidr_parse("10.9.9.9/8", 10, &l[0]), 0);
    a = addr("10.0.0.1");
    assert_true(cidr_list_match(l, 1, &a));
    assert_int_equal(cidr_parse("0.0.0.0/0", 9, &l[0]), 0);
    a = addr("203.0.113.9");
    assert_true(cidr_list_match(l, 1, &a));
    a = addr("2001:db8::1");
    assert_false(cidr_list_match(l, 1, &a));
    assert_int_equal(cidr_parse("::/0", 4, &l[0]), 0);
    assert_true(cidr_list_match(l, 1, &a));
}

static void client(const char *trusted, const char *peer, const char *const *xff, size_t n, const char *want)
{
    cidr_t t[4];
    size_t nt = 0, lens[4];
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", trusted);
    for (char *p = strtok(buf, ","); p != NULL; p = strtok(NULL, ","))
        assert_int_equal(cidr_parse(p, strlen(p), &t[nt++]), 0);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(xff[i]);
    netaddr_t p = addr(peer), out, w = addr(want);
    netaddr_client(t, nt, &p, xff, lens, n, &out);
    if (memcmp(out.a, w.a, 16) != 0) {
        char got[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, out.a, got, sizeof(got));
        fail_msg("trusted %s, peer %s, xff %s…: got %s, want %s", trusted, peer, n ? xff[0] : "-", got, want);
    }
}

static void test_client_behind_proxies(void **state)
{
    const char *one[] = {"203.0.113.7"};
    const char *spoof[] = {"198.51.100.1, 203.0.113.7"};
    const char *chain[] = {"198.51.100.1, 203.0.113.7, 10.0.0.5"};
    const char *two[] = {"198.51.100.1", "203.0.113.7 , 10.0.0.5"};
    const char *alltrusted[] = {"10.0.0.9, 10.0.0.5"};
    const char *garbage[] = {"203.0.113.7, unknown"};
    const char *ported[] = {"[2001:db8::7]:4431, 203.0.113.7:5555"};
    const char *v6[] = {"2001:db8::7"};
    const char *empty[] = {""};

    /* no trusted proxy: the header is never read */
    client("", "10.0.0.1", one, 1, "10.0.0.1");
    /* an untrusted peer's header is ignored */
    client("10.0.0.0/8", "192.0.2.1", one, 1, "192.0.2.1");
    client("10.0.0.0/8", "10.0.0.1", one, 1, "203.0.113.7");
    /* what the client wrote on the left is not believed */
    client("10.0.0.0/8", "10.0.0.1", spoof, 1, "203.0.113.7");
    client("10.0.0.0/8", "10.0.0.1", chain, 1, "203.0.113.7");
    client("10.0.0.0/8", "10.0.0.1", two, 2, "203.0.113.7");
    client("10.0.0.0/8", "10.0.0.1", alltrusted, 1, "10.0.0.9");
    client("10.0.0.0/8", "10.0.0.1", garbage, 1, "10.0.0.1");
    client("10.0.0.0/8", "10.0.0.1", ported, 1, "203.0.113.7");
    client("10.0.0.0/8,203.0.113.0/24", "10.0.0.1", ported, 1, "2001:db8::7");
    client("10.0.0.0/8", "10.0.0.1", empty, 1, "10.0.0.1");
    client("10.0.0.0/8", "10.0.0.1", NULL, 0, "10.0.0.1");
    client("fd00::/8", "fd00::1", v6, 1, "2001:db8::7");
    client("fd00::/8", "::ffff:10.0.0.1", v6, 1, "10.0.0.1");
}

static void unit_is(const char *addr, const char *want)
{
    netaddr_t a, w;
    assert_int_equal(netaddr_parse(addr, strlen(addr), &a), 0);
    assert_int_equal(netaddr_parse(want, strlen(want), &w), 0);
    netaddr_client_unit(&a, &a);
    if (memcmp(a.a, w.a, 16) != 0)
        fail_msg("the client unit of %s is not %s", addr, want);
}

static void test_client_unit(void **state)
{
    (void)state;
    /* IPv4 (and v4-mapped): the address itself */
    unit_is("203.0.113.7", "203.0.113.7");
    unit_is("::ffff:203.0.113.7", "203.0.113.7");
    /* IPv6: its /64, whatever the interface id */
    unit_is("2001:db8:1:2::1", "2001:db8:1:2::");
    unit_is("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::");
    unit_is("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::");
    unit_is("2001:db8:1:3::1", "2001:db8:1:3::");
    unit_is("::1", "::");
    /* out apart from a */
    netaddr_t a, out;
    assert_int_equal(netaddr_parse("2001:db8::5", 11, &a), 0);
    netaddr_client_unit(&a, &out);
    assert_int_equal(a.a[15], 5);
    assert_int_equal(out.a[15], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_client_behind_proxies),
        cmocka_unit_test(test_client_unit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
