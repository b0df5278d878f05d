/* connections.c — an org's connections, authorize links and webhook signing secrets
 * (proto/openapi.yaml). The connection list never carries a token or secret; webhook
 * secrets are sealed before they reach Redis and never returned. Deleting an
 * authorized connection deletes it locally only when Stripe's deauthorize confirmed it
 * or answered that the account is already disconnected (core/stripe_resp.h decides);
 * any other answer is 502 and deletes nothing. Tested by tests/it/test_token.py,
 * tests/it/test_connection_delete.py and tests/it/test_contract_audit.py (verify). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "core/stripe_resp.h"
#include "core/timefmt.h"
#include "core/webhook_sig.h"
#include "log.h"
#include "metrics.h"
#include "routes/params.h"
#include "routes/routes.h"
#include "routes/setup.h"
#include "store/flows.h"
#include "store/store.h"
#include "store/whsec.h"
#include "stripe/oauth.h"

#define LINK_TTL_S TICKET_TTL_S

#define TICKET_BYTES 32

/* ===== GET /v1/orgs/{org}/connections ===== */

static void conn_json(buf_t *out, const conn_record_t *r, int mode)
{
    char c[21], f[21];
    const char *acct = r->stripe_user_id ? r->stripe_user_id : "";
    time_rfc3339(r->connected_at, c);
    time_rfc3339(r->refreshed_at, f);
    buf_printf(out, "{\"mode\":\"%s\",\"status\":\"%s\",\"stripe_user_id\":", mode_name(mode),
               r->status == CONN_CONNECTED ? "connected" : "reauthorization_required");
    buf_json_str(out, acct, strlen(acct));
    buf_printf(out, ",\"livemode\":%s,\"scope\":", r->livemode ? "true" : "false");
    buf_json_str(out, r->scope ? r->scope : "", r->scope ? strlen(r->scope) : 0);
    buf_printf(out, ",\"connected_at\":\"%s\",\"refreshed_at\":\"%s\"", c, f);
    if (r->derived_from[0])
        buf_printf(out, ",\"derived_from\":\"%s\"", r->derived_from);
    buf_puts(out, "}");
}

static void on_conn_list(breq_t *b, redisReply *r)
{
    buf_t out = {0};
    int n = 0;
    buf_puts(&out, "{\"connections\":[");
    for (int mode = 0; r->type == REDIS_REPLY_ARRAY && mode < MODE_COUNT && (size_t)mode < r->elements; mode++) {
        redisReply *e = r->element[mode];
        conn_record_t rec;
        long ver;
        int rc = store_conn_open(b->w->cfg, b->org, mode, e->type == REDIS_REPLY_STRING ? e->str : NULL,
                                 e->type == REDIS_REPLY_STRING ? e->len : 0, &ver, &rec);
        if (rc == STORE_UNREADABLE) {
            buf_free(&out);
            breq_error(b, ERR_RECORD_UNREADABLE, NULL);
            return;
        }
        if (rc == STORE_OK) {
            if (n++)
                buf_puts(&out, ",");
            conn_json(&out, &rec, mode);
        }
        conn_record_clear(&rec);
    }
    buf_puts(&out, "]}");
    breq_json(b, 200, out.p, out.len);
    buf_free(&out);
}

void conn_list(breq_t *b)
{
    breq_redis(b, on_conn_list, "MGET %s %s", breq_key(b, KEY_CONN, b->org, mode_name(MODE_TEST)),
               breq_key(b, KEY_CONN, b->org, mode_name(MODE_LIVE)));
}

/* ===== DELETE /v1/orgs/{org}/connections/{mode} ===== */

typedef struct conn_del {
    char acct[128];
    int derived_mode; /* the other mode's connection derived from this one, or -1 */
    int at_stripe;    /* Stripe's deauthorize confirmed it (not: derived, apps, already gone) */
} conn_del_t;

static void on_conn_deleted(breq_t *b, redisReply *r)
{
    breq_no_content(b);
}

