/* audit.c — the audit trail's read (proto/openapi.yaml, GET /v1/orgs/{org}/audit-events) and
 * the writers' helper that names the actor of a change. Events are written by the
 * writers' own scripts (store/audit.h); this file only reads them, newest first, with
 * the previous page's last id as cursor (XREVRANGE with an exclusive end), so paging
 * stays correct while events are added. Tested by tests/it/test_audit.py. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/timefmt.h"
#include "routes/params.h"
#include "routes/routes.h"
#include "store/audit.h"

void breq_audit_tail(breq_t *b, audit_tail_t *t, const char *type, int mode, const char *details_json,
                     const char *out_type, const char *out_data_json)
{
    audit_actor_t a = {"broker", NULL};
    if (b->is_admin)
        a.kind = "admin";
    else if (b->bearer.kind == BEARER_KEY)
        a = (audit_actor_t){"api_key", b->bearer.key_id};
    audit_tail_make(t, b->w->cfg, b->org, type, mode, &a, b->request_id, details_json, out_type, out_data_json);
}

/* Query parameter name as a whole number in [min, max]; def when absent. -1 answered. */
int breq_query_int(breq_t *b, const char *name, int min, int max, int def)
{
    char v[16];
    int rc = breq_query_buf(b, name, v, sizeof(v));
    if (rc == 0)
        return def;
    size_t n = rc == 1 ? strspn(v, "0123456789") : 0;
    if (rc == 1 && n > 0 && n < 8 && v[n] == '\0' && atoi(v) >= min && atoi(v) <= max)
        return atoi(v);
    char msg[96];
    snprintf(msg, sizeof(msg), "The %s parameter must be a whole number from %d to %d.", name, min, max);
    breq_error(b, ERR_INVALID_REQUEST, msg);
    return -1;
}

static void on_audit_page(breq_t *b, redisReply *r)
{
    size_t limit = (size_t)(intptr_t)b->state, n = 0;
    buf_t out = {0};
    const char *last = NULL;
    size_t lastlen = 0;
    buf_puts(&out, "{\"events\":[");
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && n < limit; i++) {
        redisReply *ent = r->element[i], *f;
        char *js;
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 || ent->element[0]->type != REDIS_REPLY_STRING)
            continue;
        f = ent->element[1];
        for (size_t j = 0; f->type == REDIS_REPLY_ARRAY && j + 1 < f->elements; j += 2) {
            if (f->element[j]->type != REDIS_REPLY_STRING || strcmp(f->element[j]->str, "e") != 0 ||
                f->element[j + 1]->type != REDIS_REPLY_STRING)
                continue;
            if (audit_entry_json(ent->element[0]->str, ent->element[0]->len, f->element[j + 1]->str,
                                 f->element[j + 1]->len, &js) == 0) {
                buf_printf(&out, "%s%s", n++ ? "," : "", js);
                free(js);
            }
        }
        last = ent->element[0]->str;
        lastlen = ent->element[0]->len;
    }
    buf_puts(&out, "],\"next\":");
    if (r->type == REDIS_REPLY_ARRAY && r->elements > limit && last != NULL)
        buf_json_str(&out, last, lastlen);
    else
        buf_puts(&out, "null");
    buf_puts(&out, "}");
    breq_json(b, 200, out.p, out.len);
    buf_free(&out);
}

void audit_events_list(breq_t *b)
{
    char cursor[48], since[64], end[52], start[32];
    int limit, rc;
    long long t;

    if ((limit = breq_query_int(b, "limit", 1, AUDIT_PAGE_MAX, AUDIT_PAGE_DEFAULT)) < 0)
        return;
    rc = breq_query_buf(b, "cursor", cursor, sizeof(cursor));
    if (rc != 0 && (rc != 1 || audit_cursor_valid(cursor) != 0)) {
        breq_error(b, ERR_INVALID_REQUEST, "The cursor parameter must be the next value of a previous page.");
        return;
    }
    snprintf(end, sizeof(end), rc == 1 ? "(%s" : "+", cursor);
    rc = breq_query_buf(b, "since", since, sizeof(since));
    if (rc != 0 && (rc != 1 || time_parse_rfc3339_ms(since, &t) != 0 || t < 0)) {
        breq_error(b, ERR_INVALID_REQUEST, "The since parameter must be an RFC 3339 UTC time (2026-11-26T22:34:47Z).");
        return;
    }
    if (rc == 1)
        snprintf(start, sizeof(start), "%lld", t);
    else
        snprintf(start, sizeof(start), "-");
    b->state = (void *)(intptr_t)limit;
    breq_redis(b, on_audit_page, "XREVRANGE %s %s %s COUNT %d", breq_key(b, KEY_AUDIT, b->org), end, start,
               limit + 1);
}
