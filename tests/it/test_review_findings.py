"""Defects found by an outside review of the proxy, the browser flow and secret wiping,
each as a black-box test against the real binary (real Redis, the Stripe simulator).

  * HEAD (served by the GET routes) must answer headers only: a body after a HEAD answer
    is read by the client, or by an ingress sharing the connection, as the start of the
    next answer (RFC 9110 §9.3.2) — on the proxy route that body was Stripe's answer, and
    the proxy forwards GET, POST and DELETE only (a HEAD there is a 405);
  * Stripe's "declined" callback (?error=access_denied) with an unknown state, or from
    another browser than the one the state is bound to, is a 400 page (CONTRACT §5.4);
  * apps flavor: Stripe's 401 on a proxied call refreshes the token before the one
    resend, also when the call had refreshed the token itself first (CONTRACT §4.3);
  * a BROKER_PUBLIC_URL path named like a route (/v1) must not break the routes;
  * the Stripe access token the proxy sends, and the org API key a caller presents,
    must not stay in the broker's memory once the call is answered (the rule "wipe
    secrets from memory when done"; CONTRACT §8).
"""

import socket

import harness as h
from test_memory import count_in_memory

S = None
A = None            # apps flavor
MARGIN_S = 300


def setup_module():
    global S, A
    S = h.Stack("review", BROKER_THREADS="1")
    A = h.Stack("review-apps", BROKER_THREADS="1", BROKER_OAUTH_FLAVOR="apps", BROKER_REFRESH_MARGIN_S=str(MARGIN_S))


def teardown_module():
    for st in (S, A):
        if st is not None:
            st.close()


def setup_function():
    S.reset()
    A.reset()


def connected_org_with_key(mode="test"):
    f = h.Flow(S.broker, S.sim, h.new_org(), mode).run()
    return f, S.broker.create_api_key(f.org)["api_key"]


# ===== HEAD =====

def two_answers(broker, first, second):
    """Send two requests on one keep-alive connection (the second closes it) and return
    everything the broker wrote back."""
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=h.HTTP_TIMEOUT_S)
    try:
        s.sendall(first + second)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    finally:
        s.close()


def assert_head_answer_has_no_body(out, status=200):
    head, sep, rest = out.partition(b"\r\n\r\n")
    assert sep, f"no complete answer to the HEAD: {out[:300]!r}"
    assert head.startswith(b"HTTP/1.1 %d" % status), f"HEAD was not answered {status}: {head[:300]!r}"
    assert rest.startswith(b"HTTP/1.1 "), \
        f"the HEAD answer carries a body, read as the start of the next answer: {rest[:120]!r}"
    return head


