/* admin.c — org API keys (proto/openapi.yaml): create, list, delete. Admin token only.
 * The API key is shown once, in the 201 answer; Redis keeps its SHA-256 only. A
 * deleted key is gone from Redis at once: a quiet worker reads the key record on every
 * request, and a busy one that cached it (store/rcache.h) drops it when Redis's
 * invalidation arrives and misses no write older than 100 ms, so every replica
 * rejects it within the contract's 1 s. Every Redis command and script is
 * store/apikeys.h's: this file parses, calls it and answers. Tested by
 * tests/it/test_admin.py and tests/it/test_cache.py. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "auth.h"
#include "core/crypto.h"
#include "core/timefmt.h"
#include "routes/routes.h"
#include "store/apikeys.h"
#include "store/store.h"

typedef struct key_create {
    char api_key[APIKEY_LEN + 1];
    char key_id[APIKEY_ID_LEN + 1];
    time_t created;
} key_create_t;

static void key_create_free(void *p)
{
    key_create_t *kc = p;
    explicit_bzero(kc, sizeof(*kc));
    free(kc);
}

static void on_key_created(breq_t *b, redisReply *r)
{
    key_create_t *kc = b->state;
    char ts[21];
    buf_t out = {0};
    time_rfc3339(kc->created, ts);
    buf_printf(&out, "{\"key_id\":\"%s\",\"api_key\":\"%s\",\"org_id\":\"%s\",\"created_at\":\"%s\"}", kc->key_id,
               kc->api_key, b->org, ts);
    breq_json(b, 201, out.p, out.len);
    buf_wipe(&out);
}

void admin_keys_create(breq_t *b)
{
    key_create_t *kc = calloc(1, sizeof(*kc));
    char hash[65], rec[128];
    if (kc == NULL)
        abort();
    auth_new_key(kc->api_key, kc->key_id, hash);
    kc->created = time(NULL);
    b->state = kc;
    b->state_free = key_create_free;
    auth_key_record(rec, sizeof(rec), b->org, hash, (long)kc->created);
    char d[48];
    audit_tail_t t;
    snprintf(d, sizeof(d), "{\"key_id\":\"%s\"}", kc->key_id);
    breq_audit_tail(b, &t, "api_key.created", -1, d, NULL, NULL);
    store_cmd_t cmd;
    store_apikey_create(&cmd, b->w->cfg->redis_prefix, b->org, kc->key_id, rec, &t);
    breq_redisv(b, on_key_created, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
}

typedef struct key_row {
    const char *id;
    long created;
} key_row_t;

static int by_created(const void *a, const void *b)
{
    const key_row_t *x = a, *y = b;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void on_key_list(breq_t *b, redisReply *r)
{
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    key_row_t *rows = calloc(n + 1, sizeof(*rows));
    size_t m = 0;
    buf_t out = {0};
    if (rows == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        redisReply *id = r->element[2 * i], *rec = r->element[2 * i + 1];
        if (id->type != REDIS_REPLY_STRING || rec->type != REDIS_REPLY_STRING ||
            store_apikey_created(rec->str, rec->len, &rows[m].created) != 0)
            continue;
        rows[m].id = id->str;
        m++;
    }
    qsort(rows, m, sizeof(*rows), by_created);
    buf_puts(&out, "{\"api_keys\":[");
    for (size_t i = 0; i < m; i++) {
        char ts[21];
        time_rfc3339(rows[i].created, ts);
        buf_printf(&out, "%s{\"key_id\":", i ? "," : "");
        buf_json_str(&out, rows[i].id, strlen(rows[i].id));
        buf_printf(&out, ",\"created_at\":\"%s\"}", ts);
    }
    buf_puts(&out, "]}");
    breq_json(b, 200, out.p, out.len);
    buf_free(&out);
    free(rows);
}

void admin_keys_list(breq_t *b)
{
    store_cmd_t cmd;
    store_apikey_list(&cmd, b->w->cfg->redis_prefix, b->org);
    breq_redisv(b, on_key_list, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}

static void on_key_deleted(breq_t *b, redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        breq_no_content(b);
    else
        breq_error(b, ERR_NOT_FOUND, "No API key with that id exists for this org.");
}

void admin_keys_delete(breq_t *b)
{
    char id[APIKEY_ID_LEN + 1];
    size_t n = b->param_len[1];
    const char *p = b->params[1];
    int ok = n == APIKEY_ID_LEN;
    for (size_t i = 0; ok && i < n; i++)
        ok = (p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f');
    if (!ok) {
        breq_error(b, ERR_NOT_FOUND, "No API key with that id exists for this org.");
        return;
    }
    memcpy(id, p, n);
    id[n] = '\0';
    char d[48];
    audit_tail_t t;
    snprintf(d, sizeof(d), "{\"key_id\":\"%s\"}", id);
    breq_audit_tail(b, &t, "api_key.revoked", -1, d, NULL, NULL);
    store_cmd_t cmd;
    store_apikey_revoke(&cmd, b->w->cfg->redis_prefix, b->org, id, &t);
    breq_redisv(b, on_key_deleted, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
}
