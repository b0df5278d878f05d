"""A black-box audit against the contract: statements of CONTRACT §2–§4 that the other
modules leave unchecked, one statement per test.

  * §2: every secret is also read from NAME_FILE (the webhook signing secrets and the
    events secret too), both set is an error for each of them, the Stripe keys of a
    mode have that mode's form (sk_test_… / sk_live_…, ca_…), the Redis URL forms
    (password, database, unix socket), BROKER_REDIS_PREFIX on every key, and the
    return_url and proxy allow lists an operator sets;
  * §3: an org id percent-encoded or case-folded names the same org on the routes of
    §4.3 (the proxy) and §4.4 (audit trail);
  * §4: a 401 page carries WWW-Authenticate; §4.2 webhook-events/verify; §4.3 the
    broker's own 429 on the proxy in Stripe's error shape;
  * §4.4: `since` is any RFC 3339 time (fractions of a second, numeric offsets), and the
    default page is 100 events or orgs, with `next` null on the last page;
  * §4.3: a malformed path under the proxy (nothing after the mode, an encoded slash) is
    400 in Stripe's shape without a Stripe call."""

import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import harness as h

sys.path.insert(0, os.path.join(h.REPO, "tests", "fakes"))
import broker_signature  # noqa: E402

S = None
TMP = None
WH_LIVE = "whsec_" + h.rand_str(32)
EV_SECRET = "evsec_" + h.rand_str(32)


def setup_module():
    global S, TMP
    TMP = tempfile.mkdtemp(prefix="stb-it-contract-")
    S = h.Stack("contract", BROKER_THREADS="1")


def teardown_module():
    S.close()
    shutil.rmtree(TMP, ignore_errors=True)


def setup_function():
    S.reset()


def write_file(content):
    fd, path = tempfile.mkstemp(dir=TMP)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return path


def start_expecting_failure(overrides, timeout=10):
    return S.start_expecting_failure(overrides, timeout)


def assert_rejected(var, overrides, secret_values=()):
    """CONTRACT §2: exit non-zero before listening, one stderr line naming var, no secret."""
    S.assert_rejected(var, overrides, secret_values)


def sign_stripe(body, secret, t=None):
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def audit(org, query="", token=None):
    r = S.broker.request("GET", f"/v1/orgs/{org}/audit-events{query}", token=token or S.broker.admin_token)
    h.assert_status(r, 200)
    return r.json()


def wait_clock_past_ms(ms):
    """Wait until the wall clock (Redis's too: same host) is past ms."""
    h.wait_until(lambda: time.time() * 1000 > ms, 2, interval=0.002, what=f"the clock past {ms} ms")


def event_ms(e):
    """An audit event's time in ms, from its id (the Redis stream id "<ms>-<seq>")."""
    return int(e["id"].split("-")[0])


# ===== §2: NAME_FILE for every secret; both set is an error =====

SECRET_VARS = [
    "BROKER_ADMIN_TOKEN", "BROKER_ENCRYPTION_KEYS", "STRIPE_SECRET_KEY_TEST", "STRIPE_SECRET_KEY_LIVE",
    "STRIPE_WEBHOOK_SECRET_TEST", "STRIPE_WEBHOOK_SECRET_LIVE", "BROKER_EVENTS_SECRET",
]


def test_every_secret_variable_and_its_file_both_set_is_rejected_naming_it():
    for var in SECRET_VARS:
        value = {"BROKER_ENCRYPTION_KEYS": "k1:" + h.new_encryption_key(),
                 "STRIPE_SECRET_KEY_TEST": h.TEST_SECRET_KEY,
                 "STRIPE_SECRET_KEY_LIVE": h.LIVE_SECRET_KEY}.get(var, "x" + h.rand_str(40))
        ov = {var: value, var + "_FILE": write_file(value + "\n")}
        if var == "BROKER_EVENTS_SECRET":
            ov["BROKER_EVENTS_URL"] = "http://127.0.0.1:9/in"
        assert_rejected(var, ov, [value])


