#!/bin/sh
# install-deps.sh — install the Debian 12 packages the broker builds, runs and is tested with.
# Idempotent: does nothing when every package is already installed. Needs root (or sudo).
#   install-deps.sh        what `make` and `make run` need
#   install-deps.sh test   plus what `make test` needs (headless Chromium for the browser test,
#                          wrk for the fault suite, podman and buildah for the container image)
set -eu
PKGS="build-essential pkg-config clang libclang-rt-14-dev \
libh2o-evloop-dev libhiredis-dev libcurl4-openssl-dev libssl-dev libjansson-dev libcmocka-dev \
redis-server redis-tools python3 curl ca-certificates"
[ "${1:-}" = test ] && PKGS="$PKGS chromium fonts-dejavu-core wrk podman buildah debootstrap uidmap fuse-overlayfs slirp4netns"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
