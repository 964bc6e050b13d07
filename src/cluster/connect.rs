//! Reaching a cluster from the command line: the kubeconfig and context as kubectl picks them,
//! checked with one request, so an unreachable or misconfigured cluster is one clear error
//! instead of a client's retries.

use std::path::PathBuf;

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::Error;

/// Which cluster: a kubeconfig file and a context, both optional (as kubectl's flags).
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Default: `$KUBECONFIG`, then `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Default: the kubeconfig's current context.
    pub context: Option<String>,
}

/// A client for `target`, after the API server has answered one request.
pub async fn connect(target: &Target) -> Result<Client, Error> {
    let options = KubeConfigOptions { context: target.context.clone(), ..Default::default() };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| Error::Cluster(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options).await.map_err(|e| e.to_string())
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await.map_err(|e| e.to_string()),
        (None, None) => kube::Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| Error::Cluster(format!("no usable kubeconfig: {e}")))?;
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).map_err(|e| Error::kube("cannot use the kubeconfig", e))?;
    client.apiserver_version().await.map_err(|e| Error::kube(format!("cannot reach the cluster at {url}"), e))?;
    Ok(client)
}
