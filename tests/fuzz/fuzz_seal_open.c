/* fuzz_seal_open.c — seal_open and seal_kid on any stored value (a tampered or
 * corrupt Redis record). Also seals the input as a plaintext and checks that it
 * opens to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/seal.h"

static seal_keyring_t ring;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *err;

    if (keyring_parse("k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=,"
                      "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                      &ring, &err) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char kid[SEAL_KID_MAX + 1], *pt = NULL, *sealed;
    size_t ptlen = 0;
    int rc;

    rc = seal_open(&ring, s, size, "00D000000000001EAA", "live", "connection", &pt, &ptlen);
    if (rc == SEAL_OK)
        secure_free(pt, ptlen + 1); /* possible only for a value the harness sealed */
    else if (pt != NULL || rc < SEAL_ERR_AUTH || rc > SEAL_OK)
        abort();
    rc = seal_kid(s, size, kid);
    if (rc == SEAL_OK && (strlen(kid) == 0 || strlen(kid) > SEAL_KID_MAX))
        abort();
    sealed = seal_seal(&ring, "00D000000000001EAA", "test", "f", data, size);
    if (seal_open(&ring, sealed, strlen(sealed), "00D000000000001EAA", "test", "f", &pt,
                  &ptlen) != SEAL_OK ||
        ptlen != size || (size > 0 && memcmp(pt, data, size) != 0))
        abort();
    secure_free(pt, ptlen + 1);
    free(sealed);
    return 0;
}
