"""The read cache never serves what another replica already changed (DESIGN: "caches
are only an optimisation and must respect revocation within 1 s"; broker/store/rcache.h).

Two replicas share one Redis. Replica B's workers cache the key record and the sealed
connection after reading them; every write on replica A (a rotation, a deleted
connection, a revoked key), or straight into Redis, must be seen by B's very next
request — not after a delay. A warm cache must also not hide a stalled Redis: a
cached answer waits for a barrier through Redis, so a paused Redis is still 503.
"""

import os
import shutil
import subprocess
import threading
import time

import harness as h

S = None
B = None          # the second replica
WARM = 8          # requests that warm B's cache on both of its workers


def setup_module():
    global S, B
    S = h.Stack("cache")
    B = S.new_broker("b")


def teardown_module():
    S.close()


def setup_function():
    S.reset()
    assert B.running(), "replica B died"


def teardown_function():
    c = S.rc()
    try:
        c.command("CLIENT", "UNPAUSE")
    finally:
        c.close()


def connected(mode="test"):
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, mode).run()
    key = S.broker.create_api_key(org)["api_key"]
    return org, key


def warm(org, key, mode="test"):
    """Answers from B until its cache holds them; returns the token."""
    toks = set()
    for _ in range(WARM):
        r = B.access_token(org, mode, token=key)
        h.assert_status(r, 200)
        toks.add(r.json()["access_token"])
    assert len(toks) == 1, toks
    return toks.pop()


def cache_events(b, event):
    for line in b.request("GET", "/metrics").text.splitlines():
        if line.startswith('stb_read_cache_events_total{event="%s"}' % event):
            return int(line.split()[-1])
    raise AssertionError(f"no read cache {event} counter in /metrics")


def cache_hits(b):
    return cache_events(b, "hit")


def test_warm_requests_are_answered_from_the_cache():
    org, key = connected()
    warm(org, key)
    hits = cache_hits(B)
    for _ in range(10):
        h.assert_status(B.access_token(org, "test", token=key), 200)
    # counters are published every 50 ms
    h.wait_until(lambda: cache_hits(B) >= hits + 10, 3, what="read cache hits counted")


def test_rotation_on_one_replica_is_seen_by_the_next_request_on_the_other():
    org, key = connected()
    old = warm(org, key)
    for _ in range(5):
        r = S.broker.request("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test", token=key)
        h.assert_status(r, 200)
        new = r.json()["access_token"]
        assert new != old
        got = B.access_token(org, "test", token=key)
        h.assert_status(got, 200)
        assert got.json()["access_token"] == new, "replica B served the token replica A had just rotated away"
        assert S.sim.token_active(new)
        old = warm(org, key)
        assert old == new


def test_deleted_connection_is_gone_on_the_other_replica_at_once():
    org, key = connected()
    warm(org, key)
    h.assert_status(S.broker.request("DELETE", f"/v1/orgs/{org}/connections/test", token=key), 204)
    h.assert_error(B.access_token(org, "test", token=key), 404, "not_connected")


def test_revoked_key_is_refused_by_the_other_replica_at_once():
    org, key = connected()
    warm(org, key)
    key_id = key.split("_")[1]
    h.assert_status(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{key_id}"), 204)
    h.assert_error(B.access_token(org, "test", token=key), 401, "unauthorized")


def test_a_record_changed_in_redis_directly_is_read_again():
    org, key = connected()
    warm(org, key)
    c = S.rc()
    try:
        k = f"stb:conn:{org}:test"
        v = c.command("GET", k)
        assert v, "no connection record"
        c.command("SET", k, v[:-4] + (b"AAAA" if not v.endswith(b"AAAA") else b"BBBB"))
    finally:
        c.close()
    h.assert_error(B.access_token(org, "test", token=key), 500, "record_unreadable")


def test_a_warm_cache_does_not_hide_a_stalled_redis():
    org, key = connected()
    warm(org, key)
    c = S.rc()
    try:
        c.command("CLIENT", "PAUSE", 2500, "ALL")
        t0 = time.monotonic()
        r = B.access_token(org, "test", token=key)
        h.assert_error(r, 503, "store_unavailable")
        assert time.monotonic() - t0 <= 1.5, f"answered after {time.monotonic() - t0:.2f}s"
    finally:
        c.command("CLIENT", "UNPAUSE")
        c.close()
    r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(B.access_token(org, "test", token=key)),
                     10, interval=0.05, what="200 after the stall")
    assert r.json()["access_token"]


def test_rotation_while_the_other_replica_is_busy():
    """B under load (wrk), so that its workers answer from the cache without a barrier of
    their own (the busy path, rcache.h: a barrier back within RCACHE_FRESH_MS = 10 ms
    covers them). Once A's rotation is answered, B serves the new token within that
    bound (asserted with slack for a loaded machine), and never the old one after it."""
    assert shutil.which("wrk"), "wrk is missing (deploy/scripts/install-deps.sh test installs it)"
    busy = S.new_broker("busy", BROKER_RATE_LIMIT_ORG_PER_S="0")
    try:
        org, key = connected()
        for _ in range(WARM):
            h.assert_status(busy.access_token(org, "test", token=key), 200)
        skipped = cache_events(busy, "barrier_skipped")
        wrk = subprocess.Popen(["wrk", "-t1", "-c16", "-d20s", "-H", f"Authorization: Bearer {key}",
                                busy.url(f"/v1/orgs/{org}/access-token?mode=test")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            h.wait_until(lambda: cache_events(busy, "barrier_skipped") > skipped + 1000, 10,
                         what="the busy path in use")
            for _ in range(10):
                r = S.broker.request("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test", token=key)
                h.assert_status(r, 200)
                new, t0 = r.json()["access_token"], time.monotonic()
                seen = []
                while True:
                    got = busy.access_token(org, "test", token=key)
                    h.assert_status(got, 200)
                    seen.append(got.json()["access_token"])
                    if seen[-1] == new:
                        break
                    assert time.monotonic() - t0 < 0.25, f"still the old token {time.monotonic() - t0:.3f}s after the rotation"
                for _ in range(3):
                    got = busy.access_token(org, "test", token=key)
                    assert got.json()["access_token"] == new, "the old token came back"
        finally:
            wrk.terminate()
            wrk.wait()
    finally:
        busy.stop()
