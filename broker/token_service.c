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
 * Never logs a token; logs org, mode, outcome. Tested by tests/it/test_exactly_once.py
 * and tests/it/test_concurrency.py (replicas, 200 concurrent callers, exactly one
 * Stripe call; SIGKILL of the lease holder), tests/it/test_lease_fence.py (lost lease,
 * emptied Redis, delete / re-authorize during a call, WAIT with a replica),
 * tests/it/test_stripe_failures.py (invalid_grant; transient failures). */
#include "token_service.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include "core/crypto.h"
#include "core/stripe_resp.h"
#include "core/timefmt.h"
#include "log.h"
#include "metrics.h"
#include "store/audit.h"
#include "store/store.h"
#include "stripe/oauth.h"

#define POLL_MS 50
#define COOLDOWN_MS 2000
#define OWNER_BYTES 16
#define MAX_ROUNDS 2      /* go-rounds after a fenced or refused write */
#define ROLE_TTL_MS 5000  /* how long a worker trusts its count of Redis replicas */
#define WAIT_MS 200       /* WAIT bound: the worker's other Redis commands queue behind it */

/* KEYS: target conn, lock, source conn, cooldown. ARGV: seen version, owner, lease ms.
 * → {0, cur} changed | {1, cur, source} acquired | {2} wait | {3, cur} cooling down */
