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
    pub reports: Reports,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Listen {
    pub https: SocketAddr,
    pub http: SocketAddr,
    /// Longest a client may take to send a request's headers (and the TLS handshake).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body once its headers are in.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest a connection may sit between requests (keep-alive) before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once on the HTTPS port; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            https: ([0, 0, 0, 0], 8443).into(),
            http: ([0, 0, 0, 0], 8080).into(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
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

#[derive(Clone, Debug, Deserialize)]
#[serde(from = "WorkloadsText")]
pub struct Workloads {
    /// Pin pod templates in Deployments, StatefulSets, … (off: it fights GitOps; docs/design.md).
    pub templates: bool,
    /// More kinds with images (custom resources), as written.
    pub kinds: Vec<crate::kinds::Declared>,
    /// The built-in custom resources with `kinds` over them: what `mutate` and the webhook read.
    pub declared: Vec<crate::kinds::Declared>,
}

/// `workloads` as written in the file.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct WorkloadsText {
    templates: bool,
    kinds: Vec<crate::kinds::Declared>,
}

impl From<WorkloadsText> for Workloads {
    fn from(text: WorkloadsText) -> Self {
        let declared = crate::kinds::declared(&text.kinds);
        Workloads { templates: text.templates, kinds: text.kinds, declared }
    }
}

impl Default for Workloads {
    fn default() -> Self {
        WorkloadsText::default().into()
    }
}

impl Workloads {
    /// The declared kind of an object of `group` and `kind`, if any.
    pub fn declared_kind(&self, group: &str, kind: &str) -> Option<&crate::kinds::Declared> {
        self.declared.iter().find(|d| d.matches(group, kind))
    }
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

/// PolicyReports (`wgpolicyk8s.io/v1alpha2`) written by one leader-elected replica of `serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Reports {
    /// Write a PolicyReport per reported namespace (needs the PolicyReport CRD and its RBAC).
    pub policy_reports: bool,
    /// How often every reported namespace is listed and its report rewritten.
    #[serde(with = "humantime_serde")]
    pub scan_interval: Duration,
    /// The namespaces reported on (a label selector over namespaces); `exclude.namespaces` are
    /// never reported.
    pub namespace_selector: String,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            policy_reports: false,
            scan_interval: Duration::from_secs(3600),
            namespace_selector: "layerlink.io/mode in (audit,enforce)".into(),
        }
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

/// The YAML parser's error as one line: the position and what is wrong, without the excerpt it
/// draws (which repeats the message and names the file `<input>`) or advice meant for programmers.
fn yaml_error(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
    first
        .replacen(" column ", ", column ", 1)
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .replace("invalid u64", "expected a whole number, 0 or more")
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
            serde_saphyr::from_str(text).map_err(|e| Error::Config(yaml_error(&e.to_string())))?
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses, naming the key, every value that would break or make no sense at runtime. The
    /// ranges are the documented ones; each has a reason beside it in [`limits`].
    fn validate(&self) -> Result<(), Error> {
        use limits::*;
        let Config { listen, tls, resolve, cache, registries, network, exclude, workloads, prepull, reports, .. } =
            self;

        for (key, address) in [("listen.https", listen.https), ("listen.http", listen.http)] {
            if address.port() == 0 {
                return refuse(key, format!("needs a fixed port, got {address}"));
            }
        }
        if listen.https.port() == listen.http.port()
            && (listen.https.ip() == listen.http.ip()
                || listen.https.ip().is_unspecified()
                || listen.http.ip().is_unspecified())
        {
            return refuse("listen.http", format!("overlaps listen.https ({} and {})", listen.http, listen.https));
        }

        for (key, path) in [("tls.certFile", &tls.cert_file), ("tls.keyFile", &tls.key_file)] {
            if path.as_os_str().is_empty() {
                return refuse(key, "must not be empty".into());
            }
        }
        within("tls.reloadInterval", tls.reload_interval, RELOAD_INTERVAL)?;

        within("resolve.budget", resolve.budget, BUDGET)?;
        within("resolve.margin", resolve.margin, MARGIN)?;
        within("resolve.connectTimeout", resolve.connect_timeout, CONNECT_TIMEOUT)?;
        within("resolve.requestTimeout", resolve.request_timeout, REQUEST_TIMEOUT)?;
        count_within(
            "resolve.maxConcurrencyPerRegistry",
            resolve.max_concurrency_per_registry as u64,
            MAX_CONCURRENCY_PER_REGISTRY,
        )?;

        if workloads.kinds.len() > crate::kinds::MAX_DECLARED {
            return refuse(
                "workloads.kinds",
                format!("at most {} kinds, got {}", crate::kinds::MAX_DECLARED, workloads.kinds.len()),
            );
        }
        for (i, entry) in workloads.kinds.iter().enumerate() {
            let key = format!("workloads.kinds[{i}]");
            if crate::kinds::is_known(&entry.group, &entry.kind) {
                return refuse(&key, format!("{} is built in; it needs no declaration", entry.kind));
            }
            if workloads.kinds[..i].iter().any(|e| e.matches(&entry.group, &entry.kind)) {
                return refuse(&key, format!("{}.{} is declared twice", entry.kind, entry.group));
            }
        }
        for (i, entry) in workloads.declared.iter().enumerate() {
            // Built-in entries come first and are valid; a config entry merged over one is checked
            // with what it took from it.
            if let Err(why) = entry.check() {
                let at = workloads.kinds.iter().position(|e| e.matches(&entry.group, &entry.kind));
                let key =
                    at.map_or(format!("workloads.kinds ({} {i})", entry.kind), |at| format!("workloads.kinds[{at}]"));
                return refuse(&key, why);
            }
        }

        within("cache.ttl", cache.ttl, CACHE_TTL)?;
        within("cache.negativeTtl", cache.negative_ttl, NEGATIVE_TTL)?;
        within("cache.staleIfError", cache.stale_if_error, STALE_IF_ERROR)?;
        count_within("cache.maxEntries", cache.max_entries, MAX_ENTRIES)?;

        let mut hosts = std::collections::HashSet::new();
        for (i, registry) in registries.iter().enumerate() {
            let key = format!("registries[{i}].host");
            registry_host(&registry.host).or_else(|why| refuse(&key, why))?;
            if !hosts.insert(registry.host.as_str()) {
                return refuse(&key, format!("{:?} is configured twice", registry.host));
            }
            if registry.mirrors.len() > MAX_MIRRORS {
                let why = format!("at most {MAX_MIRRORS} (each is tried in turn within one budget)");
                return refuse(&format!("registries[{i}].mirrors"), why);
            }
            for (j, mirror) in registry.mirrors.iter().enumerate() {
                let key = format!("registries[{i}].mirrors[{j}]");
                mirror_host(mirror).or_else(|why| refuse(&key, why))?;
                if mirror == &registry.host || registry.mirrors[..j].contains(mirror) {
                    return refuse(&key, format!("{mirror:?} is listed twice"));
                }
            }
            for (field, path) in [("caFile", &registry.ca_file), ("credentialsFile", &registry.credentials_file)] {
                if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return refuse(&format!("registries[{i}].{field}"), "must not be empty".into());
                }
            }
        }

        for (i, cidr) in network.deny_cidrs.iter().enumerate() {
            if cidr.trunc() != *cidr {
                let why = format!("{cidr} has host bits set; write {}", cidr.trunc());
                return refuse(&format!("network.denyCidrs[{i}]"), why);
            }
        }
        for (key, globs) in
            [("exclude.images", &exclude.images), ("network.allowRegistries", &network.allow_registries)]
        {
            globs_of(key, globs)?;
        }
        for (i, namespace) in exclude.namespaces.iter().enumerate() {
            if !is_dns_label(namespace) {
                let why =
                    format!("{namespace:?} is not a namespace name (lowercase DNS label; globs are not supported)");
                return refuse(&format!("exclude.namespaces[{i}]"), why);
            }
        }

        for (i, base) in prepull.bases.iter().enumerate() {
            crate::reference::Reference::parse(&base.image)
                .map_err(|e| Error::Config(format!("prepull.bases[{i}].image: {e}")))?;
            globs_of(&format!("prepull.bases[{i}].match"), &base.matches)?;
        }
        if let Some(image) = &prepull.tools_image {
            crate::reference::Reference::parse(image).map_err(|e| Error::Config(format!("prepull.toolsImage: {e}")))?;
        }
        if !OPERATING_SYSTEMS.contains(&prepull.platform.os.as_str()) {
            let why = format!("{:?} is not one of {}", prepull.platform.os, OPERATING_SYSTEMS.join(", "));
            return refuse("prepull.platform.os", why);
        }
        if !ARCHITECTURES.contains(&prepull.platform.architecture.as_str()) {
            let why = format!("{:?} is not one of {}", prepull.platform.architecture, ARCHITECTURES.join(", "));
            return refuse("prepull.platform.architecture", why);
        }

        within("reports.scanInterval", reports.scan_interval, SCAN_INTERVAL)?;
        let selector = &reports.namespace_selector;
        if selector.trim().is_empty() || selector.len() > MAX_SELECTOR_BYTES || selector.contains(char::is_control) {
            let why = format!("must be a label selector of 1 to {MAX_SELECTOR_BYTES} bytes on one line");
            return refuse("reports.namespaceSelector", why);
        }
        Ok(())
    }

    /// The configuration of a registry host, if it has one.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }
}

