/* netaddr.h — client addresses: IPv4/IPv6 addresses and CIDR ranges, and who the
 * client is behind trusted proxies (BROKER_TRUSTED_PROXIES).
 * An address is kept as 16 bytes (IPv4 as ::ffff:a.b.c.d), so one range list holds both
 * families. Tested by tests/unit/test_netaddr.c, tests/fuzz/fuzz_netaddr.c and
 * tests/fault/test_abuse_limits_fair.py (the forwarded address end to end). */
#ifndef BROKER_CORE_NETADDR_H
#define BROKER_CORE_NETADDR_H
#include <stddef.h>
#include <sys/socket.h>

typedef struct netaddr {
    unsigned char a[16];
} netaddr_t;

typedef struct cidr {
    netaddr_t net; /* host bits cleared */
    int bits;      /* prefix length over the 16 bytes (IPv4 /n is 96 + n) */
} cidr_t;

/* A bare address (no port, no brackets, no zone): 0, or -1 when it is none. */
int netaddr_parse(const char *s, size_t n, netaddr_t *out);
/* The address of an AF_INET/AF_INET6 socket address: 0, or -1 (other families). */
int netaddr_from_sockaddr(const struct sockaddr *sa, netaddr_t *out);
/* "a.b.c.d[/0-32]" or "x:y::z[/0-128]" (no prefix: one address): 0 or -1. */
int cidr_parse(const char *s, size_t n, cidr_t *out);
/* 1 when a lies in one of the n ranges. */
int cidr_list_match(const cidr_t *list, size_t n, const netaddr_t *a);
/* What one client holds, the unit the per-address limits count: an IPv4 address as it
 * is, an IPv6 address as its /64 (one host gets a whole /64: SLAAC, privacy addresses),
 * the other 64 bits cleared. out may be a. */
void netaddr_client_unit(const netaddr_t *a, netaddr_t *out);
/* The client behind the TCP peer: the peer itself unless it is in trusted; then the
 * X-Forwarded-For values (nvals header values, in request order, each a comma list) are
 * read from the right: the first address that is not trusted is the client. When an
 * entry is not an address, the hop that added it (the last trusted one) is the client;
 * when every entry is trusted, the left-most one is. */
void netaddr_client(const cidr_t *trusted, size_t ntrusted, const netaddr_t *peer, const char *const *vals,
                    const size_t *lens, size_t nvals, netaddr_t *out);
#endif
