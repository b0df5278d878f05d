/* webhooks.c — POST /webhooks/stripe (proto/threat-model.md, "Revocation").
 *
 * Verifies Stripe-Signature (v1, any of several values, 300 s tolerance) against the
 * live and the test signing secret, and remembers which one verified it. On
 * account.application.deauthorized the connections of that account (found through the
 * acct index, each record's stripe_user_id checked: the index may be stale) that the
 * event takes (takes() below: the verifying secret's mode, live also a test connection
 * derived from live; connected_at at or before the event's created) are re-sealed as
 * reauthorization_required with their tokens removed, in one Lua call that first
 * checks every record is still byte for byte the one decided on (a re-authorization,
 * refresh or delete in between makes it start over), so the decision and the revoke
 * are atomic. Event ids are remembered for 24 h, and only once the event was handled,
 * so a redelivery after a failure is handled again and a redelivery after success
 * does nothing. Never logs the body or the signature.
 * Tested by tests/it/test_webhooks.py. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "core/webhook_sig.h"
#include "log.h"
#include "routes/routes.h"
#include "store/store.h"

#define DEAUTH_ATTEMPTS 3
#define EVENT_ID_MAX 255

typedef struct event {
    char id[EVENT_ID_MAX + 1];
    char type[128];
    char account[128];
    int mode;          /* of the signing secret that verified the event */
    long long created; /* the event's created (Unix seconds, Stripe's clock) */
    int attempts;
    char **members; /* "<org>:<mode>" of the account's connections */
    size_t nmembers;
} event_t;

static void event_free(void *p)
{
    event_t *e = p;
    for (size_t i = 0; i < e->nmembers; i++)
        free(e->members[i]);
    free(e->members);
    free(e);
}

static void answer(breq_t *b, int duplicate)
{
    static const char fresh[] = "{\"received\":true}", dup[] = "{\"received\":true,\"duplicate\":true}";
    if (duplicate)
        breq_json(b, 200, dup, sizeof(dup) - 1);
    else
        breq_json(b, 200, fresh, sizeof(fresh) - 1);
}

static void on_done(breq_t *b, redisReply *r);
static void on_members(breq_t *b, redisReply *r);

static void restart(breq_t *b)
{
    event_t *e = b->state;
    if (++e->attempts > DEAUTH_ATTEMPTS) {
        breq_error(b, ERR_STORE_UNAVAILABLE, "The connections changed while being revoked; Stripe will retry.");
        return;
    }
    breq_redis(b, on_members, "SMEMBERS %s", breq_key(b, KEY_ACCT, e->account));
}

static void on_done(breq_t *b, redisReply *r)
{
    event_t *e = b->state;
    if (r->type == REDIS_REPLY_INTEGER && r->integer < 0) {
        restart(b);
        return;
    }
    if (strcmp(e->type, "account.application.deauthorized") == 0) {
        char n[24];
        snprintf(n, sizeof(n), "%lld", r->type == REDIS_REPLY_INTEGER ? r->integer : 0);
        log_event(LOG_INFO, "stripe account deauthorized; connections need reauthorization", "stripe_user_id",
                  e->account, "mode", mode_name(e->mode), "revoked", n, NULL);
    }
    answer(b, 0);
}

/* Does the event take this connection (proto/threat-model.md, "Revocation")? Its account (the index may be
 * stale); the verifying secret's mode, where live also takes a test connection derived
 * from live, and test takes every test connection of the account (a derived one is
 * minted again from live on its next use), but live never takes a test connection
 * authorized on its own, even for the same account: that authorization is the test
 * application's, and Stripe tells its end with a test-mode event; and authorized at or
 * before the event's created: both are whole seconds, and in a tie the connection is
 * taken (a revoked token is never served; an authorization in the same second as the
 * deauthorization is no human's flow). Already revoked ones need no write. */
static int takes(const event_t *e, int mode, const conn_record_t *rec)
{
    if (rec->stripe_user_id == NULL || strcmp(rec->stripe_user_id, e->account) != 0)
        return 0; /* the index is stale: this connection moved to another account */
    if (mode != e->mode && !(e->mode == MODE_LIVE && strcmp(rec->derived_from, mode_name(MODE_LIVE)) == 0))
        return 0;
    if ((long long)rec->connected_at > e->created)
        return 0; /* authorized after the event: a late or redelivered event must not touch it */
    return rec->status == CONN_CONNECTED;
}

