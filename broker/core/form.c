/* form.c — percent-decoding of query strings and form bodies, and form encoding.
 *
 * Owns: the one decoder every route uses for ?query and x-www-form-urlencoded
 * bodies. It is strict: a '%' not followed by two hex digits, a NUL byte (literal or
 * %00) anywhere, or a parameter given twice makes the whole string malformed, so two
 * components can never disagree about what a request said. Names are compared after
 * decoding ("a%62=1" is "ab"). Empty segments ("a=1&&b=2") are skipped; a segment
 * without '=' is a name with an empty value.
 * Never: logs (values may be codes, states or secrets); picks one of two duplicates.
 * Decoded values that are not returned are wiped before they are freed.
 * Tested by: tests/unit/test_form.c and tests/fuzz/fuzz_form.c. */
#include "form.h"

#include <stdlib.h>
#include <string.h>

#include "crypto.h"

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

ssize_t form_unescape(const char *src, size_t len, char *dst, int plus_is_space)
{
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            int hi, lo;
            if (len - i < 3)
                return -1;
            hi = hex_value((unsigned char)src[i + 1]);
            lo = hex_value((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0')
            return -1;
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
    return (ssize_t)o;
}

/* Decode s[0..len) into a fresh buffer; NULL when malformed. */
static char *decode_dup(const char *s, size_t len)
{
    char *d = malloc(len + 1);

    if (d == NULL)
        abort();
    if (form_unescape(s, len, d, 1) < 0) {
        secure_free(d, len + 1);
        return NULL;
    }
    return d;
}

int form_get(const char *qs, size_t len, const char *name, char **out)
{
    const char *p, *end;
    char *found = NULL, *key = NULL, *value = NULL;
    int rc = -1;

    *out = NULL;
    if (qs == NULL || len == 0)
        return 0;
    p = qs;
    end = qs + len;
    for (;;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *val = eq != NULL ? eq + 1 : pair_end;

        if (pair_end > p) {
            key = decode_dup(p, (size_t)((eq != NULL ? eq : pair_end) - p));
            value = decode_dup(val, (size_t)(pair_end - val));
            if (key == NULL || value == NULL)
                goto out;
            if (strcmp(key, name) == 0) {
                if (found != NULL)
                    goto out; /* given twice: ambiguous */
                found = value;
                value = NULL;
            }
            free(key);
            secure_free_str(value);
            key = value = NULL;
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    if (found != NULL) {
        *out = found;
        found = NULL;
        rc = 1;
    } else {
        rc = 0;
    }
out:
    free(key);
    secure_free_str(value);
    secure_free_str(found);
    return rc;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static void append_encoded(buf_t *b, const char *s)
{
    static const char digits[] = "0123456789ABCDEF";
    const unsigned char *u = (const unsigned char *)s;

    for (; *u != '\0'; u++) {
        if (is_unreserved(*u)) {
            buf_append(b, u, 1);
        } else {
            char esc[3] = {'%', digits[*u >> 4], digits[*u & 0x0f]};
            buf_append(b, esc, sizeof(esc));
        }
    }
}

void form_append(buf_t *b, const char *name, const char *value)
{
    if (b->len > 0 && b->p[b->len - 1] != '?' && b->p[b->len - 1] != '&')
        buf_append(b, "&", 1);
    append_encoded(b, name);
    buf_append(b, "=", 1);
    append_encoded(b, value);
}
