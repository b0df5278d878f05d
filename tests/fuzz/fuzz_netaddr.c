/* fuzz_netaddr.c — the client address behind trusted proxies (core/netaddr.c) on any
 * bytes. Input: a trusted list (comma separated CIDR entries), a NUL, then X-Forwarded-For
 * values separated by NUL bytes. Checks: every range parsed matches its own network
 * address; without a trusted peer the client is the peer; with one, the client is the
 * peer or an address read from the header. The peer is the first range's address. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/netaddr.h"

#define MAX_RANGES 8
#define MAX_VALUES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size;
    const char *z = memchr(s, 0, size);
    const char *tend = z != NULL ? z : end;
    cidr_t ranges[MAX_RANGES];
    size_t nr = 0;

    for (const char *p = s; p < tend && nr < MAX_RANGES;) {
        const char *comma = memchr(p, ',', (size_t)(tend - p));
        size_t n = (size_t)((comma != NULL ? comma : tend) - p);
        if (cidr_parse(p, n, &ranges[nr]) == 0) {
            if (ranges[nr].bits < 0 || ranges[nr].bits > 128 || !cidr_list_match(&ranges[nr], 1, &ranges[nr].net))
                abort();
            nr++;
        }
        p += n + 1;
    }
    const char *vals[MAX_VALUES];
    size_t lens[MAX_VALUES], nv = 0;
    for (const char *p = z != NULL ? z + 1 : end; p < end && nv < MAX_VALUES;) {
        const char *nul = memchr(p, 0, (size_t)(end - p));
        vals[nv] = p;
        lens[nv] = (size_t)((nul != NULL ? nul : end) - p);
        p += lens[nv++] + 1;
    }
    netaddr_t peer, out;
    memset(&peer, 0, sizeof(peer));
    if (nr > 0)
        peer = ranges[0].net;
    netaddr_client(ranges, nr, &peer, vals, lens, nv, &out);
    if (nr == 0 || !cidr_list_match(ranges, nr, &peer)) {
        if (memcmp(&out, &peer, sizeof(out)) != 0)
            abort();
    }
    /* the client unit: an IPv4 (v4-mapped) address whole, an IPv6 address's first 8 bytes */
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, zero[8] = {0};
    netaddr_t unit;
    netaddr_client_unit(&out, &unit);
    int v4 = memcmp(out.a, v4mapped, sizeof(v4mapped)) == 0;
    if (memcmp(unit.a, out.a, 8) != 0 || memcmp(unit.a + 8, v4 ? out.a + 8 : zero, 8) != 0)
        abort();
    return 0;
}
