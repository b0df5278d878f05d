/* stripe_resp.c — classification of Stripe OAuth token responses.
 *
 * Owns: the decision "token / terminal / rejected / transient" for the answer of
 * POST /oauth/token (connect) and /v1/oauth/token (apps):
 *   - status 0 (transport), 429, >= 500, 1xx/3xx, a non-JSON body, or a 2xx without a
 *     usable access_token and stripe_user_id (or with ill-typed fields): TRANSIENT;
 *   - 400/401 with error "invalid_grant": TERMINAL (the authorization is gone);
 *   - any other 4xx: REJECTED (invalid_client, invalid_request, …);
 *   - 2xx with the fields: OK, *tok filled.
 * Also owns the decision "done / not connected / failed" for POST /oauth/deauthorize
 * (stripe_deauth_parse): only a 2xx naming the account is done, and only Stripe's
 * invalid_client "This application is not connected to stripe account acct_…" (for
 * that account) means the account is already gone; a wrong key or client id is
 * invalid_client too, with another description, and is a failure like any other.
 * Stripe's error code is copied into err only when it is short and made of [a-z_]
 * (flat {"error": "…"} or nested {"error": {"code": "…"}}); error_description and
 * messages are never copied: they may echo request data.
 * Never: logs; leaves a secret in a freed buffer (token strings are wiped, and
 * jansson's allocator wipes every block it frees: secure_json_init).
 * Tested by: tests/unit/test_stripe_resp.c, tests/unit/test_wipe.c and
 * tests/fuzz/fuzz_stripe_resp.c. */
#include "stripe_resp.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "crypto.h"

#define STRIPE_ERR_CODE_MAX 63

static char *dup_str(const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        abort();
    return d;
}

/* Copy the error code of a JSON error body into err when it looks like a code. */
static void copy_error_code(json_t *doc, char err[64])
{
    json_t *e = json_object_get(doc, "error");
    const char *code;
    size_t i, len;

    if (json_is_object(e))
        e = json_object_get(e, "code");
    if (!json_is_string(e))
        return;
    code = json_string_value(e);
    len = json_string_length(e);
    if (len == 0 || len > STRIPE_ERR_CODE_MAX)
        return;
    for (i = 0; i < len; i++)
        if (!((code[i] >= 'a' && code[i] <= 'z') || code[i] == '_'))
            return;
    memcpy(err, code, len);
    err[len] = '\0';
}

/* Optional string field: 0 absent/null (*out NULL), 1 present, -1 wrong type or
 * an embedded NUL. */
static int opt_string(json_t *doc, const char *name, char **out)
{
    json_t *v = json_object_get(doc, name);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = dup_str(json_string_value(v));
    return 1;
}

/* Fill tok from a 2xx document; -1 when it is not a usable token response. */
static int parse_token(json_t *doc, stripe_token_t *tok)
{
    json_t *live = json_object_get(doc, "livemode");
    json_t *exp = json_object_get(doc, "expires_in");

    if (opt_string(doc, "access_token", &tok->access_token) != 1 || tok->access_token[0] == '\0')
        return -1;
    if (opt_string(doc, "stripe_user_id", &tok->stripe_user_id) != 1 ||
        tok->stripe_user_id[0] == '\0')
        return -1;
    if (opt_string(doc, "refresh_token", &tok->refresh_token) < 0 ||
        opt_string(doc, "stripe_publishable_key", &tok->stripe_publishable_key) < 0 ||
        opt_string(doc, "scope", &tok->scope) < 0)
        return -1;
    if (tok->refresh_token != NULL && tok->refresh_token[0] == '\0') {
        free(tok->refresh_token);
        tok->refresh_token = NULL; /* an empty refresh token is no refresh token */
    }
    if (live != NULL && !json_is_null(live) && !json_is_boolean(live))
        return -1;
    tok->livemode = json_is_true(live);
    if (exp != NULL && !json_is_null(exp)) {
        if (!json_is_integer(exp) || json_integer_value(exp) < 0 ||
            json_integer_value(exp) > 0x7fffffff)
            return -1;
        tok->expires_in = (long)json_integer_value(exp);
    }
    return 0;
}

