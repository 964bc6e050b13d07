#!/usr/bin/env bash
# tests/e2e/cluster.sh: a throwaway control plane (etcd, kube-apiserver and
# kube-controller-manager v1.20.2) on loopback.
#
# Usage:
#   tests/e2e/cluster.sh up   DIR   start etcd, kube-apiserver, kube-controller-manager; wait until ready
#   tests/e2e/cluster.sh down DIR   stop exactly the processes that `up DIR` started (idempotent)
#   tests/e2e/cluster.sh env  DIR   print `export VAR=...` lines; use: eval "$(cluster.sh env DIR)"
#
# The controller-manager runs the controllers serviceaccount, serviceaccount-token, namespace,
# garbagecollector, deployment, replicaset, statefulset, job and daemonset: a namespace gets its
# ServiceAccount `default` and that account's token Secret, a deleted namespace really goes
# away, and Deployments, StatefulSets, Jobs (and DaemonSets, over Node objects you create)
# create real pods through admission. There is no scheduler or kubelet: pods stay Pending
# without a nodeName, so deleting one is immediate.
# With LAYERLINK_E2E_CONTROLLER_MANAGER=0 it is the control plane alone: workloads create no
# pods, deleted namespaces stay Terminating, and the ServiceAccount admission plugin is off (it
# would reject every pod without the token controller).
#
# `up DIR` creates DIR if needed and (re)initialises it; refuses if DIR's processes still run.
# It returns once /readyz is ok and (with the controller-manager) the ServiceAccount
# default/default has its token Secret. On any failure it stops what it started, prints the log
# tails and exits non-zero; when the failure was a port taken by another program between
# choosing it and binding it, it starts again with new ports (3 attempts in all).
# Files written in DIR:
#   kubeconfig                  admin kubeconfig (static bearer token, user in system:masters,
#                               CA embedded; context `layerlink-e2e`)
#   controller-manager.kubeconfig   the controller-manager's own: a client certificate for the
#                               user system:kube-controller-manager (bound by the bootstrap RBAC);
#                               each controller then uses its own ServiceAccount in kube-system
#                               (--use-service-account-credentials)
#   env                         the same lines `env DIR` prints
#   etcd.pid  kube-apiserver.pid  kube-controller-manager.pid   PIDs (removed by `down`)
#   etcd.log  kube-apiserver.log  kube-controller-manager.log   logs (the controller-manager's at
#                               --v=2: each pod it creates, each creation that failed and why)
#   etcd-data/                  etcd data directory
#   pki/ca.{crt,key}            cluster CA (also signs the serving cert; fine for webhook certs too)
#   pki/apiserver.{crt,key}     serving cert, SANs 127.0.0.1, localhost, 10.0.0.1, kubernetes.*
#   pki/controller-manager.{crt,key}   client cert, CN system:kube-controller-manager
#   pki/sa.{key,pub}            service-account key pair (the apiserver verifies with sa.pub and
#                               issues TokenRequest tokens with sa.key, the controller-manager signs
#                               token Secrets with sa.key)
#   pki/tokens.csv              static token file: admin token, user `admin`, group system:masters
#   etcd.args  kube-apiserver.args  kube-controller-manager.args   the exact command lines, one
#                               argument per line
#   controller-manager-certs/   its self-signed serving certificate (127.0.0.1, free port)
#   audit.log  audit-policy.yaml   audit events (JSON lines) for every non-read request at level
#                               Request; webhook auditAnnotations appear as
#                               .annotations["<webhook name>/<key>"]
#
# Variables printed by `env DIR` (and stored in DIR/env):
#   KUBECONFIG                    DIR/kubeconfig
#   LAYERLINK_E2E_APISERVER_URL   https://127.0.0.1:<port>
#   LAYERLINK_E2E_CA_FILE         DIR/pki/ca.crt
#   LAYERLINK_E2E_TOKEN           the admin bearer token
#   LAYERLINK_E2E_ETCD_URL        http://127.0.0.1:<port>
#   LAYERLINK_E2E_AUDIT_LOG       DIR/audit.log
#   LAYERLINK_E2E_CONTROLLER_MANAGER_LOG   DIR/kube-controller-manager.log (only when it runs)
#
# Environment read by `up`:
#   LAYERLINK_E2E_KUBE_APISERVER     kube-apiserver binary (default: built/cached by apiserver.sh)
#   LAYERLINK_E2E_KUBE_CONTROLLER_MANAGER   kube-controller-manager binary (default: built/cached
#                                    by `apiserver.sh kube-controller-manager`)
#   LAYERLINK_E2E_CONTROLLER_MANAGER=0   run without the controller-manager (default 1)
#   LAYERLINK_E2E_CONTROLLERS        its --controllers (default: the list above)
#   LAYERLINK_E2E_CONTROLLER_MANAGER_EXTRA_ARGS  extra kube-controller-manager arguments (word-split)
#   LAYERLINK_E2E_CACHE, LAYERLINK_E2E_K8S_VERSION   passed through to apiserver.sh
#   LAYERLINK_E2E_ETCD               etcd binary (default: `etcd` on PATH, installed by apiserver.sh)
#   LAYERLINK_E2E_ADMISSION_PLUGINS  --enable-admission-plugins
#                                    (default NamespaceLifecycle,MutatingAdmissionWebhook,
#                                    ValidatingAdmissionWebhook, plus PodSecurity when the binary
#                                    has it: v1.20.2 does not, PodSecurityPolicy stays off)
#   LAYERLINK_E2E_DISABLE_ADMISSION_PLUGINS  --disable-admission-plugins (default: none with the
#                                    controller-manager, ServiceAccount without it)
#   LAYERLINK_E2E_APISERVER_EXTRA_ARGS  extra kube-apiserver arguments (word-split)
#   LAYERLINK_E2E_READY_TIMEOUT      seconds to wait for each readiness step (default 90)
#
# Needs: bash, openssl, python3 (free ports), kubectl (readiness checks), etcd.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROCS=(kube-controller-manager kube-apiserver etcd)   # stop order

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" >&2; exit 2; }

