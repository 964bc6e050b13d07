#!/usr/bin/env bash
# `make image`: builds the release binaries, assembles an OCI image layout in dist/image
# (hack/oci-image.py; no container engine needed) and, when REGISTRY is set, pushes it with
# skopeo to $REGISTRY/layerlink:$TAG. The Dockerfile builds the same image where Docker exists.
#
# env: REGISTRY (host:port, optional), TAG (default: the crate version), TLS_VERIFY (default
#      false for loopback test registries), LAYERLINK_BIN / NOOP_BIN (skip the build, use these).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
host=$(rustc -vV | sed -n 's/^host: //p')
if [[ -z ${LAYERLINK_BIN:-} ]]; then
  cargo build --release --locked --bin layerlink
  LAYERLINK_BIN=target/release/layerlink
fi
if [[ -z ${NOOP_BIN:-} ]]; then
  # Static, so it runs in any base image (even distroless or scratch). --target keeps the flag
  # off build scripts and proc macros.
  cargo rustc --release --locked --bin layerlink-noop --target "$host" -- -C target-feature=+crt-static
  NOOP_BIN=target/$host/release/layerlink-noop
fi
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || { apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null; }
digest=$(python3 hack/oci-image.py --layerlink "$LAYERLINK_BIN" --noop "$NOOP_BIN" --out dist/image --tag "$TAG")
echo "built dist/image ($digest) tag $TAG" >&2
if [[ -n ${REGISTRY:-} ]]; then
  skopeo copy --quiet --dest-tls-verify="${TLS_VERIFY:-false}" "oci:dist/image:$TAG" "docker://$REGISTRY/layerlink:$TAG"
  echo "pushed $REGISTRY/layerlink:$TAG" >&2
fi
echo "$digest"
