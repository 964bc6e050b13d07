//! Our own thin registry client (DESIGN decision 4): HEAD a manifest for its digest, GET only
//! when the registry sends no `Docker-Content-Digest`, with the auth challenge flow, per-registry
//! TLS, mirrors, rate-limit windows, a concurrency limit, and the SSRF guard in front.

pub mod auth;
pub mod guard;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::{Method, StatusCode, header};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use self::{
    auth::{Challenge, Credential, Keychain, Token, TokenKey, TokenResponse},
    guard::{Guard, GuardedResolver},
};
use crate::{
    Config, Error,
    metrics::{Metrics, RegistryLabels, RegistryRequestLabels},
    reference::Reference,
};

/// Manifest types we accept, index types first so a multi-arch image pins to its index
/// (DESIGN decision 2).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A digest and the host that answered for it (a mirror or the upstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub digest: String,
    pub answered_by: String,
}

/// A fetched manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub body: Bytes,
}

struct Endpoint {
    client: reqwest::Client,
    scheme: &'static str,
}

pub struct Registries {
    guard: Arc<Guard>,
    /// Clients for configured hosts (their CA, plain HTTP); others share `default`.
    endpoints: HashMap<String, Endpoint>,
    default: Endpoint,
    mirrors: HashMap<String, Vec<String>>,
    /// Credentials from `registries[].credentialsFile`, each file only for its own host.
    configured_credentials: HashMap<String, Keychain>,
    tokens: moka::future::Cache<TokenKey, Token>,
    challenges: Mutex<HashMap<String, Challenge>>,
    blocked_until: Mutex<HashMap<String, Instant>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    max_concurrency: usize,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Registries {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let guard = Arc::new(Guard::new(config)?);
        let build = |ca_file: Option<&std::path::Path>| build_client(config, guard.clone(), ca_file);
        let mut endpoints = HashMap::new();
        let mut mirrors = HashMap::new();
        let mut configured_credentials = HashMap::new();
        for registry in &config.registries {
            let scheme = if registry.plain_http { "http" } else { "https" };
            endpoints.insert(registry.host.clone(), Endpoint { client: build(registry.ca_file.as_deref())?, scheme });
            if !registry.mirrors.is_empty() {
                mirrors.insert(registry.host.clone(), registry.mirrors.clone());
            }
            if let Some(path) = &registry.credentials_file {
                let bytes = std::fs::read(path)
                    .map_err(|e| Error::Config(format!("credentialsFile {}: {e}", path.display())))?;
                let parsed = Keychain::parse(&bytes)
                    .map_err(|e| Error::Config(format!("credentialsFile {}: {e}", path.display())))?;
                for warning in parsed.warnings {
                    tracing::warn!(file = %path.display(), "{warning}");
                }
                configured_credentials.insert(registry.host.clone(), parsed.keychain);
            }
        }
        let tokens = moka::future::Cache::builder().max_capacity(10_000).expire_after(TokenExpiry).build();
        Ok(Registries {
            guard: guard.clone(),
            endpoints,
            default: Endpoint { client: build(None)?, scheme: "https" },
            mirrors,
            configured_credentials,
            tokens,
            challenges: Mutex::default(),
            blocked_until: Mutex::default(),
            limits: Mutex::default(),
            max_concurrency: config.resolve.max_concurrency_per_registry,
            request_timeout: config.resolve.request_timeout,
            metrics,
        })
    }

