#!/bin/sh
# run.sh — the shape of the source tree (tests/shape/check.py): layers, a pure core/,
# "Tested by" lines that name existing files, no citation of documents outside the
# repository. A stage of tests/run.sh (`make test`): ends with "shape: N passed, M failed".
cd "$(dirname "$0")/../.." || exit 1
exec "${PYTHON:-python3}" tests/shape/check.py