def test_webhook_signing_secret_is_read_from_its_file_without_the_newline():
    b = S.new_broker("whfile", STRIPE_WEBHOOK_SECRET_LIVE_FILE=write_file(WH_LIVE + "\n"))
    try:
        body = json.dumps({"id": "evt_" + h.rand_str(16), "object": "event", "type": "charge.captured",
                           "created": int(time.time()), "livemode": True, "data": {"object": {}}}).encode()
        r = b.request("POST", "/webhooks/stripe", body=body,
                      headers={"Stripe-Signature": sign_stripe(body, WH_LIVE), "Content-Type": "application/json"})
        assert r.status == 200, f"an event signed with the file's secret is refused: {r.describe()}"
        r = b.request("POST", "/webhooks/stripe", body=body,
                      headers={"Stripe-Signature": sign_stripe(body, WH_LIVE + "\n"),
                               "Content-Type": "application/json"})
        h.assert_error(r, 400, "invalid_request")
    finally:
        b.stop()


class Receiver:
    """An events receiver on loopback that records (body, Broker-Signature) and answers 200."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with rec.lock:
                    rec.got.append((body, self.headers.get("Broker-Signature")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/in"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_events_secret_is_read_from_its_file_without_the_newline():
    rec = Receiver()
    b = None
    try:
        b = S.new_broker("evfile", BROKER_EVENTS_URL=rec.url, BROKER_EVENTS_SECRET_FILE=write_file(EV_SECRET + "\n"))
        org = h.new_org()
        h.Flow(b, S.sim, org, "test").run()
        h.wait_until(lambda: rec.got, 20, what="an event delivered")
        body, sig = rec.got[0]
        assert json.loads(body)["org_id"] == org, body
        ok, why = broker_signature.verify(sig, body, EV_SECRET)
        assert ok, f"the event is not signed with the file's secret: {why} ({sig})"
    finally:
        if b is not None:
            b.stop()
        rec.close()


# ===== §2: a Stripe key of the wrong form is a malformed value =====

def test_a_live_secret_key_as_the_test_key_is_rejected_naming_it():
    key = "sk_live_" + h.rand_str(24)
    assert_rejected("STRIPE_SECRET_KEY_TEST", {"STRIPE_SECRET_KEY_TEST": key}, [key])


def test_a_test_secret_key_as_the_live_key_is_rejected_naming_it():
    key = "sk_test_" + h.rand_str(24)
    assert_rejected("STRIPE_SECRET_KEY_LIVE", {"STRIPE_SECRET_KEY_LIVE": key}, [key])


def test_a_client_id_that_is_not_a_ca_id_is_rejected_naming_it():
    assert_rejected("STRIPE_CLIENT_ID_TEST", {"STRIPE_CLIENT_ID_TEST": "pk_test_" + h.rand_str(16)})


def test_a_listen_address_that_is_no_address_is_rejected_by_serve_and_check():
    for bad in ("256.1.1.1:8080", "1.2.3:8080", "[::g]:8080"):
        rc, lines, _, _ = start_expecting_failure({"BROKER_LISTEN": bad})
        assert rc != 0 and len(lines) == 1 and "BROKER_LISTEN" in lines[0], (bad, rc, lines)
        env = h._base_env()
        env.update(S.env_for(BROKER_LISTEN=bad))
        p = subprocess.run([h.broker_bin(), "check"], env=env, capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and "BROKER_LISTEN" in p.stderr, (bad, p.returncode, p.stderr)


# ===== §3 on the routes of §4.3 and §4.4 =====

def test_percent_encoded_case_folded_org_id_is_the_same_org_on_proxy_and_audit_routes():
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "test").run()
    key = S.broker.create_api_key(org)["api_key"]
    enc = "".join("%%%02X" % ord(c) for c in org.lower())
    r = h.http_request("GET", S.broker.url(f"/v1/orgs/{enc}/stripe/test/v1/customers?limit=1"),
                       headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200, f"the proxy refuses the org's key on its encoded id: {r.describe()}"
    mine = audit(org, token=key)
    theirs = audit(enc, token=key)
    assert theirs == mine and mine["events"], f"{theirs} != {mine}"


# ===== §4.4: since is an RFC 3339 time =====

def iso(dt):
    return urllib.parse.quote(dt.isoformat(), safe="")


def test_since_accepts_an_rfc3339_time_with_fraction_and_numeric_utc_offset():
    org = h.new_org()
    S.broker.create_api_key(org)
    now = datetime.now(timezone.utc)
    past = now - timedelta(minutes=5)            # isoformat: 2026-…T…:…:….123456+00:00
    assert "+00:00" in past.isoformat() and "." in past.isoformat()
    r = S.broker.admin("GET", f"/v1/orgs/{org}/audit-events?since={iso(past)}")
    assert r.status == 200, f"since={past.isoformat()} (RFC 3339) refused: {r.describe()}"
    assert [e["type"] for e in r.json()["events"]] == ["api_key.created"], r.describe()
    future = now + timedelta(minutes=5)
    r = S.broker.admin("GET", f"/v1/orgs/{org}/audit-events?since={iso(future)}")
    h.assert_status(r, 200)
    assert r.json() == {"events": [], "next": None}, r.describe()


def test_since_with_a_non_utc_offset_is_that_instant():
    org = h.new_org()
    S.broker.create_api_key(org)
    # five minutes ago, written in UTC+02:00 (its wall clock reads almost two hours ahead)
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).astimezone(timezone(timedelta(hours=2)))
    r = S.broker.admin("GET", f"/v1/orgs/{org}/audit-events?since={iso(past.replace(microsecond=0))}")
    assert r.status == 200, f"since={past.isoformat()} refused: {r.describe()}"
    assert len(r.json()["events"]) == 1, f"the offset was not applied: {r.describe()}"
    ahead = (datetime.now(timezone.utc) + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=-3)))
    r = S.broker.admin("GET", f"/v1/orgs/{org}/audit-events?since={iso(ahead.replace(microsecond=0))}")
    h.assert_status(r, 200)
    assert r.json()["events"] == [], f"the offset was not applied: {r.describe()}"


def test_since_with_a_fraction_keeps_events_at_or_after_that_instant_only():
    org = h.new_org()
    S.broker.create_api_key(org)
    first = audit(org)["events"][0]
    wait_clock_past_ms(event_ms(first) + 2)
    mid = datetime.now(timezone.utc)
    wait_clock_past_ms(mid.timestamp() * 1000 + 2)
    S.broker.create_api_key(org)
    second = audit(org)["events"][0]
    assert event_ms(first) < mid.timestamp() * 1000 < event_ms(second), (first, mid, second)
    got = audit(org, f"?since={iso(mid)}")["events"]
    assert [e["id"] for e in got] == [second["id"]], \
        f"since={mid.isoformat()} should keep only the event after it: {got}"


def test_since_that_is_not_a_time_is_400():
    org = h.new_org()
    for bad in ("yesterday", "2026-11-26", "2026-11-26T22:34:47", "2026-13-01T00:00:00Z",
                "2026-11-26T22:34:47+0000", "2026-11-26T22:34:47.Z", "2026-11-26T22:34:47+24:00",
                "2026-11-26T22:34:47Z%20"):
        r = S.broker.admin("GET", f"/v1/orgs/{org}/audit-events?since={bad}")
        h.assert_error(r, 400, "invalid_request")


# ===== §4.4: paging defaults =====

def test_audit_default_page_is_100_events_and_next_is_null_on_the_last_page():
    org = h.new_org()
    for _ in range(101):
        S.broker.create_api_key(org)
    page = audit(org)
    assert len(page["events"]) == 100, f"default page of {len(page['events'])} events"
    assert isinstance(page["next"], str) and page["next"], page["next"]
    rest = audit(org, "?cursor=" + urllib.parse.quote(page["next"], safe=""))
    assert len(rest["events"]) == 1 and rest["next"] is None, rest
    assert rest["events"][0]["id"] not in {e["id"] for e in page["events"]}
    exact = audit(org, "?limit=101")
    assert len(exact["events"]) == 101 and exact["next"] is None, \
        f"a page holding the last event must have next null: {exact['next']!r}"


def test_fleet_default_page_is_100_orgs_and_next_is_null_on_the_last_page():
    orgs = {S.broker.create_api_key(h.new_org())["org_id"] for _ in range(101)}
    r = S.broker.admin("GET", "/v1/admin/orgs")
    h.assert_status(r, 200)
    page = r.json()
    assert len(page["orgs"]) == 100, f"default page of {len(page['orgs'])} orgs"
    assert isinstance(page["next"], str) and page["next"], page["next"]
    r = S.broker.admin("GET", "/v1/admin/orgs?cursor=" + urllib.parse.quote(page["next"], safe=""))
    h.assert_status(r, 200)
    rest = r.json()
    assert len(rest["orgs"]) == 1 and rest["next"] is None, rest
    assert {o["org_id"] for o in page["orgs"] + rest["orgs"]} == orgs


# ===== §4.2 (should): POST /v1/orgs/{org_id}/webhook-events/verify =====

def verify(org, mode, payload, signature, token=None):
    return S.broker.request("POST", f"/v1/orgs/{org}/webhook-events/verify?mode={mode}",
                            token=token or S.broker.admin_token,
                            json_body={"payload": payload, "signature": signature})


def org_with_signing_secret(mode="test"):
    org = h.new_org()
    secret = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", secret)
    r = S.broker.admin("PUT", f"/v1/orgs/{org}/webhook-secrets/{mode}", json_body={"signing_secret": secret})
    h.assert_status(r, 204)
    return org, secret


def stripe_event(type_="charge.captured"):
    return json.dumps({"id": "evt_" + h.rand_str(24), "object": "event", "type": type_,
                       "created": int(time.time()), "data": {"object": {}}})


def test_verify_names_the_event_of_a_payload_signed_with_the_orgs_secret():
    org, secret = org_with_signing_secret()
    key = S.broker.create_api_key(org)["api_key"]
    payload = stripe_event()
    r = verify(org, "test", payload, sign_stripe(payload.encode(), secret), token=key)
    h.assert_status(r, 200)
    assert r.json() == {"valid": True, "event_id": json.loads(payload)["id"], "event_type": "charge.captured"}, \
        r.describe()


def test_verify_accepts_any_of_several_v1_signatures():
    org, secret = org_with_signing_secret()
    payload = stripe_event()
    t = int(time.time())
    good = sign_stripe(payload.encode(), secret, t).split(",")[1]
    r = verify(org, "test", payload, f"t={t},v1={'0' * 64},{good}")
    h.assert_status(r, 200)
    assert r.json()["valid"] is True, r.describe()


def test_verify_refuses_a_wrong_secret_another_mode_and_a_stale_timestamp():
    org, secret = org_with_signing_secret("test")
    other = "whsec_" + h.rand_str(32)
    payload = stripe_event()
    cases = [
        ("signed with another secret", "test", sign_stripe(payload.encode(), other)),
        ("no secret stored for live", "live", sign_stripe(payload.encode(), secret)),
        ("301 s old", "test", sign_stripe(payload.encode(), secret, int(time.time()) - 301)),
        ("payload changed", "test", sign_stripe(payload.encode() + b" ", secret)),
    ]
    for label, mode, sig in cases:
        r = verify(org, mode, payload, sig)
        h.assert_status(r, 200)
        j = r.json()
        assert j.get("valid") is False and isinstance(j.get("reason"), str) and j["reason"], f"{label}: {r.describe()}"
        assert "event_id" not in j, f"{label}: {r.describe()}"


def test_verify_of_a_signed_payload_that_is_no_stripe_event_is_not_valid():
    org, secret = org_with_signing_secret()
    for payload in ("not json", "[]", json.dumps({"object": "event"})):
        r = verify(org, "test", payload, sign_stripe(payload.encode(), secret))
        h.assert_status(r, 200)
        j = r.json()
        assert j.get("valid") is False and j.get("reason"), \
            f"a payload without an event id and type reported as a valid event: {r.describe()}"


def test_verify_without_payload_or_signature_is_400():
    org, _ = org_with_signing_secret()
    for body in ({"payload": "{}"}, {"signature": "t=1,v1=00"}, {"payload": 1, "signature": "x"}):
        r = S.broker.admin("POST", f"/v1/orgs/{org}/webhook-events/verify?mode=test", json_body=body)
        h.assert_error(r, 400, "invalid_request")
    r = S.broker.admin("POST", f"/v1/orgs/{org}/webhook-events/verify",
                       json_body={"payload": "{}", "signature": "t=1,v1=00"})
    h.assert_error(r, 400, "invalid_request")


# ===== §2: BROKER_REDIS_URL forms and BROKER_REDIS_PREFIX =====

class UnixRedis:
    """A redis-server listening only on a unix socket, in its own temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="stb-it-uredis-", dir=TMP)
        self.sock = os.path.join(self.dir, "redis.sock")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--logfile", os.path.join(h.log_dir(), "contract.unix.redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        h.wait_until(lambda: self.cli(0, "PING") == "PONG", 10, what="redis on its unix socket")

    def cli(self, db, *args):
        """redis-cli against database db; its output, stripped."""
        p = subprocess.run(["redis-cli", "-s", self.sock, "-n", str(db), *args], capture_output=True,
                           timeout=5, text=True)
        return p.stdout.strip()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def redis_keys(client, db):
    client.command("SELECT", db)
    try:
        return client.keys()
    finally:
        client.command("SELECT", 0)


