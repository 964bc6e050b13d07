//! `install --apply` and `uninstall` against a cluster (kube client, server-side apply).
//!
//! Apply: every kind is looked up first, so a cluster that does not serve one (cert-manager or
//! the Prometheus Operator not installed, no ValidatingAdmissionPolicy before 1.30) is reported
//! before anything is written. Then everything but the admission objects is applied in order,
//! the Deployment is waited for, and the webhook configurations (and the digest policy) come
//! last, so the API server never calls a webhook that has no server behind it.
//!
//! Uninstall: webhook configurations first (by label and by their fixed name), so the API server
//! stops calling layerlink before it goes; then every object labelled
//! `app.kubernetes.io/managed-by: layerlink`, kind by kind, and the namespace last.

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace, core::v1::Secret};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    discovery::{ApiCapabilities, Scope},
};
use serde_json::Value;

use super::{MANAGED_BY, MANAGER, TLS_SECRET, WEBHOOK, is_admission};
use crate::{Error, certs::Bundle};

fn kube_error(e: kube::Error) -> Error {
    Error::kube("install", e)
}

fn gvk_of(doc: &Value) -> GroupVersionKind {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap_or_default())
}

/// What to do when the cluster does not serve a kind.
fn hint(kind: &str) -> &'static str {
    match kind {
        "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => {
            " (Kubernetes older than 1.30: install with --pre-1.30)"
        }
        "Certificate" | "Issuer" => " (install cert-manager first, or use --certs self-signed)",
        "ServiceMonitor" | "PrometheusRule" => " (install the Prometheus Operator first, or leave out --monitoring)",
        _ => "",
    }
}

async fn resource(client: &Client, gvk: &GroupVersionKind) -> Result<(ApiResource, ApiCapabilities), Error> {
    kube::discovery::pinned_kind(client, gvk).await.map_err(|e| {
        let version = if gvk.group.is_empty() { gvk.version.clone() } else { format!("{}/{}", gvk.group, gvk.version) };
        let why = match &e {
            kube::Error::Api(status) if status.code == 404 => String::new(),
            kube::Error::Discovery(_) => String::new(),
            other => format!(": {other}"),
        };
        Error::Cluster(format!("the cluster does not serve {} {version}{}{why}", gvk.kind, hint(&gvk.kind)))
    })
}

fn api(client: &Client, resource: &ApiResource, caps: &ApiCapabilities, namespace: Option<&str>) -> Api<DynamicObject> {
    match (caps.scope.clone(), namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, resource),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), resource),
    }
}

/// The certificate already installed (an upgrade keeps it), if the Secret holds all three parts.
pub async fn existing_bundle(client: &Client, namespace: &str) -> Result<Option<Bundle>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = secrets.get_opt(TLS_SECRET).await.map_err(kube_error)? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
    Ok(match (text("ca.crt"), text("tls.crt"), text("tls.key")) {
        (Some(ca_crt), Some(tls_crt), Some(tls_key)) => Some(Bundle { ca_crt, tls_crt, tls_key }),
        _ => None,
    })
}

fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{}", doc["metadata"]["name"].as_str().unwrap_or_default()),
        None => format!("{kind} {}", doc["metadata"]["name"].as_str().unwrap_or_default()),
    }
}

/// Server-side applies `docs` (in the order given, admission objects after the Deployment is
/// available when `wait` is set), reporting each object through `say`.
pub async fn apply(
    client: &Client,
    docs: &[Value],
    namespace: &str,
    wait: Option<Duration>,
    say: impl Fn(String),
) -> Result<(), Error> {
    let mut resolved = Vec::with_capacity(docs.len());
    for doc in docs {
        match resource(client, &gvk_of(doc)).await {
            Ok(found) => resolved.push((doc, found)),
            // Only an availability aid: older clusters (before 1.21) install without it.
            Err(e) if doc["kind"] == "PodDisruptionBudget" => say(format!("skipped {}: {e}", describe(doc))),
            Err(e) => return Err(e),
        }
    }
    let params = PatchParams::apply(MANAGER).force();
    let (admission, workloads): (Vec<_>, Vec<_>) =
        resolved.into_iter().partition(|(doc, _)| is_admission(doc["kind"].as_str().unwrap_or_default()));
    for (phase, objects) in [workloads, admission].into_iter().enumerate() {
        if phase == 1
            && let Some(timeout) = wait
        {
            say(format!("waiting up to {timeout:?} for deployment {namespace}/layerlink to be available"));
            wait_available(client, namespace, timeout).await?;
            say(format!("deployment {namespace}/layerlink is available"));
        }
        for (doc, (resource, caps)) in objects {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            api(client, &resource, &caps, doc["metadata"]["namespace"].as_str())
                .patch(name, &params, &Patch::Apply(doc))
                .await
                .map_err(|e| Error::kube(format!("applying {}", describe(doc)), e))?;
            say(format!("applied {}", describe(doc)));
        }
    }
    Ok(())
}

