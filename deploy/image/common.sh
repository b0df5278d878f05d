# common.sh — shared settings of the image scripts (sourced, not run).
#
# Every podman/buildah call here goes through the same flags so that the image can be built
# on a machine with no container engine daemon and no access to an image registry: chroot
# isolation, cgroupfs, never pull. Override with the environment:
#   IMAGE       name of the broker image            (localhost/stripe-token-broker:VERSION)
#   BASE_IMAGE  name of the debootstrapped base     (localhost/debian:bookworm)
#   PODMAN      podman binary                       (podman)

STB_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=${VERSION:-$(sed -n 's/^VERSION *:\{0,1\}= *//p' "$STB_ROOT/Makefile" | head -n 1)}
VERSION=${VERSION:-dev}
IMAGE=${IMAGE:-localhost/stripe-token-broker:$VERSION}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
PODMAN=${PODMAN:-podman}
BUILDAH=${BUILDAH:-buildah}

# image_exists NAME: true when NAME is in local container storage.
image_exists() {
    "$PODMAN" image exists "$1" 2>/dev/null
}

# debian_mirror: the first Debian archive URI this machine's apt uses (deb822 or one-line form).
debian_mirror() {
    m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# debian_security_mirror: the security archive URI, derived like debian_mirror.
debian_security_mirror() {
    m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ && $2 ~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    echo "${m:-http://deb.debian.org/debian-security}"
}
