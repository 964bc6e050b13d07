//! Prometheus metrics on `/metrics`, all prefixed `layerlink_`, plus the standard `process_*`
//! metrics read from `/proc/self` at scrape time. Served as OpenMetrics to a scraper that asks
//! for it (`Accept: application/openmetrics-text`), else in the Prometheus text format 0.0.4.
//! Every family is listed with its HELP and TYPE from start-up, before it has a sample, so a
//! dashboard or alert can tell "nothing happened" from "no such metric".
//! Each family's meaning is documented in the metrics table of docs/operations.md.
//!
//! Every label value comes from a closed set, so no review, image or registry answer can grow
//! the number of series: an object's kind is one of the kinds layerlink handles, a registry is a
//! configured one, one of its mirrors or a well-known public registry, a status code is one of a
//! few codes or its class, and a namespace is one of the first [`MAX_NAMESPACES`] seen. Anything
//! else is `other`. The label types below can only be built through those rules.

use std::{
    collections::HashSet,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::Config;

/// What a value outside a label's closed set is counted as.
pub const OTHER: &str = "other";

/// Distinct namespaces given their own `audit_findings` series; later ones count as `other`.
pub const MAX_NAMESPACES: usize = 500;

/// Public registries (and the hosts that serve their API and tokens) that keep their own
/// `registry` label without being configured.
pub const WELL_KNOWN_REGISTRIES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "auth.docker.io",
    "ghcr.io",
    "quay.io",
    "gcr.io",
    "mirror.gcr.io",
    "us.gcr.io",
    "eu.gcr.io",
    "asia.gcr.io",
    "k8s.gcr.io",
    "registry.k8s.io",
    "public.ecr.aws",
    "mcr.microsoft.com",
    "nvcr.io",
    "registry.gitlab.com",
    "docker.elastic.co",
    "cgr.dev",
];

/// The object kinds layerlink handles (see `sites::shape`); every other kind is `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Kind {
    Pod,
    EphemeralContainers,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    ReplicationController,
    CronJob,
    PodTemplate,
    /// A body that did not decode as a review: no kind was read (the empty label value).
    Unread,
    Other,
}

impl Kind {
    const NAMED: [Kind; 10] = [
        Kind::Pod,
        Kind::EphemeralContainers,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::Job,
        Kind::ReplicationController,
        Kind::CronJob,
        Kind::PodTemplate,
    ];

    pub fn of(kind: &str) -> Kind {
        Kind::NAMED.into_iter().find(|k| k.as_str() == kind).unwrap_or(Kind::Other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::EphemeralContainers => "EphemeralContainers",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::ReplicationController => "ReplicationController",
            Kind::CronJob => "CronJob",
            Kind::PodTemplate => "PodTemplate",
            Kind::Unread => "",
            Kind::Other => OTHER,
        }
    }
}

/// A registry host known to the config or well known, else `other`. Built by
/// [`Metrics::registry_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RegistryLabel(Option<Arc<str>>);

/// A registry's HTTP answer: the codes layerlink acts on, the class of any other status,
/// `timeout` or `error` when there was no answer, else `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Code(&'static str);

impl Code {
    const EXACT: &[&str] = &["200", "401", "403", "404", "429", "500", "502", "503", "504"];
    const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
    const NO_ANSWER: &[&str] = &["timeout", "error"];

    pub fn of(code: &str) -> Code {
        if let Some(exact) = Code::EXACT.iter().chain(Code::NO_ANSWER).find(|c| **c == code) {
            return Code(exact);
        }
        match code.parse::<u16>() {
            Ok(status @ 100..=599) => Code(Code::CLASSES[usize::from(status / 100 - 1)]),
            _ => Code(OTHER),
        }
    }
}

/// A namespace among the first [`MAX_NAMESPACES`] seen, else `other`. Built by
/// [`Metrics::namespace_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct NamespaceLabel(Option<Arc<str>>);

impl EncodeLabelValue for Kind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Code {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0)
    }
}

impl EncodeLabelValue for RegistryLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_deref().unwrap_or(OTHER))
    }
}

