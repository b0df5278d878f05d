/* orgid.h — Salesforce organization ids (proto/openapi.yaml, org_id).
 * 15-character ids are case-sensitive; 18-character ids carry a case-safe checksum
 * suffix and are matched case-insensitively, their canonical case restored from the
 * suffix. Everything inside the broker uses the canonical 18-character form. */
#ifndef BROKER_CORE_ORGID_H
#define BROKER_CORE_ORGID_H
#include <stddef.h>

#define ORGID_LEN 18

/* Validate in[0..len) and write the canonical 18-character id plus NUL to out.
 * Returns 0, or -1 when the id is malformed (length, charset, prefix 00D, checksum). */
int orgid_normalize(const char *in, size_t len, char out[ORGID_LEN + 1]);
#endif
