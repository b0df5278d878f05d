"""harness.py — real processes for the black-box integration tests.

Starts and stops the three real components a test talks to:

  * a redis-server (Debian's) on a free port, no persistence configured, in a temp dir;
  * the Stripe simulator (tests/fakes/stripe_sim.py), readiness via its --ready-file;
  * the broker binary ($BROKER_BIN, default build/stripe-token-broker) with a clean
    environment built from the contract's variables; its stderr goes to a log file.

Readiness is always a polled condition with a bounded deadline (PING, the ready file,
GET /healthz), never a bare sleep. Everything talks real HTTP/1.1 through http.client,
redirects are never followed, and a small cookie jar plays the admin's browser.

Every sensitive value a test sees (tickets, states, codes, cookies, tokens, API keys,
secrets) is recorded in SEEN so that the secrets-at-rest tests can look for it in Redis
and in the broker's log.

The same start-up serves the other scripts that need these processes: start_redis(),
start_sim() and start_broker(env) (section "Start-up") return handles that are ready
and whose close() stops them; tests/k8s/test_sigterm.py and deploy/image/smoke.py import
them, and tests/e2e/run.sh runs `python3 tests/it/harness.py up …`, which starts all three
and stops them on SIGTERM.
"""

import base64
import html.parser
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timezone

IT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(IT_DIR))
SIM_PATH = os.path.join(REPO, "tests", "fakes", "stripe_sim.py")
PYTHON = sys.executable or "/usr/bin/python3"

TEST_CLIENT_ID = "ca_test_sim"
TEST_SECRET_KEY = "sk_test_platform_sim"
LIVE_CLIENT_ID = "ca_live_sim"
LIVE_SECRET_KEY = "sk_live_platform_sim"

HTTP_TIMEOUT_S = 10.0
BROKER_START_TIMEOUT_S = 20.0   # ASan builds start slower
REDIS_START_TIMEOUT_S = 10.0
SIM_START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 12.0           # the contract allows 10 s of draining on SIGTERM

ALNUM = string.ascii_letters + string.digits

# Sensitive values seen during this process, by category (see module doc).
SEEN = {}


def remember(category, value):
    """Record a sensitive value (a str) under a category for the at-rest checks."""
    if isinstance(value, str) and value:
        SEEN.setdefault(category, set()).add(value)


# ===== Small utilities =====

def log_dir():
    """The folder for this run's process logs (created on first use)."""
    d = os.environ.get("IT_LOG_DIR")
    if not d:
        d = tempfile.mkdtemp(prefix="stb-it-logs-")
        os.environ["IT_LOG_DIR"] = d
    os.makedirs(d, exist_ok=True)
    return d


def broker_bin():
    b = os.environ.get("BROKER_BIN", "build/stripe-token-broker")
    if not os.path.isabs(b):
        b = os.path.join(REPO, b)
    return b


def free_port():
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_is_listening(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(cond, timeout, interval=0.02, what="condition"):
    """Poll cond() until it returns a truthy value or timeout seconds pass.
    Returns the value; raises AssertionError naming `what` on timeout. Exceptions
    raised by cond count as "not yet" (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
            last_exc = None
        except Exception as e:  # noqa: BLE001 - polling tolerates anything
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(interval)


def rand_str(n, alphabet=ALNUM):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def org18(org15):
    """The case-safe 18-character form of a 15-character Salesforce id (STRIPE.md)."""
    assert len(org15) == 15, org15
    table = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    suffix = ""
    for i in range(3):
        v = 0
        for j, c in enumerate(org15[i * 5:(i + 1) * 5]):
            if "A" <= c <= "Z":
                v |= 1 << j
        suffix += table[v]
    return org15 + suffix


def new_org15():
    """A random, valid 15-character org id with mixed case (so case matters)."""
    while True:
        body = rand_str(12)
        if any(c.isupper() for c in body) and any(c.islower() for c in body):
            return "00D" + body


def new_org():
    """A random org id in canonical 18-character form."""
    return org18(new_org15())


RFC3339_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]00:00)$")


def parse_rfc3339(s):
    """Parse an RFC 3339 UTC timestamp; raise AssertionError when it is not one."""
    assert isinstance(s, str), f"timestamp is not a string: {s!r}"
    m = RFC3339_RE.match(s)
    assert m, f"not an RFC 3339 UTC timestamp: {s!r}"
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    return datetime(y, mo, d, h, mi, se, tzinfo=timezone.utc)


def assert_recent(ts, slack_s=300):
    t = parse_rfc3339(ts)
    now = datetime.now(timezone.utc)
    delta = abs((now - t).total_seconds())
    assert delta <= slack_s, f"timestamp {ts} is {delta:.0f}s away from now"
    return t


# ===== HTTP =====

class Resp:
    """One HTTP response, fully read."""

    def __init__(self, method, url, status, reason, headers, body, elapsed):
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value), in order
        self.body = body
        self.elapsed = elapsed
        self._json = None

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise AssertionError(f"response is not JSON: {self.describe()}") from None
        return self._json

    def describe(self):
        path = urllib.parse.urlsplit(self.url)
        p = path.path + ("?" + path.query if path.query else "")
        body = self.text
        if len(body) > 300:
            body = body[:300] + "…"
        hdrs = {k: v for k, v in self.headers
                if k.lower() in ("content-type", "location", "www-authenticate", "allow",
                                 "retry-after")}
        return f"{self.method} {p} -> {self.status} {hdrs} {body!r}"

    __repr__ = describe


def http_request(method, url, headers=None, body=None, timeout=HTTP_TIMEOUT_S):
    """Send one request on a new connection; never follows redirects."""
    u = urllib.parse.urlsplit(url)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, str):
        body = body.encode("utf-8")
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        elapsed = time.monotonic() - t0
        return Resp(method, url, r.status, r.reason, list(r.getheaders()), data, elapsed)
    finally:
        conn.close()


def together(calls):
    """Run the callables at the same moment (one thread each); results in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    barrier = threading.Barrier(len(calls))

    def run(fn):
        barrier.wait(timeout=10)
        return fn()
    with ThreadPoolExecutor(max_workers=len(calls)) as ex:
        return list(ex.map(run, calls))


def assert_json_headers(r):
    ct = r.header("Content-Type") or ""
    assert ct.split(";")[0].strip().lower() == "application/json", \
        f"Content-Type is {ct!r}, not application/json: {r.describe()}"
    cc = (r.header("Cache-Control") or "").lower()
    assert "no-store" in cc, f"Cache-Control is {cc!r}, lacks no-store: {r.describe()}"


def assert_status(r, status):
    assert r.status == status, f"expected HTTP {status}, got {r.describe()}"


def assert_error(r, status, code):
    """The response is the contract's error shape with this status and code."""
    assert r.status == status, f"expected {status} {code}, got {r.describe()}"
    j = r.json()
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), \
        f"not the error shape: {r.describe()}"
    assert j["error"].get("code") == code, \
        f"expected error code {code!r}, got {j['error'].get('code')!r}: {r.describe()}"
    msg = j["error"].get("message")
    assert isinstance(msg, str) and msg.strip(), f"error without message: {r.describe()}"
    assert_json_headers(r)
    return j


