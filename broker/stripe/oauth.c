/* oauth.c — Stripe OAuth request builders (see oauth.h).
 * Knows the two flavors: connect (connect.stripe.com, client_secret in the form) and
 * apps (marketplace authorize, api.stripe.com/v1/oauth/token with HTTP Basic).
 * Never logs; the secret key goes only into the request. Tested by the browser-flow
 * and refresh integration tests against the simulator. */
#include "stripe/oauth.h"
#include <string.h>
#include "core/form.h"

static int is_loopback_http(const char *url)
{
    return strncmp(url, "http://", 7) == 0;
}

void stripe_authorize_url(const config_t *cfg, int mode, const char *state, buf_t *out)
{
    buf_t redirect = {0};
    buf_printf(&redirect, "%s/oauth/callback", cfg->public_url);
    if (cfg->flavor == FLAVOR_APPS) {
        buf_printf(out, "%s/oauth/v2/authorize?", cfg->marketplace_url);
        form_append(out, "client_id", cfg->stripe[mode].client_id);
    } else {
        buf_printf(out, "%s/oauth/authorize?", cfg->connect_url);
        form_append(out, "response_type", "code");
        form_append(out, "client_id", cfg->stripe[mode].client_id);
        form_append(out, "scope", "read_write");
    }
    form_append(out, "redirect_uri", redirect.p);
    form_append(out, "state", state);
    buf_free(&redirect);
}

void stripe_token_request(const config_t *cfg, int key_mode, const char *grant, const char *value,
                          curl_loop_req_t *req, buf_t *url, buf_t *form)
{
    const char *base = cfg->flavor == FLAVOR_APPS ? cfg->api_url : cfg->connect_url;
    memset(req, 0, sizeof(*req));
    buf_printf(url, "%s%s", base, cfg->flavor == FLAVOR_APPS ? "/v1/oauth/token" : "/oauth/token");
    form_append(form, "grant_type", grant);
    form_append(form, strcmp(grant, "authorization_code") == 0 ? "code" : "refresh_token", value);
    if (cfg->flavor == FLAVOR_APPS)
        req->basic_user = cfg->stripe[key_mode].secret_key;
    else
        form_append(form, "client_secret", cfg->stripe[key_mode].secret_key);
    req->url = url->p;
    req->form = form->p;
    req->timeout_ms = cfg->upstream_timeout_ms;
    req->allow_http = is_loopback_http(base);
}

void stripe_deauthorize_request(const config_t *cfg, int mode, const char *acct, curl_loop_req_t *req, buf_t *url,
                                buf_t *form)
{
    memset(req, 0, sizeof(*req));
    buf_printf(url, "%s/oauth/deauthorize", cfg->connect_url);
    form_append(form, "client_id", cfg->stripe[mode].client_id);
    form_append(form, "stripe_user_id", acct);
    req->url = url->p;
    req->form = form->p;
    req->bearer = cfg->stripe[mode].secret_key;
    req->timeout_ms = cfg->upstream_timeout_ms;
    req->allow_http = is_loopback_http(cfg->connect_url);
}
