/* buf.c — growable byte buffers for JSON, HTML and request bodies.
 *
 * Owns: the buffer memory and JSON string escaping. The buffer always stays
 * NUL-terminated once anything was appended, so b->p can be handed to C string
 * functions. Allocation failure aborts: the broker cannot continue without memory.
 * Never: logs or inspects contents; leaves a copy behind when it grows (the old block
 * is wiped before it is freed); buf_wipe() zeroes before freeing so buffers that
 * held a secret leave nothing behind (buf_reset keeps the memory and zeroes too).
 * Tested by: tests/unit/test_buf.c (growth, printf, JSON escaping, invalid UTF-8),
 * tests/unit/test_wipe.c (no freed block holds a secret). */
#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define BUF_MIN_CAP_BYTES 64

/* Make room for `extra` more bytes plus the NUL; aborts on overflow or OOM. The
 * buffer grows by allocate, copy, wipe, free, never realloc: realloc may move the
 * contents and free the old block without wiping it, and any buffer may be building
 * an answer that holds a token. */
static void buf_reserve(buf_t *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > SIZE_MAX - b->len - 1)
        abort();
    need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    cap = b->cap < BUF_MIN_CAP_BYTES ? BUF_MIN_CAP_BYTES : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = malloc(cap);
    if (p == NULL)
        abort();
    if (b->p != NULL) {
        memcpy(p, b->p, b->len + 1);
        explicit_bzero(b->p, b->cap);
        free(b->p);
    }
    b->p = p;
    b->cap = cap;
}

void buf_append(buf_t *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len > 0)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

void buf_puts(buf_t *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap, ap2;
    int n;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    buf_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s[0..len), or 0 when it is not one
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_seq_len(const unsigned char *s, size_t len)
{
    size_t n, i;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Quotes, backslashes and control characters are escaped; invalid UTF-8 becomes
 * U+FFFD so that the output is always valid JSON. '<', '>' and '&' are escaped too,
 * so a JSON body can never be sniffed into markup. */
void buf_json_str(buf_t *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, n;

    buf_append(b, "\"", 1);
    while (i < len) {
        unsigned char c = u[i];
        switch (c) {
        case '"': buf_append(b, "\\\"", 2); i++; continue;
        case '\\': buf_append(b, "\\\\", 2); i++; continue;
        case '\n': buf_append(b, "\\n", 2); i++; continue;
        case '\r': buf_append(b, "\\r", 2); i++; continue;
        case '\t': buf_append(b, "\\t", 2); i++; continue;
        case '<': case '>': case '&':
            buf_printf(b, "\\u%04x", c);
            i++;
            continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7f) {
            buf_printf(b, "\\u%04x", c);
            i++;
        } else if ((n = utf8_seq_len(u + i, len - i)) == 0) {
            buf_append(b, "\\ufffd", 6);
            i++;
        } else {
            buf_append(b, u + i, n);
            i += n;
        }
    }
    buf_append(b, "\"", 1);
}

void buf_reset(buf_t *b)
{
    if (b->p != NULL) {
        explicit_bzero(b->p, b->cap);
        b->p[0] = '\0';
    }
    b->len = 0;
}

void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void buf_wipe(buf_t *b)
{
    if (b->p != NULL)
        explicit_bzero(b->p, b->cap);
    buf_free(b);
}
