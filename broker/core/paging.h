/* paging.h — the paging parameters of the two list routes (proto/openapi.yaml:
 * listAuditEvents, GET /v1/orgs/{org_id}/audit-events, and listOrgs, GET /v1/admin/orgs):
 * limit, cursor, since and status, read from the raw query string.
 *
 * A pure function of the query string (no I/O, no allocation), so that every value a
 * caller can send is unit-tested and fuzzed; the routes only turn its result into a
 * Redis command. Rules, the same for both lists unless said:
 *   - limit: decimal digits only, 1 to PAGING_LIMIT_MAX; PAGING_LIMIT_DEFAULT when absent.
 *   - cursor: the previous page's "next". Audit: a Redis stream id "<ms>-<seq>" (each part
 *     1 to 20 digits, at most 2^64 - 1). Fleet: an 18-character org id ([0-9A-Za-z]).
 *   - since (audit only): an RFC 3339 time — "YYYY-MM-DDTHH:MM:SS", optional fraction,
 *     then "Z" or an offset "+HH:MM" / "-HH:MM" ("T"/"Z" in either case; a "+" sent
 *     unencoded arrives as a space and is read as "+"). Kept to the millisecond,
 *     rounded up, so that "at or after" holds; a time before 1970 keeps everything.
 *   - status (fleet only): connected or reauthorization_required.
 *   - a parameter given twice, a malformed escape, an empty value: out of range.
 * Other parameters are ignored. Every failure is the API's 400 invalid_request, with
 * the message of paging_message, which never echoes the value.
 * Tested by tests/unit/test_paging.c, tests/fuzz/fuzz_paging.c, tests/it/test_audit.py
 * and tests/it/test_fleet.py. */
#ifndef BROKER_CORE_PAGING_H
#define BROKER_CORE_PAGING_H
#include <stddef.h>

#define PAGING_LIMIT_MAX 500
#define PAGING_LIMIT_DEFAULT 100
#define PAGING_CURSOR_MAX 41 /* "<20 digits>-<20 digits>" */

typedef enum paging_list {
    PAGING_AUDIT, /* audit-events: limit, cursor (stream id), since */
    PAGING_FLEET  /* admin/orgs: limit, cursor (org id), status */
} paging_list_t;

typedef enum paging_err {
    PAGING_OK = 0,
    PAGING_BAD_QUERY, /* the query string itself is malformed */
    PAGING_BAD_LIMIT,
    PAGING_BAD_CURSOR,
    PAGING_BAD_SINCE,
    PAGING_BAD_STATUS
} paging_err_t;

#define PAGING_STATUS_ANY (-1)
#define PAGING_STATUS_CONNECTED 0
#define PAGING_STATUS_REAUTH 1

typedef struct paging {
    int limit;                          /* 1..PAGING_LIMIT_MAX */
    char cursor[PAGING_CURSOR_MAX + 1]; /* "" for the first page */
    long long since_ms;                 /* audit: Unix ms (>= 0), -1 when absent */
    int status;                         /* fleet: PAGING_STATUS_* */
} paging_t;

/* Read qs[0..len) (no leading '?'; NULL with len 0 for none) for list into *out.
 * PAGING_OK, or the first parameter out of range (*out then undefined). */
paging_err_t paging_parse(const char *qs, size_t len, paging_list_t list, paging_t *out);
/* The one-sentence 400 message for e (never a value). */
const char *paging_message(paging_err_t e);
/* A stream id "<ms>-<seq>" as above. Returns 0 or -1. */
int paging_stream_id(const char *s, unsigned long long *ms, unsigned long long *seq);
/* The stream id just before the valid stream id s, into out (cap >= PAGING_CURSOR_MAX
 * + 1): the inclusive end of the page after cursor s, which every Redis since 5 reads.
 * Returns 0, or -1 when nothing comes before s ("0-0"). */
int paging_before(const char *s, char *out, size_t cap);
#endif
