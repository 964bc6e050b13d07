//! The kustomize manifests render to the objects the design promises.
//!
//! Every overlay (and the base, the components and monitoring/) is rendered with
//! `kubectl kustomize` and the rendered objects are checked: kinds and names, the webhook
//! entries' paths and namespaceSelectors (kube-system and layerlink-system excluded
//! everywhere), the digest policy, the Deployment's security context and probes, the
//! certificate wiring, and the config in the ConfigMap.
//!
//! The self-signed overlay carries no certificate (`layerlink certs --apply` or `layerlink
//! install` provides it); tests/install.rs renders every overlay from the tracked files alone.

#[path = "support/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

const NS: &str = "layerlink-system";
const EXCLUDED: [&str; 2] = ["kube-system", "layerlink-system"];
const IMAGE: &str = "ghcr.io/layerlink/layerlink:0.1.0";
const MODE: &str = "layerlink.io/mode";
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const CERT_MANAGER_CA: &str = "layerlink-system/layerlink-serving";

// ---------------------------------------------------------------------------------------------
// Rendering

/// A scratch copy of `manifests/` (for overlays written by the tests), removed when dropped.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "layerlink-manifests-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        copy_tree(&repo_manifests(), &root.join("manifests"));
        Scratch { root }
    }

    fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// Renders `manifests/<rel>` of the scratch copy.
    fn render(&self, rel: &str) -> Vec<Value> {
        render(&self.manifests().join(rel))
    }

    /// Writes an extra overlay into the scratch copy (as a user would) and renders it.
    fn render_custom(&self, name: &str, kustomization: &str) -> Vec<Value> {
        let dir = self.manifests().join("overlays").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
        render(&dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn repo_manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `kubectl kustomize DIR`, parsed into one JSON value per object.
fn render(dir: &Path) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `kubectl kustomize` (kubectl must be on PATH): {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("rendered {} is not YAML: {e}", dir.display()));
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert!(!docs.is_empty(), "{} rendered nothing", dir.display());
    docs
}

// ---------------------------------------------------------------------------------------------
// Access helpers

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn inventory(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter().map(|d| (kind(d).to_string(), name(d).to_string())).collect()
}

fn try_find<'a>(docs: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    docs.iter().find(|d| kind(d) == k && name(d) == n)
}

#[track_caller]
fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    try_find(docs, k, n).unwrap_or_else(|| panic!("no {k} {n}; rendered: {:?}", inventory(docs)))
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// The one ConfigMap generated as `layerlink-config` (its name carries a content hash).
#[track_caller]
fn config_map(docs: &[Value]) -> &Value {
    let found: Vec<&Value> = of_kind(docs, "ConfigMap")
        .into_iter()
        .filter(|d| name(d) == "layerlink-config" || name(d).starts_with("layerlink-config-"))
        .collect();
    assert_eq!(found.len(), 1, "expected one layerlink-config ConfigMap");
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().expect("a string").to_string()).collect()).unwrap_or_default()
}

