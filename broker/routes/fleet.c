/* fleet.c — the fleet view (proto/openapi.yaml, GET /v1/admin/orgs): every org in the index
 * P orgs (a sorted set of org ids, all score 0, added by every audited write: see
 * store/audit.h) with its connections and its number of API keys. Paging walks the
 * index in org-id order with the last org of the page as cursor (ZRANGEBYLEX from an
 * exclusive start), so it stays correct while orgs are added; core/paging.h reads the
 * parameters. Admin only. Tested by tests/it/test_fleet.py. */
#include <stdlib.h>
#include <string.h>
#include "core/orgid.h"
#include "core/timefmt.h"
#include "routes/routes.h"
#include "store/audit.h"
#include "store/store.h"


typedef struct fleet_q {
    int limit;
    int status; /* CONN_CONNECTED, CONN_REAUTH_REQUIRED, or -1 for every org */
} fleet_q_t;

static const char *status_name(int st)
{
    return st == CONN_CONNECTED ? "connected" : "reauthorization_required";
}

/* The org's connections as JSON into out; returns 1 when one has the wanted status. */
static int org_json(breq_t *b, buf_t *out, redisReply **row, int want)
{
    int match = want < 0, n = 0;
    const char *org = row[0]->str;
    buf_printf(out, "{\"org_id\":\"%s\",\"api_keys\":%lld,\"connections\":[", org,
               row[5]->type == REDIS_REPLY_INTEGER ? row[5]->integer : 0);
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        redisReply *c = row[1 + mode], *u = row[3 + mode];
        conn_record_t rec;
        long ver;
        char ts[21];
        if (c->type != REDIS_REPLY_STRING || c->len == 0)
            continue;
        int rc = store_conn_open(b->w->cfg, org, mode, c->str, c->len, &ver, &rec);
        buf_printf(out, "%s{\"mode\":\"%s\",\"status\":", n++ ? "," : "", mode_name(mode));
        if (rc != STORE_OK) {
            buf_puts(out, "\"record_unreadable\"}");
            conn_record_clear(&rec);
            continue;
        }
        if ((int)rec.status == want)
            match = 1;
        buf_printf(out, "\"%s\",\"stripe_user_id\":", status_name(rec.status));
        buf_json_str(out, rec.stripe_user_id ? rec.stripe_user_id : "", rec.stripe_user_id ? strlen(rec.stripe_user_id) : 0);
        time_rfc3339(rec.connected_at, ts);
        buf_printf(out, ",\"connected_at\":\"%s\"", ts);
        time_rfc3339(rec.refreshed_at, ts);
        buf_printf(out, ",\"refreshed_at\":\"%s\"", ts);
        if (u->type == REDIS_REPLY_STRING && u->len > 0 && strspn(u->str, "0123456789") == u->len) {
            time_rfc3339((time_t)strtoll(u->str, NULL, 10), ts);
            buf_printf(out, ",\"last_used_at\":\"%s\"", ts);
        }
        if (rec.derived_from[0])
            buf_printf(out, ",\"derived_from\":\"%s\"", rec.derived_from);
        buf_puts(out, "}");
        conn_record_clear(&rec);
    }
    buf_puts(out, "]}");
    return match;
}

static void on_fleet_page(breq_t *b, redisReply *r)
{
    fleet_q_t *q = b->state;
    size_t rows = r->type == REDIS_REPLY_ARRAY ? r->elements / AUDIT_FLEET_COLS : 0, shown = 0;
    buf_t out = {0}, one = {0};
    const char *last = NULL;
    buf_puts(&out, "{\"orgs\":[");
    for (size_t i = 0; i < rows && i < (size_t)q->limit; i++) {
        redisReply **row = &r->element[i * AUDIT_FLEET_COLS];
        if (row[0]->type != REDIS_REPLY_STRING || row[0]->len != ORGID_LEN)
            continue;
        last = row[0]->str;
        buf_reset(&one);
        if (org_json(b, &one, row, q->status)) {
            buf_printf(&out, "%s", shown++ ? "," : "");
            buf_append(&out, one.p, one.len);
        }
    }
    buf_puts(&out, "],\"next\":");
    if (rows > (size_t)q->limit && last != NULL)
        buf_printf(&out, "\"%s\"", last);
    else
        buf_puts(&out, "null");
    buf_puts(&out, "}");
    breq_json(b, 200, out.p, out.len);
    buf_free(&out);
    buf_free(&one);
}

void admin_orgs_list(breq_t *b)
{
    fleet_q_t *q;
    paging_t p;
    if (breq_paging(b, PAGING_FLEET, &p) != 0)
        return;
    if ((q = calloc(1, sizeof(*q))) == NULL)
        abort();
    b->state = q;
    b->state_free = free;
    q->limit = p.limit;
    q->status = p.status == PAGING_STATUS_CONNECTED ? CONN_CONNECTED
              : p.status == PAGING_STATUS_REAUTH   ? CONN_REAUTH_REQUIRED
                                                   : -1;
    store_cmd_t cmd;
    audit_fleet_page(&cmd, b->w->cfg->redis_prefix, p.cursor, q->limit + 1);
    breq_redisv(b, on_fleet_page, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}
