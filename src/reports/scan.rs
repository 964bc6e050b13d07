//! The background scan: lists the pods (and the ReplicaSets and Jobs that tell their workloads)
//! of the reported namespaces, plans their images with the engine, and builds the reports.
//! Read-only; `layerlink audit -o policyreport` plans with the same [`plan`].

use futures::StreamExt;
use kube::{Api, api::ListParams};

use super::{Collector, Workload};
use crate::{
    Engine, Error,
    cluster::audit::list_each,
    engine::{Deadline, Plan},
    kinds,
    registry::auth::Keychain,
};

/// Objects per list request: a page of pods is held at a time, then only their images.
pub const PAGE_SIZE: u32 = 500;
/// Distinct image lists planned at once (cache hits are immediate; registry lookups are bounded
/// further by `resolve.maxConcurrencyPerRegistry`).
const PLANS_AT_ONCE: usize = 64;

/// Plans the image lists of `groups`, one deadline (`resolve.requestTimeout`) for all.
pub async fn plan(
    engine: &Engine,
    groups: Vec<(Workload, Vec<crate::sites::Site>, usize)>,
) -> Vec<(Workload, Plan, usize)> {
    let deadline = Deadline::after(engine.config.resolve.request_timeout);
    let keychain = std::sync::Arc::new(Keychain::default());
    futures::stream::iter(groups)
        .map(|(workload, sites, pods)| {
            let keychain = keychain.clone();
            async move { (workload, engine.plan(sites, &keychain, deadline).await, pods) }
        })
        .buffered(PLANS_AT_ONCE)
        .collect()
        .await
}

/// The namespaces to report on: those matching `reports.namespaceSelector`, less
/// `exclude.namespaces`, sorted.
pub async fn namespaces(engine: &Engine, client: &kube::Client) -> Result<Vec<String>, Error> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let params = ListParams::default().labels(&engine.config.reports.namespace_selector);
    let list = api.list_metadata(&params).await.map_err(|e| Error::kube("listing namespaces", e))?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| !engine.config.exclude.namespaces.contains(n))
        .collect();
    names.sort();
    Ok(names)
}

/// What one scan of a namespace found, and how many list requests it made.
pub struct Scanned {
    pub workloads: Vec<(Workload, Plan, usize)>,
    pub requests: usize,
}

/// Lists `namespace`'s ReplicaSets, Jobs and Pods and plans every workload's images. A kind the
/// cluster does not serve or refuses is skipped (pods then count under their ReplicaSet or Job).
pub async fn namespace(engine: &Engine, client: &kube::Client, namespace: &str) -> Result<Scanned, Error> {
    let mut collector = Collector::default();
    let mut requests = 0;
    for kind in ["ReplicaSet", "Job", "Pod"] {
        let kind = kinds::find(kind).expect("a built-in kind");
        let listed = list_each(client, kind, Some(namespace), PAGE_SIZE, |object| {
            collector.add(&engine.config, kind.kind, &object);
        })
        .await?;
        match listed {
            Ok(n) => requests += n,
            Err(note) => tracing::warn!(namespace, kind = kind.kind, %note, "reports: kind skipped"),
        }
    }
    Ok(Scanned { workloads: plan(engine, collector.finish()).await, requests })
}
