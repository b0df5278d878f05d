/* token_service.c — mint, refresh and rotate exactly once (see token_service.h).
 *
 * A flight is the work for one (org, mode) on this worker; requests that need the
 * same work while it runs join it as waiters (in-process single flight) and all get
 * its result. Across replicas a flight first runs ACQUIRE, one Lua call that
 *   - serves the stored record if its version moved past the one the caller saw
 *     (someone else already did the work),
 *   - answers "cooling down" after a recent transient Stripe failure,
 *   - or takes the lease (SET NX PX with a random owner) and returns the record to
 *     work from — the re-check under the lease and the acquisition are one step.
 * A flight that finds the lease taken polls ACQUIRE until the record changes or the
 * lease is free (a crashed holder's lease simply expires). The holder calls Stripe
 * once, renewing the lease meanwhile (a renewal that finds the lease gone is logged
 * and stops), then COMMITs in one Lua call: nothing at all unless it still owns the
 * lease (the fence), a compare-and-set on the version it read (and, for a mint, on
 * the live record it minted from), the cooldown on failure, and the release.
 * A fenced or refused write is never served (another holder may have called Stripe
 * since, revoking this token): the flight goes round again from ACQUIRE, at most
 * MAX_ROUNDS times, and serves what someone else stored or does the work again under
 * a new lease. The one write that needs no lease is a rotated refresh token (apps):
 * Stripe lets only one call succeed with a refresh token, so a holder that got a new
 * one has the only live continuation of the record it read, and must not lose it
 * because its lease vanished (the version check still applies). When the Redis has connected replicas (ROLE, cached ROLE_TTL_MS per
 * worker), a new lease and a write of a rotated refresh token are followed by
 * WAIT 1 WAIT_MS, so that a failover does not forget them.
 * The Stripe call's result is written even when every waiter has given up.
 *
 * Never logs a token; logs org, mode, outcome. Tested on its own by
 * tests/unit/test_token_service.c (real redis-server, a fake token endpoint: single
 * flight, version fence, a lease held elsewhere, a lost lease, cooldown), and end to end
 * by tests/it/test_exactly_once.py
 * and tests/it/test_concurrency.py (replicas, 200 concurrent callers, exactly one
 * Stripe call; SIGKILL of the lease holder), tests/it/test_lease_fence.py (lost lease,
 * emptied Redis, delete / re-authorize during a call, WAIT with a replica),
 * tests/it/test_stripe_failures.py (invalid_grant; transient failures). */
#include "tokens/token_service.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "core/stripe_resp.h"
#include "core/timefmt.h"
#include "log.h"
#include "metrics.h"
#include "store/audit.h"
#include "store/keys.h"
#include "store/store.h"
#include "stripe/oauth.h"

#define POLL_MS 50
#define COOLDOWN_MS 2000
#define OWNER_BYTES 16
#define MAX_ROUNDS 2      /* go-rounds after a fenced or refused write */
#define ROLE_TTL_MS 5000  /* how long a worker trusts its count of Redis replicas */
#define WAIT_MS 200       /* WAIT bound: the worker's other Redis commands queue behind it */

typedef struct waiter {
    struct waiter *next;
    token_done_cb cb;
    void *data;
    char actor_kind[16];   /* who asked, for the audit event ("" the broker itself) */
    char actor_id[64];
    char request_id[64];
} waiter_t;

typedef struct flight {
    struct flight *next;
    token_service_t *ts;
    char org[ORGID_LEN + 1];
    int mode;
    token_op_t op;
    long seen_version;
    waiter_t *waiters;
    char owner[OWNER_BYTES * 2];
    int holds_lease;
    uint64_t id;          /* finds the flight from a renewal's answer */
    uint64_t started_ms;
    uint64_t round_ms;    /* when this round began (bounds the polling) */
    int rounds;           /* go-rounds so far */
    int writing;          /* the pending COMMIT writes a record */
    int rotated;          /* result carries a new refresh token: the one sent is dead */
    conn_record_t cur;    /* the target record as last read (may be empty) */
    int have_cur;
    long cur_version;
    conn_record_t source; /* MINT: the live record */
    long source_version;
    conn_record_t result; /* what the Stripe call produced */
    long result_version;  /* its version once COMMIT wrote it */
    int write_target;     /* MODE of the record COMMIT writes */
    api_err_t result_err; /* ERR_NONE ok, or the error to deliver after COMMIT */
    int deliver_written;  /* serve `result` after a successful COMMIT */
    h2o_timeout_entry_t poll;
    h2o_timeout_entry_t renew;
} flight_t;

