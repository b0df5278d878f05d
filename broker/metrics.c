/* metrics.c — Prometheus counters and histograms (see metrics.h).
 * Fixed-size tables of relaxed atomics: no allocation and no lock when counting.
 * Labels come from fixed vocabularies (route patterns, status codes, outcome names),
 * never from request data. Tested by the ops integration tests. */
#include "metrics.h"
#include "core/mode.h"
#include "log.h"
#include <stdatomic.h>
#include <string.h>

static const int statuses[] = {200, 201, 204, 303, 400, 401, 403, 404, 405, 409, 413, 429, 500, 502, 503, 0};
#define NSTATUS ((int)(sizeof(statuses) / sizeof(statuses[0])))
static const double buckets_s[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS ((int)(sizeof(buckets_s) / sizeof(buckets_s[0])))
static const char *const stripe_endpoints[] = {"token", "deauthorize"};
static const char *const stripe_outcomes[] = {"ok", "invalid_grant", "rejected", "transient"};
static const char *const refresh_outcomes[] = {"ok", "reused", "failed", "reauthorization_required"};

static const char *const *route_names;
static int nroutes;
static atomic_ulong http_count[METRICS_MAX_ROUTES][NSTATUS];
static atomic_ulong http_bucket[METRICS_MAX_ROUTES][NBUCKETS];
static atomic_ulong http_sum_us[METRICS_MAX_ROUTES];
static atomic_ulong http_total[METRICS_MAX_ROUTES];
static atomic_ulong stripe_count[2][4];
static atomic_ulong refresh_count[MODE_COUNT][4];
static atomic_ulong redis_errors;
/* [mode][resource index, the last one "other"][status - 100]: zero pages cost nothing */
static const char *const *proxy_names;
static int nproxy;
static atomic_ulong proxy_count[2][METRICS_MAX_PROXY_RESOURCES + 1][500];
#define NCACHE 5
static atomic_ulong cache_count[NCACHE];
static const char *const cache_events[NCACHE] = {"hit", "miss", "invalidation", "probe", "flush"};

static int index_of(const char *const *names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

void metrics_init(const char *const *names, int n)
{
    route_names = names;
    nroutes = n < METRICS_MAX_ROUTES ? n : METRICS_MAX_ROUTES;
}

void metrics_http(int route, int status, uint64_t duration_us)
{
    if (route < 0 || route >= nroutes)
        return;
    int s = NSTATUS - 1;
    for (int i = 0; i < NSTATUS - 1; i++)
        if (statuses[i] == status)
            s = i;
    atomic_fetch_add_explicit(&http_count[route][s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&http_sum_us[route], duration_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&http_total[route], 1, memory_order_relaxed);
    for (int i = 0; i < NBUCKETS; i++)
        if ((double)duration_us / 1e6 <= buckets_s[i]) {
            atomic_fetch_add_explicit(&http_bucket[route][i], 1, memory_order_relaxed);
            break;
        }
}

void metrics_stripe(const char *endpoint, const char *outcome)
{
    int e = index_of(stripe_endpoints, 2, endpoint), o = index_of(stripe_outcomes, 4, outcome);
    if (e >= 0 && o >= 0)
        atomic_fetch_add_explicit(&stripe_count[e][o], 1, memory_order_relaxed);
}

void metrics_refresh(const char *mode, const char *outcome)
{
    int m = mode != NULL ? mode_parse(mode, strlen(mode)) : -1, o = index_of(refresh_outcomes, 4, outcome);
    if (m >= 0 && o >= 0)
        atomic_fetch_add_explicit(&refresh_count[m][o], 1, memory_order_relaxed);
}

void metrics_proxy_init(const char *const *names, int n)
{
    proxy_names = names;
    nproxy = n < METRICS_MAX_PROXY_RESOURCES ? n : METRICS_MAX_PROXY_RESOURCES;
}

void metrics_proxy(int mode, int resource, int status)
{
    if (mode < 0 || mode >= MODE_COUNT || status < 100 || status > 599)
        return;
    int r = resource >= 0 && resource < nproxy ? resource : METRICS_MAX_PROXY_RESOURCES;
    atomic_fetch_add_explicit(&proxy_count[mode][r][status - 100], 1, memory_order_relaxed);
}

void metrics_redis_error(void)
{
    atomic_fetch_add_explicit(&redis_errors, 1, memory_order_relaxed);
}

void metrics_cache(uint64_t hits, uint64_t misses, uint64_t invalidations, uint64_t probes, uint64_t flushes)
{
    const uint64_t v[NCACHE] = {hits, misses, invalidations, probes, flushes};
    for (int i = 0; i < NCACHE; i++)
        if (v[i] != 0)
            atomic_fetch_add_explicit(&cache_count[i], v[i], memory_order_relaxed);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void metrics_render(buf_t *out)
{
    buf_puts(out, "# HELP stb_build_info Build information.\n# TYPE stb_build_info gauge\n");
    buf_printf(out, "stb_build_info{version=\"%s\"} 1\n", BROKER_VERSION);

    buf_puts(out, "# HELP stb_http_requests_total HTTP requests by route and status.\n"
                  "# TYPE stb_http_requests_total counter\n");
    for (int r = 0; r < nroutes; r++)
        for (int s = 0; s < NSTATUS; s++) {
            unsigned long v = LOAD(http_count[r][s]);
            if (v == 0)
                continue;
            if (statuses[s] != 0)
                buf_printf(out, "stb_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n", route_names[r], statuses[s], v);
            else
                buf_printf(out, "stb_http_requests_total{route=\"%s\",status=\"other\"} %lu\n", route_names[r], v);
        }

    buf_puts(out, "# HELP stb_http_request_duration_seconds Time from request to answer.\n"
                  "# TYPE stb_http_request_duration_seconds histogram\n");
    for (int r = 0; r < nroutes; r++) {
        unsigned long total = LOAD(http_total[r]), cum = 0;
        if (total == 0)
            continue;
        for (int i = 0; i < NBUCKETS; i++) {
            cum += LOAD(http_bucket[r][i]);
            buf_printf(out, "stb_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %lu\n", route_names[r],
                       buckets_s[i], cum);
        }
        buf_printf(out, "stb_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %lu\n", route_names[r], total);
        buf_printf(out, "stb_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_names[r],
                   LOAD(http_sum_us[r]) / 1e6);
        buf_printf(out, "stb_http_request_duration_seconds_count{route=\"%s\"} %lu\n", route_names[r], total);
    }

    buf_puts(out, "# HELP stb_stripe_requests_total Calls to Stripe by endpoint and outcome.\n"
                  "# TYPE stb_stripe_requests_total counter\n");
    for (int e = 0; e < 2; e++)
        for (int o = 0; o < 4; o++)
            buf_printf(out, "stb_stripe_requests_total{endpoint=\"%s\",outcome=\"%s\"} %lu\n", stripe_endpoints[e],
                       stripe_outcomes[o], LOAD(stripe_count[e][o]));

    buf_puts(out, "# HELP stb_token_refreshes_total Token mints and refreshes by mode and outcome.\n"
                  "# TYPE stb_token_refreshes_total counter\n");
    for (int m = 0; m < 2; m++)
        for (int o = 0; o < 4; o++)
            buf_printf(out, "stb_token_refreshes_total{mode=\"%s\",outcome=\"%s\"} %lu\n", mode_name(m),
                       refresh_outcomes[o], LOAD(refresh_count[m][o]));

    buf_puts(out, "# HELP stb_proxy_requests_total Calls to the Stripe proxy by mode, resource and status.\n"
                  "# TYPE stb_proxy_requests_total counter\n");
    for (int m = 0; m < 2; m++)
        for (int r = 0; r <= METRICS_MAX_PROXY_RESOURCES; r++) {
            if (r >= nproxy && r != METRICS_MAX_PROXY_RESOURCES)
                continue;
            for (int s = 0; s < 500; s++) {
                unsigned long v = LOAD(proxy_count[m][r][s]);
                if (v != 0)
                    buf_printf(out, "stb_proxy_requests_total{mode=\"%s\",resource=\"%s\",status=\"%d\"} %lu\n",
                               mode_name(m), r < nproxy ? proxy_names[r] : "other", s + 100, v);
            }
        }

    buf_puts(out, "# HELP stb_redis_errors_total Redis failures (disconnects, errors, timeouts).\n"
                  "# TYPE stb_redis_errors_total counter\n");
    buf_printf(out, "stb_redis_errors_total %lu\n", LOAD(redis_errors));
    buf_puts(out, "# HELP stb_log_lines_dropped_total Log lines dropped because stderr did not keep up.\n"
                  "# TYPE stb_log_lines_dropped_total counter\n");
    buf_printf(out, "stb_log_lines_dropped_total %lu\n", log_dropped_lines());

    buf_puts(out, "# HELP stb_read_cache_events_total Read cache of key and connection records: lookups "
                  "(hit, miss), invalidations received from Redis, probes sent while busy, and flushes "
                  "(the whole cache dropped: Redis FLUSHALL, or a tracking session that ended).\n"
                  "# TYPE stb_read_cache_events_total counter\n");
    for (int i = 0; i < NCACHE; i++)
        buf_printf(out, "stb_read_cache_events_total{event=\"%s\"} %lu\n", cache_events[i], LOAD(cache_count[i]));
}
