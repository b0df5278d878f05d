#!/usr/bin/env python3
"""proxy_bench.py — `make bench-proxy`: the Stripe proxy (CONTRACT §4.3) under load.

    python3 tests/bench/proxy_bench.py      (BROKER_BIN selects the binary)

Debian's h2o plays Stripe: it serves a static JSON customer object (about 1 KiB) at
/v1/customers/cus_bench. One org is connected through the real browser flow against the
Stripe simulator (the OAuth side), then, for ROUNDS rounds, `wrk -tWRK_THREADS -cCONNS` for
WRK_DURATION_S (tests/bench/bench.lua, the same client work for every target) on
  direct   h2o itself                                   GET /v1/customers/cus_bench
  nginx    Debian's nginx proxy_pass to h2o (keep-alive upstream, 2 workers)
  broker   GET /v1/orgs/{org}/stripe/test/v1/customers/cus_bench with the org key
           (key check and sealed connection from Redis, then the call on a reused
           upstream connection)
and counts the upstream connections h2o saw opened by the broker in a round (kept and
reused by each worker's curl multi handle). Timings are reported, never asserted. Writes BENCH_OUT/proxy-results.md
(default tests/bench/). Every process started here is stopped at the end.
"""

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(BENCH_DIR))
sys.path.insert(0, os.path.join(REPO, "tests", "it"))
import harness as H  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "2"))
CONNS = int(os.environ.get("CONNS", "32"))
WRK_THREADS = int(os.environ.get("WRK_THREADS", "2"))
DURATION_S = int(os.environ.get("WRK_DURATION_S", "5"))
WARMUP_S = int(os.environ.get("WARMUP_S", "1"))
OUT = os.environ.get("BENCH_OUT", BENCH_DIR)
LUA = os.path.join(BENCH_DIR, "bench.lua")
WORK = tempfile.mkdtemp(prefix="stb-proxy-bench-")
PROCS = []

CUSTOMER = {"id": "cus_bench", "object": "customer", "address": None, "balance": 0, "created": 1733440000,
            "currency": "usd", "default_source": None, "delinquent": False, "description": "bench",
            "email": "buyer@example.com", "invoice_prefix": "B3NCH001", "livemode": False,
            "metadata": {"sf_account": "001000000000001AAA", "pad": "x" * 700}, "name": "Bench Buyer",
            "phone": None, "preferred_locales": [], "shipping": None, "tax_exempt": "none"}


def spawn(cmd, log_name):
    logf = open(os.path.join(WORK, log_name), "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    logf.close()
    PROCS.append(p)
    return p


def start_h2o(port, docroot):
    conf = os.path.join(WORK, "h2o.conf")
    with open(conf, "w") as f:
        f.write(f"""listen:
  host: 127.0.0.1
  port: {port}
num-threads: 2
{"user: " + pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""}
error-log: {os.path.join(WORK, 'h2o.error.log')}
access-log:
  path: {os.path.join(WORK, 'h2o.access.log')}
  format: "%{{remote}}p"
hosts:
  default:
    paths:
      /:
        file.dir: {docroot}
""")
    p = spawn(["h2o", "-c", conf], "h2o.log")
    H.wait_until(lambda: H.http_request("GET", f"http://127.0.0.1:{port}/v1/customers/cus_bench",
                                        timeout=2).status == 200, 15, interval=0.05, what="h2o")
    return p


def start_nginx(port, upstream_port):
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 2;
daemon off;
pid {WORK}/nginx.pid;
error_log {WORK}/nginx.error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream stripe {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://stripe;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    p = spawn(["nginx", "-c", conf, "-p", WORK], "nginx.log")
    H.wait_until(lambda: H.http_request("GET", f"http://127.0.0.1:{port}/v1/customers/cus_bench",
                                        timeout=2).status == 200, 15, interval=0.05, what="nginx")
    return p


def wrk(url, reqfile, duration):
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNS}", f"-d{duration}s", "--timeout", "5s", "-s", LUA, url, "--",
           reqfile]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^BENCH (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}")
    r = json.loads(m.group(1))
    r.pop("hist", None)
    return r


def upstream_ports(log):
    """Distinct client ports h2o saw (its access log line is the peer's port)."""
    with open(log) as f:
        return {line.strip() for line in f if line.strip()}


