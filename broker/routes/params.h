/* params.h — request parameters shared by the API routes: the mode (query or path),
 * JSON bodies, and the token answer. Each parse_* answers the request itself on bad
 * input (400 invalid_request / mode_not_enabled) and returns -1. */
#ifndef BROKER_ROUTES_PARAMS_H
#define BROKER_ROUTES_PARAMS_H
#include <jansson.h>
#include "core/record.h"
#include "http/breq.h"

/* ?mode=test|live, required. Returns the mode or -1 (answered). */
int parse_mode_query(breq_t *b);
/* The same without answering: the mode (b->mode set) when it is valid and enabled, else -1
 * and nothing done (parse_mode_query then says why). */
int peek_mode_query(breq_t *b);
/* Path parameter idx as a mode. Returns the mode or -1 (answered). */
int parse_mode_param(breq_t *b, int idx);
/* The same without answering, as peek_mode_query. */
int peek_mode_param(breq_t *b, int idx);
/* A mode name from anywhere (JSON field, form): checks enabled. -1 (answered). */
int parse_mode_value(breq_t *b, const char *s);
/* The request body as a JSON object; NULL (answered 400) when it is not one. */
json_t *parse_json_body(breq_t *b);
/* The getAccessToken body for a record of mode. */
void token_json(buf_t *out, const conn_record_t *rec, int mode);
#endif
