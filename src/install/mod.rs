//! `layerlink install` and `layerlink uninstall`: everything a cluster needs, rendered from the
//! kustomize tree under `manifests/`, which is built into the binary (`include_str!`), so that
//! installing needs neither a checkout nor kubectl nor kustomize:
//!
//! ```text
//! layerlink install | kubectl apply -f -
//! layerlink install --apply            # server-side apply, then wait for the Deployment
//! layerlink uninstall                  # webhook configurations first, then the rest
//! ```
//!
//! The base's objects are taken as written; what the overlays and components change (the mode's
//! namespace selectors, the pre-1.30 swap of the digest policy for `/validate`, cert-manager's
//! annotation, the optional parts) is done here in code, and `tests/install.rs` checks that the
//! result agrees with `kubectl kustomize` of the matching overlay, object for object. The
//! rendering ([`render`]) is pure; image pinning, certificates and the cluster are at the edges
//! ([`pin_image`], [`cluster`]); the command line is `cli/install.rs`.
//!
//! Every object carries `app.kubernetes.io/managed-by: layerlink`: `uninstall` finds what
//! `install` made by that label (plus the webhook configurations' fixed name).

pub mod cluster;

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{
    Config, Error,
    certs::Bundle,
    metrics::Metrics,
    registry::auth::Keychain,
    resolve::{Deadline, Resolver},
};

/// The namespace the manifests are written for.
pub const NAMESPACE: &str = "layerlink-system";
/// The label `install` puts on every object and `uninstall` looks for.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value, also the field manager of `install --apply`.
pub const MANAGER: &str = "layerlink";
/// The name of the webhook configurations (mutating, and validating with `--pre-1.30`).
pub const WEBHOOK: &str = "layerlink";
/// The Secret the Deployment mounts.
pub const TLS_SECRET: &str = "layerlink-tls";
const CONFIG_MAP: &str = "layerlink-config";
const PART_OF: &str = "app.kubernetes.io/part-of";
const CERT_MANAGER_ANNOTATION: &str = "cert-manager.io/inject-ca-from";
const MODE: &str = "layerlink.io/mode";

macro_rules! manifest {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/", $path))
    };
}

/// The base's resources, in the order `manifests/base/kustomization.yaml` lists them.
const BASE: [&str; 8] = [
    manifest!("base/namespace.yaml"),
    manifest!("base/rbac.yaml"),
    manifest!("base/deployment.yaml"),
    manifest!("base/service.yaml"),
    manifest!("base/pdb.yaml"),
    manifest!("base/resourcequota.yaml"),
    manifest!("base/mutatingwebhook.yaml"),
    manifest!("base/validatingadmissionpolicy.yaml"),
];
/// The config the base's ConfigMap generator reads.
pub const BASE_CONFIG: &str = manifest!("base/config.yaml");
const CERT_MANAGER: &str = manifest!("overlays/cert-manager/certificates.yaml");
const PRE_1_30: &str = manifest!("components/pre-1.30/validatingwebhook.yaml");
const NETWORK_POLICY: &str = manifest!("components/network-policy/networkpolicy.yaml");
const MONITORING: [&str; 2] =
    [manifest!("monitoring/servicemonitor.yaml"), manifest!("monitoring/prometheusrule.yaml")];
const DASHBOARD: &str = manifest!("monitoring/grafana-dashboard.json");

/// Which namespaces are enforced and audited (the overlays of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Namespaced,
    ClusterWide,
    AuditOnly,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Namespaced, Mode::ClusterWide, Mode::AuditOnly];

    /// The name on the command line (and of the overlay).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Namespaced => "namespaced",
            Mode::ClusterWide => "cluster-wide",
            Mode::AuditOnly => "audit-only",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Mode::Namespaced => "enforce and audit where namespaces are labelled layerlink.io/mode=enforce|audit",
            Mode::ClusterWide => "enforce in every namespace not labelled audit or off",
            Mode::AuditOnly => "audit (never mutate, never reject) in every namespace not labelled off",
        }
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    SelfSigned,
    CertManager,
    None,
}

