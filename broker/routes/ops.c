/* ops.c — /healthz, /readyz, /metrics and /openapi.yaml (README "The API", deploy/README.md).
 * Owns nothing but these answers; /openapi.yaml is proto/openapi.yaml compiled into
 * the binary so that the served contract is always the one it was built with.
 * Tested by tests/it/test_ops.py. */
#include "events/events.h"
#include <string.h>
#include "metrics.h"
#include "routes/routes.h"

/* proto/openapi.yaml, embedded at build time */
__asm__(".section .rodata\n"
        ".global openapi_yaml_start\n"
        "openapi_yaml_start:\n"
        ".incbin \"proto/openapi.yaml\"\n"
        ".global openapi_yaml_end\n"
        "openapi_yaml_end:\n"
        ".byte 0\n"
        ".previous\n");
extern const char openapi_yaml_start[], openapi_yaml_end[];

void ops_healthz(breq_t *b)
{
    static const char body[] = "{\"status\":\"ok\"}";
    breq_json(b, 200, body, sizeof(body) - 1);
}

static void on_ping(breq_t *b, redisReply *r)
{
    static const char body[] = "{\"status\":\"ready\"}";
    breq_json(b, 200, body, sizeof(body) - 1);
}

void ops_readyz(breq_t *b)
{
    breq_redis(b, on_ping, "PING");
}

void ops_metrics(breq_t *b)
{
    buf_t out = {0};
    metrics_render(&out);
    events_render_metrics(&out);
    breq_text(b, 200, "text/plain; version=0.0.4; charset=utf-8", out.p, out.len);
    buf_free(&out);
}

void ops_openapi(breq_t *b)
{
    breq_text(b, 200, "application/yaml", openapi_yaml_start, (size_t)(openapi_yaml_end - openapi_yaml_start));
}
