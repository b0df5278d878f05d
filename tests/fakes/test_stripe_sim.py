#!/usr/bin/env python3
"""Self-test of the Stripe simulator (tests/fakes/stripe_sim.py), standard library only.

Starts the simulator on a free port, waits for its ready line and ready file (no sleeps), and
checks the OAuth rules the broker depends on, the payment API its Stripe proxy forwards to
(objects, states, tokens, idempotency, the call record), the control interface and every fault
kind at every stage.
Prints "sim: N passed, M failed" and exits non-zero when anything failed.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_KEY, LIVE_KEY = "sk_test_platform_sim", "sk_live_platform_sim"
TEST_CA, LIVE_CA = "ca_test_sim", "ca_live_sim"
PORT = None


def call(method, path, form=None, body=None, headers=None, timeout=10):
    """One request on a fresh connection; returns (status, headers, text)."""
    h = dict(headers or {})
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = body if isinstance(body, str) else json.dumps(body)
        h["Content-Type"] = "application/json"
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def jcall(method, path, **kw):
    status, headers, text = call(method, path, **kw)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    return status, json.loads(text)


def ctl(path, req=None, method="POST"):
    status, j = jcall(method, "/_sim/" + path, body=req if req is not None else {})
    assert status == 200, (path, status, j)
    return j


def bearer(key):
    return {"Authorization": "Bearer " + key}


def basic(key):
    return {"Authorization": "Basic " + base64.b64encode((key + ":").encode()).decode()}


def connect_token(key, **form):
    return jcall("POST", "/oauth/token", form=form, headers=bearer(key))


def apps_token(key, **form):
    return jcall("POST", "/v1/oauth/token", form=form, headers=basic(key))


def active(tok):
    return ctl("token-info", {"access_token": tok})["active"]


def rt_active(rt):
    return ctl("token-info", {"refresh_token": rt})["active"]


def new_connection(client_id=TEST_CA, key=TEST_KEY, flavor="connect", account=None):
    code = ctl("issue-code", {"client_id": client_id, "flavor": flavor, "account": account})["code"]
    fn = connect_token if flavor == "connect" else apps_token
    status, j = fn(key, grant_type="authorization_code", code=code)
    assert status == 200, j
    return code, j


# -- tests -------------------------------------------------------------------------------------
def test_code_exchange_shape():
    _, j = new_connection()
    assert j["access_token"].startswith("sk_test_") and len(j["access_token"]) == 8 + 32
    assert j["refresh_token"].startswith("rt_") and len(j["refresh_token"]) == 35
    assert j["stripe_publishable_key"].startswith("pk_test_")
    assert j["stripe_user_id"].startswith("acct_") and len(j["stripe_user_id"]) == 21
    assert j["livemode"] is False and j["token_type"] == "bearer" and j["scope"] == "read_write"
    assert "expires_in" not in j


def test_client_secret_form_and_basic():
    code = ctl("issue-code", {"client_id": TEST_CA})["code"]
    s, j = jcall("POST", "/oauth/token", form={"grant_type": "authorization_code", "code": code,
                                               "client_secret": TEST_KEY})
    assert s == 200, j
    s, j = jcall("POST", "/oauth/token", form={"grant_type": "refresh_token",
                                               "refresh_token": j["refresh_token"]}, headers=basic(TEST_KEY))
    assert s == 200, j


def test_code_single_use_and_reuse_revokes():
    code, j = new_connection()
    assert active(j["access_token"]) and rt_active(j["refresh_token"])
    s, e = connect_token(TEST_KEY, grant_type="authorization_code", code=code)
    assert s == 400 and e["error"] == "invalid_grant" and set(e) == {"error", "error_description"}
    assert not active(j["access_token"]) and not rt_active(j["refresh_token"])
    s, e = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 400 and e["error"] == "invalid_grant"
    assert ctl("stats", method="GET")["codes_used"][code] == 2


def test_unknown_and_expired_code():
    s, e = connect_token(TEST_KEY, grant_type="authorization_code", code="ac_nope")
    assert s == 400 and e["error"] == "invalid_grant"
    code = ctl("issue-code", {"client_id": TEST_CA})["code"]
    ctl("config", {"clock_offset": 301})
    s, e = connect_token(TEST_KEY, grant_type="authorization_code", code=code)
    assert s == 400 and e["error"] == "invalid_grant" and "expired" in e["error_description"]


def test_code_mode_mismatch():
    code = ctl("issue-code", {"client_id": LIVE_CA})["code"]
    s, e = connect_token(TEST_KEY, grant_type="authorization_code", code=code)
    assert s == 400 and e["error"] == "invalid_grant"
    s, j = connect_token(LIVE_KEY, grant_type="authorization_code", code=code)
    assert s == 200 and j["livemode"] is True and j["access_token"].startswith("sk_live_")


def test_refresh_revokes_previous_and_does_not_rotate():
    _, j = new_connection()
    s, k = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and k["refresh_token"] == j["refresh_token"]
    assert k["access_token"] != j["access_token"] and k["stripe_user_id"] == j["stripe_user_id"]
    assert k["stripe_publishable_key"] == j["stripe_publishable_key"]
    assert not active(j["access_token"]) and active(k["access_token"])
    assert ctl("stats", method="GET")["revoked_access_tokens"] >= 1
    s, k2 = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and not active(k["access_token"]) and active(k2["access_token"])


def test_lesser_scope():
    _, j = new_connection()
    s, k = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"], scope="read_only")
    assert s == 200 and k["scope"] == "read_only"
    s, e = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"], scope="admin")
    assert s == 400 and e["error"] == "invalid_scope"


def test_live_refresh_mints_test_token():
    _, j = new_connection(LIVE_CA, LIVE_KEY)
    s, t = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and t["livemode"] is False and t["access_token"].startswith("sk_test_")
    assert t["stripe_publishable_key"].startswith("pk_test_") and t["stripe_user_id"] == j["stripe_user_id"]
    info = ctl("token-info", {"access_token": t["access_token"]})
    assert info == dict(info, active=True, mode="test", livemode=False, account=j["stripe_user_id"])
    assert active(j["access_token"])  # the live token of the other mode is untouched


def test_test_refresh_cannot_mint_live():
    _, j = new_connection()
    s, e = connect_token(LIVE_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 400 and e["error"] == "invalid_grant"
    assert active(j["access_token"])


def test_invalid_client():
    for headers in ({}, bearer("sk_test_wrong"), basic("sk_live_wrong")):
        s, e = jcall("POST", "/oauth/token", form={"grant_type": "refresh_token", "refresh_token": "rt_x"},
                     headers=headers)
        assert s == 401 and e["error"] == "invalid_client" and "error_description" in e
    s, e = jcall("POST", "/v1/oauth/token", form={"grant_type": "refresh_token", "refresh_token": "rt_x"},
                 headers=bearer(TEST_KEY))  # Apps: Basic only
    assert s == 401 and e["error"] == "invalid_client"
    s, e = jcall("POST", "/oauth/deauthorize", form={"client_id": TEST_CA, "stripe_user_id": "acct_x"},
                 headers=bearer("sk_test_nope"))
    assert s == 401 and e["error"] == "invalid_client"


def test_grant_type_errors():
    s, e = connect_token(TEST_KEY)
    assert s == 400 and e["error"] == "invalid_request"
    s, e = connect_token(TEST_KEY, grant_type="password")
    assert s == 400 and e["error"] == "unsupported_grant_type"
    s, e = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token="rt_unknown")
    assert s == 400 and e["error"] == "invalid_grant"


def test_apps_answer_without_expires_in_still_expires():
    ctl("config", {"apps_token_lifetime": 60, "apps_send_expires_in": False})
    _, j = new_connection(flavor="apps")
    assert "expires_in" not in j and active(j["access_token"])
    ctl("config", {"clock_offset": 61})
    assert not active(j["access_token"])


def test_apps_rotation_and_expiry():
    ctl("config", {"apps_token_lifetime": 60})
    _, j = new_connection(flavor="apps")
    assert j["scope"] == "stripe_apps" and j["expires_in"] == 60
    s, k = apps_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and k["refresh_token"] != j["refresh_token"]
    assert not rt_active(j["refresh_token"]) and rt_active(k["refresh_token"])
    assert not active(j["access_token"]) and active(k["access_token"])
    s, e = apps_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 400 and e["error"] == "invalid_grant"
    assert rt_active(k["refresh_token"])  # a stale refresh token does not kill the new one
    ctl("config", {"clock_offset": 61})
    assert not active(k["access_token"])
    s, k2 = apps_token(TEST_KEY, grant_type="refresh_token", refresh_token=k["refresh_token"])
    assert s == 200 and active(k2["access_token"])


def test_flavors_do_not_mix():
    code = ctl("issue-code", {"client_id": TEST_CA, "flavor": "apps"})["code"]
    s, e = connect_token(TEST_KEY, grant_type="authorization_code", code=code)
    assert s == 400 and e["error"] == "invalid_grant"


def test_deauthorize():
    _, j = new_connection()
    acct = j["stripe_user_id"]
    form = {"client_id": TEST_CA, "stripe_user_id": acct}
    s, e = jcall("POST", "/oauth/deauthorize", form=form, headers=bearer(LIVE_KEY))
    assert s == 401 and e["error"] == "invalid_client"  # key mode must match the client id
    s, k = jcall("POST", "/oauth/deauthorize", form=form, headers=bearer(TEST_KEY))
    assert s == 200 and k == {"stripe_user_id": acct}
    assert not active(j["access_token"]) and not rt_active(j["refresh_token"])
    s, e = jcall("POST", "/oauth/deauthorize", form=form, headers=bearer(TEST_KEY))
    assert s == 400 and e == {"error": "invalid_client",
                              "error_description": "No such user connected to this application"}


def test_authorize_modes():
    q = urllib.parse.urlencode({"response_type": "code", "client_id": TEST_CA, "scope": "read_write",
                                "redirect_uri": "http://127.0.0.1:9/oauth/callback", "state": "st1"})
    s, h, page = call("GET", "/oauth/authorize?" + q)
    assert s == 200 and h["Content-Type"].startswith("text/html")
    for needle in ('lang="en"', "<title>Stripe (simulator)</title>", 'id="approve"', 'id="decline"',
                   '<label for="account"', "test mode", 'action="/oauth/authorize/decision"'):
        assert needle in page, needle
    ctl("config", {"next_account": "acct_NEXT000000000001"})
    s, h, page = call("GET", "/oauth/authorize?" + q)
    assert 'value="acct_NEXT000000000001"' in page
    form = {"client_id": TEST_CA, "redirect_uri": "http://127.0.0.1:9/oauth/callback", "state": "st1",
            "scope": "read_write", "flavor": "connect", "decision": "approve", "account": "acct_NEXT000000000001"}
    s, h, _ = call("POST", "/oauth/authorize/decision", form=form)
    loc = urllib.parse.urlsplit(h["Location"])
    p = dict(urllib.parse.parse_qsl(loc.query))
    assert s == 302 and loc.path == "/oauth/callback" and p["state"] == "st1" and p["scope"] == "read_write"
    s, j = connect_token(TEST_KEY, grant_type="authorization_code", code=p["code"])
    assert s == 200 and j["stripe_user_id"] == "acct_NEXT000000000001"
    s, h, _ = call("POST", "/oauth/authorize/decision", form=dict(form, decision="deny"))
    p = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h["Location"]).query))
    assert s == 302 and p == {"error": "access_denied", "error_description": "The user denied your request",
                              "state": "st1"}
    ctl("config", {"authorize": "approve"})
    s, h, _ = call("GET", "/oauth/authorize?" + q)
    p = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h["Location"]).query))
    assert s == 302 and p["code"].startswith("ac_") and len(p["code"]) == 27 and p["state"] == "st1"
    ctl("config", {"authorize": "deny"})
    s, h, _ = call("GET", "/oauth/authorize?" + q)
    assert s == 302 and "error=access_denied" in h["Location"]
    s, h, page = call("GET", "/oauth/authorize?" + q.replace(TEST_CA, "ca_unknown"))
    assert s == 400 and h["Content-Type"].startswith("text/html") and "Location" not in h
    ctl("config", {"authorize": "approve"})
    q2 = urllib.parse.urlencode({"client_id": LIVE_CA, "redirect_uri": "https://b.example/cb", "state": "s2"})
    s, h, _ = call("GET", "/oauth/v2/authorize?" + q2)
    p = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h["Location"]).query))
    assert s == 302 and p["scope"] == "stripe_apps"
    s, j = apps_token(LIVE_KEY, grant_type="authorization_code", code=p["code"])
    assert s == 200 and j["livemode"] is True and "expires_in" in j


def test_unknown_path():
    s, e = jcall("GET", "/oauth/nothing")
    assert s == 404 and e == {"error": "invalid_request", "error_description": "Unrecognized request URL"}
    s, e = jcall("GET", "/oauth/token")
    assert s == 404


def test_fault_status():
    ctl("faults", {"endpoint": "token", "kind": "status", "status": 503, "count": 1})
    s, e = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token="rt_x")
    assert s == 503
    s, e = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token="rt_x")
    assert s == 400  # the fault was used up
    ctl("faults", {"endpoint": "any", "kind": "status", "status": 429, "body": "slow down"})
    s, _, text = call("POST", "/oauth/deauthorize", form={}, headers=bearer(TEST_KEY))
    assert s == 429 and text == "slow down"
    s, _, text = call("POST", "/v1/oauth/token", form={}, headers=basic(TEST_KEY))
    assert s == 429
    ctl("faults", method="DELETE")
    s, _, _ = call("POST", "/v1/oauth/token", form={}, headers=basic(TEST_KEY))
    assert s == 400
    grants = ctl("stats", method="GET")["grants"]
    assert grants[0]["outcome"] == "fault:status" and grants[0]["status"] == 503


def test_fault_delay():
    _, j = new_connection()
    ctl("faults", {"endpoint": "token", "kind": "delay", "delay_ms": 300, "count": 1})
    t0 = time.monotonic()
    s, k = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    s, k = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and time.monotonic() - t0 < 0.3


def test_fault_hang():
    ctl("faults", {"endpoint": "token", "kind": "hang"})
    t0 = time.monotonic()
    try:
        call("POST", "/oauth/token", form={}, headers=bearer(TEST_KEY), timeout=0.5)
        raise AssertionError("a hung call answered")
    except (socket.timeout, TimeoutError):
        pass
    assert time.monotonic() - t0 < 2
    ctl("reset")
    s, _, _ = call("POST", "/oauth/token", form={}, headers=bearer(TEST_KEY))
    assert s == 400


def test_fault_close():
    ctl("faults", {"endpoint": "apps_token", "kind": "close", "count": 1})
    try:
        call("POST", "/v1/oauth/token", form={}, headers=basic(TEST_KEY))
        raise AssertionError("a closed call answered")
    except (http.client.RemoteDisconnected, ConnectionError):
        pass
    s, _, _ = call("POST", "/v1/oauth/token", form={}, headers=basic(TEST_KEY))
    assert s == 400


def test_fault_malformed():
    ctl("faults", {"endpoint": "deauthorize", "kind": "malformed", "count": 1})
    s, h, text = call("POST", "/oauth/deauthorize", form={}, headers=bearer(TEST_KEY))
    assert s == 200 and text == "{not json" and h["Content-Type"] == "application/json"


def test_stats_and_reset():
    new_connection()
    st = ctl("stats", method="GET")
    assert st["calls"]["token"] == 1 and st["grants"][0]["outcome"] == "ok"
    assert set(st["grants"][0]) >= {"endpoint", "grant_type", "mode", "outcome", "status", "t"}
    ctl("reset")
    st = ctl("stats", method="GET")
    assert st["calls"]["token"] == 0 and st["grants"] == [] and st["codes_used"] == {}


def test_concurrency():
    _, j = new_connection()
    results, errors = [], []

    def worker():
        try:
            results.append(connect_token(TEST_KEY, grant_type="refresh_token",
                                         refresh_token=j["refresh_token"])[0])
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    threads = [threading.Thread(target=worker) for _ in range(250)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and results.count(200) == 250, (errors[:3], len(results))
    st = ctl("stats", method="GET")
    assert st["calls"]["token"] == 251 and st["revoked_access_tokens"] == 250


class Receiver(BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((self.headers["Stripe-Signature"], body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


def test_webhook_signing():
    srv = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _, j = new_connection(LIVE_CA, LIVE_KEY)
        url = "http://127.0.0.1:%d/webhooks/stripe" % srv.server_address[1]
        r = ctl("webhook", {"url": url, "secret": "whsec_a", "type": "account.application.deauthorized",
                            "account": j["stripe_user_id"], "livemode": True, "timestamp": 1700000000,
                            "extra_signatures": ["whsec_b"], "revoke": True})
        assert r["status"] == 200 and r["body"] == "ok" and r["event_id"].startswith("evt_")
        sig, body = Receiver.got[-1]
        parts = [p.split("=", 1) for p in sig.split(",")]
        assert parts[0] == ["t", "1700000000"] and [k for k, _ in parts[1:]] == ["v1", "v1"]
        for (_, v), secret in zip(parts[1:], ("whsec_a", "whsec_b")):
            want = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(v, want)
        ev = json.loads(body)
        assert ev["id"] == r["event_id"] and ev["object"] == "event" and ev["livemode"] is True
        assert ev["type"] == "account.application.deauthorized" and ev["account"] == j["stripe_user_id"]
        assert ev["data"]["object"] == dict(ev["data"]["object"], id=LIVE_CA, object="application")
        assert not active(j["access_token"])  # "revoke": true disconnected the account too
        r = ctl("webhook", {"url": url, "secret": "whsec_a", "type": "charge.captured", "account": "acct_1",
                            "id": "evt_fixed"})
        assert r["event_id"] == "evt_fixed" and json.loads(Receiver.got[-1][1])["id"] == "evt_fixed"
    finally:
        srv.shutdown()
        srv.server_close()


# -- the payment API ---------------------------------------------------------------------------
def api(method, path, token=None, form=None, headers=None, timeout=10):
    """A payment API call (form: dict or list of pairs); returns (status, headers, JSON body)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    s, hdrs, text = call(method, path, form=form, headers=h, timeout=timeout)
    assert hdrs.get("Content-Type", "").startswith("application/json"), hdrs
    assert hdrs.get("Request-Id", "").startswith("req_") and len(hdrs["Request-Id"]) == 18, hdrs
    return s, hdrs, json.loads(text)


