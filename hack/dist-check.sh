#!/usr/bin/env bash
# Runs the release binaries of DIR (default dist) in an empty chroot: no /lib, no /etc, no
# shell. They must be static, and `layerlink install` must render from its built-in manifests
# with nothing on disk. Needs root (chroot). Also checks SHA256SUMS.
set -euo pipefail
DIST=${1:-dist}
cd "$DIST"
sha256sum --quiet -c SHA256SUMS
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
for f in layerlink-[0-9]* layerlink-noop-* kubectl-layerlink; do
  if file -b "$f" 2>/dev/null | grep -q "dynamically linked"; then
    echo "dist-check: $f is dynamically linked" >&2
    exit 1
  fi
done
cp layerlink-[0-9]* "$root/layerlink"
cp layerlink-noop-* "$root/noop"
cp kubectl-layerlink "$root/kubectl-layerlink"
chroot "$root" /layerlink --version | grep -q '^layerlink '
chroot "$root" /noop
chroot "$root" /layerlink install --no-pin --mode cluster-wide > "$root/install.yaml"
grep -q '^kind: MutatingWebhookConfiguration$' "$root/install.yaml"
grep -q '^kind: Secret$' "$root/install.yaml"
chroot "$root" /kubectl-layerlink install --help | grep -q 'kubectl layerlink install'
echo "dist-check: static binaries run in an empty chroot" >&2