impl CertSource {
    pub const ALL: [CertSource; 3] = [CertSource::SelfSigned, CertSource::CertManager, CertSource::None];

    pub fn name(self) -> &'static str {
        match self {
            CertSource::SelfSigned => "self-signed",
            CertSource::CertManager => "cert-manager",
            CertSource::None => "none",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            CertSource::SelfSigned => "generated now: the Secret layerlink-tls and every webhook entry's caBundle",
            CertSource::CertManager => {
                "issued and rotated by cert-manager (installed beforehand), which injects the caBundle"
            }
            CertSource::None => {
                "none rendered: `layerlink certs --apply` writes the Secret and caBundle afterwards \
                 (for files shared with others, which must not carry a key)"
            }
        }
    }
}

/// Everything the rendering needs, already decided.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: Mode,
    pub certs: CertSource,
    pub namespace: String,
    /// The config text for the ConfigMap; `None`: the built-in one.
    pub config: Option<String>,
    /// layerlink's image, pinned or not.
    pub image: String,
    pub pre_1_30: bool,
    pub monitoring: bool,
    pub network_policy: bool,
    /// Registry ports other than 443 that the NetworkPolicy must let out.
    pub registry_ports: Vec<u16>,
    /// More objects (the pre-puller's), already rendered.
    pub extra: Vec<Value>,
}

impl Plan {
    /// The defaults: what `kubectl kustomize manifests/overlays/self-signed` renders.
    pub fn new(mode: Mode, certs: CertSource) -> Plan {
        Plan {
            mode,
            certs,
            namespace: NAMESPACE.into(),
            config: None,
            image: default_image(),
            pre_1_30: false,
            monitoring: false,
            network_policy: false,
            registry_ports: Vec::new(),
            extra: Vec::new(),
        }
    }
}

fn parse(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("the built-in manifests are YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn find_mut<'a>(docs: &'a mut [Value], k: &str) -> Option<&'a mut Value> {
    docs.iter_mut().find(|d| kind(d) == k)
}

/// The image the built-in Deployment names: layerlink's release image, by tag.
pub fn default_image() -> String {
    let docs = parse(BASE[2]);
    docs[0]["spec"]["template"]["spec"]["containers"][0]["image"].as_str().expect("the Deployment's image").to_string()
}

/// A namespaceSelector: the mode expression plus the by-name exclusion every entry has.
fn selector(operator: &str, modes: &[&str]) -> Value {
    json!({"matchExpressions": [
        {"key": MODE, "operator": operator, "values": modes},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]},
    ]})
}

fn entries_mut(config: &mut Value) -> impl Iterator<Item = &mut Value> {
    config["webhooks"].as_array_mut().into_iter().flatten()
}

/// What components/cluster-wide and components/audit-only change.
fn apply_mode(docs: &mut Vec<Value>, mode: Mode) {
    match mode {
        Mode::Namespaced => {}
        Mode::ClusterWide => {
            let everywhere = selector("NotIn", &["audit", "off"]);
            for doc in docs.iter_mut() {
                match kind(doc) {
                    "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                        for entry in entries_mut(doc) {
                            if entry["name"] == "enforce.layerlink.io" || entry["name"] == "validate.layerlink.io" {
                                entry["namespaceSelector"] = everywhere.clone();
                            }
                        }
                    }
                    "ValidatingAdmissionPolicyBinding" => {
                        doc["spec"]["matchResources"]["namespaceSelector"] = everywhere.clone();
                    }
                    _ => {}
                }
            }
        }
        Mode::AuditOnly => {
            docs.retain(|d| {
                !matches!(
                    kind(d),
                    "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" | "ValidatingWebhookConfiguration"
                )
            });
            if let Some(mutating) = find_mut(docs, "MutatingWebhookConfiguration")
                && let Some(entries) = mutating["webhooks"].as_array_mut()
            {
                entries.retain(|e| e["name"] != "enforce.layerlink.io");
                for entry in entries {
                    entry["namespaceSelector"] = selector("NotIn", &["off"]);
                }
            }
        }
    }
}

