//! The part of a review's object that layerlink reads, decoded without the rest.
//!
//! Decoding a whole pod into a `serde_json::Value` allocates every string, map and array in it,
//! and it was the largest cost of a warm review (docs/performance.md). The handler only reads a few fields,
//! so the object is decoded into a *read-only* `Value` that keeps those and skips everything
//! else while parsing. Nothing is ever serialized back from it (the response is JSON Patch ops
//! against the API server's own copy), so nothing can be lost. The one reader that needs the
//! whole pod, pre-pull injection, decodes it from the body with [`whole_object`].

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

/// A shape of JSON to keep.
enum Keep {
    /// The whole value.
    All,
    /// These keys of an object (from one or more lists), each kept by its own shape; other keys
    /// are skipped.
    Fields(&'static [&'static [(&'static str, Keep)]]),
    /// Every element of an array, kept by one shape.
    Each(&'static Keep),
}

const CONTAINER: Keep = Keep::Fields(&[&[("name", Keep::All), ("image", Keep::All)]]);
const CONTAINERS: Keep = Keep::Each(&CONTAINER);

/// What policy, events and `object_ref` read: names, owners, and the opt-out annotation; and
/// the labels that find a pod's controller revision (sticky pins).
const METADATA: Keep = Keep::Fields(&[&[
    ("name", Keep::All),
    ("generateName", Keep::All),
    ("namespace", Keep::All),
    ("uid", Keep::All),
    ("annotations", Keep::All),
    ("ownerReferences", Keep::All),
    ("labels", Keep::All),
]]);

/// An image volume (`volumes[].image.reference`, Kubernetes ≥ 1.31) and its name.
const VOLUME: Keep = Keep::Fields(&[&[("name", Keep::All), ("image", Keep::Fields(&[&[("reference", Keep::All)]]))]]);

/// What `sites` and pull-secret lookup read of a pod spec.
const POD_SPEC_FIELDS: &[(&str, Keep)] = &[
    ("containers", CONTAINERS),
    ("volumes", Keep::Each(&VOLUME)),
    ("initContainers", CONTAINERS),
    ("ephemeralContainers", CONTAINERS),
    ("imagePullSecrets", Keep::All),
    ("serviceAccountName", Keep::All),
    ("serviceAccount", Keep::All),
];

const TEMPLATE: Keep = Keep::Fields(&[&[("metadata", METADATA), ("spec", Keep::Fields(&[POD_SPEC_FIELDS]))]]);

/// Every shape of `kinds::ALL` and `sites::Shape`: a Pod's `/spec`, a workload's
/// `/spec/template`, a CronJob's `/spec/jobTemplate/spec/template`, a PodTemplate's `/template`,
/// and the EphemeralContainers subresource, whose container lists sit at the root.
const OBJECT: Keep = Keep::Fields(&[
    POD_SPEC_FIELDS,
    &[
        ("metadata", METADATA),
        (
            "spec",
            Keep::Fields(&[
                POD_SPEC_FIELDS,
                &[
                    ("template", TEMPLATE),
                    ("jobTemplate", Keep::Fields(&[&[("spec", Keep::Fields(&[&[("template", TEMPLATE)]]))]])),
                ],
            ]),
        ),
        ("template", TEMPLATE),
    ],
]);

/// `#[serde(deserialize_with)]` for `object` and `oldObject`: null or absent is `None`.
pub fn read_only<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Pruned(&OBJECT).deserialize(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptionVisitor)
}

/// The whole `request.object` of a review body, for the readers that need every field.
pub fn whole_object(body: &[u8]) -> Option<Value> {
    #[derive(Deserialize)]
    struct Review {
        request: Option<Request>,
    }
    #[derive(Deserialize)]
    struct Request {
        object: Option<Value>,
    }
    serde_json::from_slice::<Review>(body).ok()?.request?.object
}

struct Pruned(&'static Keep);

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            Keep::All => Value::deserialize(deserializer),
            keep => deserializer.deserialize_any(PrunedVisitor(keep)),
        }
    }
}

struct PrunedVisitor(&'static Keep);

impl<'de> Visitor<'de> for PrunedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        let fields: &'static [&'static [(&'static str, Keep)]] = match self.0 {
            Keep::Fields(fields) => fields,
            // An object where an array belongs: a JSON pointer such as `/containers/0/image`
            // still walks through it (key "0"), so keep every member, shaped as an element.
            Keep::Each(element) => {
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value_seed(Pruned(element))?;
                    kept.insert(key, value);
                }
                return Ok(Value::Object(kept));
            }
            Keep::All => unreachable!("Pruned decodes Keep::All as a whole Value"),
        };
        while let Some(found) = map.next_key_seed(FieldKey(fields))? {
            match found {
                Some((name, keep)) => {
                    let value = map.next_value_seed(Pruned(keep))?;
                    kept.insert(name.to_string(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut kept = Vec::new();
        match self.0 {
            Keep::Each(keep) => {
                while let Some(value) = seq.next_element_seed(Pruned(keep))? {
                    kept.push(value);
                }
            }
            _ => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(Value::Array(kept))
    }

    // Scalars where an object or array belongs are kept as they are: readers see what they would
    // have seen in the whole value.
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Matches a key against the kept fields without allocating for the ones skipped.
struct FieldKey(&'static [&'static [(&'static str, Keep)]]);

impl<'de> DeserializeSeed<'de> for FieldKey {
    type Value = Option<(&'static str, &'static Keep)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldKey {
    type Value = Option<(&'static str, &'static Keep)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().flat_map(|list| list.iter()).find(|(name, _)| *name == key).map(|(name, keep)| (*name, keep)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        admission::{fixtures, review::AdmissionReview},
        credentials::PodCredentials,
        sites,
    };

    fn fixture_names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(fixtures::DIR)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        assert!(names.len() >= 10, "fixtures missing: {names:?}");
        names
    }

    /// Every reader of the object sees the same on the read-only value as on the whole one.
    #[test]
    fn readers_see_the_same_on_every_fixture() {
        for name in fixture_names() {
            let body = std::fs::read(format!("{}/{name}", fixtures::DIR)).unwrap();
            let review: AdmissionReview = serde_json::from_slice(&body).unwrap();
            let request = review.request.unwrap();
            let whole = whole_object(&body);
            let whole_old = serde_json::from_slice::<Value>(&body).unwrap()["request"]["oldObject"].clone();
            assert_eq!(request.object.is_some(), whole.is_some(), "{name}");
            let (Some(read), Some(whole)) = (request.object.as_ref(), whole.as_ref()) else { continue };
            let kind = request.kind.kind.as_str();
            if let Some(shape) = sites::shape(kind) {
                let found = sites::find(shape, read);
                assert_eq!(found, sites::find(shape, whole), "{name}");
                let old = request.old_object.as_ref();
                let whole_old = (!whole_old.is_null()).then_some(&whole_old);
                assert_eq!(sites::changed(found.clone(), old), sites::changed(found, whole_old), "{name}");
                assert_eq!(crate::policy::opted_out(read, shape), crate::policy::opted_out(whole, shape), "{name}");
                assert_eq!(PodCredentials::of("ns", shape, read), PodCredentials::of("ns", shape, whole), "{name}");
            }
            assert_eq!(read["metadata"], whole["metadata"].as_object().map_or(Value::Null, |m| only(m, METADATA)));
        }
    }

    /// The metadata fields that `METADATA` keeps, taken from the whole value.
    fn only(meta: &Map<String, Value>, keep: Keep) -> Value {
        let Keep::Fields(fields) = keep else { unreachable!() };
        Value::Object(
            meta.iter()
                .filter(|(k, _)| fields.iter().flat_map(|l| l.iter()).any(|(f, _)| f == k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn keeps_only_what_is_read_in_every_shape() {
        let object = serde_json::json!({
            "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"layerlink.io/skip": "true"}},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "env": [{"name": "X", "value": "1"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "serviceAccountName": "sa",
                "template": {"metadata": {"annotations": {"k": "v"}}, "spec": {"initContainers": [{"image": "i", "args": ["x"]}]}},
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "j", "ports": []}]}}, "parallelism": 2}}
            },
            "template": {"spec": {"ephemeralContainers": [{"name": "e", "image": "k", "tty": true}]}},
            "ephemeralContainers": [{"name": "d", "image": "debug", "stdin": true}],
            "status": {"phase": "Pending"}
        });
        let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "object": object}});
        let read = serde_json::from_value::<AdmissionReview>(review).unwrap().request.unwrap().object.unwrap();
        assert_eq!(
            read,
            serde_json::json!({
                "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"layerlink.io/skip": "true"}},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "v"}],
                    "serviceAccountName": "sa",
                    "template": {"metadata": {"annotations": {"k": "v"}}, "spec": {"initContainers": [{"image": "i"}]}},
                    "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "j"}]}}}}
                },
                "template": {"spec": {"ephemeralContainers": [{"name": "e", "image": "k"}]}},
                "ephemeralContainers": [{"name": "d", "image": "debug"}]
            })
        );
    }

    #[test]
    fn wrong_types_read_as_they_would_whole() {
        for object in [
            serde_json::json!({"spec": {"containers": {"0": {"image": "x"}}}}),
            serde_json::json!({"spec": {"containers": [7, "x", null, {"image": 5}]}}),
            serde_json::json!({"spec": "text", "metadata": [1, 2]}),
            serde_json::json!({"spec": {"containers": [{"image": "x", "name": {"deep": [1]}}]}}),
            // The EphemeralContainers subresource reads every container list at the root.
            serde_json::json!({"containers": [{"image": "x"}], "initContainers": [{"image": "y"}], "ephemeralContainers": []}),
            // A map where a list belongs: `sites::changed` looks up the new object's pointers in
            // the old object, and a pointer walks through a map's "0" key as through an index.
            serde_json::json!({"spec": {"containers": {"0": {"image": "x", "name": "c", "env": []}}}}),
            serde_json::json!(null),
        ] {
            let body =
                serde_json::to_vec(&serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": object}}))
                .unwrap();
            let read = serde_json::from_slice::<AdmissionReview>(&body).unwrap().request.unwrap().object;
            let whole = whole_object(&body);
            assert_eq!(read.is_some(), whole.is_some(), "{object}");
            if let (Some(read), Some(whole)) = (read, whole) {
                for kind in ["Pod", "EphemeralContainers", "Deployment", "CronJob", "PodTemplate"] {
                    let shape = sites::shape(kind).unwrap();
                    assert_eq!(sites::find(shape, &read), sites::find(shape, &whole), "{kind} {object}");
                    assert_eq!(
                        PodCredentials::of("ns", shape, &read),
                        PodCredentials::of("ns", shape, &whole),
                        "{kind} {object}"
                    );
                }
                for pointer in ["/spec/containers/0/image", "/spec/containers/0/name", "/containers/0/image"] {
                    assert_eq!(read.pointer(pointer), whole.pointer(pointer), "{pointer} in {object}");
                }
            }
        }
    }
}