static const char LUA_ACQUIRE[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ver = cur and tonumber(string.match(cur, '^(%d+):')) or 0\n"
    "if ver ~= tonumber(ARGV[1]) then return {0, cur or false} end\n"
    "if redis.call('EXISTS', KEYS[4]) == 1 then return {3, cur or false} end\n"
    "if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then\n"
    "  return {1, cur or false, redis.call('GET', KEYS[3]) or false}\n"
    "end\n"
    "return {2}\n";

/* KEYS: conn to write, lock, acct index, cooldown, source conn. ARGV: sealed or '',
 * expected version, owner, index member or '', cooldown ms, expected source version or
 * '' (MINT: the live record it minted from must still be that version), '1' when the
 * write needs no lease (a rotated refresh token, see rotated_needs_no_lease), what the
 * audit event is ('ok' a new token, 'dead' a rejected refresh token, 'fail' a transient
 * failure, '' none), BROKER_REFRESH_FAILING_S, then the audit tail (store/audit.h):
 * recorded with the write, or, with no write, by the lease owner. P failing:<org>:<mode>
 * holds the time of the first of a run of transient failures ("<t>:sent" once
 * refresh.failing went out after BROKER_REFRESH_FAILING_S); the next write deletes it
 * and, when refresh.failing went out, sends connection.recovered (the tail's out-event).
 * → new version, 0 nothing written, -1 a version moved (someone else wrote), -2 this
 * flight no longer owns the lease (expired, deleted by a failover or a restart):
 * nothing is written, not even the cooldown. */
static const char LUA_COMMIT[] =
    STORE_LUA_NEXT_VERSION
    AUDIT_LUA
    "local owner = redis.call('GET', KEYS[2]) == ARGV[3]\n"
    "if not owner and ARGV[7] ~= '1' then return -2 end\n"
    "local n = #ARGV\n"
    "local fk = (string.gsub(KEYS[1], 'conn:([^:]+):([^:]+)$', 'failing:%1:%2'))\n"
    "local function audit_out_if(send)\n"
    "  audit_add(ARGV[n-4], ARGV[n-3], ARGV[n-2], send and ARGV[n-1] or '', ARGV[n])\n"
    "end\n"
    "local res = 0\n"
    "if ARGV[1] ~= '' then\n"
    "  local cur = redis.call('GET', KEYS[1])\n"
    "  local ver = cur and tonumber(string.match(cur, '^(%d+):')) or 0\n"
    "  local ok = ver == tonumber(ARGV[2])\n"
    "  if ok and ARGV[6] ~= '' then\n"
    "    local src = redis.call('GET', KEYS[5])\n"
    "    ok = (src and tonumber(string.match(src, '^(%d+):')) or 0) == tonumber(ARGV[6])\n"
    "  end\n"
    "  if ok then\n"
    "    res = next_version(KEYS[1], ver)\n"
    "    redis.call('SET', KEYS[1], res .. ':' .. ARGV[1])\n"
    "    if ARGV[4] ~= '' then redis.call('SADD', KEYS[3], ARGV[4]) end\n"
    "    local was = redis.call('GET', fk)\n"
    "    if was then redis.call('DEL', fk) end\n"
    "    if ARGV[8] == 'ok' then audit_out_if(was and string.find(was, ':sent', 1, true) ~= nil)\n"
    "    else audit_tail() end\n"
    "  else res = -1 end\n"
    "elseif owner and ARGV[8] == 'fail' then\n"
    "  local now = tonumber(redis.call('TIME')[1])\n"
    "  local v = redis.call('GET', fk)\n"
    "  if not v then v = tostring(now); redis.call('SET', fk, v, 'EX', 604800) end\n"
    "  local first = tonumber(string.match(v, '^(%d+)')) or now\n"
    "  local send = string.find(v, ':sent', 1, true) == nil and now - first >= tonumber(ARGV[9])\n"
    "  if send then redis.call('SET', fk, first .. ':sent', 'EX', 604800) end\n"
    "  audit_out_if(send)\n"
    "elseif owner then audit_tail() end\n"
    "if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], '1', 'PX', ARGV[5]) end\n"
    "if owner then redis.call('DEL', KEYS[2]) end\n"
    "return res\n";

static const char LUA_RENEW[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                "end\n"
                                "return 0\n";

typedef struct waiter {
    struct waiter *next;
    breq_t *b;
    token_done_cb cb;
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
    int write_target;     /* MODE of the record COMMIT writes */
    int result_err;       /* -1 ok, or api_err_t to deliver after COMMIT */
    int deliver_written;  /* serve `result` after a successful COMMIT */
    h2o_timeout_entry_t poll;
    h2o_timeout_entry_t renew;
    char keys[4][160];    /* target conn, lock, source conn, cooldown */
    char acct_key[192];
} flight_t;

struct token_service {
    worker_t *w;
    flight_t *flights;
    h2o_timeout_t poll_list;
    h2o_timeout_t renew_list;
    long lease_ms;
    uint64_t next_id;
    int replicas;         /* connected Redis replicas, per ROLE */
    uint64_t role_ms;     /* when ROLE was last asked (0: never) */
    /* the background pass (apps flavor, worker 0) */
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
    OPENSSL_cleanse(f->owner, sizeof(f->owner));
    free(f);
}

/* Hand the result to every waiter still waiting and end the flight. */
static void deliver(flight_t *f, int err, const conn_record_t *rec)
{
    waiter_t *w = f->waiters;
    f->waiters = NULL;
    while (w != NULL) {
        waiter_t *next = w->next;
        if (breq_live(w->b)) {
            if (err < 0 && (rec == NULL || rec->status != CONN_CONNECTED || rec->access_token == NULL))
                w->cb(w->b, rec != NULL ? ERR_REAUTH_REQUIRED : ERR_NOT_CONNECTED, NULL);
            else
                w->cb(w->b, err, rec);
        }
        breq_release(w->b);
        free(w);
        w = next;
    }
    flight_free(f);
}

static int open_value(flight_t *f, int mode, redisReply *v, conn_record_t *out, long *version)
{
    *version = 0;
    return store_conn_open(f->ts->w->cfg, f->org, mode, v != NULL && v->type == REDIS_REPLY_STRING ? v->str : NULL,
                           v != NULL && v->type == REDIS_REPLY_STRING ? v->len : 0, version, out);
}

static int command(flight_t *f, redis_loop_cb cb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = redis_loop_vcommand(f->ts->w->redis, cb, f, fmt, ap);
    va_end(ap);
    if (rc != 0) {
        metrics_redis_error();
        deliver(f, ERR_STORE_UNAVAILABLE, NULL);
    }
    return rc;
}

/* ===== COMMIT ===== */

static void on_reread(redisReply *r, void *data)
{
    flight_t *f = data;
    conn_record_t rec;
    long ver;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        deliver(f, ERR_STORE_UNAVAILABLE, NULL);
        return;
    }
    int rc = open_value(f, f->mode, r, &rec, &ver);
    deliver(f, rc == STORE_UNREADABLE ? ERR_RECORD_UNREADABLE : -1, rc == STORE_OK ? &rec : NULL);
    conn_record_clear(&rec);
}

static void on_waited(redisReply *r, void *data)
{
    flight_t *f = data;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < 1)
        log_event(LOG_WARN, "rotated refresh token stored, but no replica confirmed it in time", "org_id", f->org,
                  "mode", mode_name(f->mode), NULL);
    deliver(f, -1, &f->result);
}

static void on_commit(redisReply *r, void *data)
{
    flight_t *f = data;
    f->holds_lease = 0;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        metrics_redis_error();
        log_event(LOG_ERROR, "token write failed after a stripe call", "org_id", f->org, "mode", mode_name(f->mode), NULL);
        deliver(f, ERR_STORE_UNAVAILABLE, NULL);
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
    if (f->deliver_written && f->rotated && f->ts->replicas > 0 &&
        redis_loop_command(f->ts->w->redis, on_waited, f, "WAIT 1 %d", WAIT_MS) == 0)
        return;
    if (f->deliver_written)
        deliver(f, -1, &f->result);
    else
        deliver(f, f->result_err, f->result_err < 0 && f->have_cur ? &f->cur : NULL);
}

