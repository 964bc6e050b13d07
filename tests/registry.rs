//! The resolver against real registries: basic auth, bearer tokens, TLS with a private CA,
//! mirrors, credential isolation, faults (outage, 429, 5xx, hangs), the per-registry concurrency
//! limit and the SSRF guard.

mod support;

use support::{engine, image};

use std::{sync::Arc, time::Duration};

use layerlink::{
    Engine, Error,
    engine::Deadline,
    reference::Reference,
    registry::auth::{Credential, Keychain},
};
use support::{Auth, Fault, Listener, Proxy, Registry, RegistryOptions, TokenOptions, TokenServer};

fn keychain(host: &str, user: &str, password: &str) -> Arc<Keychain> {
    let json = layerlink::cluster::secrets::dockerconfigjson(host, user, password);
    Arc::new(Keychain::parse(json.as_bytes()).unwrap().keychain)
}

async fn resolve(engine: &Engine, image: &str, keychain: &Arc<Keychain>) -> Result<String, Arc<Error>> {
    let reference = Reference::parse(image).unwrap();
    let deadline = Deadline::after(Duration::from_secs(5));
    engine.resolver.resolve(&reference, keychain, deadline).await.map(|r| r.digest.to_string())
}

fn credentials_file(dir: &std::path::Path, host: &str, user: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{user}.json"));
    std::fs::write(&path, layerlink::cluster::secrets::dockerconfigjson(host, user, password)).unwrap();
    path
}

