"""A payment's life through the Stripe proxy (CONTRACT §4.3), written the way a Salesforce
payment gateway adapter behaves: relative Stripe paths under the Named Credential's URL
(/v1/orgs/{org}/stripe/{mode}), the credential's bearer (the org key), an Idempotency-Key
per operation. Then what happens around it: a rotation, test mode minted from live, the
apps flavor across an expiry and after an early one, a deauthorization."""

import json
import time
import urllib.parse
import uuid

import harness as h

S = None   # connect flavor, with the webhook secrets
A = None   # apps flavor
WH_LIVE = "whsec_" + h.rand_str(32)
WH_TEST = "whsec_" + h.rand_str(32)
MARGIN_S = 300


def setup_module():
    global S, A
    S = h.Stack("payments", STRIPE_WEBHOOK_SECRET_TEST=WH_TEST, STRIPE_WEBHOOK_SECRET_LIVE=WH_LIVE)
    h.remember("webhook_secret", WH_TEST)
    h.remember("webhook_secret", WH_LIVE)
    A = h.Stack("payments-apps", BROKER_OAUTH_FLAVOR="apps", BROKER_REFRESH_MARGIN_S=str(MARGIN_S))


def teardown_module():
    for st in (S, A):
        if st is not None:
            st.close()


def setup_function():
    S.reset()
    A.reset()


