//! Structure-aware: a real review from tests/fixtures/admission, changed by the input (image
//! strings, container lists of odd types, missing fields, unknown fields, other operations, kinds,
//! subresources, dry runs), then answered in every mode.
//!
//! Besides "never panics": a patch must apply to the object, replace only image strings with
//! pinned references, and the handler on the patched review must answer with no patch.
#![no_main]

use arbitrary::Arbitrary;
use layerlink::{
    admission::{self, Edges},
    policy::Mode,
    reference::Reference,
    sites,
};
use layerlink_fuzz::{HARNESS, Image, Json, PARSED_FIXTURES, api_timeout, check_response, mode, seed_cache};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
enum List {
    Init,
    Containers,
    Ephemeral,
}

impl List {
    fn key(&self) -> &'static str {
        match self {
            List::Init => "initContainers",
            List::Containers => "containers",
            List::Ephemeral => "ephemeralContainers",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Field {
    Object,
    OldObject,
    Request,
    Uid,
    Kind,
    KindKind,
    Operation,
    SubResource,
    DryRun,
    Namespace,
    Name,
    ApiVersion,
    Metadata,
    Annotations,
    Spec,
}

impl Field {
    fn pointer(&self, spec: &str) -> String {
        match self {
            Field::Object => "/request/object".into(),
            Field::OldObject => "/request/oldObject".into(),
            Field::Request => "/request".into(),
            Field::Uid => "/request/uid".into(),
            Field::Kind => "/request/kind".into(),
            Field::KindKind => "/request/kind/kind".into(),
            Field::Operation => "/request/operation".into(),
            Field::SubResource => "/request/subResource".into(),
            Field::DryRun => "/request/dryRun".into(),
            Field::Namespace => "/request/namespace".into(),
            Field::Name => "/request/name".into(),
            Field::ApiVersion => "/apiVersion".into(),
            Field::Metadata => "/request/object/metadata".into(),
            Field::Annotations => "/request/object/metadata/annotations".into(),
            Field::Spec => format!("/request/object{spec}"),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Pod,
    EphemeralContainers,
    Deployment,
    CronJob,
    PodTemplate,
    ConfigMap,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Edit {
    /// Set (or add) the image of a container.
    Image {
        list: List,
        index: u8,
        image: Image,
    },
    /// Replace a container with any value.
    Container {
        list: List,
        index: u8,
        value: Json,
    },
    /// Append a container.
    Push {
        list: List,
        name: Option<String>,
        image: Option<Image>,
        extra: Option<(String, Json)>,
    },
    /// Replace a whole container list with any value (a string, a number, an object…).
    List {
        list: List,
        value: Json,
    },
    /// Remove a container list, or a field of a container.
    RemoveList(List),
    RemoveContainerField {
        list: List,
        index: u8,
        field: String,
    },
    /// Unknown fields anywhere along the way.
    Unknown {
        at: Field,
        key: String,
        value: Json,
    },
    /// Set or remove a field of the review.
    Set {
        at: Field,
        value: Json,
    },
    Remove(Field),
    /// The operation, kind and subresource.
    Operation(Operation),
    Kind(Kind),
    SubResource(Option<String>),
    DryRun(bool),
    /// The pod opt-out annotation (honoured by the strict engine).
    OptOut(bool),
    /// oldObject := object as it is now (an UPDATE that changes nothing so far).
    CopyToOld,
}

#[derive(Arbitrary, Debug)]
struct Input {
    fixture: u8,
    mode: u8,
    engine: u8,
    seeded: bool,
    timeout: u8,
    edits: Vec<Edit>,
}

fn ensure_object(value: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut().expect("just made an object")
}

/// The container list at `spec` + `list`, made an array if it is not one.
fn list_mut<'a>(review: &'a mut Value, spec: &str, list: &List) -> &'a mut Vec<Value> {
    let mut node = review;
    for token in format!("/request/object{spec}").split('/').skip(1) {
        node = ensure_object(node).entry(token).or_insert_with(|| json!({}));
    }
    let entry = ensure_object(node).entry(list.key()).or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    entry.as_array_mut().expect("just made an array")
}

fn set(review: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointers start with /");
    let mut node = review;
    for token in parent.split('/').skip(1) {
        node = ensure_object(node).entry(token).or_insert_with(|| json!({}));
    }
    ensure_object(node).insert(key.to_string(), value);
}

fn remove(review: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointers start with /");
    if let Some(Value::Object(map)) = review.pointer_mut(parent) {
        map.remove(key);
    }
}

fn apply(review: &mut Value, spec: &str, edit: Edit) {
    match edit {
        Edit::Image { list, index, image } => {
            let containers = list_mut(review, spec, &list);
            if containers.is_empty() {
                containers.push(json!({"name": "fuzz"}));
            }
            let i = usize::from(index) % containers.len();
            ensure_object(&mut containers[i]).insert("image".into(), Value::String(image.0));
        }
        Edit::Container { list, index, value } => {
            let containers = list_mut(review, spec, &list);
            if containers.is_empty() {
                containers.push(value.0);
            } else {
                let i = usize::from(index) % containers.len();
                containers[i] = value.0;
            }
        }
        Edit::Push { list, name, image, extra } => {
            let mut container = serde_json::Map::new();
            if let Some(name) = name {
                container.insert("name".into(), Value::String(name));
            }
            if let Some(image) = image {
                container.insert("image".into(), Value::String(image.0));
            }
            if let Some((key, value)) = extra {
                container.insert(key, value.0);
            }
            list_mut(review, spec, &list).push(Value::Object(container));
        }
        Edit::List { list, value } => set(review, &format!("/request/object{spec}/{}", list.key()), value.0),
        Edit::RemoveList(list) => remove(review, &format!("/request/object{spec}/{}", list.key())),
        Edit::RemoveContainerField { list, index, field } => {
            let containers = list_mut(review, spec, &list);
            if !containers.is_empty() {
                let i = usize::from(index) % containers.len();
                if let Value::Object(map) = &mut containers[i] {
                    map.remove(&field);
                }
            }
        }
        Edit::Unknown { at, key, value } => {
            let pointer = at.pointer(spec);
            let mut node = review;
            for token in pointer.split('/').skip(1) {
                node = ensure_object(node).entry(token).or_insert_with(|| json!({}));
            }
            ensure_object(node).insert(key, value.0);
        }
        Edit::Set { at, value } => set(review, &at.pointer(spec), value.0),
        Edit::Remove(at) => remove(review, &at.pointer(spec)),
        Edit::Operation(op) => {
            let op = match op {
                Operation::Create => "CREATE".into(),
                Operation::Update => "UPDATE".into(),
                Operation::Delete => "DELETE".into(),
                Operation::Connect => "CONNECT".into(),
                Operation::Other(s) => s,
            };
            set(review, "/request/operation", Value::String(op));
        }
        Edit::Kind(kind) => {
            let kind = match kind {
                Kind::Pod => "Pod".into(),
                Kind::EphemeralContainers => "EphemeralContainers".into(),
                Kind::Deployment => "Deployment".into(),
                Kind::CronJob => "CronJob".into(),
                Kind::PodTemplate => "PodTemplate".into(),
                Kind::ConfigMap => "ConfigMap".into(),
                Kind::Other(s) => s,
            };
            set(review, "/request/kind/kind", Value::String(kind));
        }
        Edit::SubResource(sub) => set(review, "/request/subResource", sub.map_or(Value::Null, Value::String)),
        Edit::DryRun(dry) => set(review, "/request/dryRun", Value::Bool(dry)),
        Edit::OptOut(skip) => set(
            review,
            "/request/object/metadata/annotations/layerlink.io~1skip",
            Value::String(if skip { "true" } else { "false" }.into()),
        ),
        Edit::CopyToOld => {
            let object = review.pointer("/request/object").cloned().unwrap_or(Value::Null);
            set(review, "/request/oldObject", object);
        }
    }
}

fuzz_target!(|input: Input| {
    let harness = &*HARNESS;
    let fixtures = &*PARSED_FIXTURES;
    let mut review = fixtures[usize::from(input.fixture) % fixtures.len()].clone();
    let kind = review.pointer("/request/kind/kind").and_then(Value::as_str).unwrap_or("Pod").to_string();
    let spec = sites::shape(&kind).map_or("/spec", sites::spec_pointer).to_string();
    for edit in input.edits.into_iter().take(32) {
        apply(&mut review, &spec, edit);
    }
    // `set` above takes `~1` literally; write the annotation key the way JSON has it.
    if let Some(Value::Object(annotations)) = review.pointer_mut("/request/object/metadata/annotations")
        && let Some(v) = annotations.remove("layerlink.io~1skip")
    {
        annotations.insert("layerlink.io/skip".into(), v);
    }
    let engine = if input.seeded { harness.seeded(input.engine) } else { harness.plain(input.engine) };
    if input.seeded {
        seed_cache(engine, &review);
    }
    let mode = mode(input.mode);
    let timeout = api_timeout(input.timeout);
    let body = serde_json::to_vec(&review).expect("a Value serializes");
    let response = harness.runtime.block_on(admission::handle(engine, &Edges::default(), mode, &body, timeout));
    let Some(patch) = check_response(&response, mode) else { return };

    // The patch applies to the object, and only pins image strings.
    let object = review.pointer("/request/object").expect("a patch means there was an object");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}\n{patch:?}"));
    for op in &patch.0 {
        let json_patch::PatchOperation::Replace(op) = op else { panic!("only replace ops: {op:?}") };
        let path = op.path.to_string();
        assert!(path.ends_with("/image"), "{path}");
        let before = object.pointer(&path).and_then(Value::as_str).expect("replaced an image string");
        let after = op.value.as_str().expect("an image is a string");
        let pinned = Reference::parse(after).unwrap_or_else(|e| panic!("{before:?} pinned as {after:?}: {e}"));
        assert!(pinned.is_pinned(), "{after:?}");
        let original = Reference::parse(before).expect("only valid references are pinned");
        assert_eq!((&pinned.registry, &pinned.repository), (&original.registry, &original.repository));
    }

    // Idempotent: the patched review needs no further patch.
    review["request"]["object"] = patched;
    let body = serde_json::to_vec(&review).expect("a Value serializes");
    let again = harness.runtime.block_on(admission::handle(engine, &Edges::default(), Mode::Enforce, &body, timeout));
    assert!(again.response.allowed, "patched review is refused: {:?}", again.response);
    assert!(again.response.patch.is_none(), "patched review is patched again: {:?}", again.response);
});
