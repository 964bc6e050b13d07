//! Property tests over the real fixture reviews, without a network: an `Engine` whose cache holds
//! a fake digest (sha256 of the name) for every valid reference, and whose network guard refuses
//! every registry, so a lookup is a cache hit or an immediate refusal.
//!
//! For arbitrary pods built from the fixtures (images drawn from valid, invalid, excluded and
//! unresolvable references; container lists of any length; unknown fields anywhere):
//! (a) the patch changes nothing but the image fields at site pointers;
//! (b) every changed image is what the user wrote, `:latest` if no tag, `@digest`, and parses
//!     as pinned; every valid, unpinned, not excluded, resolvable image is changed;
//! (c) planning again on the patched object gives an empty patch;
//! (d) the admission handler on the patched review allows it with no patch;
//! (e) on a CREATE the handler sends exactly the plan's patch;
//! (f) the handler's read-only decode of the object (only the fields layerlink reads) finds the
//!     same sites as the whole object.
//! And the reference grammar: whatever parses, its fully qualified Display parses the same.
//!
//! The regression tests at the end reproduce crashes found by the fuzz targets in fuzz/.

use std::sync::Arc;

use base64::Engine as _;
use layerlink::{
    Config, Engine,
    admission::{self, Edges, fixtures},
    policy::Mode,
    reference::Reference,
    registry::auth::Keychain,
    resolve::cache::{Key, Value as CacheValue},
    sites::{self, Shape},
};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Digest as _;

/// Fixtures with a pod spec (every Pod, the EphemeralContainers subresource, and the workloads,
/// whose templates the engine pins with `workloads.templates: true`).
const FIXTURES: &[&str] = &[
    "pod-create-simple.json",
    "pod-create-multi.json",
    "pod-create-dryrun.json",
    "pod-create-generatename.json",
    "pod-create-from-replicaset.json",
    "pod-create-from-replicaset-kcm-admin-creds.json",
    "pod-create-reinvocation-initial.json",
    "pod-create-reinvocation.json",
    "pod-update-image.json",
    "pod-ephemeralcontainers-update.json",
    "deployment-create.json",
    "cronjob-create.json",
    "podtemplate-create.json",
];

/// Never seeded in the cache: its lookups are refused by the guard (an unresolvable image).
const UNRESOLVABLE_HOST: &str = "unseeded.example";
const EXCLUDED: &str = "registry.k8s.io/pause*";

fn config(keep_tag: bool) -> Config {
    Config::parse(&format!(
        "network: {{ allowRegistries: [\"refused/by/design\"] }}\n\
         exclude: {{ images: [\"{EXCLUDED}\"] }}\n\
         workloads: {{ templates: true }}\n\
         resolve: {{ keepTag: {keep_tag} }}\n"
    ))
    .expect("valid config")
}

struct World {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    keep_tag: bool,
}

impl World {
    fn new(keep_tag: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let engine = {
            let _guard = runtime.enter();
            Engine::new(config(keep_tag)).unwrap()
        };
        World { runtime, engine, keep_tag }
    }

    /// A fake digest in the cache for every valid reference of the object, except those at
    /// `UNRESOLVABLE_HOST`.
    fn seed(&self, shape: Shape, object: &Value) {
        for site in sites::find(shape, object) {
            if let Ok(r) = Reference::parse(&site.image)
                && r.registry != UNRESOLVABLE_HOST
            {
                let name = r.to_string();
                let digest = fake_digest(&name);
                self.engine
                    .resolver
                    .cache()
                    .insert(Key { name: name.into(), credential: 0 }, CacheValue::Digest(digest));
            }
        }
    }

    fn plan(&self, shape: Shape, object: &Value) -> layerlink::engine::Plan {
        let sites = sites::find(shape, object);
        let keychain = Arc::new(Keychain::default());
        self.runtime.block_on(self.engine.plan(sites, &keychain, self.engine.deadline(None)))
    }

    fn handle(&self, review: &Value) -> Value {
        let body = serde_json::to_vec(review).unwrap();
        let response = self.runtime.block_on(admission::handle(
            &self.engine,
            &Edges::default(),
            Mode::Enforce,
            &body,
            Some(std::time::Duration::from_secs(10)),
        ));
        serde_json::to_value(response).unwrap()
    }
}

