"""faultlib.py — what the fault and abuse suites add to tests/it/harness.py.

  * process accounting: open file descriptors (/proc/<pid>/fd) and resident memory
    (VmRSS in /proc/<pid>/status), measured after a bounded settle period;
  * a Redis with an append-only file (fsync always), so a SIGKILLed Redis comes back
    with every acknowledged write, as a production Redis with AOF does;
  * a steady wrk load whose Lua script counts every status code (skipped, with the
    reason, when wrk is not installed);
  * raw HTTP/1.1 over a socket, for requests http.client refuses to send;
  * snapshots of the stored connections, to prove that nothing was lost or corrupted;
  * the set-up of the rate-limit modules (LimitedBrokers: one worker thread, the limits a
    test sets) and their requests from a chosen source address, with the 429 they expect.

Everything talks to 127.0.0.1 only. Waiting is always a polled condition with a
deadline (harness.wait_until); the only fixed waits are the trickle pace of a
slow-client test, which is the stimulus itself.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

FAULT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(FAULT_DIR))
sys.path.insert(0, os.path.join(REPO, "tests", "it"))

import harness as h  # noqa: E402  (tests/it/harness.py, reused as is)

ANSWER_BOUND_S = 1.5      # "Redis down: 503 within 1 s" plus scheduling slack
UPSTREAM_MS = 2000        # BROKER_UPSTREAM_TIMEOUT_MS used by these suites
UPSTREAM_BOUND_S = UPSTREAM_MS / 1000 + 1.0 + 1.0   # Stripe deadline (+900 ms) + slack
FD_SLACK = 0              # descriptors must come back exactly
RSS_SLACK_KB = 6 * 1024   # allocator arenas grow a little under a burst; a leak grows more


# ===== /proc accounting =====

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    """{fd: target} for a readable diagnostic when the count differs."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def settle(pid, timeout=10.0, quiet_s=0.6):
    """Wait until the fd count has not changed for quiet_s seconds and RSS moves less
    than 256 KiB in that time (bounded by timeout); returns (fds, rss_kb)."""
    deadline = time.monotonic() + timeout
    last = (fd_count(pid), rss_kb(pid))
    since = time.monotonic()
    while True:
        time.sleep(0.1)
        cur = (fd_count(pid), rss_kb(pid))
        if cur[0] != last[0] or abs(cur[1] - last[1]) > 256:
            last, since = cur, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return cur
        if time.monotonic() >= deadline:
            return cur


def socket_peer_ports(pid):
    """{socket inode: remote port} of the process's TCP sockets (IPv4 and IPv6)."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    out[parts[9]] = int(parts[2].rsplit(":", 1)[1], 16)
        except OSError:
            pass
    return out


def cached_upstream_sockets(pid, before_map, upstream_port):
    """New descriptors that are TCP connections to the Stripe simulator: libcurl keeps
    a bounded cache of idle keep-alive connections, which is not a leak."""
    peers = socket_peer_ports(pid)
    n = 0
    for fd, target in fd_targets(pid).items():
        if before_map.get(fd) == target:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m and peers.get(m.group(1)) == upstream_port:
            n += 1
    return n


def assert_no_leak(pid, before, label, before_fds_map=None, rss_slack_kb=RSS_SLACK_KB,
                   upstream_port=None, upstream_cache_max=2):
    """Compare a settled (fds, rss) with `before`; fds must come back (awaited, bounded).
    With upstream_port, up to upstream_cache_max new idle connections to Stripe (libcurl's
    connection cache, one per worker) are allowed; any other new descriptor is a leak."""
    def fds_back():
        allowed = before[0] + FD_SLACK
        if upstream_port is not None and before_fds_map is not None:
            allowed += min(upstream_cache_max, cached_upstream_sockets(pid, before_fds_map, upstream_port))
        return fd_count(pid) <= allowed
    try:
        h.wait_until(fds_back, 10, interval=0.1, what=f"{label}: fd count back to {before[0]}")
    except AssertionError:
        extra = ""
        if before_fds_map is not None:
            now = fd_targets(pid)
            new = {k: v for k, v in now.items() if before_fds_map.get(k) != v}
            extra = f"; new descriptors: {dict(list(new.items())[:12])}"
        raise AssertionError(f"{label}: file descriptors leaked: {before[0]} before, "
                             f"{fd_count(pid)} after{extra}") from None
    after = settle(pid)
    if sanitized():
        return after    # ASan's quarantine holds freed memory (up to 256 MiB): RSS says nothing
    assert after[1] - before[1] <= rss_slack_kb, \
        f"{label}: RSS grew from {before[1]} KiB to {after[1]} KiB (bound +{rss_slack_kb} KiB)"
    return after


def sanitized():
    return "asan" in h.broker_bin() or os.environ.get("IT_SANITIZER") == "1"


# ===== Redis with an append-only file =====

class AofRedis(h.RedisServer):
    """harness.RedisServer, but persistent the way production is: appendonly yes,
    appendfsync always. kill() is a SIGKILL (no save); start() replays the AOF."""

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "yes", "--appendfsync", "always",
               "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no",
               "--logfile", self.log, "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}; see {self.log}")
            c = h.RedisClient(self.port, timeout=1.0)
            try:
                # LOADING errors while the AOF replays count as "not yet"
                return c.command("PING") == "PONG"
            finally:
                c.close()
        h.wait_until(ready, h.REDIS_START_TIMEOUT_S, what=f"redis PING on port {self.port}")

    def kill(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()
        h.wait_until(lambda: not h.port_is_listening(self.port), 5, what="redis port closed")


class AofStack(h.Stack):
    """harness.Stack with an AofRedis (same fixture otherwise)."""

    def __init__(self, name, broker=True, sim=True, **broker_overrides):
        orig = h.RedisServer
        h.RedisServer = AofRedis
        try:
            super().__init__(name, broker=broker, sim=sim, **broker_overrides)
        finally:
            h.RedisServer = orig


def fault_env(**kw):
    """The broker environment defaults of these suites."""
    env = {"BROKER_UPSTREAM_TIMEOUT_MS": str(UPSTREAM_MS), "BROKER_LOG_LEVEL": "warn",
           # the fault suites measure failure behaviour, not the rate limiter
           "BROKER_RATE_LIMIT_IP_PER_MIN": "1000000", "BROKER_RATE_LIMIT_ORG_PER_S": "1000000"}
    env.update(kw)
    return env


# ===== Stored connections =====

def conn_snapshot(redis_client, prefix="stb:"):
    """{key: value} of every stored connection, API key and webhook secret."""
    out = {}
    for k in redis_client.keys():
        ks = k.decode() if isinstance(k, bytes) else k
        if ks.startswith((prefix + "conn:", prefix + "key:", prefix + "whsec:")):
            out[ks] = redis_client.command("GET", k)
    return out


def assert_snapshot_kept(before, after, label):
    lost = sorted(set(before) - set(after))
    assert not lost, f"{label}: stored records lost: {lost}"
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert not changed, f"{label}: stored records changed: {changed}"


# ===== wrk =====

WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then for k, v in pairs(s) do agg[tostring(k)] = (agg[tostring(k)] or 0) + v end end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s": %d', k, v)) end
  io.write(string.format('WRKJSON {"requests": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "status_errors": %d, "latency_max_us": %d, "statuses": {%s}}\n',
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status, latency.max, table.concat(parts, ", ")))
end
"""