/// What components/pre-1.30 changes: the policy out, matchConditions off, `/validate` in.
fn apply_pre_1_30(docs: &mut Vec<Value>) {
    docs.retain(|d| !matches!(kind(d), "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding"));
    let mut client_config = Value::Null;
    if let Some(mutating) = find_mut(docs, "MutatingWebhookConfiguration") {
        client_config = mutating["webhooks"][0]["clientConfig"].clone();
        for entry in entries_mut(mutating) {
            entry.as_object_mut().map(|e| e.remove("matchConditions"));
        }
    }
    // The component's values ConfigMap is local-config: never rendered.
    for mut validating in parse(PRE_1_30).into_iter().filter(|d| kind(d) == "ValidatingWebhookConfiguration") {
        for entry in entries_mut(&mut validating) {
            let mut config = client_config.clone();
            config["service"]["path"] = json!("/validate");
            entry["clientConfig"] = config;
        }
        docs.push(validating);
    }
}

/// The ConfigMap the Deployment mounts, named with a hash of its content (as kustomize's
/// generator does, so that a config change rolls the pods).
fn config_map(namespace: &str, text: &str) -> Value {
    use sha2::Digest as _;
    let hashed = json!({"data": {"config.yaml": text}, "kind": "ConfigMap", "name": CONFIG_MAP});
    let digest = hex::encode(sha2::Sha256::digest(hashed.to_string().as_bytes()));
    // No vowels, as kustomize's suffixes have none (so no word is ever spelled).
    let suffix: String = digest[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": format!("{CONFIG_MAP}-{suffix}"),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "layerlink", PART_OF: "layerlink"},
        },
        "data": {"config.yaml": text},
    })
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Replaces the namespace the manifests are written for in every string (object namespaces,
/// service references, exclusions, matchConditions, certificate names, dashboard queries).
fn rename_namespace(value: &mut Value, namespace: &str) {
    match value {
        Value::String(s) if s.contains(NAMESPACE) => *s = s.replace(NAMESPACE, namespace),
        Value::Array(items) => items.iter_mut().for_each(|v| rename_namespace(v, namespace)),
        Value::Object(map) => map.values_mut().for_each(|v| rename_namespace(v, namespace)),
        _ => {}
    }
}

fn add_label(doc: &mut Value, key: &str, value: &str) {
    if !doc["metadata"]["labels"].is_object() {
        doc["metadata"]["labels"] = json!({});
    }
    doc["metadata"]["labels"][key] = json!(value);
}

/// Where an object goes in the output, and in what order `--apply` applies it: the namespace,
/// CRDs and RBAC first, then config, the workloads, and the admission objects last, so that the
/// API server never calls a webhook whose Deployment does not exist yet.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "PriorityClass" => 2,
        "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => 3,
        "ResourceQuota" => 4,
        "ConfigMap" | "Secret" => 5,
        "Issuer" | "Certificate" => 6,
        "Service" => 7,
        "Deployment" | "DaemonSet" | "PodDisruptionBudget" | "NetworkPolicy" => 8,
        "ServiceMonitor" | "PrometheusRule" => 9,
        _ if is_admission(kind) => 11,
        _ => 10,
    }
}

/// The objects that make the API server act on pods: applied once layerlink serves.
pub fn is_admission(kind: &str) -> bool {
    matches!(
        kind,
        "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
    )
}

