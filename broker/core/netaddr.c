/* netaddr.c — addresses, CIDR ranges and the forwarded client address (see netaddr.h).
 * Owns the X-Forwarded-For reading rule: only a trusted peer's header counts, and only
 * the entries that trusted proxies appended (read from the right), since everything
 * left of them is whatever the client chose to send. Tested by tests/unit/test_netaddr.c
 * and tests/fuzz/fuzz_netaddr.c. */
#include "core/netaddr.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int netaddr_parse(const char *s, size_t n, netaddr_t *out)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(tmp) || memchr(s, '\0', n) != NULL)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (memchr(s, ':', n) != NULL)
        return inet_pton(AF_INET6, tmp, out->a) == 1 ? 0 : -1;
    memcpy(out->a, v4mapped, sizeof(v4mapped));
    return inet_pton(AF_INET, tmp, out->a + 12) == 1 ? 0 : -1;
}

void netaddr_client_unit(const netaddr_t *a, netaddr_t *out)
{
    if (out != a)
        memcpy(out->a, a->a, sizeof(out->a));
    if (memcmp(out->a, v4mapped, sizeof(v4mapped)) != 0)
        memset(out->a + 8, 0, 8);
}

int netaddr_from_sockaddr(const struct sockaddr *sa, netaddr_t *out)
{
    if (sa->sa_family == AF_INET) {
        memcpy(out->a, v4mapped, sizeof(v4mapped));
        memcpy(out->a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    memset(out->a, 0, sizeof(out->a));
    return -1;
}

int cidr_parse(const char *s, size_t n, cidr_t *out)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash != NULL ? (size_t)(slash - s) : n;
    if (netaddr_parse(s, alen, &out->net) != 0)
        return -1;
    int v4 = memchr(s, ':', alen) == NULL, max = v4 ? 32 : 128, bits = max;
    if (slash != NULL) {
        const char *p = slash + 1, *end = s + n;
        if (p == end || end - p > 3)
            return -1;
        for (bits = 0; p < end; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            bits = bits * 10 + (*p - '0');
        }
        if (bits > max)
            return -1;
    }
    out->bits = v4 ? 96 + bits : bits;
    for (int i = 0; i < 16; i++) {
        int keep = out->bits - i * 8;
        out->net.a[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
    return 0;
}

int cidr_list_match(const cidr_t *list, size_t n, const netaddr_t *a)
{
    for (size_t k = 0; k < n; k++) {
        int i = 0, bits = list[k].bits;
        for (; bits >= 8 && a->a[i] == list[k].net.a[i]; i++, bits -= 8)
            ;
        if (bits <= 0 || (bits < 8 && ((a->a[i] ^ list[k].net.a[i]) & (0xff << (8 - bits))) == 0))
            return 1;
    }
    return 0;
}

/* One X-Forwarded-For entry, spaces trimmed; "[v6]", "[v6]:port" and "v4:port" are
 * accepted as proxies write them. */
static int entry_parse(const char *s, size_t n, netaddr_t *out)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n > 0 && *s == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL || (close + 1 != s + n && close[1] != ':'))
            return -1;
        return netaddr_parse(s + 1, (size_t)(close - s - 1), out);
    }
    const char *colon = memchr(s, ':', n);
    if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)) == NULL)
        n = (size_t)(colon - s); /* v4:port */
    return netaddr_parse(s, n, out);
}

void netaddr_client(const cidr_t *trusted, size_t ntrusted, const netaddr_t *peer, const char *const *vals,
                    const size_t *lens, size_t nvals, netaddr_t *out)
{
    *out = *peer;
    if (ntrusted == 0 || !cidr_list_match(trusted, ntrusted, peer))
        return;
    for (size_t v = nvals; v-- > 0;) {
        const char *s = vals[v];
        size_t end = lens[v];
        for (;;) {
            size_t start = end;
            while (start > 0 && s[start - 1] != ',')
                start--;
            netaddr_t a;
            if (entry_parse(s + start, end - start, &a) != 0)
                return; /* not an address: the last trusted hop is the client */
            *out = a;
            if (!cidr_list_match(trusted, ntrusted, &a))
                return;
            if (start == 0)
                break;
            end = start - 1;
        }
    }
}