    /// The manifest digest of `reference`'s tag: mirrors in order, then the upstream.
    pub async fn digest(&self, reference: &Reference, keychain: &Keychain) -> Result<Answer, Error> {
        let mut last_error = None;
        for host in self.hosts_for(reference) {
            let credential = self.credential_for(&host, reference, keychain);
            match self.head_digest(&host, reference, credential.as_ref()).await {
                Ok(digest) => {
                    self.metrics.count_answer(&host);
                    return Ok(Answer { digest, answered_by: host });
                }
                Err(e) => {
                    tracing::debug!(registry = %host, error = %e, "lookup failed");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least the upstream is tried"))
    }

    /// GETs a manifest by tag or digest (pre-pull detection and the layers report).
    pub async fn manifest(
        &self,
        reference: &Reference,
        tag_or_digest: &str,
        keychain: &Keychain,
    ) -> Result<Manifest, Error> {
        let host = reference.api_host().to_string();
        let credential = self.credential_for(&host, reference, keychain);
        let path = format!("/v2/{}/manifests/{tag_or_digest}", reference.repository);
        let response = self.send(&host, Method::GET, &path, &reference.repository, credential.as_ref()).await?;
        let response = check_status(&host, response, &what(reference, tag_or_digest)).await?;
        let media_type = content_type(&response);
        let header_digest = docker_content_digest(&response);
        let body = response.bytes().await.map_err(|e| request_error(&host, e, self.request_timeout))?;
        let digest = header_digest.unwrap_or_else(|| sha256_digest(&body));
        Ok(Manifest { digest, media_type, body })
    }

    /// The identity of the credential a lookup of `reference` would use (0: anonymous), which
    /// keys the digest cache.
    pub fn credential_id(&self, reference: &Reference, keychain: &Keychain) -> u64 {
        self.credential_for(reference.api_host(), reference, keychain).map_or(0, |c| c.id())
    }

    fn hosts_for(&self, reference: &Reference) -> Vec<String> {
        let mut hosts = self.mirrors.get(&reference.registry).cloned().unwrap_or_default();
        hosts.push(reference.api_host().to_string());
        hosts
    }

    /// Pod credentials first (pull secrets), then the configured file for this exact host.
    fn credential_for(&self, host: &str, reference: &Reference, keychain: &Keychain) -> Option<Credential> {
        let registry = if host == reference.api_host() { reference.registry.as_str() } else { host };
        keychain
            .lookup(registry, &reference.repository)
            .or_else(|| self.configured_credentials.get(registry)?.lookup(registry, &reference.repository))
            .cloned()
    }

    async fn head_digest(
        &self,
        host: &str,
        reference: &Reference,
        credential: Option<&Credential>,
    ) -> Result<String, Error> {
        let tag = reference.tag_or_latest();
        let path = format!("/v2/{}/manifests/{tag}", reference.repository);
        let response = self.send(host, Method::HEAD, &path, &reference.repository, credential).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.explain_not_found(host, reference, tag, credential).await);
        }
        let response = check_status(host, response, &what(reference, tag)).await?;
        if let Some(digest) = docker_content_digest(&response) {
            return Ok(digest);
        }
        // No Docker-Content-Digest: the digest is the sha256 of the manifest bytes.
        let response = self.send(host, Method::GET, &path, &reference.repository, credential).await?;
        let response = check_status(host, response, &what(reference, tag)).await?;
        let body = response.bytes().await.map_err(|e| request_error(host, e, self.request_timeout))?;
        Ok(sha256_digest(&body))
    }

    /// HEAD has no body, and distribution answers MANIFEST_UNKNOWN for unknown repositories too:
    /// the tag list (not a pull) tells a missing repository from a missing tag.
    async fn explain_not_found(
        &self,
        host: &str,
        reference: &Reference,
        tag: &str,
        credential: Option<&Credential>,
    ) -> Error {
        let repository = &reference.repository;
        let path = format!("/v2/{repository}/tags/list?n=1");
        let missing_repo = match self.send(host, Method::GET, &path, repository, credential).await {
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                Some(error_message(&response.text().await.unwrap_or_default()))
            }
            _ => None,
        };
        match missing_repo {
            Some(message) => {
                Error::NotFound { registry: host.into(), what: format!("repository {repository}"), message }
            }
            None => Error::NotFound {
                registry: host.into(),
                what: format!("tag {tag} of {repository}"),
                message: "MANIFEST_UNKNOWN".into(),
            },
        }
    }

