//! The pods of a controller revision, from the API server: what `pins` needs to give a new pod
//! the digests its siblings run.
//!
//! One list per revision and replica: `GET /api/v1/namespaces/NS/pods?labelSelector=…&
//! resourceVersion=0` (answered from the API server's watch cache, not etcd), filtered by the
//! controller owner's uid, then memoised. A revision's pins never change once chosen, so a
//! non-empty answer is kept for as long as the revision is in use; an empty one is not kept
//! (the first pods of a revision are being admitted right now), but the digests this replica
//! chooses for the revision are ([`Siblings::remember`]), so a burst of new pods agrees even
//! before the first is stored. Memory is bounded by a count of revisions; a revision not asked
//! about for an hour is dropped. Reads only: nothing is written to the cluster.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

use crate::{
    Error,
    pins::{Kept, Revision},
};

/// Revisions remembered per replica.
const MAX_REVISIONS: u64 = 10_000;
/// A revision not asked about for this long is forgotten.
const IDLE: Duration = Duration::from_secs(3600);
/// The most pods read per list: a revision with more still has its pins in the first page.
const PAGE: u32 = 50;

pub struct Siblings {
    client: kube::Client,
    memo: moka::future::Cache<String, Arc<Kept>>,
}

impl Siblings {
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(Siblings {
            client,
            memo: moka::future::Cache::builder().max_capacity(MAX_REVISIONS).time_to_idle(IDLE).build(),
        })
    }

    /// What the revision's pods (and the pods this replica admitted for it) keep. One list per
    /// revision however many reviews ask at once (single-flight).
    pub async fn kept(&self, revision: &Revision) -> Result<Arc<Kept>, Error> {
        let key = revision.key();
        let mut failure = None;
        let kept = self
            .memo
            .optionally_get_with(key, async {
                match self.list(revision).await {
                    Ok(kept) if !kept.is_empty() => Some(Arc::new(kept)),
                    // Not kept: the revision's first pods are being admitted right now.
                    Ok(_) => None,
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                }
            })
            .await;
        match (kept, failure) {
            (Some(kept), _) => Ok(kept),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(Arc::default()),
        }
    }

    /// Records the digests this replica chose for a revision's new pod, so the revision's next
    /// pods get them even before the API server lists this one.
    pub async fn remember(&self, revision: &Revision, chosen: &Kept) {
        if chosen.is_empty() {
            return;
        }
        let key = revision.key();
        let mut kept = self.memo.get(&key).await.map(|k| (*k).clone()).unwrap_or_default();
        kept.merge(chosen);
        self.memo.insert(key, Arc::new(kept)).await;
    }

    async fn list(&self, revision: &Revision) -> Result<Kept, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &revision.namespace);
        let params = ListParams::default().labels(&revision.selector).limit(PAGE).at("0");
        let pods =
            api.list(&params).await.map_err(|e| Error::kube(format!("listing pods of {}", revision.owner()), e))?;
        let pods: Vec<serde_json::Value> = pods.items.iter().filter_map(|p| serde_json::to_value(p).ok()).collect();
        Ok(Kept::from_siblings(revision, &pods))
    }
}

#[async_trait::async_trait]
impl crate::admission::sticky::SiblingSource for Siblings {
    async fn kept(&self, revision: &Revision) -> Result<Arc<Kept>, Error> {
        Siblings::kept(self, revision).await
    }

    async fn remember(&self, revision: &Revision, chosen: &Kept) {
        Siblings::remember(self, revision, chosen).await
    }
}