# ===== Browser: cookie jar =====

def _default_cookie_path(req_path):
    if not req_path.startswith("/") or req_path.count("/") <= 1:
        return "/"
    return req_path[:req_path.rfind("/")]


def _path_matches(cookie_path, req_path):
    if req_path == cookie_path:
        return True
    if req_path.startswith(cookie_path):
        return cookie_path.endswith("/") or req_path[len(cookie_path)] == "/"
    return False


def parse_set_cookie(header):
    """'n=v; Path=/; HttpOnly' -> (name, value, {attr_lower: value_or_True})."""
    parts = [p.strip() for p in header.split(";")]
    name, _, value = parts[0].partition("=")
    attrs = {}
    for p in parts[1:]:
        if not p:
            continue
        k, eq, v = p.partition("=")
        attrs[k.strip().lower()] = v.strip() if eq else True
    return name.strip(), value.strip(), attrs


class Browser:
    """An admin's browser: a cookie jar (host-scoped, honouring Path, Max-Age and
    Expires) and requests that never follow redirects."""

    def __init__(self):
        self.jar = {}           # (host, name, path) -> value
        self.set_cookies = []   # every raw Set-Cookie header received
        self.history = []

    def cookie_header(self, host, path):
        pairs = []
        for (h, name, cpath), value in sorted(self.jar.items(), key=lambda kv: -len(kv[0][2])):
            if h == host and _path_matches(cpath, path):
                pairs.append(f"{name}={value}")
        return "; ".join(pairs)

    def _store(self, host, req_path, raw):
        self.set_cookies.append(raw)
        name, value, attrs = parse_set_cookie(raw)
        remember("cookie", value)
        path = attrs.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            path = _default_cookie_path(req_path)
        key = (host, name, path)
        expired = False
        if "max-age" in attrs:
            try:
                expired = int(attrs["max-age"]) <= 0
            except (TypeError, ValueError):
                pass
        elif isinstance(attrs.get("expires"), str):
            try:
                from email.utils import parsedate_to_datetime
                expired = parsedate_to_datetime(attrs["expires"]) <= datetime.now(timezone.utc)
            except (TypeError, ValueError):
                pass
        if expired or value == "" and "max-age" in attrs:
            self.jar.pop(key, None)
        else:
            self.jar[key] = value

    def request(self, method, url, body=None, headers=None, form=None):
        u = urllib.parse.urlsplit(url)
        hdrs = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        ck = self.cookie_header(u.hostname, u.path or "/")
        if ck:
            hdrs["Cookie"] = ck
        r = http_request(method, url, headers=hdrs, body=body)
        for raw in r.header_all("Set-Cookie"):
            self._store(u.hostname, u.path or "/", raw)
        self.history.append(r)
        return r

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post_form(self, url, form, **kw):
        return self.request("POST", url, form=form, **kw)