struct token_service {
    h2o_evloop_t *loop;
    redis_loop_t *redis;
    curl_loop_t *curl;
    const config_t *cfg;
    flight_t *flights;
    h2o_timeout_t poll_list;
    h2o_timeout_t renew_list;
    long lease_ms;
    uint64_t next_id;
    int replicas;         /* connected Redis replicas, per ROLE */
    uint64_t role_ms;     /* when ROLE was last asked (0: never) */
    /* the background pass (apps flavor, the one service created with background) */
    h2o_timeout_t bg_list;
    h2o_timeout_entry_t bg_timer;
    int bg_running;
    char bg_cursor[32];
    char **bg_keys;
    size_t bg_nkeys;
};

static void acquire(flight_t *f);
static void go_round(flight_t *f);
static void on_bg_tick(h2o_timeout_entry_t *e);

/* ===== Flights ===== */

static void flight_free(flight_t *f)
{
    token_service_t *ts = f->ts;
    for (flight_t **p = &ts->flights; *p != NULL; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    if (h2o_timeout_is_linked(&f->poll))
        h2o_timeout_unlink(&f->poll);
    if (h2o_timeout_is_linked(&f->renew))
        h2o_timeout_unlink(&f->renew);
    conn_record_clear(&f->cur);
    conn_record_clear(&f->source);
    conn_record_clear(&f->result);
    explicit_bzero(f->owner, sizeof(f->owner));
    free(f);
}

/* Hand the result to every waiter still waiting and end the flight. */
static void deliver(flight_t *f, api_err_t err, const conn_record_t *rec, long version)
{
    waiter_t *w = f->waiters;
    f->waiters = NULL;
    while (w != NULL) {
        waiter_t *next = w->next;
        if (err == ERR_NONE && (rec == NULL || rec->status != CONN_CONNECTED || rec->access_token == NULL))
            w->cb(rec != NULL ? ERR_REAUTH_REQUIRED : ERR_NOT_CONNECTED, NULL, 0, w->data);
        else
            w->cb(err, err == ERR_NONE ? rec : NULL, err == ERR_NONE ? version : 0, w->data);
        free(w);
        w = next;
    }
    flight_free(f);
}

static int open_value(flight_t *f, int mode, redisReply *v, conn_record_t *out, long *version)
{
    *version = 0;
    return store_conn_open(f->ts->cfg, f->org, mode, v != NULL && v->type == REDIS_REPLY_STRING ? v->str : NULL,
                           v != NULL && v->type == REDIS_REPLY_STRING ? v->len : 0, version, out);
}

static int command(flight_t *f, redis_loop_cb cb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = redis_loop_vcommand(f->ts->redis, cb, f, fmt, ap);
    va_end(ap);
    if (rc != 0) {
        metrics_redis_error();
        deliver(f, ERR_STORE_UNAVAILABLE, NULL, 0);
    }
    return rc;
}

/* Send a command of store/conn.h for the flight (and free it); like command(). */
static int send_cmd(flight_t *f, redis_loop_cb cb, store_cmd_t *cmd)
{
    int rc = redis_loop_commandv(f->ts->redis, cb, f, cmd->argc, cmd->argv, cmd->lens);
    store_cmd_free(cmd);
    if (rc != 0) {
        metrics_redis_error();
        deliver(f, ERR_STORE_UNAVAILABLE, NULL, 0);
    }
    return rc;
}

/* The record the flight works from: a mint's is the live connection. */
static int source_mode(const flight_t *f)
{
    return f->op == TOKEN_OP_MINT ? MODE_LIVE : f->mode;
}

/* ===== COMMIT ===== */

static void on_reread(redisReply *r, void *data)
{
    flight_t *f = data;
    conn_record_t rec;
    long ver;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        deliver(f, ERR_STORE_UNAVAILABLE, NULL, 0);
        return;
    }
    int rc = open_value(f, f->mode, r, &rec, &ver);
    deliver(f, rc == STORE_UNREADABLE ? ERR_RECORD_UNREADABLE : ERR_NONE, rc == STORE_OK ? &rec : NULL, ver);
    conn_record_clear(&rec);
}

