"""The read cache never serves what another replica changed (DESIGN: "caches are only
an optimisation and must respect revocation within 1 s"; broker/store/rcache.h).

Two replicas share one Redis. A quiet replica reads Redis for every request, so it sees
every write at once. A busy replica (wrk on one org, >= BROKER_CACHE_BUSY_RPS on a worker)
answers from its read cache, kept exact by Redis's invalidations and vouched for by a
probe at most 100 ms old: a write on the other replica (a rotation, a deleted
connection, a revoked key, a record changed in Redis) must show within that bound
(asserted against the contract's 1 s, the slack being for a loaded machine), and the old
answer must never come back after. Those tests write while the other replica is busy and
answering from its cache: on a quiet one they would pass with invalidations lost.
"""

import contextlib
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


class Busy:
    """wrk on one org's getAccessToken of a replica, until its cache answers."""

    def __init__(self, broker, org, key):
        self.broker, self.org, self.key = broker, org, key

    def __enter__(self):
        assert shutil.which("wrk"), "wrk is missing (deploy/scripts/install-deps.sh test installs it)"
        hits = cache_events(self.broker, "hit")
        self.p = subprocess.Popen(["wrk", "-t1", "-c16", "-d30s", "-H", f"Authorization: Bearer {self.key}",
                                   self.broker.url(f"/v1/orgs/{self.org}/access-token?mode=test")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        h.wait_until(lambda: cache_events(self.broker, "hit") > hits + 1000, 10,
                     what="the busy replica answering from its cache")
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.wait()


def until(fn, bound=1.0):
    """Call fn until it returns a true value; assert it took less than bound seconds
    (the cache's own bound is 0.1 s; the contract's is 1 s, e.g. "every replica rejects
    that key within 1 second"; the suite runs modules in parallel on two cores)."""
    t0 = time.monotonic()
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() - t0 < bound, f"not seen {time.monotonic() - t0:.3f}s after the change"


@contextlib.contextmanager
def busy_replica():
    """A second replica kept busy (Busy) by a newly connected org: yields (replica, org,
    key). The replica has no per-org rate limit, so that one org can keep it busy, and is
    busy from 500 requests/s per worker (the default is 200; 500 keeps a sanitizer build
    under a parallel suite clearly on one side of the threshold)."""
    busy = S.new_broker(f"busy{h.rand_str(4)}", BROKER_RATE_LIMIT_ORG_PER_S="0", BROKER_CACHE_BUSY_RPS="500")
    try:
        org, key = connected()
        with Busy(busy, org, key):
            yield busy, org, key
    finally:
        busy.stop()


def mget_calls():
    c = S.rc()
    try:
        info = c.command("INFO", "commandstats").decode()
    finally:
        c.close()
    for line in info.splitlines():
        if line.startswith("cmdstat_mget:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


QUIET_GAP_S = 0.02  # 50 requests/s, a quarter of the default BROKER_CACHE_BUSY_RPS (200)


def test_a_quiet_replica_reads_every_request_from_redis():
    """Below BROKER_CACHE_BUSY_RPS a worker reads Redis for every request. The requests
    are spaced to make the load quiet (the pacing is the load, not a wait for a state),
    after two busy windows without requests."""
    org, key = connected()
    warm(org, key)
    time.sleep(0.25)
    before = mget_calls()
    for _ in range(20):
        h.assert_status(B.access_token(org, "test", token=key), 200)
        time.sleep(QUIET_GAP_S)
    assert mget_calls() - before == 20, "a quiet replica answered without reading Redis"


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


def still_serving(busy):
    """Awaits more answers from the busy replica's cache: the write that follows happens
    while the cache is in use, not on a replica that has gone quiet."""
    hits = cache_events(busy, "hit")
    h.wait_until(lambda: cache_events(busy, "hit") > hits + 50, 5, interval=0.01,
                 what="the busy replica still answering from its cache")


def test_rotation_on_one_replica_is_seen_by_the_busy_other():
    with busy_replica() as (busy, org, key):
        old = busy.access_token(org, "test", token=key).json()["access_token"]
        for _ in range(5):
            still_serving(busy)
            r = S.broker.request("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test", token=key)
            h.assert_status(r, 200)
            new = r.json()["access_token"]
            assert new != old
            until(lambda: busy.access_token(org, "test", token=key).json()["access_token"] == new)
            for _ in range(3):
                got = busy.access_token(org, "test", token=key)
                assert got.json()["access_token"] == new, "the old token came back"
            assert S.sim.token_active(new) and not S.sim.token_active(old)
            old = new


def test_deleted_connection_is_gone_on_the_busy_other_replica():
    with busy_replica() as (busy, org, key):
        still_serving(busy)
        h.assert_status(S.broker.request("DELETE", f"/v1/orgs/{org}/connections/test", token=key), 204)
        until(lambda: busy.access_token(org, "test", token=key).status == 404)
        for _ in range(3):
            h.assert_error(busy.access_token(org, "test", token=key), 404, "not_connected")


def test_revoked_key_is_refused_by_the_busy_other_replica():
    with busy_replica() as (busy, org, key):
        other = S.broker.create_api_key(org)["api_key"]
        key_id = key.split("_")[1]
        still_serving(busy)
        h.assert_status(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{key_id}"), 204)
        until(lambda: busy.access_token(org, "test", token=key).status == 401)
        for _ in range(3):
            h.assert_error(busy.access_token(org, "test", token=key), 401, "unauthorized")
        h.assert_status(busy.access_token(org, "test", token=other), 200)


def test_a_record_changed_in_redis_directly_is_read_again_by_a_busy_replica():
    with busy_replica() as (busy, org, key):
        still_serving(busy)
        c = S.rc()
        try:
            k = f"stb:conn:{org}:test"
            v = c.command("GET", k)
            assert v, "no connection record"
            c.command("SET", k, v[:-4] + (b"AAAA" if not v.endswith(b"AAAA") else b"BBBB"))
        finally:
            c.close()
        until(lambda: busy.access_token(org, "test", token=key).status == 500)
        for _ in range(3):
            h.assert_error(busy.access_token(org, "test", token=key), 500, "record_unreadable")


def test_a_busy_replica_still_answers_503_when_redis_stalls():
    with busy_replica() as (busy, org, key):
        c = S.rc()
        try:
            c.command("CLIENT", "PAUSE", 2500, "ALL")
            r = until(lambda: (lambda x: x if x.status == 503 else None)(
                busy.access_token(org, "test", token=key)), bound=2.0)
            h.assert_error(r, 503, "store_unavailable")
        finally:
            c.command("CLIENT", "UNPAUSE")
            c.close()


def test_a_flushall_empties_the_cache_and_is_counted():
    org, key = connected()
    warm(org, key)
    flushes = cache_events(B, "flush")
    c = S.rc()
    try:
        c.command("FLUSHALL")
    finally:
        c.close()
    h.wait_until(lambda: cache_events(B, "flush") > flushes, 5, interval=0.05,
                 what="stb_read_cache_events_total{event=\"flush\"} counting Redis's FLUSHALL")
    r = B.access_token(org, "test", token=key)
    assert r.status == 401, r.describe()


def test_a_lost_invalidation_channel_is_logged_and_counted():
    org, key = connected()
    tok = warm(org, key)
    flushes = cache_events(B, "flush")
    off = B.log_size()
    c = S.rc()
    try:
        assert int(c.command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
    finally:
        c.close()
    h.wait_until(lambda: cache_events(B, "flush") > flushes, 5, interval=0.05,
                 what="a flush counted when the subscriber went away")
    h.wait_until(lambda: any("read cache flushed" in l for l in B.log_lines(off)), 5, interval=0.05,
                 what="a warn line saying the read cache was flushed")
    r = B.access_token(org, "test", token=key)
    h.assert_status(r, 200)
    assert r.json()["access_token"] == tok