def api_error(resp, status, type_, code=None, param=None):
    s, _, j = resp
    assert s == status, (s, j)
    e = j["error"]
    assert set(j) == {"error"} and e["type"] == type_ and isinstance(e["message"], str) and e["message"], j
    assert e.get("code") == code and e.get("param") == param, j
    return e


def token_of(client_id=TEST_CA, key=TEST_KEY, flavor="connect", account=None):
    return new_connection(client_id, key, flavor, account)[1]


def records(since=0):
    return ctl("requests?since=%d" % since, method="GET")["requests"]


def authorized_pi(tok, amount=1000, capture_method="manual", **extra):
    form = dict({"amount": str(amount), "currency": "usd", "capture_method": capture_method,
                 "payment_method": "pm_card_visa", "confirm": "true"}, **extra)
    s, _, pi = api("POST", "/v1/payment_intents", tok, form=form)
    assert s == 200, pi
    return pi


def test_api_manual_capture_flow():
    j = token_of()
    tok = j["access_token"]
    s, h, pi = api("POST", "/v1/payment_intents", tok, form=[
        ("amount", "1000"), ("currency", "USD"), ("capture_method", "manual"), ("payment_method", "pm_card_visa"),
        ("confirm", "true"), ("metadata[order]", "42"), ("metadata[note]", "a b&c"),
        ("payment_method_types[]", "card")])
    assert s == 200 and h["Stripe-Version"] == "2024-06-20", pi
    assert pi["object"] == "payment_intent" and pi["id"].startswith("pi_") and pi["livemode"] is False
    assert pi["amount"] == 1000 and pi["currency"] == "usd" and pi["status"] == "requires_capture"
    assert pi["amount_capturable"] == 1000 and pi["amount_received"] == 0 and pi["capture_method"] == "manual"
    assert pi["metadata"] == {"order": "42", "note": "a b&c"} and pi["payment_method_types"] == ["card"]
    assert pi["latest_charge"].startswith("ch_") and pi["client_secret"].startswith(pi["id"] + "_secret_")
    assert isinstance(pi["created"], int) and abs(pi["created"] - time.time()) < 60
    s, _, ch = api("GET", "/v1/charges/" + pi["latest_charge"], tok)
    assert s == 200 and ch["object"] == "charge" and ch["captured"] is False and ch["paid"] is True
    assert ch["status"] == "succeeded" and ch["amount"] == 1000 and ch["payment_intent"] == pi["id"]
    assert ch["amount_captured"] == 0 and ch["payment_method_details"]["card"]["last4"] == "4242"
    api_error(api("POST", "/v1/payment_intents/%s/capture" % pi["id"], tok, form={"amount_to_capture": "1001"}),
              400, "invalid_request_error", "amount_too_large", "amount_to_capture")
    s, _, cap = api("POST", "/v1/payment_intents/%s/capture" % pi["id"], tok, form={"amount_to_capture": "600"})
    assert s == 200 and cap["status"] == "succeeded" and cap["amount_received"] == 600, cap
    assert cap["amount_capturable"] == 0 and cap["id"] == pi["id"]
    s, _, ch = api("GET", "/v1/charges/" + pi["latest_charge"], tok)
    assert ch["captured"] is True and ch["amount_captured"] == 600 and ch["balance_transaction"].startswith("txn_")
    e = api_error(api("POST", "/v1/payment_intents/%s/capture" % pi["id"], tok), 400,
                  "invalid_request_error", "payment_intent_unexpected_state")
    assert "status of succeeded" in e["message"] and e["payment_intent"]["id"] == pi["id"]
    s, _, got = api("GET", "/v1/payment_intents/" + pi["id"], tok)
    assert s == 200 and got == cap
    s, _, got = api("GET", "/v1/payment_intents/%s?expand[]=latest_charge" % pi["id"], tok)
    assert got["latest_charge"] == ch