fn string_set(v: &Value) -> BTreeSet<String> {
    strings(v).into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A label selector's matchExpressions as (key, operator, values), order-insensitive.
fn expressions(selector: &Value) -> BTreeSet<(String, String, BTreeSet<String>)> {
    selector["matchExpressions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["key"].as_str().unwrap().to_string(),
                        e["operator"].as_str().unwrap().to_string(),
                        string_set(&e["values"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The selector every entry must have: the mode expression plus the by-name exclusion.
fn selector(op: &str, modes: &[&str]) -> BTreeSet<(String, String, BTreeSet<String>)> {
    [(MODE.to_string(), op.to_string(), set(modes)), (NAME_LABEL.to_string(), "NotIn".to_string(), set(&EXCLUDED))]
        .into_iter()
        .collect()
}

#[track_caller]
fn assert_selector(what: &str, sel: &Value, op: &str, modes: &[&str]) {
    assert!(sel.get("matchLabels").is_none(), "{what}: unexpected matchLabels in {sel}");
    assert_eq!(expressions(sel), selector(op, modes), "{what}: namespaceSelector");
}

fn webhooks(config: &Value) -> BTreeMap<String, &Value> {
    config["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks shared by every rendering

/// What a rendering must hold: the objects every install needs, plus per-overlay webhook
/// entries (name → path, selector operator, mode values) and the digest policy's selector.
struct Expect<'a> {
    what: &'a str,
    entries: &'a [(&'a str, &'a str, &'a str, &'a [&'a str])],
    /// `None`: the policy and its binding must be absent.
    policy: Option<(&'a str, &'a [&'a str])>,
    /// With components/pre-1.30: no matchConditions (nor the policy).
    pre_1_30: bool,
    /// `Some`: the /validate webhook (pre-1.30) is registered with this selector.
    validate: Option<(&'a str, &'a [&'a str])>,
    ca: Ca,
}

#[derive(Clone, Copy, PartialEq)]
enum Ca {
    /// base: no caBundle anywhere, no Secret.
    None,
    /// Self-signed: the Secret and the caBundle are written after rendering (`layerlink certs
    /// --apply`), so neither is rendered, and nothing asks cert-manager.
    SelfSigned,
    /// cert-manager injects it: annotation, Certificates, no caBundle.
    CertManager,
}

fn check_install(docs: &[Value], expect: &Expect) {
    let what = expect.what;
    for (k, n) in [
        ("Namespace", NS),
        ("ServiceAccount", "layerlink"),
        ("ClusterRole", "layerlink"),
        ("ClusterRoleBinding", "layerlink"),
        ("Deployment", "layerlink"),
        ("Service", "layerlink"),
        ("PodDisruptionBudget", "layerlink"),
        ("MutatingWebhookConfiguration", "layerlink"),
    ] {
        assert!(try_find(docs, k, n).is_some(), "{what}: missing {k} {n}; rendered: {:?}", inventory(docs));
    }
    config_map(docs);
    check_common_metadata(docs, what);
    check_namespace(docs);
    check_rbac(docs);
    check_deployment(docs, what);
    check_config(docs);
    check_mutating_webhook(docs, expect);
    check_policy(docs, expect);
    check_validating_webhook(docs, expect);
    check_ca(docs, expect);
}

fn check_common_metadata(docs: &[Value], what: &str) {
    const CLUSTER_SCOPED: [&str; 7] = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    for doc in docs {
        let id = format!("{what}: {} {}", kind(doc), name(doc));
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/name"], "layerlink",
            "{id}: app.kubernetes.io/name label"
        );
        if CLUSTER_SCOPED.contains(&kind(doc)) {
            assert!(doc["metadata"].get("namespace").is_none(), "{id}: namespaced");
        } else {
            assert_eq!(doc["metadata"]["namespace"], NS, "{id}: namespace");
        }
    }
}

fn check_namespace(docs: &[Value]) {
    let ns = find(docs, "Namespace", NS);
    assert_eq!(ns["metadata"]["labels"][MODE], "off", "layerlink's own namespace must be labelled {MODE}=off");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
}

fn check_rbac(docs: &[Value]) {
    let role = find(docs, "ClusterRole", "layerlink");
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let verbs = string_set(&rule["verbs"]);
        assert!(
            !groups.iter().chain(&resources).chain(&verbs).any(|s| s == "*"),
            "wildcard in ClusterRole rule {rule}"
        );
        for group in &groups {
            assert!(
                group.is_empty() || group == "events.k8s.io",
                "unexpected API group {group:?}: the server only needs core and events"
            );
            for resource in &resources {
                granted.entry(resource.clone()).or_default().extend(verbs.iter().cloned());
            }
        }
    }
    let read = set(&["get"]);
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("secrets".to_string(), read.clone()),
        ("serviceaccounts".to_string(), read),
        ("events".to_string(), set(&["create", "patch"])),
        ("pods".to_string(), set(&["list"])),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        granted, expected,
        "ClusterRole: least privilege (pull secrets, service accounts, audit Events, sibling pods)"
    );

    let binding = find(docs, "ClusterRoleBinding", "layerlink");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "layerlink");
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], "layerlink");
    assert_eq!(subjects[0]["namespace"], NS);
}

#[track_caller]
fn assert_restricted(what: &str, sc: &Value) {
    assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
    assert_eq!(sc["runAsUser"], 65532, "{what}: runAsUser");
    assert_eq!(sc["runAsGroup"], 65532, "{what}: runAsGroup");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}: seccomp");
}

fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let wanted = port.as_str().expect("port is a number or a name");
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == wanted)
        .unwrap_or_else(|| panic!("no container port named {wanted}"))["containerPort"]
        .as_u64()
        .unwrap()
}

