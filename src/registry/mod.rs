//! Our own thin registry client (docs/design.md, *Our own registry client*): HEAD a manifest for its digest, GET only
//! when the registry sends no `Docker-Content-Digest`, with the auth challenge flow, per-registry
//! TLS, mirrors, rate-limit windows, a concurrency limit, and the SSRF guard in front.
//!
//! A registry is not trusted. Every URL (the registry's, each redirect hop, each token realm) is
//! judged by the guard as it will be dialled; bodies are read as streams with a limit; header
//! values, `Retry-After` and token lifetimes are bounded ([`wire`]); a digest is refused unless it
//! is a well-formed sha256 digest that agrees with the bytes whenever we have them; and what a
//! tenant is told of a registry's answer is its status and distribution error codes, never its
//! text. Shared state (challenges, tokens, rate-limit windows, per-registry limits) lives in
//! bounded caches that a panic cannot poison.

pub mod auth;
pub mod guard;
pub mod wire;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use reqwest::{Method, StatusCode, header};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use url::Url;

use self::{
    auth::{Challenge, Credential, Keychain, Token, TokenKey, TokenResponse},
    guard::{Authority, Guard, GuardedResolver, Refusal},
};
use crate::{
    Config, Error,
    metrics::{Metrics, RegistryLabels, RegistryRequestLabels},
    reference::Reference,
};

/// Manifest types we accept, index types first so a multi-arch image pins to its index
/// (docs/design.md, *The index digest*).
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

/// The client for one listed `host:port`: its CA, and a resolver that trusts its name. Used only
/// for URLs with exactly this host and port.
struct Endpoint {
    authority: Authority,
    client: reqwest::Client,
}

/// Bounds on the client's own bookkeeping, so naming many hosts and repositories cannot grow it.
const MAX_CHALLENGES: u64 = 10_000;
const CHALLENGE_TTL: Duration = Duration::from_secs(3600);
const MAX_HOSTS: u64 = 10_000;
const LIMIT_IDLE: Duration = Duration::from_secs(600);
/// Bytes of tokens (with their keys) kept.
const MAX_TOKEN_BYTES: u64 = 32 << 20;

