//! layerlink pins pod images to registry digests in the Kubernetes admission chain.
//!
//! A review flows `admission → policy → sites → resolve (cache → registry) → patch → response`;
//! the same engine (`sites → resolve → patch`) serves the webhook and the offline front ends.

pub mod admission;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod install;
pub mod kinds;
pub mod krm;
pub mod logs;
pub mod metrics;
pub mod mutate_files;
pub mod patch;
pub mod pins;
pub mod plan;
pub mod policy;
pub mod prepull;
pub mod reference;
pub mod registry;
pub mod reports;
pub mod resolve;
pub mod server;
pub mod sites;

pub use config::Config;
pub use engine::Engine;

/// Everything that can go wrong, with a message a user can act on.
///
/// `Clone`, so one answer can be shared by every waiter of a single-flight lookup and kept in
/// the digest cache. Errors from other libraries are kept whole as their `source()` (behind an
/// `Arc`, which is what makes them clonable); `Display` says the context and the cause once, so
/// `{e}` is enough for a log line or a warning.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    InvalidReference(#[from] reference::ParseError),
    #[error("{what} not found at {registry} ({message})")]
    NotFound { registry: String, what: String, message: String },
    #[error("{registry}: authentication failed: {message}")]
    Unauthorized { registry: String, message: String },
    #[error("{registry}: rate limited, retry after {retry_after_secs}s")]
    RateLimited { registry: String, retry_after_secs: u64 },
    #[error("{registry}: registry error: {message}")]
    Registry { registry: String, message: String },
    #[error("{registry}: {message}")]
    Connect { registry: String, message: String },
    #[error("{registry}: no answer within {after_ms}ms")]
    Timeout { registry: String, after_ms: u128 },
    /// The network guard would not let the lookup reach the registry's address.
    #[error("{registry}: {refusal}")]
    Refused { registry: String, refusal: registry::guard::Refusal },
    /// A lookup that was not started: too many already in flight in this process.
    #[error("not looked up: {limit} registry lookups already in flight; retried on the next review")]
    Busy { limit: usize },
    /// A lookup that was not started: the object asks for more than one review may.
    #[error("not looked up: {0}")]
    OverLimit(String),
    /// A bug, not the registry: e.g. a lookup task that panicked.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot listen on {address}: {message}")]
    Listen { address: std::net::SocketAddr, message: String },
    #[error("tls: {0}")]
    Tls(String),
    /// A request to the Kubernetes API failed: what was being done, and the client's error.
    #[error("kubernetes: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: std::sync::Arc<kube::Error>,
    },
    /// The cluster answered, but not as needed (a kind it does not serve, a namespace that
    /// does not go away, an unreadable kubeconfig).
    #[error("kubernetes: {0}")]
    Cluster(String),
    /// Input a verb cannot read: a document that is not YAML, or not an object.
    #[error("{0}")]
    Input(String),
    #[error("{source}")]
    Io {
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io { source: std::sync::Arc::new(source) }
    }
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::InvalidReference(_) => "invalid_reference",
            Error::NotFound { .. } => "not_found",
            Error::Unauthorized { .. } => "unauthorized",
            Error::RateLimited { .. } => "rate_limited",
            Error::Registry { .. } => "registry_error",
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Refused { .. } => "refused",
            Error::Busy { .. } => "busy",
            Error::OverLimit(_) => "over_limit",
            Error::Internal(_) => "internal",
            Error::Listen { .. } => "listen",
            Error::Tls(_) => "tls",
            Error::Kube { .. } | Error::Cluster(_) => "kubernetes",
            Error::Input(_) => "input",
            Error::Io { .. } => "io",
        }
    }

    /// A failed request to the Kubernetes API, saying what was being done.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { context: context.into(), source: std::sync::Arc::new(source) }
    }

    /// Whether a cached digest may stand in for a fresh answer (the registry, not the image, failed;
    /// or this process had no room to ask). Not-found and refused credentials are answers: a
    /// digest cached before them is not served.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Registry { .. }
                | Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Busy { .. }
        )
    }
}

/// Installs ring as the process-wide rustls provider (docs/design.md, *One crypto provider*).
/// Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
