/* log.c — JSON lines on stderr (see log.h).
 * Owns the line format and the level filter. Never receives secrets: callers pass
 * ids, routes and statuses only. A line is one write(2), or a worker's lines of one
 * loop turn are (one write per turn instead of one per request). Tested by the logs
 * integration tests, which also scan the log for every secret a flow used. */
#include "log.h"
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "core/buf.h"

static atomic_int g_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level)
{
    atomic_store(&g_level, level);
}

int log_enabled(int level)
{
    return level >= atomic_load(&g_level);
}

/* The timestamp's seconds are formatted once per second per thread (one log line per
 * request makes printf the largest cost of a cached getAccessToken otherwise). */
static __thread time_t t_sec = -1;
static __thread char t_prefix[64]; /* "YYYY-MM-DDTHH:MM:SS." */

static void line_begin(buf_t *b, int level)
{
    struct timeval tv;
    char ms[4];
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != t_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        snprintf(t_prefix, sizeof(t_prefix), "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        t_sec = tv.tv_sec;
    }
    int m = (int)(tv.tv_usec / 1000);
    ms[0] = (char)('0' + m / 100), ms[1] = (char)('0' + m / 10 % 10), ms[2] = (char)('0' + m % 10), ms[3] = '\0';
    buf_puts(b, "{\"ts\":\"");
    buf_puts(b, t_prefix);
    buf_puts(b, ms);
    buf_puts(b, "Z\",\"level\":\"");
    buf_puts(b, level_names[level]);
    buf_puts(b, "\"");
}

static __thread int t_batch;
static __thread buf_t t_pending;

static void write_all(const char *p, size_t len)
{
    ssize_t r = write(STDERR_FILENO, p, len);
    (void)r; /* a full or closed stderr loses the line; nothing better to do with it */
}

/* Where this thread's next line is built: the batch, or a buffer of its own. */
static buf_t *line_buf(buf_t *own)
{
    return t_batch ? &t_pending : own;
}

static void line_end(buf_t *b)
{
    buf_puts(b, "}\n");
    if (b == &t_pending) {
        if (t_pending.len >= LOG_BATCH_BYTES)
            log_flush();
        return;
    }
    write_all(b->p, b->len);
    buf_free(b);
}

void log_batch_start(void)
{
    t_batch = 1;
}

void log_flush(void)
{
    if (t_pending.len == 0)
        return;
    write_all(t_pending.p, t_pending.len);
    t_pending.len = 0;
}

void log_event(int level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    buf_t own = {0}, *b = line_buf(&own);
    va_list ap;
    line_begin(b, level);
    buf_puts(b, ",\"msg\":");
    buf_json_str(b, msg, strlen(msg));
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        buf_puts(b, ",");
        buf_json_str(b, k, strlen(k));
        buf_puts(b, ":");
        buf_json_str(b, v != NULL ? v : "", v != NULL ? strlen(v) : 0);
    }
    va_end(ap);
    line_end(b);
}

void log_raw(int level, const char *json_fields)
{
    if (!log_enabled(level))
        return;
    buf_t own = {0}, *b = line_buf(&own);
    line_begin(b, level);
    buf_puts(b, ",");
    buf_puts(b, json_fields);
    line_end(b);
}
