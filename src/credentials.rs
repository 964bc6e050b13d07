//! Where a review's registry credentials come from: a chain of sources asked in order, whose
//! keychains are joined so that, for equally specific keys, an earlier source wins (the kubelet
//! prefers a pod's own `imagePullSecrets` to its ServiceAccount's). Adding a kind of credential
//! (a cloud provider's keychain) is one more [`CredentialSource`] in the chain `serve` builds.
//!
//! After the chain, the registry client falls back to the config's `registries[].credentialsFile`
//! for that exact host, then to anonymous access. Those two apply to every front end (the
//! webhook, `mutate -f`, `resolve`, `audit`), so they live with the client, not here.

use std::sync::Arc;

use serde_json::Value;

use crate::{
    admission::{handler::Credentials, review::AdmissionRequest},
    registry::auth::Keychain,
    sites::{self, Shape},
};

/// What a source may look at: the pod (or pod template) the review is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCredentials<'a> {
    pub namespace: &'a str,
    /// The pod spec's `imagePullSecrets` names, in order.
    pub pull_secrets: Vec<String>,
    /// Its ServiceAccount (`default` when unset).
    pub service_account: String,
}

impl<'a> PodCredentials<'a> {
    /// From the pod spec of an object of this shape (a Pod's `/spec`, a workload's template).
    pub fn of(namespace: &'a str, shape: Shape, object: &Value) -> Self {
        let spec = object.pointer(sites::spec_pointer(shape)).unwrap_or(&Value::Null);
        let pull_secrets = spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|r| r.get("name")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let service_account = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        PodCredentials { namespace, pull_secrets, service_account }
    }
}

/// One place credentials come from. A source that cannot answer (an API error) logs why and
/// returns what it has: credentials are never a reason to hold a review.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync {
    async fn keychain(&self, pod: &PodCredentials<'_>) -> Keychain;
}

/// The sources, in the order they are preferred.
pub struct Chain {
    sources: Vec<Arc<dyn CredentialSource>>,
}

impl Chain {
    pub fn new(sources: Vec<Arc<dyn CredentialSource>>) -> Self {
        Chain { sources }
    }

    /// Every source's keychain for `pod`, joined in chain order.
    pub async fn keychain_for(&self, pod: &PodCredentials<'_>) -> Keychain {
        let mut joined = Keychain::default();
        for source in &self.sources {
            joined.extend(source.keychain(pod).await);
        }
        joined
    }
}

#[async_trait::async_trait]
impl Credentials for Chain {
    async fn keychain(&self, request: &AdmissionRequest) -> Arc<Keychain> {
        let (Some(namespace), Some(object)) = (request.namespace.as_deref(), request.object.as_ref()) else {
            return Arc::default();
        };
        let Some(shape) = sites::shape(&request.kind.kind) else { return Arc::default() };
        Arc::new(self.keychain_for(&PodCredentials::of(namespace, shape, object)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admission::fixtures, cluster::secrets::dockerconfigjson};

    #[test]
    fn names_from_the_pod_and_its_service_account() {
        let object = fixtures::review("pod-create-multi.json").request.unwrap().object.unwrap();
        let pod = PodCredentials::of("ns", Shape::Pod, &object);
        assert_eq!(
            (pod.pull_secrets, pod.service_account.as_str()),
            (vec!["regcred".into(), "ghcr-pull".into()], "app-sa")
        );
        let bare = PodCredentials::of("ns", Shape::Pod, &serde_json::json!({"spec": {}}));
        assert_eq!((bare.pull_secrets, bare.service_account.as_str()), (vec![], "default"));
    }

    /// A pod template's pull secrets and service account are its pod spec's, in every shape,
    /// and the read-only decoding of a review keeps them.
    #[test]
    fn names_from_pod_templates() {
        let pod_spec = serde_json::json!({
            "containers": [{"name": "a", "image": "r.io/a:1", "env": []}],
            "imagePullSecrets": [{"name": "template-cred"}],
            "serviceAccountName": "template-sa",
            "volumes": []
        });
        let expected = PodCredentials {
            namespace: "ns",
            pull_secrets: vec!["template-cred".to_string()],
            service_account: "template-sa".to_string(),
        };
        for (kind, object) in [
            ("Deployment", serde_json::json!({"spec": {"replicas": 2, "template": {"spec": pod_spec}}})),
            ("CronJob", serde_json::json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}})),
            ("PodTemplate", serde_json::json!({"template": {"spec": pod_spec}})),
        ] {
            let shape = sites::shape(kind).unwrap();
            assert_eq!(PodCredentials::of("ns", shape, &object), expected, "{kind}");
            let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"kind": kind}, "operation": "CREATE", "object": object}});
            let read = serde_json::from_value::<crate::admission::review::AdmissionReview>(review).unwrap();
            assert_eq!(PodCredentials::of("ns", shape, &read.request.unwrap().object.unwrap()), expected, "{kind}");
        }
    }

    /// A source that answers with one user for `r.io`, named after the pod field it reads.
    struct Fixed(&'static str);

    #[async_trait::async_trait]
    impl CredentialSource for Fixed {
        async fn keychain(&self, pod: &PodCredentials<'_>) -> Keychain {
            let user = match self.0 {
                "pod" => pod.pull_secrets.first().cloned(),
                _ => Some(pod.service_account.clone()),
            };
            let Some(user) = user else { return Keychain::default() };
            Keychain::parse(dockerconfigjson("r.io", &user, "p").as_bytes()).unwrap().keychain
        }
    }

    /// Every source is asked with the review's pod, and the earlier source wins a tie.
    #[tokio::test]
    async fn earlier_sources_win_and_every_source_sees_the_pod() {
        let object = fixtures::review("pod-create-multi.json").request.unwrap().object.unwrap();
        let pod = PodCredentials::of("ns", Shape::Pod, &object);
        let chain = Chain::new(vec![Arc::new(Fixed("pod")), Arc::new(Fixed("account"))]);
        assert_eq!(chain.keychain_for(&pod).await.lookup("r.io", "app").unwrap().username, "regcred");
        let reversed = Chain::new(vec![Arc::new(Fixed("account")), Arc::new(Fixed("pod"))]);
        assert_eq!(reversed.keychain_for(&pod).await.lookup("r.io", "app").unwrap().username, "app-sa");
        let no_secrets = PodCredentials { pull_secrets: vec![], ..pod };
        assert_eq!(chain.keychain_for(&no_secrets).await.lookup("r.io", "app").unwrap().username, "app-sa");
    }
}
