//! End-to-end scenarios: a real kube-apiserver and kube-controller-manager v1.20.2 and etcd on
//! loopback (`tests/e2e/cluster.sh`), layerlink (the real `layerlink serve`) registered through
//! real MutatingWebhookConfigurations, objects created with kubectl (pods also by the
//! Deployment, ReplicaSet, StatefulSet, Job and DaemonSet controllers), and assertions on what
//! the API server stored.
//!
//! Run it with `make e2e` (`tests/e2e/run.sh`: builds or reuses the cached binaries, then
//! `cargo test --test e2e -- --ignored --nocapture --test-threads=1`). A plain `cargo test` lists
//! the test as ignored: it cannot run without those binaries.
//!
//! One cluster, one registry (plus one that requires a password) and one layerlink serve every
//! scenario; each scenario gets fresh namespaces, so nothing one leaves behind (pods, webhook
//! retries of its controllers) reaches another's assertions. Every scenario's result is printed as
//! `scenario N (name): ok|FAILED: why`; the test fails at the end if any failed.
//!
//! Webhook configurations change between scenarios. The API server picks changes up through an
//! informer, a moment later. So every change ends with a new generation of the configuration
//! `e2e-marker`, whose only webhook (a tiny HTTPS webhook in this file) stamps the generation on
//! pods in the namespace `e2e-probe`; a server-side dry-run there shows when that generation,
//! and so every change before it, is in effect.
//!
//! Environment: `LAYERLINK_E2E_ONLY=1,5` runs only those scenarios; `LAYERLINK_E2E_WORK=DIR`
//! puts the cluster in `DIR/cluster` (run.sh sets it, and stops that cluster on exit even if
//! this process is killed); everything `cluster.sh` reads applies.

#[path = "e2e/install_scenario.rs"]
mod install_scenario;
mod support;

use support::image;

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, extract::State, routing::post};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use serde_json::{Value, json};
use support::{
    Auth, Registry, RegistryOptions,
    oci::{Image, Index, layer},
    webhook::{Webhook, make_certs},
};

/// The namespace label that selects layerlink's mode.
const MODE: &str = "layerlink.io/mode";
/// The label that sends a namespace's pods to the injecting test webhook (scenario 4).
const SIDECAR_LABEL: &str = "e2e.layerlink.io/sidecar";
/// The label of the probe namespace, where the marker webhook stamps its generation.
const PROBE_LABEL: &str = "e2e.layerlink.io/probe";
const PROBE_NS: &str = "e2e-probe";
const GENERATION: &str = "e2e.layerlink.io/generation";
const ENFORCE: &str = "enforce.layerlink.io";
const AUDIT: &str = "audit.layerlink.io";
/// How long a changed webhook configuration may take to be in effect.
const TAKE_EFFECT: Duration = Duration::from_secs(30);
/// How long a controller may take to create the pods asked for (they come within about a second).
const POD_TIMEOUT: Duration = Duration::from_secs(30);
/// Credentials of the registry that requires a password (scenario 10).
const PULL_USER: &str = "puller";
const PULL_PASSWORD: &str = "e2e-pull-secret";

type Scenario = fn(&mut Ctx) -> Result<(), String>;

#[test]
#[ignore = "needs a real kube-apiserver: run make e2e"]
fn e2e() {
    layerlink::install_crypto_provider();
    let scenarios: &[(u32, &str, Scenario)] = &[
        (1, "enforce pins every image to the registry's digest", enforce_pins),
        (2, "unlabelled namespace: stored exactly as sent", unlabelled_untouched),
        (3, "server-side dry-run returns the pinned pod and stores nothing", dry_run),
        (4, "reinvoked after another webhook: every image pinned once", reinvocation),
        (5, "failurePolicy Ignore admits, Fail refuses, with layerlink down", failure_policy),
        (6, "unknown tag: warning with onError allow, refused with onError deny", unknown_tag),
        (7, "audit mode: unchanged, warnings, audit annotations, an event", audit_mode),
        (8, "cluster-wide enforce: every namespace but audit and off", cluster_wide),
        (9, "pod templates pinned only with workloads.templates", templates),
        (10, "pull secrets: a private image pinned with the pod's namespace's secret", pull_secrets),
        (11, "the rendered manifests' webhook configuration and RBAC", rendered_manifests),
        (12, "pre-pull init containers injected, pinned and restricted", prepull),
        (13, "layerlink certs --apply writes the Secret and the caBundle", certs_apply),
        (14, "layerlink audit lists unpinned pods from the cluster", audit_command),
        (15, "a Deployment's pods pinned, also after a restart and a scale-up", controller_pods),
        (16, "StatefulSet, Job and DaemonSet pods pinned; a rollout pins the moved tag", workload_kinds),
        (17, "sticky pins: a scale-up after the tag moved keeps the revision's digest", sticky_scale_up),
        (18, "layerlink install --apply, a pod pinned, layerlink uninstall", install_scenario::install_and_uninstall),
    ];
    let only: Option<Vec<u32>> = std::env::var("LAYERLINK_E2E_ONLY")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("LAYERLINK_E2E_ONLY: numbers")).collect());

    let started = Instant::now();
    let mut ctx = Ctx::start();
    eprintln!("e2e: cluster, registries and layerlink ready in {:.1}s", started.elapsed().as_secs_f64());
    let mut failed = Vec::new();
    for &(n, name, scenario) in scenarios {
        if only.as_ref().is_some_and(|only| !only.contains(&n)) {
            continue;
        }
        ctx.ensure_layerlink();
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut ctx)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("scenario {n} ({name}): ok ({secs:.1}s)"),
            Err(why) => {
                println!("scenario {n} ({name}): FAILED: {why} ({secs:.1}s)");
                eprintln!("--- layerlink log (last 20 lines) ---\n{}", tail(&ctx.layerlink.log(), 20));
                failed.push(n);
            }
        }
    }
    drop(ctx);
    println!("e2e: {:.1}s", started.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// 1. A pod in an enforce namespace is stored with every image (init containers and containers)
///    pinned to the digest the registry serves; a multi-arch image to its index; an image that is
///    already pinned and everything else is as sent.
fn enforce_pins(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s1-enforce";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let already = ctx.pinned("team/sidecar", "v1");
    let pod = pod(
        ns,
        "pinned",
        &[("init", ctx.img("team/init:v1"))],
        &[("app", ctx.img("team/app:v1")), ("multi", ctx.img("team/multi:v1")), ("already", already.clone())],
    );
    let out = ctx.kubectl.create(&pod)?;
    ensure(!out.stderr.contains("Warning"), format!("unexpected warnings: {}", out.stderr))?;
    let stored = ctx.kubectl.get("pod", ns, "pinned")?;
    expect_images(
        &stored,
        "/spec",
        &[
            ("initContainers/init", ctx.pinned("team/init", "v1")),
            ("containers/app", ctx.pinned("team/app", "v1")),
            ("containers/multi", ctx.pinned("team/multi", "v1")),
            ("containers/already", already),
        ],
    )?;
    ensure(
        ctx.pinned("team/multi", "v1").ends_with(&ctx.multi_index),
        format!("team/multi:v1 must pin to its index {}", ctx.multi_index),
    )?;
    expect_eq("labels", &stored["metadata"]["labels"], &pod["metadata"]["labels"])?;
    expect_eq("annotations", &stored["metadata"]["annotations"], &pod["metadata"]["annotations"])?;
    let calls = ctx.webhook_calls(ns, "pods", "pinned")?;
    ensure(
        calls.iter().any(|c| c.webhook == ENFORCE && c.mutated),
        format!("the audit log does not show {ENFORCE} mutating the pod: {calls:?}"),
    )
}

/// 2. A pod in a namespace without the label is stored exactly as sent, and layerlink is not
///    even called.
fn unlabelled_untouched(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s2-unlabelled";
    ctx.namespace(ns, &[])?;
    let pod = pod(ns, "untouched", &[("init", ctx.img("team/init:v1"))], &[("app", ctx.img("team/app:v1"))]);
    ctx.kubectl.create(&pod)?;
    let stored = ctx.kubectl.get("pod", ns, "untouched")?;
    expect_eq("images", &images_at(&stored, "/spec"), &images_at(&pod, "/spec"))?;
    expect_eq("labels", &stored["metadata"]["labels"], &pod["metadata"]["labels"])?;
    let calls = ctx.webhook_calls(ns, "pods", "untouched")?;
    ensure(calls.is_empty(), format!("a webhook was called for an unlabelled namespace: {calls:?}"))
}

/// 3. `kubectl create --dry-run=server` returns the pinned pod, layerlink saw `dryRun: true`,
///    and nothing is stored.
fn dry_run(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s3-enforce";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let pod = pod(ns, "dry", &[("init", ctx.img("team/init:v1"))], &[("app", ctx.img("team/app:v1"))]);
    let out = ctx.kubectl.ok(&["create", "--dry-run=server", "-o", "json", "-f", "-"], Some(&pod.to_string()))?;
    let returned: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("dry-run output: {e}"))?;
    expect_images(
        &returned,
        "/spec",
        &[("initContainers/init", ctx.pinned("team/init", "v1")), ("containers/app", ctx.pinned("team/app", "v1"))],
    )?;
    expect_not_found(&ctx.kubectl, "pod", ns, "dry")?;
    // Log lines are written in batches (src/logs.rs): give the line its flush interval.
    let logged =
        |log: &str| log.lines().any(|l| l.contains("\"object\":\"s3-enforce/dry\"") && l.contains("\"dry_run\":true"));
    let log = ctx.layerlink.log_when(logged);
    ensure(logged(&log), format!("layerlink did not log a dry-run review of s3-enforce/dry:\n{}", tail(&log, 5)))
}

