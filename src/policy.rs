//! Whether an object is ours to act on: operation, kind, namespace exclusions and pod opt-out,
//! for the webhook ([`decide`]) and the offline front ends ([`skip_reason`]) alike.
//! Pure: it reads what it is given and the config, nothing else.

use serde_json::Value;

use crate::{
    Config,
    sites::{self, Shape},
};

/// The pod annotation that opts a pod out, honoured only with `allowPodOptOut: true`.
pub const SKIP_ANNOTATION: &str = "layerlink.io/skip";

/// What the endpoint does with the images it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `/mutate`: pin with a patch.
    Enforce,
    /// `/audit`: report what would be pinned, never mutate.
    Audit,
    /// `/validate`: refuse unpinned images (backstop for clusters without ValidatingAdmissionPolicy).
    Validate,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Validate => "validate",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Allowed unchanged, for this reason (logged at debug).
    Skip(String),
    /// Look at the images of an object of this shape.
    Act(Shape<'a>),
}

/// What [`decide`] reads of an admission request.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub operation: &'a str,
    /// API group of the kind ("" for the core group).
    pub group: &'a str,
    pub kind: &'a str,
    pub sub_resource: Option<&'a str>,
    pub namespace: &'a str,
    pub object: Option<&'a Value>,
}

pub fn decide<'a>(request: &Subject<'_>, config: &'a Config) -> Decision<'a> {
    if !matches!(request.operation, "CREATE" | "UPDATE") {
        return Decision::Skip(format!("operation {} is not handled", request.operation));
    }
    let kind = request.kind;
    let shape = match config.workloads.declared_kind(request.group, kind) {
        // A declared kind is pinned by the webhook only on its own opt-in, whatever
        // `workloads.templates` says (its rules name it only then).
        Some(declared) if declared.webhook => sites::declared_shape(declared),
        Some(_) => return Decision::Skip(format!("kind {kind} is declared without webhook: true")),
        None => {
            let Some(shape) = sites::shape(kind).filter(|_| is_built_in_group(request.group, kind)) else {
                return Decision::Skip(format!("kind {kind} has no pod spec"));
            };
            if matches!(shape, Shape::Template(_)) && !config.workloads.templates {
                return Decision::Skip(format!("pod templates of {kind} are not pinned (workloads.templates: false)"));
            }
            shape
        }
    };
    // A Pod UPDATE is pinned only through spec images; a status or binding subresource carries none.
    if let Some(sub) = request.sub_resource.filter(|s| *s != "ephemeralcontainers") {
        return Decision::Skip(format!("subresource {sub} is not handled"));
    }
    let namespace = request.namespace;
    if config.exclude.namespaces.iter().any(|n| n == namespace) {
        return Decision::Skip(format!("namespace {namespace} is excluded"));
    }
    let Some(object) = request.object else {
        return Decision::Skip("the review has no object".into());
    };
    if config.allow_pod_opt_out && opted_out(object, shape) {
        return Decision::Skip(format!("opted out with {SKIP_ANNOTATION}: \"true\""));
    }
    Decision::Act(shape)
}

/// Whether `group` is the group of the built-in `kind` (the 1.20 EphemeralContainers subresource
/// object is in the core group).
fn is_built_in_group(group: &str, kind: &str) -> bool {
    crate::kinds::find(kind).map_or(group.is_empty(), |k| k.group == group)
}

/// Why the config leaves an object alone outside admission (`layerlink mutate`, `layerlink
/// audit`), as the webhook would: its `metadata.namespace` is in `exclude.namespaces`, or it (or
/// its pod template) carries `layerlink.io/skip: "true"` and `allowPodOptOut` is set.
pub fn skip_reason(config: &Config, shape: Shape, object: &Value) -> Option<String> {
    if let Some(namespace) = object.pointer("/metadata/namespace").and_then(Value::as_str)
        && config.exclude.namespaces.iter().any(|n| n == namespace)
    {
        return Some(format!("namespace {namespace} is excluded"));
    }
    (config.allow_pod_opt_out && opted_out(object, shape))
        .then(|| format!("opted out with {SKIP_ANNOTATION}: \"true\""))
}