def test_api_automatic_capture_and_confirm():
    tok = token_of()["access_token"]
    s, _, pi = api("POST", "/v1/payment_intents", tok, form={"amount": "500", "currency": "eur"})
    assert s == 200 and pi["status"] == "requires_payment_method" and pi["capture_method"] == "automatic"
    assert pi["latest_charge"] is None and pi["payment_method"] is None
    e = api_error(api("POST", "/v1/payment_intents/%s/confirm" % pi["id"], tok), 400, "invalid_request_error",
                  "payment_intent_unexpected_state", "payment_method")
    assert "missing a payment method" in e["message"]
    s, _, pi = api("POST", "/v1/payment_intents/%s/confirm" % pi["id"], tok,
                   form={"payment_method": "pm_card_mastercard"})
    assert s == 200 and pi["status"] == "succeeded" and pi["amount_received"] == 500, pi
    s, _, ch = api("GET", "/v1/charges/" + pi["latest_charge"], tok)
    assert ch["captured"] is True and ch["amount_captured"] == 500
    api_error(api("POST", "/v1/payment_intents/%s/confirm" % pi["id"], tok), 400, "invalid_request_error",
              "payment_intent_unexpected_state")
    s, _, pi2 = api("POST", "/v1/payment_intents", tok, form={"amount": "700", "currency": "usd",
                                                              "payment_method": "pm_card_amex"})
    assert pi2["status"] == "requires_confirmation" and pi2["payment_method"] == "pm_card_amex"


