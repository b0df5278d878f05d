"""Malformed HTTP and request smuggling, over raw sockets (RFC 9112 §6.1, §6.3).

A request the broker and a front proxy could frame differently must never be answered
as two requests on one connection: conflicting Content-Length/Transfer-Encoding is
either rejected or answered once and the connection closed. Broken framing is a 400
and a closed connection. Huge headers are refused; slow clients are cut off by a header
read timeout without starving anyone else. After all of it the process is alive and
holds no extra descriptors.
"""

import threading
import time

import faultlib as F

h = F.h
S = None
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
HEADER_LIMIT = 64 * 1024          # the same bound as request bodies (CONTRACT §4)
READ_TIMEOUT_BOUND_S = 13.0       # h2o's 10 s request timeout plus slack


def setup_module():
    global S
    # one worker: the memory check below compares one allocator's steady state
    S = h.Stack("fhttp", **F.fault_env(BROKER_THREADS="1"))


def teardown_module():
    S.close()


def port():
    return S.broker.port


def assert_alive():
    r = S.broker.request("GET", "/healthz", timeout=3)
    assert r.status == 200 and r.elapsed < 1.0, f"the broker is not answering: {r.describe()}"
    assert S.broker.running(), "the broker died"


def assert_not_smuggled(name, raw):
    out, closed = F.raw_exchange(port(), raw, timeout=2)
    rs = F.parse_responses(out)
    assert rs, f"{name}: no answer at all"
    assert len(rs) == 1, (f"{name}: the hidden request was answered as a second request on the same "
                          f"connection (statuses {[r[0] for r in rs]}): request smuggling")
    assert closed, f"{name}: the connection stayed open after an ambiguous request (RFC 9112 §6.1)"