/// 4. A second mutating webhook (sorted after layerlink) adds an init container with a tag
///    after layerlink has run; the API server reinvokes layerlink, which pins it: every image
///    pinned exactly once.
fn reinvocation(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard(), ctx.sidecar_config()])?;
    let ns = "s4-sidecar";
    ctx.namespace(ns, &[(MODE, "enforce"), (SIDECAR_LABEL, "on")])?;
    let pod = pod(ns, "reinvoked", &[("init", ctx.img("team/init:v1"))], &[("app", ctx.img("team/app:v1"))]);
    ctx.kubectl.create(&pod)?;
    let stored = ctx.kubectl.get("pod", ns, "reinvoked")?;
    let images = images_at(&stored, "/spec");
    for (site, image) in &images {
        ensure(image.matches("@sha256:").count() == 1, format!("{site} is not pinned exactly once: {image}"))?;
    }
    expect_images(
        &stored,
        "/spec",
        &[
            ("initContainers/init", ctx.pinned("team/init", "v1")),
            ("initContainers/injected", ctx.pinned("team/sidecar", "v1")),
            ("containers/app", ctx.pinned("team/app", "v1")),
        ],
    )?;
    let calls = ctx.webhook_calls(ns, "pods", "reinvoked")?;
    ensure(
        calls.iter().any(|c| c.round == 1 && c.webhook == ENFORCE && c.mutated),
        format!("the audit log does not show layerlink reinvoked (round 1) and mutating: {calls:?}"),
    )
}

/// 5. With layerlink down: `failurePolicy: Ignore` admits the pod unchanged; `Fail` refuses it
///    with the API server's webhook error. A new layerlink serves the later scenarios.
fn failure_policy(ctx: &mut Ctx) -> Result<(), String> {
    let ns = "s5-enforce";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    ctx.layerlink.stop();

    ctx.install(vec![ctx.layerlink_config(&ctx.layerlink, mode_is("enforce"), "Ignore")])?;
    let admitted = pod(ns, "admitted", &[], &[("app", ctx.img("team/app:v1"))]);
    ctx.kubectl.create(&admitted).map_err(|e| format!("Ignore: {e}"))?;
    let stored = ctx.kubectl.get("pod", ns, "admitted")?;
    expect_eq("images (Ignore)", &images_at(&stored, "/spec"), &images_at(&admitted, "/spec"))?;

    ctx.install(vec![ctx.layerlink_config(&ctx.layerlink, mode_is("enforce"), "Fail")])?;
    let refused = pod(ns, "refused", &[], &[("app", ctx.img("team/app:v1"))]);
    let out = ctx.kubectl.create_any(&refused);
    ensure(!out.ok, format!("Fail: created although layerlink is down: {}", out.stdout))?;
    let expected = format!("failed calling webhook \"{ENFORCE}\"");
    ensure(out.stderr.contains(&expected), format!("Fail: no `{expected}` in: {}", out.stderr))?;
    expect_not_found(&ctx.kubectl, "pod", ns, "refused")?;

    ctx.layerlink = ctx.start_layerlink("allow", "", None);
    Ok(())
}

/// 6. An image whose tag does not exist: with `onError: allow` the pod is admitted with that
///    image unchanged (the others pinned) and kubectl shows our warning; a layerlink with
///    `onError: deny` refuses the pod with our message.
fn unknown_tag(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s6-enforce";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let (app, missing) = (ctx.img("team/app:v1"), ctx.img("team/app:nope"));
    let spec = |name: &str| pod(ns, name, &[], &[("app", app.clone()), ("missing", missing.clone())]);

    let out = ctx.kubectl.create(&spec("allowed"))?;
    let warning = format!("Warning: layerlink: not pinned {missing}: tag nope of team/app not found");
    ensure(out.stderr.contains(&warning), format!("no `{warning}` in kubectl's stderr: {}", out.stderr))?;
    let stored = ctx.kubectl.get("pod", ns, "allowed")?;
    expect_images(
        &stored,
        "/spec",
        &[("containers/app", ctx.pinned("team/app", "v1")), ("containers/missing", missing.clone())],
    )?;

    let deny = ctx.start_layerlink("deny", "", None);
    ctx.install(vec![ctx.layerlink_config(&deny, mode_is("enforce"), "Fail")])?;
    let out = ctx.kubectl.create_any(&spec("refused"));
    ensure(!out.ok, "created although onError is deny".to_string())?;
    for expected in [
        format!("admission webhook \"{ENFORCE}\" denied the request"),
        format!("layerlink: cannot pin 1 image: {missing}: tag nope of team/app not found"),
    ] {
        ensure(out.stderr.contains(&expected), format!("no `{expected}` in: {}", out.stderr))?;
    }
    expect_not_found(&ctx.kubectl, "pod", ns, "refused")
}

/// 7. Audit mode: the pod is stored unchanged; kubectl prints one warning per image (would pin,
///    or why not); the audit log has layerlink's audit annotations; an Event is recorded for
///    the pod, and none for a server-side dry run (sideEffects: NoneOnDryRun).
fn audit_mode(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s7-audit";
    ctx.namespace(ns, &[(MODE, "audit")])?;
    let missing = ctx.img("team/app:nope");
    let spec = |name: &str| pod(ns, name, &[("init", ctx.img("team/init:v1"))], &[("missing", missing.clone())]);
    let pinned = ctx.pinned("team/init", "v1");
    let digest = pinned.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
    let would_pin = format!(
        "Warning: layerlink audit: would pin {} → {}…",
        ctx.img("team/init:v1"),
        digest.get(..19).unwrap_or(&digest)
    );
    let cannot_pin = format!("Warning: layerlink audit: cannot pin {missing}: tag nope of team/app not found");

    let out = ctx.kubectl.ok(&["create", "--dry-run=server", "-f", "-"], Some(&spec("dry-audited").to_string()))?;
    ensure(out.stderr.contains(&would_pin), format!("dry run: no `{would_pin}` in: {}", out.stderr))?;

    let sent = spec("audited");
    let out = ctx.kubectl.create(&sent)?;
    for expected in [&would_pin, &cannot_pin] {
        ensure(out.stderr.contains(expected.as_str()), format!("no `{expected}` in kubectl's stderr: {}", out.stderr))?;
    }
    let stored = ctx.kubectl.get("pod", ns, "audited")?;
    expect_eq("images", &images_at(&stored, "/spec"), &images_at(&sent, "/spec"))?;

    let annotations = ctx.audit_annotations(ns, "pods", "audited")?;
    let found = |key: &str| annotations.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let (would, unresolved) = (found(&format!("{AUDIT}/would-pin")), found(&format!("{AUDIT}/unresolved")));
    ensure(would.contains(&pinned), format!("{AUDIT}/would-pin lacks {pinned}: {annotations:?}"))?;
    ensure(unresolved.contains(&missing), format!("{AUDIT}/unresolved lacks {missing}: {annotations:?}"))?;

    let event = wait_for(Duration::from_secs(15), || {
        let events = ctx.kubectl.get_list("events", ns).ok()?;
        events.into_iter().find(|e| e["involvedObject"]["name"] == "audited")
    })
    .ok_or("no Event for the audited pod within 15s")?;
    expect_eq("event source", &event["source"]["component"], &json!("layerlink"))?;
    let message = event["message"].as_str().unwrap_or("");
    ensure(
        message.contains(&format!("would pin {} to {digest}", ctx.img("team/init:v1"))),
        format!("event message: {message}"),
    )?;
    let events = ctx.kubectl.get_list("events", ns)?;
    ensure(
        !events.iter().any(|e| e["involvedObject"]["name"] == "dry-audited"),
        "an Event was recorded for a dry run".to_string(),
    )
}

/// 8. Cluster-wide enforce (namespaceSelector `layerlink.io/mode NotIn [audit, off]`): pins in
///    an unlabelled namespace, leaves an `off` namespace alone (not even called) and audits an
///    `audit` namespace.
fn cluster_wide(ctx: &mut Ctx) -> Result<(), String> {
    let selector = json!({"matchExpressions": [{"key": MODE, "operator": "NotIn", "values": ["audit", "off"]}]});
    ctx.install(vec![ctx.layerlink_config(&ctx.layerlink, selector, "Fail")])?;
    for (ns, labels) in
        [("s8-unlabelled", &[][..]), ("s8-off", &[(MODE, "off")][..]), ("s8-audit", &[(MODE, "audit")][..])]
    {
        ctx.namespace(ns, labels)?;
    }
    let spec = |ns: &str| pod(ns, "app", &[], &[("app", ctx.img("team/app:v1"))]);

    ctx.kubectl.create(&spec("s8-unlabelled"))?;
    let stored = ctx.kubectl.get("pod", "s8-unlabelled", "app")?;
    expect_images(&stored, "/spec", &[("containers/app", ctx.pinned("team/app", "v1"))])?;

    ctx.kubectl.create(&spec("s8-off"))?;
    let stored = ctx.kubectl.get("pod", "s8-off", "app")?;
    expect_images(&stored, "/spec", &[("containers/app", ctx.img("team/app:v1"))])?;
    let calls = ctx.webhook_calls("s8-off", "pods", "app")?;
    ensure(calls.is_empty(), format!("a webhook was called in an `off` namespace: {calls:?}"))?;

    let out = ctx.kubectl.create(&spec("s8-audit"))?;
    ensure(out.stderr.contains("layerlink audit: would pin"), format!("audit namespace: {}", out.stderr))?;
    let stored = ctx.kubectl.get("pod", "s8-audit", "app")?;
    expect_images(&stored, "/spec", &[("containers/app", ctx.img("team/app:v1"))])
}