class _FormParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []     # {"action","method","inputs": {name: value}, "selects": {...}}
        self.links = []     # href values (unescaped)
        self._form = None
        self._select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {"action": a.get("action"), "method": (a.get("method") or "get").lower(),
                          "inputs": {}, "all_inputs": [], "options": {}}
            self.forms.append(self._form)
        elif tag == "a" and a.get("href") is not None:
            self.links.append(a.get("href"))
        elif tag == "input" and self._form is not None:
            self._form["all_inputs"].append(a)
            name = a.get("name")
            if name is not None:
                typ = (a.get("type") or "text").lower()
                if typ in ("radio", "checkbox"):
                    self._form["options"].setdefault(name, []).append(a.get("value"))
                    if "checked" in a:
                        self._form["inputs"][name] = a.get("value")
                else:
                    self._form["inputs"][name] = a.get("value") or ""
        elif tag == "select" and self._form is not None:
            self._select = a.get("name")
        elif tag == "option" and self._form is not None and self._select:
            self._form["options"].setdefault(self._select, []).append(a.get("value"))
            if "selected" in a:
                self._form["inputs"][self._select] = a.get("value")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


def parse_page(html_text):
    p = _FormParser()
    p.feed(html_text)
    p.close()
    return p


def find_form(page_html, action_suffix):
    """The first form whose action ends with action_suffix (None when absent)."""
    for f in parse_page(page_html).forms:
        if (f["action"] or "").split("?")[0].endswith(action_suffix):
            return f
    return None


def csrf_of(page_html):
    """The value of <input type="hidden" name="csrf" value="…"> on the page."""
    for f in parse_page(page_html).forms:
        for a in f["all_inputs"]:
            if a.get("name") == "csrf" and (a.get("type") or "").lower() == "hidden":
                v = a.get("value") or ""
                remember("csrf", v)
                return v
    raise AssertionError(f"no hidden csrf input on the page: {page_html[:500]!r}")


# ===== Redis =====

class RedisError(Exception):
    pass