fn check_deployment(docs: &[Value], what: &str) {
    let deploy = find(docs, "Deployment", "layerlink");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2, "{what}: replicas");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0, "{what}: rollouts keep both replicas serving");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "selector label {k} on the pod template");
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "layerlink");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_restricted("pod securityContext", &pod["securityContext"]);

    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    let term = &anti.as_array().expect("preferred pod anti-affinity")[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    for (k, v) in term["labelSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "anti-affinity must select our own pods");
    }

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], IMAGE);
    assert_eq!(strings(&c["args"]), ["serve", "--config", "/etc/layerlink/config.yaml"]);
    let sc = &c["securityContext"];
    assert_restricted("container securityContext", sc);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"].get("add").is_none());
    assert!(sc.get("privileged").is_none() || sc["privileged"] == false);

    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports.get("https"), Some(&8443));
    assert_eq!(ports.get("http-metrics"), Some(&8080));

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(container_port(c, &get["port"]), 8080, "{probe} port");
        assert!(get.get("scheme").is_none() || get["scheme"] == "HTTP", "{probe} is plain HTTP");
    }

    let resources = &c["resources"];
    assert_eq!(resources["requests"]["cpu"], "50m");
    assert_eq!(resources["requests"]["memory"], "64Mi");
    assert_eq!(resources["limits"]["memory"], "256Mi");

    // Volumes: the generated ConfigMap (by its hashed name) and the TLS Secret.
    let volumes: BTreeMap<String, &Value> =
        pod["volumes"].as_array().unwrap().iter().map(|v| (v["name"].as_str().unwrap().to_string(), v)).collect();
    let mounts: BTreeMap<String, &Value> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap().to_string(), m))
        .collect();
    let config_mount = mounts["/etc/layerlink/config.yaml"];
    assert_eq!(config_mount["subPath"], "config.yaml");
    let config_volume = volumes[config_mount["name"].as_str().unwrap()];
    assert_eq!(
        config_volume["configMap"]["name"].as_str(),
        Some(name(config_map(docs))),
        "the Deployment mounts the rendered ConfigMap"
    );
    let tls_mount = mounts["/etc/layerlink/tls"];
    assert!(tls_mount.get("subPath").is_none(), "a subPath mount would hide rotated certificates");
    let tls_volume = volumes[tls_mount["name"].as_str().unwrap()];
    assert_eq!(tls_volume["secret"]["secretName"], "layerlink-tls");

    // Service: 443 → https (8443), and the metrics port; selects the pods.
    let svc = find(docs, "Service", "layerlink");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selector label {k}");
    }
    let svc_ports: BTreeMap<u64, u64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), container_port(c, &p["targetPort"])))
        .collect();
    assert_eq!(svc_ports.get(&443), Some(&8443), "Service 443 → 8443");
    assert_eq!(svc_ports.get(&8080), Some(&8080), "Service metrics port");

    let pdb = find(docs, "PodDisruptionBudget", "layerlink");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "PDB selector label {k}");
    }

    // system-cluster-critical outside kube-system needs a quota on clusters that limit it.
    let quota = find(docs, "ResourceQuota", "layerlink-critical-pods");
    let scope = &quota["spec"]["scopeSelector"]["matchExpressions"][0];
    assert_eq!(scope["scopeName"], "PriorityClass");
    assert!(string_set(&scope["values"]).contains("system-cluster-critical"));
}

fn check_config(docs: &[Value]) {
    let cm = config_map(docs);
    let text = cm["data"]["config.yaml"].as_str().expect("ConfigMap key config.yaml");
    let config: Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("config.yaml is not YAML: {e}"));
    let keys: BTreeSet<String> = config.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        set(&["listen", "tls", "resolve", "cache", "registries", "exclude", "workloads"]),
        "config.yaml top-level keys"
    );
    assert_eq!(config["listen"]["https"], "0.0.0.0:8443");
    assert_eq!(config["listen"]["http"], "0.0.0.0:8080");
    assert_eq!(config["tls"]["certFile"], "/etc/layerlink/tls/tls.crt");
    assert_eq!(config["tls"]["keyFile"], "/etc/layerlink/tls/tls.key");
    assert_eq!(config["resolve"]["budget"], "2s");
    assert_eq!(config["resolve"]["keepTag"], true);
    assert_eq!(config["resolve"]["onError"], "allow");
    assert_eq!(config["cache"]["ttl"], "10m");
    assert_eq!(config["cache"]["negativeTtl"], "30s");
    assert_eq!(config["cache"]["staleIfError"], "24h");
    assert_eq!(config["cache"]["maxEntries"], 100000);
    assert_eq!(config["registries"], Value::Array(vec![]));
    assert_eq!(strings(&config["exclude"]["images"]), ["registry.k8s.io/pause*"]);
    assert_eq!(string_set(&config["exclude"]["namespaces"]), set(&EXCLUDED));
    assert_eq!(config["workloads"]["templates"], false);

    // And the server's own loader accepts it (unknown keys are an error there).
    if let Err(e) = layerlink::Config::parse(text) {
        panic!("layerlink rejects the ConfigMap's config.yaml: {e}");
    }
}