static void on_conns(breq_t *b, redisReply *r)
{
    event_t *e = b->state;
    size_t n = e->nmembers, nrecs = 0;
    store_conn_revoked_t *recs = calloc(n + 1, sizeof(*recs));
    char (*orgs)[ORGID_LEN + 1] = calloc(n + 1, sizeof(*orgs));
    audit_tail_t *tails = calloc(n + 1, sizeof(*tails));
    if (recs == NULL || orgs == NULL || tails == NULL)
        abort();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < n && i < r->elements; i++) {
        int mode;
        conn_record_t rec;
        long ver;
        redisReply *v = r->element[i];
        if (keys_member_parse(e->members[i], strlen(e->members[i]), orgs[nrecs], &mode) != 0)
            continue;
        if (store_conn_open(b->w->cfg, orgs[nrecs], mode, v->type == REDIS_REPLY_STRING ? v->str : NULL,
                            v->type == REDIS_REPLY_STRING ? v->len : 0, &ver, &rec) != STORE_OK)
            continue;
        if (!takes(e, mode, &rec)) {
            conn_record_clear(&rec);
            continue;
        }
        conn_record_revoke(&rec);
        recs[nrecs] = (store_conn_revoked_t){orgs[nrecs], mode, v->str, v->len, NULL}; /* the value decided on */
        recs[nrecs].sealed = store_conn_seal(b->w->cfg, orgs[nrecs], mode, &rec);
        {
            audit_actor_t actor = {"stripe", e->id};
            buf_t d = {0}, od = {0};
            buf_puts(&d, "{\"reason\":\"stripe_webhook\",\"stripe_event_id\":");
            buf_json_str(&d, e->id, strlen(e->id));
            buf_puts(&d, ",\"stripe_user_id\":");
            buf_json_str(&d, e->account, strlen(e->account));
            buf_puts(&d, "}");
            buf_puts(&od, "{\"reason\":\"deauthorized\",\"stripe_user_id\":");
            buf_json_str(&od, e->account, strlen(e->account));
            buf_puts(&od, "}");
            audit_tail_make(&tails[nrecs], b->w->cfg, orgs[nrecs], "connection.deauthorized", mode, &actor,
                            b->request_id, d.p, "connection.reauthorization_required", od.p);
            buf_free(&d);
            buf_free(&od);
        }
        nrecs++;
        conn_record_clear(&rec);
    }
    store_cmd_t cmd;
    store_conn_revoke(&cmd, b->w->cfg->redis_prefix, recs, nrecs, e->id, EVENT_TTL_S, tails);
    breq_redisv(b, on_done, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    for (size_t i = 0; i < nrecs; i++) {
        free((char *)recs[i].sealed);
        audit_tail_free(&tails[i]);
    }
    free(tails);
    free(recs);
    free(orgs);
}

static void on_members(breq_t *b, redisReply *r)
{
    event_t *e = b->state;
    for (size_t i = 0; i < e->nmembers; i++)
        free(e->members[i]);
    free(e->members);
    e->members = NULL;
    e->nmembers = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        breq_redis(b, on_done, "SET %s 1 EX %d", breq_key(b, KEY_EVT, e->id), EVENT_TTL_S);
        return;
    }
    e->members = calloc(r->elements, sizeof(char *));
    const char **argv = calloc(r->elements + 1, sizeof(char *));
    size_t *lens = calloc(r->elements + 1, sizeof(size_t));
    if (e->members == NULL || argv == NULL || lens == NULL)
        abort();
    argv[0] = "MGET";
    lens[0] = 4;
    for (size_t i = 0; i < r->elements; i++) {
        char org[ORGID_LEN + 1];
        int mode;
        e->members[i] = strndup(r->element[i]->str ? r->element[i]->str : "", r->element[i]->len);
        e->nmembers++;
        if (keys_member_parse(e->members[i], strlen(e->members[i]), org, &mode) != 0) {
            argv[i + 1] = breq_key(b, "invalid-member");
        } else {
            argv[i + 1] = breq_key(b, KEY_CONN, org, mode_name(mode));
        }
        lens[i + 1] = strlen(argv[i + 1]);
    }
    breq_redisv(b, on_conns, (int)r->elements + 1, argv, lens);
    free(argv);
    free(lens);
}

