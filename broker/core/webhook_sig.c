/* webhook_sig.c — verification of Stripe-Signature headers (scheme v1).
 *
 * Owns: parsing "t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]" and checking it. The header
 * must have exactly one t (decimal seconds, no sign); other schemes are ignored;
 * every v1 is compared with the expected HMAC-SHA256("<t>.<payload>") in constant
 * time, and all of them are compared even after a match (during a secret roll Stripe
 * sends two). The timestamp must be within tolerance in both directions.
 * Never: logs the header, the secret or the expected signature; short-circuits on
 * signature contents.
 * Tested by: tests/unit/test_webhook_sig.c and tests/fuzz/fuzz_webhook_sig.c. */
#include "webhook_sig.h"

#include <stdlib.h>
#include <string.h>

#include "crypto.h"

#define WHSIG_T_MAX_DIGITS 15 /* far beyond any real time; keeps arithmetic exact */
#define WHSIG_HEX_LEN 64

typedef struct whsig_parsed {
    const char *t;      /* the t value as sent (it is part of the signed payload) */
    size_t tlen;
    long long t_s;
    const char *v1[16]; /* at most this many v1 values are considered */
    size_t v1len[16];
    size_t nv1;
} whsig_parsed_t;

static int parse_t(const char *s, size_t len, long long *out)
{
    long long v = 0;
    size_t i;

    if (len == 0 || len > WHSIG_T_MAX_DIGITS)
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Split the header into t and the v1 values. Returns WHSIG_OK or WHSIG_MALFORMED. */
static int parse_header(const char *h, size_t len, whsig_parsed_t *p)
{
    const char *s, *end;

    memset(p, 0, sizeof(*p));
    if (h == NULL || len == 0)
        return WHSIG_MALFORMED;
    s = h;
    end = h + len;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *ie = comma != NULL ? comma : end;
        const char *eq;

        while (s < ie && (*s == ' ' || *s == '\t'))
            s++;
        eq = memchr(s, '=', (size_t)(ie - s));
        if (eq == NULL || eq == s)
            return WHSIG_MALFORMED;
        if (eq - s == 1 && s[0] == 't') {
            if (p->t != NULL || parse_t(eq + 1, (size_t)(ie - eq - 1), &p->t_s) != 0)
                return WHSIG_MALFORMED;
            p->t = eq + 1;
            p->tlen = (size_t)(ie - eq - 1);
        } else if (eq - s == 2 && s[0] == 'v' && s[1] == '1') {
            if (p->nv1 == sizeof(p->v1) / sizeof(p->v1[0]))
                return WHSIG_MALFORMED;
            p->v1[p->nv1] = eq + 1;
            p->v1len[p->nv1] = (size_t)(ie - eq - 1);
            p->nv1++;
        }
        if (comma == NULL)
            break;
        s = comma + 1;
    }
    return p->t != NULL ? WHSIG_OK : WHSIG_MALFORMED;
}

/* Hex HMAC-SHA256 of "<t>.<payload>" under secret. */
static void expected_sig(const whsig_parsed_t *p, const char *payload, size_t plen,
                         const char *secret, char out[WHSIG_HEX_LEN + 1])
{
    size_t mlen = p->tlen + 1 + plen;
    unsigned char mac[32];
    char *msg = malloc(mlen);

    if (msg == NULL)
        abort();
    memcpy(msg, p->t, p->tlen);
    msg[p->tlen] = '.';
    if (plen > 0)
        memcpy(msg + p->tlen + 1, payload, plen);
    hmac_sha256(secret, strlen(secret), msg, mlen, mac);
    hex_encode(mac, sizeof(mac), out);
    free(msg);
}

int whsig_verify(const char *header, size_t hlen, const char *payload, size_t plen,
                 const char *secret, time_t now, long tolerance_s)
{
    whsig_parsed_t p;
    char want[WHSIG_HEX_LEN + 1];
    long long diff;
    size_t i;
    int match = 0, rc;

    if ((rc = parse_header(header, hlen, &p)) != WHSIG_OK)
        return rc;
    if (p.nv1 == 0)
        return WHSIG_NO_V1;
    diff = (long long)now - p.t_s;
    if (diff < 0)
        diff = -diff;
    if (tolerance_s < 0 || diff > (long long)tolerance_s)
        return WHSIG_STALE;
    if (secret == NULL || secret[0] == '\0')
        return WHSIG_MISMATCH;
    expected_sig(&p, payload, plen, secret, want);
    for (i = 0; i < p.nv1; i++)
        match |= ct_equal(want, WHSIG_HEX_LEN, p.v1[i], p.v1len[i]);
    explicit_bzero(want, sizeof(want));
    return match ? WHSIG_OK : WHSIG_MISMATCH;
}

const char *whsig_reason(int rc)
{
    switch (rc) {
    case WHSIG_OK: return "valid";
    case WHSIG_MALFORMED: return "malformed Stripe-Signature header";
    case WHSIG_NO_V1: return "no v1 signature in the header";
    case WHSIG_STALE: return "timestamp outside the tolerance";
    case WHSIG_MISMATCH: return "no signature matches the payload";
    default: return "unknown signature error";
    }
}

int whsig_secret_valid(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > WHSIG_SECRET_MAX_BYTES)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}
