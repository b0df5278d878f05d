/* audit.c — encoding of audit events and out-events (see audit.h, proto/redis.md).
 * Pure functions: formats arguments for the writers' scripts and reads entries back,
 * never talks to Redis itself. Tested by tests/unit/test_audit.c and tests/it/test_audit.py. */
#include "store/audit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/buf.h"
#include "core/crypto.h"
#include "core/timefmt.h"
#include "store/keys.h"
#include "store/redis_loop.h"

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        abort();
    return p;
}

void audit_tail_none(audit_tail_t *t)
{
    for (int i = 0; i < AUDIT_TAIL_ARGS; i++)
        t->argv[i] = xstrdup("");
}

/* One out-event (CONTRACT's shape) appended to o: never contains a newline. */
static void out_event(buf_t *o, const char *org, const char *type, int mode, const char *data_json)
{
    unsigned char rnd[12];
    char id[25], ts[21];
    rand_bytes(rnd, sizeof(rnd));
    hex_encode(rnd, sizeof(rnd), id);
    time_rfc3339(time(NULL), ts);
    buf_printf(o, "{\"id\":\"evt_%s\",\"type\":", id);
    buf_json_str(o, type, strlen(type));
    buf_printf(o, ",\"created\":\"%s\",\"org_id\":\"%s\"", ts, org);
    if (mode >= 0)
        buf_printf(o, ",\"mode\":\"%s\"", mode_name(mode));
    buf_printf(o, ",\"data\":%s}", data_json ? data_json : "{}");
}

void audit_tail_make(audit_tail_t *t, const config_t *cfg, const char *org, const char *type, int mode,
                     const audit_actor_t *actor, const char *request_id, const char *details_json,
                     const char *out_type, const char *out_data_json)
{
    buf_t k = {0}, e = {0};
    char ret[24];

    buf_printf(&k, "%s" KEY_AUDIT, cfg->redis_prefix, org);
    snprintf(ret, sizeof(ret), "%ld", (long)cfg->audit_retention_days * 86400L);
    buf_puts(&e, "{\"type\":");
    buf_json_str(&e, type, strlen(type));
    if (mode >= 0)
        buf_printf(&e, ",\"mode\":\"%s\"", mode_name(mode));
    buf_puts(&e, ",\"actor\":{\"kind\":");
    buf_json_str(&e, actor->kind, strlen(actor->kind));
    if (actor->id != NULL && actor->id[0]) {
        buf_puts(&e, ",\"id\":");
        buf_json_str(&e, actor->id, strlen(actor->id));
    }
    buf_puts(&e, "}");
    if (request_id != NULL && request_id[0]) {
        buf_puts(&e, ",\"request_id\":");
        buf_json_str(&e, request_id, strlen(request_id));
    }
    buf_printf(&e, ",\"details\":%s}", details_json ? details_json : "{}");
    t->argv[0] = k.p;
    t->argv[1] = xstrdup(ret);
    t->argv[2] = e.p;
    if (out_type != NULL && cfg->events_url != NULL) {
        buf_t ok = {0}, o = {0};
        buf_printf(&ok, "%s" KEY_OUTBOX, cfg->redis_prefix);
        out_event(&o, org, out_type, mode, out_data_json);
        if (strcmp(out_type, "connection.authorized") == 0) {
            /* a re-authorization ends an outage: sent only then (AUDIT_LUA) */
            buf_t d = {0};
            const char *data = out_data_json ? out_data_json : "{}";
            buf_puts(&d, "{\"reason\":\"reauthorized\"");
            if (strcmp(data, "{}") != 0 && data[0] == '{')
                buf_printf(&d, ",%s", data + 1);
            else
                buf_puts(&d, "}");
            buf_puts(&o, "\n");
            out_event(&o, org, "connection.recovered", mode, d.p);
            buf_free(&d);
        }
        t->argv[3] = ok.p;
        t->argv[4] = o.p;
    } else {
        t->argv[3] = xstrdup("");
        t->argv[4] = xstrdup("");
    }
}

void audit_tail_free(audit_tail_t *t)
{
    for (int i = 0; i < AUDIT_TAIL_ARGS; i++) {
        free(t->argv[i]);
        t->argv[i] = NULL;
    }
}

int audit_cursor_valid(const char *s)
{
    size_t a = strspn(s, "0123456789");
    if (a == 0 || a > 19 || s[a] != '-')
        return -1;
    size_t b = strspn(s + a + 1, "0123456789");
    return b > 0 && b <= 19 && s[a + 1 + b] == '\0' ? 0 : -1;
}

