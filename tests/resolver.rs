//! The resolver's own bounds against a real registry: a lookup that panics or wedges inside its
//! task, stale digests only for transient failures, and the counts one review and the process may
//! start.
//!
//! Panics and wedges are injected through tracing, a public extension point the resolver calls
//! inside every lookup task: a layer installed for this test binary panics (once) or blocks its
//! thread on the `resolved` (or `lookup failed`) event of one named image, after the real
//! registry answered and before the cache is filled. No registry is mocked.

mod support;

use support::{engine, image};

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use layerlink::{
    Engine, Error,
    engine::{Deadline, MAX_IMAGES, MAX_LOOKUPS},
    reference::Reference,
    registry::auth::Keychain,
    resolve::MAX_LOOKUPS_IN_FLIGHT,
    sites::Site,
};
use support::{Fault, Proxy, Registry};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

async fn resolve(engine: &Engine, image: &str) -> Result<layerlink::resolve::Resolved, Arc<Error>> {
    let reference = Reference::parse(image).unwrap();
    engine.resolver.resolve(&reference, &Arc::default(), Deadline::after(Duration::from_secs(5))).await
}

#[derive(Clone, Copy)]
enum Injected {
    PanicOnce,
    Block(Duration),
}

/// Rules of the tracing layer: (part of an image name, what to do in its lookup task).
fn injections() -> &'static Mutex<Vec<(String, Injected)>> {
    static RULES: OnceLock<Mutex<Vec<(String, Injected)>>> = OnceLock::new();
    RULES.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Injector)).unwrap();
        Mutex::default()
    })
}

fn inject(image: &str, what: Injected) {
    injections().lock().unwrap().push((image.to_string(), what));
}

struct Injector;

#[derive(Default)]
struct Fields {
    message: String,
    image: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "image" => self.image = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Injector {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message != "resolved" && fields.message != "lookup failed" {
            return;
        }
        let action = {
            let mut rules = injections().lock().unwrap();
            let Some(i) = rules.iter().position(|(needle, _)| fields.image.contains(needle.as_str())) else { return };
            let action = rules[i].1;
            if matches!(action, Injected::PanicOnce) {
                rules.remove(i);
            }
            action
        };
        match action {
            Injected::PanicOnce => panic!("injected: the lookup of {} panics", fields.image),
            Injected::Block(d) => std::thread::sleep(d),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_that_panics_fails_its_reviews_only_and_the_next_lookup_succeeds() {
    let registry = Registry::start();
    let host = registry.host();
    let panicky = registry.push("team/panicky", "v1", &image("panicky")).digest;
    let other = registry.push("team/other", "v1", &image("other")).digest;
    let e = engine(&format!("registries: [{{ host: '{host}', plainHttp: true }}]"));
    inject("team/panicky:v1", Injected::PanicOnce);

    let (panicky_image, other_image) = (format!("{host}/team/panicky:v1"), format!("{host}/team/other:v1"));
    let (failed, fine) = tokio::join!(resolve(&e, &panicky_image), resolve(&e, &other_image));
    let failed = failed.unwrap_err();
    assert!(matches!(*failed, Error::Internal(_)), "the panicking lookup's review: {failed}");
    assert_eq!(&*fine.unwrap().digest, other, "a lookup beside it is not affected");

    // The image is not failed for good: the next review looks it up again and pins it.
    let again = resolve(&e, &panicky_image).await.expect("looked up afresh after the panic");
    assert_eq!(&*again.digest, panicky);
    assert_eq!(e.resolver.lookups_in_flight(), 0);
    assert_eq!(e.resolver.health(), Ok(()));
}

/// `GET path` over plain HTTP/1.0 with std's blocking socket: (status, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: layerlink\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A lookup task that stops yielding (its thread blocked) is found by `/readyz`. The health
/// router runs on a runtime of its own here: a blocked worker can stall a small runtime's timers
/// and sockets, and in the server a probe that gets no answer fails readiness anyway.
#[test]
fn a_wedged_lookup_fails_readiness_with_the_reason_until_it_ends() {
    let registry = Registry::start();
    let host = registry.host();
    registry.push("team/wedged", "v1", &image("wedged"));
    // A 250ms request timeout: lookups are abandoned after 500ms, and one still running after
    // 1s has stopped yielding.
    let e = Arc::new(engine(&format!(
        "registries: [{{ host: '{host}', plainHttp: true }}]\nresolve: {{ requestTimeout: 250ms, connectTimeout: 250ms }}"
    )));
    let state =
        layerlink::server::routes::State { engine: e.clone(), edges: Default::default(), ready: Arc::new(true.into()) };
    let (address, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            address.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, layerlink::server::routes::health(state)).await.unwrap();
        });
    });
    let health = bound.recv().unwrap();
    assert_eq!(get(health, "/readyz"), (200, "ok".to_string()));

    let lookups = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    inject("team/wedged:v1", Injected::Block(Duration::from_secs(8)));
    let review = {
        let (e, image) = (e.clone(), format!("{host}/team/wedged:v1"));
        lookups.spawn(async move { resolve(&e, &image).await })
    };
    let deadline = Instant::now() + Duration::from_secs(7);
    let (status, why) = loop {
        let (status, body) = get(health, "/readyz");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "readiness while a lookup is wedged: {why}");
    assert!(why.starts_with("not ready: resolver: 1 registry lookup(s) stuck past"), "{why}");
    assert!(why.contains(&host) && !why.contains('\n'), "one line naming the registry: {why}");

    // Once the task ends, ready again, and the review has its answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(health, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "still not ready after the wedged lookup ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    lookups.block_on(review).unwrap().ok();
    assert_eq!(e.resolver.lookups_in_flight(), 0);
}