static void on_seen(breq_t *b, redisReply *r)
{
    event_t *e = b->state;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        answer(b, 1);
        return;
    }
    if (strcmp(e->type, "account.application.deauthorized") == 0 && e->account[0] != '\0') {
        breq_redis(b, on_members, "SMEMBERS %s", breq_key(b, KEY_ACCT, e->account));
        return;
    }
    /* other event types: remembered and ignored */
    breq_redis(b, on_done, "SET %s 1 EX %d", breq_key(b, KEY_EVT, e->id), EVENT_TTL_S);
}

/* Verify the signature; *mode gets the mode of the secret that verified it, or -1 when
 * both modes are configured with the same secret (then the secret cannot tell). */
static int verify(breq_t *b, const char *body, size_t len, int *mode_out)
{
    const config_t *cfg = b->w->cfg;
    const h2o_iovec_t *sig = breq_header(b, "stripe-signature");
    int rc = WHSIG_MALFORMED, any = 0;
    if (sig == NULL)
        return WHSIG_MALFORMED;
    for (int mode = MODE_LIVE; mode >= 0; mode--) {
        if (cfg->stripe[mode].webhook_secret == NULL)
            continue;
        any = 1;
        rc = whsig_verify(sig->base, sig->len, body, len, cfg->stripe[mode].webhook_secret, time(NULL),
                          WEBHOOK_TOLERANCE_S);
        if (rc == WHSIG_OK) {
            const char *other = cfg->stripe[!mode].webhook_secret;
            const char *mine = cfg->stripe[mode].webhook_secret;
            *mode_out = other != NULL && ct_equal(other, strlen(other), mine, strlen(mine)) ? -1 : mode;
            return WHSIG_OK;
        }
    }
    return any ? rc : WHSIG_MISMATCH;
}

void webhooks_stripe(breq_t *b)
{
    size_t len;
    const char *body = breq_body(b, &len);
    int mode = -1;
    int vr = verify(b, body, len, &mode);
    if (vr != WHSIG_OK) {
        char msg[160];
        snprintf(msg, sizeof(msg), "The Stripe-Signature header is missing or does not verify (%s).", whsig_reason(vr));
        breq_error(b, ERR_INVALID_REQUEST, msg);
        return;
    }
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *account = json_string_value(json_object_get(j, "account"));
    json_t *created = json_object_get(j, "created");
    if (id == NULL || type == NULL || strlen(id) == 0 || strlen(id) > EVENT_ID_MAX || strlen(type) >= 128 ||
        (account != NULL && strlen(account) >= 128)) {
        json_decref(j);
        breq_error(b, ERR_INVALID_REQUEST, "The event is not a Stripe event object.");
        return;
    }
    if (strcmp(type, "account.application.deauthorized") == 0 &&
        (!json_is_integer(created) || json_integer_value(created) <= 0)) {
        json_decref(j); /* without it, an old event could not be told from a new one */
        breq_error(b, ERR_INVALID_REQUEST, "The deauthorization event has no created time.");
        return;
    }
    event_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        abort();
    snprintf(e->id, sizeof(e->id), "%s", id);
    snprintf(e->type, sizeof(e->type), "%s", type);
    snprintf(e->account, sizeof(e->account), "%s", account != NULL ? account : "");
    /* one secret for both modes: the event's livemode, signed with it, is all there is */
    e->mode = mode >= 0 ? mode : json_is_true(json_object_get(j, "livemode")) ? MODE_LIVE : MODE_TEST;
    e->created = json_is_integer(created) ? (long long)json_integer_value(created) : 0;
    json_decref(j);
    b->state = e;
    b->state_free = event_free;
    breq_redis(b, on_seen, "EXISTS %s", breq_key(b, KEY_EVT, e->id));
}