/* Write sealed (when not NULL) to the record of write_mode if it still has version
 * expected (and, source_version >= 0, the live record that one), release the lease. */
static void commit_audited(flight_t *f, int write_mode, long expected, const char *sealed, int cooldown_ms,
                           const char *member, long source_version, const char *kind, const audit_tail_t *t)
{
    char thr[16];
    char exp[24], cool[16], src[24] = "";
    audit_tail_t none;
    /* Stripe accepts a refresh token once: whoever got the new one holds the record's
     * only future, lease or not */
    int rotated_needs_no_lease = sealed != NULL && f->deliver_written && f->rotated;
    const char *target = write_mode == f->mode ? f->keys[0] : f->keys[2];
    snprintf(exp, sizeof(exp), "%ld", expected);
    snprintf(cool, sizeof(cool), "%d", cooldown_ms);
    if (source_version >= 0)
        snprintf(src, sizeof(src), "%ld", source_version);
    f->writing = sealed != NULL;
    if (t == NULL)
        audit_tail_none(&none);
    snprintf(thr, sizeof(thr), "%d", f->ts->w->cfg->refresh_failing_s);
    command(f, on_commit, "EVAL %s 5 %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s", LUA_COMMIT, target,
            f->keys[1], f->acct_key, f->keys[3], f->keys[2], sealed != NULL ? sealed : "", exp, f->owner,
            member != NULL ? member : "", cool, src, rotated_needs_no_lease ? "1" : "0", kind, thr,
            (t ? t : &none)->argv[0], (t ? t : &none)->argv[1], (t ? t : &none)->argv[2], (t ? t : &none)->argv[3],
            (t ? t : &none)->argv[4]);
    if (t == NULL)
        audit_tail_free(&none);
}

static void commit(flight_t *f, int write_mode, long expected, const char *sealed, int cooldown_ms, const char *member,
                   long source_version)
{
    commit_audited(f, write_mode, expected, sealed, cooldown_ms, member, source_version, "", NULL);
}

/* The audit tail of this flight's change, by the caller of its first request (the
 * broker itself for a background refresh). */
static void flight_tail(flight_t *f, audit_tail_t *t, const char *type, int mode, const char *details,
                        const char *out_type, const char *out_data)
{
    audit_actor_t a = {"broker", NULL};
    const char *rid = NULL;
    breq_t *b = f->waiters != NULL ? f->waiters->b : NULL;
    if (b != NULL) {
        rid = b->request_id;
        if (b->is_admin)
            a.kind = "admin";
        else if (b->bearer.kind == BEARER_KEY)
            a = (audit_actor_t){"api_key", b->bearer.key_id};
    }
    audit_tail_make(t, f->ts->w->cfg, f->org, type, mode, &a, rid, details, out_type, out_data);
}