fn check_mutating_webhook(docs: &[Value], expect: &Expect) {
    let what = expect.what;
    let mwc = find(docs, "MutatingWebhookConfiguration", "layerlink");
    assert_eq!(mwc["apiVersion"], "admissionregistration.k8s.io/v1");
    let entries = webhooks(mwc);
    let names: BTreeSet<String> = entries.keys().cloned().collect();
    let expected_names: BTreeSet<String> = expect.entries.iter().map(|e| e.0.to_string()).collect();
    assert_eq!(names, expected_names, "{what}: webhook entries");

    for &(entry_name, path, op, modes) in expect.entries {
        let w = entries[entry_name];
        let id = format!("{what}: {entry_name}");
        let service = &w["clientConfig"]["service"];
        assert_eq!(service["path"], path, "{id}: service path");
        assert_eq!(service["name"], "layerlink", "{id}: service name");
        assert_eq!(service["namespace"], NS, "{id}: service namespace");
        assert!(service.get("port").is_none() || service["port"] == 443, "{id}: port");
        assert!(w["clientConfig"].get("url").is_none(), "{id}: url and service");
        assert_selector(&id, &w["namespaceSelector"], op, modes);
        assert!(w.get("objectSelector").is_none(), "{id}: no objectSelector");
        assert_eq!(strings(&w["admissionReviewVersions"]), ["v1"], "{id}");
        let side_effects = if path == "/audit" { "NoneOnDryRun" } else { "None" };
        assert_eq!(w["sideEffects"], side_effects, "{id}: sideEffects");
        assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{id}: reinvocationPolicy");
        assert_eq!(w["timeoutSeconds"], 3, "{id}: timeoutSeconds");
        assert_eq!(w["failurePolicy"], "Ignore", "{id}: fail open (the policy is the backstop)");

        if expect.pre_1_30 {
            assert!(w.get("matchConditions").is_none(), "{id}: pre-1.30 has no matchConditions");
        } else {
            let conditions: Vec<&str> = w["matchConditions"]
                .as_array()
                .unwrap_or_else(|| panic!("{id}: matchConditions"))
                .iter()
                .map(|c| c["expression"].as_str().unwrap())
                .collect();
            for ns in EXCLUDED {
                assert!(
                    conditions.iter().any(|c| c.contains("request.namespace") && c.contains(ns)),
                    "{id}: a matchCondition skips {ns}: {conditions:?}"
                );
            }
        }

        // Rules: CREATE and UPDATE of pods (and ephemeral containers); the workload kinds only
        // when the config pins templates, which the base config does not.
        let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
        for rule in w["rules"].as_array().unwrap() {
            assert_eq!(string_set(&rule["operations"]), set(&["CREATE", "UPDATE"]), "{id}: operations");
            assert_eq!(rule["scope"], "Namespaced", "{id}: scope");
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    assert!(!resource.contains('*'), "{id}: wildcard resource");
                    covered.insert((group.clone(), resource));
                }
            }
        }
        let wanted = [("", "pods"), ("", "pods/ephemeralcontainers")];
        let wanted: BTreeSet<(String, String)> = wanted.iter().map(|(g, r)| (g.to_string(), r.to_string())).collect();
        assert_eq!(covered, wanted, "{id}: rules");
    }
}

