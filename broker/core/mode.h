/* mode.h — the two Stripe modes (proto/openapi.yaml, "mode"): "test" and "live", nothing
 * else. The one place a mode's name is spelled and parsed; everything else holds a mode as
 * MODE_TEST / MODE_LIVE (an index into per-mode tables of MODE_COUNT) and names it with
 * mode_name. Pure; tested by tests/unit/test_mode.c. */
#ifndef BROKER_CORE_MODE_H
#define BROKER_CORE_MODE_H
#include <stddef.h>

#define MODE_TEST 0
#define MODE_LIVE 1
#define MODE_COUNT 2

/* "test"/"live" (exactly len bytes) → MODE_TEST/MODE_LIVE; -1 otherwise (NULL too). */
int mode_parse(const char *s, size_t len);
/* MODE_TEST/MODE_LIVE → "test"/"live"; "unknown" for anything else. */
const char *mode_name(int mode);
#endif
