/* timefmt.c — RFC 3339 UTC timestamps and the monotonic clock.
 *
 * Owns: the one timestamp format of the API ("2026-11-26T22:34:47Z", always UTC,
 * always 20 characters). Times outside years 0000–9999 are clamped so the output is
 * never longer than its buffer. time_parse_rfc3339 accepts exactly that format with real
 * calendar dates (no leap seconds, no offsets, no fractions); time_parse_rfc3339_ms takes
 * what callers send as an RFC 3339 time (fractions, numeric offsets, "t"/"z"), to the
 * millisecond, for query parameters such as the audit trail's `since`.
 * Never: depends on the process time zone (gmtime_r/timegm only).
 * Tested by: tests/unit/test_timefmt.c, tests/fuzz/fuzz_timefmt.c. */
#include "timefmt.h"

#include <string.h>

#define RFC3339_LEN 20
#define MAX_TIME_S 253402300799LL /* 9999-12-31T23:59:59Z */
#define MIN_TIME_S (-62167219200LL) /* 0000-01-01T00:00:00Z */

/* Write v as exactly n decimal digits (zero-padded, higher digits dropped). */
static void put_digits(char *out, int n, unsigned v)
{
    while (n-- > 0) {
        out[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

void time_rfc3339(time_t t, char out[21])
{
    struct tm tm;
    long long v = (long long)t;

    if (v > MAX_TIME_S)
        v = MAX_TIME_S;
    if (v < MIN_TIME_S)
        v = MIN_TIME_S;
    t = (time_t)v;
    if (gmtime_r(&t, &tm) == NULL) {
        memcpy(out, "1970-01-01T00:00:00Z", RFC3339_LEN + 1);
        return;
    }
    put_digits(out, 4, (unsigned)(tm.tm_year + 1900));
    out[4] = '-';
    put_digits(out + 5, 2, (unsigned)(tm.tm_mon + 1));
    out[7] = '-';
    put_digits(out + 8, 2, (unsigned)tm.tm_mday);
    out[10] = 'T';
    put_digits(out + 11, 2, (unsigned)tm.tm_hour);
    out[13] = ':';
    put_digits(out + 14, 2, (unsigned)tm.tm_min);
    out[16] = ':';
    put_digits(out + 17, 2, (unsigned)tm.tm_sec);
    out[19] = 'Z';
    out[20] = '\0';
}

/* Parse n decimal digits at s; -1 when any is not a digit. */
static int digits(const char *s, int n)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return month == 2 && leap ? 29 : days[month - 1];
}

/* Parse "YYYY-MM-DDTHH:MM:SS" (T in either case) at s, a real calendar date, as UTC. */
static int parse_date_time(const char *s, time_t *out)
{
    struct tm tm;
    int year, mon, day, hour, min, sec;

    if (strnlen(s, 19) != 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return -1;
    year = digits(s, 4);
    mon = digits(s + 5, 2);
    day = digits(s + 8, 2);
    hour = digits(s + 11, 2);
    min = digits(s + 14, 2);
    sec = digits(s + 17, 2);
    if (year < 0 || mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) ||
        hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    *out = timegm(&tm);
    return 0;
}

int time_parse_rfc3339(const char *s, time_t *out)
{
    if (s == NULL || strlen(s) != RFC3339_LEN || s[10] != 'T' || s[19] != 'Z')
        return -1;
    return parse_date_time(s, out);
}

int time_parse_rfc3339_ms(const char *s, long long *ms_out)
{
    time_t t;
    long long ms = 0, offset_s = 0;
    int scale = 100, round_up = 0, oh, om;
    const char *p;

    char head[20];
    long long leap = 0;

    if (s == NULL || strnlen(s, 19) != 19)
        return -1;
    memcpy(head, s, 19);
    head[19] = '\0';
    if (head[17] == '6' && head[18] == '0') { /* a leap second: the instant after :59 */
        head[17] = '5';
        head[18] = '9';
        leap = 1000;
    }
    if (parse_date_time(head, &t) != 0)
        return -1;
    p = s + 19;
    if (*p == '.') {
        if (p[1] < '0' || p[1] > '9')
            return -1;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (scale > 0)
                ms += (*p - '0') * scale;
            else if (*p != '0')
                round_up = 1; /* below a millisecond: up, so "at or after" still holds */
            scale /= 10;
        }
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        offset_s = 0;
    } else if ((*p == '+' || *p == ' ' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        /* ' ': a '+' sent unencoded in a query string arrives form-decoded as a space */
        oh = digits(p + 1, 2);
        om = digits(p + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        offset_s = (long long)oh * 3600 + om * 60;
        if (*p == '-')
            offset_s = -offset_s;
    } else {
        return -1;
    }
    *ms_out = ((long long)t - offset_s) * 1000 + leap + ms + round_up;
    return 0;
}

uint64_t time_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
