//! `layerlink install` against the kustomize tree, and the tree itself on a fresh checkout.
//!
//! - Every overlay, and the components combined with both certificate sources, render with
//!   `kubectl kustomize` from the files git tracks alone (what a fresh clone holds).
//! - `layerlink install` (the binary, as a user runs it) and `kubectl kustomize` of the matching
//!   overlay agree object for object: the same kinds, names and namespaces, and the same content,
//!   except for what install adds on purpose:
//!     * the label `app.kubernetes.io/managed-by: layerlink` on every object (uninstall finds
//!       install's objects by it);
//!     * with self-signed certificates (not `--certs none`), the Secret `layerlink-tls` and every webhook entry's
//!       caBundle (the overlay leaves both to `layerlink certs --apply`); checked here to hold a
//!       CA that signed the serving certificate for the Service's name, and to match each other;
//!     * the ConfigMap's name suffix: both are a hash of the content, computed differently;
//!     * with --network-policy and a config naming registries with ports, those ports.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The files git tracks under `manifests/`, copied into a temporary directory: a fresh
/// checkout's manifests, with whatever a build or a test left beside them excluded.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Checkout {
        let repo = env!("CARGO_MANIFEST_DIR");
        let out = Command::new("git").args(["-C", repo, "ls-files", "-z", "manifests"]).output().expect("git");
        assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<&[u8]> = out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()).collect();
        assert!(files.len() > 10, "git tracks only {} files under manifests/", files.len());
        for file in files {
            let rel = Path::new(std::str::from_utf8(file).unwrap());
            let to = dir.path().join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            // A tracked file deleted from the work tree is missing from a checkout too.
            if let Ok(bytes) = std::fs::read(Path::new(repo).join(rel)) {
                std::fs::write(to, bytes).unwrap();
            }
        }
        Checkout { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("manifests").join(rel)
    }

    /// Renders `manifests/<rel>`, or a new overlay with this kustomization (as a user writes one).
    fn render(&self, rel: &str, kustomization: Option<&str>) -> Vec<Value> {
        let dir = self.path(rel);
        if let Some(text) = kustomization {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("kustomization.yaml"), text).unwrap();
        }
        let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().expect("kubectl must be on PATH");
        assert!(out.status.success(), "kubectl kustomize {rel}: {}", String::from_utf8_lossy(&out.stderr));
        parse(&String::from_utf8(out.stdout).unwrap())
    }
}

fn parse(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn install(args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .arg("install")
        .arg("--no-pin")
        .args(args)
        .output()
        .expect("layerlink install");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "layerlink install {args:?}: {stderr}");
    (parse(&String::from_utf8(out.stdout).unwrap()), stderr)
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn key(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        kind(doc),
        doc["metadata"]["namespace"].as_str().unwrap_or("-"),
        doc["metadata"]["name"].as_str().unwrap_or_default()
    )
}

const CONFIG_PREFIX: &str = "layerlink-config-";

/// The generated ConfigMap's hash suffix, in its name and in the Deployment's volume.
fn without_config_hash(doc: &mut Value) {
    let strip = |v: &mut Value| {
        if v.as_str().is_some_and(|s| s.starts_with(CONFIG_PREFIX)) {
            *v = Value::String(format!("{CONFIG_PREFIX}HASH"));
        }
    };
    strip(&mut doc["metadata"]["name"]);
    if kind(doc) == "Deployment" {
        for volume in doc["spec"]["template"]["spec"]["volumes"].as_array_mut().unwrap() {
            if volume.get("configMap").is_some() {
                strip(&mut volume["configMap"]["name"]);
            }
        }
    }
}

fn by_key(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let count = docs.len();
    let map: BTreeMap<String, Value> = docs.into_iter().map(|d| (key(&d), d)).collect();
    assert_eq!(map.len(), count, "two objects with the same kind, namespace and name");
    map
}

/// Checks the self-signed parts install adds (a Secret whose CA is every caBundle and signed the
/// serving certificate for the Service), then removes them.
fn take_self_signed(docs: &mut Vec<Value>, what: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let at = docs.iter().position(|d| kind(d) == "Secret").unwrap_or_else(|| panic!("{what}: no Secret"));
    let secret = docs.remove(at);
    assert_eq!(key(&secret), "Secret layerlink-system/layerlink-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = |k: &str| String::from_utf8(b64.decode(secret["data"][k].as_str().unwrap()).unwrap()).unwrap();
    let (ca, crt, private) = (data("ca.crt"), data("tls.crt"), data("tls.key"));
    assert!(private.contains("PRIVATE KEY"), "{what}: tls.key");
    layerlink::install_crypto_provider();
    verify_serving(&ca, &crt, "layerlink.layerlink-system.svc");
    let mut entries = 0;
    for doc in docs.iter_mut().filter(|d| kind(d).ends_with("WebhookConfiguration")) {
        for entry in doc["webhooks"].as_array_mut().unwrap() {
            let bundle = entry["clientConfig"].as_object_mut().unwrap().remove("caBundle");
            assert_eq!(bundle, Some(Value::String(b64.encode(&ca))), "{what}: caBundle of {}", entry["name"]);
            entries += 1;
        }
    }
    assert!(entries > 0, "{what}: no webhook entry");
}

fn verify_serving(ca: &str, crt: &str, name: &str) {
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let leaf = rustls_pemfile::certs(&mut crt.as_bytes()).next().unwrap().unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots)).build().unwrap();
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(&leaf, &[], &server, &[], rustls::pki_types::UnixTime::now())
        .unwrap_or_else(|e| panic!("the serving certificate does not chain to the CA for {name}: {e}"));
}

