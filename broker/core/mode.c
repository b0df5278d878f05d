/* mode.c — mode names and parsing (see mode.h).
 * Owns: the spelling of "test" and "live". Never: allocates. Tested by
 * tests/unit/test_mode.c and, through every route that takes a mode, tests/it. */
#include "core/mode.h"
#include <string.h>

static const char *const names[MODE_COUNT] = {"test", "live"};

int mode_parse(const char *s, size_t len)
{
    for (int m = 0; s != NULL && m < MODE_COUNT; m++)
        if (len == strlen(names[m]) && memcmp(s, names[m], len) == 0)
            return m;
    return -1;
}

const char *mode_name(int mode)
{
    return mode >= 0 && mode < MODE_COUNT ? names[mode] : "unknown";
}
