//! Which configured base an image is built on.
//!
//! `detect: config` matches the image against the base's `match` globs (the image as written, its
//! normalised form and its normalised name). `detect: layers` asks the registry: for the
//! configured platform, the base's layer digests must be a prefix of the app's; or the app's
//! manifest (or index) carries the OCI annotations `org.opencontainers.image.base.digest` (the
//! base's index digest or its platform manifest digest) or, with no digest, a
//! `org.opencontainers.image.base.name` naming the configured base.
//!
//! Digests are immutable, so verdicts are cached by (app digest, base digest) without expiry, and
//! layer lists by manifest digest; both caches are bounded. Concurrent looks at the same pair
//! share one computation.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use serde::Serialize;
use serde_json::Value;

use super::ConfiguredBase;
use crate::{
    Error,
    config::Platform,
    reference::Reference,
    registry::{Registries, auth::Keychain, sha256_digest},
};

pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";
pub const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";

const MAX_VERDICTS: u64 = 100_000;
const MAX_LAYER_LISTS: u64 = 10_000;

/// An image of the pod.
#[derive(Clone, Debug)]
pub struct App {
    /// As written in the pod.
    pub written: String,
    pub reference: Reference,
    /// The digest it runs (pinned by the plan or written), if known.
    pub digest: Option<String>,
}

/// A base pinned to a digest (its index digest for a multi-arch base).
#[derive(Clone, Debug)]
pub struct PinnedBase {
    pub reference: Reference,
    pub digest: String,
}

/// The answer for one (app, base) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    /// Not decided (registry error, deadline); no injection this time.
    Unknown(String),
}

/// One layer of a platform manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layer {
    pub digest: String,
    /// Compressed size in bytes, as the manifest says.
    pub size: u64,
}

/// The layers of an image for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayers {
    /// The digest looked up (an index digest for a multi-arch image).
    pub digest: String,
    /// The platform manifest's digest (equal to `digest` for a single-platform image).
    pub manifest_digest: String,
    pub layers: Vec<Layer>,
    /// `org.opencontainers.image.base.digest` of the platform manifest, else of the index.
    pub base_digest: Option<String>,
    /// `org.opencontainers.image.base.name` of the platform manifest, else of the index.
    pub base_name: Option<String>,
}

/// `detect: config`: does any `match` glob of the base cover the app?
pub(crate) fn config_match(base: &ConfiguredBase, app: &App) -> bool {
    !base.globs.is_empty()
        && (base.globs.is_match(&app.written)
            || base.globs.is_match(app.reference.to_string())
            || base.globs.is_match(app.reference.name()))
}

/// Whether `base` is a (non-empty) prefix of `app`, by layer digest.
pub fn is_prefix(base: &[Layer], app: &[Layer]) -> bool {
    !base.is_empty() && base.len() <= app.len() && base.iter().zip(app).all(|(b, a)| b.digest == a.digest)
}

/// What the app's OCI base annotations say about `base` (None: they say nothing).
pub fn annotations_say(app: &ImageLayers, base: &PinnedBase, base_manifest_digest: Option<&str>) -> Option<bool> {
    if let Some(digest) = &app.base_digest {
        let matches = digest == &base.digest || Some(digest.as_str()) == base_manifest_digest;
        return matches.then_some(true);
    }
    let name = Reference::parse(app.base_name.as_deref()?).ok()?;
    let same = name.name() == base.reference.name()
        && match (&name.digest, &base.reference.digest) {
            (Some(annotated), _) => annotated == &base.digest,
            (None, _) => name.tag_or_latest() == base.reference.tag_or_latest(),
        };
    same.then_some(true)
}

/// Verdict and layer-list caches, and the registry they are filled from. Cheap to clone.
#[derive(Clone)]
pub struct Detector {
    platform: Platform,
    registries: Arc<Registries>,
    verdicts: moka::future::Cache<(Arc<str>, Arc<str>), bool>,
    layer_lists: moka::future::Cache<Arc<str>, Arc<ImageLayers>>,
}

impl Detector {
    pub fn new(platform: Platform, registries: Arc<Registries>) -> Self {
        Detector {
            platform,
            registries,
            verdicts: moka::future::Cache::builder().max_capacity(MAX_VERDICTS).build(),
            layer_lists: moka::future::Cache::builder().max_capacity(MAX_LAYER_LISTS).build(),
        }
    }

    /// A cached verdict, without asking the registry.
    pub async fn cached(&self, app_digest: &str, base_digest: &str) -> Option<bool> {
        self.verdicts.get(&(Arc::from(app_digest), Arc::from(base_digest))).await
    }