impl EncodeLabelValue for NamespaceLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_deref().unwrap_or(OTHER))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: &'static str,
    pub kind: Kind,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabels {
    pub path: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryRequestLabels {
    pub registry: RegistryLabel,
    pub method: &'static str,
    pub code: Code,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: RegistryLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    /// The audited object's namespace. Not `namespace`: Prometheus gives that label the scrape
    /// target's namespace (the one layerlink runs in) and would rename ours `exported_namespace`.
    pub resource_namespace: NamespaceLabel,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// A family that is listed (HELP and TYPE) even before its first sample.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// How `/metrics` is written, chosen from the scraper's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format 0.0.4: what `promtool check metrics`, `curl` and older
    /// scrapers read.
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` header offers it at least as much as plain text, else the
    /// Prometheus text format (also with no header at all).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut open_metrics = 0.0_f32;
        let mut text = 0.0_f32;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            match media.as_str() {
                "application/openmetrics-text" => open_metrics = open_metrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open_metrics > 0.0 && open_metrics >= text { Format::OpenMetrics } else { Format::Text }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub admission_requests: Family<RequestLabels, Counter>,
    pub admission_duration: Family<PathLabels, Histogram>,
    pub images: Family<ImageLabels, Counter>,
    pub cache_lookups: Family<ResultLabels, Counter>,
    pub registry_requests: Family<RegistryRequestLabels, Counter>,
    pub registry_duration: Family<RegistryLabels, Histogram>,
    pub registry_answered_by: Family<RegistryLabels, Counter>,
    pub stale_served: Family<RegistryLabels, Counter>,
    pub audit_findings: Family<AuditLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub pins: Family<SourceLabels, Counter>,
    pub sibling_lookups: Family<ResultLabels, Counter>,
    pub pins_behind: Counter,
    pub prepull_problems: Counter,
    /// Hosts that keep their own `registry` label.
    known_registries: HashSet<Arc<str>>,
    /// Namespaces that have their own `audit_findings` series (at most [`MAX_NAMESPACES`]).
    namespaces: Mutex<HashSet<Arc<str>>>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0].into_iter()
}

impl Metrics {
    /// The metrics of a server with this config (its registries keep their own label).
    pub fn new(config: &Config) -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let registry = root.sub_registry_with_prefix("layerlink");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "Always 1; the version label is the running layerlink's", build_info);
        let admission_requests = Family::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by endpoint, object kind and result",
            Listed(admission_requests.clone()),
        );
        let admission_duration =
            Family::<PathLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "admission_duration_seconds",
            "Time from request to answer for one admission review",
            Listed(admission_duration.clone()),
        );
        let images = Family::default();
        registry.register("images", "Image fields seen in reviews, by endpoint and outcome", Listed(images.clone()));
        let cache_lookups = Family::default();
        registry.register(
            "cache_lookups",
            "Digest cache lookups: hit, miss, stale (served past TTL) or negative (cached not-found)",
            Listed(cache_lookups.clone()),
        );
        let registry_requests = Family::default();
        registry.register(
            "registry_requests",
            "HTTP requests to registries, by host, method and status code (or error)",
            Listed(registry_requests.clone()),
        );
        let registry_duration =
            Family::<RegistryLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "registry_request_duration_seconds",
            "Duration of HTTP requests to registries",
            Listed(registry_duration.clone()),
        );
        let registry_answered_by = Family::default();
        registry.register(
            "registry_answers",
            "Digest lookups answered, by the host that answered (a mirror or the upstream)",
            Listed(registry_answered_by.clone()),
        );
        let stale_served = Family::default();
        registry.register(
            "stale_served",
            "Digests served from cache past their TTL because the registry failed (stale-if-error)",
            Listed(stale_served.clone()),
        );
        let audit_findings = Family::default();
        registry.register(
            "audit_findings",
            "Images reported by audit mode, by the object's namespace (resource_namespace) and result (would_pin, unresolved)",
            Listed(audit_findings.clone()),
        );
        let tls_reloads = Family::default();
        registry.register("tls_reloads", "Serving certificate reloads, by result", Listed(tls_reloads.clone()));
        let pins = Family::default();
        registry.register(
            "pins",
            "Digests chosen for pods of a controller revision, by source (sibling, cache, registry, stale)",
            Listed(pins.clone()),
        );
        let sibling_lookups = Family::default();
        registry.register(
            "sibling_lookups",
            "Lookups of a controller revision's pods, by result (found, empty, error, timeout)",
            Listed(sibling_lookups.clone()),
        );
        let prepull_problems = Counter::default();
        registry.register(
            "prepull_problems",
            "Pods that did not get a pre-pull base they are built on, because the tools image or the base could not be pinned",
            Listed(prepull_problems.clone()),
        );
        let pins_behind = Counter::default();
        registry.register(
            "pins_behind",
            "Digests kept from a revision's siblings that differ from what the tag now points at",
            Listed(pins_behind.clone()),
        );
        Metrics {
            registry: root,
            admission_requests,
            admission_duration,
            images,
            cache_lookups,
            registry_requests,
            registry_duration,
            registry_answered_by,
            stale_served,
            audit_findings,
            tls_reloads,
            pins,
            sibling_lookups,
            pins_behind,
            prepull_problems,
            known_registries: known_registries(config),
            namespaces: Mutex::default(),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        let mut out = String::new();
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry),
            Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry),
        }
        .expect("writing to a String cannot fail");
        out
    }

    pub fn cache(&self, result: &'static str) {
        self.cache_lookups.get_or_create(&ResultLabels { result }).inc();
    }

    /// The `registry` label of a host (or registry name): itself if configured, a mirror or well
    /// known, else `other`.
    pub fn registry_label(&self, host: &str) -> RegistryLabel {
        RegistryLabel(self.known_registries.get(host).cloned())
    }

    /// Counts a digest lookup answered by `host` (a mirror or the upstream).
    pub fn count_answer(&self, host: &str) {
        self.registry_answered_by.get_or_create(&RegistryLabels { registry: self.registry_label(host) }).inc();
    }

    /// Counts a digest served past its TTL because `registry` failed.
    pub fn count_stale(&self, registry: &str) {
        self.stale_served.get_or_create(&RegistryLabels { registry: self.registry_label(registry) }).inc();
    }

    /// The `registry` and `code` labels of one registry request.
    pub fn request_labels(&self, host: &str, code: &str) -> (RegistryLabel, Code) {
        (self.registry_label(host), Code::of(code))
    }

    /// The `resource_namespace` label: one of the first [`MAX_NAMESPACES`] namespace names seen, else
    /// `other` (also for anything that is not a namespace name).
    pub fn namespace_label(&self, namespace: &str) -> NamespaceLabel {
        if !crate::config::is_dns_label(namespace) {
            return NamespaceLabel(None);
        }
        let mut seen = self.namespaces.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = seen.get(namespace) {
            return NamespaceLabel(Some(known.clone()));
        }
        if seen.len() >= MAX_NAMESPACES {
            return NamespaceLabel(None);
        }
        let name: Arc<str> = namespace.into();
        seen.insert(name.clone());
        NamespaceLabel(Some(name))
    }
}

/// The standard `process_*` metrics of this process, read from `/proc/self` at each scrape
/// (left out where there is no `/proc`).
#[derive(Debug)]
struct Process;

/// Clock ticks per second of the times in `/proc` (`USER_HZ`, 100 on every Linux architecture;
/// Prometheus' own procfs library assumes the same).
const USER_HZ: f64 = 100.0;

/// What `/proc` says about this process.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    open_fds: Option<i64>,
}

impl ProcessStats {
    fn read() -> ProcessStats {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let mut stats = ProcessStats::parse(&read("/proc/self/stat"), &read("/proc/stat"), &read("/proc/self/status"));
        stats.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as i64);
        stats
    }

    /// From the text of `/proc/self/stat`, `/proc/stat` and `/proc/self/status`.
    fn parse(stat: &str, system: &str, status: &str) -> ProcessStats {
        // Fields after the command name, which is in parentheses and may hold spaces: the
        // first is field 3 (state), so field n is at n - 3.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let boot_time =
            system.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|t| t.trim().parse::<f64>().ok());
        let resident_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
        ProcessStats {
            cpu_seconds: field(14).zip(field(15)).map(|(user, system)| (user + system) / USER_HZ),
            start_time_seconds: boot_time.zip(field(22)).map(|(boot, ticks)| boot + ticks / USER_HZ),
            resident_bytes: resident_kib.map(|kib| kib * 1024),
            open_fds: None,
        }
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(seconds) = stats.cpu_seconds {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            ("process_resident_memory_bytes", "Resident memory size in bytes", stats.resident_bytes),
            ("process_open_fds", "Number of open file descriptors", stats.open_fds),
        ] {
            if let Some(value) = value {
                let metric = ConstGauge::new(value);
                metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
            }
        }
        if let Some(seconds) = stats.start_time_seconds {
            let metric = ConstGauge::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Configured registries, their mirrors, and the well-known public registries.
fn known_registries(config: &Config) -> HashSet<Arc<str>> {
    let configured = config.registries.iter().flat_map(|r| std::iter::once(&r.host).chain(&r.mirrors));
    WELL_KNOWN_REGISTRIES.iter().copied().chain(configured.map(String::as_str)).map(Arc::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_handled_ones_or_other() {
        for kind in Kind::NAMED {
            assert!(crate::sites::shape(kind.as_str()).is_some(), "{kind:?} is not handled");
            assert_eq!(Kind::of(kind.as_str()), kind);
        }
        for other in ["", "Namespace", "pod", "Pod ", "Deployment2", &"x".repeat(10_000)] {
            assert_eq!(Kind::of(other), Kind::Other, "{other:?}");
        }
    }

    #[test]
    fn codes_are_a_closed_set() {
        let label = |code: &str| Code::of(code).0;
        assert_eq!(label("200"), "200");
        assert_eq!(label("429"), "429");
        assert_eq!(label("204"), "2xx");
        assert_eq!(label("307"), "3xx");
        assert_eq!(label("418"), "4xx");
        assert_eq!(label("599"), "5xx");
        assert_eq!(label("timeout"), "timeout");
        assert_eq!(label("error"), "error");
        for other in ["0", "99", "600", "65535", "2000", "abc", ""] {
            assert_eq!(label(other), OTHER, "{other:?}");
        }
        let all: HashSet<&str> = (0..=u16::MAX).map(|c| label(&c.to_string())).collect();
        assert_eq!(all.len(), Code::EXACT.len() + Code::CLASSES.len() + 1);
    }

    #[test]
    fn registries_are_configured_mirrors_or_well_known() {
        let config =
            Config::parse("registries: [{ host: 'r.internal:5000', mirrors: ['m.internal'] }]").expect("config");
        let metrics = Metrics::new(&config);
        let label = |host: &str| metrics.registry_label(host).0.map(|h| h.to_string());
        assert_eq!(label("r.internal:5000").as_deref(), Some("r.internal:5000"));
        assert_eq!(label("m.internal").as_deref(), Some("m.internal"));
        assert_eq!(label("ghcr.io").as_deref(), Some("ghcr.io"));
        assert_eq!(label("index.docker.io").as_deref(), Some("index.docker.io"));
        for other in ["r.internal", "r.internal:5001", "evil.example", "GHCR.IO", "127.0.0.1:1"] {
            assert_eq!(label(other), None, "{other}");
        }
    }

    #[test]
    fn namespaces_are_the_first_seen_then_other() {
        let metrics = Metrics::new(&Config::default());
        for i in 0..MAX_NAMESPACES {
            assert!(metrics.namespace_label(&format!("ns-{i}")).0.is_some());
        }
        assert_eq!(metrics.namespace_label("one-too-many").0, None);
        // Those already seen keep their label.
        assert_eq!(metrics.namespace_label("ns-0").0.as_deref(), Some("ns-0"));
        assert_eq!(Metrics::new(&Config::default()).namespace_label("Not_A_Namespace").0, None);
    }

    #[test]
    fn open_metrics_only_when_asked_for_at_least_as_much_as_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        for text in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4"),
            Some("application/openmetrics-text;q=0"),
            Some("application/openmetrics-text;q=0.2,text/plain"),
            Some("application/openmetrics-text;q=0.2,*/*;q=0.5"),
            Some("application/json"),
        ] {
            assert_eq!(Format::negotiate(text), Format::Text, "{text:?}");
        }
    }

    #[test]
    fn process_stats_from_proc() {
        // A command name with spaces and parentheses, as the kernel writes it.
        let stat = "4242 (lay (er) link) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 12345 100000 2000";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let status = "Name:\tlayerlink\nVmSize:\t  200000 kB\nVmRSS:\t   30000 kB\n";
        let stats = ProcessStats::parse(stat, system, status);
        assert_eq!(stats.cpu_seconds, Some(3.0));
        assert_eq!(stats.start_time_seconds, Some(1_700_000_000.0 + 123.45));
        assert_eq!(stats.resident_bytes, Some(30_000 * 1024));
        assert_eq!(ProcessStats::parse("", "", ""), ProcessStats::default());
        let live = ProcessStats::read();
        assert!(live.open_fds.is_some_and(|n| n >= 3) && live.resident_bytes.is_some_and(|b| b > 0), "{live:?}");
    }
}
