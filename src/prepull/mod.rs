//! Shared-base pre-pull (docs/design.md, *Pre-pull runs no code of the base*): find which configured bases a pod's images are built
//! on ([`detect`]), inject digest-pinned pre-pull init containers or image volumes for them
//! ([`inject`]), render the node pre-puller DaemonSet ([`daemonset`]), and report layer sharing
//! ([`layers`]).
//!
//! # Calling it from the admission handler
//!
//! Build one [`Prepull`] next to the engine and keep it for the life of the server (its caches
//! live in it). Then, for a Pod CREATE in enforce mode with `prepull.enabled` (the caller
//! decides; [`Prepull::ops`] does not look at the operation or mode):
//!
//! ```ignore
//! let prepull = Prepull::new(&engine.config, engine.resolver.clone());
//! // … after `let plan = engine.plan(sites, &keychain, deadline).await;` (`deadline: resolve::Deadline`)
//! let mut patch = plan.patch();
//! if mode == Mode::Enforce && request.operation == "CREATE" && request.kind.kind == "Pod"
//!     && engine.config.prepull.enabled
//! {
//!     patch.0.extend(prepull.ops(object, &plan.pins, &keychain, deadline).await);
//! }
//! ```
//!
//! `object` is the pod as received (before the plan's replace ops). The ops only append (init
//! containers, volumes) and add one annotation, so they compose with the plan's `replace` ops in
//! either order. `ops` never waits past `deadline`: what is not decided by then is left out and
//! finished in the background, so the next pod with the same images gets it.

pub mod daemonset;
pub mod detect;
pub mod inject;
pub mod layers;

use std::{collections::BTreeSet, sync::Arc};

use globset::GlobSet;
use json_patch::PatchOperation;
use serde_json::{Value, json};

use self::detect::{App, Detector, PinnedBase, Verdict};
use crate::{
    Config,
    config::{Detect, Strategy},
    plan::Pin,
    reference::{self, Reference},
    registry::auth::Keychain,
    resolve::Deadline,
    resolve::Resolver,
    sites::{self, Shape},
};

/// Pod annotation listing the injected bases (sorted pinned references, comma-separated).
pub const ANNOTATION: &str = "layerlink.io/prepull";
/// Name of the tools init container and of the emptyDir volume it fills.
pub const TOOLS: &str = "layerlink-tools";
/// Where the emptyDir is mounted in every injected container.
pub const TOOLS_MOUNT: &str = "/layerlink-tools";
/// The no-op binary inside the emptyDir.
pub const NOOP_IN_VOLUME: &str = "/layerlink-tools/noop";
/// The no-op binary inside the tools (layerlink) image, as the Dockerfile installs it.
pub const NOOP_IN_TOOLS_IMAGE: &str = "/usr/local/bin/layerlink-noop";
/// Prefix of the per-base init containers.
pub const PREPULL_PREFIX: &str = "layerlink-prepull-";
/// Prefix of the per-base image volumes (`strategy: imageVolume`).
pub const VOLUME_PREFIX: &str = "layerlink-base-";
/// The unprivileged user and group every injected container runs as (distroless `nonroot`).
pub const NONROOT: i64 = 65532;

/// What pre-pull adds to a pod, and what it had to leave out.
#[derive(Debug, Default)]
pub struct Injection {
    pub ops: Vec<PatchOperation>,
    /// Why the tools image or a base the pod needs could not be used (short, for a warning).
    pub problems: Vec<String>,
}

/// A base a pod's images were found to be built on, ready to inject.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoundBase {
    /// DNS-label-safe short name: `layerlink-prepull-<short>`, `layerlink-base-<short>`.
    pub short: String,
    /// The base pinned by digest (`registry/repo:tag@sha256:…` or `repo@sha256:…`).
    pub image: String,
}

/// A configured base, compiled.
#[derive(Debug)]
pub struct ConfiguredBase {
    pub image: String,
    pub reference: Reference,
    pub short: String,
    pub globs: GlobSet,
}

/// Pre-pull for the admission path. See the module docs for how to call it.
pub struct Prepull {
    enabled: bool,
    strategy: Strategy,
    detect: Detect,
    keep_tag: bool,
    tools_image: Option<(String, Reference)>,
    bases: Vec<Arc<ConfiguredBase>>,
    resolver: Arc<Resolver>,
    detector: Detector,
    /// How long a background look (base resolution, manifests) may take after the deadline.
    background: std::time::Duration,
}

