/* ratelimit.c — the request rate limits (see ratelimit.h).
 *
 * Owns the worker's counters (created on first use) and the client address a request
 * is counted under. Never keeps or logs a credential: the flow credential is counted
 * as an HMAC of its cookies, a key by its id.
 * Tested by tests/fault/test_abuse_limits.py and test_abuse_limits_fair.py. */
#include "http/ratelimit.h"
#include <string.h>
#include "core/crypto.h"
#include "core/netaddr.h"
#include "core/ratelimit.h"
#include "core/timefmt.h"
#include "routes/setup.h"

/* ===== The counters =====
 *
 * Fixed-window counters per worker thread (core/ratelimit.h: no lock, whole keys, so
 * two keys never share or reset a count); a client spread over N workers gets up to N
 * times a limit. The keys, by class (the first byte):
 *   RL_ORG        the org API, per org per second (BROKER_RATE_LIMIT_ORG_PER_S), charged
 *                 only once the bearer checked out for that org (its key, or the admin
 *                 token): nobody without the key can use up an org's allowance.
 *   RL_FAIL_ADDR  failed authentications per client address, and RL_FAIL_KEY per key id,
 *   RL_FAIL_KEY   per minute (BROKER_RATE_LIMIT_IP_PER_MIN): over either, a failure is
 *                 answered 429 instead of 401/403. A request whose key checks out is never
 *                 refused by them (the callouts of many Salesforce orgs share addresses).
 *   RL_ANON       browser pages without a flow credential, per client address per minute.
 *   RL_FLOW       browser pages with a flow credential (the setup session or OAuth state
 *                 cookie), per credential per minute: an anonymous flood from the same
 *                 address never touches it. A page whose credential did not hold (a 4xx
 *                 answer) is a failed authentication of its address; once those are over
 *                 the limit, that address's pages with a credential are refused as well.
 * The client address is the TCP peer, or when the peer is one of BROKER_TRUSTED_PROXIES,
 * the address its X-Forwarded-For names (core/netaddr.h); an IPv6 client counts as its
 * /64 (netaddr_client_unit). */

enum { RL_ORG = 'o', RL_FAIL_ADDR = 'a', RL_FAIL_KEY = 'k', RL_ANON = 'p', RL_FLOW = 'f' };
#define RATE_SETS_LOG2 10 /* 1024 sets × RATELIMIT_WAYS */
#define XFF_MAX_HEADERS 8

/* Count one hit of class + data; returns 0, or the seconds until its window ends when over. */
static int rate_hit(breq_t *b, char cls, const void *data, size_t n, int limit, int window_s)
{
    unsigned char key[RATELIMIT_KEY_MAX];
    worker_t *w = b->w;
    if (limit <= 0)
        return 0;
    if (w->rate == NULL)
        w->rate = ratelimit_new(RATE_SETS_LOG2, 0);
    key[0] = (unsigned char)cls;
    n = n < sizeof(key) - 1 ? n : sizeof(key) - 1;
    memcpy(key + 1, data, n);
    return ratelimit_hit(w->rate, key, n + 1, limit, window_s, time_mono_ms() / 1000);
}

/* Answers 429 with Retry-After and returns 1 when retry_after_s > 0; else 0. */
static int rate_limited(breq_t *b, int retry_after_s)
{
    char v[16];
    if (retry_after_s <= 0)
        return 0;
    snprintf(v, sizeof(v), "%d", retry_after_s);
    breq_add_header(b, "retry-after", v);
    breq_error(b, ERR_RATE_LIMITED, NULL);
    return 1;
}

