"""Stripe's webhooks: signatures and account.application.deauthorized (CONTRACT §6)."""

import hashlib
import hmac
import json
import threading
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


# ===== which connections a deauthorization takes (CONTRACT §6) =====

def connected_at(org, mode):
    for c in S.broker.connections(org):
        if c["mode"] == mode:
            return int(h.parse_rfc3339(c["connected_at"]).timestamp())
    raise AssertionError(f"no {mode} connection for {org}")


def assert_served(org, mode, token):
    r = S.broker.access_token(org, mode)
    h.assert_status(r, 200)
    assert r.json()["access_token"] == token, "another token is served"
    assert S.sim.token_active(token)


def signed(event, secret):
    body = json.dumps(event)
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return S.broker.request("POST", "/webhooks/stripe", body=body,
                            headers={"Content-Type": "application/json", "Stripe-Signature": f"t={t},v1={mac}"})


def test_event_created_before_a_reauthorization_leaves_the_new_connection():
    """Stripe redelivers for days: an event created an hour ago, delivered after the
    account was authorized again, must not touch the new authorization."""
    org = h.new_org()
    f = connect(org, "live")
    connect(org, "live", account=f.account)          # authorized again, same account
    tok = S.broker.access_token(org, "live").json()["access_token"]
    out = send(f.account, secret=WH_LIVE, livemode=True, created=int(time.time()) - 3600)
    assert out["status"] == 200, out
    assert status_of(org, "live") == "connected", "an event older than the connection revoked it"
    assert_served(org, "live", tok)


def test_created_in_the_same_second_as_the_authorization_takes_it():
    """Both times are whole seconds: one second before the authorization leaves it, the
    same second takes it (proto/threat-model.md: in a tie, fail closed)."""
    org = h.new_org()
    f = connect(org)
    tok = S.broker.access_token(org, "test").json()["access_token"]
    t = connected_at(org, "test")
    assert send(f.account, created=t - 1)["status"] == 200
    assert status_of(org, "test") == "connected"
    assert_served(org, "test", tok)
    assert send(f.account, created=t)["status"] == 200
    assert status_of(org, "test") == "reauthorization_required"
    h.assert_error(S.broker.access_token(org, "test"), 409, "reauthorization_required")


def test_event_verified_with_the_test_secret_never_takes_a_live_connection():
    """The mode is the verifying secret's, not the event's livemode (which whoever holds
    the test secret can write)."""
    org = h.new_org()
    f = connect(org, "live")
    live = S.broker.access_token(org, "live").json()["access_token"]
    own = h.new_org()
    connect(own, "test", account=f.account)           # a test authorization, same account
    for livemode in (False, True):
        out = send(f.account, secret=WH_TEST, livemode=livemode)
        assert out["status"] == 200, out
        assert status_of(org, "live") == "connected", f"a test-mode event (livemode {livemode}) took live"
        assert_served(org, "live", live)
    assert status_of(own, "test") == "reauthorization_required"
    h.assert_error(S.broker.access_token(own, "test"), 409, "reauthorization_required")


def test_event_verified_with_the_test_secret_takes_a_test_connection_derived_from_live():
    """Test takes every test connection of the account; a derived one is minted again
    from live (still connected) on its next use."""
    org = h.new_org()
    f = connect(org, "live")
    old = S.broker.access_token(org, "test").json()["access_token"]     # minted from live
    assert send(f.account, secret=WH_TEST)["status"] == 200
    assert status_of(org, "test") == "reauthorization_required"
    assert status_of(org, "live") == "connected"
    r = S.broker.access_token(org, "test")
    h.assert_status(r, 200)
    assert r.json()["access_token"] != old and S.sim.token_active(r.json()["access_token"])


def test_live_event_takes_live_and_the_test_connection_derived_from_it_only():
    """Live takes the live connection and a test connection minted from it, never a test
    connection authorized on its own, whether for the same account or another."""
    a = h.new_org()
    fa = connect(a, "live")
    h.assert_status(S.broker.access_token(a, "test"), 200)               # derived from live
    b = h.new_org()
    connect(b, "live", account=fa.account)
    connect(b, "test", account=fa.account)                               # its own, same account
    b_test = S.broker.access_token(b, "test").json()["access_token"]
    c = h.new_org()
    connect(c, "live", account=fa.account)
    connect(c, "test")                                                   # its own, another account
    c_test = S.broker.access_token(c, "test").json()["access_token"]
    assert {x["mode"]: x.get("derived_from") for x in S.broker.connections(b)} == {"live": None, "test": None}
    out = send(fa.account, secret=WH_LIVE, livemode=True)
    assert out["status"] == 200, out
    for org in (a, b, c):
        assert status_of(org, "live") == "reauthorization_required", org
        h.assert_error(S.broker.access_token(org, "live"), 409, "reauthorization_required")
    assert status_of(a, "test") == "reauthorization_required"
    h.assert_error(S.broker.access_token(a, "test"), 409, "reauthorization_required")
    assert status_of(b, "test") == "connected", "the live event took a test authorization of its own"
    assert_served(b, "test", b_test)
    assert status_of(c, "test") == "connected"
    assert_served(c, "test", c_test)


def test_deauthorization_of_the_previous_account_leaves_the_new_one():
    """Live authorized again with account B; a deauthorization for the old account A
    finds the org through A's index (a stale member) and must leave B alone."""
    org = h.new_org()
    first = connect(org, "live")
    second = connect(org, "live")
    assert second.account != first.account
    tok = S.broker.access_token(org, "live").json()["access_token"]
    assert S.rc().command("SISMEMBER", "stb:acct:" + first.account, org + ":live") == 1, \
        "precondition: A's index still names the org, so the record's account check is what decides"
    out = send(first.account, secret=WH_LIVE, livemode=True)
    assert out["status"] == 200, out
    assert status_of(org, "live") == "connected", "the new account's connection was revoked"
    assert_served(org, "live", tok)