class RedisClient:
    """A minimal RESP2 client (one socket, blocking, with a timeout)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RedisError(f"unexpected RESP type {line!r}")

    def keys(self):
        cursor = b"0"
        found = []
        while True:
            cursor, batch = self.command("SCAN", cursor, "COUNT", 1000)
            found.extend(batch)
            if cursor in (b"0", "0"):
                return sorted(set(found))

    def dump_all(self):
        """{key: (type, [values…])} for every key, values read by type."""
        out = {}
        for k in self.keys():
            t = self.command("TYPE", k)
            if t == "string":
                vals = [self.command("GET", k)]
            elif t == "hash":
                vals = self.command("HGETALL", k)
            elif t == "list":
                vals = self.command("LRANGE", k, 0, -1)
            elif t == "set":
                vals = self.command("SMEMBERS", k)
            elif t == "zset":
                vals = self.command("ZRANGE", k, 0, -1, "WITHSCORES")
            elif t == "stream":
                vals = _flatten(self.command("XRANGE", k, "-", "+"))
            elif t == "none":
                continue
            else:
                vals = [self.command("DUMP", k)]
            out[k] = (t, [v for v in _flatten(vals) if v is not None])
        return out

    def all_bytes(self):
        """Every key and every value in the database, as a list of bytes."""
        items = []
        for k, (_, vals) in self.dump_all().items():
            items.append(k)
            for v in vals:
                items.append(v if isinstance(v, bytes) else str(v).encode())
        return items


def _flatten(x):
    if isinstance(x, list):
        out = []
        for y in x:
            out.extend(_flatten(y))
        return out
    return [x]


class RedisServer:
    """A real redis-server on a fixed free port in its own temp dir."""

    def __init__(self, name="redis"):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="stb-it-redis-")
        self.log = os.path.join(log_dir(), f"{name}.redis.log")
        self.proc = None
        self.start()

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self.dir,
               "--daemonize", "no", "--protected-mode", "no", "--logfile", self.log]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}; see {self.log}")
            c = RedisClient(self.port, timeout=1.0)
            try:
                return c.command("PING") == "PONG"
            finally:
                c.close()
        wait_until(ready, REDIS_START_TIMEOUT_S, what=f"redis PING on port {self.port}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self):
        return RedisClient(self.port)

    def stop(self, keep_data=True):
        """Stop redis. keep_data: SHUTDOWN SAVE so a restart comes back with the data
        (as a production Redis with persistence would); else SIGKILL."""
        if not self.running():
            return
        if keep_data:
            try:
                c = RedisClient(self.port, timeout=5.0)
                try:
                    c.command("SHUTDOWN", "SAVE")
                except (ConnectionError, OSError, RedisError):
                    pass
                c.close()
            except OSError:
                pass
        else:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        wait_until(lambda: not port_is_listening(self.port), 5, what="redis port closed")

    def restart(self):
        self.stop()
        self.start()

    def ensure_running(self):
        if not self.running():
            self.start()

    def close(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ===== Stripe simulator =====

class Sim:
    """The Stripe simulator process and its control API."""

    def __init__(self, name="sim", authorize="approve"):
        self.dir = tempfile.mkdtemp(prefix="stb-it-sim-")
        self.ready_file = os.path.join(self.dir, "ready")
        self.log = os.path.join(log_dir(), f"{name}.sim.log")
        self.authorize = authorize
        self.proc = None
        self.port = None
        self.start()

    def start(self):
        assert os.path.exists(SIM_PATH), f"the Stripe simulator {SIM_PATH} does not exist"
        cmd = [PYTHON, SIM_PATH, "--port", "0", "--ready-file", self.ready_file,
               "--test-client-id", TEST_CLIENT_ID, "--test-secret-key", TEST_SECRET_KEY,
               "--live-client-id", LIVE_CLIENT_ID, "--live-secret-key", LIVE_SECRET_KEY,
               "--authorize", self.authorize]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     env=_base_env(), cwd=REPO)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"simulator exited with {self.proc.returncode}; see {self.log}")
            if not os.path.exists(self.ready_file):
                return None
            with open(self.ready_file) as f:
                txt = f.read().strip()
            return _port_from_ready(txt)
        self.port = wait_until(ready, SIM_START_TIMEOUT_S, what="the simulator's ready file")
        wait_until(lambda: http_request("GET", self.url("/_sim/stats"), timeout=2).status == 200,
                   SIM_START_TIMEOUT_S, what="GET /_sim/stats")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def _call(self, method, path, body=None):
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        r = http_request(method, self.url(path), headers=hdrs, body=data)
        assert 200 <= r.status < 300, f"simulator control call failed: {r.describe()}"
        try:
            return r.json() if r.body.strip() else {}
        except AssertionError:
            return {}

    def stats(self):
        s = self._call("GET", "/_sim/stats")
        for g in s.get("grants") or []:
            _remember_grant(g)
        for code in (s.get("codes_used") or {}):
            remember("code", code)
        return s

    def calls(self, name):
        return int((self.stats().get("calls") or {}).get(name, 0))

    def reset(self):
        self._call("POST", "/_sim/reset")
        try:
            self._call("DELETE", "/_sim/faults")
        except AssertionError:
            pass
        self.config(authorize=self.authorize)

    def config(self, **kw):
        return self._call("POST", "/_sim/config", kw)

    def fault(self, **kw):
        return self._call("POST", "/_sim/faults", kw)

    def token_active(self, access_token):
        j = self._call("POST", "/_sim/token-info", {"access_token": access_token})
        return j.get("active")

    def issue_code(self, client_id):
        j = self._call("POST", "/_sim/issue-code", {"client_id": client_id})
        remember("code", j.get("code"))
        return j.get("code")

    def requests(self, since=0):
        """The payment API calls received after record `since`, oldest first (GET /_sim/requests:
        method, path, query, headers as received, body, account, mode, status, request_id,
        replayed, fault); the access tokens they carried are remembered."""
        reqs = self._call("GET", f"/_sim/requests?since={int(since)}").get("requests") or []
        for r in reqs:
            for k, v in r.get("headers") or []:
                if k.lower() == "authorization" and v.startswith("Bearer "):
                    if v[7:] not in (TEST_SECRET_KEY, LIVE_SECRET_KEY):
                        remember("access_token", v[7:])
        return reqs

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _port_from_ready(txt):
    if not txt:
        return None
    try:
        j = json.loads(txt)
    except ValueError:
        j = None
    if isinstance(j, int):
        return j
    if isinstance(j, dict):
        if isinstance(j.get("port"), int):
            return j["port"]
        for k in ("url", "base", "base_url"):
            if isinstance(j.get(k), str):
                p = urllib.parse.urlsplit(j[k]).port
                if p:
                    return p
        return None
    m = re.search(r"(\d+)\s*$", txt)
    return int(m.group(1)) if m else None


def _remember_grant(g):
    if isinstance(g, dict):
        for k, v in g.items():
            if isinstance(v, (dict, list)):
                _remember_grant(v)
            elif isinstance(v, str):
                if k in ("access_token",) or v.startswith(("sk_test_", "sk_live_")):
                    if v not in (TEST_SECRET_KEY, LIVE_SECRET_KEY):
                        remember("access_token", v)
                elif k in ("refresh_token",) or v.startswith("rt_"):
                    remember("refresh_token", v)
                elif k in ("stripe_publishable_key",) or v.startswith("pk_"):
                    remember("publishable_key", v)
                elif k == "code" or v.startswith("ac_"):
                    remember("code", v)
    elif isinstance(g, list):
        for x in g:
            _remember_grant(x)


# ===== Broker =====

def _base_env():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TMPDIR", "HOME"):
        if k in os.environ:
            env[k] = os.environ[k]
    # Memory errors and undefined behaviour are what the IT suite looks for; leaks at
    # exit are the unit tests' business (and libraries leak on purpose at exit).
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


def new_encryption_key():
    return base64.b64encode(secrets.token_bytes(32)).decode()


def new_admin_token():
    return rand_str(43)


def broker_env(port, redis_port, sim_port, **overrides):
    """The contract's environment for a broker on `port`. overrides: NAME=value, or
    NAME=None to leave NAME unset."""
    env = {
        "BROKER_LISTEN": f"127.0.0.1:{port}",
        "BROKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BROKER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "BROKER_ENCRYPTION_KEYS": "k1:" + new_encryption_key(),
        "BROKER_ADMIN_TOKEN": new_admin_token(),
        "STRIPE_CLIENT_ID_TEST": TEST_CLIENT_ID,
        "STRIPE_SECRET_KEY_TEST": TEST_SECRET_KEY,
        "STRIPE_CLIENT_ID_LIVE": LIVE_CLIENT_ID,
        "STRIPE_SECRET_KEY_LIVE": LIVE_SECRET_KEY,
        "STRIPE_CONNECT_URL": f"http://127.0.0.1:{sim_port}",
        "STRIPE_API_URL": f"http://127.0.0.1:{sim_port}",
        "STRIPE_MARKETPLACE_URL": f"http://127.0.0.1:{sim_port}",
        "BROKER_THREADS": "2",
        "BROKER_UPSTREAM_TIMEOUT_MS": "2000",
    }
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_cli(args, env, timeout=30, log_name="cli"):
    """Run the broker binary as a CLI; returns CompletedProcess (text). Its stderr is
    appended to the log dir so the sanitizer scan sees it."""
    full = _base_env()
    full.update(env)
    p = subprocess.run([broker_bin()] + list(args), env=full, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    with open(os.path.join(log_dir(), f"{log_name}.cli.log"), "a") as f:
        f.write(f"$ {' '.join(args)} -> {p.returncode}\n{p.stderr}")
    return p


class Broker:
    """One broker process. env is the full contract environment (see broker_env)."""

    def __init__(self, env, log_path, start=True):
        self.env = dict(env)
        self.log_path = log_path
        self.proc = None
        host, _, port = self.env.get("BROKER_LISTEN", "127.0.0.1:8080").rpartition(":")
        self.port = int(port)
        self.base = f"http://127.0.0.1:{self.port}"
        self.public = (self.env.get("BROKER_PUBLIC_URL") or self.base).rstrip("/")
        self.admin_token = self.env.get("BROKER_ADMIN_TOKEN")
        remember("admin_token", self.admin_token)
        for item in (self.env.get("BROKER_ENCRYPTION_KEYS") or "").split(","):
            remember("encryption_key", item.partition(":")[2])
        if start:
            self.start()

    def start(self, timeout=BROKER_START_TIMEOUT_S):
        b = broker_bin()
        assert os.path.exists(b), f"broker binary {b} does not exist (BROKER_BIN)"
        full = _base_env()
        full.update(self.env)
        self.log_offset_at_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([b], env=full, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, cwd=REPO)
        logf.close()

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"broker exited with {self.proc.returncode} during start: "
                                     f"{self.log_tail()}")
            try:
                return http_request("GET", self.base + "/healthz", timeout=2).status == 200
            except OSError:
                return False
        try:
            wait_until(healthy, timeout, interval=0.05, what="broker GET /healthz 200")
        except AssertionError:
            self.kill()
            raise

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
            return data[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_lines(self, since=0):
        with open(self.log_path, "rb") as f:
            f.seek(since)
            data = f.read()
        return data.decode("utf-8", "replace").splitlines()

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM and wait; returns the exit code (SIGKILL after timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        """Stop it for good: SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        self.stop()

    # --- requests ---

    def url(self, path):
        return self.base + path

    def request(self, method, path, token=None, json_body=None, body=None, headers=None,
                timeout=HTTP_TIMEOUT_S):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        r = http_request(method, self.url(path), headers=hdrs, body=body, timeout=timeout)
        _remember_response(r)
        check_api_invariants(r, path)
        return r

    def admin(self, method, path, **kw):
        return self.request(method, path, token=self.admin_token, **kw)

    def create_api_key(self, org):
        r = self.admin("POST", f"/v1/admin/orgs/{org}/api-keys")
        assert r.status == 201, f"creating an API key failed: {r.describe()}"
        j = r.json()
        remember("api_key", j.get("api_key"))
        return j

    def access_token(self, org, mode, token=None, **kw):
        return self.request("GET", f"/v1/orgs/{org}/access-token?mode={mode}",
                            token=token or self.admin_token, **kw)

    def connections(self, org, token=None, **kw):
        r = self.request("GET", f"/v1/orgs/{org}/connections", token=token or self.admin_token, **kw)
        assert r.status == 200, f"listing connections failed: {r.describe()}"
        return r.json().get("connections")

    def authorize_link(self, org, mode, return_url=None, token=None, **kw):
        body = {"mode": mode}
        if return_url is not None:
            body["return_url"] = return_url
        return self.request("POST", f"/v1/orgs/{org}/authorize-links",
                            token=token or self.admin_token, json_body=body, **kw)

    def wait_ready(self, timeout=15):
        """Poll GET /readyz until 200 (the broker reaches Redis)."""
        wait_until(lambda: self.request("GET", "/readyz", timeout=3).status == 200, timeout,
                   interval=0.05, what=f"{self.base}/readyz 200")


