//! JSON Patch building: `replace` ops on image fields, and `add` ops for what pre-pull injects.
//! Nothing else in the object is touched.

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::Value;

/// A `replace` of the string at `pointer`.
pub fn replace(pointer: &str, value: &str) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: pointer.parse().expect("site pointers are valid JSON pointers"),
        value: Value::String(value.to_string()),
    })
}

/// An `add` of `value` at `pointer`.
pub fn add(pointer: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: pointer.parse().expect("valid JSON pointer"), value })
}

/// Applies a patch to a copy of `object` (for the offline front ends and tests).
pub fn apply(object: &Value, patch: &Patch) -> Result<Value, json_patch::PatchError> {
    let mut copy = object.clone();
    json_patch::patch(&mut copy, patch)?;
    Ok(copy)
}

/// Escapes a JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replace_changes_only_the_image() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "nginx", "x-future-field": {"keep": true}}]}});
        let patch = Patch(vec![replace("/spec/containers/0/image", "nginx:latest@sha256:00")]);
        let out = apply(&pod, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "nginx:latest@sha256:00", "x-future-field": {"keep": true}}]}})
        );
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:latest@sha256:00"}])
        );
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(escape("layerlink.io/prepull"), "layerlink.io~1prepull");
        assert_eq!(escape("a~b"), "a~0b");
    }
}