/// The accepted range of every bounded key, with the reason for each bound.
pub mod limits {
    use std::{ops::RangeInclusive, time::Duration};

    const MS: Duration = Duration::from_millis(1);
    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Zero makes tokio's interval panic; polling two files more than ten times a second buys
    /// nothing; past an hour a rotated certificate waits too long (and a huge period overflows
    /// the interval's next tick).
    pub const RELOAD_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(100)..=secs(3600);
    /// The API server waits at most 30 s for a webhook (`timeoutSeconds` ≤ 30): a longer budget
    /// is never granted, and a huge one overflows the deadline (`Instant + budget`).
    pub const BUDGET: RangeInclusive<Duration> = MS..=secs(30);
    /// Subtracted from the API server's timeout (at most 30 s); 30 s or more leaves no time.
    pub const MARGIN: RangeInclusive<Duration> = Duration::ZERO..=secs(29);
    /// Zero fails every connection at once; a minute is already far past any review's budget.
    pub const CONNECT_TIMEOUT: RangeInclusive<Duration> = MS..=secs(60);
    /// Zero fails every request at once. It is also the whole deadline of `resolve`, `mutate`,
    /// `audit` and `prepuller` (`Instant + requestTimeout`) and is tripled for background work,
    /// so a huge value overflows; ten minutes is the longest a CLI run should wait.
    pub const REQUEST_TIMEOUT: RangeInclusive<Duration> = MS..=secs(600);
    /// Zero admits no request; tokio's semaphore panics past `usize::MAX >> 3` permits, and more
    /// than 1024 connections to one registry is a flood, not a cache fill.
    pub const MAX_CONCURRENCY_PER_REGISTRY: RangeInclusive<u64> = 1..=1024;
    /// Zero makes the cache sweep a whole shard on every insert; a digest older than a week is
    /// a tag that moved long ago.
    pub const CACHE_TTL: RangeInclusive<Duration> = MS..=secs(7 * 24 * 3600);
    /// Zero, as for `ttl`; a day is the longest an image pushed after a failed lookup should
    /// stay "not found".
    pub const NEGATIVE_TTL: RangeInclusive<Duration> = MS..=secs(24 * 3600);
    /// Zero serves nothing stale (allowed); past 30 days a registry outage is not the problem.
    pub const STALE_IF_ERROR: RangeInclusive<Duration> = Duration::ZERO..=secs(30 * 24 * 3600);
    /// Zero caches nothing; at the measured ~256 bytes per entry, 500,000 entries are ~122 MiB,
    /// half of the Deployment's 256Mi memory limit.
    pub const MAX_ENTRIES: RangeInclusive<u64> = 1..=500_000;
    /// Each scan lists every reported namespace: under 5 s a large cluster's scan would still be
    /// running when the next starts; past a day results that went stale stay up too long.
    pub const SCAN_INTERVAL: RangeInclusive<Duration> = secs(5)..=secs(24 * 3600);
    /// A label selector is sent in a URL's query; a page of it is already unreadable.
    pub const MAX_SELECTOR_BYTES: usize = 1024;
    /// Mirrors are tried in turn inside one review's budget.
    pub const MAX_MIRRORS: usize = 8;
    /// `GOOS` values, the vocabulary of an OCI image index's `platform.os`.
    pub const OPERATING_SYSTEMS: &[&str] = &[
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    ];
    /// `GOARCH` values, the vocabulary of `platform.architecture`.
    pub const ARCHITECTURES: &[&str] = &[
        "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le",
        "riscv64", "s390x", "wasm",
    ];
}

