#!/bin/sh
# build.sh — build the broker's container image from the Dockerfile, unchanged, with podman.
#
# No Docker engine and no registry here: the base image comes from base.sh (debootstrap +
# podman import, cached), and podman builds with chroot isolation and --pull=never.
#   sh deploy/image/build.sh            build $IMAGE (localhost/stripe-token-broker:VERSION)
# Environment: IMAGE, VERSION (default: the Makefile's), IMAGE_SOURCE (the
# org.opencontainers.image.source label; default: git's origin URL when there is one),
# BUILD_TIMEOUT_S (default 1200). Prints the build time and the image size.
set -eu
. "$(dirname "$0")/common.sh"
cd "$STB_ROOT"

command -v "$PODMAN" >/dev/null 2>&1 || { echo "build.sh: podman is not installed" >&2; exit 1; }
sh deploy/image/base.sh

SOURCE=${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
REVISION=$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
set -- --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
[ -n "$SOURCE" ] && set -- "$@" --build-arg "SOURCE=$SOURCE"

start=$(date +%s)
timeout "${BUILD_TIMEOUT_S:-1200}" "$PODMAN" build \
    --isolation=chroot --cgroup-manager=cgroupfs --pull=never \
    --network=host --layers \
    "$@" -f Dockerfile -t "$IMAGE" .
secs=$(( $(date +%s) - start ))
bytes=$("$PODMAN" image inspect --format '{{.Size}}' "$IMAGE")
echo "image $IMAGE built in ${secs} s: $bytes bytes ($((bytes / 1048576)) MiB uncompressed)"
