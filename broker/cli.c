/* cli.c — check, create-api-key, rotate-keys, audit and orgs (see cli.h).
 * rotate-keys walks every sealed value (connections and webhook secrets) with SCAN
 * and re-seals the ones not under the first key, each with a compare-and-set on the
 * exact value it read, so it is safe while replicas serve and refresh, and safe to
 * interrupt and rerun. Prints key names and counts, never a value. Tested by
 * tests/it/test_config.py (check, create-api-key), tests/it/test_keys.py and
 * tests/it/test_exactly_once.py (rotate-keys while replicas serve and refresh),
 * tests/it/test_audit.py and tests/it/test_fleet.py (audit, orgs). */
#include "cli.h"
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "auth.h"
#include "core/crypto.h"
#include "core/orgid.h"
#include "core/seal.h"
#include "core/timefmt.h"
#include "store/apikeys.h"
#include "store/audit.h"
#include "store/conn.h"
#include "store/keys.h"
#include "store/store.h"

#define CLI_REDIS_TIMEOUT_MS 2000
#define SCAN_COUNT 200

static redisContext *connect_redis(const config_t *cfg)
{
    struct timeval tv = {CLI_REDIS_TIMEOUT_MS / 1000, (CLI_REDIS_TIMEOUT_MS % 1000) * 1000};
    redisContext *c = cfg->redis_unix != NULL ? redisConnectUnixWithTimeout(cfg->redis_unix, tv)
                                              : redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);
    redisReply *r = NULL;
    if (c == NULL || c->err) {
        fprintf(stderr, "stripe-token-broker: BROKER_REDIS_URL: cannot connect to Redis: %s\n",
                c != NULL ? c->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(c, tv);
    if (cfg->redis_password != NULL) {
        r = redisCommand(c, "AUTH %s", cfg->redis_password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "stripe-token-broker: BROKER_REDIS_URL: AUTH failed (wrong password, or not a Redis server at that address)\n");
            goto fail;
        }
        freeReplyObject(r);
    }
    if (cfg->redis_db != 0) {
        r = redisCommand(c, "SELECT %d", cfg->redis_db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "stripe-token-broker: BROKER_REDIS_URL: cannot select database %d\n", cfg->redis_db);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    return NULL;
}

int cli_check(const config_t *cfg)
{
    redisContext *c = connect_redis(cfg);
    if (c == NULL)
        return 1;
    redisReply *r = redisCommand(c, "PING");
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    if (!ok) {
        fprintf(stderr, "stripe-token-broker: BROKER_REDIS_URL: Redis does not answer PING\n");
        return 1;
    }
    printf("ok: configuration valid, Redis reachable, modes:%s%s, flavor %s\n", cfg->stripe[MODE_TEST].enabled ? " test" : "",
           cfg->stripe[MODE_LIVE].enabled ? " live" : "", cfg->flavor == FLAVOR_APPS ? "apps" : "connect");
    return 0;
}

/* The ORG_ID argument normalised into org, then a connection to Redis; NULL (with the
 * one stderr line) when either fails. */
static redisContext *connect_for_org(const config_t *cfg, const char *org_in, char org[ORGID_LEN + 1])
{
    if (orgid_normalize(org_in, strlen(org_in), org) != 0) {
        fprintf(stderr, "stripe-token-broker: ORG_ID: not a valid Salesforce organization id (15 or 18 characters, starting with 00D)\n");
        return NULL;
    }
    return connect_redis(cfg);
}

int cli_create_api_key(const config_t *cfg, const char *org_in)
{
    char org[ORGID_LEN + 1], api_key[APIKEY_LEN + 1], key_id[APIKEY_ID_LEN + 1], hash[65], rec[128];
    redisContext *c = connect_for_org(cfg, org_in, org);
    if (c == NULL)
        return 1;
    auth_new_key(api_key, key_id, hash);
    auth_key_record(rec, sizeof(rec), org, hash, (long)time(NULL));
    char d[48];
    audit_tail_t t;
    audit_actor_t actor = {"admin", "cli"};
    snprintf(d, sizeof(d), "{\"key_id\":\"%s\"}", key_id);
    audit_tail_make(&t, cfg, org, "api_key.created", -1, &actor, NULL, d, NULL, NULL);
    store_cmd_t cmd;
    store_apikey_create(&cmd, cfg->redis_prefix, org, key_id, rec, &t);
    redisReply *r = redisCommandArgv(c, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    if (!ok) {
        fprintf(stderr, "stripe-token-broker: cannot store the key in Redis\n");
        explicit_bzero(api_key, sizeof(api_key));
        return 1;
    }
    fprintf(stderr, "created API key %s for org %s (shown once; store it in the Salesforce External Credential)\n",
            key_id, org);
    printf("%s\n", api_key);
    fflush(stdout);
    explicit_bzero(api_key, sizeof(api_key));
    return 0;
}

/* Re-seal one value; returns 1 re-sealed, 0 already current, -1 failed. */
static int reseal(const config_t *cfg, redisContext *c, const char *key, const char *kind, const char *field)
{
    char org[ORGID_LEN + 1], kid[SEAL_KID_MAX + 1];
    int mode, result = -1;
    redisReply *r = NULL, *w = NULL;
    char *pt = NULL, *sealed = NULL, *newval = NULL;
    size_t ptlen = 0;

    if (keys_identity(key, cfg->redis_prefix, kind, org, &mode) != 0)
        return 0;
    for (int attempt = 0; attempt < 5 && result < 0; attempt++) {
        r = redisCommand(c, "GET %s", key);
        if (r == NULL || r->type != REDIS_REPLY_STRING) {
            result = r != NULL && r->type == REDIS_REPLY_NIL ? 0 : -1;
            break;
        }
        const char *colon = memchr(r->str, ':', r->len);
        if (colon == NULL || seal_kid(colon + 1, r->len - (size_t)(colon + 1 - r->str), kid) != 0) {
            fprintf(stderr, "rotate-keys: %s: unreadable value, skipped\n", key);
            break;
        }
        if (strcmp(kid, cfg->keyring.keys[0].kid) == 0) {
            result = 0;
            break;
        }
        if (seal_open(&cfg->keyring, colon + 1, r->len - (size_t)(colon + 1 - r->str), org, mode_name(mode), field,
                      &pt, &ptlen) != SEAL_OK) {
            fprintf(stderr, "rotate-keys: %s: cannot open (no key for id %s?), skipped\n", key, kid);
            break;
        }
        sealed = seal_seal(&cfg->keyring, org, mode_name(mode), field, pt, ptlen);
        size_t n = (size_t)(colon - r->str) + 1 + strlen(sealed) + 1;
        newval = malloc(n);
        snprintf(newval, n, "%.*s:%s", (int)(colon - r->str), r->str, sealed);
        store_cmd_t cmd;
        store_value_reseal(&cmd, key, r->str, r->len, newval, NULL);
        w = redisCommandArgv(c, cmd.argc, cmd.argv, cmd.lens);
        store_cmd_free(&cmd);
        if (w != NULL && w->type == REDIS_REPLY_INTEGER && w->integer == 1)
            result = 1;
        secure_free(pt, ptlen);
        pt = NULL;
        free(sealed);
        free(newval);
        sealed = newval = NULL;
        if (w != NULL)
            freeReplyObject(w);
        w = NULL;
        freeReplyObject(r);
        r = NULL;
        /* lost a race with a writer: read again */
    }
    if (r != NULL)
        freeReplyObject(r);
    return result;
}

int cli_rotate_keys(const config_t *cfg)
{
    static const struct {
        const char *kind, *field;
    } kinds[] = {{KEY_CONN_KIND, "connection"}, {KEY_WHSEC_KIND, "webhook_secret"}};
    redisContext *c = connect_redis(cfg);
    long done = 0, current = 0, failed = 0;
    if (c == NULL)
        return 1;
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char pattern[256], cursor[32] = "0";
        snprintf(pattern, sizeof(pattern), "%s%s*", cfg->redis_prefix, kinds[k].kind);
        do {
            redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT %d", cursor, pattern, SCAN_COUNT);
            if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                fprintf(stderr, "rotate-keys: SCAN failed; rerun to continue\n");
                if (r != NULL)
                    freeReplyObject(r);
                redisFree(c);
                return 1;
            }
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
            for (size_t i = 0; i < r->element[1]->elements; i++) {
                int rc = reseal(cfg, c, r->element[1]->element[i]->str, kinds[k].kind, kinds[k].field);
                if (rc == 1)
                    done++;
                else if (rc == 0)
                    current++;
                else
                    failed++;
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0") != 0);
    }
    redisFree(c);
    printf("rotate-keys: %ld re-sealed under key %s, %ld already current, %ld failed\n", done,
           cfg->keyring.keys[0].kid, current, failed);
    return failed == 0 ? 0 : 1;
}

/* ===== audit, orgs (proto/openapi.yaml) ===== */

int cli_audit(const config_t *cfg, const char *org_in)
{
    char org[ORGID_LEN + 1], key[256];
    redisContext *c = connect_for_org(cfg, org_in, org);
    if (c == NULL)
        return 1;
    snprintf(key, sizeof(key), "%s" KEY_AUDIT, cfg->redis_prefix, org);
    redisReply *r = redisCommand(c, "XREVRANGE %s + - COUNT %d", key, AUDIT_PAGE_MAX);
    int ok = r != NULL && r->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; ok && i < r->elements; i++) {
        redisReply *ent = r->element[i];
        char *js = NULL;
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 || ent->element[1]->type != REDIS_REPLY_ARRAY ||
            ent->element[1]->elements < 2 || ent->element[1]->element[1]->type != REDIS_REPLY_STRING ||
            audit_entry_json(ent->element[0]->str, ent->element[0]->len, ent->element[1]->element[1]->str,
                             ent->element[1]->element[1]->len, &js) != 0)
            continue;
        json_t *e = json_loads(js, 0, NULL);
        json_t *actor = json_object_get(e, "actor");
        char *details = json_dumps(json_object_get(e, "details"), JSON_COMPACT | JSON_SORT_KEYS);
        const char *mode = json_string_value(json_object_get(e, "mode"));
        const char *aid = json_string_value(json_object_get(actor, "id"));
        printf("%s  %-24s %-4s  %s%s%-16s  %s\n", json_string_value(json_object_get(e, "at")),
               json_string_value(json_object_get(e, "type")), mode ? mode : "-",
               json_string_value(json_object_get(actor, "kind")), aid ? ":" : "", aid ? aid : "",
               details ? details : "{}");
        free(details);
        json_decref(e);
        free(js);
    }
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    if (!ok) {
        fprintf(stderr, "stripe-token-broker: cannot read the audit trail from Redis\n");
        return 1;
    }
    return 0;
}

