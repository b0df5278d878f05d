"""The broker's log: one JSON object per line on stderr, one line per request (CONTRACT §7)."""

import fcntl
import http.client
import json
import os
import select
import socket
import subprocess
import time

import harness as h

S = None
FIELDS = ("ts", "level", "request_id", "method", "route", "status", "duration_ms")


def setup_module():
    global S
    S = h.Stack("logs")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def parse_lines(lines):
    out = []
    for l in lines:
        if not l.strip():
            continue
        try:
            j = json.loads(l)
        except ValueError:
            raise AssertionError(f"a log line is not JSON: {l[:200]!r}") from None
        assert isinstance(j, dict), f"a log line is not a JSON object: {l[:200]!r}"
        out.append(j)
    return out


def assert_ts(ts):
    """A log timestamp: an RFC 3339 UTC string (or, tolerated, epoch seconds)."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        assert abs(ts - time.time()) < 3600, f"ts {ts} is not now"
    else:
        h.assert_recent(ts, 3600)


def is_request_line(j):
    return "status" in j and "method" in j


def options_healthz(b):
    """The default sentinel request: OPTIONS /healthz (405), a method no test sends."""
    r = b.request("OPTIONS", "/healthz")
    assert r.status == 405, r.describe()
    return lambda j: j.get("method") == "OPTIONS"


def request_lines_after(offset, expected, timeout=3, broker=None, sentinel=options_healthz):
    """The request lines written after offset, once `expected` of them are there and then
    the line of a sentinel request sent after them (sentinel(broker) sends it and returns a
    predicate that recognises its line, which is left out). A quiet worker writes a
    request's line before its answer (broker/http/breq.c, breq_send_turn), so the lines of the
    requests answered before are all there; awaiting the sentinel's line gives a line
    written late (say a second line for one request, written on the next loop turn) the
    time to show up, where a fixed sleep used to."""
    b = broker or S.broker

    def lines():
        return [j for j in parse_lines(b.log_lines(offset)) if is_request_line(j)]
    h.wait_until(lambda: len(lines()) >= expected, timeout, interval=0.02,
                 what=f"{expected} request log lines")
    is_sentinel = sentinel(b)
    got = h.wait_until(lambda: (lambda g: g if any(is_sentinel(j) for j in g) else None)(lines()),
                       timeout, interval=0.02, what="the sentinel request's log line")
    return [j for j in got if not is_sentinel(j)]


def test_every_request_logs_exactly_one_json_line_with_the_fields():
    org = h.new_org()
    off = S.broker.log_size()
    sent = [("GET", "/healthz", None, 200), ("DELETE", "/healthz", None, 405),
            ("GET", "/no/such/route", None, 404),
            ("GET", f"/v1/orgs/{org}/connections", S.broker.admin_token, 200),
            ("GET", f"/v1/orgs/{org}/connections", None, 401),
            ("GET", f"/v1/orgs/00Dbadbadbad/connections", S.broker.admin_token, 400),
            ("GET", f"/v1/orgs/{org}/access-token?mode=test", S.broker.admin_token, 404)]
    for method, path, tok, status in sent:
        r = S.broker.request(method, path, token=tok)
        assert r.status == status, r.describe()
    lines = request_lines_after(off, len(sent))
    assert len(lines) == len(sent), f"{len(lines)} request lines for {len(sent)} requests: {lines}"
    for j in lines:
        missing = [f for f in FIELDS if f not in j]
        assert not missing, f"request line lacks {missing}: {j}"
        assert_ts(j["ts"])
        assert isinstance(j["level"], str) and j["level"], j
        assert isinstance(j["request_id"], str) and j["request_id"], j
        assert isinstance(j["route"], str) and j["route"], j
        assert isinstance(j["status"], int) and not isinstance(j["status"], bool), j
        assert isinstance(j["duration_ms"], (int, float)) and j["duration_ms"] >= 0, j
    assert sorted((j["method"], j["status"]) for j in lines) == \
        sorted((m, s) for m, _, _, s in sent), lines


def test_request_line_has_the_normalised_org_id():
    org15 = h.new_org15()
    org = h.org18(org15)
    off = S.broker.log_size()
    for form in (org15, org.lower()):
        h.assert_status(S.broker.admin("GET", f"/v1/orgs/{form}/connections"), 200)
    lines = request_lines_after(off, 2)
    assert [j.get("org_id") for j in lines] == [org, org], \
        f"org_id is not the canonical 18-char id {org}: {[j.get('org_id') for j in lines]}"


def test_request_line_for_an_admin_route_has_the_org_id():
    org15 = h.new_org15()
    off = S.broker.log_size()
    S.broker.create_api_key(org15)
    lines = request_lines_after(off, 1)
    assert lines[-1].get("org_id") == h.org18(org15), lines


def test_at_level_warn_only_5xx_request_lines_are_logged():
    quiet = S.new_broker(f"warn{h.rand_str(4)}", BROKER_LOG_LEVEL="warn")
    try:
        org = h.new_org()
        c = S.rc()
        c.command("SET", f"stb:conn:{org}:test", "not a sealed record")  # 500 record_unreadable
        offset = quiet.log_size()
        h.assert_status(quiet.request("GET", "/healthz"), 200)
        h.assert_error(quiet.access_token(org, "live"), 404, "not_connected")
        h.assert_error(quiet.access_token(org, "test"), 500, "record_unreadable")

        def unreadable(b):   # at level warn only a 5xx is logged: another org's 500
            other = h.new_org()
            c.command("SET", f"stb:conn:{other}:test", "not a sealed record")
            h.assert_error(b.access_token(other, "test"), 500, "record_unreadable")
            return lambda j: j.get("org_id") == other
        lines = request_lines_after(offset, 1, broker=quiet, sentinel=unreadable)
        assert [(j["status"], j["level"]) for j in lines] == [(500, "warn")], lines
    finally:
        quiet.stop()


def test_request_ids_are_unique():
    off = S.broker.log_size()
    for _ in range(20):
        S.broker.request("GET", "/healthz")
    lines = request_lines_after(off, 20)
    ids = [j["request_id"] for j in lines]
    assert len(set(ids)) == len(ids), f"repeated request ids: {ids}"


def test_route_is_a_template_not_the_raw_path():
    org = h.new_org()
    off = S.broker.log_size()
    ticket_like = h.rand_str(43)
    key_id = "0123456789abcdef"
    h.assert_error(S.broker.admin("GET", f"/v1/orgs/{org}/access-token?mode=test&x={ticket_like}"),
                   404, "not_connected")
    h.assert_error(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{key_id}"), 404, "not_found")
    assert h.Browser().get(S.broker.url(f"/setup?ticket={ticket_like}")).status == 400
    h.assert_error(S.broker.request("GET", f"/no/such/{ticket_like}"), 404, "not_found")
    lines = request_lines_after(off, 4)
    assert [(j["method"], j["route"], j["status"]) for j in lines[:3]] == [
        ("GET", "/v1/orgs/{org_id}/access-token", 404),
        ("DELETE", "/v1/admin/orgs/{org_id}/api-keys/{key_id}", 404),
        ("GET", "/setup", 400)], lines
    assert len(lines) == 4 and lines[3]["status"] == 404, lines
    assert lines[3]["route"] and "/no/such" not in lines[3]["route"], f"an unknown path is not a route: {lines[3]}"
    raw = "\n".join(json.dumps(j) for j in lines)
    assert ticket_like not in raw and key_id not in raw, f"a raw path or query reached the log: {raw}"


def test_browser_flow_requests_are_logged():
    off = S.broker.log_size()
    f = h.Flow(S.broker, S.sim, h.new_org(), "test").run()
    lines = request_lines_after(off, 6)
    pages = [j for j in lines if j.get("method") in ("GET", "POST") and j.get("status") in (200, 303)]
    assert len(pages) >= 5, lines
    assert any(j.get("org_id") == f.org for j in lines), "no request line of the flow names the org"


def _raw_request(port, request):
    """Send one raw request and read the answer until the broker closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        s.sendall(request)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    finally:
        s.close()


