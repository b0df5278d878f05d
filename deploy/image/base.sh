#!/bin/sh
# base.sh — make the Debian 12 base image the Dockerfile's FROM lines name, without a registry.
#
# There is no image registry to pull debian:bookworm-slim from on the build machines, so this
# builds an equivalent one: `debootstrap --variant=minbase bookworm` from this machine's own
# Debian mirror, trimmed like the official slim image (no docs, man pages or locales; apt lists
# and caches emptied; bookworm, bookworm-updates and bookworm-security in its apt sources), then
# `podman import`ed and tagged under every name the Dockerfile may use:
#   localhost/debian:bookworm, docker.io/library/debian:bookworm,
#   docker.io/library/debian:bookworm-slim
# Cached: does nothing when $BASE_IMAGE already exists (FORCE=1 rebuilds). Needs root,
# debootstrap and podman. Takes about a minute cold.
set -eu
. "$(dirname "$0")/common.sh"

if [ "${FORCE:-0}" != 1 ] && image_exists "$BASE_IMAGE"; then
    echo "base image $BASE_IMAGE: present (FORCE=1 to rebuild)"
    exit 0
fi
for tool in debootstrap "$PODMAN"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "base.sh: $tool is not installed" >&2; exit 1; }
done

MIRROR=$(debian_mirror)
SECURITY=$(debian_security_mirror)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/stb-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs

start=$(date +%s)
echo "debootstrap --variant=minbase bookworm from $MIRROR"
timeout 900 debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    echo "base.sh: debootstrap failed" >&2
    exit 1
}

# Trim like the official slim variant, and keep it trimmed for later apt-get installs.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-no-recommends" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian/*
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old
: >"$ROOTFS/etc/machine-id"
echo "stripe-token-broker-build" >"$ROOTFS/etc/hostname"

echo "podman import → $BASE_IMAGE"
tar --numeric-owner -C "$ROOTFS" -cf - . |
    "$PODMAN" import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
for name in docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim; do
    "$PODMAN" tag "$BASE_IMAGE" "$name"
done
echo "base image $BASE_IMAGE built in $(( $(date +%s) - start )) s" \
    "($("$PODMAN" image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes)"