/// After a digest's TTL the registry answers again, and only a transient failure lets the stale
/// digest stand in: not-found and refused credentials are answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_digest_is_served_for_transient_failures_only() {
    let registry = Registry::start();
    let digest = registry.push("team/app", "v1", &image("stale")).digest;
    let proxy = Proxy::start(registry.addr());
    let host = proxy.host();
    let e = engine(&format!(
        "registries: [{{ host: '{host}', plainHttp: true }}]\ncache: {{ ttl: 50ms, negativeTtl: 1ms, staleIfError: 1h }}\nresolve: {{ requestTimeout: 500ms, connectTimeout: 500ms }}"
    ));
    let image = format!("{host}/team/app:v1");
    let past_ttl = || tokio::time::sleep(Duration::from_millis(80));

    for (code, expect) in [(404, "not_found"), (401, "unauthorized"), (403, "unauthorized")] {
        assert_eq!(resolve(&e, &image).await.unwrap().stale, None, "fresh before the {code}");
        past_ttl().await;
        proxy.set_fault(Fault::Status { code, retry_after: None });
        let answer = resolve(&e, &image).await;
        proxy.set_fault(Fault::None);
        let error = answer.expect_err(&format!("a stale digest was served after a {code}"));
        assert_eq!(error.metric_label(), expect, "{code}: {error}");
        past_ttl().await;
    }

    for fault in [
        Fault::Status { code: 503, retry_after: None },
        Fault::Status { code: 500, retry_after: None },
        Fault::Hang,
        Fault::Close,
        Fault::Status { code: 429, retry_after: Some(1) },
    ] {
        assert_eq!(resolve(&e, &image).await.unwrap().stale, None, "fresh before {fault:?}");
        past_ttl().await;
        proxy.set_fault(fault.clone());
        let answer = resolve(&e, &image).await;
        proxy.set_fault(Fault::None);
        let answer = answer.unwrap_or_else(|err| panic!("{fault:?}: no stale digest: {err}"));
        assert_eq!(&*answer.digest, digest);
        assert!(answer.stale.is_some(), "{fault:?}: served stale, and says so");
        if matches!(fault, Fault::Status { code: 429, .. }) {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
}

/// A registry failure reaches a one-shot caller (`resolve`, `install`, the pre-puller) as the
/// registry said it, through the shared single-flight answer: host and cause once, kind kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_failure_keeps_its_kind_and_names_the_host_once() {
    let registry = Registry::start();
    registry.push("team/app", "v1", &image("five-hundred"));
    let proxy = Proxy::start(registry.addr());
    let host = proxy.host();
    let e = engine(&format!("registries: [{{ host: '{host}', plainHttp: true }}]"));
    proxy.set_fault(Fault::Status { code: 500, retry_after: None });
    let error =
        e.resolver.pin(&format!("{host}/team/app:v1"), &Arc::default(), Deadline::after(Duration::from_secs(5))).await;
    let error = error.expect_err("a 500 pins nothing");
    let text = error.to_string();
    assert_eq!(error.metric_label(), "registry_error", "{text}");
    assert!(text.starts_with(&format!("{host}: registry error: ")) && text.contains("500"), "{text}");
    assert_eq!(text.matches(&host).count(), 1, "{text}");
    assert_eq!(text.matches("registry error").count(), 1, "{text}");
}