# pid_of DIR NAME: print the PID from DIR/NAME.pid if that process is alive and is ours
# (its command line mentions DIR, so a recycled PID is never touched).
pid_of() {
  local dir=$1 name=$2 pid cmdline
  [[ -f $dir/$name.pid ]] || return 1
  pid=$(<"$dir/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  [[ $cmdline == *"$dir/"* ]] || return 1
  # A zombie (exited, not yet reaped) counts as gone.
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z) != Z ]] || return 1
  printf '%s\n' "$pid"
}

# running PID: a process this shell started is still running (unlike pid_of, also in the moment
# between fork and exec, while its command line is still this script's).
running() {
  [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z) != Z ]]
}

# gone DIR NAME TENTHS: true once NAME has exited, false if it still runs after TENTHS × 0.1 s.
gone() {
  local i
  for ((i = 0; i < $3; i++)); do
    pid_of "$1" "$2" >/dev/null || return 0
    sleep 0.1
  done
  ! pid_of "$1" "$2" >/dev/null
}

stop_one() {
  local dir=$1 name=$2 pid
  if pid=$(pid_of "$dir" "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! gone "$dir" "$name" 150; then
      log "$name (pid $pid) did not stop in 15s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      gone "$dir" "$name" 50 || true
    fi
    # Reap it if it is our own child (up's error path); harmless otherwise.
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/$name.pid"
}

cmd_down() {
  local dir=$1 name
  [[ -d $dir ]] || return 0
  for name in "${PROCS[@]}"; do stop_one "$dir" "$name"; done
}

# free_ports N: print N distinct free TCP ports on 127.0.0.1.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

gen_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=layerlink-e2e-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    cat >apiserver.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -sha256 -days 3650 -in apiserver.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 24)" >tokens.csv
    # The controller-manager's client certificate: the user that the bootstrap RBAC binds to the
    # ClusterRole system:kube-controller-manager.
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout controller-manager.key \
      -out controller-manager.csr -subj "/CN=system:kube-controller-manager" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth" >controller-manager.ext
    openssl x509 -req -sha256 -days 3650 -in controller-manager.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -extfile controller-manager.ext -out controller-manager.crt 2>/dev/null
    rm -f apiserver.csr apiserver.ext controller-manager.csr controller-manager.ext ca.srl
    chmod 0644 ca.crt apiserver.crt controller-manager.crt sa.pub
  )
}

