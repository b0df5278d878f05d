#!/bin/sh
# run.sh — the container image suite of `make test`: builds the image from the
# Dockerfile unchanged (podman, cached after the first build) and runs its smoke test
# inside it. Skipped, and counted as nothing, where podman or buildah is not installed,
# except under CI=true (.ci/run; `make test` installs both there), where that is one failure.
# Ends with "image: N passed, M failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
if ! command -v podman >/dev/null 2>&1 || ! command -v buildah >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "image: podman or buildah is not installed (CI=true: a missing test tool is a failure)"
        echo "image: 0 passed, 1 failed"
        exit 1
    fi
    echo "image: skipped (podman or buildah not installed)"
    echo "image: 0 passed, 0 failed"
    exit 0
fi
if ! sh deploy/image/build.sh; then
    echo "image: 0 passed, 1 failed"
    exit 1
fi
exec sh deploy/image/test.sh
