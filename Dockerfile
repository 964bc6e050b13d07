# syntax=docker/dockerfile:1
#
# layerlink container image: the webhook (`layerlink`) and the static no-op binary
# (`layerlink-noop`) that pre-pull init containers copy into pods.
#
#   docker build -t ghcr.io/layerlink/layerlink:0.1.0 .
#
# (`make image` builds the same image layout without a Docker daemon.)

# --- build -------------------------------------------------------------------------------
# The same static binaries as `make dist` (hack/dist.sh): built for musl, which links
# statically by default; musl-gcc compiles the C in ring. Static binaries need no libc in the
# runtime image, and layerlink-noop is copied into arbitrary base images that may have none.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    cargo build --release --locked --target "$target" --bin layerlink --bin layerlink-noop; \
    mkdir -p /out; \
    cp "target/$target/release/layerlink" "target/$target/release/layerlink-noop" /out/; \
    strip /out/layerlink /out/layerlink-noop

# --- runtime -----------------------------------------------------------------------------
# Static binaries: distroless "static" (CA certificates, tzdata, /etc/passwd, no libc, no
# shell), the nonroot variant.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="layerlink" \
      org.opencontainers.image.description="Kubernetes admission webhook that pins pod images to registry digests" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/layerlink /out/layerlink-noop /usr/local/bin/
# Numeric, so that runAsNonRoot can be verified by the kubelet.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/layerlink"]
CMD ["serve", "--config", "/etc/layerlink/config.yaml"]