    /// Is `app` built on `base`? (`detect: layers`; `app.digest` must be set.) Waits for the
    /// registry until `deadline`; the caller that wants to return earlier runs this in a task.
    pub async fn verdict(&self, app: &App, base: &PinnedBase, keychain: &Keychain, deadline: Instant) -> Verdict {
        let Some(app_digest) = &app.digest else { return Verdict::Unknown("the image has no digest".into()) };
        let key = (Arc::<str>::from(app_digest.as_str()), Arc::<str>::from(base.digest.as_str()));
        let compute = self.compute(&app.reference, app_digest, base, keychain);
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(budget, self.verdicts.try_get_with(key, compute)).await {
            Ok(Ok(true)) => Verdict::Yes,
            Ok(Ok(false)) => Verdict::No,
            Ok(Err(e)) => {
                tracing::warn!(image = %app.written, base = %base.reference, error = %e, "pre-pull detection failed");
                Verdict::Unknown(e.to_string())
            }
            Err(_) => Verdict::Unknown("no answer in time".into()),
        }
    }

    async fn compute(
        &self,
        app_ref: &Reference,
        app_digest: &str,
        base: &PinnedBase,
        keychain: &Keychain,
    ) -> Result<bool, Arc<Error>> {
        if app_digest == base.digest {
            return Ok(true);
        }
        let app = self.layers(app_ref, app_digest, keychain).await?;
        if annotations_say(&app, base, None) == Some(true) {
            return Ok(true);
        }
        let base_layers = self.layers(&base.reference, &base.digest, keychain).await?;
        if annotations_say(&app, base, Some(&base_layers.manifest_digest)) == Some(true) {
            return Ok(true);
        }
        Ok(is_prefix(&base_layers.layers, &app.layers))
    }

    /// The layers of `digest` (in `reference`'s repository) for the configured platform, cached.
    pub async fn layers(
        &self,
        reference: &Reference,
        digest: &str,
        keychain: &Keychain,
    ) -> Result<Arc<ImageLayers>, Arc<Error>> {
        let fetch =
            async { fetch_layers(&self.registries, reference, digest, &self.platform, keychain).await.map(Arc::new) };
        self.layer_lists.try_get_with(Arc::from(digest), fetch).await
    }
}

