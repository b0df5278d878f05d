"""A replica SIGKILLed mid-mint and mid-callback while another replica serves a steady
load (DESIGN: "SIGKILL at any point loses nothing that was acknowledged"; CONTRACT §4.2
leases: a dead lease holder delays that org and mode by at most 2 × upstream + 1 s).

Replica A is killed while its Stripe call hangs; replica B, under wrk, must be
undisturbed, must finish the work once A's lease expires, and nothing stored may be
lost or corrupted. A is then restarted and serves the same records.
"""

import time

import faultlib as F

h = F.h
S = None
B = None
LEASE_BOUND_S = 2 * F.UPSTREAM_MS / 1000 + 1 + 2.0   # the contract's bound + slack


def setup_module():
    global S, B
    S = h.Stack("fkill", **F.fault_env())
    B = S.new_broker("b", **F.fault_env())


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def reader():
    org = h.new_org()
    h.Flow(B, S.sim, org, "test").run()
    return org, B.create_api_key(org)["api_key"]


def load_on_b(org, key, seconds=6):
    return F.Load(B, f"/v1/orgs/{org}/access-token?mode=test", key, seconds=seconds)


def restart_a():
    S.broker.kill()
    S.broker.start()


def test_sigkill_mid_mint_loses_nothing():
    A = S.broker
    rorg, rkey = reader()
    org = h.new_org()
    h.Flow(A, S.sim, org, "live").run()
    live_key = f"stb:conn:{org}:live"
    live_before = S.rc().command("GET", live_key)
    live_tok = A.access_token(org, "live").json()["access_token"]
    load = load_on_b(rorg, rkey)
    try:
        S.sim.fault(endpoint="token", kind="hang", count=1)
        calls0 = S.sim.calls("token")
        bg = F.Background(lambda: A.access_token(org, "test"))
        # A holds the lease and its Stripe call is in flight
        h.wait_until(lambda: S.rc().command("EXISTS", f"stb:lock:{org}:test") == 1
                     and S.sim.calls("token") > calls0, 5, what="A's mint in flight (lease taken)")
        t_kill = time.monotonic()
        A.kill()
        try:
            bg.join(10)
        except (OSError, ConnectionError, Exception):  # noqa: BLE001 - the connection died with A
            pass
        S.sim._call("DELETE", "/_sim/faults")
        r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(B.access_token(org, "test")),
                         LEASE_BOUND_S + 2, interval=0.1, what="B mints once A's lease expired")
        waited = time.monotonic() - t_kill
        assert waited <= LEASE_BOUND_S, f"B needed {waited:.1f}s after the kill (bound {LEASE_BOUND_S:.1f}s)"
        test_tok = r.json()["access_token"]
        assert S.sim.token_active(test_tok), "B served a test token Stripe does not know"
        load.check({200}, "B's load while A was killed mid-mint")
    finally:
        load.stop()
        S.sim._call("DELETE", "/_sim/faults")
    assert S.rc().command("GET", live_key) == live_before, "the live connection changed"
    assert S.sim.token_active(live_tok), "the live token was revoked"
    restart_a()
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    assert r.json()["access_token"] == test_tok, "the restarted replica serves another token"
    assert S.rc().command("EXISTS", f"stb:lock:{org}:test") == 0, "a lease survived"


def test_sigkill_mid_rotate_keeps_the_connection():
    A = S.broker
    rorg, rkey = reader()
    org = h.new_org()
    h.Flow(A, S.sim, org, "live").run()
    key = f"stb:conn:{org}:live"
    before = S.rc().command("GET", key)
    tok = A.access_token(org, "live").json()["access_token"]
    load = load_on_b(rorg, rkey)
    try:
        S.sim.fault(endpoint="token", kind="hang", count=1)
        calls0 = S.sim.calls("token")
        bg = F.Background(lambda: A.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"))
        h.wait_until(lambda: S.rc().command("EXISTS", f"stb:lock:{org}:live") == 1
                     and S.sim.calls("token") > calls0, 5, what="A's rotation in flight")
        A.kill()
        try:
            bg.join(10)
        except Exception:  # noqa: BLE001
            pass
        S.sim._call("DELETE", "/_sim/faults")
        # the stored connection is exactly what it was, and still works
        assert S.rc().command("GET", key) == before, "the connection changed after a killed rotation"
        r = B.access_token(org, "live")
        h.assert_status(r, 200)
        assert r.json()["access_token"] == tok and S.sim.token_active(tok)
        # and it can still be rotated (the refresh token was not lost)
        r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(
            B.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live")), LEASE_BOUND_S + 2,
            interval=0.1, what="rotation on B after A's lease expired")
        assert S.sim.token_active(r.json()["access_token"])
        load.check({200}, "B's load while A was killed mid-rotation")
    finally:
        load.stop()
        S.sim._call("DELETE", "/_sim/faults")
    restart_a()


def test_sigkill_mid_callback_stores_nothing_and_never_reuses_the_code():
    A = S.broker
    rorg, rkey = reader()
    org = h.new_org()
    # the org already has a live connection: it must survive untouched
    h.Flow(A, S.sim, org, "live").run()
    live_before = S.rc().command("GET", f"stb:conn:{org}:live")
    flow = h.Flow(A, S.sim, org, "test")
    flow.open()
    flow.setup_page()
    flow.authorize_ok()
    flow.stripe()
    load = load_on_b(rorg, rkey)
    try:
        S.sim.fault(endpoint="token", kind="hang", count=1)
        calls0 = S.sim.calls("token")
        bg = F.Background(lambda: flow.callback())
        h.wait_until(lambda: S.sim.calls("token") > calls0, 5, what="A's code exchange in flight")
        A.kill()
        try:
            bg.join(10)
        except Exception:  # noqa: BLE001
            pass
        S.sim._call("DELETE", "/_sim/faults")
        assert S.rc().command("GET", f"stb:conn:{org}:test") is None, "a killed callback stored a connection"
        # the browser retries the callback on the surviving replica: refused, never sent to Stripe
        calls1 = S.sim.calls("token")
        u = flow.callback_url.split("/oauth/callback", 1)[1]
        r = flow.browser.get(B.url("/oauth/callback" + u))
        assert r.status == 400, f"a replayed callback after the kill: {r.describe()}"
        assert S.sim.calls("token") == calls1, "the replayed callback reached Stripe"
        codes = S.sim.stats().get("codes_used") or {}
        assert codes.get(flow.code, 0) <= 1, f"the code was presented {codes.get(flow.code)} times"
        load.check({200}, "B's load while A was killed mid-callback")
    finally:
        load.stop()
        S.sim._call("DELETE", "/_sim/faults")
    assert S.rc().command("GET", f"stb:conn:{org}:live") == live_before, "the live connection changed"
    restart_a()
    # a new authorization works from scratch
    f2 = h.Flow(S.broker, S.sim, org, "test").run()
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    assert r.json()["stripe_user_id"] == f2.account and S.sim.token_active(r.json()["access_token"])
