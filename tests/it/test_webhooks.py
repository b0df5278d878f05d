"""Stripe's webhooks: signatures and account.application.deauthorized (CONTRACT §6)."""

import json
import time

import harness as h

S = None
WH_TEST = "whsec_" + h.rand_str(32)
WH_LIVE = "whsec_" + h.rand_str(32)


def setup_module():
    global S
    S = h.Stack("webhooks", STRIPE_WEBHOOK_SECRET_TEST=WH_TEST, STRIPE_WEBHOOK_SECRET_LIVE=WH_LIVE)
    h.remember("webhook_secret", WH_TEST)
    h.remember("webhook_secret", WH_LIVE)


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def send(account, secret=WH_TEST, type_="account.application.deauthorized", **kw):
    body = {"url": S.broker.url("/webhooks/stripe"), "secret": secret, "type": type_,
            "account": account}
    body.update(kw)
    return S.sim._call("POST", "/_sim/webhook", body)


def connect(org, mode="test", account=None):
    return h.Flow(S.broker, S.sim, org, mode).run(account=account)


def status_of(org, mode):
    for c in S.broker.connections(org):
        if c["mode"] == mode:
            return c["status"]
    return None


def test_deauthorized_event_marks_the_connection_and_token_is_409():
    org = h.new_org()
    f = connect(org)
    tok = S.broker.access_token(org, "test").json()["access_token"]
    out = send(f.account, revoke=True)
    assert out["status"] == 200, out
    assert status_of(org, "test") == "reauthorization_required"
    r = S.broker.access_token(org, "test")
    h.assert_error(r, 409, "reauthorization_required")
    assert tok not in r.text
    conns = S.broker.request("GET", f"/v1/orgs/{org}/connections", token=S.broker.admin_token)
    assert tok not in conns.text


def test_deauthorized_event_signed_with_the_live_secret_works():
    org = h.new_org()
    f = connect(org, "live")
    out = send(f.account, secret=WH_LIVE, livemode=True, revoke=True)
    assert out["status"] == 200, out
    h.assert_error(S.broker.access_token(org, "live"), 409, "reauthorization_required")


def test_deauthorized_event_marks_every_connection_of_the_account():
    org = h.new_org()
    f = connect(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)   # derived from live
    other = h.new_org()
    connect(other, "test")
    out = send(f.account, secret=WH_LIVE, livemode=True, revoke=True)
    assert out["status"] == 200, out
    assert status_of(org, "live") == "reauthorization_required"
    assert status_of(org, "test") == "reauthorization_required"
    h.assert_error(S.broker.access_token(org, "test"), 409, "reauthorization_required")
    h.assert_status(S.broker.access_token(other, "test"), 200)


def test_bad_signature_is_400_and_changes_nothing():
    org = h.new_org()
    f = connect(org)
    out = send(f.account, secret="whsec_" + h.rand_str(32))
    assert out["status"] == 400, out
    assert status_of(org, "test") == "connected"
    h.assert_status(S.broker.access_token(org, "test"), 200)


def test_missing_signature_is_400():
    org = h.new_org()
    f = connect(org)
    event = {"id": "evt_" + h.rand_str(24), "object": "event", "type": "account.application.deauthorized",
             "account": f.account, "data": {"object": {"id": h.TEST_CLIENT_ID, "object": "application"}}}
    r = S.broker.request("POST", "/webhooks/stripe", body=json.dumps(event),
                         headers={"Content-Type": "application/json"})
    assert r.status == 400, r.describe()
    for sig in ("", "t=abc", f"t={int(time.time())}", f"t={int(time.time())},v1=", "v1=" + "0" * 64,
                f"t={int(time.time())},v0=" + "0" * 64):
        r = S.broker.request("POST", "/webhooks/stripe", body=json.dumps(event),
                             headers={"Content-Type": "application/json", "Stripe-Signature": sig})
        assert r.status == 400, f"signature {sig!r}: {r.describe()}"
    assert status_of(org, "test") == "connected"


def test_timestamp_older_than_300s_is_400():
    org = h.new_org()
    f = connect(org)
    out = send(f.account, timestamp=int(time.time()) - 400)
    assert out["status"] == 400, out
    assert status_of(org, "test") == "connected"


def test_any_of_several_v1_signatures_may_match():
    org = h.new_org()
    f = connect(org)
    out = send(f.account, secret="whsec_" + h.rand_str(32), extra_signatures=[WH_TEST], revoke=True)
    assert out["status"] == 200, out
    assert status_of(org, "test") == "reauthorization_required"


def test_other_event_types_are_200_and_ignored():
    org = h.new_org()
    f = connect(org)
    out = send(f.account, type_="charge.captured",
               data_object={"id": "ch_" + h.rand_str(20), "object": "charge"})
    assert out["status"] == 200, out
    assert status_of(org, "test") == "connected"
    h.assert_status(S.broker.access_token(org, "test"), 200)


def test_redelivered_event_does_nothing_twice():
    org = h.new_org()
    f = connect(org)
    evt = "evt_" + h.rand_str(24)
    assert send(f.account, id=evt, revoke=True)["status"] == 200
    assert status_of(org, "test") == "reauthorization_required"
    connect(org, account=f.account)          # the admin authorizes again, same account
    assert status_of(org, "test") == "connected"
    out = send(f.account, id=evt)            # Stripe redelivers the old event
    assert out["status"] == 200, out
    assert status_of(org, "test") == "connected", "a redelivered event was applied twice"
    h.assert_status(S.broker.access_token(org, "test"), 200)


def test_authorizing_again_after_deauthorization_reconnects():
    org = h.new_org()
    f = connect(org)
    send(f.account, revoke=True)
    h.assert_error(S.broker.access_token(org, "test"), 409, "reauthorization_required")
    f2 = connect(org)
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    assert r.json()["stripe_user_id"] == f2.account


def test_a_derived_test_token_follows_live_through_deauthorization_and_reauthorization():
    """A test token minted from live needs no authorization of its own (CONTRACT §4.2): after
    the account is deauthorized and live is authorized again, test works again at once."""
    org = h.new_org()
    f = connect(org, "live")
    old = S.broker.access_token(org, "test").json()["access_token"]   # minted from live
    send(f.account, secret=WH_LIVE, livemode=True, revoke=True)
    h.assert_error(S.broker.access_token(org, "test"), 409, "reauthorization_required")
    mints = S.sim.calls("token")
    h.assert_error(S.broker.access_token(org, "test"), 409, "reauthorization_required")
    assert S.sim.calls("token") == mints, "a mint was tried while live is revoked"
    f2 = connect(org, "live")
    calls = S.sim.calls("token")
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    j = r.json()
    assert j["stripe_user_id"] == f2.account and j["access_token"] != old, j
    assert S.sim.token_active(j["access_token"])
    assert S.sim.calls("token") == calls + 1, "exactly one mint"
    assert status_of(org, "test") == "connected"
    h.assert_status(S.broker.access_token(org, "test"), 200)
    assert S.sim.calls("token") == calls + 1


def test_webhook_body_over_64k_is_413():
    r = S.broker.request("POST", "/webhooks/stripe", body=b"{" + b" " * (64 * 1024) + b"}",
                         headers={"Content-Type": "application/json",
                                  "Stripe-Signature": f"t={int(time.time())},v1=" + "0" * 64})
    assert r.status == 413, r.describe()


def test_webhook_with_wrong_method_is_405():
    r = S.broker.request("GET", "/webhooks/stripe")
    h.assert_error(r, 405, "method_not_allowed")
