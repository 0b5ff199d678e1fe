# douyin-gateway: a multi-stage build into a minimal non-root image (distroless: no shell, no
# package manager; the binary carries its TLS roots). Build and run:
#   docker build -t douyin-gateway .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/config.toml:/etc/douyin-gateway/config.toml:ro" \
#     -e DOUYIN_CLIENT_SECRET -e DOUYIN_GATEWAY_KEY douyin-gateway
# The config must listen on 0.0.0.0 (listen, admin_listen) to be reachable from outside the
# container; keep the SQLite file (store.path) on a volume at /var/lib/douyin-gateway, or use Redis.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin douyin-gateway \
 && install -D -m 0755 target/release/douyin-gateway /out/douyin-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/douyin-gateway /usr/local/bin/douyin-gateway
# The nonroot user of distroless (65532): owns nothing but the data directory.
USER 65532:65532
WORKDIR /var/lib/douyin-gateway
VOLUME ["/var/lib/douyin-gateway"]
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/douyin-gateway", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/douyin-gateway"]
CMD ["serve", "--config", "/etc/douyin-gateway/config.toml"]