/* Delete the connection (and its derived one) locally, in one script. */
static void delete_local(breq_t *b)
{
    conn_del_t *cd = b->state;
    audit_tail_t t;
    buf_t d = {0};
    buf_puts(&d, "{\"stripe_user_id\":");
    buf_json_str(&d, cd->acct, strlen(cd->acct));
    if (cd->derived_mode >= 0)
        buf_printf(&d, ",\"derived_deleted\":\"%s\"", mode_name(cd->derived_mode));
    buf_printf(&d, ",\"deauthorized_at_stripe\":%s}", cd->at_stripe ? "true" : "false");
    breq_audit_tail(b, &t, "connection.deleted", b->mode, d.p, "connection.deleted", d.p);
    store_cmd_t cmd;
    store_conn_drop(&cmd, b->w->cfg->redis_prefix, b->org, b->mode, cd->acct, cd->derived_mode, &t);
    breq_redisv(b, on_conn_deleted, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
    buf_free(&d);
}

/* Stripe's answer decides: done, or its "not connected" answer (already gone there),
 * deletes locally; any other refusal or failure keeps everything (proto/openapi.yaml). */
static void on_deauthorized(breq_t *b, long status, const char *body, size_t len)
{
    conn_del_t *cd = b->state;
    char err[64] = "", msg[160], st[8];
    stripe_deauth_t o = stripe_deauth_parse(status, body, len, cd->acct, err);
    if (o == STRIPE_DEAUTH_DONE || o == STRIPE_DEAUTH_NOT_CONNECTED) {
        metrics_stripe("deauthorize", o == STRIPE_DEAUTH_DONE ? "ok" : "rejected");
        if (o == STRIPE_DEAUTH_NOT_CONNECTED)
            log_event(LOG_WARN, "stripe deauthorize: the account is already disconnected; deleting locally", "org_id",
                      b->org, "mode", mode_name(b->mode), "stripe_user_id", cd->acct, NULL);
        cd->at_stripe = o == STRIPE_DEAUTH_DONE;
        delete_local(b);
        return;
    }
    metrics_stripe("deauthorize", status >= 400 && status < 500 && status != 429 ? "rejected" : "transient");
    snprintf(st, sizeof(st), "%ld", status);
    log_event(LOG_WARN, "stripe deauthorize refused or failed; the connection is kept", "org_id", b->org, "mode",
              mode_name(b->mode), "http_status", st, "error", err, NULL);
    if (status == 0)
        snprintf(msg, sizeof(msg), "Stripe did not answer the deauthorization; the connection is kept.");
    else
        snprintf(msg, sizeof(msg), "Stripe did not confirm the deauthorization (HTTP %ld%s%s); the connection is kept.",
                 status, err[0] ? ", " : "", err);
    breq_error(b, ERR_STRIPE_UNAVAILABLE, msg);
}

static void on_conn_for_delete(breq_t *b, redisReply *r)
{
    conn_record_t rec, other;
    long ver, over;
    int other_mode = b->mode == MODE_TEST ? MODE_LIVE : MODE_TEST;
    redisReply *e = r->element[0], *o = r->element[1];
    int rc = store_conn_open(b->w->cfg, b->org, b->mode, e->type == REDIS_REPLY_STRING ? e->str : NULL,
                             e->type == REDIS_REPLY_STRING ? e->len : 0, &ver, &rec);
    int orc = store_conn_open(b->w->cfg, b->org, other_mode, o->type == REDIS_REPLY_STRING ? o->str : NULL,
                              o->type == REDIS_REPLY_STRING ? o->len : 0, &over, &other);
    conn_del_t *cd = calloc(1, sizeof(*cd));
    if (cd == NULL)
        abort();
    b->state = cd;
    b->state_free = free;
    cd->derived_mode = -1;
    if (rc == STORE_UNREADABLE) {
        breq_error(b, ERR_RECORD_UNREADABLE, NULL);
    } else if (rc == STORE_ABSENT) {
        breq_error(b, ERR_NOT_CONNECTED, NULL);
    } else {
        snprintf(cd->acct, sizeof(cd->acct), "%s", rec.stripe_user_id ? rec.stripe_user_id : "");
        if (orc == STORE_OK && strcmp(other.derived_from, mode_name(b->mode)) == 0)
            cd->derived_mode = other_mode;
        if (rec.derived_from[0] || rec.status != CONN_CONNECTED || b->w->cfg->flavor == FLAVOR_APPS) {
            /* the authorization belongs to the other mode, is already gone, or is a Stripe
             * Apps install (uninstalled from the Stripe Dashboard, no deauthorize call) */
            delete_local(b);
        } else {
            curl_loop_req_t req;
            buf_t url = {0}, form = {0};
            stripe_deauthorize_request(b->w->cfg, b->mode, cd->acct, &req, &url, &form);
            breq_stripe(b, &req, on_deauthorized);
            buf_free(&url);
            buf_wipe(&form);
        }
    }
    conn_record_clear(&rec);
    conn_record_clear(&other);
}

void conn_delete(breq_t *b)
{
    if (parse_mode_param(b, 1) < 0)
        return;
    int other = b->mode == MODE_TEST ? MODE_LIVE : MODE_TEST;
    breq_redis(b, on_conn_for_delete, "MGET %s %s", breq_key(b, KEY_CONN, b->org, mode_name(b->mode)),
               breq_key(b, KEY_CONN, b->org, mode_name(other)));
}

/* ===== POST /v1/orgs/{org}/authorize-links ===== */

typedef struct link {
    char ticket[64];
    time_t expires;
} link_t;

static void link_free(void *p)
{
    explicit_bzero(p, sizeof(link_t));
    free(p);
}

static void on_link_stored(breq_t *b, redisReply *r)
{
    link_t *l = b->state;
    char ts[21];
    buf_t out = {0}, url = {0};
    time_rfc3339(l->expires, ts);
    buf_printf(&url, "%s/setup?ticket=%s", b->w->cfg->public_url, l->ticket);
    buf_puts(&out, "{\"url\":");
    buf_json_str(&out, url.p, url.len);
    buf_printf(&out, ",\"expires_at\":\"%s\"}", ts);
    breq_json(b, 201, out.p, out.len);
    buf_wipe(&out);
    buf_wipe(&url);
}

void links_create(breq_t *b)
{
    json_t *body = parse_json_body(b);
    if (body == NULL)
        return;
    json_t *jmode = json_object_get(body, "mode"), *jret = json_object_get(body, "return_url");
    const char *ret = NULL;
    if (!json_is_string(jmode)) {
        json_decref(body);
        breq_error(b, ERR_INVALID_REQUEST, "The field mode is required (\"test\" or \"live\").");
        return;
    }
    if (parse_mode_value(b, json_string_value(jmode)) < 0) {
        json_decref(body);
        return;
    }
    if (jret != NULL && !json_is_null(jret)) {
        if (!json_is_string(jret) || !config_return_url_allowed(b->w->cfg, json_string_value(jret))) {
            json_decref(body);
            breq_error(b, ERR_INVALID_REQUEST,
                       "The return_url must be an https URL on an allowed Salesforce domain (BROKER_RETURN_URL_ALLOW).");
            return;
        }
        ret = json_string_value(jret);
    }
    link_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        abort();
    rand_token(l->ticket, TICKET_BYTES);
    l->expires = time(NULL) + LINK_TTL_S;
    b->state = l;
    b->state_free = link_free;

    flow_session_t rec = {.mode = b->mode, .return_url = (char *)ret};
    memcpy(rec.org, b->org, sizeof(rec.org));
    store_cmd_t cmd;
    store_ticket_put(&cmd, b->w->cfg->redis_prefix, l->ticket, &rec, LINK_TTL_S);
    breq_redisv(b, on_link_stored, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    json_decref(body);
}

/* ===== Webhook signing secrets ===== */

static void on_whsec_done(breq_t *b, redisReply *r)
{
    breq_no_content(b);
}

/* Store a signing secret for b->org / b->mode, then run cb. Shared with the setup page. */
void whsec_store(breq_t *b, const char *secret, breq_redis_cb cb)
{
    char *val = store_whsec_seal(b->w->cfg, b->org, b->mode, secret);
    audit_tail_t t;
    if (b->is_admin || b->bearer.kind == BEARER_KEY) {
        breq_audit_tail(b, &t, "webhook_secret.set", b->mode, NULL, NULL, NULL);
    } else { /* the setup page */
        char sid[17];
        audit_actor_t actor = {"setup_session", sid};
        setup_session_id(b, sid);
        audit_tail_make(&t, b->w->cfg, b->org, "webhook_secret.set", b->mode, &actor, b->request_id, NULL, NULL, NULL);
    }
    store_cmd_t cmd;
    store_whsec_put(&cmd, b->w->cfg->redis_prefix, b->org, b->mode, val, &t);
    breq_redisv(b, cb, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
    free(val);
}

void whsec_put(breq_t *b)
{
    if (parse_mode_param(b, 1) < 0)
        return;
    json_t *body = parse_json_body(b);
    if (body == NULL)
        return;
    json_t *s = json_object_get(body, "signing_secret");
    if (!json_is_string(s) || !whsig_secret_valid(json_string_value(s), strlen(json_string_value(s)))) {
        json_decref(body);
        breq_error(b, ERR_INVALID_REQUEST, "The field signing_secret is required (the whsec_… value from Stripe).");
        return;
    }
    whsec_store(b, json_string_value(s), on_whsec_done);
    json_decref(body);
}

static void on_whsec_get(breq_t *b, redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING) {
        static const char body[] = "{\"configured\":false}";
        breq_json(b, 200, body, sizeof(body) - 1);
        return;
    }
    char ts[21], out[96];
    time_rfc3339((time_t)strtol(r->str, NULL, 10), ts);
    int n = snprintf(out, sizeof(out), "{\"configured\":true,\"updated_at\":\"%s\"}", ts);
    breq_json(b, 200, out, (size_t)n);
}

void whsec_get(breq_t *b)
{
    if (parse_mode_param(b, 1) < 0)
        return;
    store_cmd_t cmd;
    store_whsec_get(&cmd, b->w->cfg->redis_prefix, b->org, b->mode);
    breq_redisv(b, on_whsec_get, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}

void whsec_delete(breq_t *b)
{
    if (parse_mode_param(b, 1) < 0)
        return;
    audit_tail_t t;
    breq_audit_tail(b, &t, "webhook_secret.deleted", b->mode, NULL, NULL, NULL);
    store_cmd_t cmd;
    store_whsec_delete(&cmd, b->w->cfg->redis_prefix, b->org, b->mode, &t);
    breq_redisv(b, on_whsec_done, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
}

/* ===== POST /v1/orgs/{org}/webhook-events/verify ===== */

typedef struct verify {
    json_t *body;
} verify_t;

static void verify_free(void *p)
{
    verify_t *v = p;
    json_decref(v->body);
    free(v);
}

static void answer_invalid(breq_t *b, const char *reason)
{
    buf_t out = {0};
    buf_puts(&out, "{\"valid\":false,\"reason\":");
    buf_json_str(&out, reason, strlen(reason));
    buf_puts(&out, "}");
    breq_json(b, 200, out.p, out.len);
    buf_free(&out);
}

static void on_verify_secret(breq_t *b, redisReply *r)
{
    verify_t *v = b->state;
    char *secret = NULL;
    long updated;
    int rc = store_whsec_open(b->w->cfg, b->org, b->mode, r->type == REDIS_REPLY_STRING ? r->str : NULL,
                              r->type == REDIS_REPLY_STRING ? r->len : 0, &secret, &updated);
    if (rc == STORE_UNREADABLE) {
        breq_error(b, ERR_RECORD_UNREADABLE, NULL);
        return;
    }
    if (rc == STORE_ABSENT) {
        answer_invalid(b, "no webhook signing secret is configured for this org and mode");
        return;
    }
    const char *payload = json_string_value(json_object_get(v->body, "payload"));
    const char *sig = json_string_value(json_object_get(v->body, "signature"));
    int vr = whsig_verify(sig, strlen(sig), payload, strlen(payload), secret, time(NULL), WEBHOOK_TOLERANCE_S);
    secure_free_str(secret);
    if (vr != WHSIG_OK) {
        answer_invalid(b, whsig_reason(vr));
        return;
    }
    json_t *evt = json_loads(payload, 0, NULL);
    const char *id = json_string_value(json_object_get(evt, "id"));
    const char *type = json_string_value(json_object_get(evt, "type"));
    if (id == NULL || type == NULL || id[0] == '\0' || type[0] == '\0') {
        /* signed with the org's secret, but not an event: nothing to name */
        json_decref(evt);
        answer_invalid(b, "the payload is not a Stripe event (no id or type)");
        return;
    }
    buf_t out = {0};
    buf_puts(&out, "{\"valid\":true,\"event_id\":");
    buf_json_str(&out, id, strlen(id));
    buf_puts(&out, ",\"event_type\":");
    buf_json_str(&out, type, strlen(type));
    buf_puts(&out, "}");
    breq_json(b, 200, out.p, out.len);
    buf_free(&out);
    json_decref(evt);
}

void whevents_verify(breq_t *b)
{
    if (parse_mode_query(b) < 0)
        return;
    json_t *body = parse_json_body(b);
    if (body == NULL)
        return;
    if (!json_is_string(json_object_get(body, "payload")) || !json_is_string(json_object_get(body, "signature"))) {
        json_decref(body);
        breq_error(b, ERR_INVALID_REQUEST, "The fields payload and signature are required strings.");
        return;
    }
    verify_t *v = calloc(1, sizeof(*v));
    if (v == NULL)
        abort();
    v->body = body;
    b->state = v;
    b->state_free = verify_free;
    store_cmd_t cmd;
    store_whsec_get(&cmd, b->w->cfg->redis_prefix, b->org, b->mode);
    breq_redisv(b, on_verify_secret, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}