def wrk_available():
    return shutil.which("wrk") is not None


class Wrk:
    """A background wrk run: GET url with headers for `seconds`; result() waits for it
    and returns the counts (statuses, socket errors, timeouts, max latency)."""

    def __init__(self, url, seconds=4, connections=8, threads=2, headers=None, timeout_s=2):
        self.dir = tempfile.mkdtemp(prefix="stb-wrk-")
        script = os.path.join(self.dir, "count.lua")
        with open(script, "w") as f:
            f.write(WRK_LUA)
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout",
               f"{timeout_s}s", "-s", script]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(url)
        self.seconds = seconds
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._res = None

    def result(self):
        if self._res is None:
            try:
                out, _ = self.proc.communicate(timeout=self.seconds + 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
                raise AssertionError(f"wrk did not finish: {out[-500:]}")
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)
            m = re.search(r"^WRKJSON (.*)$", out, re.M)
            assert m, f"wrk printed no summary: {out[-800:]}"
            self._res = json.loads(m.group(1))
            self._res["raw"] = out
        return self._res

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def assert_wrk(res, allowed_statuses, label, max_latency_s=2.0):
    """No socket errors, no timeouts, only the allowed statuses, nothing slower than the
    bound, and real traffic (at least 100 requests)."""
    st = {int(k): v for k, v in res["statuses"].items()}
    assert res["requests"] >= 100, f"{label}: the load sent only {res['requests']} requests"
    socket_errors = {k: res[k] for k in ("connect", "read", "write", "timeout") if res[k]}
    assert not socket_errors, f"{label}: wrk saw socket errors {socket_errors} (statuses {st})"
    bad = {k: v for k, v in st.items() if k not in allowed_statuses}
    assert not bad, f"{label}: unexpected statuses under load {bad} (all: {st})"
    assert res["latency_max_us"] <= max_latency_s * 1e6, \
        f"{label}: slowest answer took {res['latency_max_us'] / 1e6:.2f}s (bound {max_latency_s}s)"
    return st


class Load:
    """The steady load of a fault test: wrk when installed, else nothing (reported)."""

    def __init__(self, broker, path, token, seconds=4, connections=8):
        self.wrk = None
        if wrk_available():
            self.wrk = Wrk(broker.url(path), seconds=seconds, connections=connections,
                           headers={"Authorization": f"Bearer {token}"})
        else:
            print("# wrk is not installed: this test runs without the steady load", file=sys.stderr)

    def check(self, allowed, label, max_latency_s=2.0):
        if self.wrk is None:
            return None
        return assert_wrk(self.wrk.result(), allowed, label, max_latency_s)

    def stop(self):
        if self.wrk is not None:
            self.wrk.stop()


