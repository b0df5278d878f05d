/* fuzz_stripe_resp.c — stripe_token_parse and stripe_deauth_parse on any status and
 * body. The first byte picks the HTTP status; the rest is the body. Checks the
 * invariants of each outcome (a token only on OK; deauthorize done only on a 2xx, "not
 * connected" only on a 400/401; err made of [a-z_] only). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/stripe_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {0, 200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503};
    stripe_token_t tok;
    char err[64];
    stripe_outcome_t o;
    long status;
    size_t i;

    if (size == 0)
        return 0;
    status = statuses[data[0] % (sizeof(statuses) / sizeof(statuses[0]))];
    o = stripe_token_parse(status, (const char *)data + 1, size - 1, &tok, err);
    if (o == STRIPE_OK) {
        if (tok.access_token == NULL || tok.stripe_user_id == NULL || status < 200 || status > 299)
            abort();
    } else if (tok.access_token != NULL || tok.refresh_token != NULL) {
        abort();
    }
    if (strlen(err) > 63)
        abort();
    for (i = 0; err[i] != '\0'; i++)
        if (!((err[i] >= 'a' && err[i] <= 'z') || err[i] == '_'))
            abort();
    if (stripe_outcome_name(o) == NULL)
        abort();
    stripe_token_clear(&tok);

    stripe_deauth_t d = stripe_deauth_parse(status, (const char *)data + 1, size - 1, "acct_1", err);
    if ((d == STRIPE_DEAUTH_DONE && (status < 200 || status > 299)) ||
        (d == STRIPE_DEAUTH_NOT_CONNECTED && status != 400 && status != 401))
        abort();
    if (strlen(err) > 63)
        abort();
    for (i = 0; err[i] != '\0'; i++)
        if (!((err[i] >= 'a' && err[i] <= 'z') || err[i] == '_'))
            abort();
    return 0;
}