static void on_waited(redisReply *r, void *data)
{
    flight_t *f = data;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < 1)
        log_event(LOG_WARN, "rotated refresh token stored, but no replica confirmed it in time", "org_id", f->org,
                  "mode", mode_name(f->mode), NULL);
    deliver(f, ERR_NONE, &f->result, f->result_version);
}

static void on_commit(redisReply *r, void *data)
{
    flight_t *f = data;
    f->holds_lease = 0;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        metrics_redis_error();
        log_event(LOG_ERROR, "token write failed after a stripe call", "org_id", f->org, "mode", mode_name(f->mode), NULL);
        deliver(f, ERR_STORE_UNAVAILABLE, NULL, 0);
        return;
    }
    if (r->integer < 0 && f->writing) {
        /* fenced (-2) or someone else wrote first (-1): this result is not served */
        if (r->integer == -2)
            log_event(LOG_WARN, "refresh lease lost before the token write; nothing written", "org_id", f->org,
                      "mode", mode_name(f->mode), NULL);
        go_round(f);
        return;
    }
    if (f->writing)
        f->result_version = (long)r->integer;
    if (f->deliver_written && f->rotated && f->ts->replicas > 0 &&
        redis_loop_command(f->ts->redis, on_waited, f, "WAIT 1 %d", WAIT_MS) == 0)
        return;
    if (f->deliver_written)
        deliver(f, ERR_NONE, &f->result, f->result_version);
    else
        deliver(f, f->result_err, f->result_err == ERR_NONE && f->have_cur ? &f->cur : NULL, f->cur_version);
}

/* Write sealed (when not NULL) to the record of write_mode if it still has version
 * expected (and, source_version >= 0, the live record that one), indexed under
 * acct:<acct> (NULL: not indexed); start the cooldown (cooldown_ms > 0); release the lease;
 * record the audit event t (kind: see store_lease_commit_t; NULL: none). */
static void commit_audited(flight_t *f, int write_mode, long expected, const char *sealed, int cooldown_ms,
                           const char *acct, long source_version, const char *kind, const audit_tail_t *t)
{
    store_lease_commit_t w = {
        .write_mode = write_mode,
        .source_mode = source_mode(f),
        .sealed = sealed,
        .expected = expected,
        .source_version = source_version,
        .acct = acct,
        .cooldown_ms = cooldown_ms,
        /* Stripe accepts a refresh token once: whoever got the new one holds the
         * record's only future, lease or not */
        .without_lease = sealed != NULL && f->deliver_written && f->rotated,
        .audit_kind = kind,
        .failing_s = f->ts->cfg->refresh_failing_s,
    };
    store_cmd_t cmd;
    f->writing = sealed != NULL;
    store_lease_commit(&cmd, f->ts->cfg->redis_prefix, f->org, f->mode, f->owner, &w, t);
    send_cmd(f, on_commit, &cmd);
}

static void commit(flight_t *f, int write_mode, long expected, const char *sealed, int cooldown_ms, const char *acct,
                   long source_version)
{
    commit_audited(f, write_mode, expected, sealed, cooldown_ms, acct, source_version, "", NULL);
}

/* The audit tail of this flight's change, by the caller of its first request (the
 * broker itself for a background refresh). */
static void flight_tail(flight_t *f, audit_tail_t *t, const char *type, int mode, const char *details,
                        const char *out_type, const char *out_data)
{
    audit_actor_t a = {"broker", NULL};
    const char *rid = NULL;
    waiter_t *w = f->waiters;
    while (w != NULL && w->next != NULL) /* the first to ask: waiters are pushed in front */
        w = w->next;
    if (w != NULL && w->actor_kind[0] != '\0') {
        a.kind = w->actor_kind;
        a.id = w->actor_id[0] != '\0' ? w->actor_id : NULL;
        rid = w->request_id[0] != '\0' ? w->request_id : NULL;
    }
    audit_tail_make(t, f->ts->cfg, f->org, type, mode, &a, rid, details, out_type, out_data);
}