/// Whether the rollout is done: the controller saw this generation, every replica is updated,
/// and the Deployment reports Available.
fn available(deployment: &Deployment) -> bool {
    let Some(status) = &deployment.status else { return false };
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let observed = status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let condition = status.conditions.iter().flatten().any(|c| c.type_ == "Available" && c.status == "True");
    observed
        && condition
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= 1
}

async fn wait_available(client: &Client, namespace: &str, timeout: Duration) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let deployment = deployments.get("layerlink").await.map_err(kube_error)?;
        if available(&deployment) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let status = deployment.status.unwrap_or_default();
            return Err(Error::Cluster(format!(
                "deployment {namespace}/layerlink not available after {timeout:?} ({} of {} replicas available; \
                 the webhook configurations were not applied: see `kubectl -n {namespace} describe deployment layerlink`, \
                 or re-run with --wait=false)",
                status.available_replicas.unwrap_or(0),
                status.replicas.unwrap_or(0)
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What uninstall sweeps, in order: admission first, the namespace's contents, cluster objects.
const SWEEP: [(&str, &str, &str); 20] = [
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy"),
    ("apps", "v1", "DaemonSet"),
    ("apps", "v1", "Deployment"),
    ("policy", "v1", "PodDisruptionBudget"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("", "v1", "Service"),
    ("monitoring.coreos.com", "v1", "ServiceMonitor"),
    ("monitoring.coreos.com", "v1", "PrometheusRule"),
    ("cert-manager.io", "v1", "Certificate"),
    ("cert-manager.io", "v1", "Issuer"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("", "v1", "ResourceQuota"),
    ("", "v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole"),
    ("scheduling.k8s.io", "v1", "PriorityClass"),
];

/// Deletes what `install` made in `namespace`, reporting each object through `say`; returns how
/// many were removed. Kinds the cluster does not serve are skipped.
pub async fn uninstall(
    client: &Client,
    namespace: &str,
    wait: Option<Duration>,
    say: impl Fn(String),
) -> Result<usize, Error> {
    let selector = ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let mut removed = 0;
    for (group, version, kind) in SWEEP {
        let Ok((resource, caps)) =
            kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind)).await
        else {
            continue;
        };
        let api = api(client, &resource, &caps, Some(namespace));
        let mut names: Vec<String> =
            api.list(&selector).await.map_err(kube_error)?.items.into_iter().filter_map(|o| o.metadata.name).collect();
        // The webhook configurations by name too: whoever made them, they point at this install.
        if kind.ends_with("WebhookConfiguration")
            && !names.iter().any(|n| n == WEBHOOK)
            && api.get_opt(WEBHOOK).await.map_err(kube_error)?.is_some()
        {
            names.push(WEBHOOK.to_string());
        }
        for name in names {
            api.delete(&name, &DeleteParams::default()).await.map_err(kube_error)?;
            let scope = if caps.scope == Scope::Namespaced { format!("{namespace}/") } else { String::new() };
            say(format!("removed {} {scope}{name}", kind.to_lowercase()));
            removed += 1;
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(ns) = namespaces.get_opt(namespace).await.map_err(kube_error)? {
        let ours = ns.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY)).is_some_and(|v| v == MANAGER);
        if ours {
            namespaces.delete(namespace, &DeleteParams::default()).await.map_err(kube_error)?;
            say(format!("removed namespace {namespace}"));
            removed += 1;
            if let Some(timeout) = wait {
                let started = Instant::now();
                while namespaces.get_opt(namespace).await.map_err(kube_error)?.is_some() {
                    if started.elapsed() >= timeout {
                        return Err(Error::Cluster(format!(
                            "namespace {namespace} still terminating after {timeout:?}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                say(format!("namespace {namespace} is gone"));
            }
        } else {
            say(format!("kept namespace {namespace}: not labelled {MANAGED_BY}={MANAGER}"));
        }
    }
    Ok(removed)
}
