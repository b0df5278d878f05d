/* fuzz_record.c — conn_record_decode on any JSON. A record that decodes must encode
 * and decode again to the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/record.h"

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    conn_record_t r, back;
    char *json;

    if (conn_record_decode((const char *)data, size, &r) != 0)
        return 0;
    json = conn_record_encode(&r);
    if (conn_record_decode(json, strlen(json), &back) != 0)
        abort();
    if (r.status != back.status || !same_str(r.access_token, back.access_token) ||
        !same_str(r.refresh_token, back.refresh_token) ||
        !same_str(r.stripe_user_id, back.stripe_user_id) ||
        !same_str(r.stripe_publishable_key, back.stripe_publishable_key) ||
        !same_str(r.scope, back.scope) || r.livemode != back.livemode ||
        r.connected_at != back.connected_at || r.refreshed_at != back.refreshed_at ||
        r.expires_at != back.expires_at || strcmp(r.derived_from, back.derived_from) != 0)
        abort();
    secure_free_str(json);
    conn_record_clear(&r);
    conn_record_clear(&back);
    return 0;
}
