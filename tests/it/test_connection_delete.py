"""DELETE /v1/orgs/{org}/connections/{mode} when Stripe refuses (CONTRACT §4.2 DELETE).

Only Stripe's "not connected" answer to /oauth/deauthorize (STRIPE.md: invalid_client whose
description says the application is not connected to that account) means the account is
already gone; any other refusal or failure is 502 stripe_unavailable and deletes nothing."""

import json

import harness as h

S = None


def setup_module():
    global S
    S = h.Stack("conndelete")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def connect(org, mode="test", account=None):
    return h.Flow(S.broker, S.sim, org, mode).run(account=account)


def modes(org):
    return {c["mode"]: c["status"] for c in S.broker.connections(org)}


def assert_kept(r, org, want_modes, tokens):
    h.assert_error(r, 502, "stripe_unavailable")
    assert modes(org) == want_modes, "a refused deauthorization deleted locally"
    for mode, tok in tokens.items():
        got = S.broker.access_token(org, mode)
        h.assert_status(got, 200)
        assert got.json()["access_token"] == tok
        assert S.sim.token_active(tok), "the token was revoked at Stripe"


def test_stripe_refusing_the_platform_key_is_502_and_deletes_nothing():
    """A replica with a wrong secret key (Stripe: 401 invalid_client "Invalid API Key")."""
    org = h.new_org()
    connect(org, "test")
    tok = S.broker.access_token(org, "test").json()["access_token"]
    bad = S.new_broker("badkey", STRIPE_SECRET_KEY_TEST="sk_test_" + h.rand_str(24))
    try:
        r = bad.admin("DELETE", f"/v1/orgs/{org}/connections/test")
        assert S.sim.calls("deauthorize") == 1
        assert_kept(r, org, {"test": "connected"}, {"test": tok})
        assert not any("already disconnected" in l for l in bad.log_lines())
    finally:
        bad.stop()
    # the right key deauthorizes it
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
    assert modes(org) == {} and not S.sim.token_active(tok)


def test_stripe_refusing_the_client_id_is_502_and_deletes_nothing():
    """A replica with a client id Stripe does not know (401 invalid_client, another description)."""
    org = h.new_org()
    connect(org, "live")
    live = S.broker.access_token(org, "live").json()["access_token"]
    test = S.broker.access_token(org, "test").json()["access_token"]      # derived from live
    bad = S.new_broker("badclient", STRIPE_CLIENT_ID_LIVE="ca_live_" + h.rand_str(16))
    try:
        r = bad.admin("DELETE", f"/v1/orgs/{org}/connections/live")
        assert_kept(r, org, {"live": "connected", "test": "connected"}, {"live": live, "test": test})
    finally:
        bad.stop()


def test_every_other_stripe_refusal_or_failure_is_502_and_deletes_nothing():
    org = h.new_org()
    connect(org, "live")
    live = S.broker.access_token(org, "live").json()["access_token"]
    test = S.broker.access_token(org, "test").json()["access_token"]      # derived from live
    answers = [
        (400, {"error": "invalid_request", "error_description": "stripe_user_id is not a connected account id"}),
        (401, {"error": "invalid_client", "error_description": "Invalid API Key provided: sk_live_****abcd"}),
        (401, {"error": "invalid_client"}),
        (401, {"error": "invalid_client", "error_description":
               "This application is not connected to stripe account acct_someoneelse, or that account "
               "does not exist."}),
        (403, {"error": "invalid_client", "error_description": "This application is not connected"}),
        (500, None), (429, None),
        (200, {"stripe_user_id": "acct_someoneelse"}),     # not the account it was asked about
    ]
    for status, body in answers:
        S.sim.fault(endpoint="deauthorize", kind="status", status=status, count=1,
                    body=json.dumps(body) if body is not None else None)
        r = S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live")
        assert_kept(r, org, {"live": "connected", "test": "connected"}, {"live": live, "test": test})
    S.sim.fault(endpoint="deauthorize", kind="malformed", count=1)        # a 200 that says nothing
    r = S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live")
    assert_kept(r, org, {"live": "connected", "test": "connected"}, {"live": live, "test": test})


def test_stripes_not_connected_answer_deletes_locally():
    """The account disconnected the platform at Stripe: the connection (and the test one
    derived from it) goes, with a warning in the log."""
    org = h.new_org()
    f = connect(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    off = S.broker.log_size()
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    assert modes(org) == {}
    h.assert_error(S.broker.access_token(org, "live"), 404, "not_connected")
    warn = [json.loads(l) for l in S.broker.log_lines(off) if "already disconnected" in l]
    assert [(j["level"], j.get("stripe_user_id")) for j in warn] == [("warn", f.account)], warn
