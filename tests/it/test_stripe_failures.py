"""Stripe failing or slow while the broker needs it (CONTRACT §4: 502, 409; DESIGN failure rules).

A live connection makes getAccessToken?mode=test call Stripe (the test token is minted
with the live refresh token), which is where the simulator's faults bite."""

import time

import harness as h

S = None
UPSTREAM_S = 2.0            # BROKER_UPSTREAM_TIMEOUT_MS of the harness
SLACK_S = 1.5


def setup_module():
    global S
    S = h.Stack("stripefail")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def live_org():
    org = h.new_org()
    f = h.Flow(S.broker, S.sim, org, "live").run()
    return org, f


def assert_stripe_unavailable(r, bound=SLACK_S):
    h.assert_error(r, 502, "stripe_unavailable")
    assert r.elapsed <= bound, f"answered after {r.elapsed:.2f}s (bound {bound}s)"


def recovers(org, mode="test"):
    S.sim._call("DELETE", "/_sim/faults")
    r = h.wait_until(lambda: (lambda x: x if x.status == 200 else None)(S.broker.access_token(org, mode)),
                     10, interval=0.2, what="getAccessToken 200 once Stripe is back")
    assert S.sim.token_active(r.json()["access_token"])


def _fault_test(kind, **fault):
    org, _ = live_org()
    S.sim.fault(endpoint="token", kind=kind, **fault)
    r = S.broker.access_token(org, "test")
    bound = UPSTREAM_S + SLACK_S if kind == "hang" else SLACK_S
    assert_stripe_unavailable(r, bound)
    recovers(org)


def test_stripe_500_is_502_stripe_unavailable():
    _fault_test("status", status=500)


def test_stripe_429_is_502_stripe_unavailable():
    _fault_test("status", status=429)


def test_stripe_unusable_answer_is_502_stripe_unavailable():
    _fault_test("malformed")


def test_stripe_closing_the_connection_is_502_stripe_unavailable():
    _fault_test("close")


def test_stripe_hanging_is_502_within_the_upstream_timeout():
    _fault_test("hang")


def test_stripe_200_without_access_token_is_502():
    _fault_test("status", status=200, body={"livemode": False, "token_type": "bearer"})


def test_stored_tokens_are_served_while_stripe_is_down():
    org, _ = live_org()
    S.sim.fault(endpoint="any", kind="hang")
    r = S.broker.access_token(org, "live")
    h.assert_status(r, 200)
    assert r.elapsed <= SLACK_S, f"a stored token took {r.elapsed:.2f}s with Stripe down"


def test_revoked_authorization_is_409_reauthorization_required():
    org, f = live_org()
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    r = S.broker.access_token(org, "test")
    h.assert_error(r, 409, "reauthorization_required")
    conns = {c["mode"]: c for c in S.broker.connections(org)}
    assert conns.get("live", {}).get("status") == "reauthorization_required", conns


def test_rotate_failing_at_stripe_is_502_and_keeps_the_old_token():
    org, _ = live_org()
    old = S.broker.access_token(org, "live").json()["access_token"]
    S.sim.fault(endpoint="token", kind="status", status=503)
    r = S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live")
    assert_stripe_unavailable(r)
    S.sim._call("DELETE", "/_sim/faults")
    r = S.broker.access_token(org, "live")
    h.assert_status(r, 200)
    assert r.json()["access_token"] == old and S.sim.token_active(old)


def test_rotate_with_revoked_refresh_token_is_409():
    org, f = live_org()
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    r = S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live")
    h.assert_error(r, 409, "reauthorization_required")
    h.assert_error(S.broker.access_token(org, "live"), 409, "reauthorization_required")


def test_callback_with_stripe_down_answers_within_the_upstream_timeout():
    f = h.Flow(S.broker, S.sim, h.new_org(), "test")
    f.open()
    f.setup_page()
    f.authorize_ok()
    f.stripe()
    S.sim.fault(endpoint="token", kind="hang")
    r = f.callback()
    assert r.elapsed <= UPSTREAM_S + SLACK_S, f"the callback took {r.elapsed:.2f}s"
    # Stripe failed while the broker needed it: 502 (a 400 would blame the admin's authorization)
    assert r.status == 502, r.describe()
    assert (r.header("Content-Type") or "").lower().startswith("text/html"), r.describe()
    assert "nothing was stored" in r.text.lower(), f"the page does not say nothing was stored: {r.text[:600]!r}"
    assert S.broker.connections(f.org) == []


def test_delete_connection_with_stripe_down_is_502_and_deletes_nothing():
    """CONTRACT §4.2: a failure of /oauth/deauthorize is 502 stripe_unavailable and nothing
    is deleted (the authorization is still alive at Stripe)."""
    org, _ = live_org()
    before = S.broker.connections(org)
    tok = S.broker.access_token(org, "live").json()["access_token"]
    S.sim.fault(endpoint="deauthorize", kind="hang")
    t0 = time.monotonic()
    r = S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live")
    assert time.monotonic() - t0 <= UPSTREAM_S + SLACK_S, r.describe()
    h.assert_error(r, 502, "stripe_unavailable")
    assert S.broker.connections(org) == before, "the connection changed although Stripe never deauthorized it"
    S.sim._call("DELETE", "/_sim/faults")
    r = S.broker.access_token(org, "live")
    h.assert_status(r, 200)
    assert r.json()["access_token"] == tok and S.sim.token_active(tok)