/// The registry and its token server (both on loopback, so both must be listed).
fn listing_the_token_server(host: &str, tokens: &TokenServer) -> String {
    format!("registries: [{{ host: '{host}', plainHttp: true }}, {{ host: '{}', plainHttp: true }}]", tokens.addr())
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_with_a_credentials_file() {
    let registry = Registry::start_with(RegistryOptions {
        auth: Auth::Htpasswd { user: "alice".into(), password: "s3cret".into() },
        tls: false,
    });
    let digest = registry.push("team/app", "v1", &image("basic")).digest;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let good = credentials_file(dir.path(), &host, "alice", "s3cret");
    let e =
        engine(&format!("registries: [{{ host: '{host}', plainHttp: true, credentialsFile: '{}' }}]", good.display()));
    assert_eq!(resolve(&e, &format!("{host}/team/app:v1"), &Arc::default()).await.unwrap(), digest);

    // Without credentials: the registry's refusal, not a digest.
    let anonymous = engine(&format!("registries: [{{ host: '{host}', plainHttp: true }}]"));
    let err = resolve(&anonymous, &format!("{host}/team/app:v1"), &Arc::default()).await.unwrap_err();
    assert!(err.to_string().contains("requires credentials"), "{err}");

    // A wrong password: the registry's error message.
    let wrong = keychain(&host, "alice", "wrong");
    let err = resolve(&anonymous, &format!("{host}/team/app:v1"), &wrong).await.unwrap_err();
    assert!(matches!(*err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_fetched_once_per_scope_and_credential() {
    let tokens = TokenServer::start_with(TokenOptions { anonymous_pull: false, ..Default::default() });
    let (user, password) = tokens.credentials();
    let registry = Registry::start_with(RegistryOptions { auth: Auth::Token(tokens), tls: false });
    let mut digests = Vec::new();
    for tag in ["v1", "v2", "v3"] {
        digests.push(registry.push("team/app", tag, &image(tag)).digest);
    }
    let host = registry.host();
    let tokens = registry.token_server().unwrap();
    tokens.reset_counts();
    let e = engine(&listing_the_token_server(&host, tokens));
    let creds = keychain(&host, &user, &password);

    // Many concurrent lookups of tags of one repository: one token for the scope.
    let lookups = (0..30).map(|i| {
        let (e, creds) = (&e, creds.clone());
        let tag = ["v1", "v2", "v3"][i % 3];
        async move { resolve(e, &format!("{}/team/app:{tag}", e.config.registries[0].host), &creds).await }
    });
    let results = futures::future::join_all(lookups).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap(), &digests[i % 3]);
    }
    assert_eq!(tokens.requests(), 1, "{:?}", tokens.request_log());

    // A wrong password is refused with the token server's answer, never retried anonymously.
    let wrong = keychain(&host, &user, "wrong");
    let err = resolve(&e, &format!("{host}/team/app:v1"), &wrong).await.unwrap_err();
    assert!(err.to_string().contains("token request refused (401"), "{err}");
    let log = tokens.request_log();
    assert!(log.iter().all(|r| r.user.is_some()), "no anonymous token request: {log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_bearer_tokens() {
    let tokens = TokenServer::start_with(TokenOptions { anonymous_pull: true, ..Default::default() });
    let registry = Registry::start_with(RegistryOptions { auth: Auth::Token(tokens), tls: false });
    let digest = registry.push("library/app", "v1", &image("anonymous")).digest;
    let host = registry.host();
    let tokens = registry.token_server().unwrap();
    tokens.reset_counts();
    let e = engine(&listing_the_token_server(&host, tokens));
    assert_eq!(resolve(&e, &format!("{host}/library/app:v1"), &Arc::default()).await.unwrap(), digest);
    let log = tokens.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].user.is_none(), "anonymous token request: {log:?}");
    assert!(log[0].scopes.iter().any(|s| s == "repository:library/app:pull"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_registry_with_a_private_ca() {
    let registry = Registry::start_with(RegistryOptions { auth: Auth::None, tls: true });
    let digest = registry.push("team/app", "v1", &image("tls")).digest;
    let host = registry.host();
    let ca = registry.ca_file().unwrap();
    let e = engine(&format!("registries: [{{ host: '{host}', caFile: '{}' }}]", ca.display()));
    assert_eq!(resolve(&e, &format!("{host}/team/app:v1"), &Arc::default()).await.unwrap(), digest);

    let untrusting = engine(&format!("registries: [{{ host: '{host}' }}]"));
    let err = resolve(&untrusting, &format!("{host}/team/app:v1"), &Arc::default()).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_first_then_upstream() {
    let registry = Registry::start();
    let digest = registry.push("team/app", "v1", &image("mirror")).digest;
    let mirror = Proxy::start(registry.addr());
    let upstream = Proxy::start(registry.addr());
    let e = engine(&format!(
        "registries: [{{ host: '{0}', plainHttp: true, mirrors: ['{1}'] }}, {{ host: '{1}', plainHttp: true }}]\ncache: {{ ttl: 1ms, staleIfError: 1ms }}",
        upstream.host(),
        mirror.host()
    ));
    let image = format!("{}/team/app:v1", upstream.host());
    assert_eq!(resolve(&e, &image, &Arc::default()).await.unwrap(), digest);
    assert_eq!((mirror.count("HEAD", "/manifests/v1"), upstream.count("", "/v2/")), (1, 0));

    mirror.set_fault(Fault::Close);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(resolve(&e, &image, &Arc::default()).await.unwrap(), digest);
    assert_eq!(upstream.count("HEAD", "/manifests/v1"), 1, "the upstream answered after the mirror failed");
    let metrics = e.metrics.encode();
    assert!(
        metrics.contains(&format!("layerlink_registry_answers_total{{registry=\"{}\"}} 1", mirror.host())),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("layerlink_registry_answers_total{{registry=\"{}\"}} 1", upstream.host())),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_never_cross_namespaces() {
    let registry = Registry::start_with(RegistryOptions {
        auth: Auth::Htpasswd { user: "team-a".into(), password: "pw-a".into() },
        tls: false,
    });
    let digest = registry.push("team/app", "v1", &image("isolated")).digest;

    let proxy = Proxy::start(registry.addr());
    let e = engine(&format!("registries: [{{ host: '{}', plainHttp: true }}]", proxy.host()));
    let image = format!("{}/team/app:v1", proxy.host());
    let namespace_a = keychain(&proxy.host(), "team-a", "pw-a");
    assert_eq!(resolve(&e, &image, &namespace_a).await.unwrap(), digest);

    // Namespace B has no secret: A's cached digest and A's credentials are not used for it.
    let namespace_b: Arc<Keychain> = Arc::default();
    let err = resolve(&e, &image, &namespace_b).await.unwrap_err();
    assert!(matches!(*err, Error::Unauthorized { .. }), "{err}");
    let a_auth = Credential { username: "team-a".into(), password: "pw-a".into() }.basic_header();
    let requests = proxy.requests();
    let sent_a = requests.iter().filter(|(_, _, auth)| auth.as_deref() == Some(a_auth.as_str())).count();
    assert_eq!(sent_a, 1, "A's credentials sent only for A's lookup: {requests:?}");
    assert_eq!(requests.len(), 2, "A: 401, then with A's credentials; B: nothing to send: {requests:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_helpers_in_a_secret_are_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    for helper in ["docker-credential-evil", "evil"] {
        let script = dir.path().join(helper);
        std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("PATH", path) };
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("helpers"));
    let host = registry.host();
    let secret = format!(r#"{{"auths": {{}}, "credsStore": "evil", "credHelpers": {{"{host}": "evil"}}}}"#);
    let parsed = Keychain::parse(secret.as_bytes()).unwrap();
    assert!(!parsed.warnings.is_empty());
    let e = engine(&format!("registries: [{{ host: '{host}', plainHttp: true }}]"));
    resolve(&e, &format!("{host}/team/app:v1"), &Arc::new(parsed.keychain)).await.unwrap();
    assert!(!marker.exists(), "a credential helper was executed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_tag_keeps_pinning_through_an_outage() {
    let mut registry = Registry::start();
    let digest = registry.push("team/app", "v1", &image("outage")).digest;
    let host = registry.host();
    let e = engine(&format!(
        "registries: [{{ host: '{host}', plainHttp: true }}]\ncache: {{ ttl: 50ms, staleIfError: 1h }}\nresolve: {{ connectTimeout: 500ms }}"
    ));
    let image = format!("{host}/team/app:v1");
    assert_eq!(resolve(&e, &image, &Arc::default()).await.unwrap(), digest);
    registry.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reference = Reference::parse(&image).unwrap();
    let resolved =
        e.resolver.resolve(&reference, &Arc::default(), Deadline::after(Duration::from_secs(2))).await.unwrap();
    assert_eq!(&*resolved.digest, digest.as_str());
    let why = resolved.stale.expect("served stale");
    assert!(why.starts_with("cached") && why.contains(&host), "{why}");
    assert!(e.metrics.encode().contains("layerlink_stale_served_total"), "stale serving is counted");

    // Back up: the next lookup revalidates and is fresh again.
    registry.restart();
    let fresh = e.resolver.resolve(&reference, &Arc::default(), Deadline::after(Duration::from_secs(5))).await.unwrap();
    assert_eq!(fresh.stale, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_registry_gets_no_requests_inside_the_window() {
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("429"));
    let proxy = Proxy::start(registry.addr());
    proxy.set_fault(Fault::Status { code: 429, retry_after: Some(30) });
    let e = engine(&format!("registries: [{{ host: '{}', plainHttp: true }}]", proxy.host()));
    let err = resolve(&e, &format!("{}/team/app:v1", proxy.host()), &Arc::default()).await.unwrap_err();
    assert!(err.to_string().contains("rate limited, retry after 30s"), "{err}");
    proxy.set_fault(Fault::None);
    for tag in ["v1", "v2", "v3"] {
        let err = resolve(&e, &format!("{}/team/app:{tag}", proxy.host()), &Arc::default()).await.unwrap_err();
        assert!(matches!(*err, Error::RateLimited { .. }), "{err}");
    }
    assert_eq!(proxy.count("", "/v2/"), 1, "one request, then none inside the Retry-After window");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssrf_guard_refuses_before_connecting() {
    let listener = Listener::start();
    let port = listener.addr().port();
    let e = engine("");
    // Loopback not configured as a registry.
    let err = resolve(&e, &format!("127.0.0.1:{port}/x:y"), &Arc::default()).await.unwrap_err();
    assert!(matches!(*err, Error::Refused { .. }) && err.to_string().contains("loopback"), "{err}");
    // A name that resolves to a denied address.
    let denying = engine("network: { denyCidrs: ['127.0.0.0/8', '::1/128'] }");
    let err = resolve(&denying, &format!("localhost:{port}/x:y"), &Arc::default()).await.unwrap_err();
    assert!(matches!(*err, Error::Refused { .. }) && err.to_string().contains("denyCidrs"), "{err}");
    // The metadata address, by IP literal.
    let err = resolve(&e, "169.254.169.254/x:y", &Arc::default()).await.unwrap_err();
    assert!(err.to_string().contains("169.254.0.0/16"), "{err}");
    // An allowlist that does not name the registry.
    let allow = engine(&format!(
        "network: {{ allowRegistries: ['ghcr.io'] }}\nregistries: [{{ host: '127.0.0.1:{port}', plainHttp: true }}]"
    ));
    let err = resolve(&allow, &format!("127.0.0.1:{port}/x:y"), &Arc::default()).await.unwrap_err();
    assert!(err.to_string().contains("allowRegistries"), "{err}");
    assert_eq!(listener.connections(), 0, "no connection was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_do_not_follow_a_redirect_to_another_host() {
    use support::proxy::{BackgroundServer, full};

    let digest = format!("sha256:{}", "b".repeat(64));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let recorder = {
        let (seen, digest) = (seen.clone(), digest.clone());
        BackgroundServer::start(move |req: hyper::Request<hyper::body::Incoming>| {
            let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(auth);
            let digest = digest.clone();
            async move { Some(hyper::Response::builder().header("Docker-Content-Digest", digest).body(full("")).unwrap()) }
        })
    };
    let target = format!("localhost:{}", recorder.addr().port());
    let registry = {
        let target = target.clone();
        BackgroundServer::start(move |req: hyper::Request<hyper::body::Incoming>| {
            let response = if req.headers().contains_key("authorization") {
                hyper::Response::builder()
                    .status(307)
                    .header("Location", format!("http://{target}{}", req.uri().path()))
                    .body(full(""))
            } else {
                hyper::Response::builder().status(401).header("WWW-Authenticate", "Basic realm=\"test\"").body(full(""))
            };
            async move { Some(response.unwrap()) }
        })
    };
    let host = format!("127.0.0.1:{}", registry.addr().port());
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &host, "alice", "s3cret");
    let e = engine(&format!(
        "registries: [{{ host: '{host}', plainHttp: true, credentialsFile: '{}' }}, {{ host: '{target}', plainHttp: true }}]",
        creds.display()
    ));
    assert_eq!(resolve(&e, &format!("{host}/team/app:v1"), &Arc::default()).await.unwrap(), digest);
    assert_eq!(*seen.lock().unwrap(), vec![None], "the redirect target got no Authorization header");
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_to_one_registry_stay_within_its_concurrency_limit() {
    let registry = Registry::start();
    let tags: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
    for tag in &tags {
        registry.push("team/app", tag, &image(tag));
    }
    let proxy = Proxy::start(registry.addr());
    // Slow answers, so lookups that were let through together overlap at the proxy.
    proxy.set_fault(Fault::Delay(Duration::from_millis(200)));
    let e = engine(&format!(
        "registries: [{{ host: '{}', plainHttp: true }}]\nresolve: {{ maxConcurrencyPerRegistry: 2 }}",
        proxy.host()
    ));
    let images: Vec<String> = tags.iter().map(|tag| format!("{}/team/app:{tag}", proxy.host())).collect();
    let anonymous = Arc::default();
    let results = futures::future::join_all(images.iter().map(|image| resolve(&e, image, &anonymous))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(proxy.count("HEAD", "/manifests/"), 8, "{:?}", proxy.requests());
    assert_eq!(proxy.max_in_flight(), 2, "8 lookups of distinct tags at once, at most 2 at the registry");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_errors_are_counted_by_status_code() {
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("5xx"));
    let proxy = Proxy::start(registry.addr());
    proxy.set_fault(Fault::Status { code: 503, retry_after: None });
    let e = engine(&format!("registries: [{{ host: '{}', plainHttp: true }}]", proxy.host()));
    let image = format!("{}/team/app:v1", proxy.host());
    let err = resolve(&e, &image, &Arc::default()).await.unwrap_err();
    assert!(err.to_string().contains("503"), "the error names the status: {err}");
    let faulted = proxy.count("", "/manifests/");
    proxy.set_fault(Fault::None);
    resolve(&e, &image, &Arc::default()).await.unwrap();
    let metrics = e.metrics.encode();
    let count = |code: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("layerlink_registry_requests_total{"))
            .filter(|l| l.contains(&format!("code=\"{code}\"")) && l.contains(&proxy.host()))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .sum::<usize>()
    };
    assert_eq!(count("503"), faulted, "every 503 counted:\n{metrics}");
    assert_eq!(count("200"), 1, "and the answer after recovery:\n{metrics}");
}