/* Write f->result, the outcome of a successful Stripe call, to the flight's record. */
static void commit_result(flight_t *f)
{
    const config_t *cfg = f->ts->w->cfg;
    char *sealed = store_conn_seal(cfg, f->org, f->mode, &f->result);
    char member[64];
    snprintf(member, sizeof(member), "%s:%s", f->org, mode_name(f->mode));
    snprintf(f->acct_key, sizeof(f->acct_key), "%sacct:%s", cfg->redis_prefix,
             f->result.stripe_user_id ? f->result.stripe_user_id : "");
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
    commit_audited(f, f->mode, f->have_cur ? f->cur_version : 0, sealed, 0, member,
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
        command(f, on_reread, "GET %s", f->keys[0]);
        return;
    }
    f->rounds++;
    conn_record_clear(&f->result);
    f->rotated = 0;
    f->deliver_written = 0;
    f->writing = 0;
    f->result_err = -1;
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
    char ms[24];
    if (!f->holds_lease)
        return;
    renewal_t *rn = malloc(sizeof(*rn));
    if (rn == NULL)
        abort();
    rn->ts = f->ts;
    rn->id = f->id;
    snprintf(ms, sizeof(ms), "%ld", f->ts->lease_ms);
    if (redis_loop_command(f->ts->w->redis, on_renewed, rn, "EVAL %s 1 %s %s %s", LUA_RENEW, f->keys[1], f->owner,
                           ms) != 0)
        free(rn);
    h2o_timeout_link(f->ts->w->loop, &f->ts->renew_list, &f->renew);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static void on_stripe(long status, const char *body, size_t len, void *data)
{
    flight_t *f = data;
    const config_t *cfg = f->ts->w->cfg;
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
                     (base->refresh_token == NULL || strcmp(tok.refresh_token, base->refresh_token) != 0);
        n->status = CONN_CONNECTED;
        n->access_token = tok.access_token, tok.access_token = NULL;
        n->refresh_token = tok.refresh_token != NULL ? tok.refresh_token : dup_or_null(base->refresh_token);
        tok.refresh_token = NULL;
        n->stripe_user_id = dup_or_null(tok.stripe_user_id != NULL ? tok.stripe_user_id : base->stripe_user_id);
        n->stripe_publishable_key =
            dup_or_null(tok.stripe_publishable_key != NULL ? tok.stripe_publishable_key : base->stripe_publishable_key);
        n->scope = dup_or_null(tok.scope != NULL ? tok.scope : base->scope);
        n->livemode = f->mode == MODE_LIVE;
        n->connected_at = f->op == TOKEN_OP_MINT ? now : f->cur.connected_at;
        n->refreshed_at = now;
        n->expires_at = stripe_token_expires_at(&tok, cfg->flavor == FLAVOR_APPS, now);
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
        dead->status = CONN_REAUTH_REQUIRED;
        secure_free_str(dead->access_token);
        secure_free_str(dead->refresh_token);
        dead->access_token = dead->refresh_token = NULL;
        dead->expires_at = 0;
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
        f->result_err = -1; /* the old token is still valid: serve it */
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
    stripe_token_request(f->ts->w->cfg, f->mode, "refresh_token", refresh_token, &req, &url, &form);
    int rc = curl_loop_post(f->ts->w->curl, &req, on_stripe, f);
    buf_free(&url);
    buf_wipe(&form);
    if (rc != 0) {
        f->result_err = ERR_STRIPE_UNAVAILABLE;
        commit(f, f->mode, 0, NULL, 0, NULL, -1);
        return;
    }
    h2o_timeout_link(f->ts->w->loop, &f->ts->renew_list, &f->renew);
}

/* Under the lease: decide whether Stripe is needed, and call it. */
static void work(flight_t *f)
{
    const config_t *cfg = f->ts->w->cfg;
    const conn_record_t *from = f->op == TOKEN_OP_MINT ? &f->source : &f->cur;
    int present = f->op == TOKEN_OP_MINT ? f->source_version > 0 : f->have_cur;

    f->result_err = -1;
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
        deliver(f, ERR_STORE_UNAVAILABLE, NULL);
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
static void serve_old_or_fail(flight_t *f, int err)
{
    if (f->op == TOKEN_OP_REFRESH && f->have_cur && f->cur.status == CONN_CONNECTED && f->cur.access_token != NULL &&
        f->cur.expires_at > time(NULL))
        deliver(f, -1, &f->cur);
    else
        deliver(f, err, NULL);
}

static void on_acquire(redisReply *r, void *data)
{
    flight_t *f = data;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER) {
        metrics_redis_error();
        deliver(f, ERR_STORE_UNAVAILABLE, NULL);
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
                deliver(f, ERR_RECORD_UNREADABLE, NULL);
            }
            return;
        }
        f->have_cur = rc == STORE_OK;
    }
    switch (what) {
    case 0: /* changed since the caller read it: the work is done */
        metrics_refresh(mode_name(f->mode), "reused");
        deliver(f, -1, f->have_cur ? &f->cur : NULL);
        return;
    case 3: /* cooling down after a transient failure */
        serve_old_or_fail(f, ERR_STRIPE_UNAVAILABLE);
        return;
    case 2: /* another replica holds the lease: poll until it is done or gone */
        if (time_mono_ms() - f->round_ms > (uint64_t)f->ts->lease_ms + 1000) {
            serve_old_or_fail(f, ERR_STRIPE_UNAVAILABLE);
            return;
        }
        h2o_timeout_link(f->ts->w->loop, &f->ts->poll_list, &f->poll);
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
        redis_loop_command(ts->w->redis, on_role, ts, "ROLE");
    }
    char seen[24], lease[24];
    snprintf(seen, sizeof(seen), "%ld", f->seen_version);
    snprintf(lease, sizeof(lease), "%ld", f->ts->lease_ms);
    command(f, on_acquire, "EVAL %s 4 %s %s %s %s %s %s %s", LUA_ACQUIRE, f->keys[0], f->keys[1], f->keys[2],
            f->keys[3], seen, f->owner, lease);
}

/* ===== The service ===== */

