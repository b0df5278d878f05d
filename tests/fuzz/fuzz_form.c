/* fuzz_form.c — form_unescape and form_get on any bytes. Checks that form_get agrees
 * with a plain reference (every segment decoded into a copy), that checking without a
 * destination gives the decoder's answer, and that a value that form_get returns
 * survives form_append + form_get unchanged; form_get_buf agrees with form_get. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/form.h"

static void roundtrip(const char *name, const char *value)
{
    buf_t b = {0};
    char *back = NULL;

    form_append(&b, name, value);
    if (form_get(b.p, b.len, name, &back) != 1 || strcmp(back, value) != 0)
        abort();
    free(back);
    buf_free(&b);
}

/* The reference: decode every name and value, compare decoded names. */
static int reference_get(const char *qs, size_t len, const char *name, char **out)
{
    const char *p = qs, *end = qs + len;
    int rc = 0;

    *out = NULL;
    while (len > 0) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *val = eq != NULL ? eq + 1 : pair_end;
        if (pair_end > p) {
            size_t klen = (size_t)((eq != NULL ? eq : pair_end) - p), vlen = (size_t)(pair_end - val);
            char *k = malloc(klen + 1), *v = malloc(vlen + 1);
            int bad = form_unescape(p, klen, k, 1) < 0 || form_unescape(val, vlen, v, 1) < 0;
            int match = !bad && strcmp(k, name) == 0;
            free(k);
            if (bad || (match && *out != NULL)) {
                free(v);
                free(*out);
                *out = NULL;
                return -1;
            }
            if (match)
                *out = v, rc = 1;
            else
                free(v);
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"a", "mode", "code", "state", "return_url", "",
                                        "a_long_name_whose_escaped_form_needs_more_than_128_bytes"};
    const char *s = (const char *)data;
    char *dst = malloc(size + 1);
    ssize_t n;
    size_t i;

    n = form_unescape(s, size, dst, size > 0 && (data[0] & 1));
    if (n > (ssize_t)size || (n >= 0 && (strlen(dst) != (size_t)n)))
        abort();
    if (form_unescape(s, size, NULL, size > 0 && (data[0] & 1)) != n)
        abort();
    free(dst);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *v = NULL, *want = NULL;
        int rc = form_get(s, size, names[i], &v);
        if (reference_get(s, size, names[i], &want) != rc || (rc == 1 && strcmp(v, want) != 0))
            abort();
        free(want);
        {
            char small[8];
            int brc = form_get_buf(s, size, names[i], small, sizeof(small));
            if (rc == 1 ? !(brc == 1 ? strcmp(small, v) == 0 : brc == 2 && small[0] == '\0')
                        : brc != rc || small[0] != '\0')
                abort();
        }
        if (rc == 1) {
            if (v == NULL || strlen(v) > size)
                abort();
            roundtrip(names[i][0] != '\0' ? names[i] : "x", v);
        } else if (v != NULL) {
            abort();
        }
        free(v);
    }
    return 0;
}
