/* setup.h — what the setup pages share with the OAuth callback: cookie names, the
 * shape of one-time values, and the Set-Cookie builder. */
#ifndef BROKER_ROUTES_SETUP_H
#define BROKER_ROUTES_SETUP_H
#include <stddef.h>
#include "config.h"
#include "core/buf.h"

#include "http/breq.h"

/* The two cookies: the setup session, and the one that binds an OAuth state to the
 * browser that started it. */
enum { SETUP_COOKIE_SESSION = 0, SETUP_COOKIE_BROWSER = 1 };

#define SETUP_TOKEN_CHARS 43 /* base64url of 32 random bytes */

/* 1 when s[0..n) looks like a ticket/session/state value (43 base64url chars). */
int setup_token_ok(const char *s, size_t n);
/* The cookie's name: "stb_session" / "stb_oauth", with the "__Host-" prefix whenever
 * BROKER_PUBLIC_URL is https, so that a browser takes it only from this host, with
 * Secure and Path=/ and no Domain: no sibling subdomain can plant one (README "How it works", proto/threat-model.md). */
const char *setup_cookie_name(const config_t *cfg, int which);
/* Append a Set-Cookie value (Path=/, HttpOnly, SameSite=Lax, no Domain; Secure on
 * https) to out, "\n"-separated from any already there. max_age 0 deletes it. */
void setup_cookie(buf_t *out, const config_t *cfg, int which, const char *value, int max_age);
/* The request's cookie `which` into out: 0, or -1 when it is absent, sent twice or
 * not a well-formed value (out is then empty). */
int setup_cookie_get(breq_t *b, int which, char out[SETUP_TOKEN_CHARS + 1]);
/* The audit id of b's setup session: the first 16 hex characters of its cookie's
 * SHA-256 (the Redis key's hash, never the cookie); "" when there is none. */
void setup_session_id(breq_t *b, char out[17]);
#endif
