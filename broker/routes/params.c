/* params.c — shared request parameters (see params.h).
 * Never echoes a parameter value in an error message: values may be secrets pasted
 * in the wrong field. Tested through every API integration test. */
#include "routes/params.h"
#include <string.h>
#include "core/form.h"
#include "core/timefmt.h"

/* Room for a mode value read from the query string; a longer one is no mode. */
#define MODE_VALUE_MAX 16

/* The mode s names: MODE_*, -1 when it names none, -2 when that mode is not enabled. */
static int mode_check(const breq_t *b, const char *s)
{
    int mode = s != NULL ? mode_parse(s, strlen(s)) : -1;
    return mode < 0 ? -1 : b->w->cfg->stripe[mode].enabled ? mode : -2;
}

int parse_mode_value(breq_t *b, const char *s)
{
    int mode = mode_check(b, s);
    if (mode == -1)
        breq_error(b, ERR_INVALID_REQUEST, "The mode must be \"test\" or \"live\".");
    else if (mode == -2)
        breq_error(b, ERR_MODE_NOT_ENABLED, NULL);
    else
        b->mode = mode;
    return mode < 0 ? -1 : mode;
}

int peek_mode_query(breq_t *b)
{
    char v[MODE_VALUE_MAX];
    int mode = breq_query_buf(b, "mode", v, sizeof(v)) == 1 ? mode_check(b, v) : -1;
    if (mode < 0)
        return -1;
    b->mode = mode;
    return mode;
}

int parse_mode_query(breq_t *b)
{
    char v[MODE_VALUE_MAX];
    int rc = breq_query_buf(b, "mode", v, sizeof(v));
    if (rc == 0 || rc == -1) {
        breq_error(b, ERR_INVALID_REQUEST, rc == 0 ? "The query parameter mode is required (\"test\" or \"live\")."
                                                   : "The query string is malformed.");
        return -1;
    }
    return parse_mode_value(b, v); /* too long (2) leaves v "": not a mode */
}

/* Path parameter idx, decoded into v (cap bytes); "" when it does not fit or is malformed. */
static void mode_param(const breq_t *b, int idx, char *v, size_t cap)
{
    ssize_t n = b->param_len[idx] < cap ? form_unescape(b->params[idx], b->param_len[idx], v, 0) : -1;
    if (n < 0)
        v[0] = '\0';
}

int parse_mode_param(breq_t *b, int idx)
{
    char v[MODE_VALUE_MAX];
    mode_param(b, idx, v, sizeof(v));
    return parse_mode_value(b, v);
}

int peek_mode_param(breq_t *b, int idx)
{
    char v[MODE_VALUE_MAX];
    mode_param(b, idx, v, sizeof(v));
    int mode = mode_check(b, v[0] != '\0' ? v : NULL);
    if (mode < 0)
        return -1;
    b->mode = mode;
    return mode;
}

json_t *parse_json_body(breq_t *b)
{
    size_t len;
    const char *body = breq_body(b, &len);
    json_error_t jerr;
    json_t *j = len > 0 ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        breq_error(b, ERR_INVALID_REQUEST, "The request body must be a JSON object.");
        return NULL;
    }
    return j;
}

void token_json(buf_t *out, const conn_record_t *rec, int mode)
{
    const char *at = rec->access_token ? rec->access_token : "";
    const char *acct = rec->stripe_user_id ? rec->stripe_user_id : "";
    const char *pk = rec->stripe_publishable_key ? rec->stripe_publishable_key : "";
    const char *scope = rec->scope ? rec->scope : "";
    buf_puts(out, "{\"access_token\":");
    buf_json_str(out, at, strlen(at));
    buf_printf(out, ",\"token_type\":\"bearer\",\"mode\":\"%s\",\"livemode\":%s,\"stripe_user_id\":", mode_name(mode),
               rec->livemode ? "true" : "false");
    buf_json_str(out, acct, strlen(acct));
    buf_puts(out, ",\"stripe_publishable_key\":");
    buf_json_str(out, pk, strlen(pk));
    buf_puts(out, ",\"scope\":");
    buf_json_str(out, scope, strlen(scope));
    if (rec->expires_at != 0) {
        char ts[21];
        time_rfc3339(rec->expires_at, ts);
        buf_printf(out, ",\"expires_at\":\"%s\"", ts);
    }
    buf_puts(out, "}");
}