pub struct Registries {
    guard: Arc<Guard>,
    /// Hosts (as configured) spoken to over plain HTTP.
    plain_http: HashSet<String>,
    endpoints: Vec<Endpoint>,
    /// For every other host: public roots, a resolver that trusts no name.
    default: reqwest::Client,
    mirrors: HashMap<String, Vec<String>>,
    /// Credentials from `registries[].credentialsFile`, each file only for its own host.
    configured_credentials: HashMap<String, Keychain>,
    tokens: moka::future::Cache<TokenKey, Token>,
    /// The last challenge per (host, repository): one repository's auth says nothing of another's.
    challenges: moka::sync::Cache<(String, String), Challenge>,
    blocked_until: moka::sync::Cache<String, Instant>,
    limits: moka::sync::Cache<String, Arc<Semaphore>>,
    max_concurrency: usize,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// The authorization a request carried, so a 401 can drop exactly the token it refused.
enum Authorization {
    Basic(String),
    Bearer(TokenKey, Token),
}

impl Authorization {
    fn header(&self) -> String {
        match self {
            Authorization::Basic(value) => value.clone(),
            Authorization::Bearer(_, token) => format!("Bearer {}", token.value),
        }
    }
}

/// One request as we mean to send it, before redirects.
struct Outgoing {
    method: Method,
    url: Url,
    /// Sent only to the URL's own origin, never across a redirect to another.
    authorization: Option<String>,
    accept: Option<&'static str>,
    /// What the first URL is, for refusals ("token realm"); empty for the registry itself.
    role: &'static str,
}

impl Registries {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let guard = Arc::new(Guard::new(config)?);
        let mut endpoints = Vec::new();
        for (authority, registry) in guard::trusted_authorities(config)? {
            let ca_file = registry.and_then(|i| config.registries[i].ca_file.as_deref());
            let resolver = GuardedResolver { guard: guard.clone(), trusted_name: Some(authority.host.clone()) };
            endpoints.push(Endpoint { client: build_client(config, resolver, ca_file)?, authority });
        }
        let mut mirrors = HashMap::new();
        let mut configured_credentials = HashMap::new();
        for registry in &config.registries {
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
        let tokens = moka::future::Cache::builder()
            .max_capacity(MAX_TOKEN_BYTES)
            .weigher(|key: &TokenKey, token: &Token| {
                let bytes = key.realm.len() + key.service.len() + key.scope.len() + token.value.len() + 64;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(TokenExpiry)
            .build();
        let default = build_client(config, GuardedResolver { guard: guard.clone(), trusted_name: None }, None)?;
        Ok(Registries {
            guard,
            plain_http: config.registries.iter().filter(|r| r.plain_http).map(|r| r.host.clone()).collect(),
            endpoints,
            default,
            mirrors,
            configured_credentials,
            tokens,
            challenges: moka::sync::Cache::builder().max_capacity(MAX_CHALLENGES).time_to_live(CHALLENGE_TTL).build(),
            blocked_until: moka::sync::Cache::builder()
                .max_capacity(MAX_HOSTS)
                .time_to_live(wire::MAX_RETRY_AFTER)
                .build(),
            limits: moka::sync::Cache::builder().max_capacity(MAX_HOSTS).time_to_idle(LIMIT_IDLE).build(),
            max_concurrency: config.resolve.max_concurrency_per_registry.clamp(1, Semaphore::MAX_PERMITS),
            request_timeout: config.resolve.request_timeout,
            metrics,
        })
    }

    /// The manifest digest of `reference`'s tag: mirrors in order, then the upstream.
    pub async fn digest(&self, reference: &Reference, keychain: &Keychain) -> Result<Answer, Error> {
        for mirror in self.mirrors.get(&reference.registry).into_iter().flatten() {
            match self.digest_from(mirror, reference, keychain).await {
                Ok(answer) => return Ok(answer),
                Err(e) => tracing::debug!(registry = %mirror, error = %e, "lookup failed"),
            }
        }
        self.digest_from(reference.api_host(), reference, keychain).await
    }

    async fn digest_from(&self, host: &str, reference: &Reference, keychain: &Keychain) -> Result<Answer, Error> {
        let credential = self.credential_for(host, reference, keychain);
        let digest = self.head_digest(host, reference, credential.as_ref()).await?;
        self.metrics.count_answer(host);
        Ok(Answer { digest, answered_by: host.to_string() })
    }

    /// GETs a manifest by tag or digest (pre-pull detection and the layers report). Its digest
    /// is the sha256 of the bytes, which must agree with `Docker-Content-Digest` and with the
    /// digest asked for; its shape is checked ([`wire::check_manifest`]).
    pub async fn manifest(
        &self,
        reference: &Reference,
        tag_or_digest: &str,
        keychain: &Keychain,
    ) -> Result<Manifest, Error> {
        let host = reference.api_host().to_string();
        if !wire::is_tag_or_digest(tag_or_digest) {
            return Err(Error::Registry { registry: host, message: "not a tag or a sha256 digest".into() });
        }
        let credential = self.credential_for(&host, reference, keychain);
        let path = format!("/v2/{}/manifests/{tag_or_digest}", reference.repository);
        let response = self.send(&host, Method::GET, &path, &reference.repository, credential.as_ref()).await?;
        let response = check_status(&host, response, &what(reference, tag_or_digest)).await?;
        let media_type = content_type(&response);
        let header_digest = docker_content_digest(&host, &response)?;
        let body = read_bytes(&host, response, wire::MAX_MANIFEST_BYTES, "manifest", self.request_timeout).await?;
        let digest = sha256_digest(&body);
        let asked = tag_or_digest.starts_with("sha256:").then_some(tag_or_digest);
        for claimed in header_digest.as_deref().into_iter().chain(asked) {
            agree(&host, claimed, &digest)?;
        }
        wire::check_manifest(&body)
            .map_err(|reason| Error::Registry { registry: host.clone(), message: reason.into() })?;
        Ok(Manifest { digest, media_type, body })
    }

    /// The identity of the credential a lookup of `reference` would use (0: anonymous), which
    /// keys the digest cache.
    pub fn credential_id(&self, reference: &Reference, keychain: &Keychain) -> u64 {
        self.credential_for(reference.api_host(), reference, keychain).map_or(0, |c| c.id())
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
        if let Some(digest) = docker_content_digest(host, &response)? {
            return Ok(digest);
        }
        // No Docker-Content-Digest: the digest is the sha256 of the manifest bytes, hashed as
        // they stream in (nothing is kept).
        let response = self.send(host, Method::GET, &path, &reference.repository, credential).await?;
        let response = check_status(host, response, &what(reference, tag)).await?;
        let claimed = docker_content_digest(host, &response)?;
        let mut hasher = Sha256::new();
        read_limited(host, response, wire::MAX_MANIFEST_BYTES, "manifest", self.request_timeout, |chunk| {
            hasher.update(chunk)
        })
        .await?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(claimed) = claimed {
            agree(host, &claimed, &digest)?;
        }
        Ok(digest)
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
        match self.send(host, Method::GET, &path, repository, credential).await {
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                let codes = error_codes(host, response, self.request_timeout).await;
                let message = if codes.is_empty() { "404 Not Found".into() } else { codes.join(", ") };
                Error::NotFound { registry: host.into(), what: format!("repository {repository}"), message }
            }
            _ => Error::NotFound {
                registry: host.into(),
                what: format!("tag {tag} of {repository}"),
                message: "MANIFEST_UNKNOWN".into(),
            },
        }
    }

    /// The URL of `path` on `host` as configured (plain HTTP or HTTPS).
    fn url(&self, host: &str, path: &str) -> Result<Url, Error> {
        let scheme = if self.plain_http.contains(host) { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{host}{path}"))
            .map_err(|_| Error::Refused { registry: host.into(), refusal: Refusal("not a valid registry host".into()) })
    }

    /// One request with the auth flow: a known challenge (for this repository) is answered up
    /// front, an unknown one after the first 401. A 401 is retried once, with the challenge it
    /// names and, if a cached token was refused, a new token. A failed login is an error, never
    /// an anonymous retry.
    async fn send(
        &self,
        host: &str,
        method: Method,
        path: &str,
        repository: &str,
        credential: Option<&Credential>,
    ) -> Result<reqwest::Response, Error> {
        let url = self.url(host, path)?;
        self.guard
            .check_url(&url)
            .map_err(|reason| Error::Refused { registry: host.into(), refusal: Refusal(reason) })?;
        self.check_rate_limit(host)?;
        let _permit = self
            .semaphore(host)
            .acquire_owned()
            .await
            .map_err(|_| Error::Registry { registry: host.into(), message: "the client is shutting down".into() })?;
        let scope = format!("repository:{repository}:pull");
        let challenge_key = (host.to_string(), repository.to_string());
        let sent = match self.challenges.get(&challenge_key) {
            Some(challenge) => Some(self.authorization(host, &challenge, &scope, credential).await?),
            None => None,
        };
        let outgoing = |authorization: Option<&Authorization>| Outgoing {
            method: method.clone(),
            url: url.clone(),
            authorization: authorization.map(Authorization::header),
            accept: Some(MANIFEST_ACCEPT),
            role: "",
        };
        let response = self.fetch(host, outgoing(sent.as_ref())).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return self.note_rate_limit(host, response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| Error::Unauthorized {
                registry: host.into(),
                message: "401 without a usable WWW-Authenticate challenge".into(),
            })?;
        drop(response);
        self.challenges.insert(challenge_key, challenge.clone());
        if let Some(Authorization::Bearer(key, token)) = &sent {
            self.forget_token(key, token).await;
        }
        let retry = self.authorization(host, &challenge, &scope, credential).await?;
        let response = self.fetch(host, outgoing(Some(&retry))).await?;
        self.note_rate_limit(host, response)
    }

    /// Sends `outgoing`, following redirects by hand so that every hop is judged by the guard
    /// and dialled by the client for its own host and port. Ends within the request timeout.
    async fn fetch(&self, host: &str, outgoing: Outgoing) -> Result<reqwest::Response, Error> {
        let hops = async {
            let origin = outgoing.url.origin();
            let mut url = outgoing.url.clone();
            let mut hop = 0;
            loop {
                let shown = Authority::of(&url).map(|a| wire::clean(&a.to_string())).unwrap_or_default();
                // Which URL was refused: the registry's own, a token realm, or a redirect.
                let refused = |reason: String| {
                    let reason = match (hop, outgoing.role) {
                        (0, "") => reason,
                        (0, role) => format!("{role} {shown}: {reason}"),
                        _ => format!("redirect to {shown}: {reason}"),
                    };
                    Error::Refused { registry: host.into(), refusal: Refusal(reason) }
                };
                self.guard.check_url(&url).map_err(refused)?;
                let mut request = self.client_for(&url).request(outgoing.method.clone(), url.clone());
                if let Some(accept) = outgoing.accept {
                    request = request.header(header::ACCEPT, accept);
                }
                if let Some(value) = &outgoing.authorization
                    && url.origin() == origin
                {
                    request = request.header(header::AUTHORIZATION, value);
                }
                let started = Instant::now();
                let result = request.send().await;
                let code = match &result {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) if e.is_timeout() => "timeout".into(),
                    Err(_) => "error".into(),
                };
                self.record(host, method_label(&outgoing.method), code, started.elapsed());
                let response = result.map_err(|e| match request_error(host, e, self.request_timeout) {
                    Error::Refused { refusal, .. } => refused(refusal.0),
                    other => other,
                })?;
                let Some(next) = redirect_target(&url, &response) else { return Ok(response) };
                hop += 1;
                if hop > wire::MAX_REDIRECTS {
                    return Err(Error::Registry { registry: host.into(), message: "too many redirects".into() });
                }
                url = next.map_err(|reason| Error::Registry { registry: host.into(), message: reason.into() })?;
            }
        };
        tokio::time::timeout(self.request_timeout, hops).await.unwrap_or_else(|_| {
            Err(Error::Timeout { registry: host.into(), after_ms: self.request_timeout.as_millis() })
        })
    }

    /// The client for `url`: a listed host:port's own, else the default.
    fn client_for(&self, url: &Url) -> &reqwest::Client {
        let authority = Authority::of(url);
        self.endpoints.iter().find(|e| Some(&e.authority) == authority.as_ref()).map_or(&self.default, |e| &e.client)
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
    ) -> Result<Authorization, Error> {
        match challenge {
            Challenge::Basic => credential.map(|c| Authorization::Basic(c.basic_header())).ok_or_else(|| {
                Error::Unauthorized {
                    registry: host.into(),
                    message:
                        "the registry requires credentials and none match this image (imagePullSecrets or credentialsFile)"
                            .into(),
                }
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
                    .map_err(Arc::unwrap_or_clone)?;
                Ok(Authorization::Bearer(key, token))
            }
        }
    }

    /// Drops a token the registry refused, unless another lookup has already replaced it.
    async fn forget_token(&self, key: &TokenKey, refused: &Token) {
        if self.tokens.get(key).await.is_some_and(|current| Arc::ptr_eq(&current.value, &refused.value)) {
            self.tokens.invalidate(key).await;
        }
    }

    async fn fetch_token(&self, host: &str, key: &TokenKey, credential: Option<&Credential>) -> Result<Token, Error> {
        let refused = |message: String| Error::Unauthorized { registry: host.into(), message };
        let mut url = Url::parse(&key.realm).map_err(|_| refused("the token realm is not a URL".into()))?;
        let realm_host = Authority::of(&url).map(|a| wire::clean(&a.to_string())).unwrap_or_else(|| host.into());
        {
            let mut query = url.query_pairs_mut();
            if !key.service.is_empty() {
                query.append_pair("service", &key.service);
            }
            query.append_pair("scope", &key.scope);
        }
        let outgoing = Outgoing {
            method: Method::GET,
            url,
            authorization: credential.map(Credential::basic_header),
            accept: None,
            role: "token realm",
        };
        let response = self.fetch(&realm_host, outgoing).await.map_err(|e| match e {
            Error::Refused { refusal, .. } => Error::Refused { registry: host.into(), refusal },
            other => other,
        })?;
        let status = response.status();
        if !status.is_success() {
            let codes = error_codes(&realm_host, response, self.request_timeout).await;
            return Err(refused(format!("token request refused ({})", wire::describe(status, &codes))));
        }
        let body =
            read_bytes(&realm_host, response, wire::MAX_TOKEN_RESPONSE_BYTES, "token response", self.request_timeout)
                .await?;
        TokenResponse::parse(&body, Instant::now()).map_err(|reason| refused(format!("token response: {reason}")))
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        self.limits.get_with_by_ref(host, || Arc::new(Semaphore::new(self.max_concurrency)))
    }

    fn check_rate_limit(&self, host: &str) -> Result<(), Error> {
        match self.blocked_until.get(host) {
            Some(until) if until > Instant::now() => Err(Error::RateLimited {
                registry: host.into(),
                retry_after_secs: until.saturating_duration_since(Instant::now()).as_secs().max(1),
            }),
            _ => Ok(()),
        }
    }

    /// A 429 closes the registry for its `Retry-After` window (clamped; 60s when it names none).
    fn note_rate_limit(&self, host: &str, response: reqwest::Response) -> Result<reqwest::Response, Error> {
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            return Ok(response);
        }
        let wait = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map_or(wire::DEFAULT_RETRY_AFTER, |v| wire::retry_after(v, SystemTime::now()));
        if let Some(until) = Instant::now().checked_add(wait) {
            self.blocked_until.insert(host.to_string(), until);
        }
        Err(Error::RateLimited { registry: host.into(), retry_after_secs: wait.as_secs() })
    }
}

fn build_client(
    config: &Config,
    resolver: GuardedResolver,
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
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(resolver))
        .connect_timeout(config.resolve.connect_timeout)
        .timeout(config.resolve.request_timeout)
        // Followed by hand (`Registries::fetch`), each hop judged and dialled by its own client.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("layerlink/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Tls(e.to_string()))
}

/// Where a redirect points, if `response` is one: `Some(Err)` for a target that is not followed.
fn redirect_target(current: &Url, response: &reqwest::Response) -> Option<Result<Url, &'static str>> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?;
    Some((|| {
        if location.len() > wire::MAX_LOCATION_LEN {
            return Err("a redirect Location longer than 4 KiB");
        }
        let location = location.to_str().map_err(|_| "a redirect Location that is not text")?;
        let next = current.join(location).map_err(|_| "a redirect Location that is not a URL")?;
        if current.scheme() == "https" && next.scheme() != "https" {
            return Err("a redirect from https to another scheme");
        }
        Ok(next)
    })())
}

