"""Exactly one Stripe call per mint or rotation, in one process and across replicas
(CONTRACT §4.2: concurrent requests coalesce; a later rotation is a new one)."""

import threading
import time

import harness as h

S = None
REPLICA = None


def setup_module():
    global S
    S = h.Stack("concurrency")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def replica():
    global REPLICA
    if REPLICA is None or not REPLICA.running():
        REPLICA = S.new_broker("replica")
    return REPLICA


def live_org():
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "live").run()
    return org


def assert_one_token(results):
    for r in results:
        h.assert_status(r, 200)
    toks = {r.json()["access_token"] for r in results}
    assert len(toks) == 1, f"{len(toks)} different tokens for concurrent callers"
    tok = toks.pop()
    assert S.sim.token_active(tok), "the token all callers got is already revoked"
    return tok


def test_concurrent_mints_make_one_stripe_call():
    org = live_org()
    calls = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=400)
    res = h.together([lambda: S.broker.access_token(org, "test") for _ in range(10)])
    assert_one_token(res)
    assert S.sim.calls("token") - calls == 1, f"{S.sim.calls('token') - calls} Stripe calls for one mint"


def test_concurrent_mints_across_replicas_make_one_stripe_call():
    org = live_org()
    other = replica()
    calls = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=400)
    res = h.together([(lambda b=b: b.access_token(org, "test")) for b in [S.broker, other] * 5])
    assert_one_token(res)
    assert S.sim.calls("token") - calls == 1, f"{S.sim.calls('token') - calls} Stripe calls for one mint"


def test_concurrent_rotations_coalesce_into_one_stripe_call():
    org = live_org()
    old = S.broker.access_token(org, "live").json()["access_token"]
    calls = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=400)
    path = f"/v1/orgs/{org}/access-token/rotate?mode=live"
    res = h.together([lambda: S.broker.admin("POST", path) for _ in range(8)])
    new = assert_one_token(res)
    assert new != old and not S.sim.token_active(old)
    assert S.sim.calls("token") - calls == 1, f"{S.sim.calls('token') - calls} Stripe calls for one rotation"
    assert S.broker.access_token(org, "live").json()["access_token"] == new


def test_concurrent_rotations_across_replicas_coalesce():
    org = live_org()
    other = replica()
    calls = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=400)
    path = f"/v1/orgs/{org}/access-token/rotate?mode=live"
    res = h.together([(lambda b=b: b.admin("POST", path)) for b in [S.broker, other] * 4])
    new = assert_one_token(res)
    assert S.sim.calls("token") - calls == 1, f"{S.sim.calls('token') - calls} Stripe calls for one rotation"
    assert other.access_token(org, "live").json()["access_token"] == new


def test_a_rotation_after_the_previous_one_finished_is_a_new_rotation():
    org = live_org()
    path = f"/v1/orgs/{org}/access-token/rotate?mode=live"
    a = S.broker.admin("POST", path)
    h.assert_status(a, 200)
    b = S.broker.admin("POST", path)
    h.assert_status(b, 200)
    assert a.json()["access_token"] != b.json()["access_token"], "the second rotation was coalesced"
    assert not S.sim.token_active(a.json()["access_token"])
    assert S.sim.token_active(b.json()["access_token"])


def test_concurrent_reads_of_a_stored_token_make_no_stripe_call():
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "test").run()
    calls = S.sim.calls("token")
    res = h.together([lambda: S.broker.access_token(org, "test") for _ in range(20)])
    assert_one_token(res)
    assert S.sim.calls("token") == calls


def test_a_replica_dying_with_the_lease_delays_the_mint_at_most_the_lease_time():
    org = live_org()
    doomed = S.new_broker("doomed")
    calls = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="hang")
    t = threading.Thread(target=lambda: _quietly(lambda: doomed.access_token(org, "test")), daemon=True)
    t.start()
    h.wait_until(lambda: S.sim.calls("token") > calls, 5, what="the doomed replica to call Stripe")
    doomed.kill()
    killed_at = time.monotonic()
    S.sim._call("DELETE", "/_sim/faults")
    lease_bound = 2 * 2.0 + 1.0          # 2 x BROKER_UPSTREAM_TIMEOUT_MS + 1 s
    r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(S.broker.access_token(org, "test")),
                     lease_bound + 3, interval=0.1, what="a test token after the lease holder died")
    waited = time.monotonic() - killed_at
    assert waited <= lease_bound + 1.5, f"the mint was delayed {waited:.1f}s (lease bound {lease_bound}s)"
    assert S.sim.token_active(r.json()["access_token"])
    t.join(timeout=5)


def _quietly(fn):
    try:
        fn()
    except OSError:
        pass
