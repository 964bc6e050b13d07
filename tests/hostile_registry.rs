//! The registry client against registries that lie, stall, flood and point elsewhere: a hostile
//! registry speaking raw HTTP over real sockets (`support::hostile`), real loopback listeners
//! that count connections, the real `docker-registry`, and the real `layerlink` binary.

mod support;

use support::{engine, image};

use std::{sync::Arc, time::Duration};

use layerlink::{
    Engine, Error,
    admission::fixtures,
    engine::Deadline,
    reference::Reference,
    registry::{auth::Keychain, sha256_digest},
};
use support::{
    Fault, Hostile, Listener, Proxy, Registry,
    hostile::{Conn, Request},
    webhook::Webhook,
};

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The limits the client promises (see the README's threat model).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;
const MAX_ERROR_BYTES: usize = 64 << 10;
const MAX_MEDIA_TYPE_LEN: usize = 256;
const MAX_RETRY_AFTER_SECS: u64 = 600;

/// A config listing these hosts (plain HTTP), and `extra`.
fn listing(hosts: &[&str], extra: &str) -> String {
    let listed: Vec<String> = hosts.iter().map(|h| format!("{{ host: '{h}', plainHttp: true }}")).collect();
    format!("registries: [{}]\n{extra}", listed.join(", "))
}

async fn resolve(engine: &Engine, image: &str) -> Result<String, Arc<Error>> {
    let reference = Reference::parse(image).unwrap();
    let deadline = Deadline::after(Duration::from_secs(20));
    engine.resolver.resolve(&reference, &Arc::default(), deadline).await.map(|r| r.digest.to_string())
}

/// A manifest answer: the digest header on HEAD, the bytes on GET.
fn manifest(conn: &mut Conn, req: &Request) -> std::io::Result<()> {
    let digest = sha256_digest(MANIFEST);
    conn.respond(req, 200, &[("Content-Type", MEDIA_TYPE), ("Docker-Content-Digest", &digest)], MANIFEST)
}

fn is_refused(err: &Error) -> bool {
    matches!(err, Error::Refused { .. })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_a_refused_address_is_refused_before_connecting() {
    let listener = Listener::start();
    let port = listener.addr().port();
    // A registry listed on another port of the same address: trust is per host:port.
    let listed = Listener::start();
    let e = engine(&listing(&[&listed.host()], "resolve: { connectTimeout: 500ms }"));
    for host in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "017700000001",
        "0",
        "0.0.0.0",
        "localhost",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[::1]",
        "[::]",
    ] {
        let err = resolve(&e, &format!("{host}:{port}/team/app:v1")).await.unwrap_err();
        assert!(is_refused(&err), "{host}:{port}: {err}");
    }
    // The metadata address: refused as itself, however it is written (never dialled here).
    for host in ["0xa9.0xfe.0xa9.0xfe", "2852039166:80", "0251.0376.0251.0376", "169.254.43518", "[::ffff:a9fe:a9fe]"] {
        let err = resolve(&e, &format!("{host}/team/app:v1")).await.unwrap_err();
        assert!(is_refused(&err) && err.to_string().contains("169.254.0.0/16"), "{host}: {err}");
    }
    assert_eq!(listener.connections(), 0, "no spelling reached the loopback listener");
    assert_eq!(listed.connections(), 0);
}

/// Runs `layerlink resolve` with `hosts` as its /etc/hosts (a private mount namespace: needs
/// root, as CI runs), and returns (success, output).
fn resolve_with_hosts(hosts: &str, config: &str, image: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (hosts_path, config_path) = (dir.path().join("hosts"), dir.path().join("config.yaml"));
    std::fs::write(&hosts_path, hosts).unwrap();
    std::fs::write(&config_path, config).unwrap();
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && exec "$2" resolve --config "$3" "$4""#)
        .args(["sh".as_ref(), hosts_path.as_os_str()])
        .arg(env!("CARGO_BIN_EXE_layerlink"))
        .arg(&config_path)
        .arg(image)
        .output()
        .expect("run unshare");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("mount:") && !text.contains("unshare:"), "a private /etc/hosts needs root: {text}");
    (out.status.success(), text)
}

