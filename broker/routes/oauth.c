/* oauth.c — GET /oauth/callback, where Stripe sends the admin back (README "How it works", proto/threat-model.md).
 *
 * Order matters: the state is consumed with GETDEL *before* the code is exchanged,
 * because Stripe revokes the whole connection when a code is used twice (a reload or
 * a browser retry must never reach Stripe again). The state must come back to the
 * browser that started it (the stb_oauth cookie's hash is stored with the state) and
 * in the setup session that created it (the session cookie's hash is stored too), so
 * a planted browser cookie alone cannot bind a Stripe account to another org.
 * Then exactly one POST /oauth/token, and the connection is written (a new live one
 * with the test connection minted from live for another account deleted).
 * Never logs or reflects the code, the state or a token. Tested by
 * tests/it/test_browser_flow.py (replay, other browser or session, declined, expired). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/crypto.h"
#include "core/stripe_resp.h"
#include "log.h"
#include "metrics.h"
#include "routes/pages.h"
#include "routes/routes.h"
#include "routes/setup.h"
#include "store/flows.h"
#include "store/store.h"
#include "stripe/oauth.h"

#define CODE_MAX 256

typedef struct callback {
    char *code;   /* secret */
    char state[SETUP_TOKEN_CHARS + 1]; /* the OAuth state until it is consumed (secret) */
    char *sealed; /* the new connection, sealed, until it is written */
    char browser[65]; /* SHA-256 hex of the browser cookie, "" when absent */
    char session[65]; /* SHA-256 hex of the session cookie, "" when absent */
    char acct[128];
} callback_t;

static void callback_free(void *p)
{
    callback_t *c = p;
    secure_free_str(c->code);
    free(c->sealed); /* sealed: not a secret in this form */
    explicit_bzero(c, sizeof(*c));
    free(c);
}

static void bad_state(breq_t *b)
{
    pages_error_setup(b, 400, "This authorization cannot be completed",
                      "This answer from Stripe was already used, has expired, or belongs to a setup started in "
                      "another browser. Nothing was changed.");
}

static void on_stored(breq_t *b, redisReply *r)
{
    callback_t *c = b->state;
    buf_t cookie = {0};
    char mode[8];
    snprintf(mode, sizeof(mode), "%s", mode_name(b->mode));
    log_event(LOG_INFO, "connection authorized", "org_id", b->org, "mode", mode, "stripe_user_id", c->acct, NULL);
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->integer == 1)
        log_event(LOG_INFO, "test connection minted from live dropped: live is now another account", "org_id",
                  b->org, "mode", mode_name(MODE_TEST), NULL);
    setup_cookie(&cookie, b->w->cfg, SETUP_COOKIE_BROWSER, "", 0);
    breq_redirect(b, "/setup", cookie.p);
    buf_free(&cookie);
}

/* Write the new connection (c->sealed); drop_acct != NULL: in the same write, delete the
 * test connection (of that account) if it still has version drop_ver. */
