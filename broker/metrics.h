/* metrics.h — process-wide counters and histograms, rendered as Prometheus text.
 * Updates are relaxed atomic increments (no lock on the request path); values are
 * approximate only in the sense that a scrape may see a request half-counted. */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H
#include <stdint.h>
#include "core/buf.h"

/* Routes are small integers, names given by metrics_init. */
#define METRICS_MAX_ROUTES 32

void metrics_init(const char *const *route_names, int nroutes);
void metrics_http(int route, int status, uint64_t duration_us);
/* endpoint: "token", "deauthorize"; outcome: "ok", "invalid_grant", "rejected", "transient". */
void metrics_stripe(const char *endpoint, const char *outcome);
/* mode: "test"/"live"; outcome: "ok", "reused", "failed", "reauthorization_required". */
void metrics_refresh(const char *mode, const char *outcome);
void metrics_redis_error(void);
/* The Stripe proxy (README "The path a capture takes"): resource names are the BROKER_PROXY_ALLOW entries
 * (a fixed list given once at start, at most METRICS_MAX_PROXY_RESOURCES); a call counts
 * under mode (MODE_TEST/MODE_LIVE), the resource's index (-1: "other", a path refused
 * before its resource was known) and the status answered (100-599). */
#define METRICS_MAX_PROXY_RESOURCES 32
void metrics_proxy_init(const char *const *resource_names, int n);
void metrics_proxy(int mode, int resource, int status);
/* Read-cache events since the last call (store/rcache.c adds them up per worker and
 * reports them every RCACHE_TICK_MS, so the request path stays free of atomics). */
void metrics_cache(uint64_t hits, uint64_t misses, uint64_t invalidations, uint64_t probes, uint64_t flushes);
void metrics_render(buf_t *out);
#endif
