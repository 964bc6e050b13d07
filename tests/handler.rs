//! The admission handler wired end to end in-process, against a real registry: the decisions
//! the handler itself makes (which images an UPDATE pins, when pre-pull is injected, when audit
//! findings are reported) that the unit tests of its parts cannot see.

mod support;

use std::sync::{Arc, Mutex};

use layerlink::{
    Engine,
    admission::{Edges, fixtures, handle, handler::Reporter, review::AdmissionRequest},
    engine::Plan,
    policy::Mode,
};
use serde_json::{Value, json};
use support::{Registry, engine, image};

/// The handler's answer to `review`, as JSON (`response` only).
async fn answer(engine: &Engine, edges: &Edges, mode: Mode, review: &Value) -> Value {
    let body = serde_json::to_vec(review).unwrap();
    let review = handle(engine, edges, mode, &body, None).await;
    serde_json::to_value(review).unwrap()["response"].clone()
}

/// The decoded JSON Patch of an answer (empty when there is none).
fn patch(response: &Value) -> Vec<Value> {
    use base64::Engine as _;
    match response["patch"].as_str() {
        Some(b64) => serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap(),
        None => Vec::new(),
    }
}

fn paths(ops: &[Value]) -> Vec<String> {
    ops.iter().map(|op| format!("{} {}", op["op"].as_str().unwrap(), op["path"].as_str().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_pins_only_the_images_it_changes() {
    let registry = Registry::start();
    let host = registry.host();
    let web = registry.push("team/web", "v2", &image("web")).digest;
    registry.push("team/web", "v1", &image("web-old"));
    registry.push("team/side", "v1", &image("side"));
    let engine = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let mut review = fixtures::json("pod-update-image.json");
    for (side, web_tag) in [("object", "v2"), ("oldObject", "v1")] {
        let spec = &mut review["request"][side]["spec"];
        spec["containers"][0]["image"] = json!(format!("{host}/team/web:{web_tag}"));
        let sidecar = json!({"name": "side", "image": format!("{host}/team/side:v1")});
        spec["containers"].as_array_mut().unwrap().push(sidecar);
    }
    let response = answer(&engine, &Edges::default(), Mode::Enforce, &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        patch(&response),
        vec![
            json!({"op": "replace", "path": "/spec/containers/0/image", "value": format!("{host}/team/web:v2@{web}")})
        ],
        "the unchanged sidecar image is not pinned on UPDATE (it would restart the container)"
    );
    // The same object as a CREATE pins both.
    review["request"]["operation"] = json!("CREATE");
    review["request"]["oldObject"] = Value::Null;
    let created = answer(&engine, &Edges::default(), Mode::Enforce, &review).await;
    assert_eq!(paths(&patch(&created)), ["replace /spec/containers/0/image", "replace /spec/containers/1/image"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_pull_is_injected_on_a_pod_create_only() {
    let registry = Registry::start();
    let host = registry.host();
    registry.push("org/base", "1", &image("base"));
    registry.push("org/tools", "1", &image("tools"));
    registry.push("org/app", "v1", &image("app"));
    registry.push("org/app", "v2", &image("app2"));
    let engine = engine(&format!(
        "registries: [{{ host: \"{host}\", plainHttp: true }}]
prepull:
  enabled: true
  detect: config
  toolsImage: {host}/org/tools:1
  bases: [{{ image: \"{host}/org/base:1\", match: [\"{host}/org/app*\"] }}]"
    ));
    let create = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/org/app:v1"));
    let ops = patch(&answer(&engine, &Edges::default(), Mode::Enforce, &create).await);
    let injected = |ops: &[Value]| {
        ops.iter().any(|op| {
            op["op"] == "add" && op.to_string().contains("layerlink-tools") && op.to_string().contains("org/base:1@")
        })
    };
    assert!(injected(&ops), "CREATE injects the tools and the base: {ops:?}");

    // An UPDATE that changes the image pins it and injects nothing: init containers are immutable.
    let mut update = fixtures::json("pod-update-image.json");
    update["request"]["object"]["spec"]["containers"][0]["image"] = json!(format!("{host}/org/app:v2"));
    update["request"]["oldObject"]["spec"]["containers"][0]["image"] = json!(format!("{host}/org/app:v1"));
    let ops = patch(&answer(&engine, &Edges::default(), Mode::Enforce, &update).await);
    assert_eq!(paths(&ops), ["replace /spec/containers/0/image"], "{ops:?}");

    // Audit mode never mutates, so it never injects either.
    let audited = answer(&engine, &Edges::default(), Mode::Audit, &create).await;
    assert!(audited.get("patch").is_none(), "{audited}");
}

/// Records what the handler reports.
#[derive(Default)]
struct Reports(Mutex<Vec<String>>);

impl Reporter for Reports {
    fn report(&self, request: &AdmissionRequest, plan: &Plan) {
        self.0.lock().unwrap().push(format!("{} {}", request.object_ref(), plan.pins.len()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_findings_are_reported_except_on_a_dry_run() {
    let registry = Registry::start();
    let host = registry.host();
    registry.push("team/app", "v1", &image("app"));
    let engine = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let reports = Arc::new(Reports::default());
    let edges = Edges { reporter: Some(reports.clone()), ..Edges::default() };
    let mut review = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/app:v1"));

    review["request"]["dryRun"] = json!(true);
    let dry = answer(&engine, &edges, Mode::Audit, &review).await;
    assert!(dry["warnings"].to_string().contains("would pin"), "a dry run still warns: {dry}");
    assert!(reports.0.lock().unwrap().is_empty(), "a dry run must have no side effect");

    review["request"]["dryRun"] = json!(false);
    answer(&engine, &edges, Mode::Audit, &review).await;
    assert_eq!(reports.0.lock().unwrap().len(), 1, "a real create is reported once");

    // Enforce mode does not report (the pod is pinned instead).
    answer(&engine, &edges, Mode::Enforce, &review).await;
    assert_eq!(reports.0.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_are_pinned_and_validated_like_containers() {
    let registry = Registry::start();
    let host = registry.host();
    let app = registry.push("team/app", "v1", &image("app")).digest;
    let models = registry.push("team/models", "v3", &image("models")).digest;
    let engine = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let mut review = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/app:v1"));
    review["request"]["object"]["spec"]["volumes"] = json!([
        {"name": "data", "emptyDir": {}},
        {"name": "models", "image": {"reference": format!("{host}/team/models:v3"), "pullPolicy": "IfNotPresent"}}
    ]);
    let response = answer(&engine, &Edges::default(), Mode::Enforce, &review).await;
    assert_eq!(
        patch(&response),
        vec![
            json!({"op": "replace", "path": "/spec/containers/0/image", "value": format!("{host}/team/app:v1@{app}")}),
            json!({"op": "replace", "path": "/spec/volumes/1/image/reference", "value": format!("{host}/team/models:v3@{models}")}),
        ]
    );
    // The backstop refuses the unpinned volume, and admits it pinned.
    let refused = answer(&engine, &Edges::default(), Mode::Validate, &review).await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert!(refused["status"]["message"].as_str().unwrap().contains("team/models:v3"), "{refused}");
    let object = &mut review["request"]["object"]["spec"];
    object["containers"][0]["image"] = json!(format!("{host}/team/app:v1@{app}"));
    object["volumes"][1]["image"]["reference"] = json!(format!("{host}/team/models:v3@{models}"));
    let admitted = answer(&engine, &Edges::default(), Mode::Validate, &review).await;
    assert_eq!(admitted["allowed"], true, "{admitted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_pull_that_cannot_be_done_is_a_warning_on_the_pod() {
    let registry = Registry::start();
    let host = registry.host();
    registry.push("org/base", "1", &image("base"));
    registry.push("org/app", "v1", &image("app"));
    let engine = engine(&format!(
        "registries: [{{ host: \"{host}\", plainHttp: true }}]
prepull:
  enabled: true
  detect: config
  toolsImage: {host}/org/tools:missing
  bases: [{{ image: \"{host}/org/base:1\", match: [\"{host}/org/app*\"] }}]"
    ));
    let create = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/org/app:v1"));
    let response = answer(&engine, &Edges::default(), Mode::Enforce, &create).await;
    assert_eq!(paths(&patch(&response)), ["replace /spec/containers/0/image"], "pinned, nothing injected");
    let warnings = response["warnings"].to_string();
    assert!(warnings.contains("org/tools:missing cannot be pinned"), "{warnings}");
    assert!(engine.metrics.encode().contains("layerlink_prepull_problems_total 1"), "{}", engine.metrics.encode());
}

/// A custom resource declared with `webhook: true` is pinned like a workload (its whole object is
/// read: the decoder of built-in kinds would drop its fields); without the opt-in it is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_declared_kind_is_pinned_on_opt_in() {
    let registry = Registry::start();
    let host = registry.host();
    let app = registry.push("team/app", "v1", &image("app")).digest;
    let mut review = fixtures::with_images("deployment-create.json", |_| format!("{host}/team/app:v1"));
    let request = &mut review["request"];
    request["kind"] = json!({"group": "argoproj.io", "version": "v1alpha1", "kind": "Rollout"});
    request["resource"] = json!({"group": "argoproj.io", "version": "v1alpha1", "resource": "rollouts"});
    request["object"]["apiVersion"] = json!("argoproj.io/v1alpha1");
    request["object"]["kind"] = json!("Rollout");
    request["object"]["spec"]["strategy"] = json!({"canary": {"steps": [{"setWeight": 20}]}});
    let registries = format!("registries: [{{ host: \"{host}\", plainHttp: true }}]");
    let pinned = format!("{host}/team/app:v1@{app}");
    let opted_in = engine(&format!(
        "{registries}\nworkloads: {{ kinds: [{{ group: argoproj.io, kind: Rollout, webhook: true }}] }}"
    ));
    let response = answer(&opted_in, &Edges::default(), Mode::Enforce, &review).await;
    assert_eq!(
        patch(&response),
        vec![json!({"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": pinned})],
        "{response}"
    );
    // A kind of the config's own, with its pod spec where no built-in kind has one.
    let mut runner = review.clone();
    let request = &mut runner["request"];
    request["kind"] = json!({"group": "example.com", "version": "v1", "kind": "Runner"});
    let template = request["object"]["spec"]["template"].take();
    request["object"]["spec"]["runner"] = json!({"pod": template["spec"]});
    let declared = engine(&format!(
        "{registries}\nworkloads: {{ kinds: [{{ group: example.com, version: v1, kind: Runner, plural: runners, podSpec: /spec/runner/pod, webhook: true }}] }}"
    ));
    let response = answer(&declared, &Edges::default(), Mode::Enforce, &runner).await;
    assert_eq!(
        patch(&response),
        vec![json!({"op": "replace", "path": "/spec/runner/pod/containers/0/image", "value": pinned})],
        "{response}"
    );
    // Built in for `layerlink mutate`, but the webhook needs the opt-in; templates: true is not it.
    let templates_only = engine(&format!("{registries}\nworkloads: {{ templates: true }}"));
    let response = answer(&templates_only, &Edges::default(), Mode::Enforce, &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(patch(&response).is_empty(), "{response}");
}
