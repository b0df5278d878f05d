"""Redis faults under a steady load (DESIGN "Failure behaviour", CONTRACT §4, §7).

Redis SIGKILLed and restarted from its append-only file, shut down and restarted,
paused (CLIENT PAUSE), and unreachable when the broker starts (refused, and a black
hole that accepts but never answers). Each test asserts that the broker never crashes,
answers every request within its deadline (503 store_unavailable within 1 s), recovers
by itself, leaks no descriptor or memory, and keeps every stored record byte for byte.
"""

import socket
import time

import faultlib as F

h = F.h
S = None


def setup_module():
    global S
    S = F.AofStack("fredis", **F.fault_env())


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def teardown_function():
    S.redis.ensure_running()
    try:
        c = S.rc()
        c.command("CLIENT", "UNPAUSE")
        c.close()
    except OSError:
        pass


def connected():
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "test").run()
    key = S.broker.create_api_key(org)["api_key"]
    r = S.broker.access_token(org, "test", token=key)
    h.assert_status(r, 200)
    return org, key, r.json()["access_token"]


def token_path(org):
    return f"/v1/orgs/{org}/access-token?mode=test"


def warm_and_measure(org, key):
    """A first load run (so allocator arenas and keep-alive sockets exist), then the
    settled baseline (fds, rss) and the fd map for diagnostics."""
    pid = S.broker.proc.pid
    load = F.Load(S.broker, token_path(org), key, seconds=2)
    load.check({200}, "warm-up load")
    if load.wrk is None:
        for _ in range(200):
            h.assert_status(S.broker.access_token(org, "test", token=key), 200)
    return pid, F.settle(pid), F.fd_targets(pid)


def assert_503_fast(r):
    h.assert_error(r, 503, "store_unavailable")
    assert r.header("Retry-After"), f"503 without Retry-After: {r.describe()}"
    assert r.elapsed <= F.ANSWER_BOUND_S, f"503 took {r.elapsed:.2f}s (bound {F.ANSWER_BOUND_S}s)"


def await_token(org, key, tok, what):
    r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(
        S.broker.request("GET", token_path(org), token=key, timeout=3)), 15, interval=0.05, what=what)
    assert r.json()["access_token"] == tok, "a different token after the fault"
    return r


def test_redis_sigkill_and_aof_restart_under_load():
    org, key, tok = connected()
    pid, before, fdmap = warm_and_measure(org, key)
    snap = F.conn_snapshot(S.rc())
    load = F.Load(S.broker, token_path(org), key, seconds=6)
    try:
        for cycle in range(2):
            S.redis.kill()
            for _ in range(3):
                assert_503_fast(S.broker.access_token(org, "test", token=key))
            r = S.broker.request("GET", "/readyz", timeout=3)
            assert r.status == 503 and r.elapsed <= F.ANSWER_BOUND_S, f"readyz with Redis dead: {r.describe()}"
            h.assert_status(S.broker.request("GET", "/healthz"), 200)
            S.redis.start()
            await_token(org, key, tok, f"getAccessToken 200 after AOF restart #{cycle + 1}")
        load.check({200, 503}, "load across two Redis SIGKILLs")
    finally:
        load.stop()
    assert S.broker.running() and S.broker.proc.pid == pid, "the broker died or restarted"
    F.assert_snapshot_kept(snap, F.conn_snapshot(S.rc()), "after Redis SIGKILL + AOF replay")
    F.assert_no_leak(pid, before, "Redis SIGKILL cycles", fdmap)


def test_redis_graceful_restart_under_load():
    org, key, tok = connected()
    pid, before, fdmap = warm_and_measure(org, key)
    snap = F.conn_snapshot(S.rc())
    load = F.Load(S.broker, token_path(org), key, seconds=4)
    try:
        S.redis.stop(keep_data=True)
        assert_503_fast(S.broker.access_token(org, "test", token=key))
        S.redis.start()
        await_token(org, key, tok, "getAccessToken 200 after a Redis restart")
        # writes work again too, on every worker (each reconnects with its own backoff)
        h.wait_until(lambda: all(S.broker.admin("POST", f"/v1/admin/orgs/{org}/api-keys").status == 201
                                 for _ in range(6)), 15, interval=0.1, what="API key creation works again")
        load.check({200, 503}, "load across a Redis restart")
    finally:
        load.stop()
    assert S.broker.running() and S.broker.proc.pid == pid
    after = F.conn_snapshot(S.rc())
    F.assert_snapshot_kept(snap, after, "after a Redis restart")
    F.assert_no_leak(pid, before, "Redis restart", fdmap)


