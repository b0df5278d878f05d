/* fuzz_keyring.c — keyring_parse on any BROKER_ENCRYPTION_KEYS value. A parsed ring
 * has unique, well-formed key ids; a failure always comes with a description. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/seal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = malloc(size + 1);
    seal_keyring_t kr;
    const char *err = NULL;
    size_t i, j;

    memcpy(spec, data, size);
    spec[size] = '\0';
    if (keyring_parse(spec, &kr, &err) == 0) {
        if (kr.n == 0)
            abort();
        for (i = 0; i < kr.n; i++) {
            size_t len = strlen(kr.keys[i].kid);
            if (len == 0 || len > SEAL_KID_MAX)
                abort();
            for (j = 0; j < i; j++)
                if (strcmp(kr.keys[i].kid, kr.keys[j].kid) == 0)
                    abort();
        }
        keyring_free(&kr);
    } else if (err == NULL || kr.keys != NULL) {
        abort();
    }
    free(spec);
    return 0;
}
