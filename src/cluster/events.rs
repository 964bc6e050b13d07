//! Audit findings as Kubernetes Events on the pod's namespace: deduplicated (one event per object
//! and findings within a window) and rate-limited, so audit mode can never flood the API server.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use serde_json::Value;

use crate::{
    admission::{handler::Reporter, review::AdmissionRequest},
    engine::Plan,
};

/// The same findings for the same object are reported once per window.
const DEDUPLICATE_FOR: Duration = Duration::from_secs(600);
/// At most this many events per second, with a burst of the same size.
const RATE: f64 = 5.0;

pub struct AuditEvents {
    client: kube::Client,
    seen: moka::sync::Cache<String, ()>,
    bucket: Mutex<(f64, Instant)>,
}

impl AuditEvents {
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(AuditEvents {
            client,
            seen: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(DEDUPLICATE_FOR).build(),
            bucket: Mutex::new((RATE, Instant::now())),
        })
    }

    fn take_token(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap();
        let (tokens, last) = *bucket;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * RATE).min(RATE);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

impl Reporter for AuditEvents {
    fn report(&self, request: &AdmissionRequest, plan: &Plan) {
        let Some(event) = audit_event(request, plan) else { return };
        let fingerprint = format!("{}|{}", request.object_ref(), event.message.as_deref().unwrap_or(""));
        if self.seen.contains_key(&fingerprint) {
            return;
        }
        if !self.take_token() {
            tracing::debug!(object = %request.object_ref(), "audit event dropped by the rate limit");
            return;
        }
        self.seen.insert(fingerprint, ());
        let api: Api<Event> = Api::namespaced(self.client.clone(), event.metadata.namespace.as_deref().unwrap_or(""));
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %e, "cannot create audit event");
            }
        });
    }
}

/// The Event for a review's findings: on the object, or on its owner when the object has no
/// name yet (pods from a ReplicaSet are created with generateName).
pub fn audit_event(request: &AdmissionRequest, plan: &Plan) -> Option<Event> {
    let namespace = request.namespace.clone()?;
    let object = request.object.as_ref()?;
    let meta = object.get("metadata").unwrap_or(&Value::Null);
    let (kind, name, uid) = match request.name.clone() {
        Some(name) => (request.kind.kind.clone(), name, meta.get("uid").and_then(Value::as_str).map(str::to_string)),
        None => {
            let owner = meta.get("ownerReferences").and_then(Value::as_array).and_then(|o| o.first())?;
            (
                owner.get("kind")?.as_str()?.to_string(),
                owner.get("name")?.as_str()?.to_string(),
                owner.get("uid").and_then(Value::as_str).map(str::to_string),
            )
        }
    };
    let mut lines: Vec<String> =
        plan.pins.iter().map(|p| format!("would pin {} to {}", p.site.image, p.digest)).collect();
    lines.extend(plan.problems.iter().map(|p| format!("cannot pin {}: {}", p.site.image, p.reason)));
    if lines.is_empty() {
        return None;
    }
    let reason = if plan.problems.is_empty() { "WouldPin" } else { "CannotPin" };
    let now = Time(Timestamp::now());
    Some(Event {
        metadata: ObjectMeta {
            generate_name: Some("layerlink-audit-".into()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some(kind),
            name: Some(name),
            namespace: Some(namespace),
            uid,
            api_version: Some(if request.kind.group.is_empty() {
                request.kind.version.clone()
            } else {
                format!("{}/{}", request.kind.group, request.kind.version)
            }),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(crate::admission::review::truncate(&lines.join("; "), 1024)),
        type_: Some(if plan.problems.is_empty() { "Normal" } else { "Warning" }.into()),
        source: Some(EventSource { component: Some("layerlink".into()), host: None }),
        reporting_component: Some("layerlink".into()),
        reporting_instance: std::env::var("HOSTNAME").ok(),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admission::fixtures, engine::Pin, sites};

    fn plan_for(object: &Value) -> Plan {
        let site = sites::find(sites::Shape::Pod, object).remove(0);
        Plan {
            pins: vec![Pin {
                pinned: format!("{}@sha256:{}", site.image, "a".repeat(64)),
                digest: format!("sha256:{}", "a".repeat(64)).into(),
                stale: None,
                site,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn event_on_the_named_pod() {
        let request = fixtures::review("pod-create-simple.json").request.unwrap();
        let event = audit_event(&request, &plan_for(request.object.as_ref().unwrap())).unwrap();
        assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(event.involved_object.name.as_deref(), Some("web"));
        assert_eq!(event.reason.as_deref(), Some("WouldPin"));
        assert!(event.message.unwrap().starts_with("would pin nginx:1.25 to sha256:aaaa"));
    }

    #[test]
    fn event_on_the_owner_of_an_unnamed_pod() {
        let request = fixtures::review("pod-create-from-replicaset.json").request.unwrap();
        let event = audit_event(&request, &plan_for(request.object.as_ref().unwrap())).unwrap();
        assert_eq!(event.involved_object.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(event.involved_object.name.as_deref(), Some("frontend"));
    }

    #[test]
    fn no_findings_no_event() {
        let request = fixtures::review("pod-create-simple.json").request.unwrap();
        assert!(audit_event(&request, &Plan::default()).is_none());
    }
}