/* Write f->result, the outcome of a successful Stripe call, to the flight's record. */
static void commit_result(flight_t *f)
{
    const config_t *cfg = f->ts->cfg;
    char *sealed = store_conn_seal(cfg, f->org, f->mode, &f->result);
    audit_tail_t t;
    buf_t d = {0};
    const char *acct = f->result.stripe_user_id ? f->result.stripe_user_id : "";
    buf_puts(&d, "{\"stripe_user_id\":");
    buf_json_str(&d, acct, strlen(acct));
    if (f->op == TOKEN_OP_MINT)
        buf_puts(&d, ",\"derived_from\":\"live\"");
    buf_puts(&d, "}");
    flight_tail(f, &t, f->op == TOKEN_OP_MINT ? "token.minted" : f->op == TOKEN_OP_ROTATE ? "token.rotated" : "token.refreshed",
                f->mode, d.p, "connection.recovered", d.p);
    f->deliver_written = 1;
    commit_audited(f, f->mode, f->have_cur ? f->cur_version : 0, sealed, 0, acct,
                   f->op == TOKEN_OP_MINT ? f->source_version : -1, "ok", &t);
    free(sealed);
    audit_tail_free(&t);
    buf_free(&d);
}

/* A write that was fenced (the lease is gone: another holder may have called Stripe
 * since, so this token may already be revoked) or refused (a record moved) is never
 * served. The flight starts over from ACQUIRE with the version it read: that serves
 * what someone else stored, waits for the new holder, or takes a new lease and does
 * the work again. */
static void go_round(flight_t *f)
{
    if (f->rounds >= MAX_ROUNDS) {
        store_cmd_t cmd;
        store_conn_get(&cmd, f->ts->cfg->redis_prefix, f->org, f->mode);
        send_cmd(f, on_reread, &cmd);
        return;
    }
    f->rounds++;
    conn_record_clear(&f->result);
    f->rotated = 0;
    f->deliver_written = 0;
    f->writing = 0;
    f->result_err = ERR_NONE;
    f->seen_version = f->have_cur ? f->cur_version : 0;
    f->round_ms = time_mono_ms();
    acquire(f);
}

/* ===== The Stripe call ===== */

typedef struct renewal {
    token_service_t *ts;
    uint64_t id;
} renewal_t;

/* A renewal that finds the lease gone stops renewing; the COMMIT will be fenced. The
 * flight is looked up by id: it may have ended before the answer came. */
static void on_renewed(redisReply *r, void *data)
{
    renewal_t *rn = data;
    flight_t *f = rn->ts->flights;
    while (f != NULL && f->id != rn->id)
        f = f->next;
    free(rn);
    if (f == NULL || !f->holds_lease || r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer != 0)
        return;
    f->holds_lease = 0;
    if (h2o_timeout_is_linked(&f->renew))
        h2o_timeout_unlink(&f->renew);
    log_event(LOG_WARN, "refresh lease lost during the stripe call; its result will not be written", "org_id", f->org,
              "mode", mode_name(f->mode), NULL);
}

static void on_renew_tick(h2o_timeout_entry_t *e)
{
    flight_t *f = H2O_STRUCT_FROM_MEMBER(flight_t, renew, e);
    if (!f->holds_lease)
        return;
    renewal_t *rn = malloc(sizeof(*rn));
    if (rn == NULL)
        abort();
    rn->ts = f->ts;
    rn->id = f->id;
    store_cmd_t cmd;
    store_lease_renew(&cmd, f->ts->cfg->redis_prefix, f->org, f->mode, f->owner, f->ts->lease_ms);
    if (redis_loop_commandv(f->ts->redis, on_renewed, rn, cmd.argc, cmd.argv, cmd.lens) != 0)
        free(rn);
    store_cmd_free(&cmd);
    h2o_timeout_link(f->ts->loop, &f->ts->renew_list, &f->renew);
}

