#!/usr/bin/env python3
"""test_sigterm.py: the broker's SIGTERM drain, the way Kubernetes stops a pod.

The Deployment in deploy/k8s gives a pod preStop 5 s + terminationGracePeriodSeconds 30 s on the
assumption (CONTRACT §7) that SIGTERM makes the broker stop accepting, finish what is in flight
within 10 s, and exit 0. This checks exactly that, against the real binary and a real Redis:

  1. requests in flight during SIGTERM all complete: Redis is paused (CLIENT PAUSE 600 ALL) so
     that a batch of requests that need Redis (/readyz, an admin listing) hang in the broker;
     SIGTERM arrives while they wait; every one must get a complete answer — 200, or the
     contract's 503 when Redis is too slow — and after the signal, not before;
  2. a new connection after SIGTERM is refused (the listener is closed);
  3. the process exits 0, within 10 s of the signal;
  4. an idle broker exits 0 promptly on SIGTERM.

Needs redis-server and the binary ($BROKER_BIN, default build/stripe-token-broker), both
started through the integration tests' harness (tests/it/harness.py, "Start-up"). Python 3
standard library only. Set-up steps are not counted unless they fail. Ends with "sigterm: N
passed, M failed"; exit 1 on any failure.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "it"))
import harness as h  # noqa: E402  the processes start as the integration tests start them

BROKER_BIN = h.broker_bin()
DRAIN_MAX_S = 10
PAUSE_MS = 600
IN_FLIGHT = 24
ORG = "00D5e000000Smk1"

RESULTS = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    RESULTS["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""),
          flush=True)
    return ok


def need(name, ok, detail=""):
    """A set-up step: counted (as a failure) only when it fails."""
    if not ok:
        return check(name, ok, detail)
    print(f"# {name}: ok", flush=True)
    return ok


def wait_until(cond, timeout_s, interval_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except OSError:
            pass
        time.sleep(interval_s)
    return False


def get(port, path, headers=None, timeout_s=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def redis_cmd(port, *args):
    """One RESP command on a new connection; the raw first reply line."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload.encode())
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def start_broker(redis_port, what):
    """A broker on Redis (test mode only, no simulator: nothing here reaches Stripe), ready
    when /healthz answers; None (a failed set-up step) when it does not start."""
    env = h.broker_env(h.free_port(), redis_port, h.free_port(), STRIPE_CLIENT_ID_LIVE=None,
                       STRIPE_SECRET_KEY_LIVE=None, BROKER_UPSTREAM_TIMEOUT_MS=None)
    try:
        return h.start_broker(env, "sigterm")
    except AssertionError as e:
        need(what, False, str(e))
        return None