def test_outside_bytes_in_the_method_stay_inside_its_json_string():
    """The method is the client's bytes: a quote must not add a key to the line, a
    backslash must not make it invalid JSON, and nothing else breaks out of the string."""
    methods = [b'X","a":"b', b"A\\B", b"Q\\", b'P"', b"M\x01", b"U\xc3\xa9\xff"]
    off = S.broker.log_size()
    answered = 0
    for m in methods:
        ans = _raw_request(S.broker.port, m + b" /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if ans.startswith(b"HTTP/1.1 405"):   # routed: /healthz with another method
            answered += 1
    assert answered >= 4, "h2o refused the requests before they reached the router"
    h.wait_until(lambda: len([l for l in S.broker.log_lines(off) if '"status"' in l]) >= answered, 3,
                 what="the request lines")
    time.sleep(0.2)   # a line too many would show up now
    raw = [l for l in S.broker.log_lines(off) if l.strip()]
    lines = parse_lines(raw)   # every line is one JSON object
    assert all("\n" not in l.rstrip("\n") for l in raw)
    got = [j for j in lines if is_request_line(j)]
    assert len(got) == answered, f"{answered} answered requests, {len(got)} request lines: {raw}"
    assert not any("a" in j for j in got), f"a method added a key to the log line: {got}"
    logged = {j["method"] for j in got}
    for m in methods[:4]:
        assert m.decode() in logged, f"method {m!r} was not logged as itself: {logged}"


def test_every_log_line_is_json_with_ts_and_level():
    S.broker.request("GET", "/healthz")
    S.broker.request("GET", "/nope")
    h.wait_until(lambda: S.broker.log_size() > 0, 3, what="log output")
    lines = parse_lines(S.broker.log_lines(0))
    assert lines, "no log lines"
    for j in lines:
        assert "ts" in j and "level" in j, f"log line without ts/level: {j}"
        assert_ts(j["ts"])
        if not is_request_line(j):
            assert "msg" in j, f"an event line without msg: {j}"


def test_answers_do_not_wait_for_a_stderr_nobody_reads():
    """stderr is a pipe of one page that nobody reads (a stalled disk or log collector):
    the broker keeps answering, and once the pipe is read every request line arrives."""
    n = 1500   # about 300 KB of request lines: the pipe holds 4 KB, the broker's queue 2 MiB
    b = S.new_broker("unread", start=False)
    rfd, wfd = os.pipe()
    fcntl.fcntl(rfd, fcntl.F_SETPIPE_SZ, 4096)
    env = h._base_env()
    env.update(b.env)
    p = subprocess.Popen([h.broker_bin()], env=env, stdin=subprocess.DEVNULL, stdout=wfd, stderr=wfd,
                         cwd=h.REPO)
    os.close(wfd)
    try:
        h.wait_until(lambda: h.http_request("GET", b.base + "/healthz", timeout=2).status == 200, 15,
                     interval=0.05, what="broker GET /healthz 200")
        conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=2)   # a stall fails here
        for _ in range(n):
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b'{"status":"ok"}', (r.status,)
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        metrics = r.read().decode()
        assert r.status == 200 and "stb_log_lines_dropped_total 0\n" in metrics, metrics[-300:]
        conn.close()

        got = bytearray()
        def all_lines():
            while select.select([rfd], [], [], 0)[0]:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break
                got.extend(chunk)
            return got.count(b'"route":"/healthz"') >= n
        h.wait_until(all_lines, 10, what=f"{n} request lines from the pipe")
        parse_lines(got.decode().splitlines())   # whole JSON lines only
    finally:
        p.kill()
        p.wait()
        os.close(rfd)
