//! Pull secrets from the cluster: a pod's `imagePullSecrets` and its ServiceAccount's, read from
//! the pod's namespace, the way the kubelet would use them. Cached briefly, so a rotated secret
//! is picked up within the TTL without a read per review.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use serde_json::Value;

use crate::{
    admission::{handler::Credentials, review::AdmissionRequest},
    registry::auth::Keychain,
};

/// How long a secret or service account read is reused.
const TTL: Duration = Duration::from_secs(30);

pub struct PullSecrets {
    client: kube::Client,
    /// (namespace, secret name) → parsed credentials (empty when missing or unusable).
    secrets: moka::future::Cache<(String, String), Arc<Keychain>>,
    /// (namespace, service account) → its imagePullSecrets names.
    accounts: moka::future::Cache<(String, String), Arc<Vec<String>>>,
}

impl PullSecrets {
    pub fn new(client: kube::Client) -> Self {
        PullSecrets {
            client,
            secrets: moka::future::Cache::builder().max_capacity(10_000).time_to_live(TTL).build(),
            accounts: moka::future::Cache::builder().max_capacity(10_000).time_to_live(TTL).build(),
        }
    }

    async fn secret(&self, namespace: &str, name: &str) -> Arc<Keychain> {
        let key = (namespace.to_string(), name.to_string());
        self.secrets
            .get_with(key, async {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(secret)) => Arc::new(keychain_of(namespace, &secret)),
                    Ok(None) => {
                        tracing::warn!(namespace, secret = name, "pull secret not found");
                        Arc::default()
                    }
                    Err(e) => {
                        tracing::warn!(namespace, secret = name, error = %e, "cannot read pull secret");
                        Arc::default()
                    }
                }
            })
            .await
    }

    async fn account_secrets(&self, namespace: &str, name: &str) -> Arc<Vec<String>> {
        let key = (namespace.to_string(), name.to_string());
        self.accounts
            .get_with(key, async {
                let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(sa)) => {
                        Arc::new(sa.image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect())
                    }
                    Ok(None) => Arc::default(),
                    Err(e) => {
                        tracing::warn!(namespace, service_account = name, error = %e, "cannot read service account");
                        Arc::default()
                    }
                }
            })
            .await
    }
}

#[async_trait::async_trait]
impl Credentials for PullSecrets {
    async fn keychain(&self, request: &AdmissionRequest) -> Arc<Keychain> {
        let (Some(namespace), Some(object)) = (request.namespace.as_deref(), request.object.as_ref()) else {
            return Arc::default();
        };
        let (pod_secrets, account) = secret_names(object);
        let mut names = pod_secrets;
        for name in self.account_secrets(namespace, &account).await.iter() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let mut keychain = Keychain::default();
        for name in &names {
            keychain.extend((*self.secret(namespace, name).await).clone());
        }
        Arc::new(keychain)
    }
}

/// The pod's own pull secret names, and its service account (`default` when unset).
pub fn secret_names(object: &Value) -> (Vec<String>, String) {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let names = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|r| r.get("name")?.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    (names, account)
}

/// Credentials of a `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` secret.
pub fn keychain_of(namespace: &str, secret: &Secret) -> Keychain {
    let name = secret.metadata.name.as_deref().unwrap_or("");
    let key = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
        Some("kubernetes.io/dockercfg") => ".dockercfg",
        other => {
            tracing::warn!(namespace, secret = name, r#type = ?other, "not a docker config secret; ignored");
            return Keychain::default();
        }
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        tracing::warn!(namespace, secret = name, key, "secret has no {key}");
        return Keychain::default();
    };
    match Keychain::parse(&bytes.0) {
        Ok(parsed) => {
            for warning in parsed.warnings {
                tracing::warn!(namespace, secret = name, "{warning}");
            }
            parsed.keychain
        }
        Err(e) => {
            tracing::warn!(namespace, secret = name, error = %e, "unreadable pull secret");
            Keychain::default()
        }
    }
}

/// Base64 of a docker config with one `auths` entry, for tests and docs.
pub fn dockerconfigjson(registry: &str, username: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    serde_json::json!({ "auths": { registry: { "auth": auth } } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::fixtures;
    use k8s_openapi::ByteString;

    #[test]
    fn names_from_the_pod_and_its_service_account() {
        let object = fixtures::review("pod-create-multi.json").request.unwrap().object.unwrap();
        assert_eq!(secret_names(&object), (vec!["regcred".into(), "ghcr-pull".into()], "app-sa".into()));
        assert_eq!(secret_names(&serde_json::json!({"spec": {}})), (vec![], "default".into()));
    }

    #[test]
    fn secret_types() {
        let json = dockerconfigjson("registry.local:5000", "u", "p");
        let mut secret = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some([(".dockerconfigjson".to_string(), ByteString(json.into_bytes()))].into()),
            ..Default::default()
        };
        assert_eq!(keychain_of("ns", &secret).lookup("registry.local:5000", "x").unwrap().username, "u");
        secret.type_ = Some("Opaque".into());
        assert!(keychain_of("ns", &secret).is_empty());
        let legacy = Secret {
            type_: Some("kubernetes.io/dockercfg".into()),
            data: Some(
                [(".dockercfg".to_string(), ByteString(br#"{"r.io": {"username": "a", "password": "b"}}"#.to_vec()))]
                    .into(),
            ),
            ..Default::default()
        };
        assert_eq!(keychain_of("ns", &legacy).lookup("r.io", "x").unwrap().password, "b");
    }
}