def test_drain(redis_port):
    b = start_broker(redis_port, "broker starts and answers /healthz")
    if b is None:
        return
    try:
        need("broker starts and answers /healthz", True)
        auth = {"Authorization": f"Bearer {b.admin_token}"}
        if not need("Redis-backed requests answer 200 before the test",
                    get(b.port, "/readyz")[0] == 200
                    and get(b.port, f"/v1/admin/orgs/{ORG}/api-keys", auth)[0] == 200):
            return

        results = [None] * IN_FLIGHT
        ports = [None] * IN_FLIGHT
        sent = threading.Barrier(IN_FLIGHT + 1)

        def one(i):
            path = "/readyz" if i % 2 else f"/v1/admin/orgs/{ORG}/api-keys"
            conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=DRAIN_MAX_S + 5)
            try:
                conn.connect()
                ports[i] = conn.sock.getsockname()[1]
                conn.request("GET", path, headers=auth if i % 2 == 0 else {})
                sent.wait(5)
                r = conn.getresponse()
                body = r.read()
                results[i] = (r.status, body, time.monotonic())
            except Exception as e:  # a reset or a truncated answer is a failure
                results[i] = ("error", repr(e), time.monotonic())
                try:
                    sent.wait(0)
                except threading.BrokenBarrierError:
                    pass
            finally:
                conn.close()

        if not need("Redis paused", redis_cmd(redis_port, "CLIENT", "PAUSE", str(PAUSE_MS), "ALL") == "+OK"):
            return
        threads = [threading.Thread(target=one, args=(i,)) for i in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        try:
            sent.wait(5)
        except threading.BrokenBarrierError:
            pass
        # the broker has read every request (nothing left unread on its side of each
        # connection), so they all wait on Redis; bounded well inside the pause
        need("the broker read all requests before SIGTERM",
             wait_until(lambda: all_read(b.port, ports), PAUSE_MS / 2000), f"{unread(b.port, ports)}")
        t_term = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)

        refused = wait_until(lambda: _refused(b.port), 1.0)
        check("a new connection after SIGTERM is refused", refused)

        for t in threads:
            t.join(DRAIN_MAX_S + 5)
        try:
            rc = b.proc.wait(DRAIN_MAX_S + 5)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t_term

        statuses = [r[0] if r else "no answer" for r in results]
        check(f"all {IN_FLIGHT} in-flight requests complete with 200 or 503",
              all(s in (200, 503) for s in statuses), f"{statuses}")
        late = [r for r in results if r and r[0] in (200, 503) and r[2] >= t_term]
        check("they were answered after SIGTERM (really in flight)", len(late) == IN_FLIGHT,
              f"{len(late)} of {IN_FLIGHT} after the signal")
        bad = [(i, r[:2]) for i, r in enumerate(results) if not complete_answer(i, r)]
        check("every answer has its complete JSON body (the contract's shape)", not bad, f"{bad[:4]}")
        check(f"the process exits 0 within {DRAIN_MAX_S} s of SIGTERM",
              rc == 0 and took < DRAIN_MAX_S, f"exit {rc} after {took:.2f} s\n{b.log_tail()}")
    finally:
        b.kill()


def complete_answer(i, r):
    """200: /readyz's {"status": "ready"} or the admin listing's {"api_keys": […]};
    503: the error shape with store_unavailable. The body parses whole as JSON."""
    if not r or r[0] not in (200, 503):
        return False
    try:
        j = json.loads(r[1])
    except ValueError:
        return False
    if r[0] == 503:
        err = j.get("error") if isinstance(j, dict) else None
        return isinstance(err, dict) and err.get("code") == "store_unavailable" and isinstance(err.get("message"), str)
    if i % 2:
        return j == {"status": "ready"}
    return isinstance(j, dict) and isinstance(j.get("api_keys"), list)


def unread(port, client_ports):
    """{client port: bytes the broker has not read yet} of our connections to port, from
    /proc/net/tcp (the broker's side of each: local port = port); None: not there."""
    left = {p: None for p in client_ports}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            lport = int(fields[1].split(":")[1], 16)
            rport = int(fields[2].split(":")[1], 16)
            if lport == port and rport in left and fields[3] == "01":   # ESTABLISHED
                left[rport] = int(fields[4].split(":")[1], 16)          # rx_queue
    return left


def all_read(port, client_ports):
    if None in client_ports:
        return False
    return all(v == 0 for v in unread(port, client_ports).values())


def _refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_idle(redis_port):
    b = start_broker(redis_port, "idle broker starts")
    if b is None:
        return
    try:
        need("idle broker starts", True)
        # an idle keep-alive connection must not hold the shutdown up
        idle = socket.create_connection(("127.0.0.1", b.port), timeout=2)
        t0 = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        try:
            rc = b.proc.wait(DRAIN_MAX_S + 5)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        idle.close()
        check("an idle broker exits 0 within 2 s of SIGTERM (idle connection open)",
              rc == 0 and took < 2, f"exit {rc} after {took:.2f} s")
    finally:
        b.kill()


def main():
    if not os.access(BROKER_BIN, os.X_OK) or shutil.which("redis-server") is None:
        print(f"sigterm: needs {BROKER_BIN} (make) and redis-server")
        print("sigterm: 0 passed, 1 failed")
        return 1
    tmp = tempfile.mkdtemp(prefix="stb-sigterm.")
    h.use_log_dir(tmp)
    redis = None
    try:
        try:
            redis = h.start_redis("sigterm")
        except AssertionError as e:
            need("redis-server starts", False, str(e))
        if redis is not None:
            need("redis-server starts", True)
            test_drain(redis.port)
            test_idle(redis.port)
    except Exception as e:
        check("SIGTERM test ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        if redis is not None:
            redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"sigterm: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