async fn check_status(host: &str, response: reqwest::Response, what: &str) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let codes = error_codes(host, response, Duration::MAX).await;
    let described = format!("{} for {what}", wire::describe(status, &codes));
    Err(match status {
        StatusCode::NOT_FOUND => Error::NotFound {
            registry: host.into(),
            what: what.into(),
            message: if codes.is_empty() { wire::describe(status, &[]) } else { codes.join(", ") },
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Error::Unauthorized { registry: host.into(), message: described }
        }
        _ => Error::Registry { registry: host.into(), message: described },
    })
}

/// The distribution error codes of an error body read up to [`wire::MAX_ERROR_BYTES`] (a longer
/// body is dropped, with its connection). The operator's log gets a short escaped excerpt.
async fn error_codes(host: &str, response: reqwest::Response, timeout: Duration) -> Vec<&'static str> {
    let status = response.status();
    match read_bytes(host, response, wire::MAX_ERROR_BYTES, "error body", timeout).await {
        Ok(body) => {
            tracing::debug!(registry = %host, %status, body = %wire::excerpt(&body), "registry error body");
            wire::error_codes(&body)
        }
        Err(e) => {
            tracing::debug!(registry = %host, %status, error = %e, "registry error body discarded");
            Vec::new()
        }
    }
}

