/* log.h — one JSON object per line on stderr (CONTRACT §7).
 * Lines are whole when written: a thread writes one line, or (worker threads, after
 * log_batch_start) every line of its loop turn, with a single write(2), so threads
 * never interleave. Callers
 * pass only non-secret values: no token, code, key, ticket, state or cookie value
 * ever reaches this module. */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(int level);
int log_enabled(int level);
/* An event line: {"ts","level","msg", then each "key", "value" string pair}.
 * The variadic list is key/value C strings terminated by NULL. */
void log_event(int level, const char *msg, ...);
/* Append a raw, already JSON-encoded line body (used by the request logger). */
void log_raw(int level, const char *json_fields);
/* From now on, this thread's lines wait in a buffer until log_flush() (worker threads
 * call it after every loop turn) or until LOG_BATCH_BYTES are waiting. */
#define LOG_BATCH_BYTES 16384
void log_batch_start(void);
void log_flush(void);
#endif
