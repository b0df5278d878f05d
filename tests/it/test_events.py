"""Events out (CONTRACT §4.5): each event is POSTed to BROKER_EVENTS_URL, signed
(Broker-Signature, checked with tests/fakes/broker_signature.py), at least once, by one
replica, retried with back-off by any replica, in order per org, with a stable id."""

import http.server
import json
import os
import re
import sys
import threading
import time

import harness as h
import ops_fixtures

sys.path.insert(0, os.path.join(h.REPO, "tests", "fakes"))
import broker_signature  # noqa: E402

SECRET = "evsec_" + h.rand_str(32)
F = ops_fixtures.OpsStack("events", BROKER_EVENTS_SECRET=SECRET, BROKER_EVENTS_RETRY_MAX_S="2",
                          BROKER_REFRESH_FAILING_S="1")
S = None
R = None


class Receiver:
    """A receiver that can answer 2xx, fail (500) or hang (no answer until released)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = []          # (event dict, verified) in arrival order, every attempt
        self.meta = []         # (monotonic arrival time, Broker-Signature, Content-Type), the same order
        self.mode = "ok"
        self.inflight = 0
        self.max_inflight = 0
        self.delay = 0.0
        self.refuse = set()    # org ids whose events are answered 500
        self.release = threading.Event()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok, why = broker_signature.verify(self.headers.get("Broker-Signature"), body, SECRET)
                with rec.lock:
                    event = json.loads(body)
                    mode = "fail" if rec.mode == "ok" and event.get("org_id") in rec.refuse else rec.mode
                    rec.got.append((event, ok, why, mode))
                    rec.meta.append((time.monotonic(), self.headers.get("Broker-Signature"),
                                     self.headers.get("Content-Type")))
                    rec.inflight += 1
                    rec.max_inflight = max(rec.max_inflight, rec.inflight)
                try:
                    if rec.delay:
                        time.sleep(rec.delay)
                    if mode == "hang":
                        rec.release.wait(30)
                        return       # no answer: the broker's attempt times out
                    status = 200 if mode == "ok" and ok else 500
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                finally:
                    with rec.lock:
                        rec.inflight -= 1

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/broker-events"

    def set(self, mode):
        with self.lock:
            self.mode = mode
        if mode == "hang":
            self.release.clear()
        else:
            self.release.set()

    def reset(self):
        self.set("ok")
        with self.lock:
            self.got = []
            self.meta = []
            self.max_inflight = 0
            self.delay = 0.0
            self.refuse = set()

    def accepted(self):
        """Events answered 2xx: (event) in order."""
        with self.lock:
            return [e for e, ok, _, mode in self.got if ok and mode == "ok"]

    def all(self):
        with self.lock:
            return list(self.got)

    def close(self):
        self.release.set()
        self.srv.shutdown()


def setup_module():
    global S, R
    R = Receiver()
    F.env["BROKER_EVENTS_URL"] = R.url
    h.remember("events_secret", SECRET)
    S = F.start()


def teardown_module():
    F.close()
    if R:
        R.close()


def setup_function():
    R.reset()
    S.reset()


replica = F.replica


def connect(org, mode="test", broker=None):
    return F.connect(org, mode, broker=broker)


def wait_events(pred, timeout=20, what="events"):
    return h.wait_until(lambda: (lambda a: a if pred(a) else None)(R.accepted()), timeout, interval=0.05,
                        what=what)


def of(org, events):
    return [e for e in events if e["org_id"] == org]


def outbox_drained():
    c = S.rc()
    try:
        n = c.command("XLEN", "stb:outbox")
        pending = c.command("XPENDING", "stb:outbox", "deliver")
        queued = c.command("ZCARD", "stb:outbox:due")
        return n == 0 and (pending[0] in (0, b"0", "0")) and queued == 0
    finally:
        c.close()


def assert_event_shape(e, type_, org, mode):
    assert set(e) == {"id", "type", "created", "org_id", "mode", "data"}, e
    assert e["type"] == type_ and e["org_id"] == org and e["mode"] == mode, e
    assert e["id"].startswith("evt_") and len(e["id"]) == 28, e
    h.assert_recent(e["created"])


# ===== Each event type =====

def test_an_authorization_is_sent_signed_with_an_event_id():
    org = h.new_org()
    f = connect(org, "live")
    [e] = of(org, wait_events(lambda a: of(org, a), what="connection.authorized"))
    assert_event_shape(e, "connection.authorized", org, "live")
    assert e["data"]["stripe_user_id"] == f.account
    assert all(ok for _, ok, _, _ in R.all()), R.all()
    # the same body with another secret or a changed body does not verify
    body = json.dumps(e).encode()
    assert not broker_signature.verify("t=1,v1=00", body, SECRET)[0]


def test_stripes_deauthorization_and_invalid_grant_send_reauthorization_required():
    org, org2 = h.new_org(), h.new_org()
    f = connect(org, "test")
    F.deauthorize(f.account)
    f2 = connect(org2, "live")
    S.sim._call("POST", "/_sim/revoke", {"account": f2.account})
    h.assert_error(S.broker.admin("POST", f"/v1/orgs/{org2}/access-token/rotate?mode=live"), 409,
                   "reauthorization_required")
    got = wait_events(lambda a: len(of(org, a)) == 2 and len(of(org2, a)) == 2, what="four events")
    [a, r] = of(org, got)
    assert a["type"] == "connection.authorized"
    assert_event_shape(r, "connection.reauthorization_required", org, "test")
    assert r["data"] == {"reason": "deauthorized", "stripe_user_id": f.account}
    [_, r2] = of(org2, got)
    assert_event_shape(r2, "connection.reauthorization_required", org2, "live")
    assert r2["data"] == {"reason": "invalid_grant"}


def test_a_deleted_connection_is_sent():
    org = h.new_org()
    f = connect(org, "test")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
    got = wait_events(lambda a: len(of(org, a)) == 2, what="connection.deleted")
    assert_event_shape(of(org, got)[1], "connection.deleted", org, "test")
    assert of(org, got)[1]["data"]["stripe_user_id"] == f.account


def test_refresh_failing_after_the_threshold_then_recovered():
    org = h.new_org()
    connect(org, "live")
    wait_events(lambda a: of(org, a), what="connection.authorized")
    S.sim.fault(endpoint="token", kind="status", status=503)
    rotate = f"/v1/orgs/{org}/access-token/rotate?mode=live"
    # failures for longer than BROKER_REFRESH_FAILING_S (1 s; the 2 s cooldown spaces the calls)
    h.wait_until(lambda: S.broker.admin("POST", rotate).status == 502 and
                 any(e["type"] == "refresh.failing" for e in of(org, R.accepted())), 15, interval=0.3,
                 what="refresh.failing")
    S.sim._call("DELETE", "/_sim/faults")
    h.wait_until(lambda: S.broker.admin("POST", rotate).status == 200, 10, interval=0.3, what="a rotation")
    got = of(org, wait_events(lambda a: len(of(org, a)) == 3, what="connection.recovered"))
    assert [e["type"] for e in got] == ["connection.authorized", "refresh.failing", "connection.recovered"], got
    assert_event_shape(got[1], "refresh.failing", org, "live")
    assert got[1]["data"]["class"] == "transient"
    # recovered once: the next rotation sends nothing
    h.assert_status(S.broker.admin("POST", rotate), 200)
    h.wait_until(outbox_drained, 10, what="outbox drained")
    assert len(of(org, R.accepted())) == 3


def test_authorizing_again_after_reauthorization_required_sends_authorized_then_recovered():
    org = h.new_org()
    f = connect(org, "test")
    F.deauthorize(f.account)
    wait_events(lambda a: len(of(org, a)) == 2, what="connection.reauthorization_required")
    g = connect(org, "test")          # the admin authorizes again in the browser
    got = of(org, wait_events(lambda a: len(of(org, a)) == 4, what="authorized and recovered"))
    assert [e["type"] for e in got] == ["connection.authorized", "connection.reauthorization_required",
                                        "connection.authorized", "connection.recovered"], got
    assert_event_shape(got[3], "connection.recovered", org, "test")
    assert got[3]["data"] == {"reason": "reauthorized", "stripe_user_id": g.account, "flavor": "connect"}, got[3]
    assert got[2]["data"]["stripe_user_id"] == g.account
    # recovered once per outage: authorizing once more sends connection.authorized only
    connect(org, "test")
    got = of(org, wait_events(lambda a: len(of(org, a)) >= 5, what="the third authorization"))
    h.wait_until(outbox_drained, 10, what="outbox drained")
    assert [e["type"] for e in of(org, R.accepted())][4:] == ["connection.authorized"]


def test_a_test_connection_minted_again_from_live_after_revocation_recovers():
    org = h.new_org()
    f = connect(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)          # minted from live
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    h.assert_error(S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test"), 409,
                   "reauthorization_required")
    wait_events(lambda a: len(of(org, a)) == 2, what="connection.reauthorization_required")
    connect(org, "live")                                                # live authorized again
    h.assert_status(S.broker.access_token(org, "test"), 200)          # test minted again from it
    got = of(org, wait_events(lambda a: len(of(org, a)) == 4, what="test's connection.recovered"))
    assert [(e["type"], e["mode"]) for e in got] == [
        ("connection.authorized", "live"), ("connection.reauthorization_required", "test"),
        ("connection.authorized", "live"), ("connection.recovered", "test")], got
    h.wait_until(outbox_drained, 10, what="outbox drained")
    assert len(of(org, R.accepted())) == 4


def test_authorizing_again_after_refresh_failing_recovers_once():
    org = h.new_org()
    connect(org, "live")
    wait_events(lambda a: of(org, a), what="connection.authorized")
    S.sim.fault(endpoint="token", kind="status", status=503)
    rotate = f"/v1/orgs/{org}/access-token/rotate?mode=live"
    h.wait_until(lambda: S.broker.admin("POST", rotate).status == 502 and
                 any(e["type"] == "refresh.failing" for e in of(org, R.accepted())), 15, interval=0.3,
                 what="refresh.failing")
    S.sim._call("DELETE", "/_sim/faults")
    connect(org, "live")              # the admin authorizes again instead of waiting
    got = of(org, wait_events(lambda a: len(of(org, a)) == 4, what="authorized and recovered"))
    assert [e["type"] for e in got] == ["connection.authorized", "refresh.failing", "connection.authorized",
                                        "connection.recovered"], got
    assert got[3]["data"]["reason"] == "reauthorized"
    # the next successful token call (after the failure's cooldown) ends the run of
    # failures without a second recovery
    h.wait_until(lambda: S.broker.admin("POST", rotate).status == 200, 10, interval=0.3, what="a rotation")
    h.wait_until(outbox_drained, 10, what="outbox drained")
    assert len(of(org, R.accepted())) == 4, of(org, R.accepted())


def test_an_entry_left_pending_by_a_dead_replica_is_delivered_with_its_id():
    S.broker.stop()
    org = h.new_org()
    body = json.dumps({"id": "evt_" + "5a" * 12, "type": "connection.deleted",
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "org_id": org,
                       "mode": "test", "data": {}}, separators=(",", ":"))
    c = S.rc()
    try:   # read by a replica that died before it did anything with it
        try:
            c.command("XGROUP", "CREATE", "stb:outbox", "deliver", "0", "MKSTREAM")
        except h.RedisError as e:
            assert "BUSYGROUP" in str(e)
        c.command("XADD", "stb:outbox", "*", "org", org, "e", body)
        c.command("XREADGROUP", "GROUP", "deliver", "dead-replica", "COUNT", "10", "STREAMS", "stb:outbox", ">")
        assert c.command("XPENDING", "stb:outbox", "deliver")[0] in (1, b"1", "1")
    finally:
        c.close()
    S.broker.start()
    got = wait_events(lambda a: of(org, a), what="the pending entry delivered")
    assert of(org, got) == [json.loads(body)]
    h.wait_until(outbox_drained, 10, what="outbox drained")


def test_the_signature_header_and_the_first_retry_are_the_contracts():
    S.broker.stop()     # one replica with the default back-off (BROKER_EVENTS_RETRY_MAX_S 600)
    b = F.replica("default-backoff", BROKER_EVENTS_RETRY_MAX_S="600")
    try:
        org = h.new_org()
        R.refuse = {org}
        connect(org, "live", broker=b)
        h.wait_until(lambda: len(R.all()) >= 2, 15, interval=0.05, what="a first retry")
        with R.lock:
            (t0, sig, ctype), (t1, _, _) = R.meta[0], R.meta[1]
        assert re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64}", sig), sig
        assert ctype == "application/json", ctype
        assert t1 - t0 < 5.0, f"the first retry came {t1 - t0:.1f} s after the first attempt"
        R.refuse = set()
        wait_events(lambda a: of(org, a), what="the delivery")
    finally:
        b.stop()


# ===== Delivery =====

def test_a_receiver_that_fails_hangs_and_comes_back_after_60s_gets_everything_once_in_order():
    R.set("fail")
    orgs = [h.new_org(), h.new_org()]
    t0 = time.monotonic()
    for org in orgs:
        connect(org, "live")
    for org in orgs:
        h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    h.wait_until(lambda: len(R.all()) >= 3, 10, what="failed attempts")
    h.wait_until(lambda: time.monotonic() - t0 >= 20, 25, interval=0.5, what="20 s of failures")
    R.set("hang")
    # while the receiver hangs, requests are not delayed
    for _ in range(5):
        r = S.broker.request("GET", f"/v1/orgs/{orgs[0]}/connections", token=S.broker.admin_token)
        assert r.status == 200 and r.elapsed < 1.0, r.describe()
    h.wait_until(lambda: time.monotonic() - t0 >= 60, 45, interval=0.5, what="60 s of outage")
    R.set("ok")
    got = wait_events(lambda a: all(len(of(o, a)) >= 2 for o in orgs), timeout=30, what="everything delivered")
    for org in orgs:
        types = [e["type"] for e in of(org, got)]
        assert types == ["connection.authorized", "connection.deleted"], types
    # every attempt of one event carried the same id and body; no event went out twice
    # with different ids
    by_key = {}
    for e, _, _, _ in R.all():
        by_key.setdefault((e["org_id"], e["type"]), set()).add(json.dumps(e, sort_keys=True))
    assert all(len(v) == 1 for v in by_key.values()), by_key
    assert len(R.all()) > 4, "no retries were made"
    h.wait_until(outbox_drained, 10, what="outbox drained")


test_a_receiver_that_fails_hangs_and_comes_back_after_60s_gets_everything_once_in_order.timeout_s = 150
test_a_receiver_that_fails_hangs_and_comes_back_after_60s_gets_everything_once_in_order.plain_only = True   # a minute of waiting; its code runs under ASan in the other tests


def test_three_replicas_deliver_each_event_once_one_at_a_time_in_order():
    b2, b3 = replica("r2"), replica("r3")
    try:
        R.delay = 0.2     # a slow receiver: the events queue up while all three replicas run
        orgs = [h.new_org() for _ in range(4)]
        for i, org in enumerate(orgs):
            connect(org, "test", broker=[S.broker, b2, b3][i % 3])
        org = orgs[0]
        for i in range(2):   # and, for one org, a run of events whose order matters
            h.assert_status([S.broker, b2, b3][i].admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
            connect(org, "test", broker=[b3, S.broker][i])
        wait_events(lambda a: all(of(o, a) for o in orgs) and len(of(org, a)) == 5, timeout=30, what="all events")
        h.wait_until(outbox_drained, 10, what="outbox drained")
        ids = [e["id"] for e, _, _, _ in R.all()]
        assert len(ids) == 8 and len(set(ids)) == 8, R.all()
        assert [e["type"] for e in of(org, R.accepted())] == ["connection.authorized", "connection.deleted"] * 2 + \
            ["connection.authorized"]
        assert R.max_inflight == 1, "two replicas delivered at the same time"
    finally:
        b2.stop()
        b3.stop()


def test_a_replica_killed_mid_delivery_leaves_the_event_to_another():
    b2 = replica("killme")
    try:
        R.set("hang")
        org = h.new_org()
        connect(org, "test")
        h.wait_until(lambda: R.inflight > 0, 15, what="a delivery in flight")
        first = R.all()[0][0]
        holders = [b for b in (S.broker, b2)
                   if any("this replica delivers" in l for l in b.log_lines())]
        assert len(holders) == 1, "exactly one replica holds the delivery lease"
        holder = holders[0]
        holder.kill()
        R.set("ok")
        got = wait_events(lambda a: of(org, a), timeout=30, what="delivery by the other replica")
        assert of(org, got)[0] == first, "the other replica sent the same event with the same id"
        h.wait_until(outbox_drained, 10, what="outbox drained")
        assert len(of(org, R.accepted())) == 1
    finally:
        b2.kill()
        if not S.broker.running():
            S.broker.start()


test_a_replica_killed_mid_delivery_leaves_the_event_to_another.timeout_s = 90


def test_a_refused_org_holds_back_only_its_own_later_events():
    a, b = h.new_org(), h.new_org()
    R.refuse = {a}
    connect(a, "test")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{a}/connections/test"), 204)
    connect(a, "test")
    h.wait_until(lambda: len([e for e, _, _, _ in R.all() if e["org_id"] == a]) >= 2, 10,
                 what="org A's first event refused twice")
    # org A's receiver refuses (its first event is in back-off): org B's events go out at
    # once, in order, and org A's later events are not sent ahead of its first
    connect(b, "test")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{b}/connections/test"), 204)
    connect(b, "test")
    got = wait_events(lambda x: len(of(b, x)) == 3, timeout=8, what="org B's events while A is refused")
    assert [e["type"] for e in of(b, got)] == ["connection.authorized", "connection.deleted",
                                               "connection.authorized"], of(b, got)
    tried_a = [e for e, _, _, _ in R.all() if e["org_id"] == a]
    assert len({e["id"] for e in tried_a}) == 1, "an event of org A went out before its first one"
    # the org held back shows on /metrics (counted by each replica's pass; a new one counts at start)
    g = F.replica("gauge")
    try:
        h.wait_until(lambda: re.search(r"^stb_events_orgs_waiting 1$", g.request("GET", "/metrics").text, re.M),
                     15, interval=0.2, what="stb_events_orgs_waiting 1")
    finally:
        g.stop()
    first_a = tried_a[0]
    assert first_a["type"] == "connection.authorized"
    # A's receiver recovers: A's events arrive in order, the first with the id it had
    R.refuse = set()
    got = of(a, wait_events(lambda x: len(of(a, x)) == 3, timeout=10, what="org A's events"))
    assert [e["type"] for e in got] == ["connection.authorized", "connection.deleted", "connection.authorized"]
    assert got[0] == first_a, "the refused event was sent again with the same id and body"
    assert len({e["id"] for e in got}) == 3
    h.wait_until(outbox_drained, 10, what="outbox drained")


def test_no_event_without_its_change():
    org = h.new_org()
    S.sim.fault(endpoint="deauthorize", kind="status", status=500)
    connect(org, "live")
    h.assert_error(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 502, "stripe_unavailable")
    h.wait_until(outbox_drained, 10, what="outbox drained")
    assert [e["type"] for e in of(org, R.accepted())] == ["connection.authorized"]
