#!/usr/bin/env bash
# Installs what `make test` needs from Debian's packages when it is missing: the CNCF
# distribution registry (`docker-registry`), `skopeo` to push test images, and `prometheus` for
# `promtool` and a server that scrapes `/metrics` (tests/monitoring.rs). kubectl is
# expected on the machine (the manifests test renders overlays with its built-in kustomize).
set -euo pipefail
missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "make test needs: ${missing[*]} (apt-get install -y ${missing[*]}, as root)" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v kubectl >/dev/null || { echo "make test needs kubectl on PATH (for kustomize)" >&2; exit 1; }