fn refuse(key: &str, why: String) -> Result<(), Error> {
    Err(Error::Config(format!("{key}: {why}")))
}

fn within(key: &str, value: Duration, range: std::ops::RangeInclusive<Duration>) -> Result<(), Error> {
    if range.contains(&value) {
        return Ok(());
    }
    let show = |d: Duration| humantime::format_duration(d).to_string();
    refuse(key, format!("must be between {} and {}, got {}", show(*range.start()), show(*range.end()), show(value)))
}

fn count_within(key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), Error> {
    if range.contains(&value) {
        return Ok(());
    }
    refuse(key, format!("must be between {} and {}, got {value}", range.start(), range.end()))
}

fn globs_of(key: &str, globs: &[String]) -> Result<(), Error> {
    if globs.iter().any(String::is_empty) {
        return refuse(key, "an empty glob matches nothing".into());
    }
    glob_set(globs).map(drop).map_err(|e| Error::Config(format!("{key}: {e}")))
}

/// `host[:port]` as the first component of an image reference names it (so `docker.io`, not
/// `index.docker.io`, and a name with a dot, a port or `localhost`).
fn registry_host(host: &str) -> Result<(), String> {
    mirror_host(host)?;
    match crate::reference::Reference::parse(&format!("{host}/x")) {
        Ok(r) if r.registry == host => Ok(()),
        Ok(r) => Err(format!("image references name this registry {:?}; write that", r.registry)),
        Err(e) => Err(e.reason.to_string()),
    }
}

