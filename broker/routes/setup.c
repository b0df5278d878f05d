/* setup.c — the setup assistant (README "How it works", proto/threat-model.md): one-time links, the setup session,
 * the Authorize form and the webhook signing secret form.
 *
 * A ticket (from an authorize link) is consumed atomically and turned into a setup
 * session in one Lua call; the session cookie carries a random value whose SHA-256 is
 * the Redis key. The CSRF token is an HMAC of the session value, so it needs no
 * storage. POST /setup/authorize creates the OAuth state (bound to this browser by a
 * second cookie whose hash is stored with it, and to this setup session by the hash of
 * the session cookie) and redirects to Stripe. Both cookies are Path=/ without Domain,
 * and on an https public URL Secure with the __Host- name prefix (setup_cookie_name).
 * GET /setup decides once what the page shows (core/setup_view.h, the view model built
 * from the session and the org's records) and writes it with small render functions
 * that decide nothing. Secrets a request keeps (the OAuth state and browser binding,
 * a posted signing secret, the CSRF token of a view) live in fixed buffers wiped whole.
 * Never logs or reflects a ticket, session, state or secret. Tested by
 * tests/it/test_browser_flow.py, tests/unit/test_setup_view.c and tests/e2e. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/cookie.h"
#include "core/crypto.h"
#include "core/form.h"
#include "core/setup_view.h"
#include "core/webhook_sig.h"
#include "core/timefmt.h"
#include "routes/pages.h"
#include "routes/params.h"
#include "routes/routes.h"
#include "routes/setup.h"
#include "store/flows.h"
#include "store/store.h"
#include "stripe/oauth.h"

#define TOKEN_BYTES 32
#define TOKEN_CHARS SETUP_TOKEN_CHARS
/* the signing secret's field as posted: each of its bytes may come escaped (%XX) */
#define SECRET_FIELD_MAX (3 * WHSIG_SECRET_MAX_BYTES)