stripe_outcome_t stripe_token_parse(long http_status, const char *body, size_t len,
                                    stripe_token_t *tok, char err[64])
{
    stripe_outcome_t o = STRIPE_TRANSIENT;
    json_t *doc = NULL;
    json_t *e;

    memset(tok, 0, sizeof(*tok));
    tok->expires_in = -1;
    err[0] = '\0';
    if (body != NULL && len > 0)
        doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(doc))
        goto out; /* transport failure, empty or non-JSON body: unusable */
    if (http_status != 0 && !(http_status >= 200 && http_status < 300))
        copy_error_code(doc, err);
    if (http_status == 0 || http_status == 429 || http_status >= 500 || http_status < 200 ||
        (http_status >= 300 && http_status < 400))
        goto out;
    if (http_status < 300) {
        if (parse_token(doc, tok) == 0)
            o = STRIPE_OK;
        goto out;
    }
    e = json_object_get(doc, "error");
    if ((http_status == 400 || http_status == 401) && json_is_string(e) &&
        strcmp(json_string_value(e), "invalid_grant") == 0)
        o = STRIPE_TERMINAL;
    else if (strcmp(err, "invalid_grant") == 0 && (http_status == 400 || http_status == 401))
        o = STRIPE_TERMINAL; /* nested {"error": {"code": "invalid_grant"}} */
    else
        o = STRIPE_REJECTED;
out:
    if (o != STRIPE_OK)
        stripe_token_clear(tok);
    json_decref(doc);
    return o;
}

/* Does hay contain "not connected to stripe account <account>" (the phrase in any case)? */
static int says_not_connected(const char *hay, size_t n, const char *account)
{
    static const char phrase[] = "not connected to stripe account ";
    size_t plen = sizeof(phrase) - 1, alen = strlen(account);

    for (size_t i = 0; alen > 0 && i + plen + alen <= n; i++) {
        size_t j = 0;
        while (j < plen && tolower((unsigned char)hay[i + j]) == phrase[j])
            j++;
        if (j == plen && memcmp(hay + i + plen, account, alen) == 0 &&
            (i + plen + alen == n || !(isalnum((unsigned char)hay[i + plen + alen]) || hay[i + plen + alen] == '_')))
            return 1; /* the whole id, not a prefix of another */
    }
    return 0;
}

stripe_deauth_t stripe_deauth_parse(long http_status, const char *body, size_t len, const char *account,
                                    char err[64])
{
    stripe_deauth_t o = STRIPE_DEAUTH_FAILED;
    json_t *doc = NULL, *v;

    err[0] = '\0';
    if (body != NULL && len > 0)
        doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(doc) || account == NULL || account[0] == '\0')
        goto out;
    if (http_status >= 200 && http_status < 300) {
        v = json_object_get(doc, "stripe_user_id");
        if (json_is_string(v) && strcmp(json_string_value(v), account) == 0 &&
            json_string_length(v) == strlen(account))
            o = STRIPE_DEAUTH_DONE;
        goto out;
    }
    if (http_status == 0)
        goto out;
    copy_error_code(doc, err);
    v = json_object_get(doc, "error_description");
    if ((http_status == 400 || http_status == 401) && json_is_string(json_object_get(doc, "error")) &&
        strcmp(json_string_value(json_object_get(doc, "error")), "invalid_client") == 0 && json_is_string(v) &&
        says_not_connected(json_string_value(v), json_string_length(v), account))
        o = STRIPE_DEAUTH_NOT_CONNECTED;
out:
    json_decref(doc);
    return o;
}

void stripe_token_clear(stripe_token_t *tok)
{
    secure_free_str(tok->access_token);
    secure_free_str(tok->refresh_token);
    free(tok->stripe_user_id);
    free(tok->stripe_publishable_key);
    free(tok->scope);
    memset(tok, 0, sizeof(*tok));
    tok->expires_in = -1;
}

time_t stripe_token_expires_at(const stripe_token_t *tok, int apps, time_t now)
{
    if (tok->expires_in > 0)
        return now + tok->expires_in;
    return apps ? now + STRIPE_APPS_TOKEN_TTL_S : 0;
}

const char *stripe_outcome_name(stripe_outcome_t o)
{
    switch (o) {
    case STRIPE_OK: return "ok";
    case STRIPE_TERMINAL: return "invalid_grant";
    case STRIPE_REJECTED: return "rejected";
    case STRIPE_TRANSIENT: return "transient";
    default: return "unknown";
    }
}
