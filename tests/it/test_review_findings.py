"""Defects found by an outside review of the proxy, the browser flow and secret wiping,
each as a black-box test against the real binary (real Redis, the Stripe simulator).

  * HEAD (served by the GET routes) must answer headers only: a body after a HEAD answer
    is read by the client, or by an ingress sharing the connection, as the start of the
    next answer (RFC 9110 §9.3.2) — on the proxy route that body is Stripe's answer;
  * Stripe's "declined" callback (?error=access_denied) must not consume a state that
    did not come back to the browser it is bound to (CONTRACT §5.4);
  * the Stripe access token the proxy sends, and the org API key a caller presents,
    must not stay in the broker's memory once the call is answered (the rule "wipe
    secrets from memory when done"; CONTRACT §8).
"""

import socket

import harness as h
from test_memory import count_in_memory

S = None


def setup_module():
    global S
    S = h.Stack("review", BROKER_THREADS="1")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


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


def assert_head_answer_has_no_body(out):
    head, sep, rest = out.partition(b"\r\n\r\n")
    assert sep, f"no complete answer to the HEAD: {out[:300]!r}"
    assert head.startswith(b"HTTP/1.1 200"), f"HEAD was not answered 200: {head[:300]!r}"
    assert rest.startswith(b"HTTP/1.1 "), \
        f"the HEAD answer carries a body, read as the start of the next answer: {rest[:120]!r}"


def test_head_answer_has_no_body_and_the_next_answer_follows_it():
    out = two_answers(S.broker, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                      b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_head_answer_has_no_body(out)
    assert out.rstrip().endswith(b'{"status":"ready"}'), f"the second answer is not /readyz's: {out[-200:]!r}"


def test_head_on_the_proxy_route_sends_no_stripe_body_into_the_connection():
    f, key = connected_org_with_key()
    auth = f"Authorization: Bearer {key}\r\n".encode()
    out = two_answers(S.broker,
                      b"HEAD /v1/orgs/" + f.org.encode() + b"/stripe/test/v1/customers HTTP/1.1\r\nHost: x\r\n" +
                      auth + b"\r\n",
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_head_answer_has_no_body(out)


# ===== The declined callback =====

def test_a_declined_callback_from_another_browser_leaves_the_admins_state():
    """The admin is on Stripe's consent page; someone else (no cookies of that flow)
    sends the admin's state back with error=access_denied. The state is bound to the
    admin's browser and setup session: it must still complete the admin's
    authorization."""
    f = h.Flow(S.broker, S.sim, h.new_org(), "test")
    f.open()
    f.setup_page()
    f.authorize_ok()
    other = h.Browser()
    r = other.get(S.broker.url(f"/oauth/callback?error=access_denied&state={f.state}"))
    assert r.status < 500, r.describe()
    r = f.browser.get(f.authorize_location)
    assert r.status in (302, 303), r.describe()
    f.callback_url = r.header("Location")
    r = f.callback()
    assert r.status == 303, f"the admin's own callback failed after another browser declined: {r.describe()}"
    conns = S.broker.connections(f.org)
    assert [c["mode"] for c in conns] == ["test"], conns


# ===== Secrets left in memory =====

def test_the_proxied_access_token_is_not_left_in_memory():
    f, key = connected_org_with_key()
    reader = S.new_broker("proxy-mem", BROKER_CACHE_BUSY_RPS="0", BROKER_THREADS="1")
    try:
        token = S.broker.access_token(f.org, "test").json()["access_token"]
        assert len(token) >= 40, token[:8]
        for _ in range(2):
            r = h.http_request("GET", reader.url(f"/v1/orgs/{f.org}/stripe/test/v1/customers"),
                               headers={"Authorization": f"Bearer {key}"})
            h.assert_status(r, 200)
        h.wait_until(lambda: sum('"stripe_path"' in l for l in reader.log_lines()) >= 2, 5,
                     what="the proxy's request log lines")
        found = count_in_memory(reader.proc.pid, token[-24:].encode())
        assert found == 0, f"the Stripe access token is still in {found} place(s) of the broker's memory"
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