static void store_new(breq_t *b, const char *drop_acct, long drop_ver)
{
    callback_t *c = b->state;
    char sid[17];
    audit_tail_t t;
    buf_t d = {0};
    audit_actor_t actor = {"setup_session", sid};
    snprintf(sid, sizeof(sid), "%.16s", c->session); /* an id: the first 64 bits of the cookie's hash */
    buf_puts(&d, "{\"stripe_user_id\":");
    buf_json_str(&d, c->acct, strlen(c->acct));
    buf_printf(&d, ",\"flavor\":\"%s\"}", b->w->cfg->flavor == FLAVOR_APPS ? "apps" : "connect");
    audit_tail_make(&t, b->w->cfg, b->org, "connection.authorized", b->mode, &actor, b->request_id, d.p,
                    "connection.authorized", d.p);
    store_conn_drop_t drop = {MODE_TEST, drop_acct, drop_ver};
    store_cmd_t cmd;
    store_conn_put(&cmd, b->w->cfg->redis_prefix, b->org, b->mode, c->sealed, c->acct, STORE_ANY_VERSION,
                   drop_acct != NULL ? &drop : NULL, &t);
    breq_redisv(b, on_stored, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
    audit_tail_free(&t);
    buf_free(&d);
}

/* A new live authorization: a test connection minted from live for another Stripe
 * account would keep serving that account's test token, so it goes in the same write;
 * the next test request mints one for the new account. One minted for the same
 * account stays (its token still works), and so does one authorized on its own. */
static void on_test_conn(breq_t *b, redisReply *r)
{
    callback_t *c = b->state;
    conn_record_t test;
    long ver = 0;
    int rc = store_conn_open(b->w->cfg, b->org, MODE_TEST, r->type == REDIS_REPLY_STRING ? r->str : NULL,
                             r->type == REDIS_REPLY_STRING ? r->len : 0, &ver, &test);
    const char *acct = test.stripe_user_id != NULL ? test.stripe_user_id : "";
    int other = rc == STORE_OK && strcmp(test.derived_from, mode_name(MODE_LIVE)) == 0 && strcmp(acct, c->acct) != 0;
    store_new(b, other ? acct : NULL, ver);
    conn_record_clear(&test);
}

static void on_token(breq_t *b, long status, const char *body, size_t len)
{
    callback_t *c = b->state;
    stripe_token_t tok = {0};
    char err[64] = "";
    stripe_outcome_t o = stripe_token_parse(status, body, len, &tok, err);
    metrics_stripe("token", stripe_outcome_name(o));
    if (o != STRIPE_OK) {
        log_event(LOG_WARN, "stripe code exchange failed", "org_id", b->org, "mode", mode_name(b->mode), "outcome",
                  stripe_outcome_name(o), "error", err, NULL);
        stripe_token_clear(&tok);
        if (o == STRIPE_TRANSIENT)
            pages_error_setup(b, 502, "Stripe is not answering",
                              "Stripe did not complete the authorization. Nothing was stored.");
        else
            pages_error_setup(b, 400, "Stripe refused the authorization",
                              "Stripe did not accept this authorization (it may have taken longer than 5 minutes). "
                              "Nothing was stored.");
        return;
    }
    time_t now = time(NULL);
    conn_record_t rec = {0};
    conn_record_from_token(&rec, &tok, NULL, b->mode == MODE_LIVE, b->w->cfg->flavor == FLAVOR_APPS, now, now);
    snprintf(c->acct, sizeof(c->acct), "%s", rec.stripe_user_id ? rec.stripe_user_id : "");
    c->sealed = store_conn_seal(b->w->cfg, b->org, b->mode, &rec);
    conn_record_clear(&rec);
    stripe_token_clear(&tok);
    if (b->w->cfg->flavor == FLAVOR_CONNECT && b->mode == MODE_LIVE)
        breq_redis(b, on_test_conn, "GET %s", breq_key(b, KEY_CONN, b->org, mode_name(MODE_TEST)));
    else
        store_new(b, NULL, 0);
}

/* The consumed state (r: GETDEL's reply) binds this browser and this setup session;
 * on success b->org and b->mode are its org and mode. 1 if so, else 0. */
static int state_bound(breq_t *b, redisReply *r)
{
    callback_t *c = b->state;
    if (r->type != REDIS_REPLY_STRING)
        return 0;
    flow_state_t st;
    int ok = flow_state_parse(r->str, r->len, &st) == 0 && c->browser[0] != '\0' &&
             ct_equal(st.browser, 64, c->browser, 64) && c->session[0] != '\0' &&
             ct_equal(st.session, 64, c->session, 64);
    if (ok) {
        memcpy(b->org, st.org, ORGID_LEN + 1);
        b->mode = st.mode;
        ok = b->mode >= 0 && b->w->cfg->stripe[b->mode].enabled;
    }
    return ok;
}

static void on_state(breq_t *b, redisReply *r)
{
    callback_t *c = b->state;
    if (!state_bound(b, r)) {
        bad_state(b);
        return;
    }
    curl_loop_req_t req;
    buf_t url = {0}, form = {0};
    stripe_token_request(b->w->cfg, b->mode, "authorization_code", c->code, &req, &url, &form);
    breq_stripe(b, &req, on_token);
    buf_free(&url);
    buf_wipe(&form);
}

/* The declined answer is shown only for a state of this browser and session, like the
 * code's: otherwise anyone could present made-up cookies and get a 200 page. */
static void on_declined(breq_t *b, redisReply *r)
{
    if (!state_bound(b, r)) {
        bad_state(b);
        return;
    }
    buf_t out = {0};
    page_begin(&out, b->w->cfg->public_path, "Authorization declined");
    buf_puts(&out, "<div class=\"notice notice-warn\" role=\"status\">\n<p>You declined the authorization in "
                   "Stripe, so nothing was connected and nothing was stored.</p>\n</div>\n"
                   "<section aria-labelledby=\"next-h\">\n<h2 id=\"next-h\">What to do next</h2>\n"
                   "<p>To connect Stripe, go back to the setup page and choose <em>Authorize with Stripe</em> "
                   "again, then approve access on Stripe. If the setup page says that the session has ended, open "
                   "a new setup link from Salesforce.</p>\n");
    buf_printf(&out, "<p class=\"actions\"><a class=\"button\" href=\"%s/setup\">Back to the setup page</a></p>\n"
                     "</section>\n",
               b->w->cfg->public_path);
    page_end(&out);
    breq_html(b, 200, out.p, out.len, NULL);
    buf_free(&out);
}

/* Consume c->state (store/flows.h), then cb with its record or nil. */
static void state_take(breq_t *b, breq_redis_cb cb)
{
    callback_t *c = b->state;
    store_cmd_t cmd;
    store_state_take(&cmd, b->w->cfg->redis_prefix, c->state);
    explicit_bzero(c->state, sizeof(c->state));
    breq_redisv(b, cb, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}

void oauth_callback(breq_t *b)
{
    char *state = NULL, *code = NULL, *error = NULL;
    int src = breq_query(b, "state", &state), crc = breq_query(b, "code", &code), erc = breq_query(b, "error", &error);
    callback_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    b->state = c;
    b->state_free = callback_free;

    int state_ok = src == 1 && setup_token_ok(state, strlen(state));
    if (state_ok)
        memcpy(c->state, state, SETUP_TOKEN_CHARS + 1);
    secure_free_str(state);
    int declined = erc == 1 && strcmp(error, "access_denied") == 0;
    if (erc == 1 && !declined) {
        /* Stripe reported an error: store nothing */
        free(error);
        secure_free_str(code);
        pages_error_setup(b, 400, "Stripe reported an error",
                          "Stripe did not complete the authorization. Nothing was stored.");
        return;
    }
    free(error);
    if (!state_ok || erc < 0 ||
        (!declined && (crc != 1 || strlen(code) == 0 || strlen(code) > CODE_MAX))) {
        secure_free_str(code);
        bad_state(b);
        return;
    }
    char tmp[SETUP_TOKEN_CHARS + 1];
    if (setup_cookie_get(b, SETUP_COOKIE_BROWSER, tmp) == 0)
        sha256_hex(tmp, strlen(tmp), c->browser);
    if (setup_cookie_get(b, SETUP_COOKIE_SESSION, tmp) == 0)
        sha256_hex(tmp, strlen(tmp), c->session);
    explicit_bzero(tmp, sizeof(tmp));
    if (declined) {
        /* the admin declined: consume the state, store nothing */
        secure_free_str(code);
        state_take(b, on_declined);
        return;
    }
    c->code = code;
    /* consume first, whatever the browser: a state seen once is never good again */
    state_take(b, on_state);
}
