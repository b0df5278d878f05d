# syntax=docker/dockerfile:1
# stripe-token-broker — container image.
#
# Two stages on Debian 12:
#   build    debian:bookworm with the -dev packages; a plain `make` builds the one binary
#            (hardening flags added through the environment, so the Makefile's own CFLAGS,
#            notably -DH2O_USE_LIBUV=0, still apply).
#   runtime  debian:bookworm-slim with only the shared libraries the binary links and the CA
#            bundle; no compiler, no shell (removed in the last step), numeric non-root user.
#
# Built by deploy/image/build.sh (`make image`), which works without a Docker engine:
#   podman build --isolation=chroot --cgroup-manager=cgroupfs --pull=never ...
# on a base image made by deploy/image/base.sh. Any Docker or BuildKit builds it unchanged.
#
# Run time contract: reads only its environment (and *_FILE secrets), writes nothing to disk,
# so it runs with a read-only root filesystem; listens on 0.0.0.0:8080; SIGTERM drains in at
# most 10 s and exits 0.

ARG DEBIAN_BUILD_IMAGE=debian:bookworm
ARG DEBIAN_RUNTIME_IMAGE=debian:bookworm-slim

# ===== build =====
FROM ${DEBIAN_BUILD_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libh2o-evloop-dev libhiredis-dev libcurl4-openssl-dev libssl-dev libjansson-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY proto/ proto/
COPY broker/ broker/
# CFLAGS/LDFLAGS from the environment are extended (not replaced) by the Makefile's +=.
RUN CFLAGS="-O2 -g -fstack-protector-strong -fstack-clash-protection -fcf-protection -D_FORTIFY_SOURCE=2 -Wno-unused-result" \
    LDFLAGS="-Wl,-z,relro,-z,now" \
    make -j"$(nproc)" \
 && strip --strip-unneeded -o /stripe-token-broker build/stripe-token-broker \
 && /stripe-token-broker --version

# ===== runtime =====
FROM ${DEBIAN_RUNTIME_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
ARG VERSION=dev
ARG SOURCE=https://github.com/stripe-token-broker/stripe-token-broker
ARG REVISION=unknown
LABEL org.opencontainers.image.title="stripe-token-broker" \
      org.opencontainers.image.description="Stripe OAuth token broker for Salesforce orgs" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# Runtime libraries only: h2o (evloop), hiredis, libcurl (OpenSSL), jansson, OpenSSL 3, CA certs.
# The numeric user 65532 gets a passwd entry so that tools show a name; nothing needs it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libh2o-evloop0.13 libhiredis0.14 libcurl4 libjansson4 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && echo 'broker:x:65532:65532:stripe-token-broker:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'broker:x:65532:' >>/etc/group

COPY --from=build --chown=0:0 --chmod=0755 /stripe-token-broker /usr/local/bin/stripe-token-broker

# No shell at run time: the entrypoint is exec-form and nothing else runs. Exec-form RUN so
# that removing the shells does not need one.
RUN ["/usr/bin/rm", "-f", "/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", \
     "/bin/dash", "/usr/bin/dash", "/bin/rbash", "/usr/bin/rbash"]

ENV BROKER_LISTEN=0.0.0.0:8080
USER 65532:65532
WORKDIR /
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stripe-token-broker"]
CMD ["serve"]