fn check_policy(docs: &[Value], expect: &Expect) {
    let what = expect.what;
    let policy = try_find(docs, "ValidatingAdmissionPolicy", "layerlink-require-digests");
    let binding = try_find(docs, "ValidatingAdmissionPolicyBinding", "layerlink-require-digests");
    let Some((op, modes)) = expect.policy else {
        assert!(policy.is_none() && binding.is_none(), "{what}: the digest policy must not be installed");
        return;
    };
    let policy = policy.unwrap_or_else(|| panic!("{what}: no ValidatingAdmissionPolicy"));
    let binding = binding.unwrap_or_else(|| panic!("{what}: no ValidatingAdmissionPolicyBinding"));
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(binding["apiVersion"], "admissionregistration.k8s.io/v1");
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let rules = spec["matchConstraints"]["resourceRules"].as_array().unwrap();
    assert!(rules.iter().any(|r| {
        strings(&r["apiGroups"]) == [""]
            && string_set(&r["resources"]).contains("pods")
            && string_set(&r["resources"]).contains("pods/ephemeralcontainers")
            && string_set(&r["operations"]) == set(&["CREATE", "UPDATE"])
    }));
    // The CEL: every image list is read, and the test is a digest.
    let mut cel = String::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        cel.push_str(v["expression"].as_str().unwrap());
        cel.push('\n');
    }
    let validations = spec["validations"].as_array().unwrap();
    assert_eq!(validations.len(), 1);
    let check = validations[0]["expression"].as_str().unwrap();
    assert!(check.contains("variables.") || check.contains("@sha256:"), "the validation must test the images: {check}");
    cel.push_str(check);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        // Read, not only tested for presence with has().
        let field = format!("object.spec.{list}");
        assert!(
            cel.matches(&field).count() > cel.matches(&format!("has({field})")).count(),
            "policy CEL does not read {field}:\n{cel}"
        );
    }
    // Image volumes are read too; the digest test itself is checked against `/validate` in
    // tests/policy.rs.
    for needle in ["object.spec.volumes.filter(", "v.image.reference", "matches('@(sha256:", "oldObject"] {
        assert!(cel.contains(needle), "policy CEL lacks {needle}:\n{cel}");
    }
    let message = validations[0]["messageExpression"].as_str().unwrap();
    assert!(message.contains("@sha256:") && message.contains("layerlink mutate"));
    assert!(validations[0]["message"].as_str().is_some());

    assert_eq!(binding["spec"]["policyName"], "layerlink-require-digests");
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
    assert_selector(
        &format!("{what}: policy binding"),
        &binding["spec"]["matchResources"]["namespaceSelector"],
        op,
        modes,
    );
}

fn check_validating_webhook(docs: &[Value], expect: &Expect) {
    let what = expect.what;
    let vwc = try_find(docs, "ValidatingWebhookConfiguration", "layerlink");
    let Some((op, modes)) = expect.validate else {
        assert!(vwc.is_none(), "{what}: unexpected ValidatingWebhookConfiguration");
        return;
    };
    let vwc = vwc.unwrap_or_else(|| panic!("{what}: no ValidatingWebhookConfiguration"));
    let entries = webhooks(vwc);
    assert_eq!(entries.len(), 1);
    let w = entries["validate.layerlink.io"];
    let service = &w["clientConfig"]["service"];
    assert_eq!(service["path"], "/validate");
    assert_eq!(service["name"], "layerlink");
    assert_eq!(service["namespace"], NS);
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["failurePolicy"], "Fail");
    assert!(w.get("matchConditions").is_none());
    assert_selector(&format!("{what}: validate.layerlink.io"), &w["namespaceSelector"], op, modes);
}

