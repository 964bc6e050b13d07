//! Rollout-consistent pins: every pod of one controller revision runs the same digest.
//!
//! Pinning pods one by one lets the pods of one ReplicaSet run different code when a tag moves
//! between two of them (a scale-up after the cache expired, another webhook replica, a restart).
//! So a pod created by a controller revision gets the digests its already-admitted siblings of
//! that revision carry, for the same container and the same written image. The cluster is the
//! store: the siblings are the revision's pods as the API server has them, so every webhook
//! replica and every restart agrees, nothing is written, and no template is mutated. Only when no
//! sibling holds a pin do the cache and registry decide; a new revision resolves afresh, which is
//! how a moved tag reaches a workload (a rollout).
//!
//! This module is the pure part: which revision a pod belongs to ([`Revision::of`]), what its
//! siblings keep ([`Kept::from_siblings`]), and which sites a kept digest pins
//! ([`Kept::pin_sites`]). Finding the siblings is `cluster::siblings`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::Value;

use crate::sites::Site;

/// The label a ReplicaSet created by a Deployment puts on its pods (the template's hash).
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The label StatefulSets and DaemonSets put on their pods (the ControllerRevision's name).
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// The labels a Job puts on its pods: its uid (Kubernetes ≥ 1.27 adds the prefixed form).
pub const JOB_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];

/// One controller revision: the pods created from one template of one controller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Revision {
    pub namespace: String,
    /// The controlling owner (`ReplicaSet`, `StatefulSet`, `DaemonSet` or `Job`).
    pub owner_kind: String,
    pub owner_name: String,
    pub owner_uid: String,
    /// The template's hash where the owner keeps several revisions (StatefulSet, DaemonSet).
    pub hash: Option<String>,
    /// A label selector that finds the revision's pods (a superset; the owner uid decides).
    pub selector: String,
}

impl Revision {
    /// The revision `pod` (a Pod as admitted, in `namespace`) belongs to, or None for a bare
    /// pod, an owner layerlink does not follow, or a pod without the labels its owner sets.
    pub fn of(namespace: &str, pod: &Value) -> Option<Revision> {
        let owner = controller_owner(pod)?;
        let field = |k: &str| owner.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let (kind, name, uid) = (field("kind")?, field("name")?, field("uid")?);
        let label = |k: &str| pod.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
        let (hash, selector) = match kind {
            "ReplicaSet" => match label(POD_TEMPLATE_HASH) {
                Some(h) => (None, format!("{POD_TEMPLATE_HASH}={h}")),
                // A ReplicaSet of its own: its pods carry the template's labels (its selector).
                None => (None, all_labels(pod)?),
            },
            "StatefulSet" | "DaemonSet" => {
                let h = label(CONTROLLER_REVISION_HASH)?;
                (Some(h.to_string()), format!("{CONTROLLER_REVISION_HASH}={h}"))
            }
            "Job" => {
                let (key, value) = JOB_UID_LABELS.iter().find_map(|k| Some((*k, label(k)?)))?;
                (None, format!("{key}={value}"))
            }
            _ => return None,
        };
        if namespace.is_empty() {
            return None;
        }
        Some(Revision {
            namespace: namespace.to_string(),
            owner_kind: kind.to_string(),
            owner_name: name.to_string(),
            owner_uid: uid.to_string(),
            hash,
            selector,
        })
    }

    /// A key unique to the revision (its owner's uid, and the hash where there are several).
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.owner_uid, self.hash.as_deref().unwrap_or(""))
    }

    /// `ReplicaSet/web-7d4b9`, for messages.
    pub fn owner(&self) -> String {
        format!("{}/{}", self.owner_kind, self.owner_name)
    }
}

/// The ownerReference with `controller: true`.
pub fn controller_owner(object: &Value) -> Option<&Value> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
}

/// `a=1,b=2` from every label of the pod (sorted); None without labels or with a value that
/// cannot be written in a selector.
fn all_labels(pod: &Value) -> Option<String> {
    let labels = pod.pointer("/metadata/labels")?.as_object()?;
    let mut pairs = Vec::new();
    for (k, v) in labels {
        let v = v.as_str()?;
        if k.contains([',', '=', '!', ' ']) || v.contains([',', '=', '!', ' ']) {
            return None;
        }
        pairs.push(format!("{k}={v}"));
    }
    (!pairs.is_empty()).then(|| pairs.join(","))
}

