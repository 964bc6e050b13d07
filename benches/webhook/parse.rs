//! `parse-cost`: what decoding the bench review costs, single-threaded, in this process, for each
//! way of decoding it: the whole review as a `serde_json::Value` (what the floor does), kube-rs's
//! typed `AdmissionReview<DynamicObject>` (what a kube-rs webhook does), layerlink's
//! `AdmissionReview` (only the fields layerlink reads, see src/admission/object.rs), and only the
//! uid (the floor's `uid-only` variant). Each figure is parse + drop.

use std::{hint::black_box, time::Instant};

use bytes::Bytes;
use kube::core::{DynamicObject, admission::AdmissionReview as KubeReview};
use layerlink::admission::{fixtures, review::AdmissionReview};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct UidReview {
    request: Option<UidRequest>,
}

#[derive(Deserialize)]
struct UidRequest {
    uid: String,
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
    let review = fixtures::json("pod-create-multi.json");
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let n = 20_000;
    let whole = per_call(n, || {
        black_box(serde_json::from_slice::<Value>(black_box(&body)).unwrap());
    });
    let kube = per_call(n, || {
        black_box(serde_json::from_slice::<KubeReview<DynamicObject>>(black_box(&body)).unwrap());
    });
    let layerlink = per_call(n, || {
        black_box(serde_json::from_slice::<AdmissionReview>(black_box(&body)).unwrap());
    });
    let uid = per_call(n, || {
        black_box(serde_json::from_slice::<UidReview>(black_box(&body)).unwrap());
    });
    // The decodes agree on what they share.
    let ours = serde_json::from_slice::<AdmissionReview>(&body).unwrap().request.unwrap();
    let theirs = serde_json::from_slice::<KubeReview<DynamicObject>>(&body).unwrap().request.unwrap();
    assert_eq!(ours.uid, theirs.uid);
    assert_eq!(serde_json::from_slice::<UidReview>(&body).unwrap().request.unwrap().uid, ours.uid);
    println!(
        "review pod-create-multi.json, {} bytes; µs per decode (parse + drop): whole review as serde_json::Value \
         {whole:.1}; kube-rs AdmissionReview<DynamicObject> {kube:.1}; layerlink AdmissionReview (fields it reads) \
         {layerlink:.1}; uid only {uid:.1}",
        body.len()
    );
}