def test_api_decline_and_unknown_payment_method():
    tok = token_of()["access_token"]
    s, _, j = api("POST", "/v1/payment_intents", tok, form={
        "amount": "1000", "currency": "usd", "payment_method": "pm_card_chargeDeclinedInsufficientFunds",
        "confirm": "true"})
    e = api_error((s, _, j), 402, "card_error", "card_declined")
    assert e["decline_code"] == "insufficient_funds" and e["charge"].startswith("ch_")
    pi = e["payment_intent"]
    assert pi["status"] == "requires_payment_method" and pi["latest_charge"] == e["charge"]
    assert pi["last_payment_error"]["code"] == "card_declined"
    s, _, ch = api("GET", "/v1/charges/" + e["charge"], tok)
    assert ch["status"] == "failed" and ch["paid"] is False and ch["failure_code"] == "card_declined"
    s, _, ok = api("POST", "/v1/payment_intents/%s/confirm" % pi["id"], tok, form={"payment_method": "pm_card_visa"})
    assert s == 200 and ok["status"] == "succeeded" and ok["latest_charge"] != e["charge"]
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd",
                                                            "payment_method": "pm_nope"}),
              400, "invalid_request_error", "resource_missing", "payment_method")
    live = token_of(LIVE_CA, LIVE_KEY)["access_token"]
    s, _, j = api("POST", "/v1/payment_intents", live, form={"amount": "1000", "currency": "usd",
                                                             "payment_method": "pm_card_visa", "confirm": "true"})
    e = api_error((s, _, j), 402, "card_error", "card_declined")
    assert e["decline_code"] == "test_mode_live_card" and e["payment_intent"]["livemode"] is True


def test_api_cancel():
    tok = token_of()["access_token"]
    pi = authorized_pi(tok)
    api_error(api("POST", "/v1/payment_intents/%s/cancel" % pi["id"], tok, form={"cancellation_reason": "bored"}),
              400, "invalid_request_error", None, "cancellation_reason")
    s, _, c = api("POST", "/v1/payment_intents/%s/cancel" % pi["id"], tok,
                  form={"cancellation_reason": "requested_by_customer"})
    assert s == 200 and c["status"] == "canceled" and c["cancellation_reason"] == "requested_by_customer"
    assert isinstance(c["canceled_at"], int) and c["amount_capturable"] == 0
    s, _, ch = api("GET", "/v1/charges/" + pi["latest_charge"], tok)
    assert ch["refunded"] is True and ch["amount_refunded"] == 1000 and ch["captured"] is False
    for action in ("cancel", "capture", "confirm"):
        api_error(api("POST", "/v1/payment_intents/%s/%s" % (pi["id"], action), tok), 400,
                  "invalid_request_error", "payment_intent_unexpected_state")
    s, _, fresh = api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd"})
    s, _, c = api("POST", "/v1/payment_intents/%s/cancel" % fresh["id"], tok)
    assert s == 200 and c["status"] == "canceled" and c["cancellation_reason"] is None


def test_api_refunds():
    tok = token_of()["access_token"]
    pi = authorized_pi(tok, 1000, "automatic")
    api_error(api("POST", "/v1/refunds", tok), 400, "invalid_request_error", "parameter_missing")
    s, _, r1 = api("POST", "/v1/refunds", tok, form={"payment_intent": pi["id"], "amount": "300",
                                                     "reason": "requested_by_customer", "metadata[case]": "7"})
    assert s == 200 and r1["object"] == "refund" and r1["id"].startswith("re_") and r1["amount"] == 300, r1
    assert r1["status"] == "succeeded" and r1["charge"] == pi["latest_charge"] and r1["payment_intent"] == pi["id"]
    assert r1["currency"] == "usd" and r1["metadata"] == {"case": "7"} and r1["livemode"] is False
    s, _, got = api("GET", "/v1/refunds/" + r1["id"], tok)
    assert s == 200 and got == r1
    s, _, ch = api("GET", "/v1/charges/" + pi["latest_charge"], tok)
    assert ch["amount_refunded"] == 300 and ch["refunded"] is False
    e = api_error(api("POST", "/v1/refunds", tok, form={"charge": ch["id"], "amount": "701"}), 400,
                  "invalid_request_error", "amount_too_large", "amount")
    assert "$7.01" in e["message"] and "$7.00" in e["message"]
    s, _, r2 = api("POST", "/v1/refunds", tok, form={"charge": ch["id"]})
    assert s == 200 and r2["amount"] == 700 and r2["payment_intent"] == pi["id"]
    s, _, ch = api("GET", "/v1/charges/" + ch["id"], tok)
    assert ch["amount_refunded"] == 1000 and ch["refunded"] is True
    api_error(api("POST", "/v1/refunds", tok, form={"payment_intent": pi["id"]}), 400, "invalid_request_error",
              "charge_already_refunded")
    held = authorized_pi(tok, 800, "manual")
    api_error(api("POST", "/v1/refunds", tok, form={"payment_intent": held["id"]}), 400, "invalid_request_error",
              "charge_not_refundable", "payment_intent")
    api_error(api("POST", "/v1/refunds", tok, form={"charge": held["latest_charge"]}), 400,
              "invalid_request_error", "charge_not_refundable", "charge")
    api("POST", "/v1/payment_intents/%s/capture" % held["id"], tok, form={"amount_to_capture": "500"})
    e = api_error(api("POST", "/v1/refunds", tok, form={"payment_intent": held["id"], "amount": "600"}), 400,
                  "invalid_request_error", "amount_too_large", "amount")  # only what was captured
    api_error(api("POST", "/v1/refunds", tok, form={"payment_intent": "pi_missing"}), 404,
              "invalid_request_error", "resource_missing", "payment_intent")


