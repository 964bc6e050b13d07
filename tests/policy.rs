//! The ValidatingAdmissionPolicy and the webhook's `/validate` endpoint are one rule written
//! twice: the API server (1.30+) evaluates the policy's CEL, layerlink answers `/validate` on
//! older clusters. No API server here is new enough to run the policy, so this test evaluates
//! its CEL with a CEL implementation (the `cel` crate, with the strings extension that
//! Kubernetes also enables) on every fixture pod, in many variants, and asserts that both refuse
//! or admit the same pods.

mod support;

use std::{collections::HashMap, sync::Arc};

use layerlink::{
    admission::{Edges, handle},
    policy::Mode,
    reference::PINNED_PATTERN,
    sites,
};
use serde_json::Value;

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/validatingadmissionpolicy.yaml");
const FIXTURES: &[&str] = &[
    "admission/pod-create-simple.json",
    "admission/pod-create-multi.json",
    "admission/pod-create-generatename.json",
    "admission/pod-create-dryrun.json",
    "admission/pod-create-from-replicaset.json",
    "admission/pod-create-reinvocation.json",
    "admission/pod-update-image.json",
    "admission-1.30/pod-create-native-sidecar.json",
    "admission-1.30/pod-create-image-volume.json",
    "admission-1.30/pod-ephemeralcontainers-update.json",
];
/// `exclude.images` as the base config has it, in step with the policy's exempt prefixes.
const CONFIG: &str = "exclude: { images: [\"registry.k8s.io/pause*\"] }";

/// The policy's variables and its one validation, compiled.
struct Policy {
    env: Arc<cel::Env>,
    variables: Vec<(String, cel::Program)>,
    validation: cel::Program,
    message: cel::Program,
}

impl Policy {
    fn load() -> Policy {
        let text = std::fs::read_to_string(POLICY).unwrap();
        let policy: Value = serde_saphyr::from_str(text.split("\n---\n").next().unwrap()).unwrap();
        assert_eq!(policy["kind"], "ValidatingAdmissionPolicy");
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings).unwrap();
        let compile = |source: &str| env.compile(source).unwrap_or_else(|e| panic!("{source}: {e:?}"));
        let spec = &policy["spec"];
        let variables = spec["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), compile(v["expression"].as_str().unwrap())))
            .collect();
        let validations = spec["validations"].as_array().unwrap();
        assert_eq!(validations.len(), 1, "one validation");
        let validation = compile(validations[0]["expression"].as_str().unwrap());
        let message = compile(validations[0]["messageExpression"].as_str().unwrap());
        Policy { env: Arc::new(env), variables, validation, message }
    }

    /// The policy's verdict on an admission request, as the API server would reach it:
    /// `Ok(())` admits, `Err(message)` refuses (an evaluation error refuses too: failurePolicy Fail).
    fn evaluate(&self, request: &Value) -> Result<(), String> {
        let mut variables: HashMap<String, cel::Value> = HashMap::new();
        let context = |variables: &HashMap<String, cel::Value>| {
            let mut context = cel::Context::with_env(Arc::clone(&self.env));
            context.add_variable("object", &request["object"]).unwrap();
            context.add_variable("oldObject", &request["oldObject"]).unwrap();
            context.add_variable("request", request).unwrap();
            context.add_variable_from_value("variables", variables.clone());
            context
        };
        for (name, program) in &self.variables {
            let value = program.execute(&context(&variables)).map_err(|e| format!("variable {name}: {e:?}"))?;
            variables.insert(name.clone(), value);
        }
        let context = context(&variables);
        match self.validation.execute(&context).map_err(|e| format!("validation: {e:?}"))? {
            cel::Value::Bool(true) => Ok(()),
            cel::Value::Bool(false) => match self.message.execute(&context) {
                Ok(cel::Value::String(message)) => Err(message.to_string()),
                other => panic!("messageExpression: {other:?}"),
            },
            other => panic!("the validation is not a bool: {other:?}"),
        }
    }
}

