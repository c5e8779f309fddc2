# ---- build ----
FROM rust:1-bookworm AS builder
WORKDIR /src
# build.rs compiles proto/ with protox (pure Rust, no protoc) and SQLite is
# bundled, so the stock Rust image has everything the build needs.
COPY . .
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/punctual /out/punctual

# ---- run ----
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 punctual \
    && useradd --system --uid 10001 --gid punctual --home-dir /var/lib/punctual --shell /usr/sbin/nologin punctual \
    && install -d -o punctual -g punctual -m 0750 /var/lib/punctual
COPY --from=builder /out/punctual /usr/local/bin/punctual

USER punctual
WORKDIR /var/lib/punctual
# In a container the service must be reachable from outside, so it listens
# on every interface, and therefore requires bearer tokens: mount a tokens
# file and set PUNCTUAL_AUTH_TOKENS_FILE (see docs/operations.md,
# "Authentication"), or `serve` refuses to start.
ENV PUNCTUAL_LISTEN_ADDR=0.0.0.0:50051 \
    PUNCTUAL_DATABASE_URL=sqlite:///var/lib/punctual/punctual.db
VOLUME ["/var/lib/punctual"]
EXPOSE 50051
# `punctual health-check` asks grpc.health.v1.Health/Check on the address of
# PUNCTUAL_LISTEN_ADDR (through loopback) and exits 0 only on SERVING; it
# needs no token and no tool beyond the binary. Kubernetes uses its native
# grpc probes instead (deploy/deployment.yaml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["punctual", "health-check", "--timeout", "4s"]
# SIGTERM starts a graceful shutdown (see --shutdown-grace).
STOPSIGNAL SIGTERM
ENTRYPOINT ["punctual"]
CMD ["serve"]
