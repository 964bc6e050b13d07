//! Shared pieces of the fuzz targets: engines whose registry lookups never leave the process,
//! the fixture reviews, structure-aware generators, and the checks every response must pass.

use std::{sync::LazyLock, time::Duration};

use arbitrary::{Arbitrary, Result, Unstructured};
use base64::Engine as _;
use layerlink::{
    Config, Engine,
    admission::review::ReviewResponse,
    reference::Reference,
    resolve::cache::{Key, Value as CacheValue},
    sites,
};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

/// No registry host can match this glob (a host never contains `/`), so every lookup that misses
/// the cache is refused by the SSRF guard before any DNS query or connection.
const REFUSE_ALL: &str = r#"network: { allowRegistries: ["refused/by/design"] }"#;

/// Engine configurations: defaults, and a strict one (deny on error, no tag, templates, opt-out,
/// exclusions). Both refuse every registry.
const CONFIGS: &[&str] = &[
    "",
    r#"
resolve: { keepTag: false, onError: deny }
exclude: { images: ["registry.k8s.io/pause*", "*:skip", "docker.io/library/busybox:*"], namespaces: ["kube-system", "skipped"] }
allowPodOptOut: true
workloads: { templates: true }
"#,
];

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    /// `CONFIGS` twice: see `plain` and `seeded`.
    pub engines: Vec<Engine>,
}

impl Harness {
    /// An engine whose cache stays empty: every lookup is refused.
    pub fn plain(&self, choice: u8) -> &Engine {
        &self.engines[usize::from(choice) % CONFIGS.len()]
    }

    /// An engine whose cache the caller fills with `seed_cache` before each review.
    pub fn seeded(&self, choice: u8) -> &Engine {
        &self.engines[CONFIGS.len() + usize::from(choice) % CONFIGS.len()]
    }
}

pub static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = runtime.enter();
    let engines = CONFIGS
        .iter()
        .chain(CONFIGS)
        .map(|extra| {
            let config = Config::parse(&format!("{REFUSE_ALL}\n{extra}")).expect("fuzz config is valid");
            Engine::new(config).expect("engine")
        })
        .collect();
    Harness { runtime, engines }
});

/// A deterministic fake digest for a name (sha256 of it).
pub fn fake_digest(name: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(name.as_bytes())))
}

/// Puts a fake digest in the engine's cache for every valid, unpinned reference in the review.
pub fn seed_cache(engine: &Engine, review: &Value) {
    let Some(kind) = review.pointer("/request/kind/kind").and_then(Value::as_str) else { return };
    let Some(object) = review.pointer("/request/object") else { return };
    let Some(shape) = sites::shape(kind) else { return };
    for site in sites::find(shape, object) {
        if let Ok(reference) = Reference::parse(&site.image) {
            let name = reference.to_string();
            let digest = fake_digest(&name);
            engine.resolver.cache().insert(Key { name: name.into(), credential: 0 }, CacheValue::Digest(digest.into()));
        }
    }
}

/// Every fixture review, embedded so the targets do not depend on the working directory.
pub const FIXTURES: &[(&str, &str)] = &[
    ("cronjob-create.json", include_str!("../../tests/fixtures/admission/cronjob-create.json")),
    ("daemonset-create.json", include_str!("../../tests/fixtures/admission/daemonset-create.json")),
    ("deployment-create.json", include_str!("../../tests/fixtures/admission/deployment-create.json")),
    ("deployment-update-image.json", include_str!("../../tests/fixtures/admission/deployment-update-image.json")),
    ("job-create.json", include_str!("../../tests/fixtures/admission/job-create.json")),
    ("pod-create-dryrun.json", include_str!("../../tests/fixtures/admission/pod-create-dryrun.json")),
    (
        "pod-create-from-replicaset-kcm-admin-creds.json",
        include_str!("../../tests/fixtures/admission/pod-create-from-replicaset-kcm-admin-creds.json"),
    ),
    ("pod-create-from-replicaset.json", include_str!("../../tests/fixtures/admission/pod-create-from-replicaset.json")),
    ("pod-create-generatename.json", include_str!("../../tests/fixtures/admission/pod-create-generatename.json")),
    ("pod-create-multi.json", include_str!("../../tests/fixtures/admission/pod-create-multi.json")),
    (
        "pod-create-reinvocation-initial.json",
        include_str!("../../tests/fixtures/admission/pod-create-reinvocation-initial.json"),
    ),
    ("pod-create-reinvocation.json", include_str!("../../tests/fixtures/admission/pod-create-reinvocation.json")),
    ("pod-create-simple.json", include_str!("../../tests/fixtures/admission/pod-create-simple.json")),
    (
        "pod-ephemeralcontainers-update.json",
        include_str!("../../tests/fixtures/admission/pod-ephemeralcontainers-update.json"),
    ),
    ("pod-update-image.json", include_str!("../../tests/fixtures/admission/pod-update-image.json")),
    ("podtemplate-create.json", include_str!("../../tests/fixtures/admission/podtemplate-create.json")),
    (
        "replicaset-create-from-deployment.json",
        include_str!("../../tests/fixtures/admission/replicaset-create-from-deployment.json"),
    ),
    ("replicaset-create.json", include_str!("../../tests/fixtures/admission/replicaset-create.json")),
    (
        "replicationcontroller-create.json",
        include_str!("../../tests/fixtures/admission/replicationcontroller-create.json"),
    ),
    ("statefulset-create.json", include_str!("../../tests/fixtures/admission/statefulset-create.json")),
];