/// The digests a revision's pods carry: (container name, image as written) → digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    digests: BTreeMap<(String, String), Arc<str>>,
}

/// The most (container, image) pairs kept per revision: a pod has a few dozen at most, and a
/// hostile sibling list must not grow memory without bound.
pub const MAX_KEPT: usize = 256;

impl Kept {
    /// What `pods` (the revision's pods as listed) keep: for each pod whose controller is the
    /// revision's owner, each container (init and regular) whose image carries a digest, keyed by
    /// the image before the digest. The first pod listed wins a disagreement.
    pub fn from_siblings(revision: &Revision, pods: &[Value]) -> Kept {
        let mut kept = Kept::default();
        for pod in pods {
            let owned = controller_owner(pod).and_then(|o| o.get("uid")).and_then(Value::as_str)
                == Some(revision.owner_uid.as_str());
            let same_hash = revision.hash.as_deref().is_none_or(|h| {
                pod.pointer("/metadata/labels").and_then(|l| l.get(CONTROLLER_REVISION_HASH)).and_then(Value::as_str)
                    == Some(h)
            });
            if !owned || !same_hash || pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
                continue;
            }
            for list in ["initContainers", "containers"] {
                let Some(containers) = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array) else {
                    continue;
                };
                for container in containers {
                    let name = container.get("name").and_then(Value::as_str).unwrap_or("");
                    let Some((written, digest)) =
                        container.get("image").and_then(Value::as_str).and_then(|i| i.split_once('@'))
                    else {
                        continue;
                    };
                    kept.keep(name, written, digest);
                }
            }
        }
        kept
    }

    /// Keeps `digest` for (container, written) unless one is kept already (the first wins: a
    /// revision's pins never change once chosen).
    pub fn keep(&mut self, container: &str, written: &str, digest: &str) {
        // A sibling's image is the API server's copy, but whoever could create pods wrote it, so it
        // is checked like any input.
        if self.digests.len() >= MAX_KEPT || !crate::reference::is_digest(digest) {
            return;
        }
        self.digests.entry((container.to_string(), written.to_string())).or_insert_with(|| digest.into());
    }

    pub fn get(&self, container: &str, written: &str) -> Option<&Arc<str>> {
        self.digests.get(&(container.to_string(), written.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Splits `sites` into those a kept digest pins, as (site, digest), and the rest.
    pub fn pin_sites(&self, sites: Vec<Site>) -> (Vec<(Site, Arc<str>)>, Vec<Site>) {
        let mut kept = Vec::new();
        let mut rest = Vec::new();
        for site in sites {
            match self.get(&site.container, &site.image) {
                Some(digest) => kept.push((site, digest.clone())),
                None => rest.push(site),
            }
        }
        (kept, rest)
    }

    /// Adds what `other` keeps where this has nothing yet.
    pub fn merge(&mut self, other: &Kept) {
        for ((container, written), digest) in &other.digests {
            self.keep(container, written, digest);
        }
    }
}

/// The most a sibling lookup may take, whatever the budget: the pod still has to be resolved.
pub const MAX_LOOKUP: Duration = Duration::from_secs(1);

/// How long a review waits for its revision's siblings: a quarter of what is left of its
/// budget (the rest is for resolving what the siblings do not keep), at most [`MAX_LOOKUP`].
pub fn lookup_budget(remaining: Duration) -> Duration {
    (remaining / 4).min(MAX_LOOKUP)
}

/// Where an engine pin came from, for `layerlink_pins_total`: a stale cached digest served when
/// the registry failed, the cache, or the registry.
pub fn source(stale: bool, fresh_in_cache: bool) -> &'static str {
    match (stale, fresh_in_cache) {
        (true, _) => "stale",
        (false, true) => "cache",
        (false, false) => "registry",
    }
}

/// A kept digest that differs from what the tag now points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    pub container: String,
    pub image: String,
    pub kept: String,
    pub now: String,
}

