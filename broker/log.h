/* log.h — one JSON object per line on stderr (CONTRACT §7).
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

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(int level);
int log_enabled(int level);
/* An event line: {"ts","level","msg", then each "key", "value" string pair}.
 * The variadic list is key/value C strings terminated by NULL. */
void log_event(int level, const char *msg, ...);
/* Append a raw, already JSON-encoded line body (used by the request logger). */
void log_raw(int level, const char *json_fields);
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