class Adapter:
    """What the adapter's commercepayments.PaymentsHttp sends through the Merchant
    Credential: the credential adds the URL prefix and the bearer."""

    def __init__(self, stack, org, key, mode):
        self.stack, self.org, self.key, self.mode = stack, org, key, mode

    def call(self, method, path, form=None, idem=None, headers=None):
        hdrs = {"Authorization": f"Bearer {self.key}", "Accept": "application/json",
                # what a careless caller might also send: none of it may reach Stripe
                "Cookie": "BrowserId=sf-cookie-value", "Stripe-Account": "acct_notmine"}
        if idem:
            hdrs["Idempotency-Key"] = idem
        hdrs.update(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        url = self.stack.broker.url(f"/v1/orgs/{self.org}/stripe/{self.mode}{path}")
        return h.http_request(method, url, headers=hdrs, body=body)


def connect(stack, org, mode, lifetime=None):
    if lifetime is not None:
        stack.sim.config(apps_token_lifetime=lifetime)
    return h.Flow(stack.broker, stack.sim, org, mode).run()


def adapter(stack, mode="test", connect_mode=None, lifetime=None):
    org = h.new_org()
    f = connect(stack, org, connect_mode or mode, lifetime)
    key = stack.broker.create_api_key(org)["api_key"]
    return Adapter(stack, org, key, mode), f.account


def sim_requests(stack, since=0):
    return stack.sim.requests(since)


def header_of(rec, name):
    vals = [v for k, v in rec["headers"] if k.lower() == name.lower()]
    return vals[0] if vals else None


def assert_clean(stack, recs, key):
    """Nothing of the caller's credentials reached Stripe: only a Stripe token."""
    for rec in recs:
        names = {k.lower() for k, _ in rec["headers"]}
        assert "cookie" not in names and "stripe-account" not in names, rec["headers"]
        authz = header_of(rec, "Authorization") or ""
        assert authz.startswith("Bearer ") and key not in authz, "the org key reached Stripe"
        assert key not in json.dumps(rec) and "sf-cookie-value" not in json.dumps(rec)


def ok(r):
    h.assert_status(r, 200)
    return r.json()


def assert_stripe_error(r, status, code):
    j = h.assert_error(r, status, code)
    assert j["error"].get("type") == ("api_error" if status >= 500 else "invalid_request_error"), r.describe()


# ===== The payment's life =====

def test_authorize_capture_refund_retry_lookup():
    ad, acct = adapter(S, "test")
    # Ensure Funds: a manual-capture PaymentIntent, confirmed
    auth_key = str(uuid.uuid4())
    pi = ok(ad.call("POST", "/v1/payment_intents", {"amount": "5000", "currency": "usd",
                                                    "payment_method": "pm_card_visa", "capture_method": "manual",
                                                    "confirm": "true", "metadata[sf_payment]": "0a3xx01"},
                    idem=auth_key))
    assert pi["status"] == "requires_capture" and pi["amount_capturable"] == 5000, pi
    # Capture Funds
    cap = ok(ad.call("POST", f"/v1/payment_intents/{pi['id']}/capture", {"amount_to_capture": "5000"},
                     idem=str(uuid.uuid4())))
    assert cap["status"] == "succeeded" and cap["amount_received"] == 5000, cap
    # a partial refund, then the adapter's retry of it with the same key (a lost answer)
    refund_key = str(uuid.uuid4())
    re1 = ad.call("POST", "/v1/refunds", {"payment_intent": pi["id"], "amount": "1500"}, idem=refund_key)
    re2 = ad.call("POST", "/v1/refunds", {"payment_intent": pi["id"], "amount": "1500"}, idem=refund_key)
    r1, r2 = ok(re1), ok(re2)
    assert r1["id"] == r2["id"] and r1["amount"] == 1500, (r1, r2)
    assert re1.header("Idempotency-Key") == refund_key == re2.header("Idempotency-Key")
    # the lookup
    got = ok(ad.call("GET", f"/v1/payment_intents/{pi['id']}"))
    assert got["status"] == "succeeded" and got["amount_received"] == 5000, got
    charge = ok(ad.call("GET", f"/v1/charges/{got['latest_charge']}"))
    assert charge["amount_refunded"] == 1500, f"one refund of 1500 expected: {charge}"
    recs = sim_requests(S)
    assert [(x["method"], x["path"]) for x in recs] == [
        ("POST", "/v1/payment_intents"), ("POST", f"/v1/payment_intents/{pi['id']}/capture"),
        ("POST", "/v1/refunds"), ("POST", "/v1/refunds"), ("GET", f"/v1/payment_intents/{pi['id']}"),
        ("GET", f"/v1/charges/{got['latest_charge']}")], recs
    assert all(x["account"] == acct and x["mode"] == "test" for x in recs), recs
    assert recs[3]["replayed"] is True and recs[2]["replayed"] is False, "the retried refund was not a replay"
    token = S.broker.access_token(ad.org, "test").json()["access_token"]
    assert all(header_of(x, "Authorization") == f"Bearer {token}" for x in recs)
    assert_clean(S, recs, ad.key)


def test_a_decline_comes_back_as_stripes_402():
    ad, _ = adapter(S, "test")
    r = ad.call("POST", "/v1/payment_intents", {"amount": "700", "currency": "usd",
                                                "payment_method": "pm_card_chargeDeclined", "confirm": "true",
                                                "capture_method": "manual"}, idem=str(uuid.uuid4()))
    assert r.status == 402, r.describe()
    err = r.json()["error"]
    assert err["type"] == "card_error" and err.get("code") == "card_declined", err
    assert r.header("Request-Id") == sim_requests(S)[-1]["request_id"]


def test_after_a_rotation_the_next_call_uses_the_new_token():
    ad, _ = adapter(S, "test")
    ok(ad.call("POST", "/v1/customers", {"email": "a@example.com"}, idem=str(uuid.uuid4())))
    r = S.broker.admin("POST", f"/v1/orgs/{ad.org}/access-token/rotate?mode=test")
    h.assert_status(r, 200)
    new = r.json()["access_token"]
    ok(ad.call("POST", "/v1/customers", {"email": "b@example.com"}, idem=str(uuid.uuid4())))
    recs = sim_requests(S)
    assert header_of(recs[-1], "Authorization") == f"Bearer {new}", "the call did not use the rotated token"
    assert header_of(recs[0], "Authorization") != header_of(recs[-1], "Authorization")


def test_test_mode_is_minted_from_live_for_the_first_test_call():
    ad, acct = adapter(S, "test", connect_mode="live")
    pi = ok(ad.call("POST", "/v1/payment_intents", {"amount": "900", "currency": "usd",
                                                    "payment_method": "pm_card_visa", "capture_method": "manual",
                                                    "confirm": "true"}, idem=str(uuid.uuid4())))
    assert pi["livemode"] is False and pi["status"] == "requires_capture", pi
    [rec] = sim_requests(S)
    assert rec["mode"] == "test" and rec["account"] == acct, rec
    conns = {c["mode"]: c for c in S.broker.connections(ad.org)}
    assert conns["test"].get("derived_from") == "live", conns


def test_concurrent_first_test_calls_mint_once():
    ad, _ = adapter(S, "test", connect_mode="live")
    grants_before = len([g for g in S.sim.stats()["grants"] if g.get("grant_type") == "refresh_token"])
    rs = h.together([lambda: ad.call("POST", "/v1/customers", {"email": "c@example.com"}, idem=str(uuid.uuid4()))
                     for _ in range(6)])
    for r in rs:
        ok(r)
    mints = [g for g in S.sim.stats()["grants"] if g.get("grant_type") == "refresh_token"]
    assert len(mints) == grants_before + 1, f"{len(mints) - grants_before} mints for 6 concurrent calls"
    tokens = {header_of(x, "Authorization") for x in sim_requests(S)}
    assert len(tokens) == 1, "the concurrent calls used different tokens"


def test_a_deauthorized_connection_is_409_in_stripes_shape_without_a_stripe_call():
    ad, acct = adapter(S, "live")
    ok(ad.call("POST", "/v1/customers", {"email": "a@example.com"}, idem=str(uuid.uuid4())))
    out = S.sim._call("POST", "/_sim/webhook", {"url": S.broker.url("/webhooks/stripe"), "secret": WH_LIVE,
                                                 "type": "account.application.deauthorized", "account": acct,
                                                 "livemode": True, "revoke": True})
    assert out["status"] == 200, out
    before = len(sim_requests(S))
    r = ad.call("POST", "/v1/refunds", {"payment_intent": "pi_x", "amount": "100"}, idem=str(uuid.uuid4()))
    assert_stripe_error(r, 409, "reauthorization_required")
    assert len(sim_requests(S)) == before


def test_a_resource_outside_the_allow_list_never_reaches_stripe():
    ad, _ = adapter(S, "test")
    r = ad.call("POST", "/v1/transfers", {"amount": "100", "currency": "usd", "destination": "acct_x"},
                idem=str(uuid.uuid4()))
    assert_stripe_error(r, 403, "forbidden")
    assert sim_requests(S) == []


# ===== apps flavor =====

def refresh_grants(stack):
    return [g for g in stack.sim.stats()["grants"]
            if g.get("endpoint") == "apps_token" and g.get("grant_type") == "refresh_token"]


def test_apps_a_token_near_its_expiry_is_refreshed_before_the_call():
    ad, _ = adapter(A, "live", lifetime=MARGIN_S - 30)   # already within the refresh margin
    A.sim.config(apps_token_lifetime=3600)
    assert refresh_grants(A) == []
    ok(ad.call("POST", "/v1/customers", {"email": "a@example.com"}, idem=str(uuid.uuid4())))
    assert len(refresh_grants(A)) == 1, "the proxy did not refresh the token first"
    [rec] = sim_requests(A)
    now = A.broker.access_token(ad.org, "live").json()["access_token"]   # the refreshed one, served as is
    assert header_of(rec, "Authorization") == f"Bearer {now}"
    assert len(refresh_grants(A)) == 1


def test_apps_stripe_401_refreshes_once_and_resends_once_with_the_same_key():
    ad, _ = adapter(A, "live", lifetime=3600)
    old = A.broker.access_token(ad.org, "live").json()["access_token"]
    grants_before = len(refresh_grants(A))
    # Stripe's clock runs ahead: the token the broker holds has expired there (early)
    A.sim.config(clock_offset=3700)
    key = str(uuid.uuid4())
    r = ad.call("POST", "/v1/customers", {"email": "a@example.com"}, idem=key)
    cus = ok(r)
    assert cus["object"] == "customer"
    recs = sim_requests(A)
    assert len(recs) == 2, recs
    assert recs[0]["status"] == 401 and recs[1]["status"] == 200, recs
    assert header_of(recs[0], "Authorization") == f"Bearer {old}"
    assert header_of(recs[1], "Authorization") != f"Bearer {old}"
    assert header_of(recs[0], "Idempotency-Key") == key == header_of(recs[1], "Idempotency-Key")
    assert len(refresh_grants(A)) == grants_before + 1, "not exactly one refresh"
    assert_clean(A, recs, ad.key)


def test_apps_a_second_401_is_passed_through_not_retried_again():
    ad, _ = adapter(A, "live", lifetime=3600)
    A.sim.fault(endpoint="customers", kind="status", status=401, count=2)
    r = ad.call("POST", "/v1/customers", {"email": "a@example.com"}, idem=str(uuid.uuid4()))
    assert r.status == 401, r.describe()
    n = len(sim_requests(A))
    assert n == 2, f"expected the call and one resend, the simulator got {n}"