/// Reads a body as a stream, handing each chunk to `sink`, and refuses (dropping the connection)
/// once it passes `limit` bytes.
async fn read_limited(
    host: &str,
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
    timeout: Duration,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, Error> {
    let too_large = || Error::Registry { registry: host.into(), message: format!("{what} larger than {limit} bytes") };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut total = 0usize;
    while let Some(chunk) = response.chunk().await.map_err(|e| request_error(host, e, timeout))? {
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(too_large());
        }
        sink(&chunk);
    }
    Ok(total)
}

async fn read_bytes(
    host: &str,
    response: reqwest::Response,
    limit: usize,
    what: &str,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let mut body = Vec::new();
    read_limited(host, response, limit, what, timeout, |chunk| body.extend_from_slice(chunk)).await?;
    Ok(body.into())
}

/// A digest a registry claimed must be the digest of the bytes it sent.
fn agree(host: &str, claimed: &str, actual: &str) -> Result<(), Error> {
    if claimed == actual {
        return Ok(());
    }
    Err(Error::Registry {
        registry: host.into(),
        message: format!("the registry claims digest {claimed} for a manifest whose digest is {actual}"),
    })
}

/// The repository and tag (or digest) asked for; the host is said by the error itself.
fn what(reference: &Reference, tag_or_digest: &str) -> String {
    let sep = if tag_or_digest.contains(':') { "@" } else { ":" };
    format!("{}{sep}{tag_or_digest}", reference.repository)
}

