//! Sticky pins in the handler, in-process against a real registry: a controller's new pod gets
//! the digest its revision's siblings keep, a kept digest behind its tag is said, what the engine
//! chose is remembered, and a lookup that fails or is slow falls back and is counted. The siblings
//! source is driven by the test here (the API-server side is in the e2e scenarios).

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use layerlink::{
    Engine, Error,
    admission::{Edges, fixtures, handle, sticky::SiblingSource},
    pins::{Kept, Revision},
    policy::Mode,
};
use serde_json::{Value, json};
use support::{Registry, engine, image};

/// How the test's siblings source answers.
#[derive(Clone, Copy)]
enum Answer {
    Kept,
    Fail,
    Hang,
}

struct Source {
    answer: Answer,
    kept: Kept,
    asked: Mutex<Vec<Revision>>,
    remembered: Mutex<Vec<Kept>>,
}

impl Source {
    fn new(answer: Answer, kept: Kept) -> Arc<Self> {
        Arc::new(Source { answer, kept, asked: Mutex::default(), remembered: Mutex::default() })
    }
}

#[async_trait::async_trait]
impl SiblingSource for Source {
    async fn kept(&self, revision: &Revision) -> Result<Arc<Kept>, Error> {
        self.asked.lock().unwrap().push(revision.clone());
        match self.answer {
            Answer::Kept => Ok(Arc::new(self.kept.clone())),
            Answer::Fail => {
                let forbidden = kube::core::Status::failure("pods is forbidden", "Forbidden").with_code(403);
                Err(Error::kube("listing pods", kube::Error::Api(forbidden.boxed())))
            }
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Arc::default())
            }
        }
    }

    async fn remember(&self, _revision: &Revision, chosen: &Kept) {
        self.remembered.lock().unwrap().push(chosen.clone());
    }
}

/// The fixture pod a ReplicaSet created, its one container (`php`) on `image`.
fn replicaset_pod(image: &str) -> Value {
    fixtures::with_images("pod-create-from-replicaset.json", |_| image.to_string())
}

async fn answer(engine: &Engine, source: &Arc<Source>, mode: Mode, review: &Value) -> Value {
    let edges = Edges { siblings: Some(source.clone()), ..Edges::default() };
    let body = serde_json::to_vec(review).unwrap();
    serde_json::to_value(handle(engine, &edges, mode, &body, None).await).unwrap()["response"].clone()
}

/// The images the answer's patch writes.
fn written(response: &Value) -> Vec<String> {
    use base64::Engine as _;
    let Some(b64) = response["patch"].as_str() else { return Vec::new() };
    let ops: Vec<Value> =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    ops.iter().map(|op| op["value"].as_str().unwrap().to_string()).collect()
}

fn metric(engine: &Engine, line: &str) -> bool {
    engine.metrics.encode().lines().any(|l| l == line)
}

