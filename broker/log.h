/* log.h — one JSON object per line on stderr (deploy/README.md, the operating guide).
 * Lines are whole and in order: a thread hands over one line, or (worker threads,
 * after log_batch_start) every line of its loop turn, at once. While the writer thread
 * runs (log_writer_start), a handed-over batch is either written at once by the caller
 * (log_flush(1): a quiet worker, so that its lines are out before its answers) or queued
 * for the writer (log_flush(0): a busy worker, which must not wait on stderr — a file
 * system stalling a write(2) for tens of ms, or a log collector slow to drain the pipe,
 * then delays log lines, not answers). A direct write never blocks on a full pipe or
 * terminal: what does not fit is queued. Callers
 * pass only non-secret values: no token, code, key, ticket, state or cookie value
 * ever reaches this module. */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H
#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(int level);
int log_enabled(int level);
/* An event line: {"ts","level","msg", then each "key", "value" string pair}.
 * The variadic list is key/value C strings terminated by NULL. */
void log_event(int level, const char *msg, ...);
/* Append a raw, already JSON-encoded line body (used by the request logger). */
void log_raw(int level, const char *json_fields);

/* The request line's fields (deploy/README.md), built without printf (once per request).
 * Every string is JSON-escaped, whoever supplied it: the method comes from the client
 * as is; the others are checked values, escaped all the same. Each is cut at a limit
 * (method 16 bytes, route 64, request id 16, org id 18). */
typedef struct log_request {
    const char *request_id;
    const char *method; /* not NUL-terminated */
    size_t method_len;
    const char *route;
    int status;
    uint64_t duration_us;
    const char *org_id; /* "" or NULL: no org_id field */
    /* A handler's own fields: name, value, name, value; a NULL name ends them. Names are
     * the handler's constants; values may come from outside and are escaped (each cut
     * at LOG_EXTRA_VALUE_MAX bytes). */
    const char *extra[4];
} log_request_t;
#define LOG_EXTRA_VALUE_MAX 128
#define LOG_REQUEST_FIELDS_MAX 3072
/* Writes the fields (for log_raw) NUL-terminated into out; returns their length. */
size_t log_request_fields(char out[LOG_REQUEST_FIELDS_MAX], const log_request_t *r);
/* The whole line log_raw / log_event would write, appended to out (tests, fuzzers). */
void log_format_raw(buf_t *out, int level, const char *json_fields);
void log_format_event(buf_t *out, int level, const char *msg, ...);
/* From now on, this thread's lines wait in a buffer until log_flush() (worker threads
 * call it after every loop turn) or until LOG_BATCH_BYTES are waiting (then queued).
 * direct: write them now unless lines already wait for the writer (see above). */
#define LOG_BATCH_BYTES 16384
void log_batch_start(void);
void log_flush(int direct);
/* Flushes and ends this thread's batching (before the thread exits). */
void log_batch_stop(void);
/* The writer thread. At most LOG_QUEUE_MAX_BYTES wait for it; lines beyond are dropped
 * (a stderr that blocks for good must not take the service down with it), counted by
 * log_dropped_lines(), and reported by a warn line once stderr takes lines again.
 * log_writer_stop() writes everything queued, then joins the thread. */
#define LOG_QUEUE_MAX_BYTES (2u << 20)
/* A queued line reaches stderr about this long after it was handed over, or sooner. */
#define LOG_GATHER_MS 5
int log_writer_start(void);
void log_writer_stop(void);
unsigned long log_dropped_lines(void);
#endif
