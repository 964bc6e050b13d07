//! AdmissionReview v1 on the wire: the request fields we read and the response we write.
//!
//! The object is read, never written back: the response is JSON Patch ops against the API
//! server's own copy, so no field is ever lost. Only the fields layerlink reads are decoded
//! (see `object`).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    /// Read-only: only the fields layerlink reads (see `object::read_only`).
    #[serde(default, deserialize_with = "super::object::read_only")]
    pub object: Option<Value>,
    #[serde(default, deserialize_with = "super::object::read_only")]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    pub kind: String,
}

impl AdmissionRequest {
    /// `namespace/name`, with the generateName prefix for objects not yet named.
    pub fn object_ref(&self) -> String {
        let name = self.name.clone().or_else(|| {
            let meta = self.object.as_ref()?.get("metadata")?;
            meta.get("generateName").and_then(Value::as_str).map(|g| format!("{g}*"))
        });
        format!("{}/{}", self.namespace.as_deref().unwrap_or(""), name.as_deref().unwrap_or(""))
    }

    /// The object's controller (its ownerReference with `controller: true`, else the first), as
    /// `{"kind", "name"}` for log lines: a Deployment's pods are found by their ReplicaSet's name.
    pub fn owner(&self) -> Option<Owner> {
        let owners = self.object.as_ref()?.pointer("/metadata/ownerReferences")?.as_array()?;
        let owner = owners
            .iter()
            .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            .or_else(|| owners.first())?;
        let field = |key: &str| owner.get(key).and_then(Value::as_str).map(bounded).unwrap_or_default();
        Some(Owner { kind: field("kind"), name: field("name") })
    }

    /// The object's `metadata.generateName` (a pod of a ReplicaSet has `web-7d4b9-` and no name yet).
    pub fn generate_name(&self) -> Option<String> {
        self.object.as_ref()?.pointer("/metadata/generateName")?.as_str().map(bounded)
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// What the policy reads of this request.
    pub fn subject(&self) -> crate::policy::Subject<'_> {
        crate::policy::Subject {
            operation: &self.operation,
            group: &self.kind.group,
            kind: &self.kind.kind,
            sub_resource: self.sub_resource.as_deref(),
            namespace: self.namespace.as_deref().unwrap_or(""),
            object: self.object.as_ref(),
        }
    }
}

/// An object's owner, for log lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// At most 253 characters (the longest Kubernetes name) of a name from the wire.
fn bounded(name: &str) -> String {
    name.chars().take(253).collect()
}

/// The review we answer with: always HTTP 200, uid and apiVersion echoed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: String,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// The API server passes warnings on whole while they add up to at most 4,096 characters; past
/// that it cuts each to 256 (`k8s.io/apiserver` `filters/warning.go`). layerlink keeps within
/// both, so the API server never cuts a warning: one warning is at most 256 bytes, cut at a
/// word, and the list at most 4 KiB with a closing line saying how many were left out.
pub const MAX_WARNING_LEN: usize = 256;
pub const MAX_WARNINGS_BYTES: usize = 4096;

impl Response {
    pub fn allow(uid: &str) -> Self {
        Response { uid: uid.to_string(), allowed: true, ..Default::default() }
    }

    pub fn deny(uid: &str, code: u16, reason: &'static str, message: String) -> Self {
        Response {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status { code, reason, message }),
            ..Default::default()
        }
    }

    /// Attaches a JSON Patch; an empty patch is left out entirely.
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Self {
        if !patch.0.is_empty() {
            let bytes = serde_json::to_vec(patch).expect("a patch always serializes");
            self.patch_type = Some("JSONPatch");
            self.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        self
    }

    /// Sets warnings within Kubernetes' limits, saying how many were left out.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        let mut total = 0;
        let count = warnings.len();
        for (i, warning) in warnings.into_iter().enumerate() {
            let warning = truncate(&warning, MAX_WARNING_LEN);
            // Keep room for the closing "and N more" line.
            if total + warning.len() > MAX_WARNINGS_BYTES - 40 {
                self.warnings.push(format!("layerlink: {} more warnings left out", count - i));
                break;
            }
            total += warning.len();
            self.warnings.push(warning);
        }
        self
    }

    pub fn into_review(self, api_version: &str) -> ReviewResponse {
        ReviewResponse { api_version: api_version.to_string(), kind: "AdmissionReview", response: self }
    }
}

/// Cuts a string to at most `max` bytes on a char boundary, marking the cut with `…`.
/// `s` cut to at most `max` bytes with `…`, at the last space of the cut when there is one in
/// its last quarter (so a cause is not cut in the middle of a word), else at a character.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(space) = s[..end].rfind(' ').filter(|at| *at >= end - end / 4) {
        end = space;
    }
    format!("{}…", s[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_stay_within_kubernetes_limits() {
        let many: Vec<String> = (0..200).map(|i| format!("warning {i} {}", "x".repeat(150))).collect();
        let r = Response::allow("u").with_warnings(many);
        assert!(r.warnings.iter().all(|w| w.len() <= MAX_WARNING_LEN));
        assert!(r.warnings.iter().map(String::len).sum::<usize>() <= MAX_WARNINGS_BYTES);
        assert!(r.warnings.last().unwrap().contains("more warnings left out"));
    }

    /// A registry's cause as layerlink words it, for a long image name: kept whole.
    #[test]
    fn a_warning_keeps_its_cause_whole() {
        let image = format!("registry.example.com:5000/{}/app:v1", "team".repeat(8));
        let warning = format!(
            "layerlink: not pinned {image}: registry.example.com:5000: cannot connect: failed to lookup address information: Name or service not known"
        );
        let r = Response::allow("u").with_warnings(vec![warning.clone()]);
        assert_eq!(r.warnings, [warning]);
    }

    #[test]
    fn a_long_warning_is_cut_at_a_word() {
        let words = "word ".repeat(100);
        let cut = truncate(&words, MAX_WARNING_LEN);
        assert!(cut.len() <= MAX_WARNING_LEN && cut.ends_with("word…"), "{cut}");
        let one = "x".repeat(400);
        assert_eq!(truncate(&one, 10), format!("{}…", "x".repeat(7)));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(100);
        let t = truncate(&s, 11);
        assert!(t.len() <= 11 && t.ends_with('…'));
    }

    #[test]
    fn empty_patch_is_left_out() {
        let r = Response::allow("u").with_patch(&json_patch::Patch(vec![]));
        let json = serde_json::to_value(r.into_review("admission.k8s.io/v1")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true}})
        );
    }
}
