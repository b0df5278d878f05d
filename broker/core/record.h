/* record.h — the connection record: what the broker knows about one org and mode.
 * It is stored sealed as a whole (field "connection"), so its JSON form below never
 * reaches Redis in clear. The format is documented in proto/redis.md. */
#ifndef BROKER_CORE_RECORD_H
#define BROKER_CORE_RECORD_H
#include <stddef.h>
#include <time.h>

#define RECORD_VERSION 1

typedef enum conn_status { CONN_CONNECTED = 0, CONN_REAUTH_REQUIRED = 1 } conn_status_t;

typedef struct conn_record {
    conn_status_t status;
    char *access_token;           /* secret; NULL once revoked */
    char *refresh_token;          /* secret; NULL once revoked */
    char *stripe_user_id;         /* acct_… */
    char *stripe_publishable_key; /* may be NULL */
    char *scope;                  /* may be NULL */
    int livemode;
    time_t connected_at;
    time_t refreshed_at;
    time_t expires_at;            /* 0: does not expire (connect flavor) */
    char derived_from[8];         /* "" or the mode it was minted from ("live") */
} conn_record_t;

/* JSON text of r (malloc'd, NUL-terminated; contains secrets: free with secure_free_str). */
char *conn_record_encode(const conn_record_t *r);
/* Parse JSON text into r. Returns 0, or -1 when malformed or of an unknown version. */
int conn_record_decode(const char *json, size_t len, conn_record_t *r);
/* Wipe and free every field. */
void conn_record_clear(conn_record_t *r);
/* The rule of a revoked authorization (a dead refresh token, a deauthorization event):
 * status reauthorization_required, both tokens wiped and gone, no expiry; the account,
 * scope and times stay. */
void conn_record_revoke(conn_record_t *r);

struct stripe_token;
/* The rule of a record built from a Stripe token answer (a code exchange, a mint, a
 * refresh): connected, livemode from live, refreshed now, connected at connected_at,
 * expiring per stripe_token_expires_at (apps: the answer's expires_in). The answer's
 * strings move into *out (tok's are NULL afterwards); a field the answer lacks (refresh
 * token, account, publishable key, scope) is copied from base when base is not NULL.
 * derived_from is left empty. out must be empty (zeroed or cleared). */
void conn_record_from_token(conn_record_t *out, struct stripe_token *tok, const conn_record_t *base, int live,
                            int apps, time_t connected_at, time_t now);
#endif
