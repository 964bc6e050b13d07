//! Audit findings as `wgpolicyk8s.io/v1alpha2` PolicyReports, the objects Kyverno writes and
//! Policy Reporter (its UI, alerts and Prometheus exporter) and `kubectl get polr` read.
//!
//! A report describes what runs: the pods of a namespace, each counted under the workload that
//! owns it (a ReplicaSet's pods under its Deployment, a Job's under its CronJob, a StatefulSet's,
//! DaemonSet's or ReplicationController's under it, a bare pod as itself). There is one report
//! per namespace, named [`REPORT_NAME`], and per workload one result for each rule:
//!
//! - `images-pinned`: pass when every image of its pods is pinned by digest; fail when one is
//!   not, with the digest it would pin to (or why it cannot be pinned).
//! - `image-resolvable` (only for workloads with unpinned images): pass when every unpinned image
//!   resolves; warn when one resolved only from the cache because its registry failed; fail when
//!   one does not exist or is not a valid reference; error when the registry could not be asked
//!   (timeout, authentication, network).
//!
//! A report is bounded by [`MAX_REPORT_BYTES`]: past it the least pressing results (pass, then
//! warn, error, fail) are left out and the annotation [`TRUNCATED_ANNOTATION`] says how many; the
//! summary still counts every result.
//!
//! This module is pure: [`Collector`] groups listed objects into workloads, [`build`] turns
//! their plans into reports. Listing is `scan`, writing is `writer` (one leader-elected replica,
//! `lease`).

pub mod lease;
pub mod scan;
pub mod writer;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::{Config, engine::Plan, pins::controller_owner, policy::skip_reason, sites};

/// The name of layerlink's report in each namespace.
pub const REPORT_NAME: &str = "layerlink";
/// `policy` and `source` of every result.
pub const POLICY: &str = "layerlink";
pub const RULE_PINNED: &str = "images-pinned";
pub const RULE_RESOLVABLE: &str = "image-resolvable";
/// A report's serialized size at most. etcd refuses requests over 1.5 MiB by default
/// (`--max-request-bytes`); 1 MiB leaves room for metadata and managedFields.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// A result's message at most: enough for a dozen images and their digests.
pub const MAX_MESSAGE_CHARS: usize = 2048;
/// Says how many results a report left out, when it did.
pub const TRUNCATED_ANNOTATION: &str = "layerlink.io/truncated";
/// Problem causes (`Error::metric_label`) that mean the image itself is wrong, not the registry.
const BAD_IMAGE_CAUSES: [&str; 2] = ["not_found", "invalid_reference"];

/// The object a result is about: a top-level workload or a bare pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub api_version: String,
    pub uid: String,
}

impl Workload {
    fn from_ref(namespace: &str, owner: &Value) -> Option<Workload> {
        let field = |k: &str| owner.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Workload {
            namespace: namespace.to_string(),
            kind: field("kind")?,
            name: field("name")?,
            api_version: field("apiVersion").unwrap_or_default(),
            uid: field("uid").unwrap_or_default(),
        })
    }

    fn of_pod(namespace: &str, pod: &Value) -> Workload {
        let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        Workload {
            namespace: namespace.to_string(),
            kind: "Pod".into(),
            name: text("/metadata/name"),
            api_version: "v1".into(),
            uid: text("/metadata/uid"),
        }
    }
}

/// Kinds whose objects are owned by a workload above them (a Deployment's ReplicaSets, a
/// CronJob's Jobs): pods are counted under that workload.
pub const INTERMEDIATE_KINDS: [&str; 2] = ["ReplicaSet", "Job"];

/// Groups pods into workloads as they are listed, so that only what the plans need is kept (one
/// entry per workload and distinct image list, however many pods run it).
#[derive(Default)]
pub struct Collector {
    /// uid of a ReplicaSet or Job → the workload that controls it.
    owners: HashMap<String, Workload>,
    /// Each pod as (namespace, its controller reference or name, its image sites), grouped in
    /// [`Collector::finish`] once every owner is known.
    pending: Vec<(String, Value, Vec<sites::Site>)>,
}

