"""The Stripe proxy's mechanics (CONTRACT §4.3): what leaves for Stripe, what comes back,
what is refused without a Stripe call, failures, and the rule that the broker never sends
a request Stripe may have processed twice — the simulator closing a reused upstream
connection at each point of a call.

One worker thread, so that consecutive calls share the worker's upstream connection."""

import json
import os
import re
import time
import urllib.parse

import harness as h

S = None
PROXY_TIMEOUT_MS = 1500


def setup_module():
    global S
    S = h.Stack("proxy", BROKER_THREADS="1", BROKER_PROXY_TIMEOUT_MS=str(PROXY_TIMEOUT_MS))


def teardown_module():
    S.close()


def setup_function():
    S.reset()


# ===== Helpers =====

def connect(org, mode="test"):
    return h.Flow(S.broker, S.sim, org, mode).run()


def org_with_key(mode="test"):
    org = h.new_org()
    f = connect(org, mode)
    key = S.broker.create_api_key(org)["api_key"]
    return org, key, f.account


def proxy(org, key, method, path, form=None, headers=None, mode="test", raw_body=None, timeout=h.HTTP_TIMEOUT_S):
    """A call as a payment gateway adapter makes it through its Named Credential."""
    hdrs = {"Authorization": f"Bearer {key}"}
    hdrs.update(headers or {})
    body = raw_body
    if form is not None:
        body = urllib.parse.urlencode(form)
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    return h.http_request(method, S.broker.url(f"/v1/orgs/{org}/stripe/{mode}{path}"), headers=hdrs, body=body,
                          timeout=timeout)


def sim_requests(since=0):
    return S.sim.requests(since)


def last_seq():
    reqs = sim_requests()
    return reqs[-1]["seq"] if reqs else 0


def header_of(rec, name):
    vals = [v for k, v in rec["headers"] if k.lower() == name.lower()]
    return vals[0] if vals else None


def assert_stripe_error(r, status, code):
    """A broker error on the proxy route: the contract's and Stripe's shape at once."""
    j = h.assert_error(r, status, code)
    t = "api_error" if status >= 500 else "invalid_request_error"
    assert j["error"].get("type") == t, f"error type is not {t}: {r.describe()}"
    return j


def proxy_count(mode, resource, status):
    m = S.broker.request("GET", "/metrics").text
    found = re.search(r'^stb_proxy_requests_total\{mode="%s",resource="%s",status="%d"\} (\d+)$' % (mode, resource, status),
                      m, re.M)
    return int(found.group(1)) if found else 0


def create_customer(org, key, **kw):
    r = proxy(org, key, "POST", "/v1/customers", form={"email": "buyer@example.com"}, **kw)
    h.assert_status(r, 200)
    return r


# ===== What leaves for Stripe =====

def test_proxy_sends_the_orgs_token_and_only_allowed_headers():
    org, key, acct = org_with_key()
    token = S.broker.access_token(org, "test").json()["access_token"]
    r = create_customer(org, key, headers={
        "Cookie": "sid=abc123secret", "Stripe-Account": "acct_someoneelse", "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Host": "evil.example", "Stripe-Version": "2023-10-16", "Accept": "application/json",
        "X-Custom": "nope", "Forwarded": "for=1.2.3.4"})
    assert r.json()["object"] == "customer", r.describe()
    [rec] = sim_requests()
    assert rec["account"] == acct and rec["mode"] == "test", rec
    assert header_of(rec, "Authorization") == f"Bearer {token}", rec["headers"]
    names = {k.lower() for k, _ in rec["headers"]}
    for gone in ("cookie", "stripe-account", "x-forwarded-for", "x-forwarded-host", "x-custom", "forwarded"):
        assert gone not in names, f"{gone} reached Stripe: {rec['headers']}"
    assert header_of(rec, "Stripe-Version") == "2023-10-16", rec["headers"]
    assert header_of(rec, "Accept") == "application/json", rec["headers"]
    blob = json.dumps(rec)
    assert key not in blob and S.broker.admin_token not in blob, "the broker's key reached Stripe"
    assert "abc123secret" not in blob


