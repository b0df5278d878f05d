/* webhook_sig.h — Stripe-Signature verification (scheme v1; proto/threat-model.md, "Revocation").
 * Header "t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]"; signed payload "<t>.<body>";
 * HMAC-SHA256 with the signing secret as key; every v1 compared in constant time. */
#ifndef BROKER_CORE_WEBHOOK_SIG_H
#define BROKER_CORE_WEBHOOK_SIG_H
#include <stddef.h>
#include <time.h>

#define WEBHOOK_TOLERANCE_S 300
#define WHSIG_SECRET_MAX_BYTES 512 /* a signing secret the broker stores */

enum { WHSIG_OK = 0, WHSIG_MALFORMED = -1, WHSIG_NO_V1 = -2, WHSIG_STALE = -3, WHSIG_MISMATCH = -4 };

int whsig_verify(const char *header, size_t hlen, const char *payload, size_t plen,
                 const char *secret, time_t now, long tolerance_s);
/* 1 when s (n bytes) can be a signing secret to store: 1 to WHSIG_SECRET_MAX_BYTES
 * printable ASCII characters, no space (pasted exactly as the Stripe Dashboard shows it). */
int whsig_secret_valid(const char *s, size_t n);
/* A short human reason for a WHSIG_ code ("timestamp outside the tolerance", …). */
const char *whsig_reason(int rc);
#endif