fn check_ca(docs: &[Value], expect: &Expect) {
    let what = expect.what;
    let configs: Vec<&Value> = docs.iter().filter(|d| kind(d).ends_with("WebhookConfiguration")).collect();
    let bundles: Vec<&Value> = configs
        .iter()
        .flat_map(|c| c["webhooks"].as_array().unwrap())
        .map(|w| &w["clientConfig"]["caBundle"])
        .collect();
    let annotation = |c: &&Value| c["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].clone();
    match expect.ca {
        Ca::None => {
            assert!(bundles.iter().all(|b| b.is_null()), "{what}: caBundle");
            assert!(of_kind(docs, "Secret").is_empty(), "{what}: no Secret");
        }
        Ca::SelfSigned => {
            assert!(bundles.iter().all(|b| b.is_null()), "{what}: caBundle is written by `layerlink certs --apply`");
            assert!(of_kind(docs, "Secret").is_empty(), "{what}: no certificate in the manifests");
            assert!(of_kind(docs, "Certificate").is_empty());
            let mutating = find(docs, "MutatingWebhookConfiguration", "layerlink");
            assert!(annotation(&mutating).is_null(), "{what}: inject-ca-from without cert-manager");
        }
        Ca::CertManager => {
            assert!(bundles.iter().all(|b| b.is_null()), "{what}: caBundle is injected");
            assert!(of_kind(docs, "Secret").is_empty(), "{what}: cert-manager writes the Secret");
            for c in &configs {
                assert_eq!(annotation(c), CERT_MANAGER_CA, "{what}: inject-ca-from");
            }
            let (ns, cert_name) = CERT_MANAGER_CA.split_once('/').unwrap();
            let serving = find(docs, "Certificate", cert_name);
            assert_eq!(serving["metadata"]["namespace"], ns);
            assert_eq!(serving["spec"]["secretName"], "layerlink-tls");
            assert!(
                string_set(&serving["spec"]["dnsNames"]).contains("layerlink.layerlink-system.svc"),
                "the API server calls layerlink.layerlink-system.svc"
            );
            assert_eq!(serving["spec"]["issuerRef"]["name"], "layerlink-ca");
            let ca_cert = find(docs, "Certificate", "layerlink-ca");
            assert_eq!(ca_cert["spec"]["isCA"], true);
            assert_eq!(ca_cert["spec"]["issuerRef"]["name"], "layerlink-selfsigned");
            let self_signed = find(docs, "Issuer", "layerlink-selfsigned");
            assert!(self_signed["spec"]["selfSigned"].is_object());
            let ca_issuer = find(docs, "Issuer", "layerlink-ca");
            assert_eq!(ca_issuer["spec"]["ca"]["secretName"], ca_cert["spec"]["secretName"]);
        }
    }
}

// The webhook entries of the two installs people choose between.
const NAMESPACED: &[(&str, &str, &str, &[&str])] =
    &[("enforce.layerlink.io", "/mutate", "In", &["enforce"]), ("audit.layerlink.io", "/audit", "In", &["audit"])];
const CLUSTER_WIDE: &[(&str, &str, &str, &[&str])] = &[
    ("enforce.layerlink.io", "/mutate", "NotIn", &["audit", "off"]),
    ("audit.layerlink.io", "/audit", "In", &["audit"]),
];
const AUDIT_ONLY: &[(&str, &str, &str, &[&str])] = &[("audit.layerlink.io", "/audit", "NotIn", &["off"])];

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn base_renders_every_object_and_opts_in_by_label() {
    let docs = render(&repo_manifests().join("base"));
    check_install(
        &docs,
        &Expect {
            what: "base",
            entries: NAMESPACED,
            policy: Some(("In", &["enforce"])),
            pre_1_30: false,
            validate: None,
            ca: Ca::None,
        },
    );
    let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ResourceQuota",
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        .into_iter()
        .collect(),
        "base kinds"
    );
}

#[test]
fn self_signed_overlay_leaves_the_certificate_to_layerlink() {
    let scratch = Scratch::new();
    let docs = scratch.render("overlays/self-signed");
    check_install(
        &docs,
        &Expect {
            what: "self-signed",
            entries: NAMESPACED,
            policy: Some(("In", &["enforce"])),
            pre_1_30: false,
            validate: None,
            ca: Ca::SelfSigned,
        },
    );
}

#[test]
fn no_certificate_file_is_left_to_commit() {
    // Older `make manifests` wrote keys into the overlay: they stay out of git.
    let ignore = std::fs::read_to_string(repo_manifests().join("overlays/self-signed/.gitignore")).unwrap();
    for file in ["tls.key", "tls.crt", "ca.crt"] {
        assert!(ignore.lines().any(|l| l.trim() == file), ".gitignore lacks {file}");
    }
}

#[test]
fn cert_manager_overlay_issues_and_injects() {
    let docs = render(&repo_manifests().join("overlays/cert-manager"));
    check_install(
        &docs,
        &Expect {
            what: "cert-manager",
            entries: NAMESPACED,
            policy: Some(("In", &["enforce"])),
            pre_1_30: false,
            validate: None,
            ca: Ca::CertManager,
        },
    );
}

#[test]
fn cluster_wide_overlay_enforces_everywhere_not_opted_out() {
    let scratch = Scratch::new();
    let docs = scratch.render("overlays/cluster-wide");
    check_install(
        &docs,
        &Expect {
            what: "cluster-wide",
            entries: CLUSTER_WIDE,
            policy: Some(("NotIn", &["audit", "off"])),
            pre_1_30: false,
            validate: None,
            ca: Ca::SelfSigned,
        },
    );
}

#[test]
fn audit_only_overlay_audits_everywhere_and_never_rejects() {
    let scratch = Scratch::new();
    let docs = scratch.render("overlays/audit-only");
    check_install(
        &docs,
        &Expect {
            what: "audit-only",
            entries: AUDIT_ONLY,
            policy: None,
            pre_1_30: false,
            validate: None,
            ca: Ca::SelfSigned,
        },
    );
}