def test_head_answer_has_no_body_and_the_next_answer_follows_it():
    out = two_answers(S.broker, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                      b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = assert_head_answer_has_no_body(out)
    get = h.http_request("GET", S.broker.url("/healthz"))
    assert b"\r\ncontent-length: %d" % len(get.body) in head.lower(), \
        f"the HEAD answer lacks the GET answer's Content-Length: {head!r}"
    assert out.rstrip().endswith(b'{"status":"ready"}'), f"the second answer is not /readyz's: {out[-200:]!r}"


def test_head_on_the_proxy_route_is_refused_without_a_stripe_call_and_without_a_body():
    """CONTRACT §4.3 forwards GET, POST and DELETE: a HEAD there (which was forwarded as a
    GET, and Stripe's answer written into the connection) is a 405 in Stripe's error
    shape, with no body on the wire and no Stripe call."""
    f, key = connected_org_with_key()
    before = len(S.sim.requests())
    auth = f"Authorization: Bearer {key}\r\n".encode()
    out = two_answers(S.broker,
                      b"HEAD /v1/orgs/" + f.org.encode() + b"/stripe/test/v1/customers HTTP/1.1\r\nHost: x\r\n" +
                      auth + b"\r\n",
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = assert_head_answer_has_no_body(out, 405).lower()
    assert b"\r\nallow: get, post, delete" in head, head
    assert len(S.sim.requests()) == before, "a HEAD on the proxy route reached Stripe"


# ===== apps: Stripe's 401 on a proxied call =====

def refresh_grants(stack):
    return [g for g in stack.sim.stats()["grants"]
            if g.get("endpoint") == "apps_token" and g.get("grant_type") == "refresh_token"]


def test_apps_401_after_a_refresh_in_the_same_call_refreshes_again_before_the_resend():
    """CONTRACT §4.3: on Stripe's 401 the broker refreshes once and sends the call again.
    When the call had itself refreshed the token first (it was within the margin), the
    proxy forgot the version it got (0), the rotation fenced on version 0 found the
    record "moved on" and served it unchanged: the resend carried the very token Stripe
    had just refused, and no refresh happened."""
    A.sim.config(apps_token_lifetime=MARGIN_S - 30)   # stored already within the margin
    f = h.Flow(A.broker, A.sim, h.new_org(), "live").run()
    A.sim.config(apps_token_lifetime=3600)
    key = A.broker.create_api_key(f.org)["api_key"]
    A.sim.fault(endpoint="customers", kind="status", status=401, count=1)
    r = h.http_request("GET", A.broker.url(f"/v1/orgs/{f.org}/stripe/live/v1/customers"),
                       headers={"Authorization": f"Bearer {key}"})
    recs = A.sim.requests()
    assert [x["status"] for x in recs] == [401, 200], [(x["status"], x["fault"]) for x in recs]
    sent = [[v for k, v in x["headers"] if k.lower() == "authorization"][0] for x in recs]
    assert len(refresh_grants(A)) == 2, f"{len(refresh_grants(A))} refresh(es): the margin's, then none for the 401"
    assert sent[0] != sent[1], "the resend carried the token Stripe had just refused"
    h.assert_status(r, 200)


# ===== The declined callback =====

def test_a_declined_callback_with_an_unknown_state_or_from_another_browser_is_a_400_page():
    """CONTRACT §5.4: a replayed, unknown or expired state, or a state from another
    browser, shows a 400 page — the declined callback (?error=access_denied) included:
    it answered 200 "declined" whatever the state and the cookies, which also let
    made-up flow cookies past the page rate limit (tests/fault/test_review_findings_limits.py)."""
    r = h.Browser().get(S.broker.url(f"/oauth/callback?error=access_denied&state={h.rand_str(43)}"))
    assert r.status == 400, f"a declined callback with an unknown state: {r.describe()}"
    r = h.Browser().get(S.broker.url("/oauth/callback?error=access_denied"))
    assert r.status == 400, f"a declined callback without a state: {r.describe()}"
    f = h.Flow(S.broker, S.sim, h.new_org(), "test")
    f.open()
    f.setup_page()
    f.authorize_ok()
    r = h.Browser().get(S.broker.url(f"/oauth/callback?error=access_denied&state={f.state}"))
    assert r.status == 400, f"a declined callback from another browser: {r.describe()}"


# ===== BROKER_PUBLIC_URL with a path =====

def test_a_public_path_named_like_a_route_is_refused_or_leaves_the_routes_whole():
    """strip_public_path removes BROKER_PUBLIC_URL's path from any request that starts
    with it, and "a request without it is served the same". With a path of /v1 the
    API's own /v1/orgs/… (probes, an ingress that strips the prefix, a Named Credential
    pointing at the pod) became /orgs/… and answered 404. Either the broker refuses such
    a path at start, naming the variable, or it serves both forms."""
    port = h.free_port()
    env = S.env_for(port=port, BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}/v1")
    p = h.run_cli(["check"], env, log_name="review-public-path")
    if p.returncode != 0:
        assert "BROKER_PUBLIC_URL" in p.stderr, p.stderr
        return
    b = S.new_broker("public-v1", port=port, BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}/v1")
    try:
        org = h.new_org()
        auth = {"Authorization": f"Bearer {b.admin_token}"}
        for path in (f"/v1/orgs/{org}/connections", f"/v1/v1/orgs/{org}/connections"):
            r = h.http_request("GET", b.url(path), headers=auth)
            assert r.status == 200, f"{path} with BROKER_PUBLIC_URL's path /v1: {r.describe()}"
    finally:
        b.stop()


# ===== Secrets left in memory =====

def test_the_proxied_access_token_and_request_body_are_not_left_in_memory():
    """The bearer the proxy sends and the body it forwards (a payment method's card
    details go this way) were left in libcurl's freed request buffers."""
    f, key = connected_org_with_key()
    reader = S.new_broker("proxy-mem", BROKER_CACHE_BUSY_RPS="0", BROKER_THREADS="1")
    try:
        token = S.broker.access_token(f.org, "test").json()["access_token"]
        assert len(token) >= 40, token[:8]
        for _ in range(2):
            r = h.http_request("GET", reader.url(f"/v1/orgs/{f.org}/stripe/test/v1/customers"),
                               headers={"Authorization": f"Bearer {key}"})
            h.assert_status(r, 200)
        private = "private_" + h.rand_str(32)
        r = h.http_request("POST", reader.url(f"/v1/orgs/{f.org}/stripe/test/v1/customers"),
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/x-www-form-urlencoded"},
                           body=f"description={private}")
        h.assert_status(r, 200)
        h.wait_until(lambda: sum('"stripe_path"' in l for l in reader.log_lines()) >= 3, 5,
                     what="the proxy's request log lines")
        found = count_in_memory(reader.proc.pid, token[-24:].encode())
        assert found == 0, f"the Stripe access token is still in {found} place(s) of the broker's memory"
        found = count_in_memory(reader.proc.pid, private[-24:].encode())
        assert found == 0, f"the proxied request body is still in {found} place(s) of the broker's memory"
    finally:
        reader.stop()


def test_the_org_api_key_is_not_left_in_memory_after_its_request():
    f, key = connected_org_with_key()
    reader = S.new_broker("key-mem", BROKER_CACHE_BUSY_RPS="0", BROKER_THREADS="1")
    try:
        for _ in range(2):
            h.assert_status(reader.access_token(f.org, "test", token=key), 200)
        h.wait_until(lambda: sum("access-token" in l for l in reader.log_lines()) >= 2, 5,
                     what="the request log lines")
        found = count_in_memory(reader.proc.pid, key[-24:].encode())
        assert found == 0, f"the org API key is still in {found} place(s) of the broker's memory"
        assert count_in_memory(reader.proc.pid, reader.admin_token.encode()) > 0, \
            "the memory scan finds nothing at all"
    finally:
        reader.stop()
