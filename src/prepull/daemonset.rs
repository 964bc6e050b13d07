//! `layerlink prepuller`: renders the node pre-puller, a DaemonSet that pulls every configured
//! base by digest on every node before pods arrive.
//!
//! Its pod runs the `layerlink-tools` init container, one `layerlink-prepull-<short>` init
//! container per base (the no-op from the base image pinned by digest) and a sleeper (the no-op
//! with `--sleep` from the tools image). The sleeper keeps the pod, and with it the exited init
//! containers, alive: the kubelet's image garbage collector does not remove images that a pod's
//! containers use, so the bases stay on the node. `strategy: imageVolume` mounts the bases as
//! image volumes into the sleeper instead of running init containers.
//!
//! Priority: by default a PriorityClass `layerlink-prepull` (value -10, `preemptionPolicy:
//! Never`) is rendered with the DaemonSet, so a pre-puller pod never preempts a workload and is
//! the first to go when a node is full; `--priority-class NAME` uses an existing class instead.
//! `maxUnavailable` (10% by default) bounds how many nodes re-pull at once when a base changes,
//! so a new base does not reach the registry from every node at the same moment.
//!
//! Keep it current by re-rendering when the config (or a base's tag) changes and applying the
//! result (`layerlink prepuller --config … | kubectl apply -f -`, e.g. from CI or a CronJob).

use std::{path::PathBuf, sync::Arc};

use serde_json::{Value, json};

use super::{
    ANNOTATION, FoundBase, NOOP_IN_TOOLS_IMAGE, VOLUME_PREFIX, annotation_value, configured_bases, image_volume,
    prepull_container, security_context, tools_container, tools_volume,
};
use crate::{
    Config, Error,
    config::Strategy,
    metrics::Metrics,
    registry::auth::Keychain,
    resolve::{Deadline, Resolver},
};

pub const NAME: &str = "layerlink-prepuller";
pub const PRIORITY_CLASS: &str = "layerlink-prepull";
pub const PRIORITY_VALUE: i64 = -10;

/// What the pre-puller is rendered with, besides the config.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config file `serve` reads (`prepull.bases`, `prepull.toolsImage`, registries).
    pub config: PathBuf,
    /// Namespace of the DaemonSet.
    pub namespace: String,
    /// An existing PriorityClass to use instead of rendering `layerlink-prepull` (value -10).
    pub priority_class: Option<String>,
    /// Tolerate every taint (run on control-plane and dedicated nodes too).
    pub tolerate_all: bool,
    /// Taints to tolerate: KEY, KEY=VALUE, KEY:EFFECT or KEY=VALUE:EFFECT.
    pub tolerations: Vec<String>,
    /// How many nodes may re-pull at once during a rollout (a count or a percentage).
    pub max_unavailable: String,
}

/// Where the PriorityClass comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Render `layerlink-prepull` (value -10, never preempts) and use it.
    Render,
    /// Use an existing class.
    Existing(String),
}

/// Everything the rendering needs, already resolved.
#[derive(Clone, Debug)]
pub struct Render {
    pub namespace: String,
    /// Pinned bases.
    pub bases: Vec<FoundBase>,
    /// The pinned tools (layerlink) image.
    pub tools_image: String,
    pub strategy: Strategy,
    pub priority: Priority,
    pub tolerations: Vec<Value>,
    pub max_unavailable: String,
}

/// Tiny: the containers run a static no-op.
fn resources() -> Value {
    json!({"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "16Mi"}})
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/part-of": "layerlink",
        "app.kubernetes.io/component": "prepuller",
    })
}