/// 9. Deployments: with the default config layerlink is called and leaves the pod template as
///    sent; a layerlink with `workloads: {templates: true}` pins it.
fn templates(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s9-enforce";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let (init, app) = (ctx.img("team/init:v1"), ctx.img("team/app:v1"));
    let spec = |name: &str| workload(Kind::Deployment, ns, name, 1, &[("init", init.clone())], &[("app", app.clone())]);
    const TEMPLATE: &str = "/spec/template/spec";

    let sent = spec("by-default");
    ctx.kubectl.create(&sent)?;
    let stored = ctx.kubectl.get("deployment", ns, "by-default")?;
    expect_eq("template images (default config)", &images_at(&stored, TEMPLATE), &images_at(&sent, TEMPLATE))?;
    let calls = ctx.webhook_calls(ns, "deployments", "by-default")?;
    ensure(
        calls.iter().any(|c| c.webhook == ENFORCE && !c.mutated),
        format!("layerlink was not called (unmutated) for the Deployment: {calls:?}"),
    )?;

    let with_templates = ctx.start_layerlink("allow", "workloads: { templates: true }\n", None);
    ctx.install(vec![ctx.layerlink_config(&with_templates, mode_is("enforce"), "Fail")])?;
    ctx.kubectl.create(&spec("templated"))?;
    let stored = ctx.kubectl.get("deployment", ns, "templated")?;
    expect_images(
        &stored,
        TEMPLATE,
        &[("initContainers/init", ctx.pinned("team/init", "v1")), ("containers/app", ctx.pinned("team/app", "v1"))],
    )
}

/// 10. A private image (registry with htpasswd auth) is pinned for a pod whose
///     `imagePullSecrets` names a dockerconfigjson Secret in its namespace, read by layerlink
///     from the API server; the same pod in a namespace without that Secret is not pinned
///     (warning), although the digest is in layerlink's cache by then.
fn pull_secrets(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let (with, without) = ("s10-with-secret", "s10-without-secret");
    ctx.namespace(with, &[(MODE, "enforce")])?;
    ctx.namespace(without, &[(MODE, "enforce")])?;
    let host = ctx.private.host();
    ctx.kubectl.ok(
        &[
            "-n",
            with,
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={host}"),
            &format!("--docker-username={PULL_USER}"),
            &format!("--docker-password={PULL_PASSWORD}"),
        ],
        None,
    )?;
    let image = format!("{host}/private/app:v1");
    let digest = ctx.private.manifest_digest("private/app", "v1").ok_or("private/app:v1 not in the registry")?;
    let spec = |ns: &str| {
        let mut pod = pod(ns, "private", &[], &[("app", image.clone())]);
        pod["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
        pod
    };

    let out = ctx.kubectl.create(&spec(with))?;
    ensure(!out.stderr.contains("Warning"), format!("with the secret: {}", out.stderr))?;
    let stored = ctx.kubectl.get("pod", with, "private")?;
    expect_images(&stored, "/spec", &[("containers/app", format!("{image}@{digest}"))])?;

    let out = ctx.kubectl.create(&spec(without))?;
    let warning = format!("Warning: layerlink: not pinned {image}");
    ensure(out.stderr.contains(&warning), format!("without the secret: no `{warning}` in: {}", out.stderr))?;
    let stored = ctx.kubectl.get("pod", without, "private")?;
    expect_images(&stored, "/spec", &[("containers/app", image)])
}

/// 11. The rendered `manifests/overlays/self-signed`: its MutatingWebhookConfiguration (service
///     rewritten to a URL with the test CA as caBundle, matchConditions dropped for 1.20, the
///     rest as rendered), Namespace and
///     RBAC applied; layerlink served with the overlay's certificates pins in an enforce
///     namespace and audits in an audit namespace; the ServiceAccount may get secrets but not
///     create pods.
fn rendered_manifests(ctx: &mut Ctx) -> Result<(), String> {
    let scratch = tempfile::Builder::new().prefix("layerlink-e2e-manifests-").tempdir().map_err(|e| e.to_string())?;
    let manifests = scratch.path().join("manifests");
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests"), &manifests)?;
    let overlay = manifests.join("overlays/self-signed");
    run(Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .args(["certs", "--out"])
        .arg(&overlay)
        .args(["--dns", "127.0.0.1"]))?;
    let rendered = run(Command::new("kubectl").arg("kustomize").arg(&overlay))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).map_err(|e| format!("rendered YAML: {e}"))?;

    let served = ctx.start_layerlink("allow", "", Some(&overlay));
    let ca_bundle = B64.encode(std::fs::read(overlay.join("ca.crt")).map_err(|e| e.to_string())?);
    let mut webhook_config = None;
    let mut others = Vec::new();
    for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str().unwrap_or("") {
            "MutatingWebhookConfiguration" => {
                let webhooks = doc["webhooks"].as_array_mut().ok_or("webhook configuration without webhooks")?;
                for webhook in webhooks.iter_mut() {
                    let path = webhook["clientConfig"]["service"]["path"].as_str().ok_or("no service path")?;
                    // The overlay ships no certificate: `layerlink certs --apply` sets the caBundle
                    // in a cluster; here it is the CA of the certificates written above.
                    ensure(
                        webhook["clientConfig"].get("caBundle").is_none(),
                        format!("the overlay renders a caBundle: {}", webhook["clientConfig"]),
                    )?;
                    webhook["clientConfig"] = json!({"url": served.url(path), "caBundle": ca_bundle});
                    webhook.as_object_mut().unwrap().remove("matchConditions");
                }
                webhook_config = Some(doc);
            }
            "Namespace" | "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" => others.push(doc),
            _ => {}
        }
    }
    let webhook_config = webhook_config.ok_or("no MutatingWebhookConfiguration rendered")?;
    let names: Vec<&str> =
        webhook_config["webhooks"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap_or("")).collect();
    expect_eq("rendered webhooks", &names, &vec![ENFORCE, AUDIT])?;
    ensure(
        others.len() == 4,
        format!("expected Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding: {others:?}"),
    )?;
    for object in &others {
        ctx.kubectl.create(object)?;
    }
    ctx.install(vec![webhook_config])?;

    let (enforce, audit) = ("s11-enforce", "s11-audit");
    ctx.namespace(enforce, &[(MODE, "enforce")])?;
    ctx.namespace(audit, &[(MODE, "audit")])?;
    let spec = |ns: &str| pod(ns, "app", &[("init", ctx.img("team/init:v1"))], &[("app", ctx.img("team/app:v1"))]);
    ctx.kubectl.create(&spec(enforce))?;
    let stored = ctx.kubectl.get("pod", enforce, "app")?;
    expect_images(
        &stored,
        "/spec",
        &[("initContainers/init", ctx.pinned("team/init", "v1")), ("containers/app", ctx.pinned("team/app", "v1"))],
    )?;
    let out = ctx.kubectl.create(&spec(audit))?;
    ensure(out.stderr.contains("layerlink audit: would pin"), format!("audit namespace: {}", out.stderr))?;
    let stored = ctx.kubectl.get("pod", audit, "app")?;
    expect_images(
        &stored,
        "/spec",
        &[("initContainers/init", ctx.img("team/init:v1")), ("containers/app", ctx.img("team/app:v1"))],
    )?;

    let account = "system:serviceaccount:layerlink-system:layerlink";
    for (verb, resource, allowed) in [
        ("get", "secrets", true),
        ("get", "serviceaccounts", true),
        ("create", "events", true),
        ("list", "secrets", false),
        ("create", "pods", false),
    ] {
        let out = ctx.kubectl.run(&["auth", "can-i", verb, resource, "--as", account, "-n", enforce], None);
        let answer = out.stdout.trim();
        ensure(
            answer == if allowed { "yes" } else { "no" },
            format!("can-i {verb} {resource} as {account}: {answer} {}", out.stderr.trim()),
        )?;
    }
    Ok(())
}

