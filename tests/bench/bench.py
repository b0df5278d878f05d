#!/usr/bin/env python3
"""bench.py — `make bench`: the broker's hot path against h2o and webdis, in one run.

    python3 tests/bench/bench.py        (run.sh calls it; BROKER_BIN selects the binary)

One run on this machine, every server and wrk sharing its cores:

  1. seeds ORGS (1,000) orgs through the broker's public interfaces only: an org API key
     (POST /v1/admin/orgs/{org}/api-keys) and the real browser flow against the Stripe
     simulator in approve mode, in live mode;
  2. for ROUNDS rounds, after a WARMUP_S warm-up per target, WRK_DURATION_S of
     `wrk -t2 -cCONNS` (tests/bench/bench.lua, the same client work for every target) on
       broker   GET /v1/orgs/{random org}/access-token?mode=live with that org's key
       h2o      Debian's h2o (2 threads) serving a static JSON file of the same size
       webdis   Debian's webdis (2 threads) answering GET /GET/<key> of the same size
       healthz  the broker's GET /healthz (its own HTTP ceiling);
     then, not a target, the broker and h2o again under a paced load: each connection
     waits PACE_MS between an answer and its next request (the load below the limit);
  3. the broker at 1,000 connections (RSS), then a SOAK_S soak (RSS sampled; perf
     samples the first seconds when perf works);
  4. instructions per request under valgrind --tool=callgrind for a fixed number of
     requests (CALLGRIND_REQUESTS) of getAccessToken and of /healthz, with a profile;
  5. the mint path: the simulator answers each token call after 50 ms, and every org
     (live only) asks for mode=test at once: wall time, statuses, Stripe calls;
  6. writes tests/bench/results.md (+ tests/bench/notes.md, the hand-written analysis)
     and tests/bench/latency.png (gnuplot).

Timings are reported, never asserted. Every process this script starts is stopped at
the end. Environment knobs: BROKER_BIN, ORGS, ROUNDS, CONNS, WRK_THREADS, WARMUP_S,
WRK_DURATION_S, SOAK_S, PACE_MS, CALLGRIND_REQUESTS, BENCH_OUT (folder for results.md/png),
BENCH_BROKER_ENV ("NAME=value …" added to the broker's environment).
"""

import asyncio
import glob
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(BENCH_DIR))
sys.path.insert(0, os.path.join(REPO, "tests", "it"))
import harness as H  # noqa: E402