/// The documents to apply: the PriorityClass (unless an existing one is named) and the DaemonSet.
pub fn render(r: &Render) -> Vec<Value> {
    let mut bases = r.bases.clone();
    bases.sort();
    let resources = resources();
    let mut sleeper = json!({
        "name": "sleep",
        "image": r.tools_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [NOOP_IN_TOOLS_IMAGE, "--sleep"],
        "securityContext": security_context(),
        "resources": resources,
    });
    let (init, volumes) = match r.strategy {
        Strategy::InitContainer => {
            let mut init = vec![tools_container(&r.tools_image, Some(&resources))];
            init.extend(bases.iter().map(|b| prepull_container(b, Some(&resources))));
            (init, vec![tools_volume()])
        }
        Strategy::ImageVolume => {
            sleeper["volumeMounts"] = bases
                .iter()
                .map(|b| {
                    json!({
                        "name": format!("{VOLUME_PREFIX}{}", b.short),
                        "mountPath": format!("/layerlink-bases/{}", b.short),
                        "readOnly": true,
                    })
                })
                .collect();
            (Vec::new(), bases.iter().map(image_volume).collect())
        }
    };
    let priority_class = match &r.priority {
        Priority::Render => PRIORITY_CLASS.to_string(),
        Priority::Existing(name) => name.clone(),
    };
    let mut pod_spec = json!({
        "priorityClassName": priority_class,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": super::NONROOT,
            "runAsGroup": super::NONROOT,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "containers": [sleeper],
        "volumes": volumes,
    });
    if !init.is_empty() {
        pod_spec["initContainers"] = Value::Array(init);
    }
    if !r.tolerations.is_empty() {
        pod_spec["tolerations"] = Value::Array(r.tolerations.clone());
    }
    let annotations = json!({ ANNOTATION: annotation_value(&bases) });
    let daemonset = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": r.namespace, "labels": labels(), "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": int_or_string(&r.max_unavailable), "maxSurge": 0},
            },
            "template": {
                "metadata": {"labels": labels(), "annotations": annotations},
                "spec": pod_spec,
            },
        },
    });
    let mut docs = Vec::new();
    if r.priority == Priority::Render {
        docs.push(json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": PRIORITY_CLASS, "labels": labels()},
            "value": PRIORITY_VALUE,
            "preemptionPolicy": "Never",
            "globalDefault": false,
            "description": "layerlink node pre-puller: below every workload, never preempts.",
        }));
    }
    docs.push(daemonset);
    docs
}

/// Multi-document YAML, long strings (pinned references) kept on one line.
pub fn to_yaml(docs: &[Value]) -> Result<String, Error> {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_multiple_with_options(docs, options)
        .map_err(|e| Error::Config(format!("rendering YAML: {e}")))
}

/// `3` → 3, `10%` → "10%" (an IntOrString).
fn int_or_string(text: &str) -> Value {
    text.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `KEY[=VALUE][:EFFECT]` → a toleration.
pub fn parse_toleration(text: &str) -> Result<Value, Error> {
    let (rest, effect) = match text.rsplit_once(':') {
        Some((rest, effect)) => (rest, Some(effect)),
        None => (text, None),
    };
    if let Some(effect) = effect
        && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
    {
        return Err(Error::Config(format!(
            "--toleration {text:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
        )));
    }
    let (key, value) = match rest.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (rest, None),
    };
    if key.is_empty() {
        return Err(Error::Config(format!("--toleration {text:?}: the key is empty (use --tolerate-all)")));
    }
    let mut t = match value {
        Some(v) => json!({"key": key, "operator": "Equal", "value": v}),
        None => json!({"key": key, "operator": "Exists"}),
    };
    if let Some(effect) = effect {
        t["effect"] = json!(effect);
    }
    Ok(t)
}

/// The tolerations from the flags.
pub fn tolerations(tolerate_all: bool, flags: &[String]) -> Result<Vec<Value>, Error> {
    if tolerate_all {
        return Ok(vec![json!({"operator": "Exists"})]);
    }
    flags.iter().map(|t| parse_toleration(t)).collect()
}