/// A counter's value (0 when absent).
fn value(engine: &Engine, series: &str) -> u64 {
    let text = engine.metrics.encode();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_pod_gets_the_digest_its_siblings_keep_and_the_moved_tag_is_said() {
    let registry = Registry::start();
    let host = registry.host();
    let old = registry.push("team/app", "v1", &image("old")).digest;
    let new = registry.push("team/app", "v1", &image("new")).digest;
    assert_ne!(old, new);
    let engine = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let written_image = format!("{host}/team/app:v1");
    let mut kept = Kept::default();
    kept.keep("php", &written_image, &old);
    let source = Source::new(Answer::Kept, kept);
    let review = replicaset_pod(&written_image);

    let first = answer(&engine, &source, Mode::Enforce, &review).await;
    assert_eq!(written(&first), [format!("{written_image}@{old}")], "{first}");
    let asked = source.asked.lock().unwrap()[0].clone();
    assert_eq!((asked.owner().as_str(), asked.namespace.as_str()), ("ReplicaSet/frontend", "fixtures"));

    // The cache did not know the tag: a background lookup fills it, and the next pod is told.
    let started = Instant::now();
    let warned = loop {
        let next = answer(&engine, &source, Mode::Enforce, &review).await;
        assert_eq!(written(&next), [format!("{written_image}@{old}")], "{next}");
        if next["warnings"].as_array().is_some_and(|w| !w.is_empty()) || started.elapsed() > Duration::from_secs(20) {
            break next;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let warning = warned["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("ReplicaSet/frontend") && warning.contains(&old[..19]) && warning.contains(&new[..19]),
        "{warning}"
    );
    let lookups = value(&engine, r#"layerlink_sibling_lookups_total{result="found"}"#);
    assert!(lookups >= 2 && value(&engine, r#"layerlink_pins_total{source="sibling"}"#) == lookups);
    assert_eq!(value(&engine, "layerlink_pins_behind_total"), 1, "{}", engine.metrics.encode());

    // Audit mode reports the kept digest as what it would pin.
    let audited = answer(&engine, &source, Mode::Audit, &review).await;
    assert!(audited["warnings"].to_string().contains(&old[..19]), "{audited}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_engine_chose_is_remembered_except_on_a_dry_run_or_in_audit() {
    let registry = Registry::start();
    let host = registry.host();
    let digest = registry.push("team/app", "v1", &image("app")).digest;
    let engine = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let written_image = format!("{host}/team/app:v1");
    let source = Source::new(Answer::Kept, Kept::default());
    let mut review = replicaset_pod(&written_image);

    let first = answer(&engine, &source, Mode::Enforce, &review).await;
    assert_eq!(written(&first), [format!("{written_image}@{digest}")]);
    let remembered = source.remembered.lock().unwrap().clone();
    assert_eq!(remembered.len(), 1);
    assert_eq!(remembered[0].get("php", &written_image).map(|d| d.to_string()), Some(digest.clone()));
    assert!(metric(&engine, r#"layerlink_sibling_lookups_total{result="empty"} 1"#), "{}", engine.metrics.encode());
    assert!(metric(&engine, r#"layerlink_pins_total{source="registry"} 1"#), "{}", engine.metrics.encode());

    answer(&engine, &source, Mode::Enforce, &review).await;
    assert!(metric(&engine, r#"layerlink_pins_total{source="cache"} 1"#), "{}", engine.metrics.encode());
    answer(&engine, &source, Mode::Audit, &review).await;
    review["request"]["dryRun"] = json!(true);
    answer(&engine, &source, Mode::Enforce, &review).await;
    assert_eq!(source.remembered.lock().unwrap().len(), 2, "audit and dry runs remember nothing");
    assert_eq!(source.asked.lock().unwrap().len(), 4, "a dry run and audit still read");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_or_slow_lookup_falls_back_and_is_counted() {
    let registry = Registry::start();
    let host = registry.host();
    let digest = registry.push("team/app", "v1", &image("app")).digest;
    let engine = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let written_image = format!("{host}/team/app:v1");
    let review = replicaset_pod(&written_image);

    let failing = Source::new(Answer::Fail, Kept::default());
    let answered = answer(&engine, &failing, Mode::Enforce, &review).await;
    assert_eq!(written(&answered), [format!("{written_image}@{digest}")]);
    assert!(metric(&engine, r#"layerlink_sibling_lookups_total{result="error"} 1"#), "{}", engine.metrics.encode());

    let hanging = Source::new(Answer::Hang, Kept::default());
    let started = Instant::now();
    let answered = answer(&engine, &hanging, Mode::Enforce, &review).await;
    assert!(started.elapsed() < Duration::from_secs(10), "a hanging lookup must not hold the review");
    assert_eq!(written(&answered), [format!("{written_image}@{digest}")]);
    assert!(metric(&engine, r#"layerlink_sibling_lookups_total{result="timeout"} 1"#), "{}", engine.metrics.encode());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_source_is_not_asked_when_sticky_pins_are_off_or_for_a_bare_pod() {
    let registry = Registry::start();
    let host = registry.host();
    let digest = registry.push("team/app", "v1", &image("app")).digest;
    let written_image = format!("{host}/team/app:v1");
    let mut kept = Kept::default();
    kept.keep("php", &written_image, "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    let source = Source::new(Answer::Kept, kept);

    let off = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]\npins: {{ sticky: false }}"));
    let answered = answer(&off, &source, Mode::Enforce, &replicaset_pod(&written_image)).await;
    assert_eq!(written(&answered), [format!("{written_image}@{digest}")]);

    let on = engine(&format!("registries: [{{ host: \"{host}\", plainHttp: true }}]"));
    let bare = fixtures::with_images("pod-create-simple.json", |_| written_image.clone());
    answer(&on, &source, Mode::Enforce, &bare).await;
    answer(&on, &source, Mode::Validate, &replicaset_pod(&written_image)).await;
    assert!(source.asked.lock().unwrap().is_empty());
}