impl Collector {
    /// Takes one listed object of `kind`: a Pod is grouped (unless excluded by the config),
    /// a ReplicaSet or Job remembered as an owner, anything else ignored.
    pub fn add(&mut self, config: &Config, kind: &str, object: &Value) {
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "Pod" => {
                if skip_reason(config, sites::Shape::Pod, object).is_some() {
                    return;
                }
                let sites = sites::find(sites::Shape::Pod, object);
                // Only what grouping needs; the pod's own name only for a bare pod.
                let reference = match controller_owner(object) {
                    Some(owner) => json!({"metadata": {"ownerReferences": [owner]}}),
                    None => json!({"metadata": {"name": object.pointer("/metadata/name"),
                        "uid": object.pointer("/metadata/uid")}}),
                };
                self.pending.push((namespace.to_string(), reference, sites));
            }
            k if INTERMEDIATE_KINDS.contains(&k) => {
                let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
                if let Some(owner) = controller_owner(object).and_then(|o| Workload::from_ref(namespace, o)) {
                    self.owners.insert(uid.to_string(), owner);
                }
            }
            _ => {}
        }
    }

    /// The workload `pod` counts under: its controller, or the controller of that controller
    /// when it is a ReplicaSet or Job that has one, or the pod itself.
    fn workload_of(&self, namespace: &str, pod: &Value) -> Workload {
        let Some(owner) = controller_owner(pod).and_then(|o| Workload::from_ref(namespace, o)) else {
            return Workload::of_pod(namespace, pod);
        };
        if INTERMEDIATE_KINDS.contains(&owner.kind.as_str())
            && let Some(above) = self.owners.get(&owner.uid)
        {
            return above.clone();
        }
        owner
    }

    /// Every workload with the image sites of its pods, and how many pods run each list (pods
    /// with the same images are planned once).
    pub fn finish(self) -> Vec<(Workload, Vec<sites::Site>, usize)> {
        let mut groups: BTreeMap<(Workload, Vec<sites::Site>), usize> = BTreeMap::new();
        for (namespace, pod, sites) in &self.pending {
            *groups.entry((self.workload_of(namespace, pod), sites.clone())).or_default() += 1;
        }
        groups.into_iter().map(|((workload, sites), pods)| (workload, sites, pods)).collect()
    }
}