def test_api_customers():
    tok = token_of()["access_token"]
    s, _, c = api("POST", "/v1/customers", tok, form={"email": "a@example.com", "name": "Ada",
                                                      "metadata[sf_account]": "001xx"})
    assert s == 200 and c["object"] == "customer" and c["id"].startswith("cus_") and len(c["id"]) == 18, c
    assert c["email"] == "a@example.com" and c["name"] == "Ada" and c["metadata"] == {"sf_account": "001xx"}
    assert c["livemode"] is False and c["balance"] == 0
    s, _, got = api("GET", "/v1/customers/" + c["id"], tok)
    assert s == 200 and got == c
    pi = authorized_pi(tok, 900, customer=c["id"])
    assert pi["customer"] == c["id"]
    s, _, ch = api("GET", "/v1/charges/%s?expand[]=customer" % pi["latest_charge"], tok)
    assert ch["customer"] == c
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd", "customer": "cus_no"}),
              404, "invalid_request_error", "resource_missing", "customer")


def test_api_delete_customer_and_lists():
    tok = token_of()["access_token"]
    other = token_of()["access_token"]
    api("POST", "/v1/customers", other, form={"email": "x@example.com"})  # another account's
    cs = [api("POST", "/v1/customers", tok, form={"email": "%d@example.com" % i})[2] for i in range(3)]
    s, _, l = api("GET", "/v1/customers?limit=2", tok)
    assert s == 200 and l["object"] == "list" and l["url"] == "/v1/customers" and l["has_more"] is True
    assert [c["id"] for c in l["data"]] == [cs[2]["id"], cs[1]["id"]] and l["data"][0] == cs[2]
    s, _, l = api("GET", "/v1/customers?limit=2&starting_after=" + cs[1]["id"], tok)
    assert [c["id"] for c in l["data"]] == [cs[0]["id"]] and l["has_more"] is False
    s, _, l = api("GET", "/v1/customers?email=1%40example.com", tok)
    assert [c["id"] for c in l["data"]] == [cs[1]["id"]]
    s, _, d = api("DELETE", "/v1/customers/" + cs[1]["id"], tok)
    assert s == 200 and d == {"id": cs[1]["id"], "object": "customer", "deleted": True}
    s, _, d = api("GET", "/v1/customers/" + cs[1]["id"], tok)
    assert s == 200 and d == {"id": cs[1]["id"], "object": "customer", "deleted": True}
    api_error(api("DELETE", "/v1/customers/" + cs[1]["id"], tok), 404, "invalid_request_error",
              "resource_missing", "id")
    api_error(api("DELETE", "/v1/customers/" + cs[0]["id"], other), 404, "invalid_request_error",
              "resource_missing", "id")
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd",
                                                            "customer": cs[1]["id"]}),
              404, "invalid_request_error", "resource_missing", "customer")
    s, _, l = api("GET", "/v1/customers", tok)
    assert [c["id"] for c in l["data"]] == [cs[2]["id"], cs[0]["id"]]
    pi = authorized_pi(tok, 1000, "automatic", customer=cs[0]["id"])
    authorized_pi(tok, 2000, "automatic")
    s, _, l = api("GET", "/v1/payment_intents?customer=%s&expand[]=data.latest_charge" % cs[0]["id"], tok)
    assert [p["id"] for p in l["data"]] == [pi["id"]] and l["data"][0]["latest_charge"]["id"] == pi["latest_charge"]
    s, _, r = api("POST", "/v1/refunds", tok, form={"payment_intent": pi["id"], "amount": "100"})
    s, _, l = api("GET", "/v1/refunds?payment_intent=" + pi["id"], tok)
    assert [x["id"] for x in l["data"]] == [r["id"]]
    s, _, l = api("GET", "/v1/charges", tok)
    assert len(l["data"]) == 2 and l["data"][1]["id"] == pi["latest_charge"]
    for q, param in (("limit=101", "limit"), ("limit=0", "limit"), ("starting_after=cus_nope", "starting_after"),
                     ("colour=red", "colour"), ("expand[]=latest_charge", "expand")):
        s, _, j = api("GET", "/v1/payment_intents?" + q, tok)
        assert s in (400, 404) and j["error"]["param"] == param, (q, j)


def test_api_request_errors():
    tok = token_of()["access_token"]
    e = api_error(api("GET", "/v1/payment_intents/pi_nope", tok), 404, "invalid_request_error",
                  "resource_missing", "intent")
    assert e["message"] == "No such payment_intent: 'pi_nope'"
    for path in ("/v1/charges/ch_nope", "/v1/refunds/re_nope", "/v1/customers/cus_nope"):
        api_error(api("GET", path, tok), 404, "invalid_request_error", "resource_missing", "id")
    api_error(api("POST", "/v1/payment_intents", tok, form={"currency": "usd"}), 400, "invalid_request_error",
              "parameter_missing", "amount")
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "1"}), 400, "invalid_request_error",
              "parameter_missing", "currency")
    for bad in ("12.5", "abc", "0", "-3"):
        api_error(api("POST", "/v1/payment_intents", tok, form={"amount": bad, "currency": "usd"}), 400,
                  "invalid_request_error", "parameter_invalid_integer", "amount")
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "49", "currency": "usd"}), 400,
              "invalid_request_error", "amount_too_small", "amount")
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100000000", "currency": "usd"}), 400,
              "invalid_request_error", "amount_too_large", "amount")
    s, _, ok = api("POST", "/v1/payment_intents", tok, form={"amount": "50", "currency": "usd"})
    assert s == 200 and ok["amount"] == 50
    e = api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd", "colour": "x"}),
                  400, "invalid_request_error", "parameter_unknown", "colour")
    assert e["message"] == "Received unknown parameter: colour"
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd", "confirm": "yes"}),
              400, "invalid_request_error", None, "confirm")
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "100", "currency": "usd",
                                                            "capture_method": "later"}),
              400, "invalid_request_error", None, "capture_method")
    s, h, text = call("POST", "/v1/payment_intents", body={"amount": 1, "currency": "usd"}, headers=bearer(tok))
    assert s == 400 and "unsupported Content-Type application/json" in json.loads(text)["error"]["message"]
    for method, path in (("GET", "/v1/balance"), ("DELETE", "/v1/payment_intents/pi_x"),
                         ("POST", "/v1/payment_intents/pi_x/explode"), ("PUT", "/v1/customers")):
        e = api_error(api(method, path, tok), 404, "invalid_request_error")
        assert e["message"].startswith("Unrecognized request URL (%s: %s)" % (method, path)), e
    api_error(api("GET", "/v1/payment_intents/pi_x?expand[]=latest_charge", tok), 404, "invalid_request_error",
              "resource_missing", "intent")
    pi = authorized_pi(tok)
    api_error(api("GET", "/v1/payment_intents/%s?expand[]=amount" % pi["id"], tok), 400, "invalid_request_error",
              None, "expand")
    s, _, j = api("POST", "/v1/payment_intents", tok, form=[("amount", "100"), ("currency", "usd"),
                                                            ("metadata", "x"), ("metadata[a]", "y")])
    assert s == 400 and j["error"]["type"] == "invalid_request_error"