# write_kubeconfig FILE URL CA USER CREDENTIALS: a kubeconfig for USER; CREDENTIALS are the
# lines of its `user:` map (a token, or client-certificate-data and client-key-data).
write_kubeconfig() {
  local file=$1 url=$2 ca=$3 user=$4 credentials=$5
  : >"$file"
  chmod 600 "$file"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: layerlink-e2e
  cluster:
    server: $url
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
$credentials
contexts:
- name: layerlink-e2e
  context: {cluster: layerlink-e2e, user: $user}
current-context: layerlink-e2e
EOF
}

show_logs() {
  local dir=$1 name
  for name in etcd kube-apiserver kube-controller-manager; do
    if [[ -f $dir/$name.log ]]; then
      log "---- last lines of $dir/$name.log"
      tail -n 20 "$dir/$name.log" >&2 || true
    fi
  done
}

# The ports come from free_ports, which releases them before the processes bind them: another
# program may take one meanwhile. Exit status of an `up` attempt that lost such a race.
PORT_TAKEN=75

# exited DIR NAME: NAME exited during startup; PORT_TAKEN if its log says that a port was taken.
exited() {
  if grep -q 'address already in use' "$1/$2.log" 2>/dev/null; then
    log "$2 could not bind its port (taken since free_ports chose it)"
    exit "$PORT_TAKEN"
  fi
  die "$2 exited during startup"
}

# up DIR: cmd_up, again with new ports (up to 3 attempts) when a port was taken meanwhile.
up() {
  local attempt rc
  for attempt in 1 2 3; do
    # Not `(cmd_up) || rc=$?`: errexit would be off inside the subshell.
    set +e
    (set -e; cmd_up "$1")
    rc=$?
    set -e
    [[ $rc == "$PORT_TAKEN" ]] || return "$rc"
    log "attempt $attempt lost a port to another program: starting again with new ports"
  done
  return "$rc"
}

up_failed() {
  local rc=$?
  trap - EXIT INT TERM
  log "up failed (exit $rc): stopping what was started"
  show_logs "$UP_DIR"
  cmd_down "$UP_DIR"
  exit "$rc"
}

