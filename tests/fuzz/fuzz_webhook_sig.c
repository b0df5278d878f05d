/* fuzz_webhook_sig.c — whsig_verify on any header and payload. The input is
 * "<header>\n<payload>"; the verifier must never crash or accept a forged header.
 * Also checks that a header signed correctly by the harness is accepted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/webhook_sig.h"

#define SECRET "whsec_fuzz"
#define NOW 1700000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t hlen = nl != NULL ? (size_t)(nl - s) : size;
    const char *payload = nl != NULL ? nl + 1 : "";
    size_t plen = nl != NULL ? size - hlen - 1 : 0;
    unsigned char mac[32];
    char hex[65], header[96], *msg;
    int rc;

    rc = whsig_verify(s, hlen, payload, plen, SECRET, NOW, WEBHOOK_TOLERANCE_S);
    if (rc > 0 || rc < WHSIG_MISMATCH || whsig_reason(rc) == NULL)
        abort();
    /* the payload signed properly must verify */
    msg = malloc(plen + 16);
    memcpy(msg, "1700000000.", 11);
    if (plen > 0)
        memcpy(msg + 11, payload, plen);
    hmac_sha256(SECRET, strlen(SECRET), msg, plen + 11, mac);
    hex_encode(mac, sizeof(mac), hex);
    snprintf(header, sizeof(header), "t=1700000000,v1=%s", hex);
    if (whsig_verify(header, strlen(header), payload, plen, SECRET, NOW, 300) != WHSIG_OK)
        abort();
    free(msg);
    return 0;
}
