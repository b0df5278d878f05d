#!/bin/sh
# test.sh — run the image smoke test (deploy/image/smoke.py) against the built image.
#
#   sh deploy/image/test.sh           test $IMAGE (default localhost/stripe-token-broker:VERSION)
# Builds nothing: run deploy/image/build.sh first (`make image`). Ends with the line
# "image: N passed, M failed"; exit status 1 when anything failed or the image is missing.
set -u
. "$(dirname "$0")/common.sh"
cd "$STB_ROOT" || exit 1
if ! command -v "$PODMAN" >/dev/null 2>&1 || ! command -v "$BUILDAH" >/dev/null 2>&1; then
    echo "image-test: podman and buildah are needed"
    echo "image: 0 passed, 1 failed"
    exit 1
fi
if ! image_exists "$IMAGE"; then
    echo "image-test: $IMAGE is not built (sh deploy/image/build.sh)"
    echo "image: 0 passed, 1 failed"
    exit 1
fi
export IMAGE VERSION
exec timeout -k 10 "${IMAGE_TEST_TIMEOUT_S:-180}" "${PYTHON:-python3}" deploy/image/smoke.py