def test_content_length_with_transfer_encoding_closes_the_connection():
    for name, hdrs in (("CL then TE", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"),
                       ("TE then CL", b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n")):
        raw = (b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n0\r\n\r\n" + SMUGGLED)
        assert_not_smuggled(name, raw)
    assert_alive()


def test_conflicting_content_lengths_are_answered_once_and_close():
    """h2o 2.2.5 frames by the first Content-Length; what a front proxy might read as a
    second request must never be answered: one answer, then the connection closes."""
    for name, hdrs in (("two values", b"Content-Length: 3\r\nContent-Length: 30\r\n"),
                       ("list", b"Content-Length: 3, 30\r\n")):
        raw = b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\nabc" + SMUGGLED
        out, closed = F.raw_exchange(port(), raw, timeout=2)
        rs = F.parse_responses(out)
        assert rs and 400 <= rs[0][0] < 500, f"{name}: expected a 4xx, got {[r[0] for r in rs]}"
        assert len(rs) == 1 and closed, f"{name}: answered {len(rs)} requests, closed={closed}"
    assert_alive()


def test_invalid_content_length_and_chunking_are_400_and_close():
    bad = [b"Content-Length: -1\r\n", b"Content-Length: +3\r\n", b"Content-Length: 1e3\r\n",
           b"Content-Length: 0x10\r\n", b"Content-Length: 99999999999999999999999\r\n",
           b"Transfer-Encoding: xchunked\r\n", b"Transfer-Encoding: identity, chunked\r\n",
           b"Transfer-Encoding : chunked\r\n"]
    for hdr in bad:
        raw = b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + hdr + b"\r\n0\r\n\r\n" + SMUGGLED
        out, closed = F.raw_exchange(port(), raw, timeout=2)
        rs = F.parse_responses(out)
        assert rs and 400 <= rs[0][0] < 500 and rs[0][0] != 405, f"{hdr!r}: got {[r[0] for r in rs]}"
        assert len(rs) == 1 and closed, f"{hdr!r}: answered {len(rs)} requests, closed={closed}"
    for body in (b"zz\r\nabc\r\n0\r\n\r\n", b"-1\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"):
        raw = b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body + SMUGGLED
        out, closed = F.raw_exchange(port(), raw, timeout=2)
        rs = F.parse_responses(out)
        assert rs and rs[0][0] == 400 and len(rs) == 1 and closed, \
            f"bad chunking {body!r}: {[r[0] for r in rs]}, closed={closed}"
    assert_alive()


def test_garbage_request_lines_are_4xx_and_harmless():
    pid = S.broker.proc.pid
    fd0 = F.settle(pid)[0]
    corpus = [b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /setup?x=1\rSet-Cookie: a HTTP/1.1\r\n\r\n",
              b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,   # a TLS ClientHello
              b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"G\xffT / HTTP/1.1\r\n\r\n",
              b"GET http://evil.example/v1/admin/orgs/00D000000000001AAA/api-keys HTTP/1.1\r\nHost: x\r\n\r\n",
              b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", b"\r\n\r\n\r\n", b" " * 5000 + b"\r\n\r\n",
              b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n"]
    for raw in corpus:
        out, _ = F.raw_exchange(port(), raw, timeout=1)
        for st, _, _ in F.parse_responses(out):
            assert st < 500, f"{raw[:60]!r}: answered {st}"
    assert_alive()
    h.wait_until(lambda: F.fd_count(pid) <= fd0, 5, interval=0.1, what=f"fds back to {fd0}")


def test_huge_headers_are_refused_without_memory_growth():
    """1, 8 and 32 MiB headers: refused, connection closed. Two warm-up rounds first
    (h2o and malloc keep their large read buffers for reuse), then four more rounds must
    not grow RSS: a per-request leak of the buffered ~400 KiB would add well over 15 MiB."""
    pid = S.broker.proc.pid

    def one_round():
        for size in (1 << 20, 8 << 20, 32 << 20):
            for hdr in (b"X-A: ", b"Cookie: stb_setup=", b"Authorization: Bearer "):
                raw = (b"GET /v1/orgs/00D000000000001AAA/connections HTTP/1.1\r\nHost: x\r\n" + hdr
                       + b"a" * size + b"\r\n\r\n")
                out, closed = F.raw_exchange(port(), raw, timeout=2)
                st = F.first_status(out)
                assert closed and (st is None or 400 <= st < 500), f"{size} bytes of {hdr!r}: {st}, closed={closed}"
    one_round()
    one_round()
    before = F.settle(pid)
    for _ in range(4):
        one_round()
    assert_alive()
    F.assert_no_leak(pid, before, "huge headers", rss_slack_kb=10 * 1024)


def test_header_block_over_64k_is_refused():
    """Bodies are capped at 64 KiB; headers must not be a way around that (h2o 2.2.5 alone
    buffers up to ~400 KiB of headers per connection)."""
    for size in (HEADER_LIMIT + 1024, 200 * 1024):
        raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * size + b"\r\n\r\n"
        out, closed = F.raw_exchange(port(), raw, timeout=2)
        st = F.first_status(out)
        assert st in (400, 413, 431) or (st is None and closed), \
            f"a {size}-byte header was accepted (status {st}); limit {HEADER_LIMIT} bytes"
    assert_alive()


def test_slow_clients_are_cut_off_by_a_read_timeout():
    """Slow headers (one byte every 0.5 s), an idle connection, a slow body, and 100 idle
    connections at once: each is closed within the header read timeout, and meanwhile
    everyone else is answered at once."""
    pid = S.broker.proc.pid
    fd0 = F.settle(pid)[0]
    results = {}

    def run(name, chunks, pace):
        t0 = time.monotonic()
        out, closed = F.raw_exchange(port(), chunks, timeout=READ_TIMEOUT_BOUND_S + 2, pace=pace)
        results[name] = (time.monotonic() - t0, closed, F.first_status(out))

    jobs = [("slow headers", [b"GET /healthz HTTP/1.1\r\n"] + [b"X"] * 60, 0.5),
            ("idle", b"", None),
            ("slow body", [b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"] + [b"a"] * 60, 0.5)]
    threads = [threading.Thread(target=run, args=j, daemon=True) for j in jobs]
    idle = []
    for _ in range(100):
        idle.append(F.socket.create_connection(("127.0.0.1", port()), timeout=READ_TIMEOUT_BOUND_S + 3))
    for t in threads:
        t.start()
    try:
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:   # the server keeps answering others meanwhile
            assert_alive()
        for t in threads:
            t.join(READ_TIMEOUT_BOUND_S + 20)
        for s in idle:   # every idle connection is closed by the server, in time
            s.settimeout(max(0.1, READ_TIMEOUT_BOUND_S - 3))
            try:
                assert s.recv(1) == b"", "an idle connection received data"
            except F.socket.timeout:
                raise AssertionError("an idle connection was not closed within the read timeout") from None
            except OSError:
                pass
    finally:
        for s in idle:
            s.close()
    for name, (took, closed, st) in results.items():
        assert closed, f"{name}: the server never closed the connection"
        assert took <= READ_TIMEOUT_BOUND_S, f"{name}: closed only after {took:.1f}s"
        assert st is None or st in (400, 408), f"{name}: answered {st}"
    assert_alive()
    h.wait_until(lambda: F.fd_count(pid) <= fd0, 5, interval=0.1, what=f"fds back to {fd0}")