/// 12. Pre-pull: an app built on a configured base (its layers a prefix of the app's)
///     is stored pinned, with the `layerlink-tools` and `layerlink-prepull-base` init containers
///     (base and tools pinned by digest) after the pod's own, the emptyDir, the annotation, and
///     the whole pod passes the restricted Pod Security Standard (1.20 has no PodSecurity
///     admission, so its rules are checked here).
fn prepull(ctx: &mut Ctx) -> Result<(), String> {
    let base = Image::new(vec![layer(&[("etc/os-release", b"ID=base\n")]), layer(&[("usr/lib/base", b"runtime")])]);
    let app = Image::on(&base, vec![layer(&[("app/bin", b"the app")])]);
    ctx.registry.push("team/base", "v1", &base);
    ctx.registry.push("team/built-on-base", "v1", &app);
    ctx.registry.push("team/tools", "v1", &image("tools"));
    let more = format!(
        "prepull:\n  enabled: true\n  detect: layers\n  toolsImage: \"{}\"\n  bases: [{{ image: \"{}\" }}]\n",
        ctx.img("team/tools:v1"),
        ctx.img("team/base:v1")
    );
    let with_prepull = ctx.start_layerlink("allow", &more, None);
    ctx.install(vec![ctx.layerlink_config(&with_prepull, mode_is("enforce"), "Fail")])?;
    let ns = "s12-prepull";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let mut sent =
        pod(ns, "on-base", &[("migrate", ctx.img("team/init:v1"))], &[("app", ctx.img("team/built-on-base:v1"))]);
    sent["spec"]["securityContext"] =
        json!({"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}});
    for list in ["initContainers", "containers"] {
        for c in sent["spec"][list].as_array_mut().unwrap() {
            c["securityContext"] = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
        }
    }
    // The first look at a new image may finish after the budget (then the pod is admitted
    // without injection); a dry run lets it finish, as any earlier pod would.
    ctx.kubectl.ok(&["create", "--dry-run=server", "-f", "-"], Some(&sent.to_string()))?;
    ctx.kubectl.create(&sent)?;
    let stored = ctx.kubectl.get("pod", ns, "on-base")?;
    let base_pinned = ctx.pinned("team/base", "v1");
    let tools_pinned = ctx.pinned("team/tools", "v1");
    expect_images(
        &stored,
        "/spec",
        &[
            ("initContainers/migrate", ctx.pinned("team/init", "v1")),
            ("initContainers/layerlink-tools", tools_pinned),
            ("initContainers/layerlink-prepull-base", base_pinned.clone()),
            ("containers/app", ctx.pinned("team/built-on-base", "v1")),
        ],
    )?;
    let order: Vec<&str> =
        stored["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap_or("")).collect();
    expect_eq("init container order", &order, &vec!["migrate", "layerlink-tools", "layerlink-prepull-base"])?;
    let annotation = stored["metadata"]["annotations"]["layerlink.io/prepull"].as_str().unwrap_or("");
    ensure(annotation.contains(&base_pinned), format!("layerlink.io/prepull = {annotation:?}"))?;
    ensure(
        stored["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"] == "layerlink-tools" && v["emptyDir"].is_object()),
        "no layerlink-tools emptyDir volume".to_string(),
    )?;
    let violations = restricted_violations(&stored);
    ensure(violations.is_empty(), format!("restricted Pod Security violations: {violations:?}"))?;
    // The check can fail: the same pod without the injected containers' hardening would not pass.
    let mut weakened = stored.clone();
    weakened["spec"]["initContainers"][2]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    ensure(!restricted_violations(&weakened).is_empty(), "the restricted check accepts a weakened pod".to_string())?;
    drop(with_prepull);
    Ok(())
}

/// The restricted Pod Security Standard (pod-security-admission, "restricted", latest) for the
/// fields a pod can set: what the PodSecurity admission plugin would refuse.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == json!(true) {
            out.push(format!("{host} is true"));
        }
    }
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
        "image",
    ];
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let kinds: Vec<&String> = volume.as_object().unwrap().keys().filter(|k| *k != "name").collect();
        if kinds.iter().any(|k| !allowed_volumes.contains(&k.as_str())) {
            out.push(format!("volume {} has a restricted type {kinds:?}", volume["name"]));
        }
    }
    let pod_sc = &spec["securityContext"];
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("?");
            let sc = &c["securityContext"];
            if sc["privileged"] == json!(true) {
                out.push(format!("{name}: privileged"));
            }
            if sc["allowPrivilegeEscalation"] != json!(false) {
                out.push(format!("{name}: allowPrivilegeEscalation is not false"));
            }
            let drops = sc["capabilities"]["drop"].as_array().cloned().unwrap_or_default();
            if !drops.contains(&json!("ALL")) {
                out.push(format!("{name}: capabilities.drop lacks ALL"));
            }
            if sc["capabilities"]["add"].as_array().into_iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
                out.push(format!("{name}: adds capabilities"));
            }
            let non_root = if sc["runAsNonRoot"].is_boolean() { &sc["runAsNonRoot"] } else { &pod_sc["runAsNonRoot"] };
            if non_root != &json!(true) {
                out.push(format!("{name}: runAsNonRoot is not true"));
            }
            let user = if sc["runAsUser"].is_number() { &sc["runAsUser"] } else { &pod_sc["runAsUser"] };
            if user == &json!(0) {
                out.push(format!("{name}: runAsUser 0"));
            }
            let seccomp =
                if sc["seccompProfile"].is_object() { &sc["seccompProfile"] } else { &pod_sc["seccompProfile"] };
            if !matches!(seccomp["type"].as_str(), Some("RuntimeDefault" | "Localhost")) {
                out.push(format!("{name}: seccompProfile is not RuntimeDefault or Localhost"));
            }
            if c["ports"].as_array().into_iter().flatten().any(|p| p["hostPort"].as_u64().unwrap_or(0) != 0) {
                out.push(format!("{name}: hostPort"));
            }
        }
    }
    out
}

/// 13. `layerlink certs --apply`: writes the `kubernetes.io/tls` Secret in
///     layerlink-system and sets every entry's caBundle of the configuration `layerlink`; a
///     layerlink serving the new certificate, reached with the applied caBundle, pins a pod.
fn certs_apply(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let out = ctx.kubectl.run(&["create", "namespace", "layerlink-system"], None);
    ensure(out.ok || out.stderr.contains("AlreadyExists"), format!("namespace: {}", out.stderr))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    run(Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .env("KUBECONFIG", ctx.cluster.dir.join("kubeconfig"))
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--dns", "127.0.0.1", "--apply"]))?;
    let ca_pem = std::fs::read(dir.path().join("ca.crt")).map_err(|e| e.to_string())?;
    let ca_bundle = B64.encode(&ca_pem);
    let secret = ctx.kubectl.get("secret", "layerlink-system", "layerlink-tls")?;
    expect_eq("secret type", &secret["type"], &json!("kubernetes.io/tls"))?;
    expect_eq("secret ca.crt", &secret["data"]["ca.crt"], &json!(ca_bundle))?;
    for key in ["tls.crt", "tls.key"] {
        ensure(secret["data"][key].as_str().is_some_and(|v| !v.is_empty()), format!("secret has no {key}"))?;
    }
    let applied = ctx.kubectl.get("mutatingwebhookconfiguration", "", "layerlink")?;
    let bundles: Vec<&Value> =
        applied["webhooks"].as_array().unwrap().iter().map(|w| &w["clientConfig"]["caBundle"]).collect();
    expect_eq("caBundles", &bundles, &vec![&json!(ca_bundle); 2])?;

    let served = ctx.start_layerlink("allow", "", Some(dir.path()));
    let mut config = ctx.layerlink_config(&served, mode_is("enforce"), "Fail");
    for (webhook, applied) in
        config["webhooks"].as_array_mut().unwrap().iter_mut().zip(applied["webhooks"].as_array().unwrap())
    {
        webhook["clientConfig"]["caBundle"] = applied["clientConfig"]["caBundle"].clone();
    }
    ctx.install(vec![config])?;
    let ns = "s13-enforce";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    ctx.kubectl.create(&pod(ns, "rotated", &[], &[("app", ctx.img("team/app:v1"))]))?;
    let stored = ctx.kubectl.get("pod", ns, "rotated")?;
    expect_images(&stored, "/spec", &[("containers/app", ctx.pinned("team/app", "v1"))])?;
    drop(served);
    Ok(())
}

/// 14. `layerlink audit` lists, read-only, the unpinned containers of pods running in
///     the cluster with what they would pin to; it follows `continue` across pages, and skips
///     with a note (not an error) the kinds the cluster does not serve (404) or the user may not
///     list (403).
fn audit_command(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s14-unpinned";
    ctx.namespace(ns, &[])?;
    let sent = pod(ns, "old", &[("init", ctx.img("team/init:v1"))], &[("app", ctx.img("team/app:nope"))]);
    ctx.kubectl.create(&sent)?;
    // A second pod: with one object per page, the pods come back in two pages.
    ctx.kubectl.create(&pod(ns, "older", &[], &[("web", ctx.img("team/app:v1"))]))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("registries: [{{ host: \"{}\", plainHttp: true }}]\n", ctx.registry.host()))
        .map_err(|e| e.to_string())?;
    let audit = |kubeconfig: &Path| {
        run_both(
            Command::new(env!("CARGO_BIN_EXE_layerlink"))
                .env("KUBECONFIG", kubeconfig)
                .args(["audit", "-n", ns, "-o", "json", "--page-size", "1", "--config"])
                .arg(&config),
        )
    };
    let (output, notes) = audit(&ctx.cluster.dir.join("kubeconfig"))?;
    let rows: Vec<Value> = serde_json::from_str(&output).map_err(|e| format!("audit -o json: {e}: {output}"))?;
    let row = |rows: &[Value], pod: &str, container: &str| {
        rows.iter().find(|r| r["name"] == pod && r["container"] == container).cloned()
    };
    let init = row(&rows, "old", "init").ok_or(format!("no row for the init container: {rows:?}"))?;
    expect_eq("init would pin to", &init["wouldPinTo"], &json!(ctx.pinned("team/init", "v1")))?;
    let app = row(&rows, "old", "app").ok_or(format!("no row for the app container: {rows:?}"))?;
    ensure(
        app["reason"].as_str().is_some_and(|r| r.contains("tag nope of team/app not found")),
        format!("app row: {app}"),
    )?;
    let web = row(&rows, "older", "web").ok_or(format!("no row for the second page's pod: {rows:?}"))?;
    expect_eq("web would pin to", &web["wouldPinTo"], &json!(ctx.pinned("team/app", "v1")))?;
    // kube-apiserver before 1.21 serves CronJob only in batch/v1beta1: listing batch/v1 is a 404.
    let batch_v1 = ctx.kubectl.ok(&["get", "--raw", "/apis/batch/v1"], None)?.stdout;
    if !batch_v1.contains("\"cronjobs\"") {
        ensure(
            notes.lines().any(|l| l.contains("CronJob: cannot list") && l.contains("(404)")),
            format!("no 404 note for CronJob: {notes}"),
        )?;
    }
    let stored = ctx.kubectl.get("pod", ns, "old")?;
    expect_eq("images (audit is read-only)", &images_at(&stored, "/spec"), &images_at(&sent, "/spec"))?;

    // A service account that may list only pods, here: the other kinds are a 403, skipped.
    for args in [
        &["create", "serviceaccount", "auditor"][..],
        &["create", "role", "pod-lister", "--verb=list", "--resource=pods"],
        &["create", "rolebinding", "auditor", "--role=pod-lister", &format!("--serviceaccount={ns}:auditor")],
    ] {
        ctx.kubectl.ok(&[&["-n", ns][..], args].concat(), None)?;
    }
    let token = ctx.kubectl.ok(&["-n", ns, "create", "token", "auditor"], None)?.stdout.trim().to_string();
    let admin = std::fs::read_to_string(ctx.cluster.dir.join("kubeconfig")).map_err(|e| e.to_string())?;
    let auditor: String = admin
        .lines()
        .map(|l| if l.trim_start().starts_with("token:") { format!("    token: {token}\n") } else { format!("{l}\n") })
        .collect();
    let kubeconfig = dir.path().join("auditor.kubeconfig");
    std::fs::write(&kubeconfig, auditor).map_err(|e| e.to_string())?;
    let (output, notes) = audit(&kubeconfig)?;
    let rows: Vec<Value> = serde_json::from_str(&output).map_err(|e| format!("audit -o json: {e}: {output}"))?;
    ensure(
        row(&rows, "old", "init").is_some() && row(&rows, "older", "web").is_some(),
        format!("the pods are still audited: {rows:?}"),
    )?;
    ensure(
        notes.lines().any(|l| l.contains("Deployment: cannot list") && l.contains("(403)")),
        format!("no 403 note for Deployment: {notes}"),
    )
}