/// Every object of the plan, in apply order. With `CertSource::SelfSigned`, `bundle` becomes the
/// Secret and every webhook entry's caBundle; without one, both are left out (as in the
/// self-signed overlay, for `layerlink certs --apply` to write).
pub fn render(plan: &Plan, bundle: Option<&Bundle>) -> Vec<Value> {
    let mut docs: Vec<Value> = BASE.iter().flat_map(|text| parse(text)).collect();
    for doc in docs.iter_mut() {
        add_label(doc, PART_OF, "layerlink");
        if kind(doc) == "Deployment" {
            doc["spec"]["template"]["spec"]["containers"][0]["image"] = json!(plan.image);
        }
    }
    if plan.pre_1_30 {
        apply_pre_1_30(&mut docs);
    }
    match plan.certs {
        CertSource::CertManager => {
            if let Some(mutating) = find_mut(&mut docs, "MutatingWebhookConfiguration") {
                mutating["metadata"]["annotations"] =
                    json!({CERT_MANAGER_ANNOTATION: format!("{NAMESPACE}/layerlink-serving")});
            }
            docs.extend(parse(CERT_MANAGER));
        }
        CertSource::SelfSigned | CertSource::None => {
            if let Some(bundle) = bundle {
                docs.push(json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": TLS_SECRET, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": "layerlink"}},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": b64(&bundle.tls_crt), "tls.key": b64(&bundle.tls_key), "ca.crt": b64(&bundle.ca_crt)},
                }));
                for doc in docs.iter_mut().filter(|d| kind(d).ends_with("WebhookConfiguration")) {
                    for entry in entries_mut(doc) {
                        entry["clientConfig"]["caBundle"] = json!(bundle.ca_bundle());
                    }
                }
            }
        }
    }
    apply_mode(&mut docs, plan.mode);
    if plan.network_policy {
        docs.extend(parse(NETWORK_POLICY).into_iter().map(|mut policy| {
            add_registry_ports(&mut policy, &plan.registry_ports);
            policy
        }));
    }
    if plan.monitoring {
        docs.extend(MONITORING.iter().flat_map(|text| parse(text)));
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "layerlink-grafana-dashboard",
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/name": "layerlink", "grafana_dashboard": "1"},
            },
            "data": {"grafana-dashboard.json": DASHBOARD},
        }));
    }
    for doc in docs.iter_mut() {
        rename_namespace(doc, &plan.namespace);
    }
    let config_text = match &plan.config {
        Some(text) => text.clone(),
        None => BASE_CONFIG.replace(NAMESPACE, &plan.namespace),
    };
    let config = config_map(&plan.namespace, &config_text);
    for doc in docs.iter_mut().filter(|d| kind(d) == "Deployment") {
        for volume in doc["spec"]["template"]["spec"]["volumes"].as_array_mut().into_iter().flatten() {
            if volume["configMap"]["name"] == CONFIG_MAP {
                volume["configMap"]["name"] = config["metadata"]["name"].clone();
            }
        }
    }
    docs.push(config);
    docs.extend(plan.extra.iter().cloned());
    for doc in docs.iter_mut() {
        add_label(doc, MANAGED_BY, MANAGER);
    }
    docs.sort_by_key(|d| apply_rank(kind(d)));
    docs
}

/// The NetworkPolicy's registry rule also lets out the ports of registries named with one.
fn add_registry_ports(policy: &mut Value, ports: &[u16]) {
    let Some(rules) = policy["spec"]["egress"].as_array_mut() else { return };
    let Some(https) =
        rules.iter_mut().find(|r| r["ports"].as_array().is_some_and(|p| p.iter().any(|p| p["port"] == 443)))
    else {
        return;
    };
    let list = https["ports"].as_array_mut().expect("ports");
    for port in ports {
        if !list.iter().any(|p| p["port"] == *port) {
            list.push(json!({"port": port, "protocol": "TCP"}));
        }
    }
}

