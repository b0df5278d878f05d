#!/usr/bin/env python3
"""soak.py — mixed traffic on three replicas for a while, with Redis restarts.

    SOAK_SECONDS=600 python3 tests/soak/soak.py [--out DIR]

Starts a Redis with an append-only file, the Stripe simulator and three brokers on it
(two of $BROKER_BIN, one of $SOAK_ASAN_BIN — the AddressSanitizer + UBSan build — when it
exists). Then, until the time is up:

  * readers: getAccessToken (live and minted test tokens) with org API keys;
  * a rotator: POST …/access-token/rotate on the same orgs;
  * a setup runner: whole browser flows on fresh orgs, then Stripe's deauthorization
    webhook for them (409 afterwards), then DELETE of the connection;
  * a webhook sender: signed charge.captured events through the simulator;
  * every SOAK_REDIS_PERIOD seconds Redis goes away for a moment (SIGKILL and AOF
    replay, or a clean SHUTDOWN, alternately).

Every answer is classified. Explained: 503 store_unavailable and 502 (a Stripe call
whose Redis write failed) during a Redis outage and SOAK_GRACE seconds after it.
Everything else that is not the expected status — another 5xx, a socket error, an
answer slower than 2.5 s, a wrong token — is unexplained. Every 2 s it records each
replica's RSS (/proc/<pid>/status) and open descriptors (/proc/<pid>/fd), and the
counts, into soak.csv; at the end it draws soak.png with gnuplot and prints PASS/FAIL
per check and `soak: N passed, M failed`.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "fault"))

import faultlib as F  # noqa: E402

h = F.h
SLOW_S = 2.5
WEBHOOK_SECRET = "whsec_soak_" + h.rand_str(24)


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.outages = []            # [start, end or None]
        self.counts = {"ok": 0, "explained": 0, "unexplained": 0}
        self.interval = {"ok": 0, "explained": 0, "unexplained": 0}
        self.unexplained = []
        self.explained_kinds = {}

    def in_outage(self, t0, t1, grace):
        for s, e in self.outages:
            if t1 >= s and (e is None or t0 <= e + grace):
                return True
        return False

    def note(self, what, ok, t0, t1, detail, grace):
        with self.lock:
            if ok:
                kind = "ok"
            elif self.in_outage(t0, t1, grace) and not detail.startswith(("slow", "wrong")):
                kind = "explained"
                k = f"{what}: {detail[:60]}"
                self.explained_kinds[k] = self.explained_kinds.get(k, 0) + 1
            else:
                kind = "unexplained"
                if len(self.unexplained) < 200:
                    self.unexplained.append(f"t={t0 - START:.1f}s {what}: {detail[:300]}")
            self.counts[kind] += 1
            self.interval[kind] += 1

    def take_interval(self):
        with self.lock:
            v = dict(self.interval)
            for k in self.interval:
                self.interval[k] = 0
            return v


START = time.monotonic()
REC = Recorder()


def call(what, fn, expect, grace):
    """Run fn() -> Resp; classify against the expected status set."""
    t0 = time.monotonic()
    try:
        r = fn()
    except Exception as e:  # noqa: BLE001 - socket errors are results here
        t1 = time.monotonic()
        REC.note(what, False, t0, t1, f"socket error {e!r}", grace)
        return None
    t1 = time.monotonic()
    if t1 - t0 > SLOW_S:
        REC.note(what, False, t0, t1, f"slow: {t1 - t0:.2f}s status {r.status}", grace)
        return r
    if r.status in expect:
        REC.note(what, True, t0, t1, "", grace)
        return r
    code = ""
    try:
        code = r.json()["error"]["code"]
    except Exception:  # noqa: BLE001
        pass
    REC.note(what, False, t0, t1, f"{r.status} {code} {r.describe()[:200] if not code else ''}", grace)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("SOAK_OUT", os.path.join(REPO, "tests", "out", "soak")))
    args = ap.parse_args()
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    period = float(os.environ.get("SOAK_REDIS_PERIOD", "45"))
    grace = float(os.environ.get("SOAK_GRACE", "5"))
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("IT_LOG_DIR", os.path.join(args.out, "logs"))
    os.makedirs(os.environ["IT_LOG_DIR"], exist_ok=True)
    plain = os.environ.get("BROKER_BIN", "build/stripe-token-broker")
    asan = os.environ.get("SOAK_ASAN_BIN", "build-asan/stripe-token-broker")
    if not os.path.isabs(asan):
        asan = os.path.join(REPO, asan)
    bins = [plain, plain, asan if os.path.exists(asan) else plain]
    print(f"# soak: {seconds:.0f}s, Redis restart every {period:.0f}s; replicas: {bins}; out: {args.out}",
          flush=True)

    results = []

    def check(name, ok, detail=""):
        results.append((name, ok))
        print(f"{'PASS' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)

    env = F.fault_env(BROKER_THREADS="2", STRIPE_WEBHOOK_SECRET_TEST=WEBHOOK_SECRET,
                      STRIPE_WEBHOOK_SECRET_LIVE=WEBHOOK_SECRET)
    os.environ["BROKER_BIN"] = bins[0]
    stack = F.AofStack("soak", **env)
    brokers = [stack.broker]
    try:
        for i, b in enumerate(bins[1:], 1):
            os.environ["BROKER_BIN"] = b
            brokers.append(stack.new_broker(f"r{i}", **env))
        os.environ["BROKER_BIN"] = plain
        sim = stack.sim
        asan_log = brokers[2].log_path if bins[2] == asan else None

        # --- the orgs the readers and the rotator use ---
        orgs = []
        for i in range(6):
            org = h.new_org()
            h.Flow(brokers[i % 3], sim, org, "live").run()
            key = brokers[0].create_api_key(org)["api_key"]
            h.assert_status(brokers[1].access_token(org, "test", token=key), 200)
            orgs.append((org, key))
        pids = [b.proc.pid for b in brokers]
        stop = threading.Event()
        end_at = time.monotonic() + seconds

        def rr():
            return random.choice(brokers)

        def reader():
            while not stop.is_set():
                org, key = random.choice(orgs)
                mode = random.choice(("live", "test"))
                b = rr()
                r = call("read", lambda: b.request("GET", f"/v1/orgs/{org}/access-token?mode={mode}", token=key,
                                                   timeout=5), {200}, grace)
                if r is not None and r.status == 200 and not r.json().get("access_token", "").startswith("sk_"):
                    REC.note("read", False, time.monotonic(), time.monotonic(), "wrong token shape", grace)

        def rotator():
            while not stop.is_set():
                org, key = random.choice(orgs)
                mode = random.choice(("live", "test"))
                b = rr()
                call("rotate", lambda: b.request("POST", f"/v1/orgs/{org}/access-token/rotate?mode={mode}",
                                                 token=key, timeout=5), {200}, grace)
                stop.wait(0.7)

        def setup_runner():
            while not stop.is_set():
                b = rr()
                t0 = time.monotonic()
                org = h.new_org()
                try:
                    f = h.Flow(b, sim, org, "test").run()
                except Exception as e:  # noqa: BLE001
                    REC.note("flow", False, t0, time.monotonic(), f"flow failed: {e}", grace)
                    stop.wait(1)
                    continue
                REC.note("flow", True, t0, time.monotonic(), "", grace)
                r = call("webhook-deauth", lambda: _webhook(sim, b, "account.application.deauthorized", f.account),
                         {200}, grace)
                if r is not None and r.status == 200:
                    call("read-after-deauth", lambda: b.access_token(org, "test"), {409}, grace)
                call("delete", lambda: rr().admin("DELETE", f"/v1/orgs/{org}/connections/test"), {204, 404}, grace)
                stop.wait(1.5)

        def webhooker():
            while not stop.is_set():
                b = rr()
                call("webhook", lambda: _webhook(sim, b, "charge.captured", "acct_" + h.rand_str(12)), {200}, grace)
                stop.wait(0.5)

        def redis_chaos():
            n = 0
            while not stop.wait(period):
                if time.monotonic() + 5 > end_at:
                    return
                with REC.lock:
                    REC.outages.append([time.monotonic(), None])
                if n % 2 == 0:
                    stack.redis.kill()
                else:
                    stack.redis.stop(keep_data=True)
                stop.wait(1.0)   # the outage itself: the stimulus, not a synchronisation
                stack.redis.start()
                with REC.lock:
                    REC.outages[-1][1] = time.monotonic()
                n += 1

        samples = []
        csv_path = os.path.join(args.out, "soak.csv")

        def sampler():
            with open(csv_path, "w") as f:
                f.write("t,rss0,rss1,rss2,fds0,fds1,fds2,ok,explained,unexplained,redis_down\n")
                while not stop.is_set():
                    t = time.monotonic() - START
                    try:
                        rss = [F.rss_kb(p) / 1024 for p in pids]
                        fds = [F.fd_count(p) for p in pids]
                    except (OSError, AssertionError):
                        rss, fds = [0, 0, 0], [0, 0, 0]
                    iv = REC.take_interval()
                    down = 1 if REC.outages and REC.outages[-1][1] is None else 0
                    row = [t] + rss + fds + [iv["ok"], iv["explained"], iv["unexplained"], down]
                    samples.append(row)
                    f.write(",".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in row) + "\n")
                    f.flush()
                    stop.wait(2.0)

        global START
        START = time.monotonic()
        threads = [threading.Thread(target=fn, daemon=True) for fn in
                   [reader] * 4 + [rotator, setup_runner, webhooker, redis_chaos, sampler]]
        for t in threads:
            t.start()
        while time.monotonic() < end_at:
            if not all(b.running() for b in brokers):
                break
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
        outage_list = [(round(s - START, 1), round((e or s) - START, 1)) for s, e in REC.outages]
        print(f"# redis outages (s): {outage_list}", flush=True)
        print(f"# answers: {REC.counts}; explained: {REC.explained_kinds}", flush=True)

        # --- checks ---
        dead = [i for i, b in enumerate(brokers) if not b.running()]
        check("replicas_never_crashed", not dead, f"replicas {dead} exited")
        check("traffic_was_real", REC.counts["ok"] > 1000, f"only {REC.counts['ok']} good answers")
        check("zero_unexplained_errors", REC.counts["unexplained"] == 0,
              f"{REC.counts['unexplained']} unexplained: " + " | ".join(REC.unexplained[:8]))
        # integrity: every org's tokens are the same on every replica and alive at Stripe
        bad = []
        stack.redis.ensure_running()
        for b in brokers:
            if b.running():
                h.wait_until(lambda: b.request("GET", "/readyz", timeout=3).status == 200, 15, what="readyz")
        for org, key in orgs:
            for mode in ("live", "test"):
                toks = set()
                for b in brokers:
                    if not b.running():
                        continue
                    r = b.access_token(org, mode, token=key)
                    if r.status != 200:
                        bad.append(f"{org} {mode}: {r.status}")
                        continue
                    toks.add(r.json()["access_token"])
                if len(toks) != 1 or not sim.token_active(next(iter(toks))):
                    bad.append(f"{org} {mode}: tokens {len(toks)}, active={bool(toks) and sim.token_active(next(iter(toks)))}")
        check("no_connection_lost_or_corrupted", not bad, "; ".join(bad[:6]))
        # resources: descriptors back to the early level; plain replicas' RSS flat after warm-up
        early = [s for s in samples if s[0] >= min(20.0, seconds / 4)]
        if early and all(b.running() for b in brokers):
            base = early[0]
            final = [F.settle(p, timeout=5) for p in pids]
            fd_growth = [final[i][0] - base[4 + i] for i in range(3)]
            check("no_descriptor_leak", all(g <= 4 for g in fd_growth),
                  f"fd growth per replica {fd_growth} (from {base[4:7]})")
            rss_growth = [final[i][1] / 1024 - base[1 + i] for i in range(3)]
            limit_mb = 16 + seconds / 60.0
            plain_ok = all(rss_growth[i] <= limit_mb for i in range(3) if bins[i] == plain)
            check("no_memory_growth_plain_replicas", plain_ok,
                  f"RSS growth MB {['%.1f' % g for g in rss_growth]} (bound {limit_mb:.0f} MB)")
            print(f"# RSS growth MB per replica: {['%.1f' % g for g in rss_growth]}; fd growth {fd_growth}",
                  flush=True)
        else:
            check("no_descriptor_leak", False, "no samples, or a replica died")
        if asan_log:
            with open(asan_log, "rb") as f:
                hits = [ln for ln in f.read().decode("utf-8", "replace").splitlines()
                        if any(m in ln for m in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"))]
            check("asan_replica_clean", not hits, f"{len(hits)} sanitizer lines, first: {hits[:1]}")
        plot(csv_path, os.path.join(args.out, "soak.png"), outage_list)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        check("soak_ran", False, "the soak itself failed (see the traceback)")
    finally:
        stack.close()
    p = sum(1 for _, ok in results if ok)
    print(f"soak: {p} passed, {len(results) - p} failed", flush=True)
    return 0 if results and p == len(results) else 1


def _webhook(sim, broker, typ, account):
    """Have the simulator sign and deliver an event; a Resp-like result."""
    body = {"url": broker.url("/webhooks/stripe"), "secret": WEBHOOK_SECRET, "type": typ, "account": account,
            "revoke": False}
    r = h.http_request("POST", sim.url("/_sim/webhook"), headers={"Content-Type": "application/json"},
                       body=json.dumps(body), timeout=10)
    j = r.json()
    status = int(j.get("status") or 0)
    inner = j.get("body")
    return h.Resp("POST", broker.url("/webhooks/stripe"), status, "", [("Content-Type", "application/json")],
                  (inner if isinstance(inner, str) else json.dumps(inner or {})).encode(), r.elapsed)


def plot(csv_path, png_path, outages):
    if not shutil_which("gnuplot"):
        print("# gnuplot not installed: no plot", flush=True)
        return
    marks = "".join(f"set object rect from {s},graph 0 to {max(e, s + 1)},graph 1 fc rgb '#ffdddd' fs solid 0.5 "
                    f"noborder behind\n" for s, e in outages)
    script = f"""
