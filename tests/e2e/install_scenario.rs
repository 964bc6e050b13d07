//! `layerlink install --apply` into the real API server, then `layerlink uninstall`.
//!
//! Wired into tests/e2e.rs as a child module (`#[path = "e2e/install_scenario.rs"] mod
//! install_scenario;`), so it uses that file's helpers through `super`.

use std::{path::Path, process::Command, time::Duration};

use serde_json::{Value, json};

use super::{B64, Ctx, MODE, ensure, expect_eq, expect_images, pod, run_both, wait_for};
use base64::Engine as _;

const NS: &str = "layerlink-system";
const MANAGED: &str = "app.kubernetes.io/managed-by=layerlink";

/// Install with `layerlink install --apply --pre-1.30` (the 1.20 API server has neither the
/// ValidatingAdmissionPolicy nor matchConditions): Namespace, RBAC, Secret, ConfigMap, Service,
/// Deployment and both webhook configurations are stored, labelled, with the generated CA as
/// every entry's caBundle. The installed webhook configurations (their rules and selectors) are
/// then pointed at a locally served layerlink, as the Service has no pods here, and a pod in an
/// enforce namespace is stored pinned. `layerlink uninstall` removes the webhook configurations
/// first and leaves nothing labelled behind.
pub fn install_and_uninstall(ctx: &mut Ctx) -> Result<(), String> {
    let kubeconfig = ctx.cluster.dir.join("kubeconfig");
    let layerlink = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerlink"));
        cmd.args(args).arg("--kubeconfig").arg(&kubeconfig);
        run_both(&mut cmd)
    };
    // Earlier scenarios registered webhook configurations named `layerlink` by URL, by hand;
    // install owns its objects from a clean start (an upgrade from layerlink's own install keeps
    // its certificate, which this run also shows).
    for kind in ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"] {
        ctx.kubectl.run(&["delete", kind, "layerlink", "--ignore-not-found"], None);
    }
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = write_config(work.path(), &ctx.registry.host())?;
    // No kubelet runs the Deployment here: do not wait for it.
    let (_, said) = layerlink(&[
        "install",
        "--apply",
        "--pre-1.30",
        "--wait=false",
        "--no-pin",
        "--config",
        config.to_str().unwrap(),
    ])?;
    let applied: Vec<&str> = said.lines().filter_map(|l| l.strip_prefix("applied ")).collect();
    let position = |what: &str| applied.iter().position(|l| l.starts_with(what));
    let (deployment, mutating) = (position("deployment "), position("mutatingwebhookconfiguration "));
    ensure(
        matches!((deployment, mutating), (Some(d), Some(m)) if d < m),
        format!("webhook configurations must be applied after the Deployment: {applied:?}"),
    )?;

    for (resource, ns, name) in [
        ("namespace", "", NS),
        ("serviceaccount", NS, "layerlink"),
        ("clusterrole", "", "layerlink"),
        ("clusterrolebinding", "", "layerlink"),
        ("secret", NS, "layerlink-tls"),
        ("service", NS, "layerlink"),
        ("deployment", NS, "layerlink"),
        ("mutatingwebhookconfiguration", "", "layerlink"),
        ("validatingwebhookconfiguration", "", "layerlink"),
    ] {
        let ns = if ns.is_empty() { "default" } else { ns };
        // kubectl hides managedFields unless asked.
        let out = ctx.kubectl.ok(&["-n", ns, "get", resource, name, "-o", "json", "--show-managed-fields"], None)?;
        let stored: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{resource} {name}: {e}"))?;
        expect_eq(
            &format!("{resource} {name}: managed-by"),
            &stored["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            &json!("layerlink"),
        )?;
        let managers: Vec<&str> = stored["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["operation"] == "Apply")
            .filter_map(|f| f["manager"].as_str())
            .collect();
        ensure(managers.contains(&"layerlink"), format!("{resource} {name}: applied by {managers:?}"))?;
    }
    let config_maps = ctx.kubectl.get_list("configmap", NS)?;
    let installed_config = config_maps
        .iter()
        .find(|c| c["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("layerlink-config-")))
        .ok_or("no layerlink-config ConfigMap")?;
    let written = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    expect_eq("the ConfigMap holds --config", &installed_config["data"]["config.yaml"], &json!(written))?;

    // The installed CA is every entry's caBundle.
    let secret = ctx.kubectl.get("secret", NS, "layerlink-tls")?;
    let ca = secret["data"]["ca.crt"].as_str().ok_or("no ca.crt in the Secret")?.to_string();
    let mut webhook = ctx.kubectl.get("mutatingwebhookconfiguration", "default", "layerlink")?;
    let mut validating = ctx.kubectl.get("validatingwebhookconfiguration", "default", "layerlink")?;
    for config in [&webhook, &validating] {
        for entry in config["webhooks"].as_array().ok_or("no webhooks")? {
            expect_eq(&format!("{} caBundle", entry["name"]), &entry["clientConfig"]["caBundle"], &json!(ca))?;
            ensure(entry.get("matchConditions").is_none(), format!("{}: matchConditions on 1.20", entry["name"]))?;
        }
    }

    // The Service has no pods here: point the installed entries at a layerlink served locally,
    // keeping their rules, selectors and policies.
    let served = ctx.start_layerlink("allow", "", None);
    let served_ca = B64.encode(served.ca_pem());
    for config in [&mut webhook, &mut validating] {
        strip_server_fields(config);
        for entry in config["webhooks"].as_array_mut().unwrap() {
            let path = entry["clientConfig"]["service"]["path"].as_str().ok_or("no service path")?.to_string();
            entry["clientConfig"] = json!({"url": served.url(&path), "caBundle": served_ca});
        }
    }
    ctx.kubectl.ok(&["replace", "-f", "-"], Some(&validating.to_string()))?;
    ctx.install(vec![webhook])?;

    let enforce = "s15-enforce";
    ctx.namespace(enforce, &[(MODE, "enforce")])?;
    let sent = pod(enforce, "app", &[("init", ctx.img("team/init:v1"))], &[("app", ctx.img("team/app:v1"))]);
    ctx.kubectl.create(&sent)?;
    let stored = ctx.kubectl.get("pod", enforce, "app")?;
    expect_images(
        &stored,
        "/spec",
        &[("initContainers/init", ctx.pinned("team/init", "v1")), ("containers/app", ctx.pinned("team/app", "v1"))],
    )?;

    // Uninstall: webhook configurations first, then everything labelled, then the namespace.
    let (_, said) = layerlink(&["uninstall", "--wait=false"])?;
    ctx.installed.remove("layerlink");
    let removed: Vec<&str> = said.lines().filter_map(|l| l.strip_prefix("removed ")).collect();
    ensure(
        removed.first().is_some_and(|r| r.starts_with("mutatingwebhookconfiguration layerlink")),
        format!("uninstall must remove the webhook configuration first: {removed:?}"),
    )?;
    for what in
        ["validatingwebhookconfiguration layerlink", "deployment layerlink-system/layerlink", "clusterrole layerlink"]
    {
        ensure(removed.contains(&what), format!("uninstall did not say it removed {what}: {removed:?}"))?;
    }
    ensure(removed.last() == Some(&"namespace layerlink-system"), format!("namespace last: {removed:?}"))?;
    let left = ctx.kubectl.ok(
        &[
            "get",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration,clusterrole,clusterrolebinding",
            "-l",
            MANAGED,
            "-o",
            "name",
        ],
        None,
    )?;
    expect_eq("cluster objects left", &left.stdout.trim(), &"")?;
    let left =
        ctx.kubectl.ok(&["-n", NS, "get", "all,configmap,secret,serviceaccount", "-l", MANAGED, "-o", "name"], None)?;
    expect_eq("namespaced objects left", &left.stdout.trim(), &"")?;
    // The namespace goes once the namespace controller has emptied it; without one it stays
    // Terminating, which is all the API server can do.
    let gone = wait_for(Duration::from_secs(60), || {
        let out = ctx.kubectl.run(&["get", "namespace", NS, "-o", "json"], None);
        if !out.ok {
            return Some(true);
        }
        let ns: Value = serde_json::from_str(&out.stdout).ok()?;
        ns["metadata"]["deletionTimestamp"].is_string().then_some(false)
    });
    ensure(gone.is_some(), format!("namespace {NS} neither gone nor terminating after uninstall"))?;
    Ok(())
}

/// The base config with the test registry (plain HTTP) named.
fn write_config(dir: &Path, registry: &str) -> Result<std::path::PathBuf, String> {
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml"))
        .map_err(|e| e.to_string())?;
    let text = base.replace("registries: []", &format!("registries: [{{ host: \"{registry}\", plainHttp: true }}]"));
    ensure(text != base, "the base config has no `registries: []` to replace".into())?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// What the API server sets and a create or replace must not carry.
fn strip_server_fields(object: &mut Value) {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink"] {
            metadata.remove(field);
        }
    }
}