/// The pre-puller's objects with every image pinned, or why a base or the tools image could not
/// be pinned (then nothing is rendered: a partial DaemonSet would silently stop warming a base).
pub async fn documents(args: &Options) -> Result<Result<Vec<Value>, Vec<String>>, Error> {
    let config = Config::load(&args.config)?;
    let tolerations = tolerations(args.tolerate_all, &args.tolerations)?;
    if config.prepull.bases.is_empty() {
        return Err(Error::Config(format!("{}: prepull.bases is empty: nothing to pre-pull", args.config.display())));
    }
    let Some(tools) = config.prepull.tools_image.clone() else {
        return Err(Error::Config(format!(
            "{}: prepull.toolsImage is not set (the pre-puller runs layerlink-noop from it)",
            args.config.display()
        )));
    };
    let strategy = config.prepull.strategy;
    let bases = configured_bases(&config);
    let resolver = Resolver::new(&config, Arc::new(Metrics::new(&config)))?;
    let keychain = Arc::new(Keychain::default());
    let deadline = Deadline::after(config.resolve.request_timeout);
    let pinned_bases = futures::future::join_all(bases.iter().map(|b| resolver.pin(&b.image, &keychain, deadline)));
    let (pinned_bases, pinned_tools) = futures::join!(pinned_bases, resolver.pin(&tools, &keychain, deadline));
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for (base, pinned) in bases.iter().zip(pinned_bases) {
        match pinned {
            Ok(image) => found.push(FoundBase { short: base.short.clone(), image }),
            Err(e) => problems.push(format!("base {}: {e}", base.image)),
        }
    }
    let tools_image = match pinned_tools {
        Ok(image) => image,
        Err(e) => {
            problems.push(format!("tools image {tools}: {e}"));
            return Ok(Err(problems));
        }
    };
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let priority = match args.priority_class.clone() {
        Some(name) => Priority::Existing(name),
        None => Priority::Render,
    };
    Ok(Ok(render(&Render {
        namespace: args.namespace.clone(),
        bases: found,
        tools_image,
        strategy,
        priority,
        tolerations,
        max_unavailable: args.max_unavailable.clone(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn render_with(strategy: Strategy, priority: Priority) -> Vec<Value> {
        render(&Render {
            namespace: "layerlink-system".into(),
            bases: vec![
                FoundBase { short: "python".into(), image: format!("python:3.12@{D}") },
                FoundBase { short: "debian".into(), image: format!("debian:12@{D}") },
            ],
            tools_image: format!("ghcr.io/layerlink/layerlink:0.1.0@{D}"),
            strategy,
            priority,
            tolerations: tolerations(true, &[]).unwrap(),
            max_unavailable: "10%".into(),
        })
    }

    fn assert_restricted(container: &Value) {
        let sc = &container["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{container}");
        assert_eq!(sc["runAsUser"], 65532);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(sc["readOnlyRootFilesystem"], true);
    }

    #[test]
    fn daemonset_with_init_containers() {
        let docs = render_with(Strategy::InitContainer, Priority::Render);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "PriorityClass");
        assert_eq!(docs[0]["value"], -10);
        assert_eq!(docs[0]["preemptionPolicy"], "Never");
        let ds = &docs[1];
        assert_eq!(ds["kind"], "DaemonSet");
        assert_eq!(ds["metadata"]["namespace"], "layerlink-system");
        assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "10%");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["priorityClassName"], PRIORITY_CLASS);
        assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
        let init = spec["initContainers"].as_array().unwrap();
        let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["layerlink-tools", "layerlink-prepull-debian", "layerlink-prepull-python"]);
        assert_eq!(init[1]["image"], format!("debian:12@{D}"));
        assert_eq!(init[1]["command"], json!(["/layerlink-tools/noop"]));
        let sleeper = &spec["containers"][0];
        assert_eq!(sleeper["command"], json!(["/usr/local/bin/layerlink-noop", "--sleep"]));
        for c in init.iter().chain([sleeper]) {
            assert_restricted(c);
            assert_eq!(c["resources"]["requests"]["cpu"], "1m");
        }
        assert_eq!(spec["volumes"], json!([{"name": "layerlink-tools", "emptyDir": {}}]));
        assert_eq!(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], NAME);
        assert_eq!(ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"], NAME);
        // YAML round trip.
        let yaml = to_yaml(&docs).unwrap();
        let back: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(back, docs, "{yaml}");
        assert!(yaml.contains(&format!("  image: debian:12@{D}\n")), "{yaml}");
    }

    #[test]
    fn daemonset_with_image_volumes_and_an_existing_priority_class() {
        let docs = render_with(Strategy::ImageVolume, Priority::Existing("low".into()));
        assert_eq!(docs.len(), 1);
        let spec = &docs[0]["spec"]["template"]["spec"];
        assert_eq!(spec["priorityClassName"], "low");
        assert!(spec.get("initContainers").is_none());
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes[0]["image"]["reference"], format!("debian:12@{D}"));
        assert_eq!(volumes[1]["name"], "layerlink-base-python");
        let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0]["readOnly"], true);
    }

    #[test]
    fn tolerations_from_flags() {
        assert_eq!(
            tolerations(false, &["dedicated=gpu:NoSchedule".into(), "spot".into(), "a:NoExecute".into()]).unwrap(),
            vec![
                json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}),
                json!({"key": "spot", "operator": "Exists"}),
                json!({"key": "a", "operator": "Exists", "effect": "NoExecute"}),
            ]
        );
        assert!(parse_toleration("x:Sometimes").is_err());
        assert!(parse_toleration("=v").is_err());
        assert_eq!(int_or_string("3"), json!(3));
        assert_eq!(int_or_string("25%"), json!("25%"));
    }
}
