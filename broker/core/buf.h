/* buf.h — a growable byte buffer used to build JSON, HTML and request bodies.
 * Allocation failure aborts the process (the broker cannot do anything sensible
 * without memory). buf_wipe() zeroes the contents before freeing: use it for
 * anything that held a secret. */
#ifndef BROKER_CORE_BUF_H
#define BROKER_CORE_BUF_H
#include <stddef.h>

typedef struct buf {
    char *p;    /* always NUL-terminated once anything was appended */
    size_t len; /* bytes in use, excluding the NUL */
    size_t cap; /* bytes allocated */
} buf_t;

void buf_append(buf_t *b, const void *data, size_t len);
void buf_puts(buf_t *b, const char *s);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal, quotes included. Control characters and < > &
 * are written as \u00XX (so a JSON body is never sniffed as HTML); invalid UTF-8
 * bytes become U+FFFD, so the output is always valid JSON. */
void buf_json_str(buf_t *b, const char *s, size_t len);
void buf_reset(buf_t *b);
void buf_free(buf_t *b);
void buf_wipe(buf_t *b);
#endif