int setup_token_ok(const char *s, size_t n)
{
    if (n != TOKEN_CHARS)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

const char *setup_cookie_name(const config_t *cfg, int which)
{
    static const char *const names[2][2] = {{"stb_session", "stb_oauth"}, {"__Host-stb_session", "__Host-stb_oauth"}};
    return names[cfg->public_https ? 1 : 0][which == SETUP_COOKIE_BROWSER];
}

void setup_cookie(buf_t *out, const config_t *cfg, int which, const char *value, int max_age)
{
    if (out->len > 0)
        buf_puts(out, "\n");
    buf_printf(out, "%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax%s", setup_cookie_name(cfg, which), value,
               max_age, cfg->public_https ? "; Secure" : "");
}

int setup_cookie_get(breq_t *b, int which, char out[SETUP_TOKEN_CHARS + 1])
{
    const h2o_iovec_t *h = breq_header(b, "cookie");
    const char *v;
    size_t n;
    out[0] = '\0';
    if (h == NULL || cookie_get(h->base, h->len, setup_cookie_name(b->w->cfg, which), &v, &n) != 1 ||
        !setup_token_ok(v, n))
        return -1;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

/* ===== The session ===== */

/* POST /setup/authorize: the OAuth state and its browser binding, kept until the state
 * is stored (both secret). */
typedef struct authz {
    char state[TOKEN_CHARS + 1];
    char browser[TOKEN_CHARS + 1];
} authz_t;

typedef struct setup_state {
    char cookie[TOKEN_CHARS + 1]; /* the session cookie value (secret) */
    flow_session_t sess;          /* the session's org, mode and return_url */
    char secret[SECRET_FIELD_MAX + 1]; /* POST /setup/webhook-secret: the signing secret (wiped whole) */
    authz_t *authz;               /* POST /setup/authorize (secret; wiped whole) */
    redisReply *conns;            /* not owned */
} setup_state_t;

static void setup_state_free(void *p)
{
    setup_state_t *s = p;
    flow_session_clear(&s->sess);
    if (s->authz != NULL) {
        explicit_bzero(s->authz, sizeof(*s->authz));
        free(s->authz);
    }
    explicit_bzero(s, sizeof(*s));
    free(s);
}

static setup_state_t *state_of(breq_t *b)
{
    if (b->state == NULL) {
        setup_state_t *s = calloc(1, sizeof(*s));
        if (s == NULL)
            abort();
        s->sess.mode = -1;
        b->state = s;
        b->state_free = setup_state_free;
    }
    return b->state;
}

/* The session cookie value into s->cookie; 0 or -1 when absent/malformed. */
static int session_cookie(breq_t *b, setup_state_t *s)
{
    return setup_cookie_get(b, SETUP_COOKIE_SESSION, s->cookie);
}

static void csrf_of(const char *session_cookie_value, char out[SV_CSRF_CHARS + 1])
{
    unsigned char mac[32];
    hmac_sha256(session_cookie_value, strlen(session_cookie_value), "stb-csrf-v1", 11, mac);
    hex_encode(mac, sizeof(mac), out);
}

static void no_session(breq_t *b)
{
    pages_error(b, 401, "Setup session needed",
                "This browser has no active setup session, or it has expired (sessions last 30 minutes).");
}

/* Read the setup session of s->cookie, then cb (store/flows.h: its record or nil). */
static void session_read(breq_t *b, breq_redis_cb cb)
{
    setup_state_t *s = b->state;
    store_cmd_t cmd;
    store_session_get(&cmd, b->w->cfg->redis_prefix, s->cookie);
    breq_redisv(b, cb, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}

void setup_session_id(breq_t *b, char out[17])
{
    char cookie[SETUP_TOKEN_CHARS + 1], hash[65];
    out[0] = '\0';
    if (setup_cookie_get(b, SETUP_COOKIE_SESSION, cookie) != 0)
        return;
    sha256_hex(cookie, strlen(cookie), hash);
    explicit_bzero(cookie, sizeof(cookie));
    memcpy(out, hash, 16);
    out[16] = '\0';
}

/* ===== GET /setup: the view model, then its HTML ===== */

static const char *mode_label(int mode)
{
    return mode == MODE_TEST ? "Test" : "Live";
}

/* One mode's facts from its stored connection (conn) and signing secret (whsec). */
static void view_mode_facts(const config_t *cfg, const char *org, int mode, const redisReply *conn,
                            const redisReply *whsec, setup_view_mode_t *m)
{
    conn_record_t rec;
    long ver;
    int rc = store_conn_open(cfg, org, mode, conn->type == REDIS_REPLY_STRING ? conn->str : NULL,
                             conn->type == REDIS_REPLY_STRING ? conn->len : 0, &ver, &rec);
    memset(m, 0, sizeof(*m));
    m->enabled = cfg->stripe[mode].enabled;
    if (!m->enabled) {
        m->state = SV_OFF;
    } else if (rc == STORE_OK && rec.status == CONN_CONNECTED) {
        m->state = SV_CONNECTED;
        snprintf(m->acct, sizeof(m->acct), "%s", rec.stripe_user_id ? rec.stripe_user_id : "");
        snprintf(m->derived_from, sizeof(m->derived_from), "%s", rec.derived_from);
        m->connected_at = rec.connected_at;
    } else if (rc == STORE_OK) {
        m->state = SV_REAUTH;
    } else if (rc == STORE_UNREADABLE) {
        m->state = SV_UNREADABLE;
    } else {
        m->state = SV_NONE;
    }
    if (m->enabled)
        m->whsec = whsec->type == REDIS_REPLY_STRING;
    conn_record_clear(&rec);
}

/* The whole view of the session s from the MGET of its org's two connections and two
 * signing secrets (r: conn test, conn live, whsec test, whsec live), decided. */
static void view_build(setup_view_t *v, const config_t *cfg, const setup_state_t *s, const redisReply *r)
{
    memset(v, 0, sizeof(*v));
    memcpy(v->org, s->sess.org, sizeof(v->org));
    v->mode = s->sess.mode;
    v->return_url = s->sess.return_url;
    v->connect_flavor = cfg->flavor == FLAVOR_CONNECT;
    for (int mode = 0; mode < MODE_COUNT; mode++)
        view_mode_facts(cfg, s->sess.org, mode, r->element[mode], r->element[2 + mode], &v->modes[mode]);
    csrf_of(s->cookie, v->csrf);
    setup_view_decide(v);
}

/* "2026-11-26T22:34:47Z" → <time datetime="…">2026-11-26 22:34 UTC</time> */
static void render_time(buf_t *out, time_t t)
{
    char ts[21];
    time_rfc3339(t, ts);
    buf_printf(out, "<time datetime=\"%s\">%.10s %.5s UTC</time>", ts, ts, ts + 11);
}

static void render_lead(buf_t *out, const setup_view_t *v)
{
    buf_puts(out, "<p class=\"lead\">Salesforce org <strong class=\"code\">");
    page_text(out, v->org);
    buf_printf(out, "</strong> · %s mode</p>\n", mode_label(v->mode));
}

/* What happened, and what to do next. */
static void render_notice(buf_t *out, const setup_view_t *v)
{
    const char *mname = mode_name(v->mode), *acct = v->modes[v->mode].acct;
    switch (v->notice) {
    case SV_NOTICE_COMPLETE:
        buf_printf(out, "<div class=\"notice notice-ok\" role=\"status\">\n<p><strong>Setup complete for %s mode."
                        "</strong> Salesforce can now get Stripe access tokens for account <strong class=\"code\">",
                   mname);
        page_text(out, acct);
        buf_puts(out, "</strong>.</p>\n<p>Next: choose <em>Finish</em> to return to Salesforce.</p>\n</div>\n");
        break;
    case SV_NOTICE_CONNECTED:
        buf_printf(out, "<div class=\"notice notice-ok\" role=\"status\">\n<p><strong>Connected</strong> to Stripe "
                        "account <strong class=\"code\">");
        page_text(out, acct);
        buf_printf(out, "</strong> in %s mode.</p>\n<p>Next: store the webhook signing secret (step 2).</p>\n"
                        "</div>\n",
                   mname);
        break;
    case SV_NOTICE_REAUTH:
        buf_printf(out, "<div class=\"notice notice-warn\" role=\"status\">\n<p><strong>The %s mode connection "
                        "needs a new authorization.</strong> Payments in Salesforce will fail until you authorize "
                        "again.</p>\n<p>Next: choose <em>Authorize with Stripe</em> (step 1).</p>\n</div>\n",
                   mname);
        break;
    default:
        buf_puts(out, "<div class=\"notice notice-info\" role=\"status\">\n<p>Not connected yet. Next: choose test "
                      "or live mode and <em>Authorize with Stripe</em> (step 1).</p>\n</div>\n");
    }
}

/* One step of the indicator: its name and a state said in words (not only colour). */
static void render_step(buf_t *out, const char *name, int state)
{
    static const char *const cls[] = {"todo", "current", "done"}, *const words[] = {"To do", "Next", "Done"};
    buf_printf(out, "<li class=\"%s\"%s><span><span class=\"step-name\">%s</span><span class=\"step-state\">%s</span>"
                    "</span></li>\n",
               cls[state], state == SV_CURRENT ? " aria-current=\"step\"" : "", name, words[state]);
}

static void render_steps(buf_t *out, const setup_view_t *v)
{
    buf_puts(out, "<ol class=\"progress\" aria-label=\"Setup steps\">\n");
    render_step(out, "Authorize with Stripe", v->steps[SV_STEP_AUTHORIZE]);
    render_step(out, "Webhook signing secret", v->steps[SV_STEP_WHSEC]);
    render_step(out, "Finish", v->steps[SV_STEP_FINISH]);
    buf_puts(out, "</ol>\n");
}

/* One mode's rows of the status list: its connection, and its signing secret when enabled. */
static void render_mode_status(buf_t *out, int mode, const setup_view_mode_t *m)
{
    buf_printf(out, "<dt>%s mode</dt><dd>", mode_label(mode));
    switch (m->state) {
    case SV_OFF:
        buf_puts(out, "<span class=\"muted\">Not available on this service</span>");
        break;
    case SV_CONNECTED:
        buf_puts(out, "<span class=\"ok\">Connected</span> to Stripe account <strong class=\"code\">");
        page_text(out, m->acct);
        buf_puts(out, "</strong>");
        if (m->derived_from[0])
            buf_printf(out, " (from the %s mode authorization)", m->derived_from);
        buf_puts(out, " <span class=\"muted\">since ");
        render_time(out, m->connected_at);
        buf_puts(out, "</span>");
        break;
    case SV_REAUTH:
        buf_puts(out, "<span class=\"warn\">Reauthorization required</span>: Stripe revoked this authorization; "
                      "authorize again in step 1.");
        break;
    case SV_UNREADABLE:
        buf_puts(out, "<span class=\"warn\">Stored connection unreadable</span>: authorize again in step 1, or ask "
                      "the team that runs this service.");
        break;
    default:
        buf_puts(out, "Not connected");
    }
    buf_puts(out, "</dd>\n");
    if (m->enabled)
        buf_printf(out, "<dt>%s webhook secret</dt><dd>%s</dd>\n", mode_label(mode),
                   m->whsec ? "<span class=\"ok\">Stored</span>" : "Not stored");
}

static void render_status(buf_t *out, const setup_view_t *v)
{
    buf_puts(out, "<section aria-labelledby=\"status-h\">\n<h2 id=\"status-h\">Status</h2>\n<dl>\n"
                  "<dt>Salesforce org</dt><dd class=\"code\">");
    page_text(out, v->org);
    buf_puts(out, "</dd>\n");
    for (int mode = 0; mode < MODE_COUNT; mode++)
        render_mode_status(out, mode, &v->modes[mode]);
    buf_puts(out, "</dl>\n</section>\n");
}

/* Step 1: the mode (the session's preselected) and the button to Stripe. */
static void render_authorize_form(buf_t *out, const setup_view_t *v, const char *base)
{
    buf_printf(out, "<section aria-labelledby=\"auth-h\">\n<h2 id=\"auth-h\">1. Authorize with Stripe</h2>\n"
                    "<form method=\"post\" action=\"%s/setup/authorize\">\n",
               base);
    buf_printf(out, "<input type=\"hidden\" name=\"csrf\" value=\"%s\">\n", v->csrf);
    buf_puts(out, "<fieldset><legend>Mode</legend>\n");
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        if (!v->modes[mode].enabled)
            continue;
        buf_printf(out,
                   "<label class=\"option\"><input type=\"radio\" name=\"mode\" id=\"mode-%s\" value=\"%s\"%s>"
                   "<span><span class=\"option-name\">%s mode</span><span class=\"option-hint\">%s</span></span>"
                   "</label>\n",
                   mode_name(mode), mode_name(mode), mode == v->mode ? " checked" : "", mode_label(mode),
                   mode == MODE_TEST ? "Stripe test data, no real payments. Recommended while you set up and test."
                                     : "Real payments. Choose it when you are ready to process real transactions.");
    }
    buf_puts(out, "</fieldset>\n");
    if (v->switch_hint)
        buf_puts(out, "<p class=\"hint\">Once live mode is authorized, switching back to test mode needs no new "
                      "authorization.</p>\n");
    buf_printf(out, "<p class=\"hint\">Stripe opens to sign in and approve access for the chosen mode, then brings "
                    "you back here.</p>\n<p class=\"actions\"><button type=\"submit\" id=\"authorize\"%s>Authorize "
                    "with Stripe</button></p>\n</form>\n</section>\n",
               v->authorize_secondary ? " class=\"secondary\"" : "");
}

/* Step 2: the signing secret of the session's mode. */
static void render_secret_form(buf_t *out, const setup_view_t *v, const char *base)
{
    const char *mname = mode_name(v->mode);
    buf_puts(out, "<section aria-labelledby=\"whsec-h\">\n<h2 id=\"whsec-h\">2. Webhook signing secret</h2>\n");
    buf_printf(out, "<p>Stripe signs the payment events it sends to Salesforce (charge.succeeded, charge.captured, "
                    "charge.refunded). In the Stripe Dashboard, open <em>Developers › Webhooks</em>, select the "
                    "%s mode endpoint that points at Salesforce and reveal its <em>Signing secret</em>.</p>\n",
               mname);
    buf_printf(out, "<form method=\"post\" action=\"%s/setup/webhook-secret\">\n", base);
    buf_printf(out, "<input type=\"hidden\" name=\"csrf\" value=\"%s\">\n", v->csrf);
    buf_printf(out, "<input type=\"hidden\" name=\"mode\" value=\"%s\">\n", mname);
    buf_printf(out, "<label for=\"signing_secret\">Signing secret for %s mode</label>\n"
                    "<p class=\"hint\" id=\"signing_secret-hint\">Starts with whsec_. %s</p>\n",
               mname, v->stored ? "A secret is already stored; saving a new one replaces it."
                                : "It is stored encrypted and never shown again.");
    buf_puts(out, "<input type=\"password\" id=\"signing_secret\" name=\"signing_secret\" autocomplete=\"off\" "
                  "spellcheck=\"false\" aria-describedby=\"signing_secret-hint\" required>\n"
                  "<p class=\"actions\"><button type=\"submit\" id=\"save-secret\"");
    buf_puts(out, v->save_secondary ? " class=\"secondary\"" : "");
    buf_puts(out, ">Save signing secret</button></p>\n</form>\n</section>\n");
}

/* Step 3: back to Salesforce. */
static void render_finish(buf_t *out, const setup_view_t *v)
{
    buf_puts(out, "<section aria-labelledby=\"finish-h\">\n<h2 id=\"finish-h\">3. Finish</h2>\n");
    if (v->return_url != NULL) {
        if (v->finish_later_hint)
            buf_puts(out, "<p class=\"hint\">You can finish now and complete the remaining steps later with a new "
                          "setup link.</p>\n");
        buf_puts(out, "<p class=\"actions\"><a class=\"button\" id=\"finish\" href=\"");
        page_text(out, v->return_url);
        buf_puts(out, "\">Finish and return to Salesforce</a></p>\n");
    } else {
        buf_puts(out, "<p>You can close this window and return to Salesforce.</p>\n");
    }
    buf_puts(out, "</section>\n");
}

static void render_setup(breq_t *b, redisReply *r)
{
    const config_t *cfg = b->w->cfg;
    setup_view_t v;
    buf_t out = {0};
    view_build(&v, cfg, b->state, r);
    page_begin(&out, cfg->public_path, "Connect Stripe to Salesforce");
    render_lead(&out, &v);
    render_notice(&out, &v);
    render_steps(&out, &v);
    render_status(&out, &v);
    render_authorize_form(&out, &v, cfg->public_path);
    render_secret_form(&out, &v, cfg->public_path);
    render_finish(&out, &v);
    page_end(&out);
    setup_view_clear(&v);
    breq_html(b, 200, out.p, out.len, NULL);
    buf_wipe(&out);
}

static void on_session_for_page(breq_t *b, redisReply *r);

static void on_page_data(breq_t *b, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        breq_error(b, ERR_STORE_UNAVAILABLE, NULL);
        return;
    }
    render_setup(b, r);
}

static void on_session_for_page(breq_t *b, redisReply *r)
{
    setup_state_t *s = b->state;
    if (r->type != REDIS_REPLY_STRING || flow_session_parse(r->str, r->len, &s->sess) != 0) {
        no_session(b);
        return;
    }
    snprintf(b->org, sizeof(b->org), "%s", s->sess.org);
    const char *org = s->sess.org;
    breq_redis(b, on_page_data, "MGET %s %s %s %s", breq_key(b, KEY_CONN, org, mode_name(MODE_TEST)),
               breq_key(b, KEY_CONN, org, mode_name(MODE_LIVE)), breq_key(b, KEY_WHSEC, org, mode_name(MODE_TEST)),
               breq_key(b, KEY_WHSEC, org, mode_name(MODE_LIVE)));
}

static void on_ticket(breq_t *b, redisReply *r)
{
    setup_state_t *s = b->state;
    if (r->type != REDIS_REPLY_STRING || flow_session_parse(r->str, r->len, &s->sess) != 0) {
        pages_error(b, 400, "This setup link cannot be used",
                    "This setup link was already used, has expired (links are valid for 10 minutes), or is not known to this service.");
        return;
    }
    snprintf(b->org, sizeof(b->org), "%s", s->sess.org);
    buf_t cookie = {0};
    setup_cookie(&cookie, b->w->cfg, SETUP_COOKIE_SESSION, s->cookie, SESSION_TTL_S);
    breq_redirect(b, "/setup", cookie.p);
    buf_wipe(&cookie);
}

void setup_open(breq_t *b)
{
    setup_state_t *s = state_of(b);
    char *ticket = NULL;
    int rc = breq_query(b, "ticket", &ticket);
    if (rc < 0 || (rc == 1 && !setup_token_ok(ticket, strlen(ticket)))) {
        secure_free_str(ticket);
        pages_error(b, 400, "This setup link cannot be used",
                    "This setup link was already used, has expired (links are valid for 10 minutes), or is not known to this service.");
        return;
    }
    if (rc == 1) {
        store_cmd_t cmd;
        rand_token(s->cookie, TOKEN_BYTES);
        store_ticket_redeem(&cmd, b->w->cfg->redis_prefix, ticket, s->cookie, SESSION_TTL_S);
        secure_free_str(ticket);
        breq_redisv(b, on_ticket, cmd.argc, cmd.argv, cmd.lens);
        store_cmd_free(&cmd);
        return;
    }
    if (session_cookie(b, s) != 0) {
        no_session(b);
        return;
    }
    session_read(b, on_session_for_page);
}

/* ===== POST forms: common checks ===== */

/* Read the form body, the session cookie and check the CSRF token. Returns the
 * decoded form body fields via form_get on the body, or -1 (answered). */
static int form_begin(breq_t *b, const char **body, size_t *len)
{
    setup_state_t *s = state_of(b);
    char *csrf = NULL, expect[65];
    *body = breq_body(b, len);
    if (session_cookie(b, s) != 0) {
        no_session(b);
        return -1;
    }
    csrf_of(s->cookie, expect);
    if (form_get(*body, *len, "csrf", &csrf) != 1 || !ct_equal(csrf, strlen(csrf), expect, 64)) {
        free(csrf);
        pages_error_setup(b, 403, "This form has expired",
                    "The form did not carry a valid security token (it may be from an older page). Nothing was changed.");
        return -1;
    }
    free(csrf);
    return 0;
}

/* ===== POST /setup/authorize ===== */

static void on_state_stored(breq_t *b, redisReply *r)
{
    setup_state_t *s = b->state;
    authz_t *a = s->authz;
    buf_t url = {0}, cookie = {0};
    stripe_authorize_url(b->w->cfg, s->sess.mode, a->state, &url);
    setup_cookie(&cookie, b->w->cfg, SETUP_COOKIE_BROWSER, a->browser, STATE_TTL_S);
    breq_redirect(b, url.p, cookie.p);
    buf_wipe(&url);
    buf_wipe(&cookie);
}

/* The session a POST form belongs to, read from Redis: fills s and b->org, and makes
 * the mode the form chose (s->sess.mode before the read, -1 for none) win over the
 * session's. Returns 0, or -1 after answering 401. */
static int session_loaded(breq_t *b, redisReply *r)
{
    setup_state_t *s = b->state;
    int chosen = s->sess.mode;
    if (r->type != REDIS_REPLY_STRING || flow_session_parse(r->str, r->len, &s->sess) != 0) {
        no_session(b);
        return -1;
    }
    snprintf(b->org, sizeof(b->org), "%s", s->sess.org);
    if (chosen >= 0)
        s->sess.mode = chosen;
    b->mode = s->sess.mode;
    return 0;
}

static void on_session_for_authorize(breq_t *b, redisReply *r)
{
    setup_state_t *s = b->state;
    if (session_loaded(b, r) != 0)
        return;

    authz_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        abort();
    rand_token(a->state, TOKEN_BYTES);
    rand_token(a->browser, TOKEN_BYTES);
    s->authz = a;

    /* the state is bound to this browser (the hash of a cookie set with it) and to
     * this setup session (the hash of the session cookie, as in the session's key) */
    store_cmd_t cmd;
    store_state_put(&cmd, b->w->cfg->redis_prefix, a->state, a->browser, s->cookie, &s->sess, STATE_TTL_S);
    breq_redisv(b, on_state_stored, cmd.argc, cmd.argv, cmd.lens);
    store_cmd_free(&cmd);
}

void setup_authorize(breq_t *b)
{
    const char *body;
    size_t len;
    char *mode = NULL;
    if (form_begin(b, &body, &len) != 0)
        return;
    setup_state_t *s = b->state;
    int rc = form_get(body, len, "mode", &mode);
    if (rc < 0 || (rc == 1 && parse_mode_value(b, mode) < 0)) {
        free(mode);
        if (rc < 0)
            pages_error_setup(b, 400, "This form cannot be used", "The form was malformed. Nothing was changed.");
        return;
    }
    s->sess.mode = rc == 1 ? b->mode : -1;
    free(mode);
    session_read(b, on_session_for_authorize);
}

/* ===== POST /setup/webhook-secret ===== */

static void on_secret_stored(breq_t *b, redisReply *r)
{
    breq_redirect(b, "/setup", NULL);
}

static void on_session_for_secret(breq_t *b, redisReply *r)
{
    setup_state_t *s = b->state;
    if (session_loaded(b, r) != 0)
        return;
    if (!b->w->cfg->stripe[b->mode].enabled) {
        pages_error_setup(b, 400, "This mode is not available", "That Stripe mode is not configured on this service. Nothing was changed.");
        return;
    }
    whsec_store(b, s->secret, on_secret_stored);
}

void setup_webhook_secret(breq_t *b)
{
    const char *body;
    size_t len;
    char *mode = NULL;
    if (form_begin(b, &body, &len) != 0)
        return;
    setup_state_t *s = b->state;
    int mrc = form_get(body, len, "mode", &mode);
    int src = form_get_buf(body, len, "signing_secret", s->secret, sizeof(s->secret));
    s->sess.mode = mrc == 1 ? mode_parse(mode, strlen(mode)) : -1;
    free(mode);
    int ok = src == 1 && whsig_secret_valid(s->secret, strlen(s->secret)) && (mrc != 1 || s->sess.mode >= 0);
    if (!ok) {
        pages_error_setup(b, 400, "The signing secret was not saved",
                    "Nothing was saved: the signing secret must be pasted exactly as the Stripe Dashboard shows it, with no spaces (it starts with whsec_).");
        return;
    }
    session_read(b, on_session_for_secret);
}

void setup_style(breq_t *b)
{
    breq_text(b, 200, "text/css; charset=utf-8", PAGES_CSS, strlen(PAGES_CSS));
}
