"""ab.py — alternating A/B of two broker binaries on the Stripe proxy path, one stack.

    python3 tests/bench/ab.py BIN[,NAME=value…] BIN[,NAME=value…] … [ROUNDS]

Seeds ORGS orgs once (with OLD_BIN), then per round starts each binary in turn on the
same Redis and keyring and measures the proxy at the limit and at the paced point, with
h2o playing Stripe and nginx as the reference; prints each point and the medians. For
judging a change on a shared machine, where one run of each is within the noise.
BENCH_BROKER_ENV ("NAME=value …") applies to both; NAME=value after a binary's path,
to that one only (the same binary twice with two settings compares the settings)."""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

H = B.H


def main():
    args = sys.argv[1:]
    rounds = int(args.pop()) if args and args[-1].isdigit() else 3
    bins = args
    own = {b: dict(kv.split("=", 1) for kv in b.split(",")[1:]) for b in bins}
    B.raise_nofile()
    stack = H.Stack("ab", broker=False)
    out = {b: {"rps": [], "paced_p50": [], "ng_rps": [], "direct_p50": [], "cpu": []} for b in bins}
    try:
        stack.sim.config(authorize="approve")
        up_port, ng_port, _ = B.start_stripe_stand_ins()
        extra = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_BROKER_ENV", "").split() if "=" in kv)
        env = dict(BROKER_THREADS="2", BROKER_UPSTREAM_TIMEOUT_MS="5000", BROKER_RATE_LIMIT_IP_PER_MIN="0",
                   STRIPE_API_URL=f"http://127.0.0.1:{up_port}", **extra)
        os.environ["BROKER_BIN"] = bins[0].split(",")[0]
        first = stack.new_broker("seed", **env)
        pairs, _ = B.seed(first, stack.sim, B.ORGS)
        keep = {k: first.env[k] for k in ("BROKER_ENCRYPTION_KEYS", "BROKER_ADMIN_TOKEN")}
        first.stop()
        reqfile = os.path.join(B.WORK, "ab-requests.txt")
        with open(reqfile, "w") as f:
            for o, k in pairs:
                f.write(f"/v1/orgs/{o}/stripe/live{B.STRIPE_PATH} {k}\n")
        ngx = f"http://127.0.0.1:{ng_port}"
        direct = f"http://127.0.0.1:{up_port}"
        for i in range(rounds):
            for b in bins:
                os.environ["BROKER_BIN"] = b.split(",")[0]
                br = stack.new_broker(f"r{i}", **{**env, **own[b]}, **keep)
                B.wrk(br.base, reqfile, duration=B.WARMUP_S)
                ng = B.wrk(ngx, reqfile, B.STRIPE_PATH)
                c0 = sum(B.cpu_seconds(br.proc.pid))
                px = B.wrk(br.base, reqfile)
                cpu_us = (sum(B.cpu_seconds(br.proc.pid)) - c0) * 1e6 / max(px["requests"], 1)
                d = B.wrk(direct, reqfile, B.STRIPE_PATH, conns=B.PROXY_PACED_CONNS, pace_ms=B.PACE_MS)
                pp = B.wrk(br.base, reqfile, conns=B.PROXY_PACED_CONNS, pace_ms=B.PACE_MS)
                br.stop()
                o = out[b]
                o["rps"].append(px["rps"]); o["ng_rps"].append(ng["rps"]); o["cpu"].append(cpu_us)
                o["paced_p50"].append(pp["p50_us"]); o["direct_p50"].append(d["p50_us"])
                print(f"round {i + 1} {b}: proxy {px['rps']:,.0f} req/s = {px['rps'] / ng['rps']:.2f} x nginx; "
                      f"{cpu_us:.1f} us CPU/request; paced {pp['rps']:,.0f} req/s, p50 {pp['p50_us'] / 1000:.2f} ms "
                      f"(+{(pp['p50_us'] - d['p50_us']) / 1000:.2f} over direct), p99 {pp['p99_us'] / 1000:.2f} ms",
                      flush=True)
        for b in bins:
            o = out[b]
            ratio = statistics.median(r / n for r, n in zip(o["rps"], o["ng_rps"]))
            add = statistics.median(p - d for p, d in zip(o["paced_p50"], o["direct_p50"]))
            print(f"median {b}: {ratio:.2f} x nginx, {statistics.median(o['cpu']):.1f} us CPU/request, "
                  f"paced +{add / 1000:.2f} ms")
    finally:
        for p in B.PROCS:
            B.stop(p)
        stack.close()
        if not os.environ.get("BENCH_KEEP_WORK"):
            B.shutil.rmtree(B.WORK, ignore_errors=True)
        else:
            print(f"kept {B.WORK}")


if __name__ == "__main__":
    main()
