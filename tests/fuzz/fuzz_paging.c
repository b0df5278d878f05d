/* fuzz_paging.c — paging_parse (core/paging.h) on any query string, for both lists (the
 * first byte chooses). Checks what the routes rely on: a parse that succeeds gives a
 * limit in 1..500, a cursor that is a valid stream id (audit) or 18 alphanumerics
 * (fleet) whose paging_before is a smaller valid id, a since of 0 or more, a status of
 * the three values; time_parse_rfc3339_ms agrees with time_parse_rfc3339 on the plain "Z" form,
 * and the time it reads comes back unchanged through time_rfc3339 + a fraction. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/paging.h"
#include "core/timefmt.h"

static void check_since(const char *s)
{
    long long ms;
    time_t t;
    int rc = time_parse_rfc3339_ms(s, &ms);
    if (time_parse_rfc3339(s, &t) == 0 && (rc != 0 || ms != (long long)t * 1000))
        abort();
    if (rc != 0 || ms < 0 || ms >= 253402300800000LL) /* a round trip within 1970..9999 */
        return;
    char back[40], ts[21];
    long long again;
    time_rfc3339((time_t)(ms / 1000), ts);
    snprintf(back, sizeof(back), "%.19s.%03lldZ", ts, ms % 1000);
    if (time_parse_rfc3339_ms(back, &again) != 0 || again != ms)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    paging_list_t list = size > 0 && (data[0] & 1) ? PAGING_FLEET : PAGING_AUDIT;
    const char *qs = size > 0 ? (const char *)data + 1 : NULL;
    size_t len = size > 0 ? size - 1 : 0;
    paging_t p;
    char *s = malloc(len + 1);

    memcpy(s, qs ? qs : "", len);
    s[len] = '\0';
    check_since(s); /* the whole input as a since value too */
    free(s);

    memset(&p, 0x5a, sizeof(p));
    if (paging_parse(qs, len, list, &p) != PAGING_OK)
        return 0;
    if (p.limit < 1 || p.limit > PAGING_LIMIT_MAX || strlen(p.cursor) > PAGING_CURSOR_MAX)
        abort();
    if (list == PAGING_AUDIT) {
        unsigned long long ms, seq, bms, bseq;
        char before[PAGING_CURSOR_MAX + 1];
        if (p.since_ms < -1 || p.status != PAGING_STATUS_ANY)
            abort();
        if (p.cursor[0] != '\0') {
            if (paging_stream_id(p.cursor, &ms, &seq) != 0)
                abort();
            if (paging_before(p.cursor, before, sizeof(before)) == 0) {
                if (paging_stream_id(before, &bms, &bseq) != 0 || bms > ms || (bms == ms && bseq >= seq))
                    abort();
            } else if (ms != 0 || seq != 0) {
                abort();
            }
        }
    } else {
        if (p.since_ms != -1 || p.status < PAGING_STATUS_ANY || p.status > PAGING_STATUS_REAUTH)
            abort();
        if (p.cursor[0] != '\0' && strlen(p.cursor) != 18)
            abort();
    }
    return 0;
}
