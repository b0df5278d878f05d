/* record.c — the connection record's JSON form (version 1, proto/redis.md).
 *
 *   {"v":1,"status":"connected"|"reauthorization_required",
 *    "access_token":"…","refresh_token":"…","stripe_user_id":"acct_…",
 *    "stripe_publishable_key":"pk_…","scope":"read_write","livemode":false,
 *    "connected_at":0,"refreshed_at":0,"expires_at":0,"derived_from":"live"}
 *
 * NULL strings are omitted; derived_from is omitted when empty; times are integer
 * unix seconds (expires_at 0: does not expire). The decoder rejects another "v",
 * an unknown status, ill-typed fields, and a connected record without an access
 * token or account id; unknown fields are ignored (additive changes stay v1).
 * Owns: encoding (with buf, so no unwiped copy of a secret is left behind) and
 * decoding (with jansson, whose allocator wipes every block it frees: secure_json_init).
 * Never: logs; the encoded text contains secrets and only ever goes into seal_seal.
 * Tested by: tests/unit/test_record.c, tests/unit/test_wipe.c and tests/fuzz/fuzz_record.c. */
#include "record.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "crypto.h"
#include "mode.h"
#include "stripe_resp.h"

#define RECORD_TIME_MAX_S 253402300799LL /* 9999-12-31T23:59:59Z */

static const char *status_name(conn_status_t s)
{
    return s == CONN_REAUTH_REQUIRED ? "reauthorization_required" : "connected";
}

static void put_str(buf_t *b, const char *name, const char *value)
{
    if (value == NULL)
        return;
    buf_printf(b, ",\"%s\":", name);
    buf_json_str(b, value, strlen(value));
}

char *conn_record_encode(const conn_record_t *r)
{
    buf_t b = {NULL, 0, 0}; /* buf grows without leaving a copy behind */

    buf_printf(&b, "{\"v\":%d,\"status\":\"%s\"", RECORD_VERSION, status_name(r->status));
    put_str(&b, "access_token", r->access_token);
    put_str(&b, "refresh_token", r->refresh_token);
    put_str(&b, "stripe_user_id", r->stripe_user_id);
    put_str(&b, "stripe_publishable_key", r->stripe_publishable_key);
    put_str(&b, "scope", r->scope);
    buf_printf(&b, ",\"livemode\":%s,\"connected_at\":%lld,\"refreshed_at\":%lld,"
                   "\"expires_at\":%lld",
               r->livemode ? "true" : "false", (long long)r->connected_at,
               (long long)r->refreshed_at, (long long)r->expires_at);
    if (r->derived_from[0] != '\0')
        put_str(&b, "derived_from", r->derived_from);
    buf_puts(&b, "}");
    return b.p;
}

/* Optional string: 0 absent or null, 1 copied, -1 wrong type or embedded NUL. */
static int get_str(json_t *doc, const char *name, char **out)
{
    json_t *v = json_object_get(doc, name);

    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = strdup(json_string_value(v));
    if (*out == NULL)
        abort();
    return 1;
}

/* Optional time: absent is 0; otherwise an integer in [0, year 9999]. */
static int get_time(json_t *doc, const char *name, time_t *out)
{
    json_t *v = json_object_get(doc, name);

    *out = 0;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > RECORD_TIME_MAX_S)
        return -1;
    *out = (time_t)json_integer_value(v);
    return 0;
}

static int get_status(json_t *doc, conn_status_t *out)
{
    const char *s = json_string_value(json_object_get(doc, "status"));

    if (s == NULL)
        return -1;
    if (strcmp(s, "connected") == 0)
        *out = CONN_CONNECTED;
    else if (strcmp(s, "reauthorization_required") == 0)
        *out = CONN_REAUTH_REQUIRED;
    else
        return -1;
    return 0;
}

static int get_derived(json_t *doc, char out[8])
{
    json_t *v = json_object_get(doc, "derived_from");
    const char *s;

    out[0] = '\0';
    if (v == NULL)
        return 0;
    s = json_string_value(v);
    if (s == NULL || mode_parse(s, strlen(s)) < 0)
        return -1;
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int decode_doc(json_t *doc, conn_record_t *r)
{
    json_t *v = json_object_get(doc, "v");
    json_t *live = json_object_get(doc, "livemode");

    if (!json_is_integer(v) || json_integer_value(v) != RECORD_VERSION)
        return -1;
    if (get_status(doc, &r->status) != 0 || get_str(doc, "access_token", &r->access_token) < 0 ||
        get_str(doc, "refresh_token", &r->refresh_token) < 0 ||
        get_str(doc, "stripe_user_id", &r->stripe_user_id) < 0 ||
        get_str(doc, "stripe_publishable_key", &r->stripe_publishable_key) < 0 ||
        get_str(doc, "scope", &r->scope) < 0)
        return -1;
    if (live != NULL && !json_is_boolean(live))
        return -1;
    r->livemode = json_is_true(live);
    if (get_time(doc, "connected_at", &r->connected_at) != 0 ||
        get_time(doc, "refreshed_at", &r->refreshed_at) != 0 ||
        get_time(doc, "expires_at", &r->expires_at) != 0 || get_derived(doc, r->derived_from) != 0)
        return -1;
    if (r->status == CONN_CONNECTED && (r->access_token == NULL || r->stripe_user_id == NULL))
        return -1;
    return 0;
}

int conn_record_decode(const char *json, size_t len, conn_record_t *r)
{
    json_t *doc;
    int rc = -1;

    memset(r, 0, sizeof(*r));
    if (json == NULL)
        return -1;
    doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(doc))
        rc = decode_doc(doc, r);
    if (rc != 0)
        conn_record_clear(r);
    json_decref(doc);
    return rc;
}

void conn_record_clear(conn_record_t *r)
{
    secure_free_str(r->access_token);
    secure_free_str(r->refresh_token);
    free(r->stripe_user_id);
    free(r->stripe_publishable_key);
    free(r->scope);
    memset(r, 0, sizeof(*r));
}

void conn_record_revoke(conn_record_t *r)
{
    r->status = CONN_REAUTH_REQUIRED;
    secure_free_str(r->access_token);
    secure_free_str(r->refresh_token);
    r->access_token = r->refresh_token = NULL;
    r->expires_at = 0;
}

/* tok's string when it has one (moved out of tok), else a copy of base's (or NULL). */
static char *take_or_copy(char **from_tok, const char *from_base)
{
    char *s = *from_tok;
    *from_tok = NULL;
    if (s == NULL && from_base != NULL && (s = strdup(from_base)) == NULL)
        abort();
    return s;
}

void conn_record_from_token(conn_record_t *out, stripe_token_t *tok, const conn_record_t *base, int live, int apps,
                            time_t connected_at, time_t now)
{
    out->status = CONN_CONNECTED;
    out->access_token = take_or_copy(&tok->access_token, NULL);
    out->refresh_token = take_or_copy(&tok->refresh_token, base != NULL ? base->refresh_token : NULL);
    out->stripe_user_id = take_or_copy(&tok->stripe_user_id, base != NULL ? base->stripe_user_id : NULL);
    out->stripe_publishable_key =
        take_or_copy(&tok->stripe_publishable_key, base != NULL ? base->stripe_publishable_key : NULL);
    out->scope = take_or_copy(&tok->scope, base != NULL ? base->scope : NULL);
    out->livemode = live;
    out->connected_at = connected_at;
    out->refreshed_at = now;
    out->expires_at = stripe_token_expires_at(tok, apps, now);
    out->derived_from[0] = '\0';
}
