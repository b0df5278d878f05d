/* fuzz_timefmt.c — time_parse_rfc3339 and time_parse_rfc3339_ms on any bytes. Checks
 * that what the strict parser accepts the lenient one reads as the same second, that
 * an accepted time written back with time_rfc3339 parses to its own second, and that
 * nothing reads past the end of the input (it is copied to an exact-size string). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/timefmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s, out[21];
    time_t t, again;
    long long ms;
    int strict, lenient;

    if (size > 64)
        return 0;
    s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    strict = time_parse_rfc3339(s, &t);
    lenient = time_parse_rfc3339_ms(s, &ms);
    if (strict == 0 && (lenient != 0 || ms != (long long)t * 1000))
        abort();
    if (lenient == 0) {
        /* floor division: the second that holds ms */
        t = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
        time_rfc3339(t, out);
        if (t >= -62167219200LL && t <= 253402300799LL &&
            (time_parse_rfc3339(out, &again) != 0 || again != t))
            abort();
    }
    free(s);
    return 0;
}
