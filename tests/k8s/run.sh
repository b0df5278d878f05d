#!/bin/sh
# run.sh — the deployment checks: rendered Kubernetes manifests and the SIGTERM drain.
#
#   sh tests/k8s/run.sh
# Stages (each bounded in time):
#   1. npm ci in tests/k8s when node_modules is missing (kubernetes-models, its prometheus-operator
#      models and yaml, pinned in package-lock.json);
#   2. node tests/k8s/check.mjs: `kubectl kustomize` renders every overlay of deploy/k8s, each
#      object is validated against the Kubernetes JSON schemas, then the hardening list;
#   3. python3 tests/k8s/test_sigterm.py against $BROKER_BIN (default build/stripe-token-broker).
# Ends with ONE line "k8s: N passed, M failed"; exit 1 on any failure. A stage that crashes or
# prints no summary counts as one failure. The image test is separate (deploy/image/test.sh).
set -u
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-python3}
P=0
F=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stb-k8s.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# tally OUT NAME RC: add the last "NAME: N passed, M failed" of OUT; no line or a non-zero exit
# with no failure counted is one failure.
tally() {
    line=$(grep -E "^$2: [0-9]+ passed, [0-9]+ failed" "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "$2: no summary line (exit status $3): 1 failure"
        F=$((F + 1))
        return
    fi
    p=$(echo "$line" | sed -E 's/^[^:]*: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[^:]*: [0-9]+ passed, ([0-9]+) failed.*/\1/')
    if [ "$3" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    P=$((P + p))
    F=$((F + f))
}

# ----- 1. node dependencies -----
if [ ! -d tests/k8s/node_modules/kubernetes-models ]; then
    echo "installing the schema validator (npm ci in tests/k8s)"
    (cd tests/k8s && timeout 180 npm ci --no-audit --no-fund --loglevel=error) || {
        echo "npm ci failed: 1 failure"
        F=$((F + 1))
    }
fi

# ----- 2. manifests -----
if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl is not installed (kubectl kustomize renders the overlays): 1 failure"
    F=$((F + 1))
elif [ -d tests/k8s/node_modules/kubernetes-models ]; then
    timeout -k 5 120 node tests/k8s/check.mjs >"$TMP/check.out" 2>&1
    rc=$?
    cat "$TMP/check.out"
    tally "$TMP/check.out" checks "$rc"
fi

# ----- 3. SIGTERM drain -----
timeout -k 5 90 "$PYTHON" tests/k8s/test_sigterm.py >"$TMP/sigterm.out" 2>&1
rc=$?
cat "$TMP/sigterm.out"
tally "$TMP/sigterm.out" sigterm "$rc"

echo "k8s: $P passed, $F failed"
[ "$F" -eq 0 ] && [ "$P" -gt 0 ]