static void on_stripe(long status, const char *body, size_t len, void *data)
{
    flight_t *f = data;
    const config_t *cfg = f->ts->cfg;
    stripe_token_t tok = {0};
    char err[64] = "";
    stripe_outcome_t o = stripe_token_parse(status, body, len, &tok, err);
    const char *mname = mode_name(f->mode);
    time_t now = time(NULL);

    if (h2o_timeout_is_linked(&f->renew))
        h2o_timeout_unlink(&f->renew);
    metrics_stripe("token", stripe_outcome_name(o));

    if (o == STRIPE_OK) {
        const conn_record_t *base = f->op == TOKEN_OP_MINT ? &f->source : &f->cur;
        conn_record_t *n = &f->result;
        f->rotated = tok.refresh_token != NULL &&
                     (base->refresh_token == NULL || !ct_equal(tok.refresh_token, strlen(tok.refresh_token),
                                                               base->refresh_token, strlen(base->refresh_token)));
        conn_record_from_token(n, &tok, base, f->mode == MODE_LIVE, cfg->flavor == FLAVOR_APPS,
                               f->op == TOKEN_OP_MINT ? now : f->cur.connected_at, now);
        if (f->op == TOKEN_OP_MINT)
            snprintf(n->derived_from, sizeof(n->derived_from), "%s", mode_name(MODE_LIVE));
        else
            memcpy(n->derived_from, f->cur.derived_from, sizeof(n->derived_from));
        stripe_token_clear(&tok);
        metrics_refresh(mname, "ok");
        log_event(LOG_INFO, f->op == TOKEN_OP_MINT ? "test token minted from the live connection" : "token refreshed",
                  "org_id", f->org, "mode", mname, NULL);
        commit_result(f);
        return;
    }
    stripe_token_clear(&tok);
    if (o == STRIPE_TERMINAL) {
        /* the refresh token is dead: the authorization it came from needs an admin */
        int mode = f->op == TOKEN_OP_MINT ? MODE_LIVE : f->mode;
        conn_record_t *dead = f->op == TOKEN_OP_MINT ? &f->source : &f->cur;
        long ver = f->op == TOKEN_OP_MINT ? f->source_version : f->cur_version;
        metrics_refresh(mname, "reauthorization_required");
        log_event(LOG_WARN, "stripe rejected the refresh token; reauthorization required", "org_id", f->org, "mode",
                  mode_name(mode), NULL);
        conn_record_revoke(dead);
        char *sealed = store_conn_seal(cfg, f->org, mode, dead);
        audit_tail_t t;
        flight_tail(f, &t, "connection.deauthorized", mode, "{\"reason\":\"invalid_grant\"}",
                    "connection.reauthorization_required", "{\"reason\":\"invalid_grant\"}");
        f->result_err = ERR_REAUTH_REQUIRED;
        commit_audited(f, mode, ver, sealed, 0, NULL, -1, "dead", &t);
        free(sealed);
        audit_tail_free(&t);
        return;
    }
    /* transient (or a rejection that says the platform is misconfigured): no write */
    metrics_refresh(mname, "failed");
    log_event(LOG_WARN, "stripe token call failed", "org_id", f->org, "mode", mname, "outcome", stripe_outcome_name(o),
              "error", err, NULL);
    if (f->op == TOKEN_OP_REFRESH && f->have_cur && f->cur.access_token != NULL && f->cur.expires_at > now)
        f->result_err = ERR_NONE; /* the old token is still valid: serve it */
    else
        f->result_err = ERR_STRIPE_UNAVAILABLE;
    {
        audit_tail_t t;
        char d[96];
        snprintf(d, sizeof(d), "{\"class\":\"%s\",\"operation\":\"%s\"}", stripe_outcome_name(o),
                 f->op == TOKEN_OP_MINT ? "mint" : f->op == TOKEN_OP_ROTATE ? "rotate" : "refresh");
        flight_tail(f, &t, "token.refresh_failed", f->mode, d, "refresh.failing", d);
        commit_audited(f, f->mode, 0, NULL, COOLDOWN_MS, NULL, -1, "fail", &t);
        audit_tail_free(&t);
    }
}

static void call_stripe(flight_t *f, const char *refresh_token)
{
    curl_loop_req_t req;
    buf_t url = {0}, form = {0};
    stripe_token_request(f->ts->cfg, f->mode, "refresh_token", refresh_token, &req, &url, &form);
    int rc = curl_loop_post(f->ts->curl, &req, on_stripe, f);
    buf_free(&url);
    buf_wipe(&form);
    if (rc != 0) {
        f->result_err = ERR_STRIPE_UNAVAILABLE;
        commit(f, f->mode, 0, NULL, 0, NULL, -1);
        return;
    }
    h2o_timeout_link(f->ts->loop, &f->ts->renew_list, &f->renew);
}

/* Under the lease: decide whether Stripe is needed, and call it. */
static void work(flight_t *f)
{
    const config_t *cfg = f->ts->cfg;
    const conn_record_t *from = f->op == TOKEN_OP_MINT ? &f->source : &f->cur;
    int present = f->op == TOKEN_OP_MINT ? f->source_version > 0 : f->have_cur;

    f->result_err = ERR_NONE;
    if (!present) {
        f->result_err = ERR_NOT_CONNECTED;
    } else if (from->status != CONN_CONNECTED || from->refresh_token == NULL) {
        f->result_err = ERR_REAUTH_REQUIRED;
    } else if (f->op == TOKEN_OP_REFRESH && f->cur.expires_at - time(NULL) > cfg->refresh_margin_s) {
        metrics_refresh(mode_name(f->mode), "reused"); /* someone refreshed it meanwhile */
    } else {
        call_stripe(f, from->refresh_token);
        return;
    }
    commit(f, f->mode, 0, NULL, 0, NULL, -1);
}