impl Prepull {
    /// Compiles the `prepull` section. Problems the config validation already rejects (bad
    /// references or globs) leave the base out with a warning instead of panicking.
    pub fn new(config: &Config, resolver: Arc<Resolver>) -> Self {
        let prepull = &config.prepull;
        let bases = configured_bases(config);
        let tools_image = match &prepull.tools_image {
            Some(image) => match Reference::parse(image) {
                Ok(r) => Some((image.clone(), r)),
                Err(e) => {
                    tracing::warn!(%e, "prepull.toolsImage is invalid: no pre-pull init containers");
                    None
                }
            },
            None => None,
        };
        if prepull.enabled && prepull.strategy == Strategy::InitContainer && tools_image.is_none() {
            tracing::warn!("prepull.enabled with strategy initContainer needs prepull.toolsImage: nothing is injected");
        }
        let detector = Detector::new(prepull.platform.clone(), resolver.registries().clone());
        Prepull {
            enabled: prepull.enabled,
            strategy: prepull.strategy,
            detect: prepull.detect,
            keep_tag: config.resolve.keep_tag,
            tools_image,
            bases: bases.into_iter().map(Arc::new).collect(),
            resolver,
            detector,
            background: config.resolve.request_timeout * 3,
        }
    }

    /// The detector and its caches (verdicts by digest pair, layer lists by digest).
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// JSON Patch ops that add pre-pull for the bases `pod`'s images are built on (see
    /// [`Prepull::inject`], which also says why a base was left out).
    pub async fn ops(
        &self,
        pod: &Value,
        pins: &[Pin],
        keychain: &Arc<Keychain>,
        deadline: Deadline,
    ) -> Vec<PatchOperation> {
        self.inject(pod, pins, keychain, deadline).await.ops
    }

    /// What pre-pull adds to `pod`: JSON Patch ops for the bases its images are built on, and
    /// why pre-pull left something out that it should have done (the tools image or a base
    /// could not be pinned), for a warning on the pod, a log line and a metric.
    ///
    /// `pod` is the Pod object as received; `pins` the engine's plan for it (digests of the images
    /// it pinned; images written with a digest count too). There are no ops when pre-pull is
    /// disabled, the pod already has our containers or annotation (reinvocation), no base is
    /// found by `deadline`, or (initContainer strategy) the tools image cannot be pinned in time.
    pub async fn inject(&self, pod: &Value, pins: &[Pin], keychain: &Arc<Keychain>, deadline: Deadline) -> Injection {
        let mut out = Injection::default();
        if !self.enabled || self.bases.is_empty() || inject::already_injected(pod) || inject::is_windows(pod) {
            return out;
        }
        let needs_tools = self.strategy == Strategy::InitContainer;
        if needs_tools && self.tools_image.is_none() {
            return out;
        }
        let apps = app_images(pod, pins);
        if apps.is_empty() {
            return out;
        }
        let candidates: Vec<Arc<ConfiguredBase>> = match self.detect {
            Detect::Config => {
                self.bases.iter().filter(|b| apps.iter().any(|a| detect::config_match(b, a))).cloned().collect()
            }
            Detect::Layers => {
                if apps.iter().all(|a| a.digest.is_none()) {
                    return out;
                }
                self.bases.clone()
            }
        };
        if candidates.is_empty() {
            return out;
        }
        let lookups = candidates.into_iter().map(|base| self.look(base, apps.clone(), keychain.clone(), deadline));
        let tools = async {
            match (&self.tools_image, needs_tools) {
                (Some((written, _)), true) => Some(self.pin(written, keychain, deadline).await),
                _ => None,
            }
        };
        let (looked, tools) = futures::join!(futures::future::join_all(lookups), tools);
        let mut found = Vec::new();
        for result in looked {
            match result {
                Ok(base) => found.extend(base),
                Err(problem) => out.problems.push(problem),
            }
        }
        let tools = match tools {
            Some(Ok(pinned)) => Some(pinned),
            Some(Err(problem)) => {
                out.problems.push(problem);
                None
            }
            None => None,
        };
        if found.is_empty() || (needs_tools && tools.is_none()) {
            return out;
        }
        out.ops = inject::inject(pod, &found, tools.as_deref(), self.strategy);
        out
    }

    /// Pins the tools image and every configured base now, as `serve` does at start-up: a
    /// reference that cannot be pinned would silently keep pods from getting pre-pull.
    /// Returns (image, pinned reference or why not) for each.
    pub async fn check(&self, keychain: &Arc<Keychain>, deadline: Deadline) -> Vec<(String, Result<String, String>)> {
        let tools = self.tools_image.iter().filter(|_| self.strategy == Strategy::InitContainer);
        let images: Vec<(&String, &Reference)> =
            tools.map(|(w, r)| (w, r)).chain(self.bases.iter().map(|b| (&b.image, &b.reference))).collect();
        let pinned = images.iter().map(|(written, _)| self.pin(written, keychain, deadline));
        let results = futures::future::join_all(pinned).await;
        images.into_iter().map(|(w, _)| w.clone()).zip(results).collect()
    }

