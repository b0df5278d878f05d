/* fuzz_form.c — form_unescape and form_get on any bytes. Checks that a value that
 * form_get returns survives form_append + form_get unchanged. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"a", "mode", "code", "state", "return_url", ""};
    const char *s = (const char *)data;
    char *dst = malloc(size + 1);
    ssize_t n;
    size_t i;

    n = form_unescape(s, size, dst, size > 0 && (data[0] & 1));
    if (n > (ssize_t)size || (n >= 0 && (strlen(dst) != (size_t)n)))
        abort();
    free(dst);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *v = NULL;
        int rc = form_get(s, size, names[i], &v);
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