/// The annotation on the object, or on the pod template of a workload.
pub(crate) fn opted_out(object: &Value, shape: Shape) -> bool {
    let skip = |meta: Option<&Value>| {
        meta.and_then(|m| m.pointer("/annotations")).and_then(|a| a.get(SKIP_ANNOTATION)).and_then(Value::as_str)
            == Some("true")
    };
    let template_meta = match shape {
        Shape::Template(spec) => {
            object.pointer(spec.strip_suffix("/spec").unwrap_or(spec)).and_then(|t| t.get("metadata"))
        }
        _ => None,
    };
    skip(object.get("metadata")) || skip(template_meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::fixtures;

    fn decide_on<'a>(file: &str, config: &'a Config, edit: impl FnOnce(&mut serde_json::Value)) -> Decision<'a> {
        let mut json = fixtures::json(file);
        edit(&mut json);
        let review: crate::admission::review::AdmissionReview = serde_json::from_value(json).unwrap();
        decide(&review.request.unwrap().subject(), config)
    }

    #[test]
    fn pods_are_acted_on() {
        let config = Config::default();
        assert_eq!(decide_on("pod-create-simple.json", &config, |_| {}), Decision::Act(Shape::Pod));
        assert_eq!(decide_on("pod-update-image.json", &config, |_| {}), Decision::Act(Shape::Pod));
        assert_eq!(
            decide_on("pod-ephemeralcontainers-update.json", &config, |_| {}),
            Decision::Act(Shape::EphemeralContainers)
        );
    }

    #[test]
    fn templates_only_on_opt_in() {
        let off = Config::default();
        let Decision::Skip(reason) = decide_on("deployment-create.json", &off, |_| {}) else { panic!() };
        assert!(reason.contains("workloads.templates: false"), "{reason}");
        let mut on = Config::default();
        on.workloads.templates = true;
        for file in ["deployment-create.json", "cronjob-create.json", "podtemplate-create.json", "job-create.json"] {
            assert!(matches!(decide_on(file, &on, |_| {}), Decision::Act(Shape::Template(_))), "{file}");
        }
    }

    #[test]
    fn excluded_namespaces() {
        let mut config = Config::default();
        config.exclude.namespaces.push("fixtures".to_string());
        assert_eq!(
            decide_on("pod-create-simple.json", &config, |_| {}),
            Decision::Skip("namespace fixtures is excluded".into())
        );
        let config = Config::default();
        let in_kube_system =
            decide_on("pod-create-simple.json", &config, |r| r["request"]["namespace"] = "kube-system".into());
        assert!(matches!(in_kube_system, Decision::Skip(_)));
    }

    #[test]
    fn opt_out_only_where_allowed() {
        let annotate = |r: &mut serde_json::Value| {
            r["request"]["object"]["metadata"]["annotations"] = serde_json::json!({SKIP_ANNOTATION: "true"});
        };
        let strict = Config::default();
        assert_eq!(decide_on("pod-create-simple.json", &strict, annotate), Decision::Act(Shape::Pod));
        let lenient = Config { allow_pod_opt_out: true, ..Default::default() };
        assert!(matches!(decide_on("pod-create-simple.json", &lenient, annotate), Decision::Skip(_)));
        let not_true = |r: &mut serde_json::Value| {
            r["request"]["object"]["metadata"]["annotations"] = serde_json::json!({SKIP_ANNOTATION: "yes"});
        };
        assert_eq!(decide_on("pod-create-simple.json", &lenient, not_true), Decision::Act(Shape::Pod));
        let mut templates = lenient.clone();
        templates.workloads.templates = true;
        let on_template = |r: &mut serde_json::Value| {
            r["request"]["object"]["spec"]["template"]["metadata"]["annotations"] =
                serde_json::json!({SKIP_ANNOTATION: "true"});
        };
        assert!(matches!(decide_on("deployment-create.json", &templates, on_template), Decision::Skip(_)));
    }

    #[test]
    fn other_operations_and_kinds() {
        let config = Config::default();
        assert!(matches!(
            decide_on("pod-create-simple.json", &config, |r| r["request"]["operation"] = "DELETE".into()),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide_on("pod-create-simple.json", &config, |r| r["request"]["kind"]["kind"] = "ConfigMap".into()),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide_on("pod-create-simple.json", &config, |r| r["request"]["subResource"] = "status".into()),
            Decision::Skip(_)
        ));
    }
}
