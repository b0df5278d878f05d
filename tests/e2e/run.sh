#!/bin/sh
# run.sh — the setup assistant, end to end, in a real headless browser.
#
#   sh tests/e2e/run.sh            (from anywhere; `make test` runs it through tests/run.sh)
#
# What it does, in order, and undoes on exit:
#   1. makes sure Debian's Chromium is installed (apt-get install -y chromium, as root; when that is
#      impossible it says so and skips: "e2e: 0 passed, 0 failed, 1 skipped", exit 0 — except
#      under CI=true (.ci/run), where a missing test tool is a failure: "e2e: 0 passed, 1 failed");
#   2. installs the pinned npm packages of tests/e2e (playwright-core, axe-core) with `npm ci`
#      when node_modules is missing or older than package-lock.json;
#   3. starts redis-server on a free loopback port (no persistence), the Stripe simulator
#      (tests/fakes/stripe_sim.py) in consent mode, and the broker ($BROKER_BIN, default
#      build/stripe-token-broker) with both Stripe modes enabled and a return_url allow-list that
#      includes http://127.0.0.1:<port> of a local stand-in for Salesforce (served by the test),
#      all three through the integration tests' harness (python3 tests/it/harness.py up);
#   4. runs tests/e2e/setup-assistant.test.mjs, which writes its screenshots to tests/out/e2e/;
#   5. ends with ONE line "e2e: N passed, M failed" and exits non-zero when anything failed.
#
# Environment: BROKER_BIN, PYTHON (default python3), CHROMIUM (default /usr/bin/chromium),
# E2E_OUT (screenshot folder, default tests/out/e2e), E2E_TIMEOUT_S (whole test, default 150).
# shellcheck disable=SC2317  # cleanup runs from traps
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1

BIN=${BROKER_BIN:-build/stripe-token-broker}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
PY=${PYTHON:-python3}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
OUT=${E2E_OUT:-$ROOT/tests/out/e2e}
E2E_TIMEOUT_S=${E2E_TIMEOUT_S:-150}

say() { printf 'e2e: %s\n' "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/stb-e2e.XXXXXX")
UP_PID=""
BROKER_LOG=""
FINAL=""

# stop PID [seconds]: SIGTERM, wait, then SIGKILL — only the processes started here.
stop() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    n=$(( ${2:-5} * 10 ))
    while [ "$n" -gt 0 ] && kill -0 "$1" 2>/dev/null; do
        sleep 0.1
        n=$((n - 1))
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    trap - EXIT INT TERM HUP
    stop "$UP_PID" 30   # it stops the broker (up to 12 s), the simulator and Redis
    rm -rf "$WORK"
    [ -z "$FINAL" ] || echo "$FINAL"
}
trap cleanup EXIT
trap 'FINAL=${FINAL:-"e2e: 0 passed, 1 failed"}; exit 130' INT
trap 'FINAL=${FINAL:-"e2e: 0 passed, 1 failed"}; exit 143' TERM
trap 'FINAL=${FINAL:-"e2e: 0 passed, 1 failed"}; exit 129' HUP

# fail MESSAGE: a set-up problem counts as one failed test.
fail() {
    say "$*"
    FINAL="e2e: 0 passed, 1 failed"
    exit 1
}

# skip MESSAGE: a missing tool that cannot be installed here is a skip, said clearly; under
# CI=true it is a failure (CI installs every test tool: a skip there would hide the suite).
skip() {
    [ "${CI:-}" != true ] || fail "$* (CI=true: a missing test tool is a failure)"
    say "SKIPPED: $*"
    FINAL="e2e: 0 passed, 0 failed, 1 skipped"
    exit 0
}

# --- 1. Chromium (Debian's package; never a browser download of playwright's own) -------------
if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian's chromium (apt-get install -y chromium)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q chromium >"$WORK/apt.log" 2>&1; then
            apt-get update -q >>"$WORK/apt.log" 2>&1 &&
                apt-get install -y -q chromium >>"$WORK/apt.log" 2>&1
        fi
        [ -x "$CHROMIUM" ] || { tail -n 20 "$WORK/apt.log" >&2; skip "chromium could not be installed (see above)"; }
    else
        skip "$CHROMIUM is missing and cannot be installed here (needs root and apt-get: apt-get install -y chromium)"
    fi
fi

