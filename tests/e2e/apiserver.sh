#!/usr/bin/env bash
# tests/e2e/apiserver.sh: make sure etcd and the kube-apiserver and kube-controller-manager
# v1.20.2 binaries are available.
#
# Usage:   tests/e2e/apiserver.sh [kube-apiserver|kube-controller-manager]   (default kube-apiserver)
# Output:  progress on stderr; the LAST LINE of stdout is the absolute path of the binary asked
#          for (nothing else is printed on stdout). Exit status non-zero on failure.
#          Typical use:  KUBE_APISERVER=$(tests/e2e/apiserver.sh | tail -n1)
#                        KCM=$(tests/e2e/apiserver.sh kube-controller-manager | tail -n1)
#
# What it does (idempotent, unattended; needs root or passwordless sudo for the apt steps):
#   * etcd: if `etcd` is not on PATH, `apt-get install etcd-server` (Debian, etcd 3.4).
#   * kube-apiserver and kube-controller-manager: if either cached binary is missing, builds them
#     (one build, one lock: a second caller waits for it) from Debian bookworm's
#     `kubernetes` SOURCE package (upstream v1.20.2 tree with vendor/) with Debian's golang-go
#     (1.19), in GOPATH mode:
#       - adds a deb-src twin of the machine's own Debian sources (derived from
#         /etc/apt/sources.list and /etc/apt/sources.list.d/*.{sources,list}; only entries whose
#         suite is this release's codename or codename-*) as
#         /etc/apt/sources.list.d/layerlink-e2e-deb-src.{sources,list}, then `apt-get source`;
#       - generates pkg/generated/openapi/zz_generated.openapi.go with the vendored openapi-gen
#         (inputs as in upstream build/root/Makefile.generated_files);
#       - replaces vendored github.com/modern-go/reflect2 1.0.1 (broken on Go >= 1.18) with
#         Debian's golang-github-modern-go-reflect2-dev 1.0.2;
#       - `go build ./cmd/kube-apiserver ./cmd/kube-controller-manager` with version ldflags
#         (gitVersion v1.20.2); the controller-manager lets workloads create real pods.
#     Cold: about 7.5 minutes on 2 cores (measured 441 s, apt included: kube-apiserver 326 s, then
#     kube-controller-manager 55 s on the warm Go build cache), ~1.5 GB of scratch space,
#     deleted afterwards.
#
# Files:
#   $LAYERLINK_E2E_CACHE/<package-version>/kube-apiserver   the cached binary (~110 MB)
#   $LAYERLINK_E2E_CACHE/<package-version>/kube-controller-manager   beside it (~100 MB)
#   $LAYERLINK_E2E_CACHE/<package-version>/build/           scratch (removed after success)
#   $LAYERLINK_E2E_CACHE/<package-version>/build.log        log of the last build
#
# Environment:
#   LAYERLINK_E2E_CACHE            cache root (default: $HOME/.cache/layerlink-e2e)
#   LAYERLINK_E2E_K8S_VERSION      Debian source version (default 1.20.5+really1.20.2-1.1+deb12u1)
#   LAYERLINK_E2E_KUBE_APISERVER   asked for kube-apiserver: print this binary instead (no build;
#                                  etcd is still ensured)
#   LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER   the same for kube-controller-manager
#   LAYERLINK_E2E_KEEP_BUILD=1     keep the scratch build tree (source, GOPATH, Go build cache)
set -euo pipefail

PKG_VERSION=${LAYERLINK_E2E_K8S_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}
CACHE_ROOT=${LAYERLINK_E2E_CACHE:-$HOME/.cache/layerlink-e2e}
CACHE_DIR=$CACHE_ROOT/$PKG_VERSION
BIN=$CACHE_DIR/kube-apiserver
KCM=$CACHE_DIR/kube-controller-manager
GIT_VERSION=v1.20.2
GO=/usr/lib/go/bin/go
SRC_LIST_BASE=/etc/apt/sources.list.d/layerlink-e2e-deb-src
export DEBIAN_FRONTEND=noninteractive

log() { printf '[apiserver.sh +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot run apt-get"
  SUDO=(sudo -n)
fi

APT_UPDATED=0
apt_update() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -q >&2
    APT_UPDATED=1
  fi
}