fn sites(images: impl IntoIterator<Item = String>) -> Vec<Site> {
    images
        .into_iter()
        .enumerate()
        .map(|(i, image)| Site { pointer: format!("/spec/containers/{i}/image"), image, container: format!("c{i}") })
        .collect()
}

/// One object with 1,000 new tags on a registry that never answers: a bounded number of lookups
/// start, the answer comes at the deadline, and every image left out is reported as such.
#[tokio::test(flavor = "multi_thread")]
async fn one_object_with_a_thousand_new_tags_starts_a_bounded_number_of_lookups() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.addr());
    proxy.set_fault(Fault::Hang);
    let host = proxy.host();
    let e = engine(&format!("registries: [{{ host: '{host}', plainHttp: true }}]"));
    let plan = e
        .plan(
            sites((0..1000).map(|i| format!("{host}/team/app:t{i}"))),
            &Arc::new(Keychain::default()),
            Deadline::after(Duration::from_millis(500)),
        )
        .await;
    assert!(plan.pins.is_empty());
    let over_images: Vec<_> = plan.problems.iter().filter(|p| p.reason.contains("1000 images to pin")).collect();
    assert_eq!(over_images.len(), 1, "one problem counts the images over the limit");
    assert!(
        over_images[0].reason.contains(&format!("{} after it", 1000 - MAX_IMAGES - 1)),
        "{}",
        over_images[0].reason
    );
    let over_lookups = plan.problems.iter().filter(|p| p.reason.contains("need a registry lookup")).count();
    assert_eq!(over_lookups, MAX_IMAGES - MAX_LOOKUPS, "each image past the lookup limit says so");
    let timed_out = plan.problems.iter().filter(|p| p.cause == "timeout").count();
    assert_eq!(timed_out, MAX_LOOKUPS, "the lookups that started answered at the deadline");
    assert_eq!(plan.problems.len(), 1 + MAX_IMAGES);
    assert_eq!(e.resolver.lookups_in_flight(), MAX_LOOKUPS, "abandoned lookups still running, and no more");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(proxy.count("HEAD", "/manifests/") <= MAX_LOOKUPS, "{} HEADs", proxy.count("HEAD", "/manifests/"));
}

/// Many reviews of new tags at once: lookups in flight stay under the process-wide bound, and a
/// lookup that cannot start is a problem that says why (it follows `onError` like any other).
#[tokio::test(flavor = "multi_thread")]
async fn lookups_in_flight_are_bounded_process_wide() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.addr());
    proxy.set_fault(Fault::Hang);
    let host = proxy.host();
    let e = engine(&format!("registries: [{{ host: '{host}', plainHttp: true }}]\nresolve: {{ requestTimeout: 30s }}"));
    let reviews = MAX_LOOKUPS_IN_FLIGHT / MAX_LOOKUPS + 2;
    let keychain = Arc::new(Keychain::default());
    let plans = (0..reviews).map(|r| {
        let images = (0..MAX_LOOKUPS).map(|i| format!("{host}/team/r{r}:t{i}"));
        e.plan(sites(images), &keychain, Deadline::after(Duration::from_millis(500)))
    });
    let plans = futures::future::join_all(plans).await;
    let busy: Vec<_> = plans.iter().flat_map(|p| &p.problems).filter(|p| p.cause == "busy").collect();
    assert_eq!(busy.len(), (reviews * MAX_LOOKUPS) - MAX_LOOKUPS_IN_FLIGHT, "every lookup over the bound says so");
    assert!(
        busy[0].reason.contains(&format!("{MAX_LOOKUPS_IN_FLIGHT} registry lookups already in flight")),
        "{}",
        busy[0].reason
    );
    assert_eq!(e.resolver.lookups_in_flight(), MAX_LOOKUPS_IN_FLIGHT);
}
