//! Injection: pure functions from a raw pod (serde_json::Value, never a typed round trip) and the
//! bases found to JSON Patch `add` ops.
//!
//! `initContainer` strategy: the emptyDir `layerlink-tools`, the `layerlink-tools` init container
//! (copies the static no-op out of the tools image) and one `layerlink-prepull-<short>` init
//! container per base (runs that no-op from the base image pinned by digest), all appended after
//! the pod's own init containers, so native sidecars (`restartPolicy: Always` init containers)
//! keep their place. `imageVolume` strategy: one image volume per base and no containers. Either
//! way the annotation `layerlink.io/prepull` lists the injected bases.

use json_patch::PatchOperation;
use serde_json::{Map, Value, json};

use super::{
    ANNOTATION, FoundBase, PREPULL_PREFIX, TOOLS, VOLUME_PREFIX, annotation_value, image_volume, prepull_container,
    tools_container, tools_volume,
};
use crate::{config::Strategy, patch, reference::Reference};

/// Requests (and, for Guaranteed pods, limits) of every injected container.
pub const CPU: &str = "10m";
pub const MEMORY: &str = "16Mi";

/// The pod's QoS class, as Kubernetes computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Whether the pod already carries our work (a reinvocation, or a pod built from our output).
pub fn already_injected(pod: &Value) -> bool {
    let annotated =
        pod.pointer("/metadata/annotations").and_then(Value::as_object).is_some_and(|a| a.contains_key(ANNOTATION));
    let named = |list: &str, prefix: &str, exact: &str| {
        pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).is_some_and(|items| {
            items
                .iter()
                .filter_map(|i| i.get("name").and_then(Value::as_str))
                .any(|n| n == exact || n.starts_with(prefix))
        })
    };
    annotated || named("initContainers", PREPULL_PREFIX, TOOLS) || named("volumes", VOLUME_PREFIX, TOOLS)
}

/// Pods for Windows nodes get nothing: the no-op is a Linux binary and the security context
/// fields we set are Linux-only.
pub fn is_windows(pod: &Value) -> bool {
    pod.pointer("/spec/os/name").and_then(Value::as_str) == Some("windows")
}

/// The ops that add pre-pull for `bases` to `pod`. `tools_image` (pinned) is required for the
/// `initContainer` strategy. Empty if there is nothing to do: already injected, a Windows pod,
/// every base already run by one of the pod's containers, or no tools image.
pub fn inject(pod: &Value, bases: &[FoundBase], tools_image: Option<&str>, strategy: Strategy) -> Vec<PatchOperation> {
    if already_injected(pod) || is_windows(pod) {
        return Vec::new();
    }
    let mut bases: Vec<FoundBase> = bases.iter().filter(|b| !runs_image(pod, &b.image)).cloned().collect();
    bases.sort();
    bases.dedup_by(|a, b| a.image == b.image || a.short == b.short);
    if bases.is_empty() {
        return Vec::new();
    }
    let mut ops = Vec::new();
    match strategy {
        Strategy::InitContainer => {
            let Some(tools_image) = tools_image else { return Vec::new() };
            let resources = resources_for(pod);
            let mut containers = vec![tools_container(tools_image, resources.as_ref())];
            containers.extend(bases.iter().map(|b| prepull_container(b, resources.as_ref())));
            append(&mut ops, pod, "/spec/volumes", vec![tools_volume()]);
            append(&mut ops, pod, "/spec/initContainers", containers);
        }
        Strategy::ImageVolume => {
            append(&mut ops, pod, "/spec/volumes", bases.iter().map(image_volume).collect());
        }
    }
    let value = Value::String(annotation_value(&bases));
    match pod.get("metadata") {
        Some(Value::Object(metadata)) => match metadata.get("annotations") {
            Some(Value::Object(_)) => {
                ops.push(patch::add(&format!("/metadata/annotations/{}", patch::escape(ANNOTATION)), value))
            }
            _ => ops.push(patch::add("/metadata/annotations", json!({ ANNOTATION: value }))),
        },
        _ => ops.push(patch::add("/metadata", json!({"annotations": { ANNOTATION: value }}))),
    }
    ops
}