#[test]
fn components_compose_with_cert_manager() {
    let scratch = Scratch::new();
    let docs = scratch.render_custom(
        "test-cert-manager-cluster-wide",
        "resources: [../cert-manager]\ncomponents: [../../components/cluster-wide]\n",
    );
    check_install(
        &docs,
        &Expect {
            what: "cert-manager + cluster-wide",
            entries: CLUSTER_WIDE,
            policy: Some(("NotIn", &["audit", "off"])),
            pre_1_30: false,
            validate: None,
            ca: Ca::CertManager,
        },
    );
    let docs = scratch.render_custom(
        "test-cert-manager-audit-only",
        "resources: [../cert-manager]\ncomponents: [../../components/audit-only]\n",
    );
    check_install(
        &docs,
        &Expect {
            what: "cert-manager + audit-only",
            entries: AUDIT_ONLY,
            policy: None,
            pre_1_30: false,
            validate: None,
            ca: Ca::CertManager,
        },
    );
}

#[test]
fn pre_1_30_component_swaps_the_policy_for_the_validate_webhook() {
    let scratch = Scratch::new();
    let cases: [(&str, &str, Expect); 4] = [
        (
            "test-pre-1.30",
            "resources: [../self-signed]\ncomponents: [../../components/pre-1.30]\n",
            Expect {
                what: "self-signed + pre-1.30",
                entries: NAMESPACED,
                policy: None,
                pre_1_30: true,
                validate: Some(("In", &["enforce"])),
                ca: Ca::SelfSigned,
            },
        ),
        (
            "test-pre-1.30-cluster-wide",
            "resources: [../self-signed]\ncomponents:\n  - ../../components/pre-1.30\n  - ../../components/cluster-wide\n",
            Expect {
                what: "self-signed + pre-1.30 + cluster-wide",
                entries: CLUSTER_WIDE,
                policy: None,
                pre_1_30: true,
                validate: Some(("NotIn", &["audit", "off"])),
                ca: Ca::SelfSigned,
            },
        ),
        (
            "test-pre-1.30-cert-manager",
            "resources: [../cert-manager]\ncomponents: [../../components/pre-1.30]\n",
            Expect {
                what: "cert-manager + pre-1.30",
                entries: NAMESPACED,
                policy: None,
                pre_1_30: true,
                validate: Some(("In", &["enforce"])),
                ca: Ca::CertManager,
            },
        ),
        (
            "test-pre-1.30-audit-only",
            "resources: [../cert-manager]\ncomponents:\n  - ../../components/pre-1.30\n  - ../../components/audit-only\n",
            Expect {
                what: "cert-manager + pre-1.30 + audit-only",
                entries: AUDIT_ONLY,
                policy: None,
                pre_1_30: true,
                validate: None,
                ca: Ca::CertManager,
            },
        ),
    ];
    for (dir, kustomization, expect) in cases {
        let docs = scratch.render_custom(dir, kustomization);
        check_install(&docs, &expect);
        assert!(
            !inventory(&docs).iter().any(|(_, n)| n.contains("pre-1.30-values")),
            "{}: the local-config values must not be rendered",
            expect.what
        );
    }
}

/// Every renderable directory under manifests/: no kube-system or layerlink-system pod is ever
/// sent to layerlink or checked by the digest policy, whatever the overlay.
#[test]
fn every_rendering_excludes_the_system_namespaces() {
    let scratch = Scratch::new();
    for rel in ["base", "overlays/self-signed", "overlays/cert-manager", "overlays/cluster-wide", "overlays/audit-only"]
    {
        let docs = scratch.render(rel);
        let mut selectors = Vec::new();
        for doc in &docs {
            if kind(doc).ends_with("WebhookConfiguration") {
                for w in doc["webhooks"].as_array().unwrap() {
                    selectors.push((format!("{rel}: {}", w["name"]), &w["namespaceSelector"]));
                }
            }
            if kind(doc) == "ValidatingAdmissionPolicyBinding" {
                selectors.push((
                    format!("{rel}: binding {}", name(doc)),
                    &doc["spec"]["matchResources"]["namespaceSelector"],
                ));
            }
        }
        assert!(!selectors.is_empty(), "{rel}: no webhook entries");
        for (id, sel) in selectors {
            let exprs = expressions(sel);
            assert!(
                exprs.contains(&(NAME_LABEL.to_string(), "NotIn".to_string(), set(&EXCLUDED))),
                "{id}: must exclude {EXCLUDED:?} by {NAME_LABEL}: {sel}"
            );
            // And no expression lets the excluded namespaces back in.
            for (key, op, values) in &exprs {
                if key == NAME_LABEL {
                    assert_eq!(op, "NotIn", "{id}");
                }
                if key == MODE && op == "In" {
                    assert!(!values.contains("off"), "{id}: selects mode=off");
                }
                if key == MODE && op == "NotIn" {
                    assert!(values.contains("off"), "{id}: must skip mode=off");
                }
            }
        }
    }
}

