/* form.h — query strings and application/x-www-form-urlencoded bodies.
 * The decoder rejects malformed escapes and embedded NUL bytes; a parameter that
 * appears twice is ambiguous and is reported as malformed, never silently picked. */
#ifndef BROKER_CORE_FORM_H
#define BROKER_CORE_FORM_H
#include <stddef.h>
#include <sys/types.h>
#include "buf.h"

/* Percent-decode src[0..len) into dst (capacity at least len + 1), NUL-terminated;
 * dst NULL only checks. '+' becomes a space when plus_is_space. Returns the decoded
 * length, or -1 on a bad escape or a decoded NUL byte. */
ssize_t form_unescape(const char *src, size_t len, char *dst, int plus_is_space);

/* Look up the parameter `name` in qs[0..len) ("a=1&b=2", no leading '?').
 * Returns 1 and a malloc'd NUL-terminated decoded value in *out, 0 when absent,
 * -1 when the string is malformed or the name appears more than once. */
int form_get(const char *qs, size_t len, const char *name, char **out);
/* The same into dst (cap bytes, NUL-terminated, "" unless found), for short values
 * without an allocation: 1, 0 and -1 as form_get, 2 when the value is found but its
 * escaped form does not fit in cap - 1 bytes. */
int form_get_buf(const char *qs, size_t len, const char *name, char *dst, size_t cap);

/* Append name=value with value percent-encoded (RFC 3986 unreserved kept). */
void form_append(buf_t *b, const char *name, const char *value);
#endif
