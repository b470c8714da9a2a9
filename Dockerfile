# syntax=docker/dockerfile:1
#
# sse-edge container image.
#
#   docker build -t sse-edge .
#   docker run --rm -p 8080:8080 -e UPSTREAM_URL=https://api.example.com -e DASHBOARD_API_KEY=... sse-edge
#
# The default configuration is deploy/docker/proxy.toml; mount another at
# /etc/sse-edge/proxy.toml, or build one in with --build-arg CONFIG=path/in/the/repo.toml.
# deploy/check-dockerfile-build.sh runs this file's build stage outside Docker (same copies,
# same cargo command, same Rust minor version) and starts the result, for CI without a
# Docker engine.

# The builder and the runtime must be the same Debian release (the binary links glibc).
# Rust: at least Cargo.toml's rust-version (1.85, edition 2024); pinned to the toolchain CI
# tests with, which deploy/check-dockerfile-build.sh compares against `rustc --version`.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the build reads (benches/ because Cargo.toml declares [[bench]] targets).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin sse-edge

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG CONFIG=deploy/docker/proxy.toml
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 sse-edge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sse-edge
COPY --from=build /src/target/release/sse-edge /usr/local/bin/sse-edge
# The health check: bash's /dev/tcp against the admin listener (no curl in this image).
COPY --chmod=0755 deploy/docker/healthz.sh /usr/local/bin/sse-edge-healthz
COPY ${CONFIG} /etc/sse-edge/proxy.toml
# `docker run IMAGE check` finds proxy.toml here, like the proxy itself.
WORKDIR /etc/sse-edge
USER 10001:10001
ENV RUST_LOG=info
# 8080 plaintext (behind a TLS-terminating load balancer), 8443 HTTPS when [tls] is mounted,
# 9901 admin (/healthz, /readyz, /metrics: private network only).
EXPOSE 8080 8443 9901
# /healthz answers while the process runs; /readyz (listeners bound; stays 200 through an
# origin outage) is for load balancers; /readyz/origin (503 while the origin is down) for alerts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["sse-edge-healthz", "9901", "/healthz"]
# SIGTERM: stop accepting, end every stream with a retry: hint so EventSource reconnects
# elsewhere, let passthrough requests finish within shutdown_grace_s, exit 0. Give
# `docker stop -t` (compose stop_grace_period) more than shutdown_grace_s.
# SIGHUP (docker kill --signal HUP) reloads the TLS certificate and key.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sse-edge"]
CMD ["--config", "/etc/sse-edge/proxy.toml"]