/// What one workload's pods came to: every plan of its distinct image lists.
#[derive(Default)]
struct Tally {
    /// image → (pinned reference, why it is from the cache only).
    would_pin: BTreeMap<String, (String, Option<String>)>,
    /// image → (reason, cause).
    unresolvable: BTreeMap<String, (String, &'static str)>,
    already_pinned: usize,
    pods: usize,
}

/// One PolicyReport per namespace from the plans of `workloads` ((workload, plan of its pods'
/// images, number of pods)), stamped `now` (seconds since the epoch). Namespaces in `namespaces`
/// with no workload get an empty report, so results that went away are cleared.
pub fn build(workloads: &[(Workload, Plan, usize)], namespaces: &[String], now: i64) -> Vec<Value> {
    let mut tallies: BTreeMap<&str, BTreeMap<&Workload, Tally>> =
        namespaces.iter().map(|ns| (ns.as_str(), BTreeMap::new())).collect();
    for (workload, plan, pods) in workloads {
        let tally = tallies.entry(workload.namespace.as_str()).or_default().entry(workload).or_default();
        tally.pods += pods;
        tally.already_pinned += plan.already_pinned;
        for pin in &plan.pins {
            tally
                .would_pin
                .insert(pin.site.image.clone(), (pin.pinned.clone(), pin.stale.as_deref().map(String::from)));
        }
        for problem in &plan.problems {
            tally.unresolvable.insert(problem.site.image.clone(), (problem.reason.clone(), problem.cause));
        }
    }
    tallies
        .into_iter()
        .map(|(namespace, workloads)| {
            let results: Vec<Value> = workloads.iter().flat_map(|(w, tally)| results_of(w, tally, now)).collect();
            report(namespace, results)
        })
        .collect()
}

fn results_of(workload: &Workload, tally: &Tally, now: i64) -> Vec<Value> {
    let result = |rule: &str, outcome: &str, message: String| {
        json!({
            "policy": POLICY,
            "rule": rule,
            "result": outcome,
            "scored": true,
            "source": POLICY,
            "category": "Supply Chain",
            "severity": "medium",
            "message": bounded(&message),
            "resources": [{
                "apiVersion": workload.api_version,
                "kind": workload.kind,
                "name": workload.name,
                "namespace": workload.namespace,
                "uid": workload.uid,
            }],
            "properties": {"pods": tally.pods.to_string()},
            "timestamp": {"seconds": now, "nanos": 0},
        })
    };
    if tally.would_pin.is_empty() && tally.unresolvable.is_empty() {
        // Nothing to pin and nothing pinned: every image is excluded, nothing to say.
        if tally.already_pinned == 0 {
            return Vec::new();
        }
        return vec![result(RULE_PINNED, "pass", "every image is pinned by digest".into())];
    }
    let unpinned: Vec<String> = tally
        .would_pin
        .iter()
        .map(|(image, (pinned, _))| format!("{image} would pin to {pinned}"))
        .chain(tally.unresolvable.keys().map(|image| format!("{image} cannot be pinned (see {RULE_RESOLVABLE})")))
        .collect();
    let pinned = result(RULE_PINNED, "fail", format!("not pinned by digest: {}", unpinned.join("; ")));
    let resolvable = if !tally.unresolvable.is_empty() {
        let bad_image = tally.unresolvable.values().any(|(_, cause)| BAD_IMAGE_CAUSES.contains(cause));
        let lines: Vec<String> =
            tally.unresolvable.iter().map(|(image, (reason, _))| format!("{image}: {reason}")).collect();
        result(
            RULE_RESOLVABLE,
            if bad_image { "fail" } else { "error" },
            format!("cannot resolve {}", lines.join("; ")),
        )
    } else if tally.would_pin.values().any(|(_, stale)| stale.is_some()) {
        let lines: Vec<String> = tally
            .would_pin
            .iter()
            .filter_map(|(image, (_, stale))| Some(format!("{image} ({})", stale.as_ref()?)))
            .collect();
        result(RULE_RESOLVABLE, "warn", format!("resolved from the cache only: {}", lines.join("; ")))
    } else {
        result(RULE_RESOLVABLE, "pass", "every unpinned image resolves to a digest".into())
    };
    vec![pinned, resolvable]
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] on a character boundary, with an ellipsis.
fn bounded(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_string(),
    }
}

/// How pressing a result is: kept first when a report is over its size.
fn rank(result: &Value) -> u8 {
    match result["result"].as_str() {
        Some("fail") => 0,
        Some("error") => 1,
        Some("warn") => 2,
        _ => 3,
    }
}

/// The report of one namespace: its summary counts every result, its results are bounded by
/// [`MAX_REPORT_BYTES`].
fn report(namespace: &str, results: Vec<Value>) -> Value {
    let mut summary = BTreeMap::from([("pass", 0u64), ("fail", 0), ("warn", 0), ("error", 0), ("skip", 0)]);
    for r in &results {
        if let Some(count) = r["result"].as_str().and_then(|k| summary.get_mut(k)) {
            *count += 1;
        }
    }
    let mut object = json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "layerlink"},
        },
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace},
        "summary": summary,
        "results": [],
    });
    let total = results.len();
    let mut budget = MAX_REPORT_BYTES.saturating_sub(size(&object) + 256);
    let mut by_rank: Vec<usize> = (0..total).collect();
    by_rank.sort_by_key(|&i| rank(&results[i]));
    let mut keep = vec![false; total];
    for i in by_rank {
        let bytes = size(&results[i]) + 1;
        if bytes > budget {
            break;
        }
        budget -= bytes;
        keep[i] = true;
    }
    let kept: Vec<Value> = results.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| r).collect();
    if kept.len() < total {
        let note = format!(
            "{} of {total} results left out to stay under {} KiB; the summary counts all; `layerlink audit -n {namespace}` lists everything",
            total - kept.len(),
            MAX_REPORT_BYTES / 1024
        );
        object["metadata"]["annotations"] = json!({ TRUNCATED_ANNOTATION: note });
    }
    object["results"] = Value::Array(kept);
    object
}

/// Seconds since the epoch, for result timestamps.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests;
