//! Shared-base pre-pull against a real registry: detection (layers, OCI base annotations, config
//! globs), injection through `Prepull::ops`, the deadline (first look in the background), the
//! `layerlink layers` report and `layerlink prepuller` rendering from the real binary, and the
//! static `layerlink-noop` in an empty chroot.

mod support;

use support::engine;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::Duration,
};

use layerlink::{
    Engine,
    config::Platform,
    engine::Deadline,
    patch,
    prepull::{
        Prepull,
        detect::{App, BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, Detector, PinnedBase, Verdict},
    },
    reference::Reference,
    registry::auth::Keychain,
    sites::{self, Shape},
};
use serde_json::{Value, json};
use support::{
    Proxy, Pushed, Registry,
    oci::{self, Image, Index, layer, random_layer},
};

const LAYER: usize = 24 * 1024;

/// The test images, pushed to one registry.
struct World {
    registry: Registry,
    base: Pushed,
    app_a: Pushed,
    app_b: Pushed,
    other: Pushed,
    /// Multi-arch index: amd64 built on `base`, arm64 unrelated.
    multi: Pushed,
    /// Multi-arch base (index).
    mbase: Pushed,
    /// Built on mbase's amd64 image.
    on_mbase: Pushed,
    /// Unrelated layers, annotated with base's digest and name.
    annotated: Pushed,
    /// Unrelated layers, annotated with mbase's amd64 platform manifest digest.
    annotated_platform: Pushed,
    /// Unrelated layers, annotated with base's name only.
    named: Pushed,
    tools: Pushed,
}

impl World {
    fn start() -> World {
        layerlink::install_crypto_provider();
        let registry = Registry::start();
        let host = registry.host();
        let (base_image, apps) = oci::family("pp", 3, LAYER, 2);
        let base = registry.push("base", "1", &base_image);
        let app_a = registry.push("app-a", "1", &apps[0]);
        let app_b = registry.push("app-b", "1", &apps[1]);
        let unrelated = |seed: &str| Image::new(vec![random_layer(seed, LAYER), layer(&[("x", seed.as_bytes())])]);
        let other = registry.push("other", "1", &unrelated("other"));
        let multi = registry.push_index(
            "multi",
            "1",
            &Index::new(vec![
                Image::on(&base_image, vec![layer(&[("app/multi", b"amd64")])]).platform("linux", "amd64"),
                unrelated("multi-arm64").platform("linux", "arm64"),
            ]),
        );
        let mbase_amd64 = Image::new(vec![random_layer("mbase-amd64", LAYER)]);
        let mbase = registry.push_index(
            "mbase",
            "1",
            &Index::new(vec![
                mbase_amd64.clone().platform("linux", "amd64"),
                Image::new(vec![random_layer("mbase-arm64", LAYER)]).platform("linux", "arm64"),
            ]),
        );
        let on_mbase = registry.push("on-mbase", "1", &Image::on(&mbase_amd64, vec![layer(&[("app/on", b"mbase")])]));
        let annotated = registry.push(
            "annotated",
            "1",
            &unrelated("annotated")
                .with_annotation(BASE_DIGEST_ANNOTATION, &base.digest)
                .with_annotation(BASE_NAME_ANNOTATION, format!("{host}/base:1")),
        );
        assert_eq!(mbase.manifests[0].arch, "amd64");
        let annotated_platform = registry.push(
            "annotated-platform",
            "1",
            &unrelated("annotated-platform").with_annotation(BASE_DIGEST_ANNOTATION, &mbase.manifests[0].digest),
        );
        let named = registry.push(
            "named",
            "1",
            &unrelated("named").with_annotation(BASE_NAME_ANNOTATION, format!("{host}/base:1")),
        );
        let tools = registry.push("layerlink", "1", &Image::new(vec![layer(&[("usr/local/bin/layerlink-noop", b"")])]));
        World {
            registry,
            base,
            app_a,
            app_b,
            other,
            multi,
            mbase,
            on_mbase,
            annotated,
            annotated_platform,
            named,
            tools,
        }
    }

    fn host(&self) -> String {
        self.registry.host()
    }
}

