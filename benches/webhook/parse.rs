//! `parse-cost`: what decoding the bench review costs, single-threaded, in this process. Today's
//! decode (layerlink's `AdmissionReview`, the object as a `serde_json::Value`) against a
//! read-only projection that borrows only the fields layerlink reads (an experiment for issue 8:
//! the patch is still computed as JSON Patch ops on pointers, nothing is re-serialized).

use std::{borrow::Cow, collections::BTreeMap, hint::black_box, time::Instant};

use bytes::Bytes;
use layerlink::admission::{fixtures, review::AdmissionReview};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Gvk<'a>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(borrow, default)]
    object: Option<Object<'a>>,
}

#[derive(Deserialize)]
struct Gvk<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default)]
    spec: Option<Spec<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    annotations: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    #[serde(borrow, default)]
    containers: Vec<Container<'a>>,
    #[serde(borrow, default)]
    init_containers: Vec<Container<'a>>,
    #[serde(borrow, default)]
    ephemeral_containers: Vec<Container<'a>>,
}

#[derive(Deserialize)]
struct Container<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image: Option<Cow<'a, str>>,
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / iterations as f64
}

pub fn main() {
    let review = fixtures::with_images("pod-create-multi.json", |old| match old {
        "busybox:1.36" => "127.0.0.1:40000/library/busybox:1.36".into(),
        "redis" => "127.0.0.1:40000/library/redis:7.2".into(),
        "ghcr.io/org/app:v1.2.3" => "127.0.0.1:40000/org/app:v1.2.3".into(),
        o if o.starts_with("registry.local:5000/team/app:1.0@") => "127.0.0.1:40000/team/app:1.0".into(),
        pinned => pinned.to_string(),
    });
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let n = 20_000;
    let value = per_call(n, || {
        let r: AdmissionReview = serde_json::from_slice(black_box(&body)).unwrap();
        black_box(&r);
    });
    let projection = per_call(n, || {
        let r: Review<'_> = serde_json::from_slice(black_box(&body)).unwrap();
        let images = r
            .request
            .as_ref()
            .and_then(|q| q.object.as_ref())
            .and_then(|o| o.spec.as_ref())
            .map(|s| s.containers.len() + s.init_containers.len() + s.ephemeral_containers.len())
            .unwrap_or(0);
        black_box((&r, images));
    });
    let r: Review<'_> = serde_json::from_slice(&body).unwrap();
    let q = r.request.as_ref().unwrap();
    let o = q.object.as_ref().unwrap();
    let spec = o.spec.as_ref().unwrap();
    let images = spec.containers.iter().chain(&spec.init_containers).chain(&spec.ephemeral_containers);
    let meta = o.metadata.as_ref();
    println!(
        "review {} bytes ({} {} uid {} {} {} ns {} dryRun {:?}, {} annotations, name {:?}/{:?}, {} image fields, first container {:?}): \
         AdmissionReview with the object as Value: {value:.1} µs (parse + drop); borrowed projection: {projection:.1} µs",
        body.len(),
        r.api_version,
        r.kind,
        q.uid,
        q.kind.kind,
        q.operation,
        q.namespace.as_deref().unwrap_or(""),
        q.dry_run,
        meta.and_then(|m| m.annotations.as_ref()).map_or(0, |a| a.len()),
        meta.and_then(|m| m.name.as_deref()),
        meta.and_then(|m| m.generate_name.as_deref()),
        images.filter(|c| c.image.is_some()).count(),
        spec.containers.first().and_then(|c| c.name.as_deref()),
    );
}
