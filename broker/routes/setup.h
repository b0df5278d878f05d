/* setup.h — what the setup pages share with the OAuth callback: cookie names, the
 * shape of one-time values, and the Set-Cookie builder. */
#ifndef BROKER_ROUTES_SETUP_H
#define BROKER_ROUTES_SETUP_H
#include <stddef.h>
#include "config.h"
#include "core/buf.h"

#define SETUP_SESSION_COOKIE "stb_session"
#define SETUP_BROWSER_COOKIE "stb_oauth"

/* 1 when s[0..n) looks like a ticket/session/state value (43 base64url chars). */
int setup_token_ok(const char *s, size_t n);
/* Append a Set-Cookie value (HttpOnly, SameSite=Lax, Secure on https) to out,
 * "\n"-separated from any already there. max_age 0 deletes the cookie. */
void setup_cookie(buf_t *out, const config_t *cfg, const char *name, const char *value, const char *path, int max_age);
#endif