/// A config naming the test registry (and a proxy in front of it, if any).
fn config_text(hosts: &[&str], image_host: &str, prepull: &str) -> String {
    let registries: Vec<String> = hosts.iter().map(|h| format!("{{host: \"{h}\", plainHttp: true}}")).collect();
    format!(
        "registries: [{}]\nprepull:\n  enabled: true\n  toolsImage: \"{image_host}/layerlink:1\"\n{prepull}",
        registries.join(", ")
    )
}

fn bases_yaml(host: &str, detect: &str, strategy: &str) -> String {
    format!(
        "  detect: {detect}\n  strategy: {strategy}\n  bases:\n    - image: \"{host}/base:1\"\n      match: [\"{host}/app-*\"]\n    - image: \"{host}/mbase:1\"\n      match: [\"{host}/on-mbase*\"]\n"
    )
}

fn generous() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

fn pod(images: &[String]) -> Value {
    let containers: Vec<Value> =
        images.iter().enumerate().map(|(i, image)| json!({"name": format!("c{i}"), "image": image})).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": containers},
    })
}

/// Plan (pin) the pod's images, then ask pre-pull for its ops; returns the patched pod.
async fn admit(engine: &Engine, prepull: &Prepull, pod: &Value, deadline: Deadline) -> (Value, usize) {
    let keychain = Arc::new(Keychain::default());
    let plan = engine.plan(sites::find(Shape::Pod, pod), &keychain, generous()).await;
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let ops = prepull.ops(pod, &plan.pins, &keychain, deadline).await;
    let n = ops.len();
    let mut all = plan.patch();
    all.0.extend(ops);
    (patch::apply(pod, &all).expect("the patch applies"), n)
}

fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .map(|a| a.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn app(host: &str, repo: &str, pushed: &Pushed) -> App {
    let written = format!("{host}/{repo}:1");
    App { reference: Reference::parse(&written).unwrap(), written, digest: Some(pushed.digest.clone()) }
}

fn base(host: &str, repo: &str, pushed: &Pushed) -> PinnedBase {
    PinnedBase { reference: Reference::parse(&format!("{host}/{repo}:1")).unwrap(), digest: pushed.digest.clone() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_by_layers_and_by_oci_base_annotations() {
    let w = World::start();
    let host = w.host();
    let engine = engine(&config_text(&[&host], &host, &bases_yaml(&host, "layers", "initContainer")));
    let detector = Detector::new(Platform::default(), engine.resolver.registries().clone());
    let keychain = Keychain::default();
    let base_b = base(&host, "base", &w.base);
    let mbase_b = base(&host, "mbase", &w.mbase);
    let cases: Vec<(&str, &Pushed, bool, bool)> = vec![
        // (repo, pushed, built on base, built on mbase)
        ("app-a", &w.app_a, true, false),
        ("app-b", &w.app_b, true, false),
        ("other", &w.other, false, false),
        // Index: the linux/amd64 manifest is built on base.
        ("multi", &w.multi, true, false),
        // Base is a multi-arch index: its amd64 manifest's layers are the prefix.
        ("on-mbase", &w.on_mbase, false, true),
        // OCI annotations, no shared layers: the base's digest (+ name).
        ("annotated", &w.annotated, true, false),
        // The base's platform manifest digest (mbase is an index).
        ("annotated-platform", &w.annotated_platform, false, true),
        // base.name alone, same repository and tag.
        ("named", &w.named, true, false),
        // A base is built on itself.
        ("base", &w.base, true, false),
    ];
    for (repo, pushed, on_base, on_mbase) in &cases {
        let a = app(&host, repo, pushed);
        let deadline = generous().at;
        let want = |yes: bool| if yes { Verdict::Yes } else { Verdict::No };
        assert_eq!(detector.verdict(&a, &base_b, &keychain, deadline).await, want(*on_base), "{repo} on base");
        assert_eq!(detector.verdict(&a, &mbase_b, &keychain, deadline).await, want(*on_mbase), "{repo} on mbase");
        // Cached by digests, without expiry.
        assert_eq!(detector.cached(&pushed.digest, &w.base.digest).await, Some(*on_base), "{repo}");
    }
    // The arm64 manifest of `multi` is not built on base: the platform is honoured.
    let arm = Detector::new(
        Platform { os: "linux".into(), architecture: "arm64".into() },
        engine.resolver.registries().clone(),
    );
    assert_eq!(arm.verdict(&app(&host, "multi", &w.multi), &base_b, &keychain, generous().at).await, Verdict::No);
    assert_eq!(arm.verdict(&app(&host, "app-a", &w.app_a), &base_b, &keychain, generous().at).await, Verdict::Yes);
    // A platform the index lacks is "unknown", not a wrong answer.
    let s390 = Detector::new(
        Platform { os: "linux".into(), architecture: "s390x".into() },
        engine.resolver.registries().clone(),
    );
    let v = s390.verdict(&app(&host, "multi", &w.multi), &base_b, &keychain, generous().at).await;
    assert!(matches!(v, Verdict::Unknown(ref why) if why.contains("linux/s390x")), "{v:?}");
    // The layer lists detection read are the ones pushed.
    let layers =
        detector.layers(&Reference::parse(&format!("{host}/multi:1")).unwrap(), &w.multi.digest, &keychain).await;
    let layers = layers.unwrap();
    assert_eq!(layers.manifest_digest, w.multi.manifests[0].digest);
    let sizes: Vec<(String, u64)> = layers.layers.iter().map(|l| (l.digest.clone(), l.size)).collect();
    assert_eq!(sizes, w.multi.manifests[0].layers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_inject_the_detected_bases_pinned() {
    let w = World::start();
    let host = w.host();
    let keychain = Arc::new(Keychain::default());
    for detect in ["layers", "config"] {
        let engine = engine(&config_text(&[&host], &host, &bases_yaml(&host, detect, "initContainer")));
        let prepull = Prepull::new(&engine.config, engine.resolver.clone());
        let base_pinned = format!("{host}/base:1@{}", w.base.digest);
        let mbase_pinned = format!("{host}/mbase:1@{}", w.mbase.digest);
        let tools_pinned = format!("{host}/layerlink:1@{}", w.tools.digest);

        // app-a and an unrelated image: base only.
        let (out, n) =
            admit(&engine, &prepull, &pod(&[format!("{host}/app-a:1"), format!("{host}/other:1")]), generous()).await;
        assert_eq!(n, 3, "{detect}: volumes, initContainers and annotations created, one op each");
        assert_eq!(init_names(&out), ["layerlink-tools", "layerlink-prepull-base"], "{detect}");
        let init = out["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["image"], tools_pinned);
        assert_eq!(init[1]["image"], base_pinned);
        assert_eq!(init[1]["command"], json!(["/layerlink-tools/noop"]));
        assert_eq!(init[1]["securityContext"]["runAsUser"], 65532);
        assert_eq!(out["metadata"]["annotations"]["layerlink.io/prepull"], base_pinned);
        // The app images were pinned by the plan in the same patch.
        assert_eq!(out["spec"]["containers"][0]["image"], format!("{host}/app-a:1@{}", w.app_a.digest));
        // Reinvocation on our output: nothing more.
        let keychain2 = keychain.clone();
        assert!(prepull.ops(&out, &[], &keychain2, generous()).await.is_empty(), "{detect}");

        // Two bases at once, sorted.
        let (out, _) =
            admit(&engine, &prepull, &pod(&[format!("{host}/on-mbase:1"), format!("{host}/app-b:1")]), generous())
                .await;
        assert_eq!(init_names(&out), ["layerlink-tools", "layerlink-prepull-base", "layerlink-prepull-mbase"]);
        let mut want = [base_pinned.clone(), mbase_pinned.clone()];
        want.sort();
        assert_eq!(out["metadata"]["annotations"]["layerlink.io/prepull"], want.join(","));

        // Nothing shared: no ops.
        let (_, n) = admit(&engine, &prepull, &pod(&[format!("{host}/other:1")]), generous()).await;
        assert_eq!(n, 0, "{detect}");
        // The pod already runs the base: no duplicate.
        let (_, n) =
            admit(&engine, &prepull, &pod(&[format!("{host}/base:1"), format!("{host}/app-a:1")]), generous()).await;
        assert_eq!(n, 0, "{detect}");
    }
    // Where detection modes differ: `multi` and `annotated` match no glob, but are built on base.
    for (detect, expect) in [("layers", true), ("config", false)] {
        let engine = engine(&config_text(&[&host], &host, &bases_yaml(&host, detect, "initContainer")));
        let prepull = Prepull::new(&engine.config, engine.resolver.clone());
        for repo in ["multi", "annotated"] {
            let (out, _) = admit(&engine, &prepull, &pod(&[format!("{host}/{repo}:1")]), generous()).await;
            assert_eq!(init_names(&out).contains(&"layerlink-prepull-base".to_string()), expect, "{detect} {repo}");
        }
    }
    // imageVolume: a volume, no containers.
    let engine = engine(&config_text(&[&host], &host, &bases_yaml(&host, "layers", "imageVolume")));
    let prepull = Prepull::new(&engine.config, engine.resolver.clone());
    let (out, _) = admit(&engine, &prepull, &pod(&[format!("{host}/app-a:1")]), generous()).await;
    assert!(out["spec"].get("initContainers").is_none());
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "layerlink-base-base", "image": {"reference": format!("{host}/base:1@{}", w.base.digest), "pullPolicy": "IfNotPresent"}}])
    );
}

/// The first look at a new image does not hold admission past the deadline; it finishes in the
/// background and the next pod gets the injection from the caches, without registry traffic.
#[tokio::test(flavor = "current_thread")]
async fn first_look_finishes_in_the_background() {
    let w = World::start();
    let proxy = Proxy::start(w.registry.addr());
    let host = proxy.host();
    let text = config_text(&[&host, &w.host()], &host, &bases_yaml(&host, "layers", "initContainer"));
    let engine = engine(&text);
    let prepull = Prepull::new(&engine.config, engine.resolver.clone());
    let pod = pod(&[format!("{host}/app-a:1")]);
    // A deadline already passed: on this single-threaded runtime the detection task cannot have
    // run before the deadline check, so the answer is "not yet" for certain.
    let (_, n) = admit(&engine, &prepull, &pod, Deadline::after(Duration::ZERO)).await;
    assert_eq!(n, 0, "no injection when detection is not done by the deadline");
    let mut injected = None;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (out, n) = admit(&engine, &prepull, &pod, Deadline::after(Duration::ZERO)).await;
        if n > 0 {
            injected = Some(out);
            break;
        }
    }
    let out = injected.expect("the background detection filled the caches");
    assert_eq!(init_names(&out), ["layerlink-tools", "layerlink-prepull-base"]);
    // Let the other base's look (app-a is not on mbase) finish too.
    for _ in 0..400 {
        if prepull.detector().cached(&w.app_a.digest, &w.mbase.digest).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(prepull.detector().cached(&w.app_a.digest, &w.mbase.digest).await, Some(false));
    // Everything is cached now: another pod costs no registry request at all.
    proxy.reset_counts();
    let (_, n) = admit(&engine, &prepull, &pod, Deadline::after(Duration::ZERO)).await;
    assert_eq!(n, 3);
    assert!(proxy.requests().is_empty(), "cached detection and pins: {:?}", proxy.requests());
    assert_eq!(
        prepull.detector().cached(&w.app_a.digest, &w.base.digest).await,
        Some(true),
        "verdict cached by (app digest, base digest)"
    );
}

fn layerlink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerlink"))
        .args(args)
        .env("LAYERLINK_LOG", "error")
        .output()
        .expect("run layerlink")
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn layers_report_counts_the_shared_bytes() {
    let w = World::start();
    let host = w.host();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("registries: [{{host: \"{host}\", plainHttp: true}}]\n"));
    let images: Vec<String> =
        ["base", "app-a", "app-b", "other", "multi"].iter().map(|r| format!("{host}/{r}:1")).collect();
    let mut args = vec!["layers", "--config", config.to_str().unwrap(), "-o", "json", "--suggest-bases"];
    args.extend(images.iter().map(String::as_str));
    let out = layerlink(&args);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");

    let base_bytes = w.base.total_layer_bytes();
    let base_layers = w.base.layers.len() as u64;
    assert!(base_bytes >= 3 * LAYER as u64, "random layers do not compress: {base_bytes}");
    let multi_amd64 = &w.multi.manifests[0].layers;
    // Each image's layers are the pushed ones (multi: its linux/amd64 manifest).
    for (i, pushed) in
        [&w.base.layers, &w.app_a.layers, &w.app_b.layers, &w.other.layers, multi_amd64].iter().enumerate()
    {
        let got: Vec<(String, u64)> = report["images"][i]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["digest"].as_str().unwrap().to_string(), l["size"].as_u64().unwrap()))
            .collect();
        assert_eq!(&got, *pushed, "{}", images[i]);
    }
    assert_eq!(report["images"][4]["digest"], w.multi.digest);
    assert_eq!(report["images"][4]["manifestDigest"], w.multi.manifests[0].digest);
    let pair = |a: &str, b: &str| {
        report["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["a"] == format!("{host}/{a}:1") && p["b"] == format!("{host}/{b}:1"))
            .unwrap_or_else(|| panic!("pair {a} {b}"))
            .clone()
    };
    for (a, b) in [("app-a", "app-b"), ("base", "app-a"), ("app-b", "multi"), ("base", "multi")] {
        assert_eq!(pair(a, b)["sharedBytes"], base_bytes, "{a} {b}");
        assert_eq!(pair(a, b)["sharedLayers"], base_layers, "{a} {b}");
    }
    for (a, b) in [("app-a", "other"), ("other", "multi")] {
        assert_eq!(pair(a, b)["sharedBytes"], 0, "{a} {b}");
    }
    assert_eq!(report["pairs"].as_array().unwrap().len(), 10);

    // The base is the one candidate: four images on it, three copies saved.
    let candidates = report["suggestedBases"].as_array().unwrap();
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    let c = &candidates[0];
    let on_base: Vec<String> =
        c["images"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
    assert_eq!(on_base, [images[0].clone(), images[1].clone(), images[2].clone(), images[4].clone()]);
    assert_eq!(c["bytes"], base_bytes);
    assert_eq!(c["savedBytes"], 3 * base_bytes);
    let prefix: Vec<&str> = c["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let base_digests: Vec<&str> = w.base.layers.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(prefix, base_digests);

    let without: u64 = [&w.base, &w.app_a, &w.app_b, &w.other].iter().map(|p| p.total_layer_bytes()).sum::<u64>()
        + multi_amd64.iter().map(|(_, s)| s).sum::<u64>();
    let mut seen = BTreeSet::new();
    let with: u64 = [&w.base.layers, &w.app_a.layers, &w.app_b.layers, &w.other.layers, multi_amd64]
        .iter()
        .flat_map(|l| l.iter())
        .filter(|(d, _)| seen.insert(d.clone()))
        .map(|(_, s)| s)
        .sum();
    assert_eq!(report["summary"]["bytesWithoutSharing"], without);
    assert_eq!(report["summary"]["bytesWithSharing"], with);
    assert_eq!(report["summary"]["savedBytes"], without - with);
    assert_eq!(without - with, 3 * base_bytes);

    // The table says the same.
    let out = layerlink(&["layers", "--config", config.to_str().unwrap(), &images[1], &images[2]]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("{} layers  ", base_layers)) && text.contains(&format!("({base_bytes})")), "{text}");

    // An image that does not exist: reported, exit 1, the others still compared.
    let missing = format!("{host}/missing:1");
    let out = layerlink(&["layers", "--config", config.to_str().unwrap(), "-o", "json", &images[1], &missing]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["errors"][&missing].as_str().unwrap().contains("not found"), "{report}");
    assert_eq!(report["images"].as_array().unwrap().len(), 1);
}

#[test]
fn prepuller_renders_pinned_bases() {
    let w = World::start();
    let host = w.host();
    let dir = tempfile::tempdir().unwrap();
    for strategy in ["initContainer", "imageVolume"] {
        let config = write_config(dir.path(), &config_text(&[&host], &host, &bases_yaml(&host, "layers", strategy)));
        let out = layerlink(&[
            "prepuller",
            "--config",
            config.to_str().unwrap(),
            "--toleration",
            "dedicated=build:NoSchedule",
        ]);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let yaml = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("YAML documents");
        assert_eq!(docs.len(), 2, "{yaml}");
        assert_eq!(docs[0]["kind"], "PriorityClass");
        assert_eq!(docs[0]["value"], -10);
        let ds = &docs[1];
        assert_eq!(ds["kind"], "DaemonSet");
        assert_eq!(ds["metadata"]["namespace"], "layerlink-system");
        assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "10%");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["priorityClassName"], "layerlink-prepull");
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "dedicated", "operator": "Equal", "value": "build", "effect": "NoSchedule"}])
        );
        let base_pinned = format!("{host}/base:1@{}", w.base.digest);
        let mbase_pinned = format!("{host}/mbase:1@{}", w.mbase.digest);
        let tools_pinned = format!("{host}/layerlink:1@{}", w.tools.digest);
        assert_eq!(spec["containers"][0]["image"], tools_pinned);
        assert_eq!(spec["containers"][0]["command"], json!(["/usr/local/bin/layerlink-noop", "--sleep"]));
        if strategy == "initContainer" {
            let images: Vec<&str> =
                spec["initContainers"].as_array().unwrap().iter().map(|c| c["image"].as_str().unwrap()).collect();
            assert_eq!(images, [tools_pinned.as_str(), base_pinned.as_str(), mbase_pinned.as_str()]);
        } else {
            assert!(spec.get("initContainers").is_none());
            let images: Vec<&str> =
                spec["volumes"].as_array().unwrap().iter().map(|v| v["image"]["reference"].as_str().unwrap()).collect();
            assert_eq!(images, [base_pinned.as_str(), mbase_pinned.as_str()]);
        }
    }
    // An existing PriorityClass and another namespace.
    let config = write_config(dir.path(), &config_text(&[&host], &host, &bases_yaml(&host, "config", "initContainer")));
    let out = layerlink(&[
        "prepuller",
        "--config",
        config.to_str().unwrap(),
        "--namespace",
        "warmers",
        "--priority-class",
        "low",
        "--tolerate-all",
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["metadata"]["namespace"], "warmers");
    assert_eq!(docs[0]["spec"]["template"]["spec"]["priorityClassName"], "low");
    assert_eq!(docs[0]["spec"]["template"]["spec"]["tolerations"], json!([{"operator": "Exists"}]));
    // A base that cannot be pinned: nothing rendered, exit 1.
    let config =
        write_config(dir.path(), &config_text(&[&host], &host, &format!("  bases: [{{image: \"{host}/nope:1\"}}]\n")));
    let out = layerlink(&["prepuller", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"), "{}", String::from_utf8_lossy(&out.stderr));
}

// ---- layerlink-noop ----------------------------------------------------------------------

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Builds `src/bin/layerlink-noop.rs` as the Dockerfile does (`+crt-static`), with rustc alone:
/// the binary has no dependencies, and a nested cargo would wait on this test run's lock.
fn build_static_noop(out_dir: &Path) -> PathBuf {
    let out = out_dir.join("layerlink-noop");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "-O", "-C", "target-feature=+crt-static", "-C", "strip=symbols", "-o"])
        .arg(&out)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/layerlink-noop.rs"))
        .status()
        .expect("run rustc");
    assert!(status.success(), "rustc failed to build layerlink-noop statically");
    out
}

