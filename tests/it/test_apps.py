"""The `apps` flavor: Stripe Apps OAuth, expiring access tokens, rotating refresh tokens
(CONTRACT §2 BROKER_OAUTH_FLAVOR, §4.2, §5 step 3)."""

import urllib.parse
from datetime import datetime, timezone

import harness as h

S = None
MARGIN_S = 300


def setup_module():
    global S
    S = h.Stack("apps", BROKER_OAUTH_FLAVOR="apps", BROKER_REFRESH_MARGIN_S=str(MARGIN_S))


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def connect(org, mode="test", lifetime=None):
    if lifetime is not None:
        S.sim.config(apps_token_lifetime=lifetime)
    return h.Flow(S.broker, S.sim, org, mode).run()


def grants(kind):
    return [g for g in S.sim.stats()["grants"]
            if g.get("endpoint") == "apps_token" and g.get("grant_type") == kind]


def test_apps_token_without_expires_in_is_taken_to_live_an_hour():
    """STRIPE.md: apps access tokens expire after an hour, expires_in only "possibly" sent."""
    S.sim.config(apps_send_expires_in=False)
    org = h.new_org()
    connect(org, "live", lifetime=3600)
    j = S.broker.access_token(org, "live").json()
    exp = h.parse_rfc3339(j.get("expires_at"))
    left = (exp - datetime.now(timezone.utc)).total_seconds()
    assert 3500 <= left <= 3610, f"expires_at is {left:.0f}s away: {j}"


def test_apps_authorize_redirect_goes_to_the_marketplace():
    f = h.Flow(S.broker, S.sim, h.new_org(), "live")
    f.open()
    f.setup_page()
    f.authorize_ok()
    u = urllib.parse.urlsplit(f.authorize_location)
    assert f"{u.scheme}://{u.netloc}{u.path}" == S.sim.base + "/oauth/v2/authorize", f.authorize_location
    q = urllib.parse.parse_qs(u.query)
    assert q.get("client_id") == [h.LIVE_CLIENT_ID], q
    assert q.get("redirect_uri") == [S.broker.public + "/oauth/callback"], q
    assert q.get("state") and len(q["state"][0]) >= 32, q


def test_apps_flow_gives_an_expiring_token():
    org = h.new_org()
    f = connect(org, "test")
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    j = r.json()
    assert j["stripe_user_id"] == f.account and j["mode"] == "test" and j["livemode"] is False, j
    assert j.get("token_type") == "bearer", j
    exp = h.parse_rfc3339(j.get("expires_at"))
    left = (exp - datetime.now(timezone.utc)).total_seconds()
    assert 3000 <= left <= 3700, f"expires_at is {left:.0f}s away, the token lives 3600 s"
    assert S.sim.token_active(j["access_token"])
    assert len(grants("authorization_code")) == 1


def test_apps_token_far_from_expiry_is_not_refreshed():
    org = h.new_org()
    connect(org, "test")
    a = S.broker.access_token(org, "test").json()["access_token"]
    b = S.broker.access_token(org, "test").json()["access_token"]
    assert a == b
    assert grants("refresh_token") == [], "a fresh token was refreshed"


def test_apps_token_within_the_margin_is_refreshed_and_refresh_tokens_rotate():
    org = h.new_org()
    connect(org, "test", lifetime=MARGIN_S - 100)
    r1 = S.broker.access_token(org, "test")
    h.assert_status(r1, 200)
    ok = [g for g in grants("refresh_token") if g.get("outcome") == "ok"]
    assert len(ok) == 1, f"expected one refresh, got {grants('refresh_token')}"
    t1 = r1.json()["access_token"]
    assert S.sim.token_active(t1)
    # a second refresh only works if the rotated refresh token was stored
    S.sim.config(apps_token_lifetime=3600)
    r2 = S.broker.access_token(org, "test")
    h.assert_status(r2, 200)
    t2 = r2.json()["access_token"]
    assert t2 != t1 and S.sim.token_active(t2) and not S.sim.token_active(t1)
    assert all(g.get("outcome") == "ok" for g in grants("refresh_token")), grants("refresh_token")
    r3 = S.broker.access_token(org, "test")
    assert r3.json()["access_token"] == t2, "a fresh token was refreshed again"
    assert len(grants("refresh_token")) == 2


def test_apps_transient_refresh_failure_returns_the_still_valid_token():
    org = h.new_org()
    connect(org, "test", lifetime=MARGIN_S - 100)
    S.sim.fault(endpoint="apps_token", kind="status", status=500)
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    assert S.sim.token_active(r.json()["access_token"]), "the old token should still be valid"
    h.parse_rfc3339(r.json().get("expires_at"))


def test_apps_rejected_refresh_token_is_409():
    org = h.new_org()
    f = connect(org, "test", lifetime=MARGIN_S - 100)
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    r = S.broker.access_token(org, "test")
    h.assert_error(r, 409, "reauthorization_required")
    conns = S.broker.connections(org)
    assert conns and conns[0]["status"] == "reauthorization_required", conns


def test_apps_concurrent_refreshes_make_one_stripe_call():
    org = h.new_org()
    connect(org, "test", lifetime=MARGIN_S - 100)
    S.sim.config(apps_token_lifetime=3600)
    S.sim.fault(endpoint="apps_token", kind="delay", delay_ms=400)
    res = h.together([lambda: S.broker.access_token(org, "test") for _ in range(10)])
    for r in res:
        h.assert_status(r, 200)
    toks = {r.json()["access_token"] for r in res}
    assert len(toks) == 1, f"{len(toks)} different tokens"
    assert S.sim.token_active(toks.pop())
    assert len(grants("refresh_token")) == 1, f"{len(grants('refresh_token'))} refresh calls"


def test_apps_rotate_gives_a_new_token():
    org = h.new_org()
    connect(org, "live")
    old = S.broker.access_token(org, "live").json()["access_token"]
    r = S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live")
    h.assert_status(r, 200)
    new = r.json()["access_token"]
    assert new != old and S.sim.token_active(new) and not S.sim.token_active(old)
    assert "expires_at" in r.json()
