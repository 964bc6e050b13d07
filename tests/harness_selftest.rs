//! Proof that the real-registry harness in tests/support works: registries (plain, htpasswd,
//! TLS, token), pushes (image and 2-platform index), the proxy's counting and faults, the
//! connection-counting listener, pause/resume and stop/restart.

mod support;

use std::time::{Duration, Instant};

use support::oci::{self, Image, Index, layer};
use support::proxy::{Fault, Listener, Proxy};
use support::registry::{Auth, Registry, RegistryOptions, http_request};
use support::token::{TokenOptions, TokenServer};

fn sample_image() -> Image {
    Image::new(vec![layer(&[("etc/os-release", b"ID=test\n")]), layer(&[("app/run.sh", b"#!/bin/sh\necho hi\n")])])
}

fn two_platform_index() -> Index {
    let base = layer(&[("etc/os-release", b"ID=multi\n")]);
    Index::new(vec![
        Image::new(vec![base.clone()]).platform("linux", "amd64"),
        Image::new(vec![base]).platform("linux", "arm64"),
    ])
}

/// Push an image and an index, and check the registry agrees on every digest and blob size.
fn push_and_check(reg: &Registry) {
    let image = sample_image();
    let pushed = reg.push("team/app", "v1", &image);
    assert_eq!(pushed.digest, image.digest());
    assert_eq!(reg.manifest_digest("team/app", "v1").as_deref(), Some(pushed.digest.as_str()));
    assert_eq!(pushed.media_type, oci::OCI_MANIFEST);
    assert_eq!(pushed.layers.len(), 2);
    // Layer sizes are the blob sizes the registry serves.
    let auth = reg.authorization("team/app");
    for (digest, size) in &pushed.layers {
        let mut h = vec![];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        let r = reg.request("HEAD", &format!("/v2/team/app/blobs/{digest}"), &h).unwrap();
        assert_eq!(r.status, 200, "blob {digest}");
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    }
    assert_eq!(reg.manifest_digest("team/app", "missing"), None);

    let index = two_platform_index();
    let pushed = reg.push_index("team/multi", "v1", &index);
    assert_eq!(pushed.media_type, oci::OCI_INDEX);
    assert_eq!(pushed.digest, index.digest());
    assert_eq!(reg.manifest_digest("team/multi", "v1").as_deref(), Some(pushed.digest.as_str()));
    assert_eq!(pushed.manifests.len(), 2);
    assert_eq!(pushed.manifests[1].arch, "arm64");
    assert_ne!(pushed.manifests[0].digest, pushed.manifests[1].digest);
    for m in &pushed.manifests {
        assert_eq!(
            reg.manifest_digest("team/multi", &m.digest).as_deref(),
            Some(m.digest.as_str()),
            "per-platform manifest {} pushed",
            m.arch
        );
    }
}

#[test]
fn plain_registry_push_image_and_index() {
    let t = Instant::now();
    let reg = Registry::start();
    eprintln!("plain registry up in {:?}", t.elapsed());
    assert!(reg.host().starts_with("127.0.0.1:"));
    assert_eq!(reg.ca_file(), None);
    push_and_check(&reg);
    assert!(reg.log().contains("listening on"), "log: {}", reg.log());
}

#[test]
fn docker_media_types_push() {
    let reg = Registry::start();
    let image = sample_image().docker();
    let pushed = reg.push("docker/app", "v1", &image);
    assert_eq!(pushed.media_type, oci::DOCKER_MANIFEST);
    let index = Index::new(two_platform_index().images.into_iter().map(Image::docker).collect());
    let pushed = reg.push_index("docker/multi", "v1", &index);
    assert_eq!(pushed.media_type, oci::DOCKER_LIST);
    let r = reg.request("HEAD", "/v2/docker/multi/manifests/v1", &[("Accept", oci::ACCEPT_ALL)]).unwrap();
    assert_eq!(r.header("content-type"), Some(oci::DOCKER_LIST));
}