/// Install's objects, made comparable with kustomize's: the differences listed at the top of
/// this file checked and taken out.
fn comparable_install(mut docs: Vec<Value>, self_signed: bool, what: &str) -> BTreeMap<String, Value> {
    for doc in docs.iter_mut() {
        let labels = doc["metadata"]["labels"].as_object_mut().unwrap_or_else(|| panic!("{what}: no labels"));
        assert_eq!(labels.remove(MANAGED_BY), Some(Value::String("layerlink".into())), "{what}: {MANAGED_BY}");
        without_config_hash(doc);
    }
    if self_signed {
        take_self_signed(&mut docs, what);
    }
    by_key(docs)
}

fn comparable_kustomize(mut docs: Vec<Value>) -> BTreeMap<String, Value> {
    docs.iter_mut().for_each(without_config_hash);
    by_key(docs)
}

#[track_caller]
fn assert_agree(what: &str, installed: BTreeMap<String, Value>, rendered: BTreeMap<String, Value>) {
    let only_install: Vec<&String> = installed.keys().filter(|k| !rendered.contains_key(*k)).collect();
    let only_kustomize: Vec<&String> = rendered.keys().filter(|k| !installed.contains_key(*k)).collect();
    assert!(
        only_install.is_empty() && only_kustomize.is_empty(),
        "{what}: only install renders {only_install:?}; only kustomize renders {only_kustomize:?}"
    );
    for (k, doc) in &installed {
        assert_eq!(
            doc,
            &rendered[k],
            "{what}: {k} differs\ninstall:   {}\nkustomize: {}",
            serde_json::to_string(doc).unwrap(),
            serde_json::to_string(&rendered[k]).unwrap()
        );
    }
}

/// (what, install flags, overlay directory, or a new overlay's kustomization)
const CASES: [(&str, &[&str], &str, Option<&str>); 9] = [
    ("namespaced, self-signed", &[], "overlays/self-signed", None),
    ("namespaced, no certificate", &["--certs", "none"], "overlays/self-signed", None),
    ("namespaced, cert-manager", &["--certs", "cert-manager"], "overlays/cert-manager", None),
    ("cluster-wide", &["--mode", "cluster-wide"], "overlays/cluster-wide", None),
    ("audit-only", &["--mode", "audit-only"], "overlays/audit-only", None),
    (
        "pre-1.30, self-signed",
        &["--pre-1.30"],
        "overlays/test-pre-1.30",
        Some("resources: [../self-signed]\ncomponents: [../../components/pre-1.30]\n"),
    ),
    (
        "pre-1.30, cluster-wide, cert-manager",
        &["--pre-1.30", "--mode", "cluster-wide", "--certs", "cert-manager"],
        "overlays/test-pre-1.30-cluster-wide",
        Some("resources: [../cert-manager]\ncomponents: [../../components/pre-1.30, ../../components/cluster-wide]\n"),
    ),
    (
        "pre-1.30, audit-only",
        &["--pre-1.30", "--mode", "audit-only"],
        "overlays/test-pre-1.30-audit-only",
        Some("resources: [../self-signed]\ncomponents: [../../components/pre-1.30, ../../components/audit-only]\n"),
    ),
    (
        "monitoring and network policy",
        &["--monitoring", "--network-policy"],
        "overlays/test-monitoring",
        Some("resources: [../self-signed, ../../monitoring]\ncomponents: [../../components/network-policy]\n"),
    ),
];

#[test]
fn every_overlay_renders_from_a_fresh_checkout() {
    let checkout = Checkout::new();
    for overlay in ["overlays/self-signed", "overlays/cert-manager", "overlays/cluster-wide", "overlays/audit-only"] {
        let docs = checkout.render(overlay, None);
        assert!(docs.iter().any(|d| kind(d) == "Deployment"), "{overlay}: no Deployment");
    }
    for (_, _, dir, kustomization) in CASES.iter().filter(|c| c.3.is_some()) {
        checkout.render(dir, *kustomization);
    }
    // No generated file is tracked.
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(!checkout.path("overlays/self-signed").join(file).exists(), "{file} is tracked");
    }
}

#[test]
fn install_agrees_with_kustomize_object_for_object() {
    let checkout = Checkout::new();
    for (what, flags, dir, kustomization) in CASES {
        let (installed, stderr) = install(flags);
        assert!(stderr.is_empty(), "{what}: install said {stderr}");
        let self_signed = !flags.contains(&"cert-manager") && !flags.contains(&"none");
        let installed = comparable_install(installed, self_signed, what);
        let rendered = comparable_kustomize(checkout.render(dir, kustomization));
        assert_agree(what, installed, rendered);
    }
}