NON_JSON_PREFIXES = ("/metrics", "/openapi.yaml", "/setup", "/oauth/")


def check_api_invariants(r, path):
    """What every JSON API answer must satisfy (CONTRACT §4), checked on every response
    a test gets from the broker's API: JSON with no-store, a body unless 204, the error
    shape for errors, and only strings, booleans and small integers in bodies."""
    if path.startswith(NON_JSON_PREFIXES) or r.method == "HEAD":
        return
    where = f"contract (§4) violated by {r.describe()}"
    if r.status == 204:
        assert r.body == b"", f"a 204 with a body: {where}"
        return
    assert r.body.strip(), f"an empty body: {where}"
    assert_json_headers(r)
    j = r.json()
    assert isinstance(j, dict), f"the body is not a JSON object: {where}"
    if r.status >= 400:
        e = j.get("error")
        assert isinstance(e, dict) and isinstance(e.get("code"), str) and \
            isinstance(e.get("message"), str) and e["message"].strip(), f"not the error shape: {where}"
        if r.status == 401:
            www = r.header("WWW-Authenticate") or ""
            assert www.lower().startswith("bearer"), f"401 without WWW-Authenticate: Bearer: {where}"
        if r.status in (503,) and e.get("code") == "store_unavailable":
            assert r.header("Retry-After"), f"503 without Retry-After: {where}"
        if r.status == 405:
            assert r.header("Allow"), f"405 without Allow: {where}"

    def walk(x, at):
        if isinstance(x, float):
            raise AssertionError(f"a float at {at}: {where}")
        if isinstance(x, int) and not isinstance(x, bool) and not -2 ** 31 <= x < 2 ** 31:
            raise AssertionError(f"a 64-bit integer at {at}: {where}")
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{at}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{at}[{i}]")
    walk(j, "$")
    check_against_openapi(r, path)