#[test]
fn monitoring_covers_the_documented_metrics() {
    const METRICS: [&str; 8] = [
        "layerlink_admission_requests_total",
        "layerlink_admission_duration_seconds",
        "layerlink_images_total",
        "layerlink_cache_lookups_total",
        "layerlink_registry_requests_total",
        "layerlink_registry_request_duration_seconds",
        "layerlink_audit_findings_total",
        "layerlink_stale_served_total",
    ];
    const HISTOGRAMS: [&str; 2] =
        ["layerlink_admission_duration_seconds", "layerlink_registry_request_duration_seconds"];
    let docs = render(&repo_manifests().join("monitoring"));
    assert_eq!(
        inventory(&docs),
        [
            ("ConfigMap", "layerlink-grafana-dashboard"),
            ("PrometheusRule", "layerlink"),
            ("ServiceMonitor", "layerlink"),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
    );
    check_common_metadata(&docs, "monitoring");

    let monitor = find(&docs, "ServiceMonitor", "layerlink");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // Names used in the queries must be documented metrics (histograms via _bucket).
    let referenced = promql::metrics_in;
    let known = |metric: &str| {
        METRICS.contains(&metric)
            || HISTOGRAMS.iter().any(|h| metric == format!("{h}_bucket") || metric == format!("{h}_count"))
    };

    let rule = find(&docs, "PrometheusRule", "layerlink");
    let alerts: BTreeMap<String, String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            (r["alert"].as_str().expect("alerting rules only").to_string(), r["expr"].as_str().unwrap().to_string())
        })
        .collect();
    for (alert, needle) in [
        ("LayerlinkInvalidReviews", "layerlink_admission_requests_total"),
        ("LayerlinkDenyingUnpinnable", "layerlink_admission_requests_total"),
        ("LayerlinkAdmissionLatencyHigh", "layerlink_admission_duration_seconds_bucket"),
        ("LayerlinkRegistryFailures", "layerlink_registry_requests_total"),
        ("LayerlinkServingStale", "layerlink_stale_served_total"),
    ] {
        let expr = alerts.get(alert).unwrap_or_else(|| panic!("missing alert {alert}"));
        assert!(expr.contains(needle), "{alert}: {expr}");
    }
    assert!(alerts["LayerlinkAdmissionLatencyHigh"].contains("0.99"), "p99 latency");
    for (alert, expr) in &alerts {
        for metric in referenced(expr) {
            assert!(known(&metric), "{alert} uses undocumented {metric}");
        }
    }

    // The dashboard: valid JSON, shipped verbatim in the ConfigMap, over the documented metrics.
    let file = std::fs::read_to_string(repo_manifests().join("monitoring/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&file).expect("dashboard JSON");
    let cm = find(&docs, "ConfigMap", "layerlink-grafana-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(cm["data"]["grafana-dashboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = referenced(&exprs);
    for metric in &used {
        assert!(known(metric), "dashboard uses undocumented {metric}");
    }
    for metric in METRICS {
        assert!(used.iter().any(|u| u.starts_with(metric)), "dashboard does not show {metric}");
    }
}

#[test]
fn dockerfile_runs_nonroot_with_both_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    assert!(stages[0].starts_with("FROM rust:1-bookworm AS build"));
    assert!(stages[1].contains("gcr.io/distroless/") && stages[1].ends_with(":nonroot"));
    for needle in [
        "--locked",
        "--bin layerlink-noop",
        "unknown-linux-musl",
        "/usr/local/bin/",
        "USER 65532:65532",
        r#"ENTRYPOINT ["/usr/local/bin/layerlink"]"#,
        r#"CMD ["serve", "--config", "/etc/layerlink/config.yaml"]"#,
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle}");
    }
    assert!(
        dockerfile.match_indices("--bin layerlink").any(|(at, m)| !dockerfile[at + m.len()..].starts_with('-')),
        "Dockerfile does not build the layerlink binary"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for needle in ["target", "certs"] {
        assert!(ignore.lines().any(|l| l.trim() == needle), ".dockerignore lacks {needle}");
    }
}