/// The ports (other than 443) of the registries and mirrors a config names with a port.
pub fn registry_ports(config: &Config) -> Vec<u16> {
    let mut ports: Vec<u16> = config
        .registries
        .iter()
        .flat_map(|r| std::iter::once(&r.host).chain(&r.mirrors))
        .filter_map(|host| host.rsplit_once(':').and_then(|(_, port)| port.parse().ok()))
        .chain(config.registries.iter().filter(|r| r.plain_http && !r.host.contains(':')).map(|_| 80))
        .filter(|port| *port != 443)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A config the rendered Deployment can run: it mounts the Secret at /etc/layerlink/tls and
/// serves on the ports the Service, probes and webhook entries name.
fn check_config_fits(config: &Config, path: &std::path::Path) -> Result<(), Error> {
    let mut wrong = Vec::new();
    if config.tls.cert_file != std::path::Path::new("/etc/layerlink/tls/tls.crt") {
        wrong.push("tls.certFile must be /etc/layerlink/tls/tls.crt");
    }
    if config.tls.key_file != std::path::Path::new("/etc/layerlink/tls/tls.key") {
        wrong.push("tls.keyFile must be /etc/layerlink/tls/tls.key");
    }
    if config.listen.https.port() != 8443 {
        wrong.push("listen.https must be on port 8443");
    }
    if config.listen.http.port() != 8080 {
        wrong.push("listen.http must be on port 8080");
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{}: the installed Deployment mounts its certificate at /etc/layerlink/tls and serves on 8443 and 8080: {}",
            path.display(),
            wrong.join("; ")
        )))
    }
}

