//! Prometheus metrics (OpenMetrics text on `/metrics`), all prefixed `layerlink_`.
//! Each family's meaning is documented in the README's metrics table.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: &'static str,
    pub kind: String,
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
    pub registry: String,
    pub method: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub namespace: String,
    pub result: &'static str,
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
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0].into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("layerlink");
        let admission_requests = Family::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by endpoint, object kind and result",
            admission_requests.clone(),
        );
        let admission_duration =
            Family::<PathLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "admission_duration_seconds",
            "Time from request to answer for one admission review",
            admission_duration.clone(),
        );
        let images = Family::default();
        registry.register("images", "Image fields seen in reviews, by endpoint and outcome", images.clone());
        let cache_lookups = Family::default();
        registry.register(
            "cache_lookups",
            "Digest cache lookups: hit, miss, stale (served past TTL) or negative (cached not-found)",
            cache_lookups.clone(),
        );
        let registry_requests = Family::default();
        registry.register(
            "registry_requests",
            "HTTP requests to registries, by host, method and status code (or error)",
            registry_requests.clone(),
        );
        let registry_duration =
            Family::<RegistryLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "registry_request_duration_seconds",
            "Duration of HTTP requests to registries",
            registry_duration.clone(),
        );
        let registry_answered_by = Family::default();
        registry.register(
            "registry_answers",
            "Digest lookups answered, by the host that answered (a mirror or the upstream)",
            registry_answered_by.clone(),
        );
        let stale_served = Family::default();
        registry.register(
            "stale_served",
            "Digests served from cache past their TTL because the registry failed (stale-if-error)",
            stale_served.clone(),
        );
        let audit_findings = Family::default();
        registry.register(
            "audit_findings",
            "Images reported by audit mode, by namespace and result (would_pin, unresolved)",
            audit_findings.clone(),
        );
        let tls_reloads = Family::default();
        registry.register("tls_reloads", "Serving certificate reloads, by result", tls_reloads.clone());
        let pins = Family::default();
        registry.register(
            "pins",
            "Digests chosen for pods of a controller revision, by source (sibling, cache, registry, stale)",
            pins.clone(),
        );
        let sibling_lookups = Family::default();
        registry.register(
            "sibling_lookups",
            "Lookups of a controller revision's pods, by result (found, empty, error, timeout)",
            sibling_lookups.clone(),
        );
        let pins_behind = Counter::default();
        registry.register(
            "pins_behind",
            "Digests kept from a revision's siblings that differ from what the tag now points at",
            pins_behind.clone(),
        );
        Metrics {
            registry,
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
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn cache(&self, result: &'static str) {
        self.cache_lookups.get_or_create(&ResultLabels { result }).inc();
    }
}
