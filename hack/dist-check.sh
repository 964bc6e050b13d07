#!/usr/bin/env bash
# Runs the release binaries of DIR (default dist) in an empty chroot: no /lib, no /etc, no
# shell. They must be static, and `layerlink install` must render from its built-in manifests
# with nothing on disk. Then name resolution as layerlink does it (getaddrinfo in the static C
# library): the chroot gets only an /etc/hosts naming a local registry, and `layerlink resolve`
# must pin the release's own image (dist/image, pushed there) through that name. Last,
# `kubectl layerlink --help` finds the plugin on PATH. Needs root (chroot), docker-registry,
# skopeo and kubectl. Also checks SHA256SUMS.
set -euo pipefail
DIST=${1:-dist}
cd "$DIST"
VERSION=$(sed -n 's/^layerlink-\([0-9][^ ]*\)-linux-.*/\1/p' <(ls) | head -1)
sha256sum --quiet -c SHA256SUMS
root=$(mktemp -d)
registry_pid=
cleanup() {
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
  rm -rf "$root"
}
trap cleanup EXIT
for f in layerlink-[0-9]* layerlink-noop-* kubectl-layerlink; do
  # `file` says "statically linked", or "static-pie linked" for musl's default static PIE.
  if ! file -b "$f" | grep -Eq "statically linked|static-pie linked"; then
    echo "dist-check: $f is not statically linked: $(file -b "$f")" >&2
    exit 1
  fi
done
mkdir "$root/chroot"
jail=$root/chroot
cp layerlink-[0-9]* "$jail/layerlink"
cp layerlink-noop-* "$jail/noop"
cp kubectl-layerlink "$jail/kubectl-layerlink"
chroot "$jail" /layerlink --version | grep -q "^layerlink $VERSION$"
chroot "$jail" /noop
chroot "$jail" /layerlink install --no-pin --mode cluster-wide > "$jail/install.yaml"
grep -q '^kind: MutatingWebhookConfiguration$' "$jail/install.yaml"
grep -q '^kind: Secret$' "$jail/install.yaml"
chroot "$jail" /kubectl-layerlink install --help | grep -q 'kubectl layerlink install'

# A registry on loopback, with the release image in it.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$root/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $root/storage}}
http: {addr: 127.0.0.1:$port, secret: dist-check}
YAML
docker-registry serve "$root/registry.yml" > "$root/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
skopeo copy --quiet --dest-tls-verify=false "oci:image:$VERSION" "docker://127.0.0.1:$port/layerlink:$VERSION"
mkdir "$jail/etc"
echo "127.0.0.1 registry.dist-check" > "$jail/etc/hosts"
echo "registries: [{host: \"registry.dist-check:$port\", plainHttp: true}]" > "$jail/config.yaml"
digest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' image/index.json)
pinned=$(chroot "$jail" /layerlink resolve --config /config.yaml "registry.dist-check:$port/layerlink:$VERSION")
if [[ $pinned != *"@$digest"* ]]; then
  echo "dist-check: resolve through /etc/hosts printed '$pinned', expected the digest $digest" >&2
  exit 1
fi

# The kubectl plugin, found on PATH by kubectl.
plugin=$root/path
mkdir "$plugin"
cp kubectl-layerlink "$plugin/"
PATH="$plugin:$PATH" kubectl layerlink --help | grep -q '^Usage: kubectl layerlink '
echo "dist-check: static binaries run in an empty chroot, resolve names through /etc/hosts, and kubectl runs the plugin" >&2
