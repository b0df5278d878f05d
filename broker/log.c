/* log.c — JSON lines on stderr (see log.h).
 * Owns the line format, the level filter and the writer thread. Never receives
 * secrets: callers pass ids, routes and statuses only. A line, or a worker's lines of
 * one loop turn, is appended to the writer's queue in one piece (or written with one
 * write(2) when no writer runs: start-up, the CLI). Tested by the logs integration
 * tests, which also scan the log for every secret a flow used, and by the unit tests. */
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

/* Writes p to fd; returns the bytes written: all of them, unless fd is non-blocking and
 * full. A closed or failing stderr loses the lines (nothing better to do with them). */
static size_t write_now(int fd, const char *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = write(fd, p + done, len - done);
        if (r > 0)
            done += (size_t)r;
        else if (r < 0 && errno == EAGAIN)
            break;
        else if (!(r < 0 && errno == EINTR))
            return len;
    }
    return done;
}

/* The writer's queue, and who writes to stderr: at most one thread at a time (the writer,
 * or a caller writing directly) holds q_owner, so lines never interleave and stay in
 * order; the others queue. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static buf_t q_buf;
static unsigned long q_lost; /* dropped since the last report */
static int q_state;          /* 0 no writer, 1 running, 2 stopping */
static int q_owner;          /* someone is writing to stderr */
static int q_fd = -1;        /* direct writes: stderr, non-blocking when it is a pipe or terminal */
static int q_direct;         /* direct writes allowed: stderr is a file, or q_fd is non-blocking */
static pthread_t q_thread;
static atomic_ulong g_dropped;

static int queue_pending(void)
{
    return q_buf.len != 0 || q_lost != 0;
}

/* Under q_lock: appends (or, front: puts before what waits) whole lines, or drops them. */
static void queue_locked(const char *p, size_t len, int front)
{
    if (q_buf.len + len > LOG_QUEUE_MAX_BYTES && !front) {
        unsigned long lines = 0;
        for (size_t i = 0; i < len; i++)
            lines += p[i] == '\n';
        q_lost += lines;
        atomic_fetch_add_explicit(&g_dropped, lines, memory_order_relaxed);
    } else if (front && q_buf.len != 0) {
        buf_t b = {0};
        buf_append(&b, p, len);
        buf_append(&b, q_buf.p, q_buf.len);
        buf_free(&q_buf);
        q_buf = b;
    } else {
        buf_append(&q_buf, p, len);
    }
    if (!q_owner)
        pthread_cond_signal(&q_cond);
}

static void *writer_main(void *arg)
{
    buf_t mine = {0};
    (void)arg;
    pthread_setname_np(pthread_self(), "stb-log");
    pthread_mutex_lock(&q_lock);
    for (;;) {
        while ((!queue_pending() || q_owner) && q_state == 1)
            pthread_cond_wait(&q_cond, &q_lock);
        while (q_owner) /* stopping: a direct write still under way */
            pthread_cond_wait(&q_cond, &q_lock);
        if (!queue_pending()) {
            q_state = 0; /* stopping, and everything is written: back to direct writes */
            break;
        }
        if (q_state == 1 && LOG_GATHER_MS > 0) {
            /* let the lines of the next few ms join these: one wake-up and one write for
             * all of them (a wake-up per loop turn would preempt the workers thousands of
             * times a second); nobody writes directly while lines wait */
            struct timespec ts = {0, LOG_GATHER_MS * 1000000L};
            pthread_mutex_unlock(&q_lock);
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&q_lock);
        }
        buf_t t = q_buf;
        q_buf = mine, mine = t;
        unsigned long lost = q_lost;
        q_lost = 0;
        q_owner = 1;
        pthread_mutex_unlock(&q_lock);
        write_now(STDERR_FILENO, mine.p, mine.len);
        mine.len = 0;
        pthread_mutex_lock(&q_lock);
        q_owner = 0;
        if (lost != 0) {
            char n[32];
            snprintf(n, sizeof(n), "%lu", lost);
            pthread_mutex_unlock(&q_lock);
            log_event(LOG_WARN, "log lines dropped: stderr did not keep up", "lines", n, NULL);
            pthread_mutex_lock(&q_lock);
        }
    }
    buf_free(&q_buf);
    pthread_mutex_unlock(&q_lock);
    buf_free(&mine);
    return NULL;
}

