"""Stripe failing while a steady load reads tokens (DESIGN "Failure behaviour").

For each fault of the simulator (hang, closed connection, 500, 429, malformed JSON):
a rotation, a test-from-live mint and an OAuth callback all answer 502 within the
upstream deadline; the token reads under load (they need no Stripe) keep answering
200; the stored connections are untouched (the old tokens still work at Stripe); the
broker recovers by itself once Stripe is back; and no descriptor or memory leaks.
"""

import faultlib as F

h = F.h
S = None
READER = {}


def setup_module():
    global S
    S = h.Stack("fstripe", **F.fault_env())


def teardown_module():
    S.close()


def setup_function():
    S.reset()
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "test").run()
    READER.update(org=org, key=S.broker.create_api_key(org)["api_key"])


def reader_load(seconds=4):
    return F.Load(S.broker, f"/v1/orgs/{READER['org']}/access-token?mode=test", READER["key"], seconds=seconds)


def warm():
    """One of each Stripe call succeeds first, so curl's handles and caches exist before
    the baseline is taken."""
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "live").run()
    h.assert_status(S.broker.access_token(org, "test"), 200)
    h.assert_status(S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"), 200)
    load = reader_load(seconds=2)
    load.check({200}, "warm-up")
    pid = S.broker.proc.pid
    return pid, F.settle(pid), F.fd_targets(pid)


def assert_502(r, what):
    assert r.status == 502, f"{what}: expected 502, got {r.describe()}"
    assert r.elapsed <= F.UPSTREAM_BOUND_S, f"{what}: answered after {r.elapsed:.2f}s (bound {F.UPSTREAM_BOUND_S}s)"


def _fault_round(kind, **fault):
    pid, before, fdmap = warm()
    # a live org (rotate target and the source of a test mint), and a flow at the callback
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "live").run()
    live_tok = S.broker.access_token(org, "live").json()["access_token"]
    snap = F.conn_snapshot(S.rc())
    flow_org = h.new_org()
    flow = h.Flow(S.broker, S.sim, flow_org, "test")
    flow.open()
    flow.setup_page()
    flow.authorize_ok()
    flow.stripe()
    calls0 = S.sim.calls("token")

    S.sim.fault(endpoint="any", kind=kind, count=1000, **fault)
    load = reader_load(seconds=5 if kind == "hang" else 4)
    try:
        rot, mint, cb = h.together([
            lambda: S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"),
            lambda: S.broker.access_token(org, "test"),
            lambda: flow.callback(),
        ])
        assert_502(rot, f"rotate with Stripe {kind}")
        h.assert_error(rot, 502, "stripe_unavailable")
        assert_502(mint, f"test mint with Stripe {kind}")
        h.assert_error(mint, 502, "stripe_unavailable")
        assert_502(cb, f"OAuth callback with Stripe {kind}")
        assert "text/html" in (cb.header("Content-Type") or ""), cb.describe()
        # token reads that need no Stripe keep working during the outage
        r = S.broker.access_token(org, "live")
        h.assert_status(r, 200)
        assert r.json()["access_token"] == live_tok
        load.check({200}, f"token reads while Stripe answers {kind}", max_latency_s=1.0)
    finally:
        load.stop()
        S.sim._call("DELETE", "/_sim/faults")

    assert S.sim.calls("token") > calls0, "the faults were never exercised"
    # nothing was half-written: the live record is byte-identical and its token alive
    F.assert_snapshot_kept(snap, F.conn_snapshot(S.rc()), f"after Stripe {kind}")
    assert S.sim.token_active(live_tok), "a failed rotation revoked the stored live token"
    assert S.rc().command("GET", f"stb:conn:{flow_org}:test") is None, "a failed code exchange stored something"
    # the callback consumed its state: a replay is refused and never reaches Stripe
    calls1 = S.sim.calls("token")
    r = flow.callback()
    assert r.status == 400, f"callback replay after a failed exchange: {r.describe()}"
    assert S.sim.calls("token") == calls1, "the replayed callback reached Stripe"

    # recovery without a restart (after the 2 s cooldown)
    r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(
        S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live")), 10, interval=0.2,
        what="rotation 200 once Stripe is back")
    new = r.json()["access_token"]
    assert new != live_tok and S.sim.token_active(new)
    r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(S.broker.access_token(org, "test")),
                     10, interval=0.2, what="test mint 200 once Stripe is back")
    assert S.sim.token_active(r.json()["access_token"])
    assert S.broker.running() and S.broker.proc.pid == pid, "the broker died"
    F.assert_no_leak(pid, before, f"Stripe {kind}", fdmap, upstream_port=S.sim.port)


def test_stripe_hang_under_load():
    _fault_round("hang")


def test_stripe_closes_connections_under_load():
    _fault_round("close")


def test_stripe_500_under_load():
    _fault_round("status", status=500)


def test_stripe_429_under_load():
    _fault_round("status", status=429)


def test_stripe_malformed_json_under_load():
    _fault_round("malformed")


def test_failed_deauthorize_keeps_the_connection():
    """DELETE /connections/{mode} while Stripe's /oauth/deauthorize fails transiently:
    502, and the connection is still stored and served (nothing lost)."""
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "live").run()
    tok = S.broker.access_token(org, "live").json()["access_token"]
    snap = F.conn_snapshot(S.rc())
    for kind, extra in (("status", {"status": 500}), ("hang", {}), ("close", {})):
        S.sim.fault(endpoint="deauthorize", kind=kind, count=1000, **extra)
        r = S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live")
        assert_502(r, f"deauthorize with Stripe {kind}")
        S.sim._call("DELETE", "/_sim/faults")
        F.assert_snapshot_kept(snap, F.conn_snapshot(S.rc()), f"after a failed deauthorize ({kind})")
        r = S.broker.access_token(org, "live")
        h.assert_status(r, 200)
        assert r.json()["access_token"] == tok
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)


def test_code_exchange_reaches_stripe_once_when_the_connection_drops():
    """Stripe revokes the whole connection when a code is used twice (STRIPE.md). If the
    connection to Stripe dies after the code was sent, the broker must not send the code
    again on its own (libcurl silently re-sends a request whose reused connection died):
    one callback, one POST /oauth/token, whatever happens on the wire."""
    warm()   # leaves a kept-alive connection to Stripe in the broker's cache
    flow = h.Flow(S.broker, S.sim, h.new_org(), "test")
    flow.open()
    flow.setup_page()
    flow.authorize_ok()
    flow.stripe()
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="close", count=1)
    r = flow.callback()
    sent = S.sim.calls("token") - before
    assert sent == 1, (f"one callback sent the authorization code to Stripe {sent} times "
                       f"(callback answered {r.status}); a real Stripe revokes the connection "
                       f"when a code is presented twice")
    assert r.status == 502, f"a dropped code exchange should be 502: {r.describe()}"
