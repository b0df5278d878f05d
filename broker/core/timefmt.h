/* timefmt.h — RFC 3339 UTC timestamps ("2026-11-26T22:34:47Z") and clocks. */
#ifndef BROKER_CORE_TIMEFMT_H
#define BROKER_CORE_TIMEFMT_H
#include <stdint.h>
#include <time.h>

void time_rfc3339(time_t t, char out[21]);
/* Parse exactly "YYYY-MM-DDTHH:MM:SSZ". Returns 0 or -1. */
int time_parse_rfc3339(const char *s, time_t *out);
/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t time_mono_ms(void);
#endif