    /// One request with the auth flow: a known challenge is answered up front, an unknown one
    /// after the first 401. A failed login is an error, never an anonymous retry.
    async fn send(
        &self,
        host: &str,
        method: Method,
        path: &str,
        repository: &str,
        credential: Option<&Credential>,
    ) -> Result<reqwest::Response, Error> {
        self.guard.check_host(host)?;
        self.check_rate_limit(host)?;
        let permit = self.semaphore(host).acquire_owned().await.expect("semaphores are never closed");
        let scope = format!("repository:{repository}:pull");
        let known = self.challenges.lock().unwrap().get(host).cloned();
        let mut authorization = match known {
            Some(challenge) => Some(self.authorization(host, &challenge, &scope, credential).await?),
            None => None,
        };
        for attempt in 0..2 {
            let response = self.request(host, method.clone(), path, authorization.as_deref()).await?;
            if response.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                drop(permit);
                return self.note_rate_limit(host, response);
            }
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            let Some(challenge) = challenge else {
                return Err(Error::Unauthorized {
                    registry: host.into(),
                    message: "401 without a usable WWW-Authenticate challenge".into(),
                });
            };
            self.challenges.lock().unwrap().insert(host.to_string(), challenge.clone());
            authorization = Some(self.authorization(host, &challenge, &scope, credential).await?);
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn request(
        &self,
        host: &str,
        method: Method,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let endpoint = self.endpoint(host);
        let url = format!("{}://{host}{path}", endpoint.scheme);
        let mut request = endpoint.client.request(method.clone(), &url).header(header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let started = Instant::now();
        let result = request.send().await;
        let code = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".into(),
            Err(_) => "error".into(),
        };
        self.record(host, method_label(&method), code, started.elapsed());
        result.map_err(|e| request_error(host, e, self.request_timeout))
    }

    fn record(&self, host: &str, method: &'static str, code: String, elapsed: Duration) {
        let (registry, code) = self.metrics.request_labels(host, &code);
        self.metrics
            .registry_requests
            .get_or_create(&RegistryRequestLabels { registry: registry.clone(), method, code })
            .inc();
        self.metrics.registry_duration.get_or_create(&RegistryLabels { registry }).observe(elapsed.as_secs_f64());
    }

    async fn authorization(
        &self,
        host: &str,
        challenge: &Challenge,
        scope: &str,
        credential: Option<&Credential>,
    ) -> Result<String, Error> {
        match challenge {
            Challenge::Basic => credential.map(Credential::basic_header).ok_or_else(|| Error::Unauthorized {
                registry: host.into(),
                message:
                    "the registry requires credentials and none match this image (imagePullSecrets or credentialsFile)"
                        .into(),
            }),
            Challenge::Bearer { realm, service } => {
                let key = TokenKey {
                    realm: realm.clone(),
                    service: service.clone().unwrap_or_default(),
                    scope: scope.to_string(),
                    credential: credential.map_or(0, Credential::id),
                };
                // One fetch per key however many lookups race for it.
                let token = self
                    .tokens
                    .try_get_with(key.clone(), self.fetch_token(host, &key, credential))
                    .await
                    .map_err(|e: Arc<Error>| clone_error(&e))?;
                Ok(format!("Bearer {}", token.value))
            }
        }
    }

    async fn fetch_token(&self, host: &str, key: &TokenKey, credential: Option<&Credential>) -> Result<Token, Error> {
        let mut url = url::Url::parse(&key.realm).map_err(|e| Error::Unauthorized {
            registry: host.into(),
            message: format!("token realm {:?} is not a URL: {e}", key.realm),
        })?;
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(Error::Unauthorized { registry: host.into(), message: "token realm has no host".into() });
            }
        };
        self.guard.check_host(&realm_host)?;
        {
            let mut query = url.query_pairs_mut();
            if !key.service.is_empty() {
                query.append_pair("service", &key.service);
            }
            query.append_pair("scope", &key.scope);
        }
        let endpoint = self.endpoint(&realm_host);
        let mut request = endpoint.client.get(url);
        if let Some(credential) = credential {
            request = request.header(header::AUTHORIZATION, credential.basic_header());
        }
        let started = Instant::now();
        let result = request.send().await;
        let code = result.as_ref().map_or("error".to_string(), |r| r.status().as_u16().to_string());
        self.record(&realm_host, "GET", code, started.elapsed());
        let response = result.map_err(|e| request_error(&realm_host, e, self.request_timeout))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Error::Unauthorized {
                registry: host.into(),
                message: format!("token request refused ({status}): {}", error_message(&body)),
            });
        }
        let body: TokenResponse = response.json().await.map_err(|e| Error::Unauthorized {
            registry: host.into(),
            message: format!("token response is not JSON: {e}"),
        })?;
        body.into_token(Instant::now())
            .ok_or_else(|| Error::Unauthorized { registry: host.into(), message: "token response has no token".into() })
    }

    fn endpoint(&self, host: &str) -> &Endpoint {
        self.endpoints.get(host).unwrap_or(&self.default)
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap();
        limits.entry(host.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.max_concurrency))).clone()
    }

    fn check_rate_limit(&self, host: &str) -> Result<(), Error> {
        let blocked = self.blocked_until.lock().unwrap();
        match blocked.get(host) {
            Some(until) if *until > Instant::now() => Err(Error::RateLimited {
                registry: host.into(),
                retry_after_secs: until.saturating_duration_since(Instant::now()).as_secs().max(1),
            }),
            _ => Ok(()),
        }
    }

    /// A 429 closes the registry for its `Retry-After` window (60s when it names none).
    fn note_rate_limit(&self, host: &str, response: reqwest::Response) -> Result<reqwest::Response, Error> {
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            return Ok(response);
        }
        let secs = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(60);
        self.blocked_until.lock().unwrap().insert(host.to_string(), Instant::now() + Duration::from_secs(secs));
        Err(Error::RateLimited { registry: host.into(), retry_after_secs: secs })
    }
}

