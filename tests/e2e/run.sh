#!/usr/bin/env bash
# tests/e2e/run.sh: the e2e tier (`make e2e`).
#
# Usage:   tests/e2e/run.sh
# Steps:   apiserver.sh (installs etcd; builds kube-apiserver and kube-controller-manager v1.20.2
#          once and caches them; their paths are exported as LAYERLINK_E2E_KUBE_APISERVER and
#          LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER), then
#          `cargo test --test e2e -- --ignored --nocapture --test-threads=1` (tests/e2e.rs), which
#          brings one cluster up with cluster.sh, runs every scenario and prints
#          `scenario N (name): ok|FAILED: why` for each. Exit status: that of cargo test.
# Cleanup: the test stops its cluster itself (also when a scenario fails or panics); this script
#          runs `cluster.sh down` on exit as well (idempotent), so an interrupted or killed test
#          leaves no etcd, kube-apiserver or kube-controller-manager behind. The work dir (cluster
#          logs, audit log) is removed on success and kept, with its path printed, on failure.
# Environment: LAYERLINK_E2E_ONLY=1,5 (run only those scenarios), LAYERLINK_E2E_KEEP=1 (keep the
#          work dir), CARGO (default cargo), and everything apiserver.sh/cluster.sh read
#          (LAYERLINK_E2E_CONTROLLER_MANAGER=0: a cluster without the controller-manager, where
#          scenarios 15 and 16 fail: they need its pods).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}

log() { printf '[run.sh +%ss] %s\n' "$SECONDS" "$*" >&2; }

LAYERLINK_E2E_KUBE_APISERVER=$(bash tests/e2e/apiserver.sh | tail -n1)
export LAYERLINK_E2E_KUBE_APISERVER
log "kube-apiserver: $LAYERLINK_E2E_KUBE_APISERVER ($("$LAYERLINK_E2E_KUBE_APISERVER" --version))"
if [[ ${LAYERLINK_E2E_CONTROLLER_MANAGER:-1} != 0 ]]; then
  LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER=$(bash tests/e2e/apiserver.sh kube-controller-manager | tail -n1)
  export LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER
  log "kube-controller-manager: $LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerlink-e2e.XXXXXX")
export LAYERLINK_E2E_WORK=$WORK
OK=0
cleanup() {
  local rc=$?
  bash tests/e2e/cluster.sh down "$WORK/cluster" || true
  if [[ $OK == 1 && ${LAYERLINK_E2E_KEEP:-0} != 1 ]]; then
    rm -rf "$WORK"
  else
    log "work dir kept: $WORK (cluster logs and audit log in $WORK/cluster)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$CARGO" test --test e2e -- --ignored --nocapture --test-threads=1
OK=1
log "e2e passed in ${SECONDS}s"
