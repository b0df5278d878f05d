/* errors.c — the API's error vocabulary: code, HTTP status and default sentence for
 * every api_err_t, and the JSON shape {"error": {"code": "…", "message": "…"}}.
 *
 * Owns: the table of proto/openapi.yaml. Each default message is one sentence that tells
 * the caller (a Salesforce admin reading a Flow fault, or an operator) what to do next.
 * Never: puts request data into a message by itself; callers that pass a message must
 * not pass secrets (the message is JSON-escaped, not filtered).
 * Tested by: tests/unit/test_errors.c (every code's status, the JSON shape, Stripe's shape). */
#include "errors.h"

#include <string.h>

typedef struct api_err_info {
    int status;
    const char *code;
    const char *message;
} api_err_info_t;

static const api_err_info_t API_ERRORS[ERR__COUNT] = {
    [ERR_INVALID_REQUEST] = {400, "invalid_request",
                             "The request is malformed; check the org id, the mode (test or live) "
                             "and the request body."},
    [ERR_MODE_NOT_ENABLED] = {400, "mode_not_enabled",
                              "This mode has no Stripe credentials configured on the broker; ask "
                              "the operator to configure it or use the other mode."},
    [ERR_UNAUTHORIZED] = {401, "unauthorized",
                          "A valid API key is required; send it as \"Authorization: Bearer <key>\" "
                          "in the Named Credential."},
    [ERR_FORBIDDEN] = {403, "forbidden",
                       "This API key is not allowed to act on this org or route; use the key "
                       "issued for this org."},
    [ERR_NOT_CONNECTED] = {404, "not_connected",
                           "This org has no Stripe connection in this mode; an admin must "
                           "authorize it in the setup assistant."},
    [ERR_NOT_FOUND] = {404, "not_found", "There is nothing at this address; check the URL."},
    [ERR_METHOD_NOT_ALLOWED] = {405, "method_not_allowed",
                                "This method is not allowed on this path; see the Allow header."},
    [ERR_REAUTH_REQUIRED] = {409, "reauthorization_required",
                             "The Stripe authorization for this org and mode was revoked; an admin "
                             "must authorize again in the setup assistant."},
    [ERR_PAYLOAD_TOO_LARGE] = {413, "payload_too_large",
                               "The request body is larger than 64 KiB; send a smaller body."},
    [ERR_RATE_LIMITED] = {429, "rate_limited",
                          "Too many requests; retry after the number of seconds in Retry-After."},
    [ERR_RECORD_UNREADABLE] = {500, "record_unreadable",
                               "A stored record cannot be opened with the configured encryption "
                               "keys; the operator must check BROKER_ENCRYPTION_KEYS."},
    [ERR_STRIPE_UNAVAILABLE] = {502, "stripe_unavailable",
                                "Stripe did not answer usably in time; retry in a few seconds."},
    [ERR_STORE_UNAVAILABLE] = {503, "store_unavailable",
                               "The broker's data store is unavailable; retry after the number of "
                               "seconds in Retry-After."},
};

/* Unknown values map to a 500 rather than reading outside the table. */
static const api_err_info_t API_ERR_UNKNOWN = {500, "internal_error",
                                               "The broker failed unexpectedly; retry later."};

static const api_err_info_t *info(api_err_t e)
{
    if ((int)e <= ERR_NONE || e >= ERR__COUNT)
        return &API_ERR_UNKNOWN;
    return &API_ERRORS[e];
}

int api_err_status(api_err_t e)
{
    return info(e)->status;
}

const char *api_err_code(api_err_t e)
{
    return info(e)->code;
}

const char *api_err_message(api_err_t e)
{
    return info(e)->message;
}

static void err_json(buf_t *b, api_err_t e, const char *message, const char *type)
{
    const api_err_info_t *i = info(e);

    if (message == NULL)
        message = i->message;
    buf_puts(b, "{\"error\":{");
    if (type != NULL) {
        buf_puts(b, "\"type\":\"");
        buf_puts(b, type);
        buf_puts(b, "\",");
    }
    buf_puts(b, "\"code\":");
    buf_json_str(b, i->code, strlen(i->code));
    buf_puts(b, ",\"message\":");
    buf_json_str(b, message, strlen(message));
    buf_puts(b, "}}");
}

void api_err_json(buf_t *b, api_err_t e, const char *message)
{
    err_json(b, e, message, NULL);
}

void api_err_json_stripe(buf_t *b, api_err_t e, const char *message)
{
    err_json(b, e, message, info(e)->status >= 500 ? "api_error" : "invalid_request_error");
}