pub static PARSED_FIXTURES: LazyLock<Vec<Value>> =
    LazyLock::new(|| FIXTURES.iter().map(|(_, text)| serde_json::from_str(text).expect("fixture is JSON")).collect());

/// What every answer must be: an AdmissionReview that serializes, with a decodable patch (if any)
/// that only replaces strings with pinned references. Returns the decoded patch.
pub fn check_response(response: &ReviewResponse, mode: layerlink::policy::Mode) -> Option<json_patch::Patch> {
    let json = serde_json::to_value(response).expect("a ReviewResponse serializes");
    assert_eq!(json["kind"], "AdmissionReview");
    let r = &response.response;
    if !r.allowed {
        assert!(r.status.is_some(), "a denial carries a status: {json}");
        assert!(r.patch.is_none(), "a denial carries no patch: {json}");
    }
    let patch = r.patch.as_ref()?;
    assert_eq!(mode, layerlink::policy::Mode::Enforce, "only enforce patches: {json}");
    assert_eq!(r.patch_type, Some("JSONPatch"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch).expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is a JSON Patch");
    assert!(!patch.0.is_empty(), "an empty patch is left out");
    Some(patch)
}

/// Strings biased towards what matters to the reference grammar.
#[derive(Debug)]
pub struct Image(pub String);

const HOSTS: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "ghcr.io",
    "localhost",
    "localhost:5000",
    "127.0.0.1:5000",
    "[::1]:5000",
    "[::1]",
    "registry.local:5000",
    "registry.k8s.io",
    "quay.io",
    "Upper.io",
    "a-b.c",
    "host:",
    "-bad.io",
];
const COMPONENTS: &[&str] =
    &["library", "nginx", "a", "team", "app", "x__y", "z-w.v", "pause", "busybox", "App", "a--b"];
const TAGS: &[&str] = &["1.25", "latest", "v1.2.3", "T_1", "skip", "-x", "", "3.9"];
const DIGESTS: &[&str] = &[
    "sha256:780e5567a24c09145d62bd290074dcc5b685893671d1ed7c721de20335e57e75",
    "sha256:baf6804425b31f7b4738f6df33c78b2edbf962feadee9611740b1191070934c1",
    "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    "sha256:abc",
    "sha256",
    "md5:0123456789abcdef0123456789abcdef",
];

fn pick<'a>(u: &mut Unstructured<'a>, list: &[&str]) -> Result<String> {
    // One value past the list is an arbitrary string.
    let i = u.choose_index(list.len() + 1)?;
    Ok(match list.get(i) {
        Some(s) => s.to_string(),
        None => String::arbitrary(u)?,
    })
}

impl<'a> Arbitrary<'a> for Image {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Image(match u.int_in_range(0..=3u8)? {
            0 => String::arbitrary(u)?,
            _ => {
                let mut s = String::new();
                if bool::arbitrary(u)? {
                    s.push_str(&pick(u, HOSTS)?);
                    s.push('/');
                }
                let n = u.int_in_range(1..=3u8)?;
                for i in 0..n {
                    if i > 0 {
                        s.push('/');
                    }
                    s.push_str(&pick(u, COMPONENTS)?);
                }
                if bool::arbitrary(u)? {
                    s.push(':');
                    s.push_str(&pick(u, TAGS)?);
                }
                if bool::arbitrary(u)? {
                    s.push('@');
                    s.push_str(&pick(u, DIGESTS)?);
                }
                if u.ratio(1, 8)? {
                    // A long name, near the 255-character limits.
                    let n = u.int_in_range(200..=300usize)?;
                    s.insert_str(0, &"a".repeat(n));
                }
                s
            }
        }))
    }
}

/// A JSON value of bounded depth.
#[derive(Debug)]
pub struct Json(pub Value);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Json(value(u, 3)?))
    }
}

const KEYS: &[&str] = &[
    "name",
    "image",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "spec",
    "metadata",
    "annotations",
    "x-unknown",
];

fn value(u: &mut Unstructured<'_>, depth: u8) -> Result<Value> {
    let max = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=max)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => json!(i64::arbitrary(u)?),
        3 => serde_json::Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        4 => Value::String(String::arbitrary(u)?),
        5 => Value::String(Image::arbitrary(u)?.0),
        6 => {
            let n = u.int_in_range(0..=4u8)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4u8)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(pick(u, KEYS)?, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// The API server's `?timeout=`.
pub fn api_timeout(choice: u8) -> Option<Duration> {
    match choice % 4 {
        0 => None,
        1 => Some(Duration::ZERO),
        2 => Some(Duration::from_secs(1)),
        _ => Some(Duration::from_secs(10)),
    }
}

pub fn mode(choice: u8) -> layerlink::policy::Mode {
    use layerlink::policy::Mode;
    [Mode::Enforce, Mode::Audit, Mode::Validate][usize::from(choice) % 3]
}
