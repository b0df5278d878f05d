/* cookie.c — finding one cookie in a Cookie request header.
 *
 * Owns: the split of "a=1; b=2" into pairs (separator ';', optional spaces or tabs
 * around each pair). Names are compared exactly (cookie names are case-sensitive);
 * a pair without '=' is ignored, as browsers do. A name present twice (a cookie
 * planted for another path or by a sibling domain) is reported, never resolved by
 * picking one. The value is returned as sent, without its surrounding whitespace.
 * Never: copies or logs values (they are session and state secrets).
 * Tested by: tests/unit/test_cookie.c and tests/fuzz/fuzz_cookie.c. */
#include "cookie.h"

#include <string.h>

static int is_ows(char c) { return c == ' ' || c == '\t'; }

int cookie_get(const char *hdr, size_t len, const char *name, const char **val, size_t *vlen)
{
    const char *p, *end;
    size_t nlen = strlen(name);
    int found = 0;

    if (hdr == NULL)
        return 0;
    p = hdr;
    end = hdr + len;
    for (;;) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi != NULL ? semi : end;
        const char *eq, *ks, *ke, *vs, *ve;

        for (ks = p; ks < pe && is_ows(*ks); ks++)
            ;
        for (ve = pe; ve > ks && is_ows(ve[-1]); ve--)
            ;
        eq = memchr(ks, '=', (size_t)(ve - ks));
        if (eq != NULL) {
            for (ke = eq; ke > ks && is_ows(ke[-1]); ke--)
                ;
            for (vs = eq + 1; vs < ve && is_ows(*vs); vs++)
                ;
            if ((size_t)(ke - ks) == nlen && memcmp(ks, name, nlen) == 0) {
                if (found)
                    return -1;
                found = 1;
                *val = vs;
                *vlen = (size_t)(ve - vs);
            }
        }
        if (semi == NULL)
            break;
        p = semi + 1;
    }
    return found;
}