int audit_entry_json(const char *id, size_t idlen, const char *e, size_t elen, char **out)
{
    char ids[48], ts[21];
    buf_t o = {0};
    long long ms;
    *out = NULL;
    if (idlen == 0 || idlen >= sizeof(ids) || elen < 2 || e[0] != '{' || e[elen - 1] != '}')
        return -1;
    memcpy(ids, id, idlen);
    ids[idlen] = '\0';
    if (audit_cursor_valid(ids) != 0)
        return -1;
    ms = strtoll(ids, NULL, 10);
    time_rfc3339((time_t)(ms / 1000), ts);
    buf_printf(&o, "{\"id\":\"%s\",\"at\":\"%s\",", ids, ts);
    buf_append(&o, e + 1, elen - 1);
    *out = o.p;
    return 0;
}

/* KEYS[1]=P orgs; ARGV[1]=prefix, ARGV[2]=cursor ("" for the first page), ARGV[3]=count.
 * Returns org, conn test, conn live, used test, used live, number of keys, per org. */
const char AUDIT_LUA_FLEET_PAGE[] = AUDIT_LUA_FLEET
    "local start = '-'\n"
    "if ARGV[2] ~= '' then start = '(' .. ARGV[2] end\n"
    "local orgs = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, tonumber(ARGV[3]))\n"
    "local out = {}\n"
    "local p = ARGV[1]\n"
    "for _, o in ipairs(orgs) do\n"
    "  local u = redis.call('HMGET', p .. 'used:' .. o, 'test', 'live')\n"
    "  table.insert(out, o)\n"
    "  table.insert(out, redis.call('GET', p .. 'conn:' .. o .. ':test') or '')\n"
    "  table.insert(out, redis.call('GET', p .. 'conn:' .. o .. ':live') or '')\n"
    "  table.insert(out, u[1] or '')\n"
    "  table.insert(out, u[2] or '')\n"
    "  table.insert(out, key_count(p, o))\n"
    "end\n"
    "return out\n";

const char AUDIT_LUA_FLEET_SYNC[] = AUDIT_LUA_FLEET
    "for i = 2, #ARGV do fleet_sync(ARGV[1], ARGV[i]) end\n"
    "return 1\n";

/* ===== last_used_at ===== */

/* A per-thread table of when this worker last stamped each connection: 1,024 sets of 4
 * (org, mode) entries; a new connection takes the stalest entry of its set. A connection
 * pushed out early is stamped again sooner than a minute: more HSETs, never fewer. */
#define USED_SETS 1024
#define USED_WAYS 4
#define USED_EVERY_S 60

typedef struct used_slot {
    char org[20];
    int mode;
    time_t at;
} used_slot_t;

static __thread used_slot_t used_tab[USED_SETS][USED_WAYS];

void audit_touch_used(struct redis_loop *r, const config_t *cfg, const char *org, int mode)
{
    time_t now = time(NULL);
    unsigned h = 2166136261u;
    for (const char *p = org; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ (unsigned)mode) * 16777619u;
    used_slot_t *set = used_tab[h % USED_SETS], *s = &set[0];
    for (int i = 0; i < USED_WAYS; i++) {
        if (set[i].mode == mode && strcmp(set[i].org, org) == 0) {
            if (now - set[i].at < USED_EVERY_S)
                return;
            s = &set[i];
            break;
        }
        if (set[i].at < s->at)
            s = &set[i];
    }
    snprintf(s->org, sizeof(s->org), "%s", org);
    s->mode = mode;
    s->at = now;
    char key[160], at[24];
    snprintf(key, sizeof(key), "%s" KEY_USED, cfg->redis_prefix, org);
    snprintf(at, sizeof(at), "%ld", (long)now);
    redis_loop_command(r, NULL, NULL, "HSET %s %s %s", key, mode_name(mode), at);
}

void audit_fleet_page(store_cmd_t *c, const char *prefix, const char *cursor, int count)
{
    store_cmd_eval(c, AUDIT_LUA_FLEET_PAGE, 1);
    store_cmd_addf(c, "%s" KEY_ORGS, prefix);
    store_cmd_adds(c, prefix);
    store_cmd_adds(c, cursor);
    store_cmd_addf(c, "%d", count);
}