/// GETs the manifest of `reference` at `tag_or_digest`; for an index, the entry for `platform`.
pub async fn fetch_layers(
    registries: &Registries,
    reference: &Reference,
    tag_or_digest: &str,
    platform: &Platform,
    keychain: &Keychain,
) -> Result<ImageLayers, Error> {
    let host = reference.api_host().to_string();
    let top = get_verified(registries, reference, tag_or_digest, keychain).await?;
    let top_json: Value = parse_json(&host, &top.body)?;
    let (manifest_digest, manifest_json, index_annotations) = match top_json.get("manifests").and_then(Value::as_array)
    {
        Some(entries) => {
            let entry = pick_platform(entries, platform).ok_or_else(|| Error::NotFound {
                registry: host.clone(),
                what: format!(
                    "{}/{}@{} for {}",
                    reference.registry,
                    reference.repository,
                    top.digest,
                    describe(platform)
                ),
                message: format!("the index has no {} manifest", describe(platform)),
            })?;
            let platform_manifest = get_verified(registries, reference, &entry, keychain).await?;
            let json = parse_json(&host, &platform_manifest.body)?;
            if json.get("manifests").is_some() {
                return Err(Error::Registry {
                    registry: host,
                    message: format!("{entry}: an index inside an index is not supported"),
                });
            }
            (platform_manifest.digest, json, annotations(&top_json))
        }
        None => (top.digest.clone(), top_json, BTreeMap::new()),
    };
    let layers = manifest_json
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Registry {
            registry: host.clone(),
            message: format!("manifest {manifest_digest} has no layers (schema 1 manifests are not supported)"),
        })?
        .iter()
        .map(|l| {
            let digest = l.get("digest").and_then(Value::as_str);
            let size = l.get("size").and_then(Value::as_u64);
            match (digest, size) {
                (Some(digest), Some(size)) => Ok(Layer { digest: digest.to_string(), size }),
                _ => Err(Error::Registry {
                    registry: host.clone(),
                    message: format!("manifest {manifest_digest} has a layer without digest or size"),
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let own = annotations(&manifest_json);
    let pick = |key: &str| own.get(key).or_else(|| index_annotations.get(key)).cloned();
    Ok(ImageLayers {
        digest: top.digest,
        manifest_digest,
        layers,
        base_digest: pick(BASE_DIGEST_ANNOTATION),
        base_name: pick(BASE_NAME_ANNOTATION),
    })
}

/// A manifest; fetched by digest, its bytes must hash to that digest.
async fn get_verified(
    registries: &Registries,
    reference: &Reference,
    tag_or_digest: &str,
    keychain: &Keychain,
) -> Result<crate::registry::Manifest, Error> {
    let manifest = registries.manifest(reference, tag_or_digest, keychain).await?;
    if tag_or_digest.starts_with("sha256:") {
        let actual = sha256_digest(&manifest.body);
        if actual != tag_or_digest {
            return Err(Error::Registry {
                registry: reference.api_host().to_string(),
                message: format!("manifest {tag_or_digest} came back with digest {actual}"),
            });
        }
        return Ok(crate::registry::Manifest { digest: actual, ..manifest });
    }
    Ok(manifest)
}

fn parse_json(host: &str, body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::Registry { registry: host.to_string(), message: format!("manifest is not JSON: {e}") })
}

fn annotations(manifest: &Value) -> BTreeMap<String, String> {
    manifest
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The digest of the first index entry for `platform` (attestation entries have platform
/// `unknown/unknown` and never match).
pub fn pick_platform(entries: &[Value], platform: &Platform) -> Option<String> {
    entries.iter().find_map(|entry| {
        let p = entry.get("platform")?;
        let matches = p.get("os").and_then(Value::as_str) == Some(platform.os.as_str())
            && p.get("architecture").and_then(Value::as_str) == Some(platform.architecture.as_str());
        if matches { entry.get("digest").and_then(Value::as_str).map(str::to_string) } else { None }
    })
}

pub fn describe(platform: &Platform) -> String {
    format!("{}/{}", platform.os, platform.architecture)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layers(digests: &[&str]) -> Vec<Layer> {
        digests.iter().map(|d| Layer { digest: d.to_string(), size: 1 }).collect()
    }

    #[test]
    fn prefix_of_layers() {
        assert!(is_prefix(&layers(&["a", "b"]), &layers(&["a", "b", "c"])));
        assert!(is_prefix(&layers(&["a", "b"]), &layers(&["a", "b"])));
        assert!(!is_prefix(&layers(&["a", "b"]), &layers(&["a", "c", "b"])));
        assert!(!is_prefix(&layers(&["a", "b", "c"]), &layers(&["a", "b"])));
        assert!(!is_prefix(&[], &layers(&["a"])));
    }

    #[test]
    fn platform_entry_is_picked_and_attestations_skipped() {
        let entries = vec![
            json!({"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}}),
            json!({"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}}),
            json!({"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}),
            json!({"digest": "sha256:noplatform"}),
        ];
        assert_eq!(pick_platform(&entries, &Platform::default()).as_deref(), Some("sha256:amd"));
        let arm = Platform { os: "linux".into(), architecture: "arm64".into() };
        assert_eq!(pick_platform(&entries, &arm).as_deref(), Some("sha256:arm"));
        let s390 = Platform { os: "linux".into(), architecture: "s390x".into() };
        assert_eq!(pick_platform(&entries, &s390), None);
    }

    #[test]
    fn annotations_name_the_base() {
        let base =
            PinnedBase { reference: Reference::parse("registry.local/base:1").unwrap(), digest: "sha256:index".into() };
        let app = |digest: Option<&str>, name: Option<&str>| ImageLayers {
            digest: "sha256:app".into(),
            manifest_digest: "sha256:app".into(),
            layers: vec![],
            base_digest: digest.map(str::to_string),
            base_name: name.map(str::to_string),
        };
        assert_eq!(annotations_say(&app(Some("sha256:index"), None), &base, None), Some(true));
        assert_eq!(annotations_say(&app(Some("sha256:amd64"), None), &base, None), None);
        assert_eq!(annotations_say(&app(Some("sha256:amd64"), None), &base, Some("sha256:amd64")), Some(true));
        // A digest that names another base wins over a matching name.
        assert_eq!(annotations_say(&app(Some("sha256:old"), Some("registry.local/base:1")), &base, None), None);
        // A name alone: same repository and tag.
        assert_eq!(annotations_say(&app(None, Some("registry.local/base:1")), &base, None), Some(true));
        assert_eq!(annotations_say(&app(None, Some("registry.local/base:2")), &base, None), None);
        assert_eq!(annotations_say(&app(None, Some("registry.local/other:1")), &base, None), None);
        assert_eq!(annotations_say(&app(None, Some("not a ref")), &base, None), None);
        assert_eq!(annotations_say(&app(None, None), &base, None), None);
    }

    #[test]
    fn config_globs_see_written_and_normalised_names() {
        let config =
            crate::Config::parse("prepull: { bases: [ {image: 'base:1', match: ['docker.io/library/web*']} ] }")
                .unwrap();
        let base = &super::super::configured_bases(&config)[0];
        let app = |written: &str| App {
            written: written.into(),
            reference: Reference::parse(written).unwrap(),
            digest: None,
        };
        assert!(config_match(base, &app("webapp:2")));
        assert!(config_match(base, &app("docker.io/library/web")));
        assert!(!config_match(base, &app("ghcr.io/org/webapp:2")));
        let none = crate::Config::parse("prepull: { bases: [ {image: 'base:1'} ] }").unwrap();
        assert!(!config_match(&super::super::configured_bases(&none)[0], &app("webapp:2")));
    }
}