/// 15. Pods created by a controller: a Deployment with 2 replicas in an enforce namespace gets 2
///     pods from its ReplicaSet, stored pinned and with what ServiceAccount admission adds (the
///     `default` account and its token volume); the ReplicaSet's template stays as sent (pods
///     are pinned, not templates); after a restart of layerlink (a new process, its cache
///     empty), scaling to 3 adds a third pinned pod and keeps the first two.
fn controller_pods(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s15-workload";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let sent = workload(
        Kind::Deployment,
        ns,
        "web",
        2,
        &[("init", ctx.img("team/init:v1"))],
        &[("app", ctx.img("team/app:v1"))],
    );
    ctx.kubectl.create(&sent)?;
    let want =
        [("initContainers/init", ctx.pinned("team/init", "v1")), ("containers/app", ctx.pinned("team/app", "v1"))];
    let first = ctx.wait_pods(Kind::Deployment, ns, "web", 2)?;
    expect_pods_images(&first, &want)?;
    for pod in &first {
        let spec = &pod["spec"];
        let token_volume = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["secret"]["secretName"].as_str().is_some_and(|s| s.starts_with("default-token-")));
        ensure(
            spec["serviceAccountName"] == "default" && token_volume,
            format!("pod {} lacks the default account or its token volume: {spec}", name_of(pod)),
        )?;
    }
    let sets = ctx.replica_sets(ns, "web")?;
    ensure(sets.len() == 1, format!("want one ReplicaSet, got {}", sets.len()))?;
    const TEMPLATE: &str = "/spec/template/spec";
    expect_eq("ReplicaSet template images", &images_at(&sets[0], TEMPLATE), &images_at(&sent, TEMPLATE))?;

    ctx.layerlink.restart();
    let scaled = ctx.scale(Kind::Deployment, ns, "web", 3)?;
    expect_pods_images(&scaled, &want)?;
    let names: Vec<String> = scaled.iter().map(name_of).collect();
    ensure(
        first.iter().all(|pod| names.contains(&name_of(pod))),
        format!(
            "scaling up replaced pods: before {:?}, after {names:?}",
            first.iter().map(name_of).collect::<Vec<_>>()
        ),
    )
}

/// 16. The other controllers and a rollout: a StatefulSet's, a Job's and a DaemonSet's pods (over
///     a Node object made for it) are stored pinned; after the tag moved and layerlink restarted
///     (its cache empty), `kubectl rollout restart` gives the Deployment a new ReplicaSet whose
///     pods are pinned to the tag's new digest.
fn workload_kinds(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s16-workloads";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    let app = [("app", ctx.img("team/app:v1"))];
    let want = [("containers/app", ctx.pinned("team/app", "v1"))];
    ctx.kubectl.create(&workload(Kind::StatefulSet, ns, "db", 2, &[], &app))?;
    expect_pods_images(&ctx.wait_pods(Kind::StatefulSet, ns, "db", 2)?, &want)?;
    ctx.kubectl.create(&workload(Kind::Job, ns, "batch", 2, &[], &app))?;
    expect_pods_images(&ctx.wait_pods(Kind::Job, ns, "batch", 2)?, &want)?;
    ctx.node("s16-node")?;
    let nodes = ctx.kubectl.get_list("nodes", "")?.len();
    ctx.kubectl.create(&workload(Kind::DaemonSet, ns, "agent", 0, &[], &app))?;
    expect_pods_images(&ctx.wait_pods(Kind::DaemonSet, ns, "agent", nodes)?, &want)?;

    // A repository of its own: moving team/app:v1 would change what later scenarios expect.
    ctx.registry.push("team/moving", "v1", &image("moving-1"));
    let before = [("containers/app", ctx.pinned("team/moving", "v1"))];
    ctx.kubectl.create(&workload(Kind::Deployment, ns, "web", 2, &[], &[("app", ctx.img("team/moving:v1"))]))?;
    expect_pods_images(&ctx.wait_pods(Kind::Deployment, ns, "web", 2)?, &before)?;
    let after = [("containers/app", ctx.move_tag("team/moving", "v1", "moving-2")?)];
    ctx.layerlink.restart();
    let restarted = ctx.rollout_restart(ns, "web", 2)?;
    expect_pods_images(&restarted, &after)?;
    let all = ctx.pods_of(Kind::Deployment, ns, "web")?;
    expect_eq(
        "the Deployment's pods",
        &all.iter().map(name_of).collect::<Vec<_>>(),
        &restarted.iter().map(name_of).collect(),
    )
}

/// 17. Sticky pins: a Deployment on `team/sticky:v1`; the tag moves and layerlink restarts (its
///     cache empty); scaling up gives the new pods the ReplicaSet's first digest, not the tag's
///     new one, and layerlink's log says the kept digest is behind the tag (controller-created
///     pods' warnings do not reach kubectl). A StatefulSet scaled up after the move keeps its
///     revision's digest too. A rollout restart then moves the Deployment to the new digest.
fn sticky_scale_up(ctx: &mut Ctx) -> Result<(), String> {
    ctx.install(vec![ctx.standard()])?;
    let ns = "s17-sticky";
    ctx.namespace(ns, &[(MODE, "enforce")])?;
    // A repository of its own: moving team/app:v1 would change what later scenarios expect.
    ctx.registry.push("team/sticky", "v1", &image("sticky-1"));
    let first = [("containers/app", ctx.pinned("team/sticky", "v1"))];
    let app = [("app", ctx.img("team/sticky:v1"))];
    ctx.kubectl.create(&workload(Kind::Deployment, ns, "web", 1, &[], &app))?;
    expect_pods_images(&ctx.wait_pods(Kind::Deployment, ns, "web", 1)?, &first)?;
    ctx.kubectl.create(&workload(Kind::StatefulSet, ns, "db", 1, &[], &app))?;
    expect_pods_images(&ctx.wait_pods(Kind::StatefulSet, ns, "db", 1)?, &first)?;

    let moved = [("containers/app", ctx.move_tag("team/sticky", "v1", "sticky-2")?)];
    ctx.layerlink.restart();
    expect_pods_images(&ctx.scale(Kind::Deployment, ns, "web", 3)?, &first)?;
    expect_pods_images(&ctx.scale(Kind::StatefulSet, ns, "db", 3)?, &first)?;
    // The first scale-up's check found the cache empty and refreshed it in the background: a
    // later pod of the revision is told the kept digest is behind.
    let (old, new) = (digest_of(&first[0].1), digest_of(&moved[0].1));
    let deadline = Instant::now() + POD_TIMEOUT;
    let mut replicas = 3;
    loop {
        let log = ctx.layerlink.log();
        if log.lines().any(|l| l.contains("\"sticky pins\"") && l.contains(&format!("{old}→{new}"))) {
            break;
        }
        ensure(Instant::now() < deadline, format!("no sticky pins log line with {old}→{new}:\n{}", tail(&log, 10)))?;
        replicas += 1;
        expect_pods_images(&ctx.scale(Kind::Deployment, ns, "web", replicas)?, &first)?;
    }
    let restarted = ctx.rollout_restart(ns, "web", replicas)?;
    expect_pods_images(&restarted, &moved)
}

/// The digest of a pinned reference (`…@sha256:…`).
fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').map_or(pinned, |(_, d)| d)
}

