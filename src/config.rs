//! The YAML configuration shared by every front end (`serve`, `resolve`, `mutate`, `audit`).
//!
//! Keys are camelCase like Kubernetes objects; an unknown key is an error that names it, so a
//! typo never silently falls back to a default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use globset::{Glob, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use serde::Deserialize;

use crate::Error;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    pub resolve: Resolve,
    pub cache: Cache,
    pub registries: Vec<RegistryConfig>,
    pub network: Network,
    pub exclude: Exclude,
    /// Honour the pod annotation `layerlink.io/skip: "true"`. Off by default: in enforce mode a
    /// pod author could otherwise opt out of a platform rule.
    pub allow_pod_opt_out: bool,
    pub workloads: Workloads,
    pub prepull: Prepull,
    pub pins: Pins,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Listen {
    pub https: SocketAddr,
    pub http: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen { https: ([0, 0, 0, 0], 8443).into(), http: ([0, 0, 0, 0], 8080).into() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// How often the files are checked for rotation.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert_file: "certs/tls.crt".into(),
            key_file: "certs/tls.key".into(),
            reload_interval: Duration::from_secs(2),
        }
    }
}

/// What happens to an image that cannot be pinned in time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum OnError {
    /// Admit the pod with the image unchanged and a warning.
    #[default]
    Allow,
    /// Refuse the pod with the reason.
    Deny,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resolve {
    /// Time one review may spend resolving; the API server's `?timeout=` caps it further.
    #[serde(with = "humantime_serde")]
    pub budget: Duration,
    /// Kept from the API server's timeout for encoding and the network.
    #[serde(with = "humantime_serde")]
    pub margin: Duration,
    /// Write `repo:tag@digest` (true) or `repo@digest` (false).
    pub keep_tag: bool,
    pub on_error: OnError,
    /// Timeout for a TCP+TLS connect to a registry.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout for one whole registry request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Concurrent requests to one registry.
    pub max_concurrency_per_registry: usize,
}

