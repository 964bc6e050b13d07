# syntax=docker/dockerfile:1
#
# layerlink container image: the webhook (`layerlink`) and the static no-op binary
# (`layerlink-noop`) that pre-pull init containers copy into pods.
#
#   docker build -t ghcr.io/layerlink/layerlink:0.1.0 .
#
# (`make image` builds the same image layout without a Docker daemon.)

# --- build -------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Both binaries are built for the explicit host target so that they share one set of compiled
# dependencies; only layerlink-noop is linked with a static C runtime (+crt-static): it is copied
# into arbitrary base images, which may have no libc at all. `cargo rustc` applies the flag to
# that binary alone (RUSTFLAGS would rebuild every dependency, and with an explicit --target
# never reaches build scripts or proc macros).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    host="$(rustc -vV | sed -n 's/^host: //p')"; \
    cargo build --release --locked --target "$host" --bin layerlink; \
    cargo rustc --release --locked --target "$host" --bin layerlink-noop \
        -- -C target-feature=+crt-static; \
    mkdir -p /out; \
    cp "target/$host/release/layerlink" "target/$host/release/layerlink-noop" /out/; \
    strip /out/layerlink /out/layerlink-noop

# --- runtime -----------------------------------------------------------------------------
# layerlink links glibc dynamically: distroless "cc" (glibc, libgcc, CA certificates, tzdata,
# no shell), the nonroot variant.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="layerlink" \
      org.opencontainers.image.description="Kubernetes admission webhook that pins pod images to registry digests" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/layerlink /out/layerlink-noop /usr/local/bin/
# Numeric, so that runAsNonRoot can be verified by the kubelet.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/layerlink"]
CMD ["serve", "--config", "/etc/layerlink/config.yaml"]