/// Namespaces that must never be layerlink's own: it is labelled `layerlink.io/mode: off` and
/// `uninstall` deletes it.
const SHARED_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// layerlink's own image pinned to its digest when the registry answers within `timeout`;
/// otherwise why not (the caller keeps the tag and says so).
pub async fn pin_image(image: &str, config: &Config, timeout: Duration) -> Result<String, String> {
    let attempt = async {
        let resolver = Resolver::new(config, Arc::new(Metrics::new(config)))?;
        resolver.pin(image, &Arc::new(Keychain::default()), Deadline::after(timeout)).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(pinned)) => Ok(pinned),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Refuses a namespace that is not layerlink's own: it is labelled `layerlink.io/mode: off`
/// and `uninstall` deletes it.
pub fn check_namespace(namespace: &str) -> Result<(), Error> {
    if SHARED_NAMESPACES.contains(&namespace) {
        return Err(Error::Config(format!(
            "--namespace {namespace}: layerlink needs a namespace of its own (it is labelled {MODE}=off and uninstall deletes it)"
        )));
    }
    Ok(())
}

/// The config to install and its text for the ConfigMap: the file at `path`, validated and
/// checked to fit the Deployment, or the built-in one (`None` text).
pub fn load_config(path: Option<&std::path::Path>) -> Result<(Config, Option<String>), Error> {
    match path {
        Some(path) => {
            let config = Config::load(path)?;
            check_config_fits(&config, path)?;
            Ok((config, Some(std::fs::read_to_string(path)?)))
        }
        None => Ok((Config::parse(BASE_CONFIG)?, None)),
    }
}

/// Multi-document YAML, every document introduced by `---`.
pub fn to_yaml(docs: &[Value]) -> Result<String, Error> {
    crate::prepull::daemonset::to_yaml(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(doc: &Value) -> &str {
        doc["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn inventory(docs: &[Value]) -> Vec<(String, String)> {
        docs.iter().map(|d| (kind(d).to_string(), name(d).to_string())).collect()
    }

    #[test]
    fn the_default_image_is_this_release() {
        assert_eq!(default_image(), format!("ghcr.io/layerlink/layerlink:{}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn objects_come_in_apply_order_with_webhooks_last() {
        let bundle = crate::certs::generate(&["layerlink.layerlink-system.svc".into()]).unwrap();
        let mut plan = Plan::new(Mode::Namespaced, CertSource::SelfSigned);
        plan.pre_1_30 = true;
        plan.network_policy = true;
        let docs = render(&plan, Some(&bundle));
        let kinds: Vec<&str> = docs.iter().map(kind).collect();
        assert_eq!(kinds[0], "Namespace");
        let deployment = kinds.iter().position(|k| *k == "Deployment").unwrap();
        let secret = kinds.iter().position(|k| *k == "Secret").unwrap();
        let config = kinds.iter().position(|k| *k == "ConfigMap").unwrap();
        assert!(secret < deployment && config < deployment, "{kinds:?}");
        let first_admission = kinds.iter().position(|k| is_admission(k)).unwrap();
        assert!(kinds[first_admission..].iter().all(|k| is_admission(k)), "{kinds:?}");
        assert!(first_admission > deployment);
        for doc in &docs {
            assert_eq!(doc["metadata"]["labels"][MANAGED_BY], MANAGER, "{}", kind(doc));
        }
        for doc in docs.iter().filter(|d| kind(d).ends_with("WebhookConfiguration")) {
            for entry in doc["webhooks"].as_array().unwrap() {
                assert_eq!(entry["clientConfig"]["caBundle"], bundle.ca_bundle());
            }
        }
    }

    #[test]
    fn another_namespace_everywhere() {
        let mut plan = Plan::new(Mode::ClusterWide, CertSource::CertManager);
        plan.namespace = "webhooks".into();
        plan.monitoring = true;
        let docs = render(&plan, None);
        let text = serde_json::to_string(&docs).unwrap();
        assert!(!text.contains(NAMESPACE), "layerlink-system left in {text}");
        for doc in &docs {
            let namespace = &doc["metadata"]["namespace"];
            assert!(namespace.is_null() || namespace == "webhooks", "{:?}", inventory(&docs));
        }
        let mutating = docs.iter().find(|d| kind(d) == "MutatingWebhookConfiguration").unwrap();
        assert_eq!(mutating["metadata"]["annotations"][CERT_MANAGER_ANNOTATION], "webhooks/layerlink-serving");
        assert_eq!(mutating["webhooks"][0]["clientConfig"]["service"]["namespace"], "webhooks");
    }

    #[test]
    fn the_config_map_name_follows_its_content() {
        let a = config_map(NAMESPACE, "a: 1\n");
        let b = config_map(NAMESPACE, "a: 2\n");
        assert_ne!(a["metadata"]["name"], b["metadata"]["name"]);
        assert_eq!(a["metadata"]["name"], config_map(NAMESPACE, "a: 1\n")["metadata"]["name"]);
        let suffix = name(&a).strip_prefix("layerlink-config-").unwrap();
        assert_eq!(suffix.len(), 10);
        assert!(!suffix.contains(['a', 'e', 'i', 'o', 'u']), "{suffix}");
    }

    #[test]
    fn registry_ports_from_the_config() {
        let config = Config::parse(
            "registries:\n  - { host: \"registry.internal:5000\", mirrors: [\"mirror:8443\", \"m2\"] }\n  - { host: plain.example, plainHttp: true }\n  - { host: \"r:443\" }\n",
        )
        .unwrap();
        assert_eq!(registry_ports(&config), [80, 5000, 8443]);
        let mut policy = parse(NETWORK_POLICY).remove(0);
        add_registry_ports(&mut policy, &[5000]);
        let ports: Vec<u64> = policy["spec"]["egress"][1]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [443, 6443, 5000]);
    }

    #[test]
    fn a_config_the_deployment_cannot_run_is_refused() {
        let path = std::path::Path::new("c.yaml");
        assert!(check_config_fits(&Config::parse(BASE_CONFIG).unwrap(), path).is_ok());
        let moved =
            Config::parse(&BASE_CONFIG.replace("/etc/layerlink/tls/tls.crt", "/tls.crt").replace(":8443", ":9443"))
                .unwrap();
        let e = check_config_fits(&moved, path).unwrap_err().to_string();
        assert!(e.contains("tls.certFile") && e.contains("listen.https"), "{e}");
    }
}
