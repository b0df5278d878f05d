#!/bin/sh
# run.sh — the soak: mixed traffic on three replicas (one under ASan) with periodic Redis
# restarts; writes tests/out/soak/soak.csv and soak.png and ends with
# "soak: N passed, M failed" (non-zero exit on failure).
#
#   make soak                          # SOAK_SECONDS=600 (ten minutes)
#   SOAK_SECONDS=120 sh tests/soak/run.sh
#
# Run from tests/run.sh (make test) it is a short smoke run (SOAK_SECONDS defaults to 40
# there); `make soak` sets 600. gnuplot is installed with apt-get when missing and we
# are root; without it there is no PNG (the CSV is still written).
set -u
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
export BROKER_BIN="${BROKER_BIN:-build/stripe-token-broker}"
export SOAK_ASAN_BIN="${SOAK_ASAN_BIN:-build-asan/stripe-token-broker}"
export SOAK_SECONDS="${SOAK_SECONDS:-40}"
if [ "$SOAK_SECONDS" -lt 120 ]; then
    export SOAK_REDIS_PERIOD="${SOAK_REDIS_PERIOD:-15}"
fi
if ! command -v gnuplot >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    timeout 180 apt-get install -y -q gnuplot-nox >/dev/null 2>&1 || echo "# gnuplot could not be installed: no plot"
fi
if [ ! -x "$BROKER_BIN" ]; then
    echo "soak: $BROKER_BIN is missing (build it first)"
    echo "soak: 0 passed, 1 failed"
    exit 1
fi
[ -x "$SOAK_ASAN_BIN" ] || echo "# $SOAK_ASAN_BIN is missing: all three replicas run $BROKER_BIN"
exec timeout -k 10 $((SOAK_SECONDS + 240)) "$PYTHON" tests/soak/soak.py "$@"