def test_redis_url_with_password_and_database_is_used():
    pw = "pw" + h.rand_str(24)
    c = S.rc()
    b = None
    try:
        c.command("CONFIG", "SET", "requirepass", pw)
        c.command("AUTH", pw)
        b = S.new_broker("redispw", BROKER_REDIS_URL=f"redis://:{pw}@127.0.0.1:{S.redis.port}/3", ready=True)
        org = b.create_api_key(h.new_org())["org_id"]
        keys = redis_keys(c, 3)
        assert any(org.encode() in k for k in keys), f"nothing of {org} in database 3: {keys}"
        assert not redis_keys(c, 0), "the broker wrote to database 0"
        assert pw not in b.log_tail(100000), "the Redis password is in the log"
    finally:
        if b is not None:
            b.stop()
        c.command("CONFIG", "SET", "requirepass", "")
        c.close()


def test_redis_unix_socket_url_with_db_is_used():
    u = UnixRedis()
    b = None
    try:
        b = S.new_broker("redisunix", BROKER_REDIS_URL=f"unix://{u.sock}?db=2", ready=True)
        org = b.create_api_key(h.new_org())["org_id"]
        assert org in u.cli(2, "--scan"), f"nothing of {org} in database 2: {u.cli(2, '--scan')!r}"
        assert u.cli(0, "--scan") == "", "the broker wrote to database 0"
        r = b.request("GET", f"/v1/admin/orgs/{org}/api-keys", token=b.admin_token)
        h.assert_status(r, 200)
        assert len(r.json()["api_keys"]) == 1, r.describe()
    finally:
        if b is not None:
            b.stop()
        u.close()


