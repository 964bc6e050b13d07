//! The kinds of object layerlink finds images in, in one table.
//!
//! `sites` reads it to find an object's pod spec, `layerlink audit` to know what to list, the
//! webhook rules list the same resources, and the docs the same kinds; tests check each of those
//! against this table, so adding a kind is one line here (see docs/architecture.md).

/// One kind with a pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// API group ("" for the core group).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name, as in webhook rules and API paths.
    pub plural: &'static str,
    /// JSON pointer from the object's root to its pod spec.
    pub pod_spec: &'static str,
    /// Whether objects of this kind run pods (what `layerlink audit` lists); a PodTemplate does not.
    pub runs_pods: bool,
}

impl Kind {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Whether this is a workload (a kind with a pod template), not a Pod.
    pub fn is_template(&self) -> bool {
        self.kind != POD.kind
    }
}

const fn kind(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    pod_spec: &'static str,
    runs_pods: bool,
) -> Kind {
    Kind { group, version: "v1", kind, plural, pod_spec, runs_pods }
}

/// Pods, pinned in every enforce namespace.
pub const POD: Kind = kind("", "Pod", "pods", "/spec", true);

/// Pods first, then the kinds with a pod template, in the order `layerlink audit` reports them.
/// The webhook pins templates only with `workloads.templates: true`; `layerlink mutate` always.
pub const ALL: &[Kind] = &[
    POD,
    kind("apps", "Deployment", "deployments", "/spec/template/spec", true),
    kind("apps", "StatefulSet", "statefulsets", "/spec/template/spec", true),
    kind("apps", "DaemonSet", "daemonsets", "/spec/template/spec", true),
    kind("apps", "ReplicaSet", "replicasets", "/spec/template/spec", true),
    kind("batch", "Job", "jobs", "/spec/template/spec", true),
    kind("batch", "CronJob", "cronjobs", "/spec/jobTemplate/spec/template/spec", true),
    kind("", "ReplicationController", "replicationcontrollers", "/spec/template/spec", true),
    kind("", "PodTemplate", "podtemplates", "/template/spec", false),
];

/// The kinds with a pod template.
pub fn templates() -> impl Iterator<Item = &'static Kind> {
    ALL.iter().filter(|k| k.is_template())
}

/// The entry for a kind name (`Deployment`), if layerlink reads images from it.
pub fn find(kind: &str) -> Option<&'static Kind> {
    ALL.iter().find(|k| k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admission::review::AdmissionReview, sites};

    /// The admission decoder keeps only what layerlink reads: for every kind of the table, an
    /// image at its pod spec is still found on the decoded object.
    #[test]
    fn the_admission_decoder_keeps_every_kinds_pod_spec() {
        for kind in ALL {
            let mut object = serde_json::json!({"metadata": {"name": "x"}});
            let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "app:v1"}],
                "initContainers": [{"name": "i", "image": "init:v1"}],
                "volumes": [{"name": "v", "image": {"reference": "vol:v1"}}]});
            // Build the object from the pointer down: /spec/template/spec → {spec: {template: {spec}}}.
            for token in kind.pod_spec.rsplit('/').filter(|t| !t.is_empty()) {
                spec = serde_json::json!({ token: spec });
            }
            json_patch::merge(&mut object, &spec);
            let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                "operation": "CREATE", "object": object}});
            let read = serde_json::from_value::<AdmissionReview>(review).unwrap().request.unwrap().object.unwrap();
            let shape = sites::shape(kind.kind).unwrap();
            let found: Vec<String> = sites::find(shape, &read).into_iter().map(|s| s.image).collect();
            assert_eq!(found, ["init:v1", "app:v1", "vol:v1"], "{}", kind.kind);
        }
    }

    #[test]
    fn names_are_unique_and_api_versions_read_as_in_manifests() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|b| a.kind != b.kind && a.plural != b.plural), "{a:?}");
        }
        assert_eq!(find("Deployment").unwrap().api_version(), "apps/v1");
        assert_eq!(POD.api_version(), "v1");
        assert!(find("ConfigMap").is_none());
        assert_eq!(templates().count(), ALL.len() - 1);
    }
}
