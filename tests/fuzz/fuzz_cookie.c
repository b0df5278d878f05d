/* fuzz_cookie.c — cookie_get on any Cookie header. Checks that a found value lies
 * inside the header. */
#include <stdint.h>
#include <stdlib.h>

#include "core/cookie.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"stb_setup", "stb_state", "a", ""};
    const char *hdr = (const char *)data;
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *val = NULL;
        size_t vlen = 0;
        int rc = cookie_get(hdr, size, names[i], &val, &vlen);
        if (rc < -1 || rc > 1)
            abort();
        if (rc == 1 && (val < hdr || val + vlen > hdr + size))
            abort();
    }
    return 0;
}