# apt_install PKG...: install the packages that are not installed yet.
apt_install() {
  local missing=() p
  for p in "$@"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  # Refresh the lists first when apt does not know a candidate for one of them.
  for p in "${missing[@]}"; do
    if [[ $(apt-cache policy "$p" 2>/dev/null || true) != *"Candidate: "[0-9]* ]]; then
      apt_update
      break
    fi
  done
  log "apt-get install ${missing[*]}"
  if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt_update
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

ensure_etcd() {
  if ! command -v etcd >/dev/null 2>&1; then
    apt_install etcd-server
    # The package enables a system etcd on 127.0.0.1:2379; the tests start their own.
    if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet etcd 2>/dev/null; then
      log "disabling the etcd.service that etcd-server enabled (tests run their own etcd)"
      "${SUDO[@]}" systemctl disable --now etcd >&2 || true
    fi
  fi
  command -v etcd >/dev/null 2>&1 || die "etcd still not on PATH after installing etcd-server"
}

binary_ok() {
  [[ -x $1 ]] && [[ $("$1" --version 2>/dev/null || true) == "Kubernetes $GIT_VERSION" ]]
}

# Print deb-src twins of this machine's deb entries for its own release (codename, codename-*).
derive_deb_src() {
  local codename=$1 f
  # deb822 (.sources) stanzas
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f && $f != "$SRC_LIST_BASE.sources" ]] || continue
    awk -v cn="$codename" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; suites = ""; enabled = "yes"; out = ""
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          low = tolower(line)
          if (low ~ /^types:/) { types = line; sub(/^[^:]*:[ \t]*/, "", types); continue }
          if (low ~ /^suites:/) { suites = line; sub(/^[^:]*:[ \t]*/, "", suites) }
          if (low ~ /^enabled:/) { enabled = low; sub(/^[^:]*:[ \t]*/, "", enabled) }
          out = out line "\n"
        }
        if (enabled == "no") next
        nt = split(types, t, /[ \t]+/); hasdeb = 0; hassrc = 0
        for (j = 1; j <= nt; j++) { if (t[j] == "deb") hasdeb = 1; if (t[j] == "deb-src") hassrc = 1 }
        if (!hasdeb || hassrc) next
        ns = split(suites, s, /[ \t]+/); ok = 0
        for (j = 1; j <= ns; j++) if (s[j] == cn || index(s[j], cn "-") == 1) ok = 1
        if (!ok) next
        printf "Types: deb-src\n%s\n", out
      }' "$f"
  done
}

derive_deb_src_oneline() {
  local codename=$1 f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -e $f && $f != "$SRC_LIST_BASE.list" ]] || continue
    awk -v cn="$codename" '
      $1 == "deb" {
        n = 2
        if ($2 ~ /^\[/) { while (n <= NF && $n !~ /\]$/) n++; n++ }
        suite = $(n + 1)
        if (suite == cn || index(suite, cn "-") == 1) { $1 = "deb-src"; print }
      }' "$f"
  done
}

have_source_version() {
  local versions
  versions=$(apt-cache showsrc --only-source kubernetes 2>/dev/null | sed -n 's/^Version: //p' || true)
  grep -qxF -- "$PKG_VERSION" <<<"$versions"
}

# Write (or refresh) the deb-src twin files; apt-get update if anything changed or the source
# version is unknown.
ensure_deb_src() {
  local codename
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n $codename ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
  local tmp changed=0
  tmp=$(mktemp)
  derive_deb_src "$codename" >"$tmp"
  if [[ -s $tmp ]] && ! cmp -s "$tmp" "$SRC_LIST_BASE.sources"; then
    "${SUDO[@]}" install -m 0644 "$tmp" "$SRC_LIST_BASE.sources"; changed=1
  fi
  derive_deb_src_oneline "$codename" >"$tmp"
  if [[ -s $tmp ]] && ! cmp -s "$tmp" "$SRC_LIST_BASE.list"; then
    "${SUDO[@]}" install -m 0644 "$tmp" "$SRC_LIST_BASE.list"; changed=1
  fi
  rm -f "$tmp"
  if [[ $changed -eq 1 ]]; then
    log "wrote deb-src entries to $SRC_LIST_BASE.*"
    APT_UPDATED=0
    apt_update
  fi
  if ! have_source_version; then
    apt_update
  fi
  have_source_version || {
    log "available kubernetes source versions:"
    apt-cache showsrc --only-source kubernetes 2>/dev/null | grep '^Version:' >&2 || true
    die "source package kubernetes=$PKG_VERSION not found (set LAYERLINK_E2E_K8S_VERSION?)"
  }
}

