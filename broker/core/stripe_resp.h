/* stripe_resp.h — parsing of Stripe's OAuth token responses and the classification
 * of failures (STRIPE.md): a token, a terminal refusal (invalid_grant: the
 * authorization is gone), or a transient failure (network, timeout, 5xx, 429,
 * anything unusable); and the classification of /oauth/deauthorize answers (done,
 * already disconnected, or refused/failed). Pure; never logs. */
#ifndef BROKER_CORE_STRIPE_RESP_H
#define BROKER_CORE_STRIPE_RESP_H
#include <stddef.h>
#include <time.h>

typedef struct stripe_token {
    char *access_token;           /* secret */
    char *refresh_token;          /* secret; NULL when the response had none */
    char *stripe_user_id;         /* acct_… */
    char *stripe_publishable_key; /* pk_…, may be NULL */
    char *scope;                  /* may be NULL */
    int livemode;                 /* 0/1 */
    long expires_in;              /* seconds, -1 when absent */
} stripe_token_t;

typedef enum stripe_outcome {
    STRIPE_OK,        /* *tok filled */
    STRIPE_TERMINAL,  /* invalid_grant: reauthorization required */
    STRIPE_REJECTED,  /* another OAuth error (invalid_client, invalid_request, …) */
    STRIPE_TRANSIENT, /* transport error, timeout, 5xx, 429, malformed body */
} stripe_outcome_t;

/* Classify a token endpoint answer. http_status 0 means the call failed in transport.
 * err (size 64) receives Stripe's error code, or "" (it is not secret). */
stripe_outcome_t stripe_token_parse(long http_status, const char *body, size_t len,
                                    stripe_token_t *tok, char err[64]);
/* When tok's access token expires, 0 for never (connect flavor). An apps-flavor token
 * whose answer leaves expires_in out still expires after STRIPE_APPS_TOKEN_TTL_S
 * (STRIPE.md: an hour): taken for one that never expires, it would be handed out dead. */
#define STRIPE_APPS_TOKEN_TTL_S 3600
time_t stripe_token_expires_at(const stripe_token_t *tok, int apps, time_t now);
/* Wipe and free every field. */
void stripe_token_clear(stripe_token_t *tok);
/* The answer of POST /oauth/deauthorize (STRIPE.md, proto/openapi.yaml, deleteConnection). */
typedef enum stripe_deauth {
    STRIPE_DEAUTH_DONE,          /* 2xx {"stripe_user_id": <that account>} */
    STRIPE_DEAUTH_NOT_CONNECTED, /* Stripe's "not connected" answer: already gone there */
    STRIPE_DEAUTH_FAILED,        /* anything else: a refusal (bad key, bad client id,
                                  * invalid_request…), 5xx, 429, transport, unusable */
} stripe_deauth_t;

/* Classify a deauthorize answer for account (the stripe_user_id that was sent).
 * "Not connected" is only a 400/401 whose error is invalid_client and whose
 * error_description says the application is not connected to that stripe account;
 * every other invalid_client (a wrong key or client id) is FAILED. err (size 64) as
 * in stripe_token_parse. */
stripe_deauth_t stripe_deauth_parse(long http_status, const char *body, size_t len, const char *account,
                                    char err[64]);
/* A short name for logs and metrics: "ok", "invalid_grant", "rejected", "transient". */
const char *stripe_outcome_name(stripe_outcome_t o);
#endif