/// `Docker-Content-Digest`, if sent; a malformed one is an error, never stored.
fn docker_content_digest(host: &str, response: &reqwest::Response) -> Result<Option<String>, Error> {
    let Some(value) = response.headers().get("docker-content-digest") else { return Ok(None) };
    let parsed = value.to_str().map_err(|_| "not text").and_then(wire::parse_digest);
    parsed.map(Some).map_err(|reason| Error::Registry {
        registry: host.into(),
        message: format!("malformed Docker-Content-Digest header ({reason})"),
    })
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers().get(header::CONTENT_TYPE).and_then(|v| wire::media_type(v.as_bytes())).unwrap_or_default()
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
    if let Some(refusal) = find_cause::<Refusal>(&e) {
        return Error::Refused { registry: host.into(), refusal: refusal.clone() };
    }
    if e.is_timeout() {
        return Error::Timeout { registry: host.into(), after_ms: timeout.as_millis() };
    }
    let cause = cause_text(&e);
    if e.is_connect() {
        return Error::Connect { registry: host.into(), message: format!("cannot connect: {cause}") };
    }
    Error::Registry { registry: host.into(), message: cause }
}

/// The causes of a request error in our libraries' words, without reqwest's and hyper's wrappers
/// (they repeat the URL, which the message names anyway): "dns error: failed to lookup address
/// information: …". A TLS error is described by its kind only (a certificate's names are the
/// registry's text).
fn cause_text(e: &reqwest::Error) -> String {
    if let Some(tls) = find_cause::<rustls::Error>(e) {
        return tls_text(tls).into();
    }
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        let text = err.to_string();
        if !text.starts_with("error sending request") && !text.starts_with("client error (") {
            causes.push(text);
        }
        source = err.source();
    }
    wire::clean(&if causes.is_empty() { e.without_url_text() } else { causes.join(": ") })
}

trait WithoutUrl {
    fn without_url_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_text(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "…");
        }
        text
    }
}

fn tls_text(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "TLS: the registry's certificate is signed by an unknown authority (see caFile)"
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "TLS: the registry's certificate is not valid for its host"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "TLS: the registry's certificate has expired"
        }
        rustls::Error::InvalidCertificate(_) => "TLS: the registry's certificate is invalid",
        _ => "TLS: the handshake with the registry failed",
    }
}

/// The first error of type `T` in `e`'s chain, looking inside `io::Error`s too.
fn find_cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = match err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
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
    fn manifest_digest_of_bytes() {
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn claimed_digests_must_agree() {
        let actual = sha256_digest(b"{}");
        assert!(agree("r", &actual, &actual).is_ok());
        let err = agree("r", &sha256_digest(b"[]"), &actual).unwrap_err().to_string();
        assert!(err.contains("claims digest"), "{err}");
    }
}