/* Whole lines to stderr, in order. direct: written by the caller now, unless lines wait
 * for the writer or stderr is full (then what is left is queued); else queued. Without
 * a writer: written now, blocking. */
static void emit(const char *p, size_t len, int direct)
{
    pthread_mutex_lock(&q_lock);
    if (q_state == 0) {
        pthread_mutex_unlock(&q_lock);
        write_now(STDERR_FILENO, p, len);
        return;
    }
    if (direct && q_direct && !queue_pending() && !q_owner) {
        q_owner = 1;
        pthread_mutex_unlock(&q_lock);
        size_t n = write_now(q_fd, p, len);
        pthread_mutex_lock(&q_lock);
        q_owner = 0;
        p += n, len -= n;
        if (len != 0)
            queue_locked(p, len, 1); /* before anything queued meanwhile: the rest of a line */
        else if (queue_pending() || q_state == 2)
            pthread_cond_signal(&q_cond);
    } else {
        queue_locked(p, len, 0);
    }
    pthread_mutex_unlock(&q_lock);
}

int log_writer_start(void)
{
    struct stat st;
    pthread_mutex_lock(&q_lock);
    int rc = 0;
    if (q_state == 0) {
        /* Direct writes must not block on a reader: a pipe or terminal gets a file
         * description of its own, non-blocking (setting O_NONBLOCK on fd 2 would change
         * it for every process sharing it). Where that cannot be opened — a pipe of
         * another user, as a container runtime's is for a non-root process, or a socket
         * — every line goes through the writer. A file keeps fd 2. */
        q_fd = STDERR_FILENO;
        q_direct = 0;
        if (fstat(STDERR_FILENO, &st) == 0) {
            if (S_ISREG(st.st_mode)) {
                q_direct = 1;
            } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
                int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                if (fd != -1)
                    q_fd = fd, q_direct = 1;
            }
        }
        rc = pthread_create(&q_thread, NULL, writer_main, NULL);
        if (rc == 0)
            q_state = 1;
    }
    pthread_mutex_unlock(&q_lock);
    return rc == 0 ? 0 : -1;
}

void log_writer_stop(void)
{
    pthread_mutex_lock(&q_lock);
    int running = q_state == 1;
    if (running) {
        q_state = 2;
        pthread_cond_signal(&q_cond);
    }
    pthread_mutex_unlock(&q_lock);
    if (!running)
        return;
    pthread_join(q_thread, NULL);
    if (q_fd != STDERR_FILENO)
        close(q_fd);
    q_fd = -1;
}

unsigned long log_dropped_lines(void)
{
    return atomic_load_explicit(&g_dropped, memory_order_relaxed);
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
            log_flush(0);
        return;
    }
    emit(b->p, b->len, 1);
    buf_free(b);
}

void log_batch_start(void)
{
    t_batch = 1;
}

void log_flush(int direct)
{
    if (t_pending.len == 0)
        return;
    emit(t_pending.p, t_pending.len, direct);
    t_pending.len = 0;
}

void log_batch_stop(void)
{
    log_flush(0);
    buf_free(&t_pending);
    t_batch = 0;
}

/* An event line without its closing "}\n". */
static void event_body(buf_t *b, int level, const char *msg, va_list ap)
{
    line_begin(b, level);
    buf_puts(b, ",\"msg\":");
    buf_json_str(b, msg, strlen(msg));
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
}