ORGS = int(os.environ.get("ORGS", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
CONNS = int(os.environ.get("CONNS", "64"))
WRK_THREADS = int(os.environ.get("WRK_THREADS", "2"))
WARMUP_S = int(os.environ.get("WARMUP_S", "3"))
DURATION_S = int(os.environ.get("WRK_DURATION_S", "10"))
SOAK_S = int(os.environ.get("SOAK_S", "60"))
BIG_CONNS = int(os.environ.get("BIG_CONNS", "1000"))
CG_REQUESTS = int(os.environ.get("CALLGRIND_REQUESTS", "10000"))
MINT_DELAY_MS = 50
PACE_MS = int(os.environ.get("PACE_MS", "2"))
PACED = ("broker", "h2o")
OUT_DIR = os.environ.get("BENCH_OUT", BENCH_DIR)
LUA = os.path.join(BENCH_DIR, "bench.lua")
WEBDIS_KEY = "benchtoken"
TARGETS = ("broker", "h2o", "webdis", "healthz")
PROXY_TARGETS = ("direct", "nginx", "proxy")   # the Stripe proxy phase (proxy_phase)
STRIPE_PATH = "/v1/customers/cus_bench"
PROXY_UPSTREAM_BEARER = "sk_test_bench_fixed"
PROXY_PACED_CONNS = int(os.environ.get("PROXY_PACED_CONNS", "8"))  # the proxy's paced point: a light load
# BENCH_ONLY=proxy (`make bench-proxy`): seed ORGS orgs, run the proxy phase only, and write
# BENCH_OUT/proxy-results.md instead of results.md
ONLY_PROXY = os.environ.get("BENCH_ONLY") == "proxy"

PROCS = []          # every Popen this script started (stopped in cleanup)
WORK = tempfile.mkdtemp(prefix="stb-bench-")
os.environ["IT_LOG_DIR"] = os.path.join(WORK, "logs")


def say(*a):
    print("bench:", *a, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(cmd, log_name, **kw):
    logf = open(os.path.join(WORK, log_name), "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, **kw)
    logf.close()
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=15):
    if p is None or p.poll() is not None:
        return
    p.send_signal(sig)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cpu_seconds(pid):
    """(user, system) CPU seconds of process pid, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def proc_status(pid):
    """VmRSS and VmHWM of pid in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ===== Seeding through the broker's public interfaces =====

def connect_live(broker, sim, org):
    """Org API key + the browser flow in live mode; returns the API key."""
    key = broker.create_api_key(org)["api_key"]
    f = H.Flow(broker, sim, org, "live")
    f.open()
    f.setup_page()
    f.authorize_ok()
    # the simulator approves at once (no next_account: several flows run in parallel)
    r = f.browser.get(f.authorize_location)
    assert r.status in (302, 303), f"simulator should redirect back: {r.describe()}"
    f.callback_url = r.header("Location")
    r = f.callback()
    assert r.status == 303 and urllib.parse.urlsplit(r.header("Location") or "").path == "/setup", \
        f"callback failed: {r.describe()}"
    return key


def seed(broker, sim, n):
    rnd = random.Random(20240601)
    orgs = set()
    while len(orgs) < n:
        body = "".join(rnd.choice(H.ALNUM) for _ in range(12))
        orgs.add(H.org18("00D" + body))
    orgs = sorted(orgs)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as ex:
        keys = list(ex.map(lambda o: connect_live(broker, sim, o), orgs))
    return list(zip(orgs, keys)), time.monotonic() - t0


# ===== wrk =====

def percentile(hist, p):
    """wrk's percentile of a {value: count} histogram (src/stats.c, stats_percentile)."""
    total = sum(hist.values())
    rank, seen = round(p / 100 * total + 0.5), 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= rank:
            return v
    return 0


def uncorrect(corrected, interval):
    """Undo wrk's correction for coordinated omission (src/stats.c, stats_correct): every
    answer that took n >= 2 * interval added one sample at each n - k * interval above
    interval. Rebuilt from the top down; checked by doing the correction again. None when
    the check fails."""
    raw = {}
    for m in sorted(corrected, reverse=True):
        c = corrected[m]
        if m > interval:
            c -= sum(raw.get(m + k * interval, 0) for k in range(1, (max(corrected) - m) // interval + 1))
        if c < 0:
            return None
        if c:
            raw[m] = c
    again = dict(raw)
    for n, c in raw.items():
        m = n - interval
        while n >= 2 * interval and m > interval:
            again[m] = again.get(m, 0) + c
            m -= interval
    return raw if again == corrected else None


def wrk(url, reqfile, override=None, conns=CONNS, duration=DURATION_S, threads=WRK_THREADS, pace_ms=None):
    """One wrk run: its figures (corrected for coordinated omission, as wrk reports them),
    plus raw_p50_us/raw_p99_us/raw_p999_us and stalls_10ms (answers that took 10 ms or
    more) from the histogram with the correction undone (None when it could not be).
    pace_ms: each connection waits that long between an answer and its next request."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "-s", LUA, url,
           "--", reqfile] + ([override] if override else [])
    env = dict(os.environ)
    env.pop("BENCH_PACE_MS", None)
    if pace_ms is not None:
        env["BENCH_PACE_MS"] = str(pace_ms)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                       preexec_fn=raise_nofile, env=env)
    m = re.search(r"^BENCH (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}")
    r = json.loads(m.group(1))
    hist = {v: c for v, c in r.pop("hist", [])}
    per_conn = r["requests"] // conns
    raw = uncorrect(hist, r["duration_us"] // per_conn) if hist and per_conn > 0 else None
    for q, key in ((50, "raw_p50_us"), (99, "raw_p99_us"), (99.9, "raw_p999_us")):
        r[key] = percentile(raw, q) if raw else None
    r["stalls_10ms"] = sum(c for v, c in raw.items() if v >= 10000) if raw else None
    return r


# ===== The fixed-count client (callgrind) and the mint burst =====

def fixed_requests(port, reqs, n, nconn=2, walk=False, conns=None):
    """n GET requests over nconn keep-alive connections, random ones or (walk) every one
    in order on each connection; returns the status counts. conns: open connections to use
    (and leave open) instead of new ones, so that each stays on the worker it landed on."""
    counts = {}
    lock = threading.Lock()
    if conns is not None:
        nconn = len(conns)

    def run(idx):
        rnd = random.Random(1000 + idx)
        c = conns[idx] if conns is not None else http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local = {}
        for i in range(n // nconn):
            path, key = reqs[i % len(reqs) if walk else rnd.randrange(len(reqs))]
            c.request("GET", path, headers={"Authorization": "Bearer " + key})
            r = c.getresponse()
            r.read()
            local[r.status] = local.get(r.status, 0) + 1
        if conns is None:
            c.close()
        with lock:
            for k, v in local.items():
                counts[k] = counts.get(k, 0) + v
    ts = [threading.Thread(target=run, args=(i,)) for i in range(nconn)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts


async def _one(port, path, key):
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                  "Connection: close\r\n\r\n").encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - t0


async def _burst(port, items):
    return await asyncio.gather(*[_one(port, p, k) for p, k in items])


def burst(port, items):
    raise_nofile()
    t0 = time.monotonic()
    res = asyncio.run(_burst(port, items))
    return res, time.monotonic() - t0


# ===== The other servers =====

def start_h2o(port, docroot, probe="/token.json", name="h2o", access_log=False):
    """Debian's h2o serving docroot (2 threads); access_log: one line per request holding
    the client's port, so that the upstream connections a proxy opened can be counted."""
    conf = os.path.join(WORK, f"{name}.conf")
    log = (f"access-log:\n  path: {os.path.join(WORK, name + '.access.log')}\n  format: \"%{{remote}}p\"\n"
           if access_log else "")
    with open(conf, "w") as f:
        f.write(f"""listen:
  host: 127.0.0.1
  port: {port}
num-threads: 2
error-log: {os.path.join(WORK, name + '.error.log')}
{log}hosts:
  default:
    paths:
      /:
        file.dir: {docroot}
""")
    p = spawn(["h2o", "-c", conf], f"{name}.log")
    H.wait_until(lambda: H.http_request("GET", f"http://127.0.0.1:{port}{probe}", timeout=2).status == 200,
                 15, interval=0.05, what=name)
    return p


def start_nginx(port, upstream_port):
    """Debian's nginx as the reverse proxy an operator would otherwise put in front of
    Stripe: proxy_pass with upstream keep-alive and a fixed Authorization header."""
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 2;
daemon off;
pid {WORK}/nginx.pid;
error_log {WORK}/nginx.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream stripe {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://stripe;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {PROXY_UPSTREAM_BEARER}";
        }}
    }}
}}
""")
    p = spawn(["nginx", "-c", conf, "-p", WORK], "nginx.log")
    H.wait_until(lambda: H.http_request("GET", f"http://127.0.0.1:{port}{STRIPE_PATH}", timeout=2).status == 200,
                 15, interval=0.05, what="nginx")
    return p


def start_webdis(port, redis_port):
    conf = os.path.join(WORK, "webdis.json")
    with open(conf, "w") as f:
        json.dump({"redis_host": "127.0.0.1", "redis_port": redis_port, "redis_auth": None,
                   "http_host": "127.0.0.1", "http_port": port, "threads": 2, "daemonize": False,
                   "database": 0, "verbosity": 0, "logfile": os.path.join(WORK, "webdis.log")}, f)
    p = spawn(["webdis", conf], "webdis.out")
    H.wait_until(lambda: H.http_request("GET", f"http://127.0.0.1:{port}/GET/{WEBDIS_KEY}", timeout=2).status == 200,
                 15, interval=0.05, what="webdis")
    return p


# ===== The Stripe proxy =====

CUSTOMER = {"id": "cus_bench", "object": "customer", "address": None, "balance": 0, "created": 1733440000,
            "currency": "usd", "default_source": None, "delinquent": False, "description": "bench",
            "email": "buyer@example.com", "invoice_prefix": "B3NCH001", "livemode": False,
            "metadata": {"sf_account": "001000000000001AAA", "pad": "x" * 700}, "name": "Bench Buyer",
            "phone": None, "preferred_locales": [], "shipping": None, "tax_exempt": "none"}


def start_stripe_stand_ins():
    """h2o playing Stripe (a static customer object at STRIPE_PATH, with an access log of
    client ports) and nginx proxying to it; returns (h2o port, nginx port, body)."""
    docroot = os.path.join(WORK, "stripe")
    os.makedirs(os.path.join(docroot, "v1", "customers"))
    body = json.dumps(CUSTOMER).encode()
    with open(os.path.join(docroot, STRIPE_PATH.lstrip("/")), "wb") as f:
        f.write(body)
    for d, _, files in os.walk(WORK):
        os.chmod(d, 0o755)
        for x in files:
            os.chmod(os.path.join(d, x), 0o644)
    up, ng = H.free_port(), H.free_port()
    start_h2o(up, docroot, probe=STRIPE_PATH, name="stripe-h2o", access_log=True)
    start_nginx(ng, up)
    return up, ng, body


def upstream_ports():
    """Distinct client ports the Stripe stand-in saw (one access-log line per request)."""
    try:
        with open(os.path.join(WORK, "stripe-h2o.access.log")) as f:
            return {line.strip() for line in f if line.strip()}
    except FileNotFoundError:
        return set()


def proxy_phase(broker, pairs, up_port, ng_port, body):
    """The Stripe proxy against the same upstream reached directly and through nginx:
    ROUNDS interleaved rounds at the limit, a paced point per target, then a SOAK_S soak
    of proxied calls with the broker's RSS sampled. Every org, at random, with its key."""
    reqfile = os.path.join(WORK, "proxy-requests.txt")
    with open(reqfile, "w") as f:
        for o, k in pairs:
            f.write(f"/v1/orgs/{o}/stripe/live{STRIPE_PATH} {k}\n")
    o, k = pairs[0]
    r = H.http_request("GET", broker.url(f"/v1/orgs/{o}/stripe/live{STRIPE_PATH}"),
                       headers={"Authorization": "Bearer " + k})
    assert r.status == 200 and r.body == body, r.describe()
    targets = {"direct": (f"http://127.0.0.1:{up_port}", STRIPE_PATH),
               "nginx": (f"http://127.0.0.1:{ng_port}", STRIPE_PATH), "proxy": (broker.base, None)}
    out = {"rounds": [], "paced": [], "body_len": len(body)}
    for i in range(ROUNDS):
        res, paced = {}, {}
        for t in PROXY_TARGETS:
            url, override = targets[t]
            wrk(url, reqfile, override, duration=WARMUP_S)
            before = upstream_ports() if t == "proxy" else None
            res[t] = wrk(url, reqfile, override)
            if t == "proxy":
                res[t]["upstream_conns"] = len(upstream_ports() - before)
            say(f"proxy round {i + 1} {t}: {res[t]['rps']:,.0f} req/s, p50 {fmt_ms(res[t]['p50_us'])} ms, "
                f"p99 {fmt_ms(res[t]['p99_us'])} ms, non-2xx {res[t]['non2xx']}")
        for t in PROXY_TARGETS:
            url, override = targets[t]
            paced[t] = wrk(url, reqfile, override, conns=PROXY_PACED_CONNS, pace_ms=PACE_MS)
            say(f"proxy round {i + 1} {t} paced ({PACE_MS} ms): {paced[t]['rps']:,.0f} req/s, "
                f"p50 {fmt_ms(paced[t]['p50_us'])} ms, p99 {fmt_ms(paced[t]['p99_us'])} ms")
        out["rounds"].append(res)
        out["paced"].append(paced)
    say(f"proxy soak {SOAK_S} s")
    out["soak"] = soak(broker, reqfile, SOAK_S)
    say(f"  {out['soak']['wrk']['rps']:,.0f} req/s, RSS {out['soak']['first_kib']} → "
        f"{out['soak']['last_kib']} KiB")
    return out