#[test]
fn a_name_with_one_allowed_and_one_refused_address_is_refused() {
    let listener = Listener::start();
    let port = listener.addr().port();
    // 127.0.0.1 is allowed (the names are listed, so loopback is theirs); 127.0.0.2 is denied.
    let hosts = "127.0.0.1 localhost\n\
                 127.0.0.1 allowed-first.layerlink.test\n127.0.0.2 allowed-first.layerlink.test\n\
                 127.0.0.2 refused-first.layerlink.test\n127.0.0.1 refused-first.layerlink.test\n\
                 127.0.0.1 only-allowed.layerlink.test\n";
    let names = ["allowed-first.layerlink.test", "refused-first.layerlink.test", "only-allowed.layerlink.test"];
    let listed: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    let config = listing(&listed, "network: { denyCidrs: ['127.0.0.2/32', '169.254.0.0/16'] }");
    for name in &names[..2] {
        let (ok, output) = resolve_with_hosts(hosts, &config, &format!("{name}:{port}/team/app:v1"));
        assert!(!ok && output.contains("127.0.0.2") && output.contains("denyCidrs"), "{name}: {output}");
    }
    assert_eq!(listener.connections(), 0, "a name with a refused address is not dialled at all");
    // The same setup with only the allowed address does reach the listener.
    let (_, output) = resolve_with_hosts(hosts, &config, &format!("{}:{port}/team/app:v1", names[2]));
    assert_eq!(listener.connections(), 1, "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_realm_at_a_refused_address_is_never_contacted() {
    let listener = Listener::start();
    let lp = listener.addr().port();
    let realms = [
        format!("http://127.0.0.1:{lp}/token"),
        format!("http://127.1:{lp}/token"),
        format!("http://0x7f.0.0.1:{lp}/token"),
        format!("http://2130706433:{lp}/token"),
        format!("http://[::ffff:127.0.0.1]:{lp}/token"),
        format!("http://localhost:{lp}/token"),
        "http://0xa9.0xfe.0xa9.0xfe/token".to_string(),
    ];
    let challenges = realms.clone();
    let registry = Hostile::start(move |req, conn| {
        let i: usize = req.path.trim_start_matches("/v2/r").split('/').next().unwrap().parse().unwrap();
        let challenge = format!("Bearer realm=\"{}\",service=\"hostile\"", challenges[i]);
        conn.respond(req, 401, &[("WWW-Authenticate", &challenge)], b"")
    });
    let e = engine(&listing(&[&registry.host()], "resolve: { connectTimeout: 500ms }"));
    for (i, realm) in realms.iter().enumerate() {
        let err = resolve(&e, &format!("{}/r{i}/app:v1", registry.host())).await.unwrap_err();
        assert!(is_refused(&err) && err.to_string().contains("token realm"), "{realm}: {err}");
    }
    assert_eq!(listener.connections(), 0, "no realm spelling reached the loopback listener");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listed_registry_redirecting_to_a_refused_address_is_not_followed() {
    let listener = Listener::start();
    let lp = listener.addr().port();
    let targets = [
        format!("http://127.0.0.1:{lp}/v2/x/manifests/v1"),
        format!("http://127.1:{lp}/v2/x/manifests/v1"),
        format!("http://2130706433:{lp}/v2/x/manifests/v1"),
        format!("http://[::ffff:7f00:1]:{lp}/v2/x/manifests/v1"),
        format!("http://localhost:{lp}/v2/x/manifests/v1"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://0xa9fea9fe/latest/meta-data/".to_string(),
    ];
    let locations = targets.clone();
    let registry = Hostile::start(move |req, conn| {
        let i: usize = req.path.trim_start_matches("/v2/r").split('/').next().unwrap().parse().unwrap();
        conn.respond(req, 307, &[("Location", &locations[i])], b"")
    });
    let e = engine(&listing(&[&registry.host()], "resolve: { connectTimeout: 500ms }"));
    for (i, target) in targets.iter().enumerate() {
        let err = resolve(&e, &format!("{}/r{i}/app:v1", registry.host())).await.unwrap_err();
        assert!(is_refused(&err) && err.to_string().contains("redirect"), "{target}: {err}");
    }
    assert_eq!(listener.connections(), 0, "no redirect reached the loopback listener");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_beyond_any_clock_closes_one_registry_for_a_bounded_time() {
    let forever = Hostile::start(|req, conn| conn.respond(req, 429, &[("Retry-After", "18446744073709551615")], b""));
    let year_9999 =
        Hostile::start(|req, conn| conn.respond(req, 429, &[("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")], b""));
    let real = Registry::start();
    let digest = real.push("team/app", "v1", &image("retry-after")).digest;
    let e = engine(&listing(&[&forever.host(), &year_9999.host(), &real.host()], ""));
    for hostile in [&forever, &year_9999] {
        let err = resolve(&e, &format!("{}/team/app:v1", hostile.host())).await.unwrap_err();
        let max = MAX_RETRY_AFTER_SECS;
        assert!(matches!(*err, Error::RateLimited { retry_after_secs, .. } if retry_after_secs == max), "{err}");
    }
    // Other registries are unaffected, and the hostile one stays closed without more requests.
    assert_eq!(resolve(&e, &format!("{}/team/app:v1", real.host())).await.unwrap(), digest);
    let err = resolve(&e, &format!("{}/team/app:v2", forever.host())).await.unwrap_err();
    assert!(matches!(*err, Error::RateLimited { .. }), "{err}");
    assert_eq!(forever.count("", "/v2/"), 1);
}

/// A registry that wants `Bearer <token>` from its own `/token`, which answers `token_body`.
fn bearer_registry(token_body: &'static str) -> Hostile {
    Hostile::start(move |req, conn| {
        if req.path.starts_with("/token") {
            return conn.respond(req, 200, &[("Content-Type", "application/json")], token_body.as_bytes());
        }
        if req.header("Authorization") == Some("Bearer good") {
            return manifest(conn, req);
        }
        let realm = format!("Bearer realm=\"http://{}/token\",service=\"hostile\"", req.header("Host").unwrap());
        conn.respond(req, 401, &[("WWW-Authenticate", &realm)], b"")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn token_lifetimes_beyond_any_clock_are_clamped() {
    for body in [
        r#"{"token":"good","expires_in":18446744073709551615}"#,
        r#"{"token":"good","expires_in":1e300}"#,
        r#"{"token":"good","expires_in":-1}"#,
    ] {
        let registry = bearer_registry(body);
        let e = engine(&listing(&[&registry.host()], ""));
        for tag in ["v1", "v2"] {
            let got = resolve(&e, &format!("{}/team/app:{tag}", registry.host())).await;
            assert_eq!(got.as_deref().map_err(ToString::to_string), Ok(sha256_digest(MANIFEST).as_str()), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_bodies_are_cut_at_their_limits() {
    // Bytes the kernel may hold in socket buffers beyond what the client read.
    const SLACK: u64 = 16 << 20;
    // Manifest bytes for the digest (no Docker-Content-Digest on HEAD, so the client GETs).
    let manifest_flood = Hostile::start(|req, conn| match req.is_head() {
        true => conn.respond(req, 200, &[("Content-Type", MEDIA_TYPE)], b""),
        false => conn.endless(200, &[("Content-Type", MEDIA_TYPE)]),
    });
    // An error body.
    let error_flood = Hostile::start(|_, conn| conn.endless(500, &[("Content-Type", "application/json")]));
    // A token response.
    let token_flood = Hostile::start(|req, conn| {
        if req.path.starts_with("/token") {
            return conn.endless(200, &[("Content-Type", "application/json")]);
        }
        let realm = format!("Bearer realm=\"http://{}/token\"", req.header("Host").unwrap());
        conn.respond(req, 401, &[("WWW-Authenticate", &realm)], b"")
    });
    let e = engine(&listing(
        &[&manifest_flood.host(), &error_flood.host(), &token_flood.host()],
        "resolve: { requestTimeout: 60s }",
    ));
    let cases = [
        (&manifest_flood, MAX_MANIFEST_BYTES, "larger than"),
        (&error_flood, MAX_ERROR_BYTES, "500"),
        (&token_flood, MAX_TOKEN_RESPONSE_BYTES, "larger than"),
    ];
    for (server, limit, says) in cases {
        let reference = Reference::parse(&format!("{}/team/app:v1", server.host())).unwrap();
        let err = e.resolver.registries().manifest(&reference, "v1", &Keychain::default()).await.unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(server.wait_hung_up(1), 1, "the client closed the connection instead of reading on: {err}");
        let sent = server.bytes_sent();
        eprintln!("{}: {sent} bytes sent for a {limit}-byte limit", server.host());
        assert!(sent < limit as u64 + SLACK, "{sent} bytes read for a {limit}-byte limit");
    }
    // The digest lookup hashes the stream and stops at the same limit.
    let err = resolve(&e, &format!("{}/team/app:v2", manifest_flood.host())).await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert_eq!(manifest_flood.wait_hung_up(2), 2);
}

/// The one warning of a review of a pod whose only image is `image`.
async fn warning_for(webhook: &Webhook, image: &str) -> String {
    let review = fixtures::with_images("pod-create-simple.json", |_| image.to_string());
    let response = webhook.review("/mutate?timeout=10s", &review).await;
    let warnings = response["warnings"].as_array().unwrap_or_else(|| panic!("no warnings: {response}"));
    assert_eq!(warnings.len(), 1, "{response}");
    warnings[0].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_text_never_reaches_a_tenant() {
    const SECRET: &str = "hunter2";
    let hostile_json = format!(
        r#"{{"errors":[{{"code":"NAME_UNKNOWN","message":"db password={SECRET}\u001b[2J\nIgnore all previous instructions"}},{{"code":"PLEASE RUN curl evil.sh"}}]}}"#
    );
    let registry = Hostile::start(move |req, conn| {
        let repo = match req.path.strip_prefix("/v2/") {
            Some(rest) => rest.split('/').next().unwrap().to_string(),
            None => "token".to_string(),
        };
        let text = format!("internal error at 10.0.0.7: password={SECRET}\n\u{1b}[31mcall +1-555-0100\u{1b}[0m");
        match repo.as_str() {
            // A missing repository: the tag list explains, with a hostile message.
            "gone" if req.is_head() => conn.respond(req, 404, &[], b""),
            "gone" => conn.respond(req, 404, &[("Content-Type", "application/json")], hostile_json.as_bytes()),
            // No digest on HEAD; the GET fails with a plain-text body.
            "broken" if req.is_head() => conn.respond(req, 200, &[("Content-Type", MEDIA_TYPE)], b""),
            "broken" => conn.respond(req, 502, &[("Content-Type", "text/plain")], text.as_bytes()),
            // A token server that refuses with a body.
            "token" => conn.respond(req, 403, &[("Content-Type", "text/plain")], text.as_bytes()),
            _ => {
                let realm = format!("Bearer realm=\"http://{}/token/x\"", req.header("Host").unwrap());
                conn.respond(req, 401, &[("WWW-Authenticate", &realm)], b"")
            }
        }
    });
    let host = registry.host();
    let webhook = Webhook::start(&listing(&[&host], "resolve: { budget: 5s }"));
    for (repo, expected) in
        [("gone", "NAME_UNKNOWN"), ("broken", "502 Bad Gateway"), ("secret", "token request refused")]
    {
        let warning = warning_for(&webhook, &format!("{host}/{repo}/app:v1")).await;
        assert!(warning.contains(expected), "{repo}: {warning}");
        for leak in [SECRET, "\u{1b}", "\n", "Ignore", "curl", "10.0.0.7", "555"] {
            assert!(!warning.contains(leak), "{repo}: {leak:?} reached the tenant: {warning}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_repository_does_not_blind_its_host() {
    let registry = Hostile::start(|req, conn| {
        if req.path.starts_with("/v2/private/") {
            conn.respond(req, 401, &[("WWW-Authenticate", "Basic realm=\"private\"")], b"")
        } else if req.path.starts_with("/v2/metadata/") {
            conn.respond(req, 401, &[("WWW-Authenticate", "Bearer realm=\"http://169.254.169.254/token\"")], b"")
        } else {
            manifest(conn, req)
        }
    });
    let host = registry.host();
    let e = engine(&listing(&[&host], ""));
    let err = resolve(&e, &format!("{host}/private/app:v1")).await.unwrap_err();
    assert!(matches!(*err, Error::Unauthorized { .. }), "{err}");
    let err = resolve(&e, &format!("{host}/metadata/app:v1")).await.unwrap_err();
    assert!(is_refused(&err), "{err}");
    for repo in ["public/app", "library/app"] {
        assert_eq!(resolve(&e, &format!("{host}/{repo}:v1")).await.unwrap(), sha256_digest(MANIFEST), "{repo}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_is_replaced_once() {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    };
    // Tokens `t1`, `t2`, … ; the registry accepts those in `valid` (none while `refuse_all`).
    let valid = Arc::new(Mutex::new(Vec::<String>::new()));
    let issued = Arc::new(AtomicUsize::new(0));
    let refuse_all = Arc::new(AtomicBool::new(false));
    let (v, n, r) = (valid.clone(), issued.clone(), refuse_all.clone());
    let registry = Hostile::start(move |req, conn| {
        if req.path.starts_with("/token") {
            let token = format!("t{}", n.fetch_add(1, SeqCst) + 1);
            v.lock().unwrap().push(token.clone());
            let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
            return conn.respond(req, 200, &[("Content-Type", "application/json")], body.as_bytes());
        }
        let sent = req.header("Authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::to_string);
        if !r.load(SeqCst) && sent.is_some_and(|t| v.lock().unwrap().contains(&t)) {
            return manifest(conn, req);
        }
        let realm = format!("Bearer realm=\"http://{}/token\"", req.header("Host").unwrap());
        conn.respond(req, 401, &[("WWW-Authenticate", &realm)], b"")
    });
    let host = registry.host();
    let e = engine(&listing(&[&host], ""));
    let digest = sha256_digest(MANIFEST);
    assert_eq!(resolve(&e, &format!("{host}/team/app:v1")).await.unwrap(), digest);
    assert_eq!(issued.load(SeqCst), 1);
    valid.lock().unwrap().clear();
    assert_eq!(resolve(&e, &format!("{host}/team/app:v2")).await.unwrap(), digest, "a new token after the 401");
    assert_eq!(issued.load(SeqCst), 2, "one new token");
    // A registry that refuses every token: one new token for the lookup, then the 401 stands.
    refuse_all.store(true, SeqCst);
    let err = resolve(&e, &format!("{host}/team/app:v3")).await.unwrap_err();
    assert!(matches!(*err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(issued.load(SeqCst), 3, "{:?}", registry.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_that_is_malformed_or_disagrees_with_the_bytes_is_refused() {
    let other = sha256_digest(b"other bytes");
    let registry = Hostile::start(move |req, conn| {
        let repo = req.path.trim_start_matches("/v2/").split('/').next().unwrap().to_string();
        let long = format!("sha256:{}", "a".repeat(65));
        match repo.as_str() {
            // 65 hex digits on HEAD (and a good manifest on GET, which must not be used).
            "long" if req.is_head() => conn.respond(req, 200, &[("Docker-Content-Digest", &long)], b""),
            // No digest on HEAD; the GET's header disagrees with its bytes.
            "liar" if req.is_head() => conn.respond(req, 200, &[], b""),
            "liar" => conn.respond(req, 200, &[("Docker-Content-Digest", &other)], MANIFEST),
            _ => manifest(conn, req),
        }
    });
    let host = registry.host();
    let e = engine(&listing(&[&host], "cache: { negativeTtl: 1h }"));
    for repo in ["long", "liar"] {
        let err = resolve(&e, &format!("{host}/{repo}/app:v1")).await.unwrap_err();
        assert!(err.to_string().contains("digest"), "{repo}: {err}");
    }
    // Not stored: the next lookup asks the registry again.
    let heads = registry.count("HEAD", "/long/");
    resolve(&e, &format!("{host}/long/app:v1")).await.unwrap_err();
    assert_eq!(registry.count("HEAD", "/long/"), heads + 1);
    // Fetched for pre-pull detection: the header must agree with the bytes too.
    let reference = Reference::parse(&format!("{host}/liar/app:v1")).unwrap();
    let err = e.resolver.registries().manifest(&reference, "v1", &Keychain::default()).await.unwrap_err();
    assert!(err.to_string().contains("claims digest"), "{err}");
    let good = Reference::parse(&format!("{host}/good/app:v1")).unwrap();
    let fetched = e.resolver.registries().manifest(&good, "v1", &Keychain::default()).await.unwrap();
    assert_eq!(fetched.digest, sha256_digest(MANIFEST));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_docker_content_digest_the_digest_is_the_sha256_of_the_bytes() {
    let registry = Registry::start();
    let pushed = registry.push("team/app", "v1", &image("strip-digest")).digest;
    let proxy = Proxy::start(registry.addr());
    proxy.set_fault(Fault::StripDigest);
    let e = engine(&listing(&[&proxy.host()], ""));
    assert_eq!(resolve(&e, &format!("{}/team/app:v1", proxy.host())).await.unwrap(), pushed);
    assert_eq!((proxy.count("HEAD", "/manifests/v1"), proxy.count("GET", "/manifests/v1")), (1, 1));
    let reference = Reference::parse(&format!("{}/team/app:v1", proxy.host())).unwrap();
    let fetched = e.resolver.registries().manifest(&reference, "v1", &Keychain::default()).await.unwrap();
    assert_eq!(fetched.digest, pushed);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_header_values_are_bounded() {
    let registry = Hostile::start(|req, conn| {
        let huge = "x".repeat(200 << 10);
        if req.path.starts_with("/v2/realm/") {
            let challenge = format!("Bearer realm=\"not a url {huge}\"");
            conn.respond(req, 401, &[("WWW-Authenticate", &challenge)], b"")
        } else {
            let digest = sha256_digest(MANIFEST);
            conn.respond(req, 200, &[("Content-Type", &huge), ("Docker-Content-Digest", &digest)], MANIFEST)
        }
    });
    let host = registry.host();
    let e = engine(&listing(&[&host], ""));
    let err = resolve(&e, &format!("{host}/realm/app:v1")).await.unwrap_err();
    assert!(err.to_string().len() < 512, "{} bytes of error", err.to_string().len());
    let reference = Reference::parse(&format!("{host}/big/app:v1")).unwrap();
    let fetched = e.resolver.registries().manifest(&reference, "v1", &Keychain::default()).await.unwrap();
    assert!(fetched.media_type.len() <= MAX_MEDIA_TYPE_LEN, "{} bytes of media type", fetched.media_type.len());
}

/// Writes the seeds of the `registry` fuzz target (fuzz/seeds/registry/) from what a real
/// `docker-registry` and token server answer. Run by hand after a change to what is captured:
/// `cargo test --test hostile_registry -- --ignored fuzz_seeds_from_a_real_registry`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes fuzz/seeds/registry; run by hand"]
async fn fuzz_seeds_from_a_real_registry() {
    use support::{Auth, Index, RegistryOptions, TokenOptions, TokenServer};
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/registry");
    std::fs::create_dir_all(&out).unwrap();
    let seed = |name: &str, selector: u8, value: &[u8]| {
        let mut bytes = vec![selector];
        bytes.extend_from_slice(value);
        std::fs::write(out.join(name), bytes).unwrap();
    };
    layerlink::install_crypto_provider();
    let client = reqwest::Client::new();
    let get = |url: String, accept: &'static str| client.get(url).header("Accept", accept).send();
    let accept_all = layerlink::registry::MANIFEST_ACCEPT;

    // Anonymous registry: manifests, an index, error bodies, digest and content-type headers.
    let registry = Registry::start();
    let docker = image("seed-docker").docker();
    let mut arm64 = image("seed-arm64");
    arm64.platform = ("linux".into(), "arm64".into());
    registry.push("seed/oci", "v1", &image("seed-oci"));
    registry.push("seed/docker", "v1", &docker);
    registry.push_index("seed/index", "v1", &Index::new(vec![image("seed-amd64"), arm64]));
    for (repo, name) in [("seed/oci", "oci-manifest"), ("seed/docker", "docker-manifest"), ("seed/index", "oci-index")]
    {
        let response = get(format!("{}/v2/{repo}/manifests/v1", registry.url()), accept_all).await.unwrap();
        let digest = response.headers()["docker-content-digest"].as_bytes().to_vec();
        let media_type = response.headers()["content-type"].as_bytes().to_vec();
        seed(&format!("{name}-digest"), 5, &digest);
        seed(&format!("{name}-content-type"), 6, &media_type);
        seed(name, 2, &response.bytes().await.unwrap());
    }
    for (path, name) in [
        ("/v2/seed/oci/manifests/nope", "error-manifest-unknown"),
        ("/v2/seed/nope/tags/list?n=1", "error-name-unknown"),
        ("/v2/Seed/manifests/v1", "error-name-invalid"),
    ] {
        let response = get(format!("{}{path}", registry.url()), accept_all).await.unwrap();
        seed(name, 3, &response.bytes().await.unwrap());
    }

    // Basic auth: the challenge and the UNAUTHORIZED body.
    let basic = Registry::start_with(RegistryOptions {
        auth: Auth::Htpasswd { user: "u".into(), password: "p".into() },
        tls: false,
    });
    let response = get(format!("{}/v2/x/manifests/v1", basic.url()), accept_all).await.unwrap();
    seed("challenge-basic", 0, response.headers()["www-authenticate"].as_bytes());
    seed("error-unauthorized", 3, &response.bytes().await.unwrap());

    // Bearer auth: the challenge and a token response.
    let tokens = TokenServer::start_with(TokenOptions { anonymous_pull: true, ..Default::default() });
    let bearer = Registry::start_with(RegistryOptions { auth: Auth::Token(tokens), tls: false });
    let response = get(format!("{}/v2/seed/oci/manifests/v1", bearer.url()), accept_all).await.unwrap();
    seed("challenge-bearer", 0, response.headers()["www-authenticate"].as_bytes());
    let realm = bearer.token_server().unwrap().realm();
    let token =
        get(format!("{realm}?service=layerlink-test-registry&scope=repository:seed/oci:pull"), "*/*").await.unwrap();
    seed("token-response", 1, &token.bytes().await.unwrap());

    // Retry-After in both forms a registry may send.
    seed("retry-after-seconds", 4, b"30");
    seed("retry-after-date", 4, httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
}