/* A new lease has reached a replica (or WAIT gave up): go on either way. */
static void on_lease_waited(redisReply *r, void *data)
{
    flight_t *f = data;
    if (r == NULL) {
        metrics_redis_error();
        deliver(f, ERR_STORE_UNAVAILABLE, NULL, 0);
        return;
    }
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 1)
        log_event(LOG_WARN, "refresh lease taken, but no replica confirmed it in time", "org_id", f->org, "mode",
                  mode_name(f->mode), NULL);
    work(f);
}

static void on_poll_tick(h2o_timeout_entry_t *e)
{
    acquire(H2O_STRUCT_FROM_MEMBER(flight_t, poll, e));
}

/* The old token when a refresh cannot happen now but it is still valid. */
static void serve_old_or_fail(flight_t *f, api_err_t err)
{
    if (f->op == TOKEN_OP_REFRESH && f->have_cur && f->cur.status == CONN_CONNECTED && f->cur.access_token != NULL &&
        f->cur.expires_at > time(NULL))
        deliver(f, ERR_NONE, &f->cur, f->cur_version);
    else
        deliver(f, err, NULL, 0);
}

static void on_acquire(redisReply *r, void *data)
{
    flight_t *f = data;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER) {
        metrics_redis_error();
        deliver(f, ERR_STORE_UNAVAILABLE, NULL, 0);
        return;
    }
    long long what = r->element[0]->integer;
    conn_record_clear(&f->cur);
    f->have_cur = 0;
    if (r->elements >= 2) {
        int rc = open_value(f, f->mode, r->element[1], &f->cur, &f->cur_version);
        if (rc == STORE_UNREADABLE) {
            if (what == 1) {
                f->holds_lease = 1;
                f->result_err = ERR_RECORD_UNREADABLE;
                commit(f, f->mode, 0, NULL, 0, NULL, -1);
            } else {
                deliver(f, ERR_RECORD_UNREADABLE, NULL, 0);
            }
            return;
        }
        f->have_cur = rc == STORE_OK;
    }
    switch (what) {
    case 0: /* changed since the caller read it: the work is done */
        metrics_refresh(mode_name(f->mode), "reused");
        deliver(f, ERR_NONE, f->have_cur ? &f->cur : NULL, f->cur_version);
        return;
    case 3: /* cooling down after a transient failure */
        serve_old_or_fail(f, ERR_STRIPE_UNAVAILABLE);
        return;
    case 2: /* another replica holds the lease: poll until it is done or gone */
        if (time_mono_ms() - f->round_ms > (uint64_t)f->ts->lease_ms + 1000) {
            serve_old_or_fail(f, ERR_STRIPE_UNAVAILABLE);
            return;
        }
        h2o_timeout_link(f->ts->loop, &f->ts->poll_list, &f->poll);
        return;
    default:
        break;
    }
    f->holds_lease = 1;
    if (f->op == TOKEN_OP_MINT && r->elements >= 3) {
        conn_record_clear(&f->source);
        int rc = open_value(f, MODE_LIVE, r->element[2], &f->source, &f->source_version);
        if (rc == STORE_UNREADABLE) {
            f->result_err = ERR_RECORD_UNREADABLE;
            commit(f, f->mode, 0, NULL, 0, NULL, -1);
            return;
        }
    }
    if (f->ts->replicas > 0)
        command(f, on_lease_waited, "WAIT 1 %d", WAIT_MS);
    else
        work(f);
}

static void on_role(redisReply *r, void *data)
{
    token_service_t *ts = data;
    ts->replicas = 0;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "master") == 0 && r->element[2]->type == REDIS_REPLY_ARRAY)
        ts->replicas = (int)r->element[2]->elements;
}