cmd_up() {
  local dir=$1 name
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for name in "${PROCS[@]}"; do
    if pid_of "$dir" "$name" >/dev/null; then
      die "$name from an earlier 'up $dir' is still running; run 'down $dir' first"
    fi
  done

  # Any failure from here on (set -e, die, SIGINT/SIGTERM) stops what was started.
  UP_DIR=$dir
  trap up_failed EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local apiserver etcd_bin kcm="" with_kcm=${LAYERLINK_E2E_CONTROLLER_MANAGER:-1}
  [[ $with_kcm == [01] ]] || die "LAYERLINK_E2E_CONTROLLER_MANAGER must be 0 or 1, not '$with_kcm'"
  if [[ -n ${LAYERLINK_E2E_KUBE_APISERVER:-} ]]; then
    apiserver=$LAYERLINK_E2E_KUBE_APISERVER
    command -v "${LAYERLINK_E2E_ETCD:-etcd}" >/dev/null 2>&1 || "$SCRIPT_DIR/apiserver.sh" >/dev/null
  else
    apiserver=$("$SCRIPT_DIR/apiserver.sh" | tail -n1)
  fi
  [[ -x $apiserver ]] || die "kube-apiserver binary not found: $apiserver"
  if [[ $with_kcm == 1 ]]; then
    kcm=$("$SCRIPT_DIR/apiserver.sh" kube-controller-manager | tail -n1)
    [[ -x $kcm ]] || die "kube-controller-manager binary not found: $kcm"
  fi
  etcd_bin=$(command -v "${LAYERLINK_E2E_ETCD:-etcd}") || die "etcd not found"
  command -v kubectl >/dev/null 2>&1 || die "kubectl not found"

  rm -rf "$dir/etcd-data" "$dir/pki" "$dir/apiserver-certs" "$dir/controller-manager-certs"
  rm -f "$dir"/*.pid "$dir"/*.log "$dir"/*kubeconfig "$dir/env" "$dir"/*.args \
    "$dir/audit-policy.yaml"
  gen_pki "$dir/pki"
  local token
  token=$(cut -d, -f1 "$dir/pki/tokens.csv")

  local etcd_port peer_port api_port kcm_port
  read -r etcd_port peer_port api_port kcm_port < <(free_ports 4)
  local etcd_url=http://127.0.0.1:$etcd_port api_url=https://127.0.0.1:$api_port

  log "starting etcd on $etcd_url"
  launch "$dir" etcd "" "$etcd_bin" --name layerlink-e2e --data-dir "$dir/etcd-data" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "layerlink-e2e=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new --logger zap --log-outputs stderr

  local i
  for ((i = 0; i < 100; i++)); do
    running "$(<"$dir/etcd.pid")" || exited "$dir" etcd
    if (exec 3<>"/dev/tcp/127.0.0.1/$etcd_port") 2>/dev/null; then break; fi
    sleep 0.1
  done

  # Audit log: every write (create/update/patch/delete...) at level Request, reads not at all.
  # Webhook auditAnnotations land in .annotations as "<webhook name>/<key>", and the
  # mutation.webhook.admission.k8s.io/round_R_index_I annotations record each webhook call.
  cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: None
  nonResourceURLs: ["*"]
- level: Request
EOF

  # PodSecurity (admission plugin since 1.22) joins the list if this binary has it; v1.20.2 does
  # not (it only has PodSecurityPolicy, which stays off). The EphemeralContainers gate is passed
  # only if the binary still knows it.
  # ServiceAccount admission (on by default in 1.20) gives pods their token volume and
  # serviceAccountName, as in a real cluster; it needs the token controller, so it is off
  # without the controller-manager.
  local disabled=ServiceAccount
  [[ $with_kcm == 0 ]] || disabled=""
  disabled=${LAYERLINK_E2E_DISABLE_ADMISSION_PLUGINS-$disabled}
  local help plugins=${LAYERLINK_E2E_ADMISSION_PLUGINS:-NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook}
  local -a gates=()
  help=$("$apiserver" --help 2>&1 || true)
  if [[ -z ${LAYERLINK_E2E_ADMISSION_PLUGINS:-} ]] && grep -Eq '[ ,]PodSecurity[,. ]' <<<"$help"; then
    plugins+=,PodSecurity
  fi
  if grep -q 'EphemeralContainers=true|false' <<<"$help"; then
    gates=(--feature-gates=EphemeralContainers=true)
  fi

  local -a args=(
    --etcd-servers="$etcd_url"
    --bind-address=127.0.0.1
    --advertise-address=127.0.0.1
    --secure-port="$api_port"
    --insecure-port=0
    --cert-dir="$dir/apiserver-certs"
    --tls-cert-file="$dir/pki/apiserver.crt"
    --tls-private-key-file="$dir/pki/apiserver.key"
    --client-ca-file="$dir/pki/ca.crt"
    --token-auth-file="$dir/pki/tokens.csv"
    --authorization-mode=RBAC
    --service-account-key-file="$dir/pki/sa.pub"
    --service-account-signing-key-file="$dir/pki/sa.key"
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --api-audiences=https://kubernetes.default.svc.cluster.local
    --service-cluster-ip-range=10.0.0.0/24
    --endpoint-reconciler-type=none
    --enable-admission-plugins="$plugins"
    --disable-admission-plugins="$disabled"
    "${gates[@]}"
    --allow-privileged=true
    --audit-policy-file="$dir/audit-policy.yaml"
    --audit-log-path="$dir/audit.log"
  )
  log "starting kube-apiserver on $api_url"
  launch "$dir" kube-apiserver "${LAYERLINK_E2E_APISERVER_EXTRA_ARGS:-}" "$apiserver" "${args[@]}"

  write_kubeconfig "$dir/kubeconfig" "$api_url" "$dir/pki/ca.crt" admin "    token: $token"
  {
    printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
    printf 'export LAYERLINK_E2E_APISERVER_URL=%q\n' "$api_url"
    printf 'export LAYERLINK_E2E_CA_FILE=%q\n' "$dir/pki/ca.crt"
    printf 'export LAYERLINK_E2E_TOKEN=%q\n' "$token"
    printf 'export LAYERLINK_E2E_ETCD_URL=%q\n' "$etcd_url"
    printf 'export LAYERLINK_E2E_AUDIT_LOG=%q\n' "$dir/audit.log"
    if [[ $with_kcm == 1 ]]; then
      printf 'export LAYERLINK_E2E_CONTROLLER_MANAGER_LOG=%q\n' "$dir/kube-controller-manager.log"
    fi
  } >"$dir/env"

  local timeout=${LAYERLINK_E2E_READY_TIMEOUT:-90} start=$SECONDS
  until_ready "$dir" "$timeout" "/readyz and the namespace default" apiserver_ready "$dir"
  log "kube-apiserver ready in $((SECONDS - start))s: $api_url (KUBECONFIG=$dir/kubeconfig)"
  if [[ $with_kcm == 1 ]]; then
    start_controller_manager "$dir" "$kcm" "$api_url" "$kcm_port"
    until_ready "$dir" "$timeout" "the token Secret of the ServiceAccount default/default" \
      default_token_ready "$dir"
    log "kube-controller-manager ready in $((SECONDS - start))s (its log: $dir/kube-controller-manager.log)"
  fi
  trap - EXIT INT TERM
}

# apiserver_ready DIR: /readyz is ok and the namespace `default` exists.
apiserver_ready() {
  [[ $(kubectl --kubeconfig "$1/kubeconfig" --request-timeout=5s get --raw /readyz 2>&1 || true) == ok ]] \
    && kubectl --kubeconfig "$1/kubeconfig" --request-timeout=5s get namespace default -o name \
         >/dev/null 2>&1
}

# default_token_ready DIR: the serviceaccount and token controllers did their work for the
# namespace `default`, so pods there pass ServiceAccount admission.
default_token_ready() {
  [[ -n $(kubectl --kubeconfig "$1/kubeconfig" --request-timeout=5s -n default \
            get serviceaccount default -o 'jsonpath={.secrets[*].name}' 2>/dev/null || true) ]]
}

# until_ready DIR TIMEOUT WHAT CHECK ARGS...: runs CHECK ARGS every 0.5 s until it succeeds;
# dies if one of DIR's processes exits or after TIMEOUT seconds.
until_ready() {
  local dir=$1 timeout=$2 what=$3 start=$SECONDS name
  shift 3
  until "$@"; do
    for name in "${PROCS[@]}"; do
      [[ ! -f $dir/$name.pid ]] || running "$(<"$dir/$name.pid")" || exited "$dir" "$name"
    done
    ((SECONDS - start < timeout)) || die "not ready after ${timeout}s: waiting for $what"
    sleep 0.5
  done
}

# start_controller_manager DIR BINARY API_URL PORT
start_controller_manager() {
  local dir=$1 kcm=$2 api_url=$3 port=$4 credentials
  credentials=$(printf '    client-certificate-data: %s\n    client-key-data: %s' \
    "$(base64 -w0 <"$dir/pki/controller-manager.crt")" "$(base64 -w0 <"$dir/pki/controller-manager.key")")
  write_kubeconfig "$dir/controller-manager.kubeconfig" "$api_url" "$dir/pki/ca.crt" \
    system:kube-controller-manager "$credentials"
  local -a args=(
    --kubeconfig="$dir/controller-manager.kubeconfig"
    --bind-address=127.0.0.1
    --secure-port="$port"
    --port=0
    --cert-dir="$dir/controller-manager-certs"
    --leader-elect=false
    --controllers="${LAYERLINK_E2E_CONTROLLERS:-serviceaccount,serviceaccount-token,namespace,garbagecollector,deployment,replicaset,statefulset,job,daemonset}"
    --use-service-account-credentials=true
    --service-account-private-key-file="$dir/pki/sa.key"
    --root-ca-file="$dir/pki/ca.crt"
    --v=2
  )
  log "starting kube-controller-manager on https://127.0.0.1:$port"
  launch "$dir" kube-controller-manager "${LAYERLINK_E2E_CONTROLLER_MANAGER_EXTRA_ARGS:-}" "$kcm" "${args[@]}"
}

# launch DIR NAME EXTRA COMMAND...: runs COMMAND plus the words of EXTRA in the background as
# NAME: its command line in DIR/NAME.args (one argument per line), its output in DIR/NAME.log,
# its PID in DIR/NAME.pid.
launch() {
  local dir=$1 name=$2 extra=$3
  shift 3
  local -a command=("$@") more=()
  [[ -z $extra ]] || read -r -a more <<<"$extra"
  command+=("${more[@]}")
  printf '%s\n' "${command[@]}" >"$dir/$name.args"
  "${command[@]}" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

main() {
  [[ $# -eq 2 ]] || usage
  local verb=$1 dir=$2
  case $verb in
    up) up "$dir" ;;
    down)
      [[ -d $dir ]] || exit 0
      cmd_down "$(cd "$dir" && pwd)" ;;
    env)
      [[ -f $dir/env ]] || die "$dir/env not found; run 'up $dir' first"
      cat "$dir/env" ;;
    *) usage ;;
  esac
}

main "$@"