    /// Pins the base and decides whether any app is built on it, in a task of its own: the caller
    /// stops waiting at `deadline`, the task runs on and fills the caches for the next pod.
    async fn look(
        &self,
        base: Arc<ConfiguredBase>,
        apps: Vec<App>,
        keychain: Arc<Keychain>,
        deadline: Deadline,
    ) -> Result<Option<FoundBase>, String> {
        let resolver = self.resolver.clone();
        let detector = self.detector.clone();
        let (detect, keep_tag, background) = (self.detect, self.keep_tag, self.background);
        let task = tokio::spawn(async move {
            let background_deadline = Deadline::after(background);
            let (digest, pinned) = match &base.reference.digest {
                Some(d) => (d.clone(), base.image.clone()),
                None => {
                    let resolved = resolver.resolve(&base.reference, &keychain, background_deadline).await;
                    match resolved {
                        Ok(r) => {
                            (r.digest.to_string(), reference::pin(&base.image, &base.reference, &r.digest, keep_tag))
                        }
                        Err(error) => {
                            tracing::warn!(base = %base.image, %error, "pre-pull base cannot be pinned");
                            return Err(format!("pre-pull base {} cannot be pinned: {error}", base.image));
                        }
                    }
                }
            };
            let pinned_base = PinnedBase { reference: base.reference.clone(), digest: digest.clone() };
            let built_on = match detect {
                Detect::Config => apps.iter().any(|a| detect::config_match(&base, a)),
                Detect::Layers => {
                    let verdicts = apps
                        .iter()
                        .filter(|a| a.digest.is_some())
                        .map(|a| detector.verdict(a, &pinned_base, &keychain, background_deadline.at));
                    futures::future::join_all(verdicts).await.into_iter().any(|v| v == Verdict::Yes)
                }
            };
            Ok(built_on.then(|| FoundBase { short: base.short.clone(), image: pinned }))
        });
        match tokio::time::timeout_at(deadline.at.into(), task).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pre-pull detection task failed");
                Err("pre-pull detection failed".into())
            }
            Err(_) => {
                tracing::info!("pre-pull detection not done by the deadline; finishing in the background");
                Ok(None)
            }
        }
    }

    async fn pin(&self, written: &str, keychain: &Arc<Keychain>, deadline: Deadline) -> Result<String, String> {
        match self.resolver.pin(written, keychain, deadline).await {
            Ok(pinned) => Ok(pinned),
            Err(error) => {
                tracing::warn!(image = %written, %error, "pre-pull image cannot be pinned");
                Err(format!("pre-pull image {written} cannot be pinned: {error}"))
            }
        }
    }
}

/// The configured bases with their short names (unique, DNS-label-safe).
pub fn configured_bases(config: &Config) -> Vec<ConfiguredBase> {
    let mut out: Vec<ConfiguredBase> = Vec::new();
    let mut taken = BTreeSet::new();
    for (i, base) in config.prepull.bases.iter().enumerate() {
        let reference = match Reference::parse(&base.image) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "prepull.bases[{i}] is left out");
                continue;
            }
        };
        let globs = crate::config::glob_set(&base.matches).unwrap_or_else(|e| {
            tracing::warn!(%e, "prepull.bases[{i}].match is ignored");
            GlobSet::empty()
        });
        let short = short_name(&reference, &mut taken);
        out.push(ConfiguredBase { image: base.image.clone(), reference, short, globs });
    }
    out
}

/// `python` for `docker.io/library/python:3.12`; `python-3-12` if `python` is taken; then `-2`, …
fn short_name(reference: &Reference, taken: &mut BTreeSet<String>) -> String {
    // Container and volume names are DNS labels (63); the longest prefix is 18 characters.
    const MAX: usize = 40;
    let last = reference.repository.rsplit('/').next().unwrap_or_default();
    let mut candidates = vec![dns_label(last, MAX)];
    if let Some(tag) = &reference.tag {
        candidates.push(dns_label(&format!("{last}-{tag}"), MAX));
    }
    for candidate in candidates {
        if !taken.contains(&candidate) {
            taken.insert(candidate.clone());
            return candidate;
        }
    }
    let stem = dns_label(last, MAX - 4);
    let mut n = 2;
    loop {
        let candidate = format!("{stem}-{n}");
        if taken.insert(candidate.clone()) {
            return candidate;
        }
        n += 1;
    }
}

fn dns_label(text: &str, max: usize) -> String {
    let mapped: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut label = String::new();
    for c in mapped.chars() {
        if c == '-' && (label.is_empty() || label.ends_with('-')) {
            continue;
        }
        label.push(c);
    }
    label.truncate(max);
    let label = label.trim_end_matches('-').to_string();
    if label.is_empty() { "base".into() } else { label }
}