def test_proxy_adds_an_idempotency_key_to_a_post_without_one_and_keeps_the_callers():
    org, key, _ = org_with_key()
    r1 = create_customer(org, key)
    r2 = create_customer(org, key, headers={"Idempotency-Key": "order-42-create"})
    g = proxy(org, key, "GET", "/v1/customers/" + r1.json()["id"])
    h.assert_status(g, 200)
    recs = sim_requests()
    assert len(recs) == 3, recs
    k1 = header_of(recs[0], "Idempotency-Key")
    assert k1 and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", k1), k1
    assert r1.header("Idempotency-Key") == k1, "the key used is not returned to the caller"
    assert header_of(recs[1], "Idempotency-Key") == "order-42-create"
    assert header_of(recs[2], "Idempotency-Key") is None, "a GET got an Idempotency-Key"


def test_proxy_forwards_query_and_body_unchanged():
    org, key, _ = org_with_key()
    body = "email=a%2Bb%40example.com&metadata[order]=A%2F1&description=caf%C3%A9"
    r = proxy(org, key, "POST", "/v1/customers", raw_body=body,
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    h.assert_status(r, 200)
    cus = r.json()
    g = proxy(org, key, "GET", f"/v1/customers/{cus['id']}?expand[]=default_source")
    h.assert_status(g, 200)
    recs = sim_requests()
    assert recs[0]["body"] == body, recs[0]
    assert recs[1]["path"] == f"/v1/customers/{cus['id']}", recs[1]
    assert "expand[]=default_source" in urllib.parse.unquote(recs[1]["query"] or ""), recs[1]
    assert g.json()["email"] == "a+b@example.com"


# ===== What comes back =====

def test_proxy_answers_with_stripes_status_body_and_headers():
    org, key, _ = org_with_key()
    r = create_customer(org, key, headers={"Stripe-Version": "2024-06-20"})
    [rec] = sim_requests()
    assert r.header("Request-Id") == rec["request_id"], r.describe()
    assert r.header("Stripe-Version") == "2024-06-20"
    assert "no-store" in (r.header("Cache-Control") or "")
    assert (r.header("Content-Type") or "").startswith("application/json")


def test_proxy_passes_stripes_4xx_and_5xx_bodies_byte_for_byte():
    org, key, _ = org_with_key()
    odd = '{"error": {"type": "api_error", "message": "Odd \\u00e9 spacing",  "x": [1, 2]}}\n'
    S.sim.fault(endpoint="customers", kind="status", status=500, body=odd, count=1)
    r = proxy(org, key, "POST", "/v1/customers", form={"email": "x@example.com"})
    assert r.status == 500 and r.body == odd.encode(), r.describe()
    assert r.header("Stripe-Should-Retry") == "true", r.describe()
    g = proxy(org, key, "GET", "/v1/customers/cus_doesnotexist")
    assert g.status == 404, g.describe()
    recs = sim_requests()
    assert g.header("Request-Id") == recs[-1]["request_id"]
    assert g.json()["error"]["type"] == "invalid_request_error", g.describe()


def test_proxy_passes_stripes_429_with_retry_after():
    org, key, _ = org_with_key()
    S.sim.fault(endpoint="customers", kind="status", status=429, retry_after=7, count=1)
    r = proxy(org, key, "POST", "/v1/customers", form={"email": "x@example.com"})
    assert r.status == 429, r.describe()
    assert r.header("Retry-After") == "7", r.describe()
    assert r.json()["error"]["code"] == "rate_limit", r.describe()


def test_proxy_answer_over_1_mib_is_502_and_the_worker_stays_healthy():
    org, key, _ = org_with_key()
    for chunked in (False, True):
        S.sim.fault(endpoint="customers", kind="huge", chunked=chunked, count=1)
        r = proxy(org, key, "GET", "/v1/customers/cus_x")
        assert_stripe_error(r, 502, "stripe_unavailable")
    assert S.broker.running()
    create_customer(org, key)
    h.assert_status(S.broker.request("GET", "/healthz"), 200)


def test_proxy_answer_just_under_1_mib_passes_with_a_length_or_chunked():
    org, key, _ = org_with_key()
    for chunked in (False, True):
        S.sim.fault(endpoint="customers", kind="huge", size=1024 * 1024 - 10, chunked=chunked, count=1)
        r = proxy(org, key, "GET", "/v1/customers/cus_x")
        h.assert_status(r, 200)
        assert len(r.body) == 1024 * 1024 - 10, (chunked, len(r.body))
        j = r.json()  # decoded whole: no chunk-size line left in it
        assert j["id"] == "pi_huge" and set(j["metadata"]["pad"]) == {"x"}, chunked
    create_customer(org, key)  # and the connection still carries the next call


def test_proxy_stripe_hang_is_502_within_the_timeout():
    org, key, _ = org_with_key()
    S.sim.fault(endpoint="customers", kind="hang", count=1)
    t0 = time.monotonic()
    r = proxy(org, key, "POST", "/v1/customers", form={"email": "x@example.com"})
    took = time.monotonic() - t0
    S.sim._call("DELETE", "/_sim/faults")
    assert_stripe_error(r, 502, "stripe_unavailable")
    assert PROXY_TIMEOUT_MS / 1000 - 0.2 <= took <= PROXY_TIMEOUT_MS / 1000 + 1.0, f"answered after {took:.2f}s"


def test_proxy_broken_answer_is_502():
    org, key, _ = org_with_key()
    S.sim.fault(endpoint="customers", kind="truncated", count=1)
    r = proxy(org, key, "GET", "/v1/customers/cus_x")
    assert_stripe_error(r, 502, "stripe_unavailable")


def test_proxy_redis_down_is_503_within_1s_without_a_stripe_call():
    org, key, _ = org_with_key()
    c = S.redis.client()
    try:
        c.command("CLIENT", "PAUSE", "3000", "ALL")
        t0 = time.monotonic()
        r = proxy(org, key, "POST", "/v1/customers", form={"email": "x@example.com"})
        took = time.monotonic() - t0
    finally:
        c.command("CLIENT", "UNPAUSE")
        c.close()
    assert_stripe_error(r, 503, "store_unavailable")
    assert r.header("Retry-After"), r.describe()
    assert took < 1.0, f"answered after {took:.2f}s"
    assert sim_requests() == []


# ===== Refused without a Stripe call =====

def test_proxy_refuses_bad_paths_without_a_stripe_call():
    org, key, _ = org_with_key()
    bad = ["/v1/customers/../accounts", "/v1/../v1/accounts", "/v1/customers%2F..%2Faccounts",
           "/v1/customers%2fcus_1", "/v1//customers", "/v1/customers/", "/v1/customers//cus_1",
           "/v1/customers/./cus_1", "/v1/customers/%2e%2e/accounts", "/v2/customers", "/v1/"]
    for path in bad:
        r = proxy(org, key, "GET", path)
        assert_stripe_error(r, 400, "invalid_request")
    for path in ["/v1/accounts", "/v1/transfers", "/v1/oauth/token", "/v1/Customers"]:
        r = proxy(org, key, "POST", path, form={"a": "b"})
        assert_stripe_error(r, 403, "forbidden")
    assert sim_requests() == [], "a refused call reached Stripe"


def test_proxy_refuses_an_unknown_mode_another_org_and_no_key():
    org, key, _ = org_with_key()
    other, other_key, _ = org_with_key()
    assert_stripe_error(proxy(org, key, "GET", "/v1/customers/cus_1", mode="prod"), 400, "invalid_request")
    assert_stripe_error(proxy(org, other_key, "GET", "/v1/customers/cus_1"), 403, "forbidden")
    r = h.http_request("GET", S.broker.url(f"/v1/orgs/{org}/stripe/test/v1/customers/cus_1"))
    assert_stripe_error(r, 401, "unauthorized")
    assert (r.header("WWW-Authenticate") or "").lower().startswith("bearer")
    assert_stripe_error(proxy("00Dnotanorg", key, "GET", "/v1/customers/cus_1"), 400, "invalid_request")
    r = proxy(org, key, "PUT", "/v1/customers/cus_1", raw_body="a=b")
    assert_stripe_error(r, 405, "method_not_allowed")
    assert set(x.strip() for x in r.header("Allow").split(",")) == {"GET", "POST", "DELETE"}
    assert sim_requests() == []


def test_proxy_mode_without_stripe_keys_is_400_mode_not_enabled():
    org, key, _ = org_with_key()
    b = S.new_broker("testonly", STRIPE_CLIENT_ID_LIVE=None, STRIPE_SECRET_KEY_LIVE=None)
    try:
        r = h.http_request("GET", b.url(f"/v1/orgs/{org}/stripe/live/v1/customers/cus_1"),
                           headers={"Authorization": f"Bearer {key}"})
        assert_stripe_error(r, 400, "mode_not_enabled")
    finally:
        b.stop()
        S.extra.remove(b)
    assert sim_requests() == []


def test_proxy_body_over_64_kib_is_413_without_a_stripe_call():
    org, key, _ = org_with_key()
    r = proxy(org, key, "POST", "/v1/customers", raw_body="description=" + "x" * (64 * 1024),
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_stripe_error(r, 413, "payload_too_large")
    assert sim_requests() == []


def test_proxy_without_a_connection_is_404_not_connected():
    org = h.new_org()
    key = S.broker.create_api_key(org)["api_key"]
    assert_stripe_error(proxy(org, key, "GET", "/v1/customers/cus_1", mode="live"), 404, "not_connected")
    assert sim_requests() == []


def test_proxy_leaves_nothing_in_redis_after_refusals():
    org, key, _ = org_with_key()
    before = sorted(S.redis.client().keys())
    proxy(org, key, "GET", "/v1/accounts")
    proxy(org, key, "GET", "/v1//customers")
    S.sim.fault(endpoint="customers", kind="status", status=500, count=1)
    proxy(org, key, "POST", "/v1/customers", form={"a": "b"})
    # Stripe answered the last one (500): the connection was used, and that is all
    used = ("stb:used:" + org).encode()
    after = sorted(k for k in S.redis.client().keys() if k != used)
    assert after == before, (set(after) ^ set(before))


# ===== Never twice =====

def _never_twice(when):
    """A POST on a reused upstream connection that the simulator closes at `when`: 502,
    and the simulator saw the capture once at most."""
    org, key, _ = org_with_key()
    create_customer(org, key)  # opens the worker's connection to the simulator
    seq = last_seq()
    S.sim.fault(endpoint="customers", kind="close", when=when, match="POST /v1/customers", count=1)
    r = proxy(org, key, "POST", "/v1/customers", form={"email": "again@example.com"})
    arrived = [x for x in sim_requests(seq) if x["method"] == "POST"]
    assert len(arrived) <= 1, f"the simulator got the call {len(arrived)} times: {arrived}"
    assert_stripe_error(r, 502, "stripe_unavailable")
    return arrived


def test_proxy_never_resends_when_the_reused_connection_dies_after_the_body():
    arrived = _never_twice("after_body")
    assert len(arrived) == 1, f"the simulator got the call {len(arrived)} times: {arrived}"


def test_proxy_never_resends_when_the_reused_connection_dies_after_processing():
    arrived = _never_twice("after_processing")
    assert len(arrived) == 1, f"the simulator got the call {len(arrived)} times: {arrived}"


def test_proxy_never_resends_when_the_reused_connection_dies_before_reading():
    arrived = _never_twice("before_body")
    assert len(arrived) <= 1, f"the simulator got the call {len(arrived)} times: {arrived}"


def test_proxy_resends_a_get_whose_reused_connection_died():
    """A GET changes nothing at Stripe: it goes once more, on another connection."""
    org, key, _ = org_with_key()
    cus = create_customer(org, key).json()["id"]
    seq = last_seq()
    S.sim.fault(endpoint="customers", kind="close", when="before_body", match="GET /v1/customers", count=1)
    r = proxy(org, key, "GET", f"/v1/customers/{cus}")
    h.assert_status(r, 200)
    assert [x["status"] for x in sim_requests(seq)][-1] == 200


def test_proxy_never_resends_when_the_answer_breaks_midway():
    org, key, _ = org_with_key()
    create_customer(org, key)
    seq = last_seq()
    S.sim.fault(endpoint="customers", kind="truncated", match="POST /v1/customers", count=1)
    r = proxy(org, key, "POST", "/v1/customers", form={"email": "again@example.com"})
    assert_stripe_error(r, 502, "stripe_unavailable")
    assert len(sim_requests(seq)) == 1


def test_proxy_reuses_the_upstream_connection_after_a_refused_resend():
    """After a failure, the next call still goes through (a fresh connection)."""
    _never_twice("after_body")
    org, key, _ = org_with_key()
    create_customer(org, key)


# ===== Log line and metrics =====

def test_proxy_logs_one_line_with_path_and_request_id_and_counts_the_call():
    org, key, _ = org_with_key()
    ok_before = proxy_count("test", "customers", 200)
    start = S.broker.log_size()
    r = create_customer(org, key)
    cus = r.json()["id"]
    g = proxy(org, key, "GET", f"/v1/customers/{cus}?expand[]=default_source")
    h.assert_status(g, 200)
    h.wait_until(lambda: any(f"/v1/customers/{cus}" in l for l in S.broker.log_lines(start)), 5,
                 what="the proxy's log line")
    lines = [json.loads(l) for l in S.broker.log_lines(start) if '"stripe_path"' in l]
    assert len(lines) == 2, lines
    get = [l for l in lines if l["method"] == "GET"][0]
    assert get["stripe_path"] == f"/v1/customers/{cus}", get
    assert get["stripe_request_id"] == g.header("Request-Id"), get
    assert get["status"] == 200 and get["org_id"] == org and "duration_ms" in get, get
    text = "\n".join(S.broker.log_lines(start))
    assert "default_source" not in text and key not in text and "buyer@example.com" not in text
    assert proxy_count("test", "customers", 200) == ok_before + 2
    forbidden_before = proxy_count("test", "other", 403)
    proxy(org, key, "GET", "/v1/accounts")
    assert proxy_count("test", "other", 403) == forbidden_before + 1


# ===== Connection reuse =====

def _established_to(port):
    """Established TCP connections whose remote port is `port` (IPv4, this host)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            rem_port = int(parts[2].split(":")[1], 16)
            if rem_port == port and parts[3] == "01":
                n += 1
    return n


def test_proxy_keeps_one_upstream_connection_for_consecutive_calls():
    org, key, _ = org_with_key()
    for i in range(5):
        create_customer(org, key)
    g = proxy(org, key, "GET", "/v1/customers/cus_none")
    assert g.status == 404, g.describe()
    # the OAuth calls never keep theirs; the proxy's one connection stays open for the next call
    assert _established_to(S.sim.port) == 1, "the proxy's calls did not share one upstream connection"


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_proxy_closes_everything_it_held_for_upstream_connections_that_died():
    """A kept upstream connection's watch lives as long as curl's socket (curl_loop.c):
    connections the simulator closes mid-call, one after another, leave no descriptor
    behind in the broker."""
    org, key, _ = org_with_key()
    create_customer(org, key)
    pid = S.broker.proc.pid
    before = _fds(pid)
    for _ in range(8):
        S.sim.fault(endpoint="customers", kind="close", when="after_body", match="POST /v1/customers", count=1)
        assert_stripe_error(proxy(org, key, "POST", "/v1/customers", form={"a": "b"}), 502, "stripe_unavailable")
        h.assert_status(create_customer(org, key), 200)  # on a new connection, kept
    h.wait_until(lambda: _fds(pid) <= before, 3, what=f"the broker's descriptors back to {before}")
    assert _established_to(S.sim.port) == 1, "the proxy does not keep exactly one upstream connection"


def test_proxy_forwards_a_delete():
    org, key, _ = org_with_key()
    cus = create_customer(org, key).json()["id"]
    seq = last_seq()
    r = proxy(org, key, "DELETE", f"/v1/customers/{cus}")
    h.assert_status(r, 200)
    assert r.json().get("deleted") is True, r.describe()
    [rec] = sim_requests(seq)
    assert rec["method"] == "DELETE" and rec["path"] == f"/v1/customers/{cus}", rec
    assert header_of(rec, "Idempotency-Key") is None, "a DELETE got an Idempotency-Key"