def soak(broker, reqfile, seconds, perf_s=0):
    """wrk for `seconds` with the broker's RSS sampled every 2 s; growth is from 10 s on."""
    samples = []
    stop_sampling = threading.Event()
    t0 = time.monotonic()

    def sampler():
        while not stop_sampling.wait(2.0):
            samples.append((time.monotonic() - t0, proc_status(broker.proc.pid).get("VmRSS", 0)))
    th = threading.Thread(target=sampler)
    th.start()
    perf = perf_start(broker.proc.pid, perf_s) if perf_s else None
    w = wrk(broker.base, reqfile, duration=seconds)
    stop_sampling.set()
    th.join()
    after10 = [k for t, k in samples if t >= 10] or [samples[0][1]]
    out = {"wrk": w, "samples": samples, "first_kib": after10[0], "last_kib": samples[-1][1],
           "growth_kib": samples[-1][1] - after10[0]}
    if perf is not None:
        try:
            out["perf"] = perf_report(perf)
        except (OSError, subprocess.SubprocessError) as e:
            say(f"perf report failed: {e}")
            out["perf"] = None
    return out


def proxy_section(px):
    """results.md's section on the Stripe proxy (also the whole of proxy-results.md)."""
    L = []
    w = L.append
    w("## The Stripe proxy")
    w("")
    w(f"Debian's h2o plays Stripe: a static customer object ({px['body_len']} bytes) at `{STRIPE_PATH}`. "
      f"*direct* is wrk straight at it; *nginx* is Debian's nginx in front of it (`proxy_pass`, upstream "
      f"keep-alive, a fixed `Authorization` header: what an operator would otherwise put in front of Stripe); "
      f"*proxy* is the broker's `GET /v1/orgs/{{org}}/stripe/live{STRIPE_PATH}` with the org's key, a random org "
      f"of the seeded ones per request (key check, the org's sealed connection, one upstream call on a reused "
      f"connection). wrk -t{WRK_THREADS} -c{CONNS}, {WARMUP_S} s warm-up then {DURATION_S} s per point, the "
      "same Lua client; plain HTTP on loopback, so TLS reuse shows in the connection count, not the latency.")
    w("")
    w("| round | target | requests/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | socket errors | vs nginx |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(px["rounds"]):
        for t in PROXY_TARGETS:
            x = r[t]
            errs = x["err_connect"] + x["err_read"] + x["err_write"] + x["err_timeout"]
            w(f"| {i + 1} | {t} | {x['rps']:,.0f} | {fmt_ms(x['p50_us'])} | {fmt_ms(x['p90_us'])} | "
              f"{fmt_ms(x['p99_us'])} | {fmt_ms(x['max_us'])} | {x['non2xx']} | {errs} | "
              f"{x['rps'] / r['nginx']['rps']:.2f} |")
    w("")
    w(f"Paced, a light load: each of {PROXY_PACED_CONNS} connections waits {PACE_MS} ms between an answer and "
      "its next request, so latency is the path's own, not a wait for a core.")
    w("")
    w("| round | target | requests/s | p50 ms | p90 ms | p99 ms | p50 over direct ms |")
    w("|---|---|---:|---:|---:|---:|---:|")
    for i, r in enumerate(px["paced"]):
        for t in PROXY_TARGETS:
            x = r[t]
            w(f"| {i + 1} | {t} | {x['rps']:,.0f} | {fmt_ms(x['p50_us'])} | {fmt_ms(x['p90_us'])} | "
              f"{fmt_ms(x['p99_us'])} | {fmt_ms(x['p50_us'] - r['direct']['p50_us'])} |")
    w("")
    sk = px["soak"]
    conns = [r["proxy"].get("upstream_conns") for r in px["rounds"]]
    w(f"- upstream connections the broker opened per {DURATION_S} s point of {CONNS} client connections: "
      f"{', '.join(str(c) for c in conns)} (each worker keeps and reuses them)")
    w(f"- soak, {SOAK_S} s of proxied calls at {CONNS} connections: {sk['wrk']['rps']:,.0f} req/s, non-2xx "
      f"{sk['wrk']['non2xx']}; RSS {sk['first_kib'] / 1024:.1f} MiB at 10 s → {sk['last_kib'] / 1024:.1f} MiB "
      f"at the end (growth {sk['growth_kib']} KiB); samples (s: MiB): "
      + ", ".join(f"{t:.0f}: {k / 1024:.1f}" for t, k in sk["samples"]))
    w("")
    thr = [r["proxy"]["rps"] / r["nginx"]["rps"] for r in px["rounds"]]
    add = [r["proxy"]["p50_us"] - r["direct"]["p50_us"] for r in px["paced"]]

    def ok(c):
        return "met" if c else "**not met**"
    w("| target | measured | |")
    w("|---|---|---|")
    w(f"| proxy ≥ 0.7 × nginx's throughput | {', '.join(f'{x:.2f}' for x in thr)} | {ok(min(thr) >= 0.7)} |")
    w(f"| added p50 at the paced point ≤ 0.3 ms over direct | {', '.join(fmt_ms(x) for x in add)} ms | "
      f"{ok(max(add) <= 300)} |")
    w(f"| no RSS growth over the {SOAK_S} s soak | {sk['growth_kib']} KiB | {ok(sk['growth_kib'] <= 1024)} |")
    w(f"| zero non-2xx | {sum(r['proxy']['non2xx'] for r in px['rounds']) + sk['wrk']['non2xx']} | "
      f"{ok(sum(r['proxy']['non2xx'] for r in px['rounds']) + sk['wrk']['non2xx'] == 0)} |")
    w("")
    return L


# ===== callgrind =====

def callgrind_phase(env, reqs_token, reqs_health):
    port = H.free_port()
    env = dict(env, BROKER_LISTEN=f"127.0.0.1:{port}", BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}")
    full = H._base_env()
    full.update(env)
    cgdir = os.path.join(WORK, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    p = spawn(["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={cgdir}/callgrind.out.%p", H.broker_bin()],
              "callgrind.broker.log", env=full, cwd=REPO)
    H.wait_until(lambda: H.http_request("GET", f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200,
                 90, interval=0.2, what="broker under callgrind")
    # warm-up (uninstrumented): pools, OpenSSL and hiredis reach their steady state, and
    # every org is visited on each connection (each worker), so that the measured requests
    # are the steady state, not first visits (opening a record costs ~200k instructions)
    # The same two connections for the warm-up and the measured requests: a new one could
    # land on the other worker, whose cache the warm-up did not fill (each worker caches
    # for itself), and every org's first visit there would count as an open.
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(2)]
    fixed_requests(port, reqs_token, 2 * len(reqs_token), walk=True, conns=conns)
    fixed_requests(port, reqs_health, 500, conns=conns)

    def ctl(*args):
        subprocess.run(["callgrind_control", *args, str(p.pid)], check=True, capture_output=True, timeout=120)
    ctl("-i", "on")
    out = {}
    for name, reqs in (("token", reqs_token), ("healthz", reqs_health)):
        before = cache_events(port)
        ctl("-z")
        counts = fixed_requests(port, reqs, CG_REQUESTS, conns=conns)
        ctl("-d", name)
        after = cache_events(port)
        out[name] = {"counts": counts, "cache": {k: after[k] - before.get(k, 0) for k in after}}
    for c in conns:
        c.close()
    stop(p, timeout=60)
    for name in out:
        files = [f for f in glob.glob(f"{cgdir}/callgrind.out.{p.pid}*") if _dump_reason(f) == name]
        ir = 0
        for f in files:
            ir += _dump_total(f)
        out[name]["ir"] = ir
        out[name]["ir_per_req"] = ir / CG_REQUESTS
        out[name]["files"] = files
    return out


def cache_events(port):
    """The read cache's event counters (stb_read_cache_events_total) of the broker on port."""
    r = H.http_request("GET", f"http://127.0.0.1:{port}/metrics", timeout=30)
    out = {}
    for line in r.body.decode().splitlines():
        m = re.match(r'^stb_read_cache_events_total\{event="(\w+)"\} (\S+)$', line)
        if m:
            out[m.group(1)] = int(float(m.group(2)))
    return out


def _dump_reason(path):
    with open(path, errors="replace") as f:
        for _ in range(40):
            line = f.readline()
            m = re.match(r"^desc: Trigger: (?:Client Request: |dump )?(\S+)", line)
            if m:
                return m.group(1)
    return None


def _dump_total(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


def annotate(files, inclusive):
    cmd = ["callgrind_annotate", "--threshold=99", f"--inclusive={'yes' if inclusive else 'no'}"] + files
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    rows = []
    for line in p.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$", line)
        if m and not m.group(3).startswith("PROGRAM TOTALS"):
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3).strip()))
    return rows