def test_api_form_parser():
    sys.path.insert(0, HERE)
    import stripe_sim
    p = stripe_sim.parse_form
    assert p("") == {}
    assert p("a=1&m%5Bk%5D=v%20w&l[]=x&l[]=y&n[0][b]=1&n[1][b]=2&e=") == {
        "a": "1", "m": {"k": "v w"}, "l": ["x", "y"], "n": [{"b": "1"}, {"b": "2"}], "e": ""}
    assert p("m[2]=a&m[x]=b") == {"m": {"2": "a", "x": "b"}}
    for bad in ("a=1&a[b]=2", "a[b]=2&a=1", "a]=1", "[a]=1"):
        try:
            p(bad)
            raise AssertionError("parsed " + bad)
        except stripe_sim.ApiError as e:
            assert e.status == 400 and e.body["error"]["type"] == "invalid_request_error"


def test_api_authentication():
    s, h, j = api("GET", "/v1/payment_intents/pi_x")
    assert s == 401 and "did not provide an API key" in j["error"]["message"] and "WWW-Authenticate" in h
    e = api_error(api("GET", "/v1/payment_intents/pi_x", "sk_test_unknown000000000000wxyz"), 401,
                  "invalid_request_error")
    assert e["message"] == "Invalid API Key provided: sk_test_****wxyz"
    j = token_of()
    old = j["access_token"]
    pi = authorized_pi(old)
    s, k = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=j["refresh_token"])
    assert s == 200 and not active(old)
    e = api_error(api("GET", "/v1/payment_intents/" + pi["id"], old), 401, "invalid_request_error")
    assert e["message"] == "Invalid API Key provided: %s****%s" % (old[:8], old[-4:]) and old not in json.dumps(e)
    s, _, got = api("GET", "/v1/payment_intents/" + pi["id"], k["access_token"])  # same account, new token
    assert s == 200 and got["id"] == pi["id"]
    s, _, got = api("GET", "/v1/payment_intents/" + pi["id"], None, headers=basic(k["access_token"]))
    assert s == 200  # Stripe takes the key as Basic user name too
    ctl("revoke", {"account": j["stripe_user_id"]})
    api_error(api("GET", "/v1/payment_intents/" + pi["id"], k["access_token"]), 401, "invalid_request_error")
    # Stripe Apps: an expired token is "Expired API Key provided", with code api_key_expired.
    ctl("config", {"apps_token_lifetime": 60})
    a = token_of(flavor="apps")["access_token"]
    assert api("POST", "/v1/customers", a)[0] == 200
    ctl("config", {"clock_offset": 61})
    e = api_error(api("POST", "/v1/customers", a), 401, "invalid_request_error", "api_key_expired")
    assert e["message"].startswith("Expired API Key provided: %s****%s" % (a[:8], a[-4:]))
    # The platform's own secret key acts on the platform account, not on a connected one.
    s, _, own = api("POST", "/v1/customers", TEST_KEY)
    assert s == 200 and own["livemode"] is False
    api_error(api("GET", "/v1/customers/" + own["id"], token_of()["access_token"]), 404, "invalid_request_error",
              "resource_missing", "id")
    assert ctl("requests", method="GET")["requests"][-1]["account"] != "acct_PLATFORMSIM00000"


def test_api_accounts_and_modes_isolated():
    ja, jb = token_of(), token_of()
    a, b = ja["access_token"], jb["access_token"]
    pi = authorized_pi(a)
    for path, param in (("/v1/payment_intents/" + pi["id"], "intent"), ("/v1/charges/" + pi["latest_charge"], "id")):
        api_error(api("GET", path, b), 404, "invalid_request_error", "resource_missing", param)
    api_error(api("POST", "/v1/payment_intents/%s/capture" % pi["id"], b), 404, "invalid_request_error",
              "resource_missing", "intent")
    api_error(api("POST", "/v1/refunds", b, form={"charge": pi["latest_charge"]}), 404, "invalid_request_error",
              "resource_missing", "charge")
    e = api_error(api("GET", "/v1/payment_intents/" + pi["id"], a, headers={"Stripe-Account": jb["stripe_user_id"]}),
                  403, "invalid_request_error", "account_invalid")
    assert a not in e["message"]
    s, _, got = api("GET", "/v1/payment_intents/" + pi["id"], a, headers={"Stripe-Account": ja["stripe_user_id"]})
    assert s == 200
    s, _, got = api("GET", "/v1/payment_intents/" + pi["id"], TEST_KEY,
                    headers={"Stripe-Account": ja["stripe_user_id"]})
    assert s == 200 and got["id"] == pi["id"]  # the platform acting on its connected account
    api_error(api("GET", "/v1/payment_intents/" + pi["id"], TEST_KEY, headers={"Stripe-Account": "acct_nobody"}),
              403, "invalid_request_error", "account_invalid")
    # One live authorization: a live token sees live objects; the test token minted from it does not.
    live = token_of(LIVE_CA, LIVE_KEY)
    s, _, c = api("POST", "/v1/customers", live["access_token"], form={"name": "L"})
    assert s == 200 and c["livemode"] is True
    s, t = connect_token(TEST_KEY, grant_type="refresh_token", refresh_token=live["refresh_token"])
    e = api_error(api("GET", "/v1/customers/" + c["id"], t["access_token"]), 404, "invalid_request_error",
                  "resource_missing", "id")
    assert "similar object exists in live mode" in e["message"]
    s, _, tc = api("POST", "/v1/customers", t["access_token"])
    assert s == 200 and tc["livemode"] is False
    rec = records()[-1]
    assert rec["account"] == live["stripe_user_id"] and rec["mode"] == "test"


