#!/bin/sh
# run.sh — `make bench` (not part of `make test`).
#
# Measures, in one run on this machine: the broker's getAccessToken (1,000 orgs, a random
# org per request), Debian's h2o serving a static file of the same size, Debian's webdis
# answering a Redis GET of the same size, and the broker's /healthz — wrk -t2 -c64, 10 s
# per point after a warm-up; the Stripe proxy against h2o playing Stripe, reached directly
# and through Debian's nginx; the broker's peak RSS (at 1,000 connections, over a 60 s soak
# of getAccessToken and one of proxied calls), instructions per request under callgrind,
# and the test-from-live mint path with a 50 ms Stripe. Writes tests/bench/results.md and
# tests/bench/latency.png (BENCH_ONLY=proxy, `make bench-proxy`: the proxy phase only, into
# tests/bench/proxy-results.md).
# Timings are reported, never asserted. Takes about 10 minutes.
#
# BROKER_BIN selects the binary (default build/stripe-token-broker, which `make bench`
# builds); see tests/bench/bench.py for the other knobs (ROUNDS, ORGS, SOAK_S, …).
set -eu

cd "$(dirname "$0")/../.."

missing=""
for tool in wrk h2o nginx webdis gnuplot valgrind redis-server; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing wrk h2o nginx-light webdis gnuplot-nox valgrind (missing:$missing)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            wrk h2o nginx-light webdis gnuplot-nox valgrind redis-server >/dev/null
    else
        echo "bench: missing:$missing (apt-get install -y wrk h2o nginx-light webdis gnuplot-nox valgrind)" >&2
        exit 1
    fi
fi

exec /usr/bin/python3 tests/bench/bench.py "$@"
