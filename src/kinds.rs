//! The kinds of object layerlink finds images in, in one table.
//!
//! `sites` reads it to find an object's pod spec, `layerlink audit` to know what to list, the
//! webhook rules list the same resources, and the docs the same kinds; tests check each of those
//! against this table, so adding a kind is one line here (see docs/architecture.md).
//!
//! Kinds of other projects (custom resources such as Argo Rollouts or Knative Services) are
//! [`Declared`]: a few common ones are built in ([`BUILT_IN`]) and the config's
//! `workloads.kinds` adds more or changes them. `layerlink mutate` always reads them; the webhook
//! only those declared with `webhook: true`. Their pointers come from a config file, so they are
//! checked and bounded when it is loaded ([`Declared::check`]).

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

/// A kind with images declared by where they are, not compiled in: a custom resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Declared {
    /// API group, e.g. `argoproj.io`.
    pub group: String,
    /// API version within the group, e.g. `v1alpha1` (the webhook rule's apiVersions).
    pub version: String,
    pub kind: String,
    /// The resource name, e.g. `rollouts` (the webhook rule's resources).
    pub plural: String,
    /// JSON pointer to a pod spec: its containers, init and ephemeral containers and image
    /// volumes are read as a Pod's are.
    pub pod_spec: Option<String>,
    /// JSON pointers to single image strings, for kinds that keep images outside a pod spec.
    pub images: Vec<String>,
    /// Pinned by the webhook too (its rules then include this kind). `layerlink mutate` always.
    pub webhook: bool,
}

/// The most kinds a config may declare: each is a webhook rule and a lookup per document.
pub const MAX_DECLARED: usize = 64;
/// The most image pointers one kind may declare.
pub const MAX_IMAGE_POINTERS: usize = 32;
/// The longest pointer accepted: real pod-spec paths are under 60 characters.
pub const MAX_POINTER_LEN: usize = 256;
/// The most reference tokens (depth) of a pointer: real paths have at most 6.
pub const MAX_POINTER_DEPTH: usize = 16;

const fn built_in(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    pod_spec: &'static str,
) -> (&'static str, &'static str, &'static str, &'static str, &'static str) {
    (group, version, kind, plural, pod_spec)
}

/// Common custom resources with a pod template, read by `layerlink mutate` without any config
/// (group, version, kind, plural, pod spec pointer), from each project's published CRD schema.
pub const BUILT_IN: &[(&str, &str, &str, &str, &str)] = &[
    built_in("argoproj.io", "v1alpha1", "Rollout", "rollouts", "/spec/template/spec"),
    built_in("serving.knative.dev", "v1", "Service", "services", "/spec/template/spec"),
    built_in("serving.knative.dev", "v1", "Configuration", "configurations", "/spec/template/spec"),
    built_in("keda.sh", "v1alpha1", "ScaledJob", "scaledjobs", "/spec/jobTargetRef/template/spec"),
    built_in("apps.kruise.io", "v1alpha1", "CloneSet", "clonesets", "/spec/template/spec"),
];

impl Declared {
    /// `group/version`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// Whether an object of this group (any version) and kind is of this kind.
    pub fn matches(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }

    /// Fills what `self` leaves out from `base` (a built-in entry of the same kind).
    fn over(mut self, base: &Declared) -> Declared {
        if self.version.is_empty() {
            self.version.clone_from(&base.version);
        }
        if self.plural.is_empty() {
            self.plural.clone_from(&base.plural);
        }
        if self.pod_spec.is_none() && self.images.is_empty() {
            self.pod_spec.clone_from(&base.pod_spec);
            self.images.clone_from(&base.images);
        }
        self
    }

    /// Refuses what cannot be used, naming the entry: a kind layerlink already knows, no image
    /// location, a webhook entry without the version and plural its rule needs, or a pointer
    /// that is not a bounded RFC 6901 pointer.
    pub fn check(&self) -> Result<(), String> {
        let name = |what: &str, value: &str, max: usize, ok: fn(char) -> bool| {
            if value.is_empty() || value.len() > max || !value.chars().all(ok) {
                Err(format!("{what} {value:?} must be 1 to {max} letters, digits, '.' or '-'"))
            } else {
                Ok(())
            }
        };
        let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
        name("group", &self.group, 253, dns)?;
        name("kind", &self.kind, 63, |c| c.is_ascii_alphanumeric())?;
        if !self.version.is_empty() {
            name("version", &self.version, 63, |c| c.is_ascii_lowercase() || c.is_ascii_digit())?;
        }
        if !self.plural.is_empty() {
            name("plural", &self.plural, 63, dns)?;
        }
        if self.webhook && (self.version.is_empty() || self.plural.is_empty()) {
            return Err("webhook: true needs version and plural (the webhook rule names them)".into());
        }
        if self.pod_spec.is_none() == self.images.is_empty() {
            return Err("needs podSpec or images, not both".into());
        }
        if self.images.len() > MAX_IMAGE_POINTERS {
            return Err(format!("at most {MAX_IMAGE_POINTERS} images pointers, got {}", self.images.len()));
        }
        for pointer in self.pod_spec.iter().chain(&self.images) {
            check_pointer(pointer)?;
        }
        Ok(())
    }
}

/// An RFC 6901 pointer of at most [`MAX_POINTER_LEN`] bytes and [`MAX_POINTER_DEPTH`] tokens,
/// each non-empty, printable, and with `~` only as `~0` or `~1`.
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    let shown: String = pointer.chars().take(40).collect();
    if pointer.len() > MAX_POINTER_LEN {
        return Err(format!("pointer {shown:?}… is longer than {MAX_POINTER_LEN} bytes"));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("pointer {shown:?} must start with '/'"));
    };
    let tokens: Vec<&str> = rest.split('/').collect();
    if tokens.len() > MAX_POINTER_DEPTH {
        return Err(format!("pointer {shown:?} is deeper than {MAX_POINTER_DEPTH} tokens"));
    }
    for token in tokens {
        let bad_tilde =
            token.match_indices('~').any(|(i, _)| !matches!(token.as_bytes().get(i + 1), Some(b'0' | b'1')));
        if token.is_empty() || bad_tilde || token.chars().any(char::is_control) {
            return Err(format!("pointer {shown:?} has an empty or invalid token"));
        }
    }
    Ok(())
}

/// The built-in entries with the config's `workloads.kinds` over them: an entry of the same group
/// and kind as a built-in one replaces it (taking what it leaves out from it); the others follow.
pub fn declared(config: &[Declared]) -> Vec<Declared> {
    let mut all: Vec<Declared> = BUILT_IN
        .iter()
        .map(|&(group, version, kind, plural, pod_spec)| Declared {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            pod_spec: Some(pod_spec.into()),
            images: Vec::new(),
            webhook: false,
        })
        .collect();
    for entry in config {
        match all.iter_mut().find(|d| d.matches(&entry.group, &entry.kind)) {
            Some(base) => *base = entry.clone().over(base),
            None => all.push(entry.clone()),
        }
    }
    all
}

/// Whether a group and kind is one of [`ALL`] (which a declaration may not redefine).
pub fn is_known(group: &str, kind: &str) -> bool {
    ALL.iter().any(|k| k.group == group && k.kind == kind)
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