static void acquire(flight_t *f)
{
    token_service_t *ts = f->ts;
    uint64_t now = time_mono_ms();
    /* queued before ACQUIRE, so its answer is in before ACQUIRE's */
    if (ts->role_ms == 0 || now - ts->role_ms > ROLE_TTL_MS) {
        ts->role_ms = now;
        redis_loop_command(ts->redis, on_role, ts, "ROLE");
    }
    store_cmd_t cmd;
    store_lease_acquire(&cmd, ts->cfg->redis_prefix, f->org, f->mode, source_mode(f), f->seen_version, f->owner,
                        ts->lease_ms);
    send_cmd(f, on_acquire, &cmd);
}

/* ===== The service ===== */

token_service_t *token_service_create(h2o_evloop_t *loop, redis_loop_t *redis, curl_loop_t *curl,
                                      const config_t *cfg, int background)
{
    token_service_t *ts = calloc(1, sizeof(*ts));
    if (ts == NULL)
        return NULL;
    ts->loop = loop;
    ts->redis = redis;
    ts->curl = curl;
    ts->cfg = cfg;
    ts->lease_ms = (long)cfg->upstream_timeout_ms + 1000;
    h2o_timeout_init(loop, &ts->poll_list, POLL_MS);
    h2o_timeout_init(loop, &ts->renew_list, (uint64_t)ts->lease_ms / 3);
    if (background && cfg->flavor == FLAVOR_APPS && cfg->background_refresh_s > 0) {
        h2o_timeout_init(loop, &ts->bg_list, (uint64_t)cfg->background_refresh_s * 1000);
        ts->bg_timer.cb = on_bg_tick;
        h2o_timeout_link(loop, &ts->bg_list, &ts->bg_timer);
    }
    return ts;
}

/* Start a flight for org/mode (none may exist yet) and return it. */
static flight_t *flight_start(token_service_t *ts, const char *org, int mode, token_op_t op, long seen_version)
{
    flight_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    f->ts = ts;
    snprintf(f->org, sizeof(f->org), "%s", org);
    f->mode = mode;
    f->op = op;
    f->seen_version = seen_version;
    f->started_ms = time_mono_ms();
    f->round_ms = f->started_ms;
    f->id = ++ts->next_id;
    f->result_err = ERR_NONE;
    f->poll.cb = on_poll_tick;
    f->renew.cb = on_renew_tick;
    rand_token(f->owner, OWNER_BYTES);
    f->next = ts->flights;
    ts->flights = f;
    return f;
}

static flight_t *flight_find(token_service_t *ts, const char *org, int mode)
{
    for (flight_t *f = ts->flights; f != NULL; f = f->next)
        if (f->mode == mode && strcmp(f->org, org) == 0)
            return f;
    return NULL;
}

void token_service_run(token_service_t *ts, const char *org, int mode, token_op_t op, long seen_version,
                       const token_caller_t *caller, token_done_cb cb, void *data)
{
    waiter_t *wt = calloc(1, sizeof(*wt));
    if (wt == NULL)
        abort();
    wt->cb = cb;
    wt->data = data;
    if (caller != NULL && caller->kind != NULL) {
        snprintf(wt->actor_kind, sizeof(wt->actor_kind), "%s", caller->kind);
        snprintf(wt->actor_id, sizeof(wt->actor_id), "%s", caller->id != NULL ? caller->id : "");
        snprintf(wt->request_id, sizeof(wt->request_id), "%s", caller->request_id != NULL ? caller->request_id : "");
    }
    flight_t *f = flight_find(ts, org, mode);
    if (f != NULL) {
        wt->next = f->waiters;
        f->waiters = wt;
        return;
    }
    f = flight_start(ts, org, mode, op, seen_version);
    f->waiters = wt;
    acquire(f);
}

/* ===== The background pass (apps flavor) =====
 *
 * Apps access tokens expire after an hour and refresh tokens after a year of disuse;
 * a connection nobody reads must still be refreshed. Worker 0 of every replica wakes
 * every BROKER_BACKGROUND_REFRESH_S; the replica that takes the pass lease scans the
 * connection records and starts an ordinary flight (same lease, same fence) for each
 * one that would enter the refresh margin before the next pass. */

static void on_bg_values(redisReply *r, void *data);

static void bg_scan(token_service_t *ts)
{
    char pattern[160];
    snprintf(pattern, sizeof(pattern), "%s" KEY_CONN_ALL, ts->cfg->redis_prefix);
    if (redis_loop_command(ts->redis, on_bg_values, ts, "SCAN %s MATCH %s COUNT 200", ts->bg_cursor, pattern) != 0)
        ts->bg_running = 0;
}