def test_api_idempotency():
    ja = token_of()
    tok = ja["access_token"]
    form = {"amount": "1000", "currency": "usd", "capture_method": "manual", "payment_method": "pm_card_visa",
            "confirm": "true", "metadata[o]": "1"}
    key = {"Idempotency-Key": "order-1-capture", "Stripe-Version": "2023-10-16"}
    s1, h1, pi1 = api("POST", "/v1/payment_intents", tok, form=form, headers=key)
    assert s1 == 200 and "Idempotent-Replayed" not in h1
    assert h1["Idempotency-Key"] == "order-1-capture" and h1["Stripe-Version"] == "2023-10-16"
    s2, h2, pi2 = api("POST", "/v1/payment_intents", tok, form=dict(reversed(list(form.items()))), headers=key)
    assert (s2, pi2) == (s1, pi1) and h2["Idempotent-Replayed"] == "true"
    assert h2["Original-Request"] == h1["Request-Id"] and h2["Request-Id"] != h1["Request-Id"]
    s, _, cap = api("POST", "/v1/payment_intents/%s/capture" % pi1["id"], tok)
    s, _, pi3 = api("POST", "/v1/payment_intents", tok, form=form, headers=key)
    assert pi3 == pi1 and pi3["status"] == "requires_capture"  # the first answer, not the current state
    e = api_error(api("POST", "/v1/payment_intents", tok, form=dict(form, amount="999"), headers=key), 400,
                  "idempotency_error")
    assert "same parameters" in e["message"]
    e = api_error(api("POST", "/v1/customers", tok, headers=key), 400, "idempotency_error")
    assert "same endpoint" in e["message"]
    # Per account: another account's same key is a new request.
    s, h, other = api("POST", "/v1/payment_intents", token_of()["access_token"], form=form, headers=key)
    assert s == 200 and other["id"] != pi1["id"] and "Idempotent-Replayed" not in h
    # A card error started executing: it is replayed; a validation error did not: the key is free.
    dkey = {"Idempotency-Key": "decline-1"}
    bad = dict(form, payment_method="pm_card_chargeDeclined")
    s, _, d1 = api("POST", "/v1/payment_intents", tok, form=bad, headers=dkey)
    s2, h2, d2 = api("POST", "/v1/payment_intents", tok, form=bad, headers=dkey)
    assert s == s2 == 402 and d1 == d2 and h2["Idempotent-Replayed"] == "true"
    vkey = {"Idempotency-Key": "validation-1"}
    api_error(api("POST", "/v1/payment_intents", tok, form={"amount": "x", "currency": "usd"}, headers=vkey),
              400, "invalid_request_error", "parameter_invalid_integer", "amount")
    s, h, ok = api("POST", "/v1/payment_intents", tok, form={"amount": "50", "currency": "usd"}, headers=vkey)
    assert s == 200 and "Idempotent-Replayed" not in h
    # A GET is never replayed; keys are kept 24 hours.
    s, h, _ = api("GET", "/v1/payment_intents/" + pi1["id"], tok, headers=key)
    assert s == 200 and "Idempotent-Replayed" not in h
    ctl("config", {"clock_offset": 24 * 3600 + 1})
    s, h, pi4 = api("POST", "/v1/payment_intents", tok, form=form, headers=key)
    assert s == 200 and pi4["id"] != pi1["id"] and "Idempotent-Replayed" not in h
    api_error(api("POST", "/v1/customers", tok, headers={"Idempotency-Key": "k" * 256}), 400,
              "invalid_request_error", None, "Idempotency-Key")
    api_error(api("POST", "/v1/customers", tok, headers={"Stripe-Version": "latest"}), 400,
              "invalid_request_error", "api_version_invalid")