def test_every_key_the_broker_writes_starts_with_the_redis_prefix():
    prefix = "acme-" + h.rand_str(6).lower() + ":"
    b = S.new_broker("prefix", BROKER_REDIS_PREFIX=prefix)
    try:
        org = h.new_org()
        h.Flow(b, S.sim, org, "live").run()
        key = b.create_api_key(org)["api_key"]
        h.assert_status(b.access_token(org, "test", token=key), 200)        # mint from live
        h.assert_status(b.request("GET", f"/v1/orgs/{org}/stripe/test/v1/customers", token=key), 200)
        h.assert_status(b.admin("PUT", f"/v1/orgs/{org}/webhook-secrets/test",
                                json_body={"signing_secret": "whsec_" + h.rand_str(32)}), 204)
        h.assert_status(b.admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
        keys = S.rc().keys()
        assert keys, "the broker wrote nothing"
        stray = [k for k in keys if not k.startswith(prefix.encode())]
        assert not stray, f"keys without the prefix {prefix!r}: {stray}"
    finally:
        b.stop()


# ===== §2: BROKER_RETURN_URL_ALLOW and BROKER_PROXY_ALLOW set by the operator =====

def test_return_url_allow_list_set_by_the_operator_replaces_the_default():
    b = S.new_broker("retallow", BROKER_RETURN_URL_ALLOW="https://*.example.com,https://portal.acme.io:8443")
    try:
        org = h.new_org()
        for url, ok in (("https://a.example.com/x", True),
                        ("https://a.b.example.com/x", True),         # * is one DNS label or more
                        ("https://A.Example.COM/x", True),
                        ("https://portal.acme.io:8443/done", True),
                        ("https://example.com/x", False),            # * is at least one label
                        ("https://portal.acme.io/done", False),      # another origin (port)
                        ("https://acme.my.salesforce.com/x", False),  # the default no longer applies
                        ("http://a.example.com/x", False),
                        ("https://a.example.com.evil.test/x", False),
                        ("https://a.example.com@evil.test/x", False)):
            r = b.authorize_link(org, "test", url)
            if ok:
                assert r.status == 201, f"{url} refused: {r.describe()}"
            else:
                h.assert_error(r, 400, "invalid_request")
    finally:
        b.stop()


def test_proxy_allow_list_set_by_the_operator_replaces_the_default():
    b = S.new_broker("proxyallow", BROKER_PROXY_ALLOW="customers,refunds")
    try:
        org = h.new_org()
        h.Flow(b, S.sim, org, "test").run()
        key = b.create_api_key(org)["api_key"]
        before = len(S.sim.requests())
        for res, status in (("customers", 200), ("refunds", 200), ("payment_intents", 403), ("charges", 403)):
            r = h.http_request("GET", b.url(f"/v1/orgs/{org}/stripe/test/v1/{res}?limit=1"),
                               headers={"Authorization": f"Bearer {key}"})
            assert r.status == status, f"{res}: {r.describe()}"
            if status == 403:
                assert r.json()["error"]["code"] == "forbidden", r.describe()
        got = [q["path"] for q in S.sim.requests()[before:]]
        assert sorted(got) == ["/v1/customers", "/v1/refunds"], f"Stripe saw {got}"
    finally:
        b.stop()


# ===== §4.3: the broker's own 429 on the proxy route is in Stripe's shape =====

def test_proxy_rate_limited_is_429_in_stripes_shape_with_retry_after():
    b = S.new_broker("proxyrl", BROKER_RATE_LIMIT_ORG_PER_S="1")
    try:
        org = h.new_org()
        h.Flow(b, S.sim, org, "test").run()
        key = b.create_api_key(org)["api_key"]
        limited = None
        for _ in range(50):
            r = h.http_request("GET", b.url(f"/v1/orgs/{org}/stripe/test/v1/customers?limit=1"),
                               headers={"Authorization": f"Bearer {key}"})
            if r.status == 429:
                limited = r
                break
            assert r.status == 200, r.describe()
        assert limited is not None, "50 calls at once with a limit of 1 a second were never limited"
        e = limited.json().get("error") or {}
        assert e.get("code") == "rate_limited" and e.get("type") in ("invalid_request_error", "api_error") \
            and e.get("message"), f"not Stripe's error shape with the contract's code: {limited.describe()}"
        assert (limited.header("Retry-After") or "").isdigit(), f"429 without Retry-After: {limited.describe()}"
        h.assert_json_headers(limited)
    finally:
        b.stop()


# ===== §4 table on the pages: a 401 carries its WWW-Authenticate =====

def test_setup_page_without_a_session_is_401_with_www_authenticate():
    for r in (h.Browser().get(S.broker.url("/setup")),
              h.Browser().post_form(S.broker.url("/setup/webhook-secret"),
                                    {"csrf": "x", "signing_secret": "whsec_" + h.rand_str(32)})):
        assert r.status == 401, r.describe()
        assert (r.header("Content-Type") or "").startswith("text/html"), r.describe()
        www = r.header_all("WWW-Authenticate")
        assert len(www) == 1 and www[0].lower().startswith("bearer"), \
            f"a 401 without one WWW-Authenticate challenge (CONTRACT §4, RFC 9110 §15.5.2): {r.describe()} {www}"


# ===== §4.3: a malformed path under the proxy is refused in Stripe's shape =====

def test_proxy_path_with_an_encoded_slash_or_nothing_after_the_mode_is_400_in_stripes_shape():
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "test").run()
    key = S.broker.create_api_key(org)["api_key"]
    before = len(S.sim.requests())
    for path in (f"/v1/orgs/{org}/stripe/test%2Fv1%2Fcustomers", f"/v1/orgs/{org}/stripe/test",
                 f"/v1/orgs/{org}/stripe/test/", f"/v1/orgs/{org}/stripe/test/v1%2Fcustomers"):
        r = h.http_request("GET", S.broker.url(path), headers={"Authorization": f"Bearer {key}"})
        e = r.json().get("error") or {} if r.status == 400 else {}
        assert r.status == 400 and e.get("code") == "invalid_request" and e.get("type") == "invalid_request_error", \
            f"{path}: {r.describe()}"
        h.assert_json_headers(r)
    assert len(S.sim.requests()) == before, "a refused path reached Stripe"
