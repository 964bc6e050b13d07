//! The webhook over TLS against a real registry: real fixture reviews with their images pointed
//! at the test registry, the patch applied, every image pinned to the digest the registry serves.

mod support;

use support::image;

use std::time::Duration;

use layerlink::admission::fixtures;
use serde_json::{Value, json};
use support::{
    Fault, Proxy, Registry,
    webhook::{Webhook, patch_of, with_object},
};

fn registry_config(host: &str) -> String {
    format!("registries: [{{ host: \"{host}\", plainHttp: true }}]\nresolve: {{ budget: 3s }}\n")
}

/// pod-create-multi with every unpinned image moved to `host`; pinned ones stay as they are.
fn multi_review(host: &str) -> Value {
    fixtures::with_images("pod-create-multi.json", |old| match old {
        "busybox:1.36" => format!("{host}/library/busybox:1.36"),
        "redis" => format!("{host}/library/redis"),
        "ghcr.io/org/app:v1.2.3" => format!("{host}/org/app:v1.2.3"),
        pinned => pinned.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pins_every_image_to_the_registry_digest() {
    let registry = Registry::start();
    let host = registry.host();
    let busybox = registry.push("library/busybox", "1.36", &image("busybox")).digest;
    let redis = registry.push("library/redis", "latest", &image("redis")).digest;
    let app = registry.push("org/app", "v1.2.3", &image("app")).digest;
    assert_eq!(registry.manifest_digest("org/app", "v1.2.3").as_deref(), Some(app.as_str()));
    let webhook = Webhook::start(&registry_config(&host));

    let review = multi_review(&host);
    let response = webhook.review("/mutate?timeout=10s", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");

    let patch = patch_of(&response);
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(
        ops,
        json!([
            {"op": "replace", "path": "/spec/initContainers/0/image", "value": format!("{host}/library/busybox:1.36@{busybox}")},
            {"op": "replace", "path": "/spec/containers/0/image", "value": format!("{host}/library/redis:latest@{redis}")},
            {"op": "replace", "path": "/spec/containers/1/image", "value": format!("{host}/org/app:v1.2.3@{app}")},
        ])
    );

    // Applied, the patch changes the image fields and nothing else.
    let object = &review["request"]["object"];
    let patched = layerlink::patch::apply(object, &patch).unwrap();
    let mut expected = object.clone();
    expected["spec"]["initContainers"][0]["image"] = json!(format!("{host}/library/busybox:1.36@{busybox}"));
    expected["spec"]["containers"][0]["image"] = json!(format!("{host}/library/redis:latest@{redis}"));
    expected["spec"]["containers"][1]["image"] = json!(format!("{host}/org/app:v1.2.3@{app}"));
    assert_eq!(patched, expected);

    // A reinvocation on our own output changes nothing.
    let again = webhook.review("/mutate?timeout=10s", &with_object(&review, patched)).await;
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "second call must not patch: {again}");

    let uid = review["request"]["uid"].as_str().unwrap().to_string();
    let log = webhook.log_when(|log| log.contains(&uid));
    assert!(log.contains(&uid), "log has the uid: {log}");
    assert!(log.contains("\"mode\":\"enforce\""), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reviews_of_one_new_tag_make_one_registry_lookup() {
    let registry = Registry::start();
    registry.push("team/fresh", "v1", &image("fresh"));
    let proxy = Proxy::start(registry.addr());
    let host = proxy.host();
    let webhook = Webhook::start(&registry_config(&host));
    let review = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/fresh:v1"));

    let client = webhook.client();
    let body = serde_json::to_vec(&review).unwrap();
    let requests = (0..200).map(|_| {
        let (client, url, body) = (client.clone(), webhook.url("/mutate?timeout=10s"), body.clone());
        async move { client.post(url).body(body).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    let responses = futures::future::join_all(requests).await;
    for response in &responses {
        assert_eq!(patch_of(&response["response"]).0.len(), 1, "{response}");
    }
    assert_eq!(proxy.count("HEAD", "/v2/team/fresh/manifests/v1"), 1, "requests: {:?}", proxy.requests());
    assert_eq!(proxy.count("GET", "/manifests/"), 0, "HEAD only");
}

/// Runs one review whose only container uses `image`, and returns the response.
async fn review_of(webhook: &Webhook, image: &str) -> Value {
    let review = fixtures::with_images("pod-create-simple.json", |_| image.to_string());
    webhook.review("/mutate?timeout=10s", &review).await
}

fn warning(response: &Value) -> String {
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    let warnings = response["warnings"].as_array().unwrap_or_else(|| panic!("no warnings: {response}"));
    assert_eq!(warnings.len(), 1, "{response}");
    warnings[0].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_warnings_with_the_reason() {
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("app"));
    let host = registry.host();
    let hanging = Proxy::start(registry.addr());
    hanging.set_fault(Fault::Hang);
    let down = Proxy::start(registry.addr());
    down.set_fault(Fault::Close);
    let config = format!(
        "registries: [{{ host: \"{host}\", plainHttp: true }}, {{ host: \"{}\", plainHttp: true }}, {{ host: \"{}\", plainHttp: true }}]\nresolve: {{ budget: 1s }}\n",
        hanging.host(),
        down.host()
    );
    let mut webhook = Webhook::start(&config);

    let w = warning(&review_of(&webhook, &format!("{host}/team/nope:v1")).await);
    assert!(w.contains("repository team/nope not found") && w.contains("NAME_UNKNOWN"), "unknown repo: {w}");
    assert!(w.contains("not pinned"), "{w}");
    let w = warning(&review_of(&webhook, &format!("{host}/team/app:v9")).await);
    assert!(w.contains("tag v9 of team/app not found"), "unknown tag: {w}");
    let w = warning(&review_of(&webhook, &format!("{}/team/app:v1", down.host())).await);
    assert!(w.contains(&down.host()), "registry down: {w}");
    let started = std::time::Instant::now();
    let w = warning(&review_of(&webhook, &format!("{}/team/app:v1", hanging.host())).await);
    assert!(w.contains("no answer within"), "hanging registry: {w}");
    eprintln!("hanging registry answered in {:?} with a 1s budget", started.elapsed());
    let w = warning(&review_of(&webhook, "Not/A:Valid:Ref").await);
    assert!(w.contains("invalid image reference"), "{w}");

    // The API server's ?timeout= caps the budget below the configured one.
    let review = fixtures::with_images("pod-create-simple.json", |_| format!("{}/team/app:v2", hanging.host()));
    let response = webhook.review("/mutate?timeout=1s", &review).await;
    let w = warning(&response);
    assert!(w.contains("no answer within 500ms"), "1s timeout less the 500ms margin: {w}");

    // Still serving, and a good image still pins.
    let ok = review_of(&webhook, &format!("{host}/team/app:v1")).await;
    assert_eq!(patch_of(&ok).0.len(), 1, "{ok}");
    assert!(webhook.is_running());
    let metrics = webhook.metrics().await;
    assert!(metrics.contains("layerlink_images_total{path=\"enforce\",result=\"unresolved\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_error_deny_refuses_with_the_reason() {
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("app"));
    let host = registry.host();
    let webhook = Webhook::start(&format!(
        "registries: [{{ host: \"{host}\", plainHttp: true }}]\nresolve: {{ budget: 2s, onError: deny }}\n"
    ));
    let response = review_of(&webhook, &format!("{host}/team/app:missing")).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("layerlink: cannot pin 1 image:"), "{message}");
    assert!(message.contains("tag missing of team/app not found"), "{message}");
    let response = review_of(&webhook, "nginx:-bad").await;
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"].as_str().unwrap().contains("invalid image reference"));
    let ok = review_of(&webhook, &format!("{host}/team/app:v1")).await;
    assert_eq!(ok["allowed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_a_review_back() {
    let webhook = Webhook::start("");

    let (status, body) = webhook.post("/mutate", b"this is not json".to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 400);
    assert!(body["response"]["status"]["message"].as_str().unwrap().contains("not an AdmissionReview"), "{body}");

    let (status, body) = webhook.post("/mutate", br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false, "{body}");

    let mut review = fixtures::json("pod-create-simple.json");
    review["request"]["object"] = json!({"kind": "ConfigMap", "data": {"image": "nginx"}});
    review["request"]["kind"]["kind"] = json!("ConfigMap");
    let response = webhook.review("/mutate", &review).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());

    let mut big = fixtures::json("pod-create-simple.json");
    big["request"]["object"]["metadata"]["annotations"] = json!({"filler": "x".repeat(5 * 1024 * 1024)});
    let (status, _) = webhook.post("/mutate", serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(status, 413, "oversized body refused");

    let health = reqwest::get(format!("http://{}/healthz", webhook.http)).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{}/readyz", webhook.http)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
/// Certificates replaced on disk while 16 workers send reviews (half on kept-alive connections,
/// half on a new connection each): no request fails, and new connections get the new certificate.
async fn certificate_rotation_under_load_fails_no_request() {
    let webhook = Webhook::start("");
    let rotated = tempfile::tempdir().unwrap();
    support::webhook::make_certs(rotated.path());
    let mut both = webhook.ca_pem();
    both.extend(std::fs::read(rotated.path().join("ca.crt")).unwrap());
    let review = serde_json::to_vec(&fixtures::json("pod-create-simple.json")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Requests answered so far, by all workers: the test moves on by progress, not by time, so a
    // loaded machine makes it slower, never wrong.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let wait_for = |n: usize| {
        let answered = answered.clone();
        async move {
            let started = std::time::Instant::now();
            while answered.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(started.elapsed() < Duration::from_secs(120), "the load does not progress");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    // 16 workers: half keep their connection alive, half open a new connection per request.
    const WORKERS: usize = 16;
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (stop, body, url, ca) = (stop.clone(), review.clone(), webhook.url("/mutate"), both.clone());
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut keepalive = support::webhook::client_trusting(&ca);
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if i % 2 == 1 {
                        keepalive = support::webhook::client_trusting(&ca);
                    }
                    match keepalive.post(&url).body(body.clone()).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(format!("HTTP {}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                (ok, failed)
            })
        })
        .collect();
    // Rotate once every worker could have sent a few requests, then keep the load on as long again.
    wait_for(4 * WORKERS).await;
    for file in ["tls.key", "tls.crt"] {
        let tmp = webhook.dir.path().join(format!(".{file}.new"));
        std::fs::copy(rotated.path().join(file), &tmp).unwrap();
        std::fs::rename(&tmp, webhook.dir.path().join(file)).unwrap();
    }
    let only_new = support::webhook::client_trusting(&std::fs::read(rotated.path().join("ca.crt")).unwrap());
    let mut rotated_seen = false;
    for _ in 0..600 {
        if only_new.post(webhook.url("/mutate")).body(review.clone()).send().await.is_ok() {
            rotated_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(answered.load(std::sync::atomic::Ordering::Relaxed) + 4 * WORKERS).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for worker in workers {
        let (o, f) = worker.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(rotated_seen, "new connections never saw the new certificate");
    // A fresh connection that trusts only the old CA now fails: the old certificate is gone.
    let fresh_old = support::webhook::client_trusting(&webhook.ca_pem());
    assert!(fresh_old.post(webhook.url("/mutate")).body(review.clone()).send().await.is_err());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    eprintln!("{ok} requests across a certificate rotation, 0 failed");
    let log = webhook.log_when(|log| log.contains("serving certificate reloaded"));
    assert!(log.contains("serving certificate reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_fails_readiness_keeps_serving_then_exits() {
    layerlink::install_crypto_provider();
    let mut webhook = Webhook::start("");
    let review = fixtures::json("pod-create-simple.json");
    let status = std::process::Command::new("kill").args(["-TERM", &webhook.pid().to_string()]).status().unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(format!("http://{}/readyz", webhook.http)).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready once SIGTERM arrived");
    // Still answering while the endpoint is being removed.
    let response = webhook.review("/mutate", &review).await;
    assert_eq!(response["allowed"], true);
    let exit = tokio::task::block_in_place(|| webhook.wait_exit(Duration::from_secs(30)));
    assert!(exit.is_some_and(|s| s.success()), "exits 0 after draining: {exit:?}\n{}", webhook.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_refuses_unpinned_images_and_audit_never_patches() {
    let registry = Registry::start();
    let digest = registry.push("team/app", "v1", &image("validate")).digest;
    let host = registry.host();
    let webhook = Webhook::start(&format!("{}exclude: {{ images: ['{host}/excluded/*'] }}\n", registry_config(&host)));
    let unpinned = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/app:v1"));
    let response = webhook.review("/validate", &unpinned).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{host}/team/app:v1 (web)")) && message.contains("pinned by digest"),
        "{message}"
    );
    let pinned = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/team/app:v1@{digest}"));
    assert_eq!(webhook.review("/validate", &pinned).await["allowed"], true);
    let excluded = fixtures::with_images("pod-create-simple.json", |_| format!("{host}/excluded/app:v1"));
    assert_eq!(webhook.review("/validate", &excluded).await["allowed"], true, "exclusions apply");

    // Audit: allowed, no patch, one warning per image, audit annotations.
    let response = webhook.review("/audit?timeout=10s", &unpinned).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "audit never mutates: {response}");
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    let short = &digest[..19];
    assert_eq!(warnings[0], format!("layerlink audit: would pin {host}/team/app:v1 → {short}…"));
    let would_pin: Value = serde_json::from_str(response["auditAnnotations"]["would-pin"].as_str().unwrap()).unwrap();
    assert_eq!(would_pin, json!({ format!("{host}/team/app:v1"): format!("{host}/team/app:v1@{digest}") }));
    let metrics = webhook.metrics().await;
    assert!(
        metrics.contains("layerlink_audit_findings_total{namespace=\"fixtures\",result=\"would_pin\"} 1"),
        "{metrics}"
    );
}

/// No review can grow `/metrics` without bound: thousands of distinct kinds, registry hosts and
/// namespaces end up in a bounded number of series, the excess counted as `other`.
#[tokio::test(flavor = "multi_thread")]
async fn metric_series_stay_bounded_whatever_the_reviews_name() {
    use futures::StreamExt;
    use layerlink::metrics::MAX_NAMESPACES;

    // A short budget: the reviews need not wait for the lookups, which are counted as they end.
    let webhook = Webhook::start("resolve: { budget: 300ms }\n");
    let base = fixtures::json("pod-create-simple.json");
    let (kinds, namespaces, images_each) = (2_000, MAX_NAMESPACES + 100, 4);
    let mut reviews = Vec::new();
    for i in 0..kinds {
        let mut review = base.clone();
        review["request"]["uid"] = json!(format!("kind-{i}"));
        review["request"]["kind"]["kind"] = json!(format!("Kind{i}"));
        reviews.push(("/mutate", review));
    }
    // Every image on a registry host of its own (a name that does not resolve: each request
    // fails at once), in a namespace of its own, so each review adds findings and registry series.
    for i in 0..namespaces {
        let mut review = base.clone();
        review["request"]["uid"] = json!(format!("namespace-{i}"));
        review["request"]["namespace"] = json!(format!("ns-{i}"));
        let image = |j: usize| format!("r{}.layerlink.invalid/app:v1", i * images_each + j);
        let containers: Vec<Value> =
            (0..images_each).map(|j| json!({"name": format!("c{j}"), "image": image(j)})).collect();
        review["request"]["object"]["spec"]["containers"] = json!(containers);
        reviews.push(("/audit", review));
    }
    let webhook = &webhook;
    futures::stream::iter(&reviews)
        .for_each_concurrent(32, |(path, review)| async move {
            webhook.review(path, review).await;
        })
        .await;

    let metrics = webhook.metrics().await;
    let series = |family: &str| metrics.lines().filter(|l| l.starts_with(family)).count();
    // Kinds: 3 paths × 12 kinds × 7 results at most; registries: one (other) × 2 methods × 17
    // codes; findings: MAX_NAMESPACES + other, one result each here.
    let bounds = [
        ("layerlink_admission_requests_total{", 3 * 12 * 7),
        ("layerlink_registry_requests_total{", 2 * 17),
        ("layerlink_registry_request_duration_seconds_count{", 1),
        ("layerlink_audit_findings_total{", MAX_NAMESPACES + 1),
    ];
    let over: Vec<String> = bounds
        .iter()
        .filter(|(family, max)| series(family) > *max)
        .map(|(family, max)| format!("{family}: {} series, bound {max}", series(family)))
        .collect();
    assert!(over.is_empty(), "{over:#?}; /metrics is {} bytes", metrics.len());
    assert!(metrics.len() < 256 * 1024, "/metrics is {} bytes", metrics.len());
    // What was bounded was counted, as other.
    for seen in ["kind=\"other\"", "namespace=\"other\"", "layerlink_registry_requests_total{registry=\"other\""] {
        assert!(metrics.contains(seen), "no {seen} in {}", &metrics[..metrics.len().min(9000)]);
    }
}
