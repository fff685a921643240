# Switchyard's container image: a release build in a Rust image, run from a small Debian one
# as a non-root user. Build: docker build -t switchyard . (or podman / buildah).
# Mount the config and flags at /etc/switchyard (router.toml there is read by default).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The dependencies first, in a layer of their own: it is rebuilt only when a manifest or the
# lock file changes, not on every source change. Every target the manifests name gets an
# empty stand-in so that cargo can read the workspace.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY flag-store/Cargo.toml flag-store/
COPY http1/Cargo.toml http1/
COPY router/Cargo.toml router/
COPY benches/Cargo.toml benches/
RUN set -eu; \
    for f in flag-store/src/lib.rs http1/src/lib.rs router/src/lib.rs tests/e2e/main.rs \
             benches/fixtures.rs benches/hot_path.rs benches/loopback.rs; do \
      mkdir -p "$(dirname "$f")"; : > "$f"; \
    done; \
    for f in router/src/main.rs benches/load/main.rs benches/propagation/main.rs; do \
      mkdir -p "$(dirname "$f")"; echo 'fn main() {}' > "$f"; \
    done; \
    cargo build --release --locked -p switchyard --bin switchyard; \
    rm -rf flag-store/src http1/src router/src target/release/.fingerprint/flag-store-* \
           target/release/.fingerprint/http1-* target/release/.fingerprint/switchyard-*
# Then the source: only the workspace's own crates build again. The debug sections go (94 MB
# to 23 MB); the symbols stay, so a panic's backtrace still names its functions.
COPY . .
RUN cargo build --release --locked -p switchyard --bin switchyard \
    && install -m 0755 target/release/switchyard /usr/local/bin/switchyard \
    && strip --strip-debug /usr/local/bin/switchyard

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
# No shell tools are needed at run time; the health check is the binary itself.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard \
    && mkdir -p /etc/switchyard /var/lib/switchyard \
    && chown switchyard /var/lib/switchyard
USER 10001
WORKDIR /var/lib/switchyard
# 8080 traffic, 8443 TLS traffic, 9090 admin (keep it off any public address).
EXPOSE 8080 8443 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["switchyard", "ready", "--config", "/etc/switchyard/router.toml"]
ENTRYPOINT ["switchyard"]
CMD ["serve", "--config", "/etc/switchyard/router.toml"]