def main():
    for tool in ("wrk", "h2o", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"bench-proxy: {tool} is missing (apt-get install -y wrk h2o nginx-light redis-server)")
    redis = sim = broker = None
    try:
        docroot = os.path.join(WORK, "www", "v1", "customers")
        os.makedirs(docroot)
        body = json.dumps(CUSTOMER)
        with open(os.path.join(docroot, "cus_bench"), "w") as f:
            f.write(body)
        h2o_port, nginx_port, broker_port = H.free_port(), H.free_port(), H.free_port()
        start_h2o(h2o_port, os.path.join(WORK, "www"))
        start_nginx(nginx_port, h2o_port)
        redis = H.RedisServer("bench-proxy")
        sim = H.Sim("bench-proxy")
        env = H.broker_env(broker_port, redis.port, sim.port, BROKER_LOG_LEVEL="warn", BROKER_RATE_LIMIT_ORG_PER_S="0",
                           STRIPE_API_URL=f"http://127.0.0.1:{h2o_port}")
        broker = H.Broker(env, os.path.join(WORK, "broker.log"))
        broker.wait_ready()
        org = H.new_org()
        H.Flow(broker, sim, org, "test").run()
        key = broker.create_api_key(org)["api_key"]

        files = {}
        for name, path, bearer in (("direct", "/v1/customers/cus_bench", "x"),
                                   ("nginx", "/v1/customers/cus_bench", "x"),
                                   ("broker", f"/v1/orgs/{org}/stripe/test/v1/customers/cus_bench", key)):
            files[name] = os.path.join(WORK, f"{name}.req")
            with open(files[name], "w") as f:
                f.write(f"{path} {bearer}\n")
        urls = {"direct": f"http://127.0.0.1:{h2o_port}", "nginx": f"http://127.0.0.1:{nginx_port}",
                "broker": f"http://127.0.0.1:{broker_port}"}
        r = H.http_request("GET", urls["broker"] + f"/v1/orgs/{org}/stripe/test/v1/customers/cus_bench",
                           headers={"Authorization": f"Bearer {key}"})
        assert r.status == 200 and r.body == body.encode(), r.describe()

        results = []
        access_log = os.path.join(WORK, "h2o.access.log")
        broker_conns = None
        for rnd in range(ROUNDS):
            row = {}
            for name in ("direct", "nginx", "broker"):
                wrk(urls[name], files[name], WARMUP_S)
                before = upstream_ports(access_log) if name == "broker" else None
                row[name] = wrk(urls[name], files[name], DURATION_S)
                if name == "broker" and rnd == 0:
                    broker_conns = len(upstream_ports(access_log) - before)
                print(f"round {rnd + 1} {name}: {row[name]['rps']:.0f} req/s, p50 {row[name]['p50_us']} µs, "
                      f"p99 {row[name]['p99_us']} µs, non-2xx {row[name].get('non2xx', 0)}", flush=True)
            results.append(row)
        write(results, broker_conns, len(body))
    finally:
        for p in [broker] if broker else []:
            p.stop()
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for x in (sim, redis):
            if x is not None:
                x.close()
        shutil.rmtree(WORK, ignore_errors=True)


def write(results, broker_conns, body_len):
    lines = ["# Stripe proxy benchmark (`make bench-proxy`)", "",
             f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} on {os.cpu_count()} CPUs shared by "
             f"wrk, h2o (playing Stripe, a {body_len}-byte JSON answer), nginx, Redis and the broker; "
             f"`wrk -t{WRK_THREADS} -c{CONNS} -d{DURATION_S}s`, {ROUNDS} rounds. Plain HTTP on loopback: no TLS, "
             "so connection reuse shows in the connection count, not in the latency.", "",
             "| round | target | req/s | p50 µs | p99 µs | non-2xx | vs direct |", "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(results):
        for name in ("direct", "nginx", "broker"):
            r = row[name]
            lines.append(f"| {i + 1} | {name} | {r['rps']:.0f} | {r['p50_us']} | {r['p99_us']} | "
                         f"{r.get('non2xx', 0)} | {r['rps'] / row['direct']['rps']:.2f} |")
    lines += ["", f"Upstream connections h2o saw opened by the broker during a {DURATION_S} s round of "
              f"{CONNS} client connections: {broker_conns} (at most one per call in flight at once; the "
              "rest of the calls reused them)."]
    path = os.path.join(OUT, "proxy-results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
