/* ratelimit.h — the request rate limits of the HTTP side (README "Configuration"):
 * per org once the bearer checked out, per client address and key id for failed
 * authentications, and the browser-page limit. Counters are per worker thread, without
 * locks (core/ratelimit.h); a client spread over N workers gets up to N times a limit.
 * Each check that refuses answers the request itself: 429 with Retry-After.
 * Called only on the request's worker, while the request is live. */
#ifndef BROKER_HTTP_RATELIMIT_H
#define BROKER_HTTP_RATELIMIT_H
#include "http/breq.h"

/* A failed authentication (e: 401/403): counted for the client address and the key id
 * (when the bearer has one); answered e with message, or 429 once either is over. */
void rate_auth_failed(breq_t *b, api_err_t e, const char *message);
/* Charge one request to b->org's allowance (its bearer checked out). Returns 1 when b
 * was answered 429, else 0. */
int rate_org_charge(breq_t *b);
/* A browser page: per flow credential (setup session / OAuth state cookie) or, without
 * one, per client address. Returns 1 when b was answered 429, else 0. */
int rate_page_check(breq_t *b);
/* After b was answered status: a page whose flow credential did not hold (4xx) is a
 * failed authentication of its address. */
void rate_after_answer(breq_t *b, int status);
#endif
