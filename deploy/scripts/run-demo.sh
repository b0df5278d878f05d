#!/bin/sh
# run-demo.sh — run the broker locally for a demo (`make run`, after the binary is built).
#
# Starts, in a temporary directory, everything the broker needs and stops it all on exit:
#   - redis-server on a free loopback port, without persistence (unless BROKER_REDIS_URL is set);
#   - the Stripe simulator (tests/fakes/stripe_sim.py) in consent mode, when neither
#     STRIPE_SECRET_KEY_TEST nor STRIPE_SECRET_KEY_LIVE is set;
#   - the broker itself, in the foreground.
# Generates BROKER_ENCRYPTION_KEYS and BROKER_ADMIN_TOKEN unless they are set, issues an API key
# for a demo org (DEMO_ORG_ID, default 00D000000000001) and a setup-assistant link, and prints
# them. Ctrl-C stops everything.
#
# Environment it honours: BROKER_* and STRIPE_* (see CONTRACT.md), BROKER_BIN (the binary,
# default build/stripe-token-broker), PYTHON (default python3), DEMO_ORG_ID, DEMO_MODE (test|live).
#
# DEMO_SMOKE=1 (`DEMO_SMOKE=1 make run`): the same start on a free port, then check that the
# setup link opens the setup page and that getAccessToken answers 404 not_connected, stop
# everything and exit 0 (or 1, saying which check failed). tests/firstrun runs it.
# shellcheck disable=SC2317  # stop and cleanup run from traps
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BROKER_BIN:-$ROOT/build/stripe-token-broker}
PY=${PYTHON:-python3}
DEMO_MODE=${DEMO_MODE:-test}