/* The client's address (see above), worked out once per request. */
static const netaddr_t *client_addr(breq_t *b)
{
    if (b->client_known)
        return &b->client;
    struct sockaddr_storage sa;
    netaddr_t peer;
    memset(&peer, 0, sizeof(peer));
    if (b->req->conn->callbacks->get_peername(b->req->conn, (struct sockaddr *)&sa) > 0)
        netaddr_from_sockaddr((struct sockaddr *)&sa, &peer);
    const config_t *cfg = b->w->cfg;
    const char *vals[XFF_MAX_HEADERS];
    size_t lens[XFF_MAX_HEADERS], n = 0;
    /* the last XFF_MAX_HEADERS X-Forwarded-For headers, in order (read from the right) */
    for (ssize_t i = -1; cfg->trusted_proxies_n > 0 &&
                         (i = h2o_find_header(&b->req->headers, H2O_TOKEN_X_FORWARDED_FOR, i)) != -1;) {
        if (n == XFF_MAX_HEADERS) {
            memmove(vals, vals + 1, sizeof(vals[0]) * (n - 1));
            memmove(lens, lens + 1, sizeof(lens[0]) * (n - 1));
            n--;
        }
        vals[n] = b->req->headers.entries[i].value.base;
        lens[n++] = b->req->headers.entries[i].value.len;
    }
    netaddr_client(cfg->trusted_proxies, cfg->trusted_proxies_n, &peer, vals, lens, n, &b->client);
    b->client_known = 1;
    return &b->client;
}

/* The client's address as the per-address limits count it (IPv6: its /64), in *tmp. */
static const unsigned char *client_unit(breq_t *b, netaddr_t *tmp)
{
    netaddr_client_unit(client_addr(b), tmp);
    return tmp->a;
}

void rate_auth_failed(breq_t *b, api_err_t e, const char *message)
{
    int limit = b->w->cfg->rate_ip_per_min;
    netaddr_t u;
    int ra = rate_hit(b, RL_FAIL_ADDR, client_unit(b, &u), 16, limit, 60);
    if (b->bearer.kind == BEARER_KEY) {
        int rk = rate_hit(b, RL_FAIL_KEY, b->bearer.key_id, APIKEY_ID_LEN, limit, 60);
        ra = rk > ra ? rk : ra;
    }
    if (!rate_limited(b, ra))
        breq_error(b, e, message);
}

int rate_org_charge(breq_t *b)
{
    return rate_limited(b, rate_hit(b, RL_ORG, b->org, ORGID_LEN, b->w->cfg->rate_org_per_s, 1));
}

/* A digest of the page request's flow credential (the setup session and OAuth state
 * cookies of the right shape) into out; 0 when it carries none. */
static int flow_credential(breq_t *b, unsigned char out[32])
{
    static const int which[] = {SETUP_COOKIE_SESSION, SETUP_COOKIE_BROWSER};
    char vals[2 * (SETUP_TOKEN_CHARS + 1)], v[SETUP_TOKEN_CHARS + 1];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(which) / sizeof(which[0]); i++) {
        if (setup_cookie_get(b, which[i], v) == 0) {
            memcpy(vals + n, v, SETUP_TOKEN_CHARS);
            n += SETUP_TOKEN_CHARS;
            vals[n++] = (char)('0' + i);
        }
    }
    explicit_bzero(v, sizeof(v));
    if (n == 0)
        return 0;
    hmac_sha256("stb-rate-v1", 11, vals, n, out);
    explicit_bzero(vals, sizeof(vals));
    return 1;
}

int rate_page_check(breq_t *b)
{
    const config_t *cfg = b->w->cfg;
    unsigned char cred[32];
    netaddr_t u;
    if (!flow_credential(b, cred))
        return rate_limited(b, rate_hit(b, RL_ANON, client_unit(b, &u), 16, cfg->rate_ip_per_min, 60));
    b->flow_cred = 1;
    unsigned char key[1 + 16];
    key[0] = RL_FAIL_ADDR;
    memcpy(key + 1, client_unit(b, &u), 16);
    if (b->w->rate != NULL) {
        int ra = ratelimit_full(b->w->rate, key, sizeof(key), cfg->rate_ip_per_min, time_mono_ms() / 1000);
        if (ra > 0)
            return rate_limited(b, ra);
    }
    return rate_limited(b, rate_hit(b, RL_FLOW, cred, 16, cfg->rate_ip_per_min, 60));
}

void rate_after_answer(breq_t *b, int status)
{
    netaddr_t u;
    if (b->flow_cred && status >= 400 && status < 500 && status != 429)
        rate_hit(b, RL_FAIL_ADDR, client_unit(b, &u), 16, b->w->cfg->rate_ip_per_min, 60);
}