// ---------------------------------------------------------------------------------------------
// The shared context: cluster, registries, layerlink, the helper webhook, installed configs

struct Ctx {
    layerlink: Webhook,
    helper: Helper,
    registry: Registry,
    private: Registry,
    /// The index digest of team/multi:v1.
    multi_index: String,
    kubectl: Kubectl,
    /// The webhook configurations this test created (name → object as sent).
    installed: BTreeMap<String, Value>,
    generation: u32,
    cluster: Cluster,
    /// Declared last: removed after the cluster is down.
    _work: Option<tempfile::TempDir>,
}

impl Ctx {
    fn start() -> Ctx {
        let (work, work_dir) = match std::env::var_os("LAYERLINK_E2E_WORK") {
            Some(dir) => (None, PathBuf::from(dir)),
            None => {
                let tmp = tempfile::Builder::new().prefix("layerlink-e2e-").tempdir().unwrap();
                let path = tmp.path().to_path_buf();
                (Some(tmp), path)
            }
        };
        let cluster = Cluster::up(work_dir.join("cluster"));
        let kubectl = cluster.kubectl.clone();

        let registry = Registry::start();
        registry.push("team/app", "v1", &image("app"));
        registry.push("team/init", "v1", &image("init"));
        registry.push("team/sidecar", "v1", &image("sidecar"));
        let multi = Index::new(vec![image("multi"), image("multi-arm").platform("linux", "arm64")]);
        let multi_index = registry.push_index("team/multi", "v1", &multi).digest;
        let private = Registry::start_with(RegistryOptions {
            auth: Auth::Htpasswd { user: PULL_USER.into(), password: PULL_PASSWORD.into() },
            tls: false,
        });
        private.push("private/app", "v1", &image("private"));

        let helper = Helper::start(format!("{}/team/sidecar:v1", registry.host()));
        let probe_ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": PROBE_NS, "labels": {MODE: "off", PROBE_LABEL: "on"}}});
        kubectl.create(&probe_ns).expect("probe namespace");
        cluster.wait_default_token(PROBE_NS).expect("probe namespace");

        let layerlink = start_layerlink(&cluster, &registry, &private, "allow", "", None);
        Ctx {
            layerlink,
            helper,
            registry,
            private,
            multi_index,
            kubectl,
            installed: BTreeMap::new(),
            generation: 0,
            cluster,
            _work: work,
        }
    }

    /// A new `layerlink serve` for this cluster and these registries.
    fn start_layerlink(&self, on_error: &str, more: &str, certs: Option<&Path>) -> Webhook {
        start_layerlink(&self.cluster, &self.registry, &self.private, on_error, more, certs)
    }

    /// Restarts the shared layerlink if a scenario left it stopped.
    fn ensure_layerlink(&mut self) {
        if !self.layerlink.is_running() {
            self.layerlink = self.start_layerlink("allow", "", None);
        }
    }

    /// `127.0.0.1:PORT/<name>` in the test registry.
    fn img(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.host())
    }

    /// `127.0.0.1:PORT/<repo>:<tag>@<digest the registry serves>`: what layerlink must write.
    fn pinned(&self, repo: &str, tag: &str) -> String {
        let digest = self.registry.manifest_digest(repo, tag).unwrap_or_else(|| panic!("{repo}:{tag} not pushed"));
        format!("{}/{repo}:{tag}@{digest}", self.registry.host())
    }

    /// The layerlink configuration of most scenarios: the shared layerlink, enforce
    /// (failurePolicy Fail) in `enforce` namespaces, audit in `audit` namespaces.
    fn standard(&self) -> Value {
        self.layerlink_config(&self.layerlink, mode_is("enforce"), "Fail")
    }

    /// The configuration `layerlink`: an enforce entry (`/mutate`) with this selector and
    /// failure policy and an audit entry (`/audit`, namespaces labelled `audit`), both served by
    /// `webhook`, for pods and Deployments.
    fn layerlink_config(&self, webhook: &Webhook, enforce: Value, failure_policy: &str) -> Value {
        let ca = B64.encode(webhook.ca_pem());
        let rules = json!([
            {"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
            {"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]},
        ]);
        let mut enforce = webhook_entry(ENFORCE, &webhook.url("/mutate"), &ca, enforce, rules.clone());
        enforce["failurePolicy"] = json!(failure_policy);
        let mut audit = webhook_entry(AUDIT, &webhook.url("/audit"), &ca, mode_is("audit"), rules);
        audit["failurePolicy"] = json!("Ignore");
        // Audit writes Events, never for a dry run.
        audit["sideEffects"] = json!("NoneOnDryRun");
        webhook_configuration("layerlink", vec![enforce, audit])
    }

    /// `zz-sidecar` (sorted after `layerlink`, so called after it): the helper's injector.
    fn sidecar_config(&self) -> Value {
        let entry = webhook_entry(
            "inject.sidecar.e2e.layerlink.io",
            &self.helper.url("/inject"),
            &self.helper.ca_bundle,
            json!({"matchLabels": {SIDECAR_LABEL: "on"}}),
            pod_rules(),
        );
        webhook_configuration("zz-sidecar", vec![entry])
    }

    /// Makes `configs` the webhook configurations in the cluster (others this test created are
    /// deleted), then waits until the API server uses them.
    fn install(&mut self, configs: Vec<Value>) -> Result<(), String> {
        let wanted: BTreeMap<String, Value> =
            configs.into_iter().map(|c| (c["metadata"]["name"].as_str().unwrap_or("").to_string(), c)).collect();
        if wanted == self.installed {
            return Ok(());
        }
        let stale: Vec<String> = self.installed.keys().filter(|n| !wanted.contains_key(*n)).cloned().collect();
        for name in stale {
            self.installed.remove(&name);
            self.kubectl.ok(&["delete", "mutatingwebhookconfiguration", &name, "--ignore-not-found"], None)?;
        }
        for (name, config) in wanted {
            if self.installed.get(&name) != Some(&config) {
                self.installed.remove(&name);
                self.replace(&config)?;
                self.installed.insert(name, config);
            }
        }
        self.generation += 1;
        let generation = self.generation;
        let marker = webhook_entry(
            "mark.e2e.layerlink.io",
            &self.helper.url(&format!("/mark/{generation}")),
            &self.helper.ca_bundle,
            json!({"matchLabels": {PROBE_LABEL: "on"}}),
            pod_rules(),
        );
        self.replace(&webhook_configuration("e2e-marker", vec![marker]))?;
        let probe = pod(PROBE_NS, "probe", &[], &[("probe", "busybox:1.36".to_string())]);
        let mut last = String::new();
        let seen = wait_for(TAKE_EFFECT, || {
            let out =
                self.kubectl.run(&["create", "--dry-run=server", "-o", "json", "-f", "-"], Some(&probe.to_string()));
            if !out.ok {
                last = out.stderr;
                return None;
            }
            let returned: Value = serde_json::from_str(&out.stdout).ok()?;
            let stamped = returned["metadata"]["annotations"][GENERATION].as_str().map(str::to_string);
            last = format!("probe stamped {stamped:?}");
            (stamped.as_deref() == Some(generation.to_string().as_str())).then_some(())
        });
        seen.ok_or_else(|| {
            format!("webhook configuration generation {generation} not in effect after {TAKE_EFFECT:?}: {last}")
        })
    }

    /// Deletes the configuration of that name if present and creates this one.
    fn replace(&self, config: &Value) -> Result<(), String> {
        let name = config["metadata"]["name"].as_str().unwrap_or("");
        self.kubectl.ok(&["delete", "mutatingwebhookconfiguration", name, "--ignore-not-found"], None)?;
        self.kubectl.create(config).map(|_| ())
    }

    /// Creates a namespace with these labels, and waits until pods may be created there.
    fn namespace(&self, name: &str, labels: &[(&str, &str)]) -> Result<(), String> {
        let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
        self.kubectl.create(&ns)?;
        self.cluster.wait_default_token(name)
    }

    // --- Workloads: pods created by the controller-manager -----------------------------------

    /// The pods a workload's controller owns (a Deployment's: its ReplicaSets'), by name;
    /// terminating ones left out.
    fn pods_of(&self, kind: Kind, ns: &str, name: &str) -> Result<Vec<Value>, String> {
        let owners = match kind {
            Kind::Deployment => self.replica_sets(ns, name)?.iter().map(uid_of).collect(),
            _ => vec![uid_of(&self.kubectl.get(kind.resource(), ns, name)?)],
        };
        self.pods_owned_by(ns, &owners)
    }

    /// The live pods in `ns` whose controller is one of `owners` (uids), by name.
    fn pods_owned_by(&self, ns: &str, owners: &[String]) -> Result<Vec<Value>, String> {
        let mut pods: Vec<Value> = self
            .kubectl
            .get_list("pods", ns)?
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| controller_uid(p).is_some_and(|uid| owners.contains(&uid)))
            .collect();
        pods.sort_by_key(name_of);
        Ok(pods)
    }

    /// The ReplicaSets of a Deployment, oldest revision first.
    fn replica_sets(&self, ns: &str, deployment: &str) -> Result<Vec<Value>, String> {
        let owner = uid_of(&self.kubectl.get("deployment", ns, deployment)?);
        let mut sets: Vec<Value> = self
            .kubectl
            .get_list("replicasets", ns)?
            .into_iter()
            .filter(|rs| controller_uid(rs).as_deref() == Some(owner.as_str()))
            .collect();
        let revision = |rs: &Value| -> u64 {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)
        };
        sets.sort_by_key(revision);
        Ok(sets)
    }

    /// Waits until the workload has exactly `n` pods and returns them (by name).
    fn wait_pods(&self, kind: Kind, ns: &str, name: &str, n: usize) -> Result<Vec<Value>, String> {
        self.await_pods(&format!("{kind:?} {ns}/{name}"), ns, n, || self.pods_of(kind, ns, name))
    }

    /// Polls `list` until it returns exactly `n` pods (POD_TIMEOUT). The error names what it saw
    /// and the namespace's warning Events: a pod that admission refused shows up there as
    /// `FailedCreate` with the API server's message.
    fn await_pods(
        &self,
        what: &str,
        ns: &str,
        n: usize,
        list: impl Fn() -> Result<Vec<Value>, String>,
    ) -> Result<Vec<Value>, String> {
        let mut seen = Ok(Vec::new());
        let found = wait_for(POD_TIMEOUT, || {
            seen = list();
            seen.as_ref().ok().filter(|pods| pods.len() == n).cloned()
        });
        found.ok_or_else(|| {
            let seen = match seen {
                Ok(pods) => format!(
                    "{} pod(s) {:?}",
                    pods.len(),
                    pods.iter().map(|p| (name_of(p), images_at(p, "/spec"))).collect::<Vec<_>>()
                ),
                Err(e) => e,
            };
            let no_controllers =
                if self.cluster.controller_manager { "" } else { " (no kube-controller-manager runs)" };
            format!("{what}: want {n} pod(s) within {POD_TIMEOUT:?}{no_controllers}, saw {seen}; {}", self.warnings(ns))
        })
    }

    /// The namespace's last few warning Events, for error messages.
    fn warnings(&self, ns: &str) -> String {
        let events = match self.kubectl.get_list("events", ns) {
            Ok(events) => events,
            Err(e) => return format!("events: {e}"),
        };
        let mut warnings: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == "Warning")
            .map(|e| {
                let object = &e["involvedObject"];
                format!("{} {}: {} {}", object["kind"], object["name"], e["reason"], e["message"])
            })
            .collect();
        let recent = warnings.split_off(warnings.len().saturating_sub(5));
        if recent.is_empty() { "no warning events".into() } else { format!("warning events: {}", recent.join("; ")) }
    }

    /// `kubectl scale` (Deployments and StatefulSets), then waits for that many pods.
    fn scale(&self, kind: Kind, ns: &str, name: &str, replicas: usize) -> Result<Vec<Value>, String> {
        let target = format!("{}/{name}", kind.resource());
        self.kubectl.ok(&["-n", ns, "scale", &target, &format!("--replicas={replicas}")], None)?;
        self.wait_pods(kind, ns, name, replicas)
    }

    /// `kubectl rollout restart` of a Deployment; waits for its new ReplicaSet and for `n` pods
    /// of it, and returns those. (A [`workload`] Deployment recreates: the old pods are gone.)
    fn rollout_restart(&self, ns: &str, deployment: &str, n: usize) -> Result<Vec<Value>, String> {
        let before: Vec<String> = self.replica_sets(ns, deployment)?.iter().map(uid_of).collect();
        self.kubectl.ok(&["-n", ns, "rollout", "restart", &format!("deployment/{deployment}")], None)?;
        let new_set = wait_for(POD_TIMEOUT, || {
            self.replica_sets(ns, deployment).ok()?.into_iter().find(|rs| !before.contains(&uid_of(rs)))
        })
        .ok_or_else(|| {
            format!("no new ReplicaSet of {ns}/{deployment} within {POD_TIMEOUT:?}; {}", self.warnings(ns))
        })?;
        let what = format!("ReplicaSet {ns}/{} (restart of {deployment})", name_of(&new_set));
        self.await_pods(&what, ns, n, || self.pods_owned_by(ns, &[uid_of(&new_set)]))
    }

    /// Moves `repo:tag` in the test registry to a new image (made from `seed`) and returns the
    /// new pinned reference. A running layerlink keeps what it resolved for its cache ttl (10
    /// minutes by default): restart it (`ctx.layerlink.restart()`) or give it a short ttl.
    fn move_tag(&self, repo: &str, tag: &str, seed: &str) -> Result<String, String> {
        let before = self.registry.manifest_digest(repo, tag);
        self.registry.push(repo, tag, &image(seed));
        let after = self.pinned(repo, tag);
        match before {
            Some(digest) if after.ends_with(&digest) => Err(format!("{repo}:{tag} already was the image of {seed:?}")),
            _ => Ok(after),
        }
    }

    /// A Node object that DaemonSets place pods on. The API server taints every new Node
    /// `node.kubernetes.io/not-ready:NoSchedule` (TaintNodesByCondition admission), and with no
    /// kubelet or node-lifecycle controller nothing lifts it, so this removes it; no status,
    /// heartbeat Lease or allocatable is needed. Nodes are cluster-wide and outlive the
    /// scenario: every DaemonSet gets a pod on each.
    fn node(&self, name: &str) -> Result<(), String> {
        self.kubectl.create(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))?;
        self.kubectl.ok(&["taint", "node", name, "node.kubernetes.io/not-ready:NoSchedule-"], None).map(|_| ())
    }

    /// The annotations of the audit event of the object's creation (`ResponseComplete`).
    fn audit_annotations(
        &self,
        ns: &str,
        resource: &str,
        name: &str,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let log = self.cluster.dir.join("audit.log");
        wait_for(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|event| {
                let r = &event["objectRef"];
                (event["verb"] == "create"
                    && event["stage"] == "ResponseComplete"
                    && r["resource"] == resource
                    && r["namespace"] == ns
                    && r["name"] == name)
                    .then(|| event["annotations"].as_object().cloned().unwrap_or_default())
            })
        })
        .ok_or_else(|| format!("no audit event for the creation of {resource} {ns}/{name}"))
    }

    /// The mutating webhook calls the API server recorded for the object's creation.
    fn webhook_calls(&self, ns: &str, resource: &str, name: &str) -> Result<Vec<Call>, String> {
        let annotations = self.audit_annotations(ns, resource, name)?;
        let mut calls = Vec::new();
        for (key, value) in annotations {
            let Some(rest) = key.strip_prefix("mutation.webhook.admission.k8s.io/round_") else { continue };
            let round = rest.split('_').next().and_then(|r| r.parse().ok()).unwrap_or(u32::MAX);
            let v: Value = serde_json::from_str(value.as_str().unwrap_or("")).map_err(|e| format!("{key}: {e}"))?;
            calls.push(Call {
                round,
                webhook: v["webhook"].as_str().unwrap_or("").to_string(),
                mutated: v["mutated"] == true,
            });
        }
        Ok(calls)
    }
}

