/* form.c — percent-decoding of query strings and form bodies, and form encoding.
 *
 * Owns: the one decoder every route uses for ?query and x-www-form-urlencoded
 * bodies. It is strict: a '%' not followed by two hex digits, a NUL byte (literal or
 * %00) anywhere, or a parameter given twice makes the whole string malformed, so two
 * components can never disagree about what a request said. Names are compared after
 * decoding ("a%62=1" is "ab"). Empty segments ("a=1&&b=2") are skipped; a segment
 * without '=' is a name with an empty value.
 * Never: logs (values may be codes, states or secrets); picks one of two duplicates.
 * Only the value returned is copied: other segments are checked (and names compared)
 * without a copy of any value.
 * Tested by: tests/unit/test_form.c and tests/fuzz/fuzz_form.c. */
#include "form.h"

#include <stdlib.h>
#include <string.h>
#include "core/crypto.h"


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
        if (dst != NULL)
            dst[o] = (char)c;
        o++;
    }
    if (dst != NULL)
        dst[o] = '\0';
    return (ssize_t)o;
}

/* 1 when src[0..len) decodes to exactly name (nlen bytes), 0 when not, -1 when it is
 * malformed. A segment over three bytes per byte of name cannot decode to it, and is
 * only checked. */
static int decodes_to(const char *src, size_t len, const char *name, size_t nlen)
{
    char small[128], *tmp = small;
    ssize_t n;
    int rc;

    if (len > 3 * nlen)
        return form_unescape(src, len, NULL, 1) < 0 ? -1 : 0;
    if (len >= sizeof(small) && (tmp = malloc(len + 1)) == NULL)
        abort();
    n = form_unescape(src, len, tmp, 1);
    rc = n < 0 ? -1 : (size_t)n == nlen && memcmp(tmp, name, nlen) == 0;
    if (tmp != small)
        free(tmp);
    return rc;
}

/* Find name in qs[0..len): 1 and its raw (still escaped) value in *val, *vlen; 0 absent;
 * -1 malformed or given twice. */
static int form_find(const char *qs, size_t len, const char *name, const char **val, size_t *vlen)
{
    const char *p, *end, *found = NULL;
    size_t found_len = 0, nlen = strlen(name);

    if (qs == NULL || len == 0)
        return 0;
    p = qs;
    end = qs + len;
    for (;;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *v = eq != NULL ? eq + 1 : pair_end;

        if (pair_end > p) {
            int match = decodes_to(p, (size_t)((eq != NULL ? eq : pair_end) - p), name, nlen);
            if (match < 0 || form_unescape(v, (size_t)(pair_end - v), NULL, 1) < 0)
                return -1;
            if (match) {
                if (found != NULL)
                    return -1; /* given twice: ambiguous */
                found = v;
                found_len = (size_t)(pair_end - v);
            }
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    if (found == NULL)
        return 0;
    *val = found;
    *vlen = found_len;
    return 1;
}

int form_get(const char *qs, size_t len, const char *name, char **out)
{
    const char *val;
    size_t vlen;
    int rc = form_find(qs, len, name, &val, &vlen);

    *out = NULL;
    if (rc != 1)
        return rc;
    if ((*out = malloc(vlen + 1)) == NULL)
        abort();
    form_unescape(val, vlen, *out, 1); /* checked by form_find */
    return 1;
}

int form_get_buf(const char *qs, size_t len, const char *name, char *dst, size_t cap)
{
    const char *val;
    size_t vlen;
    int rc = form_find(qs, len, name, &val, &vlen);

    if (cap > 0)
        dst[0] = '\0';
    if (rc != 1)
        return rc;
    if (vlen >= cap)
        return 2;
    form_unescape(val, vlen, dst, 1); /* checked by form_find; decodes to at most vlen bytes */
    return 1;
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
