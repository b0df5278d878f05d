/* fuzz_proxy_rules.c — the Stripe proxy's parsers of outside bytes on any input: the path
 * check (an accepted path has no empty, "." or ".." segment, no '%', and its resource is
 * its first segment), the query and header-value checks, and the response-header check
 * (the input split at its first ':' into a name and a value: a kept value has no CR/LF). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/proxy_rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *res = NULL, *v = NULL;
    size_t n = 0, vlen = 0;

    if (proxy_path_check(s, size, &res, &n) == 0) {
        if (size < 5 || memcmp(s, "/v1/", 4) != 0 || res != s + 4 || n == 0 || memchr(s, '%', size) != NULL)
            abort();
        for (size_t i = 3; i < size; i++)
            if (s[i] == '/' && (i + 1 == size || s[i + 1] == '/' ||
                                (s[i + 1] == '.' && (i + 2 == size || s[i + 2] == '/' ||
                                                     (s[i + 2] == '.' && (i + 3 == size || s[i + 3] == '/'))))))
                abort();
        if (memchr(res, '/', n) != NULL)
            abort();
    }
    if (proxy_query_check(s, size) == 0 && (memchr(s, '#', size) != NULL || memchr(s, ' ', size) != NULL))
        abort();
    (void)proxy_header_value_check(s, size);
    (void)proxy_fwd_header(s, size);
    (void)proxy_request_id_ok(s, size);
    const char *colon = memchr(s, ':', size);
    size_t nlen = colon != NULL ? (size_t)(colon - s) : size;
    v = colon != NULL ? colon + 1 : s + size;
    vlen = size - nlen - (colon != NULL);
    int k = proxy_res_header(s, nlen, v, vlen);
    if (k >= PROXY_RES_COUNT)
        abort();
    if (k >= 0 && (vlen == 0 || memchr(v, '\r', vlen) != NULL || memchr(v, '\n', vlen) != NULL))
        abort();
    return 0;
}