/// The program headers' types (ELF64 little-endian).
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect()
}

const PT_INTERP: u32 = 3;

#[test]
fn noop_is_static_and_runs_in_an_empty_chroot() {
    use std::os::unix::fs::PermissionsExt;
    assert!(is_root(), "this test needs root (it runs the no-op with chroot); run the tests as root");
    let work = tempfile::tempdir().unwrap();
    let noop = build_static_noop(work.path());
    let elf = std::fs::read(&noop).unwrap();
    let types = program_header_types(&elf);
    assert!(!types.is_empty());
    assert!(!types.contains(&PT_INTERP), "layerlink-noop has a program interpreter: not static");
    assert!(elf.len() < 4 * 1024 * 1024, "layerlink-noop is {} bytes", elf.len());
    // The dynamically linked debug build does have one (the check can fail).
    let dynamic = std::fs::read(env!("CARGO_BIN_EXE_layerlink-noop")).unwrap();
    assert!(program_header_types(&dynamic).contains(&PT_INTERP));

    // An empty root: no /lib, no /proc, no shell.
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&noop, root.path().join("noop")).unwrap();
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["noop"]);
    let status = Command::new("chroot").arg(root.path()).arg("/noop").status().expect("chroot");
    assert_eq!(status.code(), Some(0));
    // --copy-to works there too (argv[0] stands in for the missing /proc/self/exe), as the
    // unprivileged user into a world-writable directory, like the emptyDir in a pod.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(root.path().join("tools")).unwrap();
    std::fs::set_permissions(root.path().join("tools"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let status = Command::new("chroot")
        .args(["--userspec=65532:65532"])
        .arg(root.path())
        .args(["/noop", "--copy-to", "/tools/noop"])
        .status()
        .expect("chroot");
    assert_eq!(status.code(), Some(0));
    let copy = root.path().join("tools/noop");
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o555);
    let status = Command::new("chroot")
        .args(["--userspec=65532:65532"])
        .arg(root.path())
        .arg("/tools/noop")
        .status()
        .expect("chroot");
    assert_eq!(status.code(), Some(0));
    // Where it may not write, it fails with a message instead of crashing.
    let status = Command::new("chroot")
        .args(["--userspec=65532:65532"])
        .arg(root.path())
        .args(["/noop", "--copy-to", "/denied"])
        .status()
        .expect("chroot");
    assert_eq!(status.code(), Some(1));
    let status = Command::new("chroot").arg(root.path()).args(["/noop", "--bogus"]).status().expect("chroot");
    assert_eq!(status.code(), Some(2));
}