/// Appends `items` to the array at `pointer`, creating it if absent.
fn append(ops: &mut Vec<PatchOperation>, pod: &Value, pointer: &str, items: Vec<Value>) {
    if pod.pointer(pointer).is_some_and(Value::is_array) {
        ops.extend(items.into_iter().map(|item| patch::add(&format!("{pointer}/-"), item)));
    } else {
        ops.push(patch::add(pointer, Value::Array(items)));
    }
}

/// Whether a container or init container of the pod runs `image` (same repository and the same
/// digest, or the same tag when the container has no digest).
pub fn runs_image(pod: &Value, image: &str) -> bool {
    let Ok(wanted) = Reference::parse(image) else { return false };
    ["initContainers", "containers"].iter().any(|list| {
        pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).is_some_and(|items| {
            items.iter().filter_map(|c| c.get("image").and_then(Value::as_str)).any(|written| {
                let Ok(r) = Reference::parse(written) else { return false };
                r.name() == wanted.name()
                    && match (&r.digest, &wanted.digest) {
                        (Some(have), Some(want)) => have == want,
                        (None, _) => r.tag_or_latest() == wanted.tag_or_latest(),
                        (Some(_), None) => false,
                    }
            })
        })
    })
}

/// Resources for an injected container that keep the pod's QoS class: Guaranteed gets requests
/// equal to limits, Burstable small requests, BestEffort none. With pod-level resources
/// (`spec.resources`, Kubernetes ≥ 1.32) the class comes from those, and containers need none.
pub fn resources_for(pod: &Value) -> Option<Value> {
    if pod_level_resources(pod).is_some() {
        return None;
    }
    let small = json!({"cpu": CPU, "memory": MEMORY});
    match qos_class(pod) {
        Qos::BestEffort => None,
        Qos::Burstable => Some(json!({"requests": small})),
        Qos::Guaranteed => Some(json!({"requests": small, "limits": small})),
    }
}

/// Kubernetes' `GetPodQOS` (pkg/apis/core/helper/qos): sums of cpu and memory requests and limits
/// over init and regular containers; BestEffort if there are none, Guaranteed if every container
/// limits both cpu and memory and the sums of requests equal the sums of limits.
pub fn qos_class(pod: &Value) -> Qos {
    if let Some(resources) = pod_level_resources(pod) {
        return qos_of_sums(&sum(resources, "requests").0, &sum(resources, "limits").0, true);
    }
    let mut requests = Sums::default();
    let mut limits = Sums::default();
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array) else { continue };
        for container in containers {
            let resources = container.get("resources").unwrap_or(&Value::Null);
            let (r, _) = sum(resources, "requests");
            let (l, both) = sum(resources, "limits");
            requests.add(&r);
            limits.add(&l);
            guaranteed &= both;
        }
    }
    qos_of_sums(&requests, &limits, guaranteed)
}