void log_event(int level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    buf_t own = {0}, *b = line_buf(&own);
    va_list ap;
    va_start(ap, msg);
    event_body(b, level, msg, ap);
    va_end(ap);
    line_end(b);
}

void log_format_event(buf_t *out, int level, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    event_body(out, level, msg, ap);
    va_end(ap);
    buf_puts(out, "}\n");
}

static void raw_body(buf_t *b, int level, const char *json_fields)
{
    line_begin(b, level);
    buf_puts(b, ",");
    buf_puts(b, json_fields);
}

void log_raw(int level, const char *json_fields)
{
    if (!log_enabled(level))
        return;
    buf_t own = {0}, *b = line_buf(&own);
    raw_body(b, level, json_fields);
    line_end(b);
}

void log_format_raw(buf_t *out, int level, const char *json_fields)
{
    raw_body(out, level, json_fields);
    buf_puts(out, "}\n");
}

/* s[0..n) (at most max bytes of it) as the inside of a JSON string: printable ASCII as
 * is, '"' and '\\' escaped, every other byte as \u00XX (so the line stays ASCII and
 * valid whatever the bytes). Returns the bytes written (at most 6 × max). */
static size_t esc(char *dst, const char *s, size_t n, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (s == NULL)
        return 0;
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            dst[o++] = (char)c;
        } else {
            memcpy(dst + o, "\\u00", 4);
            dst[o + 4] = hex[c >> 4];
            dst[o + 5] = hex[c & 0xf];
            o += 6;
        }
    }
    return o;
}

/* Decimal digits of v into out (no NUL); returns the count. */
static size_t fmt_uint(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0, i = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        out[i++] = tmp[--n];
    return i;
}

size_t log_request_fields(char out[LOG_REQUEST_FIELDS_MAX], const log_request_t *r)
{
    size_t n = 0;
    uint64_t dur = r->duration_us;
    /* worst case: 60 bytes of names + 6 × (16 + 16 + 64 + 18) escaped + 2 × 20 digits = 784,
     * + 2 extra fields of 6 × (32 + LOG_EXTRA_VALUE_MAX) + 6 = 1,932: 2,716 < LOG_REQUEST_FIELDS_MAX */
#define PUTS(s) (memcpy(out + n, (s), sizeof(s) - 1), n += sizeof(s) - 1)
    PUTS("\"request_id\":\"");
    n += esc(out + n, r->request_id, r->request_id != NULL ? strlen(r->request_id) : 0, 16);
    PUTS("\",\"method\":\"");
    n += esc(out + n, r->method, r->method_len, 16);
    PUTS("\",\"route\":\"");
    n += esc(out + n, r->route, r->route != NULL ? strlen(r->route) : 0, 64);
    PUTS("\",\"status\":");
    n += fmt_uint(out + n, (uint64_t)(r->status < 0 ? 0 : r->status));
    PUTS(",\"duration_ms\":");
    n += fmt_uint(out + n, dur / 1000);
    out[n++] = '.';
    out[n++] = (char)('0' + dur % 1000 / 100);
    out[n++] = (char)('0' + dur % 100 / 10);
    out[n++] = (char)('0' + dur % 10);
    if (r->org_id != NULL && r->org_id[0] != '\0') {
        PUTS(",\"org_id\":\"");
        n += esc(out + n, r->org_id, strlen(r->org_id), 18);
        out[n++] = '"';
    }
    for (int i = 0; i < 4 && r->extra[i] != NULL; i += 2) {
        out[n++] = ',';
        out[n++] = '"';
        n += esc(out + n, r->extra[i], strlen(r->extra[i]), 32);
        PUTS("\":\"");
        n += esc(out + n, r->extra[i + 1], r->extra[i + 1] != NULL ? strlen(r->extra[i + 1]) : 0, LOG_EXTRA_VALUE_MAX);
        out[n++] = '"';
    }
#undef PUTS
    out[n] = '\0';
    return n;
}