#[test]
fn noop_copies_itself_read_only_and_sleeps_until_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let noop = env!("CARGO_BIN_EXE_layerlink-noop");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("noop");
    for round in 0..2 {
        // The second round replaces the read-only copy (a restarted init container).
        let status = Command::new(noop).arg("--copy-to").arg(&target).status().unwrap();
        assert!(status.success(), "round {round}");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(noop).unwrap());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    assert!(Command::new(&target).status().unwrap().success());

    let mut sleeper = Command::new(noop).arg("--sleep").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(sleeper.try_wait().unwrap().is_none(), "--sleep keeps running");
    let kill = Command::new("kill").args(["-TERM", &sleeper.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = sleeper.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM ends --sleep with exit 0: {status:?}");
}

/// A tools image or base that pre-pull cannot pin is said, not silently skipped: the injection
/// names it (the handler turns it into a warning on the pod), and `check` (what `serve` runs at
/// start-up) names it too.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_pre_pull_cannot_pin_is_reported() {
    let registry = Registry::start();
    let host = registry.host();
    let base = Image::new(vec![layer(&[("etc/os-release", b"ID=base\n")])]);
    registry.push("base", "1", &base);
    let app = registry.push("app-a", "1", &Image::on(&base, vec![layer(&[("app", b"a")])]));
    let engine = engine(&format!(
        "registries: [{{host: \"{host}\", plainHttp: true}}]
prepull:
  enabled: true
  detect: config
  toolsImage: \"{host}/layerlink:missing\"
  bases:
    - {{image: \"{host}/base:1\", match: [\"{host}/app-*\"]}}
    - {{image: \"{host}/gone:1\", match: [\"{host}/app-*\"]}}"
    ));
    let keychain = Arc::new(Keychain::default());
    let pod = pod(&[format!("{host}/app-a:1")]);
    let plan = engine.plan(sites::find(Shape::Pod, &pod), &keychain, generous()).await;
    assert_eq!(plan.pins[0].digest.as_ref(), app.digest, "{plan:?}");
    let injection = engine.prepull.inject(&pod, &plan.pins, &keychain, generous()).await;
    assert!(injection.ops.is_empty(), "no tools image, no injection: {:?}", injection.ops);
    let problems = injection.problems.join("\n");
    assert!(problems.contains("layerlink:missing") && problems.contains("gone:1"), "{problems}");
    assert!(!problems.contains("base:1 cannot"), "{problems}");

    let checked = engine.prepull.check(&keychain, generous()).await;
    let verdicts: Vec<(String, bool)> = checked.iter().map(|(image, r)| (image.clone(), r.is_ok())).collect();
    assert_eq!(
        verdicts,
        [
            (format!("{host}/layerlink:missing"), false),
            (format!("{host}/base:1"), true),
            (format!("{host}/gone:1"), false)
        ]
    );
}