static void time_or_dash(long t, char out[21])
{
    if (t <= 0)
        snprintf(out, 21, "-");
    else
        time_rfc3339((time_t)t, out);
}

int cli_orgs(const config_t *cfg, const char *status)
{
    int want = -1;
    if (status != NULL && strcmp(status, "connected") == 0)
        want = CONN_CONNECTED;
    else if (status != NULL && strcmp(status, "reauthorization_required") == 0)
        want = CONN_REAUTH_REQUIRED;
    else if (status != NULL) {
        fprintf(stderr, "stripe-token-broker: --status: connected or reauthorization_required\n");
        return 2;
    }
    redisContext *c = connect_redis(cfg);
    if (c == NULL)
        return 1;
    char cursor[ORGID_LEN + 1] = "";
    printf("%-18s  %-4s  %-24s  %-21s  %-20s  %-20s  %-20s  %-7s  %s\n", "ORG_ID", "MODE", "STATUS", "STRIPE_USER_ID",
           "CONNECTED_AT", "REFRESHED_AT", "LAST_USED_AT", "DERIVED", "API_KEYS");
    for (;;) {
        store_cmd_t cmd;
        audit_fleet_page(&cmd, cfg->redis_prefix, cursor, AUDIT_PAGE_MAX);
        redisReply *r = redisCommandArgv(c, cmd.argc, cmd.argv, cmd.lens);
        store_cmd_free(&cmd);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "stripe-token-broker: cannot read the fleet index from Redis\n");
            if (r != NULL)
                freeReplyObject(r);
            redisFree(c);
            return 1;
        }
        size_t rows = r->elements / AUDIT_FLEET_COLS;
        for (size_t i = 0; i < rows; i++) {
            redisReply **row = &r->element[i * AUDIT_FLEET_COLS];
            const char *org = row[0]->str;
            conn_record_t rec[MODE_COUNT];
            int rc[MODE_COUNT], match = want < 0, any = 0;
            if (org == NULL || strlen(org) != ORGID_LEN)
                continue;
            snprintf(cursor, sizeof(cursor), "%s", org);
            for (int m = 0; m < MODE_COUNT; m++) {
                long ver;
                rc[m] = row[1 + m]->len ? store_conn_open(cfg, org, m, row[1 + m]->str, row[1 + m]->len, &ver, &rec[m])
                                        : (memset(&rec[m], 0, sizeof(rec[m])), STORE_ABSENT);
                if (rc[m] == STORE_OK && (int)rec[m].status == want)
                    match = 1;
            }
            for (int m = 0; match && m < MODE_COUNT; m++) {
                char ca[21], ra[21], ua[21];
                if (rc[m] == STORE_ABSENT)
                    continue;
                any = 1;
                time_or_dash(rc[m] == STORE_OK ? (long)rec[m].connected_at : 0, ca);
                time_or_dash(rc[m] == STORE_OK ? (long)rec[m].refreshed_at : 0, ra);
                time_or_dash(row[3 + m]->len ? strtol(row[3 + m]->str, NULL, 10) : 0, ua);
                printf("%-18s  %-4s  %-24s  %-21s  %-20s  %-20s  %-20s  %-7s  %lld\n", org, mode_name(m),
                       rc[m] != STORE_OK ? "record_unreadable"
                       : rec[m].status == CONN_CONNECTED ? "connected" : "reauthorization_required",
                       rc[m] == STORE_OK && rec[m].stripe_user_id ? rec[m].stripe_user_id : "-", ca, ra, ua,
                       rc[m] == STORE_OK && rec[m].derived_from[0] ? rec[m].derived_from : "-", row[5]->integer);
            }
            if (match && !any && want < 0)
                printf("%-18s  %-4s  %-24s  %-21s  %-20s  %-20s  %-20s  %-7s  %lld\n", org, "-", "-", "-", "-", "-",
                       "-", "-", row[5]->integer);
            for (int m = 0; m < MODE_COUNT; m++)
                conn_record_clear(&rec[m]);
        }
        int more = rows > 0 && r->elements == (size_t)AUDIT_PAGE_MAX * AUDIT_FLEET_COLS;
        freeReplyObject(r);
        if (!more)
            break;
    }
    redisFree(c);
    return 0;
}