def short_fn(s):
    # "file:function [object]" -> "function (object)"
    m = re.match(r"^(?:(.*?):)?(.+?)(?: \[(.*)\])?$", s)
    if not m:
        return s
    fn, obj = m.group(2), os.path.basename(m.group(3) or "")
    return f"{fn} ({obj})" if obj else fn


# ===== perf (software clock; no hardware counters in a VM) =====

def perf_start(pid, seconds):
    if shutil.which("perf") is None:
        return None
    data = os.path.join(WORK, "perf.data")
    return (spawn(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(pid), "-o", data,
                   "--", "sleep", str(seconds)], "perf.log"), data)


def perf_report(handle):
    if handle is None:
        return []
    p, data = handle
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stop(p)
    if not os.path.exists(data):
        return []
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
                        "-g", "none", "--percent-limit", "1.2"], capture_output=True, text=True, timeout=300)
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()))
    k = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
                       capture_output=True, text=True, timeout=300)
    dsos = []
    for line in k.stdout.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s*$", line)
        if m:
            dsos.append((float(m.group(1)), m.group(2)))
    return rows, dsos


# ===== Report =====

def fmt_ms(us):
    return f"{us / 1000:.2f}"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}"


def versions():
    def first(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return {"wrk": first(["wrk", "--version"]), "h2o": first(["h2o", "--version"]),
            "redis": first(["redis-server", "--version"]), "valgrind": first(["valgrind", "--version"])}


def revision():
    try:
        p = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                           text=True, timeout=10)
        return p.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def plot(rows, path):
    if shutil.which("gnuplot") is None:
        return False
    dat = os.path.join(WORK, "lat.dat")
    with open(dat, "w") as f:
        for t in TARGETS:
            r = rows[t]
            f.write(f"{t} {r['p50_us'] / 1000:.4f} {r['p90_us'] / 1000:.4f} {r['p99_us'] / 1000:.4f} "
                    f"{r['p999_us'] / 1000:.4f}\n")
    gp = os.path.join(WORK, "lat.gp")
    with open(gp, "w") as f:
        f.write(f"""set terminal pngcairo size 900,520 noenhanced font 'sans,10'
set output '{path}'
set title 'Latency percentiles, wrk -t{WRK_THREADS} -c{CONNS}, {DURATION_S} s (median round per target)'
set ylabel 'latency (ms, log scale)'
set logscale y
set grid ytics
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left
set xrange [-0.6:3.6]
set yrange [0.05:*]
plot '{dat}' using 2:xtic(1) title 'p50', '' using 3 title 'p90', '' using 4 title 'p99', '' using 5 title 'p99.9'
""")
    for term in ("pngcairo", "png"):
        if term == "png":
            with open(gp) as f:
                txt = f.read().replace("pngcairo size 900,520 noenhanced font 'sans,10'", "png size 900,520")
            with open(gp, "w") as f:
                f.write(txt)
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and os.path.exists(path) and os.path.getsize(path) > 0:
            return True
    return False


