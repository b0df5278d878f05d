/* paging.c — the list routes' paging parameters (see paging.h). Pure: reads the query
 * string through core/form.c and writes only into the caller's struct. */
#include "core/paging.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "core/form.h"
#include "core/timefmt.h"

/* ===== Values ===== */

/* Exactly n decimal digits at s, as a number, or -1. */
static long digits(const char *s, int n)
{
    long v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* 1 to 20 digits at s (up to end) as an unsigned 64-bit number; the length, or 0. */
static size_t u64_at(const char *s, unsigned long long *v)
{
    size_t n = strspn(s, "0123456789");
    unsigned long long x = 0;
    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return 0;
        x = x * 10 + d;
    }
    *v = x;
    return n;
}

int paging_stream_id(const char *s, unsigned long long *ms, unsigned long long *seq)
{
    size_t a = u64_at(s, ms);
    if (a == 0 || s[a] != '-')
        return -1;
    size_t b = u64_at(s + a + 1, seq);
    return b > 0 && s[a + 1 + b] == '\0' ? 0 : -1;
}

int paging_before(const char *s, char *out, size_t cap)
{
    unsigned long long ms, seq;
    if (paging_stream_id(s, &ms, &seq) != 0 || (ms == 0 && seq == 0))
        return -1;
    if (seq > 0)
        snprintf(out, cap, "%llu-%llu", ms, seq - 1);
    else
        snprintf(out, cap, "%llu-%llu", ms - 1, (unsigned long long)UINT64_MAX);
    return 0;
}

static int org_cursor(const char *s)
{
    static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    return strlen(s) == 18 && strspn(s, alnum) == 18 ? 0 : -1;
}

/* ===== The query string ===== */

paging_err_t paging_parse(const char *qs, size_t len, paging_list_t list, paging_t *out)
{
    char v[64];
    int rc;

    out->limit = PAGING_LIMIT_DEFAULT;
    out->cursor[0] = '\0';
    out->since_ms = -1;
    out->status = PAGING_STATUS_ANY;
    if (qs == NULL)
        len = 0;

    rc = form_get_buf(qs, len, "limit", v, sizeof(v));
    if (rc == -1)
        return PAGING_BAD_QUERY;
    if (rc != 0) {
        size_t n = strspn(v, "0123456789");
        long l = rc == 1 && n > 0 && n <= 7 && v[n] == '\0' ? digits(v, (int)n) : -1;
        if (l < 1 || l > PAGING_LIMIT_MAX)
            return PAGING_BAD_LIMIT;
        out->limit = (int)l;
    }

    rc = form_get_buf(qs, len, "cursor", v, sizeof(v));
    if (rc == -1)
        return PAGING_BAD_QUERY;
    if (rc != 0) {
        unsigned long long a, b;
        int ok = rc == 1 && (list == PAGING_AUDIT ? paging_stream_id(v, &a, &b) : org_cursor(v)) == 0;
        if (!ok || strlen(v) > PAGING_CURSOR_MAX)
            return PAGING_BAD_CURSOR;
        memcpy(out->cursor, v, strlen(v) + 1);
    }

    if (list == PAGING_AUDIT) {
        rc = form_get_buf(qs, len, "since", v, sizeof(v));
        if (rc == -1)
            return PAGING_BAD_QUERY;
        if (rc != 0) {
            long long ms;
            if (rc != 1 || time_parse_rfc3339_ms(v, &ms) != 0)
                return PAGING_BAD_SINCE;
            out->since_ms = ms < 0 ? 0 : ms;
        }
    } else {
        rc = form_get_buf(qs, len, "status", v, sizeof(v));
        if (rc == -1)
            return PAGING_BAD_QUERY;
        if (rc == 1 && strcmp(v, "connected") == 0)
            out->status = PAGING_STATUS_CONNECTED;
        else if (rc == 1 && strcmp(v, "reauthorization_required") == 0)
            out->status = PAGING_STATUS_REAUTH;
        else if (rc != 0)
            return PAGING_BAD_STATUS;
    }
    return PAGING_OK;
}

const char *paging_message(paging_err_t e)
{
    switch (e) {
    case PAGING_OK:
        return "";
    case PAGING_BAD_QUERY:
        return "The query string is malformed.";
    case PAGING_BAD_LIMIT:
        return "The limit parameter must be a whole number from 1 to 500.";
    case PAGING_BAD_CURSOR:
        return "The cursor parameter must be the next value of a previous page.";
    case PAGING_BAD_SINCE:
        return "The since parameter must be an RFC 3339 time (2026-11-26T22:34:47Z).";
    case PAGING_BAD_STATUS:
        return "The status parameter must be connected or reauthorization_required.";
    }
    return "The query string is malformed.";
}