def check_against_openapi(r, path):
    """The response matches proto/openapi.yaml (openapi_schema.py) when the request is
    a documented operation; routing errors (unknown path, wrong method) are not."""
    try:
        import openapi_schema as oas
    except ImportError:
        return
    if not os.path.exists(oas.SPEC_PATH):
        return
    key = f"{r.method} {path}"
    try:
        oas.find_operation(key)
    except KeyError:
        return
    try:
        oas.validate(key, r.status, r.body if r.body else None)
    except AssertionError as e:
        raise AssertionError(f"proto/openapi.yaml and the answer disagree: {e}") from None


def _remember_response(r):
    if not (r.header("Content-Type") or "").startswith("application/json"):
        return
    try:
        j = json.loads(r.body)
    except ValueError:
        return
    if isinstance(j, dict):
        for k in ("access_token", "api_key"):
            remember(k, j.get(k))
        remember("publishable_key", j.get("stripe_publishable_key"))
        url = j.get("url")
        if isinstance(url, str) and "ticket=" in url:
            for t in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("ticket", []):
                remember("ticket", t)


# ===== A module's processes =====

# ===== Start-up =====
#
# One way to start the real processes, for the integration tests and for the scripts that
# need the same processes outside them (tests/k8s/test_sigterm.py, deploy/image/smoke.py,
# tests/e2e/run.sh through `harness.py up`). Each start_* returns once its process is ready
# (a polled condition with a deadline, never a bare sleep) or raises AssertionError saying
# what did not come up; close() stops it (SIGTERM or SIGKILL, bounded) and removes its
# files. Logs go to log_dir() (use_log_dir to choose it).

def use_log_dir(d):
    """Write this process's logs (and those of the processes it starts) into folder d."""
    os.makedirs(d, exist_ok=True)
    os.environ["IT_LOG_DIR"] = d


def start_redis(name="redis"):
    """A redis-server on a free loopback port, no persistence; ready when it answers PING.
    The handle: .port, .client(), .close()."""
    return RedisServer(name)


def start_sim(name="sim", authorize="approve"):
    """The Stripe simulator (tests/fakes/stripe_sim.py) on a free port; ready when its
    control API answers. authorize: "approve", "consent" (a page to click) or "deny".
    The handle: .port, .base, .close()."""
    return Sim(name, authorize)


def start_broker(env, name="broker", ready=False):
    """The broker binary ($BROKER_BIN) with exactly the environment env (see broker_env);
    ready when GET /healthz answers 200, and with ready=True also /readyz (Redis reached).
    The handle: .port, .base, .proc, .admin_token, .log_path, .log_tail(), .stop() (SIGTERM,
    returns the exit code), .close()."""
    b = Broker(env, os.path.join(log_dir(), f"{name}.broker.log"))
    try:
        if ready:
            b.wait_ready()
    except BaseException:
        b.kill()
        raise
    return b