def median_row(samples):
    """The per-target sample with the median requests/s."""
    s = sorted(samples, key=lambda r: r["rps"])
    return s[(len(s) - 1) // 2]


def write_results(ctx):
    R = ctx["rounds"]
    med = {t: median_row([r[t] for r in R]) for t in TARGETS}
    L = []
    w = L.append
    w("# Benchmark results (`make bench`)")
    w("")
    w(f"- date: {ctx['date']}")
    w(f"- machine: {ctx['machine']}")
    w(f"- load average before / after: {ctx['load_before']} / {ctx['load_after']} "
      "(the cores are shared with other builds and tests; compare ratios within one run)")
    w(f"- tools: {'; '.join(f'{k}: {v}' for k, v in ctx['versions'].items())}")
    w(f"- broker: `{os.path.relpath(H.broker_bin(), REPO)}` built from {ctx['rev']}, BROKER_THREADS=2, connect flavor, log level info "
      "(one JSON line per request to a file), rate limits at their defaults except the per-IP "
      "limit of browser pages (off, so that one client can seed 1,000 orgs), Redis 7 on loopback TCP")
    w(f"- load: wrk -t{WRK_THREADS} -c{CONNS}, {WARMUP_S} s warm-up then {DURATION_S} s per point, "
      f"{len(R)} interleaved round(s); the same Lua client for every target (tests/bench/bench.lua)")
    w(f"- {ctx['orgs']} orgs seeded through the public API and the browser flow in {ctx['seed_s']:.1f} s; "
      f"response body {ctx['body_len']} bytes for every target")
    w("")
    w("## Throughput and latency")
    w("")
    w("| round | target | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 raw ms | answers ≥ 10 ms | non-2xx | socket errors | server CPU µs / answer (user) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"broker": "broker getAccessToken", "h2o": "h2o static file", "webdis": "webdis GET",
             "healthz": "broker /healthz"}
    for i, r in enumerate(R):
        for t in TARGETS:
            x = r[t]
            errs = x["err_connect"] + x["err_read"] + x["err_write"] + x["err_timeout"]
            raw = fmt_ms(x["raw_p99_us"]) if x.get("raw_p99_us") is not None else "—"
            stalls = x["stalls_10ms"] if x.get("stalls_10ms") is not None else "—"
            w(f"| {i + 1} | {names[t]} | {x['rps']:,.0f} | {fmt_ms(x['p50_us'])} | {fmt_ms(x['p90_us'])} | "
              f"{fmt_ms(x['p99_us'])} | {fmt_ms(x['p999_us'])} | {fmt_ms(x['max_us'])} | {raw} | {stalls} | "
              f"{x['non2xx']} | {errs} | {x['usr_us'] + x['sys_us']:.1f} ({x['usr_us']:.1f}) |")
    w("")
    w("Latencies are wrk's, which are corrected for coordinated omission (every answer that took "
      "*L* adds samples as if the requests held back meanwhile had been sent); *p99 raw* and "
      "*answers ≥ 10 ms* are from the same histogram with the correction undone "
      "(`tests/bench/notes.md`, *What wrk's p99 is*). *Server CPU* is the server process's user + system "
      "time over the point (`/proc/PID/stat`, all its threads) divided by the answers wrk counted; user "
      "time in brackets. The kernel's share is mostly loopback TCP and epoll, the same work for every "
      "server; for webdis, Redis's own CPU is not counted.")
    w("")
    w("Ratios (same round):")
    w("")
    w("| round | broker / h2o (target ≥ 0.70) | broker / webdis (target ≥ 1.2) | broker / healthz |")
    w("|---|---:|---:|---:|")
    for i, r in enumerate(R):
        b = r["broker"]["rps"]
        w(f"| {i + 1} | {b / r['h2o']['rps']:.2f} | {b / r['webdis']['rps']:.2f} | {b / r['healthz']['rps']:.2f} |")
    w("")
    w("![latency percentiles](latency.png)")
    w("")
    w(f"### Below the limit (not a target): a paced load")
    w("")
    w(f"The points above are closed loops at the limit: wrk sends the next request as soon as an answer "
      f"comes, so every thread on the two cores is always runnable, and latency is mostly the wait for a "
      f"core. Here each of the {CONNS} connections waits {PACE_MS} ms between an answer and its next request "
      f"(wrk's `delay()`), so the load is below what the machine can take. Same round, same client.")
    w("")
    w("| round | target | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 raw ms | non-2xx |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(ctx["paced"]):
        for t in PACED:
            x = r[t]
            raw = fmt_ms(x["raw_p99_us"]) if x.get("raw_p99_us") is not None else "—"
            w(f"| {i + 1} | {names[t]} | {x['rps']:,.0f} | {fmt_ms(x['p50_us'])} | {fmt_ms(x['p90_us'])} | "
              f"{fmt_ms(x['p99_us'])} | {fmt_ms(x['p999_us'])} | {fmt_ms(x['max_us'])} | {raw} | {x['non2xx']} |")
    w("")
    L.extend(proxy_section(ctx["proxy"]))
    w("## Memory")
    w("")
    big = ctx["big"]
    soak = ctx["soak"]
    w(f"- broker peak RSS (VmHWM) over the whole run: **{ctx['hwm_kib'] / 1024:.1f} MiB** (target ≤ 32 MiB)")
    w(f"- at {BIG_CONNS} connections (wrk -c{BIG_CONNS}, {DURATION_S} s): {big['rps']:,.0f} req/s, "
      f"p99 {fmt_ms(big['p99_us'])} ms, non-2xx {big['non2xx']}, socket errors "
      f"{big['err_connect'] + big['err_read'] + big['err_write'] + big['err_timeout']}, "
      f"non-2xx by status {big.get('by_status') or {}}, RSS after {big['rss_kib'] / 1024:.1f} MiB")
    w(f"- soak, {SOAK_S} s at {CONNS} connections: {soak['wrk']['rps']:,.0f} req/s, non-2xx "
      f"{soak['wrk']['non2xx']}; RSS {soak['first_kib'] / 1024:.1f} MiB at 10 s → "
      f"{soak['last_kib'] / 1024:.1f} MiB at the end (growth {soak['growth_kib']} KiB); "
      f"samples (s: MiB): " + ", ".join(f"{t:.0f}: {k / 1024:.1f}" for t, k in soak["samples"]))
    w("")
    w("## Instructions per request (callgrind, repeatable)")
    w("")
    cg = ctx["callgrind"]
    w(f"{CG_REQUESTS} random requests after an uninstrumented warm-up that visits every org on the same "
      "2 keep-alive connections (one per worker, unless both landed on one); all threads, user space only "
      "(the kernel's socket work is not "
      "counted). Two sequential connections keep each worker quiet, so this is the quiet path: every request "
      "reads Redis, and the answer kept with the cache entry is reused while Redis returns the same bytes.")
    w("")
    w("| request | instructions / request | statuses |")
    w("|---|---:|---|")
    for name, label in (("token", "getAccessToken"), ("healthz", "/healthz")):
        w(f"| {label} | {cg[name]['ir_per_req']:,.0f} | {cg[name]['counts']} |")
    w("")
    w(f"The read cache's events during the measured getAccessToken requests: {cg['token'].get('cache')} "
      "(a `flush` or an `invalidation` makes the next request of each org affected open its record "
      "again, about 200,000 instructions each).")
    w("")
    w(f"getAccessToken minus /healthz: {cg['token']['ir_per_req'] - cg['healthz']['ir_per_req']:,.0f} "
      "instructions (the key check — SHA-256 of the presented key and constant-time comparisons — and the "
      "Redis round trip).")
    w("")
    w("Where the getAccessToken instructions go (exclusive, top functions):")
    w("")
    w("| instructions / request | % | function (object) |")
    w("|---:|---:|---|")
    for ir, pct, fn in cg["excl"][:25]:
        w(f"| {ir / CG_REQUESTS:,.0f} | {pct:.1f} | `{short_fn(fn)}` |")
    w("")
    w("Inclusive, broker functions on the request path:")
    w("")
    w("| instructions / request | % | function |")
    w("|---:|---:|---|")
    shown = 0
    for ir, pct, fn in cg["incl"]:
        if "stripe-token-broker" not in fn or shown >= 25:
            continue
        shown += 1
        w(f"| {ir / CG_REQUESTS:,.0f} | {pct:.1f} | `{short_fn(fn)}` |")
    w("")
    if ctx.get("perf"):
        rows, dsos = ctx["perf"]
        w(f"## Where the time goes under load (perf, cpu-clock, first 10 s of the soak, broker process)")
        w("")
        w("| % of broker CPU samples | object |")
        w("|---:|---|")
        for pct, dso in dsos[:10]:
            w(f"| {pct:.1f} | {dso} |")
        w("")
        w("| % | object | symbol |")
        w("|---:|---|---|")
        for pct, dso, kind, sym in rows[:30]:
            w(f"| {pct:.1f} | {dso} | `{sym}` |")
        w("")
    m = ctx["mint"]
    w("## The mint path (connect, test minted from live)")
    w("")
    w(f"{m['n']} orgs connected in live mode only; the simulator answers each token call after "
      f"{MINT_DELAY_MS} ms; {m['n']} concurrent GET …/access-token?mode=test, one per org, each on its "
      "own connection.")
    w("")
    w(f"- wall time: **{m['wall_s']:.2f} s** (target < 5 s; serialised calls would take "
      f"{m['n'] * MINT_DELAY_MS / 1000:.0f} s)")
    w(f"- statuses: {m['statuses']}")
    w(f"- per-request latency: p50 {m['p50_ms']:.0f} ms, p99 {m['p99_ms']:.0f} ms, max {m['max_ms']:.0f} ms")
    w(f"- Stripe token calls during the burst: **{m['calls']}** (expected exactly {m['n']})")
    w(f"- then every org again: statuses {m['again_statuses']}, new Stripe calls {m['again_calls']} "
      "(the minted tokens are served from Redis)")
    w("")
    w("## Targets")
    w("")
    bh = [r["broker"]["rps"] / r["h2o"]["rps"] for r in R]
    bw = [r["broker"]["rps"] / r["webdis"]["rps"] for r in R]
    p99 = [r["broker"]["p99_us"] for r in R]
    non = sum(r["broker"]["non2xx"] for r in R)

    def ok(c):
        return "met" if c else "**not met**"
    w("| target | measured | |")
    w("|---|---|---|")
    w(f"| broker ≥ 0.70 × h2o static | {', '.join(f'{x:.2f}' for x in bh)} | {ok(min(bh) >= 0.70)} |")
    w(f"| broker ≥ 1.2 × webdis | {', '.join(f'{x:.2f}' for x in bw)} | {ok(min(bw) >= 1.2)} |")
    raw99 = ", ".join(fmt_ms(r["broker"]["raw_p99_us"]) if r["broker"].get("raw_p99_us") else "—" for r in R)
    w(f"| p99 ≤ 3 ms at {CONNS} connections (wrk's; raw in brackets) | {', '.join(fmt_ms(x) for x in p99)} ms "
      f"({raw99}) | {ok(max(p99) <= 3000)} |")
    w(f"| zero non-2xx | {non} | {ok(non == 0)} |")
    w(f"| peak RSS ≤ 32 MiB | {ctx['hwm_kib'] / 1024:.1f} MiB | {ok(ctx['hwm_kib'] <= 32 * 1024)} |")
    w(f"| no growth over a {SOAK_S} s soak | {soak['growth_kib']} KiB | {ok(soak['growth_kib'] <= 1024)} |")
    w(f"| mint: all succeed, exactly {m['n']} Stripe calls, < 5 s | {m['statuses']}, {m['calls']} calls, "
      f"{m['wall_s']:.2f} s | {ok(m['statuses'] == {200: m['n']} and m['calls'] == m['n'] and m['wall_s'] < 5)} |")
    w("")
    notes = os.path.join(BENCH_DIR, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            w(f.read().rstrip())
        w("")
    with open(os.path.join(OUT_DIR, "results.md"), "w") as f:
        f.write("\n".join(L))
    return med


def write_proxy_only(ctx, px):
    path = os.path.join(OUT_DIR, "proxy-results.md")
    with open(path, "w") as f:
        f.write("\n".join(["# Stripe proxy benchmark (`make bench-proxy`)", "",
                           f"- date: {ctx['date']}; machine: {ctx['machine']}; broker built from {ctx['rev']}; "
                           f"{ctx['orgs']} orgs",
                           f"- load average before: {ctx['load_before']}, after: {loadavg()}; `make bench` has "
                           "this section too, beside getAccessToken's", ""] + proxy_section(px)))
    say(f"wrote {path}")


# ===== Main =====

def main():
    for tool in ("wrk", "h2o", "nginx", "webdis", "redis-server", "valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing (apt-get install -y wrk h2o nginx-light webdis gnuplot-nox "
                     "valgrind)")
    if not os.path.exists(H.broker_bin()):
        sys.exit(f"bench: {H.broker_bin()} does not exist (make, or set BROKER_BIN)")
    raise_nofile()
    ctx = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
           "versions": versions(), "load_before": loadavg(), "orgs": ORGS, "rev": revision()}
    stack = None
    try:
        say(f"work dir {WORK}; starting redis, the simulator and the broker ({H.broker_bin()})")
        stack = H.Stack("bench", broker=False)
        stack.sim.config(authorize="approve")
        up_port, ng_port, stripe_body = start_stripe_stand_ins()
        # the per-IP limit applies to browser pages only; seeding walks 1,000 flows from one IP
        extra = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_BROKER_ENV", "").split() if "=" in kv)
        broker = stack.new_broker("broker", BROKER_THREADS="2", BROKER_UPSTREAM_TIMEOUT_MS="5000",
                                  BROKER_RATE_LIMIT_IP_PER_MIN="0", STRIPE_API_URL=f"http://127.0.0.1:{up_port}",
                                  **extra)
        stack.broker = broker   # stopped by stack.close()
        say(f"seeding {ORGS} orgs (API key + browser flow, live mode)")
        pairs, ctx["seed_s"] = seed(broker, stack.sim, ORGS)
        say(f"seeded in {ctx['seed_s']:.1f} s")
        if ONLY_PROXY:
            write_proxy_only(ctx, proxy_phase(broker, pairs, up_port, ng_port, stripe_body))
            return

        token_reqs = [(f"/v1/orgs/{o}/access-token?mode=live", k) for o, k in pairs]
        reqfile = os.path.join(WORK, "requests.txt")
        with open(reqfile, "w") as f:
            for p, k in token_reqs:
                f.write(f"{p} {k}\n")
        # every org answers, and the body size of the answer
        lens = []
        for p, k in token_reqs:
            r = H.http_request("GET", broker.url(p), headers={"Authorization": "Bearer " + k})
            assert r.status == 200, r.describe()
            lens.append(len(r.body))
        body_len = int(statistics.median(lens))
        ctx["body_len"] = body_len
        docroot = os.path.join(WORK, "www")
        os.makedirs(docroot)
        os.chmod(WORK, 0o755)
        os.chmod(docroot, 0o755)
        with open(os.path.join(docroot, "token.json"), "w") as f:
            f.write('{"pad":"' + "x" * (body_len - 10) + '"}')
        os.chmod(os.path.join(docroot, "token.json"), 0o644)
        rc = stack.rc()
        rc.command("SET", WEBDIS_KEY, "x" * (body_len - len('{"GET":""}')))
        rc.close()

        h2o_port, webdis_port = H.free_port(), H.free_port()
        h2o_proc = start_h2o(h2o_port, docroot)
        webdis_proc = start_webdis(webdis_port, stack.redis.port)
        for url in (f"http://127.0.0.1:{h2o_port}/token.json", f"http://127.0.0.1:{webdis_port}/GET/{WEBDIS_KEY}"):
            r = H.http_request("GET", url)
            assert r.status == 200 and len(r.body) == body_len, (url, r.status, len(r.body), body_len)

        targets = {
            "broker": (broker.base, None),
            "h2o": (f"http://127.0.0.1:{h2o_port}", "/token.json"),
            "webdis": (f"http://127.0.0.1:{webdis_port}", f"/GET/{WEBDIS_KEY}"),
            "healthz": (broker.base, "/healthz"),
        }
        pids = {"broker": broker.proc.pid, "h2o": h2o_proc.pid, "webdis": webdis_proc.pid,
                "healthz": broker.proc.pid}
        rounds, paced_rounds = [], []
        for i in range(ROUNDS):
            res = {}
            for t in TARGETS:
                url, override = targets[t]
                wrk(url, reqfile, override, duration=WARMUP_S)
                cpu0 = cpu_seconds(pids[t])
                res[t] = wrk(url, reqfile, override)
                cpu1 = cpu_seconds(pids[t])
                answers = max(res[t]["requests"], 1)
                res[t]["usr_us"] = (cpu1[0] - cpu0[0]) * 1e6 / answers
                res[t]["sys_us"] = (cpu1[1] - cpu0[1]) * 1e6 / answers
                res[t]["rss_kib"] = proc_status(broker.proc.pid).get("VmRSS", 0)
                say(f"round {i + 1} {t}: {res[t]['rps']:,.0f} req/s, p50 {fmt_ms(res[t]['p50_us'])} ms, "
                    f"p99 {fmt_ms(res[t]['p99_us'])} ms (raw {fmt_ms(res[t]['raw_p99_us']) if res[t]['raw_p99_us'] else '—'}), "
                    f"p99.9 {fmt_ms(res[t]['p999_us'])} ms, "
                    f"non-2xx {res[t]['non2xx']}, CPU {res[t]['usr_us'] + res[t]['sys_us']:.1f} µs/answer "
                    f"(user {res[t]['usr_us']:.1f})")
            rounds.append(res)
            paced = {}
            for t in PACED:
                url, override = targets[t]
                paced[t] = wrk(url, reqfile, override, pace_ms=PACE_MS)
                say(f"round {i + 1} {t} paced ({PACE_MS} ms): {paced[t]['rps']:,.0f} req/s, "
                    f"p50 {fmt_ms(paced[t]['p50_us'])} ms, p99 {fmt_ms(paced[t]['p99_us'])} ms, "
                    f"p99.9 {fmt_ms(paced[t]['p999_us'])} ms, non-2xx {paced[t]['non2xx']}")
            paced_rounds.append(paced)
        ctx["rounds"] = rounds
        ctx["paced"] = paced_rounds
        ctx["proxy"] = proxy_phase(broker, pairs, up_port, ng_port, stripe_body)

        say(f"{BIG_CONNS} connections")
        big = wrk(broker.base, reqfile, conns=BIG_CONNS)
        big["rss_kib"] = proc_status(broker.proc.pid).get("VmRSS", 0)
        ctx["big"] = big
        say(f"  {big['rps']:,.0f} req/s, p99 {fmt_ms(big['p99_us'])} ms, non-2xx {big['non2xx']}, "
            f"RSS {big['rss_kib'] / 1024:.1f} MiB")

        say(f"soak {SOAK_S} s")
        ctx["soak"] = soak(broker, reqfile, SOAK_S, perf_s=min(10, SOAK_S))
        ctx["perf"] = ctx["soak"].pop("perf", None)
        say(f"  {ctx['soak']['wrk']['rps']:,.0f} req/s, RSS {ctx['soak']['first_kib']} → "
            f"{ctx['soak']['last_kib']} KiB")
        ctx["hwm_kib"] = proc_status(broker.proc.pid).get("VmHWM", 0)
        ctx["load_after"] = loadavg()

        say("stopping h2o and webdis; callgrind")
        for p in list(PROCS):
            stop(p)
        env = dict(broker.env)
        broker.stop()
        cg = callgrind_phase(env, token_reqs, [("/healthz", k) for _, k in token_reqs])
        cg["excl"] = annotate(cg["token"]["files"], inclusive=False)
        cg["incl"] = annotate(cg["token"]["files"], inclusive=True)
        ctx["callgrind"] = cg
        say(f"  getAccessToken {cg['token']['ir_per_req']:,.0f} instructions/request, "
            f"/healthz {cg['healthz']['ir_per_req']:,.0f}")

        say(f"mint path: {ORGS} orgs, mode=test at once, simulator token delay {MINT_DELAY_MS} ms")
        broker.start()
        stack.sim.fault(endpoint="token", kind="delay", delay_ms=MINT_DELAY_MS)
        before = stack.sim.calls("token")
        items = [(f"/v1/orgs/{o}/access-token?mode=test", k) for o, k in pairs]
        res, wall = burst(broker.port, items)
        calls = stack.sim.calls("token") - before
        statuses = {}
        for s, _ in res:
            statuses[s] = statuses.get(s, 0) + 1
        lat = sorted(d * 1000 for _, d in res)
        res2, _ = burst(broker.port, items)
        again = {}
        for s, _ in res2:
            again[s] = again.get(s, 0) + 1
        ctx["mint"] = {"n": len(items), "wall_s": wall, "statuses": statuses, "calls": calls,
                       "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99) - 1], "max_ms": lat[-1],
                       "again_statuses": again, "again_calls": stack.sim.calls("token") - before - calls}
        say(f"  wall {wall:.2f} s, statuses {statuses}, Stripe token calls {calls}")
    finally:
        for p in PROCS:
            stop(p)
        if stack is not None:
            stack.close()
        if ONLY_PROXY and not os.environ.get("BENCH_KEEP_WORK"):
            shutil.rmtree(WORK, ignore_errors=True)

    med = write_results(ctx)
    png = os.path.join(OUT_DIR, "latency.png")
    if not plot(med, png):
        say("gnuplot failed or missing: no latency.png")
    say(f"wrote {os.path.join(OUT_DIR, 'results.md')} and {png}")
    if not os.environ.get("BENCH_KEEP_WORK"):
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
