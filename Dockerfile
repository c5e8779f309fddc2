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
ENV PUNCTUAL_LISTEN_ADDR=0.0.0.0:50051 \
    PUNCTUAL_DATABASE_URL=sqlite:///var/lib/punctual/punctual.db
VOLUME ["/var/lib/punctual"]
EXPOSE 50051
# No HEALTHCHECK: the image carries no gRPC health client. Orchestrators
# should probe the standard gRPC health service (grpc.health.v1.Health/Check,
# service "punctual.v1.Scheduler"), e.g. with Kubernetes' native grpc probe.
# SIGTERM starts a graceful shutdown (see --shutdown-grace).
STOPSIGNAL SIGTERM
ENTRYPOINT ["punctual"]
CMD ["serve"]
