#!/usr/bin/env bash
# tests/e2e/smoke.sh: proves the e2e rig (no layerlink involved).
#
# Usage:   tests/e2e/smoke.sh            exit 0 and "SMOKE OK" on success
#
# Steps: cluster.sh up (building/caching the binaries via apiserver.sh on first use); create a
# namespace (waiting for its default token when the controller-manager runs) and a pod with
# kubectl and read it back with `kubectl get -o json`; start a throwaway
# mutating webhook (python3 stdlib HTTPS server, openssl certificates) that allows every request
# and returns a JSONPatch adding the label smoke.layerlink.io/mutated=true; register it with a
# MutatingWebhookConfiguration (clientConfig.url https://127.0.0.1:PORT/mutate, caBundle);
# check that the API server calls it (POST /mutate?timeout=5s, AdmissionReview v1) and stores the
# patched pod, that kubectl shows the webhook's warning and that the audit log (cluster DIR
# audit.log) holds its auditAnnotations; stop the webhook and check that failurePolicy Fail now rejects pod creation;
# cluster.sh down.
#
# Files: everything lives in a temp dir (cluster DIR = $WORK/cluster, webhook = $WORK/webhook,
#        webhook request log = $WORK/webhook/requests.log, bodies in $WORK/webhook/req-N.json).
#        Removed on success; kept (path printed) on failure.
# Environment: LAYERLINK_E2E_KEEP=1 keeps the temp dir; everything cluster.sh and apiserver.sh
#        read (LAYERLINK_E2E_CACHE, LAYERLINK_E2E_KUBE_APISERVER, ...) applies.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=$SCRIPT_DIR/cluster.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerlink-e2e-smoke.XXXXXX")
WEBHOOK_PID=
OK=0
START=$SECONDS