set terminal pngcairo size 1200,900 noenhanced
set output '{png_path}'
set datafile separator ','
set key outside right top
set multiplot layout 3,1 title 'stripe-token-broker soak (red bands: Redis outages)'
{marks}
set ylabel 'RSS (MB)'
plot '{csv_path}' using 1:2 skip 1 with lines title 'replica 0', '' using 1:3 skip 1 with lines title 'replica 1', \
     '' using 1:4 skip 1 with lines title 'replica 2 (ASan)'
set ylabel 'open fds'
plot '{csv_path}' using 1:5 skip 1 with lines title 'replica 0', '' using 1:6 skip 1 with lines title 'replica 1', \
     '' using 1:7 skip 1 with lines title 'replica 2 (ASan)'
set ylabel 'answers per 2 s'
set xlabel 'seconds'
set logscale y
plot '{csv_path}' using 1:($8+1) skip 1 with lines title 'ok (+1)', '' using 1:($9+1) skip 1 with lines title 'explained (+1)', \
     '' using 1:($10+1) skip 1 with lines title 'unexplained (+1)'
unset multiplot
"""
    p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True, timeout=60)
    if p.returncode != 0:
        # pngcairo may be missing: fall back to the plain png terminal
        p = subprocess.run(["gnuplot"], input=script.replace("pngcairo", "png"), text=True,
                           capture_output=True, timeout=60)
    print(f"# plot: {png_path}" if p.returncode == 0 else f"# gnuplot failed: {p.stderr[-300:]}", flush=True)


def shutil_which(name):
    import shutil
    return shutil.which(name)


if __name__ == "__main__":
    sys.exit(main())