# ===== Raw HTTP =====

def raw_exchange(port, data, timeout=3.0, pace=None, host="127.0.0.1", source=None):
    """Send bytes (optionally in pieces with pace seconds between them), then read until
    the server closes or `timeout` passes with nothing new. Returns (bytes, closed)."""
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    chunks = data if isinstance(data, list) else [data]
    buf = b""
    closed = False
    try:
        for i, c in enumerate(chunks):
            try:
                s.sendall(c)
            except OSError:
                closed = True
                break
            if pace and i + 1 < len(chunks):
                time.sleep(pace)
        s.settimeout(timeout)
        while not closed:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not d:
                closed = True
                break
            buf += d
    finally:
        s.close()
    return buf, closed


def parse_responses(data):
    """Split raw bytes into HTTP/1.1 responses: [(status, {lower name: [values]}, body)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            break
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
        status = int(m.group(1))
        if "content-length" in hdrs:
            n = int(hdrs["content-length"][0])
            body, data = rest[:n], rest[n:]
        elif "chunked" in ",".join(hdrs.get("transfer-encoding", [])).lower():
            body = b""
            while True:
                line, _, rest = rest.partition(b"\r\n")
                try:
                    n = int(line.split(b";")[0], 16)
                except ValueError:
                    n = 0
                if n == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, hdrs, body))
    return out


def first_status(data):
    r = parse_responses(data)
    return r[0][0] if r else None


# ===== Rate-limit suites =====

class LimitedBrokers:
    """The set-up of the rate-limit modules (test_abuse_limits*, test_review_findings_limits):
    Redis and the simulator for the whole module, and brokers that each test starts with the
    limits it sets and stops itself. Every broker has one worker thread, so the counts are
    exact. A limit a test does not set is off (fault_env's), or the broker's own default
    with default_limits=True; env holds the module's other variables (NAME=None: not set)."""

    def __init__(self, name, default_limits=False, **env):
        self.stack = h.Stack(name, broker=False)
        self.default_limits = default_limits
        self.env = env

    @property
    def sim(self):
        return self.stack.sim

    def start(self, label, **env):
        base = fault_env(BROKER_THREADS="1")
        if self.default_limits:
            for k in ("BROKER_RATE_LIMIT_IP_PER_MIN", "BROKER_RATE_LIMIT_ORG_PER_S"):
                base.pop(k)
        base.update(self.env)
        base.update(env)
        b = self.stack.new_broker(label, **{k: v for k, v in base.items() if v is not None})
        self.stack.broker = self.stack.broker or b   # later ones share its keyring and admin token
        return b

    def stop(self, b):
        b.stop()
        if b in self.stack.extra:
            self.stack.extra.remove(b)
        if self.stack.broker is b:
            self.stack.broker = None

    def close(self):
        self.stack.close()


class Client:
    """One keep-alive connection to broker b from a chosen source address."""

    def __init__(self, b, source="127.0.0.1"):
        self.c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=5, source_address=(source, 0))

    def get(self, path, token=None, headers=None):
        """GET path (with the bearer token, if any) → (status, {lower-case header: value}, body)."""
        hd = dict(headers or {})
        if token:
            hd["Authorization"] = f"Bearer {token}"
        self.c.request("GET", path, headers=hd)
        r = self.c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def close(self):
        self.c.close()


def one(b, path, token=None, source="127.0.0.1", headers=None):
    """One GET on a new connection from source: (status, headers, body)."""
    c = Client(b, source)
    try:
        return c.get(path, token, headers)
    finally:
        c.close()


def burst(b, path, n, token=None):
    """n GETs on one keep-alive connection: each (status, headers, body), in order."""
    c = Client(b)
    try:
        return [c.get(path, token) for _ in range(n)]
    finally:
        c.close()


def assert_429(res, page=False):
    """res (status, headers, body) is the contract's 429: Retry-After of 1 to 60 s, and a
    setup page (page) or the JSON rate_limited error."""
    status, hdrs, body = res
    assert status == 429, f"expected 429, got {status}: {body[:200]!r}"
    ra = hdrs.get("retry-after", "")
    assert ra.isdigit() and 1 <= int(ra) <= 60, f"Retry-After is {ra!r}"
    if page:
        assert hdrs.get("content-type", "").startswith("text/html"), hdrs
        assert hdrs.get("x-frame-options") == "DENY" and "content-security-policy" in hdrs, hdrs
    else:
        assert b'"rate_limited"' in body and hdrs.get("content-type", "").startswith("application/json"), body[:200]


# ===== Threads =====

class Background:
    """Run fn() in a thread; join() returns its result or re-raises its exception."""

    def __init__(self, fn):
        self.res = self.exc = None
        self.t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.t.start()

    def _run(self, fn):
        try:
            self.res = fn()
        except BaseException as e:  # noqa: BLE001
            self.exc = e

    def join(self, timeout=30):
        self.t.join(timeout)
        assert not self.t.is_alive(), "a background request did not finish"
        if self.exc:
            raise self.exc
        return self.res