static void on_bg_records(redisReply *r, void *data)
{
    token_service_t *ts = data;
    const config_t *cfg = ts->cfg;
    time_t now = time(NULL);
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements && i < ts->bg_nkeys; i++) {
        const char *key = ts->bg_keys[i];
        char org[ORGID_LEN + 1];
        conn_record_t rec;
        long ver;
        int mode;
        if (keys_identity(key, cfg->redis_prefix, KEY_CONN_KIND, org, &mode) != 0)
            continue;
        redisReply *v = r->element[i];
        if (v->type != REDIS_REPLY_STRING ||
            store_conn_open(cfg, org, mode, v->str, v->len, &ver, &rec) != STORE_OK)
            continue;
        if (rec.status == CONN_CONNECTED && rec.expires_at != 0 &&
            rec.expires_at - now <= cfg->refresh_margin_s + cfg->background_refresh_s &&
            flight_find(ts, org, mode) == NULL) {
            log_event(LOG_INFO, "background refresh", "org_id", org, "mode", mode_name(mode), NULL);
            acquire(flight_start(ts, org, mode, TOKEN_OP_REFRESH, ver));
        }
        conn_record_clear(&rec);
    }
    for (size_t i = 0; i < ts->bg_nkeys; i++)
        free(ts->bg_keys[i]);
    ts->bg_nkeys = 0;
    if (r == NULL || strcmp(ts->bg_cursor, "0") == 0)
        ts->bg_running = 0;
    else
        bg_scan(ts);
}

static void on_bg_values(redisReply *r, void *data)
{
    token_service_t *ts = data;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY) {
        ts->bg_running = 0;
        return;
    }
    snprintf(ts->bg_cursor, sizeof(ts->bg_cursor), "%s", r->element[0]->str);
    redisReply *keys = r->element[1];
    if (keys->elements == 0) {
        on_bg_records(NULL, ts);
        if (strcmp(ts->bg_cursor, "0") != 0) {
            ts->bg_running = 1;
            bg_scan(ts);
        }
        return;
    }
    const char **argv = calloc(keys->elements + 1, sizeof(char *));
    size_t *lens = calloc(keys->elements + 1, sizeof(size_t));
    ts->bg_keys = realloc(ts->bg_keys, keys->elements * sizeof(char *));
    if (argv == NULL || lens == NULL || ts->bg_keys == NULL)
        abort();
    argv[0] = "MGET";
    lens[0] = 4;
    for (size_t i = 0; i < keys->elements; i++) {
        ts->bg_keys[i] = strndup(keys->element[i]->str, keys->element[i]->len);
        argv[i + 1] = ts->bg_keys[i];
        lens[i + 1] = keys->element[i]->len;
    }
    ts->bg_nkeys = keys->elements;
    if (redis_loop_commandv(ts->redis, on_bg_records, ts, (int)keys->elements + 1, argv, lens) != 0) {
        for (size_t i = 0; i < ts->bg_nkeys; i++)
            free(ts->bg_keys[i]);
        ts->bg_nkeys = 0;
        ts->bg_running = 0;
    }
    free(argv);
    free(lens);
}

static void on_bg_lease(redisReply *r, void *data)
{
    token_service_t *ts = data;
    if (r == NULL || r->type != REDIS_REPLY_STATUS) {
        ts->bg_running = 0; /* another replica runs this pass (or Redis is away) */
        return;
    }
    snprintf(ts->bg_cursor, sizeof(ts->bg_cursor), "0");
    bg_scan(ts);
}

static void on_bg_tick(h2o_timeout_entry_t *e)
{
    token_service_t *ts = H2O_STRUCT_FROM_MEMBER(token_service_t, bg_timer, e);
    char lease[24], owner[OWNER_BYTES * 2];
    h2o_timeout_link(ts->loop, &ts->bg_list, &ts->bg_timer);
    if (ts->bg_running || !redis_loop_ready(ts->redis))
        return;
    ts->bg_running = 1;
    rand_token(owner, OWNER_BYTES);
    snprintf(lease, sizeof(lease), "%ld", (long)ts->cfg->background_refresh_s * 1000 - 500);
    if (redis_loop_command(ts->redis, on_bg_lease, ts, "SET %s" KEY_BGREFRESH " %s NX PX %s", ts->cfg->redis_prefix,
                           owner, lease) != 0)
        ts->bg_running = 0;
}