/// Whether `kept` (a sibling's digest for `image`) is behind `now` (the tag's digest as far as
/// the cache knows; None when it does not know).
pub fn behind(container: &str, image: &str, kept: &str, now: Option<&str>) -> Option<Behind> {
    let now = now.filter(|now| *now != kept)?;
    Some(Behind { container: container.into(), image: image.into(), kept: kept.into(), now: now.into() })
}

impl Behind {
    /// The kubectl warning (short: one warning is at most 256 bytes, see `MAX_WARNING_LEN`).
    pub fn warning(&self, owner: &str) -> String {
        format!("layerlink: {} kept on {} ({owner}); tag now {}", self.container, short(&self.kept), short(&self.now))
    }

    /// `image kept→now`, for the log.
    pub fn log(&self) -> String {
        format!("{} {}→{}", self.image, self.kept, self.now)
    }
}

/// `sha256:` and the first 12 hex digits.
pub fn short(digest: &str) -> String {
    let cut = digest.find(':').map_or(0, |i| i + 1) + 12;
    if digest.len() > cut { format!("{}…", &digest[..cut]) } else { digest.to_string() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{admission::fixtures, sites};

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn pod(owner_kind: &str, uid: &str, labels: Value, images: &[(&str, &str)]) -> Value {
        json!({
            "metadata": {
                "generateName": "web-", "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "web-1", "uid": uid, "controller": true}]
            },
            "spec": {"containers": images.iter().map(|(n, i)| json!({"name": n, "image": i})).collect::<Vec<_>>()}
        })
    }

    #[test]
    fn revisions_of_each_controller() {
        let rs = pod("ReplicaSet", "u1", json!({"app": "web", "pod-template-hash": "7d4b9"}), &[]);
        let r = Revision::of("shop", &rs).unwrap();
        assert_eq!(
            (r.selector.as_str(), r.hash.as_deref(), r.owner().as_str()),
            ("pod-template-hash=7d4b9", None, "ReplicaSet/web-1")
        );
        let sts = pod(
            "StatefulSet",
            "u2",
            json!({"controller-revision-hash": "db-5c7f", "statefulset.kubernetes.io/pod-name": "db-0"}),
            &[],
        );
        let r = Revision::of("shop", &sts).unwrap();
        assert_eq!((r.selector.as_str(), r.hash.as_deref()), ("controller-revision-hash=db-5c7f", Some("db-5c7f")));
        assert_ne!(
            r.key(),
            Revision::of("shop", &pod("StatefulSet", "u2", json!({"controller-revision-hash": "db-6a1b"}), &[]))
                .unwrap()
                .key()
        );
        let job = pod("Job", "u3", json!({"controller-uid": "u3", "job-name": "batch"}), &[]);
        assert_eq!(Revision::of("shop", &job).unwrap().selector, "controller-uid=u3");
        // A bare pod, an owner that is not a controller, an owner kind we do not follow, no labels.
        assert!(Revision::of("shop", &json!({"metadata": {"name": "bare"}})).is_none());
        let mut not_controller = rs.clone();
        not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
        assert!(Revision::of("shop", &not_controller).is_none());
        assert!(Revision::of("shop", &pod("CloneSet", "u4", json!({"a": "b"}), &[])).is_none());
        assert!(Revision::of("shop", &pod("DaemonSet", "u5", json!({"app": "agent"}), &[])).is_none());
    }

    #[test]
    fn a_replicaset_of_its_own_is_found_by_its_pods_labels() {
        let request = fixtures::review("pod-create-from-replicaset.json").request.unwrap();
        let mut object = request.object.unwrap();
        // The read-only decode keeps labels; the fixture's pod carries the ReplicaSet's template labels.
        object["metadata"]["labels"] = json!({"app": "frontend", "tier": "web"});
        let r = Revision::of("fixtures", &object).unwrap();
        assert_eq!((r.owner().as_str(), r.selector.as_str()), ("ReplicaSet/frontend", "app=frontend,tier=web"));
        assert_eq!(r.owner_uid, "c22dfb23-7aff-49c8-9405-941501fde858");
    }

    #[test]
    fn siblings_keep_digests_by_container_and_written_image() {
        let labels = json!({"pod-template-hash": "h1"});
        let me = pod("ReplicaSet", "u1", labels.clone(), &[("app", "ghcr.io/org/app:v1")]);
        let revision = Revision::of("shop", &me).unwrap();
        let siblings = [
            pod(
                "ReplicaSet",
                "u1",
                labels.clone(),
                &[("app", &format!("ghcr.io/org/app:v1@{A}")), ("side", "envoy:1")],
            ),
            // A later sibling that disagrees loses: the first pin stands.
            pod("ReplicaSet", "u1", labels.clone(), &[("app", &format!("ghcr.io/org/app:v1@{B}"))]),
            // Another owner's pod with the same labels is not a sibling.
            pod("ReplicaSet", "other", labels.clone(), &[("side", &format!("envoy:1@{B}"))]),
        ];
        let kept = Kept::from_siblings(&revision, &siblings);
        assert_eq!(kept.get("app", "ghcr.io/org/app:v1").map(|d| &**d), Some(A));
        assert_eq!(kept.len(), 1);
        let sites = sites::find(
            sites::Shape::Pod,
            &pod(
                "ReplicaSet",
                "u1",
                labels,
                &[("app", "ghcr.io/org/app:v1"), ("app2", "ghcr.io/org/app:v1"), ("side", "envoy:1")],
            ),
        );
        let (pinned, rest) = kept.pin_sites(sites);
        assert_eq!(pinned.iter().map(|(s, d)| (s.container.as_str(), &**d)).collect::<Vec<_>>(), [("app", A)]);
        assert_eq!(rest.iter().map(|s| s.container.as_str()).collect::<Vec<_>>(), ["app2", "side"]);
    }

    #[test]
    fn statefulset_siblings_of_another_revision_do_not_count() {
        let me = pod("StatefulSet", "u2", json!({"controller-revision-hash": "new"}), &[("db", "postgres:16")]);
        let revision = Revision::of("shop", &me).unwrap();
        let old = pod(
            "StatefulSet",
            "u2",
            json!({"controller-revision-hash": "old"}),
            &[("db", &format!("postgres:16@{A}"))],
        );
        assert!(Kept::from_siblings(&revision, &[old]).is_empty());
    }

    #[test]
    fn hostile_sibling_values_are_bounded() {
        let labels = json!({"pod-template-hash": "h"});
        let me = pod("ReplicaSet", "u", labels.clone(), &[]);
        let revision = Revision::of("ns", &me).unwrap();
        let many: Vec<(String, String)> = (0..1000).map(|i| (format!("c{i}"), format!("app:{i}@{A}"))).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(n, i)| (n.as_str(), i.as_str())).collect();
        let bad = [("x", "app:1@sha256:zz"), ("y", "app:1@md5:0123"), ("z", "app:1@sha256:")];
        let kept = Kept::from_siblings(
            &revision,
            &[pod("ReplicaSet", "u", labels.clone(), &refs), pod("ReplicaSet", "u", labels, &bad)],
        );
        assert_eq!(kept.len(), MAX_KEPT);
        assert!(kept.get("x", "app:1").is_none() && kept.get("y", "app:1").is_none());
    }

    #[test]
    fn the_lookup_takes_a_quarter_of_what_is_left_at_most_a_second() {
        assert_eq!(lookup_budget(Duration::from_millis(1500)), Duration::from_millis(375));
        assert_eq!(lookup_budget(Duration::from_secs(30)), MAX_LOOKUP);
        assert_eq!(lookup_budget(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn pins_are_counted_by_source() {
        assert_eq!(source(true, true), "stale");
        assert_eq!(source(false, true), "cache");
        assert_eq!(source(false, false), "registry");
    }

    #[test]
    fn a_kept_digest_is_behind_only_when_the_cache_knows_another() {
        assert_eq!(behind("app", "app:v1", A, Some(A)), None);
        assert_eq!(behind("app", "app:v1", A, None), None);
        let b = behind("app", "app:v1", A, Some(B)).unwrap();
        let warning = b.warning("ReplicaSet/web-7d4b9");
        assert_eq!(
            warning,
            "layerlink: app kept on sha256:aaaaaaaaaaaa… (ReplicaSet/web-7d4b9); tag now sha256:bbbbbbbbbbbb…"
        );
        assert!(b.log().contains(A) && b.log().contains(B));
    }
}
