/* audit.c — the audit trail's read (proto/openapi.yaml, GET /v1/orgs/{org}/audit-events) and
 * the writers' helper that names the actor of a change. Events are written by the
 * writers' own scripts (store/audit.h); this file only reads them, newest first, with
 * the previous page's last id as cursor (XREVRANGE ending just before it: core/paging.h
 * computes that id, which every Redis since 5 reads, where an exclusive "(" end needs
 * 6.2 and fails on 0-0), so paging stays correct while events are added. The paging
 * parameters are parsed by core/paging.h. Tested by tests/it/test_audit.py. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/paging.h"
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

const char *breq_query_string(breq_t *b, size_t *len)
{
    const h2o_req_t *req = b->req;
    if (req->query_at == SIZE_MAX) {
        *len = 0;
        return NULL;
    }
    *len = req->path.len - req->query_at - 1;
    return req->path.base + req->query_at + 1;
}

int breq_paging(breq_t *b, int list, paging_t *p)
{
    size_t len;
    const char *qs = breq_query_string(b, &len);
    paging_err_t e = paging_parse(qs, len, (paging_list_t)list, p);
    if (e == PAGING_OK)
        return 0;
    breq_error(b, ERR_INVALID_REQUEST, paging_message(e));
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
    paging_t p;
    char end[PAGING_CURSOR_MAX + 1] = "+", start[24] = "-";

    if (breq_paging(b, PAGING_AUDIT, &p) != 0)
        return;
    if (p.cursor[0] != '\0' && paging_before(p.cursor, end, sizeof(end)) != 0) {
        static const char none[] = "{\"events\":[],\"next\":null}"; /* nothing is older than 0-0 */
        breq_json(b, 200, none, sizeof(none) - 1);
        return;
    }
    if (p.since_ms >= 0)
        snprintf(start, sizeof(start), "%lld", p.since_ms);
    b->state = (void *)(intptr_t)p.limit;
    breq_redis(b, on_audit_page, "XREVRANGE %s %s %s COUNT %d", breq_key(b, KEY_AUDIT, b->org), end, start,
               p.limit + 1);
}
