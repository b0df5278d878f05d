#!/bin/sh
# run.sh — the External Service contract: proto/openapi.yaml through a real OpenAPI 3.0
# validator from npm (@apidevtools/swagger-parser, pinned in package-lock.json) and the
# project's check of Salesforce's limits (tests/it/check_openapi.py: no enums, floats or
# 64-bit integers, Apex-safe operationIds, JSON bodies, a schema on every 2xx but 204).
# Ends with "openapi: N passed, M failed".
set -u
cd "$(dirname "$0")" || exit 1
P=0
F=0
if command -v npm >/dev/null 2>&1 && { [ -d node_modules/@apidevtools/swagger-parser ] ||
    npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1; }; then
    out=$(node validate.mjs 2>&1)
    echo "$out"
    line=$(echo "$out" | grep '^openapi-validator: ' | tail -n 1)
    P=$((P + $(echo "$line" | sed -n 's/.*: \([0-9]*\) passed.*/\1/p')))
    F=$((F + $(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')))
    [ -n "$line" ] || F=$((F + 1))
else
    echo "FAIL the npm validator could not be installed"
    F=$((F + 1))
fi
out=$(${PYTHON:-python3} ../it/check_openapi.py 2>&1)
echo "$out" | grep -v '^PASS' | tail -n 20
line=$(echo "$out" | grep '^openapi: ' | tail -n 1)
if [ -n "$line" ]; then
    P=$((P + $(echo "$line" | sed -n 's/.*: \([0-9]*\) passed.*/\1/p')))
    F=$((F + $(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')))
else
    F=$((F + 1))
fi
echo "openapi: $P passed, $F failed"
[ "$F" -eq 0 ]