/// Every image of the pod's containers and init containers with the digest it will run: the
/// plan's pin for that field, else a digest written in the reference.
fn app_images(pod: &Value, pins: &[Pin]) -> Vec<App> {
    sites::find(Shape::Pod, pod)
        .into_iter()
        .filter(|s| !s.pointer.starts_with("/spec/ephemeralContainers/") && !sites::is_volume(s))
        .filter_map(|site| {
            let reference = Reference::parse(&site.image).ok()?;
            let digest = pins
                .iter()
                .find(|p| p.site.pointer == site.pointer)
                .map(|p| p.digest.to_string())
                .or_else(|| reference.digest.clone());
            Some(App { written: site.image, reference, digest })
        })
        .collect()
}

/// The restricted-Pod-Security context of every container we add.
pub fn security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": NONROOT,
        "runAsGroup": NONROOT,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": true,
    })
}

/// The `layerlink-tools` init container: copies the no-op binary into the emptyDir.
pub fn tools_container(tools_image: &str, resources: Option<&Value>) -> Value {
    let mut c = json!({
        "name": TOOLS,
        "image": tools_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [NOOP_IN_TOOLS_IMAGE, "--copy-to", NOOP_IN_VOLUME],
        "volumeMounts": [{"name": TOOLS, "mountPath": TOOLS_MOUNT}],
        "securityContext": security_context(),
    });
    if let Some(r) = resources {
        c["resources"] = r.clone();
    }
    c
}

/// A `layerlink-prepull-<short>` init container: the base image, running the copied no-op.
pub fn prepull_container(base: &FoundBase, resources: Option<&Value>) -> Value {
    let mut c = json!({
        "name": format!("{PREPULL_PREFIX}{}", base.short),
        "image": base.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [NOOP_IN_VOLUME],
        "volumeMounts": [{"name": TOOLS, "mountPath": TOOLS_MOUNT, "readOnly": true}],
        "securityContext": security_context(),
    });
    if let Some(r) = resources {
        c["resources"] = r.clone();
    }
    c
}

/// The emptyDir the tools container fills.
pub fn tools_volume() -> Value {
    json!({"name": TOOLS, "emptyDir": {}})
}

/// An image volume of the base (`strategy: imageVolume`, Kubernetes ≥ 1.33 with ImageVolume).
pub fn image_volume(base: &FoundBase) -> Value {
    json!({
        "name": format!("{VOLUME_PREFIX}{}", base.short),
        "image": {"reference": base.image, "pullPolicy": "IfNotPresent"},
    })
}

/// The annotation value: the pinned bases, sorted, comma-separated.
pub fn annotation_value(bases: &[FoundBase]) -> String {
    let set: BTreeSet<&str> = bases.iter().map(|b| b.image.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_unique_dns_labels() {
        let config = Config::parse(
            "prepull: { bases: [ {image: 'python:3.12'}, {image: 'ghcr.io/x/python:3.11'}, {image: 'quay.io/y/python:3.11'}, \
             {image: 'registry.local:5000/team_a/base.image__x'}, {image: 'example.com/a-very-long-repository-name-that-goes-on-and-on-forever:1'} ] }",
        )
        .unwrap();
        let shorts: Vec<String> = configured_bases(&config).into_iter().map(|b| b.short).collect();
        assert_eq!(
            shorts,
            ["python", "python-3-11", "python-2", "base-image-x", "a-very-long-repository-name-that-goes-on"]
        );
        for short in shorts {
            assert!(format!("{PREPULL_PREFIX}{short}").len() <= 63);
        }
    }

    #[test]
    fn pins_and_written_digests_feed_detection() {
        let written = format!("busybox@sha256:{}", "a".repeat(64));
        let pod = json!({"spec": {
            "initContainers": [{"name": "i", "image": written}],
            "containers": [{"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "redis"}, {"name": "c", "image": "Bad Ref"}],
            "ephemeralContainers": [{"name": "e", "image": "debug:1"}],
        }});
        let site = sites::find(Shape::Pod, &pod).remove(1);
        let pinned = format!("sha256:{}", "b".repeat(64));
        let pins = [Pin { site, pinned: format!("nginx:1.25@{pinned}"), digest: pinned.as_str().into(), stale: None }];
        let apps = app_images(&pod, &pins);
        let got: Vec<(&str, Option<&str>)> = apps.iter().map(|a| (a.written.as_str(), a.digest.as_deref())).collect();
        let written_digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            got,
            [(written.as_str(), Some(written_digest.as_str())), ("nginx:1.25", Some(pinned.as_str())), ("redis", None)]
        );
    }
}
