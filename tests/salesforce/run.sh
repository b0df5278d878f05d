#!/bin/sh
# run.sh — the Salesforce metadata check (tests/run.sh runs every tests/*/run.sh).
# Ends with "salesforce: N passed, M failed"; exit non-zero on failure.
cd "$(dirname "$0")/../.." || exit 1
PY=${PYTHON:-python3}
exec "$PY" tests/salesforce/check.py