/// One mutating webhook call, from the audit annotation
/// `mutation.webhook.admission.k8s.io/round_R_index_I`.
#[derive(Debug)]
struct Call {
    round: u32,
    webhook: String,
    mutated: bool,
}

fn start_layerlink(
    cluster: &Cluster,
    registry: &Registry,
    private: &Registry,
    on_error: &str,
    more: &str,
    certs: Option<&Path>,
) -> Webhook {
    let config = format!(
        "registries:\n  - {{ host: \"{}\", plainHttp: true }}\n  - {{ host: \"{}\", plainHttp: true }}\n\
         resolve: {{ budget: 3s, onError: {on_error} }}\n{more}",
        registry.host(),
        private.host()
    );
    let kubeconfig = cluster.dir.join("kubeconfig");
    Webhook::start_with(&config, &[("KUBECONFIG", kubeconfig.to_str().unwrap())], certs)
}

fn mode_is(mode: &str) -> Value {
    json!({"matchLabels": {MODE: mode}})
}

fn pod_rules() -> Value {
    json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}])
}

fn webhook_entry(name: &str, url: &str, ca_bundle: &str, selector: Value, rules: Value) -> Value {
    json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "reinvocationPolicy": "IfNeeded",
        "timeoutSeconds": 5,
        "namespaceSelector": selector,
        "rules": rules,
    })
}

fn webhook_configuration(name: &str, webhooks: Vec<Value>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": webhooks,
    })
}

fn containers(list: &[(&str, String)]) -> Value {
    list.iter().map(|(name, image)| json!({"name": name, "image": image})).collect()
}

fn pod(ns: &str, name: &str, init: &[(&str, String)], main: &[(&str, String)]) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "annotations": {"e2e.layerlink.io/note": "kept"}},
        "spec": {"containers": containers(main)},
    });
    if !init.is_empty() {
        pod["spec"]["initContainers"] = containers(init);
    }
    pod
}

/// The workload kinds whose controllers run in the e2e cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployment,
    StatefulSet,
    Job,
    DaemonSet,
}

impl Kind {
    /// The kubectl resource name.
    fn resource(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::Job => "job",
            Kind::DaemonSet => "daemonset",
        }
    }
}

