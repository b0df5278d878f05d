#!/bin/sh
# run.sh — the fault and abuse suites (real redis-server, the Stripe simulator, the real
# binary, real HTTP; a steady wrk load where it matters). Ends with one line
# "fault: N passed, M failed" and exits non-zero when anything failed.
#
#   sh tests/fault/run.sh                 # against $BROKER_BIN (default build/stripe-token-broker)
#   BROKER_BIN=build-asan/stripe-token-broker sh tests/fault/run.sh
#
# wrk is installed with apt-get when it is missing and we are root; without it the
# load parts are skipped (each test says so) and the rest still runs — except under CI=true
# (.ci/run), where a missing wrk is one failure.
set -u
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
export BROKER_BIN="${BROKER_BIN:-build/stripe-token-broker}"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        timeout 120 apt-get install -y -q wrk >/dev/null 2>&1 || echo "# wrk could not be installed: load parts skipped"
    else
        echo "# wrk is not installed: load parts skipped"
    fi
fi
if [ "${CI:-}" = true ] && ! command -v wrk >/dev/null 2>&1; then
    echo "fault: wrk is missing (CI=true: a missing test tool is a failure)"
    echo "fault: 0 passed, 1 failed"
    exit 1
fi
if [ ! -x "$BROKER_BIN" ]; then
    echo "fault: $BROKER_BIN is missing (build it first)"
    echo "fault: 0 passed, 1 failed"
    exit 1
fi
exec timeout -k 10 "${FAULT_TIMEOUT_S:-400}" "$PYTHON" tests/fault/run.py --budget "${FAULT_BUDGET_S:-330}" "$@"
