//! Pull secrets from the cluster, as two credential sources: a pod's own `imagePullSecrets`, and
//! its ServiceAccount's, read from the pod's namespace the way the kubelet would use them. Both
//! read through one [`SecretReader`], cached briefly, so a rotated secret is picked up within the
//! TTL without a read per review.

use std::{sync::Arc, time::Duration};

use crate::{
    credentials::{Chain, CredentialSource, PodCredentials},
    registry::auth::Keychain,
};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;

/// How long a secret or service account read is reused.
const TTL: Duration = Duration::from_secs(30);

/// Reads Secrets and ServiceAccounts, cached for the TTL.
pub struct SecretReader {
    client: kube::Client,
    /// (namespace, secret name) → parsed credentials (empty when missing or unusable).
    secrets: moka::future::Cache<(String, String), Arc<Keychain>>,
    /// (namespace, service account) → its imagePullSecrets names.
    accounts: moka::future::Cache<(String, String), Arc<Vec<String>>>,
}

impl SecretReader {
    pub fn new(client: kube::Client) -> Self {
        SecretReader {
            client,
            secrets: moka::future::Cache::builder().max_capacity(10_000).time_to_live(TTL).build(),
            accounts: moka::future::Cache::builder().max_capacity(10_000).time_to_live(TTL).build(),
        }
    }

    async fn secret(&self, namespace: &str, name: &str) -> Arc<Keychain> {
        let key = (namespace.to_string(), name.to_string());
        let read = async {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let found = |secret: Secret| keychain_of(namespace, &secret);
            definite(api.get_opt(name).await, found, || {
                tracing::warn!(namespace, secret = name, "pull secret not found");
                Keychain::default()
            })
        };
        read_through(&self.secrets, key, read).await.unwrap_or_else(|e| {
            tracing::warn!(namespace, secret = name, error = %e, "cannot read pull secret; resolving without it");
            Arc::default()
        })
    }

    async fn account_secrets(&self, namespace: &str, name: &str) -> Arc<Vec<String>> {
        let key = (namespace.to_string(), name.to_string());
        let read = async {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            let found =
                |sa: ServiceAccount| sa.image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect();
            definite(api.get_opt(name).await, found, Vec::new)
        };
        read_through(&self.accounts, key, read).await.unwrap_or_else(|e| {
            tracing::warn!(namespace, service_account = name, error = %e, "cannot read service account; resolving without its pull secrets");
            Arc::default()
        })
    }
}

/// What a read of a Secret or ServiceAccount means: found or absent (404, which `get_opt` reads as
/// `None`) is a definite answer; an API error (a timeout, a 5xx, a 403) says nothing about the
/// object and stays an error.
fn definite<T, V, E>(
    read: Result<Option<T>, E>,
    found: impl FnOnce(T) -> V,
    absent: impl FnOnce() -> V,
) -> Result<V, E> {
    Ok(read?.map_or_else(absent, found))
}

/// Reads through `cache`: a definite answer is kept for the TTL; an error is not kept, so the
/// next review reads again (and this one goes on without credentials from it).
async fn read_through<V, E>(
    cache: &moka::future::Cache<(String, String), Arc<V>>,
    key: (String, String),
    read: impl Future<Output = Result<V, E>>,
) -> Result<Arc<V>, Arc<E>>
where
    V: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    cache.try_get_with(key, async { read.await.map(Arc::new) }).await
}

/// The chain `serve` uses: the pod's own pull secrets, then its ServiceAccount's.
pub fn chain(client: kube::Client) -> Chain {
    let reader = Arc::new(SecretReader::new(client));
    Chain::new(vec![Arc::new(PodPullSecrets(reader.clone())), Arc::new(ServiceAccountPullSecrets(reader))])
}

/// The secrets a pod names in `imagePullSecrets`.
pub struct PodPullSecrets(pub Arc<SecretReader>);

#[async_trait::async_trait]
impl CredentialSource for PodPullSecrets {
    async fn keychain(&self, pod: &PodCredentials<'_>) -> Keychain {
        let mut keychain = Keychain::default();
        for name in &pod.pull_secrets {
            keychain.extend((*self.0.secret(pod.namespace, name).await).clone());
        }
        keychain
    }
}

/// The secrets the pod's ServiceAccount names in its `imagePullSecrets` (those the pod names
/// itself are left to [`PodPullSecrets`]).
pub struct ServiceAccountPullSecrets(pub Arc<SecretReader>);

#[async_trait::async_trait]
impl CredentialSource for ServiceAccountPullSecrets {
    async fn keychain(&self, pod: &PodCredentials<'_>) -> Keychain {
        let mut keychain = Keychain::default();
        for name in self.0.account_secrets(pod.namespace, &pod.service_account).await.iter() {
            if !pod.pull_secrets.contains(name) {
                keychain.extend((*self.0.secret(pod.namespace, name).await).clone());
            }
        }
        keychain
    }
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
    use k8s_openapi::ByteString;

    #[test]
    fn only_definite_answers_are_answers() {
        let read = |r: Result<Option<&'static str>, &'static str>| definite(r, str::len, || 0);
        assert_eq!(read(Ok(Some("abc"))), Ok(3));
        assert_eq!(read(Ok(None)), Ok(0), "absent (404) is an answer: no credentials");
        assert_eq!(read(Err("503")), Err("503"), "an API error is not \"no credentials\"");
    }

    /// An API error is not cached: the next review reads again. A definite answer is cached.
    #[tokio::test]
    async fn errors_are_read_again_answers_are_kept() {
        let cache = moka::future::Cache::builder().time_to_live(TTL).build();
        let key = || ("ns".to_string(), "cred".to_string());
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = |answer: Result<Option<u8>, &'static str>| {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = definite(answer, |v| v, || 0);
            async move { answer }
        };
        assert!(read_through(&cache, key(), read(Err("apiserver unavailable"))).await.is_err());
        assert_eq!(*read_through(&cache, key(), read(Ok(Some(7)))).await.unwrap(), 7, "read again after an error");
        assert_eq!(*read_through(&cache, key(), read(Ok(Some(9)))).await.unwrap(), 7, "kept");
        let absent = ("ns".to_string(), "missing".to_string());
        assert_eq!(*read_through(&cache, absent.clone(), read(Ok(None))).await.unwrap(), 0);
        assert_eq!(*read_through(&cache, absent, read(Ok(Some(1)))).await.unwrap(), 0, "absent is kept");
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 5);
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