def test_redis_client_pause_under_load():
    org, key, tok = connected()
    pid, before, fdmap = warm_and_measure(org, key)
    snap = F.conn_snapshot(S.rc())
    load = F.Load(S.broker, token_path(org), key, seconds=6)
    c = S.rc()
    try:
        # the pause ends by itself: the broker must recover without anyone unpausing
        c.command("CLIENT", "PAUSE", 4000, "ALL")
        t0 = time.monotonic()
        for _ in range(2):
            assert_503_fast(S.broker.access_token(org, "test", token=key))
        r = S.broker.admin("POST", f"/v1/orgs/{org}/authorize-links", json_body={"mode": "test"})
        assert_503_fast(r)
        assert time.monotonic() - t0 < 4.0, "the probes took longer than the pause itself"
        await_token(org, key, tok, "getAccessToken 200 after the pause expired")
        load.check({200, 503}, "load across CLIENT PAUSE")
    finally:
        c.close()
        load.stop()
    assert S.broker.running() and S.broker.proc.pid == pid
    F.assert_snapshot_kept(snap, F.conn_snapshot(S.rc()), "after CLIENT PAUSE")
    # the replies to the answered-by-deadline requests arrive late; nothing may pile up
    F.assert_no_leak(pid, before, "CLIENT PAUSE", fdmap)


def test_redis_refused_at_startup_then_appears():
    r2 = F.AofRedis("fredis-late")
    r2.kill()
    b = S.new_broker("late", ready=False, BROKER_REDIS_URL=f"redis://127.0.0.1:{r2.port}/0", **F.fault_env())
    try:
        assert b.running(), "the broker did not start while Redis was unreachable"
        org = h.new_org()
        r = b.admin("GET", f"/v1/orgs/{org}/connections")
        assert_503_fast(r)
        r = b.request("GET", "/readyz", timeout=3)
        assert r.status == 503 and r.elapsed <= F.ANSWER_BOUND_S, r.describe()
        # reconnect attempts while Redis stays away must not pile up descriptors
        pid = b.proc.pid
        fds = [F.fd_count(pid)]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert_503_fast(b.admin("GET", f"/v1/orgs/{org}/connections"))
            fds.append(F.fd_count(pid))
        # A leak raises the floor for good; a reconnect attempt in flight only adds a
        # descriptor for a moment (two workers × two connections may be mid-connect at
        # any sample), so compare the floors of the first and last quarters.
        quarter = max(1, len(fds) // 4)
        first, last = min(fds[:quarter]), min(fds[-quarter:])
        assert last <= first, (f"descriptors grow while Redis is refused: floor {first} -> {last} "
                               f"over {len(fds)} samples, max {max(fds)}; "
                               f"open at the end: {F.fd_targets(pid)}")
        r2.start()
        h.wait_until(lambda: b.request("GET", "/readyz", timeout=3).status == 200, 15, interval=0.05,
                     what="readyz 200 once Redis appeared")
        r = b.admin("POST", f"/v1/admin/orgs/{org}/api-keys")
        h.assert_status(r, 201)
        assert b.running()
    finally:
        b.stop()
        S.extra.remove(b)
        r2.close()


def test_redis_black_hole_at_startup():
    """A Redis address that accepts TCP but never answers (a dead host behind a load
    balancer): every request still gets 503 within 1 s, and nothing leaks."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    port = hole.getsockname()[1]
    b = S.new_broker("hole", ready=False, BROKER_REDIS_URL=f"redis://127.0.0.1:{port}/0", **F.fault_env())
    try:
        org = h.new_org()
        pid = b.proc.pid
        fd0 = F.fd_count(pid)
        for _ in range(5):
            assert_503_fast(b.admin("GET", f"/v1/orgs/{org}/connections"))
            assert_503_fast(b.access_token(org, "test"))
        r = b.request("GET", "/readyz", timeout=3)
        assert r.status == 503 and r.elapsed <= F.ANSWER_BOUND_S, r.describe()
        h.assert_status(b.request("GET", "/healthz"), 200)
        assert F.fd_count(pid) <= fd0 + 2, f"descriptors grew from {fd0} to {F.fd_count(pid)}"
        assert b.running()
    finally:
        b.stop()
        S.extra.remove(b)
        hole.close()