/// `host[:port]`: a DNS name or an IP address (IPv6 in brackets), and a port from 1 to 65535,
/// written as the URL parser will dial it.
fn mirror_host(host: &str) -> Result<(), String> {
    let bad = || format!("must be host[:port] (no scheme, path or spaces), got {host:?}");
    let parsed = url::Url::parse(&format!("https://{host}/")).map_err(|_| bad())?;
    let name = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let dialled = match parsed.port() {
        Some(0) => return Err(bad()),
        Some(port) => format!("{name}:{port}"),
        // The URL parser drops https' default port.
        None if host.ends_with(":443") => format!("{name}:443"),
        None => name.to_string(),
    };
    // The URL parser normalises case, IPv4 spellings and paths: what it dials must be what was
    // written, or the guard, the metrics and the credentials would not agree on the host.
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() || parsed.username() != "" {
        return Err(bad());
    }
    if dialled != host {
        return Err(format!("{host:?} is dialled as {dialled:?}; write that"));
    }
    Ok(())
}

/// A Kubernetes namespace name: a lowercase RFC 1123 label of at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
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

    /// The error for `text`, which must name `key`.
    fn refused(text: &str, key: &str) -> String {
        let err = match Config::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(key), "{text}: the error does not name {key}: {err}");
        err
    }

    /// A YAML error is one line, said once, with the position: no excerpt naming `<input>`, no
    /// advice to the programmer.
    #[test]
    fn yaml_errors_are_one_line_with_the_position() {
        for (text, wanted) in [
            ("cache:\n  maxEntries: -1\n", "line 2, column 15: expected a whole number, 0 or more"),
            ("resolve:\n  budget: 1s\n  budget: 2s\n", "line 3, column 3: duplicate mapping key: budget"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert_eq!(err, format!("config: {wanted}"));
        }
    }

    #[test]
    fn a_misspelt_key_is_refused_in_every_section() {
        for (text, key) in [
            ("listen: { htps: '0.0.0.0:9443' }", "htps"),
            ("tls: { certFil: x }", "certFil"),
            ("resolve: { budgett: 2s }", "budgett"),
            ("cache: { tll: 1m }", "tll"),
            ("registries: [{ host: r.io, mirror: [m.io] }]", "mirror"),
            ("network: { denyCidr: [] }", "denyCidr"),
            ("exclude: { namespace: [a] }", "namespace"),
            ("workloads: { template: true }", "template"),
            ("prepull: { enable: true }", "enable"),
            ("prepull: { bases: [{ image: 'b:1', matches: [x] }] }", "matches"),
            ("prepull: { platform: { arch: arm64 } }", "arch"),
            ("allowPodOptOutt: true", "allowPodOptOutt"),
        ] {
            let err = refused(text, key);
            assert!(err.contains("unknown field"), "{err}");
        }
    }

    /// Pointers and names from `workloads.kinds` are checked and bounded when the config loads.
    #[test]
    fn declared_kinds_are_checked_at_load() {
        let kind = |entry: &str| format!("workloads:\n  kinds:\n    - {entry}");
        let ok = Config::parse(&kind("{ group: argoproj.io, kind: Rollout, webhook: true }")).unwrap();
        let rollout = ok.workloads.declared_kind("argoproj.io", "Rollout").unwrap();
        assert!(rollout.webhook && rollout.plural == "rollouts" && rollout.version == "v1alpha1");
        assert_eq!(rollout.pod_spec.as_deref(), Some("/spec/template/spec"), "taken from the built-in entry");
        Config::parse(&kind("{ group: example.com, kind: Model, images: ['/spec/a~0b~1c/image'] }")).unwrap();
        let long = format!("/{}", "a".repeat(crate::kinds::MAX_POINTER_LEN));
        let deep = "/a".repeat(crate::kinds::MAX_POINTER_DEPTH + 1);
        for (entry, why) in [
            (format!("{{ group: example.com, kind: Runner, podSpec: '{long}' }}"), "longer than"),
            (format!("{{ group: example.com, kind: Runner, podSpec: '{deep}' }}"), "deeper than"),
            ("{ group: example.com, kind: Runner, podSpec: spec/pod }".into(), "must start with '/'"),
            ("{ group: example.com, kind: Runner, podSpec: '/spec//pod' }".into(), "invalid token"),
            ("{ group: example.com, kind: Runner, podSpec: '/spec/a~2' }".into(), "invalid token"),
            ("{ group: example.com, kind: Runner, podSpec: \"/spec/\\u0007\" }".into(), "invalid token"),
            ("{ group: example.com, kind: Runner }".into(), "needs podSpec or images"),
            ("{ group: example.com, kind: Runner, podSpec: /spec, images: [/spec/image] }".into(), "not both"),
            ("{ group: example.com, kind: Runner, podSpec: /spec, webhook: true }".into(), "needs version and plural"),
            ("{ group: Example.com, kind: Runner, podSpec: /spec }".into(), "group"),
            ("{ group: example.com, kind: 'Run ner', podSpec: /spec }".into(), "kind"),
            ("{ group: apps, kind: Deployment, podSpec: /spec }".into(), "built in"),
        ] {
            let err = refused(&kind(&entry), "workloads.kinds");
            assert!(err.contains(why), "{entry}: {err}");
        }
        assert!(refused(&kind("{ group: a.io, kind: R, podSpec: /spec, pod: /x }"), "pod").contains("unknown field"));
        let images: Vec<String> = (0..=crate::kinds::MAX_IMAGE_POINTERS).map(|i| format!("/i{i}")).collect();
        refused(
            &kind(&format!("{{ group: example.com, kind: M, images: [{}] }}", images.join(", "))),
            "workloads.kinds",
        );
        let many: String = (0..=crate::kinds::MAX_DECLARED)
            .map(|i| format!("    - {{ group: example.com, kind: K{i}, podSpec: /spec }}\n"))
            .collect();
        refused(&format!("workloads:\n  kinds:\n{many}"), "workloads.kinds");
        let twice = "workloads:\n  kinds:\n    - { group: a.io, kind: K, podSpec: /spec }\n    - { group: a.io, kind: K, podSpec: /x }";
        assert!(refused(twice, "workloads.kinds[1]").contains("twice"));
    }

    #[test]
    fn the_defaults_and_the_shipped_configs_are_within_the_limits() {
        Config::parse("").unwrap();
        Config::parse(include_str!("../manifests/base/config.yaml")).unwrap();
    }

    #[test]
    fn durations_that_would_break_the_server_are_refused() {
        refused("tls: { reloadInterval: 0s }", "tls.reloadInterval");
        refused("tls: { reloadInterval: 18446744073709551615s }", "tls.reloadInterval");
        refused("resolve: { budget: 0s }", "resolve.budget");
        refused("resolve: { budget: 18446744073709551615s }", "resolve.budget");
        // More than the API server ever waits for a webhook.
        refused("resolve: { budget: 31s }", "resolve.budget");
        refused("resolve: { margin: 30s }", "resolve.margin");
        refused("resolve: { connectTimeout: 0s }", "resolve.connectTimeout");
        refused("resolve: { connectTimeout: 61s }", "resolve.connectTimeout");
        refused("resolve: { requestTimeout: 0s }", "resolve.requestTimeout");
        refused("resolve: { requestTimeout: 18446744073709551615s }", "resolve.requestTimeout");
        refused("cache: { ttl: 0s }", "cache.ttl");
        refused("cache: { ttl: 8d }", "cache.ttl");
        refused("cache: { negativeTtl: 0s }", "cache.negativeTtl");
        refused("cache: { negativeTtl: 25h }", "cache.negativeTtl");
        refused("cache: { staleIfError: 31d }", "cache.staleIfError");
        // The bounds themselves are accepted.
        let edges = "tls: { reloadInterval: 100ms }\nresolve: { budget: 30s, margin: 0s, connectTimeout: 1ms, \
                     requestTimeout: 10m }\ncache: { ttl: 1ms, negativeTtl: 24h, staleIfError: 0s }";
        Config::parse(edges).unwrap();
    }

    #[test]
    fn counts_are_bounded() {
        refused("resolve: { maxConcurrencyPerRegistry: 0 }", "resolve.maxConcurrencyPerRegistry");
        // Above tokio's Semaphore::MAX_PERMITS (usize::MAX >> 3), which panics.
        refused("resolve: { maxConcurrencyPerRegistry: 2305843009213693952 }", "resolve.maxConcurrencyPerRegistry");
        refused("resolve: { maxConcurrencyPerRegistry: 1025 }", "resolve.maxConcurrencyPerRegistry");
        refused("cache: { maxEntries: 0 }", "cache.maxEntries");
        refused("cache: { maxEntries: 500001 }", "cache.maxEntries");
        Config::parse("resolve: { maxConcurrencyPerRegistry: 1024 }\ncache: { maxEntries: 500000 }").unwrap();
    }

    #[test]
    fn listen_addresses_are_fixed_and_distinct() {
        refused("listen: { https: '0.0.0.0:0' }", "listen.https");
        refused("listen: { http: '127.0.0.1:0' }", "listen.http");
        refused("listen: { https: '127.0.0.1:8443', http: '127.0.0.1:8443' }", "listen.http");
        refused("listen: { https: '0.0.0.0:9000', http: '127.0.0.1:9000' }", "listen.http");
        Config::parse("listen: { https: '127.0.0.1:9000', http: '127.0.0.2:9000' }").unwrap();
    }

    #[test]
    fn tls_files_are_named() {
        refused("tls: { certFile: '' }", "tls.certFile");
        refused("tls: { keyFile: '' }", "tls.keyFile");
    }

    #[test]
    fn registry_hosts_are_what_references_name_and_what_is_dialled() {
        for host in
            ["a/b", "", "https://r.io", "r.io/", "r.io:0", "r.io:99999", "R.io", "127.1:5000", "r.io:x", "u@r.io"]
        {
            refused(&format!("registries: [{{ host: '{host}' }}]"), "registries[0].host");
        }
        // Docker Hub is named docker.io in references; a name without a dot is a Docker Hub path.
        let err = refused("registries: [{ host: index.docker.io }]", "registries[0].host");
        assert!(err.contains("docker.io"), "{err}");
        refused("registries: [{ host: myregistry }]", "registries[0].host");
        refused("registries: [{ host: r.io }, { host: r.io }]", "registries[1].host");
        refused("registries: [{ host: r.io, mirrors: ['m.io/x'] }]", "registries[0].mirrors[0]");
        refused("registries: [{ host: r.io, mirrors: [m.io, m.io] }]", "registries[0].mirrors[1]");
        refused("registries: [{ host: r.io, mirrors: [r.io] }]", "registries[0].mirrors[0]");
        let nine: Vec<String> = (0..9).map(|i| format!("m{i}.io")).collect();
        refused(&format!("registries: [{{ host: r.io, mirrors: [{}] }}]", nine.join(", ")), "registries[0].mirrors");
        refused("registries: [{ host: r.io, caFile: '' }]", "registries[0].caFile");
        refused("registries: [{ host: r.io, credentialsFile: '' }]", "registries[0].credentialsFile");
        Config::parse(
            "registries: [{ host: docker.io, mirrors: ['mirror.gcr.io', '10.0.0.1:5000', '[fd00::1]:5000'] }, \
             { host: 'localhost:5000' }, { host: '127.0.0.1:5000' }, { host: '[::1]:5000' }, { host: 'r.io:443' }]",
        )
        .unwrap();
    }

    #[test]
    fn networks_globs_and_namespaces_are_checked() {
        let err = refused("network: { denyCidrs: ['169.254.169.254/16'] }", "network.denyCidrs[0]");
        assert!(err.contains("169.254.0.0/16"), "{err}");
        refused("network: { allowRegistries: ['['] }", "network.allowRegistries");
        refused("network: { allowRegistries: [''] }", "network.allowRegistries");
        refused("exclude: { images: ['a[b'] }", "exclude.images");
        refused("exclude: { namespaces: ['Kube-System'] }", "exclude.namespaces[0]");
        refused("exclude: { namespaces: [kube-system, 'team-*'] }", "exclude.namespaces[1]");
        refused(&format!("exclude: {{ namespaces: [{}] }}", "a".repeat(64)), "exclude.namespaces[0]");
        refused("prepull: { bases: [{ image: 'b:1', match: ['{'] }] }", "prepull.bases[0].match");
    }

    #[test]
    fn prepull_images_and_platform_are_checked() {
        refused("prepull: { toolsImage: 'Bad' }", "prepull.toolsImage");
        refused("prepull: { platform: { os: Linux } }", "prepull.platform.os");
        refused("prepull: { platform: { architecture: x86_64 } }", "prepull.platform.architecture");
        Config::parse("prepull: { toolsImage: 'ghcr.io/l/l:1', platform: { os: windows, architecture: arm64 } }")
            .unwrap();
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
    fn reports_are_off_by_default_and_their_interval_is_bounded() {
        let reports = Config::parse("").unwrap().reports;
        assert!(!reports.policy_reports);
        assert_eq!(reports.scan_interval, Duration::from_secs(3600));
        assert_eq!(reports.namespace_selector, "layerlink.io/mode in (audit,enforce)");
        let on =
            Config::parse("reports: { policyReports: true, scanInterval: 5s, namespaceSelector: 'team=a' }").unwrap();
        assert!(on.reports.policy_reports);
        assert_eq!(on.reports.scan_interval, Duration::from_secs(5));
        refused("reports: { scanInterval: 4s }", "reports.scanInterval");
        refused("reports: { scanInterval: 25h }", "reports.scanInterval");
        refused("reports: { namespaceSelector: '' }", "reports.namespaceSelector");
        refused("reports: { namespaceSelector: \"a=b\\nc=d\" }", "reports.namespaceSelector");
        refused("reports: { policyReport: true }", "policyReport");
    }

    #[test]
    fn sticky_pins_are_on_by_default_and_can_be_turned_off() {
        assert!(Config::parse("").unwrap().pins.sticky);
        assert!(!Config::parse("pins: { sticky: false }").unwrap().pins.sticky);
        let err = Config::parse("pins: { stiky: true }").unwrap_err().to_string();
        assert!(err.contains("stiky"), "{err}");
    }
}
