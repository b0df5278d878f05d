/* fuzz_orgid.c — orgid_normalize on any bytes. Checks that a normalised id
 * normalises to itself, that its 15-character head gives the same id, and that the
 * 18-character form is case-insensitive. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/orgid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[ORGID_LEN + 1], again[ORGID_LEN + 1], lower[ORGID_LEN];
    size_t i;

    if (orgid_normalize((const char *)data, size, out) != 0)
        return 0;
    if (strlen(out) != ORGID_LEN || memcmp(out, "00D", 3) != 0)
        abort();
    if (orgid_normalize(out, ORGID_LEN, again) != 0 || strcmp(out, again) != 0)
        abort();
    if (orgid_normalize(out, 15, again) != 0 || strcmp(out, again) != 0)
        abort();
    for (i = 0; i < ORGID_LEN; i++)
        lower[i] = (char)tolower((unsigned char)out[i]);
    if (orgid_normalize(lower, ORGID_LEN, again) != 0 || strcmp(out, again) != 0)
        abort();
    return 0;
}
