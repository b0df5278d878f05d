/* oauth.h — Stripe's OAuth endpoints as the broker uses them (proto/stripe.md):
 * the authorize URL of each flavor, the token call (authorization code or refresh
 * token) and deauthorize. Builds requests only; the caller runs them on its loop.
 * Form bodies carry secrets: callers wipe them (buf_wipe) after the call started. */
#ifndef BROKER_STRIPE_OAUTH_H
#define BROKER_STRIPE_OAUTH_H
#include "config.h"
#include "core/buf.h"
#include "stripe/curl_loop.h"

/* Append the authorize URL for mode with state to out. */
void stripe_authorize_url(const config_t *cfg, int mode, const char *state, buf_t *out);

/* Fill req (and its url/form buffers) for a token call with the secret key of
 * key_mode. grant is "authorization_code" (value = code) or "refresh_token". */
void stripe_token_request(const config_t *cfg, int key_mode, const char *grant, const char *value,
                          curl_loop_req_t *req, buf_t *url, buf_t *form);

/* Fill req for POST /oauth/deauthorize of account acct in mode. */
void stripe_deauthorize_request(const config_t *cfg, int mode, const char *acct, curl_loop_req_t *req, buf_t *url,
                                buf_t *form);
#endif