class Stack:
    """redis + simulator + broker for one test module (the usual fixture)."""

    def __init__(self, name, broker=True, sim=True, **broker_overrides):
        self.name = name
        self.extra = []
        self.redis = None
        self.sim = None
        self.broker = None
        try:
            self.redis = start_redis(name)
            self.sim = start_sim(name) if sim else None
            if broker:
                self.broker = self.new_broker("broker", **broker_overrides)
        except BaseException:
            self.close()
            raise

    def env_for(self, port=None, **overrides):
        port = port or free_port()
        return broker_env(port, self.redis.port, self.sim.port if self.sim else free_port(),
                          **overrides)

    def start_expecting_failure(self, overrides, timeout=10):
        """Run `stripe-token-broker` (serve) with this stack's env plus overrides; it must
        exit by itself (a broker that listens has accepted the configuration: an
        AssertionError at once). Returns (exit code, non-empty stderr lines, stdout, port);
        stderr is also appended to config.failures.log in the log folder."""
        port = free_port()
        env = _base_env()
        env.update(self.env_for(port=port, **overrides))
        proc = subprocess.Popen([broker_bin()], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        try:
            wait_until(lambda: proc.poll() is not None or port_is_listening(port), timeout,
                       interval=0.05, what="the broker to exit or listen")
            if proc.poll() is None:
                raise AssertionError(f"the broker started and listens with {sorted(overrides)}")
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        err = err.decode("utf-8", "replace")
        with open(os.path.join(log_dir(), "config.failures.log"), "a") as f:
            f.write(f"# {sorted(overrides)} -> {proc.returncode}\n{err}")
        lines = [l for l in err.splitlines() if l.strip()]
        return proc.returncode, lines, out.decode("utf-8", "replace"), port

    def assert_rejected(self, var, overrides, secret_values=()):
        """A bad configuration: exit non-zero before listening, one stderr line naming var,
        none of secret_values printed."""
        rc, lines, out, port = self.start_expecting_failure(overrides)
        assert rc != 0, f"exit status 0 with {sorted(overrides)}"
        assert len(lines) == 1, f"expected one stderr line naming {var}, got {lines!r}"
        assert var in lines[0], f"the stderr line does not name {var}: {lines[0]!r}"
        for v in secret_values:
            if v:
                assert v not in lines[0] and v not in out, f"a secret value was printed: {lines[0]!r}"
        assert not port_is_listening(port), "something is listening on BROKER_LISTEN"

    def new_broker(self, label, start=True, ready=None, **overrides):
        """Another broker on this stack's Redis and simulator (its own port and log).
        ready: also wait until it reaches Redis (/readyz 200), not only /healthz; by
        default only when it uses this stack's Redis."""
        env = self.env_for(**overrides)
        if self.broker is not None:
            # replicas share the keyring and the admin token unless the test sets them
            for name in ("BROKER_ENCRYPTION_KEYS", "BROKER_ADMIN_TOKEN"):
                if name not in overrides and name + "_FILE" not in overrides:
                    env[name] = self.broker.env[name]
        b = Broker(env, os.path.join(log_dir(), f"{self.name}.{label}.log"), start=False)
        if self.broker is not None:
            self.extra.append(b)
        if start:
            b.start()
            if ready or (ready is None and self.uses_our_redis(b)):
                b.wait_ready()
        return b

    def uses_our_redis(self, b):
        return b.env.get("BROKER_REDIS_URL") == f"redis://127.0.0.1:{self.redis.port}/0"

    def reset(self):
        """Between tests: Redis up and empty, simulator reset, broker running."""
        self.redis.ensure_running()
        c = self.redis.client()
        try:
            c.command("CLIENT", "UNPAUSE")
            c.command("FLUSHALL")
        finally:
            c.close()
        if self.sim:
            self.sim.reset()
        if self.broker is not None and not self.broker.running():
            self.broker.start()
        for b in [self.broker] + self.extra:
            if b is not None and b.running() and self.uses_our_redis(b):
                b.wait_ready()   # after a Redis restart the broker reconnects with a backoff

    def rc(self):
        return self.redis.client()

    def close(self):
        for b in [self.broker] + self.extra:
            if b is not None:
                b.stop()
        if self.sim:
            self.sim.close()
        if self.redis:
            self.redis.close()


# ===== The browser flow =====

class Flow:
    """The setup assistant, step by step, as an admin's browser walks it.

    Each step asserts what the contract promises and records what it saw; tests
    that probe one step call the earlier ones and stop there."""

    def __init__(self, broker, sim, org, mode="test", return_url=None, browser=None):
        self.broker = broker
        self.sim = sim
        self.org = org
        self.mode = mode
        self.return_url = return_url
        self.browser = browser or Browser()
        self.ticket = self.link_url = self.csrf = self.state = self.code = None
        self.authorize_location = self.callback_url = self.setup_html = None
        self.account = None
        apps = broker.env.get("BROKER_OAUTH_FLAVOR") == "apps"
        self.authorize_path = "/oauth/v2/authorize" if apps else "/oauth/authorize"

    def link(self):
        r = self.broker.authorize_link(self.org, self.mode, self.return_url)
        assert r.status == 201, f"authorize-links failed: {r.describe()}"
        self.link_url = r.json()["url"]
        self.ticket = urllib.parse.parse_qs(urllib.parse.urlsplit(self.link_url).query)["ticket"][0]
        remember("ticket", self.ticket)
        return r

    def open_ticket(self):
        """GET /setup?ticket=… on the broker's listener (the public URL may differ)."""
        u = urllib.parse.urlsplit(self.link_url)
        r = self.browser.get(self.broker.url(u.path + "?" + u.query))
        return r

    def open(self):
        self.link()
        r = self.open_ticket()
        assert r.status == 303, f"GET /setup?ticket should be 303: {r.describe()}"
        loc = urllib.parse.urlsplit(r.header("Location") or "")
        assert loc.path == "/setup" and "ticket" not in loc.query, \
            f"ticket redirect should go to /setup: {r.describe()}"
        return r

    def setup_page(self):
        r = self.browser.get(self.broker.url("/setup"))
        assert r.status == 200, f"GET /setup should be 200: {r.describe()}"
        self.setup_html = r.text
        self.csrf = csrf_of(r.text)
        return r

    def authorize(self, mode=None, csrf=None):
        form = {"csrf": self.csrf if csrf is None else csrf, "mode": mode or self.mode}
        r = self.browser.post_form(self.broker.url("/setup/authorize"), form)
        return r

    def authorize_ok(self, mode=None):
        r = self.authorize(mode)
        assert r.status == 303, f"POST /setup/authorize should be 303: {r.describe()}"
        self.authorize_location = r.header("Location")
        assert self.authorize_location and self.authorize_location.startswith(
            self.sim.base + self.authorize_path + "?"), f"not a redirect to Stripe: {r.describe()}"
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.authorize_location).query)
        self.state = (q.get("state") or [None])[0]
        remember("state", self.state)
        return r

    def stripe(self, account=None):
        """The admin at Stripe; returns the simulator's response (a 302 back)."""
        self.account = account or ("acct_" + rand_str(16))
        self.sim.config(next_account=self.account)
        r = self.browser.get(self.authorize_location)
        assert r.status in (302, 303), f"the simulator should redirect back: {r.describe()}"
        self.callback_url = r.header("Location")
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.callback_url).query)
        self.code = (q.get("code") or [None])[0]
        remember("code", self.code)
        return r

    def callback(self, browser=None):
        u = urllib.parse.urlsplit(self.callback_url)
        assert u.path == "/oauth/callback", f"unexpected callback URL {self.callback_url}"
        return (browser or self.browser).get(self.broker.url(u.path + "?" + u.query))

    def finish(self):
        r = self.callback()
        assert r.status == 303, f"the callback should answer 303: {r.describe()}"
        loc = urllib.parse.urlsplit(r.header("Location") or "")
        assert loc.path == "/setup", f"the callback should lead back to /setup: {r.describe()}"
        page = self.setup_page()
        assert "Connected" in page.text, f"the page does not say Connected: {page.text[:800]!r}"
        assert self.account in page.text, f"the page does not show {self.account}"
        return page

    def run(self, pick=None, account=None):
        """The whole flow; returns self."""
        self.open()
        self.setup_page()
        self.authorize_ok(pick)
        self.stripe(account)
        self.finish()
        return self


