#!/bin/sh
# run.sh — the External Service contract through a real OpenAPI 3.0 validator from npm
# (@apidevtools/swagger-parser, pinned in package-lock.json). The project's check of
# Salesforce's limits (tests/it/check_openapi.py) is its own stage of tests/run.sh.
# Ends with "openapi-validator: N passed, M failed".
set -u
cd "$(dirname "$0")" || exit 1
P=0
F=0
if command -v npm >/dev/null 2>&1 && { [ -d node_modules/@apidevtools/swagger-parser ] ||
    npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1; }; then
    exec node validate.mjs
else
    echo "FAIL the npm validator could not be installed"
    F=$((F + 1))
fi
echo "openapi-validator: $P passed, $F failed"
[ "$F" -eq 0 ]
