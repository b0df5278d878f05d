/* timefmt.h — RFC 3339 UTC timestamps ("2026-11-26T22:34:47Z") and clocks. */
#ifndef BROKER_CORE_TIMEFMT_H
#define BROKER_CORE_TIMEFMT_H
#include <stdint.h>
#include <time.h>

void time_rfc3339(time_t t, char out[21]);
/* Parse exactly "YYYY-MM-DDTHH:MM:SSZ". Returns 0 or -1. */
int time_parse_rfc3339(const char *s, time_t *out);
/* Parse an RFC 3339 date-time as callers write it: "2026-11-26T22:34:47Z",
 * "2026-11-26T22:34:47.123456+00:00", "…t…z", any numeric offset (its '+' also as a space,
 * as a query string's unencoded '+' arrives); into milliseconds since the epoch (UTC), a
 * fraction below the millisecond rounded up. Returns 0 or -1. */
int time_parse_rfc3339_ms(const char *s, long long *ms_out);
/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t time_mono_ms(void);
#endif
