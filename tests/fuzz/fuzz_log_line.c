/* fuzz_log_line.c — the log line builders (broker/log.c) on any bytes: the request line
 * (log_request_fields, with the client's method and every other string taken from the
 * input) and an event line (log_format_event). Each must come out as exactly one line
 * holding one JSON object whose strings are the ones given (printable ASCII round-trips;
 * anything else is escaped), with no key added. Input: a status/duration seed byte,
 * then NUL-separated method, route, org id, request id, event message and value (the
 * last two also as a handler's own fields when the seed byte is odd). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log.h"

static const char *field(const uint8_t **p, const uint8_t *end, size_t *len)
{
    const uint8_t *s = *p, *z = memchr(s, 0, (size_t)(end - s));
    *len = (size_t)((z != NULL ? z : end) - s);
    *p = z != NULL ? z + 1 : end;
    return (const char *)s;
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* One line, one JSON object; returns it (the caller decrefs). */
static json_t *one_object(const buf_t *b)
{
    if (b->len == 0 || b->p[b->len - 1] != '\n' || memchr(b->p, '\n', b->len - 1) != NULL)
        abort();
    json_error_t err;
    json_t *j = json_loadb(b->p, b->len, JSON_REJECT_DUPLICATES, &err);
    if (j == NULL || !json_is_object(j))
        abort();
    return j;
}

static void expect(json_t *j, const char *key, const char *want, size_t n, size_t max)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_string(v))
        abort();
    if (printable(want, n < max ? n : max) &&
        (strlen(json_string_value(v)) != (n < max ? n : max) || memcmp(json_string_value(v), want, n < max ? n : max) != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1, *end = data + size;
    size_t ml, rl, ol, il, el, vl;
    const char *m = field(&p, end, &ml), *r = field(&p, end, &rl), *o = field(&p, end, &ol);
    const char *id = field(&p, end, &il), *e = field(&p, end, &el), *v = field(&p, end, &vl);
    char *route = strndup(r, rl), *org = strndup(o, ol), *rid = strndup(id, il);
    char *msg = strndup(e, el), *val = strndup(v, vl);
    char fields[LOG_REQUEST_FIELDS_MAX];
    int extra = data[0] & 1; /* a handler's own fields too (the proxy's path and Request-Id) */
    log_request_t req = {rid, m, ml, route, data[0] * 3 - 100, (uint64_t)data[0] << (data[0] % 40), org,
                         {extra ? "stripe_path" : NULL, val, "stripe_request_id", msg}};

    size_t n = log_request_fields(fields, &req);
    if (n >= LOG_REQUEST_FIELDS_MAX || strlen(fields) != n)
        abort();
    buf_t b = {0};
    log_format_raw(&b, data[0] % 4, fields);
    json_t *j = one_object(&b);
    if (json_object_size(j) != (size_t)(org[0] ? 8 : 7) + (extra ? 2 : 0) || !json_is_integer(json_object_get(j, "status")))
        abort();
    if (extra) {
        expect(j, "stripe_path", val, strlen(val), LOG_EXTRA_VALUE_MAX);
        expect(j, "stripe_request_id", msg, strlen(msg), LOG_EXTRA_VALUE_MAX);
    }
    expect(j, "method", m, ml, 16);
    expect(j, "route", route, strlen(route), 64);
    expect(j, "request_id", rid, strlen(rid), 16);
    if (org[0])
        expect(j, "org_id", org, strlen(org), 18);
    json_decref(j);

    b.len = 0;
    log_format_event(&b, data[0] % 4, msg, "org_id", org, "error", val, NULL);
    j = one_object(&b);
    if (json_object_size(j) != 5 || !json_is_string(json_object_get(j, "msg")))
        abort();
    json_decref(j);
    buf_free(&b);
    free(route), free(org), free(rid), free(msg), free(val);
    return 0;
}