/// A workload whose pods (labelled `app: <name>`) have these containers: `replicas` pods (a
/// Job: its parallelism and completions; a DaemonSet: one pod per Node, `replicas` unused).
/// Shaped so that every pod is created although none ever runs (no scheduler, no kubelet): a
/// Deployment recreates (a rolling update waits for new pods to become available, so it would
/// stop after its surge), a StatefulSet starts its pods in parallel (OrderedReady waits for pod 0
/// to be Ready).
fn workload(
    kind: Kind,
    ns: &str,
    name: &str,
    replicas: u32,
    init: &[(&str, String)],
    main: &[(&str, String)],
) -> Value {
    let mut template = json!({"metadata": {"labels": {"app": name}}, "spec": {"containers": containers(main)}});
    if !init.is_empty() {
        template["spec"]["initContainers"] = containers(init);
    }
    let selector = json!({"matchLabels": {"app": name}});
    let (api_version, spec) = match kind {
        Kind::Deployment => (
            "apps/v1",
            json!({"replicas": replicas, "selector": selector, "strategy": {"type": "Recreate"}, "template": template}),
        ),
        Kind::StatefulSet => (
            "apps/v1",
            json!({"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel", "selector": selector, "template": template}),
        ),
        Kind::Job => {
            template["spec"]["restartPolicy"] = json!("Never");
            ("batch/v1", json!({"parallelism": replicas, "completions": replicas, "template": template}))
        }
        Kind::DaemonSet => ("apps/v1", json!({"selector": selector, "template": template})),
    };
    json!({
        "apiVersion": api_version,
        "kind": format!("{kind:?}"),
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or("?").to_string()
}

fn uid_of(object: &Value) -> String {
    object["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// The uid of the object's controller (the ownerReference with `controller: true`).
fn controller_uid(object: &Value) -> Option<String> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(str::to_string)
}

/// `initContainers/<name>` and `containers/<name>` → image, under the pod spec at `spec`.
fn images_at(object: &Value, spec: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for list in ["initContainers", "containers"] {
        for c in object.pointer(&format!("{spec}/{list}")).and_then(Value::as_array).into_iter().flatten() {
            out.insert(
                format!("{list}/{}", c["name"].as_str().unwrap_or("?")),
                c["image"].as_str().unwrap_or("").to_string(),
            );
        }
    }
    out
}

fn expect_images(object: &Value, spec: &str, want: &[(&str, String)]) -> Result<(), String> {
    let want: BTreeMap<String, String> = want.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    expect_eq("images", &images_at(object, spec), &want)
}

/// Every pod has these images (see [`expect_images`]); the error names the pod.
fn expect_pods_images(pods: &[Value], want: &[(&str, String)]) -> Result<(), String> {
    for pod in pods {
        expect_images(pod, "/spec", want).map_err(|e| format!("pod {}: {e}", name_of(pod)))?;
    }
    Ok(())
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: &T, want: &T) -> Result<(), String> {
    ensure(got == want, format!("{what}: got {got:?}, want {want:?}"))
}

fn ensure(condition: bool, why: String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(why) }
}

fn expect_not_found(kubectl: &Kubectl, resource: &str, ns: &str, name: &str) -> Result<(), String> {
    let out = kubectl.run(&["-n", ns, "get", resource, name, "-o", "name"], None);
    ensure(
        !out.ok && out.stderr.contains("NotFound"),
        format!("{resource} {ns}/{name} should not exist: {} {}", out.stdout.trim(), out.stderr.trim()),
    )
}

/// Polls `f` every 200ms until it returns Some or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs a command; its stdout on success, else an error with its stderr.
/// stdout and stderr of a command that must succeed.
fn run_both(cmd: &mut Command) -> Result<(String, String), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    if out.status.success() { Ok((stdout, stderr)) } else { Err(format!("{cmd:?}: {}: {stderr}", out.status)) }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    run_both(cmd).map(|(stdout, _)| stdout)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// kubectl and the cluster

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

#[derive(Clone)]
struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl against the test cluster, with `stdin` as its input.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl (must be on PATH)");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).expect("kubectl stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl; an error with its stderr if it fails.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> Result<Out, String> {
        let out = self.run(args, stdin);
        if out.ok { Ok(out) } else { Err(format!("kubectl {}: {}", args.join(" "), out.stderr.trim())) }
    }

    /// `kubectl create -f -` of one object, success or not.
    fn create_any(&self, object: &Value) -> Out {
        self.run(&["create", "-f", "-"], Some(&object.to_string()))
    }

    /// `kubectl create -f -` of one object, which must succeed.
    fn create(&self, object: &Value) -> Result<Out, String> {
        let out = self.create_any(object);
        if out.ok {
            Ok(out)
        } else {
            Err(format!("kubectl create {} {}: {}", object["kind"], object["metadata"]["name"], out.stderr.trim()))
        }
    }

    /// The stored object, as `kubectl get -o json` shows it.
    fn get(&self, resource: &str, ns: &str, name: &str) -> Result<Value, String> {
        let out = self.ok(&["-n", ns, "get", resource, name, "-o", "json"], None)?;
        serde_json::from_str(&out.stdout).map_err(|e| format!("kubectl get {resource} {ns}/{name}: {e}"))
    }

    fn get_list(&self, resource: &str, ns: &str) -> Result<Vec<Value>, String> {
        let out = self.ok(&["-n", ns, "get", resource, "-o", "json"], None)?;
        let list: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("kubectl get {resource}: {e}"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }
}

/// etcd, kube-apiserver and kube-controller-manager started by `tests/e2e/cluster.sh up DIR`;
/// Drop (also on panic) runs `cluster.sh down DIR`, which stops exactly those processes.
struct Cluster {
    dir: PathBuf,
    kubectl: Kubectl,
    /// Whether a kube-controller-manager runs (not with LAYERLINK_E2E_CONTROLLER_MANAGER=0).
    controller_manager: bool,
}

impl Cluster {
    fn up(dir: PathBuf) -> Cluster {
        // The guard exists before `up` starts anything.
        let mut cluster =
            Cluster { kubectl: Kubectl { kubeconfig: dir.join("kubeconfig") }, dir, controller_manager: false };
        let status = Command::new("bash")
            .arg(script("cluster.sh"))
            .arg("up")
            .arg(&cluster.dir)
            .stdin(Stdio::null())
            .status()
            .expect("run tests/e2e/cluster.sh");
        assert!(status.success(), "cluster.sh up {} failed ({status}); see the logs above", cluster.dir.display());
        cluster.controller_manager = cluster.dir.join("kube-controller-manager.pid").exists();
        cluster
    }

    /// Waits until the ServiceAccount `default` of the namespace has its token Secret: until
    /// then, ServiceAccount admission refuses every pod there. Nothing to wait for without the
    /// controller-manager (that admission plugin is off then).
    fn wait_default_token(&self, ns: &str) -> Result<(), String> {
        if !self.controller_manager {
            return Ok(());
        }
        let args = ["-n", ns, "get", "serviceaccount", "default", "-o", "jsonpath={.secrets[*].name}"];
        wait_for(POD_TIMEOUT, || {
            let out = self.kubectl.run(&args, None);
            (out.ok && !out.stdout.trim().is_empty()).then_some(())
        })
        .ok_or_else(|| format!("the ServiceAccount {ns}/default has no token Secret after {POD_TIMEOUT:?}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let status =
            Command::new("bash").arg(script("cluster.sh")).arg("down").arg(&self.dir).stdin(Stdio::null()).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("cluster.sh down {} failed: {status:?}", self.dir.display());
        }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e").join(name)
}

// ---------------------------------------------------------------------------------------------
// The helper webhook: HTTPS (axum-server, rustls with ring, certificates from `layerlink certs`)
// on its own thread and runtime.
//
//   POST /inject       adds the init container `injected` (an image with a tag) unless present,
//                      as a sidecar injector does: the second webhook of scenario 4.
//   POST /mark/{gen}   stamps the annotation e2e.layerlink.io/generation: gen (the marker).

struct Helper {
    addr: SocketAddr,
    ca_bundle: String,
    handle: axum_server::Handle<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

struct HelperState {
    inject_image: String,
}

impl Helper {
    fn start(inject_image: String) -> Helper {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let ca_bundle = B64.encode(std::fs::read(dir.path().join("ca.crt")).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let state = Arc::new(HelperState { inject_image });
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let serve_handle = handle.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let tls = layerlink::server::tls::load(&cert, &key).await.expect("helper TLS");
                let app = axum::Router::new()
                    .route("/inject", post(inject))
                    .route("/mark/{generation}", post(mark))
                    .with_state(state);
                axum_server::from_tcp_rustls(listener, tls)
                    .expect("helper listener")
                    .handle(serve_handle)
                    .serve(app.into_make_service())
                    .await
                    .expect("helper webhook");
            });
        });
        Helper { addr, ca_bundle, handle, thread: Some(thread), _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(review: &Value, ops: Vec<Value>) -> Json<Value> {
    let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
    if !ops.is_empty() {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(B64.encode(Value::Array(ops).to_string()));
    }
    Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

async fn inject(State(state): State<Arc<HelperState>>, Json(review): Json<Value>) -> Json<Value> {
    let init = &review["request"]["object"]["spec"]["initContainers"];
    let container = json!({"name": "injected", "image": state.inject_image});
    let ops = match init.as_array() {
        Some(list) if list.iter().any(|c| c["name"] == "injected") => vec![],
        Some(_) => vec![json!({"op": "add", "path": "/spec/initContainers/-", "value": container})],
        None => vec![json!({"op": "add", "path": "/spec/initContainers", "value": [container]})],
    };
    answer(&review, ops)
}

async fn mark(axum::extract::Path(generation): axum::extract::Path<String>, Json(review): Json<Value>) -> Json<Value> {
    let ops = if review["request"]["object"]["metadata"]["annotations"].is_object() {
        vec![json!({"op": "add", "path": "/metadata/annotations/e2e.layerlink.io~1generation", "value": generation})]
    } else {
        vec![json!({"op": "add", "path": "/metadata/annotations", "value": {GENERATION: generation}})]
    };
    answer(&review, ops)
}
