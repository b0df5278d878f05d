/* cookie.h — reading one cookie out of a Cookie request header. */
#ifndef BROKER_CORE_COOKIE_H
#define BROKER_CORE_COOKIE_H
#include <stddef.h>

/* Find `name` in the Cookie header hdr[0..len) ("a=1; b=2"). Returns 1 and points
 * val and vlen into hdr, 0 when absent, -1 when the name appears more than once. */
int cookie_get(const char *hdr, size_t len, const char *name, const char **val, size_t *vlen);
#endif
