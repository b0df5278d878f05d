/* proxy_rules.c — the pure rules of the Stripe proxy (see proxy_rules.h).
 *
 * Owns: the path, query and header allow-lists of README "The path a capture takes". A path is accepted
 * only in a form that no server can read differently (plain characters, no encoding,
 * no dot segments, no empty segment), so what the resource allow-list judged is what
 * Stripe serves. Headers are matched by exact name; everything not listed is dropped.
 * Never: allocates, logs, or looks at a header value beyond checking its bytes.
 * Tested by: tests/unit/test_proxy_rules.c and tests/fuzz/fuzz_proxy_rules.c. */
#include "proxy_rules.h"

#include <string.h>
#include <strings.h>

const char *const PROXY_FWD_HEADERS[PROXY_FWD_COUNT] = {"Content-Type", "Accept", "Idempotency-Key",
                                                       "Stripe-Version"};
const char *const PROXY_RES_HEADERS[PROXY_RES_COUNT] = {"content-type",    "request-id",          "idempotency-key",
                                                       "stripe-version", "stripe-should-retry", "retry-after"};

static int seg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

int proxy_path_check(const char *path, size_t len, const char **res, size_t *res_len)
{
    size_t i = 4;
    int nseg = 0;

    if (len < 5 || len > PROXY_PATH_MAX_BYTES || path[0] != '/' || path[1] != 'v' || path[2] != '1' || path[3] != '/')
        return -1;
    while (i <= len) {
        size_t start = i;
        while (i < len && path[i] != '/') {
            if (!seg_char(path[i]))
                return -1;
            i++;
        }
        size_t n = i - start;
        if (n == 0 || (n == 1 && path[start] == '.') || (n == 2 && path[start] == '.' && path[start + 1] == '.'))
            return -1;
        if (nseg++ == 0) {
            *res = path + start;
            *res_len = n;
        }
        i++; /* past the '/' (or past the end) */
    }
    return 0;
}

int proxy_query_check(const char *q, size_t len)
{
    if (len > PROXY_QUERY_MAX_BYTES)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (q[i] <= ' ' || q[i] >= 0x7f || q[i] == '#')
            return -1;
    return 0;
}

int proxy_fwd_header(const char *name, size_t len)
{
    for (int i = 0; i < PROXY_FWD_COUNT; i++) {
        const char *h = PROXY_FWD_HEADERS[i];
        size_t n = 0;
        while (h[n] != '\0')
            n++;
        if (n == len && strncasecmp(h, name, len) == 0)
            return i;
    }
    return -1;
}

static int value_ok(const char *v, size_t len)
{
    if (len == 0 || len > PROXY_HEADER_MAX_BYTES)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((v[i] < ' ' && v[i] != '\t') || v[i] >= 0x7f)
            return 0;
    return 1;
}

int proxy_header_value_check(const char *v, size_t len)
{
    return value_ok(v, len) ? 0 : -1;
}

int proxy_res_header(const char *name, size_t nlen, const char *value, size_t vlen)
{
    for (int i = 0; i < PROXY_RES_COUNT; i++)
        if (strlen(PROXY_RES_HEADERS[i]) == nlen && strncasecmp(PROXY_RES_HEADERS[i], name, nlen) == 0)
            return value_ok(value, vlen) ? i : -1;
    return -1;
}

int proxy_request_id_ok(const char *s, size_t len)
{
    if (len == 0 || len > PROXY_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}