say() { printf '%s\n' "run-demo: $*" >&2; }
die() { say "$*"; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "python3 is needed (run 'make deps')"
command -v curl >/dev/null 2>&1 || die "curl is needed (run 'make deps')"
[ -x "$BIN" ] || die "$BIN is missing: run 'make' first"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/stb-demo.XXXXXX")
REDIS_PID=""
SIM_PID=""
BROKER_PID=""
CLEANED=""

# stop PID [seconds]: SIGTERM, wait up to the given time, then SIGKILL.
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
    [ -z "$CLEANED" ] || return 0
    CLEANED=1
    trap - INT TERM HUP
    [ -z "$BROKER_PID" ] || say "stopping the broker"
    stop "$BROKER_PID" 12
    stop "$SIM_PID" 3
    stop "$REDIS_PID" 5
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
    "$PY" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

random_token() {  # 43 URL-safe characters (32 random bytes)
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n'
    else
        "$PY" -c 'import secrets; print(secrets.token_urlsafe(32), end="")'
    fi
}

random_key() {  # 32 random bytes, standard base64
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -base64 32
    else
        head -c32 /dev/urandom | base64
    fi
}

# json_field FIELD: read a JSON object on stdin, print one field (empty when absent).
json_field() {
    "$PY" -c 'import json, sys
try:
    v = json.load(sys.stdin).get(sys.argv[1], "")
except Exception:
    v = ""
print(v if isinstance(v, str) else "")' "$1"
}

# --- Redis ------------------------------------------------------------------------------------
if [ -z "${BROKER_REDIS_URL:-}" ]; then
    command -v redis-server >/dev/null 2>&1 || die "redis-server is needed (run 'make deps')"
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no </dev/null &
    REDIS_PID=$!
    i=0
    until "$PY" -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' "$REDIS_PORT" 2>/dev/null; do
        i=$((i + 1))
        kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis.log" >&2 2>/dev/null; die "redis-server failed to start"; }
        [ "$i" -lt 100 ] || die "redis-server did not answer within 10 s"
        sleep 0.1
    done
    export BROKER_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    REDIS_NOTE="$BROKER_REDIS_URL (started here, not persisted)"
else
    REDIS_NOTE="$BROKER_REDIS_URL (yours)"
fi

# --- Stripe: the simulator unless real keys are configured ------------------------------------
if [ -z "${STRIPE_SECRET_KEY_TEST:-}" ] && [ -z "${STRIPE_SECRET_KEY_TEST_FILE:-}" ] &&
   [ -z "${STRIPE_SECRET_KEY_LIVE:-}" ] && [ -z "${STRIPE_SECRET_KEY_LIVE_FILE:-}" ]; then
    "$PY" "$ROOT/tests/fakes/stripe_sim.py" --port 0 --host 127.0.0.1 \
        --test-client-id ca_test_sim --test-secret-key sk_test_platform_sim \
        --live-client-id ca_live_sim --live-secret-key sk_live_platform_sim \
        --authorize consent --ready-file "$WORK/sim.port" </dev/null >"$WORK/sim.log" 2>&1 &
    SIM_PID=$!
    i=0
    while [ ! -s "$WORK/sim.port" ]; do
        i=$((i + 1))
        kill -0 "$SIM_PID" 2>/dev/null || { cat "$WORK/sim.log" >&2; die "the Stripe simulator failed to start"; }
        [ "$i" -lt 100 ] || die "the Stripe simulator did not start within 10 s"
        sleep 0.1
    done
    SIM_URL="http://127.0.0.1:$(cat "$WORK/sim.port")"
    export STRIPE_CLIENT_ID_TEST=ca_test_sim STRIPE_SECRET_KEY_TEST=sk_test_platform_sim
    export STRIPE_CLIENT_ID_LIVE=ca_live_sim STRIPE_SECRET_KEY_LIVE=sk_live_platform_sim
    export STRIPE_CONNECT_URL="$SIM_URL" STRIPE_API_URL="$SIM_URL" STRIPE_MARKETPLACE_URL="$SIM_URL"
    if [ -z "${STRIPE_WEBHOOK_SECRET_TEST:-}" ] && [ -z "${STRIPE_WEBHOOK_SECRET_TEST_FILE:-}" ]; then
        STRIPE_WEBHOOK_SECRET_TEST="whsec_demo_test_$(random_token)"
        export STRIPE_WEBHOOK_SECRET_TEST
    fi
    if [ -z "${STRIPE_WEBHOOK_SECRET_LIVE:-}" ] && [ -z "${STRIPE_WEBHOOK_SECRET_LIVE_FILE:-}" ]; then
        STRIPE_WEBHOOK_SECRET_LIVE="whsec_demo_live_$(random_token)"
        export STRIPE_WEBHOOK_SECRET_LIVE
    fi
    STRIPE_NOTE="simulator at $SIM_URL (consent page; keep or change the acct_ id, then Approve)"
else
    STRIPE_NOTE="the STRIPE_* settings from your environment"
fi

# --- Broker settings --------------------------------------------------------------------------
if [ -z "${BROKER_ENCRYPTION_KEYS:-}" ] && [ -z "${BROKER_ENCRYPTION_KEYS_FILE:-}" ]; then
    BROKER_ENCRYPTION_KEYS="demo:$(random_key)"
    export BROKER_ENCRYPTION_KEYS
fi
if [ -z "${BROKER_ADMIN_TOKEN_FILE:-}" ]; then
    if [ -z "${BROKER_ADMIN_TOKEN:-}" ]; then
        BROKER_ADMIN_TOKEN=$(random_token)
        export BROKER_ADMIN_TOKEN
    fi
    ADMIN_TOKEN=$BROKER_ADMIN_TOKEN
else
    ADMIN_TOKEN=$(cat "$BROKER_ADMIN_TOKEN_FILE")
fi

if [ "${DEMO_SMOKE:-}" = 1 ]; then  # a free port and nothing of the operator's listener
    unset BROKER_LISTEN BROKER_PUBLIC_URL
    export BROKER_LISTEN="127.0.0.1:$(free_port)"
fi
if [ -z "${BROKER_LISTEN:-}" ]; then
    PORT=8080
    if [ -z "${BROKER_PUBLIC_URL:-}" ] && ! port_free "$PORT"; then
        PORT=$(free_port)
        say "port 8080 is taken; using $PORT"
    fi
    export BROKER_LISTEN="127.0.0.1:$PORT"
fi
LISTEN_PORT=${BROKER_LISTEN##*:}
LISTEN_HOST=${BROKER_LISTEN%:*}
case "$LISTEN_HOST" in
    ''|0.0.0.0|'[::]'|'*') LISTEN_HOST=127.0.0.1 ;;
esac
LOCAL_URL="http://$LISTEN_HOST:$LISTEN_PORT"
export BROKER_PUBLIC_URL="${BROKER_PUBLIC_URL:-$LOCAL_URL}"
PUBLIC_URL=${BROKER_PUBLIC_URL%/}

# The demo org, in its canonical 18-character form.
ORG=$("$PY" -c 'import sys
o = sys.argv[1]
if len(o) == 15:
    a = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    o += "".join(a[sum(1 << j for j in range(5) if "A" <= o[i * 5 + j] <= "Z")] for i in range(3))
print(o)' "${DEMO_ORG_ID:-00D000000000001}")

# --- Start ------------------------------------------------------------------------------------
API_KEY=$("$BIN" create-api-key "$ORG" </dev/null 2>"$WORK/create-api-key.err" | "$PY" -c 'import json, sys
out = sys.stdin.read().strip()
try:
    print(json.loads(out).get("api_key", ""))
except ValueError:
    lines = [l for l in out.splitlines() if l.strip()]
    print(lines[-1].split()[-1] if lines else "")') || API_KEY=""

"$BIN" serve </dev/null &
BROKER_PID=$!

i=0
until curl -fsS -o /dev/null --max-time 1 "$LOCAL_URL/healthz" 2>/dev/null; do
    i=$((i + 1))
    kill -0 "$BROKER_PID" 2>/dev/null || { BROKER_PID=""; die "the broker exited during start-up (see its log above)"; }
    [ "$i" -lt 150 ] || die "the broker did not answer $LOCAL_URL/healthz within 15 s"
    sleep 0.1
done

if [ -z "$API_KEY" ]; then  # the CLI did not give one: ask the admin API
    [ ! -s "$WORK/create-api-key.err" ] || cat "$WORK/create-api-key.err" >&2
    API_KEY=$(curl -s -X POST -H "Authorization: Bearer $ADMIN_TOKEN" \
        "$LOCAL_URL/v1/admin/orgs/$ORG/api-keys" | json_field api_key)
fi
[ -n "$API_KEY" ] || { say "could not create an API key for $ORG"; API_KEY="(none: see the errors above)"; }

LINK_CMD="curl -s -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" -H 'Content-Type: application/json' -d '{\"mode\":\"$DEMO_MODE\"}' $PUBLIC_URL/v1/orgs/$ORG/authorize-links"
LINK=$(curl -s -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"mode\":\"$DEMO_MODE\"}" "$LOCAL_URL/v1/orgs/$ORG/authorize-links" | json_field url)
[ -n "$LINK" ] || LINK="(could not create one; try: $LINK_CMD)"

if [ "${DEMO_SMOKE:-}" = 1 ]; then
    # The setup link (303 to the setup page with a session cookie), the setup page, and
    # getAccessToken before any authorization (404 not_connected).
    "$PY" - "$LOCAL_URL" "$LINK" "$ORG" "$API_KEY" "$DEMO_MODE" <<'PYEOF' || die "smoke check failed"
import http.client, json, sys, urllib.parse
base, link, org, api_key, mode = sys.argv[1:]
host = urllib.parse.urlsplit(base).netloc

def get(path, headers=None):
    c = http.client.HTTPConnection(host, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r.status, r.getheaders(), r.read().decode("utf-8", "replace")

def check(ok, what):
    print("run-demo: smoke: %s: %s" % ("ok" if ok else "FAILED", what), file=sys.stderr)
    if not ok:
        sys.exit(1)

u = urllib.parse.urlsplit(link)
check(u.path.endswith("/setup") and "ticket=" in u.query, "authorize-links gave a setup link")
st, hdrs, _ = get(u.path + "?" + u.query)
cookies = [v.split(";", 1)[0] for k, v in hdrs if k.lower() == "set-cookie"]
check(st == 303 and cookies, "the setup link answers 303 with a session cookie (got %d)" % st)
st, _, body = get(u.path, {"Cookie": "; ".join(cookies)})
check(st == 200 and org in body and "setup/authorize" in body,
      "the setup page shows the org and the Authorize form (got %d)" % st)
st, _, body = get("/v1/orgs/%s/access-token?mode=%s" % (org, mode),
                  {"Authorization": "Bearer " + api_key})
try:
    code = json.loads(body)["error"]["code"]
except (ValueError, KeyError, TypeError):
    code = None
check(st == 404 and code == "not_connected",
      "getAccessToken before authorization: 404 not_connected (got %d %s)" % (st, code))
PYEOF
    say "smoke check passed; stopping"
    exit 0
fi

cat <<EOF

================================================================================
 stripe-token-broker demo is running at $PUBLIC_URL

 1. Open the setup assistant (one-time link, valid 10 minutes, $DEMO_MODE mode):
      $LINK
    A new link: $LINK_CMD

 2. Then get the Stripe access token the way Salesforce does (getAccessToken):
      curl -s -H "Authorization: Bearer $API_KEY" "$PUBLIC_URL/v1/orgs/$ORG/access-token?mode=$DEMO_MODE"

 Admin token:      $ADMIN_TOKEN
 Demo org id:      $ORG
 Demo org API key: $API_KEY
 Stripe:           $STRIPE_NOTE
 Redis:            $REDIS_NOTE

 Press Ctrl-C to stop everything (broker, Stripe simulator, Redis).
================================================================================

EOF

set +e
wait "$BROKER_PID"
status=$?
BROKER_PID=""
exit "$status"
