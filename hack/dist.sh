#!/usr/bin/env bash
# `make dist`: the release artifacts in dist/ (VERSION = the crate version):
#
#   layerlink-VERSION-linux-ARCH          static binary (musl; else glibc with +crt-static)
#   layerlink-noop-VERSION-linux-ARCH     the static no-op the pre-pull init containers copy
#   kubectl-layerlink                     the same binary under the kubectl plugin's name
#   install-namespaced.yaml, install-cluster-wide.yaml, install-audit-only.yaml
#                                         `layerlink install --mode MODE --certs none` (no key in
#                                         a shared file; the image pinned by digest when the
#                                         registry answers)
#   image/                                the OCI image layout (hack/image.sh)
#   SHA256SUMS                            sha256sum of every file above (image/ by its index.json)
#
# Then hack/dist-check.sh runs the binaries in an empty chroot (as root).
#
# env: DIST (default dist), TARGET (default: musl if its standard library is installed or
#      `rustup target add` can fetch it, else the host's glibc target with +crt-static).
set -euo pipefail
cd "$(dirname "$0")/.."
DIST=${DIST:-dist}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
host=$(rustc -vV | sed -n 's/^host: //p')
arch=${host%%-*}
musl="$arch-unknown-linux-musl"

# ring compiles C: the musl target needs musl-gcc (Debian's musl-tools) beside its std library.
musl_ready() {
  { rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl" >/dev/null 2>&1; } &&
    { command -v musl-gcc >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -qq musl-tools >/dev/null 2>&1; }; }
}
if [[ -z ${TARGET:-} ]]; then
  if musl_ready; then
    TARGET=$musl
  else
    echo "dist: $musl (std library or musl-gcc) is not installable here; building static glibc binaries (+crt-static)" >&2
    TARGET=$host
  fi
fi
echo "dist: layerlink $VERSION for $TARGET" >&2
# Static either way: musl links statically by default; glibc needs +crt-static (--target keeps
# the flag off build scripts and proc macros).
if [[ $TARGET == *-musl ]]; then
  cargo build --release --locked --target "$TARGET" --bin layerlink --bin layerlink-noop
else
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET" --bin layerlink --bin layerlink-noop
fi
out=target/$TARGET/release

rm -rf "$DIST" && mkdir -p "$DIST"
bin="$DIST/layerlink-$VERSION-linux-$arch"
noop="$DIST/layerlink-noop-$VERSION-linux-$arch"
strip -o "$bin" "$out/layerlink"
strip -o "$noop" "$out/layerlink-noop"
cp "$bin" "$DIST/kubectl-layerlink"

for mode in namespaced cluster-wide audit-only; do
  "$bin" install --mode "$mode" --certs none > "$DIST/install-$mode.yaml"
done

LAYERLINK_BIN=$bin NOOP_BIN=$noop hack/image.sh > /dev/null

( cd "$DIST" && sha256sum -- layerlink-* kubectl-layerlink install-*.yaml image/index.json > SHA256SUMS )
hack/dist-check.sh "$DIST"
echo "dist: wrote $DIST/" >&2