impl Default for Resolve {
    fn default() -> Self {
        Resolve {
            budget: Duration::from_secs(2),
            margin: Duration::from_millis(500),
            keep_tag: true,
            on_error: OnError::Allow,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_concurrency_per_registry: 32,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Cache {
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// How old a digest may be and still be served when the registry fails.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    pub max_entries: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(24 * 3600),
            max_entries: 100_000,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `host[:port]` as written in image references (`docker.io` for Docker Hub).
    pub host: String,
    /// Talk plain HTTP; only for registries named here.
    pub plain_http: bool,
    /// PEM bundle of extra CAs for this registry.
    pub ca_file: Option<PathBuf>,
    /// Hosts tried in order before the upstream.
    pub mirrors: Vec<String>,
    /// A docker `config.json` (`auths`) with credentials for this registry.
    pub credentials_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Network {
    /// Registry addresses refused before any connection (SSRF guard).
    pub deny_cidrs: Vec<IpNet>,
    /// If not empty, only these registry hosts (globs) are contacted.
    pub allow_registries: Vec<String>,
}

impl Default for Network {
    fn default() -> Self {
        let deny = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"];
        Network {
            deny_cidrs: deny.iter().map(|c| c.parse().expect("valid default CIDR")).collect(),
            allow_registries: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Exclude {
    /// Globs over the image as written and as normalised (`docker.io/library/nginx:1.25`).
    pub images: Vec<String>,
    pub namespaces: Vec<String>,
}

impl Default for Exclude {
    fn default() -> Self {
        Exclude { images: Vec::new(), namespaces: vec!["kube-system".into()] }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Workloads {
    /// Pin pod templates in Deployments, StatefulSets, … (off: it fights GitOps, DESIGN 1).
    pub templates: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Prepull {
    pub enabled: bool,
    pub bases: Vec<Base>,
    pub detect: Detect,
    pub strategy: Strategy,
    /// The platform whose manifest is compared layer by layer.
    pub platform: Platform,
    /// The image that carries `layerlink-noop` (the layerlink image itself).
    pub tools_image: Option<String>,
}

/// Rollout-consistent pins: a controller's new pod gets the digests its siblings of the same
/// revision run.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Pins {
    /// Give a pod the digests its revision's siblings carry (needs `list` on pods).
    pub sticky: bool,
}

impl Default for Pins {
    fn default() -> Self {
        Pins { sticky: true }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Default for Platform {
    fn default() -> Self {
        Platform { os: "linux".into(), architecture: "amd64".into() }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Base {
    pub image: String,
    #[serde(rename = "match")]
    pub matches: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Detect {
    #[default]
    Config,
    Layers,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    #[default]
    InitContainer,
    ImageVolume,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| Error::Config(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.resolve.budget.is_zero() {
            return bad("resolve.budget must be greater than 0".into());
        }
        if self.cache.max_entries == 0 {
            return bad("cache.maxEntries must be greater than 0".into());
        }
        if self.resolve.max_concurrency_per_registry == 0 {
            return bad("resolve.maxConcurrencyPerRegistry must be greater than 0".into());
        }
        for (i, registry) in self.registries.iter().enumerate() {
            if registry.host.is_empty() || registry.host.contains('/') {
                return bad(format!("registries[{i}].host must be host[:port], got {:?}", registry.host));
            }
        }
        for (key, globs) in
            [("exclude.images", &self.exclude.images), ("network.allowRegistries", &self.network.allow_registries)]
        {
            glob_set(globs).map_err(|e| Error::Config(format!("{key}: {e}")))?;
        }
        for (i, base) in self.prepull.bases.iter().enumerate() {
            crate::reference::Reference::parse(&base.image)
                .map_err(|e| Error::Config(format!("prepull.bases[{i}].image: {e}")))?;
            glob_set(&base.matches).map_err(|e| Error::Config(format!("prepull.bases[{i}].match: {e}")))?;
        }
        Ok(())
    }

    /// The configuration of a registry host, if it has one.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }
}

/// Compiles glob patterns; `*` crosses `/`, so `ghcr.io/org/*` covers nested repositories.
pub fn glob_set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(pattern)?);
    }
    builder.build()
}

/// `humantime` durations (`2s`, `10m`, `500ms`) for serde.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. 2s, 500ms, 10m"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../examples/config.yaml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.resolve.budget, Duration::from_secs(2));
        assert_eq!(config.cache.ttl, Duration::from_secs(600));
        assert_eq!(config.resolve.on_error, OnError::Allow);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("resolve: { budgett: 2s }").unwrap_err().to_string();
        assert!(err.contains("budgett"), "{err}");
        let err = Config::parse("cashe: {}").unwrap_err().to_string();
        assert!(err.contains("cashe"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = Config::parse("resolve: { budget: soon }").unwrap_err().to_string();
        assert!(err.contains("invalid duration"), "{err}");
        let err = Config::parse("resolve: { onError: maybe }").unwrap_err().to_string();
        assert!(err.contains("maybe"), "{err}");
        let err = Config::parse("registries: [{ host: 'a/b' }]").unwrap_err().to_string();
        assert!(err.contains("registries[0].host"), "{err}");
        let err = Config::parse("prepull: { bases: [{ image: 'Bad' }] }").unwrap_err().to_string();
        assert!(err.contains("prepull.bases[0].image"), "{err}");
    }

    #[test]
    fn defaults_deny_metadata_addresses() {
        let config = Config::parse("").unwrap();
        let metadata: std::net::IpAddr = "169.254.169.254".parse().unwrap();
        assert!(config.network.deny_cidrs.iter().any(|n| n.contains(&metadata)));
        assert!(!config.allow_pod_opt_out);
        assert!(!config.workloads.templates);
    }

    #[test]
    fn sticky_pins_are_on_by_default_and_can_be_turned_off() {
        assert!(Config::parse("").unwrap().pins.sticky);
        assert!(!Config::parse("pins: { sticky: false }").unwrap().pins.sticky);
        let err = Config::parse("pins: { stiky: true }").unwrap_err().to_string();
        assert!(err.contains("stiky"), "{err}");
    }
}
