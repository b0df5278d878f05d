#!/usr/bin/env python3
"""Self-test of the Stripe simulator (tests/fakes/stripe_sim.py), standard library only.

Starts the simulator on a free port, waits for its ready line and ready file (no sleeps), and
checks the OAuth rules the broker depends on, the control interface and every fault kind.
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
    assert s == 401 and e == {"error": "invalid_client", "error_description": (
        "This application is not connected to stripe account %s, or that account does not exist." % acct)}


def test_deauthorize_refusals_are_stripes():
    """STRIPE.md: every refusal is invalid_client (401) but a missing field; only the
    "not connected" description means the account is gone, and nothing else revokes."""
    _, j = new_connection()
    acct = j["stripe_user_id"]
    for headers, form in ((bearer("sk_test_wrong"), {"client_id": TEST_CA, "stripe_user_id": acct}),
                          ({}, {"client_id": TEST_CA, "stripe_user_id": acct}),
                          (bearer(TEST_KEY), {"client_id": "ca_unknown", "stripe_user_id": acct}),
                          (bearer(TEST_KEY), {"client_id": LIVE_CA, "stripe_user_id": acct})):
        s, e = jcall("POST", "/oauth/deauthorize", form=form, headers=headers)
        assert s == 401 and e["error"] == "invalid_client", (headers, form, s, e)
        assert "not connected" not in e["error_description"], e
    for form in ({"client_id": TEST_CA}, {"stripe_user_id": acct}):
        s, e = jcall("POST", "/oauth/deauthorize", form=form, headers=bearer(TEST_KEY))
        assert s == 400 and e["error"] == "invalid_request", (form, s, e)
    assert active(j["access_token"]) and rt_active(j["refresh_token"]), "a refused deauthorize revoked"
    s, e = jcall("POST", "/oauth/deauthorize", form={"client_id": TEST_CA, "stripe_user_id": "acct_never"},
                 headers=bearer(TEST_KEY))
    assert s == 401 and e["error"] == "invalid_client" and \
        "not connected to stripe account acct_never" in e["error_description"], e


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
    s, e = jcall("GET", "/v1/charges")
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
        assert ev["created"] == 1700000000  # by default the signature's timestamp
        r = ctl("webhook", {"url": url, "secret": "whsec_a", "type": "charge.captured", "account": "acct_1",
                            "id": "evt_fixed"})
        assert r["event_id"] == "evt_fixed" and json.loads(Receiver.got[-1][1])["id"] == "evt_fixed"
        r = ctl("webhook", {"url": url, "secret": "whsec_a", "type": "charge.captured", "account": "acct_1",
                            "timestamp": 1700003600, "created": 1700000000})   # a redelivery
        sig, body = Receiver.got[-1]
        assert sig.startswith("t=1700003600,") and json.loads(body)["created"] == 1700000000
    finally:
        srv.shutdown()
        srv.server_close()


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