# --- 2. npm packages (pinned by package-lock.json) ---------------------------------------------
command -v node >/dev/null 2>&1 || skip "node is missing (apt-get install -y nodejs npm)"
command -v npm >/dev/null 2>&1 || skip "npm is missing (apt-get install -y npm)"
if [ ! -f "$HERE/node_modules/.package-lock.json" ] || [ ! -d "$HERE/node_modules/playwright-core" ] ||
   [ ! -d "$HERE/node_modules/axe-core" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
    say "npm ci (playwright-core, axe-core)"
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1 ||
        { cat "$WORK/npm.log" >&2; fail "npm ci failed in tests/e2e"; }
fi

# --- 3. Redis, the Stripe simulator, the broker -------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || fail "python3 is needed (run 'make deps')"
command -v redis-server >/dev/null 2>&1 || fail "redis-server is needed (run 'make deps')"
[ -x "$BIN" ] || fail "$BIN is missing: build it first (make, or set BROKER_BIN)"

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Redis, the simulator (consent mode) and the broker, started and stopped by the integration
# tests' harness (tests/it/harness.py up): it writes their coordinates to $WORK/up.env once
# all three are ready, and stops them on SIGTERM.
SF_PORT=$(free_port)
"$PY" "$ROOT/tests/it/harness.py" up --ready-file "$WORK/up.env" --log-dir "$WORK" --name e2e \
    --authorize consent \
    --env BROKER_RETURN_URL_ALLOW="https://*.my.salesforce.com,https://*.lightning.force.com,http://127.0.0.1:$SF_PORT" \
    --env BROKER_LOG_LEVEL=info --env BROKER_UPSTREAM_TIMEOUT_MS= \
    --env STRIPE_WEBHOOK_SECRET_TEST=whsec_e2e_platform_test \
    --env STRIPE_WEBHOOK_SECRET_LIVE=whsec_e2e_platform_live \
    </dev/null >"$WORK/up.log" 2>&1 &
UP_PID=$!
i=0
until [ -s "$WORK/up.env" ]; do
    kill -0 "$UP_PID" 2>/dev/null || { cat "$WORK/up.log" >&2; fail "Redis, the simulator or the broker failed to start"; }
    i=$((i + 1))
    [ "$i" -lt 600 ] || { cat "$WORK/up.log" >&2; fail "Redis, the simulator and the broker were not ready within 60 s"; }
    sleep 0.1
done
# shellcheck disable=SC1091  # written by harness.py up: BROKER_URL, BROKER_LOG, SIM_URL, ADMIN_TOKEN, …
. "$WORK/up.env"
[ "$BROKER_URL" != "http://127.0.0.1:$SF_PORT" ] || fail "the broker took the Salesforce stand-in's port $SF_PORT: run again"

# --- 4. the test ----------------------------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT"/*.png "$OUT"/*.json 2>/dev/null
say "broker $BROKER_URL, simulator $SIM_URL, Salesforce stand-in http://127.0.0.1:$SF_PORT, screenshots in $OUT"

RESULT="$WORK/result.json"
timeout -k 10 "$E2E_TIMEOUT_S" env \
    E2E_BROKER_URL="$BROKER_URL" E2E_SIM_URL="$SIM_URL" E2E_SF_PORT="$SF_PORT" \
    E2E_ADMIN_TOKEN="$ADMIN_TOKEN" E2E_OUT="$OUT" E2E_RESULT="$RESULT" E2E_CHROMIUM="$CHROMIUM" \
    node "$HERE/setup-assistant.test.mjs"
RC=$?
[ "$RC" -ne 124 ] || say "the test timed out after ${E2E_TIMEOUT_S}s"

if [ "$RC" -ne 0 ] && [ -s "$BROKER_LOG" ]; then
    say "last lines of the broker's log:"
    tail -n 15 "$BROKER_LOG" >&2
fi

# --- 5. the closing line --------------------------------------------------------------------------
P=0
F=0
if [ -s "$RESULT" ]; then
    P=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["passed"]))' "$RESULT" 2>/dev/null || echo 0)
    F=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["failed"]))' "$RESULT" 2>/dev/null || echo 1)
fi
if [ "$RC" -ne 0 ] && [ "$F" -eq 0 ]; then
    F=1  # a crash, a timeout or a broken set-up counts as one failure
fi
if [ $((P + F)) -eq 0 ]; then
    F=1  # no test ran
fi
FINAL="e2e: $P passed, $F failed"
[ "$F" -eq 0 ] || exit 1
exit 0