def test_api_concurrent_calls_act_once():
    tok = token_of()["access_token"]
    pi = authorized_pi(tok, 1000, "manual")
    out, errors = [], []

    def run(fn):
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    form = {"amount": "700", "currency": "usd"}
    calls = [lambda: api("POST", "/v1/payment_intents", tok, form=form, headers={"Idempotency-Key": "same"})] * 40
    calls += [lambda: api("POST", "/v1/payment_intents/%s/capture" % pi["id"], tok)] * 20
    threads = [threading.Thread(target=run, args=(fn,)) for fn in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(out) == 60, errors[:3]
    created = [(h.get("Idempotent-Replayed"), j["id"]) for s, h, j in out if j.get("amount") == 700]
    assert len(created) == 40 and len({i for _, i in created}) == 1
    assert [r for r, _ in created].count(None) == 1  # one executed, 39 replays
    captures = [s for s, h, j in out if j.get("id") == pi["id"] or "error" in j]
    assert sorted(captures) == [200] + [400] * 19, captures


def test_api_record():
    ja = token_of()
    tok = ja["access_token"]
    n0 = len(records())
    s, h, c = api("POST", "/v1/customers?expand[]=default_source", tok, form=[("name", "R"), ("metadata[k]", "v")],
                  headers={"Idempotency-Key": "rec-1", "Cookie": "sid=1", "X-Forwarded-For": "10.0.0.1",
                           "Stripe-Account": ja["stripe_user_id"]})
    assert s == 200, c
    recs = records(n0)
    assert len(recs) == 1
    r = recs[0]
    assert r["seq"] == n0 + 1 and r["method"] == "POST" and r["path"] == "/v1/customers"
    assert r["query"] == "expand[]=default_source" and r["body"] == "name=R&metadata%5Bk%5D=v"
    assert r["params"] == {"name": "R", "metadata": {"k": "v"}, "expand": ["default_source"]}
    hdrs = {k.lower(): v for k, v in r["headers"]}
    assert hdrs["authorization"] == "Bearer " + tok and hdrs["cookie"] == "sid=1"
    assert hdrs["x-forwarded-for"] == "10.0.0.1" and hdrs["idempotency-key"] == "rec-1"
    assert hdrs["content-type"] == "application/x-www-form-urlencoded"
    assert [k for k, _ in r["headers"]][:1] == ["Host"]  # as received, in order
    assert r["account"] == ja["stripe_user_id"] and r["mode"] == "test" and r["status"] == 200
    assert r["request_id"] == h["Request-Id"] and r["replayed"] is False and r["fault"] is None
    api("POST", "/v1/customers?expand[]=default_source", tok, form=[("name", "R"), ("metadata[k]", "v")],
        headers={"Idempotency-Key": "rec-1"})
    api("GET", "/v1/customers/cus_nope", "sk_test_bogus00000000")
    r2, r3 = records(n0 + 1)
    assert r2["replayed"] is True and r2["status"] == 200
    assert r3["status"] == 401 and r3["account"] is None and r3["params"] is None
    st = ctl("stats", method="GET")["calls"]
    assert st["api"] == 3 and st["customers"] == 3
    ctl("reset")
    assert records() == []


def test_api_fault_status_and_rate_limit():
    tok = token_of()["access_token"]
    ctl("faults", {"endpoint": "payment_intents", "kind": "status", "status": 500, "count": 1})
    key = {"Idempotency-Key": "f-1"}
    form = {"amount": "100", "currency": "usd"}
    s, h, j = api("POST", "/v1/payment_intents", tok, form=form, headers=key)
    assert s == 500 and j["error"]["type"] == "api_error" and h["Stripe-Should-Retry"] == "true"
    s, h, pi = api("POST", "/v1/payment_intents", tok, form=form, headers=key)
    assert s == 200 and "Idempotent-Replayed" not in h  # the faulted call did nothing
    ctl("faults", {"endpoint": "api", "kind": "status", "status": 429, "retry_after": 7, "match": "/capture"})
    s, h, j = api("POST", "/v1/customers", tok)
    assert s == 200
    s, h, j = api("POST", "/v1/payment_intents/%s/capture" % pi["id"], tok)
    assert s == 429 and h["Retry-After"] == "7" and j["error"]["type"] == "rate_limit_error"
    assert j["error"]["code"] == "rate_limit" and "Stripe-Should-Retry" not in h
    ctl("faults", method="DELETE")
    ctl("faults", {"endpoint": "refunds", "kind": "status", "status": 402, "body": {"error": {"type": "card_error",
                   "message": "custom"}}, "headers": {"Stripe-Should-Retry": "false", "X-Extra": 1}})
    s, h, j = api("POST", "/v1/refunds", tok, form={"charge": "ch_x"})
    assert s == 402 and j == {"error": {"type": "card_error", "message": "custom"}}
    assert h["Stripe-Should-Retry"] == "false" and h["X-Extra"] == "1"
    assert api("GET", "/v1/payment_intents/" + pi["id"], tok)[0] == 200  # other resources unaffected
    ctl("faults", {"endpoint": "any", "kind": "status", "status": 503})  # "any" is the OAuth endpoints
    assert api("GET", "/v1/payment_intents/" + pi["id"], tok)[0] == 200
    recs = records()
    assert recs[0]["fault"] == "status" and recs[0]["status"] == 500 and recs[0]["account"] is None
    for bad in ({"kind": "status", "when": "before_body"}, {"kind": "huge", "when": "after_processing"},
                {"kind": "explode"}, {"kind": "close", "when": "later"}):
        s, j = jcall("POST", "/_sim/faults", body=dict(bad, endpoint="api"))
        assert s == 400, bad


def raw_exchange(method, path, body, headers, timeout=5, send_body=True):
    """Sends a request on a raw socket (without its body unless send_body); returns what came back
    (b"" when closed without an answer)."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    try:
        head = "%s %s HTTP/1.1\r\nHost: sim\r\nContent-Length: %d\r\n" % (method, path, len(body))
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        s.sendall(head.encode() + (body if send_body else b""))
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out
    finally:
        s.close()


def test_api_fault_close_stages():
    tok = token_of()["access_token"]
    form = {"amount": "100", "currency": "usd"}
    hdr = {"Authorization": "Bearer " + tok, "Content-Type": "application/x-www-form-urlencoded"}
    body = urllib.parse.urlencode(form).encode()
    outcomes = {}
    for when in ("before_body", "after_body", "after_processing"):
        key = "close-" + when
        n0 = len(records())
        ctl("faults", {"endpoint": "payment_intents", "kind": "close", "when": when, "count": 1})
        # before_body closes without waiting for the body, which is never sent here
        assert raw_exchange("POST", "/v1/payment_intents", body, dict(hdr, **{"Idempotency-Key": key}),
                            send_body=when != "before_body") == b""
        r = records(n0)[0]
        assert r["fault"] == "close" and r["status"] is None
        assert r["body"] == (None if when == "before_body" else body.decode())
        s, h, pi = api("POST", "/v1/payment_intents", tok, form=form, headers={"Idempotency-Key": key})
        assert s == 200
        outcomes[when] = h.get("Idempotent-Replayed")
    # Only a call dropped after processing acted: its retry is a replay.
    assert outcomes == {"before_body": None, "after_body": None, "after_processing": "true"}, outcomes


def test_api_fault_hang_and_delay():
    tok = token_of()["access_token"]
    ctl("faults", {"endpoint": "customers", "kind": "hang", "when": "after_processing", "count": 1})
    done = []

    def caller():
        try:
            done.append(api("POST", "/v1/customers", tok, form={"name": "H"}, headers={"Idempotency-Key": "h1"},
                            timeout=20))
        except Exception as e:  # noqa: BLE001
            done.append(e)
    t = threading.Thread(target=caller)
    t.start()
    deadline = time.monotonic() + 5
    while not (records() and records()[-1]["fault"] == "hang"):  # the call is held; wait for it
        assert time.monotonic() < deadline, "the hung call never arrived"
        time.sleep(0.02)
    assert not done and records()[-1]["account"] is not None
    ctl("faults", method="DELETE")  # releases it: the connection closes without an answer
    t.join(10)
    assert done and isinstance(done[0], (http.client.RemoteDisconnected, ConnectionError)), done
    s, h, c = api("POST", "/v1/customers", tok, form={"name": "H"}, headers={"Idempotency-Key": "h1"})
    assert s == 200 and h["Idempotent-Replayed"] == "true"
    ctl("faults", {"endpoint": "api", "kind": "delay", "delay_ms": 300, "count": 1})
    t0 = time.monotonic()
    assert api("GET", "/v1/customers/" + c["id"], tok)[0] == 200 and time.monotonic() - t0 >= 0.3
    ctl("faults", {"endpoint": "api", "kind": "hang", "when": "before_body"})
    t0 = time.monotonic()
    try:
        api("GET", "/v1/customers/" + c["id"], tok, timeout=0.5)
        raise AssertionError("a hung call answered")
    except (socket.timeout, TimeoutError):
        pass
    assert time.monotonic() - t0 < 2


def test_api_fault_huge_truncated_malformed():
    tok = token_of()["access_token"]
    for chunked in (False, True):
        ctl("faults", {"endpoint": "charges", "kind": "huge", "chunked": chunked, "count": 1})
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        c.request("GET", "/v1/charges/ch_x", headers=bearer(tok))
        r = c.getresponse()
        data = r.read()
        c.close()
        assert r.status == 200 and len(data) > (1 << 20) and json.loads(data)["object"] == "payment_intent"
        assert (r.getheader("Transfer-Encoding") == "chunked") == chunked
        assert (r.getheader("Content-Length") is None) == chunked
    ctl("faults", {"endpoint": "charges", "kind": "huge", "size": 2048, "count": 1})
    s, _, text = call("GET", "/v1/charges/ch_x", headers=bearer(tok))
    assert s == 200 and len(text) == 2048
    ctl("faults", {"endpoint": "charges", "kind": "truncated", "count": 1})
    try:
        call("GET", "/v1/charges/ch_x", headers=bearer(tok))
        raise AssertionError("a truncated answer read whole")
    except http.client.IncompleteRead:
        pass
    ctl("faults", {"endpoint": "charges", "kind": "malformed", "count": 1})
    s, h, text = call("GET", "/v1/charges/ch_x", headers=bearer(tok))
    assert s == 200 and text == "{not json" and h["Request-Id"].startswith("req_")
    assert [r["fault"] for r in records()] == ["huge", "huge", "huge", "truncated", "malformed"]


# -- runner ------------------------------------------------------------------------------------
def start_sim(tmp):
    global PORT
    ready = os.path.join(tmp, "sim.port")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "stripe_sim.py"), "--port", "0", "--test-client-id", TEST_CA,
         "--test-secret-key", TEST_KEY, "--live-client-id", LIVE_CA, "--live-secret-key", LIVE_KEY,
         "--authorize", "consent", "--ready-file", ready],
        stdout=subprocess.PIPE, text=True)
    line = []
    t = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(15)  # the simulator writes the ready file, then prints its line
    if not line or not line[0].startswith("stripe-sim listening on http://127.0.0.1:"):
        proc.kill()
        raise SystemExit("sim: the simulator did not start")
    with open(ready) as f:
        PORT = int(f.read())
    assert line[0].strip().endswith(":%d" % PORT)
    return proc


def main():
    tmp = tempfile.mkdtemp(prefix="stripe-sim-test.")
    proc = start_sim(tmp)
    passed = failed = 0
    try:
        tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
        for name, fn in tests:
            ctl("reset")
            try:
                fn()
                passed += 1
                print("ok   %s" % name)
            except Exception:  # noqa: BLE001
                failed += 1
                print("FAIL %s\n%s" % (name, traceback.format_exc()))
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    print("sim: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
