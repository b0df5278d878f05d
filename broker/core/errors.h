/* errors.h — the API's error vocabulary (proto/openapi.yaml): code, HTTP status and the
 * JSON shape {"error": {"code": "…", "message": "…"}}. */
#ifndef BROKER_CORE_ERRORS_H
#define BROKER_CORE_ERRORS_H
#include "buf.h"

typedef enum api_err {
    ERR_NONE = 0, /* success: no error to answer */
    ERR_INVALID_REQUEST,
    ERR_MODE_NOT_ENABLED,
    ERR_UNAUTHORIZED,
    ERR_FORBIDDEN,
    ERR_NOT_CONNECTED,
    ERR_NOT_FOUND,
    ERR_METHOD_NOT_ALLOWED,
    ERR_REAUTH_REQUIRED,
    ERR_PAYLOAD_TOO_LARGE,
    ERR_RATE_LIMITED,
    ERR_RECORD_UNREADABLE,
    ERR_STRIPE_UNAVAILABLE,
    ERR_STORE_UNAVAILABLE,
    ERR__COUNT
} api_err_t;

int api_err_status(api_err_t e);
const char *api_err_code(api_err_t e);
/* The default human sentence for e. ERR_NONE (not an error) and unknown values map to a
 * 500 "internal_error". */
const char *api_err_message(api_err_t e);
/* Append the error JSON; message NULL means the default sentence. */
void api_err_json(buf_t *b, api_err_t e, const char *message);
/* The same in Stripe's error shape too (the Stripe proxy, README "The path a capture takes"): "type" is
 * "api_error" for a 5xx, else "invalid_request_error". */
void api_err_json_stripe(buf_t *b, api_err_t e, const char *message);
#endif