fn fake_digest(name: &str) -> Arc<str> {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(name.as_bytes()))).into()
}

/// The decoded JSON Patch of a response, if it has one.
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let patch = response["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// The object with the image field at every pointer removed.
fn without_images(object: &Value, pointers: &[String]) -> Value {
    let mut copy = object.clone();
    for pointer in pointers {
        let (parent, _) = pointer.rsplit_once('/').unwrap();
        if let Some(Value::Object(container)) = copy.pointer_mut(parent) {
            container.remove("image");
        }
    }
    copy
}

// ---- strategies ----

fn host() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("docker.io"),
        Some("index.docker.io"),
        Some("ghcr.io"),
        Some("localhost"),
        Some("localhost:5000"),
        Some("127.0.0.1:5000"),
        Some("[::1]:5000"),
        Some("registry.local:5000"),
        Some("registry.k8s.io"),
        Some(UNRESOLVABLE_HOST),
    ])
}

const DIGEST: &str = "sha256:780e5567a24c09145d62bd290074dcc5b685893671d1ed7c721de20335e57e75";

/// References the grammar accepts: tagged, untagged, with host:port, digested.
fn valid_reference() -> impl Strategy<Value = String> {
    let component = prop_oneof![
        4 => "[a-z0-9]{1,8}",
        1 => "[a-z0-9]{1,4}([._]|__|-{1,2})[a-z0-9]{1,4}",
        1 => Just("pause".to_string()),
        1 => Just("library".to_string()),
        // Long names, near the 255-character limit.
        1 => "[a-z]{100,250}",
    ];
    (
        host(),
        prop::collection::vec(component, 1..=3),
        prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}"),
        prop::option::weighted(0.2, Just(DIGEST)),
    )
        .prop_map(|(host, path, tag, digest)| {
            let mut s = host.map(|h| format!("{h}/")).unwrap_or_default();
            s.push_str(&path.join("/"));
            if let Some(tag) = tag {
                s.push(':');
                s.push_str(&tag);
            }
            if let Some(digest) = digest {
                s.push('@');
                s.push_str(digest);
            }
            s
        })
}

fn invalid_reference() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "Upper/Case",
            " nginx",
            "nginx:",
            "nginx:-x",
            "a/b:c:d",
            "nginx@sha256:abc",
            "ghcr.io//app",
            "ghcr.io/app-",
            "host:99999x/app",
            "nginx\n",
            "ñginx",
        ])
        .prop_map(str::to_string),
        // Anything at all (mostly invalid; validity is decided by the parser, not assumed here).
        ".{0,40}",
    ]
}

fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => valid_reference(),
        2 => invalid_reference(),
        1 => Just("registry.k8s.io/pause:3.9".to_string()),
    ]
}

/// What a generated container has in its `image` field.
#[derive(Clone, Debug)]
enum ImageField {
    Text(String),
    Missing,
    Odd(Value),
}

fn image_field() -> impl Strategy<Value = ImageField> {
    prop_oneof![
        12 => image().prop_map(ImageField::Text),
        1 => Just(ImageField::Missing),
        1 => prop_oneof![Just(Value::Null), Just(json!(5)), Just(json!(["nginx"])), Just(json!({"image": "nginx"}))]
            .prop_map(ImageField::Odd),
    ]
}

/// A JSON value for an unknown field; some are decoys that look like images.
fn unknown_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        image().prop_map(Value::String),
        image().prop_map(|i| json!({"image": i, "nested": {"image": i}})),
        image().prop_map(|i| json!([{"name": "decoy", "image": i}])),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    fixture: &'static str,
    init: Vec<ImageField>,
    containers: Vec<ImageField>,
    ephemeral: Vec<ImageField>,
    /// (which object in the tree, key, value): unknown fields added anywhere.
    unknown: Vec<(prop::sample::Index, String, Value)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(FIXTURES),
        prop::collection::vec(image_field(), 0..=3),
        prop::collection::vec(image_field(), 1..=4),
        prop::collection::vec(image_field(), 0..=2),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop_oneof![Just("image".to_string()), Just("containers".to_string()), "x-[a-z]{1,8}"],
                unknown_value(),
            ),
            0..=6,
        ),
    )
        .prop_map(|(fixture, init, containers, ephemeral, unknown)| Case {
            fixture,
            init,
            containers,
            ephemeral,
            unknown,
        })
}