log() { printf '[smoke.sh +%ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
  local rc=$?
  if [[ -n $WEBHOOK_PID ]]; then kill "$WEBHOOK_PID" 2>/dev/null || true; wait "$WEBHOOK_PID" 2>/dev/null || true; fi
  "$CLUSTER" down "$WORK/cluster" || true
  if [[ $OK == 1 && ${LAYERLINK_E2E_KEEP:-0} != 1 ]]; then
    rm -rf "$WORK"
  else
    log "work dir kept: $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$CLUSTER" up "$WORK/cluster"
eval "$("$CLUSTER" env "$WORK/cluster")"
k() { kubectl --request-timeout=20s "$@"; }

log "server version: $(k version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"

# --- 1. plain objects --------------------------------------------------------------------------
NS=smoke
k create namespace "$NS" >/dev/null
k label namespace "$NS" smoke.layerlink.io/webhook=on >/dev/null
# With the controller-manager, ServiceAccount admission refuses pods until the namespace's
# account `default` has its token Secret (a moment after the namespace is created).
if [[ -n ${LAYERLINK_E2E_CONTROLLER_MANAGER_LOG:-} ]]; then
  for _ in $(seq 60); do
    [[ -n $(k -n "$NS" get serviceaccount default -o 'jsonpath={.secrets[*].name}' 2>/dev/null) ]] && break
    sleep 0.5
  done
fi
k -n "$NS" run plain --image=nginx:1.25 --labels=app=plain >/dev/null
k -n "$NS" get pod plain -o json >"$WORK/plain.json"
python3 - "$WORK/plain.json" <<'EOF' || fail "pod plain read back wrong"
import json, sys
pod = json.load(open(sys.argv[1]))
assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "plain", pod["metadata"]
assert pod["spec"]["containers"][0]["image"] == "nginx:1.25", pod["spec"]["containers"]
assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"   # defaulted
assert "smoke.layerlink.io/mutated" not in pod["metadata"].get("labels", {})
EOF
log "pod plain created and read back"

# --- 2. throwaway webhook ----------------------------------------------------------------------
WH=$WORK/webhook
mkdir -p "$WH"
(
  cd "$WH"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout ca.key -out ca.crt \
    -subj "/CN=smoke-webhook-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout tls.key -out tls.csr -subj "/CN=127.0.0.1" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost" >tls.ext
  openssl x509 -req -sha256 -days 2 -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -extfile tls.ext -out tls.crt 2>/dev/null
)
cat >"$WH/webhook.py" <<'EOF'
import base64, http.server, json, ssl, sys, threading

port_file, log_file = sys.argv[1], sys.argv[2]
lock = threading.Lock()
count = 0

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive, as the API server expects

    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        review = json.loads(body)
        req = review["request"]
        obj = req.get("object") or {}
        with lock:
            count += 1
            n = count
            with open(f"req-{n}.json", "wb") as f:
                f.write(body)
            with open(log_file, "a") as f:
                f.write(f"{self.command} {self.path} {review.get('apiVersion')} {req['operation']} "
                        f"{req['kind']['kind']} {req.get('namespace', '')}/"
                        f"{req.get('name', obj.get('metadata', {}).get('generateName', ''))} "
                        f"uid={req['uid']} ua={self.headers.get('User-Agent')}\n")
        resp = {"uid": req["uid"], "allowed": True}
        if self.path.split("?")[0] == "/mutate":
            if obj.get("metadata", {}).get("labels"):
                ops = [{"op": "add", "path": "/metadata/labels/smoke.layerlink.io~1mutated", "value": "true"}]
            else:
                ops = [{"op": "add", "path": "/metadata/labels", "value": {"smoke.layerlink.io/mutated": "true"}}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
            resp["warnings"] = ["smoke webhook added a label"]
            resp["auditAnnotations"] = {"smoke": "label-added"}
        out = json.dumps({"apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
                          "kind": "AdmissionReview", "response": resp}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        sys.stderr.write("webhook: " + (fmt % args) + "\n")

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("tls.crt", "tls.key")
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
EOF
(cd "$WH" && exec python3 webhook.py "$WH/port" "$WH/requests.log" >"$WH/webhook.log" 2>&1 </dev/null) &
WEBHOOK_PID=$!
for _ in $(seq 100); do [[ -s $WH/port ]] && break; sleep 0.1; done
[[ -s $WH/port ]] || fail "webhook did not start: $(cat "$WH/webhook.log")"
WH_PORT=$(<"$WH/port")
log "webhook listening on https://127.0.0.1:$WH_PORT"

cat >"$WORK/mwc.yaml" <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: smoke-add-label}
webhooks:
- name: add-label.smoke.layerlink.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  namespaceSelector: {matchLabels: {smoke.layerlink.io/webhook: "on"}}
  clientConfig:
    url: https://127.0.0.1:$WH_PORT/mutate
    caBundle: $(base64 -w0 <"$WH/ca.crt")
  rules:
  - {operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}
EOF
k apply -f "$WORK/mwc.yaml" >/dev/null

# The API server picks new webhook configurations up through an informer: wait until a
# server-side dry-run create comes back patched.
cat >"$WORK/probe.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: $NS}
spec: {containers: [{name: c, image: busybox:1.36}]}
EOF
mutated=""
for _ in $(seq 60); do
  mutated=$(k create --dry-run=server -f "$WORK/probe.yaml" \
              -o 'jsonpath={.metadata.labels.smoke\.layerlink\.io/mutated}' 2>/dev/null || true)
  [[ $mutated == true ]] && break
  sleep 0.5
done
[[ $mutated == true ]] || fail "webhook configuration never took effect"
log "webhook configuration active"

# --- 3. a pod created through the webhook is stored patched -----------------------------------
k -n "$NS" run hooked --image=nginx:1.25 --labels=app=hooked >/dev/null 2>"$WORK/hooked.stderr"
grep -q '^Warning: smoke webhook added a label$' "$WORK/hooked.stderr" \
  || fail "kubectl did not show the webhook's warning: $(cat "$WORK/hooked.stderr")"
k -n "$NS" get pod hooked -o json >"$WORK/hooked.json"
python3 - "$WORK/hooked.json" <<'EOF' || fail "stored pod hooked is not patched"
import json, sys
pod = json.load(open(sys.argv[1]))
labels = pod["metadata"]["labels"]
assert labels.get("smoke.layerlink.io/mutated") == "true", labels
assert labels.get("app") == "hooked", labels
EOF
grep -q "^POST /mutate?timeout=5s admission.k8s.io/v1 CREATE Pod $NS/hooked uid=.* ua=kube-apiserver-admission$" \
  "$WH/requests.log" || fail "no webhook call recorded for pod hooked: $(cat "$WH/requests.log")"
# A pod outside the selected namespace is not sent to the webhook.
k -n default run outside --image=nginx:1.25 >/dev/null
[[ -z $(k -n default get pod outside -o 'jsonpath={.metadata.labels.smoke\.layerlink\.io/mutated}') ]] \
  || fail "pod outside the selected namespace was mutated"
grep -q " default/outside " "$WH/requests.log" && fail "webhook was called for default/outside"
# The audit log carries the webhook's auditAnnotations, prefixed with the webhook name.
audited=""
for _ in $(seq 50); do
  audited=$(python3 - "$LAYERLINK_E2E_AUDIT_LOG" "$NS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    ev = json.loads(line)
    ref = ev.get("objectRef", {})
    if (ev.get("verb") == "create" and ref.get("resource") == "pods" and ref.get("namespace") == sys.argv[2]
            and ref.get("name") == "hooked" and ev.get("stage") == "ResponseComplete"):
        a = ev.get("annotations", {})
        print(a.get("add-label.smoke.layerlink.io/smoke", ""), a.get("mutation.webhook.admission.k8s.io/round_0_index_0", ""))
EOF
  )
  [[ -n $audited ]] && break
  sleep 0.1
done
[[ $audited == "label-added "*'"mutated":true'* ]] || fail "audit log lacks the webhook's annotations: '$audited'"
log "pod hooked stored with the webhook's label; audit: $audited"
log "webhook request log:"
sed 's/^/    /' "$WH/requests.log" >&2

# --- 4. failurePolicy: Fail with the webhook gone -> creation refused -------------------------
kill "$WEBHOOK_PID"; wait "$WEBHOOK_PID" 2>/dev/null || true; WEBHOOK_PID=
if out=$(k -n "$NS" run refused --image=nginx:1.25 2>&1); then
  fail "pod created although the webhook is down: $out"
fi
[[ $out == *'failed calling webhook "add-label.smoke.layerlink.io"'* ]] || fail "unexpected error: $out"
log "with the webhook down, creation is refused: ${out:0:160}..."

k delete mutatingwebhookconfiguration smoke-add-label >/dev/null
OK=1
log "SMOKE OK ($((SECONDS - START))s)"
echo "SMOKE OK"