token_service_t *token_service_create(worker_t *w)
{
    token_service_t *ts = calloc(1, sizeof(*ts));
    if (ts == NULL)
        return NULL;
    ts->w = w;
    ts->lease_ms = (long)w->cfg->upstream_timeout_ms + 1000;
    h2o_timeout_init(w->loop, &ts->poll_list, POLL_MS);
    h2o_timeout_init(w->loop, &ts->renew_list, (uint64_t)ts->lease_ms / 3);
    if (w->id == 0 && w->cfg->flavor == FLAVOR_APPS && w->cfg->background_refresh_s > 0) {
        h2o_timeout_init(w->loop, &ts->bg_list, (uint64_t)w->cfg->background_refresh_s * 1000);
        ts->bg_timer.cb = on_bg_tick;
        h2o_timeout_link(w->loop, &ts->bg_list, &ts->bg_timer);
    }
    return ts;
}

/* Start a flight for org/mode (none may exist yet) and return it. */
static flight_t *flight_start(token_service_t *ts, const char *org, int mode, token_op_t op, long seen_version)
{
    const char *prefix = ts->w->cfg->redis_prefix;
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
    f->result_err = -1;
    f->poll.cb = on_poll_tick;
    f->renew.cb = on_renew_tick;
    rand_token(f->owner, OWNER_BYTES);
    snprintf(f->keys[0], sizeof(f->keys[0]), "%sconn:%s:%s", prefix, f->org, mode_name(mode));
    snprintf(f->keys[1], sizeof(f->keys[1]), "%slock:%s:%s", prefix, f->org, mode_name(mode));
    snprintf(f->keys[2], sizeof(f->keys[2]), "%sconn:%s:%s", prefix, f->org,
             mode_name(op == TOKEN_OP_MINT ? MODE_LIVE : mode));
    snprintf(f->keys[3], sizeof(f->keys[3]), "%scool:%s:%s", prefix, f->org, mode_name(mode));
    snprintf(f->acct_key, sizeof(f->acct_key), "%sacct:", prefix);
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

void token_service_run(breq_t *b, int mode, token_op_t op, long seen_version, token_done_cb cb)
{
    token_service_t *ts = b->w->tokens;
    waiter_t *wt = calloc(1, sizeof(*wt));
    if (wt == NULL)
        abort();
    breq_hold(b);
    breq_deadline_stripe(b);
    wt->b = b;
    wt->cb = cb;
    flight_t *f = flight_find(ts, b->org, mode);
    if (f != NULL) {
        wt->next = f->waiters;
        f->waiters = wt;
        return;
    }
    f = flight_start(ts, b->org, mode, op, seen_version);
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
    snprintf(pattern, sizeof(pattern), "%sconn:*", ts->w->cfg->redis_prefix);
    if (redis_loop_command(ts->w->redis, on_bg_values, ts, "SCAN %s MATCH %s COUNT 200", ts->bg_cursor, pattern) != 0)
        ts->bg_running = 0;
}

static void on_bg_records(redisReply *r, void *data)
{
    token_service_t *ts = data;
    const config_t *cfg = ts->w->cfg;
    time_t now = time(NULL);
    size_t plen = strlen(cfg->redis_prefix) + 5; /* "conn:" */
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements && i < ts->bg_nkeys; i++) {
        const char *key = ts->bg_keys[i];
        char org[ORGID_LEN + 1];
        conn_record_t rec;
        long ver;
        if (strlen(key) < plen + ORGID_LEN + 2 || key[plen + ORGID_LEN] != ':')
            continue;
        memcpy(org, key + plen, ORGID_LEN);
        org[ORGID_LEN] = '\0';
        int mode = mode_parse(key + plen + ORGID_LEN + 1, strlen(key + plen + ORGID_LEN + 1));
        redisReply *v = r->element[i];
        if (mode < 0 || v->type != REDIS_REPLY_STRING ||
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
    if (redis_loop_commandv(ts->w->redis, on_bg_records, ts, (int)keys->elements + 1, argv, lens) != 0) {
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
    h2o_timeout_link(ts->w->loop, &ts->bg_list, &ts->bg_timer);
    if (ts->bg_running || !redis_loop_ready(ts->w->redis))
        return;
    ts->bg_running = 1;
    rand_token(owner, OWNER_BYTES);
    snprintf(lease, sizeof(lease), "%ld", (long)ts->w->cfg->background_refresh_s * 1000 - 500);
    if (redis_loop_command(ts->w->redis, on_bg_lease, ts, "SET %sbgrefresh %s NX PX %s", ts->w->cfg->redis_prefix,
                           owner, lease) != 0)
        ts->bg_running = 0;
}