def test_one_secret_for_both_modes_goes_by_the_events_livemode():
    """When both modes are configured with the same signing secret, the secret cannot tell
    the mode; the event's livemode (signed with that one secret) decides."""
    same = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", same)
    b = S.new_broker("samewhsec", STRIPE_WEBHOOK_SECRET_TEST=same, STRIPE_WEBHOOK_SECRET_LIVE=same)
    try:
        org = h.new_org()
        f = connect(org, "live")
        live = S.broker.access_token(org, "live").json()["access_token"]
        own = h.new_org()
        connect(own, "test", account=f.account)
        body = {"url": b.url("/webhooks/stripe"), "secret": same, "account": f.account,
                "type": "account.application.deauthorized"}
        assert S.sim._call("POST", "/_sim/webhook", dict(body, livemode=False))["status"] == 200
        assert status_of(own, "test") == "reauthorization_required"
        assert status_of(org, "live") == "connected"
        assert_served(org, "live", live)
        assert S.sim._call("POST", "/_sim/webhook", dict(body, livemode=True))["status"] == 200
        assert status_of(org, "live") == "reauthorization_required"
    finally:
        b.stop()


def blocked_on(c, cmd):
    return any(f"cmd={cmd} " in l and "flags=b" in l
               for l in c.command("CLIENT", "LIST").decode().splitlines())


def test_a_record_rewritten_between_decision_and_revoke_is_decided_again():
    """The revoke must apply to the very record it was decided on. Here the old
    authorization is read and taken, and before the revoking script runs the key is
    written with a newer authorization carrying the same version number (what a delete
    and a new authorization give): the script must see it, decide again, and leave it.
    Redis's CLIENT PAUSE WRITE holds writes (the newer record's SET first, then the
    broker's script) while reads go on, and releases them in order."""
    org = h.new_org()
    f = connect(org)
    key = f"stb:conn:{org}:test"
    rc = S.rc()
    old = rc.command("GET", key)
    t1 = connected_at(org, "test")
    h.wait_until(lambda: int(time.time()) > t1, 3, interval=0.01, what="the next second")
    connect(org, account=f.account)                       # authorized again, same account
    tok = S.broker.access_token(org, "test").json()["access_token"]
    newer = rc.command("GET", key)
    assert connected_at(org, "test") > t1 and old.split(b":")[0] == b"1" and newer.split(b":")[0] == b"2"
    same_version = b"1:" + newer.split(b":", 1)[1]
    rc.command("SET", key, old)                           # back to the old authorization
    writer, out, done = S.rc(), {}, []
    try:
        rc.command("CLIENT", "PAUSE", 3000, "WRITE")
        try:
            threading.Thread(target=lambda: done.append(writer.command("SET", key, same_version)),
                             daemon=True).start()
            h.wait_until(lambda: blocked_on(rc, "set"), 0.5, interval=0.005, what="the SET to wait")
            th = threading.Thread(target=lambda: out.update(send(f.account, created=t1)), daemon=True)
            th.start()
            h.wait_until(lambda: blocked_on(rc, "eval"), 0.7, interval=0.005, what="the broker's script to wait")
        finally:
            rc.command("CLIENT", "UNPAUSE")
        th.join(10)
    finally:
        writer.close()
        rc.close()
    assert done == ["OK"] and out.get("status") == 200, out
    assert status_of(org, "test") == "connected", "the revoke was written over the newer authorization"
    assert_served(org, "test", tok)

def test_deauthorization_without_created_is_400_and_changes_nothing():
    org = h.new_org()
    f = connect(org)
    event = {"id": "evt_" + h.rand_str(24), "object": "event", "type": "account.application.deauthorized",
             "account": f.account, "livemode": False,
             "data": {"object": {"id": h.TEST_CLIENT_ID, "object": "application"}}}
    for created in (None, "1700000000", 0):
        if created is not None:
            event["created"] = created
        h.assert_error(signed(event, WH_TEST), 400, "invalid_request")
    assert status_of(org, "test") == "connected"
    event["created"] = int(time.time())
    h.assert_status(signed(event, WH_TEST), 200)
    assert status_of(org, "test") == "reauthorization_required"


def test_missing_webhook_secret_of_an_enabled_mode_warns_at_start():
    lines = [json.loads(l) for l in S.broker.log_lines()]
    assert not [j for j in lines if "STRIPE_WEBHOOK_SECRET" in json.dumps(j)], "both secrets are set"
    b = S.new_broker("nolivewhsec", STRIPE_WEBHOOK_SECRET_TEST=WH_TEST)
    try:
        warn = [json.loads(l) for l in b.log_lines() if "STRIPE_WEBHOOK_SECRET" in l]
        assert [(j["level"], j.get("mode")) for j in warn] == [("warn", "live")], warn
        assert "STRIPE_WEBHOOK_SECRET_LIVE" in json.dumps(warn[0]) and WH_TEST not in json.dumps(warn[0])
    finally:
        b.stop()
    b = S.new_broker("nowhsec", STRIPE_CLIENT_ID_LIVE=None, STRIPE_SECRET_KEY_LIVE=None)  # live not enabled
    try:
        warn = [json.loads(l) for l in b.log_lines() if "STRIPE_WEBHOOK_SECRET" in l]
        assert [(j["level"], j.get("mode")) for j in warn] == [("warn", "test")], warn
    finally:
        b.stop()