#[test]
fn install_embeds_a_given_config_and_registry_ports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let base =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml")).unwrap();
    let text = base.replace("registries: []", "registries: [{ host: \"registry.internal:5000\" }]");
    assert_ne!(text, base);
    std::fs::write(&path, &text).unwrap();
    let (docs, _) = install(&["--config", path.to_str().unwrap(), "--network-policy"]);
    let config = docs.iter().find(|d| kind(d) == "ConfigMap").unwrap();
    assert_eq!(config["data"]["config.yaml"], text.as_str(), "the file verbatim");
    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["configMap"]["name"] == config["metadata"]["name"]), "mounted by its name");
    let policy = docs.iter().find(|d| kind(d) == "NetworkPolicy").unwrap();
    let ports: Vec<u64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(ports.contains(&5000), "registry port let out: {ports:?}");

    // A config the Deployment could not run, or one layerlink rejects, renders nothing.
    for (bad, needle) in [
        (text.replace("/etc/layerlink/tls/tls.crt", "/certs/tls.crt"), "tls.certFile"),
        (format!("{text}bogusKey: 1\n"), "bogusKey"),
    ] {
        std::fs::write(&path, bad).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_layerlink"))
            .args(["install", "--no-pin", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "rendered despite a bad config");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn install_in_another_namespace() {
    let (docs, _) = install(&["--namespace", "webhooks", "--pre-1.30"]);
    for doc in &docs {
        let ns = doc["metadata"]["namespace"].as_str();
        assert!(ns.is_none() || ns == Some("webhooks"), "{}", key(doc));
    }
    let text = serde_json::to_string(&docs).unwrap();
    assert!(!text.contains("layerlink-system"), "layerlink-system left over");
    let secret = docs.iter().find(|d| kind(d) == "Secret").unwrap();
    use base64::Engine as _;
    let decode = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(secret["data"][k].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    layerlink::install_crypto_provider();
    verify_serving(&decode("ca.crt"), &decode("tls.crt"), "layerlink.webhooks.svc");
    // A namespace layerlink would label `off` and uninstall would delete is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_layerlink")).args(["install", "-n", "default"]).output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
}

#[test]
fn the_image_is_pinned_through_the_configured_registry() {
    let registry = support::Registry::start();
    let pushed =
        registry.push("layerlink/layerlink", "9.9.9", &support::Image::new(vec![support::layer(&[("bin/x", b"x")])]));
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let base =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml")).unwrap();
    std::fs::write(
        &path,
        base.replace("registries: []", &format!("registries: [{{ host: \"{host}\", plainHttp: true }}]")),
    )
    .unwrap();
    let image = format!("{host}/layerlink/layerlink:9.9.9");
    let out = Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .args(["install", "--image", &image, "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = parse(&String::from_utf8(out.stdout).unwrap());
    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{image}@{}", pushed.digest).as_str()
    );
}

#[test]
fn offline_the_image_keeps_its_tag_and_says_so() {
    // A registry that refuses connections at once: 127.0.0.1 on a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let image = format!("127.0.0.1:{port}/layerlink/layerlink:9.9.9");
    let out = Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .args(["install", "--image", &image, "--pin-timeout", "3s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let docs = parse(&String::from_utf8(out.stdout).unwrap());
    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], image.as_str());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not pinned") && stderr.contains(&image), "{stderr}");
}

#[test]
fn runs_as_the_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-layerlink");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_layerlink"), &plugin).unwrap();
    let out = Command::new(&plugin).args(["install", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: kubectl layerlink install"));
    let out = Command::new(&plugin).args(["install", "--no-pin", "--certs", "cert-manager"]).output().unwrap();
    assert!(out.status.success());
    assert!(parse(&String::from_utf8(out.stdout).unwrap()).iter().any(|d| kind(d) == "Certificate"));
}

#[test]
fn network_policy_lets_in_the_webhook_and_out_dns_the_api_server_and_registries() {
    let checkout = Checkout::new();
    let docs = checkout.render(
        "overlays/test-network-policy",
        Some("resources: [../self-signed]\ncomponents: [../../components/network-policy]\n"),
    );
    let policy = docs.iter().find(|d| kind(d) == "NetworkPolicy").expect("a NetworkPolicy");
    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&deployment["spec"]["template"]["metadata"]["labels"][k], v, "selects layerlink's pods");
    }
    let ports = |direction: &str| -> Vec<(u64, String)> {
        let mut ports: Vec<(u64, String)> = policy["spec"][direction]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                assert!(rule.get("from").is_none() && rule.get("to").is_none(), "{direction}: from/to anywhere");
                rule["ports"].as_array().unwrap().clone()
            })
            .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap().to_string()))
            .collect();
        ports.sort();
        ports
    };
    let tcp = |port: u64| (port, "TCP".to_string());
    assert_eq!(ports("ingress"), [tcp(8080), tcp(8443)]);
    assert_eq!(ports("egress"), [tcp(53), (53, "UDP".into()), tcp(443), tcp(6443)]);
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
}