fn fixture(path: &str) -> Value {
    let file = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// Every image field of a Pod (containers of every list, image volumes) rewritten by `f`.
fn rewrite(pod: &mut Value, f: &dyn Fn(&str) -> String) {
    if pod.is_null() {
        return;
    }
    for site in sites::find(sites::Shape::Pod, pod) {
        *pod.pointer_mut(&site.pointer).unwrap() = Value::String(f(&site.image));
    }
}

fn without_digest(image: &str) -> &str {
    image.split_once('@').map_or(image, |(name, _)| name)
}

/// A way of writing every image of a pod, by name.
type Variant = (&'static str, Box<dyn Fn(&str) -> String>);

/// The ways an image may be written that the rule must tell apart.
fn variants() -> Vec<Variant> {
    vec![
        ("as captured", Box::new(|i: &str| i.to_string())),
        ("tag only", Box::new(|i: &str| without_digest(i).to_string())),
        ("sha256", Box::new(|i: &str| format!("{}@sha256:{}", without_digest(i), "0a".repeat(32)))),
        ("sha512", Box::new(|i: &str| format!("{}@sha512:{}", without_digest(i), "1b".repeat(64)))),
        ("sha384 (not a pin)", Box::new(|i: &str| format!("{}@sha384:{}", without_digest(i), "2c".repeat(48)))),
        ("upper-case hex", Box::new(|i: &str| format!("{}@sha256:{}", without_digest(i), "0A".repeat(32)))),
        ("short digest", Box::new(|i: &str| format!("{}@sha256:{}", without_digest(i), "0a".repeat(31)))),
        ("digest then text", Box::new(|i: &str| format!("{}@sha256:{}x", without_digest(i), "0a".repeat(32)))),
        ("exempt pause image", Box::new(|_: &str| "registry.k8s.io/pause:3.9".to_string())),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_and_validate_agree_on_every_fixture_pod() {
    let policy = Policy::load();
    let engine = support::engine(CONFIG);
    let mut checked = 0;
    let (mut admitted, mut refused) = (0, 0);
    for path in FIXTURES {
        let captured = fixture(path);
        assert_eq!(captured["request"]["kind"]["kind"], "Pod", "{path}");
        let sites = sites::find(sites::Shape::Pod, &captured["request"]["object"]).len();
        let mut variants = variants();
        // Every image pinned but one, for each one: no list and no image volume goes unread.
        for k in 0..sites {
            let n = std::sync::atomic::AtomicUsize::new(0);
            let f = move |i: &str| {
                let at = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % sites;
                let name = without_digest(i);
                if at == k { name.to_string() } else { format!("{name}@sha256:{}", "0a".repeat(32)) }
            };
            variants.push(("all pinned but one", Box::new(f)));
        }
        for (variant, f) in variants {
            // The variant on the new object only (an UPDATE then changes images), and on both.
            for old_too in [false, true] {
                let mut review = captured.clone();
                rewrite(&mut review["request"]["object"], &*f);
                if old_too {
                    if review["request"]["oldObject"].is_null() {
                        continue;
                    }
                    rewrite(&mut review["request"]["oldObject"], &*f);
                }
                let what = format!("{path}, {variant}{}", if old_too { ", old object too" } else { "" });
                let body = serde_json::to_vec(&review).unwrap();
                let answer =
                    serde_json::to_value(handle(&engine, &Edges::default(), Mode::Validate, &body, None).await)
                        .unwrap();
                let webhook = answer["response"]["allowed"].as_bool().unwrap();
                let cel = policy.evaluate(&review["request"]);
                assert_eq!(
                    cel.is_ok(),
                    webhook,
                    "{what}: the policy says {cel:?}, /validate says {}",
                    answer["response"]
                );
                if let Err(message) = &cel {
                    assert!(
                        !message.starts_with("variable") && !message.starts_with("validation"),
                        "{what}: {message}"
                    );
                    // Both name the same unpinned images.
                    let webhook_message = answer["response"]["status"]["message"].as_str().unwrap();
                    for site in sites::find(sites::Shape::Pod, &review["request"]["object"]) {
                        if !layerlink::reference::is_pinned(&site.image) && message.contains(&site.image) {
                            assert!(webhook_message.contains(&site.image), "{what}: {webhook_message}");
                        }
                    }
                    refused += 1;
                } else {
                    admitted += 1;
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked > 100 && admitted > 30 && refused > 30,
        "{checked} checked, {admitted} admitted, {refused} refused"
    );
}

/// The policy covers what `/validate` covers, case by case: native sidecars, image volumes,
/// ephemeral containers, and an UPDATE that keeps an image the pod already ran.
#[test]
fn the_policy_covers_sidecars_volumes_and_ephemeral_containers() {
    let policy = Policy::load();
    let refused = |path: &str| policy.evaluate(&fixture(path)["request"]).unwrap_err();
    assert!(refused("admission-1.30/pod-create-native-sidecar.json").contains("fluent/fluent-bit:3.1"));
    assert!(refused("admission-1.30/pod-create-image-volume.json").contains("ghcr.io/org/models:v3"));
    let ephemeral = refused("admission-1.30/pod-ephemeralcontainers-update.json");
    assert!(ephemeral.contains("busybox:1.36") && !ephemeral.contains("nginx"), "{ephemeral}");
    // An UPDATE that changes nothing about images is admitted, pinned or not.
    let mut update = fixture("admission/pod-update-image.json");
    update["request"]["object"]["spec"] = update["request"]["oldObject"]["spec"].clone();
    assert_eq!(policy.evaluate(&update["request"]), Ok(()));
    // The pattern in the policy is layerlink's own definition.
    let text = std::fs::read_to_string(POLICY).unwrap();
    assert!(text.contains(&format!("matches('{PINNED_PATTERN}')")), "the policy's pattern is not PINNED_PATTERN");
}