fn build_client(
    config: &Config,
    guard: Arc<Guard>,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| Error::Config(format!("caFile {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| Error::Config(format!("caFile {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| Error::Config(format!("caFile {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::Config(format!("caFile {}: no PEM certificates", path.display())));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let redirect_guard = guard.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let target = match (attempt.url().host_str(), attempt.url().port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return attempt.error("redirect without a host"),
        };
        match redirect_guard.check_host(&target) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e.to_string()),
        }
    });
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(GuardedResolver(guard)))
        .connect_timeout(config.resolve.connect_timeout)
        .timeout(config.resolve.request_timeout)
        .redirect(redirects)
        .user_agent(concat!("layerlink/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Tls(e.to_string()))
}

async fn check_status(host: &str, response: reqwest::Response, what: &str) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = error_message(&body);
    Err(match status {
        StatusCode::NOT_FOUND => Error::NotFound { registry: host.into(), what: what.into(), message },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Error::Unauthorized { registry: host.into(), message: format!("{status} for {what}: {message}") }
        }
        _ => Error::Registry { registry: host.into(), message: format!("{status} for {what}: {message}") },
    })
}

/// The registry's own words: `errors[].code: message` from a distribution error body.
fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            e.errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect::<Vec<_>>().join("; ")
        }
        _ if body.trim().is_empty() => "no details".into(),
        _ => crate::admission::review::truncate(body.trim(), 200),
    }
}

fn what(reference: &Reference, tag_or_digest: &str) -> String {
    let sep = if tag_or_digest.contains(':') { "@" } else { ":" };
    format!("{}/{}{sep}{tag_or_digest}", reference.registry, reference.repository)
}

fn docker_content_digest(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get("docker-content-digest")?.to_str().ok()?.trim();
    let hex = value.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| value.to_ascii_lowercase())
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::HEAD => "HEAD",
        Method::GET => "GET",
        _ => "OTHER",
    }
}

fn request_error(host: &str, e: reqwest::Error, timeout: Duration) -> Error {
    // The causes, without reqwest's and hyper's wrappers (they repeat the URL, which the
    // message names anyway): "dns error: failed to lookup address information: …".
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(err) = source {
        let text = err.to_string();
        if !text.starts_with("error sending request") && !text.starts_with("client error (") {
            causes.push(text);
        }
        source = err.source();
    }
    let chain = if causes.is_empty() { e.to_string() } else { causes.join(": ") };
    if let Some(i) = chain.find("refused by the network guard: ") {
        let reason = chain[i + "refused by the network guard: ".len()..].split(": ").next().unwrap_or("").to_string();
        return Error::Refused { registry: host.into(), reason };
    }
    if e.is_timeout() {
        return Error::Timeout { registry: host.into(), after_ms: timeout.as_millis() };
    }
    if e.is_connect() {
        return Error::Connect { registry: host.into(), message: format!("cannot connect: {}", chain) };
    }
    Error::Registry { registry: host.into(), message: chain }
}

/// Errors shared through single-flight caches come back as `Arc<Error>`; rebuild an owned one.
pub fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotFound { registry, what, message } => {
            Error::NotFound { registry: registry.clone(), what: what.clone(), message: message.clone() }
        }
        Error::Unauthorized { registry, message } => {
            Error::Unauthorized { registry: registry.clone(), message: message.clone() }
        }
        Error::RateLimited { registry, retry_after_secs } => {
            Error::RateLimited { registry: registry.clone(), retry_after_secs: *retry_after_secs }
        }
        Error::Connect { registry, message } => Error::Connect { registry: registry.clone(), message: message.clone() },
        Error::Timeout { registry, after_ms } => Error::Timeout { registry: registry.clone(), after_ms: *after_ms },
        Error::Refused { registry, reason } => Error::Refused { registry: registry.clone(), reason: reason.clone() },
        Error::InvalidReference(p) => Error::InvalidReference(p.clone()),
        other => Error::Registry { registry: String::new(), message: other.to_string() },
    }
}

/// Tokens live until their refresh time.
struct TokenExpiry;

impl moka::Expiry<TokenKey, Token> for TokenExpiry {
    fn expire_after_create(&self, _key: &TokenKey, token: &Token, now: Instant) -> Option<Duration> {
        Some(token.refresh_at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_are_quoted() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(error_message(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(error_message(""), "no details");
        assert_eq!(error_message("plain text"), "plain text");
    }

    #[test]
    fn manifest_digest_of_bytes() {
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