# ===== `python3 tests/it/harness.py up`: the three processes for a shell script =====

def _up(argv):
    """Start Redis, the simulator and a broker; write their coordinates to --ready-file as
    shell assignments (written whole, then renamed: a reader never sees half); run until
    SIGTERM or SIGINT (or until the parent process is gone), then stop all three."""
    import argparse
    ap = argparse.ArgumentParser(prog="harness.py up")
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--name", default="up")
    ap.add_argument("--authorize", default="approve", help="the simulator's authorize mode")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a broker variable ({port} is the broker's port); NAME= unsets it")
    a = ap.parse_args(argv)
    use_log_dir(a.log_dir)
    parent = os.getppid()
    stop = []
    sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    for sig in sigs:   # during start-up: note it, stop once the current start returns
        signal.signal(sig, lambda *_: stop.append(1))
    procs = []
    try:
        redis = start_redis(a.name)
        procs.append(redis)
        sim = start_sim(a.name, authorize=a.authorize)
        procs.append(sim)
        port = free_port()
        overrides = {}
        for item in a.env:
            k, _, v = item.partition("=")
            overrides[k] = v.replace("{port}", str(port)) if v else None
        b = start_broker(broker_env(port, redis.port, sim.port, **overrides), a.name)
        procs.append(b)
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            for k, v in (("BROKER_URL", b.base), ("BROKER_PID", b.proc.pid), ("BROKER_LOG", b.log_path),
                         ("SIM_URL", sim.base), ("REDIS_PORT", redis.port), ("ADMIN_TOKEN", b.admin_token)):
                f.write(f"{k}='{v}'\n")
        os.replace(tmp, a.ready_file)
        # from here on the signals are awaited, not handled (the children are started and
        # keep the default dispositions); the timeout only notices a parent that is gone
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        while not stop and os.getppid() == parent and b.running():
            if signal.sigtimedwait(sigs, 0.5) is not None:
                stop.append(1)
        return 0 if stop or os.getppid() != parent else 1
    finally:
        for p in reversed(procs):
            p.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["up"]:
        sys.exit(_up(sys.argv[2:]))
    print("usage: harness.py up --ready-file F --log-dir D [--authorize MODE] [--env NAME=VALUE]…",
          file=sys.stderr)
    sys.exit(2)