/// Pointers to every object in the tree.
fn object_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(at.clone());
            for (key, child) in map {
                object_pointers(child, format!("{at}/{}", layerlink::patch::escape(key)), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                object_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The fixture review with its container lists replaced and unknown fields added. Returns the
/// review and the object's shape.
fn build(case: &Case) -> (Value, Shape<'static>) {
    let mut review = fixtures::json(case.fixture);
    let kind = review["request"]["kind"]["kind"].as_str().unwrap().to_string();
    let shape = sites::shape(&kind).unwrap();
    let spec_pointer = format!("/request/object{}", sites::spec_pointer(shape).expect("a shape with a pod spec"));
    let spec = review.pointer_mut(&spec_pointer).unwrap();
    // Containers are copies of the fixture's own (all their real fields), renamed, re-imaged.
    let template = spec
        .get("containers")
        .or_else(|| spec.get("ephemeralContainers"))
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or_else(|| json!({"name": "c"}));
    for (list, fields) in
        [("initContainers", &case.init), ("containers", &case.containers), ("ephemeralContainers", &case.ephemeral)]
    {
        if shape == Shape::EphemeralContainers && list != "ephemeralContainers" {
            continue;
        }
        let containers: Vec<Value> = fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let mut c = template.clone();
                c["name"] = json!(format!("{list}-{i}"));
                match field {
                    ImageField::Text(image) => c["image"] = json!(image),
                    ImageField::Missing => {
                        c.as_object_mut().unwrap().remove("image");
                    }
                    ImageField::Odd(v) => c["image"] = v.clone(),
                }
                c
            })
            .collect();
        spec[list] = Value::Array(containers);
    }
    let object = review.pointer_mut("/request/object").unwrap();
    for (index, key, value) in &case.unknown {
        let mut pointers = Vec::new();
        object_pointers(object, String::new(), &mut pointers);
        let at = index.get(&pointers).clone();
        if let Some(Value::Object(map)) = object.pointer_mut(&at) {
            map.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    (review, shape)
}

fn check(world: &World, case: &Case) -> Result<(), TestCaseError> {
    let (review, shape) = build(case);
    let object = &review["request"]["object"];
    world.seed(shape, object);
    let sites = sites::find(shape, object);
    let pointers: Vec<String> = sites.iter().map(|s| s.pointer.clone()).collect();
    let plan = world.plan(shape, object);
    let patch = plan.patch();
    let patched = layerlink::patch::apply(object, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;

    // (a) Nothing changes outside the image fields at site pointers.
    prop_assert_eq!(without_images(object, &pointers), without_images(&patched, &pointers));
    let after: Vec<String> = sites::find(shape, &patched).into_iter().map(|s| s.pointer).collect();
    prop_assert_eq!(&after, &pointers);

    // (b) Each image is pinned exactly when it should be, and to what the user wrote + digest.
    for site in &sites {
        let now = patched.pointer(&site.pointer).and_then(Value::as_str).unwrap();
        let expected = match Reference::parse(&site.image) {
            Ok(r)
                if !r.is_pinned() && !world.engine.is_excluded(&site.image, &r) && r.registry != UNRESOLVABLE_HOST =>
            {
                let digest = fake_digest(&r.to_string());
                let name_only = match &r.tag {
                    Some(tag) => site.image.strip_suffix(&format!(":{tag}")).unwrap(),
                    None => &site.image,
                };
                let pinned = if world.keep_tag {
                    format!("{name_only}:{}@{digest}", r.tag_or_latest())
                } else {
                    format!("{name_only}@{digest}")
                };
                if world.keep_tag {
                    let tail = if r.tag.is_some() { format!("@{digest}") } else { format!(":latest@{digest}") };
                    prop_assert_eq!(&pinned, &format!("{}{tail}", site.image));
                }
                let again = Reference::parse(&pinned);
                prop_assert!(again.as_ref().is_ok_and(Reference::is_pinned), "{pinned:?} does not parse as pinned");
                let again = again.unwrap();
                prop_assert_eq!((&again.registry, &again.repository), (&r.registry, &r.repository));
                prop_assert_eq!(again.digest.as_deref(), Some(&*digest));
                pinned
            }
            _ => site.image.clone(),
        };
        prop_assert_eq!(now, expected.as_str(), "site {}", site.pointer);
    }

    // (c) Idempotent: nothing left to pin in the patched object.
    let replan = world.plan(shape, &patched);
    prop_assert!(replan.patch().0.is_empty(), "second plan patches again: {:?}", replan.patch());
    prop_assert!(replan.pins.is_empty());

    // (d) The handler allows the patched review and sends no patch.
    let mut patched_review = review.clone();
    patched_review["request"]["object"] = patched;
    let response = world.handle(&patched_review);
    prop_assert_eq!(&response["response"]["allowed"], &json!(true), "{}", response);
    prop_assert!(patch_of(&response).is_none(), "patched review patched again: {}", response);
    prop_assert_eq!(&response["response"]["uid"], &review["request"]["uid"]);

    // And on the original review the handler sends the plan's patch (CREATE: every site counts).
    if review["request"]["operation"] == "CREATE" {
        let response = world.handle(&review);
        let sent = patch_of(&response).unwrap_or(json_patch::Patch(vec![]));
        prop_assert_eq!(sent, patch);
    }

    // (f) The read-only decode the handler uses sees the same images as the whole object.
    let body = serde_json::to_vec(&review).unwrap();
    let decoded: admission::review::AdmissionReview = serde_json::from_slice(&body).unwrap();
    let read = decoded.request.unwrap().object.unwrap();
    prop_assert_eq!(sites::find(shape, &read), sites);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn patch_pins_only_images_and_is_idempotent(case in case()) {
        thread_local!(static WORLD: World = World::new(true));
        WORLD.with(|world| check(world, &case))?;
    }

    #[test]
    fn patch_without_tags_pins_only_images_and_is_idempotent(case in case()) {
        thread_local!(static WORLD: World = World::new(false));
        WORLD.with(|world| check(world, &case))?;
    }

    /// What the fuzz target `reference` checks, from the parser's side: whatever parses,
    /// its fully qualified form parses to the same reference.
    #[test]
    fn reference_display_round_trips(
        text in prop_oneof![
            valid_reference(),
            invalid_reference(),
            // Names near the 255-character limit, with and without a registry.
            "([a-z0-9]{1,5}(\\.io)?/)?[a-z]{225,250}(:[a-z0-9]{1,5})?",
        ]
    ) {
        round_trip(&text)?;
    }
}

/// If `text` parses, its Display parses to the same reference (with the implied `:latest`).
fn round_trip(text: &str) -> Result<(), TestCaseError> {
    let Ok(r) = Reference::parse(text) else { return Ok(()) };
    let shown = r.to_string();
    let again = Reference::parse(&shown);
    prop_assert!(again.is_ok(), "{text:?} parses but its Display {shown:?} does not: {again:?}");
    let mut expected = r.clone();
    if expected.tag.is_none() && expected.digest.is_none() {
        expected.tag = Some("latest".into());
    }
    prop_assert_eq!(again.unwrap(), expected);
    Ok(())
}

#[test]
fn every_fixture_is_covered_by_the_generator() {
    for name in FIXTURES {
        let review = fixtures::json(name);
        let kind = review["request"]["kind"]["kind"].as_str().unwrap();
        assert!(sites::shape(kind).is_some(), "{name}");
    }
}

// ---- regressions: crashes found by the fuzz targets (inputs under fuzz/regressions/TARGET) ----

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/fuzz/regressions/{target}", env!("CARGO_MANIFEST_DIR"));
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect();
    inputs.sort();
    inputs
}

/// Found by `reference` (fuzz/regressions/reference/name-longer-than-255-after-normalisation):
/// `a` × 238 parses (a 238-character name), but its fully qualified form
/// `docker.io/library/a…a:latest` has a 256-character name and is refused with "repository name
/// longer than 255 characters". distribution counts the normalised name.
#[test]
fn regression_long_docker_hub_name_round_trips() {
    round_trip(&"a".repeat(238)).unwrap();
    round_trip(&format!("{}:1.0", "b".repeat(240))).unwrap();
}

/// Every saved input of the `reference` target passes the target's own checks.
#[test]
fn fuzz_regressions_reference() {
    for (name, bytes) in regressions("reference") {
        round_trip(&String::from_utf8_lossy(&bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// What the `dockerconfig` target does with an input: `CONFIG \0 HOST \0 REPOSITORY …`.
fn dockerconfig_replay(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0);
    let Ok(parsed) = Keychain::parse(parts.next().unwrap_or_default()) else { return };
    let rest: Vec<&[u8]> = parts.collect();
    for pair in rest.chunks(2) {
        let host = String::from_utf8_lossy(pair[0]);
        let repository = pair.get(1).map(|r| String::from_utf8_lossy(r)).unwrap_or_default();
        let _ = parsed.keychain.lookup(&host, &repository);
        if let Ok(r) = Reference::parse(&format!("{host}/{repository}")) {
            let _ = parsed.keychain.lookup(&r.registry, &r.repository);
        }
    }
}

/// Runs `f` on its own thread; fails if it panics or is still running after `limit` (a hang
/// detector with a margin of many orders of magnitude, not a timing assertion: the fixed code
/// answers in microseconds, the broken code in hours).
fn finishes(name: &str, limit: std::time::Duration, f: impl FnOnce() + Send + 'static) {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    match wait.recv_timeout(limit) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: panicked (see above)"),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{name}: still running after {limit:?}"),
    }
}

/// Found by `dockerconfig` (fuzz/regressions/dockerconfig/wildcard-key-non-ascii-host): a
/// wildcard key and a lookup of a host with a non-ASCII label. `glob_part` (src/registry/auth.rs)
/// slices the label at every byte offset: "start byte index 1 is not a char boundary". Reference
/// hosts are ASCII, so the webhook itself does not get there today, but `Keychain::lookup` is pub
/// and panics on any `&str`.
#[test]
fn regression_wildcard_key_and_non_ascii_host() {
    finishes("lookup", std::time::Duration::from_secs(20), || {
        let parsed = Keychain::parse(br#"{"auths":{"*":{"auth":"dTpw"}, "*.example.com":{"auth":"dTpw"}}}"#).unwrap();
        let _ = parsed.keychain.lookup("é", "x");
        let _ = parsed.keychain.lookup("\u{fffd}.example.com", "x");
    });
}

/// Found while writing the `dockerconfig` target (fuzz/regressions/dockerconfig/
/// wildcard-key-exponential-backtracking): `glob_part` backtracks over every split, so a key with
/// k stars against a label of n characters takes about C(n, k) steps. A tenant's pull secret with
/// the key `*a*a*a*a*a*a*a*a*a*a*a*a*b.io` and a pod image `aaaa…(60)….io/x` keep a worker busy for
/// hours inside one lookup (measured: 12 stars against 30 characters > 2 minutes).
#[test]
fn regression_wildcard_key_backtracking_is_bounded() {
    finishes("lookup", std::time::Duration::from_secs(20), || {
        let key = format!("{}*b.io", "*a".repeat(12));
        let config = format!(r#"{{"auths":{{"{key}":{{"auth":"dTpw"}}}}}}"#);
        let parsed = Keychain::parse(config.as_bytes()).unwrap();
        let image = format!("{}.io/x:1", "a".repeat(60));
        let r = Reference::parse(&image).unwrap();
        assert!(parsed.keychain.lookup(&r.registry, &r.repository).is_none());
        let near = format!("{}b.io", "a".repeat(60));
        assert!(parsed.keychain.lookup(&near, "x").is_some(), "the glob still matches what it should");
    });
}

/// Every saved input of the `dockerconfig` target passes (no panic, no hang).
#[test]
fn fuzz_regressions_dockerconfig() {
    for (name, bytes) in regressions("dockerconfig") {
        finishes(&name.clone(), std::time::Duration::from_secs(20), move || dockerconfig_replay(&bytes));
    }
}