build_apiserver() {
  local work=$CACHE_DIR/build
  local start=$SECONDS
  apt_install golang-go golang-github-modern-go-reflect2-dev dpkg-dev
  [[ -x $GO ]] || die "$GO missing after installing golang-go"
  ensure_deb_src

  rm -rf "$work"
  mkdir -p "$work/dl"
  log "apt-get source kubernetes=$PKG_VERSION"
  # apt drops privileges to _apt for downloads when it can write the target directory.
  if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$work/dl"; fi
  (cd "$work/dl" && apt-get source -q "kubernetes=$PKG_VERSION" >&2)
  local src
  src=$(find "$work/dl" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [[ -n $src && -d $src/cmd/kube-apiserver ]] || die "unpacked source tree not found in $work/dl"

  # GOPATH layout: $GOPATH/src/k8s.io/kubernetes -> the unpacked tree.
  export GOPATH=$work/gopath GOCACHE=$work/gocache GO111MODULE=off CGO_ENABLED=0 GOFLAGS=
  export GOTOOLCHAIN=local GOPROXY=off
  mkdir -p "$GOPATH/src/k8s.io" "$GOPATH/bin"
  ln -sfn "$src" "$GOPATH/src/k8s.io/kubernetes"
  local kroot=$GOPATH/src/k8s.io/kubernetes

  # (b) reflect2 1.0.1 -> Debian's 1.0.2 (1.0.1 breaks at run time on Go >= 1.18).
  local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -f $r2/reflect2.go ]] || die "$r2 missing (golang-github-modern-go-reflect2-dev)"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r "$r2" "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"

  # (a) pkg/generated/openapi/zz_generated.openapi.go, as build/root/Makefile.generated_files
  # does for the KUBE target: every Go dir of the tree (staging/src/* named vendor/*, not
  # ./vendor, ./_*, ./.*), files with a `// +k8s:` tag, minus code-generator and
  # sample-apiserver, those containing `+k8s:openapi-gen=`, their dirs.
  cd "$kroot"
  log "building openapi-gen"
  "$GO" build -o "$work/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen >&2
  local dirs
  dirs=$(find -H . \( -path './_*' -o -path './.*' -o -path ./vendor -o -path ./debian \) -prune \
           -o -type f -name '*.go' -print \
         | sed -e 's|^\./staging/src/|vendor/|' -e 's|^\./||' \
         | { xargs grep --color=never -l '^// *+k8s:' || true; } \
         | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
         | { xargs grep --color=never -l '+k8s:openapi-gen=' || true; } \
         | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  [[ -n $dirs ]] || die "no +k8s:openapi-gen= packages found"
  log "generating pkg/generated/openapi ($(tr ',' '\n' <<<"$dirs" | wc -l) input packages)"
  "$work/bin/openapi-gen" --logtostderr --v 0 \
    -i "$dirs" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -o "$GOPATH/src" \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$work/openapi-violations.report" >&2
  [[ -s pkg/generated/openapi/zz_generated.openapi.go ]] || die "openapi-gen wrote nothing"

  # Version stamping, as hack/lib/version.sh does.
  local bdate ldflags="-s -w" kv key val
  bdate=$(date -u -d "@$(dpkg-parsechangelog -l "$src/debian/changelog" -STimestamp)" +%Y-%m-%dT%H:%M:%SZ)
  for kv in "gitVersion=$GIT_VERSION" gitMajor=1 gitMinor=20 gitTreeState=archive "buildDate=$bdate"; do
    key=${kv%%=*}; val=${kv#*=}
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.$key=$val"
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.$key=$val"
  done

  mkdir -p "$CACHE_DIR"
  local target out
  for target in kube-apiserver kube-controller-manager; do
    out=$CACHE_DIR/$target
    binary_ok "$out" && continue
    log "go build ./cmd/$target ($("$GO" version))"
    "$GO" build -o "$out.tmp" -ldflags "$ldflags" "./cmd/$target" >&2
    binary_ok "$out.tmp" || die "built $target does not report Kubernetes $GIT_VERSION"
    mv -f "$out.tmp" "$out"
  done
  cd /
  log "built $BIN and $KCM in $((SECONDS - start))s"
  if [[ ${LAYERLINK_E2E_KEEP_BUILD:-0} != 1 ]]; then
    rm -rf "$work"
    log "removed the build tree $work"
  fi
}

main() {
  local want=${1:-kube-apiserver} override cached
  case $want in
    kube-apiserver) override=${LAYERLINK_E2E_KUBE_APISERVER:-}; cached=$BIN ;;
    kube-controller-manager) override=${LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER:-}; cached=$KCM ;;
    *) sed -n '5,9p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
  esac
  ensure_etcd
  if [[ -n $override ]]; then
    [[ -x $override ]] || die "$override (given for $want) is not executable"
    printf '%s\n' "$override"
    return 0
  fi
  if binary_ok "$BIN" && binary_ok "$KCM"; then
    printf '%s\n' "$cached"
    return 0
  fi
  mkdir -p "$CACHE_DIR"
  # One build at a time per cache dir; a second caller waits and then finds the binaries.
  exec 9>"$CACHE_DIR/.lock"
  flock 9
  if ! binary_ok "$BIN" || ! binary_ok "$KCM"; then
    log "no cached kube-apiserver and kube-controller-manager in $CACHE_DIR: building (log: $CACHE_DIR/build.log)"
    if ! (build_apiserver) 2> >(tee "$CACHE_DIR/build.log" >&2); then
      die "build failed; full log in $CACHE_DIR/build.log"
    fi
  fi
  exec 9>&-
  printf '%s\n' "$cached"
}

main "$@"
