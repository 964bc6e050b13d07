//! Real AdmissionReview bodies captured from kube-apiserver v1.20.2 (tests/fixtures/admission),
//! and builders that point their images elsewhere.

use serde_json::Value;

use super::review::AdmissionReview;

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");

/// The raw JSON of a fixture.
pub fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A fixture decoded as a review.
pub fn review(name: &str) -> AdmissionReview {
    serde_json::from_value(json(name)).expect("fixture is an AdmissionReview")
}

/// A fixture with every image field rewritten by `f` (site pointer, old image) → new image.
pub fn with_images(name: &str, mut f: impl FnMut(&str) -> String) -> Value {
    let mut review = json(name);
    let kind = review["request"]["kind"]["kind"].as_str().unwrap_or_default().to_string();
    let shape = crate::sites::shape(&kind).expect("fixture has a pod spec");
    let object = &mut review["request"]["object"];
    for site in crate::sites::find(shape, object) {
        *object.pointer_mut(&site.pointer).unwrap() = Value::String(f(&site.image));
    }
    review
}
