//! Resolution: unique references → digests, in parallel, inside a deadline, through the cache.
//!
//! Each registry lookup runs as its own task, shared by every review that wants the same key
//! (single-flight). A review that gives up at its deadline does not cancel the lookup: the late
//! answer still fills the cache for the next pod (DESIGN decision 7).

pub mod cache;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};

use self::cache::{DigestCache, Key, Lookup, Value};
use crate::{
    Config, Error,
    engine::Deadline,
    metrics::Metrics,
    reference::Reference,
    registry::{Registries, auth::Keychain},
};

type Flight = Shared<BoxFuture<'static, Result<Arc<str>, Arc<Error>>>>;

/// A digest for a reference, and why it is stale if it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub digest: Arc<str>,
    /// Set when the registry failed and a cached digest past its TTL was used.
    pub stale: Option<String>,
}

pub struct Resolver {
    registries: Arc<Registries>,
    cache: DigestCache,
    inflight: Mutex<HashMap<Key, Flight>>,
    metrics: Arc<Metrics>,
}

impl Resolver {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Resolver {
            registries: Arc::new(Registries::new(config, metrics.clone())?),
            cache: DigestCache::new(&config.cache),
            inflight: Mutex::default(),
            metrics,
        }))
    }

    pub fn registries(&self) -> &Arc<Registries> {
        &self.registries
    }

    pub fn cache(&self) -> &DigestCache {
        &self.cache
    }

    /// The digest of `reference`'s tag, answered by `deadline` (from cache, registry, or stale).
    pub async fn resolve(
        self: &Arc<Self>,
        reference: &Reference,
        keychain: &Arc<Keychain>,
        deadline: Deadline,
    ) -> Result<Resolved, Arc<Error>> {
        self.resolve_named(reference, reference.to_string().into(), keychain, deadline).await
    }

    /// `resolve` with the reference's fully qualified name already computed (the cache key).
    pub async fn resolve_named(
        self: &Arc<Self>,
        reference: &Reference,
        name: Arc<str>,
        keychain: &Arc<Keychain>,
        deadline: Deadline,
    ) -> Result<Resolved, Arc<Error>> {
        let key = Key { name, credential: self.registries.credential_id(reference, keychain) };
        let stale = match self.cache.lookup(&key) {
            Lookup::Fresh(digest) => {
                self.metrics.cache("hit");
                return Ok(Resolved { digest, stale: None });
            }
            Lookup::Negative(error) => {
                self.metrics.cache("negative");
                return Err(error);
            }
            Lookup::Stale(digest, age) => {
                self.metrics.cache("stale");
                Some((digest, age))
            }
            Lookup::Miss => {
                self.metrics.cache("miss");
                None
            }
        };
        let flight = self.flight(key, reference, keychain);
        let outcome = match tokio::time::timeout_at(deadline.at.into(), flight).await {
            Ok(result) => result,
            Err(_) => Err(Arc::new(Error::Timeout {
                registry: reference.registry.clone(),
                after_ms: deadline.budget.as_millis(),
            })),
        };
        match (outcome, stale) {
            (Ok(digest), _) => Ok(Resolved { digest, stale: None }),
            (Err(error), Some((digest, age))) if error.is_transient() => {
                self.metrics.count_stale(&reference.registry);
                Ok(Resolved { digest, stale: Some(format!("cached {} ago; {error}", human(age))) })
            }
            (Err(error), _) => Err(error),
        }
    }

    /// The shared lookup for `key`, started if none is running.
    fn flight(self: &Arc<Self>, key: Key, reference: &Reference, keychain: &Arc<Keychain>) -> Flight {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(flight) = inflight.get(&key) {
            return flight.clone();
        }
        let this = self.clone();
        let (reference, keychain, task_key) = (reference.clone(), keychain.clone(), key.clone());
        let task = tokio::spawn(async move {
            let result = this.registries.digest(&reference, &keychain).await;
            match &result {
                Ok(answer) => {
                    tracing::info!(image = %reference, digest = %answer.digest, answered_by = %answer.answered_by, "resolved");
                    this.cache.insert(task_key.clone(), Value::Digest(answer.digest.as_str().into()));
                }
                Err(error) => tracing::warn!(image = %reference, %error, "lookup failed"),
            }
            let result = result.map(|a| Arc::<str>::from(a.digest)).map_err(Arc::new);
            if let Err(error) = &result
                && matches!(**error, Error::NotFound { .. })
            {
                this.cache.insert(task_key.clone(), Value::NotFound(error.clone()));
            }
            // Removed after the cache insert, so a concurrent lookup finds one or the other.
            this.inflight.lock().unwrap().remove(&task_key);
            result
        });
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(Error::Registry { registry: String::new(), message: format!("lookup task failed: {e}") }))
            })
        }
        .boxed()
        .shared();
        inflight.insert(key, flight.clone());
        flight
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}
