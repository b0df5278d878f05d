/* events.h — a replica's background thread: delivery of events out (deploy/salesforce/EVENTS.md) and
 * the fleet gauge stb_connections{mode,status} (proto/openapi.yaml).
 *
 * Events out. The writers' scripts append each event to the Redis Stream P outbox in the
 * same script as the change (store/audit.h). Delivery is at least once, by one replica
 * at a time: the replica holding the lease P outbox:lease (EVENTS_LEASE_MS, renewed
 * while it works) moves the stream's entries, oldest first, into one queue per org
 * (the list P outbox:q:<org18>) in one script, through the consumer group "deliver":
 * first any entry still pending (XAUTOCLAIM: one a killed replica had read), then new
 * ones (XREADGROUP), each acknowledged and deleted in the same script that queues it.
 * The sorted set P outbox:due holds, for each org with a queue, when its queue's head
 * is due (Redis's clock, ms). The holder POSTs the head of the org due first to
 * BROKER_EVENTS_URL, signed Broker-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>" under BROKER_EVENTS_SECRET>. A 2xx is delivery: the head is popped and
 * the org's next event is due at once. Anything else is retried with exponential
 * back-off and jitter (about 1 s, 2 s, 4 s … up to BROKER_EVENTS_RETRY_MAX_S): the
 * attempt count in P outbox:retry and the org's due time move, so that another replica
 * goes on where a killed one stopped, for EVENTS_GIVE_UP_S (48 h; then the event is
 * dropped with an error log line). So the order of events per org is kept, and an org
 * whose receiver refuses holds back only its own later events, never another org's.
 * One POST at a time. The body, and so the event id, never changes between attempts. A
 * receiver that hangs costs this thread at most EVENTS_POST_TIMEOUT_MS per attempt and
 * never a request: requests run on the workers.
 *
 * The gauge. Every EVENTS_GAUGE_EVERY_S (and at start) each replica counts the stored
 * connections by mode and status (SCAN P conn:*, MGET, opened like any read), so /metrics
 * is current within a minute on every replica. The same pass runs store/audit.h's
 * fleet_sync on every org it finds — with a connection, with API keys (SCAN
 * P org:*:keys), and in the fleet index P orgs itself — so orgs stored before the index
 * existed appear in the fleet view, and orgs left with neither a key nor a connection
 * leave it.
 * Tested by tests/it/test_events.py, tests/it/test_fleet.py, tests/unit/test_audit.c. */
#ifndef BROKER_EVENTS_EVENTS_H
#define BROKER_EVENTS_EVENTS_H
#include <stddef.h>
#include "config.h"
#include "core/buf.h"

#define EVENTS_LEASE_MS 15000
#define EVENTS_POST_TIMEOUT_MS 10000
#define EVENTS_GIVE_UP_S (48 * 3600)
#define EVENTS_GAUGE_EVERY_S 30

/* Start the background thread (the gauge always; delivery when cfg->events_url is set).
 * Returns 0 or -1. */
int events_start(const config_t *cfg);
/* Stop it and wait (an attempt in flight is abandoned: another replica, or this one
 * after a restart, delivers it). */
void events_stop(void);
/* stb_connections{mode,status}, stb_events_deliveries_total{outcome} and
 * stb_events_orgs_waiting (orgs whose queue head was refused and waits for a retry,
 * counted with the gauge: an org held back while others are delivered). */
void events_render_metrics(buf_t *out);

/* The Broker-Signature value for body at time t under secret into out (cap >= 96). */
void events_signature(const char *secret, long t, const char *body, size_t len, char *out, size_t cap);
/* The back-off before attempt n+1 after n failed attempts (n >= 1), in ms, given a
 * uniform random r in [0, 1): min(min(1000·2^(n-1), max_ms) · (0.5 + r), max_ms). */
long events_backoff_ms(int n, long max_ms, double r);
#endif