#[test]
fn family_shares_base_layers() {
    let reg = Registry::start();
    let (base, apps) = oci::family("fam", 2, 4096, 2);
    let b = reg.push("fam/base", "3.11", &base);
    let a0 = reg.push("fam/app0", "v1", &apps[0]);
    let a1 = reg.push("fam/app1", "v1", &apps[1]);
    assert_eq!(&a0.layers[..2], &b.layers[..]);
    assert_eq!(&a1.layers[..2], &b.layers[..]);
    assert_ne!(a0.layers[2], a1.layers[2]);
    // Incompressible filler: compressed size is about the raw size.
    assert!(b.layers.iter().all(|(_, s)| (4096..5000).contains(s)));
    // Deterministic.
    assert_eq!(oci::family("fam", 2, 4096, 2).0.digest(), base.digest());
}

#[test]
fn htpasswd_registry() {
    let reg = Registry::start_with(RegistryOptions {
        auth: Auth::Htpasswd { user: "alice".into(), password: "wonderland".into() },
        tls: false,
    });
    let r = reg.request("GET", "/v2/", &[]).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    push_and_check(&reg);
    // Anonymous HEAD is refused.
    let r = reg.request("HEAD", "/v2/team/app/manifests/v1", &[]).unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn tls_registry_with_ca() {
    let reg = Registry::start_with(RegistryOptions { auth: Auth::None, tls: true });
    let ca = reg.ca_file().expect("CA file");
    assert!(std::fs::read_to_string(&ca).unwrap().contains("BEGIN CERTIFICATE"));
    assert!(reg.url().starts_with("https://"));
    push_and_check(&reg);
    // Plain HTTP to the TLS port does not get a registry answer.
    let r = http_request(reg.addr(), None, "GET", "/v2/", &[], Duration::from_secs(2)).unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn token_auth_registry() {
    let ts = TokenServer::start_with(TokenOptions { anonymous_pull: true, ..TokenOptions::default() });
    let reg = Registry::start_with(RegistryOptions { auth: Auth::Token(ts), tls: false });
    let r = reg.request("GET", "/v2/", &[]).unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap().to_string();
    let ts = reg.token_server().unwrap();
    assert!(challenge.starts_with(&format!("Bearer realm=\"{}\"", ts.realm())), "{challenge}");
    push_and_check(&reg);
    assert!(ts.requests() >= 1, "skopeo fetched tokens");
    assert!(ts.request_log().iter().any(|r| r.user.as_deref() == Some("tester") && r.status == 200));

    // Anonymous pull token over HTTP: can HEAD, the registry accepts the signature.
    let before = ts.requests();
    let r = http_request(
        ts.addr(),
        None,
        "GET",
        &format!("/token?service={}&scope=repository:team/app:pull,push", ts.service()),
        &[],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(ts.requests(), before + 1);
    let body = oci::parse(&r.body);
    let tok = body["token"].as_str().unwrap();
    assert_eq!(body["access_token"].as_str(), Some(tok));
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let bearer = format!("Bearer {tok}");
    let head = |repo: &str| {
        reg.request(
            "HEAD",
            &format!("/v2/{repo}/manifests/v1"),
            &[("Accept", oci::ACCEPT_ALL), ("Authorization", &bearer)],
        )
        .unwrap()
    };
    assert_eq!(head("team/app").status, 200);
    // The token is for team/app only.
    assert_eq!(head("team/multi").status, 401);

    // Wrong password: 401 from the token server.
    let r = http_request(
        ts.addr(),
        None,
        "GET",
        "/token?service=x&scope=repository:team/app:pull",
        &[("Authorization", "Basic dGVzdGVyOndyb25n")],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn proxy_counts_and_injects_faults() {
    let reg = Registry::start();
    let pushed = reg.push("team/app", "v1", &sample_image());
    let proxy = Proxy::start(reg.addr());
    let head = |timeout: Duration| {
        http_request(
            proxy.addr(),
            None,
            "HEAD",
            "/v2/team/app/manifests/v1",
            &[("Accept", oci::ACCEPT_ALL), ("Authorization", "Bearer x")],
            timeout,
        )
    };
    let r = head(Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(pushed.digest.as_str()));
    assert_eq!(proxy.count("HEAD", "/manifests/v1"), 1);
    assert_eq!(proxy.count("GET", "/manifests/"), 0);
    assert_eq!(proxy.connections(), 1);
    assert_eq!(
        proxy.requests(),
        vec![("HEAD".to_string(), "/v2/team/app/manifests/v1".to_string(), Some("Bearer x".to_string()))]
    );

    proxy.set_fault(Fault::Status { code: 429, retry_after: Some(7) });
    let r = head(Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(proxy.count("HEAD", "/manifests/v1"), 2);

    // Fault for the next request only.
    proxy.set_fault_times(Fault::Status { code: 503, retry_after: None }, 1);
    assert_eq!(head(Duration::from_secs(5)).unwrap().status, 503);
    assert_eq!(head(Duration::from_secs(5)).unwrap().status, 200);

    proxy.set_fault(Fault::StripDigest);
    let r = head(Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), None);

    proxy.set_fault(Fault::Close);
    assert!(head(Duration::from_secs(5)).is_err());

    proxy.set_fault(Fault::Delay(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(head(Duration::from_secs(5)).unwrap().status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    proxy.set_fault(Fault::Hang);
    let e = head(Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e:?}");

    // Only on matching paths.
    proxy.set_fault_on("/blobs/", Fault::Status { code: 500, retry_after: None });
    assert_eq!(head(Duration::from_secs(5)).unwrap().status, 200);

    proxy.reset_counts();
    assert_eq!(proxy.count("", ""), 0);
    assert_eq!(proxy.connections(), 0);
    proxy.set_fault(Fault::None);
    let r = http_request(proxy.addr(), None, "GET", "/v2/", &[], Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(proxy.count("GET", "/v2/"), 1);

    // Upstream down: the proxy answers 502.
    drop(reg);
    let r = http_request(proxy.addr(), None, "GET", "/v2/", &[], Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 502);
}

#[test]
fn listener_counts_connections() {
    let l = Listener::start();
    assert_eq!(l.connections(), 0);
    let _ = http_request(l.addr(), None, "GET", "/", &[], Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(2);
    while l.connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(l.connections(), 1);
}

#[test]
fn pause_resume_stop_restart() {
    let mut reg = Registry::start();
    let pushed = reg.push("team/app", "v1", &sample_image());
    let host = reg.host();

    reg.pause();
    let e = reg.request_timeout("GET", "/v2/", &[], Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e:?}");
    reg.resume();
    assert_eq!(reg.request("GET", "/v2/", &[]).unwrap().status, 200);

    reg.stop();
    let e = reg.request("GET", "/v2/", &[]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    reg.restart();
    assert_eq!(reg.host(), host);
    assert_eq!(reg.manifest_digest("team/app", "v1").as_deref(), Some(pushed.digest.as_str()));

    // Drop kills the process even while it is stopped.
    reg.pause();
    let pid = reg.pid().unwrap();
    drop(reg);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn usable_from_tokio_tests() {
    let reg = Registry::start();
    let proxy = Proxy::start(reg.addr());
    let pushed = reg.push("team/app", "v1", &sample_image());
    let addr = proxy.addr();
    let r = tokio::task::spawn_blocking(move || {
        http_request(
            addr,
            None,
            "HEAD",
            "/v2/team/app/manifests/v1",
            &[("Accept", oci::ACCEPT_ALL)],
            Duration::from_secs(5),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.header("docker-content-digest"), Some(pushed.digest.as_str()));
    assert_eq!(proxy.count("HEAD", "/manifests/"), 1);
    drop(proxy);
    drop(reg);
}