fn qos_of_sums(requests: &Sums, limits: &Sums, all_limited: bool) -> Qos {
    if requests.is_empty() && limits.is_empty() {
        return Qos::BestEffort;
    }
    let equal = |r: Option<i128>, l: Option<i128>| r.is_none() || r == l;
    let both_limited = limits.cpu.is_some() && limits.memory.is_some();
    if all_limited && both_limited && equal(requests.cpu, limits.cpu) && equal(requests.memory, limits.memory) {
        // Kubernetes also requires as many request kinds as limit kinds; a missing request was
        // defaulted from the limit by the API server, so treat it as equal.
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// `spec.resources` when it sets cpu or memory.
fn pod_level_resources(pod: &Value) -> Option<&Value> {
    let resources = pod.pointer("/spec/resources")?;
    let (r, _) = sum(resources, "requests");
    let (l, _) = sum(resources, "limits");
    (!r.is_empty() || !l.is_empty()).then_some(resources)
}

/// Positive cpu and memory quantities, in nano-units.
#[derive(Default, Debug)]
struct Sums {
    cpu: Option<i128>,
    memory: Option<i128>,
}

impl Sums {
    fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }

    fn add(&mut self, other: &Sums) {
        for (mine, theirs) in [(&mut self.cpu, other.cpu), (&mut self.memory, other.memory)] {
            if let Some(v) = theirs {
                *mine = Some(mine.unwrap_or(0).saturating_add(v));
            }
        }
    }
}

/// The positive cpu and memory quantities of `resources[field]`, and whether both are present.
fn sum(resources: &Value, field: &str) -> (Sums, bool) {
    let map = resources.get(field).and_then(Value::as_object);
    let get = |name: &str| map.and_then(|m: &Map<String, Value>| m.get(name)).and_then(quantity).filter(|q| *q > 0);
    let sums = Sums { cpu: get("cpu"), memory: get("memory") };
    let both = sums.cpu.is_some() && sums.memory.is_some();
    (sums, both)
}

fn quantity(value: &Value) -> Option<i128> {
    match value {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => n.as_i64().map(|v| i128::from(v) * NANO),
        _ => None,
    }
}

const NANO: i128 = 1_000_000_000;

/// A Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1e3`, `2G`) in nano-units. None if invalid.
pub fn parse_quantity(text: &str) -> Option<i128> {
    let text = text.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Value = digits × 10^(exp10) × 2^(exp2), computed in nano-units.
    let digits: String = format!("{int_part}{frac_part}");
    let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut value = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let exp = exp10 + 9;
    if exp >= 0 {
        value = value.checked_mul(10i128.checked_pow(exp as u32)?)?;
    } else {
        // Kubernetes rounds sub-nano precision up.
        let div = 10i128.checked_pow((-exp) as u32)?;
        value = (value + div - 1) / div;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::fixtures;

    const TOOLS_IMAGE: &str =
        "ghcr.io/layerlink/layerlink:0.1.0@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const BASE_DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn pod(fixture: &str) -> Value {
        fixtures::json(&format!("{fixture}.json"))["request"]["object"].clone()
    }

    fn base(short: &str, image: &str) -> FoundBase {
        FoundBase { short: short.into(), image: format!("{image}@{BASE_DIGEST}") }
    }

    fn apply(pod: &Value, ops: &[PatchOperation]) -> Value {
        patch::apply(pod, &json_patch::Patch(ops.to_vec())).expect("the ops apply")
    }

    fn restricted() -> Value {
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": true,
        })
    }

    /// A pod where every container limits cpu and memory to its requests.
    fn guaranteed() -> Value {
        let mut pod = pod("pod-create-multi");
        for list in ["initContainers", "containers"] {
            for c in pod["spec"][list].as_array_mut().unwrap() {
                c["resources"] =
                    json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "0.1", "memory": "64Mi"}});
            }
        }
        pod
    }

    #[test]
    fn best_effort_pod_gets_exact_init_containers() {
        let pod = pod("pod-create-simple");
        assert_eq!(qos_class(&pod), Qos::BestEffort);
        let bases = [base("python", "python:3.12"), base("debian", "debian:12")];
        let ops = inject(&pod, &bases, Some(TOOLS_IMAGE), Strategy::InitContainer);
        let out = apply(&pod, &ops);
        // The pod had no initContainers and no annotations: both are created.
        assert_eq!(
            out["spec"]["initContainers"],
            json!([
                {
                    "name": "layerlink-tools",
                    "image": TOOLS_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/usr/local/bin/layerlink-noop", "--copy-to", "/layerlink-tools/noop"],
                    "volumeMounts": [{"name": "layerlink-tools", "mountPath": "/layerlink-tools"}],
                    "securityContext": restricted(),
                },
                {
                    "name": "layerlink-prepull-debian",
                    "image": format!("debian:12@{BASE_DIGEST}"),
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/layerlink-tools/noop"],
                    "volumeMounts": [{"name": "layerlink-tools", "mountPath": "/layerlink-tools", "readOnly": true}],
                    "securityContext": restricted(),
                },
                {
                    "name": "layerlink-prepull-python",
                    "image": format!("python:3.12@{BASE_DIGEST}"),
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/layerlink-tools/noop"],
                    "volumeMounts": [{"name": "layerlink-tools", "mountPath": "/layerlink-tools", "readOnly": true}],
                    "securityContext": restricted(),
                },
            ])
        );
        let volumes = out["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0], pod["spec"]["volumes"][0]);
        assert_eq!(volumes[1], json!({"name": "layerlink-tools", "emptyDir": {}}));
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"layerlink.io/prepull": format!("debian:12@{BASE_DIGEST},python:3.12@{BASE_DIGEST}")})
        );
        assert_eq!(qos_class(&out), Qos::BestEffort);
        // Nothing else changed.
        let mut back = out.clone();
        back["spec"].as_object_mut().unwrap().remove("initContainers");
        back["spec"]["volumes"].as_array_mut().unwrap().pop();
        back["metadata"].as_object_mut().unwrap().remove("annotations");
        assert_eq!(back, pod);
        // The annotation path is escaped when annotations exist (see the multi pod test), and
        // the ops are adds only.
        let ops_json = serde_json::to_value(&ops).unwrap();
        assert!(ops_json.as_array().unwrap().iter().all(|op| op["op"] == "add"), "{ops_json}");
    }

    #[test]
    fn burstable_pod_keeps_its_class_and_its_own_init_containers_first() {
        let pod = pod("pod-create-multi");
        assert_eq!(qos_class(&pod), Qos::Burstable);
        let ops = inject(
            &pod,
            &[base("base", "registry.local:5000/team/base:1")],
            Some(TOOLS_IMAGE),
            Strategy::InitContainer,
        );
        let ops_json = serde_json::to_value(&ops).unwrap();
        assert_eq!(
            ops_json.as_array().unwrap().iter().map(|op| op["path"].as_str().unwrap()).collect::<Vec<_>>(),
            [
                "/spec/volumes/-",
                "/spec/initContainers/-",
                "/spec/initContainers/-",
                "/metadata/annotations/layerlink.io~1prepull"
            ]
        );
        let out = apply(&pod, &ops);
        let names: Vec<&str> =
            out["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["init-busybox", "init-pinned", "layerlink-tools", "layerlink-prepull-base"]);
        for c in &out["spec"]["initContainers"].as_array().unwrap()[2..] {
            assert_eq!(c["resources"], json!({"requests": {"cpu": "10m", "memory": "16Mi"}}));
            assert_eq!(c["securityContext"], restricted());
        }
        assert_eq!(qos_class(&out), Qos::Burstable);
        let annotations = out["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations["layerlink.io/prepull"], format!("registry.local:5000/team/base:1@{BASE_DIGEST}"));
        assert_eq!(annotations["example.com/owner"], "team-a");
    }

    #[test]
    fn guaranteed_pod_gets_requests_equal_to_limits() {
        let pod = guaranteed();
        assert_eq!(qos_class(&pod), Qos::Guaranteed);
        let ops = inject(&pod, &[base("base", "base:1")], Some(TOOLS_IMAGE), Strategy::InitContainer);
        let out = apply(&pod, &ops);
        let small = json!({"cpu": "10m", "memory": "16Mi"});
        for c in &out["spec"]["initContainers"].as_array().unwrap()[2..] {
            assert_eq!(c["resources"], json!({"requests": small, "limits": small}));
        }
        assert_eq!(qos_class(&out), Qos::Guaranteed);
    }

    #[test]
    fn native_sidecars_keep_their_place() {
        let mut pod = pod("pod-create-multi");
        pod["spec"]["initContainers"]
            .as_array_mut()
            .unwrap()
            .insert(1, json!({"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always"}));
        let ops = inject(&pod, &[base("base", "base:1")], Some(TOOLS_IMAGE), Strategy::InitContainer);
        let out = apply(&pod, &ops);
        let init = out["spec"]["initContainers"].as_array().unwrap();
        let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["init-busybox", "proxy", "init-pinned", "layerlink-tools", "layerlink-prepull-base"]);
        assert_eq!(init[1]["restartPolicy"], "Always");
        assert!(init[3].get("restartPolicy").is_none() && init[4].get("restartPolicy").is_none());
    }

    #[test]
    fn reinvocation_on_our_output_adds_nothing() {
        for (fixture, strategy) in [
            ("pod-create-simple", Strategy::InitContainer),
            ("pod-create-multi", Strategy::InitContainer),
            ("pod-create-simple", Strategy::ImageVolume),
            ("pod-create-reinvocation", Strategy::InitContainer),
        ] {
            let pod = pod(fixture);
            let bases = [base("base", "base:1")];
            let ops = inject(&pod, &bases, Some(TOOLS_IMAGE), strategy);
            assert!(!ops.is_empty(), "{fixture}");
            let out = apply(&pod, &ops);
            assert!(already_injected(&out));
            assert!(inject(&out, &bases, Some(TOOLS_IMAGE), strategy).is_empty(), "{fixture} {strategy:?}");
            // Another base found later does not stack a second round either.
            assert!(inject(&out, &[base("other", "other:2")], Some(TOOLS_IMAGE), strategy).is_empty());
        }
        // Our containers without the annotation (someone removed it) are enough.
        let mut pod = pod("pod-create-simple");
        pod["spec"]["initContainers"] = json!([{"name": "layerlink-prepull-x", "image": "x"}]);
        assert!(inject(&pod, &[base("base", "base:1")], Some(TOOLS_IMAGE), Strategy::InitContainer).is_empty());
    }

    #[test]
    fn a_base_the_pod_already_runs_is_not_duplicated() {
        // pod-create-simple runs nginx:1.25 (no digest): a base nginx:1.25@… is the same image.
        let pod = pod("pod-create-simple");
        let nginx = base("nginx", "nginx:1.25");
        assert!(runs_image(&pod, &nginx.image));
        assert!(inject(&pod, std::slice::from_ref(&nginx), Some(TOOLS_IMAGE), Strategy::InitContainer).is_empty());
        // Written differently but the same image (docker.io/library/nginx).
        assert!(runs_image(&pod, &format!("docker.io/library/nginx:1.25@{BASE_DIGEST}")));
        assert!(!runs_image(&pod, &format!("nginx:1.26@{BASE_DIGEST}")));
        // With another base, only that one is injected.
        let ops = inject(&pod, &[nginx, base("debian", "debian:12")], Some(TOOLS_IMAGE), Strategy::InitContainer);
        let out = apply(&pod, &ops);
        let names: Vec<&str> =
            out["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["layerlink-tools", "layerlink-prepull-debian"]);
        assert_eq!(out["metadata"]["annotations"]["layerlink.io/prepull"], format!("debian:12@{BASE_DIGEST}"));
        // A pinned container: the digest decides.
        let mut pinned = pod.clone();
        pinned["spec"]["containers"][0]["image"] = json!(format!("nginx:1.25@{BASE_DIGEST}"));
        assert!(runs_image(&pinned, &format!("nginx@{BASE_DIGEST}")));
        assert!(!runs_image(&pinned, &format!("nginx:1.25@sha256:{}", "3".repeat(64))));
    }

    #[test]
    fn image_volume_strategy_adds_volumes_only() {
        let pod = pod("pod-create-multi");
        let ops =
            inject(&pod, &[base("python", "python:3.12"), base("debian", "debian:12")], None, Strategy::ImageVolume);
        let out = apply(&pod, &ops);
        assert_eq!(out["spec"]["initContainers"], pod["spec"]["initContainers"]);
        assert_eq!(out["spec"]["containers"], pod["spec"]["containers"]);
        let volumes = out["spec"]["volumes"].as_array().unwrap();
        assert_eq!(
            volumes[1..],
            [
                json!({"name": "layerlink-base-debian", "image": {"reference": format!("debian:12@{BASE_DIGEST}"), "pullPolicy": "IfNotPresent"}}),
                json!({"name": "layerlink-base-python", "image": {"reference": format!("python:3.12@{BASE_DIGEST}"), "pullPolicy": "IfNotPresent"}}),
            ]
        );
        assert!(out["metadata"]["annotations"]["layerlink.io/prepull"].is_string());
    }

    #[test]
    fn nothing_without_tools_image_or_bases_or_on_windows() {
        let pod = pod("pod-create-simple");
        assert!(inject(&pod, &[base("b", "b:1")], None, Strategy::InitContainer).is_empty());
        assert!(inject(&pod, &[], Some(TOOLS_IMAGE), Strategy::InitContainer).is_empty());
        let mut windows = pod.clone();
        windows["spec"]["os"] = json!({"name": "windows"});
        assert!(inject(&windows, &[base("b", "b:1")], Some(TOOLS_IMAGE), Strategy::InitContainer).is_empty());
    }

    #[test]
    fn pods_without_volumes_or_metadata_get_them_created() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "app:1"}]}});
        let ops = inject(&pod, &[base("b", "b:1")], Some(TOOLS_IMAGE), Strategy::InitContainer);
        let out = apply(&pod, &ops);
        assert_eq!(out["spec"]["volumes"], json!([{"name": "layerlink-tools", "emptyDir": {}}]));
        assert_eq!(out["spec"]["initContainers"].as_array().unwrap().len(), 2);
        assert!(out["metadata"]["annotations"]["layerlink.io/prepull"].is_string());
    }

    #[test]
    fn qos_classes_as_kubernetes_computes_them() {
        let with = |containers: Value| json!({"spec": {"containers": containers}});
        assert_eq!(qos_class(&with(json!([{"name": "a"}]))), Qos::BestEffort);
        assert_eq!(qos_class(&with(json!([{"name": "a", "resources": {"requests": {"cpu": "0"}}}]))), Qos::BestEffort);
        // Only cpu and memory count.
        assert_eq!(
            qos_class(&with(json!([{"name": "a", "resources": {"limits": {"ephemeral-storage": "1Gi"}}}]))),
            Qos::BestEffort
        );
        assert_eq!(qos_class(&with(json!([{"name": "a", "resources": {"requests": {"cpu": "1m"}}}]))), Qos::Burstable);
        let g = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}});
        assert_eq!(qos_class(&with(json!([{"name": "a", "resources": g}]))), Qos::Guaranteed);
        // Limits only (the API server defaults requests from them).
        let l = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(qos_class(&with(json!([{"name": "a", "resources": l}]))), Qos::Guaranteed);
        // One container without memory limit makes the pod Burstable.
        let partial = json!({"requests": {"cpu": "1"}, "limits": {"cpu": "1"}});
        assert_eq!(
            qos_class(&with(json!([{"name": "a", "resources": g}, {"name": "b", "resources": partial}]))),
            Qos::Burstable
        );
        // Requests below limits.
        let below = json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(qos_class(&with(json!([{"name": "a", "resources": below}]))), Qos::Burstable);
        // Pod-level resources decide, and injected containers then need none.
        let mut pod = with(json!([{"name": "a"}]));
        pod["spec"]["resources"] =
            json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(qos_class(&pod), Qos::Guaranteed);
        assert_eq!(resources_for(&pod), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1"), Some(NANO));
        assert_eq!(parse_quantity("100m"), Some(NANO / 10));
        assert_eq!(parse_quantity("0.1"), Some(NANO / 10));
        assert_eq!(parse_quantity("16Mi"), Some(16 * 1024 * 1024 * NANO));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 * 512 * 1024 * 1024 * NANO));
        assert_eq!(parse_quantity("1e3"), Some(1000 * NANO));
        assert_eq!(parse_quantity("1E"), Some(1_000_000_000_000_000_000 * NANO));
        assert_eq!(parse_quantity("2k"), parse_quantity("2000"));
        assert_eq!(parse_quantity("1n"), Some(1));
        assert_eq!(parse_quantity("-1"), Some(-NANO));
        for bad in ["", "m", "1x", "1.2.3", "Mi", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
